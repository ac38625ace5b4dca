"""The supervised system: a LightningModule around the shared spiking network.

The module owns nothing spiking of its own: it builds a
:class:`snnlab.spiking.SpikingMLP`, applies cross-entropy to its readout and
logs loss, accuracy (torchmetrics), the current slope and each LIF layer's
spike rate, so a silent layer shows up in every logger.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from ..spiking import SpikingMLP, SpikingMLPConfig


class SpikingClassifier(L.LightningModule):
    def __init__(self, n_in: int, n_classes: int, network: dict[str, Any],
                 lr: float = 1e-3, weight_decay: float = 0.0, slope: float = 25.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = SpikingMLP(SpikingMLPConfig(n_in=n_in, n_out=n_classes, slope=slope, **network))
        self.train_acc = MulticlassAccuracy(num_classes=n_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=n_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).out

    def _step(self, batch, stage: str, acc: MulticlassAccuracy) -> torch.Tensor:
        x, y = batch
        out = self.net(x)
        loss = F.cross_entropy(out.out, y)
        acc(out.out, y)
        on_step = stage == "train"
        self.log(f"{stage}_loss", loss, prog_bar=True, on_step=on_step, on_epoch=True)
        self.log(f"{stage}_acc", acc, prog_bar=True, on_step=False, on_epoch=True)
        for i, r in enumerate(out.rates):
            self.log(f"{stage}_spike_rate/layer{i}", r, on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch, batch_idx):
        self.log("slope", self.net.lifs[0].spike.slope, on_step=False, on_epoch=True, prog_bar=True)
        return self._step(batch, "train", self.train_acc)

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val", self.val_acc)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr,
                                weight_decay=self.hparams.weight_decay)

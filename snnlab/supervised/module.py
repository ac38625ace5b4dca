"""The supervised systems: LightningModules around the shared spiking network.

:class:`SpikingModule` owns what every supervised task shares: it builds a
:class:`snnlab.spiking.SpikingMLP`, runs the training / validation step (forward,
loss, logging), logs the current slope and each LIF layer's spike rate (so a
silent layer shows up in every logger) and sets up Adam. A task says only what
differs: :meth:`~SpikingModule.readout` (readout -> prediction), the loss and
any extra metrics. :class:`SpikingClassifier` is cross-entropy + accuracy
(torchmetrics); :class:`snnlab.supervised.bc.BehaviourCloner` is ``tanh`` + MSE.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from ..spiking import SpikingMLP, SpikingMLPConfig


class SpikingModule(L.LightningModule):
    """A :class:`SpikingMLP` trained on ``(x, target)`` batches.

    Logs ``{stage}_loss`` (per step in training, per epoch in both stages),
    :meth:`step_metrics`, ``{stage}_spike_rate/layer{i}`` and ``slope`` (the k the
    epoch trained with). Subclasses call ``self.save_hyperparameters()`` in their own
    ``__init__`` (their arguments are what checkpoints hold; ``lr`` and
    ``weight_decay`` among them, read by :meth:`configure_optimizers`) and define
    :meth:`loss`.
    """

    def __init__(self, n_in: int, n_out: int, network: dict[str, Any], slope: float) -> None:
        super().__init__()
        self.net = SpikingMLP(SpikingMLPConfig(n_in=n_in, n_out=n_out, slope=slope, **network))

    def readout(self, out: torch.Tensor) -> torch.Tensor:
        """The prediction from the network's readout (identity here)."""
        return out

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def step_metrics(self, stage: str, pred: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
        """Update the task's own metrics with this batch; returns ``{name: metric}`` to log
        per epoch after the loss (none here)."""
        return {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.net(x).out)

    def batch_loss(self, batch) -> torch.Tensor:
        """The task's loss of one batch (what the gradient diagnostics differentiate)."""
        x, target = batch
        return self.loss(self(x), target)

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, target = batch
        out = self.net(x)
        pred = self.readout(out.out)
        loss = self.loss(pred, target)
        metrics = self.step_metrics(stage, pred, target)
        on_step = stage == "train"
        self.log(f"{stage}_loss", loss, prog_bar=True, on_step=on_step, on_epoch=True, batch_size=len(x))
        for name, metric in metrics.items():
            self.log(name, metric, prog_bar=True, on_step=False, on_epoch=True)
        for i, r in enumerate(out.rates):
            self.log(f"{stage}_spike_rate/layer{i}", r, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def training_step(self, batch, batch_idx):
        self.log("slope", self.net.lifs[0].spike.slope, on_step=False, on_epoch=True, prog_bar=True)
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr,
                                weight_decay=self.hparams.weight_decay)


class SpikingClassifier(SpikingModule):
    """Cross-entropy on the readout; logs ``{train,val}_acc`` (micro accuracy)."""

    def __init__(self, n_in: int, n_classes: int, network: dict[str, Any],
                 lr: float = 1e-3, weight_decay: float = 0.0, slope: float = 25.0) -> None:
        super().__init__(n_in=n_in, n_out=n_classes, network=network, slope=slope)
        self.save_hyperparameters()
        self.train_acc = MulticlassAccuracy(num_classes=n_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=n_classes, average="micro")

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(pred, target)

    def step_metrics(self, stage: str, pred: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
        acc = self.train_acc if stage == "train" else self.val_acc
        acc(pred, target)
        return {f"{stage}_acc": acc}

"""Lightning callbacks that drive the shared slope schedules."""

from __future__ import annotations

from typing import Any

import lightning as L

from ..schedules import SlopeSchedule
from ..spiking import set_slope


class SlopeScheduleCallback(L.Callback):
    """Apply a slope schedule once per epoch.

    At fit start the network gets the schedule's current k. After every
    training epoch (Lightning runs validation before ``on_train_epoch_end``)
    the epoch's score (``monitor``: validation accuracy by default; the run's
    ``score`` key, e.g. ``eval_return`` for behaviour cloning) is fed to
    the schedule and the network gets the new k for the next epoch. The
    schedule's state is saved in checkpoints, so a resumed fit continues the
    same k sequence. The module logs the k it trained with as ``slope``.
    """

    def __init__(self, schedule: SlopeSchedule, monitor: str = "val_acc") -> None:
        self.schedule = schedule
        self.monitor = monitor
        self.history: list[float] = []

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        set_slope(pl_module, self.schedule.k)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        score = trainer.callback_metrics.get(self.monitor)
        if score is None:
            raise KeyError(
                f"slope schedule monitors {self.monitor!r}, which was not logged; "
                f"logged: {', '.join(sorted(trainer.callback_metrics))}"
            )
        self.history.append(self.schedule.k)
        set_slope(pl_module, self.schedule.update(float(score)))

    def state_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule.state_dict(), "history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.schedule.load_state_dict(state_dict["schedule"])
        self.history = list(state_dict.get("history", []))


class GradientDiagnosticsCallback(L.Callback):
    """Every ``every_n_steps`` training steps, log each layer's gradient magnitude and its
    cosine to the gradient at ``k_ref`` (``grad/layer{i}/magnitude``, ``grad/layer{i}/cosine``).

    It re-runs the forward once on the step's batch (the training step's graph is gone by
    then) and differentiates that one forward at the current slope and at ``k_ref``.
    """

    def __init__(self, every_n_steps: int = 50, k_ref: float = 100.0) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps, self.k_ref = every_n_steps, k_ref

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every_n_steps:
            return
        import torch

        from ..diagnostics import gradient_stats

        with torch.enable_grad():
            loss = pl_module.batch_loss(batch)  # the task's own loss (SpikingModule)
            stats = gradient_stats(pl_module.net, loss, k_ref=self.k_ref)
        (layers,) = stats.values()
        for i, st in enumerate(layers):
            pl_module.log(f"grad/layer{i}/magnitude", st["magnitude"], on_step=True, on_epoch=False)
            pl_module.log(f"grad/layer{i}/cosine", st["cosine"], on_step=True, on_epoch=False)

"""Run one supervised experiment with a real ``lightning.Trainer``.

Layout of a run directory (``<logging.out_dir>/<logging.name>/version_<n>/``)::

    config.yaml          the validated config that ran
    checkpoints/         best (by the score: val_acc, or eval_return for behaviour cloning) and last
    csv/metrics.csv      Lightning CSVLogger
    tensorboard/         Lightning TensorBoardLogger
    wandb/               W&B run files (offline-run-* by default)
    result.json          final / best score (and validation accuracy), epochs, wall time
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Sequence

import lightning as L
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

from .config import SupervisedConfig
from ..rundir import next_version_dir
from ..precision import check_precision
from .callbacks import GradientDiagnosticsCallback, SlopeScheduleCallback
from .data import make_datamodule
from .module import SpikingClassifier


@dataclass
class TrainResult:
    run_dir: str
    final_val_acc: float | None  # None for behaviour cloning
    best_val_acc: float | None
    epochs: int
    wall_time_s: float
    slopes: list[float]
    score_name: str = "val_acc"  # what the schedule saw and the best checkpoint monitored
    final_score: float = float("nan")
    best_score: float = float("nan")
    final_metrics: dict[str, float] | None = None  # behaviour cloning: val_loss, eval_* of the last epoch


def make_loggers(cfg: SupervisedConfig, run_dir: Path) -> list:
    loggers: list = []
    if cfg.logging.csv:
        loggers.append(CSVLogger(save_dir=run_dir, name="csv", version=""))
    if cfg.logging.tensorboard:
        loggers.append(TensorBoardLogger(save_dir=run_dir, name="tensorboard", version="",
                                         default_hp_metric=False))
    if cfg.logging.wandb != "off":
        from lightning.pytorch.loggers import WandbLogger

        if cfg.logging.wandb == "offline":
            os.environ["WANDB_MODE"] = "offline"
        loggers.append(WandbLogger(project=cfg.logging.wandb_project, name=cfg.logging.name,
                                   save_dir=str(run_dir.resolve()),
                                   offline=cfg.logging.wandb == "offline",
                                   config=cfg.model_dump()))
    return loggers


def diagnostics_callbacks(cfg: SupervisedConfig) -> list[L.Callback]:
    if not cfg.diagnostics.every:
        return []
    return [GradientDiagnosticsCallback(cfg.diagnostics.every, cfg.diagnostics.k_ref)]


def task_callbacks(cfg: SupervisedConfig) -> list[L.Callback]:
    """Callbacks the task itself needs: behaviour cloning flies the clone (FlyEvalCallback)."""
    if cfg.task != "behaviour_cloning":
        return []
    from .bc import FlyEvalCallback

    ev = cfg.data.eval
    return [FlyEvalCallback(cfg.data.env_config, every=ev.every, episodes=ev.episodes, seed=ev.seed)]


def build(cfg: SupervisedConfig, progress: bool = True):
    """Seed everything and build (datamodule, module, slope callback) from a config."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    schedule = cfg.slope.build()
    kw = dict(network=cfg.model.network_kwargs(), lr=cfg.optim.lr,
              weight_decay=cfg.optim.weight_decay, slope=schedule.k)
    if cfg.task == "behaviour_cloning":
        from .bc import BCDataModule, BehaviourCloner

        dm = BCDataModule(cfg.data, cfg.seed, progress=progress)
        module = BehaviourCloner(n_in=dm.n_features, n_out=dm.n_outputs, **kw)
    else:
        dm = make_datamodule(cfg.data, cfg.seed)
        module = SpikingClassifier(n_in=dm.n_features, n_classes=dm.n_classes, **kw)
    return dm, module, SlopeScheduleCallback(schedule, monitor=cfg.score_key)


def build_trainer(cfg: SupervisedConfig, slope_cb: SlopeScheduleCallback, callbacks: Sequence[L.Callback] = (),
                  *, logger: Sequence[Logger] | Literal[False], progress: bool, checkpointing: bool,
                  root_dir: str | Path) -> L.Trainer:
    """The ``lightning.Trainer`` of a supervised run, for ``snnlab train`` and sweep trials alike.

    The config's trainer settings (epochs, accelerator, precision, devices, determinism, logging
    interval), no model summary, and the callbacks in this order: the task's own
    (:func:`task_callbacks`: behaviour cloning's flights, which log the score), the slope
    schedule, the gradient diagnostics (:func:`diagnostics_callbacks`), then ``callbacks``
    (Lightning runs any ``ModelCheckpoint`` among them last). ``logger``: loggers or False;
    ``checkpointing``: Lightning's checkpointing (False: no ``ModelCheckpoint`` allowed).
    """
    check_precision(cfg.trainer.precision, "trainer.precision")
    return L.Trainer(
        max_epochs=cfg.trainer.max_epochs, accelerator=cfg.trainer.accelerator, precision=cfg.trainer.precision,
        devices=cfg.trainer.devices, deterministic=cfg.trainer.deterministic,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        enable_progress_bar=progress, enable_model_summary=False,
        enable_checkpointing=checkpointing, default_root_dir=root_dir, logger=list(logger) if logger else False,
        callbacks=[*task_callbacks(cfg), slope_cb, *diagnostics_callbacks(cfg), *callbacks],
    )


def train_supervised(cfg: SupervisedConfig, run_dir: str | Path | None = None,
                     callbacks: Sequence[L.Callback] = (), ckpt_path: str | None = None) -> TrainResult:
    run_dir = Path(run_dir) if run_dir else next_version_dir(Path(cfg.logging.out_dir) / cfg.logging.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    dm, module, slope_cb = build(cfg, progress=cfg.trainer.progress_bar)
    ckpt = ModelCheckpoint(dirpath=run_dir / "checkpoints", monitor=cfg.score_key, mode="max",
                           save_last=True, filename="best-{epoch}")
    trainer = build_trainer(cfg, slope_cb, [ckpt, *callbacks], logger=make_loggers(cfg, run_dir),
                            progress=cfg.trainer.progress_bar, checkpointing=True, root_dir=run_dir)
    t0 = time.perf_counter()
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    finally:
        if cfg.logging.wandb != "off":
            import wandb

            wandb.finish()
    wall = time.perf_counter() - t0
    m = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    best = float(ckpt.best_model_score) if ckpt.best_model_score is not None else float("nan")
    classification = cfg.task == "classification"
    result = TrainResult(
        run_dir=str(run_dir),
        final_val_acc=m["val_acc"] if classification else None,
        best_val_acc=(best if cfg.score_key == "val_acc" else float("nan")) if classification else None,
        epochs=trainer.current_epoch,
        wall_time_s=round(wall, 2),
        slopes=slope_cb.history,
        score_name=cfg.score_key,
        final_score=m[cfg.score_key],
        best_score=best,
        final_metrics=None if classification else {
            k: v for k, v in m.items() if k.startswith(("eval_", "val_loss", "train_loss"))},
    )
    (run_dir / "result.json").write_text(json.dumps(asdict(result), indent=2))
    return result

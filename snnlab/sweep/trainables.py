"""Ray Tune trainables: Lightning in a function trainable, RLlib Algorithms as themselves.

Every trial's config is the plain dict built by :func:`snnlab.sweep.spec.trial_config`
(base experiment + slope setting + seed + params), so Tune's CSV/JSON, W&B and
the live table all show the same readable keys. Both worlds report ``score``
(the supervised config's ``score`` metric - validation accuracy, or the behaviour
clone's ``eval_return`` - / evaluation-or-training return) and ``slope`` (the k the
epoch or iteration trained with) at every step.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from .spec import experiment_from_trial


# --- supervised: a function trainable driving the Lightning Trainer ----------------------
def supervised_trainable(config: dict[str, Any]) -> None:
    import lightning as L
    import ray
    from ray import tune

    from ..supervised.train import build, diagnostics_callbacks, task_callbacks

    cfg = experiment_from_trial(config)
    dm, module, slope_cb = build(cfg, progress=False)

    class TuneReport(L.Callback):
        """Report every epoch to Tune, with a Lightning checkpoint (for retries and resume)."""

        def on_train_epoch_end(self, trainer, pl_module):  # after validation and the slope update
            m = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
            metrics = {"score": m[cfg.score_key], "slope": slope_cb.history[-1],
                       "slope_next": slope_cb.schedule.k, "epoch": trainer.current_epoch,
                       "node_id": ray.get_runtime_context().get_node_id(), **m}
            with tempfile.TemporaryDirectory() as d:
                trainer.save_checkpoint(os.path.join(d, "checkpoint.ckpt"))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    ckpt_path = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            local = Path(tempfile.mkdtemp()) / "checkpoint.ckpt"
            local.write_bytes((Path(d) / "checkpoint.ckpt").read_bytes())
            ckpt_path = str(local)
    trainer = L.Trainer(
        max_epochs=cfg.trainer.max_epochs, accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices, deterministic=cfg.trainer.deterministic,
        enable_progress_bar=False, enable_model_summary=False, logger=False,
        enable_checkpointing=False,
        callbacks=[*task_callbacks(cfg), slope_cb, *diagnostics_callbacks(cfg), TuneReport()],
        default_root_dir=tempfile.mkdtemp(prefix="snnlab-trial-"),
    )
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)


# --- RL: RLlib Algorithms that accept a trial config ---------------------------------------
def is_trial_config(config: Any) -> bool:
    return isinstance(config, dict) and "base" in config and isinstance(config.get("setting"), dict)


def algorithm_config(config: dict[str, Any]):
    from ..rl.train import build_algorithm_config

    return build_algorithm_config(experiment_from_trial(config))


class _FromTrialConfig:
    """Build the RLlib AlgorithmConfig from a trial config, for Tune's trainable protocol."""

    @classmethod
    def default_resource_request(cls, config):
        if is_trial_config(config):
            config = algorithm_config(config)
        return super().default_resource_request(config)

    def __init__(self, config=None, **kwargs):
        if is_trial_config(config):
            config = algorithm_config(config)
        super().__init__(config=config, **kwargs)


from ..rl.callbacks import SpikingPPO, SpikingSAC, SpikingTD3  # noqa: E402  (after the supervised part on purpose)


class SweepPPO(_FromTrialConfig, SpikingPPO):
    """SpikingPPO built from a sweep trial config."""


class SweepSAC(_FromTrialConfig, SpikingSAC):
    """SpikingSAC built from a sweep trial config."""


class SweepTD3(_FromTrialConfig, SpikingTD3):
    """SpikingTD3 built from a sweep trial config."""


RL_TRAINABLES = {"PPO": SweepPPO, "SAC": SweepSAC, "TD3": SweepTD3}


def trainable_for(sweep):
    """What Tune runs for this sweep: the RLlib Algorithm class, or the resourced function."""
    from ray import tune

    if sweep.kind == "rl":
        return RL_TRAINABLES[sweep.algorithm]
    r = sweep.spec.resources
    return tune.with_resources(supervised_trainable, {"cpu": r.cpus_per_trial, "gpu": r.gpus_per_trial})

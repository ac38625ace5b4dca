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

    from ..supervised.train import build, build_trainer

    cfg = experiment_from_trial(config)
    dm, module, slope_cb = build(cfg, progress=False)
    run = start_wandb(config, tune.get_context().get_trial_id(), _function_storage())

    class TuneReport(L.Callback):
        """Report every epoch to Tune, with a Lightning checkpoint (for retries and resume)."""

        def on_train_epoch_end(self, trainer, pl_module):  # after validation and the slope update
            m = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
            metrics = {"score": m[cfg.score_key], "slope": slope_cb.history[-1],
                       "slope_next": slope_cb.schedule.k, "epoch": trainer.current_epoch,
                       "node_id": ray.get_runtime_context().get_node_id(), **m}
            if run is not None:  # before report: a trial stopped by Tune ends inside report()
                run.log({**metrics, "training_iteration": trainer.current_epoch + 1})
                if trainer.current_epoch + 1 >= cfg.trainer.max_epochs:
                    # finish before the last report: Tune ends the trial there and does not wait
                    # for this thread (FunctionTrainable.cleanup), so a finish after it is lost
                    run.finish(0)
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
        if config["setting"].get("population"):
            # a PBT member is restored at every pause and exploit: a new training order from
            # (seed, restored epoch), not the seed's first order again after every restore
            import torch

            epoch = int(torch.load(ckpt_path, map_location="cpu", weights_only=False)["epoch"])
            dm.shuffle_seed = (cfg.seed + 100_003 * (epoch + 1)) % 2**31
    trainer = build_trainer(cfg, slope_cb, [TuneReport()], logger=False, progress=False, checkpointing=False,
                            root_dir=tempfile.mkdtemp(prefix="snnlab-trial-"))
    exit_code = 1
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        exit_code = 0
    except SystemExit:  # how Tune ends a function trial it stops
        exit_code = 0
        raise
    finally:
        if run is not None:
            run.finish(exit_code)


# --- W&B from inside the trial -------------------------------------------------------------
def wandb_spec(config: dict[str, Any], trial_id: str | None) -> dict[str, Any] | None:
    """The trial's W&B run (None when the sweep runs with --wandb off): the sweep's mode,
    project and group (``config["wandb"]``, set by :func:`snnlab.sweep.run.build_tuner`), the
    trial name as run name, the trial id as run id, and tags for the setting."""
    from .spec import trial_name

    base = config.get("wandb")
    if not base:
        return None
    slope = config["setting"]["slope"]
    tags = [f"sweep:{config.get('sweep', '?')}", f"setting:{config['setting']['label']}",
            f"kind:{slope['kind']}", f"seed:{config['seed']}"]
    pop = config["setting"].get("population")
    if pop:  # a population member: its k changes when it exploits another member
        tags[2] = f"kind:{pop['kind']}"
        tags.append(f"member:{config['setting']['member']}")
    elif slope["kind"] == "fixed":
        tags.append(f"k:{slope['k']:g}")
    return {**base, "name": trial_name(config), "tags": tags, "id": trial_id}


def start_wandb(config: dict[str, Any], trial_id: str | None, storage):
    """Start the trial's W&B run in this (the trial's) process; None without W&B. The run also
    carries the trial's energy estimate (``energy/...``, :class:`snnlab.sweep.summary.TrialEnergy`)
    from its spike rates, per row and in its summary."""
    spec = wandb_spec(config, trial_id)
    if spec is None:
        return None
    from ..wandb_utils import TrialRun, trial_dir_from_storage
    from .summary import TrialEnergy

    logged = {k: v for k, v in config.items() if k != "wandb" and not k.startswith("__")}
    energy = TrialEnergy(config["base"], config.get("params")) if isinstance(config.get("base"), dict) else None
    return TrialRun(spec, logged, trial_dir_from_storage(storage), energy=energy)


def _function_storage():
    from ray.train._internal.session import get_session

    session = get_session()
    return getattr(session, "storage", None) if session is not None else None


# --- RL: RLlib Algorithms that accept a trial config ---------------------------------------
def is_trial_config(config: Any) -> bool:
    return isinstance(config, dict) and "base" in config and isinstance(config.get("setting"), dict)


#: the replay buffer's entry in a population member's ``Algorithm.get_state()``
REPLAY_STATE_KEY = "snnlab_replay_buffer"


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
        self._trial_config = config if is_trial_config(config) else None
        self._wandb_run = None
        trial_info = None
        if self._trial_config is not None:
            from ray.tune.result import TRIAL_INFO

            trial_info = self._trial_config.get(TRIAL_INFO)  # lost in the AlgorithmConfig
            config = algorithm_config(config)
        super().__init__(config=config, **kwargs)
        if trial_info is not None:
            self._trial_info = trial_info  # trial_id, trial_name for Tune's and W&B's use

    def train(self):
        """One iteration; its result is also logged to the trial's W&B run (started here, in
        the trial process, at the first result) before Tune sees it."""
        try:
            result = super().train()
        except BaseException:
            self._finish_wandb(1)
            raise
        if self._trial_config is not None:
            if self._wandb_run is None:
                self._wandb_run = start_wandb(self._trial_config, self.trial_id,
                                              getattr(self, "_storage", None))
            if self._wandb_run is not None:
                self._wandb_run.log(result)
        return result

    def reset_config(self, new_config):
        """Run the next trial in this process (``reuse_actors``): stop this trial's Algorithm
        and W&B run, then build a fresh Algorithm from the new trial config, exactly as a new
        actor would - without paying for a new Ray worker process and its imports again."""
        if self._trial_config is None or not is_trial_config(new_config):
            return False
        storage, trial_info = self._storage, self._trial_info  # set by Trainable.reset
        self.cleanup()
        self.__dict__.clear()  # nothing of the old trial survives (e.g. its slope_schedule)
        self.__init__(config=new_config, storage=storage)
        self._trial_info = trial_info
        return True

    def cleanup(self):
        try:
            super().cleanup()
        finally:
            self._finish_wandb(0)

    # --- population members: checkpoints that are complete copies ---------------------------
    def _population_member(self) -> bool:
        config = getattr(self, "_trial_config", None)
        return config is not None and bool(config["setting"].get("population"))

    def get_state(self, components=None, **kwargs):
        """RLlib's state (+ the slope schedule's, SpikingStateMixin); a population member's also
        holds its replay buffer (TD3, SAC): PBT pauses members and copies one member's
        checkpoint into another, and each time the member's Algorithm is rebuilt from the
        checkpoint, so a buffer outside it would come back empty (grid trials are unchanged)."""
        state = super().get_state(components, **kwargs)
        buffer = getattr(self, "local_replay_buffer", None)
        if components is None and buffer is not None and self._population_member():
            state[REPLAY_STATE_KEY] = buffer.get_state()
        return state

    def set_state(self, state):
        super().set_state(state)
        buffer = getattr(self, "local_replay_buffer", None)
        if REPLAY_STATE_KEY in state and buffer is not None:
            buffer.set_state(state[REPLAY_STATE_KEY])

    def load_checkpoint(self, checkpoint_dir):
        super().load_checkpoint(checkpoint_dir)  # the slope: the (perturbed) config's, pushed everywhere
        if self._population_member():
            self._fresh_streams()

    def _fresh_streams(self) -> None:
        """A population member is restored at every PBT pause and exploit, each time into an
        Algorithm whose EnvRunners were just built and seeded with the trial's seed: without this
        its envs and samplers would replay the same random streams after every restore (every
        member the same episode starts each interval). Re-seed every EnvRunner and this process
        from (seed, restored iteration): still reproducible, no longer repeated."""
        from ray.rllib.utils.debug import update_global_seed_if_necessary

        from ..rl.sync import env_runner_groups

        if self.config.seed is None:
            return
        base = (int(self.config.seed) + 100_003 * int(self.iteration)) % 2**31
        framework = self.config.framework_str

        def reseed(er):
            er._seed = base + int(er.worker_index or 0) + int(1e6 * er.config.in_evaluation)
            update_global_seed_if_necessary(framework=framework, seed=er._seed)
            er._needs_initial_reset = True  # the next sample resets its envs with the new seed
            return er._seed

        for group in env_runner_groups(self):
            group.foreach_env_runner(reseed, local_env_runner=True)
        update_global_seed_if_necessary(framework=framework, seed=base)

    def _finish_wandb(self, exit_code: int) -> None:
        run, self._wandb_run = getattr(self, "_wandb_run", None), None
        if run is not None:
            run.finish(exit_code)


from ..rl.registry import REGISTRY  # noqa: E402  (after the supervised part on purpose)


def _sweep_class(name: str, algorithm: type) -> type:
    """``Sweep<NAME>``: the registry's Spiking* algorithm built from a sweep trial config. Defined
    as a module attribute, so Ray pickles it by reference."""
    cls = type(f"Sweep{name}", (_FromTrialConfig, algorithm),
               {"__module__": __name__, "__doc__": f"{algorithm.__name__} built from a sweep trial config."})
    globals()[cls.__name__] = cls
    return cls


#: the RL trainable of each registered algorithm: SweepPPO, SweepSAC, SweepTD3, ...
RL_TRAINABLES = {name: _sweep_class(name, entry.algorithm) for name, entry in REGISTRY.items()}


def trainable_for(sweep):
    """What Tune runs for this sweep: the RLlib Algorithm class, or the resourced function."""
    from ray import tune

    if sweep.kind == "rl":
        return RL_TRAINABLES[sweep.algorithm]
    r = sweep.spec.resources
    return tune.with_resources(supervised_trainable, {"cpu": r.cpus_per_trial, "gpu": r.gpus_per_trial})

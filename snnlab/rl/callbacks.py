"""Drive a slope schedule from RLlib: an RLlibCallback plus checkpointable state.

After every training iteration :class:`SlopeScheduleCallback` feeds the score
(mean evaluation return when evaluation ran, else
``env_runners/episode_return_mean``) to the schedule and writes the new k into
*every* copy of the module at once: each Learner (``foreach_learner``,
unwrapped module) and each EnvRunner, local and remote, training and
evaluation. Weight sync alone would deliver it one iteration late.

The iteration's result gets ``slope`` (the k this iteration trained with),
``slope_next`` (the k the next one will use) and ``score`` (the score
fed to the schedule), so Tune, CSV and W&B all see them.

The schedule lives on the algorithm (``algorithm.slope_schedule``); the callback is a
:class:`snnlab.rl.sync.SyncedState`, so recreated EnvRunners get the current k and every
algorithm of the registry (``SpikingPPO``, ``SpikingSAC``, ``SpikingTD3``: their
:class:`SpikingStateMixin`) keeps the schedule's state - and the reward curriculum's - in
``Algorithm.get_state()``: checkpoints restore it and a restored run continues the same k
sequence.

The other callbacks add diagnostics to each iteration's result: ``spike_rate/layer{i}``
(:class:`SpikeRatesCallback`), ``grad/layer{i}/...`` (:class:`GradientDiagnosticsCallback`) and
the fraction of episodes flown to the time limit (:class:`FullEpisodesCallback`).
:data:`CALLBACKS` is the list every snnlab algorithm runs (PPO, SAC and TD3 alike).
"""

from __future__ import annotations

import math
from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.utils.annotations import override
from torch import nn

from ..schedules import AdaptiveSlope, SlopeSchedule, make_schedule
from ..spiking import get_slope, set_slope
from .curriculum import CurriculumCallback
from .sync import SyncedState, SyncedStateMixin, env_runner_groups, learner_results

SCHEDULE_KEY = "slope_schedule"  # in config.learner_config_dict: {"kind": ..., **params}
DIAGNOSTICS_KEY = "gradient_diagnostics"  # in config.learner_config_dict: {"every", "k_ref", ...}
STATE_KEY = "snnlab_slope_schedule"  # in Algorithm.get_state()


def _torch_modules(module: Any):
    """Yield the torch modules inside an RLModule / MultiRLModule / DDP wrapper."""
    if hasattr(module, "unwrapped"):
        module = module.unwrapped()
    if hasattr(module, "_rl_modules"):  # MultiRLModule
        for sub in module._rl_modules.values():
            yield from _torch_modules(sub)
    elif isinstance(module, nn.Module):
        yield module


def set_module_slope(module: Any, k: float) -> int:
    return sum(set_slope(m, k) for m in _torch_modules(module))


def get_module_slope(module: Any) -> float:
    values = {get_slope(m) for m in _torch_modules(module)}
    if len(values) != 1:
        raise ValueError(f"modules disagree on the slope: {sorted(values)}")
    return values.pop()


def apply_slope(algorithm, k: float) -> None:
    """Set k on every Learner and every EnvRunner (local and remote) now."""
    SlopeScheduleCallback().push(algorithm, float(k))


def collect_slopes(algorithm) -> dict[str, list[float]]:
    """The slope each process currently holds (for tests and debugging)."""
    out = {"learners": learner_results(algorithm.learner_group.foreach_learner(
        lambda learner: get_module_slope(learner.module)))}
    for name, group in zip(("env_runners", "eval_env_runners"), env_runner_groups(algorithm)):
        out[name] = group.foreach_env_runner(
            lambda er: get_module_slope(er.module) if er.module is not None else None,
            local_env_runner=True)
    return out


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


def schedule_from_config(config) -> SlopeSchedule | None:
    spec = dict((config.learner_config_dict or {}).get(SCHEDULE_KEY) or {})
    return make_schedule(**spec) if spec else None


def iteration_score(result: dict) -> float | None:
    """Evaluation return when this iteration evaluated, else the training return."""
    for path in (("evaluation", "env_runners", "episode_return_mean"),
                 ("env_runners", "episode_return_mean")):
        node: Any = result
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None and not (isinstance(node, float) and math.isnan(node)):
            return float(node)
    return None


class SlopeScheduleCallback(SyncedState):
    """Feed each iteration's score to the schedule and put the new k into every process now."""

    STATE_KEY = STATE_KEY
    PUSH_TO_LEARNERS = True

    def value(self, algorithm) -> float | None:
        sched = getattr(algorithm, "slope_schedule", None)
        return None if sched is None else float(sched.k)

    def to_learner(self, learner, k: float) -> int:
        return set_module_slope(learner.module, k)

    def to_env_runner(self, env_runner, k: float) -> int:
        return set_module_slope(env_runner.module, k)

    def get_state(self, algorithm) -> dict | None:
        sched = getattr(algorithm, "slope_schedule", None)
        return None if sched is None else sched.state_dict()

    def set_state(self, algorithm, state: dict) -> None:
        if getattr(algorithm, "slope_schedule", None) is None:
            algorithm.slope_schedule = schedule_from_config(algorithm.config)
        algorithm.slope_schedule.load_state_dict(state)

    @override(RLlibCallback)
    def on_algorithm_init(self, *, algorithm, metrics_logger=None, **kwargs) -> None:
        if getattr(algorithm, "slope_schedule", None) is None:
            algorithm.slope_schedule = schedule_from_config(algorithm.config)
        self.push(algorithm)

    @override(RLlibCallback)
    def on_train_result(self, *, algorithm, metrics_logger=None, result: dict, **kwargs) -> None:
        sched: SlopeSchedule | None = getattr(algorithm, "slope_schedule", None)
        if sched is None:
            return
        used = sched.k
        score = iteration_score(result)
        if score is not None or not isinstance(sched, AdaptiveSlope):
            sched.update(score)  # adaptive without a finished episode yet: keep k
        self.push(algorithm)
        result["slope"] = used
        result["slope_next"] = sched.k
        result["score"] = float("nan") if score is None else score
        result["node_id"] = _node_id()


def _probe_gradients(learner, k_ref: float, batch: int, seed: int) -> list[dict[str, float]]:
    """Gradient stats of the learner's spiking actor on a standard-normal probe (PAPER.md's probe)."""
    import torch

    from ..diagnostics import gradient_stats
    from ..spiking import SpikingMLP

    nets = [m for mod in _torch_modules(learner.module) for m in mod.modules() if isinstance(m, SpikingMLP)]
    net = nets[0]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, net.cfg.n_in, generator=g)
    y = torch.randn(batch, net.cfg.n_out, generator=g)
    with torch.enable_grad():
        loss = torch.nn.functional.mse_loss(net(x).out, y)
        (layers,) = gradient_stats(net, loss, k_ref=k_ref).values()
    return layers


class GradientDiagnosticsCallback(RLlibCallback):
    """Every ``every`` iterations, the spiking actor's per-layer gradient magnitude and cosine
    to the ``k_ref`` gradient on the first Learner, into the result as
    ``grad/layer{i}/magnitude`` and ``grad/layer{i}/cosine``.

    The probe is the paper's: standard-normal observations and regression targets, MSE on
    the actor's readout, at the slope the network currently trains with.
    """

    @override(RLlibCallback)
    def on_train_result(self, *, algorithm, metrics_logger=None, result: dict, **kwargs) -> None:
        spec = (algorithm.config.learner_config_dict or {}).get(DIAGNOSTICS_KEY) or {}
        every = int(spec.get("every", 0))
        it = int(result.get("training_iteration", algorithm.iteration))
        if not every or it % every:
            return
        k_ref, batch = float(spec.get("k_ref", 100.0)), int(spec.get("probe_batch", 64))
        (layers, *_) = learner_results(algorithm.learner_group.foreach_learner(
            lambda learner: _probe_gradients(learner, k_ref, batch, seed=it)))
        for i, st in enumerate(layers):
            result[f"grad/layer{i}/magnitude"] = st["magnitude"]
            result[f"grad/layer{i}/cosine"] = st["cosine"]


def _spike_rates(learner) -> list[float]:
    from ..spiking import SpikingMLP

    nets = [m for mod in _torch_modules(learner.module) for m in mod.modules() if isinstance(m, SpikingMLP)]
    return [float(r) for r in nets[0].last_rates] if nets else []


class SpikeRatesCallback(RLlibCallback):
    """Each iteration, the spiking actor's per-layer spike rates on the Learner's last training
    minibatch, into the result as ``spike_rate/layer{i}`` (a silent layer shows as 0)."""

    @override(RLlibCallback)
    def on_train_result(self, *, algorithm, metrics_logger=None, result: dict, **kwargs) -> None:
        (rates, *_) = learner_results(algorithm.learner_group.foreach_learner(_spike_rates))
        for i, r in enumerate(rates):
            result[f"spike_rate/layer{i}"] = r


FULL_EPISODES_KEY = "full_episode_fraction"


class FullEpisodesCallback(RLlibCallback):
    """Per finished episode, 1 if it ran to its time limit (truncated, never terminated - for
    the quadrotor: all 500 steps inside the box) else 0; averaged by RLlib into
    ``env_runners/full_episode_fraction`` over the last ``metrics_num_episodes_for_smoothing``
    episodes (as RLlib's return mean) and into ``evaluation/env_runners/full_episode_fraction``
    over the last ``evaluation_duration`` episodes (one evaluation's)."""

    @override(RLlibCallback)
    def on_episode_end(self, *, episode, env_runner=None, metrics_logger=None, **kwargs) -> None:
        if metrics_logger is None:
            return
        config = getattr(env_runner, "config", None)
        window = 100
        if config is not None:
            window = (config.evaluation_duration if config.in_evaluation
                      and config.evaluation_duration_unit == "episodes" and config.evaluation_duration != "auto"
                      else config.metrics_num_episodes_for_smoothing)
        full = float(episode.is_truncated and not episode.is_terminated)
        metrics_logger.log_value(FULL_EPISODES_KEY, full, reduce="mean", window=int(window))


class SpikingStateMixin(SyncedStateMixin):
    """What every snnlab algorithm keeps in its checkpoints besides RLlib's own state: the slope
    schedule and the reward curriculum (``class SpikingPPO(SpikingStateMixin, PPO)``)."""

    SYNCED_STATES = (SlopeScheduleCallback, CurriculumCallback)


#: the callbacks every snnlab algorithm runs (the curriculum: a no-op unless env_config has a staged reward)
CALLBACKS = [SlopeScheduleCallback, SpikeRatesCallback, GradientDiagnosticsCallback, CurriculumCallback,
             FullEpisodesCallback]

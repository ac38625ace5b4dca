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

The schedule lives on the algorithm (``algorithm.slope_schedule``); the
:class:`SlopeScheduleMixin` algorithms (``SpikingPPO``, ``SpikingSAC``) add
its state to ``Algorithm.get_state()``, so checkpoints restore it and a
restored run continues the same k sequence.
"""

from __future__ import annotations

import math
from typing import Any

from ray.rllib.algorithms.ppo import PPO
from ray.rllib.algorithms.sac import SAC
from ray.rllib.callbacks.callbacks import RLlibCallback
from torch import nn

from ..schedules import AdaptiveSlope, SlopeSchedule, make_schedule
from ..spiking import get_slope, set_slope
from .curriculum import CurriculumStateMixin
from .replay import FlatReplayTrainingStep
from .td3 import TD3

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


def _groups(algorithm):
    yield algorithm.env_runner_group
    if getattr(algorithm, "eval_env_runner_group", None) is not None:
        yield algorithm.eval_env_runner_group


def _learner_results(results) -> list:
    out = []
    for r in results:
        if not r.ok:
            raise r.get()
        out.append(r.get())
    return out


def apply_slope(algorithm, k: float) -> None:
    """Set k on every Learner and every EnvRunner (local and remote) now."""
    k = float(k)
    _learner_results(algorithm.learner_group.foreach_learner(
        lambda learner: set_module_slope(learner.module, k)))
    for group in _groups(algorithm):
        group.foreach_env_runner(lambda er: set_module_slope(er.module, k), local_env_runner=True)


def collect_slopes(algorithm) -> dict[str, list[float]]:
    """The slope each process currently holds (for tests and debugging)."""
    out = {"learners": _learner_results(algorithm.learner_group.foreach_learner(
        lambda learner: get_module_slope(learner.module)))}
    for name, group in zip(("env_runners", "eval_env_runners"), _groups(algorithm)):
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


class SlopeScheduleCallback(RLlibCallback):
    """Feed each iteration's score to the schedule and put the new k into every process now."""

    def on_algorithm_init(self, *, algorithm, metrics_logger=None, **kwargs) -> None:
        if getattr(algorithm, "slope_schedule", None) is None:
            algorithm.slope_schedule = schedule_from_config(algorithm.config)
        if algorithm.slope_schedule is not None:
            apply_slope(algorithm, algorithm.slope_schedule.k)

    def on_train_result(self, *, algorithm, metrics_logger=None, result: dict, **kwargs) -> None:
        sched: SlopeSchedule | None = getattr(algorithm, "slope_schedule", None)
        if sched is None:
            return
        used = sched.k
        score = iteration_score(result)
        if score is not None or not isinstance(sched, AdaptiveSlope):
            sched.update(score)  # adaptive without a finished episode yet: keep k
        apply_slope(algorithm, sched.k)
        result["slope"] = used
        result["slope_next"] = sched.k
        result["score"] = float("nan") if score is None else score
        result["node_id"] = _node_id()

    def on_env_runners_recreated(self, *, algorithm, env_runner_group, env_runner_indices,
                                 is_evaluation, **kwargs) -> None:
        sched = getattr(algorithm, "slope_schedule", None)
        if sched is not None:
            k = sched.k
            env_runner_group.foreach_env_runner(lambda er: set_module_slope(er.module, k),
                                                remote_worker_ids=env_runner_indices,
                                                local_env_runner=False)

    def on_checkpoint_loaded(self, *, algorithm, **kwargs) -> None:
        sched = getattr(algorithm, "slope_schedule", None)
        if sched is not None:
            apply_slope(algorithm, sched.k)


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

    def on_train_result(self, *, algorithm, metrics_logger=None, result: dict, **kwargs) -> None:
        spec = (algorithm.config.learner_config_dict or {}).get(DIAGNOSTICS_KEY) or {}
        every = int(spec.get("every", 0))
        it = int(result.get("training_iteration", algorithm.iteration))
        if not every or it % every:
            return
        k_ref, batch = float(spec.get("k_ref", 100.0)), int(spec.get("probe_batch", 64))
        (layers, *_) = _learner_results(algorithm.learner_group.foreach_learner(
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

    def on_train_result(self, *, algorithm, metrics_logger=None, result: dict, **kwargs) -> None:
        (rates, *_) = _learner_results(algorithm.learner_group.foreach_learner(_spike_rates))
        for i, r in enumerate(rates):
            result[f"spike_rate/layer{i}"] = r


FULL_EPISODES_KEY = "full_episode_fraction"


class FullEpisodesCallback(RLlibCallback):
    """Per finished episode, 1 if it ran to its time limit (truncated, never terminated - for
    the quadrotor: all 500 steps inside the box) else 0; averaged by RLlib into
    ``env_runners/full_episode_fraction`` over the last ``metrics_num_episodes_for_smoothing``
    episodes (as RLlib's return mean) and into ``evaluation/env_runners/full_episode_fraction``
    over the last ``evaluation_duration`` episodes (one evaluation's)."""

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


class SlopeScheduleMixin:
    """Adds the slope schedule's state to an Algorithm's checkpointable state."""

    slope_schedule: SlopeSchedule | None = None

    def get_state(self, *args, **kwargs) -> dict:
        state = super().get_state(*args, **kwargs)
        if self.slope_schedule is not None:
            state[STATE_KEY] = self.slope_schedule.state_dict()
        return state

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        if STATE_KEY in state:
            if self.slope_schedule is None:
                self.slope_schedule = schedule_from_config(self.config)
            self.slope_schedule.load_state_dict(state[STATE_KEY])
            apply_slope(self, self.slope_schedule.k)


class SpikingPPO(CurriculumStateMixin, SlopeScheduleMixin, PPO):
    """RLlib's PPO whose checkpoints also hold the slope schedule and the reward curriculum."""


class SpikingSAC(CurriculumStateMixin, SlopeScheduleMixin, FlatReplayTrainingStep, SAC):
    """RLlib's SAC whose checkpoints also hold the slope schedule and the reward curriculum;
    with snnlab's flat replay buffer (:mod:`snnlab.rl.sac`) it trains with the flat step."""


class SpikingTD3(CurriculumStateMixin, SlopeScheduleMixin, TD3):
    """snnlab's TD3 (:mod:`snnlab.rl.td3`) whose checkpoints also hold the slope schedule and
    the reward curriculum."""

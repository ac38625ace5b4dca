"""The reward curriculum of ``snnlab/QuadrotorHover-v0`` driven from RLlib.

Where the schedule comes from: the env's own config, ``algorithm.config.env_config``
(the env constructor accepts these keys)::

    reward: paper                      # preset; CURRICULUM_STAGES[preset] stages (paper 6, l2f 15, snnlab_v0 1)
    curriculum_steps_per_stage: 200000 # optional; default CURRICULUM_STEPS_PER_STAGE[preset]
                                       # (paper 100k - snnlab's choice -, l2f 100k - learning-to-fly's)
    curriculum_stage: 0                # optional; the stage the envs start in

After every training iteration :class:`CurriculumCallback` computes::

    stage = min(num_env_steps_sampled_lifetime // curriculum_steps_per_stage, stages - 1)

(never lower than the stage it already holds: the curriculum only rises, also
across a restore), writes it into every env of every EnvRunner - local and
remote, training and evaluation (``foreach_env_runner(..., local_env_runner=True)``
and :func:`set_curriculum_stage`, which handles SyncVectorEnv / AsyncVectorEnv
sub-envs, the batched :class:`~snnlab.quadrotor.vector_env.QuadrotorHoverVector`,
single envs and wrappers) - and records ``curriculum_stage`` (the stage this
iteration sampled with) and ``curriculum_stage_next`` in the result. A preset
with one stage (``snnlab_v0``, or an env_config without ``reward``) is left
alone, so the callback is harmless on other envs.

The stage lives on the algorithm (``algorithm.curriculum_state = {"stage": s}``);
:func:`get_curriculum_state` / :func:`set_curriculum_state` (or
:class:`CurriculumStateMixin`) put it into ``Algorithm.get_state()`` under
:data:`STATE_KEY` so checkpoints restore it and push it to the envs at once.
Recreated EnvRunners get the current stage in ``on_env_runners_recreated``.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

from ..quadrotor.curriculum import curriculum_spec, get_curriculum_stages, set_curriculum_stage, stage_for_steps

STATE_KEY = "snnlab_curriculum"  # in Algorithm.get_state()


def _set_on_runner(env_runner, stage: int) -> int:
    env = getattr(env_runner, "env", None)
    return 0 if env is None else set_curriculum_stage(env, stage)


def _groups(algorithm):
    if getattr(algorithm, "env_runner_group", None) is not None:
        yield algorithm.env_runner_group
    if getattr(algorithm, "eval_env_runner_group", None) is not None:
        yield algorithm.eval_env_runner_group


def apply_curriculum_stage(algorithm, stage: int) -> list[int]:
    """Put ``stage`` into every env of every EnvRunner now; returns envs reached per runner."""
    stage = int(stage)
    out: list[int] = []
    for group in _groups(algorithm):
        out += group.foreach_env_runner(lambda er: _set_on_runner(er, stage), local_env_runner=True)
    return out


def collect_curriculum_stages(algorithm) -> dict[str, list]:
    """The stages every EnvRunner's envs hold (tests, debugging)."""
    fn = (lambda er: get_curriculum_stages(er.env) if getattr(er, "env", None) is not None else None)
    return {name: group.foreach_env_runner(fn, local_env_runner=True)
            for name, group in zip(("env_runners", "eval_env_runners"), _groups(algorithm))}


# --- state on the algorithm ----------------------------------------------------------------------
def _spec(algorithm) -> dict[str, Any]:
    return curriculum_spec(algorithm.config.env_config)


def get_curriculum_state(algorithm) -> dict[str, int]:
    """``{"stage": s}``: what goes into ``Algorithm.get_state()[STATE_KEY]``."""
    state = getattr(algorithm, "curriculum_state", None)
    if state is None:
        state = {"stage": _spec(algorithm)["initial_stage"]}
    return dict(state)


def set_curriculum_state(algorithm, state: dict) -> None:
    """Restore ``state`` (from :func:`get_curriculum_state`) and push the stage to every env."""
    algorithm.curriculum_state = {"stage": int(state["stage"])}
    if _spec(algorithm)["stages"] > 1:
        apply_curriculum_stage(algorithm, algorithm.curriculum_state["stage"])


class CurriculumStateMixin:
    """Adds the curriculum stage to an Algorithm's checkpointable state
    (``class SpikingPPO(CurriculumStateMixin, SlopeScheduleMixin, PPO)``)."""

    def get_state(self, *args, **kwargs) -> dict:
        state = super().get_state(*args, **kwargs)
        if getattr(self, "curriculum_state", None) is not None:
            state[STATE_KEY] = get_curriculum_state(self)
        return state

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        if STATE_KEY in state:
            set_curriculum_state(self, state[STATE_KEY])


# --- the callback ----------------------------------------------------------------------------------
def _lifetime_env_steps(algorithm, result: dict) -> int:
    steps = (result.get(ENV_RUNNER_RESULTS) or {}).get(NUM_ENV_STEPS_SAMPLED_LIFETIME)
    if steps is None:
        steps = algorithm.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)
    return int(steps)


class CurriculumCallback(RLlibCallback):
    """Raise the reward curriculum with the sampled env steps and put the stage into every env."""

    def on_algorithm_init(self, *, algorithm, metrics_logger=None, **kwargs) -> None:
        spec = _spec(algorithm)
        if getattr(algorithm, "curriculum_state", None) is None:
            algorithm.curriculum_state = {"stage": spec["initial_stage"]}
        if spec["stages"] > 1:
            apply_curriculum_stage(algorithm, algorithm.curriculum_state["stage"])

    def on_train_result(self, *, algorithm, metrics_logger=None, result: dict, **kwargs) -> None:
        spec = _spec(algorithm)
        state = getattr(algorithm, "curriculum_state", None) or {"stage": spec["initial_stage"]}
        used = int(state["stage"])
        stage = max(used, stage_for_steps(_lifetime_env_steps(algorithm, result), spec))
        algorithm.curriculum_state = {"stage": stage}
        if spec["stages"] > 1 and stage != used:
            apply_curriculum_stage(algorithm, stage)
        result["curriculum_stage"] = used
        result["curriculum_stage_next"] = stage

    def on_env_runners_recreated(self, *, algorithm, env_runner_group, env_runner_indices,
                                 is_evaluation, **kwargs) -> None:
        state = getattr(algorithm, "curriculum_state", None)
        if state is not None and _spec(algorithm)["stages"] > 1:
            stage = int(state["stage"])
            env_runner_group.foreach_env_runner(lambda er: _set_on_runner(er, stage),
                                                remote_worker_ids=env_runner_indices,
                                                local_env_runner=False)

    def on_checkpoint_loaded(self, *, algorithm, **kwargs) -> None:
        state = getattr(algorithm, "curriculum_state", None)
        if state is not None and _spec(algorithm)["stages"] > 1:
            apply_curriculum_stage(algorithm, int(state["stage"]))

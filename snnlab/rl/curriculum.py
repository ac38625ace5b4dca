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

The stage maths and how a stage reaches an env are the quadrotor's
(:mod:`snnlab.quadrotor.curriculum`); this module is the RLlib side. The stage lives on the
algorithm (``algorithm.curriculum_state = {"stage": s}``); the callback is a
:class:`snnlab.rl.sync.SyncedState`, so every snnlab algorithm keeps it in
``Algorithm.get_state()`` under :data:`STATE_KEY` (checkpoints restore it and push it to the
envs at once) and recreated EnvRunners get the current stage.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

from ..quadrotor.curriculum import curriculum_spec, get_curriculum_stages, set_curriculum_stage, stage_for_steps
from .sync import SyncedState, env_runner_groups

STATE_KEY = "snnlab_curriculum"  # in Algorithm.get_state()


def _set_on_runner(env_runner, stage: int) -> int:
    env = getattr(env_runner, "env", None)
    return 0 if env is None else set_curriculum_stage(env, stage)


def _spec(algorithm) -> dict[str, Any]:
    return curriculum_spec(algorithm.config.env_config)


def apply_curriculum_stage(algorithm, stage: int) -> None:
    """Put ``stage`` into every env of every EnvRunner now."""
    CurriculumCallback().push(algorithm, int(stage))


def collect_curriculum_stages(algorithm) -> dict[str, list]:
    """The stages every EnvRunner's envs hold (tests, debugging)."""
    fn = (lambda er: get_curriculum_stages(er.env) if getattr(er, "env", None) is not None else None)
    return {name: group.foreach_env_runner(fn, local_env_runner=True)
            for name, group in zip(("env_runners", "eval_env_runners"), env_runner_groups(algorithm))}


def _lifetime_env_steps(algorithm, result: dict) -> int:
    steps = (result.get(ENV_RUNNER_RESULTS) or {}).get(NUM_ENV_STEPS_SAMPLED_LIFETIME)
    if steps is None:
        steps = algorithm.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)
    return int(steps)


class CurriculumCallback(SyncedState):
    """Raise the reward curriculum with the sampled env steps and put the stage into every env."""

    STATE_KEY = STATE_KEY

    def value(self, algorithm) -> int | None:
        """The stage to push; None for a one-stage preset (other envs are left alone)."""
        state = getattr(algorithm, "curriculum_state", None)
        if state is None or _spec(algorithm)["stages"] <= 1:
            return None
        return int(state["stage"])

    def to_env_runner(self, env_runner, stage: int) -> int:
        return _set_on_runner(env_runner, stage)

    def get_state(self, algorithm) -> dict | None:
        state = getattr(algorithm, "curriculum_state", None)
        return None if state is None else {"stage": int(state["stage"])}

    def set_state(self, algorithm, state: dict) -> None:
        algorithm.curriculum_state = {"stage": int(state["stage"])}

    @override(RLlibCallback)
    def on_algorithm_init(self, *, algorithm, metrics_logger=None, **kwargs) -> None:
        if getattr(algorithm, "curriculum_state", None) is None:
            algorithm.curriculum_state = {"stage": _spec(algorithm)["initial_stage"]}
        self.push(algorithm)

    @override(RLlibCallback)
    def on_train_result(self, *, algorithm, metrics_logger=None, result: dict, **kwargs) -> None:
        spec = _spec(algorithm)
        state = getattr(algorithm, "curriculum_state", None) or {"stage": spec["initial_stage"]}
        used = int(state["stage"])
        stage = max(used, stage_for_steps(_lifetime_env_steps(algorithm, result), spec))
        algorithm.curriculum_state = {"stage": stage}
        if stage != used:
            self.push(algorithm)
        result["curriculum_stage"] = used
        result["curriculum_stage_next"] = stage

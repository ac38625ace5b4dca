"""The reward curriculum's stage maths and how a stage reaches the envs (no training framework).

Where the schedule comes from: the env's own config (``env_config``; the env constructor
accepts these keys)::

    reward: paper                      # preset; CURRICULUM_STAGES[preset] stages (paper 6, l2f 15, snnlab_v0 1)
    curriculum_steps_per_stage: 200000 # optional; default CURRICULUM_STEPS_PER_STAGE[preset]
                                       # (paper 100k - snnlab's choice -, l2f 100k - learning-to-fly's)
    curriculum_stage: 0                # optional; the stage the envs start in

The stage after ``n`` sampled env steps is::

    stage = min(n // curriculum_steps_per_stage, stages - 1)

:func:`set_curriculum_stage` writes a stage into an env: a single
:class:`~snnlab.quadrotor.env.QuadrotorHover`, the batched
:class:`~snnlab.quadrotor.vector_env.QuadrotorHoverVector` (all drones at once), gymnasium's
Sync/AsyncVectorEnv (each sub-env), wrapped or not. The RLlib side (the callback that raises
the stage with the algorithm's env steps and keeps it in checkpoints) is
:mod:`snnlab.rl.curriculum`.
"""

from __future__ import annotations

from typing import Any

from gymnasium.vector import VectorEnv

from .env import CURRICULUM_STAGES, CURRICULUM_STEPS_PER_STAGE, DEFAULT_REWARD, check_preset


def curriculum_spec(env_config: dict | None) -> dict[str, Any]:
    """``{"preset", "stages", "steps_per_stage", "initial_stage"}`` from an env_config."""
    cfg = dict(env_config or {})
    preset = check_preset(cfg.get("reward", DEFAULT_REWARD))
    steps = cfg.get("curriculum_steps_per_stage")
    steps = CURRICULUM_STEPS_PER_STAGE[preset] if steps is None else int(steps)
    if CURRICULUM_STAGES[preset] > 1 and steps <= 0:
        raise ValueError(f"curriculum_steps_per_stage must be > 0, got {steps}")
    return {"preset": preset, "stages": CURRICULUM_STAGES[preset], "steps_per_stage": steps,
            "initial_stage": int(cfg.get("curriculum_stage", 0))}


def stage_for_steps(env_steps: int, spec: dict[str, Any]) -> int:
    """The stage after ``env_steps`` sampled env steps: one more every ``steps_per_stage``."""
    if spec["stages"] <= 1:
        return 0
    return int(min(int(env_steps) // spec["steps_per_stage"], spec["stages"] - 1))


def set_curriculum_stage(env, stage: int) -> int:
    """Set ``stage`` on ``env`` - a gymnasium Env or VectorEnv, wrapped or not; returns how
    many single envs (drones) it reached."""
    base = getattr(env, "unwrapped", env)
    if isinstance(base, VectorEnv):
        if hasattr(base, "set_curriculum_stage"):  # QuadrotorHoverVector: all drones at once
            base.set_curriculum_stage(stage)
        else:  # SyncVectorEnv / AsyncVectorEnv: each sub-env (through its wrappers)
            base.call("set_curriculum_stage", stage)
        return int(base.num_envs)
    base.set_curriculum_stage(stage)
    return 1


def get_curriculum_stages(env) -> list[int]:
    """The stage of every single env inside ``env`` (tests, debugging)."""
    base = getattr(env, "unwrapped", env)
    if isinstance(base, VectorEnv):
        if hasattr(base, "set_curriculum_stage"):
            return [int(base.curriculum_stage)] * int(base.num_envs)
        return [int(s) for s in base.get_attr("curriculum_stage")]
    return [int(base.curriculum_stage)]

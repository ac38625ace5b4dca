"""The drone world both training worlds use, and no training framework: the Crazyflie hover
task's dynamics and reward presets (:mod:`.env`, registered as ``snnlab/QuadrotorHover-v0``),
the batched env (:mod:`.vector_env`), the classical hover expert (:mod:`.expert`), evaluation
flights (:mod:`.fly`), the reward curriculum's stage maths (:mod:`.curriculum`) and the
behaviour-cloning dataset (:mod:`.bc_data`). numpy + gymnasium (+ torch for ``fly.torch_policy``).
"""

from .env import ENV_ID, N_ACTIONS, QuadrotorHover, make_quadrotor  # registers the env

__all__ = ["ENV_ID", "N_ACTIONS", "QuadrotorHover", "make_quadrotor"]

"""Gymnasium environments: the paper's Crazyflie hover task.

``snnlab/QuadrotorHover-v0`` (registered when ``snnlab``, ``snnlab.rl`` or this
module is imported): a Crazyflie 2.1 rigid body in x-configuration, pure
numpy, 100 Hz. :class:`QuadrotorHover` is one drone in scalar Python;
:class:`snnlab.quadrotor.vector_env.QuadrotorHoverVector` steps N drones with the
same physics and reward in one numpy step and is the spec's
``vector_entry_point`` (``gym.make_vec(ENV_ID, num_envs=N,
vectorization_mode="vector_entry_point")``).

Dynamics (world frame z up; body frame x forward, y left, z up)::

    m_i   += (u_i - m_i) (1 - exp(-dt / tau))       motor lag, tau = 0.07 s rising / 0.11 s falling
    f_i    = t2 m_i^2 + t1 m_i + t0                 quadratic thrust curve per motor [N]
    tau_b  = sum_i r_i x (0, 0, f_i) + s_i c_yaw f_i e_z
    v'     = R e_z sum(f) / mass - g e_z
    w'     = I^-1 (tau_b - w x I w)

integrated semi-implicitly for the translation (velocity first, then
position) and with the explicit midpoint rule for the body rates, the
attitude following the exact exponential map ``R <- R exp(dt [w_mid]x)``,
which keeps R a rotation. Motor command ``u = (a + 1) / 2`` for actions ``a``
in [-1, 1]^4 (clipped to that box).

Observation (float32): the *base observation*, 18 values - position (3),
rotation matrix body->world (9, row-major), linear velocity in the world
frame (3), angular velocity in the body frame (3) - followed, when
``action_history=N > 0``, by the last N applied (clipped) actions, N*4
values, **oldest first** (the newest action is the last 4 values; as in
learning-to-fly's ``action_history``), all zeros after a reset. The first 18
values are always the base observation, so a module whose actor must not see
the history can slice ``obs[..., :18]``. With ``obs_noise=s > 0``, Gaussian
noise of std s, drawn from the env's ``np_random`` (one
``standard_normal(18)`` per returned observation, reset included), is added
to the 18 base values of the returned observation only (never to the state,
never to the action history). Episodes end when the drone leaves the box
``|p_i| <= 0.6`` m (terminated) or after ``max_steps`` = 500 steps
(truncated; the registered spec also has ``max_episode_steps=500``).

Reward presets (``reward=`` constructor kwarg, so ``env_config: {reward: paper}``),
all evaluated on the state *after* the step, with ``a`` the clipped action,
``|x|`` the Euclidean norm, ``a_hover = 2 hover_throttle - 1`` (0.46 at the
default 0.73) and ``tr R = R_00 + R_11 + R_22``:

- ``snnlab_v0`` (default; the reward of every snnlab result so far)::

      r = alive_bonus - w_pos |p| - w_vel |v| - w_att (1 - R_zz) - w_rate |w| - w_act |a - a_hover|^2 / 4

  the only preset that reads the weight kwargs (defaults: bonus 2, position
  1, velocity 0.2, attitude 0.5, rate 0.02, action 0.05; they keep the reward
  of a drone that stays in the box positive on average, +0.9 per step for a
  constant hover command from the random initial states, so surviving always
  pays; with bonus 1 and rate 0.05 it was -0.13 per step and ending the
  episode early paid more than flying). One curriculum stage.

- ``paper`` (PAPER.md, "The paper's own RL and BC setups")::

      r = C_s - C_p |p|^2 - C_v |v|^2 - C_q |q - q_des|^2 - C_a |a - a_hover|^2
      |q - q_des|^2 = 2 (1 - q_w),  q_w = sqrt(|1 + tr R|) / 2

  q is the attitude quaternion taken in the hemisphere q_w >= 0 (q and -q are
  the same rotation) and q_des = (1, 0, 0, 0), so |q - q_des|^2 =
  (q_w - 1)^2 + |q_xyz|^2 = 2 (1 - q_w); q_w comes from the rotation matrix
  (the absolute value only guards a rounding -0 at 180 degrees). C_s = 1,
  C_q = 0.25; C_p, C_v, C_a rise linearly over 6 curriculum stages
  (stage s = 0..5: C = start + (end - start) s / 5): C_p 1.0 -> 3.5,
  C_v 0.01 -> 0.10, C_a 0.14 -> 0.50.

- ``l2f`` ("Learning to Fly in Seconds", Eschmann et al.; constants read from
  arplaboratory/learning-to-fly @ d07592d,
  ``include/learning_to_fly/simulator/parameters/reward_functions/{squared,default}.h``
  (``reward_squared_position_only_torque``) and ``src/steps/curriculum.h``)::

      r = 2 - 0.5 (W_p |p|^2 + W_q (1 - q_w^2) + W_v |v|^2 + W_a |a - a_hover|^2)
      1 - q_w^2 = (3 - tr R) / 4

  stage 0: W_p = 5, W_q = 5, W_v = 0.01, W_a = 0.01. Their curriculum
  multiplies the weights every 100k env steps: W_a *= 1.4 (capped at 1),
  W_p *= 1.2 (capped at 40), W_v *= 1.4 (capped at 1), W_q fixed; stage s
  is s such raises, and from stage 14 on every weight sits at its cap, so
  the preset has 15 stages (0..14). (Their 300k-step run only reaches stage
  2.) Action scale: l2f's baseline 0.334 is *its* hover command on its
  [-1, 1] scale (action linear in rotor rpm, thrust quadratic in rpm, hover
  at 66.7% of the maximum rpm); snnlab's action is linear in the motor
  command with a quadratic thrust curve too, so the baseline maps to this
  env's hover command ``a_hover`` (0.46 at hover_throttle 0.73), not to the
  number 0.334. Differences kept on purpose: l2f evaluates the cost on the
  state *before* the step and pays its termination penalty (0) on the
  terminal step; here every preset uses the post-step state and the formula
  on the terminal step too.

Curriculum: ``curriculum_stage`` (int attribute), ``set_curriculum_stage(s)``,
``CURRICULUM_STAGES[preset]`` stages (snnlab_v0 1, paper 6, l2f 15); the
stage changes reward weights only, never physics, and survives resets.
``curriculum_steps_per_stage`` is accepted and stored (never used by the
env): the RLlib callback in :mod:`snnlab.rl.curriculum` reads it from
``env_config`` (default ``CURRICULUM_STEPS_PER_STAGE[preset]``).
"""

from __future__ import annotations

import math
from typing import Callable

import gymnasium as gym
import numpy as np
from gymnasium import spaces

ENV_ID = "snnlab/QuadrotorHover-v0"
#: the env's version in the BC dataset's cache key (bump when dynamics or observations change)
ENV_VERSION = "QuadrotorHover-v0"
#: actions per step: one command per motor, in [-1, 1]
N_ACTIONS = 4
MAX_EPISODE_STEPS = 500
BASE_OBS_DIM = 18
REWARD_PRESETS = ("snnlab_v0", "paper", "l2f")
DEFAULT_REWARD = "snnlab_v0"
CURRICULUM_STAGES = {"snnlab_v0": 1, "paper": 6, "l2f": 15}
# Env steps per curriculum stage used by snnlab.rl.curriculum unless env_config has
# curriculum_steps_per_stage. l2f: its curriculum.h (every 100k steps). paper: snnlab's
# choice (the paper gives no cadence): 100k, so the end weights hold from 500k env steps on,
# before k=2 reached return 100 in the paper (~630k steps).
CURRICULUM_STEPS_PER_STAGE = {"snnlab_v0": 0, "paper": 100_000, "l2f": 100_000}

PAPER_START = {"C_s": 1.0, "C_p": 1.0, "C_v": 0.01, "C_q": 0.25, "C_a": 0.14}
PAPER_END = {"C_s": 1.0, "C_p": 3.5, "C_v": 0.10, "C_q": 0.25, "C_a": 0.50}
L2F_START = {"constant": 2.0, "scale": 0.5, "W_p": 5.0, "W_q": 5.0, "W_v": 0.01, "W_a": 0.01}
# (weight, factor per stage, cap), from learning-to-fly src/steps/curriculum.h
L2F_GROWTH = (("W_a", 1.4, 1.0), ("W_p", 1.2, 40.0), ("W_v", 1.4, 1.0))


def check_preset(name: str) -> str:
    if name not in REWARD_PRESETS:
        raise ValueError(f"unknown reward preset {name!r}; allowed: {', '.join(REWARD_PRESETS)}")
    return name


def check_stage(preset: str, stage) -> int:
    n = CURRICULUM_STAGES[preset]
    s = int(stage)
    if s != stage or not 0 <= s < n:
        raise ValueError(f"curriculum stage {stage!r} out of range for reward {preset!r}: 0..{n - 1}")
    return s


def reward_weights(preset: str, stage: int = 0, v0: dict | None = None) -> dict[str, float]:
    """The weights of ``preset`` at curriculum ``stage`` (``v0``: snnlab_v0's kwargs)."""
    stage = check_stage(check_preset(preset), stage)
    if preset == "snnlab_v0":
        return dict(v0 or {})
    if preset == "paper":
        f = stage / (CURRICULUM_STAGES["paper"] - 1)
        return {k: PAPER_START[k] + (PAPER_END[k] - PAPER_START[k]) * f for k in PAPER_START}
    w = dict(L2F_START)
    for _ in range(stage):  # the repeated multiply of curriculum.h
        for key, factor, cap in L2F_GROWTH:
            w[key] = min(w[key] * factor, cap)
    return w


def compute_reward(preset: str, W: dict, a_hover: float, p2, v2, w2, trace, r22, da2,
                   sqrt: Callable = math.sqrt):
    """The reward from squared norms (``da2 = |a - a_hover|^2``), ``tr R`` and ``R_zz``.

    Plain arithmetic, so the same code serves floats (``sqrt=math.sqrt``) and
    ``[N]`` arrays (``sqrt=np.sqrt``); see the module docstring for the formulas.
    """
    if preset == "snnlab_v0":
        return (W["alive_bonus"] - W["w_pos"] * sqrt(p2) - W["w_vel"] * sqrt(v2)
                - W["w_att"] * (1.0 - r22) - W["w_rate"] * sqrt(w2) - W["w_act"] * da2 / 4.0)
    if preset == "paper":
        qw = 0.5 * sqrt(abs(1.0 + trace))
        return (W["C_s"] - W["C_p"] * p2 - W["C_v"] * v2 - W["C_q"] * (2.0 * (1.0 - qw))
                - W["C_a"] * da2)
    return W["constant"] - W["scale"] * (W["W_p"] * p2 + W["W_q"] * ((3.0 - trace) / 4.0)
                                         + W["W_v"] * v2 + W["W_a"] * da2)


def _rodrigues(axis_angle: np.ndarray) -> np.ndarray:
    theta = math.sqrt(float(axis_angle @ axis_angle))
    if theta < 1e-12:
        return np.eye(3)
    kx, ky, kz = axis_angle / theta
    K = np.array([[0.0, -kz, ky], [kz, 0.0, -kx], [-ky, kx, 0.0]])
    return np.eye(3) + math.sin(theta) * K + (1.0 - math.cos(theta)) * (K @ K)


def euler_to_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch),
                              math.sin(pitch), math.cos(yaw), math.sin(yaw))
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])


def draw_initial_state(rng: np.random.Generator, init: tuple, hover_throttle: float,
                       options: dict | None = None):
    """(p, v, w, R, motor) of a reset: uniform draws from ``rng`` for what ``options`` leaves out.

    Draw order (what seeding reproduces): position, velocity, angular velocity, roll/pitch/yaw.
    """
    options = options or {}
    p0, att0, v0, w0 = init
    p = tuple(float(x) for x in options.get("position", rng.uniform(-p0, p0, 3)))
    v = tuple(float(x) for x in options.get("velocity", rng.uniform(-v0, v0, 3)))
    w = tuple(float(x) for x in options.get("angular_velocity", rng.uniform(-w0, w0, 3)))
    if "rotation" in options:
        R = np.asarray(options["rotation"], dtype=np.float64).reshape(3, 3)
    else:
        R = euler_to_matrix(*rng.uniform(-att0, att0, 3))
    return p, v, w, R, float(options.get("motors", hover_throttle))


class QuadrotorHover(gym.Env):
    """Crazyflie 2.1 hovering at the origin (PAPER.md, "The paper's task").

    ``reward`` picks the preset (``snnlab_v0`` default, ``paper``, ``l2f``);
    ``action_history`` appends the last N actions to the observation;
    ``obs_noise`` adds Gaussian noise to the returned base observation;
    ``curriculum_stage`` is the initial stage. See the module docstring.
    ``reset(options=...)`` may fix ``position``, ``velocity``,
    ``angular_velocity``, ``rotation`` (3x3) and ``motors`` (all four).
    """

    metadata = {"render_modes": [], "render_fps": 100}

    def __init__(
        self,
        mass: float = 0.028,
        arm: float = 0.028,
        inertia: tuple[float, float, float] = (9.4e-6, 9.6e-6, 1.75e-5),
        hover_throttle: float = 0.73,
        thrust_coeffs: tuple[float, float, float] | None = None,
        yaw_torque_coeff: float = 0.006,
        tau_up: float = 0.07,
        tau_down: float = 0.11,
        dt: float = 0.01,
        gravity: float = 9.81,
        box: float = 0.6,
        max_steps: int = MAX_EPISODE_STEPS,
        init_pos: float = 0.2,
        init_attitude_deg: float = 90.0,
        init_vel: float = 1.0,
        init_rate: float = 1.0,
        alive_bonus: float = 2.0,
        w_pos: float = 1.0,
        w_vel: float = 0.2,
        w_att: float = 0.5,
        w_rate: float = 0.02,
        w_act: float = 0.05,
        reward: str = DEFAULT_REWARD,
        action_history: int = 0,
        obs_noise: float = 0.0,
        curriculum_stage: int = 0,
        curriculum_steps_per_stage: int | None = None,
    ) -> None:
        super().__init__()
        self.reward_preset = check_preset(reward)
        if int(action_history) != action_history or action_history < 0:
            raise ValueError(f"action_history must be an integer >= 0, got {action_history!r}")
        if not obs_noise >= 0:
            raise ValueError(f"obs_noise must be >= 0, got {obs_noise!r}")
        self.action_history, self.obs_noise = int(action_history), float(obs_noise)
        self.curriculum_steps_per_stage = curriculum_steps_per_stage  # read by the RLlib callback
        self.mass, self.g, self.dt, self.box, self.max_steps = mass, gravity, dt, box, max_steps
        self.inertia = np.asarray(inertia, dtype=np.float64)
        self.inv_inertia = 1.0 / self.inertia
        self.hover_throttle = hover_throttle
        if thrust_coeffs is None:  # pure quadratic through the hover point
            thrust_coeffs = (mass * gravity / (4.0 * hover_throttle ** 2), 0.0, 0.0)
        self.t2, self.t1, self.t0 = (float(c) for c in thrust_coeffs)
        self.alpha_up = 1.0 - math.exp(-dt / tau_up)
        self.alpha_down = 1.0 - math.exp(-dt / tau_down)
        # motors M1..M4: front-right, back-right, back-left, front-left; diagonal pairs spin alike
        pos = np.array([[arm, -arm], [-arm, -arm], [-arm, arm], [arm, arm]])
        spin = np.array([-1.0, 1.0, -1.0, 1.0])
        self.torque_map = np.stack([pos[:, 1], -pos[:, 0], spin * yaw_torque_coeff])  # [3, 4]
        self._torque_rows = self.torque_map.tolist()
        self._I = tuple(float(i) for i in inertia)
        self.init = (init_pos, math.radians(init_attitude_deg), init_vel, init_rate)
        self.weights = (alive_bonus, w_pos, w_vel, w_att, w_rate, w_act)
        self._v0_weights = dict(zip(("alive_bonus", "w_pos", "w_vel", "w_att", "w_rate", "w_act"),
                                    self.weights))
        self.a_hover = 2.0 * hover_throttle - 1.0
        self.set_curriculum_stage(curriculum_stage)
        self.obs_dim = BASE_OBS_DIM + 4 * self.action_history
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(self.obs_dim,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(N_ACTIONS,), dtype=np.float32)

    # --- curriculum ----------------------------------------------------------------
    @property
    def num_curriculum_stages(self) -> int:
        return CURRICULUM_STAGES[self.reward_preset]

    def set_curriculum_stage(self, stage: int) -> None:
        """Switch the reward weights to ``stage`` (0 .. num_curriculum_stages - 1); physics unchanged."""
        self.curriculum_stage = check_stage(self.reward_preset, stage)
        self.reward_w = reward_weights(self.reward_preset, self.curriculum_stage, self._v0_weights)

    # --- gymnasium API -----------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        p, v, w, R, motor = draw_initial_state(self.np_random, self.init, self.hover_throttle, options)
        self.p, self.v, self.w, self.R = p, v, w, R
        self.motors = [motor] * 4
        self.steps = 0
        if self.action_history:
            self._hist = np.zeros((self.action_history, 4), dtype=np.float32)
        return self._obs(), {}

    def step(self, action):
        a = [min(max(float(x), -1.0), 1.0) for x in action]
        self._integrate([0.5 * (x + 1.0) for x in a])
        self.steps += 1
        if self.action_history:
            self._hist[:-1] = self._hist[1:]
            self._hist[-1] = a
        (px, py, pz), (vx, vy, vz), (wx, wy, wz) = self.p, self.v, self.w
        h = self.a_hover
        R = self.R
        reward = compute_reward(
            self.reward_preset, self.reward_w, h, px * px + py * py + pz * pz,
            vx * vx + vy * vy + vz * vz, wx * wx + wy * wy + wz * wz,
            float(R[0, 0] + R[1, 1] + R[2, 2]), float(R[2, 2]),
            sum((x - h) * (x - h) for x in a))
        b = self.box
        terminated = not (-b <= px <= b and -b <= py <= b and -b <= pz <= b)
        truncated = self.steps >= self.max_steps
        return self._obs(), float(reward), terminated, truncated, {}

    # --- physics -------------------------------------------------------------------
    def thrusts(self, motors: np.ndarray) -> np.ndarray:
        return (self.t2 * motors + self.t1) * motors + self.t0

    def _integrate(self, u: list[float]) -> None:
        """One step of the dynamics in scalar Python (numpy's per-call cost dominates at 3x3)."""
        t2, t1, t0, up, down = self.t2, self.t1, self.t0, self.alpha_up, self.alpha_down
        m = self.motors
        f = [0.0] * 4
        for i in range(4):
            mi = m[i]
            mi += (u[i] - mi) * (up if u[i] > mi else down)
            m[i] = mi
            f[i] = (t2 * mi + t1) * mi + t0
        tm = self._torque_rows
        tx = tm[0][0] * f[0] + tm[0][1] * f[1] + tm[0][2] * f[2] + tm[0][3] * f[3]
        ty = tm[1][0] * f[0] + tm[1][1] * f[1] + tm[1][2] * f[2] + tm[1][3] * f[3]
        tz = tm[2][0] * f[0] + tm[2][1] * f[1] + tm[2][2] * f[2] + tm[2][3] * f[3]
        dt = self.dt
        R = self.R
        (r00, r01, r02), (r10, r11, r12), (r20, r21, r22) = R.tolist()
        a = (f[0] + f[1] + f[2] + f[3]) / self.mass
        vx, vy, vz = self.v
        vx += r02 * a * dt
        vy += r12 * a * dt
        vz += (r22 * a - self.g) * dt
        px, py, pz = self.p
        self.v = (vx, vy, vz)
        self.p = (px + vx * dt, py + vy * dt, pz + vz * dt)
        # attitude: explicit midpoint (2nd order) on Euler's equations I w' = tau - w x (I w),
        # then the exact exponential map with the midpoint rate
        wx, wy, wz = self.w
        hx, hy, hz = self._wdot(wx, wy, wz, tx, ty, tz)
        mx, my, mz = wx + 0.5 * dt * hx, wy + 0.5 * dt * hy, wz + 0.5 * dt * hz
        dx, dy, dz = self._wdot(mx, my, mz, tx, ty, tz)
        self.w = (wx + dt * dx, wy + dt * dy, wz + dt * dz)
        self.R = R @ _rodrigues(np.array((mx * dt, my * dt, mz * dt)))

    def _wdot(self, wx, wy, wz, tx, ty, tz):
        ix, iy, iz = self._I
        return ((tx - (wy * iz * wz - wz * iy * wy)) / ix,
                (ty - (wz * ix * wx - wx * iz * wz)) / iy,
                (tz - (wx * iy * wy - wy * ix * wx)) / iz)

    def _obs(self) -> np.ndarray:
        base = (*self.p, *self.R.ravel().tolist(), *self.v, *self.w)
        if self.obs_noise:
            obs = (np.array(base) + self.obs_noise * self.np_random.standard_normal(BASE_OBS_DIM)
                   ).astype(np.float32)
        else:
            obs = np.array(base, dtype=np.float32)
        if self.action_history:
            obs = np.concatenate((obs, self._hist.ravel()))
        return obs


if ENV_ID not in gym.envs.registry:
    gym.register(id=ENV_ID, entry_point="snnlab.quadrotor.env:QuadrotorHover",
                 vector_entry_point="snnlab.quadrotor.vector_env:QuadrotorHoverVector",
                 max_episode_steps=MAX_EPISODE_STEPS)


def make_quadrotor(env_config: dict | None = None):
    """Env creator for RLlib / Tune (``register_env(ENV_ID, make_quadrotor)``).

    A config with ``num_envs`` (what RLlib's env runner adds when
    ``gym_env_vectorize_mode="vector_entry_point"``) gets the batched
    :class:`~snnlab.quadrotor.vector_env.QuadrotorHoverVector` with the spec's
    ``max_episode_steps``; otherwise one ``gym.make(ENV_ID, **env_config)``.
    """
    cfg = dict(env_config or {})
    if "num_envs" in cfg:
        n = int(cfg.pop("num_envs"))
        return gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", **cfg)
    return gym.make(ENV_ID, **cfg)

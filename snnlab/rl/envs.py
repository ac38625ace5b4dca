"""Gymnasium environments: the paper's Crazyflie hover task.

``snnlab/QuadrotorHover-v0`` (registered on import): a Crazyflie 2.1 rigid
body in x-configuration, pure numpy, 100 Hz.

Dynamics (world frame z up; body frame x forward, y left, z up)::

    m_i   += (u_i - m_i) (1 - exp(-dt / tau))       motor lag, tau = 0.07 s rising / 0.11 s falling
    f_i    = t2 m_i^2 + t1 m_i + t0                 quadratic thrust curve per motor [N]
    tau_b  = sum_i r_i x (0, 0, f_i) + s_i c_yaw f_i e_z
    v'     = R e_z sum(f) / mass - g e_z
    w'     = I^-1 (tau_b - w x I w)

integrated semi-implicitly for the translation (velocity first, then
position) and with the explicit midpoint rule for the body rates, the
attitude following the exact exponential map ``R <- R exp(dt [w_mid]x)``,
which keeps R a rotation. Motor command ``u = (a + 1) / 2`` for actions ``a`` in [-1, 1]^4.

Observation (18, float32): position (3), rotation matrix body->world
(9, row-major), linear velocity in the world frame (3), angular velocity in
the body frame (3). Episodes end when the drone leaves the box
``|p_i| <= 0.6`` m (terminated) or after 500 steps (truncated).

Reward per step: ``alive_bonus - w_pos |p| - w_vel |v| - w_att (1 - R_zz)
- w_rate |w| - w_act |a - a_hover|^2 / 4``; all weights are constructor
arguments (and so ``env_config`` keys). The paper does not publish its
weights; the defaults (bonus 2, position 1, velocity 0.2, attitude 0.5, rate
0.02, action 0.05) keep the reward of a drone that stays in the box positive
on average (+0.9 per step for a constant hover command from the random
initial states), so surviving always pays; with bonus 1 and rate 0.05 it was
-0.13 per step and ending the episode early paid more than flying.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
from gymnasium import spaces

ENV_ID = "snnlab/QuadrotorHover-v0"


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


class QuadrotorHover(gym.Env):
    """Crazyflie 2.1 hovering at the origin (PAPER.md, "The paper's task")."""

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
        max_steps: int = 500,
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
    ) -> None:
        super().__init__()
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
        self.a_hover = 2.0 * hover_throttle - 1.0
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(18,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)

    # --- gymnasium API -----------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        rng = self.np_random
        p0, att0, v0, w0 = self.init
        self.p = tuple(float(x) for x in options.get("position", rng.uniform(-p0, p0, 3)))
        self.v = tuple(float(x) for x in options.get("velocity", rng.uniform(-v0, v0, 3)))
        self.w = tuple(float(x) for x in options.get("angular_velocity", rng.uniform(-w0, w0, 3)))
        if "rotation" in options:
            self.R = np.asarray(options["rotation"], dtype=np.float64).reshape(3, 3)
        else:
            self.R = euler_to_matrix(*rng.uniform(-att0, att0, 3))
        self.motors = [float(options.get("motors", self.hover_throttle))] * 4
        self.steps = 0
        return self._obs(), {}

    def step(self, action):
        a = [min(max(float(x), -1.0), 1.0) for x in action]
        self._integrate([0.5 * (x + 1.0) for x in a])
        self.steps += 1
        (px, py, pz), (vx, vy, vz), (wx, wy, wz) = self.p, self.v, self.w
        bonus, w_pos, w_vel, w_att, w_rate, w_act = self.weights
        h = self.a_hover
        da2 = sum((x - h) * (x - h) for x in a)
        reward = (bonus - w_pos * math.sqrt(px * px + py * py + pz * pz)
                  - w_vel * math.sqrt(vx * vx + vy * vy + vz * vz)
                  - w_att * (1.0 - self.R[2, 2])
                  - w_rate * math.sqrt(wx * wx + wy * wy + wz * wz) - w_act * da2 / 4.0)
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
        return np.array((*self.p, *self.R.ravel().tolist(), *self.v, *self.w), dtype=np.float32)


if ENV_ID not in gym.envs.registry:
    gym.register(id=ENV_ID, entry_point="snnlab.rl.envs:QuadrotorHover", max_episode_steps=500)


def make_quadrotor(env_config: dict | None = None) -> gym.Env:
    """Env creator for RLlib / Tune (``register_env(ENV_ID, make_quadrotor)``)."""
    return gym.make(ENV_ID, **dict(env_config or {}))

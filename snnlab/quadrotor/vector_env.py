"""N quadrotors in one numpy step: the batched ``snnlab/QuadrotorHover-v0``.

:class:`QuadrotorHoverVector` is a ``gymnasium.vector.VectorEnv`` and the
spec's ``vector_entry_point``::

    gym.make_vec("snnlab/QuadrotorHover-v0", num_envs=64, vectorization_mode="vector_entry_point")

and, in RLlib, ``config.env_runners(num_envs_per_env_runner=64,
gym_env_vectorize_mode="vector_entry_point")`` (any value of
``gymnasium.VectorizeMode`` is accepted there; ``gym.VectorizeMode.VECTOR_ENTRY_POINT``
is the same thing).

Same physics, reward presets, curriculum, action history and observation
noise as :class:`snnlab.quadrotor.env.QuadrotorHover` (it takes the same kwargs and
builds one to read its constants), with arrays over drones: motors ``[N, 4]``,
``p, v, w [N, 3]``, ``R [N, 3, 3]``. The attitude update is the same exact
exponential map, Rodrigues' formula on the batch::

    phi = dt w_mid,  theta = |phi|
    exp([phi]x) = cos(theta) I + (sin(theta) / theta) [phi]x + 2 (sin(theta/2) / theta)^2 phi phi^T

(``cos theta = 1 - 2 sin^2(theta/2)`` and ``[phi]x^2 = phi phi^T - theta^2 I``),
then ``R <- R exp([phi]x)`` as one batched matmul. A step is a fixed number of
numpy operations over the ``[N, ...]`` arrays; only resets and observation
noise loop over drones (each drone draws from its own generator).

Seeding and episodes follow ``SyncVectorEnv`` over single envs made with
``gym.make`` (TimeLimit included):

- ``reset(seed=s)`` seeds drone i with ``s + i`` (a list seeds drone i with
  ``seed[i]``; ``None`` keeps each drone's generator, creating unseeded ones
  the first time), so drone i's trajectory is that of the single env reset
  with seed ``s + i``. ``options`` apply to every drone;
  ``options["reset_mask"]`` (bool ``[N]``) resets only those drones.
- Truncation at ``min(max_steps, max_episode_steps)`` steps (``gym.make_vec``
  passes the spec's ``max_episode_steps=500``, which the single env gets as its
  TimeLimit wrapper).
- Autoreset mode NEXT_STEP (``metadata["autoreset_mode"]``, gymnasium's
  default and what RLlib's SingleAgentEnvRunner handles): the step after a
  drone's episode ended resets that drone instead of stepping it - its action is
  ignored, the observation is the reset one, reward 0, terminated and
  truncated False.

Observations are float32 ``[N, 18 + 4 * action_history]``, rewards float64
``[N]``, terminations / truncations bool ``[N]``, infos ``{}``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from .env import (
    BASE_OBS_DIM,
    QuadrotorHover,
    compute_reward,
    draw_initial_state,
    euler_to_matrix,
    reward_weights,
)


class QuadrotorHoverVector(VectorEnv):
    """``num_envs`` Crazyflie drones stepped together; kwargs as :class:`QuadrotorHover`."""

    metadata = {"render_modes": [], "render_fps": 100, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = None, **kwargs: Any) -> None:
        if int(num_envs) != num_envs or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        self.num_envs = n = int(num_envs)
        self.env_kwargs = dict(kwargs)
        proto = QuadrotorHover(**kwargs)  # validates the kwargs, holds every constant
        self.proto = proto
        self.reward_preset = proto.reward_preset
        self.action_history, self.obs_noise = proto.action_history, proto.obs_noise
        self.curriculum_steps_per_stage = proto.curriculum_steps_per_stage
        self.a_hover = proto.a_hover
        self.max_episode_steps = max_episode_steps
        self.step_limit = proto.max_steps if max_episode_steps is None else min(proto.max_steps,
                                                                                max_episode_steps)
        self.single_observation_space = proto.observation_space
        self.single_action_space = proto.action_space
        self.observation_space = batch_space(self.single_observation_space, n)
        self.action_space = batch_space(self.single_action_space, n)
        self.obs_dim = proto.obs_dim
        self.render_mode = None
        self.set_curriculum_stage(proto.curriculum_stage)

        self._torque_map_T = np.ascontiguousarray(proto.torque_map.T)  # [4, 3]
        I = proto.inertia
        self._inv_I = 1.0 / I
        # w x (I w) = ((Iz - Iy) wy wz, (Ix - Iz) wz wx, (Iy - Ix) wx wy); divided by I
        self._gyro = np.array([I[2] - I[1], I[0] - I[2], I[1] - I[0]]) / I
        self._perm1, self._perm2 = np.array([1, 2, 0]), np.array([2, 0, 1])
        # exp([phi]x) flattened row-major = B (phi phi^T) + [cos theta, A phi] @ _lin
        self._outer_i, self._outer_j = np.repeat(np.arange(3), 3), np.tile(np.arange(3), 3)
        lin = np.zeros((4, 9))
        lin[0, [0, 4, 8]] = 1.0
        lin[1, [7, 5]] = 1.0, -1.0  # phi_x: E_21 += A phi_x, E_12 -= A phi_x
        lin[2, [2, 6]] = 1.0, -1.0  # phi_y: E_02, E_20
        lin[3, [3, 1]] = 1.0, -1.0  # phi_z: E_10, E_01
        self._lin = lin
        # state: one [N, 18] float64 array laid out like the base observation
        # (p 0:3, R row-major 3:12, v 12:15, w 15:18), so the observation is one cast
        self.state = np.zeros((n, BASE_OBS_DIM))
        self.state[:, 3:12] = np.eye(3).ravel()
        self.motors = np.full((n, 4), proto.hover_throttle)
        self.steps = np.zeros(n, dtype=np.int64)
        self.hist = np.zeros((n, self.action_history, 4), dtype=np.float32)
        self._obs = np.zeros((n, self.obs_dim), dtype=np.float32)
        self._autoreset = np.zeros(n, dtype=bool)
        self.rngs: list[np.random.Generator | None] = [None] * n
        # reset draws: uniform(low, high) = low + (high - low) * random(), per block of 3
        # (position, velocity, angular velocity, roll/pitch/yaw), as Generator.uniform computes it
        high = np.repeat(np.array([proto.init[0], proto.init[2], proto.init[3], proto.init[1]]), 3)
        self._init_low, self._init_range = -high, high - (-high)

    @property
    def p(self) -> np.ndarray:
        return self.state[:, 0:3]

    @property
    def R(self) -> np.ndarray:
        return self.state[:, 3:12].reshape(-1, 3, 3)

    @property
    def v(self) -> np.ndarray:
        return self.state[:, 12:15]

    @property
    def w(self) -> np.ndarray:
        return self.state[:, 15:18]

    # --- curriculum ----------------------------------------------------------------
    @property
    def num_curriculum_stages(self) -> int:
        return self.proto.num_curriculum_stages

    def set_curriculum_stage(self, stage: int) -> None:
        """Switch every drone's reward weights to ``stage``; physics unchanged."""
        self.proto.set_curriculum_stage(stage)
        self.curriculum_stage = self.proto.curriculum_stage
        self.reward_w = reward_weights(self.reward_preset, self.curriculum_stage,
                                       self.proto._v0_weights)

    # --- gymnasium API -----------------------------------------------------------
    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        n = self.num_envs
        if seed is None:
            seeds: list = [None] * n
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(n)]
        else:
            seeds = list(seed)
            if len(seeds) != n:
                raise ValueError(f"reset(seed=list) needs {n} seeds, got {len(seeds)}")
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if mask is None:
            mask = np.ones(n, dtype=bool)
        else:
            mask = np.asarray(mask)
            if mask.shape != (n,) or mask.dtype != np.bool_ or not mask.any():
                raise ValueError(f"options['reset_mask'] must be a bool array of shape ({n},) "
                                 "with at least one True")
        for i in np.flatnonzero(mask):
            if seeds[i] is not None or self.rngs[i] is None:
                self.rngs[i], _ = seeding.np_random(seeds[i])
        self._reset_drones(np.flatnonzero(mask), options)
        self._autoreset[mask] = False
        return self._obs.copy(), {}

    def step(self, actions):
        n, pr, X = self.num_envs, self.proto, self.state
        dt = pr.dt
        a = np.minimum(np.maximum(np.asarray(actions, dtype=np.float64).reshape(n, 4), -1.0), 1.0)
        # motors and thrust
        m = self.motors
        u = (a + 1.0) * 0.5
        m += (u - m) * np.where(u > m, pr.alpha_up, pr.alpha_down)
        f = (pr.t2 * m + pr.t1) * m + pr.t0
        tau_I = (f @ self._torque_map_T) * self._inv_I  # body torques / I
        # translation: velocity first, then position
        X[:, 12:15] += X[:, 5:12:3] * (np.add.reduce(f, axis=1) * (dt / pr.mass))[:, None]  # R e_z
        X[:, 14] -= pr.g * dt
        X[:, 0:3] += X[:, 12:15] * dt
        # rotation: explicit midpoint on I w' = tau - w x (I w), then R <- R exp(dt [w_mid]x)
        w = X[:, 15:18]
        p1, p2, gyro = self._perm1, self._perm2, self._gyro
        wm = w + (0.5 * dt) * (tau_I - gyro * (w[:, p1] * w[:, p2]))
        w += dt * (tau_I - gyro * (wm[:, p1] * wm[:, p2]))
        phi = wm * dt
        theta = np.sqrt(np.einsum("ij,ij->i", phi, phi))
        safe = np.where(theta > 0.0, theta, 1.0)
        half = np.sin(0.5 * theta) / safe
        Bphi = (2.0 * half * half)[:, None] * phi
        coef = np.empty((n, 4))
        coef[:, 0] = np.cos(theta)
        coef[:, 1:] = (np.sin(theta) / safe)[:, None] * phi
        E = Bphi[:, self._outer_i] * phi[:, self._outer_j] + coef @ self._lin
        X[:, 3:12] = np.matmul(X[:, 3:12].reshape(n, 3, 3), E.reshape(n, 3, 3)).reshape(n, 9)
        self.steps += 1
        if self.action_history:
            self.hist[:, :-1] = self.hist[:, 1:]
            self.hist[:, -1] = a
        # reward, termination, truncation
        sq = np.add.reduceat(X * X, self._norm_starts, axis=1)  # |p|^2, (unused), |v|^2, |w|^2
        da = a - self.a_hover
        rew = compute_reward(self.reward_preset, self.reward_w, self.a_hover, sq[:, 0], sq[:, 2],
                             sq[:, 3], X[:, 3] + X[:, 7] + X[:, 11], X[:, 11],
                             np.einsum("ij,ij->i", da, da), sqrt=np.sqrt)
        term = ~(np.abs(X[:, 0:3]) <= pr.box).all(axis=1)
        trunc = self.steps >= self.step_limit
        # NEXT_STEP autoreset: drones that ended last step reset now instead (their step is discarded)
        done = self._autoreset
        if done.any():
            idx = np.flatnonzero(done)
            self._write_obs(np.flatnonzero(~done))
            self._reset_drones(idx, None)
            rew[idx] = 0.0
            term[idx] = False
            trunc[idx] = False
        else:
            self._write_obs(slice(None))
        self._autoreset = term | trunc
        return self._obs.copy(), rew, term, trunc, {}

    def render(self):
        return None

    # --- helpers -------------------------------------------------------------------
    _norm_starts = np.array([0, 3, 12, 15])

    def _reset_drones(self, idx: np.ndarray, options: dict | None) -> None:
        pr = self.proto
        if options:
            for i in idx:
                p, v, w, R, motor = draw_initial_state(self.rngs[i], pr.init, pr.hover_throttle, options)
                self.state[i] = (*p, *R.ravel().tolist(), *v, *w)
                self.motors[i] = motor
        else:  # draw_initial_state's four uniform(-x, x, 3) draws as one random(12): the same numbers
            lo, rg = self._init_low, self._init_range
            for i in idx:
                x = (lo + rg * self.rngs[i].random(12)).tolist()
                R = euler_to_matrix(*x[9:12])
                self.state[i] = (*x[0:3], *R.ravel().tolist(), *x[3:9])
            self.motors[idx] = pr.hover_throttle
        self.steps[idx] = 0
        if self.action_history:
            self.hist[idx] = 0.0
        self._write_obs(idx)

    def _write_obs(self, idx) -> None:
        """Fill ``self._obs[idx]`` (a slice or index array); with noise, one
        ``standard_normal(18)`` from each written drone's own generator."""
        if self.obs_noise:
            rows = range(self.num_envs) if isinstance(idx, slice) else idx
            if len(rows):
                self._obs[idx, :BASE_OBS_DIM] = self.state[idx] + self.obs_noise * np.stack(
                    [self.rngs[i].standard_normal(BASE_OBS_DIM) for i in rows])
        else:
            self._obs[idx, :BASE_OBS_DIM] = self.state[idx]
        if self.action_history:
            self._obs[idx, BASE_OBS_DIM:] = self.hist[idx].reshape(-1, 4 * self.action_history)

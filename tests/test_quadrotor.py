import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from snnlab.rl.envs import ENV_ID, QuadrotorHover, euler_to_matrix

REST = dict(position=[0, 0, 0], velocity=[0, 0, 0], angular_velocity=[0, 0, 0], rotation=np.eye(3))


def test_passes_gymnasium_env_checker():
    check_env(gym.make(ENV_ID).unwrapped, skip_render_check=True)


def test_spaces_and_registration():
    env = gym.make(ENV_ID)
    assert env.observation_space.shape == (18,) and env.action_space.shape == (4,)
    assert env.spec.max_episode_steps == 500
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)


def test_deterministic_given_seed():
    def rollout(seed):
        env = QuadrotorHover()
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(0)
        out = [obs]
        for _ in range(50):
            obs, r, term, trunc, _ = env.step(rng.uniform(-1, 1, 4))
            out.append(np.append(obs, r))
            if term:
                break
        return out

    a, b, c = rollout(3), rollout(3), rollout(4)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_initial_state_ranges():
    env = QuadrotorHover()
    for seed in range(200):
        obs, _ = env.reset(seed=seed)
        assert np.all(np.abs(obs[:3]) <= 0.2) and np.all(np.abs(obs[12:]) <= 1.0)
        R = obs[3:12].reshape(3, 3).astype(np.float64)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-6)


def test_hover_throttle_keeps_the_drone_still_for_one_second():
    env = QuadrotorHover()
    env.reset(seed=0, options=REST)
    for _ in range(100):
        obs, r, term, trunc, _ = env.step(np.full(4, env.a_hover))
    assert not term
    assert np.linalg.norm(obs[:3]) < 1e-3 and np.linalg.norm(obs[12:15]) < 1e-3
    assert r == pytest.approx(2.0, abs=1e-3)  # alive bonus, no penalties at perfect hover


def test_zero_throttle_falls_with_g():
    env = QuadrotorHover(box=100.0)
    env.reset(seed=0, options={**REST, "motors": 0.0})
    for _ in range(50):
        obs, *_ = env.step(-np.ones(4))
    t = 0.5
    assert obs[2] == pytest.approx(-0.5 * 9.81 * t * t, rel=0.02)
    assert obs[14] == pytest.approx(-9.81 * t, rel=1e-6)
    assert abs(obs[0]) < 1e-9 and abs(obs[1]) < 1e-9


def test_roll_command_rotates_the_right_way():
    """More thrust on the left (+y) motors rolls right: positive roll rate, drift to -y."""
    env = QuadrotorHover()
    env.reset(seed=0, options=REST)
    h = env.a_hover
    left_up = np.array([h - 0.05, h - 0.05, h + 0.05, h + 0.05])  # M3, M4 are on +y
    for _ in range(20):
        obs, *_ = env.step(left_up)
    wx, wy, wz = obs[15:18]
    assert wx > 0.5 and abs(wy) < 1e-6 * abs(wx) + 1e-9
    R = obs[3:12].reshape(3, 3)
    assert R[1, 2] < 0  # body z axis tips toward world -y
    for _ in range(20):
        obs, *_ = env.step(np.full(4, h))
    assert obs[1] < 0 and obs[13] < 0  # position and velocity toward -y


def test_pitch_and_yaw_signs():
    env = QuadrotorHover()
    h = env.a_hover
    env.reset(seed=0, options=REST)
    for _ in range(10):  # more thrust on the back motors (M2, M3) pitches nose down: +wy
        obs, *_ = env.step(np.array([h - 0.05, h + 0.05, h + 0.05, h - 0.05]))
    assert obs[16] > 0
    env.reset(seed=0, options=REST)
    for _ in range(10):  # more on M2, M4 (spin +1) yaws positive
        obs, *_ = env.step(np.array([h - 0.05, h + 0.05, h - 0.05, h + 0.05]))
    assert obs[17] > 0 and abs(obs[15]) < 1e-9 and abs(obs[16]) < 1e-9


def test_torque_free_rotation_conserves_angular_momentum_and_energy():
    env = QuadrotorHover(gravity=0.0, box=100.0, thrust_coeffs=(0.0, 0.0, 0.0))
    w0 = np.array([3.0, -2.0, 5.0])
    env.reset(seed=0, options={**REST, "angular_velocity": w0, "rotation": euler_to_matrix(0.3, -0.2, 1.0)})
    I = env.inertia

    def invariants(obs):
        R, w = obs[3:12].reshape(3, 3).astype(np.float64), obs[15:18].astype(np.float64)
        return R @ (I * w), 0.5 * w @ (I * w)

    L0, E0 = invariants(env._obs())
    for _ in range(100):
        obs, *_ = env.step(-np.ones(4))
    L1, E1 = invariants(obs)
    np.testing.assert_allclose(L1, L0, rtol=0.01, atol=0.01 * np.linalg.norm(L0))
    assert E1 == pytest.approx(E0, rel=0.01)
    np.testing.assert_allclose(obs[:3], 0.0, atol=1e-12)  # no force: no translation


def test_box_termination_and_truncation():
    env = QuadrotorHover()
    env.reset(seed=0, options={**REST, "position": [0.59, 0, 0], "velocity": [2.0, 0, 0]})
    _, _, term, _, _ = env.step(np.full(4, env.a_hover))
    assert term
    env = gym.make(ENV_ID, max_steps=500)
    env.reset(seed=0, options={**REST})
    for i in range(500):
        _, _, term, trunc, _ = env.step(np.full(4, env.unwrapped.a_hover))
        assert not term
    assert trunc


def test_reward_weights_are_parameters():
    env = QuadrotorHover(alive_bonus=2.0, w_pos=10.0)
    env.reset(seed=0, options={**REST, "position": [0.1, 0, 0]})
    _, r, *_ = env.step(np.full(4, env.a_hover))
    assert r == pytest.approx(2.0 - 10.0 * 0.1, abs=1e-3)
    assert math.isfinite(r)


def test_surviving_pays_on_average_from_random_starts():
    """The default weights make staying in the box worth more than leaving it early."""
    env = gym.make(ENV_ID)
    total, steps = 0.0, 0
    for seed in range(30):
        env.reset(seed=seed)
        while True:
            _, r, term, trunc, _ = env.step(np.full(4, env.unwrapped.a_hover))
            total, steps = total + r, steps + 1
            if term or trunc:
                break
    assert total / steps > 0.3

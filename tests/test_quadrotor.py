import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from snnlab.quadrotor.env import ENV_ID, QuadrotorHover, euler_to_matrix

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


# --- reward presets, curriculum, action history, observation noise -------------------------

from snnlab.quadrotor.env import (  # noqa: E402
    CURRICULUM_STAGES,
    CURRICULUM_STEPS_PER_STAGE,
    REWARD_PRESETS,
    _rodrigues,
    reward_weights,
)

# A state where the reward is easy to compute by hand. dt = 1e-9 s makes the post-step state
# equal to it to ~1e-8, so the expected numbers are exact to that tolerance.
P, V, W = [0.1, -0.2, 0.05], [0.3, 0.0, -0.4], [0.3, 0.4, 0.0]  # |p|^2 0.0525, |v|^2 0.25, |w| 0.5
ROT_120_Z = _rodrigues(np.array([0.0, 0.0, 2 * math.pi / 3]))  # q_w = cos(60 deg) = 0.5
DA = np.array([0.1, -0.1, 0.2, 0.0])  # a - a_hover: |.|^2 = 0.06


def _one_step_reward(rotation=ROT_120_Z, stage=0, **kw):
    env = QuadrotorHover(dt=1e-9, curriculum_stage=stage, **kw)
    env.reset(seed=0, options=dict(position=P, velocity=V, angular_velocity=W, rotation=rotation))
    _, r, *_ = env.step(env.a_hover + DA)
    return r


def test_snnlab_v0_is_the_default_and_unchanged():
    # 2 - |p| - 0.2 |v| - 0.5 (1 - R_zz) - 0.02 |w| - 0.05 |da|^2 / 4
    expected = 2 - math.sqrt(0.0525) - 0.2 * 0.5 - 0.0 - 0.02 * 0.5 - 0.05 * 0.06 / 4
    assert _one_step_reward() == pytest.approx(expected, abs=1e-6)
    assert _one_step_reward(reward="snnlab_v0") == _one_step_reward()
    assert QuadrotorHover().reward_preset == "snnlab_v0"
    assert CURRICULUM_STAGES["snnlab_v0"] == 1


@pytest.mark.parametrize("stage,expected", [
    (0, 1 - 1.0 * 0.0525 - 0.01 * 0.25 - 0.25 * 1.0 - 0.14 * 0.06),  # 0.6866
    (2, 1 - 2.0 * 0.0525 - 0.046 * 0.25 - 0.25 * 1.0 - 0.284 * 0.06),  # C = start + (end-start) 2/5
    (5, 1 - 3.5 * 0.0525 - 0.10 * 0.25 - 0.25 * 1.0 - 0.50 * 0.06),  # 0.51125
])
def test_paper_reward_by_hand(stage, expected):
    # |q - q_des|^2 = 2 (1 - q_w) = 2 (1 - 0.5) = 1 for 120 degrees about z
    assert _one_step_reward(reward="paper", stage=stage) == pytest.approx(expected, abs=1e-6)


def test_paper_attitude_term_is_sign_invariant_and_uses_the_quaternion():
    level = _one_step_reward(reward="paper", rotation=np.eye(3))
    # 240 degrees about z is -120 degrees: q_w = -0.5 -> hemisphere w >= 0 -> penalty 1 as for 120
    assert _one_step_reward(reward="paper", rotation=_rodrigues(np.array([0, 0, 4 * math.pi / 3]))) \
        == pytest.approx(level - 0.25 * 1.0, abs=1e-6)
    # 90 degrees about (1,1,1)/sqrt3: q_w = cos(45 deg), penalty 2 (1 - 0.7071)
    axis = np.ones(3) / math.sqrt(3)
    r = _one_step_reward(reward="paper", rotation=_rodrigues(axis * math.pi / 2))
    assert r == pytest.approx(level - 0.25 * 2 * (1 - math.cos(math.pi / 4)), abs=1e-6)
    # 180 degrees about x: q_w = 0, penalty 2
    r = _one_step_reward(reward="paper", rotation=_rodrigues(np.array([math.pi, 0, 0])))
    assert r == pytest.approx(level - 0.25 * 2.0, abs=1e-6)


@pytest.mark.parametrize("stage,wp,wv_a", [(0, 5.0, 0.01), (1, 6.0, 0.014), (2, 7.2, 0.0196),
                                           (14, 40.0, 1.0)])
def test_l2f_reward_by_hand(stage, wp, wv_a):
    # 2 - 0.5 (W_p |p|^2 + 5 (1 - q_w^2) + W_v |v|^2 + W_a |a - a_hover|^2), q_w = 0.5
    expected = 2 - 0.5 * (wp * 0.0525 + 5 * 0.75 + wv_a * 0.25 + wv_a * 0.06)
    assert _one_step_reward(reward="l2f", stage=stage) == pytest.approx(expected, abs=1e-6)


def test_l2f_action_baseline_is_this_envs_hover_command():
    """l2f's 0.334 is its own hover command; here the baseline is a_hover = 2 * 0.73 - 1."""
    env = QuadrotorHover(reward="l2f", dt=1e-9)
    env.reset(seed=0, options=REST)
    _, r, *_ = env.step(np.full(4, env.a_hover))
    assert env.a_hover == pytest.approx(0.46) and r == pytest.approx(2.0, abs=1e-6)


def test_curriculum_weights_per_stage():
    assert CURRICULUM_STAGES == {"snnlab_v0": 1, "paper": 6, "l2f": 15}
    assert CURRICULUM_STEPS_PER_STAGE["l2f"] == 100_000
    for s in range(6):
        w = reward_weights("paper", s)
        assert w["C_p"] == pytest.approx(1.0 + 2.5 * s / 5) and w["C_v"] == pytest.approx(0.01 + 0.09 * s / 5)
        assert w["C_a"] == pytest.approx(0.14 + 0.36 * s / 5) and w["C_q"] == 0.25 and w["C_s"] == 1.0
    for s in range(15):  # learning-to-fly's curriculum.h: x1.4 (cap 1), x1.2 (cap 40), x1.4 (cap 1)
        w = reward_weights("l2f", s)
        assert w["W_a"] == pytest.approx(min(0.01 * 1.4 ** s, 1.0))
        assert w["W_p"] == pytest.approx(min(5 * 1.2 ** s, 40.0))
        assert w["W_v"] == pytest.approx(min(0.01 * 1.4 ** s, 1.0)) and w["W_q"] == 5.0
    assert reward_weights("l2f", 13)["W_a"] < 1.0 and reward_weights("l2f", 14)["W_a"] == 1.0


def test_set_curriculum_stage_changes_reward_not_physics_and_survives_reset():
    def run(stage_after_reset):
        env = QuadrotorHover(reward="paper")
        env.reset(seed=1)
        env.set_curriculum_stage(stage_after_reset)
        assert env.curriculum_stage == stage_after_reset
        out = [env.step(np.full(4, 0.5)) for _ in range(20)]
        return np.array([o[0] for o in out]), np.array([o[1] for o in out])

    (o0, r0), (o5, r5) = run(0), run(5)
    np.testing.assert_array_equal(o0, o5)
    assert np.all(r5 < r0)
    env = QuadrotorHover(reward="paper", curriculum_stage=3)
    env.reset(seed=0)
    assert env.curriculum_stage == 3 and env.num_curriculum_stages == 6
    for bad in (6, -1, 2.5):
        with pytest.raises(ValueError, match="out of range"):
            env.set_curriculum_stage(bad)
    with pytest.raises(ValueError, match="out of range"):
        QuadrotorHover().set_curriculum_stage(1)


def test_bad_reward_preset_raises_one_line_listing_the_names():
    with pytest.raises(ValueError) as e:
        QuadrotorHover(reward="pepper")
    msg = str(e.value)
    assert "\n" not in msg and "'pepper'" in msg
    assert all(name in msg for name in REWARD_PRESETS)
    with pytest.raises(ValueError, match="allowed: snnlab_v0, paper, l2f"):
        gym.make(ENV_ID, reward="nope")


def test_action_history_shifts_oldest_first_and_resets_to_zero():
    env = QuadrotorHover(action_history=3)
    plain = QuadrotorHover()
    assert env.observation_space.shape == (18 + 12,)
    obs, _ = env.reset(seed=4)
    ref, _ = plain.reset(seed=4)
    np.testing.assert_array_equal(obs[:18], ref)
    np.testing.assert_array_equal(obs[18:], 0.0)
    acts = [np.array([0.1, 0.2, 0.3, 0.4]) * k for k in range(1, 6)]
    acts[4] = np.array([1.5, -2.0, 0.5, 0.0])  # recorded clipped
    for k, a in enumerate(acts):
        obs, *_ = env.step(a)
        ref, *_ = plain.step(a)
        np.testing.assert_array_equal(obs[:18], ref)  # the first 18 values stay the base observation
        hist = obs[18:].reshape(3, 4)
        expected = [np.zeros(4)] * 3 + [np.clip(x, -1, 1) for x in acts[:k + 1]]
        np.testing.assert_allclose(hist, np.array(expected[-3:]), rtol=1e-6)  # oldest first
    np.testing.assert_allclose(obs[-4:], [1.0, -1.0, 0.5, 0.0])
    obs, _ = env.reset()
    np.testing.assert_array_equal(obs[18:], 0.0)
    check_env(QuadrotorHover(action_history=2, obs_noise=0.01, reward="paper"), skip_render_check=True)


def test_observation_noise_std_seeding_and_no_effect_on_state():
    noisy, clean = QuadrotorHover(obs_noise=0.1, action_history=2), QuadrotorHover(action_history=2)
    diffs = []
    for seed in range(3):
        o1, _ = noisy.reset(seed=seed)
        o2, _ = clean.reset(seed=seed)  # state draws come before the noise draw: same state
        diffs.append(o1 - o2)
        for _ in range(300):
            a = np.full(4, clean.a_hover)
            (o1, r1, t1, *_), (o2, r2, t2, *_) = noisy.step(a), clean.step(a)
            assert r1 == r2 and t1 == t2  # noise never reaches the state or the reward
            diffs.append(o1 - o2)
    d = np.array(diffs)
    np.testing.assert_array_equal(d[:, 18:], 0.0)  # the action history is not noised
    assert d[:, :18].std() == pytest.approx(0.1, rel=0.03) and abs(d[:, :18].mean()) < 0.005
    a, _ = QuadrotorHover(obs_noise=0.1).reset(seed=7)
    b, _ = QuadrotorHover(obs_noise=0.1).reset(seed=7)
    c, _ = QuadrotorHover(obs_noise=0.1).reset(seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_env_config_keys_for_the_curriculum_are_accepted():
    env = gym.make(ENV_ID, reward="paper", curriculum_steps_per_stage=1234, action_history=32)
    assert env.unwrapped.curriculum_steps_per_stage == 1234
    assert env.observation_space.shape == (18 + 128,)


def test_fly_scores_an_expert_and_a_falling_drone():
    from snnlab.quadrotor.expert import HoverExpert
    from snnlab.quadrotor.fly import fly
    from snnlab.quadrotor.vector_env import QuadrotorHoverVector

    expert = HoverExpert(QuadrotorHoverVector(num_envs=1))
    good = fly(expert, episodes=20, seed=0)
    assert good.full_fraction >= 0.9 and good.length_mean > 450
    off = fly(lambda obs: -np.ones((len(obs), 4), np.float32), episodes=20, seed=0)  # motors off
    assert off.full_fraction == 0.0 and off.length_mean < 100 and off.return_mean < good.return_mean
    again = fly(expert, episodes=20, seed=0)
    assert again == good  # same seed, same initial states, same flights


def test_torch_policy_flies_a_module_without_autograd_and_keeps_its_mode():
    import torch

    from snnlab.quadrotor.fly import fly, torch_policy

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(18, 4), torch.nn.Tanh()).train()
    seen = []
    policy = torch_policy(net, on_forward=lambda: seen.append(torch.is_grad_enabled()))
    actions = policy(np.zeros((3, 18), np.float32))
    assert actions.shape == (3, 4) and actions.dtype == np.float32 and net.training
    stats = fly(policy, episodes=4, seed=0)
    assert stats.episodes == 4 and stats.length_mean >= 1 and len(seen) > 1

"""The classical hover expert: success rate from the default initial states, batching, action range."""

import gymnasium as gym
import numpy as np
import pytest

from snnlab.quadrotor.env import ENV_ID, QuadrotorHover
from snnlab.quadrotor.expert import ExpertGains, HoverExpert


def rollouts(n, seed=0, steps=500, **env_kw):
    """n episodes on the batched env (drone i = the single env reset with seed + i):
    (survived all steps [n], returns [n], every action taken [steps, n, 4], observations [steps, n, d])."""
    env = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", **env_kw)
    expert = HoverExpert(env.unwrapped)
    obs, _ = env.reset(seed=seed)
    alive, ret = np.ones(n, dtype=bool), np.zeros(n)
    acts, seen = [], []
    for _ in range(steps):
        a = expert(obs)
        acts.append(a)
        seen.append(obs)
        obs, r, term, trunc, _ = env.step(a)
        ret += np.where(alive, r, 0.0)
        alive &= ~term
    assert trunc[alive].all()  # the survivors were truncated at the last step
    return alive, ret, np.stack(acts), np.stack(seen)


@pytest.fixture(scope="module")
def hundred():
    return rollouts(100)


def test_flies_95_percent_of_the_default_initial_states(hundred):
    alive, ret, _, _ = hundred
    assert alive.mean() >= 0.95, f"success {alive.mean():.2f}"
    assert ret[alive].mean() > 850  # snnlab_v0: 2 per step at best, ~0.9 for a constant hover command


def test_actions_are_in_range_and_batched_equals_per_row(hundred):
    _, _, acts, seen = hundred
    assert acts.dtype == np.float32 and acts.shape == (500, 100, 4)
    assert np.all(np.abs(acts) <= 1.0) and np.isfinite(acts).all()
    assert (np.abs(acts) == 1.0).any()  # saturates during recoveries
    expert = HoverExpert(QuadrotorHover())
    rows = seen[::25].reshape(-1, 18)  # 2,000 visited states
    batched = expert(rows)
    one_by_one = np.stack([expert(r) for r in rows])
    np.testing.assert_allclose(batched, one_by_one, rtol=0, atol=1e-6)
    # any leading shape, and extra observation columns (action history) ignored
    np.testing.assert_allclose(expert(rows.reshape(20, 100, 18)).reshape(-1, 4), batched, rtol=0, atol=1e-6)
    padded = np.concatenate([rows, np.ones((len(rows), 8), np.float32)], axis=1)
    np.testing.assert_allclose(expert(padded), batched, rtol=0, atol=1e-6)


def test_matches_a_single_env_episode(hundred):
    """The batched rollout is the single env's episode: the expert works on gym.make too."""
    _, _, acts, _ = hundred
    env = gym.make(ENV_ID)
    expert = HoverExpert(env)
    obs, _ = env.reset(seed=7)
    for t in range(50):
        a = expert(obs)
        assert a.shape == (4,)
        np.testing.assert_allclose(a, acts[t, 7], atol=1e-4)
        obs, *_ = env.step(a)


def test_hovers_at_the_origin_and_reads_no_hidden_state():
    env = QuadrotorHover()
    expert = HoverExpert(env)
    obs, _ = env.reset(seed=0, options=dict(position=(0, 0, 0), velocity=(0, 0, 0),
                                            angular_velocity=(0, 0, 0), rotation=np.eye(3)))
    a = expert(obs)
    np.testing.assert_allclose(a, env.a_hover, atol=1e-6)  # the hover command
    env.motors = [0.1, 0.9, 0.3, 0.5]  # hidden state changes nothing
    np.testing.assert_array_equal(expert(env._obs()), a)
    # from a 0.3 m offset it returns and settles
    obs, _ = env.reset(seed=0, options=dict(position=(0.3, -0.3, 0.3), velocity=(0, 0, 0),
                                            angular_velocity=(0, 0, 0), rotation=np.eye(3)))
    for _ in range(300):
        obs, r, term, trunc, _ = env.step(expert(obs))
        assert not term
    assert np.abs(obs[:3]).max() < 0.05 and np.abs(obs[12:]).max() < 0.05


def test_params_dict_and_custom_gains():
    env = QuadrotorHover(mass=0.03, hover_throttle=0.7)
    params = dict(mass=env.mass, g=env.g, inertia=env.inertia, t2=env.t2, t1=env.t1, t0=env.t0,
                  torque_map=env.torque_map)
    obs = np.random.default_rng(0).normal(size=(16, 18)).astype(np.float32)
    np.testing.assert_array_equal(HoverExpert(params)(obs), HoverExpert(env)(obs))
    soft = HoverExpert(env, ExpertGains(kp_xy=1.0))
    assert not np.array_equal(soft(obs), HoverExpert(env)(obs))

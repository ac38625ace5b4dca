"""The batched quadrotor (QuadrotorHoverVector) against single envs, and the RLlib curriculum."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import batch_space

from snnlab.quadrotor.env import ENV_ID, QuadrotorHover
from snnlab.quadrotor.vector_env import QuadrotorHoverVector

VARIANTS = [
    {},
    {"reward": "paper", "curriculum_stage": 2},
    {"reward": "l2f", "curriculum_stage": 7},
    {"reward": "paper", "action_history": 32, "obs_noise": 0.02},
    {"reward": "l2f", "action_history": 3, "obs_noise": 0.05, "max_steps": 120,
     "init_attitude_deg": 5.0, "init_vel": 0.1, "init_rate": 0.1},
]


def batched(n, **kw):
    return gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", **kw)


def synced(n, **kw):
    return gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="sync", **kw)


def run_both(n, steps, kw, actions="random", seed=11):
    """Step the batched env and gymnasium's SyncVectorEnv over single envs in lockstep."""
    a_env, b_env = batched(n, **kw), synced(n, **kw)
    oa, _ = a_env.reset(seed=seed)
    ob, _ = b_env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    h = a_env.unwrapped.a_hover
    out = [(oa, ob, None, None)]
    for _ in range(steps):
        if actions == "random":
            act = rng.uniform(-1.2, 1.2, (n, 4)).astype(np.float32)  # some outside the box: clipped
        else:  # near hover: long episodes, so truncation happens
            act = (h + rng.normal(0, 0.01, (n, 4))).astype(np.float32)
        out.append((a_env.step(act), b_env.step(act)))
    return a_env, out


@pytest.mark.parametrize("kw", VARIANTS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
def test_every_drone_matches_the_single_env(kw):
    n = 6
    env, out = run_both(n, 700, kw)
    assert isinstance(env.unwrapped, QuadrotorHoverVector)
    terms = truncs = resets = 0
    for a, b in out[1:]:
        np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-5)  # float32 observations
        np.testing.assert_allclose(a[1], b[1], rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(a[2], b[2])
        np.testing.assert_array_equal(a[3], b[3])
        terms, truncs = terms + a[2].sum(), truncs + a[3].sum()
    for (prev_a, _), (a, _) in zip(out[1:], out[2:]):  # the step after an ending is the reset step
        ended = prev_a[2] | prev_a[3]
        resets += ended.sum()
        assert np.all(a[1][ended] == 0) and not a[2][ended].any() and not a[3][ended].any()
    assert terms > 20 and resets > 20  # random actions crash drones: many autoresets happen
    if "max_steps" in kw:
        _, out = run_both(n, 300, kw, actions="hover")
        truncs = sum(a[3].sum() for a, b in out[1:])
        assert truncs > 0
        for a, b in out[1:]:
            np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(a[3], b[3])


def test_truncation_at_the_spec_limit_and_max_steps():
    for kw, limit in (({"box": 1e4}, 500), ({"box": 1e4, "max_steps": 1000}, 500),
                      ({"box": 1e4, "max_steps": 150}, 150)):
        env, out = run_both(3, 1010, kw, actions="hover", seed=0)
        ends = [t for t, (a, b) in enumerate(out[1:], start=1) if a[3].any()]
        assert ends == list(range(limit, 1011, limit + 1))  # every drone, then one reset step
        assert all(a[3].all() for t, (a, b) in enumerate(out[1:], start=1) if t in ends)
        for a, b in out[1:]:
            np.testing.assert_array_equal(a[3], b[3])
            assert not a[2].any()
    assert batched(2).unwrapped.step_limit == 500


def test_seeding_matches_single_envs_seeded_s_plus_i():
    env = batched(4, reward="paper", obs_noise=0.1, action_history=2)
    obs, _ = env.reset(seed=100)
    singles = [QuadrotorHover(reward="paper", obs_noise=0.1, action_history=2) for _ in range(4)]
    for i, s in enumerate(singles):
        o, _ = s.reset(seed=100 + i)
        np.testing.assert_array_equal(obs[i], o)
    obs, _ = env.reset(seed=[5, 9, 5, 1])
    for i, seed in enumerate([5, 9, 5, 1]):
        np.testing.assert_array_equal(obs[i], singles[0].reset(seed=seed)[0])
    # seed=None continues each drone's generator, like a single env reset without a seed
    obs, _ = env.reset()
    for i, seed in enumerate([5, 9, 5, 1]):
        singles[i].reset(seed=seed)
        np.testing.assert_array_equal(obs[i], singles[i].reset()[0])
    # reset_mask resets only the chosen drones and keeps the others' observations
    before, _ = env.reset(seed=0)
    after, _ = env.reset(options={"reset_mask": np.array([False, True, False, False])})
    np.testing.assert_array_equal(after[[0, 2, 3]], before[[0, 2, 3]])
    assert not np.array_equal(after[1], before[1])


def test_reset_options_apply_to_every_drone():
    env = batched(3)
    obs, _ = env.reset(seed=0, options={"position": [0.1, 0, 0], "velocity": [0, 0, 0],
                                        "angular_velocity": [0, 0, 0], "rotation": np.eye(3)})
    np.testing.assert_allclose(obs, np.tile(np.r_[0.1, 0, 0, np.eye(3).ravel(), np.zeros(6)], (3, 1)))
    obs, *_ = env.step(np.full((3, 4), env.unwrapped.a_hover))
    assert np.abs(obs[:, 12:]).max() < 1e-6  # hover command from rest holds still


def test_vector_env_api_and_spaces():
    for kw in ({}, {"action_history": 32}):
        env = batched(5, **kw)
        single = gym.make(ENV_ID, **kw)
        u = env.unwrapped
        assert type(u) is QuadrotorHoverVector and u.num_envs == env.num_envs == 5
        assert env.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
        assert env.single_observation_space == single.observation_space
        assert env.single_action_space == single.action_space
        assert env.observation_space == batch_space(single.observation_space, 5)
        assert env.action_space == batch_space(single.action_space, 5)
        obs, info = env.reset(seed=0)
        assert obs.dtype == np.float32 and obs in env.observation_space and info == {}
        for _ in range(60):
            obs, rew, term, trunc, info = env.step(env.action_space.sample())
            assert obs.dtype == np.float32 and obs.shape == (5, single.observation_space.shape[0])
            assert obs in env.observation_space
            assert rew.dtype == np.float64 and rew.shape == (5,)
            assert term.dtype == np.bool_ and trunc.dtype == np.bool_ and info == {}
        env.close()
        assert env.unwrapped.closed
    # the spec's default vectorization is the vector entry point, as gymnasium documents
    assert type(gym.make_vec(ENV_ID, num_envs=2).unwrapped) is QuadrotorHoverVector
    assert type(gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="sync")) is SyncVectorEnv
    with pytest.raises(ValueError, match="allowed: snnlab_v0, paper, l2f"):
        batched(2, reward="bogus")


def test_returned_arrays_are_copies():
    env = batched(2)
    obs, _ = env.reset(seed=0)
    keep = obs.copy()
    first = env.step(np.zeros((2, 4)))
    kept_step = [x.copy() for x in first[:4]]
    obs[:] = 123.0
    env.step(np.zeros((2, 4)))
    assert all(data_equivalence(x, y, exact=True) for x, y in zip(first[:4], kept_step))
    assert data_equivalence(env.reset(seed=0)[0], keep, exact=True)


def test_curriculum_stage_on_every_drone():
    from snnlab.quadrotor.curriculum import get_curriculum_stages, set_curriculum_stage

    a_env, b_env = batched(4, reward="l2f"), synced(4, reward="l2f")
    for env in (a_env, b_env, gym.make(ENV_ID, reward="l2f")):
        assert set_curriculum_stage(env, 9) == getattr(env, "num_envs", 1)
        assert get_curriculum_stages(env) == [9] * getattr(env, "num_envs", 1)
    a_env.reset(seed=3)
    b_env.reset(seed=3)
    act = np.full((4, 4), 0.2)
    ra, rb = a_env.step(act)[1], b_env.step(act)[1]
    np.testing.assert_allclose(ra, rb, rtol=1e-9)
    a_env.unwrapped.set_curriculum_stage(0)
    assert a_env.unwrapped.curriculum_stage == 0
    assert np.all(a_env.step(act)[1] > b_env.step(act)[1])  # stage 9 weighs the costs more
    with pytest.raises(ValueError, match="out of range"):
        a_env.unwrapped.set_curriculum_stage(15)


def test_curriculum_schedule_from_env_config():
    from snnlab.quadrotor.curriculum import curriculum_spec, stage_for_steps

    paper = curriculum_spec({"reward": "paper", "curriculum_steps_per_stage": 200})
    assert paper == {"preset": "paper", "stages": 6, "steps_per_stage": 200, "initial_stage": 0}
    assert [stage_for_steps(s, paper) for s in (0, 199, 200, 999, 1000, 10**9)] == [0, 0, 1, 4, 5, 5]
    l2f = curriculum_spec({"reward": "l2f"})
    assert l2f["steps_per_stage"] == 100_000 and stage_for_steps(250_000, l2f) == 2
    assert stage_for_steps(10**9, l2f) == 14
    assert stage_for_steps(10**9, curriculum_spec({})) == 0
    with pytest.raises(ValueError, match="allowed"):
        curriculum_spec({"reward": "x"})


# --- RLlib --------------------------------------------------------------------------------------

def _ppo_config(**env_config):
    from ray.rllib.algorithms.ppo import PPOConfig

    return (PPOConfig()
            .environment(ENV_ID, env_config=env_config)
            .env_runners(num_env_runners=0, num_envs_per_env_runner=4,
                         gym_env_vectorize_mode="vector_entry_point", rollout_fragment_length=50)
            .training(train_batch_size_per_learner=200, minibatch_size=100, num_epochs=1)
            .rl_module(model_config={"fcnet_hiddens": [16]})
            .debugging(seed=0))


def test_rllib_env_runner_samples_from_the_batched_env():
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    runner = SingleAgentEnvRunner(config=_ppo_config(reward="paper", action_history=2))
    try:
        assert type(runner.env.unwrapped) is QuadrotorHoverVector and runner.num_envs == 4
        episodes = runner.sample(num_timesteps=400, random_actions=False)
        assert sum(len(e) for e in episodes) >= 400
        assert episodes[0].get_observations(0).shape == (26,)
    finally:
        runner.stop()


def test_rllib_registered_creator_gets_the_batched_env():
    """The path snnlab's trainer takes: register_env(ENV_ID, make_quadrotor) + vector_entry_point."""
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
    from ray.tune.registry import register_env

    from snnlab.quadrotor.env import make_quadrotor

    register_env(ENV_ID, make_quadrotor)
    runner = SingleAgentEnvRunner(config=_ppo_config(reward="l2f"))
    try:
        env = runner.env.unwrapped
        assert type(env) is QuadrotorHoverVector and env.step_limit == 500
        assert env.reward_preset == "l2f"
        assert sum(len(e) for e in runner.sample(num_timesteps=200)) >= 200
    finally:
        runner.stop()


@pytest.mark.parametrize("remote", [False, True], ids=["local-batched", "remote-sync"])
def test_curriculum_callback_advances_the_envs_stage(ray_session, remote):
    from ray.rllib.algorithms.ppo import PPO

    from snnlab.rl.curriculum import STATE_KEY, CurriculumCallback, apply_curriculum_stage, collect_curriculum_stages
    from snnlab.rl.sync import SyncedStateMixin

    class CurriculumPPO(SyncedStateMixin, PPO):
        SYNCED_STATES = (CurriculumCallback,)

    config = _ppo_config(reward="paper", curriculum_steps_per_stage=200).callbacks(CurriculumCallback)
    if remote:  # one remote EnvRunner with gymnasium's SyncVectorEnv over 4 single envs
        config = config.env_runners(num_env_runners=1, gym_env_vectorize_mode="sync")
    config.algo_class = CurriculumPPO
    algo = config.build_algo()

    def stages():
        return [s for s in collect_curriculum_stages(algo)["env_runners"] if s is not None]

    try:
        # with a remote runner the local one holds no env (None): the stages are the remote's
        assert collect_curriculum_stages(algo)["env_runners"] == ([None, [0] * 4] if remote else [[0] * 4])
        seen = []
        for _ in range(3):
            r = algo.train()
            seen.append((r["env_runners"]["num_env_steps_sampled_lifetime"],
                         r["curriculum_stage"], r["curriculum_stage_next"]))
        steps = [s for s, *_ in seen]
        assert [nxt for *_, nxt in seen] == [min(s // 200, 5) for s in steps]
        assert [used for _, used, _ in seen] == [0] + [nxt for *_, nxt in seen[:-1]]
        final = seen[-1][2]
        assert final >= 3
        assert stages() == [[final] * 4]
        assert CurriculumCallback().get_state(algo) == {"stage": final}
        assert algo.get_state()[STATE_KEY] == {"stage": final}
        apply_curriculum_stage(algo, 1)
        assert stages() == [[1] * 4]
        algo.set_state({STATE_KEY: {"stage": 2}})  # what a checkpoint restore does
        assert stages() == [[2] * 4]
        assert algo.get_state()[STATE_KEY] == {"stage": 2}
    finally:
        algo.stop()

"""TD3 (snnlab.rl.td3): loss terms against hand-computed numbers, the delayed actor and target
updates, exploration, the flat replay buffer against RLlib's, and the algorithm end to end."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.replay_buffers.episode_replay_buffer import EpisodeReplayBuffer

from snnlab.cli import main
from snnlab.experiment import validate_experiment
from snnlab.rl.replay import FlatEpisodeReplayBuffer
from snnlab.rl.td3 import QF_PREDS, QF_TARGET_NEXT, QF_TWIN_PREDS, TD3TorchRLModule
from snnlab.rl.train import build_algorithm_config, iteration_row

from .helpers import CONFIGS, write_yaml

OBS = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
ACT = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)
TINY_TD3 = {"name": "TD3", "train_batch_size": 32, "learning_starts": 64,
            "env_steps_per_iteration": 64, "replay_capacity": 2000}


def module(actor="mlp", **cfg):
    m = TD3TorchRLModule(observation_space=OBS, action_space=ACT, model_config={
        "actor": actor, "hidden": [8], "critic_hidden": [8], "num_steps": 2, "slope": 5.0, **cfg})
    m.make_target_networks()
    return m


def constant(critic, value):
    """Make a critic output `value` for every input (last layer: zero weights, bias = value)."""
    last = critic.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(value)


def rl_cfg(env="Pendulum-v1", algorithm=None, model=None, **extra):
    data = {"kind": "rl", "env": env, "algorithm": {**TINY_TD3, **(algorithm or {})},
            "model": {"hidden": [16, 16], "num_steps": 2, "critic_hidden": [16], **(model or {})},
            "slope": {"kind": "fixed", "k": 5}, "logging": {"wandb": "off"}, **extra}
    return validate_experiment(data, "test")


# --- the module -------------------------------------------------------------------------------
def test_smoothing_noise_is_clipped_and_actions_stay_in_range():
    m = module(target_noise=10.0, target_noise_clip=0.5)
    obs = torch.randn(4000, 3)
    base = m.target_pi(obs)
    a = m.smoothed_target_actions(obs)
    assert a.abs().max() <= 1.0
    inner = base.abs() < 0.4  # far enough from the bounds that only the noise clip acts
    d = (a - base)[inner]
    assert d.abs().max() <= 0.5 + 1e-6
    assert (d.abs() > 0.499).float().mean() > 0.9  # noise of std 10 almost always hits the clip
    m0 = module(target_noise=0.0)
    assert torch.equal(m0.smoothed_target_actions(obs), m0.target_pi(obs))


def test_target_is_the_min_of_the_twin_target_critics():
    m = module(target_noise=0.0)
    constant(m.target_qf, 3.0)
    constant(m.target_qf_twin, -1.5)
    batch = {Columns.OBS: torch.randn(5, 3), Columns.ACTIONS: torch.rand(5, 2) * 2 - 1,
             Columns.NEXT_OBS: torch.randn(5, 3)}
    out = m.forward_train(batch)
    assert torch.allclose(out[QF_TARGET_NEXT], torch.full((5,), -1.5))
    constant(m.target_qf, -7.0)
    assert torch.allclose(m.forward_train(batch)[QF_TARGET_NEXT], torch.full((5,), -7.0))
    assert QF_PREDS in out and QF_TWIN_PREDS in out


def test_exploration_random_warmup_then_gaussian_noise_inference_deterministic():
    m = module(exploration_noise=0.1, random_steps=100)
    obs = {Columns.OBS: torch.zeros(20000, 3)}
    torch.set_grad_enabled(False)  # as on an EnvRunner
    warm = m.forward_exploration(obs, t=99)[Columns.ACTIONS]
    assert warm.min() >= -1 and warm.max() <= 1 and float(warm.std()) == pytest.approx(1 / math.sqrt(3), rel=0.02)
    det = m.forward_inference(obs)[Columns.ACTIONS]
    noisy = m.forward_exploration(obs, t=100)[Columns.ACTIONS]
    assert torch.equal(det, m.forward_inference(obs)[Columns.ACTIONS])
    inner = det.abs() < 0.6
    assert float((noisy - det)[inner].std()) == pytest.approx(0.1, rel=0.05)
    torch.set_grad_enabled(True)


@pytest.mark.parametrize("actor", ["spiking", "mlp"])
def test_actor_inputs_reads_only_the_first_values(actor):
    m = module(actor, actor_inputs=2)
    obs = torch.randn(6, 3)
    changed = obs.clone()
    changed[:, 2] += 5.0
    assert torch.equal(m.pi(obs), m.pi(changed))
    assert not torch.equal(m.qf(obs, m.pi(obs)), m.qf(changed, m.pi(obs)))
    with pytest.raises(ValueError, match="actor_inputs must be in"):
        module(actor, actor_inputs=4)


# --- the learner --------------------------------------------------------------------------------
def _batch(n=16, seed=0):
    g = np.random.default_rng(seed)
    cols = {Columns.OBS: g.normal(size=(n, 3)).astype(np.float32),
            Columns.ACTIONS: g.uniform(-1, 1, (n, 1)).astype(np.float32),  # Pendulum: 1 action
            Columns.REWARDS: g.normal(size=n).astype(np.float32),
            Columns.NEXT_OBS: g.normal(size=(n, 3)).astype(np.float32),
            Columns.TERMINATEDS: g.random(n) < 0.3,
            "weights": np.ones(n, np.float32), "n_step": np.ones(n, np.int64)}
    return cols


def _snapshot(net):
    return [p.detach().clone() for p in net.parameters()]


def _same(a, net):
    return all(torch.equal(x, p) for x, p in zip(a, net.parameters()))


@pytest.fixture
def learner_algo(ray_session):
    cfg = rl_cfg(algorithm={"policy_delay": 2, "tau": 0.25, "gamma": 0.9},
                 model={"actor": "mlp", "hidden": [8]})
    algo = build_algorithm_config(cfg).build_algo()
    yield algo
    algo.stop()


def test_critic_loss_matches_hand_computed_numbers(learner_algo):
    learner = learner_algo.learner_group._learner
    m = learner.module[DEFAULT_MODULE_ID].unwrapped()
    constant(m.qf, 1.0)
    constant(m.qf_twin, 2.0)
    constant(m.target_qf, 4.0)
    constant(m.target_qf_twin, 3.0)
    cols = _batch(4)
    cols[Columns.REWARDS] = np.array([1.0, 0.0, -1.0, 0.5], np.float32)
    cols[Columns.TERMINATEDS] = np.array([False, True, False, False])
    batch = {k: torch.as_tensor(v) for k, v in cols.items()}
    fwd = m.forward_train(batch)
    learner._updates[DEFAULT_MODULE_ID] = 1  # a critic-only step
    loss = learner.compute_loss_for_module(module_id=DEFAULT_MODULE_ID, config=learner.config,
                                           batch=batch, fwd_out=fwd)
    y = np.array([1 + 0.9 * 3, 0.0, -1 + 0.9 * 3, 0.5 + 0.9 * 3])  # min(4, 3) = 3; done: no bootstrap
    expected = np.mean((1 - y) ** 2) + np.mean((2 - y) ** 2)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_actor_and_targets_move_only_every_policy_delay_updates(learner_algo):
    learner = learner_algo.learner_group._learner
    m = learner.module[DEFAULT_MODULE_ID].unwrapped()
    learner._updates[DEFAULT_MODULE_ID] = 0
    actor_moved, target_moved = [], []
    for step in range(5):
        pi, qf = _snapshot(m.pi), _snapshot(m.qf)
        t_pi, t_qf = _snapshot(m.target_pi), _snapshot(m.target_qf)
        batch = MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch(_batch(seed=step))}, env_steps=16)
        learner.update(batch=batch, timesteps={"num_env_steps_sampled_lifetime": 1000})
        assert not _same(qf, m.qf), "the critic updates at every step"
        actor_moved.append(not _same(pi, m.pi))
        target_moved.append(not _same(t_pi, m.target_pi))
        if target_moved[-1]:  # Polyak: new target = tau * new main + (1 - tau) * old target
            for old, main, new in zip(t_qf, m.qf.parameters(), m.target_qf.parameters()):
                assert torch.allclose(new, 0.25 * main + 0.75 * old, atol=1e-6)
        else:
            assert _same(t_qf, m.target_qf)
    assert actor_moved == [True, False, True, False, True]
    assert target_moved == actor_moved


# --- the replay buffer ------------------------------------------------------------------------
def _episodes(seed=0):
    g = np.random.default_rng(seed)
    eps = []
    for length, terminated in ((5, True), (7, False), (3, True)):
        obs = [g.normal(size=3).astype(np.float32) for _ in range(length + 1)]
        eps.append(SingleAgentEpisode(
            observations=obs, actions=[g.uniform(-1, 1, 2).astype(np.float32) for _ in range(length)],
            rewards=[float(r) for r in g.normal(size=length)], terminated=terminated,
            truncated=not terminated, observation_space=OBS, action_space=ACT, len_lookback_buffer=0))
    return eps


def _key(o, a, r, o2, d):
    return (tuple(np.round(o, 5)), tuple(np.round(a, 5)), round(float(r), 5), tuple(np.round(o2, 5)), bool(d))


def test_flat_buffer_samples_what_rllibs_episode_buffer_samples():
    eps = _episodes()
    ours, theirs = FlatEpisodeReplayBuffer(capacity=100, seed=0), EpisodeReplayBuffer(capacity=100)
    ours.add([e for e in _episodes()])
    theirs.add(eps)
    assert len(ours) == len(theirs) == 15
    b = ours.sample_batch(3000)
    seen_ours = {_key(*row) for row in zip(b[Columns.OBS], b[Columns.ACTIONS], b[Columns.REWARDS],
                                           b[Columns.NEXT_OBS], b[Columns.TERMINATEDS])}
    seen_theirs = set()
    for ep in theirs.sample(num_items=600, n_step=1, gamma=0.99, sample_episodes=True):
        seen_theirs.add(_key(ep.get_observations(0), ep.get_actions(0), ep.get_rewards(0),
                             ep.get_observations(-1), ep.is_terminated))
    assert seen_ours == seen_theirs and len(seen_ours) == 15
    assert b[Columns.TERMINATEDS].mean() == pytest.approx(2 / 15, abs=0.03)  # uniform over the 15
    assert (b["weights"] == 1).all() and (b["n_step"] == 1).all()


def test_flat_buffer_continues_chunks_rings_and_checkpoints():
    g = np.random.default_rng(1)
    obs = [g.normal(size=3).astype(np.float32) for _ in range(9)]
    full = SingleAgentEpisode(observations=obs, actions=[np.full(2, i, np.float32) for i in range(8)],
                              rewards=list(range(8)), observation_space=OBS, action_space=ACT,
                              len_lookback_buffer=0)
    chunk1, chunk2 = full.slice(slice(0, 3)), full.slice(slice(3, 8))
    buf = FlatEpisodeReplayBuffer(capacity=6, seed=0)
    buf.add([chunk1])
    buf.add([chunk2])
    assert len(buf) == 6 and buf.get_added_timesteps() == 8  # the two oldest left the ring
    b = buf.sample_batch(500)
    assert set(b[Columns.REWARDS].astype(int)) == {2, 3, 4, 5, 6, 7}
    for r, o, o2 in zip(b[Columns.REWARDS].astype(int), b[Columns.OBS], b[Columns.NEXT_OBS]):
        assert np.array_equal(o, obs[r]) and np.array_equal(o2, obs[r + 1])  # across the chunk seam
    state = buf.get_state()
    other = FlatEpisodeReplayBuffer(capacity=6)
    other.set_state(state)
    assert all(np.array_equal(x, y) for x, y in zip(other.sample_batch(8).values(), buf.sample_batch(8).values()))
    with pytest.raises(ValueError, match="1-step transitions only"):
        buf.sample(4, n_step=3)


# --- the algorithm ----------------------------------------------------------------------------
@pytest.mark.parametrize("replay_buffer", ["flat", "episode"])
def test_td3_with_spiking_actor_trains_with_either_buffer(ray_session, replay_buffer):
    cfg = rl_cfg(algorithm={"replay_buffer": replay_buffer},
                 evaluation={"interval": 1, "episodes": 1},
                 diagnostics={"every": 3, "k_ref": 100, "probe_batch": 16})
    algo = build_algorithm_config(cfg).build_algo()
    try:
        m = algo.learner_group._learner.module[DEFAULT_MODULE_ID].unwrapped()
        assert type(m.pi.body).__name__ == "SpikingMLP"
        w0 = m.pi.body.linears[0].weight.detach().clone()
        results = [algo.train() for _ in range(3)]
        row = iteration_row(results[-1])
        assert row["env_steps"] >= 192 and not math.isnan(row["eval_return_mean"])
        assert not torch.equal(w0, m.pi.body.linears[0].weight)
        assert all(0 < results[-1][f"spike_rate/layer{i}"] < 1 for i in range(2))
        assert row["slope"] == 5.0
        # gradient diagnostics of the spiking actor (PAPER.md's probe) every 3 iterations
        assert 0 < results[-1]["grad/layer0/cosine"] < 1 and results[-1]["grad/layer0/magnitude"] > 0
        assert "grad/layer0/cosine" not in results[0]
    finally:
        algo.stop()


def test_td3_checkpoint_restores_schedule_and_update_count(ray_session, tmp_path):
    from ray.rllib.algorithms.algorithm import Algorithm

    cfg = rl_cfg(slope={"kind": "interval", "k_start": 1, "k_end": 100, "every": 1, "stages": 3})
    algo = build_algorithm_config(cfg).build_algo()
    try:
        [algo.train() for _ in range(2)]
        updates = dict(algo.learner_group._learner._updates)
        algo.save_to_path(str(tmp_path / "ckpt"))
    finally:
        algo.stop()
    restored = Algorithm.from_checkpoint(str(tmp_path / "ckpt"))
    try:
        assert type(restored).__name__ == "SpikingTD3"
        assert restored.slope_schedule.k == pytest.approx(100)
        assert dict(restored.learner_group._learner._updates) == updates and updates[DEFAULT_MODULE_ID] > 0
        assert restored.train()["slope"] == pytest.approx(100)
    finally:
        restored.stop()


def test_shipped_td3_configs_are_valid():
    from snnlab.experiment import load_experiment

    cfg = load_experiment(CONFIGS / "rl_pendulum_td3.yaml")
    assert cfg.algorithm.name == "TD3" and cfg.model.actor == "mlp"
    drone = load_experiment(CONFIGS / "rl_quadrotor_td3.yaml")
    assert drone.model.actor == "spiking" and drone.model.hidden == [256, 128]
    assert drone.env_config["action_history"] == 32 and drone.runners.vectorize_mode == "vector_entry_point"


def test_td3_sweep_smoke(ray_session, tmp_path, capsys):
    path = write_yaml(tmp_path / "s.yaml", f"""kind: sweep
name: td3
base: {CONFIGS / 'rl_pendulum_td3.yaml'}
set: {{model.actor: spiking, model.hidden: [16], logging.wandb: off}}
settings: [{{kind: fixed, k: 2}}, {{kind: fixed, k: 100}}]
seeds: [0]
""")
    rc = main(["sweep", str(path), "--budget", "smoke", "--storage", str(tmp_path / "runs"),
               "--wandb", "off", "--verbose", "0"])
    assert rc == 0, capsys.readouterr().err[-2000:]
    md = (tmp_path / "runs" / "td3" / "summary.md").read_text()
    assert "fixed-k2" in md and "fixed-k100" in md
    import json

    for trial in (tmp_path / "runs" / "td3").glob("fixed-k*_seed0"):
        last = json.loads((trial / "result.json").read_text().strip().splitlines()[-1])
        assert math.isfinite(last["score"]) and last["slope"] in (2.0, 100.0)


def test_td3_on_the_batched_quadrotor_with_curriculum_and_history(ray_session):
    cfg = rl_cfg("snnlab/QuadrotorHover-v0",
                 algorithm={"rollout_fragment_length": 4, "updates_per_env_step": 0.25},
                 model={"actor_inputs": 18},
                 env_config={"reward": "paper", "action_history": 32, "max_steps": 5,
                             "curriculum_steps_per_stage": 64},
                 runners={"num_envs_per_env_runner": 8, "vectorize_mode": "vector_entry_point"},
                 evaluation={"interval": 1, "episodes": 8})
    algo = build_algorithm_config(cfg).build_algo()
    try:
        assert type(algo.env_runner.env.unwrapped).__name__ == "QuadrotorHoverVector"
        m = algo.learner_group._learner.module[DEFAULT_MODULE_ID].unwrapped()
        assert m.pi.n_in == 18 and m.qf.net[0].in_features == 146 + 4
        results = [algo.train() for _ in range(3)]
        rows = [iteration_row(r) for r in results]
        assert [r["curriculum_stage"] for r in rows] == sorted(r["curriculum_stage"] for r in rows)
        assert rows[-1]["curriculum_stage"] >= 2
        # 5-step episodes from the paper's initial states: every one ends by the time limit
        assert rows[-1]["eval_full_episodes"] == 1.0 and rows[-1]["eval_len_mean"] == 5
    finally:
        algo.stop()


# --- the fast update path against today's (issue #20) ---------------------------------------------
def _learner_of(algo):
    learner = algo.learner_group._learner
    return learner, learner.module[DEFAULT_MODULE_ID].unwrapped()


def _state(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _reference_copy(learner, m):
    """The module copied, with the optimizers today's learner built (torch's default Adam)."""
    import copy

    ref = copy.deepcopy(m)
    cfg = learner.config
    critic = torch.optim.Adam(list(ref.qf.parameters()) + list(ref.qf_twin.parameters()), lr=cfg.critic_lr)
    actor = torch.optim.Adam(list(ref.pi.parameters()), lr=cfg.actor_lr)
    return ref, critic, actor


def _run_reference(learner, ref, critic, actor, batches, start_step, seed):
    from snnlab.rl.td3 import reference_update

    cfg = learner.config
    losses = []
    torch.manual_seed(seed)
    for i, cols in enumerate(batches):
        batch = {k: torch.as_tensor(v) for k, v in cols.items()}
        losses.append(reference_update(
            ref, critic, actor, batch, actor_step=(start_step + i) % cfg.policy_delay == 0,
            gamma=cfg.gamma, tau=cfg.tau, target_noise=cfg.target_noise,
            target_noise_clip=cfg.target_noise_clip))
    return losses


def _learner_updates(algo, batches, seed, in_one_call):
    torch.manual_seed(seed)
    results = []
    kw = {"timesteps": {"num_env_steps_sampled_lifetime": 1000}}
    if in_one_call:
        cols = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
        n = len(cols[Columns.REWARDS])
        results.append(algo.learner_group.update(
            batch=MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch(cols)}, env_steps=n),
            minibatch_size=len(batches[0][Columns.REWARDS]), num_epochs=1,
            shuffle_batch_per_epoch=False, **kw))
    else:
        for b in batches:
            results.append(algo.learner_group.update(
                batch=MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch(b)}, env_steps=len(b[Columns.REWARDS])), **kw))
    return results


def _peek(results, key):
    """A loss the Learner logged in one learner_group.update call (the latest value)."""
    v = results[0][DEFAULT_MODULE_ID][key]
    v = v.peek() if hasattr(v, "peek") else v
    return float(v.detach() if torch.is_tensor(v) else v)


def _pendulum_batches(n, size=32, seed=0):
    out = []
    for i in range(n):
        b = _batch(size, seed=seed + i)
        b[Columns.OBS] = np.random.default_rng(100 + i).normal(size=(size, 3)).astype(np.float32)
        out.append(b)
    return out


ADAM_EXACT = {"loop": True, "foreach": True, "fused": False}


@pytest.mark.parametrize("adam,spike_matmul", [("loop", "dense"), ("foreach", "dense"),
                                               ("fused", "dense"), ("fused", "sparse")])
def test_learner_update_equals_todays_update_on_the_same_batches(ray_session, adam, spike_matmul):
    """Same batches, same noise: the learner (a round's updates in one call, one finiteness check,
    foreach Polyak, metrics once per call) gives today's losses and parameters - bit for bit with
    a non-fused Adam and dense matmuls, to float32 rounding with fused Adam or the sparse kernel."""
    cfg = rl_cfg(algorithm={"policy_delay": 2, "tau": 0.05, "adam": adam},
                 model={"hidden": [24, 16], "num_steps": 3, "spike_matmul": spike_matmul,
                        "neuron": {"learn_beta": True, "learn_threshold": True, "init": "uniform"}})
    algo = build_algorithm_config(cfg).build_algo()
    try:
        learner, m = _learner_of(algo)
        learner._updates[DEFAULT_MODULE_ID] = 0
        ref, critic, actor = _reference_copy(learner, m)
        if spike_matmul == "sparse":  # the reference: today's dense Linear layers
            ref.pi.body._sparse = ref.target_pi.body._sparse = False
        batches = _pendulum_batches(6)
        expected = _run_reference(learner, ref, critic, actor, batches, 0, seed=7)
        results = _learner_updates(algo, batches, seed=7, in_one_call=True)
        got, want = _state(m), _state(ref)
        assert learner._updates[DEFAULT_MODULE_ID] == 6
        got_losses = (_peek(results[-1], "qf_loss"), _peek(results[-1], "policy_loss"))
        want_losses = (expected[-1]["qf_loss"], expected[-2]["policy_loss"])  # last actor step: the 5th
        if ADAM_EXACT[adam] and spike_matmul == "dense":
            assert [k for k in want if not torch.equal(got[k], want[k])] == []
            assert got_losses == want_losses
        else:
            for k in want:
                torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-5)
            assert got_losses == pytest.approx(want_losses, rel=1e-4, abs=1e-5)
    finally:
        algo.stop()


def test_updates_in_one_call_equal_one_call_per_update(ray_session):
    """The training step's one call with K minibatches makes exactly the K updates of K calls:
    parameters, targets, Adam state, update count and logged losses bit-identical."""
    cfg = rl_cfg(algorithm={"policy_delay": 2, "tau": 0.1}, model={"hidden": [16], "num_steps": 2})
    algos = [build_algorithm_config(cfg).build_algo() for _ in range(2)]
    try:
        (la, ma), (lb, mb) = _learner_of(algos[0]), _learner_of(algos[1])
        mb.load_state_dict(ma.state_dict())
        batches = _pendulum_batches(5)
        ra = _learner_updates(algos[0], batches, seed=3, in_one_call=False)
        rb = _learner_updates(algos[1], batches, seed=3, in_one_call=True)
        sa, sb = _state(ma), _state(mb)
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert dict(la._updates) == dict(lb._updates) == {DEFAULT_MODULE_ID: 5}
        for name in ("qf", "policy"):
            oa = la.get_optimizer(DEFAULT_MODULE_ID, name).state_dict()["state"]
            ob = lb.get_optimizer(DEFAULT_MODULE_ID, name).state_dict()["state"]
            assert all(torch.equal(oa[i][s], ob[i][s]) for i in oa for s in oa[i])
        assert _peek(ra[-1], "qf_loss") == _peek(rb[-1], "qf_loss")
        assert _peek(ra[-1], "policy_loss") == _peek(rb[-1], "policy_loss")
    finally:
        for a in algos:
            a.stop()


def test_training_step_makes_a_rounds_updates_in_one_call(ray_session):
    cfg = rl_cfg(algorithm={"rollout_fragment_length": 8, "updates_per_env_step": 0.5})
    algo = build_algorithm_config(cfg).build_algo()
    try:
        calls = []
        update = algo.learner_group.update
        algo.learner_group.update = lambda **kw: calls.append(kw) or update(**kw)
        learner, _ = _learner_of(algo)
        algo.train()  # 64 warm-up steps, then rounds of 8 env steps and 4 updates
        n = learner._updates[DEFAULT_MODULE_ID]
        assert n > 0 and len(calls) == n // 4 and all(kw["minibatch_size"] == 32 for kw in calls)
        assert all(len(kw["batch"]) == 4 * 32 for kw in calls)
    finally:
        algo.stop()


def test_flat_buffer_draws_several_batches_as_separate_calls_would():
    eps = _episodes()
    a, b = FlatEpisodeReplayBuffer(capacity=100, seed=5), FlatEpisodeReplayBuffer(capacity=100, seed=5)
    a.add(eps)
    b.add(_episodes())
    one = a.sample_batch(7, repeats=4)
    parts = [b.sample_batch(7) for _ in range(4)]
    for k in one:
        assert np.array_equal(one[k], np.concatenate([p[k] for p in parts]))
    assert a.sampled_timesteps == b.sampled_timesteps == 28


def test_polyak_update_is_rllibs_bit_for_bit():
    from ray.rllib.utils.torch_utils import update_target_network

    from snnlab.rl.td3 import polyak_update

    m = module("spiking", learn_beta=True, learn_threshold=True, neuron_init="uniform")
    for main, target in m.get_target_network_pairs():
        with torch.no_grad():
            for p in main.parameters():
                p.add_(torch.randn_like(p))
        import copy

        other = copy.deepcopy(target)
        polyak_update(main, target, 0.005)
        update_target_network(main_net=main, target_net=other, tau=0.005)
        assert all(torch.equal(x, y) for x, y in zip(target.state_dict().values(), other.state_dict().values()))


def test_non_finite_gradients_take_rllibs_path(learner_algo):
    from snnlab.rl.learner import all_finite as _all_finite

    assert _all_finite([torch.ones(3), torch.zeros(2, 2)])
    assert not _all_finite([torch.ones(3), torch.tensor([1.0, float("nan")])])
    assert not _all_finite([torch.tensor([float("inf")])])
    assert not _all_finite([torch.full((4,), 3e38)])  # overflowing sum: a false alarm, still exact
    learner = learner_algo.learner_group._learner
    m = learner.module[DEFAULT_MODULE_ID].unwrapped()
    grads = {pid: torch.full_like(p, float("nan")) for pid, p in learner._params.items()}
    before = _snapshot(m.qf)
    learner.apply_gradients(grads)  # RLlib's path: NaN gradients are zeroed, Adam steps by 0
    assert all(torch.equal(a, b) for a, b in zip(before, m.qf.parameters()))

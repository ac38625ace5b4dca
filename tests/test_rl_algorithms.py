"""RLlib algorithms with spiking modules and the slope-schedule callback (one shared Ray)."""

import math

import pytest
import torch
from ray.rllib.core.columns import Columns

from snnlab.cli import main
from snnlab.experiment import validate_experiment
from snnlab.rl.callbacks import collect_slopes, get_module_slope, set_module_slope
from snnlab.rl.train import build_algorithm_config, iteration_row, train_rl

from .helpers import CONFIGS, leaves, write_yaml

TINY_PPO = {"name": "PPO", "train_batch_size": 256, "minibatch_size": 64, "num_epochs": 2}
TINY_SAC = {"name": "SAC", "train_batch_size": 32, "learning_starts": 64,
            "env_steps_per_iteration": 64, "replay_capacity": 2000}


def rl_cfg(env="CartPole-v1", algorithm=None, model=None, slope=None, **extra):
    data = {"kind": "rl", "env": env, "algorithm": algorithm or TINY_PPO,
            "model": {"hidden": [16, 16], "num_steps": 2, "critic_hidden": [16], **(model or {})},
            "slope": slope or {"kind": "fixed", "k": 5},
            "logging": {"wandb": "off"}, **extra}
    return validate_experiment(data, "test")


def learner_module(algo):
    return algo.learner_group._learner.module["default_policy"]


@pytest.mark.parametrize("env,mode", [
    ("CartPole-v1", "reset"), ("CartPole-v1", "sequence"),
    ("Pendulum-v1", "reset"), ("Pendulum-v1", "sequence"),
])
def test_ppo_trains_in_every_mode_and_action_space(ray_session, env, mode):
    cfg = rl_cfg(env, model={"mode": mode, "max_seq_len": 8})
    algo = build_algorithm_config(cfg).build_algo()
    try:
        mod = learner_module(algo)
        before = [p.detach().clone() for p in mod.net.parameters()]
        rows = [iteration_row(algo.train()) for _ in range(2)]
        assert rows[-1]["env_steps"] >= 512 and not math.isnan(rows[-1]["episode_return_mean"])
        result = algo.train()
        rates = [result[f"spike_rate/layer{i}"] for i in range(2)]
        assert all(0 < r < 1 for r in rates), rates  # real rates from the last training minibatch
        assert rows[-1]["slope"] == 5.0
        assert mod.is_stateful() == (mode == "sequence")
        changed = [not torch.equal(a, b) for a, b in zip(before, mod.net.parameters())]
        assert all(changed), "the spiking actor's weights did not all train"
    finally:
        algo.stop()


def _learner_numbers(result) -> dict:
    """Every number the Learner reported for an iteration, with its type, by its key path, less
    the clocks."""
    return {f"learners{k}": v for k, v in
            leaves(result["learners"], skip=("throughput", "timer", "_time", "time_")).items()}


@pytest.mark.parametrize("adam", ["foreach", "loop"])
def test_ppo_learner_trains_as_rllibs_bit_for_bit(ray_session, monkeypatch, adam):
    """SpikingPPO's Learner (one finiteness check of all gradients per minibatch, metrics once per
    update call, lean minibatches, issue 20) gives the parameters and the learner metrics RLlib's
    PPOTorchLearner gives, bit for bit: same config, same seed, two iterations each; the lean
    minibatch path really ran; a non-finite gradient still takes RLlib's path (zeroed, with its
    warning)."""
    from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner

    from snnlab.rl import learner as learner_parts
    from snnlab.rl.ppo import SpikingPPOTorchLearner

    lean = []
    concat = learner_parts._concat
    monkeypatch.setattr(learner_parts, "_concat", lambda *a: lean.append(1) or concat(*a))
    trained, reported = [], []
    for learner_class in (SpikingPPOTorchLearner, PPOTorchLearner):
        cfg = rl_cfg(seed=3, algorithm={**TINY_PPO, "minibatch_size": 48, "adam": adam})
        config = build_algorithm_config(cfg).training(learner_class=learner_class)
        algo = config.build_algo()
        try:
            learner = algo.learner_group._learner
            assert type(learner) is learner_class
            before = [p.detach().clone() for p in learner_module(algo).parameters()]
            results = [algo.train() for _ in range(2)]
            after = [p.detach().clone() for p in learner_module(algo).parameters()]
            assert any(not torch.equal(a, b) for a, b in zip(before, after))
            trained.append(after)
            reported.append([_learner_numbers(r) for r in results])
            if learner_class is SpikingPPOTorchLearner:
                assert len(lean) >= 2 * 2 * 256 // 48  # every minibatch of both iterations
                pid, param = next(iter(learner._params.items()))
                grads = {k: torch.zeros_like(p) for k, p in learner._params.items()}
                grads[pid] = torch.full_like(param, float("nan"))
                learner.apply_gradients(grads)
                assert torch.equal(param.grad, torch.zeros_like(param))  # RLlib's nan_to_num
        finally:
            algo.stop()
    assert all(torch.equal(a, b) for a, b in zip(*trained))
    ours, rllibs = reported
    for mine, theirs in zip(ours, rllibs):
        assert mine.keys() == theirs.keys()
        assert "learners/default_policy/policy_loss" in mine and "learners/default_policy/curr_kl_coeff" in mine
        assert mine == theirs
    assert "learners/default_policy/num_module_steps_trained" in ours[-1]


def test_ppo_adam_setting(ray_session):
    """``algorithm.adam`` picks torch's Adam implementation; an unknown one is refused at load."""
    from snnlab.config import ConfigError

    for adam, flags in (("fused", {"fused": True}), ("loop", {"foreach": False})):
        algo = build_algorithm_config(rl_cfg(algorithm={**TINY_PPO, "adam": adam})).build_algo()
        try:
            opt = algo.learner_group._learner.get_optimizer()
            assert all(opt.defaults[k] == v for k, v in flags.items())
        finally:
            algo.stop()
    with pytest.raises(ConfigError, match="adam"):
        rl_cfg(algorithm={**TINY_PPO, "adam": "sgd"})


@pytest.mark.parametrize("replay_buffer,buffer_class", [
    ("flat", "FlatEpisodeReplayBuffer"), ("episode", "EpisodeReplayBuffer")])
def test_sac_with_spiking_actor_trains(ray_session, replay_buffer, buffer_class):
    cfg = rl_cfg("Pendulum-v1", algorithm={**TINY_SAC, "replay_buffer": replay_buffer})
    algo = build_algorithm_config(cfg).build_algo()
    try:
        assert type(algo.local_replay_buffer).__name__ == buffer_class
        mod = learner_module(algo)
        assert type(mod.pi_encoder).__name__ == "SpikingEncoder" and mod.twin_q
        w0 = mod.pi_encoder.net.linears[0].weight.detach().clone()
        for _ in range(3):
            result = algo.train()
            row = iteration_row(result)
        assert row["env_steps"] >= 192
        assert not torch.equal(w0, mod.pi_encoder.net.linears[0].weight)
        losses = result["learners"]["default_policy"]  # SAC's own losses, from either step
        assert all(math.isfinite(losses[k]) for k in ("qf_loss", "policy_loss", "alpha_loss"))
        # slope changes no forward output inside RLlib, in the actor of a trained module
        batch = {Columns.OBS: torch.randn(6, 3)}
        outs = []
        for k in (1.0, 100.0):
            set_module_slope(mod, k)
            outs.append(mod.forward_inference(batch)[Columns.ACTION_DIST_INPUTS])
        assert torch.equal(outs[0], outs[1])
    finally:
        algo.stop()


def test_schedule_reaches_every_learner_and_env_runner(ray_session):
    """num_env_runners=1, num_learners=1: the new k is in every process right after train()."""
    cfg = rl_cfg(slope={"kind": "interval", "k_start": 1, "k_end": 100, "every": 1, "stages": 3},
                 runners={"num_env_runners": 1, "num_learners": 1},
                 evaluation={"interval": 1, "episodes": 1})
    algo = build_algorithm_config(cfg).build_algo()
    try:
        s = collect_slopes(algo)
        assert s["learners"] == [1.0] and s["env_runners"] == [1.0, 1.0]
        seen = []
        for expected_next in (10.0, 100.0):
            result = algo.train()
            seen.append(result["slope"])
            assert result["slope_next"] == expected_next
            assert result["score"] == result["evaluation"]["env_runners"]["episode_return_mean"]
            s = collect_slopes(algo)
            assert s["learners"] == [expected_next]  # the remote Learner actor
            assert s["env_runners"] == [expected_next] * 2  # local + remote EnvRunner
            assert all(x == expected_next for x in s["eval_env_runners"] if x is not None)
        assert seen == [1.0, 10.0]
    finally:
        algo.stop()


def test_checkpoint_restore_continues_the_schedule(ray_session, tmp_path):
    from ray.rllib.algorithms.algorithm import Algorithm

    sched = {"kind": "interval", "k_start": 1, "k_end": 1000, "every": 1, "stages": 4}
    cfg = rl_cfg(slope=sched)
    algo = build_algorithm_config(cfg).build_algo()
    try:
        uninterrupted = [algo.train()["slope"] for _ in range(4)]
    finally:
        algo.stop()
    assert uninterrupted == pytest.approx([1, 10, 100, 1000])

    algo = build_algorithm_config(cfg).build_algo()
    try:
        first = [algo.train()["slope"] for _ in range(2)]
        algo.save_to_path(str(tmp_path / "ckpt"))
    finally:
        algo.stop()
    restored = Algorithm.from_checkpoint(str(tmp_path / "ckpt"))
    try:
        assert restored.slope_schedule.updates == 2
        assert get_module_slope(learner_module(restored)) == pytest.approx(100)
        rest = [restored.train()["slope"] for _ in range(2)]
        assert restored.training_iteration == 4
    finally:
        restored.stop()
    assert first + rest == pytest.approx(uninterrupted)


def test_adaptive_schedule_state_survives_checkpoint(ray_session, tmp_path):
    from ray.rllib.algorithms.algorithm import Algorithm

    cfg = rl_cfg(slope={"kind": "adaptive", "score_low": 0, "score_high": 200, "window": 3})
    algo = build_algorithm_config(cfg).build_algo()
    try:
        results = [algo.train() for _ in range(2)]
        state = algo.slope_schedule.state_dict()
        algo.save_to_path(str(tmp_path / "ckpt"))
    finally:
        algo.stop()
    scores = [r["score"] for r in results]
    r = [min(max(s / 200, 0), 1) for s in scores]
    assert state["k"] == pytest.approx(1 + 99 * (0.5 * r[0] + 0.5 * r[1] + 0.5 * (r[1] - r[0])) / 3)
    restored = Algorithm.from_checkpoint(str(tmp_path / "ckpt"))
    try:
        assert restored.slope_schedule.state_dict() == state
    finally:
        restored.stop()


def test_train_rl_writes_logs_and_checkpoint(ray_session, tmp_path):
    cfg = rl_cfg(stop={"iterations": 2}, logging={"wandb": "offline", "out_dir": str(tmp_path / "runs")})
    lines = []
    res = train_rl(cfg, echo=lines.append)
    assert res.iterations == 2 and len(lines) == 2
    assert lines[0].startswith("iter    1 | return") and "slope       5" in lines[0]
    run = tmp_path / "runs" / "run" / "version_0"
    assert (run / "checkpoint" / "rllib_checkpoint.json").is_file()
    assert (run / "progress.csv").read_text().count("\n") == 3
    assert list(run.glob("wandb/offline-run-*/run-*.wandb"))
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("text,expected", [
    ("env: CartPol-v9\n", "env: Value error, unknown gymnasium environment 'CartPol-v9'"),
    ("algorithm: {name: SAC}\nmodel: {mode: sequence}\n", "model.mode 'sequence' needs PPO"),
    ("model: {num_steps: 0}\n", "model.num_steps: Input should be greater than 0"),
    ("algorithm: {name: DQN}\n", "algorithm: unknown name 'DQN'; allowed: PPO, SAC"),
    ("env: Pendulum-v1\nalgorithm: {name: TD3, policy_delay: 0}\n",
     "algorithm.policy_delay: Input should be greater than or equal to 1"),
    ("env: Pendulum-v1\nalgorithm: {name: TD3, polcy_delay: 3}\n",
     "algorithm.polcy_delay: unknown key; allowed: name, actor_lr"),
    ("env: Pendulum-v1\nalgorithm: {name: TD3}\nmodel: {mode: sequence}\n", "model.mode 'sequence' needs PPO: TD3"),
    ("env: Pendulum-v1\nalgorithm: {name: TD3, replay_buffer: prioritized}\n",
     "algorithm.replay_buffer: Input should be 'flat' or 'episode'"),
    ("env: Pendulum-v1\nmodel: {actor: mlp}\n", "model.actor and model.actor_inputs apply to TD3 only"),
    ("env: Pendulum-v1\nalgorithm: {name: SAC, replay_buffer: flat, prioritized_replay: true}\n",
     "prioritized_replay needs replay_buffer: episode"),
    ("env: Pendulum-v1\nalgorithm: {name: SAC, training_intensity: 64}\n",
     "training_intensity is now updates_per_env_step"),
    ("env: Pendulum-v1\nenv_config: {g: 9.81, gravity_x: 1}\n",
     "env_config: 'gravity_x' is not a key of Pendulum-v1; allowed: g"),
    ("env: snnlab/QuadrotorHover-v0\nenv_config: {reward: l2f, rewrd_scale: 2}\n",
     "env_config: 'rewrd_scale' is not a key of snnlab/QuadrotorHover-v0; allowed: mass, arm,"),
    ("env: snnlab/QuadrotorHover-v0\nenv_config: {reward: l2ff}\n",
     "env_config refused by snnlab/QuadrotorHover-v0: unknown reward preset 'l2ff'"),
    ("env: Pendulum-v1\nmodel: {initial_log_std: -1.0e+18}\n",
     "model.initial_log_std: Input should be greater than or equal to -20"),
])
def test_invalid_rl_config_exits_2_before_ray_starts(tmp_path, capsys, monkeypatch, text, expected):
    import snnlab.rl.train as rl_train

    monkeypatch.setattr(rl_train, "ensure_ray", lambda *a, **k: pytest.fail("Ray was started"))
    path = write_yaml(tmp_path / "rl.yaml", "kind: rl\n" + text)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected.replace("Value error, ", "") in err


@pytest.mark.parametrize("key, value, expected", [
    ("env_config.rewrd", "2", "env_config: 'rewrd' is not a key of snnlab/QuadrotorHover-v0; allowed: mass,"),
    ("model.initial_log_std", "-1e18", "model.initial_log_std: Input should be greater than or equal to -20"),
])
def test_shipped_drone_configs_refuse_bad_input_in_one_line(capsys, monkeypatch, key, value, expected):
    """The two bad inputs a new user's fuzz found (issue 23): both exit 2 in one line."""
    import snnlab.rl.train as rl_train

    monkeypatch.setattr(rl_train, "ensure_ray", lambda *a, **k: pytest.fail("Ray was started"))
    config = "rl_quadrotor_td3.yaml" if key.startswith("env_config") else "rl_quadrotor.yaml"
    assert main(["train", str(CONFIGS / config), "--set", f"{key}={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err


def test_sac_replay_buffer_choice():
    """flat by default; `episode` and prioritized replay keep RLlib's own buffers (and SAC's step)."""
    from snnlab.rl.replay import FLAT_BUFFER

    def buffer(**algorithm):
        cfg = rl_cfg("Pendulum-v1", algorithm={**TINY_SAC, **algorithm})
        return build_algorithm_config(cfg).replay_buffer_config["type"]

    assert buffer() == FLAT_BUFFER
    assert buffer(replay_buffer="episode") == "EpisodeReplayBuffer"
    assert buffer(prioritized_replay=True) == "PrioritizedEpisodeReplayBuffer"


def test_shipped_rl_configs_are_valid():
    from snnlab.experiment import load_experiment

    for name in ("rl_cartpole", "rl_pendulum", "rl_quadrotor"):
        cfg = load_experiment(CONFIGS / f"{name}.yaml")
        assert cfg.kind == "rl"


def test_rllib_gradient_diagnostics_callback(ray_session):
    cfg = rl_cfg(diagnostics={"every": 2, "k_ref": 100, "probe_batch": 16})
    algo = build_algorithm_config(cfg).build_algo()
    try:
        r1, r2 = algo.train(), algo.train()
    finally:
        algo.stop()
    assert "grad/layer0/cosine" not in r1  # every 2 iterations
    layers = [k for k in r2 if k.startswith("grad/layer") and k.endswith("/cosine")]
    assert len(layers) == 3  # 2 hidden LIF layers' inputs + the readout
    assert 0 < r2["grad/layer0/cosine"] < 1 and r2["grad/layer2/cosine"] == pytest.approx(1.0)
    assert r2["grad/layer0/magnitude"] > 0

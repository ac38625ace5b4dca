"""Population settings (PBT / PB2 over the slope k): config checks, exploration bounds, exploit and
restore in both worlds (RLlib Algorithms, the Lightning function trainable), accounting."""

import copy
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import yaml

from snnlab.cli import main
from snnlab.sweep.spec import load_sweep, sweep_from_data, trial_name
from snnlab.sweep.summary import SPEC_FILE

from .helpers import CONFIGS, TINY_SL_SWEEP, write_yaml

PBT = {"label": "pbt", "kind": "pbt", "population": 4, "perturbation_interval": 1}

RL_BASE = {"kind": "rl", "env": "CartPole-v1",
           "algorithm": {"name": "PPO", "train_batch_size": 256, "minibatch_size": 64, "num_epochs": 1},
           "model": {"hidden": [16], "num_steps": 2, "critic_hidden": [16]}, "stop": {"iterations": 3}}


def run_cli(capsys, *args):
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def sl_sweep(**extra) -> dict:
    data = yaml.safe_load(TINY_SL_SWEEP)
    data["settings"] = [{"kind": "fixed", "k": 2}, dict(PBT)]
    data.update(extra)
    return data


@pytest.mark.parametrize("edit,expected", [
    ({"population": 1}, "settings[1].population: Input should be greater than or equal to 2"),
    ({"population": 3}, "settings[1]: population 3 x quantile_fraction 0.25 < 1: PBT's top and bottom "
                        "quantiles would hold less than one member; use population >= 4"),
    ({"population": 2, "quantile_fraction": 0.6}, "settings[1].quantile_fraction: Input should be less than "
                                                  "or equal to 0.5"),
    ({"k_min": 100, "k_max": 1}, "settings[1]: k_min (100) must be below k_max (1)"),
    ({"k_min": 0}, "settings[1].k_min: Input should be greater than 0"),
    ({"perturbation_interval": None}, "settings[1].perturbation_interval: Input should be a valid integer"),
    ({"perturbation_interval": 3}, "settings[1] (pbt): perturbation_interval 3 leaves no step after the "
                                   "first exploit in a run of 3 epochs; use at most 2"),
    ({"burn_in": 3}, "perturbation_interval 1 (burn_in 3) leaves no step after the first exploit"),
    ({"perturbation_factor": 1}, "settings[1].perturbation_factor: Input should be greater than 1"),
    ({"kind": "pb2", "perturbation_factor": 3}, "settings[1]: perturbation_factor: a pbt key; pb2 picks k"),
    ({"mutate": "lr"}, "settings[1].mutate: unknown key; allowed: kind, population, k_min, k_max"),
    ("metric", "settings[1] (pbt): metric.name 'slope' is the searched slope itself; PBT ranks members by a "
               "metric every trial reports at every step: score, val_loss"),
    ("budget", "s.yaml: budgets.quick: settings[1] (pbt): perturbation_interval 1 leaves no step after the "
               "first exploit in a run of 1 epochs; a population needs at least 2 epochs"),
])
def test_pbt_bad_population_settings_exit_2_with_one_line(tmp_path, capsys, edit, expected):
    data = sl_sweep()
    if edit == "metric":
        data["metric"] = {"name": "slope"}
    elif edit == "budget":
        data["budgets"] = {"quick": {"trainer.max_epochs": 1}}
    else:
        data["settings"][1].update(edit)
    path = write_yaml(tmp_path / "s.yaml", yaml.safe_dump(data))
    rc, _, err = run_cli(capsys, "sweep", str(path), "--storage", str(tmp_path / "r"))
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert expected.replace("s.yaml", str(path)) in err, err
    assert not (tmp_path / "r").exists()  # before Ray: nothing started, nothing written


def test_pbt_rl_metric_must_be_reported_at_every_iteration(tmp_path, capsys):
    data = {"kind": "sweep", "name": "r", "base": RL_BASE, "settings": [PBT],
            "metric": {"name": "evaluation/env_runners/episode_return_mean"}}
    path = write_yaml(tmp_path / "s.yaml", yaml.safe_dump(data))
    rc, _, err = run_cli(capsys, "sweep", str(path), "--storage", str(tmp_path / "r"))
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert ("metric.name 'evaluation/env_runners/episode_return_mean' is not reported by every trial at "
            "every step (evaluation.interval is not 1); PBT ranks members by a metric every trial reports "
            "at every step: score, env_runners/episode_return_mean") in err
    data["base"] = {**RL_BASE, "evaluation": {"interval": 1, "episodes": 1}}  # now it is reported
    load_sweep(write_yaml(tmp_path / "s.yaml", yaml.safe_dump(data)))


def test_pbt_members_trial_configs_and_smoke_budget(tmp_path):
    sweep = load_sweep(write_yaml(tmp_path / "s.yaml", yaml.safe_dump(sl_sweep(seeds=[0, 1]))))
    names = [trial_name(t) for t in sweep.trials()]
    assert names == ["fixed-k2_seed0", "fixed-k2_seed1"] + [f"pbt_seed{s}_m{i}" for s in (0, 1) for i in range(4)]
    assert [s["label"] for s in sweep.grid_settings] == ["fixed-k2"]
    assert [(s["label"], p, seed) for s, p, seed in sweep.populations()] == [("pbt", {}, 0), ("pbt", {}, 1)]
    ks = [t["setting"]["slope"]["k"] for t in sweep.trials()[2:6]]
    assert ks[0] == 1.0 and ks[-1] == 100.0  # log-spaced over [k_min, k_max], the ends exact
    assert np.allclose(np.diff(np.log(ks)), math.log(100) / 3)
    for t in sweep.trials():
        cfg = sweep.experiment(t)  # every member is a valid experiment with a fixed slope
        assert cfg.slope.kind == "fixed" and cfg.slope.k == t["setting"]["slope"]["k"]
    # init: random - log-uniform draws per seed, reproducible, within bounds
    data = sl_sweep(seeds=[0, 1])
    data["settings"][1].update(init="random", k_min=2, k_max=50, perturbation_interval=2)
    rand = load_sweep(write_yaml(tmp_path / "r.yaml", yaml.safe_dump(data)))
    draws = [[t["setting"]["slope"]["k"] for t in rand.trials() if t["seed"] == s and "member" in t["setting"]]
             for s in (0, 1)]
    assert draws[0] != draws[1] and all(2 <= k <= 50 for d in draws for k in d)
    assert draws == [[t["setting"]["slope"]["k"] for t in load_sweep(tmp_path / "r.yaml").trials()
                      if t["seed"] == s and "member" in t["setting"]] for s in (0, 1)]
    # --budget smoke: 2 epochs; the population exploits after the first (interval 1, no burn-in)
    smoke = load_sweep(tmp_path / "r.yaml", budget="smoke")
    assert smoke.base["trainer"]["max_epochs"] == 2
    pop = smoke.settings[1]["population"]
    assert (pop["perturbation_interval"], pop["burn_in"]) == (1, 0)
    assert rand.settings[1]["population"]["perturbation_interval"] == 2  # the file's own run


def test_pbt_section_of_a_study_file(tmp_path):
    from snnlab.study import load_study

    text = f"""kind: study
name: st
supervised:
  base: {CONFIGS / 'sl_digits.yaml'}
  set: {{trainer.max_epochs: 3}}
  settings: [{{kind: fixed, k: 2}}, {{kind: pbt, population: 4, perturbation_interval: 1}}]
"""
    study = load_study(write_yaml(tmp_path / "st.yaml", text))
    assert [trial_name(t) for t in study.sweeps["supervised"].trials()][1:3] == ["pbt_seed0_m0", "pbt_seed0_m1"]
    bad = write_yaml(tmp_path / "bad.yaml", text.replace("population: 4", "population: 1"))
    with pytest.raises(Exception, match=r"supervised.settings: settings\[1\].population: Input should be"):
        load_study(bad)


class _FakeTrial:
    """What PBT's explore reads of a Tune trial."""

    def __init__(self, config: dict, trial_id: str = "t") -> None:
        self.config, self.trial_id, self.experiment_tag = config, trial_id, trial_id

    def __str__(self) -> str:
        return self.trial_id


def _fake_trial(config: dict):
    return _FakeTrial(config)


def test_pbt_synch_never_leaves_every_member_waiting():
    """Tune 2.60's synch PBT can set the next sync step to where every live member already is
    (after a --resume: the scheduler restarts from its initial state while the members are far
    along, then the laggards exploit the leaders); no member is then behind it, so none is ever
    chosen again and the run hangs. snnlab's scheduler moves the step past the furthest member."""
    from types import SimpleNamespace

    from snnlab.sweep.population import scheduler

    sched = scheduler(load_sweep_setting({**PBT, "perturbation_interval": 2})["population"], "score", "max")

    class T(_FakeTrial):
        def __init__(self, name, status):
            super().__init__({}, name)
            self.status = status

        def is_finished(self):
            return self.status in ("TERMINATED", "ERROR")

    trials = [T("m0", "PAUSED"), T("m1", "PAUSED"), T("m2", "TERMINATED"), T("m3", "TERMINATED")]
    for t, time_ in zip(trials, (5, 5, 6, 6)):
        sched._trial_state[t] = SimpleNamespace(last_train_time=time_)
    controller = SimpleNamespace(get_trials=lambda: trials)
    sched._next_perturbation_sync = 5  # what Tune computed: max(next + interval, latest step)
    chosen = sched.choose_trial_to_run(controller)
    assert chosen is trials[0] and sched._next_perturbation_sync == 6  # the next multiple of 2 past 5
    # the normal wait is untouched: a member behind the sync step runs, the others wait for it
    trials[1].status = "PAUSED"
    sched._trial_state[trials[1]].last_train_time = 3
    sched._next_perturbation_sync = 4
    assert sched.choose_trial_to_run(controller) is trials[1] and sched._next_perturbation_sync == 4
    # and while a member runs, nothing moves: its result decides
    trials[1].status = "RUNNING"
    assert sched.choose_trial_to_run(controller) is None and sched._next_perturbation_sync == 4


def test_pbt_explore_stays_in_bounds_in_log_space():
    """Ray's PBT explore (x/÷ f or a log-uniform resample) with snnlab's clip: k never leaves
    [k_min, k_max]; unclipped steps are exactly +-ln f in log k; the member keeps its identity."""
    from snnlab.sweep.population import member_settings, scheduler

    setting = load_sweep_setting({**PBT, "k_min": 2, "k_max": 50, "perturbation_factor": 3,
                                  "resample_probability": 0.3})
    sched = scheduler(setting["population"], "score", "max")
    members = member_settings(setting, 0)
    random.seed(0)
    steps, resampled, clipped = 0, 0, {2.0: 0, 50.0: 0}
    for i in range(3000):
        k0 = float(np.exp(np.random.default_rng(i).uniform(np.log(2), np.log(50))))
        source = {"setting": dict(members[i % 4], slope={"kind": "fixed", "k": k0}), "seed": 0}
        target = {"setting": dict(members[(i + 1) % 4], member=7), "seed": 0}
        new, ops = sched._get_new_config(_fake_trial(target), _fake_trial(source))
        k = new["setting"]["slope"]["k"]
        assert 2.0 <= k <= 50.0 and new["setting"]["member"] == 7
        assert source["setting"]["slope"]["k"] == k0  # the source's config is not touched
        if ops["setting"]["slope"]["k"] == "resample":
            resampled += 1
        elif k in (2.0, 50.0) and abs(abs(math.log(k / k0)) - math.log(3)) > 1e-9:
            clipped[k] += 1  # a step of +-ln 3 past an edge, clipped to it
        else:
            assert abs(abs(math.log(k / k0)) - math.log(3)) < 1e-9, (k0, k, ops)
            steps += 1
    assert 0.25 < resampled / 3000 < 0.35 and steps > 1000 and min(clipped.values()) > 100
    # its own generators: the same seed gives the same choices whatever else draws from Python's
    # and numpy's global generators in between, and those are left as they were
    source = _fake_trial({"setting": dict(members[2]), "seed": 0})
    target = _fake_trial({"setting": dict(members[0]), "seed": 0})
    picks = []
    for noise in (0, 1):
        sched = scheduler(setting["population"], "score", "max", seed=5)
        ks = []
        for _ in range(40):
            for _ in range(noise * 3):
                random.random(), np.random.rand()
            outside = (random.getstate(), np.random.get_state()[1].copy())
            ks.append(sched._get_new_config(target, source)[0]["setting"]["slope"]["k"])
            assert random.getstate() == outside[0] and np.array_equal(np.random.get_state()[1], outside[1])
        picks.append(ks)
    assert picks[0] == picks[1] and len(set(picks[0])) > 3


def load_sweep_setting(raw: dict) -> dict:
    data = sl_sweep()
    data["settings"][1] = raw
    return sweep_from_data(data, Path("s.yaml")).settings[1]


def test_pbt_pb2_explores_log10_k_within_bounds():
    """PB2 (scikit-learn's GP, no extra package) over log10 k: its pick and the clip agree."""
    from ray.tune.schedulers.pbt import _PBTTrialState

    from snnlab.sweep.population import ClipSlope, member_settings, scheduler

    setting = load_sweep_setting({"kind": "pb2", "population": 4, "perturbation_interval": 1})
    sched = scheduler(setting["population"], "score", "max")
    assert type(sched).__mro__[2].__name__ == "PB2"
    members = member_settings(setting, 0)
    trials = []
    for i, m in enumerate(members):
        t = _FakeTrial({"setting": m, "seed": 0}, f"t{i}")
        trials.append(t)
        sched._trial_state[t] = _PBTTrialState(t)
    rng, gain = np.random.default_rng(0), [1.0, 3.0, 2.0, 0.5]  # member 1 (k 4.6) improves fastest
    for step in (1, 2, 3, 4):
        for i, t in enumerate(trials):
            sched._save_trial_state(sched._trial_state[t], step, {
                "training_iteration": step, "score": float(step * gain[i] + 0.1 * rng.normal())}, t)
    np.random.seed(0)  # PB2's acquisition optimiser draws its starting points from numpy
    new, _ = sched._get_new_config(trials[3], trials[1])
    k, log10_k = new["setting"]["slope"]["k"], new["setting"]["log10_k"]
    assert 1.0 <= k <= 100.0 and k == pytest.approx(10 ** log10_k) and new["setting"]["member"] == 3
    assert k != pytest.approx(members[1]["slope"]["k"])  # the bandit's own pick, not a copy
    clip = ClipSlope(1, 100, "log10_k")
    assert clip({"setting": {"slope": {"kind": "fixed", "k": 5.0}, "log10_k": 3.5}})["setting"]["slope"]["k"] == 100
    low = clip({"setting": {"slope": {"kind": "fixed", "k": 5.0}, "log10_k": -1.0}})["setting"]
    assert low["slope"]["k"] == 1.0 and low["log10_k"] == 0.0


def test_pbt_fixed_slope_keeps_its_own_k_when_loading_a_state():
    """The stale-config pitfall at its root: a fixed schedule restored from a checkpoint written at
    another k keeps its (perturbed) k from the first step on; the counter comes from the state."""
    from snnlab.schedules import FixedSlope

    src = FixedSlope(100)
    src.update(1.0), src.update(2.0)
    member = FixedSlope(50)
    member.load_state_dict(src.state_dict())
    assert member.k == 50 and member.updates == 2
    assert member.update(3.0) == 50


def _rl_member_configs(base: dict, population: int = 4) -> list[dict]:
    data = {"kind": "sweep", "name": "m", "base": base, "seeds": [0],
            "settings": [{"kind": "pbt", "population": population, "perturbation_interval": 1,
                          "quantile_fraction": 0.5}]}
    return sweep_from_data(data, Path("m.yaml")).trials()


def _exploit(member_trainable, source_config: dict, checkpoint, member: int, k: float) -> dict:
    """What Tune does when a member exploits: reset the (reused) actor to the source's config
    with the perturbed k (the member keeps its identity), then restore the source's checkpoint
    with the source's last result as its metrics."""
    new = copy.deepcopy(source_config)
    new["setting"]["member"], new["setting"]["slope"]["k"] = member, k
    assert member_trainable.reset(new)
    member_trainable.restore(checkpoint)
    return new


def _flat(d, prefix=""):
    if isinstance(d, dict):
        return {k2: v2 for k, v in d.items() for k2, v2 in _flat(v, f"{prefix}/{k}").items()}
    return {prefix: d}


def test_pbt_rl_exploit_restores_the_source_and_applies_the_perturbed_k_everywhere(ray_session):
    """PPO with a remote EnvRunner and evaluation runners: an exploiting member continues from the
    source's checkpoint (iteration, weights, optimizer state) with the perturbed k on every Learner
    and EnvRunner and in the logged `slope` from its first iteration on."""
    from snnlab.rl.callbacks import collect_slopes
    from snnlab.sweep.trainables import RL_TRAINABLES

    base = {**RL_BASE, "runners": {"num_env_runners": 1}, "evaluation": {"interval": 1, "episodes": 1}}
    configs = _rl_member_configs(base)
    cls = RL_TRAINABLES["PPO"]
    source = cls(config=copy.deepcopy(configs[3]))  # k = 100
    for _ in range(2):
        last = source.train()
    checkpoint = source.save()  # a _TrainingResult, as PBT holds it (metrics: the source's last result)
    assert checkpoint.metrics["training_iteration"] == 2
    source_state = _flat(source.learner_group.get_state())
    source.stop()
    member = cls(config=copy.deepcopy(configs[0]))  # k = 1, its own first iteration
    member.train()
    _exploit(member, configs[3], checkpoint, member=0, k=50.0)
    assert member.iteration == 2 and member.slope_schedule.k == 50.0 and member.slope_schedule.updates == 2
    assert collect_slopes(member) == {"learners": [50.0], "env_runners": [50.0, 50.0], "eval_env_runners": [50.0]}
    state = _flat(member.learner_group.get_state())
    assert set(state) == set(source_state) and any("optimizer" in k for k in state)
    differ = [k for k in state if not np.array_equal(np.asarray(state[k]), np.asarray(source_state[k]))]
    assert differ == ["/learner/rl_module/default_policy/net.lifs.0.spike.slope"]  # k only
    # fresh random streams after the restore: every runner re-seeded from (seed, iteration)
    seeds = member.env_runner_group.foreach_env_runner(lambda er: er._seed, local_env_runner=True)
    assert seeds == [0 + 100_003 * 2 + i for i in range(2)]
    result = member.train()
    assert result["training_iteration"] == 3 and result["slope"] == 50.0 and result["slope_next"] == 50.0
    assert collect_slopes(member)["env_runners"] == [50.0, 50.0]
    assert result["env_runners"]["num_env_steps_sampled_lifetime"] == 3 * 256  # the source's 512 + 256
    assert last["env_runners"]["num_env_steps_sampled_lifetime"] == 512
    member.stop()


def test_pbt_td3_member_checkpoints_carry_the_replay_buffer(ray_session):
    """TD3 on Pendulum: a population member's checkpoint holds its replay buffer, so an exploiting
    member continues with the source's buffer (and k 50 everywhere); a grid trial's does not."""
    from snnlab.rl.callbacks import collect_slopes
    from snnlab.sweep.trainables import REPLAY_STATE_KEY, RL_TRAINABLES

    base = yaml.safe_load((CONFIGS / "rl_pendulum_td3.yaml").read_text())
    base.update(model={"actor": "spiking", "hidden": [16], "critic_hidden": [32], "num_steps": 2},
                evaluation={"interval": 0}, stop={"iterations": 3})
    base["algorithm"].update(learning_starts=64, env_steps_per_iteration=200, train_batch_size=32,
                             updates_per_env_step=0.25)
    configs = _rl_member_configs(base)
    cls = RL_TRAINABLES["TD3"]
    source = cls(config=copy.deepcopy(configs[3]))
    for _ in range(2):
        source.train()
    assert REPLAY_STATE_KEY in source.get_state()
    buffer = copy.deepcopy(source.local_replay_buffer.get_state())
    checkpoint = source.save()
    source.stop()
    member = cls(config=copy.deepcopy(configs[0]))
    member.train()
    assert len(member.local_replay_buffer) == 200
    _exploit(member, configs[3], checkpoint, member=0, k=50.0)
    restored = member.local_replay_buffer
    assert len(restored) == 400 and restored.get_state()["size"] == buffer["size"]
    for col, values in buffer["columns"].items():
        assert np.array_equal(restored.get_state()["columns"][col], values), col
    assert collect_slopes(member) == {"learners": [50.0], "env_runners": [50.0]}
    result = member.train()
    assert result["slope"] == 50.0 and result["training_iteration"] == 3 and len(member.local_replay_buffer) == 600
    member.stop()
    grid = dict(copy.deepcopy(configs[0]), setting={"label": "fixed-k2", "slope": {"kind": "fixed", "k": 2.0}})
    trial = cls(config=grid)
    assert REPLAY_STATE_KEY not in trial.get_state()  # the grid's checkpoints are unchanged
    trial.stop()


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _exploits(pop_dir: Path) -> list[tuple[int, int, int, float]]:
    """(member, source member, step, new k) of every exploit in pbt_global.txt. The record's two
    steps are Tune's last results of the member and the source; the trial whose result completed
    the synchronous round is still at its previous one there, so the round's step is the larger."""
    out = []
    for line in (pop_dir / "pbt_global.txt").read_text().splitlines():
        _, _, step, source_step, source_config, new_config = json.loads(line)
        out.append((new_config["setting"]["member"], source_config["setting"]["member"],
                    max(int(step), int(source_step)), new_config["setting"]["slope"]["k"]))
    return out


def test_pbt_supervised_population_end_to_end(tiny_sweep, tmp_path, capsys):
    """A real PBT population of 4 digits classifiers (3 epochs, exploit after every epoch) beside a
    fixed slope: the grid trial's numbers are those of the same trial in a sweep without the
    population; every exploiting member trains from its source's Lightning checkpoint (the
    schedule's history is the source's) with the perturbed k, logged as `slope`; every row is kept;
    the summary shows the best member, the member mean and the compute."""
    import torch

    data = sl_sweep(seeds=[0], name="slpbt")
    path = write_yaml(tmp_path / "s.yaml", yaml.safe_dump(data))
    rc, out, err = run_cli(capsys, "sweep", str(path), "--storage", str(tmp_path / "runs"), "--verbose", "0")
    assert rc == 0, err[-3000:]
    exp, pop = tmp_path / "runs" / "slpbt", tmp_path / "runs" / "slpbt" / "pbt_seed0"
    grid = _rows(exp / "fixed-k2_seed0" / "result.json")
    alone = _rows(tiny_sweep["exp"] / "fixed-k2_seed0" / "result.json")
    assert [r["score"] for r in grid] == [r["score"] for r in alone]  # the grid is untouched
    rows = {m: _rows(pop / f"pbt_seed0_m{m}" / "result.json") for m in range(4)}
    assert all([r["training_iteration"] for r in rs] == [1, 2, 3] for rs in rows.values())  # no row lost
    assert [rows[m][0]["slope"] for m in range(4)] == pytest.approx([1.0, 100 ** (1 / 3), 100 ** (2 / 3), 100.0])
    exploits = _exploits(pop)
    assert exploits, "no member exploited another"
    for member, src, step, k in exploits:
        assert 1.0 <= k <= 100.0 and member != src
        after = rows[member][step]  # the member's first row after the exploit at `step`
        assert after["slope"] == pytest.approx(k) and after["epoch"] == step
        assert after["config"]["setting"]["member"] == member
    # each exploiting member's first checkpoint after the exploit continues its source's checkpoint:
    # the schedule's history (the k of every epoch of the lineage) is the source's plus the new k,
    # and the optimiser's step count goes on from the source's
    def checkpoint(member: int, epoch: int) -> dict:
        for path in (pop / f"pbt_seed0_m{member}").glob("checkpoint_*/checkpoint.ckpt"):
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
            if ckpt["epoch"] == epoch:
                (h,) = [v["history"] for key, v in ckpt["callbacks"].items() if "SlopeSchedule" in key]
                return {"history": h, "global_step": ckpt["global_step"],
                        "adam_steps": {float(st["step"]) for st in ckpt["optimizer_states"][0]["state"].values()}}
        raise AssertionError(f"no checkpoint of member {member} at epoch {epoch}")

    per_epoch = checkpoint(0, 0)["global_step"]
    for member, src, step, k in exploits:
        after, before = checkpoint(member, step), checkpoint(src, step - 1)
        assert after["history"] == pytest.approx(before["history"] + [k])
        assert after["global_step"] == before["global_step"] + per_epoch == (step + 1) * per_epoch
        assert after["adam_steps"] == {float(after["global_step"])}
    # summary: best member, member mean, compute
    from snnlab.sweep.summary import equal_compute, summarize

    df = summarize(exp).set_index("setting")
    assert list(df.index) == ["fixed-k2", "pbt", "pbt (member mean)"]
    assert df.loc["pbt", "runs_per_seed"] == 4 and df.loc["pbt", "steps_per_seed"] == 12
    assert df.loc["fixed-k2", "runs_per_seed"] == 1 and df.loc["fixed-k2", "steps_per_seed"] == 3
    finals = [rs[-1]["score"] for rs in rows.values()]
    assert df.loc["pbt", "final_mean"] == pytest.approx(max(finals))
    assert df.loc["pbt (member mean)", "final_mean"] == pytest.approx(np.mean(finals))
    arms = equal_compute(exp).set_index("arm")
    assert list(arms.index) == ["fixed-k2", "pbt: best member", "pbt: member mean"]
    md = (exp / "summary.md").read_text()
    assert "| pbt (best member) | 1 | 4 |" in md and "## Compute" in md and (exp / "compute.csv").is_file()


def test_pbt_rl_population_end_to_end(ray_session, tmp_path, capsys):
    """A real PBT population of 2 PPO members (3 iterations, exploit after each): the exploiting
    member's next iteration trains and logs the perturbed k; env steps are accounted per member."""
    data = {"kind": "sweep", "name": "rlpbt", "base": RL_BASE, "seeds": [0],
            "settings": [{"kind": "pbt", "population": 2, "quantile_fraction": 0.5, "perturbation_interval": 1,
                          "k_min": 2, "k_max": 50}]}
    path = write_yaml(tmp_path / "rl.yaml", yaml.safe_dump(data))
    rc, out, err = run_cli(capsys, "sweep", str(path), "--storage", str(tmp_path / "runs"), "--verbose", "0")
    assert rc == 0, err[-3000:]
    exp = tmp_path / "runs" / "rlpbt"
    pop = exp / "pbt_seed0"
    rows = {m: _rows(pop / f"pbt_seed0_m{m}" / "result.json") for m in range(2)}
    assert all([r["training_iteration"] for r in rs] == [1, 2, 3] for rs in rows.values())
    assert [rows[0][0]["slope"], rows[1][0]["slope"]] == [2.0, 50.0]
    exploits = _exploits(pop)
    assert len(exploits) == 2  # one per perturbation round (steps 1 and 2): bottom copies top
    for member, src, step, k in exploits:
        assert rows[member][step]["slope"] == pytest.approx(k) and 2.0 <= k <= 50.0
        assert rows[member][step]["env_runners"]["num_env_steps_sampled_lifetime"] == 256 * (step + 1)
    from snnlab.sweep.summary import summarize

    df = summarize(exp).set_index("setting")
    assert df.loc["pbt", "env_steps_per_seed"] == 2 * 3 * 256 and df.loc["pbt", "runs_per_seed"] == 2


def _member_dir(root: Path, name: str, setting: dict, seed: int, scores: list[float], env_steps: int = 100,
                iterations: list[int] | None = None) -> None:
    d = root / name
    d.mkdir(parents=True)
    (d / "params.json").write_text(json.dumps({"setting": setting, "seed": seed, "params": {}}))
    its = iterations or list(range(1, len(scores) + 1))
    rows = [{"training_iteration": i, "score": s, "slope": setting["slope"].get("k", 1.0), "time_this_iter_s": 2.0,
             "env_runners": {"num_env_steps_sampled": env_steps}} for i, s in zip(its, scores)]
    (d / "result.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_pbt_accounting_by_hand(tmp_path):
    """The summary's population rows and the equal-compute table from hand-made result folders."""
    from snnlab.sweep.summary import compare_to_reference, equal_compute, summarize, write_summary

    pbt = {"label": "pbt", "slope": {"kind": "pbt"}, "population": {"kind": "pbt", "population": 3}}
    spec = {"name": "acc", "metric": {"name": "score", "mode": "max"}, "threshold": 25, "smoothing": 1,
            "steps": 3, "step_unit": "training iterations",
            "settings": [{"label": "fixed-k1", "slope": {"kind": "fixed", "k": 1}},
                         {"label": "fixed-k100", "slope": {"kind": "fixed", "k": 100}},
                         {"label": "adaptive", "slope": {"kind": "adaptive"}}, pbt]}
    (tmp_path / SPEC_FILE).write_text(yaml.safe_dump(spec))
    for seed in (0, 1):
        for label, k, scores in (("fixed-k1", 1, [10, 20, 30 + seed]), ("fixed-k100", 100, [5, 10, 40 - 20 * seed]),
                                 ("adaptive", 1, [10, 25, 35])):
            _member_dir(tmp_path, f"{label}_seed{seed}", {"label": label, "slope": {"kind": "fixed", "k": k}},
                        seed, scores)
        for m, scores in enumerate([[10, 20, 30], [10, 30, 50 + seed], [0, 10, 20]]):
            member = {"label": "pbt", "slope": {"kind": "fixed", "k": 2.0 ** m}, "member": m,
                      "population": pbt["population"]}
            # member 2's step 2 reported twice (a resume): its later report counts, once
            its, sc = ([1, 2, 2, 3], [0, 10, 12, 20]) if m == 2 else (None, scores)
            _member_dir(tmp_path / f"pbt_seed{seed}", f"pbt_seed{seed}_m{m}", member, seed, sc, iterations=its)
    df = summarize(tmp_path).set_index("setting")
    assert list(df.index) == ["fixed-k1", "fixed-k100", "adaptive", "pbt", "pbt (member mean)"]
    best = df.loc["pbt"]  # member 1 of each seed: finals 50 and 51
    assert best.final_mean == pytest.approx(50.5) and best.best_mean == pytest.approx(50.5)
    assert best.auc_mean == pytest.approx(np.mean([(10 + 30 + 50) / 3, (10 + 30 + 51) / 3]))
    assert best.runs_per_seed == 3 and best.steps_per_seed == 3 + 3 + 3
    assert best.env_steps_per_seed == 100 * 9 and "trial_s_per_seed" not in df  # seconds: compute.csv
    mean = df.loc["pbt (member mean)"]  # member 2's curve: step 2 keeps the later report (12)
    assert mean.final_mean == pytest.approx(np.mean([(30 + 50 + 20) / 3, (30 + 51 + 20) / 3]))
    assert mean.runs_per_seed == 3 and mean.steps_per_seed == 9
    assert df.loc["adaptive", "runs_per_seed"] == 1 and df.loc["adaptive", "steps_per_seed"] == 3
    arms = equal_compute(tmp_path).set_index("arm")
    assert list(arms.index) == ["adaptive", "pbt: best member", "pbt: member mean",
                                "fixed grid: best k by mean final (fixed-k1)", "fixed grid: best run per seed"]
    grid = arms.loc["fixed grid: best k by mean final (fixed-k1)"]  # mean finals: k1 30.5, k100 30
    assert grid.runs_per_seed == 2 and grid.steps_per_seed == 6 and grid.env_steps_per_seed == 600
    assert grid.final_mean == pytest.approx(30.5)
    per_seed = arms.loc["fixed grid: best run per seed"]  # seed 0: k100 (40), seed 1: k1 (31)
    assert per_seed.final_mean == pytest.approx(35.5) and per_seed.runs_per_seed == 2
    assert arms.loc["pbt: best member", "runs_per_seed"] == 3 and arms.loc["adaptive", "runs_per_seed"] == 1
    assert arms.loc["pbt: best member", "trial_s_per_seed"] == 2.0 * 9 and arms.loc["adaptive", "trial_s_per_seed"] == 6
    # paired by seed against the grid's best k (fixed-k1: finals 30, 31) and PBT's best member (50, 51)
    adaptive = arms.loc["adaptive"]  # finals 35, 35
    assert adaptive.vs_grid_mean_diff == pytest.approx(np.mean([35 - 30, 35 - 31])) and adaptive.vs_grid_seeds == 2
    assert adaptive.vs_grid_p_value == pytest.approx(0.5)  # 2 seeds, both positive: 2 / 2^2
    assert adaptive.vs_pbt_mean_diff == pytest.approx(np.mean([35 - 50, 35 - 51]))
    assert math.isnan(grid.vs_grid_mean_diff) and math.isnan(arms.loc["pbt: best member", "vs_pbt_mean_diff"])
    assert per_seed.vs_grid_mean_diff == pytest.approx(np.mean([40 - 30, 31 - 31]))
    cmp = compare_to_reference(tmp_path).set_index("setting")  # the population's best member, by seed
    assert cmp.loc["pbt", "final_mean_diff"] == pytest.approx(np.mean([50 - 40, 51 - 20]))
    _, md = write_summary(tmp_path)
    assert "| pbt (best member) | 2 | 3 |" in md and "| pbt (member mean) | 2 | 3 |" in md
    assert "| fixed grid: best run per seed | 2 | 2 | 6 | 600 |" in md
    assert "Δ final vs grid best k [95% CI] p" in md and "Δ final vs pbt best member [95% CI] p" in md
    assert "| +4.5 [+4, +5] p=0.5 | -15.5 [-16, -15] p=0.5 |" in md  # the adaptive arm
    from snnlab.report.build import build_report

    files = build_report([tmp_path], tmp_path / "report")  # the report shows the same tables
    for name in ("markdown", "html"):
        text = files[name].read_text()
        assert "pbt (best member)" in text and "fixed grid: best run per seed" in text, name


def test_pbt_checkpoints_keep_what_an_exploit_points_at(tmp_path):
    """Exploiting a member whose checkpoint was deleted fails in Tune: synchronous populations
    keep every checkpoint written between two rounds (+2), asynchronous ones keep all."""
    from snnlab.sweep.run import population_checkpoints

    sl = load_sweep(write_yaml(tmp_path / "s.yaml", yaml.safe_dump(sl_sweep())))
    pop = dict(sl.settings[1]["population"], perturbation_interval=3)
    assert population_checkpoints(sl, pop).num_to_keep == 5
    assert population_checkpoints(sl, dict(pop, synch=False)).num_to_keep is None
    rl = sweep_from_data({"kind": "sweep", "name": "r", "base": RL_BASE, "settings": [PBT]}, Path("r.yaml"))
    cfg = population_checkpoints(rl, pop)
    assert (cfg.num_to_keep, cfg.checkpoint_frequency, cfg.checkpoint_at_end) == (4, 3, True)


def test_pbt_shipped_sweep_loads_with_every_budget():
    for budget in (None, "smoke"):
        sweep = load_sweep(CONFIGS / "rl_pbt.yaml", budget=budget)
        trials = sweep.trials()
        assert len(trials) == 7 * 3 + 6 * 3  # 6 fixed + adaptive, and 6 members, x 3 seeds
        for t in trials:
            sweep.experiment(t)
    full = load_sweep(CONFIGS / "rl_pbt.yaml")
    assert full.base["evaluation"]["interval"] == 1 and full.settings[-1]["population"]["perturbation_interval"] == 4

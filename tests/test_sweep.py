"""snnlab sweep: spec validation, the summary's numbers, and a real smoke sweep on the shared Ray."""

import json
import math
import time

import numpy as np
import pytest
import yaml

from snnlab.cli import main
from snnlab.config import ConfigError
from snnlab.sweep.spec import load_sweep, trial_name
from snnlab.sweep.summary import SPEC_FILE, steps_to_threshold, summarize

from .helpers import CONFIGS, REPO, TINY_SL_SWEEP, write_yaml

SL_SWEEP = TINY_SL_SWEEP


def run_cli(capsys, *args):
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("edit,expected", [
    ("settings: []\n", "settings: List should have at least 1 item"),
    ("setings: []\n", "setings: unknown key; allowed: kind, name, base"),
    ("settings: [{kind: fixed, k: 0}]\n", "settings[0].k: Input should be greater than 0"),
    ("settings: [{kind: cosine}]\n", "settings[0].kind"),
    ("metric: {name: reward}\n", "metric.name: 'reward' is not reported by supervised trials; allowed: score"),
    ("seeds: [1, 1]\n", "seeds: repeated seed"),
    ("params: {model.hidden: []}\n", "params.model.hidden: empty list"),
    ("params: {model.num_steps: [4, 0]}\n", "params.model.num_steps=0"),
    ("base: nowhere.yaml\n", "base: "),

    ("threshold: .nan\n", "threshold: Input should be a finite number (got nan; allowed: a finite number)"),
    ("threshold: .inf\n", "threshold: Input should be a finite number (got inf; allowed: a finite number)"),
    ("threshold: -.inf\n", "threshold: Input should be a finite number (got -inf"),
    ("seeds: [0, -1]\n", "seeds.1: Input should be greater than or equal to 0 (got -1; allowed: an integer "
                         "with 0 <= seeds[1] <= 2147483647)"),
    ("seeds: [4294967296]\n", "seeds.0: Input should be less than or equal to 2147483647"),
    ("seeds: [0.5]\n", "seeds.0: Input should be a valid integer"),
    ("diagnostics: {seeds: [-1], every: 1}\n", "diagnostics.seeds.0: Input should be greater than or equal to 0"),
    ("diagnostics: {seeds: [0], every: 1, k_ref: .nan}\n", "diagnostics.k_ref: Input should be a finite number"),
    ("settings: [{kind: fixed, k: .nan}]\n", "settings[0].k: Input should be a finite number (got nan; "
                                             "allowed: a finite number > 0)"),
    ("settings: [{kind: adaptive, score_low: 0, score_high: .inf}]\n",
     "settings[0].score_high: Input should be a finite number (got inf; allowed: a finite number)"),
    ("settings: [{kind: interval, every: -1}]\n", "settings[0].every: Input should be greater than or equal to 1 "
                                                  "(got -1; allowed: an integer >= 1)"),
    ("resources: {cpus_per_trial: .nan}\n", "resources.cpus_per_trial: Input should be a finite number"),
    ("resources: {gpus_per_trial: -1}\n", "resources.gpus_per_trial: Input should be greater than or equal to 0"),
    ("max_concurrent: -1\n", "max_concurrent: Input should be greater than or equal to 0 (got -1; allowed: an "
                             "integer >= 0)"),
    ("smoothing: 0\n", "smoothing: Input should be greater than or equal to 1"),
    ("set: {optim.lr: .nan}\n", "optim.lr: Input should be a finite number (got nan; allowed: a finite number > 0)"),
    ("set: {data.val_fraction: 2}\n", "data.val_fraction: Input should be less than 1"),
    ("params: {optim.lr: [0.01, .inf]}\n", "params.optim.lr=inf: optim.lr: Input should be a finite number"),
    ("params: {seed: [-3]}\n", "seed: Input should be greater than or equal to 0"),
])
def test_bad_sweep_files_exit_2_with_one_line(tmp_path, capsys, edit, expected):
    data = yaml.safe_load(SL_SWEEP)
    data.update(yaml.safe_load(edit))
    path = write_yaml(tmp_path / "s.yaml", yaml.safe_dump(data))
    rc, _, err = run_cli(capsys, "sweep", str(path), "--storage", str(tmp_path / "r"))
    assert rc == 2
    assert len(err.strip().splitlines()) == 1, err
    assert expected in err
    assert not (tmp_path / "r").exists()  # nothing started, nothing written


def test_unknown_budget_and_bad_override(tmp_path, capsys):
    path = write_yaml(tmp_path / "s.yaml", SL_SWEEP)
    rc, _, err = run_cli(capsys, "sweep", str(path), "--budget", "huge")
    assert rc == 2 and "--budget 'huge' is not defined; allowed: full, smoke" in err
    rc, _, err = run_cli(capsys, "sweep", str(path), "--set", "model.readout=rate")
    assert rc == 2 and "model.readout" in err


@pytest.mark.parametrize("text", ["", "# a sweep, some day\n", "\n# nothing\n\n"])
def test_empty_sweep_file_exits_2_with_one_line(tmp_path, capsys, text):
    path = write_yaml(tmp_path / "s.yaml", text)
    rc, _, err = run_cli(capsys, "sweep", str(path), "--storage", str(tmp_path / "r"))
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert f"{path}: the file is empty (nothing but comments or blank lines)" in err
    assert not (tmp_path / "r").exists()


def test_sweep_with_an_empty_base_file_exits_2(tmp_path, capsys):
    write_yaml(tmp_path / "base.yaml", "# to do\n")
    data = yaml.safe_load(SL_SWEEP)
    data["base"] = "base.yaml"
    path = write_yaml(tmp_path / "s.yaml", yaml.safe_dump(data))
    rc, _, err = run_cli(capsys, "sweep", str(path))
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert f"{path}: base: {tmp_path / 'base.yaml'}: the file is empty" in err


def test_bad_set_override_numbers_exit_2(tmp_path, capsys):
    path = write_yaml(tmp_path / "s.yaml", SL_SWEEP)
    for override, expected in (("seed=-1", "seed: Input should be greater than or equal to 0"),
                               ("model.neuron.threshold=.nan", "model.neuron.threshold: Input should be a finite"),
                               ("data.batch_size=-4", "data.batch_size: Input should be greater than 0")):
        rc, _, err = run_cli(capsys, "sweep", str(path), "--set", override)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and expected in err, err


def test_a_bad_value_in_a_budget_not_selected_fails_at_load(tmp_path, capsys):
    data = yaml.safe_load(SL_SWEEP)
    data["budgets"] = {"quick": {"trainer.max_epochs": 1}, "paper": {"optim.lr": float("nan")}}
    path = write_yaml(tmp_path / "s.yaml", yaml.safe_dump(data, sort_keys=False))
    for budget in (None, "quick", "smoke", "full", "paper"):
        args = ["sweep", str(path), "--storage", str(tmp_path / "r")] + (["--budget", budget] if budget else [])
        rc, _, err = run_cli(capsys, *args)
        assert rc == 2 and len(err.strip().splitlines()) == 1, err
        assert f"{path}: budgets.paper: " in err and "optim.lr: Input should be a finite number" in err, err
    assert not (tmp_path / "r").exists()
    data["budgets"]["paper"] = {"model.hiden": [8]}  # a key that does not exist, too
    path = write_yaml(tmp_path / "s.yaml", yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError, match=r"budgets\.paper: .*model\.hiden: unknown key"):
        load_sweep(path, budget="quick")
    data["budgets"]["paper"] = {"trainer.max_epochs": 30}  # fixed: every budget loads
    path = write_yaml(tmp_path / "s.yaml", yaml.safe_dump(data, sort_keys=False))
    assert load_sweep(path, budget="quick").base["trainer"]["max_epochs"] == 1
    assert load_sweep(path, budget="paper").base["trainer"]["max_epochs"] == 30


def test_cluster_address_that_does_not_answer(tmp_path, capsys):
    path = write_yaml(tmp_path / "s.yaml", SL_SWEEP)
    rc, _, err = run_cli(capsys, "sweep", str(path), "--address", "127.0.0.1:1", "--storage",
                         str(tmp_path / "r"))
    assert rc == 2 and "--address 127.0.0.1:1: no Ray cluster answers there" in err
    assert not (tmp_path / "r").exists()


def test_resume_and_summary_of_a_folder_without_a_sweep(tmp_path, capsys):
    path = write_yaml(tmp_path / "s.yaml", SL_SWEEP)
    rc, _, err = run_cli(capsys, "sweep", str(path), "--resume", "--storage", str(tmp_path / "none"))
    assert rc == 2 and "no sweep to resume" in err
    (tmp_path / "empty").mkdir()
    rc, _, err = run_cli(capsys, "sweep", "--summary", str(tmp_path / "empty"))
    assert rc == 2 and "no snnlab sweep here" in err


def test_restart_unfinished_is_refused_where_it_cannot_apply(tmp_path, capsys):
    path = write_yaml(tmp_path / "s.yaml", SL_SWEEP)
    rc, _, err = run_cli(capsys, "sweep", str(path), "--restart-unfinished", "--storage", str(tmp_path / "r"))
    assert rc == 2 and "--restart-unfinished: only with --resume" in err
    rc, _, err = run_cli(capsys, "sweep", str(CONFIGS / "rl_pbt.yaml"), "--resume", "--restart-unfinished",
                         "--storage", str(tmp_path / "r"))
    assert rc == 2 and "rl_pbt has population settings (pbt/pb2)" in err
    assert not (tmp_path / "r").exists()  # refused before anything starts


def test_shipped_sweeps_load_with_every_budget():
    for name in ("rl_fixed_grid", "rl_schedules", "sl_fixed_grid", "sl_schedules"):
        for budget in (None, "smoke"):
            sweep = load_sweep(CONFIGS / f"{name}.yaml", budget=budget)
            trials = sweep.trials()
            assert len(trials) == len(sweep.spec.settings) * len(sweep.spec.seeds)
            for t in trials:
                sweep.experiment(t)  # every trial's config validates
    grid = load_sweep(CONFIGS / "rl_fixed_grid.yaml")
    assert [s["slope"]["k"] for s in grid.spec.settings] == [1, 2, 10, 25, 50, 100]
    assert grid.spec.seeds == [0, 1, 2]
    names = [trial_name(t) for t in grid.trials()]
    assert names[:2] == ["fixed-k1_seed0", "fixed-k1_seed1"] and len(set(names)) == 18
    smoke = load_sweep(CONFIGS / "rl_fixed_grid.yaml", budget="smoke")
    assert smoke.base["stop"]["iterations"] == 2 and grid.base["stop"]["iterations"] == 20


def test_shipped_tuning_sweeps_load():
    for name in ("part1_tuning_rl", "part1_tuning_sl"):
        sweep = load_sweep(REPO / "sweeps" / f"{name}.yaml")
        assert sweep.spec.seeds == [100, 101, 102]  # never the seeds the study reports
        for t in sweep.trials():
            sweep.experiment(t)


def test_trials_share_one_inductor_cache_under_local_storage(tmp_path, monkeypatch):
    from snnlab.sweep.run import worker_env

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    env = worker_env("offline", str(tmp_path))
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / ".inductor_cache")
    assert env["WANDB_MODE"] == "offline"
    assert "TORCHINDUCTOR_CACHE_DIR" not in worker_env("off", "s3://bucket/runs")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/mine")  # the user's choice wins
    assert worker_env("off", str(tmp_path))["TORCHINDUCTOR_CACHE_DIR"] == "/mine"


def test_diagnostics_for_a_subset_of_seeds(tmp_path):
    text = TINY_SL_SWEEP + "diagnostics: {seeds: [1], every: 3}\n"
    sweep = load_sweep(write_yaml(tmp_path / "s.yaml", text))
    every = {t["seed"]: sweep.experiment(t).diagnostics.every for t in sweep.trials()}
    assert every == {0: 0, 1: 3}
    bad = write_yaml(tmp_path / "b.yaml", TINY_SL_SWEEP + "diagnostics: {seeds: [5], every: 3}\n")
    with pytest.raises(Exception, match=r"diagnostics.seeds: \[5\] not among the sweep's seeds"):
        load_sweep(bad)


def test_steps_to_threshold_by_hand():
    steps = [1, 2, 3, 4, 5]
    values = [0, 100, 200, 200, 300]
    # trailing means (window 2, min_periods 1): 0, 50, 150, 200, 250
    assert steps_to_threshold(steps, values, 150, 2) == 3
    assert steps_to_threshold(steps, values, 150, 1) == 3
    # window 3: 0, 50, 100, 166.7, 233.3
    assert steps_to_threshold(steps, values, 150, 3) == 4
    assert math.isnan(steps_to_threshold(steps, values, 400, 1))
    assert steps_to_threshold(steps, [5, 4, 1, 0, 0], 1, 1, mode="min") == 3


def _fake_trial(root, name, setting, seed, scores, error=False):
    d = root / name
    d.mkdir(parents=True)
    (d / "params.json").write_text(json.dumps({"setting": {"label": setting}, "seed": seed, "params": {}}))
    rows = [{"training_iteration": i + 1, "score": s, "slope": 2.0} for i, s in enumerate(scores)]
    rows.insert(2, dict(rows[1], score=-999))  # a duplicated step from a resume: the later row wins
    rows[1], rows[2] = rows[2], rows[1]
    (d / "result.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    if error:
        (d / "error.txt").write_text("Traceback...\nRuntimeError: boom")


def test_summary_numbers_by_hand(tmp_path):
    spec = {"name": "fake", "metric": {"name": "score", "mode": "max"}, "threshold": 150,
            "smoothing": 1, "steps": 4, "settings": [{"label": "b"}, {"label": "a"}]}
    (tmp_path / SPEC_FILE).write_text(yaml.safe_dump(spec))
    _fake_trial(tmp_path, "a0", "a", 0, [100, 200, 300, 400])
    _fake_trial(tmp_path, "a1", "a", 1, [0, 100, 100, 200])
    _fake_trial(tmp_path, "b0", "b", 0, [10, 20, 30, 40])
    _fake_trial(tmp_path, "b1", "b", 1, [10, 20], error=True)
    df = summarize(tmp_path)
    assert list(df["setting"]) == ["b", "a"]  # the spec's order
    a = df[df.setting == "a"].iloc[0]
    assert a.seeds_finished == 2 and a.seeds_failed == 0
    assert a.best_mean == pytest.approx(300) and a.best_std == pytest.approx(np.std([400, 200], ddof=1))
    assert a.final_mean == pytest.approx(300)
    assert a.auc_mean == pytest.approx((250 + 100) / 2)
    assert a.steps_to_threshold_mean == pytest.approx((2 + 4) / 2) and a.reached == "2/2"
    # mean curve: 50, 150, 200, 300 -> reaches 150 at step 2
    assert a.steps_to_threshold_mean_curve == 2
    b = df[df.setting == "b"].iloc[0]
    assert b.seeds_finished == 1 and b.seeds_failed == 1 and b.reached == "0/1"
    assert math.isnan(b.steps_to_threshold_mean)


def test_smoke_sweep_end_to_end(tiny_sweep, capsys):
    """A real (tiny) supervised sweep: Tune trials, live table, summary, W&B offline, Tune-readable."""
    rc, out, exp = tiny_sweep["rc"], tiny_sweep["out"], tiny_sweep["exp"]
    assert rc == 0, tiny_sweep["err"][-3000:]
    names = sorted(p.name for p in exp.iterdir() if (p / "params.json").exists())
    assert names == ["fixed-k2_seed0", "fixed-k2_seed1", "interval_seed0", "interval_seed1"]
    assert "Trial name" in out and "setting" in out and "slope" in out  # the live table
    # every trial: 3 epochs, score + slope each step; interval's slope sequence 1, 10, 100
    for name in names:
        rows = [json.loads(line) for line in (exp / name / "result.json").read_text().splitlines()]
        assert [r["training_iteration"] for r in rows] == [1, 2, 3]
        assert all(0 <= r["score"] <= 1 for r in rows)
        if name.startswith("interval"):
            assert [r["slope"] for r in rows] == pytest.approx([1, 10, 100])
        assert list((exp / name).glob("events.out.tfevents.*")) and (exp / name / "progress.csv").exists()
    # every trial's W&B offline run is in its folder, complete: one history row per result.json
    # line with the same score at the same step, and the run's exit record (it was finished)
    from snnlab.wandb_utils import offline_history, read_offline_run

    for name in names:
        runs = list((exp / name).glob("wandb/offline-run-*/run-*.wandb"))
        assert len(runs) == 1, (name, runs)
        rows = [json.loads(line) for line in (exp / name / "result.json").read_text().splitlines()]
        history = offline_history(runs[0])
        assert [h["training_iteration"] for h in history] == [r["training_iteration"] for r in rows]
        assert [h["score"] for h in history] == pytest.approx([r["score"] for r in rows])
        kinds = [r.WhichOneof("record_type") for r in read_offline_run(runs[0])]
        assert kinds[-1] == "exit" and "run" in kinds, (name, kinds[-5:])
        # and the trial's energy estimate (digits 64 -> LIF 16 -> 10, T=8), per row and final
        energy = assert_wandb_energy(exp, name, runs[0])
        assert energy["energy/ann_macs"] == 64 * 16 + 16 * 10 and energy["energy/snn_macs"] == 64 * 16
        assert energy["energy/network"] == "64-16-10, T=8" and energy["energy/synops"] > 0
    # the printed/saved table agrees with numbers recomputed from the trial files
    df = summarize(exp)
    for setting in ("fixed-k2", "interval"):
        finals = [json.loads((exp / f"{setting}_seed{s}" / "result.json").read_text().splitlines()[-1])["score"]
                  for s in (0, 1)]
        row = df[df.setting == setting].iloc[0]
        assert row.final_mean == pytest.approx(np.mean(finals))
        assert row.seeds_finished == 2
    md = (exp / "summary.md").read_text()
    assert "| fixed-k2 | 2 |" in md and md.split("\n", 2)[2] in out
    assert (exp / "summary.csv").is_file()
    # Ray's own tools read the result directory
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(exp))
    assert len(analysis.trials) == 4
    # --summary on the folder rewrites the same table
    rc, out2, _ = run_cli(capsys, "sweep", "--summary", str(exp))
    assert rc == 0 and md.split("\n", 2)[2] in out2
    # running again into the same folder without --resume refuses, and loses nothing
    rc, _, err = run_cli(capsys, "sweep", str(tiny_sweep["file"]), "--storage", str(tiny_sweep["storage"]))
    assert rc == 2 and "already holds this sweep's results" in err
    assert (exp / "summary.md").read_text() == md


def assert_wandb_energy(exp, name, run_file) -> dict:
    """The trial's W&B run carries the energy estimate the summary's functions compute from its
    result.json rows: each history row the estimate from the rows so far, the run summary the
    final one (the trial's last logged spike rates). Returns the run summary's energy keys."""
    import dataclasses

    from snnlab.sweep.summary import (energy_values, load_curves, network_label, network_shape,
                                      read_spec, trial_rates)
    from snnlab.wandb_utils import offline_history, offline_summary

    spec = read_spec(exp)
    (curve,) = [c for c in load_curves(exp, spec["metric"]["name"]) if c.name == name]
    shape = network_shape(spec["base"], curve.params)
    final = energy_values(shape, trial_rates(curve))
    assert final is not None and final["synops"] >= 0, name
    summary = offline_summary(run_file)
    got = {k: v for k, v in summary.items() if k.startswith("energy/")}
    assert got == {**{f"energy/{k}": pytest.approx(v, rel=1e-12) for k, v in final.items()},
                   "energy/network": network_label(shape)}, name
    history = offline_history(run_file)
    assert [h["training_iteration"] for h in history] == list(curve.steps)
    for i, h in enumerate(history):
        upto = dataclasses.replace(curve, extra={k: v[:i + 1] for k, v in curve.extra.items()})
        expected = energy_values(shape, trial_rates(upto))
        assert {k: v for k, v in h.items() if k.startswith("energy/")} == (
            {} if expected is None else {f"energy/{k}": pytest.approx(v, rel=1e-12) for k, v in expected.items()})
    return got


@pytest.mark.parametrize("config,rate_key,layers,network", [
    ("sl_bc_quadrotor.yaml", "eval_spike_rate/layer", 2, "18-256-128-4, T=4"),   # BC: the flown episodes
    ("rl_quadrotor_td3.yaml", "spike_rate/layer", 2, "146-256-128-4, T=4"),      # TD3, spiking actor
    ("rl_pendulum.yaml", "spike_rate/layer", 2, "3-64-64-2, T=4"),               # SAC: mean and log-std
    ("rl_quadrotor_td3.yaml:mlp", "spike_rate/layer", 2, None),                  # MLP actor: no estimate
    ("rl_cartpole.yaml", None, 0, None),                                         # no spike rates logged
    ("rl_cartpole.yaml", "spike_rate/layer", 5, None),                           # rates of another shape
])
def test_trial_wandb_run_energy_offline_for_every_kind_of_trial(tmp_path, config, rate_key, layers, network):
    """A trial's W&B run (offline, the real run file) logs energy/... from its rates for BC, TD3
    and SAC trials, prefers the BC's flown-episode rates, and logs nothing (and does not fail)
    without a spiking network, without rates or with rates that do not fit the network."""
    from snnlab.sweep.summary import energy_values, network_shape
    from snnlab.sweep.trainables import start_wandb
    from snnlab.wandb_utils import offline_history, offline_summary, read_offline_run

    name, _, variant = config.partition(":")
    base = yaml.safe_load((CONFIGS / name).read_text())
    params = {"model.actor": "mlp"} if variant == "mlp" else {}
    trial = {"sweep": "u", "base": base, "setting": {"label": "fixed-k2", "slope": {"kind": "fixed", "k": 2}},
             "seed": 0, "params": params, "wandb": {"mode": "offline", "project": "snnlab", "group": "u"}}
    run = start_wandb(trial, tmp_path.name[-30:], None)  # a run id of its own (W&B's service keys by id)
    rows = []
    for step in (1, 2, 3):
        row = {"training_iteration": step, "score": float(step)}
        if rate_key:
            row.update({f"{rate_key}{i}": 0.1 * step + 0.01 * i for i in range(layers)})
            if rate_key == "eval_spike_rate/layer":  # BC: validation rates too, and no flight at step 3
                row.update({f"val_spike_rate/layer{i}": 0.9 for i in range(layers)})
                if step == 3:
                    row.update({f"{rate_key}{i}": float("nan") for i in range(layers)})
        rows.append(row)
        run.log(row)
    run.finish()
    (path,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    # wandb 0.31's finish() can return before its service has written the run file out: wait for
    # the exit record (a sweep's files are read after the trials' processes are done with them)
    deadline = time.time() + 60
    while [r.WhichOneof("record_type") for r in read_offline_run(path)][-1:] != ["exit"]:
        assert time.time() < deadline, "the offline run file was never completed"
        time.sleep(0.1)
    history, summary = offline_history(path), offline_summary(path)
    assert [h["score"] for h in history] == [1.0, 2.0, 3.0]
    energy = {k: v for k, v in summary.items() if k.startswith("energy/")}
    if network is None:
        assert energy == {} and not any(k.startswith("energy/") for h in history for k in h)
        return
    assert energy["energy/network"] == network
    shape = network_shape(base, params)
    steps = (1, 2, 2) if rate_key == "eval_spike_rate/layer" else (1, 2, 3)  # BC: step 3's NaN: 2's stay
    last = [0.1 * steps[-1] + 0.01 * i for i in range(layers)]
    assert energy == {**{f"energy/{k}": pytest.approx(v) for k, v in energy_values(shape, last).items()},
                      "energy/network": network}
    assert [h["energy/rate_layer0"] for h in history] == pytest.approx([0.1 * s for s in steps])
    assert [h["energy/synops"] for h in history] == pytest.approx(
        [energy_values(shape, [0.1 * s + 0.01 * i for i in range(layers)])["synops"] for s in steps])


def test_paired_test_by_hand():
    from snnlab.sweep.summary import paired_test

    t = paired_test([1.0, 2.0, 3.0])
    # 8 sign patterns; only all-plus and all-minus reach |mean| >= 2
    assert t["mean_diff"] == 2.0 and t["p_value"] == pytest.approx(0.25)
    assert 1.0 <= t["ci_low"] <= t["ci_high"] <= 3.0
    assert paired_test([1.0, -1.0])["p_value"] == pytest.approx(1.0)
    six = paired_test([1.0, 2.0, 1.5, 3.0, 2.5, 1.0])
    assert six["p_value"] == pytest.approx(2 / 64)
    assert paired_test([])["n"] == 0


def test_comparison_against_the_steepest_fixed_slope(tmp_path):
    from snnlab.sweep.summary import compare_to_reference, write_summary

    spec = {"name": "cmp", "metric": {"name": "score", "mode": "max"}, "threshold": 150,
            "smoothing": 1, "steps": 4,
            "settings": [{"label": "fixed-k2", "slope": {"kind": "fixed", "k": 2}},
                         {"label": "fixed-k100", "slope": {"kind": "fixed", "k": 100}}]}
    (tmp_path / SPEC_FILE).write_text(yaml.safe_dump(spec))
    for seed, (shallow, steep) in enumerate([([100, 200, 300, 400], [0, 100, 100, 200]),
                                             ([100, 160, 200, 200], [0, 50, 100, 100])]):
        for name, scores in (("fixed-k2", shallow), ("fixed-k100", steep)):
            d = tmp_path / f"{name}_seed{seed}"
            d.mkdir()
            (d / "params.json").write_text(json.dumps({"setting": {"label": name}, "seed": seed,
                                                       "params": {}}))
            (d / "result.json").write_text("\n".join(json.dumps(
                {"training_iteration": i + 1, "score": v}) for i, v in enumerate(scores)))
    df = compare_to_reference(tmp_path)
    (row,) = df.to_dict("records")
    assert row["reference"] == "fixed-k100" and row["paired_seeds"] == 2
    # AUC diffs: (250 - 100) = 150 and (165 - 62.5) = 102.5
    assert row["auc_mean_diff"] == pytest.approx((150 + 102.5) / 2)
    # steps to 150: shallow 2 and 2; steep 4 and never (-> 4 + 1 = 5): diffs -2, -3
    assert row["stt_mean_diff"] == pytest.approx(-2.5)
    _, md = write_summary(tmp_path)
    assert "Against the steepest fixed slope" in md and "| fixed-k2 | 2 |" in md
    assert (tmp_path / "comparison.csv").is_file()


def test_trial_wandb_run_online_path_with_a_mock(monkeypatch, tmp_path):
    """--wandb online: the trial's own process starts its run online, resumable by trial id,
    with the sweep's project/group, the trial name, tags and config (the cloud is mocked)."""
    import wandb

    from snnlab.sweep.run import wandb_entry, worker_env
    from snnlab.sweep.trainables import start_wandb

    calls = {}

    class FakeRun:
        def log(self, row, step):
            calls.setdefault("rows", []).append((step, row))

        def finish(self, exit_code=0):
            calls["exit_code"] = exit_code

    def fake_init(**kw):
        calls["init"] = kw
        return FakeRun()

    monkeypatch.setattr(wandb, "init", fake_init)
    sweep = load_sweep(CONFIGS / "rl_fixed_grid.yaml", budget="smoke")
    assert wandb_entry(sweep, "off") is None
    trial = dict(sweep.trials()[-1], wandb=wandb_entry(sweep, "online"))
    run = start_wandb(trial, "abc_00017", None)
    kw = calls["init"]
    assert kw["mode"] == "online" and kw["resume"] == "allow" and kw["id"] == "abc_00017"
    assert kw["project"] == "snnlab" and kw["group"] == "rl_fixed_grid"
    assert kw["name"] == "fixed-k100_seed2" and "k:100" in kw["tags"] and "seed:2" in kw["tags"]
    assert kw["dir"] == str(tmp_path) and "wandb" not in kw["config"] and kw["config"]["seed"] == 2
    import numpy as np

    run.log({"training_iteration": 3, "score": np.float32(1.5), "done": False, "config": {"a": 1},
             "env_runners": {"episode_return_mean": 2.0, "hist": [1, 2]}, "date": "x"})
    run.finish()
    assert calls["rows"] == [(3, {"training_iteration": 3, "score": 1.5,
                                  "env_runners/episode_return_mean": 2.0})]
    assert calls["exit_code"] == 0
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)  # reaches workers on other nodes
    assert worker_env("online")["WANDB_API_KEY"] == "k" * 40 and "WANDB_MODE" not in worker_env("online")


def test_rl_trials_share_a_reused_actor_each_with_its_own_algorithm_and_wandb_run(ray_session, tmp_path,
                                                                                  capsys):
    """reuse_actors for RL: one process runs trial after trial; each trial still trains with its own
    slope from a fresh Algorithm and writes its own complete W&B offline run into its folder."""
    from snnlab.wandb_utils import offline_history

    path = write_yaml(tmp_path / "rl.yaml", """kind: sweep
name: rlreuse
base:
  kind: rl
  env: CartPole-v1
  algorithm: {name: PPO, train_batch_size: 256, minibatch_size: 64, num_epochs: 1}
  model: {hidden: [16], num_steps: 2, critic_hidden: [16]}
  stop: {iterations: 2}
settings: [{kind: fixed, k: 2}, {kind: fixed, k: 50}]
seeds: [0]
max_concurrent: 1
""")
    rc, _, err = run_cli(capsys, "sweep", str(path), "--storage", str(tmp_path / "runs"), "--verbose", "0")
    assert rc == 0, err[-3000:]
    exp = tmp_path / "runs" / "rlreuse"
    pids, ids = set(), set()
    for name, k in (("fixed-k2_seed0", 2.0), ("fixed-k50_seed0", 50.0)):
        rows = [json.loads(line) for line in (exp / name / "result.json").read_text().splitlines()]
        assert [r["training_iteration"] for r in rows] == [1, 2] and [r["slope"] for r in rows] == [k, k]
        pids.add(rows[0]["pid"])
        (run,) = (exp / name).glob("wandb/offline-run-*/run-*.wandb")
        history = offline_history(run)
        assert [h["score"] for h in history] == pytest.approx([r["score"] for r in rows])
        assert run.parent.name.endswith(rows[0]["trial_id"])  # the trial id is the W&B run id
        energy = assert_wandb_energy(exp, name, run)  # PPO: CartPole 4 -> LIF 16 -> 2
        assert energy["energy/ann_macs"] == 4 * 16 + 16 * 2 and energy["energy/network"] == "4-16-2, T=2"
        ids.add(rows[0]["trial_id"])
    assert len(pids) == 1 and len(ids) == 2  # one reused process, two trials


def test_trial_wandb_run_starts_its_own_service_when_it_inherits_anothers(tmp_path):
    """A trial process that inherited another process's W&B service token (Ray workers inherit
    the environment of whoever started Ray) starts a service of its own: sharing one let a stopped
    PBT member's open run keep its id "in use" for the member's next incarnation (a CI failure:
    "run ID ... is in use"). Here the inherited token points at a service that does not exist, so
    joining it fails; the run must still be written offline."""
    import os
    import subprocess
    import sys

    script = f"""
import os
os.environ["WANDB_SERVICE"] = "3-{os.getpid()}-unix-{tmp_path}/no-such-socket"
from snnlab.wandb_utils import TrialRun
run = TrialRun({{"mode": "offline", "project": "p", "group": "g", "name": "n", "tags": [],
               "id": "t_00001"}}, {{}}, {str(tmp_path)!r})
run.log({{"training_iteration": 1, "score": 0.5}})
run.finish()
print(os.environ["WANDB_SERVICE"].split("-")[1] == str(os.getpid()))
"""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("True")  # its own service, started by itself
    assert list(tmp_path.glob("wandb/offline-run-*t_00001/run-*.wandb"))

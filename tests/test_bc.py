"""Behaviour cloning on the drone: module, eval callback + schedule, CLI run, bad datasets, sweep score."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from snnlab.cli import main
from snnlab.experiment import load_experiment
from snnlab.supervised import BCDataModule, BehaviourCloner, train_supervised
from snnlab.supervised.bc import dataset_spec
from snnlab.quadrotor.bc_data import dataset_path

from .helpers import CONFIGS

# tiny: 4 expert episodes of 100 steps (404 rows), a 16-neuron layer, 2 SNN steps, 4 flights of 100 steps
TINY = ["model.hidden=[16]", "model.num_steps=2", "data.episodes=4", "data.env_config.max_steps=100",
        "data.batch_size=128", "data.eval.episodes=4", "trainer.max_epochs=2", "trainer.log_every_n_steps=1"]


def tiny_cfg(tmp_path, *extra):
    return load_experiment(CONFIGS / "sl_bc_quadrotor.yaml", [
        *TINY, "logging.wandb=off", "trainer.progress_bar=false", f"logging.out_dir={tmp_path / 'runs'}",
        f"data.root={tmp_path / 'data'}", *extra])


def epoch_rows(run_dir, key):
    rows = csv.DictReader(open(Path(run_dir) / "csv" / "metrics.csv"))
    return [(int(r["epoch"]), float(r[key])) for r in rows if r.get(key)]


def test_loss_is_mse_against_the_expert_labels(tmp_path):
    cfg = tiny_cfg(tmp_path)
    dm = BCDataModule(cfg.data, seed=0, progress=False)
    dm.setup()
    assert dm.n_features == 18 and len(dm.dataset) == 4 * 101
    assert dm.num_train_episodes + dm.num_val_episodes == 4 and dm.num_val_episodes >= 1
    obs, act = next(iter(dm.train_dataloader()))
    assert obs.shape == (128, 18) and act.shape == (128, 4)
    # labels are the expert's actions at those observations
    from snnlab.quadrotor.expert import HoverExpert
    from snnlab.quadrotor.vector_env import QuadrotorHoverVector

    expert = HoverExpert(QuadrotorHoverVector(1, **cfg.data.env_config))
    np.testing.assert_allclose(act.numpy(), expert(obs.numpy()), atol=1e-5)
    torch.manual_seed(0)
    module = BehaviourCloner(n_in=18, network=cfg.model.network_kwargs(), slope=25.0)
    pred = module(obs)
    assert pred.shape == (128, 4) and pred.abs().max() <= 1.0
    expected = ((torch.tanh(module.net(obs).out) - act) ** 2).mean()
    assert torch.allclose(module.batch_loss((obs, act)), expected)
    assert torch.allclose(F.mse_loss(pred, act), expected)


def test_eval_metrics_logged_and_adaptive_schedule_follows_eval_return(tmp_path):
    cfg = tiny_cfg(tmp_path, "trainer.max_epochs=3",
                   "slope={kind: adaptive, score_low: 0, score_high: 100, window: 2}")
    assert cfg.score_key == "eval_return"
    res = train_supervised(cfg)
    returns = epoch_rows(res.run_dir, "eval_return")
    assert [e for e, _ in returns] == [0, 1, 2]
    full = epoch_rows(res.run_dir, "eval_full_fraction")
    assert len(full) == 3 and all(0.0 <= f <= 1.0 for _, f in full)
    for layer in (0,):
        rates = epoch_rows(res.run_dir, f"eval_spike_rate/layer{layer}")
        assert len(rates) == 3 and all(0.0 < r < 1.0 for _, r in rates)
    slopes = [k for _, k in epoch_rows(res.run_dir, "slope")]
    assert slopes[0] == 1.0
    # k after epoch 0 from the adaptive formula with window 2: 1 + 99 (0.5 r0 + 0) / 2, r0 = return / 100
    r0 = min(max(returns[0][1] / 100.0, 0.0), 1.0)
    assert 0 < r0 < 1
    assert slopes[1] == pytest.approx(1 + 99 * 0.25 * r0, rel=1e-5)
    assert res.score_name == "eval_return" and res.final_score == pytest.approx(returns[-1][1])
    assert res.final_val_acc is None and res.final_metrics["eval_full_fraction"] == full[-1][1]


def test_flights_every_n_epochs(tmp_path):
    res = train_supervised(tiny_cfg(tmp_path, "trainer.max_epochs=4", "data.eval.every=3"))
    assert [e for e, _ in epoch_rows(res.run_dir, "eval_return")] == [0, 3]  # and the last epoch
    assert len(res.slopes) == 4


def test_snnlab_train_writes_the_run_directory(tmp_path, capsys):
    rc = main(["train", str(CONFIGS / "sl_bc_quadrotor.yaml"), "--no-progress", "--out", str(tmp_path / "runs"),
               *[a for o in TINY for a in ("--set", o)], "--set", "data.root=bcdata"])
    assert rc == 0
    out, err = capsys.readouterr()
    assert "not found; generating 4 expert episodes" in err
    run_dir = tmp_path / "runs" / "sl_bc_quadrotor" / "version_0"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["score_name"] == "eval_return" and result["epochs"] == 2
    assert f"final eval_return: {result['final_score']:.2f}" in out
    assert (run_dir / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "checkpoints").glob("best-*.ckpt"))
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert list(run_dir.glob("wandb/offline-run-*/run-*.wandb")), "no W&B offline run files"
    assert len(epoch_rows(run_dir, "val_loss")) == 2 and len(epoch_rows(run_dir, "eval_return")) == 2
    assert len(list((tmp_path / "bcdata").glob("bc_hover_*.npz"))) == 1


def _train(tmp_path, *extra):
    return main(["train", str(CONFIGS / "sl_bc_quadrotor.yaml"), "--no-progress", "--wandb", "off",
                 "--out", str(tmp_path / "runs"), *[a for o in [*TINY, *extra] for a in ("--set", o)],
                 "--set", f"data.root={tmp_path / 'data'}"])


def test_bad_dataset_files_exit_2_with_one_line(tmp_path, capsys):
    cfg = tiny_cfg(tmp_path)
    path = dataset_path(dataset_spec(cfg.data), cfg.data.root)
    # missing, with generation off
    assert _train(tmp_path, "data.generate=false") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "BC dataset not found" in err and str(path) in err
    # corrupt
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 not a zip")
    assert _train(tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("snnlab: error:")
    assert "not a readable BC dataset" in err and "data.regenerate: true" in err
    # made for another reward preset (a file copied under this config's name)
    other = tiny_cfg(tmp_path, "data.env_config.reward=l2f")
    BCDataModule(other.data, progress=False)
    dataset_path(dataset_spec(other.data), other.data.root).replace(path)
    capsys.readouterr()
    assert _train(tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "stored dataset key differs" in err and "l2f" in err
    # ... or rebuilt, saying so
    assert _train(tmp_path, "data.regenerate=true", "trainer.max_epochs=1") == 0
    assert "regenerating" in capsys.readouterr().err


def test_sweep_trials_report_eval_return_as_score(ray_session, tmp_path, capsys):
    sweep = tmp_path / "bc.yaml"
    sweep.write_text(f"""kind: sweep
name: tinybc
base: {CONFIGS / 'sl_bc_quadrotor.yaml'}
set: {{{', '.join(o.replace('=', ': ', 1) for o in TINY)}, data.root: bcdata}}
settings:
  - {{kind: adaptive, score_low: 0, score_high: 100, window: 2}}
seeds: [0]
""")
    rc = main(["sweep", str(sweep), "--storage", str(tmp_path / "runs"), "--verbose", "0", "--wandb", "off"])
    assert rc == 0, capsys.readouterr()
    (trial,) = [p for p in (tmp_path / "runs" / "tinybc").iterdir() if (p / "params.json").exists()]
    rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert r["score"] == r["eval_return"] and 0 <= r["eval_full_fraction"] <= 1
    assert rows[1]["slope"] == pytest.approx(1 + 99 * 0.25 * min(max(rows[0]["score"] / 100, 0), 1))
    assert list((tmp_path / "bcdata").glob("bc_hover_*.npz"))  # where `snnlab sweep` ran, not in the trial


def test_shipped_bc_sweep_loads_with_every_budget():
    from snnlab.sweep.spec import load_sweep

    for budget in (None, "smoke"):
        sweep = load_sweep(CONFIGS / "sl_bc_schedules.yaml", budget=budget)
        trials = sweep.trials()
        assert len(trials) == 8 * 3
        for t in trials:
            cfg = sweep.experiment(t)
            assert cfg.score_key == "eval_return" and Path(cfg.data.root).is_absolute()
    smoke = load_sweep(CONFIGS / "sl_bc_schedules.yaml", budget="smoke").base
    assert smoke["trainer"]["max_epochs"] == 2 and smoke["data"]["limit"] == 2004
    ks = [s["slope"].get("k") for s in load_sweep(CONFIGS / "sl_bc_schedules.yaml").spec.settings]
    assert ks[:6] == [1, 2, 10, 25, 50, 100]


def test_data_limit_keeps_whole_episodes(tmp_path):
    from snnlab.supervised.bc import limit_episodes

    ds = BCDataModule(tiny_cfg(tmp_path).data, progress=False).dataset  # 4 episodes of 101 rows
    assert limit_episodes(ds, None).num_episodes == 4
    assert limit_episodes(ds, 400).num_episodes == 3  # the built-in smoke budget's data.limit
    assert limit_episodes(ds, 10).num_episodes == 2  # at least two: one for validation

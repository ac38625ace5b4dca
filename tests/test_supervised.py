import csv
import json
from pathlib import Path

import lightning as L
import pytest
import torch

from snnlab.cli import main
from snnlab.experiment import load_experiment
from snnlab.supervised import SlopeScheduleCallback, train_supervised

from .helpers import CONFIGS


def small_cfg(tmp_path, *extra):
    return load_experiment(CONFIGS / "sl_digits.yaml", [
        "model.hidden=[32]", "model.num_steps=4", "trainer.max_epochs=2", "logging.wandb=off",
        "trainer.progress_bar=false", f"logging.out_dir={tmp_path / 'runs'}", *extra])


def read_metrics(run_dir):
    return list(csv.DictReader(open(Path(run_dir) / "csv" / "metrics.csv")))


def epoch_values(rows, key):
    return [float(r[key]) for r in rows if r.get(key)]


def test_default_config_reaches_90_percent_and_writes_every_log(tmp_path, capsys):
    """The shipped config, as a user runs it: >= 90% val accuracy, W&B offline files."""
    rc = main(["train", str(CONFIGS / "sl_digits.yaml"), "--no-progress",
               "--out", str(tmp_path / "runs")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "final val_acc:" in out
    run_dir = tmp_path / "runs" / "sl_digits" / "version_0"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["final_val_acc"] >= 0.90, result
    assert f"{result['final_val_acc']:.4f}" in out
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "checkpoints").glob("best-*.ckpt"))
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert list(run_dir.glob("wandb/offline-run-*/run-*.wandb")), "no W&B offline run files"
    rows = read_metrics(run_dir)
    assert epoch_values(rows, "slope") == [25.0] * 15
    for layer in (0, 1):
        rates = epoch_values(rows, f"val_spike_rate/layer{layer}")
        assert len(rates) == 15 and all(0.01 < r < 0.9 for r in rates)


def test_same_seed_same_metrics(tmp_path):
    a = train_supervised(small_cfg(tmp_path))
    b = train_supervised(small_cfg(tmp_path))
    ra, rb = read_metrics(a.run_dir), read_metrics(b.run_dir)
    assert a.run_dir != b.run_dir
    assert ra == rb
    c = train_supervised(small_cfg(tmp_path, "seed=1"))
    assert read_metrics(c.run_dir) != ra


def test_interval_schedule_applied_each_epoch_and_resumes_from_checkpoint(tmp_path):
    sched = ["slope={kind: interval, k_start: 1, k_end: 100, every: 1, stages: 3}"]
    full = train_supervised(small_cfg(tmp_path, "trainer.max_epochs=4", *sched))
    assert epoch_values(read_metrics(full.run_dir), "slope") == pytest.approx([1, 10, 100, 100])

    half = train_supervised(small_cfg(tmp_path, "trainer.max_epochs=2", *sched))
    ckpt = Path(half.run_dir) / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=False)
    assert float(state["state_dict"]["net.lifs.0.spike.slope"]) == pytest.approx(100.0)
    resumed = train_supervised(small_cfg(tmp_path, "trainer.max_epochs=4", *sched), ckpt_path=str(ckpt))
    slopes = epoch_values(read_metrics(resumed.run_dir), "slope")
    assert slopes == pytest.approx([100, 100])  # epochs 2 and 3, continuing the sequence
    assert resumed.slopes == pytest.approx([1, 10, 100, 100])


def test_adaptive_schedule_follows_validation_accuracy(tmp_path):
    cfg = small_cfg(tmp_path, "trainer.max_epochs=3",
                    "slope={kind: adaptive, score_low: 0, score_high: 1, window: 2}")
    res = train_supervised(cfg)
    rows = read_metrics(res.run_dir)
    accs = epoch_values(rows, "val_acc")
    slopes = epoch_values(rows, "slope")
    assert slopes[0] == 1.0
    # k after epoch 1 from the hand formula with window 2: (0.5 a1 + 0) / 2
    assert slopes[1] == pytest.approx(1 + 99 * 0.25 * accs[0], rel=1e-5)


def test_callback_names_a_missing_monitor(tmp_path):
    from snnlab.schedules import FixedSlope

    cb = SlopeScheduleCallback(FixedSlope(2), monitor="val_f1")
    with pytest.raises(KeyError, match="val_f1"):
        train_supervised(small_cfg(tmp_path, "trainer.max_epochs=1"), callbacks=[cb])


def test_both_tasks_share_one_module_and_keep_their_checkpoint_hparams(tmp_path):
    from snnlab.supervised import BehaviourCloner, SpikingClassifier, SpikingModule

    net = {"hidden": [8], "num_steps": 2}
    clf = SpikingClassifier(n_in=5, n_classes=3, network=net, lr=0.01)
    bc = BehaviourCloner(n_in=5, network=net)
    assert isinstance(clf, SpikingModule) and isinstance(bc, SpikingModule)
    # what checkpoints hold: each class's own constructor arguments, in its order
    assert list(clf.hparams.items()) == [("n_in", 5), ("n_classes", 3), ("network", net), ("lr", 0.01),
                                         ("weight_decay", 0.0), ("slope", 25.0)]
    assert list(bc.hparams.items()) == [("n_in", 5), ("network", net), ("n_out", 4), ("lr", 1e-3),
                                        ("weight_decay", 0.0), ("slope", 25.0)]
    assert clf.net.cfg.n_out == 3 and bc.net.cfg.n_out == 4
    x, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.equal(clf(x), clf.net(x).out)
    assert torch.equal(clf.batch_loss((x, y)), torch.nn.functional.cross_entropy(clf.net(x).out, y))

    res = train_supervised(small_cfg(tmp_path, "trainer.max_epochs=1"))
    ckpt = Path(res.run_dir) / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=False)
    loaded = SpikingClassifier.load_from_checkpoint(ckpt)
    assert dict(loaded.hparams) == state["hyper_parameters"]
    assert sorted(state["hyper_parameters"]) == sorted(clf.hparams)
    assert all(torch.equal(v, state["state_dict"][k]) for k, v in loaded.state_dict().items())


def test_one_trainer_builder_for_runs_and_sweep_trials(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary
    from lightning.pytorch.loggers import CSVLogger

    from snnlab.schedules import FixedSlope
    from snnlab.supervised.train import build_trainer

    cfg = small_cfg(tmp_path, "trainer.max_epochs=3", "trainer.log_every_n_steps=7", "diagnostics.every=5")

    class Extra(L.Callback):
        pass

    slope_cb, extra = SlopeScheduleCallback(FixedSlope(2)), Extra()
    # a sweep trial: no progress bar, summary, logger or Lightning checkpointing
    trial = build_trainer(cfg, slope_cb, [extra], logger=False, progress=False, checkpointing=False,
                          root_dir=tmp_path / "trial")
    assert trial.max_epochs == 3 and trial.log_every_n_steps == 7 and trial.default_root_dir == str(tmp_path / "trial")
    assert trial.loggers == [] and trial.checkpoint_callbacks == [] and trial.progress_bar_callback is None
    assert not any(isinstance(c, ModelSummary) for c in trial.callbacks)
    names = [type(c).__name__ for c in trial.callbacks]
    assert names.index("SlopeScheduleCallback") < names.index("GradientDiagnosticsCallback") < names.index("Extra")
    # snnlab train: loggers, progress bar, its ModelCheckpoint (run last by Lightning)
    ckpt, logger = ModelCheckpoint(dirpath=tmp_path / "ckpt"), CSVLogger(tmp_path, name="csv")
    run = build_trainer(cfg, slope_cb, [ckpt, extra], logger=[logger], progress=True, checkpointing=True,
                        root_dir=tmp_path / "run")
    assert run.loggers == [logger] and run.checkpoint_callbacks == [ckpt] and run.callbacks[-1] is ckpt
    assert run.progress_bar_callback is not None
    assert not any(isinstance(c, ModelSummary) for c in run.callbacks)

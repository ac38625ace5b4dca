import subprocess
import sys

import pytest

from snnlab.cli import main
from snnlab.config import ConfigError, load_experiment

from .helpers import CONFIGS, write_yaml


def err(tmp_path, text, overrides=()):
    path = write_yaml(tmp_path / "exp.yaml", text)
    with pytest.raises(ConfigError) as e:
        load_experiment(path, list(overrides))
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(str(path))
    return msg


def test_shipped_config_is_valid():
    cfg = load_experiment(CONFIGS / "sl_digits.yaml")
    assert cfg.kind == "supervised" and cfg.data.name == "digits"


def test_unknown_key_names_path_and_allowed_keys(tmp_path):
    msg = err(tmp_path, "model:\n  hiden: [3]\n")
    assert "model.hiden: unknown key; allowed: hidden, num_steps" in msg


def test_unknown_key_inside_slope_union(tmp_path):
    msg = err(tmp_path, "slope: {kind: adaptive, windw: 3}\n")
    assert "slope.windw: unknown key; allowed: kind, score_low" in msg


def test_wrong_type(tmp_path):
    msg = err(tmp_path, "model: {num_steps: many}\n")
    assert "model.num_steps:" in msg and "integer" in msg and "'many'" in msg


def test_out_of_range(tmp_path):
    assert "model.neuron.beta: Input should be less than or equal to 1" in err(
        tmp_path, "model: {neuron: {beta: 1.5}}\n")
    assert "slope.k: Input should be greater than 0" in err(tmp_path, "slope: {kind: fixed, k: 0}\n")


def test_schedule_rules_come_from_the_schedule(tmp_path):
    msg = err(tmp_path, "slope: {kind: adaptive, k_min: 50, k_max: 10}\n")
    assert "slope: k_min (50.0) must not exceed k_max (10.0)" in msg


def test_unknown_schedule_kind(tmp_path):
    assert "slope: unknown kind 'cosine'; allowed: fixed, interval, adaptive" in err(
        tmp_path, "slope: {kind: cosine}\n")


def test_unknown_surrogate_and_dataset(tmp_path):
    assert "allowed: fast_sigmoid, sigmoid, atan" in err(tmp_path, "model: {surrogate: relu}\n")
    assert "data.name: Input should be 'digits', 'mnist' or 'fashion_mnist'" in err(
        tmp_path, "data: {name: cifar}\n")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: file not found"):
        load_experiment(tmp_path / "nope.yaml")
    err(tmp_path, "model: [unclosed\n")
    assert "top level must be a mapping" in err(tmp_path, "- a\n- b\n")


def test_overrides(tmp_path):
    path = write_yaml(tmp_path / "exp.yaml", "seed: 1\n")
    cfg = load_experiment(path, ["model.hidden=[32, 16]", "slope.k=4", "logging.wandb=off"])
    assert cfg.model.hidden == [32, 16] and cfg.slope.k == 4 and cfg.logging.wandb == "off"
    assert "model.num_steps" in err(tmp_path, "seed: 1\n", ["model.num_steps=-1"])


def test_cli_bad_config_exits_2_with_one_line(tmp_path, capsys):
    path = write_yaml(tmp_path / "exp.yaml", "model: {hidden: []}\n")
    assert main(["train", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"snnlab: error: {path}: model.hidden:")


def test_cli_subprocess_has_no_traceback(tmp_path):
    path = write_yaml(tmp_path / "exp.yaml", "trainer: {max_epochs: 0}\n")
    p = subprocess.run([sys.executable, "-m", "snnlab.cli", "train", str(path)],
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert "trainer.max_epochs: Input should be greater than 0" in p.stderr


def test_cli_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for opt in ["--set", "--seed", "--max-epochs", "--out", "--wandb", "--no-progress", "--debug"]:
        assert opt in out


def test_cli_online_wandb_without_login_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["train", str(CONFIGS / "sl_digits.yaml"), "--wandb", "online"]) == 2
    assert "not logged in to W&B" in capsys.readouterr().err

import subprocess
import sys

import pytest

from snnlab.cli import main
from snnlab.config import ConfigError
from snnlab.experiment import load_experiment

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


# --- hardening: empty files, non-finite numbers, ranges (issue 16) ----------------------------
@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n# and another\n", "---\n"])
def test_empty_or_comment_only_config_exits_2_with_one_line(tmp_path, capsys, text):
    path = write_yaml(tmp_path / "exp.yaml", text)
    assert main(["train", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0] == f"snnlab: error: {path}: the file is empty (nothing but comments or blank lines); " \
                       f"write the keys it should set"


@pytest.mark.parametrize("text, overrides, expected", [
    # non-finite floats, wherever a float is read
    ("model: {neuron: {threshold: .nan}}\n", [],
     "model.neuron.threshold: Input should be a finite number (got nan; allowed: a finite number > 0)"),
    ("model: {neuron: {beta: .inf}}\n", [],
     "model.neuron.beta: Input should be a finite number (got inf; allowed: a finite number with 0 <= beta <= 1)"),
    ("optim: {lr: -.inf}\n", [], "optim.lr: Input should be a finite number (got -inf; allowed: a finite number > 0)"),
    ("model: {init_gain: .nan}\n", [], "model.init_gain: Input should be a finite number"),
    ("slope: {kind: fixed, k: .inf}\n", [], "slope.k: Input should be a finite number (got inf; allowed: a finite number > 0)"),
    ("slope: {kind: adaptive, score_low: .nan}\n", [],
     "slope.score_low: Input should be a finite number (got nan; allowed: a finite number)"),
    ("slope: {kind: adaptive, score_high: .inf}\n", [], "slope.score_high: Input should be a finite number"),
    ("slope: {kind: adaptive, w_p: .nan}\n", [], "slope.w_p: Input should be a finite number"),
    ("diagnostics: {k_ref: .nan}\n", [], "diagnostics.k_ref: Input should be a finite number"),
    # --set overrides go through the same schema
    ("seed: 1\n", ["optim.lr=.nan"], "optim.lr: Input should be a finite number (got nan; allowed: a finite number > 0)"),
    ("seed: 1\n", ["slope.k=.inf"], "slope.k: Input should be a finite number"),
    # seeds: one shared range (numpy / Lightning / RLlib's offsets)
    ("seed: -1\n", [], "seed: Input should be greater than or equal to 0 (got -1; allowed: an integer with "
                       "0 <= seed <= 2147483647)"),
    ("seed: 4294967296\n", [], "seed: Input should be less than or equal to 2147483647 (got 4294967296; "
                               "allowed: an integer with 0 <= seed <= 2147483647)"),
    ("seed: 1.5\n", [], "seed: Input should be a valid integer"),
    ("seed: 1\n", ["seed=-99999999999"], "seed: Input should be greater than or equal to 0 (got -99999999999; "
                                         "allowed: an integer with 0 <= seed <= 2147483647)"),
    ("data: {name: bc_quadrotor, dataset_seed: -5}\n", [], "data.dataset_seed: Input should be greater than or "
                                                           "equal to 0 (got -5; allowed: an integer with 0 <= dataset_seed"),
    ("data: {name: bc_quadrotor, eval: {seed: 4294967296}}\n", [], "data.eval.seed: Input should be less than or equal "
                                                                   "to 2147483647"),
    # counts and sizes: positive integers
    ("data: {limit: -3}\n", [], "data.limit: Input should be greater than 0 (got -3; allowed: an integer > 0)"),
    ("data: {batch_size: 0}\n", [], "data.batch_size: Input should be greater than 0 (got 0; allowed: an integer > 0)"),
    ("model: {hidden: [16, -1]}\n", [], "model.hidden.1: Input should be greater than 0 (got -1; allowed: an integer > 0)"),
    ("trainer: {max_epochs: 2.5}\n", [], "trainer.max_epochs: Input should be a valid integer"),
    # fractions and probabilities
    ("data: {val_fraction: 1.5}\n", [], "data.val_fraction: Input should be less than 1 (got 1.5; allowed: a finite "
                                        "number with 0 < val_fraction < 1)"),
    ("data: {name: bc_quadrotor, random_action_prob: 1.5}\n", [],
     "data.random_action_prob: Input should be less than or equal to 1 (got 1.5; allowed: a finite number with "
     "0 <= random_action_prob <= 1)"),
    ("data: {name: bc_quadrotor, env_config: {max_steps: .nan}}\n", [],
     "data.env_config: max_steps must be a finite number (got nan)"),
])
def test_bad_numbers_exit_2_with_one_line_naming_key_and_range(tmp_path, capsys, text, overrides, expected):
    msg = err(tmp_path, text, overrides)
    assert expected in msg, msg
    path = tmp_path / "exp.yaml"
    args = ["train", str(path)] + [x for o in overrides for x in ("--set", o)]
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0]


@pytest.mark.parametrize("text, expected", [
    ("seed: -99999999999\n", "seed: Input should be greater than or equal to 0 (got -99999999999; "
                             "allowed: an integer with 0 <= seed <= 2147483647)"),
    ("seed: 2147483648\n", "seed: Input should be less than or equal to 2147483647"),
    ("stop: {target_return: .inf}\n", "stop.target_return: Input should be a finite number (got inf; "
                                      "allowed: a finite number)"),
    ("algorithm: {name: PPO, lr: .nan}\n", "algorithm.lr: Input should be a finite number (got nan; "
                                           "allowed: a finite number > 0)"),
    ("algorithm: {name: PPO, gamma: 1.5}\n", "algorithm.gamma: Input should be less than or equal to 1 (got 1.5; "
                                             "allowed: a finite number with 0 < gamma <= 1)"),
    ("algorithm: {name: TD3, tau: .nan}\n", "algorithm.tau: Input should be a finite number (got nan; "
                                            "allowed: a finite number with 0 < tau <= 1)"),
    ("algorithm: {name: SAC, learning_starts: -1}\n", "algorithm.learning_starts: Input should be greater than or "
                                                      "equal to 0 (got -1; allowed: an integer >= 0)"),
    ("runners: {num_env_runners: -2}\n", "runners.num_env_runners: Input should be greater than or equal to 0"),
    ("evaluation: {episodes: 0}\n", "evaluation.episodes: Input should be greater than 0 (got 0; allowed: an integer > 0)"),
    ("model: {initial_log_std: .nan}\n", "model.initial_log_std: Input should be a finite number"),
    ("env_config: {max_steps: .inf}\n", "env_config: max_steps must be a finite number (got inf)"),
    (None, "the file is empty"),  # None: a file of comments only (`# kind: rl`)
])
def test_bad_rl_numbers_exit_2_before_ray_starts(tmp_path, capsys, monkeypatch, text, expected):
    import snnlab.rl.train as rl_train

    monkeypatch.setattr(rl_train, "ensure_ray", lambda *a, **k: pytest.fail("Ray was started"))
    monkeypatch.chdir(tmp_path)
    path = write_yaml(tmp_path / "rl.yaml", "# kind: rl\n" if text is None else "kind: rl\n" + text)
    assert main(["train", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rl.yaml"]  # nothing written


def test_cli_seed_flag_goes_through_the_schema(tmp_path, capsys):
    path = write_yaml(tmp_path / "exp.yaml", "seed: 1\n")
    assert main(["train", str(path), "--seed", "-1"]) == 2
    assert "seed: Input should be greater than or equal to 0" in capsys.readouterr().err


def test_analyze_gradients_refuses_non_finite_and_bad_seed(tmp_path, capsys):
    from snnlab.config import load_gradient_analysis

    with pytest.raises(ConfigError, match=r"slopes.1: Input should be a finite number \(got inf; allowed: "
                                          r"a finite number > 0\)"):
        load_gradient_analysis(None, ["slopes=[1, .inf]"])
    with pytest.raises(ConfigError, match="seed: Input should be greater than or equal to 0"):
        load_gradient_analysis(None, ["seed=-1"])
    empty = write_yaml(tmp_path / "g.yaml", "# nothing\n")
    assert main(["analyze", "gradients", "--config", str(empty), "--out", str(tmp_path / "out")]) == 2
    assert "the file is empty" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_seed_range_is_what_the_libraries_accept():
    """SEED_MAX plus RLlib's largest per-worker offset (1e6 for evaluation workers, + worker index)
    must stay a seed numpy's legacy seeding accepts (Lightning's seed_everything: the same bound)."""
    import numpy as np
    import torch

    from snnlab.config import SEED_MAX

    for seed in (0, SEED_MAX, SEED_MAX + 1_000_000 + 1024):
        np.random.seed(seed)
        np.random.default_rng(seed)
        torch.manual_seed(seed)
    with pytest.raises(ValueError):
        np.random.seed(-1)

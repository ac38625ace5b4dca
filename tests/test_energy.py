"""snnlab.energy: SynOps, MACs and energy per inference, by hand; the summary's energy columns."""

import json
import math

import pytest
import yaml

from .helpers import CONFIGS
from snnlab.energy import E_AC_PJ, E_MAC_PJ, NetShape, ann_macs, estimate
from snnlab.experiment import load_experiment, validate_experiment
from snnlab.sweep.summary import SPEC_FILE, energy_cells, summarize


def test_constants_are_horowitz_45nm_fp32():
    assert E_MAC_PJ == pytest.approx(3.7 + 0.9) and E_AC_PJ == pytest.approx(0.9)


def test_estimate_by_hand():
    # 4 -> LIF 8 -> LIF 6 -> 2, T = 3, rates 0.5 and 0.25
    shape = NetShape(n_in=4, hidden=(8, 6), n_out=2, num_steps=3)
    e = estimate(shape, [0.5, 0.25])
    assert e.synops_per_layer == pytest.approx([0.5 * 8 * 3 * 6, 0.25 * 6 * 3 * 2])  # 72, 9
    assert e.synops == pytest.approx(81)
    assert e.snn_macs == 32                     # the input current, once per inference
    assert e.ann_macs == ann_macs(shape) == 4 * 8 + 8 * 6 + 6 * 2 == 92
    assert e.snn_pj == pytest.approx(4.6 * 32 + 0.9 * 81)  # 220.1 pJ
    assert e.ann_pj == pytest.approx(4.6 * 92)              # 423.2 pJ
    assert e.ratio == pytest.approx(220.1 / 423.2)
    silent = estimate(shape, [0.0, 0.0])
    assert silent.synops == 0 and silent.snn_pj == pytest.approx(4.6 * 32)
    with pytest.raises(ValueError, match="2 LIF layers"):
        estimate(shape, [0.1])


def test_shapes_of_the_shipped_configs():
    def shape(name):
        return load_experiment(CONFIGS / name).network_shape()

    td3 = shape("rl_quadrotor_td3.yaml")
    assert td3 == NetShape(18 + 32 * 4, (256, 128), 4, 4)  # the action history is read too
    assert ann_macs(td3) == 146 * 256 + 256 * 128 + 128 * 4 == 70656
    assert shape("sl_bc_quadrotor.yaml") == NetShape(18, (256, 128), 4, 4)
    assert shape("sl_digits.yaml") == NetShape(64, (128, 128), 10, 8)
    assert shape("rl_cartpole.yaml") == NetShape(4, (64, 64, 64), 2, 4)   # discrete: one logit per action
    assert shape("rl_pendulum.yaml") == NetShape(3, (64, 64), 2, 4)       # SAC: mean and log-std
    assert shape("rl_quadrotor.yaml") == NetShape(18, (64, 64), 4, 4)     # PPO: the mean (log-std a parameter)
    mlp = yaml.safe_load((CONFIGS / "rl_quadrotor_td3.yaml").read_text())
    mlp["model"]["actor"] = "mlp"
    assert validate_experiment(mlp, "test").network_shape() is None


def test_shapes_use_each_worlds_own_defaults():
    """No guessed sizes: an RL config without model sizes gets RL's defaults (64-64, T=4), a
    supervised one the supervised defaults (128-128, T=8)."""
    rl = validate_experiment({"kind": "rl", "env": "CartPole-v1"}, "test").network_shape()
    assert rl == NetShape(4, (64, 64), 2, 4)
    sl = validate_experiment({"kind": "supervised", "data": {"name": "mnist"}}, "test").network_shape()
    assert sl == NetShape(784, (128, 128), 10, 8)


def test_summary_energy_columns_by_hand(tmp_path):
    base = {"kind": "supervised", "data": {"name": "digits"}, "model": {"hidden": [8, 6], "num_steps": 3}}
    spec = {"name": "fake", "metric": {"name": "score", "mode": "max"}, "steps": 2, "base": base,
            "settings": [{"label": "a"}, {"label": "b"}]}
    (tmp_path / SPEC_FILE).write_text(yaml.safe_dump(spec))

    def trial(name, setting, seed, rates):
        d = tmp_path / name
        d.mkdir()
        (d / "params.json").write_text(json.dumps({"setting": {"label": setting}, "seed": seed, "params": {}}))
        rows = [{"training_iteration": 1, "score": 0.1, "val_spike_rate/layer0": 0.9, "val_spike_rate/layer1": 0.9},
                {"training_iteration": 2, "score": 0.2, **{f"val_spike_rate/layer{i}": r for i, r in enumerate(rates)}}]
        (d / "result.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    trial("a0", "a", 0, [0.4, 0.2])
    trial("a1", "a", 1, [0.6, 0.3])  # mean of the last steps: 0.5, 0.25
    trial("b0", "b", 0, [0.0, 0.0])
    df = summarize(tmp_path).set_index("setting")
    a = df.loc["a"]
    # 64 -> 8 -> 6 -> 10, T = 3: SynOps 0.5*8*3*6 + 0.25*6*3*10 = 72 + 45; MACs 64*8 = 512
    assert a.rate_layer0 == pytest.approx(0.5) and a.energy_trials == 2
    assert a.synops_layer0 == pytest.approx(72) and a.synops_layer1 == pytest.approx(45)
    assert a.synops == pytest.approx(117) and a.snn_macs == 512
    assert a.ann_macs == 64 * 8 + 8 * 6 + 6 * 10 == 620
    assert a.snn_energy_nj == pytest.approx((4.6 * 512 + 0.9 * 117) / 1e3)
    assert a.ann_energy_nj == pytest.approx(4.6 * 620 / 1e3)
    assert a.energy_ratio == pytest.approx((4.6 * 512 + 0.9 * 117) / (4.6 * 620))
    assert df.loc["b"].synops == 0 and a.network == "64-8-6-10, T=3"
    head, rows = energy_cells(summarize(tmp_path))
    assert "SynOps" in head and "SNN/ANN" in head and rows[0][0] == "a"
    # no base (or no rates): no energy columns, nothing fails
    spec.pop("base")
    (tmp_path / SPEC_FILE).write_text(yaml.safe_dump(spec))
    assert "synops" not in summarize(tmp_path) and energy_cells(summarize(tmp_path)) is None
    assert not math.isnan(a.synops)

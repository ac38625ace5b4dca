import math

import pandas as pd
import pytest
import torch
from torch import nn

from snnlab.cli import main
from snnlab.diagnostics import Protocol, aggregate, cosine, gradient_stats, paper_protocol
from snnlab.spiking import SpikingMLP


def small_net():
    torch.manual_seed(0)
    return SpikingMLP(n_in=10, n_out=4, hidden=(32, 32, 32), num_steps=3, neuron_init="uniform",
                      weight_init="torch_default")


def test_reference_slope_has_cosine_one_and_readout_is_slope_free():
    net = small_net()
    loss = nn.functional.mse_loss(net(torch.randn(16, 10)).out, torch.randn(16, 4))
    stats = gradient_stats(net, loss, k_ref=100.0, slopes=[1.0, 10.0, 100.0])
    assert all(st["cosine"] == pytest.approx(1.0) for st in stats[100.0])
    readout = [stats[k][-1] for k in (1.0, 10.0, 100.0)]
    assert all(r == readout[0] for r in readout)  # identical magnitude and cosine 1
    assert readout[0]["cosine"] == pytest.approx(1.0)
    assert stats[1.0][0]["magnitude"] > 10 * stats[100.0][0]["magnitude"]
    assert net.slope == 25.0  # the network's slope is restored


def test_gradient_stats_match_separate_forwards():
    net = small_net()
    x, y = torch.randn(8, 10), torch.randn(8, 4)
    loss = nn.functional.mse_loss(net(x).out, y)
    stats = gradient_stats(net, loss, k_ref=50.0, slopes=[2.0])
    grads = {}
    for k in (2.0, 50.0):
        net.set_slope(k)
        net.zero_grad()
        nn.functional.mse_loss(net(x).out, y).backward()
        grads[k] = net.linears[0].weight.grad.clone()
    assert stats[2.0][0]["magnitude"] == pytest.approx(float(grads[2.0].abs().mean()), rel=1e-5)
    assert stats[2.0][0]["cosine"] == pytest.approx(cosine(grads[2.0], grads[50.0]), rel=1e-5)


def test_zero_gradient_counts_as_cosine_zero():
    assert cosine(torch.zeros(3), torch.ones(3)) == 0.0
    assert cosine(torch.ones(3), torch.ones(3)) == pytest.approx(1.0)


def test_paper_protocol_shallow_slope_decorrelates_in_the_first_layer():
    rows = paper_protocol(Protocol(samples=48, networks=2))
    agg = {(r["k"], r["layer"]): r for r in aggregate(rows)}
    assert agg[(1.0, 0)]["cosine"] < agg[(50.0, 0)]["cosine"] - 0.3
    assert agg[(1.0, 0)]["cosine"] < 0.2
    # shallow slopes carry orders of magnitude more gradient into the first layer
    assert agg[(1.0, 0)]["magnitude"] > 1e3 * agg[(100.0, 0)]["magnitude"]
    assert all(agg[(k, 4)]["cosine"] == pytest.approx(1.0) for k in (1.0, 10.0, 25.0, 50.0))


def test_analyze_gradients_command_writes_csv_and_figures(tmp_path, capsys):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("samples: 8\nnetworks: 2\nhidden: [16, 16]\n")
    assert main(["analyze", "gradients", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    df = pd.read_csv(out / "gradients.csv")
    assert len(df) == 2 * 8 * 3 * 5  # networks x samples x layers x slopes
    assert set(df.columns) == {"network", "sample", "layer", "k", "magnitude", "cosine"}
    assert (out / "gradients.png").stat().st_size > 10_000 and (out / "gradients.svg").is_file()
    summary = pd.read_csv(out / "gradients_summary.csv")
    assert len(summary) == 15 and not summary.isna().any().any()
    assert "k=1 " in capsys.readouterr().out


def test_analyze_gradients_bad_config(tmp_path, capsys):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("slopes: [1, 10]\nk_ref: 100\n")
    assert main(["analyze", "gradients", "--config", str(cfg)]) == 2
    assert "k_ref (100) must be one of slopes" in capsys.readouterr().err


def test_lightning_gradient_callback_logs_every_layer(tmp_path):
    from snnlab.experiment import load_experiment
    from snnlab.supervised import train_supervised

    from .helpers import CONFIGS

    cfg = load_experiment(CONFIGS / "sl_digits.yaml", [
        "model.hidden=[16, 16]", "trainer.max_epochs=1", "logging.wandb=off",
        "trainer.progress_bar=false", f"logging.out_dir={tmp_path}", "diagnostics.every=5",
        "trainer.log_every_n_steps=1"])
    res = train_supervised(cfg)
    df = pd.read_csv(f"{res.run_dir}/csv/metrics.csv")
    for i in range(3):
        col = df[f"grad/layer{i}/cosine"].dropna()
        assert len(col) >= 4 and all(0 <= v <= 1.0001 for v in col)
        assert df[f"grad/layer{i}/magnitude"].dropna().gt(0).all()
    assert (df["grad/layer2/cosine"].dropna() - 1.0).abs().max() < 1e-5  # the readout does not depend on k
    assert not math.isnan(res.final_val_acc)

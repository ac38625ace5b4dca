"""snnlab's SynOps against NeuroBench's synaptic_operations on the same forward (issue 21, item 5)."""

import sys

import pytest
import torch

from snnlab.energy_check import NEUROBENCH_HINT, crosscheck
from snnlab.spiking import SpikingMLP, SpikingMLPConfig

neurobench = pytest.importorskip("neurobench", reason=f"NeuroBench is optional: {NEUROBENCH_HINT}")


def _net(readout="spikes", seed=0):
    torch.manual_seed(seed)
    return SpikingMLP(SpikingMLPConfig(n_in=6, n_out=3, hidden=(32, 16), num_steps=4, readout=readout,
                                       neuron_init="uniform", learn_beta=True, learn_threshold=True))


def _spikes(net, x):
    """Every LIF layer's spike train of one forward, recorded by hand (hooks on the Linear layers)."""
    seen = {}
    hooks = [lin.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(i, a[0].clone()))
             for i, lin in enumerate([*net.linears, net.readout])]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return seen


def test_hidden_layers_agree_and_the_two_definitional_differences_are_what_they_say():
    net = _net()
    x = torch.randn(50, 6) * 3
    x[:, 0] = 0.0  # one input that is always exactly 0
    c = crosscheck(net, x)
    first, hidden, readout = c.parts
    seen = _spikes(net, x)
    spikes_1 = seen[1]  # LIF 1's spike train, [T*B, 32], the input of linears[1]
    assert set(spikes_1.unique().tolist()) <= {0.0, 1.0} and spikes_1.sum() > 0
    # hidden -> hidden: both are spikes x fan-out, exactly
    assert hidden.neurobench_kind == "AC" and hidden.snnlab_kind == "AC"
    assert hidden.neurobench == pytest.approx(hidden.snnlab, rel=1e-6)
    assert hidden.snnlab == pytest.approx(float(spikes_1.sum()) * 16 / 50, rel=1e-6)
    # the first layer: NeuroBench skips the zero input, snnlab counts all n_in x N_1
    assert first.snnlab == 6 * 32 and first.neurobench == 5 * 32 and first.neurobench_kind == "MAC"
    assert "exactly 0" in first.why
    # the readout: snnlab one AC per spike of the last layer; NeuroBench one MAC per neuron that spiked
    counts = seen[2]  # [B, 16]: spike counts 0..T
    assert counts.max() > 1
    assert readout.snnlab == pytest.approx(float(counts.sum()) * 3 / 50, rel=1e-6)
    assert readout.neurobench == pytest.approx(float((counts > 0).sum()) * 3 / 50, rel=1e-6)
    assert readout.neurobench_kind == "MAC" and readout.neurobench < readout.snnlab
    # the parts are NeuroBench's own metric, split by layer; and snnlab.energy's totals
    m = c.neurobench_metric
    assert m["Effective_ACs"] == pytest.approx(hidden.neurobench)
    assert m["Effective_MACs"] == pytest.approx(first.neurobench + readout.neurobench)
    assert c.snnlab_synops == pytest.approx(hidden.snnlab + readout.snnlab)
    assert c.snnlab_macs == first.snnlab and c.samples == 50


def test_membrane_readout_is_explained_and_bad_observations_are_refused():
    c = crosscheck(_net("membrane"), torch.randn(8, 6))
    assert "membrane" in c.parts[-1].why and c.parts[-1].neurobench_kind == "MAC"
    with pytest.raises(ValueError, match=r"observations must be \[batch, 6\], got \[8, 5\]"):
        crosscheck(_net(), torch.randn(8, 5))


def test_without_neurobench_one_line_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "neurobench", None)
    monkeypatch.setitem(sys.modules, "neurobench.models", None)
    with pytest.raises(ImportError, match="pip install --no-deps neurobench==2.3.0"):
        crosscheck(_net(), torch.randn(4, 6))

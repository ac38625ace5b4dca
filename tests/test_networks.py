import pytest
import torch

from snnlab.spiking import SpikingMLP


@pytest.mark.parametrize("num_steps", [2, 4, 8])
def test_default_init_gives_every_layer_a_healthy_firing_rate(num_steps):
    torch.manual_seed(0)
    net = SpikingMLP(n_in=8, n_out=2, hidden=(64, 64, 64), num_steps=num_steps)
    rates = [float(r) for r in net(torch.randn(256, 8)).rates]
    assert all(0.05 < r < 0.6 for r in rates), rates


def test_torch_default_init_reproduces_the_silent_deep_layer_pitfall():
    torch.manual_seed(0)
    net = SpikingMLP(n_in=8, n_out=2, hidden=(64, 64, 64), num_steps=4, weight_init="torch_default")
    rates = [float(r) for r in net(torch.randn(256, 8)).rates]
    assert rates[-1] < 0.005 < rates[0], rates


@pytest.mark.parametrize("readout", ["spikes", "membrane"])
def test_readout_modes_shape_and_gradient(readout):
    torch.manual_seed(0)
    net = SpikingMLP(n_in=6, n_out=3, hidden=(16, 16), num_steps=5, readout=readout)
    o = net(torch.randn(9, 6))
    assert o.out.shape == (9, 3)
    assert [s.shape for s in o.state] == [(9, 16), (9, 16)]
    o.out.sum().backward()
    assert net.linears[0].weight.grad.abs().sum() > 0


def test_spike_readout_is_linear_in_spike_counts():
    torch.manual_seed(0)
    net = SpikingMLP(n_in=6, n_out=3, hidden=(16,), num_steps=5)
    x = torch.randn(4, 6)
    cur = net.linears[0](x).expand(5, -1, -1)
    spikes, _ = net.lifs[0](cur)
    torch.testing.assert_close(net(x).out, net.readout(spikes.sum(0)))


def test_invalid_network_arguments():
    with pytest.raises(ValueError, match="hidden"):
        SpikingMLP(n_in=2, n_out=2, hidden=())
    with pytest.raises(ValueError, match="num_steps"):
        SpikingMLP(n_in=2, n_out=2, num_steps=0)
    with pytest.raises(ValueError, match="readout"):
        SpikingMLP(n_in=2, n_out=2, readout="rate")
    with pytest.raises(ValueError, match="slope"):
        SpikingMLP(n_in=2, n_out=2, slope=0)
    net = SpikingMLP(n_in=2, n_out=2, num_steps=3)
    with pytest.raises(ValueError, match="multiple"):
        net.forward_steps(torch.randn(4, 1, 2))

import math

import pytest
import torch

from snnlab.spiking import SURROGATES, SpikingMLP, Surrogate, get_slope, set_slope, spike, surrogate_grad

KS = [0.5, 1.0, 2.0, 10.0, 25.0, 100.0]


def analytic(family, x, k):
    if family == "fast_sigmoid":
        return 1.0 / (1.0 + k * abs(x)) ** 2
    if family == "sigmoid":
        s = 1.0 / (1.0 + math.exp(-k * x))
        return 4.0 * s * (1.0 - s)
    if family == "atan":
        return (k / 2.0) / (1.0 + (math.pi / 2.0 * k * x) ** 2)
    raise AssertionError(family)


@pytest.mark.parametrize("family", sorted(SURROGATES))
@pytest.mark.parametrize("k", KS)
def test_autograd_gradient_equals_hand_computed_surrogate(family, k):
    xs = [-2.0, -0.3, -0.01, 0.0, 0.004, 0.2, 1.5]
    x = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
    out = spike(x, torch.tensor(k, dtype=torch.float64), family)
    upstream = torch.linspace(0.5, 2.0, len(xs), dtype=torch.float64)
    (out * upstream).sum().backward()
    expected = torch.tensor([u * analytic(family, v, k) for u, v in zip(upstream.tolist(), xs)],
                            dtype=torch.float64)
    torch.testing.assert_close(x.grad, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(surrogate_grad(family, x.detach(), k), expected / upstream)


@pytest.mark.parametrize("family", ["fast_sigmoid", "sigmoid"])
def test_width_only_families_peak_at_one(family):
    for k in KS:
        assert surrogate_grad(family, torch.zeros(1), k).item() == pytest.approx(1.0)


def test_atan_slope_changes_height():
    assert surrogate_grad("atan", torch.zeros(1), 10.0).item() == pytest.approx(5.0)


def test_forward_is_exact_heaviside():
    x = torch.tensor([-1.0, -1e-7, 0.0, 1e-7, 3.0])
    assert spike(x, torch.tensor(5.0)).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


def test_network_forward_bit_identical_across_slopes():
    torch.manual_seed(0)
    net = SpikingMLP(n_in=12, n_out=5, hidden=(32, 32, 32), num_steps=6)
    x = torch.randn(40, 12)
    outs = []
    for k in [1.0, 2.0, 25.0, 100.0, 0.3]:
        net.set_slope(k)
        o = net(x)
        outs.append((o.out, [s for s in o.state]))
    for out, state in outs[1:]:
        assert torch.equal(out, outs[0][0])
        assert all(torch.equal(a, b) for a, b in zip(state, outs[0][1]))


def test_set_slope_reaches_every_layer_and_changes_gradients():
    torch.manual_seed(0)
    net = SpikingMLP(n_in=8, n_out=3, hidden=(16, 16, 16), num_steps=4)
    assert set_slope(net, 7.0) == 3
    assert [float(s.slope) for s in net.surrogates()] == [7.0] * 3
    assert net.slope == 7.0
    x = torch.randn(20, 8)

    def grad_at(k):
        net.zero_grad()
        net.set_slope(k)
        net(x).out.square().sum().backward()
        return net.linears[0].weight.grad.clone()

    assert not torch.allclose(grad_at(1.0), grad_at(100.0))


def test_state_dict_round_trips_slope():
    net = SpikingMLP(n_in=4, n_out=2, hidden=(8, 8), slope=3.0)
    net.set_slope(42.0)
    sd = net.state_dict()
    assert any(k.endswith("spike.slope") for k in sd)
    other = SpikingMLP(n_in=4, n_out=2, hidden=(8, 8), slope=1.0)
    other.load_state_dict(sd)
    assert other.slope == 42.0


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_invalid_slope_rejected(bad):
    s = Surrogate("fast_sigmoid", 5.0)
    with pytest.raises(ValueError, match="slope"):
        s.set_slope(bad)
    assert float(s.slope) == 5.0


def test_unknown_family_rejected():
    with pytest.raises(ValueError, match="allowed: fast_sigmoid"):
        Surrogate("relu")


def test_get_slope_detects_disagreement():
    net = SpikingMLP(n_in=4, n_out=2, hidden=(8, 8))
    net.lifs[1].spike.set_slope(3.0)
    with pytest.raises(ValueError, match="disagree"):
        get_slope(net)


def test_one_forward_serves_backward_passes_at_several_slopes():
    torch.manual_seed(0)
    net = SpikingMLP(n_in=6, n_out=2, hidden=(16, 16), num_steps=3)
    x = torch.randn(10, 6)
    w = net.linears[0].weight

    def fresh(k):
        net.set_slope(k)
        return torch.autograd.grad(net(x).out.square().sum(), w)[0]

    expected = {k: fresh(k) for k in (1.0, 100.0)}
    net.set_slope(1.0)
    loss = net(x).out.square().sum()  # one forward
    g1 = torch.autograd.grad(loss, w, retain_graph=True)[0]
    net.set_slope(100.0)
    g100 = torch.autograd.grad(loss, w)[0]
    torch.testing.assert_close(g1, expected[1.0])
    torch.testing.assert_close(g100, expected[100.0])
    assert not torch.allclose(g1, g100)

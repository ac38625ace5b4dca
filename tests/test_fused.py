"""The fused LIF backend against the eager reference: same spikes, same gradients."""

import pytest
import torch

from snnlab.spiking import LIF, SpikingMLP


def run(lif, cur, mem0):
    spikes, mems = lif(cur, mem0)
    # a loss that uses spikes and membranes (membrane readout / carried state)
    loss = (spikes * torch.linspace(0.5, 1.5, spikes.shape[-1])).sum() + 0.3 * mems[-1].square().sum() \
        + 0.1 * mems.sum()
    return spikes, mems, loss


@pytest.mark.parametrize("learn", [False, True])
@pytest.mark.parametrize("init", ["constant", "uniform"])
@pytest.mark.parametrize("family", ["fast_sigmoid", "sigmoid", "atan"])
@pytest.mark.parametrize("carried", [False, True])
def test_fused_equals_eager(learn, init, family, carried):
    torch.manual_seed(0)
    T, B, N = 12, 5, 17
    layers = {}
    for backend in ("eager", "fused"):
        torch.manual_seed(1)
        layers[backend] = LIF(N, beta=0.8, threshold=0.6, learn_beta=learn, learn_threshold=learn,
                              init=init, surrogate=family, slope=7.0, backend=backend)
    cur = torch.randn(T, B, N, dtype=torch.float64) * 0.7
    mem0 = (torch.rand(B, N, dtype=torch.float64) if carried else torch.zeros(B, N, dtype=torch.float64))
    res = {}
    for backend, lif in layers.items():
        lif.double()
        c = cur.clone().requires_grad_()
        m0 = mem0.clone().requires_grad_(carried)
        spikes, mems, loss = run(lif, c, m0)
        loss.backward()
        res[backend] = (spikes, mems, c.grad, m0.grad if carried else None,
                        [p.grad for p in lif.parameters()])
    e, f = res["eager"], res["fused"]
    assert torch.equal(e[0], f[0]) and e[0].sum() > 0
    torch.testing.assert_close(e[1], f[1])
    torch.testing.assert_close(e[2], f[2])
    if carried:
        torch.testing.assert_close(e[3], f[3])
    assert len(e[4]) == len(f[4]) == (2 if learn else 0)
    for a, b in zip(e[4], f[4]):
        torch.testing.assert_close(a, b)


def test_fused_network_matches_eager_network_and_slope_changes_gradients_only():
    grads, outs = {}, {}
    x = torch.randn(32, 8)
    for backend in ("eager", "fused"):
        torch.manual_seed(0)
        net = SpikingMLP(n_in=8, n_out=3, hidden=(32, 32, 32), num_steps=6, backend=backend)
        for k in (1.0, 100.0):
            net.set_slope(k)
            net.zero_grad()
            out = net(x).out
            out.square().sum().backward()
            outs[backend, k] = out.detach()
            grads[backend, k] = [p.grad.clone() for p in net.parameters()]
    for k in (1.0, 100.0):
        assert torch.equal(outs["eager", k], outs["fused", k])
        for a, b in zip(grads["eager", k], grads["fused", k]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert torch.equal(outs["fused", 1.0], outs["fused", 100.0])
    assert not torch.allclose(grads["fused", 1.0][0], grads["fused", 100.0][0])


def test_fused_is_the_default_and_eager_selectable():
    assert SpikingMLP(n_in=2, n_out=2).lifs[0].backend == "cpp"
    assert SpikingMLP(n_in=2, n_out=2, backend="eager").lifs[0].backend == "eager"
    with pytest.raises(ValueError, match="backend"):
        LIF(3, backend="jit")

"""The LIF layer against snntorch.Leaky (the paper's reference neuron)."""

import pytest
import torch
from torch import nn

from snnlab.spiking import LIF, SpikingMLP

snn = pytest.importorskip("snntorch")
from snntorch import surrogate as snn_surrogate  # noqa: E402


def _snntorch_run(linears, beta, threshold, k, x, T, learn=False):
    """Step-by-step snntorch network with the given Linears (shared weights)."""
    lifs = [snn.Leaky(beta=beta, threshold=threshold, spike_grad=snn_surrogate.fast_sigmoid(slope=k),
                      learn_beta=learn, learn_threshold=learn, reset_mechanism="subtract")
            for _ in linears[:-1]]
    mems = [lif.init_leaky() for lif in lifs]
    counts = 0
    all_spikes = [[] for _ in lifs]
    for _ in range(T):
        h = x
        for i, lif in enumerate(lifs):
            spk, mems[i] = lif(linears[i](h), mems[i])
            all_spikes[i].append(spk)
            h = spk
        counts = counts + h
    out = linears[-1](counts)
    return out, [torch.stack(s) for s in all_spikes]


@pytest.mark.parametrize("k", [1.0, 10.0, 100.0])
def test_matches_snntorch_leaky_spikes_and_gradients(k):
    torch.manual_seed(1)
    T = 10
    net = SpikingMLP(n_in=16, n_out=4, hidden=(64, 48, 32), num_steps=T, slope=k,
                     beta=0.85, threshold=1.0)
    x = torch.randn(30, 16)
    y = torch.randn(30, 4)
    # snnlab
    out, *_ = net(x)
    nn.functional.mse_loss(out, y).backward()
    ours = [p.grad.clone() for p in net.parameters()]
    # snntorch with copies of the same Linears
    ref_linears = [nn.Linear(l.in_features, l.out_features) for l in [*net.linears, net.readout]]
    for r, l in zip(ref_linears, [*net.linears, net.readout]):
        r.load_state_dict(l.state_dict())
    ref_out, ref_spikes = _snntorch_run(ref_linears, 0.85, 1.0, k, x, T)
    nn.functional.mse_loss(ref_out, y).backward()
    theirs = [g for r in ref_linears for g in (r.weight.grad, r.bias.grad)]

    # identical spikes in every layer, at every step
    cur = net.linears[0](x).unsqueeze(0).expand(T, -1, -1)
    for i, lif in enumerate(net.lifs):
        spikes, _ = lif(cur)
        assert torch.equal(spikes, ref_spikes[i]), f"layer {i} spikes differ"
        if i + 1 < len(net.lifs):
            cur = net.linears[i + 1](spikes)
    assert ref_spikes[-1].sum() > 0, "reference network is silent; the comparison would be vacuous"
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    # parameters() order: linears (w, b)..., readout (w, b)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert all(g.abs().sum() > 0 for g in ours)


def test_learnable_beta_and_threshold_match_snntorch():
    torch.manual_seed(2)
    T, N = 8, 20
    lif = LIF(N, beta=0.8, threshold=0.7, learn_beta=True, learn_threshold=True, slope=5.0)
    ref = snn.Leaky(beta=torch.full((N,), 0.8), threshold=torch.full((N,), 0.7),
                    spike_grad=snn_surrogate.fast_sigmoid(slope=5.0),
                    learn_beta=True, learn_threshold=True)
    cur = (torch.randn(T, 6, N) * 0.8).requires_grad_()
    spikes, _ = lif(cur)
    spikes.sum().backward()
    g_ours = (cur.grad.clone(), lif.beta.grad.clone(), lif.threshold.grad.clone())
    cur.grad = None
    mem = ref.init_leaky()
    ref_spikes = []
    for t in range(T):
        s, mem = ref(cur[t], mem)
        ref_spikes.append(s)
    torch.stack(ref_spikes).sum().backward()
    assert torch.equal(spikes, torch.stack(ref_spikes))
    torch.testing.assert_close(g_ours[0], cur.grad)
    torch.testing.assert_close(g_ours[1], ref.beta.grad)
    torch.testing.assert_close(g_ours[2], ref.threshold.grad)


def test_beta_is_clamped_to_unit_interval():
    lif = LIF(3, learn_beta=True)
    with torch.no_grad():
        lif.beta.copy_(torch.tensor([-0.5, 0.5, 1.7]))
    cur = torch.tensor([[[1.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]]])  # T=2, B=1
    mem0 = torch.tensor([[0.5, 0.5, 0.5]])
    _, mems = lif(cur, mem0)
    # beta clamped to [0, 0.5, 1]: step 1 -> [0*0.5+1, 0.25, 0.5]; spike in neuron 0 (1 > theta=1? no)
    torch.testing.assert_close(mems[0], torch.tensor([[1.0, 0.25, 0.5]]))
    torch.testing.assert_close(mems[1], torch.tensor([[0.0, 0.125, 0.5]]))


def test_soft_reset_subtracts_threshold_after_a_spike():
    lif = LIF(1, beta=1.0, threshold=1.0)
    cur = torch.tensor([1.5, 0.0, 0.0, 0.8]).view(4, 1, 1)
    spikes, mems = lif(cur)
    assert spikes.flatten().tolist() == [1.0, 0.0, 0.0, 1.0]
    # U: 1.5 (spike) -> 1.5 + 0 - 1 = 0.5 -> 0.5 -> 1.3 (spike)
    torch.testing.assert_close(mems.flatten(), torch.tensor([1.5, 0.5, 0.5, 1.3]))


def test_carried_state_equals_one_long_run():
    torch.manual_seed(3)
    lif = LIF(10, beta=0.9, threshold=0.5)
    cur = torch.randn(12, 4, 10)
    s_all, m_all = lif(cur)
    s1, m1 = lif(cur[:5])
    s2, m2 = lif(cur[5:], m1[-1])
    assert torch.equal(torch.cat([s1, s2]), s_all)
    assert torch.equal(torch.cat([m1, m2]), m_all)


def test_network_state_carries_across_calls():
    torch.manual_seed(4)
    net = SpikingMLP(n_in=5, n_out=2, hidden=(16, 16), num_steps=3)
    seq = torch.randn(4, 7, 5).repeat_interleave(3, dim=0)  # 4 observations x T=3
    full = net.forward_steps(seq)
    assert full.out.shape == (4, 7, 2)
    state = None
    outs = []
    for i in range(4):
        o = net.forward_steps(seq[3 * i: 3 * i + 3], state)
        outs.append(o.out[0])
        state = o.state
    torch.testing.assert_close(torch.stack(outs), full.out)
    # the reset-mode forward equals the first chunk with zero state
    torch.testing.assert_close(net(seq[0]).out, full.out[0])


def test_uniform_init_draws_per_neuron_values():
    torch.manual_seed(0)
    lif = LIF(50, init="uniform")
    assert lif.beta.shape == (50,) and lif.threshold.shape == (50,)
    assert 0 < lif.beta.min() and lif.beta.max() < 1 and lif.threshold.std() > 0.1
    assert not isinstance(lif.beta, nn.Parameter)

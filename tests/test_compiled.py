"""The compiled LIF backend (torch.compile) against the eager reference, run-time slope, fallback."""

import os

import pytest
import torch

from snnlab.spiking import LIF, SpikingMLP

from .helpers import run_python
from .test_fused import run


@pytest.fixture(autouse=True, scope="module")
def _inductor_cache(tmp_path_factory):
    """One Inductor cache for this module's compiles (kept out of the user's /tmp cache)."""
    old = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path_factory.mktemp("inductor"))
    yield
    if old is None:
        os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
    else:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = old


@pytest.mark.parametrize("learn, init, carried", [(False, "constant", True), (True, "uniform", False)])
def test_compiled_equals_eager(learn, init, carried):
    T, B, N = 12, 5, 17
    layers = {}
    for backend in ("eager", "compiled"):
        torch.manual_seed(1)
        layers[backend] = LIF(N, beta=0.8, threshold=0.6, learn_beta=learn, learn_threshold=learn,
                              init=init, slope=7.0, backend=backend)
    torch.manual_seed(0)
    cur = torch.randn(T, B, N) * 0.7
    mem0 = torch.rand(B, N) if carried else torch.zeros(B, N)
    res = {}
    for backend, lif in layers.items():
        c = cur.clone().requires_grad_()
        m0 = mem0.clone().requires_grad_(carried)
        spikes, mems, loss = run(lif, c, m0)
        loss.backward()
        res[backend] = (spikes, mems, c.grad, m0.grad, [p.grad for p in lif.parameters()])
    e, f = res["eager"], res["compiled"]
    assert torch.equal(e[0], f[0]) and e[0].sum() > 0  # identical spikes
    torch.testing.assert_close(e[1], f[1])
    torch.testing.assert_close(e[2], f[2], rtol=1e-4, atol=1e-5)
    if carried:
        torch.testing.assert_close(e[3], f[3], rtol=1e-4, atol=1e-5)
    assert len(e[4]) == len(f[4]) == (2 if learn else 0)
    for a, b in zip(e[4], f[4]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_compiled_network_changes_slope_without_recompiling():
    import torch._dynamo

    x = torch.randn(16, 8)
    grads = {}
    for backend in ("fused", "compiled"):
        torch.manual_seed(0)
        net = SpikingMLP(n_in=8, n_out=3, hidden=(24, 24), num_steps=5, backend=backend)
        for k in (1.0, 100.0, 25.0):
            if backend == "compiled" and k != 1.0:
                ctx = torch._dynamo.config.patch(error_on_recompile=True)  # a recompile would raise
            else:
                ctx = torch._dynamo.config.patch({})
            with ctx:
                net.set_slope(k)
                net.zero_grad()
                net(x).out.square().sum().backward()
            grads[backend, k] = [p.grad.clone() for p in net.parameters()]
    for k in (1.0, 100.0, 25.0):
        for a, b in zip(grads["fused", k], grads["compiled", k]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # the slope reached the compiled backward: k=1 and k=100 give different first-layer gradients
    assert not torch.allclose(grads["compiled", 1.0][0], grads["compiled", 100.0][0])


def test_compiled_falls_back_to_fused_with_one_warning_when_compiling_fails(tmp_path):
    code = """
        import warnings, torch, torch._inductor.config as ic
        ic.cpp.cxx = ("/nonexistent/g++",)          # no usable C++ compiler
        from snnlab.spiking import SpikingMLP
        x = torch.randn(4, 6)
        outs = {}
        for backend in ("fused", "compiled"):
            torch.manual_seed(0)
            net = SpikingMLP(n_in=6, n_out=2, hidden=(8,), num_steps=3, backend=backend)
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                out = net(x).out
                out.sum().backward()
                out2 = net(x).out
            outs[backend] = (out.detach(), net.lifs[0].spike.slope, [str(m.message) for m in w])
        assert torch.equal(outs["fused"][0], outs["compiled"][0])
        msgs = [m for m in outs["compiled"][2] if "torch.compile is unavailable" in m]
        assert len(msgs) == 1, outs["compiled"][2]
        print("FALLBACK-OK", msgs[0][:80])
    """
    res = run_python(code, TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "cache"))
    assert "FALLBACK-OK" in res.stdout, res.stderr[-3000:]


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="backend must be one of cpp, fused, compiled, eager"):
        LIF(4, backend="jit")

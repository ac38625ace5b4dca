"""The cpp LIF backend (hand-written C++ kernels) against the eager reference; build cache, fallback."""


import pytest
import torch

from snnlab.spiking import LIF, SpikingMLP, cpp

from .helpers import run_python



def _pair(learn, init, family, dtype=torch.float64, size=17):
    layers = {}
    for backend in ("eager", "cpp"):
        torch.manual_seed(1)
        layers[backend] = LIF(size, beta=0.8, threshold=0.6, learn_beta=learn, learn_threshold=learn,
                              init=init, surrogate=family, slope=7.0, backend=backend).to(dtype)
    return layers


def _grads(lif, cur, mem0, carried, steps=None):
    c = cur.clone().requires_grad_()
    m0 = mem0.clone().requires_grad_(carried)
    spikes, mems = lif(c, m0, steps)
    loss = (spikes * torch.linspace(0.5, 1.5, spikes.shape[-1], dtype=cur.dtype)).sum() \
        + 0.3 * mems[-1].square().sum() + 0.1 * mems.sum() + spikes.sum(0).square().sum()
    loss.backward()
    return spikes, mems, c.grad, m0.grad, [p.grad for p in lif.parameters()], lif.last_rate


def _assert_same(e, f, carried, learn, tol):
    assert torch.equal(e[0], f[0]) and 0 < e[0].sum() < e[0].numel()  # identical spikes, some of each
    assert torch.equal(e[1], f[1])  # identical membranes: same operation order, no FMA
    torch.testing.assert_close(e[2], f[2], **tol)
    if carried:
        torch.testing.assert_close(e[3], f[3], **tol)
    assert len(e[4]) == len(f[4]) == (2 if learn else 0)
    for a, b in zip(e[4], f[4]):
        torch.testing.assert_close(a, b, **tol)
    torch.testing.assert_close(e[5], f[5])


@pytest.mark.parametrize("learn, init", [(False, "constant"), (True, "uniform")])
@pytest.mark.parametrize("family", ["fast_sigmoid", "sigmoid", "atan"])
@pytest.mark.parametrize("carried", [False, True])
@pytest.mark.parametrize("static", [False, True])
def test_cpp_equals_eager(learn, init, family, carried, static):
    T, B, N = 12, 5, 17
    torch.manual_seed(0)
    cur = (torch.randn(B, N) if static else torch.randn(T, B, N)).double() * 0.7 + 0.3
    mem0 = torch.rand(B, N).double() if carried else torch.zeros(B, N).double()
    layers = _pair(learn, init, family)
    e, f = (_grads(lif, cur, mem0, carried, T if static else None) for lif in layers.values())
    _assert_same(e, f, carried, learn, {})


def test_cpp_float32_and_odd_shapes():
    # float32; batch 1 (acting in RL); rows not a multiple of the kernel's block; a layer wider
    # than one block (one row per block); a non-contiguous current
    for T, B, N in [(8, 1, 17), (5, 37, 300), (3, 2, 5000)]:
        torch.manual_seed(0)
        cur = (torch.randn(B, N, T) * 0.7 + 0.3).permute(2, 0, 1)  # [T, B, N], not contiguous
        mem0 = torch.rand(B, N)
        layers = _pair(True, "uniform", "fast_sigmoid", torch.float32, N)
        e, f = (_grads(lif, cur, mem0, True) for lif in layers.values())
        _assert_same(e, f, True, True, dict(rtol=1e-4, atol=1e-4))


def test_cpp_is_deterministic_across_thread_counts():
    torch.manual_seed(0)
    cur = torch.randn(20, 64, 96)
    lif = LIF(96, learn_beta=True, learn_threshold=True, backend="cpp")
    old = torch.get_num_threads()
    res = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            lif.zero_grad()
            res.append(_grads(lif, cur, torch.zeros(64, 96), False))
    finally:
        torch.set_num_threads(old)
    a, b = res
    for x, y in zip(a[:3] + (a[5],), b[:3] + (b[5],)):
        assert torch.equal(x, y)
    for x, y in zip(a[4], b[4]):
        assert torch.equal(x, y)


def test_cpp_network_equals_fused_and_reads_the_slope_at_run_time():
    x = torch.randn(16, 8)
    outs, grads = {}, {}
    for backend in ("fused", "cpp"):
        torch.manual_seed(0)
        net = SpikingMLP(n_in=8, n_out=3, hidden=(24, 24, 24), num_steps=6, backend=backend)
        for k in (1.0, 100.0, 25.0):
            net.set_slope(k)
            net.zero_grad()
            out = net(x)
            out.out.square().sum().backward()
            outs[backend, k] = (out.out.detach(), torch.stack(out.rates))
            grads[backend, k] = [p.grad.clone() for p in net.parameters()]
    for k in (1.0, 100.0, 25.0):
        assert torch.equal(outs["fused", k][0], outs["cpp", k][0])
        torch.testing.assert_close(outs["fused", k][1], outs["cpp", k][1])
        for a, b in zip(grads["fused", k], grads["cpp", k]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(grads["cpp", 1.0][0], grads["cpp", 100.0][0])


def test_cpp_carries_state_over_calls_like_one_long_call():
    torch.manual_seed(0)
    lif = LIF(10, backend="cpp")
    cur = torch.randn(12, 3, 10) + 0.5
    s_all, m_all = lif(cur)
    s1, m1 = lif(cur[:5])
    s2, m2 = lif(cur[5:], m1[-1])
    assert torch.equal(torch.cat([s1, s2]), s_all) and torch.equal(torch.cat([m1, m2]), m_all)


def test_cpp_leaves_other_dtypes_to_the_fused_path():
    torch.manual_seed(0)
    cur = torch.randn(6, 4, 9, dtype=torch.bfloat16)
    out = {b: LIF(9, backend=b).to(torch.bfloat16)(cur) for b in ("fused", "cpp")}
    assert torch.equal(out["fused"][0], out["cpp"][0]) and torch.equal(out["fused"][1], out["cpp"][1])


def test_build_is_cached_and_keyed_by_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("SNNLAB_KERNEL_DIR", str(tmp_path))
    path = cpp.build()
    assert path.parent == tmp_path and path.exists()
    mtime = path.stat().st_mtime_ns
    assert cpp.build() == path and path.stat().st_mtime_ns == mtime  # not rebuilt
    monkeypatch.setenv("CXX", "g++-does-not-exist")
    assert cpp.library_path() != path
    with pytest.raises(RuntimeError, match="g\\+\\+-does-not-exist.*not found"):
        cpp.build()
    monkeypatch.setenv("CXX", "false")  # a compiler that fails without a word
    with pytest.raises(RuntimeError, match="false could not build lif_kernel.cpp: exit status 1"):
        cpp.build()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no half-written files


def test_cpp_falls_back_to_fused_with_one_warning_without_a_compiler(tmp_path):
    code = """
        import warnings, torch
        from snnlab.spiking import SpikingMLP
        x = torch.randn(4, 6)
        outs = {}
        for backend in ("fused", "cpp"):
            torch.manual_seed(0)
            net = SpikingMLP(n_in=6, n_out=2, hidden=(8,), num_steps=3, backend=backend)
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                out = net(x)
                out.out.sum().backward()
                net(x)
            outs[backend] = (out.out.detach(), out.rates, [str(m.message) for m in w])
        assert torch.equal(outs["fused"][0], outs["cpp"][0]) and outs["fused"][1] == outs["cpp"][1]
        msgs = [m for m in outs["cpp"][2] if "cpp LIF kernel is unavailable" in m]
        assert len(msgs) == 1, outs["cpp"][2]
        print("FALLBACK-OK", msgs[0])
    """
    res = run_python(code, timeout=300, CXX="/nonexistent/g++", SNNLAB_KERNEL_DIR=str(tmp_path))
    assert "FALLBACK-OK" in res.stdout, res.stderr[-3000:]
    assert "/nonexistent/g++" in res.stdout


@pytest.mark.parametrize("static", [False, True])
def test_forward_counts_equals_summed_spike_train(static):
    """The spike-count readout path (the cpp backend never writes the train) vs eager's sum over T."""
    T, B, N = 9, 6, 13
    torch.manual_seed(0)
    cur = (torch.randn(B, N) if static else torch.randn(T, B, N)).double() + 0.4
    mem0 = torch.rand(B, N).double()
    w = torch.linspace(-1, 2, N, dtype=torch.float64)
    res = {}
    for backend, lif in _pair(True, "uniform", "atan", size=N).items():
        c, m0 = cur.clone().requires_grad_(), mem0.clone().requires_grad_()
        if backend == "eager":
            spikes, mems = lif(c, m0, T if static else None)
            counts = spikes.sum(0)
        else:
            counts, mems = lif.forward_counts(c, m0, T if static else None)
        ((counts * w).square().sum() + mems[-1].sum()).backward()
        res[backend] = (counts, mems, c.grad, m0.grad, [p.grad for p in lif.parameters()], lif.last_rate)
    e, f = res["eager"], res["cpp"]
    assert torch.equal(e[0], f[0]) and torch.equal(e[1], f[1]) and e[0].sum() > 0
    for a, b in zip(e[2:4] + tuple(e[4]) + (e[5],), f[2:4] + tuple(f[4]) + (f[5],)):
        torch.testing.assert_close(a, b)


# --- Linear layers fed by spikes: the sparse kernel (spike_matmul="sparse", issue #20) ----------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(64, 256, 128), (37, 21, 5), (50, 40, 130), (8, 16, 300)])
def test_spike_linear_equals_linear(dtype, shape):
    M, K, N = shape
    g = torch.Generator().manual_seed(M + K + N)
    x = (torch.rand(M, K, generator=g) < 0.2).to(dtype)
    x[0] = 0  # a row without spikes: the bias alone
    w = torch.randn(N, K, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(N, generator=g, dtype=dtype, requires_grad=True)
    out_grad = torch.randn(M, N, generator=g, dtype=dtype)
    grads = {}
    for name, fn in (("dense", torch.nn.functional.linear), ("sparse", cpp.spike_linear)):
        xi = x.clone().requires_grad_()
        w.grad = b.grad = None
        out = fn(xi, w, b)
        out.backward(out_grad)
        grads[name] = (out.detach(), xi.grad, w.grad.clone(), b.grad.clone())
    d, s = grads["dense"], grads["sparse"]
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(s[0], d[0], **tol)  # the same sums in another order
    torch.testing.assert_close(s[2], d[2], **tol)
    assert torch.equal(s[1], d[1]) and torch.equal(s[3], d[3])  # dL/dx and dL/db: torch's own ops
    assert torch.equal(s[0][0], b.detach().expand(N))


def test_spike_linear_takes_any_values_and_threads_agree():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 48, generator=g) * (torch.rand(96, 48, generator=g) < 0.3)
    w, b = torch.randn(20, 48, generator=g), torch.randn(20, generator=g)
    torch.testing.assert_close(cpp.spike_linear(x, w, b), torch.nn.functional.linear(x, w, b))
    torch.testing.assert_close(cpp.spike_linear(x, w), torch.nn.functional.linear(x, w))
    outs = []
    for threads in (1, 2):
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            wg = w.clone().requires_grad_()
            out = cpp.spike_linear(x, wg, b)
            out.square().sum().backward()
            outs.append((out.detach(), wg.grad))
        finally:
            torch.set_num_threads(old)
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_sparse_spike_matmul_network_matches_dense():
    x = torch.randn(32, 10)
    res = {}
    for mode in ("dense", "sparse"):
        torch.manual_seed(0)
        net = SpikingMLP(n_in=10, n_out=3, hidden=(64, 48, 32), num_steps=4, spike_matmul=mode,
                         learn_beta=True, learn_threshold=True, neuron_init="uniform")
        out = net(x)
        out.out.square().sum().backward()
        res[mode] = (out.out.detach(), [p.grad.clone() for p in net.parameters()])
    torch.testing.assert_close(res["sparse"][0], res["dense"][0], rtol=1e-5, atol=1e-5)
    for a, b in zip(res["sparse"][1], res["dense"][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="spike_matmul"):
        SpikingMLP(n_in=2, n_out=1, spike_matmul="csr")

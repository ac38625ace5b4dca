"""The ``cpp`` LIF backend: each of the layer's two time loops as one hand-written C++ kernel.

The fused backend (:mod:`snnlab.spiking.fused`) already runs a whole layer as one autograd
node, but its loops are still ~5 tensor ops per time step, each a full pass over a [B, N]
slice; ``torch.compile`` (the ``compiled`` backend) fuses them only partly (Inductor keeps
dozens of intermediate buffers per loop). Here every loop is one pass: each block of rows
runs all T steps while it stays in cache, spread over torch's OpenMP threads.

- Same equations and the same operation order as the eager path (built without fused
  multiply-add): identical spikes, allclose gradients (tested).
- A static input (``LIF(current [B, N], steps=T)``) is read at every step without being copied
  over T, and its gradient is summed over T inside the backward kernel.
- The slope is an argument of every backward call: changing it never rebuilds anything.
- The kernel (``lif_kernel.cpp``) is built on first use with the system's C++
  compiler (``$CXX``, else ``c++``; about 3 s on 2 cores) into ``$SNNLAB_KERNEL_DIR`` (default
  ``~/.cache/snnlab/kernels``), one file per source, compiler and CPU, written atomically so
  parallel trials can share it. CPU tensors in float32/float64 only; anything else (a GPU,
  half precision) runs the fused path, which computes the same thing. If the build fails the
  layer warns once and uses the fused path from then on.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

from .fused import _reduce_like

SOURCE = Path(__file__).with_name("lif_kernel.cpp")
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fopenmp", "-std=c++17", "-shared", "-fPIC")
FAMILIES = {"fast_sigmoid": 0, "sigmoid": 1, "atan": 2}
ABI = 4  # snnlab_lif_abi() of lif_kernel.cpp: bumped whenever an entry point's arguments change
_DTYPES = {torch.float32: "f32", torch.float64: "f64"}

_lock = threading.Lock()
_lib: list[ctypes.CDLL] = []
_failed: list[str] = []


def kernel_dir() -> Path:
    env = os.environ.get("SNNLAB_KERNEL_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "snnlab" / "kernels"


def _cpu_signature() -> str:
    """What -march=native depends on: a library built for another CPU must not be loaded."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next((ln for ln in text.splitlines() if ln.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return f"{platform.machine()} {platform.processor()} {flags}"


def _compiler() -> str:
    return os.environ.get("CXX") or "c++"


def library_path() -> Path:
    h = hashlib.sha256()
    for part in (SOURCE.read_bytes(), _compiler().encode(), " ".join(FLAGS).encode(),
                 _cpu_signature().encode()):
        h.update(part)
        h.update(b"\0")
    return kernel_dir() / f"lif_kernel_{h.hexdigest()[:16]}.so"


def build(path: Path | None = None) -> Path:
    """Compile the kernel to ``path`` (default :func:`library_path`) unless it is there already."""
    path = path or library_path()
    if path.exists():
        return path
    cxx = _compiler()
    if shutil.which(cxx) is None:
        raise RuntimeError(f"C++ compiler {cxx!r} not found (set CXX)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        res = subprocess.run([cxx, *FLAGS, str(SOURCE), "-o", tmp], capture_output=True, text=True)
        if res.returncode != 0:
            lines = res.stderr.strip().splitlines() or [f"exit status {res.returncode}"]
            first = next((ln for ln in lines if "error" in ln), lines[-1])
            raise RuntimeError(f"{cxx} could not build {SOURCE.name}: {first.strip()}")
        os.replace(tmp, path)  # atomic: a parallel build of the same file is harmless
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _load() -> ctypes.CDLL | None:
    if _lib:
        return _lib[0]
    if _failed:
        return None
    with _lock:
        if _lib or _failed:
            return _lib[0] if _lib else None
        try:
            try:
                path = build()
            except PermissionError:  # a read-only home (some cluster nodes): build per machine
                path = build(Path(tempfile.gettempdir()) / f"snnlab-kernels-{os.getuid()}"
                             / library_path().name)
            lib = ctypes.CDLL(str(path))
            if lib.snnlab_lif_abi() != ABI:
                raise RuntimeError(f"{path} has the wrong ABI version (want {ABI})")
        except Exception as err:  # noqa: BLE001 - no compiler, a compile error, a bad file: fall back
            _failed.append(f"{type(err).__name__}: {err}".splitlines()[0][:300])
            warnings.warn(f"snnlab: the cpp LIF kernel is unavailable here ({_failed[0]}); the "
                          f"LIF layers use the fused backend instead (same results, slower)",
                          RuntimeWarning, stacklevel=4)
            return None
        i64, ptr, c_int = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
        for d in ("f32", "f64"):
            getattr(lib, f"snnlab_lif_forward_{d}").argtypes = [
                ptr, i64, ptr, ptr, ptr, ptr, ptr, ptr, i64, i64, i64, c_int]
            getattr(lib, f"snnlab_lif_backward_{d}").argtypes = [
                c_int, ptr, ptr, ptr, ptr, ctypes.c_double, ptr, i64, ptr, i64, ptr, c_int, ptr,
                ptr, ptr, i64, i64, i64, c_int]
            getattr(lib, f"snnlab_spike_linear_forward_{d}").argtypes = [
                ptr, ptr, ptr, ptr, i64, i64, i64, c_int]
            getattr(lib, f"snnlab_spike_linear_grad_weight_{d}").argtypes = [
                ptr, ptr, ptr, i64, i64, i64, c_int]
        _lib.append(lib)
        return lib


def available() -> bool:
    """Whether the kernel is built and loaded (builds it on first call)."""
    return _load() is not None


def supports(t: Tensor) -> bool:
    return t.device.type == "cpu" and t.dtype in _DTYPES


def _slices(x: Tensor) -> tuple[Tensor, int]:
    """``x`` [T, R, N] as (tensor whose [R, N] slices are contiguous, slice stride 0 or R*N)."""
    inner = x.shape[1] * x.shape[2]
    if (x.shape[0] == 1 or x.stride(0) in (0, inner)) and x[0].is_contiguous():
        return x, (0 if x.shape[0] > 1 and x.stride(0) == 0 else inner)
    return x.contiguous(), inner


def _vec(p: Tensor, n: int) -> Tensor:
    return p.detach().expand(n).contiguous()


class CppLIFSequence(torch.autograd.Function):
    """One LIF layer's T steps. Outputs ``(spikes, mems, counts)`` with ``counts`` (spikes per
    neuron over T, [B, N]) not differentiable; with ``keep_spikes=False`` the spike train is never
    written and the outputs are ``(counts, mems)``, ``counts`` differentiable (its gradient
    reaches every step, as a sum over T would pass it)."""

    @staticmethod
    def forward(ctx, current: Tensor, mem0: Tensor, beta: Tensor, theta: Tensor, slope: Tensor,
                family: str, steps: int | None, keep_spikes: bool = True):  # type: ignore[override]
        lib = _lib[0]
        static = steps is not None
        cur = current.detach()
        if static:
            cur, cur_ts, T = cur.contiguous(), 0, steps
        else:
            cur, cur_ts = _slices(cur)
            T = cur.shape[0]
        R, N = mem0.shape
        m0 = mem0.detach().contiguous()
        b, th = _vec(beta, N), _vec(theta, N)
        spikes = cur.new_empty(T, R, N) if keep_spikes else None
        mems = cur.new_empty(T, R, N)
        counts = cur.new_empty(R, N)
        getattr(lib, f"snnlab_lif_forward_{_DTYPES[cur.dtype]}")(
            cur.data_ptr(), cur_ts, m0.data_ptr(), b.data_ptr(), th.data_ptr(),
            None if spikes is None else spikes.data_ptr(), mems.data_ptr(), counts.data_ptr(), T,
            R, N, torch.get_num_threads())
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None, not [T, B, N] zeros
        ctx.save_for_backward(mems, m0, beta, theta)
        ctx.slope, ctx.family, ctx.static, ctx.keep_spikes = slope, family, static, keep_spikes
        if keep_spikes:
            ctx.mark_non_differentiable(counts)
            return spikes, mems, counts
        return counts, mems

    @staticmethod
    def backward(ctx, *grads: Tensor | None):  # type: ignore[override]
        mems, m0, beta, theta = ctx.saved_tensors
        need_cur, need_mem0, need_beta, need_theta = ctx.needs_input_grad[:4]
        T, R, N = mems.shape
        zero = mems.new_zeros(1, R, N).expand(T, R, N)  # a missing gradient: one zero slice
        if ctx.keep_spikes:
            g_spikes, g_mems = grads[0], grads[1]
            gs, gs_ts = (zero, 0) if g_spikes is None else _slices(g_spikes)
        else:  # dL/dS[t] = dL/dcounts for every t: one [B, N] slice, stride 0 over T
            g_counts, g_mems = grads
            gs, gs_ts = (zero, 0) if g_counts is None else (g_counts.contiguous(), 0)
        gm, gm_ts = (zero, 0) if g_mems is None else _slices(g_mems)
        g_cur = mems.new_empty(R, N) if ctx.static else mems.new_empty(T, R, N)
        g_mem0 = mems.new_empty(R, N) if need_mem0 else None
        params = need_beta or need_theta  # the kernel computes both per-element sums or neither
        g_beta = mems.new_empty(R, N) if params else None
        g_theta = mems.new_empty(R, N) if params else None
        b, th = _vec(beta, N), _vec(theta, N)
        getattr(_lib[0], f"snnlab_lif_backward_{_DTYPES[mems.dtype]}")(
            FAMILIES[ctx.family], mems.data_ptr(), m0.data_ptr(), b.data_ptr(), th.data_ptr(),
            float(ctx.slope), gs.data_ptr(), gs_ts, gm.data_ptr(), gm_ts, g_cur.data_ptr(),
            int(ctx.static), None if g_mem0 is None else g_mem0.data_ptr(),
            None if g_beta is None else g_beta.data_ptr(),
            None if g_theta is None else g_theta.data_ptr(), T, R, N, torch.get_num_threads())
        return (g_cur if need_cur else None, g_mem0,
                _reduce_like(g_beta.unsqueeze(0), beta) if need_beta else None,
                _reduce_like(g_theta.unsqueeze(0), theta) if need_theta else None,
                None, None, None, None)


class SpikeLinear(torch.autograd.Function):
    """``x W^T + b`` for a spike train ``x`` [M, K] (mostly zeros): the forward adds, per row, the
    weight columns of the inputs that fired (C++ kernel); the backward computes ``dL/dx = g W``
    as torch does (a dense product: every input needs its gradient) and ``dL/dW = g^T x`` by
    adding each row of ``g`` into the columns of the inputs that fired. The same sums as the
    dense Linear in another order: equal to float32 rounding, not bit for bit."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None):  # type: ignore[override]
        xc = x.detach().contiguous()
        wt = weight.detach().t().contiguous()
        M, K = xc.shape
        N = wt.shape[1]
        out = xc.new_empty(M, N)
        b = None if bias is None else bias.detach().contiguous()
        getattr(_lib[0], f"snnlab_spike_linear_forward_{_DTYPES[xc.dtype]}")(
            xc.data_ptr(), wt.data_ptr(), None if b is None else b.data_ptr(), out.data_ptr(),
            M, K, N, torch.get_num_threads())
        ctx.save_for_backward(xc, weight)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        g = g.contiguous()
        g_x = g.mm(weight) if need_x else None
        g_w = None
        if need_w:
            M, K = x.shape
            N = g.shape[1]
            gwt = g.new_empty(K, N)
            getattr(_lib[0], f"snnlab_spike_linear_grad_weight_{_DTYPES[x.dtype]}")(
                x.data_ptr(), g.data_ptr(), gwt.data_ptr(), M, K, N, torch.get_num_threads())
            g_w = gwt.t().contiguous()
        g_b = g.sum(0) if need_b and ctx.has_bias else None
        return g_x, g_w, g_b


def spike_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)`` for a spike train ``x`` [..., K] by the sparse kernels
    (:class:`SpikeLinear`) where they apply (check :func:`supports` and :func:`available`),
    else ``F.linear``."""
    if not (supports(x) and x.dtype == weight.dtype and available()):
        return torch.nn.functional.linear(x, weight, bias)
    shape = x.shape
    out = SpikeLinear.apply(x.reshape(-1, shape[-1]), weight, bias)
    return out.view(*shape[:-1], out.shape[-1])


def usable(current: Tensor, family: str) -> bool:
    """Whether the kernels run this layer: a CPU float32/float64 current, a family the kernel
    knows, and a kernel that built (the first call builds it; a failure warns once)."""
    return supports(current) and family in FAMILIES and _load() is not None


def lif_sequence_cpp(current: Tensor, mem0: Tensor, beta: Tensor, theta: Tensor, slope: Tensor,
                     family: str, steps: int | None = None,
                     keep_spikes: bool = True) -> tuple[Tensor | None, Tensor, Tensor]:
    """``(spikes, membranes, counts)`` of one LIF layer by the C++ kernels (check :func:`usable`
    first): spikes and membranes [T, B, N], counts = spikes summed over T [B, N].

    ``current`` is [T, B, N], or [B, N] held constant for ``steps`` steps. With
    ``keep_spikes=False`` spikes is None and counts carries the gradient (a spike-count readout);
    otherwise counts is detached (for the spike rate).
    """
    if keep_spikes:
        return CppLIFSequence.apply(current, mem0, beta, theta, slope, family, steps, True)
    counts, mems = CppLIFSequence.apply(current, mem0, beta, theta, slope, family, steps, False)
    return None, mems, counts

"""The compiled LIF path: the fused backend's forward and backward loops built by ``torch.compile``.

Same autograd node as :mod:`snnlab.spiking.fused` (same equations, same saved tensors), but its
two time loops - the forward recurrence and the backward recurrence with the surrogate - are
each compiled by TorchInductor into one kernel instead of ~5 small ops per time step.

- The slope is a tensor *argument* of the compiled backward, never a constant baked into the
  code: changing k at run time (schedules, diagnostics) reuses the compiled kernel.
- Compiling costs tens of seconds on 2 cores, per network shape (at most twice: static for the
  first batch size, dynamic for the rest), dtype and surrogate family. Inductor
  caches what it built on disk (``TORCHINDUCTOR_CACHE_DIR``; :func:`use_cache_dir` points it
  under a results folder), so the next process - another trial of a sweep - loads it instead.
- If compiling fails (no C++ compiler, an unsupported platform), the layer warns once and
  falls back to the fused backend, which computes the same thing.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import Tensor

from .fused import _reduce_like
from .surrogate import SURROGATES


def _forward_loop(current: Tensor, mem0: Tensor, beta: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
    mem = mem0
    s_prev = (mem0 > theta).to(current.dtype)
    mems, spikes = [], []
    for t in range(current.shape[0]):
        mem = beta * mem + current[t] - s_prev * theta  # the eager path's exact op order
        mems.append(mem)
        s_prev = (mem > theta).to(current.dtype)
        spikes.append(s_prev)
    return torch.stack(spikes), torch.stack(mems)


def _backward_loop(mems: Tensor, mem0: Tensor, beta: Tensor, theta: Tensor, slope: Tensor,
                   g_spikes: Tensor, g_mems: Tensor, family: str) -> tuple[Tensor, Tensor, Tensor]:
    """dL/dU[t] for every t, plus the per-element terms of dL/dbeta and dL/dtheta."""
    sg = SURROGATES[family](mems - theta, slope.to(mems.dtype))
    a = g_spikes * sg + g_mems
    g = torch.zeros_like(a[0])
    out = []
    for t in range(a.shape[0] - 1, -1, -1):
        g = a[t] + beta * g
        out.append(g)
    gU = torch.stack(out[::-1])
    u_prev = torch.cat([mem0.unsqueeze(0), mems[:-1]])
    s_prev = (u_prev > theta).to(mems.dtype)
    return gU, gU * u_prev, -(g_spikes * sg + gU * s_prev)


_compiled: dict[str, object] = {}
_failed: list[str] = []


def _get(name: str, fn):
    if name not in _compiled:
        # dynamic=None: the first shape compiles a static kernel, a second batch size one
        # dynamic-shape kernel that serves every later size (RL: batch 1 to act, minibatches to learn)
        _compiled[name] = torch.compile(fn, dynamic=None)
    return _compiled[name]


def available() -> bool:
    """False once compiling has failed in this process (the layers then use the fused path)."""
    return not _failed


def _fallback(err: BaseException) -> None:
    if not _failed:
        _failed.append(f"{type(err).__name__}: {err}".splitlines()[0][:300])
        warnings.warn(f"snnlab: torch.compile is unavailable here ({_failed[0]}); the LIF layers "
                      f"use the fused backend instead (same results, slower)", RuntimeWarning,
                      stacklevel=3)


class CompiledLIFSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, current: Tensor, mem0: Tensor, beta: Tensor, theta: Tensor,
                slope: Tensor, family: str):  # type: ignore[override]
        # detached (autograd is this Function's job) and contiguous inputs: a requires_grad flag or
        # an expanded (stride-0) input would make Dynamo compile a second kernel
        spikes, mems = _get("forward", _forward_loop)(
            current.detach().contiguous(), mem0.detach().contiguous(), beta.detach(), theta.detach())
        ctx.save_for_backward(mems, mem0, beta, theta)
        ctx.slope, ctx.family = slope, family
        return spikes, mems

    @staticmethod
    def backward(ctx, g_spikes: Tensor | None, g_mems: Tensor | None):  # type: ignore[override]
        mems, mem0, beta, theta = ctx.saved_tensors
        if g_spikes is None:
            g_spikes = torch.zeros_like(mems)
        if g_mems is None:
            g_mems = torch.zeros_like(mems)
        try:
            gU, beta_terms, theta_terms = _get("backward", _backward_loop)(
                mems, mem0.detach(), beta.detach(), theta.detach(), ctx.slope, g_spikes.contiguous(),
                g_mems.contiguous(), ctx.family)
        except Exception as err:  # noqa: BLE001
            if not _is_compile_error(err):
                raise
            _fallback(err)
            from .fused import LIFSequence

            return LIFSequence.backward(ctx, g_spikes, g_mems)
        need_mem0, need_beta, need_theta = ctx.needs_input_grad[1:4]
        return (gU, beta * gU[0] if need_mem0 else None,
                _reduce_like(beta_terms, beta) if need_beta else None,
                _reduce_like(theta_terms, theta) if need_theta else None, None, None)


def lif_sequence_compiled(current: Tensor, mem0: Tensor, beta: Tensor, theta: Tensor, slope: Tensor,
                          family: str) -> tuple[Tensor, Tensor]:
    """Spikes and membranes ([T, B, N] each) of one LIF layer, compiled path (fused on failure)."""
    from .fused import lif_sequence

    if _failed:
        return lif_sequence(current, mem0, beta, theta, slope, family)
    try:
        return CompiledLIFSequence.apply(current, mem0, beta, theta, slope, family)
    except Exception as err:  # noqa: BLE001 - any compiler failure: fall back, say so once
        if not _is_compile_error(err):
            raise
        _fallback(err)
        return lif_sequence(current, mem0, beta, theta, slope, family)


def _is_compile_error(err: BaseException) -> bool:
    import torch._dynamo.exc as dexc

    names = {type(e).__name__ for e in _chain(err)}
    return isinstance(err, (dexc.BackendCompilerFailed, dexc.TorchDynamoException, OSError)) or bool(
        names & {"BackendCompilerFailed", "CppCompileError", "InductorError", "InvalidCxxCompiler"})


def _chain(err: BaseException):
    while err is not None:
        yield err
        err = err.__cause__ or err.__context__


def use_cache_dir(path: str | Path) -> str:
    """Keep Inductor's compiled kernels under ``path`` (shared by every trial that sets the same
    folder), unless the user already chose ``TORCHINDUCTOR_CACHE_DIR``."""
    path = str(Path(path).expanduser().resolve())
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", path)
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]

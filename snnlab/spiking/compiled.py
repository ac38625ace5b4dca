"""The compiled LIF path: the fused backend's forward and backward loops built by ``torch.compile``.

Same autograd node as :mod:`snnlab.spiking.fused` (same equations, same saved tensors), but its
two time loops - the forward recurrence and the backward recurrence with the surrogate - are
each compiled by TorchInductor into one kernel instead of ~5 small ops per time step.

- The slope is a tensor *argument* of the compiled backward, never a constant baked into the
  code: changing k at run time (schedules, diagnostics) reuses the compiled kernel.
- Compiling costs tens of seconds on 2 cores, per network shape (at most twice: static for the
  first batch size, dynamic for the rest), dtype and surrogate family. Inductor
  caches what it built on disk (``TORCHINDUCTOR_CACHE_DIR``; ``snnlab sweep`` / ``study`` point it
  at ``<storage>/.inductor_cache``), so the next process - another trial - loads it instead.
- If compiling fails (no C++ compiler, an unsupported platform), the layer warns once and
  falls back to the fused backend, which computes the same thing.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .fused import LIFSequence, backward_loop, forward_loop, lif_sequence

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


def _compiled_forward_loop(current, mem0, beta, theta):
    # detached (autograd is this Function's job) and contiguous inputs: a requires_grad flag or
    # an expanded (stride-0) input would make Dynamo compile a second kernel
    return _get("forward", forward_loop)(current.detach().contiguous(), mem0.detach().contiguous(),
                                         beta.detach(), theta.detach())


def _compiled_backward_loop(mems, mem0, beta, theta, slope, g_spikes, g_mems, family, need_beta,
                            need_theta):
    try:
        return _get("backward", backward_loop)(
            mems, mem0.detach(), beta.detach(), theta.detach(), slope, g_spikes.contiguous(),
            None if g_mems is None else g_mems.contiguous(), family, need_beta, need_theta)
    except Exception as err:  # noqa: BLE001 - a compiler failure: fall back, say so once
        if not _is_compile_error(err):
            raise
        _fallback(err)
        return backward_loop(mems, mem0, beta, theta, slope, g_spikes, g_mems, family, need_beta,
                             need_theta)


class CompiledLIFSequence(LIFSequence):
    """:class:`~snnlab.spiking.fused.LIFSequence` with both loops compiled."""

    forward_loop = staticmethod(_compiled_forward_loop)
    backward_loop = staticmethod(_compiled_backward_loop)


def lif_sequence_compiled(current: Tensor, mem0: Tensor, beta: Tensor, theta: Tensor, slope: Tensor,
                          family: str) -> tuple[Tensor, Tensor]:
    """Spikes and membranes ([T, B, N] each) of one LIF layer, compiled path (fused on failure)."""
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

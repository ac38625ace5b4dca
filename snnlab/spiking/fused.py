"""The fast LIF path: a whole layer's T-step recurrence as one autograd node.

Autograd in the eager path records ~10 small ops per neuron step; here the
forward runs the recurrence without recording anything and keeps only the
membranes, and the backward is written out by hand:

    U[t] = beta U[t-1] + I[t] - S[t-1] theta,   S[t] = H(U[t] - theta),   S[t-1] detached
    sg[t]   = surrogate'(U[t] - theta; k)                     (all T at once)
    gU[t]   = dL/dU[t] = gMem[t] + gS[t] sg[t] + beta gU[t+1] (one fused op per step)
    dL/dI[t] = gU[t],  dL/dU[-1] = beta gU[0]
    dL/dbeta  = sum gU[t] U[t-1],  dL/dtheta = -sum (gS[t] sg[t] + gU[t] S[t-1])

The slope is read from the surrogate's buffer when backward runs (as in the
eager path), so it stays a run-time value: no rebuild, no recompile.
:func:`forward_loop` and :func:`backward_loop` are plain functions of tensors so
that the ``compiled`` backend (:mod:`snnlab.spiking.compiled`) can hand the very
same code to ``torch.compile``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .surrogate import SURROGATES


def _reduce_like(g: Tensor, like: Tensor) -> Tensor:
    """Sum a [T, B, N] gradient down to the shape of beta / theta ([] or [N])."""
    if like.dim() == 0:
        return g.sum()
    return g.reshape(-1, g.shape[-1]).sum(0)


def forward_loop(current: Tensor, mem0: Tensor, beta: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
    """Spikes and membranes ([T, B, N]) of the recurrence, nothing recorded for autograd."""
    mem = mem0
    s_prev = (mem0 > theta).to(current.dtype)
    mems, spikes = [], []
    for t in range(current.shape[0]):
        mem = beta * mem + current[t] - s_prev * theta  # the eager path's exact op order
        mems.append(mem)
        s_prev = (mem > theta).to(current.dtype)
        spikes.append(s_prev)
    return torch.stack(spikes), torch.stack(mems)


def backward_loop(mems: Tensor, mem0: Tensor, beta: Tensor, theta: Tensor, slope: Tensor,
                  g_spikes: Tensor, g_mems: Tensor | None, family: str, need_beta: bool,
                  need_theta: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """dL/dU[t] for every t, and the per-element terms of dL/dbeta and dL/dtheta (if needed)."""
    sg = SURROGATES[family](mems - theta, slope.to(mems.dtype))
    a = g_spikes * sg
    if g_mems is not None:
        a = a + g_mems
    g = torch.zeros_like(a[0])
    out = []
    for t in range(a.shape[0] - 1, -1, -1):
        g = a[t] + beta * g
        out.append(g)
    gU = torch.stack(out[::-1])
    beta_terms = theta_terms = None
    if need_beta or need_theta:
        u_prev = torch.cat([mem0.unsqueeze(0), mems[:-1]])
        if need_beta:
            beta_terms = gU * u_prev
        if need_theta:
            theta_terms = -(g_spikes * sg + gU * (u_prev > theta).to(mems.dtype))
    return gU, beta_terms, theta_terms


class LIFSequence(torch.autograd.Function):
    #: the two loops; the compiled backend's subclass swaps in torch.compile'd versions
    forward_loop = staticmethod(forward_loop)
    backward_loop = staticmethod(backward_loop)

    @classmethod
    def forward(cls, ctx, current: Tensor, mem0: Tensor, beta: Tensor, theta: Tensor,
                slope: Tensor, family: str):  # type: ignore[override]
        spikes, mems = cls.forward_loop(current, mem0, beta, theta)
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None, not [T, B, N] zeros
        ctx.save_for_backward(mems, mem0, beta, theta)
        ctx.slope, ctx.family = slope, family
        return spikes, mems

    @classmethod
    def backward(cls, ctx, g_spikes: Tensor | None, g_mems: Tensor | None):  # type: ignore[override]
        mems, mem0, beta, theta = ctx.saved_tensors
        need_mem0, need_beta, need_theta = ctx.needs_input_grad[1:4]
        if g_spikes is None:
            g_spikes = torch.zeros_like(mems)
        gU, beta_terms, theta_terms = cls.backward_loop(
            mems, mem0, beta, theta, ctx.slope, g_spikes, g_mems, ctx.family, need_beta, need_theta)
        return (gU, beta * gU[0] if need_mem0 else None,
                _reduce_like(beta_terms, beta) if need_beta else None,
                _reduce_like(theta_terms, theta) if need_theta else None, None, None)


def lif_sequence(current: Tensor, mem0: Tensor, beta: Tensor, theta: Tensor, slope: Tensor,
                 family: str) -> tuple[Tensor, Tensor]:
    """Spikes and membranes ([T, B, N] each) of one LIF layer, fast path."""
    return LIFSequence.apply(current, mem0, beta, theta, slope, family)

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


class LIFSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, current: Tensor, mem0: Tensor, beta: Tensor, theta: Tensor,
                slope: Tensor, family: str):  # type: ignore[override]
        T = current.shape[0]
        mems = torch.empty_like(current)
        spikes = torch.empty_like(current)
        mem = mem0
        s_prev = (mem0 > theta).to(current.dtype)
        for t in range(T):
            mem = beta * mem + current[t] - s_prev * theta  # the eager path's exact op order
            mems[t] = mem
            s_prev = (mem > theta).to(current.dtype)
            spikes[t] = s_prev
        ctx.save_for_backward(mems, mem0, beta, theta)
        ctx.slope, ctx.family = slope, family
        return spikes, mems

    @staticmethod
    def backward(ctx, g_spikes: Tensor | None, g_mems: Tensor | None):  # type: ignore[override]
        mems, mem0, beta, theta = ctx.saved_tensors
        sg = SURROGATES[ctx.family](mems - theta, ctx.slope.to(mems.dtype))
        if g_spikes is None:
            g_spikes = torch.zeros_like(mems)
        a = g_spikes * sg
        if g_mems is not None:
            a = a + g_mems
        gU = torch.empty_like(a)
        g = torch.zeros_like(a[0])
        for t in range(a.shape[0] - 1, -1, -1):
            g = torch.addcmul(a[t], beta, g)
            gU[t] = g
        need_mem0, need_beta, need_theta = ctx.needs_input_grad[1:4]
        g_mem0 = beta * gU[0] if need_mem0 else None
        g_beta = g_theta = None
        if need_beta or need_theta:
            u_prev = torch.cat([mem0.unsqueeze(0), mems[:-1]])
        if need_beta:
            g_beta = _reduce_like(gU * u_prev, beta)
        if need_theta:
            s_prev = (u_prev > theta).to(mems.dtype)
            g_theta = -_reduce_like(g_spikes * sg + gU * s_prev, theta)
        return gU, g_mem0, g_beta, g_theta, None, None


def lif_sequence(current: Tensor, mem0: Tensor, beta: Tensor, theta: Tensor, slope: Tensor,
                 family: str) -> tuple[Tensor, Tensor]:
    """Spikes and membranes ([T, B, N] each) of one LIF layer, fast path."""
    return LIFSequence.apply(current, mem0, beta, theta, slope, family)

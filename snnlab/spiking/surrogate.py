"""Spike functions: exact Heaviside forward, surrogate derivative backward.

The slope ``k`` is the one knob the whole project studies. snnlab defines it
once for every family: ``k`` scales the argument ``x = U - theta`` of the
surrogate derivative, so a larger ``k`` always means a *narrower* band of
membrane values that receive gradient. What else it changes depends on the
family:

==============  ======================================  ===================
family          surrogate derivative dS/dU               what k changes
==============  ======================================  ===================
fast_sigmoid    1 / (1 + k|x|)^2                         width only (peak 1)
sigmoid         4 sig(kx) (1 - sig(kx))                  width only (peak 1)
atan            (k/2) / (1 + (pi/2 * k x)^2)             width *and* height
                                                         (peak k/2; snntorch's
                                                         ``atan(alpha=k)``)
==============  ======================================  ===================

``fast_sigmoid`` is the paper's surrogate and snntorch's
``surrogate.fast_sigmoid(slope=k)``. ``sigmoid`` is snntorch's sigmoid
surrogate divided by its peak ``k/4`` so that, like the paper's, only the
width moves.

The forward pass is ``S = H(x) = 1 if x > 0 else 0`` for every family and every
k, so changing k never changes a forward output.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn


def _fast_sigmoid_grad(x: Tensor, k: Tensor) -> Tensor:
    return 1.0 / (1.0 + k * x.abs()).square()


def _sigmoid_grad(x: Tensor, k: Tensor) -> Tensor:
    s = torch.sigmoid(k * x)
    return 4.0 * s * (1.0 - s)


def _atan_grad(x: Tensor, k: Tensor) -> Tensor:
    return (k / 2.0) / (1.0 + (math.pi / 2.0 * k * x).square())


SURROGATES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "fast_sigmoid": _fast_sigmoid_grad,
    "sigmoid": _sigmoid_grad,
    "atan": _atan_grad,
}


def surrogate_grad(family: str, x: Tensor, k: Tensor | float) -> Tensor:
    """The analytic surrogate derivative dS/dx of ``family`` at ``x`` for slope ``k``."""
    try:
        fn = SURROGATES[family]
    except KeyError:
        raise ValueError(
            f"unknown surrogate family {family!r}; allowed: {', '.join(SURROGATES)}"
        ) from None
    return fn(x, torch.as_tensor(k, dtype=x.dtype, device=x.device))


class _Spike(torch.autograd.Function):
    """Heaviside forward; surrogate backward with the slope *as it is when backward runs*.

    ``k`` is kept by reference (not saved for backward), so one forward pass can
    serve several backward passes at different slopes (``retain_graph=True``,
    ``set_slope`` in between) - which is how :mod:`snnlab.diagnostics` compares
    gradients without re-running the forward. In ordinary training nothing
    changes the slope between forward and backward, so this is the usual rule.
    """

    @staticmethod
    def forward(ctx, x: Tensor, k: Tensor, family: str) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.k = k
        ctx.family = family
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad_out * SURROGATES[ctx.family](x, ctx.k.to(x.dtype)), None, None


def spike(x: Tensor, k: Tensor, family: str = "fast_sigmoid") -> Tensor:
    """Heaviside spike of ``x`` (= U - theta) with the surrogate ``family`` of slope ``k`` in backward."""
    return _Spike.apply(x, k, family)


def check_slope(k: float) -> float:
    k = float(k)
    if not math.isfinite(k) or k <= 0:
        raise ValueError(f"slope k must be a finite number > 0, got {k}")
    return k


class Surrogate(nn.Module):
    """A spike function whose slope lives in a buffer.

    The buffer is part of ``state_dict`` (so checkpoints restore it) and is
    changed in place by :meth:`set_slope`, so compiled graphs and optimisers
    holding references to the module never need rebuilding.
    """

    slope: Tensor

    def __init__(self, family: str = "fast_sigmoid", slope: float = 25.0) -> None:
        super().__init__()
        if family not in SURROGATES:
            raise ValueError(
                f"unknown surrogate family {family!r}; allowed: {', '.join(SURROGATES)}"
            )
        self.family = family
        self.register_buffer("slope", torch.tensor(check_slope(slope)))

    def set_slope(self, k: float) -> None:
        self.slope.fill_(check_slope(k))

    def forward(self, x: Tensor) -> Tensor:
        return spike(x, self.slope, self.family)

    def extra_repr(self) -> str:
        return f"family={self.family}, slope={float(self.slope):g}"


def set_slope(module: nn.Module, k: float) -> int:
    """Set the slope of every :class:`Surrogate` inside ``module``; return how many were set."""
    k = check_slope(k)
    n = 0
    for m in module.modules():
        if isinstance(m, Surrogate):
            m.set_slope(k)
            n += 1
    return n


def get_slope(module: nn.Module) -> float:
    """The slope of the surrogates inside ``module`` (they must all agree)."""
    values = {float(m.slope) for m in module.modules() if isinstance(m, Surrogate)}
    if not values:
        raise ValueError("module contains no Surrogate")
    if len(values) > 1:
        raise ValueError(f"surrogates in module disagree on the slope: {sorted(values)}")
    return values.pop()

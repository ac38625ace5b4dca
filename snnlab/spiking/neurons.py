"""Leaky integrate-and-fire neurons, multi-step, with explicit state.

Dynamics (PAPER.md; identical to ``snntorch.Leaky`` with reset by subtraction
and ``reset_delay=True``)::

    U[t] = beta * U[t-1] + I[t] - S[t-1] * theta      (S[t-1] detached)
    S[t] = H(U[t] - theta)                             (surrogate in backward)

Membranes start at zero. The layer takes its membrane state as an argument and
returns the new one; it keeps no hidden state between calls, so the same layer
serves a per-sample reset (pass ``None``) and a carried state (pass the
previous call's final membrane). The previous spike is recomputed from the
carried membrane as ``H(U - theta)``, exactly as snntorch does.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from .compiled import lif_sequence_compiled
from . import cpp
from .fused import lif_sequence
from .surrogate import Surrogate

NeuronInit = Literal["constant", "uniform"]
Backend = Literal["cpp", "fused", "compiled", "eager"]
BACKENDS = ("cpp", "fused", "compiled", "eager")


class LIF(nn.Module):
    """A layer of ``size`` LIF neurons.

    Args:
        size: number of neurons.
        beta: membrane decay (used when ``init="constant"``).
        threshold: firing threshold theta (used when ``init="constant"``).
        learn_beta / learn_threshold: make beta / theta learnable per neuron
            (beta is clamped to [0, 1] in the forward pass, as in snntorch).
        init: ``"constant"`` (the scalars above) or ``"uniform"`` (per-neuron
            values drawn from U(0, 1), as in the paper's reference code).
        surrogate / slope: the spike function's family and initial slope k.
        backend: ``"cpp"`` (default: the layer's T steps as one autograd node whose forward and
            backward time loops are hand-written C++ kernels, :mod:`snnlab.spiking.cpp`; built
            in seconds at first use; CPU float32/float64, elsewhere - and with a warning where
            no C++ compiler works - it runs ``"fused"``), ``"fused"`` (the same node with
            both loops as tensor ops, :mod:`snnlab.spiking.fused`), ``"compiled"`` (those
            loops compiled by ``torch.compile``, :mod:`snnlab.spiking.compiled`; falls back
            to fused with a warning where compiling fails) or ``"eager"`` (the readable
            reference: plain autograd through every step). All give identical spikes and the
            same gradients (tested).
    """

    def __init__(
        self,
        size: int,
        beta: float = 0.9,
        threshold: float = 1.0,
        learn_beta: bool = False,
        learn_threshold: bool = False,
        init: NeuronInit = "constant",
        surrogate: str = "fast_sigmoid",
        slope: float = 25.0,
        backend: Backend = "cpp",
    ) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.backend = backend
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        if threshold <= 0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        if init not in ("constant", "uniform"):
            raise ValueError(f"init must be 'constant' or 'uniform', got {init!r}")
        self.size = size
        self.spike = Surrogate(surrogate, slope)
        #: mean spike rate of the latest forward (a detached scalar; diagnostics only)
        self.last_rate: Tensor | None = None
        self._register("beta", beta, learn_beta, init)
        self._register("threshold", threshold, learn_threshold, init)

    def _register(self, name: str, value: float, learn: bool, init: str) -> None:
        if init == "uniform":
            t = torch.rand(self.size)
        elif learn:
            t = torch.full((self.size,), float(value))
        else:
            t = torch.tensor(float(value))
        if learn:
            setattr(self, name, nn.Parameter(t))
        else:
            self.register_buffer(name, t)

    def initial_state(self, batch: int, device=None, dtype=None) -> Tensor:
        return torch.zeros(batch, self.size, device=device, dtype=dtype)

    def forward(self, current: Tensor, mem: Tensor | None = None,
                steps: int | None = None) -> tuple[Tensor, Tensor]:
        """Run all time steps of ``current`` ([T, B, N]), or of ``current`` [B, N] held for ``steps``.

        Returns ``(spikes, membranes)``, both [T, B, N]; ``membranes[-1]`` is
        the state to carry into the next call.
        """
        spikes, mems, _ = self._run(current, mem, steps, keep_spikes=True)
        return spikes, mems

    def forward_counts(self, current: Tensor, mem: Tensor | None = None,
                       steps: int | None = None) -> tuple[Tensor, Tensor]:
        """As :meth:`forward`, but returns each neuron's spike count over the T steps ([B, N],
        differentiable: ``spikes.sum(0)``) instead of the spike train - a spike-count readout.
        The cpp backend then never writes the train."""
        _, mems, counts = self._run(current, mem, steps, keep_spikes=False)
        return counts, mems

    def _run(self, current: Tensor, mem: Tensor | None, steps: int | None, keep_spikes: bool):
        beta = self.beta.clamp(0.0, 1.0)
        theta = self.threshold
        if mem is None:
            mem = current.new_zeros(current.shape[-2:])
        if self.backend == "cpp" and cpp.usable(current, self.spike.family):
            # reads a static current in place (no copy over T); counts spikes as it goes
            spikes, mems, counts = cpp.lif_sequence_cpp(
                current, mem, beta.to(current.dtype), theta.to(current.dtype), self.spike.slope,
                self.spike.family, steps, keep_spikes)
            self.last_rate = counts.detach().sum() / mems.numel()
            return spikes, mems, counts
        # every other backend, and cpp where its kernel does not apply (GPU, half precision,
        # no compiler): the fused path ("cpp" falls through to lif_sequence below)
        if steps is not None:
            current = current.unsqueeze(0).expand(steps, *current.shape)
        if self.backend != "eager":
            run = lif_sequence_compiled if self.backend == "compiled" else lif_sequence
            spikes, mems = run(current, mem, beta.to(current.dtype), theta.to(current.dtype),
                               self.spike.slope, self.spike.family)
        else:
            spk_prev = (mem > theta).to(current.dtype)
            spikes, mems = [], []
            # unbind, not current[t]: indexing a grad-requiring tensor in a loop is O(T^2) in backward
            for i_t in current.unbind(0):
                mem = beta * mem + i_t - spk_prev * theta
                s = self.spike(mem - theta)
                spk_prev = s.detach()
                spikes.append(s)
                mems.append(mem)
            spikes, mems = torch.stack(spikes), torch.stack(mems)
        self.last_rate = spikes.detach().mean()
        return spikes, mems, None if keep_spikes else spikes.sum(0)

    def extra_repr(self) -> str:
        b = "learnable" if isinstance(self.beta, nn.Parameter) else "fixed"
        t = "learnable" if isinstance(self.threshold, nn.Parameter) else "fixed"
        return f"size={self.size}, beta={b}, threshold={t}, backend={self.backend}"

"""The spiking MLP shared by the supervised (Lightning) and RL (RLlib) worlds.

    x --Linear--> LIF --Linear--> LIF ... --Linear (readout, non-spiking)--> out

The first Linear turns the input into a current ("population" encoding, no
rate coding). Each layer runs all of its T time steps at once: one matmul over
T*B rows, then the LIF recurrence. The readout sees either the last LIF
layer's spike count summed over the T steps (``readout="spikes"``) or its
membrane at the last step (``readout="membrane"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from . import cpp
from .neurons import LIF, Backend, NeuronInit
from .surrogate import Surrogate, check_slope, get_slope, set_slope

Readout = Literal["spikes", "membrane"]
WeightInit = Literal["threshold_scaled", "torch_default"]
SpikeMatmul = Literal["dense", "sparse"]


@dataclass
class SpikingMLPConfig:
    """Everything that shapes a :class:`SpikingMLP` (all but the sizes are optional)."""

    n_in: int
    n_out: int
    hidden: Sequence[int] = (128, 128)
    num_steps: int = 8
    readout: Readout = "spikes"
    surrogate: str = "fast_sigmoid"
    slope: float = 25.0
    beta: float = 0.9
    threshold: float = 1.0
    learn_beta: bool = False
    learn_threshold: bool = False
    neuron_init: NeuronInit = "constant"
    weight_init: WeightInit = "threshold_scaled"
    init_gain: float = 2.0
    backend: Backend = "cpp"
    #: the Linear layers fed by spikes: torch's dense matmul, or (cpp backend) the sparse kernel
    spike_matmul: SpikeMatmul = "dense"


class NetOutput(NamedTuple):
    out: Tensor  # readout; [B, n_out] from forward(), [L, B, n_out] from forward_steps()
    state: list[Tensor]  # final membrane of each LIF layer, [B, N_i]
    rates: list[Tensor]  # mean spike rate of each LIF layer (detached scalars)


class SpikingMLP(nn.Module):
    def __init__(self, cfg: SpikingMLPConfig | None = None, **kwargs) -> None:
        super().__init__()
        cfg = cfg or SpikingMLPConfig(**kwargs)
        if not cfg.hidden:
            raise ValueError("hidden must list at least one layer size")
        if cfg.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {cfg.num_steps}")
        if cfg.readout not in ("spikes", "membrane"):
            raise ValueError(f"readout must be 'spikes' or 'membrane', got {cfg.readout!r}")
        check_slope(cfg.slope)
        if cfg.spike_matmul not in ("dense", "sparse"):
            raise ValueError(f"spike_matmul must be 'dense' or 'sparse', got {cfg.spike_matmul!r}")
        self.cfg = cfg
        # sparse: Linear layers fed by spikes run cpp.spike_linear (where the cpp LIF kernel runs)
        self._sparse = cfg.spike_matmul == "sparse" and cfg.backend == "cpp"
        self.num_steps = cfg.num_steps
        #: per-layer spike rates of the latest forward (detached; diagnostics only, never state)
        self.last_rates: list[Tensor] = []
        self.readout_mode = cfg.readout
        sizes = [cfg.n_in, *cfg.hidden]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.lifs = nn.ModuleList(
            LIF(
                n,
                beta=cfg.beta,
                threshold=cfg.threshold,
                learn_beta=cfg.learn_beta,
                learn_threshold=cfg.learn_threshold,
                init=cfg.neuron_init,
                surrogate=cfg.surrogate,
                slope=cfg.slope,
                backend=cfg.backend,
            )
            for n in cfg.hidden
        )
        self.readout = nn.Linear(cfg.hidden[-1], cfg.n_out)
        if cfg.weight_init == "threshold_scaled":
            self._threshold_scaled_init(cfg.init_gain)
        elif cfg.weight_init != "torch_default":
            raise ValueError(
                f"weight_init must be 'threshold_scaled' or 'torch_default', got {cfg.weight_init!r}"
            )

    @torch.no_grad()
    def _threshold_scaled_init(self, gain: float) -> None:
        """Scale each spiking layer's weights to its neurons' threshold.

        With PyTorch's default init and theta=1 deep layers of a short-T
        network stay silent (PAPER.md, "A pitfall to design for"). Here
        ``W ~ N(0, (gain * theta / sqrt(fan_in))^2)`` and ``b = 0``, so a
        unit-scale input drives the membrane to the order of the threshold.
        """
        for lin, lif in zip(self.linears, self.lifs):
            theta = float(lif.threshold.detach().mean())
            nn.init.normal_(lin.weight, 0.0, gain * theta / math.sqrt(lin.in_features))
            nn.init.zeros_(lin.bias)

    # --- slope -------------------------------------------------------------
    def set_slope(self, k: float) -> None:
        set_slope(self, k)

    @property
    def slope(self) -> float:
        return get_slope(self)

    def surrogates(self) -> list[Surrogate]:
        return [lif.spike for lif in self.lifs]

    # --- state -------------------------------------------------------------
    def initial_state(self, batch: int, device=None, dtype=None) -> list[Tensor]:
        return [lif.initial_state(batch, device, dtype) for lif in self.lifs]

    # --- forward -----------------------------------------------------------
    def _run(self, current: Tensor, state: list[Tensor] | None, steps: int | None = None,
             count_last: bool = False):
        """Run the LIF stack on the first layer's current: [S, B, N0], or [B, N0] held for ``steps``.

        With ``count_last`` the last layer returns its spike counts over the steps ([B, N])
        instead of its spike train (the spike-count readout needs nothing else).
        """
        new_state, rates = [], []
        x = current
        last = len(self.lifs) - 1
        for i, lif in enumerate(self.lifs):
            if i > 0:
                lin = self.linears[i]
                S, B = x.shape[:2]
                if self._sparse:  # x: the previous layer's spikes
                    x = cpp.spike_linear(x.reshape(S * B, -1), lin.weight, lin.bias).view(S, B, -1)
                else:
                    x = lin(x.reshape(S * B, -1)).view(S, B, -1)
            if x.dtype != torch.float32:  # mixed precision: bf16 matmuls, the LIF dynamics in fp32
                x = x.float()
            run = lif.forward_counts if count_last and i == last else lif
            spikes, mems = run(x, None if state is None else state[i], steps if i == 0 else None)
            new_state.append(mems[-1])
            rates.append(lif.last_rate)
            x = spikes
        self.last_rates = rates
        return x, mems, new_state, rates

    def forward(self, x: Tensor, state: list[Tensor] | None = None) -> NetOutput:
        """Present the static input ``x`` [B, n_in] for ``num_steps`` steps.

        With ``state=None`` membranes start at zero (per-sample reset); the
        returned state can be passed back to continue from where this call
        ended.
        """
        cur = self.linears[0](x)  # constant input: one projection serves all T steps
        # the last layer's spike train is never needed here: only its counts (or its membrane)
        counts, mems, new_state, rates = self._run(cur, state, self.num_steps, count_last=True)
        out = self.readout(counts if self.readout_mode == "spikes" else mems[-1])
        return NetOutput(out, new_state, rates)

    def forward_steps(
        self, x_seq: Tensor, state: list[Tensor] | None = None, steps_per_output: int | None = None
    ) -> NetOutput:
        """Run a multi-step input ``x_seq`` [S, B, n_in], carrying ``state``.

        Every ``steps_per_output`` consecutive steps (default ``num_steps``)
        give one readout, so the result is [S // steps_per_output, B, n_out].
        """
        g = steps_per_output or self.num_steps
        S, B = x_seq.shape[:2]
        if S % g:
            raise ValueError(f"sequence length {S} is not a multiple of steps_per_output={g}")
        cur = self.linears[0](x_seq.reshape(S * B, -1)).view(S, B, -1)
        spikes, mems, new_state, rates = self._run(cur, state)
        L = S // g
        spikes = spikes.view(L, g, B, -1)
        mems = mems.view(L, g, B, -1)
        if self.readout_mode == "spikes":
            out = self.readout(spikes.sum(1))
        else:
            out = self.readout(mems[:, -1])
        return NetOutput(out, new_state, rates)

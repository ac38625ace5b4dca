"""Synaptic operations and an energy estimate per inference of a SpikingMLP, against an ANN of
the same shape (issue 15, item 3).

The network (``snnlab.spiking.SpikingMLP``): inputs ``n_in``, LIF layers ``N_1 .. N_L``, a linear
readout to ``n_out``, ``T`` time steps per inference (one action / one sample), measured spike
rates ``r_i`` (spikes per neuron per time step, what ``spike_rate/layer{i}`` reports).

SNN, per inference:

- **MACs** ``n_in * N_1``: the first layer's input is a dense real-valued current.
  ``SpikingMLP.forward`` presents a static input for ``T`` steps and projects it once
  (``cur = self.linears[0](x)``, reused for all ``T`` steps), so these MACs are counted once,
  not ``T`` times.
- **SynOps** (accumulates, ACs): LIF layer ``i`` emits ``r_i * N_i * T`` spikes, each of which
  adds one weight to each of its ``fan_out_i`` targets (``N_{i+1}``; the readout's ``n_out`` for
  the last layer): ``SynOps_i = r_i * N_i * T * fan_out_i``. This is the event-driven convention
  of the SNN literature; snnlab's software readout multiplies the spike *counts* instead, which
  is the same sum of weights.
- Not counted (as usual in this estimate): membrane updates of the LIF neurons, the ``tanh`` /
  softmax after the readout, memory access.

ANN of the same shape (``n_in -> N_1 -> .. -> N_L -> n_out``, one pass):
``MACs = n_in*N_1 + N_1*N_2 + .. + N_{L-1}*N_L + N_L*n_out``.

Energy per operation (45 nm CMOS, 0.9 V): M. Horowitz, "1.1 Computing's energy problem (and
what we can do about it)", ISSCC 2014, Digest of Technical Papers, pp. 10-14,
doi:10.1109/ISSCC.2014.6757323, Figure 1.1.9: 32-bit float add 0.9 pJ, 32-bit float multiply
3.7 pJ; so a 32-bit float MAC = 3.7 + 0.9 = 4.6 pJ and an accumulate (AC) = 0.9 pJ - the
numbers most SNN papers use (e.g. Spikformer, Zhou et al. ICLR 2023). Hence
``E_SNN = 4.6 pJ * MACs_SNN + 0.9 pJ * SynOps`` and ``E_ANN = 4.6 pJ * MACs_ANN``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: pJ per 32-bit float multiply-accumulate (Horowitz ISSCC 2014, 45 nm: mult 3.7 + add 0.9)
E_MAC_PJ = 4.6
#: pJ per 32-bit float accumulate (add) (Horowitz ISSCC 2014, 45 nm)
E_AC_PJ = 0.9
ENERGY_SOURCE = ("45 nm CMOS, 32-bit float: MAC 4.6 pJ, accumulate 0.9 pJ "
                 "(Horowitz, ISSCC 2014, doi:10.1109/ISSCC.2014.6757323)")


@dataclass(frozen=True)
class NetShape:
    """A SpikingMLP's shape: inputs, LIF layer sizes, readout size, time steps per inference.
    An experiment config gives its own (``network_shape()`` of the supervised and RL configs,
    from the resolved config and the data set's or env's sizes)."""

    n_in: int
    hidden: tuple[int, ...]
    n_out: int
    num_steps: int


@dataclass
class Energy:
    synops_per_layer: list[float]
    synops: float
    snn_macs: float
    ann_macs: float
    snn_pj: float
    ann_pj: float

    @property
    def ratio(self) -> float:
        return self.snn_pj / self.ann_pj if self.ann_pj else math.nan


def ann_macs(shape: NetShape) -> int:
    sizes = [shape.n_in, *shape.hidden, shape.n_out]
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def estimate(shape: NetShape, rates: Sequence[float], e_mac: float = E_MAC_PJ,
             e_ac: float = E_AC_PJ) -> Energy:
    """SynOps, MACs and energy (pJ) per inference from the per-layer spike rates ``rates``."""
    if len(rates) != len(shape.hidden):
        raise ValueError(f"{len(rates)} spike rates for {len(shape.hidden)} LIF layers")
    fan_out = [*shape.hidden[1:], shape.n_out]
    per_layer = [float(r) * n * shape.num_steps * f for r, n, f in zip(rates, shape.hidden, fan_out)]
    synops = sum(per_layer)
    snn_macs = float(shape.n_in * shape.hidden[0])
    ann = float(ann_macs(shape))
    return Energy(per_layer, synops, snn_macs, ann, e_mac * snn_macs + e_ac * synops, e_mac * ann)

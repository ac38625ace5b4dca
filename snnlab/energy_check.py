"""snnlab's synaptic-operation count (``snnlab.energy``) against NeuroBench's (issue 21, item 5).

NeuroBench (Yik et al., Nature Communications 2025; ``neurobench.metrics.workload.
SynapticOperations``) hooks every ``nn.Linear`` of a network, binarises each call's input and
weights (non-zero -> 1, the bias left out) and counts the (non-zero input, non-zero weight) pairs:
as *ACs* when that input holds only 0 / +-1 (spikes), as *MACs* otherwise. snnlab counts, per
inference of a :class:`~snnlab.spiking.SpikingMLP` (see ``snnlab.energy``):

- the first layer's projection of the static input, once: ``n_in * N_1`` MACs;
- every spike of LIF layer ``i`` times its fan-out: ``r_i * N_i * T * fan_out_i`` SynOps (ACs),
  the last LIF layer's fan-out being the readout's ``n_out``.

The two agree exactly on the hidden-to-hidden layers (spike trains, both count spikes x fan-out;
weights are never exactly 0 after initialisation or training). They differ by definition in two
places, both reported by :func:`crosscheck`:

- the first layer: NeuroBench skips input values that are exactly 0 (a drone's action history at
  the start of a flight), snnlab counts every input;
- the readout: snnlab's software readout multiplies the last layer's spike *counts* (0..T per
  neuron) by the readout weights, which equals one accumulate per spike (snnlab's SynOps). To
  NeuroBench that call's input is not binary, so it counts it as MACs, one per neuron that spiked
  at least once, times ``n_out`` (fewer operations, each a MAC: 4.6 instead of 0.9 pJ).

NeuroBench is optional: ``pip install --no-deps neurobench==2.3.0`` (its metrics need none of its
dependencies; its full install asks for torchaudio, which would move torch off the pinned 2.14).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .energy import NetShape, estimate
from .spiking import SpikingMLP

NEUROBENCH_HINT = "pip install --no-deps neurobench==2.3.0"


def _neurobench():
    try:
        from neurobench.metrics.utils.layers import single_layer_MACs
        from neurobench.metrics.workload import SynapticOperations
        from neurobench.models import TorchModel
    except ImportError as e:
        raise ImportError(f"NeuroBench is not installed ({e}); install it with: {NEUROBENCH_HINT}") from None
    return TorchModel, SynapticOperations, single_layer_MACs


@dataclass(frozen=True)
class Part:
    """One part of an inference, counted both ways (per sample, averaged over the batch)."""

    part: str
    snnlab_kind: str  # "MAC" or "AC"
    snnlab: float
    neurobench_kind: str  # "MAC" or "AC": how NeuroBench classified that layer's input
    neurobench: float
    why: str


@dataclass(frozen=True)
class CrossCheck:
    parts: list[Part]
    #: NeuroBench's own metric on the same forward: Effective_MACs, Effective_ACs, Dense
    neurobench_metric: dict[str, float]
    #: snnlab.energy.estimate's SynOps (ACs) and MACs per inference, from the measured rates
    snnlab_synops: float
    snnlab_macs: float
    samples: int

    def rows(self) -> list[dict]:
        return [vars(p) for p in self.parts]


def crosscheck(net: SpikingMLP, x: Tensor) -> CrossCheck:
    """Both counts for one forward of ``net`` (``SpikingMLP.forward``, reset before the input) on
    the observations ``x`` [B, n_in]; raises ImportError with the install hint without NeuroBench."""
    TorchModel, SynapticOperations, single_layer_MACs = _neurobench()
    if x.dim() != 2 or x.shape[1] != net.cfg.n_in:
        raise ValueError(f"observations must be [batch, {net.cfg.n_in}], got {list(x.shape)}")
    model = TorchModel(net)  # puts net in eval mode, as NeuroBench does
    model.register_hooks()
    metric = SynapticOperations()
    try:
        with torch.no_grad():
            preds = model(x)
            rates = [float(r) for r in net.last_rates]
            per_layer = []
            for hook in model.connection_hooks:  # NeuroBench's own per-layer count, as its metric does
                ops = [single_layer_MACs(inp[0] if len(inp) == 1 else inp, hook.layer) for inp in hook.inputs]
                per_layer.append((hook.layer, sum(o for o, _ in ops), all(s for _, s in ops)))
            summary = metric(model, preds, (x, None))
    finally:
        model.cleanup_hooks()
    B = x.shape[0]
    cfg = net.cfg
    shape = NetShape(cfg.n_in, tuple(cfg.hidden), cfg.n_out, cfg.num_steps)
    e = estimate(shape, rates)
    by_layer = {id(layer): (ops / B, spiking) for layer, ops, spiking in per_layer}

    def nb(layer):
        ops, spiking = by_layer.get(id(layer), (0.0, False))
        return ops, "AC" if spiking else "MAC"

    parts = []
    ops, kind = nb(net.linears[0])
    zeros = float((x == 0).sum()) / B
    parts.append(Part("input -> LIF 1 (static input, projected once)", "MAC", e.snn_macs, kind, ops,
                      f"NeuroBench skips input values that are exactly 0 ({zeros:.1f} of {cfg.n_in} "
                      "per sample here)" if zeros else "same definition"))
    for i in range(1, len(cfg.hidden)):
        ops, kind = nb(net.linears[i])
        parts.append(Part(f"LIF {i} -> LIF {i + 1} (spikes x fan-out)", "AC", e.synops_per_layer[i - 1], kind, ops,
                          "same definition"))
    ops, kind = nb(net.readout)
    if cfg.readout == "membrane":
        why = ("the readout reads the last membrane, not spikes: NeuroBench counts its non-zero values "
               "as MACs; snnlab.energy counts the last layer's spikes (its event-driven convention)")
    elif kind == "MAC":
        why = ("snnlab: one accumulate per spike; NeuroBench: the readout's input is the spike count "
               "(0..T), not binary, so one MAC per neuron that spiked at all")
    else:
        why = "no neuron spiked more than once: the same count"
    parts.append(Part(f"LIF {len(cfg.hidden)} -> readout", "AC", e.synops_per_layer[-1], kind, ops, why))
    return CrossCheck(parts, {k: float(v) for k, v in summary.items()}, e.synops, e.snn_macs, B)

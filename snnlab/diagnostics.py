"""Gradient diagnostics: per-layer gradient magnitude and direction vs a reference slope.

For a network and a loss, and for each slope k: the gradient of every weight
matrix (layer 0 = the input projection ... layer L = the readout), its mean
absolute value, and its cosine similarity to the gradient at the reference
slope ``k_ref`` (PAPER.md: k=100 as the "true" gradient). A zero-norm gradient
has cosine 0. One forward pass serves every slope: the spike function reads
the slope when the backward runs, so the loss is differentiated once per k
with ``retain_graph=True`` (forward outputs do not depend on k).

``paper_protocol`` reproduces the paper's analysis: input -> 4 LIF layers of
64 -> linear readout, per-neuron beta and threshold ~ U(0, 1), PyTorch's
default weight init, 63 inputs and 64 outputs, standard-normal inputs and
regression targets, one sample at a time (fresh membranes), 2 time steps,
readout of the summed output spikes, MSE loss, k in {1, 10, 25, 50, 100}.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from .spiking import SpikingMLP, SpikingMLPConfig, get_slope, set_slope


def weight_layers(net: SpikingMLP) -> list[Tensor]:
    """The weight matrices of a SpikingMLP, layer 0 (input) to layer L (readout)."""
    return [lin.weight for lin in net.linears] + [net.readout.weight]


def cosine(a: Tensor, b: Tensor) -> float:
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return 0.0
    return float((a.flatten() @ b.flatten()) / (na * nb))


def layer_gradients(net: nn.Module, loss: Tensor, params: Sequence[Tensor],
                    slopes: Sequence[float]) -> dict[float, list[Tensor]]:
    """Gradients of ``loss`` w.r.t. ``params`` at each slope, from the one forward that made ``loss``."""
    before = get_slope(net)
    out: dict[float, list[Tensor]] = {}
    try:
        for i, k in enumerate(slopes):
            set_slope(net, k)
            grads = torch.autograd.grad(loss, params, retain_graph=i < len(slopes) - 1, allow_unused=True)
            out[k] = [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads)]
    finally:
        set_slope(net, before)
    return out


def gradient_stats(net: SpikingMLP, loss: Tensor, k_ref: float = 100.0,
                   slopes: Sequence[float] | None = None) -> dict[float, list[dict[str, float]]]:
    """Per slope, per layer: ``{"magnitude": mean |g|, "cosine": cos(g, g at k_ref)}``.

    ``slopes`` defaults to the network's current slope; ``k_ref`` is always computed.
    """
    slopes = list(slopes) if slopes is not None else [get_slope(net)]
    order = [k for k in slopes if k != k_ref] + [k_ref]
    grads = layer_gradients(net, loss, weight_layers(net), order)
    ref = grads[k_ref]
    return {k: [{"magnitude": float(g.abs().mean()), "cosine": cosine(g, r)}
                for g, r in zip(grads[k], ref)] for k in slopes}


@dataclass
class Protocol:
    """The paper's gradient analysis (defaults) - every field can be changed from a YAML file."""

    n_in: int = 63
    n_out: int = 64
    hidden: list[int] = field(default_factory=lambda: [64, 64, 64, 64])
    num_steps: int = 2
    slopes: list[float] = field(default_factory=lambda: [1.0, 10.0, 25.0, 50.0, 100.0])
    k_ref: float = 100.0
    samples: int = 256
    networks: int = 5
    seed: int = 0
    neuron_init: str = "uniform"
    weight_init: str = "torch_default"
    surrogate: str = "fast_sigmoid"


def paper_protocol(p: Protocol, progress: Callable[[int], None] | None = None) -> list[dict]:
    """Run the protocol; one row per (network, sample, layer, k)."""
    if p.k_ref not in p.slopes:
        raise ValueError(f"k_ref {p.k_ref} must be one of slopes {p.slopes}")
    rows = []
    for n in range(p.networks):
        torch.manual_seed(p.seed * 1000 + n)
        net = SpikingMLP(SpikingMLPConfig(
            n_in=p.n_in, n_out=p.n_out, hidden=tuple(p.hidden), num_steps=p.num_steps,
            neuron_init=p.neuron_init, weight_init=p.weight_init, surrogate=p.surrogate,
            slope=p.k_ref))
        x = torch.randn(p.samples, p.n_in)
        y = torch.randn(p.samples, p.n_out)
        for s in range(p.samples):
            out = net(x[s:s + 1]).out  # one sample, fresh membranes
            loss = nn.functional.mse_loss(out, y[s:s + 1])
            stats = gradient_stats(net, loss, k_ref=p.k_ref, slopes=p.slopes)
            for k, layers in stats.items():
                for layer, st in enumerate(layers):
                    rows.append({"network": n, "sample": s, "layer": layer, "k": k, **st})
        if progress:
            progress(n)
    return rows


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean over networks and samples, per (k, layer)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    g = df.groupby(["k", "layer"]).agg(magnitude=("magnitude", "mean"), cosine=("cosine", "mean"),
                                       magnitude_std=("magnitude", "std"), cosine_std=("cosine", "std"))
    return g.reset_index().to_dict("records")


def plot(agg: list[dict], path_stem: str, title: str = "") -> list[str]:
    """Two panels (magnitude per layer, log scale; cosine per layer), one line per k -> PNG + SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for k in sorted({r["k"] for r in agg}):
        rs = sorted((r for r in agg if r["k"] == k), key=lambda r: r["layer"])
        layers = [r["layer"] for r in rs]
        ax1.plot(layers, [r["magnitude"] for r in rs], marker="o", label=f"k={k:g}")
        ax2.plot(layers, [r["cosine"] for r in rs], marker="o", label=f"k={k:g}")
    ax1.set_yscale("log")
    ax1.set(xlabel="layer (0 = input, last = readout)", ylabel="mean |gradient|",
            title="gradient magnitude")
    ax2.set(xlabel="layer (0 = input, last = readout)", ylabel="cosine to the k_ref gradient",
            title="gradient direction", ylim=(-0.05, 1.05))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax2.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = []
    for ext in ("png", "svg"):
        fig.savefig(f"{path_stem}.{ext}", dpi=120)
        out.append(f"{path_stem}.{ext}")
    plt.close(fig)
    return out


def protocol_dict(p: Protocol) -> dict:
    return asdict(p)


def run_analysis(cfg_fields: dict, out: str | Path,
                 progress: Callable[[int], None] | None = None) -> list[dict]:
    """Run the protocol and write gradients.csv (every number), gradients_summary.csv (means per
    k and layer), protocol.yaml and gradients.png/.svg into ``out``; return the summary rows."""
    import pandas as pd
    import yaml

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    proto = Protocol(**cfg_fields)
    rows = paper_protocol(proto, progress=progress)
    pd.DataFrame(rows).to_csv(out / "gradients.csv", index=False)
    agg = aggregate(rows)
    pd.DataFrame(agg).to_csv(out / "gradients_summary.csv", index=False)
    (out / "protocol.yaml").write_text(yaml.safe_dump(dict(cfg_fields), sort_keys=False))
    plot(agg, str(out / "gradients"),
         title=f"{len(proto.hidden)} LIF layers, T={proto.num_steps}, "
         f"{proto.networks} networks x {proto.samples} samples")
    return agg

"""Time one training step (forward over T, loss, backward, Adam) of snnlab (fused, eager) vs snntorch.

Workload (issue #2): 64 inputs -> 3 LIF layers x 256 -> 10 outputs, T=25,
batch 128, fast-sigmoid surrogate k=25, beta=0.9, theta=1, cross-entropy on
the spike-count readout. Implementations are interleaved round by round so
that machine noise hits both alike; medians are reported.

    .venv/bin/python benchmarks/train_step.py [--rounds 15] [--steps 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from snnlab.spiking import SpikingMLP

N_IN, HIDDEN, N_OUT, T, BATCH, K = 64, (256, 256, 256), 10, 25, 128, 25.0


class SnntorchNet(nn.Module):
    """The usual snntorch idiom: Linear + Leaky per layer, stepped over time."""

    def __init__(self) -> None:
        super().__init__()
        import snntorch as snn
        from snntorch import surrogate

        sizes = [N_IN, *HIDDEN]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.lifs = nn.ModuleList(
            snn.Leaky(beta=0.9, threshold=1.0, spike_grad=surrogate.fast_sigmoid(slope=K))
            for _ in HIDDEN
        )
        self.readout = nn.Linear(HIDDEN[-1], N_OUT)

    def forward(self, x):
        mems = [lif.init_leaky() for lif in self.lifs]
        count = 0
        for _ in range(T):
            h = x
            for i, (lin, lif) in enumerate(zip(self.linears, self.lifs)):
                h, mems[i] = lif(lin(h), mems[i])
            count = count + h
        return self.readout(count)


def make_step(net: nn.Module, out_fn):
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.rand(BATCH, N_IN)
    y = torch.randint(0, N_OUT, (BATCH,))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(out_fn(x), y)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per implementation per round")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    eager = SpikingMLP(n_in=N_IN, n_out=N_OUT, hidden=HIDDEN, num_steps=T, slope=K, backend="eager")
    fused = SpikingMLP(n_in=N_IN, n_out=N_OUT, hidden=HIDDEN, num_steps=T, slope=K, backend="fused")
    theirs = SnntorchNet()
    impls = {
        "snnlab (fused)": make_step(fused, lambda x: fused(x).out),
        "snnlab (eager)": make_step(eager, lambda x: eager(x).out),
        "snntorch Leaky": make_step(theirs, theirs),
    }
    times: dict[str, list[float]] = {name: [] for name in impls}
    for step in impls.values():  # warm-up
        for _ in range(3):
            step()
    for _ in range(args.rounds):
        for name, step in impls.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - t0) / args.steps * 1e3)
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"torch {torch.__version__}, {args.threads} threads, workload 64->3x256->10, T={T}, B={BATCH}")
    for name, m in med.items():
        lo, hi = min(times[name]), max(times[name])
        print(f"{name:16s} median {m:7.2f} ms/step   (min {lo:.2f}, max {hi:.2f}, {args.rounds} rounds)")
    for name in ("snnlab (fused)", "snnlab (eager)"):
        print(f"ratio {name} / snntorch: {med[name] / med['snntorch Leaky']:.3f}")


if __name__ == "__main__":
    main()

"""Train-step speed and activation memory: snnlab (cpp, compiled, fused, eager) vs snntorch, SpikingJelly,
Norse and a ReLU "floor" network with identical Linear layers (issue #6).

    .venv/bin/pip install --no-deps -r benchmarks/requirements-peers.txt   # SpikingJelly, Norse
    .venv/bin/python benchmarks/peers.py [--rounds 9] [--steps 3] [--threads 2] [--cold]

"first step" is the first train step of each implementation in seconds: for snnlab compiled it
includes torch.compile's build of the forward and backward loops, for snnlab cpp the C++ build of
its kernel (cold with ``--cold``: an empty Inductor cache and kernel dir; otherwise whatever
TORCHINDUCTOR_CACHE_DIR / SNNLAB_KERNEL_DIR already hold).

Train step = forward over T, cross-entropy on the readout of spike counts, backward, Adam.
Workloads:
    A: 64 in -> 3 LIF x 256 -> 10 out, T=25, batch 128
    B: 17 in -> 2 LIF x 128 -> 6 out,  T=50, batch 256
Implementations are interleaved round by round; medians are reported, with ratios to
snntorch and to the ReLU floor (same Linears, ReLU instead of LIF, same T loop structure
as snnlab: one matmul per layer over T*B rows). Memory is the bytes autograd saves for
backward in one step (saved_tensors_hooks), which is what differs between
implementations; process RSS is dominated by imports.

How the peers are matched (documented, not identical where their neuron models differ):
- snntorch 1.0: ``snn.Leaky(beta=0.9, threshold=1, spike_grad=fast_sigmoid(slope=25))``,
  reset by subtraction - the same neuron as snnlab (the numerical reference).
- SpikingJelly 2.0: ``LIFNode(tau=10, decay_input=False, v_threshold=1, v_reset=None,
  detach_reset=True, step_mode='m', surrogate=SoftSign(alpha=25))``: decay 1 - 1/tau = 0.9,
  soft reset, but the reset is applied in the same step (so it decays with the membrane);
  SoftSign's derivative is (alpha/2)/(1 + alpha|x|)^2 - the fast sigmoid's shape.
- Norse 1.1: ``LIFBoxCell`` with tau_mem_inv = 1/(dt (1 - 0.9)), dt=1e-3 (decay 0.9, input
  scaled by 0.1 - compensated by scaling the input current by 10), v_th=1,
  reset_subtract, SuperSpike surrogate alpha=25; stepped over T in Python.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from snnlab.spiking import SpikingMLP

WORKLOADS = {"A": dict(n_in=64, hidden=(256, 256, 256), n_out=10, T=25, B=128),
             "B": dict(n_in=17, hidden=(128, 128), n_out=6, T=50, B=256)}
K, BETA = 25.0, 0.9


def linears(w):
    sizes = [w["n_in"], *w["hidden"]]
    return nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])), nn.Linear(
        w["hidden"][-1], w["n_out"])


class ReLUFloor(nn.Module):
    """Same Linears and T-step structure, ReLU instead of LIF: the matmul floor."""

    def __init__(self, w):
        super().__init__()
        self.lins, self.readout = linears(w)
        self.T = w["T"]

    def forward(self, x):
        h = self.lins[0](x).unsqueeze(0).expand(self.T, *x.shape[:1], -1)
        h = torch.relu(h)
        for lin in self.lins[1:]:
            T, B = h.shape[:2]
            h = torch.relu(lin(h.reshape(T * B, -1)).view(T, B, -1))
        return self.readout(h.sum(0))


class Snntorch(nn.Module):
    def __init__(self, w):
        super().__init__()
        import snntorch as snn
        from snntorch import surrogate

        self.lins, self.readout = linears(w)
        self.lifs = nn.ModuleList(snn.Leaky(beta=BETA, spike_grad=surrogate.fast_sigmoid(slope=K))
                                  for _ in w["hidden"])
        self.T = w["T"]

    def forward(self, x):
        mems = [lif.init_leaky() for lif in self.lifs]
        count = 0
        for _ in range(self.T):
            h = x
            for i, (lin, lif) in enumerate(zip(self.lins, self.lifs)):
                h, mems[i] = lif(lin(h), mems[i])
            count = count + h
        return self.readout(count)


class SpikingJelly(nn.Module):
    def __init__(self, w):
        super().__init__()
        from spikingjelly.activation_based import neuron, surrogate

        self.lins, self.readout = linears(w)
        self.lifs = nn.ModuleList(neuron.LIFNode(
            tau=1.0 / (1.0 - BETA), decay_input=False, v_threshold=1.0, v_reset=None,
            detach_reset=True, step_mode="m", surrogate_function=surrogate.SoftSign(alpha=K))
            for _ in w["hidden"])
        self.T = w["T"]

    def forward(self, x):
        for lif in self.lifs:
            lif.reset()
        h = self.lins[0](x).unsqueeze(0).expand(self.T, x.shape[0], -1)
        for i, lif in enumerate(self.lifs):
            if i:
                T, B = h.shape[:2]
                h = self.lins[i](h.reshape(T * B, -1)).view(T, B, -1)
            h = lif(h)
        return self.readout(h.sum(0))


class Norse(nn.Module):
    def __init__(self, w):
        super().__init__()
        import norse.torch as nt
        from norse.torch.functional.reset import reset_subtract

        dt = 1e-3
        p = nt.LIFBoxParameters(tau_mem_inv=torch.tensor(1.0 / (dt * (1.0 - BETA))),
                                v_th=torch.tensor(1.0), v_reset=torch.tensor(0.0), method="super",
                                alpha=torch.tensor(K), reset_method=reset_subtract)
        self.lins, self.readout = linears(w)
        self.cells = nn.ModuleList(nt.LIFBoxCell(p, dt=dt) for _ in w["hidden"])
        self.T, self.gain = w["T"], 1.0 / (dt * p.tau_mem_inv.item())

    def forward(self, x):
        states = [None] * len(self.cells)
        count = 0
        for _ in range(self.T):
            h = x
            for i, (lin, cell) in enumerate(zip(self.lins, self.cells)):
                h, states[i] = cell(lin(h) / self.gain, states[i])
            count = count + h
        return self.readout(count)


class Snnlab(nn.Module):
    def __init__(self, w, backend):
        super().__init__()
        self.net = SpikingMLP(n_in=w["n_in"], n_out=w["n_out"], hidden=w["hidden"], num_steps=w["T"],
                              slope=K, beta=BETA, backend=backend)

    def forward(self, x):
        return self.net(x).out


def make_step(model, w):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(w["B"], w["n_in"], generator=g) * 2
    y = torch.randint(0, w["n_out"], (w["B"],), generator=g)

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    def saved_bytes():
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = nn.functional.cross_entropy(model(x), y)
        del loss
        return total

    return step, saved_bytes


def builders(w):
    out = {"snnlab cpp": lambda: Snnlab(w, "cpp"), "snnlab compiled": lambda: Snnlab(w, "compiled"),
           "snnlab fused": lambda: Snnlab(w, "fused"),
           "snnlab eager": lambda: Snnlab(w, "eager"),
           "snntorch": lambda: Snntorch(w)}
    for name, cls in (("SpikingJelly", SpikingJelly), ("Norse", Norse)):
        try:
            cls(w)
            out[name] = (lambda c: lambda: c(w))(cls)
        except ImportError as e:
            print(f"# {name} not installed ({e.name}); pip install --no-deps -r benchmarks/requirements-peers.txt")
    out["ReLU floor"] = lambda: ReLUFloor(w)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workloads", default="AB")
    ap.add_argument("--cold", action="store_true",
                    help="empty Inductor cache and kernel dir: first step = full compile / build")
    args = ap.parse_args()
    if args.cold:
        import os
        import tempfile

        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-cold-")
        os.environ["SNNLAB_KERNEL_DIR"] = tempfile.mkdtemp(prefix="snnlab-kernels-cold-")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads; medians of {args.rounds} rounds x "
          f"{args.steps} steps (ms per train step)")
    for wname in args.workloads:
        w = WORKLOADS[wname]
        torch.manual_seed(0)
        impls = {name: make_step(b(), w) for name, b in builders(w).items()}
        times: dict[str, list[float]] = {n: [] for n in impls}
        first: dict[str, float] = {}
        for name, (step, _) in impls.items():
            t0 = time.perf_counter()
            step()
            first[name] = time.perf_counter() - t0
            step()
        for _ in range(args.rounds):
            for name, (step, _) in impls.items():
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    step()
                times[name].append((time.perf_counter() - t0) / args.steps * 1e3)
        med = {n: statistics.median(v) for n, v in times.items()}
        print(f"\nworkload {wname}: {w['n_in']} -> {' x '.join(map(str, w['hidden']))} -> {w['n_out']}, "
              f"T={w['T']}, batch {w['B']}")
        print(f"{'implementation':16s} {'median':>8s} {'min':>8s} {'max':>8s} {'/snntorch':>10s} "
              f"{'/floor':>7s} {'saved for backward':>19s} {'first step':>11s}")
        for name, (_, saved) in impls.items():
            m = med[name]
            print(f"{name:16s} {m:8.2f} {min(times[name]):8.2f} {max(times[name]):8.2f} "
                  f"{m / med['snntorch']:10.3f} {m / med['ReLU floor']:7.3f} {saved() / 2**20:15.1f} MiB "
                  f"{first[name]:10.2f}s")


if __name__ == "__main__":
    main()

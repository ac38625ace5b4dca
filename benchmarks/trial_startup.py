"""Where a sweep trial's seconds go before its first iteration, and the main job's efficiency.

    .venv/bin/python benchmarks/trial_startup.py                 # startup breakdown (~1 min)
    .venv/bin/python benchmarks/trial_startup.py --sweep         # + run the smoke main job, efficiency
    .venv/bin/python benchmarks/trial_startup.py --dir runs/rl_fixed_grid --wall 95   # efficiency only

Breakdown: one trial of `configs/rl_fixed_grid.yaml --budget smoke` replayed step by step in a
fresh Ray actor that asks for 1 CPU, as Tune starts a trial, with a timestamp around each
step - `ray.init`, the Ray worker process start (actor creation until its first method
returns), importing the trainable (`snnlab.sweep.trainables`: torch, RLlib), loading the cpp
LIF kernel (built at first use, cached under ~/.cache/snnlab/kernels), building the RLlib
Algorithm, the first and second `train()` (the trial's own compute), the trial's W&B offline
run (`wandb.init` + one row + `finish`, as sweeps log now), and the stall that Tune's
driver-side `WandbLoggerCallback` (used before) put on the driver per trial: starting its
queue actor and the first `put`.

`--sweep` runs the smoke main job (`snnlab sweep`, in a child process of this script) with
timed subclasses of the sweep's RLlib trainables, defined here: every trial process writes a
timestamp around each step (constructor, each `train()` with the Algorithm's own part and the
trial's W&B logging after it, checkpoints, cleanup) into `<results>/timing/<pid>.jsonl`; the
per-trial profile is read from those files. The production trainables carry no timing.

Efficiency of a sweep = (sum over trials of the trial's own compute time, `time_total_s` of its
last result.json row) / concurrency / sweep wall time. Concurrency is what the sweep can run
at once: CPUs // cpus_per_trial (2 on 2 cores). 1.0 would mean no second is spent outside
the trials' iterations.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAIN_JOB = REPO / "configs" / "rl_fixed_grid.yaml"


def efficiency(exp_dir: Path, wall_s: float, concurrency: int) -> dict:
    totals = {}
    for result in sorted(exp_dir.glob("*/result.json")):
        lines = [json.loads(x) for x in result.read_text().splitlines() if x.strip()]
        if lines:
            totals[result.parent.name] = float(lines[-1]["time_total_s"])
    compute = sum(totals.values())
    return {"trials": len(totals), "compute_s": compute, "wall_s": wall_s,
            "concurrency": concurrency, "efficiency": compute / concurrency / wall_s if wall_s else 0.0,
            "per_trial_s": (min(totals.values()), max(totals.values())) if totals else (0, 0)}


def run_smoke_sweep(storage: Path, timing: Path) -> tuple[float, float, str]:
    """Run the main job at smoke budget, as `snnlab sweep` in a child process, with the timed
    trainables (:func:`timed_sweep`); (process wall s, the CLI's own 'in N s', its output).
    Every trial process timestamps its steps into `timing`."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, __file__, "--timed-sweep", str(timing), "--", "sweep", str(MAIN_JOB),
                          "--budget", "smoke", "--storage", str(storage), "--verbose", "1"],
                         capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"the sweep failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    m = re.search(r"trials \(\d+ failed\) in (\d+) s", res.stdout)
    return wall, float(m.group(1)) if m else wall, res.stdout + res.stderr


# --- timed trainables: the sweep's RLlib trainables with a timestamp around each step -------
def _mark(timing: str, event: str, **extra) -> None:
    """Append one timestamped event of this (trial) process to `<timing>/<pid>.jsonl`."""
    os.makedirs(timing, exist_ok=True)
    with open(os.path.join(timing, f"{os.getpid()}.jsonl"), "a") as f:
        f.write(json.dumps({"event": event, "t": time.time(), "pid": os.getpid(), **extra}) + "\n")


def _process_start() -> float:
    """When this process started (wall clock), from /proc; 0 where there is no /proc."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        btime = next(int(ln.split()[1]) for ln in Path("/proc/stat").read_text().splitlines()
                     if ln.startswith("btime"))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return 0.0


def timed_trainables(timing: Path) -> dict:
    """{sweep RL trainable: its timed subclass}, for every algorithm. Defined in this script
    (Ray ships them to the trial processes by value; their bases are imported there from the
    sweep's code snapshot).

    A sweep trainable is `Sweep<NAME>(_FromTrialConfig, Spiking<NAME>)`; its timed subclass
    `Timed<Sweep...>(_TimedTrial, Sweep<NAME>, _TimedAlgorithm, Spiking<NAME>)` has the MRO
    _TimedTrial -> Sweep<NAME> -> _FromTrialConfig (the sweep layer: trial config, W&B) ->
    _TimedAlgorithm -> Spiking<NAME>, so `train_start` .. `train_end` is the Algorithm's own
    `train()` and `train_end` .. `wandb_end` the sweep layer's W&B logging after it. Each trial
    (also one run by a reused process: `reset_config` calls `__init__` again) starts with
    `init_start`, which carries the process's start time (the first one in a process file
    measures worker boot + imports)."""
    from snnlab.sweep.trainables import RL_TRAINABLES

    out = str(timing)

    class _TimedTrial:
        def __init__(self, config=None, **kwargs):
            _mark(out, "init_start", process_start=_process_start())
            super().__init__(config=config, **kwargs)
            _mark(out, "init_end")

        def train(self):
            _mark(out, "train_start")
            result = super().train()
            _mark(out, "wandb_end")
            return result

        def save_checkpoint(self, checkpoint_dir):
            _mark(out, "checkpoint_start")
            result = super().save_checkpoint(checkpoint_dir)
            _mark(out, "checkpoint_end")
            return result

        def cleanup(self):
            _mark(out, "cleanup_start")
            try:
                super().cleanup()
            finally:
                _mark(out, "cleanup_end")

    class _TimedAlgorithm:
        def train(self):
            result = super().train()
            _mark(out, "train_end")
            return result

    timed = {}
    for sweep_cls in RL_TRAINABLES.values():
        algorithm = sweep_cls.__bases__[-1]  # Spiking<NAME>, after the sweep layer
        cls = type(f"Timed{sweep_cls.__name__}", (_TimedTrial, sweep_cls, _TimedAlgorithm, algorithm),
                   {"__doc__": f"{sweep_cls.__name__} with timestamps (benchmarks/trial_startup.py)."})
        mro = cls.__mro__
        assert mro.index(sweep_cls) < mro.index(_TimedAlgorithm) == mro.index(algorithm) - 1, mro
        timed[sweep_cls] = cls
    return timed


def timed_sweep(timing: Path, cli_args: list[str]) -> int:
    """`snnlab sweep CLI_ARGS` with each RLlib trainable replaced by its timed subclass."""
    from unittest import mock

    from snnlab.cli import main as cli_main
    from snnlab.sweep import trainables

    timed, plain = timed_trainables(timing), trainables.trainable_for

    def trainable_for(sweep):
        cls = plain(sweep)
        if cls not in timed:
            sys.exit(f"no timed version of {cls.__name__} (a supervised sweep?)")
        return timed[cls]

    with mock.patch.object(trainables, "trainable_for", trainable_for):
        return cli_main(cli_args)


def sweep_profile(timing: Path, wall_s: float, concurrency: int) -> list[tuple[str, float]]:
    """Seconds per trial (mean over the sweep's trial processes) in each step, from the
    timestamps the trial processes wrote, and the trial slots' time outside any trial process."""
    import statistics

    segs: dict[str, list[float]] = {}
    spans = 0.0
    for f in sorted(timing.glob("*.jsonl")):
        ev = [json.loads(x) for x in f.read_text().splitlines()]
        inits = [i for i, e in enumerate(ev) if e["event"] == "init_start"]
        # one chunk per trial this process ran (reuse_actors: several), from its constructor
        for n, i in enumerate(inits):
            chunk = ev[i:inits[n + 1] if n + 1 < len(inits) else len(ev)]

            def t(name, chunk=chunk):
                return next(e["t"] for e in chunk if e["event"] == name)

            def pairs(a, b, chunk=chunk):
                starts = [e["t"] for e in chunk if e["event"] == a]
                ends = [e["t"] for e in chunk if e["event"] == b]
                return [y - x for x, y in zip(starts, ends)]

            t0 = (ev[0].get("process_start") or ev[0]["t"]) if n == 0 else t("init_start")
            trains = pairs("train_start", "train_end")
            parts = {
                "Ray worker boot + imports (new process only; 0 when reused)": t("init_start") - t0,
                "build the RLlib Algorithm (constructor)": t("init_end") - t("init_start"),
                "constructor -> first train() (Tune)": t("train_start") - t("init_end"),
                "first train() (compute; cpp kernel load on first forward)": trains[0],
                "other train() (compute)": sum(trains[1:]),
                "W&B logging in the trial (init at first result + rows)": sum(pairs("train_end", "wandb_end")),
                "checkpoints (save_checkpoint)": sum(pairs("checkpoint_start", "checkpoint_end")),
                "cleanup (Algorithm.stop + W&B finish)": sum(pairs("cleanup_start", "cleanup_end")),
            }
            span = max(e["t"] for e in chunk) - t0
            parts["rest inside the trial process (Tune between steps)"] = span - sum(parts.values())
            spans += span
            for k, v in parts.items():
                segs.setdefault(k, []).append(v)
    n = len(next(iter(segs.values()), []))
    rows = [(k, statistics.mean(v)) for k, v in segs.items()]
    rows.append((f"trial slots idle or starting processes ({concurrency} slots x wall - trial "
                 f"process spans, per trial)", (concurrency * wall_s - spans) / max(n, 1)))
    return rows


def breakdown() -> list[tuple[str, float]]:
    import ray

    from snnlab.sweep.spec import load_sweep

    sweep = load_sweep(MAIN_JOB, budget="smoke")
    trial = sweep.trials()[0]
    trial["wandb"] = {"mode": "offline", "project": "snnlab-bench", "group": "trial_startup"}
    no_wandb = {k: v for k, v in trial.items() if k != "wandb"}
    rows: list[tuple[str, float]] = []

    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}})
    rows.append(("ray.init (once per sweep)", time.perf_counter() - t))

    @ray.remote(num_cpus=1)
    class Trial:
        def ready(self):
            return os.getpid()

        def step(self, name, *args):
            t = time.perf_counter()
            getattr(self, name)(*args)
            return time.perf_counter() - t

        def imports(self):
            import snnlab.sweep.trainables  # noqa: F401  (torch, ray.rllib, snnlab.rl)

        def kernel(self):
            from snnlab.spiking import cpp

            assert cpp.available()

        def build(self, config):
            from snnlab.sweep.trainables import SweepPPO

            self.algo = SweepPPO(config=config)

        def train(self):
            self.algo.train()

        def wandb(self, config, directory):
            from snnlab.sweep.trainables import start_wandb

            os.chdir(directory)  # without a Tune storage the run goes under the working dir
            run = start_wandb(config, "bench0001", None)
            run.log({"training_iteration": 1, "score": 1.0})
            run.finish()

        def stop(self):
            self.algo.stop()

    t = time.perf_counter()
    actor = Trial.remote()
    ray.get(actor.ready.remote())
    rows.append(("Ray worker process start (per trial)", time.perf_counter() - t))
    with tempfile.TemporaryDirectory() as wdir:
        os.environ["WANDB_DIR"] = wdir
        for label, name, args in (
                ("import snnlab.sweep.trainables (torch, RLlib)", "imports", ()),
                ("cpp LIF kernel load (cached .so)", "kernel", ()),
                # without the trial's W&B entry: its run is the "W&B" step below (a second run in
                # the same process would be finished by that step's wandb.init, and the
                # Algorithm's stop() would then fail updating its summary)
                ("build the RLlib Algorithm (SweepPPO)", "build", (no_wandb,)),
                ("first train() (trial compute)", "train", ()),
                ("second train() (trial compute)", "train", ()),
                ("W&B offline run in the trial (init+log+finish)", "wandb", (trial, wdir)),
                ("Algorithm.stop()", "stop", ())):
            rows.append((label, ray.get(actor.step.remote(name, *args))))
    ray.kill(actor)

    # what Tune's WandbLoggerCallback did on the driver for every trial (before): a queue actor
    # (and a logging actor) per trial; the first put blocks until the queue actor runs
    from ray.util.queue import Queue

    stalls = []
    for _ in range(2):
        t = time.perf_counter()
        q = Queue(actor_options={"num_cpus": 0})
        q.put(("RESULT", {"score": 1.0}))
        stalls.append(time.perf_counter() - t)
        q.shutdown()
    rows.append(("driver stall per trial, old WandbLoggerCallback (queue actor + first put)",
                 sum(stalls) / len(stalls)))
    ray.shutdown()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", action="store_true", help="also run the smoke main job and report "
                    "its wall time and efficiency")
    ap.add_argument("--dir", type=Path, help="efficiency of an existing result folder (needs --wall)")
    ap.add_argument("--wall", type=float, help="wall time of the sweep in --dir, seconds")
    ap.add_argument("--concurrency", type=int, default=2, help="trials at once (CPUs // cpus_per_trial)")
    ap.add_argument("--no-breakdown", action="store_true")
    ap.add_argument("--keep", type=Path, help="with --sweep: keep its results (and timing/) here")
    ap.add_argument("--timed-sweep", type=Path, metavar="TIMING", help=argparse.SUPPRESS)  # --sweep's child
    ap.add_argument("cli_args", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.timed_sweep:
        sys.exit(timed_sweep(args.timed_sweep, args.cli_args))
    if args.cli_args:
        ap.error(f"unrecognized arguments: {' '.join(args.cli_args)}")
    os.environ.setdefault("WANDB_SILENT", "true")
    if not args.no_breakdown and not args.dir:
        print("time to a trial's first iteration, one smoke trial of the main job (s):")
        for label, s in breakdown():
            print(f"  {label:75s} {s:6.2f}")
    if args.dir:
        eff = efficiency(args.dir, args.wall or 0.0, args.concurrency)
        print(_eff_line(eff))
    if args.sweep:
        with tempfile.TemporaryDirectory() as d:
            root = args.keep or Path(d)
            timing = root / "timing"
            timing.mkdir(parents=True)
            wall, cli_wall, _ = run_smoke_sweep(root, timing)
            eff = efficiency(root / "rl_fixed_grid", cli_wall, args.concurrency)
            profile = sweep_profile(timing, cli_wall, args.concurrency)
        print(f"smoke main job: {wall:.0f} s for the whole command, {cli_wall:.0f} s of sweep "
              f"(as it prints: Tuner.fit, without ray.init and the summary)")
        print(_eff_line(eff))
        print("where a trial's seconds went in that sweep (mean per trial):")
        for label, s in profile:
            print(f"  {label:75s} {s:6.2f}")


def _eff_line(e: dict) -> str:
    lo, hi = e["per_trial_s"]
    return (f"sweep efficiency {e['efficiency']:.2f} = {e['compute_s']:.1f} s of trial compute "
            f"({e['trials']} trials, {lo:.1f}-{hi:.1f} s each) / {e['concurrency']} / "
            f"{e['wall_s']:.0f} s wall")


if __name__ == "__main__":
    main()

"""TD3 correctness check: Pendulum-v1 with an MLP actor, 20k env steps, several seeds.

CleanRL's and SB3's TD3 reach a mean evaluation return of about -200 or better on
Pendulum-v1 within 20k env steps; this runs snnlab's TD3 (configs/rl_pendulum_td3.yaml,
through ``snnlab train``'s own code path) for each seed and prints the evaluation return
after every 1000 env steps, the env steps at which it first reached -200, and the wall time.

    .venv/bin/python benchmarks/td3_pendulum.py --seeds 0 1 2 [--set model.actor=spiking]
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

from snnlab.experiment import load_experiment
from snnlab.rl.train import train_rl

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "rl_pendulum_td3.yaml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threshold", type=float, default=-200.0)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()
    rows = []
    for seed in args.seeds:
        cfg = load_experiment(CONFIG, [f"seed={seed}", "logging.wandb=off", *args.overrides])
        curve: list[tuple[int, float]] = []

        def echo(line: str) -> None:
            print(f"seed {seed} | {line}", flush=True)

        with tempfile.TemporaryDirectory() as d:
            res = train_rl(cfg, run_dir=Path(d) / "run", echo=echo)
            import csv

            with open(Path(d) / "run" / "progress.csv") as f:
                curve = [(int(float(r["env_steps"])), float(r["eval_return_mean"])) for r in csv.DictReader(f)]
        reached = next((s for s, r in curve if r >= args.threshold), None)
        rows.append((seed, reached, max(r for _, r in curve), curve[-1][1], res.wall_time_s))
    print(f"\n| seed | env steps to {args.threshold:g} | best eval return | final eval return | wall time (s) |")
    print("|---|---|---|---|---|")
    for seed, reached, best, final, wall in rows:
        print(f"| {seed} | {reached if reached is not None else 'not reached'} | {best:.1f} | {final:.1f} | {wall:.0f} |")
    ok = sum(r[1] is not None for r in rows)
    print(f"\n{ok}/{len(rows)} seeds reached {args.threshold:g}"
          + ("" if not rows else f"; mean final return {sum(r[3] for r in rows) / len(rows):.1f}")
          + ("" if all(math.isfinite(r[3]) for r in rows) else " (some runs had no evaluation)"))


if __name__ == "__main__":
    main()

"""Single-env steps per second of snnlab/QuadrotorHover-v0 on one core.

    .venv/bin/python benchmarks/env_steps.py [--seconds 3] [--repeats 5]

Reports the raw env (``QuadrotorHover()``) and the registered one
(``gym.make``, i.e. with gymnasium's TimeLimit / OrderEnforcing /
PassiveEnvChecker wrappers), stepping random actions and resetting on
episode end. Medians over repeats.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np

from snnlab.rl.envs import ENV_ID, QuadrotorHover


def steps_per_second(env, seconds: float) -> float:
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(4096, 4)).astype(np.float32)
    env.reset(seed=0)
    n, t0 = 0, time.perf_counter()
    while True:
        for a in actions[:512]:
            _, _, term, trunc, _ = env.step(a)
            if term or trunc:
                env.reset()
        n += 512
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    envs = {"QuadrotorHover() raw": QuadrotorHover(), f"gym.make('{ENV_ID}')": gym.make(ENV_ID)}
    res: dict[str, list[float]] = {k: [] for k in envs}
    for _ in range(args.repeats):
        for name, env in envs.items():
            res[name].append(steps_per_second(env, args.seconds))
    for name, v in res.items():
        print(f"{name:42s} median {statistics.median(v):9.0f} steps/s  (min {min(v):.0f}, max {max(v):.0f})")


if __name__ == "__main__":
    main()

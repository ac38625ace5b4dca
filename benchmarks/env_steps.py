"""Env steps per second of snnlab/QuadrotorHover-v0 on one core.

    taskset -c 0 .venv/bin/python benchmarks/env_steps.py [--seconds 3] [--repeats 5] [--batched 1,16,64,256]

Reports the raw env (``QuadrotorHover()``), the registered one (``gym.make``,
i.e. with gymnasium's TimeLimit / OrderEnforcing / PassiveEnvChecker
wrappers), gymnasium's synchronous vector env over 8 and 32 copies (RLlib's
default ``gym_env_vectorize_mode="sync"``) and the batched
``QuadrotorHoverVector`` (``vectorization_mode="vector_entry_point"``) at the
``--batched`` sizes, stepping random actions and resetting on episode end
(vector envs: their NEXT_STEP autoreset). Vector envs count every drone's
step. Medians over repeats; pin to one core with ``taskset``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np

from snnlab.quadrotor.env import ENV_ID, QuadrotorHover


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


def vector_steps_per_second(num_envs: int, seconds: float, mode: str = "sync") -> float:
    """Env steps/s (all sub-envs counted) of a vector env (``mode``: sync or vector_entry_point)."""
    venv = gym.make_vec(ENV_ID, num_envs=num_envs, vectorization_mode=mode)
    venv.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(256, num_envs, 4)).astype(np.float32)
    n, t0 = 0, time.perf_counter()
    while True:
        for a in actions:
            venv.step(a)  # autoreset handles finished sub-envs
        n += len(actions) * num_envs
        dt = time.perf_counter() - t0
        if dt >= seconds:
            venv.close()
            return n / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batched", default="1,16,64,256",
                    help="QuadrotorHoverVector sizes, comma-separated ('' to skip)")
    ap.add_argument("--skip-single", action="store_true", help="only the batched env")
    args = ap.parse_args()
    sizes = [int(x) for x in args.batched.split(",") if x.strip()]
    if args.skip_single:
        return report_batched(sizes, args)
    envs = {"QuadrotorHover() raw": QuadrotorHover(), f"gym.make('{ENV_ID}')": gym.make(ENV_ID)}
    res: dict[str, list[float]] = {k: [] for k in envs}
    for _ in range(args.repeats):
        for name, env in envs.items():
            res[name].append(steps_per_second(env, args.seconds))
    for name, v in res.items():
        print(f"{name:42s} median {statistics.median(v):9.0f} steps/s  (min {min(v):.0f}, max {max(v):.0f})")
    for n in (8, 32):
        v = [vector_steps_per_second(n, args.seconds) for _ in range(args.repeats)]
        print(f"{f'gym.make_vec(..., num_envs={n}, sync)':42s} median {statistics.median(v):9.0f} steps/s  "
              f"(min {min(v):.0f}, max {max(v):.0f})")
    report_batched(sizes, args)


def report_batched(sizes: list[int], args) -> None:
    for n in sizes:
        v = [vector_steps_per_second(n, args.seconds, "vector_entry_point") for _ in range(args.repeats)]
        print(f"{f'QuadrotorHoverVector num_envs={n}':42s} median {statistics.median(v):9.0f} steps/s  "
              f"(min {min(v):.0f}, max {max(v):.0f})")


if __name__ == "__main__":
    main()

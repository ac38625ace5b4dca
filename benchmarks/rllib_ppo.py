"""RLlib PPO: the spiking actor vs RLlib's default MLP of the same size, with 1 or N envs.

    .venv/bin/python benchmarks/rllib_ppo.py [--iterations 4] [--backends cpp] [--num-envs 1,8]
                                             [--env CartPole-v1|snnlab/QuadrotorHover-v0] [--threads 1]
                                             [--adam foreach|loop|fused]

All: PPO (new API stack), num_env_runners=0, 2000 env steps per iteration (4000 on the
quadrotor), minibatch 128, 10 epochs, actor hidden [64, 64, 64]; the spiking actor runs T=4
internal steps per action (reset mode), once per LIF backend given. Each actor runs with
each number of envs per EnvRunner (the quadrotor's N drones in one numpy step:
``vectorize_mode: vector_entry_point``). Reported per iteration (median after the first):
sampling env steps/s (RLlib's env_runner_sampling_timer), the learner update time, the
whole iteration and env steps/s over the whole iteration (sampling + learning). ``--adam``: the
spiking PPO's ``algorithm.adam`` (the MLP runs RLlib's PPO as shipped).
"""

from __future__ import annotations

import argparse
import statistics

import ray
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

from snnlab.experiment import validate_experiment
from snnlab.quadrotor.env import ENV_ID
from snnlab.rl.train import build_algorithm_config


def batch_size(env: str) -> int:
    return 4000 if env == ENV_ID else 2000


def vectorize_mode(env: str) -> str:
    return "vector_entry_point" if env == ENV_ID else "sync"


def spiking_config(env: str, backend: str, num_envs: int, adam: str = "foreach"):
    cfg = validate_experiment({
        "kind": "rl", "env": env, "logging": {"wandb": "off"},
        "algorithm": {"name": "PPO", "train_batch_size": batch_size(env), "adam": adam},
        "model": {"hidden": [64, 64, 64], "num_steps": 4, "backend": backend},
        "runners": {"num_envs_per_env_runner": num_envs, "vectorize_mode": vectorize_mode(env)},
        "slope": {"kind": "fixed", "k": 2}}, "benchmark")
    return build_algorithm_config(cfg)


def mlp_config(env: str, num_envs: int):
    return (PPOConfig().environment(env)
            .env_runners(num_env_runners=0, num_envs_per_env_runner=num_envs,
                         gym_env_vectorize_mode=vectorize_mode(env))
            .training(train_batch_size_per_learner=batch_size(env), minibatch_size=128,
                      num_epochs=10, lr=3e-4)
            .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[64, 64, 64],
                                                       vf_share_layers=False)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--backends", default="cpp", help="LIF backends of the spiking actor")
    ap.add_argument("--num-envs", default="1,8", help="envs per EnvRunner, comma-separated")
    ap.add_argument("--env", default="CartPole-v1")
    ap.add_argument("--adam", default="foreach", choices=("foreach", "loop", "fused"),
                    help="the spiking PPO's torch Adam implementation")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of this process "
                    "(Learner and local EnvRunner); default: torch's")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    runs = []
    for n in (int(x) for x in args.num_envs.split(",")):
        runs += [(f"spiking T=4, {b}, {n} env", (lambda b, n: lambda: spiking_config(args.env, b, n, args.adam))(b, n))
                 for b in args.backends.split(",")]
        runs.append((f"MLP actor, {n} env", (lambda n: lambda: mlp_config(args.env, n))(n)))
    print(f"{args.env}: {batch_size(args.env)} env steps per iteration")
    for name, make in runs:
        algo = make().build_algo()
        rows = []
        for _ in range(args.iterations):
            r = algo.train()
            t = r["timers"]
            steps = r["env_runners"]["num_env_steps_sampled"]
            rows.append((steps / t["env_runner_sampling_timer"], t["learner_update_timer"],
                         r["time_this_iter_s"], steps / r["time_this_iter_s"]))
        algo.stop()
        rest = rows[1:] or rows
        med = [statistics.median(x[i] for x in rest) for i in range(4)]
        print(f"{name:28s} sampling {med[0]:7.0f} env steps/s | learner update {med[1]:5.2f} s | "
              f"iteration {med[2]:5.2f} s | {med[3]:6.0f} env steps/s overall", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()

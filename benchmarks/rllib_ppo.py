"""RLlib PPO on CartPole-v1: the spiking actor vs RLlib's default MLP of the same size.

    .venv/bin/python benchmarks/rllib_ppo.py [--iterations 4] [--backends fused,cpp]

Both: PPO (new API stack), num_env_runners=0, 2000 env steps per iteration,
minibatch 128, 10 epochs, actor hidden [64, 64, 64]; the spiking actor runs T=4
internal steps per action (reset mode), once per LIF backend given. Reported per
iteration (median after the first): sampling env steps/s (RLlib's
env_runner_sampling_timer) and the learner update time.
"""

from __future__ import annotations

import argparse
import statistics

import ray
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

from snnlab.config import validate_experiment
from snnlab.rl.train import build_algorithm_config


def spiking_config(backend: str):
    cfg = validate_experiment({"kind": "rl", "env": "CartPole-v1", "logging": {"wandb": "off"},
                               "model": {"hidden": [64, 64, 64], "num_steps": 4,
                                         "backend": backend},
                               "slope": {"kind": "fixed", "k": 2}}, "benchmark")
    return build_algorithm_config(cfg)


def mlp_config():
    return (PPOConfig().environment("CartPole-v1").env_runners(num_env_runners=0)
            .training(train_batch_size_per_learner=2000, minibatch_size=128, num_epochs=10, lr=3e-4)
            .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[64, 64, 64],
                                                       vf_share_layers=False)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--backends", default="fused,cpp", help="LIF backends of the spiking actor")
    args = ap.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    runs = [(f"spiking T=4, {b}", (lambda b: lambda: spiking_config(b))(b))
            for b in args.backends.split(",")]
    for name, make in (*runs, ("MLP actor", mlp_config)):
        algo = make().build_algo()
        rows = []
        for _ in range(args.iterations):
            r = algo.train()
            t = r["timers"]
            steps = r["env_runners"]["num_env_steps_sampled"]
            rows.append((steps / t["env_runner_sampling_timer"], t["learner_update_timer"],
                         r["time_this_iter_s"]))
        algo.stop()
        rest = rows[1:] or rows
        print(f"{name:22s} sampling {statistics.median(x[0] for x in rest):7.0f} env steps/s | "
              f"learner update {statistics.median(x[1] for x in rest):5.2f} s | "
              f"iteration {statistics.median(x[2] for x in rest):5.2f} s")
    ray.shutdown()


if __name__ == "__main__":
    main()

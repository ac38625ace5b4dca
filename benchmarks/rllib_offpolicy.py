"""Off-policy RL on the quadrotor: RLlib's SAC and snnlab's TD3, spiking actor vs MLP, 1 vs N envs.

    .venv/bin/python benchmarks/rllib_offpolicy.py [--iterations 4] [--num-envs 1,16]
                                                   [--algos SAC,TD3] [--steps 2000]

Every run: ``snnlab/QuadrotorHover-v0`` (N drones in one numpy step via
``vectorize_mode: vector_entry_point``), num_env_runners=0, one torch thread, ``--steps``
env steps per iteration, 1000 random-warm-up steps (inside the first iteration, which the
medians skip), batch 256, one update per 4 env steps (0.25, the drone study's TD3 ratio),
actor and critics [64, 64].

- SAC: the spiking actor (``SpikingSAC``, T=4, reset mode) with snnlab's flat replay buffer
  (the default) and with RLlib's ``EpisodeReplayBuffer`` (``replay_buffer: episode``), and
  RLlib's SAC as shipped (default module, MLP actor, ``EpisodeReplayBuffer``, DQN's step).
- TD3: snnlab's TD3 with ``FlatEpisodeReplayBuffer``; ``model.actor: spiking`` vs ``mlp``.

Reported per iteration (median after the first): sampling env steps/s (RLlib's
env_runner_sampling_timer), one learner update and one replay-buffer sample (RLlib's timers,
a moving average per call; TD3 makes a round's updates in one call and draws their batches at
once, so both timers are divided by the updates per call), the whole iteration and env steps/s
over it.
"""

from __future__ import annotations

import argparse
import statistics

import ray
import torch

from snnlab.experiment import validate_experiment
from snnlab.quadrotor.env import ENV_ID
from snnlab.rl.train import build_algorithm_config

RATIO = 0.25  # updates per env step
FRAGMENT = 10  # env steps per env per sample call (then RATIO x FRAGMENT x N updates)


VARIANTS = {"SAC": [("spiking", "flat"), ("spiking", "episode"), ("mlp", "episode")],
            "TD3": [("spiking", "flat"), ("mlp", "flat")]}


def algorithm(name: str, steps: int, num_envs: int, buffer: str) -> dict:
    common = {"name": name, "train_batch_size": 256, "learning_starts": 1000,
              "env_steps_per_iteration": steps, "replay_capacity": 100_000, "replay_buffer": buffer}
    if name == "TD3":
        # rollout_fragment_length x num_envs env steps, then RATIO x that many updates
        return {**common, "updates_per_env_step": RATIO, "rollout_fragment_length": FRAGMENT}
    # SAC: DQN's step trains train_batch_size x updates per sampled step -> training_intensity
    return {**common, "rollout_fragment_length": FRAGMENT, "training_intensity": 256 * RATIO}


def build(name: str, actor: str, buffer: str, num_envs: int, steps: int):
    model = {"hidden": [64, 64], "num_steps": 4, "mode": "reset", "critic_hidden": [64, 64]}
    if name == "TD3":
        model["actor"] = actor
    cfg = validate_experiment({
        "kind": "rl", "env": ENV_ID, "logging": {"wandb": "off"},
        "algorithm": algorithm(name, steps, num_envs, buffer), "model": model,
        "runners": {"num_envs_per_env_runner": num_envs, "vectorize_mode": "vector_entry_point"},
        "slope": {"kind": "fixed", "k": 2}}, "benchmark")
    config = build_algorithm_config(cfg)
    if name == "SAC" and actor == "mlp":  # RLlib's own SAC: default module and algorithm class
        from ray.rllib.algorithms.sac import SACConfig
        from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

        mlp = SACConfig()
        mlp.update_from_dict({k: v for k, v in config.to_dict().items()
                              if k not in ("rl_module_spec", "_rl_module_spec", "callbacks",
                                           "callbacks_class", "model_config", "_model_config",
                                           "algo_class", "class")})
        config = mlp.rl_module(rl_module_spec=None, model_config=DefaultModelConfig(
            fcnet_hiddens=[64, 64], fcnet_activation="relu"))
    return config


def count_update_calls(algo) -> list[int]:
    """[learner_group.update calls, Learner updates at the last reading]: wraps the update."""
    calls = [0, 0]
    update = algo.learner_group.update

    def counted(*a, **k):
        calls[0] += 1
        return update(*a, **k)

    algo.learner_group.update = counted
    return calls


def updates_per_call(algo, calls: list[int]) -> float:
    """Learner updates per learner_group.update call since the last reading (TD3's learner counts
    its updates; 1 per call for every other algorithm)."""
    learner = algo.learner_group._learner
    if not hasattr(learner, "_updates") or not calls[0]:
        return 1.0
    total = sum(learner._updates.values())
    per_call = (total - calls[1]) / calls[0]
    calls[:] = [0, total]
    return per_call or 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--num-envs", default="1,16", help="drones per EnvRunner, comma-separated")
    ap.add_argument("--algos", default="SAC,TD3")
    ap.add_argument("--steps", type=int, default=2000, help="env steps per iteration")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    print(f"{ENV_ID}: {args.steps} env steps per iteration, {RATIO} updates of 256 per env step")
    for name in args.algos.split(","):
        for n in (int(x) for x in args.num_envs.split(",")):
            for actor, buffer in VARIANTS[name]:
                algo = build(name, actor, buffer, n, args.steps).build_algo()
                calls = count_update_calls(algo)
                rows = []
                for _ in range(args.iterations):
                    r = algo.train()
                    t = r["timers"]
                    steps = r["env_runners"]["num_env_steps_sampled"]
                    # TD3 makes a round's updates in one learner_group.update call (issue #20):
                    # its timer covers all of them
                    per_call = updates_per_call(algo, calls)
                    rows.append((FRAGMENT * n / t["env_runner_sampling_timer"],  # per sample call
                                 1000 * t.get("learner_update_timer", float("nan")) / per_call,
                                 1000 * t.get("replay_buffer_sampling_timer", float("nan")) / per_call,
                                 r["time_this_iter_s"], steps / r["time_this_iter_s"]))
                algo.stop()
                rest = rows[1:] or rows
                med = [statistics.median(x[i] for x in rest) for i in range(5)]
                label = "RLlib's SAC (MLP)" if name == "SAC" and actor == "mlp" else f"{name} {actor}"
                print(f"{label:18s} {buffer:7s} buffer, {n:2d} env | sampling {med[0]:6.0f} env steps/s | "
                      f"update {med[1]:5.1f} ms | replay sample {med[2]:5.1f} ms | iteration {med[3]:5.2f} s | {med[4]:5.0f} env steps/s overall", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()

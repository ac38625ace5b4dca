"""Build RLlib algorithms from snnlab configs and run them.

``build_algorithm_config(cfg)`` turns a validated :class:`snnlab.config.RLConfig`
into an RLlib ``AlgorithmConfig`` (new API stack) for ``SpikingPPO``,
``SpikingSAC`` or ``SpikingTD3`` with the spiking module, the slope-schedule callback and the
schedule in ``learner_config_dict``. ``train_rl(cfg)`` runs it for a bounded
number of iterations with a one-line progress report per iteration.

Run directory (``<logging.out_dir>/<logging.name>/version_<n>/``)::

    config.yaml      the validated config that ran
    progress.csv     one row per iteration (returns, env steps, slope, score, time)
    tensorboard/     the same scalars for TensorBoard
    wandb/           W&B run files (offline-run-* by default)
    checkpoint/      the final Algorithm checkpoint (restore with Algorithm.from_checkpoint)
    result.json      final / best score, iterations, env steps, wall time
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from ..config import RLConfig
from ..rundir import next_version_dir
from .callbacks import (
    DIAGNOSTICS_KEY,
    FULL_EPISODES_KEY,
    SCHEDULE_KEY,
    FullEpisodesCallback,
    GradientDiagnosticsCallback,
    SlopeScheduleCallback,
    SpikeRatesCallback,
    SpikingPPO,
    SpikingSAC,
    SpikingTD3,
    iteration_score,
)
from .curriculum import CurriculumCallback
from ..quadrotor.env import ENV_ID, make_quadrotor


@dataclass
class RLResult:
    run_dir: str
    final_score: float
    best_score: float
    iterations: int
    env_steps: int
    wall_time_s: float
    slopes: list[float]
    reached_target: bool


def register_envs() -> None:
    from ray.tune.registry import register_env

    register_env(ENV_ID, make_quadrotor)


def build_algorithm_config(cfg: RLConfig):
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from .modules import SpikingPPOModule, spiking_sac_module_class

    register_envs()
    schedule = cfg.slope.build()
    model_config = cfg.model.module_config(slope=schedule.k)
    a = cfg.algorithm
    if a.name == "PPO":
        from ray.rllib.algorithms.ppo import PPOConfig

        config = PPOConfig(algo_class=SpikingPPO).training(
            lr=a.lr, gamma=a.gamma, lambda_=a.lambda_, clip_param=a.clip_param,
            vf_clip_param=a.vf_clip_param, entropy_coeff=a.entropy_coeff,
            vf_loss_coeff=a.vf_loss_coeff, train_batch_size_per_learner=a.train_batch_size,
            minibatch_size=a.minibatch_size, num_epochs=a.num_epochs, grad_clip=a.grad_clip,
        )
        module_class = SpikingPPOModule
    elif a.name == "SAC":
        from .sac import FlatSACConfig
        from .td3 import FLAT_BUFFER

        config = FlatSACConfig(algo_class=SpikingSAC).training(
            actor_lr=a.actor_lr, critic_lr=a.critic_lr, alpha_lr=a.alpha_lr, gamma=a.gamma,
            tau=a.tau, initial_alpha=a.initial_alpha, train_batch_size_per_learner=a.train_batch_size,
            num_steps_sampled_before_learning_starts=a.learning_starts,
            training_intensity=a.training_intensity,
            replay_buffer_config=(
                {"type": "PrioritizedEpisodeReplayBuffer", "capacity": a.replay_capacity,
                 "alpha": 0.6, "beta": 0.4} if a.prioritized_replay
                else {"type": FLAT_BUFFER if a.replay_buffer == "flat" else "EpisodeReplayBuffer",
                      "capacity": a.replay_capacity}),
        ).env_runners(rollout_fragment_length=a.rollout_fragment_length).reporting(
            min_sample_timesteps_per_iteration=a.env_steps_per_iteration)
        module_class = spiking_sac_module_class()
    else:
        from .td3 import FLAT_BUFFER, TD3Config, TD3TorchRLModule

        runners = cfg.runners.num_env_runners
        config = TD3Config(algo_class=SpikingTD3).training(
            actor_lr=a.actor_lr, critic_lr=a.critic_lr, gamma=a.gamma, tau=a.tau,
            policy_delay=a.policy_delay, target_noise=a.target_noise,
            target_noise_clip=a.target_noise_clip, exploration_noise=a.exploration_noise,
            train_batch_size_per_learner=a.train_batch_size, grad_clip=a.grad_clip,
            num_steps_sampled_before_learning_starts=a.learning_starts,
            # DQN's round robin counts the local EnvRunner as sampling too (runners + 1)
            training_intensity=a.updates_per_env_step * a.train_batch_size * (runners + 1) / max(runners, 1),
            replay_buffer_config={"type": FLAT_BUFFER if a.replay_buffer == "flat" else "EpisodeReplayBuffer",
                                  "capacity": a.replay_capacity},
        ).env_runners(rollout_fragment_length=a.rollout_fragment_length).reporting(
            min_sample_timesteps_per_iteration=a.env_steps_per_iteration)
        module_class = TD3TorchRLModule
    config = (
        config.environment(cfg.env, env_config=dict(cfg.env_config))
        .env_runners(num_env_runners=cfg.runners.num_env_runners,
                     num_envs_per_env_runner=cfg.runners.num_envs_per_env_runner,
                     gym_env_vectorize_mode=cfg.runners.vectorize_mode)
        .learners(num_learners=cfg.runners.num_learners)
        .rl_module(rl_module_spec=RLModuleSpec(module_class=module_class, model_config=model_config))
        .callbacks([SlopeScheduleCallback, SpikeRatesCallback, GradientDiagnosticsCallback,
                    CurriculumCallback, FullEpisodesCallback])  # the curriculum: a no-op unless env_config has a staged reward
        .debugging(seed=cfg.seed)
        .learners(learner_config_dict={SCHEDULE_KEY: cfg.slope.model_dump(),
                                       DIAGNOSTICS_KEY: cfg.diagnostics.model_dump()})
    )
    if cfg.evaluation.interval:
        config = config.evaluation(evaluation_interval=cfg.evaluation.interval,
                                   evaluation_duration=cfg.evaluation.episodes,
                                   evaluation_duration_unit="episodes",
                                   evaluation_num_env_runners=0,
                                   evaluation_config={"explore": False})  # deterministic policy
    return config


def ensure_ray(num_cpus: int | None = None) -> bool:
    """Start a local Ray instance unless one is running; return whether we started it."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    return True


def iteration_row(result: dict) -> dict[str, float]:
    """The scalars snnlab logs per iteration, by name."""
    er = result.get("env_runners", {})
    ev = result.get("evaluation", {}).get("env_runners", {})
    nan = float("nan")
    score = iteration_score(result)
    return {
        "iteration": result.get("training_iteration", nan),
        "env_steps": er.get("num_env_steps_sampled_lifetime", nan),
        "episode_return_mean": er.get("episode_return_mean", nan),
        "eval_return_mean": ev.get("episode_return_mean", nan),
        "episode_len_mean": er.get("episode_len_mean", nan),
        "eval_len_mean": ev.get("episode_len_mean", nan),
        "eval_full_episodes": ev.get(FULL_EPISODES_KEY, nan),
        "score": nan if score is None else score,
        "slope": result.get("slope", nan),
        "slope_next": result.get("slope_next", nan),
        "time_total_s": result.get("time_total_s", nan),
        **({"curriculum_stage": result["curriculum_stage"]} if "curriculum_stage" in result else {}),
        **{k: v for k, v in result.items() if k.startswith(("spike_rate/", "grad/"))},
    }


def _echo(line: str) -> None:
    print(line, flush=True)


def train_rl(cfg: RLConfig, run_dir: str | Path | None = None, echo=_echo) -> RLResult:
    run_dir = Path(run_dir) if run_dir else next_version_dir(Path(cfg.logging.out_dir) / cfg.logging.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    if cfg.runners.torch_threads:
        import torch

        torch.set_num_threads(cfg.runners.torch_threads)
    started = ensure_ray()
    algo = build_algorithm_config(cfg).build_algo()
    writer = wandb_run = None
    rows: list[dict] = []
    t0 = time.perf_counter()
    try:
        if cfg.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run_dir / "tensorboard"))
        if cfg.logging.wandb != "off":
            import wandb

            if cfg.logging.wandb == "offline":
                os.environ["WANDB_MODE"] = "offline"
            wandb_run = wandb.init(project=cfg.logging.wandb_project, name=cfg.logging.name,
                                   dir=str(run_dir.resolve()), config=cfg.model_dump(),
                                   mode=cfg.logging.wandb, reinit="finish_previous")
        best = -math.inf
        for _ in range(cfg.stop.iterations):
            row = iteration_row(algo.train())
            rows.append(row)
            score = row["score"]
            if not math.isnan(score):
                best = max(best, score)
            full = row["eval_full_episodes"]  # only where an evaluation ran and reported it
            echo(f"iter {int(row['iteration']):4d} | return {row['episode_return_mean']:8.2f} | "
                 f"score {score:8.2f} | slope {row['slope']:7.3g} | "
                 f"env steps {int(row['env_steps']):7d} | "
                 + ("" if math.isnan(full) else f"eval full {full:4.0%} | ")
                 + f"{time.perf_counter() - t0:6.1f} s")
            if cfg.logging.csv:
                _write_csv(run_dir / "progress.csv", rows)
            step = int(row["iteration"])
            if writer is not None:
                for k, v in row.items():
                    writer.add_scalar(k, v, step)
            if wandb_run is not None:
                wandb_run.log(row, step=step)
            if cfg.stop.target_return is not None and not math.isnan(score) and score >= cfg.stop.target_return:
                break
        algo.save_to_path(str((run_dir / "checkpoint").resolve()))
        wall = time.perf_counter() - t0
    finally:
        if writer is not None:
            writer.close()
        if wandb_run is not None:
            wandb_run.finish()
        algo.stop()
        if started:
            import ray

            ray.shutdown()
    last = rows[-1]
    result = RLResult(
        run_dir=str(run_dir), final_score=last["score"], best_score=best, iterations=len(rows),
        env_steps=int(last["env_steps"]), wall_time_s=round(wall, 2),
        slopes=[r["slope"] for r in rows],
        reached_target=cfg.stop.target_return is not None and best >= cfg.stop.target_return,
    )
    (run_dir / "result.json").write_text(json.dumps(asdict(result), indent=2))
    return result


def _write_csv(path: Path, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(k for r in rows for k in r))  # diagnostics appear every N rows only
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)

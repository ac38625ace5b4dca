"""Build RLlib algorithms from snnlab configs and run them.

``build_algorithm_config(cfg)`` turns a validated :class:`snnlab.rl.config.RLConfig`
into an RLlib ``AlgorithmConfig`` (new API stack): the algorithm's own part comes from its
registry entry (:mod:`snnlab.rl.registry`: ``SpikingPPO``, ``SpikingSAC``, ``SpikingTD3``, with
their modules), the rest - env, runners, module spec, snnlab's callbacks, the schedule in
``learner_config_dict``, seed, evaluation - is the same for every algorithm. ``train_rl(cfg)`` runs it for a bounded
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

from ..quadrotor.env import ENV_ID, make_quadrotor
from ..rundir import next_version_dir
from ..precision import check_precision
from .callbacks import CALLBACKS, DIAGNOSTICS_KEY, FULL_EPISODES_KEY, SCHEDULE_KEY, iteration_score
from .config import RLConfig
from .registry import REGISTRY


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

    register_envs()
    schedule = cfg.slope.build()
    model_config = cfg.model.module_config(slope=schedule.k)
    config, module_class = REGISTRY[cfg.algorithm.name].build(cfg)
    config = (
        config.environment(cfg.env, env_config=dict(cfg.env_config))
        .env_runners(num_env_runners=cfg.runners.num_env_runners,
                     num_envs_per_env_runner=cfg.runners.num_envs_per_env_runner,
                     gym_env_vectorize_mode=cfg.runners.vectorize_mode)
        .learners(num_learners=cfg.runners.num_learners)
        .rl_module(rl_module_spec=RLModuleSpec(module_class=module_class, model_config=model_config))
        .callbacks(list(CALLBACKS))
        .debugging(seed=cfg.seed)
        .learners(learner_config_dict={SCHEDULE_KEY: cfg.slope.model_dump(),
                                       DIAGNOSTICS_KEY: cfg.diagnostics.model_dump()})
    )
    if cfg.runners.precision != "32-true":
        from .precision import autocast_learner

        check_precision(cfg.runners.precision, "runners.precision")
        config = config.learners(learner_class=autocast_learner(config.get_default_learner_class()))
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

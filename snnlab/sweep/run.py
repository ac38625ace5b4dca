"""Run a sweep with Ray Tune: locally or on a cluster, resumable, logged to W&B and files.

Result directory: ``<storage>/<sweep name>/`` (Tune's experiment directory):

    snnlab_sweep.yaml        the resolved sweep (base experiment, grid, metric, threshold)
    experiment_state-*.json  Tune's state (``tune.ExperimentAnalysis`` / ``Tuner.restore``)
    <trial name>/            per trial: params.json, result.json, progress.csv,
                             events.out.tfevents.* (TensorBoard), checkpoint_*/,
                             wandb/offline-run-*/ (W&B offline runs)
    <label>_seed<seed>/      a population setting (PBT / PB2): its own Tune experiment
                             (experiment_state, pbt_global.txt, pbt_policy_*.txt) with one
                             folder per member, <label>_seed<seed>_m<i>/
    summary.csv, summary.md  the comparison table per setting

The grid (every setting of one trial per seed) is one Tune run, exactly as without
populations; each population (setting x params x seed) is one more Tune run with Tune's
PopulationBasedTraining or PB2 as its scheduler, after the grid, in the same Ray instance.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..config import ConfigError
from .spec import Sweep, population_name, run_steps, trial_name
from .storage import crash_safe_uploads, restart_unfinished as restart_trials, trim_to_checkpoints
from .summary import SPEC_FILE, write_summary


@dataclass
class SweepOutcome:
    exp_dir: str
    trials: int
    errors: list[str]
    summary_md: str
    wall_time_s: float


def _check_address(address: str) -> None:
    """Fail in one line, before any trial, when a cluster address does not answer."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address!r}: expected auto, ray://HOST:PORT or HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as e:
        raise ConfigError(f"--address {address}: no Ray cluster answers there ({e.strerror or e})") from None


def worker_env(wandb_mode: str, storage: str | None = None) -> dict[str, str]:
    """Environment every trial process gets: W&B mode, Tune's output style and, for a local
    results folder, one Inductor cache under it (``<storage>/.inductor_cache``) so that trials
    with ``model.backend: compiled`` compile each kernel once per machine, not once per trial."""
    env = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}
    if wandb_mode == "offline":
        env["WANDB_MODE"] = "offline"
    elif wandb_mode == "online" and os.environ.get("WANDB_API_KEY"):  # trials log themselves
        env["WANDB_API_KEY"] = os.environ["WANDB_API_KEY"]
    if storage and "://" not in storage:
        env["TORCHINDUCTOR_CACHE_DIR"] = os.environ.get(
            "TORCHINDUCTOR_CACHE_DIR", str(Path(storage).expanduser().resolve() / ".inductor_cache"))
    return env


def connect(address: str | None, wandb_mode: str, num_cpus: int | None = None,
            storage: str | None = None) -> bool:
    """Start or join Ray with the environment every worker needs; return whether we started it."""
    import ray

    env = worker_env(wandb_mode, storage)
    os.environ.update(env)
    if address:
        _check_address(address)
    if ray.is_initialized():
        return False
    with tempfile.TemporaryDirectory(prefix="snnlab-code-") as snap:
        kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False,
                                      configure_logging=False, runtime_env=code_snapshot(snap, env))
        if address:
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, RuntimeError) as e:
                raise ConfigError(f"--address {address}: cannot join the Ray cluster ({e})") from None
        else:
            ray.init(num_cpus=num_cpus, **kwargs)
    return True


def code_snapshot(snap: str, env: dict[str, str]) -> dict[str, Any]:
    """The job's ``runtime_env``: a copy of the snnlab package as it is now (code and package
    data such as ``spiking/lif_kernel.cpp``) in ``snap/snnlab``, shipped as Ray's ``working_dir``.
    ``ray.init`` zips it into the cluster's object store (GCS; no network beyond the cluster) and
    every worker of this job - on every node - imports snnlab from its extracted copy, first on
    its path, so editing the checkout while a sweep or study runs does not reach its trials.

    A ``working_dir`` (not ``py_modules``): Ray puts the driver's current directory first on
    every worker's ``sys.path`` unless the job has a working_dir, and from the repository root
    that directory's ``snnlab/`` would shadow the snapshot. The driver's directory and
    PYTHONPATH stay importable behind the snapshot (environments, modules named in configs)."""
    shutil.copytree(Path(__file__).resolve().parents[1], Path(snap) / "snnlab",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    path = [os.getcwd(), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"working_dir": snap, "env_vars": {**env, "PYTHONPATH": os.pathsep.join(path)}}


def wandb_entry(sweep: Sweep, mode: str) -> dict[str, str] | None:
    """The trial config's ``wandb`` entry: each trial logs its own W&B run from its own process
    (:func:`snnlab.sweep.trainables.start_wandb`), straight into its trial folder. (Not Tune's
    driver-side ``WandbLoggerCallback``: it starts two actors per trial and stalls the driver
    3-6 s per trial while they start, and a run it is still writing when Tune makes its final
    sync of the driver's staging folder never reaches the results folder.)"""
    if mode == "off":
        return None
    return {"mode": mode, "project": sweep.base.get("logging", {}).get("wandb_project", "snnlab"),
            "group": sweep.spec.name}


def _reporter(sweep: Sweep, population: bool = False):
    from ray.tune import CLIReporter

    params = {"setting/label": "setting", "seed": "seed"}
    if population:
        params.update({"setting/member": "member", "setting/slope/k": "k"})
    return CLIReporter(
        parameter_columns=params,
        metric_columns={"training_iteration": "iter", sweep.spec.metric.name: sweep.spec.metric.name,
                        "slope": "slope", "time_total_s": "time (s)"},
        max_report_frequency=15, max_column_length=24,
        # explicit: by default CLIReporter decides from Tune's process-wide verbosity at
        # construction time, which a verbose=0 sweep earlier in the same process leaves at 0
        print_intermediate_tables=True,
    )


def steps_of(sweep: Sweep) -> int:
    return run_steps(sweep.kind, sweep.base)


def _trial_space(sweep: Sweep, wandb_mode: str, axes: dict[str, Any]) -> tuple[dict[str, Any], dict | None]:
    """A Tune param space of trial configs: the sweep's name and base, ``axes`` (setting, params,
    seed), the gradient diagnostics (applied per trial to the seeds they name) and the W&B entry;
    and that entry (None without W&B)."""
    space = {"sweep": sweep.spec.name, "base": sweep.base, **axes}
    if sweep.spec.diagnostics is not None:
        space["diagnostics"] = sweep.spec.diagnostics.model_dump()
    wandb = wandb_entry(sweep, wandb_mode)
    if wandb is not None:
        space["wandb"] = wandb
    return space, wandb


def build_tuner(sweep: Sweep, storage: str, wandb_mode: str, verbose: int):
    from ray import tune
    from ray.tune import CheckpointConfig, FailureConfig, RunConfig, SyncConfig, TuneConfig, Tuner

    from .trainables import trainable_for

    spec = sweep.spec
    trainable = trainable_for(sweep)
    if sweep.kind == "rl":
        ckpt = CheckpointConfig(num_to_keep=2, checkpoint_frequency=1, checkpoint_at_end=True)
    else:
        ckpt = CheckpointConfig(num_to_keep=2)
    param_space, wandb = _trial_space(sweep, wandb_mode, {
        "setting": tune.grid_search(sweep.grid_settings),
        "params": {k: tune.grid_search(v) for k, v in spec.params.items()},
        "seed": tune.grid_search(sweep.seeds),  # a study shard's seeds only
    })
    return Tuner(
        trainable,
        param_space=param_space,
        tune_config=TuneConfig(
            max_concurrent_trials=spec.max_concurrent or None,
            # a trial process runs trial after trial: no worker start + torch/RLlib imports per trial
            reuse_actors=True,
            trial_name_creator=lambda t: trial_name(t.config),
            trial_dirname_creator=lambda t: trial_name(t.config),
        ),
        run_config=RunConfig(
            name=spec.name, storage_path=storage, stop={"training_iteration": steps_of(sweep)},
            checkpoint_config=ckpt, failure_config=FailureConfig(max_failures=spec.max_failures),
            progress_reporter=_reporter(sweep), verbose=verbose,
            # remote storage: the W&B runs in the trials' working dirs are uploaded as artifacts
            sync_config=SyncConfig(sync_artifacts=wandb is not None and "://" in storage),
        ),
    )


def population_checkpoints(sweep: Sweep, pop: dict[str, Any]):
    """A population's CheckpointConfig: enough checkpoints kept that the one PBT points an
    exploiting member at (its source's latest at the perturbation round) still exists when that
    member restores it - with members time-multiplexed on few CPUs the source may train on first.

    - ``synch: true``: the next round waits for every member, so the source writes at most its
      ``perturbation_interval`` checkpoints in between (supervised: one per epoch, which a
      function trainable's pause needs) or two (RL: one every ``perturbation_interval``
      iterations, for retries, and Tune's save when PBT pauses it): keep that many + 2;
    - ``synch: false``: no such bound, every checkpoint is kept (``num_to_keep=None``).
    """
    from ray.tune import CheckpointConfig

    keep = None
    if pop["synch"]:
        keep = 4 if sweep.kind == "rl" else pop["perturbation_interval"] + 2
    if sweep.kind == "rl":
        return CheckpointConfig(num_to_keep=keep, checkpoint_frequency=pop["perturbation_interval"],
                                checkpoint_at_end=True)
    return CheckpointConfig(num_to_keep=keep)


def build_population_tuner(sweep: Sweep, setting: dict, params: dict, seed: int, storage: str,
                           wandb_mode: str, verbose: int):
    """One population (a PBT / PB2 setting x params x seed) as its own Tune run in the sweep's
    folder: ``<storage>/<sweep>/<label>[_params]_seed<seed>/``, one trial per member, Tune's
    PopulationBasedTraining (or PB2) as the scheduler over ``setting.slope.k``."""
    from ray import tune
    from ray.tune import FailureConfig, RunConfig, SyncConfig, TuneConfig, Tuner

    from .population import member_settings, results_logger, scheduler
    from .trainables import trainable_for

    spec, pop = sweep.spec, setting["population"]
    param_space, wandb = _trial_space(sweep, wandb_mode, {
        "setting": tune.grid_search(member_settings(setting, seed)), "params": dict(params), "seed": seed})
    return Tuner(
        trainable_for(sweep),
        param_space=param_space,
        tune_config=TuneConfig(
            # PBT's random choices: seeded by the sweep's and the population's name
            scheduler=scheduler(pop, spec.metric.name, spec.metric.mode,
                                seed=zlib.crc32(f"{spec.name}/{population_name(setting, params, seed)}".encode())),
            max_concurrent_trials=spec.max_concurrent or None, reuse_actors=True,
            trial_name_creator=lambda t: trial_name(t.config),
            trial_dirname_creator=lambda t: trial_name(t.config),
        ),
        run_config=RunConfig(
            name=population_name(setting, params, seed), storage_path=f"{storage.rstrip('/')}/{spec.name}",
            stop={"training_iteration": steps_of(sweep)}, checkpoint_config=population_checkpoints(sweep, pop),
            failure_config=FailureConfig(max_failures=spec.max_failures),
            progress_reporter=_reporter(sweep, population=True), verbose=verbose,
            callbacks=[results_logger()],
            sync_config=SyncConfig(sync_artifacts=wandb is not None and "://" in storage),
        ),
    )


def _fit_population(sweep: Sweep, setting: dict, params: dict, seed: int, storage: str, wandb_mode: str,
                    verbose: int, resume: bool):
    """Run (or, with ``resume``, continue) one population."""
    from ray.tune import Tuner

    from .trainables import trainable_for

    path = f"{storage.rstrip('/')}/{sweep.spec.name}/{population_name(setting, params, seed)}"
    if resume and Tuner.can_restore(path):
        if "://" not in storage:  # the rows after each member's checkpoint are trained again
            trim_to_checkpoints(path)
        tuner = Tuner.restore(path, trainable=trainable_for(sweep), resume_errored=True, resume_unfinished=True)
    else:
        tuner = build_population_tuner(sweep, setting, params, seed, storage, wandb_mode, verbose)
    return tuner.fit()


def storage_uri(storage: str) -> str:
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


def check_restart_unfinished(sweep: Sweep, storage: str, resume: bool) -> None:
    """``--restart-unfinished`` applies to a local resume of grid trials only (one line otherwise)."""
    if not resume:
        raise ConfigError("--restart-unfinished: only with --resume (it says how unfinished trials "
                          "continue)")
    if "://" in storage:
        raise ConfigError(f"--restart-unfinished: needs a local --storage folder, not {storage}")
    if sweep.populations():
        raise ConfigError(f"--restart-unfinished: {sweep.spec.name} has population settings (pbt/pb2), "
                          f"whose members must resume from checkpoints; resume without it")


def run_sweep(sweep: Sweep, storage: str = "runs", address: str | None = None,
              wandb_mode: str = "offline", resume: bool = False, verbose: int = 1,
              restart_unfinished: bool = False) -> SweepOutcome:
    """Run the sweep (or continue it: ``resume``). Unfinished and errored trials resume from their
    last checkpoint; with ``restart_unfinished``, unfinished ones start again from scratch
    (:func:`snnlab.sweep.storage.restart_unfinished`)."""
    storage = storage_uri(storage)
    exp_dir = f"{storage.rstrip('/')}/{sweep.spec.name}"
    local = "://" not in storage
    if restart_unfinished:
        check_restart_unfinished(sweep, storage, resume)
    if local and not resume and (Path(exp_dir) / SPEC_FILE).exists():
        raise ConfigError(f"{exp_dir} already holds this sweep's results; continue it with --resume "
                          f"or choose another --storage")
    if resume:
        from ray.tune import Tuner

        started_any = Tuner.can_restore(exp_dir) or any(
            Tuner.can_restore(f"{exp_dir}/{population_name(s, p, seed)}") for s, p, seed in sweep.populations())
        if not started_any or (local and not (Path(exp_dir) / SPEC_FILE).exists()):
            raise ConfigError(f"{exp_dir}: no sweep to resume there")
    from .. import energy  # noqa: F401 - the summary after fit() uses it: import it now, with the
    # code the sweep starts with (the workers run a snapshot; an edit mid-sweep reaches neither)
    started = connect(address, wandb_mode, storage=storage)
    t0 = time.perf_counter()
    try:
        tuner = None
        if resume and Tuner.can_restore(exp_dir):
            from .trainables import trainable_for

            if restart_unfinished:  # they resume as trials that never ran: from scratch
                restart_trials(exp_dir)
            if local:  # the rows after each trial's checkpoint are trained (and logged) again
                trim_to_checkpoints(exp_dir)
            tuner = Tuner.restore(exp_dir, trainable=trainable_for(sweep), resume_errored=True,
                                  resume_unfinished=True)
        elif sweep.grid_settings:
            tuner = build_tuner(sweep, storage, wandb_mode, verbose)
        if local:
            Path(exp_dir).mkdir(parents=True, exist_ok=True)
            (Path(exp_dir) / SPEC_FILE).write_text(yaml.safe_dump(spec_record(sweep), sort_keys=False))
        # a local sweep folder stays resumable whenever the driver is killed (storage.py)
        with crash_safe_uploads() if local else contextlib.nullcontext():
            grids = [tuner.fit()] if tuner is not None else []
            for setting, params, seed in sweep.populations():  # each population: its own Tune run
                grids.append(_fit_population(sweep, setting, params, seed, storage, wandb_mode, verbose, resume))
        grid = [r for g in grids for r in g]
        errors = [f"{Path(r.path).name}: {_last_line(r.error)}" for r in grid if r.error is not None]
    finally:
        if started:
            import ray

            ray.shutdown()
    md = ""
    if local:
        _, md = write_summary(exp_dir)
    return SweepOutcome(exp_dir=exp_dir, trials=len(grid), errors=errors, summary_md=md,
                        wall_time_s=round(time.perf_counter() - t0, 1))


def _last_line(error: BaseException) -> str:
    """The innermost message of a (Ray-wrapped) trial error, on one line."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    cause = error
    while cause.__cause__ is not None:
        cause = cause.__cause__
    msg = next((ln for ln in reversed(lines) if "Error" in ln and ":" in ln and len(ln) < 300), None)
    return msg or f"{type(cause).__name__}: {lines[-1][:200] if lines else ''}"


def spec_record(sweep: Sweep) -> dict[str, Any]:
    spec = sweep.spec.model_dump()
    spec["settings"] = sweep.settings  # as run (--budget smoke shortens populations' intervals)
    spec["base"] = sweep.base
    spec["steps"] = steps_of(sweep)
    spec["step_unit"] = "training iterations" if sweep.kind == "rl" else "epochs"
    spec["source"] = sweep.source
    if sweep.shard_seeds is not None:  # a shard of a study: the seeds this folder holds
        spec["shard_seeds"] = list(sweep.shard_seeds)
    return spec

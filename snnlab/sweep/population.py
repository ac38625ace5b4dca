"""Population settings of a sweep: Ray Tune's population-based training over the slope k.

A sweep setting of ``kind: pbt`` (or ``pb2``) is not one trial per seed but a *population* of
``population`` trials per seed (and ``params`` combination), run by Tune's own
:class:`ray.tune.schedulers.PopulationBasedTraining` (or :class:`ray.tune.schedulers.PB2`)::

    settings:
      - {kind: fixed, k: 2}
      - {label: pbt, kind: pbt, population: 8, k_min: 1, k_max: 100, perturbation_interval: 4}

Every member trains with a fixed slope (its trial config's ``setting.slope``, a ``fixed``
schedule); member i starts at ``k_min (k_max / k_min) ** (i / (N - 1))`` (``init: geometric``,
so the population starts as a log-spaced grid of N fixed slopes) or at a log-uniform draw
seeded by the seed (``init: random``). Every ``perturbation_interval`` epochs / iterations
(after ``burn_in``) the members in the bottom ``quantile_fraction`` of the sweep's metric copy
a member of the top quantile - its complete checkpoint - and explore its k:

- ``pbt``: k x f or k / f with ``f = perturbation_factor`` (a step of +-ln f in log space), or,
  with probability ``resample_probability``, a fresh log-uniform draw from [k_min, k_max];
- ``pb2``: PB2's GP bandit picks ``log10 k`` within [log10 k_min, log10 k_max];

and the result is clipped to [k_min, k_max] (:class:`ClipSlope`, the scheduler's
``custom_explore_fn``). Each population is its own Tune experiment in the sweep's folder
(``<sweep>/<label>_seed<seed>/``), run after the sweep's other settings, which keep their
exact trials (see ``snnlab.sweep.run``).

The checks here run when the sweep file is loaded (one line, exit 2, before Ray starts):
population < 2 or ``population x quantile_fraction < 1`` (PBT's quantiles would be empty or
larger than asked), ``k_min >= k_max``, a ``perturbation_interval`` (+ ``burn_in``) that leaves
no step after the first exploit, and a metric that trials do not report at every step.
"""

from __future__ import annotations

import contextlib
import math
import random
from typing import Any, Literal

from pydantic import Field, model_validator

from ..config import ConfigError, Strict

POPULATION_KINDS = ("pbt", "pb2")

#: what a population's metric may be: reported by every trial at every step (so PBT can rank
#: members each interval); never ``slope``, the searched quantity itself
POPULATION_METRICS = {
    "supervised": ["score", "val_loss", "train_loss_epoch", "val_acc", "train_acc"],
    "rl": ["score", "env_runners/episode_return_mean", "evaluation/env_runners/episode_return_mean"],
}


class PopulationConfig(Strict):
    """A population setting's keys (besides ``label``)."""

    kind: Literal["pbt", "pb2"]
    population: int = Field(..., ge=2, description="members (trials) per seed and params combination")
    k_min: float = Field(1.0, gt=0.0)
    k_max: float = Field(100.0, gt=0.0)
    perturbation_interval: int = Field(..., ge=1, description="epochs / iterations between exploits")
    burn_in: int = Field(0, ge=0, description="epochs / iterations before the first exploit")
    quantile_fraction: float = Field(0.25, gt=0.0, le=0.5, description="bottom members copy the top ones")
    resample_probability: float = Field(0.25, ge=0.0, le=1.0, description="pbt: draw k anew instead of x/÷ f")
    perturbation_factor: float = Field(2.0, gt=1.0, description="pbt: k x f or k / f")
    init: Literal["geometric", "random"] = Field("geometric", description="the members' first k")
    synch: bool = Field(True, description="all members exploit at the same step (reproducible)")

    @model_validator(mode="after")
    def _check(self):
        if self.k_min >= self.k_max:
            raise ValueError(f"k_min ({self.k_min:g}) must be below k_max ({self.k_max:g})")
        if self.population * self.quantile_fraction < 1:
            raise ValueError(
                f"population {self.population} x quantile_fraction {self.quantile_fraction:g} < 1: PBT's "
                f"top and bottom quantiles would hold less than one member; use population >= "
                f"{math.ceil(1 / self.quantile_fraction)} or a larger quantile_fraction (at most 0.5)")
        if self.kind == "pb2":
            for key in ("resample_probability", "perturbation_factor"):
                if key in self.model_fields_set:
                    raise ValueError(f"{key}: a pbt key; pb2 picks k with its GP bandit")
        return self

    def first_exploit(self) -> int:
        """The first step at which members are ranked (PBT: ``max(interval, burn_in)``)."""
        return max(self.perturbation_interval, self.burn_in)


def is_population(setting: dict[str, Any]) -> bool:
    return isinstance(setting.get("population"), dict)


def population_setting(raw: dict[str, Any], label: str | None) -> dict[str, Any]:
    """The normalised setting of a validated population (as the sweep's spec records it): the
    ``slope`` entry names the kind (for readers of the spec that group settings by it)."""
    cfg = PopulationConfig.model_validate(raw)
    return {"label": label or cfg.kind, "slope": {"kind": cfg.kind}, "population": cfg.model_dump()}


def initial_slopes(pop: dict[str, Any], seed: int) -> list[float]:
    """Each member's first k: log-spaced over [k_min, k_max], or log-uniform draws from the seed."""
    n, k_min, k_max = int(pop["population"]), float(pop["k_min"]), float(pop["k_max"])
    lo, hi = math.log(k_min), math.log(k_max)
    if pop.get("init", "geometric") == "random":
        import numpy as np

        rng = np.random.default_rng([int(seed), 0x5EED])
        logs = list(rng.uniform(lo, hi, size=n))
    else:
        logs = [lo + (hi - lo) * i / (n - 1) for i in range(n)]
    ks = [min(max(float(math.exp(x)), k_min), k_max) for x in logs]  # exp(log(k)) may round past
    if pop.get("init", "geometric") != "random":
        ks[0], ks[-1] = k_min, k_max  # the ends exactly
    return ks


def member_settings(setting: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """The trial configs' ``setting`` of each member: a fixed slope, the member's index, the
    population's keys (and, for PB2, ``log10_k``: the coordinate its bandit searches)."""
    pop = setting["population"]
    out = []
    for i, k in enumerate(initial_slopes(pop, seed)):
        member = {"label": setting["label"], "slope": {"kind": "fixed", "k": k}, "member": i,
                  "population": dict(pop)}
        if pop["kind"] == "pb2":
            member["log10_k"] = math.log10(k)
        out.append(member)
    return out


class ClipSlope:
    """The schedulers' ``custom_explore_fn``: keep an explored member's k in [k_min, k_max].

    PBT perturbs ``setting.slope.k`` (x/÷ f, or a log-uniform resample) and PB2 ``setting.log10_k``;
    either way the k the member trains with is clipped into [k_min, k_max] (the same as clipping
    log k into [log k_min, log k_max]) and both keys are made to agree."""

    def __init__(self, k_min: float, k_max: float, coordinate: Literal["k", "log10_k"]) -> None:
        self.k_min, self.k_max, self.coordinate = float(k_min), float(k_max), coordinate

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        setting = config["setting"]
        k = 10.0 ** float(setting["log10_k"]) if self.coordinate == "log10_k" else float(setting["slope"]["k"])
        if not math.isfinite(k):
            k = self.k_max
        k = min(max(k, self.k_min), self.k_max)
        setting["slope"] = {**setting["slope"], "k": k}
        if "log10_k" in setting:
            setting["log10_k"] = math.log10(k)
        return config


class _MemberScheduler:
    """What snnlab adds to Tune's PBT / PB2 (as a mixin):

    - an exploiting member takes its source's config (perturbed) except its own identity
      (``setting.member``), which names its W&B run and its row in the live table;
    - the scheduler's random choices (who copies whom, x or ÷ f, resampling: Python's ``random``;
      PB2's acquisition and Tune's resampling: numpy's global RNG) come from its own generators,
      seeded by ``seed``, so they do not depend on what else in the driver draws from those
      global generators - with ``synch: true`` a population repeats;
    - with ``synch: true``, when every live member waits for a synchronisation step that none is
      behind, the step moves past the furthest member (:meth:`choose_trial_to_run`). Tune 2.60 sets it to ``max(next + interval, latest step)``;
      after ``--resume`` (the scheduler restarts from its initial state while members are far
      along) that can equal the step every member is at once the laggards exploited the
      leaders - then every member waits PAUSED for one that is behind it, for ever (seen: a
      SIGKILLed population hung on resume; ray-project/ray PR 48616 describes the same)."""

    def __init__(self, *args, seed: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        import numpy as np

        self._own_random = (random.Random(seed).getstate(), np.random.RandomState(seed).get_state())
        self._own_depth = 0

    @contextlib.contextmanager
    def _own_generators(self):
        import numpy as np

        self._own_depth += 1
        if self._own_depth > 1:  # nested (exploit -> explore): already swapped in
            try:
                yield
            finally:
                self._own_depth -= 1
            return
        outside = (random.getstate(), np.random.get_state())
        random.setstate(self._own_random[0])
        np.random.set_state(self._own_random[1])
        try:
            yield
        finally:
            self._own_random = (random.getstate(), np.random.get_state())
            random.setstate(outside[0])
            np.random.set_state(outside[1])
            self._own_depth -= 1

    def _checkpoint_or_exploit(self, *args, **kwargs):
        with self._own_generators():
            return super()._checkpoint_or_exploit(*args, **kwargs)

    def choose_trial_to_run(self, tune_controller):
        trial = super().choose_trial_to_run(tune_controller)
        if trial is None and self._synch:
            from ray.tune.experiment import Trial

            live = [t for t in tune_controller.get_trials() if not t.is_finished() and t in self._trial_state]
            waiting = [t for t in live if t.status in (Trial.PENDING, Trial.PAUSED)]
            times = [self._trial_state[t].last_train_time for t in live]
            if waiting and not any(t.status == Trial.RUNNING for t in live) \
                    and min(times) >= self._next_perturbation_sync:
                # every live member waits for a sync step none is behind: move it to the next
                # multiple of the interval past the furthest member, and choose again
                step = self._perturbation_interval
                self._next_perturbation_sync = (max(times) // step + 1) * step
                trial = super().choose_trial_to_run(tune_controller)
        return trial

    def _get_new_config(self, trial, trial_to_clone):
        with self._own_generators():
            new_config, operations = super()._get_new_config(trial, trial_to_clone)
        new_config["setting"]["member"] = trial.config["setting"]["member"]
        return new_config, operations


def scheduler(pop: dict[str, Any], metric: str, mode: str, seed: int = 0):
    """Tune's PopulationBasedTraining (or PB2) for one population, over ``setting.slope.k``; its
    random choices drawn from generators seeded by ``seed`` (:class:`_MemberScheduler`)."""
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.schedulers.pb2 import PB2

    class SlopePBT(_MemberScheduler, PopulationBasedTraining):
        pass

    class SlopePB2(_MemberScheduler, PB2):
        pass

    common = dict(time_attr="training_iteration", metric=metric, mode=mode,
                  perturbation_interval=pop["perturbation_interval"],
                  quantile_fraction=pop["quantile_fraction"], synch=pop["synch"], log_config=True,
                  require_attrs=True)
    if pop["kind"] == "pbt":
        f = float(pop["perturbation_factor"])
        return SlopePBT(
            hyperparam_mutations={"setting": {"slope": {"k": tune.loguniform(pop["k_min"], pop["k_max"])}}},
            resample_probability=pop["resample_probability"], perturbation_factors=(f, 1.0 / f),
            burn_in_period=pop["burn_in"], custom_explore_fn=ClipSlope(pop["k_min"], pop["k_max"], "k"),
            seed=seed, **common)
    bounds = [math.log10(pop["k_min"]), math.log10(pop["k_max"])]
    sched = SlopePB2(hyperparam_bounds={"setting": {"log10_k": bounds}},
                     custom_explore_fn=ClipSlope(pop["k_min"], pop["k_max"], "log10_k"), seed=seed, **common)
    # PB2 takes no burn_in_period argument; its PBT base honours the attribute
    sched._burn_in_period = pop["burn_in"]
    sched._next_perturbation_sync = max(sched._perturbation_interval, sched._burn_in_period)
    return sched


def check_populations(settings: list[dict[str, Any]], kind: str, base: dict[str, Any], metric: str,
                      steps: int, source: str) -> None:
    """The checks that need the resolved base experiment (one line each, :class:`ConfigError`):
    the run must have a step after the first exploit, and the metric must be one every trial
    reports at every step."""
    for i, s in enumerate(settings):
        if not is_population(s):
            continue
        pop, at = s["population"], f"{source}: settings[{i}] ({s['label']})"
        first = max(pop["perturbation_interval"], pop["burn_in"])
        if first >= steps:
            unit = "iterations" if kind == "rl" else "epochs"
            raise ConfigError(
                f"{at}: perturbation_interval {pop['perturbation_interval']}"
                + (f" (burn_in {pop['burn_in']})" if pop["burn_in"] else "")
                + f" leaves no step after the first exploit in a run of {steps} {unit}; "
                + (f"use at most {steps - 1}" if steps > 1 else f"a population needs at least 2 {unit}"))
        allowed = reported_every_step(kind, base)
        if metric not in allowed:
            why = ("the searched slope itself" if metric == "slope" else "not reported by every trial at every "
                   "step" + (" (evaluation.interval is not 1)" if metric.startswith("evaluation/") else ""))
            raise ConfigError(f"{at}: metric.name {metric!r} is {why}; PBT ranks members by a metric "
                              f"every trial reports at every step: {', '.join(allowed)}")


def reported_every_step(kind: str, base: dict[str, Any]) -> list[str]:
    allowed = list(POPULATION_METRICS.get(kind, ["score"]))
    if kind == "supervised" and (base.get("data") or {}).get("name") == "bc_quadrotor":
        allowed = [m for m in allowed if not m.endswith("_acc")]
    if kind == "rl" and int((base.get("evaluation") or {}).get("interval", 0)) != 1:
        allowed = [m for m in allowed if not m.startswith("evaluation/")]
    return allowed


def smoke_population(setting: dict[str, Any]) -> dict[str, Any]:
    """``--budget smoke`` (2 steps per trial): exploit after step 1 (interval 1, no burn-in), so a
    smoke run still exercises one exploit-and-restore."""
    if not is_population(setting):
        return setting
    return {**setting, "population": {**setting["population"], "perturbation_interval": 1, "burn_in": 0}}


def results_logger():
    """Tune's JSON logger for a population run, except that a member restarted by this driver
    (each PBT pause and exploit restarts it) appends to its local ``result.json`` as it stands.
    Tune's own first copies the storage's copy over the local file at every restart, and that
    copy is synced only now and then, so the rows since the last sync were lost (seen: members
    with 1-2 of 3 rows in result.json, all 3 in progress.csv). A driver that starts anew
    (``--resume``) still restores the file from storage first."""
    from pathlib import Path

    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.result import EXPR_RESULT_FILE

    class PopulationJsonLogger(JsonLoggerCallback):
        def log_trial_start(self, trial):
            if trial not in self._trial_configs:  # new to this driver: Tune's (restore from storage)
                return super().log_trial_start(trial)
            if trial in self._trial_files:
                self._trial_files[trial].close()
            self.update_config(trial, trial.config)  # params.json: the member's config now
            self._trial_files[trial] = Path(trial.local_path, EXPR_RESULT_FILE).open("at")

    return PopulationJsonLogger()

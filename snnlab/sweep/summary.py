"""Study metrics from a sweep's result directory (local files only).

Per trial, from its curve of the sweep's metric over training steps (epochs
or iterations, Tune's ``training_iteration``):

- **best**: the best value (max or min by the metric's mode);
- **final**: the last value;
- **AUC**: the mean value over training (area under the learning curve
  divided by its length);
- **steps to threshold**: the first step at which the *smoothed* curve
  reaches the threshold, where the smoothing is a trailing moving average
  over ``smoothing`` steps (fewer at the start: ``rolling(w, min_periods=1)``).
  This is PAPER.md's metric ("epochs until the smoothed evaluation return
  first exceeds a threshold"); "reaches" is ``>=`` for ``mode: max`` and
  ``<=`` for ``mode: min``.

Per setting: how many seeds finished, mean +- std (sample std, ddof=1) of
each metric over seeds, how many seeds reached the threshold (the steps
statistic is over those), and the steps to threshold of the seed-averaged
curve (the paper's exact variant).

A population setting (PBT / PB2: N member trials per seed) has two rows: ``<label>`` is the
population's best member per seed (the member with the best final value, as one would deploy
it) and ``<label> (member mean)`` the step-wise mean of its members' curves per seed.

Compute, for a fair reading: every row says how many trials a seed cost (``runs_per_seed``:
1, or N for a population) and the steps those trials trained in all (``steps_per_seed``:
every reported epoch / iteration of every trial, an exploit's copied history not counted
twice), with RL's sampled env steps (``env_steps_per_seed``) and the trials' seconds
(``trial_s_per_seed``). :func:`equal_compute` sets the arms side by side: each schedule (one
run), each population (N runs) and the fixed grid (as many runs as fixed settings: its best
k chosen by mean final score, and its best run per seed).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import yaml

from ..config import ConfigError, first_difference

SPEC_FILE = "snnlab_sweep.yaml"


@dataclass
class TrialCurve:
    name: str
    setting: str
    seed: int
    params: dict
    status: str
    steps: np.ndarray
    values: np.ndarray
    slopes: np.ndarray
    error: str | None = None
    #: diagnostics per step (NaN where a step did not log it): spike rates, gradient stats
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    #: a population member's index (PBT / PB2), else None
    member: int | None = None
    #: what the trial trained: ``steps`` (reported epochs / iterations, each report counted once,
    #: also repeated ones after a restore), ``env_steps`` (RL: sampled env steps), ``time_s``
    compute: dict[str, float] = field(default_factory=dict)


#: result keys kept as per-step diagnostics (RL, supervised validation, gradient probes)
DIAGNOSTIC_PREFIXES = ("spike_rate/", "val_spike_rate/", "eval_spike_rate/", "grad/")
#: where a trial's per-layer spike rates for the energy estimate come from, first found wins:
#: the behaviour clone flying its evaluation episodes, supervised validation, the RL learner
ENERGY_RATE_PREFIXES = ("eval_spike_rate/layer", "val_spike_rate/layer", "spike_rate/layer")


def steps_to_threshold(steps, values, threshold: float, window: int, mode: str = "max") -> float:
    """First step whose trailing moving average (window, min_periods=1) reaches the threshold; NaN if none."""
    if len(values) == 0:
        return math.nan
    smooth = pd.Series(np.asarray(values, dtype=float)).rolling(window, min_periods=1).mean().to_numpy()
    hit = smooth >= threshold if mode == "max" else smooth <= threshold
    idx = np.flatnonzero(hit)
    return float(np.asarray(steps)[idx[0]]) if len(idx) else math.nan


#: Tune's step counter: one row per step (epoch / iteration)
STEP_KEY = "training_iteration"
#: the slope a step trained with (the slope figure)
SLOPE_KEY = "slope"
#: spec keys that name where (and which seeds of) a sweep was written, not what it is
PLACE_KEYS = ("source", "shard_seeds")


#: the fraction of evaluation episodes flown to the end (RL: the evaluation's; behaviour cloning:
#: the clone's flights) - take-off is the first step where it reaches TAKEOFF_FRACTION
FULL_KEYS = ("evaluation/env_runners/full_episode_fraction", "eval_full_fraction")
TAKEOFF_FRACTION = 0.5
#: RL rows: env steps sampled so far (take-off is counted in env steps where a row has them)
ENV_STEPS_KEY = "env_runners/num_env_steps_sampled_lifetime"
#: the compute a step cost (the accounting of populations and every other setting): its
#: training seconds, and RL's env steps sampled in that iteration (all EnvRunners)
TIME_KEY = "time_this_iter_s"
ITERATION_ENV_STEPS_KEY = "env_runners/num_env_steps_sampled"


def read_keys(metric: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Everything the summary, the report (curves, slopes, rates, cosines, take-off, compute) and
    the energy table read of a reported row: these keys, and every key that starts with one of
    these prefixes. (What ``snnlab export`` keeps of each row; docs/sweeps.md, "Exported results".)"""
    return ((STEP_KEY, metric, SLOPE_KEY, *FULL_KEYS, ENV_STEPS_KEY, TIME_KEY, ITERATION_ENV_STEPS_KEY),
            DIAGNOSTIC_PREFIXES)


def flat_row(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A reported row with its nested results as ``a/b/c`` keys: Tune's result.json keeps RLlib's
    results nested (``{"env_runners": {"num_env_steps_sampled": ...}}``); the keys above name
    them flattened, as Tune's CSV, TensorBoard and the W&B runs do. (RLlib's ``config`` is left
    out: never read.)"""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if not isinstance(k, str):
            continue
        if isinstance(v, dict):
            if not prefix and k == "config":
                continue
            out.update(flat_row(v, f"{prefix}{k}/"))
        else:
            out[prefix + k] = v
    return out


def read_row(row: dict[str, Any], metric: str) -> dict[str, Any]:
    """``row`` (flattened, :func:`flat_row`) restricted to :func:`read_keys`."""
    keys, prefixes = read_keys(metric)
    return {k: v for k, v in flat_row(row).items() if k in keys or k.startswith(prefixes)}


def sweep_parts(exp_dir: str | Path | Sequence[str | Path]) -> list[Path]:
    """A sweep's folder, or the folders of one sweep written in parts (the same sweep section of
    several shards of a study, ``snnlab study --seeds``), as a list."""
    if isinstance(exp_dir, (str, Path)):
        return [Path(exp_dir)]
    parts = [Path(p) for p in exp_dir]
    if not parts:
        raise ConfigError("no sweep folder given")
    return parts


def read_spec(exp_dir: str | Path | Sequence[str | Path]) -> dict[str, Any]:
    """The sweep's ``snnlab_sweep.yaml``. For several parts of one sweep: they must agree in every
    key but where they were written and which seeds they hold (:data:`PLACE_KEYS`); the result
    is the first part's with ``shard_seeds`` the union (dropped when that is all of ``seeds``)."""
    parts = sweep_parts(exp_dir)
    specs = []
    for part in parts:
        path = part / SPEC_FILE
        if not path.is_file():
            raise ConfigError(f"{part}: no snnlab sweep here (missing {SPEC_FILE}); pass the folder "
                              f"`snnlab sweep` printed as its result directory")
        specs.append(yaml.safe_load(path.read_text()))
    if len(specs) == 1:
        return specs[0]
    bare = [{k: v for k, v in sp.items() if k not in PLACE_KEYS} for sp in specs]
    for part, sp in zip(parts[1:], bare[1:]):
        diff = first_difference(bare[0], sp)
        if diff is not None:
            key, a, b = diff
            raise ConfigError(f"sweep folders differ in {key}: {a} vs {b} ({parts[0]} vs {part})")
    spec = dict(specs[0])
    held = sorted({int(s) for sp in specs for s in sp.get("shard_seeds", sp["seeds"])})
    spec.pop("shard_seeds", None)
    if set(held) != {int(s) for s in spec["seeds"]}:
        spec["shard_seeds"] = held
    return spec


def trial_dirs(exp_dir: str | Path | Sequence[str | Path]) -> list[Path]:
    """Every trial folder (one with Tune's ``params.json``) of the sweep's folder(s) - grid trials
    and population members (``<population>/<member>/``) - sorted by trial name; a trial name
    found in two parts is an error (they would be one trial twice)."""
    found: dict[str, Path] = {}
    for part in sweep_parts(exp_dir):
        for params_file in [*part.glob("*/params.json"), *part.glob("*/*/params.json")]:
            name = params_file.parent.name
            if name in found:
                raise ConfigError(f"trial {name} is in both {found[name].parent} and {part}")
            found[name] = params_file.parent
    return [found[name] for name in sorted(found)]


def read_rows(trial_dir: str | Path) -> dict[int, dict[str, Any]]:
    """A trial's reported rows from Tune's ``result.json`` (JSON lines), one per step: a resumed
    trial may repeat a step (the latest report is kept), a line cut by a kill is skipped, and a
    row without a step counter is not one of the training steps."""
    rows = []
    result_file = Path(trial_dir) / "result.json"
    if result_file.is_file():
        for line in result_file.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by a kill: skip it
                    continue
    by_step: dict[int, dict] = {}
    for r in rows:
        if STEP_KEY in r:
            by_step[int(r[STEP_KEY])] = r
    return by_step


def load_curves(exp_dir: str | Path | Sequence[str | Path], metric: str,
                expected_steps: int | None = None) -> list[TrialCurve]:
    """Every trial's curve, read from Tune's per-trial result.json files (of every part)."""
    curves = []
    # grid trials and population members (one level down: <population>/<member>/), of every part
    for trial_dir in trial_dirs(exp_dir):
        config = json.loads((trial_dir / "params.json").read_text())
        # only what read_keys names is read (so an export, which keeps just that, reads the same)
        by_step = {step: read_row(row, metric) for step, row in read_rows(trial_dir).items()}
        compute = {"steps": float(len(by_step)),
                   "time_s": float(np.nansum([_num(r.get(TIME_KEY)) for r in by_step.values()] or [0.0]))}
        env = [_num(r.get(ITERATION_ENV_STEPS_KEY)) for r in by_step.values()]
        if any(math.isfinite(x) for x in env):
            compute["env_steps"] = float(np.nansum(env))
        steps = np.array(sorted(by_step), dtype=float)
        values = np.array([_num(by_step[int(s)].get(metric)) for s in steps], dtype=float)
        slopes = np.array([_num(by_step[int(s)].get(SLOPE_KEY)) for s in steps], dtype=float)
        keys = sorted({k for r in by_step.values() for k in r
                       if k.startswith(DIAGNOSTIC_PREFIXES) or k in FULL_KEYS or k == ENV_STEPS_KEY})
        extra = {k: np.array([_num(by_step[int(s)].get(k)) for s in steps], dtype=float) for k in keys}
        error_file = trial_dir / "error.txt"  # kept by Tune even when a retry then succeeded
        error = error_file.read_text().strip().splitlines()[-1] if error_file.is_file() else None
        complete = expected_steps is None or (len(steps) > 0 and steps[-1] >= expected_steps)
        status = "OK" if complete and len(steps) else ("ERROR" if error else "INCOMPLETE")
        member = config["setting"].get("member")
        curves.append(TrialCurve(
            name=trial_dir.name, setting=config["setting"]["label"], seed=int(config["seed"]),
            params=config.get("params", {}), status=status,
            steps=steps, values=values, slopes=slopes, error=error, extra=extra,
            member=None if member is None else int(member), compute=compute))
    return curves


def takeoff(c: TrialCurve) -> tuple[float, float] | None:
    """(step, env steps) of the trial's first evaluation with at least TAKEOFF_FRACTION of its
    episodes flown to the end - (nan, nan) if it never took off; None when the trial reports no
    such fraction (not a flying task). Env steps are nan where the rows carry none (BC: epochs)."""
    key = next((k for k in FULL_KEYS if k in c.extra), None)
    if key is None:
        return None
    hit = np.flatnonzero(np.nan_to_num(c.extra[key], nan=-1.0) >= TAKEOFF_FRACTION)
    if not len(hit):
        return math.nan, math.nan
    env = c.extra.get(ENV_STEPS_KEY)
    return float(c.steps[hit[0]]), float(env[hit[0]]) if env is not None else math.nan


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _mean_std(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return math.nan, math.nan
    return float(np.mean(xs)), float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0


MEMBER_MEAN = " (member mean)"  # the row of a population's member-mean curves: "<label> (member mean)"


def _final_key(mode: str):
    """Sort key that puts the best final value last (NaN first)."""
    def key(c: TrialCurve) -> float:
        v = float(c.values[-1]) if len(c.values) else math.nan
        return -math.inf if math.isnan(v) else (v if mode == "max" else -v)
    return key


def _per_seed_compute(cs: list[TrialCurve]) -> dict[str, float]:
    out: dict[str, float] = {}
    for c in cs:
        for k, v in c.compute.items():
            out[k] = out.get(k, 0.0) + v
    return out


def population_views(curves: list[TrialCurve], mode: str) -> tuple[list[TrialCurve], list[TrialCurve],
                                                                       dict[tuple, dict]]:
    """Population members -> per population (setting, params, seed) its best member (best final
    value among its members; status OK only when every member finished) and its member-mean
    curve (setting ``<label> (member mean)``); also the compute of each population (the sum over
    its members), keyed by (setting, params, seed). Grid trials pass through unchanged."""
    grid = [c for c in curves if c.member is None]
    pops: dict[tuple, list[TrialCurve]] = {}
    for c in curves:
        if c.member is not None:
            pops.setdefault((c.setting, json.dumps(c.params, sort_keys=True), c.seed), []).append(c)
    best, means, compute = [], [], {}
    for key, members in sorted(pops.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        status = ("OK" if all(m.status == "OK" for m in members) else
                  "ERROR" if any(m.status == "ERROR" for m in members) else "INCOMPLETE")
        top = max(members, key=_final_key(mode))
        best.append(copy.copy(top))
        best[-1].status = status
        n = min(len(m.values) for m in members)
        means.append(TrialCurve(
            name=f"{key[0]}_seed{key[2]}{MEMBER_MEAN}", setting=key[0] + MEMBER_MEAN, seed=key[2],
            params=members[0].params, status=status if n else "INCOMPLETE", steps=members[0].steps[:n],
            values=np.nanmean([m.values[:n] for m in members], axis=0) if n else np.array([]),
            slopes=np.exp(np.nanmean([np.log(m.slopes[:n]) for m in members], axis=0)) if n else np.array([]),
            extra={}, member=-1, compute=_per_seed_compute(members)))
        compute[key] = {**_per_seed_compute(members), "runs": float(len(members))}
    return grid + best, means, compute


def summarize(exp_dir: str | Path | Sequence[str | Path], expected_steps: int | None = None) -> pd.DataFrame:
    """The table per setting (x params) of a sweep's folder, or of the parts of one sweep
    (:func:`sweep_parts`: the same numbers as one folder holding all their trials)."""
    spec = read_spec(exp_dir)
    metric, mode = spec["metric"]["name"], spec["metric"]["mode"]
    threshold, window = spec.get("threshold"), int(spec.get("smoothing", 3))
    expected_steps = expected_steps or spec.get("steps")
    curves, means, pop_compute = population_views(load_curves(exp_dir, metric, expected_steps), mode)
    order = [s["label"] for s in spec["settings"]]
    rows = []
    shapes: dict[str, Any] = {}  # params -> the network's NetShape (or None)
    groups: dict[tuple, list[TrialCurve]] = {}
    for c in curves + means:
        groups.setdefault((c.setting, json.dumps(c.params, sort_keys=True)), []).append(c)

    def position(setting: str) -> float:
        label = setting.removesuffix(MEMBER_MEAN)
        return (order.index(label) if label in order else len(order)) + (0.5 if setting != label else 0.0)

    for (setting, params), cs in sorted(groups.items(), key=lambda kv: (position(kv[0][0]), kv[0][1])):
        finished = [c for c in cs if c.status == "OK"]
        best = [float(np.nanmax(c.values) if mode == "max" else np.nanmin(c.values)) for c in finished]
        final = [float(c.values[-1]) for c in finished]
        auc = [float(np.nanmean(c.values)) for c in finished]
        row: dict[str, Any] = {"setting": setting}
        if params != "{}":
            row["params"] = params
        row.update({"seeds_finished": len(finished), "seeds_failed": sum(c.status == "ERROR" for c in cs),
                    "seeds_unfinished": sum(c.status == "INCOMPLETE" for c in cs)})
        for name, xs in (("best", best), ("final", final), ("auc", auc)):
            row[f"{name}_mean"], row[f"{name}_std"] = _mean_std(xs)
        label = setting.removesuffix(MEMBER_MEAN)
        per_seed = [pop_compute.get((label, params, c.seed)) or {**c.compute, "runs": 1.0} for c in cs]
        row.update(_compute_columns(per_seed))
        if threshold is not None:
            stt = [steps_to_threshold(c.steps, c.values, threshold, window, mode) for c in finished]
            row["steps_to_threshold_mean"], row["steps_to_threshold_std"] = _mean_std(stt)
            row["reached"] = f"{sum(not math.isnan(x) for x in stt)}/{len(finished)}"
            if finished:
                n = min(len(c.values) for c in finished)
                mean_curve = np.nanmean([c.values[:n] for c in finished], axis=0)
                row["steps_to_threshold_mean_curve"] = steps_to_threshold(
                    finished[0].steps[:n], mean_curve, threshold, window, mode)
        if finished:
            row["final_min"], row["final_max"] = float(np.min(final)), float(np.max(final))
        offs = [t for t in (takeoff(c) for c in finished) if t is not None]
        if offs:  # a flying task: when the drones first fly, and how many ever do
            use_env = all(not math.isnan(e) for st, e in offs if not math.isnan(st))
            when = [e if use_env else st for st, e in offs]
            row["takeoff_mean"], row["takeoff_std"] = _mean_std(when)
            row["takeoff_unit"] = "env steps" if use_env else spec.get("step_unit", "steps")
            row["took_off"] = f"{sum(not math.isnan(st) for st, _ in offs)}/{len(offs)}"
        if not setting.endswith(MEMBER_MEAN):  # a mean curve has no spike rates of its own
            row.update(_energy_columns(spec, params, finished, shapes))
        rows.append(row)
    return pd.DataFrame(rows)


def _compute_columns(per_seed: list[dict[str, float]]) -> dict[str, float]:
    """``runs_per_seed``, ``steps_per_seed`` (, ``env_steps_per_seed``): the mean over seeds of what
    each seed's trials trained in all, and the totals over seeds. (Not their seconds: those differ
    from run to run, and the table is the same for the same results; :func:`equal_compute` has them.)"""
    out = {"runs_per_seed": _mean_or_nan([c.get("runs", 1.0) for c in per_seed]),
           "steps_per_seed": _mean_or_nan([c.get("steps", math.nan) for c in per_seed]),
           "steps_total": float(np.nansum([c.get("steps", math.nan) for c in per_seed]))}
    if any("env_steps" in c for c in per_seed):
        out["env_steps_per_seed"] = _mean_or_nan([c.get("env_steps", math.nan) for c in per_seed])
        out["env_steps_total"] = float(np.nansum([c.get("env_steps", math.nan) for c in per_seed]))
    return out


def _mean_or_nan(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return float(np.mean(xs)) if xs else math.nan


def _seed_metrics(c: TrialCurve, mode: str) -> dict[str, float]:
    best = np.nanmax(c.values) if mode == "max" else np.nanmin(c.values)
    return {"best": float(best), "final": float(c.values[-1]), "auc": float(np.nanmean(c.values))}


def equal_compute(exp_dir: str | Path | Sequence[str | Path]) -> pd.DataFrame:
    """The arms of the sweep side by side with the compute each used per seed, per ``params``:

    - each schedule and any single fixed slope: 1 run per seed;
    - each population: ``<label>: best member`` and ``<label>: member mean``, N runs per seed;
    - with two or more fixed slopes, the grid as one arm of as many runs as fixed settings:
      ``fixed grid: best k by mean final (<label>)`` (the fixed setting with the best mean
      final score over seeds) and ``fixed grid: best run per seed`` (each seed's best fixed
      trial by final score - the grid's counterpart of a population's best member).

    Metrics are mean ± std over seeds of each seed's best, final and AUC; compute is the mean
    over seeds of the steps (env steps, trial seconds) of all the arm's trials of a seed.

    Paired by seed (:func:`paired_test` on the final score): every other arm against the grid's
    best k (``vs_grid_*``: mean Δ final, 95% CI, exact p) and against each population's best
    member (``vs_<label>_*``) - "does one run of a schedule do as well as 6 runs of tuning?"."""
    spec = read_spec(exp_dir)
    metric, mode = spec["metric"]["name"], spec["metric"]["mode"]
    curves = [c for c in load_curves(exp_dir, metric, spec.get("steps"))]
    grid_best, means, pop_compute = population_views(curves, mode)
    kinds = {s["label"]: s.get("slope", {}).get("kind") for s in spec["settings"]}
    pops = {s["label"] for s in spec["settings"] if isinstance(s.get("population"), dict)}
    fixed = [s["label"] for s in spec["settings"] if kinds.get(s["label"]) == "fixed"]
    rows = []
    finals: dict[tuple[str, str], dict[int, float]] = {}  # (arm, params) -> seed -> final score
    for params in sorted({json.dumps(c.params, sort_keys=True) for c in curves}):
        mine = [c for c in grid_best + means if json.dumps(c.params, sort_keys=True) == params]

        def arm(name: str, per_seed: dict[int, tuple[TrialCurve, dict]], runs: float) -> None:
            ok = {s: v for s, v in per_seed.items() if v[0].status == "OK" and len(v[0].values)}
            if not ok:
                return
            row: dict[str, Any] = {"arm": name}
            if params != "{}":
                row["params"] = params
            row["seeds"] = len(ok)
            row["runs_per_seed"] = runs
            comp = [v[1] for v in ok.values()]
            for key, col in (("steps", "steps_per_seed"), ("env_steps", "env_steps_per_seed"),
                             ("time_s", "trial_s_per_seed")):
                if any(key in c for c in comp):
                    row[col] = _mean_or_nan([c.get(key, math.nan) for c in comp])
            ms = [_seed_metrics(v[0], mode) for v in ok.values()]
            for key in ("best", "final", "auc"):
                row[f"{key}_mean"], row[f"{key}_std"] = _mean_std([m[key] for m in ms])
            finals[(name, params)] = {s: m["final"] for s, m in zip(ok, ms)}
            rows.append(row)

        def by_seed(setting: str) -> dict[int, TrialCurve]:
            return {c.seed: c for c in mine if c.setting == setting}

        for s in spec["settings"]:
            label = s["label"]
            if label in pops:
                for c_label, name in ((label, f"{label}: best member"), (label + MEMBER_MEAN, f"{label}: member mean")):
                    seeds = by_seed(c_label)
                    comp = {seed: pop_compute.get((label, params, seed), {}) for seed in seeds}
                    arm(name, {seed: (c, comp[seed]) for seed, c in seeds.items()},
                        _mean_or_nan([v.get("runs", math.nan) for v in comp.values()]))
            elif label not in fixed or len(fixed) == 1:
                arm(label, {seed: (c, c.compute) for seed, c in by_seed(label).items()}, 1.0)
        if len(fixed) >= 2:
            grid = {label: by_seed(label) for label in fixed}
            seeds = sorted(set.intersection(*[set(g) for g in grid.values()]))
            seeds = [seed for seed in seeds if all(grid[lb][seed].status == "OK" for lb in fixed)]
            if seeds:
                compute = {seed: _per_seed_compute([grid[lb][seed] for lb in fixed]) for seed in seeds}
                sign = 1.0 if mode == "max" else -1.0
                means_final = {lb: np.mean([grid[lb][seed].values[-1] for seed in seeds]) for lb in fixed}
                chosen = max(fixed, key=lambda lb: sign * means_final[lb])
                arm(f"fixed grid: best k by mean final ({chosen})",
                    {seed: (grid[chosen][seed], compute[seed]) for seed in seeds}, float(len(fixed)))
                arm("fixed grid: best run per seed",
                    {seed: (max((grid[lb][seed] for lb in fixed), key=_final_key(mode)), compute[seed])
                     for seed in seeds}, float(len(fixed)))
    anchors = [("vs_grid", lambda a: a.startswith("fixed grid: best k by mean final"))]
    anchors += [(f"vs_{label}", lambda a, lb=label: a == f"{lb}: best member") for label in sorted(pops)]
    for row in rows:
        params = row.get("params", "{}")
        for prefix, is_anchor in anchors:
            anchor = next((a for (a, p) in finals if p == params and is_anchor(a)), None)
            if anchor is None or anchor == row["arm"]:
                continue
            mine, ref = finals[(row["arm"], params)], finals[(anchor, params)]
            t = paired_test([mine[s] - ref[s] for s in sorted(set(mine) & set(ref))])
            row[f"{prefix}_seeds"] = t["n"]
            for k in ("mean_diff", "ci_low", "ci_high", "p_value"):
                row[f"{prefix}_{k}"] = t[k]
    return pd.DataFrame(rows)


def equal_compute_cells(df: pd.DataFrame, spec: dict) -> tuple[list[str], list[list[str]]]:
    metric = spec["metric"]["name"]
    unit = spec.get("step_unit", "steps")
    head = ["arm"] + (["params"] if "params" in df else []) + ["seeds", "runs per seed", f"{unit} per seed"]
    head += ["env steps per seed"] if "env_steps_per_seed" in df else []
    head += ["trial-s per seed", f"best {metric}", f"final {metric}", f"AUC ({metric})"]
    vs = [c[: -len("_mean_diff")] for c in df.columns if c.startswith("vs_") and c.endswith("_mean_diff")]
    head += [f"Δ final vs {'grid best k' if v == 'vs_grid' else v[3:] + ' best member'} [95% CI] p" for v in vs]
    rows = []
    for _, r in df.iterrows():
        cells = [r["arm"]] + ([r["params"]] if "params" in df else [])
        cells += [int(r["seeds"]), _fmt(float(r["runs_per_seed"])), _fmt(r.get("steps_per_seed", math.nan))]
        if "env_steps_per_seed" in df:
            cells.append(_fmt(r.get("env_steps_per_seed", math.nan)))
        cells.append(_fmt(r.get("trial_s_per_seed", math.nan)))
        cells += [_pm(r[f"{k}_mean"], r[f"{k}_std"]) for k in ("best", "final", "auc")]
        for v in vs:
            m = r.get(f"{v}_mean_diff", math.nan)
            cells.append("-" if pd.isna(m) else f"{m:+.4g} [{r[f'{v}_ci_low']:+.3g}, {r[f'{v}_ci_high']:+.3g}] "
                         f"p={r[f'{v}_p_value']:.3g}")
        rows.append([str(c) for c in cells])
    return head, rows


def equal_compute_note(spec: dict) -> str:
    return ("Each arm with the compute it used per seed (mean over seeds): runs = trials, "
            f"{spec.get('step_unit', 'steps')} = every step those trials reported (a population member that "
            "copies another's checkpoint does not re-count the copied history), env steps = sampled env steps "
            "(RL), trial-s = the trials' training seconds. A population of N members costs N runs; the "
            "fixed grid costs one run per fixed setting, its best k chosen after seeing every seed's "
            "result (an optimistic choice) and its best run per seed the counterpart of a population's "
            "best member. Metrics: mean ± std over seeds. Δ final: paired by seed against the grid's best "
            "k (and a population's best member), bootstrap 95% CI and exact sign-flip p.")


def rates_from_last(last: dict[str, float]) -> list[float] | None:
    """Per-layer spike rates from each result key's last finite value (``last``: key -> value):
    the first of :data:`ENERGY_RATE_PREFIXES` with any layer wins; None when there is none."""
    for prefix in ENERGY_RATE_PREFIXES:
        layers = {int(k[len(prefix):]): float(v) for k, v in last.items()
                  if k.startswith(prefix) and k[len(prefix):].isdigit() and math.isfinite(v)}
        if layers:
            return [layers[i] for i in sorted(layers)]
    return None


def trial_rates(c: TrialCurve) -> list[float] | None:
    """The trial's per-layer spike rates at its last logged step (the trained network)."""
    last = {}
    for key, vals in c.extra.items():
        fin = vals[np.isfinite(vals)]
        if len(fin):
            last[key] = float(fin[-1])
    return rates_from_last(last)


def network_shape(base: dict, params: dict):
    """The spiking network's shape (``snnlab.energy.NetShape``) of a sweep's resolved ``base``
    experiment with a trial's ``params`` applied (the validated config's ``network_shape()``);
    None without a spiking network (an MLP actor), or when the config no longer validates (a
    folder written by an older snnlab whose keys changed)."""
    from ..config import apply_overrides
    from ..experiment import validate_experiment

    cfg = copy.deepcopy(base)
    apply_overrides(cfg, [f"{k}={json.dumps(v)}" for k, v in params.items()])
    try:
        return validate_experiment(cfg, "the sweep's base experiment").network_shape()
    except ConfigError:
        return None


def energy_values(shape, rates) -> dict[str, Any] | None:
    """The energy columns for per-layer spike rates ``rates`` (snnlab.energy.estimate):
    ``rate_layer{i}``, ``synops_layer{i}``, ``synops``, ``snn_macs``, ``ann_macs``,
    ``snn_energy_nj``, ``ann_energy_nj``, ``energy_ratio``; None when the rates do not fit."""
    from ..energy import estimate

    if shape is None or rates is None or len(rates) != len(shape.hidden):
        return None
    e = estimate(shape, rates)
    out: dict[str, Any] = {}
    for i, r in enumerate(rates):
        out[f"rate_layer{i}"] = float(r)
    for i, s in enumerate(e.synops_per_layer):
        out[f"synops_layer{i}"] = s
    out.update({"synops": e.synops, "snn_macs": e.snn_macs, "ann_macs": e.ann_macs,
                "snn_energy_nj": e.snn_pj / 1e3, "ann_energy_nj": e.ann_pj / 1e3,
                "energy_ratio": e.ratio})
    return out


def network_label(shape) -> str:
    return f"{shape.n_in}-{'-'.join(map(str, shape.hidden))}-{shape.n_out}, T={shape.num_steps}"


def _energy_columns(spec: dict, params: str, finished: list[TrialCurve], shapes: dict) -> dict[str, Any]:
    """SynOps, MACs and energy per inference (snnlab.energy) from the mean final spike rates of
    the setting's finished trials; {} when the network's shape or the rates are unknown."""
    rates = [r for r in (trial_rates(c) for c in finished) if r is not None]
    if not rates or not isinstance(spec.get("base"), dict):
        return {}
    if params not in shapes:
        shapes[params] = network_shape(spec["base"], json.loads(params))
    shape = shapes[params]
    if shape is None or any(len(r) != len(shape.hidden) for r in rates):
        return {}
    values = energy_values(shape, list(np.mean(rates, axis=0)))
    return {"energy_trials": len(rates), **values, "network": network_label(shape)}


class TrialEnergy:
    """The energy estimate of one running sweep trial, kept up to date from its reported results
    (what the trial's W&B run logs as ``energy/<column>``): the same rates (each rate key's last
    finite value so far, :func:`rates_from_last`), shape (:func:`network_shape`) and columns
    (:func:`energy_values`) as the summary's energy table for that one trial."""

    PREFIX = "energy/"

    def __init__(self, base: dict, params: dict | None = None) -> None:
        self.base, self.params = base, dict(params or {})
        self.last: dict[str, float] = {}
        self.shape, self._shape_known = None, False
        self.values: dict[str, float] = {}  # the latest estimate, prefixed; {} while there is none

    def update(self, result: dict) -> dict[str, float]:
        """Read one reported result (its top-level keys, as Tune's result.json holds them) and
        return the estimate so far as ``energy/...`` numbers ({} without rates or a shape)."""
        for key, v in result.items():
            if isinstance(key, str) and key.startswith(ENERGY_RATE_PREFIXES):
                v = _num(v)
                if math.isfinite(v):
                    self.last[key] = v
        rates = rates_from_last(self.last)
        if rates is None:
            return {}
        if not self._shape_known:
            self.shape, self._shape_known = network_shape(self.base, self.params), True
        values = energy_values(self.shape, rates)
        if values is None:
            return {}
        self.values = {self.PREFIX + k: v for k, v in values.items()}
        return self.values

    def summary(self) -> dict[str, Any]:
        """The final estimate for the run's summary (with ``energy/network``); {} when none."""
        if not self.values:
            return {}
        return {**self.values, self.PREFIX + "network": network_label(self.shape)}


def energy_cells(df: pd.DataFrame) -> tuple[list[str], list[list[str]]] | None:
    """The energy table (one row per setting with energy columns) as header and cells, or None."""
    if "synops" not in df:
        return None
    df = df[df["synops"].notna()]
    if df.empty:
        return None
    layers = sorted(int(c.removeprefix("synops_layer")) for c in df if c.startswith("synops_layer"))
    head = ["setting"] + (["params"] if "params" in df else []) + ["trials", "network"]
    head += [f"rate L{i}" for i in layers] + [f"SynOps L{i}" for i in layers]
    head += ["SynOps", "MACs (SNN)", "MACs (ANN)", "E SNN (nJ)", "E ANN (nJ)", "SNN/ANN"]
    rows = []
    for _, r in df.iterrows():
        cells = [r["setting"]] + ([r["params"]] if "params" in df else [])
        cells += [int(r["energy_trials"]), r["network"]]
        cells += [_fmt(r.get(f"rate_layer{i}", math.nan)) for i in layers]
        cells += [_fmt(r.get(f"synops_layer{i}", math.nan)) for i in layers]
        cells += [_fmt(r["synops"]), _fmt(r["snn_macs"]), _fmt(r["ann_macs"]),
                  _fmt(r["snn_energy_nj"]), _fmt(r["ann_energy_nj"]), _fmt(r["energy_ratio"])]
        rows.append([str(c) for c in cells])
    return head, rows


def energy_note() -> str:
    from ..energy import ENERGY_SOURCE

    return ("Per inference (one sample / one action: T steps), from each trial's spike rates at its "
            "last logged step (spikes per neuron per step; mean over trials). SNN: the first "
            "layer's dense input current n_in x N_1 MACs once (the static input is projected once "
            "for all T steps) + SynOps = sum_i rate_i x N_i x T x fan-out_i accumulates; ANN of the "
            f"same shape: every layer's MACs. Energy per operation: {ENERGY_SOURCE}. Neuron "
            "updates and memory access are not counted (snnlab.energy).")


def paired_test(diffs: list[float], n_boot: int = 10_000, seed: int = 0) -> dict[str, float]:
    """Mean of paired differences, its bootstrap 95% CI, and the exact two-sided sign-flip
    permutation p-value (all 2^n sign patterns; n <= 16 seeds)."""
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    if n == 0:
        return {"n": 0, "mean_diff": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan}
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    if n > 16:
        raise ValueError("the exact permutation test enumerates 2^n sign patterns; use <= 16 seeds")
    signs = np.array(np.meshgrid(*[[-1.0, 1.0]] * n)).reshape(n, -1).T  # [2^n, n]
    null = np.abs((signs * np.abs(d)).mean(axis=1))
    p = float(np.mean(null >= abs(d.mean()) - 1e-12))
    return {"n": n, "mean_diff": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi), "p_value": p}


def compare_to_reference(exp_dir: str | Path | Sequence[str | Path],
                         reference: str | None = None) -> pd.DataFrame:
    """Each setting against a reference setting (default: the fixed setting with the largest k),
    paired by seed, on AUC, best and final score and on steps to threshold.

    A seed that never reaches the threshold counts as ``steps + 1`` (censored at one step past
    the end of training), so "never" is worse than any step within the run.
    """
    spec = read_spec(exp_dir)
    metric, mode = spec["metric"]["name"], spec["metric"]["mode"]
    threshold, window, steps = spec.get("threshold"), int(spec.get("smoothing", 3)), spec.get("steps")
    # a population (PBT / PB2) enters as its best member per seed
    curves = [c for c in population_views(load_curves(exp_dir, metric, steps), mode)[0] if c.status == "OK"]
    if reference is None:
        fixed = [s for s in spec["settings"] if s["slope"]["kind"] == "fixed"]
        if not fixed:
            return pd.DataFrame()
        reference = max(fixed, key=lambda s: s["slope"]["k"])["label"]

    def per_seed(setting, params):
        out = {}
        for c in curves:
            if c.setting != setting or json.dumps(c.params, sort_keys=True) != params:
                continue
            stt = math.nan
            if threshold is not None:
                stt = steps_to_threshold(c.steps, c.values, threshold, window, mode)
                if math.isnan(stt):
                    stt = float(c.steps[-1]) + 1.0
            best = np.nanmax(c.values) if mode == "max" else np.nanmin(c.values)
            out[c.seed] = {"auc": float(np.nanmean(c.values)), "best": float(best),
                           "final": float(c.values[-1]), "stt": stt}
        return out

    rows = []
    order = [s["label"] for s in spec["settings"]]
    groups = sorted({(c.setting, json.dumps(c.params, sort_keys=True)) for c in curves},
                    key=lambda g: (order.index(g[0]) if g[0] in order else len(order), g[1]))
    for setting, params in groups:
        if setting == reference:
            continue
        mine, ref = per_seed(setting, params), per_seed(reference, params)
        seeds = sorted(set(mine) & set(ref))
        row: dict[str, Any] = {"setting": setting, "reference": reference, "paired_seeds": len(seeds)}
        if params != "{}":
            row["params"] = params
        for key in ("auc", "best", "final") + (("stt",) if threshold is not None else ()):
            t = paired_test([mine[s][key] - ref[s][key] for s in seeds])
            for k, v in t.items():
                if k != "n":
                    row[f"{key}_{k}"] = v
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_cells(df: pd.DataFrame) -> tuple[str, list[str], list[list[str]]]:
    """The paired comparison as an explanatory sentence, a header and rows of formatted cells."""
    ref = df["reference"].iloc[0]
    has_stt = "stt_mean_diff" in df
    keys = [("auc", "Δ AUC"), ("best", "Δ best")] + ([("stt", "Δ steps to threshold")] if has_stt else [])
    head = ["setting", "paired seeds"]
    for key, title in keys:
        head += [f"{title} (95% CI)", f"p ({key})"]
    intro = (f"Paired by seed against `{ref}`: Δ = setting - {ref}; 95% CI by bootstrap over seeds "
             f"(10,000 resamples); p = exact two-sided sign-flip permutation test (with n seeds the "
             f"smallest possible p is 2/2^n). Seeds that never reach the threshold count as one step "
             f"past the end.")
    rows = []
    for _, r in df.iterrows():
        cells = [str(r["setting"]), str(r["paired_seeds"])]
        for key, _ in keys:
            if f"{key}_mean_diff" not in r:
                cells += ["-", "-"]
                continue
            cells += [f"{_fmt(r[f'{key}_mean_diff'])} ({_fmt(r[f'{key}_ci_low'])}, {_fmt(r[f'{key}_ci_high'])})",
                      _fmt(r[f"{key}_p_value"])]
        rows.append(cells)
    return intro, head, rows


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; a '|' inside a cell is escaped so that it cannot split the cell."""
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(head), "|" + "---|" * len(head)] + [line(r) for r in rows]) + "\n"


def comparison_markdown(df: pd.DataFrame, spec: dict) -> str:
    if df.empty:
        return ""
    intro, head, rows = comparison_cells(df)
    return intro + "\n\n" + markdown_table(head, rows)


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "-" if math.isnan(x) else f"{x:.4g}"
    return str(x)


def _pm(mean: float, std: float) -> str:
    return "-" if isinstance(mean, float) and math.isnan(mean) else f"{_fmt(mean)} ± {_fmt(std)}"


def table_cells(df: pd.DataFrame, spec: dict) -> tuple[list[str], list[list[str]]]:
    """The comparison table as a header and rows of formatted cells ("mean ± std")."""
    metric = spec["metric"]["name"]
    thr = spec.get("threshold")
    runs = "runs_per_seed" in df and bool((df["runs_per_seed"].fillna(1) > 1).any())  # with populations
    populations = {s["label"] for s in spec.get("settings", []) if isinstance(s.get("population"), dict)}
    head = ["setting"] + (["params"] if "params" in df else []) + ["seeds"] + (["runs/seed"] if runs else [])
    head += [f"best {metric}", f"final {metric}", f"AUC ({metric})"]
    if thr is not None:
        head += [f"steps to {thr:g}", "reached", "steps (mean curve)"]
    flying = "took_off" in df
    if flying:
        unit = df["takeoff_unit"].dropna().iloc[0]
        head += [f"take-off ({unit})", "took off", f"final {metric} range"]
    rows = []
    for _, r in df.iterrows():
        seeds = (f"{r['seeds_finished']}" + (f" (+{r['seeds_failed']} failed)" if r["seeds_failed"] else "")
                 + (f" (+{r['seeds_unfinished']} unfinished)" if r["seeds_unfinished"] else ""))
        shown = f"{r['setting']} (best member)" if r["setting"] in populations else r["setting"]
        cells = [shown] + ([r["params"]] if "params" in df else []) + [seeds]
        cells += [_fmt(float(r["runs_per_seed"]))] if runs else []
        for m in ("best", "final", "auc"):
            cells.append(_pm(r[m + "_mean"], r[m + "_std"]))
        if thr is not None:
            cells += [_pm(r["steps_to_threshold_mean"], r["steps_to_threshold_std"]),
                      r["reached"], _fmt(r.get("steps_to_threshold_mean_curve", math.nan))]
        if flying:
            cells += [_pm(r.get("takeoff_mean", math.nan), r.get("takeoff_std", math.nan)),
                      r.get("took_off", "-"), f"{_fmt(r.get('final_min', math.nan))} to "
                      f"{_fmt(r.get('final_max', math.nan))}"]
        rows.append([str(c) for c in cells])
    return head, rows


def table_note(spec: dict, df: pd.DataFrame | None = None) -> str:
    thr = spec.get("threshold")
    flying = (f" Take-off: the first evaluation with at least {TAKEOFF_FRACTION:.0%} of its episodes "
              "flown to the end (mean ± std over the seeds that took off); took off: seeds that ever "
              "did; range: the seeds' lowest and highest final score."
              if df is not None and "took_off" in df else "")
    pops = ("" if not has_populations(spec) else
            " A population (PBT / PB2) costs runs/seed trials per seed: `<label> (best member)` is each "
            "seed's member with the best final score, `<label> (member mean)` the mean of its members' curves.")
    if thr is None:
        return "Mean ± std over seeds." + flying + pops
    return (f"Mean ± std over seeds. Steps = {spec.get('step_unit', 'training iterations')}; "
            f"steps to threshold: first step whose trailing {spec.get('smoothing', 3)}-step moving "
            f"average of `{spec['metric']['name']}` reaches {thr}." + flying + pops)


def to_markdown(df: pd.DataFrame, spec: dict) -> str:
    return markdown_table(*table_cells(df, spec)) + "\n" + table_note(spec, df) + "\n"


def has_populations(spec: dict) -> bool:
    return any(isinstance(s.get("population"), dict) for s in spec["settings"])


def population_arms(exp_dir: str | Path | Sequence[str | Path]) -> pd.DataFrame | None:
    """:func:`equal_compute` for a sweep with populations (PBT / PB2); None for any other."""
    if not has_populations(read_spec(exp_dir)):
        return None
    arms = equal_compute(exp_dir)
    return None if arms.empty else arms


def equal_compute_markdown(arms: pd.DataFrame | None, spec: dict) -> str:
    if arms is None:
        return ""
    return ("\n## Compute: schedules, populations and the fixed grid\n\n"
            + markdown_table(*equal_compute_cells(arms, spec)) + "\n" + equal_compute_note(spec) + "\n")


def write_summary(exp_dir: str | Path) -> tuple[pd.DataFrame, str]:
    exp_dir = Path(exp_dir)
    spec = read_spec(exp_dir)
    df = summarize(exp_dir)
    md = f"# Sweep `{spec['name']}`\n\n" + to_markdown(df, spec)
    cmp = compare_to_reference(exp_dir)
    if not cmp.empty:
        md += "\n## Against the steepest fixed slope\n\n" + comparison_markdown(cmp, spec)
        cmp.to_csv(exp_dir / "comparison.csv", index=False)
    arms = population_arms(exp_dir)  # PBT / PB2 against the schedules and the grid at their compute
    md += equal_compute_markdown(arms, spec)
    if arms is not None:
        arms.to_csv(exp_dir / "compute.csv", index=False)
    energy = energy_cells(df)
    if energy is not None:
        md += "\n## Energy per inference\n\n" + markdown_table(*energy) + "\n" + energy_note() + "\n"
    df.to_csv(exp_dir / "summary.csv", index=False)
    (exp_dir / "summary.md").write_text(md)
    return df, md

"""Sweep files: a base experiment x a grid of slope settings x seeds (x other keys).

A sweep file (``kind: sweep``) names a base experiment (the same schema
``snnlab train`` takes, as a path relative to the sweep file or inline), the
grid, what to compare and how to run it::

    kind: sweep
    name: rl_fixed_grid
    base: rl_cartpole.yaml            # or an inline mapping
    set: {stop.iterations: 25}        # dotted overrides of the base (optional)
    settings:                         # slope settings: the grid's main axis
      - {kind: fixed, k: 2}
      - {kind: interval, k_start: 1, k_end: 100, every: 2, stages: 10}
      - {label: adaptive-fast, kind: adaptive, score_low: 0, score_high: 500, window: 5}
      - {label: pbt, kind: pbt, population: 8, k_min: 1, k_max: 100, perturbation_interval: 4}
    seeds: [0, 1, 2]
    params: {model.hidden: [[64, 64], [128, 128]]}   # optional extra axes
    metric: {name: score, mode: max}  # score = val_acc (supervised) / return (RL)
    threshold: 150                    # for steps-to-threshold
    smoothing: 3                      # trailing moving-average window for it
    resources: {cpus_per_trial: 1}
    max_concurrent: 0                 # 0: as many as the CPUs allow
    max_failures: 1
    diagnostics:                      # gradient cosine for a subset of trials (optional)
      seeds: [0]                      #   trials of these seeds log grad/layer{i}/cosine, /magnitude
      every: 2                        #   every N training steps (supervised) or iterations (RL)
    budgets:                          # --budget NAME applies these overrides
      smoke: {stop.iterations: 2}

A ``kind: pbt`` / ``pb2`` setting is a population of trials per seed run by Tune's
PopulationBasedTraining / PB2 over k (keys and checks: :mod:`snnlab.sweep.population`).
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from ..config import (
    ConfigError,
    DiagnosticsConfig,
    FixedSlopeConfig,
    Seed,
    SlopeConfig,
    Strict,
    _fixed_if_no_kind,
    apply_overrides,
    format_validation_error,
    read_yaml,
    validate_document,
)
from ..experiment import validate_experiment
from .population import (
    POPULATION_KINDS,
    PopulationConfig,
    check_populations,
    is_population,
    member_settings,
    population_setting,
    smoke_population,
)

#: Metrics each kind of trial reports at every step (what `metric.name` may be).
METRICS = {
    "supervised": ["score", "val_acc", "val_loss", "train_acc", "train_loss_epoch", "slope",
                   "eval_return", "eval_full_fraction"],  # eval_*: behaviour cloning
    "rl": ["score", "env_runners/episode_return_mean", "evaluation/env_runners/episode_return_mean",
           "slope"],
}

#: Built-in smoke budgets: shrink any sweep to a minutes-long run (same grid); an RL sweep adds
#: its algorithm's own (``smoke`` of its entry in snnlab.rl.registry).
SMOKE = {
    "supervised": {"trainer.max_epochs": 2, "data.limit": 400},
    "rl": {"stop.iterations": 2, "stop.target_return": None, "runners.num_env_runners": 0,
           "evaluation.interval": 0},
}


class Metric(Strict):
    name: str = Field("score", description="a key every trial reports (score, val_acc, ...)")
    mode: Literal["max", "min"] = "max"


class Resources(Strict):
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)


class SweepDiagnostics(DiagnosticsConfig):
    """An experiment's ``diagnostics`` (gradient magnitude and cosine to the k_ref gradient per
    layer) for the trials of some seeds only: they cost a second backward pass per probe."""

    seeds: list[Seed] = Field(..., min_length=1, description="trials of these seeds get diagnostics")
    every: int = Field(..., gt=0, description="every N training steps (supervised) or iterations (RL)")


class _Setting(Strict):
    """One slope setting, validated as an experiment's `slope` section (for its error messages)."""

    slope: SlopeConfig


class SweepSpec(Strict):
    kind: Literal["sweep"]
    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    base: str | dict[str, Any]
    set: dict[str, Any] = Field(default_factory=dict, description="dotted overrides of the base")
    settings: list[dict[str, Any]] = Field(..., min_length=1)
    seeds: list[Seed] = Field([0], min_length=1)
    params: dict[str, list[Any]] = Field(default_factory=dict)
    metric: Metric = Field(default_factory=Metric)
    threshold: float | None = None
    smoothing: int = Field(3, ge=1)
    resources: Resources = Field(default_factory=Resources)
    max_concurrent: int = Field(0, ge=0)
    max_failures: int = Field(1, ge=0)
    diagnostics: SweepDiagnostics | None = None
    budgets: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("settings")
    @classmethod
    def _valid_settings(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for i, raw in enumerate(v):
            raw = dict(raw)
            label = raw.pop("label", None)
            if raw.get("kind") in POPULATION_KINDS:  # a population (PBT / PB2) over k
                try:
                    out.append(population_setting(raw, label))
                except ValidationError as e:
                    msg = format_validation_error(e, "", PopulationConfig, raw).removeprefix(": ")
                    top = not e.errors()[0]["loc"]  # a rule across keys (k_min < k_max, ...)
                    raise ValueError(f"settings[{i}]" + (": " + msg.removeprefix("(top level): ") if top
                                                          else "." + msg)) from None
                continue
            holder = {"slope": _fixed_if_no_kind(None, raw)}
            try:
                slope = _Setting.model_validate(holder).slope.model_dump()
            except ValidationError as e:
                # "slope.k: Input should be ... (got 0; allowed: ...)" -> "settings[0].k: ..."
                at = f"settings[{i}]"
                msg = (format_validation_error(e, "", _Setting, holder).removeprefix(": ")
                       .replace("slope: unknown kind", f"{at}.kind: unknown kind")
                       .replace("slope.", f"{at}.").replace("slope: ", f"{at}: "))
                raise ValueError(msg) from None
            out.append({"label": label or setting_label(slope), "slope": slope})
        labels = [s["label"] for s in out]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(f"two settings share the label {dup[0]!r}; give them distinct `label`s")
        return out

    @field_validator("params")
    @classmethod
    def _nonempty_axes(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not values:
                raise ValueError(f"params.{key}: empty list of values")
        return v

    @model_validator(mode="after")
    def _seeds_unique(self):
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds: repeated seed")
        if self.diagnostics is not None:
            extra = sorted(set(self.diagnostics.seeds) - set(self.seeds))
            if extra:
                raise ValueError(f"diagnostics.seeds: {extra} not among the sweep's seeds {self.seeds}")
        return self


def setting_label(slope: dict[str, Any]) -> str:
    if slope["kind"] == "fixed":
        return f"fixed-k{slope['k']:g}"
    return slope["kind"]


class Sweep:
    """A validated sweep: its spec, the resolved base experiment and where it came from."""

    def __init__(self, spec: SweepSpec, base: dict[str, Any], source: str,
                 settings: list[dict[str, Any]] | None = None) -> None:
        self.spec, self.base, self.source = spec, base, source
        self.kind: str = base.get("kind", "supervised")
        #: a shard of a study (``snnlab study --seeds``) runs only these of ``spec.seeds``; the
        #: trial configs stay those of the whole sweep (same diagnostics, names, W&B group)
        self.shard_seeds: list[int] | None = None
        #: the settings as this run uses them (``--budget smoke`` shortens populations' intervals)
        self.settings: list[dict[str, Any]] = settings if settings is not None else spec.settings

    @property
    def seeds(self) -> list[int]:
        """The seeds this run trains: the shard's, else the sweep's."""
        return list(self.shard_seeds) if self.shard_seeds is not None else list(self.spec.seeds)

    @property
    def grid_settings(self) -> list[dict[str, Any]]:
        """The settings of one trial per seed (fixed, interval, adaptive): the sweep's grid."""
        return [s for s in self.settings if not is_population(s)]

    @property
    def population_settings(self) -> list[dict[str, Any]]:
        """The population settings (PBT / PB2): N trials per seed, one Tune run per population."""
        return [s for s in self.settings if is_population(s)]

    def param_combinations(self) -> list[dict[str, Any]]:
        axes = list(self.spec.params.items())
        return [dict(zip([k for k, _ in axes], values)) for values in itertools.product(*[v for _, v in axes])]

    def populations(self) -> list[tuple[dict[str, Any], dict[str, Any], int]]:
        """Every population this sweep runs: (setting, params, seed), in grid order."""
        return [(s, p, seed) for s in self.population_settings for p in self.param_combinations()
                for seed in self.seeds]

    @property
    def algorithm(self) -> str | None:
        return self.base.get("algorithm", {}).get("name", "PPO") if self.kind == "rl" else None

    def trials(self) -> list[dict[str, Any]]:
        """Every trial's config, in grid order (settings x params x seeds; a shard's seeds only; a
        population setting's members in place of its one trial)."""
        out = []
        for setting in self.settings:
            for params in self.param_combinations():
                for seed in self.seeds:
                    if is_population(setting):
                        out += [trial_config(self, m, params, seed) for m in member_settings(setting, seed)]
                    else:
                        out.append(trial_config(self, setting, params, seed))
        return out

    def experiment(self, trial: dict[str, Any]):
        """The validated experiment config one trial runs."""
        return experiment_from_trial(trial)


def trial_config(sweep: Sweep, setting: dict, params: dict, seed: int) -> dict[str, Any]:
    out = {"sweep": sweep.spec.name, "base": sweep.base, "setting": setting, "seed": seed,
           "params": params}
    if sweep.spec.diagnostics is not None:
        out["diagnostics"] = sweep.spec.diagnostics.model_dump()
    return out


def experiment_from_trial(trial: dict[str, Any]):
    data = copy.deepcopy(trial["base"])
    apply_overrides(data, [f"{k}={_yaml(v)}" for k, v in trial.get("params", {}).items()])
    data["slope"] = dict(trial["setting"]["slope"])
    data["seed"] = int(trial["seed"])
    diag = trial.get("diagnostics")
    if diag and int(trial["seed"]) in diag["seeds"]:
        data["diagnostics"] = {k: v for k, v in diag.items() if k != "seeds"}
    return validate_experiment(data, f"sweep {trial.get('sweep', '?')} trial {trial_name(trial)}")


def trial_name(trial: dict[str, Any]) -> str:
    """``<label>[_<param>=<value>...]_seed<seed>``; a population member adds ``_m<i>``."""
    extra = "".join(f"_{k.split('.')[-1]}={_short(v)}" for k, v in trial.get("params", {}).items())
    member = trial["setting"].get("member")
    return f"{trial['setting']['label']}{extra}_seed{trial['seed']}" + ("" if member is None else f"_m{member}")


def population_name(setting: dict[str, Any], params: dict[str, Any], seed: int) -> str:
    """The folder (and Tune experiment) of one population: its members' name without ``_m<i>``."""
    return trial_name({"setting": {"label": setting["label"]}, "params": params, "seed": seed})


def _short(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "x".join(_short(x) for x in v)
    return f"{v:g}" if isinstance(v, float) else str(v)


def _yaml(v: Any) -> str:
    import yaml

    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


def load_sweep(path: str | Path, budget: str | None = None, overrides: list[str] | None = None) -> Sweep:
    path = Path(path)
    return sweep_from_data(read_yaml(path), path, budget, overrides)


def sweep_from_data(data: dict[str, Any], path: Path, budget: str | None = None,
                    overrides: list[str] | None = None) -> Sweep:
    """Validate a sweep mapping; ``path`` names it in errors and anchors a relative ``base``.

    The whole file is checked, not only the run asked for: the base with every budget the file
    defines (each without ``overrides``) must validate, so a bad value in a budget nobody selected
    fails now, naming the budget, instead of on a cluster later."""
    path = Path(path)
    spec = validate_document(data, path, "sweep", SweepSpec)
    if isinstance(spec.base, str):
        base_path = (path.parent / spec.base) if not Path(spec.base).is_absolute() else Path(spec.base)
        if not base_path.is_file() and Path(spec.base).is_file():
            base_path = Path(spec.base)
        try:
            raw = read_yaml(base_path)
        except ConfigError as e:
            raise ConfigError(f"{path}: base: {e}") from None
        base_src = str(base_path)
    else:
        raw, base_src = dict(spec.base), f"{path} (base)"
    kind = raw.get("kind", "supervised")
    if kind in METRICS and spec.metric.name not in METRICS[kind]:
        raise ConfigError(f"{path}: metric.name: {spec.metric.name!r} is not reported by {kind} trials; "
                          f"allowed: {', '.join(METRICS[kind])}")
    if spec.budgets:  # the file as written first (its errors are no budget's), then each budget
        _run_settings(spec, _resolved_base(spec, raw, base_src, path, None, []), kind, path, None)
    for name in spec.budgets:  # each as the file defines it (this run's overrides follow below)
        try:
            _run_settings(spec, _resolved_base(spec, raw, base_src, path, name, []), kind, path, name)
        except ConfigError as e:
            raise ConfigError(f"{path}: budgets.{name}: {str(e).removeprefix(f'{path}: ')}") from None
    base = _resolved_base(spec, raw, base_src, path, budget, list(overrides or []))
    return Sweep(spec, base, str(path), _run_settings(spec, base, kind, path, budget))


def run_steps(kind: str, base: dict[str, Any]) -> int:
    """Steps every trial runs: ``stop.iterations`` (RL) or ``trainer.max_epochs`` (supervised)."""
    return int(base.get("stop", {}).get("iterations", 30)) if kind == "rl" else int(
        base.get("trainer", {}).get("max_epochs", 20))


def _run_settings(spec: SweepSpec, base: dict[str, Any], kind: str, path: Path,
                  budget: str | None) -> list[dict[str, Any]]:
    """The settings a run at ``budget`` uses, its populations checked against the resolved base:
    the built-in smoke budget exploits after the first step (:func:`smoke_population`)."""
    settings = spec.settings
    if budget == "smoke" and "smoke" not in spec.budgets:
        settings = [smoke_population(s) for s in settings]
    check_populations(settings, kind, base, spec.metric.name, run_steps(kind, base), str(path))
    return settings


def _resolved_base(spec: SweepSpec, raw: dict[str, Any], base_src: str, path: Path, budget: str | None,
                   overrides: list[str]) -> dict[str, Any]:
    """The base experiment with the sweep's ``set``, the budget's and ``overrides`` applied, checked
    (with a placeholder slope, and with every ``params`` value) so bad keys fail before Ray starts."""
    base = copy.deepcopy(raw)
    ov = [f"{k}={_yaml(v)}" for k, v in spec.set.items()]
    if budget is not None:
        ov += budget_overrides(spec, base, budget, str(path))
    ov += overrides
    apply_overrides(base, ov, source=str(path))
    data = base.get("data")
    if isinstance(data, dict) and data.get("name") == "bc_quadrotor":
        # trials run in their own folders: anchor the dataset cache where `snnlab sweep` runs
        data["root"] = str(Path(data.get("root", "data")).expanduser().resolve())
    base.setdefault("logging", {})
    base["logging"]["name"] = spec.name
    base["logging"]["wandb"] = "off"  # sweeps log to W&B through Tune's callback
    probe = copy.deepcopy(base)
    probe["slope"] = FixedSlopeConfig().model_dump()
    validate_experiment(probe, base_src)
    for key, values in spec.params.items():
        for v in values:
            trial = copy.deepcopy(probe)
            apply_overrides(trial, [f"{key}={_yaml(v)}"], source=f"{path}: params")
            validate_experiment(trial, f"{path}: params.{key}={_short(v)}")
    return base


def budget_overrides(spec: SweepSpec, base: dict, budget: str, source: str) -> list[str]:
    kind = base.get("kind", "supervised")
    if budget in spec.budgets:
        items = dict(spec.budgets[budget])
    elif budget == "smoke":
        items = dict(SMOKE[kind])
        if kind == "rl":
            from ..rl.registry import REGISTRY

            items.update(REGISTRY[base.get("algorithm", {}).get("name", "PPO")].smoke)
    elif budget == "full":
        items = {}
    else:
        allowed = sorted({"smoke", "full", *spec.budgets})
        raise ConfigError(f"{source}: --budget {budget!r} is not defined; allowed: {', '.join(allowed)}")
    return [f"{k}={_yaml(v)}" for k, v in items.items()]

"""Studies: the gradient analysis, a supervised sweep and an RL sweep, then one combined report.

A study file (``kind: study``) holds up to three sections, run in this order::

    kind: study
    name: paper_part1
    gradients: {samples: 256, networks: 5}     # `snnlab analyze gradients` protocol fields
    supervised:                                # a sweep (the schema of a `kind: sweep` file
      base: ../configs/sl_digits.yaml          #   without `kind` and `name`)
      settings: [...]
      seeds: [0, 1, 2, 3, 4, 5]
    rl:
      base: ../configs/rl_cartpole.yaml
      ...
    budgets:                                   # --budget NAME: overrides per section
      smoke:
        gradients: {samples: 8, networks: 1}
        supervised: {seeds: [0, 1], set: {trainer.max_epochs: 2}}   # `set` merges, others replace
      laptop: {}
    claims: {sl_tolerance: 0.02, alpha: 0.05}  # how the report judges the paper's claims

Results go to ``<storage>/<name>/``: ``snnlab_study.yaml`` (the resolved study, versions,
the command, stage wall times), ``gradients/``, ``<name>_supervised/`` and ``<name>_rl/``
(ordinary sweep result folders) and ``report/`` (report.html, report.md, figures).
"""

from __future__ import annotations

import copy
import datetime as _dt
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from .config import (
    ConfigError,
    GradientAnalysisConfig,
    Strict,
    format_validation_error,
    read_yaml,
    validate_document,
)
from .study_files import STUDY_FILE  # the folder's file names: shared with the report, no cycle

SWEEP_SECTIONS = ("supervised", "rl")
SECTIONS = ("gradients",) + SWEEP_SECTIONS


class ClaimRules(Strict):
    """How the report judges the paper's claims (docs/results.md, "How claims are judged")."""

    sl_tolerance: float = Field(0.02, gt=0, description="supervised: |Δ final score| vs k_ref "
                                "below this for every setting = 'no clear preference'")
    alpha: float = Field(0.05, gt=0, lt=1, description="significance level of the paired tests")
    shallow_k: float = Field(2.0, gt=0, description="RL: fixed slopes <= this count as shallow")
    cosine_floor: float = Field(0.2, ge=0, le=1, description="gradients: first-layer cosine at the "
                                "smallest k below this = 'approaches 0'")


class StudySpec(Strict):
    kind: Literal["study"]
    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    gradients: dict[str, Any] | None = None
    supervised: dict[str, Any] | None = None
    rl: dict[str, Any] | None = None
    budgets: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    claims: ClaimRules = Field(default_factory=ClaimRules)

    @model_validator(mode="after")
    def _some_section(self):
        if all(getattr(self, s) is None for s in SECTIONS):
            raise ValueError(f"a study needs at least one of the sections {', '.join(SECTIONS)}")
        for budget, sections in self.budgets.items():
            for s in sections:
                if s not in SECTIONS:
                    raise ValueError(f"budgets.{budget}.{s}: unknown section; allowed: {', '.join(SECTIONS)}")
                if getattr(self, s) is None:
                    raise ValueError(f"budgets.{budget}.{s}: the study has no `{s}` section")
        return self


@dataclass
class Study:
    """A validated study at one budget: the gradient protocol and the two sweeps (or None)."""

    spec: StudySpec
    source: str
    budget: str | None
    gradients: GradientAnalysisConfig | None = None
    sweeps: dict[str, Any] = field(default_factory=dict)  # section -> snnlab.sweep.spec.Sweep


def _merge_section(section: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(section)
    for key, value in over.items():
        if key == "set" and isinstance(value, dict):
            out["set"] = {**out.get("set", {}), **value}
        else:
            out[key] = copy.deepcopy(value)
    return out


def _prefixed(err: ConfigError, path: Path, section: str) -> ConfigError:
    """Re-word a sweep's error so that it names the study section: ``file: rl.seeds: ...``."""
    msg = str(err)
    head = f"{path}: "
    if msg.startswith(head) and not msg[len(head):].startswith(f"{section}."):
        msg = f"{head}{section}.{msg[len(head):].removeprefix('(top level): ')}"
    elif not msg.startswith(head):  # an error in the section's base file: name the section too
        msg = f"{head}{section}: {msg}"
    return ConfigError(msg)


def load_study(path: str | Path, budget: str | None = None,
               overrides: list[str] | None = None) -> Study:
    """Validate a study file at ``budget``; ``overrides`` (``KEY=VALUE``, dotted) apply to the base
    experiment of every sweep section, after the file's own and the budget's settings."""
    path = Path(path)
    spec = validate_document(read_yaml(path), path, "study", StudySpec)
    if budget is not None and budget not in spec.budgets:
        allowed = ", ".join(sorted(spec.budgets)) or "none (the file defines no `budgets:`)"
        raise ConfigError(f"{path}: --budget {budget!r} is not defined; allowed: {allowed}")
    # the whole file is checked: every budget as written, so that a bad value in one nobody
    # selected fails now (naming the budget), not when it is run on a cluster
    if spec.budgets:
        _resolve(spec, path, None, None)  # as written first: its errors are no budget's
    for name in spec.budgets:
        try:
            _resolve(spec, path, name, None)
        except ConfigError as e:
            raise ConfigError(f"{path}: budgets.{name}: {str(e).removeprefix(f'{path}: ')}") from None
    return _resolve(spec, path, budget, overrides)


def _resolve(spec: StudySpec, path: Path, budget: str | None, overrides: list[str] | None) -> Study:
    """The study at ``budget`` (with ``overrides``), every section validated."""
    from .sweep.spec import sweep_from_data

    over = spec.budgets.get(budget, {}) if budget else {}
    study = Study(spec=spec, source=str(path), budget=budget)
    if spec.gradients is not None:
        fields = {**spec.gradients, **over.get("gradients", {})}
        try:
            study.gradients = GradientAnalysisConfig.model_validate(fields)
        except ValidationError as e:
            raise ConfigError(format_validation_error(e, f"{path}: gradients", GradientAnalysisConfig,
                                                      fields)) from None
    for section in SWEEP_SECTIONS:
        raw = getattr(spec, section)
        if raw is None:
            continue
        bad = {"kind", "name"} & set(raw)
        if bad:
            raise ConfigError(f"{path}: {section}.{sorted(bad)[0]}: not allowed in a study section "
                              f"(the study sets it)")
        merged = _merge_section(raw, over.get(section, {}))
        try:
            sweep = sweep_from_data({"kind": "sweep", "name": f"{spec.name}_{section}", **merged}, path,
                                    overrides=overrides)
        except ConfigError as e:
            raise _prefixed(e, path, section) from None
        if sweep.kind != section:
            raise ConfigError(f"{path}: {section}.base: is a {sweep.kind!r} experiment; the `{section}` "
                              f"section needs kind {section!r}")
        study.sweeps[section] = sweep
    return study


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("snnlab", "torch", "lightning", "ray", "gymnasium", "wandb", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "-"
    return out


def machine() -> str:
    import os

    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"


@dataclass
class StudyOutcome:
    root: str
    stage_s: dict[str, float]
    errors: list[str]
    report: dict[str, Path] | None  # the files report(root) wrote; None without a report
    wall_time_s: float


def run_study(study: Study, storage: str = "runs", address: str | None = None,
              wandb_mode: str = "offline", resume: bool = False, verbose: int = 1,
              log=print, command: str | None = None,
              report: Callable[[Path], dict[str, Path]] | None = None) -> StudyOutcome:
    """Run the study's stages in order (gradients, supervised, rl); then ``report(root)`` writes
    the combined report (``snnlab study`` passes :func:`snnlab.report.study.build_study_report`:
    the report is the layer above, so the study does not import it).

    With ``resume``, finished stages are kept (the gradient analysis is not redone) and
    interrupted sweeps continue from their checkpoints.
    """
    from .diagnostics import run_analysis
    from .sweep.run import connect, run_sweep, storage_uri
    from .sweep.summary import SPEC_FILE

    storage = storage_uri(storage)
    if "://" in storage:
        raise ConfigError(f"--storage {storage}: a study writes its report locally; give a folder "
                          f"(on a cluster: a shared filesystem path)")
    root = Path(storage) / study.spec.name
    record_path = root / STUDY_FILE
    if record_path.exists() and not resume:
        raise ConfigError(f"{root} already holds this study's results; continue it with --resume "
                          f"or choose another --storage")
    if resume and not record_path.exists():
        raise ConfigError(f"{root}: no study to resume there")
    root.mkdir(parents=True, exist_ok=True)
    record = yaml.safe_load(record_path.read_text()) if resume else {}
    record.update({
        "name": study.spec.name, "source": study.source, "budget": study.budget,
        "command": command or record.get("command") or f"run_study({study.source!r}, budget={study.budget!r})",
        "started": record.get("started") or _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "versions": versions(), "machine": machine(),
        "spec": study.spec.model_dump(), "claims": study.spec.claims.model_dump(),
    })
    stage_s: dict[str, float] = dict(record.get("stage_s", {}))

    def save_record():
        record["stage_s"] = stage_s
        record["wall_time_s"] = round(sum(stage_s.values()), 1)
        record_path.write_text(yaml.safe_dump(record, sort_keys=False))

    save_record()
    t_all = time.perf_counter()
    errors: list[str] = []
    if study.gradients is not None:
        out = root / "gradients"
        if resume and (out / "gradients_summary.csv").is_file():
            log(f"[gradients] kept from the earlier run: {out}")
        else:
            log(f"[gradients] {study.gradients.networks} networks x {study.gradients.samples} samples, "
                f"k in {study.gradients.slopes}")
            t0 = time.perf_counter()
            run_analysis(study.gradients.model_dump(), out)
            stage_s["gradients"] = round(time.perf_counter() - t0, 1)
            save_record()
            log(f"[gradients] done in {stage_s['gradients']:.0f} s: {out}")
    started = connect(address, wandb_mode, storage=str(root)) if study.sweeps else False
    try:
        for section, sweep in study.sweeps.items():
            exp_dir = root / sweep.spec.name
            again = resume and (exp_dir / SPEC_FILE).exists()
            n = len(sweep.trials())
            log(f"[{section}] {'resuming' if again else 'running'} {n} trials "
                f"({len(sweep.spec.settings)} settings x {len(sweep.spec.seeds)} seeds)")
            t0 = time.perf_counter()
            res = run_sweep(sweep, storage=str(root), address=address, wandb_mode=wandb_mode,
                            resume=again, verbose=verbose)
            earlier = stage_s.get(section, 0.0) if again else 0.0  # a resumed stage adds up
            stage_s[section] = round(earlier + time.perf_counter() - t0, 1)
            save_record()
            errors += [f"{section}: {e}" for e in res.errors]
            log(f"[{section}] done in {time.perf_counter() - t0:.0f} s ({len(res.errors)} failed): {exp_dir}")
    finally:
        if started:
            import ray

            ray.shutdown()
    record["finished"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    save_record()
    return StudyOutcome(root=str(root), stage_s=stage_s, errors=errors,
                        report=report(root) if report is not None else None,
                        wall_time_s=round(time.perf_counter() - t_all, 1))

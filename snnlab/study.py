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

**Shards** (``--seeds 0,1`` / ``--seeds 3-5``, :func:`parse_seeds`): a run of some of the budget's
seeds only, in every sweep section, into ``<storage>/<name>_seeds<label>/`` (label:
:func:`seeds_label`, e.g. ``0-2_5``), so that shards run anywhere, at any time, into one storage
without colliding. The record holds the shard's ``seeds`` and the study's ``definition``
(:func:`study_definition`: budget, the resolved gradient protocol and sweeps, claim rules, code
versions and a hash of the snnlab source): ``snnlab report SHARD SHARD ...`` merges shards whose
definitions are equal and whose seeds are disjoint (:func:`shard_conflict`) into one study.
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
    #: a shard (``--seeds``): the seeds it runs (each section runs those among its own seeds)
    shard: list[int] | None = None

    @property
    def all_seeds(self) -> list[int]:
        """Every seed of the study's sweep sections at this budget."""
        return sorted({int(s) for sw in self.sweeps.values() for s in sw.spec.seeds})

    @property
    def seeds(self) -> list[int]:
        """The seeds this run (a shard, or the whole study) trains."""
        return list(self.shard) if self.shard is not None else self.all_seeds

    @property
    def folder(self) -> str:
        """The result folder's name: the study's name, a shard's with its seeds (``<name>_seeds0-2``)."""
        return self.spec.name if self.shard is None else f"{self.spec.name}_seeds{seeds_label(self.shard)}"


def parse_seeds(text: str) -> list[int]:
    """``--seeds``: comma-separated seeds and inclusive ranges (``0,1,2``, ``3-5``, ``0,4-6``), sorted."""
    out: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            raise ConfigError(f"--seeds {text!r}: expected seeds like 0,1,2 or 3-5 (or both: 0,3-5)") from None
        if a < 0 or b < a:
            raise ConfigError(f"--seeds {text!r}: {part!r} is not a range of seeds >= 0 (low-high)")
        out.update(range(a, b + 1))
    return sorted(out)


def seeds_label(seeds: list[int]) -> str:
    """Seeds as a folder-name part: runs of consecutive seeds as ``a-b``, joined by ``_`` (``0-2_5``)."""
    seeds = sorted(set(int(s) for s in seeds))
    runs: list[list[int]] = []
    for s in seeds:
        if runs and s == runs[-1][-1] + 1:
            runs[-1].append(s)
        else:
            runs.append([s])
    return "_".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


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
               overrides: list[str] | None = None, seeds: list[int] | None = None) -> Study:
    """Validate a study file at ``budget``; ``overrides`` (``KEY=VALUE``, dotted) apply to the base
    experiment of every sweep section, after the file's own and the budget's settings. ``seeds``
    makes it a shard: only those seeds run (each must be a seed of some sweep section)."""
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
    study = _resolve(spec, path, budget, overrides)
    if seeds is not None:
        _make_shard(study, seeds)
    return study


def _make_shard(study: Study, seeds: list[int]) -> None:
    at = f"budget {study.budget}" if study.budget else "the sections as written"
    if not study.sweeps:
        raise ConfigError(f"{study.source}: --seeds: the study has no sweep section to run seeds of")
    if not seeds:
        raise ConfigError(f"{study.source}: --seeds: no seed given")
    extra = sorted(set(seeds) - set(study.all_seeds))
    if extra:
        raise ConfigError(f"{study.source}: --seeds: {', '.join(map(str, extra))} "
                          f"{'is' if len(extra) == 1 else 'are'} not among the study's seeds "
                          f"{study.all_seeds} ({at})")
    study.shard = sorted(set(int(s) for s in seeds))
    for sweep in study.sweeps.values():
        sweep.shard_seeds = [s for s in sweep.spec.seeds if s in study.shard]


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


def source_hash() -> str:
    """SHA-256 (first 16 hex digits) of the snnlab package's source (.py, .cpp, .yaml files, by
    relative path and content): two runs with the same hash ran the same code."""
    import hashlib

    pkg = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(p for p in pkg.rglob("*") if p.suffix in (".py", ".cpp", ".yaml") and p.is_file()
                    and "__pycache__" not in p.parts):
        h.update(f.relative_to(pkg).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


#: keys of a resolved sweep that say where it was run from, not what it is (not in the definition)
_PLACE_KEYS = ("source", "shard_seeds")


def study_definition(study: Study) -> dict[str, Any]:
    """Everything that makes two runs (or shards) the same study: the name, the budget, the
    resolved gradient protocol and sweep sections (each as its ``snnlab_sweep.yaml`` records it,
    all of the budget's seeds, without the file's path or a machine-local dataset folder), the claim
    rules, and the code: package versions (W&B's aside: it only logs) and the source hash."""
    from .sweep.run import spec_record

    out: dict[str, Any] = {"name": study.spec.name, "budget": study.budget}
    if study.gradients is not None:
        out["gradients"] = study.gradients.model_dump()
    for section, sweep in study.sweeps.items():
        rec = {k: v for k, v in spec_record(sweep).items() if k not in _PLACE_KEYS}
        data = rec["base"].get("data")
        if isinstance(data, dict) and "root" in data:  # an absolute path of this machine
            rec["base"] = {**rec["base"], "data": {k: v for k, v in data.items() if k != "root"}}
        out[section] = rec
    out["claims"] = study.spec.claims.model_dump()
    code = {k: v for k, v in versions().items() if k != "wandb"}
    code["snnlab_source"] = source_hash()
    out["code"] = code
    return out


def definition_difference(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """``KEY: A vs B`` for the first key in which two study definitions differ; None if equal."""
    from .config import first_difference

    diff = first_difference(a, b)
    return None if diff is None else f"{diff[0]}: {diff[1]} vs {diff[2]}"


def definition_seeds(definition: dict[str, Any]) -> list[int]:
    """Every seed of a study definition's sweep sections."""
    return sorted({int(s) for sec in SWEEP_SECTIONS if isinstance(definition.get(sec), dict)
                   for s in definition[sec].get("seeds", [])})


def is_shard(record: dict[str, Any]) -> bool:
    """Whether a study folder's record (``snnlab_study.yaml``) holds only some of its study's seeds:
    a shard, to be reported together with the others (a folder from before shards never is)."""
    definition = record.get("definition")
    if not isinstance(definition, dict) or "seeds" not in record:
        return False
    return sorted(int(s) for s in record["seeds"]) != definition_seeds(definition)


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
              restart_unfinished: bool = False, log=print, command: str | None = None,
              report: Callable[[Path], dict[str, Path]] | None = None) -> StudyOutcome:
    """Run the study's stages in order (gradients, supervised, rl); then ``report(root)`` writes
    the combined report (``snnlab study`` passes :func:`snnlab.report.study.build_study_report`:
    the report is the layer above, so the study does not import it).

    With ``resume``, finished stages are kept (the gradient analysis is not redone) and
    interrupted sweeps continue from their checkpoints - or, with ``restart_unfinished``, their
    unfinished trials start again from scratch (:func:`snnlab.sweep.run.run_sweep`).
    """
    from .diagnostics import run_analysis
    from .sweep.run import connect, run_sweep, storage_uri
    from .sweep.summary import SPEC_FILE

    storage = storage_uri(storage)
    if "://" in storage:
        raise ConfigError(f"--storage {storage}: a study writes its report locally; give a folder "
                          f"(on a cluster: a shared filesystem path)")
    root = Path(storage) / study.folder
    record_path = root / STUDY_FILE
    what = "this study's" if study.shard is None else "this shard's"
    if record_path.exists() and not resume:
        raise ConfigError(f"{root} already holds {what} results; continue it with --resume "
                          f"or choose another --storage")
    if resume and not record_path.exists():
        raise ConfigError(f"{root}: no study to resume there")
    if restart_unfinished:
        from .sweep.run import check_restart_unfinished

        for sweep in study.sweeps.values():
            check_restart_unfinished(sweep, storage, resume)
    definition = study_definition(study)
    record = yaml.safe_load(record_path.read_text()) if resume else {}
    if resume and record.get("definition") is not None:
        why = definition_difference(record["definition"], definition)
        if why:
            raise ConfigError(f"{root}: cannot resume: the study there differs in {why} (there vs now)")
    root.mkdir(parents=True, exist_ok=True)
    record.update({
        "name": study.spec.name, "source": study.source, "budget": study.budget,
        "command": command or record.get("command") or f"run_study({study.source!r}, budget={study.budget!r})",
        "started": record.get("started") or _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "versions": versions(), "machine": machine(),
        "spec": study.spec.model_dump(), "claims": study.spec.claims.model_dump(),
        "seeds": study.seeds,  # the seeds this folder holds (a shard's, or all the study's)
        "definition": definition,
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
    started = connect(address, wandb_mode, storage=str(root)) if any(sw.seeds for sw in study.sweeps.values()) else False
    try:
        for section, sweep in study.sweeps.items():
            exp_dir = root / sweep.spec.name
            if not sweep.seeds:  # a shard holding none of this section's seeds
                log(f"[{section}] none of this shard's seeds {study.shard} is among the section's "
                    f"{sweep.spec.seeds}: skipped")
                continue
            again = resume and (exp_dir / SPEC_FILE).exists()
            n = len(sweep.trials())
            log(f"[{section}] {'resuming' if again else 'running'} {n} trials "
                f"({len(sweep.spec.settings)} settings x {len(sweep.seeds)} seeds"
                + (f" {sweep.seeds} of {sweep.spec.seeds}" if study.shard is not None else "") + ")")
            t0 = time.perf_counter()
            res = run_sweep(sweep, storage=str(root), address=address, wandb_mode=wandb_mode,
                            resume=again, verbose=verbose, restart_unfinished=again and restart_unfinished)
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

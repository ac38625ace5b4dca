"""``snnlab export``: a compact copy of a study or sweep result folder, to keep in the repository.

What the summary, the report and the energy table read, and nothing else (no checkpoints, no W&B
runs, no TensorBoard files, no Tune state)::

    results/<name>/                  a study (or the shards of one study, merged)
      snnlab_export.yaml             what was exported: from where, when, which code, the key list
      snnlab_study.yaml              the study's record (merged shards: one record, each shard's facts)
      gradients/                     gradients_summary.csv, protocol.yaml, gradients.png
      <name>_supervised/, <name>_rl/ one folder per sweep section:
        snnlab_sweep.yaml            the resolved sweep (as written by the run)
        summary.csv summary.md comparison.csv   the sweep's tables, recomputed from the export
        <trial>/params.json          the trial config (Tune's; what the summary reads)
        <trial>/config.yaml          the validated experiment the trial ran (`snnlab train` takes it)
        <trial>/result.json          one row per step, only the keys read (:func:`read_keys`)
        <trial>/final_result.json    the trial's last reported result, every key but RLlib's `config`
        <trial>/error.txt            when the trial failed
      report/                        the report, rebuilt from the export

A sweep folder exports to the same layout without the study's files (the sweep's folder is
``<out>`` itself, its report in ``<out>/report``). ``snnlab report <out>`` rebuilds the report
from the export alone (no Ray, no original folder); exports of shards of one study still merge
(``snnlab report results/a results/b``), and ``snnlab export SHARD SHARD ... --out DIR`` merges
them into one export. The row keys and sizes are documented in docs/sweeps.md ("Exported results").
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import ConfigError
from ..study import source_hash, versions
from ..study_files import GRADIENTS_DIR, REPORT_DIR, STUDY_FILE
from ..sweep.summary import (
    SPEC_FILE,
    read_keys,
    read_row,
    read_rows,
    trial_dirs,
    write_summary,
)
from .build import build_report, load_sweep_dir
from .study import build_study_report, load_study_dirs

EXPORT_FILE = "snnlab_export.yaml"
#: the gradient analysis' files the report reads (gradients.csv, every single number, is left out)
GRADIENT_FILES = ("gradients_summary.csv", "protocol.yaml", "gradients.png")
#: of a trial's last result, what is not kept: RLlib's whole AlgorithmConfig (config.yaml holds it)
FINAL_DROP = ("config",)


@dataclass
class ExportOutcome:
    out: Path
    kind: str  # "study" or "sweep"
    trials: int
    bytes: int
    report: dict[str, Path]


def _check_out(out: Path) -> None:
    if out.exists() or out.is_symlink():
        raise ConfigError(f"--out {out}: already exists; export into a new folder (nothing was written)")


def _staging(out: Path) -> Path:
    """A hidden sibling of ``out`` to write into; renamed to ``out`` when complete, so that an
    export that fails leaves nothing (and never touches an existing folder)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def export_trial(trial_dir: Path, metric: str, dest: Path) -> str | None:
    """One trial: its config (Tune's and the validated one), the rows the summary uses restricted
    to the keys it reads, the last result, and an error if there was one. Returns why config.yaml
    is missing (a folder of an older snnlab whose trial config no longer validates), else None."""
    from ..sweep.spec import experiment_from_trial

    dest.mkdir()
    params = (trial_dir / "params.json").read_text()
    (dest / "params.json").write_text(params)
    missing = None
    try:
        cfg = experiment_from_trial(json.loads(params))
        (dest / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    except (ValueError, KeyError, TypeError) as e:  # ConfigError is a ValueError
        missing = f"{trial_dir.name}: no config.yaml: {e}"
    rows = read_rows(trial_dir)
    if rows:
        with open(dest / "result.json", "w") as f:
            for step in sorted(rows):
                f.write(json.dumps(read_row(rows[step], metric)) + "\n")
        last = rows[max(rows)]
        (dest / "final_result.json").write_text(
            json.dumps({k: v for k, v in last.items() if k not in FINAL_DROP}) + "\n")
    if (trial_dir / "error.txt").is_file():
        shutil.copyfile(trial_dir / "error.txt", dest / "error.txt")
    return missing


def export_sweep_parts(parts: list[Path], spec: dict, dest: Path, notes: list[str]) -> int:
    """A sweep (one folder, or its folders in several shards, with their merged ``spec``) into
    ``dest``: the spec, every trial (:func:`export_trial`), the recomputed tables. Returns the
    number of trials; what could not be exported is added to ``notes``."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False))
    trials = trial_dirs(parts)
    for trial_dir in trials:
        note = export_trial(trial_dir, spec["metric"]["name"], dest / trial_dir.name)
        if note:
            notes.append(f"{dest.name}/{note}")
    write_summary(dest)
    return len(trials)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _export_info(sources: list[Path], kind: str, trials: int, metrics: list[str], notes: list[str]) -> dict:
    keys = {m: list(read_keys(m)[0]) for m in metrics}
    return {
        "kind": kind,
        "from": [str(p.resolve()) for p in sources],
        "exported": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "by": {"snnlab_source": source_hash(), "snnlab": versions().get("snnlab", "-")},
        "trials": trials,
        "row_keys": sorted({k for ks in keys.values() for k in ks}),
        "row_key_prefixes": list(read_keys("")[1]),
        "per_trial": ["params.json", "config.yaml", "result.json", "final_result.json", "error.txt (if any)"],
        "notes": notes,
    }


def export_study(roots: list[str | Path], out: str | Path) -> ExportOutcome:
    """A study folder, or the shards of one study merged (checked as ``snnlab report`` checks them),
    into ``out`` (which must not exist), then its report into ``out/report``."""
    out = Path(out)
    _check_out(out)
    roots = [Path(r) for r in roots]
    study = load_study_dirs(roots)  # every check (shards of one study, gradients agree) first
    tmp = _staging(out)
    try:
        (tmp / STUDY_FILE).write_text(yaml.safe_dump(study.record, sort_keys=False))
        if study.grad_dir is not None:
            (tmp / GRADIENTS_DIR).mkdir()
            for name in GRADIENT_FILES:
                if (study.grad_dir / name).is_file():
                    shutil.copyfile(study.grad_dir / name, tmp / GRADIENTS_DIR / name)
        trials, notes = 0, []
        for sd in study.worlds.values():
            trials += export_sweep_parts(sd.parts, sd.spec, tmp / sd.name, notes)
        info = _export_info(study.roots, "study", trials,
                            [sd.spec["metric"]["name"] for sd in study.worlds.values()], notes)
        (tmp / EXPORT_FILE).write_text(yaml.safe_dump(info, sort_keys=False))
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report = build_study_report(out)
    return ExportOutcome(out, "study", trials, _size(out), report)


def export_sweep(path: str | Path, out: str | Path) -> ExportOutcome:
    """A sweep folder into ``out`` (which must not exist), then its report into ``out/report``."""
    out = Path(out)
    _check_out(out)
    sd = load_sweep_dir(path)
    tmp = _staging(out)
    try:
        notes: list[str] = []
        trials = export_sweep_parts(sd.parts, sd.spec, tmp, notes)
        info = _export_info(sd.parts, "sweep", trials, [sd.spec["metric"]["name"]], notes)
        (tmp / EXPORT_FILE).write_text(yaml.safe_dump(info, sort_keys=False))
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report = build_report([out], out / REPORT_DIR)
    return ExportOutcome(out, "sweep", trials, _size(out), report)

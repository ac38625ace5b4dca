"""``snnlab report DIR [DIR ...]``: turn sweep result folders into a comparison report.

Reads only local files (each folder's ``snnlab_sweep.yaml`` and Tune's per-trial
``params.json`` / ``result.json``) and writes into ``--out``:

    curves.png       learning curves per setting: seed mean, band = +-1 std over seeds
    slopes.png       the slope over training for scheduled (non-fixed) settings
    bars.png         steps to threshold and best score per setting, mean +- std
    summary.csv      the table (one row per sweep x setting)
    report.md        the table in Markdown
    report.html      one self-contained page embedding the PNGs (base64) and the table
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..config import ConfigError
from ..sweep.summary import (
    compare_to_reference,
    comparison_markdown,
    energy_cells,
    energy_note,
    equal_compute_cells,
    equal_compute_markdown,
    equal_compute_note,
    load_curves,
    population_arms,
    markdown_table,
    read_spec,
    summarize,
    sweep_parts,
    table_cells,
    table_note,
    to_markdown,
)


@dataclass
class SweepData:
    name: str
    path: Path  # the (first) folder
    spec: dict
    curves: list
    table: pd.DataFrame
    #: every folder it was read from: one, or the same sweep section of several study shards
    parts: list[Path] = field(default_factory=list)


def load_sweep_dir(path: str | Path | Sequence[str | Path]) -> SweepData:
    """A sweep result folder, or the parts of one sweep (the same section of several shards of a
    study: one sweep with all their trials, :func:`snnlab.sweep.summary.sweep_parts`)."""
    parts = sweep_parts(path)
    for part in parts:
        if not part.is_dir():
            raise ConfigError(f"{part}: no such directory")
    spec = read_spec(parts)
    curves = load_curves(parts, spec["metric"]["name"], spec.get("steps"))
    if not curves:
        raise ConfigError(f"{parts[0]}: the sweep has no trial results yet")
    return SweepData(spec["name"], parts[0], spec, curves, summarize(parts), parts)


def _settings(sd: SweepData) -> list[str]:
    order = [s["label"] for s in sd.spec["settings"]]
    return [s for s in order if any(c.setting == s for c in sd.curves)]


def _mean_band(curves):
    n = min(len(c.values) for c in curves)
    vals = np.array([c.values[:n] for c in curves], dtype=float)
    return curves[0].steps[:n], np.nanmean(vals, axis=0), (np.nanstd(vals, axis=0, ddof=1)
                                                          if len(curves) > 1 else np.zeros(n))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_curves(sweeps: list[SweepData], path: Path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, len(sweeps), figsize=(6.5 * len(sweeps), 4.2), squeeze=False)
    for ax, sd in zip(axes[0], sweeps):
        for setting in _settings(sd):
            cs = [c for c in sd.curves if c.setting == setting and c.status == "OK"]
            if not cs:
                continue
            x, m, s = _mean_band(cs)
            (line,) = ax.plot(x, m, label=f"{setting} (n={len(cs)})")
            ax.fill_between(x, m - s, m + s, color=line.get_color(), alpha=0.15)
        thr = sd.spec.get("threshold")
        if thr is not None:
            ax.axhline(thr, color="grey", ls="--", lw=1, label=f"threshold {thr:g}")
        ax.set(title=f"{sd.name}: {sd.spec['metric']['name']} (mean ± std over seeds)",
               xlabel=sd.spec.get("step_unit", "step"), ylabel=sd.spec["metric"]["name"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(plt, fig, path)


def plot_seed_curves(sd: SweepData, path: Path) -> Path | None:
    """Every seed's curve, one panel per setting (the spread between seeds that a mean hides);
    None without finished trials."""
    settings = [s for s in _settings(sd) if any(c.setting == s and c.status == "OK" for c in sd.curves)]
    if not settings:
        return None
    plt = _plt()
    cols = min(4, len(settings))
    rows = -(-len(settings) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False,
                             sharex=True, sharey=True)
    thr = sd.spec.get("threshold")
    for ax, setting in zip(axes.flat, settings):
        for c in sorted((c for c in sd.curves if c.setting == setting and c.status == "OK"),
                        key=lambda c: c.seed):
            ax.plot(c.steps, c.values, lw=1.1, alpha=0.85, label=f"seed {c.seed}")
        if thr is not None:
            ax.axhline(thr, color="grey", ls="--", lw=0.8)
        ax.set_title(setting, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(settings):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=6)
    fig.suptitle(f"{sd.name}: {sd.spec['metric']['name']} per seed", fontsize=10)
    for ax in axes[-1]:
        ax.set_xlabel(sd.spec.get("step_unit", "step"))
    return _save(plt, fig, path)


def plot_slopes(sweeps: list[SweepData], path: Path) -> Path | None:
    scheduled = [(sd, s) for sd in sweeps for s in sd.spec["settings"] if s["slope"]["kind"] != "fixed"]
    if not scheduled:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for sd, s in scheduled:
        cs = [c for c in sd.curves if c.setting == s["label"] and len(c.slopes)]
        for i, c in enumerate(cs):
            ax.plot(c.steps, c.slopes, alpha=0.8, lw=1.2,
                    label=f"{sd.name}: {s['label']}" if i == 0 else None,
                    color=f"C{scheduled.index((sd, s))}")
    ax.set_yscale("log")
    ax.set(title="slope k over training (scheduled settings, one line per seed)", xlabel="step",
           ylabel="slope k")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def plot_bars(sweeps: list[SweepData], path: Path) -> Path:
    plt = _plt()
    rows = [(sd.name, r) for sd in sweeps for _, r in sd.table.iterrows()]
    labels = [f"{n}\n{r['setting']}" if len(sweeps) > 1 else r["setting"] for n, r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(max(8, 1.1 * len(rows) + 4), 4.2))
    x = np.arange(len(rows))
    stt = [r.get("steps_to_threshold_mean", math.nan) for _, r in rows]
    stt_e = [r.get("steps_to_threshold_std", math.nan) for _, r in rows]
    a1.bar(x, np.nan_to_num(stt, nan=0.0), yerr=np.nan_to_num(stt_e, nan=0.0), capsize=3, color="C0")
    for i, (v, (_, r)) in enumerate(zip(stt, rows)):
        a1.annotate(str(r.get("reached", "")) if not math.isnan(v) else "not reached",
                    (i, 0 if math.isnan(v) else v), ha="center", va="bottom", fontsize=7)
    a1.set(title="steps to threshold (mean ± std over seeds that reached it)", ylabel="steps")
    a2.bar(x, [r["best_mean"] for _, r in rows], yerr=np.nan_to_num([r["best_std"] for _, r in rows]),
           capsize=3, color="C1")
    a2.set(title="best score (mean ± std over seeds)", ylabel="best score")
    for ax in (a1, a2):
        ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    return _save(plt, fig, path)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def html_table(head: list[str], rows: list[list[str]], note: str = "") -> str:
    th = "".join(f"<th>{html.escape(str(c))}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return (f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"
            + (f"<p class='note'>{html.escape(note)}</p>" if note else ""))


def _html_table(df: pd.DataFrame, spec: dict) -> str:
    energy = energy_cells(df)
    return html_table(*table_cells(df, spec), note=table_note(spec, df)) + (
        "" if energy is None else html_table(*energy, note=energy_note()))


def _md_table(df: pd.DataFrame, spec: dict) -> str:
    energy = energy_cells(df)
    return to_markdown(df, spec) + ("" if energy is None else
                                    "\n" + markdown_table(*energy) + "\n" + energy_note() + "\n")


CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}img{max-width:100%}
figure{margin:1.5em 0}figcaption,.note{color:#666;font-size:13px}code{background:#f3f3f3;padding:0 3px}"""


def build_report(dirs: list[str | Path], out: str | Path) -> dict[str, Path]:
    sweeps = [load_sweep_dir(d) for d in dirs]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"curves": plot_curves(sweeps, out / "curves.png"), "bars": plot_bars(sweeps, out / "bars.png")}
    slopes = plot_slopes(sweeps, out / "slopes.png")
    if slopes:
        files["slopes"] = slopes
    table = pd.concat([sd.table.assign(sweep=sd.name) for sd in sweeps], ignore_index=True)
    table = table[["sweep"] + [c for c in table.columns if c != "sweep"]]
    table.to_csv(out / "summary.csv", index=False)
    files["summary"] = out / "summary.csv"
    md = ["# snnlab report", ""]
    for sd in sweeps:
        md += [f"## {sd.name}", f"`{sd.path}`", "", _md_table(sd.table, sd.spec)]
        md += [equal_compute_markdown(population_arms(sd.parts), sd.spec)]  # "" without populations
        cmp = compare_to_reference(sd.parts)
        if not cmp.empty:
            md += ["", comparison_markdown(cmp, sd.spec)]
    md += ["![learning curves](curves.png)", "", "![bars](bars.png)", ""]
    if slopes:
        md += ["![slopes](slopes.png)", ""]
    (out / "report.md").write_text("\n".join(md))
    files["markdown"] = out / "report.md"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>snnlab report</title>"
             f"<style>{CSS}</style></head><body><h1>snnlab report</h1>"]
    for sd in sweeps:
        thr = sd.spec.get("threshold")
        parts.append(f"<h2>{html.escape(sd.name)}</h2><p><code>{html.escape(str(sd.path))}</code> - "
                     f"metric <code>{html.escape(sd.spec['metric']['name'])}</code> "
                     f"({sd.spec['metric']['mode']}), {len(sd.curves)} trials, steps = "
                     f"{html.escape(sd.spec.get('step_unit', 'steps'))}"
                     + (f", threshold {thr:g} (trailing {sd.spec.get('smoothing', 3)}-step mean)" if thr is not None else "")
                     + "</p>")
        parts.append(_html_table(sd.table, sd.spec))
        arms = population_arms(sd.parts)  # PBT / PB2: the arms at the compute each used
        if arms is not None:
            parts.append(html_table(*equal_compute_cells(arms, sd.spec), note=equal_compute_note(sd.spec)))
    parts.append(_img(files["curves"], "Learning curves per setting: mean over seeds, band = ±1 std."))
    if slopes:
        parts.append(_img(slopes, "Slope k over training for scheduled settings (one line per seed)."))
    parts.append(_img(files["bars"], "Steps to threshold and best score per setting (mean ± std)."))
    parts.append("</body></html>")
    (out / "report.html").write_text("\n".join(parts))
    files["html"] = out / "report.html"
    return files

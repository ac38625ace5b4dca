"""The combined report of a study (``snnlab study`` / ``snnlab report STUDY_DIR``).

Reads the study folder (``snnlab_study.yaml``, ``gradients/``, the two sweep folders) and writes
into ``<study>/report/``:

    report.html / report.md   one page: run facts, the paper's claims judged, every table and figure
    claims.csv                claim, paper, this run (numbers), verdict
    summary.csv               the per-setting table of both sweeps
    comparison.csv            the paired comparisons against k_ref of both sweeps
    gradients.png             the gradient analysis (magnitude and cosine per layer and k)
    curves.png, bars.png, slopes.png   learning curves, steps/best bars, slope traces
    sl_vs_rl.png              Δ AUC against k_ref, in % of k_ref's AUC, supervised next to RL
    rates.png                 spike rate per layer and setting (a silent layer shows as ~0)
    cosine.png                gradient cosine to k_ref per layer, from the diagnostics trials

How the claims are judged is spelled out in :func:`judge_claims` and docs/results.md.

Shards of one study (``snnlab study --seeds``; ``snnlab report SHARD SHARD ... --out DIR``) are
merged into that study (:func:`load_study_dirs`, :func:`check_shards`): every sweep read from all
shards' folders, the gradient analysis from one shard (checked against the others'), one record -
the same tables, claims, figures and energy as one run of all seeds.

Several study folders (``snnlab report STUDY_A STUDY_B ... --out DIR``, :func:`build_studies_report`)
are put side by side on one page: each study's claims, one row per study and world with every
setting's Δ AUC against that study's k_ref and steps to threshold, ``relative_auc.png`` (a panel
per study and world) and each study's energy tables; ``claims.csv``, ``studies.csv``, ``summary.csv``.
"""

from __future__ import annotations

import copy
import html
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ..config import ConfigError
from ..study import definition_difference, is_shard, seeds_label
from ..study_files import GRADIENTS_DIR, REPORT_DIR, STUDY_FILE, sweep_dir_name
from ..sweep.summary import (
    SPEC_FILE,
    comparison_cells,
    compare_to_reference,
    energy_cells,
    energy_note,
    equal_compute_cells,
    equal_compute_note,
    markdown_table,
    population_arms,
    table_cells,
    table_note,
)
from .build import (
    CSS,
    SweepData,
    _img,
    _plt,
    _save,
    html_table,
    load_sweep_dir,
    plot_bars,
    plot_curves,
    plot_seed_curves,
    plot_slopes,
)

WORLD_TITLE = {"supervised": "Supervised", "rl": "Reinforcement learning"}
WORLD_SHORT = {"supervised": "supervised", "rl": "RL"}
RATE_KEY = {"supervised": "val_spike_rate/layer", "rl": "spike_rate/layer"}


def _f(x: float, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


# --- figures -----------------------------------------------------------------------------
def _ref_auc(sd: SweepData, ref: str) -> float:
    row = sd.table[sd.table["setting"] == ref]
    return float(row["auc_mean"].iloc[0]) if len(row) else math.nan


def _relative_panel(ax, sd: SweepData, cmp: pd.DataFrame, alpha: float, title: str,
                    order: list[str] | None = None) -> None:
    """One panel of Δ AUC against the reference in % of its AUC (bars with the 95% CI). With
    ``order``, one row per setting of ``order`` (the reference at 0, absent settings empty), so
    that panels of several sweeps line up; else one row per compared setting, in ``cmp``'s order."""
    ref = cmp["reference"].iloc[0]
    scale = 100.0 / abs(_ref_auc(sd, ref))
    y = np.arange(len(cmp)) if order is None else np.array([order.index(s) for s in cmp["setting"]])
    m = cmp["auc_mean_diff"].to_numpy() * scale
    lo, hi = cmp["auc_ci_low"].to_numpy() * scale, cmp["auc_ci_high"].to_numpy() * scale
    colors = [{"+": "C2", "-": "C3", "0": "C7"}[_sig(r, "auc", alpha)] for _, r in cmp.iterrows()]
    ax.barh(y, m, xerr=[m - lo, hi - m], color=colors, capsize=3)
    ax.axvline(0, color="k", lw=0.8)
    if order is None:
        ax.set_yticks(y, cmp["setting"], fontsize=8)
        ax.invert_yaxis()
    else:
        if ref in order:
            ax.plot([0], [order.index(ref)], marker="D", color="k", ms=4)
        for i, setting in enumerate(order):
            if setting != ref and setting not in set(cmp["setting"]):
                ax.text(0.02, i, "not in this sweep", transform=ax.get_yaxis_transform(), va="center",
                        fontsize=7, color="0.5")
        ax.set_yticks(np.arange(len(order)), [f"{s} (k_ref)" if s == ref else s for s in order], fontsize=8)
        ax.set_ylim(len(order) - 0.5, -0.5)  # the first setting on top, as inverted above
    ax.set(title=title, xlabel="% change of the area under the learning curve")
    ax.grid(alpha=0.3, axis="x")


def plot_relative(worlds: dict[str, SweepData], cmps: dict[str, pd.DataFrame], path: Path,
                  alpha: float = 0.05) -> Path | None:
    """Δ AUC against the reference in % of the reference's AUC, with the bootstrap CI; green / red
    when the difference is significant (CI excludes 0 and p < alpha), grey otherwise."""
    usable = [(w, sd) for w, sd in worlds.items() if not cmps[w].empty]
    if not usable:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(usable), figsize=(6 * len(usable), 4), squeeze=False)
    for ax, (w, sd) in zip(axes[0], usable):
        ref = cmps[w]["reference"].iloc[0]
        _relative_panel(ax, sd, cmps[w], alpha,
                        f"{WORLD_TITLE.get(w, w)}: Δ AUC vs {ref} (% of its AUC, 95% CI)")
    return _save(plt, fig, path)


def _layer_series(sd: SweepData, prefix: str, suffix: str = "") -> dict[str, dict[int, list[float]]]:
    """setting -> layer -> per-trial mean over steps of ``<prefix><i><suffix>``."""
    pat = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix) + "$")
    out: dict[str, dict[int, list[float]]] = {}
    for c in sd.curves:
        for key, vals in c.extra.items():
            m = pat.match(key)
            if m and np.isfinite(vals).any():
                out.setdefault(c.setting, {}).setdefault(int(m.group(1)), []).append(float(np.nanmean(vals)))
    return out


def _settings_order(sd: SweepData, present) -> list[str]:
    return [s["label"] for s in sd.spec["settings"] if s["label"] in present]


def plot_layers(worlds: dict[str, SweepData], prefix_of, suffix: str, ylabel: str, title: str,
                path: Path, ylim=None, xlabel: str = "LIF layer (0 = first)") -> Path | None:
    data = {w: _layer_series(sd, prefix_of(w), suffix) for w, sd in worlds.items()}
    data = {w: d for w, d in data.items() if d}
    if not data:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(data), figsize=(6 * len(data), 4), squeeze=False)
    for ax, (w, d) in zip(axes[0], data.items()):
        for setting in _settings_order(worlds[w], d):
            layers = sorted(d[setting])
            ax.plot(layers, [np.mean(d[setting][i]) for i in layers], marker="o",
                    label=f"{setting} (n={len(d[setting][layers[0]])})")
        ax.set(title=f"{WORLD_TITLE.get(w, w)}: {title}", xlabel=xlabel, ylabel=ylabel)
        if ylim:
            ax.set_ylim(*ylim)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(plt, fig, path)


def layer_table(worlds: dict[str, SweepData], prefix_of, suffix: str) -> pd.DataFrame:
    rows = []
    for w, sd in worlds.items():
        d = _layer_series(sd, prefix_of(w), suffix)
        for setting in _settings_order(sd, d):
            row = {"world": w, "setting": setting, "trials": len(next(iter(d[setting].values())))}
            for i in sorted(d[setting]):
                row[f"layer{i}"] = float(np.mean(d[setting][i]))
            rows.append(row)
    return pd.DataFrame(rows)


# --- the paper's claims ----------------------------------------------------------------------
def _sig(r: pd.Series, key: str, alpha: float) -> str:
    """'+' / '-' when the paired CI excludes 0 and p < alpha, else '0'."""
    lo, hi, p = r[f"{key}_ci_low"], r[f"{key}_ci_high"], r[f"{key}_p_value"]
    if p < alpha and lo > 0:
        return "+"
    if p < alpha and hi < 0:
        return "-"
    return "0"


def _direction_verdict(signs: list[str], good: str) -> str:
    if not signs:
        return "not run"
    bad = "-" if good == "+" else "+"
    if any(s == bad for s in signs):
        return "disagrees"
    if all(s == good for s in signs):
        return "agrees"
    return "partly agrees" if any(s == good for s in signs) else "inconclusive"


def min_decisive_seeds(alpha: float) -> int:
    """The fewest paired seeds whose exact sign-flip test can reach p < alpha (its smallest
    p is 2 / 2^n): 6 at alpha = 0.05. Fewer seeds cannot decide a claim either way."""
    n = 1
    while 2.0 / 2**n >= alpha:
        n += 1
    return n


def _paper_settings(cmp: pd.DataFrame, sd: SweepData) -> pd.DataFrame:
    """``cmp`` without the rows of population settings (PBT / PB2) of the sweep ``sd``."""
    pops = {st["label"] for st in sd.spec.get("settings", []) if isinstance(st.get("population"), dict)}
    if not pops or cmp is None or cmp.empty:
        return cmp
    return cmp[~cmp["setting"].isin(pops)].reset_index(drop=True)


def judge_claims(grad: pd.DataFrame | None, worlds: dict[str, SweepData], cmps: dict[str, pd.DataFrame],
                 rules: dict[str, Any]) -> pd.DataFrame:
    """Each of the paper's Part-1 claims, this run's numbers, and a verdict by fixed rules.

    Population settings (PBT / PB2) are left out of every claim (:func:`_paper_settings`).

    - Supervised, "no clear preference", judged as equivalence: *agrees* only if every setting's
      paired 95% CI of Δ final score against k_ref lies inside ``±sl_tolerance``, from at least
      :func:`min_decisive_seeds` paired seeds (fewer cannot decide: *inconclusive*); *disagrees*
      if some setting differs by at least the tolerance with a 95% CI excluding 0 and p < alpha;
      otherwise *inconclusive*.
    - RL, "shallow (fixed k <= shallow_k) and scheduled slopes learn faster" (Δ AUC; Δ steps to
      threshold) and "reach higher returns" (Δ best): per setting '+' / '-' when the CI excludes 0
      and p < alpha; *agrees* if all are better, *partly agrees* if some are and none worse,
      *disagrees* if any is worse, *inconclusive* if none differs.
    - "The slope matters more in RL than in supervised learning": *agrees* if the largest
      |Δ AUC| (in % of k_ref's AUC) is larger in RL and some RL setting differs significantly
      while no supervised one does; *disagrees* if the supervised world shows the larger and
      significant effect; otherwise *inconclusive*.
    - Gradients, "shallow slopes carry much larger gradients into early layers": ratio of the
      first layer's mean |gradient| at the smallest k to k_ref's: *agrees* if >= 10, *disagrees*
      if <= 1. "Direction decorrelates with depth, approaching 0 at the smallest k in the first
      layer": *agrees* if the smallest k's cosine does not rise going from the readout to the
      first layer (tolerance 0.05) and ends below ``cosine_floor``; *disagrees* if it rises or
      stays >= 0.5; otherwise *inconclusive*.
    """
    alpha, tol = float(rules.get("alpha", 0.05)), float(rules.get("sl_tolerance", 0.02))
    shallow, floor = float(rules.get("shallow_k", 2.0)), float(rules.get("cosine_floor", 0.2))
    rows = []
    # the paper's claims are about its fixed slopes and schedules: a population (PBT / PB2, its best
    # member picked after the run, N runs of compute) is not among them - it is read at equal
    # compute in the report's "Compute" tables instead
    cmps = {w: _paper_settings(df, worlds[w]) if w in worlds else df for w, df in cmps.items()}

    def add(claim, paper, this_run, verdict):
        rows.append({"claim": claim, "paper": paper, "this run": this_run, "verdict": verdict})

    sl = cmps.get("supervised")
    if sl is not None and not sl.empty:
        ref = sl["reference"].iloc[0]
        worst = sl.iloc[int(np.argmax(np.abs(sl["final_mean_diff"].to_numpy())))]
        need = min_decisive_seeds(alpha)
        few = [r["setting"] for _, r in sl.iterrows() if int(r["paired_seeds"]) < need]
        inside = [r["setting"] for _, r in sl.iterrows() if int(r["paired_seeds"]) >= need
                  and -tol < r["final_ci_low"] and r["final_ci_high"] < tol]
        sig = [(r["setting"], r["final_mean_diff"]) for _, r in sl.iterrows()
               if int(r["paired_seeds"]) >= need and abs(r["final_mean_diff"]) >= tol
               and _sig(r, "final", alpha) != "0"]
        means = worlds["supervised"].table.set_index("setting")["final_mean"]
        if sig:
            verdict = "disagrees"
        elif len(inside) == len(sl):
            verdict = "agrees"
        else:
            verdict = "inconclusive"
        add("Supervised: final performance about the same for every slope setting",
            "no clear preference; only training dynamics differ",
            f"final score {means.min():.4g}-{means.max():.4g} across settings; largest |Δ final| vs "
            f"{ref}: {worst['final_mean_diff']:+.4g} ({worst['setting']}, 95% CI "
            f"{worst['final_ci_low']:+.3g} to {worst['final_ci_high']:+.3g}, p={worst['final_p_value']:.3g}); "
            f"equivalence band ±{tol:g}: CI inside it for {len(inside)} of {len(sl)} settings"
            + (f"; too few paired seeds (< {need}) for {', '.join(few)}" if few else "")
            + (f"; significant beyond it: {', '.join(s for s, _ in sig)}" if sig else ""),
            verdict)
    rl = cmps.get("rl")
    if rl is not None and not rl.empty:
        ref = rl["reference"].iloc[0]
        kinds = {s["label"]: s["slope"] for s in worlds["rl"].spec["settings"]}
        cand = rl[[kinds.get(s, {}).get("kind") != "fixed" or kinds[s]["k"] <= shallow for s in rl["setting"]]]
        for key, claim, paper, good in (
                ("auc", "RL: shallow and scheduled slopes learn faster than steep fixed slopes (AUC)",
                 "shallow/scheduled learn faster (3-4x fewer epochs to return 100)", "+"),
                ("stt", "RL: shallow and scheduled slopes reach the threshold in fewer steps",
                 "3-4x fewer epochs to reach the threshold", "-"),
                ("best", "RL: shallow and scheduled slopes reach higher returns",
                 "about 2x better best return than k=50/100", "+")):
            if f"{key}_mean_diff" not in cand:
                continue
            signs = [_sig(r, key, alpha) for _, r in cand.iterrows()]
            parts = [f"{r['setting']} {r[f'{key}_mean_diff']:+.3g} [{r[f'{key}_ci_low']:+.3g}, "
                     f"{r[f'{key}_ci_high']:+.3g}] p={r[f'{key}_p_value']:.3g}" for _, r in cand.iterrows()]
            add(claim, paper, f"Δ vs {ref} (95% CI, p): " + "; ".join(parts),
                _direction_verdict(signs, good))
    if sl is not None and rl is not None and not sl.empty and not rl.empty:
        def rel(world, df):
            scale = 100.0 / abs(_ref_auc(worlds[world], df["reference"].iloc[0]))
            i = int(np.argmax(np.abs(df["auc_mean_diff"].to_numpy())))
            return abs(df["auc_mean_diff"].iloc[i]) * scale, df["setting"].iloc[i], any(
                _sig(r, "auc", alpha) != "0" for _, r in df.iterrows())

        (sl_rel, sl_set, sl_sig), (rl_rel, rl_set, rl_sig) = rel("supervised", sl), rel("rl", rl)
        if rl_rel > sl_rel and rl_sig and not sl_sig:
            verdict = "agrees"
        elif sl_rel > rl_rel and sl_sig:
            verdict = "disagrees"
        else:
            verdict = "inconclusive"
        add("The slope matters more in RL than in supervised learning",
            "supervised barely cares about k; online RL strongly prefers shallow or scheduled slopes",
            f"largest |Δ AUC| vs k_ref: supervised {sl_rel:.2f}% ({sl_set}, "
            f"{'significant' if sl_sig else 'none significant'}), RL {rl_rel:.1f}% ({rl_set}, "
            f"{'some significant' if rl_sig else 'none significant'})", verdict)
    if grad is not None and not grad.empty:
        ks = sorted(grad["k"].unique())
        k_min, k_ref = ks[0], float(rules.get("k_ref", ks[-1]))
        g_min = grad[grad["k"] == k_min].sort_values("layer")
        g_ref = grad[grad["k"] == k_ref].sort_values("layer")
        ratio = float(g_min["magnitude"].iloc[0] / g_ref["magnitude"].iloc[0])
        add("Gradients: shallow slopes carry much larger gradients into early layers",
            "orders of magnitude larger in the first layers",
            f"first-layer mean |gradient| k={k_min:g} / k={k_ref:g} = {ratio:.3g}",
            "agrees" if ratio >= 10 else "disagrees" if ratio <= 1 else "inconclusive")
        cos = g_min["cosine"].to_numpy()
        rises = any(cos[i] > cos[i + 1] + 0.05 for i in range(len(cos) - 1))  # towards the input
        verdict = ("agrees" if not rises and cos[0] < floor else
                   "disagrees" if rises or cos[0] >= 0.5 else "inconclusive")
        add(f"Gradients: at shallow slopes the direction decorrelates from k={k_ref:g} with depth",
            "cosine falls towards the input, approaching 0 at k=1 in the first layer",
            f"cosine at k={k_min:g}, layer 0 -> readout: " + ", ".join(f"{c:.2f}" for c in cos),
            verdict)
    return pd.DataFrame(rows, columns=["claim", "paper", "this run", "verdict"])


# --- the page ------------------------------------------------------------------------------
def _df_cells(df: pd.DataFrame, digits: int = 3) -> tuple[list[str], list[list[str]]]:
    return list(df.columns), [[_f(v, digits) if isinstance(v, float) else str(v) for v in r]
                              for r in df.itertuples(index=False)]


class _Page:
    """Markdown and HTML written side by side from the same pieces."""

    def __init__(self, title: str) -> None:
        self.md = [f"# {title}", ""]
        self.html = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                     f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]

    def h2(self, text: str) -> None:
        self.md += [f"## {text}", ""]
        self.html.append(f"<h2>{html.escape(text)}</h2>")

    def p(self, text: str) -> None:
        self.md += [text, ""]
        self.html.append(f"<p>{html.escape(text)}</p>")

    def table(self, head, rows, note: str = "") -> None:
        self.md += [markdown_table(head, rows)] + ([note, ""] if note else [])
        self.html.append(html_table(head, rows, note))

    def fig(self, path: Path | None, caption: str) -> None:
        if path is None:
            return
        self.md += [f"![{caption}]({path.name})", "", f"*{caption}*", ""]
        self.html.append(_img(path, caption))

    def write(self, out: Path) -> tuple[Path, Path]:
        (out / "report.md").write_text("\n".join(self.md))
        (out / "report.html").write_text("\n".join(self.html + ["</body></html>"]))
        return out / "report.md", out / "report.html"


@dataclass
class StudyData:
    """What a study's report is built from (:func:`load_study_dirs`)."""

    root: Path  # the folder (of merged shards: the one holding the lowest seed)
    record: dict
    name: str
    grad: pd.DataFrame | None
    grad_k_ref: float
    worlds: dict[str, SweepData]
    cmps: dict[str, pd.DataFrame]
    rules: dict[str, Any]
    claims: pd.DataFrame
    #: every folder it was read from: one, or the shards merged into this study
    roots: list[Path] = field(default_factory=list)
    grad_dir: Path | None = None  # the gradient analysis used (of shards: the first one's)

    @property
    def where(self) -> str:
        return " + ".join(map(str, self.roots or [self.root]))


def read_study_record(root: str | Path) -> dict:
    """A study folder's record (``snnlab_study.yaml``: name, command, budget, times, claims rules)."""
    rec_path = Path(root) / STUDY_FILE
    if not rec_path.is_file():
        raise ConfigError(f"{root}: no snnlab study here (missing {STUDY_FILE})")
    return yaml.safe_load(rec_path.read_text())


def study_groups(roots: list[str | Path]) -> list[list[Path]]:
    """Study folders as the studies they make up, in the order given: the shards of one study
    (folders whose record holds only some of the study's seeds, :func:`snnlab.study.is_shard`) and
    every other folder of the same study name form one group, to be merged; any other folder is a
    study of its own (two whole runs of one study, e.g. at two budgets, stay side by side)."""
    paths = [Path(r) for r in roots]
    records = [read_study_record(p) for p in paths]
    sharded = {rec.get("name") for rec in records if is_shard(rec)}
    groups: list[list[Path]] = []
    by_name: dict[str, list[Path]] = {}
    for p, rec in zip(paths, records):
        name = rec.get("name")
        if name in sharded:
            if name not in by_name:
                by_name[name] = []
                groups.append(by_name[name])
            by_name[name].append(p)
        else:
            groups.append([p])
    return groups


def check_shards(roots: list[Path], records: list[dict]) -> None:
    """Refuse (one line) to merge folders that are not shards of one study: a record from before
    shards existed, a difference in the study's definition (budget, resolved sweeps, claim rules,
    code), or a seed held by two of them."""
    for root, rec in zip(roots, records):
        if not isinstance(rec.get("definition"), dict) or "seeds" not in rec:
            raise ConfigError(f"{root}: its record has no study definition (written before shards "
                              f"existed), so it cannot be merged with {roots[0] if root != roots[0] else roots[1]}")
    for root, rec in zip(roots[1:], records[1:]):
        why = definition_difference(records[0]["definition"], rec["definition"])
        if why:
            raise ConfigError(f"shards differ in {why} ({roots[0]} vs {root})")
    held: dict[int, Path] = {}
    for root, rec in zip(roots, records):
        both = sorted(int(s) for s in rec["seeds"] if int(s) in held)
        if both:
            raise ConfigError(f"shards overlap in seed{'s' if len(both) > 1 else ''} "
                              f"{', '.join(map(str, both))}: {held[both[0]]} and {root}")
        held.update({int(s): root for s in rec["seeds"]})


def merged_record(roots: list[Path], records: list[dict]) -> dict:
    """One record for merged shards (each checked by :func:`check_shards`): the first shard's, with
    the seeds of all, ``shards`` (each one's folder, seeds, command, times, machine), the earliest
    start, the latest finish and the stage times summed over the shards."""
    rec = copy.deepcopy(records[0])
    shards = []
    for root, r in zip(roots, records):
        for s in r.get("shards") or [{"folder": str(root), **{k: r.get(k) for k in SHARD_FACTS}}]:
            shards.append(s)
    rec["shards"] = sorted(shards, key=lambda s: min(s.get("seeds") or [0]))
    rec["seeds"] = sorted(int(s) for r in records for s in r["seeds"])
    rec["started"] = min(str(r.get("started", "?")) for r in records)
    finished = [r.get("finished") for r in records]
    rec["finished"] = max(map(str, finished)) if all(finished) else None
    stage_s: dict[str, float] = {}
    for r in records:
        for k, v in (r.get("stage_s") or {}).items():
            stage_s[k] = round(stage_s.get(k, 0.0) + float(v), 1)
    rec["stage_s"] = stage_s
    rec["wall_time_s"] = round(sum(stage_s.values()), 1)
    rec["command"] = "; ".join(str(s.get("command")) for s in rec["shards"])
    rec["machine"] = "; ".join(dict.fromkeys(str(s.get("machine")) for s in rec["shards"]))
    return rec


#: what a merged record keeps of each shard
SHARD_FACTS = ("seeds", "command", "started", "finished", "wall_time_s", "stage_s", "machine", "versions")


def _gradient_difference(a: pd.DataFrame, b: pd.DataFrame) -> str | None:
    """Where two shards' gradient analyses (seeded, so equal up to the machine's float rounding)
    differ: magnitudes beyond a relative 1e-3, cosines beyond 1e-3; None when they agree."""
    if a.shape != b.shape or list(a.columns) != list(b.columns):
        return f"gradients/gradients_summary.csv: {len(a)} vs {len(b)} rows"
    for ra, rb in zip(a.to_dict("records"), b.to_dict("records")):
        where_a, where_b = f"k={ra['k']:g} layer {int(ra['layer'])}", f"k={rb['k']:g} layer {int(rb['layer'])}"
        if where_a != where_b:
            return f"gradients/gradients_summary.csv: rows {where_a} vs {where_b}"
        for col, close in (("magnitude", lambda x, y: math.isclose(x, y, rel_tol=1e-3)),
                           ("cosine", lambda x, y: abs(x - y) <= 1e-3)):
            if col in ra and not close(float(ra[col]), float(rb[col])):
                return f"gradients/gradients_summary.csv: {where_a} {col} {ra[col]:.4g} vs {rb[col]:.4g}"
    return None


def load_study_dir(root: str | Path) -> StudyData:
    """Read a study folder (:func:`load_study_dirs` of one)."""
    return load_study_dirs([root])


def load_study_dirs(roots: list[str | Path]) -> StudyData:
    """Read a study folder - its record, the gradient analysis, both sweeps (those with results),
    their paired comparisons against k_ref, and the claims judged from them - or several shards of
    one study as that study (:func:`check_shards`; each sweep read from all shards' folders of it,
    the gradient analysis from the shard with the lowest seed, checked against the others')."""
    roots = [Path(r) for r in roots]
    records = [read_study_record(r) for r in roots]
    if len(roots) > 1:
        check_shards(roots, records)
        order = sorted(range(len(roots)), key=lambda i: min(int(s) for s in records[i]["seeds"]))
        roots, records = [roots[i] for i in order], [records[i] for i in order]
        record = merged_record(roots, records)
    else:
        record = records[0]
    name = record["name"]
    grad, grad_k_ref, grad_dir = None, 100.0, None
    for root in roots:
        csv = root / GRADIENTS_DIR / "gradients_summary.csv"
        if not csv.is_file():
            continue
        mine = pd.read_csv(csv)
        if grad is None:
            grad, grad_dir = mine, root / GRADIENTS_DIR
            protocol = grad_dir / "protocol.yaml"  # the protocol as run (budget applied)
            if protocol.is_file():
                grad_k_ref = float(yaml.safe_load(protocol.read_text()).get("k_ref", 100.0))
        else:
            why = _gradient_difference(grad, mine)
            if why:
                raise ConfigError(f"shards differ in {why} ({grad_dir.parent} vs {root})")
    worlds: dict[str, SweepData] = {}
    for w in ("supervised", "rl"):
        parts = [d for d in (root / sweep_dir_name(name, w) for root in roots) if (d / SPEC_FILE).is_file()]
        if parts:
            try:
                worlds[w] = load_sweep_dir(parts)
            except ConfigError as e:  # no trial results yet: the report says so below
                if "no trial results yet" not in str(e):
                    raise
    cmps = {w: compare_to_reference(sd.parts) for w, sd in worlds.items()}
    rules = dict(record.get("claims", {}))
    rules["k_ref"] = grad_k_ref
    claims = judge_claims(grad, worlds, cmps, rules)
    return StudyData(roots[0], record, name, grad, grad_k_ref, worlds, cmps, rules, claims, roots, grad_dir)


def _facts(record: dict) -> str:
    """The study's command, budget, times, machine and versions, as one sentence (merged shards:
    the seeds and each shard's command, times and machine)."""
    v = record.get("versions", {})
    stages = record.get("stage_s", {})
    times = (f"wall time {record.get('wall_time_s', 0):.0f} s ("
             + ", ".join(f"{k} {s:.0f} s" for k, s in stages.items()) + ")")
    if record.get("shards"):
        shards = record["shards"]
        head = (f"Merged from {len(shards)} shards (seeds {seeds_label(record.get('seeds', []))}, budget: "
                f"{record.get('budget') or 'as written'}): " + "; ".join(
                    f"seeds {seeds_label(s.get('seeds') or [])}: `{s.get('command', '')}`, started "
                    f"{s.get('started', '?')}, finished {s.get('finished') or 'not yet'}, "
                    f"{float(s.get('wall_time_s') or 0):.0f} s on {s.get('machine', '?')}" for s in shards)
                + f". Together: {times}. ")
    else:
        head = (f"Command: `{record.get('command', '')}` (budget: {record.get('budget') or 'as written'}); "
                f"started {record.get('started', '?')}, finished {record.get('finished', 'not yet')}; "
                f"{times} on {record.get('machine', '?')}. ")
    return head + "Versions: " + ", ".join(f"{k} {x}" for k, x in v.items()) + "."


def _claims_note(rules: dict[str, Any]) -> str:
    return ("Verdicts follow fixed rules (snnlab.report.study.judge_claims; "
            f"alpha {rules.get('alpha', 0.05)}, supervised tolerance ±{rules.get('sl_tolerance', 0.02)}, "
            f"shallow = fixed k <= {rules.get('shallow_k', 2.0):g} plus every scheduled setting).")


def build_study_report(root: str | Path | list[str | Path], out: str | Path | None = None) -> dict[str, Path]:
    """The combined report of one study folder, written to ``out`` (default ``<study>/report``), or
    of several shards of one study merged (:func:`load_study_dirs`; ``out`` required: no shard's
    own report is overwritten)."""
    roots = [root] if isinstance(root, (str, Path)) else list(root)
    if out is None and len(roots) > 1:
        raise ConfigError("merged shards: give the report's folder (--out DIR)")
    study = load_study_dirs(roots)
    return render_study_report(study, Path(out) if out else study.root / REPORT_DIR)


def render_study_report(study: StudyData, out: Path) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record, name, grad = study.record, study.name, study.grad
    worlds, cmps, rules, claims = study.worlds, study.cmps, study.rules, study.claims
    files: dict[str, Path] = {}
    claims.to_csv(out / "claims.csv", index=False)
    files["claims"] = out / "claims.csv"
    if worlds:
        pd.concat([sd.table.assign(world=w) for w, sd in worlds.items()], ignore_index=True).to_csv(
            out / "summary.csv", index=False)
        files["summary"] = out / "summary.csv"
        cmp_all = [c.assign(world=w) for w, c in cmps.items() if not c.empty]
        if cmp_all:
            pd.concat(cmp_all, ignore_index=True).to_csv(out / "comparison.csv", index=False)
            files["comparison"] = out / "comparison.csv"
        sds = list(worlds.values())
        files["curves"] = plot_curves(sds, out / "curves.png")
        files["bars"] = plot_bars(sds, out / "bars.png")
        for w, sd in worlds.items():
            path = plot_seed_curves(sd, out / f"seeds_{w}.png")
            if path is not None:
                files[f"seeds_{w}"] = path
        for key, path in (("slopes", plot_slopes(sds, out / "slopes.png")),
                          ("sl_vs_rl", plot_relative(worlds, cmps, out / "sl_vs_rl.png",
                                                    float(rules.get("alpha", 0.05)))),
                          ("rates", plot_layers(worlds, lambda w: RATE_KEY[w], "", "spike rate",
                                                "spike rate per layer",
                                                out / "rates.png")),
                          ("cosine", plot_layers(worlds, lambda w: "grad/layer", "/cosine",
                                                 "cosine to the k_ref gradient",
                                                 "gradient cosine to k_ref per layer",
                                                 out / "cosine.png", ylim=(-0.05, 1.05),
                                                 xlabel="weight layer (0 = input, last = readout)"))):
            if path is not None:
                files[key] = path
    if grad is not None and study.grad_dir is not None and (study.grad_dir / "gradients.png").is_file():
        files["gradients"] = Path(shutil.copy(study.grad_dir / "gradients.png", out / "gradients.png"))

    page = _Page(f"snnlab study {name}")
    page.p(_facts(record))
    page.h2("The paper's claims and this run")
    page.table(*_df_cells(claims), note=_claims_note(rules))
    if grad is not None:
        page.h2("Gradient analysis")
        g = grad.pivot(index="k", columns="layer", values="magnitude")
        c = grad.pivot(index="k", columns="layer", values="cosine")
        head = ["k"] + [f"layer {i}" for i in g.columns]
        rows = [[f"{k:g}"] + [f"{g.loc[k, i]:.2e} / {c.loc[k, i]:.2f}" for i in g.columns] for k in g.index]
        page.table(head, rows, note="mean |gradient| / cosine to the k_ref gradient; layer 0 = input "
                   "weights, last = readout.")
        page.fig(files.get("gradients"), "Gradient magnitude (log) and cosine to the k_ref gradient per layer.")
    for w, sd in worlds.items():
        page.h2(f"{WORLD_TITLE[w]}: {sd.name}")
        head, rows = table_cells(sd.table, sd.spec)
        page.table(head, rows, note=table_note(sd.spec, sd.table))
        energy = energy_cells(sd.table)
        if energy is not None:
            page.p(f"{WORLD_TITLE[w]}: synaptic operations and energy per inference against an ANN "
                   "of the same shape.")
            page.table(*energy, note=energy_note())
        if not cmps[w].empty:
            intro, head, rows = comparison_cells(cmps[w])
            page.table(head, rows, note=intro)
        arms = population_arms(sd.parts or sd.path)
        if arms is not None:
            page.p(f"{WORLD_TITLE[w]} - compute: schedules, populations and the fixed grid. The paper's "
                   "claims above leave populations out (not the paper's settings; a best member is "
                   "picked after the run from N runs).")
            page.table(*equal_compute_cells(arms, sd.spec), note=equal_compute_note(sd.spec))
    missing = [w for w in ("supervised", "rl") if record.get("spec", {}).get(w) and w not in worlds]
    for w in missing:
        page.h2(WORLD_TITLE[w])
        page.p("No trial results yet.")
    page.fig(files.get("sl_vs_rl"), "Δ AUC against k_ref in % of its AUC, 95% bootstrap CI (green: "
             "significantly above, red: below - CI excludes 0 and p < alpha; grey: not significant) - "
             "supervised next to RL.")
    page.fig(files.get("curves"), "Learning curves per setting: mean over seeds, band = ±1 std.")
    page.fig(files.get("bars"), "Steps to threshold and best score per setting (mean ± std).")
    for w in worlds:
        page.fig(files.get(f"seeds_{w}"), f"{WORLD_TITLE[w]}: every seed's curve, one panel per setting "
                 "(the run-to-run spread behind the means).")
    page.fig(files.get("slopes"), "Slope k over training for scheduled settings (one line per seed).")
    if "rates" in files:
        page.h2("Why: spike rates and gradient directions")
        rates = layer_table(worlds, lambda w: RATE_KEY[w], "")
        page.table(*_df_cells(rates), note="Spike rate per layer, mean over training steps and trials "
                   "(supervised: validation batches; RL: the learner's minibatch).")
        page.fig(files["rates"], "Spike rate per layer and setting, mean over training and seeds.")
    if "cosine" in files:
        cos = layer_table(worlds, lambda w: "grad/layer", "/cosine")
        page.table(*_df_cells(cos), note="Cosine of each layer's weight gradient to the k_ref gradient "
                   "on the same batch, mean over probes and diagnostics trials.")
        page.fig(files["cosine"], "Gradient cosine to k_ref per layer during training, mean over "
                 "probes and the diagnostics trials.")
    files["markdown"], files["html"] = page.write(out)
    return files


# --- several studies side by side (``snnlab report STUDY_A STUDY_B ... --out DIR``) -----------
def study_labels(studies: list[StudyData]) -> list[str]:
    """Each study's name; the folder is added where two studies share a name."""
    names = [st.name for st in studies]
    return [st.name if names.count(st.name) == 1 else f"{st.name} ({st.where})" for st in studies]


def setting_order(studies: list[StudyData]) -> list[str]:
    """Every setting of every study's sweeps, in the order the study files list them."""
    order: list[str] = []
    for st in studies:
        for sd in st.worlds.values():
            for s in sd.spec["settings"]:
                if s["label"] not in order:
                    order.append(s["label"])
    return order


def studies_table(studies: list[StudyData], labels: list[str]) -> pd.DataFrame:
    """One row per (study, world, setting): AUC, the paired Δ AUC against the study's k_ref in % of
    k_ref's AUC (with its 95% CI and p; 0 for k_ref itself) and steps to threshold."""
    rows = []
    for st, label in zip(studies, labels):
        for w, sd in st.worlds.items():
            cmp = st.cmps[w]
            ref = cmp["reference"].iloc[0] if not cmp.empty else None
            scale = 100.0 / abs(_ref_auc(sd, ref)) if ref is not None else math.nan
            by_setting = {r["setting"]: r for _, r in cmp.iterrows()}
            for _, r in sd.table.iterrows():
                row = {"study": label, "world": w, "sweep": sd.name, "setting": r["setting"],
                       "reference": ref, "seeds": int(r["seeds_finished"]), "auc_mean": r["auc_mean"],
                       "rel_auc_pct": math.nan, "rel_auc_ci_low_pct": math.nan,
                       "rel_auc_ci_high_pct": math.nan, "rel_auc_p": math.nan,
                       "threshold": sd.spec.get("threshold"),
                       "steps_to_threshold_mean": r.get("steps_to_threshold_mean", math.nan),
                       "steps_to_threshold_std": r.get("steps_to_threshold_std", math.nan),
                       "reached": r.get("reached", "")}
                if r["setting"] == ref:
                    row.update(rel_auc_pct=0.0, rel_auc_ci_low_pct=0.0, rel_auc_ci_high_pct=0.0)
                elif r["setting"] in by_setting:
                    c = by_setting[r["setting"]]
                    row.update(rel_auc_pct=c["auc_mean_diff"] * scale, rel_auc_ci_low_pct=c["auc_ci_low"] * scale,
                               rel_auc_ci_high_pct=c["auc_ci_high"] * scale, rel_auc_p=c["auc_p_value"])
                rows.append(row)
    return pd.DataFrame(rows)


def side_by_side_cells(table: pd.DataFrame, order: list[str]) -> tuple[list[str], list[list[str]]]:
    """The combined table: one row per (study, world), one column per setting with
    "Δ AUC % vs k_ref; steps to threshold (reached)"."""
    head = ["study", "world", "k_ref", "threshold"] + order
    rows = []
    if table.empty:
        return head, rows
    for (study, world), g in table.groupby(["study", "world"], sort=False):
        by = {r["setting"]: r for _, r in g.iterrows()}
        first = g.iloc[0]
        thr = first["threshold"]
        cells = [study, world, str(first["reference"] or "-"),
                 "-" if thr is None or (isinstance(thr, float) and math.isnan(thr)) else f"{thr:g}"]
        for s in order:
            if s not in by:
                cells.append("")
                continue
            r = by[s]
            rel = "k_ref" if s == first["reference"] else (
                "-" if math.isnan(r["rel_auc_pct"]) else f"{r['rel_auc_pct']:+.1f}%")
            stt = r["steps_to_threshold_mean"]
            steps = "-" if stt is None or (isinstance(stt, float) and math.isnan(stt)) else f"{stt:.3g}"
            cells.append(f"{rel}; {steps}" + (f" ({r['reached']})" if r["reached"] else ""))
        rows.append(cells)
    return head, rows


def plot_studies_relative(studies: list[StudyData], labels: list[str], order: list[str], path: Path,
                          alpha: float = 0.05) -> Path | None:
    """One panel per (study, world): Δ AUC against the study's k_ref in % of its AUC, every
    panel with the same settings in the same order (rows: studies, columns: worlds)."""
    grid = [[(w, st) for w in ("supervised", "rl") if w in st.worlds and not st.cmps[w].empty]
            for st in studies]
    if not any(grid):
        return None
    plt = _plt()
    ncols = max(len(r) for r in grid)
    fig, axes = plt.subplots(len(studies), ncols, figsize=(6 * ncols, 0.32 * len(order) * len(studies) + 1.6 * len(studies)),
                             squeeze=False)
    for i, (panels, label) in enumerate(zip(grid, labels)):
        for j in range(ncols):
            ax = axes[i][j]
            if j >= len(panels):
                ax.set_axis_off()
                continue
            w, st = panels[j]
            ref = st.cmps[w]["reference"].iloc[0]
            _relative_panel(ax, st.worlds[w], st.cmps[w], alpha, f"{label}: {WORLD_SHORT.get(w, w)}",
                            order=order)
            ax.title.set_fontsize(10)
            ax.set_xlabel(f"Δ AUC vs {ref}, % of its AUC (95% CI)")
    return _save(plt, fig, path)


def build_studies_report(roots: list[str | Path | list[str | Path]], out: str | Path) -> dict[str, Path]:
    """Several studies side by side in ``out``: report.html (self-contained) / report.md with each
    study's claims, one combined table (one row per study and world: Δ AUC against k_ref in % and
    steps to threshold per setting), one figure with a panel per study and world
    (relative_auc.png), each study's energy tables; claims.csv, studies.csv, summary.csv. An item
    of ``roots`` may be a list: the shards of one study, merged (:func:`study_groups`)."""
    studies = [load_study_dirs([r] if isinstance(r, (str, Path)) else r) for r in roots]
    labels = study_labels(studies)
    order = setting_order(studies)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    pd.concat([st.claims.assign(study=label) for st, label in zip(studies, labels)], ignore_index=True)[
        ["study", "claim", "paper", "this run", "verdict"]].to_csv(out / "claims.csv", index=False)
    files["claims"] = out / "claims.csv"
    table = studies_table(studies, labels)
    table.to_csv(out / "studies.csv", index=False)
    files["studies"] = out / "studies.csv"
    tables = [sd.table.assign(study=label, world=w) for st, label in zip(studies, labels)
              for w, sd in st.worlds.items()]
    if tables:
        pd.concat(tables, ignore_index=True).to_csv(out / "summary.csv", index=False)
        files["summary"] = out / "summary.csv"
    alpha = float(studies[0].rules.get("alpha", 0.05))
    fig = plot_studies_relative(studies, labels, order, out / "relative_auc.png", alpha)
    if fig is not None:
        files["relative_auc"] = fig

    page = _Page("snnlab studies: " + " vs ".join(labels))
    page.p("Each study's own report (every table and figure): `snnlab report STUDY_FOLDER`. "
           "Below, the studies side by side.")
    for st, label in zip(studies, labels):
        page.p(f"{label} (`{st.where}`): " + _facts(st.record))
    page.h2("The paper's claims: verdicts side by side")
    claims = list(dict.fromkeys(c for st in studies for c in st.claims["claim"]))
    verdicts = [dict(zip(st.claims["claim"], st.claims["verdict"])) for st in studies]
    page.table(["claim"] + labels, [[c] + [v.get(c, "not judged") for v in verdicts] for c in claims],
               note="The verdict of each claim in each study; the numbers behind each are in the "
               "study's claims table below.")
    page.h2("Learning speed against k_ref, per study and world")
    page.table(*side_by_side_cells(table, order),
               note="Per setting: the mean paired difference in AUC (mean score over training) against "
               "the study's k_ref (the steepest fixed slope of that sweep), in % of k_ref's AUC; then the "
               "mean steps to threshold over the seeds that reached it (reached / finished seeds; "
               "steps = epochs for supervised sweeps, iterations for RL). Empty: the sweep has no such "
               "setting. Every number with its CI and p: studies.csv.")
    page.fig(files.get("relative_auc"), "Δ AUC against each study's k_ref in % of its AUC, 95% bootstrap "
             "CI (green: significantly above, red: below - CI excludes 0 and p < alpha; grey: not "
             "significant); one panel per study and world, settings in the same order.")
    for st, label in zip(studies, labels):
        page.h2(f"{label}: the paper's claims and this run")
        page.table(*_df_cells(st.claims), note=_claims_note(st.rules))
        if not st.worlds:
            page.p("No trial results yet.")
        energies = [(w, sd, energy_cells(sd.table)) for w, sd in st.worlds.items()]
        energies = [(w, sd, e) for w, sd, e in energies if e is not None]
        for i, (w, sd, energy) in enumerate(energies):
            page.p(f"{label}, {WORLD_TITLE[w].lower()} ({sd.name}): synaptic operations and energy per "
                   "inference against an ANN of the same shape.")
            page.table(*energy, note=energy_note() if i == len(energies) - 1 else "")
    files["markdown"], files["html"] = page.write(out)
    return files

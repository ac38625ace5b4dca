"""The ``snnlab`` command line."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Sequence

from . import __version__


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train one experiment from a YAML config",
        description="Train one experiment from a YAML config (kind: supervised -> a spiking "
        "classifier with a Lightning Trainer, prints the final validation accuracy; kind: rl -> "
        "an RLlib algorithm with a spiking policy, prints the final return). Writes checkpoints, "
        "CSV, TensorBoard and W&B (offline by default) logs to <out>/<name>/version_<n>/.",
    )
    p.add_argument("config", help="experiment YAML file, e.g. configs/sl_digits.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key by its dotted path (value parsed as YAML), "
                   "e.g. --set model.hidden=[64,64] --set slope.k=10; repeatable")
    p.add_argument("--seed", type=int, help="random seed (overrides the config's seed)")
    p.add_argument("--max-epochs", type=int, help="number of epochs (supervised: trainer.max_epochs) "
                   "or iterations (RL: stop.iterations)")
    p.add_argument("--out", metavar="DIR", help="root folder for run directories "
                   "(overrides logging.out_dir; default runs/train)")
    p.add_argument("--wandb", choices=["offline", "online", "off"],
                   help="W&B mode: offline run files (default), online (needs `wandb login`), or off")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    from .experiment import load_experiment

    overrides = list(args.overrides)
    for flag, key in (("seed", "seed"), ("max_epochs", "trainer.max_epochs"),
                      ("out", "logging.out_dir"), ("wandb", "logging.wandb")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    if args.no_progress:
        overrides.append("trainer.progress_bar=false")
    if cfg_kind(args.config) == "rl":
        overrides = [o.replace("trainer.max_epochs=", "stop.iterations=") for o in overrides
                     if not o.startswith("trainer.progress_bar")]
    cfg = load_experiment(args.config, overrides)
    from .wandb_utils import check_wandb_mode

    check_wandb_mode(cfg.logging.wandb)
    if cfg.kind == "rl":
        from .rl.train import train_rl

        res = train_rl(cfg)
        target = cfg.stop.target_return
        reached = "" if target is None else (
            f"; target {target:g} {'reached' if res.reached_target else 'not reached'}")
        print(f"final score: {res.final_score:.2f}  (best {res.best_score:.2f}, {res.iterations} "
              f"iterations, {res.env_steps} env steps, {res.wall_time_s:.1f} s{reached})")
        print(f"run directory: {res.run_dir}")
        return 0
    from .supervised import train_supervised

    res = train_supervised(cfg)
    if res.final_metrics is not None:  # behaviour cloning
        m = res.final_metrics
        print(f"final eval_return: {m['eval_return']:.2f}  (full episodes {m['eval_full_fraction']:.2f}, "
              f"best {res.score_name} {res.best_score:.2f}, val_loss {m['val_loss']:.2e}, "
              f"{res.epochs} epochs, {res.wall_time_s:.1f} s)")
    else:
        print(f"final val_acc: {res.final_val_acc:.4f}  (best {res.best_val_acc:.4f}, "
              f"{res.epochs} epochs, {res.wall_time_s:.1f} s)")
    print(f"run directory: {res.run_dir}")
    return 0


def _shown(path) -> str:
    """``path`` relative to the working directory when it lies below it (what a user typed:
    runs/rl_fixed_grid), else as it is."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def cfg_kind(path: str) -> str:
    from .config import read_yaml

    return str(read_yaml(path).get("kind", "supervised"))


def _add_sweep(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a Ray Tune sweep of slope settings x seeds (the main job)",
        description="Run a sweep file (kind: sweep) with Ray Tune: every slope setting x seed "
        "(x params) as a trial, a live table while it runs, then a comparison table per setting "
        "(best / final / AUC of the score, steps to threshold), saved as summary.csv and "
        "summary.md in the sweep's result directory <storage>/<name>/.",
    )
    p.add_argument("file", nargs="?", help="sweep YAML file, e.g. configs/rl_fixed_grid.yaml")
    p.add_argument("--budget", metavar="NAME", help="scale: smoke (minutes-long run of the same grid), "
                   "full (as written; the default), or a budget the file defines under `budgets:`")
    _add_run_options(
        p, storage="where results go: a folder (default: ./runs) or a URI Tune understands "
        "(shared filesystem, s3://..., gs://...)",
        resume="continue an interrupted sweep in <storage>/<name>/ (unfinished and errored trials "
        "resume from their last checkpoint)")
    p.add_argument("--summary", metavar="DIR", help="only print and save the summary table of an "
                   "existing sweep result directory")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the base experiment by dotted path; repeatable")
    p.set_defaults(func=_cmd_sweep)


def _add_run_options(p, storage: str, resume: str) -> None:
    """The options `sweep` and `study` share: where results go, which Ray, W&B, resume, output."""
    p.add_argument("--storage", metavar="PATH", default="runs", help=storage)
    p.add_argument("--address", metavar="ADDR", help="join an existing Ray cluster: auto, "
                   "ray://HOST:PORT or HOST:PORT (default: start a local Ray)")
    p.add_argument("--wandb", choices=["offline", "online", "off"], default="offline",
                   help="W&B: offline run files in each trial's folder (default), online (needs "
                   "`wandb login`), or off")
    p.add_argument("--resume", action="store_true", help=resume)
    p.add_argument("--restart-unfinished", action="store_true",
                   help="with --resume: trials that were running or pending start again from scratch "
                   "(their folders cleared) instead of resuming from their last checkpoint - for "
                   "trials whose checkpoints miss state, e.g. TD3's replay buffer; finished trials "
                   "are kept, errored ones resume")
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2, 3],
                   help="Tune's verbosity (1: live table; 0: silent)")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")


def _cmd_sweep(args) -> int:
    from .config import ConfigError

    if args.summary:
        from .sweep.summary import write_summary

        if not Path(args.summary).is_dir():
            raise ConfigError(f"--summary {args.summary}: no such directory")
        _, md = write_summary(args.summary)
        print(md)
        print(f"saved {Path(args.summary) / 'summary.csv'} and summary.md")
        return 0
    if not args.file:
        raise ConfigError("sweep: give a sweep FILE (or --summary DIR)")
    from .sweep.spec import load_sweep
    from .wandb_utils import check_wandb_mode

    sweep = load_sweep(args.file, budget=args.budget, overrides=args.overrides)
    check_wandb_mode(args.wandb)
    from .sweep.run import run_sweep

    out = run_sweep(sweep, storage=args.storage, address=args.address, wandb_mode=args.wandb,
                    resume=args.resume, verbose=args.verbose, restart_unfinished=args.restart_unfinished)
    print(out.summary_md)
    for err in out.errors:
        print(f"FAILED trial {err}")
    where = _shown(out.exp_dir)
    print(f"{out.trials} trials ({len(out.errors)} failed) in {out.wall_time_s:.0f} s; results: {where}")
    if args.wandb == "offline":
        print(f"upload W&B runs later with: wandb sync {where}/*/wandb/offline-run-*")
    return 1 if out.errors else 0


def _add_study(sub) -> None:
    p = sub.add_parser(
        "study",
        help="run a study: gradient analysis, supervised sweep, RL sweep, combined report",
        description="Run a study file (kind: study, e.g. sweeps/paper_part1.yaml): the gradient "
        "analysis, then the supervised sweep, then the RL sweep (each a Ray Tune sweep), then one "
        "combined report (report.html, report.md, figures, claims.csv) in <storage>/<name>/report/.",
    )
    p.add_argument("file", help="study YAML file, e.g. sweeps/paper_part1.yaml")
    p.add_argument("--budget", metavar="NAME", help="scale defined in the file's `budgets:` (for "
                   "paper_part1.yaml: smoke, laptop, paper); default: the sections as written")
    _add_run_options(p, storage="results folder (default ./runs; on a cluster a shared filesystem path)",
                     resume="continue an interrupted study in <storage>/<name>/ (finished stages are kept)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of both sweeps' base experiments by dotted path, e.g. "
                   "--set model.backend=fused; repeatable")
    p.add_argument("--seeds", metavar="LIST", help="run a shard: only these of the budget's seeds, "
                   "in every sweep section (e.g. 0,1,2 or 3-5), into <storage>/<name>_seeds<LIST>/; "
                   "`snnlab report SHARD SHARD ...` merges shards into the one study")
    p.set_defaults(func=_cmd_study)


def _cmd_study(args) -> int:
    from .report.study import build_study_report
    from .study import load_study, parse_seeds, run_study
    from .wandb_utils import check_wandb_mode

    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    study = load_study(args.file, budget=args.budget, overrides=args.overrides, seeds=seeds)
    check_wandb_mode(args.wandb)
    out = run_study(study, storage=args.storage, address=args.address, wandb_mode=args.wandb,
                    resume=args.resume, verbose=args.verbose, restart_unfinished=args.restart_unfinished,
                    log=lambda msg: print(f"snnlab study: {msg}", flush=True),
                    command=" ".join(["snnlab", *map(shlex.quote, args.argv)]), report=build_study_report)
    claims = Path(out.report["claims"])
    import pandas as pd

    for _, r in pd.read_csv(claims).iterrows():
        print(f"  [{r['verdict']}] {r['claim']}")
    for err in out.errors:
        print(f"FAILED trial {err}")
    print(f"study done in {out.wall_time_s:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in out.stage_s.items())}); "
          f"report: {out.report['html']}")
    return 1 if out.errors else 0


def _add_analyze(sub) -> None:
    p = sub.add_parser("analyze", help="analyses (gradient diagnostics)",
                       description="Analyses that need no training run.")
    asub = p.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    g = asub.add_parser(
        "gradients",
        help="per-layer gradient magnitude and cosine to the k_ref gradient, per slope k",
        description="Run the paper's gradient analysis (by default: input -> 4 LIF layers of 64 -> "
        "linear readout, k in {1, 10, 25, 50, 100}, 256 standard-normal samples one at a time, "
        "random regression targets, 5 random networks) and write gradients.csv (every number), "
        "gradients_summary.csv (means per k and layer) and a two-panel figure "
        "(gradients.png / .svg).",
    )
    g.add_argument("--config", metavar="FILE", help="YAML file overriding the protocol's fields "
                   "(n_in, n_out, hidden, num_steps, slopes, k_ref, samples, networks, seed, "
                   "neuron_init, weight_init, surrogate)")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one protocol field, e.g. --set samples=64; repeatable")
    g.add_argument("--out", metavar="DIR", default="runs/analyze/gradients",
                   help="output folder (default: runs/analyze/gradients)")
    g.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    g.set_defaults(func=_cmd_analyze_gradients)


def _cmd_analyze_gradients(args) -> int:
    import time

    from .config import load_gradient_analysis
    from .diagnostics import run_analysis

    cfg = load_gradient_analysis(args.config, args.overrides)
    out = Path(args.out)
    t0 = time.perf_counter()
    agg = run_analysis(cfg.model_dump(), out, progress=lambda n: print(
        f"network {n + 1}/{cfg.networks} done ({time.perf_counter() - t0:.1f} s)", flush=True))
    layers = sorted({r["layer"] for r in agg})
    print("mean |gradient| / cosine to k_ref, per layer (0 = input, "
          f"{layers[-1]} = readout):")
    for k in cfg.slopes:
        cells = [f"{r['magnitude']:.2e}/{r['cosine']:.2f}" for r in agg if r["k"] == k]
        print(f"  k={k:<6g} " + "  ".join(cells))
    print(f"wrote {out / 'gradients.csv'}, gradients_summary.csv, gradients.png, gradients.svg "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


REPORT_OUT = "runs/report"


def _add_report(sub) -> None:
    p = sub.add_parser(
        "report",
        help="turn sweep (or study) result folders into a comparison report (HTML, Markdown, PNG)",
        description="Read one or more sweep result folders (local files only) and write learning "
        "curves per setting (mean and band over seeds), the slope over training for scheduled "
        "settings, steps-to-threshold and best-score bars, and the summary table, as a "
        "self-contained report.html (plus report.md, the PNGs and summary.csv). Given a study "
        "folder (from `snnlab study`), rebuild its combined report in <study>/report/; given "
        "the shards of one study (`snnlab study --seeds`), merge them into that study's report "
        "in --out; given several studies, put them side by side (claims, Δ AUC vs k_ref and steps "
        "to threshold per study and world, energy) in --out. Exports (`snnlab export`) are read "
        "like the folders they came from.",
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="sweep result folder(s), e.g. runs/rl_fixed_grid, "
                   "or study folder(s), e.g. runs/paper_part1 runs/paper_part1_drone, or shards of a "
                   "study, e.g. runs/paper_part1_seeds0-2 runs/paper_part1_seeds3-5 (not sweeps and "
                   "studies together)")
    p.add_argument("--out", metavar="DIR", default=REPORT_OUT,
                   help="output folder (default runs/report; for one study folder: <study>/report)")
    p.add_argument("--wandb", action="store_true", help="also publish a W&B Report of the same "
                   "comparison (needs `wandb login` and a network; offline it says so and skips it)")
    p.add_argument("--wandb-project", default="snnlab", help="W&B project of the sweeps' runs")
    p.add_argument("--wandb-entity", default=None, help="W&B entity (default: your default entity)")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args) -> int:
    from .report.build import build_report, load_sweep_dir

    groups, sweep_dirs = _study_or_sweeps(args.dirs, "report")
    sections = None  # W&B: one section per study (several studies), else one per sweep
    if groups:
        from .report.study import build_study_report, build_studies_report

        if len(groups) == 1:  # one study folder (its own report folder by default), or merged shards
            out = None if args.out == REPORT_OUT and len(groups[0]) == 1 else args.out
            files = build_study_report(groups[0], out)
        else:
            files = build_studies_report(groups, args.out)
        sweep_dirs = [parts for g in groups for parts in _group_sweeps(g)]
        if len(groups) > 1:
            sections = [(_study_name(g[0]), _group_sweeps(g)) for g in groups]
    else:
        files = build_report(args.dirs, args.out)
    width = max(map(len, files), default=0)
    for name, path in files.items():
        print(f"{name:{width}s} {path}")
    if args.wandb:
        from .report.wandb_report import build_wandb_report, wandb_unavailable_reason

        why = wandb_unavailable_reason()
        if why:
            print(f"W&B report skipped: {why}; the local report above is complete")
        else:
            if sections is None:
                report = build_wandb_report([load_sweep_dir(d) for d in sweep_dirs], args.wandb_project,
                                            args.wandb_entity)
            else:
                report = build_wandb_report(
                    [], args.wandb_project, args.wandb_entity, title="snnlab studies side by side",
                    studies=[(name, [load_sweep_dir(d) for d in dirs]) for name, dirs in sections])
            report.save()
            print(f"W&B report: {report.url}")
    return 0


def _study_or_sweeps(dirs: list[str], command: str) -> tuple[list[list[str]], list[str]]:
    """Folders given to ``report`` / ``export``: study folders as the studies they make up (shards of
    one study grouped to be merged, :func:`snnlab.report.study.study_groups`) and no sweep folders,
    or sweep folders only. An unknown folder, or both kinds, is a one-line error."""
    from .config import ConfigError
    from .study_files import STUDY_FILE

    for d in dirs:
        if not Path(d).is_dir():
            raise ConfigError(f"{command}: {d}: no such directory")
    studies = [d for d in dirs if (Path(d) / STUDY_FILE).is_file()]
    if not studies:
        return [], list(dirs)
    others = [d for d in dirs if d not in studies]
    if others:
        raise ConfigError(f"{command}: {studies[0]} is a study folder and {others[0]} is not; give "
                          f"study folders only (one: its combined report; several: side by side, "
                          f"shards of one study merged) or sweep folders only")
    from .report.study import study_groups

    return [[str(p) for p in g] for g in study_groups(studies)], []


def _group_sweeps(group: list[str]) -> list[list[str]]:
    """The sweep sections of a study (or of its shards): per section, its folder in every shard."""
    names: dict[str, list[str]] = {}
    for root in group:
        for spec in sorted(Path(root).glob("*/snnlab_sweep.yaml")):
            names.setdefault(spec.parent.name, []).append(str(spec.parent))
    return [names[n] for n in sorted(names)]


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export",
        help="copy a study or sweep result folder compactly (for the repository): configs, the "
        "reported rows the tables read, final results; no checkpoints, W&B or TensorBoard files",
        description="Export a study folder (or the shards of one study, merged into one) or a sweep "
        "folder to --out: per trial the trial config (params.json), the validated experiment "
        "(config.yaml), every reported row restricted to the keys the summary, report and energy "
        "table read (result.json), the last result (final_result.json); the study's record and "
        "gradient analysis; the sweeps' tables; and the report rebuilt from the export. `snnlab "
        "report OUT` rebuilds the report from it alone (docs/sweeps.md, \"Exported results\").",
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="a study folder, the shards of one study "
                   "(merged), or one sweep folder")
    p.add_argument("--out", metavar="DIR", required=True, help="the export's folder, e.g. "
                   "results/paper_part1_laptop (must not exist)")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    from .config import ConfigError
    from .report.export import export_study, export_sweep

    groups, sweeps = _study_or_sweeps(args.dirs, "export")
    if groups:
        if len(groups) > 1:
            raise ConfigError(f"export: {groups[0][0]} and {groups[1][0]} are different studies; export "
                              f"one study (or the shards of one study) per folder")
        res = export_study(groups[0], args.out)
    else:
        if len(sweeps) > 1:
            raise ConfigError(f"export: give one sweep folder (got {len(sweeps)}); export each to its own folder")
        res = export_sweep(sweeps[0], args.out)
    report = res.out / "report"
    data = res.bytes - sum(p.stat().st_size for p in report.rglob("*") if p.is_file())
    print(f"exported {res.kind} ({res.trials} trials) to {_shown(res.out)}: {res.bytes / 1e6:.2f} MB "
          f"({data / 1e6:.2f} MB data, the rest its report in {_shown(report)})")
    print(f"rebuild its report with: snnlab report {_shown(res.out)}")
    return 0


def _study_name(root) -> str:
    from .report.study import read_study_record

    return str(read_study_record(root).get("name", Path(root).name))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snnlab",
        description="Study surrogate-gradient slopes in spiking neural networks: train one "
        "experiment (Lightning / RLlib) or run a Ray Tune study of slope settings.",
    )
    parser.add_argument("--version", action="version", version=f"snnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_train(sub)
    _add_sweep(sub)
    _add_study(sub)
    _add_analyze(sub)
    _add_report(sub)
    _add_export(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command line as given (a study records it)
    from .config import ConfigError

    user_errors: tuple[type[BaseException], ...] = (ConfigError,)
    try:
        from .quadrotor.bc_data import DatasetError
        from .supervised.data import DataError

        user_errors += (DataError, DatasetError)
    except ImportError:  # pragma: no cover - lightning missing
        pass
    try:
        return args.func(args)
    except user_errors as e:
        if getattr(args, "debug", False):
            raise
        print(f"snnlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("snnlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

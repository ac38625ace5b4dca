"""Studies: the study file, the claim rules, and sweeps/paper_part1.yaml end to end at --budget smoke."""

import json
import re

import pandas as pd
import pytest
import yaml

from snnlab.cli import main
from snnlab.config import ConfigError
from snnlab.report.study import build_study_report, judge_claims
from snnlab.study import load_study, run_study

from .helpers import CONFIGS, REPO, write_yaml

STUDY = REPO / "sweeps" / "paper_part1.yaml"


def _study_text(**sections) -> str:
    base = {"kind": "study", "name": "s",
            "supervised": {"base": str(CONFIGS / "sl_digits.yaml"), "settings": [{"k": 2}, {"k": 100}],
                           "seeds": [0, 1]}}
    base.update(sections)
    return yaml.safe_dump(base)


# --- the study file ---------------------------------------------------------------------------
def test_paper_part1_budgets_scale_the_same_grid():
    sizes = {}
    for budget in ("smoke", "laptop", "paper"):
        st = load_study(STUDY, budget)
        assert set(st.sweeps) == {"supervised", "rl"} and st.gradients is not None
        sizes[budget] = {w: len(s.trials()) for w, s in st.sweeps.items()}
        for s in st.sweeps.values():  # the paper's grid in every budget
            labels = [x["label"] for x in s.spec.settings]
            assert labels == [f"fixed-k{k}" for k in (1, 2, 10, 25, 50, 100)] + ["interval", "adaptive"]
            assert set(s.spec.diagnostics.seeds) < set(s.spec.seeds)  # diagnostics on a subset
            assert min(s.spec.seeds) == 0 and 100 not in s.spec.seeds  # never the tuning seeds
    assert sizes["smoke"] == {"supervised": 16, "rl": 16}
    assert sizes["laptop"] == {"supervised": 48, "rl": 48}  # >= 5 seeds
    assert sizes["paper"]["rl"] == 80
    laptop = load_study(STUDY, "laptop")
    assert laptop.sweeps["rl"].base["stop"]["iterations"] == 16
    assert load_study(STUDY, "smoke").sweeps["rl"].base["stop"]["iterations"] == 2
    # `set` merges: the smoke budget keeps the study's stop.target_return override
    assert load_study(STUDY, "smoke").sweeps["rl"].base["stop"]["target_return"] is None


def test_shipped_pbt_study_and_the_decisive_drone_budget():
    """sweeps/pbt_vs_schedules.yaml: every arm scored by evaluation (RL), equal seeds; the drone
    study's decisive budget: 6 seeds, 400k env steps, all 8 BC settings at 30 epochs."""
    pbt = load_study(REPO / "sweeps" / "pbt_vs_schedules.yaml")
    for w, sw in pbt.sweeps.items():
        assert sw.spec.seeds == [0, 1, 2, 3, 4, 5]
        assert [s["label"] for s in sw.spec.settings][-1] == "pbt"
        assert len(sw.trials()) == 6 * (8 + 6)  # 8 settings + a population of 6 per seed
    assert pbt.sweeps["rl"].base["evaluation"]["interval"] == 1
    smoke = load_study(REPO / "sweeps" / "pbt_vs_schedules.yaml", "smoke")
    assert {w: len(s.trials()) for w, s in smoke.sweeps.items()} == {"supervised": 14, "rl": 14}
    dec = load_study(REPO / "sweeps" / "paper_part1_drone.yaml", "decisive", seeds=[0])
    assert dec.seeds == [0] and dec.sweeps["rl"].base["stop"]["iterations"] == 20
    assert dec.sweeps["supervised"].base["trainer"]["max_epochs"] == 30
    assert [len(s.spec.settings) for s in dec.sweeps.values()] == [8, 5]
    assert all(s.spec.seeds == [0, 1, 2, 3, 4, 5] for s in dec.sweeps.values())


def test_restart_unfinished_in_a_study_needs_resume_and_no_populations(tmp_path):
    shard = load_study(REPO / "sweeps" / "paper_part1_drone.yaml", "decisive", seeds=[0])
    with pytest.raises(ConfigError, match="--restart-unfinished: only with --resume"):
        run_study(shard, storage=str(tmp_path), wandb_mode="off", restart_unfinished=True, log=lambda m: None)
    pbt = load_study(REPO / "sweeps" / "pbt_vs_schedules.yaml", "smoke")
    (tmp_path / pbt.folder).mkdir()
    (tmp_path / pbt.folder / "snnlab_study.yaml").write_text("{}\n")
    with pytest.raises(ConfigError, match="has population settings"):
        run_study(pbt, storage=str(tmp_path), wandb_mode="off", resume=True, restart_unfinished=True,
                  log=lambda m: None)
    assert not (tmp_path / shard.folder).exists()  # refused before anything is written


@pytest.mark.parametrize("sections, budget, message", [
    ({}, "huge", "--budget 'huge' is not defined; allowed: none"),
    ({"budgets": {"smoke": {"rl": {"seeds": [0]}}}}, None, "budgets.smoke.rl: the study has no `rl` section"),
    ({"budgets": {"smoke": {"gpu": {}}}}, None, "budgets.smoke.gpu: unknown section"),
    ({"rl": {"base": str(CONFIGS / "sl_digits.yaml"), "settings": [{"k": 2}]}}, None,
     "rl.base: is a 'supervised' experiment"),
    ({"rl": {"name": "x", "base": str(CONFIGS / "rl_cartpole.yaml"), "settings": [{"k": 2}]}}, None,
     "rl.name: not allowed in a study section"),
    ({"rl": {"base": str(CONFIGS / "rl_cartpole.yaml"), "settings": [{"k": 2}], "seeds": [0, 0]}}, None,
     "rl.seeds: repeated seed"),
    ({"rl": {"base": str(CONFIGS / "rl_cartpole.yaml"), "settings": [{"k": 2}], "seeds": [0, 1],
             "diagnostics": {"seeds": [7], "every": 2}}}, None, "rl.diagnostics.seeds: [7] not among"),
    ({"gradients": {"samples": 0}}, None, "gradients: samples"),
])
def test_bad_study_files_fail_in_one_line(tmp_path, sections, budget, message):
    path = write_yaml(tmp_path / "s.yaml", _study_text(**sections))
    with pytest.raises(ConfigError) as e:
        load_study(path, budget)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("text", ["", "# kind: study\n# name: later\n"])
def test_empty_study_file_exits_2_with_one_line(tmp_path, capsys, text):
    path = write_yaml(tmp_path / "s.yaml", text)
    assert main(["study", str(path), "--storage", str(tmp_path / "r")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"{path}: the file is empty (nothing but comments or blank lines)" in lines[0]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("sections, message", [
    ({"claims": {"alpha": float("nan")}}, "claims.alpha: Input should be a finite number (got nan; allowed: a "
                                          "finite number with 0 < alpha < 1)"),
    ({"claims": {"cosine_floor": 1.5}}, "claims.cosine_floor: Input should be less than or equal to 1"),
    ({"gradients": {"slopes": [1, float("inf")], "k_ref": 1}},
     "gradients: slopes.1: Input should be a finite number (got inf; allowed: a finite number > 0)"),
    ({"gradients": {"seed": -1}}, "gradients: seed: Input should be greater than or equal to 0 (got -1; allowed: "
                                  "an integer with 0 <= seed <= 2147483647)"),
    ({"gradients": {"networks": -2}}, "gradients: networks: Input should be greater than 0 (got -2; allowed: an "
                                      "integer > 0)"),
    ({"supervised": {"base": str(CONFIGS / "sl_digits.yaml"), "settings": [{"k": 2}], "threshold": float("nan")}},
     "supervised.threshold: Input should be a finite number (got nan"),
    ({"supervised": {"base": str(CONFIGS / "sl_digits.yaml"), "settings": [{"k": 2}], "seeds": [0, 2 ** 32]}},
     "supervised.seeds.1: Input should be less than or equal to 2147483647"),
    ({"supervised": {"base": str(CONFIGS / "sl_digits.yaml"), "settings": [{"k": float("inf")}]}},
     "settings[0].k: Input should be a finite number"),
    ({"rl": {"base": str(CONFIGS / "rl_cartpole.yaml"), "settings": [{"k": 2}],
             "set": {"algorithm.lr": float("nan")}}}, "algorithm.lr: Input should be a finite number (got nan"),
])
def test_bad_study_numbers_fail_in_one_line_naming_key_and_range(tmp_path, capsys, sections, message):
    path = write_yaml(tmp_path / "s.yaml", _study_text(**sections))
    with pytest.raises(ConfigError) as e:
        load_study(path)
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert main(["study", str(path), "--storage", str(tmp_path / "r")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()  # nothing started, nothing written


@pytest.mark.parametrize("edit, message", [
    (lambda b: b["paper"]["rl"]["set"].update({"algorithm.lr": float("nan")}),
     "budgets.paper: rl: "),
    (lambda b: b["paper"]["gradients"].update({"networks": 0}),
     "budgets.paper: gradients: networks: Input should be greater than 0"),
    (lambda b: b["paper"]["supervised"].update({"seeds": [0, -1]}),
     "budgets.paper: supervised.seeds.1: Input should be greater than or equal to 0"),
    (lambda b: b["paper"]["rl"].update({"threshold": float("inf")}),
     "budgets.paper: rl.threshold: Input should be a finite number"),
    (lambda b: b["paper"]["supervised"]["settings"].append({"kind": "interval", "every": 0}),
     "budgets.paper: supervised.settings: settings[8].every: Input should be greater than or equal to 1"),
    (lambda b: b["paper"]["supervised"]["set"].update({"model.hiden": [8]}),
     "budgets.paper: supervised: "),
])
def test_a_bad_value_in_the_paper_budget_fails_at_load_whatever_is_selected(tmp_path, capsys, edit, message):
    data = yaml.safe_load(STUDY.read_text())
    edit(data["budgets"])
    for section in ("supervised", "rl"):  # the copy lives elsewhere: anchor the bases
        data[section]["base"] = str((STUDY.parent / data[section]["base"]).resolve())
    path = write_yaml(tmp_path / "paper.yaml", yaml.safe_dump(data, sort_keys=False))
    for budget in (None, "smoke", "laptop", "paper"):
        with pytest.raises(ConfigError) as e:
            load_study(path, budget)
        assert f"{path}: {message}" in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert main(["study", str(path), "--budget", "smoke", "--storage", str(tmp_path / "r")]) == 2
    assert "budgets.paper" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_study_overrides_reach_both_sweeps_and_bad_ones_fail_in_one_line():
    st = load_study(STUDY, "smoke", overrides=["model.backend=fused"])
    assert {w: s.base["model"]["backend"] for w, s in st.sweeps.items()} == {"supervised": "fused",
                                                                              "rl": "fused"}
    assert load_study(STUDY, "smoke").sweeps["rl"].base["model"].get("backend", "cpp") == "cpp"
    with pytest.raises(ConfigError) as e:
        load_study(STUDY, "smoke", overrides=["model.backend=jit"])
    msg = str(e.value)
    assert "model.backend" in msg and "'cpp', 'fused', 'compiled' or 'eager' (got 'jit')" in msg
    assert "\n" not in msg


def test_study_cli_rejects_a_sweep_file(capsys):
    assert main(["study", str(CONFIGS / "rl_fixed_grid.yaml")]) == 2
    assert "needs `kind: study`" in capsys.readouterr().err


# --- the claim rules --------------------------------------------------------------------------
def _cmp(rows):
    out = []
    for setting, d in rows.items():
        r = {"setting": setting, "reference": "fixed-k100", "paired_seeds": 6}
        for key, (m, lo, hi, p) in d.items():
            r.update({f"{key}_mean_diff": m, f"{key}_ci_low": lo, f"{key}_ci_high": hi, f"{key}_p_value": p})
        out.append(r)
    return pd.DataFrame(out)


class _SD:
    def __init__(self, settings, auc_ref, finals):
        self.spec = {"settings": [{"label": s, "slope": k} for s, k in settings.items()]}
        self.table = pd.DataFrame({"setting": list(finals), "auc_mean": [auc_ref] * len(finals),
                                   "final_mean": list(finals.values())})


def _grad(cos_k1, ratio):
    rows = []
    for layer, c in enumerate(cos_k1):
        rows.append({"k": 1.0, "layer": layer, "magnitude": ratio if layer == 0 else 1.0, "cosine": c})
        rows.append({"k": 100.0, "layer": layer, "magnitude": 1.0, "cosine": 1.0})
    return pd.DataFrame(rows)


def test_claim_rules_agree_disagree_and_inconclusive():
    fixed = {"fixed-k1": {"kind": "fixed", "k": 1}, "fixed-k50": {"kind": "fixed", "k": 50},
             "interval": {"kind": "interval"}, "fixed-k100": {"kind": "fixed", "k": 100}}
    worlds = {"supervised": _SD(fixed, 0.9, {"fixed-k1": 0.95, "fixed-k50": 0.96, "fixed-k100": 0.955}),
              "rl": _SD(fixed, 100.0, {"fixed-k1": 200, "fixed-k50": 150, "fixed-k100": 120})}
    sig_up, flat, sig_down = (20.0, 5.0, 35.0, 0.03), (1.0, -3.0, 4.0, 0.6), (-20.0, -35.0, -5.0, 0.03)
    sl = _cmp({s: {"auc": (0.001, -0.01, 0.01, 0.7), "final": (0.005, -0.01, 0.015, 0.5)}
               for s in ("fixed-k1", "fixed-k50", "interval")})
    rl = _cmp({"fixed-k1": {"auc": sig_up, "best": sig_up, "stt": (-5.0, -8.0, -2.0, 0.03)},
               "fixed-k50": {"auc": sig_down, "best": flat, "stt": flat},  # not a 'shallow' setting
               "interval": {"auc": sig_up, "best": flat, "stt": (-5.0, -8.0, -2.0, 0.03)}})
    rules = {"alpha": 0.05, "sl_tolerance": 0.02, "shallow_k": 2, "cosine_floor": 0.2, "k_ref": 100.0}
    c = judge_claims(_grad([0.05, 0.1, 0.3, 1.0], 1e4), worlds, {"supervised": sl, "rl": rl}, rules)
    # order: supervised; RL AUC, steps, best; RL vs supervised; gradient magnitude, direction
    assert c["claim"].str.split(":").str[0].tolist() == [
        "Supervised", "RL", "RL", "RL", "The slope matters more in RL than in supervised learning",
        "Gradients", "Gradients"]
    assert list(c["verdict"]) == ["agrees", "agrees", "agrees", "partly agrees", "agrees", "agrees", "agrees"]
    assert "fixed-k50" not in c.iloc[1]["this run"]  # k=50 is not a shallow setting
    # the opposite story: a significant supervised gap, RL worse for a shallow slope, cosine flat
    sl2 = sl.copy()
    sl2.loc[0, ["final_mean_diff", "final_ci_low", "final_ci_high", "final_p_value"]] = [0.05, 0.03, 0.07, 0.03]
    sl2.loc[0, ["auc_mean_diff", "auc_ci_low", "auc_ci_high", "auc_p_value"]] = [0.3, 0.2, 0.4, 0.03]
    rl2 = rl.copy()
    rl2.loc[0, ["auc_mean_diff", "auc_ci_low", "auc_ci_high", "auc_p_value"]] = sig_down
    c2 = judge_claims(_grad([0.9, 0.95, 0.97, 1.0], 0.5), worlds, {"supervised": sl2, "rl": rl2}, rules)
    verdicts = list(c2["verdict"])
    assert verdicts[0] == "disagrees" and verdicts[1] == "disagrees"
    assert c2.iloc[4]["verdict"] == "disagrees" and "supervised 33.33%" in c2.iloc[4]["this run"]
    assert verdicts[-2:] == ["disagrees", "disagrees"]
    # nothing significant anywhere: inconclusive, not a verdict either way
    rl3 = _cmp({s: {"auc": flat, "best": flat, "stt": flat} for s in ("fixed-k1", "interval")})
    c3 = judge_claims(None, worlds, {"rl": rl3}, rules)
    assert set(c3["verdict"]) == {"inconclusive"} and len(c3) == 3


def test_supervised_claim_is_judged_as_equivalence():
    """"About the same" needs every paired CI of Δ final inside the ±tolerance band, from enough
    seeds for the exact test to decide (6 at alpha 0.05): a point difference inside the band
    with a CI crossing it, or too few seeds, is inconclusive - not "agrees"."""
    from snnlab.report.study import min_decisive_seeds

    assert [min_decisive_seeds(a) for a in (0.05, 0.01, 0.3)] == [6, 8, 3]
    fixed = {"fixed-k1": {"kind": "fixed", "k": 1}, "fixed-k100": {"kind": "fixed", "k": 100}}
    worlds = {"supervised": _SD(fixed, 0.9, {"fixed-k1": 0.95, "fixed-k100": 0.955})}
    rules = {"alpha": 0.05, "sl_tolerance": 0.02}

    def verdict(final, seeds=6):
        sl = _cmp({"fixed-k1": {"auc": (0.0, -0.01, 0.01, 0.9), "final": final}})
        sl["paired_seeds"] = seeds
        c = judge_claims(None, worlds, {"supervised": sl}, rules)
        return c.iloc[0]["verdict"], c.iloc[0]["this run"]

    assert verdict((0.005, -0.01, 0.015, 0.5))[0] == "agrees"
    assert verdict((0.005, -0.03, 0.04, 0.5))[0] == "inconclusive"      # point inside, CI crosses the band
    v, text = verdict((0.005, -0.01, 0.015, 0.5), seeds=3)              # inside, but 3 seeds cannot decide
    assert v == "inconclusive" and "too few paired seeds (< 6) for fixed-k1" in text
    assert verdict((0.001, 0.001, 0.001, 1.0), seeds=1)[0] == "inconclusive"  # one seed: no CI at all
    assert verdict((0.05, 0.03, 0.07, 0.03))[0] == "disagrees"          # beyond the band, significant


def test_claims_leave_populations_out():
    """A PBT arm is not one of the paper's settings: a significantly worse PBT best member (RL) or
    one with too few seeds (supervised) changes no verdict and is not named in the claims."""
    settings = {"fixed-k1": {"kind": "fixed", "k": 1}, "fixed-k100": {"kind": "fixed", "k": 100}}
    worlds = {w: _SD(settings, ref, {"fixed-k1": a, "fixed-k100": b, "pbt": a})
              for w, ref, a, b in (("supervised", 0.9, 0.95, 0.955), ("rl", 100.0, 200, 120))}
    for sd in worlds.values():
        sd.spec["settings"].append({"label": "pbt", "slope": {"kind": "fixed", "k": 1},
                                    "population": {"kind": "pbt", "population": 6}})
    sig_up, sig_down = (20.0, 5.0, 35.0, 0.03), (-20.0, -35.0, -5.0, 0.03)
    sl = _cmp({"fixed-k1": {"auc": (0.0, -0.01, 0.01, 0.9), "final": (0.005, -0.01, 0.015, 0.5)},
               "pbt": {"auc": (0.0, -0.01, 0.01, 0.9), "final": (0.005, -0.01, 0.015, 0.5)}})
    sl.loc[1, "paired_seeds"] = 2
    rl = _cmp({"fixed-k1": {"auc": sig_up, "best": sig_up, "stt": (-5.0, -8.0, -2.0, 0.03)},
               "pbt": {"auc": sig_down, "best": sig_down, "stt": (5.0, 2.0, 8.0, 0.03)}})
    rules = {"alpha": 0.05, "sl_tolerance": 0.02, "shallow_k": 2}
    c = judge_claims(None, worlds, {"supervised": sl, "rl": rl}, rules)
    assert list(c["verdict"][:4]) == ["agrees", "agrees", "agrees", "agrees"]
    assert not c["this run"].str.contains("pbt").any()


# --- end to end -------------------------------------------------------------------------------
PROMISED = ["report.html", "report.md", "claims.csv", "summary.csv", "comparison.csv", "gradients.png",
            "seeds_supervised.png", "seeds_rl.png",
            "curves.png", "bars.png", "slopes.png", "sl_vs_rl.png", "rates.png", "cosine.png"]


@pytest.fixture(scope="module")
def smoke_study(ray_session, tmp_path_factory):
    storage = tmp_path_factory.mktemp("study")
    study = load_study(STUDY, "smoke")
    out = run_study(study, storage=str(storage), wandb_mode="off", verbose=0, log=lambda m: None,
                    report=build_study_report)
    return out, storage / "paper_part1"


def test_paper_part1_smoke_writes_every_promised_file(smoke_study):
    out, root = smoke_study
    assert out.errors == []
    for name in PROMISED:
        assert (root / "report" / name).is_file(), name
    rec = yaml.safe_load((root / "snnlab_study.yaml").read_text())
    assert rec["budget"] == "smoke" and rec["versions"]["torch"] and rec["finished"]
    assert set(rec["stage_s"]) == {"gradients", "supervised", "rl"}
    summary = pd.read_csv(root / "report" / "summary.csv")
    assert sorted(summary["world"].unique()) == ["rl", "supervised"]
    assert (summary.groupby("world").size() == 8).all() and (summary["seeds_finished"] == 2).all()
    claims = pd.read_csv(root / "report" / "claims.csv")
    assert len(claims) == 7
    assert set(claims["verdict"]) <= {"agrees", "partly agrees", "disagrees", "inconclusive"}
    # the gradient claims are judged from this run's own analysis (8 samples, 1 network)
    grads = pd.read_csv(root / "gradients" / "gradients_summary.csv")
    assert len(grads) == 5 * 5
    html = (root / "report" / "report.html").read_text()
    assert html.count("<img") == sum(n.endswith(".png") for n in PROMISED) and 'src="data:image/png;base64,' in html and "http" not in html
    md = (root / "report" / "report.md").read_text()
    for name in PROMISED:
        if name.endswith(".png"):
            assert f"({name})" in md
    # every markdown table row has as many cells as its header
    for block in re.findall(r"((?:^\|.*\|\n)+)", md, flags=re.M):
        widths = {len(re.split(r"(?<!\\)\|", line)) for line in block.strip().splitlines()}
        assert len(widths) == 1, block


def test_smoke_study_logs_rates_everywhere_and_gradients_for_the_subset(smoke_study):
    _, root = smoke_study
    for world, rate_key, layers in (("supervised", "val_spike_rate/layer", 2), ("rl", "spike_rate/layer", 3)):
        for trial in (root / f"paper_part1_{world}").glob("*/result.json"):
            rows = [json.loads(line) for line in trial.read_text().splitlines() if line.strip()]
            keys = set().union(*rows)
            assert {f"{rate_key}{i}" for i in range(layers)} <= keys, trial
            has_grad = any(k.startswith("grad/layer") for k in keys)
            assert has_grad == trial.parent.name.endswith("_seed0"), trial  # diagnostics: seed 0 only
    why = (root / "report" / "report.md").read_text().split("## Why: spike rates")[1]
    rows = [line for line in why.splitlines() if line.startswith("| supervised") or line.startswith("| rl")]
    assert len(rows) == 2 * 8 + 2 * 8  # spike-rate table and cosine table, 8 settings per world


def test_study_refuses_to_overwrite_resumes_and_rebuilds_the_report(smoke_study, capsys):
    out, root = smoke_study
    study = load_study(STUDY, "smoke")
    with pytest.raises(ConfigError, match="already holds this study's results; continue it with --resume"):
        run_study(study, storage=str(root.parent), wandb_mode="off", verbose=0, log=lambda m: None,
                  report=build_study_report)
    before = {p: p.read_text() for p in root.glob("*/*/result.json")}
    again = run_study(study, storage=str(root.parent), wandb_mode="off", resume=True, verbose=0,
                      log=lambda m: None, report=build_study_report)
    assert again.errors == [] and "gradients" in again.stage_s
    assert {p: p.read_text() for p in root.glob("*/*/result.json")} == before  # nothing re-ran
    (root / "report" / "report.html").unlink()
    assert main(["report", str(root)]) == 0
    assert (root / "report" / "report.html").is_file() and "claims" in capsys.readouterr().out
    assert main(["report", str(root), str(root / "paper_part1_rl")]) == 2
    assert "is a study folder and" in capsys.readouterr().err


# --- the drone study (issue 15): behaviour cloning vs TD3 on the quadrotor ---------------------
DRONE = REPO / "sweeps" / "paper_part1_drone.yaml"


def test_drone_study_loads_with_every_budget():
    sizes = {}
    for budget in ("smoke", "laptop", "paper"):
        st = load_study(DRONE, budget)
        sizes[budget] = {w: len(s.trials()) for w, s in st.sweeps.items()}
        assert st.sweeps["supervised"].base["score"] == "eval_return"
        assert st.sweeps["rl"].base["algorithm"]["name"] == "TD3"
        assert st.gradients.hidden == [256, 128] and st.gradients.num_steps == 4
    assert sizes == {"smoke": {"supervised": 2, "rl": 2}, "laptop": {"supervised": 18, "rl": 18},
                     "paper": {"supervised": 80, "rl": 80}}
    from snnlab.sweep.spec import load_sweep

    for world, trials in (("sl", 12), ("rl", 8)):  # the tuning sweeps: seeds the study never reports
        tuning = load_sweep(REPO / "sweeps" / f"part1_drone_tuning_{world}.yaml")
        assert min(tuning.spec.seeds) >= 100 and len(tuning.trials()) == trials


@pytest.fixture(scope="module")
def drone_smoke(ray_session, tmp_path_factory):
    storage = tmp_path_factory.mktemp("drone")
    study = load_study(DRONE, "smoke", overrides=None)
    out = run_study(study, storage=str(storage), wandb_mode="off", verbose=0, log=lambda m: None,
                    report=build_study_report)
    return out, storage / "paper_part1_drone"


def test_drone_smoke_study_runs_end_to_end_with_energy_tables(drone_smoke):
    out, root = drone_smoke
    assert out.errors == []
    summary = pd.read_csv(root / "report" / "summary.csv")
    assert sorted(summary["world"].unique()) == ["rl", "supervised"]
    assert (summary["seeds_finished"] == 1).all()
    # energy per setting and world: BC 18-256-128-4 and TD3 146-256-128-4, T=4
    nets = dict(zip(summary["world"], summary["network"]))
    assert nets == {"supervised": "18-256-128-4, T=4", "rl": "146-256-128-4, T=4"}
    assert (summary["ann_macs"] == summary["world"].map(
        {"supervised": 18 * 256 + 256 * 128 + 128 * 4, "rl": 146 * 256 + 256 * 128 + 128 * 4})).all()
    assert ((summary["synops"] >= 0) & (summary["energy_ratio"] > 0)).all()
    md = (root / "report" / "report.md").read_text()
    assert md.count("SNN/ANN") == 2 and "Horowitz, ISSCC 2014" in md
    for block in re.findall(r"((?:^\|.*\|\n)+)", md, flags=re.M):
        widths = {len(re.split(r"(?<!\\)\|", line)) for line in block.strip().splitlines()}
        assert len(widths) == 1, block
    assert "SynOps" in (root / "paper_part1_drone_rl" / "summary.md").read_text()


# --- two studies side by side (issue 15): snnlab report STUDY_A STUDY_B --out DIR ----------------
def test_report_puts_two_studies_side_by_side(smoke_study, drone_smoke, tmp_path, capsys, monkeypatch):
    import base64

    import matplotlib.image
    from PIL import Image

    (_, a), (_, b) = smoke_study, drone_smoke
    out = tmp_path / "side"
    assert main(["report", str(a), str(b), "--out", str(out)]) == 0
    for name in ("report.html", "report.md", "claims.csv", "studies.csv", "summary.csv", "relative_auc.png"):
        assert (out / name).is_file(), name
    md = (out / "report.md").read_text()
    assert md.startswith("# snnlab studies: paper_part1 vs paper_part1_drone\n")
    # each study's claims table, as its own report judged them, and the verdicts side by side
    claims = pd.read_csv(out / "claims.csv")
    for study, root in (("paper_part1", a), ("paper_part1_drone", b)):
        own = pd.read_csv(root / "report" / "claims.csv")
        mine = claims[claims["study"] == study].drop(columns="study").reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, own)
        assert f"## {study}: the paper's claims and this run" in md
        section = md.split(f"## {study}: the paper's claims and this run")[1].split("\n## ")[0]
        for claim, verdict in zip(own["claim"], own["verdict"]):
            assert f"| {claim} |" in section and f"| {verdict} |" in section
    assert "| claim | paper_part1 | paper_part1_drone |" in md
    # the combined table: one row per (study, world), every setting's Δ AUC vs k_ref in % of k_ref's
    # AUC (the numbers of each study's own comparison.csv and summary.csv) and steps to threshold
    table = md.split("## Learning speed against k_ref, per study and world")[1].split("\n## ")[0]
    head = next(line for line in table.splitlines() if line.startswith("| study |"))
    order = [c.strip() for c in head.strip("|").split("|")][4:]
    assert order == ["fixed-k1", "fixed-k2", "fixed-k10", "fixed-k25", "fixed-k50", "fixed-k100", "interval",
                     "adaptive"]
    studies = pd.read_csv(out / "studies.csv")
    for study, root in (("paper_part1", a), ("paper_part1_drone", b)):
        summary = pd.read_csv(root / "report" / "summary.csv")
        cmp = pd.read_csv(root / "report" / "comparison.csv")
        for world in ("supervised", "rl"):
            (row,) = [line for line in table.splitlines() if line.startswith(f"| {study} | {world} |")]
            cells = dict(zip(order, [c.strip() for c in row.strip("|").split("|")][4:]))
            ref_auc = summary[(summary.world == world) & (summary.setting == "fixed-k100")]["auc_mean"].iloc[0]
            assert cells["fixed-k100"].startswith("k_ref; ")
            for _, c in cmp[cmp.world == world].iterrows():
                rel = c["auc_mean_diff"] * 100 / abs(ref_auc)
                assert cells[c["setting"]].startswith(f"{rel:+.1f}%; "), (study, world, c["setting"])
                got = studies[(studies.study == study) & (studies.world == world) & (studies.setting == c["setting"])]
                assert got["rel_auc_pct"].iloc[0] == pytest.approx(rel)
                s = summary[(summary.world == world) & (summary.setting == c["setting"])].iloc[0]
                assert got["steps_to_threshold_mean"].iloc[0] == pytest.approx(s["steps_to_threshold_mean"],
                                                                                nan_ok=True)
                assert cells[c["setting"]].endswith(f"({s['reached']})")
            assert sum(bool(v) for v in cells.values()) == (8 if study == "paper_part1" else 2)
    # one figure, a panel per study and world; it loads, and the page embeds exactly it
    png = out / "relative_auc.png"
    with Image.open(png) as im:
        im.verify()
    img = matplotlib.image.imread(png)
    assert img.shape[0] > 400 and img.shape[1] > 800
    html = (out / "report.html").read_text()
    (data,) = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert base64.b64decode(data) == png.read_bytes() and "(relative_auc.png)" in md
    assert "paper_part1_drone" in html and "http" not in html
    # the energy tables of both studies' worlds
    assert md.count("SNN/ANN") == 4 and "18-256-128-4, T=4" in md and "64-128-128-10, T=8" in md
    for block in re.findall(r"((?:^\|.*\|\n)+)", md, flags=re.M):
        widths = {len(re.split(r"(?<!\\)\|", line)) for line in block.strip().splitlines()}
        assert len(widths) == 1, block
    # default out: runs/report; --wandb offline says it is skipped
    capsys.readouterr()
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert main(["report", str(a), str(b), "--wandb"]) == 0
    assert (tmp_path / "runs" / "report" / "report.html").is_file()
    assert "W&B report skipped: WANDB_MODE=offline" in capsys.readouterr().out
    # a study folder with a sweep folder: one line naming what is allowed
    assert main(["report", str(a), str(b / "paper_part1_drone_rl"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a study folder and" in err
    assert "give study folders only" in err and "or sweep folders only" in err
    assert not (tmp_path / "x").exists()


def test_wandb_report_of_two_studies_has_a_section_per_study(smoke_study, drone_smoke, tmp_path, capsys,
                                                           monkeypatch):
    """Online (only Report.save, the network call, is replaced): one panel grid per study whose
    runsets are that study's sweeps."""
    import wandb_workspaces.reports.v2 as wr

    (_, a), (_, b) = smoke_study, drone_smoke
    saved = []
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setattr(wr.Report, "save", lambda self, *args, **kw: saved.append(self) or self)
    monkeypatch.setattr(wr.Report, "url", property(lambda self: "https://wandb.ai/fake/report"), raising=False)
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "r"), "--wandb", "--wandb-project", "p",
                 "--wandb-entity", "me"]) == 0
    (report,) = saved
    titles = [getattr(blk, "text", None) for blk in report.blocks]
    assert "paper_part1" in titles and "paper_part1_drone" in titles
    grids = [blk for blk in report.blocks if isinstance(blk, wr.PanelGrid)]
    assert [[r.filters for r in g.runsets] for g in grids] == [
        ["Group == 'paper_part1_rl'", "Group == 'paper_part1_supervised'"],
        ["Group == 'paper_part1_drone_rl'", "Group == 'paper_part1_drone_supervised'"]]
    assert [p.y for p in grids[0].panels] == [["score"], ["slope"], ["energy/energy_ratio"]]
    assert "W&B report: https://wandb.ai/fake/report" in capsys.readouterr().out


# --- studies in shards (issue 21): snnlab study --seeds, merged by snnlab report -----------------
def test_seed_lists_parse_and_label_folders():
    from snnlab.study import parse_seeds, seeds_label

    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds("3-5") == [3, 4, 5]
    assert parse_seeds(" 4-6,0, 5") == [0, 4, 5, 6]
    assert seeds_label([5, 0, 1, 2]) == "0-2_5" and seeds_label([3]) == "3"
    for bad in ("", "x", "1-", "5-3", "-1", "0,,1"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)
    st = load_study(STUDY, "smoke", seeds=[1])
    assert st.folder == "paper_part1_seeds1" and st.seeds == [1] and st.all_seeds == [0, 1]
    assert {w: len(s.trials()) for w, s in st.sweeps.items()} == {"supervised": 8, "rl": 8}
    # a shard's trials are the whole study's trials of its seeds: same configs (diagnostics too)
    whole = load_study(STUDY, "smoke")
    for w, s in st.sweeps.items():
        assert s.trials() == [t for t in whole.sweeps[w].trials() if t["seed"] == 1]
        assert s.spec == whole.sweeps[w].spec


@pytest.mark.parametrize("seeds, message", [
    ("7", "--seeds: 7 is not among the study's seeds [0, 1] (budget smoke)"),
    ("0,2-3", "--seeds: 2, 3 are not among the study's seeds [0, 1] (budget smoke)"),
    ("1-0", "--seeds '1-0': '1-0' is not a range of seeds >= 0 (low-high)"),
    ("a", "--seeds 'a': expected seeds like 0,1,2 or 3-5"),
])
def test_study_seeds_outside_the_budget_fail_in_one_line(tmp_path, capsys, seeds, message):
    assert main(["study", str(STUDY), "--budget", "smoke", "--seeds", seeds, "--storage", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "r").exists()


def test_a_shard_skips_a_section_without_its_seeds(tmp_path, monkeypatch):
    """Sections with different seeds: each runs the shard's seeds among its own (no training here:
    the sweeps are recorded, not run)."""
    import snnlab.sweep.run as run_mod

    text = _study_text(rl={"base": str(CONFIGS / "rl_cartpole.yaml"), "settings": [{"k": 2}], "seeds": [1, 2]})
    path = write_yaml(tmp_path / "s.yaml", text)
    ran = []
    monkeypatch.setattr(run_mod, "connect", lambda *a, **k: False)
    monkeypatch.setattr(run_mod, "run_sweep", lambda sweep, **k: ran.append((sweep.spec.name, sweep.seeds)) or
                        type("R", (), {"errors": []})())
    st = load_study(path, seeds=[0])
    assert st.folder == "s_seeds0" and {w: s.seeds for w, s in st.sweeps.items()} == {"supervised": [0], "rl": []}
    out = run_study(st, storage=str(tmp_path / "r"), wandb_mode="off", verbose=0, log=lambda m: None)
    assert ran == [("s_supervised", [0])] and set(out.stage_s) == {"supervised"}
    rec = yaml.safe_load((tmp_path / "r" / "s_seeds0" / "snnlab_study.yaml").read_text())
    assert rec["seeds"] == [0] and rec["definition"]["rl"]["seeds"] == [1, 2]
    ran.clear()
    run_study(load_study(path, seeds=[1, 2]), storage=str(tmp_path / "r"), wandb_mode="off", verbose=0,
              log=lambda m: None)
    assert ran == [("s_supervised", [1]), ("s_rl", [1, 2])]
    with pytest.raises(ConfigError, match="--seeds: 3 is not among the study's seeds \\[0, 1, 2\\]"):
        load_study(path, seeds=[3])
    grads_only = write_yaml(tmp_path / "g.yaml", yaml.safe_dump({"kind": "study", "name": "g", "gradients": {}}))
    with pytest.raises(ConfigError, match="--seeds: the study has no sweep section"):
        load_study(grads_only, seeds=[0])


@pytest.fixture(scope="module")
def smoke_shards(ray_session, tmp_path_factory):
    """The smoke study again, as two shards (seeds 0 and 1) written into one storage."""
    storage = tmp_path_factory.mktemp("shards")
    for seeds in ([0], [1]):
        out = run_study(load_study(STUDY, "smoke", seeds=seeds), storage=str(storage), wandb_mode="off",
                        verbose=0, log=lambda m: None, report=build_study_report)
        assert out.errors == []
    return storage / "paper_part1_seeds0", storage / "paper_part1_seeds1"


TABLES = ("claims.csv", "summary.csv", "comparison.csv")


def _same_tables(a, b):
    """The report's tables in folders a and b: equal (claims as text, numbers to float rounding)."""
    for name in TABLES:
        pd.testing.assert_frame_equal(pd.read_csv(a / name), pd.read_csv(b / name), rtol=1e-12, obj=name)


def _same_page(a, b):
    """report.md of a and b: equal but for the facts paragraph (commands, times)."""
    la, lb = (p.joinpath("report.md").read_text().splitlines() for p in (a, b))
    assert len(la) == len(lb) and [x for i, x in enumerate(la) if i != 2] == [x for i, x in enumerate(lb) if i != 2]


def test_shards_merge_into_the_unsharded_study(smoke_study, smoke_shards, tmp_path, capsys):
    _, whole = smoke_study
    s0, s1 = smoke_shards
    recs = [yaml.safe_load((s / "snnlab_study.yaml").read_text()) for s in (s0, s1)]
    assert [r["seeds"] for r in recs] == [[0], [1]]
    assert recs[0]["definition"] == recs[1]["definition"]
    assert recs[0]["definition"] == yaml.safe_load((whole / "snnlab_study.yaml").read_text())["definition"]
    assert recs[0]["definition"]["code"]["snnlab_source"] and recs[0]["definition"]["rl"]["seeds"] == [0, 1]
    # each shard holds its seed's trials only, with the unsharded run's trial configs
    for s, seed in ((s0, 0), (s1, 1)):
        for w in ("supervised", "rl"):
            trials = sorted(p.parent.name for p in (s / f"paper_part1_{w}").glob("*/params.json"))
            assert len(trials) == 8 and all(t.endswith(f"_seed{seed}") for t in trials)
            for t in trials:
                assert json.loads((s / f"paper_part1_{w}" / t / "params.json").read_text()) == json.loads(
                    (whole / f"paper_part1_{w}" / t / "params.json").read_text())
            assert yaml.safe_load((s / f"paper_part1_{w}" / "snnlab_sweep.yaml").read_text())["shard_seeds"] == [seed]
    out = tmp_path / "merged"
    assert main(["report", str(s1), str(s0), "--out", str(out)]) == 0  # any order
    _same_tables(out, whole / "report")
    _same_page(out, whole / "report")
    md = (out / "report.md").read_text()
    assert "Merged from 2 shards (seeds 0-1, budget: smoke): seeds 0: `" in md
    assert sorted(p.name for p in out.glob("*.png")) == sorted(
        n for n in PROMISED if n.endswith(".png"))
    # the shards' own reports are untouched; a shard alone still reports itself into its folder
    assert pd.read_csv(s0 / "report" / "summary.csv")["seeds_finished"].eq(1).all()


def _light_copy(src, dst):
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoint_*", "events.out.tfevents.*", "report"))
    return dst


def test_shards_of_different_settings_or_overlapping_seeds_are_refused(smoke_study, smoke_shards, tmp_path,
                                                                      capsys):
    _, whole = smoke_study
    s0, s1 = smoke_shards
    out = tmp_path / "out"

    def refused(*dirs, message):
        for cmd in (["report", *map(str, dirs), "--out", str(out)],
                    ["export", *map(str, dirs), "--out", str(out)]):
            assert main(cmd) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and message in err, err
            assert not out.exists()

    refused(s0, s0, message=f"shards overlap in seed 0: {s0} and {s0}")
    refused(s1, whole, message=f"shards overlap in seed 1: {s1} and {whole}")
    rec = yaml.safe_load((s1 / "snnlab_study.yaml").read_text())
    lr = rec["definition"]["rl"]["base"]["algorithm"]["lr"]
    for key, edit, message in (
            ("lr", lambda d: d["rl"]["base"]["algorithm"].update(lr=lr * 10),
             f"shards differ in rl.base.algorithm.lr: {lr} vs {lr * 10} ({s0} vs "),
            ("budget", lambda d: d.update(budget="laptop"), "shards differ in budget: smoke vs laptop"),
            ("code", lambda d: d["code"].update(torch="0.0"), "shards differ in code.torch: "),
            ("seeds", lambda d: d["supervised"].update(seeds=[0, 1, 2]),
             "shards differ in supervised.seeds.2: (absent) vs 2")):
        other = tmp_path / key
        other.mkdir()
        changed = json.loads(json.dumps(rec))
        edit(changed["definition"])
        (other / "snnlab_study.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
        refused(s0, other, message=message)
    # the gradient analyses (seeded) must agree
    bad = _light_copy(s1, tmp_path / "bad_grad")
    g = pd.read_csv(bad / "gradients" / "gradients_summary.csv")
    g.loc[0, "magnitude"] *= 2
    g.to_csv(bad / "gradients" / "gradients_summary.csv", index=False)
    refused(s0, bad, message="shards differ in gradients/gradients_summary.csv: k=1 layer 0 magnitude")
    # a sweep folder among them: today's one line
    refused(s0, s1 / "paper_part1_rl", message="is a study folder and")


def test_a_shard_resumes_only_with_its_own_definition(smoke_shards):
    s0, _ = smoke_shards
    with pytest.raises(ConfigError, match="already holds this shard's results; continue it with --resume"):
        run_study(load_study(STUDY, "smoke", seeds=[0]), storage=str(s0.parent), wandb_mode="off", verbose=0,
                  log=lambda m: None)
    with pytest.raises(ConfigError, match=r"cannot resume: the study there differs in supervised\.base\.model\.backend"):
        run_study(load_study(STUDY, "smoke", overrides=["model.backend=fused"], seeds=[0]),
                  storage=str(s0.parent), wandb_mode="off", resume=True, verbose=0, log=lambda m: None)


# --- results in the repo (issue 21): snnlab export, snnlab report on the export -----------------
#: what an export never holds: Tune's and RLlib's checkpoints and state, W&B, TensorBoard, CSV logs
HEAVY = ("checkpoint_", "events.out.tfevents", "wandb", ".pkl", "progress.csv", "experiment_state", "tuner")


def test_exported_shards_rebuild_the_study_without_the_original_folders(smoke_study, smoke_shards, tmp_path,
                                                                       capsys):
    import shutil
    import subprocess
    import sys

    _, whole = smoke_study
    copies = []
    for s in smoke_shards:  # copies with everything, plus a W&B run, that are deleted after the export
        c = tmp_path / "orig" / s.name
        shutil.copytree(s, c)
        run = c / "paper_part1_rl" / "fixed-k1_seed0" / "wandb" / "offline-run-x"
        run.mkdir(parents=True)
        (run / "run-x.wandb").write_bytes(b"\0" * 1000)
        copies.append(c)
    assert any(c.rglob("checkpoint_*")) and any(c.rglob("events.out.tfevents.*"))
    res = tmp_path / "results"
    for c in copies:
        assert main(["export", str(c), "--out", str(res / c.name)]) == 0
        assert "exported study (16 trials)" in capsys.readouterr().out
    assert main(["export", *map(str, copies), "--out", str(res / "merged")]) == 0
    assert "exported study (32 trials)" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "orig")
    for e in ("paper_part1_seeds0", "paper_part1_seeds1", "merged"):
        files = [p for p in (res / e).rglob("*") if p.is_file()]
        assert not [p for p in files if any(h in str(p.relative_to(res)) for h in HEAVY)]
        data = sum(p.stat().st_size for p in files if "report" not in p.relative_to(res / e).parts)
        assert data < 400_000, (e, data)  # 16-32 smoke trials: about 0.2-0.35 MB
        assert sum(p.stat().st_size for p in files) < 3_000_000
    # every row holds only the keys the summary, the report and the energy table read
    from snnlab.sweep.summary import read_keys

    keys, prefixes = read_keys("score")
    for f in (res / "merged").glob("*/*/result.json"):
        for line in f.read_text().splitlines():
            assert all(k in keys or k.startswith(prefixes) for k in json.loads(line))
    # the validated config of each trial loads as a `snnlab train` config
    from snnlab.experiment import load_experiment
    from snnlab.sweep.spec import experiment_from_trial

    trial = res / "merged" / "paper_part1_rl" / "interval_seed1"
    assert load_experiment(trial / "config.yaml") == experiment_from_trial(
        json.loads((trial / "params.json").read_text()))
    assert "config" not in json.loads((trial / "final_result.json").read_text())
    # the merged export is the whole study (its own report, rebuilt by `snnlab report`); the separately
    # exported shards still merge - in a fresh interpreter that never starts Ray
    _same_tables(res / "merged" / "report", whole / "report")
    code = f"""
        import sys
        from snnlab.cli import main
        assert main(["report", {str(res / 'paper_part1_seeds0')!r}, {str(res / 'paper_part1_seeds1')!r},
                     "--out", {str(tmp_path / 'from_exports')!r}]) == 0
        assert main(["report", {str(res / 'merged')!r}]) == 0
        ray = sys.modules.get("ray")  # imported by the RL schema (energy columns), never started
        assert ray is None or not ray.is_initialized(), "the report started Ray"
        """
    from .helpers import run_python

    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _same_tables(tmp_path / "from_exports", whole / "report")
    _same_page(tmp_path / "from_exports", whole / "report")
    _same_tables(res / "merged" / "report", whole / "report")
    _same_page(res / "merged" / "report", whole / "report")
    assert yaml.safe_load((res / "merged" / "snnlab_study.yaml").read_text())["seeds"] == [0, 1]
    # an export never writes into an existing folder
    before = {p: p.read_bytes() for p in (res / "merged").rglob("*") if p.is_file()}
    assert main(["export", str(smoke_shards[0]), "--out", str(res / "merged")]) == 2
    assert "already exists; export into a new folder (nothing was written)" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in (res / "merged").rglob("*") if p.is_file()} == before
    assert not list(res.glob(".*partial*"))
    # one export is one study: two whole runs (side by side in `snnlab report`) are refused
    twin = _light_copy(whole, tmp_path / "twin")
    assert main(["export", str(whole), str(twin), "--out", str(res / "two")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "are different studies; export one study" in err, err
    assert not (res / "two").exists()

"""snnlab report: files and numbers from a real (tiny) sweep, the W&B path offline and mocked."""

import base64
import re
import shutil
import subprocess

import pandas as pd
import pytest

from snnlab.cli import main
from snnlab.sweep.summary import summarize


def test_report_files_and_numbers(tiny_sweep, tmp_path, capsys):
    assert tiny_sweep["rc"] == 0
    out = tmp_path / "report"
    assert main(["report", str(tiny_sweep["exp"]), "--out", str(out)]) == 0
    for name in ("curves.png", "bars.png", "slopes.png", "summary.csv", "report.md", "report.html"):
        assert (out / name).is_file() and (out / name).stat().st_size > 200, name
    table = pd.read_csv(out / "summary.csv")
    expected = summarize(tiny_sweep["exp"])
    assert list(table["setting"]) == ["fixed-k2", "interval"]
    for col in ("best_mean", "final_mean", "auc_mean", "steps_to_threshold_mean"):
        assert table[col].tolist() == pytest.approx(expected[col].tolist(), nan_ok=True)
    html = (out / "report.html").read_text()
    # self-contained: every image is embedded, and they are the PNGs written beside it
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 3 and "http" not in html.replace("http-equiv", "")
    assert base64.b64decode(images[0]) == (out / "curves.png").read_bytes()
    assert f"{expected['final_mean'][0]:.4g} ± {expected['final_std'][0]:.4g}" in html
    md = (out / "report.md").read_text()
    assert "| fixed-k2 | 2 |" in md and "![learning curves](curves.png)" in md


def test_report_compares_several_sweeps_and_rejects_non_sweeps(tiny_sweep, tmp_path, capsys):
    other = tmp_path / "copy"
    shutil.copytree(tiny_sweep["exp"], other)
    out = tmp_path / "r"
    assert main(["report", str(tiny_sweep["exp"]), str(other), "--out", str(out)]) == 0
    assert len(pd.read_csv(out / "summary.csv")) == 4
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no snnlab sweep here" in capsys.readouterr().err


def test_wandb_report_offline_says_so_and_still_writes(tiny_sweep, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert main(["report", str(tiny_sweep["exp"]), "--out", str(tmp_path / "r"), "--wandb"]) == 0
    out = capsys.readouterr().out
    assert "W&B report skipped: WANDB_MODE=offline" in out
    assert (tmp_path / "r" / "report.html").is_file()


def test_wandb_report_online_builds_and_saves_a_report(tiny_sweep, tmp_path, capsys, monkeypatch):
    """The W&B cloud cannot exist here: only Report.save (the network call) is replaced."""
    import wandb_workspaces.reports.v2 as wr

    saved = []
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setattr(wr.Report, "save", lambda self, *a, **k: saved.append(self) or self)
    monkeypatch.setattr(wr.Report, "url", property(lambda self: "https://wandb.ai/fake/report"),
                        raising=False)
    assert main(["report", str(tiny_sweep["exp"]), "--out", str(tmp_path / "r"), "--wandb",
                 "--wandb-project", "proj", "--wandb-entity", "me"]) == 0
    (report,) = saved
    assert report.project == "proj" and report.entity == "me"
    titles = [getattr(b, "text", None) for b in report.blocks]
    assert "tiny" in titles
    grid = [b for b in report.blocks if isinstance(b, wr.PanelGrid)][0]
    assert grid.runsets[0].filters == "Group == 'tiny'"
    assert [p.y for p in grid.panels] == [["score"], ["slope"]]
    assert "W&B report: https://wandb.ai/fake/report" in capsys.readouterr().out


# Injected first into <head> of a copy of the page: records every error (script errors, resources
# that fail to load, console.error) and, once the page has loaded, whether each image decoded.
PROBE = """<script>
window.__errors = [];
window.addEventListener("error", function (e) {
  var t = e.target || {};
  window.__errors.push(t.src ? "resource failed: " + String(t.src).slice(0, 80) : "error: " + e.message);
}, true);
window.addEventListener("unhandledrejection", function (e) { window.__errors.push("rejection: " + e.reason); });
var __ce = console.error;
console.error = function () { window.__errors.push("console.error: " + Array.from(arguments).join(" ")); __ce.apply(console, arguments); };
window.addEventListener("load", function () {
  var imgs = Array.from(document.images).map(function (i) {
    return {alt: i.alt, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight};
  });
  var pre = document.createElement("pre");
  pre.id = "snnlab-check";
  pre.textContent = JSON.stringify({images: imgs, errors: window.__errors});
  document.body.appendChild(pre);
});
</script>"""

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_report_html_renders_in_headless_chromium(tiny_sweep, tmp_path):
    """The report opens in a real browser: every image loads and decodes, nothing is logged as an
    error (script errors, failed resources, console.error, Chromium's own console log), and a
    screenshot of it is not blank."""
    import json
    from html import unescape

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    out = tmp_path / "r"
    assert main(["report", str(tiny_sweep["exp"]), "--out", str(out)]) == 0
    page = out / "report.html"
    html = page.read_text()
    assert html.count("<head>") == 1

    def chromium(*args, profile):
        return subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / profile}", *args],
                              capture_output=True, text=True, timeout=120)

    def probe(html_text, name):
        f = out / name
        f.write_text(html_text.replace("<head>", "<head>" + PROBE, 1))
        res = chromium("--dump-dom", "--virtual-time-budget=5000", f.as_uri(), profile=name)
        m = re.search(r'<pre id="snnlab-check">(.*?)</pre>', res.stdout, re.S)
        assert m, (res.stdout[-1500:], res.stderr[-2000:])
        return json.loads(unescape(m.group(1)))

    # the probe itself sees a broken image and a script error
    broken = html.replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAA", 1)
    check = probe(broken.replace("</body>", "<script>nosuchfunction()</script></body>"), "broken.html")
    assert [i["w"] for i in check["images"]].count(0) == 1, check
    assert any("nosuchfunction" in e for e in check["errors"]), check
    check = probe(html, "probed.html")
    assert check["errors"] == [], check["errors"]
    assert len(check["images"]) == 3, check["images"]
    for img in check["images"]:
        assert img["complete"] and img["w"] > 100 and img["h"] > 100, img
    # the page itself (not the probed copy): no console errors in Chromium's log
    res = chromium("--dump-dom", "--enable-logging=stderr", "--v=0", page.as_uri(), profile="p2")
    console = [ln for ln in res.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert console == [], console
    assert res.stdout.count("<img") == 3 and "fixed-k2" in res.stdout
    shot = tmp_path / "shot.png"
    res = chromium(f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri(), profile="p3")
    assert shot.is_file() and shot.stat().st_size > 20_000, res.stderr[-2000:]


def test_export_of_a_sweep_is_small_and_rebuilds_its_report(tiny_sweep, tmp_path, capsys):
    """snnlab export SWEEP --out DIR (issue 21): configs and the rows the tables read, nothing heavy."""
    import json

    src = tiny_sweep["exp"]
    assert any(src.rglob("checkpoint_*")) and any(src.glob("*/wandb/offline-run-*"))
    assert any(src.rglob("events.out.tfevents.*"))
    out = tmp_path / "results" / "tiny"
    assert main(["export", str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "exported sweep (4 trials) to" in printed and "snnlab report" in printed
    files = [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()]
    assert not [f for f in files if any(h in f for h in ("checkpoint", "wandb", "tfevents", ".pkl", "progress.csv",
                                                         "experiment_state", "tuner"))], files
    per_trial = {f.split("/", 1)[1] for f in files if f.startswith(("fixed-k2_", "interval_"))}
    assert per_trial == {"params.json", "config.yaml", "result.json", "final_result.json"}
    assert sum((out / f).stat().st_size for f in files if not f.startswith("report/")) < 60_000
    for f in out.glob("*/result.json"):
        keys = set().union(*(json.loads(line) for line in f.read_text().splitlines()))
        assert {"training_iteration", "score", "slope"} <= keys
        assert all(k in ("training_iteration", "score", "slope", "time_this_iter_s")  # + the compute's
                   or k.startswith("val_spike_rate/") for k in keys), keys
    pd.testing.assert_frame_equal(summarize(out), summarize(src))
    assert main(["report", str(src), "--out", str(tmp_path / "a")]) == 0
    assert main(["report", str(out), "--out", str(tmp_path / "b")]) == 0
    for name in ("summary.csv",):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a" / name), pd.read_csv(tmp_path / "b" / name))
    assert (out / "report" / "report.html").is_file() and (out / "summary.md").is_file()
    capsys.readouterr()
    # one line, exit 2, nothing written: several sweeps, an unknown folder, an existing target
    for args, message in (([str(src), str(src)], "export: give one sweep folder (got 2)"),
                          ([str(tmp_path / "nope")], f"export: {tmp_path / 'nope'}: no such directory"),
                          ([str(tmp_path / "empty")], "no snnlab sweep here")):
        (tmp_path / "empty").mkdir(exist_ok=True)
        assert main(["export", *args, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
        assert not (tmp_path / "x").exists()
    before = sorted(files)
    assert main(["export", str(src), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == before


def test_takeoff_and_spread_by_hand(tmp_path):
    """Take-off: env steps to the first evaluation with >= 50% of episodes flown to the end,
    over the seeds that took off; how many ever did; the seeds' final range; a panel per setting
    with every seed's curve."""
    import json
    import math

    import yaml

    from snnlab.report.build import load_sweep_dir, plot_seed_curves
    from snnlab.sweep.summary import SPEC_FILE, summarize, to_markdown

    spec = {"name": "fly", "metric": {"name": "score", "mode": "max"}, "steps": 3,
            "settings": [{"label": "a"}, {"label": "b"}]}
    (tmp_path / SPEC_FILE).write_text(yaml.safe_dump(spec))

    def trial(name, setting, seed, full, scores):
        d = tmp_path / name
        d.mkdir()
        (d / "params.json").write_text(json.dumps({"setting": {"label": setting}, "seed": seed, "params": {}}))
        rows = [{"training_iteration": i + 1, "score": s, "env_runners/num_env_steps_sampled_lifetime": 1000 * (i + 1),
                 "evaluation/env_runners/full_episode_fraction": f} for i, (f, s) in enumerate(zip(full, scores))]
        (d / "result.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    trial("a0", "a", 0, [0.0, 0.5, 0.9], [1, 5, 9])    # takes off at 2000 env steps
    trial("a1", "a", 1, [0.0, 0.1, 0.6], [1, 2, 7])    # at 3000
    trial("b0", "b", 0, [0.0, 0.0, 0.45], [1, 1, 2])   # never reaches 50%
    df = summarize(tmp_path).set_index("setting")
    assert df.loc["a", "takeoff_mean"] == 2500 and df.loc["a", "took_off"] == "2/2"
    assert df.loc["a", "takeoff_unit"] == "env steps"
    assert (df.loc["a", "final_min"], df.loc["a", "final_max"]) == (7, 9)
    assert math.isnan(df.loc["b", "takeoff_mean"]) and df.loc["b", "took_off"] == "0/1"
    md = to_markdown(summarize(tmp_path), spec)
    assert "take-off (env steps)" in md and "| 2500 ± 707.1 | 2/2 | 7 to 9 |" in md
    png = plot_seed_curves(load_sweep_dir(tmp_path), tmp_path / "seeds.png")
    assert png.is_file() and png.stat().st_size > 1000

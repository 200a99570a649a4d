"""``gflow report`` and the claims protocol of the research settings.

The report's own logic (plan, resume, gather, render, folder safety) is tested with a
stand-in for one setting's ``run`` (no compile); every research setting's declarations are
checked here, and its verdicts in its own small-run test (``check_claims``)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from gflow import experiments, report, stats
from gflow.experiments import claim, from_bound, tally

FAKE = """
import sys
import numpy as np
import xarray as xr
from gflow import cli
from gflow.experiments import Result, claim, teacher_student as ts
def fake_run(cfg, *, progress=False):
    if cfg.n_seeds == 13:
        raise RuntimeError("a failing setting")
    ok = "holds" if cfg.d == 3 else "does not hold"
    return Result({"claims": {"local_convergence": claim(ok, f"d = {cfg.d}", "1.0 [0.9, 1.1]")}},
                  {"gf": xr.Dataset({"loss": (("time",), np.arange(3.0))})})
ts.run = fake_run
ts.figures = lambda ds, cfg: {}
sys.exit(cli.main(sys.argv[1:]))
"""
CLI = [sys.executable, "-c", FAKE]


def test_claim_helpers():
    assert claim("holds", "because", "1.0")["verdict"] == "holds"
    with pytest.raises(ValueError, match="verdict"):
        claim("consistent", "because")
    with pytest.raises(ValueError, match="why"):
        claim("holds", "")
    for bv, want in (("consistent with the bound", "holds"),
                     ("exceeds the bound", "does not hold"), ("inconclusive", "inconclusive")):
        assert bv in stats.VERDICTS
        assert from_bound({"verdict": bv, "why": "w"})["verdict"] == want
    assert tally(["ok", "ok"], holds="ok", fails="bad")["verdict"] == "holds"
    assert tally(["ok", "bad", "still"], holds="ok", fails="bad")["verdict"] == "does not hold"
    t = tally(["still", "still"], holds="ok", fails="bad")
    assert t["verdict"] == "inconclusive" and "2 of 2 seeds: still" in t["why"]
    assert tally([], holds="ok", fails="bad")["verdict"] == "inconclusive"
    # a threshold law as stats.summary_keys writes it, with and without a within-T verdict
    x, grid = np.array([1.0, 2.0, 4.0, 8.0]), np.array([2, 4, 8, 16, 32, 64])
    success = np.broadcast_to(grid[None, None, :] >= 2 * x[:, None, None], (4, 8, 6))
    law = stats.threshold_law(x, success, grid, n_resamples=200)
    summary = stats.summary_keys("x", law, 2.0)
    c = experiments.from_law(summary, "x", "width vs x")
    assert c["verdict"] == "holds" and c["measured"].startswith("width vs x: exponent 1.0")
    summary["verdict_x_within_T"] = {"verdict": "exceeds the bound", "why": "w"}
    assert "within the time budget T: exceeds the bound (w)" in experiments.from_law(
        summary, "x", "")["why"]

    class Mod:
        CLAIMS = {"a": "claim a", "b": "claim b"}

    good = {"claims": {"a": claim("holds", "w"), "b": claim("inconclusive", "w")}}
    assert experiments.check_claims(Mod, good) == []
    bad = {"claims": {"a": {"verdict": "maybe"}, "c": claim("holds", "w")}}
    problems = experiments.check_claims(Mod, bad)
    assert len(problems) == 3 and any("'b' has no verdict" in p for p in problems)


def test_research_settings_declare_claims_and_report_runs():
    names = report.settings()
    assert {"condensation", "coupled_init", "teacher_student", "continuous_limits",
            "lazy_vs_rich"} <= set(names)
    assert "quickstart" not in names
    for name in names:
        mod = experiments.get(name)
        assert isinstance(mod.CITE, str) and mod.CITE
        assert mod.CLAIMS and all(isinstance(t, str) and len(t) > 20 for t in mod.CLAIMS.values())
        assert set(mod.REPORT) == set(report.LEVELS), name
        for level in report.LEVELS:
            for label, sets in mod.REPORT[level]:
                experiments.config_from_dict(mod.Config, sets)  # valid settings
                assert isinstance(label, str)
    folders = [f for _, f, _ in report.plan("quick")]
    assert len(folders) == len(set(folders))
    with pytest.raises(ValueError, match="level"):
        report.plan("huge")
    with pytest.raises(ValueError, match="--only"):
        report.plan("smoke", ["quickstart"])


def test_report_runs_gathers_resumes_and_keeps(tmp_path):
    out = tmp_path / "rep"
    assert report.run(out, "smoke", only=["teacher_student"], cli=CLI, progress=False) == 0
    meta = json.loads((out / "report.json").read_text())
    assert meta["status"] == "completed" and meta["level"] == "smoke"
    (row,) = meta["rows"]
    assert row["claim_id"] == "local_convergence" and row["verdict"] == "holds"
    assert row["measured"] == "1.0 [0.9, 1.1]" and row["cite"] == experiments.get(
        "teacher_student").CITE
    assert meta["provenance"]["versions"]["jax"]
    md, page = (out / "index.md").read_text(), (out / "index.html").read_text()
    assert "| holds |" in md and "runs/teacher_student" in md
    assert '<td class="holds">holds</td>' in page
    run_dir = out / "runs" / "teacher_student"
    stamp = (run_dir / "config.json").stat().st_mtime_ns
    # again: the finished run is kept
    assert report.run(out, "smoke", only=["teacher_student"], cli=CLI, progress=False) == 0
    assert (run_dir / "config.json").stat().st_mtime_ns == stamp
    assert json.loads((out / "report.json").read_text())["wall_time_s"] == {
        "teacher_student": "kept from an earlier report"}
    # an interrupted run is continued with gflow run --resume
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps(
        {**summary, "status": "interrupted: KeyboardInterrupt: "}))
    assert report.run(out, "smoke", only=["teacher_student"], cli=CLI, progress=False) == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert "resumed_from" in config["provenance"]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


def test_report_failures_and_folder_safety(tmp_path, monkeypatch):
    from gflow.experiments import teacher_student as ts

    # a failing run: exit code 1, its row says it did not run, the others still render
    monkeypatch.setitem(ts.REPORT, "smoke", [("bad", {"n_seeds": 13}), ("", {"d": 4})])
    out = tmp_path / "rep"
    assert report.run(out, "smoke", only=["teacher_student"], cli=CLI, progress=False) == 1
    meta = json.loads((out / "report.json").read_text())
    assert meta["status"] == "failed: teacher_student-bad"
    bad, good = meta["rows"]
    assert bad["verdict"] == "not run" and "RuntimeError" in bad["why"]
    assert good["verdict"] == "does not hold" and good["run"] == "teacher_student"
    # a folder that holds something else is refused, and nothing is written into it
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="not empty"):
        report.run(other, "smoke", only=["teacher_student"], cli=CLI, progress=False)
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_report_cli_errors(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gflow.cli", "report", "--smoke", "--only",
                        "quickstart", "--out", str(tmp_path / "r")], capture_output=True,
                       text=True)
    assert r.returncode == 2 and r.stderr.startswith("gflow: error: --only")
    assert not (tmp_path / "r").exists()


@pytest.mark.slow  # ~60 s: two real settings at the smoke size, in subprocesses
def test_real_smoke_report(tmp_path):
    out = tmp_path / "rep"
    assert report.run(out, "smoke", only=["teacher_student", "coupled_init"]) == 0
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert len(rows) == 1 + len(experiments.get("coupled_init").CLAIMS)
    assert all(r["verdict"] in experiments.VERDICTS for r in rows)

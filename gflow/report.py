"""``gflow report``: run every research setting and gather its verdict on each claim.

The research settings are the experiments that declare their paper's claims (``CLAIMS``,
``CITE`` and ``REPORT``, :mod:`gflow.experiments._claims`). At a level (``smoke``: the tests'
sizes, seconds each; ``quick``: each experiment's defaults; ``full``: its presets), the
report runs each of the module's ``REPORT[level]`` configurations as ``gflow run`` into
``DIR/runs/<experiment>[-<label>]`` (one subprocess each, so runs share no compiled state or
dtype setting), then writes

- ``DIR/index.md`` and ``DIR/index.html``: one row per claim: the claim with its citation,
  what was measured, the verdict (holds / does not hold / inconclusive) and why, and links to
  the run's figures, its results folder and the setting's notebook;
- ``DIR/report.json``: the same rows, the provenance (versions, device, dtype, git commit)
  and the wall time of every run.

A report is resumable as ``gflow run`` is: a finished run is kept, an interrupted one is
continued (``gflow run --resume``), so a killed report picks up where it stopped. gflow only
writes into a folder that is empty or holds an earlier report, and replaces only the run
folders it wrote. A verdict of "does not hold" is a finding, not a failure; a run that fails
makes the report's exit code 1.
"""

from __future__ import annotations

import dataclasses
import html
import json
import subprocess
import sys
import time
from pathlib import Path

from . import experiments, io, provenance, resultsdir

__all__ = ["LEVELS", "gather", "plan", "run", "settings"]

LEVELS = ("smoke", "quick", "full")
_MARK = "report.json"


def settings() -> list[str]:
    """Names of the experiments that state verdicts on their paper's claims."""
    return [n for n in experiments.names() if hasattr(experiments.get(n), "CLAIMS")]


def plan(level: str, only=None) -> list[tuple[str, str, dict]]:
    """``(experiment, folder name, settings)`` of every run of ``level`` (of the settings
    ``only``, if given)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}.")
    unknown = sorted(set(only or ()) - set(settings()))
    if unknown:
        raise ValueError(f"--only: {unknown} are not research settings; they are {settings()}.")
    out = []
    for name in (n for n in settings() if not only or n in only):
        for label, sets in experiments.get(name).REPORT[level]:
            out.append((name, f"{name}-{label}" if label else name, dict(sets)))
    return out


def _recorded(folder: Path) -> dict | None:
    """The folder's ``config.json`` (:func:`gflow.provenance.read_config`), None if unreadable."""
    try:
        return provenance.read_config(folder)
    except (OSError, ValueError):
        return None


def _wanted(folder: Path, name: str, sets: dict) -> bool:
    """Whether the run recorded in ``folder`` has the settings the plan asks for."""
    rec = _recorded(folder)
    if rec is None or rec.get("experiment") != name or rec.get("sweep"):
        return False
    want = experiments.config_from_dict(experiments.get(name).Config, sets)
    return rec.get("settings") == json.loads(json.dumps(dataclasses.asdict(want)))


def _command(cli: list[str], name: str, folder: Path, sets: dict) -> list[str]:
    """The ``gflow run`` of one planned run: continue it or (re)start it."""
    gflow = [*cli, "run", "--quiet"]
    status = resultsdir.status(folder)
    if status is not None and status.startswith("interrupted") and _wanted(folder, name, sets):
        return [*gflow, "--resume", str(folder)]
    sets_args = [a for k, v in sets.items() for a in ("--set", f"{k}={_text(v)}")]
    again = ["--overwrite"] if folder.exists() else []
    return [*gflow, name, "--out", str(folder), *again, *sets_args]


def _text(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, list | tuple) else str(v)


def _check_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file, not a folder.")
    if out.is_dir() and any(out.iterdir()) and not (out / _MARK).exists():
        raise ValueError(f"--out {str(out)!r} is not empty and holds no gflow report; "
                         "choose an empty or new folder.")


def run(out, level: str = "quick", *, only=None, progress: bool = True, cli=None) -> int:
    """Run (or continue) the report of ``level`` (of the settings ``only``, if given) in
    ``out``; 0 if every run finished, 1 if one failed (its row says so). Returns the exit
    code ``gflow report`` gives. ``cli``: the command line of gflow's CLI each run is
    given to (default ``python -m gflow.cli`` of this interpreter)."""
    cli = list(cli or [sys.executable, "-m", "gflow.cli"])
    out, runs = Path(out), plan(level, only)
    _check_folder(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    if not (out / _MARK).exists():
        io.write_json(out / _MARK, {"level": level, "rows": [], "status": "running"})
    walls, failed = {}, []
    for i, (name, folder, sets) in enumerate(runs):
        d = out / "runs" / folder
        if resultsdir.status(d) == "completed" and _wanted(d, name, sets):
            walls[folder] = "kept from an earlier report"
            continue
        if progress:
            print(f"[{i + 1}/{len(runs)}] {folder} ...", flush=True)
        t0 = time.perf_counter()
        done = subprocess.run(_command(cli, name, d, sets), capture_output=True, text=True)
        walls[folder] = round(time.perf_counter() - t0, 1)
        if done.returncode != 0:
            failed.append(folder)
            err = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
            print(f"gflow: error: {folder} failed: {err}", file=sys.stderr, flush=True)
    rows = gather(out, runs)
    meta = {"level": level, "status": "failed: " + ", ".join(failed) if failed else "completed",
            "wall_time_s": walls, "provenance": provenance.collect(), "rows": rows}
    io.write_json(out / _MARK, meta)
    _write_markdown(out / "index.md", meta)
    _write_html(out / "index.html", meta)
    if progress:
        print(f"report in {out / 'index.md'} and {out / 'index.html'}")
    return 1 if failed else 0


def gather(out, runs) -> list[dict]:
    """One row per claim of every planned run, read from its ``summary.json``."""
    rows = []
    for name, folder, sets in runs:
        mod, d = experiments.get(name), Path(out) / "runs" / folder
        summary = json.loads((d / "summary.json").read_text()) if resultsdir.status(d) else {}
        verdicts = summary.get("claims") or {}
        figs = sorted(p.name for p in d.glob("*.png")) if d.is_dir() else []
        nb = f"notebooks/{name}.py"
        for cid, text in mod.CLAIMS.items():
            status = summary.get("status") or "no results"
            v = verdicts.get(cid) or {"verdict": "not run", "measured": "", "why": (
                "not measured with these settings" if status == "completed" else status)}
            rows.append({"setting": name, "run": folder, "settings": sets, "claim_id": cid,
                         "claim": text, "cite": mod.CITE, **v, "figures": figs,
                         "results": f"runs/{folder}", "notebook": nb,
                         "wall_time_s": summary.get("wall_time_s")})
    return rows


_HEAD = ("setting (run)", "claim", "measured", "verdict", "why", "figures")


def _cells(r: dict, link) -> list[str]:
    figs = " ".join(link(f"{r['results']}/{f}", f.removesuffix(".png")) for f in r["figures"])
    return [f"{r['setting']} ({link(r['results'], r['run'])}, notebook {r['notebook']})",
            f"{r['claim']} [{r['cite']}]", r["measured"], r["verdict"], r["why"], figs]


def _write_markdown(path: Path, meta: dict) -> None:
    def esc(s) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    prov = meta["provenance"]
    lines = [f"# gflow report ({meta['level']})", "",
             f"Status: {meta['status']}. gflow {prov['versions'].get('gflow')}, jax "
             f"{prov['versions'].get('jax')}, {prov.get('backend')} {prov.get('device_kind')}, "
             f"commit {(prov.get('gflow_git') or {}).get('commit', 'unknown')}, "
             f"{prov.get('date_utc')}.", "",
             "| " + " | ".join(_HEAD) + " |", "|" + "---|" * len(_HEAD)]
    lines += ["| " + " | ".join(esc(c) for c in _cells(r, lambda u, t: f"[{t}]({u})")) + " |"
              for r in meta["rows"]]
    lines += ["", "Wall time per run (s): " + ", ".join(
        f"{k}: {v}" for k, v in meta["wall_time_s"].items())]
    with io.atomic_path(path, ".md") as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")


def _write_html(path: Path, meta: dict) -> None:
    def link(u, t):
        return f'<a href="{html.escape(u)}">{html.escape(t)}</a>'

    def cell(c: str, r: dict, k: int) -> str:
        cls = f' class="{r["verdict"].replace(" ", "-")}"' if k == 3 else ""
        return f"<td{cls}>{c if k in (0, 5) else html.escape(c)}</td>"

    rows = "\n".join("<tr>" + "".join(cell(c, r, k) for k, c in enumerate(_cells(r, link)))
                     + "</tr>" for r in meta["rows"])
    head = "".join(f"<th>{h}</th>" for h in _HEAD)
    style = ("td,th{border:1px solid #ccc;padding:4px;vertical-align:top}"
             ".holds{background:#dfd}.does-not-hold{background:#fdd}"
             ".inconclusive{background:#ffd}")
    text = (f"<!doctype html><html><head><meta charset='utf-8'><title>gflow report</title>"
            f"<style>{style}</style></head><body><h1>gflow report ({meta['level']})</h1>"
            f"<p>Status: {html.escape(meta['status'])}</p><table><tr>{head}</tr>\n{rows}"
            f"</table><pre>{html.escape(json.dumps(meta['provenance'], indent=1))}</pre>"
            "</body></html>\n")
    with io.atomic_path(path, ".html") as tmp:
        Path(tmp).write_text(text)

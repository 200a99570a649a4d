"""What `gflow run` does to the files already in its results folder: it never deletes or
overwrites a file it did not write, takes a lock, cleans up its own leftovers and creates
files with the umask's permissions.

Most tests run the real CLI in this process with the experiment replaced by a cheap
stand-in (fake_experiment.py): they are about the folder, not the numerics.
"""

import json
import os
import stat
import subprocess
import sys
import time

import fake_experiment
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gflow import cli, resultsdir, statefile

TINY = ["--set", "n=40", "--set", "width=8", "--set", "t1=5", "--set", "n_save=6",
        "--set", "d=4"]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


@pytest.fixture
def fake(monkeypatch):
    fake_experiment.install(monkeypatch, figures=True)


def _run(*args):
    return cli.main(["run", "quickstart", "--quiet", *TINY, *args])


def _snapshot(root):
    """Every file under ``root`` with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _user_files(root):
    files = {"notes.txt": "mine", "parts/mydata.json": "{}",
             "checkpoints/thesis/chapter1.tex": "x", "checkpoints/call_0000.txt": "keep",
             ".hidden": "mine too", "mine.png": "not a figure of gflow"}
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return files


def test_foreign_folder_refused_before_anything_is_written(tmp_path):
    # the reported data loss: a bad setting and a folder of the user's own files
    out = tmp_path / "X"
    _user_files(out)
    before = _snapshot(out)
    r = subprocess.run([sys.executable, "-m", "gflow.cli", "run", "quickstart", "--set",
                        "width=0", "--out", str(out)], capture_output=True, text=True, env=ENV)
    assert r.returncode == 2 and r.stderr.startswith("gflow: error: ")
    assert "not a gflow results folder" in r.stderr and "Traceback" not in r.stderr
    assert _snapshot(out) == before  # nothing removed, changed or added (not even a lock)


def test_bad_setting_writes_nothing(tmp_path, fake, capsys):
    out = tmp_path / "new"
    assert _run("--out", str(out), "--set", "t1=nan") == 2
    assert "t1" in capsys.readouterr().err and not out.exists()


def test_results_need_overwrite_or_resume(tmp_path, fake, capsys):
    out = tmp_path / "r"
    assert _run("--out", str(out)) == 0
    assert json.loads((out / "summary.json").read_text())["figures"] == ["loss.png"]
    before = _snapshot(out)
    assert _run("--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "--resume" in err
    assert _snapshot(out) == before
    assert _run("--out", str(out), "--overwrite", "--set", "seed=3") == 0
    assert json.loads((out / "config.json").read_text())["settings"]["seed"] == 3
    # an interrupted run's checkpoints count as results too
    ck = tmp_path / "ck"
    assert _run("--out", str(ck)) == 0
    (ck / "summary.json").write_text('{"status": "interrupted: KeyboardInterrupt: "}')
    (ck / "trajectory.nc").unlink()
    (ck / "loss.png").unlink()
    statefile.write(ck / "checkpoints" / "call_0000.npz", {"fingerprint": np.asarray("f")})
    assert _run("--out", str(ck)) == 2
    assert (ck / "checkpoints" / "call_0000.npz").exists()


def test_overwrite_and_resume_remove_only_gflow_files(tmp_path, fake):
    out = tmp_path / "g"
    assert _run("--out", str(out)) == 0
    user = _user_files(out)
    for flags in (["--overwrite"], ["--overwrite", "--seeds", "2"]):
        assert _run("--out", str(out), *flags) == 0
        for name, text in user.items():
            assert (out / name).read_text() == text, name
    # the sweep's figures replaced the single run's (recorded in summary.json)
    assert not (out / "loss.png").exists() and (out / "loss_seed1.png").exists()
    assert (out / "parts" / "mydata.json").exists()  # parts/ keeps what is not gflow's


def test_second_run_is_refused_while_the_first_holds_the_lock(tmp_path, fake, capsys):
    out = tmp_path / "l"
    out.mkdir()
    with resultsdir.locked(out):  # as a running gflow holds it
        assert _run("--out", str(out)) == 2
        err = capsys.readouterr().err
        assert f"in use by gflow process {os.getpid()}" in err
    assert _run("--out", str(out)) == 0 and not (out / resultsdir.LOCK).exists()


def test_concurrent_cli_runs(tmp_path):
    # two real processes on one folder: the second is refused while the first runs
    out = tmp_path / "c"
    first = subprocess.Popen([sys.executable, "-c", fake_experiment.DRIVER, "run", "quickstart",
                              "--out", str(out), "--quiet", "--seeds", "2", *TINY], env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        while not (out / "parts" / "00000.json").exists():  # the slow second point runs
            assert first.poll() is None, first.communicate()
            assert time.monotonic() - t0 < 60
            time.sleep(0.1)
        r = subprocess.run([sys.executable, "-m", "gflow.cli", "run", "quickstart", "--out",
                            str(out), "--overwrite", *TINY], capture_output=True, text=True,
                           env=ENV)
        assert r.returncode == 2, r.stderr
        assert f"in use by gflow process {first.pid}" in r.stderr
        assert (out / "parts" / "00000.json").exists()  # the first run's work is intact
    finally:
        first.kill()
        first.communicate()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, fake):
    out = tmp_path / "s"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / resultsdir.LOCK).write_text(json.dumps({"pid": dead.pid, "host": "h"}))
    assert _run("--out", str(out)) == 0 and not (out / resultsdir.LOCK).exists()


def test_resume_removes_leftovers_of_killed_writes(tmp_path, fake, monkeypatch):
    from gflow.experiments import quickstart

    out = tmp_path / "t"
    real = quickstart.run

    def interrupted(cfg, *, progress=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(quickstart, "run", interrupted)
    assert _run("--out", str(out)) == 130
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"].startswith("interrupted") and "--resume" in summary["resume"]
    leftovers = [out / ".trajectory.nc.abcd1234.nc", out / ".loss.png.x1y2z3_4.png",
                 out / "parts" / ".00000.nc.q1w2e3r4.nc",
                 out / "checkpoints" / ".call_0000.npz.a1b2c3d4.npz"]
    for p in leftovers:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half")
    keep = [out / ".mine.txt", out / ".trajectory.nc.notours"]
    for p in keep:
        p.write_text("user")
    monkeypatch.setattr(quickstart, "run", real)
    assert cli.main(["run", "--resume", str(out), "--quiet"]) == 0
    assert not [p for p in leftovers if p.exists()] and all(p.exists() for p in keep)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_honour_the_umask(tmp_path, fake, umask):
    old = os.umask(umask)
    try:
        out = tmp_path / "u"
        assert _run("--out", str(out)) == 0
        statefile.write(out / "c.npz", {"fingerprint": np.asarray("f")})
    finally:
        os.umask(old)
    for name in ("config.json", "summary.json", "trajectory.nc", "loss.png", "c.npz"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o666 & ~umask, name


# -- property: whatever is in the folder, gflow removes nothing it did not write ---------

_GFLOW_NAMES = ["summary.json", "trajectory.nc", "loss.png", "parts/00000.nc",
                "parts/00000.json", "checkpoints/call_0000.npz",
                "checkpoints/point_00000/call_0000/chunk_00000.npz",
                ".trajectory.nc.abcdefgh.nc"]
_USER_NAMES = ["a.txt", "parts/x.json", "checkpoints/thesis/ch1.tex", "checkpoints/call_0001",
               "parts/00000.txt", "sub/summary.json", ".hidden", "png.png", "config.json.bak",
               "checkpoints/point_00000/notes"]
_CONFIG = st.sampled_from([None, "gflow", "{}", "not json", '{"experiment": "quickstart"}'])


@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(config=_CONFIG, gflow_files=st.sets(st.sampled_from(_GFLOW_NAMES)),
       user_files=st.sets(st.sampled_from(_USER_NAMES)),
       flags=st.sampled_from([[], ["--overwrite"], ["--resume"], ["--seeds", "2"]]))
def test_run_never_removes_a_file_it_did_not_write(tmp_path_factory, config, gflow_files,
                                                  user_files, flags):
    from gflow.experiments import quickstart

    out = tmp_path_factory.mktemp("prop") / "out"
    out.mkdir()
    if config == "gflow":
        (out / "config.json").write_text(json.dumps(
            {"experiment": "quickstart", "settings": {"width": 8}, "provenance": {}}))
    elif config is not None:
        (out / "config.json").write_text(config)
    for name in [*gflow_files, *user_files]:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(name)
    before = _snapshot(out)
    saved = quickstart.run, quickstart.figures
    exec(fake_experiment.FAKE, {})
    try:
        args = ["--resume", str(out)] if flags == ["--resume"] else ["quickstart", "--out",
                                                                     str(out), *flags, *TINY]
        code = cli.main(["run", *args, "--quiet", "--force"] if flags == ["--resume"]
                        else ["run", *args, "--quiet"])
    except Exception:  # noqa: BLE001 - a failed run may raise; the files are what matters
        code = None
    finally:
        quickstart.run, quickstart.figures = saved
    after = _snapshot(out)
    gflows = config == "gflow"
    if not gflows and (gflow_files or user_files or config is not None):
        assert code == 2 and after == before  # a folder that is not gflow's: untouched
    for name in user_files:  # files that are not gflow's: never removed or changed
        assert after.get(name) == before[name], (name, code)

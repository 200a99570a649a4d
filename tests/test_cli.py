import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_results_layout

from gflow import cli, experiments, io

SMALL = ["--set", "n=40", "--set", "width=16", "--set", "t1=20", "--set", "n_save=12"]


def test_run_quickstart_writes_results(tmp_path, capsys):
    out = tmp_path / "qs"
    assert cli.main(["run", "quickstart", "--out", str(out), "--quiet", *SMALL]) == 0
    for f in ("config.json", "summary.json", "trajectory.nc", "loss.png", "weight_movement.png"):
        assert (out / f).exists(), f
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    summary = json.loads((out / "summary.json").read_text())
    # paired init: f = 0 exactly in exact arithmetic; in float32 the width-16 sum is 0 up to
    # (m - 1) eps sum_j |t_j| ~ 1e-5 for O(1) terms, 0.0 where XLA adds the pairs symmetrically
    assert 0.0 <= summary["init_output_max_abs_paired"] < 1e-4
    assert summary["status_gf_gaussian"] == "completed"
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["width"] == 16 and config["settings"]["seed"] == 0
    tree = io.read_trajectory(out)
    assert list(tree.children) == ["gf", "gd", "sgd"]  # one group per dynamics
    for g in tree.children.values():
        assert g["loss"].dims == ("init", "time")
        loss = g["loss"].values
        assert np.all(np.isfinite(loss)) and np.all(loss[..., -1] < loss[..., 0])
    # GD at lr=0.1 tracks GF closely on this time axis (both saved at the same times)
    np.testing.assert_array_equal(tree["gd"]["time"], tree["gf"]["time"])
    assert summary["gd_gf_max_rel_loss_gap_gaussian"] < 0.05
    assert_results_layout(experiments.Result(summary, tree), tmp_path / "again")
    (out / "loss.png").unlink()
    assert cli.main(["plot", str(out)]) == 0 and (out / "loss.png").exists()


def test_seed_changes_result(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    cli.main(["run", "quickstart", "--out", str(a), "--quiet", *SMALL])
    cli.main(["run", "quickstart", "--out", str(b), "--quiet", *SMALL, "--set", "seed=3"])
    sa = json.loads((a / "summary.json").read_text())
    sb = json.loads((b / "summary.json").read_text())
    assert sa["final_loss_gf_gaussian"] != sb["final_loss_gf_gaussian"]


def test_list_shows_settings(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "quickstart" in out and "seed = 0" in out and "width = 256" in out


@pytest.mark.parametrize("args, match", [
    (["run", "nope"], "unknown experiment"),
    (["run", "quickstart", "--set", "widht=3"], "valid settings"),
    (["run", "quickstart", "--set", "width=abc"], "expected a int"),
    (["run", "quickstart", "--set", "width"], "key=value"),
])
def test_bad_cli_input(args, match, capsys, tmp_path):
    assert cli.main([*args, "--out", str(tmp_path)] if args[1] != "nope" else args) == 2
    assert match in capsys.readouterr().err


@pytest.mark.slow  # ~30 s: the installed console script, float64, in a subprocess
def test_console_script_x64(tmp_path):
    out = tmp_path / "x"
    r = subprocess.run([sys.executable, "-m", "gflow.cli", "run", "quickstart", "--x64",
                        "--quiet", "--out", str(out), *SMALL], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert io.read_trajectory(out)["gf"]["loss"].dtype == np.float64


def test_every_experiment_has_seed_and_api():
    for name in experiments.names():
        mod = experiments.get(name)
        assert "seed" in mod.Config.__dataclass_fields__, name
        assert callable(mod.run) and callable(mod.figures), name


@pytest.mark.slow  # a CLI sweep is rerun in the default suite by test_reliability
def test_cli_sweep_seeds_and_list_settings(tmp_path):
    out = tmp_path / "sw"
    assert cli.main(["run", "quickstart", "--out", str(out), "--quiet", "--seeds", "2",
                     "--set", "width=8,16", "--set", "n=40", "--set", "t1=5",
                     "--set", "n_save=6"]) == 0
    ds = io.read_trajectory(out)["gf"]
    assert ds["loss"].dims[:2] == ("seed", "width") and ds["loss"].shape[:2] == (2, 2)
    assert list(ds["seed"].values) == [0, 1] and list(ds["width"].values) == [8, 16]
    # the width-8 points have no neurons 8..15: NaN-padded, not zero, and masked
    w = ds["params0_W"].sel(seed=0, width=8).values
    assert np.all(np.isnan(w[..., 8:, :])) and np.all(np.isfinite(w[..., :8, :]))
    assert ds["neuron_valid"].sel(seed=0, width=8).values.tolist() == [True] * 8 + [False] * 8
    assert ds["neuron_valid"].sel(seed=1, width=16).values.all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sweep"] == {"seed": [0, 1], "width": [8, 16]}
    assert np.shape(summary["final_loss_gf_gaussian"]) == (2, 2)
    assert not (out / "parts").exists()
    assert cli.main(["plot", str(out)]) == 0
    assert (out / "loss_seed1_width16.png").exists()
    assert "sweep_summary.png" in json.loads((out / "summary.json").read_text())["figures"]


def test_sweep_summary_figure_over_the_swept_setting():
    from gflow import plot

    summary = {"sweep": {"seed": [0, 1], "width": [8, 16, 32]}, "status": "completed",
               "final_loss": [[1.0, 0.5, 0.25], [1.1, 0.6, None]], "name": [["a"] * 3] * 2,
               "curve": [[[1.0, 2.0]] * 3] * 2}
    figs = plot.sweep_summary(summary)
    (ax,) = [a for a in figs["sweep_summary"].axes if a.get_visible()]
    assert ax.get_title() == "final_loss" and ax.get_xlabel() == "width"  # one number per point
    ys = [line.get_ydata() for line in ax.get_lines()]  # one line per seed, NaN where missing
    np.testing.assert_array_equal(ys[0], [1.0, 0.5, 0.25])
    assert np.isnan(ys[1][2]) and [t.get_text() for t in ax.get_legend().get_texts()] == [
        "seed 0", "seed 1"]
    assert plot.sweep_summary({"sweep": {"seed": [0, 1]}, "final_loss": [1.0, 2.0]}) == {}


# -- bad command-line input: `gflow: error: ...` naming the setting, exit code 2 ----------

ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def _gflow(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "gflow.cli", *args], capture_output=True,
                          text=True, env=ENV, cwd=cwd)


def _refused(r, *words):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert r.stderr.startswith("gflow: error: ") and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in r.stderr, (w, r.stderr)


@pytest.mark.parametrize("sets, words", [
    (["t1=inf"], ["t1", "finite"]),
    (["t1=nan"], ["t1", "finite"]),
    (["width=,,"], ["width", "no values"]),
    (["width=8,8"], ["width", "twice"]),
    (["batch_size=50", "n=40"], ["batch_size", "n=40"]),
    (["width=100000000000000000000000000000"], ["width", "range"]),
])
def test_bad_settings_on_the_command_line(tmp_path, sets, words):
    out = tmp_path / "o"
    r = _gflow("run", "quickstart", "--out", str(out), *(x for s in sets for x in ("--set", s)))
    _refused(r, *words)
    assert not out.exists()  # refused before anything is written


def test_seed_sweep_and_seeds_exclude_each_other(tmp_path):
    _refused(_gflow("run", "quickstart", "--out", str(tmp_path / "o"), "--set", "seed=5,6",
                    "--seeds", "3"), "--seeds")


@pytest.mark.parametrize("text, words", [
    ('{"experiment": "quickstart", "setings": {"width": 8}}', ["'setings'", "valid keys"]),
    ('{"experiment": "quickstart", "settings": {"t1": 1e999}}', ["t1", "finite"]),
    ('{"experiment": "quickstart", "settings": {"width": 1e29}}', ["width", "expected a int"]),
    ('{"experiment": "quickstart", "settings": {"width": 100000000000000000000000000000}}',
     ["width", "range"]),
    ('{"experiment": "quickstart", "sweep": {"width": [8, 8]}}', ["width", "twice"]),
    ("[" * 100_000 + "]" * 100_000, ["nested too deeply"]),
])
def test_bad_config_files_on_the_command_line(tmp_path, text, words):
    cfg = tmp_path / "c.json"
    cfg.write_text(text)
    _refused(_gflow("run", "--config", str(cfg), "--out", str(tmp_path / "o")), *words)
    assert not (tmp_path / "o").exists()


def test_out_that_cannot_be_a_folder(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    _refused(_gflow("run", "quickstart", "--out", str(f)), "is a file")
    _refused(_gflow("run", "quickstart", "--out", str(f / "sub")), "inside", "which is a file")
    assert f.read_text() == "x"


def test_out_on_a_read_only_file_system(tmp_path, monkeypatch, capsys):
    # no read-only mount to be had in a test (and root ignores permission bits): the file
    # system's answer, EROFS, is what gflow sees in both checks it makes
    import errno

    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    assert cli.main(["run", "quickstart", "--out", str(tmp_path / "ro")]) == 2
    assert "not writable" in capsys.readouterr().err

    def erofs(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.undo()
    monkeypatch.setattr(Path, "mkdir", erofs)
    assert cli.main(["run", "quickstart", "--out", str(tmp_path / "ro")]) == 2
    assert "Read-only file system" in capsys.readouterr().err


def test_plot_on_what_is_not_a_results_folder(tmp_path):
    _refused(_gflow("plot", str(tmp_path / "missing")), "not a folder")
    (tmp_path / "empty").mkdir()
    _refused(_gflow("plot", str(tmp_path / "empty")), "config.json", "does not exist")
    done = tmp_path / "done"
    assert cli.main(["run", "quickstart", "--out", str(done), "--quiet", *SMALL]) == 0
    (tmp_path / "nosummary").mkdir()
    (tmp_path / "nosummary" / "config.json").write_bytes((done / "config.json").read_bytes())
    _refused(_gflow("plot", str(tmp_path / "nosummary")), "summary.json", "does not exist")
    nc = done / "trajectory.nc"
    nc.write_bytes(nc.read_bytes()[:1000])  # truncated
    _refused(_gflow("plot", str(done)), "trajectory.nc", "unreadable")


# -- help and plot output ------------------------------------------------------------------


def test_help_is_fast_and_says_what_gflow_does():
    t0 = time.perf_counter()
    r = _gflow("--help")
    took = time.perf_counter() - t0
    assert r.returncode == 0
    for word in ("gradient flow", "run", "list", "plot"):
        assert word in r.stdout
    assert "``" not in r.stdout  # plain text, not reStructuredText
    # without jax: start-up of Python and argparse only (about 0.3 s; jax alone takes 2-3 s
    # here). Asserted directly, not by timing, on a busy machine:
    probe = subprocess.run([sys.executable, "-c", "import sys, gflow.cli\n"
                            "try:\n    gflow.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
                            "print('jax' in sys.modules)"], capture_output=True, text=True,
                           env=ENV)
    assert probe.stdout.strip().endswith("False"), probe.stdout
    assert took < 30
    r = _gflow("plot", "-h")
    assert r.returncode == 0 and "Redraw the figures" in r.stdout


def test_plot_prints_what_it_wrote(tmp_path, capsys):
    out = tmp_path / "p"
    assert cli.main(["run", "quickstart", "--out", str(out), "--quiet", *SMALL]) == 0
    capsys.readouterr()
    assert cli.main(["plot", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert str(out / "loss.png") in printed and str(out / "weight_movement.png") in printed


def test_ctrl_c_during_the_first_compile(tmp_path):
    # SIGINT while XLA compiles the first program: a clean exit with the resume hint
    out = tmp_path / "i"
    proc = subprocess.Popen([sys.executable, "-m", "gflow.cli", "run", "quickstart", "--out",
                             str(out), *SMALL], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while not (out / "config.json").exists():  # written just before the experiment starts
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < 60
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and f"gflow run --resume {out}" in err, err[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"].startswith("interrupted: KeyboardInterrupt")
    assert summary["resume"] == f"gflow run --resume {out}"
    assert cli.main(["run", "--resume", str(out), "--quiet"]) == 0


def test_importing_gflow_keeps_the_callers_backend():
    """A notebook's inline backend survives ``import gflow`` and the figure scaffolds (the
    library sets no backend; the command line chooses Agg for itself)."""
    code = ("import matplotlib\nmatplotlib.use('svg')\nimport gflow, gflow.plot\n"
            "gflow.TwoLayer\nprint(matplotlib.get_backend())")
    env = {k: v for k, v in ENV.items() if k != "MPLBACKEND"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().lower() == "svg"


def test_stop_exceptions_swallowed_in_gc_callbacks_are_not_printed(capsys, monkeypatch):
    """Ctrl-C landing in jax's gc callback: Python swallows the KeyboardInterrupt (the
    re-sent signal delivers it again) and would print "Exception ignored" with a traceback;
    the command line's unraisable hook drops that one, and prints any other."""

    class Boom:
        def __init__(self, exc):
            self.exc = exc

        def __del__(self):
            raise self.exc

    monkeypatch.setattr(sys, "unraisablehook", cli._quiet_unraisable)
    Boom(KeyboardInterrupt())  # dropped at once: __del__ raises into the hook
    Boom(cli.Terminated("terminated by SIGTERM"))
    assert capsys.readouterr().err == ""
    Boom(ValueError("a real problem"))
    assert "a real problem" in capsys.readouterr().err

"""Reliability of results folders: provenance, re-runs from a recorded config, safe config
parsing, a clear status after a failure or SIGTERM/SIGKILL, and resuming a sweep."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from fake_experiment import DRIVER, FAKE
from helpers import assert_same_results

from gflow import cli, provenance

TINY = ["--set", "n=40", "--set", "width=8", "--set", "t1=5", "--set", "n_save=6",
        "--set", "d=4"]


def _run(*args):
    return cli.main(["run", *args, "--quiet"])


def _summary(out):
    return json.loads((out / "summary.json").read_text())


def _no_temp_files(out):
    # the lock file stays only after SIGKILL (unlocked then: the kernel drops a dead
    # process's flock)
    return not [p for p in out.rglob(".*") if p.name != ".gflow.lock"]


def _same_data(a, b):
    assert_same_results(a, b)  # bitwise: same machine, same dtype, same settings and seed


def test_provenance_recorded(tmp_path):
    out = tmp_path / "a"
    assert _run("quickstart", "--out", str(out), *TINY, "--set", "seed=5") == 0
    config = json.loads((out / "config.json").read_text())
    prov = config["provenance"]
    assert set(prov["versions"]) == set(provenance.PACKAGES)
    assert all(isinstance(v, str) and v for v in prov["versions"].values()), prov["versions"]
    assert prov["dtype"] in ("float32", "float64") and isinstance(prov["x64"], bool)
    assert prov["device_kind"] and prov["backend"]
    assert prov["command"][:3] == ["gflow", "run", "quickstart"] and "seed=5" in prov["command"]
    assert prov["date_utc"].startswith("20")
    git = prov["gflow_git"]  # None when gflow is installed from a wheel
    assert git is None or (len(git["commit"]) == 40 and isinstance(git["dirty"], bool))
    assert config["seed"] == 5 and config["settings"]["seed"] == 5
    assert config["settings"]["width"] == 8 and config["experiment"] == "quickstart"
    assert _summary(out)["status"] == "completed"


def test_rerun_from_config_is_identical(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _run("quickstart", "--out", str(a), *TINY, "--set", "seed=2") == 0
    assert _run("--config", str(a / "config.json"), "--out", str(b)) == 0
    ca, cb = (json.loads((p / "config.json").read_text()) for p in (a, b))
    assert ca["settings"] == cb["settings"] and cb["provenance"]["rerun_of"] == ca["provenance"]
    sa, sb = _summary(a), _summary(b)
    sa.pop("wall_time_s"), sb.pop("wall_time_s")
    assert sa == sb
    _same_data(a, b)


@pytest.mark.slow  # ~18 s; a single run re-run from its config: test_rerun_from_config_is_identical
def test_rerun_sweep_from_config_and_toml(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert _run("quickstart", "--out", str(a), *TINY, "--seeds", "2") == 0
    assert _run("--config", str(a), "--out", str(b)) == 0  # a folder means its config.json
    assert json.loads((b / "config.json").read_text())["sweep"] == {"seed": [0, 1]}
    _same_data(a, b)
    toml = tmp_path / "run.toml"
    toml.write_text(textwrap.dedent("""
        experiment = "quickstart"
        [settings]
        n = 40
        width = 8
        t1 = 5          # an int where the setting is a float is fine
        n_save = 6
        d = 4
        [sweep]
        seed = [0, 1]
    """))
    assert _run("--config", str(toml), "--out", str(c)) == 0
    _same_data(a, c)


@pytest.mark.parametrize("text, match", [
    ("{not json", "not valid JSON"),
    ('{"settings": {}}', "'experiment' name"),
    ('{"experiment": "quickstart", "settings": {"widht": 3}}', "valid settings"),
    ('{"experiment": "quickstart", "settings": {"width": "__import__(\'os\')"}}',
     "expected a int"),
    ('{"experiment": "quickstart", "settings": {"width": 2.5}}', "expected a int"),
    ('{"experiment": "quickstart", "sweep": {"seed": []}}', "non-empty list"),
    ('{"experiment": "quickstart", "x64": "yes"}', "'x64' must be true or false"),
])
def test_bad_config_files(tmp_path, capsys, text, match):
    path = tmp_path / "config.json"
    path.write_text(text)
    assert _run("--config", str(path), "--out", str(tmp_path / "o")) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_config_and_set_are_exclusive(tmp_path, capsys):
    assert _run("quickstart", "--config", "x.json") == 2
    assert "exactly one of" in capsys.readouterr().err
    (tmp_path / "c.json").write_text('{"experiment": "quickstart"}')
    assert _run("--config", str(tmp_path / "c.json"), "--set", "n=3") == 2
    assert "cannot be combined" in capsys.readouterr().err


def _gflow_folder(out, **files):
    """A results folder as gflow run leaves it (its config.json), with ``files``."""
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(
        {"experiment": "quickstart", "settings": {}, "provenance": {"command": ["gflow"]}}))
    for name, text in files.items():
        (out / name).write_text(text)
    return out


def test_failure_inside_run_records_status(tmp_path, monkeypatch, capsys):
    from gflow.experiments import quickstart

    # a stale result of an earlier run in the same folder must not survive a failed re-run
    out = _gflow_folder(tmp_path / "f", **{"trajectory.nc": "stale"})

    def boom(cfg, *, progress=False):
        raise RuntimeError("boom in run")

    monkeypatch.setattr(quickstart, "run", boom)
    assert _run("quickstart", "--out", str(out), *TINY) == 2  # results there: refused
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "trajectory.nc").read_text() == "stale"
    with pytest.raises(RuntimeError, match="boom"):
        _run("quickstart", "--out", str(out), *TINY, "--overwrite")
    s = _summary(out)
    assert s["status"] == "failed: RuntimeError: boom in run"
    assert not (out / "trajectory.nc").exists() and _no_temp_files(out)
    assert json.loads((out / "config.json").read_text())["settings"]["width"] == 8


def test_bad_setting_raising_inside_run(tmp_path, capsys):
    out = tmp_path / "bad"
    # lr < 0 passes the CLI's type check and fails inside run (GD validates lr)
    assert _run("quickstart", "--out", str(out), *TINY, "--set", "lr=-1") == 2
    assert "lr must be" in capsys.readouterr().err
    assert _summary(out)["status"].startswith("failed: ValueError: ")
    assert not (out / "trajectory.nc").exists() and _no_temp_files(out)


# A sweep driven through the real CLI in a subprocess, with the experiment replaced by a
# cheap deterministic stand-in (fake_experiment.py)
_FAKE, _DRIVER = FAKE, DRIVER


def _start(args, tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, "-c", _DRIVER, *args], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path, proc, timeout=60.0):
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, "the first sweep point never finished"
        time.sleep(0.1)
    time.sleep(0.3)  # let it enter the next point


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_sweep_resumes_identically(tmp_path, sig, monkeypatch):
    from gflow.experiments import quickstart

    # the same stand-in in this process; monkeypatch restores the real functions afterwards
    monkeypatch.setattr(quickstart, "run", quickstart.run)
    monkeypatch.setattr(quickstart, "figures", quickstart.figures)
    exec(_FAKE, {})
    ref, out = tmp_path / "ref", tmp_path / "out"
    sweep = [*TINY, "--seeds", "3", "--quiet"]
    assert cli.main(["run", "quickstart", "--out", str(ref), *sweep]) == 0
    proc = _start(["run", "quickstart", "--out", str(out), *sweep], tmp_path)
    _wait_for(out / "parts" / "00000.json", proc)
    proc.send_signal(sig)
    try:
        proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the run did not stop: {proc.communicate()[1][-3000:]}")
    assert not (out / "trajectory.nc").exists() and _no_temp_files(out)
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM
        s = _summary(out)
        assert s["status"].startswith("interrupted: Terminated")
        assert s["sweep_points_done"] == 1 and "--resume" in s["resume"]
    else:  # no chance to write anything: a missing summary.json marks the folder incomplete
        assert proc.returncode == -signal.SIGKILL and not (out / "summary.json").exists()
    assert (out / "parts" / "00000.nc").exists() and not (out / "parts" / "00001.json").exists()
    assert cli.main(["run", "--resume", str(out), "--quiet"]) == 0
    assert _summary(out)["status"] == "completed" and not (out / "parts").exists()
    prov = json.loads((out / "config.json").read_text())["provenance"]
    assert prov["command"][:3] == ["gflow", "run", "--resume"]
    assert prov["resumed_from"]["command"][:3] == ["gflow", "run", "quickstart"]
    before = (out / "summary.json").read_text()
    assert cli.main(["run", "--resume", str(out), "--quiet"]) == 0  # complete: left alone
    assert (out / "summary.json").read_text() == before
    _same_data(ref, out)
    sr, so = _summary(ref), _summary(out)
    sr.pop("wall_time_s"), so.pop("wall_time_s")
    assert sr == so


# -- memory guard ---------------------------------------------------------------------


def _mem_setup():
    import jax

    import gflow

    data = gflow.data.teacher(jax.random.key(0), 20, 3, 2)
    net = gflow.TwoLayer(8, "tanh", bias=True)
    return gflow, jax, data, net


def test_memory_estimate_by_hand(dtype):
    from gflow import checkpoint
    from gflow.objective import Objective
    from gflow.observe import ObsContext, Observer, resolve

    gflow, jax, data, net = _mem_setup()
    p0 = gflow.init.gaussian(jax.random.key(1), net, 3)
    obj = Objective(net, gflow.losses.get_loss("squared"), data.X, data.y)
    ctx = ObsContext(obj, p0, None, None, None)
    observer = Observer(resolve(("loss", "balancedness"), has_test=False, has_probes=False))
    b = 8 if dtype == "float64" else 4
    # loss: one scalar; balancedness: one value per neuron (m = 8)
    total, per = checkpoint.estimate_bytes(observer, p0, ctx, 30, members=5)
    assert per == (1 + 8) * b and total == 5 * 30 * per
    # a snapshot adds W (8 x 3), b (8) and a (8)
    _, per_p = checkpoint.estimate_bytes(observer, p0, ctx, 30, save_params=True)
    assert per_p == per + (24 + 8 + 8) * b


def test_memory_guard_refuses_and_can_be_overridden(monkeypatch):
    from gflow import checkpoint, footprint
    from gflow.objective import Objective

    gflow, jax, data, net = _mem_setup()
    p0 = gflow.init.gaussian(jax.random.key(1), net, 3)
    # what training one member needs besides its results (test_memory_guard_counts_the_net)
    w = footprint.working_bytes(Objective(net, "squared", data.X, data.y), p0, gflow.GD(0.1))
    kw = dict(dynamics=gflow.GD(0.1), t1=2.0, save=gflow.LinTimes(20), save_params=True)
    with checkpoint.memory_limit(1000 + w), pytest.raises(ValueError, match="fewer") as e:
        gflow.simulate(net, p0, data, **kw)
    assert "save_params" in str(e.value) and "GFLOW_MEMORY_LIMIT" in str(e.value)
    with checkpoint.memory_limit(None):
        assert gflow.simulate(net, p0, data, **kw).status == "completed"
    # ensembles: the estimate scales with the members; float32 loss only: 4 bytes per save,
    # held twice: 4 members x 20 saves -> 640 bytes > 600, 2 members -> 320 bytes fit,
    # besides what training needs per member (w)
    P = jax.vmap(lambda k: gflow.init.gaussian(k, net, 3))(jax.random.split(jax.random.key(2), 4))
    ens = dict(dynamics=gflow.GD(0.1), t1=2.0, save=gflow.LinTimes(20))
    w = footprint.working_bytes(Objective(net, "squared", data.X, data.y), p0, gflow.GD(0.1))
    monkeypatch.setenv("GFLOW_MEMORY_LIMIT", str(600 + 4 * w))
    with pytest.raises(ValueError, match=r"4 member\(s\) x 20 saves"):
        gflow.simulate_ensemble(net, P, data, **ens)
    half = jax.tree.map(lambda x: x[:2], P)
    assert list(gflow.simulate_ensemble(net, half, data, **ens).status) == ["completed"] * 2
    monkeypatch.setenv("GFLOW_MEMORY_LIMIT", "off")
    assert checkpoint.available_memory() is None
    monkeypatch.setenv("GFLOW_MEMORY_LIMIT", "lots")
    with pytest.raises(ValueError, match="GFLOW_MEMORY_LIMIT"):
        checkpoint.available_memory()
    monkeypatch.setenv("GFLOW_MEMORY_LIMIT", "2G")
    assert checkpoint.available_memory() == 2 * 2**30


def test_default_limit_is_available_memory():
    from gflow import checkpoint

    avail = checkpoint.available_memory()
    # this machine reports MemAvailable; a normal test run needs far less than all of it
    assert avail is None or 2**20 < avail < 2**50


# -- checkpointed runs ----------------------------------------------------------------------

_CKPT = """
import sys, time
import jax
import gflow
from gflow import checkpoint

def problem():
    net = gflow.TwoLayer(8, "tanh", bias=True)
    data = gflow.data.teacher(jax.random.key(0), 30, 3, 2)
    p0 = gflow.init.gaussian(jax.random.key(1), net, 3)
    return net, p0, data

KW = dict(every=2, t1=20.0, save=gflow.LinTimes(12), observe=("loss", "weight_movement"))

if __name__ == "__main__":
    _save = checkpoint._save_state
    def slow_save(path, state):  # announce each checkpoint, then give the test time to kill
        _save(path, state)
        print("saved", int(state["segment"]), flush=True)
        time.sleep(0.5)
    checkpoint._save_state = slow_save
    dyn = gflow.GradientFlow() if sys.argv[2] == "gf" else gflow.GD(0.05)
    checkpoint.simulate_resumable(sys.argv[1], *problem(), dynamics=dyn, **KW)
"""


# GF resumed bitwise is in the default suite through tests/test_gf_segments.py
@pytest.mark.parametrize("sig, dyn", [pytest.param(signal.SIGTERM, "gf", marks=pytest.mark.slow),
                                      (signal.SIGKILL, "gd")])
def test_killed_run_resumes_bitwise(tmp_path, sig, dyn):
    import gflow
    from gflow import checkpoint

    ns = {}
    exec(_CKPT, ns)
    dynamics = gflow.GradientFlow() if dyn == "gf" else gflow.GD(0.05)
    ref = checkpoint.simulate_resumable(tmp_path / "ref.npz", *ns["problem"](),
                                        dynamics=dynamics, **ns["KW"])
    assert not (tmp_path / "ref.npz").exists()  # removed once the run finished
    path = tmp_path / "run.npz"
    proc = subprocess.Popen([sys.executable, "-c", _CKPT, str(path), dyn],
                            env={**os.environ, "JAX_PLATFORMS": "cpu"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # kill once the third of six segments is on disk
        if line.strip() == "saved 3":
            proc.send_signal(sig)
            break
    proc.communicate(timeout=60)
    assert proc.returncode == -sig
    with np.load(path, allow_pickle=False) as z:
        assert int(z["segment"]) == 3 and z["obs_loss"].shape == (6,)
    got = checkpoint.simulate_resumable(path, *ns["problem"](), dynamics=dynamics, **ns["KW"])
    assert got.status == ref.status == "completed" and not path.exists()
    np.testing.assert_array_equal(got.times, ref.times)
    for k in ref.observables:
        np.testing.assert_array_equal(got[k], ref[k])
    for a, b in zip(jax_leaves(got.params_final), jax_leaves(ref.params_final), strict=True):
        np.testing.assert_array_equal(a, b)
    assert got.stats == ref.stats


def jax_leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_resumable_matches_simulate_and_checks_its_inputs(tmp_path):
    import gflow
    from gflow import checkpoint

    ns = {}
    exec(_CKPT, ns)
    net, p0, data = ns["problem"]()
    kw = dict(t1=20.0, save=gflow.LinTimes(12), observe=("loss", "weight_movement"))
    # GD with a constant lr: segments take exactly the same steps as one run
    seg = checkpoint.simulate_resumable(tmp_path / "a.npz", net, p0, data, every=5,
                                        dynamics=gflow.GD(0.05), **kw)
    one = gflow.simulate(net, p0, data, dynamics=gflow.GD(0.05), **kw)
    np.testing.assert_array_equal(seg["loss"], one["loss"])
    np.testing.assert_array_equal(seg.times, one.times)
    # (GF's segments, bitwise one solve, and stops inside a segment: test_gf_segments.py)
    with pytest.raises(ValueError, match="every must be"):
        checkpoint.simulate_resumable(tmp_path / "d.npz", net, p0, data, every=0, **kw)
    with pytest.raises(ValueError, match="every_seconds must be"):
        checkpoint.simulate_resumable(tmp_path / "d.npz", net, p0, data, every_seconds=-1, **kw)
    with pytest.raises(ValueError, match="give every="):
        checkpoint.simulate_resumable(tmp_path / "d.npz", net, p0, data, **kw)
    # a checkpoint of another run is refused, not silently continued
    checkpoint._save_state(tmp_path / "e.npz", {"fingerprint": np.asarray("other")})
    with pytest.raises(ValueError, match="different run"):
        checkpoint.simulate_resumable(tmp_path / "e.npz", net, p0, data, every=2, **kw)


def test_every_experiment_config_round_trips_through_json():
    # `gflow run --config` and `gflow plot` rebuild the Config from config.json
    import dataclasses

    from gflow import experiments, io

    for name in experiments.names():
        cls = experiments.get(name).Config
        text = json.dumps(io._jsonable(dataclasses.asdict(cls())))
        assert experiments.config_from_dict(cls, json.loads(text)) == cls(), name

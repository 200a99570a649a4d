"""Checkpointed runs: discrete dynamics (GD schedules, SGD, optax) in segments equal one
``simulate`` bitwise; wall-time-throttled writes do not change results; runs, ensembles and
``gflow run`` killed mid-way (SIGTERM, SIGKILL) in a subprocess resume bitwise."""

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
from helpers import assert_same_results, assert_same_run

import gflow
from gflow import checkpoint, cli

# Each test below builds its problem from this source, also run in a subprocess as a
# driver that is killed mid-way; the driver announces progress on stdout and stops at the
# line the test will kill it at (PAUSE_AT), so the kill lands at a known point.
_PROBLEM = """
import os, sys, time
import jax, optax
import gflow
from gflow import checkpoint

def event(line):
    print(line, flush=True)
    if line == os.environ.get("PAUSE_AT"):
        time.sleep(120)

def problem():
    net = gflow.TwoLayer(8, "tanh", bias=True)
    data = gflow.data.teacher(jax.random.key(0), 30, 3, 2)
    p0 = gflow.init.gaussian(jax.random.key(1), net, 3)
    return net, p0, data

def dynamics(name):
    return {"gd_schedule": gflow.GD(optax.linear_schedule(0.1, 0.02, 200)),
            "sgd": gflow.SGD(0.05, 8, key=jax.random.key(3)),
            "adam": gflow.Optax(optax.adam(0.05), 0.05),
            "adam_schedule": gflow.Optax(optax.adam(optax.exponential_decay(0.05, 100, 0.5)),
                                         0.05),
            "gf": gflow.GradientFlow()}[name]

KW = dict(t1=20.0, save=gflow.LinTimes(12), observe=("loss", "weight_movement"))

def announce_saves():
    from gflow import store
    _save = store.save_state
    def announced_save(path, state):
        _save(path, state)
        event(f"saved {path.name} {int(state.get('segment', -1))}")
    checkpoint._save_state = announced_save  # a run's segments
    store.save_state = announced_save  # an ensemble's chunks
"""
_RUN_DRIVER = _PROBLEM + """
announce_saves()
checkpoint.simulate_resumable(sys.argv[1], *problem(), dynamics=dynamics(sys.argv[2]),
                              every=2, **KW)
"""
_ENSEMBLE_DRIVER = _PROBLEM + """
announce_saves()
net, p0, data = problem()
P = jax.vmap(lambda k: gflow.init.gaussian(k, net, 3))(jax.random.split(jax.random.key(2), 5))
gflow.simulate_ensemble(net, P, data, dynamics=dynamics(sys.argv[2]), chunk_size=2,
                        checkpoint=sys.argv[1], **KW)
"""


def _ns():
    ns = {}
    exec(_PROBLEM, ns)
    return ns


def _kill_at(line, sig, source, *args, cwd=None, rc=None):
    """Run a driver, send it ``sig`` once it prints ``line`` (it waits there), wait for
    it to end and check its exit status (``rc``; default: killed by ``sig``)."""
    proc = subprocess.Popen([sys.executable, "-c", source, *map(str, args)],
                            env={**os.environ, "JAX_PLATFORMS": "cpu", "PAUSE_AT": line},
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for got in proc.stdout:
        if got.strip() == line:
            proc.send_signal(sig)
            break
    else:
        pytest.fail(f"the driver ended before {line!r}: {proc.communicate()[1][-3000:]}")
    try:
        proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the driver did not stop: {proc.communicate()[1][-3000:]}")
    assert proc.returncode == (-sig if rc is None else rc)
    return proc


def _assert_same(got, ref):
    """Bitwise: same machine, dtype, arguments."""
    assert got.status == ref.status and got.t_stop == ref.t_stop
    np.testing.assert_array_equal(got.times, ref.times)
    assert set(got.observables) == set(ref.observables)
    for k in ref.observables:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
    for attr in ("params_final", "params"):
        a, b = getattr(got, attr), getattr(ref, attr)
        assert (a is None) == (b is None)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_array_equal(x, y, err_msg=attr)
    assert {k: np.asarray(v).tolist() for k, v in got.stats.items()} == \
        {k: np.asarray(v).tolist() for k, v in ref.stats.items()}


# -- discrete dynamics in segments ----------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)],
                         indirect=True)  # float64: slow (the default suite runs float32)
@pytest.mark.parametrize("name", ["gd_schedule", "sgd", "adam", "adam_schedule"])
def test_discrete_segments_equal_one_simulate(tmp_path, dtype, name):
    # Discrete steps do not depend on where the run is cut: segments carrying the step
    # count, optimizer state and minibatch permutation take exactly the steps of one run.
    ns = _ns()
    net, p0, data = ns["problem"]()
    dyn = ns["dynamics"](name)
    for extra in ({}, {"save_params": True}, {"stop_loss": 0.05}):
        one = gflow.simulate(net, p0, data, dynamics=dyn, throw=False, **ns["KW"], **extra)
        seg = checkpoint.simulate_resumable(tmp_path / "c.npz", net, p0, data, every=5,
                                            dynamics=dyn, throw=False, **ns["KW"], **extra)
        _assert_same(seg, one)
        assert not (tmp_path / "c.npz").exists()
    # the stop case really stops inside a segment for adam (loss 0.05 is reached early)
    if name == "adam":
        assert one.status == "stop_loss" and len(one.times) < 12


def test_every_seconds_decides_writes_not_results(tmp_path, monkeypatch):
    ns = _ns()
    net, p0, data = ns["problem"]()
    writes = []
    save = checkpoint._save_state
    monkeypatch.setattr(checkpoint, "_save_state",
                        lambda path, state: (writes.append(int(state["segment"])),
                                             save(path, state)))
    dyn = ns["dynamics"]("sgd")
    run = lambda name, **kw: checkpoint.simulate_resumable(  # noqa: E731
        tmp_path / name, net, p0, data, dynamics=dyn, **ns["KW"], **kw)
    every = run("a.npz", every=3)  # 4 segments: a write after each of the first 3
    assert writes == [1, 2, 3]
    writes.clear()
    rare = run("b.npz", every=3, every_seconds=1e6)  # never due: nothing written
    assert writes == []
    seconds_only = run("c.npz", every_seconds=0.0)  # segments of 1 save point, each written
    assert writes == list(range(1, 12))
    _assert_same(rare, every)
    _assert_same(seconds_only, every)
    # keep=True leaves the finished run on disk; a second call returns it without a solve
    kept = run("d.npz", every=3, keep=True)
    assert (tmp_path / "d.npz").exists()
    monkeypatch.setattr(gflow.solve, "solve_start", None)  # any solve would fail
    monkeypatch.setattr(gflow.solve, "solve_segment", None)
    _assert_same(run("d.npz", every=3, keep=True), kept)
    with pytest.raises(ValueError, match="different run"):
        run("d.npz", every=4, keep=True)  # other segments, other results


def test_fingerprint_sees_optax_hyperparameters(tmp_path):
    # adam(0.05) and adam(0.05, b1=0.5) have the same repr; their first update differs
    ns = _ns()
    net, p0, data = ns["problem"]()
    kw = dict(every=3, keep=True, **ns["KW"])
    checkpoint.simulate_resumable(tmp_path / "a.npz", net, p0, data,
                                  dynamics=gflow.Optax(optax.adam(0.05), 0.05), **kw)
    with pytest.raises(ValueError, match="different run"):
        checkpoint.simulate_resumable(tmp_path / "a.npz", net, p0, data,
                                      dynamics=gflow.Optax(optax.adam(0.05, b1=0.5), 0.05), **kw)
    checkpoint.simulate_resumable(tmp_path / "b.npz", net, p0, data,
                                  dynamics=gflow.SGD(0.05, 8, key=jax.random.key(3)), **kw)
    with pytest.raises(ValueError, match="different run"):  # another SGD key
        checkpoint.simulate_resumable(tmp_path / "b.npz", net, p0, data,
                                      dynamics=gflow.SGD(0.05, 8, key=jax.random.key(4)), **kw)


# -- killed and resumed ---------------------------------------------------------------------


@pytest.mark.parametrize("sig, name", [(signal.SIGTERM, "sgd"),
                                       (signal.SIGKILL, "adam_schedule")])
def test_killed_discrete_run_resumes_bitwise(tmp_path, sig, name):
    ns = _ns()
    dyn = ns["dynamics"](name)
    ref = checkpoint.simulate_resumable(tmp_path / "ref.npz", *ns["problem"](), dynamics=dyn,
                                        every=2, **ns["KW"])
    path = tmp_path / "run.npz"
    _kill_at("saved run.npz 3", sig, _RUN_DRIVER, path, name)
    with np.load(path, allow_pickle=False) as z:  # 3 of 6 segments done; the step count,
        assert int(z["segment"]) == 3 and z["obs_loss"].shape == (6,)  # optimizer state
        assert int(z["done"]) == 0 and len([k for k in z.files if k.startswith("carry_")]) > 3
    got = checkpoint.simulate_resumable(path, *ns["problem"](), dynamics=dyn, every=2,
                                        **ns["KW"])
    assert not path.exists()
    _assert_same(got, ref)
    _assert_same(got, gflow.simulate(*ns["problem"](), dynamics=dyn, **ns["KW"]))


@pytest.mark.parametrize("sig, name", [pytest.param(signal.SIGTERM, "gf", marks=pytest.mark.slow),
                                       (signal.SIGKILL, "sgd")])
def test_killed_ensemble_resumes_bitwise(tmp_path, monkeypatch, sig, name):
    ns = _ns()
    net, p0, data = ns["problem"]()
    P = jax.vmap(lambda k: gflow.init.gaussian(k, net, 3))(
        jax.random.split(jax.random.key(2), 5))
    kw = dict(dynamics=ns["dynamics"](name), chunk_size=2, **ns["KW"])
    ref = gflow.simulate_ensemble(net, P, data, **kw)  # 3 chunks of members: 2, 2, 1
    ck = tmp_path / "ens"
    _kill_at("saved chunk_00001.npz -1", sig, _ENSEMBLE_DRIVER, ck, name)
    assert sorted(p.name for p in ck.iterdir()) == ["chunk_00000.npz", "chunk_00001.npz"]
    saved = []
    save = checkpoint.ChunkStore.save
    monkeypatch.setattr(checkpoint.ChunkStore, "save",
                        lambda self, i, leaves: (saved.append(i), save(self, i, leaves)))
    got = gflow.simulate_ensemble(net, P, data, checkpoint=ck, **kw)
    assert saved == [2]  # only the missing chunk was run
    assert not ck.exists()  # removed once the ensemble finished
    assert list(got.status) == list(ref.status)
    assert_same_run(got, ref)


# -- gflow run: checkpoints inside a run ----------------------------------------------------

TINY = ["--set", "n=40", "--set", "width=8", "--set", "t1=5", "--set", "n_save=6",
        "--set", "d=4", "--checkpoint-every", "2"]
# quickstart makes 6 simulate calls, in order: (gaussian, paired) x (gf, gd, sgd); with
# 6 saves and 2 per segment each call is 3 segments, i.e. 3 solves (solve_segment calls)
_CLI_DRIVER = _PROBLEM + """
import gflow.solve
from gflow import cli

SOLVES = []
def announce(f):
    def wrapped(*a, **kw):
        out = f(*a, **kw)
        SOLVES.append(1)
        event(f"solve {len(SOLVES)}")
        return out
    return wrapped

gflow.solve.solve_segment = announce(gflow.solve.solve_segment)
announce_saves()
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def cli_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "ref"
    assert cli.main(["run", "quickstart", "--out", str(out), "--quiet", *TINY,
                     "--checkpoint-seconds", "0"]) == 0
    return out


def _count_solves(monkeypatch):
    calls = []
    f = gflow.solve.solve_segment
    monkeypatch.setattr(gflow.solve, "solve_segment",
                        lambda *a, **kw: (calls.append(1), f(*a, **kw))[1])
    return calls


def _summary(out):
    s = json.loads((out / "summary.json").read_text())
    s.pop("wall_time_s")
    return s


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGTERM, marks=pytest.mark.slow),
                                 signal.SIGKILL])
def test_killed_gflow_run_resumes_inside_the_run(tmp_path, monkeypatch, cli_reference, sig):
    out = tmp_path / "out"
    if sig == signal.SIGTERM:
        # writes only every 1000 s, so nothing is written mid-call until SIGTERM arrives
        # during call 1's second segment: the state after its first segment is written
        # then, on the way out
        args = ["run", "quickstart", "--out", out, "--quiet", *TINY,
                "--checkpoint-seconds", "1000"]
        # call 0 (3 segments) done, call 1 in its second segment
        # (gflow run turns SIGTERM into an exception, records the status, exits 128 + 15)
        _kill_at("solve 5", sig, _CLI_DRIVER, *args, cwd=tmp_path, rc=128 + sig)
        s = json.loads((out / "summary.json").read_text())
        assert s["status"].startswith("interrupted: Terminated")
        assert s["checkpoint_files"] == 2 and "--resume" in s["resume"]
        with np.load(out / "checkpoints" / "call_0001.npz") as z:
            assert int(z["segment"]) == 1 and int(z["done"]) == 0
        expected = 2 + 4 * 3  # call 1's last two segments, calls 2-5
    else:
        args = ["run", "quickstart", "--out", out, "--quiet", *TINY,
                "--checkpoint-seconds", "0"]
        # inside call 4 (paired init, GD)
        _kill_at("saved call_0004.npz 1", sig, _CLI_DRIVER, *args, cwd=tmp_path)
        assert not (out / "summary.json").exists()
        expected = 2 + 3  # call 4's last two segments, call 5
    with np.load(out / "checkpoints" / "call_0000.npz") as z:
        assert int(z["done"]) == 1  # finished calls are kept whole
    assert not (out / "trajectory.nc").exists()
    # no half-written file (the lock stays after SIGKILL, unlocked: the kernel drops flocks)
    assert not [p for p in out.rglob(".*") if p.name != ".gflow.lock"]
    solves = _count_solves(monkeypatch)
    assert cli.main(["run", "--resume", str(out), "--quiet"]) == 0
    assert len(solves) == expected  # finished calls and segments were not recomputed
    assert not (out / "checkpoints").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["checkpoint"]["every"] == 2
    assert _summary(out) == _summary(cli_reference)
    assert_same_results(out, cli_reference)  # bitwise


def test_checkpoint_options_of_gflow_run(tmp_path, capsys):
    out = tmp_path / "a"
    # lr=-1 fails inside the run (GD checks it): quick, and config.json is written first
    assert cli.main(["run", "quickstart", "--out", str(out), "--quiet", "--set", "lr=-1",
                     "--checkpoint-every", "0", "--checkpoint-seconds", "5"]) == 2
    ck = json.loads((out / "config.json").read_text())["checkpoint"]
    assert ck == {"every": 0, "every_seconds": 5.0}
    capsys.readouterr()
    assert cli.main(["run", "--resume", str(out), "--checkpoint-every", "3"]) == 2
    assert "cannot change on --resume" in capsys.readouterr().err
    assert cli.main(["run", "quickstart", "--out", str(tmp_path / "b"),
                     "--checkpoint-every", "-1"]) == 2
    assert "--checkpoint-every must be" in capsys.readouterr().err
    assert cli.main(["run", "quickstart", "--out", str(tmp_path / "b"),
                     "--checkpoint-seconds", "nan"]) == 2
    assert "--checkpoint-seconds must be" in capsys.readouterr().err


def test_checkpointing_block_numbers_calls(tmp_path):
    ns = _ns()
    net, p0, data = ns["problem"]()
    kw = dict(dynamics=gflow.GD(0.05), **ns["KW"])
    with checkpoint.checkpointing(tmp_path, every=4) as ck:
        a = gflow.simulate(net, p0, data, **kw)
        b = gflow.simulate(net, p0, data, **{**kw, "t1": 10.0})
        assert ck.calls == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["call_0000.npz", "call_0001.npz"]
    _assert_same(a, gflow.simulate(net, p0, data, **kw))  # GD: bitwise a plain simulate
    with checkpoint.checkpointing(tmp_path, every=4):  # the same calls: read back
        _assert_same(gflow.simulate(net, p0, data, **kw), a)
        _assert_same(gflow.simulate(net, p0, data, **{**kw, "t1": 10.0}), b)
    with checkpoint.checkpointing(tmp_path, every=4), \
            pytest.raises(ValueError, match="different run"):  # calls in another order
        gflow.simulate(net, p0, data, **{**kw, "t1": 10.0})
    with pytest.raises(ValueError, match="every must be"):
        with checkpoint.checkpointing(tmp_path, every=0):
            pass

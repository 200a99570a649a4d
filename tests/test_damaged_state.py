"""State gflow finds on disk that it cannot trust as it is: damaged or altered checkpoints
(named and recomputed), a resume on other package versions or another device (refused
unless --force); and the memory guard's count of what training a net needs."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from test_reliability import _CKPT, TINY, _mem_setup, _run, _same_data, _summary

from gflow import cli, provenance

# -- damaged or foreign state ---------------------------------------------------------------


def _calls(directory):
    """Two GD runs inside one checkpointing block (as an experiment under gflow run)."""
    import jax

    import gflow
    from gflow import checkpoint

    ns = {}
    exec(_CKPT, ns)
    net, p0, data = ns["problem"]()
    kw = dict(t1=2.0, save=gflow.LinTimes(6), observe=("loss",), dynamics=gflow.GD(0.05))
    with checkpoint.checkpointing(directory, every=2, every_seconds=None):
        return [gflow.simulate(net, p, data, **kw) for p in (p0, jax.tree.map(lambda x: 2 * x, p0))]


def _truncate(p):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _flip_bit(p):
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0x10
    p.write_bytes(bytes(b))


def _alter_arrays(p):
    # a rewrite with the right fingerprint and other numbers: only the content hash sees it
    with np.load(p) as z:
        state = {k: z[k] for k in z.files}
    state["obs_loss"] = state["obs_loss"] * 2
    np.savez(p, **state)


def _drop_tags(p):
    with np.load(p) as z:
        state = {k: z[k] for k in z.files if k not in ("fingerprint", "content_sha256")}
    np.savez(p, **state)


@pytest.mark.parametrize("damage", [_truncate, _flip_bit, _alter_arrays, _drop_tags])
def test_damaged_checkpoint_is_named_and_recomputed(tmp_path, damage):
    ref = _calls(tmp_path / "ref")
    files = sorted((tmp_path / "ref").glob("call_*.npz"))
    assert [p.name for p in files] == ["call_0000.npz", "call_0001.npz"]
    first = files[0].stat().st_mtime_ns
    damage(files[1])
    with pytest.warns(UserWarning, match=r"call_0001\.npz.*cannot be used") as w:
        got = _calls(tmp_path / "ref")
    assert not any("call_0000" in str(x.message) for x in w)  # the intact one is kept...
    assert files[0].stat().st_mtime_ns == first  # ...read back, not rewritten
    for a, b in zip(got, ref, strict=True):  # GD: the same compiled steps, bitwise
        np.testing.assert_array_equal(a["loss"], b["loss"])
        np.testing.assert_array_equal(a.times, b.times)


@pytest.mark.slow  # three runs, one in a fresh process: ~50 s on 2 busy cores
def test_resume_with_a_truncated_checkpoint(tmp_path, monkeypatch):
    from gflow.experiments import quickstart

    ref, out = tmp_path / "ref", tmp_path / "out"
    assert _run("quickstart", "--out", str(ref), *TINY) == 0
    real = quickstart.run

    def run_then_interrupt(cfg, *, progress=False):  # every call checkpointed, then Ctrl-C
        real(cfg, progress=progress)
        raise KeyboardInterrupt

    monkeypatch.setattr(quickstart, "run", run_then_interrupt)
    assert _run("quickstart", "--out", str(out), *TINY) == 130
    ckpts = sorted((out / "checkpoints").glob("call_*.npz"))
    assert len(ckpts) == 6 and "--resume" in _summary(out)["resume"]
    _truncate(ckpts[2])
    r = subprocess.run([sys.executable, "-m", "gflow.cli", "run", "--resume", str(out),
                        "--quiet"], capture_output=True, text=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "call_0002.npz" in r.stderr and "truncated or corrupted" in r.stderr
    assert "call_0001.npz" not in r.stderr
    _same_data(ref, out)


def _interrupted_folder(tmp_path, monkeypatch):
    from fake_experiment import install

    from gflow.experiments import quickstart

    install(monkeypatch)
    real = quickstart.run
    monkeypatch.setattr(quickstart, "run", lambda cfg, progress=False: (_ for _ in ()).throw(
        KeyboardInterrupt))
    out = tmp_path / "i"
    assert _run("quickstart", "--out", str(out), *TINY) == 130
    monkeypatch.setattr(quickstart, "run", real)
    return out


@pytest.mark.parametrize("change, refused", [
    (lambda p: p["versions"].update(jax="0.0.1"), "jax 0.0.1 -> "),
    (lambda p: p.update(device_kind="TPU v9"), "device_kind: TPU v9 -> "),
    (lambda p: p.update(device_count=99), "device_count: 99 -> "),
    (lambda p: p.update(python="2.7.18"), None),  # another Python: a warning only
])
def test_resume_with_other_versions_or_device(tmp_path, monkeypatch, capsys, change, refused):
    out = _interrupted_folder(tmp_path, monkeypatch)
    config = json.loads((out / "config.json").read_text())
    change(config["provenance"])
    (out / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    if refused is None:
        assert cli.main(["run", "--resume", str(out), "--quiet"]) == 0
        assert "warning: resuming with another python: 2.7.18" in capsys.readouterr().err
        return
    assert cli.main(["run", "--resume", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert refused in err and "--force" in err
    assert _summary(out)["status"].startswith("interrupted")  # left as it was
    assert cli.main(["run", "--resume", str(out), "--quiet", "--force"]) == 0
    assert "warning: --force" in capsys.readouterr().err
    assert _summary(out)["status"] == "completed"


def test_provenance_compare_is_exact_where_results_depend_on_it():
    now = provenance.collect(["gflow"])
    assert provenance.compare(now, dict(now)) == ([], [])
    other = json.loads(json.dumps(now))
    other["versions"]["numpy"] = "1.0"
    other["platform"] = "elsewhere"
    exact, warn = provenance.compare(other, now)
    assert exact == [f"numpy 1.0 -> {now['versions']['numpy']}"]
    assert warn == [f"platform: elsewhere -> {now['platform']}"]


# -- the memory guard counts the network itself ------------------------------------------


def test_working_memory_by_hand(dtype):
    import optax

    from gflow import footprint
    from gflow.objective import Objective

    gflow, jax, data, net = _mem_setup()  # n = 20, d = 3, m = 8, bias
    p0 = gflow.init.gaussian(jax.random.key(1), net, 3)
    obj = Objective(net, "squared", data.X, data.y)
    b = 8 if dtype == "float64" else 4
    P = (8 * 3 + 8 + 8) * b
    # the largest array of the gradient: the (n, m) pre-activations
    assert footprint.largest_intermediate_bytes(obj, p0) == 20 * 8 * b
    assert footprint.working_bytes(obj, p0, gflow.GD(0.1)) == 2 * P + 3 * 20 * 8 * b
    # adam keeps two moments (and an int32 step count)
    adam = gflow.Optax(optax.adam(1e-3), 1e-3)
    assert footprint.working_bytes(obj, p0, adam) == 4 * P + 4 + 3 * 20 * 8 * b
    assert footprint.working_bytes(obj, p0, gflow.GradientFlow()) == 12 * P + 3 * 20 * 8 * b


def test_memory_guard_refuses_a_huge_net_before_compiling(monkeypatch):
    import jax.numpy as jnp

    import gflow
    from gflow import checkpoint
    from gflow.discrete import GD

    data = gflow.data.teacher(__import__("jax").random.key(0), 200, 1, 2)
    m = 10**7  # parameters 80 MB; pre-activations 200 x m float32 = 8 GB, held 3 times
    net = gflow.TwoLayer(m)
    p0 = gflow.TwoLayerParams(W=jnp.full((m, 1), 0.1), b=None, a=jnp.ones(m))

    def never(*a, **k):
        raise AssertionError("compiled or ran")

    monkeypatch.setattr(GD, "advance", never)  # the protocol step: traced only in a solve
    t0 = time.perf_counter()
    with checkpoint.memory_limit(2**32), pytest.raises(ValueError, match="training this net"):
        gflow.simulate(net, p0, data, dynamics=gflow.GD(0.1), t1=1.0)
    assert time.perf_counter() - t0 < 20  # seconds: it traces, nothing is computed


def test_damaged_sweep_point_is_named_and_recomputed(tmp_path):
    import xarray as xr

    from gflow import io

    ds = xr.Dataset({"loss": (("time",), np.arange(5.0))})
    io.write_part(tmp_path, 0, {"gf": ds}, {"final": 4.0})
    summary, back = io.read_part(tmp_path, 0)
    assert summary == {"final": 4.0} and back["gf"].to_dataset().identical(ds)
    nc = tmp_path / "parts" / "00000.nc"
    nc.write_bytes(nc.read_bytes()[:100])
    with pytest.warns(UserWarning, match=r"00000\.nc.*unreadable.*computing that point again"):
        assert io.read_part(tmp_path, 0) is None

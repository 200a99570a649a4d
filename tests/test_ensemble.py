"""Ensembles equal the separate runs they stand for; sweeps label them on a grid."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tree_max_abs_diff

import gflow
from gflow.ensemble import _compiled

D, N = 4, 48


@pytest.fixture(scope="module")
def data():
    return gflow.data.teacher(jax.random.key(0), N, D, 3)


def _stack(net, M, key=1, scheme=gflow.init.gaussian):
    return jax.vmap(lambda k: scheme(k, net, D))(jax.random.split(jax.random.key(key), M))


def _member(p, i):
    return jax.tree.map(lambda x: x[i], p)


@pytest.mark.parametrize("dyn", [gflow.GD(0.2), gflow.GradientFlow(rtol=1e-6, atol=1e-8),
                                 gflow.SGD(0.2, 16, key=jax.random.key(3))])
def test_ensemble_equals_separate_runs(data, dyn):
    # tanh: a smooth flow, so the adaptive solves of both paths agree to ~rtol (with ReLU the
    # kinks amplify rounding differences between the two compiled programs)
    net = gflow.TwoLayer(12, "tanh", bias=True)
    p0 = _stack(net, 5)
    ens = gflow.simulate_ensemble(net, p0, data, dynamics=dyn, t1=4.0, save=gflow.LinTimes(6),
                                  observe=("loss", "balancedness"))
    assert ens["loss"].shape == (5, 6) and ens["balancedness"].shape == (5, 6, 12)
    assert ens.params_final.W.shape == (5, 12, D) and ens.status.shape == (5,)
    for i in (0, 4):
        one = gflow.simulate(net, _member(p0, i), data, dynamics=dyn, t1=4.0,
                             save=gflow.LinTimes(6), observe=("loss", "balancedness"))
        # float32; GF: the same adaptive steps up to rounding of traced vs constant tolerances
        np.testing.assert_allclose(ens["loss"][i], one["loss"], rtol=1e-4)
        assert tree_max_abs_diff(_member(ens.params_final, i), one.params_final) < 1e-4
        np.testing.assert_array_equal(ens.times, one.times)  # host-side save grids: exact


def test_per_member_lr_and_time_axis(data):
    net = gflow.TwoLayer(8)
    p0 = _stack(net, 3)
    lrs = np.array([0.1, 0.2, 0.4])
    ens = gflow.simulate_ensemble(net, p0, data, dynamics=gflow.GD(lr=lrs), t1=2.0,
                                  save=np.array([0.0, 0.53, 1.0, 2.0]))
    assert ens.times.shape == (3, 4)
    np.testing.assert_allclose(ens.times[:, -1], 2.0)
    np.testing.assert_allclose(ens.times[1], [0.0, 0.6, 1.0, 2.0])  # nearest multiples of 0.2
    for i, lr in enumerate(lrs):
        one = gflow.simulate(net, _member(p0, i), data, dynamics=gflow.GD(lr=float(lr)), t1=2.0,
                             save=np.array([0.0, 0.53, 1.0, 2.0]))
        np.testing.assert_allclose(ens["loss"][i], one["loss"], rtol=1e-5)
        np.testing.assert_array_equal(ens.times[i], one.times)  # host-side save grids: exact
    xd = ens.to_xarray()
    assert xd["t"].dims == ("member", "time")


_GF = gflow.GradientFlow(rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("scaling, dyn", [
    ("ntk", gflow.GD(0.2)), pytest.param("ntk", _GF, marks=pytest.mark.slow),
    ("mean_field", gflow.GD(0.2)),
    # GF (~20 s each): the padding path of GD with the flow's solver
    pytest.param("mean_field", _GF, marks=pytest.mark.slow)])
def test_width_padding_equals_narrow_runs(data, dyn, scaling):
    widths = [3, 8, 16]
    big = gflow.TwoLayer(16, "tanh", scaling=scaling, bias=True)
    nets = [gflow.TwoLayer(w, "tanh", scaling=scaling, bias=True) for w in widths]
    ps = [gflow.init.gaussian(jax.random.key(i), n, D) for i, n in enumerate(nets)]
    pad = lambda p: jax.tree.map(lambda x: jnp.concatenate(  # noqa: E731
        [x, jnp.full((16 - x.shape[0],) + x.shape[1:], 0.7, x.dtype)]), p)  # junk in padding
    p0 = jax.tree.map(lambda *xs: jnp.stack(xs), *[pad(p) for p in ps])
    ens = gflow.simulate_ensemble(big, p0, data, dynamics=dyn, t1=3.0, widths=widths,
                                  save=gflow.LinTimes(4))
    for i, (net, p) in enumerate(zip(nets, ps, strict=True)):
        one = gflow.simulate(net, p, data, dynamics=dyn, t1=3.0, save=gflow.LinTimes(4))
        np.testing.assert_allclose(ens["loss"][i], one["loss"], rtol=1e-4)
        w = widths[i]
        got = jax.tree.map(lambda x, w=w, i=i: x[i, :w], ens.params_final)
        assert tree_max_abs_diff(got, one.params_final) < 1e-4
        # masked neurons never move
        # padded neurons are masked: never move, exactly
        np.testing.assert_array_equal(ens.params_final.W[i, w:], p0.W[i, w:])
        np.testing.assert_array_equal(ens.params_final.a[i, w:], p0.a[i, w:])


def test_per_member_data(data):
    net = gflow.TwoLayer(8)
    p0 = _stack(net, 3)
    sets = [gflow.data.teacher(jax.random.key(k), N, D, 2) for k in range(3)]
    stack = lambda name: jnp.stack([getattr(s, name) for s in sets])  # noqa: E731
    stacked = gflow.Dataset(stack("X"), stack("y"), stack("X_test"), stack("y_test"))
    ens = gflow.simulate_ensemble(net, p0, stacked, dynamics=gflow.GD(0.2), t1=2.0,
                                  observe=("loss", "test_loss"), save=gflow.LinTimes(3))
    for i, s in enumerate(sets):
        one = gflow.simulate(net, _member(p0, i), s, dynamics=gflow.GD(0.2), t1=2.0,
                             observe=("loss", "test_loss"), save=gflow.LinTimes(3))
        np.testing.assert_allclose(ens["test_loss"][i], one["test_loss"], rtol=1e-5)


def test_one_diverging_member_does_not_kill_the_rest(data):
    net = gflow.TwoLayer(8)
    p0 = _stack(net, 3)
    p0 = jax.tree.map(lambda x: x.at[1].multiply(300.0), p0)  # member 1 diverges at lr 0.5
    ens = gflow.simulate_ensemble(net, p0, data, dynamics=gflow.GD(0.5), t1=50.0)
    assert list(ens.status) == ["completed", "diverged", "completed"]
    assert ens.t_stop[1] < 50.0 and np.all(np.isfinite(ens["loss"][[0, 2]]))
    assert np.isnan(ens["loss"][1, -1])  # saves after the stop are missing
    with pytest.raises(gflow.SimulationError, match="member 1: diverged"):
        gflow.simulate_ensemble(net, p0, data, dynamics=gflow.GD(0.5), t1=50.0, throw=True)


def test_chunks_and_blocks_give_the_same_result(data):
    net = gflow.TwoLayer(8)
    p0 = _stack(net, 7)
    ref = gflow.simulate_ensemble(net, p0, data, dynamics=gflow.GD(0.2), t1=2.0, block=7)
    for kw in ({"chunk_size": 3}, {"block": 2}, {"block": 1, "chunk_size": 4}):
        got = gflow.simulate_ensemble(net, p0, data, dynamics=gflow.GD(0.2), t1=2.0, **kw)
        np.testing.assert_allclose(got["loss"], ref["loss"], rtol=1e-6)


def test_default_block_holds_members_in_cache_on_a_cpu_only():
    # on a CPU, blocks of as many members as fit 8 MiB of activations; elsewhere a plain
    # vmap (None): blocks would only serialise the work of a GPU
    from gflow.ensemble import _block

    assert _block(None, "cpu", 2**17) == 64 and _block(None, "cpu", 2**25) == 1
    assert _block(None, "gpu", 2**17) is None and _block(None, "tpu", 2**17) is None
    assert _block(5, "gpu", 2**17) == 5
    for bad in (0, True, 2.0):
        with pytest.raises(ValueError, match="block must be an integer"):
            _block(bad, "cpu", 2**17)


def test_values_do_not_recompile(data):
    # new data values, seeds and lr reuse both the cached program and its XLA executable
    net = gflow.TwoLayer(8)
    _compiled.cache_clear()
    for seed, lr in ((1, 0.1), (2, 0.3)):
        ds = gflow.data.teacher(jax.random.key(seed), N, D, 3)
        gflow.simulate_ensemble(net, _stack(net, 4, key=seed), ds, dynamics=gflow.GD(lr),
                                t1=1.2, save=gflow.LinTimes(3))
    info = _compiled.cache_info()
    assert info.misses == 1 and info.hits == 1


def test_sharded_equals_unsharded(tmp_path):
    script = textwrap.dedent("""
        import jax, numpy as np, gflow
        assert len(jax.devices()) == 4
        ds = gflow.data.teacher(jax.random.key(0), 48, 4, 3)
        net = gflow.TwoLayer(8)
        p0 = jax.vmap(lambda k: gflow.init.gaussian(k, net, 4))(
            jax.random.split(jax.random.key(1), 6))
        for dyn in (gflow.GD(0.2), gflow.GradientFlow(rtol=1e-6, atol=1e-8)):
            a = gflow.simulate_ensemble(net, p0, ds, dynamics=dyn, t1=2.0)
            b = gflow.simulate_ensemble(net, p0, ds, dynamics=dyn, t1=2.0,
                                        devices=jax.devices()[:1])
            # float64: differently batched programs round differently, but only at ~1e-16
            np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-9)
            np.testing.assert_allclose(a.params_final.W, b.params_final.W, rtol=1e-9)
            assert a["loss"].dtype == np.float64
        print("ok")
    """)
    env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "")
               + " --xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu", JAX_ENABLE_X64="1")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]


def test_sweep_grid(data):
    d = D

    def make_run(seed, width, lr):
        net = gflow.TwoLayer(width)
        p0 = gflow.init.gaussian(jax.random.key(seed), net, d)
        return gflow.Run(net, p0, data, dynamics=gflow.GD(lr), t1=2.0, save=gflow.LinTimes(5),
                         observe=("loss", "balancedness"))

    sw = gflow.sweep(make_run, seeds=range(3), width=[4, 8], lr=[0.1, 0.2])
    xd = sw.to_xarray()
    assert xd["loss"].dims == ("seed", "width", "lr", "time")
    assert xd["loss"].shape == (3, 2, 2, 5)
    assert list(xd["width"].values) == [4, 8] and list(xd["lr"].values) == [0.1, 0.2]
    one = gflow.simulate(gflow.TwoLayer(4), gflow.init.gaussian(jax.random.key(2),
                         gflow.TwoLayer(4), d), data, dynamics=gflow.GD(0.2), t1=2.0,
                         save=gflow.LinTimes(5), observe=("loss", "balancedness"))
    np.testing.assert_allclose(xd["loss"].sel(seed=2, width=4, lr=0.2), one["loss"], rtol=1e-5)
    bal = xd["balancedness"].sel(seed=2, width=4, lr=0.2).values
    np.testing.assert_allclose(bal[:, :4], one["balancedness"], rtol=1e-5)
    assert np.all(np.isnan(bal[:, 4:]))  # neurons a width-4 net does not have
    assert (xd["status"] == "completed").all()


@pytest.mark.parametrize("stacked", [False, True])
def test_sgd_per_member_keys_and_data(data, stacked):
    # exercises every minibatch gather of the members' native path: per-member batches
    # from shared data, and per-member batches from per-member data
    net = gflow.TwoLayer(8, bias=True)
    p0 = _stack(net, 3)
    keys = jax.random.split(jax.random.key(9), 3)
    sets = [gflow.data.teacher(jax.random.key(k), N, D, 2) for k in range(3)]
    stack = lambda name: jnp.stack([getattr(s, name) for s in sets])  # noqa: E731
    ds = gflow.Dataset(stack("X"), stack("y")) if stacked else data
    ens = gflow.simulate_ensemble(net, p0, ds, dynamics=gflow.SGD(0.2, 8, key=keys), t1=3.0,
                                  save=gflow.LinTimes(4))
    for i in range(3):
        di = gflow.Dataset(sets[i].X, sets[i].y) if stacked else data
        one = gflow.simulate(net, _member(p0, i), di, dynamics=gflow.SGD(0.2, 8, key=keys[i]),
                             t1=3.0, save=gflow.LinTimes(4))
        np.testing.assert_allclose(ens["loss"][i], one["loss"], rtol=1e-5)


def test_gf_ensemble_keeps_final_save_when_t1_rounds_in_float32(data):
    # 0.7 is not a float32 number: the solve ends at 0.699999988, just below the last save
    net = gflow.TwoLayer(8)
    ens = gflow.simulate_ensemble(net, _stack(net, 2), data, t1=0.7,
                                  dynamics=gflow.GradientFlow(rtol=1e-4, atol=1e-6),
                                  save=gflow.LinTimes(5))
    assert list(ens.status) == ["completed", "completed"]
    assert np.all(np.isfinite(ens["loss"]))

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow


def _setup():
    ds = gflow.data.teacher(jax.random.key(0), 30, 4, 2, labels="sign")
    net = gflow.TwoLayer(8, bias=True)
    return net, gflow.init.gaussian(jax.random.key(1), net, 4), ds


def test_observables_at_init_by_hand():
    net, p0, ds = _setup()
    probes = jax.random.normal(jax.random.key(2), (3, 4))
    tr = gflow.simulate(net, p0, ds, loss="logistic", t1=1.0, dynamics=gflow.GD(0.1),
                        save=gflow.LinTimes(3), probes=probes,
                        observe=("loss", "accuracy", "test_loss", "test_accuracy", "grad_norm",
                                 "param_norm", "weight_movement", "margin", "balancedness",
                                 "output"))
    f = np.asarray(net.apply(p0, ds.X))
    y = np.asarray(ds.y)
    theta = np.concatenate([np.ravel(x) for x in jax.tree.leaves(p0)])
    np.testing.assert_allclose(tr["loss"][0], np.mean(np.log1p(np.exp(-y * f))), rtol=1e-5)
    np.testing.assert_allclose(tr["accuracy"][0], np.mean(y * f > 0))
    ft = np.asarray(net.apply(p0, ds.X_test))
    np.testing.assert_allclose(tr["test_loss"][0], np.mean(np.log1p(np.exp(-ds.y_test * ft))),
                               rtol=1e-5)
    np.testing.assert_allclose(tr["param_norm"][0], np.linalg.norm(theta), rtol=1e-5)
    assert tr["weight_movement"][0] == 0 and tr["weight_movement"][-1] > 0
    np.testing.assert_allclose(tr["margin"][0], np.min(y * f) / (theta @ theta), rtol=1e-5)
    bal = p0.a**2 - jnp.sum(p0.W**2, 1) - p0.b**2
    np.testing.assert_allclose(tr["balancedness"][0], bal, rtol=1e-5)
    assert tr["balancedness"].shape == (3, 8) and tr["output"].shape == (3, 3)
    np.testing.assert_allclose(tr["output"][0], net.apply(p0, probes), rtol=1e-5)
    g = gflow.Objective(net, "logistic", ds.X, ds.y).grad(p0)
    gn = np.sqrt(sum(float(jnp.sum(x**2)) for x in jax.tree.leaves(g)))
    np.testing.assert_allclose(tr["grad_norm"][0], gn, rtol=1e-5)


def test_custom_and_registered_observables():
    net, p0, ds = _setup()

    def mean_output(params, ctx):
        return jnp.mean(ctx.objective.output(params))

    gflow.observe.register("max_abs_a", lambda p, c: jnp.max(jnp.abs(p.a)))
    tr = gflow.simulate(net, p0, ds, t1=1.0, dynamics=gflow.GD(0.1),
                        observe=("max_abs_a", mean_output, "loss"))
    np.testing.assert_allclose(tr["mean_output"][0], np.mean(net.apply(p0, ds.X)), rtol=1e-5)
    np.testing.assert_allclose(tr["max_abs_a"][0], np.max(np.abs(p0.a)))
    tr = gflow.simulate(net, p0, ds, t1=1.0, dynamics=gflow.GD(0.1),
                        observe={"a_norm": lambda p, c: jnp.linalg.norm(p.a)})
    np.testing.assert_allclose(tr["a_norm"][0], np.linalg.norm(p0.a), rtol=1e-6)


def test_trajectory_xarray_roundtrip(tmp_path):
    net, p0, ds = _setup()
    tr = gflow.simulate(net, p0, ds, t1=2.0, dynamics=gflow.GradientFlow(),
                        observe=("loss", "balancedness"), save=gflow.LogTimes(7))
    xd = tr.to_xarray()
    assert xd["loss"].dims == ("time",) and xd["balancedness"].dims == ("time", "neuron")
    xd.to_netcdf(tmp_path / "t.nc", engine="h5netcdf")
    import xarray as xr

    back = gflow.Trajectory.from_xarray(xr.load_dataset(tmp_path / "t.nc", engine="h5netcdf"))
    np.testing.assert_array_equal(back.times, tr.times)
    np.testing.assert_array_equal(back["balancedness"], tr["balancedness"])
    np.testing.assert_array_equal(back.params_final.W, tr.params_final.W)
    assert back.status == "completed" and back.stats["num_steps"] == tr.stats["num_steps"]


def test_results_dataset_describes_itself(tmp_path):
    # an ensemble's member axis is numbered; on disk the time axes say what t is, status and
    # stop times what they are, and the dataset carries the config and gflow's version
    import json

    from gflow import io

    net, p0, ds = _setup()
    P = jax.tree.map(lambda x: jnp.stack([x, x]), p0)
    tr = gflow.simulate_ensemble(net, P, ds, t1=1.0, dynamics=gflow.GD(0.1),
                                 save=gflow.LinTimes(3), observe=("loss",), stop_loss=1e9)
    xd = tr.to_xarray()
    np.testing.assert_array_equal(xd["member"].values, [0, 1])
    io.write_results(tmp_path, config={"lr": 0.1, "widths": (2, 4)},
                     summary={"experiment": "demo"}, dataset={"gd": xd})
    tree = io.read_trajectory(tmp_path)
    back = tree["gd"]
    assert "k * lr" in back["time"].attrs["long_name"] and back["time"].attrs["units"] == "1"
    assert "stop_loss" in back["status"].attrs["long_name"]
    assert "stop point" in back["at_stop_loss"].attrs["long_name"]
    assert json.loads(tree.attrs["config"]) == {"lr": 0.1, "widths": [2, 4]}
    assert tree.attrs["title"] == "demo" and tree.attrs["source"].startswith("gflow ")
    assert "long_name" not in xd["time"].attrs  # the caller's dataset is left as it was
    np.testing.assert_array_equal(back["at_stop_loss"], tr.at_stop["loss"])


def test_trajectory_save_load_and_repr(tmp_path):
    """save/load round-trip a single run and an ensemble bitwise (netCDF stores the numbers
    as they are); an existing file is refused; the repr is one short line."""
    net, p0, ds = _setup()
    tr = gflow.simulate(net, p0, ds, t1=1.0, dynamics=gflow.GD(0.1), observe=("loss",))
    P = jax.vmap(lambda k: gflow.init.gaussian(k, net, 4))(jax.random.split(jax.random.key(3), 3))
    en = gflow.simulate_ensemble(net, P, ds, t1=1.0, dynamics=gflow.GD(0.1))
    for name, t in (("one.nc", tr), ("ens.nc", en)):
        t.save(tmp_path / name)
        back = gflow.Trajectory.load(tmp_path / name)
        np.testing.assert_array_equal(back["loss"], t["loss"])
        np.testing.assert_array_equal(back.times, t.times)
        np.testing.assert_array_equal(back.status, t.status)
        np.testing.assert_array_equal(back.t_stop, t.t_stop)
        np.testing.assert_array_equal(back.params_final.W, t.params_final.W)
    before = (tmp_path / "one.nc").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        en.save(tmp_path / "one.nc")
    assert (tmp_path / "one.nc").read_bytes() == before
    en.save(tmp_path / "one.nc", overwrite=True)
    assert gflow.Trajectory.load(tmp_path / "one.nc").status.shape == (3,)
    assert repr(tr) == ("Trajectory(GD(lr=0.1), status='completed', t_stop=1, saves=11, "
                        "observables=['loss'])")
    assert "member=3, status={'completed': 3}, t_stop in [1, 1]" in repr(en)
    assert "\n" not in repr(en) and len(repr(en)) < 200


def test_mlp_trajectory_to_xarray():
    # per-layer parameter tuples become one variable per layer
    ds = gflow.data.teacher(jax.random.key(0), 30, 3, 2)
    net = gflow.MLP((8, 6), "tanh")
    tr = gflow.simulate(net, gflow.init.gaussian(jax.random.key(1), net, 3), ds, t1=1.0,
                        dynamics=gflow.GD(0.1))
    xd = tr.to_xarray()
    assert xd["params_final_Ws_0"].shape == (8, 3) and xd["params_final_Ws_1"].shape == (6, 8)


def test_trajectory_shape_is_one_for_runs_and_ensembles():
    # status and t_stop are arrays of the batch shape: 0-d for one run, (M,) for M members;
    # final() is each run's last reached save
    net, p0, ds = _setup()
    one = gflow.simulate(net, p0, ds, t1=2.0, dynamics=gflow.GD(0.1), save=gflow.LinTimes(5),
                         observe=("loss", "balancedness"))
    assert one.status.shape == () and one.status == "completed" and str(one.status) == \
        "completed" and one.t_stop.shape == () and float(one.t_stop) == 2.0
    np.testing.assert_array_equal(one.final("loss"), one["loss"][-1])
    np.testing.assert_array_equal(one.final()["balancedness"], one["balancedness"][-1])
    P = jax.tree.map(lambda x: jnp.stack([x, 300 * x]), p0)  # member 1 diverges at lr 0.5
    ens = gflow.simulate_ensemble(net, P, ds, dynamics=gflow.GD(0.5), t1=20.0,
                                  save=gflow.LinTimes(6), observe=("loss", "balancedness"))
    assert ens.status.shape == ens.t_stop.shape == (2,)
    assert list(ens.status) == ["completed", "diverged"]
    reached = ens.reached()
    assert reached[0].all() and not reached[1].all() and reached[1, 0]
    last = np.flatnonzero(reached[1])[-1]
    fin = ens.final("loss")
    assert fin.shape == (2,) and fin[0] == ens["loss"][0, -1] and fin[1] == ens["loss"][1, last]
    assert np.isfinite(fin).all() and ens.final("balancedness").shape == (2, 8)
    bare = ens.without_params()
    assert bare.params0 is None and bare.params_final is None and bare["loss"] is ens["loss"]

"""The results layout of trajectory.nc (gflow.io, "Results on disk"): groups, the reader, the
mask over padded neurons, string keys in summary.json. Each experiment's own test checks its
results against the layout (helpers.assert_results_layout)."""

import json
from types import SimpleNamespace

import jax
import numpy as np
import pytest
import xarray as xr
from helpers import assert_results_layout

import gflow
from gflow import experiments, io


def _tree():
    gf = xr.Dataset({"loss": (("seed", "time"), [[1.0, 0.5, 0.25], [1.0, 0.6, np.nan]]),
                     "status": ("seed", ["completed", "stop_loss"])},
                    coords={"seed": [0, 1], "time": [0.0, 0.5, 1.0]})
    gd = xr.Dataset({"loss": (("seed", "time"), [[1.0, 0.4], [1.0, 0.5]])},
                    coords={"seed": [0, 1], "time": [0.0, 1.0]})
    return {"gf": gf, "gd": gd}


def test_json_keys_are_strings_integers_as_integers(tmp_path):
    assert [io.json_key(k) for k in (64, 64.0, np.int64(64), np.float32(64.0), 0.1,
                                     np.float64(0.25), -3.0, True, "x", (1, 2))] == [
        "64", "64", "64", "64", "0.1", "0.25", "-3", "true", "x", "(1, 2)"]
    io.write_json(tmp_path / "s.json", {64.0: {2: "a", 0.5: "b"}, "w": [{np.int64(8): 1}]})
    assert json.loads((tmp_path / "s.json").read_text()) == {"64": {"2": "a", "0.5": "b"},
                                                             "w": [{"8": 1}]}


def test_round_trip_through_the_reader(tmp_path):
    groups = _tree()
    io.write_results(tmp_path, config={"lr": 0.1}, summary={"experiment": "demo"},
                     dataset=groups)
    tree = io.read_trajectory(tmp_path)  # the folder or the file
    assert io.read_trajectory(tmp_path / "trajectory.nc").identical(tree)
    assert list(tree.children) == ["gf", "gd"] and tree.attrs["groups"] == "gf,gd"
    assert json.loads(tree.attrs["config"]) == {"lr": 0.1} and tree.attrs["title"] == "demo"
    for name, ds in groups.items():  # values and dims as written, time axes described
        back = io.groups(tree)[name]
        xr.testing.assert_equal(back, ds)
        assert "k * lr" in back["time"].attrs["long_name"]
    assert "stop_loss" in tree["gf"]["status"].attrs["long_name"]
    _, _, again = io.read_results(tmp_path)
    assert again.identical(tree)


def test_as_tree_refuses_what_is_not_the_layout(tmp_path):
    ds = _tree()["gf"]
    with pytest.raises(ValueError, match="DataTree or a dict"):
        io.as_tree(ds)
    with pytest.raises(ValueError, match="repeat the group's name"):
        io.as_tree({"gf": ds.rename(loss="gf_loss")})
    with pytest.raises(ValueError, match="identifier"):
        io.as_tree({"g f": ds})
    with pytest.raises(ValueError, match="at least one group"):
        io.as_tree({})
    with pytest.raises(ValueError, match="attributes only"):
        io.as_tree(xr.DataTree(ds))
    with pytest.raises(ValueError, match="DataTree or a dict"):
        experiments.Result({}, ds)  # an experiment's result is in the layout from the start


def test_reader_names_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        io.read_trajectory(tmp_path)
    io.write_dataset(tmp_path / "trajectory.nc", _tree()["gf"])  # one flat dataset
    with pytest.raises(ValueError, match="no groups"):
        io.read_trajectory(tmp_path)
    (tmp_path / "trajectory.nc").write_bytes(b"\x89HDF\r\n")
    with pytest.raises(ValueError, match="unreadable"):
        io.read_trajectory(tmp_path)


def test_layout_check_can_fail(tmp_path):
    # two dynamics NaN-merged onto one time grid: saves where the group has no value
    merged = xr.Dataset({"loss": (("time",), [1.0, np.nan, 0.5])}, coords={"time": [0, .5, 1.]})
    res = SimpleNamespace(summary={}, dataset=io.as_tree({"gf": merged}))
    with pytest.raises(AssertionError, match="hold no value"):
        assert_results_layout(res, tmp_path / "a")
    res = SimpleNamespace(summary={"by_width": {64.0: 1}}, dataset=io.as_tree(_tree()))
    assert_results_layout(res, tmp_path / "b")  # 64.0 is written "64"
    index = xr.Dataset({"loss": (("time",), [1.0, 0.5])}, coords={"time": [0, 1]})
    with pytest.raises(AssertionError):  # an integer save index is not a time axis
        assert_results_layout(SimpleNamespace(summary={}, dataset=io.as_tree({"gf": index})),
                              tmp_path / "c")


def test_width_sweep_masks_its_padded_neurons():
    assert io.neuron_mask([[1, 3]], 3).tolist() == [[[True, False, False], [True] * 3]]
    key = jax.random.key(0)
    data = gflow.data.teacher(key, 8, 3, 2)

    def make_run(seed, width):
        net = gflow.TwoLayer(width)
        return gflow.Run(net, gflow.init.gaussian(jax.random.fold_in(key, seed), net, 3), data,
                         dynamics=gflow.GD(0.1), t1=0.2, save=gflow.LinTimes(2))

    ds = gflow.sweep(make_run, seeds=[0], width=[2, 4]).to_xarray()
    valid = ds["neuron_valid"]
    assert valid.dims == ("seed", "width", "neuron") and "long_name" in valid.attrs
    assert valid.values.tolist() == [[[True, True, False, False], [True] * 4]]
    # the padded neurons of the width-2 net are zeros: the mask is what tells them apart
    W = ds["params_final_W"].sel(seed=0, width=2).values
    assert np.all(W[2:] == 0) and np.all(W[:2] != 0)
    # a CLI sweep stacks points of different widths: NaN-padded, and masked the same way
    points = [xr.Dataset({"a": ("neuron", np.ones(n))}) for n in (2, 4)]
    both = io.groups(experiments.combine_points([{"g": p} for p in points],
                                                {"width": [2, 4]}))["g"]
    assert both["neuron_valid"].values.tolist() == [[True, True, False, False], [True] * 4]
    assert np.isnan(both["a"].values[0, 2:]).all()

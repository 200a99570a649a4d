"""Test helpers: pytree and trajectory comparison, dtype-dependent tolerances, and the
linear problem several tests solve in closed form."""

import jax
import numpy as np

# Tolerances for results that should agree up to rounding: float32 has ~7 digits,
# float64 ~16; accumulated through a solve we allow a few hundred ulps.
RTOL = {"float32": 1e-4, "float64": 1e-10}


def tree_allclose(a, b, rtol=1e-6, atol=0.0) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    if len(la) != len(lb) or jax.tree.structure(a) != jax.tree.structure(b):
        return False
    return all(np.allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)
               for x, y in zip(la, lb, strict=True))


def tree_max_abs_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def assert_same_run(a, b, attrs=("params_final",)):
    """Bitwise equal trajectories: stop times, save times, every observable of ``b`` and
    the parameter pytrees ``attrs`` (for runs that are the same program's steps)."""
    np.testing.assert_array_equal(a.t_stop, b.t_stop)
    np.testing.assert_array_equal(a.times, b.times)
    for k in b.observables:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for attr in attrs:
        for x, y in zip(jax.tree.leaves(getattr(a, attr)), jax.tree.leaves(getattr(b, attr)),
                        strict=True):
            np.testing.assert_array_equal(x, y, err_msg=attr)


def assert_same_results(a, b):
    """Bitwise equal results folders: the same groups in ``trajectory.nc``, each with the
    same variables and values (same machine, dtype, settings and seed)."""
    from gflow import io

    ta, tb = io.read_trajectory(a), io.read_trajectory(b)
    assert list(ta.children) == list(tb.children) and ta.children
    for name in ta.children:
        ga, gb = ta[name].to_dataset(), tb[name].to_dataset()
        assert set(ga.variables) == set(gb.variables), name
        for k in ga.variables:
            np.testing.assert_array_equal(ga[k].values, gb[k].values, err_msg=f"{name}/{k}")


def _keys(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _keys(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _keys(v)


def assert_results_layout(result, folder):
    """An experiment's result written to ``folder`` and read back is in the documented
    layout (gflow.io, "Results on disk"), and equal to what was written: a root of
    attributes only (``Conventions``, ``source``, ``config``, ``groups``), one level of
    groups without their name as a prefix, a float ``time`` coordinate with the definition
    of t wherever there is a time axis, no time point at which none of the group's runs has
    a value (no NaN-merged grids), boolean ``*_valid`` masks with attributes, and
    ``summary.json`` keys that are strings with integers written as integers."""
    import json
    import re

    from gflow import io

    io.write_results(folder, config={"experiment": "layout", "settings": {}},
                     summary={"experiment": "layout", **result.summary}, dataset=result.dataset)
    back = io.read_trajectory(folder)
    assert not back.ds.variables and {"Conventions", "source", "config", "groups"} <= set(
        back.attrs)
    assert back.attrs["groups"].split(",") == list(back.children) == list(
        result.dataset.children)
    for name, node in back.children.items():
        assert not node.children, name
        g, orig = node.to_dataset(), result.dataset[name].to_dataset()
        names = [str(v) for v in [*g.variables, *g.dims]]
        assert not [v for v in names if v.startswith(f"{name}_")], (name, names)
        if "time" in g.dims or "time" in g.variables:
            assert "time" in g.coords and np.issubdtype(g["time"].dtype, np.floating), name
            assert "k * lr" in g["time"].attrs["long_name"], name
        over_time = [v for v in g.data_vars if "time" in g[v].dims
                     and np.issubdtype(g[v].dtype, np.floating)]
        if over_time and "time" in g.dims:
            seen = np.zeros(g.sizes["time"], bool)
            for v in over_time:
                x = np.isfinite(g[v].transpose("time", ...).values)
                seen |= x.reshape(x.shape[0], -1).any(axis=1)
            assert seen.all(), f"{name}: saves {np.flatnonzero(~seen)} hold no value"
        for v in g.data_vars:
            if str(v).endswith("_valid"):
                assert g[v].dtype == bool and "long_name" in g[v].attrs, (name, v)
        assert set(g.variables) == set(orig.variables), name
        for v in orig.variables:  # the round trip keeps every value
            np.testing.assert_array_equal(g[v].values, orig[v].values, err_msg=f"{name}/{v}")
    keys = list(_keys(json.loads((folder / "summary.json").read_text())))
    assert all(isinstance(k, str) and not re.fullmatch(r"-?\d+\.0", k) for k in keys)
    return back


def linear_problem():
    """``(net, p0, data, objective)``: a linear two-layer net with fixed outer weights on 20
    Gaussian teacher points in d=3, squared loss -- a quadratic loss in ``W``."""
    import gflow

    k1, k2 = jax.random.split(jax.random.key(0))
    data = gflow.data.teacher(k1, 20, 3, 2, inputs="gaussian", n_test=0)
    net = gflow.TwoLayer(4, "linear", bias=False, train_outer=False)
    p0 = gflow.init.gaussian(k2, net, 3)
    return net, p0, data, data.objective(net, gflow.losses.get_loss("squared"))

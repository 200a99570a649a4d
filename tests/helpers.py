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


def linear_problem():
    """``(net, p0, data, objective)``: a linear two-layer net with fixed outer weights on 20
    Gaussian teacher points in d=3, squared loss -- a quadratic loss in ``W``."""
    import gflow

    k1, k2 = jax.random.split(jax.random.key(0))
    data = gflow.data.teacher(k1, 20, 3, 2, inputs="gaussian", n_test=0)
    net = gflow.TwoLayer(4, "linear", bias=False, train_outer=False)
    p0 = gflow.init.gaussian(k2, net, 3)
    return net, p0, data, data.objective(net, gflow.losses.get_loss("squared"))

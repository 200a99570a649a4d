"""Hostile inputs (property-based, hypothesis): every input either gives a result with
finite values and a sensible status, or a gflow ``ValueError`` / ``SimulationError`` --
never another exception type, a hang or a crash.

Examples are few and shapes come from small fixed sets, so the number of distinct compiled
programs (the cost of this file) stays bounded.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import gflow
import gflow.times
from gflow.simulate import SimulationError

# derandomized (reproducible in CI) and no example database written into the checkout
FAST = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
SLOWER = settings(max_examples=12, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))

GOOD_STATUS = ("completed", "stop_loss", "stop_grad")
POISON = st.sampled_from([None, np.nan, np.inf, -np.inf, 1e38, -1e300])


def _poison(arr, value, where):
    arr = np.array(arr, dtype=np.float64 if value is not None else arr.dtype)
    if value is not None and arr.size:
        arr.flat[where % arr.size] = value
    return arr


@FAST
@given(n=st.integers(0, 3), d=st.integers(0, 3), extra=st.booleans(),
       dtype=st.sampled_from(["float32", "float64", "int32", "bool", "complex64", "str"]),
       value=POISON, where=st.integers(0, 20), ny=st.integers(0, 4))
def test_dataset_rejects_or_accepts_cleanly(n, d, extra, dtype, value, where, ny):
    shape = (n, d, 2) if extra else (n, d)
    X = np.ones(shape).astype(dtype) if dtype != "str" else np.full(shape, "a")
    if dtype in ("float32", "float64"):
        X = _poison(X, value, where)
    y = np.zeros(ny)
    try:
        data = gflow.Dataset(X, y)
    except ValueError:
        return
    assert data.X.ndim == 2 and data.X.shape == (ny, data.d) and data.d >= 1
    assert np.all(np.isfinite(np.asarray(data.X)))


TIMES = st.lists(st.sampled_from([0.0, 0.5, 1.0, 1.0, 2.0, -1.0, np.nan, np.inf, 1e-300,
                                  1e300]), min_size=0, max_size=5)
T1 = st.sampled_from([1e-300, 1e-9, 1.0, 1e7, 1e300, 0.0, -1.0, np.nan, np.inf, "x", None])


@FAST
@given(times=TIMES, t1=T1, spec=st.sampled_from(["array", "log", "lin", "int"]),
       k=st.integers(-1, 4))
def test_save_times_are_sorted_in_range_or_rejected(times, t1, spec, k):
    try:
        t1 = gflow.times.check_t1(t1)
        save = {"array": times, "log": None, "lin": None, "int": k}[spec]
        if spec == "log":
            save = gflow.LogTimes(k)
        elif spec == "lin":
            save = gflow.LinTimes(k)
        ts = gflow.times.resolve_times(save, t1)
    except ValueError:
        return
    assert ts.ndim == 1 and ts.size >= 1 and np.all(np.isfinite(ts))
    assert np.all(np.diff(ts) > 0) and ts[0] >= 0 and ts[-1] <= t1 * (1 + 1e-12)


N, D = 6, 2


def _data(labels, scale):
    key = jax.random.key(0)
    X = jax.random.normal(key, (N, D)) * scale
    y = {"regression": jnp.sin(X[:, 0]),
         "pm1": jnp.where(X[:, 0] > 0, 1.0, -1.0),
         "01": (X[:, 0] > 0).astype(float)}[labels]
    return gflow.Dataset(X, y)


def _check_result(traj):
    event(f"result: {traj.status}")
    assert traj.status in GOOD_STATUS, traj.status
    assert traj.times[-1] == pytest.approx(traj.t_stop) or traj.status == "completed"
    for k, v in traj.observables.items():
        assert np.all(np.isfinite(v)), k
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(traj.params_final))


def _check_outcome(run) -> None:
    """``run()`` either refuses with a clear gflow error or returns a sound trajectory."""
    try:
        traj = run()
    except (ValueError, SimulationError) as e:
        event(f"refused: {type(e).__name__}: {str(e)[:40]}")
        return
    _check_result(traj)


# sane values first: hypothesis starts (and shrinks) towards the first ones
# (weighted towards valid saves: bad ones are covered above and stop before the solver)
SAVES = st.sampled_from(["lin4"] * 4 + ["log4"] * 2 + ["dup", "unsorted", "beyond"])


def _save(kind, t1):
    return {"lin4": gflow.LinTimes(4), "log4": gflow.LogTimes(4),
            "dup": [0.0, t1 / 2, t1 / 2, t1], "unsorted": [0.0, t1, t1 / 2, t1 / 4],
            "beyond": [0.0, t1 / 3, t1, 2 * t1]}[kind]


@example(width=1, lr=0.1, steps=10, loss="logistic", labels="pm1", scale=1.0, save="lin4",
         poison=None)  # width 1, logistic: completes
@example(width=3, lr=10.0, steps=3, loss="squared", labels="regression", scale=1e20,
         save="log4", poison=None)  # huge data and lr: diverges
@example(width=3, lr=1e30, steps=100, loss="squared", labels="regression", scale=1.0,
         save="lin4", poison=None)  # absurd lr: diverges
@settings(FAST, max_examples=40)
@given(width=st.sampled_from([1, 3]), lr=st.sampled_from([0.1, 1e-3, 10.0, 1e3, 1e30, 1e-300]),
       steps=st.sampled_from([10, 100, 3, 1, 10**12, 1e-6]),  # t1 = steps x lr
       loss=st.sampled_from(["squared", "logistic"]),
       labels=st.sampled_from(["regression", "pm1", "01"]),
       scale=st.sampled_from([1.0, 1e20]), save=SAVES, poison=POISON)
def test_gd_hostile_configs(width, lr, steps, loss, labels, scale, save, poison):
    t1 = steps * lr
    net = gflow.TwoLayer(width, "tanh", bias=False)
    p0 = gflow.init.gaussian(jax.random.key(1), net, D)
    if poison is not None:
        p0 = type(p0)(W=p0.W.at[0, 0].set(poison), b=p0.b, a=p0.a)
    _check_outcome(lambda: gflow.simulate(
        net, p0, _data(labels, scale), loss=loss, dynamics=gflow.GD(lr), t1=t1,
        save=_save(save, t1), observe=("loss", "grad_norm")))


@SLOWER
@given(t1=st.sampled_from([1.0, 1e-3, 1e-9, 1e7]), scale=st.sampled_from([1.0, 1e20]),
       save=SAVES, poison=st.sampled_from([None, np.nan, 1e30]))
def test_gf_hostile_configs(t1, scale, save, poison):
    net = gflow.TwoLayer(1, "tanh", bias=False)  # width 1
    p0 = gflow.init.gaussian(jax.random.key(1), net, D)
    if poison is not None:
        p0 = type(p0)(W=p0.W.at[0, 0].set(poison), b=p0.b, a=p0.a)
    # a bounded number of steps: t1 = 1e7 must end in max_steps, not run for long
    dyn = gflow.GradientFlow(max_steps=2000)
    _check_outcome(lambda: gflow.simulate(
        net, p0, _data("regression", scale), dynamics=dyn, t1=t1, save=_save(save, t1),
        observe=("loss", "grad_norm")))


@FAST
@given(shape_W=st.sampled_from([(3, 2), (3, 3), (2, 2), (3,), (0, 2)]),
       dtype=st.sampled_from(["float32", "int32", "complex64"]), drop_a=st.booleans())
def test_bad_params_are_value_errors(shape_W, dtype, drop_a):
    net = gflow.TwoLayer(3, "tanh", bias=False)
    W = np.ones(shape_W).astype(dtype)
    a = None if drop_a else np.ones(3, dtype)
    params = gflow.TwoLayerParams(W=W, b=None, a=a)
    _check_outcome(lambda: gflow.simulate(net, params, _data("regression", 1.0),
                                          dynamics=gflow.GD(0.1), t1=0.4,
                                          save=gflow.LinTimes(4)))


def test_huge_step_count_is_a_value_error():
    # found by test_gd_hostile_configs: 1e15 steps used to be a MemoryError
    net = gflow.TwoLayer(1, "tanh", bias=False)
    p0 = gflow.init.gaussian(jax.random.key(1), net, D)
    with pytest.raises(ValueError, match="t1 / lr"):
        gflow.simulate(net, p0, _data("regression", 1.0), dynamics=gflow.GD(1e-3), t1=1e12,
                       save=gflow.LinTimes(4))


JSONISH = st.recursive(st.none() | st.booleans() | st.integers(-10, 10**20)
                       | st.floats(allow_nan=True) | st.text(max_size=8),
                       lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c,
                                                                             max_size=3),
                       max_leaves=6)


@FAST
@given(values=st.dictionaries(st.sampled_from(["seed", "n", "width", "t1", "lr", "nope"]),
                              JSONISH, max_size=4))
def test_config_values_typed_or_rejected(values):
    from gflow.experiments import config_from_dict, quickstart

    try:
        cfg = config_from_dict(quickstart.Config, values)
    except ValueError:
        return
    for k, v in values.items():  # accepted values keep their type (ints may become floats)
        got = getattr(cfg, k)
        assert type(got) is type(quickstart.Config.__dataclass_fields__[k].default) and got == v \
            or (got != got and v != v)


@example(widths=None, lrs=0.1, chunk_size=-1)  # was a TypeError
@example(widths=(1, 2, 3), lrs=(0.1, 0.05, 0.2), chunk_size=2)
@SLOWER
@given(widths=st.sampled_from([None, (1, 2, 3), (3, 3, 3), (0, 2, 3), (1, 2, 4), (1, 2)]),
       lrs=st.sampled_from([0.1, (0.1, 0.05, 0.2), (0.1, np.nan, 0.2), (0.1, -1.0, 0.2),
                            (0.1, 0.2)]),
       chunk_size=st.sampled_from([None, 2, 1, 10, 0, -1, 1.5]))
def test_ensemble_hostile_settings(widths, lrs, chunk_size):
    net = gflow.TwoLayer(3, "tanh", bias=False)
    P = jax.vmap(lambda k: gflow.init.gaussian(k, net, D))(jax.random.split(jax.random.key(2), 3))
    try:
        lr = lrs if np.ndim(lrs) == 0 else np.asarray(lrs)
        traj = gflow.simulate_ensemble(
            net, P, _data("regression", 1.0), dynamics=gflow.GD(lr), t1=1.0,
            save=gflow.LinTimes(4), widths=None if widths is None else np.asarray(widths),
            chunk_size=chunk_size, throw=True)
    except (ValueError, SimulationError) as e:
        event(f"refused: {type(e).__name__}: {str(e)[:40]}")
        return
    event("result")
    assert list(traj.status) == ["completed"] * 3
    assert np.all(np.isfinite(traj["loss"]))

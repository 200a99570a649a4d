"""Kink-aware gradient flow (``GradientFlow(kinks=True)``) tested against mathematics.

The reference is the same flow at a tight tolerance; plain Tsit5 converges to it at first
order (the kinks), the kink-aware mode at the solver's order, with the conserved
``a_j^2 - |w_j|^2 - b_j^2`` as an independent check.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow


def _problem(*, activation="relu", bias=True, scaling="ntk", m=12, n=24, d=3, key=4):
    k1, k2 = jax.random.split(jax.random.key(key))
    ds = gflow.data.teacher(k1, n, d, 3, inputs="gaussian", n_test=0)
    net = gflow.TwoLayer(m, activation, scaling=scaling, bias=bias)
    return net, gflow.init.gaussian(k2, net, d), ds


def _flat(p):
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(p)])


def _run(net, p0, ds, rtol, *, kinks=True, t1=4.0, **kw):
    dyn = gflow.GradientFlow(rtol=rtol, atol=rtol * 1e-2, kinks=kinks, max_steps=400_000)
    return gflow.simulate(net, p0, ds, dynamics=dyn, t1=t1, save=gflow.LinTimes(5), **kw)


@pytest.mark.slow  # the order at kinks; kinks=True accuracy is covered by the other tests
def test_kinks_converge_to_the_flow_plain_tsit5_approaches_at_first_order(x64):
    net, p0, ds = _problem()
    ref = _run(net, p0, ds, 1e-12)
    # the problem is meant to exercise both mechanisms: switches and a sliding mode
    assert ref.stats["num_switches"] >= 10 and ref.stats["num_slides"] >= 1
    # every tolerance takes the same branch: same switches, errors tracking the tolerance
    runs = {r: _run(net, p0, ds, r) for r in (1e-6, 1e-8, 1e-13)}
    assert all(t.stats["num_switches"] == ref.stats["num_switches"] for t in runs.values())
    err = {r: np.max(np.abs(_flat(t.params_final) - _flat(ref.params_final)))
           for r, t in runs.items()}
    assert err[1e-13] <= 1e-10
    # global error tracks the tolerance (a few x rtol): measured 1.2 rtol and 2.1 rtol
    assert err[1e-6] <= 1e-5 and err[1e-8] <= 1e-7
    plain = {r: _run(net, p0, ds, r, kinks=False) for r in (1e-6, 1e-7)}
    perr = {r: np.max(np.abs(_flat(t.params_final) - _flat(ref.params_final)))
            for r, t in plain.items()}
    # plain Tsit5 heads for the same solution (error falls ~10x per decade of rtol: first
    # order across kinks) but stays far less accurate for far more steps
    assert perr[1e-7] <= perr[1e-6] / 4
    assert perr[1e-7] > 10 * err[1e-8]
    assert plain[1e-7].stats["num_steps"] >= 10 * runs[1e-8].stats["num_steps"]


def test_first_root_finds_sign_changes_and_dips(x64):
    from gflow.kinks import GRID, _first_root

    c = 0.5 + 0.5 / GRID  # the middle of a grid interval
    # rows: falls through 0 at 0.3; dips below 0 and back inside one grid interval (both
    # grid values positive); dips but stays above 0; starts at 0 rising (a pair that has
    # just switched); never crosses
    polys = [[0.3, -1, 0, 0, 0], [c * c - 1e-5, -2 * c, 1, 0, 0], [c * c + 1e-5, -2 * c, 1, 0, 0],
             [0.0, 1.0, 0, 0, 0], [1.0, 0.5, 0, 0, 0]]
    Q = jnp.asarray(np.array(polys, float).T[:, None, :])  # (deg + 1, n=1, m=5)
    root = np.asarray(_first_root(Q, jnp.ones((1, 5), bool)))[0]
    np.testing.assert_allclose(root[:2], [0.3, c - np.sqrt(1e-5)], rtol=1e-12)
    assert np.all(np.isinf(root[2:]))
    # inactive pairs (sliding) are never reported
    assert np.all(np.isinf(np.asarray(_first_root(Q, jnp.zeros((1, 5), bool)))))


def test_kinks_tight_tolerances_agree_on_a_sliding_problem(x64):
    # the work-precision problem of benchmarks/case6: 125 switches, 4 sliding pairs; pairs
    # leave their kinks tangentially, where rounding noise must not count as a crossing
    k1, k2 = jax.random.split(jax.random.key(0))
    ds = gflow.data.teacher(k1, n=50, d=4, teacher_width=4, inputs="gaussian", n_test=0)
    net = gflow.TwoLayer(40, "relu", scaling="ntk", bias=True)
    p0 = gflow.init.gaussian(k2, net, 4)
    a, b = (_run(net, p0, ds, r, t1=5.0) for r in (1e-12, 1e-13))
    assert a.stats["num_switches"] == b.stats["num_switches"]
    assert np.max(np.abs(_flat(a.params_final) - _flat(b.params_final))) <= 1e-10


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)],
                         indirect=True)  # float64: slow (the default suite runs float32)
@pytest.mark.parametrize("bias", [False, True])
def test_kinks_conserve_balancedness(dtype, bias):
    # every mode of the switched flow conserves a_j^2 - |w_j|^2 - b_j^2 exactly; the drift is
    # the integration error: <= 1e-10 in float64 at rtol 1e-11, and at float32 rounding
    # (x the quantity's size, ~10) at rtol 1e-6
    net, p0, ds = _problem(bias=bias)
    rtol, tol = (1e-11, 1e-10) if dtype == "float64" else (1e-6, 1e-4)
    tr = _run(net, p0, ds, rtol, observe=("balancedness", "loss"))
    bal = np.asarray(tr["balancedness"])
    assert np.max(np.abs(bal - bal[0])) <= tol * max(1.0, np.max(np.abs(bal[0])))
    assert tr["loss"][-1] < 0.5 * tr["loss"][0]


def test_kinks_loss_never_increases_and_saves_match_snapshots(x64):
    # along gradient flow dL/dt = -|grad L|^2 <= 0, across kinks too
    net, p0, ds = _problem(bias=False)
    dyn = gflow.GradientFlow(rtol=1e-9, atol=1e-11, kinks=True)
    tr = gflow.simulate(net, p0, ds, dynamics=dyn, t1=4.0, save=gflow.LinTimes(40),
                        observe=("loss", "param_norm"), save_params=True)
    loss = np.asarray(tr["loss"])
    assert np.all(np.diff(loss) <= 1e-12)
    # observables at save times are those of the saved (dense-output) parameters
    obj = gflow.objective.Objective(net, "squared", ds.X, ds.y)
    for i in (0, 7, 23, 39):
        p = jax.tree.map(lambda x, i=i: x[i], tr.params)
        assert abs(float(obj.loss(p)) - loss[i]) <= 1e-12 * max(1.0, loss[i])


def test_kinks_abs_sign_symmetry(x64):
    # |z| is even: (W, b) -> (-W, -b) gives the same function, so the flow maps to itself;
    # the abs activation's two slopes (-1, +1) and its switches are exercised
    net, p0, ds = _problem(activation="abs")
    q0 = gflow.TwoLayerParams(W=-p0.W, b=-p0.b, a=p0.a)
    a, b = _run(net, p0, ds, 1e-10), _run(net, q0, ds, 1e-10)
    assert a.stats["num_switches"] >= 5
    np.testing.assert_allclose(b.params_final.a, a.params_final.a, rtol=0, atol=1e-9)
    np.testing.assert_allclose(b.params_final.W, -a.params_final.W, rtol=0, atol=1e-9)


def test_kinks_stop_loss_reports_time(x64):
    net, p0, ds = _problem()
    loss0 = float(gflow.objective.Objective(net, "squared", ds.X, ds.y).loss(p0))
    tr = _run(net, p0, ds, 1e-8, stop_loss=0.5 * loss0, observe=("loss",))
    assert tr.status == "stop_loss" and 0 < tr.t_stop < 4.0
    obj = gflow.objective.Objective(net, "squared", ds.X, ds.y)
    # the crossing is located inside the step: the loss there is the level, to rounding
    np.testing.assert_allclose(float(obj.loss(tr.params_final)), 0.5 * loss0, rtol=1e-12)


def test_kinks_ensemble_equals_separate_runs(x64):
    net, _, ds = _problem(bias=False, m=8)
    keys = jax.random.split(jax.random.key(5), 2)
    p0 = jax.vmap(lambda k: gflow.init.gaussian(k, net, ds.d))(keys)
    dyn = gflow.GradientFlow(rtol=1e-9, atol=1e-11, kinks=True)
    ens = gflow.simulate_ensemble(net, p0, ds, dynamics=dyn, t1=3.0, save=gflow.LinTimes(4))
    for i in range(2):
        one = gflow.simulate(net, jax.tree.map(lambda x, i=i: x[i], p0), ds, dynamics=dyn, t1=3.0,
                             save=gflow.LinTimes(4))
        np.testing.assert_allclose(ens["loss"][i], one["loss"], rtol=1e-9)


@pytest.mark.parametrize("kinks", [False, True])
def test_new_tolerances_do_not_recompile(kinks, caplog):
    # rtol, atol and dt0 are values, not part of the compiled program
    net, p0, ds = _problem(bias=False, m=6, n=10)

    def run(rtol, dt0):
        dyn = gflow.GradientFlow(rtol, rtol * 1e-2, dt0=dt0, kinks=kinks)
        gflow.simulate(net, p0, ds, dynamics=dyn, t1=1.0, save=gflow.LinTimes(3))

    run(1e-4, 0.01)
    with jax.log_compiles(True), caplog.at_level("WARNING"):
        run(1e-6, 0.02)
    compiled = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert not any("solve" in m for m in compiled), compiled


def test_kinks_bad_input():
    net, p0, ds = _problem(activation="tanh")
    with pytest.raises(ValueError, match="piecewise-linear"):
        _run(net, p0, ds, 1e-6)
    with pytest.raises(ValueError, match="explicit Runge-Kutta"):
        gflow.GradientFlow(kinks=True, solver="kvaerno5")
    with pytest.raises(ValueError, match="kinks must be"):
        gflow.GradientFlow(kinks="yes")
    mlp = gflow.MLP((8, 8), "relu")
    with pytest.raises(ValueError, match="two-layer"):
        gflow.simulate(mlp, gflow.init.gaussian(jax.random.key(0), mlp, ds.d), ds,
                       dynamics=gflow.GradientFlow(kinks=True), t1=1.0)
    # the exact population loss has no dataset for the kinks to sit on
    from gflow import population as P

    relu = gflow.TwoLayer(4, "relu", "standard")
    tp = gflow.TwoLayerParams(W=jnp.eye(3)[:2], b=None, a=jnp.ones(2))
    with pytest.raises(ValueError, match="two-layer"):
        gflow.simulate(relu, gflow.init.gaussian(jax.random.key(0), relu, 3),
                       P.Population(gflow.TwoLayer(2, "relu", "standard"), tp),
                       dynamics=gflow.GradientFlow(kinks=True), t1=1.0)


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)],
                         indirect=True)  # float64: slow (the default suite runs float32)
def test_kinks_float32_runs_and_counts(dtype):
    net, p0, ds = _problem(bias=False)
    tr = _run(net, p0, ds, 1e-5 if dtype == "float32" else 1e-8, observe=("loss",))
    assert tr.status == "completed" and jnp.isfinite(tr["loss"]).all()
    s = tr.stats
    assert s["num_accepted_steps"] >= s["num_switches"] >= 1
    # Tsit5 is FSAL: 6 evaluations a step (+1 first stage, +2 for the initial step size), +1 to
    # restart after a switch, +1 to check the new side of a sign change (not where a slide ends)
    base = 3 + 6 * s["num_steps"]
    assert base + s["num_switches"] <= s["grad_evals"] <= base + 2 * s["num_switches"]

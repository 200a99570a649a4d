"""Dynamics tested against mathematics: closed forms, conserved quantities, orders."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg
from helpers import tree_allclose, tree_max_abs_diff

import gflow


def _problem(n=40, d=5, m=16, key=0, activation="relu", bias=False, train_outer=True,
             labels="regression"):
    k1, k2 = jax.random.split(jax.random.key(key))
    ds = gflow.data.teacher(k1, n, d, 3, labels=labels)
    net = gflow.TwoLayer(m, activation, bias=bias, train_outer=train_outer)
    return net, gflow.init.gaussian(k2, net, d), ds


def test_linear_flow_matches_closed_form(x64):
    # f(x) = c x.(W^T a) with a fixed: beta = c W^T a obeys beta' = -A beta + g with
    # A = c^2 |a|^2 X^T X / n, g = c^2 |a|^2 X^T y / n; and W - W0 = a (beta - beta0)^T / (c |a|^2).
    net, p0, ds = _problem(n=30, d=4, m=6, activation="linear", train_outer=False)
    c, a, X, y = net.prefactor, np.asarray(p0.a), np.asarray(ds.X), np.asarray(ds.y)
    n, t = X.shape[0], 3.0
    s = c**2 * (a @ a) / n
    A, g = s * X.T @ X, s * X.T @ y
    beta0 = c * np.asarray(p0.W).T @ a
    E = scipy.linalg.expm(-A * t)
    beta_t = E @ beta0 + (np.eye(4) - E) @ np.linalg.solve(A, g)
    W_t = np.asarray(p0.W) + np.outer(a, beta_t - beta0) / (c * (a @ a))
    tr = gflow.simulate(net, p0, ds, dynamics=gflow.GradientFlow(rtol=1e-10, atol=1e-12), t1=t,
                        save=gflow.LinTimes(3))
    assert np.max(np.abs(np.asarray(tr.params_final.W) - W_t)) <= 1e-6
    np.testing.assert_array_equal(tr.params_final.a, p0.a)  # fixed outer layer never moves


@pytest.mark.parametrize("bias, rtol", [(False, 1e-9), (True, 1e-6)])
def test_balancedness_conserved_by_gf_not_by_gd(x64, bias, rtol):
    # for ReLU, d/dt (a_j^2 - |w_j|^2 - b_j^2) = 0 along GF (1-homogeneity of relu in (w_j, b_j)).
    # With biases the activation pattern chatters (kinks), so tight rtol costs 1e5+ steps; the
    # conserved quantity still holds to ~1e-7 at rtol 1e-6.
    net, p0, ds = _problem(bias=bias)
    gf = gflow.simulate(net, p0, ds, dynamics=gflow.GradientFlow(rtol=rtol, atol=rtol * 1e-2),
                        t1=5.0, save=gflow.LinTimes(6), observe=("balancedness", "loss"))
    bal = gf["balancedness"]
    drift = np.max(np.abs(bal - bal[0])) / np.max(np.abs(bal[0]))
    assert drift <= 1e-6
    assert gf["loss"][-1] < 0.5 * gf["loss"][0]  # it did train
    gd = gflow.simulate(net, p0, ds, dynamics=gflow.GD(lr=0.5), t1=5.0, save=gflow.LinTimes(6),
                        observe=("balancedness",))
    # GD changes it by lr^2 (|grad_a|^2 - |grad_w|^2) per step: visibly non-zero at lr = 0.5
    assert np.max(np.abs(gd["balancedness"] - bal[0])) / np.max(np.abs(bal[0])) > 1e-4


def test_gd_converges_to_gf_at_order_one(x64):
    net, p0, ds = _problem(activation="tanh")
    t1 = 2.0
    ref = gflow.simulate(net, p0, ds, dynamics=gflow.GradientFlow(rtol=1e-12, atol=1e-12),
                         t1=t1, save=gflow.LinTimes(2)).params_final
    errs = []
    for lr in (0.1, 0.05, 0.025):
        gd = gflow.simulate(net, p0, ds, dynamics=gflow.GD(lr=lr), t1=t1, save=gflow.LinTimes(2))
        errs.append(tree_max_abs_diff(gd.params_final, ref))
    ratios = np.array(errs[:-1]) / np.array(errs[1:])
    # Euler's global error is C lr + O(lr^2): halving lr halves it
    np.testing.assert_allclose(ratios, 2.0, rtol=0.1)


def test_sgd_with_full_batch_is_gd(dtype):
    net, p0, ds = _problem()
    gd = gflow.simulate(net, p0, ds, dynamics=gflow.GD(lr=0.1), t1=3.0, save=gflow.LinTimes(4))
    sgd = gflow.simulate(net, p0, ds, dynamics=gflow.SGD(lr=0.1, batch_size=ds.n,
                                                         key=jax.random.key(5)),
                         t1=3.0, save=gflow.LinTimes(4))
    # same math, samples summed in another order: equal up to rounding
    assert tree_allclose(gd.params_final, sgd.params_final,
                         rtol=1e-4 if dtype == "float32" else 1e-11, atol=1e-6)
    # host-side float64 step grids of the same lr: exact
    np.testing.assert_array_equal(gd.times, sgd.times)


def test_sgd_minibatches_without_replacement():
    # one epoch of SGD with batch 1 and a linear model: each sample is visited once
    net, p0, ds = _problem(n=8)
    a = gflow.simulate(net, p0, ds, dynamics=gflow.SGD(0.1, 2, key=jax.random.key(1)), t1=0.8)
    b = gflow.simulate(net, p0, ds, dynamics=gflow.SGD(0.1, 2, key=jax.random.key(1)), t1=0.8)
    c = gflow.simulate(net, p0, ds, dynamics=gflow.SGD(0.1, 2, key=jax.random.key(2)), t1=0.8)
    assert tree_allclose(a.params_final, b.params_final, rtol=0)  # deterministic in the key
    assert not tree_allclose(c.params_final, a.params_final, rtol=1e-6)


def test_discrete_time_axis_and_rounding():
    net, p0, ds = _problem()
    tr = gflow.simulate(net, p0, ds, dynamics=gflow.GD(lr=0.3), t1=3.0,
                        save=np.array([0.0, 0.5, 1.0, 3.0]))
    np.testing.assert_allclose(tr.times, [0.0, 0.6, 0.9, 3.0])  # nearest steps k*lr
    assert tr.stats["num_steps"] == 10


def test_gd_schedule_time_is_sum_of_lrs():
    net, p0, ds = _problem()
    sched = optax.linear_schedule(0.2, 0.05, 20)
    tr = gflow.simulate(net, p0, ds, dynamics=gflow.GD(lr=sched), t1=2.0, save=gflow.LinTimes(5))
    lrs = np.asarray(jax.vmap(sched)(jnp.arange(tr.stats["num_steps"])))
    np.testing.assert_allclose(tr.times[-1], lrs.sum(), rtol=1e-6)


def test_optax_sgd_equals_gd():
    net, p0, ds = _problem()
    gd = gflow.simulate(net, p0, ds, dynamics=gflow.GD(lr=0.1), t1=2.0)
    ox = gflow.simulate(net, p0, ds, dynamics=gflow.Optax(optax.sgd(0.1), lr=0.1), t1=2.0)
    assert tree_allclose(gd.params_final, ox.params_final, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dyn", [gflow.GradientFlow(),
                                 gflow.GD(0.1),
                                 gflow.Optax(optax.adamw(1e-2, weight_decay=0.1), lr=1e-2)])
def test_fixed_outer_layer_never_moves(dyn):
    net, p0, ds = _problem(train_outer=False)
    tr = gflow.simulate(net, p0, ds, dynamics=dyn, t1=1.0)
    # fixed layer: its gradient is exactly 0, so every step (GD, SGD, RK stages) adds 0
    np.testing.assert_array_equal(tr.params_final.a, p0.a)
    assert not np.array_equal(tr.params_final.W, p0.W)
    g = gflow.Objective(net, "squared", ds.X, ds.y).grad(p0)
    assert float(jnp.max(jnp.abs(g.a))) == 0.0  # masked gradient: exactly zero


@pytest.mark.parametrize("dyn", [gflow.GradientFlow(rtol=1e-6, atol=1e-8), gflow.GD(0.1),
                                 gflow.SGD(0.1, 20, key=jax.random.key(0))])
def test_stop_loss(dtype, dyn):
    net, p0, ds = _problem(labels="sign")
    L0 = float(gflow.Objective(net, "logistic", ds.X, ds.y).loss(p0))
    tr = gflow.simulate(net, p0, ds, loss="logistic", dynamics=dyn, t1=1e3, stop_loss=0.8 * L0,
                        observe=("loss", "accuracy"))
    assert tr.status == "stop_loss" and 0 < tr.t_stop < 1e3
    assert tr.times[-1] == tr.t_stop and np.all(np.diff(tr.times) > 0)
    if dyn.kind == "gf":  # the crossing, located inside the step: the level, to rounding
        eps = np.finfo(tr["loss"].dtype).eps
        np.testing.assert_allclose(tr["loss"][-1], 0.8 * L0, rtol=64 * eps)
    else:  # the first iterate below the level
        assert tr["loss"][-1] < 0.8 * L0
    assert np.all(tr["loss"][:-1] >= 0.8 * L0 * 0.999)


def test_stop_grad():
    net, p0, ds = _problem()
    tr = gflow.simulate(net, p0, ds, dynamics=gflow.GD(0.2), t1=1e3, stop_grad=1e-2,
                        observe=("grad_norm",))
    assert tr.status == "stop_grad" and tr["grad_norm"][-1] < 1e-2 <= tr["grad_norm"][-2]


def test_divergence_is_reported_with_time():
    net, p0, ds = _problem()
    with pytest.raises(gflow.SimulationError, match=r"diverged at t="):
        gflow.simulate(net, p0, ds, dynamics=gflow.GD(lr=50.0), t1=1e4)
    tr = gflow.simulate(net, p0, ds, dynamics=gflow.GD(lr=50.0), t1=1e4, throw=False)
    assert tr.status == "diverged" and tr.t_stop < 1e4
    # the record runs up to the first iterate whose loss or parameters are non-finite
    assert np.all(np.isfinite(tr["loss"][:-1])) and tr.times[-1] == tr.t_stop
    assert tr["loss"][-1] > 1e6 * tr["loss"][0] or not np.isfinite(tr["loss"][-1])
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(tr.params_final))


def test_gf_nonfinite_loss_is_divergence():
    # exp(-y f) overflows in float32 for these huge weights: diverged at once, at t = 0
    net, p0, ds = _problem(labels="sign", m=16)
    big = jax.tree.map(lambda x: 60 * x, p0)
    with pytest.raises(gflow.SimulationError, match="diverged at t=0"):
        gflow.simulate(net, big, ds, loss="exponential", t1=10.0)
    tr = gflow.simulate(net, big, ds, loss="exponential", t1=10.0, throw=False)
    assert tr.status == "diverged" and tr.t_stop == 0.0  # a non-finite start stops at t = 0 exactly


def test_gf_finite_time_blowup_is_reported():
    # L = -mean f^2 with a linear net is unbounded below and GF blows up in finite time:
    # the step size collapses there, and the error says so with the time
    net, p0, ds = _problem(activation="linear")
    with pytest.raises(gflow.SimulationError, match=r"t=1\.\d+ .*rejected"):
        gflow.simulate(net, p0, ds, loss=lambda f, y: -(f**2), t1=1e3,
                       dynamics=gflow.GradientFlow(max_steps=2000))


def test_max_steps_error_suggests_fixes():
    net, p0, ds = _problem()
    with pytest.raises(gflow.SimulationError, match="rtol"):
        gflow.simulate(net, p0, ds, dynamics=gflow.GradientFlow(max_steps=3), t1=100.0)
    tr = gflow.simulate(net, p0, ds, dynamics=gflow.GradientFlow(max_steps=3), t1=100.0,
                        throw=False)
    assert tr.status == "max_steps"


@pytest.mark.parametrize("solver", ["dopri5", "heun", "bosh3"])
def test_solvers_by_name_agree(solver):
    net, p0, ds = _problem(activation="tanh")
    ref = gflow.simulate(net, p0, ds, t1=2.0, dynamics=gflow.GradientFlow(rtol=1e-7, atol=1e-9))
    tr = gflow.simulate(net, p0, ds, t1=2.0,
                        dynamics=gflow.GradientFlow(solver=solver, rtol=1e-7, atol=1e-9))
    assert tree_max_abs_diff(tr.params_final, ref.params_final) < 1e-4
    assert tr.stats["num_steps"] > 0 and tr.stats["grad_evals"] >= tr.stats["num_steps"]


def test_save_params_snapshots_match_observables():
    net, p0, ds = _problem()
    tr = gflow.simulate(net, p0, ds, dynamics=gflow.GD(0.1), t1=1.0, save=gflow.LinTimes(5),
                        save_params=True, observe=("weight_movement",))
    assert tr.params.W.shape == (5, 16, 5)
    flat = lambda tree: np.concatenate([np.reshape(x, x.shape[:1] + (-1,))  # noqa: E731
                                        for x in jax.tree.leaves(tree)], axis=1)
    mv = np.linalg.norm(flat(tr.params) - flat(jax.tree.map(lambda x: x[None], p0)), axis=1)
    np.testing.assert_allclose(tr["weight_movement"], mv, rtol=1e-5, atol=1e-6)


def test_determinism():
    net, p0, ds = _problem()
    dyn = gflow.SGD(0.1, 8, key=jax.random.key(0))
    a = gflow.simulate(net, p0, ds, dynamics=dyn, t1=2.0, observe=("loss", "margin"))
    b = gflow.simulate(net, p0, ds, dynamics=dyn, t1=2.0, observe=("loss", "margin"))
    # the same compiled program twice on the same inputs: exact
    np.testing.assert_array_equal(a["loss"], b["loss"])
    assert tree_allclose(a.params_final, b.params_final, rtol=0)


@pytest.mark.parametrize("make", [lambda lr: gflow.GD(lr), lambda lr: gflow.GradientFlow(),
                                  lambda lr: gflow.SGD(lr, 8, key=jax.random.key(int(lr * 10)))])
def test_new_values_do_not_recompile(make, caplog):
    # same shapes, new values (lr, seed, data, t1): the compiled program is reused
    def run(seed, lr, t1):
        net, p0, ds = _problem(key=seed)
        gflow.simulate(net, p0, ds, dynamics=make(lr), t1=t1, save=gflow.LinTimes(5),
                       observe=("loss", "weight_movement"))

    run(0, 0.1, 2.0)
    with jax.log_compiles(True), caplog.at_level("WARNING"):
        run(1, 0.3, 3.0)
    compiled = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert not any("solve" in m for m in compiled), compiled


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)],
                         indirect=True)  # float64: slow (the default suite runs float32)
@pytest.mark.parametrize("solver, controller", [
    ("tsit5", "pid"), pytest.param("dopri5", "i", marks=pytest.mark.slow)])
def test_automatic_first_step_is_hairers(dtype, solver, controller):
    # dt0=None starts from Hairer's rule (Solving ODEs I, II.4), written out here from the
    # textbook with q + 1 = 5 for these 5(4) pairs -- not from diffrax's fixed 0.01: the
    # solve equals one given that step explicitly, and a 0.01 start differs
    from jax.flatten_util import ravel_pytree

    from gflow.objective import Objective

    net, p0, ds = _problem(activation="tanh")
    rtol, atol = 1e-5, 1e-7
    obj = Objective(net, "squared", ds.X, ds.y)
    y0 = np.concatenate([np.ravel(x) for x in jax.tree.leaves(p0)]).astype(np.float64)
    flat = lambda p: np.concatenate([np.ravel(x) for x in jax.tree.leaves(p)])  # noqa: E731
    unflat = ravel_pytree(p0)[1]
    f = lambda y: -flat(obj.grad(unflat(jnp.asarray(y, dtype))))  # noqa: E731
    rms = lambda v: np.sqrt(np.mean(v**2))  # noqa: E731
    sc = atol + rtol * np.abs(y0)
    f0 = f(y0)
    d0, d1 = rms(y0 / sc), rms(f0 / sc)
    h0 = 0.01 * d0 / d1
    d2 = rms((f(y0 + h0 * f0) - f0) / sc) / h0
    h = min(100 * h0, (0.01 / max(d1, d2)) ** (1 / 5))
    run = lambda dt0: gflow.simulate(  # noqa: E731
        net, p0, ds, t1=2.0, save=np.array([0.0, 2.0]),
        dynamics=gflow.GradientFlow(rtol=rtol, atol=atol, solver=solver, controller=controller,
                                    dt0=dt0))
    auto, given, fixed = run(None), run(h), run(0.01)
    assert abs(h - 0.01) > 0.1 * h  # the problem tells the two starts apart
    tol = {"float32": 1e-5, "float64": 1e-12}[dtype]  # Hairer's h computed in another order
    assert tree_max_abs_diff(auto.params_final, given.params_final) <= tol * 10
    assert auto.stats["num_steps"] == given.stats["num_steps"]
    # the rule evaluates f0 and f(y0 + h0 f0); f0 is also the first step's first stage
    assert auto.stats["grad_evals"] == given.stats["grad_evals"] + 1
    assert tree_max_abs_diff(auto.params_final, fixed.params_final) > 0


@pytest.mark.parametrize("solver, dt0", [("tsit5", None), ("dopri5", 0.05), ("bosh3", None),
                                         ("heun", None)])
def test_grad_evals_counts_every_evaluation(monkeypatch, solver, dt0):
    # stats["grad_evals"] (from the tableau and the step count) equals the number of
    # gradient evaluations the solve actually runs, rejected steps and first step included
    from gflow.objective import Objective

    calls = [0]
    grad = Objective.grad

    def counted(self, params):
        jax.debug.callback(lambda: calls.__setitem__(0, calls[0] + 1))
        return grad(self, params)

    monkeypatch.setattr(Objective, "grad", counted)
    net, p0, ds = _problem(n=37, m=11, activation="tanh")  # sizes of no other test: traced anew
    tr = gflow.simulate(net, p0, ds, t1=3.0, save=np.array([0.0, 3.0]),
                        dynamics=gflow.GradientFlow(solver=solver, rtol=1e-5, atol=1e-7, dt0=dt0))
    assert tr.stats["grad_evals"] == calls[0] > tr.stats["num_steps"] > 0


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_tree_finite_catches_each_non_finite_value(dtype, bad):
    # divergence checks: False exactly when some entry of some leaf is inf or NaN, True for
    # finite entries, the largest ones included (no overflow)
    from gflow._tree import tree_finite

    big = jnp.full((4, 3), jnp.finfo(dtype).max, dtype)
    fn = jax.jit(tree_finite)
    assert bool(fn({"w": big, "a": -big[0]}))
    for i in range(3):
        assert not bool(fn({"w": big, "a": (-big[0]).at[i].set(bad)}))


def test_controller_object_carries_its_own_tolerances():
    # GradientFlow's rtol/atol/pcoeff/icoeff configure its named controllers; with a
    # controller object they would be ignored, so they are refused, naming them
    import diffrax

    pid = diffrax.PIDController(rtol=1e-5, atol=1e-7)
    for kw in ({"rtol": 1e-3}, {"atol": 1e-9}, {"pcoeff": 0.2}, {"icoeff": 0.5}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            gflow.GradientFlow(controller=pid, **kw)
    # the object's own tolerances apply: diffrax's default PID coefficients (0, 1) are
    # the classic integral controller, "i"
    net, p0, ds = _problem(activation="tanh")
    kw = dict(t1=2.0, save=gflow.LinTimes(3))
    obj = gflow.simulate(net, p0, ds, dynamics=gflow.GradientFlow(controller=pid), **kw)
    named = gflow.simulate(net, p0, ds, dynamics=gflow.GradientFlow(1e-5, 1e-7, controller="i"),
                           **kw)
    assert obj.stats["num_steps"] == named.stats["num_steps"]
    assert tree_max_abs_diff(obj.params_final, named.params_final) <= 1e-6
    loose = gflow.simulate(net, p0, ds, dynamics=gflow.GradientFlow(
        controller=diffrax.PIDController(rtol=1e-2, atol=1e-4)), **kw)
    assert loose.stats["num_steps"] < obj.stats["num_steps"]

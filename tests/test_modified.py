"""gflow.ModifiedFlow: the modified equations of GD against a closed form (a quadratic loss,
where the field is affine), against GD itself (global error O(lr^order)), and through the
ensemble and error paths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from helpers import tree_max_abs_diff

import gflow
from gflow.modified import modified_field


def _flat(p):
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(p)])


def _tanh_setup():
    ds = gflow.data.teacher(jax.random.key(0), 10, 3)
    net = gflow.TwoLayer(6, activation="tanh")
    return net, gflow.init.gaussian(jax.random.key(1), net, 3), ds


@pytest.mark.parametrize("order", [1, 2, 3])
def test_quadratic_loss_closed_form(x64, order):
    """A linear net with fixed outer weights has a quadratic loss in W: grad L = A w + b with
    constant A, D^3 L = 0, and the order-p field is -P(A)(A w + b) with P = 1, 1 + hA/2,
    1 + hA/2 + h^2 A^2/3 (the truncations of -log(1 - hA)/(hA)). The affine ODE's exact
    solution (the exponential of the augmented matrix) must match the solve to the solver's
    tolerance (rtol 1e-12 here; 1e-9 allows for the accumulation over ~100 steps)."""
    ds = gflow.data.teacher(jax.random.key(2), 12, 3)
    net = gflow.TwoLayer(4, activation="linear", train_outer=False)
    p0 = gflow.init.gaussian(jax.random.key(3), net, 3)
    obj = gflow.Objective(net, "squared", ds.X, ds.y)
    shape = p0.W.shape
    gradW = lambda w: jnp.ravel(obj.grad(p0.__class__(  # noqa: E731
        W=jnp.reshape(w, shape), b=p0.b, a=p0.a)).W)
    w0 = np.asarray(p0.W).ravel()
    A = np.asarray(jax.jacfwd(gradW)(jnp.asarray(w0)))
    b = np.asarray(gradW(jnp.zeros_like(w0)))
    h, T = 0.2, 1.5
    P = [np.eye(len(w0)), np.eye(len(w0)) + h * A / 2,
         np.eye(len(w0)) + h * A / 2 + h * h * A @ A / 3][order - 1]
    aug = np.zeros((len(w0) + 1,) * 2)
    aug[:-1, :-1], aug[:-1, -1] = -P @ A, -P @ b
    want = (scipy.linalg.expm(aug * T) @ np.append(w0, 1.0))[:-1]
    tr = gflow.simulate(net, p0, ds, dynamics=gflow.ModifiedFlow(h, order, rtol=1e-12,
                                                                 atol=1e-14),
                        t1=T, save=[0.0, T])
    np.testing.assert_allclose(np.asarray(tr.params_final.W).ravel(), want, rtol=1e-9,
                               atol=1e-12)
    np.testing.assert_array_equal(tr.params_final.a, p0.a)  # fixed leaves stay fixed


def test_field_matches_the_log_series_on_a_quadratic(x64):
    """modified_field on grad L = A theta equals -(A + hA^2/2 + h^2 A^3/3) theta."""
    A = jnp.array([[2.0, 0.5], [0.5, 1.0]])
    theta, h = jnp.array([0.3, -1.2]), 0.1
    for order, want in ((1, -A @ theta), (2, -(A + h * A @ A / 2) @ theta),
                        (3, -(A + h * A @ A / 2 + h * h * A @ A @ A / 3) @ theta)):
        got = modified_field(lambda t: A @ t, theta, h, order)
        np.testing.assert_allclose(got, want, rtol=1e-14)


@pytest.mark.slow  # ~25 s; the quadratic closed-form test checks the orders in the default suite
def test_global_error_against_gd_has_slope_order(x64):
    """On a tanh net GD(lr) at T = 1 differs from the order-p flow by O(lr^p): the log-log
    slope over lr = 0.1, 0.05, 0.025 is p within 0.1 (measured 1.01, 2.01, 3.01 over four
    step sizes; the solve's own error, rtol 1e-12, is far below the smallest gap, 5e-7)."""
    net, p0, ds = _tanh_setup()
    lrs = np.array([0.1, 0.05, 0.025])
    # every step size in one ensemble (per-member lr): one compiled program per dynamics
    P = jax.tree.map(lambda x: jnp.stack([x] * len(lrs)), p0)
    kw = dict(t1=1.0, save=[0.0, 1.0])
    gd = gflow.simulate_ensemble(net, P, ds, dynamics=gflow.GD(lrs), **kw).params_final
    for order in (1, 2, 3):
        mf = gflow.simulate_ensemble(net, P, ds, **kw, dynamics=gflow.ModifiedFlow(
            lrs, order, rtol=1e-12, atol=1e-14))
        errs = [np.linalg.norm(_flat(jax.tree.map(lambda x, i=i: x[i], mf.params_final))
                               - _flat(jax.tree.map(lambda x, i=i: x[i], gd)))
                for i in range(len(lrs))]
        slope = np.polyfit(np.log(lrs), np.log(errs), 1)[0]
        assert abs(slope - order) < 0.1, (order, errs, slope)
    assert np.all(mf.stats["hvp_evals"] == 3 * mf.stats["grad_evals"])


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)],
                         indirect=True)  # float64 in the default suite: the other tests
def test_order_one_is_gradient_flow_and_float32(dtype):
    """Order 1 is gradient flow (the same field, so the same steps: agreement to rounding);
    in either precision order 2 tracks GD at lr = 0.1 over 20 times closer than GF does
    (float64: 6.8e-4 against 1.7e-2)."""
    net, p0, ds = _tanh_setup()
    gf = gflow.simulate(net, p0, ds, dynamics=gflow.GradientFlow(), t1=1.0, save=[0.0, 1.0])
    m1 = gflow.simulate(net, p0, ds, dynamics=gflow.ModifiedFlow(0.1, 1), t1=1.0,
                        save=[0.0, 1.0])
    eps = float(jnp.finfo(jnp.asarray(p0.W).dtype).eps)
    assert tree_max_abs_diff(gf.params_final, m1.params_final) < 100 * eps
    gd = gflow.simulate(net, p0, ds, dynamics=gflow.GD(0.1), t1=1.0, save=[0.0, 1.0])
    m2 = gflow.simulate(net, p0, ds, dynamics=gflow.ModifiedFlow(0.1, 2, rtol=1e-7, atol=1e-9),
                        t1=1.0, save=[0.0, 1.0])
    e1 = np.linalg.norm(_flat(gf.params_final) - _flat(gd.params_final))
    e2 = np.linalg.norm(_flat(m2.params_final) - _flat(gd.params_final))
    assert e2 < e1 / 20, (e1, e2)


@pytest.mark.slow  # ~14 s; per-member lr of ensembles: test_ensemble.py
def test_ensemble_with_per_member_lr(x64):
    """A sweep over lr runs as one ensemble; each member equals its own simulate to rtol-level
    (another compiled program: 1e-9 relative)."""
    net, p0, ds = _tanh_setup()
    lrs = [0.1, 0.05]
    sw = gflow.sweep(lambda lr: gflow.Run(net, p0, ds, t1=1.0, save=[0.0, 1.0],
                                          dynamics=gflow.ModifiedFlow(lr, 2)), lr=lrs)
    for i, lr in enumerate(lrs):
        one = gflow.simulate(net, p0, ds, dynamics=gflow.ModifiedFlow(lr, 2), t1=1.0,
                             save=[0.0, 1.0])
        np.testing.assert_allclose(sw["loss"][i], one["loss"], rtol=1e-9)


@pytest.mark.parametrize("make, match", [
    (lambda: gflow.ModifiedFlow(0.1, 4), "order"),
    (lambda: gflow.ModifiedFlow(0.1, True), "order"),
    (lambda: gflow.ModifiedFlow(-0.1), "lr"),
    (lambda: gflow.ModifiedFlow(lambda k: 0.1), "schedule"),
    (lambda: gflow.ModifiedFlow(0.1, kinks=True), "kinks"),
    (lambda: gflow.ModifiedFlow(0.1, solver="nope"), "solver"),
    (lambda: gflow.ModifiedFlow(0.1, 2, beta=1.0), "beta"),
    (lambda: gflow.ModifiedFlow(0.1, 2, beta=-0.1), "beta"),
    (lambda: gflow.ModifiedFlow(0.1, 3, beta=0.5), "order 3"),
])
def test_bad_settings(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def _momentum_errors(net, p0, ds, lrs, beta, T, orders):
    """|theta_Momentum(T) - theta_p(T)| per lr (one ensemble over lr per dynamics)."""
    P = jax.tree.map(lambda x: jnp.stack([x] * len(lrs)), p0)
    kw = dict(t1=T, save=[0.0, T])
    hb = gflow.simulate_ensemble(net, P, ds, dynamics=gflow.Momentum(lrs, beta),
                                 **kw).params_final
    out = {}
    for order in orders:
        mf = gflow.simulate_ensemble(net, P, ds, **kw, dynamics=gflow.ModifiedFlow(
            lrs, order, beta=beta, rtol=1e-12, atol=1e-14)).params_final
        out[order] = np.array([np.linalg.norm(
            _flat(jax.tree.map(lambda x, i=i: x[i], mf))
            - _flat(jax.tree.map(lambda x, i=i: x[i], hb))) for i in range(len(lrs))])
    return out


def test_momentum_flows_have_global_error_of_their_order(x64):
    """Heavy-ball momentum (beta = 0.5) against its modified flows on a quadratic loss (a
    linear net, outer weights fixed): the global error at T = 4 has log-log slope 1 for
    order 1 (GF sped up by 1 / (1 - beta)) and 2 for order 2 (with its starting point), over
    lr = 0.1 ... 0.0125 (40 to 320 steps: the fast mode beta^k is below 1e-12 by then).
    Slopes within 0.1 of the order; order 2 is the closer at every lr."""
    ds = gflow.data.teacher(jax.random.key(2), 12, 3)
    net = gflow.TwoLayer(4, activation="linear", train_outer=False)
    p0 = gflow.init.gaussian(jax.random.key(3), net, 3)
    lrs = np.array([0.1, 0.05, 0.025, 0.0125])
    err = _momentum_errors(net, p0, ds, lrs, 0.5, 4.0, (1, 2))
    for order, e in err.items():
        slope = np.polyfit(np.log(lrs), np.log(e), 1)[0]
        assert abs(slope - order) < 0.1, (order, slope, e)
    assert np.all(err[2] < err[1])


@pytest.mark.slow  # ~20 s; the quadratic test above checks both orders in the default suite
def test_momentum_flows_on_a_tanh_net(x64):
    """The same on a tanh net, where H varies: slopes 1 and 2 within 0.15."""
    net, p0, ds = _tanh_setup()
    lrs = np.array([0.1, 0.05, 0.025, 0.0125])
    err = _momentum_errors(net, p0, ds, lrs, 0.5, 4.0, (1, 2))
    for order, e in err.items():
        slope = np.polyfit(np.log(lrs), np.log(e), 1)[0]
        assert abs(slope - order) < 0.15, (order, slope, e)


def test_momentum_field_on_a_quadratic_and_beta_zero_is_gd(x64):
    """modified_field with beta on grad L = A theta is -(A / c + h (1 + beta) A^2 / (2 c^3))
    theta, c = 1 - beta (the principal root's expansion); beta = 0 gives GD's field."""
    A = jnp.array([[2.0, 0.5], [0.5, 1.0]])
    theta, h, beta = jnp.array([0.3, -1.2]), 0.1, 0.7
    c = 1 - beta
    got = modified_field(lambda t: A @ t, theta, h, 2, beta)
    want = -(A / c + h * (1 + beta) * A @ A / (2 * c**3)) @ theta
    np.testing.assert_allclose(got, want, rtol=1e-14)
    # the log of the exact principal root, to first order in h, per eigenvalue
    for a in np.linalg.eigvalsh(np.asarray(A)):
        r = np.max(np.roots([1.0, -(1 + beta - h * a), beta]).real)
        series = -a / c - h * a * a * (1 + beta) / (2 * c**3)
        assert abs(np.log(r) / h - series) < 10 * h * h * a**3 / c**5
    np.testing.assert_array_equal(modified_field(lambda t: A @ t, theta, h, 2, 0.0),
                                  modified_field(lambda t: A @ t, theta, h, 2))

"""gflow.Linearized and the closed-form kernel flow: the linearized net is the net's
first-order Taylor model, and gradient flow of it equals the closed form on training and
test points (including a singular Gram)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow.linearized import Linearized, kernel_flow, linearized_mse

TS = np.array([0.0, 0.5, 2.0, 10.0])


def _setup(width=16, activation="relu", n=12):
    ds = gflow.data.teacher(jax.random.key(0), n, 3, n_test=5)
    net = gflow.TwoLayer(width, activation=activation, bias=True)
    return net, gflow.init.gaussian(jax.random.key(1), net, 3), ds


def test_taylor_model(x64):
    """f_lin(theta_0) = f(theta_0), and f_lin - f = O(eps^2) along theta_0 + eps delta
    (log-log slope 2 within 0.05 on a tanh net; second order, smooth)."""
    net, p0, ds = _setup(activation="tanh")
    lin = Linearized(net, p0)
    np.testing.assert_allclose(lin.apply(p0, ds.X), net.apply(p0, ds.X), rtol=1e-15)
    delta = jax.tree.map(lambda x: jax.random.normal(jax.random.key(2), x.shape), p0)
    eps = np.array([1e-1, 5e-2, 2.5e-2, 1.25e-2])
    gaps = []
    for e in eps:
        p = jax.tree.map(lambda x, dx, e=e: x + e * dx, p0, delta)
        gaps.append(float(jnp.max(jnp.abs(lin.apply(p, ds.X) - net.apply(p, ds.X)))))
    assert abs(np.polyfit(np.log(eps), np.log(gaps), 1)[0] - 2) < 0.05, gaps


@pytest.mark.parametrize("width", [16, 2])  # P = 5m: 80 > n = 12, and 10 < n (singular Gram)
def test_gradient_flow_of_linearized_equals_closed_form(x64, width):
    """GF of Linearized(net, p0) at rtol 1e-11 against kernel_flow with the empirical NTK:
    agreement to 1e-9 on train and test outputs of size O(1) (the solve's error accumulated
    over ~100 steps; measured 6e-13)."""
    net, p0, ds = _setup(width)
    lin = Linearized(net, p0)
    tr = gflow.simulate(lin, p0, ds, dynamics=gflow.GradientFlow(rtol=1e-11, atol=1e-13),
                        t1=float(TS[-1]), save=TS, save_params=True)
    f_train, f_test = linearized_mse(net, p0, ds.X, ds.y, TS, X_test=ds.X_test)
    for i in range(len(TS)):
        p = jax.tree.map(lambda x, i=i: x[i], tr.params)
        np.testing.assert_allclose(lin.apply(p, ds.X), f_train[i], atol=1e-9)
        np.testing.assert_allclose(lin.apply(p, ds.X_test), f_test[i], atol=1e-9)
    if width == 2:  # rank <= P = 10 < n = 12: the null-space part of the residual stays
        K = gflow.ntk.gram(net, p0, ds.X)
        lam, V = np.linalg.eigh(np.asarray(K))
        null = V[:, lam < 1e-10 * lam.max()]
        assert null.shape[1] >= 12 - 10  # n - P; ReLU patterns may lower the rank more
        r0, rT = net.apply(p0, ds.X) - ds.y, f_train[-1] - ds.y
        np.testing.assert_allclose(null.T @ rT, null.T @ r0, atol=1e-12)


def test_float32_and_other_dynamics():
    """float32: the closed form and GF agree to float32 accuracy (1e-4 on O(1) outputs); GD on
    the linearized model runs through the same API."""
    net, p0, ds = _setup()
    lin = Linearized(net, p0)
    tr = gflow.simulate(lin, p0, ds, dynamics=gflow.GradientFlow(), t1=2.0, save=[0.0, 2.0])
    f_train, _ = linearized_mse(net, p0, ds.X, ds.y, [0.0, 2.0])
    assert f_train.dtype == jnp.float32
    np.testing.assert_allclose(lin.apply(tr.params_final, ds.X), f_train[-1], atol=1e-4)
    gd = gflow.simulate(lin, p0, ds, dynamics=gflow.GD(0.1), t1=2.0, save=[0.0, 2.0])
    np.testing.assert_allclose(lin.apply(gd.params_final, ds.X), f_train[-1], atol=5e-2)


def test_kernel_flow_limits(x64):
    """t = 0 gives f0; t -> infinity interpolates y on a positive definite kernel; errors."""
    K = jnp.array([[2.0, 0.5], [0.5, 1.0]])
    f0, y = jnp.array([0.3, -0.1]), jnp.array([1.0, 2.0])
    Ks, f0s = jnp.array([[1.0, 0.2]]), jnp.array([0.7])
    ft, fs = kernel_flow(K, f0, y, [0.0, 1e4], K_star=Ks, f0_star=f0s)
    # t = 0 goes through the eigenbasis of K (f0 + V (...) V^T r): V V^T = I only to a few
    # ulps of the residual |y - f0| ~ 2, i.e. ~1e-15 absolute
    np.testing.assert_allclose(ft[0], f0, rtol=0, atol=20 * np.finfo(np.float64).eps)
    np.testing.assert_allclose(fs[0], f0s, rtol=0, atol=20 * np.finfo(np.float64).eps)
    np.testing.assert_allclose(ft[1], y, rtol=1e-12)
    # t -> infinity on the test point: kernel regression of the residual
    np.testing.assert_allclose(fs[1], f0s + Ks @ np.linalg.solve(K, y - f0), rtol=1e-12)
    with pytest.raises(ValueError, match="K_star"):
        kernel_flow(K, f0, y, [0.0], K_star=Ks)
    with pytest.raises(ValueError, match=r"\(n, n\)"):
        kernel_flow(K[:1], f0, y, [0.0])


def test_bad_input():
    net, p0, _ = _setup()
    with pytest.raises(ValueError, match="gflow net"):
        Linearized("relu", p0)
    with pytest.raises(ValueError):
        Linearized(gflow.TwoLayer(8, bias=True), p0)  # params0 for another width
    with pytest.raises(ValueError, match="already"):
        Linearized(Linearized(net, p0), p0)


@pytest.mark.slow
def test_finite_width_gap_shrinks_with_width(x64):
    """Finite-width GF (kink-aware, rtol 1e-9) against its linearization's closed form, NTK
    scaling, both layers trained, unit-sphere inputs: the test-output gap at t = 10 falls
    with the width m = 128 ... 2048 with an exponent below -0.3 at 95 % confidence
    (bootstrap over 4 seeds)."""
    ds = gflow.data.teacher(jax.random.key(0), 16, 4, n_test=32)
    widths = [128, 256, 512, 1024, 2048]
    gaps = np.zeros((len(widths), 4))
    for i, m in enumerate(widths):
        net = gflow.TwoLayer(m)
        for s in range(4):
            p0 = gflow.init.gaussian(jax.random.key(10 + s), net, 4)
            tr = gflow.simulate(net, p0, ds, t1=10.0, save=[0.0, 10.0],
                                dynamics=gflow.GradientFlow(rtol=1e-9, atol=1e-11, kinks=True))
            _, f_lin = linearized_mse(net, p0, ds.X, ds.y, [10.0], X_test=ds.X_test)
            gaps[i, s] = float(jnp.sqrt(jnp.mean(
                (net.apply(tr.params_final, ds.X_test) - f_lin[-1]) ** 2)))
    law = gflow.stats.power_law(widths, gaps)
    assert law.hi < -0.3, (law.exponent, law.lo, law.hi, gaps)

"""Tests of gflow.rotation (low-rotation tools, Telgarsky ICLR 2023, arXiv 2208.02789)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow import rotation


def _rot2(theta):
    return np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])


def test_rotation_angles_known(dtype):
    thetas = np.array([0.0, 1e-6, 0.3, math.pi / 2, 2.5, math.pi])
    W0 = np.tile([[1.0, 0.0]], (len(thetas), 1))
    W = np.stack([3.0 * _rot2(t) @ [1.0, 0.0] for t in thetas])  # scale must not matter
    got = np.asarray(rotation.rotation_angles(jnp.asarray(W0), jnp.asarray(W)))
    # Kahan's formula is relatively accurate even at 1e-6 rad (arccos would give ~3e-4 in f32)
    eps = 1e-6 if dtype == "float32" else 1e-13
    np.testing.assert_allclose(got, thetas, rtol=10 * eps, atol=10 * eps)
    assert got[1] == pytest.approx(1e-6, rel=1e-3)
    # a zero row gives 0
    assert float(rotation.rotation_angles(jnp.zeros((1, 2)), jnp.ones((1, 2)))[0]) == 0.0


def test_movement_over_sqrt_m():
    W0 = jnp.zeros((4, 3))
    W = jnp.ones((4, 3))  # |W - W0|_F = sqrt(12)
    assert float(rotation.movement_over_sqrt_m(W0, W)) == pytest.approx(math.sqrt(12 / 4))
    assert float(rotation.movement_over_sqrt_m(W0, W, 3)) == pytest.approx(2.0)


def _norm_only(m=6, d=3, key=0):
    base = gflow.TwoLayer(m, "relu", "ntk", bias=False, train_outer=True)
    p = gflow.init.gaussian(jax.random.key(key), base, d)
    net, q = rotation.NormOnlyTwoLayer.from_params(p)
    return base, p, net, q


def test_norm_only_matches_two_layer_and_chain_rule(dtype):
    base, p, net, q = _norm_only()
    X = jax.random.normal(jax.random.key(1), (5, 3))
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(net.apply(q, X), base.apply(p, X), rtol=tol, atol=tol)
    np.testing.assert_allclose(net.inner_weights(q), p.W, rtol=tol, atol=tol)
    # d f / d r_j = <d f / d w_j, u_j> (chain rule through w_j = r_j u_j)
    gW = jax.grad(lambda P: jnp.sum(base.apply(P, X)))(p).W
    gr = jax.grad(lambda Q: jnp.sum(net.apply(Q, X)))(q).r
    np.testing.assert_allclose(gr, jnp.sum(gW * net.U, axis=1), rtol=10 * tol, atol=10 * tol)
    assert net.trainable(q) == rotation.NormOnlyParams(r=True, a=True)
    assert rotation.NormOnlyTwoLayer(net.U, train_outer=False).trainable(q).a is False


def test_norm_only_bad_input():
    _, p, net, q = _norm_only()
    with pytest.raises(ValueError, match="NormOnlyParams"):
        net.check_params(p)
    with pytest.raises(ValueError, match="params.r"):
        net.check_params(rotation.NormOnlyParams(r=q.r[:2], a=q.a))
    with pytest.raises(ValueError, match="d=3"):
        net.check_params(q, d=4)
    with pytest.raises(ValueError, match="zero row"):
        rotation.NormOnlyTwoLayer(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="bias"):
        rotation.NormOnlyTwoLayer.from_params(gflow.TwoLayerParams(p.W, jnp.zeros(6), p.a))


def test_norm_only_flow_never_rotates_and_conserves_balance(x64):
    # GF on (r, a): w_j = r_j u_j cannot rotate; r_j^2 - a_j^2 is conserved (2-homogeneity)
    _, _, net, q = _norm_only(m=16, d=4)
    data = gflow.data.sparse_parity(jax.random.key(2), 16, 4, n_test=50)
    tr = gflow.simulate(net, q, data, loss="logistic",
                        dynamics=gflow.GradientFlow(rtol=1e-9, atol=1e-11), t1=10.0,
                        save=gflow.LogTimes(5), observe=("max_rotation_deg", "loss"))
    assert float(np.max(tr["max_rotation_deg"])) < 1e-9
    assert tr["loss"][-1] < tr["loss"][0]
    qf = tr.params_final
    assert float(jnp.max(jnp.abs(qf.r - q.r))) > 0.01  # it did move
    # tolerance: local error control at rtol 1e-9 over some tens of steps
    np.testing.assert_allclose(qf.r**2 - qf.a**2, q.r**2 - q.a**2, atol=1e-6)


def test_lp_known_answers():
    # identity features: max_{|c|_1<=1} min_i y_i c_i = 1/n (c_i = y_i / n), any labels
    for y in (np.ones(4), np.array([1.0, -1.0, -1.0, 1.0])):
        g, c, dual = rotation.max_margin_fixed_features(np.eye(4), y)
        assert g == pytest.approx(0.25, abs=1e-9)
        assert dual == pytest.approx(0.25, abs=1e-9)
        np.testing.assert_allclose(c, y / 4, atol=1e-9)
    # one feature equal for two points with opposite labels: y Phi c = (c, -c), not separable;
    # the best over |c|_1 <= 1 is c = 0, margin 0
    Phi = np.array([[1.0], [1.0]])
    g, _, dual = rotation.max_margin_fixed_features(Phi, np.array([1.0, -1.0]))
    assert g == pytest.approx(0.0, abs=1e-9)
    assert g == pytest.approx(dual, abs=1e-9)


def test_lp_matches_brute_force_two_features():
    # m = 2: the L1 sphere is {(t, s(1-|t|))}; a fine grid search is an independent answer
    rng = np.random.default_rng(0)
    Phi = rng.normal(size=(7, 2))
    y = np.sign(Phi @ np.array([1.0, -0.5]))
    g, c, dual = rotation.max_margin_fixed_features(Phi, y)
    t = np.linspace(-1, 1, 200001)
    best = max(np.max(np.min(y[:, None] * (Phi @ np.stack([t, s * (1 - np.abs(t))])), axis=0))
               for s in (1.0, -1.0))
    # grid spacing 1e-5 in c changes the margin by at most 1e-5 * max|Phi|
    assert g == pytest.approx(best, abs=1e-4 * np.max(np.abs(Phi)))
    assert g == pytest.approx(dual, abs=1e-9)
    assert np.sum(np.abs(c)) == pytest.approx(1.0, abs=1e-9)
    assert np.min(y * (Phi @ c)) == pytest.approx(g, abs=1e-9)


def test_norm_only_max_margin_is_attained_and_an_upper_bound(x64):
    _, _, net, q = _norm_only(m=12, d=4, key=3)
    data = gflow.data.sparse_parity(jax.random.key(4), 12, 4, n_test=10)
    gstar = rotation.norm_only_max_margin(net, data.X, data.y)
    Phi = np.maximum(np.asarray(data.X) @ np.asarray(net.U).T, 0.0)
    lp, c, _ = rotation.max_margin_fixed_features(Phi, data.y)
    assert gstar == pytest.approx(lp / (2 * math.sqrt(12)))
    # balanced point built from the LP solution attains it (AM-GM equality |r_j| = |a_j|)
    best = rotation.NormOnlyParams(r=jnp.sqrt(jnp.abs(c)), a=jnp.sign(c) * jnp.sqrt(jnp.abs(c)))
    got = float(rotation.normalized_margin(net, best, data.X, data.y))
    assert got == pytest.approx(gstar, rel=1e-7)
    # and no parameter beats it (random r >= 0 and a)
    for k in range(20):
        kr, ka = jax.random.split(jax.random.key(10 + k))
        p = rotation.NormOnlyParams(r=jnp.abs(jax.random.normal(kr, (12,))),
                                    a=jax.random.normal(ka, (12,)))
        assert float(rotation.normalized_margin(net, p, data.X, data.y)) <= gstar + 1e-12
    with pytest.raises(ValueError, match="train_outer"):
        rotation.norm_only_max_margin(rotation.NormOnlyTwoLayer(net.U, False), data.X, data.y)


def test_normalized_margin_is_scale_invariant(dtype):
    X = jax.random.normal(jax.random.key(5), (6, 3))
    y = jnp.sign(X[:, 0])
    for train_outer in (False, True):
        net = gflow.TwoLayer(8, "relu", "ntk", bias=False, train_outer=train_outer)
        p = gflow.init.gaussian(jax.random.key(6), net, 3)
        assert rotation.homogeneity(net) == (2 if train_outer else 1)
        g1 = float(rotation.normalized_margin(net, p, X, y))
        if train_outer:
            p2 = gflow.TwoLayerParams(3.0 * p.W, None, 3.0 * p.a)
        else:
            p2 = gflow.TwoLayerParams(3.0 * p.W, None, p.a)
        g2 = float(rotation.normalized_margin(net, p2, X, y))
        assert g2 == pytest.approx(g1, rel=1e-5)
        norm = jnp.sqrt(jnp.sum(p.W**2) + (jnp.sum(p.a**2) if train_outer else 0.0))
        expect = jnp.min(y * net.apply(p, X)) / norm ** (2 if train_outer else 1)
        assert g1 == pytest.approx(float(expect), rel=1e-5)


def test_observables_match_functions():
    net = gflow.TwoLayer(8, "relu", "ntk", bias=False, train_outer=False)
    data = gflow.data.sparse_parity(jax.random.key(7), 16, 4, n_test=20)
    p0 = gflow.init.gaussian(jax.random.key(8), net, 4)
    tr = gflow.simulate(net, p0, data, loss="logistic", dynamics=gflow.GD(lr=1.0), t1=20.0,
                        save=[0.0, 20.0], observe=("rotation_deg", "max_rotation_deg",
                                                   "rotation_weighted_deg",
                                                   "movement_over_sqrt_m", "margin_homogeneous",
                                                   "margin_per_movement"))
    pf = tr.params_final
    ang = np.rad2deg(np.asarray(rotation.rotation_angles(p0.W, pf.W)))
    np.testing.assert_allclose(tr["rotation_deg"][-1], ang, rtol=1e-4, atol=1e-4)
    assert tr["max_rotation_deg"][-1] == pytest.approx(ang.max(), rel=1e-4)
    assert tr["rotation_weighted_deg"][-1] == pytest.approx(ang.mean(), rel=1e-4)  # |a_j| = 1
    assert tr["rotation_deg"][0] == pytest.approx(np.zeros(8))
    mv = float(jnp.linalg.norm(pf.W - p0.W) / math.sqrt(8))
    assert tr["movement_over_sqrt_m"][-1] == pytest.approx(mv, rel=1e-4)
    f = net.apply(pf, data.X)
    assert tr["margin_homogeneous"][-1] == pytest.approx(
        float(jnp.min(data.y * f) / jnp.linalg.norm(pf.W)), rel=1e-4)
    assert tr["margin_per_movement"][-1] == pytest.approx(
        float(jnp.min(data.y * f) / jnp.linalg.norm(pf.W - p0.W)), rel=1e-4)


def test_near_init_radius_and_exit_time():
    assert rotation.near_init_radius(0.1, 400) == pytest.approx(2.0)
    assert rotation.near_init_radius(0.1, 400, c=0.5) == pytest.approx(1.0)
    for name, bad in (("gamma", dict(gamma=0.0, width=4)), ("width", dict(gamma=0.1, width=0)),
                      ("width", dict(gamma=0.1, width=2.5)),
                      ("c must", dict(gamma=0.1, width=4, c=-1.0))):
        with pytest.raises(ValueError, match=name):
            rotation.near_init_radius(**bad)
    t = np.array([1.0, 2.0, 4.0, 8.0])
    mv = np.array([[0.1, 0.5, 1.5, 3.0], [0.1, 0.2, 0.3, 0.4]])
    got = rotation.radius_exit_time(t, mv, 1.0)
    assert got[0] == 4.0 and np.isnan(got[1])
    np.testing.assert_array_equal(rotation.radius_exit_time(t, mv, np.array([0.05, 0.25])),
                                  [1.0, 4.0])


def test_log_rate_fit_recovers_the_law():
    t = np.logspace(1, 12, 30)
    exact = rotation.log_rate_fit(t, 0.7 - 2.0 / np.log(t))
    assert exact.limit == pytest.approx(0.7, abs=1e-12) and exact.slope == pytest.approx(2.0)
    assert exact.hi - exact.lo < 1e-10 and exact.n_points == 15  # the last half in ln t
    # the law's inverse: 0.7 - 2 / ln t = 0.5 at t = e^10
    assert exact.time_to(0.5) == pytest.approx(math.exp(10.0), rel=1e-9)
    assert exact.time_to(0.7) == math.inf
    # with noise, the 95 % interval covers the truth in about 95 % of draws
    rng, cover = np.random.default_rng(0), 0
    for _ in range(200):
        f = rotation.log_rate_fit(t, 0.7 - 2.0 / np.log(t) + 0.01 * rng.standard_normal(30),
                                  t_from=10.0)
        cover += f.lo <= 0.7 <= f.hi
    assert 180 <= cover <= 198  # binomial(200, 0.95): mean 190, sd 3.1
    # rows, NaN where too few points; bad input
    rows = rotation.log_rate_limits(t, np.stack([0.7 - 2.0 / np.log(t), np.full(30, np.nan)]))
    assert rows.shape == (2, 3) and rows[0, 0] == pytest.approx(0.7) and np.isnan(rows[1]).all()
    with pytest.raises(ValueError, match="at least 2"):
        rotation.log_rate_fit(t[:1], np.ones(1))
    with pytest.raises(ValueError, match="confidence"):
        rotation.log_rate_fit(t, np.ones(30), confidence=1.0)


def test_approach_verdict_words():
    def v(*a):
        return rotation.approach_verdict(*a)["verdict"]

    assert v([1.0, 1.2], [0.9, 1.0], [1.1, 1.4]) == "holds"
    assert v([0.5, 0.6], [0.4, 0.5], [0.7, 0.8]) == "does not hold"
    assert v([0.5, 1.1], [0.4, 0.9], [1.2, 1.3]) == "inconclusive"
    assert "0.5..1.1" in rotation.approach_verdict([0.5, 1.1], [0.4, 0.9], [1.2, 1.3])["why"]

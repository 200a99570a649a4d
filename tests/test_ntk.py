"""Tests of gflow.ntk: empirical NTK, closed-form ReLU NTK, NTK margin, width padding."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import RTOL

import gflow
from gflow import ntk


def _sphere(key, n, d):
    x = jax.random.normal(key, (n, d))
    return x / jnp.linalg.norm(x, axis=1, keepdims=True)


def test_features_match_hand_jacobian(dtype):
    # f = (1/sqrt m) sum_r a_r relu(w_r.x): df/dw_r = a_r 1{w_r.x>0} x / sqrt(m),
    # df/da_r = relu(w_r.x) / sqrt(m)
    d, m, n = 3, 4, 5
    k1, k2 = jax.random.split(jax.random.key(0))
    X = jax.random.normal(k1, (n, d))
    for train_outer in (False, True):
        net = gflow.TwoLayer(m, "relu", "ntk", bias=False, train_outer=train_outer)
        p = gflow.init.gaussian(k2, net, d)
        z = np.asarray(X @ p.W.T)
        a = np.asarray(p.a)
        jw = (a * (z > 0))[:, :, None] * np.asarray(X)[:, None, :] / math.sqrt(m)
        hand = jw.reshape(n, -1)
        if train_outer:
            hand = np.concatenate([hand, np.maximum(z, 0) / math.sqrt(m)], axis=1)
        J = ntk.features(net, p, X)
        assert J.shape == hand.shape
        np.testing.assert_allclose(np.asarray(J), hand, rtol=RTOL[dtype], atol=RTOL[dtype])
        np.testing.assert_allclose(np.asarray(ntk.gram(net, p, X)), hand @ hand.T,
                                   rtol=10 * RTOL[dtype], atol=10 * RTOL[dtype])


def test_relu_ntk_hand_values(dtype):
    # orthogonal unit vectors: theta = pi/2, inner = 0, outer = 1/(2 pi);
    # identical unit vectors: inner = 1/2, outer = 1/2; opposite: both 0.
    e = jnp.eye(3)
    X = jnp.stack([e[0], e[1], -e[0]])
    inner = np.asarray(ntk.relu_ntk(X))
    outer = np.asarray(ntk.relu_ntk(X, layers="outer"))
    tol = RTOL[dtype]
    np.testing.assert_allclose(np.diag(inner), 0.5, atol=tol)
    np.testing.assert_allclose(np.diag(outer), 0.5, atol=tol)
    assert abs(inner[0, 1]) < tol and abs(inner[0, 2]) < tol
    np.testing.assert_allclose(outer[0, 1], 1 / (2 * math.pi), atol=tol)
    assert abs(outer[0, 2]) < tol
    # 60 degrees: inner = cos(pi/3) (pi - pi/3) / (2 pi) = 1/6
    x = jnp.array([[1.0, 0.0], [0.5, math.sqrt(3) / 2]])
    np.testing.assert_allclose(np.asarray(ntk.relu_ntk(x))[0, 1], 1 / 6, atol=tol)
    both = ntk.relu_ntk(X, layers="both")
    np.testing.assert_allclose(np.asarray(both), inner + outer, atol=tol)


def test_relu_ntk_matches_empirical_gram_at_large_width():
    # E[gram at init] = relu_ntk; each entry is a mean of m i.i.d. terms bounded by |x||x'| = 1
    # (inner) and with variance <= 1/4 -- plus <= E relu^4 for the outer part -- so its standard
    # deviation is <= ~1/sqrt(m). With m = 2^13 that is <= 0.011; we allow 5 sigma = 0.055 for the
    # max over the 36 + 36 entries (n=6, both layers).
    n, d, m = 6, 4, 2**13
    k1, k2 = jax.random.split(jax.random.key(1))
    X = _sphere(k1, n, d)
    for train_outer, layers in ((False, "inner"), (True, "both")):
        net = gflow.TwoLayer(m, "relu", "ntk", bias=False, train_outer=train_outer)
        p = gflow.init.gaussian(k2, net, d)
        emp = np.asarray(ntk.gram(net, p, X))
        exact = np.asarray(ntk.relu_ntk(X, layers=layers))
        assert np.max(np.abs(emp - exact)) < 5 / math.sqrt(m)
    # paired init: same distribution of the NTK (each neuron twice, a^2 = 1)
    net = gflow.TwoLayer(m, "relu", "ntk", bias=False, train_outer=False)
    emp = np.asarray(ntk.gram(net, gflow.init.paired(k2, net, d), X))
    # m/2 independent neurons: sigma <= 1/sqrt(m/2)
    assert np.max(np.abs(emp - np.asarray(ntk.relu_ntk(X)))) < 5 / math.sqrt(m / 2)


def test_relu_ntk_mc_and_lambda_min(x64):
    n, d = 8, 5
    X = _sphere(jax.random.key(2), n, d)
    K = ntk.relu_ntk(X)
    Kmc = ntk.relu_ntk_mc(jax.random.key(3), X, 2**15)
    assert np.max(np.abs(np.asarray(Kmc - K))) < 5 / math.sqrt(2**15)
    lam = float(ntk.lambda_min(K))
    assert lam > 0  # distinct, non-antipodal unit inputs: H_inf is positive definite
    np.testing.assert_allclose(lam, np.linalg.eigvalsh(np.asarray(K))[0], rtol=1e-10)


def test_margin_hand_cases(x64):
    e = np.eye(3)
    # one point: gamma = sqrt(K(x,x)) = sqrt(1/2)
    assert ntk.margin(e[:1], np.array([1.0])) == pytest.approx(math.sqrt(0.5), rel=1e-6)
    # two orthogonal unit points, opposite labels: K = diag(1/2, 1/2), Q = K;
    # min over the simplex of (p1^2 + p2^2)/2 is 1/4 at p = (1/2, 1/2): gamma = 1/2
    r = ntk.kernel_margin(ntk.relu_ntk(e[:2]), np.array([1.0, -1.0]))
    assert r.gamma == pytest.approx(0.5, rel=1e-6)
    np.testing.assert_allclose(r.p, [0.5, 0.5], atol=1e-5)
    assert r.gap < 1e-6
    # the same point with both labels: not separable, gamma = 0
    assert ntk.margin(np.stack([e[0], e[0]]), np.array([1.0, -1.0])) == pytest.approx(0, abs=1e-6)
    # generic kernel, two points: gamma^2 = (K11 K22 - K12^2) / (K11 + K22 - 2 y1 y2 K12)
    K = np.array([[2.0, 0.5], [0.5, 1.0]])
    g = ntk.kernel_margin(K, np.array([1.0, 1.0])).gamma
    assert g**2 == pytest.approx((2 - 0.25) / (3 - 1.0), rel=1e-6)


def test_margin_vs_monte_carlo_features(x64):
    # gamma^2 = min_p p^T (yy^T * K) p is a minimum of functions linear in K with p on the
    # simplex, so |gamma_M^2 - gamma^2| <= max_ij |K_M - K_ij| exactly (plus solver tolerance).
    X, y = gflow.data.margin_data(jax.random.key(4), 12, 4, 0.3)
    K = np.asarray(ntk.relu_ntk(X))
    r = ntk.kernel_margin(K, y)
    assert r.gap < 1e-4 * r.gamma
    Kmc = np.asarray(ntk.relu_ntk_mc(jax.random.key(5), X, 2**15))
    err = np.max(np.abs(Kmc - K))
    assert err < 5 / math.sqrt(2**15)
    rmc = ntk.kernel_margin(Kmc, y)
    assert abs(rmc.gamma**2 - r.gamma**2) <= err + 1e-7
    # and the empirical Gram of a wide paired net gives the same margin within its error
    m = 2**13
    net = gflow.TwoLayer(m, "relu", "ntk", bias=False, train_outer=False)
    Ke = np.asarray(ntk.gram(net, gflow.init.paired(jax.random.key(6), net, 4), X))
    assert abs(ntk.kernel_margin(Ke, y).gamma ** 2 - r.gamma**2) <= np.max(np.abs(Ke - K)) + 1e-7


def test_margin_data_controls_margin(x64):
    X, y = gflow.data.margin_data(jax.random.key(7), 16, 5, 0.5)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(X), axis=1), 1.0, rtol=1e-12)
    cos = np.sum(np.asarray(X[0::2] * X[1::2]), axis=1)
    np.testing.assert_allclose(cos, math.cos(0.5), rtol=1e-12)
    assert np.all(np.asarray(y[0::2]) == -np.asarray(y[1::2]))
    gammas = [ntk.margin(*gflow.data.margin_data(jax.random.key(7), 16, 5, a))
              for a in (1.0, 0.1, 0.01)]
    assert gammas[0] > gammas[1] > gammas[2] > 0
    # the pair bound gamma <= sqrt(1 - cos(a)(1 - a/pi)) / 2
    for a, g in zip((1.0, 0.1, 0.01), gammas, strict=True):
        assert g <= math.sqrt(1 - math.cos(a) * (1 - a / math.pi)) / 2 + 1e-9


def test_pad_width_is_exact(x64):
    dtype = "float64"  # the embedding is exact algebra; one dtype keeps the suite short
    d, m, M, n = 3, 4, 10, 7
    X = _sphere(jax.random.key(8), n, d)
    y = jnp.sign(X[:, 0])
    data = gflow.Dataset(X, y)
    net = gflow.TwoLayer(m, "relu", "ntk", bias=False, train_outer=False)
    p = gflow.init.gaussian(jax.random.key(9), net, d)
    wnet, wp = ntk.pad_width(net, p, M)
    np.testing.assert_allclose(np.asarray(wnet.apply(wp, X)), np.asarray(net.apply(p, X)),
                               rtol=RTOL[dtype], atol=RTOL[dtype])
    kw = dict(loss="logistic", dynamics=gflow.GD(0.5), t1=20.0, save=gflow.LinTimes(3))
    a = gflow.simulate(net, p, data, **kw)
    b = gflow.simulate(wnet, wp, data, **kw)
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=10 * RTOL[dtype])
    np.testing.assert_allclose(np.asarray(b.params_final.W[:m]), np.asarray(a.params_final.W),
                               rtol=10 * RTOL[dtype], atol=10 * RTOL[dtype])
    # padded rows are masked: never move, exactly
    np.testing.assert_array_equal(np.asarray(b.params_final.W[m:]), np.asarray(wp.W[m:]))
    with pytest.raises(ValueError, match="width"):
        ntk.pad_width(net, p, 2)
    with pytest.raises(ValueError, match="train_outer"):
        ntk.pad_width(gflow.TwoLayer(m, train_outer=True), p, M)


def test_observables_hand_case():
    # two neurons, three inputs; move neuron 0 across x_0 only: 1 of 6 patterns flips
    X = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    W0 = jnp.array([[1.0, 0.5], [0.0, 1.0]])
    W1 = jnp.array([[-1.0, 0.5], [0.0, 1.0]])
    assert float(ntk.activation_flips(W0, W1, X)) == pytest.approx(2 / 6)
    W2 = jnp.array([[0.5, 0.5], [0.0, 1.0]])
    assert float(ntk.activation_flips(W0, W2, X)) == 0.0  # a count of sign changes: exact
    # registered observables inside a run
    net = gflow.TwoLayer(2, "relu", "ntk", bias=False, train_outer=False)
    p0 = gflow.TwoLayerParams(W=W0, b=None, a=jnp.array([1.0, -1.0]))
    data = gflow.Dataset(X, jnp.array([1.0, -1.0, 1.0]))
    tr = gflow.simulate(net, p0, data, loss="squared", dynamics=gflow.GD(0.1), t1=0.1,
                        save=gflow.LinTimes(2), observe=("activation_flips", "ntk_lambda_min"))
    assert tr["activation_flips"][0] == 0.0  # no step taken at t = 0: exact
    lam0 = float(ntk.lambda_min(ntk.gram(net, p0, X)))
    assert tr["ntk_lambda_min"][0] == pytest.approx(lam0, rel=1e-5, abs=1e-7)


def test_kernel_movement_and_alignment(x64):
    """Hand values (alignment of y y^T is 1, of I is 1/sqrt(n)), and inside a run: movement 0
    at t = 0 and, at the end, the value recomputed from the final parameters."""
    y = jnp.array([1.0, -1.0, 2.0])
    assert float(ntk.kernel_alignment(jnp.outer(y, y) * 3.0, y)) == pytest.approx(1.0, rel=1e-15)
    assert float(ntk.kernel_alignment(jnp.eye(3), y)) == pytest.approx(1 / np.sqrt(3), rel=1e-15)
    K0 = jnp.eye(2)
    assert float(ntk.kernel_movement(K0, 1.5 * K0)) == pytest.approx(0.5, rel=1e-15)
    data = gflow.data.teacher(jax.random.key(0), 10, 3)
    net = gflow.TwoLayer(8)
    p0 = gflow.init.gaussian(jax.random.key(1), net, 3)
    tr = gflow.simulate(net, p0, data, dynamics=gflow.GD(0.5), t1=5.0, save=gflow.LinTimes(3),
                        observe=("ntk_movement", "ntk_alignment"))
    # K_0 against itself (two subgraphs of one program, which XLA may fuse differently)
    assert tr["ntk_movement"][0] < 1e-13
    K1 = ntk.gram(net, tr.params_final, data.X)
    want = ntk.kernel_movement(ntk.gram(net, p0, data.X), K1)
    assert tr["ntk_movement"][-1] == pytest.approx(float(want), rel=1e-10)
    assert tr["ntk_movement"][-1] > 0
    assert tr["ntk_alignment"][-1] == pytest.approx(float(ntk.kernel_alignment(K1, data.y)),
                                                    rel=1e-10)


def test_bad_inputs():
    with pytest.raises(ValueError, match="layers"):
        ntk.relu_ntk(jnp.ones((2, 2)), layers="all")
    with pytest.raises(ValueError, match="labels"):
        ntk.kernel_margin(np.eye(2), np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="square"):
        ntk.lambda_min(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="angle"):
        gflow.data.margin_data(jax.random.key(0), 4, 3, 0.0)
    with pytest.raises(ValueError, match="even n"):
        gflow.data.margin_data(jax.random.key(0), 5, 3, 0.1)


def _sample_gram(X, W):
    """The inner-layer NTK Gram of the sample ``W``: the kernel whose L2 margin the pointwise
    margin on the same sample is compared with."""
    B = (W @ X.T > 0).astype(float)
    return (X @ X.T) * (B.T @ B) / W.shape[0]


def test_pointwise_margin_hand_cases():
    # exact for the sample: the margin is an average over the sample's w
    W = np.random.default_rng(0).standard_normal((200_000, 2))
    plus, minus = np.mean(W[:, 0] > 0), np.mean(W[:, 0] < 0)
    e = np.eye(2)
    # one point x: v(w) = x on {w.x > 0} is optimal, gamma = P(w.x > 0) (population 1/2,
    # against the L2 relaxation's sqrt(K(x,x)) = sqrt(1/2))
    # (to the solver's accuracy, ~1e-8 on the dual value: both bounds are checked)
    r = ntk.pointwise_margin(e[:1], np.ones(1), W)
    assert r.gamma == pytest.approx(plus, abs=1e-6) and r.gap < 1e-6
    # x and -x with opposite labels see disjoint w: gamma = min of the two fractions; here the
    # L2 relaxation agrees (K(x, -x) = 0: gamma_l2^2 = 1/4 in the population)
    r = ntk.pointwise_margin(np.stack([e[0], -e[0]]), np.array([1.0, -1.0]), W)
    assert r.lower == pytest.approx(min(plus, minus), abs=1e-6)
    assert r.gamma == pytest.approx(min(plus, minus), abs=1e-6)
    # e1, e2 with equal labels: v(w) = the unit vector along (1{w1 > 0}, 1{w2 > 0}); each point
    # gets 1/4 (w sees only it) + 1/4 / sqrt 2 (both): (2 + sqrt 2)/8 = 0.4268, strictly below
    # the L2 relaxation's 1/2. Sampling error: each term is in [0, 1/sqrt 2], so the standard
    # deviation of the sample mean is <= 0.36 / sqrt(M) = 8e-4; allow 5 of those.
    r = ntk.pointwise_margin(e, np.ones(2), W)
    assert r.gamma == pytest.approx((2 + math.sqrt(2)) / 8, abs=4e-3)
    np.testing.assert_allclose(r.p, [0.5, 0.5], atol=1e-2)
    assert r.gap < 1e-6
    assert r.gamma < ntk.margin(e, np.ones(2)) - 0.05


def test_pointwise_margin_brute_force_and_l2_bound():
    # tiny size: the dual min_p mean_k |A_k p| on a fine simplex grid (n = 3, M = 7). The grid
    # minimum is >= the true minimum and exceeds it by at most h max|x| = h (F is 1-Lipschitz in
    # each p_i for unit x), so it lies in [lower, gamma + h].
    rng = np.random.default_rng(1)
    X = rng.standard_normal((3, 2))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y, W = np.array([1.0, -1.0, 1.0]), rng.standard_normal((7, 2))
    r = ntk.pointwise_margin(X, y, W)
    h = 1 / 300
    grid = np.array([(i, j, 300 - i - j) for i in range(301) for j in range(301 - i)]) * h
    B = (W @ X.T > 0).astype(float)
    A = np.einsum("kn,gn,nd->gkd", B, grid, y[:, None] * X)
    brute = np.min(np.mean(np.linalg.norm(A, axis=-1), axis=1))
    assert r.lower - 1e-9 <= brute <= r.gamma + h
    # pointwise <= L2 relaxation on the same sample (Jensen), on margin data of three angles,
    # and the certificate is tight
    for a in (1.0, 0.3, 0.1):
        X, y = (np.asarray(v, np.float64) for v in gflow.data.margin_data(jax.random.key(2), 8,
                                                                          3, a))
        W = rng.standard_normal((4000, 3))
        r = ntk.pointwise_margin(X, y, W)
        assert r.gap < 1e-3 * r.gamma  # SLSQP on the smoothed dual: measured <= 1.4e-4
        assert r.gamma <= ntk.kernel_margin(_sample_gram(X, W), y).gamma + 1e-7


def test_pointwise_margin_bad_inputs():
    W = np.ones((5, 2))
    with pytest.raises(ValueError, match="labels"):
        ntk.pointwise_margin(np.eye(2), np.array([1.0, 0.5]), W)
    with pytest.raises(ValueError, match="W"):
        ntk.pointwise_margin(np.eye(2), np.ones(2), np.ones((5, 3)))
    with pytest.raises(ValueError, match="finite"):
        ntk.pointwise_margin(np.eye(2), np.ones(2), np.full((5, 2), np.nan))


def test_margins_at_reproduces_the_optimized_margins():
    # at the optimizers' own dual points, margins_at gives their bounds back
    rng = np.random.default_rng(3)
    X, y = (np.asarray(v, np.float64) for v in gflow.data.margin_data(jax.random.key(4), 10,
                                                                      3, 0.3))
    W = rng.standard_normal((3000, 3))
    k, pw = ntk.kernel_margin(ntk.relu_ntk(X), y), ntk.pointwise_margin(X, y, W)
    k_at, _ = ntk.margins_at(X, y, k.p, W)
    _, pw_at = ntk.margins_at(X, y, pw.p, W)
    assert (k_at.gamma, k_at.lower) == pytest.approx((k.gamma, k.lower), rel=1e-12)
    assert (pw_at.gamma, pw_at.lower) == pytest.approx((pw.gamma, pw.lower), rel=1e-12)
    # at any other dual point they are upper bounds of the optimum, with valid lower bounds
    q = rng.dirichlet(np.ones(10))
    k_q, pw_q = ntk.margins_at(X, y, q, W)
    assert k_q.gamma >= k.gamma - 1e-9 and k_q.lower <= k.gamma + 1e-9
    assert pw_q.gamma >= pw.gamma - 1e-9 and pw_q.lower <= pw.gamma + 1e-9


@pytest.mark.parametrize("d", [3, 5])
def test_symmetric_margins_of_sparse_parity_are_exact(d):
    # the cube under a 2-sparse parity is invariant under every coordinate sign flip, which
    # acts transitively on it and keeps Q: the uniform p is a dual optimum, so the L2
    # kernel's two bounds meet (a certificate) and agree with the QP over all 2^d points
    dist = gflow.distributions.SparseParity(d)
    X, y, _ = (np.asarray(v, np.float64) for v in dist.enumerate())
    W = np.random.default_rng(d).standard_normal((20_000, d))
    l2, pw = ntk.symmetric_margins(dist, W)
    assert l2.gap < 1e-12 * l2.gamma
    assert l2.gamma == pytest.approx(ntk.margin(X, y), rel=1e-6)  # SLSQP at tol 1e-12
    # pointwise: the value at the uniform p is an upper bound of the sample's optimum (equal
    # in the population); its Monte-Carlo error: terms |A_k p| lie in [0, max|x|], so two
    # independent samples of M = 2e4 differ by < 5 sqrt(2) max|x| / (2 sqrt M)
    W2 = W[:1000]
    opt = ntk.pointwise_margin(X, y, W2)
    _, at = ntk.margins_at(X, y, np.full(len(y), 1 / len(y)), W2)
    rad = float(np.max(np.linalg.norm(X, axis=1)))
    assert at.gamma >= opt.gamma - 1e-6 * rad  # the solver's smoothing moves it <= 1e-6 rad
    assert pw.lower <= pw.gamma <= l2.gamma + 1e-12
    _, pw2 = ntk.symmetric_margins(dist, np.random.default_rng(99).standard_normal((20_000, d)))
    assert abs(pw.gamma - pw2.gamma) < 5 * math.sqrt(2) * rad / (2 * math.sqrt(20_000))


def test_margins_at_bad_inputs():
    X, y, W = np.eye(2), np.ones(2), np.ones((4, 2))
    with pytest.raises(ValueError, match="p must"):
        ntk.margins_at(X, y, np.array([-1.0, 2.0]), W)
    with pytest.raises(ValueError, match="p must"):
        ntk.margins_at(X, y, np.zeros(2), W)
    with pytest.raises(ValueError, match="finite"):
        ntk.margins_at(X, y, np.array([np.nan, 1.0]), W)
    with pytest.raises(ValueError, match="labels"):
        ntk.margins_at(X, np.array([1.0, 0.0]), np.ones(2), W)

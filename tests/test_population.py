"""Tests of gflow.population: closed-form Gaussian kernels, population loss and gradient,
teacher-student observables, local init."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import RTOL

import gflow
from gflow import kernels
from gflow import population as P

ACTS = {"relu": jax.nn.relu, "abs": jnp.abs}


@pytest.mark.parametrize("act", ["relu", "abs"])
def test_kernel_hand_values(dtype, act):
    u = jnp.array([[2.0, 0.0, 0.0]])
    v = jnp.array([[0.0, 3.0, 0.0]])
    tol = RTOL[dtype]
    same = float(kernels.gaussian(u, u, act)[0])  # E relu(z)^2 = |u|^2/2, E z^2 = |u|^2
    orth = float(kernels.gaussian(u, v, act)[0])  # independent: (E sigma(g))^2 |u||v|
    opp = float(kernels.gaussian(u, -u, act)[0])
    if act == "relu":
        assert same == pytest.approx(2.0, rel=tol)
        assert orth == pytest.approx(6.0 / (2 * math.pi), rel=tol)  # (1/sqrt(2 pi))^2 * 6
        assert abs(opp) < tol
    else:
        assert same == pytest.approx(4.0, rel=tol)
        assert orth == pytest.approx(6.0 * 2 / math.pi, rel=tol)  # (sqrt(2/pi))^2 * 6
        assert opp == pytest.approx(4.0, rel=tol)


@pytest.mark.parametrize("act", ["relu", "abs"])
def test_kernel_vs_monte_carlo(x64, act):
    # each MC term sigma(u.x) sigma(v.x) has variance <= E[(u.x)^2 (v.x)^2] <= 3 |u|^2 |v|^2,
    # so the mean of N terms has std <= sqrt(3) |u||v| / sqrt(N); allow 5 std.
    U = jax.random.normal(jax.random.key(0), (3, 4))
    V = jax.random.normal(jax.random.key(1), (2, 4))
    N = 100_000
    X = jax.random.normal(jax.random.key(2), (N, 4))
    f = ACTS[act]
    mc = np.asarray(f(X @ U.T).T @ f(X @ V.T)) / N
    K = np.asarray(kernels.pairwise(kernels.gaussian, U, V, activation=act))
    bound = 5 * math.sqrt(3) * np.outer(np.linalg.norm(U, axis=1), np.linalg.norm(V, axis=1))
    assert np.all(np.abs(K - mc) < bound / math.sqrt(N))


def _pair(act, m=4, k=2, d=5, scaling="standard"):
    data = gflow.data.gaussian_teacher(jax.random.key(3), 10, d, k, activation=act)
    tnet, tp = data.meta["teacher"]
    net = gflow.TwoLayer(m, act, scaling, bias=False)
    p = gflow.init.gaussian(jax.random.key(4), net, d, outer="gaussian")
    return net, p, tnet, tp


@pytest.mark.parametrize("act", ["relu", "abs"])
def test_population_loss_vs_monte_carlo(x64, act):
    net, p, tnet, tp = _pair(act, scaling="ntk")
    L = float(P.loss(net, p, tnet, tp))
    X = jax.random.normal(jax.random.key(5), (100_000, 5))
    r2 = 0.5 * np.asarray(net.apply(p, X) - tnet.apply(tp, X)) ** 2
    # standard error of the sample mean from the sample itself; 5 standard errors
    assert abs(L - r2.mean()) < 5 * r2.std() / math.sqrt(r2.size)


@pytest.mark.parametrize("act", ["relu", "abs"])
def test_population_loss_zero_at_teacher(x64, act):
    # the teacher itself, and the teacher with each neuron split into two parallel halves
    net, _, tnet, tp = _pair(act, m=4, k=2)
    assert abs(float(P.loss(tnet, tp, tnet, tp))) < 1e-12
    s = 1 / math.sqrt(2)  # a_j |w_j| halves: a and w both scaled by 1/sqrt(2)
    split = gflow.TwoLayerParams(W=jnp.concatenate([tp.W, tp.W]) * s, b=None,
                                 a=jnp.concatenate([tp.a, tp.a]) * s)
    assert abs(float(P.loss(net, split, tnet, tp))) < 1e-12


@pytest.mark.parametrize("act", ["relu", "abs"])
def test_population_gradient_finite_differences(x64, act):
    # generic point, and a point with two exactly parallel student neurons (where the
    # arccos form has an infinite intermediate derivative)
    net, p, tnet, tp = _pair(act)
    par = gflow.TwoLayerParams(W=p.W.at[1].set(2.0 * p.W[0]), b=None, a=p.a)
    L = jax.jit(lambda q: P.loss(net, q, tnet, tp))
    for q in (p, par):
        g = jax.grad(L)(q)
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(g))
        h = 1e-6
        for i, j in ((0, 0), (1, 2), (3, 4)):
            e = jnp.zeros_like(q.W).at[i, j].set(h)
            fd = (L(gflow.TwoLayerParams(q.W + e, None, q.a))
                  - L(gflow.TwoLayerParams(q.W - e, None, q.a))) / (2 * h)
            assert float(g.W[i, j]) == pytest.approx(float(fd), rel=1e-6, abs=1e-8)
        e = jnp.zeros_like(q.a).at[1].set(h)
        fd = (L(gflow.TwoLayerParams(q.W, None, q.a + e))
              - L(gflow.TwoLayerParams(q.W, None, q.a - e))) / (2 * h)
        assert float(g.a[1]) == pytest.approx(float(fd), rel=1e-6, abs=1e-8)


def test_nearest_teacher_and_clusters_hand_case():
    Ws = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    W = jnp.array([[2 * c, 2 * s], [0.0, -3.0], [0.1, 1.0]])
    idx, ang = P.nearest_teacher(W, Ws)
    assert list(np.asarray(idx)) == [0, 0, 1]
    # [0,-3] is 90 degrees from both teachers; argmax picks the first
    np.testing.assert_allclose(np.degrees(np.asarray(ang)),
                               [30.0, 90.0, math.degrees(math.atan(0.1))], atol=1e-4)
    idx, ang = P.nearest_teacher(W, Ws, symmetric=True)  # -w counts as w (abs)
    assert list(np.asarray(idx)) == [0, 1, 1]
    np.testing.assert_allclose(np.degrees(np.asarray(ang))[1], 0.0, atol=1e-4)
    net = gflow.TwoLayer(3, "abs", "standard", bias=False)
    p = gflow.TwoLayerParams(W=W, b=None, a=jnp.array([0.5, 1.0, 2.0]))
    tp = gflow.TwoLayerParams(W=Ws, b=None, a=jnp.ones(2))
    cw = P.cluster_weights(net, p, tp, symmetric=True)
    # cluster 0: 0.5 * 2; cluster 1: 1 * 3 + 2 * |(0.1, 1)|
    np.testing.assert_allclose(np.asarray(cw), [1.0, 3.0 + 2 * math.hypot(0.1, 1.0)], rtol=1e-6)


def test_lojasiewicz_ratio_hand_case():
    # one ReLU neuron, f = a relu(w.x), x = (1, 0), y = 0, w = (1, 0), a = 1: f = 1, L = 1/2,
    # dL/da = f relu(w.x) = 1, dL/dw = f a x = (1, 0): |grad|^2 = 2, ratio = 4
    net = gflow.TwoLayer(1, "relu", "standard", bias=False)
    p = gflow.TwoLayerParams(W=jnp.array([[1.0, 0.0]]), b=None, a=jnp.array([1.0]))
    data = gflow.Dataset(jnp.array([[1.0, 0.0]]), jnp.array([0.0]))
    tr = gflow.simulate(net, p, data, loss="squared", dynamics=gflow.GD(1e-3), t1=1e-3,
                        save=gflow.LinTimes(2), observe=("lojasiewicz_ratio",))
    assert tr["lojasiewicz_ratio"][0] == pytest.approx(4.0, rel=1e-6)


def test_population_objective(x64):
    # training on the exact population objective (GD with a small step, cheap to compile; GF
    # uses the same objective): the recorded loss is the closed form, it decreases, and the
    # objective's gradient is jax.grad of P.loss
    data = gflow.data.gaussian_teacher(jax.random.key(8), 8, 5, 2, activation="abs")
    tnet, tp = data.meta["teacher"]
    net = gflow.TwoLayer(4, "abs", "standard", bias=False)
    p0 = gflow.init.near_teacher(jax.random.key(9), net, tnet, tp, angle_deg=15.0)
    obs = {"loss": "loss", "lojasiewicz_ratio": "lojasiewicz_ratio", **P.observables(tnet, tp)}
    tr = gflow.simulate(net, p0, P.Population.of(data), dynamics=gflow.GD(0.05), t1=20.0,
                        save=gflow.LinTimes(5), observe=obs)
    assert tr["loss"][0] == pytest.approx(float(P.loss(net, p0, tnet, tp)), rel=1e-12)
    np.testing.assert_allclose(tr["population_loss"], tr["loss"], rtol=1e-12)
    assert np.all(np.diff(tr["loss"]) < 0)
    g = jax.grad(lambda q: P.loss(net, q, tnet, tp))(p0)
    ratio = float(sum(jnp.sum(x**2) for x in jax.tree.leaves(g)) / P.loss(net, p0, tnet, tp))
    assert tr["lojasiewicz_ratio"][0] == pytest.approx(ratio, rel=1e-10)
    assert tr["teacher_angle"].shape == (5, 4) and tr["cluster_weight"].shape == (5, 2)


def test_bad_inputs():
    net = gflow.TwoLayer(2, "tanh", "standard", bias=False)
    tnet = gflow.TwoLayer(2, "relu", "standard", bias=False)
    p = gflow.TwoLayerParams(W=jnp.ones((2, 3)), b=None, a=jnp.ones(2))
    with pytest.raises(ValueError, match="activation"):
        P.loss(net, p, tnet, p)
    with pytest.raises(ValueError, match="activation"):
        kernels.gaussian(jnp.ones((1, 2)), jnp.ones((1, 2)), "tanh")
    with pytest.raises(ValueError, match="k <= d"):
        gflow.data.gaussian_teacher(jax.random.key(0), 4, 2, 3)
    with pytest.raises(ValueError, match="directions"):
        gflow.data.gaussian_teacher(jax.random.key(0), 4, 3, 2, directions="grid")
    with pytest.raises(ValueError, match="width >= k"):
        gflow.init.near_teacher(jax.random.key(0), gflow.TwoLayer(1, "relu", bias=False), tnet, p)


@pytest.mark.parametrize("delta", [30.0, 60.0, 90.0])
def test_separated_teacher_angles(x64, delta):
    # every pair at exactly Delta: w_i . w_j = cos(Delta), unit norms; a rotation of the
    # hand-built frame, so the Gram matrix is that of the frame
    tnet, tp = P.separated_teacher(jax.random.key(0), 6, 4, delta)
    G = np.asarray(tp.W @ tp.W.T)
    c = 0.0 if delta == 90.0 else math.cos(math.radians(delta))
    np.testing.assert_allclose(G, (1 - c) * np.eye(4) + c, atol=1e-12)
    ang = np.degrees(np.asarray(kernels.pairwise(kernels.angle, tp.W)))
    np.testing.assert_allclose(ang[~np.eye(4, dtype=bool)], delta, atol=1e-9)
    assert tnet.width == 4 and np.all(np.asarray(tp.a) == 1.0)
    _, ts = P.separated_teacher(jax.random.key(0), 6, 4, delta, outer="signed")
    assert np.asarray(ts.a).tolist() == [1.0, -1.0, 1.0, -1.0]


def test_separated_teacher_bad_inputs():
    with pytest.raises(ValueError, match="separation_deg"):
        P.separated_teacher(jax.random.key(0), 5, 2, 0.0)
    with pytest.raises(ValueError, match="separation_deg"):
        P.separated_teacher(jax.random.key(0), 5, 2, 120.0)
    with pytest.raises(ValueError, match="d >= k"):
        P.separated_teacher(jax.random.key(0), 3, 3, 45.0)  # needs one more dimension
    with pytest.raises(ValueError, match="activation"):
        P.separated_teacher(jax.random.key(0), 5, 2, 45.0, activation="tanh")
    P.separated_teacher(jax.random.key(0), 3, 3, 90.0)  # orthonormal: d = k is enough


def test_near_teacher_at_loss_hits_loss0(dtype):
    # the scaled local init starts at loss0: to rounding of the closed form (float64; the
    # root is located to machine precision in s) or to float32 cancellation, ~1e-7 of the
    # teacher's own loss E f*^2 / 2 = 2.4 here (1e-4 relative at loss0 = 1e-2; allow 1e-3)
    data = gflow.data.gaussian_teacher(jax.random.key(6), 8, 6, 3, activation="abs")
    tnet, tp = data.meta["teacher"]
    m = 7  # 3 teachers: duplicates of sizes 3, 2, 2
    net = gflow.TwoLayer(m, "abs", "standard", bias=False)
    for loss0 in (1e-2, 1e-4):
        p, s = P.near_teacher_at_loss(jax.random.key(7), net, tnet, tp, loss0)
        got = float(P.loss(net, p, tnet, tp))
        if dtype == "float32" and loss0 < 1e-3:
            continue  # below float32's resolution of this loss (see above)
        assert got == pytest.approx(loss0, rel=1e-3 if dtype == "float32" else 1e-9)
        # the construction: each neuron rotated by exactly s * 10 degrees off its teacher
        # (teacher j mod k), balanced (|a_j| = |w_j|)
        ang = np.degrees(np.asarray(kernels.pairwise(kernels.angle, p.W, tp.W)))
        own = ang[np.arange(m), np.arange(m) % 3]
        np.testing.assert_allclose(own, s * 10.0, rtol=1e-4 if dtype == "float32" else 1e-9)
        np.testing.assert_allclose(np.abs(np.asarray(p.a)), np.linalg.norm(np.asarray(p.W), axis=1),
                                   rtol=1e-5 if dtype == "float32" else 1e-12)
        assert 0 < s < 89.9 / 10.0


def test_near_teacher_at_loss_out_of_reach(x64):
    data = gflow.data.gaussian_teacher(jax.random.key(6), 8, 6, 3, activation="abs")
    tnet, tp = data.meta["teacher"]
    net = gflow.TwoLayer(3, "abs", "standard", bias=False)
    with pytest.raises(ValueError, match="out of reach"):
        P.near_teacher_at_loss(jax.random.key(7), net, tnet, tp, 1e3)
    with pytest.raises(ValueError, match="loss0"):
        P.near_teacher_at_loss(jax.random.key(7), net, tnet, tp, -1.0)


def test_observables_read_the_populations_teacher(x64):
    # without a teacher, the observables read the one of the Population objective: equal to
    # the captured-teacher ones (the same arithmetic on the same numbers)
    tnet, tp = P.separated_teacher(jax.random.key(1), 5, 2, 45.0)
    net = gflow.TwoLayer(4, "abs", "standard", bias=False)
    p0 = gflow.init.near_teacher(jax.random.key(2), net, tnet, tp, angle_deg=15.0)
    kw = dict(dynamics=gflow.GD(0.05), t1=1.0, save=gflow.LinTimes(3))
    a = gflow.simulate(net, p0, P.Population(tnet, tp), observe=P.observables(), **kw)
    b = gflow.simulate(net, p0, P.Population(tnet, tp), observe=P.observables(tnet, tp), **kw)
    for v in ("population_loss", "teacher_angle", "teacher_index", "cluster_weight"):
        np.testing.assert_allclose(a[v], b[v], rtol=1e-12, atol=1e-12)
    data = gflow.data.gaussian_teacher(jax.random.key(3), 8, 5, 2, activation="abs")
    with pytest.raises(ValueError, match="Population"):
        gflow.simulate(net, p0, data, observe=P.observables(), **kw)
    with pytest.raises(ValueError, match="both"):
        P.observables(tnet)


def test_level_crossings_closed_forms():
    # exponential L = L0 e^{-c t} (ratio c) and polynomial L = (1 + t)^-3 (ratio 3/(1 + t)),
    # sampled at 8 log-spaced nodes a decade: the Hermite interpolant with exact slopes is
    # fourth order, so the crossing times are exact to ~1e-6 relative (allow 1e-4)
    t = np.concatenate([[0.0], np.geomspace(1e-3, 1e4, 57)])
    levels = 10.0 ** -np.arange(3.0, 9.0)
    for L, q, exact in (
            (1e-2 * np.exp(-0.5 * t), np.full_like(t, 0.5), np.log(1e-2 / levels) / 0.5),
            ((1 + t) ** -3.0, 3.0 / (1 + t), levels ** (-1 / 3) - 1)):
        ok = L > 1e-12
        times, at = P.level_crossings(t[ok], L[ok], q[ok], levels, {"rate": q[ok]})
        np.testing.assert_allclose(times, exact, rtol=1e-4)
        # the rate at each crossing, interpolated in log L: exact for both (linear in log L
        # for the exponential (constant) and for the power law (q ~ L^(1/3)))
        qx = np.full_like(levels, 0.5) if q[0] == 0.5 else 3.0 * levels ** (1 / 3)
        np.testing.assert_allclose(at["rate"], qx, rtol=1e-9)
    # a level below the last node is not reached
    times, _ = P.level_crossings(t[:5], (1 + t[:5]) ** -3.0, 3.0 / (1 + t[:5]), [0.999, 1e-12])
    assert np.isfinite(times[0]) and np.isnan(times[1])

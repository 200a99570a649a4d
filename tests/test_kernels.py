"""Tests of gflow.kernels: the stable angle and the Gaussian ReLU/abs kernels against a
50-digit mpmath reference, at the inputs where arccos(clip(cos)) fails: duplicate,
antipodal, near-duplicate, scaled and zero rows, in float32 and float64."""

import math

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest

from gflow import kernels, ntk


def _rows(dtype):
    """Rows (d = 5) covering the hard cases, rounded to ``dtype``; returned as float64 so the
    reference sees exactly the values the kernel sees."""
    r = np.random.default_rng(0).standard_normal((4, 5))
    rows = [
        r[0], r[1], r[2],
        r[0],                   # 3: duplicate of 0
        -r[0],                  # 4: antipodal to 0
        r[0] + 1e-6 * r[1],     # 5: near-duplicate of 0 (angle ~1e-6)
        3.0 * r[1],             # 6: positive multiple of 1 (angle 0)
        1e-3 * r[2],            # 7: small multiple of 2
        1e3 * r[3],             # 8: large
        np.zeros(5),            # 9: zero
    ]
    return np.asarray(np.asarray(rows, dtype=dtype), dtype=np.float64)


def _mp_vec(x):
    return [mp.mpf(float(v)) for v in x]  # exact: binary floats are mpf values


def _mp_parts(x, y):
    """|x|, |y|, x.y, theta at 50 digits (theta = pi/2 if either is zero)."""
    nx = mp.sqrt(mp.fsum(v * v for v in x))
    ny = mp.sqrt(mp.fsum(v * v for v in y))
    dot = mp.fsum(a * b for a, b in zip(x, y, strict=True))
    if nx == 0 or ny == 0:
        return nx, ny, dot, mp.pi / 2
    c = min(max(dot / (nx * ny), mp.mpf(-1)), mp.mpf(1))
    return nx, ny, dot, mp.acos(c)


def _mp_matrices(X):
    """Reference angle, order-1 ReLU kernel E[relu relu] and inner NTK ``x.x'(pi-theta)/(2pi)``."""
    n = len(X)
    ang, relu, inner = (np.zeros((n, n)) for _ in range(3))
    with mp.workdps(50):
        V = [_mp_vec(x) for x in X]
        for i in range(n):
            for j in range(n):
                nx, ny, dot, th = _mp_parts(V[i], V[j])
                ang[i, j] = float(th)
                relu[i, j] = float((nx * ny * mp.sin(th) + (mp.pi - th) * dot) / (2 * mp.pi))
                inner[i, j] = float(dot * (mp.pi - th) / (2 * mp.pi))
    return ang, relu, inner


# Tolerances, in units of the dtype's epsilon: the angle is formed from two norms of
# differences of unit vectors (a few roundings each, d = 5 terms), so its absolute error is a
# small multiple of eps; kernel entries carry the scale |x||x'|. Measured: < 1 eps; 8 eps
# leaves room for other summation orders; arccos(clip(cos)) misses by ~sqrt(eps) at the
# duplicates (1e-8 in float64, 3e-4 in float32), far outside.
ULPS = 8


def test_angle_matches_mpmath(dtype):
    X = _rows(dtype)
    ref, _, _ = _mp_matrices(X)
    Xd = jnp.asarray(X, dtype)
    got = np.asarray(kernels.pairwise(kernels.angle, Xd), np.float64)
    eps = float(jnp.finfo(dtype).eps)
    np.testing.assert_allclose(got, ref, rtol=0, atol=ULPS * eps)
    # exact where equality holds by construction: equal rows, a row and its negative
    assert got[0, 3] == 0.0 and got[3, 3] == 0.0 and got[1, 6] < ULPS * eps
    assert got[0, 4] == pytest.approx(math.pi, abs=eps * math.pi)
    assert got[9, 0] == pytest.approx(math.pi / 2, abs=eps)  # zero row: pi/2 by convention
    # near-duplicate: relative accuracy, not just absolute
    assert got[0, 5] == pytest.approx(ref[0, 5], rel=1e-6 if dtype == "float64" else 0.3)


@pytest.mark.parametrize("layers", ["inner", "outer", "both"])
def test_relu_ntk_matches_mpmath(dtype, layers):
    X = _rows(dtype)
    _, relu, inner = _mp_matrices(X)
    ref = {"inner": inner, "outer": relu, "both": inner + relu}[layers]
    got = np.asarray(ntk.relu_ntk(jnp.asarray(X, dtype), layers=layers), np.float64)
    eps = float(jnp.finfo(dtype).eps)
    scale = np.outer(np.linalg.norm(X, axis=1), np.linalg.norm(X, axis=1))
    assert np.all(np.abs(got - ref) <= ULPS * eps * scale)


def test_scaled_duplicate_diagonal_and_singular_gram(dtype):
    # x5 = 3 x6 with |x6| = 1: K(x5, x5) = |x5|^2 / 2 = 4.5 and the inner NTK Gram is singular
    # (row 5 = 3 row 6 since theta(x5, z) = theta(x6, z)); its lambda_min is rounding, not the
    # -3e-9 (float64) of arccos(clip(cos)).
    r = np.random.default_rng(1).standard_normal((6, 5))
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    r[4] = 3.0 * r[5]
    X = jnp.asarray(r, dtype)
    K = ntk.relu_ntk(X)
    eps = float(jnp.finfo(dtype).eps)
    assert float(K[4, 4]) == pytest.approx(4.5, abs=4 * 4.5 * eps)
    _, _, inner = _mp_matrices(np.asarray(X, np.float64))
    assert np.max(np.abs(np.asarray(K, np.float64) - inner)) <= ULPS * eps * 9
    lam = float(ntk.lambda_min(jnp.asarray(K, jnp.float64) if dtype == "float64" else K))
    lam_max = float(jnp.max(jnp.linalg.eigvalsh(K)))
    # eigvalsh of a matrix with entries accurate to ~eps |K|: |lambda_min| <= n * ULPS eps |K|
    assert abs(lam) <= 6 * ULPS * eps * lam_max


def test_gaussian_kernels_match_mpmath(x64):
    X = _rows("float64")
    _, relu, _ = _mp_matrices(X)
    Xd = jnp.asarray(X)
    np.testing.assert_allclose(np.asarray(kernels.pairwise(kernels.relu_cross, Xd)), relu,
                               rtol=1e-13, atol=1e-13)
    # abs: E|u.x||v.x| = 4 E[relu relu] - u.v
    np.testing.assert_allclose(
        np.asarray(kernels.pairwise(kernels.gaussian, Xd, activation="abs")),
        4 * relu - X @ X.T, rtol=1e-12, atol=1e-12 * float(np.max(np.abs(X @ X.T))))
    # arc-cosine kernels (Cho-Saul): k_1 = 2 E[relu relu], k_0 = 1 - theta/pi
    np.testing.assert_allclose(np.asarray(ntk.arccos_kernel(Xd, order=1)), 2 * relu,
                               rtol=1e-13, atol=1e-13)
    k0 = np.asarray(ntk.arccos_kernel(Xd, order=0))
    assert k0[0, 3] == 1.0 and k0[0, 4] == pytest.approx(0.0, abs=1e-15)


def test_relu_distance_matches_mpmath(dtype):
    # E(relu(u.x) - relu(v.x))^2 = |u|^2/2 + |v|^2/2 - 2 E[relu relu], here written without
    # the cancellation: relative accuracy also for nearby u, v (row 5 is 1e-6 from row 0)
    X = _rows(dtype)
    _, relu, _ = _mp_matrices(X)
    sq = np.sum(X**2, axis=1)
    got = np.asarray(kernels.pairwise(kernels.relu_distance, jnp.asarray(X, dtype)), np.float64)
    eps = float(jnp.finfo(dtype).eps)
    assert got[0, 3] == 0.0 and got[1, 1] == 0.0  # equal rows: exactly 0
    with mp.workdps(50):
        u, v = _mp_vec(X[0]), _mp_vec(X[5])
        nx, ny, dot, th = _mp_parts(u, v)
        exact = float(nx**2 / 2 + ny**2 / 2 - (nx * ny * mp.sin(th) + (mp.pi - th) * dot) / mp.pi)
    assert got[0, 5] == pytest.approx(exact, rel=1e-6 if dtype == "float64" else 0.05)
    scale = np.add.outer(sq, sq) / 2  # the size of the two terms whose difference it is
    full = scale - 2 * relu  # the closed form from the 50-digit kernel
    assert np.all(np.abs(got - full) <= ULPS * eps * scale)


def test_relu_cross_gradient_matches_mpmath_derivative(x64):
    # d/du E[relu(u.x) relu(v.x)] = ((pi - theta) v + (s / |u|^2) u) / (2 pi),
    # s = |u||v| sin theta -- finite at v = u, v = -u, v = 3u; checked against 50-digit
    # central differences of the closed form (mpmath.diff) at those points
    X = _rows("float64")
    pairs = [(0, 3), (0, 4), (0, 5), (1, 6), (2, 7), (0, 1), (8, 2)]
    for i, j in pairs:
        u, v = jnp.asarray(X[i]), jnp.asarray(X[j])
        g = np.asarray(jax.grad(kernels.relu_cross)(u, v))
        with mp.workdps(50):
            mu, mv = _mp_vec(X[i]), _mp_vec(X[j])

            def k(t, e, mu=mu, mv=mv):
                w = [a + (t if c == e else 0) for c, a in enumerate(mu)]
                nx, ny, dot, th = _mp_parts(w, mv)
                return (nx * ny * mp.sin(th) + (mp.pi - th) * dot) / (2 * mp.pi)

            ref = np.array([float(mp.diff(lambda t, e=e: k(t, e), 0)) for e in range(5)])
        scale = np.linalg.norm(X[j])
        np.testing.assert_allclose(g, ref, rtol=0, atol=1e-13 * scale)
    # and at a zero argument the gradient is 0 (taken as 0: the kernel is 0 to second order)
    z = jnp.zeros(5)
    assert np.all(np.isfinite(np.asarray(jax.grad(kernels.relu_cross)(z, jnp.asarray(X[0])))))


def test_kappa_with_residual_sine(x64):
    # kappa(rho) from a separately computed sin is accurate where rho rounds to 1
    th = 1e-9
    rho, s = math.cos(th), math.sin(th)  # rho == 1.0 in float64
    with mp.workdps(50):
        ref = float((mp.sin(th) + (mp.pi - th) * mp.cos(th)) / (2 * mp.pi))
    assert float(kernels.kappa(rho, s)) == pytest.approx(ref, rel=1e-15)


def test_bad_inputs():
    with pytest.raises(ValueError, match="activation"):
        kernels.gaussian(jnp.ones(2), jnp.ones(2), "tanh")
    with pytest.raises(ValueError, match="order"):
        kernels.arccos(jnp.ones(2), jnp.ones(2), order=2)
    with pytest.raises(ValueError, match="shapes"):
        kernels.pairwise(kernels.angle, jnp.ones((2, 3)), jnp.ones((2, 4)))

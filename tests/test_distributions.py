"""Tests of gflow.distributions: enumeration against brute force and Monte Carlo, the Gaussian
teacher's closed-form population loss against Monte Carlo, reproducible sampling, held-out
samples disjoint from the training sample."""

import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow import distributions as D

# Monte Carlo tolerance: the sample mean of n i.i.d. draws has standard error s/sqrt(n) (CLT);
# a 4-standard-error band fails with probability ~6e-5 if the exact value is right (the keys
# are fixed, so each test is deterministic).
Z = 4.0


def _mc_check(exact, values):
    values = np.asarray(values, np.float64)
    se = values.std() / math.sqrt(values.size)
    assert abs(float(exact) - values.mean()) <= Z * se, (float(exact), values.mean(), se)


@eqx.filter_jit
def _sample_and_apply(dist, key, n, net, p):
    """One compiled program: a sample and the net's outputs on it (eager ops would each compile)."""
    X, y = dist.sample(key, n)
    return X, y, net.apply(p, X)


def _net(d, width=32, bias=True, activation="relu", key=1):
    net = gflow.TwoLayer(width, activation, bias=bias)
    return net, gflow.init.gaussian(jax.random.key(key), net, d)


def test_parity_enumeration_is_the_hypercube(dtype):
    d = 6
    dist = D.SparseParity(d, coords=(1, 4))
    X, y, w = (np.asarray(a) for a in dist.enumerate())
    assert X.dtype == np.dtype(dtype) and X.shape == (2**d, d)
    assert len({tuple(r) for r in np.sign(X)}) == 2**d  # every vertex once
    np.testing.assert_allclose(np.abs(X), 1 / math.sqrt(d), rtol=1e-7)
    np.testing.assert_array_equal(y, np.sign(X[:, 1]) * np.sign(X[:, 4]))
    assert w.sum() == 1.0 and y.mean() == 0.0  # 2^-d sums exactly; parity is balanced
    # population loss against a brute-force sum over itertools.product in float64
    net, p = _net(d)
    S = np.array(list(itertools.product([-1.0, 1.0], repeat=d)))
    f = np.asarray(net.apply(p, jnp.asarray(S / math.sqrt(d), dtype)), np.float64)
    brute = np.mean(0.5 * (f - S[:, 1] * S[:, 4]) ** 2)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(float(dist.population_loss(net, p)), brute, rtol=rtol)
    # the error is a count over 2^d points: k / 2^d is exact in binary floating point, and so
    # is every partial sum (multiples of 2^-d below 2^24 terms), so equality holds by arithmetic
    brute_err = np.mean(f * S[:, 1] * S[:, 4] <= 0)
    assert float(dist.population_error(net, p)) == brute_err


def test_expectation_chunks_pad_with_zero_weight():
    dist = D.SparseParity(7, 3)
    net, p = _net(7)
    whole = dist.expectation(lambda X, y: net.apply(p, X) * y, chunk=128)
    ragged = dist.expectation(lambda X, y: net.apply(p, X) * y, chunk=37)  # 128 = 3*37 + 17
    np.testing.assert_allclose(float(ragged), float(whole), rtol=1e-5)
    assert float(dist.expectation(lambda X, y: jnp.ones_like(y), chunk=37)) == 1.0


def test_enumeration_agrees_with_monte_carlo(dtype):
    net, p = _net(10, width=64)
    dist = D.SparseParity(10, 2)
    X, y, f = _sample_and_apply(dist, jax.random.key(4), 100_000, net, p)
    _mc_check(dist.population_loss(net, p), 0.5 * (f - y) ** 2)
    _mc_check(dist.population_error(net, p), (y * f <= 0).astype(float))
    dist = D.Clusters.random(jax.random.key(3), 10, 6)
    X, y, f = _sample_and_apply(dist, jax.random.key(4), 100_000, net, p)
    _mc_check(dist.population_loss(net, p, "logistic"), jax.nn.softplus(-y * f))


@pytest.mark.parametrize("activation, dtype_name", [("relu", "float32"), ("relu", "float64"),
                                                   ("abs", "float64")])
def test_gaussian_teacher_population_loss_against_monte_carlo(activation, dtype_name):
    with jax.enable_x64(dtype_name == "float64"):
        _gaussian_teacher_check(activation, dtype_name)


def _gaussian_teacher_check(activation, dtype):
    dist = D.GaussianTeacher.random(jax.random.key(0), 8, 3, activation=activation, noise=0.3)
    net, p = _net(8, width=16, bias=False, activation=activation)
    X, y, f = _sample_and_apply(dist, jax.random.key(5), 200_000, net, p)
    assert X.dtype == np.dtype(dtype)
    _mc_check(dist.population_loss(net, p), 0.5 * (f - y) ** 2)
    # noise-free: the student equal to the teacher has zero population loss
    clean = D.GaussianTeacher(dist.teacher, dist.teacher_params)
    assert float(clean.population_loss(dist.teacher, dist.teacher_params)) == pytest.approx(
        0.0, abs=1e-5 if dtype == "float32" else 1e-12)


def test_gaussian_teacher_is_the_teacher_of_data_gaussian_teacher():
    key = jax.random.key(7)
    dist = D.GaussianTeacher.random(key, 6, 2, activation="abs", outer="positive")
    tnet, tp = gflow.data.gaussian_teacher(key, 1, 6, 2, activation="abs").meta["teacher"]
    assert dist.teacher == tnet
    np.testing.assert_array_equal(dist.teacher_params.W, tp.W)  # same program, same key
    X, y = dist.sample(jax.random.key(1), 50)
    np.testing.assert_allclose(y, tnet.apply(tp, X), rtol=1e-6)


def _all():
    return [D.SparseParity(12, 3), D.GaussianTeacher.random(jax.random.key(0), 5, 2),
            D.Margin(5, 0.2), D.Clusters.random(jax.random.key(1), 5, 3, spread=0.1)]


@pytest.mark.parametrize("dist", _all(), ids=lambda d: type(d).__name__)
def test_sampling_is_reproducible_from_the_key(dist):
    a, b = dist.sample(jax.random.key(3), 64), dist.sample(jax.random.key(3), 64)
    for u, v in zip(a, b, strict=True):  # same compiled program, same key: identical bits
        np.testing.assert_array_equal(u, v)
    c = dist.sample(jax.random.key(4), 64)
    assert not np.array_equal(a[0], c[0])
    X, y = jax.jit(lambda k: dist.sample(k, 64))(jax.random.key(3))  # jittable
    np.testing.assert_allclose(X, a[0], rtol=1e-6, atol=1e-7)
    assert X.shape == (64, dist.d) and y.shape == (64,)


def _rows(X):
    return {tuple(r) for r in np.asarray(X).tolist()}


def test_heldout_is_disjoint_from_the_training_sample():
    # d = 8: 256 points, a 300-draw training sample covers most of them -> the complement is
    # enumerated; d = 12: a small training sample -> rejection sampling
    for d, n in ((8, 300), (12, 200)):
        dist = D.SparseParity(d, 2)
        ds = dist.dataset(jax.random.key(d), n, n_test=300)
        assert isinstance(ds, gflow.Dataset) and ds.X_test.shape == (300, d)
        assert not (_rows(ds.X) & _rows(ds.X_test))
        np.testing.assert_array_equal(ds.y_test, np.sign(ds.X_test[:, 0] * ds.X_test[:, 1]))
    clusters = D.Clusters.random(jax.random.key(2), 4, 4)
    X, _ = clusters.heldout(jax.random.key(0), 20, clusters.centres[:3])
    assert _rows(X) == _rows(clusters.centres[3:])
    with pytest.raises(ValueError, match="whole support"):
        clusters.heldout(jax.random.key(0), 5, clusters.centres)
    m = D.Margin(4, 0.1)
    Xtr, _ = m.sample(jax.random.key(0), 100)
    Xte, _ = m.heldout(jax.random.key(1), 100, Xtr)
    assert not (_rows(Xtr) & _rows(Xte))


def test_margin_data():
    w = jnp.array([1.0, 2.0, 0.0, -2.0])
    dist = D.Margin(4, 0.3, direction=w)
    X, y = dist.sample(jax.random.key(0), 20_000)
    r = np.asarray((X @ dist.direction) * y)
    assert r.min() >= 0.3 - 1e-6 and r.min() < 0.3 + 1e-3  # r ~ U[0.3, 1]: attains the margin
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-5)
    assert abs(float(np.mean(y))) < Z / math.sqrt(20_000)


def test_clusters():
    dist = D.Clusters.random(jax.random.key(0), 8, 5, spread=0.05)
    X, y = dist.sample(jax.random.key(1), 1000)
    dist2 = np.linalg.norm(np.asarray(X)[:, None] - np.asarray(dist.centres)[None], axis=2)
    g = dist2.argmin(axis=1)
    np.testing.assert_array_equal(y, np.asarray(dist.labels)[g])
    assert dist2.min(axis=1).max() < 0.05 * 3  # |noise| ~ spread; groups sqrt(2) apart
    assert dist.support_size is None
    with pytest.raises(ValueError, match="no enumerable support"):
        dist.enumerate()


def test_dataset_trains_with_simulate():
    dist = D.SparseParity(6, 2)
    ds = dist.dataset(jax.random.key(0), 40, n_test=20)
    net, p = _net(6, width=16)
    tr = gflow.simulate(net, p, ds, loss="logistic", dynamics=gflow.GD(0.5), t1=2.0,
                        save=gflow.LinTimes(3), observe=("loss", "test_loss"))
    assert np.all(np.isfinite(tr["test_loss"]))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: D.SparseParity(0), "d must be"),
        (lambda: D.SparseParity(4, 5), "k must be"),
        (lambda: D.SparseParity(4, coords=(1, 1)), "coords"),
        (lambda: D.Margin(1, 0.1), "d must be"),
        (lambda: D.Margin(3, 1.0), "margin"),
        (lambda: D.Margin(3, 0.1, direction=[0.0, 0.0, 0.0]), "direction"),
        (lambda: D.Clusters(jnp.zeros((3, 2)), jnp.ones(2)), "centres"),
        (lambda: D.Clusters.random(jax.random.key(0), 2, 2, spread=-1.0), "spread"),
        (lambda: D.GaussianTeacher.random(jax.random.key(0), 3, 2, noise=-1.0), "noise"),
        (lambda: D.GaussianTeacher.random(jax.random.key(0), 3, 2).population_loss(
            *_net(3, bias=False), "logistic"), "squared"),
        (lambda: D.GaussianTeacher.random(jax.random.key(0), 3, 2).population_error(
            *_net(3, bias=False)), "real-valued"),
        (lambda: D.Margin(3, 0.1).population_loss(*_net(3)), "no enumerable support"),
        (lambda: D.SparseParity(30).enumerate(), "no enumerable support"),
        (lambda: D.SparseParity(4).heldout(jax.random.key(0), 3, np.zeros((2, 5))), "exclude"),
        (lambda: D.SparseParity(4).dataset(jax.random.key(0), 0), "n must be"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_generators_and_distributions_share_their_samplers():
    # each family's sampling is written once (gflow.data): the same function on the same key,
    # so the same draws, bitwise
    key = jax.random.key(6)
    ds = gflow.data.sparse_parity(key, 40, 7, k=3, n_test=5)
    X, y = D.SparseParity(7, 3).sample(jax.random.split(key)[0], 40)
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.y, y)
    ds = gflow.data.gaussian_teacher(key, 30, 5, 2, activation="relu", outer="signed")
    dist = D.GaussianTeacher.random(key, 5, 2, activation="relu", outer="signed")
    X, y = gflow.data.teacher_points(jax.random.split(key, 3)[1], 30, dist.teacher,
                                     dist.teacher_params)
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.y, y)
    ds = gflow.data.groups(key, 20, 6, 4, n_test=4)
    clusters = D.Clusters.random(jax.random.split(key, 4)[0], 6, 4)
    np.testing.assert_array_equal(ds.meta["centers"], clusters.centres)

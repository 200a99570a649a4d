import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow.losses import get_loss
from gflow.objective import Objective


def test_dataset_validation():
    X, y = np.zeros((4, 2)), np.zeros(4)
    gflow.Dataset(X, y)
    with pytest.raises(ValueError, match="samples"):
        gflow.Dataset(X, np.zeros(3))
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        gflow.Dataset(np.zeros(4), y)
    with pytest.raises(ValueError, match="NaN"):
        gflow.Dataset(np.array([[0.0, np.nan]] * 4), y)
    with pytest.raises(ValueError, match="NaN"):
        gflow.Dataset(X, np.array([0, 0, np.inf, 0]))
    with pytest.raises(ValueError, match="n=0"):
        gflow.Dataset(np.zeros((0, 2)), np.zeros(0))
    with pytest.raises(ValueError, match="both"):
        gflow.Dataset(X, y, X_test=X)
    with pytest.raises(ValueError, match="d="):
        gflow.Dataset(X, y, np.zeros((3, 5)), np.zeros(3))


def test_dataset_dtype_follows_x64(dtype):
    ds = gflow.Dataset(np.ones((3, 2), dtype=np.float64), [1, -1, 1])
    assert ds.X.dtype == jnp.dtype(dtype) and ds.y.dtype == jnp.dtype(dtype)
    assert ds.is_binary()


@pytest.mark.parametrize("labels", ["regression", "sign"])
def test_teacher(labels):
    ds = gflow.data.teacher(jax.random.key(0), 300, 6, 3, labels=labels)
    tnet, tp = ds.meta["teacher"]
    assert ds.X.shape == (300, 6) and ds.X_test.shape == (300, 6)
    np.testing.assert_allclose(jnp.linalg.norm(ds.X, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(tp.W, axis=1), 1.0, rtol=1e-5)
    if labels == "regression":
        np.testing.assert_allclose(ds.y, tnet.apply(tp, ds.X), rtol=1e-6)
    else:
        assert ds.is_binary() and abs(float(jnp.mean(ds.y))) < 0.05  # balanced by the median


def test_teacher_one_program_per_size(dtype):
    # new keys and noise levels reuse the compiled generator; zero noise adds exactly 0
    from gflow.data import _teacher_arrays

    gflow.data.teacher(jax.random.key(0), 30, 3, 2, noise=0.1)
    size = _teacher_arrays._cache_size()
    for seed, noise in ((1, 0.2), (2, 0.5)):
        ds = gflow.data.teacher(jax.random.key(seed), 30, 3, 2, noise=noise)
    assert _teacher_arrays._cache_size() == size
    tnet, tp = ds.meta["teacher"]
    clean = gflow.data.teacher(jax.random.key(2), 30, 3, 2)
    # X comes from the same compiled program and key whatever the noise: exact by construction
    np.testing.assert_array_equal(clean.X, ds.X)
    # the labels are the teacher's outputs, but computed inside the fused generator: XLA may
    # order the width-2 sum and fuse the activations differently from TwoLayer.apply (it does
    # on some CPUs), so they agree to rounding: a few ulps of |y| (here |y| = O(1))
    eps = float(jnp.finfo(dtype).eps)
    np.testing.assert_allclose(clean.y, tnet.apply(tp, clean.X), rtol=8 * eps, atol=8 * eps)
    # the noise is N(0, noise^2): its sample std over 60 draws is within ~4 standard errors
    resid = np.concatenate([ds.y - clean.y, ds.y_test - clean.y_test]) / 0.5
    assert abs(float(np.std(resid)) - 1.0) < 4 / np.sqrt(2 * 60)
    assert ds.X.dtype == jnp.dtype(dtype)


def test_sparse_parity():
    data = gflow.data.sparse_parity(jax.random.key(0), 64, 5, n_test=32)
    X = np.asarray(data.X)
    np.testing.assert_allclose(np.abs(X), 1 / math.sqrt(5), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(data.y), np.sign(X[:, 0] * X[:, 1]))
    assert data.X_test.shape == (32, 5)
    with pytest.raises(ValueError, match="k must be"):
        gflow.data.sparse_parity(jax.random.key(0), 4, 3, k=4)
    with pytest.raises(ValueError, match="n must be"):
        gflow.data.sparse_parity(jax.random.key(0), 0, 3)


def test_groups():
    radius = 0.1
    data = gflow.data.groups(jax.random.key(1), 64, 6, 4, radius=radius, n_test=8)
    C = np.asarray(data.meta["centers"])
    np.testing.assert_allclose(C @ C.T, np.eye(4), atol=1e-5)
    labels = np.asarray(data.meta["labels"])
    assert sorted(labels.tolist()) == [-1.0, -1.0, 1.0, 1.0]
    g = np.asarray(data.meta["group"])
    X = np.asarray(data.X)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-5)
    # every point within angle asin(radius) of its own center, labels per group
    cos = np.sum(X * C[g], axis=1)
    assert np.all(cos >= math.cos(math.asin(radius)) - 1e-5)
    np.testing.assert_array_equal(np.asarray(data.y), labels[g])
    with pytest.raises(ValueError, match="k must be"):
        gflow.data.groups(jax.random.key(1), 10, 3, 4)
    with pytest.raises(ValueError, match="radius"):
        gflow.data.groups(jax.random.key(1), 10, 6, 4, radius=1.5)


def test_tile_samples_leaves_loss_and_gradient_unchanged(x64):
    data = gflow.data.sparse_parity(jax.random.key(2), 6, 4, n_test=8)
    big = gflow.data.tile_samples(data, 24)
    assert big.X.shape == (24, 4)
    net = gflow.TwoLayer(5, "relu", "ntk", bias=False, train_outer=False)
    p = gflow.init.gaussian(jax.random.key(3), net, 4)
    loss = get_loss("logistic")
    o1, o2 = Objective(net, loss, data.X, data.y), Objective(net, loss, big.X, big.y)
    (l1, g1), (l2, g2) = o1.value_and_grad(p), o2.value_and_grad(p)
    tol = 1e-13  # float64: the tiled mean differs from the plain one only by summation order
    assert float(l2) == pytest.approx(float(l1), rel=tol)
    np.testing.assert_allclose(g2.W, g1.W, rtol=10 * tol, atol=10 * tol)
    with pytest.raises(ValueError, match="multiple"):
        gflow.data.tile_samples(data, 10)


def test_sine_data():
    data = gflow.data.sine_data(jax.random.key(0), 80, 5, n_test=10)
    X, y = np.asarray(data.X), np.asarray(data.y)
    assert X.shape == (80, 5) and data.X_test.shape == (10, 5)
    assert X.min() >= -4 and X.max() <= 2
    np.testing.assert_allclose(y, np.sum(3.5 * np.sin(5 * X + 1), axis=1), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="high > low"):
        gflow.data.sine_data(jax.random.key(0), low=1.0, high=0.0)


def test_stack_tiled_is_an_ensemble_of_the_untiled_flows(x64):
    datas = [gflow.data.sparse_parity(jax.random.key(k), n, 4, n_test=8)
             for k, n in ((5, 4), (6, 6))]
    both = gflow.data.stack_tiled(datas)
    assert both.X.shape == (2, 12, 4) and both.X_test.shape == (2, 8, 4)
    net = gflow.TwoLayer(5, "relu", "ntk", bias=False, train_outer=False)
    p = gflow.init.gaussian(jax.random.key(3), net, 4)
    loss = get_loss("logistic")
    for i, dt in enumerate(datas):
        (l1, g1) = Objective(net, loss, dt.X, dt.y).value_and_grad(p)
        (l2, g2) = Objective(net, loss, both.X[i], both.y[i]).value_and_grad(p)
        assert float(l2) == pytest.approx(float(l1), rel=1e-13)  # summation order only
        np.testing.assert_allclose(g2.W, g1.W, rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(both.X_test[i], dt.X_test)
    assert gflow.data.stack_tiled([gflow.data.Dataset(dt.X, dt.y) for dt in datas]).X_test is None

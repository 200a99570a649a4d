import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow


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

"""gflow.MLP: forward pass, agreement with TwoLayer, trainable mask, init, validation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import RTOL, tree_allclose

import gflow
from gflow.nets import MLPParams


def _params():
    # 2 -> 3 -> 2 -> 1, numbers chosen by hand
    W1 = jnp.array([[1.0, -1.0], [0.5, 2.0], [0.0, 1.0]])
    b1 = jnp.array([0.1, -0.2, 0.3])
    W2 = jnp.array([[1.0, 0.0, -1.0], [2.0, 1.0, 0.5]])
    b2 = jnp.array([0.0, -0.5])
    a = jnp.array([1.5, -2.0])
    return MLPParams(Ws=(W1, W2), bs=(b1, b2), a=a)


@pytest.mark.parametrize("scaling", ["standard", "ntk"])
def test_forward_hand_computed(dtype, scaling):
    p = _params()
    X = jnp.array([[0.3, -0.7], [1.0, 2.0]])
    net = gflow.MLP((3, 2), "tanh", scaling=scaling, bias=True)
    c2, cout = (1.0, 1.0) if scaling == "standard" else (1 / math.sqrt(3), 1 / math.sqrt(2))
    want = []
    for x in np.asarray(X, np.float64):
        h1 = [math.tanh(sum(float(p.Ws[0][j, k]) * x[k] for k in range(2)) + float(p.bs[0][j]))
              for j in range(3)]
        h2 = [math.tanh(c2 * sum(float(p.Ws[1][j, k]) * h1[k] for k in range(3))
                        + float(p.bs[1][j])) for j in range(2)]
        want.append(cout * sum(float(p.a[j]) * h2[j] for j in range(2)))
    got = net.apply(p, X)
    assert got.dtype == jnp.result_type(float)
    np.testing.assert_allclose(np.asarray(got), want, rtol=RTOL[dtype], atol=RTOL[dtype])


@pytest.mark.parametrize("bias", [False, True])
def test_one_hidden_layer_equals_two_layer(dtype, bias):
    key = jax.random.key(3)
    X = jax.random.normal(jax.random.key(1), (5, 4))
    for scaling in ("standard", "ntk", "mean_field"):
        tl = gflow.TwoLayer(7, "softplus", scaling=scaling, bias=bias)
        mlp = gflow.MLP((7,), "softplus", scaling=scaling, bias=bias)
        p_tl = gflow.init.gaussian(key, tl, 4, outer="gaussian")
        p_mlp = gflow.init.gaussian(key, mlp, 4, outer="gaussian")
        # same key, same draws: the MLP init reduces to the two-layer init (two compiled
        # programs, which may fuse the scaling of the draws differently: a few ulps)
        eps = float(jnp.finfo(dtype).eps)
        assert tree_allclose((p_mlp.Ws[0], p_mlp.a), (p_tl.W, p_tl.a), rtol=4 * eps)
        if bias:
            assert tree_allclose(p_mlp.bs[0], p_tl.b, rtol=4 * eps)
        np.testing.assert_allclose(np.asarray(mlp.apply(p_mlp, X)),
                                   np.asarray(tl.apply(p_tl, X)),
                                   rtol=RTOL[dtype], atol=RTOL[dtype])


def test_small_init_one_layer_equals_two_layer():
    key = jax.random.key(0)
    tl, mlp = gflow.TwoLayer(9, "tanh", bias=True), gflow.MLP((9,), "tanh", bias=True)
    a = gflow.init.small(key, tl, 3, 2.5)
    b = gflow.init.small(key, mlp, 3, 2.5)
    # same draws, two compiled programs: equal to a few ulps (float32 here), not bitwise --
    # XLA's fast-math code generation rounds the scaling of the draws differently
    assert tree_allclose((b.Ws[0], b.bs[0], b.a), (a.W, a.b, a.a), rtol=4 * 2.0**-23)


def test_small_init_per_layer_std():
    # W_l ~ N(0, m_l^-gamma): the sample std of m_l * fan_in entries is within 5 standard
    # errors (relative s.e. of a sample std ~ 1/sqrt(2N)) of m_l^(-gamma/2).
    widths, d, gamma = (200, 100), 50, 1.5
    net = gflow.MLP(widths, "tanh", scaling="standard", bias=True)
    p = gflow.init.small(jax.random.key(1), net, d, gamma, outer_std=0.3)
    for W, b, m in zip(p.Ws, p.bs, widths, strict=True):
        want = m ** (-gamma / 2)
        assert abs(float(jnp.std(W)) / want - 1) < 5 / math.sqrt(2 * W.size)
        assert abs(float(jnp.std(b)) / want - 1) < 5 / math.sqrt(2 * b.size)
    assert abs(float(jnp.std(p.a)) / 0.3 - 1) < 5 / math.sqrt(2 * p.a.size)
    with pytest.raises(ValueError, match="outer_std"):
        gflow.init.small(jax.random.key(1), net, d, gamma, outer_std=0.0)


@pytest.mark.parametrize("bias", [False, True])
def test_fixed_outer_weights_get_zero_gradient(bias):
    net = gflow.MLP((4, 3), "tanh", scaling="ntk", bias=bias, train_outer=False)
    p = gflow.init.gaussian(jax.random.key(0), net, 2)
    X = jax.random.normal(jax.random.key(1), (6, 2))
    y = jnp.sin(X[:, 0])
    g = gflow.Objective(net, "squared", X, y).grad(p)
    assert float(jnp.max(jnp.abs(g.a))) == 0.0  # masked gradient: exactly zero
    assert all(float(jnp.max(jnp.abs(W))) > 0 for W in g.Ws)
    mask = net.trainable(p)
    assert mask.a is False and mask.Ws == (True, True)
    assert (mask.bs is None) == (not bias)


def test_validation():
    with pytest.raises(ValueError, match="widths"):
        gflow.MLP(())
    with pytest.raises(ValueError, match="widths"):
        gflow.MLP((3, 0))
    with pytest.raises(ValueError, match="widths"):
        gflow.MLP((3, True))
    with pytest.raises(ValueError, match="scaling"):
        gflow.MLP((3,), scaling="nope")
    with pytest.raises(ValueError, match="mean_field"):
        gflow.MLP((3, 3), scaling="mean_field")
    with pytest.raises(ValueError, match="activation"):
        gflow.MLP((3,), activation="nope")
    assert gflow.MLP(5).widths == (5,)
    net = gflow.MLP((3, 2), bias=True)
    p = gflow.init.gaussian(jax.random.key(0), net, 4)
    net.check_params(p, d=4)
    with pytest.raises(ValueError, match="d=4"):
        net.check_params(p, d=5)
    with pytest.raises(ValueError, match="bias"):
        gflow.MLP((3, 2), bias=False).check_params(p)
    with pytest.raises(ValueError, match="Ws"):
        gflow.MLP((3, 2, 2), bias=True).check_params(p)
    with pytest.raises(ValueError, match=r"Ws\[1\]"):
        gflow.MLP((3, 4), bias=True).check_params(p)
    with pytest.raises(ValueError, match="MLPParams"):
        net.check_params(gflow.init.gaussian(jax.random.key(0), gflow.TwoLayer(3), 4))
    with pytest.raises(ValueError, match="std"):
        gflow.init.gaussian(jax.random.key(0), net, 4, std=(1.0,))
    with pytest.raises(ValueError, match="net must be"):
        gflow.init.gaussian(jax.random.key(0), "net", 4)


def test_widths_written_with_input_and_output_warn():
    """``[d, ..., 1]`` (the PyTorch/Flax habit) builds a last hidden layer of width 1: warned,
    with the intended call; hidden widths alone (and a lone width 1) pass silently."""
    with pytest.warns(UserWarning, match=r"4 hidden layers.*write MLP\(\[32, 32\]\)"):
        net = gflow.MLP([5, 32, 32, 1])
    assert net.widths == (5, 32, 32, 1)  # built as asked, not second-guessed
    with pytest.warns(UserWarning, match=r"write MLP\(\[32\]\)"):
        gflow.MLP([32, 1])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gflow.MLP([32, 32])
        gflow.MLP([1])
        gflow.MLP([1, 4])

"""Closed-form NNGP and NTK of deep MLPs (gflow.mlp_kernels): the two-layer ReLU kernels of
gflow.ntk exactly, and the mean empirical kernels of wide nets over inits (Monte Carlo, every
activation, with and without bias)."""

import jax
import numpy as np
import pytest
from jax.scipy.special import erf

import gflow
from gflow.mlp_kernels import KERNEL_ACTIVATIONS, mlp_kernels
from gflow.ntk import gram, relu_ntk


def test_one_hidden_layer_is_the_two_layer_relu_kernel(x64):
    X = gflow.data.teacher(jax.random.key(0), 6, 3).X
    X = X.at[5].set(3 * X[4])  # a duplicate direction (stable angle in layer 1)
    k = mlp_kernels(X, depth=1)
    np.testing.assert_allclose(k["ntk"], relu_ntk(X, layers="both"), rtol=0, atol=1e-14)
    np.testing.assert_allclose(k["first_layer"], relu_ntk(X), rtol=0, atol=1e-14)
    np.testing.assert_allclose(k["outer"], relu_ntk(X, layers="outer"), rtol=0, atol=1e-14)
    np.testing.assert_allclose(k["nngp"], k["outer"])
    assert float(k["ntk"][4, 5]) == pytest.approx(3 * float(k["ntk"][4, 4]), rel=1e-14)
    # linear units: Sigma_L = x.x' (no bias, std 1) and every derivative factor 1
    lin = mlp_kernels(X, depth=3, activation="linear", train_outer=False)
    np.testing.assert_allclose(lin["layers"], np.broadcast_to(X @ X.T, (3, 6, 6)), atol=1e-14)
    np.testing.assert_allclose(lin["nngp"], X @ X.T, atol=1e-14)


def _layer_terms(net, p, X):
    """The empirical NTK split by parameter group: ``[W_1, b_1], ..., [W_L, b_L]`` and
    ``a``, each ``J_g J_g^T`` over the group's leaves."""
    jac = jax.jacrev(lambda q: net.apply(q, X))(p)
    gram_of = lambda leaves: sum(  # noqa: E731
        np.asarray(j.reshape(j.shape[0], -1) @ j.reshape(j.shape[0], -1).T) for j in leaves)
    layers = [gram_of([jac.Ws[i], jac.bs[i]]) for i in range(len(jac.Ws))]
    return np.stack(layers), gram_of([jac.a])


# relu and erf by default: leaky_relu, abs and linear are the same code path as relu (its
# slope-alpha family, alpha = 0.01, -1, 1), run with -m slow
@pytest.mark.parametrize("activation", [
    a if a in ("relu", "erf") else pytest.param(a, marks=pytest.mark.slow)
    for a in KERNEL_ACTIVATIONS])
def test_mean_empirical_kernels_of_wide_nets(x64, activation):
    """Two hidden layers of width 256 with biases, std (1.2, 1.3), bias_std 0.5, outer_std
    0.8: over 8 inits, the mean empirical NTK term of every parameter group (W_l with b_l,
    and a) and the mean last-layer NNGP estimate ``s_a^2 h_L h_L'^T / m`` lie within 5
    standard errors of the closed forms at every entry (the finite-width bias, O(1/m), is
    below a standard error)."""
    m, seeds, d = 256, 8, 3
    X = gflow.data.teacher(jax.random.key(1), 4, d).X
    act = erf if activation == "erf" else activation
    net = gflow.MLP((m, m), act, "ntk", bias=True)
    kw = dict(std=(1.2, 1.3), bias_std=0.5, outer_std=0.8)
    k = mlp_kernels(X, depth=2, activation=activation, bias=True, **kw)
    layers, outer, nngp = [], [], []
    for s in range(seeds):
        p = gflow.init.gaussian(jax.random.key(10 + s), net, d, outer="gaussian", **kw)
        terms, a_term = _layer_terms(net, p, X)
        layers.append(terms)
        outer.append(a_term)
        h = np.asarray(net.layers(p, X)[-1][1])
        nngp.append(0.8 ** 2 * h @ h.T / m)
    for emp, ref in ((layers, k["layers"]), (outer, k["outer"]), (nngp, k["nngp"])):
        emp = np.asarray(emp)
        se = emp.std(0, ddof=1) / np.sqrt(seeds)
        assert np.all(np.abs(emp.mean(0) - np.asarray(ref)) <= 5 * se + 1e-12), (emp.mean(0), ref)
    np.testing.assert_allclose(k["ntk"], k["layers"].sum(0) + k["outer"], rtol=1e-14)
    # the split by groups adds up to the empirical NTK of all parameters
    np.testing.assert_allclose(layers[-1].sum(0) + outer[-1], gram(net, p, X), rtol=1e-12)


def test_bad_input():
    X = np.ones((3, 2))
    with pytest.raises(ValueError, match="closed-form"):
        mlp_kernels(X, depth=2, activation="tanh")
    with pytest.raises(ValueError, match="depth"):
        mlp_kernels(X, depth=0)
    with pytest.raises(ValueError, match="std"):
        mlp_kernels(X, depth=2, std=(1.0,))
    with pytest.raises(ValueError, match="shapes"):
        mlp_kernels(X, np.ones((3, 4)), depth=1)

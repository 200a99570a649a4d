"""Closed-form NNGP and NTK of deep MLPs (gflow.mlp_kernels): the two-layer ReLU kernels of
gflow.ntk exactly, the published recursions in neural-tangents' parameterization (transcribed
below, independent of gflow's code), float32 against float64, and the mean empirical kernels
of wide nets over inits (Monte Carlo, every activation, with and without bias)."""

import jax
import numpy as np
import pytest
from jax import numpy as jnp
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


# -- the published formulas, transcribed ------------------------------------------------------
# Gaussian expectations for (u, v) ~ N(0, [[q1, c], [c, q2]]), theta = arccos(c / sqrt(q1 q2)):
# * the arc-cosine kernels of Cho & Saul ("Kernel methods for deep learning", NeurIPS 2009):
#   k_n = (1/pi) |x|^n |y|^n J_n(theta) with J_0 = pi - theta, J_1 = sin theta + (pi - theta)
#   cos theta, and k_n = 2 E[step(u) step(v) u^n v^n], so E[relu(u) relu(v)] = k_1 / 2 and
#   E[step(u) step(v)] = k_0 / 2;
# * phi(x) = b x (x > 0), a x (x < 0) (relu: a = 0; leaky relu: a = 0.01; abs: a = -1; linear:
#   a = 1, as neural-tangents' ABRelu) = b relu(x) - a relu(-x); (u, -v) is at the angle
#   pi - theta, so E[phi phi] = (a^2 + b^2) k_1(theta)/2 - 2ab k_1(pi - theta)/2 and
#   E[phi' phi'] = ((a^2 + b^2)(pi - theta) + 2ab theta) / (2 pi); this is not how
#   gflow.mlp_kernels writes them ((1 - alpha)^2 J + alpha c);
# * erf (Williams, "Computing with infinite networks", NeurIPS 1997): E[erf(u) erf(v)] =
#   (2/pi) arcsin(2c / sqrt((1 + 2 q1)(1 + 2 q2))), and from erf' = (2/sqrt(pi)) exp(-x^2),
#   E[erf'(u) erf'(v)] = (4/pi) det(I + 2 Sigma)^(-1/2).
# The recursion in the NTK parameterization (Jacot, Gabriel & Hongler, NeurIPS 2018, Theorem 1,
# with weight scale sigma_w as in Lee et al., "Wide neural networks of any depth evolve as linear
# models under gradient descent", NeurIPS 2019, and neural-tangents' stax.Dense):
#   K^1 = sigma_w1^2 x.x'/d + sigma_b1^2,  Theta^1 = K^1,
#   K^(l+1) = sigma_w^2 T(K^l) + sigma_b^2,  Theta^(l+1) = K^(l+1) + sigma_w^2 Tdot(K^l) Theta^l,
# with the readout as a last layer without bias (sigma_a).
_SLOPES = {"relu": (0.0, 1.0), "leaky_relu": (0.01, 1.0), "abs": (-1.0, 1.0),
           "linear": (1.0, 1.0)}


def _published_expectations(act, q1, q2, c):
    if act == "erf":
        det = (1 + 2 * q1) * (1 + 2 * q2)
        return 2 / np.pi * np.arcsin(2 * c / np.sqrt(det)), 4 / np.pi / np.sqrt(det - 4 * c * c)
    a, b = _SLOPES[act]
    norm = np.sqrt(q1 * q2)
    th = np.arccos(np.clip(c / norm, -1, 1))
    k1 = lambda t: norm * (np.sin(t) + (np.pi - t) * np.cos(t)) / np.pi  # noqa: E731
    return ((a * a + b * b) * k1(th) / 2 - a * b * k1(np.pi - th),
            ((a * a + b * b) * (np.pi - th) + 2 * a * b * th) / (2 * np.pi))


def _published_kernels(X, act, sigma_w, sigma_b, sigma_a):
    """(NNGP, NTK) of the recursion above, float64 numpy, one hidden layer per sigma_w."""
    K = sigma_w[0] ** 2 * X @ X.T / X.shape[1] + sigma_b[0] ** 2
    theta = K.copy()
    for layer in range(1, len(sigma_w) + 1):
        q = np.diag(K)
        T, Td = _published_expectations(act, q[:, None], q[None, :], K)
        if layer == len(sigma_w):
            return sigma_a ** 2 * T, sigma_a ** 2 * (T + Td * theta)
        K = sigma_w[layer] ** 2 * T + sigma_b[layer] ** 2
        theta = K + sigma_w[layer] ** 2 * Td * theta


@pytest.mark.parametrize("bias", [False, True])
def test_published_recursions(x64, bias):
    """gflow's W_l (entries N(0, s_l^2)) is neural-tangents' sigma_w omega_l with omega_l
    standard normal and sigma_w = s_l (layer 1: s_1 sqrt(d), for its 1/sqrt(d)); the biases
    at gflow's default bias_std = std are sigma_b b with sigma_b = s_l, and a = sigma_a omega.
    A parameter scaled by s has gradient s times gflow's, so neural-tangents' NTK is
    sum_l s_l^2 layers[l] + s_a^2 outer, and its NNGP is gflow's. Three hidden layers, every
    activation, generic inputs: equal to 1e-13 of the kernel's scale (a few dozen float64
    operations per entry through arccos, whose condition 1/sin(theta) is below 10 here;
    measured 2e-15)."""
    X = np.asarray(gflow.data.teacher(jax.random.key(3), 6, 3).X) * np.array([1.0, 0.7, 1.3])
    s, sa, d = (1.2, 0.9, 1.1), 0.8, 3
    for act in KERNEL_ACTIVATIONS:
        k = mlp_kernels(X, depth=3, activation=act, bias=bias, std=s, outer_std=sa)
        nngp, ntk = _published_kernels(X, act, (s[0] * np.sqrt(d),) + s[1:],
                                       s if bias else (0.0,) * 3, sa)
        mine = sum(si ** 2 * np.asarray(t) for si, t in zip(s, k["layers"], strict=True))
        mine = mine + sa ** 2 * np.asarray(k["outer"])
        for got, ref in ((mine, ntk), (np.asarray(k["nngp"]), nngp)):
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-13 * np.abs(ref).max(),
                                       err_msg=act)


def test_float32_against_float64():
    """Three hidden layers with bias, every activation: float32 within 64 eps32 (8e-6) of the
    float64 kernels relative to their scale on generic inputs (measured <= 7.5e-7, 6 eps32),
    and on the diagonal also where a row is a scaled copy of another (the diagonal's angle is
    0 by construction in every layer)."""
    X = np.asarray(gflow.data.teacher(jax.random.key(3), 6, 3).X, np.float64)
    X[5] = 2.5 * X[4]
    kw = dict(depth=3, bias=True, std=(1.2, 0.9, 1.1), outer_std=0.8)
    generic = np.arange(5)
    for act in KERNEL_ACTIVATIONS:
        k32 = mlp_kernels(jnp.asarray(X, jnp.float32), activation=act, **kw)
        with jax.enable_x64(True):
            k64 = mlp_kernels(jnp.asarray(X), activation=act, **kw)
        for name in ("ntk", "nngp"):
            assert k32[name].dtype == jnp.float32
            ref = np.asarray(k64[name])
            err = np.abs(np.asarray(k32[name], np.float64) - ref) / np.abs(ref).max()
            tol = 64 * np.finfo(np.float32).eps
            assert err[np.ix_(generic, generic)].max() <= tol, (act, name, err)
            assert np.diag(err).max() <= tol, (act, name, np.diag(err))


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

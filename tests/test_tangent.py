"""The memory-light empirical NTK (gflow.tangent) against the Jacobian Gram (gflow.ntk.gram).

Every path computes the same sums of products in another order, so they agree to rounding:
float64 to 1e-12 of the Gram's largest entry, float32 to 1e-5 of it (about 100 ulps over
sums of ~10^3 terms). Memory is checked on the compiled programs (XLA's memory analysis), not
by timing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow import ntk, tangent

NETS = {
    "relu_bias": lambda: gflow.TwoLayer(24, "relu", bias=True),
    "tanh_fixed_outer": lambda: gflow.TwoLayer(16, "tanh", "mean_field", train_outer=False),
    "mlp": lambda: gflow.MLP((12, 8), "tanh", bias=True),
}


def _setup(name, d=4):
    net = NETS[name]()
    p = gflow.init.gaussian(jax.random.key(0), net, d)
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    X, X2 = jax.random.normal(k1, (10, d)), jax.random.normal(k2, (7, d))
    return net, p, X, X2, jax.random.normal(k3, (7,))


CASES = [("relu_bias", "float64"), ("relu_bias", "float32"), ("mlp", "float64"),
         ("tanh_fixed_outer", "float64"),
         pytest.param("mlp", "float32", marks=pytest.mark.slow),  # float32: relu_bias above
         pytest.param("tanh_fixed_outer", "float32", marks=pytest.mark.slow)]


@pytest.mark.parametrize(("name", "dtype"), CASES)
def test_products_and_grams_equal_the_jacobian_gram(name, dtype):
    with jax.enable_x64(dtype == "float64"):
        _check(name, 1e-12 if dtype == "float64" else 1e-5)


def _check(name, tol):
    net, p, X, X2, v = _setup(name)
    K = ntk.gram(net, p, X, X2)
    scale = float(jnp.abs(K).max())
    for chunk in (None, 3):  # one chunk and three (the last one padded)
        np.testing.assert_allclose(tangent.ntk_vp(net, p, X, v, X2, chunk=chunk), K @ v,
                                   rtol=0, atol=tol * scale * float(jnp.abs(v).sum()))
    np.testing.assert_allclose(tangent.blocked_gram(net, p, X, X2, chunk=4), K, rtol=0,
                               atol=tol * scale)
    np.testing.assert_allclose(tangent.ntk_vp(net, p, X, v[:1].repeat(10)),
                               ntk.gram(net, p, X) @ v[:1].repeat(10), rtol=0,
                               atol=tol * scale * 10 * float(jnp.abs(v[0])))
    if isinstance(net, gflow.TwoLayer):
        np.testing.assert_allclose(tangent.two_layer_gram(net, p, X, X2), K, rtol=0,
                                   atol=tol * scale)
        np.testing.assert_allclose(tangent.two_layer_gram(net, p, X), ntk.gram(net, p, X),
                                   rtol=0, atol=tol * scale)


def test_memory_of_the_compiled_programs():
    # n = 512 samples, width 512, d = 32: the Jacobian alone is n x P x 4 bytes = 35 MB
    n, m, d = 512, 512, 32
    net = gflow.TwoLayer(m, "tanh", bias=True)
    p = gflow.init.gaussian(jax.random.key(0), net, d)
    X, v = jnp.ones((n, d)), jnp.ones(n)
    jac_bytes = n * m * (d + 2) * 4

    def temp(f):
        return jax.jit(f).lower(p, X).compile().memory_analysis().temp_size_in_bytes

    assert temp(lambda p, X: ntk.gram(net, p, X) @ v) >= jac_bytes
    assert temp(lambda p, X: tangent.ntk_vp(net, p, X, v, chunk=32)) < jac_bytes / 20
    assert temp(lambda p, X: tangent.two_layer_gram(net, p, X) @ v) < jac_bytes / 4


def test_bad_input():
    net, p, X, X2, v = _setup("relu_bias")
    with pytest.raises(ValueError, match="chunk"):
        tangent.ntk_vp(net, p, X, v, X2, chunk=0)
    with pytest.raises(ValueError, match=r"v must have shape \(7,\)"):
        tangent.ntk_vp(net, p, X, v[:3], X2)
    with pytest.raises(ValueError, match=r"X must have shape \(n, d\)"):
        tangent.blocked_gram(net, p, X[0])
    with pytest.raises(ValueError, match="gflow.TwoLayer"):
        tangent.two_layer_gram(gflow.MLP((4,)), gflow.init.gaussian(
            jax.random.key(0), gflow.MLP((4,)), 4), X)

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow.nets import get_activation


@pytest.mark.parametrize(
    "name, p",
    [("tanh", 1), ("sigmoid", 1), ("softplus", 1), ("gelu", 1), ("linear", 1), ("xtanh", 2),
     ("x2tanh", 3), ("relu", None), ("abs", None), ("leaky_relu", None)],
)
def test_multiplicity(name, p):
    # order of the first non-zero derivative at 0 (Zhou et al. 2022); None where non-smooth
    assert get_activation(name).multiplicity == p


def test_multiplicity_of_callable():
    assert gflow.multiplicity(lambda z: z**3 + z**4) == 3
    assert get_activation(lambda z: jnp.sin(z) ** 2).multiplicity == 2


@pytest.mark.parametrize("scaling, c", [("ntk", 1 / np.sqrt(8)), ("mean_field", 1 / 8),
                                        ("standard", 1.0)])
@pytest.mark.parametrize("bias", [False, True])
def test_two_layer_matches_formula(dtype, scaling, c, bias):
    net = gflow.TwoLayer(8, "tanh", scaling=scaling, bias=bias)
    p = gflow.init.gaussian(jax.random.key(0), net, 3)
    X = jax.random.normal(jax.random.key(1), (5, 3))
    b = np.zeros(8) if p.b is None else np.asarray(p.b)
    W, a, Xn = np.asarray(p.W), np.asarray(p.a), np.asarray(X)
    expected = c * np.array([sum(a[j] * np.tanh(W[j] @ x + b[j]) for j in range(8)) for x in Xn])
    out = net.apply(p, X)
    assert out.shape == (5,) and out.dtype == jnp.dtype(dtype)
    np.testing.assert_allclose(out, expected, rtol=1e-5 if dtype == "float32" else 1e-12)


@pytest.mark.parametrize("width", [0, -3, 2.5, True])
def test_bad_width(width):
    with pytest.raises(ValueError, match="width"):
        gflow.TwoLayer(width)


def test_unknown_names_list_valid_ones():
    with pytest.raises(ValueError, match="relu"):
        gflow.TwoLayer(4, "swishy")
    with pytest.raises(ValueError, match="mean_field"):
        gflow.TwoLayer(4, scaling="huge")


def test_check_params():
    net = gflow.TwoLayer(6)
    p = gflow.init.gaussian(jax.random.key(0), net, 3)
    net.check_params(p, d=3)
    with pytest.raises(ValueError, match="d=3"):
        net.check_params(p, d=4)
    with pytest.raises(ValueError, match="width=7"):
        gflow.TwoLayer(7).check_params(p)
    with pytest.raises(ValueError, match="bias"):
        gflow.TwoLayer(6, bias=True).check_params(p)


@pytest.mark.parametrize("act, bias, train_outer, loss", [
    ("relu", False, True, "squared"), ("relu", True, False, "squared"),
    ("tanh", True, True, "logistic")])
def test_two_layer_gradient_matches_autodiff(dtype, act, bias, train_outer, loss):
    # Objective.value_and_grad writes the first-layer GEMM of a TwoLayer net out by hand;
    # it must equal jax.value_and_grad of the loss (full batch and minibatch), up to
    # summation order: float32 ~1e-7 relative, float64 ~1e-16 (a few ulps allowed)
    import equinox as eqx

    from gflow.objective import Objective

    net = gflow.TwoLayer(24, act, bias=bias, train_outer=train_outer)
    data = gflow.data.teacher(jax.random.key(0), 50, 6, 3,
                              labels="sign" if loss == "logistic" else "regression")
    p = gflow.init.gaussian(jax.random.key(1), net, 6)
    obj = Objective(net, loss, data.X, data.y)
    tol = {"float32": 1e-5, "float64": 1e-12}[dtype]
    for idx in (None, jnp.arange(0, 50, 3)):
        got = eqx.filter_jit(lambda o, q, i: o.value_and_grad(q, i))(obj, p, idx)
        val, g = jax.value_and_grad(lambda q, i=idx: obj._losses(q, i))(p)
        want = (val, obj.mask_grad(p, g))
        for u, v in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            assert u.dtype == jnp.dtype(dtype)
            np.testing.assert_allclose(u, v, rtol=tol, atol=tol * float(jnp.max(jnp.abs(v))))
    if not train_outer:
        assert float(jnp.max(jnp.abs(got[1].a))) == 0.0

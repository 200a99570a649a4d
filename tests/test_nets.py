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
    ("abs", True, True, "squared"), ("leaky_relu", False, True, "logistic"),
    ("tanh", True, True, "logistic")])
def test_two_layer_gradient_matches_autodiff(dtype, act, bias, train_outer, loss):
    # Objective.value_and_grad writes the gradient of a TwoLayer net out by hand (for
    # homogeneous activations dL/da comes from the same GEMM as dL/dW); it must equal
    # jax.value_and_grad of the loss (full batch and minibatch), up to summation order:
    # float32 ~1e-7 relative, float64 ~1e-16 (a few ulps allowed)
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
        val, g = jax.value_and_grad(lambda q, i=idx: obj.losses(q, i))(p)
        want = (val, obj.mask_grad(p, g))
        _assert_trees_close(got, want, dtype, tol)
    if not train_outer:
        assert float(jnp.max(jnp.abs(got[1].a))) == 0.0  # masked gradient: exactly zero


def _assert_trees_close(got, want, dtype, tol):
    for u, v in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert u.dtype == jnp.dtype(dtype)
        np.testing.assert_allclose(u, v, rtol=tol, atol=tol * float(jnp.max(jnp.abs(v))))


@pytest.mark.parametrize("act, bias", [("relu", True), ("tanh", False)])
@pytest.mark.parametrize("masked", [False, True])
def test_member_gradient_matches_autodiff(dtype, act, bias, masked):
    # ensembles compute all members in one program (stacked parameters, shared or
    # per-member data and minibatches, width masks); each member's gradient must equal
    # jax.value_and_grad of that member's own loss (tolerances as above)
    from gflow.nets import MaskedTwoLayer
    from gflow.objective import Objective

    E, m, n, d = 3, 16, 40, 5
    net = gflow.TwoLayer(m, act, bias=bias)
    data = gflow.data.teacher(jax.random.key(0), n, d, 3)
    P = jax.vmap(lambda k: gflow.init.gaussian(k, net, d))(
        jax.random.split(jax.random.key(1), E))
    masks = (jnp.arange(m)[None, :] < jnp.array([16, 9, 4])[:, None]).astype(data.X.dtype)
    Xs = data.X[None] * jnp.array([1.0, 0.5, 2.0])[:, None, None]  # per-member data
    idx = jax.vmap(lambda k: jax.random.permutation(k, n)[:12])(
        jax.random.split(jax.random.key(2), E))
    tol = {"float32": 1e-5, "float64": 1e-12}[dtype]

    def member_net(mask):
        return MaskedTwoLayer(net, mask) if masked else net

    for X, i in ((data.X, None), (Xs, None), (data.X, idx), (Xs, idx)):
        x_ax, i_ax = (None if X.ndim == 2 else 0), (None if i is None else 0)
        got = jax.jit(jax.vmap(
            lambda mask, x, q, j: Objective(member_net(mask), "squared", x, data.y,
                                            members=True).value_and_grad(q, j),
            in_axes=(0, x_ax, 0, i_ax)))(masks, X, P, i)
        for e in range(E):
            obj = Objective(member_net(masks[e]), "squared", X if X.ndim == 2 else X[e],
                            data.y)
            q = jax.tree.map(lambda v, e=e: v[e], P)
            val, g = jax.value_and_grad(obj.losses)(q, None if i is None else i[e])
            _assert_trees_close(jax.tree.map(lambda v, e=e: v[e], got),
                                (val, obj.mask_grad(q, g)), dtype, tol)

"""Deep low-rank nets (gflow.lowrank_mlp): the same function as the MLP of the product
weights, layer-wise factorization, training (Vodrahalli et al., arXiv 2202.00834)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import RTOL

import gflow
from gflow import lowrank
from gflow.lowrank_mlp import LowRankMLP, LowRankMLPParams, factorize_mlp


@pytest.mark.parametrize("bias", [False, True])
def test_equals_mlp_with_product_weights(dtype, bias):
    widths, r, d = (7, 5), 2, 4
    f = jnp.result_type(float)
    ks = iter(jax.random.split(jax.random.key(0), 8))
    fan_in = (d,) + widths[:-1]
    p = LowRankMLPParams(
        Us=tuple(jax.random.normal(next(ks), (m, r), f) for m in widths),
        Vs=tuple(jax.random.normal(next(ks), (n, r), f) for n in fan_in),
        bs=tuple(jax.random.normal(next(ks), (m,), f) for m in widths) if bias else None,
        a=jax.random.normal(next(ks), (widths[-1],), f))
    X = jax.random.normal(next(ks), (9, d), f)
    net = LowRankMLP(widths, r, bias=bias)
    want = gflow.MLP(widths, bias=bias).apply(net.to_full(p), X)
    got = net.apply(p, X)
    assert got.shape == (9,) and got.dtype == f
    np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=RTOL[dtype])
    net.check_params(p, d=d)
    assert net.trainable(p).Us == (True, True) and net.prefactor == 1 / np.sqrt(5)


def test_factorize_and_validation(x64):
    net_full = gflow.MLP((6, 4))
    p = gflow.init.gaussian(jax.random.key(1), net_full, 4)
    X = jax.random.normal(jax.random.key(2), (11, 4))
    # full rank (4 = min of the shapes (6, 4), (4, 6)): the same function, both methods
    for method in ("spectral", "function"):
        q = factorize_mlp(p, 4, method)
        np.testing.assert_allclose(LowRankMLP((6, 4), 4).apply(q, X), net_full.apply(p, X),
                                   rtol=1e-8)
    # rank 2: each layer is the factorization of gflow.lowrank of that layer's weight
    q = factorize_mlp(p, 2, "function")
    for W, U, V in zip(p.Ws, q.Us, q.Vs, strict=True):
        U2, V2 = lowrank.function_space(W, 2)
        np.testing.assert_allclose(U @ V.T, U2 @ V2.T, rtol=1e-10)
    net = LowRankMLP((6, 4), 2)
    net.check_params(q, d=4)
    with pytest.raises(ValueError, match="d=4"):
        net.check_params(q, d=3)
    with pytest.raises(ValueError, match=r"Us\[0\]"):
        LowRankMLP((6, 4), 3).check_params(q)
    with pytest.raises(ValueError, match="method"):
        factorize_mlp(p, 2, "svd")
    with pytest.raises(ValueError, match="rank"):
        LowRankMLP((6, 4), 0)


def test_simulate_trains_it():
    data = gflow.data.teacher(jax.random.key(3), 40, 6, 2)
    p0 = factorize_mlp(gflow.init.gaussian(jax.random.key(4), gflow.MLP((8, 8)), 6), 2)
    tr = gflow.simulate(LowRankMLP((8, 8), 2), p0, data, dynamics=gflow.GD(lr=0.5), t1=10.0,
                        save=gflow.LinTimes(3))
    assert tr["loss"][-1] < 0.9 * tr["loss"][0]

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tree_allclose

import gflow
from gflow import population as P


@pytest.mark.parametrize("outer", ["sign", "gaussian"])
@pytest.mark.parametrize("bias", [False, True])
def test_paired_output_is_exactly_zero(dtype, outer, bias):
    # Munteanu et al. 2022: w_{2i}=w_{2i+1}, a_{2i}=-a_{2i+1} => f(x; theta_0) = 0 exactly
    net = gflow.TwoLayer(64, "relu", bias=bias)
    p = gflow.init.paired(jax.random.key(3), net, 5, outer=outer)
    np.testing.assert_array_equal(p.W[0::2], p.W[1::2])  # paired rows are copies: exact
    np.testing.assert_array_equal(p.a[0::2], -p.a[1::2])
    X = jax.random.normal(jax.random.key(4), (100, 5))
    # the terms t_j = c_m a_j sigma(w_j.x) cancel in pairs, so the exact sum is 0; in floating
    # point any summation order gives |fl(sum_j t_j)| <= (m - 1) eps sum_j |t_j| (Higham,
    # Accuracy and Stability, 4.2). It is 0.0 when the backend adds the pairs symmetrically,
    # which depends on how XLA vectorizes the reduction, so only the bound is asserted.
    terms = net.prefactor * jnp.abs(net.activation(net.preactivations(p, X)) * p.a)
    bound = (net.width - 1) * jnp.finfo(p.W.dtype).eps * jnp.sum(terms, axis=1)
    assert bool(jnp.all(jnp.abs(net.apply(p, X)) <= bound))
    assert float(jnp.max(bound)) < 1e-3 * float(jnp.max(jnp.sum(terms, axis=1)))


def test_paired_needs_even_width():
    with pytest.raises(ValueError, match="even width"):
        gflow.init.paired(jax.random.key(0), gflow.TwoLayer(5), 3)


def test_gaussian_statistics_and_determinism():
    net = gflow.TwoLayer(4000, bias=True)
    p = gflow.init.gaussian(jax.random.key(0), net, 10, std=2.0)
    # sample std of 40,000 N(0, 4) draws: standard error ~ 2/sqrt(2*40000) = 0.007
    assert abs(float(jnp.std(p.W)) - 2.0) < 0.03
    assert set(np.unique(np.asarray(p.a))) == {-1.0, 1.0}
    q = gflow.init.gaussian(jax.random.key(0), net, 10, std=2.0)
    assert tree_allclose(p, q, rtol=0)  # the same program and key twice: exact


@pytest.mark.parametrize("bias", [False, True])
def test_gaussian_is_jax_random_draws(dtype, bias):
    # the documented scheme, draw for draw: W = std N(0,1) (m, d), b = bias_std N(0,1),
    # a = outer_std Rademacher, from split(key, 3) (flat draws reshaped give the same values)
    key, m, d = jax.random.key(7), 10, 6
    p = gflow.init.gaussian(key, gflow.TwoLayer(m, bias=bias), d, std=0.3, bias_std=2.0,
                            outer_std=0.5)
    kw, kb, ka = jax.random.split(key, 3)
    # the init's one jitted program may fuse the scale into the sampler's last multiply (an
    # FMA on some CPUs) where the eager expression below rounds twice: same draws to a few
    # ulps (1.5 ulp measured with XLA's fast-math code generation); the signs are exact
    eps = float(jnp.finfo(dtype).eps)
    np.testing.assert_allclose(p.W, 0.3 * jax.random.normal(kw, (m, d), dtype), rtol=4 * eps)
    np.testing.assert_array_equal(p.a, 0.5 * jax.random.rademacher(ka, (m,), dtype))
    if bias:
        np.testing.assert_allclose(p.b, 2.0 * jax.random.normal(kb, (m,), dtype), rtol=4 * eps)
    assert p.W.dtype == jnp.dtype(dtype)


def test_small_init_variance_convention():
    # gamma sets the variance m^-gamma: std = m^(-gamma/2)
    net = gflow.TwoLayer(100)
    p = gflow.init.small(jax.random.key(0), net, 50, gamma=3.0)
    assert abs(float(jnp.std(p.W)) / 100.0 ** -1.5 - 1) < 0.05  # 5,000 draws: se ~ 1 %
    q = gflow.init.small(jax.random.key(0), net, 50, std=1e-3)
    assert abs(float(jnp.std(q.W)) / 1e-3 - 1) < 0.05
    with pytest.raises(ValueError, match="exactly one"):
        gflow.init.small(jax.random.key(0), net, 50)


def test_init_errors():
    net = gflow.TwoLayer(4)
    with pytest.raises(ValueError, match="input dimension"):
        gflow.init.gaussian(jax.random.key(0), net, 0)
    with pytest.raises(ValueError, match="outer"):
        gflow.init.gaussian(jax.random.key(0), net, 3, outer="uniform")


def test_vmap_over_keys_gives_stacked_params():
    net = gflow.TwoLayer(8)
    keys = jax.random.split(jax.random.key(0), 5)
    p = jax.vmap(lambda k: gflow.init.gaussian(k, net, 3))(keys)
    assert p.W.shape == (5, 8, 3) and p.a.shape == (5, 8)


def test_norm_only_init():
    net, q = gflow.init.norm_only(jax.random.key(0), 64, 3)
    assert net.U.shape == (64, 3) and q.r.shape == (64,)
    assert bool(jnp.all(q.r > 1.0)) and bool(jnp.all(jnp.abs(q.a) == 1.0))
    np.testing.assert_allclose(jnp.linalg.norm(net.U, axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="width"):
        gflow.init.norm_only(jax.random.key(0), 0, 3)


@pytest.mark.parametrize("act", ["abs"])  # the same code for relu, up to the sign symmetry
def test_near_teacher_init(x64, act):
    data = gflow.data.gaussian_teacher(jax.random.key(6), 8, 6, 3, activation=act)
    tnet, tp = data.meta["teacher"]
    np.testing.assert_allclose(np.asarray(tp.W @ tp.W.T), np.eye(3), atol=1e-12)
    np.testing.assert_allclose(np.asarray(data.y), np.asarray(tnet.apply(tp, data.X)))
    assert data.meta["separation_deg"] == pytest.approx(90.0)
    for m in (7,):  # 3 teachers: duplicates of sizes 3, 2, 2
        net = gflow.TwoLayer(m, act, "ntk", bias=False)
        exact = gflow.init.near_teacher(jax.random.key(7), net, tnet, tp, angle_deg=0.0,
                                        weight_noise=0.0)
        assert abs(float(P.loss(net, exact, tnet, tp))) < 1e-12
        np.testing.assert_allclose(np.asarray(P.cluster_weights(net, exact, tp)), 1.0, rtol=1e-12)
        np.testing.assert_allclose(np.asarray(exact.a**2), np.sum(np.asarray(exact.W) ** 2, 1))
        near = gflow.init.near_teacher(jax.random.key(7), net, tnet, tp, angle_deg=10.0)
        _, ang = P.nearest_teacher(near.W, tp.W, symmetric=act == "abs")
        np.testing.assert_allclose(np.degrees(np.asarray(ang)), 10.0, rtol=1e-9)


@pytest.mark.slow  # ~5 s: compiles the vmapped SVDs
def test_gaussian_init_is_vmappable():
    net = gflow.LowRankTwoLayer(12, 2)
    keys = jax.random.split(jax.random.key(0), 3)
    stacked = jax.vmap(lambda k: gflow.init.low_rank(k, net, 5))(keys)
    one = gflow.init.low_rank(keys[1], net, 5)
    net.check_params(one, d=5)
    np.testing.assert_allclose(stacked.U[1] @ stacked.V[1].T, one.U @ one.V.T, atol=1e-5)
    with pytest.raises(ValueError, match="LowRankTwoLayer"):
        gflow.init.low_rank(keys[0], gflow.TwoLayer(12), 5)

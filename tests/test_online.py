"""Tests of gflow.online: the online-SGD step's gradient is an unbiased estimate of the exact
population gradient, and online SGD tends to population GD as the batch grows."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow import distributions as D
from gflow import online, stats


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


@pytest.mark.parametrize("case", ["parity", "gaussian_teacher"])
def test_mean_of_fresh_batch_gradient_is_the_population_gradient(x64, case):
    if case == "parity":  # exact by enumeration of the 2^8 hypercube points
        dist, loss = D.SparseParity(8, 2), "logistic"
        net = gflow.TwoLayer(12, "relu", bias=True)
    else:  # exact by the arc-cosine kernel (gflow.population.loss)
        dist = D.GaussianTeacher.random(jax.random.key(0), 6, 2, noise=0.1)
        net, loss = gflow.TwoLayer(10, "relu", bias=False), "squared"
    params = gflow.init.gaussian(jax.random.key(1), net, dist.d)
    R, b = 4000, 4
    keys = jax.random.split(jax.random.key(2), R)
    grads = jax.jit(jax.vmap(lambda k: online.online_gradient(net, params, dist, k, b,
                                                              loss)[1]))(keys)
    G = np.concatenate([np.asarray(g, np.float64).reshape(R, -1) for g in jax.tree.leaves(grads)],
                       axis=1)
    _, exact = online.population_gradient(net, params, dist, loss)
    exact = _flat(exact)
    # CLT per coordinate: |mean - exact| <= 5 standard errors; with ~100 coordinates the chance
    # that any exceeds 5 (two-sided 5.7e-7 each) is below 1e-4 if the mean is right
    se = G.std(axis=0) / math.sqrt(R)
    assert np.all(np.abs(G.mean(axis=0) - exact) <= 5 * se + 1e-12)
    # and the estimate is not trivially unbiased: the batch gradient does fluctuate
    assert np.median(G.std(axis=0)) > 1e-3 * np.median(np.abs(exact))


def test_online_sgd_tends_to_population_gd_as_batch_grows(x64):
    dist = D.GaussianTeacher.random(jax.random.key(0), 5, 2)
    net = gflow.TwoLayer(8, "relu", bias=False)
    p0 = gflow.init.gaussian(jax.random.key(1), net, 5)
    lr, steps = 0.2, 25

    def gd_step(p, _):
        val, g = online.population_gradient(net, p, dist)
        return jax.tree.map(lambda a, gi: a - lr * gi, p, g), val

    p_gd, losses_gd = jax.lax.scan(gd_step, p0, None, length=steps)
    assert losses_gd[-1] < losses_gd[0]  # population GD descends
    batches = [16, 256, 4096]
    keys = jax.random.split(jax.random.key(3), 8)
    rms = []
    for b in batches:
        finals = jax.vmap(lambda k, b=b: online.online_sgd(net, p0, dist, k, lr=lr, batch_size=b,
                                                            steps=steps)[0])(keys)
        dev = jax.tree.map(lambda f, g: jnp.sum((f - g) ** 2, axis=tuple(range(1, f.ndim))),
                           finals, p_gd)
        rms.append(math.sqrt(float(np.mean(sum(jax.tree.leaves(dev))))))
    # the deviation from population GD is the accumulated gradient noise, O(1/sqrt(b))
    law = stats.loglog_fit(batches, rms)
    assert -0.65 < law.exponent < -0.35, (law.exponent, rms)
    assert rms[-1] < 0.05 * np.sqrt(np.sum(_flat(p_gd) ** 2))


def test_online_sgd_step_convention_and_masking():
    dist = D.SparseParity(6, 2)
    net = gflow.TwoLayer(4, "relu", bias=False, train_outer=False)
    p0 = gflow.init.gaussian(jax.random.key(0), net, 6)
    key = jax.random.key(5)
    p1, val = online.online_sgd_step(net, p0, dist, key, 3, lr=0.1, batch_size=8)
    X, y = dist.sample(jax.random.fold_in(key, 3), 8)
    ref = gflow.Objective(net, "squared", X, y)
    g = ref.grad(p0)
    np.testing.assert_allclose(p1.W, p0.W - 0.1 * g.W, rtol=1e-6)
    np.testing.assert_array_equal(p1.a, p0.a)  # fixed outer layer: exactly unchanged
    assert float(val) == pytest.approx(float(ref.loss(p0)), rel=1e-6)
    _, gp = online.population_gradient(net, p0, dist)
    assert np.all(np.asarray(gp.a) == 0)
    ps, losses = online.online_sgd(net, p0, dist, key, lr=0.1, batch_size=8, steps=4)
    assert losses.shape == (4,) and float(losses[3]) > 0
    # the scan's step 0 is online_sgd_step at k = 0
    q, _ = online.online_sgd_step(net, p0, dist, key, 0, lr=0.1, batch_size=8)
    q1, _ = online.online_sgd(net, p0, dist, key, lr=0.1, batch_size=8, steps=1)
    np.testing.assert_allclose(q1.W, q.W, rtol=1e-6)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda n, p, dist: online.online_gradient(n, p, "parity", jax.random.key(0), 4),
         "distribution"),
        (lambda n, p, dist: online.online_gradient(n, p, dist, jax.random.key(0), 0),
         "batch_size"),
        (lambda n, p, dist: online.online_sgd(n, p, dist, jax.random.key(0), lr=-1.0,
                                              batch_size=2, steps=2), "lr"),
        (lambda n, p, dist: online.online_sgd(n, p, dist, jax.random.key(0), lr=0.1,
                                              batch_size=2, steps=0), "steps"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    dist = D.SparseParity(4, 2)
    net = gflow.TwoLayer(4)
    p = gflow.init.gaussian(jax.random.key(0), net, 4)
    with pytest.raises(ValueError, match=match):
        call(net, p, dist)


def test_population_gradient_matches_finite_differences(x64):
    """The exact gradient by enumeration against central differences of the exact loss."""
    dist = D.SparseParity(5, 2)
    net = gflow.TwoLayer(3, "tanh", bias=True)
    p = gflow.init.gaussian(jax.random.key(4), net, 5)
    _, g = online.population_gradient(net, p, dist, "logistic")
    h = 1e-6  # central differences: error O(h^2) ~ 1e-12, rounding ~ 1e-16 / h = 1e-10

    def at(s):
        return dist.population_loss(net, eqx.tree_at(lambda q: q.W, p, p.W.at[1, 2].add(s)),
                                    "logistic")

    assert float(g.W[1, 2]) == pytest.approx(float((at(h) - at(-h)) / (2 * h)), rel=1e-6)

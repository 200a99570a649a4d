"""gflow.OnlineSGD -- online SGD (a fresh batch every step) as a dynamics through the protocol --
against a hand loop of gflow.online.online_sgd_step, the exact population gradient (Monte
Carlo), population GD (batch -> infinity), in segments and ensembles; the exact population
observables against Monte Carlo on a held-out sample."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tree_max_abs_diff

import gflow
from gflow import checkpoint, online, stats
from gflow import distributions as D

LR, B, K = 0.1, 4, 20


def _parity(d=6, m=8, key=1):
    dist = D.SparseParity(d, 2)
    net = gflow.TwoLayer(m, "relu", bias=True)
    return dist, net, gflow.init.gaussian(jax.random.key(key), net, d)


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def _members(tree, M):
    """(M, P): each member's parameters flattened as _flat does."""
    return np.concatenate([np.asarray(x, np.float64).reshape(M, -1) for x in jax.tree.leaves(tree)],
                          axis=1)


def test_online_sgd_is_the_hand_loop_of_online_sgd_step(dtype):
    dist, net, p0 = _parity()
    key = jax.random.key(3)
    tr = gflow.simulate(net, p0, dist, loss="logistic", t1=K * LR, save=gflow.LinTimes(5),
                        dynamics=gflow.OnlineSGD(LR, B, dist, key),
                        observe=("loss", "population_loss", "population_error"))
    assert tr.stats["num_steps"] == K and tr.times[-1] == pytest.approx(K * LR)  # t = k lr
    assert tr.status == "completed" and tr.params_final.W.dtype == np.dtype(dtype)
    step = jax.jit(lambda p, k: online.online_sgd_step(net, p, dist, key, k, lr=LR,
                                                       batch_size=B, loss="logistic")[0])
    p, iterates = p0, [p0]
    for k in range(K):
        p = step(p, k)
        iterates.append(p)
    # Not the same compiled program (the dynamics' while loop vs one jitted step per call),
    # but the same operations on the same batches (both draw with step_key(key, k)): the two
    # agree to rounding -- a few ulps of the parameters' scale per step, here at most K steps
    # of 8 ulps of |theta| <= 4 (measured: bitwise equal on XLA:CPU in both dtypes).
    eps = float(jnp.finfo(dtype).eps)
    assert tree_max_abs_diff(tr.params_final, p) <= K * 8 * eps * 4
    # the saves are the exact population loss of the iterates at the saved steps
    saved = [iterates[round(t / LR)] for t in tr.times]
    exact = [float(dist.population_loss(net, q, "logistic")) for q in saved]
    np.testing.assert_allclose(tr["loss"], exact, rtol=50 * eps)
    np.testing.assert_allclose(tr["population_loss"], tr["loss"], rtol=0)  # same function
    errs = [float(dist.population_error(net, q)) for q in saved]
    # OnlineSGD.batches lists the batches the steps train on
    Xb, yb = gflow.OnlineSGD(LR, B, dist, key).batches(K)
    assert Xb.shape == (K, B, 6) and yb.shape == (K, B)
    X3, y3 = dist.sample(online.step_key(key, 3), B)
    np.testing.assert_array_equal(Xb[3], X3)  # the same draws (vmap of the same sampler)
    np.testing.assert_array_equal(yb[3], y3)
    np.testing.assert_allclose(tr["population_error"], errs, atol=0.5 * 2.0**-6)  # k / 2^6
    # the batches do move the net: the loss changed
    assert abs(tr["loss"][-1] - tr["loss"][0]) > 1e-3


def test_data_is_never_trained_on_and_enumeration_agrees_with_monte_carlo(x64):
    """The same run evaluated on the exact population (enumeration of the 2^8 hypercube)
    and on a large held-out sample: identical iterates; the two losses agree within the
    Monte Carlo error of the sample."""
    dist, net, p0 = _parity(d=8, m=16)
    dyn = gflow.OnlineSGD(LR, B, dist, jax.random.key(7))
    kw = dict(loss="logistic", dynamics=dyn, t1=K * LR, save=gflow.LinTimes(3))
    exact = gflow.simulate(net, p0, dist, observe=("loss", "population_error"), **kw)
    N = 50_000
    Xh, yh = dist.sample(jax.random.key(99), N)  # independent of the run (an unbiased estimate)
    mc = gflow.simulate(net, p0, gflow.Dataset(Xh, yh), observe=("loss", "accuracy"), **kw)
    # training draws only from the dynamics' distribution and key, never from data=:
    # the same program on the same batches, so the same iterates, bitwise
    for a, b in zip(jax.tree.leaves(exact.params_final), jax.tree.leaves(mc.params_final),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    f = np.asarray(net.apply(mc.params_final, Xh), np.float64)
    y = np.asarray(yh, np.float64)
    # CLT: the held-out mean is within 4 standard errors of the exact expectation (two-sided
    # 6e-5 if the enumeration is right; the keys are fixed, so the test is deterministic)
    for values, ex, est in ((np.logaddexp(0, -y * f), exact["loss"][-1], mc["loss"][-1]),
                            ((y * f <= 0).astype(float), exact["population_error"][-1],
                             1 - mc["accuracy"][-1])):
        se = values.std() / math.sqrt(N)
        assert abs(est - values.mean()) <= 1e-12  # the observable is that sample mean
        assert abs(est - ex) <= 4 * se, (est, ex, se)
    # a held-out sample disjoint from every point the run trained on
    Xb = np.asarray(dyn.batches(K)[0]).reshape(-1, 8)
    Xd, _ = dist.heldout(jax.random.key(98), 500, Xb)
    trained = {tuple(np.sign(r)) for r in Xb}
    assert not trained & {tuple(np.sign(r)) for r in np.asarray(Xd)} and len(trained) > 40


def test_mean_of_the_dynamics_step_is_the_population_gradient(x64):
    """One step of OnlineSGD for R ensemble members, each with its own key: the steps'
    mean is -lr times the exact population gradient (closed form for a Gaussian teacher)."""
    dist = D.GaussianTeacher.random(jax.random.key(0), 4, 2, noise=0.1)  # teacher W: (2, 4)
    net = gflow.TwoLayer(5, "relu", bias=False)
    p = gflow.init.gaussian(jax.random.key(1), net, 4)
    R, lr = 1500, 0.5
    P = jax.tree.map(lambda x: jnp.broadcast_to(x, (R, *x.shape)), p)
    keys = jax.random.split(jax.random.key(2), R)
    held = gflow.Dataset(*dist.sample(jax.random.key(5), 64))
    tr = gflow.simulate_ensemble(net, P, held, dynamics=gflow.OnlineSGD(lr, 2, dist, keys),
                                 t1=lr, save=np.array([lr]))
    G = (_flat(p)[None] - _members(tr.params_final, R)) / lr
    _, exact = online.population_gradient(net, p, dist)
    # CLT per coordinate: |mean - exact| <= 5 standard errors (two-sided 5.7e-7 each; 30
    # coordinates: a false failure below 2e-5)
    se = G.std(axis=0) / math.sqrt(R)
    assert np.all(np.abs(G.mean(axis=0) - _flat(exact)) <= 5 * se + 1e-12)
    assert np.median(G.std(axis=0)) > 1e-2 * np.median(np.abs(_flat(exact)))  # it is noisy
    assert len({tuple(np.round(g, 12)) for g in G[:50]}) == 50  # every member its own batch


def _population_gd(lr=0.2, steps=25):
    """GD on a Gaussian teacher's distribution itself (data=dist: the exact population
    gradient, closed form) and the same steps by hand from online.population_gradient."""
    dist = D.GaussianTeacher.random(jax.random.key(0), 5, 2)
    net = gflow.TwoLayer(8, "relu", bias=False)
    p0 = gflow.init.gaussian(jax.random.key(1), net, 5)
    kw = dict(t1=steps * lr, save=gflow.LinTimes(2))
    gd = gflow.simulate(net, p0, dist, dynamics=gflow.GD(lr), **kw)
    step = jax.jit(lambda p: jax.tree.map(lambda a, g: a - lr * g, p,
                                          online.population_gradient(net, p, dist)[1]))
    p = p0
    for _ in range(steps):
        p = step(p)
    return dist, net, p0, kw, gd, p


def test_gd_on_a_distribution_is_population_gd(x64):
    _, _, _, _, gd, p = _population_gd()
    # the same gradient, summed in the same order, in another program: to rounding
    assert tree_max_abs_diff(gd.params_final, p) <= 1e-12
    assert gd["loss"][-1] < 0.5 * gd["loss"][0]


@pytest.mark.slow
def test_large_batches_tend_to_population_gd(x64):
    """Population GD is the limit of OnlineSGD as the batch grows; the deviation (the
    accumulated gradient noise) shrinks like 1/sqrt(b). (test_online.py checks the same of
    the pure functions in the default suite.)"""
    dist, net, p0, kw, _, p = _population_gd()
    lr = 0.2
    # 6 members per batch size, each with its own key (evaluated on a small held-out sample;
    # only their final parameters are compared)
    held = gflow.Dataset(*dist.sample(jax.random.key(9), 16))
    P = jax.tree.map(lambda x: jnp.stack([x] * 6), p0)
    keys = jax.random.split(jax.random.key(10), 6)
    batches, rms = [16, 256, 4096], []
    for b in batches:
        ens = gflow.simulate_ensemble(net, P, held, dynamics=gflow.OnlineSGD(lr, b, dist, keys),
                                      **kw)
        dev = np.sum((_members(ens.params_final, 6) - _flat(p)[None]) ** 2, axis=1)
        rms.append(math.sqrt(np.mean(dev)))
    law = stats.loglog_fit(batches, rms)
    assert -0.65 < law.exponent < -0.35, (law.exponent, rms)
    assert rms[-1] < 0.05 * np.linalg.norm(_flat(p))


def test_segments_equal_one_run(tmp_path, dtype):
    dist, net, p0 = _parity()
    kw = dict(loss="logistic", dynamics=gflow.OnlineSGD(LR, B, dist, jax.random.key(3)),
              t1=K * LR, save=gflow.LinTimes(6), observe=("loss", "grad_norm"))
    one = gflow.simulate(net, p0, dist, **kw)
    # the state between segments is the discrete state (params, step); the batch of step k is
    # drawn from step_key(key, k), so segments take the steps of one run: bitwise (the same
    # loop body on the same state, as for GD and SGD in test_checkpoint)
    seg = checkpoint.simulate_resumable(tmp_path / "o.npz", net, p0, dist, every=2, **kw)
    for name in ("loss", "grad_norm"):
        np.testing.assert_array_equal(seg[name], one[name])
    for a, b in zip(jax.tree.leaves(seg.params_final), jax.tree.leaves(one.params_final),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def test_ensemble_members_equal_their_runs():
    # a Gaussian teacher with 2 neurons: its (2, d) arrays must not be read as per-member
    # settings of a 2-member ensemble
    dist = D.GaussianTeacher.random(jax.random.key(0), 3, 2)
    net = gflow.TwoLayer(6, "relu", bias=False)
    p0 = gflow.init.gaussian(jax.random.key(1), net, 3)
    held = gflow.Dataset(*dist.sample(jax.random.key(8), 256))
    keys = jax.random.split(jax.random.key(4), 2)
    lrs = (0.05, 0.1)
    kw = dict(t1=1.0, save=gflow.LinTimes(5), observe=("loss",))
    one = [gflow.simulate(net, p0, held, dynamics=gflow.OnlineSGD(lr, 3, dist, k), **kw)
           for lr, k in zip(lrs, keys, strict=True)]
    P = jax.tree.map(lambda x: jnp.stack([x, x]), p0)
    ens = gflow.simulate_ensemble(net, P, held, dynamics=gflow.OnlineSGD(np.array(lrs), 3, dist,
                                                                         keys), **kw)
    for i in range(2):  # float32: vmapped and single runs sum in other orders
        np.testing.assert_allclose(ens["loss"][i], one[i]["loss"], rtol=1e-5)
        np.testing.assert_array_equal(ens.times[i], one[i].times)
    assert not np.allclose(ens["loss"][0], ens["loss"][1])
    # a sweep over keys and lr runs as one ensemble (both are member fields)
    sw = gflow.sweep(lambda lr, s: gflow.Run(net, p0, held, dynamics=gflow.OnlineSGD(
        lr, 3, dist, keys[s]), **kw), lr=list(lrs), s=[0, 1])
    np.testing.assert_allclose(sw["loss"][1, 1], one[1]["loss"], rtol=1e-5)
    # distributions of the same shapes but other values are not merged into one ensemble
    other = D.GaussianTeacher.random(jax.random.key(1), 3, 2)
    sw = gflow.sweep(lambda dist: gflow.Run(net, p0, held, dynamics=gflow.OnlineSGD(
        lrs[1], 3, dist, keys[1]), **kw), dist=[dist, other])
    np.testing.assert_allclose(sw["loss"][0], one[1]["loss"], rtol=1e-5)
    alone = gflow.simulate(net, p0, held, dynamics=gflow.OnlineSGD(lrs[1], 3, other, keys[1]),
                           **kw)
    np.testing.assert_allclose(sw["loss"][1], alone["loss"], rtol=1e-5)


def test_stop_loss_checks_the_population_loss(x64):
    dist, net, p0 = _parity()
    key = jax.random.key(3)
    hand = [float(dist.population_loss(net, p0, "logistic"))]
    p = p0
    for k in range(60):
        p = online.online_sgd_step(net, p, dist, key, k, lr=0.5, batch_size=B,
                                   loss="logistic")[0]
        hand.append(float(dist.population_loss(net, p, "logistic")))
    level = 0.5 * (hand[0] + min(hand))
    k_star = next(k for k, v in enumerate(hand) if v < level)  # first iterate below it
    tr = gflow.simulate(net, p0, dist, loss="logistic", stop_loss=level, t1=60 * 0.5,
                        dynamics=gflow.OnlineSGD(0.5, B, dist, key), save=gflow.LinTimes(4))
    assert tr.status == "stop_loss" and tr.t_stop == pytest.approx(k_star * 0.5)
    assert tr["loss"][-1] == pytest.approx(hand[k_star], rel=1e-12)
    # one population evaluation per step besides the k_star batch gradients
    assert tr.stats["grad_evals"] == 2 * k_star + 1


@pytest.mark.parametrize("make, match", [
    (lambda d, k: gflow.OnlineSGD(0.1, 0, d, k), "batch_size"),
    (lambda d, k: gflow.OnlineSGD(0.1, 2.0, d, k), "batch_size"),
    (lambda d, k: gflow.OnlineSGD(0.1, True, d, k), "batch_size"),
    (lambda d, k: gflow.OnlineSGD(0.1, 2, "parity", k), "distribution"),
    (lambda d, k: gflow.OnlineSGD(0.1, 2, d.dataset(k, 8), k), "distribution"),
    (lambda d, k: gflow.OnlineSGD(0.1, 2, d, 0), "key"),
    (lambda d, k: gflow.OnlineSGD(0.1, 2, d, None), "key"),
    (lambda d, k: gflow.OnlineSGD(-0.1, 2, d, k), "lr"),
    (lambda d, k: gflow.OnlineSGD(0.1, 2, d, k).batches(0), "steps"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make(D.SparseParity(4, 2), jax.random.key(0))


def test_bad_runs_say_what_to_do():
    dist, net, p0 = _parity()
    kw = dict(t1=0.5, save=gflow.LinTimes(2))
    dyn = gflow.OnlineSGD(LR, B, dist, jax.random.key(0))
    margin = D.Margin(6, 0.1)
    with pytest.raises(ValueError, match="no exact population loss"):  # nothing to enumerate
        gflow.simulate(net, p0, margin, dynamics=gflow.OnlineSGD(LR, B, margin,
                                                                 jax.random.key(0)), **kw)
    with pytest.raises(ValueError, match="d=5"):  # the distribution does not fit the net
        gflow.simulate(net, p0, dist, dynamics=gflow.OnlineSGD(LR, B, D.SparseParity(5, 2),
                                                               jax.random.key(0)), **kw)
    held = dist.dataset(jax.random.key(1), 32)
    with pytest.raises(ValueError, match="population_error.*needs data="):
        gflow.simulate(net, p0, held, dynamics=dyn, observe=("population_error",), **kw)
    with pytest.raises(ValueError, match="population_loss.*needs an exact"):
        gflow.simulate(net, p0, held, dynamics=dyn, observe=("population_loss",), **kw)
    with pytest.raises(ValueError, match="exceeds the number of samples n=0"):  # SGD needs one
        gflow.simulate(net, p0, dist, dynamics=gflow.SGD(LR, 2, key=jax.random.key(0)), **kw)

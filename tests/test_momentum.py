"""gflow.Momentum -- a dynamics added through the protocol alone (gflow/momentum.py and one
export) -- against a hand-written heavy-ball loop and optax, in every run path."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import RTOL, tree_max_abs_diff

import gflow
from gflow import checkpoint
from gflow.objective import Objective

LR, BETA, K = 0.1, 0.8, 25


def _problem(key=0, m=8):
    k1, k2 = jax.random.split(jax.random.key(key))
    data = gflow.data.teacher(k1, 24, 3, 2)
    net = gflow.TwoLayer(m, "tanh", bias=True)
    return net, gflow.init.gaussian(k2, net, 3), data


def _hand_loop(net, p0, data, lr, beta, steps):
    """v <- beta v + grad L(theta); theta <- theta - lr v, from v = 0."""
    objective = Objective(net, "squared", data.X, data.y)
    grad = jax.jit(lambda p: objective.grad(p))
    theta, v = p0, jax.tree.map(jnp.zeros_like, p0)
    for _ in range(steps):
        v = jax.tree.map(lambda vi, gi: beta * vi + gi, v, grad(theta))
        theta = jax.tree.map(lambda p, vi: p - lr * vi, theta, v)
    return theta


def test_momentum_is_the_heavy_ball_loop_and_optax_sgd_momentum(dtype):
    net, p0, data = _problem()
    kw = dict(t1=K * LR, save=gflow.LinTimes(6), observe=("loss",))
    tr = gflow.simulate(net, p0, data, dynamics=gflow.Momentum(LR, BETA), **kw)
    assert tr.stats["num_steps"] == K and tr.times[-1] == pytest.approx(K * LR)  # t = k lr
    # the same recursion, summed in another order by the objective's written-out gradient
    tol = 10 * RTOL[dtype]
    assert tree_max_abs_diff(tr.params_final, _hand_loop(net, p0, data, LR, BETA, K)) <= tol
    # optax's trace form: f_t = g_t + beta f_{t-1}, update -lr f_t (nesterov=False)
    ox = gflow.simulate(net, p0, data, dynamics=gflow.Optax(optax.sgd(LR, momentum=BETA), LR),
                        **kw)
    assert tree_max_abs_diff(tr.params_final, ox.params_final) <= tol
    np.testing.assert_allclose(tr["loss"], ox["loss"], rtol=tol)
    # beta = 0 is GD; momentum moves farther than GD in the same time on this descent
    gd = gflow.simulate(net, p0, data, dynamics=gflow.GD(LR), **kw)
    zero = gflow.simulate(net, p0, data, dynamics=gflow.Momentum(LR, 0.0), **kw)
    assert tree_max_abs_diff(zero.params_final, gd.params_final) <= tol
    assert tr["loss"][-1] < gd["loss"][-1]


def test_momentum_bad_input():
    for bad in (1.0, -0.1, "0.9", True):
        with pytest.raises(ValueError, match="beta"):
            gflow.Momentum(0.1, bad)
    with pytest.raises(ValueError, match="lr"):
        gflow.Momentum(-0.1, 0.5)


def test_momentum_ensemble_sweep_and_segments(tmp_path):
    net, p0, data = _problem()
    kw = dict(t1=K * LR, save=gflow.LinTimes(6), observe=("loss",))
    one = {lr: gflow.simulate(net, p0, data, dynamics=gflow.Momentum(lr, BETA), **kw)
           for lr in (0.05, 0.1)}
    # an ensemble with per-member lr: members equal their separate runs (float32)
    P = jax.tree.map(lambda x: jnp.stack([x, x]), p0)
    ens = gflow.simulate_ensemble(net, P, data, dynamics=gflow.Momentum(np.array([0.05, 0.1]),
                                                                        BETA), **kw)
    for i, lr in enumerate((0.05, 0.1)):
        np.testing.assert_allclose(ens["loss"][i], one[lr]["loss"], rtol=1e-5)
        np.testing.assert_array_equal(ens.times[i], one[lr].times)
    # a sweep over lr runs as one ensemble (lr is a member field) and labels the grid
    sw = gflow.sweep(lambda lr: gflow.Run(net, p0, data, dynamics=gflow.Momentum(lr, BETA),
                                          **kw), lr=[0.05, 0.1])
    np.testing.assert_allclose(sw["loss"][1], one[0.1]["loss"], rtol=1e-5)
    # segmented (checkpointed) runs carry the velocity: the steps of one run, bitwise (the
    # same loop body on the same state; as for GD, SGD and optax in test_checkpoint)
    seg = checkpoint.simulate_resumable(tmp_path / "m.npz", net, p0, data, every=2,
                                        dynamics=gflow.Momentum(0.1, BETA), **kw)
    np.testing.assert_array_equal(seg["loss"], one[0.1]["loss"])
    for a, b in zip(jax.tree.leaves(seg.params_final), jax.tree.leaves(one[0.1].params_final),
                    strict=True):
        np.testing.assert_array_equal(a, b)

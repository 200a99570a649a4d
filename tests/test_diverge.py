"""Divergence by growth: ``diverge_factor=`` stops a run whose loss exceeds that multiple of
its initial loss, with status ``diverged`` at the first such iterate (discrete dynamics)
or at the located crossing (gradient flow); off by default."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import linear_problem
from jax.flatten_util import ravel_pytree

import gflow


def _quadratic():
    """A linear two-layer net with fixed outer weights: the loss is a quadratic in ``W``;
    GD at ``lr = 2.5 / lambda_max`` multiplies the top mode by ``|1 - 2.5| = 1.5`` a step."""
    net, p0, data, obj = linear_problem()
    flat, unravel = ravel_pytree(p0)
    W = p0.W.size  # the leading entries of the flat parameters; ``a`` is not trained
    hess = jax.hessian(lambda f: obj.loss(unravel(f)))(flat)[:W, :W]
    lam = np.max(np.linalg.eigvalsh(np.asarray(hess)))
    return net, p0, data, 2.5 / float(lam)


@pytest.mark.parametrize("kind", ["gd", "momentum", "optax", "sgd"])
def test_discrete_run_diverges_at_the_first_iterate_past_the_factor(kind):
    net, p0, data, lr = _quadratic()
    K, factor = 60, 1e6
    dyn = {"gd": gflow.GD(lr), "momentum": gflow.Momentum(lr, 0.0),
           "optax": gflow.Optax(optax.sgd(lr), lr),
           "sgd": gflow.SGD(lr, 20, key=jax.random.key(1))}[kind]  # batch = n: GD
    kw = dict(dynamics=dyn, t1=K * lr, save=gflow.LinTimes(K + 1), throw=False)
    off = gflow.simulate(net, p0, data, **kw)
    # off by default: the loss grows ~1.5^(2k) but stays finite, so the run "completes"
    assert str(off.status) == "completed" and off["loss"][-1] > 1e12 * off["loss"][0]
    on = gflow.simulate(net, p0, data, diverge_factor=factor, **kw)
    k = int(np.argmax(off["loss"] > factor * off["loss"][0]))  # first iterate past it
    assert 0 < k < K and str(on.status) == "diverged"
    np.testing.assert_allclose(on.t_stop, off.times[k], rtol=1e-6)
    np.testing.assert_allclose(on["loss"][-1], off["loss"][k], rtol=1e-5)
    np.testing.assert_array_equal(on.times[:-1], off.times[:k])  # same grid up to the stop
    with pytest.raises(gflow.SimulationError, match="diverge_factor"):
        gflow.simulate(net, p0, data, diverge_factor=factor, **(kw | {"throw": True}))


@pytest.mark.parametrize("kinks, h", [(False, 1.0), (True, 3.0)])
def test_gradient_flow_growth_is_located_inside_the_step(x64, kinks, h):
    # a fixed step beyond Tsit5's stability region makes the numerical flow blow up: its
    # loss passes 10 x the initial loss inside a step (of length h), where the crossing is
    # located on the step's dense output: the loss there is the cap, up to the change of
    # the loss across the final bracket (a few ulps of t, times a steep |dL/dt| on a step
    # that blows up)
    k1, k2 = jax.random.split(jax.random.key(0))
    data = gflow.data.teacher(k1, 20, 3, 2, inputs="gaussian", n_test=0)
    net = gflow.TwoLayer(6, "relu" if kinks else "linear")
    p0 = gflow.init.gaussian(k2, net, 3)
    dyn = gflow.GradientFlow(controller="constant", dt0=h, kinks=kinks)
    kw = dict(dynamics=dyn, t1=30.0, save=gflow.LinTimes(11), throw=False)
    tr = gflow.simulate(net, p0, data, diverge_factor=10.0, **kw)
    loss0 = float(tr["loss"][0])
    assert str(tr.status) == "diverged" and 1e-6 < tr.t_stop % h < h - 1e-6
    obj = data.objective(net, gflow.losses.get_loss("squared"))
    np.testing.assert_allclose(float(obj.loss(tr.params_final)), 10 * loss0, rtol=1e-6)
    np.testing.assert_allclose(tr["loss"][-1], 10 * loss0, rtol=1e-6)


def test_gradient_flow_never_trips_a_growth_criterion():
    # the loss is non-increasing along gradient flow: a factor barely above 1 never fires
    k1, k2 = jax.random.split(jax.random.key(0))
    data = gflow.data.teacher(k1, 20, 3, 2, inputs="gaussian", n_test=0)
    net = gflow.TwoLayer(6, "tanh")
    p0 = gflow.init.gaussian(k2, net, 3)
    kw = dict(t1=5.0, save=gflow.LinTimes(6))
    tr = gflow.simulate(net, p0, data, diverge_factor=1.0 + 1e-3, **kw)
    ref = gflow.simulate(net, p0, data, **kw)
    assert str(tr.status) == "completed"
    np.testing.assert_allclose(tr["loss"], ref["loss"], rtol=1e-6)


def test_ensemble_and_sweep_take_diverge_factor():
    net, p0, data, lr = _quadratic()
    P = jax.tree.map(lambda x: jnp.stack([x, x]), p0)
    dyn = gflow.GD(jnp.asarray([lr, 0.1 * lr]))  # the second is stable
    tr = gflow.simulate_ensemble(net, P, data, dynamics=dyn, t1=60 * lr, diverge_factor=1e6,
                                 save=gflow.LinTimes(11))
    assert list(tr.status) == ["diverged", "completed"]
    sw = gflow.sweep(lambda scale: gflow.Run(net, p0, data, dynamics=gflow.GD(scale * lr),
                                            t1=60 * lr, diverge_factor=1e6),
                     scale=[1.0, 0.1])
    assert list(np.ravel(sw.status)) == ["diverged", "completed"]


@pytest.mark.parametrize("bad", [1.0, 0.5, -3, float("inf"), float("nan"), "big", True])
def test_diverge_factor_is_validated(bad):
    net, p0, data, lr = _quadratic()
    with pytest.raises(ValueError, match="diverge_factor must be a finite number > 1"):
        gflow.simulate(net, p0, data, dynamics=gflow.GD(lr), t1=lr, diverge_factor=bad)
    with pytest.raises(ValueError, match="diverge_factor"):
        gflow.simulate_ensemble(net, jax.tree.map(lambda x: x[None], p0), data,
                                dynamics=gflow.GD(lr), t1=lr, diverge_factor=bad)

"""gflow.AdamFlow: the ODE limit of Adam. optax's Adam with beta1 = 1 - a lr, beta2 = 1 - b lr
converges to it at first order as lr -> 0; its start is Adam's first step; it runs through
the whole run layer (observables of theta, stops, snapshots, segments, ensembles)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gflow
from gflow import checkpoint
from gflow.adam_flow import AdamFlow


def _flat(p):
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(p)])


def _setup():
    ds = gflow.data.teacher(jax.random.key(0), 10, 3)
    net = gflow.TwoLayer(6, activation="tanh", bias=True)
    return net, gflow.init.gaussian(jax.random.key(1), net, 3), ds


def test_adam_converges_to_the_ode_at_first_order(x64):
    """|theta_Adam(T) - theta_ODE(T)| over lr = 0.02, 0.01, 0.005 (T = 1, a = 1, b = 2): log-log
    slope 1 within 0.1 (measured 1.003 over four step sizes, with gaps 4e-2 ... 5e-3, far above
    the ODE solve's error at rtol 1e-10)."""
    net, p0, ds = _setup()
    a, b, eps = 1.0, 2.0, 1e-8
    ode = gflow.simulate(net, p0, ds, dynamics=AdamFlow(a, b, eps, rtol=1e-10, atol=1e-12),
                         t1=1.0, save=[0.0, 1.0])
    lrs = np.array([0.02, 0.01, 0.005])
    errs = []
    for lr in lrs:
        opt = optax.adam(lr, b1=1 - a * lr, b2=1 - b * lr, eps=eps)
        ad = gflow.simulate(net, p0, ds, dynamics=gflow.Optax(opt, lr), t1=1.0, save=[0.0, 1.0])
        errs.append(np.linalg.norm(_flat(ad.params_final) - _flat(ode.params_final)))
    slope = np.polyfit(np.log(lrs), np.log(errs), 1)[0]
    assert abs(slope - 1) < 0.1, (errs, slope)
    of = AdamFlow.of(0.01, b1=0.99, b2=0.98)  # a, b from Adam's betas (1 - b rounds: approx)
    assert of.a == pytest.approx(1.0, rel=1e-13) and of.b == pytest.approx(2.0, rel=1e-13)


def test_start_is_adams_first_step(x64):
    """At t = 0 the corrected moments are g and g^2: theta' = -g / (|g| + eps), the direction
    of Adam's first step (lr * that, exactly, for any betas)."""
    net, p0, ds = _setup()
    obj = gflow.Objective(net, "squared", ds.X, ds.y)
    g = obj.grad(p0)
    y0 = (p0, jax.tree.map(jnp.zeros_like, p0), jax.tree.map(jnp.zeros_like, p0))
    flow = AdamFlow(1.0, 2.0, 1e-3)
    dtheta, dm, dv = flow.vector_field(jnp.asarray(0.0), y0, flow._lift_objective(obj))
    want = jax.tree.map(lambda gi: -gi / (jnp.abs(gi) + 1e-3), g)
    np.testing.assert_allclose(_flat(dtheta), _flat(want), rtol=1e-14)
    np.testing.assert_allclose(_flat(dm), _flat(g), rtol=1e-14)  # a (g - 0), a = 1
    lr = 1e-3
    opt = optax.adam(lr, b1=0.9, b2=0.999, eps=1e-3)
    upd, _ = opt.update(g, opt.init(p0), p0)
    np.testing.assert_allclose(_flat(upd), lr * _flat(want), rtol=1e-12)


@pytest.mark.slow  # ~29 s; AdamFlow's field, ensemble and order run in the default suite
@pytest.mark.parametrize("dtype", ["float32", "float64"], indirect=True)
def test_run_layer(tmp_path, dtype):
    """Observables and snapshots are of theta; a stop_loss stop; a checkpointed run equals a
    plain one bitwise (GradientFlow's segments carry the solver state); float32 and float64."""
    net, p0, ds = _setup()
    flow = AdamFlow.of(0.01)
    kw = dict(t1=3.0, save=gflow.LinTimes(6), observe=("loss", "param_norm"))
    one = gflow.simulate(net, p0, ds, dynamics=flow, save_params=True, **kw)
    assert one.params.W.shape == (6, 6, 3) and one.params_final.W.shape == (6, 3)
    np.testing.assert_allclose(one["param_norm"][-1], np.linalg.norm(_flat(one.params_final)),
                               rtol=1e-5)
    assert one["loss"][-1] < one["loss"][0]
    seg = checkpoint.simulate_resumable(tmp_path / "c.npz", net, p0, ds, every=2,
                                        dynamics=flow, save_params=True, **kw)
    np.testing.assert_array_equal(seg["loss"], one["loss"])
    np.testing.assert_array_equal(seg.params_final.W, one.params_final.W)
    stop = float(one["loss"][3])
    st = gflow.simulate(net, p0, ds, dynamics=flow, stop_loss=stop, **kw)
    # the loss falls through loss(t_3) just after t_3 (before the next save)
    assert str(st.status) == "stop_loss" and one.times[3] - 1e-6 <= st.t_stop < one.times[4]


def test_ensemble(x64):
    net, p0, ds = _setup()
    P = jax.vmap(lambda k: gflow.init.gaussian(k, net, 3))(jax.random.split(jax.random.key(5), 3))
    ens = gflow.simulate_ensemble(net, P, ds, dynamics=AdamFlow(1.0, 2.0), t1=1.0,
                                  save=[0.0, 1.0])
    one = gflow.simulate(net, jax.tree.map(lambda x: x[1], P), ds, dynamics=AdamFlow(1.0, 2.0),
                         t1=1.0, save=[0.0, 1.0])
    np.testing.assert_allclose(ens["loss"][1], one["loss"], rtol=1e-9)


@pytest.mark.parametrize("make, match", [
    (lambda: AdamFlow(0.0, 1.0), "a must"),
    (lambda: AdamFlow(1.0, -1.0), "b must"),
    (lambda: AdamFlow(1.0, 1.0, eps=0.0), "eps"),
    (lambda: AdamFlow(1.0, 1.0, kinks=True), "kinks"),
    (lambda: AdamFlow.of(0.01, b1=1.0), "b1"),
    (lambda: AdamFlow.of(-0.01), "lr"),
])
def test_bad_settings(make, match):
    with pytest.raises(ValueError, match=match):
        make()

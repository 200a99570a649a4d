"""Bad input gets a clear ValueError naming the parameter, before anything is compiled."""

import jax
import numpy as np
import pytest

import gflow


@pytest.fixture(scope="module")
def setup():
    ds = gflow.data.teacher(jax.random.key(0), 20, 3, 2)
    net = gflow.TwoLayer(4)
    return net, gflow.init.gaussian(jax.random.key(1), net, 3), ds


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"t1": 0.0}, "t1"),
        ({"t1": -1.0}, "t1"),
        ({"t1": float("nan")}, "t1"),
        ({"t1": 1.0, "save": [0.0, 0.5, 0.2]}, "increasing"),
        ({"t1": 1.0, "save": [0.0, 0.5, 0.5]}, "increasing"),
        ({"t1": 1.0, "save": [0.0, 2.0]}, r"\[0, t1"),
        ({"t1": 1.0, "save": [0.0, float("nan")]}, "NaN"),
        ({"t1": 1.0, "loss": "hinge"}, "squared"),
        ({"t1": 1.0, "loss": "logistic"}, r"-1, \+1"),
        ({"t1": 1.0, "observe": ("loss", "nope")}, "valid names"),
        ({"t1": 1.0, "observe": ("test_loss",), "_no_test": True}, "test data"),
        ({"t1": 1.0, "observe": ("output",)}, "probes"),
        ({"t1": 1.0, "observe": ()}, "empty"),
        ({"t1": 1.0, "stop_loss": -1.0}, "stop_loss"),
        ({"t1": 1.0, "dynamics": "gd"}, "dynamics"),
        ({"t1": 1.0, "dynamics": gflow.SGD(0.1, 50, key=jax.random.key(0))}, "batch_size"),
        ({"t1": 1.0, "save": np.arange(20) * 0.05, "dynamics": gflow.GD(0.5)}, "save times"),
        ({"t1": 0.2, "dynamics": gflow.GD(0.5)}, "half a step of lr=0.5"),
        ({"t1": 0.2, "dynamics": gflow.GD(lambda k: 0.5)}, "first step"),
    ],
)
def test_simulate_input_errors(setup, kwargs, match):
    net, p0, ds = setup
    kwargs = dict(kwargs)
    if kwargs.pop("_no_test", False):
        ds = gflow.Dataset(ds.X, ds.y)
    with pytest.raises(ValueError, match=match):
        gflow.simulate(net, p0, ds, **kwargs)


def test_params_for_another_d(setup):
    net, _, ds = setup
    p = gflow.init.gaussian(jax.random.key(1), net, 5)
    with pytest.raises(ValueError, match="d=3"):
        gflow.simulate(net, p, ds, t1=1.0)


@pytest.mark.parametrize("make, match", [
    (lambda: gflow.GD(lr=0.0), "lr"),
    (lambda: gflow.GD(lr=-0.1), "lr"),
    (lambda: gflow.GD(lr=float("inf")), "lr"),
    (lambda: gflow.SGD(lr=0.1, batch_size=0, key=jax.random.key(0)), "batch_size"),
    (lambda: gflow.SGD(lr=0.1, batch_size=4, key=None), "key"),
    (lambda: gflow.Optax("adam", lr=0.1), "optax"),
    (lambda: gflow.GradientFlow(solver="rk99"), "tsit5"),
    (lambda: gflow.GradientFlow(controller="magic"), "pid"),
    (lambda: gflow.GradientFlow(rtol=0.0), "rtol"),
    (lambda: gflow.GradientFlow(controller="constant"), "dt0"),
    (lambda: gflow.LogTimes(1), "save times"),
])
def test_dynamics_config_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_sgd_key_is_required():
    # no default key: SGD without one is refused by its signature, naming the argument
    with pytest.raises(TypeError, match="key"):
        gflow.SGD(0.1, 4)


def _params(p0, **leaves):
    return gflow.TwoLayerParams(**{"W": p0.W, "b": p0.b, "a": p0.a, **leaves})


@pytest.mark.parametrize("make, match", [
    # NaN/inf in the initial parameters is bad input, not divergence
    (lambda p0: _params(p0, W=p0.W.at[0, 0].set(np.nan)), "initial parameters are not finite"),
    (lambda p0: _params(p0, a=p0.a.at[1].set(np.inf)), r"params\.a has NaN or inf"),
    # beyond float32's range (the default dtype here): inf after the cast
    (lambda p0: _params(p0, W=np.full(p0.W.shape, 1e300)), "not finite"),
    (lambda p0: _params(p0, W=np.asarray(p0.W).astype(np.complex64)), "complex"),
    (lambda p0: _params(p0, W=np.asarray(p0.W).tolist()), r"params\.W is a list"),
])
@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
def test_bad_initial_parameters(setup, make, match):
    net, p0, ds = setup
    params = make(p0)
    with pytest.raises(ValueError, match=match):
        gflow.simulate(net, params, ds, dynamics=gflow.GD(0.1), t1=1.0)


def test_nan_member_of_an_ensemble_is_named(setup):
    net, p0, ds = setup
    P = jax.tree.map(lambda x: np.stack([x] * 3), p0)
    P = _params(P, W=P.W.copy())
    P.W[2, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"not finite.*member\(s\) \[2\]"):
        gflow.simulate_ensemble(net, P, ds, dynamics=gflow.GD(0.1), t1=1.0)


def test_stacked_data_and_per_sample_loss(setup):
    net, p0, ds = setup
    with pytest.raises(ValueError, match=r"stack of datasets .* for one dataset give X"):
        gflow.Dataset(np.ones((20, 3, 2)), np.zeros(20))
    stacked = gflow.Dataset(np.ones((2, 20, 3)), np.zeros((2, 20)))
    with pytest.raises(ValueError, match="simulate needs one dataset"):
        gflow.simulate(net, p0, stacked, t1=1.0)
    with pytest.raises(ValueError, match=r"one value per sample, shape \(20,\), got \(\)"):
        gflow.simulate(net, p0, ds, loss=lambda f, y: ((f - y) ** 2).mean(), t1=1.0)
    with pytest.raises(ValueError, match="loss: calling it"):
        gflow.simulate(net, p0, ds, loss=lambda f: f, t1=1.0)


def test_optax_learning_rate_must_be_the_time_step():
    import optax

    from gflow import inputs

    with pytest.raises(ValueError, match=r"learning rate 0\.001 but lr=0\.1.*give lr=0\.001"):
        gflow.Optax(optax.adam(1e-3), lr=0.1)
    with pytest.raises(ValueError, match="learning rate 0.01"):
        gflow.Optax(optax.chain(optax.clip(1.0), optax.sgd(1e-2, momentum=0.9)), lr=1.0)
    with pytest.raises(ValueError, match="learning rate 0.001"):
        gflow.Optax(optax.inject_hyperparams(optax.adam)(learning_rate=1e-3), lr=0.1)
    gflow.Optax(optax.adamw(1e-2, weight_decay=0.1), lr=1e-2)  # the same rate: fine
    # where the rate cannot be read (a schedule, no scaling), lr is taken as given
    assert inputs.optax_learning_rate(optax.adam(optax.exponential_decay(1e-3, 10, 0.5))) is None
    assert inputs.optax_learning_rate(optax.scale_by_adam()) is None
    gflow.Optax(optax.scale_by_adam(), lr=0.1)

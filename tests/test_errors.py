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

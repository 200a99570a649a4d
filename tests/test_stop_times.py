"""Stop times of gradient flow located to the tolerance, against an independent reference.

The reference crossing ``t*`` of ``L = stop_loss`` or ``|grad L| = stop_grad`` comes from
SciPy's DOP853 with its own event location (``solve_ivp(events=...)``, rtol 1e-12, atol
1e-14, float64) on the same vector field. gflow must report ``|t_stop - t*| <=
10 rtol t*``: before, it reported the end of the step in which the condition became
true, off by up to a whole step (0.1 -- 0.3 here). The ReLU net runs the kink-aware solve
(``kinks=True``); DOP853's error control resolves the kinks of its vector field
(7 -- 20 switches, no sliding mode before ``t*``), and its crossing moves by ~1e-10 from
rtol 1e-12 to 1e-13, far inside the tested bounds.
"""

import functools

import jax
import numpy as np
import pytest
from helpers import assert_same_run, linear_problem
from jax.flatten_util import ravel_pytree
from scipy.integrate import solve_ivp
from scipy.linalg import expm

import gflow
from gflow import checkpoint

LEVELS = {"loss": 0.1, "grad": 0.05}  # crossed at t* = 4.2 / 12.9 (tanh), 7.6 / 16.5 (relu)
T1 = 20.0


def _problem(activation):
    """Data and initial parameters drawn once (in float64) and rounded to float32 values,
    so float32 and float64 runs (and the reference) integrate the same problem."""
    with jax.enable_x64(True):
        k1, k2 = jax.random.split(jax.random.key(3))
        data = gflow.data.teacher(k1, 30, 3, 2, inputs="gaussian", n_test=0)
        net = gflow.TwoLayer(8, activation, bias=True)
        p0 = gflow.init.gaussian(k2, net, 3)
    f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
    return net, jax.tree.map(f32, p0), gflow.Dataset(f32(data.X), f32(data.y))


@functools.cache
def _reference(activation, which):
    """``(t*, |grad L|^2 at t*)`` from DOP853 in float64."""
    with jax.enable_x64(True):
        net, p0, data = _problem(activation)
        data = gflow.Dataset(np.float64(data.X), np.float64(data.y))
        p0 = jax.tree.map(np.float64, p0)
        obj = data.objective(net, gflow.losses.get_loss("squared"))
        f0, unravel = ravel_pytree(p0)
        loss = jax.jit(lambda f: obj.loss(unravel(f)))
        grad = jax.jit(lambda f: ravel_pytree(obj.grad(unravel(f)))[0])
        if which == "loss":
            def event(t, y):
                return float(loss(y)) - LEVELS["loss"]
        else:
            def event(t, y):
                return float(np.linalg.norm(grad(y))) - LEVELS["grad"]
        event.terminal, event.direction = True, -1
        sol = solve_ivp(lambda t, y: -np.asarray(grad(y)), (0.0, T1), np.asarray(f0),
                        method="DOP853", rtol=1e-12, atol=1e-14, events=event)
        y_star = sol.y_events[0][0]
        return float(sol.t_events[0][0]), float(np.sum(np.asarray(grad(y_star)) ** 2))


def _stop(activation, which, rtol, **kw):
    net, p0, data = _problem(activation)
    dyn = gflow.GradientFlow(rtol=rtol, atol=rtol * 1e-2, kinks=activation == "relu", **kw)
    return gflow.simulate(net, p0, data, dynamics=dyn, t1=T1, save=gflow.LinTimes(11),
                          observe=("loss", "grad_norm"), **{f"stop_{which}": LEVELS[which]})


def _check(activation, which, rtols):
    t_star, _ = _reference(activation, which)
    for rtol in rtols:
        tr = _stop(activation, which, rtol)
        assert str(tr.status) == f"stop_{which}"
        assert abs(float(tr.t_stop) - t_star) <= 10 * rtol * t_star, (rtol, tr.t_stop, t_star)
        # the state at t_stop is taken there: the condition holds to rounding
        np.testing.assert_allclose(tr[f"{which}" if which == "loss" else "grad_norm"][-1],
                                   LEVELS[which], rtol=1e-9)
        assert tr.times[-1] == tr.t_stop and np.all(tr.times[:-1] < tr.t_stop)


def test_stop_loss_located_smooth_net(x64):
    _check("tanh", "loss", (1e-6, 1e-8, 1e-10))


def test_stop_grad_located_relu_net_kinks(x64):
    _check("relu", "grad", (1e-8,))


@pytest.mark.slow
@pytest.mark.parametrize("activation, which", [("tanh", "grad"), ("relu", "loss"),
                                               ("relu", "grad")])
def test_stop_times_located_all_tolerances(x64, activation, which):
    _check(activation, which, (1e-6, 1e-8, 1e-10))


def test_stop_loss_located_float32():
    # float32 knows the loss only to ~eps L, so its crossing only to eps L / |dL/dt| =
    # eps L / |grad L|^2 in time: the bound is the tolerance's plus 100 times that
    t_star, g2 = _reference("tanh", "loss")
    eps = float(np.finfo(np.float32).eps)
    for rtol in (1e-5, 1e-6):
        tr = _stop("tanh", "loss", rtol)
        assert str(tr.status) == "stop_loss" and tr["loss"].dtype == np.float32
        bound = 10 * rtol * t_star + 100 * eps * LEVELS["loss"] / g2
        assert abs(float(tr.t_stop) - t_star) <= bound, (rtol, tr.t_stop, t_star, bound)


def test_stop_at_the_start_stops_at_zero(x64):
    # a condition that already holds at t = 0 stops there (no step to locate it in)
    net, p0, data = _problem("tanh")
    tr = gflow.simulate(net, p0, data, t1=T1, stop_loss=1e3)
    assert str(tr.status) == "stop_loss" and tr.t_stop == 0.0 and tr.stats["num_steps"] == 0


def _same(a, b):
    """Bitwise: the segments take the steps of one solve (see tests/test_gf_segments.py)."""
    assert str(a.status) == str(b.status)
    assert_same_run(a, b)


@pytest.mark.slow  # ~17 s; a stop inside a segment: test_gf_segments_equal_one_solve
@pytest.mark.parametrize("kinks", [False, True])
def test_located_stop_in_segments_equals_one_run(tmp_path, kinks):
    # the stop inside the 3rd save interval, located, whether or not the run is cut
    net, p0, data = _problem("relu" if kinks else "tanh")
    dyn = gflow.GradientFlow(rtol=1e-6, atol=1e-8, kinks=kinks)
    kw = dict(dynamics=dyn, t1=6.0, save=gflow.LinTimes(7), stop_loss=LEVELS["loss"] * 1.5)
    one = gflow.simulate(net, p0, data, **kw)
    assert str(one.status) == "stop_loss" and 2.0 < one.t_stop < 6.0
    assert float(one.t_stop) not in np.arange(7.0)
    seg = checkpoint.simulate_resumable(tmp_path / "c.npz", net, p0, data, every=1, **kw)
    _same(seg, one)


# -- stepping onto the save times ---------------------------------------------------------

def _linear():
    """A linear net with fixed outer weights: GF in ``W`` is the affine linear ODE
    ``W' = -K W - g``, solved in closed form by a matrix exponential."""
    net, p0, data, obj = linear_problem()
    flat0, unravel = ravel_pytree(p0)
    grad = lambda f: ravel_pytree(obj.grad(unravel(f)))[0]  # noqa: E731
    K = np.asarray(jax.jacfwd(grad)(flat0))
    g = np.asarray(grad(flat0)) - K @ np.asarray(flat0)
    P = len(flat0)
    A = np.zeros((P + 1, P + 1))
    A[:P, :P], A[:P, P] = -K, -g

    def exact(t):
        return (expm(t * A) @ np.append(np.asarray(flat0), 1.0))[:P]

    return net, p0, data, exact


def _snaps(tr):
    return np.stack([ravel_pytree(jax.tree.map(lambda x, i=i: x[i], tr.params))[0]
                     for i in range(len(tr.times))])


@pytest.mark.slow  # ~33 s; its validation runs in the default suite
def test_step_to_saves_makes_every_save_a_step_endpoint(x64, tmp_path):
    net, p0, data, exact = _linear()
    ts = np.linspace(0.0, 30.0, 11)
    ref = np.stack([exact(t) for t in ts])
    runs = {}
    for on in (False, True):
        dyn = gflow.GradientFlow(rtol=1e-8, atol=1e-10, step_to_saves=on)
        runs[on] = gflow.simulate(net, p0, data, dynamics=dyn, t1=30.0, save=ts,
                                  save_params=True)
        # both within the tolerance of the closed form
        err = np.max(np.abs(_snaps(runs[on]) - ref)) / np.max(np.abs(ref))
        assert err < 100 * 1e-8, (on, err)
    # the cost: one or two more steps per save (a clipped step, then the controller
    # growing the step back; 105 vs 90 steps here)
    n_off, n_on = runs[False].stats["num_steps"], runs[True].stats["num_steps"]
    assert n_off <= n_on <= n_off + 2 * len(ts)
    # a save with step_to_saves is where a solve ending there ends (up to the rounding of
    # the dense output at a step's end); without, it is the dense output inside a step,
    # off by the interpolation error
    dyn = gflow.GradientFlow(rtol=1e-8, atol=1e-10, step_to_saves=True)
    plain = gflow.GradientFlow(rtol=1e-8, atol=1e-10)
    gap = {}
    for name, d in (("on", dyn), ("off", plain)):
        end = gflow.simulate(net, p0, data, dynamics=d, t1=float(ts[4]), save=ts[:5])
        scale = np.max(np.abs(ref[4]))
        gap[name] = np.max(np.abs(_snaps(runs[name == "on"])[4]
                                  - ravel_pytree(end.params_final)[0])) / scale
    assert gap["on"] < 1e-13 and gap["off"] > 1e-12, gap
    # and it holds in checkpoint segments: bitwise the same run
    kw = dict(dynamics=dyn, t1=30.0, save=ts, save_params=True)
    seg = checkpoint.simulate_resumable(tmp_path / "c.npz", net, p0, data, every=2, **kw)
    _same(seg, runs[True])
    np.testing.assert_array_equal(_snaps(seg), _snaps(runs[True]))


def test_step_to_saves_is_validated():
    with pytest.raises(ValueError, match="step_to_saves"):
        gflow.GradientFlow(step_to_saves=True, kinks=True)
    with pytest.raises(ValueError, match="step_to_saves"):
        gflow.GradientFlow(step_to_saves=True, controller="constant", dt0=0.1)
    with pytest.raises(ValueError, match="step_to_saves must be True or False"):
        gflow.GradientFlow(step_to_saves=1)


def test_ensemble_final_is_at_the_stop_point(x64, tmp_path):
    # an ensemble's saves end at the last one before each member's stop; Trajectory.final
    # reads the stop point itself, as for a single run, also through a sweep and a
    # round trip through xarray. Members: one stops at t* = 4.2, one (lower level) later,
    # one with a level never reached completes at t1.
    net, p0, data = _problem("tanh")
    dyn = gflow.GradientFlow(rtol=1e-8, atol=1e-10)
    single = gflow.simulate(net, p0, data, dynamics=dyn, t1=T1, save=gflow.LinTimes(11),
                            observe=("loss",), stop_loss=LEVELS["loss"])
    sw = gflow.sweep(lambda stop_loss: gflow.Run(
        net, p0, data, dynamics=dyn, t1=T1, save=gflow.LinTimes(11), observe=("loss",),
        stop_loss=stop_loss), stop_loss=[LEVELS["loss"], 0.5 * LEVELS["loss"], 1e-9])
    tr = sw.trajectory
    assert list(tr.status) == ["stop_loss", "stop_loss", "completed"]
    final = tr.final("loss")
    np.testing.assert_allclose(final[:2], [LEVELS["loss"], 0.5 * LEVELS["loss"]], rtol=1e-9)
    assert final[0] == pytest.approx(float(single.final("loss")), rel=1e-9)
    assert final[2] == tr["loss"][2, -1]  # completed: the save at t1
    back = gflow.Trajectory.from_xarray(tr.to_xarray())
    np.testing.assert_array_equal(back.final("loss"), final)

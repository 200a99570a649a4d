"""Gradient flow in segments (checkpointed runs) carries diffrax's solver state, controller
state and the end of the next step, so it takes exactly the steps of one plain solve.

Equality is bitwise, by construction of the steps though not of one compiled program:
each segment continues the same sequence of steps from the same state (restarted exactly:
``t0 + dt0 == tnext``; a segment ends after a whole step, never cutting one at a save
point), and the while-loop body doing the arithmetic is the same computation in the plain
run's program (``solve_run``) and the segments' (``solve_start``, ``solve_segment``), which
XLA compiles alike. Before, each segment restarted the adaptive solve and agreed with a
plain run only to the tolerance.
"""

import jax
import numpy as np
import pytest
from helpers import assert_same_run

import gflow
from gflow import checkpoint


def _problem(activation="tanh", bias=True):
    k1, k2 = jax.random.split(jax.random.key(3))
    data = gflow.data.teacher(k1, 30, 3, 2, inputs="gaussian", n_test=0)
    net = gflow.TwoLayer(8, activation, bias=bias)
    return net, gflow.init.gaussian(k2, net, 3), data


def _same(a, b):
    """Bitwise (see the module docstring)."""
    assert str(a.status) == str(b.status)
    assert_same_run(a, b, attrs=("params_final", "params"))
    assert a.stats == b.stats


KW = dict(t1=6.0, save=gflow.LinTimes(10), observe=("loss", "weight_movement"))


@pytest.mark.parametrize("every", [3, pytest.param(1, marks=pytest.mark.slow)])
@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)],
                         indirect=True)
def test_gf_segments_equal_one_solve(tmp_path, dtype, every):
    net, p0, data = _problem()
    dyn = gflow.GradientFlow(rtol=1e-5, atol=1e-7)
    for extra, everys in (({}, (every,)), ({"save_params": True}, (3,))):
        one = gflow.simulate(net, p0, data, dynamics=dyn, **KW, **extra)
        for every in everys:
            seg = checkpoint.simulate_resumable(tmp_path / "c.npz", net, p0, data, every=every,
                                                dynamics=dyn, **KW, **extra)
            _same(seg, one)
    # an early stop inside a segment
    stop = float(one["loss"][5])
    one = gflow.simulate(net, p0, data, dynamics=dyn, stop_loss=stop, **KW)
    seg = checkpoint.simulate_resumable(tmp_path / "s.npz", net, p0, data, every=2,
                                        dynamics=dyn, stop_loss=stop, **KW)
    assert str(one.status) == "stop_loss"
    _same(seg, one)


@pytest.mark.parametrize("kinks", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_interrupted_gf_resumes_as_one_solve(tmp_path, monkeypatch, x64, kinks):
    # a run stopped after its second write resumes from the state on disk (diffrax's
    # solver and controller state, or the kink-aware solve's modes) to the plain result
    # (plain Tsit5 on a ReLU net would need ~1e5 steps at this tolerance: tanh without kinks)
    net, p0, data = _problem("relu" if kinks else "tanh", bias=False)
    dyn = gflow.GradientFlow(rtol=1e-8, atol=1e-10, kinks=kinks)
    one = gflow.simulate(net, p0, data, dynamics=dyn, **KW)
    writes, save = [], checkpoint._save_state

    def interrupted(path, state):
        save(path, state)
        writes.append(int(state["saves"]))
        if len(writes) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "_save_state", interrupted)
    path = tmp_path / "r.npz"
    with pytest.raises(KeyboardInterrupt):
        checkpoint.simulate_resumable(path, net, p0, data, every=3, dynamics=dyn, **KW)
    monkeypatch.setattr(checkpoint, "_save_state", save)
    with np.load(path) as z:
        assert int(z["saves"]) == writes[-1] >= 6 and int(z["done"]) == 0
    _same(checkpoint.simulate_resumable(path, net, p0, data, every=3, dynamics=dyn, **KW), one)
    if kinks:
        assert one.stats["num_switches"] > 0

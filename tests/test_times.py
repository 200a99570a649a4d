"""Save grids: ``step=`` rounds LogTimes/LinTimes to distinct multiples of a step, so GF and
a discrete dynamics with that lr save at the same times."""

import jax
import numpy as np
import pytest

import gflow
from gflow.times import on_steps


def test_grids_on_steps():
    np.testing.assert_array_equal(gflow.LinTimes(5, step=0.5).resolve(2.0),
                                  np.arange(5) * 0.5)
    ts = gflow.LogTimes(30, step=0.1).resolve(10.0)
    k = ts / 0.1
    np.testing.assert_allclose(k, np.round(k), atol=1e-9)      # multiples of the step
    assert ts[0] == 0 and ts[1] == 0.1 and ts[-1] == 10.0        # t_min raised to one step
    assert np.all(np.diff(ts) > 0) and len(ts) <= 30            # duplicates merged
    # t1 not a multiple: the last save is the last step before t1
    np.testing.assert_allclose(on_steps(np.array([0.0, 2.0]), 0.3, 2.0), [0.0, 1.8])


def test_gf_and_gd_share_the_grid():
    """The point of ``step=``: identical save times (the same float64 numbers) for GF and GD."""
    ds = gflow.data.teacher(jax.random.key(0), 8, 3)
    net = gflow.TwoLayer(4)
    p0 = gflow.init.gaussian(jax.random.key(1), net, 3)
    save = gflow.LogTimes(12, step=0.05)
    gd = gflow.simulate(net, p0, ds, dynamics=gflow.GD(0.05), t1=3.0, save=save)
    gf = gflow.simulate(net, p0, ds, dynamics=gflow.GradientFlow(), t1=3.0, save=save)
    np.testing.assert_array_equal(gd.times, gf.times)
    plain = gflow.LogTimes(12)
    assert not np.array_equal(
        gflow.simulate(net, p0, ds, dynamics=gflow.GD(0.05), t1=3.0, save=plain).times,
        gflow.simulate(net, p0, ds, dynamics=gflow.GradientFlow(), t1=3.0, save=plain).times)


@pytest.mark.parametrize("make, match", [
    (lambda: gflow.LogTimes(10, step=0.0), "step"),
    (lambda: gflow.LinTimes(10, step=-1.0), "step"),
    (lambda: gflow.LinTimes(10, step=True), "step"),
    (lambda: gflow.LinTimes(10, step=3.0).resolve(1.0), "longer than t1"),
])
def test_bad_step(make, match):
    with pytest.raises(ValueError, match=match):
        make()

"""Labelled progress bars: the stage names reach every bar, nest, and never recompile."""

import io

import pytest

import gflow
from gflow import progress


def test_stages_nest_and_unwind_on_errors():
    assert progress.label() == ""
    with progress.stage("near_init"):
        with progress.stage("width 64 (2 of 4)"):
            assert progress.label() == "near_init: width 64 (2 of 4)"
            b = progress.bar("saves", total=3, file=io.StringIO())
            assert b.desc == "near_init: width 64 (2 of 4): saves"
            b.close()
        with pytest.raises(RuntimeError), progress.stage("boom"):
            raise RuntimeError
        assert progress.label() == "near_init"
    assert progress.label() == ""
    assert progress.bar("saves", total=1, file=io.StringIO()).desc == "saves"
    with pytest.raises(ValueError, match="stage: name must be a non-empty string"):
        with progress.stage(""):
            pass


def test_a_solve_s_bar_carries_the_stage(capsys, monkeypatch):
    import jax

    # show bars at once (not after 2 s) so a short solve draws one
    real = progress.bar
    monkeypatch.setattr(progress, "bar", lambda desc, **kw: real(desc, **{**kw, "delay": 0}))
    net = gflow.TwoLayer(4)
    data = gflow.data.teacher(jax.random.key(0), 16, 3, 2)
    p0 = gflow.init.gaussian(jax.random.key(1), net, 3)
    for dyn in (gflow.GD(0.1), gflow.GradientFlow()):
        with progress.stage("width 4 (1 of 1)"):
            gflow.simulate(net, p0, data, dynamics=dyn, t1=1.0, save=gflow.LinTimes(3),
                           progress=True)
        err = capsys.readouterr().err
        assert "width 4 (1 of 1): " in err, (dyn, err)

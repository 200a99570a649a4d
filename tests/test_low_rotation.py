"""Tests of the low_rotation experiment (setting 001, Telgarsky ICLR 2023, arXiv 2208.02789)."""

import json

import numpy as np
import pytest

import gflow
from gflow import io
from gflow.experiments import low_rotation as lr

TINY = lr.Config(d=4, n=16, n_test=64, widths=(8, 16), t1=100.0, n_save=8, norm_width=16,
                 norm_t1=1e4, norm_ns=(8, 16), nc_d=4, nc_ks=(2, 4), nc_ns=(2, 4), nc_width=8,
                 nc_t1=30.0, nc_seeds=1)

KEYS = ("near_init_max_movement_over_sqrt_m", "near_init_test_error",
        "near_init_margin_over_ntk_margin", "nc_test_error", "norm_only_max_rotation_deg",
        "norm_only_margin_ratio")


@pytest.mark.slow
def test_tiny_run_all_regimes(tmp_path):
    res = lr.run(TINY)
    s = res.summary
    for key in KEYS:
        assert key in s
    json.dumps(s)  # flat JSON: numbers, strings, objects
    # norm-only: directions never change (float32 rounding of r_j u_j only)
    assert 0.0 <= s["norm_only_max_rotation_deg"] < 1e-3
    # the LP value is the global maximum over (r, a): the flow's ratio cannot exceed 1
    # (float32 margins: 1e-4 slack)
    for v in s["norm_only_margin_ratio_by_n"].values():
        assert v <= 1.0 + 1e-4
    assert s["near_init_ntk_margin"] > 0
    assert s["near_init_max_movement_over_sqrt_m"] > 0
    for k in ("2", "4"):
        assert 0.0 <= s["nc_test_error"][k] <= 1.0
    ds = res.dataset
    # the GF and SGD runs of near_init start from the same init: equal observables at t=0
    np.testing.assert_allclose(ds["ni_loss"].sel(dynamics="gf").isel(ni_time=0),
                               ds["ni_loss"].sel(dynamics="sgd").isel(ni_time=0), rtol=1e-6)
    # results folder round trip: figures from the dataset read back from disk
    io.write_results(tmp_path, config={}, summary=s, dataset=ds)
    json.loads((tmp_path / "summary.json").read_text())
    _, _, ds2 = io.read_results(tmp_path)
    figs = lr.figures(ds2, TINY)
    assert set(figs) == {"near_init", "near_init_rotation_cdf", "norm_only", "neural_collapse"}


def test_single_regime_and_bad_regime():
    # d = 4: about 9% of standard-init neurons have |w_j| < 1 and could flip sign without the
    # conditioned init; with it no direction changes
    res = lr.run(lr.Config(**{**TINY.__dict__, "regime": "norm_only"}))
    assert "norm_only_margin_ratio" in res.summary
    assert res.summary["norm_only_max_rotation_deg"] < 1e-3
    assert 0 < res.summary["norm_only_margin_ratio"] <= 1.0 + 1e-4
    assert "near_init_test_error" not in res.summary
    assert set(lr.figures(res.dataset, TINY)) == {"norm_only"}
    with pytest.raises(ValueError, match="regime"):
        lr.run(lr.Config(regime="nope"))


def test_last_finite():
    # the experiment reads each member's last reached save with Trajectory.final: members
    # that stopped after two saves, before any, and one that completed
    v = np.array([[1.0, 2.0, np.nan], [np.nan, np.nan, np.nan], [1.0, 2.0, 3.0]])
    tr = gflow.Trajectory(times=np.array([0.0, 1.0, 2.0]), observables={"m": v}, params0=None,
                          params_final=None, stats={}, status=["stop_loss", "diverged",
                                                               "completed"],
                          t_stop=[1.0, -1.0, 2.0], batch_dims=("member",))
    np.testing.assert_array_equal(tr.final("m"), [2.0, np.nan, 3.0])

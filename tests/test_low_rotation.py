"""Tests of the low_rotation experiment (setting 001, Telgarsky ICLR 2023, arXiv 2208.02789)."""

import dataclasses
import json

import numpy as np
import pytest
from helpers import assert_results_layout

import gflow
from gflow import io
from gflow.experiments import check_claims
from gflow.experiments import low_rotation as lr

#: every regime at toy sizes: the pipeline and its invariants, not the paper's numbers
TINY = dataclasses.replace(
    lr.Config(**lr.SMOKE), d=4, n=16, widths=(16, 32, 64), stop_loss=0.1, t1=300.0, n_save=6,
    margin_samples=500, ds=(4, 5, 6), sgd_widths=(2, 8), sgd_steps=64, nc_d=4, nc_ks=(2, 4),
    nc_ns=(2, 4), nc_t1=20.0, n_test=64, norm_widths=(8, 16), norm_ns=(8, 16), norm_t1=1e4)


@pytest.fixture(scope="module")
def near():
    return lr.run(dataclasses.replace(TINY, regime="near_init"))


@pytest.fixture(scope="module")
def sgd():
    return lr.run(dataclasses.replace(TINY, regime="scaling"))


@pytest.mark.slow  # the regimes one by one: test_near_init_*, test_scaling_*, test_single_*
def test_all_regimes_every_claim_gets_a_verdict(tmp_path):
    res = lr.run(TINY)
    assert check_claims(lr, res.summary) == []
    assert_results_layout(res, tmp_path / "layout")
    assert all("not run" not in c["why"] for c in res.summary["claims"].values())
    io.write_results(tmp_path, config={}, summary=res.summary, dataset=res.dataset)
    _, _, ds2 = io.read_results(tmp_path)
    assert set(lr.figures(ds2, TINY)) == {"near_init", "scaling", "neural_collapse", "norm_only"}
    # one group per part, each on its own grids, no prefixes
    assert list(ds2.children) == ["near_init", "scaling", "neural_collapse", "norm_only"]
    # the figures' laws, recomputed from the parts read back, are those of the summary
    n_law, w_law = lr.scaling_laws(ds2["scaling"], TINY)
    assert list(n_law.y) == pytest.approx(res.summary["samples_y"], nan_ok=True)
    assert list(w_law.y) == pytest.approx(res.summary["width_y"], nan_ok=True)
    assert list(lr.nc_law(ds2["neural_collapse"], TINY).y) == pytest.approx(
        res.summary["nc_samples_y"], nan_ok=True)


def test_near_init_matches_the_dataset_and_the_theory(near):
    s, ds = near.summary, near.dataset["near_init"]
    assert check_claims(lr, s) == []
    json.dumps(s)
    # exact population error: the test set is the whole cube, each point once
    assert ds.sizes["test_sample"] == 2**TINY.d if "test_sample" in ds.sizes else True
    # both margins of the population, the pointwise one at most the L2 relaxation
    assert 0 < s["near_init_gamma_pw"] <= s["near_init_gamma_l2"] + 1e-12
    # movement against gamma sqrt m is movement / sqrt m over gamma, as the dataset holds it
    np.testing.assert_allclose(ds["movement_over_radius"],
                               ds["movement_over_sqrt_m"] / s["near_init_gamma_pw"])
    # the stop criterion: a run that stopped has its last loss at or below stop_loss
    stopped = np.asarray(ds["status"]) == "stop_loss"
    assert stopped.any()
    # (the saves end before the stop; the stop point's observables are kept beside them)
    at_stop = ds["at_stop_loss"].values
    np.testing.assert_allclose(at_stop[stopped], TINY.stop_loss, rtol=1e-4)  # float32 loss
    # the movement law is fitted to the per-seed final movements over the widths
    assert s["near_init_movement_x"] == list(TINY.widths)
    assert s["claims"]["near_init_error"]["verdict"] in ("holds", "does not hold")


def test_scaling_runs_online_sgd_with_fresh_samples(sgd):
    ds = sgd.dataset["scaling"]
    # one sample per step: the time axis is steps x lr and ends at sgd_steps
    assert float(ds["time"].max()) == pytest.approx(TINY.sgd_steps * TINY.sgd_lr)
    # the population margin falls with d (gamma ~ 1/d for 2-sparse parity)
    g = np.asarray(sgd.summary["scaling_gamma_pw"])
    assert np.all(np.diff(g) < 0)
    for key in ("samples_exponent", "samples_ci", "width_exponent", "verdict_samples_vs_1"):
        assert key in sgd.summary
    assert sgd.summary["claims"]["samples_vs_margin"]["verdict"] in gflow.experiments.VERDICTS


def test_figures_from_disk(near, tmp_path):
    ds2 = assert_results_layout(near, tmp_path)
    assert set(lr.figures(ds2, TINY)) == {"near_init"}


def test_single_regime_marks_the_others_not_run(tmp_path):
    res = lr.run(dataclasses.replace(TINY, regime="norm_only"))
    assert_results_layout(res, tmp_path)
    claims = res.summary["claims"]
    assert check_claims(lr, res.summary) == []
    assert claims["norm_only_max_margin"]["verdict"] in ("holds", "does not hold", "inconclusive")
    assert "not run" in claims["near_init_error"]["why"]
    assert "near_init_gamma_pw" not in res.summary
    assert set(lr.figures(res.dataset, TINY)) == {"norm_only"}
    # the LP value is the global maximum over (r, a) for the fixed directions: the flow's
    # ratio cannot exceed 1 (float32 margins: 1e-4 slack)
    # NaN only where the fixed features cannot separate the set (no LP maximum)
    no = res.dataset["norm_only"]
    ratio, lp = no["ratio"].isel(time=-1), no["max_margin"]
    assert float(ratio.max()) <= 1.0 + 1e-4
    np.testing.assert_array_equal(np.isnan(ratio.values), np.isnan(lp.values))


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="regime"):
        lr.Config(regime="nope")
    with pytest.raises(ValueError, match="ds"):
        lr.Config(ds=(4, 14))
    with pytest.raises(ValueError, match="nc_ks"):
        lr.Config(nc_d=4, nc_ks=(2, 8))


def test_presets_fill_only_defaults():
    full = lr.Config(preset="full", sgd_seeds=3).with_preset(lr.FULL)
    assert full.sgd_seeds == 3 and full.sgd_steps == lr.FULL["sgd_steps"]
    assert set(lr.QUICK) <= set(lr.FULL)  # full is at least the quick level's study


def test_last_finite():
    # the experiment reads each member's last reached save with Trajectory.final: members
    # that stopped after two saves, before any, and one that completed
    v = np.array([[1.0, 2.0, np.nan], [np.nan, np.nan, np.nan], [1.0, 2.0, 3.0]])
    tr = gflow.Trajectory(times=np.array([0.0, 1.0, 2.0]), observables={"m": v}, params0=None,
                          params_final=None, stats={}, status=["stop_loss", "diverged",
                                                               "completed"],
                          t_stop=[1.0, -1.0, 2.0], batch_dims=("member",))
    np.testing.assert_array_equal(tr.final("m"), [2.0, np.nan, 3.0])

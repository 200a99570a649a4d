"""Tests of the coupled_init experiment (setting 000) and its helpers."""

import json

import numpy as np
import pytest
from helpers import assert_results_layout

from gflow import experiments, io, stats
from gflow.experiments import coupled_init as ci


def test_width_needed_hand_cases():
    widths = (2, 4, 8)
    # (seeds=2, widths=3): seed 0 succeeds from 4, seed 1 from 8 -> all seeds at 8
    succ = np.array([[0, 1, 1], [0, 0, 1]])
    assert stats.all_succeed(succ, widths) == 8
    assert np.isnan(stats.all_succeed(np.zeros((2, 3)), widths))
    # batched over a leading axis
    both = np.stack([succ, np.ones((2, 3))])
    np.testing.assert_array_equal(stats.all_succeed(both, widths), [8, 2])


def test_loglog_slope_hand_cases():
    x = np.array([1.0, 2.0, 4.0])
    assert stats.loglog_slope(x, 3 * x**2) == pytest.approx(2.0)
    assert stats.loglog_slope(x, [5.0, 5.0, 5.0]) == pytest.approx(0.0)
    # NaN points are dropped; fewer than two points -> NaN
    assert stats.loglog_slope(x, [1.0, np.nan, 16.0]) == pytest.approx(2.0)
    assert np.isnan(stats.loglog_slope(x, [1.0, np.nan, np.nan]))


def _tiny():
    import jax

    import gflow

    X, y = gflow.data.margin_data(jax.random.key(0), 8, 3, 1.0)
    return ci.Config(seeds=2, widths=(2, 16)), gflow.Dataset(X, y)


def _sweep(cfg, data):
    import jax

    return ci.width_sweep(cfg, [data], cfg.widths, loss="logistic", lrs=[30.0], t1s=[3e4],
                          target=0.05, key=jax.random.key(1))


def test_width_sweep_small():
    # the sweep core on one tiny data set: paired and independent, padded widths
    cfg, data = _tiny()
    out = {k: v[0] for k, v in _sweep(cfg, data).items()}  # the only data set
    assert out["success"].shape == (2, 2, 2)
    assert np.all((out["flips"] >= 0) & (out["flips"] <= 1))
    # a run that reached the target stopped there; others ran to t1
    ok = out["success"]
    assert np.all(out["final_loss"][ok] <= 0.05 * (1 + 1e-6))
    # a failure either ran to t1 (budget-bound) or stopped at a plateau before it
    assert np.all(out["t_stop"][out["budget"]] == pytest.approx(3e4))
    assert np.all(out["t_stop"][~ok & ~out["budget"]] < 3e4)
    assert not np.any(ok & out["budget"])
    assert ok[:, :, -1].all()  # width 16 fits 8 points


def _loop(cfg, data, *, loss, lr, t1, target, key):
    """What the experiment computed before it used gflow.sweep: one gflow.simulate per
    (init, seed, width), the width embedded in the largest by ntk.pad_width."""
    import jax
    import jax.numpy as jnp

    import gflow
    from gflow import ntk

    M, shape = max(cfg.widths), (len(ci.INITS), cfg.seeds, len(cfg.widths))
    out = {k: np.full(shape, np.nan) for k in ("success", "t_stop", "flips", "final_loss")}
    for i, iname in enumerate(ci.INITS):
        for s in range(cfg.seeds):
            for j, m in enumerate(cfg.widths):
                net = gflow.TwoLayer(m, "relu", "ntk", bias=False, train_outer=False)
                init = gflow.init.paired if iname == "paired" else gflow.init.gaussian
                p0 = init(jax.random.fold_in(key, s), net, data.d)
                tr = gflow.simulate(*ntk.pad_width(net, p0, M), data, loss=loss,
                                    dynamics=gflow.GD(lr), t1=t1, save=gflow.LinTimes(2),
                                    observe=("loss",), stop_loss=target,
                                    stop_grad=cfg.stop_grad, throw=False)
                out["success"][i, s, j] = float(tr.status == "stop_loss")
                out["t_stop"][i, s, j] = float(tr.t_stop)
                out["final_loss"][i, s, j] = float(gflow.Objective(
                    ntk.pad_width(net, p0, M)[0], loss, data.X, data.y).loss(tr.params_final))
                out["flips"][i, s, j] = float(ntk.activation_flips(
                    p0.W, jnp.asarray(tr.params_final.W)[:m], data.X))
    return out


def test_width_sweep_equals_the_loop_of_simulate():
    # the ensemble (one vmapped GD per data set) against one simulate per run. Not the same
    # compiled program (vmapped reductions may add in another order), so not bitwise by
    # construction: a GD step may differ by a few float32 ulps (1.2e-7), and ~1000 steps of
    # this flow (the loss decreasing, no instability at lr = 30) keep that far below 1e-5
    # relative (measured here: equal). A stop step moves only if the loss crossed the target
    # within that, so t_stop agrees to one step (lr = 30) and success exactly.
    import jax

    cfg, data = _tiny()
    got = {k: v[0] for k, v in _sweep(cfg, data).items()}
    ref = _loop(cfg, data, loss="logistic", lr=30.0, t1=3e4, target=0.05, key=jax.random.key(1))
    np.testing.assert_array_equal(got["success"], ref["success"])
    assert 0 < ref["success"].sum() < ref["success"].size  # both outcomes occur
    np.testing.assert_allclose(got["t_stop"], ref["t_stop"], rtol=0, atol=30.0)
    np.testing.assert_allclose(got["final_loss"], ref["final_loss"], rtol=1e-5)
    # flips count sign changes of w.x: exact where no w.x sits within rounding of 0
    np.testing.assert_allclose(got["flips"], ref["flips"], atol=1 / (8 * 2) + 1e-9)


def _synthetic(alpha, budget_at=None):
    """Success (points, seeds, grid) of thresholds 2 x^alpha, jittered per seed by a factor
    exp(0.1 z); with ``budget_at``, the failures at that point are budget-bound."""
    x = np.array([1.0, 1.9, 4.3, 7.7, 16.5])
    grid = 2.0 ** (np.arange(24) / 2)
    z = np.random.default_rng(0).standard_normal((5, 16))
    thr = 2 * x[:, None] ** alpha * np.exp(0.1 * z)
    succ = grid[None, None, :] >= thr[:, :, None]
    budget = np.zeros_like(succ)
    if budget_at is not None:
        budget[budget_at] = ~succ[budget_at]
    return x, succ, budget, grid


def test_bound_verdicts_on_synthetic_laws():
    # thresholds 2 x^1 over 1.2 decades, 16 seeds: the 90% interval of the exponent is narrow
    # near 1 (measured [1.01, 1.13]: grid step sqrt 2, 10% jitter), so a bound of exponent 2
    # is met, one of 0.5 is exceeded, and the estimate itself is inside the interval
    x, succ, _, grid = _synthetic(1.0)
    law = stats.threshold_law(x, succ, grid, confidence=0.9)
    assert 0.8 < law.lo <= law.exponent <= law.hi < 1.3, (law.lo, law.hi)
    assert stats.bound_verdict(law, 2.0)["verdict"] == "consistent with the bound"
    assert stats.bound_verdict(law, 0.5)["verdict"] == "exceeds the bound"
    assert stats.bound_verdict(law, law.exponent)["verdict"] == "inconclusive"
    # a budget-bound point makes any verdict inconclusive, and is reported as such
    x, succ, budget, grid = _synthetic(1.0, budget_at=4)
    law = stats.threshold_law(x, succ, grid, budget=budget, confidence=0.9)
    v = stats.bound_verdict(law, 2.0)
    assert v["verdict"] == "inconclusive" and "budget-bound" in v["why"]
    keys = stats.summary_keys("t", law, 2.0)
    assert keys["width_at_t_censored"]["16.5"] == "budget"
    assert keys["width_exponent_t_points"] == 4
    with pytest.raises(ValueError, match="bound"):
        stats.bound_verdict(law, float("nan"))


def test_preset_full_changes_only_defaults():
    full = ci.with_preset(ci.Config(preset="full", seeds=20))
    assert full.seeds == 20  # set explicitly: kept
    assert full.angles == ci.FULL["angles"] and full.n_widths == ci.FULL["n_widths"]
    assert ci.with_preset(ci.Config()) == ci.Config()
    with pytest.raises(ValueError, match="preset"):
        ci.Config(preset="huge")


@pytest.mark.slow
def test_small_run_summary_and_figures(tmp_path):
    cfg = ci.Config(seeds=2, widths=(2, 4, 16), angles=(1.0, 0.5, 0.25), ns=(4, 8, 16),
                    n_widths=(2, 4, 16), gamma_d=3, n_d=5, margin_samples=2000)
    res = ci.run(cfg)
    s = res.summary
    assert s["n_seeds"] == 2
    assert not experiments.check_claims(ci, s)
    for tag in ("gamma_pw_paired_p50", "gamma_l2_independent_p90", "n_paired_p50",
                "n_over_lambda_independent_p90"):
        assert len(s[f"width_exponent_{tag}_ci"]) == 2
        assert s[f"verdict_{tag}"]["verdict"] in stats.VERDICTS
        assert s[f"verdict_{tag}_within_T"]["verdict"] in stats.VERDICTS
        assert set(s[f"width_at_{tag}_censored"].values()) <= {"none", "above", "below",
                                                                "budget"}
    # paired init (each neuron twice with opposite a): f = 0 in exact arithmetic; in float32
    # the sum over pairs is 0 up to (m - 1) eps sum_j |t_j| (0.0 where XLA adds the pairs
    # symmetrically)
    assert 0.0 <= s["init_output_max_abs_paired"] < 1e-4
    assert s["init_output_max_abs_independent"] > 0.1
    ds = res.dataset
    assert list(ds.children) == ["margin", "n"]  # one group per sweep
    margin, nsw = ds["margin"], ds["n"]
    assert margin["success"].dims == ("angle", "init", "seed", "width")
    assert margin["success"].shape == (3, 2, 2, 3)
    # margins decrease with the pair angle; the pointwise margin is below its L2 relaxation
    # (up to its sampling error)
    g, pw = margin["gamma_l2"].values, margin["gamma_pw"].values
    assert g[0] > g[1] > g[2] > 0 and np.all(pw < g + 0.02)
    # a run that reached the target stopped there; budget-bound runs failed
    ok = nsw["success"].values == 1.0
    assert nsw.attrs["target_loss"] == s["n_target_loss"]
    assert np.all(nsw["final_loss"].values[ok] <= s["n_target_loss"] * (1 + 1e-6))
    assert not np.any(ok & (nsw["budget"].values == 1.0))
    assert np.all((nsw["flips"].values >= 0) & (nsw["flips"].values <= 1))
    assert_results_layout(res, tmp_path / "layout")
    # the results folder round trip: figures are drawn from the dataset read back from disk
    io.write_results(tmp_path, config={}, summary=s, dataset=ds)
    json.loads((tmp_path / "summary.json").read_text())
    _, _, ds2 = io.read_results(tmp_path)
    figs = ci.figures(ds2, cfg)
    assert set(figs) == {"success_gamma", "width_vs_gamma", "success_n", "width_vs_n"}


def test_bad_config():
    with pytest.raises(ValueError, match="even"):
        ci.run(ci.Config(widths=(3, 4)))

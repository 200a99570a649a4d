"""The edge-of-stability experiment and its measures: settings are checked, the measures of
:mod:`gflow.edge` and :func:`gflow.stats.median_interval` against series whose answers are
known, and a tiny run whose summary agrees with its own dataset."""

import equinox as eqx
import jax
import numpy as np
import pytest
from helpers import assert_results_layout

import gflow
from gflow import edge, experiments, stats
from gflow.experiments import edge_of_stability as E


@pytest.mark.parametrize("kw, words", [
    (dict(band=1.5), "band=1.5: must be > 0 and < 1"),
    (dict(avg_steps=400), "avg_steps=400: must be >= 1 and <= steps=300"),
    (dict(activation="gelu"), "must be one of"),
    (dict(lrs=(0.0,)), "lrs=(0.0,): each value must be > 0"),
    (dict(snapshots=0), "snapshots=0: must be >= 1"),
    (dict(loss="exponential"), "must be one of"),
    (dict(lrs=(3.0, 3.0)), "the step sizes must differ"),
])
def test_bad_settings(kw, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        E.Config(**kw)


def test_full_preset_fills_defaults_only():
    full = E.Config(preset="full", seeds=2).with_preset(E.FULL, "full")
    assert full.seeds == 2 and full.steps == E.FULL["steps"] and full.lrs == E.FULL["lrs"]
    assert E.Config().with_preset(E.FULL, "full") == E.Config()


def test_edge_measures_on_known_series():
    """Run 0 crosses 2/lr = 1 at step 3 and then alternates 1.05, 0.8 (half the steps within
    10 %), its loss rises at 2 of the 5 steps after; run 1 never crosses (NaN measures)."""
    s = np.array([[0.5, 0.7, 0.9, 1.05, 0.8, 1.05, 0.8, 1.05, 0.8],
                  [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]])
    L = np.array([[9, 8, 7, 6, 6.5, 5, 5.5, 4, 3.0], np.linspace(1, 0.1, 9)])
    m = edge.edge_measures(s, L, lr=2.0, band=0.1)
    assert m["crossed"].tolist() == [True, False] and m["cross_step"].tolist() == [3, -1]
    assert m["ratio_median"][0] == pytest.approx(0.925)  # 3 of 6 at 1.05, 3 at 0.8
    assert m["in_band"][0] == pytest.approx(0.5)
    assert m["loss_rises"][0] == pytest.approx(2 / 5)
    assert m["loss_ratio"][0] == pytest.approx(3 / 6) and m["steps_after"][0] == 6
    assert all(np.isnan(m[k][1]) for k in ("ratio_median", "in_band", "loss_rises"))
    assert edge.first_crossing([0.1, np.nan, 2.0], 1.0) == 2  # NaN saves never count
    with pytest.raises(ValueError, match="band"):
        edge.edge_measures(s, L, 2.0, band=0.0)
    with pytest.raises(ValueError, match="same"):
        edge.edge_measures(s, L[:, :5], 2.0)


def test_running_mean_and_distance():
    x = np.random.default_rng(0).normal(size=(2, 30))
    w = 5
    mid = np.stack([np.convolve(r, np.ones(w) / w, mode="valid") for r in x])
    np.testing.assert_allclose(edge.running_mean(x, w)[:, 2:-2], mid, atol=1e-12)
    assert edge.running_mean(x, w)[0, 0] == pytest.approx(x[0, :3].mean())  # shorter at ends
    np.testing.assert_array_equal(edge.running_mean(x, 1), x)
    with pytest.raises(ValueError, match="window"):
        edge.running_mean(x, 0)
    a = {"u": np.full((2, 3, 4), 2.0), "v": np.zeros((2, 3))}
    b = {"u": np.zeros((2, 3, 4)), "v": np.full((2, 3), 3.0)}
    np.testing.assert_allclose(edge.param_distance(a, b), np.full((2, 3), 5.0))  # 4 * 2^2 + 3^2
    np.testing.assert_allclose(edge.relative_gap([1.5, 0.5], [1.0, 1.0]), [0.5, 0.5])


def test_median_interval_and_side_verdict():
    v = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    med, lo, hi = stats.median_interval(v)
    assert med == 3.0 and 1.0 <= lo <= med <= hi <= 100.0
    assert stats.median_interval([np.nan, 2.0]) == [2.0, 2.0, 2.0]  # NaN seeds left out
    assert all(np.isnan(stats.median_interval([np.nan])))
    assert stats.side_verdict([2.0, 1.5, 3.0], 1.0) == "holds"
    assert stats.side_verdict([0.5, 0.2, 0.8], 1.0) == "does not hold"
    assert stats.side_verdict([1.1, 0.9, 1.3], 1.0) == "inconclusive"
    assert stats.side_verdict([0.5, 0.2, 0.8], 1.0, above=False) == "holds"
    assert stats.side_verdict([np.nan] * 3, 1.0) == "inconclusive"


TINY = dict(E.REPORT["smoke"][0][1])  # the size gflow report --smoke runs in CI


@pytest.fixture(scope="module")
def tiny():
    cfg = E.Config(**TINY)
    return cfg, E.run(cfg)


# the module fixture's run: 34-60 s on the shared 2-core machine depending on its load
# (GD, GF, the central flow, its predicted loss and SLQ each compile once)
def test_tiny_run_summary_matches_its_dataset(tiny, tmp_path):
    cfg, res = tiny
    s, tree = res.summary, res.dataset
    assert not experiments.check_claims(E, s)
    assert list(tree.children) == ["runs", "density"]
    ds = tree["runs"]  # GD, GF and the central flow at GD's steps, t = step x lr
    np.testing.assert_array_equal(ds["time"].values[0], cfg.lrs[0] * np.arange(41))
    assert ds["gd_sharpness"].shape == (1, 2, 41) and tree["density"].sizes["snapshot"] == 2
    lr = cfg.lrs[0]
    m = edge.edge_measures(ds["gd_sharpness"].values[0], ds["gd_loss"].values[0], lr,
                           band=cfg.band)
    assert s["gd_crossed_seeds_lr4"] == int(m["crossed"].sum())
    assert s["gd_ratio_median_lr4"] == stats.median_interval(m["ratio_median"])
    ratio = ds["gf_sharpness"].values[-1, :, -1] / ds["gf_sharpness"].values[-1, :, 0]
    assert s["gf_sharpness_ratio"] == stats.median_interval(ratio)
    for k in ("gd_loss", "gf_loss", "cf_loss", "cf_central_loss", "dist_gd_cf"):
        assert np.all(np.isfinite(ds[k].values)), k
    # the central flow never lets the sharpness run past the edge (Euler at a quarter step
    # holds it to a few 1e-3 at these sizes); its predicted loss is at least its loss
    assert np.nanmax(ds["cf_sharpness"].values) * lr / 2 < 1.02
    assert np.all(ds["cf_central_loss"].values >= ds["cf_loss"].values * (1 - 1e-5))
    figs = E.figures(assert_results_layout(res, tmp_path), cfg)
    assert set(figs) == {"sharpness_and_loss", "hessian_density"}


@pytest.mark.slow  # ~10 s: compiles predicted_loss on its own; the tiny run's test checks
# central_loss_along's values are finite and at least the flow's loss
def test_central_loss_along_matches_the_flow(tiny):
    """edge.central_loss_along (every lr one program) against CentralFlow.predicted_loss at
    GD's first and last saved parameters of the second seed, to float32 rounding."""
    cfg, _ = tiny
    net, data, P = E._problem(cfg)
    lr, kw = cfg.lrs[0], dict(iters=cfg.iters, edge_rate=float(cfg.central_substeps))
    p1 = jax.tree.map(lambda x: x[1], P)
    tr = gflow.simulate(net, p1, gflow.Dataset(data.X[1], data.y[1]), dynamics=gflow.GD(lr),
                        t1=20 * lr, save=np.array([0.0, 20 * lr]), save_params=True)
    along = edge.central_loss_along(lr, net, cfg.loss, data.X[1:], data.y[1:],
                                    jax.tree.map(lambda x: x[None], tr.params), **kw)
    obj = gflow.Objective(net, cfg.loss, data.X[1], data.y[1])
    predicted = eqx.filter_jit(gflow.CentralFlow(lr, **kw).predicted_loss)
    want = [float(predicted(obj, jax.tree.map(lambda x, j=j: x[j], tr.params)))
            for j in range(2)]
    np.testing.assert_allclose(along[0], want, rtol=1e-5)

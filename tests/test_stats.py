"""Tests of gflow.stats: intervals against closed forms, coverage of the exponent's interval on
synthetic Bernoulli sweeps with a known threshold law, and censoring carried through."""

import json
import math

import numpy as np
import pytest
import scipy.optimize
import scipy.stats

from gflow import stats
from gflow.stats.crossing import isotonic

GRID = np.geomspace(1, 4096, 16)  # widths; log step ln(4096)/15 = 0.55
XS = np.array([1.0, 2.5, 6.0, 15.0, 40.0])  # spans 1.6 decades
ALPHA, C = 1.5, 2.0


def sweep(rng, *, k=3.0, seeds=16, xs=XS, grid=GRID, alpha=ALPHA):
    """Synthetic sweep: P(success | m, x) = logistic(k (log m - log(C x^alpha))); the crossing
    at level q is log m_q = log(C x^alpha) + logit(q) / k, so every level has exponent alpha."""
    logit = k * (np.log(grid)[None, :] - np.log(C * np.asarray(xs)[:, None] ** alpha))
    p = 1.0 / (1.0 + np.exp(-logit))
    return rng.random((len(xs), seeds, len(grid))) < p[:, None, :]


# Coverage over R independent repetitions: the count of intervals containing alpha is
# Binomial(R, coverage); |observed - nominal| <= 3 sd of that binomial fails with probability
# ~0.3 % if the coverage is exact (the data are seeded, so the test is deterministic).
R, NOMINAL = 200, 0.9
BAND = 3 * math.sqrt(NOMINAL * (1 - NOMINAL) / R)  # 0.064


@pytest.mark.parametrize("level", [0.5, 0.9])
def test_threshold_law_interval_covers_alpha_at_nominal_rate(level):
    rng = np.random.default_rng(123)
    hits, estimates = 0, []
    for rep in range(R):
        law = stats.threshold_law(XS, sweep(rng), GRID, level=level, confidence=NOMINAL,
                                  n_resamples=400, seed=rep)
        assert law.n_points == len(XS) and law.n_seeds == 16
        hits += law.lo <= ALPHA <= law.hi
        estimates.append(law.exponent)
    assert abs(hits / R - NOMINAL) <= BAND, hits / R
    # and the estimator is unbiased to within its Monte Carlo error over repetitions
    assert abs(np.mean(estimates) - ALPHA) < 4 * np.std(estimates) / math.sqrt(R)


def test_sharp_transition_is_grid_limited_and_conservative():
    """A transition sharper than the grid step leaves the crossing known only to a grid cell:
    the interval becomes that cell (interval censoring), so coverage is at least nominal."""
    rng = np.random.default_rng(7)
    hits, limited = 0, 0
    for rep in range(R // 2):
        law = stats.threshold_law(XS, sweep(rng, k=30.0), GRID, confidence=NOMINAL,
                                  n_resamples=400, seed=rep)
        hits += law.lo <= ALPHA <= law.hi
        limited += sum(c.grid_limited for c in law.points)
    assert hits / (R // 2) >= NOMINAL - BAND
    assert limited > 0
    one = stats.crossing(np.repeat([[0, 0, 0, 1, 1]], 8, axis=0), [1, 2, 4, 8, 16])
    assert one.grid_limited and (one.lo, one.hi) == pytest.approx((4.0, 8.0))
    assert one.estimate == pytest.approx(math.sqrt(32))  # midpoint in log of the cell
    # level 1: the fit reaches 1 exactly at a grid value; the crossing lies in the cell below
    full = stats.crossing(np.repeat([[0, 0, 1, 1, 1]], 8, axis=0), [1, 2, 4, 8, 16], level=1.0)
    assert full.estimate == pytest.approx(4.0) and (full.lo, full.hi) == pytest.approx((2, 4))


def test_power_law_of_medians_covers_alpha():
    rng = np.random.default_rng(5)
    hits = 0
    for rep in range(R):
        logv = math.log(C) + ALPHA * np.log(XS)[:, None] + 0.5 * rng.standard_normal((5, 15))
        law = stats.power_law(XS, np.exp(logv), confidence=NOMINAL, n_resamples=400, seed=rep)
        hits += law.lo <= ALPHA <= law.hi
    assert abs(hits / R - NOMINAL) <= BAND, hits / R


def test_isotonic_batch_matches_scipy():
    rng = np.random.default_rng(0)
    for _ in range(100):
        f = rng.integers(0, 5, size=rng.integers(2, 12)) / 4
        np.testing.assert_allclose(isotonic(f[None])[0],
                                   scipy.optimize.isotonic_regression(f).x, atol=1e-12)


@pytest.mark.parametrize("n", [1, 5, 40])
def test_intervals_at_edges_match_closed_forms(n):
    a = 0.05
    z = scipy.stats.norm.ppf(1 - a / 2)
    lo, hi = stats.proportion_interval([0, n], n, method="clopper-pearson")
    # Clopper-Pearson at 0/n: [0, 1 - (a/2)^(1/n)]; at n/n: [(a/2)^(1/n), 1]
    np.testing.assert_allclose(lo, [0.0, (a / 2) ** (1 / n)], rtol=1e-10)
    np.testing.assert_allclose(hi, [1 - (a / 2) ** (1 / n), 1.0], rtol=1e-10)
    lo, hi = stats.proportion_interval([0, n], n, method="wilson")
    # Wilson at 0/n: [0, z^2/(n+z^2)]; at n/n: [n/(n+z^2), 1]
    np.testing.assert_allclose(lo, [0.0, n / (n + z**2)], rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(hi, [z**2 / (n + z**2), 1.0], rtol=1e-10)


def test_wilson_interior_matches_formula():
    k, n, z = 7, 20, scipy.stats.norm.ppf(0.975)
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    lo, hi = stats.proportion_interval(k, n)
    assert (float(lo), float(hi)) == pytest.approx((centre - half, centre + half), rel=1e-10)


def test_proportions_curve():
    s = np.array([[0, 0, 1, 1], [0, 1, 0, 1], [0, 0, 1, 1]], bool)
    pr = stats.proportions(s, [2, 4, 8, 16], method="clopper-pearson")
    assert pr.successes == (0, 1, 2, 3) and pr.trials == (3, 3, 3, 3)
    assert pr.p == pytest.approx((0, 1 / 3, 2 / 3, 1))
    assert all(lo <= p <= hi for lo, p, hi in zip(pr.lo, pr.p, pr.hi, strict=True))
    json.dumps(pr.to_dict())


def test_crossing_is_monotone_fit_not_raw_frequency():
    # raw frequencies 0, 1/2, 1/4, 3/4, 1 are not monotone; the isotonic fit pools the middle
    # two to 3/8, so 50 % is crossed between 8 (3/8) and 16 (3/4): log-linear at 1/3 of the way
    s = np.array([[0, 1, 0, 1, 1], [0, 0, 1, 1, 1], [0, 1, 0, 0, 1], [0, 0, 0, 1, 1]], bool)
    c = stats.crossing(s, [2, 4, 8, 16, 32], n_resamples=500)
    assert c.censored == "none" and c.resolved
    assert c.estimate == pytest.approx(8 * 2 ** (1 / 3))
    assert c.lo <= c.estimate <= c.hi


def test_censored_points_are_carried_not_dropped():
    rng = np.random.default_rng(1)
    s = sweep(rng)
    s[-1] = False  # largest x: nothing on the grid succeeds -> lower bound
    law = stats.threshold_law(XS, s, GRID, n_resamples=500)
    assert law.censored[-1] == "above" and law.points[-1].censored == "above"
    assert law.y[-1] == GRID[-1] and math.isnan(law.points[-1].estimate)
    assert len(law.x) == len(XS) and law.n_points == len(XS) - 1
    d = law.to_dict()
    assert d["censored"][-1] == "above" and len(d["points"]) == len(XS)
    assert d["resolved"] is False and d["flags"] == list(law.flags) and d["n_points"] == 4
    json.dumps(d)  # JSON-safe: NaN -> None, inf -> "inf"
    # only two resolved points left: flagged, and a lower bound above the fitted line is flagged
    s2 = s.copy()
    s2[2:] = False
    law2 = stats.threshold_law(XS, s2, GRID, n_resamples=500)
    assert law2.n_points == 2 and "fewer_than_3_points" in law2.flags
    # the fit predicts ~2 x^1.5 < 4096 where the bounds say >= 4096
    assert "lower_bound_above_fit" in law2.flags and "lower_bound_above_fit" in law.flags
    assert law2.censored == ("none", "none", "above", "above", "above")
    # all succeed at the smallest grid value -> upper bound; here the fit, from points 1-4,
    # predicts 2 * 1^1.5 = 2 > 1 at x = 1: the upper bound contradicts it
    s3 = s.copy()
    s3[0] = True
    law3 = stats.threshold_law(XS, s3, GRID, n_resamples=500)
    assert law3.censored[0] == "below" and law3.y[0] == GRID[0]
    assert "upper_bound_below_fit" in law3.flags


def test_budget_binding_is_flagged_and_not_fitted():
    rng = np.random.default_rng(2)
    s = sweep(rng)
    budget = np.zeros_like(s)
    budget[1] = ~s[1]  # every failure at point 1 ran out of time
    law = stats.threshold_law(XS, s, GRID, budget=budget, n_resamples=500)
    p1 = law.points[1]
    assert p1.budget_binding and not p1.resolved
    assert p1.optimistic == 0.0  # had they succeeded, every run would: below the grid
    assert law.censored[1] == "budget" and law.n_points == len(XS) - 1
    # budget-bound failures far above the crossing do not move it: not binding
    b2 = np.zeros_like(s)
    b2[0, :, -1] = ~s[0, :, -1]
    assert not stats.threshold_law(XS, s, GRID, budget=b2, n_resamples=500).points[0].budget_binding
    with pytest.raises(ValueError, match="budget"):
        stats.threshold_law(XS, s, GRID, budget=np.ones_like(s), n_resamples=500)


def test_equal_widths_at_every_point_are_flagged():
    """Three margins that all give the same success pattern: the old estimator reported an
    exponent of ~0; here the thresholds lie within one grid step, which is flagged."""
    pattern = np.array([[0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]], bool)
    s = np.stack([pattern] * 3)
    law = stats.threshold_law([1.0, 3.0, 10.0], s, 2.0 ** np.arange(1, 7), candidates=(2, 8),
                              n_resamples=500)
    assert "y_range_under_grid_step" in law.flags and not law.resolved


def test_flags_short_x_range_and_candidates():
    rng = np.random.default_rng(3)
    xs = np.array([1.0, 1.5, 2.2, 3.3])
    law = stats.threshold_law(xs, sweep(rng, xs=xs, seeds=4), GRID, candidates=(1.0, 2.0),
                              n_resamples=500)
    assert "x_range_under_decade" in law.flags
    # 4 seeds: many resamples put some point off the grid; the interval says it is conditional
    assert "bootstrap_censored" in law.flags
    # 3 noisy points, 1 degree of freedom: the t interval holds both candidate laws
    wide = stats.loglog_fit([1.0, 10.0, 100.0], [1.0, 30.0, 2000.0], candidates=(1.0, 2.0))
    assert wide.lo < 1.0 and wide.hi > 2.0 and "interval_spans_candidates" in wide.flags
    assert "interval_spans_candidates" not in stats.loglog_fit(
        [1.0, 10.0, 100.0], [1.0, 90.0, 1e4], candidates=(1.0, 2.0)).flags


def test_loglog_fit_exact_points_and_t_interval():
    x = np.array([1.0, 10.0, 100.0, 1000.0])
    law = stats.loglog_fit(x, 3 * x**2)
    assert law.exponent == pytest.approx(2.0) and law.prefactor == pytest.approx(3.0)
    assert law.lo == pytest.approx(2.0) and law.hi == pytest.approx(2.0)
    y = 3 * x**2 * np.exp([0.1, -0.1, 0.05, 0.0])
    r = scipy.stats.linregress(np.log(x), np.log(y))
    law = stats.loglog_fit(x, y)
    t = scipy.stats.t.ppf(0.975, 2)
    assert (law.lo, law.hi) == pytest.approx((r.slope - t * r.stderr, r.slope + t * r.stderr))
    two = stats.loglog_fit(x[:2], y[:2])
    assert (two.lo, two.hi) == (-math.inf, math.inf) and "fewer_than_3_points" in two.flags
    cen = stats.loglog_fit(x, y, censored=[False, False, False, True])
    assert cen.n_points == 3 and cen.censored[-1] == "above"


def test_power_law_censored_median_is_a_lower_bound():
    v = np.array([[1.0, 1.2, 0.9], [4.0, 4.1, 3.9], [16.0, 10.0, 10.0]])
    cen = np.array([[0, 0, 0], [0, 0, 0], [0, 1, 1]], bool)  # two of three hit the budget 10
    law = stats.power_law([1.0, 2.0, 4.0], v, censored=cen, n_resamples=200)
    assert law.censored == ("none", "none", "above") and law.y[2] == pytest.approx(10.0)
    assert law.n_points == 2


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: stats.crossing(np.zeros((0, 3)), [1, 2, 3]), "no seeds"),
        (lambda: stats.crossing(np.zeros((2, 3)), [1, 2]), "grid has 2 values"),
        (lambda: stats.crossing(np.zeros((2, 3)), [1, 3, 2]), "strictly increasing"),
        (lambda: stats.crossing(np.zeros((2, 3)), [0, 1, 2]), "positive"),
        (lambda: stats.crossing(np.full((2, 3), 0.5), [1, 2, 3]), "0/1"),
        (lambda: stats.crossing(np.zeros((2, 3)), [1, 2, 3], level=0), "level"),
        (lambda: stats.crossing(np.zeros((2, 3)), [1, 2, 3], confidence=95), "confidence"),
        (lambda: stats.crossing(np.zeros((2, 3)), [1, 2, 3], n_resamples=10), "n_resamples"),
        (lambda: stats.threshold_law([1, 2], np.zeros((3, 2, 3)), [1, 2, 3]), "x has 2"),
        (lambda: stats.threshold_law([1, 2], np.zeros((2, 3)), [1, 2, 3]), "success must"),
        (lambda: stats.threshold_law([1, 2], np.zeros((2, 2, 3)), [1, 2, 3],
                                     candidates=("a",)), "candidates"),
        (lambda: stats.proportion_interval(3, 2), "0 <= k <= n"),
        (lambda: stats.proportion_interval(1, 2, method="jeffreys"), "method"),
        (lambda: stats.power_law([1, 2], [[1.0], [-1.0]]), "values must be finite"),
        (lambda: stats.loglog_fit([1, 2], [1.0, 2.0, 3.0]), "y must be"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_draw_marks_censored_points(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(4)
    s = sweep(rng)
    s[-1] = False
    law = stats.threshold_law(XS, s, GRID, n_resamples=300)
    fig, (ax1, ax2) = plt.subplots(1, 2)
    stats.draw(ax1, law, label="paired")
    stats.draw(ax2, stats.proportions(s[0], GRID))
    labels = [t.get_label() for t in ax1.get_lines()]
    assert "lower bound (censored)" in labels
    assert any(lab.startswith("paired: slope") for lab in labels)
    fig.savefig(tmp_path / "law.png")
    plt.close(fig)
    with pytest.raises(ValueError, match="PowerLaw or Proportions"):
        stats.draw(ax1, 3.0)


def test_law_keys_flatten_any_law_with_verdicts():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    grid = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0])
    succ = grid[None, None, :] >= (4.0 * x)[:, None, None]  # threshold 4 x: exponent 1
    law = stats.threshold_law(x, np.repeat(succ, 3, axis=1), grid)
    keys = stats.law_keys("n", law, (1, 2))
    assert keys["n_exponent"] == pytest.approx(1.0, abs=0.2)
    assert keys["n_ci"] == [law.lo, law.hi] and keys["n_x"] == list(law.x)
    assert set(keys) >= {"n_flags", "n_y", "n_censored", "verdict_n_vs_1", "verdict_n_vs_2"}
    assert keys["verdict_n_vs_2"] == "{verdict}: {why}".format(**stats.bound_verdict(law, 2))
    json.dumps(keys)  # summary.json-ready

"""gflow.stats.trend_verdict and gflow.stats.paired_lead."""

import numpy as np
import pytest

from gflow import stats


def test_trend_verdict_reads_the_sign_of_the_exponent():
    x = np.array([1.0, 2, 4, 8, 16, 32])
    rng = np.random.default_rng(0)
    noise = np.exp(0.02 * rng.normal(size=(6, 8)))
    up = stats.power_law(x, (x**0.5)[:, None] * noise)
    down = stats.power_law(x, (x**-0.5)[:, None] * noise)
    flat = stats.power_law(x, np.exp(0.3 * rng.normal(size=(6, 8))))
    assert stats.trend_verdict(up, +1)["verdict"] == "holds"
    assert stats.trend_verdict(up, -1)["verdict"] == "does not hold"
    assert stats.trend_verdict(down, -1)["verdict"] == "holds"
    assert stats.trend_verdict(flat, +1)["verdict"] == "inconclusive"
    two = stats.power_law(x[:2], (x[:2] ** 0.5)[:, None] * noise[:2])  # too few points
    assert stats.trend_verdict(two, +1)["verdict"] == "inconclusive"
    with pytest.raises(ValueError, match="sign"):
        stats.trend_verdict(up, 0)


def test_paired_lead():
    # 5 seeds x 4 times: A ahead in every seed at times 0-1, in 4 of 5 at 2, behind at 3
    a = np.array([[0, 0, 0, 2]] * 5, float)
    b = np.ones((5, 4))
    a[0, 2] = 2.0
    out = stats.paired_lead(a, b)
    np.testing.assert_array_equal(out["k"], [5, 5, 4, 0])
    assert out["ahead"].tolist() == [True, True, False, False]  # Wilson lo(5/5) = 0.57
    assert out["behind"].tolist() == [False, False, False, True]
    assert out["lead_until"] == 1
    lo, hi = stats.proportion_interval(4, 5)
    assert out["lo"][2] == pytest.approx(lo) and out["hi"][2] == pytest.approx(hi)
    a[:, 0] = np.nan  # not measured: n = 0, no lead
    out = stats.paired_lead(a, b)
    assert out["n"][0] == 0 and out["lead_until"] == -1
    with pytest.raises(ValueError, match="paired"):
        stats.paired_lead(a, b[:, :2])


def test_trend_keys_and_lead_text():
    x = np.array([1.0, 2, 4, 8])
    vals = (x**-0.5)[:, None] * np.exp(0.01 * np.random.default_rng(1).normal(size=(4, 5)))
    vals[0, 2] = -1.0  # a non-positive value: the point is listed, not fitted
    out = stats.trend_keys("gap", x, vals, -1)
    assert out["gap_points_dropped_nonpositive"] == [1.0]
    assert out["verdict_gap"]["verdict"] == "holds" and out["gap_exponent"] < 0
    few = stats.trend_keys("gap", x[:2], vals[:2], -1)
    assert few["verdict_gap"]["verdict"] == "inconclusive" and "gap_exponent" not in few
    a, b = np.zeros((5, 3)), np.ones((5, 3))
    a[:, 2] = 2.0
    text = stats.lead_text(stats.paired_lead(a, b), [10, 20, 30], what="A ahead of B")
    assert "at 2 of 3 saved steps, behind at 1" in text and "until step 20" in text

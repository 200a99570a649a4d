"""The continuous-limits experiment: settings are checked, and a tiny run measures the orders."""

import dataclasses

import numpy as np
import pytest
from helpers import assert_results_layout

from gflow import experiments
from gflow.experiments import continuous_limits as cl


@pytest.mark.parametrize("kw, words", [
    (dict(lrs=(0.1, 0.2)), "must fall and each divide t1"),
    (dict(lrs=(0.3,)), "must fall and each divide t1"),
    (dict(adam_a=10.0), "must be < 1"),
    (dict(dtype="float32"), "must be >= 1e-6 with dtype=float32"),
    (dict(orders=(4,)), "must be one of"),
])
def test_bad_settings(kw, words):
    with pytest.raises(ValueError, match=words):
        cl.Config(**kw)


def test_verdicts_in_words():
    from gflow import stats

    lr = np.array([0.2, 0.1, 0.05])
    good = stats.loglog_fit(lr, 3 * lr ** 2 * (1 + 0.01 * np.array([1, -1, 1])))
    assert cl._verdict(good, 2).startswith("consistent")
    assert cl._verdict(good, 1).startswith("does not hold")
    assert cl._verdict(None, 1).startswith("inconclusive")
    # an exact power law 2.05: its interval excludes 2, but within the slack of 0.1
    assert cl._verdict(stats.loglog_fit(lr, lr ** 2.05), 2).startswith("consistent")
    noisy = stats.loglog_fit(lr, [1e-3, 1e-4, 5e-4])
    assert cl._verdict(noisy, 1).startswith("inconclusive")
    # a difference within 3 standard errors is an upper bound, not a measurement
    law, unresolved = cl._law(lr, [1e-2, 1e-3, 1e-4], [1e-4, 1e-4, 1e-4])
    assert unresolved.tolist() == [False, False, True] and law.n_points == 2


@pytest.mark.slow  # ~60 s: every dynamics compiles
def test_tiny_run_measures_the_orders(tmp_path):
    cfg = dataclasses.replace(cl.Config(), lrs=(0.2, 0.1, 0.05), t1=0.4, paths=64,
                              orders=(1, 2))
    res = cl.run(cfg)
    s = res.summary
    assert not experiments.check_claims(cl, s)
    assert s["claims"]["gd_modified_order2"]["verdict"] == "holds"
    for order in (1, 2):
        lo_hi = s[f"gd_vs_modified_order{order}_slope"]
        assert abs(lo_hi[0] - order) < 0.15, lo_hi
        assert s[f"gd_vs_modified_order{order}_verdict"].startswith("consistent")
        assert len(s[f"sgd_vs_sme{order}_weak_error_se"]) == 3
    assert 0.5 < s["adam_vs_ode_slope"][0] < 1.5
    assert_results_layout(res, tmp_path)
    assert list(res.dataset.children) == ["modified_flows", "sme", "adam_flow"]
    figs = cl.figures(res.dataset, cfg)
    assert set(figs) == {"continuous_limits"}

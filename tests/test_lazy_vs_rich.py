"""The lazy-vs-rich experiment: settings are checked, the infinite-width kernel it compares
with is the expectation of the empirical NTK at each init, and a tiny run's summary agrees
with its dataset (at t = 0 all three predictions agree) and draws its figures."""

import jax
import numpy as np
import pytest
from helpers import assert_results_layout

import gflow
from gflow import experiments
from gflow.experiments import lazy_vs_rich as lr
from gflow.linearized import against_gradient_flow
from gflow.ntk import gram, relu_ntk

# the plain controller: it compiles in about half the time of the kink-aware solve (which
# tests/test_kinks.py covers, and `gflow report --smoke` runs through this experiment)
TINY = dict(n=8, n_test=4, d=3, widths=(8, 16), seeds=2, small_widths=(8,), t1=5.0,
            small_t1=20.0, saves=3, kinks=False)


@pytest.mark.parametrize("kw, words", [
    (dict(widths=(64,)), "at least 2"),
    (dict(widths=(128, 64)), "distinct and increasing"),
    (dict(small_widths=(64, 64)), "distinct and increasing"),
    (dict(widths=(63, 128)), "multiple of 2"),
    (dict(rtol=0.1), "<= 0.001"),
    (dict(preset="huge"), "one of"),
])
def test_bad_settings(kw, words):
    with pytest.raises(ValueError, match=words):
        lr.Config(**kw)


def test_full_preset_fills_defaults_only():
    cfg = lr.with_preset(lr.Config(preset="full", seeds=2))
    assert cfg.widths[-1] == 4096 and cfg.seeds == 2 and cfg.small_t1 == lr.FULL["small_t1"]


@pytest.mark.parametrize("init", lr.INITS)
def test_infinite_width_kernel_is_the_mean_empirical_ntk(x64, init):
    # E[K_0] = scale * relu_ntk(both) for every init (each NTK term is a mean over neurons).
    # Each term (a^2 x.x' 1{w.x>0}1{w.x'>0} + relu(w.x) relu(w.x'), unit x, standard scale)
    # has second moment <= 2 (1 + E relu(g)^4) = 5, so an entry of the width-m mean has
    # standard deviation <= sqrt(5 / m) (paired: m/2 independent neurons, twice that
    # variance); 5 of them at m = 8192 fail a kernel off by any factor of 2 or more.
    m, d = 8192, 3
    X = gflow.data.teacher(jax.random.key(0), 6, d).X
    net = gflow.TwoLayer(m)
    p0 = lr.init_params(init, jax.random.key(1), net, d, 1.0)
    scale = lr._kernel_scale(init, m, 1.0)
    K = np.asarray(gram(net, p0, X)) / scale
    K_inf = np.asarray(relu_ntk(X, layers="both"))
    sd = np.sqrt(5 / (m // 2 if init == "paired" else m))
    np.testing.assert_allclose(K, K_inf, atol=5 * sd)
    assert np.max(np.abs(np.diag(K_inf) - 1.0)) < 1e-12  # unit x: 1/2 + 1/2 on the diagonal


@pytest.fixture(scope="module")
def tiny():
    cfg = lr.Config(**TINY)
    return cfg, lr.run(cfg)


def test_tiny_run_summary_agrees_with_dataset(tiny, tmp_path):
    cfg, res = tiny
    s, tree = res.summary, res.dataset
    assert list(tree.children) == list(lr.INITS)  # one group per init, its own widths
    assert tree["small"]["width"].values.tolist() == sorted(cfg.small_widths)
    assert tree["small"]["time"].values[-1] == cfg.small_t1
    ds = lr.view(tree)
    assert not experiments.check_claims(lr, s)
    assert {c["verdict"] for c in s["claims"].values()} <= set(experiments.VERDICTS)
    # at t = 0 the three predictions are the same function: f_lin(theta_0) = f(theta_0), and
    # the kernel flows start from the net's own outputs
    f = {v: ds[v].isel(save=0).values for v in ("f_gf", "f_lin", "f_inf")}
    ran = np.isfinite(f["f_gf"])
    assert ran.any() and np.all(np.isfinite(f["f_lin"]) == ran)
    # (to rounding, float64: y + V V^T (f_0 - y) and a jvp along a zero tangent)
    for v in ("f_lin", "f_inf"):
        np.testing.assert_allclose(f[v][ran], f["f_gf"][ran], rtol=0, atol=1e-12)
    # paired init: f_0 = 0 exactly
    assert np.all(ds["f_gf"].sel(init="paired").isel(save=0).values[
        np.isfinite(ds["f_gf"].sel(init="paired").isel(save=0).values)] == 0)
    # the headline numbers are the dataset's medians over seeds
    for init in lr.INITS:
        g = lr.gaps(ds, "f_lin", "test").sel(init=init).values
        ok = np.isfinite(g).all(axis=1)
        assert s[f"widths_{init}"] == ds["width"].values[ok].tolist()
        np.testing.assert_allclose(s[f"gap_test_{init}"], np.median(g[ok], axis=1))
    for init in lr.LAZY:
        e, (lo, hi) = s[f"gap_test_{init}_exponent"], s[f"gap_test_{init}_exponent_ci"]
        assert lo <= e <= hi
        assert f"{e:.2f}" in s["claims"][f"gap_shrinks_{init}"]["measured"]
    assert ds["t"].sel(init="small").values[-1] == cfg.small_t1 and ds.attrs["kinks"] == 0
    assert np.all(ds["num_steps"].values[np.isfinite(ds["num_steps"].values)] >= 1)
    figs = lr.figures(assert_results_layout(res, tmp_path), cfg)
    assert set(figs) == {"gap_vs_width", "kernel_movement", "outputs"}


def test_rich_verdict_counts_runs(tiny):
    cfg, res = tiny
    ds = lr.view(res.dataset).copy(deep=True)
    # a small-init run whose loss did not halve is "not fitted", never evidence either way
    ds["loss"].loc[dict(init="small")] = 1.0
    v = lr.summarize(ds, cfg)["claims"]["rich_at_small_init"]
    assert v["verdict"] == "inconclusive" and "not fitted" in v["why"]
    ds["loss"].loc[dict(init="small", save=ds.sizes["save"] - 1)] = 0.1
    ds["movement"].loc[dict(init="small")] = 0.01
    v = lr.summarize(ds, cfg)["claims"]["rich_at_small_init"]
    assert v["verdict"] == "does not hold"


def test_against_gradient_flow_agrees_to_second_order_in_time(x64, tiny):
    """GF and its linearization have the same velocity at t = 0 (the NTK at init), so they
    part at O(t^2): doubling a small time quadruples the gap (to 10 %: the t^3 term and a
    1e-12 solve); the kernel flow with the empirical NTK is the linearization itself. (The
    sizes and options of the tiny run, so its compiled solve is reused.)"""
    cfg, _ = tiny
    ds = gflow.data.teacher(jax.random.key(5), cfg.n, cfg.d, cfg.teacher_width,
                            n_test=cfg.n_test)
    net = gflow.TwoLayer(cfg.widths[0])
    p0 = gflow.init.gaussian(jax.random.key(6), net, cfg.d)
    K = (gram(net, p0, ds.X), gram(net, p0, ds.X_test, ds.X))
    dyn = gflow.GradientFlow(rtol=1e-12, atol=1e-14, max_steps=1_000_000)
    h, n = 1e-3, cfg.n
    _, out = against_gradient_flow(net, p0, ds, [0.0, h, 2 * h], kernel=K, dynamics=dyn,
                                   observe=tuple(lr.PER_SAVE.values()))
    assert out["f_gf"].shape == out["f_lin"].shape == (3, n + cfg.n_test)
    np.testing.assert_allclose(out["f_kernel"], out["f_lin"], rtol=0, atol=1e-13)
    np.testing.assert_allclose(out["f_gf"][0, n:], net.apply(p0, ds.X_test), atol=1e-14)
    gap = np.linalg.norm(out["f_gf"] - out["f_lin"], axis=1)
    assert gap[0] < 1e-14 and gap[1] > 1e-9
    assert 3.6 < gap[2] / gap[1] < 4.4, gap
    with pytest.raises(ValueError, match="start"):
        against_gradient_flow(net, p0, ds, [0.5, 1.0])
    with pytest.raises(ValueError, match="test inputs"):
        against_gradient_flow(net, p0, gflow.data.teacher(jax.random.key(0), 4, 3, n_test=0),
                              [0.0, 1.0])

"""Tests of the coupled_init experiment (setting 000) and its helpers."""

import json

import numpy as np
import pytest

from gflow import io, stats
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

    return ci.width_sweep(cfg, [data], loss="logistic", lrs=[30.0], t1s=[3e4], target=0.05,
                          key=jax.random.key(1))


def test_width_sweep_small():
    # the sweep core on one tiny data set: paired and independent, padded widths
    cfg, data = _tiny()
    out = {k: v[0] for k, v in _sweep(cfg, data).items()}  # the only data set
    assert out["success"].shape == (2, 2, 2)
    assert np.all((out["flips"] >= 0) & (out["flips"] <= 1))
    # a run that reached the target stopped there; others ran to t1
    ok = out["success"] == 1.0
    assert np.all(out["final_loss"][ok] <= 0.05 * (1 + 1e-6))
    assert np.all(out["t_stop"][~ok] == pytest.approx(3e4))
    assert ok[:, :, -1].all()  # width 16 fits 8 points


def _loop(cfg, data, *, loss, lr, t1, target, key):
    """What the experiment computed before it used gflow.sweep: one gflow.simulate per
    (init, seed, width), the width embedded in the largest by ntk.pad_width."""
    import jax
    import jax.numpy as jnp

    import gflow
    from gflow import ntk

    M, shape = max(cfg.widths), (len(ci.INITS), cfg.seeds, len(cfg.widths))
    out = {k: np.full(shape, np.nan) for k in ("success", "t_stop", "movement", "flips",
                                                 "final_loss")}
    for i, iname in enumerate(ci.INITS):
        for s in range(cfg.seeds):
            for j, m in enumerate(cfg.widths):
                net = gflow.TwoLayer(m, "relu", "ntk", bias=False, train_outer=False)
                init = gflow.init.paired if iname == "paired" else gflow.init.gaussian
                p0 = init(jax.random.fold_in(key, s), net, data.d)
                tr = gflow.simulate(*ntk.pad_width(net, p0, M), data, loss=loss,
                                    dynamics=gflow.GD(lr), t1=t1, save=gflow.LinTimes(2),
                                    observe=("loss", "weight_movement"), stop_loss=target,
                                    throw=False)
                out["success"][i, s, j] = float(tr.status == "stop_loss")
                out["t_stop"][i, s, j] = float(tr.t_stop)
                out["movement"][i, s, j] = float(tr["weight_movement"][-1])
                out["final_loss"][i, s, j] = float(tr["loss"][-1])
                out["flips"][i, s, j] = float(ntk.activation_flips(
                    p0.W, jnp.asarray(tr.params_final.W)[:m], data.X))
    return out


def test_width_sweep_equals_the_loop_of_simulate():
    # the ensemble (one vmapped GD per data set) against one simulate per run. Not the same
    # compiled program (vmapped reductions may add in another order), so not bitwise by
    # construction: a GD step may differ by a few float32 ulps (1.2e-7), and ~1000 steps of
    # this flow (the loss decreasing, no instability at lr = 30) keep that far below 1e-5
    # relative (measured here: equal; in the experiment's default sizes <= 6e-8 on the
    # movement). A stop step moves only if the loss crossed the target within that, so
    # t_stop agrees to one step (lr = 30) and success exactly.
    import jax

    cfg, data = _tiny()
    got = {k: v[0] for k, v in _sweep(cfg, data).items()}
    ref = _loop(cfg, data, loss="logistic", lr=30.0, t1=3e4, target=0.05, key=jax.random.key(1))
    np.testing.assert_array_equal(got["success"], ref["success"])
    assert 0 < ref["success"].sum() < ref["success"].size  # both outcomes occur
    np.testing.assert_allclose(got["t_stop"], ref["t_stop"], rtol=0, atol=30.0)
    for k in ("final_loss", "movement"):
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, err_msg=k)
    # flips count sign changes of w.x: exact where no w.x sits within rounding of 0
    np.testing.assert_allclose(got["flips"], ref["flips"], atol=1 / (8 * 2) + 1e-9)


@pytest.mark.slow
def test_small_run_summary_and_figures(tmp_path):
    cfg = ci.Config(seeds=1, widths=(2, 16), angles=(1.0, 0.3), ns=(8, 16), gamma_n=8,
                    gamma_d=3, n_d=5)
    res = ci.run(cfg)
    s = res.summary
    for key in ("init_output_max_abs_paired", "width_exponent_gamma_paired",
                "width_exponent_gamma_independent", "width_exponent_n_paired",
                "width_exponent_n_independent"):
        assert key in s
    # paired init (each neuron twice with opposite a): f = 0 in exact arithmetic; in float32
    # the sum over pairs is 0 up to (m - 1) eps sum_j |t_j| (0.0 where XLA adds the pairs
    # symmetrically)
    assert 0.0 <= s["init_output_max_abs_paired"] < 1e-4
    assert s["init_output_max_abs_independent"] > 0.1
    ds = res.dataset
    assert ds["gamma_success"].shape == (2, 2, 1, 2)
    # margins decrease with the pair angle; the largest width reaches the easier targets
    g = ds["gamma"].values
    assert g[0] > g[1] > 0
    assert np.all(ds["n_success"].values[:, :, :, -1] == 1.0)
    # a run that reached the target stopped there
    ok = ds["n_success"].values == 1.0
    assert np.all(ds["n_final_loss"].values[ok] <= s["n_target_loss"] * (1 + 1e-6))
    # flips are fractions; movement is positive
    assert np.all((ds["n_flips"].values >= 0) & (ds["n_flips"].values <= 1))
    assert np.all(ds["n_movement"].values > 0)
    # the results folder round trip: figures are drawn from the dataset read back from disk
    io.write_results(tmp_path, config={}, summary=s, dataset=ds)
    json.loads((tmp_path / "summary.json").read_text())
    _, _, ds2 = io.read_results(tmp_path)
    figs = ci.figures(ds2, cfg)
    assert set(figs) == {"width_vs_gamma", "width_vs_n", "movement"}


def test_bad_config():
    with pytest.raises(ValueError, match="even"):
        ci.run(ci.Config(widths=(3, 4)))

"""Low-rotation regimes of shallow ReLU nets (Telgarsky, ICLR 2023, arXiv 2208.02789).

``f(x) = (1/sqrt m) sum_j a_j relu(w_j . x)``, ``w_j(0) ~ N(0, I_d)``, ``a_j ~ Unif{+-1}``,
logistic loss. The paper's claims, as its abstract states them: near initialization,
"until the weights have moved by O(sqrt m)", "GF and SGD only need a network width and
number of samples inversely proportional to the NTK margin", and "GF attains at least the
NTK margin itself"; in the neural-collapse setting "the sample complexity scales with the
number of groups"; with inner weights that change "in norm only", "GF with large widths
achieves globally maximal margins". (The stored text of the paper available here is its
abstract and introduction: the theorems' constants are not quoted; the introduction gives
width ``O(d^2)`` for 2-sparse parity, against the kernel regime's ``d^2 / eps`` samples.)

Regimes (``regime=near_init|scaling|neural_collapse|norm_only|all``):

- ``near_init``: 2-sparse parity (:class:`gflow.distributions.SparseParity`), ``n`` training
  points, only ``W`` trained, gradient flow (GF) per width and seed, stopped once the
  training loss is below ``stop_loss`` (``t1`` only a budget). The test set is the whole
  hypercube, so the test error is the exact population error. NTK margins of the
  distribution in both definitions (L2 relaxation and Ji-Telgarsky's pointwise one, the
  paper's assumption), exact by symmetry (:func:`gflow.ntk.margins_at`); movement against
  the radius ``gamma sqrt(m)`` (:func:`gflow.rotation.near_init_radius`); the normalized
  margin at the stop and its log-rate extrapolation (:func:`gflow.rotation.log_rate_fit`).
- ``scaling``: the paper's online SGD (:class:`gflow.OnlineSGD`, one fresh sample per step,
  so step = sample) for every ``d`` in ``ds``, width and seed; exact population error on the
  cube at log-spaced steps. Samples needed (first step with error ``<= eps``, largest width)
  and width needed (after ``sgd_steps`` samples) against ``1 / gamma_pw`` as power laws with
  bootstrap intervals (:func:`gflow.stats.threshold_law`), verdicts against exponents 1 and 2.
- ``neural_collapse``: ``k`` tight orthonormal groups (:func:`gflow.data.groups`), GF,
  test error on fresh points; the samples needed against ``k`` with an interval.
- ``norm_only``: ``w_j = r_j u_j``, ``u_j`` frozen, ``r`` and ``a`` trained
  (:class:`gflow.rotation.NormOnlyTwoLayer`), per width and ``n``; the 2-homogeneous margin
  against the LP maximum over the fixed directions (:func:`gflow.rotation.norm_only_max_margin`)
  over time, and its log-rate extrapolation.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

import gflow
from gflow import ntk, rotation, stats
from gflow.distributions import SparseParity

from . import Result, Settings, setting
from ._runs import observables_dataset

REGIMES = ("near_init", "scaling", "neural_collapse", "norm_only")
CITE = "Telgarsky, ICLR 2023 (arXiv 2208.02789)"
FULL = dict(seeds=4, stop_loss=1e-3, sgd_seeds=16, sgd_steps=16384, nc_seeds=16,
            norm_widths=(64, 256, 1024, 4096), norm_t1=1e16)

#: measured wall time of ``gflow run low_rotation`` with the defaults
RUN_TIME = "not yet measured"


@dataclasses.dataclass(frozen=True)
class Config(Settings):
    """Settings of the four parts.

    Attributes:
        seed: seed of data, inits, SGD samples and the margins' sample of w.
        regime: which part to run (``all``: every one).
        preset: ``full`` takes the settings of ``FULL`` (more seeds, lower stop_loss, longer
            SGD, wider norm-only nets) wherever they are left at their defaults.
        d: input dimension of near_init and norm_only (2-sparse parity).
        n: training points of near_init.
        widths: neurons m of the near_init nets.
        seeds: seeds per width of near_init.
        stop_loss: near_init's GF stops once the training loss is below this.
        t1: near_init's time budget (a run still above stop_loss at t1 is budget-bound).
        rtol: relative tolerance of GF's controller (every GF run).
        atol: absolute tolerance of GF's controller (every GF run).
        n_save: log-spaced save points per run.
        margin_samples: sampled w's of the pointwise NTK margin.
        eps: target population (or test) error of the sample and width thresholds.
        ds: input dimensions of the scaling part (the cube is enumerated: d <= 12).
        sgd_widths: widths of the scaling part.
        sgd_seeds: seeds per (d, width) of the scaling part.
        sgd_steps: online-SGD steps (= samples) per run.
        sgd_lr: online SGD's step size.
        nc_d: input dimension of the neural-collapse groups.
        nc_ks: numbers k of groups (k <= nc_d).
        nc_ns: training-set sizes of the neural-collapse runs.
        nc_radius: radius of each group around its centre.
        nc_width: neurons of the neural-collapse nets.
        nc_t1: end time of the neural-collapse runs.
        nc_seeds: seeds per (k, n) of the neural-collapse regime.
        n_test: fresh test points of the neural-collapse regime.
        norm_widths: neurons of the norm-only nets.
        norm_ns: training-set sizes of the norm-only runs.
        norm_t1: end time of the norm-only runs (the margin grows like log t).
    """

    seed: int = 0
    regime: str = setting("all", choices=(*REGIMES, "all"))
    preset: str = setting("default", choices=("default", "full"),
                          why="full: the settings of FULL wherever they are left at the default")
    d: int = setting(8, ge=2, le=12, why="the hypercube is enumerated for exact errors")
    n: int = setting(128, ge=2)
    widths: tuple[int, ...] = (32, 128, 512)
    seeds: int = setting(2, ge=1)
    stop_loss: float = setting(1e-2, gt=0.0)
    t1: float = setting(1e6, gt=0.0)
    rtol: float = 1e-4
    atol: float = 1e-6
    n_save: int = setting(30, ge=4)
    margin_samples: int = setting(4000, ge=100)
    eps: float = setting(0.05, gt=0.0, lt=0.5)
    ds: tuple[int, ...] = setting((4, 6, 8, 10, 12), ge=2, le=12,
                                  why="the hypercube is enumerated for exact errors")
    sgd_widths: tuple[int, ...] = (2, 4, 8, 16, 64, 256)
    sgd_seeds: int = setting(8, ge=2)
    sgd_steps: int = setting(4096, ge=16)
    sgd_lr: float = setting(1.0, gt=0.0)
    nc_d: int = 16
    nc_ks: tuple[int, ...] = setting((2, 4, 8, 16), ge=2, le="nc_d", why="orthonormal centres")
    nc_ns: tuple[int, ...] = (2, 4, 8, 16, 32, 64)
    nc_radius: float = 0.05
    nc_width: int = 64
    nc_t1: float = 300.0
    nc_seeds: int = setting(8, ge=2)
    n_test: int = 1000
    norm_widths: tuple[int, ...] = (64, 256, 1024)
    norm_ns: tuple[int, ...] = (16, 64, 128)
    norm_t1: float = 1e14


def _net(m):
    return gflow.TwoLayer(m, "relu", "ntk", bias=False, train_outer=False)


def _gf(cfg):
    return gflow.GradientFlow(rtol=cfg.rtol, atol=cfg.atol)


def margins(d: int, key, samples: int) -> dict:
    """Population NTK margins of 2-sparse parity in ``d`` dimensions: exact by symmetry, the
    pointwise one a Monte-Carlo estimate over ``samples`` w's (:func:`gflow.ntk.margins_at`)."""
    l2, pw = ntk.symmetric_margins(SparseParity(d), jax.random.normal(key, (samples, d)))
    return {"l2": l2.gamma, "pw": pw.gamma}


def _spread(a):
    """Median and [min, max] over seeds (axis 0), per remaining index, as JSON lists."""
    a = np.asarray(a, float)
    return {"median": np.median(a, 0).tolist(), "range": [np.min(a, 0).tolist(),
                                                          np.max(a, 0).tolist()]}


def _near_init(cfg, key, progress):
    dist, g = SparseParity(cfg.d), margins(cfg.d, jax.random.fold_in(key, 99), cfg.margin_samples)

    def make_run(seed, width):
        k, net = jax.random.fold_in(key, seed), _net(width)
        tr = dist.dataset(jax.random.fold_in(k, 0), cfg.n, n_test=0)
        return gflow.Run(net, gflow.init.gaussian(jax.random.fold_in(k, 1), net, cfg.d),
                         gflow.Dataset(tr.X, tr.y, *dist.enumerate()[:2]), loss="logistic",
                         dynamics=_gf(cfg), t1=cfg.t1, save=gflow.LogTimes(cfg.n_save, t_min=1.0),
                         stop_loss=cfg.stop_loss, observe=(
                             "loss", "test_accuracy", "margin_homogeneous",
                             "movement_over_sqrt_m", "rotation_weighted_deg"))

    sw = gflow.sweep(make_run, seeds=list(range(cfg.seeds)), width=list(cfg.widths),
                     progress=progress)
    tr, ds = sw.trajectory, observables_dataset(sw, prefix="ni", shared=("seed", "width"))
    ds = ds.assign(ni_gamma_pw=g["pw"], ni_gamma_l2=g["l2"],  # radius: near_init_radius
                   ni_movement_over_radius=ds["ni_movement_over_sqrt_m"] / g["pw"],
                   ni_population_error=1 - ds["ni_test_accuracy"],
                   ni_margin_over_gamma_pw=ds["ni_margin_homogeneous"] / g["pw"])
    err, margin, rad = (tr.final(v) for v in ("test_accuracy", "margin_homogeneous",
                                              "movement_over_sqrt_m"))
    err, ratio, rad = 1.0 - err, margin / g["pw"], rad / g["pw"]
    lim = rotation.log_rate_limits(tr.times, np.asarray(tr["margin_homogeneous"]) / g["pw"])
    stopped = np.asarray(tr.status) == "stop_loss"
    s = {f"near_init_{k}": _spread(v) for k, v in (
        ("t_stop", tr.t_stop), ("population_error", err), ("margin_over_gamma_pw", ratio),
        ("margin_over_gamma_l2", margin / g["l2"]), ("margin_limit_over_gamma_pw", lim[..., 0]),
        ("movement_over_radius", rad), ("radius_exit_time", rotation.radius_exit_time(
            tr.times, tr["movement_over_sqrt_m"], g["pw"])))}
    return s | {
        "near_init_gamma_pw": g["pw"], "near_init_gamma_l2": g["l2"],
        "near_init_stopped": f"{int(stopped.sum())} of {stopped.size} runs reached stop_loss",
        "near_init_margin_limit_ci_over_gamma_pw": lim.tolist(),
        "verdict_near_init_error": ("holds" if err.max() <= cfg.eps else "does not hold") +
        f": largest population error {err.max():.3g} over widths and seeds (eps={cfg.eps})",
        "verdict_near_init_margin": rotation.approach_verdict(
            ratio[:, -1], lim[:, -1, 1], lim[:, -1, 2]) + " (largest width)",
        "verdict_near_init_radius": f"|W - W0| / (gamma_pw sqrt m) = {rad.min():.3g}.."
        f"{rad.max():.3g} at the stop: " + ("within the radius scale" if rad.max() <= 1 else
                                            "beyond the radius scale, outside the theorem")}, ds


def scaling_laws(ds, cfg: Config):
    """Samples needed (online-SGD steps to population error ``<= eps`` at the largest width)
    and width needed (after ``sgd_steps``) against ``1 / gamma_pw``: two
    :func:`gflow.stats.threshold_law` results."""
    ok = (1.0 - ds["sc_accuracy"].transpose("sc_d", "seed", "width", "sc_time")).values <= cfg.eps
    x, steps = 1.0 / ds["sc_gamma_pw"].values, ds["sc_time"].values / cfg.sgd_lr
    return (stats.threshold_law(x, ok[:, :, -1, 1:], steps[1:]),
            stats.threshold_law(x, ok[:, :, :, -1], ds["width"].values))


def _scaling(cfg, key, progress):
    gam = [margins(d, jax.random.fold_in(key, 99), cfg.margin_samples)["pw"] for d in cfg.ds]

    def make_run(seed, width, d):
        k, dist = jax.random.fold_in(jax.random.fold_in(key, d), seed), SparseParity(d)
        return gflow.Run(_net(width), gflow.init.gaussian(k, _net(width), d),
                         gflow.Dataset(*dist.enumerate()[:2]), loss="logistic",
                         dynamics=gflow.OnlineSGD(cfg.sgd_lr, 1, dist, jax.random.fold_in(k, 2)),
                         t1=cfg.sgd_steps * cfg.sgd_lr, save=gflow.LogTimes(cfg.n_save, t_min=8
                                                                            * cfg.sgd_lr),
                         observe=("accuracy", "movement_over_sqrt_m"))

    sw = gflow.sweep(make_run, seeds=list(range(cfg.sgd_seeds)), width=list(cfg.sgd_widths),
                     d=list(cfg.ds), progress=progress)
    ds = observables_dataset(sw, prefix="sc", shared=("seed", "width"))
    ds["sc_gamma_pw"] = ("sc_d", gam)
    n_law, w_law = scaling_laws(ds, cfg)
    mov = ds["sc_movement_over_sqrt_m"].isel(sc_time=-1, width=-1).median("seed") / gam
    return {"scaling_ds": list(cfg.ds), "scaling_gamma_pw": gam,
            **stats.law_keys("samples", n_law, (1, 2)), **stats.law_keys("width", w_law, (1, 2)),
            "scaling_movement_over_radius": mov.values.tolist()}, ds


def nc_law(ds, cfg: Config):
    """Samples needed for test error ``<= eps`` against ``k`` (a threshold law)."""
    err = 1.0 - ds["nc_test_accuracy"].isel(nc_time=-1).transpose("k", "seed", "nc_n").values
    return stats.threshold_law(ds["k"].values, err <= cfg.eps, ds["nc_n"].values)


def _neural_collapse(cfg, key, progress):
    def make_run(seed, k, n):
        kd, ki = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, seed), k))
        data = gflow.data.groups(jax.random.fold_in(kd, n), n, cfg.nc_d, k, radius=cfg.nc_radius,
                                 n_test=cfg.n_test)
        # one compiled ensemble for all n: tiling leaves the full-batch flow unchanged
        return gflow.Run(_net(cfg.nc_width), gflow.init.gaussian(ki, _net(cfg.nc_width), cfg.nc_d),
                         gflow.data.tile_samples(data, math.lcm(*cfg.nc_ns)), loss="logistic",
                         dynamics=_gf(cfg), t1=cfg.nc_t1, save=gflow.LogTimes(8, t_min=1e-2),
                         observe=("loss", "test_accuracy"))

    sw = gflow.sweep(make_run, seeds=list(range(cfg.nc_seeds)), k=list(cfg.nc_ks),
                     n=list(cfg.nc_ns), progress=progress)
    ds = observables_dataset(sw, prefix="nc", shared=("seed", "k"))
    ks = np.array(cfg.nc_ks, float)
    cc = stats.loglog_slope(ks, ks * np.log(ks / cfg.eps))  # seeing every group: k ln(k / eps)
    return {"nc_coupon_exponent": cc, **stats.law_keys("nc_samples", nc_law(ds, cfg), (1, cc))}, ds


def _norm_only(cfg, key, progress):
    import jax.numpy as jnp
    import xarray as xr

    dist, ns, parts = SparseParity(cfg.d), list(cfg.norm_ns), []
    datas = [dist.dataset(jax.random.fold_in(key, n), n, n_test=cfg.n_test) for n in ns]
    data = gflow.data.stack_tiled(datas)  # one ensemble over n
    for m in cfg.norm_widths:
        net, q0 = gflow.init.norm_only(jax.random.fold_in(key, m), m, cfg.d)
        traj = gflow.simulate_ensemble(
            net, jax.tree.map(lambda x: jnp.stack([x] * len(ns)), q0), data, loss="logistic",
            dynamics=_gf(cfg), t1=cfg.norm_t1, save=gflow.LogTimes(cfg.n_save, t_min=1e-2),
            observe=("margin_homogeneous", "test_accuracy"), progress=progress)
        traj.batch_dims, traj.coords = ("no_n",), {"no_n": ns}
        part = observables_dataset(traj, prefix="no", shared=("no_n",))
        part["no_max_margin"] = ("no_n", [rotation.norm_only_max_margin(net, dt.X, dt.y)
                                          or math.nan for dt in datas])
        parts.append(part.expand_dims(no_width=[m]))
    ds = xr.concat(parts, dim="no_width", join="outer")
    ds["no_ratio"] = (ds["no_margin_homogeneous"] / ds["no_max_margin"]).transpose(..., "no_time")
    ratio = ds["no_ratio"]
    lim = rotation.log_rate_limits(ds["no_time"].values, ratio.values)
    end = ratio.isel(no_time=-1).values
    return {"norm_only_widths": list(cfg.norm_widths), "norm_only_ns": ns,
            "norm_only_ratio_at_t1": end.tolist(), "norm_only_ratio_limit_ci": lim.tolist(),
            "norm_only_test_error": (1 - ds["no_test_accuracy"].isel(no_time=-1)).values.tolist(),
            "verdict_norm_only_max_margin": rotation.approach_verdict(
                end[-1], lim[-1, :, 1], lim[-1, :, 2]) + " (largest width, every n)"}, ds


def run(cfg: Config, *, progress: bool = False) -> Result:
    import xarray as xr

    cfg = cfg.with_preset(FULL) if cfg.preset == "full" else cfg
    out = [part(cfg, jax.random.fold_in(jax.random.key(cfg.seed), i), progress) for i, part in
           enumerate((_near_init, _scaling, _neural_collapse, _norm_only))
           if cfg.regime in (REGIMES[i], "all")]
    summary = {"regime": cfg.regime, "preset": cfg.preset, "eps": cfg.eps}
    return Result(summary=summary | {k: v for s, _ in out for k, v in s.items()}, dataset=xr.merge(
        [ds for _, ds in out], combine_attrs="drop", join="outer", compat="no_conflicts"))


# -- figures ------------------------------------------------------------------------------


def figures(ds, cfg: Config) -> dict:
    from gflow.plot import caption, lines, panels, style

    figs, cfg = {}, cfg.with_preset(FULL) if cfg.preset == "full" else cfg
    if "ni_loss" in ds:
        fig, axes = panels(4, size=(4.6, 3.8))
        for i, var in enumerate(("ni_movement_over_radius", "ni_rotation_weighted_deg",
                                 "ni_population_error", "ni_margin_over_gamma_pw")):
            lines(axes[i], ds.isel(seed=0), var, "width", time="ni_time", colors=True,
                  label=lambda w: f"m={int(w)}")
            axes[i].axhline(1.0, color="k", lw=0.8) if i in (0, 3) else None
            style(axes[i], x="log", xlabel="time t", ylabel=var[3:].replace("_", " "))
        figs["near_init"] = caption(fig, title=f"Near init, GF on 2-sparse parity d={cfg.d}, "
                                    f"n={cfg.n} (seed 0), only W trained, stopped at loss "
                                    f"{cfg.stop_loss:g}; radius gamma_pw sqrt(m), gamma_pw="
                                    f"{float(ds['ni_gamma_pw']):.3g}. {CITE}")
    if "sc_accuracy" in ds:
        fig, axes = panels(2, size=(5.2, 4))
        for ax, law, what in zip(axes, scaling_laws(ds, cfg), ("samples (SGD steps)", "width"),
                                 strict=True):
            stats.draw(ax, law, label=f"{what} to error <= {cfg.eps}")
            style(ax, x="log", y="log", xlabel=f"1/gamma_pw (d = {cfg.ds})",
                  ylabel=f"{what} needed", legend=7)
        figs["scaling"] = caption(fig, title=f"Online SGD (one fresh sample per step, lr "
                                  f"{cfg.sgd_lr:g}), {cfg.sgd_seeds} seeds, exact population "
                                  f"error. {CITE}")
    if "nc_loss" in ds:
        fig, (ax,) = panels(1, size=(5.2, 4))
        stats.draw(ax, nc_law(ds, cfg), label=f"n to test error <= {cfg.eps}")
        style(ax, x="log2", y="log", xlabel="k groups", ylabel="samples needed")
        figs["neural_collapse"] = caption(fig, title=f"Neural collapse, GF, m={cfg.nc_width}, "
                                          f"d={cfg.nc_d}, {cfg.nc_seeds} seeds.\n{CITE}")
    if "no_margin_homogeneous" in ds:
        fig, (ax,) = panels(1, size=(5.2, 4))
        lines(ax, ds.isel(no_n=-1), "no_ratio", "no_width", time="no_time", colors=True,
              label=lambda m: f"m={int(m)}")
        ax.axhline(1.0, color="k", lw=0.8)
        style(ax, x="log", xlabel="time t", ylabel=f"margin / LP max, n={max(cfg.norm_ns)}")
        figs["norm_only"] = caption(fig, title=f"Norm-only w_j = r_j u_j, parity d={cfg.d}.\n"
                                    f"{CITE}")
    return figs

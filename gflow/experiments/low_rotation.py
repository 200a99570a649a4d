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

Every claim of :data:`CLAIMS` gets a verdict in ``summary["claims"]`` (a regime not run:
"inconclusive", not run). Margins and errors are read where each run stopped
(:attr:`gflow.Trajectory.at_stop`). Asymptotic claims (a margin reaching a target as
``t -> infinity``) hold only if every run is already there at its end, fail only if the
``1/ln t`` extrapolation's interval lies below the target too
(:func:`gflow.rotation.approach_verdict`), and are inconclusive otherwise. ``preset=full``
takes :data:`FULL`; ``gflow report`` runs :data:`SMOKE`, :data:`QUICK` and :data:`FULL`.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
import xarray as xr

import gflow
from gflow import ntk, rotation, stats
from gflow.distributions import SparseParity

from . import Result, Settings, claim, from_bound, setting, tally
from ._runs import observables_dataset, over_datasets

REGIMES = ("near_init", "scaling", "neural_collapse", "norm_only")
OBSERVE = ("loss", "test_accuracy", "margin_homogeneous", "movement_over_sqrt_m",
           "rotation_weighted_deg")  # near_init's observables
CITE = "Telgarsky, ICLR 2023 (arXiv 2208.02789)"
NET = dict(activation="relu", scaling="ntk", bias=False, train_outer=False)  # only W trained
CLAIMS = {
    "near_init_error": "Near init, GF on 2-sparse parity reaches population error <= eps.",
    "near_init_margin": "GF attains at least the NTK margin (pointwise definition).",
    "near_init_movement": "Near init: weights move O(sqrt m) (|W - W0| / sqrt m not growing).",
    "samples_vs_margin": "Online SGD needs samples inversely proportional to the NTK margin.",
    "width_vs_margin": "Online SGD needs a width inversely proportional to the NTK margin.",
    "nc_samples_vs_groups": "With neural collapse, sample complexity scales with the groups k.",
    "norm_only_max_margin": "Norm-only inner weights: wide GF reaches the max margin."}
#: the settings of ``gflow report --quick``; ``preset=full`` adds those of FULL
QUICK = dict(ds=(4, 6, 8, 10, 12), sgd_widths=(2, 4, 8, 16, 64, 256), sgd_seeds=8,
             sgd_steps=4096, nc_seeds=8, norm_ns=(16, 64, 128))
#: the settings of ``preset=full`` (wherever a setting is left at its default)
FULL = QUICK | dict(seeds=4, stop_loss=1e-3, sgd_seeds=16, sgd_steps=16384, nc_seeds=16,
                    norm_widths=(64, 256, 1024, 4096), norm_t1=1e16)
SMOKE = dict(d=4, n=32, widths=(32, 64, 128), stop_loss=0.05, t1=1e4, ds=(4, 6, 8), sgd_seeds=2,
             sgd_widths=(2, 8), sgd_steps=256, nc_ks=(2, 4, 8), nc_ns=(2, 4, 8), nc_width=8,
             nc_seeds=2, nc_t1=30.0, norm_widths=(16, 32), norm_ns=(8, 16), norm_t1=1e6, n_save=8)
REPORT = {"smoke": [("", SMOKE)], "quick": [("", QUICK)], "full": [("", {"preset": "full"})]}

#: measured wall time of ``gflow run low_rotation`` with the defaults
RUN_TIME = "137 s on 2 idle cores (165 s CPU); 227 s at load 3.5 (2026-12-02)"


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
    ds: tuple[int, ...] = setting((4, 6, 8, 10), ge=2, le=12,
                                  why="the hypercube is enumerated for exact errors")
    sgd_widths: tuple[int, ...] = (2, 4, 8, 16, 64)
    sgd_seeds: int = setting(6, ge=2)
    sgd_steps: int = setting(2048, ge=16)
    sgd_lr: float = setting(1.0, gt=0.0)
    nc_d: int = 16
    nc_ks: tuple[int, ...] = setting((2, 4, 8, 16), ge=2, le="nc_d", why="orthonormal centres")
    nc_ns: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    nc_radius: float = 0.05
    nc_width: int = 64
    nc_t1: float = 300.0
    nc_seeds: int = setting(4, ge=2)
    n_test: int = 1000
    norm_widths: tuple[int, ...] = (64, 256, 1024)
    norm_ns: tuple[int, ...] = (16, 128)
    norm_t1: float = 1e14


def _gf(cfg):
    return gflow.GradientFlow(rtol=cfg.rtol, atol=cfg.atol)


def _near_init(cfg, key, progress):
    # population NTK margins, exact by the cube's symmetry (pointwise: over margin_samples w's)
    dist, ws = SparseParity(cfg.d), jax.random.normal(jax.random.fold_in(key, 99), (
        cfg.margin_samples, cfg.d))
    g2, g = (r.gamma for r in ntk.symmetric_margins(dist, ws))

    def make_run(seed, width):
        k, net = jax.random.fold_in(key, seed), gflow.TwoLayer(width, **NET)
        tr = dist.dataset(jax.random.fold_in(k, 0), cfg.n, n_test=0)
        return gflow.Run(net, gflow.init.gaussian(jax.random.fold_in(k, 1), net, cfg.d),
                         gflow.Dataset(tr.X, tr.y, *dist.enumerate()[:2]), loss="logistic",
                         dynamics=_gf(cfg), t1=cfg.t1, save=gflow.LogTimes(cfg.n_save, t_min=1.0),
                         stop_loss=cfg.stop_loss, observe=OBSERVE)

    sw = gflow.sweep(make_run, seeds=list(range(cfg.seeds)), width=list(cfg.widths),
                     progress=progress)
    tr, ds = sw.trajectory, observables_dataset(sw)
    ds = ds.assign(gamma_pw=g, movement_over_radius=ds["movement_over_sqrt_m"] / g,
                   margin_over_gamma_pw=ds["margin_homogeneous"] / g)  # near_init_radius
    err, ratio, mov = (np.asarray(tr.final(v)) for v in OBSERVE[1:4])  # at each run's stop
    err, ratio, stopped = 1.0 - err, ratio / g, np.asarray(tr.status) == "stop_loss"
    runs = f"{int(stopped.sum())} of {stopped.size} runs reached stop_loss={cfg.stop_loss:g}"
    wide, ok = mov / g, np.isfinite(mov).all(0)  # ok: widths whose runs all reached a save
    mov_law = stats.power_law(np.asarray(cfg.widths)[ok], mov[:, ok].T)
    where = f"|W - W0| / (gamma_pw sqrt m) = {wide.min():.3g}..{wide.max():.3g} at the stop"
    lim, mv = rotation.approach(tr.times, np.asarray(tr["margin_homogeneous"]) / g, ratio)
    return {**{f"near_init_{k}": stats.over_seeds(v) for k, v in (
        ("t_stop", tr.t_stop), ("population_error", err), ("margin_over_gamma_pw", ratio),
        ("margin_over_gamma_l2", ratio * g / g2), ("margin_limit_over_gamma_pw", lim[..., 0]),
        ("movement_over_radius", wide), ("radius_exit_time", rotation.radius_exit_time(
            tr.times, tr["movement_over_sqrt_m"], g)))},
        "near_init_gamma_pw": g, "near_init_gamma_l2": g2, "near_init_stopped": runs,
        "near_init_margin_limit_ci_over_gamma_pw": lim.tolist(), "claims": {
            "near_init_error": tally(np.where(stopped, np.where(err <= cfg.eps, "<= eps", "> eps"),
                                              tr.status).ravel().tolist(), holds="<= eps",
                                     fails="> eps", what="runs", measured=f"population error "
                                     f"(whole cube) at the stop, largest {err.max():.3g}; {runs}"),
            "near_init_margin": claim(**mv, measured=f"margin / gamma_pw at the stop, widths "
                                      f"{list(cfg.widths)}; {runs}; {where}"),
            "near_init_movement": from_bound(
                stats.bound_verdict(mov_law, 0), f"|W - W0| / sqrt m ~ m^alpha; {where}")},
        **stats.law_keys("near_init_movement", mov_law, (0,))}, ds


def scaling_laws(ds, cfg: Config):
    """Samples needed (online-SGD steps to population error ``<= eps`` at the largest width)
    and width needed (after ``sgd_steps``) against ``1 / gamma_pw``: two
    :func:`gflow.stats.threshold_law` results."""
    ok = (1.0 - ds["accuracy"].transpose("d", "seed", "width", "time")).values <= cfg.eps
    x, steps = 1.0 / ds["gamma_pw"].values, ds["time"].values / cfg.sgd_lr
    return (stats.threshold_law(x, ok[:, :, -1, 1:], steps[1:]),
            stats.threshold_law(x, ok[:, :, :, -1], ds["width"].values))


def _scaling(cfg, key, progress):
    def make_run(seed, width, d):
        k, dist, net = jax.random.fold_in(jax.random.fold_in(key, d), seed), SparseParity(d), \
            gflow.TwoLayer(width, **NET)
        return gflow.Run(net, gflow.init.gaussian(k, net, d),
                         gflow.Dataset(*dist.enumerate()[:2]), loss="logistic",
                         dynamics=gflow.OnlineSGD(cfg.sgd_lr, 1, dist, jax.random.fold_in(k, 2)),
                         t1=cfg.sgd_steps * cfg.sgd_lr, observe=("accuracy",),
                         save=gflow.LogTimes(cfg.n_save, t_min=8 * cfg.sgd_lr))

    sw = gflow.sweep(make_run, seeds=list(range(cfg.sgd_seeds)), width=list(cfg.sgd_widths),
                     d=list(cfg.ds), progress=progress)
    ds = observables_dataset(sw)
    ds["gamma_pw"] = ("d", [ntk.symmetric_margins(SparseParity(d), jax.random.normal(
        jax.random.fold_in(key, 99), (cfg.margin_samples, d)))[1].gamma for d in cfg.ds])
    (n_law, w_law), size = scaling_laws(ds, cfg), f"d={list(cfg.ds)}, {cfg.sgd_seeds} seeds"
    return {"scaling_ds": list(cfg.ds), "scaling_gamma_pw": ds["gamma_pw"].values.tolist(),
            **stats.law_keys("samples", n_law, (1, 2)), **stats.law_keys("width", w_law, (1, 2)),
            "claims": {"samples_vs_margin": from_bound(stats.bound_verdict(n_law, 1), (
                f"samples to error <= eps at width {max(cfg.sgd_widths)}, {size}; vs the kernel's "
                f"exponent 2 (d^2/eps): {stats.bound_verdict(n_law, 2)['verdict']}")),
                "width_vs_margin": from_bound(stats.bound_verdict(w_law, 1), (
                    f"width of {list(cfg.sgd_widths)} after {cfg.sgd_steps} samples, {size}"))}}, ds


def nc_law(ds, cfg: Config):
    """Samples needed for test error ``<= eps`` against ``k`` (a threshold law)."""
    err = 1.0 - ds["test_accuracy"].isel(time=-1).transpose("k", "seed", "n").values
    return stats.threshold_law(ds["k"].values, err <= cfg.eps, ds["n"].values)


def _neural_collapse(cfg, key, progress):
    def make_run(seed, k, n):
        kd, ki = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, seed), k))
        net = gflow.TwoLayer(cfg.nc_width, **NET)
        data = gflow.data.groups(jax.random.fold_in(kd, n), n, cfg.nc_d, k, radius=cfg.nc_radius,
                                 n_test=cfg.n_test)
        # one compiled ensemble for all n: tiling leaves the full-batch flow unchanged
        return gflow.Run(net, gflow.init.gaussian(ki, net, cfg.nc_d),
                         gflow.data.tile_samples(data, math.lcm(*cfg.nc_ns)), loss="logistic",
                         dynamics=_gf(cfg), t1=cfg.nc_t1, save=gflow.LogTimes(8, t_min=1e-2),
                         observe=("loss", "test_accuracy"))

    sw = gflow.sweep(make_run, seeds=list(range(cfg.nc_seeds)), k=list(cfg.nc_ks),
                     n=list(cfg.nc_ns), progress=progress)
    ds, ks = observables_dataset(sw), np.array(cfg.nc_ks, float)
    cc, law = stats.loglog_slope(ks, ks * np.log(ks / cfg.eps)), nc_law(ds, cfg)  # k ln(k/eps)
    return {"nc_coupon_exponent": cc, **stats.law_keys("nc_samples", law, (1, cc)), "claims": {
        "nc_samples_vs_groups": from_bound(stats.bound_verdict(law, 1), (
            f"n of {list(cfg.nc_ns)} to test error <= eps vs k, {cfg.nc_seeds} seeds; seeing "
            f"every group (coupon collector) alone has exponent {cc:.2f}"))}}, ds


def _norm_only(cfg, key, progress):
    dist, ns, parts = SparseParity(cfg.d), list(cfg.norm_ns), []
    datas = [dist.dataset(jax.random.fold_in(key, n), n, n_test=cfg.n_test) for n in ns]
    for m in cfg.norm_widths:  # one ensemble over n per width
        net, q0 = gflow.init.norm_only(jax.random.fold_in(key, m), m, cfg.d)
        part = over_datasets(net, q0, datas, dim="n", coords=ns, loss="logistic",
                             dynamics=_gf(cfg), t1=cfg.norm_t1, progress=progress,
                             save=gflow.LogTimes(cfg.n_save, t_min=1e-2),
                             observe=("margin_homogeneous", "test_accuracy"))
        part["max_margin"] = ("n", [rotation.norm_only_max_margin(net, dt.X, dt.y)
                                    or math.nan for dt in datas])
        parts.append(part.expand_dims(width=[m]))
    ds = xr.concat(parts, dim="width", join="outer")
    ds["ratio"] = (ds["margin_homogeneous"] / ds["max_margin"]).transpose(..., "time")
    lim, v = rotation.approach(ds["time"].values, ds["ratio"].values[-1])
    return {"norm_only_widths": list(cfg.norm_widths), "norm_only_ns": ns, "norm_only_ratio_at_t1":
            ds["ratio"].values[..., -1].tolist(), "norm_only_ratio_limit_ci": lim.tolist(),
            "norm_only_test_error": (
                1 - ds["test_accuracy"].isel(time=-1)).values.tolist(),
            "claims": {"norm_only_max_margin": claim(**v, measured=(
                f"margin / LP max at t={cfg.norm_t1:g}, width {max(cfg.norm_widths)}, n in {ns}; "
                f"limits by a 1/ln t law"))}}, ds


def run(cfg: Config, *, progress: bool = False) -> Result:
    cfg = cfg.with_preset(FULL, "full")
    out = [(REGIMES[i], *part(cfg, jax.random.fold_in(jax.random.key(cfg.seed), i), progress))
           for i, part in enumerate((_near_init, _scaling, _neural_collapse, _norm_only))
           if cfg.regime in (REGIMES[i], "all")]
    claims = {k: claim("inconclusive", f"not run (regime={cfg.regime})") for k in CLAIMS}
    claims |= {k: v for _, s, _ in out for k, v in s.pop("claims").items()}
    return Result(summary={"regime": cfg.regime, "preset": cfg.preset, "eps": cfg.eps, **{
        k: v for _, s, _ in out for k, v in s.items()}, "claims": claims}, dataset={
        name: ds for name, _, ds in out})  # one group per part, each on its own grids


# -- figures ------------------------------------------------------------------------------


def figures(ds, cfg: Config) -> dict:
    from gflow.plot import laws, variables

    figs, cfg, g = {}, cfg.with_preset(FULL, "full"), gflow.io.groups(ds)  # the parts run
    if "near_init" in g:
        figs["near_init"] = variables(
            g["near_init"].isel(seed=0), ("movement_over_radius", "rotation_weighted_deg",
                                          "test_accuracy", "margin_over_gamma_pw"), hue="width",
            label=lambda w: f"m={int(w)}", hlines=dict.fromkeys(
                ("movement_over_radius", "margin_over_gamma_pw"), 1), title=f"Near init, "
            f"GF, 2-sparse parity d={cfg.d}, n={cfg.n}, seed 0, only W trained, stop at loss "
            f"{cfg.stop_loss:g}; radius gamma_pw sqrt m, gamma_pw "
            f"{g['near_init']['gamma_pw'].item():.3g}. {CITE}")
    if "scaling" in g:
        figs["scaling"] = laws(dict(zip(("samples (SGD steps)", "width"), scaling_laws(
            g["scaling"], cfg), strict=True)), xlabel=f"1/gamma_pw (d = {cfg.ds})", title=f"Online"
            f" SGD, one fresh sample per step, lr {cfg.sgd_lr:g}, {cfg.sgd_seeds} seeds. {CITE}")
    if "neural_collapse" in g:
        figs["neural_collapse"] = laws({"n": nc_law(g["neural_collapse"], cfg)}, xlabel="k groups",
                                       x="log2", title=f"Neural collapse, GF, m={cfg.nc_width}, "
                                       f"d={cfg.nc_d}, {cfg.nc_seeds} seeds. {CITE}")
    if "norm_only" in g:
        figs["norm_only"] = variables(g["norm_only"].isel(n=-1), ("ratio",), hue="width",
                                      hlines={"ratio": 1}, label=lambda m: f"m={int(m)}",
                                      title=f"Norm-only, d={cfg.d}, n={max(cfg.norm_ns)}: margin "
                                      f"/ LP max. {CITE}")
    return figs

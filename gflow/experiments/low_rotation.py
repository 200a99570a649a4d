"""Low-rotation regimes of shallow ReLU nets (Telgarsky, ICLR 2023, arXiv 2208.02789).

``f(x) = (1/sqrt m) sum_j a_j relu(w_j . x)``, ``w_j(0) ~ N(0, I_d)``, ``a_j ~ Unif{+-1}``,
logistic loss, gradient flow (GF; Tsit5 + PI) and SGD (step ``sgd_lr``, batch ``batch_size``)
side by side. Three regimes (``regime=near_init|neural_collapse|norm_only|all``):

- ``near_init``: 2-sparse parity on ``{+-1/sqrt d}^d`` (:func:`gflow.data.sparse_parity`),
  only ``W`` trained (``a`` fixed), widths ``widths``. Observed: rotation angles, movement
  ``|W_t - W_0| / sqrt m``, the normalized margin ``min_i y_i f(x_i) / |W_t|`` (the margin
  objective of the 1-homogeneous net) and ``min_i y_i f(x_i) / |W_t - W_0|``, both against
  the NTK margin ``gamma_ntk`` of the training set (:func:`gflow.ntk.margin`), and test error.
- ``neural_collapse``: ``k`` tight orthonormal groups, one label each
  (:func:`gflow.data.groups`); GF from standard init (only ``W`` trained); test error vs
  ``n`` for each ``k`` (mean over ``nc_seeds`` seeds).
- ``norm_only``: ``w_j = r_j u_j`` with ``u_j`` frozen, ``r`` and ``a`` trained
  (:class:`gflow.rotation.NormOnlyTwoLayer`), init conditioned on ``|w_j(0)| > 1`` so that
  no norm crosses 0 (:func:`gflow.init.norm_only`); GF's 2-homogeneous normalized margin
  ``min_i y_i f(x_i)/(|r|^2 + |a|^2)`` against the globally maximal one over the fixed
  directions (a linear program, :func:`gflow.rotation.norm_only_max_margin`); test error vs n.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

import gflow
from gflow import ntk, rotation

from . import Result, Settings, setting
from ._runs import observables_dataset

REGIMES = ("near_init", "neural_collapse", "norm_only")
OBSERVE = ("loss", "test_accuracy", "max_rotation_deg", "rotation_weighted_deg",
           "movement_over_sqrt_m", "margin_homogeneous", "margin_per_movement")
CITE = "Telgarsky, ICLR 2023 (arXiv 2208.02789)"


#: measured wall time of ``gflow run low_rotation`` with the defaults
RUN_TIME = 'about 85 s of CPU time on 2 CPU cores (240 s wall with the cores shared, load 9)'


@dataclasses.dataclass(frozen=True)
class Config(Settings):
    """Settings of the three low-rotation regimes.

    Attributes:
        seed: seed of data, init and SGD batches.
        regime: which regime to run (``all``: the three).
        d: input dimension of the 2-sparse parity data (near_init and norm_only).
        n: training points of near_init.
        n_test: test points (fresh draws from the hypercube).
        widths: neurons m of the near_init nets (one run per width).
        t1: end time of near_init (GF; SGD at t = step x sgd_lr).
        sgd_lr: SGD's learning rate.
        batch_size: SGD's minibatch size.
        rtol: relative tolerance of GF's controller (every regime).
        atol: absolute tolerance of GF's controller (every regime).
        n_save: log-spaced save points per run.
        norm_width: neurons of the norm-only net.
        norm_t1: end time of the norm-only runs (the margin grows like log t).
        norm_ns: training-set sizes of the norm-only runs.
        nc_d: input dimension of the neural-collapse groups.
        nc_ks: numbers k of groups.
        nc_ns: training-set sizes of the neural-collapse runs.
        nc_radius: radius of each group around its centre.
        nc_width: neurons of the neural-collapse nets.
        nc_t1: end time of the neural-collapse runs.
        nc_seeds: seeds per (k, n) of the neural-collapse regime.
    """

    seed: int = 0
    regime: str = setting("all", choices=(*REGIMES, "all"))
    # near_init (and the data of norm_only): 2-sparse parity
    d: int = 8
    n: int = 128
    n_test: int = 2000
    widths: tuple[int, ...] = (32, 128, 512)
    t1: float = 1e4
    sgd_lr: float = 1.0
    batch_size: int = setting(16, ge=1, le="n", why="SGD draws at most n samples per batch")
    rtol: float = 1e-4
    atol: float = 1e-6
    n_save: int = 30
    # norm_only
    norm_width: int = 256
    norm_t1: float = 1e14
    norm_ns: tuple[int, ...] = (16, 64, 128)
    # neural_collapse
    nc_d: int = 16
    nc_ks: tuple[int, ...] = (2, 4, 8)
    nc_ns: tuple[int, ...] = (4, 8, 16, 32)
    nc_radius: float = 0.05
    nc_width: int = 64
    nc_t1: float = 300.0
    nc_seeds: int = 2


def _gf(cfg: Config):
    return gflow.GradientFlow(rtol=cfg.rtol, atol=cfg.atol)


def _observed(result, pre: str):
    """A regime's observables, tagged (the regimes have their own time grids)."""
    return observables_dataset(result, prefix=pre, shared=("width", "k", "seed", "dynamics"))


def _near_init(cfg: Config, keys, progress: bool):
    import xarray as xr

    k_data, k_init, k_sgd, _ = keys
    data = gflow.data.sparse_parity(k_data, cfg.n, cfg.d, n_test=cfg.n_test)
    gamma = ntk.margin(data.X, data.y, layers="inner")
    save = gflow.LogTimes(cfg.n_save, t_min=cfg.sgd_lr)
    dyns = {"gf": _gf(cfg),
            "sgd": gflow.SGD(lr=cfg.sgd_lr, batch_size=cfg.batch_size, key=k_sgd)}

    parts = []
    for name, dyn in dyns.items():
        def make_run(width, dyn=dyn):
            net = gflow.TwoLayer(width, "relu", "ntk", bias=False, train_outer=False)
            p0 = gflow.init.gaussian(k_init, net, cfg.d)
            return gflow.Run(net, p0, data, loss="logistic", dynamics=dyn, t1=cfg.t1,
                             save=save, observe=OBSERVE + ("rotation_deg",))
        sw = gflow.sweep(make_run, width=list(cfg.widths), progress=progress)
        parts.append(_observed(sw, "ni").expand_dims(dynamics=[name]))
    ds = xr.concat(parts, dim="dynamics", join="outer")
    ds["ni_ntk_margin"] = gamma

    s: dict = {"near_init_ntk_margin": gamma}
    wmax = max(cfg.widths)
    for dname in dyns:
        tag = "" if dname == "gf" else "sgd_"
        sub = ds.sel(dynamics=dname)
        last = sub.isel(ni_time=-1)
        per = {"max_movement_over_sqrt_m": sub["ni_movement_over_sqrt_m"].max("ni_time"),
               "test_error": 1.0 - last["ni_test_accuracy"],
               "margin_over_ntk_margin": last["ni_margin_homogeneous"] / gamma,
               "margin_per_movement_over_ntk_margin": last["ni_margin_per_movement"] / gamma,
               "rotation_weighted_deg": last["ni_rotation_weighted_deg"]}
        for key, arr in per.items():
            s[f"near_init_{tag}{key}"] = float(arr.sel(width=wmax))
            if key != "rotation_weighted_deg":
                s[f"near_init_{tag}{key}_by_width"] = {
                    str(int(w)): float(arr.sel(width=w)) for w in cfg.widths}
    s["near_init_final_loss"] = float(ds["ni_loss"].sel(dynamics="gf", width=wmax)[-1])
    return s, ds


def _norm_only(cfg: Config, keys, progress: bool):
    import jax.numpy as jnp
    import xarray as xr

    k_data, k_init = keys[:2]
    net, q0 = gflow.init.norm_only(k_init, cfg.norm_width, cfg.d)
    ns = list(cfg.norm_ns)
    datas = [gflow.data.sparse_parity(k_data, n, cfg.d, n_test=cfg.n_test) for n in ns]
    gstar = [rotation.norm_only_max_margin(net, dt.X, dt.y) for dt in datas]
    # all sample sizes in one compiled ensemble: tiling leaves the full-batch flow unchanged
    tiled = [gflow.data.tile_samples(dt, max(ns)) for dt in datas]
    stack = [jnp.stack([getattr(dt, f) for dt in tiled]) for f in ("X", "y", "X_test", "y_test")]
    q0s = jax.tree.map(lambda x: jnp.stack([x] * len(ns)), q0)
    traj = gflow.simulate_ensemble(net, q0s, gflow.Dataset(*stack), loss="logistic",
                                   dynamics=_gf(cfg), t1=cfg.norm_t1,
                                   save=gflow.LogTimes(cfg.n_save, t_min=1e-2), observe=OBSERVE,
                                   progress=progress)
    traj.batch_dims, traj.coords = ("n",), {"n": ns}
    ds = _observed(traj, "no")
    ds["no_max_margin"] = xr.DataArray(gstar, dims=("no_n",), coords={"no_n": ns})
    ratio = [float(m / g) for m, g in zip(traj.final("margin_homogeneous"), gstar, strict=True)]
    err = 1.0 - traj.final("test_accuracy")
    n0 = cfg.n if cfg.n in ns else max(ns)
    return {
        "norm_only_max_rotation_deg": float(np.nanmax(ds["no_max_rotation_deg"].values)),
        "norm_only_margin_ratio": ratio[ns.index(n0)],
        "norm_only_margin_ratio_n": n0,
        "norm_only_margin_ratio_by_n": dict(zip(map(str, ns), ratio, strict=True)),
        "norm_only_max_margin_by_n": {str(n): g for n, g in zip(ns, gstar, strict=True)},
        "norm_only_test_error_by_n": {str(n): float(e) for n, e in zip(ns, err, strict=True)},
        "norm_only_max_movement_over_sqrt_m": float(
            np.nanmax(ds["no_movement_over_sqrt_m"].sel(no_n=n0).values)),
    }, ds


def _neural_collapse(cfg: Config, keys, progress: bool):
    import math

    save = gflow.LogTimes(cfg.n_save, t_min=1e-2)
    ns = list(cfg.nc_ns)

    def make_run(seed, k, n):
        kd, ki = jax.random.split(jax.random.fold_in(jax.random.fold_in(keys[3], seed), k))
        data = gflow.data.groups(jax.random.fold_in(kd, n), n, cfg.nc_d, k, radius=cfg.nc_radius,
                                 n_test=cfg.n_test)
        net = gflow.TwoLayer(cfg.nc_width, "relu", "ntk", bias=False, train_outer=False)
        # one compiled ensemble for all n: tiling leaves the full-batch flow unchanged
        return gflow.Run(net, gflow.init.gaussian(ki, net, cfg.nc_d),
                         gflow.data.tile_samples(data, math.lcm(*ns)), loss="logistic",
                         dynamics=_gf(cfg), t1=cfg.nc_t1, save=save,
                         observe=("loss", "test_accuracy", "max_rotation_deg",
                                  "movement_over_sqrt_m"))

    sw = gflow.sweep(make_run, seeds=list(range(cfg.nc_seeds)), k=list(cfg.nc_ks), n=ns,
                     progress=progress)
    ds = _observed(sw, "nc")
    err = (1.0 - ds["nc_test_accuracy"].isel(nc_time=-1)).mean("seed")
    s = {"nc_test_error": {str(k): float(err.sel(k=k, nc_n=max(ns))) for k in cfg.nc_ks},
         "nc_test_error_n": max(ns), "nc_max_rotation_deg": float(ds["nc_max_rotation_deg"].max())}
    for k in cfg.nc_ks:
        s[f"nc_test_error_k{k}_by_n"] = {str(n): float(err.sel(k=k, nc_n=n)) for n in ns}
    return s, ds


def run(cfg: Config, *, progress: bool = False) -> Result:
    import xarray as xr

    keys = jax.random.split(jax.random.key(cfg.seed), 4)  # data, init, sgd, neural collapse
    summary: dict = {"regime": cfg.regime}
    parts = []
    for regime, part in (("near_init", _near_init), ("norm_only", _norm_only),
                         ("neural_collapse", _neural_collapse)):
        if cfg.regime in (regime, "all"):
            s, ds = part(cfg, keys, progress)
            summary.update(s)
            parts.append(ds)
    ds = xr.merge(parts, combine_attrs="drop", join="outer", compat="no_conflicts")
    return Result(summary=summary, dataset=ds)


# -- figures ------------------------------------------------------------------------------


def figures(ds, cfg: Config) -> dict:
    from gflow.plot import caption, cdf, lines, over_time, panels, style

    figs = {}
    fmts = {"gf": "-", "sgd": "--"}
    if "ni_loss" in ds:
        t = ds["ni_time"].values
        gamma = float(ds["ni_ntk_margin"])
        fig, axes = panels(4, size=(5, 4))
        rows = (("ni_movement_over_sqrt_m", r"$|W_t-W_0|_F/\sqrt{m}$", "linear", None),
                ("ni_rotation_weighted_deg", r"mean angle$(w_j(t), w_j(0))$, $|a_j|$-weighted"
                 " [deg]", "linear", None),
                ("ni_test_accuracy", "test error", "log", lambda v: 1.0 - v),
                ("ni_margin_homogeneous", r"margin / $\gamma_{ntk}$", "linear",
                 lambda v: v / gamma))
        for ax, (var, ylabel, yscale, shown) in zip(axes, rows, strict=True):
            for dname in ds["dynamics"].values:
                lines(ax, ds.sel(dynamics=dname), var, "width", time="ni_time", colors=True,
                      reduce=shown, fmt=fmts.get(str(dname), ":"),
                      label=lambda w, d=dname: f"{d}, m={int(w)}")
            if var == "ni_margin_homogeneous":
                mm = ds["ni_margin_per_movement"].sel(dynamics="gf",
                                                      width=ds["width"].values[-1]).values
                over_time(ax, t, mm / gamma, r"gf, $\min y f/|W_t-W_0|$, largest m", "-.",
                          color="C7")
                ax.axhline(1.0, color="k", lw=0.8, label=r"$\gamma_{ntk}$")
                ax.set_ylim(-0.5, 1.6)
            style(ax, x="log", y=yscale, xlabel="time t (SGD: step x lr)", ylabel=ylabel)
        figs["near_init"] = caption(fig, title=f"Near initialization, 2-sparse parity d={cfg.d}, "
                                    f"n={cfg.n}, only W trained; NTK margin {gamma:.3g}. {CITE}")

        fig, (ax,) = panels(1, size=(5.5, 4))
        rot = ds["ni_rotation_deg"].sel(dynamics="gf").isel(ni_time=-1)
        for w in ds["width"].values:
            cdf(ax, rot.sel(width=w).values, label=f"m={int(w)}")
        style(ax, xlabel=r"angle$(w_j(T), w_j(0))$ [deg]", ylabel="fraction of neurons (CDF)",
              legend=10)
        ax.set_title(f"Near init: rotation at t={t[-1]:.3g} (GF). {CITE}", fontsize=9)
        figs["near_init_rotation_cdf"] = fig

    if "no_loss" in ds:
        fig, axes = panels(3, size=(5, 4))
        for ax, var, reduce in ((axes[0], "no_margin_ratio", None),
                                (axes[1], "no_max_rotation_deg", lambda v: np.maximum(v, 1e-12))):
            lines(ax, ds.assign(no_margin_ratio=ds["no_margin_homogeneous"] / ds["no_max_margin"]),
                  var, "no_n", time="no_time", reduce=reduce, label=lambda n: f"n={int(n)}")
        axes[0].axhline(1.0, color="k", lw=0.8, label="LP max margin")
        axes[0].set_ylim(-0.2, 1.1)
        err = 1.0 - ds["no_test_accuracy"].isel(no_time=-1).values
        axes[2].plot(ds["no_n"].values, np.maximum(err, 1e-4), "o-", label="norm-only GF, final")
        style(axes[0], x="log", xlabel="time t", legend=8,
              ylabel=r"margin$(t)$ / max margin over fixed $u_j$")
        style(axes[1], x="log", y="log", xlabel="time t", legend=8,
              ylabel="max rotation angle [deg] (numerical zero)")
        style(axes[2], x="log2", y="log", xlabel="n (training samples)", legend=8,
              ylabel="test error (floored at 1e-4)")
        figs["norm_only"] = caption(fig, title=f"Norm-only flow w_j = r_j u_j (r, a trained), "
                                    f"m={cfg.norm_width}, 2-sparse parity d={cfg.d}. {CITE}")

    if "nc_loss" in ds:
        fig, (ax,) = panels(1, size=(6, 4.2))
        err = (1.0 - ds["nc_test_accuracy"].isel(nc_time=-1)).mean("seed")
        for k in ds["k"].values:
            ax.plot(ds["nc_n"].values, np.maximum(err.sel(k=k).values, 1e-4), "o-",
                    label=f"k={int(k)} groups")
        style(ax, x="log2", y="log", xlabel="n (training samples)", legend=10,
              ylabel=f"test error (mean of {ds.sizes['seed']} seeds, floored at 1e-4)")
        ax.set_title(f"Neural collapse: k groups, radius {cfg.nc_radius}, d={cfg.nc_d}, "
                     f"m={cfg.nc_width}, GF.\n{CITE}", fontsize=9)
        figs["neural_collapse"] = caption(fig)
    return figs

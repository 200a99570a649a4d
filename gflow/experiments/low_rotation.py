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

REGIMES = ("near_init", "neural_collapse", "norm_only")
OBSERVE = ("loss", "test_accuracy", "max_rotation_deg", "rotation_weighted_deg",
           "movement_over_sqrt_m", "margin_homogeneous", "margin_per_movement")
CITE = "Telgarsky, ICLR 2023 (arXiv 2208.02789)"


@dataclasses.dataclass(frozen=True)
class Config(Settings):
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


def _regimes(cfg: Config) -> tuple[str, ...]:
    return REGIMES if cfg.regime == "all" else (cfg.regime,)


def _gf(cfg: Config):
    return gflow.GradientFlow(rtol=cfg.rtol, atol=cfg.atol)


def _prefix(ds, pre: str):
    """Rename variables and the time axis of one regime's dataset (regimes have own grids)."""
    shared = {"width", "k", "seed", "dynamics"}
    ds = ds.rename({dim: f"{pre}_{dim}" for dim in ds.dims if dim not in shared})
    return ds.rename({v: f"{pre}_{v}" for v in ds.data_vars})


def _keys(cfg: Config):
    k_data, k_init, k_sgd, k_nc = jax.random.split(jax.random.key(cfg.seed), 4)
    return k_data, k_init, k_sgd, k_nc


def _near_init(cfg: Config, progress: bool):
    import xarray as xr

    k_data, k_init, k_sgd, _ = _keys(cfg)
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
        parts.append(sw.to_xarray().expand_dims(dynamics=[name]))
    ds = xr.concat(parts, dim="dynamics", join="outer")
    ds = _prefix(ds[[v for v in ds.data_vars if "params" not in v]], "ni")
    ds["ni_ntk_margin"] = gamma

    s: dict = {"near_init_ntk_margin": gamma}
    wmax = max(cfg.widths)
    for dname in dyns:
        tag = "" if dname == "gf" else "sgd_"
        sub = ds.sel(dynamics=dname)
        mv = sub["ni_movement_over_sqrt_m"].max("ni_time")
        err = 1.0 - sub["ni_test_accuracy"].isel(ni_time=-1)
        mh = sub["ni_margin_homogeneous"].isel(ni_time=-1) / gamma
        mm = sub["ni_margin_per_movement"].isel(ni_time=-1) / gamma
        rot = sub["ni_rotation_weighted_deg"].isel(ni_time=-1)
        s[f"near_init_{tag}max_movement_over_sqrt_m"] = float(mv.sel(width=wmax))
        s[f"near_init_{tag}test_error"] = float(err.sel(width=wmax))
        s[f"near_init_{tag}margin_over_ntk_margin"] = float(mh.sel(width=wmax))
        s[f"near_init_{tag}margin_per_movement_over_ntk_margin"] = float(mm.sel(width=wmax))
        s[f"near_init_{tag}rotation_weighted_deg"] = float(rot.sel(width=wmax))
        for key, arr in (("max_movement_over_sqrt_m", mv), ("test_error", err),
                         ("margin_over_ntk_margin", mh),
                         ("margin_per_movement_over_ntk_margin", mm)):
            s[f"near_init_{tag}{key}_by_width"] = {
                str(int(w)): float(arr.sel(width=w)) for w in cfg.widths}
    s["near_init_final_loss"] = float(ds["ni_loss"].sel(dynamics="gf", width=wmax)[-1])
    return s, ds, (data, k_init)


def _norm_only(cfg: Config, k_init, progress: bool):
    import jax.numpy as jnp
    import xarray as xr

    k_data = _keys(cfg)[0]
    net, q0 = gflow.init.norm_only(k_init, cfg.norm_width, cfg.d)
    ns = list(cfg.norm_ns)
    datas = [gflow.data.sparse_parity(k_data, n, cfg.d, n_test=cfg.n_test) for n in ns]
    gstar = [rotation.norm_only_max_margin(net, dt.X, dt.y) for dt in datas]
    # all sample sizes in one compiled ensemble: tiling leaves the full-batch flow unchanged
    tiled = [gflow.data.tile_samples(dt, max(ns)) for dt in datas]
    stack = [jnp.stack([getattr(dt, f) for dt in tiled]) for f in ("X", "y", "X_test", "y_test")]
    M = len(ns)
    q0s = jax.tree.map(lambda x: jnp.stack([x] * M), q0)
    traj = gflow.simulate_ensemble(net, q0s, gflow.Dataset(*stack), loss="logistic",
                                   dynamics=_gf(cfg), t1=cfg.norm_t1,
                                   save=gflow.LogTimes(cfg.n_save, t_min=1e-2), observe=OBSERVE,
                                   progress=progress)
    ds = traj.to_xarray().rename({"member": "n"}).assign_coords(n=ns)
    ds = _prefix(ds[[v for v in ds.data_vars if "params" not in v]], "no")
    ds["no_max_margin"] = xr.DataArray(gstar, dims=("no_n",), coords={"no_n": ns})
    margin = traj.final("margin_homogeneous")  # each member's last reached save
    ratio = {n: float(margin[i] / gstar[i]) for i, n in enumerate(ns)}
    err = 1.0 - traj.final("test_accuracy")
    n0 = cfg.n if cfg.n in ns else max(ns)
    s = {
        "norm_only_max_rotation_deg": float(np.nanmax(ds["no_max_rotation_deg"].values)),
        "norm_only_margin_ratio": ratio[n0],
        "norm_only_margin_ratio_n": n0,
        "norm_only_margin_ratio_by_n": {str(n): v for n, v in ratio.items()},
        "norm_only_max_margin_by_n": {str(n): g for n, g in zip(ns, gstar, strict=True)},
        "norm_only_test_error_by_n": {str(n): float(e) for n, e in zip(ns, err, strict=True)},
        "norm_only_max_movement_over_sqrt_m": float(
            np.nanmax(ds["no_movement_over_sqrt_m"].sel(no_n=n0).values)),
    }
    return s, ds


def _neural_collapse(cfg: Config, progress: bool):
    k_nc = _keys(cfg)[3]
    save = gflow.LogTimes(cfg.n_save, t_min=1e-2)
    ns = list(cfg.nc_ns)

    def make_run(seed, k, n):
        kd, ki = jax.random.split(jax.random.fold_in(jax.random.fold_in(k_nc, seed), k))
        data = gflow.data.groups(jax.random.fold_in(kd, n), n, cfg.nc_d, k, radius=cfg.nc_radius,
                               n_test=cfg.n_test)
        net = gflow.TwoLayer(cfg.nc_width, "relu", "ntk", bias=False, train_outer=False)
        # one compiled ensemble for all n: tiling leaves the full-batch flow unchanged
        return gflow.Run(net, gflow.init.gaussian(ki, net, cfg.nc_d),
                         gflow.data.tile_samples(data, _lcm(ns)), loss="logistic",
                         dynamics=_gf(cfg), t1=cfg.nc_t1, save=save,
                         observe=("loss", "test_accuracy", "max_rotation_deg",
                                  "movement_over_sqrt_m"))

    sw = gflow.sweep(make_run, seeds=list(range(cfg.nc_seeds)), k=list(cfg.nc_ks), n=ns,
                     progress=progress)
    ds = sw.to_xarray()
    ds = _prefix(ds[[v for v in ds.data_vars if "params" not in v]], "nc")
    err = (1.0 - ds["nc_test_accuracy"].isel(nc_time=-1)).mean("seed")
    nmax = max(ns)
    s = {
        "nc_test_error": {str(k): float(err.sel(k=k, nc_n=nmax)) for k in cfg.nc_ks},
        "nc_test_error_n": nmax,
        "nc_max_rotation_deg": float(ds["nc_max_rotation_deg"].max()),
    }
    for k in cfg.nc_ks:
        s[f"nc_test_error_k{k}_by_n"] = {str(n): float(err.sel(k=k, nc_n=n)) for n in ns}
    return s, ds


def _lcm(ns) -> int:
    import math

    return math.lcm(*ns)


def run(cfg: Config, *, progress: bool = False) -> Result:
    import xarray as xr

    regimes = _regimes(cfg)
    summary: dict = {"regime": cfg.regime}
    parts = []
    k_init = _keys(cfg)[1]
    if "near_init" in regimes:
        s, ds, _ = _near_init(cfg, progress)
        summary.update(s)
        parts.append(ds)
    if "norm_only" in regimes:
        s, ds = _norm_only(cfg, k_init, progress)
        summary.update(s)
        parts.append(ds)
    if "neural_collapse" in regimes:
        s, ds = _neural_collapse(cfg, progress)
        summary.update(s)
        parts.append(ds)
    ds = xr.merge(parts, combine_attrs="drop", join="outer", compat="no_conflicts")
    return Result(summary=summary, dataset=ds)


# -- figures ------------------------------------------------------------------------------


def _plot_time(ax, t, y, label, style="-", color=None):
    t, y = np.asarray(t), np.asarray(y)
    keep = (t > 0) & np.isfinite(y)
    ax.plot(t[keep], y[keep], style, label=label, color=color)


def figures(ds, cfg: Config) -> dict:
    import matplotlib.pyplot as plt

    figs = {}
    styles = {"gf": "-", "sgd": "--"}
    if "ni_loss" in ds:
        t = ds["ni_time"].values
        gamma = float(ds["ni_ntk_margin"])
        fig, axes = plt.subplots(1, 4, figsize=(20, 4))
        panels = (("ni_movement_over_sqrt_m", r"$|W_t-W_0|_F/\sqrt{m}$", "linear"),
                  ("ni_rotation_weighted_deg", r"mean angle$(w_j(t), w_j(0))$, $|a_j|$-weighted"
                   " [deg]", "linear"),
                  ("ni_test_accuracy", "test error", "log"),
                  ("ni_margin_homogeneous", r"margin / $\gamma_{ntk}$", "linear"))
        for ax, (var, ylabel, yscale) in zip(axes, panels, strict=True):
            for dname in ds["dynamics"].values:
                for wi, w in enumerate(ds["width"].values):
                    y = ds[var].sel(dynamics=dname, width=w).values
                    if var == "ni_test_accuracy":
                        y = 1.0 - y
                    if var == "ni_margin_homogeneous":
                        y = y / gamma
                    _plot_time(ax, t, y, f"{dname}, m={int(w)}", styles.get(str(dname), ":"),
                               color=f"C{wi}")
            if var == "ni_margin_homogeneous":
                mm = ds["ni_margin_per_movement"].sel(dynamics="gf",
                                                      width=ds["width"].values[-1]).values
                _plot_time(ax, t, mm / gamma, r"gf, $\min y f/|W_t-W_0|$, largest m", "-.",
                           color="C7")
                ax.axhline(1.0, color="k", lw=0.8, label=r"$\gamma_{ntk}$")
                ax.set_ylim(-0.5, 1.6)
            ax.set_xscale("log")
            ax.set_yscale(yscale)
            ax.set_xlabel("time t (SGD: step x lr)")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(f"Near initialization, 2-sparse parity d={cfg.d}, n={cfg.n}, only W trained;"
                     f" NTK margin {gamma:.3g}. {CITE}")
        fig.tight_layout()
        figs["near_init"] = fig

        fig, ax = plt.subplots(figsize=(5.5, 4))
        rot = ds["ni_rotation_deg"].sel(dynamics="gf").isel(ni_time=-1)
        for w in ds["width"].values:
            v = rot.sel(width=w).values
            v = np.sort(v[np.isfinite(v)])
            ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=f"m={int(w)}")
        ax.set_xlabel(r"angle$(w_j(T), w_j(0))$ [deg]")
        ax.set_ylabel("fraction of neurons (CDF)")
        ax.set_title(f"Near init: rotation at t={t[-1]:.3g} (GF). {CITE}", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend()
        figs["near_init_rotation_cdf"] = fig

    if "no_loss" in ds:
        t = ds["no_time"].values
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        for n in ds["no_n"].values:
            sub = ds.sel(no_n=n)
            _plot_time(axes[0], t, sub["no_margin_homogeneous"].values
                       / float(sub["no_max_margin"]), f"n={int(n)}")
            _plot_time(axes[1], t, np.maximum(sub["no_max_rotation_deg"].values, 1e-12),
                       f"n={int(n)}")
        axes[0].axhline(1.0, color="k", lw=0.8, label="LP max margin")
        axes[0].set_ylim(-0.2, 1.1)
        axes[0].set_ylabel(r"margin$(t)$ / max margin over fixed $u_j$")
        axes[1].set_yscale("log")
        axes[1].set_ylabel("max rotation angle [deg] (numerical zero)")
        ns = ds["no_n"].values
        err = 1.0 - ds["no_test_accuracy"].isel(no_time=-1).values
        axes[2].plot(ns, np.maximum(err, 1e-4), "o-", label="norm-only GF, final")
        axes[2].set_xscale("log", base=2)
        axes[2].set_yscale("log")
        axes[2].set_xlabel("n (training samples)")
        axes[2].set_ylabel("test error (floored at 1e-4)")
        for ax in axes[:2]:
            ax.set_xscale("log")
            ax.set_xlabel("time t")
        for ax in axes:
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"Norm-only flow w_j = r_j u_j (r, a trained), m={cfg.norm_width}, "
                     f"2-sparse parity d={cfg.d}. {CITE}")
        fig.tight_layout()
        figs["norm_only"] = fig

    if "nc_loss" in ds:
        fig, ax = plt.subplots(figsize=(6, 4.2))
        err = (1.0 - ds["nc_test_accuracy"].isel(nc_time=-1)).mean("seed")
        ns = ds["nc_n"].values
        for k in ds["k"].values:
            ax.plot(ns, np.maximum(err.sel(k=k).values, 1e-4), "o-", label=f"k={int(k)} groups")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("n (training samples)")
        ax.set_ylabel(f"test error (mean of {ds.sizes['seed']} seeds, floored at 1e-4)")
        ax.set_title(f"Neural collapse: k groups, radius {cfg.nc_radius}, d={cfg.nc_d}, "
                     f"m={cfg.nc_width}, GF.\n{CITE}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        figs["neural_collapse"] = fig
    return figs

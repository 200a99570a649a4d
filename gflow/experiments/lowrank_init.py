"""Low-rank layers: spectral vs function-space initialization (Vodrahalli et al., arXiv 2202.00834).

Vodrahalli, Shivanna, Sathiamoorthy, Jain, Chi, "Nonlinear Initialization Methods for
Low-Rank Neural Networks", arXiv 2202.00834 (2022). The paper's claim: the function-space
error of the spectral init (truncated SVD) exceeds that of the best rank-r ReLU layer by a gap
that grows as the rank r falls, and as the input dimension d grows when the width m is
super-linear in d.

Part 1, approximation: for each width law ``m = ceil(d ** p)`` (``p`` in ``width_powers``:
1 is width linear in d, 1.5 super-linear), each d and ``seeds`` Gaussian ``W0`` (m, d), the
relative layer error ``sqrt(E|relu(W0 x) - relu(U V^T x)|^2 / E|relu(W0 x)|^2)`` (closed
form, Gaussian inputs, float64) of every method at every rank r <= min(m, d): spectral;
``function`` (gflow's practical algorithm, :func:`gflow.lowrank.function_space`; the paper's
own algorithms are not reproduced); ``function_svd_subspace`` (its first stage alone);
``reference`` (Adam from the spectral, function-space and random starts, d <= ref_max_d);
``grid`` (the certified grid search of :mod:`gflow.lowrank_grid`, polished, d <= grid_max_d).
The gap ``spectral - function`` is fitted as a power law of r (largest d) and of d (smallest
r) with bootstrap intervals over seeds; each direction of the claim gets a verdict.

Part 2, training: on scikit-learn's digits (digit < 5 vs >= 5, :func:`gflow.datasets.digits`), a
two-layer ReLU net (``two_layer``, width m) and a deeper one (``deep``, widths (m, m)), NTK
scaling, logistic loss, GD: the full-rank net from a Gaussian init, and the rank
``train_rank`` nets (every hidden weight ``U V^T``) from its spectral and function-space
factorizations (same ``W0``, same ``a``), each at every learning rate of ``lrs`` for
``train_steps`` steps and ``train_seeds`` seeds. Each init keeps the learning rate with the
lowest median final training loss; curves are compared at equal step counts.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax
import numpy as np

import gflow
from gflow import lowrank, lowrank_grid, stats
from gflow.datasets import digits
from gflow.lowrank_mlp import LowRankMLP, factorize_mlp

from . import Result, Settings, from_keys, setting
from ._runs import lr_grid

METHODS = ("spectral", "function", "function_svd_subspace", "reference", "grid")
INITS = ("full", "spectral", "function")
ARCHS = ("two_layer", "deep")
OBSERVE = ("loss", "test_loss", "test_accuracy")
CITE = "Vodrahalli et al., arXiv 2202.00834"
#: the claims this experiment judges (``gflow report``); training: test loss on the digits
CLAIMS = {"gap_grows_as_rank_falls": "The ReLU layer-function error of spectral init exceeds the "
          "best rank-r function approximation's by a gap that grows as the rank r falls.",
          "gap_grows_with_d": "With width super-linear in d, that gap grows with the input "
          "dimension d.", **{f"function_init_trains_better_{a}": "Function-space init trains "
                             f"low-rank nets ({a}) better than spectral init." for a in ARCHS}}
REPORT = {"smoke": [("", dict(rank=(1, 2, 4), d=(4, 8), seeds=2, ref_max_d=0, ref_steps=200,
                              grid_points=5, train_rank=2, train_seeds=2, train_width=16,
                              lrs=(1.0, 4.0), train_steps=20, n_save=5))],
          "quick": [("", {})], "full": [("", {"preset": "full"})]}
#: the settings of ``preset=full`` (wherever a setting is left at its default)
FULL = dict(d=(4, 8, 16, 32, 64, 128), seeds=10, train_seeds=10, train_steps=3000,
            lrs=(0.5, 1.0, 2.0, 4.0, 8.0, 16.0), train_width=256, n_save=30)

#: measured wall time of ``gflow run lowrank_init`` with the defaults
RUN_TIME = "55 s on 2 CPU cores (60 s wall with imports, load 1.5)"


@dataclasses.dataclass(frozen=True)
class Config(Settings):
    """Settings of the low-rank approximation and training study.

    Attributes:
        seed: seed of the W0 draws, the data splits and the inits.
        preset: ``full`` takes the settings of ``FULL`` wherever they are at the default.
        rank: ranks r of the approximation (each r <= min(m, d) is run).
        d: input dimensions of the approximation part.
        width_powers: width laws m = ceil(d ** p) of W0 (1: linear in d; > 1: super-linear).
        seeds: Gaussian W0 per (width law, d).
        iters: iterations of the function-space init's second stage.
        ref_max_d: largest d at which the reference solver runs.
        ref_starts: random starts of the reference solver (besides spectral, function).
        ref_steps: Adam steps of the reference solver per start (and of the grid's polish).
        grid_max_d: largest d at which the certified grid search runs.
        grid_points: grid points per chart entry of the grid search.
        archs: nets trained (``two_layer``: width m; ``deep``: widths (m, m)).
        train_rank: rank of every hidden weight of the low-rank nets trained.
        train_width: m of the trained nets.
        train_seeds: seeds (inits, paired across the three inits) of the training part.
        lrs: learning rates tried per init (the lowest median final loss is kept).
        train_steps: GD steps of every run.
        n_save: log-spaced saved steps of the training curves.
        test_fraction: share of the digits held out for testing.
    """

    seed: int = 0
    preset: str = setting("default", choices=("default", "full"))
    rank: tuple[int, ...] = setting((1, 2, 4, 8), ge=1)
    d: tuple[int, ...] = setting((4, 8, 16, 32, 64), ge=1)
    width_powers: tuple[float, ...] = setting((1.0, 1.5), ge=1.0)
    seeds: int = setting(5, ge=2)
    iters: int = setting(10, ge=0)
    ref_max_d: int = 4
    ref_starts: int = setting(2, ge=0)
    ref_steps: int = setting(1000, ge=1)
    grid_max_d: int = setting(4, le=5, why="the grid's size grows as points^(r (d - r))")
    grid_points: int = setting(11, ge=2)
    archs: tuple[str, ...] = setting(ARCHS, choices=ARCHS)
    train_rank: int = setting(4, ge=1, le=("train_width", 64),
                              why="the digits have 64 features")
    train_width: int = 128
    train_seeds: int = setting(5, ge=2)
    lrs: tuple[float, ...] = setting((1.0, 4.0, 16.0), gt=0)
    train_steps: int = setting(400, ge=2)
    n_save: int = setting(16, ge=2)
    test_fraction: float = setting(0.3, gt=0, lt=1)


def with_preset(cfg: Config) -> Config:
    """``cfg`` with the :data:`FULL` values wherever a setting is at its default (``full``)."""
    return cfg.with_preset(FULL, "full")


def width_for(d: int, power: float) -> int:
    """Width of W0: ``ceil(d ** power)``."""
    return int(math.ceil(d**power - 1e-9))


def width_tag(power: float) -> str:
    """Summary-key tag of a width law: ``m_d1`` (m = d), ``m_d1_5`` (m = d^1.5), ..."""
    return "m_d" + f"{power:g}".replace(".", "_")


def _approximation(cfg: Config, key) -> np.ndarray:
    """Relative population errors over (width law, method, d, rank, seed), float64."""
    err = np.full((len(cfg.width_powers), len(METHODS), len(cfg.d), len(cfg.rank), cfg.seeds),
                  np.nan)
    with jax.enable_x64(True):
        for (p, power), (i, d), s in itertools.product(enumerate(cfg.width_powers),
                                                       enumerate(cfg.d), range(cfg.seeds)):
            k = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, p), d), s)
            m = width_for(d, power)
            W0 = jax.random.normal(k, (m, d), dtype=np.float64)
            for j, r in ((j, r) for j, r in enumerate(cfg.rank) if r <= min(m, d)):
                fac = lowrank_grid.all_methods(
                    W0, r, jax.random.fold_in(k, r), iters=cfg.iters, ref_max_d=cfg.ref_max_d,
                    ref_starts=cfg.ref_starts, ref_steps=cfg.ref_steps,
                    grid_max_d=cfg.grid_max_d, grid_points=cfg.grid_points)
                for meth, (U, V) in fac.items():
                    err[p, METHODS.index(meth), i, j, s] = float(
                        lowrank.relative_error(W0, U @ V.T))
    return err


def _spread(v) -> list[float]:
    return [float(np.mean(v)), float(np.min(v)), float(np.max(v))]


def _approx_summary(cfg: Config, err) -> dict:
    M = {meth: k for k, meth in enumerate(METHODS)}
    i_d, j_r, D, R = int(np.argmax(cfg.d)), int(np.argmin(cfg.rank)), max(cfg.d), min(cfg.rank)
    out = {"approx_seeds": cfg.seeds, "approx_d_for_by_rank": D, "approx_rank_for_by_d": R}
    ranks = [j for j, r in enumerate(cfg.rank) if r < D]
    dims = [i for i, d in enumerate(cfg.d) if R < d]
    for p, power in enumerate(cfg.width_powers):
        tag, e = width_tag(power), err[p]
        gap = e[M["spectral"]] - e[M["function"]]  # (d, rank, seed)
        out[f"approx_width_{tag}"] = {str(d): width_for(d, power) for d in cfg.d}
        out |= {f"approx_rel_error_{meth}_by_rank_{tag}": {
            str(cfg.rank[j]): _spread(e[M[meth], i_d, j]) for j in ranks}
            for meth in ("spectral", "function")}
        out[f"approx_gap_by_rank_{tag}"] = {str(cfg.rank[j]): _spread(gap[i_d, j]) for j in ranks}
        out[f"approx_gap_by_d_{tag}"] = {str(cfg.d[i]): _spread(gap[i, j_r]) for i in dims}
        out |= stats.trend_keys(f"approx_gap_falls_with_rank_{tag}",
                                [cfg.rank[j] for j in ranks], gap[i_d, ranks], -1)
        out |= stats.trend_keys(f"approx_gap_grows_with_d_{tag}", [cfg.d[i] for i in dims],
                                gap[dims, j_r], +1)
    best = np.fmin(err[:, M["reference"]], err[:, M["grid"]])  # where a strong solver ran
    for meth in ("spectral", "function", "function_svd_subspace"):
        out[f"approx_{meth}_minus_best_max"] = float(np.nanmax(err[:, M[meth]] - best)) \
            if np.isfinite(best).any() else float("nan")
    out["approx_svd_subspace_minus_function_max"] = float(np.nanmax(
        err[:, M["function_svd_subspace"]] - err[:, M["function"]]))
    return out


def _nets(cfg: Config, arch: str):
    m, r, kw = cfg.train_width, cfg.train_rank, {"function": {"iters": cfg.iters}}
    full, low, fac = ((gflow.TwoLayer(m), gflow.LowRankTwoLayer(m, r), lowrank.factorize)
                      if arch == "two_layer" else (gflow.MLP((m, m)), LowRankMLP((m, m), r),
                                                   factorize_mlp))
    return full, low, lambda p, meth: fac(p, r, meth, **kw.get(meth, {}))


def _train(cfg: Config, key, progress: bool):
    """Observables over (arch, init, lr, seed, step) on the digits, NaN after a divergence."""
    k_dig, k_init = jax.random.split(key)
    steps = np.concatenate([[0.0], np.unique(np.round(np.geomspace(1, cfg.train_steps,
                                                                    cfg.n_save - 1)))])
    shape = (len(cfg.archs), len(INITS), len(cfg.lrs), cfg.train_seeds, steps.size)
    out = {v: np.full(shape, np.nan) for v in OBSERVE}
    data = digits(k_dig, test_fraction=cfg.test_fraction)
    for (b, arch), s in itertools.product(enumerate(cfg.archs), range(cfg.train_seeds)):
        full, low, fac = _nets(cfg, arch)
        p_full = gflow.init.gaussian(jax.random.fold_in(k_init, s), full, data.d)
        runs = {"full": (full, p_full)} | {m: (low, fac(p_full, m)) for m in INITS[1:]}
        res = lr_grid(runs, data, cfg.lrs, steps, observe=OBSERVE, progress=progress)
        for v in OBSERVE:
            out[v][b, :, :, s] = res[v]
    return out, steps


def tuned_lrs(ds) -> dict:
    """Per init, the learning rate with the lowest median (over seeds) final training loss
    (a diverged run counts as infinite); ``ds`` has dims (init, lr, seed, step)."""
    final = ds["loss"].isel(step=-1).fillna(np.inf).median("seed")
    return {str(i): float(final.sel(init=i).idxmin("lr")) for i in ds["init"].values}


def _train_summary(cfg: Config, ds) -> dict:
    out = {"train_rank": cfg.train_rank, "train_seeds": cfg.train_seeds,
           "train_steps": cfg.train_steps}
    steps = ds["step"].values[1:]
    for arch in cfg.archs:
        sfx, sel = f"{arch}_digits", ds.sel(arch=arch)
        best = tuned_lrs(sel)
        tuned = {init: sel.sel(init=init, lr=lr) for init, lr in best.items()}
        for init, run in tuned.items():
            out[f"lr_{init}_{sfx}"] = best[init]  # at the grid's edge: the tuning is censored
            out[f"lr_{init}_{sfx}_at_grid_edge"] = best[init] in (min(cfg.lrs), max(cfg.lrs))
            out |= {f"final_{v}_{init}_{sfx}": _spread(run[v].isel(step=-1)) for v in OBSERVE}
        for v in ("loss", "test_loss"):
            lead = stats.paired_lead(tuned["function"][v].values[:, 1:],
                                     tuned["spectral"][v].values[:, 1:])
            out[f"function_ahead_{v}_steps_{sfx}"] = [int(t) for t in steps[lead["ahead"]]]
            out[f"function_behind_{v}_steps_{sfx}"] = [int(t) for t in steps[lead["behind"]]]
            out[f"function_lead_{v}_lasts_until_step_{sfx}"] = (
                int(steps[lead["lead_until"]]) if lead["lead_until"] >= 0 else 0)
            out[f"verdict_function_vs_spectral_{v}_{sfx}"] = stats.lead_verdict(
                lead, steps, what="function-space (A) ahead of spectral (B)")
    return out


def run(cfg: Config, *, progress: bool = False) -> Result:
    import xarray as xr

    cfg = with_preset(cfg)
    k_approx, k_train = jax.random.split(jax.random.key(cfg.seed))
    err = _approximation(cfg, k_approx)
    obs, steps = _train(cfg, k_train, progress)
    widths = [[width_for(d, p) for d in cfg.d] for p in cfg.width_powers]
    tdims = ("arch", "init", "lr", "seed", "step")
    approx = xr.Dataset(  # closed-form errors: no time axis
        {"rel_error": (("width_power", "scheme", "d", "rank", "approx_seed"), err),
         "width": (("width_power", "d"), np.asarray(widths))},
        coords={"width_power": list(cfg.width_powers), "scheme": list(METHODS), "d": list(cfg.d),
                "rank": list(cfg.rank)})
    train = xr.Dataset({v: (tdims, obs[v]) for v in OBSERVE}, coords={
        "arch": list(cfg.archs), "init": list(INITS), "lr": list(cfg.lrs), "seed": np.arange(
            cfg.train_seeds), "step": steps, "time": (("lr", "step"), np.outer(cfg.lrs, steps))})
    ds = {"approximation": approx, "training": train}
    s, tag = _approx_summary(cfg, err) | _train_summary(cfg, train), width_tag(
        max(cfg.width_powers))
    s["claims"] = from_keys(s, {
        "gap_grows_as_rank_falls": f"verdict_approx_gap_falls_with_rank_{tag}",
        "gap_grows_with_d": f"verdict_approx_gap_grows_with_d_{tag}"} | {
        f"function_init_trains_better_{a}": f"verdict_function_vs_spectral_test_loss_{a}_digits"
        for a in cfg.archs})
    return Result(summary=s, dataset=ds)


def figures(tree, cfg: Config) -> dict:
    from gflow.plot import bands, caption, panels, style

    ds, train = tree["approximation"], tree["training"]
    fmt = {"spectral": "o-", "function": "s-", "function_svd_subspace": "x:",
           "reference": "^--", "grid": "v--"}
    wp, d_max = list(ds["width_power"].values), int(ds["d"].max())
    fig, axes = panels(2 * len(wp), size=(4.0, 3.6))
    for p, power in enumerate(wp):
        tag, e = f"m = ceil(d^{power:g})", ds["rel_error"].sel(width_power=power)
        bands(axes[p], ds["rank"].values, {str(m): e.sel(scheme=m, d=d_max).values.T
                                           for m in ds["scheme"].values}, fmt=fmt)
        style(axes[p], x="log2", xlabel="rank r", ylabel="relative layer error",
              title=f"d = {d_max}, {tag}", legend=7)
        gap = e.sel(scheme="spectral") - e.sel(scheme="function")
        gap = gap.where(gap["d"] > gap["rank"]).transpose("rank", "approx_seed", "d")  # r < d
        bands(axes[len(wp) + p], ds["d"].values, {f"r = {r}": gap.sel(rank=r).values
                                                   for r in ds["rank"].values}, min_points=2)
        style(axes[len(wp) + p], x="log2", y="log", xlabel="input dimension d",
              ylabel="gap: spectral - function-space", title=tag, legend=7)
    figs = {"approximation": caption(
        fig, f"Closed-form Gaussian-input errors, median and range over "
        f"{ds.sizes['approx_seed']} W0 per point. {CITE}.",
        title="ReLU layer approximation by rank-r weights")}
    ds = train
    fig, axes = panels(2, nrows=ds.sizes["arch"], size=(4.6, 3.6))
    for i, arch in enumerate(ds["arch"].values):
        sel = ds.sel(arch=arch)
        for j, v in enumerate(("loss", "test_loss")):
            ax = np.asarray(axes).reshape(-1, 2)[i, j]
            bands(ax, ds["step"].values[1:], {f"{init} (lr {lr:g})": sel[v].sel(
                init=init, lr=lr).values[:, 1:] for init, lr in tuned_lrs(sel).items()}, fmt="-")
            style(ax, x="log", y="log", xlabel="GD step", ylabel=v.replace("_", " "),
                  title=f"{arch}, digits", legend=7)
    figs["training_digits"] = caption(
        fig, f"Rank {cfg.train_rank} nets (every hidden weight U V^T) from spectral and "
        f"function-space inits of the full-rank init, and the full-rank net; width "
        f"{cfg.train_width}, NTK scaling, logistic loss, GD at the learning rate of "
        f"{list(cfg.lrs)} with the lowest median final loss; median and range over "
        f"{ds.sizes['seed']} seeds. {CITE}.", title="Training from each init (digits)")
    return figs

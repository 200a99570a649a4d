"""Low-rank layers: spectral vs function-space initialization (Vodrahalli et al., arXiv 2202.00834).

Vodrahalli, Shivanna, Sathiamoorthy, Jain, Chi, "Nonlinear Initialization Methods for
Low-Rank Neural Networks", arXiv 2202.00834 (2022).

Part 1, approximation: for each input dimension ``d`` in ``cfg.d`` a full-rank Gaussian
``W0`` (m, d) with width ``m = ceil(d ** width_power)`` (super-linear in d), and each rank
``r`` in ``cfg.rank`` (``r < d``), the relative layer-function error
``sqrt(E|relu(W0 x) - relu(U V^T x)|^2 / E|relu(W0 x)|^2)`` on ``n_fresh`` fresh Gaussian
inputs, for the spectral init (truncated SVD), the function-space init (practical
algorithm of :mod:`gflow.lowrank`), its first stage alone (SVD subspace, rows rescaled) and,
for ``d <= ref_max_d``, the reference solver (Adam on the closed-form error from the
spectral start and random starts).

Part 2, training: one full-rank Gaussian init of a two-layer ReLU net (NTK scaling, no bias,
outer weights ``a = +-1``) is trained by GD with the logistic loss, and so is the rank
``train_rank`` net ``f(x) = m^-1/2 sum_j a_j relu((U V^T x)_j)`` from each init of that same
``W0`` (``U``, ``V`` and ``a`` all trained; same ``a``, same data, same steps), on teacher
data (sign labels, inputs on the sphere) and on scikit-learn's digits (digit < 5 vs >= 5,
:func:`gflow.datasets.digits`).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

import gflow
from gflow import lowrank
from gflow.datasets import digits

from . import Result, Settings, setting

METHODS = ("spectral", "function", "function_svd_subspace", "reference")
INITS = ("full", "spectral", "function")
DATASETS = ("teacher", "digits")
OBSERVE = ("loss", "accuracy", "test_loss", "test_accuracy")


#: measured wall time of ``gflow run lowrank_init`` with the defaults
RUN_TIME = 'about 55 s of CPU time on 2 CPU cores (135 s wall with the cores shared, load 9)'


@dataclasses.dataclass(frozen=True)
class Config(Settings):
    """Settings of the low-rank approximation and training study.

    Attributes:
        seed: seed of W0, the inputs, the data splits and the inits.
        rank: ranks r of the approximation (each r < d is run).
        d: input dimensions of the approximation part.
        width_power: the width m = ceil(d ** width_power) of W0 (m, d).
        n_fresh: fresh Gaussian inputs on which the layer-function error is measured.
        iters: iterations of the function-space init's second stage.
        ref_max_d: largest d at which the reference solver runs.
        ref_starts: random starts of the reference solver (besides the spectral one).
        ref_steps: Adam steps of the reference solver per start.
        datasets: data of the training part (``teacher``: synthetic; ``digits``:
            scikit-learn's digits, digit < 5 vs >= 5).
        train_rank: rank of the low-rank nets trained.
        train_seeds: seeds (inits) of the training part.
        train_width: neurons m of the trained nets.
        synth_n: training points of the teacher data.
        synth_d: input dimension of the teacher data.
        synth_teacher_width: neurons of the teacher.
        test_fraction: share of each dataset held out for testing.
        lr: GD's learning rate.
        t1: end time of training (t = step x lr).
        n_save: log-spaced save points of the training curves.
    """

    seed: int = 0
    rank: tuple[int, ...] = setting((1, 2, 4, 8), ge=1)
    d: tuple[int, ...] = setting((8, 16, 32, 64), ge=1)
    width_power: float = 1.5
    n_fresh: int = 20000
    iters: int = 10
    ref_max_d: int = 8
    ref_starts: int = 2
    ref_steps: int = 1000
    datasets: tuple[str, ...] = setting(("teacher", "digits"), choices=DATASETS)
    train_rank: int = setting(4, ge=1, le=("synth_d", "train_width", 64),
                              why="the digits have 64 features")
    train_seeds: int = setting(3, ge=1)
    train_width: int = 256
    synth_n: int = 400
    synth_d: int = 32
    synth_teacher_width: int = 4
    test_fraction: float = setting(0.3, gt=0, lt=1)
    lr: float = 1.0
    t1: float = 1000.0
    n_save: int = 30


def width_for(d: int, power: float) -> int:
    """Width super-linear in d: ``ceil(d ** power)``."""
    return int(math.ceil(d**power - 1e-9))


def _approximation(cfg: Config, key):
    """Relative errors (fresh-sample and population) over (scheme, d, rank)."""
    err = np.full((len(METHODS), len(cfg.d), len(cfg.rank)), np.nan)
    pop = np.full_like(err, np.nan)
    for i, d in enumerate(cfg.d):
        m = width_for(d, cfg.width_power)
        kw, kx, kr = jax.random.split(jax.random.fold_in(key, d), 3)
        W0 = jax.random.normal(kw, (m, d), dtype=jnp.result_type(float))
        X = jax.random.normal(kx, (cfg.n_fresh, d), dtype=W0.dtype)
        for j, r in ((j, r) for j, r in enumerate(cfg.rank) if r <= min(m, d)):
            fac = {"spectral": lowrank.spectral(W0, r),
                   "function": lowrank.function_space(W0, r, iters=cfg.iters),
                   "function_svd_subspace": lowrank.function_space(W0, r, iters=0)}
            if d <= cfg.ref_max_d:
                fac["reference"] = lowrank.reference(
                    W0, r, jax.random.fold_in(kr, r), starts=[fac["spectral"]],
                    n_random=cfg.ref_starts, steps=cfg.ref_steps)
            for k, (U, V) in ((METHODS.index(meth), f) for meth, f in fac.items()):
                err[k, i, j] = float(lowrank.relative_error(W0, U @ V.T, X))
                pop[k, i, j] = float(lowrank.relative_error(W0, U @ V.T))
    return err, pop


def _train(cfg: Config, key, progress: bool):
    k_syn, k_dig, k_init = jax.random.split(key, 3)
    m, r = cfg.train_width, cfg.train_rank
    full_net = gflow.TwoLayer(m, "relu", scaling="ntk", bias=False, train_outer=True)
    low_net = gflow.LowRankTwoLayer(m, r, "relu", scaling="ntk", bias=False, train_outer=True)
    ts = gflow.LogTimes(cfg.n_save, t_min=cfg.lr).resolve(cfg.t1)
    ts = np.unique(np.round(ts / cfg.lr)) * cfg.lr
    trajs, extra = {}, {}
    for name in cfg.datasets:
        data = digits(k_dig, test_fraction=cfg.test_fraction) if name == "digits" else \
            gflow.data.teacher(k_syn, cfg.synth_n, cfg.synth_d, cfg.synth_teacher_width,
                               labels="sign")
        for seed in range(cfg.train_seeds):
            k = jax.random.fold_in(jax.random.fold_in(k_init, data.d), seed)
            p_full = gflow.init.gaussian(k, full_net, data.d)
            runs = {"full": (full_net, p_full),
                    "spectral": (low_net, lowrank.factorize(p_full, r, "spectral")),
                    "function": (low_net, lowrank.factorize(p_full, r, "function",
                                                            iters=cfg.iters))}
            f_full = full_net.apply(p_full, data.X_test)
            for meth in ("spectral", "function"):
                f = low_net.apply(runs[meth][1], data.X_test)
                # layer error on this data's test inputs (not Gaussian inputs)
                for key_, v in ((f"init_output_rel_diff_{meth}_{name}",
                                 jnp.linalg.norm(f - f_full) / jnp.linalg.norm(f_full)),
                                (f"rel_error_data_{meth}_{name}", lowrank.relative_error(
                                    p_full.W, low_net.weight(runs[meth][1]), data.X_test))):
                    extra[key_] = extra.get(key_, 0.0) + float(v) / cfg.train_seeds
            for init, (net, p0) in runs.items():
                trajs[(name, init, seed)] = gflow.simulate(
                    net, p0, data, loss="logistic", dynamics=gflow.GD(lr=cfg.lr), t1=cfg.t1,
                    save=ts, observe=OBSERVE, progress=progress)
    return trajs, extra


def _stack(trajs):
    """Observables over (data, init, seed, time), without parameters (shapes differ)."""
    import xarray as xr

    names = list(dict.fromkeys(key[0] for key in trajs))
    return xr.concat([gflow.trajectory.combine(
        {key[1:]: tr.without_params() for key, tr in trajs.items() if key[0] == name},
        ("init", "seed")) for name in names], dim="data", join="outer").assign_coords(data=names)


def _training_summary(cfg: Config, trajs) -> dict:
    # an intermediate time: the saved time closest to sqrt(lr * t1) (log-midpoint)
    times = next(iter(trajs.values())).times
    i_mid = int(np.argmin(np.abs(np.log(np.maximum(times, 1e-300)) - 0.5 * math.log(
        cfg.lr * cfg.t1))))
    out = {"train_rank": cfg.train_rank, "t_mid": float(times[i_mid]),
           "train_seeds": cfg.train_seeds}
    for name in cfg.datasets:
        # the headline keys (no suffix) are for digits, or the last data set trained on;
        # values are means over the training seeds (independent full-rank inits W0, a)
        sfx = "" if name == cfg.datasets[-1] else f"_{name}"
        acc, mid = {}, {}
        for init in INITS:
            runs = [trajs[(name, init, seed)] for seed in range(cfg.train_seeds)]
            acc[init] = np.array([float(tr["test_accuracy"][-1]) for tr in runs])
            mid[init] = np.array([float(tr["loss"][i_mid]) for tr in runs])
            bad = [tr.status for tr in runs if tr.status != "completed"]
            out |= {f"final_test_acc_{init}{sfx}": float(acc[init].mean()),
                    f"final_test_acc_{init}{sfx}_std": float(acc[init].std()),
                    f"final_loss_{init}{sfx}": float(np.mean([tr["loss"][-1] for tr in runs])),
                    f"loss_mid_{init}{sfx}": float(mid[init].mean()),
                    f"status_{init}{sfx}": bad[0] if bad else "completed"}
        # per seed: how often the function-space init is ahead of the spectral one
        fn, sp = "function", "spectral"
        out[f"seeds_function_lower_loss_mid{sfx}"] = int(np.sum(mid[fn] < mid[sp]))
        out[f"seeds_function_higher_test_acc{sfx}"] = int(np.sum(acc[fn] > acc[sp]))
    return out


def run(cfg: Config, *, progress: bool = False) -> Result:
    import xarray as xr

    k_approx, k_train = jax.random.split(jax.random.key(cfg.seed))
    err, pop = _approximation(cfg, k_approx)
    trajs, extra = _train(cfg, k_train, progress)
    widths, dims = [width_for(d, cfg.width_power) for d in cfg.d], ("scheme", "d", "rank")
    ds = xr.merge([xr.Dataset({"rel_error": (dims, err), "rel_error_population": (dims, pop),
                               "width": (("d",), np.asarray(widths))}, coords={
        "scheme": list(METHODS), "d": list(cfg.d), "rank": list(cfg.rank)}), _stack(trajs)])

    i_d, j_r = int(np.argmax(cfg.d)), int(np.argmin(cfg.rank))
    k = {meth: METHODS.index(meth) for meth in METHODS}
    by_rank = {meth: {str(r): float(err[k[meth], i_d, j]) for j, r in enumerate(cfg.rank)
                      if np.isfinite(err[k[meth], i_d, j])} for meth in METHODS[:3]}
    by_d = {meth: {str(d): float(err[k[meth], i, j_r]) for i, d in enumerate(cfg.d)
                   if np.isfinite(err[k[meth], i, j_r])} for meth in METHODS[:2]}
    summary = {"d_for_by_rank": int(cfg.d[i_d]), "width_for_by_rank": int(widths[i_d])}
    summary |= {f"rel_error_{meth}_by_rank": v for meth, v in by_rank.items()}
    summary |= {"rank_for_by_d": int(cfg.rank[j_r])}
    summary |= {f"rel_error_{meth}_by_d": v for meth, v in by_d.items()}
    summary["gap_by_rank"] = {r: by_rank["spectral"][r] - v for r, v in by_rank["function"].items()}
    summary["gap_by_d"] = {d: by_d["spectral"][d] - v for d, v in by_d["function"].items()}
    ref = np.isfinite(pop[k["reference"]])
    if ref.any():
        # practical algorithm minus reference solver, in relative population error (> 0: the
        # reference found a better rank-r layer); full rank (error ~ 0) included
        for meth in ("function", "spectral"):
            summary[f"{meth}_minus_reference_max"] = float(
                np.max(pop[k[meth]][ref] - pop[k["reference"]][ref]))
    summary |= _training_summary(cfg, trajs) | extra
    return Result(summary=summary, dataset=ds)


def figures(ds, cfg: Config) -> dict:
    from gflow.plot import caption, curves, panels, style

    cite, figs = "Vodrahalli et al., arXiv 2202.00834", {}

    # approximation error vs rank, one panel per d
    dvals = list(ds["d"].values)
    fig, axes = panels(len(dvals), size=(3.6, 3.6), sharey=True)
    fmt = {"spectral": "o-", "function": "s-", "function_svd_subspace": "x:", "reference": "^--"}
    for ax, d in zip(axes, dvals, strict=True):
        for meth in ds["scheme"].values:
            y = ds["rel_error"].sel(scheme=meth, d=d).values
            if np.isfinite(y).any():
                ax.plot(ds["rank"].values, y, fmt[str(meth)], label=str(meth))
        style(ax, x="log2", xlabel="rank r", title=f"d = {d}, m = {int(ds['width'].sel(d=d))}",
              legend=8 if ax is axes[0] else None)
    axes[0].set_ylabel("relative layer error (fresh inputs)")
    figs["error_vs_rank"] = caption(fig, title="ReLU layer approximation by rank-r weights: "
                                    f"spectral vs function-space ({cite})")

    # error and gap vs d, one line per rank
    fig, (ax1, ax2) = panels(2, size=(5, 4))
    for r in ds["rank"].values:
        es, ef = (ds["rel_error"].sel(scheme=m, rank=r).values for m in ("spectral", "function"))
        if not np.isfinite(es).any():
            continue
        line, = ax1.plot(dvals, es, "o-", label=f"spectral r={r}")
        ax1.plot(dvals, ef, "s--", color=line.get_color(), label=f"function r={r}")
        ax2.plot(dvals, es - ef, "o-", color=line.get_color(), label=f"r={r}")
    xlabel = f"input dimension d (width m = ceil(d^{cfg.width_power:g}))"
    style(ax1, x="log2", xlabel=xlabel, ylabel="relative layer error", legend=None)
    ax1.legend(fontsize=7, ncol=2)
    style(ax2, x="log2", xlabel=xlabel, ylabel="gap: spectral - function-space", legend=8)
    figs["error_vs_d"] = caption(fig, title=f"Error vs input dimension ({cite})")

    runs = ds[["loss", "test_accuracy"]].mean("seed")
    setup = (f"mean over {ds.sizes['seed']} seeds; two-layer ReLU, NTK scaling, "
             f"m={cfg.train_width}; rank {cfg.train_rank} "
             f"(U, V, a trained) from spectral / function-space init vs the full-rank net from "
             f"the same W0; GD lr={cfg.lr}, logistic loss. {cite}.")
    figs["train_loss"] = curves(runs, "loss", panel="data", hue="init", ylabel="training loss",
                                title="Low-rank training from each init vs full rank",
                                caption=setup)
    figs["test_accuracy"] = curves(runs, "test_accuracy", panel="data", hue="init", logy=False,
                                   ylabel="test accuracy", title="Test accuracy", caption=setup)
    return figs

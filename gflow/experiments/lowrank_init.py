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
data (sign labels, inputs on the sphere) and on scikit-learn's digits (digit < 5 vs >= 5;
features standardized on the training split, then every input scaled to unit norm).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

import gflow
from gflow import lowrank

from . import Result, Settings, setting

METHODS = ("spectral", "function", "function_svd_subspace", "reference")
INITS = ("full", "spectral", "function")
DATASETS = ("teacher", "digits")
OBSERVE = ("loss", "accuracy", "test_loss", "test_accuracy")


@dataclasses.dataclass(frozen=True)
class Config(Settings):
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


def digits(key, *, test_fraction: float = 0.3) -> gflow.Dataset:
    """scikit-learn's digits as a binary task: ``y = +1`` for digits >= 5, ``-1`` for < 5.

    A random train/test split (``key``); features standardized with the training mean and
    standard deviation, then every input scaled to unit norm. ``meta["digit"]`` holds the
    original labels of the training split.
    """
    from sklearn.datasets import load_digits

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}.")
    X, digit = load_digits(return_X_y=True)
    perm = np.asarray(jax.random.permutation(key, X.shape[0]))
    n_test = int(round(test_fraction * X.shape[0]))
    te, tr = perm[:n_test], perm[n_test:]
    mu, sd = X[tr].mean(0), X[tr].std(0)
    Z = (X - mu) / np.where(sd > 0, sd, 1.0)
    Z = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    y = np.where(digit >= 5, 1.0, -1.0)
    return gflow.Dataset(Z[tr], y[tr], Z[te], y[te], meta={"digit": digit[tr]})


def _approximation(cfg: Config, key):
    """Relative errors (fresh-sample and population) over (scheme, d, rank)."""
    shape = (len(METHODS), len(cfg.d), len(cfg.rank))
    err = np.full(shape, np.nan)
    pop = np.full(shape, np.nan)
    for i, d in enumerate(cfg.d):
        m = width_for(d, cfg.width_power)
        kw, kx, kr = jax.random.split(jax.random.fold_in(key, d), 3)
        W0 = jax.random.normal(kw, (m, d), dtype=jnp.result_type(float))
        X = jax.random.normal(kx, (cfg.n_fresh, d), dtype=W0.dtype)
        for j, r in enumerate(cfg.rank):
            if r > min(m, d):
                continue
            Us, Vs = lowrank.spectral(W0, r)
            fac = {"spectral": (Us, Vs),
                   "function": lowrank.function_space(W0, r, iters=cfg.iters),
                   "function_svd_subspace": lowrank.function_space(W0, r, iters=0)}
            if d <= cfg.ref_max_d:
                fac["reference"] = lowrank.reference(
                    W0, r, jax.random.fold_in(kr, r), starts=[(Us, Vs)],
                    n_random=cfg.ref_starts, steps=cfg.ref_steps)
            for k, meth in enumerate(METHODS):
                if meth in fac:
                    U, V = fac[meth]
                    err[k, i, j] = float(lowrank.relative_error(W0, U @ V.T, X))
                    pop[k, i, j] = float(lowrank.relative_error(W0, U @ V.T))
    return err, pop


def _train(cfg: Config, key, progress: bool):
    k_syn, k_dig, k_init = jax.random.split(key, 3)
    make = {
        "teacher": lambda: gflow.data.teacher(k_syn, cfg.synth_n, cfg.synth_d,
                                              cfg.synth_teacher_width, labels="sign"),
        "digits": lambda: digits(k_dig, test_fraction=cfg.test_fraction),
    }
    datasets = {name: make[name]() for name in cfg.datasets}
    m, r = cfg.train_width, cfg.train_rank
    full_net = gflow.TwoLayer(m, "relu", scaling="ntk", bias=False, train_outer=True)
    low_net = gflow.LowRankTwoLayer(m, r, "relu", scaling="ntk", bias=False, train_outer=True)
    ts = gflow.LogTimes(cfg.n_save, t_min=cfg.lr).resolve(cfg.t1)
    ts = np.unique(np.round(ts / cfg.lr)) * cfg.lr
    trajs, extra = {}, {}
    for name, data in datasets.items():
        for seed in range(cfg.train_seeds):
            k = jax.random.fold_in(jax.random.fold_in(k_init, data.d), seed)
            p_full = gflow.init.gaussian(k, full_net, data.d)
            runs = {"full": (full_net, p_full)}
            for meth in ("spectral", "function"):
                kw = {"iters": cfg.iters} if meth == "function" else {}
                runs[meth] = (low_net, lowrank.factorize(p_full, r, meth, **kw))
            f_full = full_net.apply(p_full, data.X_test)
            for meth in ("spectral", "function"):
                net, p = runs[meth]
                f = net.apply(p, data.X_test)
                diff = float(jnp.linalg.norm(f - f_full) / jnp.linalg.norm(f_full))
                # layer error on this data's test inputs (not Gaussian inputs)
                lay = float(lowrank.relative_error(p_full.W, net.weight(p), data.X_test))
                for key_, v in ((f"init_output_rel_diff_{meth}_{name}", diff),
                                (f"rel_error_data_{meth}_{name}", lay)):
                    extra[key_] = extra.get(key_, 0.0) + v / cfg.train_seeds
            for init, (net, p0) in runs.items():
                trajs[(name, init, seed)] = gflow.simulate(
                    net, p0, data, loss="logistic", dynamics=gflow.GD(lr=cfg.lr), t1=cfg.t1,
                    save=ts, observe=OBSERVE, progress=progress)
    return trajs, extra


def _stack(trajs):
    """Observables over (data, init, seed, time); parameters are left out (their shapes
    differ between data sets)."""
    import xarray as xr

    names = list(dict.fromkeys(key[0] for key in trajs))
    per_data = []
    for name in names:
        per_data.append(gflow.trajectory.combine(
            {key[1:]: tr.without_params() for key, tr in trajs.items() if key[0] == name},
            ("init", "seed")))
    return xr.concat(per_data, dim="data", join="outer").assign_coords(data=names)


def run(cfg: Config, *, progress: bool = False) -> Result:
    import xarray as xr

    k_approx, k_train = jax.random.split(jax.random.key(cfg.seed))
    err, pop = _approximation(cfg, k_approx)
    trajs, extra = _train(cfg, k_train, progress)

    widths = [width_for(d, cfg.width_power) for d in cfg.d]
    coords = {"scheme": list(METHODS), "d": list(cfg.d), "rank": list(cfg.rank)}
    approx = xr.Dataset(
        {"rel_error": (("scheme", "d", "rank"), err),
         "rel_error_population": (("scheme", "d", "rank"), pop),
         "width": (("d",), np.asarray(widths))},
        coords=coords)
    ds = xr.merge([approx, _stack(trajs)])

    i_d = int(np.argmax(cfg.d))
    j_r = int(np.argmin(cfg.rank))
    k = {meth: METHODS.index(meth) for meth in METHODS}
    by_rank = lambda meth: {  # noqa: E731
        str(r): float(err[k[meth], i_d, j]) for j, r in enumerate(cfg.rank)
        if np.isfinite(err[k[meth], i_d, j])}
    by_d = lambda meth: {  # noqa: E731
        str(d): float(err[k[meth], i, j_r]) for i, d in enumerate(cfg.d)
        if np.isfinite(err[k[meth], i, j_r])}
    summary = {
        "d_for_by_rank": int(cfg.d[i_d]),
        "width_for_by_rank": int(widths[i_d]),
        "rel_error_spectral_by_rank": by_rank("spectral"),
        "rel_error_function_by_rank": by_rank("function"),
        "rel_error_function_svd_subspace_by_rank": by_rank("function_svd_subspace"),
        "rank_for_by_d": int(cfg.rank[j_r]),
        "rel_error_spectral_by_d": by_d("spectral"),
        "rel_error_function_by_d": by_d("function"),
    }
    summary["gap_by_rank"] = {r: summary["rel_error_spectral_by_rank"][r] - v
                              for r, v in summary["rel_error_function_by_rank"].items()}
    summary["gap_by_d"] = {d: summary["rel_error_spectral_by_d"][d] - v
                           for d, v in summary["rel_error_function_by_d"].items()}
    ref = np.isfinite(pop[k["reference"]])
    if ref.any():
        # practical algorithm minus reference solver, in relative population error (> 0: the
        # reference found a better rank-r layer); full rank (error ~ 0) included
        for meth in ("function", "spectral"):
            summary[f"{meth}_minus_reference_max"] = float(
                np.max(pop[k[meth]][ref] - pop[k["reference"]][ref]))
    summary["train_rank"] = cfg.train_rank
    # an intermediate time: the saved time closest to sqrt(lr * t1) (log-midpoint)
    times = next(iter(trajs.values())).times
    i_mid = int(np.argmin(np.abs(np.log(np.maximum(times, 1e-300)) - 0.5 * math.log(
        cfg.lr * cfg.t1))))
    summary["t_mid"] = float(times[i_mid])
    summary["train_seeds"] = cfg.train_seeds
    for name in cfg.datasets:
        # the headline keys (no suffix) are for digits, or the last data set trained on;
        # values are means over the training seeds (independent full-rank inits W0, a)
        sfx = "" if name == cfg.datasets[-1] else f"_{name}"
        val = {}
        for init in INITS:
            runs = [trajs[(name, init, seed)] for seed in range(cfg.train_seeds)]
            acc = np.array([float(tr["test_accuracy"][-1]) for tr in runs])
            val[init] = {"acc": acc, "mid": np.array([float(tr["loss"][i_mid]) for tr in runs])}
            summary[f"final_test_acc_{init}{sfx}"] = float(acc.mean())
            summary[f"final_test_acc_{init}{sfx}_std"] = float(acc.std())
            summary[f"final_loss_{init}{sfx}"] = float(np.mean([tr["loss"][-1] for tr in runs]))
            summary[f"loss_mid_{init}{sfx}"] = float(val[init]["mid"].mean())
            bad = [tr.status for tr in runs if tr.status != "completed"]
            summary[f"status_{init}{sfx}"] = bad[0] if bad else "completed"
        # per seed: how often the function-space init is ahead of the spectral one
        summary[f"seeds_function_lower_loss_mid{sfx}"] = int(
            np.sum(val["function"]["mid"] < val["spectral"]["mid"]))
        summary[f"seeds_function_higher_test_acc{sfx}"] = int(
            np.sum(val["function"]["acc"] > val["spectral"]["acc"]))
    summary.update(extra)
    return Result(summary=summary, dataset=ds)


def figures(ds, cfg: Config) -> dict:
    import matplotlib.pyplot as plt

    from gflow.plot import curves

    cite = "Vodrahalli et al., arXiv 2202.00834"
    figs = {}

    # approximation error vs rank, one panel per d
    dvals = list(ds["d"].values)
    fig, axes = plt.subplots(1, len(dvals), figsize=(3.6 * len(dvals), 3.6), squeeze=False,
                             sharey=True)
    style = {"spectral": "o-", "function": "s-", "function_svd_subspace": "x:",
             "reference": "^--"}
    for ax, d in zip(axes[0], dvals, strict=True):
        for meth in ds["scheme"].values:
            y = ds["rel_error"].sel(scheme=meth, d=d).values
            if np.isfinite(y).any():
                ax.plot(ds["rank"].values, y, style[str(meth)], label=str(meth))
        ax.set_xscale("log", base=2)
        ax.set_xlabel("rank r")
        ax.set_title(f"d = {d}, m = {int(ds['width'].sel(d=d))}")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("relative layer error (fresh inputs)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"ReLU layer approximation by rank-r weights: spectral vs function-space ({cite})")
    fig.tight_layout()
    figs["error_vs_rank"] = fig

    # error and gap vs d, one line per rank
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for r in ds["rank"].values:
        es = ds["rel_error"].sel(scheme="spectral", rank=r).values
        ef = ds["rel_error"].sel(scheme="function", rank=r).values
        if not np.isfinite(es).any():
            continue
        line, = ax1.plot(dvals, es, "o-", label=f"spectral r={r}")
        ax1.plot(dvals, ef, "s--", color=line.get_color(), label=f"function r={r}")
        ax2.plot(dvals, es - ef, "o-", color=line.get_color(), label=f"r={r}")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"input dimension d (width m = ceil(d^{cfg.width_power:g}))")
        ax.grid(True, alpha=0.3)
    ax1.set_ylabel("relative layer error")
    ax2.set_ylabel("gap: spectral - function-space")
    ax1.legend(fontsize=7, ncol=2)
    ax2.legend(fontsize=8)
    fig.suptitle(f"Error vs input dimension ({cite})")
    fig.tight_layout()
    figs["error_vs_d"] = fig

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

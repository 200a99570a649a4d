"""Coupled (paired) vs independent init: width needed vs NTK margin and vs n (Munteanu et al. 2022).

Munteanu, Omlor, Song, Woodruff, "Bounding the Width of Neural Networks via Coupled
Initialization -- A Worst Case Analysis", ICML 2022 (arXiv 2206.12802), in the convention of
Ji and Telgarsky (ICLR 2020) and Du et al. (ICLR 2019): ``f(x) = (1/sqrt m) sum_r a_r
relu(w_r.x)``, no bias, unit inputs, only ``W`` trained, ``a_r in {-1, +1}`` fixed.
Paired init uses each of ``m/2`` Gaussian neurons twice with opposite ``a``: ``f(x; theta_0) = 0``.

Two sweeps, each over a width grid, paired vs independent init and several init seeds,
trained by full-batch **GD** (the time axis is ``t = steps x lr``):

- *margin sweep* (logistic loss, under-parameterized regime): data
  :func:`gflow.data.margin_data` with pair angle in ``angles``; ``gamma`` = NTK margin
  (:func:`gflow.ntk.margin`). Target: mean logistic loss ``<= log(1 + e^-1) / n`` -- which
  forces ``y_i f(x_i) >= 1`` for every training point -- within
  ``T = c_gamma ln(2/eps)^2 / (gamma^2 eps)`` (the shape of the Ji-Telgarsky time bound).
- *n sweep* (squared loss, over-parameterized regime): ``n`` points uniform on ``S^{d-1}``,
  labels uniform in {-1, +1}; ``lambda = lambda_min(H_inf)``. Target: mean squared loss
  ``<= eps_rel / 2`` (``1/2`` = the loss of the zero function) within
  ``T = c_n n ln(1/eps_rel) / lambda`` (Du et al.'s rate ``exp(-lambda t)`` for the summed
  loss, whose time is ``t / n`` here). Step ``lr = n / lambda_max(H_inf)``.

"Width needed" = the smallest grid width at which every seed reaches the target; slopes are
least-squares fits of log(width needed) on log(1/gamma) and on log(n) (points with no
successful width are left out). The theory's exponents are *upper bounds* (sufficient widths:
gamma^-2 paired vs gamma^-8 of Ji-Telgarsky; n^2 paired vs n^4 of Song-Yang); the
measured slopes are reported beside them, not fitted to them. All widths of one data shape
share one compiled program through :func:`gflow.ntk.pad_width` (exact embedding).
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gflow
from gflow import ntk
from gflow.stats import all_succeed, loglog_slope

from . import Result, Settings, setting

INITS = ("paired", "independent")
THEORY = {"gamma": {"paired": 2.0, "independent": 8.0}, "n": {"paired": 2.0, "independent": 4.0}}


@dataclasses.dataclass(frozen=True)
class Config(Settings):
    seed: int = 0
    seeds: int = setting(2, ge=1)
    widths: tuple[int, ...] = setting((2, 4, 8, 16, 32, 64, 128, 256), ge=2, multiple_of=2,
                                      why="paired init needs an even width: each of m/2 "
                                          "Gaussian neurons is used twice")
    # margin sweep (logistic)
    gamma_n: int = 16
    gamma_d: int = 5
    angles: tuple[float, ...] = (1.0, 0.3, 0.1)
    gamma_lr: float = 30.0
    c_gamma: float = 1.0
    # n sweep (squared)
    ns: tuple[int, ...] = (8, 16, 32, 64)
    n_d: int = 10
    eps_rel: float = 0.01
    c_n: float = 2.0


def _init(name, key, net, d):
    return gflow.init.paired(key, net, d) if name == "paired" else gflow.init.gaussian(key, net, d)


def _sphere_data(key, n, d):
    kx, ky = jax.random.split(key)
    X = jax.random.normal(kx, (n, d), jnp.result_type(float))
    X = X / jnp.linalg.norm(X, axis=1, keepdims=True)
    return X, jax.random.rademacher(ky, (n,), dtype=X.dtype)


def width_sweep(cfg: Config, datas, *, loss, lrs, t1s, target, key, progress=False):
    """Every data set x init x seed x width, trained by GD to ``target`` (or ``t1s[i]``), as
    one :func:`gflow.sweep`: all widths are embedded exactly in the largest
    (:func:`gflow.ntk.pad_width`), so the runs of one data set share one compiled ensemble.
    Returns arrays over (data set, init, seed, width): ``success``, ``t_stop``, and at the
    stop (or ``t1``) ``final_loss``, ``movement`` ``|theta - theta_0|`` and ``flips``."""
    M = max(cfg.widths)

    def net(m):
        return gflow.TwoLayer(m, "relu", "ntk", bias=False, train_outer=False)

    def make_run(data, init, seed, width):
        p0 = _init(init, jax.random.fold_in(key, seed), net(width), datas[data].d)
        wnet, wp0 = ntk.pad_width(net(width), p0, M)
        return gflow.Run(wnet, wp0, datas[data], loss=loss, dynamics=gflow.GD(lrs[data]),
                         t1=t1s[data], save=gflow.LinTimes(2), observe=("loss",),
                         stop_loss=target)

    tr = gflow.sweep(make_run, data=range(len(datas)), init=list(INITS),
                     seed=list(range(cfg.seeds)), width=list(cfg.widths),
                     progress=progress).trajectory
    shape = tr.status.shape
    out = {"success": (tr.status == "stop_loss").astype(float), "t_stop": tr.t_stop}
    out |= {k: np.zeros(shape) for k in ("final_loss", "movement", "flips")}
    each = lambda f: jax.vmap(jax.vmap(f))  # over (init, seed)  # noqa: E731
    for (i, data), (j, m) in itertools.product(enumerate(datas), enumerate(cfg.widths)):
        # saves after a stop are not recorded: measure the final parameters
        p0, p = (jax.tree.map(lambda x: jnp.asarray(x[i, :, :, j]), t)  # noqa: B023
                 for t in (tr.params0, tr.params_final))
        obj = gflow.Objective(net(M), loss, data.X, data.y)
        out["final_loss"][i, ..., j] = each(obj.loss)(p)
        out["movement"][i, ..., j] = each(lambda q, q0: optax.tree_utils.tree_norm(
            jax.tree.map(jnp.subtract, q, q0)))(p, p0)
        out["flips"][i, ..., j] = each(lambda q, q0: ntk.activation_flips(  # noqa: B023
            q0.W[:m], q.W[:m], data.X))(p, p0)  # noqa: B023
    return out


def run(cfg: Config, *, progress: bool = False) -> Result:
    import xarray as xr

    k_gdata, k_ginit, k_ndata, k_ninit = jax.random.split(jax.random.key(cfg.seed), 4)
    dims = ("init", "seed", "width")

    # -- margin sweep (logistic loss) -------------------------------------------------------
    eps_g = math.log1p(math.exp(-1.0)) / cfg.gamma_n
    g_data = [gflow.Dataset(*gflow.data.margin_data(jax.random.fold_in(k_gdata, a_i),
                                                    cfg.gamma_n, cfg.gamma_d, ang))
              for a_i, ang in enumerate(cfg.angles)]
    gammas = [ntk.margin(np.asarray(d.X, np.float64), np.asarray(d.y, np.float64))
              for d in g_data]
    t1s = [cfg.c_gamma * math.log(2 / eps_g) ** 2 / (g**2 * eps_g) for g in gammas]
    g_vars = width_sweep(cfg, g_data, loss="logistic", lrs=[cfg.gamma_lr] * len(g_data),
                         t1s=t1s, target=eps_g, key=k_ginit, progress=progress)

    # -- n sweep (squared loss) --------------------------------------------------------------
    target_n = 0.5 * cfg.eps_rel
    n_data = [gflow.Dataset(*_sphere_data(jax.random.fold_in(k_ndata, n_i), n, cfg.n_d))
              for n_i, n in enumerate(cfg.ns)]
    ev = [np.linalg.eigvalsh(np.asarray(ntk.relu_ntk(d.X), np.float64)) for d in n_data]
    lam0s = [float(e[0]) for e in ev]
    lrs = [n / float(e[-1]) for n, e in zip(cfg.ns, ev, strict=True)]
    nt1s = [cfg.c_n * n * math.log(1 / cfg.eps_rel) / lam for n, lam in zip(cfg.ns, lam0s,
                                                                               strict=True)]
    n_vars = width_sweep(cfg, n_data, loss="squared", lrs=lrs, t1s=nt1s, target=target_n,
                         key=k_ninit, progress=progress)
    # empirical NTK at init on the largest data set: lambda_min and output at init
    X, gram_lmin = n_data[-1].X, np.zeros((len(INITS), cfg.seeds, len(cfg.widths)))
    out0 = np.zeros_like(gram_lmin)
    for (i, iname), s, (j, m) in itertools.product(enumerate(INITS), range(cfg.seeds),
                                                   enumerate(cfg.widths)):
        net = gflow.TwoLayer(m, "relu", "ntk", bias=False, train_outer=False)
        p0 = _init(iname, jax.random.fold_in(k_ninit, s), net, cfg.n_d)
        gram_lmin[i, s, j] = float(ntk.lambda_min(ntk.gram(net, p0, X)))
        out0[i, s, j] = float(jnp.max(jnp.abs(net.apply(p0, X))))

    coords = {"init": list(INITS), "seed": np.arange(cfg.seeds), "width": list(cfg.widths),
              "angle": list(cfg.angles), "n": list(cfg.ns)}
    data = {f"gamma_{k}": (("angle",) + dims, v) for k, v in g_vars.items()}
    data.update({f"n_{k}": (("n",) + dims, v) for k, v in n_vars.items()})
    for name, dim, v in (("gamma", "angle", gammas), ("gamma_t1", "angle", t1s),
                         ("lambda0", "n", lam0s), ("n_lr", "n", lrs), ("n_t1", "n", nt1s)):
        data[name] = ((dim,), np.array(v))
    data |= {"gram_lambda_min_init": (dims, gram_lmin), "output_max_abs_init": (dims, out0)}
    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update(gamma_eps=eps_g, n_target=target_n, gamma_lr=cfg.gamma_lr)

    summary = {
        "dynamics": f"GD: lr={cfg.gamma_lr} (margin sweep), lr=n/lambda_max(H_inf) (n sweep)",
        "init_output_max_abs_paired": float(np.max(out0[0])),
        "init_output_max_abs_independent": float(np.max(out0[1])),
        "gamma_by_angle": dict(zip(cfg.angles, gammas, strict=True)),
        "lambda0_by_n": dict(zip(cfg.ns, lam0s, strict=True)),
        "theory_width_exponent_gamma": THEORY["gamma"],
        "theory_width_exponent_n": THEORY["n"],
        "gamma_target_loss": eps_g,
        "n_target_loss": target_n,
    }
    for i, iname in enumerate(INITS):
        wg = all_succeed(ds["gamma_success"].values[:, i], cfg.widths)
        wn = all_succeed(ds["n_success"].values[:, i], cfg.widths)
        mv, fl = (np.median(ds[v].values[-1, i], axis=0) for v in ("n_movement", "n_flips"))
        summary |= {
            f"width_exponent_gamma_{iname}": loglog_slope(1 / np.array(gammas), wg),
            f"width_exponent_n_{iname}": loglog_slope(np.array(cfg.ns, float), wn),
            f"width_needed_gamma_{iname}": {f"{g:.4g}": float(w)
                                             for g, w in zip(gammas, wg, strict=True)},
            f"width_needed_n_{iname}": dict(zip(cfg.ns, map(float, wn), strict=True)),
            f"movement_by_width_{iname}": dict(zip(cfg.widths, map(float, mv), strict=True)),
            f"flip_fraction_by_width_{iname}": dict(zip(cfg.widths, map(float, fl),
                                                        strict=True))}
    return Result(summary=summary, dataset=ds)


_CITE = "Munteanu, Omlor, Song, Woodruff, ICML 2022 (arXiv 2206.12802)"


def figures(ds, cfg: Config) -> dict:
    from gflow.plot import band, caption, panels, scaling, style

    widths = np.asarray(ds["width"].values, float)
    colors = {"paired": "C0", "independent": "C1"}
    figs = {}

    def width_needed(xvals, succ, xlabel, key, title, text):
        fig, (ax,) = panels(1, size=(6.4, 4.6))
        for i, iname in enumerate(INITS):
            scaling(ax, xvals, all_succeed(succ[:, i], widths), label=iname,
                    color=colors[iname], exponent=THEORY[key][iname],
                    reference="upper-bound exponent")
        ax.axhline(widths.max(), color="gray", lw=0.6, ls="--")
        style(ax, x="log", y="log2", xlabel=xlabel, title=title,
              ylabel="width needed (smallest grid width, all seeds reach target)")
        ax.set_ylim(widths.min() / 2, widths.max() * 2)
        return caption(fig, text)

    figs["width_vs_gamma"] = width_needed(
        1 / np.asarray(ds["gamma"].values), ds["gamma_success"].values,
        r"1 / NTK margin $\gamma$", "gamma", "Width needed vs 1/gamma (logistic loss, GD)",
        f"n={cfg.gamma_n}, d={cfg.gamma_d} paired-point data; target: every y_i f(x_i) >= 1 "
        f"within T = {cfg.c_gamma:g} ln(2/eps)^2/(gamma^2 eps); {cfg.seeds} seeds; grid "
        f"{list(cfg.widths)}; dashed = largest width tried. {_CITE}.")
    figs["width_vs_n"] = width_needed(
        np.asarray(ds["n"].values, float), ds["n_success"].values, "number of samples n", "n",
        "Width needed vs n (squared loss, GD)",
        f"n points uniform on S^{cfg.n_d - 1}, random +-1 labels; target: loss <= "
        f"{cfg.eps_rel:g} x 1/2 within T = {cfg.c_n:g} n ln(1/eps)/lambda_min(H_inf); "
        f"{cfg.seeds} seeds; dashed = largest width tried. {_CITE}.")

    fig, axes = panels(3, size=(5, 4.2))
    for i, iname in enumerate(INITS):
        for ax, v in zip(axes, (ds["n_movement"].values[-1, i], ds["n_flips"].values[-1, i],
                                ds["gram_lambda_min_init"].values[i]), strict=True):
            band(ax, widths, v, label=iname, color=colors[iname])
    axes[2].axhline(float(ds["lambda0"].values[-1]), color="k", ls=":",
                    label=r"$\lambda_{\min}(H^\infty)$")
    for ax, y, ylabel, title in zip(axes, ("log", "symlog", "linear"), (
            r"$|\theta_T - \theta_0|$ (at stop or T)", "fraction of activation patterns flipped",
            r"$\lambda_{\min}$ of empirical NTK Gram at init"), (
            "Distance travelled", "Activation-pattern flips", "NTK Gram at init"), strict=True):
        style(ax, x="log2", y=y, xlabel="width m", ylabel=ylabel, title=title, legend=8)
    axes[1].set_yscale("symlog", linthresh=1e-3)
    figs["movement"] = caption(fig, (
        f"n sweep data with n={int(ds['n'].values[-1])}, squared loss, GD; median and range "
        f"over {cfg.seeds} seeds. Paired init starts from f=0; its NTK has the same mean, "
        f"but at width m it is the NTK of m/2 independent neurons. {_CITE}."))
    return figs

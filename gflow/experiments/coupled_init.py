"""Coupled (paired) vs independent init: width needed vs NTK margin and vs n.

Munteanu, Omlor, Song, Woodruff, ICML 2022 (arXiv 2206.12802), in the convention of Ji and
Telgarsky (ICLR 2020) and Du et al. (ICLR 2019): ``f(x) = (1/sqrt m) sum_r a_r relu(w_r.x)``,
no bias, unit inputs, only ``W`` trained, ``a_r in {-1, +1}`` fixed. Paired init uses each of
``m/2`` Gaussian neurons twice with opposite ``a``: ``f(x; theta_0) = 0``.

Width grid every sqrt 2 x paired/independent init x ``seeds`` seeds, each data set one compiled
ensemble (:func:`gflow.sweep`), full-batch **GD**:

- *margin sweep* (logistic loss): :func:`gflow.data.margin_data` with pair angles ``angles``.
  Margins: Ji-Telgarsky's pointwise one ``gamma_pw`` (``|v(w)| <= 1`` for every ``w``, their
  Assumption 2.1, :func:`gflow.ntk.pointwise_margin` on ``margin_samples`` w's; the x-axis)
  beside its L2 relaxation ``gamma_l2`` (:func:`gflow.ntk.margin`, exact). Target: mean loss
  ``<= log(1 + e^-1) / n`` (forces every ``y_i f(x_i) >= 1``) within
  ``T = c_gamma ln(2/eps)^2 / (gamma_l2^2 eps)`` (the Ji-Telgarsky time shape).
- *n sweep* (squared loss): ``n`` points uniform on ``S^{d-1}``, random labels, ``lambda =
  lambda_min(H_inf)``; target mean loss ``<= eps_rel / 2`` within ``T = c_n n ln(1/eps_rel) /
  lambda``, step ``n / lambda_max(H_inf)``. Fitted against ``n`` and against ``n / lambda``.

A run stops at its target, at a plateau (gradient norm ``< stop_grad``: a failure) or at ``T``
(a failure that is *budget-bound*). Success probability per width, the widths where it crosses
50 % and 90 % and their power laws' exponents come with intervals (:mod:`gflow.stats`). The
theory's exponents bound a *sufficient* width (gamma^-2 paired vs gamma^-8 of Ji-Telgarsky;
(n/lambda)^2 vs (n/lambda)^4 of Song-Yang); each law gets a :func:`gflow.stats.bound_verdict`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

import gflow
from gflow import ntk, stats

from . import Result, Settings, from_law, setting

#: measured wall time of ``gflow run coupled_init`` with the defaults
RUN_TIME = "110 s of CPU time on 2 cores (110 s wall, load 4-7)"
INITS = ("paired", "independent")
THEORY = {"gamma": {"paired": 2.0, "independent": 8.0}, "n": {"paired": 2.0, "independent": 4.0}}
LEVELS = (0.5, 0.9)
EVEN = dict(ge=2, multiple_of=2, why="an even width: paired init uses m/2 neurons twice")
GRID = (2, 4, 6, 8, 12, 16, 22, 32, 46, 64, 90, 128, 182, 256, 362, 512)  # even; sqrt 2 from 4
FULL = dict(seeds=32, angles=(1.0, 0.5, 0.25, 0.12, 0.06, 0.03), c_gamma=10.0, widths=GRID[:14],
            ns=(4, 8, 16, 32, 64, 128), n_widths=GRID[:14], c_n=6.0)


@dataclasses.dataclass(frozen=True)
class Config(Settings):
    """Settings of the width sweeps.

    Attributes:
        seed: seed of the data, the inits and the margin's sample of w.
        preset: ``full`` takes the settings of ``FULL`` (32 seeds, smaller margins, wider
            grids, longer budgets) wherever they are left at their defaults.
        seeds: independent inits per width and init.
        widths: width grid of the margin sweep (even: paired init).
        gamma_n: points of the margin data (pairs).
        gamma_d: input dimension of the margin data.
        angles: pair angles of the margin data (smaller: smaller margin).
        gamma_lr: GD's learning rate in the margin sweep.
        c_gamma: the margin sweep's time budget T = c_gamma ln(2/eps)^2 / (gamma_l2^2 eps).
        margin_samples: sampled w's of the pointwise margin's convex program.
        ns: sample sizes of the n sweep.
        n_widths: width grid of the n sweep (even).
        n_d: input dimension of the n sweep.
        eps_rel: the n sweep's target mean loss is eps_rel / 2.
        c_n: the n sweep's time budget T = c_n n ln(1/eps_rel) / lambda.
        stop_grad: a run whose gradient norm falls below this has plateaued (a failure).
    """

    seed: int = 0
    preset: str = setting("default", choices=("default", "full"),
                          why="full: the settings of FULL wherever they are left at the default")
    seeds: int = setting(16, ge=2)
    widths: tuple[int, ...] = setting(GRID[:10], **EVEN)
    gamma_n: int = setting(8, ge=2, multiple_of=2, why="margin_data pairs the points")
    gamma_d: int = setting(5, ge=2)
    angles: tuple[float, ...] = (1.0, 0.5, 0.25, 0.12, 0.06)
    gamma_lr: float = 30.0
    c_gamma: float = 3.0
    margin_samples: int = setting(20000, ge=100)
    ns: tuple[int, ...] = (4, 8, 16, 32, 48)
    n_widths: tuple[int, ...] = setting(GRID[:10], **EVEN)
    n_d: int = 10
    eps_rel: float = 0.01
    c_n: float = 2.0
    stop_grad: float = setting(1e-6, gt=0.0)


def with_preset(cfg: Config) -> Config:
    """``cfg`` with the :data:`FULL` values wherever a setting is at its default (``full``)."""
    return cfg.with_preset(FULL, "full")


def _init(name, key, net, d):
    return gflow.init.paired(key, net, d) if name == "paired" else gflow.init.gaussian(key, net, d)


def _sphere_data(key, n, d):
    kx, ky = jax.random.split(key)
    X = jax.random.normal(kx, (n, d), jnp.result_type(float))
    return X / jnp.linalg.norm(X, axis=1, keepdims=True), jax.random.rademacher(ky, (n,), X.dtype)


def width_sweep(cfg: Config, datas, widths, *, loss, lrs, t1s, target, key, progress=False):
    """Every data set x init x seed x width, trained by GD to ``target``, a plateau
    (``cfg.stop_grad``) or ``t1s[i]``, as one :func:`gflow.sweep`; all widths embedded exactly
    in the largest (:func:`gflow.ntk.pad_width`). Returns arrays over (data set, init, seed,
    width): ``success``, ``budget`` (failed at ``t1``), ``t_stop``, ``final_loss``, ``flips``."""
    M, net = max(widths), lambda m: gflow.TwoLayer(m, "relu", "ntk", bias=False,  # noqa: E731
                                                   train_outer=False)

    def make_run(data, init, seed, width):
        p0 = _init(init, jax.random.fold_in(key, seed), net(width), datas[data].d)
        return gflow.Run(*ntk.pad_width(net(width), p0, M), datas[data], loss=loss,
                         dynamics=gflow.GD(lrs[data]), t1=t1s[data], save=gflow.LinTimes(2),
                         observe=("loss",), stop_loss=target, stop_grad=cfg.stop_grad)

    tr = gflow.sweep(make_run, data=range(len(datas)), init=list(INITS),
                     seed=list(range(cfg.seeds)), width=list(widths), progress=progress).trajectory
    status = np.asarray(tr.status)
    out = {"success": status == "stop_loss", "budget": np.isin(status, ("completed", "max_steps")),
           "t_stop": np.asarray(tr.t_stop, float)}
    out |= {k: np.zeros(status.shape) for k in ("final_loss", "flips")}
    each = lambda f: jax.vmap(jax.vmap(f))  # over (init, seed)  # noqa: E731
    for (i, data), (j, m) in itertools.product(enumerate(datas), enumerate(widths)):
        p0, p = (jax.tree.map(lambda x: jnp.asarray(x[i, :, :, j]), t)  # noqa: B023
                 for t in (tr.params0, tr.params_final))
        out["final_loss"][i, ..., j] = each(gflow.Objective(net(M), loss, data.X, data.y).loss)(p)
        out["flips"][i, ..., j] = each(lambda q, q0: ntk.activation_flips(  # noqa: B023
            q0.W[:m], q.W[:m], data.X))(p, p0)  # noqa: B023
    return out


def laws(x, succ, budget, widths, bound_key, *, budget_aware=True):
    """Per init and level: the :class:`gflow.stats.PowerLaw` of the success threshold vs x
    (``budget_aware=False``: runs stopped by the time budget count as plain failures)."""
    return {(iname, lev): stats.threshold_law(
        x, succ[:, i], widths, level=lev, budget=budget[:, i] if budget_aware else None,
        candidates=tuple(THEORY[bound_key].values()), confidence=0.9)
        for (i, iname), lev in itertools.product(enumerate(INITS), LEVELS)}


def run(cfg: Config, *, progress: bool = False) -> Result:
    import xarray as xr

    cfg = with_preset(cfg)
    k_gdata, k_ginit, k_ndata, k_ninit = jax.random.split(jax.random.key(cfg.seed), 4)
    dims = ("init", "seed", "width")

    # -- margin sweep (logistic loss) -------------------------------------------------------
    eps_g = math.log1p(math.exp(-1.0)) / cfg.gamma_n
    g_data = [gflow.Dataset(*gflow.data.margin_data(jax.random.fold_in(k_gdata, a_i),
                                                    cfg.gamma_n, cfg.gamma_d, ang))
              for a_i, ang in enumerate(cfg.angles)]
    f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    g_l2 = [ntk.margin(f64(d.X), f64(d.y)) for d in g_data]
    # two independent samples of w: their spread shows the sampling error of gamma_pw
    Ws = [np.random.default_rng([cfg.seed, s]).standard_normal((cfg.margin_samples, cfg.gamma_d))
          for s in range(2)]
    g_pw2 = np.array([[ntk.pointwise_margin(f64(d.X), f64(d.y), W).gamma for W in Ws]
                      for d in g_data])
    g_pw = g_pw2.mean(axis=1)
    t1s = [cfg.c_gamma * math.log(2 / eps_g) ** 2 / (g**2 * eps_g) for g in g_l2]
    g_vars = width_sweep(cfg, g_data, cfg.widths, loss="logistic", lrs=[cfg.gamma_lr] * len(
        g_data), t1s=t1s, target=eps_g, key=k_ginit, progress=progress)

    # -- n sweep (squared loss) --------------------------------------------------------------
    target_n = 0.5 * cfg.eps_rel
    n_data = [gflow.Dataset(*_sphere_data(jax.random.fold_in(k_ndata, n_i), n, cfg.n_d))
              for n_i, n in enumerate(cfg.ns)]
    ev = [np.linalg.eigvalsh(f64(ntk.relu_ntk(d.X))) for d in n_data]
    lam0s = np.array([e[0] for e in ev])
    lrs = [n / float(e[-1]) for n, e in zip(cfg.ns, ev, strict=True)]
    nt1s = list(cfg.c_n * np.array(cfg.ns) * math.log(1 / cfg.eps_rel) / lam0s)
    n_vars = width_sweep(cfg, n_data, cfg.n_widths, loss="squared", lrs=lrs, t1s=nt1s,
                         target=target_n, key=k_ninit, progress=progress)
    net = gflow.TwoLayer(max(cfg.n_widths), "relu", "ntk", bias=False, train_outer=False)
    out0 = np.array([[float(jnp.max(jnp.abs(net.apply(_init(iname, jax.random.fold_in(  # |f_0|
        k_ninit, s), net, cfg.n_d), n_data[-1].X)))) for s in range(cfg.seeds)] for iname in INITS])

    def group(vars_, dim, sizes, widths, per, attrs):  # a sweep: over (dim, init, seed, width)
        coords = {dim: list(sizes), "init": list(INITS), "seed": np.arange(cfg.seeds),
                  "width": list(widths)}
        data = {k: ((dim,) + dims, np.asarray(v, float)) for k, v in vars_.items()}
        return xr.Dataset(data | per, coords=coords, attrs=attrs)

    ds = {"margin": group(g_vars, "angle", cfg.angles, cfg.widths, {
        "gamma_l2": ("angle", np.array(g_l2, float)), "gamma_pw": ("angle", g_pw),
        "t1": ("angle", np.array(t1s, float)), "gamma_pw_samples": (("angle", "w_sample"), g_pw2)},
        dict(target_loss=eps_g)),
        "n": group(n_vars, "n", cfg.ns, cfg.n_widths, {
            "lambda0": ("n", lam0s), "lr": ("n", np.array(lrs, float)),
            "t1": ("n", np.array(nt1s, float)), "output_max_abs_init": (("init", "seed"), out0)},
            dict(target_loss=target_n))}

    summary = {
        "n_seeds": cfg.seeds, "preset": cfg.preset, "confidence": 0.9,
        "dynamics": f"GD: lr={cfg.gamma_lr} (margin sweep), lr=n/lambda_max(H_inf) (n sweep)",
        "x_axis_gamma": "1/gamma_pw: Ji-Telgarsky pointwise NTK margin (|v(w)| <= 1 for all w)",
        "init_output_max_abs_paired": float(np.max(out0[0])),
        "init_output_max_abs_independent": float(np.max(out0[1])),
        "angles": list(cfg.angles), "gamma_pw": g_pw.tolist(), "gamma_l2": list(g_l2),
        "gamma_pw_sample_spread": np.ptp(g_pw2, 1).tolist(), "ns": list(cfg.ns),
        "lambda0": lam0s.tolist(), "widths": list(cfg.widths), "n_widths": list(cfg.n_widths),
        "theory_width_exponent_gamma": THEORY["gamma"], "theory_width_exponent_n": THEORY["n"],
        "gamma_target_loss": eps_g, "n_target_loss": target_n,
    }
    for sw, v in (("gamma", g_vars), ("n", n_vars)):
        summary[f"budget_bound_runs_{sw}"] = int(v["budget"].sum())
        summary[f"plateau_runs_{sw}"] = int((~v["success"] & ~v["budget"]).sum())
        for i, iname in enumerate(INITS):
            summary[f"success_by_width_{sw}_{iname}"] = v["success"][:, i].mean(1).tolist()
    G, N = ((v["success"], v["budget"]) for v in (g_vars, n_vars))
    ns = np.array(cfg.ns, float)
    for xname, x, (succ, budget), widths, key in (
            ("gamma_pw", 1 / g_pw, G, cfg.widths, "gamma"),
            ("gamma_l2", 1 / np.array(g_l2), G, cfg.widths, "gamma"),
            ("n", ns, N, cfg.n_widths, "n"), ("n_over_lambda", ns / lam0s, N, cfg.n_widths, "n")):
        within = laws(x, succ, budget, widths, key, budget_aware=False)
        for (iname, lev), law in laws(x, succ, budget, widths, key).items():
            tag, bound = f"{xname}_{iname}_p{round(100 * lev)}", THEORY[key][iname]
            summary |= stats.summary_keys(tag, law, bound)
            summary[f"verdict_{tag}_within_T"] = stats.bound_verdict(within[iname, lev], bound)
    summary["claims"] = {f"{i}_width_vs_{w}": from_law(summary, f"{x}_{i}_p90", (
        f"width at 90 % success vs {x}, {cfg.seeds} seeds, widths {min(ws)}-{max(ws)}"))
        for i in INITS for w, x, ws in (("margin", "gamma_pw", cfg.widths),
                                        ("n", "n_over_lambda", cfg.n_widths))}
    return Result(summary=summary, dataset=ds)


CITE = "Munteanu, Omlor, Song, Woodruff, ICML 2022 (arXiv 2206.12802)"
#: the claims this experiment judges (``gflow report``), each on the width at 90 % success
CLAIMS = {
    "paired_width_vs_margin": "With coupled (paired) init, width ~ 1/gamma^2 (up to log "
    "factors) suffices for GD on the logistic loss to fit data of NTK margin gamma.",
    "independent_width_vs_margin": "With independent init, width ~ 1/gamma^8 suffices "
    "(Ji and Telgarsky, ICLR 2020).",
    "paired_width_vs_n": "With paired init, width ~ (n/lambda)^2 suffices for GD on the squared "
    "loss to reach zero training loss.",
    "independent_width_vs_n": "With independent init, width ~ (n/lambda)^4 suffices (Song and "
    "Yang, 2019)."}
#: the runs of ``gflow report`` per level
REPORT = {"smoke": [("", dict(seeds=2, widths=(2, 4, 16), angles=(1.0, 0.5, 0.25), ns=(4, 8, 16),
                              n_widths=(2, 4, 16), gamma_d=3, n_d=5, margin_samples=2000))],
          "quick": [("", {})], "full": [("", {"preset": "full"})]}


def figures(tree, cfg: Config) -> dict:
    """Success per width and the width thresholds of each sweep: the groups ``margin``
    (over ``angle``) and ``n``."""
    from gflow.plot import caption, panels, style

    cfg = with_preset(cfg)
    figs = {}
    g, n = tree["margin"], tree["n"]
    for sw, pdim, ds, xs in (("gamma", "angle", g, [
            (1 / g["gamma_pw"].values, r"1 / pointwise NTK margin $\gamma_{pw}$"),
            (1 / g["gamma_l2"].values, r"1 / L2 NTK margin $\gamma_{L2}$")]),
            ("n", "n", n, [(n["n"].values, "n"), (n["n"].values / n["lambda0"].values,
                                                  r"$n / \lambda_{\min}(H^\infty)$")])):
        succ, budget = ds["success"].values > 0.5, ds["budget"].values > 0.5
        widths = ds["width"].values
        fig, axes = panels(len(INITS), size=(5.2, 4))
        for ax, (i, iname) in zip(axes, enumerate(INITS), strict=True):
            for k, p in enumerate(ds[pdim].values):
                stats.draw(ax, stats.proportions(succ[k, i], widths, confidence=0.9), color=f"C{k}",
                           label=f"{pdim}={p:.3g} ({int(budget[k, i].sum())} budget-bound)")
            style(ax, x="log2", xlabel="width m", ylabel="success probability (90% Wilson)",
                  title=f"{iname} init", legend=7)
        figs[f"success_{sw}"] = caption(fig, f"Fraction of {ds.sizes['seed']} seeds reaching "
                                        f"the target per width ({sw} sweep). {CITE}.")
        fig, axes = panels(len(xs), size=(5.6, 4.4))
        for ax, (x, xlabel) in zip(axes, xs, strict=True):
            for k, ((iname, lev), law) in enumerate(laws(x, succ, budget, widths, sw,
                                                         budget_aware=False).items()):
                stats.draw(ax, law, label=f"{iname} {round(100 * lev)}%", color=f"C{k}")
            style(ax, x="log", y="log2", xlabel=xlabel, legend=6,
                  ylabel="width where success crosses 50% / 90%")
            ax.axhline(widths.max(), color="gray", lw=0.6, ls="--")
        figs[f"width_vs_{sw}"] = caption(fig, (
            "Thresholds within the time budget T, 90% bootstrap intervals over seeds; "
            f"up-triangles: no grid width reached the level; {int(budget.sum())} of "
            f"{budget.size} runs failed at T (budget-bound: see summary). Bound exponents "
            f"{THEORY[sw]} (upper bounds; constants unknown, not drawn). {CITE}."))
    return figs

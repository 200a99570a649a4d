"""Lazy vs rich training: finite-width gradient flow against its linearization and the
infinite-width kernel prediction, over widths and init scales.

A two-layer ReLU net ``f(x) = (1/sqrt m) sum_j a_j relu(w_j . x)`` (NTK scaling, no bias,
both layers trained) is fit by gradient flow on the squared loss to teacher data on the unit
sphere (:func:`gflow.data.teacher`), integrated kink-aware (``GradientFlow(kinks=True)``,
float64), and compared at the save times with

- its **linearization** around the init (:class:`gflow.Linearized`), whose gradient flow is
  the closed form :func:`gflow.linearized.kernel_flow` with the empirical NTK at init
  (:func:`gflow.linearized.linearized_mse`; tests/test_lazy_vs_rich.py checks it against GF of
  the linearized net);
- the **infinite-width** kernel prediction: the same closed form with the deterministic NTK
  :func:`gflow.ntk.relu_ntk` (``layers="both"``; times ``m^-small_gamma`` at small init,
  whose ``E a^2`` and ``E |w|^2 / d`` carry that factor) and the net's own outputs at init.

Init scales: ``standard`` (``w ~ N(0, I)``, ``a = +-1``), ``paired`` (the same law, neurons in
pairs with opposite ``a``: ``f_0 = 0``) and ``small`` (:func:`gflow.init.small`: every entry of
standard deviation ``m^(-small_gamma/2)``; with ``small_gamma = 1`` this is the condensed
regime of Luo, Xu, Ma, Zhang's phase diagram, JMLR 2021). Small-init runs escape their
saddle at a time that grows with the width in NTK scaling (about ``sqrt(m) log m``), so they
run to their own horizon ``small_t1`` at the widths ``small_widths``.

Measured per run: the GF-linearized gap ``rms_i |f_GF(T; x_i) - f_lin(T; x_i)|`` on training
and test points, the GF-infinite-width gap, the relative gap (the gap over the GF outputs'
own movement ``rms |f_GF(T) - f_GF(0)|``), kernel movement ``||K_T - K_0||_F / ||K_0||_F`` of
the empirical NTK Gram on the training inputs and the fraction of flipped activation patterns
(both in-solve, :mod:`gflow.ntk`), and the solver's step count. The gap's width exponent is a
power law through the median over seeds with a bootstrap interval over seeds
(:func:`gflow.stats.power_law`).

The solver (measured on this data, n = 32, d = 8, T = 30, one init per row, float64):
with ``kinks=True`` the step count grows smoothly with the width, about one step per
activation-pattern switch (standard init 62 / 99 / 267 steps at m = 64 / 256 / 1024 with
rtol 1e-7, 86 / 110 / 267 with rtol 1e-9; paired 44 / 60 / 99), no step rejected. The plain
PID controller (``kinks=False``) rejects steps at every kink and its cost is erratic, neither
monotone in the width nor in the init: 6636 / 1854 / 412 steps (standard, rtol 1e-7),
over 200,000 / 179,058 / 19,313 at rtol 1e-9, and paired 863 / 4892 / 72,721 at rtol 1e-9.
A kink-aware step costs more (it locates the switches), so the wall time gains are smaller
than the step ratios (m = 1024, rtol 1e-9: 9.5 s against 17.8 s, standard init). The step
counts of a run are in its dataset (``num_steps``); ``--set kinks=false`` runs the plain
controller.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import gflow
from gflow import stats
from gflow.linearized import kernel_flow, linearized_mse
from gflow.ntk import relu_ntk

from . import Result, Settings, claim, from_bound, setting, tally

INITS = ("standard", "paired", "small")
LAZY = ("standard", "paired")
OBSERVE = ("loss", "output", "activation_flips", "ntk_movement")
CITE = ("Chizat, Oyallon, Bach, NeurIPS 2019 (arXiv 1812.07956); Lee et al., NeurIPS 2019 "
        "(arXiv 1902.06720)")
#: the lazy-training bound on the gap's width exponent (Lee et al., Theorem 2.1: O(m^-1/2))
LAZY_EXPONENT = -0.5
#: a small-init run is rich when the kernel moved by at least this much (relative) ...
RICH_MOVEMENT = 1.0
#: ... and the linearization misses at least this fraction of the outputs' movement
RICH_GAP = 0.5
CLAIMS = {**{f"gap_shrinks_{i}": f"At {i} init the gap between finite-width gradient flow and "
             "its linearization shrinks as the width grows (Lee et al. 2019; Chizat, Oyallon, "
             "Bach 2019)." for i in LAZY},
          **{f"gap_within_lazy_rate_{i}": f"At {i} init the gap falls at least like m^-1/2 "
             "(Lee et al. 2019, Theorem 2.1)." for i in LAZY},
          **{f"kernel_movement_shrinks_{i}": f"At {i} init the empirical NTK moves less as "
             "the width grows (lazy training)." for i in LAZY},
          "rich_at_small_init": "At small init the kernel moves by O(1) and the linearization "
          "fails to describe the trained net (rich regime; Chizat, Oyallon, Bach 2019)."}
REPORT = {"smoke": [("", dict(widths=(32, 64), seeds=2, small_widths=(32,), n=16,
                              n_test=16, small_t1=200.0, saves=3))],
          "quick": [("", {})], "full": [("", {"preset": "full"})]}
#: the settings of ``preset=full`` (wherever a setting is left at its default)
FULL = dict(widths=(64, 128, 256, 512, 1024, 2048, 4096), seeds=5,
            small_widths=(64, 128, 256, 512, 1024), small_t1=1000.0)
#: measured wall time of ``gflow run lazy_vs_rich`` with the defaults
RUN_TIME = "about 200 s wall on 2 CPU cores shared with other jobs (load 3-5)"


@dataclasses.dataclass(frozen=True)
class Config(Settings):
    """Settings of the lazy-vs-rich comparison.

    Attributes:
        seed: seed of the data and the inits.
        preset: ``full`` takes the settings of ``FULL`` wherever they are at the default.
        n: training points (teacher data on the unit sphere).
        n_test: test points.
        d: input dimension.
        teacher_width: neurons of the ReLU teacher.
        widths: widths m of the standard and paired runs (even).
        seeds: inits per width and init scale.
        t1: time T of the standard and paired comparison.
        small_widths: widths m of the small-init runs (even).
        small_gamma: small init's variance m^-small_gamma of every entry.
        small_t1: time T of the small-init comparison.
        saves: equally spaced save times in [0, T].
        rtol: relative tolerance of gradient flow (absolute: rtol / 100).
        kinks: integrate kink-aware (GradientFlow(kinks=True)); false: the plain controller.
    """

    seed: int = 0
    preset: str = setting("default", choices=("default", "full"))
    n: int = setting(32, ge=2)
    n_test: int = setting(32, ge=1)
    d: int = setting(8, ge=2)
    teacher_width: int = setting(4, ge=1)
    widths: tuple[int, ...] = setting((64, 128, 256, 512, 1024), ge=2, multiple_of=2)
    seeds: int = setting(3, ge=2)
    t1: float = setting(30.0, gt=0)
    small_widths: tuple[int, ...] = setting((64, 128, 256), ge=2, multiple_of=2)
    small_gamma: float = setting(1.0, gt=0)
    small_t1: float = setting(300.0, gt=0)
    saves: int = setting(9, ge=2)
    rtol: float = setting(1e-7, gt=0, le=1e-3)
    kinks: bool = True

    def __post_init__(self):
        super().__post_init__()
        for name in ("widths", "small_widths"):
            w = getattr(self, name)
            if list(w) != sorted(set(w)):
                raise ValueError(f"lazy_vs_rich: {name}={w!r}: must be distinct and increasing.")
        if len(self.widths) < 2:
            raise ValueError(f"lazy_vs_rich: widths={self.widths!r}: give at least 2 widths "
                             "(the gap's width exponent needs them).")


def with_preset(cfg: Config) -> Config:
    """``cfg`` with the :data:`FULL` values wherever a setting is at its default (``full``)."""
    base = Config()
    return cfg if cfg.preset != "full" else dataclasses.replace(
        cfg, **{k: v for k, v in FULL.items() if getattr(cfg, k) == getattr(base, k)})


def init_params(init: str, key, net, d: int, small_gamma: float):
    """The parameters of ``init`` (one of :data:`INITS`) for ``net``."""
    if init == "standard":
        return gflow.init.gaussian(key, net, d)
    if init == "paired":
        return gflow.init.paired(key, net, d)
    return gflow.init.small(key, net, d, gamma=small_gamma, outer="sign")


def _kernel_scale(init: str, m: int, small_gamma: float) -> float:
    """``E[K_0] / relu_ntk(layers="both")``: both layers' NTK terms carry ``E a^2`` or
    ``E |w|^2 / d``, each ``m^-small_gamma`` at small init, 1 otherwise."""
    return float(m) ** -small_gamma if init == "small" else 1.0


def _one(cfg: Config, data, init: str, m: int, key, K_inf):
    """One run: GF outputs on train and test points with the linearized and infinite-width
    predictions at the save times, kernel movement, flips, loss and solver stats."""
    net = gflow.TwoLayer(m)
    p0 = init_params(init, key, net, cfg.d, cfg.small_gamma)
    T = cfg.small_t1 if init == "small" else cfg.t1
    ts = np.linspace(0.0, T, cfg.saves)
    probes = jnp.concatenate([data.X, data.X_test])
    dyn = gflow.GradientFlow(rtol=cfg.rtol, atol=cfg.rtol / 100, kinks=cfg.kinks,
                             max_steps=1_000_000)
    tr = gflow.simulate(net, p0, data, t1=T, save=ts, observe=OBSERVE, probes=probes,
                        dynamics=dyn)
    lin = linearized_mse(net, p0, data.X, data.y, ts, X_test=data.X_test)
    c, f0 = _kernel_scale(init, m, cfg.small_gamma), np.asarray(tr["output"])[0]
    inf = kernel_flow(c * K_inf[0], f0[:cfg.n], data.y, ts, K_star=c * K_inf[1],
                      f0_star=f0[cfg.n:])
    return {"t": ts, "f_gf": np.asarray(tr["output"]),
            "f_lin": np.concatenate([np.asarray(v) for v in lin], axis=1),
            "f_inf": np.concatenate([np.asarray(v) for v in inf], axis=1),
            "loss": np.asarray(tr["loss"]), "flips": np.asarray(tr["activation_flips"]),
            "movement": np.asarray(tr["ntk_movement"]),
            "num_steps": int(tr.stats["num_steps"])}


def run(cfg: Config, *, progress: bool = False) -> Result:
    with jax.enable_x64(True):
        return _run(with_preset(cfg), progress)


def _run(cfg: Config, progress: bool) -> Result:
    import xarray as xr

    k_data, k_init = jax.random.split(jax.random.key(cfg.seed))
    data = gflow.data.teacher(k_data, cfg.n, cfg.d, cfg.teacher_width, n_test=cfg.n_test)
    K_inf = (relu_ntk(data.X, layers="both"), relu_ntk(data.X_test, data.X, layers="both"))
    widths = sorted(set(cfg.widths) | set(cfg.small_widths))
    keys = jax.random.split(k_init, cfg.seeds)
    shape = (len(INITS), len(widths), cfg.seeds)
    per_save = {v: np.full(shape + (cfg.saves,), np.nan) for v in ("loss", "flips", "movement")}
    outs = {v: np.full(shape + (cfg.saves, cfg.n + cfg.n_test), np.nan)
            for v in ("f_gf", "f_lin", "f_inf")}
    steps, times = np.full(shape, np.nan), np.zeros((len(INITS), cfg.saves))
    for i, init in enumerate(INITS):
        for j, m in enumerate(widths):
            if m not in (cfg.small_widths if init == "small" else cfg.widths):
                continue
            for s in range(cfg.seeds):
                with gflow.progress.stage(f"{init}, m = {m}, seed {s + 1} of {cfg.seeds}"):
                    r = _one(cfg, data, init, m, keys[s], K_inf)
                for v in (*per_save, *outs):
                    (per_save | outs)[v][i, j, s] = r[v]
                steps[i, j, s], times[i] = r["num_steps"], r["t"]
    point = np.r_[np.zeros(cfg.n, int), np.ones(cfg.n_test, int)]
    ds = xr.Dataset(
        {v: (("init", "width", "seed", "save"), a) for v, a in per_save.items()}
        | {v: (("init", "width", "seed", "save", "point"), a) for v, a in outs.items()}
        | {"num_steps": (("init", "width", "seed"), steps), "t": (("init", "save"), times),
           "is_test": (("point",), point.astype(bool)), "y": (("point",), np.r_[
               np.asarray(data.y), np.asarray(data.y_test)])},
        coords={"init": list(INITS), "width": widths})
    ds.attrs.update(kinks=int(cfg.kinks))
    return Result(summary=summarize(ds, cfg), dataset=ds)


def gaps(ds, ref: str = "f_lin", split: str = "test"):
    """``rms_points |f_GF(T) - ref(T)|`` at the last save on the ``split`` points (train or
    test), ``(init, width, seed)``; with ``ref="move"``, the GF outputs' own movement
    ``rms |f_GF(T) - f_GF(0)|``."""
    pts = ds["is_test"] if split == "test" else ~ds["is_test"]
    f = ds["f_gf"].where(pts, drop=True)
    other = f.isel(save=0) if ref == "move" else ds[ref].where(pts, drop=True).isel(save=-1)
    return np.sqrt(((f.isel(save=-1) - other) ** 2).mean("point"))


def _law_text(law) -> str:
    return f"exponent {law.exponent:.2f} [{law.lo:.2f}, {law.hi:.2f}]"


def summarize(ds, cfg: Config) -> dict:
    """Headline figures and a verdict per claim from the dataset (``run``'s summary)."""
    s: dict = {"cite": CITE, "seeds": cfg.seeds, "kinks": cfg.kinks}
    g = {sp: gaps(ds, "f_lin", sp) for sp in ("train", "test")}
    g_inf, move = gaps(ds, "f_inf"), gaps(ds, "move")
    mov, claims = ds["movement"].isel(save=-1), {}
    for init in INITS:
        sel = dict(init=init)
        ok = np.isfinite(g["test"].sel(sel).values).all(axis=1)
        w = ds["width"].values[ok]
        s[f"widths_{init}"] = w.tolist()
        for key, a in (("gap_test", g["test"]), ("gap_train", g["train"]), ("gap_inf_test", g_inf),
                       ("relative_gap_test", g["test"] / move), ("kernel_movement", mov),
                       ("flips", ds["flips"].isel(save=-1)), ("final_loss", ds["loss"].isel(
                           save=-1)), ("num_steps", ds["num_steps"])):
            s[f"{key}_{init}"] = np.median(a.sel(sel).values[ok], axis=1).tolist()
        if init not in LAZY:
            continue
        what = (f"{init} init, m = {w.tolist()}, {cfg.seeds} seeds, n = {cfg.n}, d = {cfg.d}, "
                f"T = {cfg.t1:g}")
        for tag, a in (("gap_test", g["test"]), ("gap_train", g["train"]),
                       ("kernel_movement", mov)):
            law = stats.power_law(w, a.sel(sel).values[ok])
            s[f"{tag}_{init}_exponent"] = law.exponent
            s[f"{tag}_{init}_exponent_ci"] = [law.lo, law.hi]
            s[f"{tag}_{init}_flags"] = list(law.flags)
            if tag == "gap_test":
                tr = stats.trend_verdict(law, -1)
                claims[f"gap_shrinks_{init}"] = claim(
                    tr["verdict"], tr["why"], f"test-output gap GF vs linearized, {_law_text(law)}"
                    f"; {what}")
                claims[f"gap_within_lazy_rate_{init}"] = from_bound(
                    stats.bound_verdict(law, LAZY_EXPONENT),
                    f"test-output gap {_law_text(law)} against {LAZY_EXPONENT:g} (the issue "
                    f"quotes about -0.75 at m = 256...4096); {what}")
            if tag == "kernel_movement":
                tr = stats.trend_verdict(law, -1)
                claims[f"kernel_movement_shrinks_{init}"] = claim(
                    tr["verdict"], tr["why"], f"||K_T - K_0||/||K_0||, {_law_text(law)}; {what}")
    sel = dict(init="small")
    ok = np.isfinite(g["test"].sel(sel).values)
    loss = ds["loss"].sel(sel).values
    fitted = loss[..., -1] <= loss[..., 0] / 2
    rich = (mov.sel(sel).values >= RICH_MOVEMENT) & ((g["test"] / move).sel(sel).values >= RICH_GAP)
    outcomes = np.where(~fitted, "not fitted by T (loss above half its initial value)",
                        np.where(rich, "rich", "fitted without O(1) kernel movement and gap"))
    claims["rich_at_small_init"] = tally(
        list(outcomes[ok]), holds="rich", fails="fitted without O(1) kernel movement and gap",
        what="runs")
    claims["rich_at_small_init"]["measured"] = (
        f"small init (variance m^-{cfg.small_gamma:g}), m = {s['widths_small']}, {cfg.seeds} "
        f"seeds, T = {cfg.small_t1:g}: rich = kernel movement >= {RICH_MOVEMENT:g} and relative "
        f"test gap >= {RICH_GAP:g}; median movement {np.round(s['kernel_movement_small'], 2)}, "
        f"relative gap {np.round(s['relative_gap_test_small'], 2)}")
    s["claims"] = claims
    return s


def figures(ds, cfg: Config) -> dict:
    from gflow.plot import bands, caption, panels, style

    cfg = with_preset(cfg)
    w = ds["width"].values
    fig, axes = panels(3, size=(4.4, 3.6))
    for ax, (split, ref) in zip(axes, (("test", "f_lin"), ("train", "f_lin"), ("test", "f_inf")),
                                strict=True):
        g = gaps(ds, ref, split)
        series = {i: g.sel(init=i).values.T for i in INITS}
        bands(ax, w, series, min_points=2)
        for k, i in enumerate(LAZY):
            med = np.median(series[i], axis=0)
            ok = np.isfinite(med)
            if ok.sum() >= 2:
                law = stats.power_law(w[ok], series[i][:, ok].T)
                ax.plot(w[ok], law.prefactor * w[ok] ** law.exponent, ":", color=f"C{k}",
                        label=f"{i}: fit {_law_text(law)}")
        ax.plot(w, np.nanmax(series["standard"]) * (w / w[0]) ** LAZY_EXPONENT, "k--", lw=0.8,
                label="m^-1/2")
        style(ax, x="log2", y="log", xlabel="width m", ylabel=f"rms gap on {split} points",
              title=f"GF vs {'linearized' if ref == 'f_lin' else 'infinite width'} ({split})",
              legend=6)
    figs = {"gap_vs_width": caption(
        fig, f"Median and range over {ds.sizes['seed']} seeds; the fit is a power law through "
        f"the medians (95 % bootstrap interval over seeds). Standard and paired at T = "
        f"{cfg.t1:g}, small at T = {cfg.small_t1:g}. {CITE}.",
        title="Finite-width gradient flow against its linearization")}
    fig, axes = panels(3, size=(4.4, 3.6))
    for ax, (v, label) in zip(axes[:2], (("movement", "||K_T - K_0|| / ||K_0||"),
                                         ("flips", "flipped activation patterns")), strict=True):
        bands(ax, w, {i: ds[v].sel(init=i).isel(save=-1).values.T for i in INITS})
        style(ax, x="log2", y="log", xlabel="width m", ylabel=label, title=f"{label} at T")
    bands(axes[2], w, {i: ds["num_steps"].sel(init=i).values.T for i in INITS})
    style(axes[2], x="log2", y="log", xlabel="width m", ylabel="solver steps to T",
          title=f"gradient-flow steps (kinks={bool(ds.attrs.get('kinks', 1))})")
    figs["kernel_movement"] = caption(fig, f"Empirical NTK on the training inputs, computed "
                                      f"in-solve; median and range over seeds. {CITE}.",
                                      title="Kernel movement per init scale")
    fig, axes = panels(len(INITS), size=(4.4, 3.6))
    test = np.flatnonzero(ds["is_test"].values)[:3]
    for ax, init in zip(axes, INITS, strict=True):
        sel = ds.sel(init=init).isel(seed=0)
        m = sel["f_gf"].dropna("width", how="all")["width"].values[-1]
        t = ds["t"].sel(init=init).values
        for k, p in enumerate(test):
            for v, fmt, name in (("f_gf", "-", "GF"), ("f_lin", "--", "linearized"),
                                 ("f_inf", ":", "infinite width")):
                ax.plot(t, sel[v].sel(width=m).values[:, p], fmt, color=f"C{k}",
                        label=name if k == 0 else None)
        style(ax, xlabel="t", ylabel="f(x) on test points", title=f"{init} init, m = {m}")
    figs["outputs"] = caption(fig, "Three test points, seed 0, the largest width run; colour: "
                              "point, line style: model.", title="Outputs over time")
    return figs

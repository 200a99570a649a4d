"""Lazy vs rich training: finite-width gradient flow against its linearization and the
infinite-width kernel prediction, over widths and init scales.

A two-layer ReLU net ``f(x) = (1/sqrt m) sum_j a_j relu(w_j . x)`` (NTK scaling, no bias,
both layers trained) is fit by gradient flow on the squared loss to teacher data on the unit
sphere (:func:`gflow.data.teacher`), integrated kink-aware (``GradientFlow(kinks=True)``,
float64), and compared at the save times with

- its **linearization** around the init (:class:`gflow.Linearized`), whose gradient flow is
  the closed form :func:`gflow.linearized.kernel_flow` with the empirical NTK at init
  (:func:`gflow.linearized.linearized_mse`; tests/test_linearized.py checks it against GF of
  the linearized net);
- the **infinite-width** kernel prediction: the same closed form with the deterministic NTK
  :func:`gflow.ntk.relu_ntk` (``layers="both"``; times ``m^-small_gamma`` at small init,
  whose ``E a^2`` and ``E |w|^2 / d`` carry that factor) and the net's own outputs at init.

Init scales: ``standard`` (``w ~ N(0, I)``, ``a = +-1``), ``paired`` (the same law, neurons in
pairs with opposite ``a``: ``f_0 = 0``) and ``small`` (:func:`gflow.init.small`: every entry of
standard deviation ``m^(-small_gamma/2)``; with ``small_gamma = 1`` this is the condensed
regime of Luo, Xu, Ma, Zhang's phase diagram, JMLR 2021). Small-init runs escape their
saddle later at larger width in NTK scaling (a neuron's initial growth rate is
``O(m^-1/2)``), so they run to their own horizon ``small_t1`` at the widths ``small_widths``;
a run whose loss has not halved by then is counted as not fitted, never as evidence.

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
rtol 1e-7, 86 / 110 / 267 with rtol 1e-9; paired 44 / 60 / 99 and 61 / 76 / 107), no step
rejected. The plain
PID controller (``kinks=False``) rejects steps at every kink and its cost is erratic, neither
monotone in the width nor in the init: 6636 / 1854 / 412 steps (standard, rtol 1e-7),
over 200,000 / 179,058 / 19,313 at rtol 1e-9, and paired 863 / 4892 / 72,721 at rtol 1e-9
(the issue's 20,426 at m = 256 and 17,382 paired at m = 256 against 944 at m = 1024 are of the
same kind). What sets that cost was not found here: not the width, and on a first look the
kink-aware runs of cheap and expensive cases alike recorded 1 to 5 slides (a neuron held on
a kink), so slides alone do not explain it.
A kink-aware step costs more (it locates the switches), so the wall time gains are smaller
than the step ratios (m = 1024, rtol 1e-9: 9.5 s against 17.8 s, standard init). The step
counts of a run are in its dataset (``num_steps``); ``--set kinks=false`` runs the plain
controller.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

import gflow
from gflow import stats
from gflow.linearized import against_gradient_flow
from gflow.ntk import relu_ntk

from . import Result, Settings, claim, from_bound, setting, tally

INITS = ("standard", "paired", "small")
LAZY = ("standard", "paired")
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
RUN_TIME = "about 210 s wall on 2 CPU cores shared with other jobs (load 4-6)"


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
    small_widths: tuple[int, ...] = setting((64, 128), ge=2, multiple_of=2)
    small_gamma: float = setting(1.0, gt=0)
    small_t1: float = setting(300.0, gt=0)
    saves: int = setting(9, ge=2)
    rtol: float = setting(1e-7, gt=0, le=1e-3)
    kinks: bool = True

    def __post_init__(self):
        super().__post_init__()
        for name, least in (("widths", 2), ("small_widths", 1)):
            if list(w := getattr(self, name)) != sorted(set(w)) or len(w) < least:
                raise ValueError(f"lazy_vs_rich: {name}={w!r}: must be distinct and increasing, "
                                 f"at least {least} (the gap's width exponent needs 2).")


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


PER_SAVE = {"loss": "loss", "flips": "activation_flips", "movement": "ntk_movement"}


def _one(cfg: Config, data, init: str, m: int, key, K_inf) -> dict:
    """One run: outputs of GF, its linearization and the infinite-width kernel on the train
    then test points at the save times, the :data:`PER_SAVE` observables and solver steps."""
    net, c = gflow.TwoLayer(m), _kernel_scale(init, m, cfg.small_gamma)
    ts = np.linspace(0.0, cfg.small_t1 if init == "small" else cfg.t1, cfg.saves)
    dyn = gflow.GradientFlow(rtol=cfg.rtol, atol=cfg.rtol / 100, kinks=cfg.kinks,
                             max_steps=1_000_000)
    tr, out = against_gradient_flow(net, init_params(init, key, net, cfg.d, cfg.small_gamma),
                                    data, ts, kernel=(c * K_inf[0], c * K_inf[1]),
                                    dynamics=dyn, observe=tuple(PER_SAVE.values()))
    return {"t": ts, "f_inf": out.pop("f_kernel"), **out, "num_steps": tr.stats["num_steps"],
            **{k: np.asarray(tr[v]) for k, v in PER_SAVE.items()}}


def run(cfg: Config, *, progress: bool = False) -> Result:
    with jax.enable_x64(True):
        return _run(with_preset(cfg))


def _run(cfg: Config) -> Result:
    import xarray as xr

    k_data, k_init = jax.random.split(jax.random.key(cfg.seed))
    data = gflow.data.teacher(k_data, cfg.n, cfg.d, cfg.teacher_width, n_test=cfg.n_test)
    K_inf = (relu_ntk(data.X, layers="both"), relu_ntk(data.X_test, data.X, layers="both"))
    widths, keys = sorted(set(cfg.widths) | set(cfg.small_widths)), jax.random.split(
        k_init, cfg.seeds)
    dims = {v: ("init", "width", "seed", "save") for v in PER_SAVE} | {
        v: ("init", "width", "seed", "save", "point") for v in ("f_gf", "f_lin", "f_inf")} | {
        "num_steps": ("init", "width", "seed"), "t": ("init", "save")}
    size = dict(init=len(INITS), width=len(widths), seed=cfg.seeds, save=cfg.saves,
                point=cfg.n + cfg.n_test)
    arr = {v: np.full([size[k] for k in dd], np.nan) for v, dd in dims.items()}
    for i, init in enumerate(INITS):
        for j, m in enumerate(widths):
            for s in range(cfg.seeds) if m in (cfg.small_widths if init == "small"
                                              else cfg.widths) else ():
                with gflow.progress.stage(f"{init}, m = {m}, seed {s + 1} of {cfg.seeds}"):
                    r = _one(cfg, data, init, m, keys[s], K_inf)
                for v in dims:
                    arr[v][(i,) if v == "t" else (i, j, s)] = r[v]
    ds = xr.Dataset({v: (dd, arr[v]) for v, dd in dims.items()} | {
        "is_test": (("point",), np.arange(size["point"]) >= cfg.n),
        "y": (("point",), np.r_[np.asarray(data.y), np.asarray(data.y_test)])},
        coords={"init": list(INITS), "width": widths}, attrs={"kinks": int(cfg.kinks)})
    groups = {}  # one group per init: its own widths and save times
    for init in INITS:
        g = ds.sel(init=init, width=sorted(cfg.small_widths if init == "small" else cfg.widths))
        groups[init] = g.drop_vars(["init", "t"]).rename(save="time").assign_coords(
            time=g["t"].values)
    return Result(summary=summarize(ds, cfg), dataset=groups)


def view(tree):
    """The init groups side by side, as :func:`summarize` and :func:`figures` read them:
    dims ``(init, width, seed, save, ...)``, each init's save times ``t`` (``(init,
    save)``), NaN where an init has no run of a width."""
    import xarray as xr

    groups = gflow.io.groups(tree)
    parts = [g.drop_vars(["is_test", "y"]).assign(t=("time", g["time"].values)).drop_vars(
        "time").rename(time="save") for g in groups.values()]
    first = next(iter(groups.values()))
    ds = xr.concat(parts, dim="init", join="outer").assign_coords(init=list(groups))
    return ds.assign(is_test=first["is_test"], y=first["y"])


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


NOT_FITTED, LAZY_FIT = ("not fitted by T (loss above half its initial value)",
                        "fitted without O(1) kernel movement and gap")


def summarize(ds, cfg: Config) -> dict:
    """Headline figures and a verdict per claim from the dataset (``run``'s summary)."""
    s: dict = {"cite": CITE, "seeds": cfg.seeds, "kinks": cfg.kinks}
    mov, claims = ds["movement"].isel(save=-1), {}
    g = {"gap_test": gaps(ds), "gap_train": gaps(ds, split="train"),
         "gap_inf_test": gaps(ds, "f_inf")}
    g |= {"relative_gap_test": g["gap_test"] / gaps(ds, "move"), "kernel_movement": mov,
          "flips": ds["flips"].isel(save=-1), "final_loss": ds["loss"].isel(save=-1),
          "num_steps": ds["num_steps"]}
    for init in INITS:
        ok = np.isfinite(g["gap_test"].sel(init=init).values).all(axis=1)
        w = ds["width"].values[ok]
        s |= {f"widths_{init}": w.tolist()} | {f"{k}_{init}": np.median(a.sel(
            init=init).values[ok], axis=1).tolist() for k, a in g.items()}
        what = (f"{init} init, m = {w.tolist()}, {cfg.seeds} seeds, n = {cfg.n}, d = {cfg.d}, "
                f"T = {cfg.t1:g}")
        for tag in ("gap_test", "gap_train", "kernel_movement") if init in LAZY else ():
            law = stats.power_law(w, g[tag].sel(init=init).values[ok])
            s |= {f"{tag}_{init}_exponent": law.exponent, f"{tag}_{init}_flags": list(law.flags),
                  f"{tag}_{init}_exponent_ci": [law.lo, law.hi]}
            tr, text = stats.trend_verdict(law, -1), f"{_law_text(law)}; {what}"
            if tag == "gap_test":
                claims[f"gap_shrinks_{init}"] = claim(tr["verdict"], tr["why"],
                                                      f"test-output gap GF vs linearized, {text}")
                claims[f"gap_within_lazy_rate_{init}"] = from_bound(
                    stats.bound_verdict(law, LAZY_EXPONENT), f"test-output gap {text}, against "
                    f"{LAZY_EXPONENT:g} (the issue quotes about -0.75 at m = 256...4096)")
            elif tag == "kernel_movement":
                claims[f"kernel_movement_shrinks_{init}"] = claim(
                    tr["verdict"], tr["why"], f"||K_T - K_0||/||K_0||, {text}")
    # per small-init run: rich, fitted without it, or not fitted by T (never evidence)
    ok, small = np.isfinite(g["gap_test"].sel(init="small").values), dict(init="small")
    loss, rich = ds["loss"].sel(small).values, (mov.sel(small).values >= RICH_MOVEMENT) & (
        g["relative_gap_test"].sel(small).values >= RICH_GAP)
    rich = tally(list(np.where(loss[..., -1] > loss[..., 0] / 2, NOT_FITTED, np.where(
        rich, "rich", LAZY_FIT))[ok]), holds="rich", fails=LAZY_FIT, what="runs")
    rich["measured"] = (
        f"small init (variance m^-{cfg.small_gamma:g}), m = {s['widths_small']}, {cfg.seeds} "
        f"seeds, T = {cfg.small_t1:g}: rich = kernel movement >= {RICH_MOVEMENT:g} and relative "
        f"test gap >= {RICH_GAP:g}; median movement {np.round(s['kernel_movement_small'], 2)}, "
        f"relative gap {np.round(s['relative_gap_test_small'], 2)}")
    return s | {"claims": claims | {"rich_at_small_init": rich}}


def figures(tree, cfg: Config) -> dict:
    from gflow.plot import bands, caption, panels, style

    ds = view(tree)
    cfg, w = with_preset(cfg), ds["width"].values
    fig, axes = panels(3, size=(4.4, 3.6))
    for ax, (split, ref) in zip(axes, (("test", "f_lin"), ("train", "f_lin"), ("test", "f_inf")),
                                strict=True):
        series = {i: gaps(ds, ref, split).sel(init=i).values.T for i in INITS}
        bands(ax, w, series, min_points=2)
        for k, i in enumerate(LAZY):
            ok = np.isfinite(series[i]).all(axis=0)
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
    for ax, (v, label) in zip(axes, (("movement", "||K_T - K_0|| / ||K_0|| at T"), (
            "flips", "flipped activation patterns at T"), ("num_steps", "solver steps to T")),
            strict=True):
        a = ds[v].isel(save=-1) if "save" in ds[v].dims else ds[v]
        bands(ax, w, {i: a.sel(init=i).values.T for i in INITS})
        style(ax, x="log2", y="log", xlabel="width m", ylabel=label, title=label)
    figs["kernel_movement"] = caption(fig, f"Empirical NTK on the training inputs, in-solve; "
                                      f"kinks={bool(ds.attrs.get('kinks', 1))}; median and "
                                      f"range over seeds. {CITE}.", title="Kernel movement")
    fig, axes = panels(len(INITS), size=(4.4, 3.6))
    for ax, init in zip(axes, INITS, strict=True):
        sel = ds.sel(init=init).isel(seed=0).dropna("width", how="all", subset=["f_gf"])
        for k, p in enumerate(np.flatnonzero(ds["is_test"].values)[:3]):
            for v, fmt, name in (("f_gf", "-", "GF"), ("f_lin", "--", "linearized"),
                                 ("f_inf", ":", "infinite width")):
                ax.plot(ds["t"].sel(init=init), sel[v].isel(width=-1).values[:, p], fmt,
                        color=f"C{k}", label=name if k == 0 else None)
        style(ax, xlabel="t", ylabel="f(x) on test points",
              title=f"{init} init, m = {int(sel['width'][-1])}")
    return figs | {"outputs": caption(fig, "Three test points, seed 0, the largest width run; "
                                      "colour: point, line style: model.", title="Outputs")}

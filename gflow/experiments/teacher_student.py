"""Teacher-student local convergence, mildly over-parameterized two-layer nets (Zhou-Ge-Jin 2021).

Zhou, Ge, Jin, COLT 2021 (arXiv 2102.02410): a teacher ``f*(x) = sum_i a*_i sigma(w*_i.x)`` of
``k`` unit directions pairwise at the angle ``Delta`` (:func:`gflow.population.separated_teacher`
or random), ``x ~ N(0, I_d)``, ``sigma = |.|`` (``relu`` supported); a student of width
``m = k .. 16k``, both layers trained by gradient flow on the exact population loss
``L = E[(f - f*)^2]/2`` (:class:`gflow.population.Population`), in float64. Every run starts at
``L = loss0`` (:func:`gflow.population.near_teacher_at_loss`) and stops at the located crossing
of ``10^-max(levels)``; rates are compared at matched losses ``10^-k``
(:func:`gflow.population.level_crossings`): time from ``loss0``, local rate
``|grad L|^2/L = -d log L/dt``, angles, cluster weights; per width over ``n_seeds`` seeds, and
over ``separations`` for the widths ``separation_width_factors`` (seed 0).
``preset=full`` sets the settings left at their defaults to :data:`FULL`.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

import gflow
from gflow import population as P
from gflow import stats

from . import Result, Settings, claim, setting
from ._runs import run_groups, runs_view

#: measured wall time of ``gflow run teacher_student`` with the defaults (mostly compiling)
RUN_TIME = "about 3.5 min wall on 2 cores shared with other work (load 8-9)"


@dataclasses.dataclass(frozen=True)
class Config(Settings):
    """Settings of the local-convergence study.

    Attributes:
        seed: seed of the teachers and the inits (seed, seed+1, ... per width).
        preset: ``full`` takes the settings of ``FULL`` wherever they are left at their
            defaults (d=10, k=3, 8 seeds, levels to 1e-10, more separations).
        d: input dimension.
        k: teacher neurons.
        activation: ``abs`` or ``relu``, of teacher and student.
        outer: the teacher's outer weights: all positive, or signed.
        width_factors: student widths m = k x each factor.
        n_seeds: inits per width.
        loss0: the population loss every run starts at.
        levels: the loss levels 10^-j at which rates are compared; runs stop at the
            smallest.
        separations: angles Delta (degrees) between the teacher's directions, swept.
        random_teacher: also run a teacher of random directions in the separation sweep.
        separation_width_factors: widths m = k x each factor of the separation sweep.
        angle_deg: rotation of each student neuron from its teacher in the local init,
            before it is scaled to start at loss0.
        weight_noise: relative noise of the split outer weights in the local init.
        dtype: float64 (default) or float32 (levels down to 1e-6 only).
        rtol: relative tolerance of GF's controller (absolute: rtol x 1e-4).
        t1: cap on the time of every run.
        n_save: log-spaced save points per run.
    """

    seed: int = 0
    preset: str = setting("default", choices=("default", "full"))
    d: int = setting(5, ge=2)
    k: int = setting(2, ge=1, lt="d")
    activation: str = setting("abs", choices=("abs", "relu"))
    outer: str = setting("positive", choices=("positive", "signed"))
    width_factors: tuple[int, ...] = setting((1, 2, 4, 8, 16), ge=1)
    n_seeds: int = setting(3, ge=1)
    loss0: float = setting(1e-2, gt=0)
    levels: tuple[int, ...] = setting((3, 4, 5, 6, 7, 8), ge=1, why="levels are 10^-k")
    separations: tuple[float, ...] = setting((30.0, 60.0, 90.0), gt=0, le=90)
    random_teacher: bool = True
    separation_width_factors: tuple[int, ...] = setting((1, 2), ge=1)
    angle_deg: float = setting(10.0, gt=0, lt=90)
    weight_noise: float = setting(0.1, ge=0)
    dtype: str = setting("float64", choices=("float64", "float32"))
    rtol: float = setting(1e-9, gt=0)
    t1: float = setting(1e8, gt=0)
    n_save: int = setting(200, ge=20)


#: the full study (``--set preset=full``): settings left at their defaults take these values
FULL = dict(d=10, k=3, n_seeds=8, levels=(3, 4, 5, 6, 7, 8, 9, 10),
            separations=(15.0, 30.0, 45.0, 60.0, 75.0, 90.0), separation_width_factors=(1, 2, 4))


def resolved(cfg: Config) -> Config:
    """``cfg`` with the preset applied (only to settings left at their defaults)."""
    if cfg.preset == "default":
        return cfg
    return dataclasses.replace(cfg, **{k: v for k, v in FULL.items()
                                       if getattr(cfg, k) == getattr(Config(), k)})


def _teacher(key, cfg: Config, sep):
    if sep != "random":
        return P.separated_teacher(key, cfg.d, cfg.k, sep, activation=cfg.activation,
                                   outer=cfg.outer), float(sep)
    data = gflow.data.gaussian_teacher(key, 1, cfg.d, cfg.k, activation=cfg.activation,
                                       directions="random", outer=cfg.outer)
    return data.meta["teacher"], data.meta["separation_deg"]


def run(cfg: Config, *, progress: bool = False) -> Result:
    cfg = resolved(cfg)
    if cfg.dtype == "float32" and max(cfg.levels) > 6:
        raise ValueError(f"teacher_student: levels down to 1e-{max(cfg.levels)} need dtype="
                         "float64 (float32 cancellation puts a floor near 1e-7 on L).")
    if 10.0 ** -min(cfg.levels) >= cfg.loss0:
        raise ValueError(f"teacher_student: loss0={cfg.loss0:g} must lie above every level.")
    with jax.enable_x64(cfg.dtype == "float64"):
        return _run(cfg, progress)


def _run(cfg: Config, progress: bool) -> Result:
    kw = dict(t1=cfg.t1, save=gflow.LogTimes(cfg.n_save, t_min=1e-3),
              dynamics=gflow.GradientFlow(rtol=cfg.rtol, atol=cfg.rtol * 1e-4, max_steps=500_000),
              stop_loss=10.0 ** -max(cfg.levels), throw=False, progress=progress,
              observe={**{o: o for o in ("loss", "lojasiewicz_ratio", "balancedness")},
                       **P.observables()})
    plan = {(90.0, cfg.k * f, s) for f in cfg.width_factors for s in range(cfg.n_seeds)}
    plan |= {(sep, cfg.k * f, 0) for f in cfg.separation_width_factors
             for sep in cfg.separations + (("random",) if cfg.random_teacher else ())}
    trajs, meta = {}, []
    for sep, m, s in sorted(plan, key=lambda r: (str(r[0]), r[1], r[2])):
        k_teacher, k_init = jax.random.split(jax.random.fold_in(jax.random.key(cfg.seed), s))
        (tnet, tp), delta = _teacher(k_teacher, cfg, sep)
        net = gflow.TwoLayer(m, cfg.activation, "standard", bias=False, train_outer=True)
        p0, scale = P.near_teacher_at_loss(k_init, net, tnet, tp, cfg.loss0,
                                           angle_deg=cfg.angle_deg, weight_noise=cfg.weight_noise)
        trajs[f"D={sep} m={m} seed={s}"] = gflow.simulate(net, p0, P.Population(tnet, tp), **kw)
        meta.append(dict(teacher_kind="random" if sep == "random" else "equiangular",
                         separation=delta, seed=s, init_angle=scale * cfg.angle_deg,
                         teacher_weight=("teacher", np.asarray(tp.a) * np.linalg.norm(
                             np.asarray(tp.W), axis=1))))
    groups = run_groups(trajs, meta)  # one group per run: its own times and width
    for g in groups.values():
        g.attrs.update(dtype=cfg.dtype, loss0=cfg.loss0, levels=list(cfg.levels))
    return Result(summary=_summary(view(groups, cfg), cfg), dataset=groups)


def view(tree, cfg: Config):
    """The runs side by side (:func:`gflow.experiments._runs.runs_view`, a stopped run's last
    save is its located stop) with ``kept_teacher`` (``(run, neuron)``: whether each neuron
    ends nearest its own teacher, ``j mod k``)."""
    ds = runs_view(tree)
    own = np.arange(ds.sizes["neuron"]) % cfg.k
    ds["kept_teacher"] = (ds["final_teacher_index"] == own) | np.isnan(ds["final_teacher_index"])
    return ds


def _by_width(ds, cfg, tab, key):
    """``{m: (seeds, levels)}`` of one table entry for the width study (Delta = 90)."""
    sel = (ds["teacher_kind"].values == "equiangular") & (ds["separation"].values == 90.0)
    return {m: tab[key][sel & (ds["width"].values == m)] for m in
            (cfg.k * f for f in cfg.width_factors)}


def _summary(ds, cfg: Config) -> dict:
    tab = P.level_table(ds, cfg.levels)
    T, Q, A = (_by_width(ds, cfg, tab, key) for key in ("time", "rate", "angle"))
    ms, last, k, fs = list(T), f"1e-{max(cfg.levels)}", cfg.k, cfg.separation_width_factors
    # rate exponent beta: |grad L|^2/L ~ L^beta over the lower half of the levels (0: linear)
    half = len(cfg.levels) // 2
    beta = {m: np.array([stats.loglog_slope(10.0 ** -np.asarray(cfg.levels[half:], float),
                                            q[half:]) for q in Q[m]]) for m in ms}
    out = {"dtype": cfg.dtype, "loss0": cfg.loss0, "levels": [f"1e-{j}" for j in cfg.levels],
           "n_seeds": cfg.n_seeds, "runs": int(ds.sizes["run"]),
           "runs_reached_last_level": int(np.sum(ds["status"].values == "stop_loss")),
           "time_to_level_by_width": {m: stats.over_seeds(T[m]) for m in ms},
           "rate_at_level_by_width": {m: stats.over_seeds(Q[m]) for m in ms},
           "rate_exponent_beta_by_width": {m: stats.over_seeds(beta[m]) for m in ms},
           "max_angle_deg_at_level_by_width": {m: stats.over_seeds(A[m]) for m in ms},
           "init_angle_deg_range": [float(ds["init_angle"].min()), float(ds["init_angle"].max())],
           "max_angle_deg_at_stop": float(ds["final_teacher_angle"].max()),
           "max_cluster_weight_error_at_stop": float(np.abs(
               ds["final_cluster_weight"] - ds["teacher_weight"]).max()),
           "stop_loss_rel_error_max": float(np.abs(ds["final_loss"] * 10.0 ** max(cfg.levels)
                                                   - 1.0).max()),
           "all_neurons_kept_their_teacher": bool(ds["kept_teacher"].all()),
           "balancedness_max_drift": float(np.nanmax(np.abs(
               ds["balancedness"] - ds["balancedness"].isel(save=0))))}
    cols = (ds[v].values for v in ("teacher_kind", "separation", "width", "seed"))
    out[f"time_to_{last}_by_separation"] = {f"{t} D={s:.3g} m={m}": tab["time"][i, -1].item()
                                            for i, (t, s, m, seed) in enumerate(zip(
                                                *cols, strict=True)) if seed == 0 and m // k in fs}
    over = [m for m in ms if m > k]
    if k in ms and len(over) >= 2:
        fin = np.stack([T[m][:, -1] for m in over])
        law = stats.power_law(over, np.where(np.isfinite(fin), fin, cfg.t1),
                              censored=~np.isfinite(fin))
        out[f"time_to_{last}_vs_width_m_gt_k"] = law.to_dict()
        t_k, t_m = np.median(T[k][:, -1]), np.median(fin, axis=1)
        out["time_ratio_successive_widths_m_gt_k"] = (t_m[1:] / t_m[:-1]).tolist()
        out["verdict_width"] = (
            f"m = k: |grad L|^2/L ~ L^{np.median(beta[k]):.2f} on the lower levels (0: linear "
            f"rate), {last} at t = {t_k:.3g}. m > k: beta up to "
            f"{max(np.median(beta[m]) for m in over):.2f} (polynomial, L ~ t^(-1/beta)); "
            f"t(m={over[0]})/t(m=k) = {t_m[0] / t_k:.3g} at {last}: the rate differs between "
            f"m = k and m > k. Among m > k the time to {last} goes as m^{law.exponent:.2f} "
            f"[{law.lo:.2f}, {law.hi:.2f}]: " + ("consistent with a width-independent rate "
            "constant" if law.lo <= 0.0 <= law.hi else "the rate constant depends on m")
            + (f" (flags: {', '.join(law.flags)})" if law.flags else "") + f"; from m={over[-2]}"
            f" to {over[-1]} it changes by a factor {t_m[-1] / t_m[-2]:.3g}.")
    n, done = out["runs"], out["runs_reached_last_level"]
    kept = out["all_neurons_kept_their_teacher"]
    out["claims"] = {"local_convergence": claim(
        "does not hold" if not kept else "holds" if done == n else "inconclusive",
        f"{done} of {n} runs (m = {ms[0]}..{ms[-1]}, {cfg.n_seeds} seeds) reached loss {last} "
        f"from {cfg.loss0:g} within t = {cfg.t1:g}; every neuron kept its teacher: {kept}; "
        f"largest angle to it at the stop {out['max_angle_deg_at_stop']:.3g} deg. The theorem's "
        "loss threshold is not computed: loss0 is a setting.")}
    return out


CITE = "Zhou, Ge, Jin, COLT 2021 (arXiv 2102.02410)"
#: the claim this experiment judges (``gflow report``)
CLAIMS = {"local_convergence": "Started near the teacher (loss below a threshold), gradient flow "
          "drives the loss of the mildly over-parameterized student (m >= k) to 0, every student "
          "neuron converging to one of the teacher's neurons."}
#: the runs of ``gflow report`` per level
REPORT = {"smoke": [("", dict(d=3, k=2, width_factors=(2,), n_seeds=2, levels=(3, 4, 5),
                              separations=(45.0,), random_teacher=False,
                              separation_width_factors=(2,), n_save=60))],
          "quick": [("", {})], "full": [("", {"preset": "full"})]}


def figures(ds, cfg: Config) -> dict:
    from gflow.plot import band, caption, panels, style

    cfg = resolved(cfg)
    ds = view(ds, cfg)
    tab, levels = P.level_table(ds, cfg.levels), 10.0 ** -np.asarray(cfg.levels, float)
    setup = (f"teacher: k={cfg.k} unit directions at Delta (width study: 90 deg), a*={cfg.outer}, "
             f"sigma={cfg.activation}, x~N(0,I_{cfg.d}); student m=k..{max(cfg.width_factors)}k, "
             f"both layers; exact population GF from L0={cfg.loss0:g} (local init); "
             f"{cfg.dtype}; {cfg.n_seeds} seeds (bands: min-max). {CITE}.")
    runs = {m: [r for r in ds.run.values if r.startswith(f"D=90.0 m={m} ")]
            for m in (cfg.k * f for f in cfg.width_factors)}
    figs, log = {}, dict(x="log", y="log")
    for name, (x, y, key, yl, title) in {
            "loss": ("t", "loss", "time", "time from L0 to the level", "L(t); time to levels"),
            "rate": ("loss", "lojasiewicz_ratio", "angle", "max angle to own teacher (deg)",
                     "local rate -dlogL/dt = |grad L|^2/L (flat: linear) vs L; angles"),
    }.items():
        fig, axes = panels(2, size=(5.5, 4))
        for i, (m, rs) in enumerate(runs.items()):
            for j, r in enumerate(rs):
                axes[0].plot(ds[x].sel(run=r), ds[y].sel(run=r), color=f"C{i}",
                             lw=1.2 if j == 0 else 0.5, label=f"m={m}" if j == 0 else None)
            band(axes[1], levels, _by_width(ds, cfg, tab, key)[m], color=f"C{i}", label=f"m={m}")
        style(axes[0], xlabel="time t" if x == "t" else "loss L", ylabel=y, **log)
        style(axes[1], xlabel="loss level (matched across widths)", ylabel=yl, **log)
        for ax in axes[1:] if x == "t" else axes:
            ax.invert_xaxis()
        figs[name] = caption(fig, setup, title=title)

    fig, axes = panels(3, size=(5, 4))
    sub = ds.sel(run=runs[cfg.k * min(cfg.width_factors, key=lambda f: abs(f - 2))][0])
    axes[0].plot(sub["t"], sub["teacher_angle"][:, :int(sub["width"])], lw=0.8)
    axes[1].plot(sub["t"], np.abs(sub["cluster_weight"] - sub["teacher_weight"]))
    style(axes[0], xlabel="time t", ylabel="angle to nearest teacher (deg), each neuron",
          title=f"m={int(sub['width'])}, seed 0", **log)
    style(axes[1], xlabel="time t", ylabel=r"|$\sum_{j\to i} a_j|w_j|$ - $a^*_i|w^*_i|$|",
          title="each teacher's cluster weight", **log)
    for f in cfg.separation_width_factors:
        for kind, fmt in (("equiangular", "o-"), ("random", "s")):
            s = ((ds.seed == 0) & (ds.width == cfg.k * f) & (ds.teacher_kind == kind)).values
            o = np.argsort(ds["separation"].values[s])
            axes[2].plot(ds["separation"].values[s][o], tab["time"][s, -1][o], fmt,
                         color=f"C{f}", label=f"m={cfg.k * f}, {kind} teacher")
    style(axes[2], y="log", xlabel="teacher separation Delta (deg)",
          ylabel=f"time from L0 to 1e-{max(cfg.levels)}", title="separation sweep (seed 0)")
    figs["neurons"] = caption(fig, setup, title="Directions, cluster weights, separation")
    return figs

"""Teacher-student local convergence, mildly over-parameterized two-layer nets (Zhou-Ge-Jin 2021).

Setting of Zhou, Ge, Jin, "A Local Convergence Theory for Mildly Over-Parameterized Two-Layer
Neural Network", COLT 2021 (arXiv 2102.02410): a teacher ``f*(x) = sum_i a*_i sigma(w*_i.x)``
with ``k`` orthonormal (or random) unit directions and positive (or signed) outer weights,
``x ~ N(0, I_d)``, ``sigma = |.|`` (default; ``relu`` supported), a student
``f(x) = sum_j a_j sigma(w_j.x)`` of width ``m = k, 2k, 4k, 8k`` with both layers trained.

Dynamics: gradient flow (diffrax Tsit5, PI control) on the **exact population loss**
``L = E[(f - f*)^2]/2`` in closed form (:class:`gflow.population.Population`), started
near the teacher (:func:`gflow.init.near_teacher`: each teacher neuron gets duplicates
rotated by ``angle_deg``, its weight split at random). Runs stop at ``L <= eps``:
``eps64`` (default 1e-8, as in the issue) in float64 -- ``gflow run teacher_student --x64``,
the intended call -- and ``eps32`` (default 1e-5) in float32, where cancellation in the
closed form puts a floor near 1e-7. One more run starts from a random (non-local) init,
and one trains on a fixed Gaussian sample of ``n_sample`` points (width ``k``) to compare
the sample objective with the exact population loss.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import gflow
from gflow import population as P

from . import Result, Settings, setting
from ._runs import runs_dataset


@dataclasses.dataclass(frozen=True)
class Config(Settings):
    seed: int = 0
    d: int = 10
    k: int = 3
    activation: str = setting("abs", choices=("abs", "relu"))
    directions: str = setting("orthogonal", choices=("orthogonal", "random"))
    outer: str = setting("positive", choices=("positive", "signed"))
    width_factors: tuple[int, ...] = (1, 2, 4, 8)
    angle_deg: float = 10.0
    weight_noise: float = 0.1
    eps64: float = 1e-8
    eps32: float = 1e-5
    t1: float = 1e6
    rtol64: float = 1e-8
    rtol32: float = 1e-5
    n_save: int = 80
    random_width_factor: int = 4
    random_t1: float = 1e4
    n_sample: int = 2000


LOCAL_OBS = ("loss", "grad_norm", "lojasiewicz_ratio", "balancedness")


def _settings(cfg: Config):
    x64 = jnp.result_type(float) == jnp.float64
    return (cfg.eps64, cfg.rtol64, "float64") if x64 else (cfg.eps32, cfg.rtol32, "float32")


def run(cfg: Config, *, progress: bool = False) -> Result:
    eps, rtol, dtype_name = _settings(cfg)
    k_data, k_init, k_rand = jax.random.split(jax.random.key(cfg.seed), 3)
    data = gflow.data.gaussian_teacher(k_data, cfg.n_sample if cfg.n_sample > 0 else 1, cfg.d,
                                       cfg.k, activation=cfg.activation,
                                       directions=cfg.directions, outer=cfg.outer)
    tnet, tp = data.meta["teacher"]
    pdata = P.Population(tnet, tp)
    kw = dict(dynamics=gflow.GradientFlow(rtol=rtol, atol=rtol * 1e-4, max_steps=200_000),
              save=gflow.LogTimes(cfg.n_save, t_min=1e-3), stop_loss=eps, throw=False,
              observe={**{o: o for o in LOCAL_OBS}, **P.observables(tnet, tp)},
              progress=progress)
    trajs = {}

    def student(m):
        return gflow.TwoLayer(m, cfg.activation, "standard", bias=False, train_outer=True)

    def local(m):
        net = student(m)
        return net, gflow.init.near_teacher(k_init, net, tnet, tp, angle_deg=cfg.angle_deg,
                                            weight_noise=cfg.weight_noise)

    for m in (cfg.k * f for f in cfg.width_factors):
        trajs[f"m={m}"] = gflow.simulate(*local(m), pdata, t1=cfg.t1, **kw)
    # random (non-local) init: w ~ N(0, I/d), a ~ N(0, 1/m)
    m_r = cfg.k * cfg.random_width_factor
    net_r = student(m_r)
    p_r = gflow.init.gaussian(k_rand, net_r, cfg.d, std=1.0 / np.sqrt(cfg.d), outer="gaussian",
                              outer_std=1.0 / np.sqrt(m_r))
    trajs[f"random m={m_r}"] = gflow.simulate(net_r, p_r, pdata, t1=cfg.random_t1, **kw)
    # the same local run for m = k on a fixed Gaussian sample (the sample loss is the objective)
    if cfg.n_sample > 0:
        trajs[f"sample n={cfg.n_sample} m={cfg.k}"] = gflow.simulate(
            *local(cfg.k), data, loss="squared", t1=cfg.t1, **kw)
    ds = runs_dataset(trajs)
    ds.attrs.update(eps=eps, dtype=dtype_name, teacher_weight=1.0)
    return Result(summary=_summary(ds, eps, dtype_name, data.meta), dataset=ds)


def _max(v, axis=None):
    """The largest value ignoring NaN (NaN if there is none), without a warning."""
    v = np.asarray(v, dtype=float)
    return np.fmax.reduce(v.ravel() if axis is None else v, axis=0 if axis is None else axis)


def _runs(ds, prefix):
    return [str(r) for r in ds.run.values if str(r).startswith(prefix)]


def _summary(ds, eps, dtype_name, meta) -> dict:
    by = {key: {} for key in ("tte", "final", "angle", "loj", "cw", "bal", "init")}
    for r in _runs(ds, "m="):
        sub = ds.sel(run=r)
        m = int(sub["width"])
        reached = str(sub["status"].values) == "stop_loss"
        by["tte"][m] = float(sub["t_stop"]) if reached else float("inf")
        by["final"][m] = float(sub["final_population_loss"])
        by["angle"][m] = float(_max(sub["final_teacher_angle"]))
        by["loj"][m] = float(np.nanmin(sub["lojasiewicz_ratio"].values))
        by["cw"][m] = float(_max(np.abs(sub["final_cluster_weight"].values - 1.0)))
        b = np.asarray(sub["balancedness"].values)[:, :m]
        by["bal"][m] = float(_max(np.abs(b - b[0])))
        by["init"][m] = float(sub["population_loss"].values[0])
    rand = ds.sel(run=_runs(ds, "random")[0])
    ang, w = (np.abs(np.asarray(rand[v].values, float))[:int(rand["width"])]
              for v in ("final_teacher_angle", "eff_weight"))
    out = {
        "dtype": dtype_name,
        "eps": eps,
        "final_loss": max(by["final"].values()),
        "final_loss_by_width": by["final"],
        "max_student_teacher_angle_deg": max(by["angle"].values()),
        "max_student_teacher_angle_deg_by_width": by["angle"],
        "time_to_eps_by_width": by["tte"],
        "lojasiewicz_ratio_min": min(by["loj"].values()),
        "lojasiewicz_ratio_min_by_width": by["loj"],
        "cluster_weight_max_rel_error_by_width": by["cw"],
        "balancedness_max_drift_by_width": by["bal"],
        "teacher_separation_deg": meta["separation_deg"],
        "initial_loss_by_width": by["init"],
        "random_init_width": int(rand["width"]),
        "random_init_status": str(rand["status"].values),
        "random_init_final_loss": float(rand["final_population_loss"]),
        "random_init_max_angle_deg": float(_max(rand["final_teacher_angle"])),
        # among the neurons of effective weight |a_j| |w_j| >= 1% of the largest (those that
        # have shrunk to ~0 can point anywhere)
        "random_init_max_angle_deg_weight_ge_1pct": float(np.max(ang[w >= 0.01 * np.max(w)])),
        "random_init_t_stop": float(rand["t_stop"]),
    }
    for s in _runs(ds, "sample")[:1]:
        sub = ds.sel(run=s)
        out["sample_run_status"] = str(sub["status"].values)
        out["sample_run_final_sample_loss"] = float(sub["final_loss"])
        out["sample_run_final_population_loss"] = float(sub["final_population_loss"])
        out["sample_run_time_to_eps"] = float(sub["t_stop"])
        out["sample_run_num_steps"] = int(sub["num_steps"])
    return out


_CITE = "Zhou, Ge, Jin, COLT 2021 (arXiv 2102.02410)"


def figures(ds, cfg: Config) -> dict:
    from gflow.plot import caption, lines, panels, style

    eps = float(ds.attrs.get("eps", np.nan))
    setup = (f"teacher: k={cfg.k} {cfg.directions} directions, {cfg.outer} outer weights, "
             f"sigma={cfg.activation}, x~N(0,I_{cfg.d}); student m=k..{max(cfg.width_factors)}k, "
             f"both layers; exact population GF from a local init ({cfg.angle_deg} deg); "
             f"{ds.attrs.get('dtype', '')}, eps={eps:g}. {_CITE}.")
    runs, local = [str(r) for r in ds.run.values], _runs(ds, "m=")

    def per_run(ax, var, reduce=None, sel=runs, x="log", y="log", **kw):
        lines(ax, ds.sel(run=sel), var, "run", time="t", reduce=reduce, positive=y == "log",
              fmt=lambda r: "-" if str(r).startswith("m=") else "--", log_t=x == "log")
        return style(ax, xlabel="time t", x=x, y=y, **kw)

    figs = {}
    fig, axes = panels(2, size=(5.5, 4))
    per_run(axes[0], "population_loss", ylabel="population loss L", title="log-log axes")
    per_run(axes[1], "population_loss", sel=local, x="linear",
            title="linear (symlog) time: straight line = linear rate")
    axes[1].set_xscale("symlog", linthresh=10.0)
    axes[1].set_xlim(left=0.0)
    for ax in axes:
        ax.axhline(eps, color="k", lw=0.8, ls=":")
    figs["loss"] = caption(fig, setup, title="Population loss under gradient flow")

    fig, axes = panels(2, size=(5.5, 4))
    per_run(axes[0], "teacher_angle", reduce=lambda v: _max(v, axis=-1),
            ylabel="max over student neurons of angle to nearest teacher (deg)",
            title="Student-teacher angles")
    for r in runs:
        a = np.asarray(ds["final_teacher_angle"].sel(run=r).values, float)
        a = a[:int(ds["width"].sel(run=r))]
        axes[1].scatter(np.full(len(a), r), np.maximum(a, 1e-6), s=12)
    style(axes[1], y="log", ylabel="final angle to nearest teacher (deg), each neuron")
    axes[1].tick_params(axis="x", rotation=30, labelsize=7)
    figs["angles"] = caption(fig, setup)

    fig, (ax,) = panels(1, size=(6, 4))
    per_run(ax, "cluster_weight", reduce=lambda v: _max(np.abs(v - 1.0), axis=-1),
            ylabel=r"max$_i$ |$\sum_{j\to i} a_j|w_j|$ - $a^*_i|w^*_i|$|",
            title="Cluster outer weight vs teacher weight")
    figs["cluster_weight"] = caption(fig, setup)

    fig, axes = panels(2, size=(5.5, 4))
    per_run(axes[0], "lojasiewicz_ratio", ylabel=r"$|\nabla L|^2 / L$",
            title="Lojasiewicz-type ratio (= -d log L / dt)")
    for r in runs:
        g, L = (np.asarray(ds[v].sel(run=r).values, dtype=float) for v in ("grad_norm", "loss"))
        ok = (L > 0) & (L < 0.1) & (g > 0)
        axes[1].plot(L[ok], np.log(g[ok]) / np.log(L[ok]), "-" if r in local else "--", label=r)
    style(axes[1], x="log", xlabel="loss L (decreasing)", ylabel=r"$\log|\nabla L| / \log L$",
          title="empirical exponent (1/2: |grad L| ~ sqrt(L), linear rate)")
    axes[1].set_ylim(0.0, 1.5)
    axes[1].invert_xaxis()
    figs["lojasiewicz"] = caption(fig, setup)

    fig, (ax,) = panels(1, size=(6, 4))
    sub = ds.sel(run=local)
    ms = [int(m) for m in sub["width"].values]
    ax.plot(ms, np.where(sub["status"].values == "stop_loss", sub["t_stop"].values, np.nan), "o-")
    style(ax, x="log2", y="log", xlabel="student width m", ylabel=f"time to reach L <= {eps:g}",
          title="Time to eps vs width (theory: rate independent of m)")
    ax.set_xticks(ms, [f"{m} ({m // cfg.k}k)" for m in ms])
    figs["time_to_eps"] = caption(fig, setup)

    fig, (ax,) = panels(1, size=(6, 4))  # neurons beyond a run's width are NaN: left out
    per_run(ax, "balancedness", reduce=lambda b: _max(np.abs(b - b[0]), axis=-1),
            ylabel=r"max$_j$ |$(a_j^2-|w_j|^2)(t) - (a_j^2-|w_j|^2)(0)$|",
            title="Conserved quantity a_j^2 - |w_j|^2 (solver error only)")
    figs["conserved"] = caption(fig, setup)
    return figs

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


def _stack(trajs: dict[str, gflow.Trajectory], widths: dict[str, int], k: int):
    """Runs of different widths and stop times on one grid: (run, save[, neuron|teacher])
    padded with NaN; the times of each run are the variable ``t``."""
    import xarray as xr

    S = max(len(t.times) for t in trajs.values())
    M = max(widths.values())
    names = list(trajs)

    def pad(x, shape):
        out = np.full(shape, np.nan)
        out[tuple(slice(0, s) for s in np.shape(x))] = x
        return out

    data = {"t": (("run", "save"), np.stack([pad(t.times, (S,)) for t in trajs.values()]))}
    for var in trajs[names[0]].observables:
        per = [np.asarray(t[var], dtype=float) for t in trajs.values()]
        if per[0].ndim == 1:
            data[var] = (("run", "save"), np.stack([pad(v, (S,)) for v in per]))
        else:
            dim = trajs[names[0]].obs_dims.get(var, (f"{var}_dim0",))[0]
            size = M if dim == "neuron" else k
            data[var] = (("run", "save", dim), np.stack([pad(v, (S, size)) for v in per]))
    data["width"] = (("run",), np.array([widths[n] for n in names]))
    eff = [np.abs(np.asarray(t.params_final.a)) * np.linalg.norm(np.asarray(t.params_final.W),
                                                                 axis=1) for t in trajs.values()]
    data["eff_weight"] = (("run", "neuron"), np.stack([pad(e, (M,)) for e in eff]))
    data["status"] = (("run",), np.array([str(t.status) for t in trajs.values()]))
    data["t_stop"] = (("run",), np.array([float(t.t_stop) for t in trajs.values()]))
    data["num_steps"] = (("run",), np.array([int(t.stats["num_steps"]) for t in trajs.values()]))
    return xr.Dataset(data, coords={"run": names})


def run(cfg: Config, *, progress: bool = False) -> Result:
    eps, rtol, dtype_name = _settings(cfg)
    k_data, k_init, k_rand = jax.random.split(jax.random.key(cfg.seed), 3)
    data = gflow.data.gaussian_teacher(k_data, cfg.n_sample if cfg.n_sample > 0 else 1, cfg.d,
                                       cfg.k, activation=cfg.activation,
                                       directions=cfg.directions, outer=cfg.outer)
    tnet, tp = data.meta["teacher"]
    obs = {**{o: o for o in LOCAL_OBS}, **P.observables(tnet, tp)}
    pdata = P.Population(tnet, tp)
    dyn = gflow.GradientFlow(rtol=rtol, atol=rtol * 1e-4, max_steps=200_000)
    save = gflow.LogTimes(cfg.n_save, t_min=1e-3)
    trajs, widths = {}, {}

    def student(m):
        return gflow.TwoLayer(m, cfg.activation, "standard", bias=False, train_outer=True)

    for f in cfg.width_factors:
        m = cfg.k * f
        net = student(m)
        p0 = gflow.init.near_teacher(k_init, net, tnet, tp, angle_deg=cfg.angle_deg,
                                     weight_noise=cfg.weight_noise)
        name = f"m={m}"
        trajs[name] = gflow.simulate(net, p0, pdata, dynamics=dyn, t1=cfg.t1, save=save,
                                     observe=obs, stop_loss=eps, throw=False, progress=progress)
        widths[name] = m
    # random (non-local) init: w ~ N(0, I/d), a ~ N(0, 1/m)
    m_r = cfg.k * cfg.random_width_factor
    net_r = student(m_r)
    p_r = gflow.init.gaussian(k_rand, net_r, cfg.d, std=1.0 / np.sqrt(cfg.d), outer="gaussian",
                              outer_std=1.0 / np.sqrt(m_r))
    name_r = f"random m={m_r}"
    trajs[name_r] = gflow.simulate(
        net_r, p_r, pdata, dynamics=dyn,
        t1=cfg.random_t1, save=gflow.LogTimes(cfg.n_save, t_min=1e-3), observe=obs,
        stop_loss=eps, throw=False, progress=progress)
    widths[name_r] = m_r
    # the same local run for m = k on a fixed Gaussian sample (the sample loss is the objective)
    if cfg.n_sample > 0:
        net = student(cfg.k)
        p0 = gflow.init.near_teacher(k_init, net, tnet, tp, angle_deg=cfg.angle_deg,
                                     weight_noise=cfg.weight_noise)
        name_s = f"sample n={cfg.n_sample} m={cfg.k}"
        trajs[name_s] = gflow.simulate(net, p0, data, loss="squared", dynamics=dyn, t1=cfg.t1,
                                       save=save, observe=obs, stop_loss=eps, throw=False,
                                       progress=progress)
        widths[name_s] = cfg.k
    ds = _stack(trajs, widths, cfg.k)
    ds.attrs.update(eps=eps, dtype=dtype_name, teacher_weight=1.0)
    return Result(summary=_summary(ds, cfg, eps, dtype_name, data.meta), dataset=ds)


def _nanmax(v, axis=None):
    """``np.nanmax`` that returns NaN for all-NaN slices without a warning."""
    v = np.asarray(v, dtype=float)
    out = np.max(np.where(np.isnan(v), -np.inf, v), axis=axis)
    return np.where(np.isneginf(out), np.nan, out)


def _significant_angle(ds, run):
    """Largest final angle among student neurons whose effective weight |a_j| |w_j| is at
    least 1% of the largest one (neurons that have shrunk to ~0 can point anywhere)."""
    m = int(ds["width"].sel(run=run))
    ang = _last(ds, run, "teacher_angle")[:m]
    # balanced neurons (local init) have |a_j| = |w_j|; use the final weights of the run
    w = np.abs(np.asarray(ds["eff_weight"].sel(run=run).values, dtype=float))[:m]
    return float(np.max(ang[w >= 0.01 * np.max(w)]))


def _local_runs(ds):
    return [str(r) for r in ds.run.values if str(r).startswith("m=")]


def _last(ds, run, var):
    v = np.asarray(ds[var].sel(run=run).values, dtype=float)
    ok = ~np.isnan(v.reshape(v.shape[0], -1)).all(axis=1)
    return v[np.nonzero(ok)[0][-1]]


def _summary(ds, cfg: Config, eps, dtype_name, meta) -> dict:
    local = _local_runs(ds)
    tte, final, angle, loj, cw_err, bal = {}, {}, {}, {}, {}, {}
    for r in local:
        m = int(ds["width"].sel(run=r))
        reached = str(ds["status"].sel(run=r).values) == "stop_loss"
        tte[m] = float(ds["t_stop"].sel(run=r)) if reached else float("inf")
        final[m] = float(_last(ds, r, "population_loss"))
        angle[m] = float(_nanmax(_last(ds, r, "teacher_angle")))
        loj[m] = float(np.nanmin(ds["lojasiewicz_ratio"].sel(run=r).values))
        cw_err[m] = float(_nanmax(np.abs(_last(ds, r, "cluster_weight") - 1.0)))
        b = np.asarray(ds["balancedness"].sel(run=r).values)[:, :m]
        bal[m] = float(_nanmax(np.abs(b - b[0])))
    rand = [str(r) for r in ds.run.values if str(r).startswith("random")][0]
    out = {
        "dtype": dtype_name,
        "eps": eps,
        "final_loss": max(final.values()),
        "final_loss_by_width": final,
        "max_student_teacher_angle_deg": max(angle.values()),
        "max_student_teacher_angle_deg_by_width": angle,
        "time_to_eps_by_width": tte,
        "lojasiewicz_ratio_min": min(loj.values()),
        "lojasiewicz_ratio_min_by_width": loj,
        "cluster_weight_max_rel_error_by_width": cw_err,
        "balancedness_max_drift_by_width": bal,
        "teacher_separation_deg": meta["separation_deg"],
        "initial_loss_by_width": {int(ds["width"].sel(run=r)): float(
            ds["population_loss"].sel(run=r).values[0]) for r in local},
        "random_init_width": int(ds["width"].sel(run=rand)),
        "random_init_status": str(ds["status"].sel(run=rand).values),
        "random_init_final_loss": float(_last(ds, rand, "population_loss")),
        "random_init_max_angle_deg": float(_nanmax(_last(ds, rand, "teacher_angle"))),
        "random_init_max_angle_deg_weight_ge_1pct": _significant_angle(ds, rand),
        "random_init_t_stop": float(ds["t_stop"].sel(run=rand)),
    }
    sample = [str(r) for r in ds.run.values if str(r).startswith("sample")]
    if sample:
        s = sample[0]
        out["sample_run_status"] = str(ds["status"].sel(run=s).values)
        out["sample_run_final_sample_loss"] = float(_last(ds, s, "loss"))
        out["sample_run_final_population_loss"] = float(_last(ds, s, "population_loss"))
        out["sample_run_time_to_eps"] = float(ds["t_stop"].sel(run=s))
        out["sample_run_num_steps"] = int(ds["num_steps"].sel(run=s))
    return out


_CITE = "Zhou, Ge, Jin, COLT 2021 (arXiv 2102.02410)"


def figures(ds, cfg: Config) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps = float(ds.attrs.get("eps", np.nan))
    setup = (f"teacher: k={cfg.k} {cfg.directions} directions, {cfg.outer} outer weights, "
             f"sigma={cfg.activation}, x~N(0,I_{cfg.d}); student m=k..{max(cfg.width_factors)}k, "
             f"both layers; exact population GF from a local init ({cfg.angle_deg} deg); "
             f"{ds.attrs.get('dtype', '')}, eps={eps:g}. {_CITE}.")
    runs = [str(r) for r in ds.run.values]
    figs = {}

    def per_run(ax, var, reduce=None, runs_=runs, logx=True, logy=True, **kw):
        for r in runs_:
            t = np.asarray(ds["t"].sel(run=r).values)
            v = np.asarray(ds[var].sel(run=r).values, dtype=float)
            if reduce is not None:
                v = reduce(v)
            keep = np.isfinite(t) & np.isfinite(v) & ((t > 0) if logx else True)
            if logy:
                keep &= v > 0
            ax.plot(t[keep], v[keep], "--" if not r.startswith("m=") else "-", label=r, **kw)
        ax.set_xscale("log" if logx else "linear")
        ax.set_yscale("log" if logy else "linear")
        ax.set_xlabel("time t")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    per_run(axes[0], "population_loss")
    axes[0].axhline(eps, color="k", lw=0.8, ls=":")
    axes[0].set_ylabel("population loss L")
    axes[0].set_title("log-log axes")
    local = [r for r in runs if r.startswith("m=")]
    per_run(axes[1], "population_loss", runs_=local, logx=False)
    axes[1].axhline(eps, color="k", lw=0.8, ls=":")
    axes[1].set_xscale("symlog", linthresh=10.0)
    axes[1].set_xlim(left=0.0)
    axes[1].set_title("linear (symlog) time: straight line = linear rate")
    fig.suptitle("Population loss under gradient flow")
    _caption(fig, setup)
    figs["loss"] = fig

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    per_run(axes[0], "teacher_angle", reduce=lambda v: _nanmax(v, axis=-1))
    axes[0].set_ylabel("max over student neurons of angle to nearest teacher (deg)")
    axes[0].set_title("Student-teacher angles")
    for r in runs:
        m = int(ds["width"].sel(run=r))
        a = _last(ds, r, "teacher_angle")[:m]
        axes[1].scatter(np.full(m, r), np.maximum(a, 1e-6), s=12)
    axes[1].set_yscale("log")
    axes[1].set_ylabel("final angle to nearest teacher (deg), each neuron")
    axes[1].tick_params(axis="x", rotation=30, labelsize=7)
    axes[1].grid(True, which="both", alpha=0.3)
    _caption(fig, setup)
    figs["angles"] = fig

    fig, ax = plt.subplots(figsize=(6, 4))
    per_run(ax, "cluster_weight", reduce=lambda v: _nanmax(np.abs(v - 1.0), axis=-1))
    ax.set_ylabel(r"max$_i$ |$\sum_{j\to i} a_j|w_j|$ - $a^*_i|w^*_i|$|")
    ax.set_title("Cluster outer weight vs teacher weight")
    _caption(fig, setup)
    figs["cluster_weight"] = fig

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    per_run(axes[0], "lojasiewicz_ratio")
    axes[0].set_ylabel(r"$|\nabla L|^2 / L$")
    axes[0].set_title("Lojasiewicz-type ratio (= -d log L / dt)")
    for r in runs:
        g = np.asarray(ds["grad_norm"].sel(run=r).values, dtype=float)
        L = np.asarray(ds["loss"].sel(run=r).values, dtype=float)
        L_ok = (L > 0) & (L < 0.1) & (g > 0)
        axes[1].plot(L[L_ok], np.log(g[L_ok]) / np.log(L[L_ok]),
                     "-" if r.startswith("m=") else "--", label=r)
    axes[1].set_xscale("log")
    axes[1].set_ylim(0.0, 1.5)
    axes[1].invert_xaxis()
    axes[1].set_xlabel("loss L (decreasing)")
    axes[1].set_ylabel(r"$\log|\nabla L| / \log L$")
    axes[1].set_title("empirical exponent (1/2: |grad L| ~ sqrt(L), linear rate)")
    axes[1].grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7)
    _caption(fig, setup)
    figs["lojasiewicz"] = fig

    fig, ax = plt.subplots(figsize=(6, 4))
    ms, ts = [], []
    for r in local:
        ms.append(int(ds["width"].sel(run=r)))
        ok = str(ds["status"].sel(run=r).values) == "stop_loss"
        ts.append(float(ds["t_stop"].sel(run=r)) if ok else np.nan)
    ax.plot(ms, ts, "o-")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(ms, [f"{m} ({m // cfg.k}k)" for m in ms])
    ax.set_xlabel("student width m")
    ax.set_ylabel(f"time to reach L <= {eps:g}")
    ax.set_title("Time to eps vs width (theory: rate independent of m)")
    ax.grid(True, which="both", alpha=0.3)
    _caption(fig, setup)
    figs["time_to_eps"] = fig

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in runs:
        m = int(ds["width"].sel(run=r))
        b = np.asarray(ds["balancedness"].sel(run=r).values, dtype=float)[:, :m]
        t = np.asarray(ds["t"].sel(run=r).values)
        drift = _nanmax(np.abs(b - b[0]), axis=-1)
        keep = (t > 0) & np.isfinite(drift) & (drift > 0)
        ax.plot(t[keep], drift[keep], "-" if r.startswith("m=") else "--", label=r)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("time t")
    ax.set_ylabel(r"max$_j$ |$(a_j^2-|w_j|^2)(t) - (a_j^2-|w_j|^2)(0)$|")
    ax.set_title("Conserved quantity a_j^2 - |w_j|^2 (solver error only)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    _caption(fig, setup)
    figs["conserved"] = fig
    return figs


def _caption(fig, text):
    fig.text(0.5, -0.02, text, ha="center", va="top", fontsize=7, wrap=True)
    fig.tight_layout()

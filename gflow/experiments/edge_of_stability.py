"""Edge of stability: GD's sharpness rises to 2/lr and hovers there; the central flow tracks it.

Cohen, Kaur, Li, Kolter & Talwalkar (ICLR 2021, arXiv 2103.00065): full-batch GD with step
lr on a neural net sharpens (the top Hessian eigenvalue S rises, as it does under gradient
flow) until S reaches 2/lr, then S hovers "right at, or just above" 2/lr while the loss
falls over long windows but not monotonically. Cohen, Damian, Talwalkar, Kolter & Lee
(ICLR 2025, arXiv 2410.24206): the central flow (:class:`gflow.CentralFlow`) is an ODE that
follows GD's time-averaged trajectory there, and ``L + tr(X)/lr`` predicts GD's loss
averaged over its oscillations.

Setting: a fully connected net (``widths``, tanh or ReLU, NTK scaling) on teacher data with
Gaussian inputs, regression targets with label noise (squared loss: the noise makes the
data hard to fit, which drives the sharpening) or sign labels (logistic loss); ``seeds``
draws of data and init. For each lr of ``lrs``, ``steps`` GD steps with the sharpness
(Lanczos, ``iters`` HVPs, :mod:`gflow.curvature`) at every step; gradient flow and the
central flow from the same init on the same time axis ``t = step * lr``. The central flow
is integrated as the authors do (Euler, ``central_substeps`` steps per GD step, with
``edge_rate = central_substeps``, so each step projects the sharpness back onto 2/lr).
Measures (:mod:`gflow.edge`, intervals over seeds by :func:`gflow.stats.median_interval`):
GF's sharpness at the end over at the start; from GD's first crossing of 2/lr on, the
median of S lr / 2, the fraction of steps within ``band`` of the edge, the fraction of steps
at which the loss rose and the loss's fall; the central flow's predicted loss against GD's
loss averaged over ``avg_steps`` steps, and its distance to GD's iterates, each over GF's.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import gflow
from gflow import edge, stats
from gflow.curvature import Sharpness, density, hessian_density

from . import Result, Settings, claim, setting

RUN_TIME = ("about 107 s of CPU time on 2 cores (107-150 s wall while other jobs loaded the "
            "machine, load 4-6); preset=full not measured")
CITE = ("Cohen, Kaur, Li, Kolter & Talwalkar, ICLR 2021 (arXiv 2103.00065); Cohen, Damian, "
        "Talwalkar, Kolter & Lee, ICLR 2025 (arXiv 2410.24206)")
CLAIMS = {
    "progressive_sharpening": "Under gradient flow the sharpness (top Hessian eigenvalue) "
    "rises over training (progressive sharpening; Cohen et al. 2021).",
    "edge_of_stability": "Under full-batch GD with step lr the sharpness rises to 2/lr and "
    "hovers at or just above it, while the loss still falls over long windows though not "
    "monotonically (Cohen et al. 2021).",
    "central_flow_tracks_gd": "The central flow tracks GD's time-averaged trajectory at the "
    "edge of stability: its predicted loss L + tr(X)/lr matches GD's loss averaged over the "
    "oscillations, and it stays closer to GD than gradient flow does (Cohen et al. 2025)."}
REPORT = {"smoke": [("", dict(seeds=2, steps=40, widths=(8, 8), n=32, d=4, lrs=(4.0,),
                             avg_steps=5, iters=8, snapshots=2))],
          "quick": [("tanh_squared", {}), ("tanh_logistic", dict(loss="logistic"))],
          "full": [(f"{a}_{lo}", dict(preset="full", activation=a, loss=lo))
                   for a in ("tanh", "relu") for lo in ("squared", "logistic")]}
#: the settings of ``preset=full`` (wherever a setting is left at its default)
FULL = dict(seeds=8, lrs=(2.0, 3.0, 4.0, 5.0, 6.0), widths=(64, 64), steps=600)


@dataclasses.dataclass(frozen=True)
class Config(Settings):
    """Settings of the edge-of-stability experiment.

    Attributes:
        seed: first seed of the data and init draws.
        seeds: draws of data and init (the unit of the intervals).
        preset: ``full`` takes the settings of ``FULL`` wherever they are at the default.
        n: training points (teacher data, Gaussian inputs).
        d: input dimension.
        noise: label noise of the regression targets (squared loss); unused for logistic.
        widths: hidden widths of the fully connected student.
        activation: ``tanh`` or ``relu``.
        loss: ``squared`` (regression targets) or ``logistic`` (sign labels).
        lrs: GD step sizes; each has its edge 2/lr.
        steps: GD steps per lr (GF and the central flow run to the same time steps x lr).
        iters: Lanczos iterations (HVPs) per sharpness evaluation.
        band: relative half-width of the band around 2/lr counted as at the edge.
        avg_steps: GD steps in the centred window of GD's averaged loss (it must span
            GD's oscillations: at the edge these are slow cycles of sharpening and
            catapult, tens of steps long, besides the period-2 flip).
        central_substeps: Euler steps of the central flow per GD step (its edge_rate too).
        rtol: relative tolerance of gradient flow (absolute: rtol / 100).
        snapshots: Hessian densities (SLQ) of GD at the middle lr, first seed, at this many
            evenly spaced steps.
    """

    seed: int = 0
    seeds: int = setting(3, ge=1)
    preset: str = setting("default", choices=("default", "full"))
    n: int = setting(128, ge=2)
    d: int = setting(8, ge=1)
    noise: float = setting(1.0, ge=0)
    widths: tuple[int, ...] = setting((32, 32), ge=1)
    activation: str = setting("tanh", choices=("tanh", "relu"))
    loss: str = setting("squared", choices=("squared", "logistic"))
    lrs: tuple[float, ...] = setting((3.0, 4.0, 5.0), gt=0)
    steps: int = setting(300, ge=2)
    iters: int = setting(16, ge=2)
    band: float = setting(0.1, gt=0, lt=1)
    avg_steps: int = setting(50, ge=1, le="steps")
    central_substeps: int = setting(4, ge=1)
    rtol: float = setting(1e-6, gt=0)
    snapshots: int = setting(3, ge=1, le="steps")

    def __post_init__(self):
        super().__post_init__()
        if len({f"{lr:g}" for lr in self.lrs}) != len(self.lrs):
            raise ValueError(f"edge_of_stability: lrs={self.lrs!r}: the step sizes must differ.")


def _problem(cfg: Config):
    """The net, the stacked per-seed data and the stacked per-seed inits."""
    net = gflow.MLP(cfg.widths, cfg.activation, "ntk")
    keys = [jax.random.key(cfg.seed + s) for s in range(cfg.seeds)]
    labels = "sign" if cfg.loss == "logistic" else "regression"
    noise = cfg.noise if cfg.loss == "squared" else 0.0
    sets = [gflow.data.teacher(jax.random.fold_in(k, 0), cfg.n, cfg.d, 4, inputs="gaussian",
                               labels=labels, noise=noise) for k in keys]
    data = gflow.Dataset(jnp.stack([s.X for s in sets]), jnp.stack([s.y for s in sets]))
    P = jax.vmap(lambda k: gflow.init.gaussian(k, net, cfg.d))(
        jnp.stack([jax.random.fold_in(k, 1) for k in keys]))
    return net, data, P


def _runs(cfg: Config, net, data, P, progress: bool):
    """Per lr: GD, GF and the central flow at every GD step, as ``(lr, seed, step)`` arrays."""
    out = {k: np.full((len(cfg.lrs), cfg.seeds, cfg.steps + 1), np.nan) for k in (
        "gd_loss", "gd_sharpness", "gf_loss", "gf_sharpness", "cf_loss", "cf_sharpness",
        "cf_central_loss", "dist_gd_gf", "dist_gd_cf")}
    kw = dict(loss=cfg.loss, save_params=True, progress=progress)
    sharp = Sharpness(cfg.iters)
    gd_params = []
    for i, lr in enumerate(cfg.lrs):
        ts = np.arange(cfg.steps + 1) * lr
        cf = gflow.CentralFlow(lr, iters=cfg.iters, edge_rate=float(cfg.central_substeps),
                               solver="euler", controller="constant",
                               dt0=lr / cfg.central_substeps)
        runs = {"gd": gflow.GD(lr), "cf": cf,
                "gf": gflow.GradientFlow(rtol=cfg.rtol, atol=cfg.rtol / 100)}
        tr = {}
        for name, dyn in runs.items():
            with gflow.progress.stage(f"{name}, lr {lr:g} ({i + 1} of {len(cfg.lrs)})"):
                tr[name] = gflow.simulate_ensemble(net, P, data, dynamics=dyn, t1=ts[-1],
                                                   save=ts, observe=("loss", sharp), **kw)
            for v in tr[name].observables:
                out[f"{name}_{v}"][i] = np.asarray(tr[name][v])
        out["cf_central_loss"][i] = edge.central_loss_along(
            lr, net, cfg.loss, data.X, data.y, tr["cf"].params, iters=cfg.iters,
            edge_rate=float(cfg.central_substeps))
        out["dist_gd_gf"][i] = edge.param_distance(tr["gd"].params, tr["gf"].params)
        out["dist_gd_cf"][i] = edge.param_distance(tr["gd"].params, tr["cf"].params)
        gd_params.append(tr["gd"].params)
    return out, gd_params


def _densities(cfg: Config, net, data, params):
    """SLQ nodes and weights of GD's Hessian at ``cfg.snapshots`` steps (first seed)."""
    obj = gflow.Objective(net, cfg.loss, data.X[0], data.y[0])
    at = np.linspace(0, cfg.steps, cfg.snapshots).round().astype(int)
    res = [hessian_density(obj, jax.tree.map(lambda x, s=s: x[0, s], params), iters=cfg.iters)
           for s in at]
    return at, np.stack([r.nodes for r in res]), np.stack([r.weights for r in res])


def _edge_summary(cfg: Config, o: dict) -> dict:
    """Per lr: GD's edge measures with intervals over seeds, the central flow's errors."""
    s = {}
    for i, lr in enumerate(cfg.lrs):
        tag, m = f"lr{lr:g}", edge.edge_measures(o["gd_sharpness"][i], o["gd_loss"][i], lr,
                                                 band=cfg.band)
        s[f"gd_crossed_seeds_{tag}"] = int(m["crossed"].sum())
        s[f"gd_cross_time_{tag}"] = stats.median_interval(np.where(
            m["crossed"], m["cross_step"] * lr, np.nan))
        for k in ("ratio_median", "in_band", "loss_rises", "loss_ratio"):
            s[f"gd_{k}_{tag}"] = stats.median_interval(m[k])
        avg = edge.running_mean(o["gd_loss"][i], cfg.avg_steps)
        after = np.arange(cfg.steps + 1)[None] >= np.where(m["crossed"], m["cross_step"],
                                                           cfg.steps + 1)[:, None]
        err = {f: np.nanmedian(np.where(after, edge.relative_gap(o[k][i], avg), np.nan), 1)
               for f, k in (("cf", "cf_central_loss"), ("gf", "gf_loss"))}
        cfe = edge.first_crossing(o["cf_sharpness"][i], 2 / lr)
        held = [np.median(o["cf_sharpness"][i, r, c:]) * lr / 2 - 1 if c >= 0 else np.nan
                for r, c in enumerate(cfe)]
        s[f"cf_sharpness_above_edge_{tag}"] = stats.median_interval(held)
        s[f"cf_loss_rel_error_{tag}"] = stats.median_interval(err["cf"])
        s[f"gf_loss_rel_error_{tag}"] = stats.median_interval(err["gf"])
        s[f"loss_error_ratio_cf_over_gf_{tag}"] = stats.median_interval(err["cf"] / err["gf"])
        s[f"dist_ratio_cf_over_gf_{tag}"] = stats.median_interval(
            o["dist_gd_cf"][i, :, -1] / o["dist_gd_gf"][i, :, -1])
    return s


def _iv(v) -> str:
    return f"{v[0]:.3g} [{v[1]:.3g}, {v[2]:.3g}]"


def _combine(verdicts: list[str]) -> str:
    return "inconclusive" if not verdicts else "does not hold" if "does not hold" in verdicts \
        else "holds" if all(v == "holds" for v in verdicts) else "inconclusive"


def _claims(cfg: Config, s: dict, o: dict) -> dict:
    sizes = f"{cfg.seeds} seeds, n = {cfg.n}, widths {cfg.widths}, {cfg.activation}, {cfg.loss}"
    r = s["gf_sharpness_ratio"] = stats.median_interval(o["gf_sharpness"][-1, :, -1]
                                                        / o["gf_sharpness"][-1, :, 0])
    short = int(np.isnan(o["gf_loss"][:, :, -1]).any(0).sum())
    out = {"progressive_sharpening": claim(stats.side_verdict(r, 1.0), (
        f"GF sharpness at t = {cfg.steps * cfg.lrs[-1]:g} over t = 0: {_iv(r)} (median, 95 % "
        "interval over seeds; holds if the interval lies above 1)") + (f"; GF stopped before "
        f"t1 on {short} seeds (e.g. max_steps at ReLU kinks): not measured" * bool(short)), sizes)}
    tags = [f"lr{lr:g}" for lr in cfg.lrs if s[f"gd_crossed_seeds_lr{lr:g}"] == cfg.seeds]
    b, g = cfg.band, lambda k, t: s[f"gd_{k}_{t}"]  # noqa: E731
    ok = [1 - b <= g("ratio_median", t)[1] and g("ratio_median", t)[2] <= 1 + b
          and g("in_band", t)[0] >= 0.5 and g("loss_ratio", t)[2] < 1
          and g("loss_rises", t)[1] > 0 for t in tags]
    why = "; ".join(f"{t}: S lr/2 {_iv(g('ratio_median', t))}, within {b:g} of the edge at "
                    f"{_iv(g('in_band', t))} of steps, loss rose at {_iv(g('loss_rises', t))} "
                    f"of steps and fell by x{_iv(g('loss_ratio', t))}" for t in tags)
    missing = [lr for lr in cfg.lrs if s[f"gd_crossed_seeds_lr{lr:g}"] < cfg.seeds]
    why = "; ".join([why] * bool(why) + [f"lr {missing}: 2/lr not reached by every seed "
                                         "(censored)"] * bool(missing))
    out["edge_of_stability"] = claim(_combine(["holds" if k else "does not hold" for k in ok]),
                                     (why or "no lr crossed 2/lr on every seed") + (
        f". Holds if at every lr the median S lr/2 from the first crossing on is within {b:g} "
        "of 1, at least half the steps are in that band, the loss fell and rose at some steps"),
        sizes + f", {cfg.steps} steps per lr")
    v = _combine([stats.side_verdict(s[f"{k}_ratio_cf_over_gf_{t}"], 1.0, above=False)
                  for t in tags for k in ("loss_error", "dist")])
    why = "; ".join(f"{t}: loss error {_iv(s[f'cf_loss_rel_error_{t}'])} vs GF's "
                    f"{_iv(s[f'gf_loss_rel_error_{t}'])}, distance to GD over GF's "
                    f"{_iv(s[f'dist_ratio_cf_over_gf_{t}'])}" for t in tags)
    out["central_flow_tracks_gd"] = claim(v, (why or "no lr crossed on every seed") + (
        f". Relative error of the predicted loss against GD's loss averaged over {cfg.avg_steps}"
        " steps, from GD's crossing on, and distance at the last step; holds if every ratio to "
        "GF's has its interval below 1"), sizes)
    return out


def run(cfg: Config, *, progress: bool = False) -> Result:
    import xarray as xr

    cfg = cfg.with_preset(FULL, "full")
    net, data, P = _problem(cfg)
    o, gd_params = _runs(cfg, net, data, P, progress)
    mid = len(cfg.lrs) // 2
    at, nodes, weights = _densities(cfg, net, data, gd_params[mid])
    s = _edge_summary(cfg, o)
    s |= {"seeds": cfg.seeds, "lrs": list(cfg.lrs), "steps": cfg.steps, "cite": CITE}
    s["claims"] = _claims(cfg, s, o)
    dims = ("lr", "seed", "step")
    runs = xr.Dataset({k: (dims, v) for k, v in o.items()} | {  # every dynamics at GD's steps
        "gd_avg_loss": (dims, edge.running_mean(o["gd_loss"], cfg.avg_steps))},
        coords={"lr": list(cfg.lrs), "seed": cfg.seed + np.arange(cfg.seeds),
                "step": np.arange(cfg.steps + 1),
                "time": (("lr", "step"), np.outer(cfg.lrs, np.arange(cfg.steps + 1)))})
    return Result(summary=s, dataset={"runs": runs, "density": xr.Dataset(
        {k: (("snapshot", "probe", "node"), v) for k, v in (("slq_nodes", nodes), (
            "slq_weights", weights))}, coords={"snapshot": at}, attrs={"lr": cfg.lrs[mid]})})


def figures(tree, cfg: Config) -> dict:
    from gflow.plot import caption, over_time, panels, style

    ds, dens = tree["runs"], tree["density"]
    lrs, setup = ds["lr"].values, (f"{cfg.activation} net {tuple(cfg.widths)}, {cfg.loss} loss, "
                                   f"n = {cfg.n}; seed {int(ds['seed'][0])} of "
                                   f"{ds.sizes['seed']}. {CITE}")
    fig, axes = panels(len(lrs), size=(4.2, 3.4), nrows=2)
    axes = np.asarray(axes).reshape(2, -1)
    for i, lr in enumerate(lrs):
        sel, t = ds.isel(lr=i, seed=0), ds["time"].values[i]
        for v, fmt, lab in (("gd", "-", "GD"), ("gf", "--", "GF"), ("cf", "-", "central flow")):
            over_time(axes[0, i], t, sel[f"{v}_sharpness"], lab, fmt, log_t=False,
                      lw=0.8 if v == "gd" else 1.5)
        axes[0, i].axhline(2 / lr, color="k", ls=":", label="2/lr")
        style(axes[0, i], xlabel="t = step x lr", ylabel="sharpness", title=f"lr = {lr:g}")
        for v, fmt, lab in (("gd_loss", "-", "GD"), ("gd_avg_loss", "-", "GD, averaged"),
                            ("gf_loss", "--", "GF"), ("cf_central_loss", "-",
                                                      "central flow: L + tr(X)/lr")):
            over_time(axes[1, i], t, sel[v], lab, fmt, log_t=False, positive=True,
                      lw=0.6 if v == "gd_loss" else 1.5)
        style(axes[1, i], y="log", xlabel="t = step x lr", ylabel="training loss")
    figs = {"sharpness_and_loss": caption(fig, setup, title="Edge of stability: GD, gradient "
                                          "flow and the central flow on one time axis")}
    fig, axes = panels(1, size=(5.5, 3.8))
    lr = float(dens.attrs["lr"])
    nodes, w = dens["slq_nodes"].values, dens["slq_weights"].values
    grid = np.linspace(min(nodes.min(), 0), max(nodes.max(), 2 / lr) * 1.05, 400)
    for j, step in enumerate(dens["snapshot"].values):
        axes[0].plot(grid, np.asarray(density(nodes[j], w[j], grid)), label=f"step {step}")
    axes[0].axvline(2 / lr, color="k", ls=":", label="2/lr")
    style(axes[0], y="log", xlabel="Hessian eigenvalue", ylabel="density (SLQ)",
          title=f"GD, lr = {lr:g}")
    axes[0].set_ylim(bottom=1e-4)
    figs["hessian_density"] = caption(fig, setup)
    return figs

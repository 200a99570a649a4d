"""Condensation at small initialization (Zhou et al., NeurIPS 2022, arXiv 2105.11686).

The paper's main experiment (its Fig. 2): a fully connected net d-50-1 with biases, no
width prefactor (``scaling="standard"``), every parameter ~ N(0, 0.005^2), n = 80 inputs
x ~ U[-4, 2]^5, target sum_k 3.5 sin(5 x_k + 1), squared loss. The paper folds the bias
into the input (x <- (x, 1)); here each hidden neuron has a bias term b_j ~ N(0, var)
instead -- the same model and distribution -- and its input weight is u_j = (w_j, b_j).

Trained by gradient flow (adaptive Tsit5, log-spaced saves; stopped once the loss has
dropped by ``stop_drop``, which is after the initial stage) and by full-batch Adam
(``gflow.Optax(optax.adam(lr), lr)``, time = step x lr) as in the paper. For every seed
(a fresh init on the same data) the end of the initial stage is detected per hidden layer
(:func:`gflow.condense.growth_stage_end`: the largest input-weight norm has grown
``growth_factor``-fold) and the condensed orientations there are counted
(:func:`gflow.condense.count_orientations`). The theory predicts at most 2p orientations,
p = the activation's multiplicity (computed from derivatives at 0 by jax).
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import numpy as np
import optax

import gflow
from gflow import condense

from . import Result, Settings, setting

#: the paper's Adam learning rates (1e-3 unless listed)
PAPER_ADAM_LR = {"softplus": 8e-4, "relu": 2.5e-4}
DYNAMICS = ("gf", "adam", "gd")
CITE = "Zhou, Zhou, Luo, Zhang, Xu, NeurIPS 2022 (arXiv 2105.11686)"


@dataclasses.dataclass(frozen=True)
class Config(Settings):
    seed: int = 0  # data key; init keys are seed+1 .. seed+seeds
    activation: str = setting("tanh", choices=gflow.ACTIVATIONS)
    seeds: int = setting(3, ge=1)  # number of independent inits
    hidden: tuple[int, ...] = (50,)  # hidden widths; (50,) is two-layer, (50, 50) multi-layer
    n: int = 80
    d: int = 5
    freq: float = 5.0  # target sum_k 3.5 sin(freq x_k + 1)
    init_std: float = 0.005  # std of every parameter (paper: var 0.005^2)
    gamma: float = 0.0  # if > 0: variance m_l^-gamma per layer instead of init_std
    outer_scale: float = 1.0  # std of the output weights a = outer_scale x the layer's std
    dynamics: tuple[str, ...] = setting(("gf", "adam"), choices=DYNAMICS)  # also "gd": GD
    # with gd_lr and GF's stop rule
    t1: float = 400.0  # cap on the GF time
    stop_drop: float = setting(0.2, gt=0, lt=1)  # GF stops once the loss dropped by this much
    adam_lr: float = 0.0  # 0: the paper's (1e-3; 8e-4 softplus; 2.5e-4 relu)
    adam_steps: int = 500
    gd_lr: float = 0.01
    n_save: int = 100
    rtol: float = 1e-5
    atol: float = 1e-8
    growth_factor: float = 10.0  # initial stage ends when the max neuron norm grew this much
    norm_frac: float = condense.NORM_FRAC
    cos_threshold: float = condense.COS_THRESHOLD


def adam_lr(cfg: Config) -> float:
    """The Adam learning rate: ``cfg.adam_lr`` or the paper's choice for the activation."""
    return cfg.adam_lr if cfg.adam_lr > 0 else PAPER_ADAM_LR.get(cfg.activation, 1e-3)


def multiplicity(activation: str) -> int | None:
    """Multiplicity of ``activation`` from its derivatives at 0 (``None``: undefined)."""
    return gflow.nets.get_activation(activation).multiplicity


def build(cfg: Config):
    """``(net, data, [params0 per seed])`` for a config."""
    data = gflow.data.sine_data(jax.random.key(cfg.seed), cfg.n, cfg.d, freq=cfg.freq)
    net = gflow.MLP(cfg.hidden, cfg.activation, scaling="standard", bias=True)
    # every parameter ~ N(0, init_std^2), or of variance m_l^-gamma in layer l (gamma > 0)
    scale = dict(gamma=cfg.gamma, outer_std=cfg.outer_scale * cfg.hidden[-1] ** (-cfg.gamma / 2)
                 ) if cfg.gamma > 0 else dict(std=cfg.init_std,
                                              outer_std=cfg.outer_scale * cfg.init_std)
    return net, data, [gflow.init.small(jax.random.key(cfg.seed + 1 + s), net, cfg.d, **scale)
                       for s in range(cfg.seeds)]


def observables(cfg: Config) -> dict:
    """Observables recorded in each run: loss, per-layer max norm / orientations /
    effective neurons, and every layer's input weights."""
    return {"loss": "loss", "max_input_norm": "max_input_norm",
            "orientations": condense.orientations_observable(cfg.norm_frac, cfg.cos_threshold),
            "effective_neurons": "effective_neurons",
            **{f"u_l{k}": condense.input_weights_observable(k)
               for k in range(1, len(cfg.hidden) + 1)}}


def run(cfg: Config, *, progress: bool = False) -> Result:
    net, data, inits = build(cfg)
    lr = adam_lr(cfg)
    gf_times = gflow.LogTimes(cfg.n_save, t_min=cfg.t1 * 1e-5).resolve(cfg.t1)
    plans = {  # dynamics, t1, save times, whether it stops on the loss drop
        "gf": (gflow.GradientFlow(rtol=cfg.rtol, atol=cfg.atol), cfg.t1, gf_times, True),
        "gd": (gflow.GD(lr=cfg.gd_lr), cfg.t1,
               np.unique(np.round(gf_times / cfg.gd_lr)) * cfg.gd_lr, True),
        "adam": (gflow.Optax(optax.adam(lr), lr=lr), cfg.adam_steps * lr,
                 np.unique(np.round(np.linspace(0, cfg.adam_steps, cfg.n_save))) * lr, False)}
    trajs, obs = {}, observables(cfg)
    for s, p0 in enumerate(inits):
        loss0 = float(gflow.Objective(net, "squared", data.X, data.y).loss(p0))
        for name in (d for d in ("gf", "gd", "adam") if d in cfg.dynamics):
            dyn, t1, ts, stops = plans[name]
            trajs[(name, s)] = tr = gflow.simulate(
                net, p0, data, loss="squared", t1=t1, save=ts, observe=obs,
                dynamics=dyn, stop_loss=(1 - cfg.stop_drop) * loss0 if stops else None,
                throw=False, progress=progress)
            # max_steps: keep what was reached (the summary reports the status)
            if tr.status not in ("completed", "stop_loss", "max_steps"):
                raise gflow.SimulationError(f"run {(name, s)} ended with status "
                                            f"{str(tr.status)!r}")
    ds = gflow.trajectory.combine({k: t.without_params() for k, t in trajs.items()},
                                  ("dynamics", "seed"))
    # the p = 1 prediction: +-sum_i e_i (x_i, 1) with the residual at init
    v = np.stack([np.asarray(condense.first_order_direction(
        data.X, data.y - net.apply(p0, data.X))) for p0 in inits])
    ds = ds.assign(first_order_direction=(("seed", "input_l1"), v))
    ds = stage_end(ds, cfg)
    return Result(summary=summarize(ds, cfg), dataset=ds)


def stage_end(ds, cfg: Config):
    """Add the end of the initial stage and the counts there (``stage_end_index``,
    ``stage_end_time``, ``orientations_at_end``, ``effective_neurons_at_end`` over
    (dynamics, seed, layer), :func:`gflow.condense.stage_end_counts`) and the layer-1
    alignment with the p = 1 prediction (``alignment_at_end``) to the dataset."""
    ds = ds.merge(condense.stage_end_counts(ds, factor=cfg.growth_factor))
    idx = ds["stage_end_index"].transpose("dynamics", "seed", "layer").values[..., 0]
    align = np.full(idx.shape, np.nan)
    for i, j in zip(*np.nonzero(idx >= 0), strict=True):
        sub = ds.isel(dynamics=i, seed=j, time=idx[i, j])
        align[i, j] = condense.alignment(sub["u_l1"].values, sub["first_order_direction"].values,
                                         norm_frac=cfg.norm_frac)
    return ds.assign(alignment_at_end=(("dynamics", "seed"), align))


def _num(x):
    return None if not np.isfinite(x) else (int(x) if float(x).is_integer() else float(x))


def summarize(ds, cfg: Config) -> dict:
    """Flat summary. Headline (``orientations`` ...) is gradient flow, layer 1, when GF was
    run (else Adam); every dynamics and layer is listed under its own keys."""
    p = multiplicity(cfg.activation)
    out = {"activation": cfg.activation, "multiplicity": "undefined" if p is None else p,
           "predicted_max_orientations": "undefined" if p is None else 2 * p,
           "hidden": ",".join(map(str, cfg.hidden)), "adam_lr": adam_lr(cfg)}
    seeds = [int(s) for s in ds["seed"].values]

    def by_seed(v):
        return dict(zip(seeds, map(_num, v), strict=True))

    def over_seeds(v, reduce):
        return _num(reduce(v)) if np.isfinite(v).any() else None

    for dname in ds["dynamics"].values:
        sub = ds.sel(dynamics=dname)
        for k in range(ds.sizes["layer"]):
            tag = f"_{dname}" + (f"_layer{k + 1}" if k else "")
            o, te, ne = (np.asarray(sub[v].values[:, k], float) for v in (
                "orientations_at_end", "stage_end_time", "effective_neurons_at_end"))
            out |= {f"orientations{tag}": over_seeds(o, np.nanmax),
                    f"orientations{tag}_by_seed": by_seed(o),
                    f"initial_stage_end_time{tag}": over_seeds(te, np.nanmedian),
                    f"initial_stage_end_time{tag}_by_seed": by_seed(te),
                    f"effective_neurons{tag}_by_seed": by_seed(np.round(ne, 3))}
            if k == 0:
                # p = 1 theory: weight-carrying neurons on +-sum_i e_i (x_i, 1)
                out[f"alignment_first_order{tag}_by_seed"] = by_seed(
                    np.round(np.asarray(sub["alignment_at_end"].values, float), 4))
            if p is not None:
                out[f"within_2p{tag}"] = bool(np.all(o[np.isfinite(o)] <= 2 * p))
        out[f"status_{dname}"] = ",".join(str(x) for x in sub["status"].values)
    head = "gf" if "gf" in ds["dynamics"].values else "adam"
    out["headline_dynamics"] = head
    for key in ("orientations", "initial_stage_end_time"):
        out[key], out[f"{key}_by_seed"] = out[f"{key}_{head}"], out[f"{key}_{head}_by_seed"]
    return out


# -- figures --------------------------------------------------------------------------
def input_weights_at_end(ds, dname, seed, layer: int = 1):
    """``(U, t)``: layer ``layer``'s input weights at the detected end of the initial stage
    of run ``(dname, seed)`` and that time; ``(None, nan)`` if it was not reached."""
    sub = ds.sel(dynamics=dname, seed=seed)
    i = int(sub["stage_end_index"].values[layer - 1])
    if i < 0:
        return None, float("nan")
    U = np.asarray(sub[f"u_l{layer}"].values[i])
    return U, float(ds["time"].values[i])


def heatmap_figure(ds, cfg: Config, layer: int = 1):
    """Cosine similarity of the input weights at the end of the initial stage, neurons
    ordered by cluster; one panel per dynamics (first seed)."""
    from gflow.plot import caption, panels

    dyn, seed = list(ds["dynamics"].values), ds["seed"].values[0]
    fig, axes = panels(len(dyn), size=(4.6, 4.2))
    for ax, dname in zip(axes, dyn, strict=True):
        U, t = input_weights_at_end(ds, dname, seed, layer)
        if U is None:
            ax.axis("off")
            ax.text(0.5, 0.5, f"{dname}: the largest norm never grew {cfg.growth_factor:g}x\n"
                    "(initial stage not over before the run ended)", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9)
            continue
        im = condense.draw_cosines(ax, U, norm_frac=cfg.norm_frac,
                                   cos_threshold=cfg.cos_threshold)
        n_or = int(ds["orientations_at_end"].sel(dynamics=dname, seed=seed).values[layer - 1])
        ax.set_title(f"{dname}, t={t:.3g}: {n_or} orientation(s)", fontsize=10)
        ax.set_xlabel("neuron (by cluster; after the black line: small norm)")
        ax.set_ylabel("neuron")
        fig.colorbar(im, ax=ax, fraction=0.046, label="cos(u_j, u_k)")
    return caption(fig, title=f"{cfg.activation}: input-weight cosine similarity at the end of "
                   f"the initial stage, layer {layer}\n{CITE}", title_size=10)


def polar_figure(ds, cfg: Config):
    """Neuron directions of layer 1 at the end of the initial stage as points
    (angle, norm / max norm): the angle of (w, b) for d = 1, of w for d = 2 (the bias is
    then not shown; the radius is still the norm of (w, b))."""
    from gflow.plot import caption, panels

    dyn = list(ds["dynamics"].values)
    fig, axes = panels(len(dyn), size=(4.4, 4.4), subplot_kw={"projection": "polar"})
    for ax, dname in zip(axes, dyn, strict=True):
        for s in ds["seed"].values:
            U, _ = input_weights_at_end(ds, dname, s, 1)
            if U is not None:
                condense.draw_directions(ax, U, label=f"seed {s}")
        ax.set_title(f"{dname}: angle of {'(w, b)' if cfg.d == 1 else 'w'}, radius = norm / "
                     "max", fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower left")
    return caption(fig, title=f"{cfg.activation}: neuron directions at the end of the initial "
                   f"stage\n{CITE}", title_size=10)


def counts_figure(ds, cfg: Config, layer: int = 1):
    """Condensed orientations and effective neurons over time, one line per seed; the
    dotted line marks the detected end of the initial stage."""
    from gflow.plot import caption, lines, panels, style

    p, dyn = multiplicity(cfg.activation), list(ds["dynamics"].values)
    fig, axes = panels(len(dyn), nrows=2, size=(5, 3.2))
    rows = (("orientations", "condensed orientations"), ("effective_neurons", "effective neurons"))
    for (r, (var, ylabel)), (c, dname) in itertools.product(enumerate(rows), enumerate(dyn)):
        sub, ax = ds.sel(dynamics=dname).isel(layer=layer - 1), axes[r, c]
        lines(ax, sub, var, "seed", colors=True, label=lambda s: f"seed {s}")
        for i, te in enumerate(sub["stage_end_time"].values):
            if np.isfinite(te):
                ax.axvline(te, ls=":", color=f"C{i}")
        if p is not None:
            ax.axhline(2 * p, color="k", ls="--", lw=1, label=f"2p = {2 * p}")
        style(ax, x="log", y="log", ylabel=ylabel, title=dname,
              xlabel="time t" + ("" if dname == "gf" else " (step x lr)"))
        ax.title.set_fontsize(10)
    return caption(fig, title=f"{cfg.activation} (multiplicity {'undefined' if p is None else p}"
                   f"), layer {layer}: condensation over time\n{CITE}", title_size=10)


def figures(ds, cfg: Config) -> dict:
    from gflow.plot import curves

    figs = {}
    for layer in range(1, ds.sizes["layer"] + 1):
        suffix = "" if layer == 1 else f"_layer{layer}"
        figs[f"cosine_heatmap{suffix}"] = heatmap_figure(ds, cfg, layer)
        figs[f"orientations{suffix}"] = counts_figure(ds, cfg, layer)
    if cfg.d <= 2:
        figs["polar"] = polar_figure(ds, cfg)
    figs["loss"] = curves(ds, "loss", panel="dynamics", hue="seed", ylabel="training loss",
                          title=f"{cfg.activation}: training loss ({CITE})")
    return figs

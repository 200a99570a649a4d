"""Condensation at small initialization (Zhou et al., NeurIPS 2022, arXiv 2105.11686).

A net d-50-1 with hidden biases, no output bias, no width prefactor; n = 80 inputs
x ~ U[-4, 2]^5, target sum_k 3.5 sin(5 x_k + 1) (:func:`gflow.data.sine_data`). Presets
(what init_std, adam_lr, adam_steps left at 0 mean): ``gflow`` (default): every parameter
std 0.005, loss 1/2 MSE, Adam lr 1e-3 (8e-4 softplus, 2.5e-4 relu), 500 steps; ``authors``:
the notebook ``initial_condense.ipynb`` (dlphenomena/condensation): ``normal_(0, 1/50**4)``
for every weight and hidden bias -- a *standard deviation* 50^-4 = 1.6e-7 (its text writes
N(0, 1/m^gamma) as a variance; its code sets the std) -- mean MSE, Adam lr 1e-3, 101 steps.

Adam is counted after the steps ``snapshots`` (10, ..., 100: the notebook's heatmaps),
gradient flow at the end of its initial stage (the largest input-weight norm has grown
``growth_factor``-fold; GF stops once the loss dropped by ``stop_drop``). Rule
(:func:`gflow.condense.orientation_counts`): all neurons, average linkage on the signed
cosine of u_j = (w_j, b_j) cut at ``cos_threshold``; clusters of >= 2 neurons are condensed
orientations, singletons apart; verdict "<= 2p", "> 2p" or "did not move". The
norm-filtered leader count (``norm_frac``) is kept as ``orientations_filtered``.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import optax

import gflow
from gflow import condense

from . import Result, Settings, setting, tally
from ._runs import dynamics_groups

#: the Adam learning rates this experiment uses for the gflow preset (1e-3 unless listed)
PAPER_ADAM_LR = {"softplus": 8e-4, "relu": 2.5e-4}
DYNAMICS = ("gf", "adam", "gd")
#: what init_std and adam_steps left at 0 take in each preset
PRESETS = {"gflow": {"init_std": 0.005, "adam_steps": 500},
           "authors": {"init_std": 50.0**-4, "adam_steps": 101}}
CITE = "Zhou, Zhou, Luo, Zhang, Xu, NeurIPS 2022 (arXiv 2105.11686)"
ACTIVATIONS = ("tanh", "xtanh", "x2tanh")  # p = 1, 2, 3
#: the claims this experiment judges (``gflow report``), on the first hidden layer
CLAIMS = {f"at_most_2p_{d}": f"With small initialization, the input weights (w_j, b_j) condense in "
          f"the initial stage of {d} onto at most 2p orientations, p the multiplicity of the "
          "activation at 0 (tanh 1, x tanh 2, x^2 tanh 3)." for d in ("adam", "gf")}
#: the runs of ``gflow report`` per level: the authors' notebook's scale, one per activation
REPORT = {level: [(a, dict(activation=a, preset="authors", **sizes)) for a in ACTIVATIONS]
          for level, sizes in (("smoke", dict(seeds=2, hidden=(20,), n=30, d=1, n_save=30)),
                               ("quick", {}), ("full", dict(seeds=8)))}
#: measured wall time of ``gflow run condensation`` with the defaults
RUN_TIME = "25 s of CPU time on 2 cores (50 s wall, load 7); preset=authors 28 s (60 s)"


@dataclasses.dataclass(frozen=True)
class Config(Settings):
    """Settings of the condensation study.

    Attributes:
        seed: key of the data; the inits use keys seed+1, ..., seed+seeds.
        activation: the hidden layers' activation (tanh, xtanh, x2tanh, ...).
        preset: ``gflow`` (std 0.005, 1/2 MSE, 500 Adam steps) or ``authors`` (the
            authors' notebook: std 50^-4, mean MSE, 101 Adam steps).
        seeds: independent inits.
        hidden: hidden widths: (50,) is the two-layer net, (50, 50) a three-layer one.
        n: training points, x ~ U[-4, 2]^d.
        d: input dimension.
        freq: the target is sum_k 3.5 sin(freq x_k + 1).
        init_std: std of every parameter (0: the preset's).
        gamma: if > 0, each layer's variance is m_l^-gamma instead of init_std.
        outer_scale: the output weights' std is outer_scale x the layer's std.
        dynamics: what runs: gf, adam, gd (gd with GF's stop rule).
        t1: cap on the GF (and GD) time.
        stop_drop: GF stops once the loss has dropped by this fraction.
        adam_lr: Adam's learning rate (0: the preset's, 1e-3 but 8e-4 softplus and
            2.5e-4 relu under the gflow preset).
        adam_steps: Adam steps (0: the preset's).
        snapshots: Adam steps at which orientations are counted.
        gd_lr: GD's learning rate.
        n_save: save points of each run.
        rtol: relative tolerance of GF's controller.
        atol: absolute tolerance of GF's controller.
        growth_factor: GF's initial stage ends when the largest input-weight norm has grown
            this many times.
        cos_threshold: signed cosine at which average linkage cuts the clusters.
        norm_frac: the filtered variant counts neurons with norm >= norm_frac x the largest.
    """

    seed: int = 0
    activation: str = setting("tanh", choices=gflow.ACTIVATIONS)
    preset: str = setting("gflow", choices=tuple(PRESETS))
    seeds: int = setting(3, ge=1)
    hidden: tuple[int, ...] = (50,)
    n: int = 80
    d: int = 5
    freq: float = 5.0
    init_std: float = setting(0.0, ge=0)
    gamma: float = 0.0
    outer_scale: float = 1.0
    dynamics: tuple[str, ...] = setting(("gf", "adam"), choices=DYNAMICS)
    t1: float = 400.0
    stop_drop: float = setting(0.2, gt=0, lt=1)
    adam_lr: float = setting(0.0, ge=0)
    adam_steps: int = setting(0, ge=0)
    snapshots: tuple[int, ...] = setting(tuple(range(10, 101, 10)), ge=1)
    gd_lr: float = 0.01
    n_save: int = 100
    rtol: float = 1e-5
    atol: float = 1e-8
    growth_factor: float = 10.0
    cos_threshold: float = setting(condense.COS_THRESHOLD, gt=-1, le=1)
    norm_frac: float = setting(condense.NORM_FRAC, ge=0, le=1)

    def __post_init__(self):
        super().__post_init__()
        if max(self.snapshots) > adam_steps(self):
            raise ValueError(f"condensation: snapshots={self.snapshots!r}: each value must be "
                             f"<= adam_steps ({adam_steps(self)} with preset {self.preset!r}).")


def adam_lr(cfg: Config) -> float:
    """The Adam learning rate: ``cfg.adam_lr``, else the preset's (per activation)."""
    if cfg.adam_lr > 0 or cfg.preset == "authors":
        return cfg.adam_lr or 1e-3
    return PAPER_ADAM_LR.get(cfg.activation, 1e-3)


def init_std(cfg: Config) -> float:
    return cfg.init_std or PRESETS[cfg.preset]["init_std"]


def adam_steps(cfg: Config) -> int:
    return cfg.adam_steps or PRESETS[cfg.preset]["adam_steps"]


def build(cfg: Config):
    """``(net, data, loss, [params0 per seed])`` for a config."""
    data = gflow.data.sine_data(jax.random.key(cfg.seed), cfg.n, cfg.d, freq=cfg.freq)
    net = gflow.MLP(cfg.hidden, cfg.activation, scaling="standard", bias=True)
    scale = dict(gamma=cfg.gamma, outer_std=cfg.outer_scale * cfg.hidden[-1] ** (-cfg.gamma / 2)
                 ) if cfg.gamma > 0 else dict(std=init_std(cfg),
                                              outer_std=cfg.outer_scale * init_std(cfg))
    loss = "mse" if cfg.preset == "authors" else "squared"  # the authors': torch's MSELoss
    return net, data, loss, [gflow.init.small(jax.random.key(cfg.seed + 1 + s), net, cfg.d,
                                              **scale) for s in range(cfg.seeds)]


def observables(cfg: Config) -> dict:
    """Recorded in each run: loss, per-layer max norm, effective neurons and the filtered
    leader count, and every layer's input weights (counted after the run)."""
    return {"loss": "loss", "max_input_norm": "max_input_norm",
            "effective_neurons": "effective_neurons",
            "orientations_filtered": condense.orientations_observable(cfg.norm_frac,
                                                                      cfg.cos_threshold),
            **{f"u_l{k}": condense.input_weights_observable(k)
               for k in range(1, len(cfg.hidden) + 1)}}


def run(cfg: Config, *, progress: bool = False) -> Result:
    net, data, loss, inits = build(cfg)
    lr, steps = adam_lr(cfg), adam_steps(cfg)
    gf_times = gflow.LogTimes(cfg.n_save, t_min=cfg.t1 * 1e-5).resolve(cfg.t1)
    adam_at = np.union1d(np.round(np.linspace(0, steps, cfg.n_save)), cfg.snapshots)
    plans = {  # dynamics, t1, save times, whether it stops on the loss drop
        "gf": (gflow.GradientFlow(rtol=cfg.rtol, atol=cfg.atol), cfg.t1, gf_times, True),
        "gd": (gflow.GD(lr=cfg.gd_lr), cfg.t1,
               np.unique(np.round(gf_times / cfg.gd_lr)) * cfg.gd_lr, True),
        "adam": (gflow.Optax(optax.adam(lr), lr=lr), steps * lr, adam_at * lr, False)}
    trajs, obs = {}, observables(cfg)
    for s, p0 in enumerate(inits):
        loss0 = float(gflow.Objective(net, loss, data.X, data.y).loss(p0))
        for name in (d for d in DYNAMICS if d in cfg.dynamics):
            dyn, t1, ts, stops = plans[name]
            trajs[(name, s)] = tr = gflow.simulate(
                net, p0, data, loss=loss, t1=t1, save=ts, observe=obs, dynamics=dyn,
                stop_loss=(1 - cfg.stop_drop) * loss0 if stops else None, throw=False,
                progress=progress)
            if tr.status not in ("completed", "stop_loss", "max_steps"):
                raise gflow.SimulationError(f"run {(name, s)} ended with status "
                                            f"{str(tr.status)!r}")
    groups = dynamics_groups({k: t.without_params() for k, t in sorted(  # in DYNAMICS' order
        trajs.items(), key=lambda kt: DYNAMICS.index(kt[0][0]))}, ("seed",))
    groups = {name: count(ds, name, cfg) for name, ds in groups.items()}
    return Result(summary=summarize(groups, cfg), dataset=groups)


def snapshot_indices(ds, cfg: Config, j: int) -> np.ndarray:
    """Save indices of the Adam steps ``cfg.snapshots`` in seed ``j`` of a group."""
    return condense.snapshot_indices(ds.expand_dims("dynamics"), np.asarray(cfg.snapshots)
                                     * adam_lr(cfg), 0, j)


def count(ds, name: str, cfg: Config):
    """The counts at every save and at each run's headline save of the group of dynamics
    ``name`` (:func:`gflow.condense.headline_counts`: Adam at its last snapshot, GF/GD at
    the initial-stage end)."""
    return condense.headline_counts(
        ds.expand_dims(dynamics=[name]), {"adam": np.asarray(cfg.snapshots) * adam_lr(cfg)},
        factor=cfg.growth_factor, cos_threshold=cfg.cos_threshold).isel(dynamics=0, drop=True)


def _num(x):
    return x if isinstance(x, str | list) else None if not np.isfinite(x) else (
        int(x) if float(x).is_integer() else round(float(x), 4))


def summarize(tree, cfg: Config) -> dict:
    """Flat summary: per dynamics (Adam at the last snapshot, GF/GD at the stage end) and
    hidden layer (``_layer2`` ...), per seed: condensed orientations, singletons, cluster
    sizes, the verdict against 2p, movement, the filtered variant and the threshold table."""
    p, groups = gflow.nets.get_activation(cfg.activation).multiplicity, gflow.io.groups(tree)
    seeds = [int(s) for s in next(iter(groups.values()))["seed"].values]
    out = {"activation": cfg.activation, "multiplicity": "undefined" if p is None else p,
           "predicted_max_orientations": "undefined" if p is None else 2 * p,
           "preset": cfg.preset, "init": f"variance m_l^-{cfg.gamma:g}" if cfg.gamma > 0
           else f"std {init_std(cfg):.4g}", "adam_lr": adam_lr(cfg),
           "adam_steps": adam_steps(cfg), "snapshot_steps": list(cfg.snapshots),
           "hidden": ",".join(map(str, cfg.hidden)),
           "rule": f"all neurons, average linkage, signed cosine >= {cfg.cos_threshold:g}; "
           "orientations = clusters of >= 2 neurons"}

    def by_seed(v):
        return dict(zip(seeds, map(_num, v), strict=True))

    for dname, ds in groups.items():
        for k in range(ds.sizes["layer"]):
            tag, h = f"_{dname}" + (f"_layer{k + 1}" if k else ""), ds["headline_index"].values[
                :, k]
            U = [ds[f"u_l{k + 1}"].values[j, q] for j, q in enumerate(h)]
            at = {v: [ds[v].values[j, q, k] for j, q in enumerate(h)] for v in (
                "orientations", "singletons", "orientations_filtered", "effective_neurons")}
            mv = [condense.movement(ds[f"u_l{k + 1}"].values[j, 0], u) for j, u in enumerate(U)]
            tables = [condense.sensitivity(u) for u in U]
            ver = [condense.verdict(c, p, m) for c, m in zip(at["orientations"], mv, strict=True)]
            out |= {f"{v}{tag}_by_seed": by_seed(x) for v, x in at.items()}
            out |= {f"verdict{tag}_by_seed": by_seed(ver), f"movement{tag}_by_seed": by_seed(mv),
                    f"cluster_sizes{tag}_by_seed": by_seed([condense.orientation_counts(
                        u, cos_threshold=cfg.cos_threshold)["sizes"] for u in U]),
                    f"counted_at_time{tag}_by_seed": by_seed(ds["time"].values[h]),
                    f"sensitivity{tag}": {f"cos>={c:g},norm>={f:g}": [int(x[a, b]) for x in tables]
                                          for a, c in enumerate(condense.SENSITIVITY_COS)
                                          for b, f in enumerate(condense.SENSITIVITY_NORM)}}
            if p is not None:
                out[f"within_2p{tag}"] = all(v == "<= 2p" for v in ver)
            if dname == "adam":
                out[f"orientations{tag}_at_snapshots_by_seed"] = by_seed([[_num(ds[
                    "orientations"].values[j, q, k]) for q in snapshot_indices(ds, cfg, j)]
                    for j in range(len(seeds))])
        out[f"status_{dname}"] = ",".join(str(x) for x in ds["status"].values)
    out["claims"] = {f"at_most_2p_{d}": tally(list(out.get(f"verdict_{d}_by_seed", {}).values()),
                                              holds="<= 2p", fails="> 2p", what=f"{d} seeds")
                     for d in ("adam", "gf")}
    return out


# -- figures --------------------------------------------------------------------------
def heatmap_figure(tree, cfg: Config, layer: int = 1, *, snapshots: bool = False):
    """The authors' style: cosine similarity of the input weights (all neurons, ordered by
    the top eigenvector, colours over [-1, 1]), first seed; one panel per dynamics at the
    save it is counted at, or (``snapshots``) one per Adam snapshot step."""
    from gflow.plot import caption, panels

    groups, lr = gflow.io.groups(tree), adam_lr(cfg)
    items = [(d, int(g["headline_index"].values[0, layer - 1])) for d, g in groups.items()
             ] if not snapshots else [("adam", q) for q in snapshot_indices(
                 groups["adam"], cfg, 0)]
    ncol = min(len(items), 5)
    fig, axes = panels(ncol, nrows=-(-len(items) // ncol), size=(3.4, 3.0))
    axes = np.atleast_1d(axes).ravel()
    for ax, (d, q) in zip(axes, items, strict=False):
        sub, t = groups[d].isel(seed=0), groups[d]["time"].values[q]
        im = condense.draw_cosines(ax, sub[f"u_l{layer}"].values[q], order="eigen", cmap="YlGnBu")
        when = f"step {round(t / lr)}" if d == "adam" else f"t={t:.3g}"
        ax.set_title(f"{d}, {when}: {_num(sub['orientations'].values[q, layer - 1])} orient., "
                     f"{_num(sub['singletons'].values[q, layer - 1])} single", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    for ax in axes[len(items):]:
        ax.axis("off")
    return caption(fig, title=f"{cfg.activation}, preset {cfg.preset}, layer {layer}: input-weight "
                   f"cosine similarity (ordered by the top eigenvector)\n{CITE}", title_size=9)


def _xlabel(dynamics) -> str:
    return "time t" if dynamics == "gf" else "time t = step x lr"


def counts_figure(tree, cfg: Config, var: str, layer: int = 1):
    """``var`` (``orientations``: all neurons, or ``effective_neurons``) over time, one line
    per seed, one panel per dynamics; dashed: 2p."""
    from gflow.plot import curves

    p = gflow.nets.get_activation(cfg.activation).multiplicity
    fig = curves({d: g.isel(layer=layer - 1) for d, g in gflow.io.groups(tree).items()}, var,
                 panel="dynamics", hue="seed", logy=False,
                 xlabel=_xlabel,
                 title=f"{cfg.activation} (p = {'undefined' if p is None else p}), preset "
                 f"{cfg.preset}, layer {layer}\n{CITE}", ylabel=var.replace("_", " "))
    for ax in fig.axes if p is not None else ():
        ax.axhline(2 * p, color="k", ls="--", lw=1)
    return fig


def figures(ds, cfg: Config) -> dict:
    from gflow.plot import curves

    figs, groups = {}, gflow.io.groups(ds)
    for layer in range(1, next(iter(groups.values())).sizes["layer"] + 1):
        suffix = "" if layer == 1 else f"_layer{layer}"
        figs[f"cosine_heatmap{suffix}"] = heatmap_figure(ds, cfg, layer)
        if "adam" in groups:
            figs[f"cosine_heatmap_snapshots{suffix}"] = heatmap_figure(ds, cfg, layer,
                                                                       snapshots=True)
        for var in ("orientations", "effective_neurons"):
            figs[f"{var}{suffix}"] = counts_figure(ds, cfg, var, layer)
    figs["loss"] = curves(groups, "loss", panel="dynamics", hue="seed", ylabel="training loss",
                          title=f"{cfg.activation}: training loss ({CITE})", xlabel=_xlabel)
    return figs

"""Quickstart: a two-layer ReLU net fit to a teacher by GF, GD and SGD, side by side.

Teacher-labelled regression data (``n`` points on the unit sphere in R^d, a ReLU teacher
with ``teacher_width`` neurons), a student of width ``width`` in NTK scaling, squared
loss, trained from independent Gaussian init and from paired (coupled) init
(Munteanu et al., ICML 2022: the output is exactly 0 at init). GF is integrated with
Tsit5 + PI control; GD and SGD use step ``lr``, so step k sits at t = k * lr, and all
three are saved at the same times for a point-by-point comparison.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

import gflow

from . import Result, Settings, setting
from ._runs import dynamics_groups

#: measured wall time of ``gflow run quickstart`` with the defaults
RUN_TIME = 'about 25 s of CPU time on 2 CPU cores (40 s wall with the cores shared, load 8)'


@dataclasses.dataclass(frozen=True)
class Config(Settings):
    """Settings of the quickstart.

    Attributes:
        seed: seed of the data, the init and SGD's batches.
        n: training points (on the unit sphere in R^d); the test set has as many.
        d: input dimension.
        teacher_width: neurons of the ReLU teacher that labels the data.
        width: neurons m of the student.
        t1: end time (t = step x lr for GD and SGD).
        lr: learning rate of GD and SGD.
        batch_size: SGD's minibatch size (samples drawn without replacement per epoch).
        n_save: save points, log-spaced on multiples of lr, 0 and t1 included.
        rtol: relative tolerance of GF's step-size controller.
        atol: absolute tolerance of GF's step-size controller.
    """

    seed: int = 0
    n: int = 200
    d: int = 10
    teacher_width: int = 4
    width: int = 256
    t1: float = 1000.0
    lr: float = 0.1
    batch_size: int = setting(32, ge=1, le="n", why="SGD draws at most n samples per batch")
    n_save: int = 60
    rtol: float = 1e-6
    atol: float = 1e-8


OBSERVE = ("loss", "test_loss", "weight_movement", "grad_norm")


def save_times(cfg: Config) -> np.ndarray:
    """``n_save`` log-spaced times on the discrete grid (distinct multiples of lr), 0 and
    t1 included; their number does not depend on lr, so a new lr does not recompile."""
    return gflow.GD(cfg.lr).save_times(cfg.t1, gflow.LogTimes(cfg.n_save, t_min=cfg.lr))


def run(cfg: Config, *, progress: bool = False) -> Result:
    k_data, k_init, k_sgd = jax.random.split(jax.random.key(cfg.seed), 3)
    data = gflow.data.teacher(k_data, cfg.n, cfg.d, cfg.teacher_width)
    net = gflow.TwoLayer(cfg.width, "relu", scaling="ntk", bias=False, train_outer=True)
    inits = {
        "gaussian": gflow.init.gaussian(k_init, net, cfg.d),
        "paired": gflow.init.paired(k_init, net, cfg.d),
    }
    dynamics = {
        "gf": gflow.GradientFlow(rtol=cfg.rtol, atol=cfg.atol),
        "gd": gflow.GD(lr=cfg.lr),
        "sgd": gflow.SGD(lr=cfg.lr, batch_size=cfg.batch_size, key=k_sgd),
    }
    ts = save_times(cfg)
    trajs = {}
    for iname, p0 in inits.items():
        for dname, dyn in dynamics.items():
            with gflow.progress.stage(f"{dname}, {iname} init ({len(trajs) + 1} of 6)"):
                trajs[(iname, dname)] = gflow.simulate(
                    net, p0, data, loss="squared", dynamics=dyn, t1=cfg.t1, save=ts,
                    observe=OBSERVE, progress=progress)
    groups = dynamics_groups(trajs, ("init",), at=1)  # one group per dynamics
    summary = {
        "init_output_max_abs_paired": float(np.max(np.abs(net.apply(inits["paired"], data.X)))),
        "init_output_max_abs_gaussian": float(np.max(np.abs(net.apply(inits["gaussian"], data.X)))),
    }
    for (iname, dname), tr in trajs.items():
        summary[f"final_loss_{dname}_{iname}"] = float(tr["loss"][-1])
        summary[f"final_test_loss_{dname}_{iname}"] = float(tr["test_loss"][-1])
        summary[f"weight_movement_{dname}_{iname}"] = float(tr["weight_movement"][-1])
        summary[f"status_{dname}_{iname}"] = tr.status
    for iname in inits:
        gf, gd = trajs[(iname, "gf")]["loss"], trajs[(iname, "gd")]["loss"]
        summary[f"gd_gf_max_rel_loss_gap_{iname}"] = float(np.max(np.abs(gd - gf) / gf))
    summary["gf_steps_gaussian"] = int(trajs[("gaussian", "gf")].stats["num_steps"])
    return Result(summary=summary, dataset=groups)


LOOK = {"gf": ("C0", "-"), "gd": ("C1", "--"), "sgd": ("C2", ":")}


def figures(ds, cfg: Config) -> dict:
    import xarray as xr

    from gflow.plot import caption, curves, over_time, panels, style

    groups = gflow.io.groups(ds)  # every dynamics saved at the same times (multiples of lr)
    ds = xr.concat(list(groups.values()), dim="dynamics",
                   join="exact").assign_coords(dynamics=list(groups))

    setup = (f"two-layer ReLU, NTK scaling, m={cfg.width}; teacher data n={cfg.n}, d={cfg.d}, "
             f"k={cfg.teacher_width}; GD/SGD lr={cfg.lr}, SGD batch {cfg.batch_size}; "
             "time t = step x lr for GD and SGD. Paired init: Munteanu et al., ICML 2022.")
    inits = list(ds["init"].values)
    fig, axes = panels(len(inits), nrows=2, size=(5.2, 3.6), sharex=True)
    for col, iname in enumerate(inits):
        sub = ds.sel(init=iname)
        t = sub["time"].values
        gf = sub["loss"].sel(dynamics="gf").values
        for dname, (color, fmt) in LOOK.items():
            one = sub.sel(dynamics=dname)
            over_time(axes[0, col], t, one["loss"].values, f"{dname} train", fmt,
                      positive=True, color=color)
            over_time(axes[0, col], t, one["test_loss"].values, f"{dname} test", fmt,
                      positive=True, color=color, alpha=0.45)
            if dname != "gf":
                over_time(axes[1, col], t, np.abs(one["loss"].values - gf) / gf,
                          f"|L_{dname} - L_gf| / L_gf", fmt, positive=True, color=color)
        style(axes[0, col], ylabel="loss (pale: test)", title=f"{iname} init", x="log", y="log")
        style(axes[1, col], xlabel="time t", ylabel="relative gap to GF (train)",
              x="log", y="log")
    loss = caption(fig, setup, title="Training and test loss of GF, GD and SGD, and how far "
                   "the discrete runs are from the flow")
    return {
        "loss": loss,
        "weight_movement": curves(ds, "weight_movement", panel="init", hue="dynamics",
                                  ylabel=r"$|\theta_t-\theta_0|$", title="Distance from init",
                                  caption=setup),
    }

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


@dataclasses.dataclass(frozen=True)
class Config(Settings):
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
    trajs = {
        (iname, dname): gflow.simulate(net, p0, data, loss="squared", dynamics=dyn, t1=cfg.t1,
                                       save=ts, observe=OBSERVE, progress=progress)
        for iname, p0 in inits.items() for dname, dyn in dynamics.items()
    }
    ds = gflow.trajectory.combine(trajs, ("init", "dynamics"))
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
    return Result(summary=summary, dataset=ds)


def figures(ds, cfg: Config) -> dict:
    from gflow.plot import curves

    setup = (f"two-layer ReLU, NTK scaling, m={cfg.width}; teacher data n={cfg.n}, d={cfg.d}, "
             f"k={cfg.teacher_width}; GD/SGD lr={cfg.lr}, SGD batch {cfg.batch_size}. "
             "Paired init: Munteanu et al., ICML 2022.")
    return {
        "loss": curves(ds, "loss", panel="init", hue="dynamics", ylabel="training loss",
                       title="Training loss: GF vs GD vs SGD", caption=setup),
        "weight_movement": curves(ds, "weight_movement", panel="init", hue="dynamics",
                                  ylabel=r"$|\theta_t-\theta_0|$", title="Distance from init",
                                  caption=setup),
    }

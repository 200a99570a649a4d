"""Case 9: the cost of tracking the sharpness, and of the central flow, against plain solves.

Problem (float32): the edge-of-stability experiment's net, a tanh MLP with hidden widths
(32, 32) (NTK scaling, 1,344 parameters) on n=128 teacher points in d=8, squared loss, lr=4,
300 GD steps (t1=1200). Rows: wall time (min of repeats, compile excluded) of

- GD with the loss at every step; with the sharpness (Lanczos, 16 HVPs) at every step; and
  saved on every 10th step only (an in-solve observable runs at every save, so a coarser
  save grid is how it runs every k-th step); then the sharpness after the run from saved
  parameters at every 10th step (``gflow.curvature.top_eigs_along``, warm-started);
- gradient flow (Tsit5 + PI, rtol 1e-6) with the loss at 301 saves, and with the sharpness
  at those saves;
- the central flow (``gflow.CentralFlow``, k=1, 16 HVPs per evaluation) integrated as in
  the experiment (Euler, 4 steps per GD step) and adaptively (Tsit5 + PI, rtol 1e-5),

each as a ratio to its plain solve. There is no peer library: the authors' central-flow code
solves its cone program with CVXPY on the host and cannot be jitted, and PyHessian /
pytorch-hessian-eigenthings are PyTorch.
"""

from __future__ import annotations

import jax
import numpy as np

import gflow
from gflow.curvature import Sharpness, top_eigs_along

from ._common import Metric, measure

NAME = "9 sharpness and central flow"
LR, STEPS, ITERS = 4.0, 300, 16


def _problem():
    kd, ki = jax.random.split(jax.random.key(0))
    data = gflow.data.teacher(kd, 128, 8, 4, inputs="gaussian", noise=1.0)
    net = gflow.MLP((32, 32), "tanh", "ntk")
    return net, gflow.init.gaussian(ki, net, 8), data


def run(peak: dict, *, quick: bool = False, out=None) -> dict:
    net, p0, data = _problem()
    steps = 60 if quick else STEPS
    ts, t1 = np.arange(steps + 1) * LR, steps * LR
    sharp = Sharpness(ITERS)
    every = lambda k: ts[::k]  # noqa: E731
    cf = dict(iters=ITERS)
    cases = {
        "GD, loss every step": (gflow.GD(LR), ts, ("loss",)),
        "GD + sharpness every step": (gflow.GD(LR), ts, ("loss", sharp)),
        "GD + sharpness every 10th step": (gflow.GD(LR), every(10), ("loss", sharp)),
        "GF, loss at every GD step": (gflow.GradientFlow(rtol=1e-6, atol=1e-8), ts, ("loss",)),
        "GF + sharpness at every GD step": (gflow.GradientFlow(rtol=1e-6, atol=1e-8), ts,
                                            ("loss", sharp)),
        "CentralFlow (Euler, 4 per GD step)": (gflow.CentralFlow(
            LR, **cf, edge_rate=4.0, solver="euler", controller="constant", dt0=LR / 4), ts,
            ("loss",)),
        "CentralFlow (Tsit5+PI, rtol 1e-5)": (gflow.CentralFlow(LR, **cf, rtol=1e-5,
                                                                atol=1e-7), ts, ("loss",)),
    }
    res, rows = {}, []
    for name, (dyn, save, obs) in cases.items():
        def go(dyn=dyn, save=save, obs=obs):
            return gflow.simulate(net, p0, data, dynamics=dyn, t1=t1, save=save, observe=obs,
                                  throw=False)
        def timed(go=go):
            tr = go()
            jax.block_until_ready(tr.params_final)
            return tr
        # the first call compiles and gives the stats; the adaptive central flow takes
        # thousands of steps (a minute a call on 2 cores), so it is timed once more
        t = measure(timed, repeats=1 if "Tsit5" in name and "Central" in name else 3,
                    warmup=0)
        res[name] = {"time": t.asdict(), "stats": t.result.stats}
    saved = gflow.simulate(net, p0, data, dynamics=gflow.GD(LR), t1=t1, save=ts,
                           save_params=True).params
    obj = gflow.Objective(net, "squared", data.X, data.y)
    t = measure(lambda: jax.block_until_ready(top_eigs_along(obj, saved, 1, iters=ITERS,
                                                             every=10)), repeats=3)
    res["sharpness from GD's saved params every 10th step, after the run"] = {"time": t.asdict(),
                                                                   "stats": {}}
    base = {"GD": res["GD, loss every step"]["time"]["min_s"],
            "GF": res["GF, loss at every GD step"]["time"]["min_s"]}
    for name, r in res.items():
        st, tmin = r["stats"], r["time"]["min_s"]
        ref = "GF" if name.startswith(("GF", "Central")) else "GD"
        note = ", ".join(f"{k} {st[k]}" for k in ("num_steps", "grad_evals", "hvp_evals")
                         if st.get(k) is not None)
        rows.append(Metric(NAME, f"{name}: time", tmin, "s",
                           note=(note + "; " if note else "")
                           + f"compile {r['time']['compile_s']:.1f} s"))
        if name not in ("GD, loss every step", "GF, loss at every GD step"):
            rows.append(Metric(NAME, f"{name}: time / {ref}'s plain solve", tmin / base[ref],
                               "x", note=f"{ITERS} HVPs per sharpness evaluation"))
    return {"rows": rows, "details": res}

"""Case 7: the cost of the continuous-time counterparts of discrete optimizers against plain GF.

Problem (float32): a two-layer tanh net, m=256, NTK scaling, on n=512 teacher points in d=16,
squared loss, integrated to T=1 with lr=0.05 (20 steps of the discrete methods). Every
continuous dynamics uses Tsit5 + PI at rtol 1e-5 except the SME (Euler-Maruyama, step
lr/4). Rows: wall time (min of repeats, compile excluded), gradient evaluations and the
extra passes each needs (Hessian-vector products of the modified flows, the SME's VJP of the
per-sample losses), and the ratios to plain GF: time, and time per gradient evaluation.
There is no peer library with these dynamics; the reference is gflow's own GF, whose own peer
(torchdiffeq) is case 3. The SME ensemble row runs 64 paths as one program against 64 SGD
runs with a fresh batch per step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import gflow

from ._common import Metric, measure

NAME = "7 continuous counterparts"
LR, T1, M_PATHS = 0.05, 1.0, 64


def _problem():
    kd, ki = jax.random.split(jax.random.key(0))
    data = gflow.data.teacher(kd, n=512, d=16, teacher_width=4, n_test=0)
    net = gflow.TwoLayer(256, "tanh", "ntk")
    return net, gflow.init.gaussian(ki, net, 16), data


def _timed(net, p0, data, dyn, *, ensemble: bool = False):
    kw = dict(dynamics=dyn, t1=T1, save=[0.0, T1], throw=True)
    if ensemble:
        P = jax.tree.map(lambda x: jnp.broadcast_to(x, (M_PATHS,) + x.shape), p0)
        run = lambda: gflow.simulate_ensemble(net, P, data, **kw)  # noqa: E731
    else:
        run = lambda: gflow.simulate(net, p0, data, **kw)  # noqa: E731
    t = measure(lambda: jax.block_until_ready(run().params_final), repeats=3)
    return t, run().stats


def run(peak: dict, *, quick: bool = False, out=None) -> dict:
    net, p0, data = _problem()
    tol = dict(rtol=1e-5, atol=1e-7)
    key = jax.random.key(1)
    cases = {
        "GF (Tsit5+PI)": gflow.GradientFlow(**tol),
        "ModifiedFlow order 2": gflow.ModifiedFlow(LR, 2, **tol),
        "ModifiedFlow order 3": gflow.ModifiedFlow(LR, 3, **tol),
        "AdamFlow": gflow.AdamFlow.of(LR, **tol),
        "SME order 1 (one path)": gflow.SME(LR, 32, key),
        "SME order 2 (one path)": gflow.SME(LR, 32, key, order=2),
        "GD": gflow.GD(LR),
    }
    if quick:
        cases = {k: v for k, v in cases.items() if "order 3" not in k and "order 2 (" not in k}
    res, rows = {}, []
    for name, dyn in cases.items():
        t, st = _timed(net, p0, data, dyn)
        res[name] = {"time": t.asdict(), "stats": st}
    gf = res["GF (Tsit5+PI)"]
    gf_per_eval = gf["time"]["min_s"] / gf["stats"]["grad_evals"]
    for name, r in res.items():
        st, tmin = r["stats"], r["time"]["min_s"]
        evals = st.get("grad_evals") or st.get("num_steps")
        extra = ", ".join(f"{k} {st[k]}" for k in ("hvp_evals", "vjp_evals") if k in st)
        rows.append(Metric(NAME, f"{name}: time", tmin, "s",
                           note=f"{evals} gradient evals" + (f"; {extra}" if extra else "")
                                + f"; compile {r['time']['compile_s']:.1f} s"))
        if name != "GF (Tsit5+PI)":
            rows.append(Metric(NAME, f"{name}: time / GF time", tmin / gf["time"]["min_s"], "x"))
            rows.append(Metric(NAME, f"{name}: time per gradient eval / GF's",
                               tmin / evals / gf_per_eval, "x"))
    sme_e, _ = _timed(net, p0, data, gflow.SME(LR, 32, jax.random.split(key, M_PATHS)),
                      ensemble=True)
    sgd_e, _ = _timed(net, p0, data, gflow.SGD(LR, 32, jax.random.split(key, M_PATHS),
                                               sampling="step"), ensemble=True)
    rows.append(Metric(NAME, f"SME order 1, {M_PATHS} paths: time", sme_e.min, "s",
                       note=f"SGD (batch per step), {M_PATHS} runs: {sgd_e.min:.3g} s"))
    rows.append(Metric(NAME, "SME ensemble / SGD ensemble time", sme_e.min / sgd_e.min, "x",
                       note="the SME takes 4 Euler steps per SGD step, each a full-batch "
                            "gradient and a full-batch VJP"))
    res["ensembles"] = {"sme": sme_e.asdict(), "sgd": sgd_e.asdict()}
    # GF's arithmetic rate against the GEMM peak measured in this run: a gradient of the
    # two-layer net is ~6 n m d flops (forward X W^T, backward through W and X)
    flops = 6 * 512 * 256 * 16 * gf["stats"]["grad_evals"]
    rate = flops / gf["time"]["min_s"] / 1e9
    rows.insert(1, Metric(NAME, "GF (Tsit5+PI): fraction of jnp.dot peak", rate / peak["jax"],
                          note=f"{rate:.3g} GFLOP/s at 6nmd flops per gradient"))
    return {"rows": rows, "details": res}

"""Case 4: how the time of one gflow GD step grows with n, m, d (and ensemble members).

One size varies at a time around a base point; the time per step is the slope between a
short and a long run, ``(t(K2) - t(K1)) / (K2 - K1)`` with each ``t`` the minimum of the
repeats, so the fixed cost of a ``simulate`` call (validation, transfers) cancels. The
log-log slope of time per step against each size is fitted by least squares; a slope of 1
is linear cost. Expected: 1 in n and m (every term of the step is O(nm) or O(nmd)); in d
below 1 at small d, where the O(nm) elementwise work (relu, mask, residual) is comparable
to the 4nmd GEMM FLOPs. Target (issue 8): linear, read here as slope <= 1.15.
Writes ``scaling.png`` into the output folder.
"""

from __future__ import annotations

import pathlib

import numpy as np

import gflow

from ._common import MIN_TIME, Metric, measure, sizes
from ._problem import gd_flops, problem

NAME = "4 scaling"
FULL = {"base": {"n": 1024, "m": 1024, "d": 128},
        "grid": {"n": [256, 512, 1024, 2048, 4096], "m": [256, 512, 1024, 2048, 4096],
                 "d": [32, 64, 128, 256, 512]},
        "members": {"base": {"n": 256, "d": 16, "m": 128}, "E": [8, 16, 32, 64]},
        "K": (2, 12), "repeats": 5}
QUICK = {"base": {"n": 128, "m": 128, "d": 16},
         "grid": {"n": [64, 128, 256], "m": [64, 128, 256], "d": [8, 16, 32]},
         "members": {"base": {"n": 32, "d": 4, "m": 16}, "E": [2, 4, 8]},
         "K": (5, 50), "repeats": 2}
#: ``--device``: the same sweeps 8x wider in n and m, 4x in d, 16x in members
DEVICE = {"base": {"n": 8192, "m": 8192, "d": 512},
          "grid": {"n": [2048, 4096, 8192, 16384, 32768], "m": [2048, 4096, 8192, 16384, 32768],
                   "d": [128, 256, 512, 1024, 2048]},
          "members": {"base": {"n": 256, "d": 16, "m": 128}, "E": [128, 256, 512, 1024]},
          "K": (2, 12), "repeats": 5}
MAX_SLOPE = 1.15
LR = 0.05


def step_time(n, d, m, K, repeats, members=None) -> float:
    """Seconds per GD step of gflow (single net, or ``simulate_ensemble`` with members)."""
    p = problem(n, d, m, members=members)
    sim = gflow.simulate if members is None else gflow.simulate_ensemble

    def runner(k):
        t1 = k * LR
        save = np.array([0.0, t1])
        return lambda: sim(p.net, p.params0, p.data, loss="squared", dynamics=gflow.GD(lr=LR),
                           t1=t1, save=save, observe=("loss",), throw=False)

    r1, r2 = runner(K[0]), runner(K[1])  # one program: it does not depend on the steps
    t1, t2 = (measure(r, repeats=repeats, warmup=0, min_time=MIN_TIME).min for r in (r1, r2))
    if t2 <= t1:  # steps too cheap to resolve against the noise: fall back to the long run
        return t2 / K[1]
    return (t2 - t1) / (K[1] - K[0])


def _slope(x, t) -> float:
    return float(np.polyfit(np.log(x), np.log(t), 1)[0])


def run(peak: dict, *, quick: bool = False, out=None) -> dict:
    s = sizes(FULL, QUICK, DEVICE, quick)
    K, R = s["K"], s["repeats"]
    rows, det, series = [], {"settings": s, "times": {}}, {}
    base = s["base"]
    for dim, values in s["grid"].items():
        ts = []
        for v in values:
            sz = base | {dim: v}
            ts.append(step_time(sz["n"], sz["d"], sz["m"], K, R))
        series[dim] = (np.array(values, float), np.array(ts))
        det["times"][dim] = {"values": values, "s_per_step": ts,
                             "gflops": [gd_flops(**(base | {dim: v})) / t / 1e9
                                        for v, t in zip(values, ts, strict=True)]}
    if hasattr(gflow, "simulate_ensemble"):
        mb = s["members"]["base"]
        try:
            ts = [step_time(mb["n"], mb["d"], mb["m"], K, R, members=E)
                  for E in s["members"]["E"]]
            series["members"] = (np.array(s["members"]["E"], float), np.array(ts))
            det["times"]["members"] = {"values": s["members"]["E"], "s_per_step": ts}
        except Exception as e:  # noqa: BLE001 - a new API: report, do not crash the suite
            det["members_error"] = f"{type(e).__name__}: {e}"
    for dim, (x, t) in series.items():
        note = "base " + ", ".join(f"{k}={v}" for k, v in base.items() if k != dim)
        if dim == "members":
            note = "per-member " + ", ".join(f"{k}={v}" for k, v in s["members"]["base"].items())
        rows.append(Metric(NAME, f"log-log slope of time/step vs {dim}", _slope(x, t), "",
                           MAX_SLOPE, upper=True,
                           note=f"{dim} in {x.astype(int).tolist()}; {note}"))
    if "members" not in series:
        why = det.get("members_error", "gflow.simulate_ensemble does not exist yet")
        rows.append(Metric(NAME, "slope vs members", f"not available ({why})"[:160]))
    if out is not None:
        path = pathlib.Path(out) / "scaling.png"
        _plot(series, base, path)
        det["figure"] = str(path)
        rows.append(Metric(NAME, "figure", path.name, note="in the --out folder"))
    return {"rows": rows, "details": det}


def _plot(series, base, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for dim, (x, t) in series.items():
        rel = x / x[len(x) // 2]
        ax.loglog(rel, 1e3 * t, "o-", label=f"{dim} (slope {_slope(x, t):.2f})")
    ref = np.array([0.25, 4.0])
    mid = np.median([t[len(t) // 2] for _, t in series.values()]) * 1e3
    ax.loglog(ref, mid * ref, "k--", lw=0.8, label="slope 1")
    ticks = [0.25, 0.5, 1, 2, 4]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("size / middle size")
    ax.set_ylabel("time per GD step [ms]")
    ax.set_title("gflow GD step time, two-layer ReLU net (f32)\nbase "
                 + ", ".join(f"{k}={v}" for k, v in base.items()), fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

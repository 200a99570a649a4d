"""Case 10: weak scaling of an ensemble over 1, 2, 4, 8 devices.

``gflow.simulate_ensemble`` shards the member axis over its ``devices`` (``jax.shard_map``
around the vmapped solve). With ``E0`` members per device, D devices run ``D * E0`` members
of full-batch GD (K steps); perfect weak scaling keeps the time per step constant, so the
efficiency is ``t(1 device) / t(D devices)``. The first ``E0`` members are the same in every
run; their final losses must equal the one-device run's to rounding.

On a CPU the devices are forced (``--xla_force_host_platform_device_count=8``, in a
subprocess) and share the machine's cores, so at D devices the best this machine can do is
``min(1, cores / D)`` once the work is compute-bound (reported beside each efficiency;
small members are overhead-bound and can do better); on an accelerator run
(``--device``) they are the real devices, as many of 1, 2, 4, 8 as there are.

Run alone: ``python -m benchmarks.case10_weak_scaling [--quick]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from ._common import MIN_TIME, Metric, cores, measure, sizes

NAME = "10 weak scaling"
FULL = {"per_device": 16, "n": 256, "d": 16, "m": 128, "steps": 40, "repeats": 3}
QUICK = {"per_device": 2, "n": 32, "d": 4, "m": 16, "steps": 10, "repeats": 2}
#: ``--device``: 256 members per device
DEVICE = {"per_device": 256, "n": 1024, "d": 64, "m": 512, "steps": 40, "repeats": 3}
COUNTS = (1, 2, 4, 8)
LR = 0.1


def worker(s: dict) -> dict:
    """Time per GD step and the first members' final losses for each device count."""
    import jax

    import gflow

    from ._problem import problem

    devices = jax.devices()
    counts = [D for D in COUNTS if D <= len(devices)]
    t1, K = s["steps"] * LR, s["steps"]
    out = {"counts": counts, "platform": devices[0].platform, "per_step": {}, "losses": {}}
    for D in counts:
        p = problem(s["n"], s["d"], s["m"], members=D * s["per_device"])

        def fn(p=p, D=D):
            tr = gflow.simulate_ensemble(p.net, p.params0, p.data, dynamics=gflow.GD(lr=LR),
                                         t1=t1, save=np.array([0.0, t1]), observe=("loss",),
                                         devices=devices[:D])
            return np.asarray(tr["loss"][:, -1])

        t = measure(fn, repeats=s["repeats"], min_time=MIN_TIME)
        out["per_step"][D] = t.min / K
        out["losses"][D] = t.result[: s["per_device"]].tolist()
    return out


def _in_subprocess(s: dict) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count="
                        f"{max(COUNTS)}").strip()
    cmd = [sys.executable, "-m", "benchmarks.case10_weak_scaling", "--worker", json.dumps(s)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"worker failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def run(peak: dict, *, quick: bool = False, out=None) -> dict:
    import jax

    s = sizes(FULL, QUICK, DEVICE, quick)
    on_cpu = jax.default_backend() == "cpu"
    res = _in_subprocess(s) if on_cpu else worker(s)
    per_step = {int(k): v for k, v in res["per_step"].items()}
    losses = {int(k): np.asarray(v) for k, v in res["losses"].items()}
    c = cores()
    note = (f"{s['per_device']} members per device, n={s['n']}, d={s['d']}, m={s['m']}, "
            f"{s['steps']} GD steps; " + (f"forced CPU devices on {c} cores" if on_cpu
                                          else f"{res['platform']} devices"))
    rows = []
    for D in res["counts"]:
        eff = per_step[1] / per_step[D]
        bound = (f"compute-bound limit on {c} cores: min(1, cores/D) = {min(1.0, c / D):.2g}"
                 if on_cpu else "")
        rows.append(Metric(NAME, f"{D} devices: ms per step", 1e3 * per_step[D], "ms",
                           note=note if D == 1 else ""))
        if D > 1:
            rows.append(Metric(NAME, f"{D} devices: weak-scaling efficiency t(1)/t({D})", eff,
                               "", note=bound))
    rel = max(float(np.max(np.abs(losses[D] - losses[1]) / np.abs(losses[1])))
              for D in res["counts"])
    rows.append(Metric(NAME, "first members' final losses agree across device counts", rel, "",
                       1e-5, upper=True, note="float32; the same members on 1..D devices"))
    return {"rows": rows, "details": {"sizes": s, **res, "cores": c}}


if __name__ == "__main__":
    if "--worker" in sys.argv:
        print(json.dumps(worker(json.loads(sys.argv[sys.argv.index("--worker") + 1]))))
    else:
        print(json.dumps(run({}, quick="--quick" in sys.argv)["details"], indent=2,
                         default=str))

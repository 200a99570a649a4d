"""Case 5: compile time of the quickstart's programs, and no recompilation on new values.

Runs in a fresh Python process (so nothing is cached from the other cases; JAX's persistent
compilation cache is switched off there). JAX reports every tracing, lowering and XLA
compilation through ``jax.monitoring`` (events ``/jax/core/compile/jaxpr_trace_duration``,
``.../jaxpr_to_mlir_module_duration``, ``.../backend_compile_duration``, each with its
function name and time span); the compile time is the length of the union of those spans,
so nested traces are not counted twice. Phases, in order:

1. ``quickstart.run(Config())``: everything ``gflow run quickstart`` compiles (GF, GD and
   SGD programs, plus the small eager ops of data generation and init). Target (issue 8):
   <= 5 s.
2. ``Config(seed=1)``: new data values, new init values, new SGD key. Expected: 0 compiles.
3. ``Config(lr=0.05)``: a new learning rate in the quickstart experiment.
4. ``gflow.simulate`` directly: GD and SGD with another lr, GF with another t1, on new data
   and init values with the same shapes and the same number of save times, and (where it
   exists) ``gflow.simulate_ensemble`` of 4 members with GD. Expected: 0.

The library is not modified; compiles are counted from JAX's own events.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

from ._common import Metric

NAME = "5 compile"
MAX_COMPILE_S = 5.0
_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
           "/jax/core/compile/jaxpr_to_mlir_module_duration",
           "/jax/core/compile/backend_compile_duration")


class _Recorder:
    def __init__(self):
        self.spans = []  # (phase, event, fun_name, start, end)
        self.phase = None

    def __call__(self, event, start, end, **kw):
        if event in _EVENTS and self.phase is not None:
            self.spans.append((self.phase, event, str(kw.get("fun_name", "?")), start, end))

    def summary(self, phase) -> dict:
        spans = [s for s in self.spans if s[0] == phase]
        solve = [s for s in spans if "solve" in s[2]]
        compiles = [s for s in spans if s[1] == _EVENTS[2]]
        by_fun: dict[str, float] = {}
        for s in compiles:
            by_fun[s[2]] = by_fun.get(s[2], 0.0) + s[4] - s[3]
        top = sorted(by_fun.items(), key=lambda kv: -kv[1])[:6]
        return {"compile_s": _union(spans), "n_backend_compiles": len(compiles),
                "solve_compile_s": _union(solve),
                "n_traces": sum(s[1] == _EVENTS[0] for s in spans),
                "backend_compile_s": sum(s[4] - s[3] for s in compiles),
                "top_compiles": {k: round(v, 3) for k, v in top},
                "compiled_functions": sorted({s[2] for s in compiles})}


def _union(spans) -> float:
    """Total length of the union of the spans' [start, end] intervals."""
    union, cur = 0.0, None
    for _, _, _, a, b in sorted(spans, key=lambda s: s[3]):
        if cur is None or a > cur[1]:
            union += 0.0 if cur is None else cur[1] - cur[0]
            cur = [a, b]
        else:
            cur[1] = max(cur[1], b)
    return union + (0.0 if cur is None else cur[1] - cur[0])


def worker(quick: bool) -> dict:
    """Runs in the subprocess: the phases above, returns their compile summaries."""
    import jax
    import numpy as np

    import gflow
    from gflow.experiments import quickstart

    jax.config.update("jax_enable_compilation_cache", False)
    rec = _Recorder()
    jax.monitoring.register_event_time_span_listener(rec)
    base = quickstart.Config()
    if quick:
        base = dataclasses.replace(base, n=40, width=16, t1=20.0, n_save=10)
    out = {"config": dataclasses.asdict(base)}

    def phase(name, fn):
        rec.phase = name
        t = time.perf_counter()
        fn()
        out[name] = rec.summary(name) | {"wall_s": time.perf_counter() - t}
        rec.phase = None

    phase("quickstart_first", lambda: quickstart.run(base))
    phase("quickstart_seed", lambda: quickstart.run(dataclasses.replace(base, seed=1)))
    phase("quickstart_lr", lambda: quickstart.run(dataclasses.replace(base, lr=base.lr / 2)))
    out["save_times_count"] = {"lr": len(quickstart.save_times(base)),
                               "lr/2": len(quickstart.save_times(
                                   dataclasses.replace(base, lr=base.lr / 2)))}

    def direct(seed, lr, t1):
        k_data, k_init, k_sgd = jax.random.split(jax.random.key(seed), 3)
        data = gflow.data.teacher(k_data, base.n, base.d, base.teacher_width)
        net = gflow.TwoLayer(base.width, "relu", scaling="ntk")
        p0 = gflow.init.gaussian(k_init, net, base.d)
        save = np.linspace(0.0, t1, 11)
        for dyn in (gflow.GD(lr=lr), gflow.SGD(lr=lr, batch_size=base.batch_size, key=k_sgd),
                    gflow.GradientFlow(rtol=base.rtol, atol=base.atol)):
            gflow.simulate(net, p0, data, loss="squared", dynamics=dyn, t1=t1, save=save,
                           observe=quickstart.OBSERVE)
        if hasattr(gflow, "simulate_ensemble"):
            keys = jax.random.split(k_init, 4)
            ps = jax.vmap(lambda k: gflow.init.gaussian(k, net, base.d))(keys)
            try:
                gflow.simulate_ensemble(net, ps, data, loss="squared", dynamics=gflow.GD(lr=lr),
                                        t1=t1, save=save, observe=quickstart.OBSERVE)
            except Exception as e:  # noqa: BLE001 - a new API: report, do not crash the case
                out["ensemble_error"] = f"{type(e).__name__}: {e}"[:300]

    direct(0, 0.1, 5.0)  # compiles the direct calls' programs (outside any phase)
    phase("simulate_values", lambda: direct(1, 0.07, 7.0))
    return out


def run(peak: dict, *, quick: bool = False, out=None) -> dict:
    env = dict(os.environ, JAX_ENABLE_COMPILATION_CACHE="false")
    cmd = [sys.executable, "-m", "benchmarks.case5_compile", "--worker"] + (["--quick"] * quick)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"case 5 worker failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    first = res["quickstart_first"]
    top = list(first["top_compiles"].items())[:3]
    rows = [
        Metric(NAME, "quickstart compile time (traces + lowering + XLA)", first["compile_s"], "s",
               MAX_COMPILE_S, upper=True,
               note=f"{first['n_backend_compiles']} XLA compiles; largest: "
                    + ", ".join(f"{k} {v:.1f}s" for k, v in top)),
        Metric(NAME, "of which gflow's solve programs (GF, GD, SGD)",
               first["solve_compile_s"], "s",
               note="the rest: eager ops of data generation and init, one compile per shape"),
        Metric(NAME, "quickstart first-run wall time", first["wall_s"], "s",
               note=f"second run (seed=1): {res['quickstart_seed']['wall_s']:.1f} s"),
    ]
    for ph, label in (("quickstart_seed", "recompiles, quickstart seed changed"),
                      ("quickstart_lr", "recompiles, quickstart lr changed"),
                      ("simulate_values", "recompiles, simulate(+_ensemble): lr, t1, seeds, data")):
        r = res[ph]
        fns = ", ".join(r["compiled_functions"][:4])
        note = f"{r['n_traces']} traces; " + (f"compiled: {fns}" if fns else "nothing compiled")
        if ph == "quickstart_lr":
            c = res["save_times_count"]
            note += f"; save times {c['lr']} -> {c['lr/2']}"
        if ph == "simulate_values" and "ensemble_error" in res:
            note += f"; simulate_ensemble failed: {res['ensemble_error'][:80]}"
        rows.append(Metric(NAME, label, r["n_backend_compiles"], "", 0, upper=True, note=note))
    return {"rows": rows, "details": res}


if __name__ == "__main__":
    if "--worker" in sys.argv:
        print(json.dumps(worker("--quick" in sys.argv)))
    else:
        import argparse

        argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
        print(json.dumps(run({}, quick=False)["details"], indent=2))

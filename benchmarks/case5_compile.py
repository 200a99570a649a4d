"""Case 5: compile time of the quickstart's programs, and no recompilation on new values.

Runs in a fresh Python process (so nothing is cached from the other cases; JAX's persistent
compilation cache is switched off there). JAX reports every tracing, lowering and XLA
compilation through ``jax.monitoring`` (events ``/jax/core/compile/jaxpr_trace_duration``,
``.../jaxpr_to_mlir_module_duration``, ``.../backend_compile_duration``, each with its
function name and time span); the compile time is the length of the union of those spans,
so nested traces are not counted twice. Phases, in order:

1. ``quickstart.run(Config(), progress=True)``: everything ``gflow run quickstart``
   compiles (GF, GD and SGD programs with their progress bars, data generation, init and
   the few eager ops of the experiment). Target (issue 8): <= 5 s, on this cold number.
2. ``Config(seed=1)``: new data values, new init values, new SGD key. Expected: 0 compiles.
3. ``Config(lr=0.05)``: a new learning rate in the quickstart experiment.
4. ``gflow.simulate`` directly: GD and SGD with another lr, GF with another t1, on new data
   and init values with the same shapes and the same number of save times, and (where it
   exists) ``gflow.simulate_ensemble`` of 4 members with GD. Expected: 0.

Then, for context, phase 1 again with JAX's persistent compilation cache (every program
cached, in a fresh temporary folder): one process fills it, a second one is measured
("warm"). Programs with host callbacks -- diffrax's runtime checks and the progress bars --
are not cached by JAX, so the GF solve (and with progress bars the GD/SGD solves) compile
again even when warm.

The library is not modified; compiles are counted from JAX's own events.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
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


def enable_persistent_cache(path: str) -> None:
    """JAX's persistent compilation cache in ``path``, for every program (JAX's defaults
    skip programs that compile in under 1 s, i.e. all of the quickstart's but one)."""
    import jax

    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def worker(quick: bool, cache: str | None = None) -> dict:
    """Runs in the subprocess: the phases above, returns their compile summaries. With
    ``cache`` (a folder), only the first phase, with the persistent compilation cache there."""
    import resource

    import jax
    import numpy as np

    import gflow
    from gflow.experiments import quickstart

    if cache is None:
        jax.config.update("jax_enable_compilation_cache", False)
    else:
        enable_persistent_cache(cache)
    rec = _Recorder()
    jax.monitoring.register_event_time_span_listener(rec)
    base = quickstart.Config()
    if quick:
        base = dataclasses.replace(base, n=40, width=16, t1=20.0, n_save=10)
    out = {"config": dataclasses.asdict(base)}

    def cpu():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def phase(name, fn):
        rec.phase = name
        t, c = time.perf_counter(), cpu()
        fn()
        out[name] = rec.summary(name) | {"wall_s": time.perf_counter() - t, "cpu_s": cpu() - c}
        rec.phase = None

    # as `gflow run quickstart` runs it (progress bars on, unless --quiet)
    phase("quickstart_first", lambda: quickstart.run(base, progress=True))
    if cache is not None:
        return out
    phase("quickstart_seed", lambda: quickstart.run(dataclasses.replace(base, seed=1),
                                                    progress=True))
    phase("quickstart_lr", lambda: quickstart.run(dataclasses.replace(base, lr=base.lr / 2),
                                                  progress=True))
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


def _worker(quick: bool, cache: str | None = None) -> dict:
    env = dict(os.environ, JAX_ENABLE_COMPILATION_CACHE="false")
    cmd = [sys.executable, "-m", "benchmarks.case5_compile", "--worker"] + (["--quick"] * quick)
    if cache is not None:
        cmd += ["--cache", cache]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"case 5 worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(peak: dict, *, quick: bool = False, out=None) -> dict:
    res = _worker(quick)  # cold: a fresh process, no persistent cache
    with tempfile.TemporaryDirectory() as cache:  # a fresh cache: filled, then read
        res["cache_fill"] = _worker(quick, cache)["quickstart_first"]
        res["cache_warm"] = _worker(quick, cache)["quickstart_first"]
    first, warm = res["quickstart_first"], res["cache_warm"]
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
               note=f"process CPU time {first['cpu_s']:.1f} s; second run (seed=1): "
                    f"{res['quickstart_seed']['wall_s']:.1f} s"),
        Metric(NAME, "quickstart compile time, warm persistent compilation cache",
               warm["compile_s"], "s",
               note=f"a new process reading the programs a first one cached (that one: "
                    f"{res['cache_fill']['compile_s']:.1f} s); wall {warm['wall_s']:.1f} s, "
                    f"{warm['n_backend_compiles']} XLA compiles"),
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
        cache_dir = sys.argv[sys.argv.index("--cache") + 1] if "--cache" in sys.argv else None
        print(json.dumps(worker("--quick" in sys.argv, cache_dir)))
    else:
        import argparse

        argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
        print(json.dumps(run({}, quick=False)["details"], indent=2))

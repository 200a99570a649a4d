"""Run the benchmark suite: ``python -m benchmarks [--quick] [--device] [--cases 1,3] [--out DIR]``.

Measures the f32 GEMM peak first, then runs the cases, prints one table, writes
``DIR/results.json`` (and case 4's ``DIR/scaling.png``), and appends the table to
``benchmarks/RESULTS.md`` with the date, the machine and the library versions
(``--quick`` runs tiny sizes as a smoke test and records nothing unless ``--record``).
``--device`` runs on JAX's accelerator (GPU/TPU) at the cases' device sizes, cases
:data:`DEVICE_CASES` unless ``--cases`` is given, with the GEMM peak measured on that device;
it is refused when JAX sees only the CPU.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import pathlib
import sys
import tempfile
import time
import traceback

from . import _common
from ._common import Metric, machine
from .gemm_peak import gemm_peak

CASES = {
    "1": "case1_gd",
    "2": "case2_ensemble",
    "3": "case3_gf",
    "4": "case4_scaling",
    "5": "case5_compile",
    "6": "case6_kinks",
    "7": "case7_continuous",
    "8": "case8_ntk",
    "9": "case9_sharpness",
    "10": "case10_weak_scaling",
}
RESULTS_MD = pathlib.Path(__file__).with_name("RESULTS.md")
#: the throughput cases, run by ``--device`` unless ``--cases`` says otherwise
DEVICE_CASES = "1,2,3,4"


def _table(rows: list[Metric]) -> str:
    head = "| case | metric | value | unit | target | met | note |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        met = {True: "yes", False: "**no**", None: ""}[r.met]
        lines.append(f"| {r.case} | {r.name} | {r.value_str()} | {r.unit} | {r.target_str()} "
                     f"| {met} | {r.note} |")
    return "\n".join(lines)


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, pathlib.Path):
        return str(o)
    return str(o)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test (~1 min)")
    p.add_argument("--cases", default=None, help="comma-separated, e.g. 1,3 (default: all; "
                   f"with --device: {DEVICE_CASES})")
    p.add_argument("--device", action="store_true", help="run on JAX's GPU/TPU at the device "
                   "sizes; the torch peers (a CPU build) are left out")
    p.add_argument("--out", default=None, help="folder for results.json and figures "
                   "(default: a new temporary folder)")
    p.add_argument("--note", default="", help="label recorded with the rows, e.g. "
                   "'preliminary (machine shared)'")
    rec = p.add_mutually_exclusive_group()
    rec.add_argument("--record", action="store_true", help="append to RESULTS.md even with --quick")
    rec.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = p.parse_args(argv)
    if args.device:
        import jax

        if jax.default_backend() == "cpu":
            p.error("--device needs a GPU or TPU, but JAX's default backend is the CPU "
                    f"(devices: {jax.devices()}); install jax for the accelerator "
                    "(docs/install.md) or run without --device.")
        _common.DEVICE_RUN = True
    if args.cases is None:
        args.cases = DEVICE_CASES if args.device else ",".join(CASES)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {unknown}; valid: {list(CASES)}")
    out = pathlib.Path(args.out or tempfile.mkdtemp(prefix="gflow-bench-"))
    out.mkdir(parents=True, exist_ok=True)

    t_start = time.perf_counter()
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, jax {info['jax']} "
          f"({info['jax_backend']}: {info['jax_device']}), torch {info['torch']}", flush=True)
    peak = gemm_peak(quick=args.quick, device=args.device)
    print(f"f32 GEMM peak: jnp.dot {peak['jax']:.1f} GFLOP/s"
          + (f", torch.mm {peak['torch']:.1f} GFLOP/s" if peak.get("torch") else ""), flush=True)
    rows = [Metric("0 GEMM peak", "jnp.dot f32 peak", peak["jax"], "GFLOP/s",
                   note=f"best of sizes {peak['sizes']}")]
    if peak.get("torch"):
        rows.append(Metric("0 GEMM peak", "torch.mm f32 peak", peak["torch"], "GFLOP/s"))
    results = {"machine": info, "quick": args.quick, "device": args.device, "gemm_peak": peak,
               "cases": {}}
    failed = []
    for c in cases:
        t0 = time.perf_counter()
        print(f"case {c} ...", flush=True)
        try:
            mod = importlib.import_module(f".{CASES[c]}", __package__)
            res = mod.run(peak, quick=args.quick, out=out)
        except Exception as e:  # noqa: BLE001 - report and go on with the other cases
            traceback.print_exc()
            failed.append(c)
            res = {"rows": [Metric(f"{c}", "error", f"{type(e).__name__}: {e}"[:200])],
                   "details": {"error": traceback.format_exc()}}
        wall = time.perf_counter() - t0
        res["details"]["wall_s"] = wall
        rows += res["rows"]
        results["cases"][c] = {"rows": [r.asdict() for r in res["rows"]],
                               "details": res["details"]}
        print(_table(res["rows"]).split("\n", 2)[2] + f"\n  (case {c}: {wall:.0f} s)", flush=True)
    # the peak again: a large change means the machine was disturbed during the run
    peak_end = gemm_peak(quick=args.quick, torch=False, device=args.device)
    results["gemm_peak_end"] = peak_end
    drift = peak_end["jax"] / peak["jax"] - 1
    rows.append(Metric("0 GEMM peak", "jnp.dot f32 peak, re-measured at the end",
                       peak_end["jax"], "GFLOP/s",
                       note=f"{100 * drift:+.0f} % vs start" + ("; machine disturbed?"
                                                             if abs(drift) > 0.2 else "")))
    total = time.perf_counter() - t_start
    results["wall_s"] = total
    table = _table(rows)
    print("\n" + table + f"\n\ntotal wall time {total:.0f} s")
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=2, default=_json_default))
    print(f"wrote {path}")
    if (not args.quick or args.record) and not args.no_record:
        _record(info, table, args, total)
        print(f"appended to {RESULTS_MD}")
    return 1 if failed else 0


def _record(info: dict, table: str, args, total: float) -> None:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    label = f" - {args.note}" if args.note else ""
    head = (f"\n## {now}{label}\n\n"
            f"Machine: {info['cpu']}, {info['cores']} cores; JAX backend {info['jax_backend']} "
            f"({info['jax_device']}). Versions: jax {info['jax']}, torch {info['torch']}, "
            f"torchdiffeq {info['torchdiffeq']}, gflow {info['gflow']}, Python {info['python']}. "
            f"Cases {args.cases}{' (quick sizes)' if args.quick else ''}"
            f"{' at the device sizes (--device; torch peers left out)' if args.device else ''}; "
            f"suite wall time "
            f"{total:.0f} s.\n\n")
    if not RESULTS_MD.exists():
        RESULTS_MD.write_text("# Benchmark results\n\nAppended by `python -m benchmarks`; "
                              "method in README.md.\n")
    with RESULTS_MD.open("a") as f:
        f.write(head + table + "\n")


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``gflow run | list | describe | plot | report`` (:mod:`gflow.report`).

``gflow run EXPERIMENT [--set k=v ...] [--seeds N]`` writes a results folder whose
``config.json`` records the settings and their provenance (versions, device, dtype, seed,
command line, date); ``gflow run --config DIR/config.json`` (or a TOML file) re-runs it.
A run that fails or receives SIGTERM/Ctrl-C leaves ``summary.json`` with ``status`` saying
so and no half-written file; ``gflow run --resume DIR`` continues it.

The results folder (:mod:`gflow.resultsdir`): settings are checked before anything is
written; a non-empty folder that is not a gflow results folder is refused, and a gflow
folder with results or checkpoints needs ``--overwrite`` (replace them) or ``--resume``
(continue them). gflow removes only files it writes, and holds a lock on the folder while
it runs, so a second run on the same folder is refused.

Checkpoints inside a run: the experiment runs inside
``gflow.checkpoint.checkpointing(DIR/checkpoints)``, so each of its ``simulate`` calls is
cut into segments of ``--checkpoint-every K`` save points (default 10) and its state is
written after a segment at most every ``--checkpoint-seconds S`` (default 60; also on
SIGTERM/Ctrl-C), and each ``simulate_ensemble`` call keeps its finished chunks. A sweep
writes each finished point to ``DIR/parts`` (one ``checkpoints/point_NNNNN`` folder per
point while it runs). ``--resume DIR`` reads finished points and calls back and continues
the interrupted call from its last checkpoint; the result is bitwise the one an
uninterrupted run gives, which is why a resume with other package versions or another
device is refused unless ``--force``. K is recorded in ``config.json`` (it changes
gradient-flow results within the solver tolerance, so a resume uses the recorded one);
``--checkpoint-every 0`` runs without in-run checkpoints.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

__all__ = ["main"]


def _cmd_list(args) -> int:
    from . import experiments

    print(experiments.describe(args.experiment) if args.experiment else experiments.listing())
    return 0


def _cmd_report(args) -> int:
    from . import report

    return report.run(args.out, args.level, only=args.only)


_STOP = threading.Event()


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM."""


_TERMINATED: list[int] = []
_RECORDING: list[bool] = []


def _stop_exception(signum) -> BaseException:
    if signum == signal.SIGINT:
        return KeyboardInterrupt()
    return Terminated("terminated by SIGTERM")


def _on_signal(signum, frame):
    """SIGTERM and SIGINT (Ctrl-C) during a run: raise in the main thread."""
    if _RECORDING:  # already recording the failure: finish writing summary.json
        return
    if not _TERMINATED:
        # An exception raised while a finalizer or gc callback runs (jax has one, also
        # during XLA compiles) is swallowed by Python: re-send the signal until it reaches
        # the run's code.
        def rekick():
            while not _RECORDING and not _STOP.wait(0.5):
                os.kill(os.getpid(), signum)

        threading.Thread(target=rekick, daemon=True).start()
    _TERMINATED.append(signum)
    raise _stop_exception(signum)


def _quiet_unraisable(unraisable):
    """``sys.unraisablehook`` of the command line: a stop exception raised inside a gc
    callback or finalizer is swallowed by Python (and delivered again by the re-sent signal),
    so it is not printed as "Exception ignored ..." with a traceback; anything else is."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt | Terminated):
        return
    sys.__unraisablehook__(unraisable)


def _check_terminated():
    if _TERMINATED:
        raise _stop_exception(_TERMINATED[0])


def _plan(args):
    """``(experiment, x64, settings source)`` from ``--config``/``--resume`` or the command line."""
    from . import provenance

    given = [x for x in (args.experiment, args.config, args.resume) if x]
    if len(given) != 1:
        raise ValueError("gflow run needs exactly one of EXPERIMENT, --config FILE or "
                         "--resume DIR.")
    if args.experiment:
        return args.experiment, bool(args.x64), None
    if args.set or args.seeds is not None:
        raise ValueError("--set/--seeds cannot be combined with --config/--resume: edit the "
                         "config file instead.")
    recorded = provenance.read_config(args.config or args.resume)
    return recorded["experiment"], bool(args.x64 or recorded.get("x64", False)), recorded


_CHECKPOINT_DEFAULTS = {"every": 10, "every_seconds": 60.0}


def _checkpoint_settings(args, recorded) -> dict:
    """``{"every": K, "every_seconds": S}`` from the command line, else the recorded
    config, else the defaults; a resume keeps the recorded K (it shapes the results)."""
    ck = dict(_CHECKPOINT_DEFAULTS)
    rec = (recorded or {}).get("checkpoint")
    if rec is not None:
        if not isinstance(rec, dict) or set(rec) - set(ck):
            raise ValueError("config: 'checkpoint' must be a table with keys 'every' and "
                             "'every_seconds'.")
        ck |= rec
    if args.checkpoint_every is not None:
        if args.resume and args.checkpoint_every != ck["every"]:
            raise ValueError(f"--checkpoint-every cannot change on --resume (the run was "
                             f"started with {ck['every']}).")
        ck["every"] = args.checkpoint_every
    if args.checkpoint_seconds is not None:
        ck["every_seconds"] = args.checkpoint_seconds
    every, sec = ck["every"], ck["every_seconds"]
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise ValueError(f"--checkpoint-every must be an integer >= 0 (0: no checkpoints "
                         f"inside a run), got {every!r}.")
    if isinstance(sec, bool) or not isinstance(sec, int | float) or not sec >= 0 \
            or math.isinf(sec):
        raise ValueError(f"--checkpoint-seconds must be a number >= 0, got {sec!r}.")
    return {"every": every, "every_seconds": float(sec)}


def _checkpoints(directory: Path, ck: dict):
    """The checkpointing block one run of an experiment executes in."""
    import contextlib

    from . import checkpoint

    if ck["every"] == 0:
        return contextlib.nullcontext()
    return checkpoint.checkpointing(directory, every=ck["every"],
                                    every_seconds=ck["every_seconds"])


def _check_provenance(recorded: dict, current: dict, force: bool) -> None:
    """Refuse a resume whose results could differ bitwise from the interrupted run's."""
    from . import provenance

    exact, warn = provenance.compare(recorded, current)
    for w in warn:
        print(f"gflow: warning: resuming with another {w}", file=sys.stderr)
    if exact and not force:
        raise ValueError("--resume: this run was started with " + "; ".join(exact)
                         + " (recorded -> now); its results could differ in the last bits "
                         "from an uninterrupted run. Resume where it started, or add --force "
                         "to continue anyway.")
    for w in exact:
        print(f"gflow: warning: --force: resuming with {w}", file=sys.stderr)


def _make_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out {str(out)!r}: cannot create the folder ({e.strerror or e}).") \
            from None


def _cmd_run(args) -> int:
    experiment, x64, recorded = _plan(args)
    ck = _checkpoint_settings(args, recorded)
    if args.overwrite and args.resume:
        raise ValueError("--overwrite and --resume exclude each other: --resume continues "
                         "the results in the folder, --overwrite replaces them.")
    if args.force and not args.resume:
        raise ValueError("--force applies only to --resume.")
    if x64:
        import jax

        jax.config.update("jax_enable_x64", True)
    from . import experiments, provenance, resultsdir

    mod = experiments.get(experiment)
    if recorded is None:
        axes, configs = experiments.grid(mod.Config, args.set or [], args.seeds)
    else:
        axes, configs = experiments.grid_from_dict(mod.Config, recorded.get("settings") or {},
                                                   recorded.get("sweep"))
    if args.resume:
        out = args.results_dir = Path(args.resume)
        if args.out is not None:
            raise ValueError("--resume DIR continues in DIR: drop --out.")
        if not resultsdir.is_gflow_folder(out):
            raise ValueError(f"--resume {str(out)!r}: not a gflow results folder.")
        if resultsdir.status(out) == "completed":
            print(f"{out} is complete; nothing to resume.")
            return 0
    else:
        out = Path(args.out or Path("results") / experiment)
    args.results_dir = out  # for the message on Ctrl-C
    resultsdir.check(out, overwrite=args.overwrite, resume=bool(args.resume))  # writes nothing
    config = {"experiment": experiment, "x64": x64, "seed": configs[0].seed,
              "settings": dataclasses.asdict(configs[0]), "sweep": axes, "checkpoint": ck,
              "provenance": provenance.collect(args.argv)}
    if recorded is not None and "provenance" in recorded:
        if args.resume:
            _check_provenance(recorded["provenance"], config["provenance"], args.force)
        key = "resumed_from" if args.resume else "rerun_of"
        config["provenance"][key] = recorded["provenance"]
    _make_folder(out)
    with resultsdir.locked(out):
        # again under the lock: another run may have written here since the check
        resultsdir.check(out, overwrite=args.overwrite, resume=bool(args.resume))
        resultsdir.remove_temp_files(out)  # of writes killed mid-way (gflow's names only)
        if args.resume:
            # the folder is incomplete from here until the new summary.json is written
            (out / "summary.json").unlink(missing_ok=True)
        else:
            resultsdir.remove_results(out)
        return _execute(mod, experiment, axes, configs, config, out, args, ck)


def _execute(mod, experiment, axes, configs, config, out, args, ck) -> int:
    """Run the experiment into ``out`` (locked, prepared) and write its results."""
    from . import io, resultsdir

    _TERMINATED.clear()
    _RECORDING.clear()
    _STOP.clear()
    previous = ({sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
                if _main_thread() else {})
    t0 = time.perf_counter()
    try:
        io.write_json(out / "config.json", config)
        if not axes:
            with _checkpoints(out / "checkpoints", ck):
                result = mod.run(configs[0], progress=not args.quiet)
            summary, dataset = result.summary, result.dataset
            figs = mod.figures(dataset, configs[0])
        else:
            summary, dataset, figs = _run_sweep(mod, axes, configs, out, quiet=args.quiet,
                                                resume=bool(args.resume), ck=ck)
        _check_terminated()
        summary = {"experiment": experiment, "status": "completed", **summary,
                   "wall_time_s": time.perf_counter() - t0}
        io.write_results(out, config=config, summary=summary, dataset=dataset, figures=figs)
        io.remove_parts(out)
        resultsdir.remove_checkpoints(out / "checkpoints")
    except BaseException as e:
        _RECORDING.append(True)
        _STOP.set()
        _record_failure(out, experiment, e, time.perf_counter() - t0)
        if isinstance(e, Terminated):
            raise SystemExit(128 + signal.SIGTERM) from None
        raise
    finally:
        _STOP.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not args.quiet:
        for k, v in summary.items():
            print(f"{k}: {v}")
        print(f"results in {out}")
    return 0


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _record_failure(out: Path, experiment: str, e: BaseException, wall: float) -> None:
    """summary.json of a run that did not finish: what stopped it; no results file is
    left half-written (every write is atomic) and finished sweep points stay in parts/."""
    from . import io

    interrupted = isinstance(e, KeyboardInterrupt | Terminated)
    kind = "interrupted" if interrupted else "failed"
    msg = str(e) or type(e).__name__
    parts = sorted((out / "parts").glob("[0-9]*.json")) if (out / "parts").is_dir() else []
    ckpts = (sorted(p for p in (out / "checkpoints").rglob("*.npz") if p.name[0] != ".")
             if (out / "checkpoints").is_dir() else [])
    summary = {"experiment": experiment, "status": f"{kind}: {type(e).__name__}: {msg}",
               "wall_time_s": wall, "sweep_points_done": len(parts),
               "checkpoint_files": len(ckpts),
               # an interrupted run resumes from config.json even before its first checkpoint
               "resume": f"gflow run --resume {out}" if interrupted or parts or ckpts else None}
    # a results file written just before the failure (e.g. a figure failed) goes too:
    # the folder holds either the whole result set or none of it
    (out / "trajectory.nc").unlink(missing_ok=True)
    io.write_json(out / "summary.json", summary)


_MAX_SWEEP_FIGURE_POINTS = 4


def _run_sweep(mod, axes, configs, out, *, quiet, resume=False, ck=None):
    """Run every grid point; each point's data and summary are written as it finishes
    (``DIR/parts``), and with ``resume`` points already there are read back, not re-run.
    A point runs checkpointed in ``DIR/checkpoints/point_NNNNN`` (removed once its part
    is written)."""
    from . import experiments, io, plot, progress, resultsdir

    summaries, datasets, figs = [], [], {}
    points = progress.bar("sweep", iterable=configs, unit="run", disable=quiet, delay=0)
    for i, cfg in enumerate(points):
        _check_terminated()
        done = io.read_part(out, i) if resume else None
        if done is None:
            point = out / "checkpoints" / f"point_{i:05d}"
            with _checkpoints(point, ck or {"every": 0}):
                result = mod.run(cfg, progress=False)
            io.write_part(out, i, result.dataset, result.summary)
            resultsdir.remove_checkpoints(point)
            summary, dataset = result.summary, result.dataset
        else:
            summary, dataset = done
        summaries.append(summary)
        datasets.append(dataset)
        if len(configs) <= _MAX_SWEEP_FIGURE_POINTS or i == 0:
            label = "_".join(f"{k}{getattr(cfg, k)}" for k in axes)
            figs |= {f"{name}_{label}": f for name, f in mod.figures(dataset, cfg).items()}
    shape = [len(v) for v in axes.values()]
    summary = {"sweep": axes, **{key: _nest([s.get(key) for s in summaries], shape)
                                 for key in summaries[0]}}
    figs |= plot.sweep_summary(summary)
    return summary, experiments.combine_points(datasets, axes), figs


def _nest(vals, shape):
    """A flat list in row-major order as nested lists of the given shape."""
    if len(shape) == 1:
        return list(vals)
    step = len(vals) // shape[0]
    return [_nest(vals[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def _cmd_plot(args) -> int:
    from . import experiments, io, plot, resultsdir

    out = Path(args.dir)
    config, summary, ds = io.read_results(out)
    if not isinstance(config.get("experiment"), str) or not isinstance(
            config.get("settings"), dict):
        raise ValueError(f"{str(out / 'config.json')!r} is not a gflow run config (no "
                         "'experiment' and 'settings').")
    if ds is None:
        raise ValueError(f"{str(out)!r} has no trajectory.nc to draw from (status: "
                         f"{summary.get('status')!r}).")
    mod = experiments.get(config["experiment"])
    cfg = experiments.config_from_dict(mod.Config, config["settings"])
    axes = config.get("sweep") or {}
    figs = {}
    if not axes:
        figs = mod.figures(ds, cfg)
    else:
        import itertools

        for vals in itertools.product(*axes.values()):
            point = dict(zip(axes, vals, strict=True))
            label = "_".join(f"{k}{v}" for k, v in point.items())
            sub = ds.sel(point)
            figs |= {f"{name}_{label}": fig for name, fig in
                     mod.figures(sub, dataclasses.replace(cfg, **point)).items()}
        figs |= plot.sweep_summary({"sweep": axes, **summary})
    with resultsdir.locked(out):
        written = []
        for name, fig in figs.items():
            io.write_figure(out / f"{name}.png", fig)
            written.append(f"{name}.png")
        recorded = [f for f in summary.get("figures") or [] if f not in written]
        # the figures a later --overwrite removes
        io.write_json(out / "summary.json", {**summary, "figures": recorded + written})
    for name in written:
        print(out / name)
    return 0


_DESCRIPTION = """\
gflow simulates how neural networks learn: gradient flow integrated as an ODE, and GD,
SGD and optax optimizers on the same time axis (t = step x lr), for single networks and
ensembles. The subcommands run the research experiments and write results folders
(config.json, summary.json, trajectory.nc, figures)."""

_RUN_DESCRIPTION = """\
Run an experiment and write its results folder (--out, default results/EXPERIMENT).
A new or empty folder is used as it is; a non-empty folder that is not a gflow results
folder is refused; a gflow results folder that holds results or checkpoints needs
--overwrite (replace them) or --resume (continue an interrupted run). gflow removes only
files it wrote, and a folder in use by another gflow run is refused."""
_REPORT_DESCRIPTION = """\
Run every research setting (gflow run, one results folder each under OUT/runs) and write
OUT/index.md, OUT/index.html and OUT/report.json: one row per claim of each paper, with what
was measured and the verdict. Without --quick or --smoke it runs each setting's full preset
(hours). A killed report continues where it stopped when run again."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gflow", description=_DESCRIPTION,
        epilog="Run 'gflow COMMAND -h' for the options of a command.")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    r = sub.add_parser("run", help="run an experiment and write a results folder",
                       description=_RUN_DESCRIPTION)
    r.add_argument("experiment", nargs="?", help="experiment name (see gflow list)")
    r.add_argument("--config", metavar="FILE",
                   help="re-run a recorded config (DIR/config.json, or a .toml/.json file)")
    r.add_argument("--resume", metavar="DIR",
                   help="continue an interrupted run in DIR from its checkpoints and finished "
                        "sweep points")
    r.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a setting; KEY=v1,v2,... sweeps over the values")
    r.add_argument("--seeds", type=int, metavar="N",
                   help="sweep over N seeds (seed, seed+1, ...)")
    r.add_argument("--out", help="results folder (default results/EXPERIMENT)")
    r.add_argument("--overwrite", action="store_true",
                   help="replace the results and checkpoints of an earlier run in --out")
    r.add_argument("--force", action="store_true",
                   help="with --resume: continue although package versions or the device "
                        "differ from the recorded ones (results may differ in the last bits)")
    r.add_argument("--x64", action="store_true", help="compute in float64")
    r.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    r.add_argument("--checkpoint-every", type=int, metavar="K",
                   help="save points per checkpointed segment of each run (default "
                        f"{_CHECKPOINT_DEFAULTS['every']}; 0: no checkpoints inside a run)")
    r.add_argument("--checkpoint-seconds", type=float, metavar="S",
                   help="write a run's checkpoint at most every S seconds of wall time "
                        f"(default {_CHECKPOINT_DEFAULTS['every_seconds']:g}; 0: after "
                        "every segment)")
    r.set_defaults(fn=_cmd_run)
    lst = sub.add_parser("list", help="list experiments and their settings",
                         description="List the experiments and their settings with defaults.")
    lst.set_defaults(fn=_cmd_list, experiment=None)
    de = sub.add_parser("describe", help="what an experiment measures, its settings and run time",
                        description="Print an experiment's description, typical run time and "
                                    "each setting's default, constraints and meaning.")
    de.add_argument("experiment", help="experiment name (see gflow list)")
    de.set_defaults(fn=_cmd_list)
    pl = sub.add_parser("plot", help="redraw the figures of a results folder",
                        description="Redraw the figures of a finished results folder from its "
                                    "trajectory.nc and config.json, and print the files written.")
    pl.add_argument("dir", help="a results folder written by gflow run")
    pl.set_defaults(fn=_cmd_plot)
    rp = sub.add_parser("report", help="run every research setting; a verdict per claim",
                        description=_REPORT_DESCRIPTION)
    rp.add_argument("--quick", action="store_const", const="quick", dest="level",
                    default="full", help="each setting's defaults (about 15 minutes on 2 cores)")
    rp.add_argument("--smoke", action="store_const", const="smoke", dest="level",
                    help="the tests' sizes: that every setting runs, in a few minutes")
    rp.add_argument("--out", default="report", help="report folder (default ./report)")
    rp.add_argument("--only", nargs="+", metavar="NAME", help="only these research settings")
    rp.set_defaults(fn=_cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures go to files; no window, no display
    sys.unraisablehook = _quiet_unraisable
    args = _parser().parse_args(argv)
    args.argv = ["gflow", *(sys.argv[1:] if argv is None else argv)]
    try:
        return args.fn(args)
    except ValueError as e:  # bad settings: a clear message, not a traceback
        print(f"gflow: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = ""
        out = getattr(args, "results_dir", None)
        if out is not None and (out / "config.json").exists():
            hint = f" (recorded in {out / 'summary.json'}); continue with: gflow run --resume {out}"
        print(f"gflow: interrupted{hint}", file=sys.stderr)
        if argv is None:
            # the process's own command line: end now rather than in the interpreter's
            # teardown, which can crash while an interrupted XLA compile is still running
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return 130


if __name__ == "__main__":
    sys.exit(main())

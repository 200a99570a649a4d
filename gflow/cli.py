"""Command line: ``gflow run | list | plot``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

__all__ = ["main"]


def _cmd_list(args) -> int:
    from . import experiments

    for name in experiments.names():
        mod = experiments.get(name)
        doc = (mod.__doc__ or "").strip().splitlines()[0]
        print(f"{name}: {doc}")
        for f in dataclasses.fields(mod.Config):
            print(f"    {f.name} = {f.default!r}")
    return 0


def _cmd_run(args) -> int:
    if args.x64:
        import jax

        jax.config.update("jax_enable_x64", True)
    from . import experiments, io

    mod = experiments.get(args.experiment)
    cfg = experiments.parse_sets(mod.Config, args.set or [])
    out = Path(args.out or Path("results") / args.experiment)
    t0 = time.perf_counter()
    result = mod.run(cfg, progress=not args.quiet)
    wall = time.perf_counter() - t0
    summary = {"experiment": args.experiment, **result.summary, "wall_time_s": wall}
    figs = mod.figures(result.dataset, cfg)
    config = {"experiment": args.experiment, "x64": bool(args.x64),
              "settings": dataclasses.asdict(cfg)}
    io.write_results(out, config=config, summary=summary, dataset=result.dataset, figures=figs)
    if not args.quiet:
        for k, v in summary.items():
            print(f"{k}: {v}")
        print(f"results in {out}")
    return 0


def _cmd_plot(args) -> int:
    from . import experiments, io

    config, _, ds = io.read_results(args.dir)
    mod = experiments.get(config["experiment"])
    cfg = experiments.config_from_dict(mod.Config, config["settings"])
    for name, fig in mod.figures(ds, cfg).items():
        io.write_figure(Path(args.dir) / f"{name}.png", fig)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gflow", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run an experiment and write a results folder")
    r.add_argument("experiment")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting")
    r.add_argument("--out", help="results folder (default results/EXPERIMENT)")
    r.add_argument("--x64", action="store_true", help="compute in float64")
    r.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    r.set_defaults(fn=_cmd_run)
    lst = sub.add_parser("list", help="list experiments and their settings")
    lst.set_defaults(fn=_cmd_list)
    pl = sub.add_parser("plot", help="redraw the figures of a results folder")
    pl.add_argument("dir")
    pl.set_defaults(fn=_cmd_plot)
    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except ValueError as e:  # bad settings: a clear message, not a traceback
        print(f"gflow: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

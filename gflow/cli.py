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
    axes, configs = experiments.grid(mod.Config, args.set or [], args.seeds)
    out = Path(args.out or Path("results") / args.experiment)
    config = {"experiment": args.experiment, "x64": bool(args.x64),
              "settings": dataclasses.asdict(configs[0]), "sweep": axes}
    t0 = time.perf_counter()
    if not axes:
        result = mod.run(configs[0], progress=not args.quiet)
        summary, dataset = result.summary, result.dataset
        figs = mod.figures(dataset, configs[0])
    else:
        summary, dataset, figs = _run_sweep(mod, axes, configs, out, quiet=args.quiet)
    summary = {"experiment": args.experiment, **summary,
               "wall_time_s": time.perf_counter() - t0}
    io.write_results(out, config=config, summary=summary, dataset=dataset, figures=figs)
    io.remove_parts(out)
    if not args.quiet:
        for k, v in summary.items():
            print(f"{k}: {v}")
        print(f"results in {out}")
    return 0


_MAX_SWEEP_FIGURE_POINTS = 4


def _run_sweep(mod, axes, configs, out, *, quiet):
    """Run every grid point; each point's data is written as it finishes."""
    import tqdm

    from . import experiments, io

    summaries, datasets, figs = [], [], {}
    for i, cfg in enumerate(tqdm.tqdm(configs, desc="sweep", unit="run", disable=quiet)):
        result = mod.run(cfg, progress=False)
        io.write_part(out, i, result.dataset)
        summaries.append(result.summary)
        datasets.append(result.dataset)
        if len(configs) <= _MAX_SWEEP_FIGURE_POINTS or i == 0:
            label = "_".join(f"{k}{getattr(cfg, k)}" for k in axes)
            figs |= {f"{name}_{label}": f for name, f in mod.figures(result.dataset, cfg).items()}
    shape = [len(v) for v in axes.values()]
    summary = {"sweep": axes}
    for key in summaries[0]:
        vals = [s.get(key) for s in summaries]
        summary[key] = _nest(vals, shape)
    return summary, experiments.combine_points(datasets, axes), figs


def _nest(vals, shape):
    """A flat list in row-major order as nested lists of the given shape."""
    if len(shape) == 1:
        return list(vals)
    step = len(vals) // shape[0]
    return [_nest(vals[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def _cmd_plot(args) -> int:
    from . import experiments, io

    config, _, ds = io.read_results(args.dir)
    mod = experiments.get(config["experiment"])
    cfg = experiments.config_from_dict(mod.Config, config["settings"])
    axes = config.get("sweep") or {}
    if not axes:
        for name, fig in mod.figures(ds, cfg).items():
            io.write_figure(Path(args.dir) / f"{name}.png", fig)
        return 0
    import itertools

    for vals in itertools.product(*axes.values()):
        point = dict(zip(axes, vals, strict=True))
        label = "_".join(f"{k}{v}" for k, v in point.items())
        sub = ds.sel(point)
        for name, fig in mod.figures(sub, dataclasses.replace(cfg, **point)).items():
            io.write_figure(Path(args.dir) / f"{name}_{label}.png", fig)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gflow", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run an experiment and write a results folder")
    r.add_argument("experiment")
    r.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a setting; KEY=v1,v2,... sweeps over the values")
    r.add_argument("--seeds", type=int, metavar="N",
                   help="sweep over N seeds (seed, seed+1, ...)")
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

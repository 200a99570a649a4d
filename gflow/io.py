"""Results on disk: ``config.json``, ``summary.json``, ``trajectory.nc`` and figures.

Every file is written atomically (a temporary file in the same folder, then
``os.replace``), so a results folder never holds a half-written file; files get the
permissions the umask gives new files (as ``open`` would), not the temporary file's 0600.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TIME_ATTRS", "VARIABLE_ATTRS", "atomic_path", "default_mode", "describe_dataset",
           "read_part", "read_results", "remove_parts",
           "write_dataset", "write_figure", "write_json", "write_part", "write_results"]


def _umask() -> int:
    try:  # Linux: read it without changing it
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode() -> int:
    """The permission bits a new file gets: ``0o666`` less the umask."""
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path, suffix: str):
    """A temporary path next to ``path`` (``.NAME.XXXXXXXX<suffix>``) to write into;
    on leaving the block it becomes ``path`` (``os.replace``), with the umask's
    permissions; on an error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return _jsonable(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray | np.generic) or hasattr(x, "__array__"):
        arr = np.asarray(x)
        return _jsonable(arr.tolist()) if arr.ndim else _jsonable(arr.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def write_json(path, obj) -> None:
    """Write ``obj`` as JSON (numpy values converted; NaN -> null)."""
    path = Path(path)
    with atomic_path(path, ".json") as tmp, open(tmp, "w") as f:
        json.dump(_jsonable(obj), f, indent=2, sort_keys=False)
        f.write("\n")


def write_dataset(path, ds) -> None:
    """Write an ``xarray.Dataset`` to netCDF (h5netcdf engine)."""
    path = Path(path)
    with atomic_path(path, ".nc") as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")


def write_figure(path, fig) -> None:
    """Save a matplotlib figure as PNG and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


#: what a results dataset's attributes say of its time axes (CF ``long_name``/``units``)
TIME_ATTRS = {"long_name": "time t: gradient-flow time; a discrete method's iterate k sits at "
              "the sum of its first k step sizes (k * lr)", "units": "1"}
#: attributes of the variables every trajectory dataset carries
VARIABLE_ATTRS = {
    "status": {"long_name": "why the run ended: completed (t1), stop_loss, stop_grad, "
               "diverged, max_steps or solver_failed"},
    "t_stop": {"long_name": "time at which the run ended (t1 when completed)", "units": "1"},
}


def describe_dataset(ds, *, config: dict | None = None, title: str = ""):
    """``ds`` with self-describing attributes (CF conventions where they apply): every time
    coordinate (``time`` or ``*_time``) gets :data:`TIME_ATTRS`, each variable named in
    :data:`VARIABLE_ATTRS` (or ``<prefix>_<name>``) its ``long_name``, a variable
    ``at_stop_<v>`` says it holds ``v`` at the run's stop point, and the dataset gets
    ``Conventions``, ``title``, ``source`` (gflow's version) and the run's ``config`` (JSON).
    Attributes already set are kept."""
    from . import __version__

    ds = ds.copy()
    for name in list(ds.coords) + list(ds.data_vars):
        base, attrs = str(name), {}
        if base == "time" or base.endswith("_time"):
            attrs = TIME_ATTRS
        elif (key := next((k for k in VARIABLE_ATTRS if base == k or base.endswith(f"_{k}")),
                          None)) is not None:
            attrs = VARIABLE_ATTRS[key]
        elif "at_stop_" in base:
            attrs = {"long_name": f"{base.split('at_stop_', 1)[1]} at the run's stop point "
                     "(where it ended before t1; the time series' saves end before it)"}
        ds[name].attrs = {**attrs, **ds[name].attrs}
    extra = {"Conventions": "CF-1.8", "title": title, "source": f"gflow {__version__}"}
    if config is not None:
        extra["config"] = json.dumps(_jsonable(config), sort_keys=True)
    ds.attrs = {**{k: v for k, v in extra.items() if v}, **ds.attrs}
    return ds


def write_results(out_dir, *, config: dict, summary: dict, dataset=None, figures=None) -> Path:
    """Write a results folder; returns its path. The dataset is written with
    :func:`describe_dataset`'s attributes (the config, the time axes' definition)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", config)
    if dataset is not None:
        write_dataset(out / "trajectory.nc", describe_dataset(
            dataset, config=config, title=str(summary.get("experiment", ""))))
    for name, fig in (figures or {}).items():
        write_figure(out / f"{name}.png", fig)
    # last: its presence marks a complete folder; it lists the figures (what a later
    # --overwrite removes)
    summary = {**summary, "figures": [f"{name}.png" for name in figures or {}]}
    write_json(out / "summary.json", summary)
    return out


def write_part(out_dir, index: int, ds, summary: dict | None = None) -> Path:
    """Write one finished point of a sweep to ``DIR/parts/NNNNN.nc`` (and its summary to
    ``NNNNN.json``, written after the data: its presence marks a complete point), so a long
    sweep's finished points are on disk before the whole sweep is."""
    path = Path(out_dir) / "parts" / f"{index:05d}.nc"
    write_dataset(path, ds)
    if summary is not None:
        write_json(path.with_suffix(".json"), summary)
    return path


def read_part(out_dir, index: int):
    """``(summary, dataset)`` of a finished sweep point, or ``None`` if it is not on disk
    or unreadable (a warning names the file; the point is then computed again)."""
    import xarray as xr

    path = Path(out_dir) / "parts" / f"{index:05d}.nc"
    meta = path.with_suffix(".json")
    if not (path.exists() and meta.exists()):
        return None
    try:
        return json.loads(meta.read_text()), xr.load_dataset(path, engine="h5netcdf")
    except Exception as e:  # noqa: BLE001 - any reader error means: recompute this point
        warnings.warn(f"sweep point {str(path)!r} is unreadable ({type(e).__name__}: {e}); "
                      "computing that point again.", stacklevel=2)
        return None


def remove_parts(out_dir) -> None:
    """Remove gflow's files in ``DIR/parts`` once the combined ``trajectory.nc`` is written
    (and the folder, if nothing else is in it)."""
    from . import resultsdir

    resultsdir.remove_parts(out_dir)


def read_results(out_dir) -> tuple[dict, dict, Any]:
    """``(config, summary, dataset)`` of a results folder; ``ValueError`` naming the file
    if one is missing or unreadable."""
    import xarray as xr

    out = Path(out_dir)
    if not out.is_dir():
        raise ValueError(f"{str(out)!r} is not a folder (give a results folder of gflow run).")
    got = []
    for name in ("config.json", "summary.json"):
        path = out / name
        if not path.is_file():
            raise ValueError(f"{str(path)!r} does not exist: {str(out)!r} is not a finished "
                             "gflow results folder.")
        try:
            obj = json.loads(path.read_text())
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise ValueError(f"{str(path)!r} is not valid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{str(path)!r} must hold a JSON object.")
        got.append(obj)
    config, summary = got
    nc = out / "trajectory.nc"
    ds = None
    if nc.exists():
        try:
            ds = xr.load_dataset(nc, engine="h5netcdf")
        except Exception as e:  # noqa: BLE001 - any reader error: a damaged file
            raise ValueError(f"{str(nc)!r} is unreadable (truncated or damaged: "
                             f"{type(e).__name__}: {e}); re-run with gflow run --config "
                             f"{out} --out NEW_FOLDER.") from None
    return config, summary, ds

"""Results on disk: ``config.json``, ``summary.json``, ``trajectory.nc`` and figures.

Every file is written atomically (a temporary file in the same folder, then
``os.replace``), so a results folder never holds a half-written file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["read_part", "read_results", "remove_parts", "write_dataset", "write_figure",
           "write_json", "write_part", "write_results"]


@contextlib.contextmanager
def _atomic(path: Path, suffix: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
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
    with _atomic(path, ".json") as tmp, open(tmp, "w") as f:
        json.dump(_jsonable(obj), f, indent=2, sort_keys=False)
        f.write("\n")


def write_dataset(path, ds) -> None:
    """Write an ``xarray.Dataset`` to netCDF (h5netcdf engine)."""
    path = Path(path)
    with _atomic(path, ".nc") as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")


def write_figure(path, fig) -> None:
    """Save a matplotlib figure as PNG and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with _atomic(path, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def write_results(out_dir, *, config: dict, summary: dict, dataset=None, figures=None) -> Path:
    """Write a results folder; returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", config)
    if dataset is not None:
        write_dataset(out / "trajectory.nc", dataset)
    for name, fig in (figures or {}).items():
        write_figure(out / f"{name}.png", fig)
    write_json(out / "summary.json", summary)  # last: its presence marks a complete folder
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
    """``(summary, dataset)`` of a finished sweep point, or ``None`` if it is not on disk."""
    import xarray as xr

    path = Path(out_dir) / "parts" / f"{index:05d}.nc"
    meta = path.with_suffix(".json")
    if not (path.exists() and meta.exists()):
        return None
    return json.loads(meta.read_text()), xr.load_dataset(path, engine="h5netcdf")


def remove_parts(out_dir) -> None:
    """Remove ``DIR/parts`` once the combined ``trajectory.nc`` is written."""
    parts = Path(out_dir) / "parts"
    if parts.is_dir():
        for p in [*parts.glob("*.nc"), *parts.glob("*.json")]:
            p.unlink()
        if not any(parts.iterdir()):
            parts.rmdir()


def read_results(out_dir) -> tuple[dict, dict, Any]:
    """``(config, summary, dataset)`` of a results folder."""
    import xarray as xr

    out = Path(out_dir)
    config = json.loads((out / "config.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    nc = out / "trajectory.nc"
    ds = xr.load_dataset(nc, engine="h5netcdf") if nc.exists() else None
    return config, summary, ds

"""Experiments: one module per research setting, each a thin composition of library pieces.

An experiment module defines

- ``Config``: a frozen dataclass of settings, every one with a default (and ``seed``);
- ``run(config, *, progress=False) -> Result``: the headline figures (``summary``) and the
  data behind them (an ``xarray.Dataset``);
- ``figures(dataset, config) -> {name: matplotlib Figure}``: plots drawn from the dataset
  alone, so ``gflow plot DIR`` can redraw them from disk.

Modules in this package are discovered by name; ``gflow list`` shows them.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import pkgutil
import typing
from types import ModuleType
from typing import Any

__all__ = ["Result", "coerce", "combine_points", "config_from_dict", "get", "grid",
           "grid_from_dict", "names", "parse_sets"]


@dataclasses.dataclass
class Result:
    """What an experiment returns: flat headline figures and the data behind them."""

    summary: dict[str, Any]
    dataset: Any  # xarray.Dataset


def names() -> list[str]:
    """Names of the available experiments."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get(name: str) -> ModuleType:
    """The experiment module called ``name``."""
    if name not in names():
        raise ValueError(f"unknown experiment {name!r}; available: {names()}")
    return importlib.import_module(f"{__name__}.{name}")


def _convert(raw: str, typ, key: str):
    origin = typing.get_origin(typ)
    if origin is tuple:
        (inner, *_) = typing.get_args(typ) or (str,)
        return tuple(_convert(r, inner, key) for r in raw.split(",") if r != "")
    if typ is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--set {key}={raw}: expected true or false.")
    try:
        if typ is int:
            return int(raw)
        if typ is float:
            return float(raw)
    except ValueError:
        raise ValueError(f"--set {key}={raw}: expected a {typ.__name__}.") from None
    return raw


def coerce(cls, key: str, value: Any):
    """``value`` (as read from JSON/TOML) as the type of setting ``key`` of ``cls``: lists
    become tuples, ints become floats where a float is expected; anything else of the
    wrong type is a ``ValueError``."""
    hints = typing.get_type_hints(cls)
    if key not in hints:
        raise ValueError(f"unknown setting {key!r}; valid settings: {sorted(hints)}")
    typ = hints[key]
    if typing.get_origin(typ) is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"setting {key}={value!r}: expected a list.")
        (inner, *_) = typing.get_args(typ) or (Any,)
        return tuple(v if inner is Any else _coerce_scalar(v, inner, key) for v in value)
    return _coerce_scalar(value, typ, key)


def _coerce_scalar(value, typ, key):
    if typ is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if typ is float and value in ("inf", "-inf"):  # how gflow.io writes infinities
        return float(value)
    if typ in (int, bool, str) and (type(value) is not typ):
        raise ValueError(f"setting {key}={value!r}: expected a {typ.__name__}.")
    if typ is float and not isinstance(value, float):
        raise ValueError(f"setting {key}={value!r}: expected a float.")
    return value


def config_from_dict(cls, values: dict[str, Any]):
    """Build ``cls`` from a dict (e.g. read from ``config.json``), rejecting unknown keys
    with the list of valid ones and values of the wrong type."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; valid settings: {sorted(fields)}")
    return cls(**{k: coerce(cls, k, v) for k, v in values.items()})


def grid_from_dict(cls, settings: dict[str, Any], sweep: dict[str, list] | None):
    """``(axes, configs)`` as :func:`grid` returns them, from a recorded config's
    ``settings`` and ``sweep`` tables."""
    base = config_from_dict(cls, settings)
    axes = {k: [coerce(cls, k, v) for v in vals] for k, vals in (sweep or {}).items()}
    points = [dict(zip(axes, vals, strict=True)) for vals in itertools.product(*axes.values())]
    return axes, [dataclasses.replace(base, **pt) for pt in points]


def parse_sets(cls, sets: list[str]):
    """Build a config of type ``cls`` from ``["key=value", ...]`` strings."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for s in sets:
        if "=" not in s:
            raise ValueError(f"--set expects key=value, got {s!r}.")
        key, raw = s.split("=", 1)
        key = key.strip()
        if key not in hints:
            raise ValueError(f"unknown setting {key!r}; valid settings: {sorted(hints)}")
        values[key] = _convert(raw.strip(), hints[key], key)
    return config_from_dict(cls, values)


def grid(cls, sets: list[str], seeds: int | None = None) -> tuple[dict[str, list], list]:
    """A sweep from ``--set key=v1,v2,...`` (list values) and ``--seeds N``.

    Returns ``(axes, configs)``: the swept settings with their values (``seed`` first,
    counting up from the configured seed) and one config per grid point, in row-major
    order. Settings whose type is a tuple take the comma list as one value.
    """
    hints = typing.get_type_hints(cls)
    base, axes = [], {}
    for s in sets:
        key, _, raw = s.partition("=")
        key = key.strip()
        if key in hints and typing.get_origin(hints[key]) is not tuple and "," in raw:
            axes[key] = [_convert(r.strip(), hints[key], key) for r in raw.split(",") if r.strip()]
        else:
            base.append(s)
    cfg = parse_sets(cls, base)
    if seeds is not None:
        if seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {seeds}.")
        axes = {"seed": [cfg.seed + i for i in range(seeds)], **axes}
    points = [dict(zip(axes, vals, strict=True)) for vals in itertools.product(*axes.values())]
    return axes, [dataclasses.replace(cfg, **pt) for pt in points]


def combine_points(datasets: list, axes: dict[str, list]):
    """Stack per-point datasets of a sweep into one dataset with the swept settings as
    leading dims (arrays of unequal size, e.g. over neurons, are NaN-padded)."""
    import numpy as np
    import pandas as pd
    import xarray as xr

    keys = list(itertools.product(*axes.values()))
    index = pd.MultiIndex.from_tuples(keys, names=list(axes))
    # index every bare dim (neuron, input, ...) so that outer alignment pads with NaN
    datasets = [ds.assign_coords({d: np.arange(n) for d, n in ds.sizes.items()
                                  if d not in ds.coords}) for ds in datasets]
    stacked = xr.concat(datasets, dim="point", join="outer", combine_attrs="drop_conflicts")
    stacked = stacked.assign_coords(xr.Coordinates.from_pandas_multiindex(index, "point"))
    return stacked.unstack("point").transpose(*axes, ...)

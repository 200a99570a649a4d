"""Experiments: one module per research setting, each a thin composition of library pieces.

An experiment module defines

- ``Config``: a frozen dataclass of settings, every one with a default (and ``seed``);
- ``run(config, *, progress=False) -> Result``: the headline figures (``summary``) and the
  data behind them (an ``xarray.Dataset``);
- ``figures(dataset, config) -> {name: matplotlib Figure}``: plots drawn from the dataset
  alone, so ``gflow plot DIR`` can redraw them from disk.

Modules in this package are discovered by name; ``gflow list`` shows them.

Settings given on the command line or in a config file are checked before anything is
computed or written (:func:`check_config`): the type of each setting, finite floats (unless
the default itself is infinite), integers within int64, and -- for every experiment with
both -- ``batch_size <= n``, which would otherwise fail only at the first SGD run.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import math
import pkgutil
import typing
from types import ModuleType
from typing import Any

__all__ = ["Result", "check_config", "coerce", "combine_points", "config_from_dict", "get",
           "grid", "grid_from_dict", "names", "parse_sets"]


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


_INT64 = 2**63


def _check_value(key: str, value, default) -> None:
    if isinstance(value, tuple):
        for v in value:
            _check_value(key, v, None)
        return
    if isinstance(value, bool):
        return
    if isinstance(value, float) and not math.isfinite(value) \
            and not (isinstance(default, float) and math.isinf(default) and math.isinf(value)):
        raise ValueError(f"setting {key}={value!r}: must be a finite number.")
    if isinstance(value, int) and not -_INT64 <= value < _INT64:
        raise ValueError(f"setting {key}={value!r}: out of range (an integer below 2**63).")


def check_config(cfg) -> None:
    """Raise ``ValueError`` naming the setting for values that would fail only later:
    non-finite floats (unless the default is infinite), integers beyond int64, and
    ``batch_size > n`` (SGD needs at most n samples per batch)."""
    for f in dataclasses.fields(cfg):
        _check_value(f.name, getattr(cfg, f.name), f.default)
    batch, n = getattr(cfg, "batch_size", None), getattr(cfg, "n", None)
    if isinstance(batch, int) and isinstance(n, int) and batch > n:
        raise ValueError(f"setting batch_size={batch} is larger than n={n} (the number of "
                         "training samples); lower batch_size or raise n.")


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
    for k, vals in axes.items():
        _check_axis(vals, f"sweep {k}")
    return axes, _points(base, axes)


def _check_axis(vals: list, where: str) -> None:
    if not vals:
        raise ValueError(f"{where}: no values given.")
    seen = []
    for v in vals:
        if v in seen:
            raise ValueError(f"{where}: the value {v!r} is given twice; each point of a "
                             "sweep must be distinct.")
        seen.append(v)


def _points(base, axes: dict[str, list]) -> list:
    points = [dataclasses.replace(base, **dict(zip(axes, vals, strict=True)))
              for vals in itertools.product(*axes.values())]
    for cfg in [base, *points]:
        check_config(cfg)
    return points


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
            if key in axes:
                raise ValueError(f"--set {key}: given twice as a sweep.")
            axes[key] = [_convert(r.strip(), hints[key], key) for r in raw.split(",") if r.strip()]
            _check_axis(axes[key], f"--set {key}={raw}")
        else:
            base.append(s)
    cfg = parse_sets(cls, base)
    if seeds is not None:
        if seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {seeds}.")
        if "seed" in axes:
            raise ValueError("--seeds N and a sweep over seed (--set seed=a,b,...) exclude "
                             "each other: give one of them.")
        axes = {"seed": [cfg.seed + i for i in range(seeds)], **axes}
    return axes, _points(cfg, axes)


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

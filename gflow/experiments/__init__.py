"""Experiments: one module per research setting, each a thin composition of library pieces.

An experiment module defines

- ``Config``: a frozen dataclass of typed settings (a :class:`Settings`), every one with a
  default (and ``seed``);
- ``run(config, *, progress=False) -> Result``: the headline figures (``summary``) and the
  data behind them (an ``xarray.DataTree``, one group per part or dynamics: the layout of
  ``trajectory.nc``, :mod:`gflow.io`'s "Results on disk");
- ``figures(tree, config) -> {name: matplotlib Figure}``: plots drawn from the tree alone
  (as :func:`gflow.io.read_trajectory` reads it back), so ``gflow plot DIR`` can redraw
  them from disk.

Modules in this package are discovered by name; ``gflow list`` shows them and ``gflow
describe NAME`` (:func:`describe`) explains one: its docstring, each setting's meaning (the
``Attributes:`` section of its ``Config`` docstring, one ``name: text`` entry per setting)
and its typical run time (the module's ``RUN_TIME``, as measured).

``Config`` derives from :class:`Settings` and declares each setting's constraints with
:func:`setting` (bounds, choices, multiples; a bound may name another setting, as
``batch_size <= n``). A config checks itself when it is built, so settings given in Python,
on the command line (``--set key=value``, ``key=v1,v2`` sweeps) or in a config file are
checked by the same rules, with the same messages (``"<experiment>: <setting>=<value>:
..."``), before anything is computed or written (:mod:`gflow.experiments._config`).
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import pkgutil
import typing
from types import ModuleType
from typing import Any

from ._claims import VERDICTS, check_claims, claim, from_bound, from_keys, from_law, tally
from ._config import Settings, check_config, coerce, experiment_name, from_text, setting

__all__ = ["VERDICTS", "Result", "Settings", "check_claims", "check_config", "claim", "coerce",
           "combine_points", "config_from_dict", "describe", "from_bound", "from_keys", "from_law",
           "get",
           "grid", "grid_from_dict", "listing", "names", "parse_sets", "setting", "setting_docs",
           "tally"]


@dataclasses.dataclass
class Result:
    """What an experiment returns: flat headline figures and the data behind them
    (``dataset``: ``{group: xarray.Dataset}`` or an ``xarray.DataTree``; stored as the
    tree :func:`gflow.io.as_tree` makes of it)."""

    summary: dict[str, Any]
    dataset: Any  # xarray.DataTree

    def __post_init__(self):
        from gflow.io import as_tree

        self.dataset = as_tree(self.dataset)


def names() -> list[str]:
    """Names of the available experiments."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get(name: str) -> ModuleType:
    """The experiment module called ``name``."""
    if name not in names():
        raise ValueError(f"unknown experiment {name!r}; available: {names()}")
    return importlib.import_module(f"{__name__}.{name}")


def setting_docs(cls) -> dict[str, str]:
    """``{setting: meaning}`` from the ``Attributes:`` section of ``cls``'s docstring
    (google style: ``name: text``, continued on deeper-indented lines)."""
    import inspect

    docs: dict[str, str] = {}
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    if "Attributes:" not in lines:
        return docs
    key, indent = None, None
    for line in lines[lines.index("Attributes:") + 1:]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if depth == 0:
            break  # the next section
        if indent is None:
            indent = depth
        name, colon, text = line.strip().partition(":")
        if depth == indent and colon and name.isidentifier():
            key = name
            docs[key] = text.strip()
        elif key is not None:
            docs[key] += " " + line.strip()
    return docs


def listing() -> str:
    """What ``gflow list`` prints: each experiment's first docstring line and its settings
    with their defaults."""
    out = []
    for name in names():
        mod = get(name)
        out.append(f"{name}: {(mod.__doc__ or '').strip().splitlines()[0]}")
        out += [f"    {f.name} = {f.default!r}" for f in dataclasses.fields(mod.Config)]
    return "\n".join(out)


def describe(name: str) -> str:
    """What ``gflow describe NAME`` prints: the experiment's docstring, its typical run time
    and each setting with its default, its constraints and its meaning."""
    import inspect

    from ._config import Rule

    mod = get(name)
    docs = setting_docs(mod.Config)
    out = [f"{name}", "", inspect.cleandoc(mod.__doc__ or ""), "",
           f"Typical run time of the defaults: {getattr(mod, 'RUN_TIME', 'not measured')}.",
           "", f"Settings (gflow run {name} --set NAME=VALUE):"]
    for f in dataclasses.fields(mod.Config):
        rule = f.metadata.get("rule", Rule())
        limits = [f"{sym} {getattr(rule, op)}" for op, sym in
                  (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
                  if getattr(rule, op) is not None]
        if rule.choices is not None:
            limits.append(f"one of {list(rule.choices)}")
        if rule.multiple_of is not None:
            limits.append(f"multiple of {rule.multiple_of}")
        head = f"  {f.name} = {f.default!r}" + (f"  ({', '.join(limits)})" if limits else "")
        out += [head, f"      {docs.get(f.name, '(undocumented)')}"]
    return "\n".join(out)


def config_from_dict(cls, values: dict[str, Any]):
    """Build ``cls`` from a dict (e.g. read from ``config.json``), rejecting unknown keys
    with the list of valid ones and values of the wrong type (as ``cls(**values)`` does)."""
    return cls(**values)


def _check_axis(cls, vals: list, where: str) -> None:
    if not vals:
        raise ValueError(f"{experiment_name(cls)}: {where}: no values given.")
    seen = []
    for v in vals:
        if v in seen:
            raise ValueError(f"{experiment_name(cls)}: {where}: the value {v!r} is given "
                             "twice; each point of a sweep must be distinct.")
        seen.append(v)


def _points(cls, values: dict[str, Any], axes: dict[str, list]) -> list:
    """One config per grid point (row-major); the first point's settings are checked (and
    reported) before any other point is built."""
    base = config_from_dict(cls, {**values, **{k: v[0] for k, v in axes.items()}})
    return [dataclasses.replace(base, **dict(zip(axes, vals, strict=True)))
            for vals in itertools.product(*axes.values())] if axes else [base]


def grid_from_dict(cls, settings: dict[str, Any], sweep: dict[str, list] | None):
    """``(axes, configs)`` as :func:`grid` returns them, from a recorded config's
    ``settings`` and ``sweep`` tables."""
    axes = {}
    for k, vals in (sweep or {}).items():
        if not isinstance(vals, list):
            raise ValueError(f"{experiment_name(cls)}: sweep {k}: expected a list of values.")
        axes[k] = [coerce(cls, k, v) for v in vals]
        _check_axis(cls, axes[k], f"sweep {k}")
    return axes, _points(cls, settings, axes)


def parse_sets(cls, sets: list[str]):
    """Build a config of type ``cls`` from ``["key=value", ...]`` strings."""
    return _points(cls, _parse(cls, sets), {})[0]


def _parse(cls, sets: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for s in sets:
        if "=" not in s:
            raise ValueError(f"{experiment_name(cls)}: --set expects key=value, got {s!r}.")
        key, raw = s.split("=", 1)
        values[key.strip()] = from_text(cls, key.strip(), raw)
    return values


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
                raise ValueError(f"{experiment_name(cls)}: --set {key}: given twice as a sweep.")
            axes[key] = from_text(cls, key, raw, sweep=True)
            _check_axis(cls, axes[key], f"--set {key}={raw}")
        else:
            base.append(s)
    values = _parse(cls, base)
    if seeds is not None:
        if seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {seeds}.")
        if "seed" in axes:
            raise ValueError("--seeds N and a sweep over seed (--set seed=a,b,...) exclude "
                             "each other: give one of them.")
        seed = values.get("seed", cls.__dataclass_fields__["seed"].default)
        axes = {"seed": [seed + i for i in range(seeds)], **axes}
    return axes, _points(cls, values, axes)


def combine_points(datasets: list, axes: dict[str, list]):
    """Stack per-point results of a sweep (trees of the same groups, :func:`gflow.io.as_tree`)
    into one tree whose every group has the swept settings as leading dims (arrays of
    unequal size, e.g. over neurons, are NaN-padded)."""
    from gflow.io import as_tree

    trees = [as_tree(ds) for ds in datasets]
    names = list(trees[0].children)
    for i, t in enumerate(trees):
        if list(t.children) != names:
            raise ValueError(f"sweep point {i} has the groups {list(t.children)}, point 0 "
                             f"{names}: every point must have the same groups.")
    return as_tree({g: _combine_group([t[g].to_dataset() for t in trees], axes)
                    for g in names})


def _combine_group(datasets: list, axes: dict[str, list]):
    import numpy as np
    import pandas as pd
    import xarray as xr

    keys = list(itertools.product(*axes.values()))
    index = pd.MultiIndex.from_tuples(keys, names=list(axes))
    # index every bare dim (neuron, input, ...) so that outer alignment pads with NaN
    datasets = [ds.assign_coords({d: np.arange(n) for d, n in ds.sizes.items()
                                  if d not in ds.coords}) for ds in datasets]
    neurons = [ds.sizes.get("neuron", 0) for ds in datasets]
    if len(set(neurons)) > 1:  # nets of several widths: say which neurons each point has
        datasets = [ds if "neuron_valid" in ds else ds.assign(neuron_valid=(
            "neuron", np.ones(n, bool))) for ds, n in zip(datasets, neurons, strict=True)]
    stacked = xr.concat(datasets, dim="point", join="outer", combine_attrs="drop_conflicts")
    if "neuron_valid" in stacked:
        stacked["neuron_valid"] = stacked["neuron_valid"].fillna(False).astype(bool)
    stacked = stacked.assign_coords(xr.Coordinates.from_pandas_multiindex(index, "point"))
    return stacked.unstack("point").transpose(*axes, ...)

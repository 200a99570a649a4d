"""Results on disk: ``config.json``, ``summary.json``, ``trajectory.nc`` and figures.

Results on disk
---------------
``trajectory.nc`` (netCDF-4, written by :func:`write_results`, read back in one call by
:func:`read_trajectory` as an ``xarray.DataTree``) has one layout for every experiment:

- the root group ``/`` holds attributes only: ``Conventions`` (CF-1.8), ``title`` (the
  experiment), ``source`` (gflow's version), ``config`` (the run's config as JSON) and
  ``groups`` (the parts, in order);
- one child group per part of the experiment or per dynamics (``/gf``, ``/adam``;
  ``/near_init``, ``/scaling``): a self-contained dataset whose variables and dims carry no
  group-name prefix;
- a group that is a time series has its own coordinate ``time``: gradient-flow time t; a
  discrete method's iterate k sits at ``t = k * lr`` (its attributes say so,
  :data:`TIME_ATTRS`). Runs of different dynamics, saved at different times, are in
  different groups, never NaN-merged onto one grid; NaN in a group marks saves after a
  run stopped (``status``, ``t_stop`` say why and when) or entries that do not exist
  (then a boolean mask says which are valid, e.g. ``neuron_valid``);
- dims are named for what they are (``seed``, ``width``, ``member``, ``neuron``,
  ``input``, ``layer``, ...), and variables carry CF
  ``long_name``/``units`` where gflow knows them (:func:`describe_dataset`);
- a CLI sweep (``--set a=1,2``) stacks every group over the swept settings, which become
  its leading dims.

``summary.json`` is plain JSON: every dict key is a string (:func:`json_key`: a number
that is an integer is written as one, e.g. a width ``64`` or ``64.0`` as ``"64"``; other
floats as Python writes them, ``0.1`` as ``"0.1"``), NaN is ``null`` and infinities are
``"inf"``/``"-inf"``.

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

__all__ = ["MASK_ATTRS", "TIME_ATTRS", "VARIABLE_ATTRS", "as_tree", "atomic_path",
           "default_mode", "describe_dataset", "describe_tree", "groups", "json_key",
           "neuron_mask", "read_part", "read_results", "read_trajectory", "remove_parts",
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


def json_key(k) -> str:
    """A dict key as ``summary.json`` writes it: strings as they are, numbers that are
    integers as integers (``64``, ``64.0``, ``np.int64(64)`` -> ``"64"``), other numbers as
    Python writes them (``0.1`` -> ``"0.1"``), anything else by ``str``."""
    if isinstance(k, str):
        return k
    if isinstance(k, bool | np.bool_):
        return str(bool(k)).lower()
    if isinstance(k, int | float | np.integer | np.floating):
        k = k.item() if isinstance(k, np.generic) else k
        if isinstance(k, float) and k.is_integer():
            return str(int(k))
        return str(k)
    return str(k)


def _jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return _jsonable(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {json_key(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray | np.generic) or hasattr(x, "__array__"):
        arr = np.asarray(x)
        return _jsonable(arr.tolist()) if arr.ndim else _jsonable(arr.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def write_json(path, obj) -> None:
    """Write ``obj`` as JSON (numpy values converted; every dict key a string,
    :func:`json_key`; NaN -> null)."""
    path = Path(path)
    with atomic_path(path, ".json") as tmp, open(tmp, "w") as f:
        json.dump(_jsonable(obj), f, indent=2, sort_keys=False)
        f.write("\n")


def write_dataset(path, ds) -> None:
    """Write an ``xarray.Dataset`` or ``xarray.DataTree`` (its groups) to netCDF (h5netcdf
    engine)."""
    path = Path(path)
    with atomic_path(path, ".nc") as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")


def as_tree(groups):
    """The results layout (see the module's "Results on disk") as an ``xarray.DataTree``:
    ``groups`` is ``{name: xarray.Dataset}`` (in order) or a tree of such groups under its
    root. ``ValueError`` for anything else, a bad group name, a root with data, or a
    variable or dim whose name starts with its group's name (a prefix the group already
    says)."""
    import xarray as xr

    if isinstance(groups, xr.DataTree):
        root = groups
        if root.ds.data_vars or root.ds.coords:
            raise ValueError("a results tree's root holds attributes only: put its variables "
                             f"{sorted(map(str, root.ds.variables))} in a group.")
        if any(node.children for node in root.children.values()):
            raise ValueError("a results tree has one level of groups under its root.")
        groups, attrs = {k: v.to_dataset() for k, v in root.children.items()}, dict(root.attrs)
    elif isinstance(groups, dict):
        attrs = {}
    else:
        raise ValueError("a results dataset must be an xarray.DataTree or a dict {group name: "
                         f"xarray.Dataset}}, got {type(groups).__name__}; wrap one dataset as "
                         "{'NAME': ds}.")
    if not groups:
        raise ValueError("a results dataset needs at least one group.")
    for name, ds in groups.items():
        if not isinstance(ds, xr.Dataset):
            raise ValueError(f"group {name!r} must be an xarray.Dataset, got "
                             f"{type(ds).__name__}.")
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"group name {name!r} must be an identifier (letters, digits, _).")
        prefixed = [str(v) for v in [*ds.variables, *ds.dims] if str(v).startswith(f"{name}_")]
        if prefixed:
            raise ValueError(f"group {name!r}: {sorted(set(prefixed))} repeat the group's name "
                             "as a prefix; name them for what they are.")
    tree = xr.DataTree.from_dict(dict(groups))
    tree.attrs = {**attrs, "groups": ",".join(groups)}
    return tree


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


#: attributes of a boolean mask over padded entries (:func:`neuron_mask`)
MASK_ATTRS = {"long_name": "whether the entry exists: nets of different widths are stored "
              "padded to the largest; padded neurons (False) hold zeros or NaN and are no "
              "part of the net", "flag_values": "0 1", "flag_meanings": "padding neuron"}


def describe_dataset(ds, *, config: dict | None = None, title: str = ""):
    """``ds`` with self-describing attributes (CF conventions where they apply): the time
    coordinate ``time`` (and a per-run time variable ``t``) gets :data:`TIME_ATTRS`, each
    variable named in :data:`VARIABLE_ATTRS` its ``long_name``, a boolean ``*_valid`` mask
    :data:`MASK_ATTRS`, a variable ``at_stop_<v>`` says it holds ``v`` at the run's stop
    point, and the dataset gets ``Conventions``, ``title``, ``source`` (gflow's version) and
    the run's ``config`` (JSON), where given. Attributes already set are kept."""
    from . import __version__

    ds = ds.copy()
    for name in list(ds.coords) + list(ds.data_vars):
        base, attrs = str(name), {}
        if base in ("time", "t") and np.issubdtype(ds[name].dtype, np.floating):
            attrs = TIME_ATTRS
        elif base in VARIABLE_ATTRS:
            attrs = VARIABLE_ATTRS[base]
        elif base.endswith("_valid") and ds[name].dtype == bool:
            attrs = MASK_ATTRS
        elif "at_stop_" in base:
            attrs = {"long_name": f"{base.split('at_stop_', 1)[1]} at the run's stop point "
                     "(where it ended before t1; the time series' saves end before it)"}
        ds[name].attrs = {**attrs, **ds[name].attrs}
    extra = {"Conventions": "CF-1.8", "title": title, "source": f"gflow {__version__}"}
    if config is not None:
        extra["config"] = json.dumps(_jsonable(config), sort_keys=True)
    ds.attrs = {**{k: v for k, v in extra.items() if v}, **ds.attrs}
    return ds


def describe_tree(groups, *, config: dict | None = None, title: str = ""):
    """:func:`as_tree` of ``groups`` with :func:`describe_dataset`'s attributes on every
    group's variables, and the file's (``Conventions``, ``title``, ``source``, ``config``)
    on the root."""
    import xarray as xr

    tree = as_tree(groups)
    root = describe_dataset(xr.Dataset(attrs=tree.attrs), config=config, title=title)
    out = xr.DataTree.from_dict({name: describe_dataset(node.to_dataset())
                                 for name, node in tree.children.items()})
    out.attrs = root.attrs
    return out


def groups(tree) -> dict:
    """``{name: xarray.Dataset}`` of a results tree's groups (or of ``{name: Dataset}``
    itself), in order."""
    return {k: v.to_dataset() for k, v in as_tree(tree).children.items()}


def neuron_mask(widths, neurons: int):
    """``(*widths.shape, neurons)`` booleans: neuron ``j`` exists in a net of width
    ``widths[...]`` (``j < width``), as the variable ``neuron_valid`` of a group that
    stores nets of several widths padded to the largest (:data:`MASK_ATTRS`)."""
    widths = np.asarray(widths)
    return np.arange(neurons) < widths[..., None]


def _load_tree(path):
    import xarray as xr

    return xr.load_datatree(path, engine="h5netcdf")


def read_trajectory(path):
    """A results file (``trajectory.nc``, or the results folder holding it) as an
    ``xarray.DataTree`` in memory: ``tree["gf"]`` is a group, ``tree["gf"]["loss"]`` a
    variable, ``tree["gf"].to_dataset()`` a plain dataset (the layout: the module's
    "Results on disk"). ``ValueError`` naming the file if it is missing, unreadable or
    not in the layout."""
    path = Path(path)
    if path.is_dir():
        path = path / "trajectory.nc"
    if not path.is_file():
        raise ValueError(f"{str(path)!r} does not exist (give a results folder of gflow run "
                         "or its trajectory.nc).")
    try:
        tree = _load_tree(path)
    except Exception as e:  # noqa: BLE001 - any reader error: a damaged file
        raise ValueError(f"{str(path)!r} is unreadable (truncated or damaged: "
                         f"{type(e).__name__}: {e}).") from None
    if not tree.children:
        raise ValueError(f"{str(path)!r} has no groups: it is not a gflow results file of this "
                         "version (one group per part, see gflow.io).")
    return tree


def write_results(out_dir, *, config: dict, summary: dict, dataset=None, figures=None) -> Path:
    """Write a results folder; returns its path. ``dataset`` (``{group: Dataset}`` or an
    ``xarray.DataTree``, :func:`as_tree`) is written as ``trajectory.nc`` with
    :func:`describe_tree`'s attributes (the config, the time axes' definition)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", config)
    if dataset is not None:
        write_dataset(out / "trajectory.nc", describe_tree(
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
    sweep's finished points are on disk before the whole sweep is. ``ds``: the point's
    groups (:func:`as_tree`)."""
    path = Path(out_dir) / "parts" / f"{index:05d}.nc"
    write_dataset(path, as_tree(ds))
    if summary is not None:
        write_json(path.with_suffix(".json"), summary)
    return path


def read_part(out_dir, index: int):
    """``(summary, tree)`` of a finished sweep point, or ``None`` if it is not on disk
    or unreadable (a warning names the file; the point is then computed again)."""
    path = Path(out_dir) / "parts" / f"{index:05d}.nc"
    meta = path.with_suffix(".json")
    if not (path.exists() and meta.exists()):
        return None
    try:
        return json.loads(meta.read_text()), _load_tree(path)
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
    """``(config, summary, tree)`` of a results folder (the tree: :func:`read_trajectory`,
    ``None`` without ``trajectory.nc``); ``ValueError`` naming the file if one is missing or
    unreadable."""
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
            ds = read_trajectory(nc)
        except ValueError as e:
            raise ValueError(f"{e} Re-run with gflow run --config {out} --out NEW_FOLDER.") \
                from None
    return config, summary, ds

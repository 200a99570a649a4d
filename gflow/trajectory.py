"""``Trajectory``: what a simulation returns -- times, observables, parameters, status.

A trajectory holds host (numpy) arrays, with one shape for single runs and ensembles
alike: a single run has ``times`` of shape (S,), observables of shape (S, ...) and 0-d
``status`` and ``t_stop`` arrays; an ensemble (or a sweep) has leading batch axes
(``batch_dims``, e.g. ``("member",)``) on every observable, status and stop time.
:func:`stack` puts trajectories on a labelled grid (what :func:`gflow.sweep` returns).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

__all__ = ["Trajectory", "combine", "stack"]

#: relative slack when comparing save times (float64) with a stop time (the solve's dtype)
_STOP_SLACK = 1e-6

_PARAM_DIMS = {"W": ("neuron", "input"), "b": ("neuron",), "a": ("neuron",)}


def _param_fields(params) -> dict[str, np.ndarray]:
    if params is None:
        return {}
    if dataclasses.is_dataclass(params):
        items = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
    else:
        items = dict(params)
    out = {}
    for k, v in items.items():
        if isinstance(v, tuple | list):  # per-layer fields (MLP): Ws -> Ws_0, Ws_1, ...
            out |= {f"{k}_{i}": np.asarray(x) for i, x in enumerate(v) if x is not None}
        elif v is not None:
            out[k] = np.asarray(v)
    return out


@dataclasses.dataclass
class Trajectory:
    """Result of :func:`gflow.simulate` (or of an ensemble, with leading batch axes).

    Attributes:
        times: save times, (S,) -- for discrete dynamics the actual step times.
        observables: name -> array of shape (*batch, S, *obs_shape).
        params0, params_final: initial and final parameters.
        params: parameter snapshots at the save times (only with ``save_params=True``).
        stats: solver statistics (``num_steps``, ``num_rejected_steps``, ``grad_evals``...).
        status: why each run ended: ``"completed"``, ``"stop_loss"``, ``"stop_grad"``,
            ``"diverged"``, ``"max_steps"`` or ``"solver_failed"``. Always a numpy string
            array of the batch shape -- 0-d for a single run, so ``traj.status ==
            "completed"`` and ``str(traj.status)`` work for one run as for many.
        t_stop: the time each run ended (``t1``, or when it stopped): a float64 array of
            the batch shape (0-d for a single run).
        dynamics: a description of the dynamics that produced it.
        obs_dims: name -> names of each observable's trailing axes.
        batch_dims: names of the leading batch axes (``()`` for a single run).
        at_stop: name -> (*batch, *obs_shape) observables at each run's end point where it
            ended before ``t1`` (an ensemble's saves stop at the last one before; a single
            run's trajectory ends at the point itself); empty if not recorded.
    """

    times: np.ndarray
    observables: dict[str, np.ndarray]
    params0: Any
    params_final: Any
    stats: dict[str, Any]
    status: Any
    t_stop: Any
    dynamics: str = ""
    params: Any = None
    obs_dims: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    batch_dims: tuple[str, ...] = ()
    coords: dict[str, Any] = dataclasses.field(default_factory=dict)
    at_stop: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.status = np.asarray(self.status, dtype=str)
        self.t_stop = np.asarray(self.t_stop, dtype=np.float64)

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.observables[name]
        except KeyError:
            raise KeyError(
                f"{name!r} was not observed; available: {sorted(self.observables)}"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self.observables

    def keys(self):
        return self.observables.keys()

    @property
    def ok(self) -> bool:
        """Whether every run completed or stopped on a requested condition."""
        return bool(np.all(np.isin(np.asarray(self.status), ("completed", "stop_loss",
                                                            "stop_grad"))))

    def __repr__(self) -> str:
        nsaves = np.shape(self.times)[-1] if np.ndim(self.times) else 0
        obs = sorted(self.observables)
        if self.status.ndim == 0:
            return (f"Trajectory({self.dynamics}, status={str(self.status)!r}, "
                    f"t_stop={float(self.t_stop):.6g}, saves={nsaves}, observables={obs})")
        batch = ", ".join(f"{d}={n}" for d, n in zip(self.batch_dims, self.status.shape,
                                                      strict=False))
        names, counts = np.unique(self.status, return_counts=True)
        status = {str(k): int(c) for k, c in zip(names, counts, strict=True)}
        return (f"Trajectory({self.dynamics}, {batch}, status={status}, t_stop in "
                f"[{np.nanmin(self.t_stop):.6g}, {np.nanmax(self.t_stop):.6g}], "
                f"saves={nsaves}, observables={obs})")

    def save(self, path, *, overwrite: bool = False) -> None:
        """Write this trajectory (:meth:`to_xarray`: observables, initial and final
        parameters, status, stop times, stats; not the snapshots of ``save_params``) to
        the netCDF file ``path``. An existing file is refused unless ``overwrite=True``."""
        from pathlib import Path

        from .io import write_dataset

        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists: pass overwrite=True to replace it, or "
                                  "choose another path.")
        write_dataset(path, self.to_xarray())

    @classmethod
    def load(cls, path) -> Trajectory:
        """Read a trajectory written by :meth:`save`."""
        import xarray as xr

        with xr.open_dataset(path, engine="h5netcdf") as ds:
            return cls.from_xarray(ds.load())

    def reached(self) -> np.ndarray:
        """(*batch, S) booleans: which saves each run reached (saves after a stop are
        missing -- NaN -- in an ensemble; a single run ends at its stop point)."""
        times = np.asarray(self.times, dtype=np.float64)
        shape = self.status.shape + times.shape[-1:]
        times = np.broadcast_to(times, shape)
        done = (self.status == "completed")[..., None]
        return done | (times <= self.t_stop[..., None] * (1 + _STOP_SLACK))

    def final(self, name: str | None = None):
        """Observable ``name`` (all of them, as a dict, when ``None``) where each run ended:
        at its stop point if a stop criterion or ``max_steps`` ended it before ``t1``
        (``at_stop``, where recorded), else at its last reached save (a diverged or failed
        run's last finite state): shape (*batch, *obs_shape)."""
        if name is None:
            return {k: self.final(k) for k in self.observables}
        v = np.asarray(self[name])
        nb = self.status.ndim
        reached = self.reached()
        last = np.where(reached, np.arange(reached.shape[-1]), -1).max(axis=-1)
        idx = np.maximum(last, 0).reshape(last.shape + (1,) * (v.ndim - nb))
        out = np.take_along_axis(v, idx, axis=nb).squeeze(axis=nb)
        if np.issubdtype(out.dtype, np.floating):
            out = np.where(np.reshape(last >= 0, last.shape + (1,) * (out.ndim - nb)), out,
                           np.nan)
        if name in self.at_stop:  # a valid end point: not where a run diverged or failed
            early = np.isin(self.status, ("stop_loss", "stop_grad", "max_steps"))
            early = np.reshape(early, last.shape + (1,) * (out.ndim - nb))
            out = np.where(early, np.asarray(self.at_stop[name], out.dtype), out)
        return out

    def without_params(self) -> Trajectory:
        """This trajectory without parameters (initial, final, snapshots): what stacks
        across nets of different shapes."""
        return dataclasses.replace(self, params0=None, params_final=None, params=None)

    # -- xarray -----------------------------------------------------------------------
    def to_xarray(self):
        """An ``xarray.Dataset``: one variable per observable over ``(*batch, time, ...)``,
        the initial/final parameters, status and stop time, solver stats."""
        import xarray as xr

        b = tuple(self.batch_dims)
        times = np.asarray(self.times)
        coords: dict[str, Any] = dict(self.coords)
        for i, dim in enumerate(b):  # an unlabelled batch axis (an ensemble's member) is
            coords.setdefault(dim, np.arange(np.shape(self.status)[i]))  # numbered from 0
        if times.ndim == 1:
            coords["time"] = times
        else:  # per-member actual times
            coords["time"] = np.arange(times.shape[-1])
            coords["t"] = (b[-times.ndim + 1:] + ("time",), times)
        data = {}
        for k, v in self.observables.items():
            v = np.asarray(v)
            extra = v.ndim - len(b) - 1
            dims = tuple(self.obs_dims.get(k, ()))
            if len(dims) != extra:
                dims = tuple(f"{k}_dim{i}" for i in range(extra))
            data[k] = (b + ("time",) + dims, v)
            if b and k in self.at_stop:
                data[f"at_stop_{k}"] = (b + dims, np.asarray(self.at_stop[k]))
        for prefix, p in (("params0", self.params0), ("params_final", self.params_final)):
            for name, arr in _param_fields(p).items():
                generic = tuple(f"{name}_dim{i}" for i in range(arr.ndim - len(b)))
                pd = _PARAM_DIMS.get(name, generic)
                data[f"{prefix}_{name}"] = (b + pd, arr)
        attrs = {"dynamics": self.dynamics}
        if b:
            data["status"] = (b, np.asarray(self.status).astype(str))
            data["t_stop"] = (b, np.asarray(self.t_stop, dtype=float))
            for k, v in self.stats.items():
                if v is not None:
                    data[f"stats_{k}"] = (b, np.asarray(v))
        else:
            attrs.update(status=str(self.status), t_stop=float(self.t_stop))
            attrs.update({f"stats_{k}": v for k, v in self.stats.items() if v is not None})
        return xr.Dataset(data, coords=coords, attrs=attrs)

    @classmethod
    def from_xarray(cls, ds) -> Trajectory:
        """Rebuild a trajectory (without snapshots) from :meth:`to_xarray`'s output."""
        from .nets import TwoLayerParams

        times = np.asarray(ds["t"].values if "t" in ds.coords else ds["time"].values)
        batch = tuple(d for d in ds["status"].dims) if "status" in ds else ()
        obs, dims, params = {}, {}, {"params0": {}, "params_final": {}}
        at_stop = {k[8:]: np.asarray(v.values) for k, v in ds.data_vars.items()
                   if k.startswith("at_stop_")}
        for k, v in ds.data_vars.items():
            if k.startswith("at_stop_"):
                continue
            if k.startswith(("params0_", "params_final_")):
                prefix, name = k.rsplit("_", 1)
                params[prefix][name] = np.asarray(v.values)
            elif k.startswith("stats_") or k in ("status", "t_stop"):
                continue
            else:
                obs[k] = np.asarray(v.values)
                dims[k] = tuple(v.dims[len(batch) + 1:])

        def rebuild(fields):
            if set(fields) >= {"W", "a"}:
                return TwoLayerParams(W=fields["W"], b=fields.get("b"), a=fields["a"])
            return fields or None

        if batch:
            status = np.asarray(ds["status"].values)
            t_stop = np.asarray(ds["t_stop"].values)
            stats = {k[6:]: np.asarray(v.values) for k, v in ds.data_vars.items()
                     if k.startswith("stats_")}
        else:
            status, t_stop = ds.attrs["status"], ds.attrs["t_stop"]
            stats = {k[6:]: v for k, v in ds.attrs.items() if k.startswith("stats_")}
        return cls(times=times, observables=obs, params0=rebuild(params["params0"]),
                   params_final=rebuild(params["params_final"]), stats=stats, status=status,
                   t_stop=t_stop, dynamics=ds.attrs.get("dynamics", ""), obs_dims=dims,
                   batch_dims=batch, at_stop=at_stop)


def combine(trajs: dict[tuple, Trajectory], dims: tuple[str, ...]):
    """Stack single-run trajectories on a labelled grid into one ``xarray.Dataset``.

    ``trajs`` maps label tuples (one entry per name in ``dims``) to trajectories saved
    at the same times. Status, stop time and solver stats become variables over ``dims``.
    """
    import pandas as pd
    import xarray as xr

    def as_vars(t: Trajectory):
        ds = t.to_xarray()
        scal = {k: ds.attrs[k] for k in ds.attrs if k == "t_stop" or k.startswith("stats_")}
        ds = ds.assign({k: ((), v) for k, v in scal.items()})
        ds = ds.assign(status=((), str(t.status)), dynamics=((), t.dynamics))
        ds.attrs = {}
        return ds

    keys = list(trajs)
    index = pd.MultiIndex.from_tuples(keys, names=list(dims))
    stacked = xr.concat([as_vars(trajs[k]) for k in keys], dim="run", join="outer")
    stacked = stacked.assign_coords(xr.Coordinates.from_pandas_multiindex(index, "run"))
    return stacked.unstack("run").transpose(*dims, ...)


def _pad_stack(vals: list, shape: tuple[int, ...]) -> np.ndarray:
    """Stack arrays of one rank into ``shape + (max sizes)``, padding with NaN (0 for
    integer and boolean arrays)."""
    vals = [np.asarray(v) for v in vals]
    full = tuple(max(v.shape[k] for v in vals) for k in range(vals[0].ndim))
    padded = []
    for v in vals:
        if v.shape != full:
            fill = np.nan if np.issubdtype(v.dtype, np.floating) else 0
            w = np.full(full, fill, dtype=v.dtype)
            w[tuple(slice(0, s) for s in v.shape)] = v
            v = w
        padded.append(v)
    return np.stack(padded).reshape(shape + full)


def stack(results: list[tuple[Trajectory, int]], axes: dict[str, list]) -> Trajectory:
    """One trajectory over a labelled grid: ``results`` holds, in row-major order of the
    grid ``axes`` (name -> values), ``(trajectory, member)`` pairs -- member ``j`` of an
    ensemble trajectory. Observables, parameters, status, stop times and stats get the
    grid's axes in front; arrays of unequal size (neurons of nets of different widths) are
    NaN-padded. Times shared by every point are kept once, (S,)."""
    shape = tuple(len(v) for v in axes.values())

    def gather(get):
        return _pad_stack([get(t, j) for t, j in results], shape)

    t0 = results[0][0]
    times = gather(lambda t, j: t.times if np.ndim(t.times) == 1 else t.times[j])
    rows = times.reshape(-1, times.shape[-1])
    if all(np.array_equal(rows[0], r) for r in rows):
        times = rows[0]

    def params(attr):
        trees = [getattr(t, attr) for t, _ in results]
        if trees[0] is None or any(tr is None for tr in trees):
            return None
        members = [jax.tree.map(lambda x, j=j: np.asarray(x)[j], tr)
                   for tr, (_, j) in zip(trees, results, strict=True)]
        return jax.tree.map(lambda *xs: _pad_stack(list(xs), shape), *members)

    return Trajectory(
        times=times,
        observables={k: gather(lambda t, j, k=k: t.observables[k][j]) for k in t0.observables},
        params0=params("params0"), params_final=params("params_final"),
        stats={k: gather(lambda t, j, k=k: t.stats[k][j]) for k in t0.stats
               if t0.stats[k] is not None},
        status=gather(lambda t, j: t.status[j]), t_stop=gather(lambda t, j: t.t_stop[j]),
        dynamics=t0.dynamics, obs_dims=t0.obs_dims, batch_dims=tuple(axes),
        coords={k: np.asarray(v) for k, v in axes.items()},
        at_stop={k: gather(lambda t, j, k=k: t.at_stop[k][j]) for k in t0.at_stop
                 if all(k in t.at_stop for t, _ in results)},
    )

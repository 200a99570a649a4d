"""``Trajectory``: what a simulation returns -- times, observables, parameters, status.

A trajectory holds host (numpy) arrays. A single run has ``times`` of shape (S,) and
observables of shape (S, ...); an ensemble has leading batch axes (``batch_dims``,
e.g. ``("member",)``) on every observable, status and stop time.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["Trajectory"]

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
        status: ``"completed"``, ``"stop_loss"``, ``"stop_grad"``, ``"diverged"``,
            ``"max_steps"`` or ``"solver_failed"`` (an array of them for ensembles).
        t_stop: the time the run ended (``t1``, or when it stopped).
        dynamics: a description of the dynamics that produced it.
        obs_dims: name -> names of each observable's trailing axes.
        batch_dims: names of the leading batch axes (``()`` for a single run).
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
        shape = np.shape(next(iter(self.observables.values()))) if self.observables else ()
        return (f"Trajectory({self.dynamics}, status={self.status!r}, t_stop={self.t_stop}, "
                f"observables={sorted(self.observables)}, shape={shape})")

    # -- xarray -----------------------------------------------------------------------
    def to_xarray(self):
        """An ``xarray.Dataset``: one variable per observable over ``(*batch, time, ...)``,
        the initial/final parameters, status and stop time, solver stats."""
        import xarray as xr

        b = tuple(self.batch_dims)
        times = np.asarray(self.times)
        coords: dict[str, Any] = dict(self.coords)
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
        for k, v in ds.data_vars.items():
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
                   batch_dims=batch)


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

"""Runs as datasets, the shapes experiments keep their results in.

:func:`gflow.trajectory.combine` stacks runs saved at the same times; an experiment that
compares runs of several widths, each stopped when it reached its target and saved on its
own grid (a local and a random init, a population and a sample objective), needs each
run's own times and values padded to a common shape: :func:`runs_dataset`. An experiment
made of parts with their own time grids keeps each part's observables under a tag:
:func:`observables_dataset`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["lr_grid", "observables_dataset", "runs_dataset"]


def _pad(x, shape) -> np.ndarray:
    out = np.full(shape, np.nan)
    out[tuple(slice(0, s) for s in np.shape(x))] = x
    return out


def runs_dataset(trajs: dict):
    """An ``xarray.Dataset`` over ``run`` (the keys of ``trajs``, single-run trajectories of
    two-layer nets) and ``save``: each run's times ``t`` and observables (``(run, save,
    ...)``, trailing dims named by the observable's dims), its value at its last reached
    save ``final_<observable>`` (:meth:`gflow.Trajectory.final`), ``width``, the effective
    weights ``|a_j| |w_j|`` at the end (``eff_weight``, ``(run, neuron)``), ``status``,
    ``t_stop`` and ``num_steps``. Everything is NaN-padded to the longest run and the
    largest size of each dim."""
    import xarray as xr

    runs, names = list(trajs.values()), list(trajs)
    first = runs[0]

    def over_runs(get, dims):
        vals = [np.asarray(get(t), dtype=float) for t in runs]
        shape = tuple(max(np.shape(v)[i] for v in vals) for i in range(len(dims)))
        return (("run",) + dims, np.stack([_pad(v, shape) for v in vals]))

    data = {"t": over_runs(lambda t: t.times, ("save",))}
    for var in first.observables:
        dims = tuple(first.obs_dims.get(var, ()))
        if len(dims) != np.ndim(first[var]) - 1:
            dims = tuple(f"{var}_dim{i}" for i in range(np.ndim(first[var]) - 1))
        data[var] = over_runs(lambda t, v=var: t[v], ("save",) + dims)
        data[f"final_{var}"] = over_runs(lambda t, v=var: t.final(v), dims)
    data["eff_weight"] = over_runs(lambda t: np.abs(np.asarray(t.params_final.a)) * np.linalg.norm(
        np.asarray(t.params_final.W), axis=1), ("neuron",))
    data["width"] = (("run",), np.array([np.shape(t.params_final.W)[0] for t in runs]))
    data["status"] = (("run",), np.array([str(t.status) for t in runs]))
    data["t_stop"] = (("run",), np.array([float(t.t_stop) for t in runs]))
    data["num_steps"] = (("run",), np.array([int(t.stats["num_steps"]) for t in runs]))
    return xr.Dataset(data, coords={"run": names})


def observables_dataset(result, *, prefix: str | None = None, shared=()):
    """The observables, status and stats of a trajectory or sweep as an ``xarray.Dataset``
    without the parameters; with ``prefix``, every variable and every dim not in
    ``shared`` is renamed ``<prefix>_<name>`` (so parts on other grids merge)."""
    ds = result.to_xarray()
    ds = ds[[v for v in ds.data_vars if not v.startswith(("params0_", "params_final_"))]]
    if prefix is None:
        return ds
    ds = ds.rename({dim: f"{prefix}_{dim}" for dim in ds.dims if dim not in shared})
    return ds.rename({v: f"{prefix}_{v}" for v in ds.data_vars})


def over_datasets(net, params0, datas, *, dim: str, coords, prefix: str, **simulate) -> Any:
    """One ``(net, params0)`` trained on each dataset of ``datas`` (training sets of different
    sizes, tiled to one by :func:`gflow.data.stack_tiled`: one compiled ensemble, the same
    full-batch flows) by :func:`gflow.simulate_ensemble` with ``simulate`` (loss, dynamics,
    t1, save, observe, ...): :func:`observables_dataset` with the member dim ``dim`` at
    ``coords``."""
    import jax
    import jax.numpy as jnp

    import gflow

    p0 = jax.tree.map(lambda x: jnp.stack([x] * len(datas)), params0)
    traj = gflow.simulate_ensemble(net, p0, gflow.data.stack_tiled(datas), **simulate)
    traj.batch_dims, traj.coords = (dim,), {dim: list(coords)}
    return observables_dataset(traj, prefix=prefix, shared=(dim,))


def lr_grid(runs: dict, data, lrs, steps, *, observe=("loss",), loss: str = "logistic",
            progress: bool = False) -> dict:
    """Each ``(net, params0)`` of ``runs`` trained by GD at every learning rate of ``lrs``,
    saved at the same GD ``steps`` (time ``step * lr``), not raising on divergence:
    ``{observable: (len(runs), len(lrs), len(steps)) array}`` in the order of ``runs``, NaN
    after a run diverged."""
    import gflow

    steps = np.asarray(steps, float)
    out = {v: np.full((len(runs), len(lrs), steps.size), np.nan) for v in observe}
    for c, (net, p0) in enumerate(runs.values()):
        for e, lr in enumerate(lrs):
            tr = gflow.simulate(net, p0, data, loss=loss, dynamics=gflow.GD(lr=lr),
                                t1=float(steps[-1]) * lr, save=steps * lr, observe=observe,
                                throw=False, progress=progress)
            for v in observe:
                out[v][c, e, :len(tr.times)] = np.asarray(tr[v])
    return out

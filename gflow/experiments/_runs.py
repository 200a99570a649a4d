"""Runs as datasets, the shapes experiments keep their results in.

:func:`gflow.trajectory.combine` stacks runs saved at the same times; an experiment that
compares runs of several widths, each stopped when it reached its target and saved on its
own grid (a local and a random init, a population and a sample objective), stores each run
as its own group (:func:`run_groups`: its own time axis, no padding) and analyses them side
by side, padded to a common shape (:func:`runs_view`, :func:`runs_dataset`). An experiment
made of parts with their own time grids keeps each part's observables in its own group
(:func:`observables_dataset`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gflow.io import neuron_mask

__all__ = ["dynamics_groups", "lr_grid", "observables_dataset", "run_groups", "runs_dataset",
           "runs_view"]


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
    largest size of each dim; ``neuron_valid`` (``(run, neuron)``) says which neurons each
    run's net has."""
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
    data["neuron_valid"] = (("run", "neuron"), neuron_mask(data["width"][1],
                                                           data["eff_weight"][1].shape[1]))
    data["status"] = (("run",), np.array([str(t.status) for t in runs]))
    data["t_stop"] = (("run",), np.array([float(t.t_stop) for t in runs]))
    data["num_steps"] = (("run",), np.array([int(t.stats["num_steps"]) for t in runs]))
    return xr.Dataset(data, coords={"run": names})


def dynamics_groups(trajs: dict, dims: tuple[str, ...], *, at: int = 0) -> dict:
    """Trajectories labelled ``(..., dynamics name, ...)`` (the name at position ``at``) as
    one results group per dynamics name, in first-seen order: the runs of each stacked over
    the other labels, ``dims`` (:func:`gflow.trajectory.combine`, its own save times), the
    dynamics' description in the group's attribute ``dynamics``."""
    import gflow

    out = {}
    for name in dict.fromkeys(k[at] for k in trajs):
        ds = gflow.trajectory.combine({k[:at] + k[at + 1:]: t for k, t in trajs.items()
                                       if k[at] == name}, dims)
        out[name] = ds.drop_vars("dynamics").assign_attrs(
            dynamics=str(ds["dynamics"].values.flat[0]))
    return out


_RUN_VARS = ("params0_", "params_final_", "stats_", "at_stop_")


def run_groups(trajs: dict, extra: list[dict] | None = None) -> dict:
    """Single-run trajectories (``{label: Trajectory}``) as results groups ``run000``,
    ``run001``, ...: each its :meth:`gflow.Trajectory.to_xarray` (its own ``time`` axis, its
    parameters) with the label in the attribute ``run`` and ``extra[i]`` (``{name: value or
    (dims, value)}``: what the run was, e.g. its seed) as variables without a time axis."""
    out = {}
    for i, (label, tr) in enumerate(trajs.items()):
        ds = tr.to_xarray().assign(**(extra[i] if extra else {}))
        ds.attrs["run"] = str(label)
        out[f"run{i:03d}"] = ds
    return out


def runs_view(tree):
    """The groups of :func:`run_groups` (a dict or a tree of them) side by side:
    :func:`runs_dataset` of the rebuilt trajectories (``run`` labelled by each group's
    ``run`` attribute), with each group's extra variables over ``run`` (NaN-padded)."""
    import xarray as xr

    import gflow

    trajs, extras = {}, []
    groups = tree.values() if isinstance(tree, dict) else [
        node.to_dataset() for node in tree.children.values()]
    for g in groups:
        own = [v for v in g.data_vars if "time" in g[v].dims or v in ("status", "t_stop")
               or str(v).startswith(_RUN_VARS)]
        trajs[g.attrs["run"]] = gflow.Trajectory.from_xarray(g[own])
        extras.append(g.drop_vars(own).drop_vars(list(g.coords)))
    ds = runs_dataset(trajs)
    extra = xr.concat([e.assign_coords({d: np.arange(n) for d, n in e.sizes.items()})
                       for e in extras], dim="run", join="outer")
    return ds.assign({v: extra[v].drop_vars(list(extra[v].coords)) for v in extra.data_vars})


def observables_dataset(result):
    """The observables, status and stats of a trajectory or sweep as an ``xarray.Dataset``
    without the parameters (with ``neuron_valid`` where per-neuron observables remain)."""
    ds = result.to_xarray()
    ds = ds[[v for v in ds.data_vars if not v.startswith(("params0_", "params_final_"))]]
    if "neuron_valid" in ds and not any("neuron" in ds[v].dims for v in ds.data_vars
                                        if v != "neuron_valid"):
        ds = ds.drop_vars("neuron_valid")
    return ds


def over_datasets(net, params0, datas, *, dim: str, coords, **simulate) -> Any:
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
    return observables_dataset(traj)


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

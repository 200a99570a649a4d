"""Ensembles and sweeps: many members in one compiled call, sharded across devices.

``simulate_ensemble`` runs the same dynamics for ``M`` members stacked on a leading axis:
it ``jax.vmap``s the single-run solve (each GF member keeps its own adaptive step size;
a finished member idles while the others go on) and, with several devices, wraps the
vmapped solve in ``jax.shard_map`` over the member axis (auto-sharding a vmapped
while-loop is known to be very slow). Members may differ in parameters (always), data
(a ``Dataset`` whose arrays carry the member axis), learning rate (``lr`` of shape
(M,)), SGD key (a key array of shape (M,)) and width (``widths=``: all members are
padded to ``net.width``; padded neurons are masked -- they contribute nothing, get zero
gradient and never move -- and the 1/sqrt(m) or 1/m factor uses each member's width).

``sweep`` evaluates a user function on a labelled grid of settings and runs every
compatible group of grid points as one ensemble.

Multi-host: call ``jax.distributed.initialize()`` on every host before using gflow;
``jax.devices()`` then lists all hosts' devices and the member axis is sharded over them.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from . import _status, context, inputs
from .data import Dataset
from .dynamics import Problem
from .memory import check_memory
from .nets import MaskedTwoLayer, TwoLayer, TwoLayerParams
from .objective import Objective
from .solve import SimulationError, check_dynamics, prepare, save_grid
from .store import ChunkStore, ensemble_fingerprint
from .times import LogTimes, check_t1, resolve_times
from .trajectory import Trajectory, stack

__all__ = ["MaskedTwoLayer", "Run", "Sweep", "simulate_ensemble", "sweep"]


#: a block's (n, width) activations on the CPU: about a quarter of a last-level cache
_CACHE_BYTES = 2**23


def _block(block, platform: str, member_bytes: int) -> int | None:
    """Members per block: ``block`` checked, or by default on a CPU as many as keep a
    block's activations (``member_bytes`` each) within ``_CACHE_BYTES``; ``None`` (a plain
    vmap) on other devices."""
    if block is None:
        return max(1, _CACHE_BYTES // member_bytes) if platform == "cpu" else None
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be an integer >= 1, got {block!r}.")
    return block


def _members(params0) -> int:
    shapes = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree.leaves(params0)}
    if len(shapes) != 1 or None in shapes:
        raise ValueError("params0 must carry a leading member axis on every leaf (stack them "
                         "with jax.vmap over keys); got leading sizes "
                         f"{sorted(map(str, shapes))}.")
    return shapes.pop()


def _pad_members(x, total):
    pad = total - x.shape[0]
    return x if pad == 0 else jnp.concatenate([x, jnp.repeat(x[:1], pad, axis=0)])


def simulate_ensemble(
    net,
    params0,
    data: Dataset,
    *,
    loss: str | Callable = "squared",
    dynamics=None,
    t1: float,
    save: Any = None,
    observe: Sequence[str | Callable] | dict = ("loss",),
    stop_loss: float | None = None,
    stop_grad: float | None = None,
    diverge_factor: float | None = None,
    probes=None,
    widths=None,
    save_params: bool = False,
    throw: bool = False,
    progress: bool = False,
    chunk_size: int | None = None,
    devices=None,
    block: int | None = None,
    checkpoint=None,
) -> Trajectory:
    """Run ``M`` members at once; arguments as :func:`gflow.simulate`, plus:

    Arguments:
        params0: parameters with a leading member axis, e.g.
            ``jax.vmap(lambda k: gflow.init.gaussian(k, net, d))(jax.random.split(key, M))``.
        data: shared by all members, or with a leading member axis on its arrays.
        dynamics: as in ``simulate``; ``GD/SGD/Optax(lr=...)`` may give ``lr`` of shape (M,),
            ``SGD(key=...)`` a key array of shape (M,).
        widths: (M,) live widths ``<= net.width`` (two-layer nets); members are padded.
        throw: ``False`` (default) keeps going when a member diverges and reports it in
            ``traj.status``; ``True`` raises :class:`gflow.SimulationError` if any member failed.
        chunk_size: run at most this many members per compiled call (memory), with a
            progress bar over chunks.
        devices: devices to shard members over (default ``jax.devices()``).
        block: members vmapped together; blocks run one after another inside the compiled
            program (``lax.map``), so each block's state stays in cache. Default: on a
            CPU, as many as keep a block's (n, width) activations within ~8 MiB; on other
            devices, and with ``block=M``, a plain vmap.
        checkpoint: a directory where each finished chunk of members is kept (an
            ``.npz`` per chunk, fingerprinted with all inputs); called again with the same
            arguments after an interruption, finished chunks are read back, not recomputed,
            and the result is bitwise the same. Removed once the ensemble has finished.
            The granularity is one chunk: give ``chunk_size`` for more than one. Inside
            ``with gflow.checkpoint.checkpointing(DIR)`` (``gflow run``) every call gets
            one under ``DIR``.

    Returns:
        A :class:`Trajectory` with ``batch_dims=("member",)``: observables (M, S, ...),
        ``status`` and ``t_stop`` of shape (M,); saves after a member stopped are NaN.
    """
    dynamics = check_dynamics(dynamics)
    t1 = check_t1(t1)
    diverge_factor = inputs.check_diverge_factor(diverge_factor)
    M = _members(params0)
    stacked_data = data.X.ndim == 3 if isinstance(data, Dataset) else False
    if stacked_data and data.X.shape[0] != M:
        raise ValueError(f"data carries {data.X.shape[0]} members but params0 has {M}.")
    member0 = jax.tree.map(lambda x: x[0], params0)
    net.check_params(member0, d=data.d)
    objective, params0, observer, ctx, stop_loss, stop_grad = prepare(
        net, params0, data, loss=loss, dynamics=dynamics, observe=observe, probes=probes,
        stop_loss=stop_loss, stop_grad=stop_grad, member_axes=1)
    objective = Objective(objective.net, objective.loss_fn, objective.X, objective.y,
                          members=True)
    ctx = eqx.tree_at(lambda c: c.objective, ctx, objective)
    member_leaves = list(jax.tree.leaves(params0))
    if stacked_data:
        member_leaves += [x for x in (objective.X, objective.y, ctx.X_test, ctx.y_test)
                          if x is not None]
    if widths is not None:
        if not isinstance(net, TwoLayer):
            raise ValueError("widths= (padding to one compiled width) needs a gflow.TwoLayer.")
        widths = np.asarray(widths)
        if widths.shape != (M,) or not np.issubdtype(widths.dtype, np.integer) \
                or widths.min() < 1 or widths.max() > net.width:
            raise ValueError(f"widths must be (M,)=({M},) integers in [1, net.width={net.width}],"
                             f" got {widths!r}.")
        mask = jnp.asarray(np.arange(net.width)[None, :] < widths[:, None], objective.y.dtype)
        objective = eqx.tree_at(lambda o: o.net, objective, MaskedTwoLayer(net, mask))
        ctx = eqx.tree_at(lambda c: c.objective, ctx, objective)
        member_leaves.append(mask)

    ts = save_grid(dynamics, save, t1)
    n, dtype = objective.y.shape[-1], objective.y.dtype
    plan = dynamics.plan(ts, t1, n=n, dtype=dtype, members=M)
    grid = jnp.asarray(plan.grid)
    if grid.ndim == 2:  # per-member save steps (per-member lr)
        member_leaves.append(grid)
    member_leaves += [x for x in jax.tree.leaves(plan.dynamics)
                      if eqx.is_array(x) and x.ndim >= 1 and x.shape[0] == M]
    member_ids = {id(x) for x in member_leaves}
    scalar = lambda v: None if v is None else jnp.asarray(v, dtype)  # noqa: E731
    problem = Problem(objective, observer, ctx, grid, jnp.asarray(t1, dtype), scalar(stop_loss),
                      scalar(stop_grad), scalar(diverge_factor), save_params=save_params)
    leaves, treedef = jax.tree.flatten((plan.dynamics, problem, params0))
    axes = tuple(0 if id(x) in member_ids else None for x in leaves)
    one = [jax.ShapeDtypeStruct(x.shape[1:], x.dtype) if a == 0 else x
           for x, a in zip(leaves, axes, strict=True)]
    _, problem1, params1 = jax.tree.unflatten(treedef, one)  # one member, for the estimate
    check_memory(observer, params1, problem1.ctx, len(ts), members=M, save_params=save_params,
                 dynamics=dynamics)
    devices = tuple(jax.devices() if devices is None else devices)
    block = _block(block, devices[0].platform, n * getattr(net, "width", 1)
                   * jnp.dtype(dtype).itemsize)
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(
            chunk_size, int | np.integer) or chunk_size < 1):
        raise ValueError(f"chunk_size must be an integer >= 1 or None, got {chunk_size!r}.")
    run = _compiled(treedef, axes, devices, block)
    store = None
    keep = checkpoint is None
    if checkpoint is None and context.active() is not None:
        checkpoint = context.active().next_path()
    if checkpoint is not None:
        store = ChunkStore(checkpoint, ensemble_fingerprint(
            dynamics, member0, repr(treedef), axes, *leaves, tuple(observer.observables),
            save_params, chunk_size, len(devices), block, type(dynamics).__name__), keep=keep)
    out = _run_members(run, leaves, axes, M, len(devices), chunk_size=chunk_size,
                       progress=progress, store=store)
    if store is not None:
        store.finish()
    out = dynamics.report(jax.device_get(out), plan.info)
    if widths is not None:  # per-neuron observables: NaN where a member has no neuron
        for k, o in observer.observables.items():
            if "neuron" in o.dims:
                ax = 2 + o.dims.index("neuron")
                live = np.arange(net.width)[None, :] < widths[:, None]
                shape = [1] * out["obs"][k].ndim
                shape[0], shape[ax] = len(widths), net.width
                out["obs"][k] = np.where(live.reshape(shape), out["obs"][k], np.nan)
                if k in out.get("obs_final", {}):
                    shape.pop(1)  # no time axis
                    out["obs_final"][k] = np.where(live.reshape(shape), out["obs_final"][k],
                                                   np.nan)
    status = np.asarray(_status.NAMES)[np.asarray(out["status"])]
    traj = Trajectory(
        times=np.asarray(out["ts"], dtype=np.float64),
        observables={k: np.asarray(v) for k, v in out["obs"].items()},
        params0=jax.device_get(params0), params_final=out["params_final"],
        params=out["params"], stats={k: np.asarray(v) for k, v in out["stats"].items()},
        status=status, t_stop=np.asarray(out["t_stop"], dtype=np.float64),
        dynamics=dynamics.describe(),
        obs_dims={k: o.dims for k, o in observer.observables.items()},
        batch_dims=("member",),
        at_stop={k: np.asarray(v) for k, v in out.get("obs_final", {}).items()},
    )
    if throw and not traj.ok:
        bad = np.flatnonzero(~np.isin(status, ("completed", "stop_loss", "stop_grad")))
        i = int(bad[0])
        raise SimulationError(
            f"{len(bad)} of {M} members failed; member {i}: {status[i]} at "
            f"t={traj.t_stop[i]:.6g}. Use throw=False to keep the others' results."
        )
    return traj


@functools.lru_cache(maxsize=64)
def _compiled(treedef, axes, devices, block):
    """The jitted, vmapped (and, on several devices, shard_mapped) run of every save
    (``finish(advance(init(...), S))``); cached, so a second ensemble with the same
    structure reuses the compiled program."""

    def one(*flat):
        dyn, problem, params0 = jax.tree.unflatten(treedef, flat)
        state = dyn.advance(problem, dyn.init(problem, params0), problem.grid.shape[-1])
        return dyn.finish(problem, state)

    def vfn(*flat):
        # lax.map over blocks of `block` members, each block vmapped: a block's working set
        # stays in cache while the time loop runs, instead of streaming all members' state
        # through memory at every step
        member = [x for x, a in zip(flat, axes, strict=True) if a == 0]

        def per_member(ms):
            it = iter(ms)
            return one(*[next(it) if a == 0 else x for x, a in zip(flat, axes, strict=True)])

        M = member[0].shape[0]
        if block is None or block >= M:
            return jax.vmap(per_member)(member)
        return jax.lax.map(per_member, member, batch_size=block)

    if len(devices) > 1:
        mesh = Mesh(np.asarray(devices), ("members",))
        specs = tuple(P("members") if a == 0 else P() for a in axes)
        vfn = jax.shard_map(vfn, mesh=mesh, in_specs=specs, out_specs=P("members"),
                            check_vma=False)
        return jax.jit(vfn, in_shardings=tuple(NamedSharding(mesh, sp) for sp in specs))
    return jax.jit(vfn)


def _run_members(run, leaves, axes, M, D, *, chunk_size, progress, store=None):
    """Run the compiled solve over all members, in chunks if asked (each chunk padded to
    the same size, a multiple of the device count, so one program serves them all).
    With a :class:`gflow.checkpoint.ChunkStore`, each finished chunk is written to it and
    chunks already there are read back instead of run."""
    chunk = M if not chunk_size else min(int(chunk_size), M)
    chunk = math.ceil(chunk / D) * D  # every device gets the same number of members
    starts = range(0, M, chunk)
    if progress and len(starts) > 1:
        from .progress import bar

        starts = bar("member chunks", iterable=starts, unit="chunk")
    outs, treedef = [], None
    for i, s in enumerate(starts):
        part = [_pad_members(x[s:s + chunk], chunk) if a == 0 else x
                for x, a in zip(leaves, axes, strict=True)]
        take = min(chunk, M - s)
        done = store.load(i) if store is not None else None
        if done is not None:
            if treedef is None:  # the output's structure, traced without running anything
                treedef = jax.tree.structure(jax.eval_shape(run, *part))
            outs.append(jax.tree.unflatten(treedef, done))
            continue
        res = jax.tree.map(lambda x, take=take: x[:take], run(*part))
        if store is not None:
            res = jax.device_get(res)
            store.save(i, jax.tree.leaves(res))
        outs.append(res)
    if len(outs) == 1:
        return outs[0]
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *outs)


# -- sweeps -------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    """The arguments of one :func:`gflow.simulate` call (what a sweep's ``make_run`` returns)."""

    net: Any
    params0: Any
    data: Dataset
    loss: Any = "squared"
    dynamics: Any = None
    t1: float = 1.0
    save: Any = None
    observe: Any = ("loss",)
    stop_loss: float | None = None
    stop_grad: float | None = None
    probes: Any = None
    diverge_factor: float | None = None


@dataclasses.dataclass
class Sweep:
    """A labelled grid of runs: ``coords`` (name -> values) and one stacked trajectory
    whose batch axes are the grid axes; ``widths``: each run's width (grid-shaped) where
    the grid holds two-layer nets of several widths (their parameters padded with zeros to
    the largest), else ``None``."""

    coords: dict[str, list]
    trajectory: Trajectory
    widths: np.ndarray | None = None

    def __getitem__(self, name):
        return self.trajectory[name]

    @property
    def status(self):
        return self.trajectory.status

    def to_xarray(self):
        """An ``xarray.Dataset`` with dims ``(*grid, time, ...)``; over nets of several
        widths also ``neuron_valid`` (``(*grid, neuron)``, :func:`gflow.io.neuron_mask`):
        which of the padded neurons exist."""
        from .io import MASK_ATTRS, neuron_mask

        ds = self.trajectory.to_xarray()
        if self.widths is not None and "neuron" in ds.dims:
            dims = tuple(self.coords) + ("neuron",)
            ds["neuron_valid"] = (dims, neuron_mask(self.widths, ds.sizes["neuron"]),
                                  MASK_ATTRS)
        return ds


def _dyn_key(dyn):
    """What must agree for two runs' dynamics to share one compiled ensemble: the type,
    every field that may not differ per member, and which schedule a callable lr is."""
    dyn = check_dynamics(dyn)
    # a repr shows an array's shape, not its values (e.g. the distribution of OnlineSGD)
    values = lambda v: tuple(np.asarray(x).tobytes() for x in jax.tree.leaves(v)  # noqa: E731
                             if eqx.is_array(x) and not jax.dtypes.issubdtype(
                                 x.dtype, jax.dtypes.prng_key))
    fixed = tuple((f.name, repr(getattr(dyn, f.name)), values(getattr(dyn, f.name)))
                  for f in dataclasses.fields(dyn) if f.name not in dyn.member_fields)
    member = tuple(repr(v) if callable(v) else "" for v in
                   (getattr(dyn, f) for f in dyn.member_fields))
    return type(dyn).__name__, fixed, member


def _stack_dynamics(dyns):
    """One dynamics for a group of runs: its member fields stacked where they differ
    (numbers to an (M,) array, arrays such as PRNG keys always)."""
    out = check_dynamics(dyns[0])
    for name in out.member_fields:
        vals = [getattr(check_dynamics(d), name) for d in dyns]
        if callable(vals[0]):
            continue
        if isinstance(vals[0], jax.Array):
            out = eqx.tree_at(lambda d, name=name: getattr(d, name), out, jnp.stack(vals))
        elif len({float(v) for v in vals}) > 1:
            out = eqx.tree_at(lambda d, name=name: getattr(d, name), out,
                              np.asarray(vals, dtype=np.float64))
    return out


def _net_key(net):
    if isinstance(net, TwoLayer):
        return ("TwoLayer", net.activation, net.scaling, net.bias, net.train_outer)
    return ("net", net)


def _stack_data(datas: list[Dataset]) -> Dataset:
    stack = lambda name: None if getattr(datas[0], name) is None else jnp.stack(  # noqa: E731
        [getattr(d, name) for d in datas])
    return Dataset(stack("X"), stack("y"), stack("X_test"), stack("y_test"))


def _pad_params(p: TwoLayerParams, m: int) -> TwoLayerParams:
    pad = m - p.W.shape[0]
    z = lambda x: None if x is None else jnp.concatenate(  # noqa: E731
        [x, jnp.zeros((pad,) + x.shape[1:], x.dtype)])
    return TwoLayerParams(W=z(p.W), b=z(p.b), a=z(p.a))


def sweep(make_run: Callable[..., Run], *, seeds: Sequence[int] | None = None,
          throw: bool = False, progress: bool = False, chunk_size: int | None = None,
          devices=None, **grid: Sequence) -> Sweep:
    """Run ``make_run(seed=s, **point)`` for every point of the grid ``seeds x grid``.

    ``make_run`` returns a :class:`Run`. Runs that agree in everything but parameters,
    width (two-layer nets), learning rate, SGD key and data values are run together as
    one ensemble (one compiled program); the results are reassembled on the grid.

    Returns:
        A :class:`Sweep`; ``sweep.to_xarray()`` has dims ``(seed, *grid, time, ...)``.
    """
    axes = ({"seed": list(seeds)} if seeds is not None else {}) | {
        k: list(v) for k, v in grid.items()}
    if not axes or any(len(v) == 0 for v in axes.values()):
        raise ValueError("sweep needs at least one non-empty grid axis (seeds= or name=[...]).")
    names = list(axes)
    points = list(itertools.product(*axes.values()))
    runs = [make_run(**dict(zip(names, pt, strict=True))) for pt in points]
    for r in runs:
        if not isinstance(r, Run):
            raise ValueError(f"make_run must return a gflow.Run, got {type(r).__name__}.")
    groups: dict[Any, list[int]] = {}
    for i, r in enumerate(runs):
        ts = tuple(resolve_times(r.save if r.save is not None else LogTimes(100), r.t1))
        key = (_net_key(r.net), _dyn_key(r.dynamics), repr(r.loss), float(r.t1), ts,
               repr(r.observe), r.stop_loss, r.stop_grad, r.diverge_factor, tuple(r.data.X.shape),
               r.data.has_test, id(r.probes))
        groups.setdefault(key, []).append(i)

    results: list[Any] = [None] * len(runs)
    sizes = [r.net.width if isinstance(r.net, TwoLayer) else None for r in runs]
    live = (np.reshape(sizes, [len(v) for v in axes.values()])
            if None not in sizes and len(set(sizes)) > 1 else None)
    for idx in groups.values():
        rs = [runs[i] for i in idx]
        net = rs[0].net
        widths = None
        params = [r.params0 for r in rs]
        if isinstance(net, TwoLayer):
            ws = [r.net.width for r in rs]
            if len(set(ws)) > 1:
                net = max((r.net for r in rs), key=lambda n: n.width)
                params = [_pad_params(p, net.width) for p in params]
                widths = np.asarray(ws)
        p0 = jax.tree.map(lambda *xs: jnp.stack(xs), *params)
        shared = all(r.data is rs[0].data for r in rs)
        data = rs[0].data if shared else _stack_data([r.data for r in rs])
        traj = simulate_ensemble(
            net, p0, data, loss=rs[0].loss, dynamics=_stack_dynamics([r.dynamics for r in rs]),
            t1=rs[0].t1, save=rs[0].save, observe=rs[0].observe, stop_loss=rs[0].stop_loss,
            stop_grad=rs[0].stop_grad, probes=rs[0].probes, widths=widths, throw=throw,
            progress=progress, chunk_size=chunk_size, devices=devices,
            diverge_factor=rs[0].diverge_factor)
        for j, i in enumerate(idx):
            results[i] = (traj, j)
    return Sweep(coords=axes, trajectory=stack(results, axes), widths=live)

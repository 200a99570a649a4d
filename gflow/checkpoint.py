"""Guarding long runs: a memory check before a run starts, and checkpoints during it.

**Memory.** A run keeps every observable at every save time (and, with ``save_params=True``, a
parameter snapshot per save), for every member of an ensemble. ``simulate`` and
``simulate_ensemble`` call :func:`check_memory` before compiling: when the estimate
exceeds the available memory the run is refused with a ``ValueError`` that says how to
shrink it, instead of failing (or swapping) hours later.

The limit is the available host memory (``MemAvailable`` of ``/proc/meminfo``, else
``os.sysconf``), and on an accelerator also the free device memory. Override it with the
environment variable ``GFLOW_MEMORY_LIMIT`` (bytes, or with a suffix ``K/M/G/T``; ``off``
disables the check) or, in code, with ``with gflow.checkpoint.memory_limit(nbytes): ...``.

**Checkpoints.** :func:`simulate_resumable` runs :func:`gflow.simulate` in segments of
``every`` save points and writes its state atomically to an ``.npz`` file (read back with
``allow_pickle=False``) after a segment -- every segment, or at most once per
``every_seconds`` of wall time; called again with the same arguments after an
interruption it continues from there and returns exactly (bitwise, same machine and dtype)
what an uninterrupted call returns. Segments end at save points, never at wall-clock
times, so the result does not depend on when files were written. Discrete dynamics (GD,
SGD, optax, lr schedules) carry their whole step-loop state across segments and equal one
:func:`gflow.simulate` bitwise; gradient flow restarts its adaptive solve at each segment,
so the segmented run is the reference (within the solver tolerance of an unsegmented one).

:func:`gflow.simulate_ensemble` with ``checkpoint=DIR`` keeps each finished chunk of
members (``chunk_size=``) in ``DIR``, so a long ensemble resumes without recomputing them.

``with checkpointing(DIR): ...`` checkpoints every ``simulate`` / ``simulate_ensemble``
call made inside the block (numbered in call order); ``gflow run`` wraps each experiment
in it, so ``gflow run --resume DIR`` continues inside an interrupted run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import math
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import footprint, statefile

__all__ = ["ChunkStore", "Checkpointing", "active", "available_memory", "check_memory",
           "check_memory_members", "checkpointing", "ensemble_fingerprint", "estimate_bytes",
           "memory_limit", "simulate_resumable"]

# results exist twice at the peak: the solve's output buffers and their host copy
_COPIES = 2
_SUFFIX = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_OVERRIDE: list[float | None] = []


def _parse_limit(raw: str) -> float | None:
    raw = raw.strip().lower().removesuffix("b").removesuffix("i")
    if raw in ("off", "none", "inf"):
        return None
    num, suf = (raw[:-1], raw[-1]) if raw and raw[-1] in _SUFFIX else (raw, "")
    try:
        value = float(num) * _SUFFIX[suf]
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"GFLOW_MEMORY_LIMIT must be a number of bytes > 0 (suffix K, M, G or "
                         f"T allowed) or 'off', got {raw!r}.")
    return value


@contextlib.contextmanager
def memory_limit(nbytes: float | None) -> Iterator[None]:
    """Use ``nbytes`` as the memory limit inside the block (``None``: no check)."""
    if nbytes is not None and not (isinstance(nbytes, int | float) and nbytes > 0):
        raise ValueError(f"memory_limit needs a number of bytes > 0 or None, got {nbytes!r}.")
    _OVERRIDE.append(nbytes)
    try:
        yield
    finally:
        _OVERRIDE.pop()


def _host_available() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _device_available() -> float | None:
    try:
        dev = jax.devices()[0]
        if dev.platform == "cpu":
            return None
        stats = dev.memory_stats() or {}
        return float(stats["bytes_limit"] - stats["bytes_in_use"])
    except (KeyError, TypeError, RuntimeError, AttributeError):
        return None


def available_memory() -> float | None:
    """Bytes a run may use for its results; ``None`` when unknown or the check is off."""
    if _OVERRIDE:
        return _OVERRIDE[-1]
    env = os.environ.get("GFLOW_MEMORY_LIMIT")
    if env:
        return _parse_limit(env)
    known = [m for m in (_host_available(), _device_available()) if m is not None]
    return min(known) if known else None


def _nbytes(tree) -> int:
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _signature(tree):
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((tuple(x.shape), np.dtype(x.dtype)) if hasattr(x, "dtype") else x
                          for x in leaves)


@functools.lru_cache(maxsize=64)
def _obs_bytes_cached(observer, params_sig, ctx_sig) -> int:
    params, ctx = (jax.tree.unflatten(d, [jax.ShapeDtypeStruct(*x) if isinstance(x, tuple)
                                          else x for x in leaves])
                   for d, leaves in (params_sig, ctx_sig))
    return _nbytes(jax.eval_shape(observer, params, ctx))


def _obs_bytes(observer, params, ctx) -> int:
    """Bytes of one save of every observable: traced once per observer and shapes."""
    try:
        return _obs_bytes_cached(observer, _signature(params), _signature(ctx))
    except TypeError:  # something unhashable in the observer or the context
        return _nbytes(jax.eval_shape(observer, params, ctx))


def estimate_bytes(observer, params, ctx, n_saves: int, *, members: int = 1,
                   save_params: bool = False) -> tuple[int, int]:
    """``(total, per_save)`` bytes one run keeps: ``members x n_saves x per_save``, where
    ``per_save`` is the size of all observables (shapes from ``jax.eval_shape``, nothing is
    computed) plus, with ``save_params``, one parameter snapshot, for one member."""
    per_save = _obs_bytes(observer, params, ctx) + (_nbytes(params) if save_params else 0)
    return members * n_saves * per_save, per_save


def check_memory(observer, params, ctx, n_saves: int, *, members: int = 1,
                 save_params: bool = False, dynamics=None) -> int:
    """Raise ``ValueError`` if the results of a run, with what training needs besides
    (:mod:`gflow.footprint`), would not fit in memory; returns the results' estimate in
    bytes."""
    total, per_save = estimate_bytes(observer, params, ctx, n_saves, members=members,
                                     save_params=save_params)
    limit = available_memory()
    work = 0 if limit is None else footprint.check_working(
        ctx.objective, params, dynamics, members, limit)
    if limit is not None and _COPIES * total + work > limit:
        gib = 2.0**30
        what = "observables" + (" and parameter snapshots" if save_params else "")
        raise ValueError(
            f"this run would keep {_COPIES * total / gib:.3g} GiB of saved {what} "
            f"({members} member(s) x {n_saves} saves x {per_save} bytes, held twice while "
            f"copied to the host) but only {limit / gib:.3g} GiB is available besides the "
            f"{work / gib:.3g} GiB training needs. Save at fewer "
            "times (save=gflow.LogTimes(k) with a smaller k), observe fewer or smaller "
            "observables" + (", drop save_params=True" if save_params else "")
            + ", or run the members in several calls (chunk_size= bounds only the memory of "
            "one compiled call). Override the limit with GFLOW_MEMORY_LIMIT=<bytes>|off."
        )
    return total


def check_memory_members(observer, treedef, leaves, axes, n_saves: int, members: int, *,
                         save_params: bool = False, dynamics=None) -> int:
    """:func:`check_memory` for an ensemble given as the flat ``(scalars, dynamics,
    objective, params0, times, ctx)`` leaves of ``simulate_ensemble`` and their member axes
    (0: per member, sliced to member 0 for the estimate)."""
    one = [jax.ShapeDtypeStruct(x.shape[1:], x.dtype) if a == 0 else x
           for x, a in zip(leaves, axes, strict=True)]
    _, _, _, params, _, ctx = jax.tree.unflatten(treedef, one)
    return check_memory(observer, params, ctx, n_saves, members=members,
                        save_params=save_params, dynamics=dynamics)


# -- checkpointed runs ---------------------------------------------------------------------


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _host(x) -> np.ndarray:
    """A leaf as a numpy array (a typed PRNG key as its raw key data)."""
    return np.asarray(jax.random.key_data(x) if _is_key(x) else x)


def _like(arr, template):
    """``arr``, read from a checkpoint, as the kind of leaf ``template`` is."""
    if _is_key(template):
        return jax.random.wrap_key_data(jnp.asarray(arr), impl=jax.random.key_impl(template))
    return jnp.asarray(arr)


def _fingerprint(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray | np.generic | jax.Array):
            a = _host(p)
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        else:  # memory addresses in a repr (functions, objects) differ between processes
            h.update(re.sub(r" at 0x[0-9a-fA-F]+", "", repr(p)).encode())
    return h.hexdigest()


def _arrays(tree) -> list:
    return [x for x in jax.tree.leaves(tree) if isinstance(x, np.ndarray | jax.Array)]


def _dynamics_parts(dynamics, params) -> list:
    """What identifies the dynamics: its repr (every field), its arrays (per-member lr,
    SGD keys) and, for an optax optimizer, whose hyper-parameters live in closures that no
    repr shows, its state and one update of ``params`` from a fixed pseudo-gradient."""
    parts = [repr(dynamics), *_arrays(dynamics)]
    opt = getattr(dynamics, "optimizer", None)
    if opt is not None:
        state = opt.init(params)
        probe = jax.tree.map(lambda x: jnp.full_like(x, 0.5), params)
        update, state1 = opt.update(probe, state, params)
        parts += [*_arrays(state), *_arrays(update), *_arrays(state1)]
    return parts


def _save_state(path: Path, state: dict[str, np.ndarray]) -> None:
    """Write the checkpoint atomically, tagged with a hash of its arrays."""
    statefile.write(path, state)


def _load_state(path: Path, fingerprint: str) -> dict[str, np.ndarray] | None:
    """The checkpoint's state; ``None`` if missing or damaged (then recomputed)."""
    return statefile.read(path, fingerprint)


def _check_every(every, every_seconds) -> tuple[int, float | None]:
    if every is None and every_seconds is None:
        raise ValueError("give every= (save points per segment) and/or every_seconds= "
                         "(least wall time between checkpoint writes).")
    if every is None:
        every = 1
    if isinstance(every, bool) or not isinstance(every, int | np.integer) or every < 1:
        raise ValueError(f"every must be an integer >= 1 (save points per segment), "
                         f"got {every!r}.")
    if every_seconds is not None:
        if isinstance(every_seconds, bool) or not isinstance(every_seconds, int | float) \
                or not every_seconds >= 0 or math.isinf(every_seconds):
            raise ValueError(f"every_seconds must be a finite number >= 0 or None, "
                             f"got {every_seconds!r}.")
        every_seconds = float(every_seconds)
    return int(every), every_seconds


def _segment_ends(n_saves: int, every: int) -> list[int]:
    """Segment j holds the save points ``j*every ... (j+1)*every - 1`` and ends at the last."""
    return [min(i + every, n_saves) - 1 for i in range(0, n_saves, every)]


class _Segments:
    """One run cut into segments of save points. Its state is a flat dict of numpy arrays
    (what the ``.npz`` holds): ``segment`` (the next one), ``done``, the observables so
    far (``obs_<name>``), parameter snapshots (``snap_<i>``) and the dynamics' own state;
    once ``done``, also ``status`` and ``final_<name>`` (observables at the end)."""

    def __init__(self, dynamics, objective, p0, observer, ctx, ts, t1, stop_loss, stop_grad,
                 every, save_params):
        self.dynamics, self.objective, self.p0 = dynamics, objective, p0
        self.observer, self.ctx, self.ts, self.t1 = observer, ctx, ts, t1
        self.stop_loss, self.stop_grad, self.save_params = stop_loss, stop_grad, save_params
        self.ends = _segment_ends(len(ts), every)
        # every segment is padded to this many save points (the last one repeated), so all
        # segments share one compiled program
        self.width = min(every, len(ts))
        self.p_leaves0, self.p_def = jax.tree.flatten(p0)
        self.obs_shapes = jax.eval_shape(observer, p0, ctx)

    def fingerprint_parts(self) -> list:
        return []

    def initial(self) -> dict[str, np.ndarray]:
        state = {"segment": np.asarray(0), "done": np.asarray(0)}
        state |= {f"obs_{k}": np.zeros((0, *s.shape), s.dtype) for k, s in self.obs_shapes.items()}
        if self.save_params:
            state |= {f"snap_{i}": np.zeros((0, *np.shape(x)), x.dtype)
                      for i, x in enumerate(self.p_leaves0)}
        return state

    def saves_done(self, state) -> int:
        seg = int(state["segment"])
        return 0 if seg == 0 else self.ends[seg - 1] + 1

    def _indices(self, seg: int) -> tuple[np.ndarray, int]:
        start = 0 if seg == 0 else self.ends[seg - 1] + 1
        idx = np.arange(start, self.ends[seg] + 1)
        real = len(idx)
        return np.concatenate([idx, np.full(self.width - real, idx[-1])]), real

    def _append(self, state, out, real, done) -> dict[str, np.ndarray]:
        """``state`` with the first ``real`` saves of a segment's output appended."""
        new = dict(state)
        new["segment"] = np.asarray(int(state["segment"]) + 1)
        for k in self.obs_shapes:
            new[f"obs_{k}"] = np.concatenate([state[f"obs_{k}"], np.asarray(out["obs"][k])[:real]])
        if self.save_params:
            for i, x in enumerate(jax.tree.leaves(out["params"])):
                new[f"snap_{i}"] = np.concatenate([state[f"snap_{i}"], np.asarray(x)[:real]])
        if done:
            new["done"] = np.asarray(1)
            new["status"] = np.asarray(out["status"])
            new |= {f"final_{k}": np.asarray(v) for k, v in out["obs_final"].items()}
        return new

    def _saved(self, state, rows: int | None = None):
        """Observables and snapshots so far, padded with zeros to ``rows`` saves."""
        def pad(x):
            if rows is None or len(x) == rows:
                return x
            return np.concatenate([x, np.zeros((rows - len(x), *x.shape[1:]), x.dtype)])

        obs = {k: pad(state[f"obs_{k}"]) for k in self.obs_shapes}
        snaps = None
        if self.save_params:
            snaps = jax.tree.unflatten(self.p_def, [pad(state[f"snap_{i}"])
                                                    for i in range(len(self.p_leaves0))])
        final = {k: state[f"final_{k}"] for k in self.obs_shapes}
        return obs, snaps, final


class _GFSegments(_Segments):
    """Gradient flow: the state is the parameters, the time reached and the solver
    statistics so far; each segment is a fresh solve from the segment's start."""

    def initial(self):
        state = super().initial() | {"t": np.asarray(0.0), "times": np.zeros(0)}
        return state | {f"param_{i}": np.asarray(x) for i, x in enumerate(self.p_leaves0)}

    def advance(self, state):
        seg, t_now = int(state["segment"]), float(state["t"])
        idx, real = self._indices(seg)
        seg_ts = self.ts[idx] - t_now
        y = jax.tree.unflatten(self.p_def, [jnp.asarray(state[f"param_{i}"])
                                            for i in range(len(self.p_leaves0))])
        if seg_ts[-1] <= 0:  # save points at the current time (t = 0): observe, no solve
            obs = jax.device_get(self.observer(y, self.ctx))
            out = {"status": 0, "t_stop": 0.0, "params_final": y, "obs_final": obs, "stats": {},
                   "obs": {k: np.repeat(np.asarray(v)[None], len(idx), 0) for k, v in obs.items()},
                   "params": jax.tree.map(lambda x: np.repeat(np.asarray(x)[None], len(idx), 0),
                                          y)}
        else:
            out = self.dynamics._integrate(
                self.objective, y, seg_ts, float(seg_ts[-1]), self.observer, self.ctx,
                stop_loss=self.stop_loss, stop_grad=self.stop_grad,
                save_params=self.save_params, progress=False)
        stopped = int(out["status"]) != 0  # stopped or failed inside this segment
        new = self._append(state, out, real, done=stopped or seg + 1 == len(self.ends))
        new["times"] = np.concatenate([state["times"], self.ts[idx[:real]]])
        new["t"] = np.asarray(t_now + float(out["t_stop"]) if stopped
                              else float(self.ts[idx[real - 1]]))
        for i, x in enumerate(jax.tree.leaves(out["params_final"])):
            new[f"param_{i}"] = np.asarray(x)
        for k, v in out["stats"].items():
            if v is not None:
                new[f"stats_{k}"] = np.asarray(int(state.get(f"stats_{k}", 0)) + int(v))
        return new

    def assemble(self, state):
        obs, snaps, final = self._saved(state)
        return {"status": state["status"], "t_stop": float(state["t"]), "ts": state["times"],
                "obs": obs, "params": snaps, "obs_final": final,
                "params_final": jax.tree.unflatten(
                    self.p_def, [state[f"param_{i}"] for i in range(len(self.p_leaves0))]),
                "stats": {k[6:]: int(v) for k, v in state.items() if k.startswith("stats_")}}


class _DiscreteSegments(_Segments):
    """GD, SGD, optax: the state is the whole step-loop carry -- parameters, optimizer
    state, step count, the current epoch's minibatch permutation (SGD draws each epoch's
    from the fixed key folded with the epoch index) and extra loss evaluations -- so the
    segments take exactly the steps of one unsegmented run."""

    def __init__(self, dynamics, objective, p0, observer, ctx, ts, t1, *args):
        super().__init__(dynamics, objective, p0, observer, ctx, ts, t1, *args)
        n = objective.y.shape[0]
        self.dyn, self.steps, self.grids = dynamics._plan(ts, t1, n, objective.y.dtype)
        k_dtype = jnp.asarray(self.steps).dtype
        batch = self.dyn._batch()
        carry0 = {"params": p0, "opt_state": self.dyn._init_state(p0),
                  "k": jnp.asarray(0, k_dtype), "extra": jnp.asarray(0, k_dtype),
                  "batch_state": None if batch is None else batch.init(n)}
        self.carry_leaves0, self.carry_def = jax.tree.flatten(carry0)

    def fingerprint_parts(self):
        return [*_dynamics_parts(self.dynamics, self.p0), *self.grids]

    def initial(self):
        return super().initial() | {f"carry_{i}": _host(x)
                                    for i, x in enumerate(self.carry_leaves0)}

    def _carry(self, state):
        return jax.tree.unflatten(self.carry_def, [
            _like(state[f"carry_{i}"], t) for i, t in enumerate(self.carry_leaves0)])

    def advance(self, state):
        from . import discrete
        from ._tree import optional_array

        seg = int(state["segment"])
        idx, real = self._indices(seg)
        carry = self._carry(state)
        out = discrete._discrete_solve(
            self.dyn, self.objective, carry["params"], jnp.asarray(self.steps[idx]), None,
            self.observer, self.ctx, optional_array(self.stop_loss),
            optional_array(self.stop_grad), save_params=self.save_params, progress=False,
            carry0=carry, return_carry=True)
        out = jax.device_get(out)
        stopped = int(out["status"]) != 0
        new = self._append(state, out, real, done=stopped or seg + 1 == len(self.ends))
        for i, x in enumerate(jax.tree.leaves(out["carry"])):
            new[f"carry_{i}"] = _host(x)
        return new

    def assemble(self, state):
        # saves after a stop were never computed: zeros here, NaN after _finish (their
        # step is past the stop), dropped by the trajectory, as in one unsegmented run
        obs, snaps, final = self._saved(state, rows=len(self.ts))
        carry = jax.tree.unflatten(self.carry_def, [
            state[f"carry_{i}"] for i in range(len(self.carry_leaves0))])
        out = {"obs": obs, "params": snaps, "params_final": carry["params"],
               "k_stop": carry["k"], "obs_final": final, "status": state["status"],
               "stats": {"extra_evals": carry["extra"]}}
        out = self.dyn._finish(out, self.steps, self.grids)
        out["stats"] = {k: int(v) for k, v in out["stats"].items()}
        return out


def _drive(path: Path, run: _Segments, state, every_seconds, progress: bool):
    """Advance ``state`` segment by segment until the run is done, writing it to ``path``
    after a segment once ``every_seconds`` have passed since the last write (after every
    segment when ``None``). If the loop is interrupted by an exception (Ctrl-C, or
    SIGTERM under ``gflow run``), the last complete state is written before it
    propagates, so no finished segment is lost."""
    bar = None
    if progress:
        import tqdm

        bar = tqdm.tqdm(total=len(run.ts), initial=run.saves_done(state), delay=2.0,
                        desc="saves", unit="save")
    last, unsaved = time.monotonic(), False
    try:
        while not int(state["done"]):
            state = run.advance(state)
            if bar is not None:
                bar.update(run.saves_done(state) - bar.n)
            if int(state["done"]):
                break
            if every_seconds is None or time.monotonic() - last >= every_seconds:
                _save_state(path, state)
                last, unsaved = time.monotonic(), False
            else:
                unsaved = True
    except BaseException:
        if unsaved:
            _save_state(path, state)
        raise
    finally:
        if bar is not None:
            bar.close()
    return state


def simulate_resumable(path, net, params0, data, *, every: int | None = None,
                       every_seconds: float | None = None, loss="squared", dynamics=None,
                       t1: float, save: Any = None, observe=("loss",), stop_loss=None,
                       stop_grad=None, probes=None, save_params: bool = False,
                       throw: bool = True, progress: bool = False, keep: bool = False):
    """:func:`gflow.simulate`, run in segments of ``every`` save points and checkpointed
    to ``path`` (an ``.npz`` file); called again with the same arguments after an
    interruption, it continues from the last checkpoint.

    Which trigger applies: the run is always cut at the same save points -- segments of
    ``every`` of them (``1`` when only ``every_seconds`` is given) -- and the state is
    written at the end of a segment, of every segment when ``every_seconds`` is ``None``,
    else of the first segment that ends at least ``every_seconds`` of wall time after the
    previous write. Wall time decides only *when a file is written*, never where a segment
    ends, so the result does not depend on it: interrupted (SIGTERM, SIGKILL, Ctrl-C) and
    resumed, or not, the call returns bitwise the same trajectory (same machine, dtype and
    arguments). Changing ``every_seconds`` between the runs is allowed; other arguments
    are fingerprinted and a checkpoint of a different run is refused.

    What is saved: the observables so far (and snapshots with ``save_params``) and the
    state the dynamics needs to go on. GD, SGD and optax optimizers (any ``lr``, schedules
    included) carry their whole step-loop state -- parameters, optimizer state, step
    count, minibatch permutation (SGD's key is fixed; each epoch's permutation is drawn
    from it folded with the epoch index) -- so the result equals one unsegmented
    :func:`gflow.simulate` bitwise. Gradient flow carries the parameters and time: each
    segment is a fresh adaptive solve from a save time (diffrax restarts its step-size
    controller), so it differs from one unsegmented ``simulate`` within the solver
    tolerance; the segmented run is the reference that resumes reproduce.

    Arguments as :func:`gflow.simulate`, plus:
        path: the checkpoint file (``.npz``: numpy arrays only, read without pickle).
        every: save points per segment (>= 1).
        every_seconds: least wall time between two writes (>= 0), or ``None``.
        keep: keep the finished run in ``path`` (a later call returns it without
            computing); by default the file is removed once the run has finished.

    Returns:
        A :class:`gflow.Trajectory`, identical whether or not the call was interrupted.
    """
    from .flow import GradientFlow
    from .simulate import _to_trajectory, default_save, prepare, raise_for_status
    from .times import check_t1, resolve_times

    dynamics = GradientFlow() if dynamics is None else dynamics
    every, every_seconds = _check_every(every, every_seconds)
    t1 = check_t1(t1)
    ts = resolve_times(default_save(dynamics, t1) if save is None else save, t1)
    objective, p0, observer, ctx, stop_loss, stop_grad = prepare(
        net, params0, data, loss=loss, dynamics=dynamics, observe=observe, probes=probes,
        stop_loss=stop_loss, stop_grad=stop_grad)
    check_memory(observer, p0, ctx, len(ts), save_params=save_params, dynamics=dynamics)
    kind = _GFSegments if isinstance(dynamics, GradientFlow) else _DiscreteSegments
    run = kind(dynamics, objective, p0, observer, ctx, ts, t1, stop_loss, stop_grad, every,
               save_params)
    fp = _fingerprint(type(net).__name__, repr(net), *_arrays(net), repr(loss), t1, ts,
                      tuple(observer.observables), stop_loss, stop_grad, every, save_params,
                      *_arrays(data), probes, *run.p_leaves0, *run.fingerprint_parts())
    path = Path(path)
    state = _load_state(path, fp)
    finished_before = state is not None and bool(int(state["done"]))
    if state is None:
        state = run.initial() | {"fingerprint": np.asarray(fp)}
    state = _drive(path, run, state, every_seconds, progress)
    if keep and not finished_before:
        _save_state(path, state)
    traj = _to_trajectory(run.assemble(state), p0, dynamics, observer)
    if not keep:
        path.unlink(missing_ok=True)
    if throw:
        raise_for_status(traj)
    return traj


# -- ensembles: finished chunks of members ------------------------------------------------


class ChunkStore:
    """The finished chunks of a :func:`gflow.simulate_ensemble` call, one ``.npz`` per
    chunk (the chunk's output leaves) in ``directory``, tagged with the call's
    fingerprint. ``keep=False`` removes them once the whole ensemble has finished."""

    def __init__(self, directory, fingerprint: str, keep: bool = False):
        self.directory, self.fingerprint, self.keep = Path(directory), fingerprint, keep

    def _path(self, i: int) -> Path:
        return self.directory / f"chunk_{i:05d}.npz"

    def load(self, i: int) -> list[np.ndarray] | None:
        state = _load_state(self._path(i), self.fingerprint)
        if state is None:
            return None
        return [state[f"leaf_{j}"] for j in range(int(state["n_leaves"]))]

    def save(self, i: int, leaves) -> None:
        _save_state(self._path(i), {
            "fingerprint": np.asarray(self.fingerprint), "n_leaves": np.asarray(len(leaves)),
            **{f"leaf_{j}": np.asarray(x) for j, x in enumerate(leaves)}})

    def finish(self) -> None:
        if self.keep:
            return
        for p in self.directory.glob("chunk_*.npz"):
            p.unlink()
        with contextlib.suppress(OSError):
            self.directory.rmdir()


def ensemble_fingerprint(dynamics, member0_params, *parts) -> str:
    """Fingerprint of an ensemble call: ``parts`` (its flat inputs and static settings)
    and the dynamics (optax hyper-parameters included)."""
    return _fingerprint("ensemble", *parts, *_dynamics_parts(dynamics, member0_params))


# -- checkpointing every run inside a block (what `gflow run` uses) -------------------------


@dataclasses.dataclass
class Checkpointing:
    """The settings of an active :func:`checkpointing` block and its call counter."""

    directory: Path
    every: int
    every_seconds: float | None
    calls: int = 0

    def next_path(self, suffix: str = "") -> Path:
        """The checkpoint of the next run in this block: ``call_NNNN`` + ``suffix``."""
        path = self.directory / f"call_{self.calls:04d}{suffix}"
        self.calls += 1
        return path


_ACTIVE: list[Checkpointing] = []


@contextlib.contextmanager
def checkpointing(directory, *, every: int | None = 10,
                  every_seconds: float | None = None) -> Iterator[Checkpointing]:
    """Checkpoint every run started inside the block, numbered in call order.

    Each :func:`gflow.simulate` call ``i`` runs as :func:`simulate_resumable` with
    ``path=directory/call_<i>.npz``, ``every``, ``every_seconds`` and ``keep=True``; each
    :func:`gflow.simulate_ensemble` call (and so each group of :func:`gflow.sweep`) keeps
    its finished chunks of members in ``directory/call_<i>/``. Code that makes the same
    calls in the same order -- an experiment's ``run(config)`` -- run again inside the same
    block after an interruption reads the finished calls back, continues the interrupted
    one from its last checkpoint, and returns bitwise the same results as a run that was
    never interrupted. Every call is fingerprinted, so a different sequence of calls is
    refused, not mixed up. The files stay until the caller removes ``directory``.

    Note that gradient flow inside the block runs in segments (see
    :func:`simulate_resumable`), so it agrees with a plain ``simulate`` to the solver
    tolerance; discrete dynamics agree bitwise.
    """
    every, every_seconds = _check_every(every, every_seconds)
    ck = Checkpointing(Path(directory), every, every_seconds)
    _ACTIVE.append(ck)
    try:
        yield ck
    finally:
        _ACTIVE.pop()


def active() -> Checkpointing | None:
    """The innermost active :func:`checkpointing` block, or ``None``."""
    return _ACTIVE[-1] if _ACTIVE else None

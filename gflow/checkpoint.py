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
``every`` save points. After each segment its state (parameters, time, observables so
far, solver statistics) is written atomically to an ``.npz`` file (read back with
``allow_pickle=False``); called again with the same arguments after an interruption it
continues from the last segment and returns exactly (bitwise, same machine and dtype)
what an uninterrupted call returns. The segmented run is the reference: each segment
restarts the adaptive step-size controller at a save time, so it differs (within the
solver tolerance) from one unsegmented ``simulate``. Supported dynamics: gradient flow
and GD with a constant learning rate (their whole state is the parameters).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

__all__ = ["available_memory", "check_memory", "check_memory_members", "estimate_bytes",
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


def estimate_bytes(observer, params, ctx, n_saves: int, *, members: int = 1,
                   save_params: bool = False) -> tuple[int, int]:
    """``(total, per_save)`` bytes one run keeps: ``members x n_saves x per_save``, where
    ``per_save`` is the size of all observables (shapes from ``jax.eval_shape``, nothing is
    computed) plus, with ``save_params``, one parameter snapshot, for one member."""
    shapes = jax.eval_shape(observer, params, ctx)
    per_save = _nbytes(shapes) + (_nbytes(params) if save_params else 0)
    return members * n_saves * per_save, per_save


def check_memory(observer, params, ctx, n_saves: int, *, members: int = 1,
                 save_params: bool = False) -> int:
    """Raise ``ValueError`` if the results of a run would not fit in memory; returns the
    estimate in bytes."""
    total, per_save = estimate_bytes(observer, params, ctx, n_saves, members=members,
                                     save_params=save_params)
    limit = available_memory()
    if limit is not None and _COPIES * total > limit:
        gib = 2.0**30
        what = "observables" + (" and parameter snapshots" if save_params else "")
        raise ValueError(
            f"this run would keep {_COPIES * total / gib:.3g} GiB of saved {what} "
            f"({members} member(s) x {n_saves} saves x {per_save} bytes, held twice while "
            f"copied to the host) but only {limit / gib:.3g} GiB is available. Save at fewer "
            "times (save=gflow.LogTimes(k) with a smaller k), observe fewer or smaller "
            "observables" + (", drop save_params=True" if save_params else "")
            + ", or run the members in several calls (chunk_size= bounds only the memory of "
            "one compiled call). Override the limit with GFLOW_MEMORY_LIMIT=<bytes>|off."
        )
    return total


def check_memory_members(observer, treedef, leaves, axes, n_saves: int, members: int, *,
                         save_params: bool = False) -> int:
    """:func:`check_memory` for an ensemble given as the flat ``(scalars, dynamics,
    objective, params0, times, ctx)`` leaves of ``simulate_ensemble`` and their member axes
    (0: per member, sliced to member 0 for the estimate)."""
    one = [jax.ShapeDtypeStruct(x.shape[1:], x.dtype) if a == 0 else x
           for x, a in zip(leaves, axes, strict=True)]
    _, _, _, params, _, ctx = jax.tree.unflatten(treedef, one)
    return check_memory(observer, params, ctx, n_saves, members=members,
                        save_params=save_params)


# -- checkpointed runs ---------------------------------------------------------------------


def _fingerprint(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray | jax.Array):
            a = np.asarray(p)
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        else:  # memory addresses in a repr (functions, objects) differ between processes
            h.update(re.sub(r" at 0x[0-9a-fA-F]+", "", repr(p)).encode())
    return h.hexdigest()


def _save_state(path: Path, state: dict[str, np.ndarray]) -> None:
    """Write the checkpoint atomically (a temporary file, then ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **state)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _load_state(path: Path, fingerprint: str) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        state = {k: z[k] for k in z.files}
    if str(state["fingerprint"]) != fingerprint:
        raise ValueError(f"checkpoint {str(path)!r} belongs to a different run (other "
                         "settings, data or initial parameters); remove it or use another path.")
    return state


def simulate_resumable(path, net, params0, data, *, every: int, loss="squared",
                       dynamics=None, t1: float, save: Any = None, observe=("loss",),
                       stop_loss=None, stop_grad=None, probes=None, throw: bool = True):
    """:func:`gflow.simulate`, checkpointed to ``path`` (an ``.npz`` file) every ``every``
    save points and resumed from it when it exists (same arguments required).

    Arguments as :func:`gflow.simulate` (without ``save_params``/``progress``), plus
    ``path`` and ``every`` (save points per segment, >= 1). The checkpoint is removed once
    the run has finished.

    Returns:
        A :class:`gflow.Trajectory`, identical whether or not the call was interrupted.
    """
    from .discrete import GD
    from .flow import GradientFlow
    from .simulate import _to_trajectory, default_save, prepare, raise_for_status
    from .times import check_t1, resolve_times

    dynamics = GradientFlow() if dynamics is None else dynamics
    if not (isinstance(dynamics, GradientFlow)
            or (type(dynamics) is GD and not callable(dynamics.lr))):
        raise ValueError("simulate_resumable supports gflow.GradientFlow and gflow.GD with a "
                         f"constant lr (their state is the parameters), got {dynamics!r}.")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be an integer >= 1 (save points per segment), "
                         f"got {every!r}.")
    t1 = check_t1(t1)
    ts = resolve_times(default_save(dynamics, t1) if save is None else save, t1)
    objective, p0, observer, ctx, stop_loss, stop_grad = prepare(
        net, params0, data, loss=loss, dynamics=dynamics, observe=observe, probes=probes,
        stop_loss=stop_loss, stop_grad=stop_grad)
    check_memory(observer, p0, ctx, len(ts))
    leaves0, treedef = jax.tree.flatten(p0)
    fp = _fingerprint(type(net).__name__, repr(net), dynamics.describe(), repr(loss), t1, ts,
                      tuple(observer.observables), stop_loss, stop_grad, every,
                      np.asarray(data.X), np.asarray(data.y), probes, *leaves0)
    path = Path(path)
    # segment j holds the save points j*every ... (j+1)*every - 1 and ends at the last one
    ends = [min(i + every, len(ts)) - 1 for i in range(0, len(ts), every)]
    state = _load_state(path, fp)
    if state is None:
        seg, t_now, leaves = 0, 0.0, [np.asarray(x) for x in leaves0]
        obs_done: dict[str, list] = {k: [] for k in observer.observables}
        times_done: list = []
        stats: dict[str, Any] = {}
    else:
        seg, t_now = int(state["segment"]), float(state["t"])
        leaves = [state[f"param_{i}"] for i in range(len(leaves0))]
        obs_done = {k: [state[f"obs_{k}"]] for k in observer.observables}
        times_done = [state["times"]]
        stats = {k[6:]: int(v) for k, v in state.items() if k.startswith("stats_")}
    start = 0 if seg == 0 else ends[seg - 1] + 1
    out = None
    while seg < len(ends):
        idx = np.arange(start, ends[seg] + 1)
        seg_ts = ts[idx] - t_now
        y = jax.tree.unflatten(treedef, [jax.numpy.asarray(x) for x in leaves])
        if seg_ts[-1] <= 0:  # save points at the current time (t = 0): observe, no solve
            obs = jax.device_get(observer(y, ctx))
            out = {"status": 0, "t_stop": 0.0, "ts": seg_ts, "params_final": y,
                   "obs": {k: np.repeat(np.asarray(v)[None], len(idx), 0) for k, v in obs.items()},
                   "obs_final": obs, "stats": {}}
        else:
            out = dynamics._integrate(objective, y, seg_ts, float(seg_ts[-1]), observer, ctx,
                                      stop_loss=stop_loss, stop_grad=stop_grad,
                                      save_params=False, progress=False)
        for k, v in out["stats"].items():
            if v is not None:
                stats[k] = stats.get(k, 0) + int(v)
        if isinstance(dynamics, GradientFlow):
            seg_times = ts[idx]
        else:  # iterate k sits at k * lr, as in one unsegmented run
            lr = float(dynamics.lr)
            seg_times = np.rint((np.asarray(out["ts"], np.float64) + t_now) / lr) * lr
        for k in obs_done:
            obs_done[k].append(np.asarray(out["obs"][k]))
        times_done.append(seg_times)
        leaves = [np.asarray(x) for x in jax.tree.leaves(out["params_final"])]
        if int(out["status"]) != 0:  # stopped or failed inside this segment
            t_now += float(out["t_stop"])
            if not isinstance(dynamics, GradientFlow):
                t_now = float(np.rint(t_now / lr) * lr)
            break
        t_now = float(seg_times[-1])
        seg, start = seg + 1, ends[seg] + 1
        if seg < len(ends):
            _save_state(path, {
                "fingerprint": np.asarray(fp), "segment": np.asarray(seg),
                "t": np.asarray(t_now), "times": np.concatenate(times_done),
                **{f"param_{i}": x for i, x in enumerate(leaves)},
                **{f"obs_{k}": np.concatenate(v) for k, v in obs_done.items()},
                **{f"stats_{k}": np.asarray(v) for k, v in stats.items()}})
    full = {"status": out["status"], "t_stop": t_now,
            "ts": np.concatenate(times_done),
            "obs": {k: np.concatenate(v) for k, v in obs_done.items()},
            "params": None, "params_final": jax.tree.unflatten(treedef, leaves),
            "obs_final": out["obs_final"], "stats": stats}
    traj = _to_trajectory(full, p0, dynamics, observer)
    path.unlink(missing_ok=True)
    if throw:
        raise_for_status(traj)
    return traj

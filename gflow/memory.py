"""The memory guard: refuse a run whose saved results would not fit, before it starts.

A run keeps every observable at every save time (and, with ``save_params=True``, a
parameter snapshot per save), for every member of an ensemble. ``simulate`` and
``simulate_ensemble`` call :func:`check_memory` before compiling: when the estimate
exceeds the available memory the run is refused with a ``ValueError`` that says how to
shrink it, instead of failing (or swapping) hours later.

The limit is the available host memory (``MemAvailable`` of ``/proc/meminfo``, else
``os.sysconf``), and on an accelerator also the free device memory. Override it with the
environment variable ``GFLOW_MEMORY_LIMIT`` (bytes, or with a suffix ``K/M/G/T``; ``off``
disables the check) or, in code, with ``with gflow.checkpoint.memory_limit(nbytes): ...``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Iterator

import jax
import numpy as np

from . import footprint

__all__ = ["available_memory", "check_memory", "estimate_bytes",
           "memory_limit"]

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

"""Shared pieces of :mod:`gflow.stats`: JSON-safe results, argument checks, seed resampling."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np


def _num(v: float) -> Any:
    """A float as JSON: NaN -> None, +-inf -> "inf"/"-inf" (as :mod:`gflow.io` writes them)."""
    v = float(v)
    if math.isnan(v):
        return None
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, bool | str | int) or x is None:
        return x
    return _num(x)


class Result:
    """Base of the result dataclasses: ``to_dict()`` for summary.json."""

    def to_dict(self) -> dict:
        """JSON-safe dict (floats, lists, str; NaN as None, infinities as "inf"/"-inf"), with
        ``resolved`` where the result has it."""
        d = dataclasses.asdict(self)
        if hasattr(type(self), "resolved"):
            d["resolved"] = bool(self.resolved)
        return jsonable(d)


# ----------------------------------------------------------------------- argument checks


def check_confidence(c: float, name: str = "confidence") -> float:
    if not (isinstance(c, int | float) and 0.0 < c < 1.0):
        raise ValueError(f"{name} must be a number in (0, 1), e.g. 0.95, got {c!r}.")
    return float(c)


def check_grid(grid, size: int | None = None, name: str = "grid") -> np.ndarray:
    g = np.asarray(grid, dtype=float)
    if g.ndim != 1 or g.size < 2:
        raise ValueError(f"{name} must be a 1-D array of at least 2 values, got shape {g.shape}.")
    if not (np.all(np.isfinite(g)) and np.all(g > 0)):
        raise ValueError(f"{name} must hold finite positive values (it is used on a log scale).")
    if np.any(np.diff(g) <= 0):
        raise ValueError(f"{name} must be strictly increasing, got {g.tolist()}.")
    if size is not None and g.size != size:
        raise ValueError(f"{name} has {g.size} values but success has {size} grid columns.")
    return g


def check_binary(a, ndim: int, name: str, shape: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}.")
    if arr.dtype != bool:
        arr = arr.astype(float)
        if not np.all((arr == 0) | (arr == 1)):
            raise ValueError(f"{name} must hold only 0/1 or booleans (a run that did not finish "
                             f"is a failure, or budget-bound: see budget=).")
    if arr.shape[-2] < 1:
        raise ValueError(f"{name} has no seeds (axis -2 is empty).")
    return arr.astype(bool)


def check_budget(budget, success: np.ndarray) -> np.ndarray:
    if budget is None:
        return np.zeros_like(success)
    b = check_binary(budget, success.ndim, "budget", "like success")
    if b.shape != success.shape:
        raise ValueError(f"budget has shape {b.shape} but success has {success.shape}.")
    if np.any(b & success):
        raise ValueError("budget marks runs that succeeded; it must be True only for failed runs "
                         "that ran out of time.")
    return b


def check_resamples(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 100:
        raise ValueError(f"n_resamples must be an integer >= 100, got {n!r}.")
    return int(n)


def check_x(x, size: int | None = None) -> np.ndarray:
    xs = np.asarray(x, dtype=float)
    if xs.ndim != 1 or not (np.all(np.isfinite(xs)) and np.all(xs > 0)):
        raise ValueError(f"x must be a 1-D array of finite positive values, got {x!r}.")
    if size is not None and xs.size != size:
        raise ValueError(f"x has {xs.size} values but the data has {size} points (axis 0).")
    return xs


def seed_indices(rng: np.random.Generator, B: int, S: int) -> np.ndarray:
    return rng.integers(0, S, size=(B, S))


def percentile(v: np.ndarray, confidence: float, axis: int = 0):
    """Percentile interval as order statistics (exact with infinite entries)."""
    a = (1.0 - confidence) / 2.0
    return (np.quantile(v, a, axis=axis, method="inverted_cdf"),
            np.quantile(v, 1.0 - a, axis=axis, method="inverted_cdf"))


def check_level(level) -> float:
    if not (isinstance(level, int | float) and 0.0 < level <= 1.0):
        raise ValueError(f"level must be a success probability in (0, 1], got {level!r}.")
    return float(level)

"""Save-time specifications: where on the time axis observables are recorded.

``save=`` accepts :class:`LogTimes`, :class:`LinTimes` or an explicit array of times in
``[0, t1]`` (strictly increasing).
"""

from __future__ import annotations

import equinox as eqx
import numpy as np

__all__ = ["LinTimes", "LogTimes", "resolve_times"]


def _check_n(n):
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2:
        raise ValueError(f"number of save times must be an integer >= 2, got {n!r}.")


class LogTimes(eqx.Module):
    """``n`` save times: 0, then ``n-1`` log-spaced times from ``t_min`` to ``t1``.

    ``t_min`` defaults to ``t1 * 1e-4``.
    """

    n: int = eqx.field(static=True)
    t_min: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        _check_n(self.n)
        if self.t_min is not None and not self.t_min > 0:
            raise ValueError(f"LogTimes: t_min must be > 0, got {self.t_min!r}.")

    def resolve(self, t1: float) -> np.ndarray:
        t_min = t1 * 1e-4 if self.t_min is None else self.t_min
        if t_min >= t1:
            raise ValueError(f"LogTimes: t_min={t_min} must be < t1={t1}.")
        ts = np.concatenate([[0.0], np.geomspace(t_min, t1, self.n - 1)])
        ts[-1] = t1
        return ts


class LinTimes(eqx.Module):
    """``n`` equally spaced save times from 0 to ``t1``."""

    n: int = eqx.field(static=True)

    def __check_init__(self):
        _check_n(self.n)

    def resolve(self, t1: float) -> np.ndarray:
        return np.linspace(0.0, t1, self.n)


def check_t1(t1) -> float:
    try:
        t1 = float(t1)
    except (TypeError, ValueError):
        raise ValueError(f"t1 must be a positive number, got {t1!r}.") from None
    if not (np.isfinite(t1) and t1 > 0):
        raise ValueError(f"t1 must be a finite number > 0, got {t1!r}.")
    return t1


def resolve_times(save, t1: float) -> np.ndarray:
    """Save times (float64 numpy, strictly increasing, within [0, t1]) for ``save=``."""
    if isinstance(save, LogTimes | LinTimes):
        return save.resolve(t1)
    if isinstance(save, int) and not isinstance(save, bool):
        return LogTimes(save).resolve(t1)
    try:
        ts = np.asarray(save, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"save must be gflow.LogTimes(n), gflow.LinTimes(n) or an array of times, got {save!r}."
        ) from None
    if ts.ndim != 1 or ts.size == 0:
        raise ValueError(f"save times must be a non-empty 1-d array, got shape {ts.shape}.")
    if not np.all(np.isfinite(ts)):
        raise ValueError("save times contain NaN or inf.")
    if np.any(np.diff(ts) <= 0):
        raise ValueError("save times must be strictly increasing (sorted, no duplicates).")
    if ts[0] < 0 or ts[-1] > t1 * (1 + 1e-12):
        raise ValueError(f"save times must lie in [0, t1={t1}], got [{ts[0]}, {ts[-1]}].")
    return ts

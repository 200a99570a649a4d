"""Save-time specifications: where on the time axis observables are recorded.

``save=`` accepts :class:`LogTimes`, :class:`LinTimes` or an explicit array of times in
``[0, t1]`` (strictly increasing).

Discrete dynamics save at the step nearest each requested time, gradient flow at the time
itself, so the same ``LogTimes(100)`` lands on different points for GF and for GD. With
``step=lr`` both grids are rounded to distinct multiples ``k * lr`` (the iterate times of a
constant-``lr`` dynamics, computed as GD computes them), so GF and GD are saved at the same
times and compare point by point.
"""

from __future__ import annotations

import equinox as eqx
import numpy as np

__all__ = ["LinTimes", "LogTimes", "on_steps", "resolve_times"]


def _check_n(n):
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2:
        raise ValueError(f"number of save times must be an integer >= 2, got {n!r}.")


def _check_step(owner: str, step):
    if step is not None and (isinstance(step, bool) or not isinstance(step, int | float)
                             or not (np.isfinite(step) and step > 0)):
        raise ValueError(f"{owner}: step must be a number > 0 (e.g. the lr of the discrete "
                         f"dynamics to compare with), got {step!r}.")


def on_steps(ts: np.ndarray, step: float, t1: float) -> np.ndarray:
    """``ts`` rounded to distinct multiples ``k * step`` in ``[0, t1]`` (duplicates merged, so
    there may be fewer); ``k * step`` as the discrete dynamics compute their step times."""
    K = int(np.floor(t1 / step * (1 + 1e-12)))
    if K < 1:
        raise ValueError(f"step={step:g} is longer than t1={t1:g}: no step ends in [0, t1].")
    ks = np.unique(np.clip(np.round(np.asarray(ts) / step), 0, K).astype(np.int64))
    return np.arange(K + 1, dtype=np.float64)[ks] * float(step)


class LogTimes(eqx.Module):
    """``n`` save times: 0, then ``n-1`` log-spaced times from ``t_min`` to ``t1``.

    ``t_min`` defaults to ``t1 * 1e-4`` (with ``step``, to at least one step). With ``step``,
    the times are rounded to distinct multiples of it (module docstring): at most ``n``.
    """

    n: int = eqx.field(static=True)
    t_min: float | None = eqx.field(static=True, default=None)
    step: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        _check_n(self.n)
        if self.t_min is not None and not self.t_min > 0:
            raise ValueError(f"LogTimes: t_min must be > 0, got {self.t_min!r}.")
        _check_step("LogTimes", self.step)

    def resolve(self, t1: float) -> np.ndarray:
        t_min = t1 * 1e-4 if self.t_min is None else self.t_min
        if t_min >= t1:
            raise ValueError(f"LogTimes: t_min={t_min} must be < t1={t1}.")
        if self.step is not None and self.t_min is None:
            t_min = max(t_min, float(self.step))
        if t_min >= t1:
            raise ValueError(f"LogTimes: t_min={t_min} must be < t1={t1}.")
        ts = np.concatenate([[0.0], np.geomspace(t_min, t1, self.n - 1)])
        ts[-1] = t1
        return ts if self.step is None else on_steps(ts, self.step, t1)


class LinTimes(eqx.Module):
    """``n`` equally spaced save times from 0 to ``t1``; with ``step``, rounded to distinct
    multiples of it (module docstring)."""

    n: int = eqx.field(static=True)
    step: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        _check_n(self.n)
        _check_step("LinTimes", self.step)

    def resolve(self, t1: float) -> np.ndarray:
        ts = np.linspace(0.0, t1, self.n)
        return ts if self.step is None else on_steps(ts, self.step, t1)


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

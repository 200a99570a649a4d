"""Checks of a run's inputs that go beyond shapes, each a ``ValueError`` that names the
input and the fix, raised before anything is compiled.

- :func:`check_param_leaves`: every parameter leaf is a real array (a nested list, a
  Python number or a complex array is refused -- gflow trains real parameters);
- :func:`check_finite_params`: initial parameters are finite after the cast to the run's
  dtype (NaN/inf there is bad input, not divergence);
- :func:`check_single_dataset`: ``simulate`` gets one dataset, not a stack;
- :func:`check_loss`: a callable loss returns one value per sample, shape ``(n,)``;
- :func:`check_diverge_factor`: the growth criterion of divergence is a number > 1;
- :func:`optax_learning_rate` / :func:`check_optax_lr`: the learning rate an optax
  optimizer was built with, where it can be read, must equal gflow's ``lr`` -- the time
  one step advances (``t_k = k * lr``), so a mismatch would label every step with the
  wrong time.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["check_diverge_factor", "check_finite_params", "check_loss", "check_optax_lr",
           "check_param_leaves", "check_single_dataset", "optax_learning_rate"]


def _name(path) -> str:
    return "params" + jax.tree_util.keystr(path)


def check_param_leaves(params) -> None:
    """Refuse parameter leaves that are not real numeric arrays."""
    for path, x in jax.tree_util.tree_leaves_with_path(params):
        if not isinstance(x, np.ndarray | jax.Array):
            seq = [i for i, k in enumerate(path) if isinstance(k, jax.tree_util.SequenceKey)]
            if seq:  # numbers inside a list: an array written as a list
                raise ValueError(
                    f"{_name(path[:seq[0]])} is a list (or tuple) of numbers, not an "
                    "array: parameters must be arrays (build them with gflow.init.*, or wrap "
                    "lists in jnp.asarray(...)).")
            if not isinstance(x, int | float | np.number):
                raise ValueError(f"{_name(path)} is a {type(x).__name__}, not an array.")
            continue
        if jnp.issubdtype(x.dtype, jnp.complexfloating):
            raise ValueError(f"{_name(path)} is complex ({x.dtype}); gflow trains real "
                             "parameters (as it takes real data).")
        if not (jnp.issubdtype(x.dtype, jnp.number) or x.dtype == jnp.bool_):
            raise ValueError(f"{_name(path)} has dtype {x.dtype}; parameters must be real "
                             "numbers.")


def check_finite_params(params, member_axes: int = 0) -> None:
    """Refuse NaN or inf in the initial parameters (as cast to the run's dtype)."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    if any(isinstance(x, jax.core.Tracer) for _, x in leaves):
        return  # inside a trace: values unknown
    for path, x in leaves:
        bad = ~np.isfinite(np.asarray(x))
        if bad.any():
            where = ""
            if member_axes and bad.ndim:
                members = np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1))
                where = f" (member(s) {members[:5].tolist()}{'...' if len(members) > 5 else ''})"
            raise ValueError(
                f"the initial parameters are not finite: {_name(path)} has NaN or inf{where} "
                f"as {x.dtype}. Initialise with finite values (values beyond the dtype's range "
                "become inf; use float64 with jax_enable_x64 for larger ones).")


def check_single_dataset(data) -> None:
    """``simulate`` runs one net on one dataset: ``X`` must be ``(n, d)``."""
    if data.X.ndim != 2:
        raise ValueError(f"data.X has shape {tuple(data.X.shape)}, a stack of datasets; "
                         "simulate needs one dataset with X of shape (n, d) (use "
                         "gflow.simulate_ensemble for one dataset per member).")


def check_loss(loss, loss_fn, n: int, dtype) -> None:
    """A callable loss must map ``(f, y)`` of shape ``(n,)`` to per-sample values ``(n,)``."""
    if isinstance(loss, str):
        return
    x = jax.ShapeDtypeStruct((n,), dtype)
    try:
        out = jax.eval_shape(loss_fn, x, x)
    except Exception as e:  # noqa: BLE001 - any failure of the user's function
        raise ValueError(f"loss: calling it as loss(f, y) with f, y of shape ({n},) failed: "
                         f"{type(e).__name__}: {e}") from None
    if not hasattr(out, "shape") or tuple(out.shape) != (n,):
        got = tuple(out.shape) if hasattr(out, "shape") else type(out).__name__
        raise ValueError(f"loss must return one value per sample, shape ({n},), got {got}; "
                         "gflow takes the mean itself (return e.g. 0.5 * (f - y) ** 2, not "
                         "its mean).")


def check_diverge_factor(diverge_factor) -> float | None:
    """``diverge_factor`` (``None``: off) as a float, refused unless a finite number > 1."""
    if diverge_factor is None:
        return None
    try:
        v = float(diverge_factor)
    except (TypeError, ValueError):
        v = math.nan
    if isinstance(diverge_factor, bool) or not (math.isfinite(v) and v > 1):
        raise ValueError(
            f"diverge_factor must be a finite number > 1 (the run diverges once its loss "
            f"exceeds diverge_factor x its initial loss) or None, got {diverge_factor!r}.")
    return v


def _closure_values(fn, name: str, found: list, seen: set, depth: int = 0) -> None:
    """Values of the free variable ``name`` in ``fn`` and the functions it closes over."""
    code = getattr(fn, "__code__", None)
    if code is None or id(fn) in seen or depth > 12:
        return
    seen.add(id(fn))
    for var, cell in zip(code.co_freevars, fn.__closure__ or (), strict=True):
        try:
            v = cell.cell_contents
        except ValueError:
            continue
        if var == name:
            found.append(v)
        for item in (v if isinstance(v, tuple | list) else (v,)):
            if callable(item):
                _closure_values(getattr(item, "update", item), name, found, seen, depth + 1)


def optax_learning_rate(optimizer) -> float | None:
    """The learning rate ``optimizer`` was built with, where it can be read: the
    ``learning_rate`` hyper-parameter of ``optax.inject_hyperparams``, or the one
    ``optax.scale`` step of a chain (as ``optax.adam(lr)`` and the other aliases build
    it); ``None`` for schedules and anything else."""
    try:
        state = optimizer.init({})
        hyper = getattr(state, "hyperparams", None)
        if isinstance(hyper, dict) and "learning_rate" in hyper:
            lr = hyper["learning_rate"]
            return float(lr) if np.ndim(lr) == 0 else None
    except Exception:  # noqa: BLE001 - an optimizer that cannot init without params
        pass
    steps: list[Any] = []
    _closure_values(optimizer.update, "step_size", steps, set())
    schedules: list[Any] = []
    _closure_values(optimizer.update, "step_size_fn", schedules, set())
    numeric = [s for s in steps if isinstance(s, int | float | np.number) or np.ndim(s) == 0]
    if len(numeric) != 1 or schedules:
        return None  # none, several scalings, or a schedule: not one readable rate
    try:
        return -float(numeric[0])
    except (TypeError, ValueError):
        return None


def check_optax_lr(optimizer, lr) -> None:
    """Refuse ``Optax(optimizer, lr)`` when the optimizer's own learning rate is readable
    and differs from ``lr`` (relative 1e-6: the same number written twice)."""
    if callable(lr) or np.ndim(lr) != 0:
        return
    own = optax_learning_rate(optimizer)
    if own is None or math.isclose(own, float(lr), rel_tol=1e-6):
        return
    raise ValueError(
        f"Optax: the optimizer was built with learning rate {own:g} but lr={float(lr):g}. "
        "lr is the time one step advances (t = step x lr), so it must be the optimizer's "
        f"learning rate: give lr={own:g}, or build the optimizer with learning_rate={float(lr):g}.")

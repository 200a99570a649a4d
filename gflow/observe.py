"""Observables: functions of the current parameters, computed inside the solve.

An observable is ``fn(params, ctx) -> array`` where ``ctx`` is an :class:`ObsContext`
(objective, initial parameters, test data, probe inputs). Built-in observables:

========================  ==============================================================
``loss``                  full-batch training loss L(theta)
``accuracy``              fraction of training samples with ``y_i f(x_i) > 0``
``test_loss``             loss on ``X_test`` (needs test data)
``test_accuracy``         accuracy on ``X_test`` (needs test data)
``grad_norm``             ``|grad L(theta)|`` (trained leaves only)
``param_norm``            ``|theta|``
``weight_movement``       ``|theta_t - theta_0|``
``margin``                normalized margin ``min_i y_i f(x_i) / |theta|^2``
``balancedness``          per neuron ``a_j^2 - |w_j|^2 - b_j^2``, shape (m,)
``output``                ``f`` at the probe inputs, shape (p,) (needs ``probes=``)
========================  ==============================================================

The research modules define more (``OBSERVABLES`` in :mod:`gflow.ntk`,
:mod:`gflow.population`, :mod:`gflow.rotation`, :mod:`gflow.condense`); ``import gflow``
registers them all with :func:`register_table`. Users add their own with :func:`register`
or by passing a callable in ``observe=``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._tree import tree_norm
from .objective import AbstractObjective

__all__ = [
    "OBSERVABLES", "ObsContext", "Observable", "Observer", "register", "register_table", "resolve",
]


class ObsContext(eqx.Module):
    """What an observable may look at besides the current parameters."""

    objective: AbstractObjective
    params0: eqx.Module
    X_test: Float[Array, "nt d"] | None = None
    y_test: Float[Array, " nt"] | None = None
    probes: Float[Array, "p d"] | None = None


class Observable(eqx.Module):
    """An observable: ``fn(params, ctx)``; ``dims`` names its trailing axes (for xarray);
    ``needs`` lists the context fields it requires (``"test"``, ``"probes"``).

    Where ``fn`` is an :class:`equinox.Module`, its array leaves are kept apart
    (``arrays``) and traced in the solve, the rest is static: observables that differ only
    in those arrays (e.g. a step size held as an array) share one compiled program."""

    fn: Callable = eqx.field(static=True)
    dims: tuple[str, ...] = eqx.field(static=True, default=())
    needs: tuple[str, ...] = eqx.field(static=True, default=())
    arrays: Any = None

    def __init__(self, fn: Callable, dims: tuple[str, ...] = (), needs: tuple[str, ...] = ()):
        arrays = None
        if isinstance(fn, eqx.Module):
            split, rest = eqx.partition(fn, eqx.is_array)
            if jax.tree.leaves(split):
                arrays, fn = split, rest
        self.fn, self.dims, self.needs, self.arrays = fn, tuple(dims), tuple(needs), arrays

    def __call__(self, params, ctx: ObsContext):
        fn = self.fn if self.arrays is None else eqx.combine(self.arrays, self.fn)
        return fn(params, ctx)


def _accuracy(f, y):
    return jnp.mean((y * f > 0).astype(f.dtype))


def _test_loss(p, c: ObsContext):
    return jnp.mean(c.objective.loss_fn(c.objective.output(p, c.X_test), c.y_test))


def _balancedness(p, c: ObsContext):
    bal = p.a**2 - jnp.sum(p.W**2, axis=-1)
    return bal if p.b is None else bal - p.b**2


OBSERVABLES: dict[str, Observable] = {
    "loss": Observable(lambda p, c: c.objective.loss(p)),
    "accuracy": Observable(lambda p, c: _accuracy(c.objective.output(p), c.objective.y)),
    "test_loss": Observable(_test_loss, needs=("test",)),
    "test_accuracy": Observable(
        lambda p, c: _accuracy(c.objective.output(p, c.X_test), c.y_test), needs=("test",)
    ),
    "grad_norm": Observable(lambda p, c: tree_norm(c.objective.grad(p))),
    "param_norm": Observable(lambda p, c: tree_norm(p)),
    "weight_movement": Observable(
        lambda p, c: tree_norm(jax.tree.map(jnp.subtract, p, c.params0))
    ),
    "margin": Observable(
        lambda p, c: jnp.min(c.objective.y * c.objective.output(p)) / tree_norm(p) ** 2
    ),
    "balancedness": Observable(_balancedness, dims=("neuron",)),
    "output": Observable(lambda p, c: c.objective.output(p, c.probes), dims=("probe",),
                         needs=("probes",)),
}


def register(name: str, fn: Callable, *, dims: tuple[str, ...] = (), needs=()) -> None:
    """Add an observable ``fn(params, ctx) -> array`` under ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"observable name must be a non-empty string, got {name!r}.")
    OBSERVABLES[name] = Observable(fn, tuple(dims), tuple(needs))


def register_table(table: dict[str, Observable]) -> None:
    """Add a module's observables (``{name: Observable}``); a name already registered to a
    different observable is an error (two modules would otherwise shadow each other)."""
    for name, o in table.items():
        if not isinstance(o, Observable):
            raise ValueError(f"observable {name!r} must be an Observable, got {o!r}.")
        if OBSERVABLES.get(name, o) is not o:
            raise ValueError(f"observable name {name!r} is already registered.")
        OBSERVABLES[name] = o


def resolve(observe, *, has_test: bool, has_probes: bool) -> dict[str, Observable]:
    """Turn ``observe=`` (names, callables, or a dict name -> callable) into observables."""
    if isinstance(observe, str) or callable(observe):
        observe = (observe,)
    items = observe.items() if isinstance(observe, dict) else [(None, o) for o in observe]
    out: dict[str, Observable] = {}
    for name, o in items:
        if isinstance(o, str):
            if o not in OBSERVABLES:
                raise ValueError(
                    f"observe: {o!r} is not an observable; valid names are {sorted(OBSERVABLES)} "
                    "or pass a callable fn(params, ctx)."
                )
            name, o = name or o, OBSERVABLES[o]
        elif isinstance(o, Observable):
            name = name or getattr(o.fn, "__name__", "custom")
        elif callable(o):
            name, o = name or getattr(o, "__name__", "custom"), Observable(o)
        else:
            raise ValueError(f"observe entries must be names or callables, got {o!r}.")
        if "test" in o.needs and not has_test:
            raise ValueError(
                f"observable {name!r} needs test data: give Dataset(X_test=, y_test=)."
            )
        if "probes" in o.needs and not has_probes:
            raise ValueError(
                f"observable {name!r} needs probe inputs: pass simulate(probes=X_p)."
            )
        out[name] = o
    if not out:
        raise ValueError("observe is empty: nothing would be saved; name at least one observable.")
    return out


def at_stop(obs_fn: Callable, params, ctx: ObsContext, completed) -> dict[str, Array]:
    """The observables at the end of a run, computed only where it stopped early (the only
    case in which they are read: a completed run's last save is at ``t1``); zeros
    otherwise. ``completed``: a boolean scalar (traced)."""
    shape = jax.eval_shape(obs_fn, params, ctx)
    return jax.lax.cond(completed, lambda y: jax.tree.map(jnp.zeros_like, shape),
                        lambda y: obs_fn(y, ctx), params)


class Observer(eqx.Module):
    """Evaluates a fixed set of observables: ``observer(params, ctx) -> {name: array}``.

    Its only traced leaves are the observables' ``arrays``; everything else is static, so
    jitted solves are cached across calls that observe the same things.
    """

    names: tuple[str, ...] = eqx.field(static=True)
    items: tuple[Observable, ...]

    def __init__(self, observables: dict[str, Observable]):
        self.names, self.items = tuple(observables), tuple(observables.values())

    @property
    def observables(self) -> dict[str, Observable]:
        return dict(zip(self.names, self.items, strict=True))

    def __call__(self, params, ctx: ObsContext) -> dict[str, Array]:
        return {k: o(params, ctx) for k, o in zip(self.names, self.items, strict=True)}

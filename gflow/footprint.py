"""The memory a run needs while it runs, besides the results it keeps.

Per member: the parameters and their gradient, the state of the dynamics (an optax
optimizer's state from ``jax.eval_shape``; for gradient flow the stages of the
Runge-Kutta step, counted as ten copies of the parameters -- Tsit5's seven stages, the
current and next state and the error estimate), and the largest intermediate array of one
loss-and-gradient evaluation -- for a two-layer net the ``(n, m)`` pre-activations --
counted three times, since pre-activations, activations and their derivatives are alive
together. The sizes come from tracing the gradient with abstract shapes
(``equinox.filter_make_jaxpr``): nothing is allocated or compiled.

:func:`gflow.checkpoint.check_memory` adds this to the results' memory before it compares
with the available memory.
"""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.extend
import numpy as np

__all__ = ["largest_intermediate_bytes", "working_bytes"]

_GF_COPIES = 10  # parameter-sized arrays of one adaptive Runge-Kutta step (Tsit5)
_ACTIVATION_COPIES = 3


def _bytes(x) -> int:
    return math.prod(x.shape) * np.dtype(x.dtype).itemsize


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype)
                        if eqx.is_array(x) else x, tree)


def _signature(tree):
    """``tree`` with each array as ``(shape, dtype)``: hashable, for the cache."""
    leaves, treedef = jax.tree.flatten(_abstract(tree))
    return treedef, tuple((tuple(x.shape), np.dtype(x.dtype))
                          if isinstance(x, jax.ShapeDtypeStruct) else x for x in leaves)


def _rebuild(sig):
    treedef, leaves = sig
    return jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(*x) if isinstance(x, tuple)
                                        else x for x in leaves])


def _largest(objective, params) -> int:
    jaxpr = eqx.filter_make_jaxpr(lambda o, p: o.value_and_grad(p))(objective, params)[0]
    sizes = [0]

    def scan(jx):
        for eqn in jx.eqns:
            sizes.extend(_bytes(v.aval) for v in eqn.outvars if hasattr(v.aval, "shape"))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                scan(sub)

    scan(jaxpr.jaxpr)
    return max(sizes)


@functools.lru_cache(maxsize=64)
def _largest_cached(objective_sig, params_sig) -> int:
    return _largest(_rebuild(objective_sig), _rebuild(params_sig))


def largest_intermediate_bytes(objective, params) -> int:
    """Bytes of the largest array one ``objective.value_and_grad(params)`` creates
    (traced once per net, loss and shapes)."""
    from .objective import Objective

    single = Objective(objective.net, objective.loss_fn, objective.X, objective.y)
    try:
        return _largest_cached(_signature(single), _signature(params))
    except TypeError:  # something unhashable in the net or the loss
        return _largest(_abstract(single), _abstract(params))


def working_bytes(objective, params, dynamics=None) -> int:
    """Bytes one member needs while it trains (see the module docstring)."""
    p = sum(_bytes(x) for x in jax.tree.leaves(params) if eqx.is_array(x)
            or isinstance(x, jax.ShapeDtypeStruct))
    state = 0
    opt = getattr(dynamics, "optimizer", None)
    if opt is not None:
        shapes = jax.eval_shape(opt.init, _abstract(params))
        state = sum(_bytes(x) for x in jax.tree.leaves(shapes))
    elif dynamics is not None and not hasattr(dynamics, "lr"):  # gradient flow
        state = _GF_COPIES * p
    try:
        act = largest_intermediate_bytes(objective, params)
    except Exception:  # noqa: BLE001 - a net whose gradient cannot be traced abstractly:
        act = 0  # its activations are not counted (the run itself will say what fails)
    return 2 * p + state + _ACTIVATION_COPIES * act


def check_working(objective, params, dynamics, members: int, limit: float) -> int:
    """Bytes ``members`` members need while training; ``ValueError`` if that alone
    exceeds ``limit`` (then saving less cannot help)."""
    per = working_bytes(objective, params, dynamics)
    work = members * per
    if work > limit:
        gib = 2.0**30
        act = largest_intermediate_bytes(objective, params)
        raise ValueError(
            f"training this net needs about {work / gib:.3g} GiB but only {limit / gib:.3g} "
            f"GiB is available: {per / gib:.3g} GiB per member x {members} member(s) for the "
            "parameters and their gradient, the optimizer or solver state and the "
            f"activations (largest array {act / gib:.3g} GiB, e.g. n x width, held "
            f"{_ACTIVATION_COPIES} times). Use a smaller width or fewer samples, run fewer "
            "members per call, or override the limit with GFLOW_MEMORY_LIMIT=<bytes>|off.")
    return work

"""One net over several devices: the neurons of a two-layer net split across them.

A two-layer net's output ``f(x) = c sum_j a_j sigma(w_j . x + b_j)`` is a sum over neurons,
and every other part of a gradient evaluation is per neuron. With the neuron axis of ``W``,
``b`` and ``a`` sharded over a one-axis mesh (:func:`shard_neurons`) and the data
replicated, the jitted solves of :func:`gflow.simulate` compile (XLA's SPMD partitioner, from
the arguments' shardings) to per-device work on each device's neurons plus one all-reduce of
the ``n`` partial outputs per gradient evaluation (and of scalars: the loss, the solver's
error norm). A width of 10^5-10^6 neurons then needs only ``m / D`` neurons' memory per device.

Results equal those on one device up to the summation order of the reductions (the
all-reduce adds the devices' partial sums in another order than one device's loop does), so
agreement is to rounding, and adaptive gradient-flow solves may take slightly different steps.
On several hosts, call ``jax.distributed.initialize()`` first; ``jax.devices()`` then lists
every host's devices.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["neuron_mesh", "shard_neurons"]

AXIS = "neurons"


def neuron_mesh(devices: Sequence | None = None) -> Mesh:
    """A one-axis mesh named ``"neurons"`` over ``devices`` (default: all of them)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices is empty: give at least one device.")
    return Mesh(np.asarray(devices), (AXIS,))


def shard_neurons(params, width: int | None = None, devices: Sequence | None = None):
    """``params`` of a two-layer net with every leaf whose leading axis is the neuron axis
    (length ``width``, default ``params.W.shape[0]``: ``W`` (m, d), ``b`` (m,), ``a`` (m,))
    split over ``devices`` along it; other leaves replicated.

    ``width`` must be a multiple of the number of devices (pad the net, or use fewer).
    """
    if width is None:
        W = getattr(params, "W", None)
        if W is None or np.ndim(W) != 2:
            raise ValueError("shard_neurons: params have no (m, d) field W: give width= "
                             "(the length of the neuron axis).")
        width = int(np.shape(W)[0])
    mesh = neuron_mesh(devices)
    D = mesh.devices.size
    if width % D:
        raise ValueError(f"shard_neurons: width={width} is not a multiple of the {D} devices: "
                         f"use a width divisible by {D}, or fewer devices.")

    def place(x):
        if x is None:
            return None
        split = np.ndim(x) >= 1 and np.shape(x)[0] == width
        spec = PartitionSpec(AXIS, *([None] * (np.ndim(x) - 1))) if split else PartitionSpec()
        return jax.device_put(x, NamedSharding(mesh, spec))

    return jax.tree.map(place, params)

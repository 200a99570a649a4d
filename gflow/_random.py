"""Random draws shared by data generators and init schemes."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def _flat(sampler, key, shape, dtype):
    dtype = jnp.result_type(float) if dtype is None else dtype
    return sampler(key, (math.prod(shape),), dtype=dtype).reshape(shape)


def rademacher(key, shape: tuple[int, ...], dtype=None):
    """``jax.random.rademacher(key, shape, dtype)`` (+-1), drawn flat as :func:`normal`."""
    return _flat(jax.random.rademacher, key, shape, dtype)


def normal(key, shape: tuple[int, ...], dtype=None):
    """``jax.random.normal(key, shape, dtype)``, drawn as a flat vector and reshaped: the
    same values (the threefry counter runs over the flattened index), but XLA:CPU compiles
    the flat sampler several times faster than a 2-d one of even size. ``dtype`` defaults
    to the default float dtype."""
    return _flat(jax.random.normal, key, shape, dtype)

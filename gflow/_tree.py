"""Small pytree and array helpers shared by the dynamics and observables."""

import jax
import jax.numpy as jnp
import numpy as np


def tree_norm(tree):
    """Euclidean norm of all leaves together."""
    return jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(tree)))


def tree_finite(tree):
    """Whether every entry of every leaf is finite: ``x * 0`` is 0 where ``x`` is finite and
    NaN where it is not, so one sum of zeros per leaf decides (it cannot overflow), which
    costs a step less than ``all(isfinite(x))``."""
    return jnp.isfinite(sum(jnp.sum(x * 0) for x in jax.tree.leaves(tree)))


def bcast(mask, x):
    """``mask`` with trailing unit axes so it broadcasts against ``x``."""
    return mask.reshape(mask.shape + (1,) * (np.ndim(x) - mask.ndim))

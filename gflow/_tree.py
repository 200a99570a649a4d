"""Small pytree and array helpers shared by the dynamics and observables."""

import jax
import jax.numpy as jnp
import numpy as np


def tree_norm(tree):
    """Euclidean norm of all leaves together."""
    return jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(tree)))


def tree_finite(tree):
    """Whether every entry of every leaf is finite (one fused ``all(isfinite(x))`` per leaf).

    Not ``isfinite(sum(x * 0))``: a compiler allowed to assume finite values (XLA's fast-math
    code generation) folds ``x * 0`` to 0 and would hide a divergence."""
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves \
        else jnp.asarray(True)


def bcast(mask, x):
    """``mask`` with trailing unit axes so it broadcasts against ``x``."""
    return mask.reshape(mask.shape + (1,) * (np.ndim(x) - mask.ndim))

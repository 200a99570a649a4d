"""Test helpers: pytree comparison and dtype-dependent tolerances."""

import jax
import numpy as np

# Tolerances for results that should agree up to rounding: float32 has ~7 digits,
# float64 ~16; accumulated through a solve we allow a few hundred ulps.
RTOL = {"float32": 1e-4, "float64": 1e-10}


def tree_allclose(a, b, rtol=1e-6, atol=0.0) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    if len(la) != len(lb) or jax.tree.structure(a) != jax.tree.structure(b):
        return False
    return all(np.allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)
               for x, y in zip(la, lb, strict=True))


def tree_max_abs_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))

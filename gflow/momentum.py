"""Heavy-ball momentum GD on the gradient-flow time axis: a dynamics added through the
protocol alone (this module and one export in ``gflow/__init__.py``).

    v_{k+1} = beta v_k + grad L(theta_k),     theta_{k+1} = theta_k - lr_k v_{k+1},

with ``v_0 = 0``: optax's trace form, so ``Momentum(lr, beta)`` takes the steps of
``Optax(optax.sgd(lr, momentum=beta), lr)`` (``nesterov=False``). The iterate after ``k``
steps sits at ``t_k = sum_{i<k} lr_i`` (``k * lr``), as for GD; as ``lr -> 0`` with ``beta``
fixed the iterates follow gradient flow with time sped up by ``1 / (1 - beta)``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .discrete import DiscreteDynamics, check_lr

__all__ = ["Momentum"]


class Momentum(DiscreteDynamics):
    """Heavy-ball momentum GD: ``lr`` (a number > 0 or a schedule ``step -> lr``),
    ``beta`` in [0, 1) (``beta = 0`` is GD)."""

    lr: Any
    beta: float = 0.9

    def __check_init__(self):
        check_lr(self.lr, "Momentum")
        if isinstance(self.beta, bool) or not isinstance(self.beta, int | float) \
                or not 0 <= self.beta < 1:
            raise ValueError(f"Momentum: beta must be a number in [0, 1), got {self.beta!r}.")

    def describe(self) -> str:
        return f"Momentum(lr={self.lr}, beta={self.beta})"

    def init_opt_state(self, params):
        return jax.tree.map(jnp.zeros_like, params)  # the velocity v_0 = 0

    def update(self, objective, params, velocity, k, g):
        lr = self.lr_at(k)
        velocity = jax.tree.map(lambda v, gi: self.beta * v + gi, velocity, g)
        return jax.tree.map(lambda p, v: p - lr * v, params, velocity), velocity

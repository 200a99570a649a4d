"""The training objective: net + loss + data -> full-batch loss and its gradient.

Non-trainable leaves (``net.trainable(params)``) get an exactly zero gradient, so
every dynamics (GF, GD, optax) leaves them untouched.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .losses import get_loss

__all__ = ["Objective"]


class Objective(eqx.Module):
    """Full-batch and minibatch loss of ``net`` on ``(X, y)``: mean of ``loss(f(x_i), y_i)``."""

    net: eqx.Module
    loss_fn: Callable = eqx.field(static=True)
    X: Float[Array, "n d"]
    y: Float[Array, " n"]

    def __init__(self, net, loss, X, y):
        self.net = net
        self.loss_fn = get_loss(loss)
        self.X = X
        self.y = y

    def output(self, params, X=None):
        return self.net.apply(params, self.X if X is None else X)

    def loss(self, params) -> Float[Array, ""]:
        return jnp.mean(self.loss_fn(self.output(params), self.y))

    def batch_loss(self, params, idx: Int[Array, " b"]) -> Float[Array, ""]:
        """Mean loss over the samples ``idx``."""
        return jnp.mean(self.loss_fn(self.net.apply(params, self.X[idx]), self.y[idx]))

    def mask_grad(self, params, grads):
        """Zero the gradient of non-trainable leaves (``trainable`` gives a bool per leaf, or
        a 0/1 array broadcasting against it, e.g. for masked neurons)."""
        mask = self.net.trainable(params)

        def apply(g, t):
            if isinstance(t, bool):
                return g if t else jnp.zeros_like(g)
            return g * t.astype(g.dtype)

        return jax.tree.map(apply, grads, mask)

    def value_and_grad(self, params, idx=None):
        """``(loss, grad)`` on the full batch, or on the samples ``idx`` if given."""
        f = self.loss if idx is None else (lambda p: self.batch_loss(p, idx))
        val, g = jax.value_and_grad(f)(params)
        return val, self.mask_grad(params, g)

    def grad(self, params):
        return self.value_and_grad(params)[1]

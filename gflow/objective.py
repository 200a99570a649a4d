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
from .nets import TwoLayerParams, two_layer_parts

__all__ = ["Objective"]


class Objective(eqx.Module):
    """Full-batch and minibatch loss of ``net`` on ``(X, y)``: mean of ``loss(f(x_i), y_i)``."""

    net: eqx.Module
    loss_fn: Callable = eqx.field(static=True)
    X: Float[Array, "n d"]
    y: Float[Array, " n"]
    members: bool = eqx.field(static=True, default=False)

    def __init__(self, net, loss, X, y, members: bool = False):
        self.net = net
        self.loss_fn = get_loss(loss)
        self.X = X
        self.y = y
        self.members = members

    def output(self, params, X=None):
        return self.net.apply(params, self.X if X is None else X)

    def loss(self, params) -> Float[Array, ""]:
        return self._losses(params)

    def batch_loss(self, params, idx: Int[Array, " b"]) -> Float[Array, ""]:
        """Mean loss over the samples ``idx``."""
        return self._losses(params, idx)

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
        """``(loss, grad)`` on the full batch, or on the samples ``idx`` if given.

        With ``members=True`` (ensembles), under ``jax.vmap`` over members, nets that
        accept leading member axes natively (``net.member_axes``) compute all members at
        once -- one GEMM over every member's neurons -- instead of vmap's batching of a
        single member's program, which is an order of magnitude slower on CPU.
        """
        if self.members and getattr(self.net, "member_axes", False):
            return _member_value_and_grad(self, params, idx)
        return _value_and_grad(self, params, idx)

    def _losses(self, params, idx=None):
        """Per-member losses; any leading member axes on params, data or idx."""
        X, y = (self.X, self.y) if idx is None else (_take(self.X, idx, True),
                                                     _take(self.y, idx, False))
        return jnp.mean(self.loss_fn(self.net.apply(params, X), y), axis=-1)

    def grad(self, params):
        return self.value_and_grad(params)[1]



def _take(a, idx, feature_axis: bool):
    """``a[idx]`` along the sample axis; ``a`` and ``idx`` may carry member axes."""
    if idx.ndim == 1:
        return a[..., idx, :] if feature_axis else a[..., idx]
    if a.ndim == idx.ndim + feature_axis:  # both per member: gather member by member
        return jnp.take_along_axis(a, idx[..., None] if feature_axis else idx,
                                   axis=-2 if feature_axis else -1)
    return a[idx]


def _value_and_grad(objective: Objective, params, idx):
    if _two_layer_fits(objective, params, idx):
        return _two_layer_value_and_grad(objective, params, idx)

    def total(p):
        losses = objective._losses(p, idx)
        return jnp.sum(losses), losses

    (_, losses), g = jax.value_and_grad(total, has_aux=True)(params)
    return losses, objective.mask_grad(params, g)


@jax.custom_batching.custom_vmap
def _member_value_and_grad(objective: Objective, params, idx):
    return _value_and_grad(objective, params, idx)


@_member_value_and_grad.def_vmap
def _member_rule(axis_size, in_batched, objective, params, idx):
    # members are independent, so the gradient of the sum of their losses is each member's
    # own gradient; the net broadcasts shared data against the members' parameters
    params = jax.tree.map(
        lambda x, b: x if b else jnp.broadcast_to(x, (axis_size,) + x.shape), params,
        in_batched[1])
    losses, g = _value_and_grad(objective, params, idx)
    return (losses, g), (True, jax.tree.map(lambda _: True, g))


def _two_layer_fits(objective: Objective, params, idx) -> bool:
    """Whether :func:`_two_layer_value_and_grad` takes this net and these shapes: a
    (width-masked) two-layer net, data shared or with the parameters' member axes."""
    net, _ = two_layer_parts(objective.net)
    if net is None:
        return False
    k = params.W.ndim - 2  # member axes
    return objective.X.ndim in (2, 2 + k) and (idx is None or idx.ndim in (1, 1 + k))


def _two_layer_value_and_grad(objective: Objective, params, idx):
    """``(loss, grad)`` of a two-layer net (:class:`TwoLayer`, or width-masked), any
    leading member axes on the parameters, with the gradient written out.

    The hidden layer is laid out (..., m, n): ``Z = W X^T + b``. With ``r = dL/df``
    (..., n) and ``D = sigma'(Z) r``, one GEMM ``M = D [X 1]`` (..., m, d [+ 1]) gives
    ``dL/dW = c a M_X`` and ``dL/db = c a M_1``. For a homogeneous activation
    (``sigma(z) = sigma'(z) z``: relu, leaky relu, abs) it also gives
    ``dL/da = c (sum_k W M_X + b M_1)``, so the hidden layer is read once less than by
    autodiff; otherwise ``dL/da = c sigma(Z) r``. Both large products are plain GEMMs
    (autodiff's ``G^T X`` contracts the leading axis of both operands, which XLA:CPU runs
    on a generic path about 3x slower), and with shared data all members' neurons share
    one GEMM.
    """
    net, mask = two_layer_parts(objective.net)
    X, y = (objective.X, objective.y) if idx is None else (_take(objective.X, idx, True),
                                                           _take(objective.y, idx, False))
    W, b, d = params.W, params.b, objective.X.shape[-1]
    z = W @ jax.lax.optimization_barrier(jnp.swapaxes(X, -1, -2))
    if b is not None:
        z = z + b[..., None]
    a = params.a if mask is None else params.a * mask
    c = objective.net.prefactor
    h, ds = jax.jvp(net.activation, (z,), (jnp.ones_like(z),))  # sigma(Z), sigma'(Z)
    f = c * jnp.einsum("...mn,...m->...n", h, a)
    losses, pull = jax.vjp(lambda f: jnp.mean(objective.loss_fn(f, y), axis=-1), f)
    (r,) = pull(jnp.ones_like(losses))
    if b is not None:
        X = jnp.concatenate([X, jnp.ones_like(X[..., :1])], axis=-1)
    M = (ds * r[..., None, :]) @ X
    ca = (c * a)[..., None]
    gW = ca * M[..., :d]
    gb = None if b is None else ca[..., 0] * M[..., d]
    if net.activation.homogeneous:
        ga = jnp.sum(W * M[..., :d], axis=-1)
        ga = c * (ga if b is None else ga + b * M[..., d])
    else:
        ga = c * jnp.einsum("...mn,...n->...m", h, r)
    g = TwoLayerParams(W=gW, b=gb, a=ga if mask is None else ga * mask)
    return losses, objective.mask_grad(params, g)

"""Objectives: what a dynamics minimizes.

:class:`AbstractObjective` is the protocol every dynamics relies on -- ``loss``,
``value_and_grad`` (full batch, or the samples ``idx``), ``grad``, ``output``, ``net``,
``mask_grad`` and the samples ``X``, ``y`` (``n`` of them) -- with two implementations:

- :class:`Objective`, the data objective: mean of ``loss(f(x_i), y_i)`` over a dataset
  (built by :meth:`gflow.Dataset.objective`);
- :class:`gflow.population.PopulationObjective`, the exact population loss of a student
  against a teacher over Gaussian inputs (built by :meth:`gflow.population.Population.objective`).

Non-trainable leaves (``net.trainable(params)``) get an exactly zero gradient, so every
dynamics (GF, GD, optax) leaves them untouched. A net's written-out gradient
(:meth:`gflow.nets.AbstractNet.loss_and_grad`) is used where it has one, autodiff otherwise.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .losses import get_loss
from .nets import AbstractNet

__all__ = ["AbstractObjective", "ExpectationObjective", "Objective"]


class AbstractObjective(eqx.Module):
    """The objective protocol (see the module docstring).

    ``X`` (n, d) and ``y`` (n,) are the training samples the objective is a mean over;
    an objective without a finite sample has ``n == 0`` (and says so when ``X`` is read).
    """

    net: eqx.AbstractVar[AbstractNet]

    @abc.abstractmethod
    def value_and_grad(self, params, idx: Int[Array, " b"] | None = None):
        """``(loss, grad)``: on the full objective, or on the samples ``idx`` if given;
        non-trainable leaves of ``grad`` are zero."""

    @abc.abstractmethod
    def loss(self, params) -> Float[Array, ""]:
        """The objective's value at ``params``."""

    @abc.abstractmethod
    def output(self, params, X: Float[Array, "p d"] | None = None) -> Float[Array, " p"]:
        """The net's output at ``X`` (default: the training inputs)."""

    @property
    @abc.abstractmethod
    def n(self) -> int:
        """Number of training samples (0 for an objective without a finite sample)."""

    def grad(self, params):
        """The gradient (non-trainable leaves zero)."""
        return self.value_and_grad(params)[1]

    def mask_grad(self, params, grads):
        """Zero the gradient of non-trainable leaves (``trainable`` gives a bool per leaf, or
        a 0/1 array broadcasting against it, e.g. for masked neurons)."""
        mask = self.net.trainable(params)

        def apply(g, t):
            if isinstance(t, bool):
                return g if t else jnp.zeros_like(g)
            return g * t.astype(g.dtype)

        return jax.tree.map(apply, grads, mask)


class ExpectationObjective(AbstractObjective):
    """Base of the objectives that are an expectation (a population loss) rather than a mean
    over samples: no finite sample (``n == 0``), the gradient by autodiff of :meth:`loss`
    (fixed leaves zero), no minibatches, and the net's output only at given inputs.
    Subclasses implement :meth:`loss`, ``X`` and ``y``."""

    @property
    def n(self) -> int:
        return 0

    def value_and_grad(self, params, idx: Int[Array, " b"] | None = None):
        if idx is not None:
            raise ValueError("the population objective has no samples to draw minibatches "
                             "from; use gflow.GD, gflow.GradientFlow or gflow.OnlineSGD.")
        val, g = jax.value_and_grad(self.loss)(params)
        return val, self.mask_grad(params, g)

    def output(self, params, X: Float[Array, "p d"] | None = None) -> Float[Array, " p"]:
        if X is None:
            raise ValueError("the population objective has no training inputs: give X "
                             "(or observe 'output' at probes=).")
        return self.net.apply(params, X)


class Objective(AbstractObjective):
    """Full-batch and minibatch loss of ``net`` on ``(X, y)``: mean of ``loss(f(x_i), y_i)``.

    Arguments:
        net: a :class:`gflow.nets.AbstractNet`.
        loss: a loss name or a per-sample callable ``(f, y) -> (n,)`` (:mod:`gflow.losses`).
        X: (n, d) inputs, or with leading member axes.
        y: (n,) targets, or with leading member axes.
        members: the parameters carry a leading member axis (ensembles): see
            :meth:`value_and_grad`.
    """

    net: AbstractNet
    loss_fn: Callable = eqx.field(static=True)
    X: Float[Array, "n d"]
    y: Float[Array, " n"]
    members: bool = eqx.field(static=True, default=False)

    def __init__(self, net, loss, X, y, members: bool = False):
        if not isinstance(net, AbstractNet):
            raise ValueError(f"net must be a gflow.nets.AbstractNet (apply, trainable, "
                             f"check_params, prefactor), got {type(net).__name__}.")
        self.net = net
        self.loss_fn = get_loss(loss)
        self.X = X
        self.y = y
        self.members = members

    @property
    def n(self) -> int:
        return int(self.y.shape[-1])

    def output(self, params, X=None):
        return self.net.apply(params, self.X if X is None else X)

    def loss(self, params) -> Float[Array, ""]:
        return self.losses(params)

    def losses(self, params, idx: Int[Array, " b"] | None = None):
        """Mean loss over all samples, or over the samples ``idx``; per member (any leading
        member axes on params, data or ``idx``). Differentiated by autodiff where the net
        has no written-out gradient."""
        X, y = self._samples(idx)
        return jnp.mean(self.loss_fn(self.net.apply(params, X), y), axis=-1)

    def value_and_grad(self, params, idx=None):
        """``(loss, grad)`` on the full batch, or on the samples ``idx`` if given.

        With ``members=True`` (ensembles), under ``jax.vmap`` over members, nets that
        accept leading member axes natively (``net.member_axes``) compute all members at
        once -- one GEMM over every member's neurons -- instead of vmap's batching of a
        single member's program, which is an order of magnitude slower on CPU.
        """
        if self.members and self.net.member_axes:
            return _member_value_and_grad(self, params, idx)
        return _value_and_grad(self, params, idx)

    def _samples(self, idx):
        if idx is None:
            return self.X, self.y
        return _take(self.X, idx, True), _take(self.y, idx, False)


def _take(a, idx, feature_axis: bool):
    """``a[idx]`` along the sample axis; ``a`` and ``idx`` may carry member axes."""
    if idx.ndim == 1:
        return a[..., idx, :] if feature_axis else a[..., idx]
    if a.ndim == idx.ndim + feature_axis:  # both per member: gather member by member
        return jnp.take_along_axis(a, idx[..., None] if feature_axis else idx,
                                   axis=-2 if feature_axis else -1)
    return a[idx]


def _value_and_grad(objective: Objective, params, idx):
    X, y = objective._samples(idx)
    fast = objective.net.loss_and_grad(params, X, y, objective.loss_fn)
    if fast is not None:
        losses, g = fast
        return losses, objective.mask_grad(params, g)

    def total(p):
        losses = objective.losses(p, idx)
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

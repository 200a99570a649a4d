"""Online SGD: every step a fresh batch from a data distribution -- the step's mathematics
(pure functions) and the dynamics :class:`OnlineSGD` built on them.

Step ``k`` (at time ``t = k * lr``) draws ``batch_size`` new samples from a
:class:`gflow.distributions.Distribution` with the key ``fold_in(key, k)`` and moves the
parameters along the gradient of the batch's mean loss::

    theta_{k+1} = theta_k - lr * grad (1/b) sum_i loss(f(x_i; theta_k), y_i),  (x_i, y_i) ~ P

Each batch is independent of the past, so the step's gradient is an unbiased estimate of the
*population* gradient ``grad E[loss]`` (:func:`population_gradient`: exact, by enumeration or
closed form), with covariance ``Sigma(theta) / b``: as ``b -> infinity`` online SGD becomes GD
on the population loss. (One fresh sample per step, ``b = 1``, is the setting of SGD results
such as Telgarsky, ICLR 2023.) Non-trainable leaves (``net.trainable``) get zero gradient.

:class:`OnlineSGD` runs these steps through the dynamics protocol (:func:`gflow.simulate`,
checkpointed runs, :func:`gflow.simulate_ensemble`): a :class:`gflow.discrete.DiscreteDynamics`
whose batch sampler (:class:`FreshBatches`) is :func:`online_gradient` at :func:`step_key`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from .discrete import DiscreteDynamics, check_key, check_lr
from .distributions import Distribution
from .expected import DistributionObjective
from .objective import Objective

__all__ = ["FreshBatches", "OnlineSGD", "online_gradient", "online_sgd", "online_sgd_step",
           "population_gradient", "step_key"]


def _check(distribution, batch_size=None, lr=None):
    if not isinstance(distribution, Distribution):
        raise ValueError(f"distribution must be a gflow.distributions.Distribution, got "
                         f"{type(distribution).__name__}.")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
    if lr is not None and isinstance(lr, int | float) and not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}.")


def step_key(key, k):
    """The key of step ``k``'s batch: ``jax.random.fold_in(key, k)``."""
    return jax.random.fold_in(key, k)


def online_gradient(net, params, distribution: Distribution, key, batch_size: int,
                    loss: str | Callable = "squared"):
    """``(batch loss, gradient)`` of the mean loss on a fresh batch ``distribution.sample(key,
    batch_size)``: one draw of the online-SGD step's gradient (the written-out gradient of
    :class:`gflow.Objective`, non-trainable leaves zero)."""
    _check(distribution, batch_size)
    X, y = distribution.sample(key, batch_size)
    return Objective(net, loss, X, y).value_and_grad(params)


def population_gradient(net, params, distribution: Distribution,
                        loss: str | Callable = "squared"):
    """``(population loss, its gradient)``, exact: the gradient of
    ``distribution.population_loss`` (enumeration over a finite support, or a closed form;
    :class:`gflow.expected.DistributionObjective`), non-trainable leaves zero."""
    _check(distribution)
    return DistributionObjective(net, loss, distribution).value_and_grad(params)


def online_sgd_step(net, params, distribution: Distribution, key, k, *, lr, batch_size: int,
                    loss: str | Callable = "squared"):
    """Step ``k`` of online SGD from ``params``: ``(new params, batch loss)``, the batch drawn
    with :func:`step_key` ``(key, k)``."""
    val, g = online_gradient(net, params, distribution, step_key(key, k), batch_size, loss)
    return jax.tree.map(lambda p, gi: p - lr * gi, params, g), val


@eqx.filter_jit
def online_sgd(net, params, distribution: Distribution, key, *, lr, batch_size: int, steps: int,
               loss: str | Callable = "squared"):
    """``steps`` steps of online SGD (``lax.scan``): ``(params at t = steps * lr, batch losses
    (steps,))``."""
    _check(distribution, batch_size, lr)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}.")

    def body(p, k):
        return online_sgd_step(net, p, distribution, key, k, lr=lr, batch_size=batch_size,
                               loss=loss)

    return jax.lax.scan(body, params, jnp.arange(steps))


class FreshBatches(eqx.Module):
    """The batch sampler of :class:`OnlineSGD` (the hook
    :meth:`gflow.discrete.DiscreteDynamics.minibatches`): step ``k``'s ``(loss, gradient)``
    is :func:`online_gradient` on ``distribution.sample(step_key(key, k), batch_size)``, for
    the objective's net and loss. It has no state and needs no finite sample."""

    distribution: Distribution
    key: Any
    batch_size: int = eqx.field(static=True)

    def check(self, n):
        """Nothing to check: the batches do not come from the run's data."""

    def init(self, n):
        return None

    def value_and_grad(self, objective, params, state, k):
        loss, g = online_gradient(objective.net, params, self.distribution,
                                  step_key(self.key, k), self.batch_size, objective.loss_fn)
        return loss, g, state


class OnlineSGD(DiscreteDynamics):
    """Online SGD: step ``k`` takes a gradient step on a fresh batch of ``batch_size``
    draws from ``distribution`` with the key :func:`step_key` ``(key, k)``
    (:func:`online_sgd_step`), on the time axis ``t = k * lr``.

    The run's ``data=`` is what the observables and stopping checks are evaluated on, never
    trained on: a :class:`~gflow.distributions.Distribution` (normally the same one) for the
    exact population loss (``loss``, ``grad_norm``, ``population_error`` observables; by
    enumeration or closed form), or a :class:`gflow.Dataset`, e.g. a large held-out sample
    (then ``loss`` / ``accuracy`` are its estimates; ensembles need a dataset).
    ``stop_loss`` / ``stop_grad`` check that loss and gradient (the population or held-out
    one, evaluated once per step only when given), not the batch's; divergence is a
    non-finite batch loss or parameters.

    Attributes:
        lr: a number > 0, a schedule ``step -> lr``, or (ensembles) an (M,) array.
        batch_size: draws per step (>= 1).
        distribution: a :class:`gflow.distributions.Distribution` (any, finite or not).
        key: a PRNG key; in an ensemble an (M,) array of keys (one stream per member).
    """

    lr: Any
    batch_size: int = eqx.field(static=True)
    distribution: Distribution
    key: Any

    member_fields: ClassVar[tuple[str, ...]] = ("lr", "key")

    def __check_init__(self):
        check_lr(self.lr, "OnlineSGD")
        _check(self.distribution, self.batch_size)
        check_key(self.key, "OnlineSGD",
                  "OnlineSGD(lr, batch_size, distribution, key=jax.random.key(0))")

    def describe(self) -> str:
        return (f"OnlineSGD(lr={self.lr}, batch_size={self.batch_size}, "
                f"distribution={type(self.distribution).__name__})")

    def minibatches(self) -> FreshBatches:
        return FreshBatches(self.distribution, self.key, self.batch_size)

    def plan(self, ts, t1, *, n, dtype, members=None):
        """As :meth:`DiscreteDynamics.plan`; in an ensemble the distribution's arrays are
        broadcast to the member axis (every member draws from the same distribution), so
        none of them is mistaken for a per-member setting."""
        plan = super().plan(ts, t1, n=n, dtype=dtype, members=members)
        if members is None:
            return plan
        dist = jax.tree.map(lambda x: jnp.broadcast_to(x, (members, *x.shape))
                            if eqx.is_array(x) else x, self.distribution)
        return plan._replace(dynamics=eqx.tree_at(lambda d: d.distribution, plan.dynamics, dist))

    def batches(self, steps: int):
        """The batches steps ``0 .. steps - 1`` train on: ``(X (steps, b, d), y (steps, b))``
        (the draws of :func:`step_key`; e.g. ``dist.heldout(key, n, exclude=X.reshape(-1, d))``
        is a held-out sample disjoint from every point the run trains on -- drawn from the
        distribution conditioned off those points)."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}.")
        return _batches(self.distribution, self.key, steps, self.batch_size)

    def init(self, problem, params0):
        try:
            problem.objective.net.check_params(params0, d=self.distribution.d)
        except ValueError as e:
            raise ValueError(f"OnlineSGD: the parameters do not fit the distribution "
                             f"(d={self.distribution.d}): {e}") from None
        return super().init(problem, params0)


@eqx.filter_jit
def _batches(distribution, key, steps: int, batch_size: int):
    return jax.vmap(lambda k: distribution.sample(step_key(key, k), batch_size))(
        jnp.arange(steps))


"""Online SGD: every step a fresh batch from a data distribution (pure functions, no dynamics).

Step ``k`` (at time ``t = k * lr``) draws ``batch_size`` new samples from a
:class:`gflow.distributions.Distribution` with the key ``fold_in(key, k)`` and moves the
parameters along the gradient of the batch's mean loss::

    theta_{k+1} = theta_k - lr * grad (1/b) sum_i loss(f(x_i; theta_k), y_i),  (x_i, y_i) ~ P

Each batch is independent of the past, so the step's gradient is an unbiased estimate of the
*population* gradient ``grad E[loss]`` (:func:`population_gradient`: exact, by enumeration or
closed form), with covariance ``Sigma(theta) / b``: as ``b -> infinity`` online SGD becomes GD
on the population loss. (One fresh sample per step, ``b = 1``, is the setting of SGD results
such as Telgarsky, ICLR 2023.) Non-trainable leaves (``net.trainable``) get zero gradient.

These are the step's mathematics; a dynamics for :func:`gflow.simulate` built on
:func:`online_sgd_step` is separate.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from .distributions import Distribution
from .objective import Objective

__all__ = ["online_gradient", "online_sgd", "online_sgd_step", "population_gradient", "step_key"]


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
    """``(population loss, its gradient)``, exact: ``jax.value_and_grad`` of
    ``distribution.population_loss`` (enumeration over a finite support, or a closed form),
    non-trainable leaves zero."""
    _check(distribution)
    val, g = jax.value_and_grad(lambda p: distribution.population_loss(net, p, loss))(params)
    d = distribution.d  # the mask reads only net.trainable; the one row of zeros is a placeholder
    return val, Objective(net, loss, jnp.zeros((1, d)), jnp.zeros((1,))).mask_grad(params, g)


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

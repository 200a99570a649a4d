"""Losses, each a mean over the n samples of a per-sample loss ``ell(f, y)``.

- ``squared``:     ``1/2 (f - y)^2``
- ``mse``:         ``(f - y)^2`` (the mean squared error, as ``torch.nn.MSELoss()``)
- ``logistic``:    ``log(1 + exp(-y f))`` (computed stably with ``softplus``)
- ``exponential``: ``exp(-y f)``
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["LOSSES", "get_loss"]


def squared(f: Float[Array, " n"], y: Float[Array, " n"]) -> Float[Array, " n"]:
    return 0.5 * (f - y) ** 2


def mse(f: Float[Array, " n"], y: Float[Array, " n"]) -> Float[Array, " n"]:
    return (f - y) ** 2


def logistic(f: Float[Array, " n"], y: Float[Array, " n"]) -> Float[Array, " n"]:
    return jax.nn.softplus(-y * f)


def exponential(f: Float[Array, " n"], y: Float[Array, " n"]) -> Float[Array, " n"]:
    return jnp.exp(-y * f)


LOSSES: dict[str, Callable] = {"squared": squared, "mse": mse, "logistic": logistic,
                               "exponential": exponential}
#: losses whose labels must be in {-1, +1}
CLASSIFICATION = ("logistic", "exponential")


def get_loss(loss: str | Callable) -> Callable:
    """Resolve a loss name (see :data:`LOSSES`) or a per-sample callable ``(f, y) -> (n,)``."""
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"loss={loss!r} is unknown; valid names are {list(LOSSES)}.")
        return LOSSES[loss]
    if callable(loss):
        return loss
    raise ValueError(f"loss must be a name in {list(LOSSES)} or a callable, got {loss!r}.")

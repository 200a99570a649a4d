"""Activation functions: a registry of names, and each activation's multiplicity.

An :class:`Activation` carries its function, its name, whether it is smooth at 0 and whether
it is positively 1-homogeneous (``sigma(z) = sigma'(z) z``). :func:`multiplicity` is the
order of the first non-zero derivative at 0 (Zhou et al., NeurIPS 2022, arXiv 2105.11686).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

__all__ = ["ACTIVATIONS", "Activation", "get_activation", "multiplicity"]


def _xtanh(z):
    return z * jnp.tanh(z)


def _x2tanh(z):
    return z * z * jnp.tanh(z)


def _linear(z):
    return z


def _leaky_relu(z):
    return jax.nn.leaky_relu(z, 0.01)


def _gelu(z):
    return jax.nn.gelu(z, approximate=False)


# name -> (function, smooth at 0, positively 1-homogeneous). Non-smooth activations have
# no multiplicity; homogeneous ones satisfy sigma(z) = sigma'(z) z.
_REGISTRY: dict[str, tuple[Callable, bool, bool]] = {
    "relu": (jax.nn.relu, False, True),
    "abs": (jnp.abs, False, True),
    "leaky_relu": (_leaky_relu, False, True),
    "tanh": (jnp.tanh, True, False),
    "sigmoid": (jax.nn.sigmoid, True, False),
    "softplus": (jax.nn.softplus, True, False),
    "gelu": (_gelu, True, False),
    "xtanh": (_xtanh, True, False),
    "x2tanh": (_x2tanh, True, False),
    "linear": (_linear, True, True),
}

ACTIVATIONS: tuple[str, ...] = tuple(_REGISTRY)


def multiplicity(fn: Callable, *, max_order: int = 8, tol: float = 1e-6) -> int | None:
    """Multiplicity of a smooth activation at 0 (Zhou et al. 2022, arXiv 2105.11686).

    The order ``p >= 1`` of the first non-zero derivative of ``fn`` at 0 among
    ``sigma', sigma'', ...``, computed by repeated ``jax.grad`` in float64 where
    available. Returns ``None`` if no derivative up to ``max_order`` exceeds ``tol``.
    For non-smooth activations use :attr:`Activation.multiplicity`, which is ``None``.
    """
    g = fn
    for p in range(1, max_order + 1):
        g = jax.grad(g)
        val = float(g(jnp.zeros((), dtype=jnp.result_type(float))))
        if abs(val) > tol:
            return p
    return None


class Activation(eqx.Module):
    """An activation function with a name and (where defined) its multiplicity.

    ``homogeneous``: ``sigma(z) = sigma'(z) z`` for every z (relu, leaky relu, abs,
    linear), which lets a two-layer net's gradient skip a pass over its hidden layer."""

    fn: Callable = eqx.field(static=True)
    name: str = eqx.field(static=True)
    smooth: bool = eqx.field(static=True, default=True)
    homogeneous: bool = eqx.field(static=True, default=False)

    def __call__(self, z):
        return self.fn(z)

    @property
    def multiplicity(self) -> int | None:
        """Order of the first non-zero derivative at 0; ``None`` for non-smooth ones
        (ReLU, abs, leaky ReLU are not differentiable at 0)."""
        return multiplicity(self.fn) if self.smooth else None


def get_activation(activation: str | Callable | Activation) -> Activation:
    """Resolve a name (see :data:`ACTIVATIONS`) or a callable into an :class:`Activation`."""
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        if activation not in _REGISTRY:
            raise ValueError(
                f"activation={activation!r} is unknown; valid names are {list(ACTIVATIONS)} "
                "or pass a callable z -> sigma(z)."
            )
        fn, smooth, homogeneous = _REGISTRY[activation]
        return Activation(fn, activation, smooth, homogeneous)
    if callable(activation):
        name = getattr(activation, "__name__", "custom")
        return Activation(activation, name, True)
    raise ValueError(
        f"activation must be a name in {list(ACTIVATIONS)} or a callable, got {activation!r}."
    )

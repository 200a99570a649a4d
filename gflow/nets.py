"""Networks: the net protocol :class:`AbstractNet` and the nets of the core.

A network is a frozen :class:`equinox.Module` that holds only *static* configuration
(width, activation, scaling, ...). Its parameters live in a separate pytree
(:class:`TwoLayerParams`, ...), so that dynamics act on plain arrays and can be jitted,
vmapped and sharded. Every net implements :class:`AbstractNet`; the objective
(:mod:`gflow.objective`) and the observables use nothing else.

Two-layer network (``TwoLayer``)::

    f(x) = c_m * sum_j a_j * sigma(w_j . x + b_j)

with ``c_m = 1/sqrt(m)`` (``scaling="ntk"``), ``1/m`` (``"mean_field"``) or ``1``
(``"standard"``). Other nets: :class:`MLP` (here), :class:`gflow.LowRankTwoLayer`
(:mod:`gflow.lowrank`), :class:`gflow.rotation.NormOnlyTwoLayer` (:mod:`gflow.rotation`).
"""

from __future__ import annotations

import abc
import math
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .activations import ACTIVATIONS, Activation, get_activation, multiplicity

__all__ = [
    "ACTIVATIONS",
    "AbstractNet",
    "Activation",
    "MLP",
    "MLPParams",
    "MaskedTwoLayer",
    "TwoLayer",
    "TwoLayerParams",
    "get_activation",
    "multiplicity",
    "two_layer_parts",
]


class AbstractNet(eqx.Module):
    """The net protocol: what an objective, a dynamics and the observables may ask of a net.

    Subclasses implement :meth:`apply`, :meth:`trainable`, :meth:`check_params` and
    :attr:`prefactor`; they may override :meth:`loss_and_grad` (a written-out gradient,
    used instead of autodiff) and set :attr:`member_axes`.
    """

    #: whether :meth:`apply` (and :meth:`loss_and_grad`) accept parameters and data with
    #: leading member axes natively, which ensembles then use instead of ``jax.vmap``
    member_axes: ClassVar[bool] = False

    @abc.abstractmethod
    def apply(self, params, X: Float[Array, "n d"]) -> Float[Array, " n"]:
        """Network output on a batch of inputs: (n, d) -> (n,)."""

    @abc.abstractmethod
    def trainable(self, params) -> Any:
        """Which parameters are trained: a pytree of the structure of ``params`` whose leaves
        are bools, or 0/1 arrays broadcasting against the leaf (e.g. masked neurons)."""

    @abc.abstractmethod
    def check_params(self, params, d: int | None = None) -> None:
        """Raise ``ValueError`` (naming the field) if ``params`` do not fit this net and,
        if given, the input dimension ``d``."""

    @property
    @abc.abstractmethod
    def prefactor(self):
        """The output scale ``c`` in ``f = c sum_j a_j h_j`` (``c_m`` of the last layer)."""

    def loss_and_grad(self, params, X: Float[Array, "n d"], y: Float[Array, " n"],
                      loss_fn: Callable):
        """``(loss, grad)`` of ``mean_i loss_fn(f(x_i), y_i)`` written out for this net, or
        ``None`` (the default) to let the objective differentiate :meth:`apply`.

        ``grad`` is the full gradient (the objective zeroes non-trainable leaves). A net
        with :attr:`member_axes` receives leading member axes on ``params`` (and maybe on
        ``X``, ``y``) and returns per-member losses; it returns ``None`` for shapes it does
        not take."""
        return None


class TwoLayerParams(eqx.Module):
    """Parameters of a two-layer net: ``W`` (m, d), ``b`` (m,) or ``None``, ``a`` (m,).

    Stacked parameters (an ensemble) carry a leading member axis on every leaf.
    """

    W: Float[Array, "m d"]
    b: Float[Array, " m"] | None
    a: Float[Array, " m"]


_SCALINGS = ("ntk", "mean_field", "standard")


def check_int(v, name: str, lo: int = 1) -> int:
    """``v`` as an int, or a ``ValueError`` naming ``name`` unless it is an integer >= lo."""
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}.")
    return int(v)


def per_layer(v, L: int, name: str) -> tuple[float, ...]:
    """``v`` (a number, or one per hidden layer of an :class:`MLP` with ``L`` of them) as
    ``L`` floats >= 0, or a ``ValueError`` naming ``name``."""
    vals = tuple(float(x) for x in v) if hasattr(v, "__len__") else (float(v),) * L
    if len(vals) != L or not all(x >= 0 for x in vals):
        raise ValueError(f"{name} must be a number >= 0 or {L} numbers >= 0 (one per hidden "
                         f"layer), got {v!r}.")
    return vals


def check_scaling(scaling: str) -> str:
    if scaling not in _SCALINGS:
        raise ValueError(f"scaling={scaling!r} is unknown; valid values are {list(_SCALINGS)}.")
    return scaling


def output_scale(scaling: str, m):
    """``c_m`` for a layer of width ``m`` (a number, or an array of widths)."""
    if scaling == "ntk":
        return 1.0 / math.sqrt(m) if isinstance(m, int) else 1.0 / jnp.sqrt(m)
    return {"mean_field": 1.0 / m, "standard": 1.0}[scaling]


class TwoLayer(AbstractNet):
    """Two-layer network ``f(x) = c_m sum_j a_j sigma(w_j.x + b_j)``.

    Arguments:
        width: number of hidden neurons ``m >= 1``.
        activation: a name from :data:`ACTIVATIONS` or a callable.
        scaling: ``"ntk"`` (c_m = 1/sqrt(m)), ``"mean_field"`` (1/m) or ``"standard"`` (1).
        bias: whether hidden neurons have a bias ``b_j``.
        train_outer: if ``False`` the outer weights ``a`` are fixed: their gradient is 0.
    """

    width: int = eqx.field(static=True)
    activation: Activation = eqx.field(static=True)
    scaling: str = eqx.field(static=True)
    bias: bool = eqx.field(static=True)
    train_outer: bool = eqx.field(static=True)

    def __init__(
        self,
        width: int,
        activation: str | Callable | Activation = "relu",
        scaling: str = "ntk",
        bias: bool = False,
        train_outer: bool = True,
    ):
        self.width = check_int(width, "width")
        self.activation = get_activation(activation)
        self.scaling = check_scaling(scaling)
        self.bias = bool(bias)
        self.train_outer = bool(train_outer)

    @property
    def prefactor(self) -> float:
        """The output scale c_m."""
        return output_scale(self.scaling, self.width)

    member_axes = True

    def preactivations(self, params: TwoLayerParams, X: Float[Array, "n d"]) -> Float[Array, "n m"]:
        """``w_j . x_i + b_j`` for every sample and neuron (any leading member axes)."""
        if params.W.ndim == 2 and X.ndim == 2:
            z = X @ params.W.T
        else:  # members: one GEMM over all members' neurons when X is shared
            z = jnp.einsum("...nd,...md->...nm", X, params.W)
        if params.b is not None:
            z = z + params.b[..., None, :]
        return z

    def apply(self, params: TwoLayerParams, X: Float[Array, "n d"]) -> Float[Array, " n"]:
        """Network output on a batch of inputs."""
        h = self.activation(self.preactivations(params, X))
        return self.prefactor * jnp.einsum("...nm,...m->...n", h, params.a)

    def loss_and_grad(self, params: TwoLayerParams, X, y, loss_fn):
        """The gradient written out (:func:`_two_layer_loss_and_grad`)."""
        return _two_layer_loss_and_grad(self, None, params, X, y, loss_fn)

    def trainable(self, params: TwoLayerParams) -> Any:
        """A pytree of bools (same structure as ``params``): which leaves are trained."""
        return TwoLayerParams(
            W=True, b=None if params.b is None else True, a=self.train_outer
        )

    def check_params(self, params: TwoLayerParams, d: int | None = None) -> None:
        """Raise ``ValueError`` if ``params`` do not fit this net (and input dimension d)."""
        if not isinstance(params, TwoLayerParams):
            raise ValueError(f"params must be a TwoLayerParams, got {type(params).__name__}.")
        W, a = params.W, params.a
        if W is None or a is None:
            raise ValueError("params.W and params.a must be arrays, got None.")
        if W.ndim != 2 or W.shape[0] != self.width:
            raise ValueError(
                f"params.W has shape {W.shape}; this net needs (width={self.width}, d)."
            )
        if a.shape != (self.width,):
            raise ValueError(f"params.a has shape {a.shape}; expected ({self.width},).")
        if self.bias != (params.b is not None):
            raise ValueError(
                f"net has bias={self.bias} but params.b is "
                f"{'None' if params.b is None else 'an array'}; build params with this net."
            )
        if params.b is not None and params.b.shape != (self.width,):
            raise ValueError(f"params.b has shape {params.b.shape}; expected ({self.width},).")
        if d is not None and W.shape[1] != d:
            raise ValueError(
                f"params were built for input dimension d={W.shape[1]} but the data has "
                f"d={d}; initialise params with d={d}."
            )


class MaskedTwoLayer(AbstractNet):
    """``net`` with only the neurons where ``mask == 1`` live (width = ``mask.sum()``)."""

    net: TwoLayer
    mask: Float[Array, " m"]

    @property
    def width(self) -> int:
        return self.net.width

    member_axes = True

    @property
    def prefactor(self) -> Float[Array, "1"]:
        """The output scale of the live width (a trailing unit axis, any member axes)."""
        return output_scale(self.net.scaling, jnp.sum(self.mask, axis=-1, keepdims=True))

    def apply(self, params: TwoLayerParams, X: Float[Array, "n d"]) -> Float[Array, " n"]:
        h = self.net.activation(self.net.preactivations(params, X)) * self.mask[..., None, :]
        return self.prefactor * jnp.einsum("...nm,...m->...n", h, params.a)

    def loss_and_grad(self, params: TwoLayerParams, X, y, loss_fn):
        return _two_layer_loss_and_grad(self.net, self.mask, params, X, y, loss_fn,
                                       self.prefactor)

    def trainable(self, params: TwoLayerParams):
        return TwoLayerParams(
            W=self.mask[..., None], b=None if params.b is None else self.mask,
            a=self.mask if self.net.train_outer else False,
        )

    def check_params(self, params, d=None):
        self.net.check_params(params, d)


def _two_layer_loss_and_grad(net: TwoLayer, mask, params: TwoLayerParams, X, y, loss_fn,
                            prefactor=None):
    """``(loss, grad)`` of the mean loss of a two-layer net (width-masked if ``mask`` is
    given), any leading member axes on the parameters, with the gradient written out; ``None``
    for data shapes it does not take (data shared, or with the parameters' member axes).

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
    k = params.W.ndim - 2  # member axes
    if X.ndim not in (2, 2 + k) or y.ndim != X.ndim - 1:
        return None
    W, b, d = params.W, params.b, X.shape[-1]
    z = W @ jax.lax.optimization_barrier(jnp.swapaxes(X, -1, -2))
    if b is not None:
        z = z + b[..., None]
    a = params.a if mask is None else params.a * mask
    c = net.prefactor if prefactor is None else prefactor
    h, ds = jax.jvp(net.activation, (z,), (jnp.ones_like(z),))  # sigma(Z), sigma'(Z)
    f = c * jnp.einsum("...mn,...m->...n", h, a)
    losses, pull = jax.vjp(lambda f: jnp.mean(loss_fn(f, y), axis=-1), f)
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
    return losses, TwoLayerParams(W=gW, b=gb, a=ga if mask is None else ga * mask)


def two_layer_parts(net) -> tuple[TwoLayer | None, Array | None]:
    """``(two-layer net, neuron mask or None)`` of a :class:`TwoLayer` or a
    :class:`MaskedTwoLayer`; ``(None, None)`` for any other net."""
    if type(net) is TwoLayer:
        return net, None
    if isinstance(net, MaskedTwoLayer):
        return net.net, net.mask
    return None, None


class MLPParams(eqx.Module):
    """Parameters of a fully connected net with ``L`` hidden layers.

    ``Ws[l]`` has shape ``(m_{l+1}, m_l)`` with ``m_0 = d`` (0-based ``l``); ``bs`` is a
    tuple of ``(m_{l+1},)`` biases or ``None``; ``a`` (m_L,) are the output weights.
    """

    Ws: tuple
    bs: tuple | None
    a: Float[Array, " mL"]


class MLP(AbstractNet):
    """Fully connected net with per-layer widths and a scalar output.

    ``h_0 = x``, ``h_l = sigma(c_l W_l h_{l-1} + b_l)`` for ``l = 1..L`` and
    ``f(x) = c_out sum_j a_j h_L[j]``. The prefactors follow :class:`TwoLayer`:

    - ``"standard"``: ``c_l = c_out = 1`` (no width factors; the model of Zhou et al.,
      NeurIPS 2022, arXiv 2105.11686);
    - ``"ntk"``: ``c_1 = 1``, ``c_l = 1/sqrt(m_{l-1})`` for ``l >= 2``, ``c_out = 1/sqrt(m_L)``;
    - ``"mean_field"``: ``c_out = 1/m_L``; only for one hidden layer (mean-field scaling
      of deeper nets is not a single convention).

    With one hidden layer, ``MLP((m,), ...)`` computes exactly ``TwoLayer(m, ...)``.

    Arguments:
        widths: hidden widths ``(m_1, ..., m_L)``, each an integer >= 1, ``L >= 1``.
        activation: a name from :data:`ACTIVATIONS` or a callable (same in every layer).
        scaling: ``"standard"``, ``"ntk"`` or ``"mean_field"`` (see above).
        bias: whether every hidden layer has a bias ``b_l``.
        train_outer: if ``False`` the output weights ``a`` are fixed: their gradient is 0.
    """

    widths: tuple[int, ...] = eqx.field(static=True)
    activation: Activation = eqx.field(static=True)
    scaling: str = eqx.field(static=True)
    bias: bool = eqx.field(static=True)
    train_outer: bool = eqx.field(static=True)

    def __init__(
        self,
        widths,
        activation: str | Callable | Activation = "relu",
        scaling: str = "ntk",
        bias: bool = False,
        train_outer: bool = True,
    ):
        if isinstance(widths, int | jnp.integer) and not isinstance(widths, bool):
            widths = (widths,)
        try:
            widths = tuple(widths)
        except TypeError:
            raise ValueError(
                f"widths must be a sequence of integers >= 1 (hidden widths), got {widths!r}."
            ) from None
        if not widths or any(isinstance(w, bool) or not isinstance(w, int | jnp.integer)
                             or w < 1 for w in widths):
            raise ValueError(
                f"widths must be a non-empty sequence of integers >= 1, got {widths!r}."
            )
        if len(widths) >= 2 and widths[-1] == 1:  # PyTorch/Flax users list [d, ..., 1]
            hidden = list(widths[1:-1]) if len(widths) >= 3 else list(widths[:-1])
            guess = (f"if {widths[0]} is the input dimension, write MLP({hidden})"
                     if len(widths) >= 3 else f"write MLP({hidden}) for one hidden layer")
            warnings.warn(
                f"MLP({list(widths)}) builds {len(widths)} hidden layers, the last of width 1: "
                "widths are the hidden widths only (the input dimension comes from the data, "
                f"the output is scalar); {guess}.", stacklevel=2)
        check_scaling(scaling)
        if scaling == "mean_field" and len(widths) > 1:
            raise ValueError(
                "scaling='mean_field' is defined for one hidden layer only; with "
                f"{len(widths)} hidden layers use scaling='ntk' or 'standard'."
            )
        self.widths = tuple(int(w) for w in widths)
        self.activation = get_activation(activation)
        self.scaling = scaling
        self.bias = bool(bias)
        self.train_outer = bool(train_outer)

    @property
    def depth(self) -> int:
        """Number of hidden layers ``L``."""
        return len(self.widths)

    def layer_prefactor(self, layer: int) -> float:
        """``c_l`` of hidden layer ``layer`` (1-based)."""
        if layer == 1 or self.scaling == "standard":
            return 1.0
        return 1.0 / math.sqrt(self.widths[layer - 2])

    @property
    def prefactor(self) -> float:
        """The output scale ``c_out``."""
        m = self.widths[-1]
        return {"ntk": 1.0 / math.sqrt(m), "mean_field": 1.0 / m, "standard": 1.0}[self.scaling]

    def layers(self, params: MLPParams, X: Float[Array, "n d"]) -> list:
        """``[(z_l, h_l) for l = 1..L]``: pre-activations and activations, each (n, m_l)."""
        h, out = X, []
        for i, W in enumerate(params.Ws):
            z = self.layer_prefactor(i + 1) * (h @ W.T)
            if params.bs is not None:
                z = z + params.bs[i]
            h = self.activation(z)
            out.append((z, h))
        return out

    def apply(self, params: MLPParams, X: Float[Array, "n d"]) -> Float[Array, " n"]:
        """Network output on a batch of inputs."""
        h = self.layers(params, X)[-1][1]
        return self.prefactor * (h @ params.a)

    def trainable(self, params: MLPParams) -> Any:
        """A pytree of bools (same structure as ``params``): which leaves are trained."""
        return MLPParams(
            Ws=tuple(True for _ in params.Ws),
            bs=None if params.bs is None else tuple(True for _ in params.bs),
            a=self.train_outer,
        )

    def check_params(self, params: MLPParams, d: int | None = None) -> None:
        """Raise ``ValueError`` if ``params`` do not fit this net (and input dimension d)."""
        if not isinstance(params, MLPParams):
            raise ValueError(f"params must be a MLPParams, got {type(params).__name__}.")
        if not isinstance(params.Ws, tuple) or len(params.Ws) != self.depth:
            raise ValueError(
                f"params.Ws must be a tuple of {self.depth} weight matrices (one per hidden "
                f"layer), got {type(params.Ws).__name__} of length {len(params.Ws)}."
            )
        fan_in = params.Ws[0].shape[1] if params.Ws[0].ndim == 2 else None
        for i, W in enumerate(params.Ws):
            want = (self.widths[i], fan_in if i == 0 else self.widths[i - 1])
            if W.shape != want:
                raise ValueError(f"params.Ws[{i}] has shape {W.shape}; expected {want}.")
        if self.bias != (params.bs is not None):
            raise ValueError(
                f"net has bias={self.bias} but params.bs is "
                f"{'None' if params.bs is None else 'given'}; build params with this net."
            )
        if params.bs is not None:
            if not isinstance(params.bs, tuple) or len(params.bs) != self.depth:
                raise ValueError(f"params.bs must be a tuple of {self.depth} bias vectors.")
            for i, b in enumerate(params.bs):
                if b.shape != (self.widths[i],):
                    raise ValueError(
                        f"params.bs[{i}] has shape {b.shape}; expected ({self.widths[i]},)."
                    )
        if params.a.shape != (self.widths[-1],):
            raise ValueError(f"params.a has shape {params.a.shape}; expected ({self.widths[-1]},).")
        if d is not None and fan_in != d:
            raise ValueError(
                f"params were built for input dimension d={fan_in} but the data has "
                f"d={d}; initialise params with d={d}."
            )

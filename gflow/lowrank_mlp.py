"""Deep low-rank nets: an :class:`gflow.MLP` whose every hidden weight is ``W_l = U_l V_l^T``.

Vodrahalli et al., arXiv 2202.00834, initialize every low-rank layer of a deep net from a
full-rank init, layer by layer: :func:`factorize_mlp` does that with the spectral or the
function-space factorization of :mod:`gflow.lowrank` (the function-space objective of every
layer is the one of a ReLU layer over Gaussian inputs, as for the first layer; deeper layers
see post-activation inputs, which that objective does not model).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
from jaxtyping import Array, Float

from . import lowrank
from .activations import Activation
from .nets import MLP, AbstractNet, MLPParams, check_int

__all__ = ["LowRankMLP", "LowRankMLPParams", "factorize_mlp"]


class LowRankMLPParams(eqx.Module):
    """Parameters of a :class:`LowRankMLP` with ``L`` hidden layers: ``Us[l]`` (m_{l+1}, r),
    ``Vs[l]`` (m_l, r) with ``m_0 = d``; ``bs`` a tuple of (m_{l+1},) biases or ``None``;
    ``a`` (m_L,) the output weights."""

    Us: tuple
    Vs: tuple
    bs: tuple | None
    a: Float[Array, " mL"]


class LowRankMLP(AbstractNet):
    """:class:`gflow.MLP` with rank-r hidden weights ``W_l = U_l V_l^T`` (every layer, the
    same ``rank``); prefactors, activation and output as the MLP of the same arguments.

    Arguments:
        widths: hidden widths ``(m_1, ..., m_L)``.
        rank: the rank r of every hidden weight (r <= min(m_l, m_{l-1}), checked on params).
        activation: as :class:`gflow.MLP`.
        scaling: ``"ntk"`` or ``"standard"`` (as :class:`gflow.MLP`).
        bias: whether every hidden layer has a bias.
        train_outer: if ``False`` the output weights ``a`` are fixed.
    """

    mlp: MLP = eqx.field(static=True)
    rank: int = eqx.field(static=True)

    def __init__(self, widths, rank: int, activation: str | Callable | Activation = "relu",
                 scaling: str = "ntk", bias: bool = False, train_outer: bool = True):
        self.mlp = MLP(widths, activation, scaling=scaling, bias=bias, train_outer=train_outer)
        self.rank = check_int(rank, "rank")

    @property
    def widths(self) -> tuple[int, ...]:
        """Hidden widths."""
        return self.mlp.widths

    @property
    def prefactor(self) -> float:
        """The output scale ``c_out``."""
        return self.mlp.prefactor

    def to_full(self, params: LowRankMLPParams) -> MLPParams:
        """The same function as :class:`gflow.MLP` parameters (``W_l = U_l V_l^T``)."""
        Ws = tuple(U @ V.T for U, V in zip(params.Us, params.Vs, strict=True))
        return MLPParams(Ws=Ws, bs=params.bs, a=params.a)

    def apply(self, params: LowRankMLPParams, X: Float[Array, "n d"]) -> Float[Array, " n"]:
        """Network output on a batch of inputs; each layer costs O(n r (m_l + m_{l-1}))."""
        h = X
        for i, (U, V) in enumerate(zip(params.Us, params.Vs, strict=True)):
            z = self.mlp.layer_prefactor(i + 1) * ((h @ V) @ U.T)
            if params.bs is not None:
                z = z + params.bs[i]
            h = self.mlp.activation(z)
        return self.prefactor * (h @ params.a)

    def trainable(self, params: LowRankMLPParams) -> Any:
        """A pytree of bools (same structure as ``params``): which leaves are trained."""
        return LowRankMLPParams(
            Us=tuple(True for _ in params.Us), Vs=tuple(True for _ in params.Vs),
            bs=None if params.bs is None else tuple(True for _ in params.bs),
            a=self.mlp.train_outer)

    def check_params(self, params: LowRankMLPParams, d: int | None = None) -> None:
        """Raise ``ValueError`` if ``params`` do not fit this net (and input dimension d)."""
        if not isinstance(params, LowRankMLPParams):
            raise ValueError(f"params must be a LowRankMLPParams, got {type(params).__name__}.")
        L, r = self.mlp.depth, self.rank
        if len(params.Us) != L or len(params.Vs) != L:
            raise ValueError(f"params.Us and params.Vs must hold {L} factors (one per hidden "
                             f"layer), got {len(params.Us)} and {len(params.Vs)}.")
        for i, (U, V) in enumerate(zip(params.Us, params.Vs, strict=True)):
            if U.shape != (self.widths[i], r):
                raise ValueError(f"params.Us[{i}] has shape {U.shape}; expected "
                                 f"({self.widths[i]}, rank={r}).")
            if V.ndim != 2 or V.shape[1] != r or (i and V.shape[0] != self.widths[i - 1]):
                raise ValueError(f"params.Vs[{i}] has shape {V.shape}; expected "
                                 f"({'d' if i == 0 else self.widths[i - 1]}, rank={r}).")
        self.mlp.check_params(MLPParams(Ws=tuple(U @ V.T for U, V in zip(
            params.Us, params.Vs, strict=True)), bs=params.bs, a=params.a), d)


def factorize_mlp(params: MLPParams, rank: int, method: str = "function",
                  **kwargs) -> LowRankMLPParams:
    """Low-rank parameters from full-rank :class:`gflow.MLP` ones, layer by layer: each
    ``W_l`` factorized by ``method`` (``"spectral"`` or ``"function"``; ``kwargs`` go to
    :func:`gflow.lowrank.function_space`); biases and output weights are copied."""
    if not isinstance(params, MLPParams):
        raise ValueError(f"params must be a MLPParams, got {type(params).__name__}.")
    if method not in ("spectral", "function"):
        raise ValueError(f"method={method!r} is unknown; valid values are "
                         "['spectral', 'function'].")
    fn = lowrank.spectral if method == "spectral" else lowrank.function_space
    Us, Vs = zip(*(fn(W, rank, **kwargs) for W in params.Ws), strict=True)
    return LowRankMLPParams(Us=tuple(Us), Vs=tuple(Vs), bs=params.bs, a=params.a)

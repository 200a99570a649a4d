"""Initialization schemes: ``scheme(key, net, d, ...) -> params``.

Every scheme takes a typed PRNG key first, as ``jax.random`` does, and returns a
:class:`~gflow.nets.TwoLayerParams` in the default float dtype (float32, or float64
with ``jax_enable_x64``). Schemes are pure functions of the key, so an ensemble is
``jax.vmap(lambda k: scheme(k, net, d))(jax.random.split(key, K))``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from .nets import MLP, MLPParams, TwoLayer, TwoLayerParams

__all__ = ["gaussian", "paired", "small"]

_OUTER = ("sign", "gaussian")


def _float():
    return jnp.result_type(float)


def _check(net: TwoLayer, d: int, outer: str, allowed=(TwoLayer,)) -> None:
    if not isinstance(net, allowed):
        names = " or ".join(f"gflow.{c.__name__}" for c in allowed)
        raise ValueError(f"net must be a {names}, got {type(net).__name__}.")
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError(f"d (input dimension) must be an integer >= 1, got {d!r}.")
    if outer not in _OUTER:
        raise ValueError(f"outer={outer!r} is unknown; valid values are {list(_OUTER)}.")


def _normal(key, shape: tuple[int, ...], dtype=None):
    """``jax.random.normal(key, shape, dtype)``, drawn as a flat vector and reshaped: the
    same values (the threefry counter runs over the flattened index), but XLA:CPU compiles
    the flat sampler several times faster than a 2-d one of even size."""
    dtype = _float() if dtype is None else dtype
    return jax.random.normal(key, (math.prod(shape),), dtype=dtype).reshape(shape)


def _outer(key, shape, outer: str, scale: float):
    if outer == "sign":
        return scale * jax.random.rademacher(key, shape, dtype=_float())
    return scale * jax.random.normal(key, shape, dtype=_float())


def gaussian(
    key, net: TwoLayer, d: int, *, std: float = 1.0, outer: str = "sign", outer_std: float = 1.0,
    bias_std: float | None = None,
) -> TwoLayerParams:
    """Independent ("standard") initialization.

    ``w_j ~ N(0, std^2 I_d)``, ``b_j ~ N(0, bias_std^2)`` (``bias_std`` defaults to ``std``;
    only if ``net.bias``), and ``a_j`` uniform in ``{-outer_std, +outer_std}``
    (``outer="sign"``) or ``N(0, outer_std^2)`` (``outer="gaussian"``).

    For a :class:`gflow.MLP` every hidden layer is drawn this way; ``std`` and ``bias_std``
    may then also be sequences with one value per hidden layer.
    """
    _check(net, d, outer, (TwoLayer, MLP))
    if isinstance(net, MLP):
        return _gaussian_mlp(key, net, d, std, outer, outer_std, bias_std)
    return _two_layer(_gaussian_arrays, key, net, d, std, bias_std, outer_std, outer)


def _two_layer(arrays, key, net, d, std, bias_std, outer_std, outer) -> TwoLayerParams:
    """Parameters of a two-layer net from a jitted ``arrays`` program (:func:`gaussian`'s or
    :func:`paired`'s), with the standard deviations traced."""
    bstd = std if bias_std is None else bias_std
    W, b, a = arrays(key, *(jnp.asarray(v, _float()) for v in (std, bstd, outer_std)),
                     net.width, d, net.bias, outer)
    return TwoLayerParams(W=W, b=b, a=a)


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7))
def _gaussian_arrays(key, std, bias_std, outer_std, m: int, d: int, bias: bool, outer: str):
    """``W (m, d)``, ``b (m,)`` or ``None``, ``a (m,)`` of :func:`gaussian` for a two-layer
    net: one compiled program per size (the standard deviations are traced)."""
    # the barriers keep XLA from fusing the scale into the sampler, whose rounding would
    # then differ (by an ulp, in about a quarter of the entries) from std * jax.random.normal:
    # with them the parameters are exactly the documented draws (tests/test_init.py)
    kw, kb, ka = jax.random.split(key, 3)
    draw = lambda k, shape: jax.lax.optimization_barrier(_normal(k, shape))  # noqa: E731
    W = std * draw(kw, (m, d))
    b = bias_std * draw(kb, (m,)) if bias else None
    a = (outer_std * jax.lax.optimization_barrier(jax.random.rademacher(ka, (m,), dtype=_float()))
         if outer == "sign" else outer_std * draw(ka, (m,)))
    return W, b, a


def _per_layer(v, L: int, name: str) -> tuple[float, ...]:
    vals = tuple(float(x) for x in v) if hasattr(v, "__len__") else (float(v),) * L
    if len(vals) != L or not all(x >= 0 for x in vals):
        raise ValueError(f"{name} must be a number >= 0 or {L} numbers >= 0 (one per hidden "
                         f"layer), got {v!r}.")
    return vals


def _gaussian_mlp(key, net: MLP, d: int, std, outer, outer_std, bias_std) -> MLPParams:
    L = net.depth
    stds = _per_layer(std, L, "std")
    bstds = stds if bias_std is None else _per_layer(bias_std, L, "bias_std")
    keys = jax.random.split(key, 2 * L + 1)
    fan_in = (d,) + net.widths[:-1]
    Ws = tuple(s * _normal(k, (m, f))
               for s, k, m, f in zip(stds, keys[:L], net.widths, fan_in, strict=True))
    bs = None
    if net.bias:
        bs = tuple(s * jax.random.normal(k, (m,), dtype=_float())
                   for s, k, m in zip(bstds, keys[L:2 * L], net.widths, strict=True))
    return MLPParams(Ws=Ws, bs=bs, a=_outer(keys[-1], (net.widths[-1],), outer, outer_std))


def paired(
    key, net: TwoLayer, d: int, *, std: float = 1.0, outer: str = "sign", outer_std: float = 1.0,
    bias_std: float | None = None,
) -> TwoLayerParams:
    """Coupled initialization (Munteanu et al., ICML 2022, arXiv 2206.12802).

    Draws ``m/2`` independent neurons as in :func:`gaussian` and uses each twice:
    ``w_{2i} = w_{2i+1}``, ``b_{2i} = b_{2i+1}``, ``a_{2i} = -a_{2i+1}`` (0-based), so the
    network output is 0 for every input while the NTK at init has the same distribution as
    for independent init. In floating point the output is bitwise 0.0 when the backend sums
    the paired terms in matching order (the widths used in the tests and experiments) and at
    rounding level (~1e-9 in float32) otherwise. Requires an even width.
    """
    _check(net, d, outer)
    if net.width % 2:
        raise ValueError(f"paired init needs an even width, got width={net.width}.")
    return _two_layer(_paired_arrays, key, net, d, std, bias_std, outer_std, outer)


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7))
def _paired_arrays(key, std, bias_std, outer_std, m: int, d: int, bias: bool, outer: str):
    """The arrays of :func:`paired` (one compiled program per size): ``m/2`` neurons drawn
    as in :func:`gaussian`, each repeated, the copies' outer weights negated."""
    W, b, a = _gaussian_arrays(key, std, bias_std, outer_std, m // 2, d, bias, outer)
    twice = lambda x: jnp.repeat(x, 2, axis=0)  # noqa: E731
    sign = jnp.tile(jnp.array([1.0, -1.0], dtype=_float()), m // 2)
    return twice(W), None if b is None else twice(b), sign * twice(a)


def small(
    key, net: TwoLayer, d: int, gamma: float | None = None, *, std: float | None = None,
    outer: str = "gaussian", outer_std: float | None = None,
) -> TwoLayerParams:
    """Small initialization (condensed regime of Zhou et al., NeurIPS 2022).

    Every entry (W, b, a) ~ ``N(0, m^-gamma)`` -- ``gamma`` sets the **variance**
    ``m^-gamma`` (standard deviation ``m^(-gamma/2)``), as written in the paper. The
    authors' public notebook uses standard deviation ``m^-gamma``; to reproduce it pass
    ``gamma=2*gamma_notebook``, or give the standard deviation directly with ``std=``.
    Exactly one of ``gamma`` and ``std`` must be given. ``outer_std`` overrides the
    standard deviation of the output weights ``a`` (default: the same as the others).

    For a :class:`gflow.MLP`, ``gamma`` uses each layer's own width: ``W_l, b_l`` have
    variance ``m_l^-gamma`` (``m_l`` = width of hidden layer ``l``) and ``a`` has variance
    ``m_L^-gamma``; with one hidden layer this is the two-layer rule.
    """
    if (gamma is None) == (std is None):
        raise ValueError("small init needs exactly one of gamma= (variance m^-gamma) or std=.")
    if outer_std is not None and not outer_std > 0:
        raise ValueError(f"outer_std must be > 0, got {outer_std!r}.")
    if isinstance(net, MLP):
        _check(net, d, outer, (TwoLayer, MLP))
        stds = ((float(std),) * net.depth if std is not None
                else tuple(float(m) ** (-float(gamma) / 2.0) for m in net.widths))
        if not all(s > 0 for s in stds):
            raise ValueError(f"std must be > 0, got {std!r}.")
        a_std = stds[-1] if outer_std is None else outer_std
        return gaussian(key, net, d, std=stds, outer=outer, outer_std=a_std, bias_std=stds)
    if std is None:
        std = float(net.width) ** (-float(gamma) / 2.0)
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std!r}.")
    a_std = std if outer_std is None else outer_std
    return gaussian(key, net, d, std=std, outer=outer, outer_std=a_std, bias_std=std)

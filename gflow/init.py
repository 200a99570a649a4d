"""Initialization schemes: ``scheme(key, net, d, ...) -> params``.

Every scheme takes a typed PRNG key first, as ``jax.random`` does, and returns the net's
parameters in the default float dtype (float32, or float64 with ``jax_enable_x64``).
Schemes are pure functions of the key, so an ensemble is
``jax.vmap(lambda k: scheme(k, net, d))(jax.random.split(key, K))``.

- :func:`gaussian`, :func:`paired`, :func:`small`: two-layer nets and MLPs;
- :func:`low_rank`: a :class:`gflow.LowRankTwoLayer` (spectral or function-space);
- :func:`norm_only`: a :class:`gflow.rotation.NormOnlyTwoLayer` and its parameters
  (``(key, width, d) -> (net, params)``: the directions are part of the net);
- :func:`near_teacher`: a student near a teacher (``(key, net, teacher_net, teacher_params)``).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from . import lowrank, rotation
from ._random import normal as _normal
from .nets import MLP, MLPParams, TwoLayer, TwoLayerParams, check_int, per_layer

__all__ = ["gaussian", "low_rank", "near_teacher", "norm_only", "paired", "small"]

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
    # XLA may fuse the scale into the sampler: the draws of std * jax.random.normal to
    # rounding (an ulp; tests/test_init.py), as any two compiled programs agree
    kw, kb, ka = jax.random.split(key, 3)
    W = std * _normal(kw, (m, d))
    b = bias_std * _normal(kb, (m,)) if bias else None
    a = (outer_std * jax.random.rademacher(ka, (m,), dtype=_float()) if outer == "sign"
         else outer_std * _normal(ka, (m,)))
    return W, b, a


def _gaussian_mlp(key, net: MLP, d: int, std, outer, outer_std, bias_std) -> MLPParams:
    L = net.depth
    stds = per_layer(std, L, "std")
    bstds = stds if bias_std is None else per_layer(bias_std, L, "bias_std")
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


def low_rank(
    key, net, d: int, method: str = "function", *, method_kwargs=None, **kwargs
):
    """A full-rank :func:`gaussian` init (``kwargs``: ``std``, ``outer``, ...) of a
    :class:`gflow.LowRankTwoLayer` made rank ``net.rank`` by ``method``
    (:data:`gflow.lowrank.METHODS`: spectral, function-space or reference; options in
    ``method_kwargs``; Vodrahalli et al., arXiv 2202.00834). Spectral and function-space are
    pure functions of the key (``jax.vmap`` over keys works)."""
    if not isinstance(net, lowrank.LowRankTwoLayer):
        raise ValueError(f"net must be a gflow.LowRankTwoLayer, got {type(net).__name__}.")
    k_full, k_ref = jax.random.split(key)
    full = TwoLayer(net.width, net.activation, net.scaling, net.bias, net.train_outer)
    p = gaussian(k_full, full, d, **kwargs)
    extra = {"key": k_ref} if method == "reference" else {}
    return lowrank.factorize(p, net.rank, method, **extra, **(method_kwargs or {}))


def norm_only(key, width: int, d: int):
    """Standard init ``w_j ~ N(0, I_d)``, ``a_j ~ Unif{+-1}`` conditioned on ``|w_j| > 1``
    (rejection sampling per neuron), as a :class:`gflow.rotation.NormOnlyTwoLayer` with
    ``train_outer=True`` and its :class:`~gflow.rotation.NormOnlyParams` (Telgarsky, ICLR 2023,
    arXiv 2208.02789, norm-only regime). The condition makes ``r_j^2 - a_j^2 > 0``, which GF
    conserves, so no norm ever reaches 0 (no neuron flips to ``-u_j``). It removes the mass
    ``P(chi_d < 1)`` of the Gaussian (about 0.2% of neurons at d = 8).
    """
    check_int(width, "width")
    check_int(d, "d")
    dt = jnp.result_type(float)
    kw, ka = jax.random.split(key)
    W = np.zeros((0, d))
    i = 0
    while W.shape[0] < width:
        draw = np.asarray(jax.random.normal(jax.random.fold_in(kw, i), (width, d), dt))
        W = np.concatenate([W, draw[np.linalg.norm(draw, axis=1) > 1.0]])
        i += 1
    a = jax.random.rademacher(ka, (width,), dtype=dt)
    net = rotation.NormOnlyTwoLayer(jnp.asarray(W[:width], dt), train_outer=True)
    return net, rotation.NormOnlyParams(r=jnp.linalg.norm(jnp.asarray(W[:width], dt), axis=1), a=a)


def near_teacher(key, net: TwoLayer, teacher_net: TwoLayer, teacher_params: TwoLayerParams,
                 *, angle_deg: float = 10.0, weight_noise: float = 0.1) -> TwoLayerParams:
    """A student near the teacher (the local regime of Zhou, Ge, Jin 2021).

    Student neuron ``j`` belongs to teacher ``j mod k`` (so every teacher gets
    ``floor(m/k)`` or ``ceil(m/k)`` duplicates). Its direction is the teacher's, rotated by
    ``angle_deg`` degrees in a uniformly random orthogonal direction; the teacher's effective
    weight ``c* a*_i |w*_i|`` is split among its duplicates in random proportions (uniform
    on the simplex) and multiplied by ``1 + weight_noise * N(0, 1)``; each neuron is
    balanced, ``|a_j| = |w_j|`` (``a_j^2 - |w_j|^2`` is conserved by gradient flow for
    homogeneous activations), with the teacher's sign.
    """
    if not isinstance(net, TwoLayer) or net.bias:
        raise ValueError("net must be a gflow.TwoLayer with bias=False.")
    k, d = teacher_params.W.shape
    m = net.width
    if m < k:
        raise ValueError(f"the student needs width >= k={k} teacher neurons, got {m}.")
    if not 0 <= angle_deg < 90:
        raise ValueError(f"angle_deg must be in [0, 90), got {angle_deg!r}.")
    kt, ks, kn = jax.random.split(key, 3)
    dt = jnp.result_type(float)
    assign = jnp.arange(m) % k
    Ws = teacher_params.W / jnp.linalg.norm(teacher_params.W, axis=1, keepdims=True)
    u = Ws[assign]
    t = jax.random.normal(kt, (m, d), dt)
    t = t - jnp.sum(t * u, axis=1, keepdims=True) * u
    t = t / jnp.linalg.norm(t, axis=1, keepdims=True)
    ang = math.radians(angle_deg)
    direc = math.cos(ang) * u + math.sin(ang) * t
    e = jax.random.exponential(ks, (m,), dt)
    share = e / jnp.zeros((k,), dt).at[assign].add(e)[assign]
    eff = teacher_net.prefactor * teacher_params.a * jnp.linalg.norm(teacher_params.W, axis=1)
    s = share * eff[assign] * (1.0 + weight_noise * jax.random.normal(kn, (m,), dt))
    r = jnp.sqrt(jnp.abs(s) / net.prefactor)  # c_m a_j |w_j| = s with |a_j| = |w_j| = r
    return TwoLayerParams(W=r[:, None] * direc, b=None, a=jnp.sign(s) * r)

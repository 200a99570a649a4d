"""The empirical NTK without the full Jacobian: NTK-vector products, a blocked Gram, and the
two-layer Gram in closed form.

:func:`gflow.ntk.gram` builds the Jacobian ``J = df(X)/dtheta`` with ``jax.jacrev``: memory
O(n P), which for n = 10^4 samples of a width-10^4 net (P ~ 10^6) is 80 GB in float64. Here:

============================  ============================  ==============================
function                      computes                      memory
============================  ============================  ==============================
:func:`ntk_vp`                ``Theta(X, X2) v`` (n,)        O(chunk x activations + P)
                              (a VJP, then a JVP; samples
                              in chunks)
:func:`blocked_gram`          ``Theta(X, X2)`` (n, n2)       O(n n2 + 2 chunk P)
                              block by block
:func:`two_layer_gram`        ``Theta(X, X2)`` of a          O(n n2 + (n + n2) m)
                              :class:`gflow.TwoLayer`,
                              closed form
============================  ============================  ==============================

``Theta(x, x') = <df(x)/dtheta, df(x')/dtheta>`` over the *trainable* parameters
(``net.trainable``), as in :func:`gflow.ntk.gram`, which all three equal (tested). For the
two-layer net ``f(x) = c sum_j a_j sigma(z_j(x))``, ``z_j = w_j.x + b_j``::

    Theta(x, x') = c^2 [ sum_j sigma(z_j) sigma(z'_j)                    (a, if trained)
                       + (x.x' + 1{bias}) sum_j a_j^2 sigma'(z_j) sigma'(z'_j) ]   (W, b)

with ``sigma'`` the derivative autodiff takes (``relu'(0) = 0``, as the Jacobian's).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .nets import TwoLayer

__all__ = ["blocked_gram", "ntk_vp", "two_layer_gram"]


def _inputs(X, name: str):
    X = jnp.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d), got {X.shape}.")
    return X


def _chunks(X, chunk: int | None):
    """``X`` as (k, chunk, d) padded with copies of its first row, and its length."""
    n = X.shape[0]
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int)
                              or chunk < 1):
        raise ValueError(f"chunk must be a positive integer or None, got {chunk!r}.")
    if chunk is None or chunk >= n:
        return X[None], n
    k = -(-n // chunk)
    pad = jnp.broadcast_to(X[:1], (k * chunk - n, X.shape[1]))
    return jnp.concatenate([X, pad]).reshape(k, chunk, X.shape[1]), n


def _mask(net, params):
    """0/1 per leaf: 1 on trainable leaves, 0 on fixed ones (as ``net.trainable``)."""
    marks = net.trainable(params)
    return jax.tree.map(lambda p, t: jnp.asarray(float(t), p.dtype), params, marks)


def ntk_vp(net, params, X: Float[Array, "n d"], v: Float[Array, " n2"],
           X2: Float[Array, "n2 d"] | None = None, *, chunk: int | None = None
           ) -> Float[Array, " n"]:
    """``Theta(X, X2) v = J(X) J(X2)^T v`` without forming ``J``: one VJP of ``f(X2)`` with
    ``v`` (a parameter-shaped vector), masked to the trainable leaves, then one JVP of
    ``f(X)`` along it. With ``chunk``, samples go through in chunks of that many (``lax.map``),
    so memory holds one chunk's activations and two parameter vectors. ``X2`` defaults to X.

    Returns:
        (n,) array.
    """
    X = _inputs(X, "X")
    X2 = X if X2 is None else _inputs(X2, "X2")
    v = jnp.asarray(v)
    if v.shape != (X2.shape[0],):
        raise ValueError(f"v must have shape ({X2.shape[0]},) (one entry per row of X2), "
                         f"got {v.shape}.")
    B2, n2 = _chunks(X2, chunk)
    pad = jnp.zeros(B2.shape[0] * B2.shape[1] - n2, v.dtype)  # padded rows weigh 0
    vs = jnp.concatenate([v, pad]).reshape(B2.shape[:2])

    def pullback(args):
        xb, vb = args
        return jax.vjp(lambda p: net.apply(p, xb), params)[1](vb)[0]

    parts = jax.lax.map(pullback, (B2, vs))
    mask = _mask(net, params)
    w = jax.tree.map(lambda g, m: jnp.sum(g, axis=0) * m, parts, mask)
    B, n = _chunks(X, chunk)
    out = jax.lax.map(lambda xb: jax.jvp(lambda p: net.apply(p, xb), (params,), (w,))[1], B)
    return out.reshape(-1)[:n]


def blocked_gram(net, params, X: Float[Array, "n d"], X2: Float[Array, "n2 d"] | None = None,
                 *, chunk: int = 256) -> Float[Array, "n n2"]:
    """:func:`gflow.ntk.gram` block by block: the Jacobians of ``chunk`` samples of ``X`` and
    of ``X2`` at a time (``jax.jacrev``), never all of ``J`` (memory O(n n2 + 2 chunk P)).

    Returns:
        (n, n2) array.
    """
    from .ntk import features

    X = _inputs(X, "X")
    X2 = X if X2 is None else _inputs(X2, "X2")
    B, n = _chunks(X, chunk)
    B2, n2 = _chunks(X2, chunk)

    def row(xb):
        Ja = features(net, params, xb)
        return jax.lax.map(lambda xb2: Ja @ features(net, params, xb2).T, B2)

    blocks = jax.lax.map(row, B)  # (k, k2, chunk, chunk2)
    K = jnp.transpose(blocks, (0, 2, 1, 3)).reshape(B.shape[0] * B.shape[1], -1)
    return K[:n, :n2]


def two_layer_gram(net: TwoLayer, params, X: Float[Array, "n d"],
                   X2: Float[Array, "n2 d"] | None = None) -> Float[Array, "n n2"]:
    """The empirical NTK of a :class:`gflow.TwoLayer` in closed form (module docstring):
    two (n, m) feature matrices instead of the (n, (d + 2) m) Jacobian.

    Returns:
        (n, n2) array.
    """
    if not isinstance(net, TwoLayer):
        raise ValueError(f"net must be a gflow.TwoLayer, got {type(net).__name__}; use "
                         "ntk_vp or blocked_gram for other nets.")
    X = _inputs(X, "X")
    X2 = X if X2 is None else _inputs(X2, "X2")
    sigma = net.activation

    def feats(x):
        z = net.preactivations(params, x)
        h, dh = jax.jvp(sigma, (z,), (jnp.ones_like(z),))
        return h, dh * params.a

    (h, g), (h2, g2) = feats(X), feats(X2)
    inner = X @ X2.T + (1.0 if params.b is not None else 0.0)
    K = inner * (g @ g2.T)
    if net.train_outer:
        K = K + h @ h2.T
    return net.prefactor ** 2 * K

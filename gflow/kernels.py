"""Closed-form Gaussian kernels of ReLU-type units, and the stable angle they rest on.

For ``x ~ N(0, I_d)`` and ``theta`` the angle between ``u`` and ``v`` (Cho and Saul,
NeurIPS 2009, arc-cosine kernels of order 0 and 1):

- ``E[1{u.x > 0} 1{v.x > 0}] = (pi - theta) / (2 pi)``;
- ``E[relu(u.x) relu(v.x)] = (|u||v| sin theta + (pi - theta) u.v) / (2 pi)``;
- ``E[|u.x| |v.x|] = 4 E[relu(u.x) relu(v.x)] - u.v`` (from ``|z| = 2 relu(z) - z`` and
  ``E[relu(u.x) v.x] = u.v / 2``);
- ``E[(relu(u.x) - relu(v.x))^2] = |u - v|^2 / 2 - |u||v| (sin theta - theta cos theta) / pi``
  (:func:`relu_distance`, the same closed form without its cancellation).

Every closed form in gflow -- the infinite-width NTK (:mod:`gflow.ntk`), the exact
population loss (:mod:`gflow.population`), the low-rank layer error (:mod:`gflow.lowrank`)
-- is built from :func:`relu_cross` and :func:`angle` here.

**The angle.** ``arccos`` of a rounded cosine is ill-conditioned near 0 and pi: a cosine one
ulp below 1 gives ``theta ~ 1e-8`` (float64) or ``3e-4`` (float32) for two inputs that point
the same way. :func:`angle` uses ``theta = 2 atan2(|u^ - v^|, |u^ + v^|)`` on the unit vectors
(Kahan), which is accurate to a few ulp everywhere; equal rows get exactly 0 and opposite
rows exactly pi (rounded). ``sin theta = |u^ - v^| |u^ + v^| / 2`` comes from the
same two norms.

**The derivative.** Written as ``J(|u|^2, |v|^2, u.v) = s + (pi - theta) u.v`` with
``s = |u||v| sin theta``, the ReLU kernel is C^1 everywhere with ``dJ/d(u.v) = pi - theta``,
``dJ/d|u|^2 = s / (2 |u|^2)`` (the ``1/sin theta`` of ``d theta`` cancels), so gradients are
exact and finite even for parallel or antiparallel arguments -- the duplicated neurons that
over-parameterized students form. That rule is the one ``custom_jvp`` of the module. Second
derivatives are not provided exactly (they are singular at ``theta = 0`` anyway).

Conventions: functions broadcast over leading axes (``u`` (..., d), ``v`` (..., d)); for a
matrix over all pairs pass ``U[:, None]`` and ``V[None]`` (:func:`pairwise`). The angle with a
zero vector is taken as ``pi / 2``; every kernel value that carries a factor ``|u|`` is then 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = [
    "ACTIVATIONS",
    "angle",
    "arccos",
    "gaussian",
    "kappa",
    "pairwise",
    "relu_cross",
    "relu_distance",
]

#: activations with a closed-form Gaussian kernel (:func:`gaussian`)
ACTIVATIONS = ("relu", "abs")


def _norm(x):
    """``|x|`` over the last axis with a zero-safe gradient (0 at ``x = 0``)."""
    sq = jnp.sum(x * x, axis=-1)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def _angle_parts(u, v):
    """``(theta, sin theta)`` of broadcasting rows, from the unit vectors (zero rows: pi/2)."""
    nu, nv = _norm(u)[..., None], _norm(v)[..., None]
    uh = jnp.where(nu > 0, u / jnp.where(nu > 0, nu, 1.0), 0.0)
    vh = jnp.where(nv > 0, v / jnp.where(nv > 0, nv, 1.0), 0.0)
    minus, plus = _norm(uh - vh), _norm(uh + vh)
    theta = 2.0 * jnp.arctan2(minus, plus)
    sin = jnp.minimum(0.5 * minus * plus, 1.0)
    # equal and opposite rows exactly: a compiled program may round the two normalizations
    # differently (XLA fuses the two norms into different loops), leaving ~1 ulp
    same, opposite = jnp.all(u == v, axis=-1), jnp.all(u == -v, axis=-1)
    theta = jnp.where(same, 0.0, jnp.where(opposite, jnp.pi, theta))
    sin = jnp.where(same | opposite, 0.0, sin)
    live = (nu[..., 0] > 0) & (nv[..., 0] > 0)
    return jnp.where(live, theta, jnp.pi / 2), jnp.where(live, sin, 1.0)


def angle(u: Float[Array, "... d"], v: Float[Array, "... d"]) -> Float[Array, "..."]:
    """Angle in ``[0, pi]`` between ``u`` and ``v`` (rows, broadcasting over leading axes):
    ``2 atan2(|u^ - v^|, |u^ + v^|)`` on the unit vectors, accurate to a few ulp also near 0
    and pi (see the module docstring); ``pi / 2`` if either is the zero vector."""
    u, v = jnp.asarray(u), jnp.asarray(v)
    return _angle_parts(u, v)[0]


@jax.custom_jvp
def _relu_j(nu2, nv2, uv, theta, sin):
    """``2 pi E[relu(u.x) relu(v.x)] = |u||v| sin theta + (pi - theta) u.v`` as a function of
    ``|u|^2, |v|^2, u.v``; ``theta, sin`` are the angle and its sine, computed stably by the
    caller from the same vectors (their tangents are not used: see the jvp)."""
    return jnp.sqrt(nu2 * nv2) * sin + (jnp.pi - theta) * uv


@_relu_j.defjvp
def _relu_j_jvp(primals, tangents):
    # theta and sin are functions of (|u|^2, |v|^2, u.v); their contribution is folded into
    # the exact partials (the 1/sin(theta) of d theta cancels):
    #   dJ/d(u.v) = pi - theta,  dJ/d|u|^2 = s / (2 |u|^2),  dJ/d|v|^2 = s / (2 |v|^2),
    # finite for parallel vectors (s = 0) and taken as 0 at u = 0 or v = 0.
    nu2, nv2, uv, theta, sin = primals
    dnu2, dnv2, duv, _, _ = tangents
    s = jnp.sqrt(nu2 * nv2) * sin
    out = s + (jnp.pi - theta) * uv
    gu = jnp.where(nu2 > 0, s / (2.0 * jnp.where(nu2 > 0, nu2, 1.0)), 0.0)
    gv = jnp.where(nv2 > 0, s / (2.0 * jnp.where(nv2 > 0, nv2, 1.0)), 0.0)
    return out, (jnp.pi - theta) * duv + gu * dnu2 + gv * dnv2


def relu_cross(u: Float[Array, "... d"], v: Float[Array, "... d"]) -> Float[Array, "..."]:
    """``E_{x ~ N(0, I)}[relu(u.x) relu(v.x)] = (|u||v| sin theta + (pi - theta) u.v) / (2 pi)``
    for broadcasting rows; exact, finite first derivatives everywhere (module docstring)."""
    u, v = jnp.asarray(u), jnp.asarray(v)
    theta, sin = jax.lax.stop_gradient(_angle_parts(u, v))
    nu2, nv2 = jnp.sum(u * u, axis=-1), jnp.sum(v * v, axis=-1)
    uv = jnp.sum(u * v, axis=-1)
    return _relu_j(nu2, nv2, uv, theta, sin) / (2 * jnp.pi)


def relu_distance(u: Float[Array, "... d"], v: Float[Array, "... d"]) -> Float[Array, "..."]:
    """``E_{x ~ N(0, I)}[(relu(u.x) - relu(v.x))^2] = |u - v|^2 / 2 - |u||v| (sin theta -
    theta cos theta) / pi`` (broadcasting rows): the same closed form as :func:`relu_cross`
    (``|u|^2/2 + |v|^2/2 - 2`` :func:`relu_cross`), written without its cancellation, so a
    small distance keeps its relative accuracy (the second term is ``O(theta^3)``)."""
    u, v = jnp.asarray(u), jnp.asarray(v)
    theta, sin = _angle_parts(u, v)
    t2 = theta * theta
    # sin t - t cos t = t^3/3 - t^5/30 + t^7/840 - t^9/45360 + ...: the series below 0.05
    # (next term < 1e-16 relative), where the direct difference would cancel
    series = theta * t2 * (1 / 3 - t2 * (1 / 30 - t2 * (1 / 840 - t2 / 45360)))
    odd = jnp.where(theta < 0.05, series, sin - theta * jnp.cos(theta))
    d2 = jnp.sum((u - v) ** 2, axis=-1)
    return 0.5 * d2 - _norm(u) * _norm(v) * odd / jnp.pi


def arccos(u: Float[Array, "... d"], v: Float[Array, "... d"], order: int = 1
           ) -> Float[Array, "..."]:
    """Arc-cosine kernels of Cho and Saul, ``k_q(u, v) = 2 E_w[relu(w.u)^q relu(w.v)^q]`` for
    ``w ~ N(0, I)`` (broadcasting rows):

    - ``order=0``: ``1 - theta/pi`` (``relu^0`` read as the step ``1{. > 0}``);
    - ``order=1``: ``|u||v| (sin theta + (pi - theta) cos theta) / pi = 2`` :func:`relu_cross`.
    """
    if order not in (0, 1):
        raise ValueError(f"order must be 0 or 1, got {order!r}.")
    if order == 0:
        return 1.0 - angle(u, v) / jnp.pi
    return 2.0 * relu_cross(u, v)


def gaussian(u: Float[Array, "... d"], v: Float[Array, "... d"], activation: str = "relu"
             ) -> Float[Array, "..."]:
    """``E_{x ~ N(0, I)}[sigma(u.x) sigma(v.x)]`` for ``activation`` in :data:`ACTIVATIONS`
    (broadcasting rows), in closed form; exact first derivatives."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} has no closed-form Gaussian kernel here; "
                         f"valid values are {list(ACTIVATIONS)}.")
    relu = relu_cross(u, v)
    if activation == "relu":
        return relu
    return 4.0 * relu - jnp.sum(jnp.asarray(u) * jnp.asarray(v), axis=-1)


def pairwise(kernel, U: Float[Array, "p d"], V: Float[Array, "q d"] | None = None, **kwargs
             ) -> Float[Array, "p q"]:
    """``kernel(U[i], V[j], **kwargs)`` for every pair of rows (``V`` defaults to ``U``)."""
    U = jnp.asarray(U)
    V = U if V is None else jnp.asarray(V)
    if U.ndim != 2 or V.ndim != 2 or U.shape[1] != V.shape[1]:
        raise ValueError(f"U and V must have shapes (p, d) and (q, d), got {U.shape} and "
                         f"{V.shape}.")
    return kernel(U[:, None, :], V[None, :, :], **kwargs)


def kappa(rho: Float[Array, "..."], sin: Float[Array, "..."] | None = None
          ) -> Float[Array, "..."]:
    """``kappa(rho) = (sqrt(1 - rho^2) + (pi - arccos rho) rho) / (2 pi)``, rho in [-1, 1]:
    ``E[relu(u.x) relu(v.x)] = |u||v| kappa(cos(u, v))``, with ``kappa' = (pi - arccos rho) /
    (2 pi)`` everywhere on [-1, 1] (the same rule as :func:`relu_cross`).

    ``sin``: optionally ``sqrt(1 - rho^2) >= 0`` computed independently (e.g. the norm of a
    projection's residual), from which the angle is taken as ``atan2(sin, rho)``: accurate
    where ``rho`` is within rounding of 1, which ``arccos(rho)`` is not."""
    rho = jnp.clip(jnp.asarray(rho, jnp.result_type(rho, float)), -1.0, 1.0)
    if sin is None:
        sin = jnp.sqrt(jnp.maximum((1.0 - rho) * (1.0 + rho), 0.0))
    theta, sin = jax.lax.stop_gradient(
        (jnp.arctan2(sin, rho), jnp.broadcast_to(sin, rho.shape)))
    one = jnp.ones_like(rho)
    return _relu_j(one, one, rho, theta, sin) / (2 * jnp.pi)

"""Closed-form infinite-width kernels (NNGP and NTK) of deep fully connected nets, in the
parameterization of :class:`gflow.MLP` with ``scaling="ntk"``.

The net (:class:`gflow.MLP`): ``z_1 = W_1 x + b_1``, ``z_l = W_l h_{l-1} / sqrt(m_{l-1}) +
b_l`` (``l = 2..L``), ``h_l = sigma(z_l)``, ``f = a . h_L / sqrt(m_L)``, initialized as
:func:`gflow.init.gaussian` does: ``W_l`` entries ``N(0, s_l^2)``, ``b_l`` entries ``N(0,
s_{b,l}^2)``, ``E a^2 = s_a^2``. Note: no ``1/sqrt(d)`` on the first layer (neural-tangents
has one), and the trained parameters are ``W, b, a`` themselves, not standard normals
multiplied by the ``s`` (neural-tangents' convention), so the ``s`` enter the NNGP but the
NTK's "own layer" terms carry none. A parameter scaled by ``s`` has ``s`` times the gradient,
so neural-tangents' NTK parameterization with ``sigma_w = s_l`` (``s_1 sqrt(d)`` on the first
layer), ``sigma_b = s_{b,l} = s_l`` and readout ``sigma_a = s_a`` has the NTK ``sum_l s_l^2
layers[l] + s_a^2 outer`` and the same NNGP (tests/test_mlp_kernels.py holds this against the
published recursions, transcribed there).

As all widths go to infinity, each unit's pre-activations at two inputs are jointly Gaussian
with covariance ``Sigma_l`` (Neal 1996; Lee et al., ICLR 2018; Matthews et al., ICLR 2018),
and the NTK is deterministic (Jacot, Gabriel, Hongler, NeurIPS 2018, Theorem 1; Arora et al.,
NeurIPS 2019; Lee et al., NeurIPS 2019), here written out for gflow's parameterization::

    Sigma_1 = s_1^2 x.x' + s_{b,1}^2,         Theta_1 = x.x' + [b trained]
    Sigma_l = s_l^2 E[sigma(u) sigma(v)] + s_{b,l}^2
    Theta_l = E[sigma(u) sigma(v)] + [b] + s_l^2 E[sigma'(u) sigma'(v)] Theta_{l-1}
    NNGP    = s_a^2 E[sigma(u) sigma(v)]                         (u, v ~ Sigma_L)
    NTK     = [a trained] E[sigma(u) sigma(v)] + s_a^2 E[sigma'(u) sigma'(v)] Theta_L,

with ``(u, v) ~ N(0, Sigma_{l-1})`` restricted to the two inputs. The NTK is a sum over the
trained layers (:func:`mlp_kernels` returns each term: ``layers[l]`` is the term of ``W_l,
b_l``, ``outer`` that of ``a``): the term of layer ``l`` is its own ``Theta_l`` base carried
to the output by the factors ``s_{k+1}^2 E[sigma' sigma']`` and ``s_a^2 E[sigma' sigma']``.

The Gaussian expectations in closed form, for variances ``q, q'``, covariance ``c``, angle
``theta = arccos(c / sqrt(q q'))``:

- ``relu``: ``sqrt(q q') (sin theta + (pi - theta) cos theta) / (2 pi)`` and ``(pi - theta)
  / (2 pi)`` (Cho and Saul, NeurIPS 2009, arc-cosine kernels of orders 1 and 0);
- ``leaky_relu`` with slope ``alpha`` (gflow's 0.01), ``sigma = (1 - alpha) relu + alpha
  id``: ``(1 - alpha)^2 J + alpha c`` and ``(1 - alpha)^2 (pi - theta) / (2 pi) + alpha``;
- ``abs`` (``alpha = -1`` of the same): ``4 J - c`` and ``1 - 2 theta / pi``;
- ``erf``: ``(2/pi) arcsin(2c / sqrt((1 + 2q)(1 + 2q')))`` (Williams, NeurIPS 1997) and
  ``(4/pi) / sqrt((1 + 2q)(1 + 2q') - 4c^2)``; an :class:`gflow.MLP` takes it as the callable
  ``jax.scipy.special.erf``;
- ``linear``: ``c`` and 1.

The first layer's angle is taken stably (:func:`gflow.kernels.angle` of ``(s_1 x, s_b)``);
deeper angles come from ``arccos`` of the recursed cosine (0 on the diagonal of a kernel of
``X`` with itself), so near-duplicate inputs lose about half the digits of that angle in
deeper layers (``~1e-8`` in float64); the ReLU-type ``E[sigma sigma]`` is flat in the angle
at 0 (error ``O(theta^2)``), the derivative term is not.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from . import kernels
from .nets import per_layer

__all__ = ["KERNEL_ACTIVATIONS", "mlp_kernels"]

#: activations with closed-form NNGP and NTK here (the slope of ``leaky_relu`` is gflow's)
KERNEL_ACTIVATIONS = {"relu": 0.0, "leaky_relu": 0.01, "abs": -1.0, "linear": 1.0, "erf": None}


def _expect(activation: str, q1, q2, c, theta):
    """``(E[sigma(u) sigma(v)], E[sigma'(u) sigma'(v)])`` for ``(u, v)`` with variances
    ``q1, q2``, covariance ``c`` and angle ``theta`` (broadcasting; erf does not use it)."""
    if activation == "erf":
        det = (1 + 2 * q1) * (1 + 2 * q2)
        return (2 / jnp.pi) * jnp.arcsin(jnp.clip(2 * c / jnp.sqrt(det), -1, 1)), \
            (4 / jnp.pi) / jnp.sqrt(det - 4 * c * c)
    alpha = KERNEL_ACTIVATIONS[activation]
    norm = jnp.sqrt(q1 * q2)
    J = (norm * jnp.sin(theta) + (jnp.pi - theta) * c) / (2 * jnp.pi)
    return ((1 - alpha) ** 2 * J + alpha * c,
            (1 - alpha) ** 2 * (jnp.pi - theta) / (2 * jnp.pi) + alpha)


def _recursed_angle(c, q1, q2, same: bool):
    """``arccos(c / sqrt(q1 q2))``, clipped; 0 on the diagonal of a kernel of ``X`` with
    itself (where ``c = q`` up to rounding)."""
    norm = jnp.sqrt(q1 * q2)
    theta = jnp.arccos(jnp.clip(c / jnp.where(norm > 0, norm, 1.0), -1.0, 1.0))
    return jnp.where(jnp.eye(c.shape[0], c.shape[1], dtype=bool), 0.0, theta) if same else theta


def mlp_kernels(X: Float[Array, "n d"], X2: Float[Array, "n2 d"] | None = None, *,
                depth: int, activation: str = "relu", bias: bool = False, std=1.0,
                bias_std=None, outer_std: float = 1.0, train_outer: bool = True) -> dict:
    """Infinite-width NNGP and NTK of ``gflow.MLP(widths, activation, "ntk", bias,
    train_outer)`` with ``depth`` hidden layers, initialized by ``gflow.init.gaussian(...,
    std=std, bias_std=bias_std, outer_std=outer_std)`` (module docstring).

    Args:
        X: inputs (n, d).
        X2: second inputs (n2, d); default ``X``.
        depth: hidden layers L >= 1.
        activation: one of :data:`KERNEL_ACTIVATIONS`.
        bias: whether every hidden layer has a (trained) bias.
        std: standard deviation of the hidden weights, one number or one per layer.
        bias_std: of the biases (default ``std``, as :func:`gflow.init.gaussian`).
        outer_std: ``sqrt(E a^2)`` of the output weights.
        train_outer: whether ``a`` is trained (its NTK term ``outer``).

    Returns:
        ``{"nngp": (n, n2), "ntk": (n, n2), "layers": (L, n, n2), "first_layer": (n, n2),
        "outer": (n, n2)}``: the output's covariance over inits, the NTK of every trained
        parameter, the term of each hidden layer's ``W_l, b_l`` (``first_layer``:
        ``layers[0]``) and of ``a`` (0 if not trained); ``ntk = sum(layers) + outer``.
    """
    if activation not in KERNEL_ACTIVATIONS:
        raise ValueError(f"activation={activation!r} has no closed-form kernel here; valid "
                         f"values are {list(KERNEL_ACTIVATIONS)}.")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1 (hidden layers), got {depth!r}.")
    X, same = jnp.asarray(X), X2 is None
    X2 = X if same else jnp.asarray(X2)
    if X.ndim != 2 or X2.ndim != 2 or X.shape[1] != X2.shape[1]:
        raise ValueError(f"X and X2 must have shapes (n, d) and (n2, d), got {X.shape} and "
                         f"{X2.shape}.")
    s = per_layer(std, depth, "std")
    sb = s if bias_std is None else per_layer(bias_std, depth, "bias_std")
    return _kernels(X, X2, same, depth, activation, bool(bias), s,
                    sb if bias else (0.0,) * depth, float(outer_std), bool(train_outer))


@functools.partial(jax.jit, static_argnums=tuple(range(2, 10)))
def _kernels(X, X2, same, depth, activation, bias, s, sb, outer_std, train_outer):
    """:func:`mlp_kernels` after its checks: one compiled program per configuration."""
    one = jnp.ones((X.shape[0], 1), X.dtype), jnp.ones((X2.shape[0], 1), X2.dtype)
    aug = (jnp.concatenate([s[0] * X, sb[0] * one[0]], 1),
           jnp.concatenate([s[0] * X2, sb[0] * one[1]], 1))
    # layer 1: covariance, its diagonals and a stable angle; tangent-kernel base
    c = aug[0] @ aug[1].T
    q1, q2 = jnp.sum(aug[0] ** 2, 1)[:, None], jnp.sum(aug[1] ** 2, 1)[None, :]
    theta = kernels.pairwise(kernels.angle, *aug)
    base = [X @ X2.T + float(bias)]
    dots = []  # E[sigma' sigma'] under Sigma_l, l = 1..L
    for layer in range(1, depth + 1):
        E, Ed = _expect(activation, q1, q2, c, theta)
        e1, _ = _expect(activation, q1, q1, q1, jnp.zeros_like(q1))  # E[sigma(u)^2]
        e2, _ = _expect(activation, q2, q2, q2, jnp.zeros_like(q2))
        dots.append(Ed)
        if layer == depth:
            break
        base.append(E + float(bias))
        c, q1, q2 = (s[layer] ** 2 * v + sb[layer] ** 2 for v in (E, e1, e2))
        theta = _recursed_angle(c, q1, q2, same)
    # carry each layer's base to the output
    terms, carry = [], outer_std ** 2 * dots[-1]
    for layer in range(depth, 0, -1):
        terms.insert(0, base[layer - 1] * carry)
        if layer > 1:
            carry = carry * s[layer - 1] ** 2 * dots[layer - 2]
    outer = E if train_outer else jnp.zeros_like(E)
    layers = jnp.stack(terms)
    return {"nngp": outer_std ** 2 * E, "ntk": jnp.sum(layers, 0) + outer, "layers": layers,
            "first_layer": layers[0], "outer": outer}

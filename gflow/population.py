"""Teacher-student two-layer nets with Gaussian inputs: exact population loss and observables.

Setting of Zhou, Ge, Jin, "A Local Convergence Theory for Mildly Over-Parameterized Two-Layer
Neural Network", COLT 2021 (arXiv 2102.02410): teacher ``f*(x) = sum_i a*_i sigma(w*_i . x)``
with ``k`` neurons, ``x ~ N(0, I_d)``, student ``f(x) = c_m sum_j a_j sigma(w_j . x)`` with
``m >= k`` neurons, both layers trained on the square loss ``L = E[(f - f*)^2] / 2``.

For ``x ~ N(0, I_d)`` and ``theta`` the angle between ``u`` and ``v``:

- ReLU: ``E[relu(u.x) relu(v.x)] = |u||v| (sin theta + (pi - theta) cos theta) / (2 pi)``
  (Cho and Saul 2009);
- abs:  ``E[|u.x| |v.x|] = (2/pi) |u||v| (sin theta + (pi/2 - theta) cos theta)``
  (from ``|z| = 2 relu(z) - z`` and ``E[relu(u.x) v.x] = u.v / 2``).

Both are ``|u||v| kappa(cos theta)``. Written as ``sqrt(|u|^2|v|^2 - (u.v)^2) + (pi - theta) u.v``
the ReLU kernel is differentiable everywhere with ``d/d(u.v) = (pi - theta) / (2 pi)``
(the ``1/sin theta`` of ``d theta`` cancels), so the population loss here has exact,
finite gradients (via ``jax.grad``) even for parallel neurons -- the duplicates that
over-parameterized students form. :func:`loss` gives the population loss of any student
:class:`~gflow.TwoLayer` against a teacher; :func:`observables` builds in-solve observables
(exact population loss, nearest-teacher angles, cluster outer-weight totals). The
``lojasiewicz_ratio`` observable ``|grad L|^2 / L`` (of the training objective) is registered
with :mod:`gflow.observe` at import.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .data import Dataset
from .nets import TwoLayer, TwoLayerParams, check_int

__all__ = [
    "ACTIVATIONS",
    "PopulationNet",
    "cluster_weights",
    "gaussian_kernel",
    "identity_loss",
    "local_init",
    "loss",
    "nearest_teacher",
    "observables",
    "population_dataset",
    "teacher_data",
]

#: activations with a closed-form Gaussian kernel
ACTIVATIONS = ("relu", "abs")


def _relu_cross_parts(nu2, nv2, uv):
    nn = jnp.sqrt(nu2 * nv2)
    cos = jnp.clip(jnp.where(nn > 0, uv / jnp.where(nn > 0, nn, 1.0), 1.0), -1.0, 1.0)
    theta = jnp.arccos(cos)
    s = nn * jnp.sqrt(jnp.clip(1.0 - cos**2, 0.0))  # = sqrt(|u|^2|v|^2 - (u.v)^2)
    return s, theta


@jax.custom_jvp
def _relu_cross(nu2, nv2, uv):
    """``2 pi E[relu(u.x) relu(v.x)] = s + (pi - theta) u.v``, ``s = sqrt(|u|^2|v|^2 - (u.v)^2)``,
    as a function of ``|u|^2, |v|^2, u.v`` (broadcasting)."""
    s, theta = _relu_cross_parts(nu2, nv2, uv)
    return s + (jnp.pi - theta) * uv


@_relu_cross.defjvp
def _relu_cross_jvp(primals, tangents):
    # Exact partial derivatives (the 1/sin(theta) of d theta cancels):
    #   d/d(u.v) = pi - theta,  d/d|u|^2 = s / (2 |u|^2),  d/d|v|^2 = s / (2 |v|^2),
    # all finite for parallel vectors (s = 0); taken as 0 at u = 0 or v = 0.
    nu2, nv2, uv = primals
    dnu2, dnv2, duv = tangents
    s, theta = _relu_cross_parts(nu2, nv2, uv)
    out = s + (jnp.pi - theta) * uv
    gu = jnp.where(nu2 > 0, s / (2.0 * jnp.where(nu2 > 0, nu2, 1.0)), 0.0)
    gv = jnp.where(nv2 > 0, s / (2.0 * jnp.where(nv2 > 0, nv2, 1.0)), 0.0)
    return out, (jnp.pi - theta) * duv + gu * dnu2 + gv * dnv2


def gaussian_kernel(U: Float[Array, "p d"], V: Float[Array, "q d"], activation: str = "relu"
                    ) -> Float[Array, "p q"]:
    """``E_{x ~ N(0, I_d)}[sigma(u_i . x) sigma(v_j . x)]`` for every pair of rows, in closed
    form, for ``activation`` in :data:`ACTIVATIONS`; differentiable (see module docstring)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} has no closed-form Gaussian kernel here; "
                         f"valid values are {list(ACTIVATIONS)}.")
    U, V = jnp.asarray(U), jnp.asarray(V)
    if U.ndim != 2 or V.ndim != 2 or U.shape[1] != V.shape[1]:
        raise ValueError(f"U and V must have shapes (p, d) and (q, d), got {U.shape} and "
                         f"{V.shape}.")
    nu2 = jnp.sum(U**2, axis=1)[:, None]
    nv2 = jnp.sum(V**2, axis=1)[None, :]
    uv = U @ V.T
    relu = _relu_cross(nu2, nv2, uv) / (2 * jnp.pi)
    if activation == "relu":
        return relu
    return 4.0 * relu - uv  # E|u.x||v.x| = 4 E[relu relu] - u.v


def _check_pair(net, params, tnet, tparams):
    for nt, pr, name in ((net, params, "net"), (tnet, tparams, "teacher net")):
        if not isinstance(nt, TwoLayer):
            raise ValueError(f"{name} must be a gflow.TwoLayer, got {type(nt).__name__}.")
        if nt.bias or pr.b is not None:
            raise ValueError(f"{name} must have bias=False for the closed-form population loss.")
        if nt.activation.name not in ACTIVATIONS:
            raise ValueError(f"{name} has activation {nt.activation.name!r}; the closed form "
                             f"exists for {list(ACTIVATIONS)}.")
    if net.activation.name != tnet.activation.name:
        raise ValueError(f"student activation {net.activation.name!r} differs from the "
                         f"teacher's {tnet.activation.name!r}.")


def loss(net: TwoLayer, params: TwoLayerParams, teacher_net: TwoLayer,
         teacher_params: TwoLayerParams) -> Float[Array, ""]:
    """Exact population loss ``E_{x ~ N(0,I)}[(f(x) - f*(x))^2] / 2`` of a student against a
    teacher (both :class:`~gflow.TwoLayer`, no bias, same activation in {relu, abs}; each with
    its own output scale ``c_m``). Differentiable in ``params`` (exact gradient via ``jax.grad``).
    """
    _check_pair(net, params, teacher_net, teacher_params)
    act = net.activation.name
    a = net.prefactor * params.a
    b = teacher_net.prefactor * teacher_params.a
    W, Ws = params.W, teacher_params.W
    ss = a @ gaussian_kernel(W, W, act) @ a
    st = a @ gaussian_kernel(W, Ws, act) @ b
    tt = b @ gaussian_kernel(Ws, Ws, act) @ b
    return 0.5 * (ss - 2.0 * st + tt)


class PopulationNet(eqx.Module):
    """Adapter that makes the exact population loss an objective for :func:`gflow.simulate`.

    ``apply(params, X)`` ignores the inputs' values and returns the population loss of
    ``student`` at ``params`` against the teacher, once per input row. Train it with
    ``loss=identity_loss`` (per-sample loss ``f``) on a one-row placeholder dataset
    (:func:`population_dataset`): the objective then *is* ``L(theta)``, its gradient the exact
    population gradient -- gradient flow with no sampling noise and no activation-pattern
    kinks (the closed form is C^1), so adaptive solvers take large steps.
    """

    student: TwoLayer
    teacher: TwoLayer
    teacher_params: TwoLayerParams

    def __check_init__(self):
        _check_pair(self.student, TwoLayerParams(W=jnp.zeros((1, 1)), b=None, a=jnp.zeros(1)),
                    self.teacher, self.teacher_params)

    @property
    def width(self) -> int:
        return self.student.width

    def apply(self, params: TwoLayerParams, X: Float[Array, "n d"]) -> Float[Array, " n"]:
        L = loss(self.student, params, self.teacher, self.teacher_params)
        return jnp.broadcast_to(L, X.shape[:1])

    def trainable(self, params):
        return self.student.trainable(params)

    def check_params(self, params, d=None):
        self.student.check_params(params, d)


def identity_loss(f: Float[Array, " n"], y: Float[Array, " n"]) -> Float[Array, " n"]:
    """Per-sample loss ``f`` (for :class:`PopulationNet`, whose output already is the loss)."""
    return f


def population_dataset(d: int) -> Dataset:
    """One placeholder input row (zeros) of dimension ``d`` for :class:`PopulationNet`."""
    return Dataset(jnp.zeros((1, d)), jnp.zeros((1,)))


def _student_net(net):
    return net.student if isinstance(net, PopulationNet) else net


def nearest_teacher(W: Float[Array, "m d"], W_star: Float[Array, "k d"], *,
                    symmetric: bool = False) -> tuple[Array, Array]:
    """For each student neuron, its closest teacher neuron by angle and that angle (radians).

    ``symmetric=True`` treats ``w`` and ``-w`` as the same direction (for ``abs``, where
    ``|w.x| = |-w.x|``), so angles lie in ``[0, pi/2]``.

    Returns:
        ``(index (m,), angle (m,))``.
    """
    Wn = W / jnp.maximum(jnp.linalg.norm(W, axis=1, keepdims=True), 1e-30)
    Sn = W_star / jnp.maximum(jnp.linalg.norm(W_star, axis=1, keepdims=True), 1e-30)
    cos = Wn @ Sn.T
    if symmetric:
        cos = jnp.abs(cos)
    idx = jnp.argmax(cos, axis=1)
    c = jnp.clip(jnp.take_along_axis(cos, idx[:, None], axis=1)[:, 0], -1.0, 1.0)
    # arccos loses precision near 0; use atan2(|u x v|, u.v) via the norm of the residual
    Sel = Sn[idx] * jnp.where(symmetric, jnp.sign(jnp.sum(Wn * Sn[idx], axis=1)), 1.0)[:, None]
    resid = jnp.linalg.norm(Wn - jnp.sum(Wn * Sel, axis=1, keepdims=True) * Sel, axis=1)
    return idx, jnp.arctan2(resid, c)


def cluster_weights(net: TwoLayer, params: TwoLayerParams, teacher_params: TwoLayerParams, *,
                    symmetric: bool = False) -> Float[Array, " k"]:
    """Total effective outer weight per teacher cluster: ``sum_{j -> i} c_m a_j |w_j|`` over the
    student neurons whose nearest teacher is ``i`` (compare with ``a*_i |w*_i|`` times the
    teacher's ``c_m``). For ``symmetric`` (abs) neurons are matched up to sign."""
    idx, _ = nearest_teacher(params.W, teacher_params.W, symmetric=symmetric)
    contrib = net.prefactor * params.a * jnp.linalg.norm(params.W, axis=1)
    k = teacher_params.W.shape[0]
    return jnp.zeros((k,), contrib.dtype).at[idx].add(contrib)


def observables(teacher_net: TwoLayer, teacher_params: TwoLayerParams) -> dict:
    """In-solve observables for a teacher-student run, to pass as ``simulate(observe=...)``:

    - ``population_loss``: exact :func:`loss` against the teacher;
    - ``teacher_angle``: per student neuron, angle (degrees) to its nearest teacher, (m,);
    - ``teacher_index``: per student neuron, index of that teacher, (m,);
    - ``cluster_weight``: :func:`cluster_weights`, (k,).

    (The teacher is captured in the returned functions; a fresh call builds new functions,
    so reuse one dict across runs to avoid recompiling.)
    """
    from .observe import Observable

    sym = teacher_net.activation.name == "abs"
    tW = jnp.asarray(teacher_params.W)
    tp = TwoLayerParams(W=tW, b=None, a=jnp.asarray(teacher_params.a))

    def population_loss(p, c):
        return loss(_student_net(c.objective.net), p, teacher_net, tp)

    def teacher_angle(p, c):
        return jnp.degrees(nearest_teacher(p.W, tW, symmetric=sym)[1])

    def teacher_index(p, c):
        # float, so that saves after an early stop can hold NaN
        return nearest_teacher(p.W, tW, symmetric=sym)[0].astype(p.W.dtype)

    def cluster_weight(p, c):
        return cluster_weights(_student_net(c.objective.net), p, tp, symmetric=sym)

    return {
        "population_loss": Observable(population_loss),
        "teacher_angle": Observable(teacher_angle, dims=("neuron",)),
        "teacher_index": Observable(teacher_index, dims=("neuron",)),
        "cluster_weight": Observable(cluster_weight, dims=("teacher",)),
    }


def teacher_data(key, n: int, d: int, k: int, *, activation: str = "abs",
                 directions: str = "orthogonal", outer: str = "positive",
                 n_test: int = 0) -> Dataset:
    """Gaussian inputs labelled by a two-layer teacher ``f*(x) = sum_i a*_i sigma(w*_i . x)``.

    Arguments:
        n, d, k: samples, input dimension, teacher neurons (``directions="orthogonal"`` needs
            ``k <= d``).
        activation: ``"abs"`` or ``"relu"``.
        directions: ``"orthogonal"`` (a random orthonormal set: separation 90 degrees) or
            ``"random"`` (independent uniform unit vectors).
        outer: ``"positive"`` (``a*_i = 1``) or ``"signed"`` (alternating +1, -1).

    Returns:
        A :class:`~gflow.Dataset` (``x ~ N(0, I_d)``) with ``meta["teacher"] = (net, params)``
        (``scaling="standard"``) and ``meta["separation_deg"]``, the smallest angle between
        teacher directions.
    """
    for v, name in ((n, "n"), (d, "d"), (k, "k")):
        check_int(v, name)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r}; valid values are {list(ACTIVATIONS)}.")
    if directions not in ("orthogonal", "random"):
        raise ValueError(f"directions={directions!r}; valid values are ['orthogonal', 'random'].")
    if outer not in ("positive", "signed"):
        raise ValueError(f"outer={outer!r}; valid values are ['positive', 'signed'].")
    if directions == "orthogonal" and k > d:
        raise ValueError(f"directions='orthogonal' needs k <= d, got k={k}, d={d}.")
    kw, kx, kt = jax.random.split(key, 3)
    dt = jnp.result_type(float)
    G = jax.random.normal(kw, (d, k), dt)
    if directions == "orthogonal":
        Ws = jnp.linalg.qr(G)[0].T
    else:
        Ws = (G / jnp.linalg.norm(G, axis=0)).T
    a = jnp.ones((k,), dt) if outer == "positive" else jnp.where(jnp.arange(k) % 2 == 0, 1.0,
                                                                    -1.0).astype(dt)
    tnet = TwoLayer(k, activation, scaling="standard", bias=False)
    tp = TwoLayerParams(W=Ws, b=None, a=a)
    X = jax.random.normal(kx, (n, d), dt)
    Xt = jax.random.normal(kt, (n_test, d), dt) if n_test > 0 else None
    cos = np.clip(np.asarray(Ws @ Ws.T), -1.0, 1.0)
    if activation == "abs":
        cos = np.abs(cos)
    sep = float(np.degrees(np.min(np.arccos(cos[~np.eye(k, dtype=bool)])))) if k > 1 else 180.0
    meta = {"kind": "teacher_gaussian", "teacher": (tnet, tp), "separation_deg": sep}
    return Dataset(X, tnet.apply(tp, X), Xt, None if Xt is None else tnet.apply(tp, Xt), meta)


def local_init(key, net: TwoLayer, teacher_net: TwoLayer, teacher_params: TwoLayerParams, *,
               angle_deg: float = 10.0, weight_noise: float = 0.1) -> TwoLayerParams:
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


def _tree_sq(tree):
    return sum(jnp.sum(x**2) for x in jax.tree.leaves(tree))


def _lojasiewicz_ratio(p, c):
    val, g = c.objective.value_and_grad(p)
    return _tree_sq(g) / val


def _register():
    from . import observe

    observe.register("lojasiewicz_ratio", _lojasiewicz_ratio)


_register()

"""Data: the data protocol :class:`AbstractData`, datasets and their generators.

A :class:`Dataset` holds train/test arrays and metadata; :class:`gflow.population.Population`
is the other kind of data source (a distribution, with the exact population loss).
Generators: :func:`teacher` (a random two-layer teacher), :func:`gaussian_teacher`
(Gaussian inputs, orthogonal teacher: Zhou, Ge, Jin 2021), :func:`margin_data` (a controlled
NTK margin), :func:`sparse_parity` and :func:`groups` (Telgarsky 2023), :func:`sine_data`
(Zhou et al. 2022); :func:`tile_samples` repeats a dataset to a common size. The samplers
the distributions of :mod:`gflow.distributions` share with them (each family's sampling
written once): :func:`parity_points` (:func:`parity_of_signs`), :func:`teacher_points`,
:func:`unit_directions`, :func:`tangent_directions`.

Data generators take a PRNG key first and return a ``Dataset`` (:func:`margin_data`: the
arrays ``(X, y)``) in the default float dtype. Validation (shapes, finite values) happens at
construction, so a bad array raises a ``ValueError`` naming the field instead of producing
NaNs inside a solve.
"""

from __future__ import annotations

import abc
import functools
import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from . import kernels
from ._random import normal, rademacher
from .nets import TwoLayer, TwoLayerParams, check_int
from .objective import AbstractObjective, Objective

__all__ = [
    "AbstractData",
    "Dataset",
    "gaussian_teacher",
    "groups",
    "margin_data",
    "parity_of_signs",
    "parity_points",
    "sine_data",
    "sparse_parity",
    "stack_tiled",
    "tangent_directions",
    "teacher",
    "teacher_points",
    "tile_samples",
    "unit_directions",
]


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _as_float(x, name: str):
    if x is None:
        return None
    try:
        arr = jnp.asarray(x)
    except TypeError as e:
        raise ValueError(f"{name} must be an array of numbers: {e}") from None
    if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)
            or arr.dtype == jnp.bool_):
        raise ValueError(f"{name} must be a real numeric array, got dtype {arr.dtype}.")
    return arr.astype(jnp.result_type(float))


def _check_pair(X, y, nx: str, ny: str, member_axes: int) -> None:
    if X.ndim != 2 + member_axes:
        raise ValueError(f"{nx} must have shape (n, d), got {tuple(X.shape)}.")
    if y.ndim != 1 + member_axes:
        if member_axes:  # an X with extra axes is read as a stack of datasets
            raise ValueError(
                f"{nx} has shape {tuple(X.shape)}, read as a stack of datasets (members, n, d), "
                f"which needs {ny} of shape {tuple(X.shape[:-1])}, got {tuple(y.shape)}; for "
                f"one dataset give {nx} of shape (n, d).")
        raise ValueError(f"{ny} must have shape (n,), got {tuple(y.shape)}.")
    if X.shape[:-1] != y.shape:
        raise ValueError(
            f"{nx} has {X.shape[-2]} samples but {ny} has {y.shape[-1]}: shapes "
            f"{tuple(X.shape)} and {tuple(y.shape)} do not match."
        )
    if X.shape[-2] == 0:
        raise ValueError(f"{nx} has no samples (n=0); a dataset needs n >= 1.")
    if X.shape[-1] == 0:
        raise ValueError(f"{nx} has input dimension d=0; need d >= 1.")
    arrays = [(arr, name) for arr, name in ((X, nx), (y, ny)) if _is_concrete(arr)]
    if arrays:
        finite = _all_finite(*(arr for arr, _ in arrays))
        for (_, name), ok in zip(arrays, finite, strict=True):
            if not bool(ok):
                raise ValueError(f"{name} contains NaN or inf; clean the data before simulating.")


@jax.jit
def _all_finite(*arrays):
    """Whether each array is free of NaN and inf (one compiled program per set of shapes)."""
    return [jnp.all(jnp.isfinite(a)) for a in arrays]


class AbstractData(eqx.Module):
    """The data protocol: what :func:`gflow.simulate` needs of a data source.

    :meth:`objective` turns a net and a loss into the objective the dynamics minimize;
    ``d`` is the input dimension; ``X_test``, ``y_test`` are optional test samples.
    Implemented by :class:`Dataset` (a finite sample) and
    :class:`gflow.population.Population` (a distribution: the exact population loss).
    """

    X_test: eqx.AbstractVar[Float[Array, "n_test d"] | None]
    y_test: eqx.AbstractVar[Float[Array, " n_test"] | None]

    @abc.abstractmethod
    def objective(self, net, loss) -> AbstractObjective:
        """The objective of ``net`` under ``loss`` (a name or a per-sample callable)."""

    @property
    @abc.abstractmethod
    def d(self) -> int:
        """Input dimension."""

    @abc.abstractmethod
    def is_binary(self) -> bool:
        """Whether all targets are in {-1, +1} (classification losses need it)."""

    @property
    def has_test(self) -> bool:
        return self.X_test is not None


class Dataset(AbstractData):
    """A dataset: ``X`` (n, d), ``y`` (n,), optional ``X_test`` (n_test, d), ``y_test``.

    ``y`` is real (regression) or in {-1, +1} (classification). ``meta`` holds
    generator-specific information (e.g. the teacher network and its parameters).
    A stack of datasets for an ensemble has a leading member axis on every array.
    """

    X: Float[Array, "n d"]
    y: Float[Array, " n"]
    X_test: Float[Array, "n_test d"] | None = None
    y_test: Float[Array, " n_test"] | None = None
    meta: dict[str, Any] = eqx.field(default_factory=dict)

    def __init__(self, X, y, X_test=None, y_test=None, meta=None):
        self.X = _as_float(X, "X")
        self.y = _as_float(y, "y")
        self.X_test = _as_float(X_test, "X_test")
        self.y_test = _as_float(y_test, "y_test")
        self.meta = dict(meta or {})

    def __check_init__(self):
        extra = max(self.X.ndim - 2, 0)  # leading member axes for stacked datasets
        _check_pair(self.X, self.y, "X", "y", extra)
        if (self.X_test is None) != (self.y_test is None):
            raise ValueError("give both X_test and y_test, or neither.")
        if self.X_test is not None:
            _check_pair(self.X_test, self.y_test, "X_test", "y_test", extra)
            if self.X_test.shape[-1] != self.X.shape[-1]:
                raise ValueError(
                    f"X_test has d={self.X_test.shape[-1]} but X has d={self.X.shape[-1]}."
                )

    def objective(self, net, loss) -> Objective:
        """The data objective: mean of ``loss(f(x_i), y_i)`` over the training samples."""
        return Objective(net, loss, self.X, self.y)

    @property
    def n(self) -> int:
        return int(self.X.shape[-2])

    @property
    def d(self) -> int:
        return int(self.X.shape[-1])

    def is_binary(self) -> bool:
        """Whether all labels are in {-1, +1} (checked on concrete arrays)."""
        ys = [self.y] + ([self.y_test] if self.y_test is not None else [])
        return all(bool(jnp.all(jnp.abs(v) == 1.0)) for v in ys)


_INPUTS = ("gaussian", "sphere")


def _inputs(key, n: int, d: int, inputs: str):
    x = normal(key, (n, d))
    if inputs == "gaussian":
        return x
    if inputs == "sphere":
        return x / jnp.linalg.norm(x, axis=1, keepdims=True)
    raise ValueError(f"inputs={inputs!r} is unknown; valid values are {list(_INPUTS)}.")


def teacher(
    key, n: int, d: int, teacher_width: int = 4, *, n_test: int | None = None,
    activation: str = "relu", inputs: str = "sphere", labels: str = "regression",
    noise: float = 0.0,
) -> Dataset:
    """Teacher-labelled data: ``y = f*(x)`` for a two-layer teacher with ``k`` neurons.

    Teacher: ``f*(x) = sum_i a*_i sigma(w*_i . x)`` with unit-norm random directions
    ``w*_i`` and signs ``a*_i`` alternating +1, -1, ... (so both signs appear). Inputs
    ``x`` uniform on the unit sphere (``inputs="sphere"``) or ``N(0, I_d)``
    (``"gaussian"``). ``labels="regression"`` gives ``f*(x) + noise * N(0,1)``;
    ``labels="sign"`` gives ``sign(f*(x) - median)`` in {-1, +1} (balanced classes).
    The teacher is returned in ``meta["teacher"]`` as ``(net, params)``.

    All arrays are drawn by one compiled program per set of sizes and options (``noise``
    and the key's value do not recompile).
    """
    for v, name in ((n, "n"), (d, "d"), (teacher_width, "teacher_width")):
        check_int(v, name)
    if labels not in ("regression", "sign"):
        raise ValueError(f"labels={labels!r} is unknown; valid values are ['regression', 'sign'].")
    if inputs not in _INPUTS:
        raise ValueError(f"inputs={inputs!r} is unknown; valid values are {list(_INPUTS)}.")
    n_test = n if n_test is None else n_test
    tnet = TwoLayer(teacher_width, activation, scaling="standard", bias=False)
    # y + 0 * N(0, 1) == y exactly, so a zero noise level draws nothing
    noisy = not (isinstance(noise, int | float) and noise == 0)
    W, a, X, y, Xt, yt = _teacher_arrays(key, jnp.asarray(noise, jnp.result_type(float)),
                                         tnet, n, d, n_test, inputs, labels, noisy)
    tparams = TwoLayerParams(W=W, b=None, a=a)
    meta = {"kind": "teacher", "teacher": (tnet, tparams), "inputs": inputs, "labels": labels}
    return Dataset(X, y, Xt, yt, meta=meta)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6, 7, 8))
def _teacher_arrays(key, noise, tnet: TwoLayer, n: int, d: int, n_test: int, inputs: str,
                    labels: str, noisy: bool):
    """The arrays of :func:`teacher`: ``W (k, d), a (k,), X (n, d), y (n,)`` and the test
    pair (``None`` if ``n_test == 0``)."""
    kw, kx, kt, kn = jax.random.split(key, 4)
    k = tnet.width
    W = normal(kw, (k, d))
    W = W / jnp.linalg.norm(W, axis=1, keepdims=True)
    a = jnp.where(jnp.arange(k) % 2 == 0, 1.0, -1.0).astype(W.dtype)
    tparams = TwoLayerParams(W=W, b=None, a=a)
    X = _inputs(kx, n, d, inputs)
    Xt = _inputs(kt, n_test, d, inputs) if n_test > 0 else None
    f, ft = tnet.apply(tparams, X), (tnet.apply(tparams, Xt) if Xt is not None else None)
    if labels == "regression" and noisy:
        kn1, kn2 = jax.random.split(kn)
        y = f + noise * jax.random.normal(kn1, f.shape, f.dtype)
        yt = None if ft is None else ft + noise * jax.random.normal(kn2, ft.shape, ft.dtype)
    elif labels == "regression":
        y, yt = f, ft
    else:
        thr = jnp.median(f)
        y = jnp.where(f > thr, 1.0, -1.0).astype(f.dtype)
        yt = None if ft is None else jnp.where(ft > thr, 1.0, -1.0).astype(f.dtype)
    return W, a, X, y, Xt, yt


def margin_data(key, n: int, d: int, angle: float) -> tuple[Float[Array, "n d"],
                                                             Float[Array, " n"]]:
    """Unit-norm data whose NTK margin is controlled by ``angle`` (radians).

    ``n/2`` anchors uniform on the sphere ``S^{d-1}``; each anchor ``u`` is paired with the
    point at angle ``angle`` from it in a uniformly random tangent direction; the two members of
    a pair get opposite labels (which one is +1 is random). Since the two feature vectors of a
    pair are close, ``gamma <= |phi(x) - phi(x')| / 2 = sqrt(1 - cos(angle) (1 - angle/pi)) / 2``
    (about ``sqrt(angle / pi) / 2`` for small angles), so ``gamma -> 0`` with ``angle``; the
    exact value is :func:`margin` of the returned data.

    Returns:
        ``(X, y)``: (n, d) unit inputs, (n,) labels in {-1, +1}; pairs are rows ``2i, 2i+1``.
    """
    for v, name in ((n, "n"), (d, "d")):
        check_int(v, name)
    if n % 2 or d < 2:
        raise ValueError(f"margin_data needs an even n and d >= 2, got n={n}, d={d}.")
    if not 0 < angle <= math.pi:
        raise ValueError(f"angle must be in (0, pi], got {angle!r}.")
    ku, kt, ky = jax.random.split(key, 3)
    dt = jnp.result_type(float)
    u = jax.random.normal(ku, (n // 2, d), dt)
    u = u / jnp.linalg.norm(u, axis=1, keepdims=True)
    v = math.cos(angle) * u + math.sin(angle) * tangent_directions(kt, u)
    X = jnp.stack([u, v], axis=1).reshape(n, d)
    s = jax.random.rademacher(ky, (n // 2,), dtype=dt)
    y = jnp.stack([s, -s], axis=1).reshape(n)
    return X, y


def tangent_directions(key, u: Float[Array, "n d"]) -> Float[Array, "n d"]:
    """For each unit row of ``u``, a unit vector uniform on the sphere orthogonal to it (a
    Gaussian draw projected off ``u`` and normalized); shared by :func:`margin_data` and
    :class:`gflow.distributions.Margin`."""
    t = normal(key, u.shape, u.dtype)
    t = t - jnp.sum(t * u, axis=-1, keepdims=True) * u
    return t / jnp.linalg.norm(t, axis=-1, keepdims=True)


def sparse_parity(key, n: int, d: int, *, k: int = 2, n_test: int = 1000) -> Dataset:
    """k-sparse parity (Telgarsky 2023's running example with ``k = 2``): ``x`` uniform on
    ``{-1/sqrt d, +1/sqrt d}^d`` (so ``|x| = 1``), ``y = prod_{i<k} sign(x_i)``.

    Returns:
        A :class:`gflow.Dataset` with ``n`` training and ``n_test`` fresh test samples.
    """
    check_int(n, "n")
    check_int(d, "d", 2)
    check_int(n_test, "n_test")
    check_int(k, "k")
    if k > d:
        raise ValueError(f"k must be <= d={d}, got {k}.")
    k1, k2 = jax.random.split(key)
    X, y = parity_points(k1, n, d, tuple(range(k)))
    Xt, yt = parity_points(k2, n_test, d, tuple(range(k)))
    return Dataset(X, y, Xt, yt, meta={"kind": "sparse_parity", "k": k})


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def parity_points(key, n: int, d: int, coords: tuple[int, ...]):
    """``n`` draws of the sparse parity on the hypercube: ``x`` uniform on
    ``{-1/sqrt d, +1/sqrt d}^d``, ``y = prod_{i in coords} sign(x_i)``; ``(X (n, d), y (n,))``
    (the sampler of :func:`sparse_parity` and :class:`gflow.distributions.SparseParity`)."""
    return parity_of_signs(rademacher(key, (n, d)), coords)


def parity_of_signs(signs, coords: tuple[int, ...]):
    """The hypercube points of the sign patterns ``signs (n, d)`` (entries +-1) and their
    parity labels: ``(signs / sqrt d, prod_{i in coords} signs_i)``."""
    return signs / math.sqrt(signs.shape[-1]), jnp.prod(signs[:, list(coords)], axis=1)


def unit_directions(key, k: int, d: int, *, orthogonal: bool = True):
    """``k`` random unit directions in ``R^d`` as rows ``(k, d)``: an orthonormal set (QR of a
    Gaussian (d, k) matrix; needs ``k <= d``) or independent uniform unit vectors (its
    normalized columns). The teacher directions of :func:`gaussian_teacher`, the centres of
    :func:`groups` and of :class:`gflow.distributions.Clusters`."""
    G = normal(key, (d, k))
    return jnp.linalg.qr(G)[0].T if orthogonal else (G / jnp.linalg.norm(G, axis=0)).T


def teacher_points(key, n: int, teacher_net: TwoLayer, teacher_params: TwoLayerParams):
    """``n`` Gaussian inputs ``x ~ N(0, I_d)`` labelled by the teacher, ``y = f*(x)``:
    ``(X (n, d), y (n,))`` (the sampler of :func:`gaussian_teacher` and
    :class:`gflow.distributions.GaussianTeacher`)."""
    X = normal(key, (n, teacher_params.W.shape[-1]))
    return X, teacher_net.apply(teacher_params, X)


def groups(key, n: int, d: int, k: int, *, radius: float = 0.05, n_test: int = 1000) -> Dataset:
    """Neural-collapse data: ``k`` groups with orthonormal centers ``mu_g`` (needs
    ``k <= d``), one label per group (half +1, half -1, shuffled), and points
    ``x = (mu_g + radius xi)/|mu_g + radius xi|`` with ``xi`` uniform on the unit sphere, the
    group uniform. Distinct groups are at angle ``>= pi/2 - 2 asin(radius)`` apart.

    Returns:
        A :class:`gflow.Dataset`; ``meta`` has ``centers`` (k, d), ``labels`` (k,) and the
        training points' ``group`` (n,).
    """
    check_int(n, "n")
    check_int(d, "d")
    check_int(k, "k", 2)
    check_int(n_test, "n_test")
    if k > d:
        raise ValueError(f"k must be <= d={d} (orthonormal centers), got {k}.")
    if not 0 <= radius < 1:
        raise ValueError(f"radius must be in [0, 1), got {radius!r}.")
    dt = jnp.result_type(float)
    kc, kl, k1, k2 = jax.random.split(key, 4)
    centers = unit_directions(kc, k, d)  # (k, d) orthonormal
    labels = jax.random.permutation(kl, jnp.where(jnp.arange(k) % 2 == 0, 1.0, -1.0).astype(dt))

    def draw(kk, size):
        kg, kx = jax.random.split(kk)
        g = jax.random.randint(kg, (size,), 0, k)
        xi = jax.random.normal(kx, (size, d), dt)
        xi = xi / jnp.linalg.norm(xi, axis=1, keepdims=True)
        X = centers[g] + radius * xi
        return X / jnp.linalg.norm(X, axis=1, keepdims=True), labels[g], g

    X, y, g = draw(k1, n)
    Xt, yt, _ = draw(k2, n_test)
    return Dataset(X, y, Xt, yt, meta={"kind": "groups", "centers": centers, "labels": labels,
                                       "group": g})


def tile_samples(data: Dataset, n: int) -> Dataset:
    """Repeat the training set to ``n`` rows (``n`` a multiple of ``data.n``; test set kept).

    Every sample then appears ``n / data.n`` times, so the mean loss, its gradient and hence
    every full-batch trajectory (GF, GD) are unchanged, while runs with different sample
    sizes share one array shape (one compiled ensemble). Not for SGD (batches differ).
    """
    check_int(n, "n")
    if n % data.n:
        raise ValueError(f"n must be a multiple of data.n={data.n}, got {n}.")
    reps = n // data.n
    return Dataset(jnp.tile(data.X, (reps, 1)), jnp.tile(data.y, reps), data.X_test,
                   data.y_test, meta=data.meta | {"tiled_from": data.n})


def stack_tiled(datas) -> Dataset:
    """Datasets of different sizes as one ensemble dataset: each training set tiled
    (:func:`tile_samples`) to the least common multiple of their sizes, then every array
    stacked on a leading member axis (test sets must share one shape). Full-batch flows of
    the members are those of the untiled datasets."""
    datas = list(datas)
    n = math.lcm(*(dt.n for dt in datas))
    tiled = [tile_samples(dt, n) for dt in datas]
    stack = lambda f: None if getattr(tiled[0], f) is None else jnp.stack(  # noqa: E731
        [getattr(dt, f) for dt in tiled])
    return Dataset(stack("X"), stack("y"), stack("X_test"), stack("y_test"))


def gaussian_teacher(key, n: int, d: int, k: int, *, activation: str = "abs",
                     directions: str = "orthogonal", outer: str = "positive",
                     n_test: int = 0) -> Dataset:
    """Gaussian inputs labelled by a two-layer teacher ``f*(x) = sum_i a*_i sigma(w*_i . x)``.

    Arguments:
        n: samples.
        d: input dimension.
        k: teacher neurons (``directions="orthogonal"`` needs ``k <= d``).
        activation: ``"abs"`` or ``"relu"``.
        directions: ``"orthogonal"`` (a random orthonormal set: separation 90 degrees) or
            ``"random"`` (independent uniform unit vectors).
        outer: ``"positive"`` (``a*_i = 1``) or ``"signed"`` (alternating +1, -1).

    Returns:
        A :class:`Dataset` (``x ~ N(0, I_d)``) with ``meta["teacher"] = (net, params)``
        (``scaling="standard"``) and ``meta["separation_deg"]``, the smallest angle between
        teacher directions.
    """
    for v, name in ((n, "n"), (d, "d"), (k, "k")):
        check_int(v, name)
    if activation not in kernels.ACTIVATIONS:
        raise ValueError(f"activation={activation!r} has no closed-form population loss; valid "
                         f"values are {list(kernels.ACTIVATIONS)}.")
    if directions not in ("orthogonal", "random"):
        raise ValueError(f"directions={directions!r}; valid values are ['orthogonal', 'random'].")
    if outer not in ("positive", "signed"):
        raise ValueError(f"outer={outer!r}; valid values are ['positive', 'signed'].")
    if directions == "orthogonal" and k > d:
        raise ValueError(f"directions='orthogonal' needs k <= d, got k={k}, d={d}.")
    kw, kx, kt = jax.random.split(key, 3)
    dt = jnp.result_type(float)
    Ws = unit_directions(kw, k, d, orthogonal=directions == "orthogonal")
    a = jnp.ones((k,), dt) if outer == "positive" else jnp.where(jnp.arange(k) % 2 == 0, 1.0,
                                                                    -1.0).astype(dt)
    tnet = TwoLayer(k, activation, scaling="standard", bias=False)
    tp = TwoLayerParams(W=Ws, b=None, a=a)
    X, y = teacher_points(kx, n, tnet, tp)
    Xt, yt = teacher_points(kt, n_test, tnet, tp) if n_test > 0 else (None, None)
    ang = np.asarray(kernels.pairwise(kernels.angle, Ws))
    if activation == "abs":  # |w.x| = |-w.x|: directions up to sign
        ang = np.minimum(ang, np.pi - ang)
    sep = float(np.degrees(np.min(ang[~np.eye(k, dtype=bool)]))) if k > 1 else 180.0
    meta = {"kind": "teacher_gaussian", "teacher": (tnet, tp), "separation_deg": sep}
    return Dataset(X, y, Xt, yt, meta)


def sine_data(key, n: int = 80, d: int = 5, *, low: float = -4.0, high: float = 2.0,
              amplitude: float = 3.5, freq: float = 5.0, phase: float = 1.0, n_test: int = 0):
    """The data of Zhou et al. (2022), Fig. 2: ``x ~ U[low, high]^d`` and
    ``y = sum_k amplitude * sin(freq * x_k + phase)`` (no noise). Returns a
    :class:`gflow.Dataset` (test inputs drawn the same way if ``n_test > 0``)."""
    for v, name in ((n, "n"), (d, "d")):
        check_int(v, name)
    if not high > low:
        raise ValueError(f"need high > low, got low={low}, high={high}.")
    kx, kt = jax.random.split(key)
    dt = jnp.result_type(float)

    def draw(k, size):
        X = jax.random.uniform(k, (size, d), dtype=dt, minval=low, maxval=high)
        return X, jnp.sum(amplitude * jnp.sin(freq * X + phase), axis=1)

    X, y = draw(kx, n)
    Xt, yt = draw(kt, n_test) if n_test > 0 else (None, None)
    meta = {"kind": "sine", "low": low, "high": high, "amplitude": amplitude, "freq": freq,
            "phase": phase}
    return Dataset(X, y, Xt, yt, meta=meta)

"""Datasets: a :class:`Dataset` holds train/test arrays and metadata.

Data generators take a PRNG key first and return a ``Dataset`` in the default float
dtype. Validation (shapes, finite values) happens at construction, so a bad array
raises a ``ValueError`` naming the field instead of producing NaNs inside a solve.
"""

from __future__ import annotations

import functools
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .init import _normal as normal
from .nets import TwoLayer, TwoLayerParams, check_int

__all__ = ["Dataset", "teacher"]


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


class Dataset(eqx.Module):
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

    @property
    def n(self) -> int:
        return int(self.X.shape[-2])

    @property
    def d(self) -> int:
        return int(self.X.shape[-1])

    @property
    def has_test(self) -> bool:
        return self.X_test is not None

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

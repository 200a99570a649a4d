"""Data distributions: samplers from a key, exact enumeration where the support is finite, and
the population loss or error where it is known exactly.

A :class:`Distribution` draws ``(X, y)`` of any size from a key (a pure, jittable function of
the key, so a dynamics can draw a fresh batch every step) and builds a :class:`gflow.Dataset`
for :func:`gflow.simulate`. Where the support is finite (:attr:`Distribution.support_size`),
:meth:`Distribution.enumerate` lists it with its probabilities and :meth:`Distribution.expectation`
sums over it exactly in fixed-size chunks (2^20 hypercube points without holding them at once).

- :class:`GaussianTeacher`: ``x ~ N(0, I_d)``, ``y = f*(x) (+ noise)``; population squared loss
  of a two-layer relu/abs student in closed form through :func:`gflow.population.loss`
  (the Gaussian arc-cosine kernel);
- :class:`SparseParity`: ``x`` uniform on ``{-1/sqrt d, +1/sqrt d}^d``, ``y`` the product of
  the signs of ``k`` coordinates (Telgarsky, ICLR 2023: ``k = 2``); enumerable up to
  ``d = 24``, so population loss and error are exact;
- :class:`Margin`: unit-norm ``x`` with ``y w*.x >= margin`` for a unit ``w*``: linearly
  separable with maximal linear margin exactly ``margin``;
- :class:`Clusters`: well-separated groups (neural-collapse style): group centres with one
  label each, points spread around them; ``spread=0`` makes the support the centres, finite.

:meth:`Distribution.heldout` draws a sample disjoint from a given training sample (from the
distribution conditioned on the complement of the training points), so a held-out estimate
never re-uses a trained-on point; :meth:`Distribution.dataset` uses it for the test split.

A distribution is a data source of :func:`gflow.simulate` (``AbstractData``) whose objective is
its exact population loss (:class:`gflow.expected.DistributionObjective`), and the distribution
:class:`gflow.OnlineSGD` draws its batches from. The samplers are those of the generators in
:mod:`gflow.data` (:func:`~gflow.data.parity_points`, :func:`~gflow.data.teacher_points`, ...).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from . import population
from ._random import normal
from .data import (
    AbstractData,
    Dataset,
    gaussian_teacher,
    parity_of_signs,
    parity_points,
    tangent_directions,
    teacher_points,
    unit_directions,
)
from .expected import DistributionObjective
from .losses import get_loss
from .nets import TwoLayer, TwoLayerParams

__all__ = ["Clusters", "Distribution", "GaussianTeacher", "Margin", "SparseParity"]

#: largest support :meth:`Distribution.enumerate` materializes at once
ENUMERATE_LIMIT = 2**22


def _float():
    return jnp.result_type(float)


def _count(v, name: str, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}.")
    return int(v)


class Distribution(AbstractData):
    """A distribution of labelled inputs ``(x, y)``, ``x`` in ``R^d``.

    Subclasses implement :attr:`d` and :meth:`sample` (decorated with ``eqx.filter_jit``, so
    that a draw is one compiled program per size); finite ones also :attr:`support_size` and
    :meth:`support_chunk`; those with a closed form override :meth:`population_loss` and
    :attr:`has_population`.

    A data source for :func:`gflow.simulate` (:class:`gflow.data.AbstractData`) where the
    population loss is exact: the objective is :class:`DistributionObjective`, so GD / GF on
    a distribution are population GD / GF and the ``loss`` observable is the population loss.
    """

    X_test: None = eqx.field(default=None, init=False, static=True)  # no test sample
    y_test: None = eqx.field(default=None, init=False, static=True)

    def is_binary(self) -> bool:
        return self.labels_binary

    @property
    def has_population(self) -> bool:
        """Whether :meth:`population_loss` is exact (finite support or a closed form)."""
        return self.support_size is not None

    def objective(self, net, loss) -> DistributionObjective:
        """The exact population objective ``E[loss(f(x), y)]`` of ``net``."""
        if not self.has_population:
            raise ValueError(
                f"{type(self).__name__} has no exact population loss (its support is not "
                "enumerable and it has no closed form): pass a large sample as data instead, "
                "e.g. gflow.Dataset(*dist.sample(key, 100_000)), or dist.dataset(key, n, "
                "n_test=N) for a test sample disjoint from the training sample.")
        return DistributionObjective(net, loss, self)

    @property
    @abc.abstractmethod
    def d(self) -> int:
        """Input dimension."""

    @abc.abstractmethod
    def sample(self, key, n: int) -> tuple[Float[Array, "n d"], Float[Array, " n"]]:
        """``n`` i.i.d. draws ``(X (n, d), y (n,))``; a pure function of ``key`` (jittable with
        ``n`` static)."""

    @property
    def labels_binary(self) -> bool:
        """Whether ``y`` is in {-1, +1}."""
        return True

    @property
    def support_size(self) -> int | None:
        """Number of support points if finite and enumerable, else None."""
        return None

    def support_chunk(self, start, size: int):
        """Support points ``start .. start + size - 1`` as ``(X (size, d), y (size,), w (size,))``
        with probabilities ``w`` (0 past the end); ``start`` may be traced."""
        raise ValueError(f"{type(self).__name__} has no finite support to enumerate; use "
                         f"sample() or a held-out sample.")

    def enumerate(self):
        """The whole support ``(X (N, d), y (N,), w (N,))``, ``w`` summing to 1."""
        N = self._finite("enumerate")
        if N > ENUMERATE_LIMIT:
            raise ValueError(f"the support has {N} points, more than enumerate() holds "
                             f"({ENUMERATE_LIMIT}); use expectation(), which sums in chunks.")
        return _support(self, N)

    def _finite(self, what: str) -> int:
        N = self.support_size
        if N is None:
            raise ValueError(f"{type(self).__name__}.{what}: no enumerable support (it is "
                             f"infinite, or too large to sum over); estimate with a large "
                             f"held-out sample (heldout()) instead.")
        return N

    def expectation(self, fn: Callable, *, chunk: int = 2**14):
        """Exact ``E[fn(X, y)]`` over a finite support, summed in chunks of ``chunk`` points.

        ``fn(X (c, d), y (c,)) -> (c,)``. Differentiable (through ``jax.lax.map``)."""
        N = self._finite("expectation")
        c = min(_count(chunk, "chunk"), N)
        starts = jnp.arange(-(-N // c)) * c

        def one(start):
            X, y, w = self.support_chunk(start, c)
            return jnp.sum(w * fn(X, y))

        return jnp.sum(jax.lax.map(one, starts))

    def population_loss(self, net, params, loss: str | Callable = "squared"):
        """``E[loss(f(x), y)]`` exactly (by enumeration where the support is finite); ``net``
        is any gflow net (``net.apply(params, X)``)."""
        self._finite("population_loss")
        return _expected_loss(self, net, params, get_loss(loss))

    def population_error(self, net, params):
        """Exact classification error ``P(y f(x) <= 0)`` (a zero output counts as an error)."""
        if not self.labels_binary:
            raise ValueError(f"{type(self).__name__} has real-valued labels; population_error "
                             f"needs labels in {{-1, +1}}.")
        self._finite("population_error")
        return _expected_error(self, net, params)

    def _keys(self, X) -> np.ndarray:
        """One hashable id per row, equal for equal points (rows' bytes at the sample dtype)."""
        X = np.ascontiguousarray(np.asarray(X, dtype=_float()))
        return X.view(np.dtype((np.void, X.dtype.itemsize * X.shape[1]))).ravel()

    def heldout(self, key, n: int, exclude) -> tuple[Array, Array]:
        """``n`` i.i.d. draws from the distribution conditioned on ``x`` not being a row of
        ``exclude (m, d)`` (e.g. the training inputs): disjoint from it by construction.

        Rejection sampling; on a finite support that ``exclude`` may cover for the most part
        (at least half its points, or any support of at most 2^16 points) it enumerates the
        complement and draws from it when the excluded mass exceeds one half."""
        n = _count(n, "n")
        ex = np.asarray(exclude)
        if ex.ndim != 2 or ex.shape[1] != self.d:
            raise ValueError(f"exclude must have shape (m, {self.d}), got {ex.shape}.")
        seen = set(self._keys(ex).tolist())
        N = self.support_size
        if N is not None and N <= ENUMERATE_LIMIT and (N <= 2**16 or len(seen) >= N // 2):
            X, y, w = self.enumerate()
            keep = np.array([k not in seen for k in self._keys(X).tolist()])
            mass = float(np.sum(np.asarray(w)[keep]))
            if mass <= 0:
                raise ValueError("exclude covers the whole support: no held-out point exists.")
            if mass < 0.5:
                p = jnp.asarray(np.where(keep, np.asarray(w), 0.0) / mass, X.dtype)
                return _choose(key, X, y, p, n)
        got_X, got_y, have = [], [], 0
        for i in range(1000):
            X, y = self.sample(jax.random.fold_in(key, i), n)
            fresh = np.array([k not in seen for k in self._keys(X).tolist()])
            got_X.append(np.asarray(X)[fresh])
            got_y.append(np.asarray(y)[fresh])
            have += int(fresh.sum())
            if have >= n:
                return (jnp.asarray(np.concatenate(got_X)[:n]),
                        jnp.asarray(np.concatenate(got_y)[:n]))
        raise ValueError("could not draw a held-out sample: almost every draw is excluded.")

    def dataset(self, key, n: int, *, n_test: int | None = None, disjoint: bool = True
                ) -> Dataset:
        """A :class:`gflow.Dataset` of ``n`` training draws and ``n_test`` (default ``n``) test
        draws, the test points disjoint from the training points if ``disjoint``; the
        distribution is in ``meta["distribution"]``."""
        n = _count(n, "n")
        n_test = n if n_test is None else _count(n_test, "n_test", 0)
        k_train, k_test = jax.random.split(key)
        X, y = self.sample(k_train, n)
        Xt = yt = None
        if n_test > 0:
            Xt, yt = self.heldout(k_test, n_test, X) if disjoint else self.sample(k_test, n_test)
        return Dataset(X, y, Xt, yt, meta={"kind": type(self).__name__, "distribution": self})


@eqx.filter_jit
def _support(dist, N):
    return dist.support_chunk(0, N)


@eqx.filter_jit
def _choose(key, X, y, p, n):
    """``n`` rows of ``(X, y)`` drawn i.i.d. with probabilities ``p``."""
    idx = jax.random.choice(key, X.shape[0], (n,), p=p)
    return X[idx], y[idx]


@eqx.filter_jit
def _expected_loss(dist, net, params, loss):
    return dist.expectation(lambda X, y: loss(net.apply(params, X), y))


@eqx.filter_jit
def _expected_error(dist, net, params):
    return dist.expectation(lambda X, y: (y * net.apply(params, X) <= 0).astype(X.dtype))


# --------------------------------------------------------------------------- Gaussian teacher


class GaussianTeacher(Distribution):
    """``x ~ N(0, I_d)``, ``y = f*(x) + noise * N(0, 1)`` for a two-layer teacher ``f*``.

    The population squared loss of a two-layer relu/abs student without bias is exact:
    :func:`gflow.population.loss` (arc-cosine kernel) plus ``noise^2 / 2``.
    """

    teacher: TwoLayer
    teacher_params: TwoLayerParams
    noise: float = eqx.field(static=True, default=0.0)

    def __check_init__(self):
        if not isinstance(self.teacher, TwoLayer):
            raise ValueError(f"teacher must be a gflow.TwoLayer, got "
                             f"{type(self.teacher).__name__}.")
        if not (isinstance(self.noise, int | float) and self.noise >= 0):
            raise ValueError(f"noise must be a number >= 0, got {self.noise!r}.")

    @classmethod
    def random(cls, key, d: int, k: int, *, activation: str = "relu",
               directions: str = "orthogonal", outer: str = "signed", noise: float = 0.0):
        """The teacher of :func:`gflow.data.gaussian_teacher` for the same key and options
        (``k`` neurons, unit directions, outer weights +-1)."""
        ds = gaussian_teacher(key, 1, d, k, activation=activation, directions=directions,
                              outer=outer)
        return cls(*ds.meta["teacher"], noise=noise)

    @property
    def d(self) -> int:
        return int(self.teacher_params.W.shape[-1])

    @property
    def labels_binary(self) -> bool:
        return False

    @property
    def has_population(self) -> bool:
        return True

    @eqx.filter_jit
    def sample(self, key, n: int):
        kx, kn = jax.random.split(key)
        X, y = teacher_points(kx, n, self.teacher, self.teacher_params)
        if self.noise:
            y = y + self.noise * jax.random.normal(kn, y.shape, y.dtype)
        return X, y

    def population_loss(self, net, params, loss: str | Callable = "squared"):
        if get_loss(loss) is not get_loss("squared"):
            raise ValueError(f"the Gaussian teacher's population loss is known in closed form for "
                             f"loss='squared' only, got {loss!r}.")
        return _teacher_loss(net, params, self.teacher, self.teacher_params) + 0.5 * self.noise**2


_teacher_loss = eqx.filter_jit(population.loss)


# --------------------------------------------------------------------------- hypercube parity


class SparseParity(Distribution):
    """``x`` uniform on ``{-1/sqrt d, +1/sqrt d}^d``, ``y = prod_{i in coords} sign(x_i)``.

    ``coords`` defaults to the first ``k``. Support: all ``2^d`` points, enumerable for
    ``d <= 24``; support point ``i`` has ``sign(x_j) = -1`` where bit ``j`` of ``i`` is set.
    """

    dim: int = eqx.field(static=True)
    coords: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, d: int, k: int = 2, *, coords=None):
        self.dim = _count(d, "d")
        if coords is None:
            k = _count(k, "k")
            if k > self.dim:
                raise ValueError(f"k must be <= d={self.dim}, got {k}.")
            coords = tuple(range(k))
        coords = tuple(int(c) for c in coords)
        if not coords or len(set(coords)) != len(coords) or not all(0 <= c < self.dim
                                                                       for c in coords):
            raise ValueError(f"coords must be distinct indices in [0, {self.dim}), got {coords}.")
        self.coords = coords

    @property
    def d(self) -> int:
        return self.dim

    @property
    def k(self) -> int:
        return len(self.coords)

    def sample(self, key, n: int):
        return parity_points(key, n, self.d, self.coords)

    @property
    def support_size(self) -> int | None:
        return 2**self.d if self.d <= 24 else None

    def support_chunk(self, start, size: int):
        if self.d > 24:
            raise ValueError(f"d={self.d}: the 2^d-point hypercube is enumerated for d <= 24.")
        idx = start + jnp.arange(size, dtype=jnp.int32)
        bits = (idx[:, None] >> jnp.arange(self.d, dtype=jnp.int32)) & 1
        s = (1 - 2 * bits).astype(_float())
        w = jnp.where(idx < 2**self.d, 2.0**-self.d, 0.0).astype(s.dtype)
        return *parity_of_signs(s, self.coords), w

    def _keys(self, X) -> np.ndarray:
        # points differ only in signs: compare sign patterns, independent of dtype and rounding
        bits = np.packbits(np.asarray(X) > 0, axis=1)
        return bits.view(np.dtype((np.void, bits.shape[1]))).ravel()


# --------------------------------------------------------------------------- margin


class Margin(Distribution):
    """Linearly separable unit-norm data with margin ``margin``: ``y`` uniform in {-1, +1},
    ``x = y r w* + sqrt(1 - r^2) u`` with ``r ~ U[margin, 1]`` and ``u`` uniform on the unit
    sphere orthogonal to the unit vector ``w*`` (``direction``, default ``e_1``). Every point
    has ``y w*.x = r >= margin``, and ``w*`` is the maximal-margin linear separator of the
    support, with margin exactly ``margin``. (The NTK margin of the same data is
    another quantity: :mod:`gflow.ntk`.)"""

    margin: float = eqx.field(static=True)
    direction: Float[Array, " d"]

    def __init__(self, d: int, margin: float, *, direction=None):
        d = _count(d, "d", 2)
        if not (isinstance(margin, int | float) and 0 <= margin < 1):
            raise ValueError(f"margin must be a number in [0, 1), got {margin!r}.")
        self.margin = float(margin)
        w = np.eye(d)[0] if direction is None else np.asarray(direction, np.float64)
        if w.shape != (d,) or not np.linalg.norm(w) > 0:
            raise ValueError(f"direction must be a non-zero vector of shape ({d},).")
        self.direction = jnp.asarray(w / np.linalg.norm(w), _float())

    @property
    def d(self) -> int:
        return int(self.direction.shape[0])

    @eqx.filter_jit
    def sample(self, key, n: int):
        ky, kr, ku = jax.random.split(key, 3)
        dt = self.direction.dtype
        y = jax.random.rademacher(ky, (n,), dt)
        r = jax.random.uniform(kr, (n,), dt, minval=self.margin, maxval=1.0)
        u = tangent_directions(ku, jnp.broadcast_to(self.direction, (n, self.d)))
        X = (y * r)[:, None] * self.direction + jnp.sqrt(1.0 - r**2)[:, None] * u
        return X, y


# --------------------------------------------------------------------------- clusters


@eqx.filter_jit
def _centres(key, d: int, groups: int):
    C = unit_directions(key, groups, d, orthogonal=groups <= d)
    return C, jnp.where(jnp.arange(groups) % 2 == 0, 1.0, -1.0).astype(C.dtype)


class Clusters(Distribution):
    """Groups: pick a group ``g`` uniformly, ``x = centres[g] + spread * N(0, I_d / d)``,
    ``y = labels[g]``. With ``spread = 0`` the support is the centres (finite, enumerable)."""

    centres: Float[Array, "g d"]
    labels: Float[Array, " g"]
    spread: float = eqx.field(static=True, default=0.0)

    def __check_init__(self):
        if self.centres.ndim != 2 or self.labels.shape != self.centres.shape[:1]:
            raise ValueError(f"centres must be (g, d) and labels (g,), got {self.centres.shape} "
                             f"and {self.labels.shape}.")
        if not (isinstance(self.spread, int | float) and self.spread >= 0):
            raise ValueError(f"spread must be a number >= 0, got {self.spread!r}.")

    @classmethod
    def random(cls, key, d: int, groups: int, *, spread: float = 0.0):
        """``groups`` centres: a random orthonormal set if ``groups <= d`` (pairwise distance
        sqrt 2), else independent uniform unit vectors; labels alternate +1, -1."""
        d, groups = _count(d, "d"), _count(groups, "groups")
        return cls(*_centres(key, d, groups), spread=spread)

    @property
    def d(self) -> int:
        return int(self.centres.shape[1])

    @property
    def groups(self) -> int:
        return int(self.centres.shape[0])

    @property
    def labels_binary(self) -> bool:
        return bool(jnp.all(jnp.abs(self.labels) == 1))

    @eqx.filter_jit
    def sample(self, key, n: int):
        kg, kx = jax.random.split(key)
        g = jax.random.randint(kg, (n,), 0, self.groups)
        noise = normal(kx, (n, self.d), self.centres.dtype) / math.sqrt(self.d)
        return self.centres[g] + self.spread * noise, self.labels[g]

    @property
    def support_size(self) -> int | None:
        return self.groups if self.spread == 0 else None

    def support_chunk(self, start, size: int):
        if self.spread != 0:
            return super().support_chunk(start, size)
        idx = start + jnp.arange(size)
        ok = idx < self.groups
        i = jnp.where(ok, idx, 0)
        w = jnp.where(ok, 1.0 / self.groups, 0.0).astype(self.centres.dtype)
        return self.centres[i], self.labels[i], w

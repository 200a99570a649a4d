"""Condensation of neurons at small initialization: directions, clusters, initial stage.

Zhou, Zhou, Luo, Zhang, Xu, "Towards Understanding the Condensation of Neural Networks at
Initial Training", NeurIPS 2022 (arXiv 2105.11686). With small initialization the input
weights ``u_j = (w_j, b_j)`` of the hidden neurons condense onto a few isolated
orientations during the initial stage of training; for an activation of multiplicity
``p`` (first non-zero derivative at 0 of order ``p``) at most ``2p`` signed orientations
(``p`` lines) appear.

Everything here works on the *input weights* of a hidden layer: for a
:class:`gflow.TwoLayer` the rows of ``[W | b]`` (bias appended as the last column when
the net has biases), for a :class:`gflow.MLP` the rows of ``[W_l | b_l]`` of each hidden
layer ``l`` (raw parameters; a scalar layer prefactor does not change a direction of
``W_l`` but does change the weight of the bias relative to it, so with ``scaling="ntk"``
deeper layers are measured in parameter space).

Pieces:

- :func:`input_weights`, :func:`cosine_matrix` (the paper's ``D(u, v)``);
- :func:`linkage_clusters` / :func:`orientation_counts` (host-side, scipy): the counting
  rule of the experiments. Over **all** neurons (no norm filter unless asked), average
  linkage (UPGMA, :func:`scipy.cluster.hierarchy.linkage`) of the *signed* directions with
  distance ``1 - D_jk``, cut where the mean cosine between two groups would fall below
  ``cos_threshold`` (0.9). Opposite directions (cosine -1) never merge. A cluster of at
  least 2 neurons is a *condensed orientation*; single neurons are counted separately
  (``singletons``). :func:`sensitivity` repeats the count over thresholds and norm filters.
- :func:`cluster_directions` / :func:`count_orientations`: a jit-able variant (used by
  the ``orientations`` observable inside a solve). (1) Keep the neurons that carry weight:
  ``|u_j| >= norm_frac * max_k |u_k|`` (0.3). (2) Greedy leader clustering of the kept
  signed directions: visit kept neurons by decreasing norm; an unassigned neuron opens a
  new cluster and takes every unassigned kept neuron whose cosine with it is
  ``>= cos_threshold``. Every cluster counts, singletons included.
- :func:`effective_neurons`: a threshold-free count, the order-2 similarity-sensitive
  diversity (Leinster & Cobbold, Ecology 2012) of the neurons weighted by
  ``p_j = |u_j|^2 / sum_k |u_k|^2`` with similarity ``max(D_jk, 0)^2``:
  ``N_eff = 1 / sum_jk p_j p_k max(D_jk, 0)^2``. It is 1 when all weight sits on one
  direction, ``k`` for ``k`` equal-weight clusters on orthogonal or opposite
  directions, and ``m`` for ``m`` equal orthogonal neurons.
- :func:`growth_stage_end`, :func:`loss_stage_end`: the end of the initial stage,
  detected from a saved series rather than set by hand (see their docstrings);
  :func:`growth_stage_ends` for many series at once, :func:`stage_end_counts` the counts
  there for every run of a results dataset, :func:`headline_counts` the counts at every
  save and the save each run is judged at;
- :func:`draw_cosines`: the cosine matrix of one layer's neurons on a matplotlib axis,
  ordered by cluster or, as the authors' notebook does, by the top eigenvector
  (:func:`eigen_order`); :func:`movement`,
  :func:`verdict`: whether the neurons moved off their init and how a count compares
  with ``2p``.
- :func:`first_order_direction`, :func:`alignment`: the p = 1 prediction
  ``+-sum_i e_i (x_i, 1)`` and how well the weight-carrying neurons line up with it
  (the paper's data set: :func:`gflow.data.sine_data`).
- Observables (:data:`OBSERVABLES`, registered in :mod:`gflow.observe` by ``import gflow``):
  ``max_input_norm``,
  ``orientations`` and ``effective_neurons``, each with one entry per hidden layer
  (``dims=("layer",)``); :func:`input_weights_observable` records a layer's ``[W | b]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from . import observe
from .nets import MLP, TwoLayer

__all__ = ["COS_THRESHOLD", "NORM_FRAC", "OBSERVABLES", "alignment", "cluster_directions",
           "cluster_order", "cosine_matrix", "count_orientations", "counts_over_saves",
           "draw_cosines", "effective_neurons", "eigen_order", "first_order_direction",
           "growth_stage_end", "growth_stage_ends", "headline_counts", "input_weights",
           "input_weights_observable", "linkage_clusters", "loss_stage_end", "movement",
           "orientation_counts", "orientations_observable", "sensitivity", "snapshot_indices",
           "stage_end_counts", "verdict"]

#: default: a neuron carries weight if its norm is at least this fraction of the largest
NORM_FRAC = 0.3
#: default: two kept neurons share an orientation if their cosine is at least this
COS_THRESHOLD = 0.9


def input_weights(net, params) -> list[Float[Array, "m k"]]:
    """Input weights ``u_j = (w_j, b_j)`` of every hidden layer, as a list of (m_l, k_l)
    arrays (``k_l`` = fan-in, +1 if the net has biases). One entry for a TwoLayer."""
    if isinstance(net, TwoLayer):
        if params.b is None:
            return [params.W]
        return [jnp.concatenate([params.W, params.b[:, None]], axis=1)]
    if isinstance(net, MLP):
        if params.bs is None:
            return list(params.Ws)
        return [jnp.concatenate([W, b[:, None]], axis=1)
                for W, b in zip(params.Ws, params.bs, strict=True)]
    raise ValueError(f"net must be a gflow.TwoLayer or gflow.MLP, got {type(net).__name__}.")


def _norms(U):
    return jnp.sqrt(jnp.sum(U**2, axis=-1))


@jax.jit
def cosine_matrix(U: Float[Array, "m k"]) -> Float[Array, "m m"]:
    """``D_jk = u_j . u_k / (|u_j| |u_k|)``; rows of norm 0 have similarity 0 with all."""
    U = jnp.asarray(U)
    n = _norms(U)
    safe = jnp.where(n > 0, n, 1.0)
    V = jnp.where((n > 0)[:, None], U / safe[:, None], 0.0)
    return jnp.clip(V @ V.T, -1.0, 1.0)


def _check_params(norm_frac, cos_threshold):
    if isinstance(norm_frac, jax.core.Tracer) or isinstance(cos_threshold, jax.core.Tracer):
        return  # traced values cannot be checked
    if not 0.0 <= float(norm_frac) <= 1.0:
        raise ValueError(f"norm_frac must be in [0, 1], got {norm_frac!r}.")
    if not -1.0 < float(cos_threshold) <= 1.0:
        raise ValueError(f"cos_threshold must be in (-1, 1], got {cos_threshold!r}.")


def cluster_directions(
    U: Float[Array, "m k"], *, norm_frac: float = NORM_FRAC,
    cos_threshold: float = COS_THRESHOLD,
) -> tuple[Int[Array, " m"], Int[Array, ""]]:
    """Cluster the signed directions of the neurons that carry weight.

    Returns ``(labels, count)``: ``labels[j]`` in ``0..count-1`` (clusters numbered by
    decreasing norm of their leader) or ``-1`` for a neuron dropped by the norm filter.
    See the module docstring for the rule. jit-able (``norm_frac``, ``cos_threshold``
    may be traced); ties in norm are visited in index order.
    """
    _check_params(norm_frac, cos_threshold)
    return _cluster(jnp.asarray(U), norm_frac, cos_threshold)


@jax.jit
def _cluster(U, norm_frac, cos_threshold):
    m = U.shape[0]
    n = _norms(U)
    keep = (n > 0) & (n >= norm_frac * jnp.max(n))
    D = cosine_matrix(U)
    order = jnp.argsort(-n, stable=True)

    def body(i, carry):
        labels, k = carry
        j = order[i]
        new = keep[j] & (labels[j] < 0)
        members = keep & (labels < 0) & (D[j] >= cos_threshold)
        labels = jnp.where(new & members, k, labels)
        return labels, k + new.astype(k.dtype)

    labels0 = jnp.full((m,), -1, dtype=jnp.int32)
    return jax.lax.fori_loop(0, m, body, (labels0, jnp.asarray(0, jnp.int32)))


def count_orientations(U: Float[Array, "m k"], *, norm_frac: float = NORM_FRAC,
                       cos_threshold: float = COS_THRESHOLD) -> Int[Array, ""]:
    """Number of condensed orientations (signed directions) among the weight-carrying
    neurons: the cluster count of :func:`cluster_directions`."""
    return cluster_directions(U, norm_frac=norm_frac, cos_threshold=cos_threshold)[1]


def cluster_order(U, *, norm_frac: float = NORM_FRAC,
                  cos_threshold: float = COS_THRESHOLD) -> np.ndarray:
    """A permutation of the neurons for a heatmap: by cluster (dropped neurons last),
    within a cluster by decreasing norm. Host-side (numpy) helper."""
    U = np.asarray(U)
    labels, _ = cluster_directions(U, norm_frac=norm_frac, cos_threshold=cos_threshold)
    labels = np.asarray(labels)
    key_cluster = np.where(labels < 0, np.iinfo(np.int32).max, labels)
    return np.lexsort((-np.linalg.norm(U, axis=1), key_cluster))


# -- host-side counting over all neurons: average linkage (scipy) ---------------------
def _kept(U, norm_frac):
    n = np.linalg.norm(U, axis=1)
    return (n > 0) & (n >= norm_frac * (n.max() if n.size else 0.0))


def linkage_clusters(U: Float[Array, "m k"], *, cos_threshold: float = COS_THRESHOLD,
                     norm_frac: float = 0.0) -> np.ndarray:
    """Average-linkage clusters of the signed directions of the neurons ``U`` (m, k).

    Distance ``1 - D_jk`` (``scipy.spatial.distance.pdist(V, "cosine")`` of the rows),
    average linkage, flat clusters at cophenetic distance ``<= 1 - cos_threshold``
    (``fcluster(criterion="distance")``): two groups merge while the mean cosine over
    their pairs is ``>= cos_threshold``. Neurons of norm 0, and with ``norm_frac > 0``
    those below that fraction of the largest norm, get label ``-1``. Returns labels
    ``0..K-1`` numbered by decreasing size (ties: lowest neuron index first)."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    _check_params(norm_frac, cos_threshold)
    U = np.asarray(U, dtype=float)
    keep = _kept(U, norm_frac)
    labels = np.full(len(U), -1)
    V = U[keep]
    if len(V) == 1:
        labels[keep] = 0
    if len(V) <= 1:
        return labels
    dist = np.clip(pdist(V, "cosine"), 0.0, 2.0)  # rounding can give -1e-16
    raw = fcluster(linkage(dist, method="average"), t=1.0 - cos_threshold,
                   criterion="distance")
    ids, first, size = np.unique(raw, return_index=True, return_counts=True)
    rank = np.empty(len(ids), int)
    rank[np.lexsort((first, -size))] = np.arange(len(ids))
    labels[keep] = rank[np.searchsorted(ids, raw)]
    return labels


def orientation_counts(U: Float[Array, "m k"], *, cos_threshold: float = COS_THRESHOLD,
                       norm_frac: float = 0.0) -> dict:
    """The counts of :func:`linkage_clusters`: ``orientations`` (clusters of >= 2
    neurons: condensed orientations), ``singletons`` (clusters of one neuron), ``sizes``
    (every cluster's size, largest first) and ``dropped`` (label -1)."""
    labels = linkage_clusters(U, cos_threshold=cos_threshold, norm_frac=norm_frac)
    sizes = np.bincount(labels[labels >= 0]) if np.any(labels >= 0) else np.zeros(0, int)
    return {"orientations": int(np.sum(sizes >= 2)), "singletons": int(np.sum(sizes == 1)),
            "sizes": [int(x) for x in sizes], "dropped": int(np.sum(labels < 0))}


def counts_over_saves(U, *, cos_threshold: float = COS_THRESHOLD) -> dict[str, np.ndarray]:
    """:func:`orientation_counts` of every entry of ``U`` (..., m, k): ``orientations``
    and ``singletons`` arrays of shape (...), NaN where ``U`` is not finite (saves after
    a stop)."""
    U = np.asarray(U, float)
    out = {v: np.full(U.shape[:-2], np.nan) for v in ("orientations", "singletons")}
    for idx in np.ndindex(U.shape[:-2]):
        if np.isfinite(U[idx]).all():
            c = orientation_counts(U[idx], cos_threshold=cos_threshold)
            for v in out:
                out[v][idx] = c[v]
    return out


SENSITIVITY_COS = (0.8, 0.9, 0.95)
SENSITIVITY_NORM = (0.0, 0.1, 0.3)


def sensitivity(U: Float[Array, "m k"], *, cos_thresholds=SENSITIVITY_COS,
                norm_fracs=SENSITIVITY_NORM) -> np.ndarray:
    """Condensed orientations (:func:`orientation_counts`) for every pair of thresholds:
    an int array of shape ``(len(cos_thresholds), len(norm_fracs))``."""
    return np.array([[orientation_counts(U, cos_threshold=c, norm_frac=f)["orientations"]
                      for f in norm_fracs] for c in cos_thresholds])


def eigen_order(U: Float[Array, "m k"]) -> np.ndarray:
    """The authors' heatmap order: the neurons sorted by their entry in the eigenvector of
    the largest eigenvalue of the cosine matrix (sign fixed so that its largest-magnitude
    entry is positive; ``numpy.linalg.eigh``)."""
    w, v = np.linalg.eigh(np.asarray(cosine_matrix(jnp.asarray(U)), dtype=float))
    top = v[:, -1] * np.sign(v[np.argmax(np.abs(v[:, -1])), -1])
    return np.argsort(top, kind="stable")


def movement(U0: Float[Array, "m k"], U: Float[Array, "m k"]) -> float:
    """Relative movement ``|U - U0|_F / |U0|_F`` of a layer's input weights."""
    U0 = np.asarray(U0, float)
    return float(np.linalg.norm(np.asarray(U, float) - U0) / np.linalg.norm(U0))


#: below this relative movement the neurons still point where they were initialised
MOVED = 1.0


def verdict(count, p: int | None, moved: float) -> str:
    """``"<= 2p"`` or ``"> 2p"`` for a count of condensed orientations, ``"did not move"``
    if the relative movement is below :data:`MOVED` (the count is then the init's), and
    ``"p undefined"`` for an activation without multiplicity (ReLU)."""
    if not moved >= MOVED:
        return "did not move"
    if p is None:
        return "p undefined"
    return "<= 2p" if count <= 2 * p else "> 2p"


@jax.jit
def effective_neurons(U: Float[Array, "m k"]) -> Float[Array, ""]:
    """Effective number of distinct neurons ``1 / sum_jk p_j p_k max(D_jk, 0)^2`` with
    ``p_j = |u_j|^2 / sum_k |u_k|^2`` (see the module docstring). In ``[1, m]``; NaN if
    every row is 0."""
    U = jnp.asarray(U)
    w = jnp.sum(U**2, axis=-1)
    p = w / jnp.sum(w)
    S = jnp.maximum(cosine_matrix(U), 0.0) ** 2
    return 1.0 / (p @ S @ p)


def first_order_direction(X: Float[Array, "n d"], residual: Float[Array, " n"], *,
                          bias: bool = True) -> Float[Array, " k"]:
    """The direction ``v = sum_i e_i (x_i, 1)`` (``(x_i)`` without bias), normalized.

    For multiplicity 1 and small init, ``du_j/dt ~ a_j sigma'(0) (1/n) sum_i e_i (x_i, 1)``
    with ``e_i = y_i - f(x_i)`` the residual, so the input weights condense on ``+-v``
    (Zhou et al. 2022, the p = 1 case). ``residual`` is ``y - f`` at init.
    """
    X, e = jnp.asarray(X), jnp.asarray(residual)
    if bias:
        X = jnp.concatenate([X, jnp.ones((X.shape[0], 1), X.dtype)], axis=1)
    v = e @ X
    return v / jnp.linalg.norm(v)


def alignment(U: Float[Array, "m k"], v: Float[Array, " k"], *,
              norm_frac: float = NORM_FRAC) -> Float[Array, ""]:
    """Weighted mean ``|cos(u_j, v)|`` over the weight-carrying neurons (norm filter as in
    :func:`cluster_directions`), weights ``|u_j|^2``; 1 when all lie on ``+-v``."""
    _check_params(norm_frac, 0.0)
    U, v = jnp.asarray(U), jnp.asarray(v)
    n = _norms(U)
    keep = (n > 0) & (n >= norm_frac * jnp.max(n))
    c = jnp.abs(U @ v) / (jnp.where(n > 0, n, 1.0) * jnp.linalg.norm(v))
    w = jnp.where(keep, n**2, 0.0)
    return jnp.sum(w * c) / jnp.sum(w)


def _first_index(times, cond) -> tuple[int | None, float]:
    idx = np.flatnonzero(np.asarray(cond))
    if idx.size == 0:
        return None, float("nan")
    return int(idx[0]), float(np.asarray(times)[idx[0]])


def _check_series(times, series, name):
    times, series = np.asarray(times, float), np.asarray(series, float)
    if times.ndim != 1 or series.shape != times.shape or times.size == 0:
        raise ValueError(f"times and {name} must be 1-d arrays of the same length, got "
                         f"shapes {times.shape} and {series.shape}.")
    return times, series


def growth_stage_end(times, max_norm, *, factor: float = 10.0) -> tuple[int | None, float]:
    """End of the initial stage: the first save time at which the largest input-weight
    norm has grown to ``factor`` times its initial value (``max_norm[0]``).

    Under small initialization the weights stay ``O(init)`` for a long time (the
    initial stage, where directions condense) and then grow fast; a growth factor of
    10 means the transverse (not yet aligned) part of a neuron that started at the init
    scale is ~10% of its norm. Returns ``(index, time)``, or ``(None, nan)`` if the
    growth is never reached. NaN entries (saves after an early stop) never match.
    """
    if not factor > 1:
        raise ValueError(f"factor must be > 1, got {factor!r}.")
    times, max_norm = _check_series(times, max_norm, "max_norm")
    return _first_index(times, max_norm >= factor * max_norm[0])


def growth_stage_ends(times, max_norm, *, factor: float = 10.0):
    """:func:`growth_stage_end` of every series ``max_norm[..., :]`` (saves on the last
    axis, those that are NaN -- after an early stop -- left out): ``(index, time)`` arrays
    of the leading shape, ``-1`` and NaN where the growth is never reached."""
    times, max_norm = np.asarray(times, float), np.asarray(max_norm, float)
    idx, end = np.full(max_norm.shape[:-1], -1), np.full(max_norm.shape[:-1], np.nan)
    for i in np.ndindex(idx.shape):
        ok = np.flatnonzero(np.isfinite(max_norm[i]))
        j, end[i] = growth_stage_end(times[ok], max_norm[i][ok], factor=factor)
        idx[i] = -1 if j is None else ok[j]
    return idx, end


def stage_end_counts(ds, *, factor: float = 10.0,
                     variables=("orientations", "effective_neurons")):
    """The end of the initial stage of every run of a results dataset that holds
    ``max_input_norm`` and ``variables`` over ``(..., time, layer)``: an
    ``xarray.Dataset`` over ``(..., layer)`` with ``stage_end_index`` (-1: not reached),
    ``stage_end_time`` (:func:`growth_stage_ends`) and ``<variable>_at_end`` (NaN where
    not reached)."""
    import xarray as xr

    dims = tuple(d for d in ds["max_input_norm"].dims if d != "time")
    idx, end = growth_stage_ends(ds["time"].values, ds["max_input_norm"].transpose(
        *dims, "time").values, factor=factor)
    out = {"stage_end_index": (dims, idx), "stage_end_time": (dims, end)}
    for v in variables:
        at = np.take_along_axis(np.asarray(ds[v].transpose(*dims, "time").values, float),
                                np.maximum(idx, 0)[..., None], axis=-1)[..., 0]
        out[f"{v}_at_end"] = (dims, np.where(idx >= 0, at, np.nan))
    return xr.Dataset(out, coords={d: ds[d] for d in dims if d in ds.coords})


def headline_counts(ds, snapshot_times: dict, *, factor: float = 10.0,
                    cos_threshold: float = COS_THRESHOLD):
    """Add to a results dataset (dims ``dynamics, seed, save``; input weights ``u_l1``, ...
    per layer) the counts over all neurons at every save (``orientations``, ``singletons``:
    :func:`counts_over_saves`), the initial-stage end and the counts there
    (:func:`stage_end_counts`) and ``headline_index`` (dims ``dynamics, seed, layer``): the
    save each run is judged at: the last of ``snapshot_times[dynamics]`` (a run counted at
    fixed times, e.g. Adam's steps), else its initial-stage end, else its last finite save."""
    per_layer = [counts_over_saves(ds[f"u_l{k}"].values, cos_threshold=cos_threshold)
                 for k in range(1, ds.sizes["layer"] + 1)]
    ds = ds.assign({v: (ds["max_input_norm"].dims, np.stack([c[v] for c in per_layer], -1))
                    for v in ("orientations", "singletons")})
    ds = ds.merge(stage_end_counts(ds, factor=factor, variables=(
        "orientations", "singletons", "effective_neurons", "orientations_filtered")))
    head = np.array(ds["stage_end_index"].transpose("dynamics", "seed", "layer").values)
    for i, j, k in np.ndindex(head.shape):
        if (d := ds["dynamics"].values[i]) in snapshot_times:
            head[i, j, k] = snapshot_indices(ds, snapshot_times[d], i, j)[-1]
        elif head[i, j, k] < 0:
            head[i, j, k] = np.flatnonzero(np.isfinite(ds["loss"].values[i, j]))[-1]
    return ds.assign(headline_index=(("dynamics", "seed", "layer"), head))


def snapshot_indices(ds, times, i: int, j: int) -> np.ndarray:
    """Save indices nearest to ``times`` among the finite saves of run ``(dynamics i,
    seed j)`` of a results dataset."""
    t, ok = ds["time"].values, np.flatnonzero(np.isfinite(ds["loss"].values[i, j]))
    return ok[np.argmin(np.abs(t[ok][None, :] - np.asarray(times)[:, None]), axis=1)]


def draw_cosines(ax, U: Float[Array, "m k"], *, order: str = "cluster",
                 norm_frac: float = NORM_FRAC, cos_threshold: float = COS_THRESHOLD,
                 cmap: str = "RdBu_r"):
    """The cosine matrix of the neurons ``U`` on ``ax`` with colours over [-1, 1].
    ``order="eigen"``: the authors' notebook's order (:func:`eigen_order`, all neurons);
    ``"cluster"``: by :func:`cluster_order`, with a black line before the neurons that
    carry little weight (norm below ``norm_frac`` of the largest). Returns the image."""
    if order not in ("eigen", "cluster"):
        raise ValueError(f"order must be 'eigen' or 'cluster', got {order!r}.")
    eigen = order == "eigen"
    idx = eigen_order(U) if eigen else cluster_order(U, norm_frac=norm_frac,
                                                     cos_threshold=cos_threshold)
    im = ax.imshow(np.asarray(cosine_matrix(U))[np.ix_(idx, idx)], vmin=-1, vmax=1,
                   cmap=cmap, origin="lower" if eigen else "upper")
    kept = int(np.sum(_kept(np.asarray(U), norm_frac)))
    if not eigen and kept < len(U):
        for line in (ax.axhline, ax.axvline):
            line(kept - 0.5, color="k", lw=1)
    return im


def loss_stage_end(times, loss, *, drop: float = 0.1) -> tuple[int | None, float]:
    """End of the initial stage: the first save time at which the loss has dropped by
    the fraction ``drop`` of its initial value (``loss <= (1 - drop) * loss[0]``).
    Returns ``(index, time)``, or ``(None, nan)`` if it never does."""
    if not 0 < drop < 1:
        raise ValueError(f"drop must be in (0, 1), got {drop!r}.")
    times, loss = _check_series(times, loss, "loss")
    return _first_index(times, loss <= (1.0 - drop) * loss[0])


# -- observables ----------------------------------------------------------------------
def _per_layer(fn):
    def obs(params, ctx):
        Us = input_weights(ctx.objective.net, params)
        return jnp.stack([jnp.asarray(fn(U), dtype=jnp.result_type(float)) for U in Us])

    return obs


def orientations_observable(norm_frac: float = NORM_FRAC,
                            cos_threshold: float = COS_THRESHOLD):
    """An observable ``fn(params, ctx) -> (L,)``: condensed orientations per hidden layer
    with the given clustering parameters (for ``simulate(observe={name: fn})``)."""
    _check_params(norm_frac, cos_threshold)
    return observe.Observable(
        _per_layer(lambda U: count_orientations(U, norm_frac=norm_frac,
                                                cos_threshold=cos_threshold)),
        dims=("layer",))


def input_weights_observable(layer: int = 1):
    """An observable recording ``[W_l | b_l]`` of hidden layer ``layer`` (1-based), with
    dims ``("neuron_l{layer}", "input_l{layer}")``."""
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 1:
        raise ValueError(f"layer must be an integer >= 1 (1-based hidden layer), got {layer!r}.")

    def fn(params, ctx):
        Us = input_weights(ctx.objective.net, params)
        if layer > len(Us):
            raise ValueError(f"layer={layer} but the net has {len(Us)} hidden layer(s).")
        return Us[layer - 1]

    return observe.Observable(fn, dims=(f"neuron_l{layer}", f"input_l{layer}"))


#: observables of this module, registered in :mod:`gflow.observe` by ``import gflow``
OBSERVABLES = {
    "max_input_norm": observe.Observable(_per_layer(lambda U: jnp.max(_norms(U))),
                                         dims=("layer",)),
    "orientations": orientations_observable(),
    "effective_neurons": observe.Observable(_per_layer(effective_neurons), dims=("layer",)),
}

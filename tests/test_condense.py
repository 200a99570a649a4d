"""gflow.condense: cosine matrix, clustering on synthetic direction sets with known answers,
effective neurons, initial-stage detection on synthetic curves, observables."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gflow
from gflow import condense as C


def _directions(key, centers, per, spread, norms=None):
    """``per`` neurons around each center: center + spread * N(0, I), random norms."""
    centers = np.asarray(centers, float)
    k, dim = centers.shape
    noise = np.asarray(jax.random.normal(key, (k * per, dim)))
    U = np.repeat(centers / np.linalg.norm(centers, axis=1, keepdims=True), per, 0)
    U = U + spread * noise
    U = U / np.linalg.norm(U, axis=1, keepdims=True)
    if norms is None:
        norms = np.linspace(1.0, 0.5, k * per)
    return U * np.asarray(norms)[:, None], np.repeat(np.arange(k), per)


def test_cosine_matrix(dtype):
    U = jnp.array([[1.0, 0.0], [1.0, 1.0], [-2.0, 0.0], [0.0, 0.0]])
    D = np.asarray(C.cosine_matrix(U))
    s = 1 / math.sqrt(2)
    want = [[1, s, -1, 0], [s, 1, -s, 0], [-1, -s, 1, 0], [0, 0, 0, 0]]
    np.testing.assert_allclose(D, want, atol=1e-6)


@pytest.mark.parametrize("k", [2, 6])
def test_clusters_known_directions(k):
    # k orientations: +-e_1, +-e_2, +-e_3 (pairs of opposite signed directions), 8 neurons
    # each, perturbed by 0.03 (cosines to the center > 0.99, between centers <= 0)
    centers = np.concatenate([np.eye(3), -np.eye(3)])[[0, 3, 1, 4, 2, 5][:k]]
    U, truth = _directions(jax.random.key(k), centers, 8, 0.03)
    labels, count = C.cluster_directions(U)
    assert int(count) == k
    labels = np.asarray(labels)
    # the partition equals the truth (up to renaming)
    for c in range(k):
        assert len(set(labels[truth == c])) == 1
    assert len(set(labels)) == k
    # invariant to the order of the neurons
    perm = np.asarray(jax.random.permutation(jax.random.key(0), len(U)))
    assert int(C.count_orientations(U[perm])) == k


def test_small_neurons_dropped_and_threshold():
    U, _ = _directions(jax.random.key(1), [[1.0, 0.0, 0.0]], 10, 0.01)
    # stragglers in other directions with small norm (5% of the largest) are dropped
    small = 0.05 * np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [0.6, 0.8, 0.0]])
    U2 = np.concatenate([U, small])
    labels, count = C.cluster_directions(U2, norm_frac=0.3)
    assert int(count) == 1 and np.all(np.asarray(labels)[-3:] == -1)
    assert int(C.count_orientations(U2, norm_frac=0.0)) == 4
    # two directions at cosine 0.95: one orientation at threshold 0.9, two at 0.99
    th = math.acos(0.95)
    V = np.array([[1.0, 0.0], [math.cos(th), math.sin(th)]])
    assert int(C.count_orientations(V, cos_threshold=0.9)) == 1
    assert int(C.count_orientations(V, cos_threshold=0.99)) == 2
    with pytest.raises(ValueError, match="norm_frac"):
        C.count_orientations(V, norm_frac=1.5)
    with pytest.raises(ValueError, match="cos_threshold"):
        C.count_orientations(V, cos_threshold=-1.0)


def test_clustering_jits_and_cluster_order():
    U, truth = _directions(jax.random.key(2), [[1.0, 1.0], [-1.0, -1.0]], 5, 0.02)
    perm = np.asarray(jax.random.permutation(jax.random.key(3), len(U)))
    U, truth = U[perm], truth[perm]
    count = jax.jit(lambda u: C.count_orientations(u))(jnp.asarray(U))
    assert int(count) == 2
    order = C.cluster_order(U)
    assert sorted(order) == list(range(len(U)))
    t = truth[order]
    assert np.all(t[:5] == t[0]) and np.all(t[5:] == t[5]) and t[0] != t[5]


def test_effective_neurons(dtype):
    e = np.eye(4)
    np.testing.assert_allclose(float(C.effective_neurons(e)), 4.0, rtol=1e-5)
    # two equal-mass opposite clusters: 2; one direction with any norms: 1
    np.testing.assert_allclose(float(C.effective_neurons(np.array([[1.0, 2], [-2, -4]]) / 3)),
                               1 / (0.2**2 + 0.8**2), rtol=1e-5)
    np.testing.assert_allclose(float(C.effective_neurons(np.array([[1.0, 1], [-1, -1]]))), 2.0,
                               rtol=1e-5)
    np.testing.assert_allclose(float(C.effective_neurons(np.array([[1.0, 0], [3, 0]]))), 1.0,
                               rtol=1e-5)
    # scale invariance
    U = np.asarray(jax.random.normal(jax.random.key(0), (20, 3)))
    np.testing.assert_allclose(float(C.effective_neurons(U)), float(C.effective_neurons(7 * U)),
                               rtol=1e-5)
    assert 1.0 <= float(C.effective_neurons(U)) <= 20.0


def test_first_order_direction_and_alignment():
    X = jnp.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    e = jnp.array([1.0, -1.0, 2.0])
    # sum_i e_i (x_i, 1) = (1 + 2, -2 + 2, 1 - 1 + 2) = (3, 0, 2)
    np.testing.assert_allclose(np.asarray(C.first_order_direction(X, e)),
                               np.array([3.0, 0, 2]) / math.sqrt(13), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(C.first_order_direction(X, e, bias=False)),
                               [1.0, 0.0], atol=1e-7)
    v = np.array([3.0, 0, 2]) / math.sqrt(13)
    # neurons on +-v: alignment 1; a small orthogonal neuron is dropped by the norm filter
    U = np.stack([2 * v, -v, 0.1 * np.array([0.0, 1, 0])])
    np.testing.assert_allclose(float(C.alignment(U, v)), 1.0, rtol=1e-6)
    # weights |u|^2: a neuron at 60 degrees with the same norm gives (1 + 0.5) / 2
    w = np.array([math.cos(math.pi / 3), math.sin(math.pi / 3)])
    np.testing.assert_allclose(float(C.alignment(np.stack([[1.0, 0], w]), [1.0, 0])), 0.75,
                               rtol=1e-6)


def test_growth_stage_end_on_exponential_curve():
    # norm(t) = 0.01 exp(2 t) reaches 10x its initial value at t* = ln(10)/2 = 1.1513;
    # the detector returns the first save time at or after t*
    t = np.linspace(0, 3, 301)
    norm = 0.01 * np.exp(2 * t)
    i, te = C.growth_stage_end(t, norm, factor=10.0)
    assert t[i] == te and te >= math.log(10) / 2 > t[i - 1]
    i, te = C.growth_stage_end(t, norm, factor=1e6)
    assert i is None and math.isnan(te)
    with pytest.raises(ValueError, match="factor"):
        C.growth_stage_end(t, norm, factor=1.0)
    with pytest.raises(ValueError, match="same length"):
        C.growth_stage_end(t, norm[:-1])


def test_loss_stage_end_on_plateau_curve():
    # L(t) = 10 / (1 + t^2) has dropped by 10% (L = 9) at t* = 1/3; the detector returns
    # the first save time at or after t*
    t = np.linspace(0, 10, 1001)
    L = 10 / (1 + t**2)
    i, te = C.loss_stage_end(t, L, drop=0.1)
    assert te == t[i] and t[i - 1] < 1 / 3 <= te
    assert C.loss_stage_end(t, np.full_like(t, 3.0))[0] is None
    with pytest.raises(ValueError, match="drop"):
        C.loss_stage_end(t, L, drop=1.0)


def test_input_weights_and_observables_in_a_run():
    X = jnp.linspace(-1, 1, 12)[:, None]
    data = gflow.Dataset(X, jnp.sin(3 * X[:, 0]))
    net = gflow.MLP((6, 4), "tanh", scaling="standard", bias=True)
    p0 = gflow.init.small(jax.random.key(0), net, 1, std=0.1)
    Us = C.input_weights(net, p0)
    assert [u.shape for u in Us] == [(6, 2), (4, 7)]
    # the bias column is a copy of b: exact
    np.testing.assert_array_equal(np.asarray(Us[1][:, -1]), np.asarray(p0.bs[1]))
    tl = gflow.TwoLayer(3, "tanh", bias=False)
    ptl = gflow.init.gaussian(jax.random.key(0), tl, 2)
    assert C.input_weights(tl, ptl)[0] is ptl.W
    with pytest.raises(ValueError, match="TwoLayer or gflow.MLP"):
        C.input_weights("net", ptl)
    obs = {"orientations": "orientations", "effective_neurons": "effective_neurons",
           "max_input_norm": "max_input_norm", "u2": C.input_weights_observable(2)}
    tr = gflow.simulate(net, p0, data, dynamics=gflow.GD(lr=0.1), t1=0.5, save=3, observe=obs)
    assert tr["orientations"].shape == (3, 2) and tr["u2"].shape == (3, 4, 7)
    assert tr.obs_dims["u2"] == ("neuron_l2", "input_l2")
    for k, U in enumerate(C.input_weights(net, p0)):
        assert tr["orientations"][0, k] == int(C.count_orientations(U))
        np.testing.assert_allclose(tr["max_input_norm"][0, k], np.linalg.norm(U, axis=1).max(),
                                   rtol=1e-6)
    with pytest.raises(ValueError, match="layer"):
        C.input_weights_observable(0)


def test_growth_stage_ends_match_the_single_series_and_skip_nan():
    # every series of a batch gives what growth_stage_end gives it alone; saves after an
    # early stop (NaN) are left out; never reaching the growth gives (-1, NaN)
    t = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    mn = np.array([[1.0, 2.0, 11.0, 20.0, 30.0],     # grows 10x at save 2
                   [1.0, np.nan, 5.0, 12.0, np.nan],  # at save 3, NaN saves skipped
                   [1.0, 2.0, 3.0, np.nan, np.nan]])  # never
    idx, end = C.growth_stage_ends(t, mn[None], factor=10.0)
    np.testing.assert_array_equal(idx, [[2, 3, -1]])
    np.testing.assert_array_equal(end, [[2.0, 3.0, np.nan]])
    assert C.growth_stage_end(t, mn[0], factor=10.0) == (2, 2.0)


def test_stage_end_counts_reads_the_counts_at_the_stage_end():
    import xarray as xr

    t = np.array([0.0, 1.0, 2.0])
    mn = np.array([[[1.0], [20.0], [30.0]], [[1.0], [2.0], [3.0]]])  # (run, time, layer)
    orient = np.array([[[9.0], [2.0], [2.0]], [[9.0], [8.0], [7.0]]])
    ds = xr.Dataset({"max_input_norm": (("run", "time", "layer"), mn),
                     "orientations": (("run", "time", "layer"), orient),
                     "effective_neurons": (("run", "time", "layer"), orient + 0.5)},
                    coords={"run": ["a", "b"], "time": t})
    out = C.stage_end_counts(ds, factor=10.0)
    np.testing.assert_array_equal(out["stage_end_index"].values, [[1], [-1]])
    np.testing.assert_array_equal(out["orientations_at_end"].values, [[2.0], [np.nan]])
    np.testing.assert_array_equal(out["effective_neurons_at_end"].values, [[2.5], [np.nan]])
    assert list(out["run"].values) == ["a", "b"]


# -- average linkage over all neurons ---------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 4, 6])
def test_linkage_counts_constructed_clusters(k):
    # k signed orientations, antipodal pairs +-e_1, +-e_2, +-e_3 among them, 7 neurons each
    # perturbed by 0.03 (within-cluster cosines > 0.99; between: 0 or -1), random norms
    # over two decades: every neuron is counted (no norm filter), opposite directions
    # never merge, and the partition is the truth.
    centers = np.concatenate([np.eye(3), -np.eye(3)])[[0, 3, 1, 4, 2, 5][:k]]
    U, truth = _directions(jax.random.key(k), centers, 7, 0.03,
                           norms=np.geomspace(1.0, 0.01, 7 * k))
    c = C.orientation_counts(U)
    assert (c["orientations"], c["singletons"], c["sizes"], c["dropped"]) == (k, 0, [7] * k, 0)
    labels = C.linkage_clusters(U)
    assert all(len(set(labels[truth == i])) == 1 for i in range(k)) and len(set(labels)) == k
    # invariant to the order and to the (positive) norms of the neurons
    perm = np.asarray(jax.random.permutation(jax.random.key(1), len(U)))
    assert C.orientation_counts(U[perm] * 3.0)["sizes"] == [7] * k


def test_linkage_singletons_threshold_and_norm_filter():
    # one tight cluster of 10, plus three lone neurons on orthogonal / opposite axes
    U, _ = _directions(jax.random.key(2), [[1.0, 0.0, 0.0, 0.0]], 10, 0.01)
    lone = np.array([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [-1.0, 0.0, 0.0, 0.0]])
    U2 = np.concatenate([U, 0.05 * lone])
    c = C.orientation_counts(U2)
    assert (c["orientations"], c["singletons"], c["sizes"]) == (1, 3, [10, 1, 1, 1])
    # a norm filter (5% < 0.1 of the largest) drops the lone neurons instead
    c = C.orientation_counts(U2, norm_frac=0.1)
    assert (c["orientations"], c["singletons"], c["dropped"]) == (1, 0, 3)
    assert np.all(C.linkage_clusters(U2, norm_frac=0.1)[-3:] == -1)
    # two groups of 5 exactly 0.92 apart in cosine: one orientation at 0.9, two at 0.95
    th = np.arccos(0.92)
    U3 = np.repeat([[1.0, 0.0], [np.cos(th), np.sin(th)]], 5, axis=0)
    assert C.orientation_counts(U3, cos_threshold=0.9)["sizes"] == [10]
    assert C.orientation_counts(U3, cos_threshold=0.95)["sizes"] == [5, 5]
    table = C.sensitivity(U3, cos_thresholds=(0.9, 0.95), norm_fracs=(0.0,))
    np.testing.assert_array_equal(table, [[1], [2]])


def test_linkage_is_average_not_single():
    # a chain at 0, 20 and 40 degrees: neighbours have cosine cos 20 = 0.940 >= 0.9, the
    # ends cos 40 = 0.766. Single linkage would chain all three; average linkage merges
    # one neighbour pair (mean distance 0.060), and the third point's mean cosine to that
    # pair, (0.940 + 0.766) / 2 = 0.853 < 0.9, keeps it apart.
    a = np.deg2rad([0.0, 20.0, 40.0])
    U = np.stack([np.cos(a), np.sin(a)], axis=1)
    c = C.orientation_counts(U)
    assert (c["orientations"], c["singletons"], c["sizes"]) == (1, 1, [2, 1])
    assert C.orientation_counts(U, cos_threshold=0.85)["sizes"] == [3]
    # edge cases: one neuron is a singleton, zero rows are dropped
    assert C.orientation_counts(U[:1])["sizes"] == [1]
    assert C.orientation_counts(np.zeros((3, 2)))["dropped"] == 3
    with pytest.raises(ValueError, match="cos_threshold"):
        C.orientation_counts(U, cos_threshold=1.5)


def test_counts_over_saves_skip_nan():
    # saves (2,) x neurons: a save with +-e_1 (4 each), and a NaN save (after a stop)
    U, _ = _directions(jax.random.key(3), [[1.0, 0.0], [-1.0, 0.0]], 4, 0.02)
    out = C.counts_over_saves(np.stack([U, np.full_like(U, np.nan)]))
    np.testing.assert_array_equal(out["orientations"], [2, np.nan])
    np.testing.assert_array_equal(out["singletons"], [0, np.nan])


def test_eigen_order_groups_antipodal_blocks():
    # the authors' heatmap order: two opposite clusters come out as two contiguous blocks
    U, truth = _directions(jax.random.key(4), [[1.0, 1.0, 0.0], [-1.0, -1.0, 0.0]], 6, 0.05)
    perm = np.asarray(jax.random.permutation(jax.random.key(5), len(U)))
    order = C.eigen_order(U[perm])
    t = truth[perm][order]
    assert np.count_nonzero(np.diff(t)) == 1
    assert sorted(order.tolist()) == list(range(len(U)))


def test_movement_and_verdict():
    U0 = np.ones((4, 3))
    assert C.movement(U0, U0) == 0.0
    assert C.movement(U0, 3 * U0) == pytest.approx(2.0)
    assert C.verdict(2, 1, 5.0) == "<= 2p" and C.verdict(3, 1, 5.0) == "> 2p"
    assert C.verdict(6, 3, 5.0) == "<= 2p"
    # below one init size of movement the directions are the init's: not a count
    assert C.verdict(2, 1, 0.5) == "did not move" and C.verdict(9, None, 2.0) == "p undefined"

"""The condensation experiment end to end, at a small size (Zhou et al., NeurIPS 2022)."""

import matplotlib
import numpy as np
import pytest

from gflow.experiments import condensation as E

matplotlib.use("Agg")

KEYS = ("activation", "multiplicity", "orientations", "orientations_by_seed",
        "initial_stage_end_time")


def test_multiplicity_is_computed_not_typed():
    # from derivatives at 0 (jax); ReLU has none
    assert [E.multiplicity(a) for a in ("tanh", "sigmoid", "softplus", "xtanh", "x2tanh")] \
        == [1, 1, 1, 2, 3]
    assert E.multiplicity("relu") is None
    assert E.adam_lr(E.Config(activation="relu")) == 2.5e-4
    assert E.adam_lr(E.Config(activation="relu", adam_lr=0.01)) == 0.01


def test_init_options():
    # default: every parameter std 0.005 (the paper's var 0.005^2); gamma: var m_l^-gamma;
    # outer_scale multiplies the std of a. Sample std of the m*(d+1) input-weight entries
    # within 5 relative standard errors (1/sqrt(2N)).
    for cfg, want, want_a in ((E.Config(seeds=2), 0.005, 0.005),
                              (E.Config(seeds=2, gamma=3.0, outer_scale=4.0), 50**-1.5,
                               4 * 50**-1.5)):
        net, data, inits = E.build(cfg)
        assert net.scaling == "standard" and net.bias and data.X.shape == (80, 5)
        U = np.concatenate([np.asarray(p.Ws[0]).ravel() for p in inits]
                           + [np.asarray(p.bs[0]) for p in inits])
        a = np.concatenate([np.asarray(p.a) for p in inits])
        assert abs(U.std() / want - 1) < 5 / np.sqrt(2 * U.size)
        assert abs(a.std() / want_a - 1) < 5 / np.sqrt(2 * a.size)


def test_tanh_condenses_onto_two_orientations():
    # 1-d input with bias: u_j = (w_j, b_j) in R^2. Small init (std 0.005), gradient flow:
    # at the detected end of the initial stage the weight-carrying neurons sit on exactly
    # 2 = 2p opposite orientations for tanh (p = 1), for every seed. A run without
    # condensation (e.g. a large init) has many more: the count is not forced.
    cfg = E.Config(activation="tanh", seeds=2, hidden=(20,), n=30, d=1, dynamics=("gf", "gd"),
                   n_save=30)
    res = E.run(cfg)
    s = res.summary
    for k in KEYS:
        assert k in s
    assert s["multiplicity"] == 1 and s["predicted_max_orientations"] == 2
    assert s["orientations_by_seed"] == {0: 2, 1: 2}
    assert s["within_2p_gf"] is True
    # GD with a small step (lr 0.01) follows the flow: same counts
    assert s["orientations_gd_by_seed"] == {0: 2, 1: 2}
    assert s["initial_stage_end_time"] > 0
    # p = 1 theory: the orientations are +-sum_i e_i (x_i, 1) (residual e at init)
    assert min(s["alignment_first_order_gf_by_seed"].values()) > 0.97
    ds = res.dataset
    # the two orientations are opposite: the largest neurons of the two clusters have
    # cosine close to -1
    i = int(ds["stage_end_index"].sel(dynamics="gf", seed=0).values[0])
    U = ds["u_l1"].sel(dynamics="gf", seed=0).values[i]
    n = np.linalg.norm(U, axis=1)
    top = U[n >= 0.3 * n.max()]
    cos = top @ top.T / np.outer(np.linalg.norm(top, axis=1), np.linalg.norm(top, axis=1))
    assert cos.min() < -0.95
    # at init (same neurons, same filter) the directions are spread out
    assert ds["orientations"].sel(dynamics="gf", seed=0).values[0, 0] > 4
    figs = E.figures(ds, cfg)
    assert {"cosine_heatmap", "orientations", "polar", "loss"} <= set(figs)


def test_bad_settings():
    with pytest.raises(ValueError, match="activation"):
        E.run(E.Config(activation="nope"))
    with pytest.raises(ValueError, match="dynamics"):
        E.run(E.Config(dynamics=("sgd",)))

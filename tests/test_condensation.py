"""The condensation experiment end to end, at a small size (Zhou et al., NeurIPS 2022), and
its ``authors`` preset against the authors' notebook (dlphenomena/condensation,
``initial_condense.ipynb``)."""

import dataclasses

import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
import pytest
from helpers import assert_results_layout

import gflow
from gflow import condense, experiments
from gflow.experiments import condensation as E

matplotlib.use("Agg")

KEYS = ("activation", "multiplicity", "preset", "orientations_gf_by_seed",
        "orientations_adam_by_seed", "verdict_gf_by_seed", "verdict_adam_by_seed",
        "singletons_adam_by_seed", "cluster_sizes_adam_by_seed", "sensitivity_adam",
        "orientations_adam_at_snapshots_by_seed", "orientations_filtered_gf_by_seed")


def test_multiplicity_is_computed_not_typed():
    # from derivatives at 0 (jax); ReLU has none
    names = ("tanh", "sigmoid", "softplus", "xtanh", "x2tanh")
    assert [gflow.nets.get_activation(a).multiplicity for a in names] == [1, 1, 1, 2, 3]
    assert gflow.nets.get_activation("relu").multiplicity is None
    assert E.adam_lr(E.Config(activation="relu")) == 2.5e-4
    assert E.adam_lr(E.Config(activation="relu", adam_lr=0.01)) == 0.01


def test_authors_preset_is_the_notebook():
    # The notebook: nn.init.normal_(w, 0, 1 / 50**gamma) with gamma = 4 for every weight
    # and hidden bias (a standard deviation), torch.optim.Adam(lr=1e-3) for every
    # activation, `for epoch in range(101)` (101 steps), heatmaps when (epoch + 1) % 10 == 0
    # (after steps 10, ..., 100), nn.MSELoss() (mean of (f - y)^2), no output bias,
    # 80 points x = torch.rand * 6 - 4 in 5-d, y = 3.5 sum sin(5 x + 1).
    cfg = E.Config(preset="authors", activation="relu", seeds=2)
    assert E.init_std(cfg) == 50.0**-4 == pytest.approx(1.6e-7, rel=1e-12)
    assert (E.adam_lr(cfg), E.adam_steps(cfg)) == (1e-3, 101)
    assert cfg.snapshots == tuple(range(10, 101, 10)) and cfg.hidden == (50,)
    net, data, loss, inits = E.build(cfg)
    assert net.scaling == "standard" and net.bias and isinstance(inits[0], gflow.nets.MLPParams)
    # f = sum_j a_j sigma(w_j.x + b_j): the parameters are W, b, a -- no output bias
    assert [f.name for f in dataclasses.fields(inits[0])] == ["Ws", "bs", "a"]
    X, y = np.asarray(data.X), np.asarray(data.y)
    assert X.shape == (80, 5) and X.min() >= -4 and X.max() <= 2
    np.testing.assert_allclose(y, 3.5 * np.sin(5 * X + 1).sum(1), rtol=1e-5, atol=1e-5)
    f = np.asarray(net.apply(inits[0], data.X))
    obj = gflow.Objective(net, loss, data.X, data.y)
    np.testing.assert_allclose(float(obj.loss(inits[0])), np.mean((f - y) ** 2), rtol=1e-6)
    # every entry (W, b, a) has std 50^-4: sample std within 5 relative standard errors
    # (1/sqrt(2N)) of it
    w = np.concatenate([np.concatenate([np.ravel(p.Ws[0]), p.bs[0], p.a]) for p in inits])
    assert abs(w.std() / 50.0**-4 - 1) < 5 / np.sqrt(2 * w.size)
    # the gflow preset: std 0.005, 1/2 MSE, 500 steps; an explicit init_std wins
    g = E.Config()
    assert (E.init_std(g), E.adam_steps(g), E.build(g)[2]) == (0.005, 500, "squared")
    assert E.init_std(E.Config(preset="authors", init_std=1e-3)) == 1e-3


def test_init_options():
    # gamma: variance m_l^-gamma (the paper's convention); outer_scale multiplies the std
    # of a. Sample std of the m*(d+1) input-weight entries within 5 relative standard
    # errors (1/sqrt(2N)).
    for cfg, want, want_a in ((E.Config(seeds=2), 0.005, 0.005),
                              (E.Config(seeds=2, gamma=3.0, outer_scale=4.0), 50**-1.5,
                               4 * 50**-1.5)):
        net, data, _, inits = E.build(cfg)
        U = np.concatenate([np.asarray(p.Ws[0]).ravel() for p in inits]
                           + [np.asarray(p.bs[0]) for p in inits])
        a = np.concatenate([np.asarray(p.a) for p in inits])
        assert abs(U.std() / want - 1) < 5 / np.sqrt(2 * U.size)
        assert abs(a.std() / want_a - 1) < 5 / np.sqrt(2 * a.size)


@pytest.mark.slow
def test_adam_matches_torch_step_for_step(x64):
    # The authors' training loop in torch (float64), from the same data and init as gflow's
    # Optax(adam): the input weights after steps 10..100 agree to 1e-9 of their size (the
    # two sum in different orders; float64 rounding, amplified by Adam's normalisation of
    # gradients ~1e-7, stays far below that).
    torch = pytest.importorskip("torch")
    cfg = E.Config(preset="authors", seeds=1)
    net, data, loss, (p0,) = E.build(cfg)
    model = torch.nn.Sequential(torch.nn.Linear(5, 50), torch.nn.Tanh(),
                                torch.nn.Linear(50, 1, bias=False)).double()
    with torch.no_grad():
        for t, v in ((model[0].weight, p0.Ws[0]), (model[0].bias, p0.bs[0]),
                     (model[2].weight, p0.a[None])):
            t.copy_(torch.from_numpy(np.array(v, np.float64)))
    X, y = (torch.from_numpy(np.array(v, np.float64)) for v in (data.X, data.y[:, None]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    want = []
    for step in range(1, 101):
        opt.zero_grad()
        torch.nn.MSELoss()(model(X), y).backward()
        opt.step()
        if step % 10 == 0:
            want.append(torch.cat([model[0].weight, model[0].bias[:, None]], 1).detach().numpy())
    tr = gflow.simulate(net, p0, data, loss=loss, dynamics=gflow.Optax(optax.adam(1e-3), lr=1e-3),
                        t1=0.1, save=np.arange(10, 101, 10) * 1e-3,
                        observe={"u": condense.input_weights_observable(1)})
    got = np.asarray(tr["u"])
    np.testing.assert_allclose(got, np.stack(want), rtol=0, atol=1e-9 * np.abs(got).max())


AUTHORS_1D = dict(preset="authors", seeds=2, hidden=(20,), n=30, d=1, n_save=30)


def test_authors_scale_tanh_condenses(tmp_path):
    # 1-d input, 20 neurons, the notebook's scale and Adam. tanh (p = 1): all 20 neurons
    # on 2 opposite orientations at every snapshot from step 20 on (gradient flow from the
    # same init: the slow test below).
    cfg = E.Config(activation="tanh", dynamics=("adam",), **AUTHORS_1D)
    res = E.run(cfg)
    s = res.summary
    assert {k for k in KEYS if "gf" not in k} <= set(s)
    assert s["verdict_adam_by_seed"] == {0: "<= 2p", 1: "<= 2p"}
    assert not experiments.check_claims(E, s)
    assert s["claims"]["at_most_2p_adam"]["verdict"] == "holds"
    assert s["claims"]["at_most_2p_gf"] == experiments.claim("inconclusive", "no gf seeds")
    assert all(c[1:] == [2] * 9 for c in s["orientations_adam_at_snapshots_by_seed"].values())
    assert s["singletons_adam_by_seed"] == {0: 0, 1: 0}
    assert all(sum(z) == 20 and len(z) == 2 for z in s["cluster_sizes_adam_by_seed"].values())
    # the two orientations are opposite: min cosine -1 (to rounding) at step 100
    ds = res.dataset
    assert list(ds.children) == ["adam"]  # one group per dynamics run, its own save times
    adam = ds["adam"]
    U = adam["u_l1"].sel(seed=0).values[int(adam["headline_index"].sel(seed=0).values[0])]
    assert float(np.min(condense.cosine_matrix(jnp.asarray(U)))) < -0.99
    # at init the 20 directions are spread over many clusters: the count is not forced
    assert len(condense.orientation_counts(U0 := adam["u_l1"].values[0, 0])["sizes"]) > 4
    assert U0.shape == (20, 2)
    assert_results_layout(res, tmp_path)
    figs = E.figures(ds, cfg)
    assert {"cosine_heatmap", "cosine_heatmap_snapshots", "orientations", "loss"} <= set(figs)


@pytest.mark.slow
def test_x2tanh_does_not_move_at_the_authors_scale():
    # x^2 tanh (p = 3): its gradients at std 1.6e-7 are ~ std^3 (~1e-20) << Adam's eps
    # 1e-8, so the weights do not move (relative movement ~1e-4) and the verdict says so;
    # at std 0.01 they move.
    base = dict(AUTHORS_1D, dynamics=("adam",))
    s3 = E.run(E.Config(activation="x2tanh", **base)).summary
    assert s3["verdict_adam_by_seed"] == {0: "did not move", 1: "did not move"}
    assert max(s3["movement_adam_by_seed"].values()) < 1e-2 and s3["within_2p_adam"] is False
    s3b = E.run(E.Config(activation="x2tanh", init_std=0.01, **base)).summary
    assert min(s3b["movement_adam_by_seed"].values()) > 1


@pytest.mark.slow
def test_gf_counts_at_the_stage_end():
    # 1-d input with bias, gflow preset (std 0.005), gradient flow and GD (lr 0.01): at the
    # detected end of the initial stage tanh's neurons are on 2 = 2p opposite orientations
    # (with a few stragglers that have hardly grown as singletons); GD with a small step
    # follows the flow. At the authors' scale (std 1.6e-7, mean MSE) the same.
    cfg = E.Config(activation="tanh", seeds=2, hidden=(20,), n=30, d=1, dynamics=("gf", "gd"),
                   n_save=30)
    res = E.run(cfg)
    s = res.summary
    assert s["orientations_gf_by_seed"] == {0: 2, 1: 2} == s["orientations_gd_by_seed"]
    assert s["verdict_gf_by_seed"] == {0: "<= 2p", 1: "<= 2p"} and s["within_2p_gf"] is True
    assert min(s["counted_at_time_gf_by_seed"].values()) > 0
    assert set(KEYS) - {k for k in KEYS if "adam" in k} <= set(s)
    s = E.run(E.Config(activation="tanh", dynamics=("gf",), **AUTHORS_1D)).summary
    assert s["verdict_gf_by_seed"] == {0: "<= 2p", 1: "<= 2p"}


def test_bad_settings():
    with pytest.raises(ValueError, match="activation"):
        E.run(E.Config(activation="nope"))
    with pytest.raises(ValueError, match="dynamics"):
        E.run(E.Config(dynamics=("sgd",)))
    with pytest.raises(ValueError, match="preset"):
        E.Config(preset="paper2")
    with pytest.raises(ValueError, match=r"snapshots=.*<= adam_steps \(101 with preset"):
        E.Config(preset="authors", snapshots=(10, 200))

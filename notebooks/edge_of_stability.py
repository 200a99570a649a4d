# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Gradient descent at the edge of stability, and the central flow
#
# GD with step $\eta$ on a quadratic is stable only while the sharpness $S$ (the top Hessian
# eigenvalue) is below $2/\eta$. Cohen, Kaur, Li, Kolter & Talwalkar (ICLR 2021) found that
# on neural nets
#
# * **progressive sharpening**: $S$ rises over training (under gradient flow, and under GD
#   while $S < 2/\eta$);
# * **edge of stability**: under GD, $S$ rises to $2/\eta$ and then "hovers right at, or just
#   above" it, while the training loss falls over long windows but not monotonically.
#
# Cohen, Damian, Talwalkar, Kolter & Lee (ICLR 2025) model GD there by the **central flow**
# (`gflow.CentralFlow`): gradient flow while $S < 2/\eta$, then the flow that holds $S$ at
# $2/\eta$; GD's loss averaged over its oscillations is predicted as $L + \mathrm{tr}(X)/\eta$.
# **Claim:** the central flow tracks GD's time-averaged trajectory, where gradient flow does
# not.
#
# Here: a tanh net with two hidden layers of 32 (NTK scaling) on 128 teacher points in
# $d = 8$ with label noise 1 (squared loss), 3 seeds of data and init, GD at two step sizes
# for 200 steps with the sharpness (Lanczos, 16 HVPs) at every step, gradient flow and the
# central flow (Euler at a quarter step, as the authors integrate it) from the same inits on
# the time axis $t = \text{step}\cdot\eta$. The experiment's defaults (`gflow run
# edge_of_stability`) use three step sizes and 300 steps.

# %%
import numpy as np

from gflow import edge, stats
from gflow.experiments import edge_of_stability as E

cfg = E.Config(lrs=(4.0, 5.0), steps=200)
res = E.run(cfg)
s, tree = res.summary, res.dataset  # groups: "runs" (GD, GF, central flow), "density"
ds = tree["runs"]
print(f"GF sharpness, end over start: {s['gf_sharpness_ratio']} (median [95 % interval])")
for lr in cfg.lrs:
    t = f"lr{lr:g}"
    print(f"lr = {lr:g} (edge 2/lr = {2 / lr:.3g}): crossed on {s[f'gd_crossed_seeds_{t}']} of "
          f"{cfg.seeds} seeds at t = {s[f'gd_cross_time_{t}']}")
    for k in ("ratio_median", "in_band", "loss_rises", "loss_ratio"):
        print(f"    GD {k}: {np.round(s[f'gd_{k}_{t}'], 3)}")
    held = np.round(s[f"cf_sharpness_above_edge_{t}"], 5)
    print(f"    central flow: sharpness above the edge by {held}; predicted-loss error "
          f"{np.round(s[f'cf_loss_rel_error_{t}'], 2)} vs GF's "
          f"{np.round(s[f'gf_loss_rel_error_{t}'], 2)}; distance to GD over GF's "
          f"{np.round(s[f'dist_ratio_cf_over_gf_{t}'], 2)}")

# %%
figs = E.figures(tree, cfg)
figs["sharpness_and_loss"]

# %%
figs["hessian_density"]

# %% [markdown]
# **How much the averaging window matters.** The central flow predicts GD's loss averaged
# over its oscillations. At these step sizes GD's oscillations are not only the period-2 flip
# along the top eigenvector: the sharpness overshoots $2/\eta$ after the first crossing and
# comes back in slow cycles of sharpening and catapult, tens of steps long (the figure). The
# predicted loss's median relative error from GD's crossing on, against windows of 1 (no
# averaging) to 100 steps:

# %%
for i, lr in enumerate(cfg.lrs):
    gd = ds["gd_loss"].values[i]
    cross = edge.first_crossing(ds["gd_sharpness"].values[i], 2 / lr)
    after = np.arange(gd.shape[1])[None] >= np.where(cross >= 0, cross, gd.shape[1])[:, None]
    for w in (1, 10, 50, 100):
        avg = edge.running_mean(gd, w)
        errs = {k: np.nanmedian(np.where(after, edge.relative_gap(ds[v].values[i], avg), np.nan),
                                1) for k, v in (("central flow", "cf_central_loss"),
                                                ("GF", "gf_loss"))}
        print(f"lr = {lr:g}, window {w:3d}: " + ", ".join(
            f"{k} {np.round(stats.median_interval(e), 2)}" for k, e in errs.items()))

# %% [markdown]
# **What this run shows** (the numbers above; the experiment's defaults give the same
# picture at three step sizes, see the README's verdict table).
#
# * **Progressive sharpening: holds.** Under gradient flow the sharpness grows about five-fold
#   by the end of the run (5.1 [4.5, 5.5]), on every seed.
# * **Edge of stability: does not hold by the experiment's criterion at this run length;
#   holds at the defaults' 300 steps.** GD's sharpness reaches $2/\eta$ later than gradient
#   flow's (GD sharpens more slowly even below the edge), then overshoots to 1.3-1.6 times
#   the edge before the first catapult brings it back. From the first crossing on, its median
#   is 1.05-1.08 times $2/\eta$ ("just above"), the loss rises at 13-20 % of those steps and
#   still falls 20-30-fold; but only 43-45 % of the steps lie within 10 % of the edge, below
#   the criterion's half: in 200 steps the overshoot is a large share of the window. With the
#   defaults (300 steps, lr 3, 4, 5) the share is 66-70 % and the median 1.02-1.03, and the
#   claim holds (README). The 10 % band is a choice: wide enough for the oscillation of $S$
#   about the edge, narrow enough to exclude gradient flow, whose sharpness ends far above it.
# * **Central flow: holds here, and the loss part depends on the averaging window.** The
#   central flow holds its sharpness at $2/\eta$ to a few $10^{-4}$ (Euler at a quarter step:
#   the known 0.1 % gap of the flow on tanh nets is this size). Its parameters stay nearer
#   GD's than gradient flow's do (distance ratio 0.3-0.6 at the last step, on every seed).
#   Its predicted loss $L + \mathrm{tr}(X)/\eta$ runs between GD's spikes: against GD's loss
#   averaged over 50 steps (the experiment's default window) its relative error is 0.1-0.3,
#   against gradient flow's 0.8-0.9. Against the raw loss or a 10-step average it is 0.4-1.3,
#   no better than gradient flow's: GD's oscillations here are slow cycles (overshoot past
#   the edge, catapult, re-sharpening) tens of steps long, and the central flow predicts
#   their average, not GD's loss step by step. The 50-step window was chosen after a first
#   run with 10 steps, on that reading of the cycles; the table above is the whole
#   dependence. The error is largest in the overshoot after GD's first crossing, where GD
#   has not yet started to oscillate and its loss is still gradient flow's while the central
#   flow already pays $\mathrm{tr}(X)/\eta$. With $k = 1$ tracked eigenvalue the predicted
#   loss itself oscillates late in the run at the largest step size, where the second
#   eigenvalue nears the edge.

# %% [markdown]
# ## Verdicts per claim
#
# What the experiment's summary states for each of the papers' claims at this notebook's
# sizes (`summary["claims"]`; `gflow report` gathers the same verdicts at the experiment's
# defaults or presets):

# %%
for cid, v in s["claims"].items():
    print(f"{cid}: {v['verdict']}\n    {v['measured']}\n    {v['why']}")

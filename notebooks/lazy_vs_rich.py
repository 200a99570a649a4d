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
# # Lazy vs rich training: a finite net against its linearization
#
# A two-layer ReLU net in NTK scaling, $f(x) = \tfrac1{\sqrt m}\sum_j a_j\,\mathrm{relu}(w_j
# \cdot x)$, both layers trained by gradient flow on the squared loss (teacher data on the unit
# sphere, $n = 32$, $d = 8$, float64, the kink-aware solver). Three predictions of its outputs
# at time $t$:
#
# * **GF**: the finite net itself;
# * **linearized**: its first-order Taylor model around the init, whose flow is
#   $f_t = y + e^{-\Theta_0 t/n}(f_0 - y)$ with the empirical NTK $\Theta_0$ (and the matching
#   formula on test points; `gflow.linearized`);
# * **infinite width**: the same formula with the deterministic NTK $\Theta_\infty$ of the
#   architecture (`gflow.ntk.relu_ntk(layers="both")`), from the net's own $f_0$.
#
# **Claims.** Lazy-training theory (Chizat, Oyallon, Bach, NeurIPS 2019; Lee et al., NeurIPS
# 2019, Theorem 2.1) says that at the standard NTK init the finite net stays within
# $O(m^{-1/2})$ of its linearization over a fixed time, and its kernel moves by $O(m^{-1/2})$;
# with a small init (here every entry of variance $m^{-1}$, the condensed regime of Luo et al.,
# JMLR 2021) the kernel moves by $O(1)$ and the linearization no longer describes the net. The
# gflow issue that asked for this experiment quotes a gap $\sim m^{-0.75}$ at $m = 256\dots4096$.
#
# Conventions for a neural-tangents user: gflow's first layer has no $1/\sqrt d$ factor, `W`
# is $(m, d)$ (neural-tangents: $(d, m)$), outputs are $(n,)$, and `relu_ntk` defaults to the
# first layer only (`layers="inner"`; this experiment uses `"both"`).

# %%
import dataclasses

import numpy as np

from gflow.experiments import lazy_vs_rich as E

# smaller than the CLI defaults (`gflow run lazy_vs_rich`: widths up to 1024), so that the
# notebook runs in about a minute
cfg = dataclasses.replace(E.Config(), widths=(64, 128, 256, 512))
res = E.run(cfg)
s = res.summary
for init in E.INITS:
    print(f"{init}: m = {s[f'widths_{init}']}")
    for key in ("gap_test", "gap_inf_test", "relative_gap_test", "kernel_movement", "flips",
                "final_loss", "num_steps"):
        print(f"    {key:18s}", np.array2string(np.array(s[f"{key}_{init}"]), precision=4))
for init in E.LAZY:
    for key in ("gap_test", "gap_train", "kernel_movement"):
        lo, hi = s[f"{key}_{init}_exponent_ci"]
        print(f"{init}: {key} ~ m^{s[f'{key}_{init}_exponent']:.2f}, 95 % [{lo:.2f}, {hi:.2f}]")

# %%
figs = E.figures(res.dataset, cfg)
figs["gap_vs_width"]

# %%
figs["kernel_movement"]

# %%
figs["outputs"]

# %% [markdown]
# **What this run shows** (the numbers above; 3 seeds, one dataset, seed 0).
#
# * **Standard init: the gap shrinks with the width.** The rms test-output gap between GF and
#   its linearization at $T = 30$ falls from $1.4\cdot10^{-2}$ at $m = 64$ to
#   $4.2\cdot10^{-3}$ at $m = 512$: exponent $-0.64$, 95 % interval $[-1.04, -0.49]$ over
#   these four widths, so *shrinks* holds, and *at least as fast as $m^{-1/2}$* is
#   inconclusive here (the interval contains $-0.5$). At the CLI defaults (widths to 1024) the
#   exponent is $-0.66\ [-0.76, -0.58]$: faster than $m^{-1/2}$, which is an upper bound, not a
#   rate.
# * **Paired init: $m^{-0.77}\ [-0.80, -0.75]$**, the rate the issue quotes ($\sim m^{-0.75}$),
#   and a gap 4 to 7 times smaller than at the standard init at every width.
# * **The range, $m = 256\dots4096$** (run separately: `--set
#   widths=256,512,1024,2048,4096 small_widths=64`, 3 seeds, 810 s wall on 2 shared cores): the
#   test gap falls like $m^{-0.75}\ [-0.94, -0.61]$ (standard) and $m^{-0.77}\ [-0.86, -0.67]$
#   (paired), the quoted $\sim m^{-0.75}$; the training-point gap like $m^{-0.57}\ [-0.86,
#   -0.43]$ and $m^{-0.65}\ [-0.71, -0.64]$; the kernel movement like $m^{-0.68}$ and
#   $m^{-0.77}$. All faster than the $m^{-1/2}$ of the bound except that the standard
#   training-point interval contains it.
# * **The kernel moves less as the width grows**: $\|K_T - K_0\|/\|K_0\|$ falls like
#   $m^{-0.70}$ (standard) and $m^{-0.66}$ (paired), from 4 % and 1.5 % at $m = 64$; the
#   fraction of flipped activation patterns falls from 1.5 % to 0.9 % (standard).
# * **Infinite width is further away than the linearization**: GF against the
#   $\Theta_\infty$ prediction differs 7 (standard) and 16 to 32 (paired) times more than GF
#   against its own linearization. At these widths the empirical NTK at init differs from
#   $\Theta_\infty$ by its $O(m^{-1/2})$ sampling fluctuation, and that, not the kernel's
#   movement during training, dominates the distance to the infinite-width prediction.
# * **Small init is rich.** The kernel moves by 5.5 to 5.7 times its initial norm, 15–17 % of
#   the activation patterns flip, and the linearization misses 65–71 % of the outputs'
#   movement, in every run that fitted (6 of 6 here). Small-init runs leave their saddle later
#   at larger width (NTK scaling: the growth rate of a neuron is $O(m^{-1/2})$), so they run
#   to $T = 300$; with `--set small_widths=64,128,256` the $m = 256$ runs have not fitted by
#   then (loss 0.040 from 0.065 on each of 3 seeds; movement 3.6, relative gap 0.67) and are
#   counted as not fitted, not as evidence either way.
# * **The solver.** The kink-aware solve takes about one step per activation switch, no step
#   rejected: 49 to 154 steps at the standard init, 37 to 77 paired, 400–650 at small init
#   (more switches: the neurons rotate). The plain controller's cost is erratic in the width
#   and the init (measurements in the experiment's docstring: up to $10^3$ times more steps).
#
# Caveats: one dataset; 3 seeds per point, so the percentile bootstrap of the median has few
# distinct resamples and the intervals are rough (`--set preset=full` uses 5 seeds and widths
# to 4096); the widths span less than a decade here (the fit's flag).

# %% [markdown]
# ## Verdicts per claim
#
# What the experiment's summary states for each claim at this notebook's sizes
# (`summary["claims"]`; `gflow report` gathers the same verdicts at the experiment's defaults
# or presets):

# %%
for cid, v in s["claims"].items():
    print(f"{cid}: {v['verdict']}\n    {v['measured']}\n    {v['why']}")

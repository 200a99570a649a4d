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
# # Local convergence of mildly over-parameterized two-layer nets (teacher-student)
#
# Mo Zhou, Rong Ge, Chi Jin, "A Local Convergence Theory for Mildly Over-Parameterized
# Two-Layer Neural Network", COLT 2021 (arXiv 2102.02410).
#
# **Setting.** Teacher $f^*(x) = \sum_{i=1}^k a^*_i \sigma(w^*_i\cdot x)$ with $k$ unit
# directions pairwise at the angle $\Delta$ and $a^*_i = 1$; inputs $x \sim N(0, I_d)$;
# $\sigma = |\cdot|$ (ReLU $= (z + |z|)/2$ is supported too: `--set activation=relu`). Student
# $f(x) = \sum_{j=1}^m a_j \sigma(w_j\cdot x)$, $m \ge k$, both layers trained by gradient flow
# on the population square loss $L = \tfrac12 E(f - f^*)^2$.
#
# **Claim.** Once $L$ is below a threshold (polynomial in the problem's parameters), every
# student neuron converges in direction to one of the teacher neurons, $L \to 0$, and the
# convergence rate does not depend on $m$. The tool is a special case of the Łojasiewicz
# property of the gradient (not local strong convexity / PL).
#
# **What gflow does.** $L$ has a closed form for Gaussian inputs, so
# `gflow.population.Population(teacher_net, teacher_params)` makes the *exact* population loss
# the objective of `gflow.simulate`: gradient flow (Tsit5, adaptive, rtol $10^{-9}$) in
# float64 (the experiment scopes `jax_enable_x64` itself; `--set dtype=float32` is the
# other choice, down to $10^{-6}$). **Every width starts at the same loss**
# $L_0 = 10^{-2}$ (`gflow.population.near_teacher_at_loss`: each teacher neuron split into
# $m/k$ balanced duplicates rotated off it, the rotation scaled by Brent's method to hit
# $L_0$), and rates are compared **at matched loss levels** $10^{-3}, \dots, 10^{-8}$: the
# time from $L_0$ to each level (read off the saves with the cubic Hermite interpolant of
# $\log L$ whose slope is the saved $-|\nabla L|^2/L$; the last level is the run's located
# stop), the local rate $-d\log L/dt = |\nabla L|^2/L$ (the Łojasiewicz ratio) at each
# level, and the largest angle of a student neuron to its teacher there. Widths
# $m = k, 2k, 4k, 8k, 16k$ ($k = 2$, $d = 5$) over 3 seeds (teacher rotation and init), and a
# sweep over $\Delta$ (30°, 60°, 90° and one random teacher) at $m = k, 2k$.
# `gflow run teacher_student --set preset=full` is the larger study ($k = 3$, $d = 10$,
# 8 seeds, levels to $10^{-10}$, six separations, $m = k, 2k, 4k$ in the sweep).

# %%
import tempfile

from gflow import io
from gflow.experiments import teacher_student as ts

cfg = ts.Config()
res = ts.run(cfg)
s = res.summary
for key, v in s.items():
    print(f"{key}: {v}")

# %%
figs = ts.figures(res.dataset, cfg)
with tempfile.TemporaryDirectory() as tmp:  # the same files `gflow run` writes
    io.write_results(tmp, config={"settings": cfg.__dict__}, summary=s, dataset=res.dataset,
                     figures=dict(figs))
figs = ts.figures(res.dataset, cfg)  # writing closed the figures: draw them again to show
figs["loss"]

# %%
figs["rate"]

# %%
figs["neurons"]

# %% [markdown]
# How fast the directions converge, per width: the largest angle to the own teacher at the
# matched levels, fitted as $\max_j \angle(w_j, w^*) \sim L^{\gamma}$ on the lower half of
# the levels (the median over seeds; $\gamma = 1/2$ where the angle enters $L$ quadratically
# with a fixed weight).

# %%
import numpy as np  # noqa: E402

from gflow import stats  # noqa: E402

half = len(cfg.levels) // 2
low = 10.0 ** -np.asarray(cfg.levels[half:], float)
for m, a in s["max_angle_deg_at_level_by_width"].items():
    print(f"m={m}: gamma = {stats.loglog_slope(low, np.asarray(a['median'])[half:]):.2f}")

# %% [markdown]
# ## Claim vs measurement (this run; the numbers are those printed above)
#
# - **Loss → 0 from a local start, every width** — holds: all 21 runs reach $10^{-8}$
#   (`runs_reached_last_level`), at the located crossing (`stop_loss_rel_error_max` ≈
#   $10^{-7}$, set by locating the stop on the dense output at rtol $= 10^{-9}$). Locality is
#   measured, not assumed: no student neuron
#   changed its nearest teacher (`all_neurons_kept_their_teacher`).
# - **Directions converge to the teachers** — the largest angle falls level by level, slowly
#   for $m > k$ (the verdict below rests on the loss and the teacher assignment; the angles are
#   read here) (`max_angle_deg_at_level_by_width`): for $m = k$ like $\sqrt{L}$
#   ($\gamma = 0.50$), 0.01° at $10^{-8}$; for $m = 2k, 4k, 8k, 16k$ with $\gamma = 0.34$,
#   0.27, 0.15, 0.09 (cell above), still 0.3–2° at $10^{-8}$. The slowest neuron is slower
#   the more duplicates share a teacher: direction convergence, unlike the loss rate, does
#   depend on $m$ at these losses. The cluster weights
#   $\sum_{j\to i} a_j|w_j|$ reach $a^*_i|w^*_i| = 1$ to $\sim 10^{-3}$ at the stop. GF
#   conserves $a_j^2 - |w_j|^2$ to $\sim 10^{-11}$ (solver error).
# - **"The rate does not depend on $m$"** (not judged by a verdict): the measurement
#   contradicts it across $m = k$ / $m > k$, and among $m > k$ only the exponent is the same:
#   - $m = k$: linear convergence; $|\nabla L|^2/L$ is flat on the lower levels (fitted
#     $|\nabla L|^2/L \sim L^{\beta}$ with $\beta \approx 0.00$, rate ≈ 0.73).
#   - $m > k$: polynomial convergence; $\beta \approx 0.33$–$0.39$ for every $m > k$, i.e.
#     $L \sim t^{-1/\beta} \approx t^{-3}$ (the Łojasiewicz regime, not PL). The time from
#     $L_0$ to $10^{-8}$ is ≈ 40× that of $m = k$, so the rate is *not* the same across the
#     $m = k$ / $m > k$ boundary.
#   - Among $m > k$ the exponent is the same and the constant nearly so: the time to
#     $10^{-8}$ rises from $m = 2k$ to $4k$ (×1.5), then by ≤ 5% per doubling
#     (`time_ratio_successive_widths_m_gt_k`); the power-law fit over $m = 2k..16k$ gives
#     $m^{0.22}$ with a 95% interval excluding 0 (driven by the $2k \to 4k$ step; the widths
#     span less than a decade, flagged). So: width-independent exponent, a constant that
#     depends weakly on $m$ and saturates.
# - **Separation $\Delta$** — at $m = k$ a smaller separation slows the linear phase (time to
#   $10^{-8}$ about 9× longer at 30° than at 90°); at $m = 2k$ the polynomial phase takes the
#   same time for every $\Delta$ and for the random teacher.
# - **The theorem's loss threshold** is not computed here (its constants and exponents in
#   $\Delta$, $k$, $a^*$ are not reproduced). For scale, $L_0 = 10^{-2}$ is about
#   $1/160$ of the teacher's own loss $E f^{*2}/2 \approx 1.64$; the runs show directly that
#   this start is local (every neuron stays with its teacher and the loss goes to 0).

# %% [markdown]
# ## Verdicts per claim
#
# What the experiment's summary states for each of the paper's claims at this notebook's
# sizes (`summary["claims"]`; `gflow report` gathers the same verdicts at the experiment's
# defaults or presets):

# %%
for cid, v in s["claims"].items():
    print(f"{cid}: {v['verdict']}\n    {v['measured']}\n    {v['why']}")

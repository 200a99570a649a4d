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
# # Coupled (paired) initialization: how wide must a two-layer ReLU net be?
#
# Munteanu, Omlor, Song, Woodruff, "Bounding the Width of Neural Networks via Coupled
# Initialization — A Worst Case Analysis", ICML 2022 (arXiv 2206.12802). The paper is purely
# theoretical; this simulation is new.
#
# **Setting** (Ji–Telgarsky / Du–Song–Yang convention): $f(x) = \frac{1}{\sqrt m}\sum_r a_r
# \mathrm{ReLU}(w_r\cdot x)$, no bias, $\|x_i\| = 1$, only $W$ trained, $a_r \in \{\pm1\}$ fixed.
# *Coupled* init draws $m/2$ Gaussian neurons and uses each twice with opposite $a_r$, so
# $f(x;\theta_0) = 0$ for every $x$, while the NTK at init keeps its mean.
#
# **Claims (upper bounds on a width that suffices, constants and logs not given).**
# Logistic loss, NTK margin $\gamma$: width $\tilde O(\gamma^{-2})$ with coupled init, versus
# $\tilde O(\gamma^{-8})$ of Ji and Telgarsky (ICLR 2020). Squared loss, $n$ points,
# $\lambda = \lambda_{\min}(H^\infty)$: width $\tilde O(n^2/\lambda^2)$, versus $n^4/\lambda^4$
# of Song and Yang (2019).
#
# **Which margin.** Ji and Telgarsky's Assumption 2.1 (used by Munteanu et al.) asks for a
# direction field with $\|\bar v(w)\|_2 \le 1$ for *every* $w$ and
# $y_i\,\mathbb E_w[\bar v(w)\cdot x_i 1\{w\cdot x_i>0\}] \ge \gamma$. We compute that
# *pointwise* margin $\gamma_{pw}$ as a convex program over a sample of $w$
# (`gflow.ntk.pointwise_margin`, certified by a primal field and the dual value), beside its
# relaxation $\mathbb E\|v\|^2 \le 1$, the kernel hard-margin SVM $\gamma_{L2}$
# (`gflow.ntk.margin`, exact). $\gamma_{pw} \le \gamma_{L2}$; **the x-axis uses $\gamma_{pw}$**,
# and every law is also fitted against $1/\gamma_{L2}$.
#
# **What we measure.** Widths 2, 4 and then every $\sqrt 2$ to 64 (even, for pairs), paired and
# independent init,
# 16 init seeds, full-batch GD, each data set one compiled ensemble:
#
# - *margin sweep*: 8 points in $d = 5$, 4 close pairs with opposite labels at pair angle
#   $1, 0.5, \dots, 0.06$; target: every $y_i f(x_i) \ge 1$ (mean loss $\le \ln(1+e^{-1})/n$)
#   within the Ji–Telgarsky time shape
#   $T = c_\gamma \ln^2(2/\varepsilon)/(\gamma_{L2}^2\varepsilon)$, $c_\gamma = 3$;
# - *n sweep*: $n = 4 \dots 48$ random points on $S^9$, random $\pm1$ labels; target: loss $\le$
#   1% of the zero function's within $T = c_n n\ln(100)/\lambda$.
#
# A run stops at the target (success), at a plateau ($|\nabla L| < 10^{-6}$, a certified
# failure) or at $T$ (a failure that more time might turn into a success: *budget-bound*).
# Per data point: success probability per width with Wilson intervals; the widths where it
# crosses 50 % and 90 % (isotonic fit, bootstrap over seeds); their power laws in $1/\gamma$, $n$
# and $n/\lambda$ with 90 % intervals (`gflow.stats.threshold_law`). Two verdicts per law:
# *budget-aware* (the claim's verdict: inconclusive wherever a budget-bound run could move a
# threshold) and *within T* (only the successes within the time budget count; reported beside
# it).

# %%
import tempfile
import time

import numpy as np

from gflow import io
from gflow.experiments import coupled_init as ci

cfg = ci.Config()
t0 = time.perf_counter()
res = ci.run(cfg)
print(f"run: {time.perf_counter() - t0:.0f} s")
s = res.summary
for key in ("init_output_max_abs_paired", "init_output_max_abs_independent", "angles",
            "gamma_pw", "gamma_pw_sample_spread", "gamma_l2", "ns", "lambda0",
            "budget_bound_runs_gamma", "plateau_runs_gamma", "budget_bound_runs_n",
            "plateau_runs_n"):
    print(f"{key}: {s[key]}")

# %%
for x in ("gamma_pw", "gamma_l2", "n", "n_over_lambda"):
    for init in ci.INITS:
        for lev in (50, 90):
            tag = f"{x}_{init}_p{lev}"
            print(f"{tag}: width at {lev}% {s[f'width_at_{tag}']}, kinds "
                  f"{list(s[f'width_at_{tag}_censored'].values())}")
            print(f"    within T: {s[f'verdict_{tag}_within_T']['verdict']} -- "
                  f"{s[f'verdict_{tag}_within_T']['why']}")
            print(f"    budget-aware: {s[f'verdict_{tag}']['verdict']} -- "
                  f"{s[f'verdict_{tag}']['why']}")

# %%
ds = res.dataset  # one group per sweep: ds["margin"], ds["n"]
print("success fraction, margin sweep (rows: angle; columns: width", list(cfg.widths), ")")
for i, init in enumerate(ci.INITS):
    print(init)
    print(np.round(ds["margin"]["success"].values[:, i].mean(axis=1), 2))

# %%
figs = ci.figures(ds, cfg)
with tempfile.TemporaryDirectory() as tmp:  # the same files `gflow run coupled_init` writes
    io.write_results(tmp, config={"settings": cfg.__dict__}, summary=s, dataset=ds,
                     figures=dict(figs))
figs = ci.figures(ds, cfg)  # writing closed the figures: draw them again to show
figs["success_gamma"]

# %%
figs["width_vs_gamma"]

# %%
figs["success_n"]

# %%
figs["width_vs_n"]

# %% [markdown]
# ## What this run shows
#
# (Numbers from the default run, seed 0; the cells above print them for this run. The default
# takes about 110 s on 2 CPU cores.)
#
# - **Output at init**: exactly 0 for paired init, 2.6 at most for independent.
# - **The two margins differ, more at small angles**: $\gamma_{pw}$ = 0.19 … 0.017 against
#   $\gamma_{L2}$ = 0.20 … 0.036 (two independent samples of 20 000 $w$ agree to $\le 6\cdot
#   10^{-4}$). Against $1/\gamma_{pw}$ the sweep spans a factor 11, against $1/\gamma_{L2}$ only
#   5.5 (flagged `x_range_under_decade`).
# - **Width needed does not grow with $1/\gamma$ here.** Within $T$ the width at 50 % success
#   stays at 4.2–5.2 (paired) and 5.2–6.9 (independent), at 90 % at 5.8–9.7 and 8.7–18 over the
#   whole decade. Exponents against $1/\gamma_{pw}$: paired 0.01 [−0.11, 0.11] (50 %) and 0.05
#   [−0.14, 0.16] (90 %); independent 0.12 [0.03, 0.27] and 0.12 [−0.06, 0.21] (90 % bootstrap
#   intervals). Within $T$ the verdict is *consistent with the bound* for $\gamma^{-2}$ and
#   $\gamma^{-8}$ (the claims' budget-aware verdicts are inconclusive, below) — but the
#   thresholds span less than one grid step (`y_range_under_grid_step`), so this says only that
#   the exponent is small, not that either bound is tight; these are easy instances, not the
#   worst case the bounds are about.
# - **The time budget matters at small margins.** With $c_\gamma = 1$ (run separately:
#   `--set c_gamma=1`) the three easier margins gave the same thresholds, but at
#   $\gamma_{pw}$ = 0.017 no width up to 64 reached 50 % and at $1/\gamma_{pw}$ = 30 the 90 %
#   widths were 12.8 (paired) and 21.8 (independent) instead of 5.8 and 14.7: the budget, not the
#   width, failed those runs, and the fitted exponents then were 0.07–0.55. In the default run
#   ($c_\gamma = 3$) almost every failure (349 runs, against 23 at a plateau) stops at $T$, so
#   the budget-aware verdicts stay
#   *inconclusive*. But the law has settled between $c_\gamma = 3$ and $10$ (run separately:
#   `--set c_gamma=10`, also part of `preset=full`): every width at 50 % and 90 % success is the
#   same except one (independent, 90 %, $1/\gamma_{pw}$ = 5.3: 9.4 → 7.8), the exponents are the
#   same, and 348 runs still fail at the 3.3 times longer $T$ — those widths fail, not the budget.
# - **Paired vs independent**: paired needs less width at every margin; at $1/\gamma_{pw}$ = 30
#   the 90 % intervals are disjoint, 5.8 [5.4, 6.9] against 14.7 [10.6, 18.6]; elsewhere they
#   overlap. A constant factor, not a difference in scaling.
# - **n sweep**: the width at 50 % success grows from 4 to 9 (paired) and 5 to 10 (independent)
#   while $n$ goes 4 → 48 and $n/\lambda$ 11 → 670: exponents 0.29 [0.12, 0.46] and 0.25 [0.15,
#   0.33] in $n$, 0.18 and 0.15 in $n/\lambda$, far below 2 and 4 (within $T$: *consistent with
#   the bound*; budget-aware: inconclusive).
#   With $d = 10$, width $m$ has $10m$ trainable weights, so a width near $n/d$ can already
#   interpolate: these sizes probe parameter counting, not the worst case.
# - Not here: the paper's lower-bound instances. Caveats: GD with a fixed step, small $n$ and
#   $d$, one data set per point (the seeds vary the init only), float32.

# %% [markdown]
# ## Verdicts per claim
#
# What the experiment's summary states for each of the paper's claims at this notebook's
# sizes (`summary["claims"]`; `gflow report` gathers the same verdicts at the experiment's
# defaults or presets):

# %%
for cid, v in s["claims"].items():
    print(f"{cid}: {v['verdict']}\n    {v['measured']}\n    {v['why']}")

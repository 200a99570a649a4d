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
# # Low-rotation regimes of shallow ReLU networks
#
# Matus Telgarsky, "Feature selection and low test error in shallow low-rotation ReLU
# networks", ICLR 2023 (arXiv 2208.02789). The paper has no code; this simulation is new.
#
# **Setting.** $f(x) = \frac{1}{\sqrt m}\sum_j a_j\,\mathrm{ReLU}(w_j\cdot x)$,
# $w_j(0)\sim N(0, I_d)$, $a_j\sim\mathrm{Unif}\{\pm1\}$, $\|x\|\le 1$, $y\in\{\pm1\}$,
# logistic loss; gradient flow (GF, adaptive Tsit5) and SGD (step 1, batch 16) side by side.
# Running example: 2-sparse parity, $x$ uniform on $\{\pm 1/\sqrt d\}^d$,
# $y = \mathrm{sign}(x_1x_2)$, whose NTK margin is $\Theta(1/d)$.
#
# **Claims.**
# 1. *Near initialization* (only $W$ trained here): until the weights have moved by
#    $O(\sqrt m)$ — far beyond the $O(1)$ of the NTK analysis — width and samples
#    $\propto 1/\gamma_{ntk}$ suffice for low test error, and GF attains at least the NTK margin
#    $\gamma_{ntk}$ (so it escapes bad KKT points of the margin objective).
# 2. *Neural collapse*: data in $k$ tight, well-separated groups with one label each; the
#    sample complexity scales with the number of groups.
# 3. *Norm-only*: $w_j = r_j u_j$ with $u_j = w_j(0)/\|w_j(0)\|$ frozen, $r$ and $a$ trained;
#    GF at large width reaches the globally maximal margin over the fixed directions.
#
# **Measured.** Rotation angles $\angle(w_j(t), w_j(0))$, movement $\|W_t - W_0\|_F/\sqrt m$,
# the normalized margin $\min_i y_i f(x_i)/\|W_t\|$ (the margin objective of the
# 1-homogeneous net; for norm-only the 2-homogeneous $\min_i y_i f(x_i)/(\|r\|^2+\|a\|^2)$),
# the NTK margin $\gamma_{ntk}$ of the training set (kernel hard-margin SVM,
# `gflow.ntk.margin`), the maximal norm-only margin (a linear program:
# $\max_{\|c\|_1\le1}\min_i y_i\sum_j c_j\mathrm{ReLU}(u_j\cdot x_i)$ divided by
# $2\sqrt m$, since $\|r\|^2+\|a\|^2 \ge 2\sum_j|r_ja_j|$), and test error on 2000 fresh samples.
# The run below is the default of `gflow run low_rotation` (about a minute on 2 cores).

# %%
import tempfile

import matplotlib.pyplot as plt
import numpy as np

from gflow import io
from gflow.experiments import low_rotation as lr

cfg = lr.Config()
res = lr.run(cfg)
s, ds = res.summary, res.dataset
print(cfg)

# %% [markdown]
# ## 1. Near initialization (2-sparse parity, d = 8, n = 128, widths 32, 128, 512)

# %%
gamma = s["near_init_ntk_margin"]
print(f"NTK margin of the training set: {gamma:.4f}   (1/d = {1 / cfg.d:.4f})")
print(f"{'width':>6} {'dyn':>4} {'max |W-W0|/sqrt m':>18} {'test err':>9} "
      f"{'margin/gamma':>13} {'margin per movement/gamma':>26}")
for dyn, tag in (("gf", ""), ("sgd", "sgd_")):
    for w in cfg.widths:
        print(f"{w:>6} {dyn:>4} "
              f"{s[f'near_init_{tag}max_movement_over_sqrt_m_by_width'][str(w)]:>18.3f} "
              f"{s[f'near_init_{tag}test_error_by_width'][str(w)]:>9.4f} "
              f"{s[f'near_init_{tag}margin_over_ntk_margin_by_width'][str(w)]:>13.3f} "
              f"{s[f'near_init_{tag}margin_per_movement_over_ntk_margin_by_width'][str(w)]:>26.3f}")
print("|a|-weighted mean rotation at the end (GF, largest width): "
      f"{s['near_init_rotation_weighted_deg']:.1f} deg")

# %%
figs = lr.figures(ds, cfg)
figs["near_init"]

# %%
figs["near_init_rotation_cdf"]

# %% [markdown]
# **What the theory predicts and what this run shows (near init).**
# The weights move far beyond $O(1)$: by $t = 10^4$ the movement is of order $\sqrt m$
# ($\|W_t-W_0\|/\sqrt m$ between about 2 and 7, largest at the smallest width), and test error
# on fresh samples is 0 at every width, with $n = 128$ samples in $d = 8$. GF and SGD
# (step 1, batch 16) are indistinguishable on these curves.
#
# The margin claim is asymptotic ($t\to\infty$). At this time budget the normalized margin
# $\min_i y_if(x_i)/\|W_t\|$ exceeds $\gamma_{ntk}$ only at the smallest width; at the larger
# widths it is still below (about $0.9\gamma_{ntk}$ at $m=128$ and $0.6\gamma_{ntk}$ at
# $m=512$) and still rising, because $\|W_t\|$ is dominated by $\|W_0\|\approx\sqrt{md}$ until
# the weights have moved by more than that. The margin per unit of movement,
# $\min_i y_if(x_i)/\|W_t-W_0\|$ — what a linearized (NTK) predictor moved by $R$ attains at
# most $\gamma_{ntk}R$ — is at or above $\gamma_{ntk}$ at every width. So the run supports
# "at least the NTK margin" for the movement-normalized margin, and shows the homogeneous
# margin on its way there without reaching it for $m \ge 128$ within $t=10^4$.
#
# "Low rotation" is relative: neurons do rotate (a mean of tens of degrees at the end), since
# moving by $O(\sqrt m)$ in total is comparable to the initial norms $\|w_j(0)\|\approx\sqrt d$;
# the rotation shrinks with width at fixed time.

# %% [markdown]
# ## 2. Norm-only flow ($w_j = r_j u_j$, m = 256)

# %%
print(f"max rotation angle over neurons, times and n: {s['norm_only_max_rotation_deg']:.2e} deg")
print(f"{'n':>5} {'LP max margin':>14} {'GF margin / max':>16} {'test err':>9}")
for n in cfg.norm_ns:
    print(f"{n:>5} {s['norm_only_max_margin_by_n'][str(n)]:>14.3e} "
          f"{s['norm_only_margin_ratio_by_n'][str(n)]:>16.3f} "
          f"{s['norm_only_test_error_by_n'][str(n)]:>9.4f}")
ratio = (ds["no_margin_homogeneous"] / ds["no_max_margin"]).sel(no_n=max(cfg.norm_ns))
for t in (1e4, 1e6, 1e8, 1e10, 1e12, 1e14):
    i = int(np.argmin(np.abs(np.log(ds["no_time"].values[1:] / t)))) + 1
    print(f"t = {ds['no_time'].values[i]:.1e}: margin / max margin = {float(ratio[i]):.3f}")

# %%
figs["norm_only"]

# %% [markdown]
# **What the theory predicts and what this run shows (norm-only).**
# The directions never change: the largest rotation angle is of the order of float32 rounding
# ($10^{-5}$ degrees). (A neuron with $r_j(0) < |a_j(0)|$ could cross $r_j = 0$ and flip to
# $-u_j$, since GF conserves $r_j^2-a_j^2$; the init is conditioned on $\|w_j(0)\|>1$ to rule
# this out, which removes about 0.2% of Gaussian neurons at $d=8$.) The normalized margin rises
# towards the globally maximal margin from the linear program but only logarithmically in time,
# as expected for the logistic loss: about 0.7 of the maximum at $t=10^8$ and about 0.8 at
# $t=10^{14}$ for $n=128$. So convergence to the maximum is consistent with the run but not
# reached within it. Test error falls with $n$ (large at $n=16$, small at $n=64$, 0 at $n=128$).

# %% [markdown]
# ## 3. Neural collapse: k tight groups (radius 0.05, orthonormal centers in d = 16), m = 64

# %%
print(f"{'k':>3} " + " ".join(f"n={n:>3}" for n in cfg.nc_ns))
for k in cfg.nc_ks:
    row = s[f"nc_test_error_k{k}_by_n"]
    print(f"{k:>3} " + " ".join(f"{row[str(n)]:>5.3f}" for n in cfg.nc_ns))
print(f"largest rotation angle: {s['nc_max_rotation_deg']:.1f} deg")

# %%
figs["neural_collapse"]

# %% [markdown]
# **What the theory predicts and what this run shows (neural collapse).**
# The sample complexity should scale with the number of groups $k$, not with $d$: once every
# group has been seen, test error is 0. Here every $k \le 8$ reaches 0 test error by $n=16$
# samples in $d=16$; below that, errors come from groups absent from the training sample.
# With only 2 seeds per point the small-$n$ errors are noisy and the ordering in $k$ is not
# clean at every $n$ (e.g. $k=2$ at $n=4$ can be unlucky); a finer test of the scaling would need
# more seeds and larger $k$.

# %%
# the same figures are redrawn from the dataset written to disk (as `gflow plot DIR` does)
with tempfile.TemporaryDirectory() as tmp:
    io.write_results(tmp, config={}, summary=s, dataset=ds)
    _, _, ds2 = io.read_results(tmp)
    print(sorted(lr.figures(ds2, cfg)))
plt.close("all")

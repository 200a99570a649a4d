"""Case 8: the empirical NTK without the full Jacobian (``gflow.tangent``) against the Jacobian
path (``gflow.ntk.gram``, ``jax.jacrev``: what a JAX user writes by hand).

Problem (float32): a two-layer tanh net with bias, NTK scaling, width m, d = 64, n samples.
Rows per size: wall time (min of repeats, compile excluded) and the compiled program's
temporary memory (XLA's memory analysis) of the Gram built from the Jacobian, of the Gram in
the two-layer closed form, and of one NTK-vector product (chunks of 256 samples); the ratios
of each to the Jacobian path; and the closed form's arithmetic rate against the GEMM peak
measured in this run (its two n x n x m products, ~4 n^2 m flops).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import gflow
from gflow import ntk, tangent

from ._common import Metric, measure

NAME = "8 NTK without the Jacobian"
D = 64


def _temp_mb(f, *args) -> float:
    return jax.jit(f).lower(*args).compile().memory_analysis().temp_size_in_bytes / 1e6


def run(peak: dict, *, quick: bool = False, out=None) -> dict:
    sizes = [(256, 256)] if quick else [(512, 512), (1024, 1024)]  # jacrev: an (n, n, m) temp
    rows, details = [], {}
    for n, m in sizes:
        net = gflow.TwoLayer(m, "tanh", bias=True)
        p = gflow.init.gaussian(jax.random.key(0), net, D)
        X = jax.random.normal(jax.random.key(1), (n, D))
        v = jnp.ones(n)
        paths = {"Jacobian Gram (jacrev)": lambda p, X, net=net: ntk.gram(net, p, X),
                 "two-layer Gram (closed form)":
                     lambda p, X, net=net: tangent.two_layer_gram(net, p, X),
                 "NTK-vector product (chunk 256)":
                     lambda p, X, net=net, v=v: tangent.ntk_vp(net, p, X, v, chunk=256)}
        res = {}
        for name, f in paths.items():
            g = jax.jit(f)
            t = measure(lambda g=g, p=p, X=X: jax.block_until_ready(g(p, X)), repeats=3)
            res[name] = {"time": t.asdict(), "temp_mb": _temp_mb(f, p, X)}
        base = res["Jacobian Gram (jacrev)"]
        size = f"n={n}, m={m}"
        for name, r in res.items():
            rows.append(Metric(NAME, f"{size}: {name}: time", r["time"]["min_s"], "s",
                               note=f"temp memory {r['temp_mb']:.0f} MB"))
            if r is not base:
                rows.append(Metric(NAME, f"{size}: {name}: time / Jacobian Gram's",
                                   r["time"]["min_s"] / base["time"]["min_s"], "x"))
                rows.append(Metric(NAME, f"{size}: {name}: memory / Jacobian Gram's",
                                   r["temp_mb"] / base["temp_mb"], "x"))
        rate = 4 * n * n * m / res["two-layer Gram (closed form)"]["time"]["min_s"] / 1e9
        rows.append(Metric(NAME, f"{size}: two-layer Gram: fraction of jnp.dot peak",
                           rate / peak["jax"], note=f"{rate:.3g} GFLOP/s at 4 n^2 m flops"))
        details[size] = res
    return {"rows": rows, "details": details}

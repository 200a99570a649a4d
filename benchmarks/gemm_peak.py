"""The machine's float32 GEMM peak, measured in the same run as the cases.

``jnp.dot`` of two square ``N x N`` float32 matrices (jitted, on JAX's default device;
N = 1024, 2048, 3072; on an accelerator 4096, 8192, 16384), ``2 N^3`` FLOPs per product,
best of ``repeats`` per size: the highest GFLOP/s is the peak every case compares against.
``torch.mm`` is measured the same way for context (the torch peers use torch's own BLAS,
which can be slower or faster than XLA's on a given CPU).

Run alone: ``python -m benchmarks.gemm_peak``.
"""

from __future__ import annotations

import json

from ._common import MIN_TIME, measure, torch_threads

__all__ = ["gemm_peak"]

SIZES = (1024, 2048, 3072)
QUICK_SIZES = (256, 512)
#: on an accelerator (``python -m benchmarks --device``): large enough to saturate a GPU/TPU
DEVICE_SIZES = (4096, 8192, 16384)


def _jax_gflops(N: int, repeats: int) -> float:
    import jax
    import jax.numpy as jnp

    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (N, N), jnp.float32)
    b = jax.random.normal(kb, (N, N), jnp.float32)
    dot = jax.jit(jnp.dot)
    t = measure(lambda: dot(a, b).block_until_ready(), repeats=repeats, min_time=MIN_TIME)
    return 2 * N**3 / t.min / 1e9


def _torch_gflops(torch, N: int, repeats: int) -> float:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(N, N, generator=g)
    b = torch.randn(N, N, generator=g)
    t = measure(lambda: torch.mm(a, b), repeats=repeats, min_time=MIN_TIME)
    return 2 * N**3 / t.min / 1e9


def gemm_peak(quick: bool = False, repeats: int = 5, torch: bool = True,
              device: bool = False) -> dict:
    """Measured f32 GEMM GFLOP/s: ``{"jax": peak, "jax_by_size": {N: GFLOP/s}, "torch": ...}``
    (``torch=False``: JAX only; ``device``: the accelerator sizes, JAX only)."""
    sizes = QUICK_SIZES if quick else DEVICE_SIZES if device else SIZES
    torch = torch and not device
    by_size = {N: _jax_gflops(N, repeats) for N in sizes}
    out = {"jax": max(by_size.values()), "jax_by_size": by_size, "sizes": list(sizes)}
    torch = torch_threads() if torch else None
    if torch is not None:
        tby = {N: _torch_gflops(torch, N, repeats) for N in sizes}
        out["torch"] = max(tby.values())
        out["torch_by_size"] = tby
    else:
        out["torch"] = None
    return out


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    print(json.dumps(gemm_peak(quick=p.parse_args().quick), indent=2))

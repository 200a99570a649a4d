"""Case 1: full-batch GD on one large net (n=2048, d=128, m=2048, float32).

gflow (``gflow.simulate(..., dynamics=gflow.GD(lr))``, K steps, loss saved at t=0 and t1)
against (a) the measured f32 GEMM peak, (b) hand-written torch loops on the CPU (autograd,
and a hand-derived gradient), (c) a hand-written JAX + optax loop (a jitted step called from
Python). All run the same K steps from the same numbers; their final losses are compared.
Targets (issue 8): >= 0.6 of GEMM peak, >= 1.5x the torch loop.
"""

from __future__ import annotations

import numpy as np

import gflow

from ._common import MIN_TIME, Metric, measure, sizes, torch_threads
from ._problem import jax_loss, jax_loss_mn, problem, torch_loss, torch_manual_grad

NAME = "1 GD single net"
FULL = {"n": 2048, "d": 128, "m": 2048, "steps": 20, "repeats": 3}
QUICK = {"n": 256, "d": 16, "m": 256, "steps": 10, "repeats": 2}
#: ``--device``: 4nm(d+1) = 0.55 TFLOP per step, the (n, m) hidden layer 1 GiB in float32
DEVICE = {"n": 16384, "d": 512, "m": 16384, "steps": 20, "repeats": 3}
LR = 0.1


def gflow_gd(p, lr, K):
    """Returns a blocking callable: K GD steps with gflow; its result is the final loss."""
    t1 = K * lr
    save = np.array([0.0, t1])

    def fn():
        tr = gflow.simulate(p.net, p.params0, p.data, loss="squared", dynamics=gflow.GD(lr=lr),
                            t1=t1, save=save, observe=("loss",))
        return float(tr["loss"][-1])

    return fn


def optax_gd(p, lr, K, loss_fn=jax_loss):
    """A hand-written JAX + optax loop: jitted step, Python loop, block at the end."""
    import jax
    import optax

    X, y = jax.numpy.asarray(p.X), jax.numpy.asarray(p.y)
    opt = optax.sgd(lr)

    @jax.jit
    def step(params, state):
        loss, g = jax.value_and_grad(loss_fn)(params, X, y)
        updates, state = opt.update(g, state, params)
        return optax.apply_updates(params, updates), state, loss

    final = jax.jit(loss_fn)

    def fn():
        params = (jax.numpy.asarray(p.W0), jax.numpy.asarray(p.a0))
        state = opt.init(params)
        for _ in range(K):
            params, state, _ = step(params, state)
        return float(final(params, X, y))

    return fn


def torch_gd(torch, p, lr, K, *, manual: bool):
    """A hand-written torch loop (autograd, or the hand-derived gradient)."""
    X, y = torch.from_numpy(p.X), torch.from_numpy(p.y)

    def fn():
        W = torch.from_numpy(p.W0).clone()
        a = torch.from_numpy(p.a0).clone()
        if manual:
            with torch.no_grad():
                for _ in range(K):
                    _, gW, ga = torch_manual_grad(torch, X, y, W, a)
                    W -= lr * gW
                    a -= lr * ga
        else:
            W.requires_grad_(True)
            a.requires_grad_(True)
            for _ in range(K):
                loss = torch_loss(torch, X, y, W, a)
                gW, ga = torch.autograd.grad(loss, (W, a))
                with torch.no_grad():
                    W -= lr * gW
                    a -= lr * ga
        with torch.no_grad():
            return float(torch_loss(torch, X, y, W, a))

    return fn


def run(peak: dict, *, quick: bool = False, out=None) -> dict:
    s = sizes(FULL, QUICK, DEVICE, quick)
    n, d, m, K, R = s["n"], s["d"], s["m"], s["steps"], s["repeats"]
    p = problem(n, d, m)
    flops = p.flops
    rows, details, losses, per_step = [], {"sizes": s, "lr": LR, "flops_per_step": flops}, {}, {}

    def bench(label, fn):
        t = measure(fn, repeats=R, min_time=MIN_TIME)
        losses[label] = t.result
        per_step[label] = t.min / K
        details[label] = t.asdict() | {"s_per_step": t.min / K,
                                       "gflops": flops / (t.min / K) / 1e9,
                                       "final_loss": losses[label]}
        return t

    tg = bench("gflow", gflow_gd(p, LR, K))
    bench("jax_optax", optax_gd(p, LR, K))
    bench("jax_optax_mn", optax_gd(p, LR, K, jax_loss_mn))
    torch = torch_threads()
    if torch is not None:
        bench("torch_autograd", torch_gd(torch, p, LR, K, manual=False))
        bench("torch_manual", torch_gd(torch, p, LR, K, manual=True))

    gf = flops / per_step["gflow"] / 1e9
    rows.append(Metric(NAME, "gflow GFLOP/s", gf, "GFLOP/s",
                       note=f"4nm(d+1)={flops / 1e9:.3g} GFLOP/step, {K} steps"))
    rows.append(Metric(NAME, "gflow ms/step", 1e3 * per_step["gflow"], "ms"))
    rows.append(Metric(NAME, "gflow compile (first call - min)", tg.compile, "s"))
    rows.append(Metric(NAME, "fraction of jnp.dot peak", gf / peak["jax"], "", 0.6,
                       note=f"peak {peak['jax']:.0f} GFLOP/s"))
    rows.append(Metric(NAME, "speed-up vs JAX+optax loop",
                       per_step["jax_optax"] / per_step["gflow"], "x"))
    rows.append(Metric(NAME, "JAX+optax, hidden layer (m,n) = relu(W X^T): GFLOP/s",
                       flops / per_step["jax_optax_mn"] / 1e9, "GFLOP/s",
                       note="diagnostic: the same loop with the other layout of the hidden layer"))
    if torch is not None:
        best = min(per_step["torch_autograd"], per_step["torch_manual"])
        which = "autograd" if best == per_step["torch_autograd"] else "manual"
        rows.append(Metric(NAME, "speed-up vs torch loop (faster of autograd/manual)",
                           best / per_step["gflow"], "x", 1.5, note=f"faster torch: {which}"))
        for k in ("torch_autograd", "torch_manual"):
            rows.append(Metric(NAME, f"{k} GFLOP/s", flops / per_step[k] / 1e9, "GFLOP/s"))
        if peak.get("torch"):
            rows.append(Metric(NAME, "torch loop fraction of torch.mm peak",
                               flops / best / 1e9 / peak["torch"], "",
                               note=f"torch.mm peak {peak['torch']:.0f} GFLOP/s"))
    else:
        rows.append(Metric(NAME, "speed-up vs torch loop",
                           "not available (torch missing, or a --device run)"))
    vals = np.array(list(losses.values()))
    rel = float(np.max(np.abs(vals - vals[0])) / abs(vals[0]))
    rows.append(Metric(NAME, "final losses agree (max rel. diff)", rel, "", 1e-3, upper=True,
                       note="same math on all sides; f32 summation order differs"))
    details["final_loss_max_rel_diff"] = rel
    return {"rows": rows, "details": details}

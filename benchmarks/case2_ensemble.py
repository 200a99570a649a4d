"""Case 2: a 64-member ensemble of small nets (n=256, d=16, m=128, float32), GD.

Members differ in their initialization (``jax.random.split``), share the data, and take the
same K steps. gflow's ``gflow.simulate_ensemble`` (stacked parameters with a leading member
axis) against (a) the measured f32 GEMM peak, (b) a batched torch loop (all members in one
``einsum``/``bmm`` with autograd: the sum of the members' losses has each member's
gradient), (c) the naive JAX peer: a jitted ``jax.vmap`` of a hand-written optax
``lax.fori_loop`` over the members, and (d) for context, a Python loop of ``gflow.simulate``
over the members. Targets (issue 8): >= 0.3 of peak, >= 3x the batched torch loop.

Also a GF ensemble: the same members under adaptive Tsit5 (``simulate_ensemble`` with
``GradientFlow``; each member keeps its own step size) against E sequential
``gflow.simulate`` solves (one compile, E calls).
"""

from __future__ import annotations

import numpy as np

import gflow

from ._common import MIN_TIME, Metric, measure, sizes, torch_threads
from ._problem import jax_loss, problem, torch_loss

NAME = "2 ensemble GD"
NAME_GF = "2 ensemble GF"
GF_T1, GF_RTOL, GF_ATOL = 20.0, 1e-4, 1e-6
FULL = {"members": 64, "n": 256, "d": 16, "m": 128, "steps": 50, "repeats": 3}
QUICK = {"members": 8, "n": 64, "d": 8, "m": 32, "steps": 20, "repeats": 2}
#: ``--device``: 256 members, E 4nm(d+1) = 35 GFLOP per step (the sequential loops stay short)
DEVICE = {"members": 256, "n": 1024, "d": 64, "m": 512, "steps": 50, "repeats": 3}
LR = 0.1


def _member(params, i):
    return gflow.TwoLayerParams(W=params.W[i], b=None, a=params.a[i])


def gflow_ensemble(p, lr, K):
    """``gflow.simulate_ensemble`` if it exists (else ``None``); result: final losses (E,)."""
    sim = getattr(gflow, "simulate_ensemble", None)
    if sim is None:
        return None
    t1 = K * lr
    save = np.array([0.0, t1])

    def fn():
        res = sim(p.net, p.params0, p.data, loss="squared", dynamics=gflow.GD(lr=lr), t1=t1,
                  save=save, observe=("loss",))
        return _final_losses(res, p.members)

    return fn


def _final_losses(res, E):
    """Final loss of each member from a ``simulate_ensemble`` result (array-like or xarray)."""
    loss = res["loss"]
    if hasattr(loss, "isel") and "time" in getattr(loss, "dims", ()):
        return np.asarray(loss.isel(time=-1)).reshape(-1)
    arr = np.asarray(loss)
    return (arr[:, -1] if arr.shape[0] == E else arr[-1]).reshape(-1)


def gflow_loop(p, lr, K):
    """A Python loop of ``gflow.simulate`` over members (one compile, E calls)."""
    t1 = K * lr
    save = np.array([0.0, t1])

    def fn():
        return np.array([
            float(gflow.simulate(p.net, _member(p.params0, i), p.data, loss="squared",
                                 dynamics=gflow.GD(lr=lr), t1=t1, save=save,
                                 observe=("loss",))["loss"][-1])
            for i in range(p.members)])

    return fn


def vmap_peer(p, lr, K):
    """Naive JAX: one member's optax loop in ``lax.fori_loop``, ``jax.jit(jax.vmap(...))``."""
    import jax
    import optax

    X, y = jax.numpy.asarray(p.X), jax.numpy.asarray(p.y)
    opt = optax.sgd(lr)

    def train(params):
        def step(_, c):
            params, state = c
            g = jax.grad(jax_loss)(params, X, y)
            updates, state = opt.update(g, state, params)
            return optax.apply_updates(params, updates), state

        params, _ = jax.lax.fori_loop(0, K, step, (params, opt.init(params)))
        return jax_loss(params, X, y)

    train_all = jax.jit(jax.vmap(train))
    params0 = (jax.numpy.asarray(p.W0), jax.numpy.asarray(p.a0))

    def fn():
        return np.asarray(train_all(params0))

    return fn


def torch_batched(torch, p, lr, K):
    """All members at once in torch: ``einsum`` + ``bmm``, autograd, Python loop over steps."""
    X, y = torch.from_numpy(p.X), torch.from_numpy(p.y)

    def fn():
        W = torch.from_numpy(p.W0).clone().requires_grad_(True)
        a = torch.from_numpy(p.a0).clone().requires_grad_(True)
        for _ in range(K):
            gW, ga = torch.autograd.grad(torch_loss(torch, X, y, W, a), (W, a))
            with torch.no_grad():
                W -= lr * gW
                a -= lr * ga
        with torch.no_grad():
            return np.array([float(torch_loss(torch, X, y, W[i], a[i]))
                             for i in range(p.members)])

    return fn


def run(peak: dict, *, quick: bool = False, out=None) -> dict:
    s = sizes(FULL, QUICK, DEVICE, quick)
    E, n, d, m, K, R = s["members"], s["n"], s["d"], s["m"], s["steps"], s["repeats"]
    p = problem(n, d, m, members=E)
    flops = p.flops
    rows, det, per_step, losses = [], {"sizes": s, "lr": LR, "flops_per_step": flops}, {}, {}
    note = f"E={E}, n={n}, d={d}, m={m}, {K} steps; E*4nm(d+1)={flops / 1e6:.3g} MFLOP/step"

    def bench(label, fn, repeats=R):
        t = measure(fn, repeats=repeats, min_time=MIN_TIME)
        per_step[label] = t.min / K
        losses[label] = np.asarray(t.result)
        det[label] = t.asdict() | {"s_per_step": t.min / K, "gflops": flops * K / t.min / 1e9}
        return t

    ens = gflow_ensemble(p, LR, K)
    if ens is not None:
        try:
            bench("gflow_ensemble", ens)
        except Exception as e:  # noqa: BLE001 - a new API: report, do not crash the suite
            det["gflow_ensemble_error"] = f"{type(e).__name__}: {e}"
            ens = None
    bench("jax_vmap", vmap_peer(p, LR, K))
    bench("gflow_simulate_loop", gflow_loop(p, LR, K), repeats=min(R, 2))
    torch = torch_threads()
    if torch is not None:
        bench("torch_batched", torch_batched(torch, p, LR, K), repeats=min(R, 2))

    if ens is not None:
        gf = flops / per_step["gflow_ensemble"] / 1e9
        rows.append(Metric(NAME, "gflow.simulate_ensemble GFLOP/s", gf, "GFLOP/s", note=note))
        rows.append(Metric(NAME, "gflow ensemble compile (first call - min)",
                           det["gflow_ensemble"]["compile_s"], "s"))
        rows.append(Metric(NAME, "fraction of jnp.dot peak", gf / peak["jax"], "", 0.3))
        if torch is not None:
            rows.append(Metric(NAME, "speed-up vs torch batched",
                               per_step["torch_batched"] / per_step["gflow_ensemble"], "x", 3.0))
        rows.append(Metric(NAME, "speed-up vs jax.vmap peer",
                           per_step["jax_vmap"] / per_step["gflow_ensemble"], "x"))
        rows.append(Metric(NAME, "speed-up vs loop of gflow.simulate",
                           per_step["gflow_simulate_loop"] / per_step["gflow_ensemble"], "x"))
    else:
        why = det.get("gflow_ensemble_error", "gflow.simulate_ensemble does not exist yet")
        rows.append(Metric(NAME, "gflow.simulate_ensemble", f"not available ({why})"[:160],
                           note=note))
    for label in ("jax_vmap", "gflow_simulate_loop", "torch_batched"):
        if label in per_step:
            rows.append(Metric(NAME, f"{label} GFLOP/s", flops / per_step[label] / 1e9,
                               "GFLOP/s"))
    rows += _gf_rows(p, R)
    ref = losses["jax_vmap"]
    rel = max(float(np.max(np.abs(v - ref) / np.abs(ref))) for v in losses.values())
    rows.append(Metric(NAME, "final losses agree (max rel. diff, per member)", rel, "", 1e-3,
                       upper=True))
    return {"rows": rows, "details": det}


def _gf_rows(p, repeats) -> list:
    """GF ensemble vs sequential GF solves of the same members."""
    dyn = gflow.GradientFlow(rtol=GF_RTOL, atol=GF_ATOL)
    save = np.array([0.0, GF_T1])

    def ensemble():
        res = gflow.simulate_ensemble(p.net, p.params0, p.data, dynamics=dyn, t1=GF_T1,
                                      save=save, observe=("loss",))
        return np.asarray(res["loss"][:, -1])

    def sequential():
        return np.array([float(gflow.simulate(p.net, _member(p.params0, i), p.data,
                                              dynamics=dyn, t1=GF_T1, save=save)["loss"][-1])
                         for i in range(p.members)])

    te = measure(ensemble, repeats=repeats, min_time=MIN_TIME)
    ts = measure(sequential, repeats=min(repeats, 2), min_time=MIN_TIME)
    note = f"E={p.members}, Tsit5+PI rtol={GF_RTOL}, atol={GF_ATOL}, T={GF_T1}"
    rel = float(np.max(np.abs(np.asarray(te.result) - ts.result) / np.abs(ts.result)))
    return [
        Metric(NAME_GF, "gflow.simulate_ensemble (GF) time", te.min, "s", note=note),
        Metric(NAME_GF, "E sequential gflow.simulate (GF) time", ts.min, "s"),
        Metric(NAME_GF, "speed-up vs sequential solves", ts.min / te.min, "x"),
        Metric(NAME_GF, "final losses agree (max rel. diff)", rel, "", 1e-3, upper=True),
    ]

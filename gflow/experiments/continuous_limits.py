"""Continuous-time counterparts of discrete optimizers, measured against them on one time axis.

One two-layer tanh net on teacher data, every dynamics on the axis t = k * lr, compared at
time ``t1`` for the step sizes ``lrs``:

- **GD vs its modified flows** (:class:`gflow.ModifiedFlow`, orders 1 = GF, 2 = Barrett &
  Dherin's implicit gradient regularization, 3): the global error
  ``|theta_GD(t1) - theta_p(t1)|`` should fall like ``lr^p`` (backward error analysis;
  Hairer, Lubich & Wanner IX.1).
- **SGD vs its stochastic modified equations** (:class:`gflow.SME`, orders 1 and 2; Li, Tai
  & E 2017/2019): ``paths`` SGD runs with a fresh batch per step against ``paths`` SME paths
  (each one compiled ensemble); the weak error of the mean final loss, ``|E L_SGD - E L_SME|``,
  should fall like ``lr`` (order 1) and ``lr^2`` (order 2), and the spread (std of the final
  loss over paths) should match. Every difference carries its Monte-Carlo standard error; one
  within ``RESOLVED`` = 3 of them is unresolved: shown as an upper bound (its value + 3 s.e.),
  never dropped, and left out of the fit.
- **Adam vs its ODE** (:class:`gflow.AdamFlow`; Barakat & Bianchi 2021): ``optax.adam(lr,
  1 - a lr, 1 - b lr)`` against the ODE of rates ``a, b``: error ``lr^1``.

Each slope comes with its 95 % interval (:func:`gflow.stats.loglog_fit`) and a verdict:
consistent with the predicted order (the interval within ``SLACK`` = 0.1 of it: the orders
are asymptotic, and the next term bends the line at the largest step sizes), not, or
inconclusive (fewer than 2 resolved step sizes, or an interval wider than 1).
It computes in float64 (``dtype``): orders 2 and 3 fall below float32's rounding.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gflow
from gflow import stats

from . import Result, Settings, claim, setting

#: measured wall time of ``gflow run continuous_limits`` with the defaults
RUN_TIME = "about 180 s of CPU time on 2 cores (135 s wall, load 2-4)"
CITE = ("Barrett & Dherin, ICLR 2021; Li, Tai & E, ICML 2017 / JMLR 2019; Barakat & Bianchi, "
        "SIAM J. Optim. 2021")


@dataclasses.dataclass(frozen=True)
class Config(Settings):
    """Settings of the continuous-limits comparison.

    Attributes:
        seed: seed of the data, the init and the SGD / SME paths.
        n: training points (teacher data on the sphere).
        d: input dimension.
        width: neurons of the tanh student.
        t1: the time at which every dynamics is compared (a multiple of every lr).
        lrs: step sizes, largest first.
        orders: orders of the modified flows of GD.
        rtol: relative tolerance of the flows' controller (absolute: rtol / 100).
        batch_size: SGD's batch size (a fresh batch per step).
        paths: SGD runs and SME paths per step size.
        sme_substeps: Euler-Maruyama steps per SGD step for the SME of order 1; order 2
            takes sme_substeps x (largest lr / lr), so its solver error shrinks like lr^2.
        adam_a: Adam's first-moment rate a = (1 - b1) / lr.
        adam_b: Adam's second-moment rate b = (1 - b2) / lr.
        dtype: float64 (default: orders 2 and 3 fall below float32's rounding at small lr)
            or float32 (then rtol must be >= 1e-6).
    """

    seed: int = 0
    n: int = 32
    d: int = 4
    width: int = 8
    t1: float = setting(1.6, gt=0)
    lrs: tuple[float, ...] = setting((0.2, 0.1, 0.05, 0.025), gt=0)
    orders: tuple[int, ...] = setting((1, 2, 3), choices=(1, 2, 3))
    rtol: float = setting(1e-10, gt=0)
    batch_size: int = setting(4, ge=1, le="n")
    paths: int = setting(1000, ge=2)
    sme_substeps: int = setting(4, ge=1)
    adam_a: float = setting(2.0, gt=0)
    adam_b: float = setting(0.2, gt=0)
    dtype: str = setting("float64", choices=("float64", "float32"))

    def __post_init__(self):
        super().__post_init__()
        k = [self.t1 / lr for lr in self.lrs]
        if any(abs(x - round(x)) > 1e-9 * x for x in k) or list(self.lrs) != sorted(
                self.lrs, reverse=True):
            raise ValueError(f"continuous_limits: lrs={self.lrs!r}: must fall and each divide "
                             f"t1={self.t1!r} (every dynamics is compared at t1).")
        if max(self.adam_a, self.adam_b) * self.lrs[0] >= 1:
            raise ValueError(f"continuous_limits: adam_a={self.adam_a!r}, adam_b="
                             f"{self.adam_b!r}: each times the largest lr ({self.lrs[0]!r}) "
                             "must be < 1 (Adam's betas 1 - a lr, 1 - b lr lie in (0, 1)).")
        if self.dtype == "float32" and self.rtol < 1e-6:
            raise ValueError(f"continuous_limits: rtol={self.rtol!r}: must be >= 1e-6 with "
                             "dtype=float32 (float32 resolves about 1e-7).")


def _members(x, M):
    return jax.tree.map(lambda v: jnp.broadcast_to(v, (M,) + v.shape), x)


def _flat(p):
    return np.concatenate([np.ravel(v) for v in jax.tree.leaves(p)])


#: a Monte-Carlo difference counts as measured once it exceeds this many standard errors
RESOLVED = 3.0


def _law(lrs, err, se=None):
    """The log-log fit of ``err`` vs lr through the differences that exceed ``RESOLVED``
    standard errors (``None`` if fewer than 2 do), and which do not."""
    err = np.asarray(err, float)
    unresolved = np.zeros(err.shape, bool) if se is None else err < RESOLVED * np.asarray(se)
    keep = ~unresolved
    if keep.sum() < 2:
        return None, unresolved
    return stats.loglog_fit(np.asarray(lrs)[keep], err[keep]), unresolved


#: slack on the predicted order: at the largest step sizes the next order of the series
#: bends the log-log line (GD vs its modified flows: fitted slopes p + 0.01 over lr 0.2-0.025)
SLACK = 0.1


#: the claims this experiment judges (``gflow report``): each error's slope in lr
CLAIMS = {f"gd_modified_order{p}": f"GD with step lr stays within O(lr^{p}) of its order-{p} "
          "modified flow over a fixed time (backward error analysis; order 2: Barrett & "
          "Dherin's implicit gradient regularization flow)." for p in (1, 2, 3)} | {
          f"sgd_sme{p}": f"SGD's expected loss stays within O(lr^{p}) of the order-{p} stochastic "
          "modified equation's (weak order, Li, Tai & E)." for p in (1, 2)} | {
          "adam_ode": "Adam with lr and betas 1 - a lr, 1 - b lr tends to its ODE at O(lr) "
          "(Barakat & Bianchi)."}
#: the runs of ``gflow report`` per level
REPORT = {"smoke": [("", dict(lrs=(0.2, 0.1, 0.05), t1=0.4, paths=64, orders=(1, 2)))],
          "quick": [("", {})], "full": [("", dict(paths=4000))]}


def _claim(text: str, what: str) -> dict:
    """A :func:`_verdict` text as a claim's verdict; ``what`` says what was measured."""
    v = "holds" if text.startswith("consistent") else text.partition(":")[0]
    return claim(v, text.partition(": ")[2], what)


def _verdict(law, order) -> str:
    if law is None:
        return "inconclusive: fewer than 2 step sizes resolve the difference"
    if not (np.isfinite(law.lo) and np.isfinite(law.hi)) or law.hi - law.lo > 1:
        return (f"inconclusive: slope {law.exponent:.2f} [{law.lo:.2f}, {law.hi:.2f}], an "
                "interval wider than 1")
    text = f"slope {law.exponent:.2f} [{law.lo:.2f}, {law.hi:.2f}]"
    if law.lo - SLACK <= order <= law.hi + SLACK:
        return f"consistent: {text} is within {SLACK} of the predicted {order}"
    return f"does not hold: {text} is further than {SLACK} from the predicted {order}"


def run(cfg: Config, *, progress: bool = False) -> Result:
    with jax.enable_x64(cfg.dtype == "float64"):
        return _run(cfg, progress)


def _run(cfg: Config, progress: bool) -> Result:
    import xarray as xr

    k_data, k_init, k_paths = jax.random.split(jax.random.key(cfg.seed), 3)
    data = gflow.data.teacher(k_data, cfg.n, cfg.d, 2)
    net = gflow.TwoLayer(cfg.width, "tanh", "ntk", bias=False)
    p0 = gflow.init.gaussian(k_init, net, cfg.d)
    lrs, L = np.asarray(cfg.lrs), len(cfg.lrs)
    kw = dict(t1=cfg.t1, save=[0.0, cfg.t1], throw=True)
    tol = dict(rtol=cfg.rtol, atol=cfg.rtol / 100)
    P = _members(p0, L)
    with gflow.progress.stage("GD"):
        gd = gflow.simulate_ensemble(net, P, data, dynamics=gflow.GD(lrs), **kw).params_final
    gd_err = np.zeros((len(cfg.orders), L))
    for i, order in enumerate(cfg.orders):
        with gflow.progress.stage(f"modified flow, order {order}"):
            mf = gflow.simulate_ensemble(net, P, data, progress=progress, **kw,
                                         dynamics=gflow.ModifiedFlow(lrs, order, **tol))
        for j in range(L):
            pick = lambda p, j=j: jax.tree.map(lambda x: x[j], p)  # noqa: E731
            gd_err[i, j] = np.linalg.norm(_flat(pick(mf.params_final)) - _flat(pick(gd)))

    M, keys = cfg.paths, jax.random.split(k_paths, cfg.paths)
    PM = _members(p0, M)
    final = {name: np.zeros((L, M)) for name in ("sgd", "sme1", "sme2")}
    for j, lr in enumerate(cfg.lrs):
        dyns = {"sgd": gflow.SGD(lr, cfg.batch_size, keys, sampling="step"),
                "sme1": gflow.SME(lr, cfg.batch_size, keys, 1, cfg.sme_substeps),
                "sme2": gflow.SME(lr, cfg.batch_size, keys, 2,
                                  cfg.sme_substeps * round(cfg.lrs[0] / lr))}
        for name, dyn in dyns.items():
            with gflow.progress.stage(f"{name}, lr {lr:g} ({j + 1} of {L})"):
                tr = gflow.simulate_ensemble(net, PM, data, dynamics=dyn, **kw)
            final[name][j] = np.asarray(tr["loss"])[:, -1]
    mean = {k: v.mean(1) for k, v in final.items()}
    se = {k: v.std(1, ddof=1) / np.sqrt(M) for k, v in final.items()}

    adam_err = np.zeros(L)
    flow = gflow.AdamFlow(cfg.adam_a, cfg.adam_b, **tol)
    with gflow.progress.stage("Adam's ODE"):
        ode = _flat(gflow.simulate(net, p0, data, dynamics=flow, **kw).params_final)
    for j, lr in enumerate(cfg.lrs):
        opt = optax.adam(lr, 1 - cfg.adam_a * lr, 1 - cfg.adam_b * lr)
        tr = gflow.simulate(net, p0, data, dynamics=gflow.Optax(opt, lr), **kw)
        adam_err[j] = np.linalg.norm(_flat(tr.params_final) - ode)

    summary: dict = {"lrs": list(cfg.lrs), "paths": M, "cite": CITE}
    for i, order in enumerate(cfg.orders):
        law, _ = _law(lrs, gd_err[i])
        summary[f"gd_vs_modified_order{order}_slope"] = law and [law.exponent, law.lo, law.hi]
        summary[f"gd_vs_modified_order{order}_verdict"] = _verdict(law, order)
    for order in (1, 2):
        diff = np.abs(mean["sgd"] - mean[f"sme{order}"])
        dse = np.hypot(se["sgd"], se[f"sme{order}"])
        law, unresolved = _law(lrs, diff, dse)
        summary[f"sgd_vs_sme{order}_weak_error"] = diff.tolist()
        summary[f"sgd_vs_sme{order}_weak_error_se"] = dse.tolist()
        summary[f"sgd_vs_sme{order}_unresolved"] = unresolved.tolist()
        summary[f"sgd_vs_sme{order}_slope"] = law and [law.exponent, law.lo, law.hi]
        summary[f"sgd_vs_sme{order}_verdict"] = _verdict(law, order)
        summary[f"sgd_vs_sme{order}_spread_ratio"] = (final[f"sme{order}"].std(1)
                                                      / final["sgd"].std(1)).tolist()
    law, _ = _law(lrs, adam_err)
    summary["adam_vs_ode_slope"] = law and [law.exponent, law.lo, law.hi]
    summary["adam_vs_ode_verdict"] = _verdict(law, 1)
    what = f"slope (95 %) of the error vs lr = {list(cfg.lrs)}, t = {cfg.t1:g}"
    summary["claims"] = {c: _claim(summary.get(k, f"inconclusive: order {c[-1]} not run"), what
                                   + (f", {M} SGD runs and SME paths" if "sme" in k else ""))
                         for c, k in zip(CLAIMS, [f"gd_vs_modified_order{p}_verdict" for p in (
                             1, 2, 3)] + [f"sgd_vs_sme{p}_verdict" for p in (1, 2)]
                             + ["adam_vs_ode_verdict"], strict=True)}

    lr = {"lr": list(cfg.lrs)}  # one group per comparison, each at the time t1
    ds = {"modified_flows": xr.Dataset({"gd_error": (("order", "lr"), gd_err)},
                                       coords={"order": list(cfg.orders)} | lr),
          "sme": xr.Dataset({"final_loss": (("dynamics", "lr", "path"), np.stack(
              [final[k] for k in final]))}, coords={"dynamics": list(final)} | lr),
          "adam_flow": xr.Dataset({"adam_error": (("lr",), adam_err)}, coords=lr)}
    for g in ds.values():
        g.attrs["t1"] = cfg.t1
    return Result(summary=summary, dataset=ds)


def figures(tree, cfg: Config) -> dict:
    from gflow.plot import caption, panels, style

    ds = tree["modified_flows"]
    lrs = ds["lr"].values
    fig, axes = panels(3, size=(4.6, 3.8))
    for i, order in enumerate(ds["order"].values):
        e = ds["gd_error"].values[i]
        axes[0].plot(lrs, e, "o-", color=f"C{i}", label=f"order {order}")
        axes[0].plot(lrs, e[-1] * (lrs / lrs[-1]) ** order, ":", color=f"C{i}")
    style(axes[0], x="log", y="log", xlabel="lr", ylabel=r"$|\theta_{GD}(t_1)-\theta_p(t_1)|$",
          title="GD vs modified flows (dotted: lr^p)")
    f = tree["sme"]["final_loss"]
    M = f.sizes["path"]
    sgd = f.sel(dynamics="sgd")
    for i, name in enumerate(("sme1", "sme2")):
        diff = np.abs(sgd.mean("path") - f.sel(dynamics=name).mean("path")).values
        se = np.hypot(sgd.std("path"), f.sel(dynamics=name).std("path")).values / np.sqrt(M)
        res = diff >= RESOLVED * se
        axes[1].errorbar(lrs[res], diff[res], yerr=se[res], fmt="o-", color=f"C{i}",
                         label=f"{name}: resolved (bars: 1 s.e.)")
        axes[1].plot(lrs[~res], diff[~res] + RESOLVED * se[~res], "v", color=f"C{i}",
                     mfc="none", label=f"{name}: within {RESOLVED:g} s.e. (upper bound)")
    style(axes[1], x="log", y="log", xlabel="lr", ylabel=r"$|E L_{SGD} - E L_{SME}|$ at $t_1$",
          title=f"SGD vs SME, {M} paths each", legend=6)
    adam = tree["adam_flow"]["adam_error"].values
    axes[2].plot(lrs, adam, "o-", label="optax Adam vs AdamFlow")
    axes[2].plot(lrs, adam[-1] * lrs / lrs[-1], ":", label="lr^1")
    style(axes[2], x="log", y="log", xlabel="lr", ylabel=r"$|\theta_{Adam}-\theta_{ODE}|$",
          title="Adam vs its ODE")
    text = (f"two-layer tanh, m={cfg.width}, teacher data n={cfg.n}, d={cfg.d}; compared at "
            f"t1={cfg.t1} (t = step x lr); SGD batch {cfg.batch_size}, fresh per step. {CITE}")
    return {"continuous_limits": caption(fig, text, title="Discrete optimizers against their "
                                         "continuous-time counterparts")}

"""Discrete dynamics -- GD, SGD and any optax optimizer -- on the gradient-flow time axis.

The iterate after ``k`` steps sits at time ``t_k = sum_{i<k} lr_i`` (``k * lr`` for a
constant learning rate), so discrete and continuous trajectories share one axis.
Requested save times are rounded to the nearest step; the actual times are reported.
Steps run in a ``lax.while_loop`` per save point, inside a ``lax.while_loop`` over save
points (:meth:`DiscreteDynamics.advance`); after a stop the remaining steps are skipped,
not computed. A stop (:mod:`gflow.stops`) is the first iterate that meets its condition,
which is exact: there is nothing between iterates to locate it in. A new discrete
dynamics subclasses :class:`DiscreteDynamics` and overrides its hooks (see
:mod:`gflow.momentum`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _status, inputs, stops
from ._tree import bcast, tree_finite, tree_norm
from .dynamics import AbstractDynamics, Plan, blank_saves, record
from .observe import at_stop
from .times import LogTimes, resolve_times

__all__ = ["GD", "SGD", "DiscreteDynamics", "Minibatches", "Optax", "check_key", "check_lr"]

_MAX_SCHEDULE_STEPS = 10**8


def check_lr(lr, owner: str):
    """lr: a number > 0, a schedule ``step -> lr``, or (ensembles) an (M,) array of them."""
    if callable(lr):
        return
    if isinstance(lr, bool) or not isinstance(lr, int | float | np.floating | np.integer
                                              | np.ndarray | jax.Array):
        raise ValueError(f"{owner}: lr must be a number > 0 or a schedule step -> lr, got {lr!r}.")
    arr = np.asarray(lr)
    if arr.ndim > 1 or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{owner}: lr must be a number or an (M,) array per member, got {lr!r}.")
    if not np.all(np.isfinite(arr) & (arr > 0)):
        raise ValueError(f"{owner}: lr must be a finite number > 0, got {lr!r}.")


def check_key(key, owner: str, example: str):
    """key: a PRNG key (typed, or raw uint32 of shape (..., 2)), or (ensembles) an (M,)
    array of them."""
    if not (isinstance(key, jax.Array) and (
            jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
            or (key.dtype == jnp.uint32 and key.shape[-1:] == (2,)))):
        raise ValueError(f"{owner}: key must be a PRNG key, e.g. {example}, got {key!r}.")


class Minibatches(eqx.Module):
    """Minibatches without replacement: a fresh permutation each epoch (last partial
    batch dropped), drawn from ``key`` folded with the epoch index; with ``per_step``,
    every step draws its own batch (the first ``batch_size`` of a permutation drawn from
    ``key`` folded with the step index), independent of the other steps'."""

    key: Any
    batch_size: int = eqx.field(static=True)
    per_step: bool = eqx.field(static=True, default=False)

    def init(self, n):
        return jax.random.permutation(jax.random.fold_in(self.key, 0), n)

    def indices(self, perm, k, n):
        if self.per_step:
            return jax.random.permutation(jax.random.fold_in(self.key, k), n)[
                :self.batch_size], perm
        nb = n // self.batch_size
        b = k % nb
        perm = jax.lax.cond(
            (b == 0) & (k > 0),
            lambda: jax.random.permutation(jax.random.fold_in(self.key, k // nb), n),
            lambda: perm,
        )
        return jax.lax.dynamic_slice(perm, (b * self.batch_size,), (self.batch_size,)), perm

    def check(self, n):
        """Host side: refuse a batch larger than the ``n`` samples."""
        if self.batch_size > n:
            raise ValueError(f"SGD: batch_size={self.batch_size} exceeds the number of "
                             f"samples n={n}.")

    def value_and_grad(self, objective, params, perm, k):
        """Step ``k``'s ``(loss, gradient)`` on its minibatch, and the permutation."""
        idx, perm = self.indices(perm, k, objective.y.shape[0])
        return *objective.value_and_grad(params, idx), perm


class DiscreteDynamics(AbstractDynamics):
    """Base of the discrete dynamics: iterates ``theta_{k+1} = update(theta_k, g_k)`` on the
    time axis ``t_k = sum_{i<k} lr_i``, saved at the steps nearest the requested times.

    Subclasses have a field ``lr`` (a number > 0, a schedule ``step -> lr``, or in an
    ensemble an (M,) array) and may override the hooks :meth:`init_opt_state`,
    :meth:`update` (default: a gradient step) and :meth:`minibatches` (default: full
    batch). The state carries the parameters, the optimizer state, the step count, the
    minibatch permutation and the extra full-batch evaluations of stopping checks, so a run
    cut into segments takes exactly the steps of one run.
    """

    member_fields: ClassVar[tuple[str, ...]] = ("lr",)

    @property
    def kind(self) -> str:
        return "discrete"

    # -- hooks -------------------------------------------------------------------------
    def init_opt_state(self, params):
        """The optimizer state at the start (``None``: none)."""
        return None

    def update(self, objective, params, opt_state, k, g):
        """``(params, opt_state)`` after step ``k`` with gradient ``g``."""
        lr = self.lr_at(k)
        return jax.tree.map(lambda p, gi: p - lr * gi, params, g), opt_state

    def minibatches(self) -> Minibatches | None:
        """The batch sampler (``None``: full-batch gradients): ``init(n) -> state``,
        ``check(n)`` (host) and ``value_and_grad(objective, params, state, k) -> (loss,
        grad, state)``, as :class:`Minibatches` (or :class:`gflow.online.FreshBatches`)."""
        return None

    def lr_at(self, k):
        """The learning rate of step ``k``."""
        return self.lr(k) if callable(self.lr) else self.lr

    # -- the time grid -----------------------------------------------------------------
    def step_times(self, t1: float, lr=None) -> np.ndarray:
        """Times ``t_0 = 0, t_1, ..., t_K`` of the iterates, with ``t_K`` closest to ``t1``."""
        lr = self.lr if lr is None else lr
        if not callable(lr):
            K = int(round(t1 / float(lr)))
            if K == 0:  # rounding to the nearest step would run none (or one, past t1)
                raise ValueError(f"t1={t1:g} is less than half a step of lr={float(lr):g}: no "
                                 "step ends near t1. Lower lr or raise t1.")
            if K > _MAX_SCHEDULE_STEPS:  # the grid alone would not fit in memory
                raise ValueError(f"t1 / lr = {t1 / float(lr):.3g} steps; at most "
                                 f"{_MAX_SCHEDULE_STEPS:.0e} are allowed: raise lr or lower t1.")
            return np.arange(K + 1, dtype=np.float64) * float(lr)
        lrs, total, k0, chunk = [], 0.0, 0, 4096
        while total < t1:
            if k0 > _MAX_SCHEDULE_STEPS:
                raise ValueError(f"lr schedule does not reach t1={t1} in {k0} steps.")
            v = np.asarray(jax.vmap(lr)(jnp.arange(k0, k0 + chunk)), dtype=np.float64)
            if not np.all(np.isfinite(v) & (v > 0)):
                raise ValueError("lr schedule must give finite values > 0 at every step.")
            lrs.append(v)
            total += v.sum()
            k0 += chunk
            chunk *= 2
        t = np.concatenate([[0.0], np.cumsum(np.concatenate(lrs))])
        K = int(np.searchsorted(t, t1))
        if K > 0 and abs(t[K - 1] - t1) <= abs(t[K] - t1):
            K -= 1
        if K == 0:
            raise ValueError(f"t1={t1:g} is less than half of the lr schedule's first step "
                             f"({t[1]:g}): no step ends near t1. Lower lr or raise t1.")
        return t[: K + 1]

    def save_times(self, t1: float, save) -> np.ndarray:
        """The times at which ``save`` (as for ``simulate``) lands for this dynamics: each
        requested time rounded to a distinct step. Saving GF at these times too gives a
        point-by-point comparison."""
        grid = self.step_times(t1)
        return grid[_save_steps(grid, resolve_times(save, t1))]

    def default_save(self, t1: float) -> LogTimes:
        """``LogTimes(100)``, or one save per iterate when the run has fewer steps."""
        lr = self.lr if callable(self.lr) else float(np.max(self.lr))
        return LogTimes(min(100, len(self.step_times(t1, lr))))

    def _member_lrs(self, members: int | None):
        """Per-member learning rates (an ensemble may give ``lr`` as an (M,) array)."""
        if callable(self.lr) or np.ndim(self.lr) == 0:
            return None
        lrs = np.asarray(self.lr, dtype=np.float64)
        if members is None or lrs.shape != (members,):
            raise ValueError(f"lr has shape {lrs.shape}; per-member learning rates need shape "
                             f"(members,) = ({members},) in simulate_ensemble.")
        if not np.all(np.isfinite(lrs) & (lrs > 0)):
            raise ValueError("every per-member lr must be a finite number > 0.")
        return lrs

    # -- the protocol ------------------------------------------------------------------
    def plan(self, ts, t1, *, n, dtype, members=None) -> Plan:
        """The step index of every save ((S,), or (M, S) for per-member lrs); this dynamics
        with a traced lr (changing its value does not recompile)."""
        batch = self.minibatches()
        if batch is not None:
            batch.check(n)
        lrs = self._member_lrs(members)
        if lrs is None:
            grids = [self.step_times(t1)]
            steps = _save_steps(grids[0], ts)
        else:
            grids = [self.step_times(t1, float(lr)) for lr in lrs]
            steps = np.stack([_save_steps(g, ts) for g in grids])
        dyn = self if callable(self.lr) else eqx.tree_at(
            lambda d: d.lr, self, jnp.asarray(self.lr, dtype))
        return Plan(dyn, steps, (steps, grids))

    def report(self, out, info):
        """Map step counts back to times; mark saves after a stop as missing (NaN)."""
        steps, grids = info
        k_stop = np.asarray(out.pop("k_stop"))
        if k_stop.ndim == 0:  # a single run
            out["ts"], out["t_stop"] = grids[0][steps], grids[0][k_stop]
            valid = steps <= k_stop
        else:  # members: shared or per-member (lr) grids
            if len(grids) == 1:
                grids = grids * len(k_stop)
            out["ts"] = (grids[0][steps] if steps.ndim == 1 else
                         np.stack([g[s] for g, s in zip(grids, steps, strict=True)]))
            out["t_stop"] = np.array([g[k] for g, k in zip(grids, k_stop, strict=True)])
            valid = np.broadcast_to(steps, (len(k_stop), steps.shape[-1])) <= k_stop[:, None]
        out["obs"] = {k: np.where(bcast(valid, x), x, np.nan) for k, x in out["obs"].items()}
        extra = np.asarray(out["stats"].pop("extra_evals"))
        out["stats"] = {"num_steps": k_stop, "grad_evals": k_stop + extra}
        if k_stop.ndim == 0:
            out["stats"] = {k: int(v) for k, v in out["stats"].items()}
        return out

    def init(self, problem, params0):
        steps = problem.grid
        batch = self.minibatches()
        obs, snaps = blank_saves(problem, params0)
        zero = jnp.zeros((), steps.dtype)
        return {"params": params0, "opt_state": self.init_opt_state(params0), "k": zero,
                "status": jnp.asarray(_status.COMPLETED, jnp.int32),
                "batch_state": None if batch is None else batch.init(problem.objective.y.shape[0]),
                "extra": zero, "saves": jnp.zeros((), jnp.int32), "obs": obs, "snaps": snaps}

    def advance(self, problem, state, until):
        objective, steps = problem.objective, problem.grid
        stop_loss, stop_grad, cap = problem.stop_loss, problem.stop_grad, stops.loss_cap(problem)
        batch = self.minibatches()
        # SGD checks the stopping conditions on the full-batch loss and gradient
        full_check = batch is not None and not (stop_loss is None and stop_grad is None
                                                and cap is None)

        def step(c):
            params, k, extra = c["params"], c["k"], c["extra"]
            bstate = c["batch_state"]
            if batch is None:
                loss, g = objective.value_and_grad(params)
                gnorm = tree_norm(g) if stop_grad is not None else None
            else:
                loss, g, bstate = batch.value_and_grad(objective, params, bstate, k)
                if full_check:
                    if stop_grad is not None:
                        floss, fg = objective.value_and_grad(params)
                        gnorm = tree_norm(fg)
                    else:
                        floss, gnorm = objective.loss(params), None
                    extra = extra + 1
            check_loss = floss if full_check else loss
            new_params, new_state = self.update(objective, params, c["opt_state"], k, g)
            code = jnp.where(jnp.isfinite(loss) & tree_finite(new_params), _status.COMPLETED,
                             _status.DIVERGED)
            if stop_loss is not None:
                code = jnp.where(check_loss < stop_loss, _status.STOP_LOSS, code)
            if stop_grad is not None:
                code = jnp.where(gnorm < stop_grad, _status.STOP_GRAD, code)
            if cap is not None:  # growth: the first iterate whose loss exceeds the cap
                code = jnp.where(check_loss > cap, _status.DIVERGED, code)
            go = code == _status.COMPLETED
            keep = lambda a, b: jax.tree.map(lambda x, y: jnp.where(go, x, y), a, b)  # noqa: E731
            return c | {"params": keep(new_params, params),
                        "opt_state": keep(new_state, c["opt_state"]),
                        "k": jnp.where(go, k + 1, k), "status": code.astype(jnp.int32),
                        "batch_state": bstate, "extra": extra}

        def save(c):
            i = c["saves"]
            k_end = steps[i]
            c = jax.lax.while_loop(
                lambda c: (c["k"] < k_end) & (c["status"] == _status.COMPLETED), step, c)
            reached = c["status"] == _status.COMPLETED  # else it stopped before k_end
            c = c | {"obs": record(c["obs"], i, problem.observe(c["params"]), reached),
                     "saves": jnp.where(reached, i + 1, i)}
            if problem.save_params:
                c = c | {"snaps": record(c["snaps"], i, c["params"], reached)}
            if problem.progress:
                jax.debug.callback(_tick, i, steps.shape[0])
            return c

        return jax.lax.while_loop(
            lambda c: (c["saves"] < until) & (c["status"] == _status.COMPLETED), save, state)

    def finish(self, problem, state):
        completed = state["status"] == _status.COMPLETED
        if problem.progress:
            jax.debug.callback(_close_bar)
        return {"obs": state["obs"], "params": state["snaps"],
                "params_final": state["params"], "k_stop": state["k"],
                "obs_final": at_stop(problem.observer, state["params"], problem.ctx, completed),
                "status": state["status"], "stats": {"extra_evals": state["extra"]}}


def _save_steps(t_grid: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Step index nearest to each save time, made strictly increasing: where two save
    times round to the same step (log-spaced saves finer than lr), the later one moves
    to the next step, so every save is a distinct iterate."""
    K = len(t_grid) - 1
    if len(ts) > K + 1:
        raise ValueError(
            f"{len(ts)} save times but only {K + 1} iterates (t1 / lr = {K} steps): ask for "
            "fewer save times or a smaller lr."
        )
    idx = np.clip(np.searchsorted(t_grid, ts), 1, K)
    steps = np.where(np.abs(t_grid[idx - 1] - ts) <= np.abs(t_grid[idx] - ts), idx - 1, idx)
    for i in range(1, len(steps)):
        steps[i] = max(steps[i], steps[i - 1] + 1)
    for i in range(len(steps) - 1, -1, -1):
        steps[i] = min(steps[i], K - (len(steps) - 1 - i))
        if i + 1 < len(steps):
            steps[i] = min(steps[i], steps[i + 1] - 1)
    return steps


_BAR: list = []  # the progress bar of the run in progress (at most one)


def _tick(i, total):
    if not _BAR:
        from .progress import bar

        _BAR.append(bar("saves", total=int(total), unit="save"))
    _BAR[0].update(int(i) + 1 - _BAR[0].n)


def _close_bar():
    if _BAR:
        _BAR.pop().close()


class GD(DiscreteDynamics):
    """Full-batch gradient descent ``theta <- theta - lr grad L(theta)``.

    ``lr`` is a number > 0 or a schedule ``step -> lr`` (e.g. an optax schedule).
    """

    lr: Any

    def __check_init__(self):
        check_lr(self.lr, "GD")

    def describe(self) -> str:
        return f"GD(lr={self.lr})"


class SGD(DiscreteDynamics):
    """Minibatch SGD: batches of ``batch_size`` samples without replacement, from ``key``.

    ``sampling="epoch"`` (default, random reshuffling): a fresh permutation each epoch,
    cut into batches; ``"step"``: every step draws its own batch independently of the
    others -- the sampling the stochastic modified equation (:class:`gflow.SME`) describes.
    With ``batch_size == n`` it is GD (up to summation order).
    """

    lr: Any
    batch_size: int = eqx.field(static=True)
    key: Any
    sampling: str = eqx.field(static=True, default="epoch")

    member_fields: ClassVar[tuple[str, ...]] = ("lr", "key")

    def __check_init__(self):
        check_lr(self.lr, "SGD")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) \
                or self.batch_size < 1:
            raise ValueError(f"SGD: batch_size must be an integer >= 1, got {self.batch_size!r}.")
        check_key(self.key, "SGD", "SGD(lr, batch_size, key=jax.random.key(0))")
        if self.sampling not in ("epoch", "step"):
            raise ValueError(f"SGD: sampling must be 'epoch' (a permutation per epoch) or "
                             f"'step' (a batch per step), got {self.sampling!r}.")

    def describe(self) -> str:
        how = "" if self.sampling == "epoch" else f", sampling={self.sampling!r}"
        return f"SGD(lr={self.lr}, batch_size={self.batch_size}{how})"

    def minibatches(self) -> Minibatches:
        return Minibatches(self.key, self.batch_size, self.sampling == "step")


class Optax(DiscreteDynamics):
    """Any optax optimizer; ``lr`` is the time one step advances (``t_k = k * lr``),
    normally the optimizer's learning rate."""

    optimizer: optax.GradientTransformation = eqx.field(static=True)
    lr: Any

    def __check_init__(self):
        if not isinstance(self.optimizer, optax.GradientTransformation):
            raise ValueError(
                f"Optax: optimizer must be an optax.GradientTransformation, got {self.optimizer!r}."
            )
        check_lr(self.lr, "Optax")
        inputs.check_optax_lr(self.optimizer, self.lr)

    def describe(self) -> str:
        return f"Optax(lr={self.lr})"

    def init_opt_state(self, params):
        return self.optimizer.init(params)

    def update(self, objective, params, state, k, g):
        updates, state = self.optimizer.update(g, state, params)
        # e.g. weight decay must not move fixed leaves
        updates = objective.mask_grad(params, updates)
        return optax.apply_updates(params, updates), state

"""Discrete dynamics -- GD, SGD and any optax optimizer -- on the gradient-flow time axis.

The iterate after ``k`` steps sits at time ``t_k = sum_{i<k} lr_i`` (``k * lr`` for a
constant learning rate), so discrete and continuous trajectories share one axis.
Requested save times are rounded to the nearest step; the actual times are reported.
Steps run inside ``lax.while_loop`` segments between save points (one ``lax.scan``
over segments); after a stop the remaining steps are skipped, not computed.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _status, inputs
from ._tree import bcast, optional_array, tree_finite, tree_norm
from .observe import at_stop
from .times import resolve_times

__all__ = ["GD", "SGD", "Optax"]

_MAX_SCHEDULE_STEPS = 10**8


def _check_lr(lr, owner: str):
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


class _Discrete(eqx.Module):
    """Shared machinery: the time grid, the step loop and stopping."""

    @property
    def kind(self) -> str:
        return "discrete"

    # -- the time grid -----------------------------------------------------------------
    def _step_times(self, t1: float, lr=None) -> np.ndarray:
        """Times ``t_0 = 0, t_1, ..., t_K`` of the iterates, with ``t_K`` closest to ``t1``."""
        lr = self.lr if lr is None else lr
        if not callable(lr):
            K = max(1, int(round(t1 / float(lr))))
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
        return t[: max(K, 1) + 1]

    def save_times(self, t1: float, save) -> np.ndarray:
        """The times at which ``save`` (as for ``simulate``) lands for this dynamics: each
        requested time rounded to a distinct step. Saving GF at these times too gives a
        point-by-point comparison."""
        grid = self._step_times(t1)
        return grid[_save_steps(grid, resolve_times(save, t1))]

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

    def _lr_at(self, k):
        return self.lr(k) if callable(self.lr) else self.lr

    # -- per-dynamics hooks --------------------------------------------------------------
    def _init_state(self, params):
        return None

    def _update(self, objective, params, state, k, g):
        lr = self._lr_at(k)
        return jax.tree.map(lambda p, gi: p - lr * gi, params, g), state

    def _batch(self):
        return None  # full batch

    # -- host-side planning and finishing (shared by simulate and simulate_ensemble) ----
    def _plan(self, ts, t1, n: int, dtype, members: int | None = None):
        """``(dyn, save_steps, grids)``: this dynamics with a traced lr (changing its value
        does not recompile), the step index of every save ((S,) or (M, S) for per-member
        lrs) and the iterate times of each member."""
        batch = self._batch()
        if batch is not None and batch.batch_size > n:
            raise ValueError(f"SGD: batch_size={batch.batch_size} exceeds the number of "
                             f"samples n={n}.")
        lrs = self._member_lrs(members)
        if lrs is None:
            grid = self._step_times(t1)
            steps = _save_steps(grid, ts)
            grids = [grid]
        else:
            grids = [self._step_times(t1, float(lr)) for lr in lrs]
            steps = np.stack([_save_steps(g, ts) for g in grids])
        dyn = self if callable(self.lr) else eqx.tree_at(
            lambda d: d.lr, self, jnp.asarray(self.lr, dtype))
        return dyn, steps, grids

    def _finish(self, out, steps, grids):
        """Map step counts back to times; mark saves after a stop as missing (NaN)."""
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
        return out

    def _integrate(self, objective, params0, ts, t1, obs_fn, ctx, *, stop_loss, stop_grad,
                   save_params, progress):
        dyn, steps, grids = self._plan(ts, t1, objective.y.shape[0], objective.y.dtype)
        bar = _progress_bar(len(steps)) if progress else None
        try:
            out = _discrete_solve(
                dyn, objective, params0, jnp.asarray(steps), None, obs_fn, ctx,
                optional_array(stop_loss), optional_array(stop_grad), save_params=save_params,
                progress=bar is not None,
            )
            out = jax.device_get(out)
        finally:
            if bar is not None:
                bar.close()
                _BARS.pop()
        out = self._finish(out, steps, grids)
        out["stats"] = {k: int(v) for k, v in out["stats"].items()}
        return out


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


_BARS: list = []


def _progress_bar(total):
    import tqdm

    bar = tqdm.tqdm(total=total, delay=2.0, desc="saves", unit="save")
    _BARS.append(bar)
    return bar


def _tick(s):
    if _BARS:
        _BARS[-1].update(int(s) + 1 - _BARS[-1].n)


def discrete_solve(dyn: _Discrete, objective, params0, save_steps, t1, obs_fn, ctx, stop_loss,
                   stop_grad, *, save_params, progress, carry0=None, return_carry=False):
    """Steps of one discrete run (pure: jit/vmap/shard it); ``t1`` is implied by the
    save steps and unused, kept for a signature shared with ``gf_solve``.

    ``carry0``: ``None`` (start at step 0 from ``params0``) or the ``carry`` a previous
    call returned (``return_carry=True``): a dict with the parameters, optimizer state,
    step count, minibatch permutation and extra evaluations, so a run continues in
    segments (``save_steps`` are absolute step indices) and takes exactly the steps one
    call would take.
    """
    batch = dyn._batch()
    full_check = batch is not None and (stop_loss is not None or stop_grad is not None)
    n = objective.y.shape[0]

    def step(c):
        params, state, k, code, bstate, extra = c
        if batch is None:
            loss, g = objective.value_and_grad(params)
            gnorm = tree_norm(g) if stop_grad is not None else None
        else:
            idx, bstate = batch.indices(bstate, k, n)
            loss, g = objective.value_and_grad(params, idx)
            if full_check:
                if stop_grad is not None:
                    floss, fg = objective.value_and_grad(params)
                    gnorm = tree_norm(fg)
                else:
                    floss, gnorm = objective.loss(params), None
                extra = extra + 1
        check_loss = floss if full_check else loss
        new_params, new_state = dyn._update(objective, params, state, k, g)
        new_code = jnp.where(jnp.isfinite(loss) & tree_finite(new_params), _status.COMPLETED,
                             _status.DIVERGED)
        if stop_loss is not None:
            new_code = jnp.where(check_loss < stop_loss, _status.STOP_LOSS, new_code)
        if stop_grad is not None:
            new_code = jnp.where(gnorm < stop_grad, _status.STOP_GRAD, new_code)
        go = new_code == _status.COMPLETED
        params = jax.tree.map(lambda a, b: jnp.where(go, a, b), new_params, params)
        state = jax.tree.map(lambda a, b: jnp.where(go, a, b), new_state, state)
        return params, state, jnp.where(go, k + 1, k), new_code, bstate, extra

    def segment(c, s_and_k):
        s, k_end = s_and_k
        c = jax.lax.while_loop(lambda c: (c[2] < k_end) & (c[3] == _status.COMPLETED), step, c)
        obs = obs_fn(c[0], ctx)
        if progress:
            jax.debug.callback(_tick, s)
        return c, ((obs, c[0]) if save_params else obs)

    if carry0 is None:
        bstate0 = None if batch is None else batch.init(n)
        c0 = (params0, dyn._init_state(params0), jnp.asarray(0, save_steps.dtype),
              jnp.asarray(_status.COMPLETED), bstate0, jnp.asarray(0, save_steps.dtype))
    else:
        c0 = (carry0["params"], carry0["opt_state"], jnp.asarray(carry0["k"], save_steps.dtype),
              jnp.asarray(_status.COMPLETED), carry0["batch_state"],
              jnp.asarray(carry0["extra"], save_steps.dtype))
    c, ys = jax.lax.scan(segment, c0, (jnp.arange(save_steps.shape[0]), save_steps))
    obs, params = ys if save_params else (ys, None)
    params_final, opt_state, k, code, bstate, extra = c
    obs_final = at_stop(obs_fn, params_final, ctx, code == _status.COMPLETED)
    out = {"obs": obs, "params": params, "params_final": params_final, "k_stop": k,
           "obs_final": obs_final, "status": code,
           "stats": {"extra_evals": extra}}
    if return_carry:
        out["carry"] = {"params": params_final, "opt_state": opt_state, "k": k,
                        "batch_state": bstate, "extra": extra}
    return out


_discrete_solve = eqx.filter_jit(discrete_solve)


class GD(_Discrete):
    """Full-batch gradient descent ``theta <- theta - lr grad L(theta)``.

    ``lr`` is a number > 0 or a schedule ``step -> lr`` (e.g. an optax schedule).
    """

    lr: Any

    def __check_init__(self):
        _check_lr(self.lr, "GD")

    def describe(self) -> str:
        return f"GD(lr={self.lr})"


class _Minibatches(eqx.Module):
    """Minibatches without replacement: a fresh permutation each epoch (last partial
    batch dropped), drawn from ``key`` folded with the epoch index."""

    key: Any
    batch_size: int = eqx.field(static=True)

    def init(self, n):
        return jax.random.permutation(jax.random.fold_in(self.key, 0), n)

    def indices(self, perm, k, n):
        nb = n // self.batch_size
        b = k % nb
        perm = jax.lax.cond(
            (b == 0) & (k > 0),
            lambda: jax.random.permutation(jax.random.fold_in(self.key, k // nb), n),
            lambda: perm,
        )
        return jax.lax.dynamic_slice(perm, (b * self.batch_size,), (self.batch_size,)), perm


class SGD(_Discrete):
    """Minibatch SGD: batches drawn without replacement per epoch from ``key``.

    With ``batch_size == n`` it is GD (up to summation order).
    """

    lr: Any
    batch_size: int = eqx.field(static=True)
    key: Any = None

    def __check_init__(self):
        _check_lr(self.lr, "SGD")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) \
                or self.batch_size < 1:
            raise ValueError(f"SGD: batch_size must be an integer >= 1, got {self.batch_size!r}.")
        if self.key is None:
            raise ValueError(
                "SGD needs an explicit PRNG key: SGD(lr, batch_size, key=jax.random.key(0))."
            )

    def describe(self) -> str:
        return f"SGD(lr={self.lr}, batch_size={self.batch_size})"

    def _batch(self):
        return _Minibatches(self.key, self.batch_size)


class Optax(_Discrete):
    """Any optax optimizer; ``lr`` is the time one step advances (``t_k = k * lr``),
    normally the optimizer's learning rate."""

    optimizer: optax.GradientTransformation = eqx.field(static=True)
    lr: Any

    def __check_init__(self):
        if not isinstance(self.optimizer, optax.GradientTransformation):
            raise ValueError(
                f"Optax: optimizer must be an optax.GradientTransformation, got {self.optimizer!r}."
            )
        _check_lr(self.lr, "Optax")
        inputs.check_optax_lr(self.optimizer, self.lr)

    def describe(self) -> str:
        return f"Optax(lr={self.lr})"

    def _init_state(self, params):
        return self.optimizer.init(params)

    def _update(self, objective, params, state, k, g):
        updates, state = self.optimizer.update(g, state, params)
        # e.g. weight decay must not move fixed leaves
        updates = objective.mask_grad(params, updates)
        return optax.apply_updates(params, updates), state

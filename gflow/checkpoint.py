"""Guarding long runs: checkpoints during a run, and (re-exported) the memory guard.

:func:`simulate_resumable` runs :func:`gflow.simulate` in segments of ``every`` save
points and writes its state atomically to an ``.npz`` file (read back with
``allow_pickle=False``) after a segment -- every segment, or at most once per
``every_seconds`` of wall time; called again with the same arguments after an
interruption it continues from there. A segment is one call of the dynamics' ``advance``
(:mod:`gflow.dynamics`) and the state between segments is the dynamics' whole state, so a
segmented run takes exactly the steps of one :func:`gflow.simulate` -- GD, SGD, optax and
gradient flow alike (GF carries diffrax's solver and controller state) -- and returns
bitwise the same trajectory (same machine and dtype). Segments end at save points, never
at wall-clock times, so the result does not depend on when files were written.

:func:`gflow.simulate_ensemble` with ``checkpoint=DIR`` keeps each finished chunk of
members (``chunk_size=``) in ``DIR`` (:class:`ChunkStore`), so a long ensemble resumes
without recomputing them. ``with checkpointing(DIR): ...`` checkpoints every ``simulate``
/ ``simulate_ensemble`` call made inside the block (numbered in call order); ``gflow run``
wraps each experiment in it, so ``gflow run --resume DIR`` continues inside an
interrupted run.

The pieces live in :mod:`gflow.memory` (memory guard), :mod:`gflow.store` (files,
fingerprints, chunks) and :mod:`gflow.context` (the block); this module re-exports them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import _status, solve
from .context import Checkpointing, active, check_every, checkpointing
from .dynamics import blank
from .memory import (
    available_memory,
    check_memory,
    estimate_bytes,
    memory_limit,
)
from .store import (
    ChunkStore,
    arrays,
    dynamics_parts,
    ensemble_fingerprint,
    fingerprint,
    from_host,
    load_state,
    save_state,
    to_host,
)

__all__ = ["ChunkStore", "Checkpointing", "active", "available_memory", "check_memory",
           "checkpointing", "ensemble_fingerprint", "estimate_bytes",
           "memory_limit", "save_state", "segment_ends", "simulate_resumable"]

_save_state = save_state  # the writer the segment loop calls (tests wrap it to watch writes)


def segment_ends(n_saves: int, every: int) -> list[int]:
    """Segment ``j`` ends once saves ``0 ... (j+1)*every - 1`` are recorded: the save
    counts at which segments end."""
    return [min(i + every, n_saves) for i in range(0, n_saves, every)]


class _Segments:
    """One run cut into segments, and its state as a flat dict of numpy arrays (what the
    ``.npz`` holds): ``segment`` (segments done), ``done``, ``saves``, the observables
    recorded so far (``obs_<name>``), parameter snapshots (``snap_<i>``), the rest of the
    dynamics' state (``carry_<i>``) and, once ``done``, the run's output (``out_<i>``)."""

    def __init__(self, st: solve.Setup, every: int):
        self.st = st
        self.S = len(st.ts)
        self.ends = segment_ends(self.S, every)
        self.state_shape = eqx.filter_eval_shape(st.planned.init, st.problem, st.params0)
        self.out_def = jax.tree.structure(
            eqx.filter_eval_shape(st.planned.finish, st.problem, self.state_shape))

    def start(self) -> dict:
        st = self.st
        return solve.solve_start(st.planned, st.problem, st.params0)

    def advance(self, state: dict, saves: int):
        """One segment from ``saves`` recorded saves: ``(state, out, until)``."""
        until = next((e for e in self.ends if e > saves), self.S)
        st = self.st
        state, out = solve.solve_segment(st.planned, st.problem, state,
                                         jnp.asarray(until, jnp.int32))
        return state, out, until

    def to_flat(self, state: dict) -> dict[str, np.ndarray]:
        saves = int(state["saves"])
        flat = {"saves": np.asarray(saves),
                "segment": np.asarray(sum(e <= saves for e in self.ends)),
                "done": np.asarray(0)}
        flat |= {f"obs_{k}": np.asarray(v)[:saves] for k, v in state["obs"].items()}
        if state["snaps"] is not None:
            flat |= {f"snap_{i}": np.asarray(x)[:saves]
                     for i, x in enumerate(jax.tree.leaves(state["snaps"]))}
        rest = {k: v for k, v in state.items() if k not in ("obs", "snaps")}
        flat |= {f"carry_{i}": to_host(x) for i, x in enumerate(jax.tree.leaves(rest))}
        return flat

    def from_flat(self, flat: dict, template: dict) -> dict:
        """The state written by :meth:`to_flat` (``template``: a state of this run, for the
        structure and the kind of each leaf)."""
        saves = int(flat["saves"])

        def rows(buf, saved):
            return jnp.concatenate([jnp.asarray(saved, buf.dtype),
                                    blank((buf.shape[0] - saves, *buf.shape[1:]), buf.dtype)])

        rest = {k: v for k, v in template.items() if k not in ("obs", "snaps")}
        leaves, treedef = jax.tree.flatten(rest)
        state = jax.tree.unflatten(treedef, [from_host(flat[f"carry_{i}"], x)
                                             for i, x in enumerate(leaves)])
        state["obs"] = {k: rows(v, flat[f"obs_{k}"]) for k, v in template["obs"].items()}
        snaps = template["snaps"]
        if snaps is not None:
            sl, sd = jax.tree.flatten(snaps)
            snaps = jax.tree.unflatten(sd, [rows(x, flat[f"snap_{i}"]) for i, x in enumerate(sl)])
        state["snaps"] = snaps
        return state

    def output(self, flat: dict) -> dict:
        n = self.out_def.num_leaves
        return jax.tree.unflatten(self.out_def, [flat[f"out_{i}"] for i in range(n)])


def _drive(path: Path, run: _Segments, flat, every_seconds, progress: bool):
    """Run segment after segment until the run is done, writing its state to ``path``
    after a segment once ``every_seconds`` have passed since the last write (after every
    segment when ``None``). If the loop is interrupted by an exception (Ctrl-C, or SIGTERM
    under ``gflow run``), the last complete state is written before it propagates, so no
    finished segment is lost. Returns the final flat state, output included."""
    fp = flat["fingerprint"]
    state = run.start()
    if "saves" in flat:  # resuming
        state = run.from_flat(flat, state)
    saves = int(flat.get("saves", 0))
    bar = None
    if progress:
        from .progress import bar as make_bar

        bar = make_bar("saves", total=run.S, initial=saves, unit="save")
    last, unsaved = time.monotonic(), False
    try:
        while True:
            state, out, until = run.advance(state, saves)
            if int(state["saves"]) < min(until, run.S) and until < run.S \
                    and int(state["status"]) == _status.COMPLETED:
                raise RuntimeError(f"a segment ended with {int(state['saves'])} of the {until} "
                                   "saves it had to record (a dynamics' advance broke its "
                                   "contract).")
            saves = int(state["saves"])
            if bar is not None:
                bar.update(saves - bar.n)
            if until == run.S or int(state["status"]) != _status.COMPLETED:
                break
            flat = run.to_flat(state) | {"fingerprint": fp}
            if every_seconds is None or time.monotonic() - last >= every_seconds:
                _save_state(path, flat)
                last, unsaved = time.monotonic(), False
            else:
                unsaved = True
    except BaseException:
        if unsaved:
            _save_state(path, flat)
        raise
    finally:
        if bar is not None:
            bar.close()
    out = jax.device_get(out)
    flat = run.to_flat(state) | {"fingerprint": fp, "done": np.asarray(1)}
    return flat | {f"out_{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(out))}


def simulate_resumable(path, net, params0, data, *, every: int | None = None,
                       every_seconds: float | None = None, loss="squared", dynamics=None,
                       t1: float, save: Any = None, observe=("loss",), stop_loss=None,
                       stop_grad=None, probes=None, save_params: bool = False,
                       throw: bool = True, progress: bool = False, keep: bool = False,
                       diverge_factor=None):
    """:func:`gflow.simulate`, run in segments of ``every`` save points and checkpointed
    to ``path`` (an ``.npz`` file); called again with the same arguments after an
    interruption, it continues from the last checkpoint.

    Which trigger applies: the run is always cut at the same save points -- a segment
    ends once the saves up to the next multiple of ``every`` (``1`` when only
    ``every_seconds`` is given) are recorded -- and the state is written at the end of a
    segment, of every segment when ``every_seconds`` is ``None``, else of the first segment
    that ends at least ``every_seconds`` of wall time after the previous write. Wall time
    decides only *when a file is written*, never where a segment ends, so the result does
    not depend on it: interrupted (SIGTERM, SIGKILL, Ctrl-C) and resumed, or not, the call
    returns bitwise the same trajectory as one :func:`gflow.simulate` (same machine, dtype
    and arguments). Changing ``every_seconds`` between the runs is allowed; other arguments
    are fingerprinted and a checkpoint of a different run is refused.

    What is saved: the observables so far (and snapshots with ``save_params``) and the
    dynamics' whole state: for GD, SGD and optax the parameters, optimizer state, step
    count and minibatch permutation (SGD's key is fixed; each epoch's permutation is drawn
    from it folded with the epoch index); for gradient flow the time, parameters, diffrax's
    solver state (the FSAL stage), controller state (error history) and the end of the
    next step, so the next segment continues the same sequence of steps. An adaptive
    solver's step does not end at the segment's last save: the segment ends after the step
    that passes it (and records the saves that step covers). Exception: ``max_steps`` of
    gradient flow counts the steps of each segment, so a run that exhausts it may stop
    later than one plain solve.

    Arguments as :func:`gflow.simulate`, plus:
        path: the checkpoint file (``.npz``: numpy arrays only, read without pickle).
        every: save points per segment (>= 1).
        every_seconds: least wall time between two writes (>= 0), or ``None``.
        keep: keep the finished run in ``path`` (a later call returns it without
            computing); by default the file is removed once the run has finished.

    Returns:
        A :class:`gflow.Trajectory`, identical whether or not the call was interrupted.
    """
    every, every_seconds = check_every(every, every_seconds)
    st = solve.setup(net, params0, data, loss=loss, dynamics=dynamics, t1=t1, save=save,
                     observe=observe, probes=probes, stop_loss=stop_loss, stop_grad=stop_grad,
                     save_params=save_params, progress=False, diverge_factor=diverge_factor)
    problem = st.problem
    check_memory(problem.observer, st.params0, problem.ctx, len(st.ts), save_params=save_params,
                 dynamics=st.dynamics)
    run = _Segments(st, every)
    fp = fingerprint(type(net).__name__, repr(net), *arrays(net), repr(loss), float(t1), st.ts,
                     tuple(problem.observer.observables), problem.stop_loss, problem.stop_grad,
                     *([] if problem.diverge_factor is None else [problem.diverge_factor]),
                     every, save_params, *arrays(data), probes,
                     *jax.tree.leaves(st.params0), *dynamics_parts(st.dynamics, st.params0),
                     np.asarray(problem.grid))
    path = Path(path)
    flat = load_state(path, fp)
    finished_before = flat is not None and bool(int(flat["done"]))
    if not finished_before:
        flat = _drive(path, run, flat or {"fingerprint": np.asarray(fp)}, every_seconds,
                      progress)
        if keep:
            _save_state(path, flat)
    out = st.dynamics.report(run.output(flat), st.info)
    traj = solve.to_trajectory(out, st.params0, st.dynamics, problem.observer)
    if not keep:
        path.unlink(missing_ok=True)
    if throw:
        solve.raise_for_status(traj)
    return traj

"""The checkpointing block: ``with gflow.checkpoint.checkpointing(DIR): ...`` makes every
run inside it a checkpointed one (numbered in call order); ``gflow run`` wraps each
experiment in it. This module only holds the active blocks; :func:`gflow.simulate` and
:func:`gflow.simulate_ensemble` ask it for theirs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["Checkpointing", "active", "check_every", "checkpointing"]


def check_every(every, every_seconds) -> tuple[int, float | None]:
    if every is None and every_seconds is None:
        raise ValueError("give every= (save points per segment) and/or every_seconds= "
                         "(least wall time between checkpoint writes).")
    if every is None:
        every = 1
    if isinstance(every, bool) or not isinstance(every, int | np.integer) or every < 1:
        raise ValueError(f"every must be an integer >= 1 (save points per segment), "
                         f"got {every!r}.")
    if every_seconds is not None:
        if isinstance(every_seconds, bool) or not isinstance(every_seconds, int | float) \
                or not every_seconds >= 0 or math.isinf(every_seconds):
            raise ValueError(f"every_seconds must be a finite number >= 0 or None, "
                             f"got {every_seconds!r}.")
        every_seconds = float(every_seconds)
    return int(every), every_seconds


@dataclasses.dataclass
class Checkpointing:
    """The settings of an active :func:`checkpointing` block and its call counter."""

    directory: Path
    every: int
    every_seconds: float | None
    calls: int = 0

    def next_path(self, suffix: str = "") -> Path:
        """The checkpoint of the next run in this block: ``call_NNNN`` + ``suffix``."""
        path = self.directory / f"call_{self.calls:04d}{suffix}"
        self.calls += 1
        return path


_ACTIVE: list[Checkpointing] = []


@contextlib.contextmanager
def checkpointing(directory, *, every: int | None = 10,
                  every_seconds: float | None = None) -> Iterator[Checkpointing]:
    """Checkpoint every run started inside the block, numbered in call order.

    Each :func:`gflow.simulate` call ``i`` runs as :func:`gflow.checkpoint.simulate_resumable` with
    ``path=directory/call_<i>.npz``, ``every``, ``every_seconds`` and ``keep=True``; each
    :func:`gflow.simulate_ensemble` call (and so each group of :func:`gflow.sweep`) keeps
    its finished chunks of members in ``directory/call_<i>/``. Code that makes the same
    calls in the same order -- an experiment's ``run(config)`` -- run again inside the same
    block after an interruption reads the finished calls back, continues the interrupted
    one from its last checkpoint, and returns bitwise the same results as a run that was
    never interrupted. Every call is fingerprinted, so a different sequence of calls is
    refused, not mixed up. The files stay until the caller removes ``directory``.

    Runs inside the block take exactly the steps of a plain ``simulate`` (gradient flow
    carries its solver's state across segments), see :func:`gflow.checkpoint.simulate_resumable`.
    """
    every, every_seconds = check_every(every, every_seconds)
    ck = Checkpointing(Path(directory), every, every_seconds)
    _ACTIVE.append(ck)
    try:
        yield ck
    finally:
        _ACTIVE.pop()


def active() -> Checkpointing | None:
    """The innermost active :func:`checkpointing` block, or ``None``."""
    return _ACTIVE[-1] if _ACTIVE else None

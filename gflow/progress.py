"""Progress bars of long runs, labelled with what runs.

Every bar gflow shows (a gradient-flow solve's percentage, a discrete run's saves, a
checkpointed run's segments, an ensemble's chunks, a CLI sweep's points) is made by
:func:`bar`, after 2 s of work, on stderr. An experiment that runs several things names the
one running with :func:`stage`, and its bars carry that name::

    for i, w in enumerate(widths):
        with gflow.progress.stage(f"width {w} ({i + 1} of {len(widths)})"):
            gflow.simulate(..., progress=True)   # "width 64 (2 of 4): gradient flow: 31%|..."

Stages nest (``"near_init: gf: ..."``). The label is read when a bar is made, on the host
(also inside a solve's host callback), so it never enters a compiled program: a new label
does not recompile anything.
"""

from __future__ import annotations

import contextlib
import threading

__all__ = ["bar", "label", "stage"]

_STAGES: list[str] = []
_LOCK = threading.Lock()


def label() -> str:
    """The names of the stages entered, outermost first, joined by ``": "`` (``""``: none)."""
    with _LOCK:
        return ": ".join(_STAGES)


@contextlib.contextmanager
def stage(name: str):
    """Label the bars made inside the block with ``name`` (after the enclosing stages')."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"stage: name must be a non-empty string, got {name!r}.")
    with _LOCK:
        _STAGES.append(name)
        depth = len(_STAGES)
    try:
        yield
    finally:
        with _LOCK:
            del _STAGES[depth - 1:]


def bar(desc: str, **kw):
    """A ``tqdm`` bar described as ``"<stages>: desc"``, shown after 2 s (``delay``);
    ``kw`` goes to ``tqdm.tqdm``."""
    import tqdm

    where = label()
    return tqdm.tqdm(desc=f"{where}: {desc}" if where else desc, **{"delay": 2.0, **kw})

"""Checkpoint files: a flat dict of numpy arrays in an ``.npz``, written atomically and
read back only if it is intact.

A file carries its run's ``fingerprint`` (a hash of the run's inputs, computed by the
caller) and ``content_sha256``, a hash of every array in it (name, dtype, shape and
bytes). :func:`read` returns ``None`` -- with a warning naming the file -- for a file
that cannot be used: truncated or bit-flipped (a zip or CRC error), rewritten with other
arrays (the content hash does not match), or without the two tags; the caller then
computes that part of the run again and overwrites the file, keeping every other
checkpoint. A file whose content is intact but whose fingerprint belongs to another run
is refused with a ``ValueError``: it is not damaged, it is someone else's.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np

__all__ = ["content_hash", "read", "write"]

_HASH = "content_sha256"


def content_hash(state: dict[str, np.ndarray]) -> str:
    """sha256 over every entry but the hash itself, in name order: name, dtype, shape,
    bytes."""
    h = hashlib.sha256()
    for k in sorted(state):
        if k == _HASH:
            continue
        a = np.ascontiguousarray(np.asarray(state[k]))
        h.update(f"{k}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write(path, state: dict[str, np.ndarray]) -> None:
    """Write ``state`` (with its content hash) to ``path`` atomically: a temporary file
    in the same folder, synced, then ``os.replace``; permissions as the umask gives."""
    from .io import atomic_path

    state = {k: np.asarray(v) for k, v in state.items() if k != _HASH}
    state[_HASH] = np.asarray(content_hash(state))
    with atomic_path(path, ".npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **state)
        f.flush()
        os.fsync(f.fileno())


def _unusable(path: Path, why: str) -> None:
    warnings.warn(f"checkpoint {str(path)!r} cannot be used ({why}); computing that part of "
                  "the run again (the other checkpoints are kept).", stacklevel=3)


def read(path, fingerprint: str) -> dict[str, np.ndarray] | None:
    """The state in ``path``; ``None`` if there is none or it is damaged (a warning says
    which file and why); ``ValueError`` if it is intact but of a different run."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            state = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - zip, CRC, EOF, pickle and OS errors alike
        _unusable(path, f"truncated or corrupted: {type(e).__name__}: {e}")
        return None
    if "fingerprint" not in state or _HASH not in state:
        _unusable(path, "it has no fingerprint or content hash: not a complete gflow checkpoint")
        return None
    if str(state[_HASH]) != content_hash(state):
        _unusable(path, "its arrays do not match their content hash: altered or corrupted")
        return None
    if str(state["fingerprint"]) != fingerprint:
        raise ValueError(f"checkpoint {str(path)!r} belongs to a different run (other "
                         "settings, data or initial parameters); remove it or use another path.")
    del state[_HASH]
    return state

"""Files of checkpointed runs: atomic ``.npz`` writes, fingerprints of a run's inputs,
typed PRNG keys to and from numpy, and the finished chunks of an ensemble.

Every file is written atomically (a temporary file, then ``os.replace``) and read back with
``allow_pickle=False``; each carries the fingerprint of the run that wrote it, and a file
of another run is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from . import statefile

__all__ = ["ChunkStore", "arrays", "dynamics_parts", "ensemble_fingerprint", "fingerprint",
           "from_host", "is_key", "load_state", "save_state", "to_host"]


def is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_host(x) -> np.ndarray:
    """A leaf as a numpy array (a typed PRNG key as its raw key data)."""
    return np.asarray(jax.random.key_data(x) if is_key(x) else x)


def from_host(arr, template):
    """``arr``, read from a checkpoint, as the kind of leaf ``template`` is."""
    if is_key(template):
        return jax.random.wrap_key_data(jnp.asarray(arr), impl=jax.random.key_impl(template))
    return jnp.asarray(arr)


def fingerprint(*parts) -> str:
    """sha256 of ``parts``: arrays by dtype, shape and bytes; anything else by its repr."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray | np.generic | jax.Array):
            a = to_host(p)
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        else:  # memory addresses in a repr (functions, objects) differ between processes
            h.update(re.sub(r" at 0x[0-9a-fA-F]+", "", repr(p)).encode())
    return h.hexdigest()


def arrays(tree) -> list:
    """The array leaves of ``tree``."""
    return [x for x in jax.tree.leaves(tree) if isinstance(x, np.ndarray | jax.Array)]


def dynamics_parts(dynamics, params) -> list:
    """What identifies the dynamics: its repr (every field), its arrays (per-member lr,
    SGD keys) and, for an optax optimizer, whose hyper-parameters live in closures that no
    repr shows, its state and one update of ``params`` from a fixed pseudo-gradient."""
    parts = [repr(dynamics), *arrays(dynamics)]
    opt = getattr(dynamics, "optimizer", None)
    if opt is not None:
        state = opt.init(params)
        probe = jax.tree.map(lambda x: jnp.full_like(x, 0.5), params)
        update, state1 = opt.update(probe, state, params)
        parts += [*arrays(state), *arrays(update), *arrays(state1)]
    return parts


def save_state(path: Path, state: dict[str, np.ndarray]) -> None:
    """Write the checkpoint atomically, tagged with a hash of its arrays
    (:mod:`gflow.statefile`)."""
    statefile.write(path, state)


def load_state(path: Path, fingerprint: str) -> dict[str, np.ndarray] | None:
    """The arrays of the checkpoint at ``path``; ``None`` if there is none or it is damaged
    (then recomputed); a checkpoint with another fingerprint is refused."""
    return statefile.read(path, fingerprint)


class ChunkStore:
    """The finished chunks of a :func:`gflow.simulate_ensemble` call, one ``.npz`` per
    chunk (the chunk's output leaves) in ``directory``, tagged with the call's
    fingerprint. ``keep=False`` removes them once the whole ensemble has finished."""

    def __init__(self, directory, fingerprint: str, keep: bool = False):
        self.directory, self.fingerprint, self.keep = Path(directory), fingerprint, keep

    def _path(self, i: int) -> Path:
        return self.directory / f"chunk_{i:05d}.npz"

    def load(self, i: int) -> list[np.ndarray] | None:
        state = load_state(self._path(i), self.fingerprint)
        if state is None:
            return None
        return [state[f"leaf_{j}"] for j in range(int(state["n_leaves"]))]

    def save(self, i: int, leaves) -> None:
        save_state(self._path(i), {
            "fingerprint": np.asarray(self.fingerprint), "n_leaves": np.asarray(len(leaves)),
            **{f"leaf_{j}": np.asarray(x) for j, x in enumerate(leaves)}})

    def finish(self) -> None:
        if self.keep:
            return
        for p in self.directory.glob("chunk_*.npz"):
            p.unlink()
        with contextlib.suppress(OSError):
            self.directory.rmdir()


def ensemble_fingerprint(dynamics, member0_params, *parts) -> str:
    """Fingerprint of an ensemble call: ``parts`` (its flat inputs and static settings)
    and the dynamics (optax hyper-parameters included)."""
    return fingerprint("ensemble", *parts, *dynamics_parts(dynamics, member0_params))

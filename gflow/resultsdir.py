"""A results folder on disk: whose it is, what gflow may remove in it, and its lock.

gflow writes into a folder only names of its own -- ``config.json``, ``summary.json``,
``trajectory.nc``, the figures (``*.png``, listed in ``summary.json["figures"]``),
``parts/NNNNN.{nc,json}``, ``checkpoints/`` (``call_NNNN.npz``, ``call_NNNN/chunk_NNNNN.npz``,
``point_NNNNN/...``), the lock ``.gflow.lock`` and the temporary files of its atomic
writes (``.NAME.XXXXXXXX.EXT``) -- and it removes only files of those names, never a
whole tree. A folder is *gflow's* when it holds a ``config.json`` written by ``gflow run``
(an ``experiment`` and a ``provenance`` table); :func:`check` refuses any other non-empty
folder, and a gflow folder with results or checkpoints unless ``--overwrite`` or
``--resume`` says what to do with them.

:func:`locked` holds an exclusive lock on the folder for one run: a second ``gflow run``
(or ``gflow plot``) on it is refused with the first one's process id. The lock is a
``flock`` on ``.gflow.lock``, which the kernel releases when the process dies, so a lock
left by a killed run is stale by construction; where ``flock`` is unavailable, the process
id recorded in the file decides whether its owner still runs.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LOCK", "FolderLocked", "check", "has_results", "is_gflow_folder", "locked",
           "remove_checkpoints", "remove_parts", "remove_results", "remove_temp_files",
           "status"]

LOCK = ".gflow.lock"
RESULT_FILES = ("summary.json", "trajectory.nc")
# what tempfile.mkstemp(prefix=f".{name}.", suffix=ext) makes for a file `name` ending in ext
_TEMP = re.compile(r"^\.(?P<base>.+(?P<ext>\.(?:json|nc|png|npz)))\.[a-z0-9_]{8}(?P=ext)$")
_PART = re.compile(r"^\d{5}\.(?:nc|json)$")
_CKPT_FILE = re.compile(r"^(?:call_\d{4}|chunk_\d{5})\.npz$")
_CKPT_DIR = re.compile(r"^(?:call_\d{4}|point_\d{5})$")


class FolderLocked(ValueError):
    """Another gflow process holds the results folder."""


def is_gflow_folder(out) -> bool:
    """Whether ``out`` holds a ``config.json`` written by ``gflow run``."""
    try:
        cfg = json.loads((Path(out) / "config.json").read_text())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(cfg, dict) and isinstance(cfg.get("experiment"), str) \
        and isinstance(cfg.get("provenance"), dict)


def _figures(out: Path) -> list[Path]:
    """The figures the last finished run recorded in ``summary.json``."""
    try:
        names = json.loads((out / "summary.json").read_text()).get("figures") or []
    except (OSError, ValueError, RecursionError, AttributeError):
        return []
    return [out / n for n in names if isinstance(n, str) and re.fullmatch(r"[^/\\]+\.png", n)]


def _checkpoint_files(out: Path) -> list[Path]:
    """gflow's files under ``out/checkpoints`` (by name; anything else is not touched)."""
    found: list[Path] = []

    def walk(d: Path, depth: int) -> None:
        if not d.is_dir() or d.is_symlink():
            return
        for p in d.iterdir():
            if p.is_dir() and not p.is_symlink() and _CKPT_DIR.match(p.name) and depth < 2:
                walk(p, depth + 1)
            elif p.is_file() and (_CKPT_FILE.match(p.name) or _TEMP.match(p.name)):
                found.append(p)

    walk(out / "checkpoints", 0)
    return found


def _part_files(out: Path) -> list[Path]:
    parts = out / "parts"
    if not parts.is_dir() or parts.is_symlink():
        return []
    return [p for p in parts.iterdir() if p.is_file() and _PART.match(p.name)]


def status(out) -> str | None:
    """The ``status`` in ``out/summary.json`` (``"completed"``, ``"interrupted: ..."``,
    ``"failed: ..."``); ``None`` if there is none or it is unreadable."""
    try:
        return json.loads((Path(out) / "summary.json").read_text()).get("status")
    except (OSError, ValueError, RecursionError, AttributeError):
        return None


def has_results(out) -> bool:
    """Whether a gflow folder holds something a new run would lose: a finished result,
    figures, finished sweep points or checkpoints."""
    out = Path(out)
    return (status(out) == "completed" or (out / "trajectory.nc").exists()
            or any(p.exists() for p in _figures(out))
            or bool(_part_files(out)) or any(_CKPT_FILE.match(p.name)
                                             for p in _checkpoint_files(out)))


def _first_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check(out, *, overwrite: bool = False, resume: bool = False) -> None:
    """Refuse (``ValueError``) to write into ``out`` unless it is missing, empty, or a
    gflow folder whose results the caller said to replace (``overwrite``) or continue
    (``resume``). Nothing is written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file, not a folder; give a folder path.")
    if not out.exists():
        if resume:
            raise ValueError(f"--resume {str(out)!r}: no such folder.")
        base = _first_existing(out)
        if not base.is_dir():
            raise ValueError(f"--out {str(out)!r} lies inside {str(base)!r}, which is a file.")
        if not os.access(base, os.W_OK | os.X_OK):
            raise ValueError(f"--out {str(out)!r}: cannot create it, {str(base)!r} is not "
                             "writable (read-only file system or no permission).")
        return
    entries = [p for p in out.iterdir() if p.name != LOCK]
    if not entries:
        return
    if not is_gflow_folder(out):
        raise ValueError(
            f"--out {str(out)!r} is not empty and is not a gflow results folder (it has no "
            "config.json written by gflow run); gflow does not write into it. Give a new or "
            "empty folder.")
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"--out {str(out)!r} is not writable (read-only file system or no "
                         "permission).")
    if not (overwrite or resume) and has_results(out):
        raise ValueError(
            f"--out {str(out)!r} already holds the results or checkpoints of a gflow run. "
            f"Add --overwrite to replace them, or continue an interrupted run with "
            f"gflow run --resume {out}.")


def _unlink(paths) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _rmdir_empty(d: Path) -> None:
    with contextlib.suppress(OSError):  # not empty (a file that is not gflow's) or gone
        d.rmdir()


def remove_parts(out) -> None:
    """Remove the finished sweep points (``parts/NNNNN.{nc,json}``), and ``parts/`` if
    nothing else is in it."""
    out = Path(out)
    _unlink(_part_files(out))
    _rmdir_empty(out / "parts")


def remove_checkpoints(directory) -> None:
    """Remove gflow's checkpoint files under ``directory`` (``out/checkpoints`` or one
    sweep point's folder in it) and the folders they leave empty."""
    directory = Path(directory)
    if directory.name == "checkpoints":
        files = _checkpoint_files(directory.parent)
    else:
        files = [p for p in _checkpoint_files(directory.parent.parent)
                 if directory in p.parents]
    _unlink(files)
    for d in sorted({p.parent for p in files} | {directory}, key=lambda p: -len(p.parts)):
        while d == directory or directory in d.parents:
            _rmdir_empty(d)
            d = d.parent


def remove_temp_files(out) -> list[Path]:
    """Remove what killed atomic writes left (``.NAME.XXXXXXXX.EXT`` in the folder,
    ``parts/`` and ``checkpoints/``); call it holding the lock. Returns what it removed."""
    out = Path(out)
    found = [p for d in (out, out / "parts") if d.is_dir() and not d.is_symlink()
             for p in d.iterdir() if p.is_file() and _TEMP.match(p.name)]
    found += [p for p in _checkpoint_files(out) if _TEMP.match(p.name)]
    _unlink(found)
    return found


def remove_results(out) -> None:
    """Remove a previous run's results: ``summary.json``, ``trajectory.nc``, the figures
    it recorded, finished sweep points and checkpoints (``--overwrite``)."""
    out = Path(out)
    figures = _figures(out)
    _unlink([out / "trajectory.nc", *figures])
    remove_parts(out)
    remove_checkpoints(out / "checkpoints")
    _unlink([out / "summary.json"])


# -- the lock ---------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _holder(path: Path) -> dict:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _describe(info: dict) -> str:
    if not info:
        return "another gflow process"
    return (f"gflow process {info.get('pid')} on {info.get('host')} (started "
            f"{info.get('date_utc')})")


def _flock(fd: int) -> bool | None:
    """Try to take an exclusive ``flock``: True (taken), False (held by another process),
    None (not supported here)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # e.g. a file system without flock
        return None
    return True


@contextlib.contextmanager
def locked(out) -> Iterator[dict]:
    """Hold the exclusive lock on the results folder ``out`` (which must exist) inside
    the block; :class:`FolderLocked` if another live gflow process holds it. Yields what
    the previous lock file said when it was stale (its owner is gone), else ``{}``."""
    path = Path(out) / LOCK
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise ValueError(f"cannot lock {str(out)!r} ({e.strerror or e}): gflow needs a "
                             "writable results folder.") from None
        got = _flock(fd)
        if got is False:
            os.close(fd)
            raise FolderLocked(f"{str(out)!r} is in use by {_describe(_holder(path))}; wait "
                               "for that run to finish or stop it, or use another --out.")
        if got is None:  # no flock: the recorded process id decides
            info = _holder(path)
            pid = info.get("pid")
            if (isinstance(pid, int) and pid != os.getpid() and info.get("host") == me["host"]
                    and _alive(pid)):
                os.close(fd)
                raise FolderLocked(f"{str(out)!r} is in use by {_describe(info)}; wait for "
                                   "that run to finish or stop it, or use another --out.")
        # the previous holder may have removed the file between our open and flock
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    stale = _holder(path)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(me).encode())
    try:
        yield stale
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)

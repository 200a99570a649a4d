"""Provenance of a results folder and safe reading of configs.

Every ``gflow run`` records, next to its settings, what is needed to trust and repeat it:
the versions of gflow and the numerical stack, the device kind, the dtype, the seed, the
command line and the date (``config.json["provenance"]``). ``gflow run --config
DIR/config.json`` re-runs a recorded folder with the same settings (sweeps included).

Configs are read only with data parsers (``json``; TOML via ``tomllib``): no ``eval``,
no pickle of user-supplied files.

``gflow run --resume DIR`` compares the recorded provenance with the running one
(:func:`compare`): another version of gflow's numerical stack, another backend, device kind
or device count can change results in the last bits, so the resume is refused unless
``--force``; another Python, platform or gflow commit only warns.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import platform
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

__all__ = ["CONFIG_KEYS", "PACKAGES", "collect", "compare", "read_config"]

PACKAGES = ("gflow", "jax", "jaxlib", "diffrax", "optax", "equinox", "numpy")


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git() -> dict[str, Any] | None:
    """Commit of the gflow source tree and whether it had local changes (None outside git)."""
    src = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "."],
                               cwd=src, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def collect(argv: list[str] | None = None) -> dict[str, Any]:
    """What produced a run: package versions (and the git commit of gflow's source,
    when it is a checkout), device, dtype, command line and UTC date.

    Call it after ``jax_enable_x64`` is set for the run, so that the dtype is the one used.
    """
    import jax
    import jax.numpy as jnp

    devices = jax.devices()
    return {
        "versions": {p: _version(p) for p in PACKAGES},
        "gflow_git": _git(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "dtype": str(jnp.result_type(float)),
        "x64": bool(jax.config.jax_enable_x64),
        "command": list(sys.argv if argv is None else argv),
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


#: the top-level keys of a run config (what ``gflow run`` writes to ``config.json``)
CONFIG_KEYS = ("experiment", "x64", "seed", "settings", "sweep", "checkpoint", "provenance")

# recorded provenance that a bitwise-identical resume needs unchanged / only warns about
_EXACT = ("backend", "device_kind", "device_count", "dtype")
_WARN = ("python", "platform")


def compare(recorded: dict[str, Any], current: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``(differences that can change results bitwise, harmless differences)`` between a
    recorded and the current provenance, each as ``"what: recorded -> current"``."""
    exact, warn = [], []
    rv, cv = recorded.get("versions") or {}, current.get("versions") or {}
    for pkg in PACKAGES:
        if rv.get(pkg) != cv.get(pkg):
            exact.append(f"{pkg} {rv.get(pkg)} -> {cv.get(pkg)}")
    for key in _EXACT:
        if recorded.get(key) != current.get(key):
            exact.append(f"{key}: {recorded.get(key)} -> {current.get(key)}")
    for key in _WARN:
        if recorded.get(key) != current.get(key):
            warn.append(f"{key}: {recorded.get(key)} -> {current.get(key)}")
    rg, cg = recorded.get("gflow_git") or {}, current.get("gflow_git") or {}
    if rg.get("commit") != cg.get("commit"):
        warn.append(f"gflow commit: {rg.get('commit')} -> {cg.get('commit')}")
    return exact, warn


def read_config(path) -> dict[str, Any]:
    """Read a run config (``config.json`` of a results folder, or a ``.toml`` file).

    The config must hold ``experiment`` (a name) and may hold ``settings`` (a table of
    setting -> value), ``sweep`` (setting -> list of values) and ``x64`` (bool). Parsed
    with ``json`` / ``tomllib`` only.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist.")
    text = path.read_bytes()
    kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
    try:
        if kind == "TOML":
            cfg = tomllib.loads(text.decode("utf-8"))
        else:
            cfg = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"config file {str(path)!r} is not valid {kind}: {e}") from None
    except RecursionError:
        raise ValueError(f"config file {str(path)!r} is nested too deeply to be a gflow "
                         "config.") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("experiment"), str):
        raise ValueError(f"config file {str(path)!r} must be a table with an 'experiment' name.")
    unknown = sorted(set(cfg) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"config file {str(path)!r}: unknown key(s) {unknown}; valid keys: "
                         f"{list(CONFIG_KEYS)}.")
    for key, typ in (("settings", dict), ("sweep", dict)):
        if cfg.get(key) is not None and not isinstance(cfg[key], typ):
            raise ValueError(f"config file {str(path)!r}: {key!r} must be a table.")
    for k, v in (cfg.get("sweep") or {}).items():
        if not isinstance(v, list) or not v:
            raise ValueError(f"config file {str(path)!r}: sweep[{k!r}] must be a non-empty list.")
    if "x64" in cfg and not isinstance(cfg["x64"], bool):
        raise ValueError(f"config file {str(path)!r}: 'x64' must be true or false.")
    return cfg

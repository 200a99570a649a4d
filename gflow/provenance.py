"""Provenance of a results folder and safe reading of configs.

Every ``gflow run`` records, next to its settings, what is needed to trust and repeat it:
the versions of gflow and the numerical stack, the device kind, the dtype, the seed, the
command line and the date (``config.json["provenance"]``). ``gflow run --config
DIR/config.json`` re-runs a recorded folder with the same settings (sweeps included).

Configs are read only with data parsers (``json``; TOML via ``tomllib``): no ``eval``,
no pickle of user-supplied files.
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

__all__ = ["PACKAGES", "collect", "read_config"]

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
    try:
        if path.suffix.lower() == ".toml":
            cfg = tomllib.loads(text.decode("utf-8"))
        else:
            cfg = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"config file {str(path)!r} is not valid "
                         f"{'TOML' if path.suffix.lower() == '.toml' else 'JSON'}: {e}") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("experiment"), str):
        raise ValueError(f"config file {str(path)!r} must be a table with an 'experiment' name.")
    for key, typ in (("settings", dict), ("sweep", dict)):
        if cfg.get(key) is not None and not isinstance(cfg[key], typ):
            raise ValueError(f"config file {str(path)!r}: {key!r} must be a table.")
    for k, v in (cfg.get("sweep") or {}).items():
        if not isinstance(v, list) or not v:
            raise ValueError(f"config file {str(path)!r}: sweep[{k!r}] must be a non-empty list.")
    if "x64" in cfg and not isinstance(cfg["x64"], bool):
        raise ValueError(f"config file {str(path)!r}: 'x64' must be true or false.")
    return cfg

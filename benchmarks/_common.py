"""Shared helpers of the benchmark suite: timing, machine description, metric rows.

Method (see ``benchmarks/README.md``): every timed callable blocks until its result is
ready; its first call (tracing + compilation + one execution) is timed and reported on its
own; then ``warmup`` untimed calls; then ``repeats`` timed calls of which the minimum is the
headline (the least-disturbed run on a shared machine) and the median is kept as well.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

__all__ = ["MIN_TIME", "Metric", "Timing", "cores", "machine", "measure", "sizes", "torch_threads"]


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


#: set by ``python -m benchmarks --device``: the cases run at their ``DEVICE`` sizes on JAX's
#: accelerator, and the torch peers (the ``bench`` extra installs torch's CPU build) are left
#: out, since a CPU peer against an accelerator measures the hardware, not the code
DEVICE_RUN = False


def sizes(full: dict, quick_sizes: dict, device: dict | None, quick: bool) -> dict:
    """A case's sizes: ``quick_sizes`` with ``--quick``, else ``device`` on a ``--device`` run
    (when the case has device sizes), else ``full``."""
    if quick:
        return quick_sizes
    return device if DEVICE_RUN and device is not None else full


def torch_threads():
    """Import torch with one intra-op thread per available core; ``None`` if not installed
    or on a ``--device`` run (:data:`DEVICE_RUN`)."""
    if DEVICE_RUN:
        return None
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(cores())
    return torch


@dataclasses.dataclass
class Timing:
    """Wall times in seconds: ``first`` call, then ``min``/``median`` of ``repeats`` calls."""

    first: float
    min: float
    median: float
    repeats: int
    result: Any = dataclasses.field(default=None, repr=False)

    @property
    def compile(self) -> float:
        """Tracing + compilation estimate: first call minus the fastest steady call."""
        return max(self.first - self.min, 0.0)

    def asdict(self) -> dict:
        return {"first_s": self.first, "min_s": self.min, "median_s": self.median,
                "repeats": self.repeats, "compile_s": self.compile}


#: seconds the timed repeats of a headline measurement (cases 1-4, GEMM peak) span at
#: least: this shared 2-core machine has episodes of a few seconds in which everything runs
#: ~2.5x slower, and the minimum over a longer window is taken outside them
MIN_TIME = 3.0


def measure(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1,
            min_time: float = 0.0, max_repeats: int = 200) -> Timing:
    """Time ``fn`` (which must block until its work is done): first call, warm-up, then at
    least ``repeats`` calls and as many more as it takes to span ``min_time`` seconds (at
    most ``max_repeats``). The first call's return value is kept in ``Timing.result``."""
    t = time.perf_counter()
    result = fn()
    first = time.perf_counter() - t
    for _ in range(warmup):
        fn()
    times = []
    while len(times) < repeats or (sum(times) < min_time and len(times) < max_repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return Timing(first, min(times), statistics.median(times), len(times), result)


@dataclasses.dataclass
class Metric:
    """One row of the results table. ``target`` is a lower bound (``>= target``) unless
    ``upper=True`` (``<= target``); ``None`` for context rows without a target."""

    case: str
    name: str
    value: float | str | None
    unit: str = ""
    target: float | None = None
    upper: bool = False
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.target is None or not isinstance(self.value, int | float):
            return None
        return self.value <= self.target if self.upper else self.value >= self.target

    def target_str(self) -> str:
        if self.target is None:
            return ""
        return f"{'<=' if self.upper else '>='} {self.target:g}"

    def value_str(self) -> str:
        v = self.value
        if v is None:
            return "n/a"
        if isinstance(v, str):
            return v
        if isinstance(v, int) or (abs(v) >= 100 and float(v).is_integer()):
            return f"{int(v)}"
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"

    def asdict(self) -> dict:
        d = dataclasses.asdict(self)
        d["met"] = self.met
        return d


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """CPU model, cores, accelerator and library versions of this run."""
    import jax

    dev = jax.devices()[0]
    info = {
        "cpu": _cpu_model(),
        "cores": cores(),
        "jax_backend": jax.default_backend(),
        "jax_device": getattr(dev, "device_kind", str(dev)),
        "jax": jax.__version__,
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    try:
        import importlib.metadata as md

        info["torchdiffeq"] = md.version("torchdiffeq")
    except Exception:  # noqa: BLE001 - not installed
        info["torchdiffeq"] = None
    try:
        import gflow

        info["gflow"] = gflow.__version__
    except ImportError:  # pragma: no cover
        info["gflow"] = None
    return info

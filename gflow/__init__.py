"""gflow: gradient flow and discrete training dynamics of neural networks, in JAX.

Gradient flow is integrated as an ODE with diffrax; GD, SGD and optax optimizers run
on the same time axis (t = step x lr), so continuous and discrete dynamics can be
compared point by point.
"""

import importlib
import importlib.util
import sys
import types
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gflow")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"


def _public() -> dict:
    # (import_module, not `from . import api`, which would ask this module's __getattr__)
    api = importlib.import_module(f"{__name__}.api")  # partial while it is being imported
    return {k: v for k, v in vars(api).items() if not k.startswith("_")}


def __getattr__(name: str):
    # the public API (gflow/api.py) and the numerical stack it imports load on first use,
    # all at once (research modules register their observables when imported); private
    # names are submodules that `from . import _x` is about to import
    if name.startswith("_"):
        raise AttributeError(f"module 'gflow' has no attribute {name!r}")
    if name not in _SHADOWED and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")  # a submodule: just that one
    globals().update(_public())
    if name in globals():  # a public name, or a submodule the import just loaded
        return globals()[name]
    raise AttributeError(f"module 'gflow' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_public()})


class _Package(types.ModuleType):
    """``gflow`` itself: a submodule named like a public function (``gflow/simulate.py``)
    binds the function, not the module, as ``gflow.<name>`` when it is first imported
    (``import gflow.simulate``), as the eager package did."""

    def __setattr__(self, name, value):
        if isinstance(value, types.ModuleType) and name in _SHADOWED:
            value = getattr(value, name)
        super().__setattr__(name, value)


_SHADOWED = ("simulate",)
sys.modules[__name__].__class__ = _Package

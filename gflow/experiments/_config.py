"""Typed experiment settings: one declaration per setting, one check for every experiment.

An experiment's ``Config`` is a frozen dataclass deriving from :class:`Settings`. A field's
annotation is the setting's type (``int``, ``float``, ``bool``, ``str`` or ``tuple[T, ...]``);
:func:`setting` declares its constraints::

    widths: tuple[int, ...] = setting((2, 4, 8), ge=2, multiple_of=2, why="paired init")
    batch_size: int = setting(32, ge=1, le="n")   # a bound may name another setting

A ``Config`` checks itself when it is built -- in Python, from ``--set key=value`` text, from
a config file -- with the same rules everywhere: the type (ints are accepted for floats and
lists for tuples, and converted), finite floats (unless the default is infinite), integers
within int64, non-empty tuples, then the declared bounds, choices and multiples (each value
of a tuple). A violation is a ``ValueError`` that names the experiment and the setting,
``"coupled_init: widths=(3, 4): each value must be a multiple of 2 (paired init ...)"``,
which ``gflow run`` prints as ``gflow: error: ...`` with exit code 2 before anything is
written.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import typing
from typing import Any

__all__ = ["Rule", "Settings", "check_config", "coerce", "experiment_name", "from_text",
           "setting"]

_INT64 = 2**63
Bound = float | str | tuple  # a number, the name of another setting, or several (the tightest)


@dataclasses.dataclass(frozen=True)
class Rule:
    """Constraints of one setting (each value of a tuple setting): bounds ``ge``/``gt``/
    ``le``/``lt`` (numbers or names of other settings), ``choices``, ``multiple_of``;
    ``why`` is appended to the message of a violation."""

    ge: Bound | None = None
    gt: Bound | None = None
    le: Bound | None = None
    lt: Bound | None = None
    choices: tuple | None = None
    multiple_of: int | None = None
    why: str = ""


def setting(default, *, ge: Bound | None = None, gt: Bound | None = None,
            le: Bound | None = None, lt: Bound | None = None, choices=None,
            multiple_of: int | None = None, why: str = ""):
    """A dataclass field with default ``default`` and the constraints of :class:`Rule`."""
    rule = Rule(ge, gt, le, lt, None if choices is None else tuple(choices), multiple_of, why)
    return dataclasses.field(default=default, metadata={"rule": rule})


def experiment_name(cls) -> str:
    """The experiment a ``Config`` class belongs to (its module's last name)."""
    return cls.__module__.rsplit(".", 1)[-1]


@functools.cache
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _error(cls, key: str, value, problem: str) -> ValueError:
    return ValueError(f"{experiment_name(cls)}: {key}={value!r}: {problem}")


def _typ(cls, key: str):
    hints = {f.name: _hints(cls)[f.name] for f in dataclasses.fields(cls)}
    if key not in hints:
        raise ValueError(f"{experiment_name(cls)}: unknown setting(s) {[key]}; valid settings: "
                         f"{sorted(hints)}")
    return hints[key]


def _scalar(cls, key: str, typ, value, shown):
    if typ is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if typ is float and value in ("inf", "-inf"):  # how gflow.io writes infinities
        return float(value)
    if typ is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if typ in (bool, str) and isinstance(value, typ):
        return value
    raise _error(cls, key, shown, f"expected a {typ.__name__}.")


def coerce(cls, key: str, value: Any):
    """``value`` as the type of setting ``key`` of ``cls``: lists become tuples, ints become
    floats where a float is expected; anything else of the wrong type is a ``ValueError``."""
    typ = _typ(cls, key)
    if typing.get_origin(typ) is tuple:
        if not isinstance(value, list | tuple):
            raise _error(cls, key, value, "expected a list.")
        (inner, *_) = typing.get_args(typ) or (Any,)
        return tuple(v if inner is Any else _scalar(cls, key, inner, v, value) for v in value)
    return _scalar(cls, key, typ, value, value)


def _parse(cls, key: str, typ, raw: str):
    if typ is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise _error(cls, key, raw, "expected true or false.")
    try:
        return int(raw) if typ is int else float(raw) if typ is float else raw
    except ValueError:
        raise _error(cls, key, raw, f"expected a {typ.__name__}.") from None


def from_text(cls, key: str, raw: str, *, sweep: bool = False):
    """The value of setting ``key`` written as text (``--set key=raw``): a comma list for a
    tuple setting, or (``sweep=True``) a list of values, one per sweep point."""
    typ = _typ(cls, key)
    if typing.get_origin(typ) is tuple:
        (inner, *_) = typing.get_args(typ) or (str,)
        return tuple(_parse(cls, key, inner, r.strip()) for r in raw.split(",") if r.strip())
    if sweep:
        return [_parse(cls, key, typ, r.strip()) for r in raw.split(",") if r.strip()]
    return _parse(cls, key, typ, raw.strip())


def _bound(cfg, b) -> tuple[float, str]:
    """``(value, text)`` of a bound: the tightest of several; a name reads that setting."""
    if isinstance(b, str):
        v = getattr(cfg, b)
        return v, f"{b}={v!r}"
    return b, f"{b!r}"


_OPS = {"ge": (">=", lambda v, b: v >= b, max), "gt": (">", lambda v, b: v > b, max),
        "le": ("<=", lambda v, b: v <= b, min), "lt": ("<", lambda v, b: v < b, min)}


def _check_rule(cfg, key: str, value, rule: Rule) -> str | None:
    """What is wrong with one value (of a tuple: each), or ``None``."""
    each = "each value " if isinstance(value, tuple) else ""
    bounds = []  # (op, bound value, text) of every declared bound
    for name, (op, ok, tightest) in _OPS.items():
        given = getattr(rule, name)
        if given is not None:
            got = [_bound(cfg, b) for b in (given if isinstance(given, tuple) else (given,))]
            text = got[0][1] if len(got) == 1 else \
                f"{tightest.__name__}({', '.join(t for _, t in got)})"
            bounds.append((ok, tightest(x for x, _ in got), f"{op} {text}"))
    for v in value if isinstance(value, tuple) else (value,):
        if rule.choices is not None and v not in rule.choices:
            return f"{each}must be one of {list(rule.choices)}"
        if rule.multiple_of is not None and v % rule.multiple_of:
            return f"{each}must be a multiple of {rule.multiple_of}"
        if not all(ok(v, b) for ok, b, _ in bounds):
            return f"{each}must be " + " and ".join(t for _, _, t in bounds)
    return None


def _check_number(cls, key: str, value, default) -> None:
    for v in value if isinstance(value, tuple) else (value,):
        if isinstance(v, bool):
            continue
        if isinstance(v, float) and not math.isfinite(v) and not (
                isinstance(default, float) and math.isinf(default) and math.isinf(v)):
            raise _error(cls, key, value, "must be a finite number.")
        if isinstance(v, int) and not -_INT64 <= v < _INT64:
            raise _error(cls, key, value, "out of range (an integer below 2**63).")


def check_config(cfg) -> None:
    """Raise a ``ValueError`` naming the experiment and the setting for the first value of
    ``cfg`` that breaks the rules (see the module docstring)."""
    cls = type(cfg)
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        _check_number(cls, f.name, value, f.default)
        if isinstance(value, tuple) and not value:
            raise _error(cls, f.name, value, "needs at least one value.")
    for f in dataclasses.fields(cfg):
        rule = f.metadata.get("rule")
        problem = rule and _check_rule(cfg, f.name, getattr(cfg, f.name), rule)
        if problem:
            raise _error(cls, f.name, getattr(cfg, f.name),
                         problem + (f" ({rule.why})." if rule.why else "."))


class _Checked(type):
    """Metaclass of :class:`Settings`: an unknown keyword is a ``ValueError`` naming it and
    the valid settings (also through ``dataclasses.replace``), as in a config file."""

    def __call__(cls, *args, **kwargs):
        if dataclasses.is_dataclass(cls):
            names = [f.name for f in dataclasses.fields(cls)]
            unknown = sorted(set(kwargs) - set(names))
            if unknown:
                raise ValueError(f"{experiment_name(cls)}: unknown setting(s) {unknown}; "
                                 f"valid settings: {sorted(names)}")
        return super().__call__(*args, **kwargs)


@dataclasses.dataclass(frozen=True)
class Settings(metaclass=_Checked):
    """Base of every experiment's ``Config``: values are converted to the declared types
    and checked (:func:`check_config`) when a config is built."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, coerce(type(self), f.name, getattr(self, f.name)))
        check_config(self)

    def with_preset(self, values: dict, name: str | None = None):
        """This config with ``values`` (setting -> value) wherever a setting is left at its
        class default: a preset that never overrides what was set explicitly. With ``name``,
        only if the config's ``preset`` setting is ``name`` (else the config itself)."""
        if name is not None and getattr(self, "preset", None) != name:
            return self
        base = type(self)()
        return dataclasses.replace(self, **{k: v for k, v in values.items()
                                            if getattr(self, k) == getattr(base, k)})

"""Valid ranges of hyperparameters and metric parameters, declared once and checked before any work.

A range is a short string read by :func:`check_range`:

* ``">= 1"``, ``"> 0"``, ``"<= 1"``, ``"< 1"`` — a bound;
* ``"[0, 1)"``, ``"(0, 1]"``, ``"[0, 1]"`` — an interval (``inf`` allowed as an end);
* ``"each >= 1"`` (any of the above after ``each``) — every element of a list;
* a tuple of strings — the value must be one of them.

Numbers are finite (``inf`` only where a range's closed end is ``inf]``) and integers are
below ``2**31`` (``INT_LIMIT``): no machine trains that many steps or allocates that many
units. The elements of a list have the type of its default's elements.

``None`` values are always accepted (they mean "the default behaviour" wherever a default is
``None``). The message names the owner (a method or metric), the key, the value and the
accepted range, so that :mod:`bench.config` only has to prefix the file and the table.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

Range = str | tuple[str, ...] | Callable[[Any], object]  # a callable raises ValueError on a bad value
#: integers of hyperparameters and metric parameters stay below this: a larger one cannot work on any machine
INT_LIMIT = 2**31

_BOUND = re.compile(r"^(>=|>|<=|<)\s*(-?[\d.e+-]+|inf)$")
_INTERVAL = re.compile(r"^([\[(])\s*(-?[\d.e+-]+|-inf)\s*,\s*(-?[\d.e+-]+|inf)\s*([\])])$")


def describe(spec: Range) -> str:
    """The accepted range in words, for messages."""
    if callable(spec):
        return (spec.__doc__ or spec.__name__).strip().splitlines()[0]
    if isinstance(spec, tuple):
        return "one of " + ", ".join(repr(s) for s in spec)
    return spec if not spec.startswith("each") else f"every element {spec[4:].strip()}"


def _within(value: float, spec: str) -> bool:
    m = _BOUND.match(spec)
    if m:
        op, bound = m.group(1), float(m.group(2))
        return {">=": value >= bound, ">": value > bound, "<=": value <= bound, "<": value < bound}[op]
    m = _INTERVAL.match(spec)
    if m:
        lo, hi = float(m.group(2)), float(m.group(3))
        low_ok = value >= lo if m.group(1) == "[" else value > lo
        high_ok = value <= hi if m.group(4) == "]" else value < hi
        return low_ok and high_ok
    raise ValueError(f"malformed range {spec!r} (expected e.g. '>= 1', '[0, 1)', 'each > 0' or a tuple of choices)")


def check_range(owner: str, key: str, value: Any, spec: Range) -> None:
    """Raise ``ValueError`` naming ``owner``, ``key``, ``value`` and ``spec`` when ``value`` is outside it."""
    if value is None:
        return
    if callable(spec):  # a checker that raises ValueError with its own explanation
        try:
            spec(value)
        except ValueError as exc:
            raise ValueError(f"{owner}: {key} = {value!r}: {exc}") from None
        return
    if isinstance(spec, tuple):
        ok = value in spec
    elif spec.startswith("each"):
        inner = spec[4:].strip()
        ok = isinstance(value, (list, tuple)) and all(_number_within(v, inner) for v in value)
    else:
        ok = _number_within(value, spec)
    if not ok:
        raise ValueError(f"{owner}: {key} = {value!r} is out of range; expected {describe(spec)}"
                         f"{_LIMITS if _beyond_limits(value) else ''}")


_LIMITS = " (a finite number; an integer below 2**31)"


def _beyond_limits(value: Any) -> bool:
    values = value if isinstance(value, (list, tuple)) else [value]
    return any(isinstance(v, (int, float)) and not isinstance(v, bool) and
               (math.isinf(v) or (isinstance(v, int) and abs(v) >= INT_LIMIT)) for v in values)


def _number_within(value: Any, spec: str) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return False
    if math.isinf(value) and not spec.rstrip().endswith("inf]"):
        return False  # "> 0" means a finite positive number: inf trains to nothing
    if isinstance(value, int) and abs(value) >= INT_LIMIT:
        return False
    return _within(float(value), spec)


def n_jobs(value: Any) -> None:
    """a non-zero integer below 2**31 (joblib's n_jobs: -1 = every core) or None"""
    if isinstance(value, bool) or not isinstance(value, int) or value == 0 or abs(value) >= INT_LIMIT:
        raise ValueError("expected a non-zero integer (joblib's n_jobs: 1 = no parallelism, -1 = every core) or None")


def check_type(owner: str, key: str, value: Any, default: Any) -> Any:
    """Check ``value`` against the type of ``default`` (ints are accepted for floats); return it coerced.

    ``key`` is written as given (e.g. ``"hyperparameter 'lr'"``).
    """
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
        value = list(value) if ok else value
        if ok and default:
            for element in value:
                check_type(owner, f"{key} (element {element!r})", element, default[0])
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise TypeError(
            f"{owner}: {key} must be {type(default).__name__} (like the default {default!r}), "
            f"got {type(value).__name__} {value!r}"
        )
    return value

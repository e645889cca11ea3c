"""One check for numeric options, shared by every ``validate()`` (segment, train, sample, generator).

A NaN, an infinity, a negative batch or a zero tile is refused where it enters, with one line that
names the option as the command line spells it.
"""

from __future__ import annotations

import math
from numbers import Real


class TooBig(MemoryError):
    """A job refused up front because it would not fit in memory; the message says what to change."""


def number(value, name: str, *, lo=None, hi=None, integer: bool = False, lo_open: bool = False,
           hi_open: bool = False, none_ok: bool = False):
    """``value`` if it is a finite number within the bounds, else ``ValueError`` naming ``name``."""
    if value is None and none_ok:
        return None
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok and integer:
        ok = float(value) == int(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        if lo is not None and hi is not None:
            span = f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        elif lo is not None:
            span = f"greater than {lo}" if lo_open else f"at least {lo}"
        elif hi is not None:
            span = f"less than {hi}" if hi_open else f"at most {hi}"
        else:
            span = "a finite number"
        whole = " (a whole number)" if integer else ""
        raise ValueError(f"{name} must be {span}{whole}, got {value!r}")
    return int(value) if integer else value


def choice(value, name: str, choices) -> object:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value

"""Ranges of numeric options: one :class:`Range` per option, its check, its words, and the command-line type made
from it, so an option's range is stated once and every place that reads the option checks it the same way.

A value out of range is refused in one line that names the option, the value and the range
(``--threads: expected an integer in 1..1024, got 5000``), before any work. Standard library only: the command
line builds its parsers from these without importing torch.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any, Callable

MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Range:
    """The values a numeric option takes.

    Args:
        low, high: the bounds (``high`` None: no upper bound, only for what cannot grow work or memory).
        integer: an integer (else any finite number; an integer is accepted for a number).
        low_open: ``low`` itself is excluded (a learning rate > 0).
        high_open: ``high`` itself is excluded (a fraction < 1).
        optional: None is allowed (the option's default applies).
    """

    low: float
    high: float | None
    integer: bool = True
    low_open: bool = False
    high_open: bool = False
    optional: bool = False

    def describe(self) -> str:
        """``an integer in 1..1024``, ``a number in (0, 1)``, ``a number >= 0``, ``... or null``."""
        kind = "an integer" if self.integer else "a number"
        if self.high is None:
            text = f"{kind} {'>' if self.low_open else '>='} {_show(self.low)}"
        elif self.integer:
            text = f"{kind} in {_show(self.low)}..{_show(self.high)}"
        else:
            text = (f"{kind} in {'(' if self.low_open else '['}{_show(self.low)}, {_show(self.high)}"
                    f"{')' if self.high_open else ']'}")
        return text + (" or null" if self.optional else "")

    def contains(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if isinstance(value, float) and not math.isfinite(value):  # (an int of any size is finite)
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def check(self, value: Any, name: str) -> Any:
        """``value`` when it is in range; else ValueError ``{name}: expected ..., got ...``."""
        if not self.contains(value):
            raise ValueError(f"{name}: expected {self.describe()}, got {_shown_value(value)}")
        return value

    def arg(self) -> Callable[[str], Any]:
        """An argparse ``type`` for this range: the text parsed as an integer or number, then checked; argparse
        reports a refusal as ``argument --name: expected ..., got ...`` (one line, exit code 2)."""

        def parse(text: str) -> Any:
            try:
                value: Any = int(text) if self.integer else float(text)
            except (ValueError, OverflowError):
                raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {_shown_value(text)}") from None
            if not self.contains(value):
                raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {_shown_value(text)}")
            return value

        parse.range = self  # type: ignore[attr-defined]  # what the option tests enumerate
        parse.__name__ = "integer" if self.integer else "number"  # argparse names the type in its messages
        return parse


def integer(low: int, high: int | None, *, optional: bool = False) -> Range:
    return Range(low, high, integer=True, optional=optional)


def number(low: float, high: float | None, *, low_open: bool = False, high_open: bool = False,
           optional: bool = False) -> Range:
    return Range(low, high, integer=False, low_open=low_open, high_open=high_open, optional=optional)


def _show(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}"


def _shown_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# Ranges shared by many options.
SEED = integer(0, MAX_SEED)
THREADS = integer(1, 1024)  # torch crashes (SIGSEGV) on absurd thread counts
BATCH = integer(1, 1 << 20)

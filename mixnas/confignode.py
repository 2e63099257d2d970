"""A YAML mapping being validated, with its file and YAML path, so that every error names both.

The experiment config (:mod:`mixnas.launch.config`) and the search-space reader
(:mod:`mixnas.search_space.spaces.yaml_reader`) validate user YAML with this one helper, so their messages read
alike: ``experiments/q.yaml: execution.max_concurrent: expected an integer >= 1, got 0``. Values are shown as the
user wrote them in YAML (``null``, ``true``, ``[1, 2]``), never as Python reprs.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from mixnas.bounds import Range
from mixnas.errors import ConfigError, MixnasError

MAX_CONFIG_INT = 10**18  # no count, size or seed in a config comes near this
_SHOWN_CHARS = 200


def show_value(value: Any) -> str:
    """A value as a user wrote it in YAML (tuples as lists, ``null``, ``true``), shortened for a message."""
    if isinstance(value, tuple):
        return show_values(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int) and value.bit_length() > 200:  # repr() refuses ints of more than 4,300 digits
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def show_values(values: Iterable[Any]) -> str:
    """A sequence of values as a YAML flow list: ``[1, true, null]``."""
    return "[" + ", ".join(show_value(v) for v in values) + "]"


def _digits(value: int) -> int:
    return int(abs(value).bit_length() * 0.30103) + 1


class ConfigNode:
    """A mapping being validated, with its file (``source``) and YAML path, so every error names both.

    Typed getters (:meth:`string`, :meth:`integer`, :meth:`number`, :meth:`boolean`, :meth:`mapping`,
    :meth:`child`) record the keys they read; :meth:`finish` then rejects any other key, so a typo is an error
    rather than a silently ignored setting. A node built with ``keys`` rejects unknown keys at once instead,
    listing the allowed ones in their declared order.

    Args:
        data: the value found at ``path`` (None reads as an empty mapping).
        path: its YAML path (``""`` for the top level).
        source: the file name (or ``preset NAME``) that errors start with.
        error: the :class:`~mixnas.errors.MixnasError` subclass to raise.
        keys: the keys allowed here, if known up front.
    """

    def __init__(self, data: Any, path: str, source: str, *, error: type[MixnasError] = ConfigError,
                 keys: Sequence[str] | None = None) -> None:
        self.path = path
        self.source = source
        self.error_class = error
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise self.error(path, data, "a mapping")
        self.data = dict(data)
        self.used: set[str] = set()
        self.allowed: tuple[str, ...] = tuple(keys) if keys is not None else ()
        if keys is not None:
            for key in self.data:
                if key not in self.allowed:
                    raise self.fail(self.where(str(key)), f"unknown key; allowed keys here: {list(self.allowed)}")

    def where(self, key: str) -> str:
        """The YAML path of ``key`` in this mapping."""
        return f"{self.path}.{key}" if self.path else key

    def fail(self, where: str, message: str) -> MixnasError:
        """An error ``SOURCE: WHERE: MESSAGE`` (to raise)."""
        return self.error_class(f"{self.source}: {where or '<top level>'}: {message}")

    def error(self, where: str, value: Any, allowed: str) -> MixnasError:
        """An error ``SOURCE: WHERE: expected ALLOWED, got VALUE`` (to raise)."""
        return self.fail(where, f"expected {allowed}, got {show_value(value)}")

    def get(self, key: str, default: Any = None, *, required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise self.fail(self.where(key), "required key is missing")
            return default
        return self.data[key]

    def child(self, key: str, *, keys: Sequence[str] | None = None) -> ConfigNode:
        """The mapping at ``key`` as a node (a missing key or null reads as an empty mapping)."""
        return ConfigNode(self.get(key), self.where(key), self.source, error=self.error_class, keys=keys)

    def string(self, key: str, default: str | None = None, *, required: bool = False,
               choices: tuple[str, ...] | None = None) -> str | None:
        value = self.get(key, default, required=required)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.error(self.where(key), value, "a non-empty string")
        if choices is not None and value not in choices:
            raise self.error(self.where(key), value, f"one of {list(choices)}")
        return value

    def integer(self, key: str, default: int | None = None, *, minimum: int | None = None,
                required: bool = False) -> int | None:
        value = self.get(key, default, required=required)
        if value is None:
            return None
        allowed = "an integer" + (f" >= {minimum}" if minimum is not None else "")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_CONFIG_INT:
            # Far beyond any count or seed; also keeps repr() (4,300-digit limit) and float() from failing later.
            raise self.fail(self.where(key), f"expected {allowed} of at most {MAX_CONFIG_INT}, got an integer of "
                            f"about {_digits(value)} digits")
        if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
            raise self.error(self.where(key), value, allowed)
        return value

    def number(self, key: str, default: float | None = None, *, minimum: float | None = None,
               positive: bool = False, required: bool = False) -> float | None:
        value = self.get(key, default, required=required)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 1000:
            # float() (and math.isfinite) of an int beyond the float range overflows
            raise self.fail(self.where(key), f"expected a finite number, got an integer of about {_digits(value)} "
                            "digits")
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and positive:
            ok = value > 0
        if ok and minimum is not None:
            ok = value >= minimum
        if not ok:
            what = "a positive number" if positive else "a number" + (f" >= {minimum}" if minimum is not None else "")
            raise self.error(self.where(key), value, what)
        return float(value)

    def ranged(self, key: str, default: float | None, rng: Range, *, required: bool = False) -> Any:
        """The number at ``key`` when it is in ``rng`` (:mod:`mixnas.bounds`: the option's one stated range); an
        integer for an integer range, a float otherwise; None when missing and ``default`` is None."""
        value = self.get(key, default, required=required)
        if value is None and (rng.optional or (default is None and not required)):
            return None
        if rng.contains(value):
            return value if rng.integer else float(value)
        shown: Any = value
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**15:
            shown = f"an integer of about {_digits(value)} digits"  # (repr of a huge int fails)
        raise self.error(self.where(key), shown, rng.describe())

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self.error(self.where(key), value, "true or false")
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        """A deep copy of the mapping at ``key`` (``{}`` when missing or null), not validated further."""
        value = self.get(key, {})
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.error(self.where(key), value, "a mapping")
        return copy.deepcopy(dict(value))

    def path_value(self, key: str, base: Path, *, required: bool = False) -> str | None:
        value = self.string(key, required=required)
        if value is None:
            return None
        return str((base / Path(value).expanduser()).resolve())

    def finish(self) -> None:
        """Reject keys no one asked for (typos must not be silently ignored)."""
        unknown = sorted(set(self.data) - self.used - set(self.allowed), key=str)
        if unknown:
            raise self.fail(self.where(str(unknown[0])), f"unknown key; allowed keys here: {sorted(self.used)}")


__all__ = ["MAX_CONFIG_INT", "ConfigNode", "show_value", "show_values"]


def dataclass_fields(cls: type, data: Any, where: str, error: type[MixnasError] = ConfigError, *,
                     what: str = "a mapping") -> dict[str, Any]:
    """``data`` as keyword arguments of the dataclass ``cls``: a mapping whose keys are all fields of ``cls``.

    Raises:
        error: ``data`` is not a mapping, or it has keys ``cls`` lacks (the message names ``where`` and the
            allowed keys).
    """
    import dataclasses

    if not isinstance(data, Mapping):
        raise error(f"{where}: expected {what}, got {show_value(data) if data is None else type(data).__name__}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(str(k) for k in set(data) - set(known))
    if unknown:
        raise error(f"{where}: unknown keys {unknown}; allowed: {sorted(known)}")
    return dict(data)

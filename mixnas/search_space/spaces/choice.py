"""Generic choice spaces: named dimensions of numbers, strings or bools, decoding to ``{name: value}``.

Used for tabular benchmarks (NAS-Bench-Macro, Su et al., CVPR 2021) and hyper-parameter spaces.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from mixnas.confignode import show_value
from mixnas.errors import ConfigError
from mixnas.search_space.spaces.base import Dimension, Encoding, SearchSpace, jsonable


class ChoiceSpace(SearchSpace):
    """Named dimensions with finite lists of numbers, strings or bools; decodes to ``{name: value}``.

    Dimensions with a single choice are constants: they appear in decoded dicts but not in encodings.

    Args:
        dimensions: the decisions, in encoding order (single-choice ones become constants).
        name: a label for messages and reports.
    """

    def __init__(self, dimensions: Iterable[Dimension], *, name: str = "choices") -> None:
        all_dims = tuple(dimensions)
        for dim in all_dims:
            if not isinstance(dim, Dimension):
                raise ConfigError(f"space {name!r}: expected Dimension objects, got {type(dim).__name__}")
            for value in dim.choices:
                if not isinstance(value, (bool, int, float, str)):
                    raise ConfigError(
                        f"space {name!r}: {dim.name}: choice {value!r} is a {type(value).__name__}; "
                        "expected a number, a string or a bool"
                    )
        self._all = all_dims
        self._init_dimensions(name, (d for d in all_dims if d.size > 1))

    @property
    def constants(self) -> dict[str, Any]:
        return {d.name: d.choices[0] for d in self._all if d.size == 1}

    def decode(self, encoding: Sequence[int]) -> dict[str, Any]:
        """The ``{name: value}`` mapping of an encoding, constants included, in declaration order."""
        enc = iter(self.validate_encoding(encoding))
        return {d.name: d.choices[next(enc) if d.size > 1 else 0] for d in self._all}

    def encode(self, x: Mapping[str, Any]) -> Encoding:
        """Inverse of :meth:`decode`; raises :class:`ConfigError` naming the first key or value not in the space."""
        if not isinstance(x, Mapping):
            raise ConfigError(f"space {self._name!r}: expected a mapping of dimension values, got {type(x).__name__}")
        names = [d.name for d in self._all]
        unknown = sorted(set(x) - set(names), key=str)
        if unknown:
            raise ConfigError(f"space {self._name!r}: unknown dimensions {unknown}; expected {names}")
        missing = [n for n in names if n not in x]
        if missing:
            raise ConfigError(f"space {self._name!r}: missing dimensions {missing}")
        indices = [d.index(x[d.name]) for d in self._all]
        return tuple(i for i, d in zip(indices, self._all) if d.size > 1)

    def table_key(self, encoding: Sequence[int], sep: str = "") -> str:
        """The decoded values joined as text, e.g. ``'22212220'`` for NAS-Bench-Macro (keys of tabular benchmarks)."""
        values = self.decode(encoding)
        return sep.join(show_value(v) if isinstance(v, bool) else str(v) for v in values.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self._name,
            "kind": "choices",
            "dimensions": {d.name: [jsonable(c) for c in d.choices] for d in self._all},
        }


def nas_bench_macro_key(encoding: Sequence[int]) -> str:
    """NAS-Bench-Macro table key of an encoding of the ``nas_bench_macro`` preset (one digit per layer)."""
    digits = tuple(encoding)
    if len(digits) != 8 or any(isinstance(d, bool) or d not in (0, 1, 2) for d in digits):
        raise ConfigError(f"NAS-Bench-Macro encoding {list(digits)}: expected 8 indices, each 0, 1 or 2")
    return "".join(str(int(d)) for d in digits)


def nas_bench_macro_encoding(key: str) -> Encoding:
    """Inverse of :func:`nas_bench_macro_key`: ``'22212220'`` -> ``(2, 2, 2, 1, 2, 2, 2, 0)``."""
    if not isinstance(key, str) or len(key) != 8 or any(c not in "012" for c in key):
        raise ConfigError(f"NAS-Bench-Macro key {key!r}: expected 8 characters, each 0, 1 or 2")
    return tuple(int(c) for c in key)


__all__ = ["ChoiceSpace", "nas_bench_macro_encoding", "nas_bench_macro_key"]

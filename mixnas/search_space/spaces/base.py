"""What every search space is: named :class:`Dimension`\\ s with finite choices, and encodings over them.

An *encoding* is a tuple of ints, one index into each dimension's choices. Controllers only ever see a space's
:attr:`~SearchSpace.dimensions` and encodings; :meth:`~SearchSpace.decode` turns an encoding into what is
evaluated. Sampling, mutation and neighbourhoods work on encodings alone, so they live here, shared by
:class:`~mixnas.search_space.spaces.choice.ChoiceSpace` and :class:`~mixnas.search_space.spaces.stage.StageSpace`.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from mixnas.confignode import show_value, show_values
from mixnas.errors import ConfigError, MixnasError

Encoding = tuple[int, ...]

DEFAULT_MAX_REJECTIONS = 1000


def same_value(a: Any, b: Any) -> bool:
    """Equality that keeps bools apart from numbers (``True == 1`` in Python, not in a search space)."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def jsonable(value: Any) -> Any:
    """A choice as JSON / YAML data (tuples as lists)."""
    return [jsonable(v) for v in value] if isinstance(value, tuple) else value


@dataclass(frozen=True)
class Dimension:
    """One searchable decision: a name and a finite tuple of distinct choices.

    Attributes:
        name: the YAML path of the decision, e.g. ``stages[2].first.kernel_groups`` or ``layer3``.
        choices: the values, in the order encodings index them.
    """

    name: str
    choices: tuple

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", tuple(self.choices))
        if not self.choices:
            raise ConfigError(f"dimension {self.name!r}: expected at least one choice, got none")
        for i, value in enumerate(self.choices):
            if any(same_value(value, earlier) for earlier in self.choices[:i]):
                raise ConfigError(
                    f"dimension {self.name!r}: choice {show_value(value)} appears twice; choices must be distinct"
                )

    @property
    def size(self) -> int:
        return len(self.choices)

    def index(self, value: Any) -> int:
        """Index of ``value`` among the choices; raises :class:`ConfigError` if it is not one of them."""
        for i, choice in enumerate(self.choices):
            if same_value(choice, value):
                return i
        raise ConfigError(f"{self.name}: {show_value(value)} is not one of the choices {show_values(self.choices)}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "choices": [jsonable(c) for c in self.choices]}


class SearchSpace:
    """What every search space offers; subclasses supply :meth:`decode`, :meth:`encode` and :meth:`to_dict`.

    Subclasses set ``self._name`` and ``self._dimensions`` in their constructor (via :meth:`_init_dimensions`).
    Sampling, mutation and neighbourhoods work on encodings alone, so they are shared here.
    """

    _name: str
    _dimensions: tuple[Dimension, ...]
    _sizes: np.ndarray
    max_rejections: int = DEFAULT_MAX_REJECTIONS

    def _init_dimensions(self, name: str, dimensions: Iterable[Dimension]) -> None:
        dims = tuple(dimensions)
        names = [d.name for d in dims]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"space {name!r}: dimension names must be unique, repeated: {duplicates}")
        self._name = name
        self._dimensions = dims
        self._sizes = np.array([d.size for d in dims], dtype=np.int64)
        self._size_list = tuple(d.size for d in dims)

    # --- shape ----------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def dimensions(self) -> tuple[Dimension, ...]:
        return self._dimensions

    @property
    def cardinality(self) -> int:
        """Exact number of encodings (the product of the choice counts; constraints are not applied)."""
        return math.prod(d.size for d in self._dimensions)

    @property
    def log10_cardinality(self) -> float:
        return float(sum(math.log10(d.size) for d in self._dimensions))

    def __len__(self) -> int:
        return len(self._dimensions)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self._name!r}, dimensions={len(self._dimensions)}, "
            f"cardinality={self.cardinality})"
        )

    # --- encodings ------------------------------------------------------------------------------------------
    def validate_encoding(self, encoding: Sequence[int]) -> Encoding:
        """Return ``encoding`` as a tuple of ints, or raise :class:`ConfigError` naming what is wrong."""
        if (
            type(encoding) is tuple
            and len(encoding) == len(self._size_list)
            and (
                not encoding
                or (set(map(type, encoding)) == {int} and min(encoding) >= 0
                    and all(map(operator.lt, encoding, self._size_list)))
            )
        ):
            return encoding  # the common case, checked at C speed
        try:
            values = tuple(encoding)
        except TypeError:
            raise ConfigError(
                f"space {self._name!r}: encoding {encoding!r}: expected a sequence of "
                f"{len(self._dimensions)} integers"
            ) from None
        if len(values) != len(self._dimensions):
            raise ConfigError(
                f"space {self._name!r}: encoding {list(values)}: expected {len(self._dimensions)} integers "
                f"(one per dimension), got {len(values)}"
            )
        for i, (value, dim) in enumerate(zip(values, self._dimensions)):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise ConfigError(
                    f"space {self._name!r}: encoding[{i}] ({dim.name}): expected an integer index, got {value!r}"
                )
            if not 0 <= value < dim.size:
                raise ConfigError(
                    f"space {self._name!r}: encoding[{i}] ({dim.name}): index {value} out of range, "
                    f"expected 0..{dim.size - 1}"
                )
        return tuple(int(v) for v in values)

    def is_feasible(self, encoding: Sequence[int]) -> bool:
        """Whether the encoding satisfies the space's hard constraints (none for a plain space)."""
        self.validate_encoding(encoding)
        return True

    def _infeasible_error(self, tries: int) -> MixnasError:
        return ConfigError(f"space {self._name!r}: no feasible encoding found in {tries} tries")

    def sample(self, rng: np.random.Generator) -> Encoding:
        """A uniformly random encoding that satisfies the hard constraints.

        Rejection sampling with at most :attr:`max_rejections` rejections; raises :class:`ConfigError` when
        nothing feasible turned up.
        """
        for _ in range(self.max_rejections + 1):
            encoding = tuple(rng.integers(0, self._sizes).tolist())
            if self._satisfies(encoding):
                return encoding
        raise self._infeasible_error(self.max_rejections + 1)

    def _satisfies(self, encoding: Encoding) -> bool:
        """Constraint check on an encoding already known to be valid (subclasses with constraints override)."""
        return True

    def mutate(self, encoding: Sequence[int], rng: np.random.Generator, n: int = 1) -> Encoding:
        """Change exactly ``n`` distinct dimensions to a different choice, keeping the hard constraints.

        Tries at most :attr:`max_rejections` + 1 mutants; raises :class:`ConfigError` if none is feasible.
        """
        parent = self.validate_encoding(encoding)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= len(self._dimensions):
            raise ConfigError(
                f"space {self._name!r}: mutate: n must be an integer in 1..{len(self._dimensions)}, got {n!r}"
            )
        for _ in range(self.max_rejections + 1):
            child = list(parent)
            for d in rng.choice(len(self._dimensions), size=int(n), replace=False):
                # draw among the other choices only, so the dimension always changes
                shift = int(rng.integers(1, self._dimensions[d].size))
                child[d] = (child[d] + shift) % self._dimensions[d].size
            mutant = tuple(child)
            if self._satisfies(mutant):
                return mutant
        raise self._infeasible_error(self.max_rejections + 1)

    def neighbours(self, encoding: Sequence[int]) -> list[Encoding]:
        """Every encoding at Hamming distance 1, by dimension then choice (constraints are not applied)."""
        base = self.validate_encoding(encoding)
        result = []
        for d, dim in enumerate(self._dimensions):
            for i in range(dim.size):
                if i != base[d]:
                    result.append(base[:d] + (i,) + base[d + 1 :])
        return result

    def contains(self, x: Any) -> bool:
        """Whether ``x`` (what :meth:`decode` returns) is a point of this space."""
        try:
            self.encode(x)
        except ValueError:
            return False
        return True

    # --- to be supplied by subclasses -----------------------------------------------------------------------
    def decode(self, encoding: Sequence[int]) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, x: Any) -> Encoding:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError


__all__ = ["DEFAULT_MAX_REJECTIONS", "Dimension", "Encoding", "SearchSpace", "jsonable", "same_value"]

"""Look-up evaluation for tabular NAS benchmarks: every architecture of a space was trained once, ahead of time.

A table maps a *key* (text that names one encoding) to its metrics. Supported files:

* JSON object ``{key: {metric: value, ...}, ...}``: NAS-Bench-Macro (Su et al., "Prioritized Architecture
  Sampling with Monto-Carlo Tree Search", CVPR 2021), whose keys are one digit per layer (``"22212220"``) and whose
  records hold ``mean_acc``, ``std``, ``params``, ``flops`` and the list ``test_acc`` of per-seed accuracies.
* JSON list of records ``[{key_column: key, metric: value, ...}, ...]``.
* CSV with a header row, one column holding the key.

The key of an encoding is, with ``key_by="indices"`` (the default), its choice indices joined by ``key_separator``
(``""`` by default: ``(2, 2, 1) -> "221"``), or with ``key_by="values"`` the space's ``table_key`` (the decoded
values, constants included, joined by ``key_separator``). Keys are never ambiguous: with an empty separator every
dimension's choices must print with one width (fewer than 10 choices, for indices), and with a separator no choice
may contain it; otherwise the evaluator refuses at construction. Given the space, it also refuses a table of which
no key is one the space produces (the wrong file, or keys in another format), before any trial runs.

Metrics are the numeric scalar fields of the records; list-valued fields such as ``test_acc`` are left out, and
asking for one is an error (averaging it silently would hide what the number means).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixnas.errors import ConfigError, DataError
from mixnas.evaluators.base import TrialContext
from mixnas.outcome import Status, TrialOutcome

logger = logging.getLogger(__name__)

NAS_BENCH_MACRO_OPTIMUM = 93.13  # best mean_acc of NAS-Bench-Macro CIFAR-10 ("22212220"), from its README
KEY_BY = ("indices", "values")
_PROBE_SEP = "\x00"  # splits a table_key into its parts when the per-dimension texts are worked out


class TabularEvaluator:
    """Metrics of an encoding (or key) looked up in a table read from a CSV or JSON file.

    Args:
        path: The table file (``.json`` or ``.csv``; other suffixes are read by content: JSON if it parses).
        space: The search space whose encodings are looked up; needed for ``key_by="values"``, and with it the
            key format is checked against the space and the table at construction.
        key_by: ``"indices"`` (choice indices) or ``"values"`` (the space's ``table_key``: decoded values).
        key_column: For CSV files and JSON lists, the field holding the key.
        metrics: The metric names to return; ``None`` means every numeric scalar field of the records.
        key_separator: Joins the parts of a key.

    Raises:
        ConfigError: the key format would be ambiguous for the space, or no key of the table is one the space
            produces.
        DataError: the file is missing or malformed, a record lacks a requested metric, or keys repeat.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        space: Any = None,
        key_by: str = "indices",
        key_column: str = "key",
        metrics: Sequence[str] | None = None,
        key_separator: str = "",
    ) -> None:
        self.path = Path(path)
        self.key_column = key_column
        self.key_by = key_by
        self.key_separator = key_separator
        if key_by not in KEY_BY:
            raise ConfigError(f"{self.path}: key_by must be one of {list(KEY_BY)}, got {key_by!r}")
        if not isinstance(key_separator, str):
            raise ConfigError(f"{self.path}: key_separator must be a string, got {key_separator!r}")
        self._format = None if space is None else _KeyFormat.of(self.path, space, key_by, key_separator)
        if space is None and key_by == "values":
            raise ConfigError(f"{self.path}: key_by 'values' needs the search space (its table_key makes the keys)")
        records = _read_records(self.path, key_column)
        if not records:
            raise DataError(f"{self.path}: the table is empty")
        self.metrics = tuple(metrics) if metrics is not None else _scalar_fields(records)
        if not self.metrics:
            raise DataError(f"{self.path}: no numeric metric fields found")
        self._table = {key: self._metrics_of(key, record) for key, record in records.items()}
        if self._format is not None:
            self._check_keys(space)

    def key(self, encoding: Sequence[int]) -> str:
        """The table key of an encoding.

        Raises:
            ConfigError: without a space, an index of 10 or more with an empty ``key_separator`` (ambiguous).
        """
        if self._format is not None:
            return self._format.key(encoding)
        indices = [int(i) for i in encoding]
        if not self.key_separator and any(i >= 10 for i in indices):
            raise ConfigError(
                f"{self.path}: encoding {tuple(indices)} has an index of 10 or more, so its key with an empty "
                "key_separator would be ambiguous; set key_separator or give the search space"
            )
        return self.key_separator.join(str(i) for i in indices)

    def _check_keys(self, space: Any) -> None:
        """Called only when a space (and so ``self._format``) is given."""
        if self._format is None:
            return
        produced = sum(self._format.parse(key) is not None for key in self._table)
        if produced == 0:
            example = self._format.key(tuple(0 for _ in space.dimensions))
            raise ConfigError(
                f"{self.path}: none of the table's keys (first: {list(self._table)[:3]}) is a key the space "
                f"{getattr(space, 'name', '')!r} produces; its keys are {self.key_by} joined by "
                f"{self.key_separator!r}, e.g. {example!r} (options key_by, key_separator)"
            )
        if produced < len(self._table):
            logger.info("%s: %d of %d keys are not keys of the space", self.path, len(self._table) - produced,
                        len(self._table))

    def row(self, encoding_or_key: Sequence[int] | str) -> dict[str, float]:
        """The table's row of an encoding or key: its metrics (a new dict each call). A query, not a trial: a
        search scores candidates with :meth:`score`.

        Raises:
            DataError: the key is not in the table.
        """
        key = encoding_or_key if isinstance(encoding_or_key, str) else self.key(encoding_or_key)
        try:
            return dict(self._table[key])
        except KeyError:
            raise DataError(f"{self.path}: key {key!r} is not in the table ({len(self._table)} entries)") from None

    def score(self, candidate: Any, context: TrialContext) -> TrialOutcome:
        """The :class:`~mixnas.evaluators.base.Evaluator` interface: the row of ``context.encoding``.

        An encoding the table has no row for (or, without the space, no unambiguous key for) is a failure that no
        retry can mend (``retryable`` False).
        """
        del candidate
        try:
            return TrialOutcome(Status.OK, self.row(context.encoding))
        except (DataError, ConfigError) as exc:
            return TrialOutcome.failure(str(exc), retryable=False)

    def keys(self) -> list[str]:
        """Every key of the table, in file order."""
        return list(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def best(self, metric: str, direction: str = "max") -> tuple[str, float]:
        """The key with the best value of ``metric`` and that value."""
        if metric not in self.metrics:
            raise DataError(f"{self.path}: unknown metric {metric!r}; metrics: {list(self.metrics)}")
        if direction not in ("max", "min"):
            raise DataError(f"direction must be 'max' or 'min', got {direction!r}")
        pick = max if direction == "max" else min
        key = pick(self._table, key=lambda k: self._table[k][metric])
        return key, self._table[key][metric]

    def _metrics_of(self, key: str, record: Mapping[str, Any]) -> dict[str, float]:
        out = {}
        for name in self.metrics:
            if name not in record:
                raise DataError(f"{self.path}: entry {key!r} has no metric {name!r}; it has {sorted(record)}")
            value = _as_number(record[name])
            if value is None:
                raise DataError(f"{self.path}: entry {key!r}: metric {name!r} is not a number: {record[name]!r}")
            out[name] = value
        return out


def nas_bench_macro(path: str | Path, space: Any = None) -> TabularEvaluator:
    """The NAS-Bench-Macro CIFAR-10 table (``mean_acc``, ``std``, ``params``, ``flops``), keyed by 8 digits."""
    return TabularEvaluator(path, space=space, metrics=("mean_acc", "std", "params", "flops"))


@dataclass(frozen=True)
class _KeyFormat:
    """How a space's encodings print as table keys: the text of every choice of every part of a key.

    ``parts[p]`` lists the texts of part ``p`` (one per choice) and ``dims[p]`` the encoding position it comes from
    (``None`` for a constant of the space, which ``key_by="values"`` prints too).
    """

    key_by: str
    separator: str
    parts: tuple[tuple[str, ...], ...]
    dims: tuple[int | None, ...]
    space: Any

    @classmethod
    def of(cls, path: Path, space: Any, key_by: str, separator: str) -> _KeyFormat:
        sizes = [len(d.choices) for d in space.dimensions]
        names = [d.name for d in space.dimensions]
        if key_by == "indices":
            parts = tuple(tuple(str(i) for i in range(k)) for k in sizes)
            dims: tuple[int | None, ...] = tuple(range(len(sizes)))
        else:
            parts, dims = _value_texts(path, space, sizes)
            names = [names[d] if d is not None else "a constant" for d in dims]
        for p, texts in enumerate(parts):
            _check_part(path, names[p], key_by, texts, separator)
        return cls(key_by, separator, parts, dims, space)

    def key(self, encoding: Sequence[int]) -> str:
        sizes = [len(t) for t, d in zip(self.parts, self.dims) if d is not None]
        if len(encoding) != len(sizes) or any(not 0 <= int(i) < k for i, k in zip(encoding, sizes)):
            raise DataError(f"encoding {tuple(encoding)} is not one of the space's (choices per dimension: {sizes})")
        if self.key_by == "values":
            return self.space.table_key(encoding, sep=self.separator)
        return self.separator.join(self.parts[p][int(i)] for p, i in enumerate(encoding))

    def parse(self, key: str) -> tuple[int, ...] | None:
        """The encoding whose key is ``key``, or ``None`` if the space produces no such key."""
        if self.separator:
            pieces = key.split(self.separator)
        else:
            pieces, start = [], 0
            for texts in self.parts:
                pieces.append(key[start : start + len(texts[0])])
                start += len(texts[0])
            if start != len(key):
                return None
        if len(pieces) != len(self.parts):
            return None
        encoding = []
        for piece, texts, dim in zip(pieces, self.parts, self.dims):
            if piece not in texts:
                return None
            if dim is not None:
                encoding.append(texts.index(piece))
        return tuple(encoding)


def _value_texts(
    path: Path, space: Any, sizes: Sequence[int]
) -> tuple[tuple[tuple[str, ...], ...], tuple[int | None, ...]]:
    """The texts of each part of ``space.table_key`` and the encoding position behind each part."""
    if not callable(getattr(space, "table_key", None)):
        raise ConfigError(f"{path}: key_by 'values' needs a choices space (it has table_key), "
                          f"got a {type(space).__name__}")

    def split(encoding: tuple[int, ...]) -> list[str]:
        return space.table_key(encoding, sep=_PROBE_SEP).split(_PROBE_SEP)

    base = tuple(0 for _ in sizes)
    first = split(base)
    texts: list[list[str]] = [[t] for t in first]
    dims: list[int | None] = [None] * len(first)
    for d, k in enumerate(sizes):
        for c in range(1, k):
            varied = split(base[:d] + (c,) + base[d + 1 :])
            changed = [p for p, (a, b) in enumerate(zip(first, varied)) if a != b]
            if len(varied) == len(first) and not changed:
                raise ConfigError(f"{path}: keys by values would be ambiguous: choices 0 and {c} of dimension "
                                  f"{space.dimensions[d].name!r} print alike; use key_by 'indices'")
            if len(varied) != len(first) or len(changed) != 1:
                raise ConfigError(f"{path}: cannot tell the parts of the space's table keys apart "
                                  f"(choice {c} of dimension {space.dimensions[d].name!r}); use key_by 'indices'")
            dims[changed[0]] = d
            texts[changed[0]].append(varied[changed[0]])
    return tuple(tuple(t) for t in texts), tuple(dims)


def _check_part(path: Path, name: str, key_by: str, texts: Sequence[str], separator: str) -> None:
    """Refuse a key format under which two encodings could share a key."""
    what = f"{path}: keys by {key_by} with key_separator {separator!r} would be ambiguous: dimension {name!r}"
    if len(set(texts)) != len(texts):
        raise ConfigError(f"{what} has choices that print alike ({list(texts)}); use key_by 'indices'")
    if separator and any(separator in t for t in texts):
        raise ConfigError(f"{what} has a choice containing the separator ({list(texts)}); choose another one")
    if not separator and len({len(t) for t in texts}) > 1:
        shown = f"choices {list(texts)}"
        if key_by == "indices":
            shown = f"{len(texts)} choices (indices 0..{len(texts) - 1})"
        raise ConfigError(f"{what} has {shown} of different widths; set key_separator (e.g. '-')")


def _read_records(path: Path, key_column: str) -> dict[str, Mapping[str, Any]]:
    if not path.is_file():
        raise DataError(f"{path}: no such table file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the table: {exc}") from exc
    if path.suffix.lower() == ".csv":
        return _csv_records(path, text, key_column)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if path.suffix.lower() == ".json":
            raise DataError(f"{path}: not valid JSON: {exc}") from exc
        return _csv_records(path, text, key_column)
    return _json_records(path, data, key_column)


def _json_records(path: Path, data: Any, key_column: str) -> dict[str, Mapping[str, Any]]:
    if isinstance(data, Mapping):
        bad = next((k for k, v in data.items() if not isinstance(v, Mapping)), None)
        if bad is not None:
            raise DataError(f"{path}: entry {bad!r} is not an object of metrics")
        return {str(k): v for k, v in data.items()}
    if isinstance(data, list):
        return _keyed(path, data, key_column)
    raise DataError(
        f"{path}: expected a JSON object keyed by architecture or a list of records, got {type(data).__name__}"
    )


def _csv_records(path: Path, text: str, key_column: str) -> dict[str, Mapping[str, Any]]:
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or key_column not in reader.fieldnames:
        raise DataError(f"{path}: CSV header {reader.fieldnames} has no key column {key_column!r}")
    return _keyed(path, list(reader), key_column)


def _keyed(path: Path, rows: Iterable[Any], key_column: str) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or key_column not in row:
            raise DataError(f"{path}: record {i} has no key column {key_column!r}")
        key = str(row[key_column])
        if key in out:
            raise DataError(f"{path}: key {key!r} appears twice (record {i})")
        out[key] = {k: v for k, v in row.items() if k != key_column}
    return out


def _scalar_fields(records: Mapping[str, Mapping[str, Any]]) -> tuple[str, ...]:
    """Fields that hold a number in the first record, in its order."""
    first = next(iter(records.values()))
    return tuple(name for name, value in first.items() if _as_number(value) is not None)


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None

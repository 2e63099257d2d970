"""Look-up evaluation for tabular NAS benchmarks: every architecture of a space was trained once, ahead of time.

A table maps a *key* (text that names one encoding) to its metrics. Supported files:

* JSON object ``{key: {metric: value, ...}, ...}``: NAS-Bench-Macro (Su et al., "Prioritized Architecture
  Sampling with Monto-Carlo Tree Search", CVPR 2021), whose keys are one digit per layer (``"22212220"``) and whose
  records hold ``mean_acc``, ``std``, ``params``, ``flops`` and the list ``test_acc`` of per-seed accuracies.
* JSON list of records ``[{key_column: key, metric: value, ...}, ...]``.
* CSV with a header row, one column holding the key.

The key of an encoding is its indices joined by ``key_separator`` (``""`` by default: ``(2, 2, 1) -> "221"``),
so the table's keys must be written in choice indices. Metrics are the numeric scalar fields of the records;
list-valued fields such as ``test_acc`` are left out, and asking for one is an error (averaging it silently would
hide what the number means).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mixnas.errors import DataError

NAS_BENCH_MACRO_OPTIMUM = 93.13  # best mean_acc of NAS-Bench-Macro CIFAR-10 ("22212220"), from its README


class TabularEvaluator:
    """Metrics of an encoding (or key) looked up in a table read from a CSV or JSON file.

    Args:
        path: The table file (``.json`` or ``.csv``; other suffixes are read by content: JSON if it parses).
        key_column: For CSV files and JSON lists, the field holding the key.
        metrics: The metric names to return; ``None`` means every numeric scalar field of the records.
        key_separator: Joins the indices of an encoding into a key.

    Raises:
        DataError: the file is missing or malformed, a record lacks a requested metric, or keys repeat.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        key_column: str = "key",
        metrics: Sequence[str] | None = None,
        key_separator: str = "",
    ) -> None:
        self.path = Path(path)
        self.key_column = key_column
        self.key_separator = key_separator
        records = _read_records(self.path, key_column)
        if not records:
            raise DataError(f"{self.path}: the table is empty")
        self.metrics = tuple(metrics) if metrics is not None else _scalar_fields(records)
        if not self.metrics:
            raise DataError(f"{self.path}: no numeric metric fields found")
        self._table = {key: self._metrics_of(key, record) for key, record in records.items()}

    def key(self, encoding: Sequence[int]) -> str:
        """The table key of an encoding."""
        return self.key_separator.join(str(int(i)) for i in encoding)

    def evaluate(self, encoding_or_key: Sequence[int] | str) -> dict[str, float]:
        """The metrics of an encoding or key (a new dict each call).

        Raises:
            DataError: the key is not in the table.
        """
        key = encoding_or_key if isinstance(encoding_or_key, str) else self.key(encoding_or_key)
        try:
            return dict(self._table[key])
        except KeyError:
            raise DataError(f"{self.path}: key {key!r} is not in the table ({len(self._table)} entries)") from None

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


def nas_bench_macro(path: str | Path) -> TabularEvaluator:
    """The NAS-Bench-Macro CIFAR-10 table (``mean_acc``, ``std``, ``params``, ``flops``), keyed by 8 digits."""
    return TabularEvaluator(path, metrics=("mean_acc", "std", "params", "flops"))


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

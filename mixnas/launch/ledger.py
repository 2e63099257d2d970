"""The trial ledger: one SQLite row per trial and the journal of the controller's calls, the source of truth of a run.

A row is inserted when the controller proposes a trial (status ``running``), in the same transaction as the
journal's ``ask`` event, and updated once when the trial ends. That update is committed before the controller
hears the result, so a driver killed at any moment never loses a finished trial: ``mixnas resume`` reads finished
rows back instead of re-running them, and re-runs rows still marked ``running`` with the same architecture. Each
``tell`` is journalled after the controller heard it. The journal (``ask`` / ``tell`` events, in order) is all a
resume needs: replayed into a fresh controller it rebuilds the controller exactly (``controller.json`` is only a
snapshot that saves the replay).

``mixnas rerank`` adds one row per extra evaluation of a finished trial with another seed to the ``repeats`` table
(trial, repeat number, seed, outcome, the reasons of its retried attempts); the trial's own row is never changed by it.

A decoded row is a :class:`TrialRecord` (or :class:`RepeatRecord`) that holds the trial's
:class:`~mixnas.outcome.TrialOutcome` (None while it runs): status, metrics and reward are read through it, never
copied. The writers return the record as stored (:func:`as_stored`), so the driver never reads back what it wrote.

The database uses WAL journaling, so ``mixnas status`` can read it while the search writes, and
``synchronous=FULL``, so a committed row survives a power cut, not only a killed process.

Statuses: ``running``; ``ok``; ``failed`` (raised, or its worker died, after every retry); ``diverged`` (NaN or
infinite loss / metric); ``infeasible`` (broke a hard constraint, not trained); ``pruned`` (stopped early by the
scheduler).
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from mixnas.errors import RunError
from mixnas.outcome import Status, TrialOutcome

# 2: the journal table; 3: the repeats table (mixnas rerank); 4: repeats.failures; 5: trials.origin / copy_of and
# the known table (what was known before training, as the controller was shown it)
LEDGER_FORMAT_VERSION = 5
READABLE_FORMATS = (1, 2, 3, 4, LEDGER_FORMAT_VERSION)
# How a trial got its outcome: trained by a worker; screened out before training (over a hard limit, known before
# training); copied from an earlier trial of the same architecture (``copy_of``). Only trained trials count
# against the trial budget.
TRAINED, SCREENED, COPIED = "trained", "screened", "copied"
ORIGINS = (TRAINED, SCREENED, COPIED)  # older ones are upgraded when opened for writing
ASK, TELL = "ask", "tell"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    trial INTEGER PRIMARY KEY,
    suggestion_id TEXT NOT NULL,
    encoding TEXT NOT NULL,
    arch_id TEXT,
    block_strings TEXT,
    candidate TEXT,
    status TEXT NOT NULL,
    reason TEXT,
    metrics TEXT,
    reward REAL,
    curve TEXT,
    attempt INTEGER NOT NULL DEFAULT 0,
    failures TEXT,
    worker TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    eval_seconds REAL,
    origin TEXT,
    copy_of INTEGER
);
CREATE TABLE IF NOT EXISTS known (
    encoding TEXT PRIMARY KEY,
    known TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event TEXT NOT NULL CHECK (event IN ('ask', 'tell')),
    trial INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS repeats (
    trial INTEGER NOT NULL,
    repeat INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    metrics TEXT,
    reward REAL,
    attempt INTEGER NOT NULL DEFAULT 0,
    failures TEXT,
    worker TEXT,
    started_at REAL,
    finished_at REAL,
    eval_seconds REAL,
    PRIMARY KEY (trial, repeat)
);
"""


def clean_json(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become ``None`` (strict JSON has no NaN), numpy scalars plain numbers."""
    if isinstance(value, Mapping):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):  # numpy scalar
        return clean_json(value.item())
    return str(value)


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(clean_json(value), sort_keys=True, allow_nan=False)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class _OutcomeFields:
    """The fields of the :class:`~mixnas.outcome.TrialOutcome` a record holds, read through the record (one home:
    the outcome; a record of a trial still running has none, and reads as ``running`` with no metrics)."""

    outcome: TrialOutcome | None

    @property
    def status(self) -> Status:
        return self.outcome.status if self.outcome is not None else Status.RUNNING

    @property
    def metrics(self) -> Mapping[str, Any]:
        return self.outcome.metrics if self.outcome is not None else {}

    @property
    def reward(self) -> float | None:
        return self.outcome.reward if self.outcome is not None else None

    @property
    def reason(self) -> str | None:
        return self.outcome.reason if self.outcome is not None else None

    @property
    def curve(self) -> tuple[Mapping[str, Any], ...]:
        return self.outcome.curve if self.outcome is not None else ()

    @property
    def worker(self) -> str | None:
        return self.outcome.worker if self.outcome is not None else None

    @property
    def started_at(self) -> float | None:
        return self.outcome.started_at if self.outcome is not None else None

    @property
    def eval_seconds(self) -> float | None:
        return self.outcome.eval_seconds if self.outcome is not None else None

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    def _outcome_dict(self) -> dict[str, Any]:
        return {"status": self.status.value, "reason": self.reason, "metrics": dict(self.metrics),
                "reward": self.reward, "worker": self.worker, "started_at": self.started_at,
                "eval_seconds": self.eval_seconds}


@dataclass(frozen=True)
class TrialRecord(_OutcomeFields):
    """One trial of the ledger: what was proposed, and its final outcome once it has one.

    Args:
        failures: the reasons of the attempts that failed and were tried again, oldest first.
        origin: ``trained`` (by a worker), ``screened`` (over a hard limit before training: never trained) or
            ``copied`` (the outcome of trial ``copy_of``, the same architecture); only trained trials count
            against the trial budget (ledger format 5 on; older trials were all trained).
        copy_of: the trial whose outcome a copied trial holds.
    """

    trial: int
    suggestion_id: str
    encoding: tuple[int, ...]
    arch_id: str | None
    block_strings: tuple[str, ...] | None
    candidate: Any
    outcome: TrialOutcome | None = None
    failures: tuple[str, ...] = ()
    created_at: float = 0.0
    finished_at: float | None = None
    origin: str = TRAINED
    copy_of: int | None = None

    @property
    def trained(self) -> bool:
        """Trained by a worker (not screened out, not a copy): what the trial budget counts."""
        return self.origin == TRAINED

    @property
    def attempt(self) -> int:
        """The attempt that ran last (0 for the first); for a running trial, the one running now."""
        return self.outcome.attempt if self.outcome is not None else len(self.failures)

    def to_dict(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "suggestion_id": self.suggestion_id,
            "encoding": list(self.encoding),
            "arch_id": self.arch_id,
            "block_strings": list(self.block_strings) if self.block_strings is not None else None,
            "candidate": self.candidate,
            **self._outcome_dict(),
            "attempt": self.attempt,
            "failures": list(self.failures),
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "origin": self.origin,
            "copy_of": self.copy_of,
        }


@dataclass(frozen=True)
class RepeatRecord(_OutcomeFields):
    """One extra evaluation of a finished trial with another experiment seed (``mixnas rerank``).

    Args:
        repeat: 1, 2, ...: the trial's own evaluation is repeat 0.
        seed: the experiment seed it ran with.
        failures: the reasons of its attempts that failed and were tried again (ledger format 4 on).
    """

    trial: int
    repeat: int
    seed: int
    outcome: TrialOutcome
    failures: tuple[str, ...] = ()
    finished_at: float | None = None

    @property
    def attempt(self) -> int:
        return self.outcome.attempt

    def to_dict(self) -> dict[str, Any]:
        return {"trial": self.trial, "repeat": self.repeat, "seed": self.seed, **self._outcome_dict(),
                "attempt": self.attempt, "failures": list(self.failures), "finished_at": self.finished_at}


def as_stored(outcome: TrialOutcome) -> TrialOutcome:
    """``outcome`` exactly as the ledger gives it back once stored: metrics and curve through strict JSON (a NaN
    becomes None, a tuple a list, keys sorted), ``retryable`` dropped (a stored outcome is final). The driver
    keeps this, instead of reading back the row it has just written."""
    o = outcome
    return TrialOutcome(o.status, _loads(_dumps(dict(o.metrics))), o.reward, tuple(_loads(_dumps(list(o.curve)))),
                        o.reason, attempt=o.attempt, worker=o.worker, started_at=o.started_at,
                        eval_seconds=o.eval_seconds)


def _row_outcome(row: sqlite3.Row) -> TrialOutcome | None:
    status = Status(row["status"])
    if status is Status.RUNNING:
        return None
    keys = row.keys()
    curve = _loads(row["curve"]) if "curve" in keys else None
    return TrialOutcome(status, _loads(row["metrics"]) or {}, row["reward"], tuple(curve or ()), row["reason"],
                        attempt=row["attempt"], worker=row["worker"], started_at=row["started_at"],
                        eval_seconds=row["eval_seconds"])


def _record(row: sqlite3.Row) -> TrialRecord:
    strings = _loads(row["block_strings"])
    return TrialRecord(
        trial=row["trial"],
        suggestion_id=row["suggestion_id"],
        encoding=tuple(_loads(row["encoding"])),
        arch_id=row["arch_id"],
        block_strings=tuple(strings) if strings is not None else None,
        candidate=_loads(row["candidate"]),
        outcome=_row_outcome(row),
        failures=tuple(_loads(row["failures"]) or ()),
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        origin=(row["origin"] if "origin" in row.keys() else None) or TRAINED,
        copy_of=row["copy_of"] if "copy_of" in row.keys() else None,
    )


def _repeat(row: sqlite3.Row) -> RepeatRecord:
    failures = _loads(row["failures"]) if "failures" in row.keys() else None  # format 3 had no failures column
    return RepeatRecord(trial=row["trial"], repeat=row["repeat"], seed=row["seed"], outcome=_row_outcome(row),
                        failures=tuple(failures or ()), finished_at=row["finished_at"])


class Ledger:
    """The SQLite ledger of one run directory.

    Args:
        path: the database file (``RUN_DIR/ledger.sqlite``).
        readonly: open an existing ledger for reading only (``mixnas status`` / ``export`` while a run writes).
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:
            if not self.path.is_file():
                raise RunError(f"{self.path}: no ledger here (is this a mixnas run directory?)")
            uri = f"file:{self.path.resolve()}?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            with self._transaction():
                for statement in _SCHEMA.strip().split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
                self._conn.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES ('format_version', ?)", (str(LEDGER_FORMAT_VERSION),)
                )
                self._upgrade()
        self._conn.row_factory = sqlite3.Row
        self._check_version()

    # ------------------------------------------------------------------ plumbing
    def _transaction(self) -> Any:
        conn = self._conn

        class _Tx:
            def __enter__(self) -> None:
                conn.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
                conn.execute("ROLLBACK" if exc_type else "COMMIT")

        return _Tx()

    def _upgrade(self) -> None:
        """Bring an older ledger to the current format (the schema above has just added the missing tables).

        Format 1 (no journal): ``journal_from_snapshot`` fills its journal later. Format 2 (no repeats table):
        nothing else to do. Format 3 (repeats without ``failures``): the column is added (empty for old repeats).
        Format 4 (no ``origin`` / ``copy_of``, no known table): the columns are added, empty (every older trial was
        trained), and the table is made.
        """
        columns = {r[1] for r in self._conn.execute("PRAGMA table_info(repeats)")}
        if "failures" not in columns:
            self._conn.execute("ALTER TABLE repeats ADD COLUMN failures TEXT")
        columns = {r[1] for r in self._conn.execute("PRAGMA table_info(trials)")}
        for column, kind in (("origin", "TEXT"), ("copy_of", "INTEGER")):  # format 4 and older: all trained
            if column not in columns:
                self._conn.execute(f"ALTER TABLE trials ADD COLUMN {column} {kind}")
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
        if row and row[0] in ("1", "2", "3", "4"):
            self._conn.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", (str(LEDGER_FORMAT_VERSION),))
        if row and row[0] == "1":
            self._conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('upgraded_from', '1')")

    def _check_version(self) -> None:
        try:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise RunError(f"{self.path}: not a mixnas ledger ({exc})") from None
        version = int(row[0]) if row else None
        if version not in READABLE_FORMATS:  # an older one: read-only opening of a run of an older format
            raise RunError(f"{self.path}: ledger format_version {version!r}; this mixnas reads {LEDGER_FORMAT_VERSION}")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ meta
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction():
            self._conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # ------------------------------------------------------------------ writing
    def add_trial(
        self,
        trial: int,
        *,
        suggestion_id: str,
        encoding: tuple[int, ...],
        arch_id: str | None,
        block_strings: list[str] | None,
        candidate: Any,
        origin: str = TRAINED,
        copy_of: int | None = None,
        outcome: TrialOutcome | None = None,
        known: Mapping[tuple[int, ...], Mapping[str, Any]] | None = None,
    ) -> TrialRecord:
        """Insert a proposed trial and journal its ask, in one transaction; a row already there with the same trial
        (a format-1 ledger's row whose ask was never saved) is replaced. Returns the record as the ledger holds it.

        A trained trial starts ``running``; a screened one (and a copy whose trial has finished) is stored with its
        ``outcome`` at once. ``known``: what the controller was shown before this ask (encoding -> the JSON of a
        :class:`~mixnas.controllers.base.Known`), stored with the ask so a replay shows it the same."""
        if origin not in ORIGINS:
            raise RunError(f"{self.path}: trial origin must be one of {list(ORIGINS)}, got {origin!r}")
        created_at = time.time()
        o = as_stored(outcome) if outcome is not None else None
        with self._transaction():
            if known:
                self._conn.executemany("INSERT OR IGNORE INTO known(encoding, known) VALUES (?, ?)",
                                       [(_dumps(list(e)), _dumps(v)) for e, v in known.items()])
            self._conn.execute(
                "INSERT OR REPLACE INTO trials(trial, suggestion_id, encoding, arch_id, block_strings, candidate, "
                "status, created_at, origin, copy_of) VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                (trial, suggestion_id, _dumps(list(encoding)), arch_id, _dumps(block_strings), _dumps(candidate),
                 created_at, None if origin == TRAINED else origin, copy_of),
            )
            if o is not None:
                self._store_outcome(trial, o, created_at)
            self._conn.execute("INSERT INTO journal(event, trial) VALUES ('ask', ?)", (trial,))
        return TrialRecord(trial, suggestion_id, tuple(int(i) for i in encoding), arch_id,
                           tuple(block_strings) if block_strings is not None else None,
                           _loads(_dumps(candidate)), outcome=o, created_at=created_at,
                           finished_at=created_at if o is not None else None, origin=origin, copy_of=copy_of)

    def known(self) -> dict[tuple[int, ...], Any]:
        """What controllers were shown before training, by encoding (empty before ledger format 5)."""
        try:
            rows = self._conn.execute("SELECT encoding, known FROM known").fetchall()
        except sqlite3.OperationalError:  # an older ledger opened read-only
            return {}
        return {tuple(int(i) for i in _loads(e)): _loads(k) for e, k in rows}

    def record_tell(self, trial: int) -> None:
        """Journal that the controller has been told trial ``trial``'s result."""
        with self._transaction():
            self._conn.execute("INSERT INTO journal(event, trial) VALUES ('tell', ?)", (trial,))

    def journal(self) -> list[tuple[str, int]]:
        """Every ``(event, trial)`` in the order the controller saw them."""
        try:
            rows = self._conn.execute("SELECT event, trial FROM journal ORDER BY seq").fetchall()
        except sqlite3.OperationalError:  # a format-1 ledger opened read-only: no journal yet
            return []
        return [(e, int(t)) for e, t in rows]

    def journal_from_snapshot(self, asked: int, told: list[int]) -> None:
        """Fill the empty journal of an upgraded format-1 ledger from its ``controller.json`` (asked count, told
        order). The true interleaving of asks and tells was not recorded then: a resume goes on from that
        snapshot, and only later events can be replayed."""
        with self._transaction():
            if self._conn.execute("SELECT COUNT(*) FROM journal").fetchone()[0]:
                return
            self._conn.executemany("INSERT INTO journal(event, trial) VALUES ('ask', ?)", [(t,) for t in range(asked)])
            self._conn.executemany("INSERT INTO journal(event, trial) VALUES ('tell', ?)", [(t,) for t in told])

    def record_failure(self, trial: int, *, attempt: int, reason: str) -> None:
        """Note a failed attempt that will be retried (the row stays ``running``)."""
        with self._transaction():
            row = self._conn.execute("SELECT failures FROM trials WHERE trial = ?", (trial,)).fetchone()
            failures = (_loads(row[0]) if row and row[0] else []) + [reason]
            self._conn.execute(
                "UPDATE trials SET attempt = ?, failures = ? WHERE trial = ?", (attempt, _dumps(failures), trial)
            )

    def finish_trial(self, trial: int, outcome: TrialOutcome, *, finished_at: float | None = None
                     ) -> tuple[TrialOutcome, float]:
        """Store a trial's final outcome (committed when this returns); returns it as stored (:func:`as_stored`)
        and the time it was stored."""
        o = as_stored(outcome)
        finished_at = time.time() if finished_at is None else finished_at
        with self._transaction():
            self._store_outcome(trial, o, finished_at)
        return o, finished_at

    def _store_outcome(self, trial: int, o: TrialOutcome, finished_at: float) -> None:
        cur = self._conn.execute(
            "UPDATE trials SET status = ?, reason = ?, metrics = ?, reward = ?, curve = ?, attempt = ?, "
            "worker = ?, started_at = ?, finished_at = ?, eval_seconds = ? WHERE trial = ?",
            (o.status.value, o.reason, _dumps(dict(o.metrics)), o.reward, _dumps(list(o.curve)), o.attempt,
             o.worker, o.started_at, finished_at, o.eval_seconds, trial),
        )
        if cur.rowcount != 1:
            raise RunError(f"{self.path}: trial {trial} is not in the ledger")

    def add_repeat(self, trial: int, repeat: int, seed: int, outcome: TrialOutcome, *,
                   failures: tuple[str, ...] = ()) -> RepeatRecord:
        """Store one extra evaluation of ``trial`` (repeat ``repeat`` >= 1, run with experiment seed ``seed``), with
        the reasons of its attempts that failed and were tried again; returns the record as stored."""
        if repeat < 1:
            raise RunError(f"{self.path}: repeat numbers start at 1 (0 is the trial itself), got {repeat}")
        o, finished_at = as_stored(outcome), time.time()
        with self._transaction():
            if self._conn.execute("SELECT 1 FROM trials WHERE trial = ?", (trial,)).fetchone() is None:
                raise RunError(f"{self.path}: trial {trial} is not in the ledger")
            self._conn.execute(
                "INSERT OR REPLACE INTO repeats(trial, repeat, seed, status, reason, metrics, reward, attempt, "
                "failures, worker, started_at, finished_at, eval_seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (trial, repeat, seed, o.status.value, o.reason, _dumps(dict(o.metrics)), o.reward, o.attempt,
                 _dumps(list(failures)) if failures else None, o.worker, o.started_at, finished_at, o.eval_seconds),
            )
        return RepeatRecord(trial, repeat, seed, o, tuple(failures), finished_at)

    def repeats(self) -> list[RepeatRecord]:
        """Every extra evaluation, by trial and repeat number (none in a ledger of an older format)."""
        try:
            rows = self._conn.execute("SELECT * FROM repeats ORDER BY trial, repeat").fetchall()
        except sqlite3.OperationalError:  # an older ledger opened read-only: no repeats table
            return []
        return [_repeat(r) for r in rows]

    # ------------------------------------------------------------------ reading
    def trials(self, status: str | None = None) -> list[TrialRecord]:
        """Every trial in suggestion order (optionally only one status)."""
        if status is None:
            rows = self._conn.execute("SELECT * FROM trials ORDER BY trial").fetchall()
        else:
            rows = self._conn.execute("SELECT * FROM trials WHERE status = ? ORDER BY trial", (status,)).fetchall()
        return [_record(r) for r in rows]

    def __iter__(self) -> Iterator[TrialRecord]:
        return iter(self.trials())

    def get(self, trial: int) -> TrialRecord | None:
        row = self._conn.execute("SELECT * FROM trials WHERE trial = ?", (trial,)).fetchone()
        return _record(row) if row else None

    def counts(self) -> dict[str, int]:
        """Number of trials per status (every status present, zero when absent)."""
        out = {s.value: 0 for s in Status}
        for status, n in self._conn.execute("SELECT status, COUNT(*) FROM trials GROUP BY status"):
            out[status] = n
        return out

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0])

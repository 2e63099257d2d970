"""Run a search: the controller proposes, Ray actors evaluate, the ledger records, the controller learns.

Design (see ``docs/architecture.md``, "Life of a trial", and ``docs/distributed.md``):

* **The driver loop owns the order of events.** The controller is asked and told only here, never from a callback.
  Each ask is journalled in the ledger with its trial row; each result is committed to the ledger *before* the
  controller is told, and the tell is journalled after.
* **The ledger is the journal; exact resume is a replay.** A resumed driver rebuilds the controller by replaying
  the journal (:mod:`mixnas.launch.journal`), from ``controller.json`` (a snapshot, written at most once per batch
  of tells) when one is there and usable, else from the start. Finished trials are read back, never re-run;
  trials still ``running`` are run again with the same encoding. A run resumes exactly from the ledger alone.
* **Deterministic mode** (``execution.deterministic``) fixes the ask / tell interleaving by the ordering window
  ``execution.ordering_window`` (:class:`~mixnas.launch.journal.Ordering`), so the same seed and window give the
  same ledger at any concurrency, on any number of nodes, and across kills and resumes.
* **Failures.** A trial that raises, diverges (NaN / inf) or whose worker is lost is retried on a fresh attempt up
  to ``execution.max_failures_per_trial`` times (each failure noted in its row), unless the evaluator marked the
  failure non-retryable (a key missing from a table); then it is recorded with its reason and the search goes on.
  ``execution.max_consecutive_failures`` trials in a row failing for the same kind of reason stop the search with
  one line naming it (the cause is almost always the set-up); ``mixnas resume`` continues after the fix.
* **Ray** is only in :mod:`mixnas.launch.pool` (the actor pool) and :mod:`mixnas.launch.ray_local`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

from mixnas.errors import MixnasError, RunError
from mixnas.launch.config import check_files, load_search_space
from mixnas.launch.experiment_config import ExperimentConfig
from mixnas.launch.controller_setup import build_controller, run_setup
from mixnas.launch.journal import SNAPSHOT_VERSION, Ordering, RunState, replay
from mixnas.launch.journal import controller_result
from mixnas.launch.known import KnownCosts
from mixnas.launch.ledger import COPIED, SCREENED, TRAINED, Ledger, TrialRecord
from mixnas.launch.pool import ActorPool, Finished
from mixnas.launch.rundir import RunPaths, create_run, reconcile_config, run_lock
from mixnas.launch.summary import RunSummary, summarize
from mixnas.outcome import Status, TrialOutcome
from mixnas.search_space.arch import Architecture
from mixnas.textio import write_json_atomic

logger = logging.getLogger(__name__)
SCREENED_REASON = "screened before training"
# Proposals in a row that need no training (screened out or copies) after which a search stops asking: the space
# under the hard limits looks exhausted, or the controller is stuck on trained architectures.
UNTRAINED_STREAK = 200


def copied_outcome(original: TrialRecord) -> TrialOutcome:
    """The outcome a copy of ``original`` (the same architecture, already trained) records: the same status,
    metrics, reward and reason; no worker, curve or evaluation time of its own (nothing ran)."""
    o = original.outcome
    reason = f"copy of trial {original.trial}" + (f": {o.reason}" if o.reason else "")
    return TrialOutcome(o.status, dict(o.metrics), o.reward, (), reason, attempt=0, worker=None, started_at=None,
                        eval_seconds=0.0)


# --------------------------------------------------------------------------------------------------------------
# observers
# --------------------------------------------------------------------------------------------------------------
@dataclass
class SearchState:
    """What observers see: the run's records so far and the live counts."""

    cfg: ExperimentConfig
    paths: RunPaths
    records: dict[int, TrialRecord]
    running: int = 0
    started: float = field(default_factory=time.time)
    done_at_start: int = 0
    finished: bool = False

    def summary(self) -> RunSummary:
        ordered = [self.records[k] for k in sorted(self.records)]
        return summarize(self.cfg, ordered, finished=self.finished, active=not self.finished)

    def seconds_left(self) -> float | None:
        """Estimated time to finish, from this session's throughput (None before a trial ended)."""
        done = sum(1 for r in self.records.values() if r.finished and r.trained)
        new = done - self.done_at_start
        if new <= 0:
            return None
        rate = (time.time() - self.started) / new
        return rate * max(0, self.cfg.execution.trials - done)


class SearchObserver(Protocol):
    def on_start(self, state: SearchState) -> None: ...

    def on_trial(self, record: TrialRecord, state: SearchState) -> None: ...

    def on_tick(self, state: SearchState) -> None: ...

    def on_end(self, state: SearchState) -> None: ...


# --------------------------------------------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------------------------------------------
class Search:
    """One driver session of a run (a new search, or a resumed one).

    Args:
        cfg: the run's config.
        paths: its directory (made by :func:`~mixnas.launch.rundir.create_run`).
        observers: progress printer, TensorBoard writer, ...: told about every finished trial.
    """

    def __init__(self, cfg: ExperimentConfig, paths: RunPaths, *, observers: Sequence[SearchObserver] = ()) -> None:
        ex = cfg.execution
        self.cfg, self.paths, self.observers = cfg, paths, list(observers)
        self.ordering = Ordering(ex.deterministic, ex.ordering_window, ex.max_concurrent, ex.trials)
        self.failure_streak: list[str] = []  # reasons of the trials that failed in a row, latest last
        self.timings: list[dict[str, float]] = []  # per trial: driver seconds from ask to tell (benchmarks)
        self._ask_time: dict[int, float] = {}
        self._dirty = False  # told something since the last snapshot
        self._untrained_streak = 0  # asks in a row that needed no training
        self._first_trained: dict[Any, int] = {}  # architecture key -> the first trial that trains it

    def run(self) -> RunSummary:
        """Run until every trial is told; returns the final summary."""
        with run_lock(self.paths), Ledger(self.paths.ledger) as self.ledger:
            self.space = load_search_space(self.cfg)
            self.costs = KnownCosts(self.cfg, self.space, self.ledger.known())
            self.controller = self._restore()
            self._ask_unjournalled()
            self.state = RunState.from_ledger(self.ledger.trials(), self.ledger.journal())
            for r in sorted(self.state.records.values(), key=lambda r: r.trial):
                if r.trained:
                    self._first_trained.setdefault(self._architecture_key(r), r.trial)
            trained = sum(1 for r in self.state.records.values() if r.finished and r.trained)
            view = self._view = SearchState(self.cfg, self.paths, self.state.records, done_at_start=trained)
            for original in [t for t in self.state.copies if self.state.records[t].finished]:
                self._finish_copies(original)  # the trial they copy finished before the driver was stopped
            if not self.ordering.done(self.state) or self.state.results or self.state.queue:
                self._run(view)
            self._save_snapshot()
            view.finished, view.running = True, 0
            self.ledger.set_meta("finished_at", str(time.time()))
            if self.state.exhausted:
                self.ledger.set_meta("exhausted", "1")
            for obs in self.observers:
                obs.on_end(view)
            return view.summary()

    # ------------------------------------------------------------------ the controller, from the journal
    def _new_controller(self, options: dict[str, Any]) -> Any:
        controller = build_controller(self.cfg, self.space, options)
        controller.use_costs(self.costs)  # what is known before training, as journalled (a replay sees the same)
        return controller

    def _restore(self) -> Any:
        """The controller the journal describes: a snapshot plus the journal after it, or the whole journal."""
        setup = run_setup(self.cfg.controller.type, self.cfg.controller.options, self.paths.root)
        rows, events = self.ledger.trials(), self.ledger.journal()
        if [r.trial for r in rows] != list(range(len(rows))):
            raise RunError(f"{self.paths.ledger}: trial numbers are not contiguous; the ledger was edited")
        snapshot = self._read_snapshot(setup.options)
        if snapshot is not None and snapshot[0] == "v1":
            events = self._upgrade_journal(snapshot[1])
            snapshot = (len(events), snapshot[1]["controller"])
        usable = (snapshot is not None and snapshot[0] <= len(events) and not setup.derived_files
                  and (not setup.external_state or snapshot[0] == len(events)))
        if self.ledger.get_meta("upgraded_from") == "1" and snapshot is not None:
            usable = True  # a run begun before the journal resumes from its snapshot (its study kept as it is)
        if usable:
            controller = self._new_controller(setup.options)
            try:
                controller.load_state_dict(snapshot[1])
                replay(controller, rows, events[snapshot[0]:], self.cfg.reward)
                return controller
            except MixnasError as exc:
                logger.warning("%s: the snapshot cannot be used (%s); replaying the whole journal",
                               self.paths.controller, exc)
        if setup.external_state and events:
            raise RunError(f"{self.paths.root}: the optuna study lives in {setup.options.get('storage')}, which a "
                           "replay cannot rebuild, and controller.json is missing or behind the ledger")
        for name in setup.derived_files:  # rebuilt by the replay
            for path in (Path(name), Path(f"{name}-wal"), Path(f"{name}-shm"), Path(f"{name}-journal")):
                path.unlink(missing_ok=True)
        controller = self._new_controller(setup.options)
        replay(controller, rows, events, self.cfg.reward)
        return controller

    def _ask_unjournalled(self) -> None:
        """Rows of an upgraded format-1 ledger whose ask was never saved: ask again (same trial, same row)."""
        asked = sum(1 for e, _ in self.ledger.journal() if e == "ask")
        for row in self.ledger.trials()[asked:]:
            self._ask(expected=row)

    def _read_snapshot(self, options: dict[str, Any]) -> tuple[Any, Any] | None:
        """``(journal_length, controller_state)``, ``("v1", saved)`` for a snapshot from before the journal, or
        None when there is no usable snapshot."""
        if not self.paths.controller.exists():
            return None
        try:
            saved = json.loads(self.paths.controller.read_text())
        except (OSError, ValueError) as exc:
            logger.warning("%s: cannot read the snapshot (%s); the journal is replayed", self.paths.controller, exc)
            return None
        version = saved.get("format_version") if isinstance(saved, dict) else None
        if version not in (1, SNAPSHOT_VERSION):
            logger.warning("%s: unknown format_version %r; the journal is replayed", self.paths.controller, version)
            return None
        try:
            if version == 1:
                stored = str(saved["controller"].get("options", {}).get("storage", ""))
                if stored.endswith("/optuna.db") and options.get("storage"):
                    saved["controller"]["options"]["storage"] = options["storage"]  # the run directory moved
                saved["asked"], saved["told"] = int(saved["asked"]), [int(t) for t in saved["told"]]
                return ("v1", saved)
            return int(saved["journal_length"]), saved["controller"]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            logger.warning("%s: malformed snapshot (%s: %s); the journal is replayed", self.paths.controller,
                           type(exc).__name__, exc)
            return None

    def _upgrade_journal(self, saved: dict[str, Any]) -> list[tuple[str, int]]:
        self.ledger.journal_from_snapshot(saved["asked"], saved["told"])  # made ints by _read_snapshot
        return self.ledger.journal()

    def _save_snapshot(self) -> None:
        write_json_atomic(self.paths.controller, {
            "format_version": SNAPSHOT_VERSION, "controller_type": self.cfg.controller.type,
            "journal_length": self.state.asked + len(self.state.told), "controller": self.controller.state_dict(),
        })
        self._dirty = False

    # ------------------------------------------------------------------ ask / tell
    def _ask(self, expected: TrialRecord | None = None) -> None:
        state = getattr(self, "state", None)  # None while the ledger is brought up to date before the loop
        trial = state.asked if state is not None else expected.trial
        t0 = time.perf_counter()
        suggestion = self.controller.ask()
        encoding = tuple(int(i) for i in suggestion.encoding)
        if expected is not None and (expected.encoding, expected.suggestion_id) != (encoding, suggestion.id):
            logger.warning("trial %d: the controller re-proposed %s instead of %s; the ledger row is replaced",
                           trial, encoding, expected.encoding)
        candidate = self.space.decode(encoding)
        if isinstance(candidate, Architecture):
            from mixnas.search_space.arch_strings import encode_arch

            arch_id, strings, data = candidate.id, encode_arch(candidate, "tf"), candidate.to_dict()
        else:
            arch_id, strings, data = None, None, candidate
        origin, copy_of, outcome = TRAINED, None, None
        if state is not None:
            origin, copy_of, outcome = self._before_training(encoding, arch_id)
        record = self.ledger.add_trial(trial, suggestion_id=suggestion.id, encoding=encoding, arch_id=arch_id,
                                       block_strings=strings, candidate=data, origin=origin, copy_of=copy_of,
                                       outcome=outcome, known=self.costs.take_fresh())
        self._ask_time[trial] = t0
        if state is None:
            return
        state.asked += 1
        state.records[trial] = record
        if origin == TRAINED:
            self._first_trained.setdefault(self._architecture_key(record), trial)
            state.queue.append((trial, 0))
            self._untrained_streak = 0
            return
        state.untrained += 1
        self._untrained_streak += 1
        if record.finished:
            self._finished(record)
        else:
            state.copies.setdefault(copy_of, []).append(trial)
        if self._untrained_streak >= UNTRAINED_STREAK:
            state.exhausted = True
            logger.warning("the controller proposed %d candidates in a row that need no training (over a hard limit, "
                           "or already trained): no more are asked; the search ends with %d trainings",
                           self._untrained_streak, state.trainings)

    def _before_training(self, encoding: tuple[int, ...], arch_id: str | None
                         ) -> tuple[str, int | None, TrialOutcome | None]:
        """``(origin, copy_of, outcome)`` of a new trial: screened out (over a hard limit, known before training),
        a copy of the trial that trains the same architecture (with its outcome once it has one), or trained."""
        known = self.costs(encoding)
        why = known.screened
        if why is not None:
            return SCREENED, None, TrialOutcome.failure(f"{SCREENED_REASON}: {why}", status=Status.INFEASIBLE,
                                                        retryable=False, metrics=dict(known.metrics))
        first = self._first_trained.get(arch_id if arch_id is not None else encoding)
        if first is None:
            return TRAINED, None, None
        original = self.state.records[first]
        return COPIED, first, (copied_outcome(original) if original.finished else None)

    @staticmethod
    def _architecture_key(record: TrialRecord) -> Any:
        """One network, one key: the architecture's content hash (an encoding for a space of plain choices)."""
        return record.arch_id if record.arch_id is not None else record.encoding

    def _finished(self, record: TrialRecord) -> None:
        """Bookkeeping of a trial that has its final outcome (committed): to be told, shown, and copied."""
        self.state.records[record.trial] = self.state.results[record.trial] = record
        self.state.finished += 1
        for obs in self.observers:
            obs.on_trial(record, self._view)
        if record.trial in self.state.copies:
            self._finish_copies(record.trial)

    def _finish_copies(self, original: int) -> None:
        """The copies that waited for trial ``original`` get its outcome."""
        outcome = copied_outcome(self.state.records[original])
        for trial in self.state.copies.pop(original):
            stored, finished_at = self.ledger.finish_trial(trial, outcome)
            record = dataclasses.replace(self.state.records[trial], outcome=stored, finished_at=finished_at)
            self.state.records[trial] = self.state.results[trial] = record
            self.state.finished += 1
            for obs in self.observers:
                obs.on_trial(record, self._view)

    def _tell(self, record: TrialRecord) -> None:
        self.controller.tell(record.suggestion_id, controller_result(record, self.cfg.reward))
        self.ledger.record_tell(record.trial)
        self.state.told.append(record.trial)
        del self.state.results[record.trial]
        self._dirty = True
        t0 = self._ask_time.pop(record.trial, None)
        if t0 is not None:
            self.timings.append({"trial": record.trial, "cycle": time.perf_counter() - t0,
                                 "eval": record.eval_seconds or 0.0})

    # ------------------------------------------------------------------ the loop
    def _run(self, view: SearchState) -> None:
        ex = self.cfg.execution
        n_actors = min(ex.max_concurrent, ex.ordering_window) if ex.deterministic else ex.max_concurrent
        if n_actors < ex.max_concurrent:
            logger.warning("execution.max_concurrent %d > execution.ordering_window %d: in deterministic mode at most "
                           "%d trials run at once", ex.max_concurrent, ex.ordering_window, ex.ordering_window)
        for obs in self.observers:
            obs.on_start(view)
        history = [r.curve for r in self.state.records.values() if r.finished]
        with ActorPool(self.cfg, n_actors, history) as pool:
            self._loop(pool, view)

    def _step(self) -> None:
        """Tell and ask as far as the ordering allows; then one snapshot for the batch."""
        progressed = True
        while progressed:
            progressed = False
            j = self.ordering.tellable(self.state)
            if j is not None:
                self._tell(self.state.results[j])
                progressed = True
            if self.ordering.can_ask(self.state):
                self._ask()
                progressed = True
        if self._dirty:
            self._save_snapshot()

    def _loop(self, pool: ActorPool, view: SearchState) -> None:
        st = self.state
        while True:
            self._step()
            while st.queue and pool.idle:
                trial, attempt = st.queue.popleft()
                pool.submit(trial, attempt, st.records[trial].encoding)
            view.running = pool.running
            if self.ordering.done(st):
                return
            if not pool.running and not pool.starting:
                raise RunError(f"{self.paths.root}: the search is stuck: nothing runs and nothing can be asked "
                               f"(asked {st.asked}, told {len(st.told)}, results {sorted(st.results)})")
            for finished in pool.wait(timeout=1.0):
                self._finish(finished, view)
                view.running = pool.running
            for obs in self.observers:
                obs.on_tick(view)

    def _finish(self, finished: Finished, view: SearchState) -> None:
        trial, attempt, outcome = finished.trial, finished.attempt, finished.outcome
        if outcome.retried(attempt, self.cfg.execution.max_failures_per_trial):
            logger.info("trial %d attempt %d %s (%s); retrying", trial, attempt, outcome.status, outcome.reason)
            reason = outcome.reason or "failed"
            self.ledger.record_failure(trial, attempt=attempt + 1, reason=reason)
            running = self.state.records[trial]
            self.state.records[trial] = dataclasses.replace(running, failures=(*running.failures, reason))
            self.state.queue.appendleft((trial, attempt + 1))
            return
        stored, finished_at = self.ledger.finish_trial(trial, outcome)
        record = dataclasses.replace(self.state.records[trial], outcome=stored, finished_at=finished_at)
        self._finished(record)
        self._check_failure_streak(record)

    def _check_failure_streak(self, record: TrialRecord) -> None:
        """Stop after ``max_consecutive_failures`` trials in a row failed for the same kind of reason."""
        limit = self.cfg.execution.max_consecutive_failures
        if record.status is not Status.FAILED:
            self.failure_streak.clear()
            return
        kind = failure_kind(record.reason or "")
        if self.failure_streak and failure_kind(self.failure_streak[-1]) != kind:
            self.failure_streak.clear()
        self.failure_streak.append(record.reason or "failed")
        if limit and len(self.failure_streak) >= limit:
            raise RunError(
                f"{self.paths.root}: stopped after {len(self.failure_streak)} trials in a row failed with the same "
                f"reason: {self.failure_streak[-1]} (fix the cause, then `mixnas resume {self.paths.root}`; "
                f"execution.max_consecutive_failures sets the limit, 0 turns it off)")


def failure_kind(reason: str) -> str:
    """What makes two failure reasons "the same": the reason with numbers, quoted values and paths blanked.

    ``"KeyError: 'x12' not in the table"`` and ``"KeyError: 'x7' not in the table"`` are one kind.
    """
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", reason)
    text = re.sub(r"[/\\][^\s:,;]*", "/…", text)
    return re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "#", text)[:200]


def run_search(cfg: ExperimentConfig, run_dir: str | Path, *, observers: Sequence[SearchObserver] = ()) -> RunSummary:
    """Start a new search in ``run_dir`` (which must not hold one already)."""
    check_files(cfg)
    paths = create_run(cfg, run_dir)
    return Search(cfg, paths, observers=observers).run()


def resume_search(run_dir: str | Path, *, new_config: ExperimentConfig | None = None, force: bool = False,
                  observers: Sequence[SearchObserver] = ()) -> tuple[RunSummary, bool]:
    """Continue a run; returns (summary, was_already_finished)."""
    paths = RunPaths(Path(run_dir))
    if not paths.ledger.exists():
        raise RunError(f"{paths.root}: no ledger.sqlite here; nothing to resume (start it with `mixnas search`)")
    cfg = reconcile_config(paths, new_config, force=force)
    with Ledger(paths.ledger, readonly=True) as ledger:
        records = ledger.trials()
        told = sum(1 for e, _ in ledger.journal() if e == "tell")
        exhausted = ledger.get_meta("exhausted") == "1"
        # a driver stopped after its last tell but before it wrote its final snapshot and finished_at: the run
        # below has nothing left to run and only brings controller.json up to the journal and marks the end
        closed = ledger.get_meta("finished_at") is not None
    trained = sum(1 for r in records if r.trained)
    if ((trained >= cfg.execution.trials or exhausted) and all(r.finished for r in records)
            and told >= len(records) and closed):
        return summarize(cfg, records, finished=True), True
    check_files(cfg)
    return Search(cfg, paths, observers=observers).run(), False

"""A run's state derived from its ledger: the controller rebuilt by replaying the journal, the driver's bookkeeping,
and the ordering policy that decides when the controller may be asked and told.

The ledger's journal holds every ``ask`` (with the trial row, in one transaction) and every ``tell`` (after the
controller heard it), in order. A controller is deterministic given its seed and that sequence, so replaying the
journal into a fresh controller gives the controller the crashed driver had, up to its last journalled call; each
replayed ask is checked against the ledger's row. ``controller.json`` is a snapshot of the controller after some
prefix of the journal, written once per batch of tells, that saves the replay of that prefix.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Sequence

from mixnas.controllers.base import Result
from mixnas.errors import RunError
from mixnas.evaluators.reward import RewardConfig
from mixnas.launch.ledger import ASK, TrialRecord
from mixnas.outcome import Status, is_finite_number

SNAPSHOT_VERSION = 2  # 2: {journal_length, controller}; 1 (before the journal): {asked, told, controller}


def controller_result(record: TrialRecord, reward: RewardConfig) -> Result:
    """What the controller is told about a finished trial: the one conversion from the ledger to a ``Result``."""
    if record.status is Status.OK:
        return Result(Status.OK, reward.objective_values(record.metrics, record.reward))
    if record.status is Status.PRUNED:
        values = {k: v for k, v in record.metrics.items() if is_finite_number(v)}
        return Result(Status.PRUNED, values or None, reason="stopped early by the scheduler")
    return Result(record.status, reason=record.reason)


def replay(controller: Any, rows: Sequence[TrialRecord], events: Sequence[tuple[str, int]],
           reward: RewardConfig) -> None:
    """Make ``controller`` hear ``events`` again; each ask must give the ledger's suggestion for that trial.

    Raises:
        RunError: a replayed ask proposed something else (the config, the space or mixnas changed since the run
            started), or the journal names a trial the ledger lacks.
    """
    for event, trial in events:
        if not 0 <= trial < len(rows):
            raise RunError(f"the journal names trial {trial}, the ledger has {len(rows)} trials; the ledger was edited")
        row = rows[trial]
        if event == ASK:
            s = controller.ask()
            if s.id != row.suggestion_id or tuple(int(i) for i in s.encoding) != row.encoding:
                raise RunError(
                    f"replaying the journal, trial {trial} was proposed as {s.id} {tuple(s.encoding)}, but the "
                    f"ledger has {row.suggestion_id} {row.encoding}: the search space, controller options or mixnas "
                    "version changed since this run started")
        else:
            controller.tell(row.suggestion_id, controller_result(row, reward))


@dataclass
class RunState:
    """The driver's bookkeeping, derived from the ledger at start and kept in step with it.

    Attributes:
        records: every trial's latest ledger row.
        asked: trials asked (= rows); ``told``: trials told, in order.
        results: finished trials not yet told, in the order they finished.
        queue: (trial, attempt) waiting for an actor; a resumed ``running`` row is run again from its attempt.
        finished: trials with a final outcome.
        untrained: trials asked that need no training (screened out, or copies of a trial of the same
            architecture): the trial budget counts ``asked - untrained``.
        copies: copied trials waiting for the trial they copy, by that trial.
        exhausted: the controller proposed only candidates that need no training for too long: no more asks.
    """

    records: dict[int, TrialRecord]
    asked: int
    told: list[int]
    results: dict[int, TrialRecord] = field(default_factory=dict)
    queue: collections.deque[tuple[int, int]] = field(default_factory=collections.deque)
    finished: int = 0
    untrained: int = 0
    copies: dict[int, list[int]] = field(default_factory=dict)
    exhausted: bool = False

    @property
    def trainings(self) -> int:
        """Trials asked that are (or will be) trained: what ``execution.trials`` counts."""
        return self.asked - self.untrained

    @classmethod
    def from_ledger(cls, rows: Sequence[TrialRecord], events: Sequence[tuple[str, int]]) -> RunState:
        told = [t for e, t in events if e != ASK]
        state = cls({r.trial: r for r in rows}, sum(1 for e, _ in events if e == ASK), told)
        told_set = set(told)
        for r in rows:
            if r.trial in told_set:
                continue
            if r.finished:
                state.results[r.trial] = r
            elif r.copy_of is not None:
                state.copies.setdefault(r.copy_of, []).append(r.trial)
            else:
                state.queue.append((r.trial, r.attempt))
        state.finished = sum(1 for r in rows if r.finished)
        state.untrained = sum(1 for r in rows if not r.trained)
        return state


@dataclass(frozen=True)
class Ordering:
    """When the controller may be asked and told.

    Free (``deterministic`` false): ask while fewer than ``concurrency`` trials are unfinished; tell results as
    they arrive. Deterministic with window ``w``: ask ``k`` also waits until trial ``k - w`` is told, and tell ``j``
    waits until trial ``j + w - 1`` is asked, so the controller sees ``ask 0..w-1, tell 0, ask w, tell 1, ...``
    whatever the timing, the concurrency and the number of nodes.
    """

    deterministic: bool
    window: int
    concurrency: int
    n_trials: int

    def can_ask(self, state: RunState) -> bool:
        k = state.asked
        if state.exhausted or state.trainings >= self.n_trials or k - state.finished >= self.concurrency:
            return False
        if self.deterministic and k >= self.window:
            return len(state.told) >= k - self.window + 1
        return True

    def tellable(self, state: RunState) -> int | None:
        if not state.results:
            return None
        if not self.deterministic:
            return next(iter(state.results))
        j = len(state.told)  # told is a prefix in deterministic mode
        if j in state.results and (state.asked >= j + self.window or state.exhausted
                                   or state.trainings >= self.n_trials):  # (nothing more will be asked)
            return j
        return None

    def done(self, state: RunState) -> bool:
        return (state.exhausted or state.trainings >= self.n_trials) and len(state.told) >= state.asked

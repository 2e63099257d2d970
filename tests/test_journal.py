"""The run state derived from a ledger, without Ray: ``RunState.from_ledger``, the ``Ordering`` policy, ``replay``
and ``controller_result`` (pure functions the driver uses; the Ray tests exercise them end to end)."""

from __future__ import annotations

import random

import pytest

from mixnas.controllers import make_controller
from mixnas.errors import RunError
from mixnas.evaluators.reward import MetricReward
from mixnas.launch.journal import Ordering, RunState, controller_result, replay
from mixnas.launch.ledger import ASK, TELL, TrialRecord
from mixnas.outcome import Status, TrialOutcome
from mixnas.search_space.spaces.choice import ChoiceSpace, Dimension

REWARD = MetricReward(metric="acc")


def _space() -> ChoiceSpace:
    return ChoiceSpace([Dimension(f"d{i}", (0, 1, 2)) for i in range(4)], name="toy")


def _record(trial: int, status: Status = Status.OK, *, suggestion: str = "", encoding: tuple[int, ...] = (0,),
            acc: float = 0.5, attempt: int = 0) -> TrialRecord:
    metrics = {"acc": acc} if status in (Status.OK, Status.PRUNED) else {}
    outcome = None if status is Status.RUNNING else TrialOutcome(status, metrics, attempt=attempt)
    return TrialRecord(trial, suggestion or f"s{trial}", encoding, None, None, None, outcome,
                       failures=("failed",) * attempt if outcome is None else ())


def _drive(ordering: Ordering, finish_order: list[int]) -> list[tuple[str, int]]:
    """The journal a driver keeps with ``ordering`` when trials finish in ``finish_order`` (as far as allowed)."""
    state = RunState({}, 0, [])
    journal: list[tuple[str, int]] = []
    pending = list(finish_order)
    while not ordering.done(state):
        if ordering.can_ask(state):
            k = state.asked
            state.records[k] = _record(k, Status.RUNNING)
            state.asked += 1
            journal.append((ASK, k))
            continue
        tell = ordering.tellable(state)
        if tell is not None:
            state.results.pop(tell)
            state.told.append(tell)
            journal.append((TELL, tell))
            continue
        running = [t for t in pending if t < state.asked]  # the next trial to finish among those running
        trial = running[0]
        pending.remove(trial)
        state.results[trial] = state.records[trial] = _record(trial)
        state.finished += 1
    return journal


@pytest.mark.parametrize("seed", range(5))
def test_deterministic_ordering_gives_one_journal_whatever_the_finishing_order(seed: int) -> None:
    ordering = Ordering(deterministic=True, window=2, concurrency=3, n_trials=6)
    order = list(range(6))
    random.Random(seed).shuffle(order)
    journal = _drive(ordering, order)
    assert journal == [(ASK, 0), (ASK, 1), (TELL, 0), (ASK, 2), (TELL, 1), (ASK, 3), (TELL, 2), (ASK, 4),
                       (TELL, 3), (ASK, 5), (TELL, 4), (TELL, 5)]


def test_free_ordering_tells_as_results_arrive_within_the_concurrency() -> None:
    ordering = Ordering(deterministic=False, window=1, concurrency=2, n_trials=4)
    journal = _drive(ordering, [1, 0, 3, 2])
    assert journal[:2] == [(ASK, 0), (ASK, 1)]  # never more than 2 unfinished
    assert [t for e, t in journal if e == TELL] == [1, 0, 3, 2]  # told in the order they finished
    assert sorted(t for e, t in journal if e == ASK) == [0, 1, 2, 3]


def test_run_state_from_a_ledger() -> None:
    rows = [_record(0), _record(1, Status.FAILED), _record(2, Status.RUNNING, attempt=1), _record(3)]
    events = [(ASK, 0), (ASK, 1), (ASK, 2), (TELL, 0), (ASK, 3)]
    state = RunState.from_ledger(rows, events)
    assert state.asked == 4 and state.told == [0]
    assert list(state.results) == [1, 3]  # finished, not yet told, in trial order
    assert list(state.queue) == [(2, 1)]  # a running row runs again from its attempt
    assert state.finished == 3


def test_replay_rebuilds_the_controller_and_refuses_a_changed_one() -> None:
    first = make_controller("random", _space(), objectives=["acc"], seed=3)
    rows, events = [], []
    for trial in range(5):
        s = first.ask()
        rows.append(_record(trial, suggestion=s.id, encoding=tuple(int(i) for i in s.encoding), acc=0.1 * trial))
        events.append((ASK, trial))
        if trial % 2:
            first.tell(s.id, controller_result(rows[-1], REWARD))
            events.append((TELL, trial))
    again = make_controller("random", _space(), objectives=["acc"], seed=3)
    replay(again, rows, events, REWARD)
    assert again.ask().encoding == first.ask().encoding  # the same state: the same next proposal

    other = make_controller("random", _space(), objectives=["acc"], seed=4)  # the run's seed changed
    with pytest.raises(RunError, match="replaying the journal, trial 0 was proposed as"):
        replay(other, rows, events, REWARD)
    with pytest.raises(RunError, match="names trial 9, the ledger has 5"):
        replay(make_controller("random", _space(), objectives=["acc"], seed=3), rows, [(ASK, 9)], REWARD)


def test_controller_result_of_each_status() -> None:
    ok = controller_result(_record(0, acc=0.75), REWARD)
    assert ok.status is Status.OK and ok.values == {"acc": 0.75}
    pruned = controller_result(_record(1, Status.PRUNED, acc=float("nan")), REWARD)
    assert pruned.status is Status.PRUNED and pruned.values is None  # no finite metric to learn from
    failed = controller_result(_record(2, Status.FAILED), REWARD)
    assert failed.status is Status.FAILED and not failed.values

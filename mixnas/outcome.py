"""What became of a trial: one :class:`Status` for the whole package and one frozen :class:`TrialOutcome`.

Every evaluator's result ends as a ``TrialOutcome``; the ledger stores it in the trial's row
(``mixnas.launch.ledger.Ledger.finish_trial``; ``retryable`` is not kept) and its records hold it, and
``mixnas.launch.journal.controller_result`` turns a ledger record into the controller's ``Result`` in one place.
Statuses:

* ``running``: asked, not finished (a ledger row only; an outcome is never ``running``);
* ``ok``: scored; ``metrics`` holds everything measured and ``reward`` the scalar reward (None for Pareto runs);
* ``failed``: raised, or its worker was lost; ``reason`` has the exception's type and message;
* ``diverged``: a NaN / infinite loss or objective;
* ``infeasible``: broke a hard constraint (params, MACs, latency) and was not trained, or the evaluator cannot hold
  it (a supernet scoring a candidate that is not one of its members);
* ``pruned``: stopped early by the scheduler (metrics are those of its last report).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass, field
from typing import Any, Mapping


class Status(str, enum.Enum):
    """A trial's status; a ``str`` so that it compares equal to, and serialises as, its name."""

    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    DIVERGED = "diverged"
    INFEASIBLE = "infeasible"
    PRUNED = "pruned"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def finished(self) -> bool:
        return self is not Status.RUNNING

    @property
    def is_failure(self) -> bool:
        """Failed, diverged or infeasible: no objective values to learn from."""
        return self in (Status.FAILED, Status.DIVERGED, Status.INFEASIBLE)


FINISHED = tuple(s for s in Status if s.finished)


def is_finite_number(value: Any) -> bool:
    """A finite int or float (not a bool): the one test of "a usable number" for metrics, rewards and curves."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float when it is a finite number, else None (a NaN loss is stored as no loss)."""
    return float(value) if is_finite_number(value) else None


def finite_numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numeric, finite entries of a metrics mapping (what controllers and TensorBoard can use)."""
    return {key: float(value) for key, value in metrics.items() if is_finite_number(value)}


@dataclass(frozen=True)
class TrialOutcome:
    """The result of one attempt at a trial.

    Args:
        status: see the module docstring (never ``running``).
        metrics: everything the evaluator measured (params, MACs, latency, accuracy, losses, ...).
        reward: the scalar reward of an ``ok`` trial (None for Pareto objectives and for failures).
        curve: per-epoch reports ``{"epoch": e, metric: value, ...}``.
        reason: why the trial failed, diverged, was infeasible or pruned.
        retryable: False when another attempt would fail the same way (a key missing from a table).
        attempt: 0 for the first attempt, 1 for the first retry, ...
        worker: where it ran (``node/host:pid``).
        started_at: wall-clock start (seconds since the epoch).
        eval_seconds: how long the evaluation took.
    """

    status: Status
    metrics: Mapping[str, Any] = field(default_factory=dict)
    reward: float | None = None
    curve: tuple[Mapping[str, Any], ...] = ()
    reason: str | None = None
    retryable: bool = True
    attempt: int = 0
    worker: str | None = None
    started_at: float | None = None
    eval_seconds: float | None = None

    def __post_init__(self) -> None:
        status = Status(self.status)
        if status is Status.RUNNING:
            raise ValueError("a trial outcome cannot be 'running'")
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "metrics", dict(self.metrics))
        object.__setattr__(self, "curve", tuple(dict(p) for p in self.curve))
        if self.reward is not None and not math.isfinite(self.reward):
            object.__setattr__(self, "reward", None)

    def replace(self, **changes: Any) -> TrialOutcome:
        return dataclasses.replace(self, **changes)

    def retried(self, attempt: int, max_failures: int) -> bool:
        """The one retry rule of searches and reranks: a retryable failure or divergence of attempt ``attempt``
        (counted from 0) is tried again while fewer than ``max_failures`` attempts have failed."""
        return self.status in (Status.FAILED, Status.DIVERGED) and self.retryable and attempt < max_failures

    @classmethod
    def failure(cls, reason: str, *, status: Status = Status.FAILED, retryable: bool = True,
                metrics: Mapping[str, Any] | None = None, **rest: Any) -> TrialOutcome:
        return cls(status, metrics or {}, reason=reason, retryable=retryable, **rest)

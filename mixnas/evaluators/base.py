"""The one interface every evaluator implements: ``score(candidate, context) -> TrialOutcome``.

The proxy trainer, a tabular benchmark and the weight-sharing supernet all score a candidate of a search
space. What the trial runner (``mixnas/launch/trial.py``) hands them is a :class:`TrialContext`; what they return
is a :class:`~mixnas.outcome.TrialOutcome` with the metrics they measured (no reward: the trial adds latency,
constraints and the reward around it; it also counts params and MACs, so evaluators do not). There is one
failure convention: an evaluator never raises for a candidate. A candidate it cannot hold (a supernet slice that
does not exist) is ``infeasible`` with the reason; one it could not score is ``failed`` or ``diverged``, with
``retryable`` False when another attempt would fail the same way.

A direct call needs no search around it::

    outcome = ProxyEvaluator(DataSpec("digits")).score(arch, TrialContext(seed=3))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

from mixnas.outcome import TrialOutcome

# (epoch, metrics) -> True to stop the trial now (an early-stopping scheduler's decision)
Report = Callable[[int, Mapping[str, Any]], bool]


@dataclass(frozen=True)
class TrialContext:
    """What an evaluator may use besides the candidate.

    Args:
        encoding: the candidate's encoding in its search space (tables are keyed by it); ``()`` when the
            candidate is not one of a space (a direct call with an architecture).
        seed: the experiment seed (the proxy trainer's trial seed also depends on the architecture).
        report: per-epoch reports; True stops the trial (the outcome is then ``pruned``).
    """

    encoding: tuple[int, ...] = ()
    seed: int = 0
    report: Report | None = None


class Evaluator(Protocol):
    """Scores candidates; ``metrics`` names every metric an ``ok`` outcome may hold (checked against the config)."""

    @property
    def metrics(self) -> tuple[str, ...]: ...

    def score(self, candidate: Any, context: TrialContext) -> TrialOutcome: ...

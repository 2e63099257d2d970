"""Asynchronous successive halving (ASHA; Li et al., "A System for Massively Parallel Hyperparameter Tuning",
MLSys 2020), the early-stopping rule of ``execution.scheduler: {type: asha}``: one :class:`RungKeeper` per search
(a Ray actor the workers report to), seeded with the curves of the trials a resumed search already has. Pure
Python, no Ray: the pool wraps it in an actor.
"""

from __future__ import annotations

import collections
from typing import Any, Mapping, Sequence

from mixnas.outcome import is_finite_number


class RungKeeper:
    """Asynchronous successive halving (ASHA; Li et al., "A System for Massively Parallel Hyperparameter Tuning",
    MLSys 2020): at epochs ``grace * eta**k`` a trial continues only if its metric is in the top ``1/eta`` of the
    values recorded at that rung so far."""

    def __init__(self, grace_period: int, reduction_factor: int, metric: str,
                 history: Sequence[Sequence[Mapping[str, Any]]] = ()) -> None:
        self.grace, self.eta, self.metric = grace_period, reduction_factor, metric
        self.rungs: dict[int, list[float]] = collections.defaultdict(list)
        for curve in history:
            for point in curve:
                self._record(int(point.get("epoch", 0)), point.get(metric))

    def _is_rung(self, epoch: int) -> bool:
        rung = self.grace
        while rung < epoch:
            rung *= self.eta
        return rung == epoch

    def _record(self, epoch: int, value: Any) -> float | None:
        if not self._is_rung(epoch) or not is_finite_number(value):
            return None
        self.rungs[epoch].append(float(value))
        return float(value)

    def report(self, trial: int, epoch: int, metrics: Mapping[str, Any]) -> bool:
        del trial
        value = self._record(int(epoch), metrics.get(self.metric))
        if value is None:
            return False
        values = sorted(self.rungs[int(epoch)], reverse=True)
        keep = max(1, len(values) // self.eta)
        return len(values) >= self.eta and value < values[keep - 1]

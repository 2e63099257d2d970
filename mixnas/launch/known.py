"""What is known about a candidate before it is trained, as the driver shows it to the controller.

For an architecture that costs nothing to know: its params and MACs (counted), the latency table's prediction (a
table lookup; a signature the table lacks leaves the latency unknown: nothing is measured at ask time), and the
factor of the MnasNet reward that follows from a known cost (``(cost / T) ** w``), and whether that is over a hard
limit (``constraints``). Controllers do not propose what is over a limit; the driver screens out, before any
training, a candidate that is anyway (a controller's last-resort random pick).

Every answer is kept: a controller may ask about many encodings per ``ask`` (a predictor-guided one ranks
hundreds), and a later resume must show it exactly what it was shown, even if the latency table grew in between
(``measure_missing`` adds to it). :class:`KnownCosts` starts from the answers the ledger holds and hands the new
ones to the next :meth:`~mixnas.launch.ledger.Ledger.add_trial`, which stores them with the ask.
"""

from __future__ import annotations

from typing import Any, Mapping

from mixnas.controllers.base import Known
from mixnas.errors import MixnasError
from mixnas.evaluators.reward import MnasnetReward
from mixnas.search_space.arch import Architecture

Encoding = tuple[int, ...]


class KnownCosts:
    """``encoding -> Known`` for a run (a :data:`~mixnas.controllers.base.CostFn`).

    Args:
        cfg: the run's experiment config.
        space: its search space.
        stored: the answers of earlier asks (:meth:`~mixnas.launch.ledger.Ledger.known`), given again as they were.
    """

    def __init__(self, cfg: Any, space: Any, stored: Mapping[Encoding, Mapping[str, Any]] | None = None) -> None:
        self.cfg, self.space = cfg, space
        self._answers: dict[Encoding, Known] = {e: Known.from_dict(v) for e, v in (stored or {}).items()}
        self._fresh: dict[Encoding, dict[str, Any]] = {}
        self._predictor: Any = None
        self._predictor_loaded = False

    def __call__(self, encoding: Encoding) -> Known:
        encoding = tuple(int(i) for i in encoding)
        known = self._answers.get(encoding)
        if known is None:
            known = self._answers[encoding] = self._compute(encoding)
            if known.metrics or known.factors:  # nothing known (a space of plain choices) is the same on replay
                self._fresh[encoding] = known.to_dict()
        return known

    def take_fresh(self) -> dict[Encoding, dict[str, Any]]:
        """The answers given since the last call (to store with the ask they belong to)."""
        fresh, self._fresh = self._fresh, {}
        return fresh

    # ------------------------------------------------------------------ computing an answer
    def _compute(self, encoding: Encoding) -> Known:
        candidate = self.space.decode(encoding)
        if not isinstance(candidate, Architecture):
            return Known()
        from mixnas.search_space.counting import count

        counts = count(candidate)
        metrics: dict[str, float] = {"params": float(counts.params), "macs": float(counts.macs)}
        latency = self._latency(candidate)
        if latency is not None:
            metrics["latency_ms"] = latency
        factors = {}
        reward = self.cfg.reward
        if isinstance(reward, MnasnetReward) and reward.cost in metrics:
            cost = metrics[reward.cost]
            w = reward.alpha if cost <= reward.target else reward.beta
            factors["reward"] = (cost / reward.target) ** w if cost > 0 else 0.0
        return Known(metrics, factors, screened=self.cfg.constraints.broken(metrics))

    def _latency(self, arch: Architecture) -> float | None:
        if self.cfg.latency.type != "lut":
            return None  # measured latency is only known once measured, in the trial
        if not self._predictor_loaded:
            from mixnas.evaluators.latency.predictor import LatencyPredictor

            self._predictor_loaded = True
            options = self.cfg.latency.options
            self._predictor = LatencyPredictor.from_file(self.cfg.latency.lut,
                                                         calibrated=bool(options.get("calibrated", True)))
        try:
            return float(self._predictor.predict(arch)[0])
        except MixnasError:  # a signature the table lacks: unknown until the trial measures it
            return None


__all__ = ["KnownCosts"]

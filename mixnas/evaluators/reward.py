"""Accuracy-latency rewards and multi-objective tools (pure functions, no torch).

* :func:`mnasnet_reward`: MnasNet's weighted product ``ACC(m) * (LAT(m) / T) ** w`` with ``w = alpha`` if
  ``LAT(m) <= T`` else ``beta`` (Tan et al., "MnasNet: Platform-Aware Neural Architecture Search for Mobile",
  CVPR 2019, Eq. 2-3). The soft constraint (alpha = beta = -0.07) trades about 5% relative accuracy for 2x
  latency; the hard constraint (alpha = 0, beta = -1) is plain accuracy under ``T`` with a steep penalty above.
* The multi-objective tools (:func:`non_dominated_sort`, :func:`crowding_distance`, :func:`pareto_front`,
  :func:`dominates`, :func:`hypervolume`) live in :mod:`mixnas.pareto`, shared with the controllers, and are
  re-exported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from mixnas.errors import RewardError
from mixnas.pareto import (
    DIRECTIONS,
    Objective,
    crowding_distance,
    dominates,
    hypervolume,
    non_dominated_sort,
    pareto_front,
)

SOFT = (-0.07, -0.07)
HARD = (0.0, -1.0)
# (alpha, beta) of the experiment config's ``reward.mode``
REWARD_PRESETS: dict[str, tuple[float, float]] = {"soft": SOFT, "hard": HARD}


def mnasnet_reward(
    accuracy: float, latency: float, target: float, alpha: float = SOFT[0], beta: float = SOFT[1]
) -> float:
    """MnasNet reward ``accuracy * (latency / target) ** w``, ``w = alpha`` if ``latency <= target`` else ``beta``.

    ``latency`` and ``target`` may be any cost in the same unit (ms, MACs, params).

    Raises:
        RewardError: when latency or target is not a positive finite number, or accuracy is not finite.
    """
    for name, value in (("latency", latency), ("target", target)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise RewardError(f"{name}: expected a positive finite number, got {value!r}")
    if not (isinstance(accuracy, (int, float)) and math.isfinite(accuracy)):
        raise RewardError(f"accuracy: expected a finite number, got {accuracy!r}")
    w = alpha if latency <= target else beta
    return float(accuracy) * (latency / target) ** w


def metric_value(metrics: Mapping[str, Any], name: str) -> float:
    """A metric a reward needs, as a finite float.

    Raises:
        KeyError: the trial did not report it (the same on every attempt).
        ValueError: it is not a finite number (the trial diverged).
    """
    if name not in metrics or metrics[name] is None:
        raise KeyError(f"the reward needs metric {name!r}; the trial reported {sorted(metrics)}")
    value = float(metrics[name])
    if not math.isfinite(value):
        raise ValueError(f"metric {name!r} is {value}")
    return value


# --- the experiment's reward, one dataclass per ``reward.type`` (parsed by mixnas/launch/config.py) ---------------
@dataclass(frozen=True)
class MnasnetReward:
    """MnasNet's ``accuracy * (cost / target) ** w``; the controller maximises one ``reward``."""

    type: ClassVar[str] = "mnasnet"
    target: float
    accuracy: str = "top1"
    cost: str = "latency_ms"
    alpha: float = -0.07
    beta: float = -0.07

    @property
    def controller_objectives(self) -> tuple[Objective, ...]:
        return (Objective("reward", "max"),)

    def value(self, metrics: Mapping[str, Any]) -> float:
        return mnasnet_reward(metric_value(metrics, self.accuracy), metric_value(metrics, self.cost), self.target,
                              self.alpha, self.beta)

    def objective_values(self, metrics: Mapping[str, Any], reward: float | None) -> dict[str, float]:
        return {"reward": float(reward)}


@dataclass(frozen=True)
class MetricReward:
    """One metric, maximised or minimised."""

    type: ClassVar[str] = "metric"
    metric: str = "top1"
    direction: str = "max"

    @property
    def controller_objectives(self) -> tuple[Objective, ...]:
        return (Objective(self.metric, self.direction),)

    def value(self, metrics: Mapping[str, Any]) -> float:
        return metric_value(metrics, self.metric)

    def objective_values(self, metrics: Mapping[str, Any], reward: float | None) -> dict[str, float]:
        return {self.metric: float(metrics[self.metric])}


@dataclass(frozen=True)
class ParetoReward:
    """Several objectives (a multi-objective controller); ``reference_point`` for the hypervolume."""

    type: ClassVar[str] = "pareto"
    objectives: tuple[Objective, ...]
    reference_point: tuple[float, ...] | None = None

    @property
    def controller_objectives(self) -> tuple[Objective, ...]:
        return self.objectives

    def value(self, metrics: Mapping[str, Any]) -> None:
        """No scalar reward; checks that every objective is there and finite."""
        for o in self.objectives:
            metric_value(metrics, o.name)
        return None

    def objective_values(self, metrics: Mapping[str, Any], reward: float | None) -> dict[str, float]:
        return {o.name: float(metrics[o.name]) for o in self.objectives}


RewardConfig = MnasnetReward | MetricReward | ParetoReward


__all__: list[Any] = [
    "DIRECTIONS",
    "HARD",
    "MetricReward",
    "MnasnetReward",
    "ParetoReward",
    "REWARD_PRESETS",
    "SOFT",
    "RewardError",
    "crowding_distance",
    "dominates",
    "hypervolume",
    "mnasnet_reward",
    "non_dominated_sort",
    "pareto_front",
]

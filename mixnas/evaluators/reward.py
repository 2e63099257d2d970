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
from typing import Any, Mapping, Sequence

from mixnas.errors import RewardError
from mixnas.pareto import (
    DIRECTIONS,
    crowding_distance,
    dominates,
    hypervolume,
    non_dominated_sort,
    pareto_front,
)

SOFT = (-0.07, -0.07)
HARD = (0.0, -1.0)
REWARD_PRESETS: dict[str, tuple[float, float]] = {"soft": SOFT, "hard": HARD}
# What each cost objective is called in metrics dicts, and its direction.
OBJECTIVE_DIRECTIONS: dict[str, str] = {"accuracy": "max", "latency_ms": "min", "macs": "min", "params": "min"}


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


def reward_preset(name: str) -> tuple[float, float]:
    """(alpha, beta) of a named preset: ``soft`` or ``hard``."""
    try:
        return REWARD_PRESETS[name]
    except KeyError:
        raise RewardError(f"unknown reward preset {name!r}: expected one of {sorted(REWARD_PRESETS)}") from None


def objective_reward(
    accuracy: float, metrics: Mapping[str, float], objective: str, target: float, preset: str = "soft"
) -> float:
    """MnasNet reward with the cost taken from ``metrics[objective]`` (``latency_ms``, ``macs`` or ``params``)."""
    if objective not in metrics:
        raise RewardError(f"objective {objective!r} is not in the metrics (have {sorted(metrics)})")
    alpha, beta = reward_preset(preset)
    return mnasnet_reward(accuracy, metrics[objective], target, alpha, beta)


def objectives_vector(metrics: Mapping[str, float], names: Sequence[str]) -> tuple[float, ...]:
    """Values of ``names`` from a metrics dict, in order (e.g. ``("accuracy", "latency_ms")``)."""
    missing = [n for n in names if n not in metrics]
    if missing:
        raise RewardError(f"objectives {missing} are not in the metrics (have {sorted(metrics)})")
    return tuple(float(metrics[n]) for n in names)


def default_directions(names: Sequence[str]) -> list[str]:
    """Directions of well-known objectives (:data:`OBJECTIVE_DIRECTIONS`); unknown names are an error."""
    unknown = [n for n in names if n not in OBJECTIVE_DIRECTIONS]
    if unknown:
        raise RewardError(f"no default direction for objectives {unknown}: known {sorted(OBJECTIVE_DIRECTIONS)}")
    return [OBJECTIVE_DIRECTIONS[n] for n in names]


__all__: list[Any] = [
    "HARD",
    "OBJECTIVE_DIRECTIONS",
    "REWARD_PRESETS",
    "SOFT",
    "RewardError",
    "crowding_distance",
    "default_directions",
    "dominates",
    "hypervolume",
    "mnasnet_reward",
    "non_dominated_sort",
    "objective_reward",
    "objectives_vector",
    "pareto_front",
    "reward_preset",
]

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
from typing import Any

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


__all__: list[Any] = [
    "DIRECTIONS",
    "HARD",
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

"""Random search: every suggestion drawn uniformly from the space (respecting its hard constraints).

The baseline every other controller must beat (Li & Talwalkar, "Random Search and Reproducibility for Neural
Architecture Search", UAI 2019). Duplicate avoidance comes from the base class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mixnas.controllers.base import Controller, Encoding, SpaceLike, Told, derive_seeds, rng_state, set_rng_state


class RandomController(Controller):
    """Uniform random search.

    Args:
        space: The search space.
        objectives: Objective names and directions (only recorded; random search ignores results).
        seed: Seed of the sampling generator.
        avoid_duplicates: Do not repeat an encoding until the space is exhausted.
        max_retries: Re-draws of a duplicate before the base class's fallback.
    """

    type_name = "random"

    def __init__(self, space: SpaceLike, **base: Any) -> None:
        super().__init__(space, **base)
        self._rng = np.random.default_rng(derive_seeds(self.seed, 2)[1])

    def _propose(self) -> Encoding:
        return self.space.sample(self._rng)

    def _observe(self, told: Told) -> None:
        """Random search learns nothing from results."""

    def _state(self) -> dict[str, Any]:
        return {"rng": rng_state(self._rng)}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        set_rng_state(self._rng, state["rng"])

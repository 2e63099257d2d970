"""Regularized (aging) evolution, asynchronous, with Pareto selection for several objectives.

Real, Aggarwal, Huang & Le, "Regularized Evolution for Image Classifier Architecture Search", AAAI 2019: keep a
population of the ``population_size`` most recently evaluated architectures; to make a child, draw
``sample_size`` members at random (a tournament), mutate the best of them, and when the child's result arrives it
joins the population and the *oldest* member leaves (aging, not the worst). Until the population is full,
suggestions are uniformly random.

Asynchronous: a child is proposed from whatever the population holds when ``ask`` is called, so any number of
suggestions may be out at once (Real et al. ran 450 workers the same way).

Several objectives: the tournament winner is the member with the lowest non-dominated rank, ties broken by the
largest crowding distance, both computed over the current population (Deb, Pratap, Agarwal & Meyarivan, "A Fast
and Elitist Multiobjective Genetic Algorithm: NSGA-II", IEEE TEC 2002). With one objective this reduces to the
best value.

Failed results (and pruned ones without every objective value) are not added to the population: an architecture
that cannot be trained should not become a parent, and adding it with a made-up worst fitness would only shorten
the memory of the population. Pruned results with values are added: their values are a pessimistic, partial
estimate and aging removes them in time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mixnas.controllers.base import (
    Controller,
    Encoding,
    SpaceLike,
    Told,
    check_option,
    derive_seeds,
    rng_state,
    set_rng_state,
)
from mixnas import bounds
from mixnas.errors import ControllerError
from mixnas.pareto import crowding_distance, non_dominated_sort


def nondominated_ranks(points: Sequence[Sequence[float]]) -> list[int]:
    """Pareto rank of each point (0 = non-dominated), all objectives maximised (Deb et al. 2002, fast sort)."""
    ranks = [0] * len(points)
    if points:
        for rank, front in enumerate(non_dominated_sort(points, ["max"] * len(points[0]))):
            for i in front:
                ranks[i] = rank
    return ranks


def crowding_distances(points: Sequence[Sequence[float]], ranks: Sequence[int]) -> list[float]:
    """NSGA-II crowding distance of each point within its own front; boundary points get infinity."""
    distances = [0.0] * len(points)
    for rank in set(ranks):
        front = [i for i, r in enumerate(ranks) if r == rank]
        for i, d in zip(front, crowding_distance([points[i] for i in front])):
            distances[i] = d
    return distances


class EvolutionController(Controller):
    """Regularized evolution (Real et al. 2019).

    Args:
        space: The search space.
        objectives: Objective names and directions; with more than one, selection is by Pareto rank then crowding.
        seed: Seed of the generator used for initial sampling, tournaments and mutation.
        population_size: Members kept (the most recently evaluated ones).
        sample_size: Tournament size; 1 is random parent selection, ``population_size`` is greedy.
        mutations: Dimensions changed per child.
        avoid_duplicates: Do not repeat an encoding until the space is exhausted.
        max_retries: Extra tournaments when a child is a duplicate, before the base class's fallback.
    """

    type_name = "evolution"
    option_ranges = {**Controller.option_ranges, "population_size": bounds.integer(2, 100_000),
                     "sample_size": bounds.integer(1, 100_000)}

    def __init__(
        self,
        space: SpaceLike,
        *,
        population_size: int = 20,
        sample_size: int = 10,
        mutations: int = 1,
        **base: Any,
    ) -> None:
        super().__init__(space, **base)
        self.population_size = self._option("population_size", population_size)
        self.sample_size = self._option("sample_size", sample_size)
        if self.sample_size > self.population_size:
            raise ControllerError(
                f"evolution: option sample_size must be at most population_size ({self.population_size}), "
                f"got {sample_size}"
            )
        self.mutations = check_option(self.type_name, "mutations", mutations,
                                      bounds.integer(1, len(self._sizes)))  # at most one per dimension
        self._rng = np.random.default_rng(derive_seeds(self.seed, 2)[1])
        # (encoding, fitness with every objective turned to "larger is better"), oldest first
        self._population: deque[tuple[Encoding, tuple[float, ...]]] = deque(maxlen=self.population_size)

    @property
    def population(self) -> list[tuple[Encoding, tuple[float, ...]]]:
        """The current members, oldest first, with their (larger-is-better) fitness."""
        return list(self._population)

    def _propose(self) -> Encoding:
        if len(self._population) < self.population_size:
            return self.space.sample(self._rng)
        contestants = self._rng.choice(len(self._population), size=self.sample_size, replace=False)
        parent = self._population[self._tournament_winner([int(i) for i in contestants])][0]
        return self.space.mutate(parent, self._rng, n=self.mutations)

    def _tournament_winner(self, contestants: list[int]) -> int:
        points = [member[1] for member in self._population]
        if len(self.objectives) == 1:
            return max(contestants, key=lambda i: points[i][0])  # first drawn wins ties
        ranks = nondominated_ranks(points)
        crowding = crowding_distances(points, ranks)
        return min(contestants, key=lambda i: (ranks[i], -crowding[i]))

    def _observe(self, told: Told) -> None:
        if told.values is None:
            return
        self._population.append((told.encoding, self.fitness(told.values)))  # a full deque drops its oldest member

    def _options(self) -> dict[str, Any]:
        return {"population_size": self.population_size, "sample_size": self.sample_size, "mutations": self.mutations}

    def _state(self) -> dict[str, Any]:
        return {
            "rng": rng_state(self._rng),
            "population": [[list(enc), list(fit)] for enc, fit in self._population],
        }

    def _load_state(self, state: Mapping[str, Any]) -> None:
        set_rng_state(self._rng, state["rng"])
        self._population.clear()
        for enc, fit in state["population"]:
            self._population.append((tuple(int(i) for i in enc), tuple(float(v) for v in fit)))

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

Screening (``screen`` > 1, off by default): each child is the most promising of ``screen`` children, each from its
own tournament and mutation, as a predictor fitted to every told result so far judges them: the Gaussian process
of the ``guided`` controller (:mod:`mixnas.controllers.predictor`), with what the launcher knows before training
used exactly, and expected improvement (one objective), expected hypervolume improvement (two) or ParEGO (more)
from :mod:`mixnas.controllers.acquisition`. This is NPENAS's predictor-guided evolution (Wei et al., IEEE TNNLS
2022) on top of aging evolution. The population, the tournaments and aging are unchanged; only which child is
proposed changes. At 100 trainings it found better networks than plain evolution on the benchmarks of
``docs/controllers.md``.

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

from mixnas.controllers.acquisition import Belief, acquire, best_first, default_multi_objective
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
from mixnas.controllers.predictor import EncodingFeatures, make_regressor
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
        screen: Children made per proposal, the predictor choosing one (1: plain regularized evolution).
        avoid_duplicates: Do not repeat an encoding until the space is exhausted.
        max_retries: Extra tournaments when a child is a duplicate, before the base class's fallback.
    """

    type_name = "evolution"
    option_ranges = {**Controller.option_ranges, "population_size": bounds.integer(2, 100_000),
                     "sample_size": bounds.integer(1, 100_000),
                     "screen": bounds.integer(1, 10_000)}  # the predictor's cross-covariance grows with it
    max_fitted = 500  # screening fits at most this many told results, the most recent

    def __init__(
        self,
        space: SpaceLike,
        *,
        population_size: int = 20,
        sample_size: int = 10,
        mutations: int = 1,
        screen: int = 1,
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
        self.screen = self._option("screen", screen)
        seeds = derive_seeds(self.seed, 3)
        self._rng = np.random.default_rng(seeds[1])  # tournaments and mutation (as without screening)
        self._model_rng = np.random.default_rng(seeds[2])  # screening's scalarisation weights and draws
        # (encoding, fitness with every objective turned to "larger is better"), oldest first
        self._population: deque[tuple[Encoding, tuple[float, ...]]] = deque(maxlen=self.population_size)
        # screening: every told result with values (raw), the most recent max_fitted
        self._told: deque[tuple[Encoding, tuple[float, ...]]] = deque(maxlen=self.max_fitted)
        if self.screen > 1:
            self._features = EncodingFeatures(space.dimensions)
            self._regressor = make_regressor("gp", self._features.n_dimensions)

    @property
    def population(self) -> list[tuple[Encoding, tuple[float, ...]]]:
        """The current members, oldest first, with their (larger-is-better) fitness."""
        return list(self._population)

    def _propose(self) -> Encoding:
        if len(self._population) < self.population_size:
            return self.space.sample(self._rng)
        if self.screen == 1 or len(self._told) < 2:
            return self._child()
        children: dict[Encoding, None] = {}
        for _ in range(3 * self.screen):  # duplicates and children seen already are not screened
            if len(children) == self.screen:
                break
            child = self._child()
            if child not in self._seen.members and self.allowed(child):
                children[child] = None
        if not children:
            return self._child()
        return self._most_promising(list(children))

    def _child(self) -> Encoding:
        contestants = self._rng.choice(len(self._population), size=self.sample_size, replace=False)
        parent = self._population[self._tournament_winner([int(i) for i in contestants])][0]
        return self.space.mutate(parent, self._rng, n=self.mutations)

    def _most_promising(self, children: list[Encoding]) -> Encoding:
        """The child with the best acquisition value under the predictor fitted to the told results."""
        pending = list(self._pending.values())
        told = list(self._told)
        belief = Belief(objectives=self.objectives, known=self.known, features=self._features,
                        regressor=self._regressor, told=told, pending=pending, needed=children,
                        model_rng=self._model_rng)
        multi_objective = default_multi_objective(len(self.objectives))
        weights = np.ones(len(self.objectives))  # only ParEGO's scalarisation uses weights: drawn for it alone
        if multi_objective == "parego":
            weights = self._model_rng.dirichlet(weights)
        scores = acquire(children, belief, np.array([self.fitness(v) for _, v in told]), pending,
                         objectives=self.objectives, acquisition="ei", beta=0.0, multi_objective=multi_objective,
                         weights=weights, rng=self._model_rng)
        return children[best_first(scores)[0]]

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
        if self.screen > 1:
            self._told.append((told.encoding, tuple(told.values)))

    def _options(self) -> dict[str, Any]:
        options = {"population_size": self.population_size, "sample_size": self.sample_size,
                   "mutations": self.mutations}
        if self.screen > 1:  # absent when off, so that the state of a plain evolution is what it always was
            options["screen"] = self.screen
        return options

    def _state(self) -> dict[str, Any]:
        state = {
            "rng": rng_state(self._rng),
            "population": [[list(enc), list(fit)] for enc, fit in self._population],
        }
        if self.screen > 1:
            state["model_rng"] = rng_state(self._model_rng)
            state["told"] = [[list(enc), list(values)] for enc, values in self._told]
        return state

    def _load_state(self, state: Mapping[str, Any]) -> None:
        set_rng_state(self._rng, state["rng"])
        self._population.clear()
        for enc, fit in state["population"]:
            self._population.append((tuple(int(i) for i in enc), tuple(float(v) for v in fit)))
        self._told.clear()
        if self.screen > 1:
            set_rng_state(self._model_rng, state["model_rng"])
            for enc, values in state["told"]:
                self._told.append((tuple(int(i) for i in enc), tuple(float(v) for v in values)))

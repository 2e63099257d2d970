"""Predictor-guided search: a model of the told results ranks many cheap candidates, the best one is trained.

The idea comes from several papers that found it strong on NAS benchmarks: fit a performance predictor with an
uncertainty to the architectures evaluated so far, make candidates by mutating the best of them, and propose the
candidate with the highest acquisition value (White, Neiswanger & Savani, "BANANAS: Bayesian Optimization with
Neural Architectures for Neural Architecture Search", AAAI 2021; Wei et al., "NPENAS: Neural Predictor Guided
Evolution for Neural Architecture Search", IEEE TNNLS 2022). White, Zela, Ru, Liu & Hutter, "How Powerful are
Performance Predictors in Neural Architecture Search?", NeurIPS 2021, compare such predictors; Schneider,
Pfisterer, Binder & Bischl, "Mutation is all you need", AutoML workshop at ICML 2021, show that much of the gain
comes from drawing candidates as mutations of the best architectures, which is what this controller does.

Each ``ask``, once ``n_initial`` results with values have been told (until then suggestions are uniformly random):

1. **Candidates**: ``candidates`` encodings, a ``random_fraction`` of them uniform samples and the rest mutants
   (1 to ``mutations`` dimensions changed) of the ``top_k`` best told encodings (by value; with several objectives
   by non-dominated rank, then by this ask's scalarisation). Candidates pending or told already are dropped, and
   infeasible ones are skipped when choosing.
2. **Prediction**, per objective: a metric the launcher knows before training (:meth:`Controller.known`, e.g. the
   latency table's ``latency_ms``) is used as it is, with no uncertainty. Otherwise a regressor
   (:mod:`mixnas.controllers.predictor`, a Gaussian process by default) fitted to the told values predicts a mean
   and a standard deviation. Where an objective has a known factor (the MnasNet reward's latency term), the
   regressor learns the told value divided by its factor and its prediction is multiplied back; an encoding whose
   factor is not known gets the median of the factors known for the told encodings (1 when none is known).
3. **Pending suggestions** (asynchronous search): each is added to the fit as a fake observation at its predicted
   mean, with the hyperparameters of the fit on told results ("kriging believer": Ginsbourger, Le Riche & Carraro,
   "Kriging is well-suited to parallelize optimization", 2010). The uncertainty near a pending point shrinks, so
   its neighbours look less attractive and several workers do not chase the same spot.
4. **Acquisition** (``acquisition``): ``ei``, expected improvement over the best value told or believed (Jones,
   Schonlau & Welch 1998); ``ucb``, mean plus ``beta`` standard deviations (Srinivas et al. 2010); ``thompson``,
   one random plausible value (for the ensemble, one member's prediction; for the GP, a draw from each point's
   marginal normal).

Several objectives (``multi_objective``):

- ``ehvi`` (the default for two objectives): the acquisition is the hypervolume the candidate would add to the
  front of the told results and the believed pending ones: its expectation under the predictive normals for ``ei``
  (Emmerich, Giannakoglou & Naujoks, "Single- and multiobjective evolutionary optimization assisted by Gaussian
  random field metamodels", IEEE TEC 2006), the hypervolume added by the optimistic point mean + ``beta`` standard
  deviations for ``ucb``, by one draw for ``thompson``. With one objective known before training (the latency
  table's ``latency_ms``, params, MACs), the common case, the expectation is exact: along the known axis the front
  is a step function, so the expected gain is a sum of expected improvements over its steps. With both objectives
  predicted it is a Monte Carlo mean over 128 draws. The reference point is the worst told value of each objective
  minus a tenth of the told range, so that a candidate that extends the front past either end gains.
- ``parego`` (the only choice for three or more objectives): each ask draws a weight vector uniformly from the
  simplex and scores an encoding by the augmented Chebyshev distance of its objectives, normalised by the told
  minimum and maximum, to the ideal point (Knowles, IEEE TEC 2006). The acquisition is taken on that scalar, by
  Monte Carlo over 64 draws from the predictive normals. It costs the same for any number of objectives.

On both two-objective tasks of ``benchmarks/search_efficiency.py`` ``ehvi`` finds a larger hypervolume at 100
trainings than ``parego`` (``docs/controllers.md``). Parents of the mutants are ranked by non-dominated rank, then
by a random Chebyshev scalarisation drawn each ask, so that the mutants spread along the front.

Failed, diverged and infeasible results carry no values: they are not fitted (they are still "seen", so not
proposed again). Pruned results with values are fitted with those values, a pessimistic partial measurement, as
evolution keeps them.

The regressor is refitted from the told data at every ask, so the state is the told results, the generators'
states and the pending suggestions. The fit uses at most ``max_points`` told results: the best half of them and
the most recent others. At 300 told results and 200 candidates an ask takes about 0.06 s on one CPU core with the
GP and one objective, 0.12 s with two predicted objectives (``docs/controllers.md``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mixnas import bounds
from mixnas.controllers.base import (
    Controller,
    Encoding,
    SpaceLike,
    Told,
    derive_seeds,
    rng_state,
    set_rng_state,
)
from mixnas.controllers.acquisition import (
    ACQUISITIONS,
    MULTI_OBJECTIVE,
    Belief,
    Scalarisation,
    acquire,
    best_first,
    default_multi_objective,
    pareto_ranks,
)
from mixnas.controllers.predictor import MODELS, EncodingFeatures, make_regressor
from mixnas.errors import ControllerError



class GuidedController(Controller):
    """Predictor-guided search (BANANAS / NPENAS style) with known metrics and factors used exactly.

    Args:
        space: The search space.
        objectives: Objective names and directions.
        seed: Seed of the generators for sampling, mutation, weights and acquisition, and of the regressor's.
        n_initial: Results with values to collect by uniform sampling before the predictor is used.
        candidates: Candidates scored per ask.
        random_fraction: Fraction of the candidates drawn uniformly; the rest are mutants of the best told.
        top_k: How many of the best told encodings are parents of the mutants.
        mutations: Each mutant changes between 1 and this many dimensions (at most the space's dimensions).
        acquisition: ``ei`` (expected improvement), ``ucb`` (upper confidence bound) or ``thompson``.
        beta: Standard deviations added to the mean by ``ucb``.
        model: ``gp`` (Gaussian process) or ``ensemble`` (bootstrap ridge ensemble).
        max_points: At most this many told results are fitted (the best half and the most recent others).
        multi_objective: With several objectives: ``ehvi`` (expected hypervolume improvement; two objectives only)
            or ``parego`` (random augmented Chebyshev scalarisations); None: ``parego`` for three or more
            objectives, else ``ehvi``. Ignored with one objective.
        avoid_duplicates: Do not repeat an encoding until the space is exhausted.
        max_retries: Extra proposals when one is rejected, before the base class's fallback.
    """

    type_name = "guided"
    option_ranges = {
        **Controller.option_ranges,
        "n_initial": bounds.integer(2, 100_000),  # the regressor needs two points
        "candidates": bounds.integer(1, 10_000),  # the GP's cross-covariance grows with candidates x max_points
        "random_fraction": bounds.number(0, 1),
        "top_k": bounds.integer(1, 100_000),
        "mutations": bounds.integer(1, 1000),
        "beta": bounds.number(0, 100),
        "max_points": bounds.integer(2, 5000),  # the GP's fit is cubic in it
    }

    def __init__(
        self,
        space: SpaceLike,
        *,
        n_initial: int = 10,
        candidates: int = 200,
        random_fraction: float = 0.1,
        top_k: int = 10,
        mutations: int = 2,
        acquisition: str = "ei",
        beta: float = 2.0,
        model: str = "gp",
        max_points: int = 500,
        multi_objective: str | None = None,
        **base: Any,
    ) -> None:
        super().__init__(space, **base)
        self.n_initial = self._option("n_initial", n_initial)
        self.candidates = self._option("candidates", candidates)
        self.random_fraction = self._option("random_fraction", random_fraction)
        self.top_k = self._option("top_k", top_k)
        self.mutations = self._option("mutations", mutations)
        self.beta = self._option("beta", beta)
        self.max_points = self._option("max_points", max_points)
        self.acquisition = _word(acquisition, "acquisition", ACQUISITIONS)
        self.model = _word(model, "model", MODELS)
        if multi_objective is None:
            multi_objective = default_multi_objective(len(self.objectives))
        self.multi_objective = _word(multi_objective, "multi_objective", MULTI_OBJECTIVE)
        if self.multi_objective == "ehvi" and len(self.objectives) > 2:
            raise ControllerError(f"guided: multi_objective ehvi needs exactly two objectives, this search has "
                                  f"{len(self.objectives)}; use multi_objective: parego")
        self._features = EncodingFeatures(space.dimensions)
        self._regressor = make_regressor(self.model, self._features.n_dimensions)
        seeds = derive_seeds(self.seed, 3)  # [0] is the base class's generator
        self._rng = np.random.default_rng(seeds[1])  # candidates, weights, acquisition draws
        self._model_rng = np.random.default_rng(seeds[2])  # the regressor's (bootstrap resampling)
        self._told: list[tuple[Encoding, tuple[float, ...]]] = []  # results with values, in told order

    # ------------------------------------------------------------------ the algorithm

    def _propose(self) -> Encoding:
        if len(self._told) < self.n_initial:
            return self.space.sample(self._rng)
        weights = self._draw_weights()
        pool = self._candidates(self._ranked(weights)[: self.top_k])
        if not pool:
            return self.space.sample(self._rng)
        scores = self._acquire(pool, weights)
        for i in best_first(scores):
            if self.allowed(pool[i]):
                return pool[i]
        return self.space.sample(self._rng)

    def predict(self, encodings: Sequence[Encoding]) -> tuple[np.ndarray, np.ndarray]:
        """The controller's belief about ``encodings``: mean and standard deviation of every objective (raw values,
        shape ``(len(encodings), objectives)``), as the next ask would see them (known metrics exact, pending
        suggestions as fake observations). Leaves the controller's state as it was.

        Raises:
            ControllerError: fewer than two results with values have been told.
        """
        if len(self._told) < 2:
            raise ControllerError(f"guided: predict needs two told results with values, has {len(self._told)}")
        encodings = [tuple(int(i) for i in e) for e in encodings]
        weights = np.full(len(self.objectives), 1.0 / len(self.objectives))
        belief = self._belief(encodings, weights, copy.deepcopy(self._model_rng))
        return belief.values(encodings)

    def _belief(self, needed: Sequence[Encoding], weights: np.ndarray, model_rng: np.random.Generator) -> Belief:
        return Belief(objectives=self.objectives, known=self.known, features=self._features,
                       regressor=self._regressor, told=self._fitted(weights), pending=list(self._pending.values()),
                       needed=needed, model_rng=model_rng)

    def _draw_weights(self) -> np.ndarray:
        """Scalarisation weights, uniform on the simplex (one objective: 1)."""
        if len(self.objectives) == 1:
            return np.ones(1)
        return self._rng.dirichlet(np.ones(len(self.objectives)))

    def _candidates(self, parents: list[Encoding]) -> list[Encoding]:
        """Mutants of the parents and uniform samples, without repeats, pending or told encodings."""
        n_random = round(self.candidates * self.random_fraction)
        most = min(self.mutations, len(self._sizes))
        pool: dict[Encoding, None] = {}  # insertion-ordered set
        for _ in range(self.candidates - n_random):
            parent = parents[int(self._rng.integers(len(parents)))]
            pool[self.space.mutate(parent, self._rng, n=int(self._rng.integers(1, most + 1)))] = None
        for _ in range(n_random):
            pool[self.space.sample(self._rng)] = None
        return [e for e in pool if e not in self._seen.members and self.allowed(e)]

    def _ranked(self, weights: np.ndarray) -> list[Encoding]:
        """Told encodings, best first (several objectives: by non-dominated rank, then by the scalarisation)."""
        return [self._told[i][0] for i in self._order(weights)]

    def _order(self, weights: np.ndarray) -> list[int]:
        fitness = np.array([self.fitness(values) for _, values in self._told])
        if len(self.objectives) == 1:
            return sorted(range(len(fitness)), key=lambda i: -fitness[i, 0])  # stable: earlier first among ties
        ranks = pareto_ranks(fitness)
        scalar = Scalarisation(weights, fitness)(fitness)
        return sorted(range(len(fitness)), key=lambda i: (ranks[i], -scalar[i]))

    def _fitted(self, weights: np.ndarray) -> list[tuple[Encoding, tuple[float, ...]]]:
        """The told results the regressor is fitted to: all, or the best half and the most recent of the rest."""
        if len(self._told) <= self.max_points:
            return self._told
        order = self._order(weights)
        keep = set(order[: self.max_points // 2])
        for i in range(len(self._told) - 1, -1, -1):
            if len(keep) == self.max_points:
                break
            keep.add(i)
        return [self._told[i] for i in sorted(keep)]

    def _acquire(self, pool: list[Encoding], weights: np.ndarray) -> np.ndarray:
        """The acquisition value of every candidate (larger is better)."""
        belief = self._belief(pool, weights, self._model_rng)
        told = np.array([self.fitness(values) for _, values in self._told])
        return acquire(pool, belief, told, list(self._pending.values()), objectives=self.objectives,
                       acquisition=self.acquisition, beta=self.beta, multi_objective=self.multi_objective,
                       weights=weights, rng=self._rng)

    # ------------------------------------------------------------------ protocol hooks

    def _observe(self, told: Told) -> None:
        if told.values is not None:  # a failure teaches the regressor nothing; the base class keeps it "seen"
            self._told.append((told.encoding, tuple(told.values)))

    def _options(self) -> dict[str, Any]:
        return {
            "n_initial": self.n_initial,
            "candidates": self.candidates,
            "random_fraction": self.random_fraction,
            "top_k": self.top_k,
            "mutations": self.mutations,
            "acquisition": self.acquisition,
            "beta": self.beta,
            "model": self.model,
            "max_points": self.max_points,
            "multi_objective": self.multi_objective,
        }

    def _state(self) -> dict[str, Any]:
        return {
            "rng": rng_state(self._rng),
            "model_rng": rng_state(self._model_rng),
            "told": [[list(enc), list(values)] for enc, values in self._told],
        }

    def _load_state(self, state: Mapping[str, Any]) -> None:
        set_rng_state(self._rng, state["rng"])
        set_rng_state(self._model_rng, state["model_rng"])
        self._told = [(tuple(int(i) for i in enc), tuple(float(v) for v in values)) for enc, values in state["told"]]


def _word(value: Any, option: str, valid: Sequence[str]) -> str:
    if value not in valid:
        raise ControllerError(f"guided: option {option} must be one of {list(valid)}, got {value!r}")
    return str(value)

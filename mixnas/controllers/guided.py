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

Several objectives: each ask draws a weight vector uniformly from the simplex and scores an encoding by the
augmented Chebyshev distance of its objectives, normalised by the told minimum and maximum, to the ideal point, as
ParEGO does (Knowles, IEEE TEC 2006). The acquisition is taken on that scalar, by Monte Carlo over 64 draws from
the predictive normals of the objectives. Chosen over hypervolume improvement because it costs the same for any
number of objectives, works on a mix of known and predicted objectives, reaches concave parts of the front (a
weighted sum does not), and the weights drawn afresh each ask spread pending suggestions along the front.

Failed, diverged and infeasible results carry no values: they are not fitted (they are still "seen", so not
proposed again). Pruned results with values are fitted with those values, a pessimistic partial measurement, as
evolution keeps them.

The regressor is refitted from the told data at every ask, so the state is the told results, the generators'
states and the pending suggestions. The fit uses at most ``max_points`` told results: the best half of them and
the most recent others. At 300 told results and 200 candidates an ask takes about 0.06 s on one CPU core with the
GP and one objective, 0.12 s with two predicted objectives (``docs/controllers.md``).
"""

from __future__ import annotations

import math
import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mixnas import bounds
from mixnas.controllers.base import (
    Controller,
    Encoding,
    Known,
    SpaceLike,
    Told,
    derive_seeds,
    rng_state,
    set_rng_state,
)
from mixnas.controllers.predictor import MODELS, EncodingFeatures, Fit, Regressor, make_regressor
from mixnas.errors import ControllerError
from mixnas.pareto import Objective

ACQUISITIONS = ("ei", "ucb", "thompson")
_MC_SAMPLES = 64  # draws of the objectives per candidate for the acquisition of a scalarisation
_CHEBYSHEV_RHO = 0.05  # weight of the sum term of the augmented Chebyshev scalarisation (ParEGO's value)


class GuidedController(Controller):
    """Predictor-guided search (BANANAS / NPENAS style) with known metrics and factors used exactly.

    Args:
        space: The search space.
        objectives: Objective names and directions; several are scalarised with random augmented Chebyshev weights.
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
        for i in _best_first(scores):
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

    def _belief(self, needed: Sequence[Encoding], weights: np.ndarray, model_rng: np.random.Generator) -> _Belief:
        return _Belief(objectives=self.objectives, known=self.known, features=self._features,
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
        ranks = _pareto_ranks(fitness)
        scalar = _Scalarisation(weights, fitness)(fitness)
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
        signs = np.array([o.sign for o in self.objectives])
        pending = list(self._pending.values())
        believed = belief.values(pending)[0] * signs if pending else np.zeros((0, len(signs)))
        if self.acquisition == "thompson":
            draws = belief.draw(pool, self._rng) * signs
            if len(self.objectives) == 1:
                return draws[:, 0]
            return _Scalarisation(weights, told)(draws)
        mean, std = belief.values(pool)
        mean = mean * signs
        if len(self.objectives) == 1:
            best = float(np.concatenate([told[:, 0], believed[:, 0]]).max())
            if self.acquisition == "ucb":
                return mean[:, 0] + self.beta * std[:, 0]
            return _expected_improvement(mean[:, 0], std[:, 0], best)
        scalarise = _Scalarisation(weights, told)
        best = float(np.concatenate([scalarise(told), scalarise(believed)]).max())
        samples = scalarise(mean + std * self._rng.standard_normal((_MC_SAMPLES, *mean.shape)))
        if self.acquisition == "ucb":
            return samples.mean(axis=0) + self.beta * samples.std(axis=0)
        return np.maximum(samples - best, 0.0).mean(axis=0)

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


class _Belief:
    """Per objective: the known value where the launcher knows it, else the regressor's prediction (times the
    known factor), with the pending suggestions fitted as fake observations at their predicted means.

    A regressor is fitted only for objectives that some encoding of ``needed`` (the candidates) or of ``pending``
    does not know.
    """

    def __init__(
        self,
        *,
        objectives: Sequence[Objective],
        known: Callable[[Encoding], Known],
        features: EncodingFeatures,
        regressor: Regressor,
        told: Sequence[tuple[Encoding, tuple[float, ...]]],
        pending: Sequence[Encoding],
        needed: Sequence[Encoding],
        model_rng: np.random.Generator,
    ) -> None:
        self._objectives = tuple(objectives)
        self._known_fn = known
        self._features = features
        self._known: dict[Encoding, Known] = {}  # each encoding is asked once per belief
        told_encodings = [e for e, _ in told]
        x_told = features(told_encodings)
        self._fits: list[Fit | None] = []
        self._fallback: list[float] = []
        for j, objective in enumerate(self._objectives):
            told_factors = [self._factor(e, objective.name) for e in told_encodings]
            known_factors = [f for f in told_factors if f is not None]
            fallback = float(np.median(known_factors)) if known_factors else 1.0
            self._fallback.append(fallback)
            if all(self._known_value(e, objective.name) is not None for e in [*needed, *pending]):
                self._fits.append(None)
                continue
            y = np.array([values[j] / (f if f is not None else fallback) for (_, values), f in zip(told, told_factors)])
            fit = regressor.fit(x_told, y, model_rng)
            if pending:  # kriging believer: pending suggestions observed at their predicted means
                x_pending = features(pending)
                fit = fit.refit(np.vstack([x_told, x_pending]), np.concatenate([y, fit.predict(x_pending)[0]]),
                                model_rng)
            self._fits.append(fit)

    def _of(self, encoding: Encoding) -> Known:
        if encoding not in self._known:
            self._known[encoding] = self._known_fn(encoding)
        return self._known[encoding]

    def _factor(self, encoding: Encoding, name: str) -> float | None:
        """The known factor of objective ``name`` (None: not known, or 0 or not finite, so not usable)."""
        factor = self._of(encoding).factors.get(name)
        if factor is None or not math.isfinite(factor) or factor == 0:
            return None
        return float(factor)

    def _known_value(self, encoding: Encoding, name: str) -> float | None:
        value = self._of(encoding).metrics.get(name)
        return float(value) if value is not None else None

    def values(self, encodings: Sequence[Encoding]) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation, raw objective values, shape ``(len(encodings), objectives)``."""
        return self._combine(encodings, lambda fit, x: fit.predict(x))

    def draw(self, encodings: Sequence[Encoding], rng: np.random.Generator) -> np.ndarray:
        """One plausible value of every objective (raw), shape ``(len(encodings), objectives)``."""
        return self._combine(encodings, lambda fit, x: (fit.draw(x, rng), np.zeros(len(x))))[0]

    def _combine(
        self, encodings: Sequence[Encoding], predict: Callable[[Fit, np.ndarray], tuple[np.ndarray, np.ndarray]]
    ) -> tuple[np.ndarray, np.ndarray]:
        mean, std = np.zeros((len(encodings), len(self._objectives))), np.zeros((len(encodings), len(self._objectives)))
        x: np.ndarray | None = None  # the features, computed once if some objective needs the regressor
        for j, objective in enumerate(self._objectives):
            exact = [self._known_value(e, objective.name) for e in encodings]
            unknown = [i for i, v in enumerate(exact) if v is None]
            for i, v in enumerate(exact):
                if v is not None:
                    mean[i, j] = v
            if not unknown:
                continue
            fit = self._fits[j]
            if fit is None:  # only for an encoding the belief was not built for
                raise ControllerError(f"guided: no prediction of {objective.name!r} for {encodings[unknown[0]]}")
            if x is None:
                x = self._features(encodings)
            mu, sd = predict(fit, x[unknown])
            factors = np.array([self._factor(encodings[i], objective.name) or self._fallback[j] for i in unknown])
            mean[unknown, j] = factors * mu
            std[unknown, j] = np.abs(factors) * sd
        return mean, std


class _Scalarisation:
    """Augmented Chebyshev scalarisation of fitness vectors (larger is better), normalised by the told range:
    ``-(max_i w_i (1 - g_i) + rho * sum_i w_i (1 - g_i))`` with ``g`` the fitness scaled so the told range is [0, 1]
    (Knowles, ParEGO, 2006, turned to maximisation)."""

    def __init__(self, weights: np.ndarray, told: np.ndarray) -> None:
        self.weights = weights
        self.low = told.min(axis=0)
        span = told.max(axis=0) - self.low
        self.span = np.where(span > 0, span, 1.0)

    def __call__(self, fitness: np.ndarray) -> np.ndarray:
        gap = self.weights * (1.0 - (fitness - self.low) / self.span)
        return -(gap.max(axis=-1) + _CHEBYSHEV_RHO * gap.sum(axis=-1))


def _pareto_ranks(fitness: np.ndarray) -> np.ndarray:
    """Non-dominated rank of each row (0: on the front), every column maximised; vectorised, so that ranking a few
    hundred told results costs milliseconds (``mixnas.pareto`` sorts lists in Python)."""
    at_least = (fitness[:, None, :] >= fitness[None, :, :]).all(axis=-1)
    better = (fitness[:, None, :] > fitness[None, :, :]).any(axis=-1)
    dominates = at_least & better  # [i, j]: i dominates j
    ranks = np.zeros(len(fitness), dtype=np.int64)
    remaining = np.ones(len(fitness), dtype=bool)
    rank = 0
    while remaining.any():  # each pass removes at least one row: a finite set has an undominated member
        left = np.flatnonzero(remaining)
        front = left[~dominates[np.ix_(left, left)].any(axis=0)]
        ranks[front] = rank
        remaining[front] = False
        rank += 1
    return ranks


def _expected_improvement(mean: np.ndarray, std: np.ndarray, best: float) -> np.ndarray:
    """E[max(Y - best, 0)] for Y ~ N(mean, std^2); ``max(mean - best, 0)`` where std is 0."""
    gain = mean - best
    safe = np.where(std > 0, std, 1.0)
    z = gain / safe
    cdf = 0.5 * np.array([math.erfc(-v / math.sqrt(2.0)) for v in z])
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return np.where(std > 0, gain * cdf + safe * pdf, np.maximum(gain, 0.0))


def _best_first(scores: np.ndarray) -> list[int]:
    """Indices by decreasing score, ties by index; scores are rounded to 9 significant digits of the largest
    magnitude first, so that a last-bit difference in the linear algebra (another BLAS, another thread count) is
    very unlikely to change the order."""
    magnitude = float(np.abs(scores).max()) if len(scores) else 0.0
    rounded = np.round(scores / magnitude, 9) if magnitude > 0 else scores
    return [int(i) for i in np.argsort(-rounded, kind="stable")]


def _word(value: Any, option: str, valid: Sequence[str]) -> str:
    if value not in valid:
        raise ControllerError(f"guided: option {option} must be one of {list(valid)}, got {value!r}")
    return str(value)

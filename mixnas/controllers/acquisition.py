"""What a predictor's belief about untrained candidates is worth: the acquisition functions of model-guided search.

Shared by the ``guided`` controller and evolution's ``screen`` option. A :class:`Belief` holds, per objective, the
value the launcher knows before training (:meth:`~mixnas.controllers.base.Controller.known`) or a regressor's
prediction with its uncertainty; :func:`acquire` turns it into one score per candidate (larger is better):

- one objective: expected improvement (``ei``), upper confidence bound (``ucb``) or a Thompson draw;
- two objectives, ``multi_objective="ehvi"``: the hypervolume a candidate would add to the front
  (:class:`Front2D`), expected (``ei``, exact where one objective is known), optimistic (``ucb``) or drawn;
- any number, ``multi_objective="parego"``: those on a random augmented Chebyshev scalarisation
  (:class:`Scalarisation`).

numpy only; no files, no Ray, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from mixnas.controllers.base import Encoding, Known
from mixnas.controllers.predictor import EncodingFeatures, Fit, Regressor
from mixnas.errors import ControllerError
from mixnas.pareto import Objective

ACQUISITIONS = ("ei", "ucb", "thompson")
MULTI_OBJECTIVE = ("ehvi", "parego")
MC_SAMPLES = 64  # draws of the objectives per candidate for the acquisition of a scalarisation
HVI_SAMPLES = 128  # draws per candidate for the expected hypervolume improvement when both objectives are predicted
REFERENCE_MARGIN = 0.1  # the hypervolume's reference point: the worst told value minus this share of the told range
CHEBYSHEV_RHO = 0.05  # weight of the sum term of the augmented Chebyshev scalarisation (ParEGO's value)


def default_multi_objective(n_objectives: int) -> str:
    """``ehvi`` for up to two objectives (it is ignored with one), ``parego`` for more."""
    return "ehvi" if n_objectives <= 2 else "parego"


def acquire(
    pool: Sequence[Encoding],
    belief: Belief,
    told: np.ndarray,
    pending: Sequence[Encoding],
    *,
    objectives: Sequence[Objective],
    acquisition: str,
    beta: float,
    multi_objective: str,
    weights: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """The acquisition value of every candidate of ``pool`` (larger is better).

    ``told``: the told results' fitness (every objective turned to larger-is-better), one row each; ``pending``:
    suggestions out for training, counted at their believed values; ``weights``: the scalarisation's (ParEGO).
    """
    signs = np.array([o.sign for o in objectives])
    believed = belief.values(pending)[0] * signs if pending else np.zeros((0, len(signs)))
    if acquisition == "thompson":
        draws = belief.draw(pool, rng) * signs
        if len(objectives) == 1:
            return draws[:, 0]
        if multi_objective == "ehvi":
            return Front2D(np.vstack([told, believed]), reference_point(told)).gain(draws)
        return Scalarisation(weights, told)(draws)
    mean, std = belief.values(pool)
    mean = mean * signs
    if len(objectives) == 1:
        best = float(np.concatenate([told[:, 0], believed[:, 0]]).max())
        if acquisition == "ucb":
            return mean[:, 0] + beta * std[:, 0]
        return expected_improvement(mean[:, 0], std[:, 0], best)
    if multi_objective == "ehvi":
        front = Front2D(np.vstack([told, believed]), reference_point(told))
        return front.gain(mean + beta * std) if acquisition == "ucb" else front.expected_gain(mean, std, rng)
    scalarise = Scalarisation(weights, told)
    best = float(np.concatenate([scalarise(told), scalarise(believed)]).max())
    samples = scalarise(mean + std * rng.standard_normal((MC_SAMPLES, *mean.shape)))
    if acquisition == "ucb":
        return samples.mean(axis=0) + beta * samples.std(axis=0)
    return np.maximum(samples - best, 0.0).mean(axis=0)


class Belief:
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


class Scalarisation:
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
        return -(gap.max(axis=-1) + CHEBYSHEV_RHO * gap.sum(axis=-1))


def reference_point(told: np.ndarray) -> np.ndarray:
    """The hypervolume's reference point (fitness, larger is better): the worst told value of each column minus
    ``REFERENCE_MARGIN`` of the told range. (The front's own worst, as some libraries infer it, leaves out whatever
    would extend the front past its ends: on NAS-Bench-Macro one search in eight then never looked below 25
    MFLOPs.)"""
    low, high = told.min(axis=0), told.max(axis=0)
    span = np.where(high > low, high - low, np.maximum(np.abs(low), 1.0))
    return low - REFERENCE_MARGIN * span


class Front2D:
    """The region that a set of two-column points (larger is better in both) dominates above ``reference``, and
    what a new point adds to it.

    Along the first column the dominated region's upper edge is a step function: on the step
    ``low[k] < x <= high[k]`` the points whose first column reaches ``x`` reach ``level[k]`` in the second. A point
    ``(a, b)`` adds ``sum_k max(0, min(a, high[k]) - low[k]) * max(0, b - level[k])``.
    """

    def __init__(self, points: np.ndarray, reference: np.ndarray) -> None:
        self.reference = reference
        above = points[(points > reference).all(axis=1)]
        front = above[pareto_ranks(above) == 0] if len(above) else above
        front = np.unique(front, axis=0)  # sorted by the first column; on a front, the second then decreases
        self.points = front
        self.low = np.concatenate([[reference[0]], front[:, 0]])
        self.high = np.concatenate([front[:, 0], [np.inf]])
        self.level = np.concatenate([front[:, 1], [reference[1]]])

    def _widths(self, first: np.ndarray) -> np.ndarray:
        return np.clip(np.minimum(first[..., None], self.high) - self.low, 0.0, None)

    def gain(self, points: np.ndarray) -> np.ndarray:
        """The hypervolume each row of ``points`` (shape ``(..., 2)``) adds."""
        heights = np.clip(points[..., 1, None] - self.level, 0.0, None)
        return (self._widths(points[..., 0]) * heights).sum(axis=-1)

    def expected_gain(self, mean: np.ndarray, std: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """E[gain] for independent normals per column: exact where at most one column is uncertain (a sum of expected
        improvements over the steps), a Monte Carlo mean over ``HVI_SAMPLES`` draws where both are."""
        out = np.zeros(len(mean))
        second = std[:, 0] == 0  # the first column known: uncertain (or known) second column
        first = ~second & (std[:, 1] == 0)
        both = ~second & ~first
        if second.any():
            out[second] = self._expected_along(mean[second], std[second])
        if first.any():
            swapped = Front2D(self.points[:, ::-1], self.reference[::-1])
            out[first] = swapped._expected_along(mean[first][:, ::-1], std[first][:, ::-1])
        if both.any():
            draws = mean[both] + std[both] * rng.standard_normal((HVI_SAMPLES, int(both.sum()), 2))
            out[both] = self.gain(draws).mean(axis=0)
        return out

    def _expected_along(self, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        """E[gain] with the first column known (``std[:, 0] == 0``) and the second normal."""
        widths = self._widths(mean[:, 0])
        levels = np.broadcast_to(self.level, widths.shape)
        gains = expected_improvement(np.repeat(mean[:, 1:2], widths.shape[1], axis=1).ravel(),
                                      np.repeat(std[:, 1:2], widths.shape[1], axis=1).ravel(), levels.ravel())
        return (widths * gains.reshape(widths.shape)).sum(axis=1)


def pareto_ranks(fitness: np.ndarray) -> np.ndarray:
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


def expected_improvement(mean: np.ndarray, std: np.ndarray, best: float | np.ndarray) -> np.ndarray:
    """E[max(Y - best, 0)] for Y ~ N(mean, std^2); ``max(mean - best, 0)`` where std is 0."""
    gain = mean - best
    safe = np.where(std > 0, std, 1.0)
    z = gain / safe
    cdf = 0.5 * np.array([math.erfc(-v / math.sqrt(2.0)) for v in z])
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return np.where(std > 0, gain * cdf + safe * pdf, np.maximum(gain, 0.0))


def best_first(scores: np.ndarray) -> list[int]:
    """Indices by decreasing score, ties by index; scores are rounded to 9 significant digits of the largest
    magnitude first, so that a last-bit difference in the linear algebra (another BLAS, another thread count) is
    very unlikely to change the order."""
    magnitude = float(np.abs(scores).max()) if len(scores) else 0.0
    rounded = np.round(scores / magnitude, 9) if magnitude > 0 else scores
    return [int(i) for i in np.argsort(-rounded, kind="stable")]

"""Performance predictors of the guided controller: features of encodings, and regressors that say how sure they are.

A predictor is fitted to the told results of a search and predicts, for encodings not trained yet, a mean and a
standard deviation. Two regressors share one small interface (``fit(x, y, rng)`` returns a :class:`Fit` with
``predict``, ``draw`` and ``refit``):

* :class:`GaussianProcess`: exact GP regression on standardised targets; the kernel is a mixture of a squared
  exponential on the features (for one-hot features, an exponential of the Hamming distance) and a linear kernel
  (an additive model of the choices); its shape, length scale and noise are chosen on a small grid by marginal
  likelihood, with the signal amplitude solved in closed form. The default: fitted to 50 or 100 architectures it
  ranked held-out ones better than the ensemble on NAS-Bench-Macro and Accel-NASBench, and up to 300 on
  Accel-NASBench; elsewhere the two were level within a standard error (``docs/controllers.md``).
* :class:`RidgeEnsemble`: a bootstrap ensemble of ridge regressions (the ensemble-of-predictors idea of White,
  Neiswanger & Savani, "BANANAS", AAAI 2021, with a linear member instead of a neural network); the ridge penalty
  is chosen by closed-form leave-one-out error, and the spread of the members is the uncertainty.

numpy only (no scikit-learn, scipy or torch), so the base install runs it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

Encoding = tuple[int, ...]

# Grids searched by marginal likelihood (GaussianProcess) and leave-one-out error (RidgeEnsemble).
GP_SHAPES = ((0.0, 1.0), (0.5, 0.25), (0.5, 0.5), (0.5, 1.0), (0.5, 2.0), (1.0, 0.5), (1.0, 1.0))  # (rbf weight,
#                                                 length scale); weight 0 is the linear kernel alone
GP_NOISES = (1e-3, 1e-2, 0.05, 0.2)  # noise variance relative to the signal's
RIDGE_PENALTIES = (0.01, 0.1, 1.0, 10.0, 100.0)
ENSEMBLE_MEMBERS = 16


class EncodingFeatures:
    """Encodings as feature rows: one-hot of every dimension's choice, and (``numeric``) the choice's value scaled
    to [0, 1] when a dimension's choices are all numbers (bools are not numbers here).

    Args:
        dimensions: the space's dimensions, each with ``.choices``.
        numeric: add the scaled numeric value of numeric dimensions.
    """

    def __init__(self, dimensions: Sequence[Any], *, numeric: bool = True) -> None:
        self._tables = [_dimension_table(dim.choices, numeric) for dim in dimensions]
        self.n_dimensions = len(self._tables)
        self.width = sum(t.shape[1] for t in self._tables)

    def __call__(self, encodings: Sequence[Encoding]) -> np.ndarray:
        """An ``(len(encodings), width)`` float matrix."""
        codes = np.asarray(encodings, dtype=np.int64).reshape(len(encodings), self.n_dimensions)
        if not len(codes):
            return np.zeros((0, self.width))
        return np.hstack([table[codes[:, d]] for d, table in enumerate(self._tables)])


def _dimension_table(choices: Sequence[Any], numeric: bool) -> np.ndarray:
    """Row ``i``: the features of choice ``i`` of one dimension."""
    table = np.eye(len(choices))
    is_number = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices)
    if numeric and is_number and len(choices) > 1:
        values = np.asarray(choices, dtype=float)
        span = float(values.max() - values.min())
        if span > 0:
            table = np.hstack([table, ((values - values.min()) / span)[:, None]])
    return table


class Fit(Protocol):
    """A regressor fitted to data."""

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of the prediction at each row of ``x``."""

    def draw(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One random plausible value at each row of ``x`` (for Thompson sampling)."""

    def refit(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> Fit:
        """Fitted to other data with the hyperparameters chosen by this fit (for fake observations)."""


class Regressor(Protocol):
    def fit(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> Fit:
        """Fit to rows ``x`` and targets ``y`` (at least two rows)."""


@dataclass(frozen=True)
class _Standardised:
    """Targets shifted to mean 0 and scaled to standard deviation 1 (scale 1 when they are all equal)."""

    mean: float
    scale: float

    @classmethod
    def of(cls, y: np.ndarray) -> _Standardised:
        scale = float(y.std())
        return cls(float(y.mean()), scale if scale > 1e-12 * max(1.0, abs(float(y.mean()))) else 1.0)

    def forward(self, y: np.ndarray) -> np.ndarray:
        return (y - self.mean) / self.scale


# ---------------------------------------------------------------------------------------------- Gaussian process


@dataclass(frozen=True)
class Kernel:
    """``rbf_weight * exp(-|a - b|^2 / (scale * lengthscale)) + (1 - rbf_weight) * a.b / scale``.

    ``scale`` is the number of dimensions, so the distance is the fraction of dimensions that differ (twice it, for
    one-hot features) whatever the size of the space, and the linear term is the fraction that agree.
    """

    rbf_weight: float
    lengthscale: float
    scale: float

    def matrix(self, dot: np.ndarray, sqdist: np.ndarray) -> np.ndarray:
        k = (1.0 - self.rbf_weight) * dot / self.scale
        if self.rbf_weight > 0:
            k = k + self.rbf_weight * np.exp(-sqdist / (self.scale * self.lengthscale))
        return k

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.matrix(a @ b.T, _sqdist(a, b))

    def diagonal(self, a: np.ndarray) -> np.ndarray:
        return (1.0 - self.rbf_weight) * (a * a).sum(axis=1) / self.scale + self.rbf_weight


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * (a @ b.T), 0.0)


class GaussianProcess:
    """GP regression with the kernel's shape and the noise chosen by marginal likelihood over a grid.

    Args:
        scale: the number of dimensions of the encodings (see :class:`Kernel`).
        shapes: ``(rbf_weight, lengthscale)`` pairs to try.
        noises: noise variances (relative to the signal amplitude) to try.
    """

    def __init__(
        self,
        *,
        scale: float,
        shapes: Sequence[tuple[float, float]] = GP_SHAPES,
        noises: Sequence[float] = GP_NOISES,
    ) -> None:
        self.scale = float(scale)
        self.shapes = tuple(shapes)
        self.noises = tuple(noises)

    def fit(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> GPFit:
        del rng  # exact inference: nothing random
        target = _Standardised.of(y)
        ys = target.forward(y)
        dot, sqdist = x @ x.T, _sqdist(x, x)
        best: tuple[float, Kernel, float] | None = None
        for weight, lengthscale in self.shapes:
            kernel = Kernel(weight, lengthscale, self.scale)
            gram = kernel.matrix(dot, sqdist)
            for noise in self.noises:
                evidence = _log_evidence(gram, noise, ys)
                # rounded, so that a last-bit difference between machines is unlikely to change the choice
                if evidence is not None and (best is None or round(evidence, 9) > round(best[0], 9)):
                    best = (evidence, kernel, noise)
        if best is None:  # every grid point was numerically singular: a linear kernel, noise as large as the signal
            return GPFit(Kernel(0.0, 1.0, self.scale), 1.0, x, y)
        return GPFit(best[1], best[2], x, y)


def _log_evidence(gram: np.ndarray, noise: float, ys: np.ndarray) -> float | None:
    """Log marginal likelihood of standardised targets with the amplitude at its maximum (None: not positive
    definite)."""
    n = len(ys)
    try:
        chol = np.linalg.cholesky(gram + noise * np.eye(n))
    except np.linalg.LinAlgError:
        return None
    z = np.linalg.solve(chol, ys)
    amplitude = max(float(z @ z) / n, 1e-12)
    return -0.5 * n * math.log(amplitude) - float(np.log(np.diag(chol)).sum())


class GPFit:
    """A GP conditioned on ``(x, y)`` with a fixed kernel and noise; the amplitude is its maximum-likelihood value."""

    def __init__(self, kernel: Kernel, noise: float, x: np.ndarray, y: np.ndarray) -> None:
        self.kernel, self.noise = kernel, noise
        self._x = x
        self._target = _Standardised.of(y)
        ys = self._target.forward(y)
        gram = kernel(x, x) + noise * np.eye(len(x))
        for jitter in (0.0, 1e-8, 1e-6, 1e-4, 1e-2, 1.0):  # rounding can make a tiny noise not quite enough
            try:
                chol = np.linalg.cholesky(gram + jitter * np.eye(len(x)))
                break
            except np.linalg.LinAlgError:
                continue
        else:
            raise np.linalg.LinAlgError(f"GP covariance of {len(x)} points is not positive definite")
        self._chol_inv = np.linalg.inv(chol)
        z = self._chol_inv @ ys
        self._alpha = self._chol_inv.T @ z
        self._amplitude = max(float(z @ z) / len(ys), 1e-12)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cross = self.kernel(x, self._x)
        mean = cross @ self._alpha
        v = self._chol_inv @ cross.T
        var = self._amplitude * np.maximum(self.kernel.diagonal(x) - (v * v).sum(axis=0), 0.0)
        return self._target.mean + self._target.scale * mean, self._target.scale * np.sqrt(var)

    def draw(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A draw from each point's marginal normal (not a joint sample: candidates are scored independently)."""
        mean, std = self.predict(x)
        return mean + std * rng.standard_normal(len(mean))

    def refit(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> GPFit:
        del rng
        return GPFit(self.kernel, self.noise, x, y)


# ----------------------------------------------------------------------------------------------- ridge ensemble


class RidgeEnsemble:
    """Bootstrap ensemble of ridge regressions; mean and standard deviation over the members.

    Args:
        members: number of bootstrap members.
        penalties: ridge penalties to choose from (on standardised targets), by leave-one-out error on all data.
    """

    def __init__(self, *, members: int = ENSEMBLE_MEMBERS, penalties: Sequence[float] = RIDGE_PENALTIES) -> None:
        self.members = int(members)
        self.penalties = tuple(penalties)

    def fit(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> EnsembleFit:
        target = _Standardised.of(y)
        penalty = _loo_penalty(x, target.forward(y), self.penalties)
        return EnsembleFit(penalty, self.members, x, y, rng)


def _loo_penalty(x: np.ndarray, ys: np.ndarray, penalties: Sequence[float]) -> float:
    """The penalty with the smallest closed-form leave-one-out squared error (ridge on centred data)."""
    xc = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    uy = u.T @ (ys - ys.mean())
    best = (math.inf, penalties[0])
    for penalty in penalties:
        shrink = s * s / (s * s + penalty)
        fitted = u @ (shrink * uy) + ys.mean()
        leverage = (u * u) @ shrink + 1.0 / len(ys)  # the intercept's leverage too
        error = float(np.mean(((ys - fitted) / np.maximum(1.0 - leverage, 1e-6)) ** 2))
        if round(error, 9) < round(best[0], 9):
            best = (error, penalty)
    return best[1]


def _ridge(x: np.ndarray, ys: np.ndarray, penalty: float) -> tuple[np.ndarray, float]:
    mean_x, mean_y = x.mean(axis=0), float(ys.mean())
    xc = x - mean_x
    weights = np.linalg.solve(xc.T @ xc + penalty * np.eye(x.shape[1]), xc.T @ (ys - mean_y))
    return weights, mean_y - float(mean_x @ weights)


class EnsembleFit:
    """The members of a bootstrap ridge ensemble, fitted to ``(x, y)``."""

    def __init__(self, penalty: float, members: int, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> None:
        self.penalty, self.members = penalty, members
        self._target = _Standardised.of(y)
        ys = self._target.forward(y)
        fits = [_ridge(x[idx], ys[idx], penalty) for idx in rng.integers(0, len(ys), size=(members, len(ys)))]
        self._weights = np.stack([w for w, _ in fits], axis=1)
        self._intercepts = np.array([b for _, b in fits])

    def _members(self, x: np.ndarray) -> np.ndarray:
        return self._target.mean + self._target.scale * (x @ self._weights + self._intercepts)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = self._members(x)
        return values.mean(axis=1), values.std(axis=1)

    def draw(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The prediction of one member chosen at random."""
        return self._members(x)[:, int(rng.integers(self.members))]

    def refit(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> EnsembleFit:
        return EnsembleFit(self.penalty, self.members, x, y, rng)


MODELS = ("gp", "ensemble")


def make_regressor(model: str, n_dimensions: int) -> Regressor:
    """The regressor named ``model`` (one of :data:`MODELS`) for encodings of ``n_dimensions`` dimensions."""
    if model == "gp":
        return GaussianProcess(scale=n_dimensions)
    if model == "ensemble":
        return RidgeEnsemble()
    raise ValueError(f"unknown model {model!r}; valid: {list(MODELS)}")

"""The guided controller's own behaviour (the contract suite in test_controllers.py covers the protocol): metrics
known before training are used as they are, known factors multiply the prediction, pending suggestions are not
proposed again and count as fake observations, and the predictors rank a separable toy well."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest

from mixnas.controllers import Controller, Objective, Result, make_controller
from mixnas.controllers.base import NOTHING_KNOWN, Known
from mixnas.controllers.acquisition import Front2D, expected_improvement, reference_point
from mixnas.errors import ControllerError
from mixnas.evaluators.reward import hypervolume
from mixnas.controllers.predictor import EncodingFeatures, GaussianProcess, RidgeEnsemble
from mixnas.search_space.spaces import ChoiceSpace, Dimension

from test_controllers import OPTIMUM, toy_space, toy_values

ACC = Objective("acc", "max")
LAT = Objective("lat", "min")
ALL = list(itertools.product(range(3), repeat=5))


def guided(objectives: list[Objective], **options: Any) -> Controller:
    return make_controller("guided", toy_space(), objectives=objectives, seed=0, **{"n_initial": 6, **options})


def tell_random(controller: Controller, n: int, values: Any) -> list[tuple[int, ...]]:
    told = []
    for _ in range(n):
        s = controller.ask()
        controller.tell(s.id, Result("ok", values(s.encoding)))
        told.append(s.encoding)
    return told


def pairs_in_order(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Of the pairs whose true values differ, the fraction the prediction orders the same way."""
    i, j = np.triu_indices(len(truth), k=1)
    differ = truth[i] != truth[j]
    agree = np.sign(predicted[i] - predicted[j]) == np.sign(truth[i] - truth[j])
    return float(agree[differ].mean())


# --------------------------------------------------------------------------------------------- known metrics


def test_a_known_metric_is_used_instead_of_the_prediction() -> None:
    # the told latencies say "the sum of the choices"; the launcher knows that encodings starting (1, 1) take -100
    def costs(encoding: tuple[int, ...]) -> Known:
        return Known(metrics={"lat": -100.0}) if encoding[:2] == (1, 1) else NOTHING_KNOWN

    controller = guided([LAT], candidates=200)
    tell_random(controller, 6, lambda e: {"lat": float(sum(e))})
    mean, std = controller.predict([(1, 1, 0, 0, 0)])
    assert mean[0, 0] > -10 and std[0, 0] > 0  # without costs: predicted
    controller.use_costs(costs)
    mean, std = controller.predict([(1, 1, 0, 0, 0), (0, 0, 0, 0, 0)])
    assert mean[0, 0] == -100.0 and std[0, 0] == 0.0  # exactly the known value
    assert std[1, 0] > 0
    assert controller.ask().encoding[:2] == (1, 1)


def test_a_known_latency_that_dominates_is_preferred_with_two_objectives() -> None:
    # latency is known for every encoding; those starting (2, 0) are 50 faster than any told result suggests
    def latency(encoding: tuple[int, ...]) -> float:
        return float(sum(encoding)) - (50.0 if encoding[:2] == (2, 0) else 0.0)

    controller = guided([ACC, LAT])
    controller.use_costs(lambda e: Known(metrics={"lat": latency(e)}))
    initial = tell_random(controller, 6, lambda e: {"acc": toy_values(e)["acc"], "lat": latency(e)})
    assert not any(e[:2] == (2, 0) for e in initial)
    proposed = tell_random(controller, 5, lambda e: {"acc": toy_values(e)["acc"], "lat": latency(e)})
    assert all(e[:2] == (2, 0) for e in proposed), proposed


# --------------------------------------------------------------------------------------------- known factors


def factored_reward(encoding: tuple[int, ...]) -> float:
    return toy_values(encoding)["acc"] * factor(encoding)


def factor(encoding: tuple[int, ...]) -> float:
    return 1.0 + encoding[0] * encoding[1]  # an interaction: no additive model of the choices fits it


def test_known_factors_multiply_the_prediction() -> None:
    reward = Objective("reward", "max")

    def fitted(costs: Any) -> tuple[Controller, list[tuple[int, ...]]]:
        controller = guided([reward], n_initial=40)  # 40 random suggestions, the same whatever the costs
        controller.use_costs(costs)
        return controller, tell_random(controller, 40, lambda e: {"reward": factored_reward(e)})

    unseen = (0, 1, 2, 2, 2)
    plain, told = fitted(lambda e: Known(factors={"reward": factor(e)}))
    tripled, told_too = fitted(lambda e: Known(factors={"reward": factor(e) * (3.0 if e == unseen else 1.0)}))
    assert told == told_too and unseen not in told
    mean, std = plain.predict([unseen])
    mean3, std3 = tripled.predict([unseen])
    assert mean3[0, 0] == pytest.approx(3 * mean[0, 0]) and std3[0, 0] == pytest.approx(3 * std[0, 0])

    held_out = [e for e in ALL if e not in set(told)]
    truth = np.array([factored_reward(e) for e in held_out])
    with_factors = plain.predict(held_out)[0][:, 0]
    without = fitted(None)[0].predict(held_out)[0][:, 0]
    error, error_without = np.abs(with_factors - truth).mean(), np.abs(without - truth).mean()
    assert error < 0.1 and error < error_without / 5, (error, error_without)


# ----------------------------------------------------------------------------------------- pending suggestions


def test_pending_suggestions_are_not_proposed_again_and_count_as_observed() -> None:
    controller = guided([ACC], avoid_duplicates=False)  # the base class would not stop a repeat
    told = tell_random(controller, 6, toy_values)
    pending = [controller.ask().encoding for _ in range(10)]  # model-based from the first
    assert len(set(pending)) == 10 and not set(pending) & set(told)
    # kriging believer: a pending encoding is a fake observation, so its uncertainty is nearly gone
    twin = guided([ACC], avoid_duplicates=False)
    assert tell_random(twin, 6, toy_values) == told
    std_pending = controller.predict([pending[0]])[1][0, 0]
    std_free = twin.predict([pending[0]])[1][0, 0]
    assert std_pending < 0.5 * std_free, (std_pending, std_free)


def test_failed_results_are_not_fitted_but_not_proposed_again() -> None:
    controller = guided([ACC], n_initial=4)
    failed = []
    for _ in range(4):
        s = controller.ask()
        controller.tell(s.id, Result("failed", reason="out of memory"))
        failed.append(s.encoding)
    tell_random(controller, 4, toy_values)
    assert len(controller.state_dict()["controller"]["told"]) == 4
    later = tell_random(controller, 20, toy_values)
    assert not set(later) & set(failed)


def test_a_capped_fit_keeps_the_best_and_the_latest() -> None:
    controller = guided([ACC], max_points=6, n_initial=20)
    told = tell_random(controller, 20, toy_values)
    best = max(told, key=lambda e: toy_values(e)["acc"])
    mean, _ = controller.predict([best, told[-1]])
    assert mean[0, 0] == pytest.approx(toy_values(best)["acc"], abs=0.05)
    assert mean[1, 0] == pytest.approx(toy_values(told[-1])["acc"], abs=0.05)


@pytest.mark.parametrize("multi_objective", ["ehvi", "parego"])
def test_a_multi_objective_search_of_the_toy_finds_both_ends_of_the_front(multi_objective: str) -> None:
    controller = guided([ACC, Objective("cost", "min")], candidates=100, multi_objective=multi_objective)
    told = tell_random(controller, 40, toy_values)
    assert OPTIMUM in told or max(toy_values(e)["acc"] for e in told) >= 4.5
    assert min(sum(e) for e in told) <= 1


def test_ehvi_is_the_default_for_two_objectives_and_refused_for_three() -> None:
    assert guided([ACC, LAT]).options()["multi_objective"] == "ehvi"
    three = [ACC, LAT, Objective("params", "min")]
    assert guided(three).options()["multi_objective"] == "parego"
    with pytest.raises(ControllerError, match="ehvi needs exactly two objectives.*use multi_objective: parego"):
        guided(three, multi_objective="ehvi")
    with pytest.raises(ControllerError, match=r"multi_objective must be one of \['ehvi', 'parego'\]"):
        guided([ACC, LAT], multi_objective="nsga")


def test_the_hypervolume_gain_is_the_growth_of_the_hypervolume() -> None:
    rng = np.random.default_rng(1)
    for _ in range(100):
        told = rng.normal(size=(int(rng.integers(1, 12)), 2))
        reference = reference_point(told)
        front = Front2D(told, reference)
        inside = [tuple(p) for p in told if (p > reference).all()]
        before = hypervolume(inside, tuple(reference), ["max", "max"]) if inside else 0.0
        for point in rng.normal(size=(5, 2)):
            grown = inside + ([tuple(point)] if (point > reference).all() else [])
            after = hypervolume(grown, tuple(reference), ["max", "max"]) if grown else 0.0
            assert front.gain(point[None])[0] == pytest.approx(after - before, abs=1e-12)


def test_the_expected_hypervolume_gain_is_exact_with_one_known_objective() -> None:
    rng = np.random.default_rng(2)
    told = rng.normal(size=(8, 2))
    front = Front2D(told, reference_point(told))
    mean, std = rng.normal(size=(6, 2)), np.abs(rng.normal(size=(6, 2)))
    std[:3, 0] = 0  # first objective known
    std[3:, 1] = 0  # second objective known
    by_sampling = front.gain(mean + std * rng.standard_normal((100_000, 6, 2))).mean(axis=0)
    assert front.expected_gain(mean, std, rng) == pytest.approx(by_sampling, rel=0.02, abs=1e-3)
    both = np.abs(rng.normal(size=(4, 2)))  # both uncertain: a Monte Carlo mean of the same quantity
    sampled = front.gain(mean[:4] + both * rng.standard_normal((100_000, 4, 2))).mean(axis=0)
    assert front.expected_gain(mean[:4], both, rng) == pytest.approx(sampled, rel=0.25, abs=0.02)


# ----------------------------------------------------------------------------------------------- the predictor


@pytest.mark.parametrize("model", ["gp", "ensemble"])
def test_the_predictor_ranks_a_separable_toy(model: str) -> None:
    space = toy_space()
    features = EncodingFeatures(space.dimensions)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(ALL))
    train, test = [ALL[i] for i in order[:40]], [ALL[i] for i in order[40:]]
    y = np.array([toy_values(e)["acc"] for e in train])
    regressor = GaussianProcess(scale=features.n_dimensions) if model == "gp" else RidgeEnsemble()
    fit = regressor.fit(features(train), y, rng)
    mean, std = fit.predict(features(test))
    truth = np.array([toy_values(e)["acc"] for e in test])
    assert pairs_in_order(mean, truth) > 0.85
    assert np.all(std >= 0) and np.all(np.isfinite(mean))
    assert fit.draw(features(test), rng).shape == (len(test),)


def test_features_are_one_hot_plus_scaled_numbers() -> None:
    space = ChoiceSpace([Dimension("k", (3, 5, 7)), Dimension("se", (False, True)), Dimension("op", ("a", "b"))])
    features = EncodingFeatures(space.dimensions)
    assert features.width == 3 + 1 + 2 + 2  # bools and strings are not numbers
    row = features([(2, 1, 0)])[0]
    assert row.tolist() == [0, 0, 1, 1.0, 0, 1, 1, 0]
    assert EncodingFeatures(space.dimensions, numeric=False).width == 7


def test_expected_improvement_matches_its_definition() -> None:
    rng = np.random.default_rng(0)
    mean, std, best = np.array([0.0, 1.0, -1.0, 2.0]), np.array([1.0, 0.5, 2.0, 0.0]), 0.5
    draws = mean + std * rng.standard_normal((200_000, 4))
    expected = np.maximum(draws - best, 0).mean(axis=0)
    assert expected_improvement(mean, std, best) == pytest.approx(expected, abs=5e-3)
    assert expected_improvement(mean, std, best)[3] == 1.5 and math.isfinite(expected_improvement(mean, std, 9)[0])

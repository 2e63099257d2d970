"""MnasNet reward, Pareto tools and hypervolume against hand-computed cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from mixnas.evaluators.reward import (
    HARD,
    REWARD_PRESETS,
    SOFT,
    RewardError,
    crowding_distance,
    dominates,
    hypervolume,
    mnasnet_reward,
    non_dominated_sort,
    pareto_front,
)


# --- MnasNet reward -------------------------------------------------------------------------------------------
def test_reward_at_target_is_accuracy() -> None:
    assert mnasnet_reward(0.75, 80.0, 80.0) == pytest.approx(0.75)
    assert mnasnet_reward(0.75, 80.0, 80.0, *HARD) == pytest.approx(0.75)


def test_soft_reward_hand_computed() -> None:
    # Half the target latency: 0.5 ** -0.07 = 1.04971...; double: 2 ** -0.07 = 0.95264...
    assert mnasnet_reward(0.5, 40.0, 80.0) == pytest.approx(0.5 * 0.5**-0.07)
    assert mnasnet_reward(0.5, 160.0, 80.0) == pytest.approx(0.5 * 0.952638, rel=1e-5)
    # MnasNet's rationale: doubling latency costs about 5% relative accuracy.
    assert mnasnet_reward(1.0, 160.0, 80.0) / mnasnet_reward(1.0, 80.0, 80.0) == pytest.approx(0.9526, abs=1e-4)


def test_hard_reward_is_accuracy_under_target_and_penalised_above() -> None:
    assert mnasnet_reward(0.7, 10.0, 80.0, *HARD) == pytest.approx(0.7)
    assert mnasnet_reward(0.7, 79.999, 80.0, *HARD) == pytest.approx(0.7)
    assert mnasnet_reward(0.7, 160.0, 80.0, *HARD) == pytest.approx(0.35)


def test_alpha_applies_at_or_below_target_and_beta_above() -> None:
    assert mnasnet_reward(1.0, 40.0, 80.0, alpha=-1.0, beta=0.0) == pytest.approx(2.0)
    assert mnasnet_reward(1.0, 160.0, 80.0, alpha=-1.0, beta=0.0) == pytest.approx(1.0)


def test_presets() -> None:
    assert REWARD_PRESETS == {"soft": SOFT, "hard": HARD} and SOFT == (-0.07, -0.07) and HARD == (0.0, -1.0)


@pytest.mark.parametrize("latency,target", [(0.0, 80.0), (-1.0, 80.0), (10.0, 0.0), (math.nan, 80.0), (math.inf, 80.0)])
def test_reward_rejects_bad_costs(latency: float, target: float) -> None:
    with pytest.raises(RewardError):
        mnasnet_reward(0.5, latency, target)


# --- dominance and fronts -------------------------------------------------------------------------------------
MAX_MIN = ["max", "min"]  # (accuracy, latency)


def test_dominance_respects_directions() -> None:
    assert dominates((0.8, 10.0), (0.7, 12.0), MAX_MIN)
    assert not dominates((0.7, 12.0), (0.8, 10.0), MAX_MIN)
    assert not dominates((0.8, 10.0), (0.8, 10.0), MAX_MIN)  # duplicates do not dominate each other
    assert dominates((0.8, 10.0), (0.8, 11.0), MAX_MIN)  # equal in one, better in the other
    assert dominates((0.7, 12.0), (0.8, 10.0), ["min", "max"])


def test_non_dominated_sort_hand_case() -> None:
    points = [
        (0.80, 20.0),  # 0: front 0
        (0.70, 10.0),  # 1: front 0
        (0.75, 15.0),  # 2: front 0
        (0.70, 20.0),  # 3: dominated by 0, 1, 2 -> front 1
        (0.80, 20.0),  # 4: duplicate of 0 -> front 0
        (0.60, 25.0),  # 5: dominated by 3 too -> front 2
    ]
    assert non_dominated_sort(points, MAX_MIN) == [[0, 1, 2, 4], [3], [5]]
    assert pareto_front(points, MAX_MIN) == [0, 1, 2, 4]
    assert pareto_front([], MAX_MIN) == []


def test_non_dominated_sort_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    points = [tuple(p) for p in rng.integers(0, 6, size=(40, 3)).astype(float)]
    dirs = ["max", "min", "min"]
    fronts = non_dominated_sort(points, dirs)
    assert sorted(i for f in fronts for i in f) == list(range(len(points)))
    for k, front in enumerate(fronts):
        for i in front:
            for j in front:
                assert not dominates(points[j], points[i], dirs)
            if k:  # something in the previous front dominates it
                assert any(dominates(points[j], points[i], dirs) for j in fronts[k - 1])


def test_crowding_distance_hand_case() -> None:
    points = [(0.0, 4.0), (1.0, 2.0), (3.0, 1.0), (4.0, 0.0)]
    d = crowding_distance(points, ["min", "min"])
    assert d[0] == d[3] == math.inf
    # point 1: (3 - 0) / 4 + (4 - 1) / 4 = 1.5; point 2: (4 - 1) / 4 + (2 - 0) / 4 = 1.25
    assert d[1] == pytest.approx(1.5)
    assert d[2] == pytest.approx(1.25)
    assert crowding_distance([(1.0, 1.0), (2.0, 2.0)]) == [math.inf, math.inf]


def test_bad_objective_input() -> None:
    with pytest.raises(RewardError, match="direction"):
        pareto_front([(1.0, 2.0)], ["max", "down"])
    with pytest.raises(RewardError, match="objectives"):
        pareto_front([(1.0, 2.0, 3.0)], ["max", "min"])
    with pytest.raises(RewardError, match="2 or 3"):
        hypervolume([(1.0,)], (0.0,), ["min"])


# --- hypervolume ----------------------------------------------------------------------------------------------
def test_hypervolume_2d_hand_case() -> None:
    points = [(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]
    # Staircase against (4, 4): 3*1 + 2*1 + 1*1 = 6.
    assert hypervolume(points, (4.0, 4.0), ["min", "min"]) == pytest.approx(6.0)
    # Dominated points, duplicates and points beyond the reference add nothing.
    more = points + [(2.5, 2.5), (2.0, 2.0), (5.0, 0.5), (4.0, 1.0)]
    assert hypervolume(more, (4.0, 4.0), ["min", "min"]) == pytest.approx(6.0)
    assert hypervolume([], (4.0, 4.0), ["min", "min"]) == 0.0


def test_hypervolume_with_max_direction() -> None:
    # (accuracy max, latency min) against reference (accuracy 0, latency 100).
    points = [(0.8, 50.0), (0.6, 20.0)]
    # Union of [0,0.8]x[50,100] (area 40) and [0,0.6]x[20,100] (48), overlap [0,0.6]x[50,100] (30): 58.
    assert hypervolume(points, (0.0, 100.0), MAX_MIN) == pytest.approx(58.0)


def test_hypervolume_3d_hand_case() -> None:
    ref = (2.0, 2.0, 2.0)
    dirs = ["min"] * 3
    assert hypervolume([(0.0, 0.0, 0.0)], ref, dirs) == pytest.approx(8.0)
    # Two boxes of volume 4 (1x2x2 and 2x1x2) overlapping in 1x1x2 = 2: 6.
    assert hypervolume([(1.0, 0.0, 0.0), (0.0, 1.0, 0.0)], ref, dirs) == pytest.approx(6.0)
    # Different depths: box A = [1,2]x[0,2]x[0,2] (4), box B = [0,2]x[1,2]x[1,2] (2), overlap [1,2]x[1,2]x[1,2] (1).
    assert hypervolume([(1.0, 0.0, 0.0), (0.0, 1.0, 1.0), (1.0, 1.0, 1.0)], ref, dirs) == pytest.approx(5.0)


def test_hypervolume_3d_matches_grid_count() -> None:
    rng = np.random.default_rng(1)
    points = [tuple(p) for p in rng.integers(0, 5, size=(12, 3)).astype(float)]
    ref = (5.0, 5.0, 5.0)
    cells = 0
    for c in itertools.product(range(5), repeat=3):  # unit cell [c, c+1] is dominated iff some p <= c
        if any(all(p[k] <= c[k] for k in range(3)) for p in points):
            cells += 1
    assert hypervolume(points, ref, ["min"] * 3) == pytest.approx(float(cells))

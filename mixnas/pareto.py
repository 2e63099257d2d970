"""Pareto tools shared by the controllers and the evaluators (pure functions, no dependencies).

* :func:`non_dominated_sort` (fast non-dominated sorting) and :func:`crowding_distance` (Deb et al., "A fast and
  elitist multiobjective genetic algorithm: NSGA-II", IEEE TEC 2002), :func:`pareto_front`, :func:`dominates`.
* :func:`hypervolume`: the exact dominated hypervolume in two objectives (sweep) and three objectives
  (slicing along the third objective, exact 2-D volume of each slab), against a reference point.

Objectives have *directions*: ``"max"`` or ``"min"`` per objective. Internally every objective is turned into
one to minimise (maximised values are negated), so one set of algorithms serves any mix. This module sits beside
:mod:`mixnas.errors` at the bottom of the import graph: regularized evolution (controllers) and the reward and
run summaries (evaluators, launch) use the same definitions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from mixnas.errors import ControllerError, RewardError

DIRECTIONS = ("max", "min")


@dataclass(frozen=True)
class Objective:
    """One objective of a search: a result value name and whether larger (``max``) or smaller (``min``) is better."""

    name: str
    direction: str = "max"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ControllerError(f"objective name must be a non-empty string, got {self.name!r}")
        if self.direction not in DIRECTIONS:
            raise ControllerError(
                f"objective {self.name!r}: direction must be one of {list(DIRECTIONS)}, got {self.direction!r}"
            )

    @property
    def sign(self) -> float:
        """+1 for ``max``, -1 for ``min``: multiplying a value by it makes larger always better."""
        return 1.0 if self.direction == "max" else -1.0


def _to_minimise(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[tuple[float, ...]]:
    for d in directions:
        if d not in DIRECTIONS:
            raise RewardError(f"objective direction {d!r}: expected one of {list(DIRECTIONS)}")
    out = []
    for i, p in enumerate(points):
        if len(p) != len(directions):
            raise RewardError(f"point {i} has {len(p)} objectives, expected {len(directions)} (one per direction)")
        if not all(isinstance(v, (int, float)) and not math.isnan(v) for v in p):
            raise RewardError(f"point {i}: objective values must be numbers (not NaN), got {list(p)}")
        out.append(tuple(-float(v) if d == "max" else float(v) for v, d in zip(p, directions)))
    return out


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` dominates ``b`` (minimisation): no worse everywhere, strictly better somewhere."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Whether point ``a`` Pareto-dominates point ``b`` under ``directions``."""
    ma, mb = _to_minimise([a, b], directions)
    return _dominates(ma, mb)


def non_dominated_sort(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[list[int]]:
    """Fronts of point indices: front 0 is non-dominated, front 1 is dominated only by front 0, and so on.

    Duplicated points do not dominate each other and share a front. O(M N^2) (Deb et al. 2002).
    """
    pts = _to_minimise(points, directions)
    n = len(pts)
    dominated_by: list[list[int]] = [[] for _ in range(n)]
    counts = [0] * n
    for i in range(n):
        for j in range(i + 1, n):
            if _dominates(pts[i], pts[j]):
                dominated_by[i].append(j)
                counts[j] += 1
            elif _dominates(pts[j], pts[i]):
                dominated_by[j].append(i)
                counts[i] += 1
    fronts: list[list[int]] = []
    current = [i for i in range(n) if counts[i] == 0]
    while current:
        fronts.append(current)
        nxt = []
        for i in current:
            for j in dominated_by[i]:
                counts[j] -= 1
                if counts[j] == 0:
                    nxt.append(j)
        current = sorted(nxt)
    return fronts


def pareto_front(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points (duplicates of a non-dominated point are all kept)."""
    fronts = non_dominated_sort(points, directions)
    return fronts[0] if fronts else []


def crowding_distance(points: Sequence[Sequence[float]], directions: Sequence[str] | None = None) -> list[float]:
    """NSGA-II crowding distance of each point within one front (boundary points get ``inf``).

    Each objective contributes the normalised gap between a point's two neighbours along it; an objective on
    which all points agree contributes nothing. Directions do not change distances; they only validate input.
    """
    if not points:
        return []
    m = len(points[0])
    pts = _to_minimise(points, directions or ["min"] * m)
    n = len(pts)
    distance = [0.0] * n
    if n <= 2:
        return [math.inf] * n
    for k in range(m):
        order = sorted(range(n), key=lambda i: pts[i][k])
        lo, hi = pts[order[0]][k], pts[order[-1]][k]
        distance[order[0]] = distance[order[-1]] = math.inf
        if hi == lo:
            continue
        for pos in range(1, n - 1):
            distance[order[pos]] += (pts[order[pos + 1]][k] - pts[order[pos - 1]][k]) / (hi - lo)
    return distance


def hypervolume(
    points: Sequence[Sequence[float]], reference: Sequence[float], directions: Sequence[str]
) -> float:
    """Exact volume dominated by ``points`` and bounded by ``reference`` (2 or 3 objectives).

    A point that does not strictly improve on the reference in every objective adds nothing. Duplicates and
    dominated points are handled (they add nothing).
    """
    if len(reference) not in (2, 3):
        raise RewardError(f"hypervolume supports 2 or 3 objectives, got a reference point of {len(reference)}")
    pts = _to_minimise(points, directions)
    (ref,) = _to_minimise([reference], directions)
    inside = [p for p in pts if all(x < r for x, r in zip(p, ref))]
    if not inside:
        return 0.0
    if len(ref) == 2:
        return _hv2(inside, ref)
    return _hv3(inside, ref)


def _hv2(points: Sequence[Sequence[float]], ref: Sequence[float]) -> float:
    """2-D sweep: sort by the first objective, add the rectangle each new best second objective adds."""
    volume = 0.0
    best_y = ref[1]
    for x, y in sorted((p[0], p[1]) for p in points):
        if y < best_y:
            volume += (ref[0] - x) * (best_y - y)
            best_y = y
    return volume


def _hv3(points: Sequence[Sequence[float]], ref: Sequence[float]) -> float:
    """3-D slicing on the third objective: between consecutive z values the dominated area is a 2-D volume."""
    ordered = sorted(points, key=lambda p: p[2])
    volume = 0.0
    for i, p in enumerate(ordered):
        z_next = ordered[i + 1][2] if i + 1 < len(ordered) else ref[2]
        depth = z_next - p[2]
        if depth > 0:
            volume += depth * _hv2([q[:2] for q in ordered[: i + 1]], ref[:2])
    return volume

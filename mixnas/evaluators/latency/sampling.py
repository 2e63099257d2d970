"""Architectures for profiling and validation: distinct members of a space, at a chosen resolution.

``latency profile``, ``validate`` and ``export-layers`` (and the ``benchmarks/`` scripts) draw their networks
here, so a table and its validation sample a space the same way: ``seed`` 0 for profiles, another seed for the
held-out validation networks, the calibration networks of a table left out of its validation.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from mixnas.errors import ArchitectureError, LatencyTableError
from mixnas.evaluators.latency.signatures import SpaceSignatures, space_signatures
from mixnas.search_space.arch import Architecture

PROFILE_SEED = 0
VALIDATE_SEED = 1
MAX_DRAWS_PER_ARCH = 50


def with_resolution(arch: Architecture, resolution: int | None) -> Architecture:
    """``arch`` at ``resolution`` (unchanged for None); an :class:`ArchitectureError` for a bad resolution."""
    if resolution is None or resolution == arch.resolution:
        return arch
    try:
        return arch.replace(resolution=resolution)
    except ValueError as exc:
        raise ArchitectureError(str(exc)) from None


def resolution_transform(resolution: int | None) -> Callable[[Architecture], Architecture]:
    return lambda a: with_resolution(a, resolution)


def sample_archs(
    space_spec: Any, n: int, seed: int, resolution: int | None = None, exclude: frozenset[str] = frozenset()
) -> tuple[Any, list[tuple[int, ...]], list[Architecture]]:
    """The space and ``n`` distinct architectures sampled from it with ``seed`` (ids in ``exclude`` skipped).

    ``space_spec``: a preset name, YAML file or mapping (:func:`~mixnas.search_space.spaces.load_space`).
    Returns ``(space, encodings, architectures)``. Sampling stops with an error after ``50 * n`` draws.
    """
    from mixnas.search_space.spaces import load_space

    space = load_space(space_spec)
    rng = np.random.default_rng(seed)
    found: dict[str, tuple[tuple[int, ...], Architecture]] = {}
    for _ in range(MAX_DRAWS_PER_ARCH * max(n, 1)):
        if len(found) >= n:
            break
        encoding = space.sample(rng)
        arch = space.decode(encoding)
        if not isinstance(arch, Architecture):
            raise LatencyTableError(
                f"space {space_spec!r} does not decode to architectures (got {type(arch).__name__})"
            )
        arch = with_resolution(arch, resolution)
        if arch.id not in exclude:
            found.setdefault(arch.id, (tuple(encoding), arch))
    if len(found) < n:
        raise LatencyTableError(f"space {space_spec!r}: found only {len(found)} distinct architectures for -n {n}")
    return space, [e for e, _ in found.values()], [a for _, a in found.values()]


def space_coverage(space_spec: Any, resolution: int | None = None) -> SpaceSignatures:
    """Every signature the space can produce (:class:`~mixnas.evaluators.latency.signatures.SpaceSignatures`)."""
    from mixnas.search_space.spaces import StageSpace, load_space

    space = load_space(space_spec)
    if not isinstance(space, StageSpace):
        raise LatencyTableError(f"space {space_spec!r} does not decode to architectures (it has no latency)")
    return space_signatures(space, transform=resolution_transform(resolution))


def coverage_line(space_spec: Any, table: Any, lut: str, resolution: int | None = None) -> str:
    """``"L holds 812 of 812 signatures the space 'tiny' can produce"``, or why it cannot be counted."""
    try:
        return space_coverage(space_spec, resolution).describe(table, lut)
    except LatencyTableError as exc:
        return f"{lut}: coverage not counted ({exc})"

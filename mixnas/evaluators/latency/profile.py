"""Building a lookup table on the device: profile missing signatures, then calibrate on whole networks.

Parts are measured *in context*: a network that contains the signature is run part by part and each part is
timed where it sits. Measured alone, a part keeps its weights and buffers in cache from one run to the next and
looks much faster than inside a network (on the development machine, whole tiny networks took 1.5-1.7x the sum
of their isolated parts, but 1.0-1.2x the sum of their parts timed in context).

Profiling is incremental and interruption-safe. Only signatures missing from the table are measured; networks
are processed in chunks and the table is saved atomically after every chunk, so a run killed at any moment loses
at most one chunk and a re-run picks up where it stopped.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Sequence

from mixnas.errors import LatencyTableError
from mixnas.evaluators.latency.backends import STAND_IN
from mixnas.evaluators.latency.lut import (
    CALIBRATION_MODELS,
    Calibration,
    Entry,
    LatencyTable,
    condition_hint,
    lut_sum,
    pool_entries,
)
from mixnas.evaluators.latency.measure import (
    DEFAULT_ROUNDS,
    REFERENCE_ARCH,
    LocalTimer,
    MeasureConfig,
    Measurement,
    Pipeline,
    StageSpec,
    Timer,
    check_positive,
    measure_archs,
    measure_reference,
    reference_spec,
    with_reference_for,
)
from mixnas.evaluators.latency.signatures import Part, arch_parts, arch_signatures, part_module
from mixnas.search_space.arch import Architecture

logger = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
DEFAULT_CHUNK = 8
MAX_CHUNK_FACTOR = 4
MIN_POINTS_FOR_OFFSET = 5
# A chunk needs this many signatures already in the table to be rescaled by them (chunk_drift).
MIN_ANCHORS = 8


def new_table(config: MeasureConfig, timer: Timer | None = None) -> LatencyTable:
    """An empty table for ``config`` on the measuring device (``timer``; default this machine), with its metadata.

    With drift correction, the reference network is measured now and its latency stored as
    ``settings.reference_ms``: every later measurement for this table is rescaled to this machine speed.
    """
    timer = timer or LocalTimer()
    settings: dict[str, Any] = config.to_dict()
    if config.drift_correction:
        settings["reference_arch"] = REFERENCE_ARCH
        settings["reference_ms"] = measure_reference(config, timer=timer)
    device = timer.device(config)
    return LatencyTable(
        backend=config.backend,
        threads=config.threads,
        batch_size=config.batch_size,
        device=device,
        settings=settings,
        devices=[device],
        precision=config.precision,
    )


def config_from_table(table: LatencyTable, **overrides: Any) -> MeasureConfig:
    """The measurement settings a table was built with (backend, threads, batch, clock, statistic, ...)."""
    names = ("device", "warmup", "repeats", "channels_last", "clock", "statistic", "drift_correction", "min_seconds",
             "reference_resolution")
    known = {k: table.settings[k] for k in names if k in table.settings}
    known["precision"] = table.precision
    data = table.settings.get("calibration_data")
    if table.precision == "int8" and isinstance(data, str) and data != STAND_IN:
        known["calibration_data"] = data  # measured on, the missing parts are calibrated like the rest
    if "reference_ms" not in table.settings:
        known["drift_correction"] = False
    known.update(overrides)
    try:
        return MeasureConfig(backend=table.backend, threads=table.threads, batch_size=table.batch_size, **known)
    except TypeError as exc:
        raise LatencyTableError(f"latency table settings: {exc}") from None


def reference_ms(table: LatencyTable, config: MeasureConfig) -> float | None:
    """The table's drift baseline when ``config`` asks for drift correction (an error if the table has none)."""
    if not config.drift_correction:
        return None
    value = table.settings.get("reference_ms")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise LatencyTableError(
            "drift correction needs the table's settings.reference_ms (a table imported or built without it); "
            "disable drift correction to add measurements to it"
        )
    return float(value)


def check_compatible(table: LatencyTable, config: MeasureConfig, timer: Timer | None = None) -> None:
    """Refuse to add measurements taken under ``config`` on ``timer``'s device (default this machine) to a table
    of other conditions."""
    here = LatencyTable(
        backend=config.backend,
        threads=config.threads,
        batch_size=config.batch_size,
        device=(timer or LocalTimer()).device(config),
        settings=config.to_dict(),
        precision=config.precision,
    ).condition()
    theirs = table.condition()
    differing = [k for k in here if here[k] != theirs[k]]
    if differing:
        details = ", ".join(f"{k}: table {theirs[k]!r}, now {here[k]!r}" for k in differing)
        raise LatencyTableError(f"the latency table was measured under other conditions ({details})"
                                f"{condition_hint(differing)}")
    ours, table_res = config.reference_resolution, table.settings.get("reference_resolution")
    if config.drift_correction and "reference_ms" in table.settings and ours != table_res:
        raise LatencyTableError(
            f"the table's drift reference runs at {table_res or 'its own'} px, this measurement's at {ours or 'its own'}"
            " px: take the measurement settings from the table (config_from_table) to add to it")


def select_contexts(
    table: LatencyTable, archs: Iterable[Architecture], only: Collection[str] | None = None
) -> list[Architecture]:
    """The architectures (in order) that bring a signature missing from ``table`` and from those chosen before.

    With ``only``, only signatures in it count as missing.
    """
    covered: set[str] = set()
    chosen = []
    for arch in archs:
        new = {
            s
            for s in arch_signatures(arch)
            if s not in table and s not in covered and (only is None or s in only)
        }
        if new:
            chosen.append(arch)
            covered |= new
    return chosen


def choose_calibration(archs: Sequence[Architecture], k: int) -> list[Architecture]:
    """The calibration networks of a profile of ``archs`` (random members, in sampling order): the last ``k``.

    Profiling times a signature in the first network (of ``archs``, in order) that has it, and a network whose
    parts were timed in itself fits its table sum better than the networks the predictor is used on, whose
    parts were timed elsewhere (a part's time depends on the network around it: 8% RMS between contexts on the
    development machine). The first networks profiled, the earlier choice, have all their parts timed in
    themselves; the last ones have had the whole sample before them (of a 2,000-network ``tiny`` sample, the
    last 30 bring 1% of their signatures; of a 200-network one, the last 10 a third). Choosing the networks with
    the smallest such share instead selects small networks made of common choices, and a calibration on them
    extrapolates badly to the rest (a 200-network profile: 70% within ±10% against 98% with the last networks).
    """
    if k <= 0:
        return []
    return list(archs[-k:])


def context_pipeline(arch: Architecture, batch_size: int) -> Pipeline:
    """``arch`` as a pipeline of its parts, each keyed by its signature (so a signature's runs pool)."""

    def builder(part: Part) -> Callable[[], Any]:
        return lambda: part_module(part, arch)

    return [StageSpec(p.signature, builder(p), p.input_shape(batch_size)) for p in arch_parts(arch)]


def profile_archs(
    table: LatencyTable,
    archs: Sequence[Architecture],
    config: MeasureConfig,
    *,
    path: str | os.PathLike[str] | None = None,
    chunk: int = DEFAULT_CHUNK,
    rounds: int = DEFAULT_ROUNDS,
    progress: Progress | None = None,
    only: Collection[str] | None = None,
    timer: Timer | None = None,
    pool_contexts: bool = False,
) -> int:
    """Measure, in context, every signature of ``archs`` missing from ``table``; return how many were added.

    The networks that contain a missing signature (:func:`select_contexts`) are run part by part
    (:func:`~mixnas.evaluators.latency.agent.time_pipeline`), each part timed where it sits in the network.
    Networks are processed in chunks, each chunk in the one timing loop of end-to-end measurements
    (:func:`~mixnas.evaluators.latency.agent.interleave`: warm-up, at least ``rounds`` interleaved rounds of
    ``ceil(repeats / rounds)`` runs each and at least ``config.min_seconds`` of wall time); a signature met in
    several networks of a chunk pools their runs. The entry is ``config.statistic`` (and mean, standard
    deviation, count) of the pooled runs, rescaled by the chunk's drift factor when ``config`` asks for drift
    correction (:func:`chunk_drift`: from the signatures the table already holds that the chunk timed again, or
    from the reference network timed in every round while there are too few of them). With ``path``, the table
    is saved after every chunk.

    Chunks start at ``chunk`` networks and grow (up to ``MAX_CHUNK_FACTOR * chunk``) while ``rounds`` rounds of
    a chunk take less than ``config.min_seconds``: small networks then share the time span instead of each
    chunk of them paying for it.
    With ``only``, just those signatures are measured (and only networks that have one of them are run).
    ``timer`` says where the networks run (default: this process; ``remote.RemoteTimer``: an agent).

    With ``pool_contexts`` (``latency profile``), the signatures a chunk times again (every context network
    also holds known parts) are not only anchors: each is one more context, and its entry becomes the median
    over every context it was timed in, in this call and before (:func:`store_measured`). Off for measuring what a
    prediction misses (validation, searches): there, existing entries never change.
    """
    timer = timer or LocalTimer()
    check_compatible(table, config, timer)
    check_positive("rounds", rounds)
    check_positive("chunk", chunk)
    baseline = reference_ms(table, config)
    wanted = set(only) if only is not None else None
    todo = [s for s in table.missing(s for a in archs for s in arch_signatures(a)) if wanted is None or s in wanted]
    contexts = select_contexts(table, archs, wanted)
    done, start, size = 0, 0, chunk
    while start < len(contexts):
        batch = contexts[start : start + size]
        pipelines = [context_pipeline(arch, config.batch_size) for arch in batch]
        measured, drift, round_seconds = time_chunk(timer, pipelines, baseline, config, rounds)
        if baseline is not None:
            drift = chunk_drift(table, measured, drift, config.statistic)
        done += store_measured(table, measured, drift, wanted, config.statistic, pool=pool_contexts)
        if path is not None:
            table.save(path)
        if progress is not None:
            progress(done, len(todo), f"{start + len(batch)}/{len(contexts)} networks")
        start += len(batch)
        size = _next_chunk(chunk, size, round_seconds * rounds / len(batch), config.min_seconds)
    return done


def _next_chunk(chunk: int, size: int, per_network_s: float, min_seconds: float) -> int:
    """The next chunk's size: grown (up to ``MAX_CHUNK_FACTOR * chunk``) so that its base rounds fill the time span."""
    if per_network_s <= 0:
        return size
    return min(MAX_CHUNK_FACTOR * chunk, max(chunk, math.ceil(min_seconds / per_network_s)))


def time_chunk(
    timer: Timer, pipelines: Sequence[Pipeline], baseline: float | None, config: MeasureConfig, rounds: int
) -> tuple[dict[str, Measurement], float, float]:
    """Time a chunk's networks part by part, and the reference network beside them.

    Returns the pooled measurement of every signature, ``drift`` (``baseline / reference now``, 1 without a
    baseline: the factor that maps the chunk's timings to the machine speed at which the table was started)
    and the mean seconds of one round.
    """
    reference = reference_spec(config)
    items = [*pipelines, [reference]] if baseline is not None else list(pipelines)
    measured, round_seconds = timer.time(items, config, rounds=rounds)
    if baseline is None:
        return measured, 1.0, round_seconds
    return measured, baseline / measured.pop(reference.key).value(config.statistic), round_seconds


def chunk_drift(table: LatencyTable, measured: dict[str, Measurement], reference_drift: float, statistic: str) -> float:
    """The factor that maps a chunk's timings to the table's speed: from its *anchors* when it has enough.

    Every network of a chunk is timed part by part, so a chunk also re-times signatures the table already holds
    (on average a signature sits in 2-3 profiled networks). The median of ``table entry / timed now`` over
    these anchors (at least :data:`MIN_ANCHORS`) measures the chunk's speed on the very operators it adds,
    where the one reference network can move differently: on a shared host, chunks corrected by the reference
    alone sat 0.96-1.08 apart against a re-timing, and a table from the same timings rescaled by anchors
    predicted 5-7 points more networks within ±10% (docs/latency.md, runs J-M). Fewer anchors (the first
    chunks of a new table): ``reference_drift``.
    """
    ratios = [
        table.entries[s].ms / value
        for s, m in measured.items()
        if s in table.entries and (value := m.value(statistic, corrected=False)) > 0
    ]
    if len(ratios) < MIN_ANCHORS:
        return reference_drift
    factor = statistics.median(ratios)
    logger.debug("chunk drift: %.4f from %d anchors (reference %.4f)", factor, len(ratios), reference_drift)
    return factor


def store_measured(
    table: LatencyTable,
    measured: dict[str, Measurement],
    drift: float,
    wanted: set[str] | None,
    statistic: str,
    *,
    pool: bool = False,
) -> int:
    """Add the measured signatures missing from ``table`` (and wanted), rescaled by ``drift``; return how many.

    With ``pool``, a measured signature the table already holds is pooled instead of ignored: its runs join the
    entry's (count, mean, standard deviation), its value joins the entry's :attr:`~Entry.timings` (one value per
    context it was timed in, kept in the file, so a later or resumed profile pools with all of them) and ``ms``
    becomes their median. A part's time depends on the network around it (8% RMS between contexts of one
    signature on the development machine), so the median over the 1-7 chunks of a 2,000-network ``tiny``
    profile that time it is closer to what a new network meets than the first one. Entries not measured here
    (imported from CSV, merged) are left alone.
    """
    added = 0
    for sig, m in measured.items():
        if wanted is not None and sig not in wanted:
            continue
        entry = Entry(
            ms=m.value(statistic, corrected=False) * drift,
            mean_ms=m.mean_ms * drift,
            std_ms=m.std_ms * drift,
            count=m.count,
        )
        old = table.entries.get(sig)
        if old is None:
            table.entries[sig] = entry
            added += 1
        elif pool and old.source == "measured":
            values = (*(old.timings or (old.ms,)), entry.ms)
            table.entries[sig] = replace(
                pool_entries(old, entry), ms=statistics.median(values), timings=values, source="measured"
            )
    return added


def mutant_contexts(
    space: Any,
    encodings: Sequence[Sequence[int]],
    table: LatencyTable,
    rng: Any,
    *,
    exclude: Collection[str] = (),
    transform: Callable[[Architecture], Architecture] | None = None,
    fraction: float = 0.1,
    tries: int = 10,
) -> tuple[list[Architecture], list[str]]:
    """Other networks of ``space`` in which to measure the signatures the given architectures miss in ``table``.

    Validating a predictor on networks whose missing parts were timed inside those very networks would flatter
    it. So for each encoding, mutants (``fraction`` of the dimensions changed, :meth:`SearchSpace.mutate`) are
    drawn until every missing signature of its network appears in some mutant, whose id is not in ``exclude``,
    or ``tries`` draws are spent. A part's signature depends on a handful of dimensions (its own choices and
    the widths around it), so small mutations keep most of them; each mutant costs a whole-network profile.
    Returns the mutants to profile with ``only=`` the missing signatures, and the signatures no mutant
    contained.

    Args:
        space: the search space the encodings belong to.
        encodings: encodings of the architectures to cover.
        table: the lookup table.
        rng: ``numpy.random.Generator``.
        exclude: architecture ids that must not serve as contexts (the validation set).
        transform: applied to every decoded architecture (e.g. a resolution override).
        fraction: share of the dimensions each mutant changes.
        tries: mutants drawn per architecture at most.
    """
    transform = transform or (lambda a: a)
    n_mutations = max(1, round(fraction * len(space.dimensions)))
    contexts: list[Architecture] = []
    covered: set[str] = set()
    uncovered: dict[str, None] = {}
    for enc in encodings:
        want = set(table.missing(arch_signatures(transform(space.decode(enc))))) - covered - set(uncovered)
        for _ in range(tries):
            if not want:
                break
            candidate = transform(space.decode(space.mutate(enc, rng, n=n_mutations)))
            if candidate.id in exclude:
                continue
            got = want & set(arch_signatures(candidate))
            if got:
                contexts.append(candidate)
                want -= got
                covered |= got
        uncovered.update(dict.fromkeys(sorted(want)))
    return contexts, list(uncovered)


MIN_POINTS_FOR_PARTS = 8
# A model with more terms must lower the leave-one-out error by this factor to be preferred (noise guard).
SIMPLER_MODEL_MARGIN = 0.97


def _weighted_fit(columns: list[list[float]], measured: list[float]) -> list[float] | None:
    """Least squares on the relative error: minimise sum(((X @ c) - m) / m)^2); None if ill-conditioned."""
    import numpy as np

    x = np.array(columns, dtype=float).T / np.array(measured)[:, None]
    if np.linalg.matrix_rank(x, tol=1e-9 * float(np.abs(x).max())) < x.shape[1]:
        return None
    coef, *_ = np.linalg.lstsq(x, np.ones(len(measured)), rcond=None)
    return [float(c) for c in coef]


def _loo_rmspe(columns: list[list[float]], measured: list[float]) -> float:
    """Leave-one-out relative RMS error (percent) of the weighted fit; inf when a fold cannot be fitted."""
    errors = []
    n = len(measured)
    for i in range(n):
        keep = [j for j in range(n) if j != i]
        coef = _weighted_fit([[col[j] for j in keep] for col in columns], [measured[j] for j in keep])
        if coef is None:
            return math.inf
        predicted = sum(c * col[i] for c, col in zip(coef, columns))
        errors.append((predicted - measured[i]) / measured[i])
    return 100 * math.sqrt(sum(e * e for e in errors) / n)


def fit_calibration(
    points: Sequence[tuple[str, float, float]], parts: Sequence[int] | None = None
) -> Calibration:
    """Fit ``measured = scale * summed + offset + per_part * parts`` minimising the squared *relative* error.

    Relative (weighted) least squares matches how the predictor is judged (percentage error) and keeps the
    largest networks from dominating the fit. Which terms are fitted is chosen by leave-one-out error among
    :data:`CALIBRATION_MODELS`: the offset needs :data:`MIN_POINTS_FOR_OFFSET` points, the per-part term
    :data:`MIN_POINTS_FOR_PARTS` points whose part counts differ (``parts``: the number of signatures of each
    point's architecture, aligned with ``points``); a model with more terms must beat a simpler one by
    :data:`SIMPLER_MODEL_MARGIN`, every model must predict positive latencies for all points, and a per-part
    term must not be positive (parts timed one call each can only carry *more* call overhead than the network;
    a positive term is fitted noise). With one point (or nothing better) the fit is a scale alone.
    """
    if not points:
        raise LatencyTableError("calibration needs at least one end-to-end measurement")
    if parts is not None and len(parts) != len(points):
        raise LatencyTableError(f"calibration: {len(parts)} part counts for {len(points)} points")
    summed = [s for _, s, _ in points]
    measured = [m for _, _, m in points]
    n = len(points)
    features = {"scale": summed, "offset": [1.0] * n, "parts": [float(p) for p in parts or [0] * n]}
    best: tuple[float, str, list[float]] | None = None
    for model, terms in CALIBRATION_MODELS.items():
        if "offset" in terms and n < MIN_POINTS_FOR_OFFSET:
            continue
        if "parts" in terms and (parts is None or n < MIN_POINTS_FOR_PARTS or len(set(parts)) < 2):
            continue
        if n < len(terms) + 2 and model != "scale":
            continue
        columns = [features[t] for t in terms]
        coef = _weighted_fit(columns, measured)
        if coef is None or coef[0] <= 0:
            continue
        if "parts" in terms and coef[terms.index("parts")] > 0:
            continue  # timing a part alone can only add call overhead: a positive per-part term is noise
        if any(sum(c * col[i] for c, col in zip(coef, columns)) <= 0 for i in range(n)):
            continue
        loo = _loo_rmspe(columns, measured) if n > len(terms) else math.inf
        if best is None or loo < best[0] * SIMPLER_MODEL_MARGIN:
            best = (loo, model, coef)
    if best is None:  # cannot happen for positive points (scale alone always fits), kept as a guard
        raise LatencyTableError("calibration: no model fits the end-to-end measurements")
    loo, model, coef = best
    values = dict(zip(CALIBRATION_MODELS[model], coef))
    return Calibration(
        scale=values["scale"],
        offset_ms=values.get("offset", 0.0),
        per_part_ms=values.get("parts", 0.0),
        points=tuple(points),
        model=model,
        loo_rmspe_pct=None if math.isinf(loo) else loo,
    )


def calibrate(
    table: LatencyTable,
    archs: Sequence[Architecture],
    config: MeasureConfig,
    *,
    rounds: int = DEFAULT_ROUNDS,
    progress: Callable[[int, int], None] | None = None,
    timer: Timer | None = None,
) -> Calibration:
    """Measure ``archs`` end to end, fit :class:`Calibration` against their LUT sums and store it in ``table``.

    Every signature of ``archs`` must be in the table (profile them first).
    """
    check_compatible(table, config, timer)
    for a in archs:  # every signature must be in the table: fail before measuring
        lut_sum(table, arch_signatures(a), calibrated=False)
    start = time.perf_counter()
    measured = measure_archs(
        archs, config, rounds=rounds, progress=progress, reference_ms=reference_ms(table, config), timer=timer
    )
    logger.info("measured %d calibration networks in %.1f s", len(archs), time.perf_counter() - start)
    return store_calibration(table, archs, [m.value(config.statistic) for m in measured])


def store_calibration(table: LatencyTable, archs: Sequence[Architecture], measured_ms: Sequence[float]) -> Calibration:
    """Fit the calibration of ``archs`` (end-to-end latencies ``measured_ms``, at the table's speed) into ``table``."""
    summed = [lut_sum(table, arch_signatures(a), calibrated=False)[0] for a in archs]
    points = tuple((a.id, s, float(m)) for a, s, m in zip(archs, summed, measured_ms))
    fit = fit_calibration(points, [len(arch_signatures(a)) for a in archs])
    table.calibration = replace(fit, archs=tuple(a.to_dict() for a in archs))
    return table.calibration


def load_or_create(
    path: str | os.PathLike[str], config: MeasureConfig, timer: Timer | None = None, *, archs: Iterable[Architecture] = ()
) -> LatencyTable:
    """The table at ``path`` if it exists (it must match ``config`` and ``timer``'s device), else a new one.

    A table keeps the drift reference it was started with: an existing one its own, a new one for ``archs``
    the resolution :func:`~.measure.reference_resolution` gives (unless ``config`` sets one). Measure for the
    table with :func:`table_config`.
    """
    if Path(path).exists():
        table = LatencyTable.load(path)
        check_compatible(table, table_config(config, table), timer)
        return table
    return new_table(with_reference_for(config, archs), timer)


def table_config(config: MeasureConfig, table: LatencyTable) -> MeasureConfig:
    """``config`` with ``table``'s drift reference (its ``reference_resolution``), to add measurements to it."""
    return replace(config, reference_resolution=table.settings.get("reference_resolution"))

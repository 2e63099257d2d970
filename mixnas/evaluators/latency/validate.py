"""How good is a latency predictor on this device: error and rank metrics against end-to-end measurements.

:func:`validate` measures architectures end to end (interleaved, summarised by ``config.statistic``) and
compares them with the predictor and, as a baseline, with MACs alone. The metrics:

* ``rmse_ms``: root mean squared error; ``rmspe``: root mean squared *percentage* error (in %);
* ``within_5pct`` / ``within_10pct``: share of predictions within ±5% / ±10% of the measurement (nn-Meter's
  headline metric, Zhang et al., MobiSys 2021);
* ``spearman`` / ``kendall``: rank correlations (Kendall's tau-b), which is what a search needs to order
  candidates; ``macs_spearman`` / ``macs_kendall``: the same for MACs, the baseline a LUT must beat.

With drift correction (the default), measured values are rescaled to the table's machine speed by reference
networks timed beside them: the table's calibration networks (their stored end-to-end latencies are the
baseline; they are never validation networks), or the single reference network for tables without them. The
``uncorrected_*`` metrics compare the predictions with the raw values.

:func:`validate_space` is the whole protocol of ``mixnas latency validate`` (and of the ``benchmarks/`` figures):
held-out networks sampled from a space (the table's calibration networks left out), the signatures the table
lacks measured first *inside other networks* of the space (so that no validation network times its own parts),
then :func:`validate`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mixnas.errors import LatencyTableError
from mixnas.textio import atomic_file, os_reason
from mixnas.evaluators.latency.measure import (
    DEFAULT_ROUNDS,
    MeasureConfig,
    Measurement,
    Timer,
    check_positive,
    measure_archs,
)
from mixnas.evaluators.latency.predictor import LatencyPredictor
from mixnas.evaluators.latency.profile import (
    DEFAULT_CHUNK,
    check_compatible,
    config_from_table,
    mutant_contexts,
    profile_archs,
    reference_ms,
)
from mixnas.evaluators.latency.sampling import VALIDATE_SEED, coverage_line, resolution_transform, sample_archs
from mixnas.evaluators.latency.signatures import arch_signatures
from mixnas.search_space.arch import Architecture
from mixnas.search_space.counting import count

logger = logging.getLogger(__name__)
MUTANT_SEED_OFFSET = 1_000_003


def rankdata(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties getting the average of the ranks they span (scipy's ``method='average'``)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return float("nan")
    return sxy / math.sqrt(sxx * syy)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson correlation of average ranks); NaN if either side is constant."""
    x, y = _check_pairs(x, y)
    return pearson(rankdata(x), rankdata(y))


def kendall(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either variable accounted for), O(n^2); NaN if either side is constant."""
    x, y = _check_pairs(x, y)
    concordant = discordant = ties_x = ties_y = 0
    n = len(x)
    for i in range(n):
        for j in range(i + 1, n):
            dx = (x[i] > x[j]) - (x[i] < x[j])
            dy = (y[i] > y[j]) - (y[i] < y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif dx == dy:
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denom if denom else float("nan")


def _check_pairs(x: Sequence[float], y: Sequence[float]) -> tuple[list[float], list[float]]:
    if len(x) != len(y) or len(x) < 2:
        raise LatencyTableError(f"metrics need two sequences of the same length >= 2, got {len(x)} and {len(y)}")
    return [float(v) for v in x], [float(v) for v in y]


def error_metrics(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """RMSE, RMSPE (%), mean absolute percentage error (%), shares within ±5% / ±10%, Spearman and Kendall."""
    predicted, measured = _check_pairs(predicted, measured)
    n = len(measured)
    rel = [(p - m) / m for p, m in zip(predicted, measured)]
    return {
        "n": n,
        "rmse_ms": math.sqrt(sum((p - m) ** 2 for p, m in zip(predicted, measured)) / n),
        "rmspe": 100 * math.sqrt(sum(r * r for r in rel) / n),
        "mape": 100 * sum(abs(r) for r in rel) / n,
        "max_abs_pct": 100 * max(abs(r) for r in rel),
        "within_5pct": sum(abs(r) <= 0.05 for r in rel) / n,
        "within_10pct": sum(abs(r) <= 0.10 for r in rel) / n,
        "spearman": spearman(predicted, measured),
        "kendall": kendall(predicted, measured),
    }


@dataclass
class ValidationReport:
    """Per-architecture rows and the summary metrics of one validation run."""

    metrics: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**self.metrics, "architectures": self.rows}


def validate(
    predictor: LatencyPredictor,
    archs: Sequence[Architecture],
    config: MeasureConfig,
    *,
    rounds: int = DEFAULT_ROUNDS,
    progress: Callable[[int, int], None] | None = None,
    timer: Timer | None = None,
) -> ValidationReport:
    """Measure ``archs`` end to end with ``config`` (on ``timer``'s device; default this process) and compare with
    ``predictor`` and with MACs."""
    if len(archs) < 2:
        raise LatencyTableError(f"validation needs at least 2 architectures, got {len(archs)}")
    predictions = [predictor.predict(a) for a in archs]
    references = calibration_references(predictor.table) if config.drift_correction else []
    measured = measure_archs(
        archs,
        config,
        rounds=rounds,
        progress=progress,
        reference_ms=None if references else reference_ms(predictor.table, config),
        references=references,
        timer=timer,
    )
    meas_ms = [m.value(config.statistic) for m in measured]
    macs = [count(a).macs for a in archs]
    metrics = _metrics(predictor, config, [p[0] for p in predictions], measured, macs)
    if references:
        metrics["drift_reference"] = f"{len(references)} calibration networks"
    else:
        metrics["drift_reference"] = "reference network" if config.drift_correction else "none"
    rows = [
        {
            "arch_id": a.id,
            "resolution": a.resolution,
            "macs": mac,
            "predicted_ms": p[0],
            "predicted_std_ms": p[1],
            "measured_ms": v,
            "drift": m.drift,
            "measured_median_ms": m.median_ms,
            "measured_iqr_ms": m.iqr_ms,
            "error_pct": 100 * (p[0] - v) / v,
        }
        for a, p, m, v, mac in zip(archs, predictions, measured, meas_ms, macs)
    ]
    return ValidationReport(metrics=metrics, rows=rows)


def _metrics(
    predictor: LatencyPredictor,
    config: MeasureConfig,
    pred_ms: list[float],
    measured: Sequence[Measurement],
    macs: list[int],
) -> dict[str, Any]:
    """Error and rank metrics of the predictions, the MACs baseline, the measurements' own repeatability."""
    meas_ms = [m.value(config.statistic) for m in measured]
    metrics: dict[str, Any] = error_metrics(pred_ms, meas_ms)
    metrics["macs_spearman"] = spearman(macs, meas_ms)
    metrics["macs_kendall"] = kendall(macs, meas_ms)
    halves = [m.half_values() for m in measured]
    if all(h is not None for h in halves):
        agreement = error_metrics([h[0] for h in halves], [h[1] for h in halves])  # type: ignore[index]
        metrics["halves_spearman"] = agreement["spearman"]
        metrics["halves_rmspe"] = agreement["rmspe"]
    if config.drift_correction:
        raw = error_metrics(pred_ms, [m.value(config.statistic, corrected=False) for m in measured])
        metrics.update({f"uncorrected_{k}": v for k, v in raw.items() if k != "n"})
        metrics["drift_factors"] = sorted({round(m.drift, 4) for m in measured})
    metrics.update(
        backend=config.backend,
        precision=config.precision,
        threads=config.threads,
        batch_size=config.batch_size,
        clock=config.resolved_clock,
        statistic=config.statistic,
        min_seconds=config.min_seconds,
        calibrated=predictor.table.calibration is not None and predictor.calibrated,
        scale=predictor.scale,
        offset_ms=predictor.offset_ms,
        per_part_ms=predictor.per_part_ms,
    )
    return metrics


# Below these, a validation's own measurements disagree with themselves (even against odd rounds) so much that
# its error and rank figures say more about the machine than about the predictor.
REPEATABILITY_MIN_SPEARMAN = 0.98
REPEATABILITY_MAX_RMSPE = 3.0
# The calibration networks a validation times beside every chunk of its networks to correct drift.
DRIFT_REFERENCES = 10


def repeatability_warning(metrics: dict[str, Any]) -> str | None:
    """One line for the user when the measurement halves of a validation disagree; None when they agree.

    ``metrics`` is :attr:`ValidationReport.metrics`; without ``halves_*`` (one round) there is nothing to say.
    """
    rho, rmspe = metrics.get("halves_spearman"), metrics.get("halves_rmspe")
    if rho is None or rmspe is None:
        return None
    if (math.isnan(rho) or rho >= REPEATABILITY_MIN_SPEARMAN) and rmspe <= REPEATABILITY_MAX_RMSPE:
        return None
    return (
        f"the measurements agree with themselves only to Spearman {rho:.3f} / RMSPE {rmspe:.1f}% (even against "
        f"odd rounds; at least {REPEATABILITY_MIN_SPEARMAN} / at most {REPEATABILITY_MAX_RMSPE:.0f}% is a "
        "quiet machine): the figures are limited by the machine's noise; re-run when it is quieter, or with "
        "more --rounds (a larger --min-seconds adds rounds only where they end before it)"
    )


def calibration_references(table: Any, limit: int = DRIFT_REFERENCES) -> list[tuple[Architecture, float]]:
    """Up to ``limit`` of the table's calibration networks (evenly spaced) with their stored latencies, as drift
    references for validation.

    They were measured end to end when the table was calibrated (drift-corrected to the table's speed); timing
    them again beside the validation networks tells how fast the machine is *now* relative to then, from
    networks of the same space rather than one reference network. Empty when the table did not store them.
    Every chunk of a validation converts its references again (:func:`~.measure.measure_archs`), hence the limit:
    a LiteRT or ExecuTorch network takes seconds to convert.
    """
    cal = table.calibration
    if cal is None or not cal.archs:
        return []
    pairs = [(Architecture.from_dict(a), m) for a, (_, _, m) in zip(cal.archs, cal.points)]
    if len(pairs) <= limit:
        return pairs
    return [pairs[round(i * (len(pairs) - 1) / (limit - 1))] for i in range(limit)] if limit > 1 else pairs[:limit]


def plot_scatter(report: ValidationReport, path: str | Path, *, title: str = "") -> None:
    """Scatter plot PNG: predicted vs measured (with ±10% band) and MACs vs measured."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise LatencyTableError("the scatter plot needs matplotlib: pip install 'mixnas[dev]'") from None
    measured = [r["measured_ms"] for r in report.rows]
    predicted = [r["predicted_ms"] for r in report.rows]
    macs = [r["macs"] / 1e6 for r in report.rows]
    m = report.metrics
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.5))
    lo, hi = min(measured + predicted) * 0.9, max(measured + predicted) * 1.1
    ax1.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    ax1.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="0.9", label="±10%")
    ax1.scatter(measured, predicted, s=14)
    ax1.set(xlabel="measured (ms)", ylabel="predicted (ms)", xlim=(lo, hi), ylim=(lo, hi))
    ax1.set_title(
        f"LUT: {100 * m['within_10pct']:.0f}% within ±10%, RMSPE {m['rmspe']:.1f}%, ρ {m['spearman']:.3f}", fontsize=9
    )
    ax1.legend(loc="upper left", fontsize=8)
    ax2.scatter(macs, measured, s=14, color="tab:orange")
    ax2.set(xlabel="MMACs", ylabel="measured (ms)")
    ax2.set_title(f"MACs baseline: ρ {m['macs_spearman']:.3f}, τ {m['macs_kendall']:.3f}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        with atomic_file(path, "wb") as fh:  # the one writer: no device, FIFO or folder is replaced
            fig.savefig(fh, dpi=110, format="png")
    except OSError as exc:
        raise LatencyTableError(f"{path}: cannot write the plot ({os_reason(exc)})") from None
    finally:
        plt.close(fig)


def _measure_missing(table: Any, space: Any, encodings: Sequence[Any], archs: Sequence[Architecture],
                     missing: Sequence[str], config: MeasureConfig, *, lut: str, seed: int, exclude: set[str],
                     resolution: int | None, rounds: int, chunk: int, timer: Timer | None,
                     tick: Callable[..., None] | None, say: Callable[[str], None]) -> list[str]:
    """Measure the signatures the table lacks inside mutants of the validation networks (saved to ``lut``); the
    signatures found only in their own network, measured there last."""
    rng = np.random.default_rng(seed + MUTANT_SEED_OFFSET)
    contexts, own_context = mutant_contexts(space, encodings, table, rng, exclude={a.id for a in archs} | exclude,
                                            transform=resolution_transform(resolution))
    say(f"{len(missing)} signatures missing from {lut}; measuring them in {len(contexts)} other networks of "
        f"the space ({len(own_context)} only found in their own network)")
    profile_archs(table, contexts, config, path=lut, chunk=chunk, rounds=rounds, progress=tick,
                  only=set(missing), timer=timer)
    if own_context:
        profile_archs(table, archs, config, path=lut, chunk=chunk, rounds=rounds, progress=tick,
                      only=set(own_context), timer=timer)
    return own_context


def validate_space(
    table: Any,
    space: Any,
    n: int,
    *,
    lut: str,
    seed: int = VALIDATE_SEED,
    resolution: int | None = None,
    overrides: dict[str, Any] | None = None,
    rounds: int = DEFAULT_ROUNDS,
    chunk: int = DEFAULT_CHUNK,
    strict: bool = False,
    timer: Timer | None = None,
    progress: Callable[[str], Callable[..., None]] | None = None,
    say: Callable[[str], None] = logger.info,
) -> ValidationReport:
    """Validate ``table`` (saved at ``lut``) on ``n`` held-out networks of ``space``, as ``latency validate`` does.

    The networks are sampled with ``seed`` (the table's calibration networks skipped), measured with the table's
    own settings (``overrides``: ``repeats``, ``warmup``, ``min_seconds``) on ``timer``'s device, which must be
    the table's. Signatures the table lacks are measured first in other networks of the space (mutants of the
    validation networks; :func:`~mixnas.evaluators.latency.profile.mutant_contexts`) and saved to ``lut``, or, with
    ``strict``, refused. ``progress(what)`` makes a ``(done, total, detail)`` callback; ``say`` gets one line per
    step.
    """
    check_positive("chunk", chunk)  # before any measuring, also when the table lacks nothing
    config = config_from_table(table, **(overrides or {}))
    check_compatible(table, config, timer)  # end-to-end measurements here mean nothing for another device's table
    exclude = {p[0] for p in table.calibration.points} if table.calibration else set()
    space_obj, encodings, archs = sample_archs(space, n, seed, resolution, exclude=frozenset(exclude))
    missing = table.missing(s for a in archs for s in arch_signatures(a))
    own_context: list[str] = []
    if missing and strict:
        raise LatencyTableError(
            f"{lut} lacks {len(missing)} signatures of the validation architectures, e.g. {missing[0]!r}; "
            "profile more architectures or drop --strict"
        )
    if missing:
        own_context = _measure_missing(table, space_obj, encodings, archs, missing, config, lut=lut, seed=seed,
                                       exclude=exclude, resolution=resolution, rounds=rounds, chunk=chunk,
                                       timer=timer, tick=progress("profile") if progress else None, say=say)
    coverage = coverage_line(space, table, lut, resolution)
    say(coverage)
    if table.calibration is None:
        say("warning: the LUT has no calibration; predictions are plain sums")
    say(f"measuring {len(archs)} architectures end to end ({config.backend} {config.precision}, "
        f"{config.threads} thread(s))")
    report = validate(LatencyPredictor(table), archs, config, rounds=rounds,
                      progress=progress("validate") if progress else None, timer=timer)
    report.metrics.update(
        space=space if isinstance(space, str) else "(mapping)", seed=seed, lut=lut, missing_signatures=len(missing),
        own_context_signatures=len(own_context), coverage=coverage,
        measured_on=table.describe_device() if timer is None else timer.device(config).get("measured_by"),
    )
    warning = repeatability_warning(report.metrics)
    report.metrics["warnings"] = [warning] if warning else []
    return report

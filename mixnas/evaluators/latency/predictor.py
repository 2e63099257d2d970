"""The lookup-table latency predictor: a pure sum over the table, no measuring.

The model (as in FBNet / ProxylessNAS, plus a calibration step)::

    predicted_ms = scale * sum(LUT[s] for s in signatures(arch)) + offset_ms + per_part_ms * len(signatures(arch))
    std_ms       = scale * sqrt(sum(std(s)^2 for s in signatures(arch)))

The sum runs over the stem, every block repeat, the head and the classifier. ``scale``, ``offset_ms`` and
``per_part_ms`` come from the table's calibration, fitted on whole networks measured end to end
(:func:`~mixnas.evaluators.latency.profile.fit_calibration`): they absorb what parts timed one call at a time do
not see, e.g. the call overhead every part carries but the whole network pays once (one ONNX Runtime session per
part), or the cross-layer fusion an ONNX Runtime graph of the full network gets. Without calibration, scale = 1
and the other terms 0.

Two predictors, built by one factory (:func:`load_predictor`, what a search's ``latency: {type: lut}`` uses):
:class:`LatencyPredictor`, the pure sum, for which a signature missing from the table is an error, and
:class:`MeasuringPredictor`, which measures the signatures its table lacks first (in the network being predicted,
with :func:`~mixnas.evaluators.latency.profile.profile_archs`), adds them to the table and its file, then sums.
The sum itself (:func:`~mixnas.evaluators.latency.lut.lut_sum`) lives with the table, so that profiling (which
calibrates on it) sits below this module.

Prediction costs about 0.2-0.4 ms on first sight of an architecture (computing its signatures) and 30-50 µs
afterwards: the signatures are cached by the (hashable) record (``benchmarks/latency_predictor.py``).
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

from mixnas.errors import LatencyTableError
from mixnas.evaluators.latency.lut import LatencyTable, locked_table, lut_sum
from mixnas.evaluators.latency.measure import MeasureConfig, reference_arch
from mixnas.evaluators.latency.profile import config_from_table, profile_archs
from mixnas.evaluators.latency.signatures import arch_signatures, stem_resolution
from mixnas.search_space.arch import Architecture

logger = logging.getLogger(__name__)

CACHE_SIZE = 65536


class LatencyPredictor:
    """``predict(arch) -> (mean_ms, std_ms)`` from a :class:`LatencyTable` (:func:`lut_sum`).

    Args:
        table: the lookup table.
        calibrated: apply the table's calibration (when it has one).
        path: the file the table was read from, named in errors.
    """

    def __init__(
        self, table: LatencyTable, *, calibrated: bool = True, path: str | os.PathLike[str] | None = None
    ) -> None:
        self.table = table
        self.calibrated = calibrated
        self.path = path
        self._signatures: dict[Architecture, tuple[str, ...]] = {}

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, calibrated: bool = True) -> LatencyPredictor:
        """A predictor of the table at ``path`` (to measure what it lacks: :func:`load_predictor`)."""
        return cls(LatencyTable.load(path), calibrated=calibrated, path=path)

    @property
    def scale(self) -> float:
        cal = self.table.calibration
        return cal.scale if (cal and self.calibrated) else 1.0

    @property
    def offset_ms(self) -> float:
        cal = self.table.calibration
        return cal.offset_ms if (cal and self.calibrated) else 0.0

    @property
    def per_part_ms(self) -> float:
        cal = self.table.calibration
        return cal.per_part_ms if (cal and self.calibrated) else 0.0

    def signatures(self, arch: Architecture) -> tuple[str, ...]:
        """Signatures of ``arch`` (cached; the cache is cleared when it reaches :data:`CACHE_SIZE`)."""
        sigs = self._signatures.get(arch)
        if sigs is None:
            if len(self._signatures) >= CACHE_SIZE:
                self._signatures.clear()
            sigs = self._signatures[arch] = arch_signatures(arch)
        return sigs

    def predict(self, arch: Architecture) -> tuple[float, float]:
        """Predicted latency of ``arch`` in ms and its standard deviation (from the entries' spreads)."""
        sigs = self.signatures(arch)
        try:
            return lut_sum(self.table, sigs, calibrated=self.calibrated)
        except KeyError:
            raise self.missing_error(arch, sigs) from None

    def __call__(self, arch: Architecture) -> float:
        return self.predict(arch)[0]

    def missing_error(self, arch: Architecture, sigs: Sequence[str]) -> LatencyTableError:
        """The error for people when the table lacks some of ``sigs`` (the signatures of ``arch``)."""
        missing = self.table.missing(sigs)
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        return LatencyTableError(
            f"latency table{f' {self.path}' if self.path else ''} has no entry for signature {missing[0]!r}"
            f"{more} of architecture {arch.id}{_resolution_hint(self.table, arch)}; profile the space "
            "(mixnas latency profile --space S --exhaustive), or measure missing signatures on the spot "
            "(--measure-missing; measure_missing: true in latency.options)"
        )


def _resolutions(table: LatencyTable) -> list[int]:
    """The input resolutions of the networks whose stems ``table`` holds, ascending."""
    return sorted({r for sig in table.entries if (r := stem_resolution(sig)) is not None})


def _resolution_hint(table: LatencyTable, arch: Architecture) -> str:
    """`` (the table holds resolutions [32], the architecture is at 224)`` when the stems say so, else ``""``."""
    held = _resolutions(table)
    if held and arch.resolution not in held:
        return f" (the table holds resolutions {held}, the architecture is at {arch.resolution}: --resolution?)"
    return ""


class MeasuringPredictor:
    """``predict(arch) -> (mean_ms, std_ms)`` like ``predictor``, measuring the signatures its table lacks first.

    Args:
        predictor: the pure predictor whose table (and file, ``predictor.path``, when set) receives the
            measurements.
        config: how to measure; defaults to the table's own settings
            (:func:`~mixnas.evaluators.latency.profile.config_from_table`).
    """

    def __init__(self, predictor: LatencyPredictor, *, config: MeasureConfig | None = None) -> None:
        self.predictor = predictor
        self.config = config

    @property
    def table(self) -> LatencyTable:
        return self.predictor.table

    def predict(self, arch: Architecture) -> tuple[float, float]:
        """Predicted latency of ``arch`` in ms and its standard deviation, after measuring what is missing."""
        sigs = self.predictor.signatures(arch)
        missing = self.table.missing(sigs)
        if missing:
            self._add(arch, missing)
        return lut_sum(self.table, sigs, calibrated=self.predictor.calibrated)

    def __call__(self, arch: Architecture) -> float:
        return self.predict(arch)[0]

    def _add(self, arch: Architecture, missing: list[str]) -> None:
        path = self.predictor.path
        if path is None:
            self._measure(arch, missing)
            return
        with locked_table(path) as on_disk:
            # another worker may have measured them meanwhile: take those, measure only the rest
            for sig, entry in on_disk.entries.items():
                self.table.entries.setdefault(sig, entry)
            todo = self.table.missing(missing)
            if todo:
                self._measure(arch, todo)
                on_disk.entries.update({s: self.table.entries[s] for s in todo})
                on_disk.save(path)
        if todo:
            logger.info("latency: measured %d signature(s) missing from %s and added them", len(todo), path)
        else:
            logger.info("latency: %d signature(s) missing here were added to %s by another process",
                        len(missing), path)

    def _measure(self, arch: Architecture, signatures: Sequence[str]) -> None:
        config = self.config or config_from_table(self.table)
        profile_archs(self.table, [arch], config, only=set(signatures))


def why_not_measurable(table: LatencyTable) -> str | None:
    """Why this installation cannot measure more signatures for ``table`` (its backend, precision or device is
    unknown here, or its runtime is not installed), or None when it can."""
    from mixnas.evaluators.latency.backends import get_backend

    try:
        config = config_from_table(table)
        get_backend(config.backend).versions()  # the runtime is installed
    except LatencyTableError as exc:
        return str(exc)
    if config.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "it was measured on CUDA, and this machine has no CUDA device"
    return None


def unfolded_warning(table: LatencyTable) -> str | None:
    """A warning for a table this mixnas measured before batch norms were folded before conversion (its
    MixConv parts are slower than what ``mixnas export`` now ships), else None."""
    from mixnas.evaluators.latency.backends import BACKENDS

    backend = BACKENDS.get(table.backend)
    if backend is None or not backend.folds_batch_norms or table.settings.get("folded_batch_norms"):
        return None
    if "clock" not in table.settings:  # imported from another tool's measurements: its conversion is its own
        return None
    return ("measured before batch norms were folded into the convolutions before conversion: its parts with "
            "several kernel groups or grouped 1x1 convolutions are slower than the networks mixnas now converts "
            "and exports; profile it again")


def reference_warning(table: LatencyTable) -> str | None:
    """A warning for a table whose drift reference ran at a smaller resolution than its networks (profiled at
    more than 32 px by a mixnas before ``reference_resolution``): the reference read the networks' footprint as
    drift and the table's milliseconds are low (6-15% at 224 px in int8, docs/latency.md run AG), else None."""
    if "reference_ms" not in table.settings or "@" in str(table.settings.get("reference_arch", "")):
        return None  # no drift reference, or a phone folder's (exported at the networks' resolution)
    stems = _resolutions(table)
    if not stems:
        return None
    ref = table.settings.get("reference_resolution")
    if not isinstance(ref, int) or isinstance(ref, bool):
        ref = reference_arch().resolution  # its own
    largest = stems[-1]
    if largest <= ref:
        return None
    return (f"its drift reference ran at {ref} px beside networks of up to {largest} px, which reads their "
            "footprint as drift: its milliseconds are low (6-15% at 224 px; rankings are not affected); profile "
            "it again for a latency target in milliseconds")


def load_predictor(
    path: str | os.PathLike[str],
    *,
    calibrated: bool = True,
    measure_missing: bool = False,
    config: MeasureConfig | None = None,
) -> LatencyPredictor | MeasuringPredictor:
    """The predictor of the table at ``path``; with ``measure_missing``, one that adds what it measures to the file.

    The keyword options are those of ``latency.options`` in an experiment (``calibrated``, ``measure_missing``);
    ``config`` (how to measure) only matters with ``measure_missing``.
    """
    predictor = LatencyPredictor.from_file(path, calibrated=calibrated)
    for stale in (unfolded_warning(predictor.table), reference_warning(predictor.table)):
        if stale:
            logger.warning("%s: %s", path, stale)
    return MeasuringPredictor(predictor, config=config) if measure_missing else predictor

"""The lookup-table latency predictor.

The model (as in FBNet / ProxylessNAS, plus a calibration step)::

    predicted_ms = scale * sum(LUT[s] for s in signatures(arch)) + offset_ms + per_part_ms * len(signatures(arch))
    std_ms       = scale * sqrt(sum(std(s)^2 for s in signatures(arch)))

The sum runs over the stem, every block repeat, the head and the classifier. ``scale``, ``offset_ms`` and
``per_part_ms`` come from the table's calibration, fitted on whole networks measured end to end
(:func:`~mixnas.evaluators.latency.profile.fit_calibration`): they absorb what parts timed one call at a time do
not see, e.g. the call overhead every part carries but the whole network pays once (one ONNX Runtime session per
part), or the cross-layer fusion an ONNX Runtime graph of the full network gets. Without calibration, scale = 1
and the other terms 0.

A signature missing from the table is an error by default. With ``measure_missing``, it is measured on the spot
(in the network that has it, :func:`~mixnas.evaluators.latency.profile.profile_archs`) and added to the table;
a predictor made with :meth:`LatencyPredictor.from_file` also adds it to the file, under a file lock
(:func:`~mixnas.evaluators.latency.lut.locked_table`), so that search workers sharing one table measure each
signature once between them and none loses another's additions.

Prediction costs about 0.2-0.4 ms on first sight of an architecture (computing its signatures) and 30-50 µs
afterwards: the signatures are cached by the (hashable) record (``benchmarks/latency_predictor.py``).
"""

from __future__ import annotations

import logging
import math
import os
import re
from typing import TYPE_CHECKING, Any

from mixnas.errors import LatencyTableError
from mixnas.evaluators.latency.lut import LatencyTable, locked_table
from mixnas.evaluators.latency.signatures import arch_signatures
from mixnas.search_space.arch import Architecture

if TYPE_CHECKING:  # pragma: no cover
    from mixnas.evaluators.latency.measure import MeasureConfig

logger = logging.getLogger(__name__)

CACHE_SIZE = 65536


class LatencyPredictor:
    """``predict(arch) -> (mean_ms, std_ms)`` from a :class:`LatencyTable`.

    Args:
        table: the lookup table.
        calibrated: apply the table's calibration (when it has one).
        measure_missing: measure a missing signature on the spot (with ``config``) and add it to the table
            (and to the file at ``path``), instead of raising :class:`~mixnas.errors.LatencyTableError`.
        config: how to measure missing signatures; defaults to the table's own settings.
        path: the file the table was read from; signatures measured here are added to it.
    """

    def __init__(
        self,
        table: LatencyTable,
        *,
        calibrated: bool = True,
        measure_missing: bool = False,
        config: MeasureConfig | None = None,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.table = table
        self.calibrated = calibrated
        self.measure_missing = measure_missing
        self.path = path
        self._config = config
        self._signatures: dict[Architecture, tuple[str, ...]] = {}

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **options: Any) -> LatencyPredictor:
        """A predictor of the table at ``path``; with ``measure_missing``, what it measures is added to the file."""
        return cls(LatencyTable.load(path), path=path, **options)

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
        entries = self.table.entries
        sigs = self.signatures(arch)
        total = 0.0
        var = 0.0
        try:
            for sig in sigs:
                entry = entries[sig]
                total += entry.ms
                var += entry.std_ms * entry.std_ms
        except KeyError:
            self._fill_missing(arch, sigs)
            return self.predict(arch)
        cal = self.table.calibration
        if cal is None or not self.calibrated:
            return total, math.sqrt(var)
        return cal.apply(total, len(sigs)), cal.scale * math.sqrt(var)

    def __call__(self, arch: Architecture) -> float:
        return self.predict(arch)[0]

    def _fill_missing(self, arch: Architecture, sigs: tuple[str, ...]) -> None:
        missing = self.table.missing(sigs)
        if not self.measure_missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise LatencyTableError(
                f"latency table{f' {self.path}' if self.path else ''} has no entry for signature {missing[0]!r}"
                f"{more} of architecture {arch.id}{_resolution_hint(self.table, arch)}; profile the space "
                "(mixnas latency profile --space S --exhaustive), or measure missing signatures on the spot "
                "(--measure-missing; measure_missing: true in latency.options)"
            )
        if self.path is None:
            self._measure(arch, missing)
            return
        with locked_table(self.path) as on_disk:
            # another worker may have measured them meanwhile: take those, measure only the rest
            for sig, entry in on_disk.entries.items():
                self.table.entries.setdefault(sig, entry)
            todo = self.table.missing(sigs)
            if todo:
                self._measure(arch, todo)
                on_disk.entries.update({s: self.table.entries[s] for s in todo})
                on_disk.save(self.path)
        if todo:
            logger.info("latency: measured %d signature(s) missing from %s and added them", len(todo), self.path)
        else:
            logger.info("latency: %d signature(s) missing here were added to %s by another process",
                        len(missing), self.path)

    def _measure(self, arch: Architecture, signatures: list[str]) -> None:
        from mixnas.evaluators.latency.profile import config_from_table, profile_archs

        config = self._config or config_from_table(self.table)
        profile_archs(self.table, [arch], config, only=set(signatures))


def _resolution_hint(table: Any, arch: Architecture) -> str:
    """`` (the table holds resolutions [32], the architecture is at 224)`` when the stems say so, else ``""``."""
    held = sorted({int(m.group(1)) for sig in table.entries if (m := re.match(r"stem_r(\d+)_", sig))})
    if held and arch.resolution not in held:
        return f" (the table holds resolutions {held}, the architecture is at {arch.resolution}: --resolution?)"
    return ""

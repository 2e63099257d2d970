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

Prediction costs about 0.2-0.4 ms on first sight of an architecture (computing its signatures) and 30-50 µs
afterwards: the signatures are cached by the (hashable) record (``benchmarks/latency_predictor.py``).
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from mixnas.errors import LatencyTableError
from mixnas.evaluators.latency.lut import LatencyTable
from mixnas.evaluators.latency.signatures import arch_signatures
from mixnas.search_space.arch import Architecture

if TYPE_CHECKING:  # pragma: no cover
    from mixnas.evaluators.latency.measure import MeasureConfig

CACHE_SIZE = 65536


class LatencyPredictor:
    """``predict(arch) -> (mean_ms, std_ms)`` from a :class:`LatencyTable`.

    Args:
        table: the lookup table.
        calibrated: apply the table's calibration (when it has one).
        measure_missing: measure a missing signature on the spot (with ``config``) and add it to the table,
            instead of raising :class:`~mixnas.errors.LatencyTableError`.
        config: how to measure missing signatures; defaults to the table's own settings.
    """

    def __init__(
        self,
        table: LatencyTable,
        *,
        calibrated: bool = True,
        measure_missing: bool = False,
        config: MeasureConfig | None = None,
    ) -> None:
        self.table = table
        self.calibrated = calibrated
        self.measure_missing = measure_missing
        self._config = config
        self._signatures: dict[Architecture, tuple[str, ...]] = {}

    @classmethod
    def from_file(cls, path: str, **options: Any) -> LatencyPredictor:
        return cls(LatencyTable.load(path), **options)

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
                f"latency table has no entry for signature {missing[0]!r}{more} of architecture {arch.id}"
                f"{_resolution_hint(self.table, arch)}; profile it (mixnas latency profile --arch ...), or measure "
                "missing signatures on the spot (--measure-missing; measure_missing: true in latency.options)"
            )
        from mixnas.evaluators.latency.profile import config_from_table, profile_archs

        config = self._config or config_from_table(self.table)
        profile_archs(self.table, [arch], config)


def _resolution_hint(table: Any, arch: Architecture) -> str:
    """`` (the table holds resolutions [32], the architecture is at 224)`` when the stems say so, else ``""``."""
    held = sorted({int(m.group(1)) for sig in table.entries if (m := re.match(r"stem_r(\d+)_", sig))})
    if held and arch.resolution not in held:
        return f" (the table holds resolutions {held}, the architecture is at {arch.resolution}: --resolution?)"
    return ""

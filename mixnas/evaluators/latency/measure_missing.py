"""Measure what a lookup table lacks, on the spot, then predict: a wrapper around the pure predictor.

A search meets architectures whose parts the table may not hold. :class:`MeasuringPredictor` measures such a
part in the network being predicted (:func:`~mixnas.evaluators.latency.profile.profile_archs` with ``only=``
the missing signatures), adds it to the table and then predicts with the plain sum
(:func:`~mixnas.evaluators.latency.predictor.lut_sum`). With a file behind the table it also adds the
measurements to the file, under a file lock (:func:`~mixnas.evaluators.latency.lut.locked_table`): it re-reads
the file, takes what another process added meanwhile and measures only the rest, so search workers sharing one
table measure each signature once between them and none loses another's additions.

Imports flow one way: signatures <- lut <- predictor <- profile <- this module.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

from mixnas.evaluators.latency.lut import LatencyTable, locked_table
from mixnas.evaluators.latency.measure import MeasureConfig
from mixnas.evaluators.latency.predictor import LatencyPredictor, lut_sum
from mixnas.evaluators.latency.profile import config_from_table, profile_archs
from mixnas.search_space.arch import Architecture

logger = logging.getLogger(__name__)


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
    return MeasuringPredictor(predictor, config=config) if measure_missing else predictor

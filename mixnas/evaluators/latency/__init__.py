"""On-device latency: measurement, per-layer lookup table (LUT), predictor and validation report.

* :mod:`.measure`: time a module or an architecture end to end (torch eager or ONNX Runtime, CPU threads,
  batch size, warm-up, repeats, interleaving, drift correction) with device metadata.
* :mod:`.signatures`: decompose an architecture into canonical layer signatures (stem, block repeats, head,
  classifier).
* :mod:`.lut`: the versioned JSON lookup table (atomic writes, merge, CSV import).
* :mod:`.profile`: fill a table on the device (in context, incremental, resumable) and calibrate it.
* :mod:`.predictor`: ``LatencyPredictor(table).predict(arch) -> (mean_ms, std_ms)``, the pure sum ``lut_sum``.
* :mod:`.measure_missing`: ``MeasuringPredictor(predictor)`` measures the signatures a table lacks, then sums;
  ``load_predictor(path, measure_missing=...)`` builds either from a file.
* :mod:`.validate`: error and rank metrics against end-to-end measurements, scatter plot.
* :mod:`.agent`: the measurement rules (timing loop, clocks, statistics) and the standalone latency agent for a
  device without torch (``mixnas latency agent-script``): HTTP server and offline ``--measure-dir`` runner.
* :mod:`.remote`: ``RemoteTimer``, measuring on an agent over HTTP (``--remote``, ``latency: {type: remote}``).
* :mod:`.offline`: ``export-layers`` / ``import-results``, the agent's offline path.

Imports flow one way: agent <- measure; signatures <- lut <- predictor <- profile <- measure_missing, offline
(measure, below profile, imports none of them; remote imports measure and agent only). See ``docs/latency.md``. torch is imported only by the functions that measure; onnxruntime / onnx only by the
ONNX Runtime backend.
"""

from __future__ import annotations

from mixnas.evaluators.latency.lut import Calibration, Entry, LatencyTable
from mixnas.evaluators.latency.measure import MeasureConfig, Measurement, measure_arch, measure_archs, measure_module
from mixnas.evaluators.latency.measure_missing import MeasuringPredictor, load_predictor
from mixnas.evaluators.latency.predictor import LatencyPredictor, lut_sum
from mixnas.evaluators.latency.profile import calibrate, fit_calibration, load_or_create, new_table, profile_archs
from mixnas.evaluators.latency.signatures import arch_signatures, layer_signature
from mixnas.evaluators.latency.validate import ValidationReport, error_metrics, validate

__all__ = [
    "Calibration",
    "Entry",
    "LatencyPredictor",
    "LatencyTable",
    "MeasureConfig",
    "MeasuringPredictor",
    "Measurement",
    "ValidationReport",
    "arch_signatures",
    "calibrate",
    "error_metrics",
    "fit_calibration",
    "layer_signature",
    "load_or_create",
    "load_predictor",
    "lut_sum",
    "measure_arch",
    "measure_archs",
    "measure_module",
    "new_table",
    "profile_archs",
    "validate",
]

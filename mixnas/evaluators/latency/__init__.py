"""On-device latency: measurement, per-layer lookup table (LUT), predictors and validation report.

* :mod:`.timing`: the measurement rules (clocks, warm-up, interleaved rounds over a minimum time span, summary
  statistics); standard library only, bundled into the latency agent.
* :mod:`.agent`: the standalone latency agent for a device without torch (``mixnas latency agent-script``):
  ONNX Runtime sessions, HTTP server and offline ``--measure-dir`` runner.
* :mod:`.backends`: the runtimes, registered once: how a part or a network is converted (torch eager, ONNX
  Runtime float32 or int8) and run.
* :mod:`.measure`: ``MeasureConfig``, timers (here or on an agent) and the one end-to-end path ``measure_archs``.
* :mod:`.signatures`: decompose an architecture into canonical layer signatures (stem, block repeats, head,
  classifier).
* :mod:`.lut`: the versioned JSON lookup table (atomic writes, merge, CSV import) and its sum ``lut_sum``.
* :mod:`.profile`: fill a table on the device (in context, incremental, resumable) and calibrate it.
* :mod:`.predictor`: ``LatencyPredictor(table).predict(arch) -> (mean_ms, std_ms)``; ``MeasuringPredictor``
  measures the signatures a table lacks first; ``load_predictor(path, measure_missing=...)`` builds either.
* :mod:`.sampling`: distinct architectures of a space for profiles and validations, a space's coverage.
* :mod:`.validate`: error and rank metrics against end-to-end measurements, the validation protocol, plot.
* :mod:`.remote`: ``RemoteTimer``, measuring on an agent over HTTP (``--remote``, ``latency: {type: remote}``).
* :mod:`.offline`: ``export-layers`` / ``import-results``, the agent's offline path.

Imports flow one way: timing <- agent <- backends <- measure <- profile (with signatures <- lut) <- predictor,
sampling <- validate; remote and offline above measure and profile. See ``docs/latency.md``. torch is imported only
by the functions that measure; onnxruntime / onnx only by the ONNX Runtime backend.
"""

from __future__ import annotations

from mixnas.evaluators.latency.lut import Calibration, Entry, LatencyTable, lut_sum
from mixnas.evaluators.latency.measure import MeasureConfig, Measurement, measure_arch, measure_archs, measure_module
from mixnas.evaluators.latency.predictor import LatencyPredictor, MeasuringPredictor, load_predictor
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

"""Predictions of a LUT's calibration architectures by the mixnas on PYTHONPATH (the commit that wrote the LUT):
the uncalibrated LUT sum and the calibrated prediction, with its standard deviation. Prints one JSON list.

    PYTHONPATH=/tmp/oldfmt_COMMIT python lut_expected.py LUT.json
"""
import json
import sys

from mixnas.evaluators.latency.lut import LatencyTable
from mixnas.evaluators.latency.predictor import LatencyPredictor
from mixnas.search_space.arch import Architecture

path = sys.argv[1]
table = LatencyTable.load(path)
raw = json.load(open(path))
out = []
for point in raw["calibration"]["points"]:
    arch = Architecture.from_dict(point["arch"])
    total, _ = LatencyPredictor(table, calibrated=False).predict(arch)
    predicted, std = LatencyPredictor(table, calibrated=True).predict(arch)
    out.append({"arch_id": point["arch_id"], "lut_sum_ms": total, "predicted_ms": predicted, "std_ms": std})
print(json.dumps(out))

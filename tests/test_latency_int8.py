"""int8 as a precision of the latency package: ONNX Runtime static (QDQ) quantisation of parts and networks,
calibration inputs, tables that record their precision, and mixed tables refused in one line.

Measurements use a handful of runs and no time span: they check behaviour, never speed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mixnas.errors import LatencyTableError
from mixnas.evaluators.latency.backends import STAND_IN, calibration_inputs, export_onnx, quantize_onnx
from mixnas.evaluators.latency.lut import LatencyTable
from mixnas.evaluators.latency.measure import MeasureConfig
from mixnas.launch.cli import main

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

FAST = ["--warmup", "1", "--repeats", "4", "--rounds", "2", "--min-seconds", "0"]


def test_calibration_inputs_are_the_stand_in_or_normalised_images() -> None:
    stand_in = calibration_inputs(None, (1, 3, 8, 8))
    assert stand_in.shape == (16, 1, 3, 8, 8) and stand_in.dtype == np.float32
    assert np.array_equal(stand_in, calibration_inputs(None, (1, 3, 8, 8)))  # seeded
    digits = calibration_inputs("digits", (2, 3, 32, 32))
    assert digits.shape == (16, 2, 3, 32, 32) and digits.dtype == np.float32
    assert abs(float(digits.mean())) < 0.1 and 0.9 < float(digits.std()) < 1.1  # normalised per channel
    assert len({digits[i].tobytes() for i in range(16)}) == 16  # 32 distinct images, not one repeated


def test_quantized_model_is_int8_and_close_to_float() -> None:
    import onnx
    import onnxruntime as ort

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)).eval()
    inputs = calibration_inputs(None, (1, 3, 16, 16))
    model = quantize_onnx(export_onnx(net, (1, 3, 16, 16)), list(inputs))
    ops = {n.op_type for n in onnx.load_from_string(model).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "BatchNormalization" not in ops  # folded first
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": inputs[0]})[0]
    with torch.no_grad():
        want = net(torch.from_numpy(inputs[0])).numpy()
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()


def test_precision_is_checked_against_the_backend() -> None:
    assert MeasureConfig(backend="onnxruntime", precision="int8").to_dict()["calibration_data"] == STAND_IN
    with pytest.raises(LatencyTableError, match="backends with int8: \\['onnxruntime', 'executorch', 'litert'\\]"):
        MeasureConfig(backend="torch", precision="int8")
    with pytest.raises(LatencyTableError, match="precision: expected one of"):
        MeasureConfig(backend="onnxruntime", precision="int4")
    with pytest.raises(LatencyTableError, match="only int8 needs calibration"):
        MeasureConfig(backend="onnxruntime", calibration_data="digits")


def test_an_int8_table_records_its_own_backends_quantisation(monkeypatch: pytest.MonkeyPatch) -> None:
    from mixnas.evaluators.latency import backends

    assert "XNNPACKQuantizer" in MeasureConfig(backend="executorch", precision="int8").to_dict()["quantization"]
    assert "litert-torch" in MeasureConfig(backend="litert", precision="int8").to_dict()["quantization"]
    for saturates, bits in ((True, "7-bit weights"), (False, "")):
        monkeypatch.setattr(backends, "int8_saturates", lambda s=saturates: s)
        scheme = MeasureConfig(backend="onnxruntime", precision="int8").to_dict()["quantization"]
        assert scheme.startswith(backends.INT8_SCHEME) and bits in scheme
        assert saturates or scheme == backends.INT8_SCHEME
    assert "quantization" not in MeasureConfig(backend="onnxruntime").to_dict()


def test_an_int8_table_is_profiled_validated_and_records_its_precision(tmp_path: Path, capsys) -> None:
    lut = tmp_path / "int8.json"
    assert main(["latency", "profile", "--space", "tiny", "-n", "2", "--calibrate", "2", "--precision", "int8",
                 "--calibration-data", "digits", "--out", str(lut), *FAST]) == 0
    data = json.loads(lut.read_text())
    assert data["format_version"] == 5 and data["precision"] == "int8" and data["backend"] == "onnxruntime"
    assert data["settings"]["calibration_data"] == "digits" and "QDQ" in data["settings"]["quantization"]
    table = LatencyTable.load(lut)
    assert table.precision == "int8" and len(table) > 0 and table.calibration is not None
    capsys.readouterr()
    assert main(["latency", "validate", "--space", "tiny", "--lut", str(lut), "-n", "2", "--json",
                 "--repeats", "4", "--min-seconds", "0", "--rounds", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["precision"] == "int8" and report["n"] == 2 and 0 <= report["within_10pct"] <= 1
    assert main(["latency", "predict", "mixnet_tiny", "--lut", str(lut), "--measure-missing", "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    assert predicted["precision"] == "int8" and predicted["results"][0]["mean_ms"] > 0
    assert main(["latency", "measure", "mixnet_tiny", "--precision", "int8", "--json", *FAST]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert measured["config"]["precision"] == "int8" and measured["config"]["backend"] == "onnxruntime"


def test_mixed_precisions_are_refused_in_one_line(tmp_path: Path, capsys) -> None:
    f32, i8 = tmp_path / "f32.json", tmp_path / "i8.json"
    LatencyTable("onnxruntime", 1, 1, device={"cpu": "x"}).save(f32)
    LatencyTable("onnxruntime", 1, 1, device={"cpu": "x"}, precision="int8").save(i8)
    with pytest.raises(LatencyTableError, match="different precision"):
        LatencyTable.load(f32).merge(LatencyTable.load(i8), force=True)  # not even with force
    capsys.readouterr()
    assert main(["latency", "merge", str(f32), str(i8), "--out", str(tmp_path / "m.json"), "--force"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different precision" in err[0] and not (tmp_path / "m.json").exists()
    # measuring float32 into an int8 table: refused before anything is measured
    assert main(["latency", "profile", "--arch", "mixnet_tiny", "--calibrate", "0", "--backend", "onnxruntime",
                 "--out", str(i8), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "precision: table 'int8', now 'float32'" in err[-1]
    assert main(["latency", "measure", "mixnet_tiny", "--backend", "torch", "--precision", "int8"]) == 2
    assert "backends with int8" in capsys.readouterr().err


def test_an_int8_measure_section_calibrates_on_the_experiments_data(tmp_path: Path) -> None:
    from mixnas.launch.config import config_from_dict
    from mixnas.launch.trial import TrialEvaluator
    from mixnas.search_space.spaces import load_space

    data = {
        "name": "int8", "search_space": "tiny", "controller": {"type": "random"},
        "evaluator": {"type": "proxy", "data": "digits", "subset": {"images_per_class": 10}, "budget": {"steps": 1},
                      "training": {"batch_size": 16, "threads": 1}},
        "latency": {"type": "measure", "precision": "int8",
                    "options": {"warmup": 1, "repeats": 4, "min_seconds": 0}},
        "reward": {"type": "metric", "metric": "top1"}, "execution": {"trials": 1},
    }
    cfg = config_from_dict(data, source="int8.yaml", base_dir=tmp_path)
    measure = cfg.latency.measure_config
    assert (measure.backend, measure.precision, measure.calibration_data) == ("onnxruntime", "int8", "digits")
    assert cfg.to_dict()["latency"]["precision"] == "int8"
    assert "reference_resolution" not in cfg.to_dict()["latency"]["options"]  # config.yaml as before
    assert config_from_dict(cfg.to_dict(), source="config.yaml", base_dir=tmp_path).latency == cfg.latency
    outcome = TrialEvaluator(cfg).run((0,) * len(load_space("tiny").dimensions), 0)
    assert outcome.status == "ok", outcome.reason
    assert outcome.metrics["latency_ms"] > 0


def test_a_backend_that_learns_repeated_inputs_gets_a_rotation_of_them() -> None:
    from mixnas.evaluators.latency.backends import INPUT_VARIANTS, InputRotation, calibration_inputs
    from mixnas.evaluators.latency.measure import MeasureConfig, make_input

    x = make_input((1, 3, 32, 32), MeasureConfig(backend="litert"))
    assert isinstance(x, InputRotation) and len(x.inputs) == INPUT_VARIANTS
    assert len({a.tobytes() for a in x.inputs}) == INPUT_VARIANTS  # all different
    int8 = make_input((1, 3, 32, 32), MeasureConfig(backend="litert", precision="int8", calibration_data="digits"))
    assert np.array_equal(np.stack(int8.inputs), calibration_inputs("digits", (1, 3, 32, 32), INPUT_VARIANTS))
    big = make_input((1, 3, 224, 224), MeasureConfig(backend="litert"))
    assert 2 <= len(big.inputs) < INPUT_VARIANTS and sum(a.nbytes for a in big.inputs) <= 32 << 20
    assert make_input([1, 3, 32, 32], MeasureConfig(backend="litert")) is x  # one rotation shared by every pipeline
    fixed = make_input((1, 3, 32, 32), MeasureConfig(backend="onnxruntime"))
    assert isinstance(fixed, np.ndarray) and fixed.shape == (1, 3, 32, 32)


def test_a_litert_table_timed_on_one_repeated_input_takes_no_rotated_measurements() -> None:
    from mixnas.errors import LatencyTableError
    from mixnas.evaluators.latency.lut import LatencyTable
    from mixnas.evaluators.latency.measure import MeasureConfig
    from mixnas.evaluators.latency.profile import check_compatible

    class HereTimer:  # the device without importing LiteRT
        def device(self, config):
            return {"cpu": "x", "accelerator": "cpu"}

    config = MeasureConfig(backend="litert")
    assert config.to_dict()["input_variants"] == 64
    assert "input_variants" not in MeasureConfig(backend="onnxruntime").to_dict()
    settings = {k: v for k, v in config.to_dict().items() if k != "input_variants"}  # as tables were before
    old = LatencyTable("litert", 1, 1, device={"cpu": "x", "accelerator": "cpu"}, settings=settings)
    with pytest.raises(LatencyTableError, match="input_variants: table 1, now 64.*repeated input.*profile it again"):
        check_compatible(old, config, HereTimer())
    new = LatencyTable("litert", 1, 1, device={"cpu": "x", "accelerator": "cpu"}, settings=config.to_dict())
    check_compatible(new, config, HereTimer())
    with pytest.raises(LatencyTableError, match="use force to merge anyway.*repeated input.*profile it again"):
        new.merge(old)

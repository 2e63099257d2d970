"""LiteRT (TensorFlow Lite; optional extra ``mixnas[litert]``): a latency backend in float32 and int8, and the
phone path run for real on this machine with LiteRT's own benchmark program (``litert-benchmark``, the Python
mirror of ``benchmark_model`` that ai-edge-litert ships). Skipped, with the install line, where the extra is not
installed (CI's base install).

Converting a part with litert-torch takes ~1-3 s in float32 and ~10-25 s in int8 here, so these tests convert
a handful of parts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("litert_torch", reason="the litert extra is not installed: pip install 'mixnas[litert]'")

from mixnas.evaluators.latency.backends import calibration_inputs, litert_runner, to_tflite  # noqa: E402
from mixnas.evaluators.latency.lut import LatencyTable  # noqa: E402
from mixnas.evaluators.latency.measure import MeasureConfig, measure_arch  # noqa: E402
from mixnas.launch.cli import main  # noqa: E402
from mixnas.models import build  # noqa: E402
from mixnas.search_space.presets import resolve_arch  # noqa: E402

FAST = ["--warmup", "1", "--repeats", "4", "--rounds", "2", "--min-seconds", "0"]


def test_a_mixnet_converts_to_tflite_and_runs_like_eager() -> None:
    net = build(resolve_arch("mixnet_tiny")).eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32), dtype=np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    got = litert_runner(to_tflite(net, (1, 3, 32, 32), "float32"), 1)(x)
    assert np.abs(got - want).max() < 1e-4
    int8 = to_tflite(net, (1, 3, 32, 32), "int8", calibration_inputs("digits", (1, 3, 32, 32)))
    out = litert_runner(int8, 1)(x)  # a fully quantised model: int8 in, int8 out
    assert out.dtype == np.int8 and out.shape == want.shape


def test_litert_measures_both_precisions() -> None:
    tiny = resolve_arch("mixnet_tiny")
    for precision in ("float32", "int8"):
        m = measure_arch(tiny, MeasureConfig(backend="litert", precision=precision, warmup=1, repeats=4,
                                             min_seconds=0), rounds=2)
        assert m.min_ms > 0 and m.count >= 4


def test_an_int8_part_whose_input_stays_float_is_timed_in_context() -> None:
    """litert-torch leaves the input of a part with a residual addition in float32 while the part before it is
    int8 in and out: the runner passes the int8 output on, cast (this crashed before)."""
    from mixnas.evaluators.latency.backends import convert_pipeline
    from mixnas.evaluators.latency.profile import context_pipeline
    from mixnas.search_space.arch import GlobalParams
    from mixnas.search_space.arch_strings import decode_arch

    params = GlobalParams(stem_size=16, feature_size=32, resolution=16, num_classes=4)
    arch = decode_arch(["r1_k3_a1_p1_s11_e1_i16_o16"], grammar="tf", global_params=params)  # stem, skip block
    config = MeasureConfig(backend="litert", precision="int8")
    stages = [litert_runner(model, 1) for _, model in convert_pipeline(context_pipeline(arch, 1)[:2], config)]
    out = stages[1](stages[0](calibration_inputs(None, (1, 3, 16, 16))[0]))
    assert out.shape == (1, 16, 8, 8)


def test_a_litert_table_is_built_validated_and_used_by_a_trial(tmp_path: Path, capsys) -> None:
    lut = tmp_path / "lite.json"
    assert main(["latency", "profile", "--arch", "mixnet_tiny", "--calibrate", "1", "--backend", "litert",
                 "--out", str(lut), *FAST]) == 0
    table = LatencyTable.load(lut)
    assert table.backend == "litert" and table.device["ai-edge-litert"]
    capsys.readouterr()
    assert main(["latency", "validate", "--space", "tiny", "--lut", str(lut), "-n", "2", "--json",
                 "--repeats", "4", "--min-seconds", "0", "--rounds", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["backend"] == "litert"

    # used by a search trial (the signatures the table lacks are measured on the worker, in LiteRT)
    from mixnas.launch.config import config_from_dict
    from mixnas.launch.trial import TrialEvaluator
    from mixnas.search_space.spaces import load_space

    data = {
        "name": "lite", "search_space": "tiny", "controller": {"type": "random"},
        "evaluator": {"type": "proxy", "data": "digits", "subset": {"images_per_class": 10}, "budget": {"steps": 1},
                      "training": {"batch_size": 16, "threads": 1}},
        "latency": {"type": "lut", "lut": str(lut)},
        "reward": {"type": "metric", "metric": "top1"}, "execution": {"trials": 1},
    }
    cfg = config_from_dict(data, source="lite.yaml", base_dir=tmp_path)
    outcome = TrialEvaluator(cfg).run((1,) * len(load_space("tiny").dimensions), 0)
    assert outcome.status == "ok", outcome.reason
    assert outcome.metrics["latency_ms"] > 0


def _litert_benchmark() -> str:
    """LiteRT's benchmark command beside this Python (a console script of ai-edge-litert)."""
    found = shutil.which("litert-benchmark", path=str(Path(sys.executable).parent)) or shutil.which("litert-benchmark")
    if found is None:
        pytest.skip("ai-edge-litert's litert-benchmark command is not on PATH")
    return found


@pytest.mark.slow
def test_the_phone_path_runs_with_litert_benchmark_here(tmp_path: Path, capsys) -> None:
    """export-layers -> run_benchmarks.sh (ADB= : on this machine, the real program) -> import-results."""
    folder = tmp_path / "ph"
    assert main(["latency", "export-layers", "--backend", "litert", "--program", "benchmark_litert_model",
                 "--space", "tiny", "-n", "2", "--calibrate", "2", "--validate", "2", "--repeats", "10", "--passes", "1",
                 "--warmup", "2", "-o", str(folder)]) == 0
    env = {**os.environ, "ADB": "", "RUNNER": _litert_benchmark()}
    done = subprocess.run(["sh", str(folder / "run_benchmarks.sh")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    capsys.readouterr()
    assert main(["latency", "import-results", str(folder), "--out", str(tmp_path / "lut.json")]) == 0
    captured = capsys.readouterr()
    assert "validation: 2 held-out networks" in captured.out
    assert "coarse" in captured.err  # tiny's parts (32 px) are faster than the Python program's 0.01 ms steps
    assert "drift correction off: the reference network took" in captured.err  # ~0.1 ms at 32 px as well
    table = LatencyTable.load(tmp_path / "lut.json")
    assert table.backend == "litert" and table.device["program"] == "benchmark_litert_model"


def test_the_runner_takes_a_new_input_of_a_rotation_every_run() -> None:
    """LiteRT runs a repeated input faster than a stream of new ones, so its measurements rotate inputs."""
    from mixnas.evaluators.latency.backends import InputRotation
    from mixnas.evaluators.latency.measure import make_input

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    for precision in ("float32", "int8"):
        config = MeasureConfig(backend="litert", precision=precision,
                               calibration_data="digits" if precision == "int8" else None)
        x = make_input((1, 3, 8, 8), config)
        assert isinstance(x, InputRotation) and len(x.inputs) == 64
        run = litert_runner(to_tflite(model, (1, 3, 8, 8), precision, calibration_inputs("digits", (1, 3, 8, 8))), 1)
        outputs = [run(x).copy() for _ in range(2 * len(x.inputs))]
        assert not np.array_equal(outputs[0], outputs[1])  # a new input each run
        assert all(np.array_equal(a, b) for a, b in zip(outputs, outputs[len(x.inputs):]))  # in a fixed cycle

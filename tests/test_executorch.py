"""The mobile runtime, ExecuTorch with the XNNPACK delegate (optional extra ``mixnas[executorch]``): a latency
backend in float32 and int8, tables built, validated and used by a search trial, and trained exports scored in
ExecuTorch's own runtime. Skipped, with the install line, where the extra is not installed (CI's base install).

Converting a part to a ``.pte`` takes ~1.5-4.5 s in float32 and ~3-7 s in int8 on the development machine (most
of it in ``torch.export`` and the lowering), so these tests profile a handful of parts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("executorch.exir", reason="the executorch extra is not installed: pip install 'mixnas[executorch]'")

from mixnas.evaluators.latency.backends import executorch_runner, to_pte  # noqa: E402
from mixnas.evaluators.latency.lut import LatencyTable  # noqa: E402
from mixnas.evaluators.latency.measure import MeasureConfig, measure_arch  # noqa: E402
from mixnas.launch.cli import main  # noqa: E402
from mixnas.models import build  # noqa: E402
from mixnas.search_space.presets import resolve_arch  # noqa: E402

FAST = ["--warmup", "1", "--repeats", "4", "--rounds", "2", "--min-seconds", "0"]


def test_a_mixnet_is_one_xnnpack_subgraph_and_runs_like_eager() -> None:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower

    net = build(resolve_arch("mixnet_tiny")).eval()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, 32, 32), dtype=np.float32))
    with torch.no_grad():
        lowered = to_edge_transform_and_lower(torch.export.export(net, (x,)), partitioner=[XnnpackPartitioner()])
        want = net(x).numpy()
    info = get_delegation_info(lowered.exported_program().graph_module)
    # MixConv's groups are slices under torch.export (with torch.split: 12 subgraphs, 55 nodes outside); only the
    # grouped 1x1 convolutions' splits stay outside the delegate (see models/layers.py)
    assert info.num_delegated_subgraphs <= 7 and info.num_non_delegated_nodes <= 30
    got = executorch_runner(to_pte(net, (1, 3, 32, 32), "float32"), 1)(x).numpy()
    assert np.abs(got - want).max() < 1e-4


def test_executorch_measures_both_precisions() -> None:
    tiny = resolve_arch("mixnet_tiny")
    for precision in ("float32", "int8"):
        m = measure_arch(tiny, MeasureConfig(backend="executorch", precision=precision, warmup=1, repeats=4,
                                             min_seconds=0), rounds=2)
        assert m.min_ms > 0 and m.count >= 4


@pytest.mark.parametrize("block_string", ["r1_k3.5_a1_p1_s22_e3_i32_o64_se0.25", "r1_k3.5.7_a1_p1_s22_e3_i32_o64"])
def test_a_multi_group_mixconv_block_runs_in_xnnpack_int8_like_eager(block_string: str) -> None:
    """A 2- or 3-group MixConv of stride 2 into a 2x2 output: its ``narrow`` groups share their input's quantisation
    parameters (``backends._xnnpack_quantizer``), so every slice is delegated and the block is one XNNPACK subgraph.
    With XNNPACK's own quantizer a slice stayed outside and executorch 1.5.1 failed at run time ("Attempted to
    resize a static tensor", 0 channels)."""
    from mixnas.models.mixnet import MBConvBlock
    from mixnas.search_space.arch import GlobalParams
    from mixnas.search_space.arch_strings import decode_arch

    params = GlobalParams(stem_size=32, feature_size=64, resolution=8, num_classes=4)
    arch = decode_arch([block_string], grammar="tf", global_params=params)
    block = MBConvBlock(arch.layers()[0]).eval()
    shape = (1, 32, 4, 4)
    calibration = [np.random.default_rng(i).standard_normal(shape).astype(np.float32) for i in range(4)]
    x = torch.from_numpy(np.random.default_rng(9).standard_normal(shape).astype(np.float32))
    with torch.no_grad():
        want = block(x)
    got = executorch_runner(to_pte(block, shape, "int8", calibration), 1)(x)
    assert got.shape == want.shape == (1, 64, 2, 2)
    assert (got - want).abs().mean() < 0.1 * want.abs().mean()


def test_leaving_out_the_qat_batch_norm_patterns_changes_no_byte_of_an_int8_program(monkeypatch) -> None:
    """``_xnnpack_quantizer`` skips XNNPACK's conv-batch-norm patterns (QAT graphs only; 40% of a conversion): a
    MixConv block with squeeze-and-excite and swish converts to the same bytes as with every pattern."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer

    from mixnas.evaluators.latency import backends
    from mixnas.models.mixnet import MBConvBlock
    from mixnas.search_space.arch import GlobalParams
    from mixnas.search_space.arch_strings import decode_arch

    quantizer = backends._xnnpack_quantizer()
    left_out = {p.name for p in XNNPACKQuantizer.SUPPORTED_PATTERNS} - {p.name for p in quantizer.SUPPORTED_PATTERNS}
    assert left_out == backends.TRAINING_BATCH_NORM_PATTERNS
    params = GlobalParams(stem_size=16, feature_size=64, resolution=8, num_classes=4)
    arch = decode_arch(["r1_k3.5_a1_p1_s11_e3_i16_o16_se0.25_sw"], grammar="tf", global_params=params)
    block = MBConvBlock(arch.layers()[0]).eval()
    shape = (1, 16, 8, 8)
    calibration = [np.random.default_rng(i).standard_normal(shape).astype(np.float32) for i in range(2)]
    fast = to_pte(block, shape, "int8", calibration)
    stock = type(quantizer).__mro__[1].SUPPORTED_PATTERNS
    monkeypatch.setattr(backends, "_xnnpack_quantizer",
                        lambda: type("Stock", (type(quantizer),), {"SUPPORTED_PATTERNS": stock})().set_global(
                            quantizer.global_config))
    assert to_pte(block, shape, "int8", calibration) == fast


def test_an_executorch_table_is_built_validated_and_used_by_a_trial(tmp_path: Path, capsys) -> None:
    from mixnas.launch.config import config_from_dict
    from mixnas.launch.trial import TrialEvaluator
    from mixnas.search_space.spaces import load_space

    lut = tmp_path / "et.json"
    assert main(["latency", "profile", "--arch", "mixnet_tiny", "--calibrate", "1", "--backend", "executorch",
                 "--out", str(lut), *FAST]) == 0
    table = LatencyTable.load(lut)
    assert table.backend == "executorch" and table.precision == "float32" and table.device["executorch"]
    capsys.readouterr()
    assert main(["latency", "validate", "--space", "tiny", "--lut", str(lut), "-n", "2", "--json",
                 "--repeats", "4", "--min-seconds", "0", "--rounds", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["backend"] == "executorch" and report["n"] == 2
    data = {
        "name": "et", "search_space": "tiny", "controller": {"type": "random"},
        "evaluator": {"type": "proxy", "data": "digits", "subset": {"images_per_class": 10}, "budget": {"steps": 1},
                      "training": {"batch_size": 16, "threads": 1}},
        "latency": {"type": "lut", "lut": str(lut)},
        "reward": {"type": "metric", "metric": "top1"}, "execution": {"trials": 1},
    }
    cfg = config_from_dict(data, source="et.yaml", base_dir=tmp_path)
    outcome = TrialEvaluator(cfg).run((0,) * len(load_space("tiny").dimensions), 0)
    assert outcome.status == "ok", outcome.reason
    assert outcome.metrics["latency_ms"] > 0


def test_export_layers_writes_pte_files_for_executor_runner_on_a_phone(tmp_path: Path, capsys) -> None:
    assert main(["latency", "export-layers", "--space", "tiny", "-n", "1", "--calibrate", "0", "-o",
                 str(tmp_path / "ph"), "--backend", "executorch", *FAST]) == 0
    manifest = json.loads((tmp_path / "ph" / "manifest.json").read_text())
    assert manifest["program"] == "executor_runner"
    assert all(r["model"].endswith(".pte") for r in manifest["runs"])
    assert "--model_path=" in (tmp_path / "ph" / "run_benchmarks.sh").read_text()


def test_a_trained_model_exports_to_executorch_scored_in_its_runtime(tmp_path: Path) -> None:
    from test_export_trained import TRAIN, _cli, make_run

    run_dir = make_run(tmp_path)
    done = _cli("train", f"{run_dir}:best", *TRAIN, "--output", str(tmp_path / "T"))
    assert done.returncode == 0, done.stderr
    done = _cli("export", str(tmp_path / "T"), "--format", "onnx", "executorch", "executorch-int8",
                "-o", str(tmp_path / "E"))
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "E"
    deployed = json.loads((folder / "arch.json").read_text())["deployed"]
    files = {f["file"]: f for f in deployed["files"]}
    assert set(files) == {"model.onnx", "model.pte", "model.int8.pte"}
    final = json.loads((tmp_path / "T" / "metrics.json").read_text())
    assert files["model.pte"]["max_abs_logit_diff_vs_torch"] < 1e-3
    assert files["model.pte"]["top1"] == pytest.approx(final["top1"], abs=1e-6)
    assert abs(files["model.int8.pte"]["top1"] - final["top1"]) <= 0.1
    assert "model.int8.pte" in deployed["int8_calibration"]
    assert "| `model.pte` | executorch (XNNPACK) | float32 |" in (folder / "README.md").read_text()

"""Batch norms folded before conversion: the folded copy computes the trained network's function, leaves the
trained network alone, and leaves no float batch norm in an int8 MixConv block; tables record the folding, and a
table made before it is refused for new measurements and warned about."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mixnas.errors import LatencyTableError
from mixnas.evaluators.latency.lut import LatencyTable
from mixnas.evaluators.latency.measure import MeasureConfig
from mixnas.evaluators.latency.predictor import load_predictor, unfolded_warning
from mixnas.launch.cli import main
from mixnas.models import build
from mixnas.models.folding import fold_batch_norms
from mixnas.search_space.arch import GlobalParams
from mixnas.search_space.arch_strings import decode_arch

# two blocks with several kernel groups and grouped 1x1 convolutions, one with SE and a skip
ARCH = ("r1_k3_a1_p1_s11_e1_i16_o16", "r1_k3.5.7_a1.1_p1.1_s22_e6_i16_o24_se0.5_sw", "r1_k3.5_a1.1_p1.1_s11_e3_i24_o24")


def trained_like(module: nn.Module) -> nn.Module:
    """Batch norms with statistics and affine parameters far from their initial values, as after training."""
    g = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))
    return module.eval()


def network() -> nn.Module:
    params = GlobalParams(stem_size=16, feature_size=64, resolution=32, num_classes=10)
    arch = decode_arch(list(ARCH), grammar="tf", global_params=params)
    return trained_like(build(arch))


def test_the_folded_copy_computes_the_same_function_without_batch_norms() -> None:
    net = network()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded = fold_batch_norms(net)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(folded(x), net(x), atol=1e-4, rtol=1e-4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    # the trained network is untouched: same tensors, its batch norms still there
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    # stem, depthwise and projection of the unexpanded block, 3 per expanded block, head
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 1 + 2 + 3 + 3 + 1


def test_a_batch_norm_that_is_not_after_a_convolution_stays() -> None:
    net = nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3), nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3,
                        track_running_stats=False)).eval()
    folded = fold_batch_norms(net)
    assert isinstance(folded[1], nn.BatchNorm2d) and isinstance(folded[3], nn.BatchNorm2d)


def test_an_int8_mixconv_block_has_no_float_batch_norm_left() -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from mixnas.evaluators.latency.backends import calibration_inputs, export_onnx, quantize_onnx

    net = network()
    shape = (1, 3, 32, 32)
    calibration = list(calibration_inputs(None, shape))
    for model in (export_onnx(net, shape), quantize_onnx(export_onnx(net, shape), calibration)):
        ops = [n.op_type for n in onnx.load_from_string(model).graph.node]
        assert "BatchNormalization" not in ops
    import onnxruntime as ort

    x = np.asarray(calibration_inputs(None, shape)[0])
    got = ort.InferenceSession(export_onnx(net, shape), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    assert np.abs(got - want).max() < 1e-4 * max(1.0, float(np.abs(want).max()))


def test_tables_record_the_folding_and_an_older_table_takes_no_new_measurements(tmp_path: Path, capsys,
                                                                                caplog) -> None:
    assert MeasureConfig(backend="onnxruntime").to_dict()["folded_batch_norms"] is True
    assert "folded_batch_norms" not in MeasureConfig(backend="torch").to_dict()  # torch runs the module as trained
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    LatencyTable("onnxruntime", 1, 1, device={"cpu": "x"}, settings={"clock": "thread"}).save(old)
    LatencyTable("onnxruntime", 1, 1, device={"cpu": "x"},
                 settings={"clock": "thread", "folded_batch_norms": True}).save(new)
    with pytest.raises(LatencyTableError, match="different folded_batch_norms .*profile it again"):
        LatencyTable.load(new).merge(LatencyTable.load(old), force=True)
    assert unfolded_warning(LatencyTable.load(new)) is None
    assert "profile it again" in unfolded_warning(LatencyTable.load(old))
    with caplog.at_level(logging.WARNING):
        load_predictor(old)
    assert "measured before batch norms were folded" in caplog.text
    assert main(["latency", "profile", "--arch", "mixnet_tiny", "--calibrate", "0", "--backend", "onnxruntime",
                 "--out", str(old), "--warmup", "1", "--repeats", "4", "--rounds", "2", "--min-seconds", "0",
                 "--no-drift-correction"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "folded_batch_norms: table False, now True" in err[-1] and "profile it again" in err[-1]

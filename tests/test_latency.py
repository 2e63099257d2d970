"""Latency measurement, lookup table, predictor, validation metrics and the ``mixnas latency`` command.

Measurements here use tiny networks and a handful of runs: they check behaviour (positive, finite, thread
setting honoured, resumable profiling), never speed.
"""

from __future__ import annotations

import json
import os
import re
import logging
import math
import signal
import random
import statistics
import time
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mixnas.errors import ConfigError, LatencyTableError
from mixnas.evaluators.latency import profile as profile_module
from mixnas.evaluators.latency.lut import Calibration, Entry, LatencyTable
from mixnas.evaluators.latency.measure import (
    MeasureConfig,
    Measurement,
    device_metadata,
    measure_arch,
    measure_interleaved,
    measure_module,
    network_spec,
)
from mixnas.evaluators.latency.lut import lut_sum
from mixnas.evaluators.latency.predictor import LatencyPredictor, MeasuringPredictor, load_predictor
from mixnas.evaluators.latency.timing import TimingError, rounds_until, summarize
from mixnas.evaluators.latency.profile import (
    choose_calibration,
    chunk_drift,
    config_from_table,
    fit_calibration,
    new_table,
    profile_archs,
    select_contexts,
    store_measured,
)
from mixnas.evaluators.latency.signatures import arch_signatures, layer_signature
from mixnas.evaluators.latency.validate import (
    error_metrics,
    kendall,
    rankdata,
    repeatability_warning,
    spearman,
)
from mixnas.launch.cli import main
from mixnas.evaluators.latency.sampling import PROFILE_SEED, sample_archs
from mixnas.search_space.arch import Architecture
from mixnas.search_space.presets import resolve_arch

FAST = MeasureConfig(warmup=1, repeats=3, min_seconds=0)


@pytest.fixture(scope="module")
def tiny():
    return resolve_arch("mixnet_tiny")


def synthetic_table(arch, *, backend: str = "torch", cpu: str = "test-cpu") -> LatencyTable:
    """A table whose entry for the i-th distinct signature is i + 1 ms with std 0.1 ms."""
    table = LatencyTable(backend=backend, threads=1, batch_size=1, device={"cpu": cpu, "accelerator": "cpu"})
    for i, sig in enumerate(dict.fromkeys(arch_signatures(arch))):
        table.entries[sig] = Entry(ms=i + 1.0, mean_ms=i + 1.5, std_ms=0.1, count=10)
    return table


# --- signatures -----------------------------------------------------------------------------------------------
def test_signatures_are_canonical_and_position_free(tiny) -> None:
    sigs = arch_signatures(tiny)
    layers = tiny.layers()
    assert len(sigs) == len(layers) + 3
    assert sigs[0] == "stem_r32_i3_o16_s2"
    assert sigs[1] == "mb_r16_i16_m16_o16_s1_k3_d1_c16_a1_p1_se0_relu_skip1"
    assert sigs[-2] == f"head_r{tiny.final_size}_i{tiny.final_channels}_o256"
    assert sigs[-1] == "fc_i256_o10"
    # mixnet_tiny's block 3 has two repeats with identical shapes: one signature, whatever the position.
    repeats = [layer for layer in layers if layer.block_index == 3]
    assert len(repeats) == 2 and repeats[0].index != repeats[1].index
    assert layer_signature(repeats[0]) == layer_signature(repeats[1])
    assert arch_signatures(tiny.replace(resolution=64))[0] == "stem_r64_i3_o16_s2"


# --- LUT file -------------------------------------------------------------------------------------------------
def test_lut_round_trip(tmp_path: Path, tiny) -> None:
    table = synthetic_table(tiny)
    table.calibration = Calibration(scale=1.1, offset_ms=0.2, points=(("abc", 1.0, 1.3),))
    path = tmp_path / "sub" / "lut.json"
    table.save(path)
    loaded = LatencyTable.load(path)
    assert loaded == table
    assert json.loads(path.read_text())["format_version"] == 2
    assert not list(path.parent.glob("*.tmp"))  # the temporary file was renamed


def test_lut_keeps_the_timings_of_pooled_entries(tmp_path: Path, tiny) -> None:
    table = synthetic_table(tiny)
    sig = next(iter(table.entries))
    table.entries[sig] = Entry(ms=2.0, mean_ms=2.1, std_ms=0.1, count=20, timings=(2.0, 1.5, 3.0))
    path = tmp_path / "lut.json"
    table.save(path)
    assert LatencyTable.load(path) == table
    data = json.loads(path.read_text())
    assert data["format_version"] == 4 and data["entries"][sig]["timings"] == [2.0, 1.5, 3.0]
    data["format_version"] = 2  # a reader of version 2 would not know the key: so it is not allowed there
    path.write_text(json.dumps(data))
    with pytest.raises(LatencyTableError, match="timings: only in format_version 4"):
        LatencyTable.load(path)


def test_lut_version_1_is_still_read(tmp_path: Path, tiny) -> None:
    data = synthetic_table(tiny).to_dict()
    data["format_version"] = 1
    data["calibration"] = {"scale": 1.1, "offset_ms": 0.2, "n": 1, "points": [{"arch_id": "a", "summed_ms": 1.0,
                                                                               "measured_ms": 1.3}]}
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(data))
    cal = LatencyTable.load(path).calibration
    assert cal is not None and cal.per_part_ms == 0.0 and cal.apply(2.0, 9) == pytest.approx(2.4)


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d.update(format_version=99), "unknown format_version 99"),
        (lambda d: d.update(format="something-else"), "not a mixnas latency table"),
        (lambda d: d.update(signature_version=0), "signature_version"),
        (lambda d: d.update(colour="blue"), "unknown keys"),
        (lambda d: d.update(threads=0), "threads"),
        (lambda d: d["entries"].update(fc_i9_o9={"ms": -1.0}), "entries\\['fc_i9_o9'\\]"),
        (lambda d: d["entries"].update(fc_i9_o9=[1, 2]), "expected an object"),
        (lambda d: d.update(format_version=4) or d["entries"].update(fc_i9_o9={"ms": 1.0, "timings": [1.0]}),
         "timings: expected a list of two or more"),
        (lambda d: d.update(format_version=4) or d["entries"].update(fc_i9_o9={"ms": 1.0, "timings": [1.0, -2]}),
         "timings\\[1\\]"),
        (lambda d: d.update(calibration={"scale": 1.0}), "offset_ms"),
        (lambda d: d.update(calibration={"scale": 1.0, "offset_ms": 0, "per_part_ms": "x"}), "per_part_ms"),
    ],
)
def test_lut_bad_content_is_a_clear_error(tmp_path: Path, tiny, mutate, message: str) -> None:
    data = synthetic_table(tiny).to_dict()
    mutate(data)
    path = tmp_path / "lut.json"
    path.write_text(json.dumps(data))
    with pytest.raises(LatencyTableError, match=message):
        LatencyTable.load(path)


def test_lut_not_json_or_missing(tmp_path: Path) -> None:
    path = tmp_path / "lut.json"
    path.write_text("{not json")
    with pytest.raises(LatencyTableError, match="not valid JSON"):
        LatencyTable.load(path)
    with pytest.raises(LatencyTableError, match="no such latency table"):
        LatencyTable.load(tmp_path / "absent.json")


def test_merge_pools_entries_and_refuses_other_conditions(tiny) -> None:
    a = LatencyTable(backend="torch", threads=1, batch_size=1, device={"cpu": "x"})
    b = LatencyTable(backend="torch", threads=1, batch_size=1, device={"cpu": "x"})
    a.entries["s1"] = Entry(ms=1.0, mean_ms=1.0, std_ms=0.0, count=2)
    b.entries["s1"] = Entry(ms=3.0, mean_ms=3.0, std_ms=0.0, count=2)
    b.entries["s2"] = Entry(ms=5.0, mean_ms=5.0, std_ms=0.5, count=4)
    merged = a.merge(b)
    assert set(merged.entries) == {"s1", "s2"}
    pooled = merged.entries["s1"]
    assert pooled.count == 4 and pooled.mean_ms == pytest.approx(2.0) and pooled.ms == pytest.approx(2.0)
    # runs 1, 1, 3, 3: sample variance 4/3
    assert pooled.std_ms == pytest.approx(math.sqrt(4 / 3))
    assert merged.entries["s2"] == b.entries["s2"]
    assert a.entries["s1"].count == 2  # inputs untouched

    other_backend = LatencyTable(backend="onnxruntime", threads=1, batch_size=1, device={"cpu": "x"})
    other_device = LatencyTable(backend="torch", threads=1, batch_size=1, device={"cpu": "y"})
    with pytest.raises(LatencyTableError, match="backend"):
        a.merge(other_backend)
    with pytest.raises(LatencyTableError, match="cpu"):
        a.merge(other_device)
    assert len(a.merge(other_device, force=True)) == 1
    # drift-corrected tables whose references ran at different resolutions: entries rescaled to different baselines
    old_ref = LatencyTable(backend="torch", threads=1, batch_size=1, device={"cpu": "x"},
                           settings={"reference_ms": 0.2})
    new_ref = LatencyTable(backend="torch", threads=1, batch_size=1, device={"cpu": "x"},
                           settings={"reference_ms": 4.8, "reference_resolution": 224})
    with pytest.raises(LatencyTableError, match=r"reference_resolution: None vs 224"):
        old_ref.merge(new_ref)
    assert len(old_ref.merge(new_ref, force=True)) == 0 and len(new_ref.merge(new_ref)) == 0
    assert len(a.merge(new_ref)) == 1  # a table without a drift reference has no baseline to disagree with


# --- CSV import -----------------------------------------------------------------------------------------------
def test_csv_import(tmp_path: Path, tiny) -> None:
    sigs = list(dict.fromkeys(arch_signatures(tiny)))
    lines = ["signature,mean_ms,std_ms,count"] + [f"{s},{i + 1}.5,0.25,{i + 10}" for i, s in enumerate(sigs)]
    path = tmp_path / "lut.csv"
    path.write_text("\n".join(lines) + "\n")
    table = LatencyTable.from_csv(path, backend="tflite", device={"cpu": "pixel"})
    assert len(table) == len(sigs)
    assert table.entries[sigs[0]] == Entry(ms=1.5, mean_ms=1.5, std_ms=0.25, count=10, source="csv")
    expected = sum(table.entries[s].ms for s in arch_signatures(tiny))
    assert LatencyPredictor(table).predict(tiny)[0] == pytest.approx(expected)

    minimal = tmp_path / "min.csv"
    minimal.write_text("std_ms,signature,mean_ms\n,fc_i256_o10,0.5\n")
    assert LatencyTable.from_csv(minimal, backend="tflite").entries["fc_i256_o10"].std_ms == 0.0


@pytest.mark.parametrize(
    "text,message",
    [
        ("sig,mean_ms,std_ms\nx,1,0\n", "header"),
        ("signature,mean_ms,std_ms,extra\nx,1,0,1\n", "header"),
        ("signature,mean_ms,std_ms\nx,1,0\nx,2,0\n", "duplicate signature 'x'"),
        ("signature,mean_ms,std_ms\nx,-1,0\n", "mean_ms"),
        ("signature,mean_ms,std_ms\nx,fast,0\n", "expected a number"),
        ("signature,mean_ms,std_ms,count\nx,1,0,0\n", "count"),
        ("signature,mean_ms,std_ms\nx,1\n", "expected 3 fields"),
        ("", "empty CSV"),
    ],
)
def test_csv_import_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(LatencyTableError, match=message):
        LatencyTable.from_csv(path, backend="tflite")


# --- predictor ------------------------------------------------------------------------------------------------
def test_predictor_is_the_sum_plus_calibration(tiny) -> None:
    table = synthetic_table(tiny)
    sigs = arch_signatures(tiny)
    total = sum(table.entries[s].ms for s in sigs)
    std = math.sqrt(sum(table.entries[s].std_ms ** 2 for s in sigs))
    mean, spread = LatencyPredictor(table).predict(tiny)
    assert mean == pytest.approx(total) and spread == pytest.approx(std)
    table.calibration = Calibration(scale=2.0, offset_ms=0.5)
    assert LatencyPredictor(table).predict(tiny) == pytest.approx((2.0 * total + 0.5, 2.0 * std))
    table.calibration = Calibration(scale=2.0, offset_ms=0.5, per_part_ms=-0.01)
    expected = 2.0 * total + 0.5 - 0.01 * len(sigs)
    assert LatencyPredictor(table).predict(tiny) == pytest.approx((expected, 2.0 * std))
    assert LatencyPredictor(table, calibrated=False).predict(tiny)[0] == pytest.approx(total)


def test_missing_signature_is_named(tiny) -> None:
    table = synthetic_table(tiny)
    head = arch_signatures(tiny)[-2]
    del table.entries[head]
    with pytest.raises(LatencyTableError, match=head) as error:
        LatencyPredictor(table).predict(tiny)
    assert "--measure-missing" in str(error.value) and "resolutions" not in str(error.value)
    larger = tiny.replace(resolution=tiny.resolution * 2)
    with pytest.raises(LatencyTableError, match=rf"holds resolutions \[{tiny.resolution}\], the architecture is at"):
        LatencyPredictor(table).predict(larger)


def test_predictor_measures_missing_on_the_spot(tiny) -> None:
    table = new_table(FAST)
    mean, std = MeasuringPredictor(LatencyPredictor(table), config=FAST).predict(tiny)
    assert mean > 0 and math.isfinite(std)
    assert table.missing(arch_signatures(tiny)) == []
    assert (mean, std) == lut_sum(table, arch_signatures(tiny))  # measured, then the plain sum


def test_fit_calibration_recovers_scale_and_offset() -> None:
    points = [(f"a{i}", s, 1.25 * s + 0.3) for i, s in enumerate([1.0, 2.0, 4.0, 7.0, 9.0])]
    cal = fit_calibration(points)
    assert cal.scale == pytest.approx(1.25) and cal.offset_ms == pytest.approx(0.3)
    single = fit_calibration([("a", 2.0, 3.0)])
    assert single.scale == pytest.approx(1.5) and single.offset_ms == 0.0
    few = fit_calibration(points[:2])  # too few points for an offset: scale only
    assert few.offset_ms == 0.0 and few.scale > 1.25
    with pytest.raises(LatencyTableError):
        fit_calibration([])


def test_fit_calibration_per_part_term_chosen_by_leave_one_out() -> None:
    rng = random.Random(0)
    parts = [rng.choice([8, 9, 10, 11]) for _ in range(30)]
    summed = [rng.uniform(1.0, 3.0) for _ in range(30)]
    points = [(f"a{i}", s, 0.9 * s + 0.05 - 0.02 * p) for i, (s, p) in enumerate(zip(summed, parts))]
    cal = fit_calibration(points, parts)
    assert cal.model == "scale+offset+parts" and cal.loo_rmspe_pct == pytest.approx(0.0, abs=1e-6)
    assert (cal.scale, cal.offset_ms, cal.per_part_ms) == pytest.approx((0.9, 0.05, -0.02))
    assert cal.apply(2.0, 10) == pytest.approx(0.9 * 2.0 + 0.05 - 0.2)
    # part counts that carry no information (noise only): the simpler model wins
    noisy = [(f"a{i}", s, (1.2 * s + 0.1) * (1 + rng.gauss(0, 0.01))) for i, s in enumerate(summed)]
    plain = fit_calibration(noisy, parts)
    assert plain.per_part_ms == 0.0 and plain.model in ("scale", "scale+offset")
    assert plain.loo_rmspe_pct is not None and 0.3 < plain.loo_rmspe_pct < 3.0
    # a positive per-part term is not physical (parts carry extra call overhead, never less): not used
    positive = [(f"a{i}", s, 0.9 * s + 0.05 + 0.02 * p) for i, (s, p) in enumerate(zip(summed, parts))]
    assert fit_calibration(positive, parts).per_part_ms == 0.0
    # constant part counts cannot be separated from the offset
    assert fit_calibration(points, [9] * 30).per_part_ms == 0.0
    with pytest.raises(LatencyTableError, match="part counts"):
        fit_calibration(points, parts[:3])


# --- measurement ----------------------------------------------------------------------------------------------
class _ThreadProbe(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.get_num_threads())
        return self.conv(x)


def test_measurement_positive_finite_and_respects_threads() -> None:
    before = torch.get_num_threads()
    wanted = 2 if before != 2 else 1
    probe = _ThreadProbe()
    config = MeasureConfig(threads=wanted, warmup=2, repeats=6, clock="wall", min_seconds=0)
    m = measure_module(probe, (1, 3, 8, 8), config, rounds=1)
    assert set(probe.seen) == {wanted}
    assert len(probe.seen) == 2 + 6
    assert torch.get_num_threads() == before
    for value in (m.median_ms, m.mean_ms, m.p10_ms, m.min_ms):
        assert value > 0 and math.isfinite(value)
    assert m.count == 6 and m.std_ms >= 0 and m.iqr_ms >= 0


def test_measure_arch_both_backends(tiny) -> None:
    m = measure_arch(tiny, FAST)  # the one end-to-end path: interleaved rounds, at least one timed run in each
    assert m.value("p10") > 0 and m.count == 20 and m.halves is not None
    assert measure_arch(tiny, FAST, rounds=1).count == 3
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    for precision in ("float32", "int8"):
        config = MeasureConfig(backend="onnxruntime", precision=precision, warmup=1, repeats=3, min_seconds=0)
        m = measure_arch(tiny, config, rounds=2)
        assert m.value("median") > 0 and math.isfinite(m.std_ms)


def test_a_table_times_its_drift_reference_at_the_resolution_of_its_networks(tmp_path: Path) -> None:
    """At its own 32 px the reference read the footprint of 224-px networks beside it as drift (run AG): a new
    table times it at its networks' resolution, keeps that, and refuses measurements that time it elsewhere."""
    from mixnas.evaluators.latency.measure import reference_resolution, reference_spec
    from mixnas.evaluators.latency.profile import check_compatible, load_or_create, table_config

    tiny = resolve_arch("mixnet_tiny")
    big = tiny.replace(resolution=64)
    assert reference_resolution([]) is None and reference_resolution([tiny]) is None
    assert reference_resolution([tiny, big]) == 64
    spec = reference_spec(MeasureConfig(reference_resolution=64))
    assert spec.key == "reference:mixnet_tiny@64" and tuple(spec.input_shape) == (1, 3, 64, 64)
    assert reference_spec(FAST).key == "reference:mixnet_tiny"
    assert "reference_resolution" not in FAST.to_dict()  # tables of 32-px spaces are written as before
    for bad in (0, -3, 5000, 1.5, True, "64"):
        with pytest.raises(LatencyTableError, match="reference_resolution"):
            MeasureConfig(reference_resolution=bad)

    path = tmp_path / "t.json"
    table = load_or_create(path, FAST, archs=[tiny, big])
    assert table.settings["reference_resolution"] == 64 and table.settings["reference_ms"] > 0
    table.save(path)
    assert config_from_table(LatencyTable.load(path)).reference_resolution == 64
    with pytest.raises(LatencyTableError, match="drift reference runs at 64 px, this measurement's at its own px"):
        check_compatible(table, FAST)
    again = load_or_create(path, FAST, archs=[tiny])  # an existing table keeps its reference
    assert table_config(FAST, again).reference_resolution == 64
    check_compatible(again, table_config(FAST, again))


def test_measure_config_validation() -> None:
    with pytest.raises(LatencyTableError, match="backend"):
        MeasureConfig(backend="tflite")
    with pytest.raises(LatencyTableError, match="threads"):
        MeasureConfig(threads=0)
    with pytest.raises(LatencyTableError, match="thread"):
        MeasureConfig(threads=2, clock="thread")
    assert MeasureConfig(threads=2).resolved_clock == "wall"
    assert MeasureConfig().resolved_clock == "thread"
    for bad in (-1.0, float("inf"), "4", True):
        with pytest.raises(LatencyTableError, match="min_seconds"):
            MeasureConfig(min_seconds=bad)


def test_rounds_until_spans_a_minimum_time() -> None:
    assert list(rounds_until(3, 0)) == [0, 1, 2]
    start = time.perf_counter()
    seen = []
    for k in rounds_until(2, 0.05):
        seen.append(k)
        time.sleep(0.005)
    assert time.perf_counter() - start >= 0.05  # the span, not a speed: more rounds ran until it had passed
    assert len(seen) > 2 and seen == list(range(len(seen)))
    with pytest.raises(TimingError, match="rounds"):
        list(rounds_until(0, 1.0))


class _Sleeper(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.002)
        return x


def test_measurement_goes_on_until_the_time_span_has_passed() -> None:
    config = MeasureConfig(warmup=0, repeats=4, clock="wall", min_seconds=0.1)
    m = measure_module(_Sleeper(), (1, 3, 4, 4), config, rounds=2)
    assert m.count > 4 and m.count % 2 == 0  # whole rounds of ceil(4 / 2) timed runs, more than the minimum
    assert m.halves is not None


def test_measurement_summary() -> None:
    m = Measurement.from_samples([4.0, 1.0, 3.0, 2.0, 10.0])
    assert m.median_ms == 3.0 and m.min_ms == 1.0 and m.mean_ms == 4.0
    assert m.p10_ms == pytest.approx(1.4) and m.iqr_ms == pytest.approx(2.0)


def test_a_clock_that_did_not_advance_is_not_a_run() -> None:
    # A VM's thread CPU clock can stand still for a whole run (steal time paid back): 0 ns is not the minimum.
    m = Measurement.from_samples([0.0, 2.0, 3.0, -1.0, 4.0])
    assert m.min_ms == 2.0 and m.count == 3
    with pytest.raises(LatencyTableError, match="none is positive"):
        Measurement.from_samples([0.0, 0.0])
    with pytest.raises(TimingError, match="none is positive"):
        summarize([0.0])


def test_interleaved_rounds_give_halves_for_repeatability() -> None:
    items = [(torch.nn.Conv2d(3, 8, 3), (1, 3, 16, 16)), (torch.nn.Conv2d(3, 16, 5), (1, 3, 16, 16))]
    config = MeasureConfig(warmup=1, repeats=8, clock="wall", min_seconds=0)
    for m in measure_interleaved(items, config, rounds=4):
        assert m.count == 8 and m.halves is not None and all(h > 0 for h in m.halves)
        drifted = replace(m, drift=2.0)
        assert drifted.half_values() == pytest.approx((2 * m.halves[0], 2 * m.halves[1]))
    assert measure_interleaved(items, config, rounds=1)[0].half_values() is None


def test_repeatability_warning_only_for_disagreeing_halves() -> None:
    assert repeatability_warning({}) is None  # one round: no halves
    assert repeatability_warning({"halves_spearman": 0.99, "halves_rmspe": 1.0}) is None
    assert repeatability_warning({"halves_spearman": float("nan"), "halves_rmspe": 0.5}) is None  # constant ranks
    low_rank = repeatability_warning({"halves_spearman": 0.953, "halves_rmspe": 1.0})
    assert low_rank is not None and "0.953" in low_rank and "--rounds" in low_rank
    spread = repeatability_warning({"halves_spearman": 0.995, "halves_rmspe": 4.4})
    assert spread is not None and "4.4%" in spread


# --- profiling ------------------------------------------------------------------------------------------------
def _tiny_archs(n: int, seed: int = 0):
    from mixnas.search_space.spaces import load_space

    space = load_space("tiny")
    rng = np.random.default_rng(seed)
    return [space.decode(space.sample(rng)) for _ in range(n)]


def test_profiling_is_incremental_and_resumes_after_interruption(tmp_path: Path) -> None:
    archs = _tiny_archs(4)
    path = tmp_path / "lut.json"
    table = new_table(FAST)
    wanted = table.missing(s for a in archs for s in arch_signatures(a))

    class Stop(Exception):
        pass

    def interrupt(done: int, total: int, detail: str) -> None:
        raise Stop  # as if killed right after the first chunk was saved

    with pytest.raises(Stop):
        profile_archs(table, archs, FAST, path=path, chunk=1, rounds=1, progress=interrupt)
    saved = LatencyTable.load(path)
    first = set(arch_signatures(archs[0]))
    assert set(saved.entries) == first
    assert all(e.ms > 0 and e.count == 3 for e in saved.entries.values())

    # Resume from the file: only what is missing is measured, and the first entries are kept as they were.
    measured = profile_archs(saved, archs, FAST, path=path, chunk=2, rounds=1)
    assert measured == len(set(wanted) - first)
    final = LatencyTable.load(path)
    assert set(final.entries) == set(wanted)
    assert {s: final.entries[s] for s in first} == {s: saved.entries[s] for s in first}
    assert profile_archs(final, archs, FAST, path=path) == 0
    assert select_contexts(final, archs) == []


def _one_choice_mutants(seed: int, n: int) -> list[Architecture]:
    from mixnas.search_space.spaces import load_space

    space = load_space("tiny")
    rng = np.random.default_rng(seed)
    base = space.sample(rng)
    return [space.decode(base)] + [space.decode(space.mutate(base, rng, n=1)) for _ in range(n)]


class ShiftingTimer:
    """Every part costs a fixed time per signature times a machine speed that changes from one call to the next;
    the reference network never sees the change (the worst case for drift correction by the reference alone)."""

    def __init__(self, speeds: list[float]) -> None:
        self.speeds = iter(speeds)

    @staticmethod
    def cost(key: str) -> float:
        return 0.01 + (sum(map(ord, key)) % 97) / 1000

    def device(self, config: MeasureConfig) -> dict:
        return device_metadata(config)

    def time(self, pipelines, config, *, rounds):
        speed = next(self.speeds)
        out = {}
        for pipeline in pipelines:
            for spec in pipeline:
                ms = 1.0 if spec.key.startswith("reference:") else self.cost(spec.key) * speed
                out[spec.key] = Measurement.from_samples([ms])
        return out, 10.0  # long rounds: chunks keep their size


def test_chunk_drift_is_the_median_over_anchors_else_the_reference() -> None:
    table = LatencyTable("torch", 1, 1, entries={f"s{i}": Entry(ms=2.0 + i, mean_ms=2.0 + i) for i in range(9)})
    measured = {f"s{i}": Measurement.from_samples([(2.0 + i) / (1.5 if i < 6 else 3.0)]) for i in range(9)}
    measured["new"] = Measurement.from_samples([1.0])  # not in the table: not an anchor
    assert chunk_drift(table, measured, 0.9, "min") == pytest.approx(1.5)  # 6 of 9 anchors say 1.5
    few = {k: measured[k] for k in ("s0", "s1", "new")}
    assert chunk_drift(table, few, 0.9, "min") == 0.9


@pytest.mark.parametrize("pool", [False, True])
def test_profiling_rescales_chunks_by_their_anchors(monkeypatch: pytest.MonkeyPatch, pool: bool) -> None:
    # One network, then its one-choice mutants (they share most parts), one network a chunk, the machine speed
    # changing every chunk; the reference does not move. Entries must all be at the first chunk's speed, also
    # when every re-timing of a known part is pooled into its entry.
    archs = _one_choice_mutants(3, 6)
    monkeypatch.setattr(profile_module, "MIN_ANCHORS", 3)
    config = replace(FAST, drift_correction=True)
    speeds = [1.0, 1.0, 1.6, 0.7, 1.3, 2.0, 0.9, 1.1]
    timer = ShiftingTimer(speeds)
    table = new_table(config, timer)
    profile_archs(table, archs, config, chunk=1, rounds=1, timer=timer, pool_contexts=pool)
    ratios = [e.ms / ShiftingTimer.cost(s) for s, e in table.entries.items()]
    assert len(ratios) > len(arch_signatures(archs[0]))
    assert ratios == pytest.approx([1.0] * len(ratios))


class ContextTimer:
    """A part costs a fixed time per signature times a factor of the network it is timed in (its context)."""

    def __init__(self) -> None:
        self.seen: dict[str, list[float]] = {}  # signature -> its time in every network that ran it

    @staticmethod
    def factor(pipeline) -> float:
        return 0.8 + (sum(map(ord, "".join(s.key for s in pipeline))) % 7) / 10

    def device(self, config: MeasureConfig) -> dict:
        return device_metadata(config)

    def time(self, pipelines, config, *, rounds):
        out = {}
        for pipeline in pipelines:
            f = self.factor(pipeline)
            for spec in dict((s.key, s) for s in pipeline).values():  # a repeated signature: one time
                ms = ShiftingTimer.cost(spec.key) * f
                out[spec.key] = Measurement.from_samples([ms])
                self.seen.setdefault(spec.key, []).append(ms)
        return out, 10.0


@pytest.mark.parametrize("pool", [False, True])
def test_profiling_pools_every_context_a_signature_is_timed_in(pool: bool) -> None:
    # Mutants share most parts, so later networks time known signatures again, each in another context.
    archs = _one_choice_mutants(5, 6)
    config = replace(FAST, drift_correction=False)
    timer = ContextTimer()
    table = new_table(config, timer)
    added = profile_archs(table, archs, config, chunk=1, rounds=1, timer=timer, pool_contexts=pool)
    assert added == len(table.entries) == len({s for a in archs for s in arch_signatures(a)})
    several = [s for s, times in timer.seen.items() if len(times) > 2]
    assert several  # the test needs signatures timed in three or more networks
    for sig, entry in table.entries.items():
        times = timer.seen[sig]
        assert entry.ms == pytest.approx(statistics.median(times) if pool else times[0])
        assert entry.count == (len(times) if pool else 1) and entry.source == "measured"
        if pool:
            assert entry.mean_ms == pytest.approx(sum(times) / len(times))


def test_pooling_leaves_entries_that_were_not_measured_alone() -> None:
    table = LatencyTable("torch", 1, 1, entries={"csv": Entry(ms=2.0, mean_ms=2.0, source="csv"),
                                                 "old": Entry(ms=2.0, mean_ms=2.0)})
    measured = {k: Measurement.from_samples([1.0]) for k in ("csv", "old", "new")}
    assert store_measured(table, measured, 2.0, None, "min", pool=True) == 1  # drift 2: "old" timed at 2.0 again
    assert table.entries["csv"] == Entry(ms=2.0, mean_ms=2.0, source="csv")
    assert table.entries["old"].ms == 2.0 and table.entries["old"].count == 2
    assert table.entries["old"].timings == (2.0, 2.0) and table.entries["old"].source == "measured"
    assert table.entries["new"] == Entry(ms=2.0, mean_ms=2.0, count=1)  # one context: no timings kept
    store_measured(table, {"old": Measurement.from_samples([4.0])}, 1.0, None, "min", pool=True)
    assert table.entries["old"].ms == 2.0 and table.entries["old"].timings == (2.0, 2.0, 4.0)  # median
    store_measured(table, {"old": Measurement.from_samples([9.0])}, 1.0, None, "min")  # not pooling: kept
    assert table.entries["old"].ms == 2.0 and table.entries["old"].count == 3


def test_a_resumed_profile_pools_with_the_contexts_timed_before(tmp_path: Path) -> None:
    """The timings are in the file: a profile that starts again from it takes the median over all contexts."""
    path = tmp_path / "lut.json"
    table = LatencyTable("torch", 1, 1)
    for ms in (1.0, 5.0):
        store_measured(table, {"fc_i8_o2": Measurement.from_samples([ms])}, 1.0, None, "min", pool=True)
    table.save(path)
    table = LatencyTable.load(path)  # as a resumed (or later) profile finds it
    store_measured(table, {"fc_i8_o2": Measurement.from_samples([4.0])}, 1.0, None, "min", pool=True)
    assert table.entries["fc_i8_o2"].timings == (1.0, 5.0, 4.0) and table.entries["fc_i8_o2"].ms == 4.0


def test_calibration_networks_are_the_last_sampled() -> None:
    archs = _tiny_archs(5)
    assert choose_calibration(archs, 2) == archs[3:]
    assert choose_calibration(archs, 0) == [] and choose_calibration(archs, 9) == archs


def test_profiling_chunks_grow_to_fill_the_time_span() -> None:
    archs = _tiny_archs(4)
    config = replace(FAST, min_seconds=0.3, drift_correction=False)
    table = new_table(config)
    contexts = len(select_contexts(table, archs))
    assert contexts > 2
    details: list[str] = []
    profile_archs(table, archs, config, chunk=1, rounds=1, progress=lambda d, t, detail: details.append(detail))
    # The first chunk holds one network; its one round took far less than 0.3 s, so the next chunk grows to the
    # most allowed (4 x chunk) instead of paying the time span once per network.
    assert details[0].startswith("1/") and details[1].startswith(f"{min(5, contexts)}/")
    assert set(table.entries) == {s for a in archs for s in arch_signatures(a)}


def test_config_from_table_keeps_the_time_span() -> None:
    table = new_table(replace(FAST, drift_correction=False, min_seconds=1.5))
    assert config_from_table(table).min_seconds == 1.5
    del table.settings["min_seconds"]  # tables written before the setting existed
    assert config_from_table(table).min_seconds == MeasureConfig().min_seconds


def test_profiling_refuses_a_table_of_other_conditions(tiny) -> None:
    table = synthetic_table(tiny, cpu="another cpu")
    with pytest.raises(LatencyTableError, match="other conditions"):
        profile_archs(table, [tiny.replace(resolution=64)], FAST)


# --- validation metrics ---------------------------------------------------------------------------------------
def test_rank_correlations_match_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    x = rng.integers(0, 8, 30).astype(float).tolist()  # with ties
    y = (np.array(x) + rng.normal(0, 2, 30)).round().tolist()
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert kendall(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)
    assert rankdata([3.0, 1.0, 3.0]) == [2.5, 1.0, 2.5]


def test_error_metrics_hand_case() -> None:
    m = error_metrics([1.0, 2.06, 2.73, 4.0], [1.0, 2.0, 3.0, 5.0])  # errors 0%, +3%, -9%, -20%
    assert m["n"] == 4
    assert m["within_5pct"] == 0.5
    assert m["within_10pct"] == 0.75
    assert m["rmspe"] == pytest.approx(100 * math.sqrt((0 + 0.03**2 + 0.09**2 + 0.2**2) / 4))
    assert m["rmse_ms"] == pytest.approx(math.sqrt((0 + 0.06**2 + 0.27**2 + 1.0) / 4))
    assert m["spearman"] == pytest.approx(1.0) and m["kendall"] == pytest.approx(1.0)


# --- command line ---------------------------------------------------------------------------------------------
FAST_ARGS = ["--warmup", "1", "--repeats", "3", "--rounds", "1", "--min-seconds", "0"]


def test_a_table_profiled_above_its_references_resolution_warns_that_its_milliseconds_are_low(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from mixnas.evaluators.latency.predictor import reference_warning

    def table(stem: str, **settings: object) -> LatencyTable:
        t = LatencyTable("onnxruntime", 1, 1, device={"cpu": "x"},
                         settings={"clock": "thread", "reference_ms": 0.2, "folded_batch_norms": True, **settings})
        t.entries[stem] = Entry(ms=1.0, mean_ms=1.0, std_ms=0.0, count=1)
        return t

    old = table("stem_r224_i3_o16_s2")
    assert "ran at 32 px beside networks of up to 224 px" in reference_warning(old)
    assert reference_warning(table("stem_r224_i3_o16_s2", reference_resolution=224)) is None
    assert reference_warning(table("stem_r32_i3_o16_s2")) is None
    assert reference_warning(table("stem_r224_i3_o16_s2", reference_arch="mixnet_tiny@224")) is None  # a phone's
    old.save(tmp_path / "old.json")
    with caplog.at_level(logging.WARNING):
        load_predictor(tmp_path / "old.json")
    assert "profile it again for a latency target in milliseconds" in caplog.text


def test_cli_profile_times_the_reference_at_the_profiled_resolution(tmp_path: Path) -> None:
    lut = str(tmp_path / "lut.json")
    args = ["latency", "profile", "--space", "tiny", "-n", "2", "--calibrate", "0", "--out", lut, *FAST_ARGS]
    assert main([*args, "--resolution", "48"]) == 0
    assert LatencyTable.load(lut).settings["reference_resolution"] == 48
    assert main([*args, "--seed", "5"]) == 0  # more of it at 32 px: the table keeps its reference
    assert LatencyTable.load(lut).settings["reference_resolution"] == 48


def test_cli_profile_predict_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lut = str(tmp_path / "lut.json")
    assert main(["latency", "profile", "--space", "tiny", "-n", "3", "--calibrate", "2", "--out", lut, *FAST_ARGS]) == 0
    table = LatencyTable.load(lut)
    assert table.calibration is not None and len(table.calibration.points) == 2
    assert [Architecture.from_dict(a).id for a in table.calibration.archs] == [p[0] for p in table.calibration.points]
    sampled = sample_archs("tiny", 3, PROFILE_SEED)[2]  # the profile's own sample
    assert [p[0] for p in table.calibration.points] == [a.id for a in choose_calibration(sampled, 2)]
    assert table.settings["clock"] == "thread" and table.settings["statistic"] == "min"
    assert table.settings["min_seconds"] == 0
    capsys.readouterr()

    assert main(["latency", "predict", "--lut", lut, "--json", "mixnet_tiny", "--measure-missing"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["results"][0]["mean_ms"] > 0

    plot = tmp_path / "scatter.png"
    args = ["latency", "validate", "--space", "tiny", "--lut", lut, "-n", "3", "--json", "--plot", str(plot)]
    assert main(args + ["--chunk", "0"]) == 2  # out of its range: refused while parsing, before any work
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.startswith("mixnas: error: argument --chunk: expected an integer in 1..10000, got '0'")
    lacked = len(LatencyTable.load(lut))
    # The signatures the table lacks are timed in other networks, two to a measurement (--chunk).
    assert main(args + ["--repeats", "4", "--warmup", "1", "--rounds", "2", "--chunk", "2"]) == 0
    report = json.loads(capsys.readouterr().out)  # exactly one JSON document
    keys = ("within_10pct", "within_5pct", "spearman", "rmspe", "n", "kendall", "macs_spearman", "halves_spearman")
    for key in keys:
        assert key in report
    assert report["n"] == 3 and plot.stat().st_size > 0
    assert report["drift_reference"] == "2 calibration networks"
    assert report["min_seconds"] == 0  # the table's setting, unless --min-seconds overrides it
    assert report["missing_signatures"] > 0 and len(LatencyTable.load(lut)) == lacked + report["missing_signatures"]
    assert isinstance(report["warnings"], list)  # the repeatability warning, when the halves disagree
    calibration_ids = {p[0] for p in table.calibration.points}
    assert not calibration_ids & {r["arch_id"] for r in report["architectures"]}


def test_cli_import_merge_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("signature,mean_ms,std_ms\nfc_i256_o10,0.5,0.1\n")
    a, b, merged = (str(tmp_path / f"{n}.json") for n in ("a", "b", "m"))
    assert main(["latency", "import-csv", str(csv_path), "--out", a, "--backend", "tflite", "--cpu", "pixel"]) == 0
    csv_path.write_text("signature,mean_ms,std_ms,count\nstem_r32_i3_o16_s2,0.25,0,5\n")
    assert main(["latency", "import-csv", str(csv_path), "--out", b, "--backend", "tflite", "--cpu", "pixel"]) == 0
    assert main(["latency", "merge", a, b, "--out", merged]) == 0
    assert len(LatencyTable.load(merged)) == 2
    capsys.readouterr()
    assert main(["latency", "predict", "--lut", merged, "mixnet_tiny"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mixnas: error:") and "signature" in err and len(err.strip().splitlines()) == 1
    # A table of another device cannot be validated (or extended) by measuring here.
    assert main(["latency", "validate", "--space", "tiny", "--lut", merged, "-n", "2"]) == 2
    assert "backend" in capsys.readouterr().err  # tflite cannot be measured here


# --- coverage of a space and measuring what a search meets -------------------------------------------------------
MICRO_SPACE = {
    "name": "micro", "kind": "stages",
    "globals": {"resolution": [16, 24], "stem_width": [8, 16], "head_width": 32, "num_classes": 4},
    "layer": {"kernel_groups": 1, "expand_ratio": 3, "se_ratio": 0, "swish": False},
    "stages": [
        {"stride": 1, "filters": 8, "repeats": 1, "kernel_groups": [1, 2]},
        {"stride": 2, "filters": 16, "repeats": 2, "repeats_delta": [-1, 0], "widths": [8, 16],
         "swish": [False, True]},
        {"stride": 2, "filters": 16, "repeats": 2, "granularity": "split", "width_multiplier": [1.0, 1.5],
         "rest": {"se_ratio": [0, 0.25]}},
        {"stride": 1, "filters": 24, "repeats": 2, "granularity": "layer", "expand_ratio": [3, 6]},
    ],
}


def test_space_signatures_are_exactly_those_of_every_member() -> None:
    import itertools

    from mixnas.evaluators.latency.signatures import space_signatures
    from mixnas.search_space.spaces import load_space

    space = load_space(MICRO_SPACE)  # every granularity, global choices, widths and width multipliers
    every = set()
    for encoding in itertools.product(*(range(d.size) for d in space.dimensions)):  # all 1024 members
        every |= set(arch_signatures(space.decode(encoding)))
    found = space_signatures(space)
    assert set(found.signatures) == every and len(found) == len(every)
    assert {s for a in found.contexts for s in arch_signatures(a)} >= every
    assert len(found.contexts) < found.combinations  # merged: one network holds several choices
    with pytest.raises(LatencyTableError, match=rf"decoding {found.combinations} networks, above the limit of 10"):
        space_signatures(space, limit=10)


def test_cli_profile_exhaustive_then_coverage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space = dict(MICRO_SPACE, globals=dict(MICRO_SPACE["globals"], resolution=16, stem_width=8))
    space_file = tmp_path / "micro.yaml"
    space_file.write_text(json.dumps(space))  # JSON is YAML
    lut = str(tmp_path / "lut.json")
    args = ["latency", "profile", "--space", str(space_file), "--exhaustive", "--calibrate", "0", "--out", lut]
    assert main(args + FAST_ARGS + ["--no-drift-correction"]) == 0
    out = capsys.readouterr().out
    total = len(LatencyTable.load(lut))
    assert f"{lut} holds {total} of {total} signatures the space 'micro' can produce" in out
    assert main(["latency", "coverage", "--space", str(space_file), "--lut", lut, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["held"] == report["signatures"] == total and report["missing"] == []
    assert main(["latency", "coverage", "--space", "tiny", "--lut", lut]) == 0
    assert "holds 0 of 2093 signatures the space 'tiny' can produce" in capsys.readouterr().out


def test_search_predictor_measures_missing_signatures_into_the_file(
    tmp_path: Path, tiny, caplog: pytest.LogCaptureFixture
) -> None:
    config = replace(FAST, drift_correction=False)
    path = tmp_path / "lut.json"
    table = new_table(config)
    sigs = list(dict.fromkeys(arch_signatures(tiny)))
    profile_archs(table, [tiny], config, rounds=1)
    for sig in sigs[:3]:
        del table.entries[sig]
    table.save(path)

    strict = load_predictor(path)
    assert isinstance(strict, LatencyPredictor)
    with pytest.raises(LatencyTableError, match=rf"latency table {path} has no entry for signature .* \(and 2 more\)"):
        strict.predict(tiny)

    with caplog.at_level("INFO", logger="mixnas.evaluators.latency.predictor"):
        mean, _ = load_predictor(path, measure_missing=True, config=config).predict(tiny)
    assert mean > 0
    assert f"latency: measured 3 signature(s) missing from {path} and added them" in caplog.text
    assert LatencyTable.load(path).missing(sigs) == []  # in the file, for the other workers and the next run

    # a worker whose copy is older takes what another one added instead of measuring it again
    caplog.clear()
    assert table.missing(sigs) == sigs[:3]  # the copy read before the others measured
    with caplog.at_level("INFO", logger="mixnas.evaluators.latency.predictor"):
        MeasuringPredictor(LatencyPredictor(table, path=path), config=config).predict(tiny)
    assert "were added to" in caplog.text and "by another process" in caplog.text


# --- the package's own layering -------------------------------------------------------------------------------
# Each module may import only modules of a lower rank (function-level imports included): the timing rules at the
# bottom (the agent bundles them), the backends on the agent's ONNX Runtime session, the table's sum below
# profiling, and the predictors (the pure sum and the one that measures what is missing) above it.
LATENCY_RANKS = {"timing": -3, "agent": -2, "backends": -1, "signatures": 0, "measure": 0, "lut": 1, "remote": 1,
                 "sampling": 1, "profile": 2, "predictor": 3, "validate": 4, "offline": 4, "phone_programs": 1, "phone": 5}


def test_latency_modules_import_one_way() -> None:
    import ast

    import mixnas.evaluators.latency as package

    folder = Path(package.__file__).parent
    assert {p.stem for p in folder.glob("*.py")} - {"__init__"} == set(LATENCY_RANKS)
    prefix = "mixnas.evaluators.latency."
    wrong = []
    for name, rank in LATENCY_RANKS.items():
        for node in ast.walk(ast.parse((folder / f"{name}.py").read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for imported in (n[len(prefix):].split(".")[0] for n in names if n.startswith(prefix)):
                if LATENCY_RANKS[imported] >= rank:
                    wrong.append(f"{name} imports {imported}")
    assert not wrong, wrong


def test_a_search_trial_on_a_lut_that_lacks_signatures_measures_them(tmp_path: Path) -> None:
    # The documented path: a LUT profiled on a sample, then a search meets a network with layers it lacks.
    from mixnas.launch.config import config_from_dict
    from mixnas.launch.trial import TrialEvaluator
    from mixnas.search_space.spaces import load_space

    space = load_space("tiny")
    encoding = (0,) * len(space.dimensions)
    arch = space.decode(encoding)
    config = replace(FAST, drift_correction=False)
    table = new_table(config)
    profile_archs(table, [arch], config, rounds=1)
    sigs = list(dict.fromkeys(arch_signatures(arch)))
    for sig in sigs[1:3]:
        del table.entries[sig]
    path = tmp_path / "lut.json"
    table.save(path)
    data = {
        "name": "lut", "search_space": "tiny", "controller": {"type": "random"},
        "evaluator": {"type": "proxy", "data": "digits", "subset": {"images_per_class": 10}, "budget": {"steps": 1},
                      "training": {"batch_size": 16, "threads": 1}},
        "latency": {"type": "lut", "lut": str(path)},
        "reward": {"type": "metric", "metric": "top1"}, "execution": {"trials": 1},
    }
    outcome = TrialEvaluator(config_from_dict(data, source="lut.yaml", base_dir=tmp_path)).run(encoding, 0)
    assert outcome.status == "ok", outcome.reason
    assert outcome.metrics["latency_ms"] > 0
    assert LatencyTable.load(path).missing(sigs) == []


def test_a_local_timer_never_holds_more_prepared_stages_than_its_limit() -> None:
    # live runtime sessions beyond the bound made a 2,000-network profile time its parts up to 3% differently
    from mixnas.evaluators.latency.measure import LocalTimer, StageSpec

    built: list[str] = []

    def spec(key: str) -> StageSpec:
        def build() -> torch.nn.Module:
            built.append(key)
            return torch.nn.Conv2d(3, 3, 1)

        return StageSpec(key, build, (1, 3, 4, 4))

    sizes: list[int] = []

    class Watched(OrderedDict):  # records its size after every insertion
        def __setitem__(self, key, value):  # noqa: ANN001
            super().__setitem__(key, value)
            sizes.append(len(self))

    timer = LocalTimer(limit=2)
    timer.stages = Watched()
    pipeline = [spec("a"), spec("b"), spec("c"), spec("a"), spec("d")]  # longer than the limit, "a" twice
    measured, _ = timer.time([pipeline], MeasureConfig(warmup=0, repeats=2, min_seconds=0), rounds=1)
    assert set(measured) == {"a", "b", "c", "d"}
    assert measured["a"].count == 4  # one stage for both places
    assert max(sizes) <= 3 and len(timer.stages) <= 2  # at most one over the limit, for an instant
    assert built.count("a") == 1


# --- a table is checked whole before the first trial --------------------------------------------------------------
def test_a_table_with_an_absurd_entry_a_foreign_key_or_an_unknown_model_is_refused_on_load(tmp_path: Path, tiny) -> None:
    base = synthetic_table(tiny).to_dict()
    sig = next(iter(base["entries"]))
    cases = [
        ({**base, "entries": {**base["entries"], sig: {**base["entries"][sig], "ms": 1e308}}},
         re.escape(f"entries[{sig!r}].ms: expected a finite number > 0 and at most 1e+06, got 1e+308")),
        ({**base, "entries": {**base["entries"], "conv3x3": base["entries"][sig]}},
         r"entries\['conv3x3'\]: not a layer signature of this mixnas"),
        ({**base, "calibration": {"scale": 1.0, "offset_ms": 0.0, "points": [], "model": "cubic"}},
         r"calibration\.model: expected one of \['scale', 'scale\+offset'"),
    ]
    for data, message in cases:
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(data))
        with pytest.raises(LatencyTableError, match=message):
            LatencyTable.load(path)


def test_a_table_this_installation_cannot_extend_is_refused_before_the_first_trial(tmp_path: Path, tiny) -> None:
    from mixnas.launch.config import check_files, config_from_dict

    path = tmp_path / "phone.json"
    synthetic_table(tiny, backend="tflite").save(path)  # e.g. an import-csv of a phone's measurements
    data = {
        "name": "lut", "search_space": "tiny", "controller": {"type": "random"},
        "evaluator": {"type": "proxy", "data": "digits"}, "latency": {"type": "lut", "lut": str(path)},
        "reward": {"type": "metric", "metric": "top1"}, "execution": {"trials": 1},
    }
    with pytest.raises(ConfigError, match=r"latency\.lut: lacks \d+ of the signatures this space can produce, and this "
                                          r"installation cannot measure them \(.*tflite.*\); fill the table on its "
                                          r"device \(mixnas latency profile --space SPACE --exhaustive"):
        check_files(config_from_dict(data, source="x.yaml"))
    data["latency"]["options"] = {"measure_missing": False}  # then such trials fail with their reason
    check_files(config_from_dict(data, source="x.yaml"))


class AgingTimer:
    """Stages first prepared in a later call run slower (by 10% a call) and keep that speed: an int8 ONNX Runtime
    session loaded after many others runs slower than one loaded at the start (docs/latency.md, run AE)."""

    def __init__(self) -> None:
        self.calls = 0
        self.factor: dict[str, float] = {}  # stage key -> its speed factor, fixed when first prepared
        self.keys: list[list[str]] = []

    @staticmethod
    def base(key: str) -> float:
        return 1.0 + (sum(map(ord, key.split(":", 1)[-1])) % 11) / 10  # by architecture id, not by key

    def time(self, pipelines, config, *, rounds):
        keys = [s.key for p in pipelines for s in p]
        self.keys.append(keys)
        for k in keys:
            self.factor.setdefault(k, 1.0 + 0.1 * self.calls)
        self.calls += 1
        return {k: Measurement.from_samples([self.base(k) * self.factor[k]]) for k in keys}, 1.0


def test_drift_references_are_prepared_again_beside_every_chunk_they_correct() -> None:
    from mixnas.evaluators.latency.measure import measure_archs

    archs = _tiny_archs(9)
    references = [(a, AgingTimer.base(f"x:{a.id}")) for a in archs[6:]]  # measured when the process was new
    timer = AgingTimer()
    measured = measure_archs(archs[:6], FAST, chunk=2, references=references, timer=timer)
    assert len(timer.keys) == 3
    drift_keys = [{k for k in call if k.startswith("drift")} for call in timer.keys]
    assert all(len(k) == 3 for k in drift_keys) and not drift_keys[0] & drift_keys[1]  # new stages every chunk
    for arch, m in zip(archs[:6], measured):  # aged like its references, so corrected back to the start
        assert m.value("min") == pytest.approx(AgingTimer.base(f"x:{arch.id}"))


needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="a fresh process per measurement needs os.fork")


@needs_fork
def test_work_in_a_fresh_process_returns_its_result_and_leaves_this_process_as_it_was() -> None:
    from mixnas.evaluators.latency.timing import FreshProcessError, in_fresh_process

    state = {"sessions": 0}

    def work() -> dict:
        state["sessions"] += 5  # what a measurement loads stays in its process
        return {"pid": os.getpid(), "sessions": state["sessions"], "x": [0.1, 1e-7]}

    first, second = in_fresh_process(work), in_fresh_process(work)
    assert first["pid"] != os.getpid() and second["pid"] not in (os.getpid(), first["pid"])
    assert first["sessions"] == second["sessions"] == 5 and state["sessions"] == 0
    assert first["x"] == [0.1, 1e-7]  # floats come back exactly

    def refuse() -> None:
        raise TimingError("rounds: expected an integer in 1..100000, got 0\nsecond line")

    with pytest.raises(FreshProcessError) as err:
        in_fresh_process(refuse)
    assert (err.value.kind, err.value.message) == ("TimingError", "rounds: expected an integer in 1..100000, got 0")

    def crash() -> None:
        os.kill(os.getpid(), signal.SIGKILL)  # a runtime that dies under the measurement

    with pytest.raises(FreshProcessError, match="the measuring process was killed by SIGKILL"):
        in_fresh_process(crash)
    assert in_fresh_process(lambda: 7) == 7  # and this process goes on
    with pytest.raises(FreshProcessError, match="is not JSON serializable"):
        in_fresh_process(lambda: object())  # a result that cannot come back is an error, not a silent crash

    read_end, write_end = os.pipe()  # a descriptor the child must not hold (the agent's socket, say)
    try:
        assert in_fresh_process(lambda: os.fstat(write_end) and "open") == "open"
        with pytest.raises(FreshProcessError, match="Bad file descriptor"):
            in_fresh_process(lambda: os.fstat(write_end), close_in_child=(write_end,))
        os.fstat(write_end)  # still open here
    finally:
        os.close(read_end)
        os.close(write_end)


def _pid_recording_load(monkeypatch: pytest.MonkeyPatch, file: Path) -> None:
    """Make the onnxruntime backend note in ``file`` the process that loads (``load <pid>``) and converts
    (``convert <pid>``) each of its models."""
    from mixnas.evaluators.latency import backends

    real = backends.BACKENDS["onnxruntime"]

    def note(what: str) -> None:
        with open(file, "a", encoding="utf-8") as fh:
            fh.write(f"{what} {os.getpid()}\n")

    def load(model, config):  # noqa: ANN001
        note("load")
        return real.load(model, config)

    def convert(module, shape, config, calibration):  # noqa: ANN001
        note("convert")
        return real.convert(module, shape, config, calibration)

    monkeypatch.setitem(backends.BACKENDS, "onnxruntime", replace(real, load=load, convert=convert))


def _pids(file: Path, what: str) -> list[str]:
    return [line.split()[1] for line in file.read_text().splitlines() if line.startswith(what)]


@needs_fork
def test_a_local_timer_loads_and_times_converted_models_in_a_fresh_process_per_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # sessions loaded late in a long process run slower (docs/latency.md, run AF): every call starts anew
    from mixnas.evaluators.latency.measure import LocalTimer

    pids = tmp_path / "pids"
    _pid_recording_load(monkeypatch, pids)
    archs = _tiny_archs(2)
    config = replace(FAST, backend="onnxruntime")
    timer = LocalTimer()
    assert timer.fresh_process
    for arch in archs:
        measured, _ = timer.time([[network_spec(arch, 1)]], config, rounds=2)
        assert measured[f"net:{arch.id}"].value("min") > 0
    loaders = _pids(pids, "load")
    assert len(loaders) == 2 and len(set(loaders)) == 2 and str(os.getpid()) not in loaders
    assert _pids(pids, "convert") == loaders  # ONNX Runtime converts in the child too
    pids.unlink()
    in_place, _ = LocalTimer(fresh_process=False).time([[network_spec(archs[0], 1)]], config, rounds=2)
    assert _pids(pids, "load") == [str(os.getpid())] and in_place[f"net:{archs[0].id}"].value("min") > 0
    pids.unlink()
    # a backend whose converter is not safe in a forked child (litert-torch's thread pool) converts here
    from mixnas.evaluators.latency import backends

    recording = backends.BACKENDS["onnxruntime"]
    monkeypatch.setitem(backends.BACKENDS, "onnxruntime", replace(recording, converts_in_child=False))
    measured, _ = LocalTimer().time([[network_spec(archs[1], 1)]], config, rounds=2)
    assert _pids(pids, "convert") == [str(os.getpid())] and _pids(pids, "load") != [str(os.getpid())]
    assert measured[f"net:{archs[1].id}"].value("min") > 0


@needs_fork
def test_a_timer_that_converts_here_converts_each_part_once_across_its_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ExecuTorch and LiteRT convert in this process, seconds a part: the chunks of a profile or a validation
    convert a part met in several networks once (``measure.ConvertedModels``), not once per chunk."""
    from mixnas.evaluators.latency import backends
    from mixnas.evaluators.latency.measure import LocalTimer
    from mixnas.evaluators.latency.profile import context_pipeline

    pids = tmp_path / "pids"
    _pid_recording_load(monkeypatch, pids)
    monkeypatch.setitem(backends.BACKENDS, "onnxruntime",
                        replace(backends.BACKENDS["onnxruntime"], converts_in_child=False))
    archs = _tiny_archs(3)
    config = replace(FAST, backend="onnxruntime", precision="int8")
    timer = LocalTimer()
    parts = [context_pipeline(a, 1) for a in archs]
    first, _ = timer.time(parts[:2], config, rounds=1)
    assert len(_pids(pids, "convert")) == len(first)  # each distinct part once
    pids.unlink()
    again, _ = timer.time(parts[1:], config, rounds=1)  # the second network's parts are kept
    new = {s.key for s in parts[2]} - {s.key for p in parts[:2] for s in p}
    assert len(_pids(pids, "convert")) == len(new) and set(again) == {s.key for p in parts[1:] for s in p}
    pids.unlink()
    timer.time(parts[1:], replace(config, precision="float32"), rounds=1)  # another config: converted anew
    assert len(_pids(pids, "convert")) == len({s.key for p in parts[1:] for s in p})
    pids.unlink()
    small = LocalTimer(cache_bytes=0)  # nothing kept
    small.time(parts[:1], config, rounds=1)
    small.time(parts[:1], config, rounds=1)
    assert len(_pids(pids, "convert")) == 2 * len({s.key for s in parts[0]})


@needs_fork
def test_a_model_that_cannot_be_loaded_in_the_fresh_process_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from mixnas.evaluators.latency import backends
    from mixnas.evaluators.latency.measure import LocalTimer

    def load(model, config):  # noqa: ANN001
        raise LatencyTableError("onnxruntime cannot load the model: (INVALID_GRAPH) a test")

    monkeypatch.setitem(backends.BACKENDS, "onnxruntime", replace(backends.BACKENDS["onnxruntime"], load=load))
    with pytest.raises(LatencyTableError, match=r"^onnxruntime cannot load the model: \(INVALID_GRAPH\) a test$"):
        LocalTimer().time([[network_spec(_tiny_archs(1)[0], 1)]], replace(FAST, backend="onnxruntime"), rounds=1)


def test_a_validation_times_at_most_ten_calibration_networks_evenly_spaced_as_references() -> None:
    from mixnas.evaluators.latency.validate import DRIFT_REFERENCES, calibration_references

    archs = _tiny_archs(30)
    points = tuple((a.id, 1.0, float(i + 1)) for i, a in enumerate(archs))
    table = LatencyTable("torch", 1, 1, calibration=Calibration(scale=1.0, offset_ms=0.0, points=points,
                                                                  archs=tuple(a.to_dict() for a in archs)))
    refs = calibration_references(table)
    assert len(refs) == DRIFT_REFERENCES == 10
    assert [ms for _, ms in refs] == [1.0, 4.0, 7.0, 11.0, 14.0, 17.0, 20.0, 24.0, 27.0, 30.0]
    assert refs[0][0].id == archs[0].id and refs[-1][0].id == archs[-1].id
    assert len(calibration_references(table, limit=40)) == 30

"""The phone path: benchmark programs' outputs parsed, the export folder's script run, the table imported.

No phone was available to these tests. The parsers are tested on outputs in the format each program's own source
prints (the file and version are cited in each test); ``benchmark_litert_model.py``'s output below was recorded
from a real run here. The export, the script and the import run end to end with stand-ins only where a phone
would be: a shell program that prints ``benchmark_model``'s format, and a shell ``adb`` that runs ``adb shell``
commands on this machine (so ``adb push``, ``adb shell`` and ``adb logcat`` are exercised as a phone sees them).
The real programs, converters and ``.tflite`` files run in ``tests/test_litert.py`` (with the litert extra).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from mixnas.errors import LatencyTableError
from mixnas.evaluators.latency import phone
from mixnas.evaluators.latency.lut import LatencyTable
from mixnas.evaluators.latency.measure import MeasureConfig
from mixnas.evaluators.latency.phone import export_phone, import_phone
from mixnas.evaluators.latency.phone_programs import (
    get_program,
    parse_benchmark_litert_model,
    parse_benchmark_model,
    parse_executor_runner,
)
from mixnas.evaluators.latency.sampling import sample_archs
from mixnas.launch.cli import main

# ExecuTorch v1.4.1, examples/portable/executor_runner/executor_runner.cpp: ET_LOG(Info, "Iteration %" PRIu32 " of
# %" PRIu32 ": %f ms", ...) per execution and "Model executed successfully %u time(s) in %f ms." at the end; the
# posix PAL (runtime/platform/default/posix.cpp) prefixes "%c %02u:%02u:%02u.%06lu executorch:%s:%zu] ".
EXECUTOR_RUNNER_STDERR = """\
I 00:00:00.000512 executorch:executor_runner.cpp:476] Model file model.pte is loaded.
I 00:00:00.000530 executorch:executor_runner.cpp:486] Using method forward
I 00:00:00.001873 executorch:executor_runner.cpp:626] Model loaded in 1.321000 ms.
I 00:00:00.004101 executorch:executor_runner.cpp:764] Iteration 1 of 5: 2.201000 ms
I 00:00:00.005302 executorch:executor_runner.cpp:764] Iteration 2 of 5: 1.190000 ms
I 00:00:00.006490 executorch:executor_runner.cpp:764] Iteration 3 of 5: 1.170000 ms
I 00:00:00.007688 executorch:executor_runner.cpp:764] Iteration 4 of 5: 1.180000 ms
I 00:00:00.008900 executorch:executor_runner.cpp:764] Iteration 5 of 5: 1.210000 ms
I 00:00:00.008911 executorch:executor_runner.cpp:790] Model executed successfully 5 time(s) in 6.951000 ms.
I 00:00:00.008915 executorch:executor_runner.cpp:799] 1 outputs:
"""
# The same log on Android, where runtime/platform/default/android.cpp sends it to logcat (tag ExecuTorch); as
# `adb logcat -d -s ExecuTorch:I` prints it.
EXECUTOR_RUNNER_LOGCAT = """\
--------- beginning of main
12-06 11:40:00.101  4242  4242 I ExecuTorch: Model file /data/local/tmp/mixnas/models/00001.pte is loaded.
12-06 11:40:00.104  4242  4242 I ExecuTorch: Iteration 1 of 3: 0.912000 ms
12-06 11:40:00.105  4242  4242 I ExecuTorch: Iteration 2 of 3: 0.456000 ms
12-06 11:40:00.106  4242  4242 I ExecuTorch: Iteration 3 of 3: 0.444000 ms
12-06 11:40:00.106  4242  4242 I ExecuTorch: Model executed successfully 3 time(s) in 1.812000 ms.
"""
# google-ai-edge/LiteRT tflite/tools/benchmark/benchmark_model.cc (commit 7d88950e): Run() logs "Running benchmark
# for at least ..." then the StatWithPercentiles<int64_t> line of xla/tsl/util/stats_calculator.h, once for the
# warm-up and once for the timed runs; OnBenchmarkEnd logs "Inference timings in us: ...". TFLITE_LOG(INFO)
# prefixes "INFO: ".
BENCHMARK_MODEL = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Min num runs: [50]
INFO: Num threads: [1]
INFO: Graph: [/data/local/tmp/mixnas/models/00003.tflite]
INFO: Loaded model /data/local/tmp/mixnas/models/00003.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: The input model file size (MB): 0.045660
INFO: Initialized session in 3.108ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=2103 first=612 curr=236 min=228 max=612 avg=237.6 std=11 p5=230 median=236 p95=249

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=4211 first=240 curr=235 min=227 max=402 avg=236.93 std=7 p5=230 median=235 p95=247

INFO: Inference timings in us: Init: 3108, First inference: 612, Warmup (avg): 237.6, Inference (avg): 236.93
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the \
actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=3.04688 overall=3.55469
"""
BENCHMARK_MODEL_ALL_SAME = """\
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=8 curr=12(all same) p5=12 median=12 p95=12
INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=50 curr=12(all same) p5=12 median=12 p95=12
INFO: Inference timings in us: Init: 900, First inference: 12, Warmup (avg): 12, Inference (avg): 12
"""
# ai-edge-litert 2.3.0, ai_edge_litert/tools/benchmark_litert_model.py lines 453-471, recorded from a real run of
# `litert-benchmark --model models/00012.tflite --num_threads 1 --warmup_runs 5 --num_runs 50` here (log lines cut).
LITERT_PYTHON = """\
2026-12-06 11:34:44 INFO benchmark_litert_model: Running 5 warmup iterations...
2026-12-06 11:34:44 INFO benchmark_litert_model: Running 50 benchmark iterations...

========================================
 BENCHMARK RESULTS
========================================
Model initialization:  1.11 ms
Warmup (first):        0.98 ms
Warmup (avg):          0.43 ms (5 runs)
Inference (avg):       0.31 ms (50 runs)
Inference (min):       0.29 ms
Inference (max):       0.44 ms
Inference (median):    0.30 ms
Inference (std):       0.03 ms
Inference (p5):        0.29 ms
Inference (p95):       0.37 ms
Throughput:            1830.37 MB/s
Fully accelerated:     True
========================================
INFO: [accelerator_registry.cc:43] DestroyAccelerator: ptr=0x563713273e00, name=NpuAccelerator
"""


def test_executor_runner_output_on_stderr_and_in_logcat() -> None:
    run = parse_executor_runner(EXECUTOR_RUNNER_STDERR, warmup=1)
    assert run.count == 4 and run.min_ms == pytest.approx(1.17) and run.median_ms == pytest.approx(1.185)
    assert run.mean_ms == pytest.approx((1.19 + 1.17 + 1.18 + 1.21) / 4)
    assert parse_executor_runner(EXECUTOR_RUNNER_STDERR).count == 5
    logcat = parse_executor_runner(EXECUTOR_RUNNER_LOGCAT, warmup=1)
    assert logcat.count == 2 and logcat.min_ms == pytest.approx(0.444)


def test_executor_runner_outputs_that_cannot_be_read() -> None:
    with pytest.raises(LatencyTableError, match="no 'Iteration i of N: X ms' lines.*last line: 'E 00:00:00.1 "
                       "executorch:executor_runner.cpp:473] Failed to parse model file m.pte'"):
        parse_executor_runner("E 00:00:00.1 executorch:executor_runner.cpp:473] Failed to parse model file m.pte\n")
    cut = "\n".join(EXECUTOR_RUNNER_STDERR.splitlines()[:5])  # iterations 1-2 of 5 only
    with pytest.raises(LatencyTableError, match="holds 2 of the 5 iterations"):
        parse_executor_runner(cut)
    with pytest.raises(LatencyTableError, match="all 5 iterations are warm-up"):
        parse_executor_runner(EXECUTOR_RUNNER_STDERR, warmup=5)


def test_benchmark_model_output_takes_the_timed_runs_not_the_warmup() -> None:
    run = parse_benchmark_model(BENCHMARK_MODEL)
    assert run.count == 4211
    assert (run.min_ms, run.median_ms, run.mean_ms, run.std_ms) == pytest.approx((0.227, 0.235, 0.23693, 0.007))
    same = parse_benchmark_model(BENCHMARK_MODEL_ALL_SAME)
    assert same.count == 50 and same.min_ms == same.median_ms == same.mean_ms == pytest.approx(0.012)
    with pytest.raises(LatencyTableError, match="no 'Inference timings in us:' summary"):
        parse_benchmark_model(BENCHMARK_MODEL.split("INFO: Inference timings")[0])
    with pytest.raises(LatencyTableError, match="ERROR: Failed to load model"):
        parse_benchmark_model("INFO: STARTING!\nERROR: Failed to load model\n")


def test_benchmark_litert_model_output() -> None:
    run = parse_benchmark_litert_model(LITERT_PYTHON)
    assert run.count == 50
    assert (run.min_ms, run.median_ms, run.mean_ms, run.std_ms) == pytest.approx((0.29, 0.30, 0.31, 0.03))
    assert run.p10_ms is None
    with pytest.raises(LatencyTableError, match="statistic 'p10' is not reported"):
        run.value("p10")
    with pytest.raises(LatencyTableError, match="benchmark_litert_model.py"):
        parse_benchmark_litert_model("Traceback (most recent call last):\nValueError: bad model\n")


def test_a_program_must_run_the_backends_files() -> None:
    assert get_program(None, "executorch").name == "executor_runner"
    assert get_program(None, "litert").name == "benchmark_model"
    with pytest.raises(LatencyTableError, match="executor_runner runs executorch files, not litert"):
        get_program("executor_runner", "litert")
    with pytest.raises(LatencyTableError, match="no phone benchmark program.*agent.py --measure-dir"):
        get_program(None, "onnxruntime")


# --- export, script, import -------------------------------------------------------------------------------------
# A stand-in program in benchmark_model's format whose "latency" is the model file's size (1 byte = 1 us), so the
# table's entries are known; a stand-in executor_runner that logs to "logcat" (a file) as Android builds do.
FAKE_BENCHMARK_MODEL = """\
#!/bin/sh
for a in "$@"; do case "$a" in --graph=*) model="${a#--graph=}";; esac; done
us=$(wc -c < "$model")
echo "INFO: Running benchmark for at least 50 iterations and at least 1 seconds"
echo "INFO: count=50 first=$us curr=$us min=$us max=$((us + 9)) avg=$us std=2 p5=$us median=$us p95=$us"
echo "INFO: Inference timings in us: Init: 10, First inference: $us, Warmup (avg): $us, Inference (avg): $us"
"""
FAKE_EXECUTOR_RUNNER = """\
#!/bin/sh
for a in "$@"; do case "$a" in --model_path=*) model="${a#--model_path=}";; --num_executions=*) n="${a#*=}";; esac
done
us=$(wc -c < "$model")
i=1
while [ "$i" -le "$n" ]; do
  echo "12-06 11:40:00.104  4242  4242 I ExecuTorch: Iteration $i of $n: $((us / 1000)).$(printf %03d $((us % 1000))) ms" \
    >> "$FAKE_LOGCAT"
  i=$((i + 1))
done
"""
# `adb shell CMD` runs CMD here; `adb push models DIR/` copies; `adb logcat -c` / `-d` clear / print the log file.
FAKE_ADB = """\
#!/bin/sh
echo "$*" >> "$FAKE_ADB_LOG"
case "$1" in
  shell) shift; sh -c "$*";;
  push) cp -r "$2" "$3";;
  logcat) if [ "$2" = "-c" ]; then : > "$FAKE_LOGCAT"; else cat "$FAKE_LOGCAT"; fi;;
esac
"""


def _fake_bytes(size: int) -> bytes:
    return b"x" * size


@pytest.fixture
def fake_conversion(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Conversion replaced by files whose size stands for the part's latency (so no extra is needed): a part's
    "latency" is 100 us + its input's element count / 50; a network's is the sum of its parts' plus 50 us."""
    from mixnas.evaluators.latency.signatures import arch_parts

    sizes: dict[str, int] = {}

    def part_us(shape: tuple[int, ...]) -> int:
        n = 1
        for d in shape:
            n *= d
        return 100 + n // 50

    def fake_convert_pipeline(pipeline: Any, config: Any, skip: Any = ()) -> Iterator[tuple[Any, bytes]]:
        for spec in pipeline:
            if spec.key in skip:
                continue
            if spec.key.startswith(("calibrate", "validate", "reference")):
                arch = spec.build.__closure__[0].cell_contents if spec.build.__closure__ else None
                size = 50 + sum(part_us(p.input_shape(1)) for p in arch_parts(arch)) if arch is not None else 5000
            else:
                size = part_us(spec.input_shape)
            sizes[spec.key] = size
            yield spec, _fake_bytes(size)

    monkeypatch.setattr(phone, "convert_pipeline", fake_convert_pipeline)
    yield sizes


def _archs(n: int, seed: int) -> list[Any]:
    return sample_archs("tiny", n, seed)[2]


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def test_export_run_locally_and_import(tmp_path: Path, fake_conversion: dict[str, int]) -> None:
    archs, held_out = _archs(6, 0), _archs(4, 1)
    config = MeasureConfig(backend="litert", statistic="median")
    manifest = export_phone(tmp_path / "ph", archs, archs[-3:], config, validation=held_out, runs=50, warmup=5,
                            reference_every=4)
    runs = manifest["runs"]
    assert runs[0]["kind"] == runs[-1]["kind"] == "reference"
    between = [i for i, r in enumerate(runs) if r["kind"] == "reference"]
    assert max(b - a for a, b in zip(between, between[1:])) == 5  # 4 models between two reference runs
    kinds = [r["kind"] for r in runs if r["kind"] != "reference"]
    assert kinds.count("calibrate") == 3 and kinds.count("validate") == 4
    assert (tmp_path / "ph" / "run_benchmarks.sh").stat().st_mode & 0o111
    with pytest.raises(LatencyTableError, match="outputs/00000.txt: missing; run run_benchmarks.sh again"):
        import_phone(tmp_path / "ph")

    runner = _write(tmp_path / "benchmark_model", FAKE_BENCHMARK_MODEL)
    env = {**os.environ, "ADB": "", "RUNNER": runner}
    done = subprocess.run(["sh", str(tmp_path / "ph" / "run_benchmarks.sh")], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "ph" / "outputs").glob("*.txt"))) == 2 * len(runs)  # two passes by default

    imported = import_phone(tmp_path / "ph")
    table = imported.table
    parts = {r["key"] for r in runs if r["kind"] == "part"}
    assert set(table.entries) == parts
    for key in parts:  # the stand-in's latency is the file size in us; no drift (the reference never changes)
        assert table.entries[key].ms == pytest.approx(fake_conversion[key] / 1000)
    assert table.backend == "litert" and table.precision == "float32"
    assert "input_variants" not in table.settings  # the phone's program repeats one input
    assert table.calibration is not None
    assert imported.validation is not None and imported.validation["n"] == 4
    assert imported.validation["within_10pct"] == 1.0  # sums of parts + 50 us, which the calibration learns
    table.save(tmp_path / "lut.json")
    assert LatencyTable.load(tmp_path / "lut.json").device["program"] == "benchmark_model"

    # the passes pool: by the median of the two (this table's statistic), so a part twice as slow in pass 2 is
    # entered at 1.5x
    part = next(r for r in runs if r["kind"] == "part")
    second = tmp_path / "ph" / part["output"].replace(".txt", ".pass2.txt")
    us = fake_conversion[part["key"]]
    second.write_text(second.read_text().replace(f"median={us} ", f"median={2 * us} "))
    assert import_phone(tmp_path / "ph").table.entries[part["key"]].ms == pytest.approx(1.5 * us / 1000)


def test_the_script_over_adb_pushes_once_appends_logcat_and_resumes(tmp_path: Path,
                                                                      fake_conversion: dict[str, int]) -> None:
    archs = _archs(3, 0)
    export_phone(tmp_path / "ph", archs, [], MeasureConfig(backend="executorch"), runs=5, warmup=2,
                 reference_every=8)
    runner = _write(tmp_path / "executor_runner", FAKE_EXECUTOR_RUNNER)
    adb = _write(tmp_path / "adb", FAKE_ADB)
    remote = tmp_path / "phone"
    remote.mkdir()
    env = {**os.environ, "ADB": adb, "RUNNER": runner, "REMOTE": str(remote),
           "FAKE_LOGCAT": str(tmp_path / "logcat"), "FAKE_ADB_LOG": str(tmp_path / "adb.log")}
    script = str(tmp_path / "ph" / "run_benchmarks.sh")
    first = subprocess.run(["sh", script], env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    calls = (tmp_path / "adb.log").read_text().splitlines()
    assert sum(c.startswith("push") for c in calls) == 1 and (remote / "models").is_dir()
    assert any(c.startswith("shell") and f"--model_path={remote}/models/" in c and "--num_executions=7" in c
               for c in calls)
    imported = import_phone(tmp_path / "ph")
    assert imported.validation is None and imported.program == "executor_runner"
    one = next(iter(imported.table.entries))
    assert imported.table.entries[one].count == 10  # 7 executions, the 2 warm-up runs dropped, in each of 2 passes

    (tmp_path / "ph" / "outputs" / "00002.txt").unlink()
    (tmp_path / "adb.log").unlink()
    again = subprocess.run(["sh", script], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    shells = [c for c in (tmp_path / "adb.log").read_text().splitlines() if c.startswith("shell") and "model_path" in c]
    assert len(shells) == 1  # only the missing output was run again


def test_a_failed_run_is_kept_apart_and_retried(tmp_path: Path, fake_conversion: dict[str, int]) -> None:
    export_phone(tmp_path / "ph", _archs(2, 0), [], MeasureConfig(backend="litert"), runs=5, warmup=1)
    failing = _write(tmp_path / "benchmark_model", "#!/bin/sh\necho 'ERROR: Failed to load model' >&2\nexit 3\n")
    env = {**os.environ, "ADB": "", "RUNNER": failing}
    done = subprocess.run(["sh", str(tmp_path / "ph" / "run_benchmarks.sh")], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1 and "exited with 3" in done.stderr
    assert not list((tmp_path / "ph" / "outputs").glob("*.txt"))
    with pytest.raises(LatencyTableError, match=r"missing \(it failed: see its .failed file\)"):
        import_phone(tmp_path / "ph")


def test_export_refusals(tmp_path: Path, fake_conversion: dict[str, int]) -> None:
    archs = _archs(2, 0)
    with pytest.raises(LatencyTableError, match=r"statistic 'p10': benchmark_model reports \['min', 'median', "):
        export_phone(tmp_path / "a", archs, [], MeasureConfig(backend="litert", statistic="p10"))
    export_phone(tmp_path / "b", archs, [], MeasureConfig(backend="litert"))
    with pytest.raises(LatencyTableError, match="already holds an export"):
        export_phone(tmp_path / "b", archs, [], MeasureConfig(backend="litert"))


def test_cli_import_of_a_phone_folder(tmp_path: Path, fake_conversion: dict[str, int],
                                      capsys: pytest.CaptureFixture) -> None:
    export_phone(tmp_path / "ph", _archs(4, 0), _archs(4, 0)[-2:], MeasureConfig(backend="litert"),
                 validation=_archs(3, 1), runs=5, warmup=1)
    env = {**os.environ, "ADB": "", "RUNNER": _write(tmp_path / "bm", FAKE_BENCHMARK_MODEL)}
    subprocess.run(["sh", str(tmp_path / "ph" / "run_benchmarks.sh")], env=env, check=True, capture_output=True,
                   timeout=120)
    assert main(["latency", "import-results", str(tmp_path / "ph"), "x.csv", "--out", str(tmp_path / "l.json")]) == 2
    assert "is a phone folder" in capsys.readouterr().err
    assert main(["latency", "import-results", str(tmp_path / "ph"), "--out", str(tmp_path / "l.json")]) == 0
    out = capsys.readouterr().out
    assert "validation: 3 held-out networks" in out and "measured by benchmark_model" in out
    assert json.loads((tmp_path / "ph" / "validation.json").read_text())["n"] == 3
    assert main(["latency", "export-layers", "--space", "tiny", "-n", "2", "-o", str(tmp_path / "o"),
                 "--validate", "2"]) == 2
    assert "--program, --passes and --validate are for a phone's backends" in capsys.readouterr().err


# A stand-in in benchmark_litert_model.py's format: models under 3000 bytes print 0.00 ms (below its 0.01 ms step).
FAKE_LITERT_PYTHON = """\
#!/bin/sh
while [ $# -gt 0 ]; do case "$1" in --model) model="$2"; shift;; esac; shift; done
size=$(wc -c < "$model")
if [ "$size" -lt 3000 ]; then ms=0.00; else ms=$((size / 1000)).00; fi
printf 'Inference (avg):       %s ms (50 runs)\\nInference (min):       %s ms\\n' "$ms" "$ms"
printf 'Inference (median):    %s ms\\nInference (std):       0.00 ms\\n' "$ms"
"""


def test_parts_printed_as_zero_are_half_a_step_and_flagged(tmp_path: Path, fake_conversion: dict[str, int]) -> None:
    export_phone(tmp_path / "ph", _archs(3, 0), [], MeasureConfig(backend="litert"), program="benchmark_litert_model",
                 runs=5, warmup=1)
    env = {**os.environ, "ADB": "", "RUNNER": _write(tmp_path / "lb", FAKE_LITERT_PYTHON)}
    subprocess.run(["sh", str(tmp_path / "ph" / "run_benchmarks.sh")], env=env, check=True, capture_output=True,
                   timeout=120)
    imported = import_phone(tmp_path / "ph")
    small = [k for k, size in fake_conversion.items() if size < 3000 and k in imported.table.entries]
    assert small and all(imported.table.entries[k].ms == pytest.approx(0.005) for k in small)
    assert imported.coarse >= len(small) and "half a step" in imported.coarse_line()
    imported.table.save(tmp_path / "lut.json")  # a zero would make the file unreadable
    assert LatencyTable.load(tmp_path / "lut.json").entries[small[0]].mean_ms == pytest.approx(0.005)


def test_a_validation_without_a_ranking_is_written_and_said(tmp_path: Path, fake_conversion: dict[str, int],
                                                           capsys: pytest.CaptureFixture) -> None:
    """Every model timed alike (a program too coarse for them): Spearman is undefined, written as null."""
    export_phone(tmp_path / "ph", _archs(2, 0), [], MeasureConfig(backend="litert"), program="benchmark_litert_model",
                 validation=_archs(2, 1), runs=5, warmup=1)
    same = "#!/bin/sh\nprintf 'Inference (avg): 1.00 ms (5 runs)\\nInference (min): 1.00 ms\\n'\n" \
           "printf 'Inference (median): 1.00 ms\\nInference (std): 0.00 ms\\n'\n"
    env = {**os.environ, "ADB": "", "RUNNER": _write(tmp_path / "lb", same)}
    subprocess.run(["sh", str(tmp_path / "ph" / "run_benchmarks.sh")], env=env, check=True, capture_output=True,
                   timeout=120)
    assert main(["latency", "import-results", str(tmp_path / "ph"), "--out", str(tmp_path / "l.json")]) == 0
    assert "Spearman undefined (tied latencies)" in capsys.readouterr().out
    assert json.loads((tmp_path / "ph" / "validation.json").read_text())["spearman"] is None

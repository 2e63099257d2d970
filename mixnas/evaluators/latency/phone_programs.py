"""The mobile runtimes' own benchmark programs: how each one is run on a phone and how its output is read.

:data:`PROGRAMS` holds each program a phone user times models with: the backend whose files it runs, its
command line, the output it prints (parsed by one pure function per program; each cites the source file whose
format it reads), the statistics it reports and the smallest step of the times it prints.
:mod:`~mixnas.evaluators.latency.phone` writes the folder and the script that run them, and reads their outputs
back into a table.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

from mixnas.errors import LatencyTableError
from mixnas.evaluators.latency.measure import Measurement


@dataclass(frozen=True)
class ProgramRun:
    """What one run of a benchmark program reports, in milliseconds (``None``: the program does not report it)."""

    min_ms: float
    median_ms: float
    mean_ms: float
    std_ms: float
    count: int
    p10_ms: float | None = None

    def value(self, statistic: str) -> float:
        value = getattr(self, f"{statistic}_ms")
        if value is None:
            raise LatencyTableError(f"statistic {statistic!r} is not reported by this program")
        return float(value)


def _number(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise LatencyTableError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise LatencyTableError(f"{where}: expected a finite non-negative time, got {text!r}")
    return value


def _not_found(text: str, where: str, program: str, expected: str) -> LatencyTableError:
    """The error for an output without results: what was expected, and the output's last line as a clue."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    clue = f"; its last line: {lines[-1][:200]!r}" if lines else "; the output is empty"
    return LatencyTableError(f"{where}: no {expected} in the output (is this {program}'s output, and did it "
                             f"finish?){clue}")


# --- executor_runner (ExecuTorch) ------------------------------------------------------------------------------
_ET_ITERATION = re.compile(r"Iteration (\d+) of (\d+): ([-+0-9.eE]+|nan|inf) ms")


def parse_executor_runner(text: str, where: str = "output", warmup: int = 0) -> ProgramRun:
    """The timings of ExecuTorch's ``executor_runner`` (``--num_executions N``), its first ``warmup`` runs dropped.

    Format: ``examples/portable/executor_runner/executor_runner.cpp`` of ExecuTorch v1.4.1 logs, for every
    execution, ``Iteration %u of %u: %f ms`` (ET_LOG, Info), whether the log goes to stderr (prefixed ``I
    00:00:00.123456 executorch:executor_runner.cpp:777]``) or to logcat (prefixed by logcat's own columns).
    """
    runs: dict[int, float] = {}
    total = 0
    for match in _ET_ITERATION.finditer(text):
        i, n = int(match.group(1)), int(match.group(2))
        runs[i] = _number(match.group(3), f"{where}: iteration {i}")
        total = max(total, n)
    if not runs:
        raise _not_found(text, where, "executor_runner", "'Iteration i of N: X ms' lines")
    if sorted(runs) != list(range(1, total + 1)):
        raise LatencyTableError(f"{where}: holds {len(runs)} of the {total} iterations (did executor_runner stop?)")
    samples = [runs[i] for i in range(warmup + 1, total + 1)]
    if not samples:
        raise LatencyTableError(f"{where}: all {total} iterations are warm-up ({warmup}); nothing was timed")
    timed = Measurement.from_samples(samples)
    return ProgramRun(min_ms=timed.min_ms, median_ms=timed.median_ms, mean_ms=timed.mean_ms, std_ms=timed.std_ms,
                      count=timed.count, p10_ms=timed.p10_ms)


# --- benchmark_model (LiteRT / TensorFlow Lite, C++) -----------------------------------------------------------
_NUM = r"([-+0-9.eE]+|nan|inf)"
_TFL_STAT = re.compile(
    r"count=(\d+)(?: first=\S+ curr=\S+ min=" + _NUM + r" max=\S+ avg=" + _NUM + r" std=" + _NUM
    + r"| curr=" + _NUM + r"(?:\(all same\))?) p5=\S+ median=" + _NUM
)
_TFL_DONE = "Inference timings in us:"


def parse_benchmark_model(text: str, where: str = "output", warmup: int = 0) -> ProgramRun:
    """The timings of LiteRT's (TensorFlow Lite's) C++ ``benchmark_model``, in microseconds in its output.

    Format: ``tflite/tools/benchmark/benchmark_model.cc`` (google-ai-edge/LiteRT; the same file in
    tensorflow/lite before) logs the statistics of the warm-up runs and then of the timed runs, each as
    ``Stat::OutputToStream`` of ``StatWithPercentiles<int64_t>`` writes it (``xla/tsl/util/stats_calculator.h``):
    ``count=50 first=1234 curr=1200 min=1190 max=1500 avg=1210.5 std=30 p5=1195 median=1205 p95=1300`` (or
    ``count=50 curr=1200(all same) p5=... median=... p95=...``), then ``Inference timings in us: Init: ...,
    First inference: ..., Warmup (avg): ..., Inference (avg): ...``. The timed runs are the last statistics line
    before that summary. ``warmup`` is unused: the program times its warm-up separately.
    """
    end = text.find(_TFL_DONE)
    if end < 0:
        raise _not_found(text, where, "benchmark_model", f"'{_TFL_DONE}' summary")
    stats = list(_TFL_STAT.finditer(text, 0, end))
    if not stats:
        raise _not_found(text[:end], where, "benchmark_model", "'count=... median=...' statistics")
    m = stats[-1]
    count = int(m.group(1))
    median = _number(m.group(6), f"{where}: median") / 1000
    if m.group(5) is not None:  # all runs took the same time
        same = _number(m.group(5), f"{where}: curr") / 1000
        return ProgramRun(min_ms=same, median_ms=median, mean_ms=same, std_ms=0.0, count=count)
    return ProgramRun(min_ms=_number(m.group(2), f"{where}: min") / 1000, median_ms=median,
                      mean_ms=_number(m.group(3), f"{where}: avg") / 1000,
                      std_ms=_number(m.group(4), f"{where}: std") / 1000, count=count)


# --- benchmark_litert_model.py (LiteRT's Python mirror) --------------------------------------------------------
_LITERT_PY = re.compile(r"Inference \((avg|min|median|std)\):\s+" + _NUM + r" ms(?: \((\d+) runs\))?")


def parse_benchmark_litert_model(text: str, where: str = "output", warmup: int = 0) -> ProgramRun:
    """The timings of LiteRT's Python benchmark, ``ai_edge_litert/tools/benchmark_litert_model.py``.

    Format: that file of ai-edge-litert 2.3.0 (lines 453-471) prints ``Inference (avg):       0.06 ms (50 runs)``,
    then ``Inference (min|max|median|std|p5|p95): X ms``, each with two decimals (so a part faster than
    ~0.2 ms is read to within 2.5% or worse; the C++ program prints microseconds).
    """
    found: dict[str, float] = {}
    count = 0
    for m in _LITERT_PY.finditer(text):
        found[m.group(1)] = _number(m.group(2), f"{where}: {m.group(1)}")
        if m.group(3):
            count = int(m.group(3))
    missing = [k for k in ("avg", "min", "median", "std") if k not in found]
    if missing or not count:
        raise _not_found(text, where, "benchmark_litert_model.py", "'Inference (avg|min|median|std): X ms' lines")
    return ProgramRun(min_ms=found["min"], median_ms=found["median"], mean_ms=found["avg"], std_ms=found["std"],
                      count=count)


# --- the programs ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchmarkProgram:
    """A runtime's benchmark program.

    Attributes:
        name: what ``--program`` accepts.
        backend: the backend whose files it runs (:data:`~.backends.BACKENDS`).
        runner: the program's default path (on the phone for adb, ``RUNNER=`` overrides it).
        arguments: ``(model path, warm-up runs, timed runs, threads) -> arguments``.
        parse: ``(output, where, warm-up runs) -> ProgramRun``.
        statistics: the statistics its output gives (a table's statistic must be one of them).
        logcat_tag: where its Android build logs (the script appends that log to the output), if not stdout.
        where_to_get: one line for the docs and the script: where the program comes from.
        resolution_ms: the smallest step of the times it prints.
    """

    name: str
    backend: str
    runner: str
    arguments: Callable[[str, int, int, int], list[str]]
    parse: Callable[[str, str, int], ProgramRun]
    statistics: tuple[str, ...]
    logcat_tag: str | None
    where_to_get: str
    resolution_ms: float


def _executor_runner_args(model: str, warmup: int, runs: int, threads: int) -> list[str]:
    return [f"--model_path={model}", f"--num_executions={warmup + runs}", f"--cpu_threads={threads}",
            "--print_output=none"]


def _benchmark_model_args(model: str, warmup: int, runs: int, threads: int) -> list[str]:
    return [f"--graph={model}", f"--num_threads={threads}", f"--warmup_runs={warmup}", f"--num_runs={runs}"]


def _litert_python_args(model: str, warmup: int, runs: int, threads: int) -> list[str]:
    return ["--model", model, "--num_threads", str(threads), "--warmup_runs", str(warmup), "--num_runs", str(runs)]


PROGRAMS: dict[str, BenchmarkProgram] = {
    "executor_runner": BenchmarkProgram(
        "executor_runner", "executorch", "/data/local/tmp/executor_runner", _executor_runner_args,
        parse_executor_runner, ("min", "p10", "median", "mean"), "ExecuTorch",
        "ExecuTorch's executor_runner built for the phone with the XNNPACK delegate (cmake -DANDROID_ABI=arm64-v8a "
        "-DEXECUTORCH_BUILD_XNNPACK=ON; the wheel ships no runner)", 1e-6),
    "benchmark_model": BenchmarkProgram(
        "benchmark_model", "litert", "/data/local/tmp/benchmark_model", _benchmark_model_args,
        parse_benchmark_model, ("min", "median", "mean"), None,
        "LiteRT's (TensorFlow Lite's) benchmark_model for Android (the prebuilt android_aarch64_benchmark_model "
        "binary, or bazel build -c opt --config=android_arm64 //tflite/tools/benchmark:benchmark_model)", 1e-3),
    "benchmark_litert_model": BenchmarkProgram(
        "benchmark_litert_model", "litert", "litert-benchmark", _litert_python_args,
        parse_benchmark_litert_model, ("min", "median", "mean"), None,
        "LiteRT's Python benchmark (ai-edge-litert's litert-benchmark command; runs where Python runs, e.g. "
        "ADB= on this machine)", 1e-2),
}
DEFAULT_PROGRAMS = {"executorch": "executor_runner", "litert": "benchmark_model"}


def get_program(name: str | None, backend: str) -> BenchmarkProgram:
    """The program ``name`` (default: the backend's), which must run ``backend``'s files."""
    if name is None:
        if backend not in DEFAULT_PROGRAMS:
            usable = sorted(DEFAULT_PROGRAMS)
            raise LatencyTableError(f"backend {backend!r} has no phone benchmark program (backends with one: "
                                    f"{usable}; onnxruntime files are timed by the agent, agent.py --measure-dir)")
        name = DEFAULT_PROGRAMS[backend]
    program = PROGRAMS.get(name)
    if program is None:
        raise LatencyTableError(f"unknown benchmark program {name!r}: expected one of {sorted(PROGRAMS)}")
    if program.backend != backend:
        raise LatencyTableError(f"{name} runs {program.backend} files, not {backend}: use --backend "
                                f"{program.backend}, or a program for {backend}: "
                                f"{sorted(p.name for p in PROGRAMS.values() if p.backend == backend)}")
    return program

"""The phone path: a mobile runtime's own benchmark program, run on a phone over adb, read into a lookup table.

Phone users time models with the program their runtime ships for it, not with a Python agent (a phone runs no
Python): ExecuTorch's ``executor_runner`` (built with XNNPACK), LiteRT's ``benchmark_model`` (TensorFlow Lite's,
prebuilt for Android) or, where Python runs, LiteRT's Python mirror of it, ``benchmark_litert_model.py``.
:data:`~mixnas.evaluators.latency.phone_programs.PROGRAMS` holds each one: the backend whose files it runs, its
command line, the output it prints (parsed by one pure function per program; each cites the source file whose
format it reads) and the statistics it reports.

``mixnas latency export-layers --backend executorch|litert`` (:func:`export_phone`) writes a folder:

* ``models/``: every part (one file per signature, converted as in a profile: an int8 part calibrated on the
  activations of the parts before it), the reference network, the calibration networks and the validation
  networks, in the runtime's format (``.pte``, ``.tflite``);
* ``run_benchmarks.sh``: a POSIX shell script that pushes ``models/`` to the phone once (``adb push``) and runs
  the program on every model in turn (``adb shell``), keeping each output in ``outputs/NNNNN.txt``; ``ADB=``
  (empty) runs the program on this machine instead, ``RUNNER`` names the program, ``ADB`` may carry ``-s
  SERIAL``. It resumes: a model with an output is skipped. For ``executor_runner``, whose Android builds log to
  logcat, the log of the run (tag ``ExecuTorch``) is appended to the output;
* ``manifest.json``: the runs in order (reference, part, calibrate, validate), the settings and the networks.

The reference network runs first and again after every chunk of models, so that a phone that heats up and
slows down (or a machine shared with other work) is corrected for: a model's time is rescaled by the baseline
over the mean of the reference runs just before and just after it. ``mixnas latency import-results DIR``
(:func:`import_phone`) parses the outputs, builds the table (entries by the configured statistic, the
calibration fitted on the calibration networks) and, where validation networks were exported, compares the
table's predictions with their measured latencies (``validation.json`` in the folder).

Unlike the agent, which times every part inside its network (the caches as the network leaves them), a
benchmark program times a part alone, from a cold start of the program; the calibration fitted on whole
networks absorbs what that changes on average, and the validation networks say how well.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import statistics
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from mixnas.errors import LatencyTableError, MixnasError
from mixnas.outcome import finite_or_none
from mixnas.evaluators.latency.backends import convert_pipeline, get_backend
from mixnas.evaluators.latency.lut import LatencyTable
from mixnas.evaluators.latency.measure import (
    MeasureConfig,
    Measurement,
    check_positive,
    network_spec,
    reference_spec,
    StageSpec,
    with_reference_for,
)
from mixnas.evaluators.latency.offline import models_folder
from mixnas.evaluators.latency.phone_programs import PROGRAMS, BenchmarkProgram, ProgramRun, get_program
from mixnas.evaluators.latency.profile import context_pipeline, select_contexts, store_calibration, store_measured
from mixnas.evaluators.latency.signatures import arch_signatures
from mixnas.evaluators.latency.timing import TimingError, check_count
from mixnas.search_space.arch import Architecture
from mixnas.textio import os_reason, path_kind, read_bytes, read_text, write_json_atomic, write_text_atomic

PHONE_FORMAT = "mixnas-phone-benchmarks"
PHONE_VERSION = 1
SCRIPT = "run_benchmarks.sh"
DEFAULT_RUNS = 50
DEFAULT_WARMUP = 5
DEFAULT_REFERENCE_EVERY = 25
DEFAULT_PASSES = 2
KINDS = ("reference", "part", "calibrate", "validate")
COARSE_STEPS = 20  # a time under this many steps of a program's resolution is read to worse than 2.5%


# --- export ---------------------------------------------------------------------------------------------------
def pass_output(output: str, index: int) -> str:
    """The output file of a run in pass ``index`` (0: the manifest's name; then ``NNNNN.pass2.txt``, ...)."""
    return output if index == 0 else output.replace(".txt", f".pass{index + 1}.txt")


def export_phone(
    folder: str | os.PathLike[str],
    archs: Sequence[Architecture],
    calibration: Sequence[Architecture],
    config: MeasureConfig,
    *,
    program: str | None = None,
    validation: Sequence[Architecture] = (),
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    reference_every: int = DEFAULT_REFERENCE_EVERY,
    passes: int = DEFAULT_PASSES,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write the models, ``run_benchmarks.sh`` and ``manifest.json`` that profile ``archs`` on a phone; the manifest.

    Every signature of ``archs``, ``calibration`` and ``validation`` gets one model file (a part timed alone is
    the same file whichever network brings it); ``calibration`` and ``validation`` networks are also exported
    whole. The script runs every model ``passes`` times, one pass after the other. ``progress(done, total)`` is
    called after every model written.
    """
    chosen = get_program(program, config.backend)
    _check_export(chosen, config, runs=runs, warmup=warmup, reference_every=reference_every, passes=passes)
    root = _new_folder(folder)
    everything = [*archs, *calibration, *validation]
    contexts = select_contexts(LatencyTable(config.backend, config.threads, config.batch_size,
                                            precision=config.precision), everything)
    # the reference at the networks' resolution, also because a benchmark program prints coarse times (0.01 ms
    # for LiteRT's Python one) and at 32 px the reference takes ~0.1 ms
    config = with_reference_for(config, everything)
    reference = reference_spec(config)
    writer = _ModelWriter(root, get_backend(config.backend).file_suffix, progress)
    writer.total = len({s for a in contexts for s in arch_signatures(a)}) + 1 + len(calibration) + len(validation)
    reference_file = writer.convert([reference], config)[0][2]
    models = [m for a in contexts for m in writer.convert(context_pipeline(a, config.batch_size), config)]
    for kind, nets in (("calibrate", calibration), ("validate", validation)):
        for i, arch in enumerate(nets):
            models += writer.convert([network_spec(arch, config.batch_size, key=f"{kind}{i}:{arch.id}")], config,
                                     kind=kind)
    order = [("reference", reference.key, reference_file)]
    for start in range(0, len(models), reference_every):
        order += [*models[start:start + reference_every], ("reference", reference.key, reference_file)]
    manifest = {
        "format": PHONE_FORMAT, "format_version": PHONE_VERSION, "program": chosen.name, "runs_per_model": runs,
        "warmup": warmup, "passes": passes,
        "runs": [{"output": f"outputs/{i:05d}.txt", "model": f, "kind": k, "key": key}
                 for i, (k, key, f) in enumerate(order)],
        "mixnas": {
            "config": asdict(config), "reference_key": reference.key,
            "calibration": [a.to_dict() for a in calibration], "validation": [a.to_dict() for a in validation],
            "signatures": len({s for a in everything for s in arch_signatures(a)}), "networks": len(contexts),
        },
    }
    try:
        write_text_atomic(root / SCRIPT, phone_script(chosen, manifest, config))
        (root / SCRIPT).chmod(0o755)
        write_json_atomic(root / "manifest.json", manifest, indent=1, sort_keys=False)
    except OSError as exc:
        raise LatencyTableError(f"{root}: cannot write the script or the manifest ({os_reason(exc)})") from None
    return manifest


def _check_export(program: BenchmarkProgram, config: MeasureConfig, *, runs: int, warmup: int, reference_every: int,
                  passes: int) -> None:
    if config.device != "cpu":
        raise LatencyTableError(f"export-layers writes models for a phone's CPU, not {config.device!r}")
    if config.statistic not in program.statistics:
        raise LatencyTableError(f"statistic {config.statistic!r}: {program.name} reports {list(program.statistics)}")
    for name, value in (("runs", runs), ("reference_every", reference_every), ("passes", passes)):
        check_positive(name, value)
    try:
        check_count("warmup", warmup, 0)
    except TimingError as exc:
        raise LatencyTableError(str(exc)) from None


def _new_folder(folder: str | os.PathLike[str]) -> Path:
    """``folder`` with an empty ``models/``, refused where it is a file or already holds an export."""
    if path_kind(Path(folder) / "manifest.json") is not None:
        raise LatencyTableError(f"{folder}: already holds an export (manifest.json); choose a new folder")
    return models_folder(folder)


class _ModelWriter:
    """Converts stages and writes each key's model once, as ``models/NNNNN<suffix>``."""

    def __init__(self, root: Path, suffix: str | None, progress: Callable[[int, int], None] | None) -> None:
        self.root, self.suffix, self.progress = root, suffix or "", progress
        self.files: dict[str, str] = {}
        self.total = 0

    def convert(self, pipeline: Sequence[StageSpec], config: MeasureConfig, kind: str = "part"
                ) -> list[tuple[str, str, str]]:
        """``(kind, key, file)`` of every stage of ``pipeline`` not written before (int8: calibrated in context)."""
        written = []
        for spec, model in convert_pipeline(pipeline, config, skip=set(self.files)):
            name = f"models/{len(self.files):05d}{self.suffix}"
            try:
                (self.root / name).write_bytes(model)
            except OSError as exc:
                raise LatencyTableError(f"{self.root / name}: cannot write the model ({os_reason(exc)})") from None
            self.files[spec.key] = name
            written.append((kind, spec.key, name))
            if self.progress is not None:
                self.progress(len(self.files), max(self.total, len(self.files)))
        return written


def _script_header(program: BenchmarkProgram, manifest: dict[str, Any], config: MeasureConfig) -> list[str]:
    return [
        "#!/bin/sh",
        f"# Written by mixnas latency export-layers: {manifest['passes']} x {len(manifest['runs'])} runs of "
        f"{program.name} ({config.backend}, {config.precision}, {config.threads} thread(s)).",
        f"# The program: {program.where_to_get}.",
        "# On a phone (USB debugging on, adb on PATH):  sh run_benchmarks.sh",
        "#   ADB='adb -s SERIAL' picks a phone; RUNNER=/path/on/phone names the program; REMOTE= the folder used.",
        "# On this machine, without a phone:            ADB= RUNNER=/path/to/program sh run_benchmarks.sh",
        "# Outputs go to outputs/; a model with an output is not run again. Then:",
        "#   mixnas latency import-results THIS_FOLDER --out lut.json",
    ]


def phone_script(program: BenchmarkProgram, manifest: dict[str, Any], config: MeasureConfig) -> str:
    """The POSIX shell script that runs ``program`` on every model of the manifest, over adb or here."""
    runs, warmup = manifest["runs_per_model"], manifest["warmup"]
    args = " ".join(shlex.quote(a) for a in program.arguments("MODEL", warmup, runs, config.threads))
    args = args.replace("MODEL", '"$1"')
    tag = program.logcat_tag
    lines = [
        *_script_header(program, manifest, config),
        "set -u",
        'cd "$(dirname "$0")" || exit 1',
        'ADB="${ADB-adb}"',
        f'RUNNER="${{RUNNER:-{program.runner}}}"',
        'REMOTE="${REMOTE:-/data/local/tmp/mixnas}"',
        "mkdir -p outputs",
        f"args() {{ echo {args}; }}",
        'if [ -n "$ADB" ]; then',
        '  $ADB shell mkdir -p "$REMOTE" && $ADB push models "$REMOTE/" >/dev/null || { echo "adb push failed" >&2; '
        "exit 1; }",
        "fi",
        "run() {  # run OUTPUT MODEL",
        '  [ -s "$1" ] && return 0',
        '  if [ -n "$ADB" ]; then',
    ]
    if tag:
        lines.append("    $ADB logcat -c 2>/dev/null")
    lines.append('    $ADB shell "$RUNNER $(args "$REMOTE/$2")" > "$1.tmp" 2>&1')
    lines.append("    status=$?")
    if tag:
        lines.append(f'    $ADB logcat -d -s {tag}:I >> "$1.tmp" 2>/dev/null')
    lines += [
        "  else",
        '    $RUNNER $(args "$2") > "$1.tmp" 2>&1',
        "    status=$?",
        "  fi",
        '  if [ "$status" -ne 0 ]; then',
        '    mv "$1.tmp" "$1.failed"; failed=$((failed + 1))',
        '    echo "$1: $RUNNER exited with $status (its output: $1.failed; run the script again to retry)" >&2',
        "    return 0",
        "  fi",
        '  mv "$1.tmp" "$1"',
        "  count=$((count + 1))",
        f'  [ $((count % 25)) -eq 0 ] && echo "$count of {manifest["passes"] * len(manifest["runs"])} runs" >&2',
        "  return 0",
        "}",
        "count=0",
        "failed=0",
    ]
    for p in range(manifest["passes"]):
        lines += [f"run {pass_output(r['output'], p)} {r['model']}" for r in manifest["runs"]]
    lines += [
        'if [ "$failed" -gt 0 ]; then echo "$failed runs failed; see outputs/*.failed" >&2; exit 1; fi',
        'echo "done: outputs/ holds the results; next: mixnas latency import-results FOLDER --out lut.json" >&2',
    ]
    return "\n".join(lines) + "\n"


# --- import ---------------------------------------------------------------------------------------------------
@dataclass
class PhoneImport:
    """A table built from a phone folder, and the validation of its predictions (None without networks)."""

    table: LatencyTable
    validation: dict[str, Any] | None
    program: str
    coarse: int = 0  # parts timed at under COARSE_STEPS steps of the program's resolution
    notes: list[str] = field(default_factory=list)  # what the import changed, one line each (drift correction off)

    def coarse_line(self) -> str | None:
        """A warning when parts were too fast for the program's printed resolution, else None."""
        if not self.coarse:
            return None
        step = PROGRAMS[self.program].resolution_ms
        return (f"{self.coarse} of {len(self.table)} parts took under {COARSE_STEPS} x {step:g} ms, the step "
                f"{self.program} prints times in: their entries are coarse (one printed as 0 is entered as half "
                "a step; a program that prints finer times, or a larger input resolution, avoids it)")


def is_phone_folder(folder: str | os.PathLike[str]) -> bool:
    """True where ``folder/manifest.json`` is a phone export (else it is the agent's, or absent)."""
    try:
        return json.loads(read_bytes(Path(folder) / "manifest.json", LatencyTableError)).get("format") == PHONE_FORMAT
    except (LatencyTableError, ValueError, AttributeError):
        return False


@dataclass(frozen=True)
class PhoneManifest:
    """A phone folder's ``manifest.json``, parsed once (:func:`read_manifest`)."""

    config: MeasureConfig
    program: BenchmarkProgram
    runs: tuple[dict[str, str], ...]  # output, model, kind (one of KINDS), key
    warmup: int
    runs_per_model: int
    passes: int
    calibration: tuple[Architecture, ...]
    validation: tuple[Architecture, ...]


def read_manifest(folder: str | os.PathLike[str]) -> PhoneManifest:
    """The manifest of the phone folder ``folder``, or one :class:`LatencyTableError` saying why not."""
    path = Path(folder) / "manifest.json"
    try:
        manifest = json.loads(read_bytes(path, LatencyTableError))
        meta = manifest["mixnas"]
        runs = tuple(dict(r) for r in manifest["runs"])
        if manifest.get("format") != PHONE_FORMAT or any(r["kind"] not in KINDS for r in runs) or not runs:
            raise ValueError("unknown format or kind")
        return PhoneManifest(
            config=MeasureConfig(**meta["config"]), program=PROGRAMS[manifest["program"]], runs=runs,
            warmup=int(manifest["warmup"]), runs_per_model=int(manifest["runs_per_model"]),
            passes=int(manifest.get("passes", 1)),
            calibration=tuple(Architecture.from_dict(a) for a in meta["calibration"]),
            validation=tuple(Architecture.from_dict(a) for a in meta["validation"]))
    except (ValueError, KeyError, TypeError, AttributeError, MixnasError) as exc:
        raise LatencyTableError(f"{path}: not a manifest of mixnas latency export-layers for a phone "
                                f"({exc})") from None


def read_outputs(folder: str | os.PathLike[str], manifest: PhoneManifest) -> list[list[ProgramRun]]:
    """Every run's parsed output, per pass; a missing output is an error saying how to finish."""
    results: list[list[ProgramRun]] = []
    for p in range(manifest.passes):
        results.append([])
        for run in manifest.runs:
            path = Path(folder) / pass_output(run["output"], p)
            if path_kind(path) is None:
                failed = " (it failed: see its .failed file)" if path_kind(Path(f"{path}.failed")) is not None else ""
                raise LatencyTableError(f"{path}: missing{failed}; run {SCRIPT} again to finish the runs")
            results[-1].append(manifest.program.parse(read_text(path, LatencyTableError), str(path),
                                                      manifest.warmup))
    return results


class _DriftCorrected:
    """Run values over the passes of one folder, each rescaled by the reference runs around it in its pass."""

    def __init__(self, manifest: PhoneManifest, results: list[list[ProgramRun]]) -> None:
        self.results, self.statistic = results, manifest.config.statistic
        self.step = manifest.program.resolution_ms
        self.refs = [i for i, r in enumerate(manifest.runs) if r["kind"] == "reference"]
        self.baseline = results[0][self.refs[0]].value(self.statistic)
        self.notes: list[str] = []
        self.correct = manifest.config.drift_correction
        if self.correct and self.baseline < COARSE_STEPS * self.step:
            self.correct = False
            self.notes.append(f"drift correction off: the reference network took {self.baseline:g} ms, under "
                              f"{COARSE_STEPS} steps of the {self.step:g} ms {manifest.program.name} prints")

    def value(self, i: int) -> float:
        """Run ``i``'s statistic over every pass: the least of them for ``min`` (as rounds pool), else their
        median."""
        values = []
        for timed in self.results:
            v = max(timed[i].value(self.statistic), self.step / 2)  # printed as 0: below one step, so half a step
            if self.correct:
                before = max(r for r in self.refs if r < i)
                after = min((r for r in self.refs if r > i), default=before)
                v *= self.baseline / statistics.fmean([timed[before].value(self.statistic),
                                                       timed[after].value(self.statistic)])
            values.append(v)
        return min(values) if self.statistic == "min" else statistics.median(values)


def import_phone(folder: str | os.PathLike[str]) -> PhoneImport:
    """The latency table a phone folder's outputs describe (see the module docstring)."""
    manifest = read_manifest(folder)
    config, program, runs = manifest.config, manifest.program, manifest.runs
    results = read_outputs(folder, manifest)
    drift = _DriftCorrected(manifest, results)
    settings: dict[str, Any] = {**config.to_dict(), "runs_per_model": manifest.runs_per_model,
                                "warmup": manifest.warmup, "passes": manifest.passes, "clock": f"{program.name}'s",
                                "drift_correction": drift.correct}
    settings.pop("input_variants", None)  # the phone's program fills its input once and repeats it
    if drift.correct:
        settings.update(reference_arch=runs[drift.refs[0]]["key"].removeprefix("reference:"),
                        reference_ms=drift.baseline)
    table = LatencyTable(config.backend, config.threads, config.batch_size, settings=settings,
                         device={"measured_by": f"{program.name} ({PHONE_FORMAT})", "program": program.name},
                         precision=config.precision)
    networks: dict[str, list[float]] = {"calibrate": [], "validate": []}
    for i, run in enumerate(runs):
        if run["kind"] == "part":
            pooled = _combined(results, i, config.statistic, drift.value(i), drift.step)
            store_measured(table, {run["key"]: pooled}, 1.0, None, config.statistic)
        elif run["kind"] in networks:
            networks[run["kind"]].append(drift.value(i))
    if manifest.calibration:
        store_calibration(table, manifest.calibration, networks["calibrate"])
    coarse = sum(1 for i, run in enumerate(runs)
                 if run["kind"] == "part" and results[0][i].value(config.statistic) < COARSE_STEPS * drift.step)
    report = _validation(table, manifest, networks["validate"]) if len(manifest.validation) >= 2 else None
    return PhoneImport(table=table, validation=report, program=program.name, coarse=coarse, notes=drift.notes)


def _validation(table: LatencyTable, manifest: PhoneManifest, measured: list[float]) -> dict[str, Any]:
    """The table's predictions of the validation networks against their measured latencies."""
    from mixnas.evaluators.latency.predictor import LatencyPredictor
    from mixnas.evaluators.latency.validate import error_metrics

    predicted = [LatencyPredictor(table).predict(a)[0] for a in manifest.validation]
    metrics = {k: finite_or_none(v) if isinstance(v, float) else v for k, v in error_metrics(predicted, measured).items()}
    return {**metrics, "program": manifest.program.name,
            "statistic": manifest.config.statistic, "calibrated": table.calibration is not None,
            "architectures": [{"arch_id": a.id, "predicted_ms": p, "measured_ms": m}
                              for a, p, m in zip(manifest.validation, predicted, measured)]}


def _combined(results: list[list[ProgramRun]], i: int, statistic: str, value: float, step: float) -> Measurement:
    """Run ``i`` over every pass as one measurement whose ``statistic`` is ``value`` (drift-corrected, pooled); a
    time printed as 0 (below one ``step``) counts as half a step."""
    runs = [timed[i] for timed in results]
    floor = step / 2
    scale = value / statistics.median(max(r.value(statistic), floor) for r in runs)
    pooled = Measurement(
        median_ms=max(statistics.median(r.median_ms for r in runs), floor) * scale,
        mean_ms=max(statistics.fmean(r.mean_ms for r in runs), floor) * scale,
        std_ms=max(r.std_ms for r in runs) * scale, iqr_ms=math.nan,
        min_ms=max(min(r.min_ms for r in runs), floor) * scale, p10_ms=math.nan, count=sum(r.count for r in runs))
    return replace(pooled, **{f"{statistic}_ms": value})

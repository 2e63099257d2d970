"""``mixnas latency`` actions on a table's files: import a CSV, merge tables, write the agent script, export the
models a device measures (for the agent, or for a phone's benchmark program) and import what it measured."""

from __future__ import annotations

import argparse
import time
from typing import Any

from mixnas import bounds
from mixnas.evaluators.latency.measure import MEASURE_RANGES
from mixnas.search_space.arch import MAX_RESOLUTION
from mixnas.errors import LatencyTableError
from mixnas.evaluators.latency.backends import PRECISIONS, get_backend
from mixnas.evaluators.latency.phone_programs import PROGRAMS
from mixnas.evaluators.latency.profile import DEFAULT_CHUNK
from mixnas.evaluators.latency.sampling import PROFILE_SEED, VALIDATE_SEED, sample_archs
from mixnas.launch.commands.latency_options import measure_config_of, measure_options, say

DEFAULT_PROFILE_SAMPLES = 200
DEFAULT_CALIBRATION = 10


def add_file_actions(cmds: argparse._SubParsersAction) -> None:
    """Register ``import-csv``, ``merge``, ``agent-script``, ``export-layers`` and ``import-results``."""
    for add in (_add_import_csv, _add_merge, _add_agent_script, _add_export_layers, _add_import_results):
        add(cmds)


def _add_import_csv(cmds: argparse._SubParsersAction) -> None:
    ic = cmds.add_parser("import-csv", help="turn a CSV (signature,mean_ms,std_ms[,count]) into a LUT")
    ic.add_argument("csv")
    ic.add_argument("--out", required=True)
    ic.add_argument("--backend", required=True, help="the runtime the CSV was measured with (e.g. tflite)")
    ic.add_argument("--precision", choices=PRECISIONS, default="float32",
                    help="the precision the CSV was measured in (default float32)")
    ic.add_argument("--threads", type=MEASURE_RANGES["threads"].arg(), default=1)
    ic.add_argument("--batch-size", type=MEASURE_RANGES["batch_size"].arg(), default=1)
    ic.add_argument("--cpu", default="unknown", help="device / CPU name the CSV was measured on")
    ic.set_defaults(func=run_import_csv)


def _add_merge(cmds: argparse._SubParsersAction) -> None:
    mg = cmds.add_parser("merge", help="merge LUTs of the same device, backend, threads and batch size")
    mg.add_argument("luts", nargs="+", metavar="LUT")
    mg.add_argument("--out", required=True)
    mg.add_argument("--force", action="store_true", help="merge even if devices or backends differ")
    mg.set_defaults(func=run_merge)


def _add_agent_script(cmds: argparse._SubParsersAction) -> None:
    a = cmds.add_parser("agent-script", help="write the latency agent (numpy + onnxruntime only) for a device")
    a.add_argument("-o", "--out", required=True, help="file to write (e.g. agent.py)")
    a.set_defaults(func=run_agent_script)


def _add_export_layers(cmds: argparse._SubParsersAction) -> None:
    e = cmds.add_parser("export-layers", help="write the ONNX models a profile needs, for agent.py --measure-dir")
    e.add_argument("--space", required=True, help="search space: preset name or YAML file")
    e.add_argument("-n", type=bounds.integer(1, 1_000_000).arg(), default=DEFAULT_PROFILE_SAMPLES,
                   help=f"architectures sampled (default {DEFAULT_PROFILE_SAMPLES})")
    e.add_argument("--seed", type=bounds.SEED.arg(), default=PROFILE_SEED, help=f"sampling seed (default {PROFILE_SEED})")
    e.add_argument("--calibrate", type=bounds.integer(0, 10_000).arg(), default=DEFAULT_CALIBRATION, metavar="K",
                   help=f"calibration networks measured end to end (default {DEFAULT_CALIBRATION}; 0: none)")
    e.add_argument("--resolution", type=bounds.integer(1, MAX_RESOLUTION).arg(), help="override the architectures' input resolution")
    e.add_argument("-o", "--out", required=True, help="folder to write (models/ and manifest.json)")
    e.add_argument("--chunk", type=bounds.integer(1, 10_000).arg(), default=DEFAULT_CHUNK,
                   help=f"networks timed together in one measurement (default {DEFAULT_CHUNK}; as profile --chunk); "
                   "for a phone: models run between two runs of the reference network")
    e.add_argument("--program", choices=sorted(PROGRAMS), default=None,
                   help="for --backend executorch or litert: the runtime's benchmark program that run_benchmarks.sh "
                   "runs over adb (default: executor_runner for executorch, benchmark_model for litert)")
    e.add_argument("--passes", type=bounds.integer(1, 100).arg(), default=2,
                   help="for a phone: run_benchmarks.sh runs every model this many times, one pass after the "
                   "other; import-results keeps the least (--statistic min) or the median (default 2)")
    e.add_argument("--validate", type=bounds.integer(0, 10_000).arg(), default=0, metavar="K",
                   help="for a phone: also export K held-out networks (seed 1), whose measured latencies "
                   "import-results compares with the table's predictions (default 0)")
    measure_options(e)
    e.set_defaults(func=run_export_layers, onnx_default=True)


def _add_import_results(cmds: argparse._SubParsersAction) -> None:
    i = cmds.add_parser("import-results", help="build a LUT from an export folder and its measurements (the "
                        "agent's results CSV, or the outputs of run_benchmarks.sh on a phone)")
    i.add_argument("folder", help="the folder export-layers wrote")
    i.add_argument("results", nargs="?", help="the CSV agent.py --measure-dir wrote (not for a phone folder: "
                   "its outputs/ are read)")
    i.add_argument("--out", required=True, help="LUT JSON file to write")
    i.set_defaults(func=run_import_results)


def run_import_csv(args: argparse.Namespace) -> int:
    from mixnas.evaluators.latency.lut import LatencyTable

    table = LatencyTable.from_csv(
        args.csv,
        backend=args.backend,
        threads=args.threads,
        batch_size=args.batch_size,
        device={"cpu": args.cpu, "accelerator": "cpu"},
        precision=args.precision,
    )
    table.save(args.out)
    print(f"{args.out}: {len(table)} signatures imported from {args.csv}")
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from mixnas.evaluators.latency.lut import LatencyTable

    tables = [LatencyTable.load(p) for p in args.luts]
    merged = tables[0]
    for other in tables[1:]:
        merged = merged.merge(other, force=args.force)
    merged.save(args.out)
    print(f"{args.out}: {len(merged)} signatures from {len(tables)} tables")
    return 0


def run_agent_script(args: argparse.Namespace) -> int:
    from pathlib import Path

    from importlib.metadata import PackageNotFoundError, version

    from mixnas.evaluators.latency import agent
    from mixnas.textio import os_reason, write_text_atomic

    from mixnas.evaluators.latency.remote import agent_script

    source = agent_script()
    try:
        mixnas_version = version("mixnas")
    except PackageNotFoundError:
        mixnas_version = "(unknown version)"
    header = (
        f"#!/usr/bin/env python3\n# mixnas latency agent {agent.AGENT_VERSION}, written by mixnas "
        f"{mixnas_version} (mixnas latency agent-script). Needs Python 3.9+, numpy and "
        "onnxruntime only (float32 and int8 ONNX models).\n# Serve: python agent.py --token-file token.txt [--host 0.0.0.0 --port 8765]; offline: "
        "python agent.py --measure-dir DIR --out results.csv\n"
    )
    try:
        write_text_atomic(args.out, header + source)
        Path(args.out).chmod(0o755)
    except OSError as exc:
        raise LatencyTableError(f"{args.out}: cannot write the agent ({os_reason(exc)})") from None
    print(f"{args.out}: latency agent {agent.AGENT_VERSION} (copy it to the device; python {args.out} --help)")
    return 0


def run_export_layers(args: argparse.Namespace) -> int:
    from mixnas.evaluators.latency.offline import export_layers
    from mixnas.evaluators.latency.profile import choose_calibration

    config = measure_config_of(args)
    _, _, archs = sample_archs(args.space, args.n, args.seed, args.resolution)
    say(f"export-layers: {len(archs)} architectures of {args.space!r} -> {args.out}")
    calibration = choose_calibration(archs, args.calibrate)
    if not get_backend(config.backend).agent:
        return _export_phone(args, config, archs, calibration)
    if args.program is not None or args.validate or args.passes != 2:
        raise LatencyTableError("--program, --passes and --validate are for a phone's backends (executorch, "
                                "litert); the agent validates with mixnas latency validate --remote")
    manifest = export_layers(args.out, archs, calibration, config, rounds=args.rounds, chunk=args.chunk)
    meta = manifest["mixnas"]
    print(f"{args.out}: {meta['signatures']} signatures in {meta['networks']} networks, "
          f"{len(manifest['requests'])} requests; on the device: python agent.py --measure-dir {args.out} "
          f"--out results.csv")
    return 0


def _export_phone(args: argparse.Namespace, config: Any, archs: list[Any], calibration: list[Any]) -> int:
    from mixnas.evaluators.latency.phone import SCRIPT, export_phone

    if args.validate < 0 or args.validate == 1:
        raise LatencyTableError(f"--validate: expected 0 or at least 2 networks, got {args.validate}")
    validation: list[Any] = []
    if args.validate:
        _, _, validation = sample_archs(args.space, args.validate, VALIDATE_SEED, args.resolution,
                                        exclude=frozenset(a.id for a in archs))
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        if done == total or done % 25 == 0:
            say(f"  {done}/{total} models written ({time.monotonic() - started:.0f} s)")

    manifest = export_phone(args.out, archs, calibration, config, program=args.program, validation=validation,
                            runs=args.repeats, warmup=args.warmup, reference_every=args.chunk, passes=args.passes,
                            progress=progress)
    meta = manifest["mixnas"]
    print(f"{args.out}: {meta['signatures']} signatures, {len(calibration)} calibration and {len(validation)} "
          f"validation networks, {len(manifest['runs'])} runs of {manifest['program']}; with the phone on USB: "
          f"sh {args.out}/{SCRIPT}, then mixnas latency import-results {args.out} --out LUT.json")
    return 0


def run_import_results(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mixnas.evaluators.latency.offline import import_results
    from mixnas.evaluators.latency.phone import import_phone, is_phone_folder
    from mixnas.textio import write_json_atomic

    if is_phone_folder(args.folder):
        if args.results is not None:
            raise LatencyTableError(f"{args.folder} is a phone folder: its outputs/ are read; drop {args.results}")
        imported = import_phone(args.folder)
        imported.table.save(args.out)
        if imported.table.calibration is not None:
            say(f"import-results: calibration {imported.table.calibration.describe()}")
        for line in [*imported.notes, *filter(None, [imported.coarse_line()])]:
            say(f"import-results: warning: {line}")
        if imported.validation is not None:
            v = imported.validation
            write_json_atomic(Path(args.folder) / "validation.json", v, indent=1)
            spearman = "undefined (tied latencies)" if v["spearman"] is None else f"{v['spearman']:.3f}"
            print(f"validation: {v['n']} held-out networks, {100 * v['within_10pct']:.0f}% within ±10%, "
                  f"Spearman {spearman}, RMSPE {v['rmspe']:.1f}% ({args.folder}/validation.json)")
        print(f"{args.out}: {len(imported.table)} signatures measured by {imported.program}")
        return 0
    if args.results is None:
        raise LatencyTableError("import-results DIR RESULTS: give the CSV agent.py --measure-dir wrote")
    table = import_results(args.folder, args.results)
    table.save(args.out)
    if table.calibration is not None:
        say(f"import-results: calibration {table.calibration.describe()}")
    print(f"{args.out}: {len(table)} signatures measured on {table.describe_device()}")
    return 0

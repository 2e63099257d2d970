"""``mixnas latency ...``: measure, build a lookup table, predict, validate, import and merge tables.

::

    mixnas latency measure ARCH [--backend B] [--threads T]
    mixnas latency profile (--space SPACE [-n N | --exhaustive] | --arch ARCH ...) --backend B --threads T
                           --out LUT.json [--calibrate K] [--seed S]
    mixnas latency predict --lut LUT.json ARCH ...
    mixnas latency validate --space SPACE --lut LUT.json -n N [--seed S] [--plot PNG] [--json]
    mixnas latency coverage --space SPACE --lut LUT.json [--json]
    mixnas latency import-csv CSV --out LUT.json --backend B [--threads T] [--cpu NAME]
    mixnas latency merge LUT.json ... --out LUT.json [--force]
    mixnas latency agent-script -o agent.py
    mixnas latency export-layers --space SPACE -n N -o DIR [--calibrate K]
    mixnas latency export-layers --backend executorch|litert --space SPACE -n N -o DIR [--validate K] [--program P]
    mixnas latency import-results DIR [results.csv] --out LUT.json

``measure``, ``profile`` and ``validate`` take ``--remote URL --token-file F`` to measure on a latency agent
(``agent.py`` on the target device) instead of this machine.

Progress goes to stderr; results to stdout (with ``--json``, exactly one JSON document).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Sequence

from mixnas.errors import LatencyTableError
from mixnas.evaluators.latency.backends import BACKEND_NAMES, PRECISIONS, get_backend
from mixnas.evaluators.latency.measure import DEFAULT_MIN_SECONDS, DEFAULT_REPEATS, DEFAULT_ROUNDS
from mixnas.evaluators.latency.phone import PROGRAMS
from mixnas.evaluators.latency.profile import DEFAULT_CHUNK
from mixnas.evaluators.latency.sampling import (
    PROFILE_SEED,
    VALIDATE_SEED,
    coverage_line,
    sample_archs,
    space_coverage,
    with_resolution,
)
from mixnas.search_space.arch import Architecture

DEFAULT_PROFILE_SAMPLES = 200
DEFAULT_CALIBRATION = 10


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "latency",
        help="measure latency, build and validate a latency lookup table",
        description="On-device latency: end-to-end measurement, a per-layer lookup table (LUT), its predictor "
        "and a validation report. See docs/latency.md.",
    )
    cmds = p.add_subparsers(dest="latency_command", metavar="ACTION")
    cmds.required = True
    for add in (_add_measure, _add_profile, _add_predict, _add_validate, _add_coverage, _add_import_csv, _add_merge,
                _add_agent_script, _add_export_layers, _add_import_results):
        add(cmds)


def _add_measure(cmds: argparse._SubParsersAction) -> None:
    m = cmds.add_parser("measure", help="measure architectures end to end")
    m.add_argument("archs", nargs="+", metavar="ARCH", help="preset name, block strings or file")
    _measure_options(m)
    m.add_argument("--resolution", type=int, help="input resolution (default: the architecture's)")
    m.add_argument("--json", action="store_true", help="print one JSON document")
    _remote_options(m)
    m.set_defaults(func=run_measure)


def _add_profile(cmds: argparse._SubParsersAction) -> None:
    pr = cmds.add_parser("profile", help="profile the layer signatures of a space or architectures into a LUT")
    src = pr.add_mutually_exclusive_group(required=True)
    src.add_argument("--space", help="search space: preset name (tiny, mixnet, ...) or YAML file")
    src.add_argument("--arch", nargs="+", metavar="ARCH", help="architectures (preset names, block strings, files)")
    count = pr.add_mutually_exclusive_group()
    count.add_argument(
        "-n",
        type=int,
        default=None,
        help=f"architectures sampled from the space (default {DEFAULT_PROFILE_SAMPLES})",
    )
    count.add_argument(
        "--exhaustive",
        action="store_true",
        help="profile every layer signature the space can produce (refused, with the count, for spaces too large "
        "to list); a search then never meets a missing signature",
    )
    pr.add_argument("--seed", type=int, default=PROFILE_SEED, help=f"sampling seed (default {PROFILE_SEED})")
    pr.add_argument(
        "--out", required=True, help="LUT JSON file; an existing one is extended (only missing signatures are measured)"
    )
    pr.add_argument(
        "--calibrate",
        type=int,
        default=DEFAULT_CALIBRATION,
        metavar="K",
        help=f"fit the per-network correction on K architectures measured end to end "
        f"(default {DEFAULT_CALIBRATION}; 0: none)",
    )
    pr.add_argument("--resolution", type=int, help="override the architectures' input resolution")
    _measure_options(pr)
    pr.add_argument(
        "--chunk",
        type=int,
        default=DEFAULT_CHUNK,
        help=f"networks timed part by part in one interleaved measurement, saved after each (default {DEFAULT_CHUNK}; "
        "grows for small networks, see --min-seconds). Fewer, larger chunks make a more repeatable table: each "
        "chunk is rescaled to the table's speed on its own; 224-px spaces: one chunk for the whole sample, e.g. 40",
    )
    _remote_options(pr)
    pr.set_defaults(func=run_profile)


def _add_predict(cmds: argparse._SubParsersAction) -> None:
    pd = cmds.add_parser("predict", help="predict latency from a LUT")
    pd.add_argument("archs", nargs="+", metavar="ARCH")
    pd.add_argument("--lut", required=True)
    pd.add_argument("--resolution", type=int, help="override the architectures' input resolution")
    pd.add_argument(
        "--measure-missing",
        action="store_true",
        help="measure missing signatures on the spot and save them into the LUT",
    )
    pd.add_argument("--json", action="store_true", help="print one JSON document")
    pd.set_defaults(func=run_predict)


def _add_validate(cmds: argparse._SubParsersAction) -> None:
    v = cmds.add_parser("validate", help="compare LUT predictions with end-to-end measurements")
    v.add_argument("--space", required=True, help="search space: preset name or YAML file")
    v.add_argument("--lut", required=True)
    v.add_argument("-n", type=int, default=50, help="architectures to measure (default 50)")
    v.add_argument(
        "--seed",
        type=int,
        default=VALIDATE_SEED,
        help=f"sampling seed (default {VALIDATE_SEED}; calibration architectures are skipped)",
    )
    v.add_argument("--resolution", type=int, help="override the architectures' input resolution")
    v.add_argument("--plot", help="write a scatter plot PNG here")
    v.add_argument("--json", action="store_true", help="print exactly one JSON document on stdout")
    v.add_argument(
        "--strict",
        action="store_true",
        help="fail if the LUT lacks a signature "
        "(default: measure it first, inside other networks of the space, and save it)",
    )
    v.add_argument("--repeats", type=int, default=None, help="timed runs per network (default: the LUT's)")
    v.add_argument("--warmup", type=int, default=None, help="untimed runs per network (default: the LUT's)")
    v.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help=f"interleaving rounds (default {DEFAULT_ROUNDS})")
    v.add_argument(
        "--min-seconds", type=float, default=None, help="least wall time one measurement spans (default: the LUT's)"
    )
    v.add_argument(
        "--chunk",
        type=int,
        default=DEFAULT_CHUNK,
        help=f"when the LUT lacks signatures: the other networks they are timed in per interleaved measurement "
        f"(default {DEFAULT_CHUNK}; as profile --chunk)",
    )
    _remote_options(v)
    v.set_defaults(func=run_validate)


def _add_coverage(cmds: argparse._SubParsersAction) -> None:
    cv = cmds.add_parser("coverage", help="how many of the signatures a space can produce a LUT holds")
    cv.add_argument("--space", required=True, help="search space: preset name or YAML file")
    cv.add_argument("--lut", required=True)
    cv.add_argument("--resolution", type=int, help="override the architectures' input resolution")
    cv.add_argument("--json", action="store_true", help="print one JSON document")
    cv.set_defaults(func=run_coverage)


def _add_import_csv(cmds: argparse._SubParsersAction) -> None:
    ic = cmds.add_parser("import-csv", help="turn a CSV (signature,mean_ms,std_ms[,count]) into a LUT")
    ic.add_argument("csv")
    ic.add_argument("--out", required=True)
    ic.add_argument("--backend", required=True, help="the runtime the CSV was measured with (e.g. tflite)")
    ic.add_argument("--precision", choices=PRECISIONS, default="float32",
                    help="the precision the CSV was measured in (default float32)")
    ic.add_argument("--threads", type=int, default=1)
    ic.add_argument("--batch-size", type=int, default=1)
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
    e.add_argument("-n", type=int, default=DEFAULT_PROFILE_SAMPLES,
                   help=f"architectures sampled (default {DEFAULT_PROFILE_SAMPLES})")
    e.add_argument("--seed", type=int, default=PROFILE_SEED, help=f"sampling seed (default {PROFILE_SEED})")
    e.add_argument("--calibrate", type=int, default=DEFAULT_CALIBRATION, metavar="K",
                   help=f"calibration networks measured end to end (default {DEFAULT_CALIBRATION}; 0: none)")
    e.add_argument("--resolution", type=int, help="override the architectures' input resolution")
    e.add_argument("-o", "--out", required=True, help="folder to write (models/ and manifest.json)")
    e.add_argument("--chunk", type=int, default=DEFAULT_CHUNK,
                   help=f"networks timed together in one measurement (default {DEFAULT_CHUNK}; as profile --chunk); "
                   "for a phone: models run between two runs of the reference network")
    e.add_argument("--program", choices=sorted(PROGRAMS), default=None,
                   help="for --backend executorch or litert: the runtime's benchmark program that run_benchmarks.sh "
                   "runs over adb (default: executor_runner for executorch, benchmark_model for litert)")
    e.add_argument("--passes", type=int, default=2,
                   help="for a phone: run_benchmarks.sh runs every model this many times, one pass after the "
                   "other; import-results keeps the least (--statistic min) or the median (default 2)")
    e.add_argument("--validate", type=int, default=0, metavar="K",
                   help="for a phone: also export K held-out networks (seed 1), whose measured latencies "
                   "import-results compares with the table's predictions (default 0)")
    _measure_options(e)
    e.set_defaults(func=run_export_layers)


def _add_import_results(cmds: argparse._SubParsersAction) -> None:
    i = cmds.add_parser("import-results", help="build a LUT from an export folder and its measurements (the "
                        "agent's results CSV, or the outputs of run_benchmarks.sh on a phone)")
    i.add_argument("folder", help="the folder export-layers wrote")
    i.add_argument("results", nargs="?", help="the CSV agent.py --measure-dir wrote (not for a phone folder: "
                   "its outputs/ are read)")
    i.add_argument("--out", required=True, help="LUT JSON file to write")
    i.set_defaults(func=run_import_results)


def _remote_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--remote", metavar="URL", help="measure on the latency agent at URL (http://HOST:PORT; "
                   "implies --backend onnxruntime)")
    p.add_argument("--token-file", metavar="F", help="file holding the agent's token (with --remote)")


def _timer(args: argparse.Namespace) -> Any:
    """The remote timer of ``--remote`` / ``--token-file``, or None (this machine)."""
    if args.remote is None:
        if args.token_file is not None:
            raise LatencyTableError("--token-file goes with --remote URL")
        return None
    if args.token_file is None:
        raise LatencyTableError("--remote needs --token-file F (the file holding the agent's token)")
    from mixnas.evaluators.latency.remote import remote_timer

    return remote_timer(args.remote, args.token_file)


def _measure_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=BACKEND_NAMES, default=None,
                   help="torch (default) or onnxruntime (the default with --remote, for export-layers and for "
                   "--precision int8)")
    p.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="float32 (default) or int8 (onnxruntime: static QDQ quantisation, per-channel weights)")
    p.add_argument("--calibration-data", metavar="DATA", default=None,
                   help="int8: images that calibrate the quantisation (digits, an image folder, an IDX / CIFAR / "
                   "npz file); default: a stand-in of seeded standard-normal images, recorded in the table")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default 1; with --remote, the agent's --threads)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="torch backend device")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs (default 10)")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help=f"timed runs (default {DEFAULT_REPEATS})")
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help=f"interleaving rounds (default {DEFAULT_ROUNDS})")
    p.add_argument(
        "--min-seconds",
        type=float,
        default=DEFAULT_MIN_SECONDS,
        help=f"least wall time one interleaved measurement spans: more rounds until it has passed, so that its "
        f"minimum is not taken in one slow phase of the machine (default {DEFAULT_MIN_SECONDS:g}; 0: off)",
    )
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false", help="torch backend: keep NCHW")
    p.add_argument(
        "--clock",
        choices=["auto", "wall", "thread"],
        default="auto",
        help="timer: thread CPU time (immune to other processes; 1 thread only), wall, or auto (thread for 1 thread)",
    )
    p.add_argument(
        "--statistic",
        choices=["min", "p10", "median", "mean"],
        default="min",
        help="summary of the timed runs used as the latency (default min: least disturbed by other processes)",
    )
    p.add_argument(
        "--no-drift-correction",
        dest="drift_correction",
        action="store_false",
        help="do not rescale measurements by a reference network timed beside them",
    )


def _config(args: argparse.Namespace, timer: Any = None) -> Any:
    from mixnas.evaluators.latency.measure import MeasureConfig

    threads = args.threads
    if threads is None:
        threads = timer.client.info().get("threads", 1) if timer is not None else 1
    onnx_only = getattr(args, "remote", None) is not None or args.func is run_export_layers
    onnx_only = onnx_only or args.precision != "float32"
    return MeasureConfig(
        backend=args.backend or ("onnxruntime" if onnx_only else "torch"),
        precision=args.precision,
        calibration_data=args.calibration_data,
        threads=threads,
        batch_size=args.batch_size,
        device=args.device,
        warmup=args.warmup,
        repeats=args.repeats,
        channels_last=args.channels_last,
        clock=args.clock,
        statistic=args.statistic,
        drift_correction=args.drift_correction,
        min_seconds=args.min_seconds,
    )


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _resolve(specs: Sequence[str], resolution: int | None) -> list[Architecture]:
    from mixnas.launch.archref import resolve_cli_arch

    return [with_resolution(resolve_cli_arch(s), resolution) for s in specs]


class _Progress:
    """Progress lines on stderr, at most one every ``every`` seconds (plus the last)."""

    def __init__(self, what: str, every: float = 2.0) -> None:
        self.what = what
        self.every = every
        self.start = time.perf_counter()
        self.last = 0.0

    def __call__(self, done: int, total: int, detail: str = "") -> None:
        now = time.perf_counter()
        if done < total and now - self.last < self.every:
            return
        self.last = now
        elapsed = now - self.start
        eta = elapsed / done * (total - done) if done else 0.0
        tail = f"  {detail}" if detail else ""
        _say(f"{self.what}: {done}/{total} ({elapsed:.0f} s, ~{eta:.0f} s left){tail}")


# --- actions --------------------------------------------------------------------------------------------------
def run_measure(args: argparse.Namespace) -> int:
    from mixnas.evaluators.latency.measure import device_metadata, measure_archs

    timer = _timer(args)
    config = _config(args, timer)
    archs = _resolve(args.archs, args.resolution)
    results = measure_archs(archs, config, rounds=args.rounds, timer=timer)
    rows = [
        {"arch": spec, "id": a.id, "resolution": a.resolution, **m.to_dict()}
        for spec, a, m in zip(args.archs, archs, results)
    ]
    if args.json:
        device = timer.device(config) if timer else device_metadata(config)
        json.dump({"config": config.to_dict(), "device": device, "results": rows}, sys.stdout)
        sys.stdout.write("\n")
        return 0
    for r in rows:
        print(
            f"{r['arch'][:40]:<40} {r['resolution']:>4}px  p10 {r['p10_ms']:.3f}  median {r['median_ms']:.3f} ms  "
            f"iqr {r['iqr_ms']:.3f}  mean {r['mean_ms']:.3f} ± {r['std_ms']:.3f}  "
            f"(n={r['count']}, {config.backend} {config.precision}, {config.threads} thread(s))"
        )
    return 0


def _profile_archs(args: argparse.Namespace, coverage: Any) -> tuple[list[Any], list[Any]]:
    """The architectures ``latency profile`` times part by part, and those it calibrates on end to end."""
    from mixnas.evaluators.latency.profile import choose_calibration

    if coverage is not None:
        archs = list(coverage.contexts)
        _say(f"profile: the space {args.space!r} can produce {len(coverage)} signatures "
             f"(found in {coverage.combinations} networks); {len(archs)} networks hold them all")
        # calibrate on ordinary members of the space, not on the enumeration's networks
        if not args.calibrate:
            return archs, []
        return archs, sample_archs(args.space, args.calibrate, args.seed, args.resolution)[2]
    if args.space:
        n = DEFAULT_PROFILE_SAMPLES if args.n is None else args.n
        _, _, archs = sample_archs(args.space, n, args.seed, args.resolution)
        return archs, choose_calibration(archs, args.calibrate)
    archs = _resolve(args.arch, args.resolution)
    return archs, archs if args.calibrate else []


def run_profile(args: argparse.Namespace) -> int:
    from mixnas.evaluators.latency.profile import calibrate, load_or_create, profile_archs, select_contexts
    from mixnas.evaluators.latency.signatures import arch_signatures

    timer = _timer(args)
    config = _config(args, timer)
    if args.arch and (args.n is not None or args.exhaustive):
        raise LatencyTableError("-n and --exhaustive choose architectures of --space; with --arch, leave them out")
    coverage = space_coverage(args.space, args.resolution) if args.exhaustive else None
    table = load_or_create(args.out, config, timer)
    if timer is not None:
        _say(f"profile: measuring on {table.describe_device()}")
    archs, calibration_archs = _profile_archs(args, coverage)
    distinct = {s for a in archs for s in arch_signatures(a)}
    missing = table.missing(s for a in archs for s in arch_signatures(a))
    contexts = select_contexts(table, archs)
    _say(f"profile: {len(archs)} architectures, {len(distinct)} distinct signatures, {len(missing)} to measure "
         f"in {len(contexts)} networks ({config.backend} {config.precision}, {config.threads} thread(s), "
         f"batch {config.batch_size}, "
         f"{config.resolved_clock} clock) -> {args.out}")
    profile_archs(
        table, archs, config, path=args.out, chunk=args.chunk, rounds=args.rounds, progress=_Progress("profile"),
        timer=timer, pool_contexts=True,
    )
    table.save(args.out)
    if calibration_archs:
        profile_archs(table, calibration_archs, config, path=args.out, chunk=args.chunk, rounds=args.rounds,
                      timer=timer)
        _say(f"calibrate: measuring {len(calibration_archs)} architectures end to end")
        cal = calibrate(table, calibration_archs, config, rounds=args.rounds, progress=_Progress("calibrate"),
                        timer=timer)
        table.save(args.out)
        _say(f"calibrate: {cal.describe()}")
    print(
        f"{args.out}: {len(table)} signatures ({config.backend} {config.precision}, {config.threads} thread(s), "
        f"batch {config.batch_size})"
    )
    if coverage is not None:
        print(coverage.describe(table, args.out))
    elif args.space:
        print(coverage_line(args.space, table, args.out, args.resolution))
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from mixnas.evaluators.latency.predictor import load_predictor

    predictor = load_predictor(args.lut, measure_missing=args.measure_missing)
    archs = _resolve(args.archs, args.resolution)
    before = len(predictor.table)
    rows = []
    for spec, arch in zip(args.archs, archs):
        mean, std = predictor.predict(arch)
        rows.append({"arch": spec, "id": arch.id, "resolution": arch.resolution, "mean_ms": mean, "std_ms": std})
    if len(predictor.table) > before:  # the predictor has added them to the file
        _say(f"predict: measured {len(predictor.table) - before} missing signatures into {args.lut}")
    if args.json:
        json.dump({"lut": args.lut, "backend": predictor.table.backend, "precision": predictor.table.precision,
                   "results": rows}, sys.stdout)
        sys.stdout.write("\n")
        return 0
    for r in rows:
        print(f"{r['arch'][:40]:<40} {r['resolution']:>4}px  {r['mean_ms']:.3f} ± {r['std_ms']:.3f} ms")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from mixnas.evaluators.latency.lut import LatencyTable
    from mixnas.evaluators.latency.validate import plot_scatter, validate_space

    table = LatencyTable.load(args.lut)
    overrides = {
        k: v
        for k, v in (("repeats", args.repeats), ("warmup", args.warmup), ("min_seconds", args.min_seconds))
        if v is not None
    }
    report = validate_space(
        table, args.space, args.n, lut=args.lut, seed=args.seed, resolution=args.resolution, overrides=overrides,
        rounds=args.rounds, chunk=args.chunk, strict=args.strict, timer=_timer(args), progress=_Progress,
        say=lambda line: _say(f"validate: {line}"),
    )
    m = report.metrics
    for warning in m["warnings"]:
        _say(f"validate: warning: {warning}")
    if args.plot:
        plot_scatter(report, args.plot, title=f"{args.space} space, {m['backend']} {m['precision']}, "
                     f"{m['threads']} thread(s)")
        _say(f"validate: plot written to {args.plot}")
    if args.json:
        json.dump(report.to_dict(), sys.stdout)
        sys.stdout.write("\n")
    else:
        _print_validation(m, args.space)
    return 0


def _print_validation(m: dict[str, Any], space: str) -> None:
    """The validation report as a few lines for people."""
    print(f"latency predictor on {m['n']} architectures of {space} ({m['backend']} {m['precision']}, "
          f"{m['threads']} thread(s)):")
    print(f"  within ±5%  {100 * m['within_5pct']:5.1f}%    within ±10% {100 * m['within_10pct']:5.1f}%")
    print(
        f"  RMSE {m['rmse_ms']:.3f} ms   RMSPE {m['rmspe']:.2f}%   MAPE {m['mape']:.2f}%   "
        f"max {m['max_abs_pct']:.1f}%"
    )
    print(f"  Spearman {m['spearman']:.4f}   Kendall {m['kendall']:.4f}")
    print(f"  MACs alone: Spearman {m['macs_spearman']:.4f}   Kendall {m['macs_kendall']:.4f}")
    if "halves_spearman" in m:
        print(f"  measurement repeatability (even vs odd rounds): Spearman {m['halves_spearman']:.4f}   "
              f"RMSPE {m['halves_rmspe']:.2f}%")
    if "uncorrected_within_10pct" in m:
        print(f"  without drift correction: within ±10% {100 * m['uncorrected_within_10pct']:.1f}%   "
              f"RMSPE {m['uncorrected_rmspe']:.2f}%   Spearman {m['uncorrected_spearman']:.4f}   "
              f"(drift factors {min(m['drift_factors']):.3f}-{max(m['drift_factors']):.3f})")


def run_coverage(args: argparse.Namespace) -> int:
    from mixnas.evaluators.latency.lut import LatencyTable

    table = LatencyTable.load(args.lut)
    coverage = space_coverage(args.space, args.resolution)
    missing = [s for s in coverage.signatures if s not in table]
    if args.json:
        json.dump({"space": args.space, "lut": args.lut, "signatures": len(coverage),
                   "held": len(coverage) - len(missing), "missing": missing}, sys.stdout)
        sys.stdout.write("\n")
        return 0
    print(coverage.describe(table, args.lut))
    if missing:
        print(f"missing e.g. {missing[0]}; add them with: mixnas latency profile --space {args.space} --exhaustive "
              f"--out {args.lut} (same measurement options as the table)")
    return 0


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

    config = _config(args)
    _, _, archs = sample_archs(args.space, args.n, args.seed, args.resolution)
    _say(f"export-layers: {len(archs)} architectures of {args.space!r} -> {args.out}")
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
            _say(f"  {done}/{total} models written ({time.monotonic() - started:.0f} s)")

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
            _say(f"import-results: calibration {imported.table.calibration.describe()}")
        for line in [*imported.notes, *filter(None, [imported.coarse_line()])]:
            _say(f"import-results: warning: {line}")
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
        _say(f"import-results: calibration {table.calibration.describe()}")
    print(f"{args.out}: {len(table)} signatures measured on {table.describe_device()}")
    return 0

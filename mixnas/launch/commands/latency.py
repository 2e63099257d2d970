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
from typing import Any

from mixnas import bounds
from mixnas.evaluators.latency.measure import MEASURE_RANGES
from mixnas.search_space.arch import MAX_RESOLUTION
from mixnas.errors import LatencyTableError
from mixnas.evaluators.latency.measure import DEFAULT_ROUNDS
from mixnas.evaluators.latency.profile import DEFAULT_CHUNK
from mixnas.evaluators.latency.sampling import (
    PROFILE_SEED,
    VALIDATE_SEED,
    coverage_line,
    sample_archs,
    space_coverage,
)
from mixnas.launch.commands.latency_files import DEFAULT_CALIBRATION, DEFAULT_PROFILE_SAMPLES, add_file_actions
from mixnas.launch.commands.latency_options import (
    Progress,
    measure_config_of,
    measure_options,
    remote_options,
    resolve_archs,
    say,
    timer_of,
)



def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "latency",
        help="measure latency, build and validate a latency lookup table",
        description="On-device latency: end-to-end measurement, a per-layer lookup table (LUT), its predictor "
        "and a validation report. See docs/latency.md.",
    )
    cmds = p.add_subparsers(dest="latency_command", metavar="ACTION")
    cmds.required = True
    for add in (_add_measure, _add_profile, _add_predict, _add_validate, _add_coverage):
        add(cmds)
    add_file_actions(cmds)


def _add_measure(cmds: argparse._SubParsersAction) -> None:
    m = cmds.add_parser("measure", help="measure architectures end to end")
    m.add_argument("archs", nargs="+", metavar="ARCH", help="preset name, block strings or file")
    measure_options(m)
    m.add_argument("--resolution", type=bounds.integer(1, MAX_RESOLUTION).arg(), help="input resolution (default: the architecture's)")
    m.add_argument("--json", action="store_true", help="print one JSON document")
    remote_options(m)
    m.set_defaults(func=run_measure)


def _add_profile(cmds: argparse._SubParsersAction) -> None:
    pr = cmds.add_parser("profile", help="profile the layer signatures of a space or architectures into a LUT")
    src = pr.add_mutually_exclusive_group(required=True)
    src.add_argument("--space", help="search space: preset name (tiny, mixnet, ...) or YAML file")
    src.add_argument("--arch", nargs="+", metavar="ARCH", help="architectures (preset names, block strings, files)")
    count = pr.add_mutually_exclusive_group()
    count.add_argument(
        "-n",
        type=bounds.integer(1, 1_000_000).arg(),
        default=None,
        help=f"architectures sampled from the space (default {DEFAULT_PROFILE_SAMPLES})",
    )
    count.add_argument(
        "--exhaustive",
        action="store_true",
        help="profile every layer signature the space can produce (refused, with the count, for spaces too large "
        "to list); a search then never meets a missing signature",
    )
    pr.add_argument("--seed", type=bounds.SEED.arg(), default=PROFILE_SEED, help=f"sampling seed (default {PROFILE_SEED})")
    pr.add_argument(
        "--out", required=True, help="LUT JSON file; an existing one is extended (only missing signatures are measured)"
    )
    pr.add_argument(
        "--calibrate",
        type=bounds.integer(0, 10_000).arg(),
        default=DEFAULT_CALIBRATION,
        metavar="K",
        help=f"fit the per-network correction on K architectures measured end to end "
        f"(default {DEFAULT_CALIBRATION}; 0: none)",
    )
    pr.add_argument("--resolution", type=bounds.integer(1, MAX_RESOLUTION).arg(), help="override the architectures' input resolution")
    measure_options(pr)
    pr.add_argument(
        "--chunk",
        type=bounds.integer(1, 10_000).arg(),
        default=DEFAULT_CHUNK,
        help=f"networks timed part by part in one interleaved measurement, saved after each (default {DEFAULT_CHUNK}; "
        "grows for small networks, see --min-seconds). Fewer, larger chunks make a more repeatable table: each "
        "chunk is rescaled to the table's speed on its own; 224-px spaces: one chunk for the whole sample, e.g. 40",
    )
    remote_options(pr)
    pr.set_defaults(func=run_profile)


def _add_predict(cmds: argparse._SubParsersAction) -> None:
    pd = cmds.add_parser("predict", help="predict latency from a LUT")
    pd.add_argument("archs", nargs="+", metavar="ARCH")
    pd.add_argument("--lut", required=True)
    pd.add_argument("--resolution", type=bounds.integer(1, MAX_RESOLUTION).arg(), help="override the architectures' input resolution")
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
    v.add_argument("-n", type=bounds.integer(1, 1_000_000).arg(), default=50, help="architectures to measure (default 50)")
    v.add_argument(
        "--seed",
        type=bounds.SEED.arg(),
        default=VALIDATE_SEED,
        help=f"sampling seed (default {VALIDATE_SEED}; calibration architectures are skipped)",
    )
    v.add_argument("--resolution", type=bounds.integer(1, MAX_RESOLUTION).arg(), help="override the architectures' input resolution")
    v.add_argument("--plot", help="write a scatter plot PNG here")
    v.add_argument("--json", action="store_true", help="print exactly one JSON document on stdout")
    v.add_argument(
        "--strict",
        action="store_true",
        help="fail if the LUT lacks a signature "
        "(default: measure it first, inside other networks of the space, and save it)",
    )
    v.add_argument("--repeats", type=MEASURE_RANGES["repeats"].arg(), default=None, help="timed runs per network (default: the LUT's)")
    v.add_argument("--warmup", type=MEASURE_RANGES["warmup"].arg(), default=None, help="untimed runs per network (default: the LUT's)")
    v.add_argument("--rounds", type=bounds.integer(1, 10_000).arg(), default=DEFAULT_ROUNDS, help=f"interleaving rounds (default {DEFAULT_ROUNDS})")
    v.add_argument(
        "--min-seconds", type=MEASURE_RANGES["min_seconds"].arg(), default=None, help="least wall time one measurement spans (default: the LUT's)"
    )
    v.add_argument(
        "--chunk",
        type=bounds.integer(1, 10_000).arg(),
        default=DEFAULT_CHUNK,
        help=f"when the LUT lacks signatures: the other networks they are timed in per interleaved measurement "
        f"(default {DEFAULT_CHUNK}; as profile --chunk)",
    )
    remote_options(v)
    v.set_defaults(func=run_validate)


def _add_coverage(cmds: argparse._SubParsersAction) -> None:
    cv = cmds.add_parser("coverage", help="how many of the signatures a space can produce a LUT holds")
    cv.add_argument("--space", required=True, help="search space: preset name or YAML file")
    cv.add_argument("--lut", required=True)
    cv.add_argument("--resolution", type=bounds.integer(1, MAX_RESOLUTION).arg(), help="override the architectures' input resolution")
    cv.add_argument("--json", action="store_true", help="print one JSON document")
    cv.set_defaults(func=run_coverage)


# --- actions --------------------------------------------------------------------------------------------------
def run_measure(args: argparse.Namespace) -> int:
    from mixnas.evaluators.latency.measure import device_metadata, measure_archs

    timer = timer_of(args)
    config = measure_config_of(args, timer)
    archs = resolve_archs(args.archs, args.resolution)
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
        say(f"profile: the space {args.space!r} can produce {len(coverage)} signatures "
             f"(found in {coverage.combinations} networks); {len(archs)} networks hold them all")
        # calibrate on ordinary members of the space, not on the enumeration's networks
        if not args.calibrate:
            return archs, []
        return archs, sample_archs(args.space, args.calibrate, args.seed, args.resolution)[2]
    if args.space:
        n = DEFAULT_PROFILE_SAMPLES if args.n is None else args.n
        _, _, archs = sample_archs(args.space, n, args.seed, args.resolution)
        return archs, choose_calibration(archs, args.calibrate)
    archs = resolve_archs(args.arch, args.resolution)
    return archs, archs if args.calibrate else []


def run_profile(args: argparse.Namespace) -> int:
    from mixnas.evaluators.latency.profile import (
        calibrate, load_or_create, profile_archs, select_contexts, table_config,
    )
    from mixnas.evaluators.latency.signatures import arch_signatures

    timer = timer_of(args)
    config = measure_config_of(args, timer)
    if args.arch and (args.n is not None or args.exhaustive):
        raise LatencyTableError("-n and --exhaustive choose architectures of --space; with --arch, leave them out")
    coverage = space_coverage(args.space, args.resolution) if args.exhaustive else None
    archs, calibration_archs = _profile_archs(args, coverage)
    table = load_or_create(args.out, config, timer, archs=[*archs, *calibration_archs])
    config = table_config(config, table)
    if timer is not None:
        say(f"profile: measuring on {table.describe_device()}")
    distinct = {s for a in archs for s in arch_signatures(a)}
    missing = table.missing(s for a in archs for s in arch_signatures(a))
    contexts = select_contexts(table, archs)
    say(f"profile: {len(archs)} architectures, {len(distinct)} distinct signatures, {len(missing)} to measure "
         f"in {len(contexts)} networks ({config.backend} {config.precision}, {config.threads} thread(s), "
         f"batch {config.batch_size}, "
         f"{config.resolved_clock} clock) -> {args.out}")
    profile_archs(
        table, archs, config, path=args.out, chunk=args.chunk, rounds=args.rounds, progress=Progress("profile"),
        timer=timer, pool_contexts=True,
    )
    table.save(args.out)
    if calibration_archs:
        profile_archs(table, calibration_archs, config, path=args.out, chunk=args.chunk, rounds=args.rounds,
                      timer=timer)
        say(f"calibrate: measuring {len(calibration_archs)} architectures end to end")
        cal = calibrate(table, calibration_archs, config, rounds=args.rounds, progress=Progress("calibrate"),
                        timer=timer)
        table.save(args.out)
        say(f"calibrate: {cal.describe()}")
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
    archs = resolve_archs(args.archs, args.resolution)
    before = len(predictor.table)
    rows = []
    for spec, arch in zip(args.archs, archs):
        mean, std = predictor.predict(arch)
        rows.append({"arch": spec, "id": arch.id, "resolution": arch.resolution, "mean_ms": mean, "std_ms": std})
    if len(predictor.table) > before:  # the predictor has added them to the file
        say(f"predict: measured {len(predictor.table) - before} missing signatures into {args.lut}")
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
        rounds=args.rounds, chunk=args.chunk, strict=args.strict, timer=timer_of(args), progress=Progress,
        say=lambda line: say(f"validate: {line}"),
    )
    m = report.metrics
    for warning in m["warnings"]:
        say(f"validate: warning: {warning}")
    if args.plot:
        plot_scatter(report, args.plot, title=f"{args.space} space, {m['backend']} {m['precision']}, "
                     f"{m['threads']} thread(s)")
        say(f"validate: plot written to {args.plot}")
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



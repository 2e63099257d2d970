"""The options and helpers every ``mixnas latency`` action shares: measurement settings, the remote agent's
options, architecture arguments, progress lines on stderr."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Sequence

from mixnas import bounds
from mixnas.evaluators.latency.measure import MEASURE_RANGES
from mixnas.errors import LatencyTableError
from mixnas.evaluators.latency.backends import BACKEND_NAMES, PRECISIONS
from mixnas.evaluators.latency.measure import DEFAULT_MIN_SECONDS, DEFAULT_REPEATS, DEFAULT_ROUNDS
from mixnas.evaluators.latency.sampling import with_resolution
from mixnas.search_space.arch import Architecture


def remote_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--remote", metavar="URL", help="measure on the latency agent at URL (http://HOST:PORT; "
                   "implies --backend onnxruntime)")
    p.add_argument("--token-file", metavar="F", help="file holding the agent's token (with --remote)")


def timer_of(args: argparse.Namespace) -> Any:
    """The remote timer of ``--remote`` / ``--token-file``, or None (this machine)."""
    if args.remote is None:
        if args.token_file is not None:
            raise LatencyTableError("--token-file goes with --remote URL")
        return None
    if args.token_file is None:
        raise LatencyTableError("--remote needs --token-file F (the file holding the agent's token)")
    from mixnas.evaluators.latency.remote import remote_timer

    return remote_timer(args.remote, args.token_file)


def measure_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=BACKEND_NAMES, default=None,
                   help="torch (default) or onnxruntime (the default with --remote, for export-layers and for "
                   "--precision int8)")
    p.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="float32 (default) or int8 (onnxruntime: static QDQ quantisation, per-channel weights)")
    p.add_argument("--calibration-data", metavar="DATA", default=None,
                   help="int8: images that calibrate the quantisation (digits, an image folder, an IDX / CIFAR / "
                   "npz file); default: a stand-in of seeded standard-normal images, recorded in the table")
    p.add_argument("--threads", type=MEASURE_RANGES["threads"].arg(), default=None,
                   help="CPU threads (default 1; with --remote, the agent's --threads)")
    p.add_argument("--batch-size", type=MEASURE_RANGES["batch_size"].arg(), default=1)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="torch backend device")
    p.add_argument("--warmup", type=MEASURE_RANGES["warmup"].arg(), default=10, help="untimed runs (default 10)")
    p.add_argument("--repeats", type=MEASURE_RANGES["repeats"].arg(), default=DEFAULT_REPEATS, help=f"timed runs (default {DEFAULT_REPEATS})")
    p.add_argument("--rounds", type=bounds.integer(1, 10_000).arg(), default=DEFAULT_ROUNDS, help=f"interleaving rounds (default {DEFAULT_ROUNDS})")
    p.add_argument(
        "--min-seconds",
        type=MEASURE_RANGES["min_seconds"].arg(),
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


def measure_config_of(args: argparse.Namespace, timer: Any = None) -> Any:
    from mixnas.evaluators.latency.measure import MeasureConfig

    threads = args.threads
    if threads is None:
        threads = timer.client.info().get("threads", 1) if timer is not None else 1
    onnx_only = getattr(args, "remote", None) is not None or getattr(args, "onnx_default", False)
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


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def resolve_archs(specs: Sequence[str], resolution: int | None) -> list[Architecture]:
    from mixnas.launch.archref import resolve_cli_arch

    return [with_resolution(resolve_cli_arch(s), resolution) for s in specs]


class Progress:
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
        say(f"{self.what}: {done}/{total} ({elapsed:.0f} s, ~{eta:.0f} s left){tail}")

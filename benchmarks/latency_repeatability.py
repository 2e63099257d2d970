"""Repeatability of end-to-end latency measurements with and without a minimum time span (``min_seconds``).

Samples N architectures of a space, prepares them once, then measures all of them several times in alternating
passes: one pass with ``min_seconds=0`` (only ``--rounds`` rounds), one with ``--span`` seconds, and so on. Two
passes of the same kind should agree; how well they do is the measurement's repeatability on this machine and
the ceiling for any latency predictor validated here. Printed per kind: every pass's wall time, rounds and mean
level, then for every pair of passes the Spearman rank correlation, the per-network RMS disagreement with the
level removed, and the ratio of their levels (a pass that fell into a slow phase of the machine shows here).

    .venv/bin/python benchmarks/latency_repeatability.py [--space tiny] [-n 25] [--backend onnxruntime]
        [--span 4] [--passes 4]

Run it with nothing else busy on the machine: it measures the machine as much as the code.
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import replace

import numpy as np

from mixnas.evaluators.latency.backends import BACKEND_NAMES
from mixnas.evaluators.latency.measure import (
    DEFAULT_MIN_SECONDS,
    DEFAULT_ROUNDS,
    LocalTimer,
    MeasureConfig,
    network_spec,
)
from mixnas.evaluators.latency.validate import spearman
from mixnas.search_space.spaces import load_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="tiny")
    parser.add_argument("-n", type=int, default=25, help="architectures (default 25)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--backend", choices=BACKEND_NAMES, default="onnxruntime")
    parser.add_argument("--precision", choices=["float32", "int8"], default="float32")
    parser.add_argument("--span", type=float, default=DEFAULT_MIN_SECONDS, help="min_seconds of the spanned passes")
    parser.add_argument("--passes", type=int, default=4, help="passes of each kind (default 4)")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    args = parser.parse_args()

    space = load_space(args.space)
    rng = np.random.default_rng(args.seed)
    archs = [space.decode(space.sample(rng)) for _ in range(args.n)]
    config = MeasureConfig(backend=args.backend, precision=args.precision)
    specs = [network_spec(a, config.batch_size) for a in archs]
    timer = LocalTimer(limit=len(specs))  # networks converted once, timed in every pass

    values: dict[float, list[np.ndarray]] = {0.0: [], args.span: []}
    for p in range(args.passes):
        for span in values:
            start = time.perf_counter()
            timed, _ = timer.time([[s] for s in specs], replace(config, min_seconds=span), rounds=args.rounds)
            measured = [timed[s.key] for s in specs]
            v = np.array([m.value(config.statistic) for m in measured])
            values[span].append(v)
            runs = measured[0].count
            print(
                f"pass {p} span {span:g} s: {time.perf_counter() - start:.1f} s, {runs} runs a network, "
                f"mean level {v.mean():.4f} ms",
                flush=True,
            )
    for span, passes in values.items():
        print(f"span {span:g} s ({args.backend}, {args.n} {args.space} networks, {config.statistic}):")
        for (i, a), (j, b) in itertools.combinations(enumerate(passes), 2):
            ratio = a / b
            level = float(np.median(ratio))
            spread = 100 * float(np.sqrt(np.mean((ratio / level - 1) ** 2)))
            print(f"  pass {i} vs {j}: Spearman {spearman(a, b):.4f}  per-network RMS {spread:.2f}%  level ratio {level:.3f}")


if __name__ == "__main__":
    main()

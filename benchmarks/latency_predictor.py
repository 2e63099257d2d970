"""Cost of a latency prediction from a lookup table (goal: at most 1 ms per architecture).

Builds a synthetic table that covers N sampled architectures of a space (no measurement; every entry 1 ms), then
times ``LatencyPredictor.predict`` on first sight of each architecture (signatures computed) and on repeated
calls (signatures cached), and ``count(arch).macs`` as a baseline from the same run.

    .venv/bin/python benchmarks/latency_predictor.py [--space mixnet] [-n 2000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mixnas.evaluators.latency.lut import Entry, LatencyTable
from mixnas.evaluators.latency.predictor import LatencyPredictor
from mixnas.evaluators.latency.signatures import arch_signatures
from mixnas.search_space.counting import count
from mixnas.search_space.spaces import load_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="mixnet")
    parser.add_argument("-n", type=int, default=2000)
    args = parser.parse_args()

    space = load_space(args.space)
    rng = np.random.default_rng(0)
    archs = [space.decode(space.sample(rng)) for _ in range(args.n)]
    table = LatencyTable(backend="synthetic", threads=1, batch_size=1)
    for arch in archs:
        for sig in arch_signatures(arch):
            table.entries.setdefault(sig, Entry(ms=1.0, mean_ms=1.0, std_ms=0.1))
    predictor = LatencyPredictor(table)

    start = time.perf_counter()
    for arch in archs:
        predictor.predict(arch)
    first = (time.perf_counter() - start) / len(archs)

    start = time.perf_counter()
    for _ in range(5):
        for arch in archs:
            predictor.predict(arch)
    cached = (time.perf_counter() - start) / (5 * len(archs))

    start = time.perf_counter()
    for arch in archs:
        count(arch)
    macs = (time.perf_counter() - start) / len(archs)

    layers = sum(len(a.layers()) for a in archs) / len(archs)
    print(f"space {args.space}: {len(archs)} architectures, {layers:.1f} block repeats each, {len(table)} signatures")
    print(f"predict, first sight : {1e6 * first:8.1f} us/arch  ({first / macs:.2f}x count(arch))")
    print(f"predict, cached      : {1e6 * cached:8.1f} us/arch  ({cached / macs:.2f}x count(arch))")
    print(f"count(arch) (MACs)   : {1e6 * macs:8.1f} us/arch")
    print(f"goal <= 1 ms/arch    : {'met' if first <= 1e-3 else 'NOT met'}")


if __name__ == "__main__":
    main()

"""Sample + decode + count rate of a search space (goal: >= 5,000 architectures per second on one core).

Evolution and RL call sample / mutate, decode and the constraint count in their inner loop. This script times
that loop for the ``mixnet`` preset and, as a baseline measured in the same run, the straightforward route
(``Architecture(...)`` with full validation + ``counting.count``). It prints wall-clock and CPU-time rates: on a
shared machine the CPU-time rate is the one-core figure.

    python benchmarks/space_sampling.py [--space mixnet] [-n 20000] [--warmup 20000] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mixnas.search_space.arch import Architecture
from mixnas.search_space.counting import count
from mixnas.search_space.spaces import StageSpace, load_space


def _time(fn, n: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn(n)
    return n / (time.perf_counter() - wall), n / max(time.process_time() - cpu, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="mixnet")
    parser.add_argument("-n", type=int, default=20000, help="architectures timed")
    parser.add_argument("--warmup", type=int, default=20000, help="architectures drawn first to fill the caches")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    space = load_space(args.space)
    if not isinstance(space, StageSpace):
        raise SystemExit(f"{args.space} is not a stage space")
    rng = np.random.default_rng(args.seed)

    def fast(n: int) -> None:
        for _ in range(n):
            encoding = space.sample(rng)
            space.decode(encoding)
            space.count(encoding)

    def baseline(n: int) -> None:
        for _ in range(n):
            arch = space.decode(space.sample(rng))
            count(Architecture(blocks=arch.blocks, global_params=arch.global_params, name=arch.name))

    cold = _time(fast, min(args.n, 2000))  # fresh caches (the first draws of a search)
    fast(args.warmup)
    warm = _time(fast, args.n)
    base = _time(baseline, max(args.n // 10, 200))
    print(f"space {space.name}: {space.cardinality:.3e} architectures, {len(space.dimensions)} dimensions")
    print(f"{'route':<38} {'wall /s':>10} {'cpu /s':>10}")
    print(f"{'sample+decode+count, cold caches':<38} {cold[0]:>10,.0f} {cold[1]:>10,.0f}")
    print(f"{'sample+decode+count, warm caches':<38} {warm[0]:>10,.0f} {warm[1]:>10,.0f}")
    print(f"{'baseline: validated record + count()':<38} {base[0]:>10,.0f} {base[1]:>10,.0f}")
    print(f"speed-up over baseline (cpu): {warm[1] / base[1]:.1f}x; goal 5,000/s: "
          f"{'met' if warm[1] >= 5000 else 'NOT met'} (cpu rate, warm)")


if __name__ == "__main__":
    main()

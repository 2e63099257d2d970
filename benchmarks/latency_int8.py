"""int8 against float32 on this machine: the speed-up per block kind, and how often the two precisions rank
two networks differently.

Input: a float32 and an int8 lookup table of the same space, backend and machine (``mixnas latency profile
--precision float32|int8``). The script

1. groups the signatures both tables hold by block kind (kernel group count, squeeze-and-excite, expansion ratio;
   stem, head and classifier apart) and prints the median int8 / float32 ratio of their entries (below 1: int8
   is faster), with the baseline of the comparison being the float32 entry of the same part timed the same way;
2. measures ``-n`` held-out networks of the space end to end in both precisions (interleaved, the tables'
   settings) and prints the share of network pairs whose order differs between float32 and int8, measured and
   as each table predicts it; a search that ranks by float32 latency while deploying int8 is wrong on that share
   of its comparisons.

    python benchmarks/latency_int8.py --space tiny --float32 f32.json --int8 int8.json -n 100 [--json OUT]
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import statistics
import sys
from collections import defaultdict

from mixnas.evaluators.latency.lut import LatencyTable
from mixnas.evaluators.latency.measure import measure_archs
from mixnas.evaluators.latency.predictor import LatencyPredictor
from mixnas.evaluators.latency.profile import config_from_table
from mixnas.evaluators.latency.sampling import VALIDATE_SEED, sample_archs
from mixnas.evaluators.latency.validate import spearman

_BLOCK = re.compile(r"^mb_r\d+_i(\d+)_m(\d+)_o\d+_s(\d)_k([\d.]+)_.*?_se(\d+)_")


def block_kind(signature: str) -> str:
    """``"3 groups, SE, expand 6"`` for a block signature; ``stem`` / ``head`` / ``classifier`` otherwise."""
    m = _BLOCK.match(signature)
    if m is None:
        return {"stem": "stem", "head": "head", "fc": "classifier"}.get(signature.split("_", 1)[0], "other")
    width_in, mid, _, kernels, se = m.groups()
    groups = len(kernels.split("."))
    expand = round(int(mid) / int(width_in))
    return f"{groups} group{'s' if groups > 1 else ''}, {'SE' if int(se) else 'no SE'}, expand {expand}"


def discordant_share(a: list[float], b: list[float]) -> float:
    """The share of pairs ordered differently by ``a`` and ``b`` (ties in either count as agreeing)."""
    pairs = list(itertools.combinations(range(len(a)), 2))
    wrong = sum(1 for i, j in pairs if (a[i] - a[j]) * (b[i] - b[j]) < 0)
    return wrong / len(pairs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="tiny")
    parser.add_argument("--float32", required=True, help="float32 LUT")
    parser.add_argument("--int8", required=True, help="int8 LUT of the same backend and machine")
    parser.add_argument("-n", type=int, default=100, help="held-out networks measured in both precisions")
    parser.add_argument("--seed", type=int, default=VALIDATE_SEED)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    f32, i8 = LatencyTable.load(args.float32), LatencyTable.load(args.int8)
    if (f32.precision, i8.precision) != ("float32", "int8") or f32.backend != i8.backend:
        print(f"expected a float32 and an int8 table of one backend, got {f32.backend} {f32.precision} and "
              f"{i8.backend} {i8.precision}", file=sys.stderr)
        return 2
    ratios: dict[str, list[float]] = defaultdict(list)
    for sig in sorted(set(f32.entries) & set(i8.entries)):
        ratios[block_kind(sig)].append(i8.entries[sig].ms / f32.entries[sig].ms)
    print(f"int8 / float32 per part ({f32.backend}, {len(set(f32.entries) & set(i8.entries))} signatures in both "
          "tables; baseline: the float32 entry of the same part):")
    kinds = {}
    for kind, values in sorted(ratios.items(), key=lambda kv: statistics.median(kv[1])):
        kinds[kind] = {"n": len(values), "median": statistics.median(values), "min": min(values), "max": max(values)}
        print(f"  {kind:<28} n {len(values):>4}   median {statistics.median(values):.3f}   "
              f"range {min(values):.3f}-{max(values):.3f}")

    _, _, archs = sample_archs(args.space, args.n, args.seed)
    measured = {}
    for name, table in (("float32", f32), ("int8", i8)):
        config = config_from_table(table)
        print(f"measuring {len(archs)} networks end to end in {name} ...", file=sys.stderr, flush=True)
        values = measure_archs(archs, config)
        measured[name] = [m.value(config.statistic, corrected=False) for m in values]
    predicted = {}
    for name, table in (("float32", f32), ("int8", i8)):
        predictor = LatencyPredictor(table)
        missing = table.missing(s for a in archs for s in predictor.signatures(a))
        predicted[name] = None if missing else [predictor.predict(a)[0] for a in archs]
    figures = {
        "space": args.space, "n": len(archs), "backend": f32.backend, "per_kind": kinds,
        "speedup_networks_median": statistics.median(f / i for f, i in zip(measured["float32"], measured["int8"])),
        "measured_discordant_pairs": discordant_share(measured["float32"], measured["int8"]),
        "measured_spearman": spearman(measured["float32"], measured["int8"]),
    }
    if predicted["float32"] and predicted["int8"]:
        figures["predicted_discordant_pairs"] = discordant_share(predicted["float32"], predicted["int8"])
        figures["float32_table_vs_int8_measured_discordant"] = discordant_share(predicted["float32"],
                                                                                measured["int8"])
    print(f"{len(archs)} held-out {args.space} networks, end to end: float32 / int8 median "
          f"{figures['speedup_networks_median']:.3f}; pairs ordered differently: measured "
          f"{100 * figures['measured_discordant_pairs']:.1f}% (Spearman {figures['measured_spearman']:.3f})")
    if "predicted_discordant_pairs" in figures:
        print(f"  by the tables: {100 * figures['predicted_discordant_pairs']:.1f}%; the float32 table against int8 "
              f"measurements: {100 * figures['float32_table_vs_int8_measured_discordant']:.1f}%")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(figures, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What folding every batch norm before conversion is worth: ONNX Runtime networks exported as they were before
(batch norms after a MixConv with several kernel groups, or after a grouped 1x1 convolution, left in the graph:
the converters fold a batch norm only right after one ``Conv``) against the same networks folded
(:func:`mixnas.models.folding.fold_batch_norms`, what mixnas converts and exports now).

For ``-n`` networks of a space (the validation seed's sample), float32 and int8 (ONNX Runtime static QDQ, the
stand-in calibration images), all four variants of each network are timed in interleaved rounds by the project's
timing rules (one thread, thread clock, the least of the runs). Printed per network and as medians: folded /
unfolded time per precision (below 1: folding is faster), int8 / float32 before and after folding, and the
largest output difference between the folded and the unfolded float32 network.

    python benchmarks/batch_norm_folding.py --space tiny -n 30 [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import numpy as np

from mixnas.evaluators.latency.agent import onnx_stage
from mixnas.evaluators.latency.backends import calibration_inputs, export_onnx, quantize_onnx
from mixnas.evaluators.latency.measure import arch_input_shape, build_network
from mixnas.evaluators.latency.sampling import VALIDATE_SEED, sample_archs
from mixnas.evaluators.latency.timing import Timing, statistic_of, summarize, time_pipelines

VARIANTS = ("float32 unfolded", "float32 folded", "int8 unfolded", "int8 folded")


def time_network(arch, timing: Timing) -> dict[str, float]:
    """ms of each variant of ``arch`` (:data:`VARIANTS`) and the largest float32 output difference."""
    module = build_network(arch)
    shape = arch_input_shape(arch, 1)
    calibration = list(calibration_inputs(None, shape))
    models = {}
    for folded in (False, True):
        name = "folded" if folded else "unfolded"
        float_model = export_onnx(module, shape, fold_batch_norms=folded)
        models[f"float32 {name}"] = float_model
        models[f"int8 {name}"] = quantize_onnx(float_model, calibration)
    x = np.ascontiguousarray(calibration[0], dtype=np.float32)
    stages = {k: onnx_stage(m, timing.threads) for k, m in models.items()}
    runs, _ = time_pipelines([([k], [stages[k]], x) for k in VARIANTS], timing)
    out = {k: statistic_of(summarize(runs[k][0] + runs[k][1]), timing.statistic) for k in VARIANTS}
    out["max_abs_diff"] = float(np.abs(stages["float32 folded"](x) - stages["float32 unfolded"](x)).max())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="tiny")
    parser.add_argument("-n", type=int, default=30, help="networks (default 30)")
    parser.add_argument("--seed", type=int, default=VALIDATE_SEED)
    parser.add_argument("--min-seconds", type=float, default=2.0, help="time span of each network's measurement")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    timing = Timing(warmup=20, repeats=100, rounds=10, min_seconds=args.min_seconds, clock="thread", threads=1)
    _, _, archs = sample_archs(args.space, args.n, args.seed)
    rows = []
    for i, arch in enumerate(archs):
        r = {"arch_id": arch.id, **time_network(arch, timing)}
        rows.append(r)
        if not args.json:
            print(f"{i + 1:>3}/{len(archs)} {arch.id}  " + "  ".join(f"{k} {r[k]:.4f}" for k in VARIANTS)
                  + f"  max|diff| {r['max_abs_diff']:.1e}", file=sys.stderr, flush=True)

    def median(f) -> float:
        return round(statistics.median(f(r) for r in rows), 4)

    summary = {
        "networks": len(rows),
        "float32 folded / unfolded": median(lambda r: r["float32 folded"] / r["float32 unfolded"]),
        "int8 folded / unfolded": median(lambda r: r["int8 folded"] / r["int8 unfolded"]),
        "int8 / float32, unfolded": median(lambda r: r["int8 unfolded"] / r["float32 unfolded"]),
        "int8 / float32, folded": median(lambda r: r["int8 folded"] / r["float32 folded"]),
        "int8 faster than float32, folded (share)": round(
            sum(r["int8 folded"] < r["float32 folded"] for r in rows) / len(rows), 3),
        "max abs output difference (float32)": max(r["max_abs_diff"] for r in rows),
    }
    if args.json:
        print(json.dumps({"summary": summary, "timing": timing.__dict__, "rows": rows}))
    else:
        for k, v in summary.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

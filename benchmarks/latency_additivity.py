"""Is a network the sum of its parts? Whole networks against their own parts timed at the same moment, and
against the lookup table's entries.

For each architecture (a table's calibration networks by default, or ``-n`` sampled ones), one interleaved
measurement (the table's measurement settings and backend, this machine) times the whole network and, beside it,
the same network part by part in context (what ``mixnas latency profile`` does for a table). It prints per
network: the whole network, the sum of its own parts, the sum of the table's entries for those parts, and the
ratios whole / own parts and whole / table. Over the networks:

* ``own_ratio_spread_pct``: half the spread (p90 / p10) of whole / own parts. Small means the additive model
  holds on this device for this backend (the ratio is one constant a calibration fits);
* ``table_ratio_spread_pct``: the same for whole / table sum. Much larger than the first means the model is
  fine and the table's entries (each timed once, in another network, at another time) are what is off;
* ``own_fit_loo_pct`` / ``table_fit_loo_pct``: the leave-one-out error (percent) of the table's calibration
  model (``scale+offset+parts``, chosen as ``profile --calibrate`` does) fitted to whole networks against the
  sums of their own parts, and against the table's sums. A per-part call overhead makes the raw ratios spread
  with the part count while the calibration absorbs it, so these two are the figures to compare: the first is
  what the additive model can reach with perfectly fresh entries, the second what the table reaches;
* ``entry_error_pct``: RMS relative difference between the table's entry and the same part timed now, per part
  (level removed: both sums are rescaled to the same median first).

Usage (the table must have been profiled on this machine)::

    .venv/bin/python benchmarks/latency_additivity.py --lut tiny_onnxruntime.json [--space tiny -n 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

import numpy as np

from mixnas.evaluators.latency.lut import LatencyTable
from mixnas.evaluators.latency.measure import DEFAULT_ROUNDS, LocalTimer, network_spec
from mixnas.evaluators.latency.profile import check_compatible, config_from_table, context_pipeline, fit_calibration
from mixnas.evaluators.latency.signatures import arch_signatures
from mixnas.search_space.arch import Architecture


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lut", required=True, help="a latency table profiled on this machine")
    p.add_argument("--space", help="sample -n architectures of this space instead of the calibration networks")
    p.add_argument("-n", type=int, default=20, help="sampled architectures with --space (default %(default)s)")
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = p.parse_args(argv)
    table = LatencyTable.load(args.lut)
    config = config_from_table(table)
    timer = LocalTimer()
    check_compatible(table, config, timer)
    archs = _archs(args, table)
    rows = []
    for i, arch in enumerate(archs):
        whole = network_spec(arch, config.batch_size, key=f"whole:{arch.id}")  # the timer caches stages by key
        measured, _ = timer.time([[whole], context_pipeline(arch, config.batch_size)], config, rounds=args.rounds)
        sigs = arch_signatures(arch)
        own = [measured[s].value(config.statistic, corrected=False) for s in sigs]
        listed = [table.entries[s].ms if s in table.entries else float("nan") for s in sigs]
        whole_ms = measured[whole.key].value(config.statistic, corrected=False)
        rows.append({"arch_id": arch.id, "parts": len(sigs), "whole_ms": whole_ms, "own_parts_ms": sum(own),
                     "table_parts_ms": sum(listed), "own": own, "table": listed})
        print(f"{i + 1}/{len(archs)} {arch.id[:10]}: whole {whole_ms:.4f} ms, own parts {sum(own):.4f} "
              f"(x{whole_ms / sum(own):.3f}), table {sum(listed):.4f} (x{whole_ms / sum(listed):.3f})",
              file=sys.stderr, flush=True)
    result = _summary(table, args.lut, rows)
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        for key in ("n", "backend", "own_ratio_spread_pct", "table_ratio_spread_pct", "own_fit_loo_pct",
                    "table_fit_loo_pct", "entry_error_pct"):
            print(f"{key}: {result[key]}")
    return 0


def _archs(args: argparse.Namespace, table: LatencyTable) -> list[Architecture]:
    if args.space is None:
        if table.calibration is None or not table.calibration.archs:
            raise SystemExit(f"{args.lut}: no calibration networks; pass --space and -n")
        return [Architecture.from_dict(d) for d in table.calibration.archs]
    from mixnas.search_space.spaces import load_space

    space = load_space(args.space)
    rng = np.random.default_rng(args.seed)
    return [space.decode(space.sample(rng)) for _ in range(args.n)]


def _spread(values: list[float]) -> float:
    return round(50 * (np.percentile(values, 90) / np.percentile(values, 10) - 1), 2)


def _fit_loo(rows: list[dict[str, Any]], key: str) -> float | None:
    """Leave-one-out error of the calibration fitted to whole networks against ``key``'s sums."""
    fit = fit_calibration([(r["arch_id"], r[key], r["whole_ms"]) for r in rows], [r["parts"] for r in rows])
    return None if fit.loo_rmspe_pct is None else round(fit.loo_rmspe_pct, 2)


def _summary(table: LatencyTable, lut: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    complete = [r for r in rows if not np.isnan(r["table_parts_ms"])]
    level = statistics.median(r["own_parts_ms"] / r["table_parts_ms"] for r in complete) if complete else 1.0
    diffs = [o / (t * level) - 1 for r in complete for o, t in zip(r["own"], r["table"])]
    return {
        "lut": lut, "backend": table.backend, "n": len(rows), "complete": len(complete),
        "own_ratio_spread_pct": _spread([r["whole_ms"] / r["own_parts_ms"] for r in rows]),
        "table_ratio_spread_pct": _spread([r["whole_ms"] / r["table_parts_ms"] for r in complete]) if complete
        else None,
        "own_fit_loo_pct": _fit_loo(rows, "own_parts_ms"),
        "table_fit_loo_pct": _fit_loo(complete, "table_parts_ms") if complete else None,
        "entry_error_pct": round(100 * float(np.sqrt(np.mean(np.square(diffs)))), 2) if diffs else None,
        "rows": [{k: v for k, v in r.items() if k not in ("own", "table")} for r in rows],
    }


if __name__ == "__main__":
    sys.exit(main())

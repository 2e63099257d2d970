"""Does a table's drift reference read the machine, or the networks beside it? And does the table store its
calibration networks at the latency they run at alone?

For a table profiled on this machine, with its own measurement settings and backend:

1. its reference network (``settings.reference_arch`` at ``settings.reference_resolution``) timed alone (as
   ``profile`` times the baseline ``reference_ms``) against the same reference interleaved with ``-k`` of the
   table's calibration networks (as ``profile`` times it beside every chunk): a ratio above 1 is read as drift
   and rescales every measurement of the table;
2. each of those calibration networks timed alone, against its stored end-to-end latency (``calibration.points``,
   drift-corrected to the table's speed when the table was built): the baseline is the plain measurement a user
   takes of one network. A stored value below it means the table predicts low in absolute milliseconds.

docs/latency.md, run AG: at its own 32 px the reference ran +7.4% beside 224-px `mixnet` networks and the
calibration networks were stored 6-7% low; at 224 px, +1.0% and within 1.5%.

Usage (the table must have been profiled on this machine)::

    .venv/bin/python benchmarks/latency_reference.py --lut mixnet_int8.json [-k 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys

from mixnas.evaluators.latency.lut import LatencyTable
from mixnas.evaluators.latency.measure import (
    DEFAULT_ROUNDS,
    LocalTimer,
    measure_reference,
    network_spec,
    reference_spec,
)
from mixnas.evaluators.latency.profile import config_from_table
from mixnas.search_space.arch import Architecture


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lut", required=True, help="a table profiled on this machine, with calibration networks")
    parser.add_argument("-k", type=int, default=3, help="calibration networks to time (default 3, evenly spaced)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    table = LatencyTable.load(args.lut)
    config = config_from_table(table)
    cal = table.calibration
    if cal is None or not cal.archs or "reference_ms" not in table.settings:
        print("benchmarks/latency_reference.py: the table needs calibration networks and a drift reference",
              file=sys.stderr)
        return 2
    k = max(1, min(args.k, len(cal.archs)))
    picks = [round(i * (len(cal.archs) - 1) / max(k - 1, 1)) for i in range(k)]
    archs = [Architecture.from_dict(cal.archs[i]) for i in picks]
    timer = LocalTimer()
    reference = reference_spec(config)
    alone_ref = measure_reference(config, timer=timer)
    beside, _ = timer.time([[network_spec(a, config.batch_size)] for a in archs] + [[reference]], config,
                           rounds=DEFAULT_ROUNDS)
    beside_ref = beside[reference.key].value(config.statistic)
    rows = []
    for i, arch in zip(picks, archs):
        spec = network_spec(arch, config.batch_size)
        alone, _ = timer.time([[spec]], config, rounds=DEFAULT_ROUNDS)
        alone_ms = alone[spec.key].value(config.statistic)
        stored_ms = cal.points[i][2]
        rows.append({"arch_id": arch.id, "stored_ms": stored_ms, "alone_ms": alone_ms,
                     "beside_ms": beside[spec.key].value(config.statistic), "stored_vs_alone": stored_ms / alone_ms})
    report = {"lut": args.lut, "reference": reference.key, "reference_ms_stored": table.settings["reference_ms"],
              "reference_alone_ms": alone_ref, "reference_beside_ms": beside_ref,
              "reference_beside_vs_alone": beside_ref / alone_ref, "networks": rows}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{reference.key}: alone {alone_ref:.4f} ms, beside {k} calibration networks {beside_ref:.4f} ms "
          f"({beside_ref / alone_ref:.3f}x; read as drift by a profile); stored baseline "
          f"{table.settings['reference_ms']:.4f} ms")
    for r in rows:
        print(f"  {r['arch_id']}: stored {r['stored_ms']:.3f} ms, alone {r['alone_ms']:.3f} ms "
              f"(stored / alone {r['stored_vs_alone']:.3f}), beside the others {r['beside_ms']:.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``mixnas report RUN_DIR [-o FILE]``: one self-contained HTML page of a run (also while the search runs)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write one self-contained HTML page of a run: plots, Pareto front, networks, failures",
        description="Read RUN_DIR's config and ledger (read-only: safe while the search writes to it) and write one "
        "HTML file that opens offline in any browser (no server, no network, no external script or font): the run "
        "at a glance, accuracy against latency with the Pareto front (hover a point for its block strings), the "
        "best reward so far against trainings and wall time, a drawing of a chosen trial's network with the "
        "latency table's per-part breakdown, and the failed, infeasible, pruned and screened trials with their "
        "reasons. See docs/report.md.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("-o", "--output", metavar="FILE", help="the HTML file to write (default RUN_DIR/report.html)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mixnas.launch.report_page import write_report

    path, size = write_report(args.run_dir, args.output)
    print(f"wrote {path} ({size / 1024:.0f} KiB); open it in a browser")
    return 0

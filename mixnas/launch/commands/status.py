"""``mixnas status RUN_DIR [--json]``: a run's progress from its ledger (also while the search runs)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="show a run's progress from its ledger",
        description="Read RUN_DIR's ledger (safe while the search writes to it) and show trial counts, the best "
        "trials and the Pareto front. With --json, stdout is exactly one JSON document.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--top", type=int, default=5, metavar="K", help="how many best trials to list (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mixnas.launch.ledger import Ledger
    from mixnas.launch.runner import RunPaths, load_run_config, run_is_active
    from mixnas.launch.summary import ranked, short_arch, summarize

    paths = RunPaths(Path(args.run_dir))
    cfg = load_run_config(paths)
    with Ledger(paths.ledger, readonly=True) as ledger:
        records = ledger.trials()
        finished_at = ledger.get_meta("finished_at")
    active = run_is_active(paths)
    done = sum(1 for r in records if r.finished)
    finished = not active and finished_at is not None and done >= cfg.execution.trials
    summary = summarize(cfg, records, finished=finished, active=active)
    top = ranked(cfg, records)[: max(0, args.top)]
    if args.json:
        doc = summary.to_dict()
        doc["run_dir"] = str(paths.root)
        doc["top"] = [r.to_dict() for r in top]
        doc["running_trials"] = [r.trial for r in records if r.status == "running"]
        json.dump(doc, sys.stdout, allow_nan=False)
        sys.stdout.write("\n")
        return 0
    state = summary.to_dict()["state"]
    c = summary.counts
    print(f"{cfg.name} ({paths.root}): {state}, {summary.done}/{summary.trials} trials done, "
          f"{c['running']} running, {c['ok']} ok, {summary.failed} failed, {c['infeasible']} infeasible, "
          f"{c['pruned']} pruned; {summary.eval_seconds:.1f} s of evaluation")
    if summary.hypervolume is not None:
        print(f"hypervolume: {summary.hypervolume:.6g} (Pareto front: {len(summary.front)} trials)")
    if top:
        print(f"{'rank':>4} {'trial':>5} {'reward':>10}  architecture")
        for i, r in enumerate(top, 1):
            print(f"{i:>4} {r.trial:>5} {r.reward:>10.5g}  {short_arch(r, 100)}")
    elif summary.front:
        print("Pareto front:")
        for r in summary.front:
            print(f"  trial {r.trial}: {short_arch(r, 100)}")
    if state == "stopped" and done < cfg.execution.trials:
        print(f"continue with: mixnas resume {paths.root}")
    return 0

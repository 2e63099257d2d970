"""``mixnas rerank RUN_DIR --top K --seeds S [--json]``: evaluate a run's best trials again with more seeds."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mixnas import bounds
from mixnas.launch.rerank import MAX_SEEDS, MAX_TOP
from mixnas.launch.commands.search import set_log_level
from mixnas.launch.commands.status import noise_line


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rerank",
        help="re-evaluate a run's best trials with more seeds (resumable)",
        description="Evaluate the K best trials of RUN_DIR (by the search's reward) S more times each, with the "
        "run's own recipe and experiment seeds seed+1 .. seed+S, on Ray like the search. Every evaluation is kept "
        "in the run's ledger: an interrupted rerank continues where it stopped, and `mixnas status` / `export` "
        "then rank by the mean over seeds with its standard error. See docs/experiments.md.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--top", type=bounds.integer(1, MAX_TOP).arg(), default=3, metavar="K", help="how many of the best trials (default 3)")
    p.add_argument("--seeds", type=bounds.integer(1, MAX_SEEDS).arg(), default=2, metavar="S", help="extra seeds per trial (default 2)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(func=run)


def _progress(repeat: Any, done: int, total: int) -> None:
    m = repeat.metrics
    what = (f"reward {repeat.reward:.5g}" + (f"  top1 {m['top1']:.4f}" if "top1" in m else "")
            if repeat.status == "ok" else f"{repeat.status}: {repeat.reason}")
    print(f"[{done}/{total}] trial {repeat.trial} seed {repeat.seed} (repeat {repeat.repeat}): {what}",
          file=sys.stderr, flush=True)


def _text(cfg_reward: str, doc: dict[str, Any]) -> str:
    def pm(value: Any, err: Any, fmt: str) -> str:
        if value is None:
            return "-"
        return format(value, fmt) + (f" ± {format(err, fmt)}" if err is not None else "")

    lines = [f"{'rank':>4} {'trial':>5} {'seeds':>5} {cfg_reward + ' (mean ± s.e.)':>24} {'first':>9} "
             f"{'top1 (mean ± s.e.)':>20} {'latency_ms':>10}"]
    for i, r in enumerate(doc["ranking"], 1):
        lines.append(f"{i:>4} {r['trial']:>5} {r['n_seeds']:>5} {pm(r['reward'], r['reward_sem'], '.5f'):>24} "
                     f"{r['first_reward']:>9.5f} {pm(r['top1'], r['top1_sem'], '.4f'):>20} "
                     f"{pm(r['latency_ms'], None, '.4g'):>10}")
    if doc["noise"]:
        lines.append(noise_line(doc["noise"]))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from mixnas.launch import api

    run_dir = api.open_run(args.run_dir)
    cfg = run_dir.config
    set_log_level(cfg, args.verbose)
    result = run_dir.rerank(top=args.top, seeds=args.seeds, progress=None if args.quiet else _progress)
    doc = result.to_dict()
    if args.json:
        json.dump(doc, sys.stdout, allow_nan=False)
        sys.stdout.write("\n")
    else:
        name = cfg.reward.metric if cfg.reward.type == "metric" else "reward"
        print(_text(name, doc))
        if result.failed:
            print(f"{len(result.failed)} evaluations failed (recorded with their reason; `mixnas rerank` again "
                  "runs them again)")
    return 0

"""``mixnas status RUN_DIR [--json]``: a run's progress from its ledger (also while the search runs)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Mapping, Sequence
from mixnas import bounds


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="show a run's progress from its ledger",
        description="Read RUN_DIR's ledger (safe while the search writes to it) and show trial counts, the best "
        "trials and the Pareto front. With --json, stdout is exactly one JSON document.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--top", type=bounds.integer(1, 100_000).arg(), default=5, metavar="K", help="how many best trials to list (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mixnas.launch import api
    from mixnas.launch.summary import ranked, seed_means, seed_noise, shown_record

    run_dir = api.open_run(args.run_dir)
    cfg, paths = run_dir.config, run_dir.paths
    read = run_dir.read()
    records, repeats = read.records, read.repeats
    means = seed_means(records, repeats)  # trials re-ranked with more seeds are ranked by their means
    noise = seed_noise(records, repeats)
    summary = run_dir.summary(read)
    done = summary.done
    top = ranked(cfg, records, means)[: max(0, args.top)]
    if args.json:
        doc = summary.to_dict()
        doc["run_dir"] = str(paths.root)
        doc["top"] = [shown_record(r, means) for r in top]
        doc["running_trials"] = [r.trial for r in records if r.status == "running"]
        doc["seed_noise"] = noise
        json.dump(doc, sys.stdout, allow_nan=False)
        sys.stdout.write("\n")
        return 0
    state = summary.to_dict()["state"]
    c = summary.counts
    print(f"{cfg.name} ({paths.root}): {state}, {summary.done}/{summary.trials} trials done, "
          f"{c['running']} running, {c['ok']} ok, {summary.failed} failed, {c['infeasible']} infeasible, "
          f"{c['pruned']} pruned; {summary.eval_seconds:.1f} s of evaluation" + _untrained(summary))
    if summary.hypervolume is not None:
        print(f"hypervolume: {summary.hypervolume:.6g} (Pareto front: {len(summary.front)} trials)")
    if top:
        _print_table(cfg, top, ranks=True, means=means)
        if noise:
            print(noise_line(noise))
    elif summary.front:
        print("Pareto front:")
        _print_table(cfg, summary.front, ranks=False)
    if state == "stopped" and done < cfg.execution.trials:
        print(f"continue with: mixnas resume {paths.root}")
    return 0


def _print_table(cfg: Any, records: Sequence[Any], *, ranks: bool, means: Mapping[int, Any] | None = None) -> None:
    """One line per trial: rank, trial, reward (mean ± s.e. and seeds after a rerank), the objectives and key
    metrics measured (means over seeds after a rerank), the architecture."""
    from mixnas.launch.summary import format_metric, metric_columns, short_arch

    means = means or {}
    columns = metric_columns(cfg, records)
    widths = [max(10, len(n)) for n in columns]
    reward = cfg.reward.metric if cfg.reward.type == "metric" else "reward"  # the metric itself, if it is one
    reranked = ranks and any(r.trial in means for r in records)
    rw = 20 if reranked else 10
    head = (f"{'rank':>4} " if ranks else "") + f"{'trial':>5}" + (f" {reward:>{rw}}" if ranks else "")
    head += f" {'seeds':>5}" if reranked else ""
    print(head + "".join(f" {n:>{w}}" for n, w in zip(columns, widths)) + "  architecture")
    for i, r in enumerate(records, 1):
        mean = means.get(r.trial)
        value = f"{(mean.reward if mean else r.reward):.5g}" if ranks else ""
        if reranked and mean is not None and mean.sem.get("reward") is not None:
            value += f" ± {mean.sem['reward']:.2g}"
        line = (f"{i:>4} " if ranks else "") + f"{r.trial:>5}" + (f" {value:>{rw}}" if ranks else "")
        line += f" {mean.n_seeds if mean else 1:>5}" if reranked else ""
        shown = (lambda n: mean.metric(r, n)) if mean is not None else r.metrics.get
        line += "".join(f" {format_metric(n, shown(n)):>{w}}" for n, w in zip(columns, widths))
        print(f"{line}  {short_arch(r, 100)}")


def noise_line(noise: dict[str, Any]) -> str:
    """The proxy's seed noise in one line (``mixnas status`` and ``rerank``)."""
    top1 = f"top1 {noise['top1_sd']:.4f}, " if noise.get("top1_sd") is not None else ""
    reward = f"reward {noise['reward_sd']:.5f}" if noise.get("reward_sd") is not None else ""
    return (f"proxy seed noise (s.d. of one evaluation, pooled over {noise['trials']} re-ranked trials, "
            f"{noise['evaluations']} evaluations): {top1}{reward}; means ± standard error (mixnas rerank)")


def _untrained(summary: Any) -> str:
    """``; 12 screened out before training (over a hard limit), 3 repeated an architecture (not trained again)``."""
    parts = []
    if summary.screened:
        parts.append(f"{summary.screened} screened out before training (over a hard limit)")
    if summary.copied:
        parts.append(f"{summary.copied} repeated an architecture already trained (not trained again)")
    return "".join(f"; {p}" for p in parts)

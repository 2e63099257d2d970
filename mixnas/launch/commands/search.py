"""``mixnas search CONFIG [--set KEY=VALUE ...] [--output RUN_DIR]``: start a search from an experiment YAML."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mixnas.launch.experiment_config import ExperimentConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="start a search from an experiment YAML",
        description="Validate the experiment, create its run directory (OUTPUT_DIR/NAME unless --output) with "
        "the resolved config, and run the search on Ray. Progress goes to stderr; at the end the best "
        "architecture's block strings are printed on stdout. Continue an interrupted run with `mixnas resume`.",
    )
    p.add_argument("config", metavar="CONFIG", help="experiment YAML (see docs/experiments.md)")
    add_config_options(p)
    p.add_argument("--output", "-o", metavar="RUN_DIR", help="run directory (default: output_dir/name)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)


def add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value (YAML syntax), e.g. --set execution.trials=10; repeatable")


def set_log_level(cfg: ExperimentConfig, verbose: bool) -> None:
    """The experiment's logging.level, unless -v asked for debug."""
    if not verbose:
        logging.getLogger().setLevel(cfg.logging.level.upper())
        # Ray's own loggers are chatty at INFO; keep them at WARNING unless debugging
        logging.getLogger("ray").setLevel(logging.WARNING)


def print_result(summary, run_dir: Path) -> int:
    """What a finished search prints on stdout: the best architecture (block strings) or the Pareto front; returns
    the exit code (1 when no trial succeeded: the search ran, but found nothing)."""
    from mixnas.launch.summary import arch_text, short_arch

    best = summary.best
    print(f"run: {run_dir}")
    c = summary.counts
    print(f"trials: {summary.done} done ({c['ok']} ok, {c['failed']} failed, {c['diverged']} diverged, "
          f"{c['infeasible']} infeasible, {c['pruned']} pruned)"
          + (f"; {summary.screened} screened out before training" if summary.screened else "")
          + (f"; {summary.copied} repeats of a trained architecture, not trained again" if summary.copied else ""))
    if best is not None:
        shown = {k: best.metrics[k] for k in ("top1", "latency_ms", "params", "macs") if k in best.metrics}
        details = ", ".join(f"{k} {v:,.0f}" if k in ("params", "macs") else f"{k} {v:.4g}" for k, v in shown.items())
        print(f"best: trial {best.trial}, reward {best.reward:.6g}" + (f" ({details})" if details else ""))
        text = arch_text(best) if best.block_strings else None
        if text is not None:
            print("block strings (tf):")  # the first line: the global settings (a "# mixnas:" comment)
            for line in text.splitlines():
                print(f"  {line}")
            print(f"rebuild: mixnas build {run_dir}:best")
        else:
            print(f"choices: {best.candidate}")
    elif summary.front:
        print(f"Pareto front: {len(summary.front)} trials")
        for r in summary.front:
            print(f"  trial {r.trial}: {short_arch(r, 100)}")
    if summary.hypervolume is not None:
        print(f"hypervolume: {summary.hypervolume:.6g}")
    if not summary.counts.get("ok"):
        print(f"no trial succeeded: every failure's reason is in `mixnas status {run_dir} --json` and the ledger",
              file=sys.stderr)
        return 1
    print(f"next: mixnas export {run_dir} --top 3")
    return 0


def run(args: argparse.Namespace) -> int:
    from mixnas.launch import api

    cfg = api.experiment(args.config, args.overrides)
    set_log_level(cfg, args.verbose)
    result = api.search(cfg, output=args.output, quiet=args.quiet)
    return print_result(result.summary(), result.path)

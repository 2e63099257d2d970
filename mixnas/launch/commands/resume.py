"""``mixnas resume RUN_DIR [--config CONFIG] [--set KEY=VALUE ...] [--force]``: continue an interrupted search."""

from __future__ import annotations

import argparse
from pathlib import Path

from mixnas.launch.commands.search import add_config_options, print_result, set_log_level


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "resume",
        help="continue an interrupted search",
        description="Continue the search in RUN_DIR from its ledger and controller state: finished trials are "
        "kept, trials that were running are re-run with the same architecture. With --config or --set the new "
        "config is compared with the run's; a difference is refused (with the list of changes) unless --force.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--config", metavar="CONFIG", help="experiment YAML to compare with (and, with --force, use)")
    add_config_options(p)
    p.add_argument("--force", action="store_true", help="accept a changed config")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mixnas.launch import api
    from mixnas.launch.rundir import RunPaths, load_run_config

    run_dir = Path(args.run_dir)
    new = api.changed_config(run_dir, args.config, args.overrides)
    set_log_level(new or load_run_config(RunPaths(run_dir)), args.verbose)
    result = api.resume(run_dir, config=new, force=args.force, quiet=args.quiet)
    summary = result.summary()
    if result.was_finished:
        print(f"run {run_dir} is already finished ({summary.done}/{summary.trials} trials); nothing to resume")
        return 0
    return print_result(summary, run_dir)

"""Sample efficiency of the controllers on NAS-Bench-Macro (CIFAR-10): best accuracy found after N table look-ups.

Every controller runs ``--seeds`` independent searches of ``max(--queries)`` queries (one query = one ``ask`` and
one ``tell`` of the table's ``mean_acc``); the best accuracy found after each budget in ``--queries`` is averaged
over seeds (a search does not know its budget, so the first 100 queries of a 300-query run are a 100-query run).
Regret is measured against the table's optimum, 93.13 (``22212220``).

A multi-objective run (maximise ``mean_acc``, minimise ``flops``) reports the hypervolume of the evaluated points
against the reference point (40 % accuracy, 110 MFLOPs), as a fraction of the hypervolume of the whole table.
RL needs a scalar reward and gets ``mean_acc - 0.05 * MFLOPs`` (5 % accuracy per 100 MFLOPs).

Run from the repository root::

    .venv/bin/python benchmarks/controllers_nas_bench_macro.py            # table on the terminal
    .venv/bin/python benchmarks/controllers_nas_bench_macro.py --json     # one JSON document (list of rows)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import torch

from mixnas.controllers import Objective, Result, make_controller
from mixnas.evaluators.reward import hypervolume
from mixnas.evaluators.tabular import NAS_BENCH_MACRO_OPTIMUM, TabularEvaluator, nas_bench_macro
from mixnas.search_space.spaces import load_space

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TABLE = REPO.parent / "shared" / "benchmarks" / "nas_bench_macro" / "nas-bench-macro_cifar10.json"
REFERENCE = (40.0, 110.0)  # (mean_acc %, MFLOPs) reference point of the hypervolume
RL_FLOPS_WEIGHT = 0.05e-6  # RL's scalarisation: 0.05 accuracy points per MFLOP

# name -> (controller type, options); the defaults of each controller, nothing tuned per benchmark here
CONTROLLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "random": ("random", {}),
    "evolution": ("evolution", {}),
    "rl": ("rl", {}),
    "optuna-tpe": ("optuna", {"sampler": "TPESampler"}),
    "optuna-nsga2": ("optuna", {"sampler": "NSGAIISampler"}),
}
SINGLE = ["random", "evolution", "rl", "optuna-tpe"]
MULTI = ["random", "evolution", "rl", "optuna-tpe", "optuna-nsga2"]


def search(
    name: str, table: TabularEvaluator, seed: int, queries: int, objectives: list[Objective]
) -> list[dict[str, float]]:
    """Run one search and return the metrics of every query, in order."""
    kind, options = CONTROLLERS[name]
    options = dict(options)
    if kind == "rl" and len(objectives) > 1:
        options["weights"] = {"mean_acc": 1.0, "flops": RL_FLOPS_WEIGHT}
    controller = make_controller(kind, load_space("nas_bench_macro"), objectives=objectives, seed=seed, **options)
    history = []
    for _ in range(queries):
        suggestion = controller.ask()
        metrics = table.row(suggestion.encoding)
        controller.tell(suggestion.id, Result("ok", metrics))
        history.append(metrics)
    return history


def normalised_hypervolume(history: list[dict[str, float]], table_hv: float) -> float:
    points = [(m["mean_acc"], m["flops"] / 1e6) for m in history]
    return hypervolume(points, REFERENCE, ["max", "min"]) / table_hv


def summary(values: list[float]) -> tuple[float, float, float]:
    """Mean, sample standard deviation and standard error."""
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std, std / math.sqrt(len(values))


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    table = nas_bench_macro(args.table)
    all_points = [(m["mean_acc"], m["flops"] / 1e6) for m in (table.row(k) for k in table.keys())]
    table_hv = hypervolume(all_points, REFERENCE, ["max", "min"])
    budgets = sorted(args.queries)
    rows: list[dict[str, Any]] = []
    single = [Objective("mean_acc", "max")]
    for name in args.controllers:
        started = time.perf_counter()
        bests: dict[int, list[float]] = {q: [] for q in budgets}
        for seed in range(args.seeds):
            accs = [m["mean_acc"] for m in search(name, table, seed, budgets[-1], single)]
            for q in budgets:
                bests[q].append(max(accs[:q]))
        seconds = time.perf_counter() - started
        for q in budgets:
            mean, std, sem = summary(bests[q])
            rows.append(
                {
                    "controller": name,
                    "queries": q,
                    "mean_best": round(mean, 4),
                    "std_best": round(std, 4),
                    "sem_best": round(sem, 4),
                    "regret": round(NAS_BENCH_MACRO_OPTIMUM - mean, 4),
                    "seeds": args.seeds,
                    "seconds_per_search": round(seconds / args.seeds, 3),
                }
            )
        logging.info("%s done in %.1f s", name, seconds)
    multi = [Objective("mean_acc", "max"), Objective("flops", "min")]
    for name in args.multi_controllers:
        started = time.perf_counter()
        hvs: list[float] = []
        bests_mo: list[float] = []
        for seed in range(args.seeds):
            history = search(name, table, seed, args.multi_queries, multi)
            hvs.append(normalised_hypervolume(history, table_hv))
            bests_mo.append(max(m["mean_acc"] for m in history))
        hv_mean, hv_std, hv_sem = summary(hvs)
        mean, std, _ = summary(bests_mo)
        rows.append(
            {
                "controller": name,
                "queries": args.multi_queries,
                "objectives": ["max mean_acc", "min flops"],
                "mean_best": round(mean, 4),
                "std_best": round(std, 4),
                "hypervolume": round(hv_mean, 4),
                "std_hypervolume": round(hv_std, 4),
                "sem_hypervolume": round(hv_sem, 4),
                "seeds": args.seeds,
                "seconds_per_search": round((time.perf_counter() - started) / args.seeds, 3),
            }
        )
        logging.info("%s (multi-objective) done", name)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print("single objective: best mean_acc found (CIFAR-10 %), optimum 93.13")
    print(f"{'controller':<14}{'queries':>8}{'mean_best':>11}{'std':>8}{'sem':>8}{'regret':>8}{'s/search':>10}")
    for r in rows:
        if "hypervolume" not in r:
            print(
                f"{r['controller']:<14}{r['queries']:>8}{r['mean_best']:>11.3f}{r['std_best']:>8.3f}"
                f"{r['sem_best']:>8.3f}{r['regret']:>8.3f}{r['seconds_per_search']:>10.2f}"
            )
    mo = [r for r in rows if "hypervolume" in r]
    if mo:
        print("\nmulti-objective (max mean_acc, min flops): hypervolume / table's hypervolume, ref (40 %, 110 MFLOPs)")
        print(f"{'controller':<14}{'queries':>8}{'hv':>9}{'std':>8}{'sem':>8}{'best_acc':>10}{'s/search':>10}")
        for r in mo:
            print(
                f"{r['controller']:<14}{r['queries']:>8}{r['hypervolume']:>9.4f}{r['std_hypervolume']:>8.4f}"
                f"{r['sem_hypervolume']:>8.4f}{r['mean_best']:>10.3f}{r['seconds_per_search']:>10.2f}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE, help="NAS-Bench-Macro JSON file")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--queries", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--controllers", nargs="*", default=SINGLE, choices=sorted(CONTROLLERS))
    parser.add_argument("--multi-controllers", nargs="*", default=MULTI, choices=sorted(CONTROLLERS))
    parser.add_argument("--multi-queries", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="print exactly one JSON document")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.json else logging.INFO, format="%(message)s", stream=sys.stderr)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)  # the policy is tiny; threads only add overhead
    rows = run(args)
    if args.json:
        print(json.dumps(rows))
    else:
        print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

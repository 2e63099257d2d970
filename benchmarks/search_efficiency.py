"""Search efficiency: what each controller finds after 50, 100 and 300 trainings, on two benchmarks with real
trained accuracies, with the driver's rules for what counts as a training (issue 31).

Benchmarks (read-only files under ``../shared/benchmarks/``):

* **NAS-Bench-Macro** (CIFAR-10, all 6,561 architectures of an 8-layer space trained): a query is a table look-up.
  ``macro``: maximise ``mean_acc``; ``macro-pareto``: maximise ``mean_acc``, minimise FLOPs (FLOPs known before
  training), hypervolume against (40 %, 110 MFLOPs) as a fraction of the whole table's.
* **Accel-NASBench, the MnasNet space on ImageNet** (half A: 2,569 trained architectures of ~1.04e11). As the
  benchmark's authors do, a surrogate fitted on the measured rows answers for any member of the space:
  gradient-boosted trees (scikit-learn's ``HistGradientBoostingRegressor``) of ``val_top1`` and of the FPGA latency
  ``latency_zcu102_mean``; their held-out Kendall tau (20 % of the rows) is printed. The searches run over the
  *whole* space. ``anb``: maximise predicted ``val_top1``; ``anb-hard``: the same under a hard latency target at
  the median latency of the measured rows (the latency surrogate plays the latency table: known before training,
  so a candidate over the target is screened out and does not count); ``anb-pareto``: maximise ``val_top1``,
  minimise latency, hypervolume against (40 %, the largest measured latency) as a fraction of the measured rows'.

One search = ask / tell until ``max(--budgets)`` trainings, one suggestion out at a time. As in a run
(``mixnas/launch/runner.py``): a candidate over a hard limit is told ``infeasible`` without a training; a
candidate already trained is told its result again without a training; each controller is given what is known
before training (``use_costs``: FLOPs / latency, and the MnasNet factor) whether or not it uses it. Every figure is
the mean over ``--seeds`` seeds with its standard error; ``z`` compares with random search and with regularized
evolution (the old default, population 20 / tournament 5) at the same budget: (difference) / sqrt(se1^2 + se2^2).

Run from the repository root (scikit-learn and matplotlib: ``pip install -e '.[dev]'``)::

    .venv/bin/python benchmarks/search_efficiency.py --quick          # a few minutes: 5 seeds, 50 and 100
    .venv/bin/python benchmarks/search_efficiency.py --json           # 20 seeds, 50 / 100 / 300: one JSON document
    .venv/bin/python benchmarks/search_efficiency.py --plot DIR       # and the anytime plots (PNG) in DIR
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixnas.controllers import Objective, Result, make_controller
from mixnas.controllers.base import Known
from mixnas.evaluators.reward import hypervolume
from mixnas.evaluators.tabular import nas_bench_macro
from mixnas.search_space.spaces import ChoiceSpace, Dimension, load_space

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "benchmarks"
MACRO_TABLE = SHARED / "nas_bench_macro" / "nas-bench-macro_cifar10.json"
ANB_CSV = SHARED / "accel_nasbench_dev" / "accel_nasbench_mnasnet_half_a.csv"
MACRO_REFERENCE = (40.0, 110.0)  # (mean_acc %, MFLOPs)
RL_WEIGHT = 0.05  # rl's scalarisation of a second objective: accuracy points per unit of cost (MFLOPs / ms)

# name -> (controller type, options); defaults unless the name says otherwise
CONTROLLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "random": ("random", {}),
    "evolution-t5": ("evolution", {"population_size": 20, "sample_size": 5}),
    "evolution-t10": ("evolution", {"population_size": 20, "sample_size": 10}),
    "evolution-screen": ("evolution", {"population_size": 20, "sample_size": 10, "screen": 20}),
    "rl": ("rl", {}),
    "optuna-tpe": ("optuna", {"sampler": "TPESampler"}),
    "optuna-nsga2": ("optuna", {"sampler": "NSGAIISampler"}),
    "guided": ("guided", {}),
    "guided-parego": ("guided", {"multi_objective": "parego"}),  # guided's other multi-objective acquisition
}
PARETO_ONLY = ("guided-parego",)  # the same search as another controller's where a task has one objective
BASELINES = ("random", "evolution-t5")


@dataclass(frozen=True)
class Task:
    """One benchmark: a space, the objectives, the look-up of a training, what is known before it, a limit."""

    name: str
    space: Any
    objectives: tuple[Objective, ...]
    train: Callable[[tuple[int, ...]], dict[str, float]]  # encoding -> metrics (a "training")
    known: Callable[[tuple[int, ...]], Known]
    score: Callable[[list[dict[str, float]]], float]  # metrics of the trainings so far -> the figure
    figure: str
    limit: Callable[[Known], str | None] = lambda known: None


# ------------------------------------------------------------------------------------------------ NAS-Bench-Macro
def macro_tasks(path: Path) -> list[Task]:
    table = nas_bench_macro(path)
    space = load_space("nas_bench_macro")
    rows = {tuple(int(c) for c in key): table.row(tuple(int(c) for c in key)) for key in table.keys()}

    def train(encoding: tuple[int, ...]) -> dict[str, float]:
        row = rows[tuple(encoding)]
        return {"mean_acc": float(row["mean_acc"]), "flops": float(row["flops"]) / 1e6}

    def known(encoding: tuple[int, ...]) -> Known:
        return Known({"flops": float(rows[tuple(encoding)]["flops"]) / 1e6})

    all_points = [(r["mean_acc"], r["flops"] / 1e6) for r in rows.values()]
    table_hv = hypervolume(all_points, MACRO_REFERENCE, ["max", "min"])

    def hv(history: list[dict[str, float]]) -> float:
        return hypervolume([(m["mean_acc"], m["flops"]) for m in history], MACRO_REFERENCE, ["max", "min"]) / table_hv

    def best(history: list[dict[str, float]]) -> float:
        return max(m["mean_acc"] for m in history)

    acc, flops = Objective("mean_acc", "max"), Objective("flops", "min")
    return [Task("macro", space, (acc,), train, known, best, "best mean_acc (%)"),
            Task("macro-pareto", space, (acc, flops), train, known, hv, "hypervolume / table's")]


# ------------------------------------------------------------------------------------------------ Accel-NASBench
ANB_BLOCKS = 7
ANB_CHOICES = {"e": (1, 4, 6), "k": (3, 5), "l": (1, 2, 3), "se": (False, True)}


def anb_space() -> ChoiceSpace:
    dims = []
    for b in range(ANB_BLOCKS):
        for key, choices in ANB_CHOICES.items():
            dims.append(Dimension(f"block{b}_{key}", (1, 2, 3, 4) if (b, key) == (5, "l") else choices))
    return ChoiceSpace(dims, name="accel_nasbench_mnasnet")


def _anb_rows(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features (one row per measured architecture, the choices' values), val_top1, zcu102 latency (NaN if none)."""
    feats, acc, lat = [], [], []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            x = []
            for b in range(ANB_BLOCKS):
                for key in ANB_CHOICES:
                    v = row[f"block{b}_{key}"]
                    x.append(1.0 if v == "True" else 0.0 if v == "False" else float(v))
            feats.append(x)
            acc.append(float(row["val_top1"]))
            lat.append(float(row["latency_zcu102_mean"]) if row["latency_zcu102_mean"] else math.nan)
    return np.array(feats), np.array(acc), np.array(lat)


def _kendall(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def fit_surrogates(path: Path, seed: int = 0) -> dict[str, Any]:
    """Gradient-boosted trees of val_top1 and of latency: held-out tau on a 20 % split, then refitted on all rows."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    x, acc, lat = _anb_rows(path)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    test, train = order[: len(x) // 5], order[len(x) // 5:]
    report: dict[str, Any] = {"rows": int(len(x))}
    models = {}
    for name, y in (("val_top1", acc), ("latency_ms", lat)):
        ok = ~np.isnan(y)
        params = dict(max_iter=600, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=10, random_state=seed)
        held = HistGradientBoostingRegressor(**params).fit(x[train][ok[train]], y[train][ok[train]])
        t = test[ok[test]]
        pred = held.predict(x[t])
        report[name] = {"kendall_tau": round(_kendall(pred, y[t]), 4),
                        "rmse": round(float(np.sqrt(np.mean((pred - y[t]) ** 2))), 4), "test_rows": int(len(t))}
        models[name] = HistGradientBoostingRegressor(**params).fit(x[ok], y[ok])
    # The latency *table*: what is known before training, as a lookup table knows it: one entry per block and
    # layer kind (its first layer, which may change stride and width, and each further layer) and (expansion,
    # kernel, SE), summed over the network's layers (a LUT is a sum over parts), fitted by least squares. The
    # trainings report the surrogate's latency, so the table is off by its own error, as a real one is.
    ok = ~np.isnan(lat)
    feats = table_features(x)
    coef = np.linalg.lstsq(feats[train][ok[train]], lat[train][ok[train]], rcond=None)[0]
    t = test[ok[test]]
    pred = feats[t] @ coef
    report["latency_table"] = {"kendall_tau": round(_kendall(pred, lat[t]), 4),
                               "within_10pct": round(float(np.mean(np.abs(pred / lat[t] - 1) <= 0.10)), 4)}
    report["table_coef"] = np.linalg.lstsq(feats[ok], lat[ok], rcond=None)[0]
    report["models"] = models
    report["measured"] = (x, acc, lat)
    return report


def table_features(x: np.ndarray) -> np.ndarray:
    """Rows of raw choices (e, k, l, se per block) -> the latency table's counts: a constant, then per block and
    (e, k, se) combination the first layer (0 / 1) and the further layers (l - 1)."""
    x = np.atleast_2d(x)
    cols = [np.ones(len(x))]
    for b in range(ANB_BLOCKS):
        e, k, layers, se = (x[:, 4 * b + i] for i in range(4))
        for ev in ANB_CHOICES["e"]:
            for kv in ANB_CHOICES["k"]:
                for sv in (0.0, 1.0):
                    match = ((e == ev) & (k == kv) & (se == sv)).astype(float)
                    cols += [match, match * (layers - 1)]
    return np.stack(cols, axis=1)


def anb_tasks(path: Path) -> tuple[list[Task], dict[str, Any]]:
    fitted = fit_surrogates(path)
    models = fitted["models"]
    space = anb_space()
    values = [np.array([1.0 if c is True else 0.0 if c is False else float(c) for c in d.choices])
              for d in space.dimensions]
    cache: dict[tuple[int, ...], tuple[float, float]] = {}

    def predict(encoding: tuple[int, ...]) -> tuple[float, float]:
        encoding = tuple(encoding)
        if encoding not in cache:
            x = np.array([[values[i][j] for i, j in enumerate(encoding)]])
            cache[encoding] = (float(models["val_top1"].predict(x)[0]), float(models["latency_ms"].predict(x)[0]))
        return cache[encoding]

    def train(encoding: tuple[int, ...]) -> dict[str, float]:
        acc, lat = predict(encoding)
        return {"val_top1": acc, "latency_ms": lat}

    coef = fitted["table_coef"]

    table: dict[tuple[int, ...], float] = {}  # as the launcher's KnownCosts, each encoding looked up once

    def known(encoding: tuple[int, ...]) -> Known:
        encoding = tuple(encoding)
        if encoding not in table:
            raw = np.array([values[d][j] for d, j in enumerate(encoding)])
            table[encoding] = float((table_features(raw) @ coef)[0])
        return Known({"latency_ms": table[encoding]})

    _, measured_acc, measured_lat = fitted["measured"]
    target = float(np.nanmedian(measured_lat))
    reference = (40.0, float(np.nanmax(measured_lat)))
    ok = ~np.isnan(measured_lat)
    measured_hv = hypervolume(list(zip(measured_acc[ok], measured_lat[ok])), reference, ["max", "min"])

    def best(history: list[dict[str, float]]) -> float:
        return max(m["val_top1"] for m in history)

    def hv(history: list[dict[str, float]]) -> float:
        return hypervolume([(m["val_top1"], m["latency_ms"]) for m in history], reference, ["max", "min"]) / measured_hv

    def over_target(k: Known) -> str | None:
        return f"latency {k.metrics['latency_ms']:.3f} > {target:.3f} ms" if k.metrics["latency_ms"] > target else None

    acc, lat = Objective("val_top1", "max"), Objective("latency_ms", "min")
    info = {name: fitted[name] for name in ("rows", "val_top1", "latency_ms", "latency_table")}
    info.update(latency_target_ms=round(target, 4), reference=reference, measured_best_top1=float(measured_acc.max()),
                measured=fitted["measured"], predict=predict, space=space)
    return [Task("anb", space, (acc,), train, known, best, "best val_top1 (%)"),
            Task("anb-hard", space, (acc,), train, known, best, f"best val_top1 (%), latency <= {target:.2f} ms",
                 limit=over_target),
            Task("anb-pareto", space, (acc, lat), train, known, hv, "hypervolume / measured rows'")], info


# ------------------------------------------------------------------------------------------------ one search
@dataclass
class Trace:
    history: list[dict[str, float]]  # metrics of each training, in order
    encodings: list[tuple[int, ...]]  # what each training trained
    proposals: int
    screened: int
    repeats: int
    over_limit_trained: int
    seconds: float


def search(task: Task, controller_name: str, seed: int, trainings: int) -> Trace:
    kind, options = CONTROLLERS[controller_name]
    options = dict(options)
    if kind == "rl" and len(task.objectives) > 1:
        first, second = task.objectives
        options["weights"] = {first.name: 1.0, second.name: RL_WEIGHT}
    controller = make_controller(kind, task.space, objectives=list(task.objectives), seed=seed, **options)
    def known(encoding: tuple[int, ...]) -> Known:  # as the launcher's KnownCosts: what is known, and the limit
        k = task.known(encoding)
        return Known(k.metrics, k.factors, screened=task.limit(k))

    controller.use_costs(known)
    done: dict[tuple[int, ...], dict[str, float]] = {}
    history: list[dict[str, float]] = []
    encodings: list[tuple[int, ...]] = []
    proposals = screened = repeats = 0
    started = time.perf_counter()
    while len(history) < trainings and proposals < 50 * trainings:
        s = controller.ask()
        proposals += 1
        encoding = tuple(s.encoding)
        why = known(encoding).screened
        if why is not None:
            screened += 1
            controller.tell(s.id, Result("infeasible", reason=f"screened before training: {why}"))
            continue
        if encoding in done:
            repeats += 1
            controller.tell(s.id, Result("ok", done[encoding]))
            continue
        metrics = done[encoding] = task.train(encoding)
        history.append(metrics)
        encodings.append(encoding)
        controller.tell(s.id, Result("ok", metrics))
    over = sum(1 for m in history if task.limit(Known(m)) is not None)  # trainings over the limit (by its metrics)
    return Trace(history, encodings, proposals, screened, repeats, over, time.perf_counter() - started)


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0)


def run_task(task: Task, names: Sequence[str], seeds: int, budgets: Sequence[int]
             ) -> tuple[list[dict[str, Any]], dict[str, list[Trace]]]:
    rows: list[dict[str, Any]] = []
    per: dict[str, Any] = {}
    all_traces: dict[str, list[Trace]] = {}
    for name in names:
        if name in PARETO_ONLY and len(task.objectives) == 1:
            continue
        started = time.perf_counter()
        scores = {b: [] for b in budgets}
        curves, traces = [], []
        for seed in range(seeds):
            trace = search(task, name, seed, max(budgets))
            traces.append(trace)
            for b in budgets:
                scores[b].append(task.score(trace.history[:b]))
            curves.append([task.score(trace.history[: i + 1]) for i in range(len(trace.history))])
        per[name] = {"scores": scores, "curves": curves}
        all_traces[name] = traces
        seconds = (time.perf_counter() - started) / seeds
        for b in budgets:
            mean, se = mean_se(scores[b])
            rows.append({"task": task.name, "figure": task.figure, "controller": name, "trainings": b,
                         "mean": round(mean, 4), "se": round(se, 4), "seeds": seeds,
                         "proposals_per_training": round(sum(t.proposals for t in traces) / sum(len(t.history)
                                                         for t in traces), 3),
                         "screened": sum(t.screened for t in traces), "repeats": sum(t.repeats for t in traces),
                         "trainings_over_limit": sum(t.over_limit_trained for t in traces),
                         "seconds_per_search": round(seconds, 2)})
        logging.info("%s / %s: %.1f s per search", task.name, name, seconds)
    for row in rows:
        for base in BASELINES:
            if base in per and row["controller"] != base:
                other = [r for r in rows if r["controller"] == base and r["trainings"] == row["trainings"]][0]
                denom = math.sqrt(row["se"] ** 2 + other["se"] ** 2)
                row[f"z_vs_{base}"] = round((row["mean"] - other["mean"]) / denom, 2) if denom > 0 else None
    for row in rows:
        row["_curves"] = per[row["controller"]]["curves"]
    return rows, all_traces


def anytime_plot(rows: list[dict[str, Any]], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        shown = set()
        for r in rows:
            if r["task"] != task or r["controller"] in shown:
                continue
            shown.add(r["controller"])
            curves = np.array(r["_curves"], dtype=float)
            mean = curves.mean(axis=0)
            se = curves.std(axis=0, ddof=1) / math.sqrt(len(curves)) if len(curves) > 1 else np.zeros_like(mean)
            x = np.arange(1, len(mean) + 1)
            ax.plot(x, mean, label=r["controller"])
            ax.fill_between(x, mean - se, mean + se, alpha=0.2)
        ax.set_xscale("log")
        ax.set_xlabel("trainings")
        ax.set_ylabel(next(r["figure"] for r in rows if r["task"] == task))
        ax.set_title(f"{task}: best so far, mean ± s.e. over seeds")
        ax.legend(fontsize=8)
        path = folder / f"search_efficiency_{task}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out.append(path)
    return out


def extrapolation(info: dict[str, Any], traces: dict[str, list[Trace]], trainings: int) -> dict[str, Any]:
    """Where the surrogate's best answers lie: for the best architecture each search found within ``trainings``,
    its Hamming distance (choices that differ, of 28) to the nearest measured architecture, and its predicted top-1
    against the best measured one."""
    x, _, _ = info["measured"]
    values = [np.array([1.0 if c is True else 0.0 if c is False else float(c) for c in d.choices])
              for d in info["space"].dimensions]
    out: dict[str, Any] = {"measured_best_top1": round(info["measured_best_top1"], 3)}
    for name, runs in traces.items():
        distances, predicted = [], []
        for trace in runs:
            i = max(range(min(trainings, len(trace.history))), key=lambda k: trace.history[k]["val_top1"])
            feats = np.array([values[d][j] for d, j in enumerate(trace.encodings[i])])
            distances.append(int((x != feats).sum(axis=1).min()))
            predicted.append(trace.history[i]["val_top1"])
        out[name] = {"median_hamming_to_nearest_measured": float(np.median(distances)),
                     "mean_predicted_top1": round(statistics.fmean(predicted), 3)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 seeds, budgets 50 and 100")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budgets", type=int, nargs="+", default=[50, 100, 300])
    parser.add_argument("--tasks", nargs="+", default=["macro", "macro-pareto", "anb", "anb-hard", "anb-pareto"])
    parser.add_argument("--controllers", nargs="+", default=list(CONTROLLERS), choices=sorted(CONTROLLERS))
    parser.add_argument("--plot", type=Path, help="write the anytime plots (PNG) into this folder")
    parser.add_argument("--json", action="store_true", help="print exactly one JSON document")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.budgets = 5, [50, 100]
    logging.basicConfig(level=logging.WARNING if args.json else logging.INFO, format="%(message)s", stream=sys.stderr)
    import optuna
    import torch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    tasks: list[Task] = []
    doc: dict[str, Any] = {"seeds": args.seeds, "budgets": args.budgets}
    if any(t.startswith("macro") for t in args.tasks):
        if not MACRO_TABLE.exists():
            print(f"search_efficiency: {MACRO_TABLE} is missing", file=sys.stderr)
            return 2
        tasks += [t for t in macro_tasks(MACRO_TABLE) if t.name in args.tasks]
    info = None
    if any(t.startswith("anb") for t in args.tasks):
        if not ANB_CSV.exists():
            print(f"search_efficiency: {ANB_CSV} is missing", file=sys.stderr)
            return 2
        anb, info = anb_tasks(ANB_CSV)
        tasks += [t for t in anb if t.name in args.tasks]
        doc["surrogate"] = {k: info[k] for k in ("rows", "val_top1", "latency_ms", "latency_table",
                                                 "latency_target_ms")}
        logging.info("surrogate: %s", doc["surrogate"])
    rows = []
    for task in tasks:
        task_rows, traces = run_task(task, args.controllers, args.seeds, sorted(args.budgets))
        rows += task_rows
        if task.name == "anb":
            doc["extrapolation"] = extrapolation(info, traces, 100)
    if args.plot:
        doc["plots"] = [str(p) for p in anytime_plot(rows, args.plot)]
    doc["rows"] = [{k: v for k, v in r.items() if k != "_curves"} for r in rows]
    if args.json:
        print(json.dumps(doc))
    else:
        for r in doc["rows"]:
            z = "  ".join(f"z/{b.split('-')[0]} {r.get(f'z_vs_{b}')}" for b in BASELINES if f"z_vs_{b}" in r)
            print(f"{r['task']:<12} {r['controller']:<14} {r['trainings']:>4}  {r['mean']:>9.4f} ± {r['se']:.4f}"
                  f"  {z}  screened {r['screened']} repeats {r['repeats']}  {r['seconds_per_search']} s/search")
        for key in ("surrogate", "extrapolation"):
            if key in doc:
                print(key, json.dumps(doc[key]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How well the guided controller's predictors rank architectures they have not seen, from few results.

Each regressor of ``mixnas/controllers/predictor.py`` (the Gaussian process and the bootstrap ridge ensemble) is
fitted to ``n`` architectures drawn at random and ranks 1,000 other architectures of the same table; the figure is
Kendall tau (and Spearman rho) of predicted against true, mean and standard error over ``--repeats`` draws (draw
``r`` at size ``n`` uses a numpy generator seeded ``1000 * r + n``). Tables: NAS-Bench-Macro's ``mean_acc`` (all
6,561 architectures) and Accel-NASBench's ``val_top1`` (the 2,569 rows of the development half); both under
``../shared/benchmarks/``. ``--no-numeric`` drops the choices' scaled values from the features (one-hot only).

    .venv/bin/python benchmarks/predictor_ranking.py                 # 20 draws, n = 20, 50, 100, 200, 300
    .venv/bin/python benchmarks/predictor_ranking.py --repeats 5 --json
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from mixnas.controllers.predictor import EncodingFeatures, GaussianProcess, RidgeEnsemble
from mixnas.evaluators.tabular import nas_bench_macro
from mixnas.search_space.spaces import ChoiceSpace, load_space
from search_efficiency import anb_space

SHARED = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
MACRO = SHARED / "nas_bench_macro" / "nas-bench-macro_cifar10.json"
ANB = SHARED / "accel_nasbench_dev" / "accel_nasbench_mnasnet_half_a.csv"


def macro_table() -> tuple[ChoiceSpace, list[tuple[int, ...]], np.ndarray]:
    space = load_space("nas_bench_macro")
    table = nas_bench_macro(MACRO, space)
    encodings = list(itertools.product(range(3), repeat=8))
    return space, encodings, np.array([table.row(e)["mean_acc"] for e in encodings])


def anb_table() -> tuple[ChoiceSpace, list[tuple[int, ...]], np.ndarray]:
    space = anb_space()  # the space benchmarks/search_efficiency.py searches (this script's folder is on sys.path)
    with open(ANB, newline="") as f:
        rows = list(csv.DictReader(f))

    def value(name: str, text: str) -> object:
        return text == "True" if name.endswith("_se") else int(text)

    encodings = [space.encode({d.name: value(d.name, r[d.name]) for d in space.dimensions}) for r in rows]
    return space, encodings, np.array([float(r["val_top1"]) for r in rows])


def measure(name: str, table: tuple, sizes: list[int], repeats: int, numeric: bool, n_test: int = 1000) -> list[dict]:
    from scipy.stats import kendalltau, spearmanr

    space, encodings, y = table
    features = EncodingFeatures(space.dimensions, numeric=numeric)
    x = features(encodings)
    models = {"gp": lambda: GaussianProcess(scale=features.n_dimensions), "ensemble": RidgeEnsemble}
    rows = []
    for model, make in models.items():
        for n in sizes:
            taus, rhos, seconds = [], [], []
            for r in range(repeats):
                order = np.random.default_rng(1000 * r + n).permutation(len(encodings))
                train, test = order[:n], order[n: n + n_test]
                started = time.perf_counter()
                mean, _ = make().fit(x[train], y[train], np.random.default_rng(r)).predict(x[test])
                seconds.append(time.perf_counter() - started)
                taus.append(kendalltau(mean, y[test]).statistic)
                rhos.append(spearmanr(mean, y[test]).statistic)
            rows.append({"table": name, "model": model, "numeric": numeric, "n": n, "repeats": repeats,
                         "kendall_tau": round(float(np.mean(taus)), 4),
                         "se": round(float(np.std(taus, ddof=1) / math.sqrt(repeats)) if repeats > 1 else 0.0, 4),
                         "spearman": round(float(np.mean(rhos)), 4),
                         "fit_predict_s": round(float(np.mean(seconds)), 4)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 50, 100, 200, 300])
    parser.add_argument("--no-numeric", action="store_true", help="one-hot features only")
    parser.add_argument("--json", action="store_true", help="print exactly one JSON document")
    args = parser.parse_args(argv)
    for path in (MACRO, ANB):
        if not path.exists():
            print(f"predictor_ranking: {path} is missing", file=sys.stderr)
            return 2
    rows = []
    for name, load in (("nas_bench_macro", macro_table), ("accel_nasbench", anb_table)):
        rows += measure(name, load(), args.sizes, args.repeats, numeric=not args.no_numeric)
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            print(f"{r['table']:<16} {r['model']:<9} n={r['n']:<4} tau {r['kendall_tau']:.3f} ± {r['se']:.3f}  "
                  f"rho {r['spearman']:.3f}  fit+predict {r['fit_predict_s'] * 1e3:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fidelity of the weight-sharing supernet: does a subnet's supernet accuracy rank architectures like training them?

Steps, all measured in this run:

1. Train the supernet of a space (``tiny`` by default) on a data set (``digits`` by default; any DataSpec source,
   e.g. a Fashion-MNIST IDX folder) with :class:`~mixnas.evaluators.supernet.train.SupernetTrainer`.
2. Sample ``--n`` architectures spread over the cost range: many samples sorted by MACs, then ``n`` evenly spaced
   quantiles (MACs stand in for latency so that no latency table is needed).
3. Score each by the supernet (extract, BN recalibration, held-out split: what a ``type: supernet`` trial does) and
   by the proxy trainer (stand-alone training for ``--proxy-epochs`` on the same training split, evaluated on the
   same held-out split).
4. Kendall's tau-b between the two accuracies, and the baseline a user would try first: tau between MACs and the
   proxy accuracy (a bigger network is better). Wall times: supernet training, a supernet trial, a proxy trial,
   and the projection of a 1,000-trial search (supernet training + 1,000 supernet trials vs 1,000 proxy trials).

Usage::

    .venv/bin/python benchmarks/supernet_fidelity.py --quick --json      # a few minutes on digits
    .venv/bin/python benchmarks/supernet_fidelity.py --n 30 --supernet-epochs 30 --proxy-epochs 5
    .venv/bin/python benchmarks/supernet_fidelity.py --data /usr/share/datasets/fashion-mnist --resolution 32 \
        --images-per-class 1000 --val-fraction 0.3 --flip --proxy-epochs 3 --proxy-seeds 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mixnas.evaluators.data import DataSpec, load_proxy_data
from mixnas.evaluators.proxy import ProxyConfig, ProxyEvaluator
from mixnas.evaluators.supernet import store
from mixnas.evaluators.supernet.evaluator import SupernetEvaluator
from mixnas.evaluators.supernet.train import SupernetTrainer, SupernetTraining
from mixnas.search_space.spaces import load_space

SEARCH_TRIALS = 1000


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either list handled as in scipy.stats.kendalltau)."""
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif da == db:
                concordant += 1
            else:
                discordant += 1
    denom = ((concordant + discordant + ties_a) * (concordant + discordant + ties_b)) ** 0.5
    return float((concordant - discordant) / denom) if denom else float("nan")


def spread_sample(space: Any, n: int, seed: int) -> list[tuple[int, ...]]:
    """``n`` distinct encodings at evenly spaced MACs quantiles of ``20 * n`` samples."""
    rng = np.random.default_rng(seed)
    pool = {space.sample(rng) for _ in range(20 * n)}
    ranked = sorted(pool, key=lambda e: space.count(e).macs)
    picks = np.linspace(0, len(ranked) - 1, n).round().astype(int)
    return [ranked[i] for i in dict.fromkeys(picks.tolist())]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="tiny")
    p.add_argument("--data", default="digits")
    p.add_argument("--images-per-class", type=int)
    p.add_argument("--val-fraction", type=float, default=0.2, help="held-out share of each class (default %(default)s)")
    p.add_argument("--resolution", type=int, help="image side in pixels (default: the source's own)")
    p.add_argument("--flip", action="store_true", help="random horizontal flips in training (supernet and proxy)")
    p.add_argument("--n", type=int, default=30, help="architectures (default %(default)s)")
    p.add_argument("--supernet-epochs", type=int, default=30)
    p.add_argument("--proxy-epochs", type=float, default=5.0)
    p.add_argument("--proxy-seeds", type=int, default=1,
                   help="proxy trainings per architecture (seeds 0, 1, ...); with 2 or more the tau between the "
                   "first two seeds is the noise ceiling, and the main tau uses the mean (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--bn-batches", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", help="keep the supernet folder here (default: a temporary folder); a folder "
                   "holding a finished supernet of the same settings is reused (its recorded training time counts)")
    p.add_argument("--quick", action="store_true", help="digits, 10 architectures, 4 supernet / 3 proxy epochs")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.supernet_epochs, args.proxy_epochs = 10, 4, 3.0
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args, Path(args.output) if args.output else Path(tmp) / "supernet")
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        _print(result)
    return 0


def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    space = load_space(args.space)
    spec = DataSpec(args.data, images_per_class=args.images_per_class, val_fraction=args.val_fraction,
                    resolution=args.resolution, flip=args.flip, seed=args.seed)
    data = load_proxy_data(spec)
    training = SupernetTraining(epochs=args.supernet_epochs, batch_size=args.batch_size, seed=args.seed,
                                device="cpu")
    start = time.perf_counter()
    reused = store.read_state(folder) is not None if folder.is_dir() else False
    history = SupernetTrainer(space, data, folder, training, on_epoch=lambda e, m: print(
        f"supernet epoch {e}: largest {m['largest_top1']:.3f} smallest {m['smallest_top1']:.3f}",
        file=sys.stderr, flush=True)).fit(resume=reused)["history"]
    train_seconds = time.perf_counter() - start
    if reused:  # the epochs' own training time (their per-epoch checks excluded)
        train_seconds = sum(m["train_seconds"] for m in history)
    evaluator = SupernetEvaluator(folder, space=space, bn_batches=args.bn_batches, threads=args.threads)
    proxy = ProxyEvaluator(data, ProxyConfig(epochs=args.proxy_epochs, batch_size=args.batch_size,
                                             threads=args.threads, device="cpu", warmup_epochs=0.3))
    rows = []
    for i, enc in enumerate(spread_sample(space, args.n, args.seed)):
        arch = space.decode(enc)
        sn = evaluator.evaluate(enc)
        t0 = time.perf_counter()
        seeds = [proxy.evaluate(arch, seed=args.seed + k)["top1"] for k in range(args.proxy_seeds)]
        rows.append({"encoding": list(enc), "macs": sn["macs"], "params": sn["params"], "supernet_top1": sn["top1"],
                     "supernet_seconds": sn["eval_seconds"], "proxy_top1": statistics.mean(seeds),
                     "proxy_top1_seeds": seeds,
                     "proxy_seconds": round((time.perf_counter() - t0) / args.proxy_seeds, 3)})
        print(f"{i + 1}/{args.n}: {sn['macs']:,} MACs  supernet {sn['top1']:.3f}  proxy {seeds}",
              file=sys.stderr, flush=True)
    return _summary(args, data, train_seconds, rows, reused)


def _summary(args: argparse.Namespace, data: Any, train_seconds: float, rows: list[dict[str, Any]],
             reused: bool) -> dict[str, Any]:
    sn_s = statistics.mean(r["supernet_seconds"] for r in rows)
    px_s = statistics.mean(r["proxy_seconds"] for r in rows)
    return {
        "space": args.space, "data": data.summary(), "n": len(rows), "threads": args.threads,
        "supernet_epochs": args.supernet_epochs, "proxy_epochs": args.proxy_epochs,
        "kendall_tau": kendall_tau([r["supernet_top1"] for r in rows], [r["proxy_top1"] for r in rows]),
        "kendall_tau_macs_baseline": kendall_tau([r["macs"] for r in rows], [r["proxy_top1"] for r in rows]),
        "kendall_tau_proxy_seeds": (kendall_tau([r["proxy_top1_seeds"][0] for r in rows],
                                                [r["proxy_top1_seeds"][1] for r in rows])
                                    if args.proxy_seeds >= 2 else None),
        "supernet_reused": reused,
        "supernet_train_seconds": round(train_seconds, 1), "supernet_trial_seconds": round(sn_s, 3),
        "proxy_trial_seconds": round(px_s, 3),
        "search_seconds_supernet": round(train_seconds + SEARCH_TRIALS * sn_s, 1),
        "search_seconds_proxy": round(SEARCH_TRIALS * px_s, 1), "search_trials": SEARCH_TRIALS,
        "rows": rows,
    }


def _print(r: dict[str, Any]) -> None:
    print(f"{r['space']} on {r['data']['source']} ({r['data']['train_images']} train / {r['data']['val_images']} "
          f"held-out images), {r['n']} architectures, {r['threads']} thread(s)")
    print(f"Kendall tau, supernet vs proxy top-1: {r['kendall_tau']:.3f}  (baseline, MACs vs proxy top-1: "
          f"{r['kendall_tau_macs_baseline']:.3f})")
    if r["kendall_tau_proxy_seeds"] is not None:
        print(f"noise ceiling, proxy seed 0 vs seed 1: {r['kendall_tau_proxy_seeds']:.3f}")
    print(f"supernet training: {r['supernet_train_seconds']:.0f} s ({r['supernet_epochs']} epochs); a trial: "
          f"supernet {r['supernet_trial_seconds']:.2f} s, proxy {r['proxy_trial_seconds']:.2f} s "
          f"({r['proxy_epochs']} epochs)")
    print(f"a {r['search_trials']}-trial search (projected): supernet {r['search_seconds_supernet'] / 3600:.2f} h "
          f"(training included), proxy {r['search_seconds_proxy'] / 3600:.2f} h")


if __name__ == "__main__":
    sys.exit(main())

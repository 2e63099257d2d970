"""Fidelity of the weight-sharing supernet: does a subnet's supernet accuracy rank architectures like training them?

Steps, all measured in this run:

1. Train the supernet of a space (``tiny`` by default) on a data set (``digits`` by default; any DataSpec source,
   e.g. a Fashion-MNIST IDX folder) with :class:`~mixnas.evaluators.supernet.train.SupernetTrainer`.
2. Sample ``--n`` architectures spread over the cost range: evenly spaced MACs from the space's smallest to its
   largest member (:func:`spread_sample`; MACs stand in for latency so that no latency table is needed).
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

from mixnas.errors import MixnasError
from mixnas.data.spec import DataSpec
from mixnas.data.load import load_proxy_data
from mixnas.evaluators.latency.validate import kendall as kendall_tau  # tau-b
from mixnas.evaluators.base import TrialContext
from mixnas.evaluators.proxy import ProxyEvaluator
from mixnas.training.config import ProxyConfig
from mixnas.evaluators.supernet import store
from mixnas.evaluators.supernet.evaluator import SupernetEvaluator
from mixnas.evaluators.supernet.layout import extreme_encoding
from mixnas.evaluators.supernet.train import SupernetTrainer
from mixnas.training.config import SupernetTraining
from mixnas.search_space.counting import count
from mixnas.search_space.spaces import load_space
from mixnas.textio import read_json, write_json_atomic

SEARCH_TRIALS = 1000


def spread_sample(space: Any, n: int, seed: int, *, pool_factor: int = 20) -> list[tuple[int, ...]]:
    """``n`` distinct encodings at evenly spaced MACs from the space's smallest to its largest member.

    Uniform random samples crowd the middle of the cost range, where members of a small space differ least in
    accuracy; so the pool also holds mixtures of the smallest and the largest member (each dimension takes the
    largest member's choice with probability t, else the smallest's, a quarter of them a random choice, t from 0
    to 1), and for each of ``n`` MACs targets spaced evenly between the two extremes the closest unused member of
    the pool is taken.
    """
    rng = np.random.default_rng(seed)
    lo, hi = extreme_encoding(space, False), extreme_encoding(space, True)
    pool = {lo, hi} | {space.sample(rng) for _ in range(pool_factor * n // 2)}
    for t in np.linspace(0.0, 1.0, pool_factor * n // 2):
        random = space.sample(rng)
        mix = tuple(r if rng.random() < 0.25 else (h if rng.random() < t else l)
                    for r, h, l in zip(random, hi, lo))
        if space.is_feasible(mix):
            pool.add(mix)
    macs = {enc: space.count(enc).macs for enc in pool}
    chosen: list[tuple[int, ...]] = []
    for target in np.linspace(macs[lo], macs[hi], n):
        free = [e for e in pool if e not in chosen]
        chosen.append(min(free, key=lambda e: (abs(macs[e] - target), e)))
    return sorted(chosen, key=lambda e: macs[e])


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
                   help="proxy trainings per architecture (seeds 0, 1, ...); the main tau uses their mean; with 2 "
                   "or more the tau between two seeds is the noise ceiling (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--random-subnets", type=int, default=2, help="supernet training: sampled members per step "
                   "besides the largest and the smallest (default %(default)s)")
    p.add_argument("--no-distill", action="store_true", help="supernet training without in-place distillation")
    p.add_argument("--lr", type=float, help="supernet training: peak learning rate (default: 0.1 x batch / 64)")
    p.add_argument("--proxy-cache", help="a JSON file of proxy results (per encoding and seed, for these data and "
                   "proxy settings) reused and extended, so supernets of other settings are compared against the "
                   "same stand-alone trainings")
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
                                random_subnets=args.random_subnets, distill=not args.no_distill, lr=args.lr,
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
    cache = ProxyCache(args.proxy_cache, {"space": args.space, "data": spec.to_dict(), "epochs": args.proxy_epochs,
                                          "batch_size": args.batch_size, "threads": args.threads})
    rows = []
    for i, enc in enumerate(spread_sample(space, args.n, args.seed)):
        arch = space.decode(enc)
        scored = evaluator.score(arch, TrialContext(enc))
        if scored.status != "ok":
            raise SystemExit(f"supernet: {list(enc)}: {scored.status}: {scored.reason}")
        sn = scored.metrics
        counts = count(arch.replace(num_classes=data.num_classes, resolution=data.resolution))  # as trained
        results = [cache.get(enc, args.seed + k) or cache.put(enc, args.seed + k, _timed(proxy, arch, args.seed + k))
                   for k in range(args.proxy_seeds)]
        seeds = [r["top1"] for r in results]
        rows.append({"encoding": list(enc), "macs": counts.macs, "params": counts.params, "supernet_top1": sn["top1"],
                     "supernet_loss": sn["loss"], "supernet_seconds": sn["eval_seconds"],
                     "proxy_top1": statistics.mean(seeds), "proxy_top1_seeds": seeds,
                     "proxy_seconds": round(statistics.mean(r["seconds"] for r in results), 3)})
        print(f"{i + 1}/{args.n}: {counts.macs:,} MACs  supernet {sn['top1']:.3f}  proxy {seeds}",
              file=sys.stderr, flush=True)
    return _summary(args, data, train_seconds, rows, reused)


def _timed(proxy: ProxyEvaluator, arch: Any, seed: int) -> dict[str, float]:
    start = time.perf_counter()
    outcome = proxy.score(arch, TrialContext(seed=seed))
    if outcome.status != "ok":
        raise SystemExit(f"proxy trainer: {arch.id}: {outcome.status}: {outcome.reason}")
    top1 = outcome.metrics["top1"]
    return {"top1": top1, "seconds": round(time.perf_counter() - start, 3)}


class ProxyCache:
    """Proxy results by (encoding, seed) in a JSON file tied to the data and proxy settings (None: no file)."""

    def __init__(self, path: str | None, settings: dict[str, Any]) -> None:
        self.path, self.settings, self.results = path, settings, {}
        if path and Path(path).exists():
            try:
                saved = read_json(path, MixnasError)
            except MixnasError as exc:
                raise SystemExit(f"--proxy-cache: {exc}") from None
            if not isinstance(saved, dict) or not isinstance(saved.get("results"), dict):
                raise SystemExit(f"{path}: not a proxy cache of this benchmark (expected an object with 'settings' "
                                 "and 'results'); use another --proxy-cache file")
            if saved.get("settings") != settings:
                raise SystemExit(f"{path}: proxy results of other settings ({saved.get('settings')}); use another "
                                 "--proxy-cache file")
            self.results = saved["results"]

    def get(self, encoding: Sequence[int], seed: int) -> dict[str, float] | None:
        return self.results.get(f"{list(encoding)}@{seed}")

    def put(self, encoding: Sequence[int], seed: int, result: dict[str, float]) -> dict[str, float]:
        self.results[f"{list(encoding)}@{seed}"] = result
        if self.path:
            write_json_atomic(self.path, {"settings": self.settings, "results": self.results})
        return result


def _seed_taus(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How well one proxy training ranks against another (the noise ceiling of any evaluator against the proxy),
    next to how well the supernet ranks against one proxy training; with 4+ seeds also the mean of the even seeds
    against the mean of the odd ones (the ceiling of a half-seed mean)."""
    seeds = len(rows[0]["proxy_top1_seeds"])
    if seeds < 2:
        return {"kendall_tau_proxy_seeds": None, "kendall_tau_supernet_vs_one_seed": None,
                "kendall_tau_proxy_halves": None}
    column = [[r["proxy_top1_seeds"][k] for r in rows] for k in range(seeds)]
    supernet = [r["supernet_top1"] for r in rows]
    pairs = [kendall_tau(column[i], column[j]) for i in range(seeds) for j in range(i + 1, seeds)]
    halves = None
    if seeds >= 4:
        even = [statistics.mean(r["proxy_top1_seeds"][0::2]) for r in rows]
        odd = [statistics.mean(r["proxy_top1_seeds"][1::2]) for r in rows]
        halves = kendall_tau(even, odd)
    return {"kendall_tau_proxy_seeds": statistics.mean(pairs),
            "kendall_tau_supernet_vs_one_seed": statistics.mean(kendall_tau(supernet, c) for c in column),
            "kendall_tau_proxy_halves": halves}


def _summary(args: argparse.Namespace, data: Any, train_seconds: float, rows: list[dict[str, Any]],
             reused: bool) -> dict[str, Any]:
    sn_s = statistics.mean(r["supernet_seconds"] for r in rows)
    px_s = statistics.mean(r["proxy_seconds"] for r in rows)
    return {
        "space": args.space, "data": data.summary(), "n": len(rows), "threads": args.threads,
        "supernet_epochs": args.supernet_epochs, "proxy_epochs": args.proxy_epochs,
        "supernet_training": {"random_subnets": args.random_subnets, "distill": not args.no_distill, "lr": args.lr,
                              "bn_batches": args.bn_batches},
        "kendall_tau": kendall_tau([r["supernet_top1"] for r in rows], [r["proxy_top1"] for r in rows]),
        "kendall_tau_loss": kendall_tau([-r["supernet_loss"] for r in rows], [r["proxy_top1"] for r in rows]),
        "kendall_tau_macs_baseline": kendall_tau([r["macs"] for r in rows], [r["proxy_top1"] for r in rows]),
        **_seed_taus(rows),
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
    print(f"Kendall tau, supernet vs proxy top-1: {r['kendall_tau']:.3f}  (supernet loss: {r['kendall_tau_loss']:.3f}; "
          f"baseline, MACs vs proxy top-1: {r['kendall_tau_macs_baseline']:.3f})")
    if r["kendall_tau_proxy_seeds"] is not None:
        print(f"noise ceiling: one proxy seed vs another {r['kendall_tau_proxy_seeds']:.3f} (the supernet vs one "
              f"proxy seed: {r['kendall_tau_supernet_vs_one_seed']:.3f})")
    if r["kendall_tau_proxy_halves"] is not None:
        print(f"noise ceiling of a mean: even seeds' mean vs odd seeds' mean {r['kendall_tau_proxy_halves']:.3f}")
    print(f"supernet training: {r['supernet_train_seconds']:.0f} s ({r['supernet_epochs']} epochs); a trial: "
          f"supernet {r['supernet_trial_seconds']:.2f} s, proxy {r['proxy_trial_seconds']:.2f} s "
          f"({r['proxy_epochs']} epochs)")
    print(f"a {r['search_trials']}-trial search (projected): supernet {r['search_seconds_supernet'] / 3600:.2f} h "
          f"(training included), proxy {r['search_seconds_proxy'] / 3600:.2f} h")


if __name__ == "__main__":
    sys.exit(main())

"""Cost of the proxy trainer against plain hand-written torch loops, measured in the same run.

Three measurements, each alternating the loops in rounds (so that load from other processes on a shared machine
hits both alike) and reporting medians with the per-round spread:

1. **Training throughput** against the loop one writes first: the same model from ``mixnas.models.build`` in the
   default memory format, the images as a normalised float ``TensorDataset`` behind a ``DataLoader`` (shuffled,
   batch 64, no workers), SGD with Nesterov momentum, ``zero_grad`` / ``backward`` / ``step``.
2. **A whole trial** against the strongest plain loop: the same model in ``channels_last`` with ``channels_last``
   inputs made from uint8 batches indexed straight from memory, fused SGD, ``zero_grad(set_to_none=True)``, the
   same cosine schedule, then a plain evaluation of the held-out split (``model.eval()`` + ``inference_mode``,
   batches of 500). A trial is timed from building the model to the last metric: build + train + every
   evaluation. The trainer is timed as a search runs it: without an early-stopping scheduler nothing consumes
   per-epoch reports, so it evaluates once, at the end (``final``); with one (ASHA) it evaluates, with batch-norm
   recalibration, after every epoch (``per-epoch``, which is also what every search trial did before). Printed:
   seconds per trial, the speed-up plain / trainer (> 1: the trainer is faster) and the evaluation share of a trial.
3. How long ``mixnet_tiny`` takes to reach 90% held-out top-1 on ``digits``.

Usage::

    .venv/bin/python benchmarks/proxy_trainer.py                 # all of it, 1 thread, 3 rounds
    .venv/bin/python benchmarks/proxy_trainer.py --threads 2 --rounds 5 --quick
    .venv/bin/python benchmarks/proxy_trainer.py --only trial --rounds 3 --json   # one JSON document on stdout
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from typing import Any

import torch
from torch import nn

from mixnas.data.spec import DataSpec

from mixnas.data.sets import ProxyData

from mixnas.data.load import load_proxy_data
from mixnas.evaluators.base import TrialContext
from mixnas.evaluators.proxy import ProxyEvaluator
from mixnas.training.config import ProxyConfig
from mixnas.models import build
from mixnas.search_space.presets import resolve_arch

# (architecture, resolution, classes, steps per measurement)
CASES = (
    ("mixnet_tiny", 32, 10, 30),
    ("mixnet_tiny", 64, 10, 16),
    ("mixnet_s", 32, 10, 12),
    ("mixnet_s", 64, 10, 8),
)
# whole trials: (architecture, resolution, images per class, epochs) on 10 synthetic classes, 20% held out
TRIAL_CASES = (
    ("mixnet_s", 64, 100, 3),
    ("mixnet_tiny", 32, 180, 5),
)
BATCH = 64
EVAL_BATCH = 500


def say(*args: Any) -> None:
    """Progress and tables: stdout, or stderr under --json (stdout is then exactly one JSON document)."""
    print(*args, file=sys.stderr if JSON_MODE else sys.stdout, flush=True)


JSON_MODE = False


def spread(values: list[float], digits: int = 2) -> str:
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


# ----------------------------------------------------------------------------------------------------------------
# 1. Training throughput against the first-written loop
# ----------------------------------------------------------------------------------------------------------------
def plain_loop(arch_name: str, resolution: int, data_spec: DataSpec, steps: int, seed: int) -> float:
    """Images per second of a straightforward training loop (timed from the first step, like the trainer)."""
    data = load_proxy_data(data_spec)
    scale, shift = data.normalizer()
    x = data.train_images.permute(0, 3, 1, 2).float().contiguous() * scale + shift
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, data.train_labels), batch_size=BATCH, shuffle=True, drop_last=True
    )
    torch.manual_seed(seed)
    arch = resolve_arch(arch_name).replace(resolution=resolution, num_classes=data.num_classes)
    model = build(arch)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-5)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    model.train()
    done = 0
    start = time.perf_counter()
    while done < steps:
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = criterion(model(xb), yb)
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
    return steps * BATCH / (time.perf_counter() - start)


def proxy_trainer(arch_name: str, resolution: int, data_spec: DataSpec, steps: int, seed: int) -> float:
    arch = resolve_arch(arch_name).replace(resolution=resolution)
    config = ProxyConfig(steps=steps, epochs=None, batch_size=BATCH, lr=0.05)
    outcome = ProxyEvaluator(data_spec, config).score(arch, TrialContext(seed=seed))
    if outcome.status != "ok":
        raise RuntimeError(f"proxy trainer: {outcome.status}: {outcome.reason}")
    return outcome.metrics["images_per_second"]


def throughput(rounds: int, cases: tuple[tuple[str, int, int, int], ...]) -> list[dict[str, Any]]:
    rows = []
    say(f"{'model':<12} {'px':>3} {'plain img/s':>12} {'proxy img/s':>12} {'ratio':>6}   per-round ratios")
    for arch_name, resolution, classes, steps in cases:
        spec = DataSpec("synthetic", classes=classes, images_per_class=max(64, steps * BATCH // classes + 8),
                        resolution=resolution, val_fraction=0.05)
        load_proxy_data(spec)  # load once, outside the timings
        plain, proxy, round_ratios = [], [], []
        for r in range(rounds):
            a = plain_loop(arch_name, resolution, spec, steps, seed=r)
            b = proxy_trainer(arch_name, resolution, spec, steps, seed=r)
            plain.append(a)
            proxy.append(b)
            round_ratios.append(b / a)
        row = {"arch": arch_name, "resolution": resolution, "plain_images_per_second": statistics.median(plain),
               "proxy_images_per_second": statistics.median(proxy), "ratio": statistics.median(round_ratios),
               "round_ratios": round_ratios}
        rows.append(row)
        say(f"{arch_name:<12} {resolution:>3} {row['plain_images_per_second']:>12.0f} "
            f"{row['proxy_images_per_second']:>12.0f} {row['ratio']:>6.2f}   {' '.join(f'{x:.2f}' for x in round_ratios)}")
    say(f"median ratio proxy / plain over cases: {statistics.median(r['ratio'] for r in rows):.2f} (goal >= 1.5)")
    return rows


# ----------------------------------------------------------------------------------------------------------------
# 2. A whole trial against the strongest plain loop + a plain evaluation
# ----------------------------------------------------------------------------------------------------------------
def plain_cosine(step: int, total: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@torch.inference_mode()
def plain_evaluate(model: nn.Module, data: ProxyData, scale: torch.Tensor, shift: torch.Tensor) -> dict[str, float]:
    """Held-out top-1 / top-5 / loss with the running BN averages: model.eval(), inference_mode, batches of 500."""
    model.eval()
    n = int(data.val_labels.numel())
    correct1 = correct5 = 0
    loss_sum = 0.0
    for lo in range(0, n, EVAL_BATCH):
        x = torch.addcmul(shift, data.val_images[lo : lo + EVAL_BATCH].permute(0, 3, 1, 2).float(), scale)
        y = data.val_labels[lo : lo + EVAL_BATCH]
        logits = model(x)
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        hits = logits.topk(5, dim=1).indices == y[:, None]
        correct1 += int(hits[:, 0].sum())
        correct5 += int(hits.any(dim=1).sum())
    return {"top1": correct1 / n, "top5": correct5 / n, "loss": loss_sum / n}


def plain_trial(arch_name: str, data: ProxyData, epochs: int, seed: int) -> dict[str, float]:
    """The strongest plain loop: channels_last model and inputs from uint8 rows in memory, fused SGD, gradients
    set to None, cosine LR with one warm-up epoch; then :func:`plain_evaluate`. Timed from the build."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    arch = resolve_arch(arch_name).replace(resolution=data.resolution, num_classes=data.num_classes)
    model = build(arch).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-5, fused=True)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    scale, shift = data.normalizer()
    n = int(data.train_labels.numel())
    per_epoch = n // BATCH
    total = per_epoch * epochs
    generator = torch.Generator().manual_seed(seed)
    loss_sum = torch.zeros(())
    step = 0
    train_start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        model.train()
        for i in range(per_epoch):
            rows = order[i * BATCH : (i + 1) * BATCH]
            x = torch.addcmul(shift, data.train_images[rows].permute(0, 3, 1, 2).float(), scale)  # channels_last
            for group in optimizer.param_groups:
                group["lr"] = plain_cosine(step, total, per_epoch, 0.1)
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(x), data.train_labels[rows])
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            step += 1
    train_end = time.perf_counter()
    metrics = plain_evaluate(model, data, scale, shift)
    end = time.perf_counter()
    return {"seconds": end - start, "eval_seconds": end - train_end, "train_loss": float(loss_sum) / total,
            "images_per_second": total * BATCH / (train_end - train_start), **metrics}


def trainer_trial(evaluator: ProxyEvaluator, arch_name: str, seed: int, per_epoch: bool) -> dict[str, float]:
    """One trial of the proxy trainer, from build to the final evaluation; ``per_epoch``: a report consumer."""
    start = time.perf_counter()
    context = TrialContext(seed=seed, report=(lambda e, m: False) if per_epoch else None)
    outcome = evaluator.score(resolve_arch(arch_name), context)
    seconds = time.perf_counter() - start
    if outcome.status != "ok":
        raise RuntimeError(f"proxy trainer: {outcome.status}: {outcome.reason}")
    result = outcome.metrics
    return {"seconds": seconds, "eval_seconds": result["eval_seconds"], "train_loss": result["train_loss"],
            "images_per_second": result["images_per_second"], "top1": result["top1"], "top5": result["top5"],
            "loss": result["loss"]}


def whole_trial_case(arch_name: str, resolution: int, per_class: int, epochs: int, rounds: int) -> dict[str, Any]:
    spec = DataSpec("synthetic", classes=10, images_per_class=per_class, resolution=resolution, val_fraction=0.2)
    data = load_proxy_data(spec)  # loaded once, outside the timings (a search worker loads it once too)
    evaluator = ProxyEvaluator(spec, ProxyConfig(epochs=epochs, batch_size=BATCH))
    runs: dict[str, list[dict[str, float]]] = {"plain": [], "final": [], "per-epoch": []}
    for r in range(rounds):  # the order rotates from round to round, so that no loop always runs first
        order = ("plain", "final", "per-epoch")[r % 3:] + ("plain", "final", "per-epoch")[: r % 3]
        for name in order:
            if name == "plain":
                runs[name].append(plain_trial(arch_name, data, epochs, seed=r))
            else:
                runs[name].append(trainer_trial(evaluator, arch_name, seed=r, per_epoch=name == "per-epoch"))
    out: dict[str, Any] = {"arch": arch_name, "resolution": resolution, "epochs": epochs,
                           "train_images": int(data.train_labels.numel()), "val_images": int(data.val_labels.numel())}
    for name, trials in runs.items():
        seconds = [t["seconds"] for t in trials]
        shares = [t["eval_seconds"] / t["seconds"] for t in trials]
        out[name] = {"seconds": statistics.median(seconds), "seconds_per_round": seconds,
                     "eval_share": statistics.median(shares), "eval_share_per_round": shares,
                     "train_images_per_second": statistics.median(t["images_per_second"] for t in trials),
                     "top1": statistics.median(t["top1"] for t in trials)}
        if name != "plain":  # the speed-up of each round: plain seconds / trainer seconds of the same round
            ratios = [p["seconds"] / t["seconds"] for p, t in zip(runs["plain"], trials)]
            out[name].update(speedup=statistics.median(ratios), speedup_per_round=ratios)
    return out


def whole_trials(rounds: int, cases: tuple[tuple[str, int, int, int], ...]) -> list[dict[str, Any]]:
    say(f"{'model':<12} {'px':>3} {'ep':>2} {'loop':<10} {'s/trial':>8} {'spread':>11} {'train img/s':>11} "
        f"{'eval %':>6} {'top1':>5} {'speed-up':>8} {'spread':>9}")
    rows = []
    for case in cases:
        row = whole_trial_case(*case, rounds)
        rows.append(row)
        for name in ("plain", "final", "per-epoch"):
            r = row[name]
            speed = f"{r['speedup']:>8.2f} {spread(r['speedup_per_round']):>9}" if "speedup" in r else ""
            say(f"{row['arch']:<12} {row['resolution']:>3} {row['epochs']:>2} {name:<10} {r['seconds']:>8.2f} "
                f"{spread(r['seconds_per_round'], 1):>11} {r['train_images_per_second']:>11.0f} "
                f"{100 * r['eval_share']:>6.1f} {r['top1']:>5.3f} {speed}")
    say("speed-up = plain seconds / trainer seconds per trial (goal >= 1.2); eval % = evaluation share of a trial "
        "(goal <= 15%); top1: median held-out top-1 (the plain loop evaluates with BN running averages)")
    return rows


# ----------------------------------------------------------------------------------------------------------------
# 3. Time to accuracy
# ----------------------------------------------------------------------------------------------------------------
def time_to_accuracy(target: float = 0.9, max_epochs: int = 10) -> dict[str, Any]:
    """Train mixnet_tiny on digits (32 px), evaluating after every epoch, until held-out top-1 >= target."""
    reached: dict[str, float] = {}

    def report(epoch: int, metrics: dict) -> bool:
        if metrics["top1"] >= target and not reached:
            reached.update(epoch=epoch, train_seconds=metrics["train_seconds"], top1=metrics["top1"])
        return bool(reached)

    evaluator = ProxyEvaluator(DataSpec("digits"), ProxyConfig(epochs=max_epochs))
    load_proxy_data(DataSpec("digits", resolution=32))
    start = time.perf_counter()
    result = evaluator.score(resolve_arch("mixnet_tiny"), TrialContext(seed=0, report=report)).metrics
    wall = time.perf_counter() - start
    if reached:
        say(f"mixnet_tiny on digits: {reached['top1']:.3f} held-out top-1 after epoch {reached['epoch']:.0f}: "
            f"{reached['train_seconds']:.1f} s of training, {wall:.1f} s including build and evaluations")
    else:
        say(f"mixnet_tiny on digits: {target:.0%} not reached in {max_epochs} epochs (top1 {result['top1']:.3f})")
    return {"target": target, **reached, "wall_seconds": wall, "reached": bool(reached)}


def main() -> None:
    global JSON_MODE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both loops (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per case (default 3)")
    parser.add_argument("--quick", action="store_true", help="the first case of each measurement only")
    parser.add_argument("--only", choices=("throughput", "trial", "accuracy"), action="append",
                        help="run only this measurement (repeatable; default: all three)")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout (tables go to stderr)")
    args = parser.parse_args()
    if args.threads < 1 or args.rounds < 1:
        parser.error("--threads and --rounds must be >= 1")
    JSON_MODE = args.json
    parts = set(args.only or ("throughput", "trial", "accuracy"))
    torch.set_num_threads(args.threads)
    # torch.optim.Optimizer imports torch._dynamo on first use (1-7 s here): once per process, paid here, outside
    # every timing (a search worker pays it once for all its trials)
    torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    say(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPUs, load average {load:.1f}")
    doc: dict[str, Any] = {"torch": torch.__version__, "threads": args.threads, "rounds": args.rounds,
                           "cpus": os.cpu_count(), "load_average_start": load}
    if "throughput" in parts:
        doc["throughput"] = throughput(args.rounds, CASES[:1] if args.quick else CASES)
    if "trial" in parts:
        doc["whole_trial"] = whole_trials(args.rounds, TRIAL_CASES[:1] if args.quick else TRIAL_CASES)
    if "accuracy" in parts:
        doc["time_to_accuracy"] = time_to_accuracy()
    doc["load_average_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    say(f"load average at the end: {doc['load_average_end']:.1f}")
    if args.json:
        print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()

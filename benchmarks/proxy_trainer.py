"""Training throughput of the proxy trainer against a plain hand-written torch loop, measured in the same run.

The plain loop is what one writes first: the same model from ``mixnas.models.build`` in the default memory format,
the same images as a normalised float ``TensorDataset`` behind a ``DataLoader`` (shuffled, batch 64, no workers),
SGD with Nesterov momentum, ``zero_grad`` / ``backward`` / ``step``. The proxy trainer is
:class:`mixnas.evaluators.proxy.ProxyEvaluator` with its defaults. Both train the same number of steps on the same
synthetic images with the same thread count; the rounds alternate between the two so that load from other
processes on a shared machine hits both alike, and the figures are medians over rounds.

It also measures how long ``mixnet_tiny`` takes to reach 90% held-out top-1 on ``digits``.

Usage::

    .venv/bin/python benchmarks/proxy_trainer.py                 # all cases, 1 thread, 3 rounds
    .venv/bin/python benchmarks/proxy_trainer.py --threads 2 --rounds 5 --quick
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

from mixnas.evaluators.data import DataSpec, load_proxy_data
from mixnas.evaluators.proxy import ProxyConfig, ProxyEvaluator
from mixnas.models import build
from mixnas.search_space.presets import resolve_arch

# (architecture, resolution, classes, steps per measurement)
CASES = (
    ("mixnet_tiny", 32, 10, 30),
    ("mixnet_tiny", 64, 10, 16),
    ("mixnet_s", 32, 10, 12),
    ("mixnet_s", 64, 10, 8),
)
BATCH = 64


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
    result = ProxyEvaluator(data_spec, config).evaluate(arch, seed=seed)
    if result["status"] != "ok":
        raise RuntimeError(f"proxy trainer: {result['status']}: {result['error']}")
    return result["images_per_second"]


def throughput(rounds: int, cases: tuple[tuple[str, int, int, int], ...]) -> list[float]:
    ratios = []
    print(f"{'model':<12} {'px':>3} {'plain img/s':>12} {'proxy img/s':>12} {'ratio':>6}   per-round ratios")
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
        ratio = statistics.median(round_ratios)
        ratios.append(ratio)
        print(
            f"{arch_name:<12} {resolution:>3} {statistics.median(plain):>12.0f} {statistics.median(proxy):>12.0f} "
            f"{ratio:>6.2f}   {' '.join(f'{x:.2f}' for x in round_ratios)}",
            flush=True,
        )
    return ratios


def time_to_accuracy(target: float = 0.9, max_epochs: int = 10) -> None:
    """Train mixnet_tiny on digits (32 px), evaluating after every epoch, until held-out top-1 >= target."""
    reached: dict[str, float] = {}

    def report(epoch: int, metrics: dict) -> bool:
        if metrics["top1"] >= target and not reached:
            reached.update(epoch=epoch, train_seconds=metrics["train_seconds"], top1=metrics["top1"])
        return bool(reached)

    evaluator = ProxyEvaluator(DataSpec("digits"), ProxyConfig(epochs=max_epochs))
    load_proxy_data(DataSpec("digits", resolution=32))
    start = time.perf_counter()
    result = evaluator.evaluate(resolve_arch("mixnet_tiny"), seed=0, report=report)
    wall = time.perf_counter() - start
    if reached:
        print(
            f"mixnet_tiny on digits: {reached['top1']:.3f} held-out top-1 after epoch {reached['epoch']:.0f}: "
            f"{reached['train_seconds']:.1f} s of training, {wall:.1f} s including build and evaluations"
        )
    else:
        print(f"mixnet_tiny on digits: {target:.0%} not reached in {max_epochs} epochs (top1 {result['top1']:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both loops (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per case (default 3)")
    parser.add_argument("--quick", action="store_true", help="mixnet_tiny at 32 px only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPUs, load average {load:.1f}")
    ratios = throughput(args.rounds, CASES[:1] if args.quick else CASES)
    print(f"median ratio proxy / plain over cases: {statistics.median(ratios):.2f} (goal >= 1.5)")
    time_to_accuracy()
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

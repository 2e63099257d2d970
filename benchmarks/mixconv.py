"""Benchmark: forward + backward time of mixnas's MixConv against two baselines, measured in the same run.

* ``ours``: :class:`mixnas.models.MixConv` in ``channels_last`` (split views -> per-group depthwise conv -> cat);
* ``naive``: a straightforward split / conv / cat written here, in the default (NCHW) layout;
* ``zeropad``: one depthwise convolution whose kernels are all zero-padded to the largest size (the MixConv
  paper's "naive" alternative), in ``channels_last``, its faster layout here (in NCHW its backward at 56x56 was
  tens of times slower still, so it is left out to keep the run short).

All variants compute the same function (checked before timing). Each timing is the median of ``--repeats``
forward+backward passes after ``--warmup`` passes, and the variants are interleaved within each repeat so that
load from other processes on a shared machine hits them alike. Ratios > 1 mean ``ours`` is faster.

Usage::

    .venv/bin/python benchmarks/mixconv.py            # table
    .venv/bin/python benchmarks/mixconv.py --json     # one JSON document on stdout
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mixnas.models import MixConv
from mixnas.search_space.arch import split_channels

Variant = Callable[[torch.Tensor], torch.Tensor]


class NaiveMixConv(nn.Module):
    """Reference MixConv: torch.split, one depthwise conv per group, torch.cat, used in NCHW."""

    def __init__(self, splits: Sequence[int], kernels: Sequence[int]) -> None:
        super().__init__()
        self.splits = list(splits)
        self.convs = nn.ModuleList(
            nn.Conv2d(c, c, k, padding=k // 2, groups=c, bias=False) for c, k in zip(splits, kernels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([conv(t) for conv, t in zip(self.convs, torch.split(x, self.splits, dim=1))], dim=1)


class ZeroPadMixConv(nn.Module):
    """One depthwise conv with every group's kernel zero-padded (centred) to the largest kernel.

    The padded taps stay zero in the forward pass (the weight is masked), so the function is MixConv's; the cost is
    that of a single depthwise conv at the largest kernel size.
    """

    def __init__(self, splits: Sequence[int], kernels: Sequence[int]) -> None:
        super().__init__()
        size = max(kernels)
        channels = sum(splits)
        mask = torch.zeros(channels, 1, size, size)
        start = 0
        for c, k in zip(splits, kernels):
            off = (size - k) // 2
            mask[start : start + c, :, off : off + k, off : off + k] = 1.0
            start += c
        self.register_buffer("mask", mask)
        self.weight = nn.Parameter(torch.zeros(channels, 1, size, size))
        self.padding = size // 2

    @classmethod
    def from_mixconv(cls, mix: MixConv) -> ZeroPadMixConv:
        module = cls(mix.splits, mix.kernel_sizes)
        size = max(mix.kernel_sizes)
        start = 0
        with torch.no_grad():
            for conv, c, k in zip(mix.convs, mix.splits, mix.kernel_sizes):
                off = (size - k) // 2
                module.weight[start : start + c, :, off : off + k, off : off + k] = conv.weight
                start += c
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, padding=self.padding, groups=self.weight.shape[0])


def _step(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> None:
    module.zero_grad(set_to_none=True)
    x.grad = None
    module(x).backward(grad)


def time_variants(
    variants: dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor]], *, warmup: int, repeats: int
) -> dict[str, float]:
    """Median forward+backward milliseconds of each variant, interleaved repeat by repeat."""
    for _ in range(warmup):
        for module, x, grad in variants.values():
            _step(module, x, grad)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, (module, x, grad) in variants.items():
            start = time.perf_counter()
            _step(module, x, grad)
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}


def make_variants(
    channels: int, kernels: Sequence[int], size: int, batch: int
) -> dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    splits = split_channels(channels, len(kernels))
    ours = MixConv(splits, kernels)
    naive = NaiveMixConv(splits, kernels)
    naive.load_state_dict(ours.state_dict())
    zeropad = ZeroPadMixConv.from_mixconv(ours)

    x = torch.randn(batch, channels, size, size)
    grad = torch.randn(batch, channels, size, size)
    cl = torch.channels_last

    def inputs(memory_format: torch.memory_format) -> tuple[torch.Tensor, torch.Tensor]:
        return x.to(memory_format=memory_format).requires_grad_(), grad.to(memory_format=memory_format)

    variants = {
        "ours": (ours.to(memory_format=cl), *inputs(cl)),
        "naive": (naive, *inputs(torch.contiguous_format)),
        "zeropad": (zeropad.to(memory_format=cl), *inputs(cl)),
    }
    with torch.no_grad():
        reference = ours(variants["ours"][1])
        for name, (module, inp, _) in variants.items():
            if not torch.allclose(module(inp), reference, atol=1e-4, rtol=1e-4):
                raise RuntimeError(f"variant {name} does not compute the same function as MixConv")
    return variants


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=192)
    parser.add_argument("--kernels", default="3.5.7.9", help="dot-separated kernel sizes (default 3.5.7.9)")
    parser.add_argument("--sizes", default="28,56", help="comma-separated spatial sizes (default 28,56)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    kernels = [int(k) for k in args.kernels.split(".")]
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        variants = make_variants(args.channels, kernels, size, args.batch)
        ms = time_variants(variants, warmup=args.warmup, repeats=args.repeats)
        results.append(
            {
                "size": size,
                "ms": {name: round(value, 2) for name, value in ms.items()},
                "naive_over_ours": round(ms["naive"] / ms["ours"], 2),
                "zeropad_over_ours": round(ms["zeropad"] / ms["ours"], 2),
            }
        )
    report = {
        "benchmark": "mixconv forward+backward",
        "channels": args.channels,
        "kernels": kernels,
        "batch": args.batch,
        "threads": args.threads,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"MixConv forward+backward, {args.channels} channels, kernels {args.kernels}, batch {args.batch}, "
        f"{args.threads} threads, median of {args.repeats} (ms; ratio > 1: ours faster); "
        f"load average {report['load_average_1min']}"
    )
    print(f"{'size':>5} {'ours':>9} {'naive':>9} {'zeropad':>9} {'naive/ours':>11} {'zeropad/ours':>13}")
    for r in results:
        ms = r["ms"]
        print(
            f"{r['size']:>5} {ms['ours']:>9.1f} {ms['naive']:>9.1f} {ms['zeropad']:>9.1f} "
            f"{r['naive_over_ours']:>11.2f} {r['zeropad_over_ours']:>13.2f}"
        )
    met = all(r["naive_over_ours"] >= 2 and r["zeropad_over_ours"] > 1 for r in results)
    print(f"goal (naive/ours >= 2 and zeropad/ours > 1 at every size): {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()

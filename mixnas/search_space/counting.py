"""Analytic parameter and multiply-add counts, from the architecture record alone (no torch, no forward pass).

Searches call this thousands of times (constraints, objectives, reports), so it works on
:meth:`Architecture.layers` directly. Conventions match ``torch.utils.flop_counter.FlopCounterMode`` and the
official TF models:

* **params**: convolution and dense weights, the biases of the SE convolutions and the classifier, and batch-norm
  gamma / beta (TF trainable variables; BN running statistics are not parameters).
* **MACs**: convolutions (including the SE 1x1 convolutions, at 1x1 spatial size) and the classifier, biases
  excluded; batch norm, activations, pooling, the SE gate multiply and the residual add are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from mixnas.search_space.arch import Architecture, LayerSpec, conv_output_size, split_channels

STEM_KERNEL = 3
IMAGE_CHANNELS = 3


@dataclass(frozen=True)
class Count:
    """Parameters and multiply-adds of one part of a network."""

    params: int
    macs: int

    def __add__(self, other: Count) -> Count:
        return Count(self.params + other.params, self.macs + other.macs)


ZERO = Count(0, 0)


def _grouped_1x1(in_splits: tuple[int, ...], out_splits: tuple[int, ...], pixels: int) -> Count:
    weights = sum(i * o for i, o in zip(in_splits, out_splits))
    return Count(weights, weights * pixels)


def count_layer(layer: LayerSpec) -> Count:
    """Params and MACs of one block repeat (expand, MixConv, SE, project, with their batch norms)."""
    total = ZERO
    in_pixels = layer.input_size**2
    out_pixels = layer.output_size**2
    if layer.has_expand:
        total += _grouped_1x1(*layer.expand_splits, in_pixels) + Count(2 * layer.mid_channels, 0)
    dw_weights = sum(k * k * c for k, c in zip(layer.kernel_sizes, layer.dw_splits))
    total += Count(dw_weights + 2 * layer.mid_channels, dw_weights * out_pixels)
    if layer.se_channels:
        se_weights = 2 * layer.mid_channels * layer.se_channels
        total += Count(se_weights + layer.se_channels + layer.mid_channels, se_weights)
    total += _grouped_1x1(*layer.project_splits, out_pixels) + Count(2 * layer.out_channels, 0)
    return total


def stem_count(channels: int, resolution: int) -> Count:
    """The 3x3 stride-2 stem convolution and its batch norm, ``channels`` wide (after width scaling)."""
    weights = STEM_KERNEL * STEM_KERNEL * IMAGE_CHANNELS * channels
    pixels = conv_output_size(resolution, 2) ** 2
    return Count(weights + 2 * channels, weights * pixels)


def head_count(in_channels: int, head_channels: int, size: int) -> Count:
    """The 1x1 head convolution (``in_channels`` -> ``head_channels`` at ``size`` x ``size``) and its batch norm."""
    weights = in_channels * head_channels
    return Count(weights + 2 * head_channels, weights * size**2)


def classifier_count(head_channels: int, num_classes: int) -> Count:
    """The dense classifier and its bias."""
    weights = head_channels * num_classes
    return Count(weights + num_classes, weights)


def count_stem(arch: Architecture) -> Count:
    return stem_count(arch.stem_channels, arch.resolution)


def count_head(arch: Architecture) -> Count:
    """The 1x1 head convolution and its batch norm."""
    return head_count(arch.final_channels, arch.head_channels, arch.final_size)


def count_classifier(arch: Architecture, num_classes: int | None = None) -> Count:
    return classifier_count(arch.head_channels, arch.num_classes if num_classes is None else num_classes)


@dataclass(frozen=True)
class Breakdown:
    """Per-part counts of a network; ``total`` is their sum."""

    stem: Count
    layers: tuple[Count, ...]
    head: Count
    classifier: Count

    @property
    def total(self) -> Count:
        total = self.stem + self.head + self.classifier
        for layer in self.layers:
            total += layer
        return total


def breakdown(arch: Architecture, num_classes: int | None = None) -> Breakdown:
    return Breakdown(
        stem=count_stem(arch),
        layers=tuple(count_layer(layer) for layer in arch.layers()),
        head=count_head(arch),
        classifier=count_classifier(arch, num_classes),
    )


def count(arch: Architecture, num_classes: int | None = None) -> Count:
    """Total params and MACs at the architecture's resolution (``num_classes`` overrides the record's)."""
    return breakdown(arch, num_classes).total


def count_params(arch: Architecture, num_classes: int | None = None) -> int:
    return count(arch, num_classes).params


def count_macs(arch: Architecture, num_classes: int | None = None) -> int:
    return count(arch, num_classes).macs


__all__ = [
    "Breakdown",
    "Count",
    "breakdown",
    "classifier_count",
    "count",
    "count_classifier",
    "count_head",
    "count_layer",
    "count_macs",
    "count_params",
    "count_stem",
    "head_count",
    "split_channels",
    "stem_count",
]

"""Decomposition of an architecture into latency-table *signatures*.

A signature is a canonical string that names one part of a network together with everything that changes its
latency at a given batch size: the stem, every block repeat (one :class:`~mixnas.search_space.arch.LayerSpec`),
the head (1x1 convolution, batch norm, activation and global average pooling) and the classifier. Two parts with
the same signature run the same operators on tensors of the same shapes, so the lookup table (LUT) measures each
signature once, as FBNet (Wu et al., CVPR 2019) and ProxylessNAS (Cai et al., ICLR 2019) do for their layer
tables.

Formats (underscore-separated like block strings; ``r`` is the *input* resolution)::

    stem_r224_i3_o16_s2
    mb_r112_i16_m96_o24_s2_k3.5.7_d1.1.1_c32.32.32_a2_p2_se0_relu_skip0
    head_r7_i200_o1536
    fc_i1536_o1000

``mb`` fields: input / mid (expanded) / output channels, stride, effective kernels, their dilations, the MixConv
channel split, expansion and projection groups, SE width (0 = none), activation and whether the identity
shortcut is used. The expanded width equals the input width exactly when there is no expansion convolution.
:data:`SIGNATURE_VERSION` is stored in every LUT; it changes whenever the strings or what the builder puts
behind them change, so an old table is refused instead of silently mispredicting.

This module needs no torch. :func:`part_module` (torch) builds the module a signature stands for, for profiling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from mixnas.search_space.arch import Architecture, LayerSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch

SIGNATURE_VERSION = 1
IMAGE_CHANNELS = 3


@dataclass(frozen=True)
class StemPart:
    """The 3x3 stride-2 stem convolution with batch norm and activation."""

    resolution: int
    out_channels: int

    @property
    def signature(self) -> str:
        return f"stem_r{self.resolution}_i{IMAGE_CHANNELS}_o{self.out_channels}_s2"

    def input_shape(self, batch_size: int) -> tuple[int, ...]:
        return (batch_size, IMAGE_CHANNELS, self.resolution, self.resolution)


@dataclass(frozen=True)
class BlockPart:
    """One MBConv block repeat."""

    layer: LayerSpec

    @property
    def signature(self) -> str:
        return layer_signature(self.layer)

    def input_shape(self, batch_size: int) -> tuple[int, ...]:
        layer = self.layer
        return (batch_size, layer.in_channels, layer.input_size, layer.input_size)


@dataclass(frozen=True)
class HeadPart:
    """The 1x1 head convolution, batch norm, activation and global average pooling."""

    resolution: int
    in_channels: int
    out_channels: int

    @property
    def signature(self) -> str:
        return f"head_r{self.resolution}_i{self.in_channels}_o{self.out_channels}"

    def input_shape(self, batch_size: int) -> tuple[int, ...]:
        return (batch_size, self.in_channels, self.resolution, self.resolution)


@dataclass(frozen=True)
class ClassifierPart:
    """The fully connected classifier on pooled features."""

    in_channels: int
    num_classes: int

    @property
    def signature(self) -> str:
        return f"fc_i{self.in_channels}_o{self.num_classes}"

    def input_shape(self, batch_size: int) -> tuple[int, ...]:
        return (batch_size, self.in_channels)


Part = Union[StemPart, BlockPart, HeadPart, ClassifierPart]


def _dots(values: tuple[int, ...]) -> str:
    return ".".join(str(v) for v in values)


def layer_signature(layer: LayerSpec) -> str:
    """Canonical signature of one block repeat (position in the network is deliberately left out)."""
    return (
        f"mb_r{layer.input_size}_i{layer.in_channels}_m{layer.mid_channels}_o{layer.out_channels}"
        f"_s{layer.stride}_k{_dots(layer.kernel_sizes)}_d{_dots(layer.dilations)}_c{_dots(layer.dw_splits)}"
        f"_a{layer.expand_groups}_p{layer.project_groups}_se{layer.se_channels}"
        f"_{'swish' if layer.swish else 'relu'}_skip{int(layer.has_skip)}"
    )


def arch_parts(arch: Architecture) -> tuple[Part, ...]:
    """The parts of ``arch`` in forward order: stem, every block repeat, head, classifier."""
    layers = arch.layers()
    return (
        StemPart(arch.resolution, arch.stem_channels),
        *(BlockPart(layer) for layer in layers),
        HeadPart(layers[-1].output_size, arch.final_channels, arch.head_channels),
        ClassifierPart(arch.head_channels, arch.num_classes),
    )


def arch_signatures(arch: Architecture) -> tuple[str, ...]:
    """Signatures of ``arch``'s parts in forward order (a signature repeats when a part does)."""
    return tuple(part.signature for part in arch_parts(arch))


def part_module(part: Part, arch: Architecture) -> torch.nn.Module:
    """The torch module ``part`` stands for, in eval mode, built as :func:`mixnas.models.build` builds it.

    ``arch`` supplies the batch-norm settings; it must be the architecture the part came from (or one with the
    same global parameters). The head part includes the global average pooling (and flattening) of the network;
    the classifier part is the dense layer alone (dropout is a no-op in eval mode).
    """
    import torch

    from mixnas.models import init_tf_weights, make_block, make_classifier, make_head, make_stem

    module: torch.nn.Module
    if isinstance(part, StemPart):
        module = make_stem(arch)
    elif isinstance(part, BlockPart):
        module = make_block(arch, part.layer)
    elif isinstance(part, HeadPart):
        module = torch.nn.Sequential(make_head(arch), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(1))
    else:
        module = make_classifier(arch, part.num_classes)
    init_tf_weights(module)
    return module.eval()

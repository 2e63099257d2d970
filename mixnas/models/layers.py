"""The building blocks of a MixNet: MixConv, grouped 1x1 convolutions, squeeze-and-excite and activations.

They follow the official TF MixNet layers (``tensorflow/tpu`` ``custom_layers.py`` / ``mixnet_model.py``):

* :class:`MixConv` (Tan & Le, "MixConv: Mixed Depthwise Convolutional Kernels", BMVC 2019, arXiv 1907.09595)
  splits the channels into groups, runs one depthwise convolution per group with its own kernel (and dilation)
  and concatenates the results. There is no channel shuffle.
* :class:`GroupedConv1x1` is TF's ``GroupedConv2D`` restricted to 1x1 kernels: input and output channels are split
  into the same number of groups, each group has its own dense 1x1 convolution, and the outputs are concatenated.
* :class:`SqueezeExcite` (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018) with the MnasNet / MixNet
  conventions: biases on both 1x1 convolutions, the block's own activation after the reduction, a sigmoid gate.

Padding is symmetric, ``(k - 1) // 2 * dilation`` on every side, so a stride-1 layer keeps the spatial size and a
stride-2 layer gives ``ceil(size / 2)`` like TF's ``'same'`` (TF puts the odd pixel of a stride-2 'same' padding
at the bottom / right instead; the shapes, parameters and multiply-adds are identical).

Speed on CPU: the per-group convolutions run on :func:`torch.split` views and the results are joined with one
:func:`torch.cat`; in ``channels_last`` this is about twice as fast as in the default layout (see
``benchmarks/mixconv.py`` and ``docs/models.md``). ``torch.split`` is used rather than slicing because its
backward is a single concatenation, whereas each slice's backward materialises a full-size zero tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mixnas.errors import ArchitectureError


def make_activation(swish: bool) -> nn.Module:
    """The block activation: SiLU (swish) when ``swish`` is set, otherwise ReLU (both in place)."""
    return nn.SiLU(inplace=True) if swish else nn.ReLU(inplace=True)


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Symmetric padding that keeps ``ceil(size / stride)`` outputs for an odd (dilated) kernel."""
    return (kernel_size - 1) // 2 * dilation


def _positive_ints(values: Sequence[int], what: str) -> tuple[int, ...]:
    items = tuple(values)
    if not items or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in items):
        raise ArchitectureError(f"{what}: expected a non-empty list of positive integers, got {list(items)}")
    return items


class MixConv(nn.Module):
    """Mixed depthwise convolution: one depthwise convolution per channel group, each with its own kernel.

    Args:
        splits: channels of each group; their sum is the layer's input and output width. The split rule (equal
            with the remainder on the first group, or exponential) is decided by the architecture record
            (:attr:`mixnas.search_space.arch.LayerSpec.dw_splits`), not here.
        kernel_sizes: odd kernel size of each group (same length as ``splits``).
        stride: stride of every group (1 or 2).
        dilations: dilation of each group (default all 1); TF's ``dilated`` flag is already resolved into
            ``kernel_sizes`` / ``dilations`` by :meth:`~mixnas.search_space.arch.Architecture.layers`.

    With a single group the layer is one plain depthwise convolution (no split, no concatenation). The convolutions
    have no bias (a batch norm follows in every MixNet block). ``self.convs[i]`` is group ``i``'s ``nn.Conv2d``.
    """

    def __init__(
        self,
        splits: Sequence[int],
        kernel_sizes: Sequence[int],
        *,
        stride: int = 1,
        dilations: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        splits = _positive_ints(splits, "MixConv splits")
        kernel_sizes = _positive_ints(kernel_sizes, "MixConv kernel_sizes")
        dilations = _positive_ints(dilations if dilations is not None else [1] * len(splits), "MixConv dilations")
        if not len(splits) == len(kernel_sizes) == len(dilations):
            raise ArchitectureError(
                f"MixConv: got {len(splits)} channel splits, {len(kernel_sizes)} kernels and {len(dilations)} "
                "dilations; expected one of each per group"
            )
        if any(k % 2 == 0 for k in kernel_sizes):
            raise ArchitectureError(f"MixConv kernel_sizes: expected odd kernels, got {list(kernel_sizes)}")
        if stride not in (1, 2):
            raise ArchitectureError(f"MixConv stride: expected 1 or 2, got {stride!r}")
        self.splits = splits
        self.kernel_sizes = kernel_sizes
        self.dilations = dilations
        self.stride = stride
        self.convs = nn.ModuleList(
            nn.Conv2d(
                c,
                c,
                k,
                stride=stride,
                padding=same_padding(k, d),
                dilation=d,
                groups=c,
                bias=False,
            )
            for c, k, d in zip(splits, kernel_sizes, dilations)
        )

    @property
    def channels(self) -> int:
        return sum(self.splits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.convs) == 1:
            return self.convs[0](x)
        chunks = torch.split(x, self.splits, dim=1)
        return torch.cat([conv(chunk) for conv, chunk in zip(self.convs, chunks)], dim=1)

    def extra_repr(self) -> str:
        return (
            f"splits={list(self.splits)}, kernels={list(self.kernel_sizes)}, "
            f"dilations={list(self.dilations)}, stride={self.stride}"
        )


class GroupedConv1x1(nn.Module):
    """Grouped 1x1 convolution as TF's ``GroupedConv2D``: split, one dense 1x1 conv per group, concatenate.

    Args:
        in_splits: input channels of each group.
        out_splits: output channels of each group (same number of groups).

    Unlike ``nn.Conv2d(groups=G)`` the groups may have different widths (TF puts the remainder of an uneven
    split on the first group). There is no channel shuffle. With one group it is a plain 1x1 convolution. No bias.
    """

    def __init__(self, in_splits: Sequence[int], out_splits: Sequence[int]) -> None:
        super().__init__()
        in_splits = _positive_ints(in_splits, "GroupedConv1x1 in_splits")
        out_splits = _positive_ints(out_splits, "GroupedConv1x1 out_splits")
        if len(in_splits) != len(out_splits):
            raise ArchitectureError(
                f"GroupedConv1x1: {len(in_splits)} input groups {list(in_splits)} but {len(out_splits)} output "
                f"groups {list(out_splits)}; expected the same number"
            )
        self.in_splits = in_splits
        self.out_splits = out_splits
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 1, bias=False) for i, o in zip(in_splits, out_splits))

    @property
    def in_channels(self) -> int:
        return sum(self.in_splits)

    @property
    def out_channels(self) -> int:
        return sum(self.out_splits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.convs) == 1:
            return self.convs[0](x)
        chunks = torch.split(x, self.in_splits, dim=1)
        return torch.cat([conv(chunk) for conv, chunk in zip(self.convs, chunks)], dim=1)

    def extra_repr(self) -> str:
        return f"in_splits={list(self.in_splits)}, out_splits={list(self.out_splits)}"


class SqueezeExcite(nn.Module):
    """Squeeze-and-excite gate of a MixNet / MnasNet block.

    Global mean over the spatial dimensions -> 1x1 conv (with bias) to ``se_channels`` -> the block activation ->
    1x1 conv (with bias) back to ``channels`` -> sigmoid, which multiplies the input. In MixNet the reduced width
    comes from the block *input*: ``max(1, int(in_channels * se_ratio))`` (already in ``LayerSpec.se_channels``).

    Args:
        channels: width of the tensor being gated (the block's expanded width).
        se_channels: reduced width.
        swish: use SiLU instead of ReLU after the reduction (the block's activation).
    """

    def __init__(self, channels: int, se_channels: int, *, swish: bool = False) -> None:
        super().__init__()
        _positive_ints((channels, se_channels), "SqueezeExcite channels / se_channels")
        self.reduce = nn.Conv2d(channels, se_channels, 1, bias=True)
        self.act = make_activation(swish)
        self.expand = nn.Conv2d(se_channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = self.expand(self.act(self.reduce(scale)))
        return x * torch.sigmoid(scale)


__all__ = ["GroupedConv1x1", "MixConv", "SqueezeExcite", "make_activation", "same_padding"]

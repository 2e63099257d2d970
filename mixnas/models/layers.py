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
backward is a single concatenation, whereas each slice's backward materialises a full-size zero tensor. Under
``torch.export`` (the graph ExecuTorch lowers) the groups are ``narrow`` slices instead (:func:`channel_groups`):
XNNPACK takes slices into its delegate but leaves ``split_with_sizes`` to the portable CPU kernels, which cut a
``mixnet_tiny`` into 12 delegated subgraphs with 55 nodes between them (grouped 1x1 convolutions keep their split:
see :class:`GroupedConv1x1`). In CPU
training, the weight gradient of a stride-1 kernel larger than 3x3 is computed as 3x3 tiles, which oneDNN does
much faster (1.2-1.6x per layer at 28-56 px for 5x5-9x9 kernels).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mixnas.errors import ArchitectureError

_TILE = 3


def _depthwise_weight_grad_tiled(grad_out: torch.Tensor, x: torch.Tensor, kernel: int) -> torch.Tensor:
    """Weight gradient of a stride-1 depthwise ``kernel`` x ``kernel`` convolution, computed as 3x3 tiles.

    On CPU, oneDNN computes a 3x3 depthwise weight gradient about 10x faster per kernel tap than a 5x5 or larger
    one. The gradient of tap (i, j) is the correlation of ``grad_out`` with the padded input shifted by (i, j), so
    the k x k gradient is the set of 3x3 gradients of the input cropped at offsets (0, 3, 6, ...); the tiles that
    overhang the kernel are computed on extra zero padding and dropped.
    """
    channels = x.shape[1]
    pad = kernel // 2
    tiles = -(-kernel // _TILE)
    overhang = tiles * _TILE - kernel
    height, width = grad_out.shape[2], grad_out.shape[3]
    # Both operands dense in channels_last once, not once per tile (split views of NHWC tensors are strided, and
    # the 3x3 fast path is a channels_last one).
    grad_out = grad_out.contiguous(memory_format=torch.channels_last)
    padded = F.pad(x, (pad, pad + overhang, pad, pad + overhang)).contiguous(memory_format=torch.channels_last)
    grad = x.new_empty(channels, 1, tiles * _TILE, tiles * _TILE)
    tile_weight = x.new_empty(channels, 1, _TILE, _TILE)
    for row in range(0, tiles * _TILE, _TILE):
        for col in range(0, tiles * _TILE, _TILE):
            crop = padded[:, :, row : row + height + _TILE - 1, col : col + width + _TILE - 1]
            grad[:, :, row : row + _TILE, col : col + _TILE] = torch.ops.aten.convolution_backward(
                grad_out, crop, tile_weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], channels,
                [False, True, False],
            )[1]
    return grad[:, :, :kernel, :kernel]


class _DepthwiseConv(torch.autograd.Function):
    """A depthwise convolution for CPU training with a faster backward than ``nn.Conv2d``'s.

    It is used only for ``channels_last`` inputs (see :meth:`MixConv._fast_backward`).

    * The input is made dense in ``channels_last`` once and saved for backward (a MixConv group's input is a strided
      channel slice, which the built-in convolution would copy in forward and again in backward); so is the
      incoming gradient.
    * The weight gradient of a stride-1, undilated kernel larger than 3x3 is computed in 3x3 tiles
      (:func:`_depthwise_weight_grad_tiled`).

    The results equal the built-in ones up to float summation order (``tests/test_models.py``).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: int, dilation: int) -> torch.Tensor:  # type: ignore[override]
        x = x.contiguous(memory_format=torch.channels_last)
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.dilation = stride, dilation
        padding = same_padding(weight.shape[-1], dilation)
        return F.conv2d(x, weight, stride=stride, padding=padding, dilation=dilation, groups=weight.shape[0])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        kernel, channels = weight.shape[-1], weight.shape[0]
        stride, dilation = ctx.stride, ctx.dilation
        grad_out = grad_out.contiguous(memory_format=torch.channels_last)
        tiled = kernel > _TILE and stride == 1 and dilation == 1
        want_x, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
            grad_out, x, weight, None, [stride] * 2, [same_padding(kernel, dilation)] * 2, [dilation] * 2, False,
            [0, 0], channels, [want_x, want_w and not tiled, False],
        )
        if want_w and tiled:
            grad_w = _depthwise_weight_grad_tiled(grad_out, x, kernel)
        return grad_x, grad_w, None, None


def channel_groups(x: torch.Tensor, sizes: Sequence[int]) -> list[torch.Tensor]:
    """``x`` split along channels into groups of ``sizes``: :func:`torch.split` views, or ``narrow`` slices while
    ``torch.export`` traces (see the module docstring; same values either way)."""
    if torch.compiler.is_exporting():
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        return [x.narrow(1, start, n) for start, n in zip(starts, sizes)]
    return list(torch.split(x, list(sizes), dim=1))


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

    @torch.jit.unused
    def _fast_backward(self, x: torch.Tensor) -> bool:
        # CPU training of a channels_last model only: the layout is the caller's choice (this never converts), and
        # the 3x3 fast path is a channels_last one. CUDA has its own kernels; never while tracing or exporting.
        return (
            self.training
            and x.device.type == "cpu"
            and x.is_contiguous(memory_format=torch.channels_last)
            and torch.is_grad_enabled()
            and not torch.jit.is_tracing()
            and not torch.onnx.is_in_onnx_export()
        )

    @torch.jit.unused
    def _conv(self, conv: nn.Conv2d, x: torch.Tensor, fast: bool) -> torch.Tensor:
        if fast:
            return _DepthwiseConv.apply(x, conv.weight, conv.stride[0], conv.dilation[0])
        return conv(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            # TorchScript cannot compile the eager fast path (an autograd.Function, and torch.onnx's flag check
            # imports at call time), so a scripted model runs the plain convolutions: the same outputs.
            return self._scripted_forward(x)
        fast = self._fast_backward(x)
        if len(self.convs) == 1:
            return self._conv(self.convs[0], x, fast)
        chunks = channel_groups(x, self.splits)
        return torch.cat([self._conv(conv, chunk, fast) for conv, chunk in zip(self.convs, chunks)], dim=1)

    def _scripted_forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.convs) == 1:
            return self.convs[0](x)
        chunks = torch.split(x, list(self.splits), dim=1)
        return torch.cat([conv(chunks[i]) for i, conv in enumerate(self.convs)], dim=1)

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
        # torch.split also under torch.export: XNNPACK's int8 failed at run time on slices feeding grouped 1x1
        # convolutions (executorch 1.5.1, "Attempted to resize a static tensor"), so these stay undelegated. The
        # same failure on MixConv's groups came from slices quantised unlike their input (fixed in
        # backends._xnnpack_quantizer, which covers these slices too); slicing here was not tried again since
        chunks = torch.split(x, list(self.in_splits), dim=1)
        # enumerate, not zip: TorchScript can iterate a ModuleList only alongside an index
        return torch.cat([conv(chunks[i]) for i, conv in enumerate(self.convs)], dim=1)

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

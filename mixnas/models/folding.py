"""The network as it is deployed: every batch norm folded into the convolution(s) before it.

In eval mode a batch norm is a per-channel affine map, so it can be folded into the weights and bias of the
convolution that feeds it. Converters do this only where a ``Conv`` feeds a ``BatchNormalization`` directly. In a
MixNet block the batch norm after a MixConv with several kernel groups, or after a grouped 1x1 convolution, follows
a concatenation of several convolutions. ONNX Runtime's pre-processing leaves such a batch norm in place, and its
static quantisation then runs it in float32 between a dequantise and a quantise. Measured on 30 `tiny` networks
at 32 px with one thread (``benchmarks/batch_norm_folding.py``), folding it first made the int8 networks 25%
faster (median; 13-33%) and the float32 ones 5% faster (2-9%), with outputs equal to 1e-6 (``docs/latency.md``,
"Batch norms folded").

Each output channel of such a concatenation comes from exactly one group's convolution, so group ``i`` takes the
slice of the batch norm's scale and shift that covers its output channels. :func:`fold_batch_norms` does this for
every ``nn.Sequential`` in which a :class:`~mixnas.models.layers.MixConv`,
:class:`~mixnas.models.layers.GroupedConv1x1` or ``nn.Conv2d`` is directly followed by an ``nn.BatchNorm2d`` (the
stem, every block's expansion, depthwise and projection, the head), on a copy: the trained model is untouched.
Every latency backend that converts a network (ONNX Runtime, ExecuTorch, LiteRT) and every deployed export
converts the folded copy, so the latency tables time what ``mixnas export`` ships.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from mixnas.models.layers import GroupedConv1x1, MixConv


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """A copy of ``module`` in eval mode with each batch norm that directly follows a convolution in an
    ``nn.Sequential`` folded into that convolution (its place taken by ``nn.Identity``).

    The copy computes the same function as ``module`` in eval mode (to float rounding); its parameters are new
    tensors, so training or exporting it leaves ``module`` as it was.
    """
    folded = copy.deepcopy(module).eval()
    for sequence in list(folded.modules()):
        if not isinstance(sequence, nn.Sequential):
            continue
        for i in range(len(sequence) - 1):
            conv, norm = sequence[i], sequence[i + 1]
            if isinstance(norm, nn.BatchNorm2d) and _foldable(conv, norm):
                _fold_into(conv, norm, sequence, i)
                sequence[i + 1] = nn.Identity()
    return folded


def _foldable(conv: nn.Module, norm: nn.BatchNorm2d) -> bool:
    """A plain convolution, or a MixConv / grouped 1x1 whose groups are plain convolutions, with as many output
    channels as the batch norm has, which keeps running statistics. (A subclass of ``nn.Conv2d`` may compute
    something else, e.g. its own padding, so it is left alone.)"""
    groups = conv.convs if isinstance(conv, (MixConv, GroupedConv1x1)) else [conv]
    return (norm.running_mean is not None and norm.running_var is not None  # else eval mode uses batch statistics
            and all(type(group) is nn.Conv2d for group in groups)
            and sum(group.out_channels for group in groups) == norm.num_features)


def _fold_into(conv: nn.Module, norm: nn.BatchNorm2d, sequence: nn.Sequential, index: int) -> None:
    """Fold ``norm`` into ``conv`` (``sequence[index]``): each convolution of its groups takes its channels' slice."""
    with torch.no_grad():
        mean, var = norm.running_mean, norm.running_var
        weight = norm.weight if norm.weight is not None else torch.ones(norm.num_features)
        bias = norm.bias if norm.bias is not None else torch.zeros(norm.num_features)
        scale = weight / torch.sqrt(var + norm.eps)
        shift = bias - mean * scale
    if isinstance(conv, nn.Conv2d):
        sequence[index] = _folded_conv(conv, scale, shift)
        return
    start = 0
    for g, group in enumerate(conv.convs):
        end = start + group.out_channels
        conv.convs[g] = _folded_conv(group, scale[start:end], shift[start:end])
        start = end


def _folded_conv(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor) -> nn.Conv2d:
    """``conv`` followed by the per-channel ``x * scale + shift``, as one convolution with a bias."""
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                       padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
                       padding_mode=conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        folded.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        old_bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
        folded.bias.copy_(old_bias * scale + shift)
    return folded

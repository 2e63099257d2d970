"""Build a PyTorch MixNet / MnasNet from an architecture record.

:func:`build` turns an :class:`~mixnas.search_space.arch.Architecture` into a :class:`MixNet` with exactly the
parameters and multiply-adds of the official TF builders (``tensorflow/tpu`` ``mixnet_model.py`` /
``mnasnet_model.py``) and of :mod:`mixnas.search_space.counting`. Every width, stride, kernel, channel split and
SE width comes from :meth:`Architecture.layers`, so the builder, the counter and the latency table cannot disagree.

The network is stem (3x3 stride-2 conv, BN, ReLU) -> one :class:`MBConvBlock` per block repeat -> head (1x1 conv,
BN, ReLU) -> global average pool -> dropout -> linear classifier. The pieces can also be built one at a time
(:func:`make_stem`, :func:`make_block`, :func:`make_head`, :func:`make_classifier`), which is what a per-layer
latency lookup table needs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mixnas.errors import ArchitectureError
from mixnas.models.layers import GroupedConv1x1, MixConv, SqueezeExcite, make_activation
from mixnas.search_space.arch import Architecture, LayerSpec

STEM_KERNEL = 3
IMAGE_CHANNELS = 3
TF_BN_MOMENTUM = 0.99
TF_BN_EPSILON = 1e-3


def drop_connect(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth (Huang et al., ECCV 2016) as EfficientNet's ``drop_connect``.

    In training, each sample's residual branch is zeroed with probability ``rate`` and the kept ones are scaled by
    ``1 / (1 - rate)``; in evaluation (or with rate 0) ``x`` is returned unchanged. Uses torch's global RNG, like
    ``nn.Dropout``.
    """
    if not training or rate == 0.0:
        return x
    keep = 1.0 - rate
    mask = torch.empty((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * mask / keep


def _bn(channels: int, momentum: float, eps: float) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=momentum, eps=eps)


def _check_rate(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ArchitectureError(f"{what}: expected a number in [0, 1), got {value!r}")
    return float(value)


class MBConvBlock(nn.Module):
    """One MixNet block repeat: inverted bottleneck with MixConv (MnasNet / MixNet ``MixnetBlock``).

    expand (grouped 1x1, only when ``has_expand``) -> BN -> act; MixConv -> BN -> act; squeeze-and-excite (when
    ``se_channels``); project (grouped 1x1) -> BN, no activation; identity shortcut when ``has_skip`` (stride 1,
    in == out and the ``noskip`` flag absent), with optional drop-connect on the residual branch in training.

    Args:
        layer: the resolved block repeat (:meth:`Architecture.layers`).
        bn_momentum: batch-norm momentum in PyTorch's convention (TF's 0.99 is 0.01 here).
        bn_eps: batch-norm epsilon.
        drop_connect_rate: stochastic-depth rate of this block; used only when it has a skip and in training.

    Submodules: ``expand`` (``nn.Identity`` without expansion), ``depthwise``, ``se`` (``nn.Identity`` without
    SE) and ``project``; ``depthwise[0]`` is the :class:`~mixnas.models.layers.MixConv`.
    """

    def __init__(
        self,
        layer: LayerSpec,
        *,
        bn_momentum: float = 1.0 - TF_BN_MOMENTUM,
        bn_eps: float = TF_BN_EPSILON,
        drop_connect_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.layer = layer
        self.has_skip = layer.has_skip
        self.drop_connect_rate = _check_rate(drop_connect_rate, "drop_connect_rate")
        mid = layer.mid_channels
        if layer.has_expand:
            self.expand: nn.Module = nn.Sequential(
                GroupedConv1x1(*layer.expand_splits), _bn(mid, bn_momentum, bn_eps), make_activation(layer.swish)
            )
        else:
            self.expand = nn.Identity()
        self.depthwise = nn.Sequential(
            MixConv(layer.dw_splits, layer.kernel_sizes, stride=layer.stride, dilations=layer.dilations),
            _bn(mid, bn_momentum, bn_eps),
            make_activation(layer.swish),
        )
        if layer.se_channels:
            self.se: nn.Module = SqueezeExcite(mid, layer.se_channels, swish=layer.swish)
        else:
            self.se = nn.Identity()
        self.project = nn.Sequential(
            GroupedConv1x1(*layer.project_splits), _bn(layer.out_channels, bn_momentum, bn_eps)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        if self.has_skip:
            out = drop_connect(out, self.drop_connect_rate, self.training) + x
        return out


def bn_settings(arch: Architecture) -> dict[str, float]:
    """``momentum`` (PyTorch convention, ``1 - TF momentum``) and ``eps`` of every batch norm of ``arch``."""
    g = arch.global_params
    return {"bn_momentum": 1.0 - g.bn_momentum, "bn_eps": g.bn_epsilon}


def make_stem(arch: Architecture) -> nn.Sequential:
    """3x3 stride-2 convolution (no bias) from RGB to ``arch.stem_channels``, BN, ReLU."""
    bn = bn_settings(arch)
    channels = arch.stem_channels
    return nn.Sequential(
        nn.Conv2d(IMAGE_CHANNELS, channels, STEM_KERNEL, stride=2, padding=STEM_KERNEL // 2, bias=False),
        _bn(channels, bn["bn_momentum"], bn["bn_eps"]),
        nn.ReLU(inplace=True),
    )


def make_block(arch: Architecture, layer: LayerSpec, *, drop_connect_rate: float = 0.0) -> MBConvBlock:
    """The :class:`MBConvBlock` of one of ``arch.layers()``, with ``arch``'s batch-norm settings."""
    return MBConvBlock(layer, drop_connect_rate=drop_connect_rate, **bn_settings(arch))


def make_head(arch: Architecture) -> nn.Sequential:
    """1x1 convolution (no bias) from the last block to ``arch.head_channels``, BN, ReLU."""
    bn = bn_settings(arch)
    return nn.Sequential(
        nn.Conv2d(arch.final_channels, arch.head_channels, 1, bias=False),
        _bn(arch.head_channels, bn["bn_momentum"], bn["bn_eps"]),
        nn.ReLU(inplace=True),
    )


def make_classifier(arch: Architecture, num_classes: int | None = None) -> nn.Linear:
    """The dense classifier on the pooled head features (``num_classes`` overrides the record's)."""
    return nn.Linear(arch.head_channels, _num_classes(arch, num_classes))


def _num_classes(arch: Architecture, num_classes: int | None) -> int:
    if num_classes is None:
        return arch.num_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ArchitectureError(f"num_classes: expected a positive integer, got {num_classes!r}")
    return num_classes


def init_tf_weights(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """Initialise ``module`` in place like the TF MixNet / EfficientNet code.

    * convolutions: normal with std ``sqrt(2 / fan_out)``, ``fan_out = kh * kw * out_channels / groups``; this is
      TF's ``conv_kernel_initializer`` applied to the kernel each TF layer owns: a depthwise kernel has shape
      ``(kh, kw, in, depth_multiplier=1)`` so its fan-out is ``kh * kw``, and each group of a grouped 1x1 conv is
      its own TF ``Conv2D`` whose fan-out is that group's output width. Biases (SE convs) are zero.
    * dense layers: uniform in ``±1 / sqrt(out_features)`` (TF ``dense_kernel_initializer``), bias zero.
    * batch norm: gamma 1, beta 0, fresh running statistics.

    Args:
        module: any module built from these layers (a whole :class:`MixNet` or one piece).
        generator: random source; ``None`` uses torch's global RNG.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out), generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.out_features)
            nn.init.uniform_(m.weight, -bound, bound, generator=generator)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()


class MixNet(nn.Module):
    """A MixNet / MnasNet classifier built from an :class:`Architecture` (use :func:`build`).

    Attributes:
        arch: the record it was built from, unchanged (its ``num_classes`` / ``dropout_rate`` may differ from
            the overrides given to :func:`build`; see :attr:`num_classes`).
        num_classes: classifier outputs.
        stem, blocks, head: ``nn.Sequential`` pieces; ``blocks[i]`` is the :class:`MBConvBlock` of
            ``arch.layers()[i]``.
        pool: global average pool; ``dropout``: dropout before the classifier; ``classifier``: ``nn.Linear``.
    """

    def __init__(
        self,
        arch: Architecture,
        *,
        num_classes: int | None = None,
        dropout_rate: float | None = None,
        drop_connect_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(arch, Architecture):
            raise ArchitectureError(f"build: expected an Architecture, got {type(arch).__name__}")
        self.arch = arch
        self.num_classes = _num_classes(arch, num_classes)
        dropout = _check_rate(arch.global_params.dropout_rate if dropout_rate is None else dropout_rate, "dropout_rate")
        self.drop_connect_rate = _check_rate(drop_connect_rate, "drop_connect_rate")
        layers = arch.layers()
        self.stem = make_stem(arch)
        # EfficientNet's schedule: block i of n drops its residual branch with rate * i / n (the first never).
        self.blocks = nn.Sequential(
            *(
                make_block(arch, layer, drop_connect_rate=self.drop_connect_rate * layer.index / len(layers))
                for layer in layers
            )
        )
        self.head = make_head(arch)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = make_classifier(arch, self.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, blocks and head: the feature map before pooling."""
        return self.head(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(self.forward_features(x)), 1)
        return self.classifier(self.dropout(x))


def build(
    arch: Architecture,
    num_classes: int | None = None,
    *,
    dropout_rate: float | None = None,
    drop_connect_rate: float = 0.0,
    generator: torch.Generator | None = None,
) -> MixNet:
    """Build the PyTorch network of ``arch`` with TF initialisation.

    Args:
        arch: the architecture; never modified (records are frozen) and kept as ``model.arch``.
        num_classes: classifier outputs; default ``arch.num_classes``.
        dropout_rate: dropout before the classifier; default ``arch.global_params.dropout_rate``.
        drop_connect_rate: stochastic-depth rate of the last block, scaled linearly from 0 at the first block
            (``rate * index / number_of_blocks``, as EfficientNet); 0 (the MixNet paper's setting) disables it.
        generator: random source of the initial weights; ``None`` uses torch's global RNG.

    Returns:
        A :class:`MixNet` in training mode, default memory format (``model.to(memory_format=torch.channels_last)``
        is the fast layout on CPU).

    Raises:
        ArchitectureError: a bad ``num_classes``, ``dropout_rate`` or ``drop_connect_rate``.
    """
    model = MixNet(arch, num_classes=num_classes, dropout_rate=dropout_rate, drop_connect_rate=drop_connect_rate)
    init_tf_weights(model, generator)
    return model


__all__ = [
    "MBConvBlock",
    "MixNet",
    "bn_settings",
    "build",
    "drop_connect",
    "init_tf_weights",
    "make_block",
    "make_classifier",
    "make_head",
    "make_stem",
]

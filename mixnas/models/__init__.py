"""PyTorch models: what an architecture record *becomes* (MixConv layers and the MixNet builder)."""

from __future__ import annotations

from mixnas.models.layers import GroupedConv1x1, MixConv, SqueezeExcite, make_activation
from mixnas.models.mixnet import (
    MBConvBlock,
    MixNet,
    build,
    init_tf_weights,
    make_block,
    make_classifier,
    make_head,
    make_stem,
)

__all__ = [
    "GroupedConv1x1",
    "MBConvBlock",
    "MixConv",
    "MixNet",
    "SqueezeExcite",
    "build",
    "init_tf_weights",
    "make_activation",
    "make_block",
    "make_classifier",
    "make_head",
    "make_stem",
]

"""What loading gives: :class:`ImageSet` (one subset's uint8 images and labels), :class:`LabelledImages` and
:class:`ProxyData` (a training and a held-out split as tensors, with normalisation)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mixnas.data.spec import DataSpec


# ----------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ImageSet:
    """Images of one subset, before the split.

    Attributes:
        images: uint8 array (N, H, W, C), C = 1 or 3.
        labels: int64 array (N,), 0 .. len(class_names) - 1.
        class_names: names of the subset's classes, in label order.
        decoded: image files decoded to make this set (0 for a cache hit or an array format).
        cache_file: the on-disk cache file used or written, if any.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    decoded: int = 0
    cache_file: str | None = None


def normalizer(mean: Sequence[float], std: Sequence[float],
               device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of shape (1, 3, 1, 1) such that ``x_uint8 * scale + shift`` is the normalised input."""
    mean_t = torch.tensor(tuple(mean), dtype=torch.float32)
    std_t = torch.tensor(tuple(std), dtype=torch.float32)
    return (1.0 / (255.0 * std_t)).view(1, 3, 1, 1).to(device), (-mean_t / std_t).view(1, 3, 1, 1).to(device)


@dataclass(frozen=True, eq=False)
class LabelledImages:
    """A training split of uint8 NHWC images with its labels, class names, per-channel ``mean`` / ``std`` and the
    spec it was loaded from: what the proxy task (here) and the full-training data (``mixnas/training/data.py``)
    share; each adds the split it evaluates on."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    class_names: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    spec: DataSpec

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def resolution(self) -> int:
        return int(self.train_images.shape[1])

    def normalizer(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) of shape (1, 3, 1, 1) such that ``x_uint8 * scale + shift`` is the normalised input."""
        return normalizer(self.mean, self.std, device)


@dataclass(frozen=True, eq=False)
class ProxyData(LabelledImages):
    """A proxy task: uint8 NHWC tensors of a training and a held-out split, plus normalisation.

    ``in_memory`` is False when the images exceed :func:`memory_budget`: the tensors are then read-only views of a
    memory-mapped file in the cache folder, paged in by the OS, and the trainer moves each batch to its device.

    ``mean`` / ``std`` are per channel in [0, 1] units; a batch is normalised as ``(x / 255 - mean) / std``
    (see :meth:`normalizer`).
    """

    val_images: torch.Tensor
    val_labels: torch.Tensor
    decoded: int = 0
    in_memory: bool = True


    def summary(self) -> dict[str, Any]:
        return {
            "source": self.spec.source,
            "classes": self.num_classes,
            "resolution": self.resolution,
            "train_images": int(self.train_labels.numel()),
            "val_images": int(self.val_labels.numel()),
        }

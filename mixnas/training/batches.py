"""Training batches: augmentation of uint8 NHWC batches (padded random crop, horizontal flip) and the fused
conversion to normalised float inputs."""

from __future__ import annotations

import torch
from torch import nn

from mixnas.data.spec import DataSpec


def augment_batch(batch: torch.Tensor, spec: DataSpec, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and padded random crop of a uint8 NHWC batch (one draw per image)."""
    n, h, w, _ = batch.shape
    if spec.crop_padding:
        pad = spec.crop_padding
        padded = nn.functional.pad(batch, (0, 0, pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator).to(batch.device)
        dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator).to(batch.device)
        rows = (dy + torch.arange(h, device=batch.device))[:, :, None]
        cols = (dx + torch.arange(w, device=batch.device))[:, None, :]
        batch = padded[torch.arange(n, device=batch.device)[:, None, None], rows, cols]
    if spec.flip:
        flip = (torch.rand(n, generator=generator) < 0.5).to(batch.device).view(n, 1, 1, 1)
        batch = torch.where(flip, batch.flip(2), batch)
    return batch


def to_input(batch: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """uint8 NHWC -> normalised float NCHW; the permuted view already has channels_last strides."""
    x = torch.addcmul(shift, batch.permute(0, 3, 1, 2).float(), scale)
    return x if channels_last else x.contiguous()

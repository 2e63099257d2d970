"""Where training runs: ``auto`` (CUDA when torch sees a device), ``cpu`` or ``cuda``. torch is imported only
when a device is checked or picked, so the command line reads :data:`DEVICES` without it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mixnas.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEVICES = ("auto", "cpu", "cuda")


def check_device(name: str, where: str = "proxy: device") -> None:
    """Refuse ``cuda`` on a machine where torch sees no CUDA device (before training, not inside every trial);
    the error begins with ``where`` (the option as the user wrote it)."""
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{where}: 'cuda' was asked for but torch sees no CUDA device on this machine; "
                          "use 'auto' (CUDA when available) or 'cpu'")


def pick_device(name: str) -> torch.device:
    """The torch device ``name`` (one of :data:`DEVICES`) stands for on this machine."""
    import torch

    check_device(name)
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")

"""Tensor files and the checkpoint protocol shared by ``mixnas train`` and ``mixnas supernet train``.

A checkpoint folder holds ``checkpoint-N.pt`` (tensors and numbers only, so it loads with
``torch.load(weights_only=True)``: nothing is unpickled) and ``state.json`` naming the current one. The checkpoint
file is complete before ``state.json`` names it (a temporary file, then ``os.replace``), and older checkpoint files
go only after that, so a SIGKILL at any moment leaves the previous epoch's checkpoint in force.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mixnas.errors import RunError
from mixnas.textio import atomic_file, read_json, write_json_atomic

STATE_FILE = "state.json"


def save_tensors(path: Path, data: dict[str, Any]) -> None:
    """``torch.save`` through :func:`mixnas.textio.atomic_file` (the old file or the new, never a torn one)."""
    with atomic_file(path, "wb") as fh:
        torch.save(data, fh)


def load_tensors(path: Path, what: str = "mixnas weights file") -> dict[str, Any]:
    """A file written by :func:`save_tensors`, read without unpickling objects (``weights_only=True``)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise RunError(f"{path}: not a readable {what} ({type(exc).__name__}: {str(exc)[:200]})") from None


def write_checkpoint(folder: Path, epoch: int, tensors: dict[str, Any], state: dict[str, Any], version: int) -> None:
    """Write ``checkpoint-{epoch}.pt``, then ``state.json`` naming it, then delete the older checkpoint files."""
    name = f"checkpoint-{epoch}.pt"
    save_tensors(folder / name, tensors)
    write_json_atomic(folder / STATE_FILE, {**state, "version": version, "epoch": epoch, "checkpoint": name}, indent=1)
    for old in folder.glob("checkpoint-*.pt"):
        if old.name != name:
            old.unlink(missing_ok=True)


def read_state(folder: Path, version: int, what: str) -> dict[str, Any] | None:
    """The folder's ``state.json`` (None when no epoch has finished there yet); ``what`` names the kind of run."""
    file = folder / STATE_FILE
    if not file.is_file():
        return None
    state = read_json(file, RunError)
    if not isinstance(state, dict) or state.get("version") != version or "checkpoint" not in state:
        raise RunError(f"{file}: not a mixnas {what} state (version {version})")
    return state


def resume_point(folder: Path, version: int, what: str, load_what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state, tensors)`` of the folder's current checkpoint, to resume a run from.

    Raises:
        RunError: no epoch has finished there, or its files are not readable.
    """
    state = read_state(folder, version, what)
    if state is None:
        raise RunError(f"{folder}: no checkpoint to resume from")
    return state, load_tensors(folder / state["checkpoint"], load_what)


def restore_rng(tensors: dict[str, Any], generator: torch.Generator, device: torch.device | None = None) -> None:
    """Put back the random states a checkpoint saved: torch's CPU state, the run's own generator, and the CUDA
    state where ``device`` is a CUDA device and the checkpoint has one."""
    torch.set_rng_state(tensors["rng"]["cpu"])
    generator.set_state(tensors["rng"]["generator"])
    if device is not None and device.type == "cuda" and "cuda" in tensors["rng"]:
        torch.cuda.set_rng_state(tensors["rng"]["cuda"], device)

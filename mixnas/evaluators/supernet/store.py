"""A supernet folder: what was trained, checkpoints every epoch with an exact resume, and a pickle-free loader.

Layout of a ``mixnas supernet train`` output folder (the checkpoint protocol of ``mixnas train``)::

    supernet.json        what was asked: the resolved search space, classes, data spec, training settings
    state.json           epoch, step, the current checkpoint file, the sampler's RNG state, per-epoch metrics
                         (written last, atomically)
    checkpoint-N.pt      after epoch N: supernet, optimizer and torch RNG states (tensors and numbers only: it
                         loads with ``torch.load(weights_only=True)``)
    weights.pt           the supernet's state dict after the last epoch

A checkpoint file is complete before ``state.json`` names it (temporary file, then ``os.replace``), so a SIGKILL at
any moment leaves the previous epoch's checkpoint in force.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mixnas import tensorfiles
from mixnas.errors import RunError
from mixnas.tensorfiles import save_tensors
from mixnas.textio import path_kind, read_json, write_json_atomic

RECORD_FILE = "supernet.json"
STATE_FILE = tensorfiles.STATE_FILE
WEIGHTS_FILE = "weights.pt"
FORMAT_VERSION = 1


def load_tensors(path: Path) -> dict[str, Any]:
    return tensorfiles.load_tensors(path, "supernet weights file")


def write_record(folder: Path, record: dict[str, Any]) -> None:
    write_json_atomic(folder / RECORD_FILE, {"format_version": FORMAT_VERSION, **record}, indent=1)


def read_record(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """``supernet.json`` of a supernet folder; one line saying why when it is not one."""
    folder = Path(folder)
    file = folder / RECORD_FILE
    if path_kind(folder) != "dir":
        raise RunError(f"{folder}: no such folder (expected a `mixnas supernet train` output folder)")
    if path_kind(file) != "file":
        raise RunError(f"{folder}: no {RECORD_FILE}: not a `mixnas supernet train` output folder")
    record = read_json(file, RunError)
    if not isinstance(record, dict) or record.get("format_version") != FORMAT_VERSION or "space" not in record:
        raise RunError(f"{file}: not a mixnas supernet record (format {FORMAT_VERSION})")
    return record


def write_checkpoint(folder: Path, epoch: int, tensors: dict[str, Any], weights: dict[str, Any],
                     state: dict[str, Any]) -> None:
    """``weights.pt``, then ``checkpoint-{epoch}.pt``, then ``state.json`` naming it; older checkpoints go."""
    save_tensors(folder / WEIGHTS_FILE, weights)
    tensorfiles.write_checkpoint(folder, epoch, tensors, state, FORMAT_VERSION)


def read_state(folder: Path) -> dict[str, Any] | None:
    """The folder's ``state.json`` (None when no epoch has finished there yet)."""
    return tensorfiles.read_state(folder, FORMAT_VERSION, "supernet training")


def resume_point(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state, tensors)`` of the folder's current checkpoint (:func:`mixnas.tensorfiles.resume_point`)."""
    return tensorfiles.resume_point(folder, FORMAT_VERSION, "supernet training", "supernet weights file")


def read_weights(folder: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    file = Path(folder) / WEIGHTS_FILE
    if path_kind(file) != "file":
        raise RunError(f"{folder}: no {WEIGHTS_FILE}: no epoch of supernet training has finished there")
    return load_tensors(file)


__all__ = ["RECORD_FILE", "STATE_FILE", "WEIGHTS_FILE", "load_tensors", "read_record", "read_state", "read_weights",
           "save_tensors", "write_checkpoint", "write_record"]

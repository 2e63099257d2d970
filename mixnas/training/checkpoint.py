"""A training run's folder: checkpoints every epoch, JSON state, the final weights, and a pickle-free loader.

Layout of a ``mixnas train`` output folder::

    arch.json            the architecture trained (num_classes and resolution set to the data's)
    run.json             what was asked: recipe, epochs, batch size, seed, data spec (a resume must match it)
    state.json           epoch, step, the current checkpoint file, per-epoch metrics (written last, atomically)
    checkpoint-N.pt      after epoch N: model, EMA, optimizer, grad scaler and RNG states (tensors and numbers
                         only: it loads with ``torch.load(weights_only=True)``)
    weights.pt           the evaluated weights (the EMA when the recipe keeps one) as a state dict
    metrics.json         per-epoch and final metrics

``run.json`` also records the input the network was trained on (``preprocessing``: resolution, per-channel mean
and std, class names), which ``mixnas export`` writes into the ONNX file's metadata. :func:`load_model` reads this
folder or an export of it (same ``arch.json`` and ``weights.pt`` names).

A checkpoint file is complete before ``state.json`` names it (temporary file, then ``os.replace``), so a SIGKILL at
any moment leaves the previous epoch's checkpoint in force.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mixnas import tensorfiles
from mixnas.errors import ArchitectureError, RunError
from mixnas.models import build as build_model
from mixnas.search_space.arch import Architecture
from mixnas.tensorfiles import load_tensors
from mixnas.textio import parse_json, path_kind, read_json, read_text, write_text_atomic

STATE_FILE = tensorfiles.STATE_FILE
RUN_FILE = "run.json"
ARCH_FILE = "arch.json"
WEIGHTS_FILE = "weights.pt"
METRICS_FILE = "metrics.json"
FORMAT_VERSION = 1


def write_checkpoint(folder: Path, epoch: int, tensors: dict[str, Any], state: dict[str, Any]) -> None:
    """Write ``checkpoint-{epoch}.pt``, then ``state.json`` naming it, then delete the older checkpoint files."""
    tensorfiles.write_checkpoint(folder, epoch, tensors, state, FORMAT_VERSION)


def read_state(folder: Path) -> dict[str, Any] | None:
    """The folder's ``state.json`` (None when no epoch has finished there yet)."""
    return tensorfiles.read_state(folder, FORMAT_VERSION, "training")


def resume_point(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state, tensors)`` of the folder's current checkpoint (:func:`mixnas.tensorfiles.resume_point`)."""
    return tensorfiles.resume_point(folder, FORMAT_VERSION, "training", "mixnas weights file")


def write_arch(folder: Path, arch: Architecture) -> None:
    write_text_atomic(folder / ARCH_FILE, arch.to_json(indent=1) + "\n")


def read_arch(folder: Path) -> Architecture:
    """The architecture in ``folder/arch.json``: an architecture record, or an export's document holding one under
    ``"architecture"``."""
    file = folder / ARCH_FILE
    if path_kind(file) != "file":
        raise RunError(f"{folder}: no {ARCH_FILE}: not a mixnas train output folder or a trained export")
    data = parse_json(read_text(file, RunError), str(file), RunError)
    if isinstance(data, dict) and "architecture" in data:
        data = data["architecture"]
    try:
        return Architecture.from_dict(data)
    except ArchitectureError as exc:
        raise RunError(f"{file}: {exc}") from None


def committed(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The weights and the metrics of the folder's last finished epoch, always of the same epoch.

    ``state.json`` is the commit point: the trainer writes the checkpoint it names first, then ``weights.pt`` and
    ``metrics.json`` from the same epoch. A run killed in between leaves those behind (or, written by a mixnas
    before that order, ``weights.pt`` ahead), so where ``state.json`` exists the weights come from the checkpoint
    it names, and the metrics from ``metrics.json`` only when it describes that epoch, else from the state's
    per-epoch history. A folder without ``state.json`` (an export, ``mixnas supernet extract``) is read as it is.
    """
    metrics = read_json(folder / METRICS_FILE, RunError) if path_kind(folder / METRICS_FILE) == "file" else None
    state = read_state(folder)
    if state is None:
        return load_tensors(folder / WEIGHTS_FILE), metrics
    tensors = load_tensors(folder / state["checkpoint"])
    weights = tensors.get("ema") or tensors["model"]
    if isinstance(metrics, dict) and metrics.get("epochs") == state["epoch"]:
        return weights, metrics
    history = list(state.get("history") or [])
    last = history[-1] if history else {}
    behind = metrics if isinstance(metrics, dict) else {}
    return weights, {**behind, "epochs": state["epoch"], "steps": state.get("step", last.get("step", 0)),
                     "top1": last.get("top1"), "top5": last.get("top5"), "loss": last.get("loss"), "history": history}


def load_model(path: str | os.PathLike[str]) -> nn.Module:
    """The trained network of a ``mixnas train`` output folder or of its export (``mixnas export TRAIN_DIR``), in
    eval mode, without unpickling anything.

    ``arch.json`` gives the architecture (built with :func:`mixnas.models.build`) and ``weights.pt`` the state
    dict (the EMA weights when the recipe keeps an average), read with ``torch.load(weights_only=True)``; in a
    train folder, the weights of its last finished epoch (:func:`committed`).

    Raises:
        RunError: the folder holds no ``arch.json`` or no ``weights.pt`` (one line saying which, and why).
    """
    folder = Path(path)
    if path_kind(folder) != "dir":
        raise RunError(f"{folder}: no such folder (load_model takes a mixnas train output folder or its export)")
    if path_kind(folder / WEIGHTS_FILE) != "file" and read_state(folder) is None:
        raise RunError(f"{folder}: no {WEIGHTS_FILE}: {_why_no_weights(folder)}")
    model = build_model(read_arch(folder))
    model.load_state_dict(committed(folder)[0])
    return model.eval()


def _why_no_weights(folder: Path) -> str:
    if path_kind(folder / RUN_FILE) == "file":
        return "no epoch of training has finished there"
    if any(path_kind(folder / name) == "file" for name in (ARCH_FILE, "model.onnx", "tf.txt", "timm.txt")):
        return ("an untrained architecture (a search run's export); train it with `mixnas train RUN_DIR:TRIAL "
                "--data DATA --output DIR`, then load DIR")
    return f"not a mixnas train output folder or a trained export (they hold {ARCH_FILE} and {WEIGHTS_FILE})"


def init_weights_file(path: str | os.PathLike[str]) -> Path:
    """The weights ``mixnas train --init`` starts from: a state-dict file, or a folder holding ``weights.pt`` (a
    train, export or ``mixnas supernet extract`` folder)."""
    p = Path(path)
    if p.is_dir():
        p = p / WEIGHTS_FILE
    if not p.is_file():
        raise RunError(f"--init {path}: no weights file there (expected a state dict .pt file or a folder with "
                       f"{WEIGHTS_FILE})")
    return p


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def init_state(model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path``, checked to fit ``model`` (every tensor, same shapes), or say what does not."""
    state = load_tensors(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RunError(f"--init {path}: not a state dict of tensors")
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or extra or wrong:
        first = (f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}" if extra else
                 f"{wrong[0]}: {tuple(state[wrong[0]].shape)} there, {tuple(own[wrong[0]].shape)} here")
        raise RunError(f"--init {path}: the weights are not of this architecture ({first}; "
                       f"{len(missing)} missing, {len(extra)} unexpected, {len(wrong)} of another shape)")
    return state

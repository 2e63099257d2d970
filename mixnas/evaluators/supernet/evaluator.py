"""Score a candidate by its slice of a trained supernet: extract, recalibrate batch norm, evaluate held-out images.

A trial costs no training: the candidate's stand-alone network is extracted from the supernet
(:meth:`~mixnas.evaluators.supernet.supernet.Supernet.extract`), its batch-norm statistics are recomputed as exact
averages over a few fixed training batches (the supernet's running statistics mix every subnet it sampled; Guo et
al., "Single Path One-Shot NAS", ECCV 2020, §3.3, and Once-for-All recalibrate the same way), and it is evaluated on
the held-out split the supernet never trained on (the proxy trainer's split of the same data spec).
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mixnas.errors import ConfigError
from mixnas.evaluators.base import TrialContext
from mixnas.evaluators.metrics import SUPERNET_METRICS
from mixnas.data.spec import DataSpec
from mixnas.data.sets import ProxyData
from mixnas.data.load import load_proxy_data
from mixnas.training.device import pick_device
from mixnas.training.batches import to_input
from mixnas.evaluators.supernet import store
from mixnas.evaluators.supernet.supernet import Supernet
from mixnas.outcome import Status, TrialOutcome
from mixnas.search_space.arch import Architecture
from mixnas.search_space.spaces import load_space
from mixnas.torch_runtime import torch_threads

logger = logging.getLogger(__name__)



@torch.inference_mode()
def recalibrate_bn(model: nn.Module, images: torch.Tensor, normalizer: tuple[torch.Tensor, torch.Tensor],
                   count_: int, batch_size: int) -> int:
    """Exact batch-norm statistics of ``model`` over ``count_`` fixed training images (no augmentation, no RNG of
    the caller's); returns how many images were used. Only the batch norms run in training mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    count_ = min(count_, int(images.shape[0]))
    if not norms or count_ == 0:
        return 0
    device = next(model.parameters()).device
    chosen = torch.randperm(int(images.shape[0]), generator=torch.Generator().manual_seed(0))[:count_]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
        m.train()
    batch = max(2, min(batch_size, count_))
    used = 0
    for lo in range(0, count_ - batch + 1, batch):
        model(to_input(images[chosen[lo : lo + batch]].to(device), *normalizer, False))
        used += batch
    model.eval()
    return used


@torch.inference_mode()
def evaluate_model(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   normalizer: tuple[torch.Tensor, torch.Tensor], batch_size: int) -> dict[str, float]:
    """top1, top5 and mean cross-entropy of ``model`` (eval mode) on uint8 NHWC ``images``."""
    device = next(model.parameters()).device
    model.eval()
    n = int(labels.numel())
    correct1 = correct5 = 0
    loss_sum = 0.0
    for lo in range(0, n, batch_size):
        logits = model(to_input(images[lo : lo + batch_size].to(device), *normalizer, False)).float()
        y = labels[lo : lo + batch_size].to(device)
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        hits = logits.topk(min(5, logits.shape[1]), dim=1).indices == y[:, None]
        correct1 += int(hits[:, 0].sum())
        correct5 += int(hits.any(dim=1).sum())
    return {"top1": correct1 / n, "top5": correct5 / n, "loss": loss_sum / n}


def load_supernet(folder: str | os.PathLike[str]) -> tuple[Supernet, dict[str, Any], dict[str, Any] | None]:
    """(the trained supernet in eval mode on the CPU, its ``supernet.json`` record, its ``state.json``)."""
    record = store.read_record(folder)
    try:
        space = load_space(record["space"])
    except ConfigError as exc:
        raise ConfigError(f"{folder}/{store.RECORD_FILE}: space: {exc}") from None
    net = Supernet(space, num_classes=int(record["num_classes"]))
    net.load_state_dict(store.read_weights(folder))
    return net.eval(), record, store.read_state(Path(folder))


def check_same_space(space: Any, supernet_space: Any, where: str) -> None:
    """The experiment's space must be the supernet's (same dimensions and choices, so encodings mean the same)."""
    ours = [d.to_dict() for d in space.dimensions]
    theirs = [d.to_dict() for d in supernet_space.dimensions]
    if ours != theirs:
        first = next((f"{a['name']} {a['choices']} vs {b['name']} {b['choices']}" for a, b in zip(ours, theirs)
                      if a != b), f"{len(ours)} vs {len(theirs)} dimensions")
        raise ConfigError(f"{where}: the search space is not the supernet's ({first}); search the space the "
                          "supernet was trained on")


class SupernetEvaluator:
    """Scores candidates of a stage space by their slice of a trained supernet (see the module docstring).

    Args:
        checkpoint: a ``mixnas supernet train`` output folder.
        space: the experiment's space (refused unless it is the supernet's); None = the supernet's.
        bn_batches: batches of training images for the batch-norm recalibration (0 = keep the supernet's).
        batch_size: images per recalibration batch.
        eval_batch_size: images per evaluation batch.
        device: ``cpu``, ``cuda`` or ``auto``.
        threads: torch CPU threads per trial (None = leave torch's setting).
    """

    def __init__(self, checkpoint: str | os.PathLike[str], *, space: Any = None, bn_batches: int = 8,
                 batch_size: int = 64, eval_batch_size: int = 500, device: str = "cpu",
                 threads: int | None = None) -> None:
        self.net, self.record, state = load_supernet(checkpoint)
        if space is not None:
            check_same_space(space, self.net.space, f"evaluator.checkpoint {os.fspath(checkpoint)}")
        self.epoch = int(state["epoch"]) if state else 0
        self.bn_batches, self.batch_size, self.eval_batch_size = bn_batches, batch_size, eval_batch_size
        self.threads = threads
        self.device = pick_device(device)
        self.net.to(self.device)
        self.data: ProxyData = load_proxy_data(DataSpec.from_dict(self.record["data"], where="supernet data"))
        self._normalizer = self.data.normalizer(self.device)

    @property
    def metrics(self) -> tuple[str, ...]:
        return SUPERNET_METRICS

    def calibrated(self, candidate: Architecture | tuple[int, ...]) -> tuple[Architecture, nn.Module, int]:
        """(the candidate's architecture at the data's classes and resolution, its extracted network with batch
        norm recalibrated on ``bn_batches`` training batches, the number of images that took)."""
        arch, _ = self.net.subnet(candidate)
        arch = arch.replace(resolution=self.data.resolution)
        model = self.net.extract(candidate).to(self.device)
        model.arch = arch
        bn_images = 0
        if self.bn_batches:
            bn_images = recalibrate_bn(model, self.data.train_images, self._normalizer,
                                       self.bn_batches * self.batch_size, self.batch_size)
        return arch, model, bn_images

    def score(self, candidate: Any, context: TrialContext) -> TrialOutcome:
        """The :class:`~mixnas.evaluators.base.Evaluator` interface: extract, recalibrate and evaluate the candidate
        (by ``context.encoding`` when it has one, else by the architecture).

        A candidate the supernet cannot hold (not a member of its space, or wider than its weights) is
        ``infeasible`` with the reason, and never retried; a non-finite held-out loss is ``diverged``. Params and
        MACs are the trial's to count (:mod:`mixnas.launch.trial`).
        """
        if not isinstance(candidate, Architecture):
            return TrialOutcome.failure(f"TypeError: the supernet needs an architecture space, got a "
                                        f"{type(candidate).__name__}", retryable=False)
        start = time.perf_counter()
        with torch_threads(self.threads):
            try:
                _, model, bn_images = self.calibrated(context.encoding or candidate)
            except ConfigError as exc:
                return TrialOutcome.failure(str(exc), status=Status.INFEASIBLE, retryable=False)
            metrics: dict[str, Any] = evaluate_model(model, self.data.val_images, self.data.val_labels,
                                                     self._normalizer, self.eval_batch_size)
        metrics.update(eval_seconds=round(time.perf_counter() - start, 4), bn_images=bn_images,
                       val_images=int(self.data.val_labels.numel()), supernet_epoch=self.epoch,
                       num_classes=self.data.num_classes, resolution=self.data.resolution)
        if not math.isfinite(metrics["loss"]):
            return TrialOutcome.failure("non-finite held-out loss", status=Status.DIVERGED, metrics=metrics)
        return TrialOutcome(Status.OK, metrics)


__all__ = ["SupernetEvaluator", "check_same_space", "evaluate_model", "load_supernet", "recalibrate_bn"]

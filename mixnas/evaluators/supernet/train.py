"""Train a supernet: uniform single-path sampling with the sandwich rule and optional in-place distillation.

Each step trains, on one batch, the largest member, the smallest member and ``random_subnets`` members sampled
uniformly from the space (single-path uniform sampling: Guo et al., "Single Path One-Shot NAS", ECCV 2020; the
sandwich rule and in-place distillation: Yu & Huang, "Universally Slimmable Networks", ICCV 2019, used by
Once-for-All and BigNAS). The largest member learns from the labels; with ``distill`` the others learn from its
(detached) soft predictions, else from the labels. Their gradients are summed into one optimizer step. The
optimizer and learning-rate schedule are the proxy trainer's (:mod:`mixnas.evaluators.proxy`).

A checkpoint after every epoch holds the supernet, the optimizer and every RNG state (the data order and
augmentation generator, torch's generator for dropout; the sampler's NumPy state goes into ``state.json``), so a
resumed run repeats the uninterrupted one (bit for bit on a CPU with the same thread count).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mixnas import tensorfiles
from mixnas.errors import RunError
from mixnas.textio import output_folder
from mixnas.data.sets import ProxyData
from mixnas.training.config import SupernetTraining
from mixnas.training.device import pick_device
from mixnas.training.optim import learning_rate, make_optimizer
from mixnas.training.batches import augment_batch, to_input
from mixnas.evaluators.supernet import store
from mixnas.evaluators.supernet.evaluator import evaluate_model, recalibrate_bn
from mixnas.evaluators.supernet.supernet import Supernet

logger = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, Any]], Any]
PROGRESS_BN_IMAGES = 512  # per-epoch check of the largest / smallest member: BN recalibration images


@dataclass
class _Run:
    net: Supernet
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    sampler: np.random.Generator
    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)


class SupernetTrainer:
    """Trains the supernet of ``space`` on the training split of ``data`` into ``output`` (:mod:`.store`).

    Args:
        space: a stage space.
        data: the proxy task; its held-out split is left for the evaluator.
        output: the supernet folder.
        training: how to train.
        on_epoch: called as ``on_epoch(epoch, metrics)`` after each epoch's checkpoint.
    """

    def __init__(self, space: Any, data: ProxyData, output: str | Path, training: SupernetTraining, *,
                 on_epoch: EpochCallback | None = None) -> None:
        self.space, self.data, self.output, self.training = space, data, Path(output), training
        self.on_epoch = on_epoch
        self.config = training.proxy_config()
        self.device = pick_device(training.device)
        self.batch_size = min(training.batch_size, int(data.train_labels.numel()))

    def record(self) -> dict[str, Any]:
        """What the folder's ``supernet.json`` holds (and a resume must match)."""
        return {"space": self.space.to_dict(), "space_name": self.space.name, "num_classes": self.data.num_classes,
                "data": self.data.spec.to_dict(), "training": self.training.to_dict(),
                "preprocessing": {"resolution": self.data.resolution, "mean": list(self.data.mean),
                                  "std": list(self.data.std), "class_names": list(self.data.class_names)}}

    def fit(self, *, resume: bool = False) -> dict[str, Any]:
        """Train (from the last checkpoint when ``resume``); the per-epoch history."""
        output_folder(self.output, RunError)
        with torch.random.fork_rng(devices=[self.device.index or 0] if self.device.type == "cuda" else []):
            torch.manual_seed(self.training.seed)
            run = self._start(resume)
            while run.epoch < self.training.epochs:
                self._epoch(run)
        return {"epochs": run.epoch, "steps": run.step, "history": run.history}

    def _start(self, resume: bool) -> _Run:
        seed = self.training.seed
        net = Supernet(self.space, num_classes=self.data.num_classes,
                       generator=torch.Generator().manual_seed(seed)).to(self.device)
        run = _Run(net=net, optimizer=make_optimizer(net, self.config, self.device),
                   generator=torch.Generator().manual_seed(seed ^ 1), sampler=np.random.default_rng(seed))
        if not resume:
            store.write_record(self.output, self.record())
            return run
        state, tensors = store.resume_point(self.output)
        net.load_state_dict(tensors["model"])
        run.optimizer.load_state_dict(tensors["optimizer"])
        tensorfiles.restore_rng(tensors, run.generator)
        run.sampler.bit_generator.state = state["sampler"]
        run.epoch, run.step, run.history = int(state["epoch"]), int(state["step"]), list(state["history"])
        return run

    def _epoch(self, run: _Run) -> None:
        start = time.perf_counter()
        losses = self._train_epoch(run)
        seconds = time.perf_counter() - start
        run.epoch += 1
        metrics: dict[str, Any] = {"epoch": run.epoch, "step": run.step, "lr": run.optimizer.param_groups[0]["lr"],
                                   "train_loss": float(np.mean(losses)) if losses else None,
                                   "train_seconds": round(seconds, 3),
                                   "images_per_second": round(len(losses) * self.batch_size / seconds, 1)}
        for name, encoding in (("largest", run.net.largest()), ("smallest", run.net.smallest())):
            metrics[f"{name}_top1"] = self.check_member(run.net, encoding)["top1"]
        run.history.append(metrics)
        self._save(run)
        if self.on_epoch is not None:
            self.on_epoch(run.epoch, dict(metrics))

    def _train_epoch(self, run: _Run) -> list[float]:
        n = int(self.data.train_labels.numel())
        steps_per_epoch = n // self.batch_size
        total = steps_per_epoch * self.training.epochs
        train_x, train_y = self.data.train_images, self.data.train_labels
        scale, shift = self.data.normalizer(self.device)
        order = torch.randperm(n, generator=run.generator)
        plans = [run.net.subnet(run.net.largest()), run.net.subnet(run.net.smallest())]
        run.net.train()
        losses = []
        for i in range(steps_per_epoch):
            for group in run.optimizer.param_groups:
                group["lr"] = learning_rate(run.step, total, steps_per_epoch, self.config)
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            batch = train_x[index]
            if self.data.spec.flip or self.data.spec.crop_padding:
                batch = augment_batch(batch, self.data.spec, run.generator)
            x = to_input(batch.to(self.device), scale, shift, True)  # channels_last: ~20% faster on a CPU
            sampled = [run.net.subnet(self.space.sample(run.sampler)) for _ in range(self.training.random_subnets)]
            losses.append(self._step(run, x, train_y[index].to(self.device), plans + sampled))
            run.step += 1
        return losses

    def _step(self, run: _Run, x: torch.Tensor, y: torch.Tensor, plans: list) -> float:
        """One sandwich step: the largest member from the labels, the others from it (or the labels)."""
        criterion = nn.CrossEntropyLoss(label_smoothing=self.training.label_smoothing)
        run.optimizer.zero_grad(set_to_none=True)
        logits = run.net.run(x, *plans[0])
        loss = criterion(logits, y)
        loss.backward()
        teacher = logits.detach().softmax(dim=1)
        for plan in plans[1:]:
            out = run.net.run(x, *plan)
            if self.training.distill:
                member_loss = -(teacher * out.log_softmax(dim=1)).sum(dim=1).mean()
            else:
                member_loss = criterion(out, y)
            member_loss.backward()
        run.optimizer.step()
        return float(loss.detach())

    def check_member(self, net: Supernet, encoding: tuple[int, ...]) -> dict[str, float]:
        """Held-out metrics of one member after a batch-norm recalibration (what the evaluator measures)."""
        model = net.extract(encoding).to(self.device)
        normalizer = self.data.normalizer(self.device)
        recalibrate_bn(model, self.data.train_images, normalizer, PROGRESS_BN_IMAGES, self.batch_size)
        return evaluate_model(model, self.data.val_images, self.data.val_labels, normalizer, 500)

    def _save(self, run: _Run) -> None:
        weights = {k: v.detach().cpu().contiguous() for k, v in run.net.state_dict().items()}
        tensors = {"model": weights, "optimizer": run.optimizer.state_dict(),
                   "rng": {"cpu": torch.get_rng_state(), "generator": run.generator.get_state()}}
        state = {"step": run.step, "sampler": run.sampler.bit_generator.state, "history": run.history}
        store.write_checkpoint(self.output, run.epoch, tensors, weights, state)


__all__ = ["SupernetTrainer"]

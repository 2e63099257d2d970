"""Train one architecture fully, with a checkpoint after every epoch and an exact resume.

The optimizer, learning-rate schedule, device choice and input normalisation are the training kit the proxy
trainer uses too (:mod:`~mixnas.training.optim`, :mod:`~mixnas.training.device`, :mod:`~mixnas.training.batches`),
configured by a :class:`~mixnas.training.recipe.Recipe`. Augmentation fits the
data: images up to 64 px get a padded random crop (pad = side / 8) and, except for digits and IDX characters, a
horizontal flip; larger (ImageNet-like) images get a random-resized crop (scale 0.08-1, aspect 3/4-4/3, Szegedy et
al. 2015) and a flip. With a recipe's ``ema_decay`` the evaluated and saved weights are the exponential moving
average (TF ``ExponentialMovingAverage`` with ``num_updates``: decay ``min(d, (1 + t) / (10 + t))``).

Every random draw comes from the run's own generators (data order and augmentation from one ``torch.Generator``,
dropout and drop-connect from torch's CPU generator inside :func:`torch.random.fork_rng`), and their states go into
each checkpoint, so a resumed run repeats the uninterrupted one bit for bit on a CPU in deterministic mode.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mixnas import tensorfiles
from mixnas.models import build as build_model
from mixnas.outcome import finite_or_none
from mixnas.search_space.arch import Architecture
from mixnas.search_space.counting import count
from mixnas.errors import RunError
from mixnas.textio import output_folder, write_json_atomic
from mixnas.training import checkpoint as ckpt
from mixnas.training.batches import augment_batch, to_input
from mixnas.training.config import trial_seed
from mixnas.training.data import TrainingData
from mixnas.training.device import pick_device
from mixnas.training.optim import learning_rate, make_optimizer
from mixnas.training.recipe import Recipe

logger = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, Any]], Any]
SMALL_IMAGES = 64  # at most this side: pad-crop augmentation; above: random-resized crop
DEVICE_DATA_BYTES = 2 << 30  # training images up to this size are moved to the GPU once
NO_FLIP_FORMATS = ("digits", "idx")  # handwritten characters are not mirror-symmetric


def random_resized_crop(batch: torch.Tensor, generator: torch.Generator, flip: bool) -> torch.Tensor:
    """Random-resized crop (and flip) of a uint8 NHWC batch back to its own size, one draw per image; float NHWC."""
    n, h, w, _ = batch.shape
    area = torch.empty(n).uniform_(0.08, 1.0, generator=generator)
    log_ratio = torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=generator)
    ratio = log_ratio.exp()
    sx = (area * ratio).sqrt().clamp(max=1.0)  # crop width / image width
    sy = (area / ratio).sqrt().clamp(max=1.0)
    tx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - sx)
    ty = (torch.rand(n, generator=generator) * 2 - 1) * (1 - sy)
    if flip:
        sx = torch.where(torch.rand(n, generator=generator) < 0.5, -sx, sx)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, tx, sy, ty
    x = batch.permute(0, 3, 1, 2).float()
    grid = nn.functional.affine_grid(theta.to(batch.device), list(x.shape), align_corners=False)
    out = nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


@dataclass
class _Run:
    """What one training run carries from step to step (and a checkpoint saves)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    ema: dict[str, torch.Tensor] | None
    scaler: Any
    generator: torch.Generator
    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    train_x: Any = None
    train_y: Any = None
    scale: Any = None
    shift: Any = None


class Trainer:
    """Trains ``arch`` on ``data`` with ``recipe`` into ``output`` (see :mod:`mixnas.training.checkpoint`).

    Args:
        arch: the architecture (its classifier and resolution are set to the data's).
        data: training and evaluation images.
        recipe: how to train.
        output: the run folder.
        epochs: whole epochs to train.
        batch_size: training batch size (capped at the training set's size).
        seed: seeds the initial weights, data order, augmentation, dropout and drop-connect.
        device: ``auto`` (CUDA when present, with AMP and channels_last), ``cpu`` or ``cuda``.
        on_epoch: called as ``on_epoch(epoch, metrics)`` after each epoch's checkpoint (progress, TensorBoard).
    """

    def __init__(self, arch: Architecture, data: TrainingData, recipe: Recipe, output: Path, *, epochs: int,
                 batch_size: int = 128, seed: int = 0, device: str = "auto", eval_batch_size: int = 500,
                 on_epoch: EpochCallback | None = None, init: Path | None = None) -> None:
        self.arch = arch.replace(num_classes=data.num_classes, resolution=data.resolution)
        self.data, self.recipe, self.output, self.epochs, self.seed = data, recipe, Path(output), epochs, seed
        self.batch_size = min(batch_size, int(data.train_labels.numel()))
        self.device = pick_device(device)
        self.device_name = device
        self.eval_batch_size = eval_batch_size
        self.on_epoch = on_epoch
        self.init = ckpt.init_weights_file(init) if init is not None else None
        self._init_state = ckpt.init_state(build_model(self.arch), self.init) if self.init is not None else None
        self.config = recipe.proxy_config(batch_size=self.batch_size, epochs=epochs, device=device)
        self.amp = self.device.type == "cuda"
        self.channels_last = True
        small = data.resolution <= SMALL_IMAGES
        self.flip = data.format not in NO_FLIP_FORMATS
        self.crop_spec = data.spec.replace(flip=self.flip, crop_padding=max(1, data.resolution // 8)) if small else None

    # --- what a resume must match ------------------------------------------------------------------------------
    def run_record(self) -> dict[str, Any]:
        return {
            "arch_id": self.arch.id, "arch": self.arch.name or self.arch.id, "recipe": self.recipe.to_dict(),
            "epochs": self.epochs, "batch_size": self.batch_size, "seed": self.seed,
            "data": self.data.spec.to_dict(), "eval_split": self.data.eval_split,
            "preprocessing": self.data.preprocessing(),
            "init": None if self.init is None else {"path": str(self.init), "sha256": ckpt.file_sha256(self.init)},
        }

    # --- the run -----------------------------------------------------------------------------------------------
    def fit(self, *, resume: bool = False) -> dict[str, Any]:
        """Train (from the last checkpoint when ``resume``) and return the final metrics."""
        output_folder(self.output, RunError)
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(trial_seed(self.seed, self.arch.id))
            return self._fit(resume)

    def _fit(self, resume: bool) -> dict[str, Any]:
        run = self._start(resume)
        # Small data sets live on the device; larger ones stay in host memory and move one batch at a time.
        data_device = self.device if self.data.train_images.nbytes <= DEVICE_DATA_BYTES else torch.device("cpu")
        run.train_x, run.train_y = self.data.train_images.to(data_device), self.data.train_labels.to(data_device)
        run.scale, run.shift = self.data.normalizer(self.device)
        while run.epoch < self.epochs:
            start = time.perf_counter()
            train_loss = self._train_epoch(run, data_device)
            train_seconds = time.perf_counter() - start
            run.epoch += 1
            evaluated = self._evaluate(run.model, run.ema, run.scale, run.shift)
            steps_per_epoch = int(run.train_y.numel()) // self.batch_size
            result = {"epoch": run.epoch, "step": run.step, "train_loss": finite_or_none(train_loss),
                      "lr": run.optimizer.param_groups[0]["lr"], "train_seconds": round(train_seconds, 3),
                      "images_per_second": round(steps_per_epoch * self.batch_size / train_seconds, 1), **evaluated}
            run.history.append(result)
            self._save(run.epoch, run.step, run.history, run.model, run.ema, run.optimizer, run.scaler, run.generator)
            if self.on_epoch is not None:
                self.on_epoch(run.epoch, dict(result))
        return self._final(run.history)

    def _start(self, resume: bool) -> _Run:
        """Model, EMA, optimizer, scaler and data-order generator: new, or as the last checkpoint left them."""
        device, recipe = self.device, self.recipe
        model = build_model(self.arch, dropout_rate=self.config.dropout_rate,
                            drop_connect_rate=self.config.drop_connect_rate)
        model = model.to(device)
        if self._init_state is not None and not resume:  # fine-tuning from given weights (a resume has its own)
            model.load_state_dict(self._init_state)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        run = _Run(model=model, optimizer=make_optimizer(model, self.config, device),
                   ema={k: v.detach().clone() for k, v in model.state_dict().items()} if recipe.ema_decay else None,
                   scaler=torch.amp.GradScaler("cuda") if self.amp else None,
                   generator=torch.Generator().manual_seed(trial_seed(self.seed, self.arch.id) ^ 1))
        if not resume:
            write_json_atomic(self.output / ckpt.RUN_FILE, self.run_record(), indent=1)
            ckpt.write_arch(self.output, self.arch)
            return run
        state, tensors = ckpt.resume_point(self.output)
        model.load_state_dict(tensors["model"])
        if run.ema is not None:
            run.ema = {k: v.to(device) for k, v in tensors["ema"].items()}
        run.optimizer.load_state_dict(tensors["optimizer"])
        if run.scaler is not None and tensors.get("scaler"):
            run.scaler.load_state_dict(tensors["scaler"])
        tensorfiles.restore_rng(tensors, run.generator, device)
        run.epoch, run.step, run.history = int(state["epoch"]), int(state["step"]), list(state["history"])
        return run

    def _train_epoch(self, run: _Run, data_device: torch.device) -> float | None:
        """One pass over the training set in a seeded order; the mean training loss."""
        device, model, optimizer = self.device, run.model, run.optimizer
        criterion = nn.CrossEntropyLoss(label_smoothing=self.config.label_smoothing)
        n = int(run.train_y.numel())
        steps_per_epoch = n // self.batch_size
        total_steps = steps_per_epoch * self.epochs
        model.train()
        order = torch.randperm(n, generator=run.generator).to(data_device)
        losses = []
        for i in range(steps_per_epoch):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(run.step, total_steps, steps_per_epoch, self.config)
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self._augment(run.train_x[index].to(device, non_blocking=True), run.generator, run.scale, run.shift)
            y = run.train_y[index].to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=self.amp):
                loss = criterion(model(x), y)
            if run.scaler is not None:
                run.scaler.scale(loss).backward()
                run.scaler.step(optimizer)
                run.scaler.update()
            else:
                loss.backward()
                optimizer.step()
            run.step += 1
            if run.ema is not None:
                self._update_ema(run.ema, model, run.step)
            losses.append(loss.detach())
        return float(torch.stack(losses).float().mean()) if losses else None

    def _augment(self, batch: torch.Tensor, generator: torch.Generator, scale: torch.Tensor,
                 shift: torch.Tensor) -> torch.Tensor:
        if self.crop_spec is not None:
            batch = augment_batch(batch, self.crop_spec, generator)
        else:
            batch = random_resized_crop(batch, generator, self.flip)
        return to_input(batch, scale, shift, self.channels_last)

    @torch.no_grad()
    def _update_ema(self, ema: dict[str, torch.Tensor], model: nn.Module, step: int) -> None:
        decay = min(self.recipe.ema_decay or 0.0, (1 + step) / (10 + step))
        for name, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                ema[name].mul_(decay).add_(value.detach(), alpha=1 - decay)
            else:
                ema[name].copy_(value)

    @torch.inference_mode()
    def _evaluate(self, model: nn.Module, ema: dict[str, torch.Tensor] | None, scale: torch.Tensor,
                  shift: torch.Tensor) -> dict[str, Any]:
        start = time.perf_counter()
        if ema is not None:
            raw = {k: v.clone() for k, v in model.state_dict().items()}
            model.load_state_dict(ema)
        model.eval()
        x_all, y_all = self.data.eval_images, self.data.eval_labels
        k = min(5, self.data.num_classes)
        correct1 = correct5 = 0
        loss_sum = 0.0
        for lo in range(0, int(y_all.numel()), self.eval_batch_size):
            x = to_input(x_all[lo : lo + self.eval_batch_size].to(self.device), scale, shift, self.channels_last)
            y = y_all[lo : lo + self.eval_batch_size].to(self.device)
            with torch.autocast(self.device.type, enabled=self.amp):
                logits = model(x).float()
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            hits = logits.topk(k, dim=1).indices == y[:, None]
            correct1 += int(hits[:, 0].sum())
            correct5 += int(hits.any(dim=1).sum())
        if ema is not None:
            model.load_state_dict(raw)
        n = int(y_all.numel())
        return {"top1": correct1 / n, "top5": correct5 / n, "loss": finite_or_none(loss_sum / n),
                "eval_seconds": round(time.perf_counter() - start, 3)}

    def _save(self, epoch: int, step: int, history: list[dict[str, Any]], model: nn.Module,
              ema: dict[str, torch.Tensor] | None, optimizer: torch.optim.Optimizer,
              scaler: torch.amp.GradScaler | None, generator: torch.Generator) -> None:
        rng = {"cpu": torch.get_rng_state(), "generator": generator.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        ema_cpu = {k: v.cpu().contiguous() for k, v in ema.items()} if ema is not None else {}
        tensors = {"model": weights, "ema": ema_cpu, "optimizer": optimizer.state_dict(),
                   "scaler": scaler.state_dict() if scaler is not None else {}, "rng": rng}
        # the checkpoint and the state.json naming it first (the commit point), then what is derived from them
        ckpt.write_checkpoint(self.output, epoch, tensors, {"step": step, "history": history})
        tensorfiles.save_tensors(self.output / ckpt.WEIGHTS_FILE, ema_cpu or weights)
        write_json_atomic(self.output / ckpt.METRICS_FILE, self._final(history), indent=1)

    def _final(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        counts = count(self.arch)
        last = history[-1] if history else {}
        return {
            "arch": self.arch.name or self.arch.id, "arch_id": self.arch.id, "recipe": self.recipe.name,
            "epochs": last.get("epoch", 0), "steps": last.get("step", 0), "top1": last.get("top1"),
            "top5": last.get("top5"), "loss": last.get("loss"), "eval_split": self.data.eval_split,
            "evaluated_weights": "ema" if self.recipe.ema_decay else "raw", "device": str(self.device),
            "params": counts.params, "macs": counts.macs, "num_classes": self.data.num_classes,
            "resolution": self.data.resolution, "train_images": int(self.data.train_labels.numel()),
            "eval_images": int(self.data.eval_labels.numel()), "history": history,
        }

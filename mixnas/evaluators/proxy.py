"""Proxy trainer: train a candidate briefly on a proxy task and score it on a held-out split.

MnasNet and MixNet rank candidates by training each for a few epochs on a subset of ImageNet with held-out
images for validation (Tan et al. 2019, "MnasNet", sec. 6; Tan & Le 2019, "MixConv", sec. 4). This is where a search
spends nearly all of its time, so the loop is written for speed on a CPU: ``channels_last`` tensors (MixConv's
depthwise convolutions run ~2.5x faster that way), uint8 batches indexed straight from memory and normalised in
one fused step (no DataLoader, no workers), gradients set to None, a foreach / fused optimizer, and
evaluation under ``inference_mode``. On CUDA it adds automatic mixed precision with a gradient scaler.

A trial is seeded from (experiment seed, architecture id), inside :func:`torch.random.fork_rng`, so the same
candidate gets the same result (bit-identical on a CPU with the same thread count) and the caller's global RNG is
untouched. A trial never raises for a bad candidate: :meth:`ProxyEvaluator.score` returns a
:class:`~mixnas.outcome.TrialOutcome` that is ``ok``, ``pruned`` (stopped early), ``diverged`` (non-finite loss;
metrics of the last finished evaluation) or ``failed`` (with the exception's type and message as its reason).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mixnas.data.load import load_proxy_data
from mixnas.data.sets import ProxyData
from mixnas.data.spec import DataSpec
from mixnas.evaluators.base import Report, TrialContext
from mixnas.evaluators.metrics import PROXY_METRICS
from mixnas.models import build as build_model
from mixnas.outcome import Status, TrialOutcome, finite_or_none
from mixnas.search_space.arch import Architecture
from mixnas.torch_runtime import torch_threads
from mixnas.training.batches import augment_batch, to_input
from mixnas.training.config import ProxyConfig, trial_seed
from mixnas.training.device import pick_device
from mixnas.training.optim import learning_rate, make_optimizer

logger = logging.getLogger(__name__)

BuildFn = Callable[..., nn.Module]


# ----------------------------------------------------------------------------------------------------------------
# The evaluator
# ----------------------------------------------------------------------------------------------------------------
class ProxyEvaluator:
    """Scores architectures by proxy training on one data set.

    Example::

        evaluator = ProxyEvaluator(DataSpec("digits"), ProxyConfig(epochs=5))
        outcome = evaluator.score(resolve_arch("mixnet_tiny"), TrialContext(seed=0))
        outcome.status, outcome.metrics["top1"]   # (Status.OK, 0.97...)

    Args:
        data: what to train on; a data set in memory is shared by every evaluator in the process.
        config: how to train.
        build_fn: ``build(arch, num_classes, *, dropout_rate, drop_connect_rate) -> nn.Module``;
            None = :func:`mixnas.models.build`.
    """

    def __init__(self, data: DataSpec | ProxyData, config: ProxyConfig | None = None, *, build_fn: BuildFn | None = None) -> None:
        self.data = data
        self.config = config or ProxyConfig()
        self._build_fn = build_fn
        self._device_data: tuple[str, ProxyData, tuple[torch.Tensor, ...]] | None = None

    # --- data ------------------------------------------------------------------------------------------------
    def proxy_data(self, arch: Architecture | None = None) -> ProxyData:
        """The proxy task for ``arch``: a spec without a resolution takes the architecture's."""
        if isinstance(self.data, ProxyData):
            return self.data
        spec = self.data
        if spec.resolution is None and arch is not None:
            spec = spec.replace(resolution=arch.resolution)
        return load_proxy_data(spec)

    def _tensors(self, data: ProxyData, device: torch.device) -> tuple[torch.Tensor, ...]:
        """The data set's tensors on ``device``, moved once per (data, device)."""
        key = str(device)
        if self._device_data is None or self._device_data[0] != key or self._device_data[1] is not data:
            tensors = (data.train_images, data.train_labels, data.val_images, data.val_labels)
            if data.in_memory:
                tensors = tuple(t.to(device) for t in tensors)
            # else: memory-mapped images stay where they are and each batch moves to the device (_Trial._rows)
            self._device_data = (key, data, (*tensors, *data.normalizer(device)))
        return self._device_data[2]

    # --- one trial -------------------------------------------------------------------------------------------
    @property
    def metrics(self) -> tuple[str, ...]:
        return PROXY_METRICS

    def score(self, candidate: Any, context: TrialContext) -> TrialOutcome:
        """Train ``candidate`` on the proxy task and score it on the held-out split (the Evaluator interface).

        Args:
            candidate: the architecture; its classifier and resolution are set to the data set's.
            context: ``seed`` is the experiment seed (the trial seed also depends on ``candidate.id``);
                ``report(epoch, metrics)`` is called after each finished epoch with held-out metrics, and a return
                value of True stops the trial (``pruned``, ``stopped_early`` True). Each report costs an
                evaluation (with BN recalibration); without ``report`` only the final evaluation runs, and the
                final metrics are bit-identical either way (a search passes one only when an early-stopping
                scheduler consumes it). ``encoding`` is not used.

        Returns:
            ``ok``, ``pruned`` (stopped by ``report``), ``diverged`` (non-finite training loss; metrics of the last
            finished evaluation) or ``failed`` (building or training raised; the reason is ``"Type: message"``).
            Metrics, JSON-able: top1, top5, loss (held-out cross-entropy), train_loss, epochs (done), steps,
            train_seconds, eval_seconds, images_per_second, stopped_early, seed, arch_id, device, num_classes,
            resolution, train_images, val_images. Params and MACs are the trial's to count
            (:mod:`mixnas.launch.trial`), not the trainer's.

        Raises:
            DataError: the data set cannot be loaded (not a property of the candidate).
        """
        if not isinstance(candidate, Architecture):
            return TrialOutcome.failure(f"TypeError: the proxy trainer needs an architecture space, got a "
                                        f"{type(candidate).__name__}", retryable=False)
        arch, seed = candidate, context.seed
        data = self.proxy_data(arch)
        result: dict[str, Any] = {
            "top1": 0.0, "top5": 0.0, "loss": None, "train_loss": None, "epochs": 0.0, "steps": 0,
            "train_seconds": 0.0, "eval_seconds": 0.0, "images_per_second": 0.0, "stopped_early": False,
            "seed": seed, "arch_id": arch.id, "device": None, "num_classes": data.num_classes,
            "resolution": data.resolution, "train_images": int(data.train_labels.numel()),
            "val_images": int(data.val_labels.numel()),
        }
        try:
            arch = arch.replace(num_classes=data.num_classes, resolution=data.resolution)
            device = pick_device(self.config.device)
            result["device"] = str(device)
            cuda = [device.index or 0] if device.type == "cuda" else []
            with torch_threads(self.config.threads), torch.random.fork_rng(devices=cuda):
                torch.manual_seed(trial_seed(seed, candidate.id))
                build = self._build_fn or build_model
                trial = _Trial(arch, data, self._tensors(data, device), self.config, device, build, result,
                               context.report)
                diverged = trial.run(torch.Generator().manual_seed(trial_seed(seed, candidate.id) ^ 1))
        except Exception as exc:  # a bad candidate is a failed trial with its reason, never a crashed search
            logger.warning("trial %s failed: %s: %s", candidate.id, type(exc).__name__, exc,
                           exc_info=logger.isEnabledFor(logging.DEBUG))
            return TrialOutcome.failure(f"{type(exc).__name__}: {exc}", metrics=result)
        if diverged is not None:
            return TrialOutcome.failure(diverged, status=Status.DIVERGED, metrics=result)
        return TrialOutcome(Status.PRUNED if result["stopped_early"] else Status.OK, result)


class _Trial:
    """The state of one training run; :meth:`run` fills ``result`` in place (so a crash keeps partial metrics)."""

    def __init__(self, arch: Architecture, data: ProxyData, tensors: tuple[torch.Tensor, ...], config: ProxyConfig,
                 device: torch.device, build: BuildFn, result: dict[str, Any], report: Report | None) -> None:
        self.arch, self.data, self.config, self.device, self.result, self.report = arch, data, config, device, result, report
        self.train_x, self.train_y, self.val_x, self.val_y, self.scale, self.shift = tensors
        self.amp = device.type == "cuda" and config.amp
        self.model = build(arch, data.num_classes, dropout_rate=config.dropout_rate,
                           drop_connect_rate=config.drop_connect_rate).to(device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.model, config, device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    def budget(self) -> tuple[int, int]:
        """(batch size, total steps of the LR schedule); the schedule spans the epoch or step budget."""
        n = int(self.train_y.numel())
        batch = min(self.config.batch_size, n)
        steps_per_epoch = n // batch
        limits = []
        if self.config.epochs is not None:
            limits.append(max(1, round(self.config.epochs * steps_per_epoch)))
        if self.config.steps is not None:
            limits.append(self.config.steps)
        return batch, min(limits) if limits else 0

    def run(self, generator: torch.Generator) -> str | None:
        """Train until the budget is spent, the loss diverges or ``report`` says stop; then evaluate.

        Returns why the run diverged, or None.
        """
        self.generator = generator
        config, result = self.config, self.result
        batch, total_steps = self.budget()
        n = int(self.train_y.numel())
        steps_per_epoch = n // batch
        schedule_steps = total_steps or steps_per_epoch  # time budget: progress replaces the step count
        step, epoch, images, train_seconds = 0, 0, 0, 0.0
        while True:
            order = torch.randperm(n, generator=self.generator).to(self.train_x.device)
            self.model.train()
            losses: list[float] = []
            exhausted = False
            start = time.perf_counter()
            for i in range(steps_per_epoch):
                elapsed = train_seconds + time.perf_counter() - start
                if (total_steps and step >= total_steps) or (config.seconds is not None and elapsed >= config.seconds):
                    exhausted = True
                    break
                progress = None if total_steps else elapsed / config.seconds  # type: ignore[operator]
                loss = self._step(order[i * batch : (i + 1) * batch], learning_rate(step, schedule_steps, steps_per_epoch, config, progress))
                step += 1
                images += batch
                if not math.isfinite(loss):
                    self._finish(step, steps_per_epoch, images, train_seconds + time.perf_counter() - start)
                    result["train_loss"] = None
                    return f"non-finite training loss at step {step}"
                losses.append(loss)
            train_seconds += time.perf_counter() - start
            if not exhausted:
                epoch += 1
            if losses:
                result["train_loss"] = sum(losses) / len(losses)
            self._finish(step, steps_per_epoch, images, train_seconds)
            if exhausted or (total_steps and step >= total_steps):
                break
            if self.report is not None:
                self._evaluate()
                if self.report(epoch, dict(result)) is True:
                    result["stopped_early"] = True
                    return None
        self._evaluate()
        if self.report is not None:
            self.report(math.ceil(step / steps_per_epoch), dict(result))
        return None

    def _rows(self, tensor: torch.Tensor, index: torch.Tensor | slice) -> torch.Tensor:
        """Rows of a data tensor on the training device (a no-op move when the data set already lives there)."""
        return tensor[index].to(self.device, non_blocking=True)

    def _step(self, index: torch.Tensor, lr: float) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = self._rows(self.train_x, index)
        if self.data.spec.flip or self.data.spec.crop_padding:
            batch = augment_batch(batch, self.data.spec, self.generator)
        x = to_input(batch, self.scale, self.shift, self.config.channels_last)
        y = self._rows(self.train_y, index)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=self.amp):
            loss = self.criterion(self.model(x), y)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return float(loss.detach())

    def _finish(self, step: int, steps_per_epoch: int, images: int, train_seconds: float) -> None:
        self.result.update(
            steps=step,
            epochs=round(step / steps_per_epoch, 4),
            train_seconds=round(train_seconds, 4),
            images_per_second=round(images / train_seconds, 2) if train_seconds > 0 else 0.0,
        )

    @torch.inference_mode()
    def _recalibrate_bn(self) -> None:
        """Exact BN statistics of the current weights over a fixed slice of training images (no augmentation).

        Only the BN layers are in training mode, so dropout and drop-connect do not disturb the statistics.
        """
        norms = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        count = min(self.config.bn_recalibration, int(self.train_y.numel()))
        if not norms or count == 0:
            return
        saved = [m.momentum for m in norms]
        self.model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
            m.train()
        # A fixed spread of images (a class-sorted folder would give a few classes only); no trial RNG is used,
        # so evaluating more often does not change the training run.
        chosen = torch.randperm(int(self.train_y.numel()), generator=torch.Generator().manual_seed(0))[:count]
        chosen = chosen.to(self.train_x.device)
        batch = max(2, min(self.config.eval_batch_size, count))
        for lo in range(0, count - batch + 1, batch):
            x = to_input(self._rows(self.train_x, chosen[lo : lo + batch]), self.scale, self.shift, self.config.channels_last)
            with torch.autocast(self.device.type, enabled=self.amp):
                self.model(x)
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
            m.eval()

    @torch.inference_mode()
    def _evaluate(self) -> None:
        start = time.perf_counter()
        self._recalibrate_bn()
        self.model.eval()
        k = min(5, self.data.num_classes)
        correct1 = correct5 = 0
        loss_sum = 0.0
        n = int(self.val_y.numel())
        for lo in range(0, n, self.config.eval_batch_size):
            rows = slice(lo, lo + self.config.eval_batch_size)
            x = to_input(self._rows(self.val_x, rows), self.scale, self.shift, self.config.channels_last)
            y = self._rows(self.val_y, rows)
            with torch.autocast(self.device.type, enabled=self.amp):
                logits = self.model(x)
            logits = logits.float()
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            top = logits.topk(k, dim=1).indices
            hits = top == y[:, None]
            correct1 += int(hits[:, 0].sum())
            correct5 += int(hits.any(dim=1).sum())
        self.result.update(
            top1=correct1 / n, top5=correct5 / n, loss=finite_or_none(loss_sum / n),
            eval_seconds=round(self.result["eval_seconds"] + time.perf_counter() - start, 4),
        )

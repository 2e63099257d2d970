"""Proxy trainer: train a candidate briefly on a proxy task and score it on a held-out split.

MnasNet and MixNet rank candidates by training each for a few epochs on a subset of ImageNet with held-out
images for validation (Tan et al. 2019, "MnasNet", sec. 6; Tan & Le 2019, "MixConv", sec. 4). This is where a search
spends nearly all of its time, so the loop is written for speed on a CPU: ``channels_last`` tensors (MixConv's
depthwise convolutions run ~2.5x faster that way), uint8 batches indexed straight from memory and normalised in
one fused step (no DataLoader, no workers), gradients set to None, a foreach / fused optimizer, and
evaluation under ``inference_mode``. On CUDA it adds automatic mixed precision with a gradient scaler.

A trial is seeded from (experiment seed, architecture id), inside :func:`torch.random.fork_rng`, so the same
candidate gets the same result (bit-identical on a CPU with the same thread count) and the caller's global RNG is
untouched. A trial never raises for a bad candidate: it returns ``status`` ``ok``, ``diverged`` (non-finite loss;
metrics of the last finished evaluation) or ``failed`` (with the exception's message in ``error``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mixnas.confignode import dataclass_fields
from mixnas.errors import ConfigError
from mixnas.evaluators.base import TrialContext
from mixnas.evaluators.data import DataSpec, ProxyData, load_proxy_data
from mixnas.models import build as build_model
from mixnas.outcome import Status, TrialOutcome
from mixnas.search_space.arch import Architecture
from mixnas.search_space.counting import count
from mixnas.torch_runtime import torch_threads

logger = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "rmsprop")
SCHEDULES = ("cosine", "exponential")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_EPOCHS = 5.0  # MnasNet's proxy budget
# Budget bounds: far beyond any proxy run, but they turn a typo (epochs: 1e308) into an error at load time
# instead of a failure (or a run that never ends) in every trial.
MAX_EPOCHS = 10_000
MAX_STEPS = 100_000_000
MAX_SECONDS = 7 * 24 * 3600.0
# The numeric metrics :meth:`ProxyEvaluator.evaluate` reports (what a reward, scheduler or constraint can name).
METRICS = ("top1", "top5", "loss", "train_loss", "epochs", "steps", "train_seconds", "eval_seconds",
           "images_per_second", "params", "macs", "seed", "num_classes", "resolution", "train_images", "val_images")

Report = Callable[[int, dict[str, Any]], Any]
BuildFn = Callable[..., nn.Module]


# ----------------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProxyConfig:
    """How to train one candidate. Frozen and validated at construction; :meth:`from_dict` reads YAML mappings.

    The budget is ``epochs``, ``steps`` and / or ``seconds``: training stops at the first one reached; with none
    of them set, it is :data:`DEFAULT_EPOCHS` epochs (so ``steps=500`` alone is not capped at 5 epochs). The LR
    schedule spans the epoch or step budget (the smaller); with only ``seconds`` it spans the time budget, which is
    then the one thing that is not deterministic.

    Attributes:
        epochs: passes over the training split (fractions allowed); None = no epoch limit.
        steps: optimizer steps; None = no step limit.
        seconds: training wall-clock seconds (evaluation excluded); None = no time limit.
        batch_size: training batch size (capped at the training split's size).
        optimizer: ``sgd`` (Nesterov momentum) or ``rmsprop`` (TF1 semantics, as MnasNet / MixNet train).
        lr: peak learning rate; None = 0.1 * batch_size / 64 for SGD, 0.016 * batch_size / 256 for RMSProp.
        momentum: SGD / RMSProp momentum.
        weight_decay: L2 on convolution and dense weights (not on batch-norm parameters and biases).
        rmsprop_decay: RMSProp's mean-square decay (TF ``decay``).
        rmsprop_eps: RMSProp epsilon (inside the square root, as in TF).
        schedule: ``cosine`` (to zero) or ``exponential`` (``decay_rate`` every ``decay_epochs``, staircase).
        warmup_epochs: linear warm-up from 0 to ``lr`` (capped at a third of the budget's steps).
        decay_epochs: exponential schedule period in epochs (MnasNet: 2.4).
        decay_rate: exponential schedule factor (MnasNet: 0.97).
        label_smoothing: cross-entropy label smoothing.
        dropout_rate: classifier dropout; None = the architecture's.
        drop_connect_rate: stochastic depth rate of the MBConv blocks.
        channels_last: NHWC memory format for the model and its inputs.
        threads: torch CPU threads for the trial (None = leave torch's setting).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        amp: mixed precision with a gradient scaler on CUDA (ignored on a CPU).
        eval_batch_size: batch size of the held-out evaluation.
        bn_recalibration: before each evaluation, recompute batch-norm statistics as exact averages over this
            many training images (0 = keep the running averages). With TF's BN momentum (0.99) the running
            averages lag far behind the weights after the few hundred steps of a proxy run.
    """

    epochs: float | None = None
    steps: int | None = None
    seconds: float | None = None
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-5
    rmsprop_decay: float = 0.9
    rmsprop_eps: float = 1e-3
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    decay_epochs: float = 2.4
    decay_rate: float = 0.97
    label_smoothing: float = 0.1
    dropout_rate: float | None = None
    drop_connect_rate: float = 0.0
    channels_last: bool = True
    threads: int | None = None
    device: str = "auto"
    amp: bool = True
    eval_batch_size: int = 500
    bn_recalibration: int = 1024

    def __post_init__(self) -> None:
        def number(name: str, lo: float, hi: float = math.inf, *, optional: bool = False, low_open: bool = False) -> None:
            value = getattr(self, name)
            if value is None and optional:
                return
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            ok = ok and (value > lo if low_open else value >= lo) and value <= hi
            if not ok:
                bound = f"{'>' if low_open else '>='} {lo}" + (f" and <= {hi}" if hi != math.inf else "")
                raise ConfigError(f"proxy: {name}: expected a number {bound}{' or null' if optional else ''}, got {value!r}")

        def integer(name: str, lo: int, hi: int | None = None, *, optional: bool = False) -> None:
            value = getattr(self, name)
            if value is None and optional:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
                bound = f">= {lo}" if hi is None else f"in {lo}..{hi:_}"
                raise ConfigError(f"proxy: {name}: expected an integer {bound}{' or null' if optional else ''}, got {value!r}")

        def choice(name: str, allowed: tuple[str, ...]) -> None:
            if getattr(self, name) not in allowed:
                raise ConfigError(f"proxy: {name}: expected one of {list(allowed)}, got {getattr(self, name)!r}")

        number("epochs", 0, MAX_EPOCHS, optional=True, low_open=True)
        integer("steps", 1, MAX_STEPS, optional=True)
        number("seconds", 0, MAX_SECONDS, optional=True, low_open=True)
        if self.epochs is None and self.steps is None and self.seconds is None:
            object.__setattr__(self, "epochs", DEFAULT_EPOCHS)
        integer("batch_size", 1)
        choice("optimizer", OPTIMIZERS)
        number("lr", 0, optional=True, low_open=True)
        number("momentum", 0, 1)
        number("weight_decay", 0)
        number("rmsprop_decay", 0, 1)
        number("rmsprop_eps", 0, low_open=True)
        choice("schedule", SCHEDULES)
        number("warmup_epochs", 0)
        number("decay_epochs", 0, low_open=True)
        number("decay_rate", 0, 1, low_open=True)
        number("label_smoothing", 0, 1)
        if self.label_smoothing >= 1:
            raise ConfigError(f"proxy: label_smoothing: expected a number in [0, 1), got {self.label_smoothing!r}")
        number("dropout_rate", 0, 0.99, optional=True)
        number("drop_connect_rate", 0, 0.99)
        integer("threads", 1, 1024, optional=True)  # torch crashes (SIGSEGV) on absurd thread counts
        choice("device", DEVICES)
        integer("eval_batch_size", 1)
        integer("bn_recalibration", 0)
        for name in ("channels_last", "amp"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"proxy: {name}: expected true or false, got {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "proxy") -> ProxyConfig:
        """Build from a YAML mapping; errors name ``where`` (the file and YAML path) and the allowed keys.

        A bad value reads ``{where}.{key}: expected ..., got ...``.
        """
        data = dataclass_fields(cls, data, where)
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{where}.{str(exc).removeprefix('proxy: ')}") from None  # where.key: problem

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> ProxyConfig:
        return dataclasses.replace(self, **changes)

    @property
    def peak_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        if self.optimizer == "sgd":
            return 0.1 * self.batch_size / 64
        return 0.016 * self.batch_size / 256


def trial_seed(seed: int, arch_id: str) -> int:
    """The seed of one trial: a hash of the experiment seed and the architecture's content id (63 bits)."""
    digest = hashlib.sha256(f"{int(seed)}:{arch_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


# ----------------------------------------------------------------------------------------------------------------
# Optimizer and schedule
# ----------------------------------------------------------------------------------------------------------------
class RMSpropTF(torch.optim.Optimizer):
    """RMSProp with TensorFlow 1 semantics, as used to train MnasNet and MixNet.

    It differs from :class:`torch.optim.RMSprop` in three ways that matter at the papers' settings (decay 0.9,
    momentum 0.9, epsilon 1e-3): the mean square starts at one, epsilon is added inside the square root, and the
    learning rate multiplies the update *inside* the momentum buffer (so a schedule change acts smoothly)::

        ms  = decay * ms + (1 - decay) * g^2
        mom = momentum * mom + lr * g / sqrt(ms + eps)
        w  -= mom
    """

    def __init__(self, params: Any, lr: float, *, decay: float = 0.9, momentum: float = 0.9, eps: float = 1e-3,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "decay": decay, "momentum": momentum, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            for p in params:
                state = self.state[p]
                if not state:
                    state["ms"] = torch.ones_like(p, memory_format=torch.preserve_format)
                    state["mom"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            squares = [self.state[p]["ms"] for p in params]
            moms = [self.state[p]["mom"] for p in params]
            torch._foreach_mul_(squares, group["decay"])
            torch._foreach_addcmul_(squares, grads, grads, value=1.0 - group["decay"])
            denom = torch._foreach_add(squares, group["eps"])
            torch._foreach_sqrt_(denom)
            torch._foreach_mul_(moms, group["momentum"])
            torch._foreach_addcdiv_(moms, grads, denom, value=group["lr"])
            torch._foreach_sub_(params, moms)
        return loss


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on convolution / dense weights only (batch-norm scales and biases are 1-D)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    rest = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, config: ProxyConfig, device: torch.device) -> torch.optim.Optimizer:
    groups = _param_groups(model, config.weight_decay)
    if config.optimizer == "rmsprop":
        return RMSpropTF(groups, config.peak_lr, decay=config.rmsprop_decay, momentum=config.momentum, eps=config.rmsprop_eps)
    return torch.optim.SGD(groups, lr=config.peak_lr, momentum=config.momentum, nesterov=config.momentum > 0, fused=True)


def learning_rate(step: int, total_steps: int, steps_per_epoch: int, config: ProxyConfig, progress: float | None = None) -> float:
    """LR at ``step``: linear warm-up, then cosine to zero over the rest or a staircase exponential decay.

    ``progress`` (0..1 of the budget) replaces ``step / total_steps`` for time budgets.
    """
    warmup = min(config.warmup_epochs * steps_per_epoch, total_steps / 3)
    done = step if progress is None else progress * total_steps
    if done < warmup:
        return config.peak_lr * min(1.0, (done + 1) / warmup)
    if config.schedule == "exponential":
        return config.peak_lr * config.decay_rate ** math.floor((done - warmup) / (config.decay_epochs * steps_per_epoch))
    fraction = min(1.0, (done - warmup) / max(1.0, total_steps - warmup))
    return 0.5 * config.peak_lr * (1.0 + math.cos(math.pi * fraction))


# ----------------------------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------------------------
# The evaluator
# ----------------------------------------------------------------------------------------------------------------
def check_device(name: str) -> None:
    """Refuse ``cuda`` on a machine where torch sees no CUDA device (before training, not inside every trial)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("proxy: device: 'cuda' was asked for but torch sees no CUDA device on this machine; "
                          "use 'auto' (CUDA when available) or 'cpu'")


def pick_device(name: str) -> torch.device:
    check_device(name)
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class ProxyEvaluator:
    """Scores architectures by proxy training on one data set.

    Example::

        evaluator = ProxyEvaluator(DataSpec("digits"), ProxyConfig(epochs=5))
        metrics = evaluator.evaluate(resolve_arch("mixnet_tiny"), seed=0)   # {'status': 'ok', 'top1': ...}

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
    def evaluate(self, arch: Architecture, *, seed: int = 0, report: Report | None = None) -> dict[str, Any]:
        """Train ``arch`` on the proxy task and return its metrics (see the module docstring for ``status``).

        Args:
            arch: the candidate; its classifier and resolution are set to the data set's.
            seed: the experiment seed; the trial seed also depends on ``arch.id``.
            report: called as ``report(epoch, metrics)`` after each finished epoch with held-out metrics; a
                return value of True stops the trial (``status`` stays ``ok``, ``stopped_early`` is True). Each
                report costs an evaluation (with BN recalibration); without ``report`` only the final evaluation
                runs, and the final metrics are bit-identical either way (a search passes one only when an
                early-stopping scheduler consumes it).

        Returns:
            A JSON-able dict: status, top1, top5, loss (held-out cross-entropy), train_loss, epochs (done),
            steps, train_seconds, eval_seconds, images_per_second, params, macs, stopped_early, error, seed,
            arch_id, device, num_classes, resolution, train_images, val_images.
        """
        data = self.proxy_data(arch)
        result: dict[str, Any] = {
            "status": "ok", "top1": 0.0, "top5": 0.0, "loss": None, "train_loss": None, "epochs": 0.0, "steps": 0,
            "train_seconds": 0.0, "eval_seconds": 0.0, "images_per_second": 0.0, "params": None, "macs": None,
            "stopped_early": False, "error": None, "seed": seed, "arch_id": arch.id, "device": None,
            "num_classes": data.num_classes, "resolution": data.resolution,
            "train_images": int(data.train_labels.numel()), "val_images": int(data.val_labels.numel()),
        }
        candidate_id = arch.id
        try:
            arch = arch.replace(num_classes=data.num_classes, resolution=data.resolution)
            counts = count(arch)
            result.update(params=counts.params, macs=counts.macs)
            device = pick_device(self.config.device)
            result["device"] = str(device)
            cuda = [device.index or 0] if device.type == "cuda" else []
            with torch_threads(self.config.threads), torch.random.fork_rng(devices=cuda):
                torch.manual_seed(trial_seed(seed, candidate_id))
                build = self._build_fn or build_model
                trial = _Trial(arch, data, self._tensors(data, device), self.config, device, build, result, report)
                trial.run(torch.Generator().manual_seed(trial_seed(seed, candidate_id) ^ 1))
        except Exception as exc:  # a bad candidate is a failed trial with its reason, never a crashed search
            logger.warning("trial %s failed: %s: %s", candidate_id, type(exc).__name__, exc, exc_info=logger.isEnabledFor(logging.DEBUG))
            result.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        return result

    @property
    def metrics(self) -> tuple[str, ...]:
        return METRICS

    def score(self, candidate: Any, context: TrialContext) -> TrialOutcome:
        """The :class:`~mixnas.evaluators.base.Evaluator` interface: :meth:`evaluate` as a trial outcome."""
        if not isinstance(candidate, Architecture):
            return TrialOutcome.failure(f"TypeError: the proxy trainer needs an architecture space, got a "
                                        f"{type(candidate).__name__}", retryable=False)
        result = self.evaluate(candidate, seed=context.seed, report=context.report)
        status, error = result.pop("status"), result.pop("error")
        stopped = result.get("stopped_early")
        if status == "failed":
            return TrialOutcome.failure(error or "the proxy trainer failed", metrics=result)
        if status == "diverged":
            return TrialOutcome.failure(error or "non-finite training loss", status=Status.DIVERGED, metrics=result)
        return TrialOutcome(Status.PRUNED if stopped else Status.OK, result)


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

    def run(self, generator: torch.Generator) -> None:
        """Train until the budget is spent, the loss diverges or ``report`` says stop; then evaluate."""
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
                    result.update(status="diverged", train_loss=None, error=f"non-finite training loss at step {step}")
                    return
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
                    return
        self._evaluate()
        if self.report is not None:
            self.report(math.ceil(step / steps_per_epoch), dict(result))

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
            top1=correct1 / n, top5=correct5 / n, loss=_finite_or_none(loss_sum / n),
            eval_seconds=round(self.result["eval_seconds"] + time.perf_counter() - start, 4),
        )

"""How to train one architecture: :class:`ProxyConfig` (budget, optimizer, schedule, regularisation, device),
validated once at construction, its bounds and choices, the same for a supernet (:class:`SupernetTraining`), and
the seed of one trial. No torch here: the command
line reads these choices without importing it. The proxy trainer, the full trainer and the supernet all train
with it.
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mixnas import bounds
from mixnas.confignode import dataclass_fields
from mixnas.errors import ConfigError
from mixnas.training.device import DEVICES

OPTIMIZERS = ("sgd", "rmsprop")
SCHEDULES = ("cosine", "exponential")
DEFAULT_EPOCHS = 5.0  # MnasNet's proxy budget
# Budget bounds: far beyond any proxy run, but they turn a typo (epochs: 1e308) into an error at load time
# instead of a failure (or a run that never ends) in every trial.
MAX_EPOCHS = 10_000
MAX_STEPS = 100_000_000
MAX_SECONDS = 7 * 24 * 3600.0

# The range of every numeric setting (mixnas.bounds): checked at construction, read by the command line's options.
PROXY_RANGES = {
    "epochs": bounds.number(0, MAX_EPOCHS, low_open=True, optional=True),
    "steps": bounds.integer(1, MAX_STEPS, optional=True),
    "seconds": bounds.number(0, MAX_SECONDS, low_open=True, optional=True),
    "batch_size": bounds.BATCH,
    "lr": bounds.number(0, 100, low_open=True, optional=True),
    "momentum": bounds.number(0, 1),
    "weight_decay": bounds.number(0, 1),
    "rmsprop_decay": bounds.number(0, 1),
    "rmsprop_eps": bounds.number(0, 1, low_open=True),
    "warmup_epochs": bounds.number(0, MAX_EPOCHS),
    "decay_epochs": bounds.number(0, MAX_EPOCHS, low_open=True),
    "decay_rate": bounds.number(0, 1, low_open=True),
    "label_smoothing": bounds.number(0, 1, high_open=True),
    "dropout_rate": bounds.number(0, 0.99, optional=True),
    "drop_connect_rate": bounds.number(0, 0.99),
    "threads": bounds.integer(1, 1024, optional=True),  # torch crashes (SIGSEGV) on absurd thread counts
    "eval_batch_size": bounds.BATCH,
    "bn_recalibration": bounds.integer(0, 10**7),
}

# The range of every numeric setting of a supernet's training (SupernetTraining; `mixnas supernet train` options).
SUPERNET_RANGES = {
    "epochs": bounds.integer(1, MAX_EPOCHS),
    "batch_size": bounds.BATCH,
    "random_subnets": bounds.integer(0, 64),
    "lr": PROXY_RANGES["lr"],
    "weight_decay": PROXY_RANGES["weight_decay"],
    "label_smoothing": PROXY_RANGES["label_smoothing"],
    "warmup_epochs": PROXY_RANGES["warmup_epochs"],
    "seed": bounds.SEED,
}

# How a value error begins: "proxy: " for a ProxyConfig made in code, the YAML path when read by from_dict.
_WHERE: contextvars.ContextVar[str] = contextvars.ContextVar("proxy_config_where", default="proxy: ")


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
        for name in ("epochs", "steps", "seconds"):
            self._check(name)
        if self.epochs is None and self.steps is None and self.seconds is None:
            object.__setattr__(self, "epochs", DEFAULT_EPOCHS)
        for name in PROXY_RANGES:
            self._check(name)
        for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("device", DEVICES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{_WHERE.get()}{name}: expected one of {list(allowed)}, got {getattr(self, name)!r}")
        for name in ("channels_last", "amp"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{_WHERE.get()}{name}: expected true or false, got {getattr(self, name)!r}")

    def _check(self, name: str) -> None:
        try:
            PROXY_RANGES[name].check(getattr(self, name), name)
        except ValueError as exc:
            raise ConfigError(f"{_WHERE.get()}{exc}") from None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "proxy") -> ProxyConfig:
        """Build from a YAML mapping; errors name ``where`` (the file and YAML path) and the allowed keys.

        A bad value reads ``{where}.{key}: expected ..., got ...``.
        """
        data = dataclass_fields(cls, data, where)
        token = _WHERE.set(f"{where}.")  # errors read "file.yaml: proxy.key: problem"
        try:
            return cls(**data)
        finally:
            _WHERE.reset(token)

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


@dataclass(frozen=True)
class SupernetTraining:
    """How to train a supernet (all of it must match for ``--resume``); the supernet trainer is in
    :mod:`mixnas.evaluators.supernet.train`. The numbers are checked against :data:`SUPERNET_RANGES`, the rest by
    the proxy trainer's :class:`ProxyConfig`.

    Attributes:
        epochs: whole passes over the training split.
        batch_size: images per step (each member of the sandwich sees the same batch).
        random_subnets: uniformly sampled members per step besides the largest and the smallest.
        distill: the sampled members learn from the largest member's soft predictions (in-place distillation).
        lr: peak SGD learning rate (None = the proxy trainer's 0.1 * batch_size / 64).
        weight_decay, label_smoothing, warmup_epochs: as the proxy trainer's.
        seed: initial weights, data order, augmentation, dropout and the subnet sampler.
        device: ``auto``, ``cpu`` or ``cuda``.
    """

    epochs: int = 10
    batch_size: int = 64
    random_subnets: int = 2
    distill: bool = True
    lr: float | None = None
    weight_decay: float = 5e-5
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for name, rng in SUPERNET_RANGES.items():
            try:
                rng.check(getattr(self, name), name)
            except ValueError as exc:
                raise ConfigError(f"supernet training: {exc}") from None
        if not isinstance(self.distill, bool):
            raise ConfigError(f"supernet training: distill: expected true or false, got {self.distill!r}")
        self.proxy_config()  # the proxy trainer checks the rest

    def proxy_config(self) -> ProxyConfig:
        return ProxyConfig(epochs=self.epochs, batch_size=self.batch_size, optimizer="sgd", lr=self.lr,
                           weight_decay=self.weight_decay, label_smoothing=self.label_smoothing,
                           warmup_epochs=self.warmup_epochs, device=self.device)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def trial_seed(seed: int, arch_id: str) -> int:
    """The seed of one trial: a hash of the experiment seed and the architecture's content id (63 bits)."""
    digest = hashlib.sha256(f"{int(seed)}:{arch_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)

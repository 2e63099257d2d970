"""Training recipes as frozen records.

``mnasnet`` is the recipe MnasNet and MixNet were trained with on ImageNet (Tan et al. 2019, "MnasNet:
Platform-Aware Neural Architecture Search for Mobile", sec. 6; Tan & Le 2019, "MixConv: Mixed Depthwise
Convolutional Kernels", sec. 5 and its reference TPU code): RMSProp (decay 0.9, momentum 0.9, epsilon 1e-3, TF
semantics), learning rate 0.016 per 256 images scaled linearly to the batch, a 5-epoch linear warm-up, then 0.97
every 2.4 epochs, weight decay 1e-5, label smoothing 0.1, drop-connect 0.2, the architecture's dropout and an
exponential moving average of the weights (0.9999 per step, TF's ``num_updates`` warm-up) that is evaluated and
saved. ``sgd-cosine`` is the common alternative: Nesterov SGD at 0.1 per 256 images (Goyal et al. 2017, linear
scaling), cosine decay to zero (Loshchilov & Hutter 2017, "SGDR"), weight decay 4e-5 (MobileNetV2), no EMA.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mixnas.errors import ConfigError
from mixnas.training.config import ProxyConfig


@dataclass(frozen=True)
class Recipe:
    """How to train one architecture fully.

    Attributes:
        name: the recipe's registry name.
        optimizer: ``rmsprop`` (TF semantics) or ``sgd`` (Nesterov).
        lr_per_256: peak learning rate for a batch of 256 images; scaled linearly to the batch size.
        momentum, rmsprop_decay, rmsprop_eps: optimizer constants.
        weight_decay: L2 on convolution and dense weights.
        schedule: ``exponential`` (``decay_rate`` every ``decay_epochs``, staircase) or ``cosine``.
        warmup_epochs: linear warm-up (capped at a third of the run, as the proxy trainer does).
        label_smoothing: cross-entropy label smoothing.
        drop_connect_rate: stochastic depth of the last block (scaled linearly from 0).
        dropout_rate: classifier dropout; None = the architecture's.
        ema_decay: decay of the weight average per step, or None for no average (the raw weights are evaluated).
    """

    name: str
    optimizer: str
    lr_per_256: float
    momentum: float = 0.9
    rmsprop_decay: float = 0.9
    rmsprop_eps: float = 1e-3
    weight_decay: float = 1e-5
    schedule: str = "exponential"
    warmup_epochs: float = 5.0
    decay_epochs: float = 2.4
    decay_rate: float = 0.97
    label_smoothing: float = 0.1
    drop_connect_rate: float = 0.2
    dropout_rate: float | None = None
    ema_decay: float | None = 0.9999

    def lr(self, batch_size: int) -> float:
        return self.lr_per_256 * batch_size / 256

    def proxy_config(self, *, batch_size: int, epochs: float, device: str, amp: bool = True) -> ProxyConfig:
        """The same settings as a :class:`ProxyConfig`, so the proxy trainer's optimizer and schedule are reused."""
        return ProxyConfig(
            epochs=epochs, batch_size=batch_size, optimizer=self.optimizer, lr=self.lr(batch_size),
            momentum=self.momentum, weight_decay=self.weight_decay, rmsprop_decay=self.rmsprop_decay,
            rmsprop_eps=self.rmsprop_eps, schedule=self.schedule, warmup_epochs=self.warmup_epochs,
            decay_epochs=self.decay_epochs, decay_rate=self.decay_rate, label_smoothing=self.label_smoothing,
            dropout_rate=self.dropout_rate, drop_connect_rate=self.drop_connect_rate, device=device, amp=amp,
            bn_recalibration=0,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


RECIPES: dict[str, Recipe] = {
    "mnasnet": Recipe(name="mnasnet", optimizer="rmsprop", lr_per_256=0.016),
    "sgd-cosine": Recipe(name="sgd-cosine", optimizer="sgd", lr_per_256=0.1, weight_decay=4e-5, schedule="cosine",
                         ema_decay=None),
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ConfigError(f"recipe: expected one of {sorted(RECIPES)}, got {name!r}") from None

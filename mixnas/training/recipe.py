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

from dataclasses import dataclass
from typing import Any

from mixnas.errors import ConfigError
from mixnas.training.config import ProxyConfig


# The optimizer, schedule and regularisation settings a recipe fixes (kept in a ProxyConfig, the training kit's one
# record of them), in the order run.json lists them.
SETTINGS = ("momentum", "rmsprop_decay", "rmsprop_eps", "weight_decay", "schedule", "warmup_epochs", "decay_epochs",
            "decay_rate", "label_smoothing", "drop_connect_rate", "dropout_rate")


@dataclass(frozen=True)
class Recipe:
    """How to train one architecture fully.

    Attributes:
        name: the recipe's registry name.
        lr_per_256: peak learning rate for a batch of 256 images; scaled linearly to the batch size.
        settings: the optimizer (``rmsprop``, TF semantics, or ``sgd``, Nesterov), its constants, the schedule
            (``exponential``: ``decay_rate`` every ``decay_epochs``, staircase; or ``cosine``), the warm-up (capped
            at a third of the run, as the proxy trainer does), weight decay, label smoothing, drop-connect and
            dropout (None = the architecture's), as the training kit's :class:`ProxyConfig`; its budget, batch
            size, learning rate and device are set per run (:meth:`proxy_config`).
        ema_decay: decay of the weight average per step, or None for no average (the raw weights are evaluated).
    """

    name: str
    lr_per_256: float
    settings: ProxyConfig
    ema_decay: float | None = 0.9999

    def lr(self, batch_size: int) -> float:
        return self.lr_per_256 * batch_size / 256

    def proxy_config(self, *, batch_size: int, epochs: float, device: str, amp: bool = True) -> ProxyConfig:
        """The settings of a run with this recipe, for the proxy trainer's optimizer and schedule."""
        return self.settings.replace(epochs=epochs, batch_size=batch_size, lr=self.lr(batch_size), device=device,
                                     amp=amp, bn_recalibration=0)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as ``run.json`` records it (one flat mapping)."""
        return {"name": self.name, "optimizer": self.settings.optimizer, "lr_per_256": self.lr_per_256,
                **{key: getattr(self.settings, key) for key in SETTINGS}, "ema_decay": self.ema_decay}


RECIPES: dict[str, Recipe] = {
    "mnasnet": Recipe("mnasnet", 0.016, ProxyConfig(optimizer="rmsprop", weight_decay=1e-5, schedule="exponential",
                                                    warmup_epochs=5.0, drop_connect_rate=0.2)),
    "sgd-cosine": Recipe("sgd-cosine", 0.1, ProxyConfig(optimizer="sgd", weight_decay=4e-5, schedule="cosine",
                                                        warmup_epochs=5.0, drop_connect_rate=0.2), ema_decay=None),
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ConfigError(f"recipe: expected one of {sorted(RECIPES)}, got {name!r}") from None

"""The optimizers and the learning-rate schedule of every training here: SGD with Nesterov momentum, RMSProp
with TensorFlow 1 semantics (as MnasNet and MixNet train), weight decay on weights only, linear warm-up then
cosine or staircase exponential decay."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mixnas.training.config import ProxyConfig


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

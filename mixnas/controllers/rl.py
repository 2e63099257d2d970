"""MnasNet's reinforcement-learning controller: an autoregressive LSTM policy trained with PPO.

Tan, Chen, Pang, Vasudevan, Sandler, Howard & Le, "MnasNet: Platform-Aware Neural Architecture Search for Mobile",
CVPR 2019, §4.2: a recurrent network maps an architecture to a sequence of tokens, one per decision, and is trained
with Proximal Policy Optimization (Schulman et al. 2017) to maximise the expected reward.

The policy here, for a space with dimensions ``d = 1..D`` of ``k_d`` choices each::

    x_1 = embed(<start>);  h_d = LSTMCell(x_d, h_{d-1});  p(a_d | a_<d) = softmax(head_d(h_d));  x_{d+1} = embed(a_d)

Each dimension has its own choice embeddings and its own output head. The heads start at zero, so the first
suggestions are uniform. Training:

* ``ask`` samples an encoding (ancestral sampling with a seeded ``torch.Generator``) and stores its log-probability
  under the policy *of that moment*; a suggestion may be told after the policy has moved on (asynchronous search),
  which the importance ratio of PPO accounts for.
* ``tell`` turns the result into a scalar reward and buffers it. Every ``batch_size`` rewards, the advantage
  ``A = (R - b) / s`` uses a moving-average baseline ``b`` (NASNet / MnasNet) and a moving average ``s`` of the
  advantage's magnitude (so rewards in percent and in fractions train alike); then ``ppo_epochs`` Adam steps
  minimise ``-mean(min(r A, clip(r, 1 - eps, 1 + eps) A)) - entropy_weight * entropy`` with
  ``r = exp(log p_new - log p_old)``.
* Failed results give no reward and are dropped; pruned results with values count with the values given.

Several objectives need a scalarisation: pass ``weights`` (one per objective name); the reward is the weighted sum
of the values with minimised objectives negated. With one objective the reward is its value (negated for ``min``).
For MnasNet's ``ACC * (LAT / T) ** w`` reward, compute it in the evaluator and search a single ``reward`` objective.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mixnas.controllers.base import (
    Controller,
    Encoding,
    SpaceLike,
    Told,
    check_option,
    derive_seeds,
)
from mixnas import bounds
from mixnas.errors import ControllerError


_MAX_LOG_RATIO = 10.0
# A converged policy keeps proposing what it has seen; each rejected proposal of one ask raises the sampling
# temperature by this much, so the retries explore the policy's next-best alternatives before the base class
# falls back to uniform sampling. The stored log-probability is always the untempered one.
_RETRY_HEAT = 0.25


class LSTMPolicy(nn.Module):
    """Autoregressive categorical policy over the dimensions of a space (one LSTM step per dimension)."""

    def __init__(self, sizes: Sequence[int], *, hidden_size: int, generator: torch.Generator) -> None:
        super().__init__()
        self.sizes = tuple(int(k) for k in sizes)
        offsets = [0]
        for k in self.sizes[:-1]:
            offsets.append(offsets[-1] + k)
        self.offsets = tuple(1 + o for o in offsets)  # token 0 is the start token
        self.embedding = nn.Embedding(1 + sum(self.sizes), hidden_size)
        self.cell = nn.LSTMCell(hidden_size, hidden_size)
        self.heads = nn.ModuleList(nn.Linear(hidden_size, k) for k in self.sizes)
        bound = 1.0 / math.sqrt(hidden_size)
        with torch.no_grad():  # explicit init from the controller's generator, never the global RNG
            self.embedding.weight.uniform_(-bound, bound, generator=generator)
            for p in self.cell.parameters():
                p.uniform_(-bound, bound, generator=generator)
            for head in self.heads:
                head.weight.zero_()
                head.bias.zero_()

    def sample(self, generator: torch.Generator, temperature: float = 1.0) -> Encoding:
        """Draw one encoding, dimension by dimension, from the policy's logits divided by ``temperature``."""
        with torch.no_grad():
            token = torch.zeros(1, dtype=torch.long)
            state = None
            choices = []
            for d, head in enumerate(self.heads):
                state = self.cell(self.embedding(token), state)
                probs = torch.softmax(head(state[0]) / temperature, dim=-1)
                choice = int(torch.multinomial(probs, 1, generator=generator).item())
                choices.append(choice)
                token = torch.tensor([self.offsets[d] + choice])
        return tuple(choices)

    def evaluate(self, encodings: Sequence[Encoding]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability and entropy (summed over dimensions) of each encoding, teacher-forced, as one batch."""
        actions = torch.tensor([list(e) for e in encodings], dtype=torch.long)
        token = torch.zeros(len(encodings), dtype=torch.long)
        state = None
        log_prob = torch.zeros(len(encodings))
        entropy = torch.zeros(len(encodings))
        for d, head in enumerate(self.heads):
            state = self.cell(self.embedding(token), state)
            log_probs = torch.log_softmax(head(state[0]), dim=-1)
            log_prob = log_prob + log_probs.gather(1, actions[:, d : d + 1]).squeeze(1)
            entropy = entropy - (log_probs.exp() * log_probs).sum(dim=-1)
            token = actions[:, d] + self.offsets[d]
        return log_prob, entropy


class RLController(Controller):
    """MnasNet-style controller: LSTM policy, PPO with clipped objective, entropy bonus, moving-average baseline.

    Args:
        space: The search space (no constraints are learnt; infeasible samples are redrawn by the base class).
        objectives: Objective names and directions; more than one needs ``weights``.
        seed: Seed of the policy initialisation and of sampling (a ``torch.Generator``).
        hidden_size: Width of the embeddings and of the LSTM cell.
        lr: Adam learning rate.
        batch_size: Results per PPO update (K).
        ppo_epochs: Adam steps over each batch.
        clip: PPO clipping range epsilon.
        entropy_weight: Weight of the entropy bonus (keeps the policy exploring).
        baseline_decay: Decay of the moving averages of reward and advantage magnitude.
        weights: Scalarisation weights by objective name, needed with several objectives.
        avoid_duplicates: Do not repeat an encoding until the space is exhausted.
        max_retries: Re-draws from the policy when it repeats itself, before the base class's fallback.
    """

    type_name = "rl"
    option_ranges = {
        **Controller.option_ranges,
        "hidden_size": bounds.integer(1, 4096),  # the LSTM's weights grow with its square
        "lr": bounds.number(0, 10, low_open=True),
        "batch_size": bounds.integer(1, 10_000),
        "ppo_epochs": bounds.integer(1, 1000),
        "clip": bounds.number(0, 10, low_open=True),
        "entropy_weight": bounds.number(0, 100),
        "baseline_decay": bounds.number(0, 0.999999),
        "weights": bounds.number(0, 1e6),  # each objective's weight
    }

    def __init__(
        self,
        space: SpaceLike,
        *,
        hidden_size: int = 32,
        lr: float = 0.005,
        batch_size: int = 5,
        ppo_epochs: int = 4,
        clip: float = 0.2,
        entropy_weight: float = 0.01,
        baseline_decay: float = 0.9,
        weights: Mapping[str, float] | None = None,
        **base: Any,
    ) -> None:
        super().__init__(space, **base)
        self.hidden_size = self._option("hidden_size", hidden_size)
        self.lr = self._option("lr", lr)
        self.batch_size = self._option("batch_size", batch_size)
        self.ppo_epochs = self._option("ppo_epochs", ppo_epochs)
        self.clip = self._option("clip", clip)
        self.entropy_weight = self._option("entropy_weight", entropy_weight)
        self.baseline_decay = self._option("baseline_decay", baseline_decay)
        self.weights = self._check_weights(weights)
        self._generator = torch.Generator().manual_seed(derive_seeds(self.seed, 2)[1])
        self.policy = LSTMPolicy(self._sizes, hidden_size=self.hidden_size, generator=self._generator)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.lr)
        self._old_log_probs: dict[str, float] = {}  # suggestion id -> log-probability when asked
        self._buffer: list[tuple[Encoding, float, float]] = []  # (encoding, old log-probability, reward)
        self._baseline: float | None = None
        self._scale: float | None = None  # moving average of (R - b)^2
        self._n_updates = 0
        self._rejected = 0  # proposals rejected during the current ask (always 0 between asks)

    def _check_weights(self, weights: Mapping[str, float] | None) -> dict[str, float] | None:
        names = [o.name for o in self.objectives]
        if weights is None:
            if len(names) > 1:
                raise ControllerError(
                    f"rl: option weights is needed with several objectives {names}; "
                    "PPO learns from one scalar reward (e.g. weights: {name: weight, ...})"
                )
            return None
        if not isinstance(weights, Mapping) or sorted(weights) != sorted(names):
            raise ControllerError(f"rl: option weights must give one weight per objective {names}, got {weights!r}")
        return {n: check_option("rl", f"weights.{n}", weights[n], self.option_ranges["weights"]) for n in names}

    # ------------------------------------------------------------------ algorithm

    def reward(self, values: Sequence[float]) -> float:
        """Scalar reward of objective values (minimised objectives negated, weighted if several)."""
        fitness = self.fitness(values)
        if self.weights is None:
            return fitness[0]
        return sum(self.weights[o.name] * f for o, f in zip(self.objectives, fitness))

    def _propose(self) -> Encoding:
        return self.policy.sample(self._generator, temperature=1.0 + _RETRY_HEAT * self._rejected)

    def _discard(self, encoding: Encoding) -> None:
        self._rejected += 1

    def _on_ask(self, suggestion_id: str, encoding: Encoding) -> None:
        self._rejected = 0
        with torch.no_grad():
            log_prob, _ = self.policy.evaluate([encoding])
        self._old_log_probs[suggestion_id] = float(log_prob[0])

    def _observe(self, told: Told) -> None:
        old_log_prob = self._old_log_probs.pop(told.suggestion_id)
        if told.values is None:
            return
        self._buffer.append((told.encoding, old_log_prob, self.reward(told.values)))
        if len(self._buffer) >= self.batch_size:
            self._update()

    def _advantages(self, rewards: list[float]) -> list[float]:
        """Rewards minus the moving-average baseline, divided by the moving RMS of that difference."""
        if self._baseline is None or self._scale is None:  # first batch: start the averages at its statistics
            self._baseline = sum(rewards) / len(rewards)
            self._scale = sum((r - self._baseline) ** 2 for r in rewards) / len(rewards)
        baseline, scale, decay = self._baseline, self._scale, self.baseline_decay
        advantages = []
        for r in rewards:
            raw = r - baseline
            scale = decay * scale + (1 - decay) * raw * raw
            advantages.append(raw / math.sqrt(scale) if scale > 0 else 0.0)
            baseline = decay * baseline + (1 - decay) * r
        self._baseline, self._scale = baseline, scale
        return advantages

    def _update(self) -> None:
        encodings = [b[0] for b in self._buffer]
        old_log_probs = torch.tensor([b[1] for b in self._buffer])
        advantages = torch.tensor(self._advantages([b[2] for b in self._buffer]))
        self._buffer = []
        for _ in range(self.ppo_epochs):
            log_probs, entropy = self.policy.evaluate(encodings)
            # a suggestion asked long ago (or a fallback encoding) can have a tiny old probability; clamping the
            # log-ratio keeps exp() finite, and beyond the clip range the clamped ratio only stops its gradient
            ratio = torch.exp(torch.clamp(log_probs - old_log_probs, -_MAX_LOG_RATIO, _MAX_LOG_RATIO))
            clipped = torch.clamp(ratio, 1 - self.clip, 1 + self.clip)
            loss = -torch.min(ratio * advantages, clipped * advantages).mean() - self.entropy_weight * entropy.mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        self._n_updates += 1

    # ------------------------------------------------------------------ state

    def _options(self) -> dict[str, Any]:
        return {
            "hidden_size": self.hidden_size,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "ppo_epochs": self.ppo_epochs,
            "clip": self.clip,
            "entropy_weight": self.entropy_weight,
            "baseline_decay": self.baseline_decay,
            "weights": self.weights,
        }

    def _state(self) -> dict[str, Any]:
        return {
            "generator": self._generator.get_state().tolist(),
            "policy": {name: _tensor_to_json(t) for name, t in self.policy.state_dict().items()},
            "optimizer": _to_json(self.optimizer.state_dict()),
            "old_log_probs": dict(self._old_log_probs),
            "buffer": [[list(enc), lp, r] for enc, lp, r in self._buffer],
            "baseline": self._baseline,
            "scale": self._scale,
            "n_updates": self._n_updates,
        }

    def _load_state(self, state: Mapping[str, Any]) -> None:
        try:
            self._generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
            self.policy.load_state_dict({name: _tensor_from_json(v) for name, v in state["policy"].items()})
            self.optimizer.load_state_dict(_from_json(state["optimizer"]))
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise ControllerError(f"rl: cannot restore the policy or optimiser from the state: {exc}") from exc
        self._old_log_probs = {str(k): float(v) for k, v in state["old_log_probs"].items()}
        self._buffer = [(tuple(int(i) for i in enc), float(lp), float(r)) for enc, lp, r in state["buffer"]]
        self._baseline = None if state["baseline"] is None else float(state["baseline"])
        self._scale = None if state["scale"] is None else float(state["scale"])
        self._n_updates = int(state["n_updates"])


def _tensor_to_json(t: torch.Tensor) -> dict[str, Any]:
    return {"tensor": t.detach().cpu().tolist(), "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}


def _tensor_from_json(d: Mapping[str, Any]) -> torch.Tensor:
    return torch.tensor(d["tensor"], dtype=getattr(torch, d["dtype"])).reshape(d["shape"])


def _to_json(value: Any) -> Any:
    """Optimiser state (nested dicts / lists / tensors) as JSON-able data; integer dict keys become strings."""
    if isinstance(value, torch.Tensor):
        return _tensor_to_json(value)
    if isinstance(value, Mapping):
        return {"dict": [[k, _to_json(v)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, Mapping):
        if "tensor" in value:
            return _tensor_from_json(value)
        return {k: _from_json(v) for k, v in value["dict"]}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value

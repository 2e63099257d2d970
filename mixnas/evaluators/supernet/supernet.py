"""A weight-sharing MixConv supernet of a stage space: every member is a slice of one set of weights.

Single-path one-shot NAS (Guo et al., "Single Path One-Shot NAS", ECCV 2020; Stamoulis et al., "Single-Path NAS",
2019; Cai et al., "Once-for-All", ICLR 2020) trains one network whose sub-networks are the candidates. Here every
decision of a MixNet stage space (Tan & Le, "MixConv", BMVC 2019) is a slice of the largest layer at its position
(:mod:`mixnas.evaluators.supernet.layout`):

* **MixConv kernels**: one depthwise kernel per expanded channel, of the largest size any choice gives that
  channel; a choice's k x k kernel for a channel is the centre crop. MixConv's equal (or exponential) split of the
  candidate's expanded width decides which channels get which size, exactly as in the stand-alone layer.
* **Widths and expansion**: the first C channels (input, expanded, output), of every weight and batch norm.
* **Grouped 1x1**: a block-diagonal view of the dense largest weight (group g uses rows / columns of its split).
* **Squeeze-and-excite, swish, skip**: switches; SE weights are sized for the largest widths and sliced.
* **Depth**: a stage's later layers are skipped (stride-1 identity repeats).
* **Stem, head, classifier**: shared, sliced to the candidate's stem and head widths.

Batch norms have the largest width and are sliced. Their running statistics mix every sampled subnet, so an
evaluation recomputes them for the subnet (:class:`~mixnas.evaluators.supernet.evaluator.SupernetEvaluator`).
:meth:`Supernet.extract` gives the stand-alone :func:`mixnas.models.build` network of a candidate with its slice of
the weights; ``tests/test_supernet.py`` checks that its forward equals :meth:`Supernet.forward` on random members.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mixnas.errors import ConfigError
from mixnas.evaluators.supernet.layout import (PositionMax, SupernetLayout, extreme_encoding, in_space_form,
                                               layer_positions, stage_depths, supernet_layout)
from mixnas.models import MixNet, build
from mixnas.search_space.arch import Architecture, LayerSpec

Candidate = Architecture | Sequence[int]
Tensors = dict[str, torch.Tensor]


def _ranges(splits: Sequence[int]) -> list[tuple[int, int]]:
    out, lo = [], 0
    for size in splits:
        out.append((lo, lo + size))
        lo += size
    return out


def grouped_weights(weight: torch.Tensor, in_splits: Sequence[int], out_splits: Sequence[int]) -> list[torch.Tensor]:
    """The block-diagonal blocks of a dense 1x1 weight: group g's (out_g, in_g) block, as GroupedConv1x1 holds."""
    return [weight[o0:o1, i0:i1] for (i0, i1), (o0, o1) in zip(_ranges(in_splits), _ranges(out_splits))]


def _grouped_conv(x: torch.Tensor, weights: list[torch.Tensor], in_splits: Sequence[int]) -> torch.Tensor:
    if len(weights) == 1:
        return F.conv2d(x, weights[0])
    chunks = torch.split(x, list(in_splits), dim=1)
    return torch.cat([F.conv2d(c, w) for c, w in zip(chunks, weights)], dim=1)


def _act(x: torch.Tensor, swish: bool) -> torch.Tensor:
    return F.silu(x) if swish else F.relu(x)


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d, training: bool) -> torch.Tensor:
    """Batch norm of the first ``x.shape[1]`` channels of a max-width batch norm.

    In training the running statistics of those channels are updated in place (they mix every subnet sampled;
    an evaluation recalibrates them for its subnet).
    """
    c = x.shape[1]
    return F.batch_norm(x, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c], training,
                        bn.momentum, bn.eps)


def bn_state(bn: nn.BatchNorm2d, channels: int, prefix: str) -> Tensors:
    """The state of a ``channels``-wide batch norm sliced from a wider one."""
    return {f"{prefix}weight": bn.weight[:channels], f"{prefix}bias": bn.bias[:channels],
            f"{prefix}running_mean": bn.running_mean[:channels], f"{prefix}running_var": bn.running_var[:channels],
            f"{prefix}num_batches_tracked": bn.num_batches_tracked}


class SuperLayer(nn.Module):
    """The largest MBConv layer at one position; :meth:`forward` runs any member's layer as a slice of it."""

    def __init__(self, pos: PositionMax, *, bn_momentum: float, bn_eps: float) -> None:
        super().__init__()
        self.pos = pos
        mid, k = pos.mid_channels, pos.kernel

        def bn(c: int) -> nn.BatchNorm2d:
            return nn.BatchNorm2d(c, momentum=bn_momentum, eps=bn_eps)

        self.expand_weight = nn.Parameter(torch.empty(mid, pos.in_channels, 1, 1)) if pos.has_expand else None
        self.expand_bn = bn(mid) if pos.has_expand else None
        self.dw_weight = nn.Parameter(torch.empty(mid, 1, k, k))
        self.dw_bn = bn(mid)
        if pos.se_channels:
            self.se_reduce_weight = nn.Parameter(torch.empty(pos.se_channels, mid, 1, 1))
            self.se_reduce_bias = nn.Parameter(torch.zeros(pos.se_channels))
            self.se_expand_weight = nn.Parameter(torch.empty(mid, pos.se_channels, 1, 1))
            self.se_expand_bias = nn.Parameter(torch.zeros(mid))
        self.project_weight = nn.Parameter(torch.empty(pos.out_channels, mid, 1, 1))
        self.project_bn = bn(pos.out_channels)

    def check(self, spec: LayerSpec) -> None:
        """Refuse a layer that does not fit this position (a candidate of another space)."""
        p = self.pos
        fits = (spec.in_channels <= p.in_channels and spec.mid_channels <= p.mid_channels
                and spec.out_channels <= p.out_channels and max(spec.kernel_sizes) <= p.kernel
                and spec.se_channels <= p.se_channels and spec.stride == p.stride
                and (p.has_expand or not spec.has_expand) and set(spec.dilations) == {1})
        if not fits:
            raise ConfigError(f"supernet: layer {spec.index} ({spec.in_channels}->{spec.mid_channels}->"
                              f"{spec.out_channels}, kernels {list(spec.kernel_sizes)}) does not fit stage "
                              f"{p.stage} layer {p.index} of the supernet")

    def depthwise_weights(self, spec: LayerSpec) -> list[torch.Tensor]:
        """Per MixConv group, the centre crop of its channels' kernels."""
        out = []
        for (c0, c1), k in zip(_ranges(spec.dw_splits), spec.kernel_sizes):
            lo = (self.pos.kernel - k) // 2
            out.append(self.dw_weight[c0:c1, :, lo : lo + k, lo : lo + k])
        return out

    def _mixconv(self, x: torch.Tensor, spec: LayerSpec) -> torch.Tensor:
        weights = self.depthwise_weights(spec)
        chunks = torch.split(x, list(spec.dw_splits), dim=1) if len(weights) > 1 else (x,)
        outs = [F.conv2d(c, w, stride=spec.stride, padding=w.shape[-1] // 2, groups=w.shape[0])
                for c, w in zip(chunks, weights)]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)

    def _se(self, x: torch.Tensor, spec: LayerSpec) -> torch.Tensor:
        mid, se = spec.mid_channels, spec.se_channels
        scale = x.mean((2, 3), keepdim=True)
        scale = _act(F.conv2d(scale, self.se_reduce_weight[:se, :mid], self.se_reduce_bias[:se]), spec.swish)
        scale = F.conv2d(scale, self.se_expand_weight[:mid, :se], self.se_expand_bias[:mid])
        return x * torch.sigmoid(scale)

    def forward(self, x: torch.Tensor, spec: LayerSpec) -> torch.Tensor:
        out = x
        if spec.has_expand:
            weights = grouped_weights(self.expand_weight, *spec.expand_splits)
            out = _act(_bn(_grouped_conv(out, weights, spec.expand_splits[0]), self.expand_bn, self.training),
                       spec.swish)
        out = _act(_bn(self._mixconv(out, spec), self.dw_bn, self.training), spec.swish)
        if spec.se_channels:
            out = self._se(out, spec)
        weights = grouped_weights(self.project_weight, *spec.project_splits)
        out = _bn(_grouped_conv(out, weights, spec.project_splits[0]), self.project_bn, self.training)
        return out + x if spec.has_skip else out

    def state_of(self, spec: LayerSpec) -> Tensors:
        """The state dict of the stand-alone :class:`~mixnas.models.MBConvBlock` of ``spec``."""
        state: Tensors = {}
        if spec.has_expand:
            for g, w in enumerate(grouped_weights(self.expand_weight, *spec.expand_splits)):
                state[f"expand.0.convs.{g}.weight"] = w
            state.update(bn_state(self.expand_bn, spec.mid_channels, "expand.1."))
        for g, w in enumerate(self.depthwise_weights(spec)):
            state[f"depthwise.0.convs.{g}.weight"] = w
        state.update(bn_state(self.dw_bn, spec.mid_channels, "depthwise.1."))
        if spec.se_channels:
            mid, se = spec.mid_channels, spec.se_channels
            state.update({"se.reduce.weight": self.se_reduce_weight[:se, :mid], "se.reduce.bias": self.se_reduce_bias[:se],
                          "se.expand.weight": self.se_expand_weight[:mid, :se], "se.expand.bias": self.se_expand_bias[:mid]})
        for g, w in enumerate(grouped_weights(self.project_weight, *spec.project_splits)):
            state[f"project.0.convs.{g}.weight"] = w
        state.update(bn_state(self.project_bn, spec.out_channels, "project.1."))
        return state

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """TF initialisation of the largest layer (``mixnas.models.init_tf_weights``); each channel's depthwise
        kernel has the fan-out of the largest kernel it is used with, and zeros outside it (never used)."""
        for weight in (self.expand_weight, self.project_weight):
            if weight is not None:
                nn.init.normal_(weight, 0.0, math.sqrt(2.0 / weight.shape[0]), generator=generator)
        self.dw_weight.zero_()
        big = self.pos.kernel
        for c, k in enumerate(self.pos.channel_kernels):
            lo = (big - k) // 2
            self.dw_weight[c, :, lo : lo + k, lo : lo + k].normal_(0.0, math.sqrt(2.0 / (k * k)), generator=generator)
        if self.pos.se_channels:
            nn.init.normal_(self.se_reduce_weight, 0.0, math.sqrt(2.0 / self.pos.se_channels), generator=generator)
            nn.init.normal_(self.se_expand_weight, 0.0, math.sqrt(2.0 / self.pos.mid_channels), generator=generator)
            self.se_reduce_bias.zero_()
            self.se_expand_bias.zero_()


class Supernet(nn.Module):
    """The weight-sharing supernet of a stage space.

    Example::

        space = load_space("tiny")
        net = Supernet(space, num_classes=10)
        logits = net(x, space.sample(rng))          # an encoding or an Architecture of the space
        model = net.extract(space.decode(enc))       # mixnas.models.build(arch) with the subnet's weights

    Args:
        space: a stage space (searchable ``width_multiplier`` / ``depth_multiplier`` and dilated kernels are
            refused with a ConfigError).
        num_classes: classifier outputs; default the space's ``num_classes``.
        generator: random source of the initial weights.
    """

    def __init__(self, space: Any, num_classes: int | None = None, *,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.space = space
        self._extremes: dict[bool, tuple[int, ...]] = {}
        self.layout: SupernetLayout = supernet_layout(space, num_classes)
        lay = self.layout

        def bn(c: int) -> nn.BatchNorm2d:
            return nn.BatchNorm2d(c, momentum=lay.bn_momentum, eps=lay.bn_epsilon)

        self.stem_weight = nn.Parameter(torch.empty(lay.stem_channels, 3, 3, 3))
        self.stem_bn = bn(lay.stem_channels)
        self.layers = nn.ModuleList(SuperLayer(p, bn_momentum=lay.bn_momentum, bn_eps=lay.bn_epsilon)
                                    for p in lay.positions)
        self.head_weight = nn.Parameter(torch.empty(lay.head_channels, lay.final_channels, 1, 1))
        self.head_bn = bn(lay.head_channels)
        self.classifier = nn.Linear(lay.head_channels, lay.num_classes)
        self.reset_parameters(generator)

    @property
    def num_classes(self) -> int:
        return self.layout.num_classes

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        nn.init.normal_(self.stem_weight, 0.0, math.sqrt(2.0 / (9 * self.layout.stem_channels)), generator=generator)
        nn.init.normal_(self.head_weight, 0.0, math.sqrt(2.0 / self.layout.head_channels), generator=generator)
        bound = 1.0 / math.sqrt(self.layout.num_classes)
        nn.init.uniform_(self.classifier.weight, -bound, bound, generator=generator)
        nn.init.zeros_(self.classifier.bias)
        for layer in self.layers:
            layer.reset_parameters(generator)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()

    # --- candidates -------------------------------------------------------------------------------------------
    def subnet(self, candidate: Candidate) -> tuple[Architecture, tuple[int, ...]]:
        """(the candidate's architecture with this supernet's classes, the position of each of its layers)."""
        if isinstance(candidate, Architecture):
            arch = candidate
            encoding = self.space.encode(in_space_form(self.space, candidate))
        else:
            encoding = tuple(int(i) for i in candidate)
            arch = self.space.decode(encoding)
        arch = arch.replace(num_classes=self.num_classes)
        layers = arch.layers()
        positions = layer_positions(self.layout, stage_depths(self.space, encoding), layers)
        for spec, p in zip(layers, positions):
            self.layers[p].check(spec)
        if arch.stem_channels > self.layout.stem_channels or arch.head_channels > self.layout.head_channels:
            raise ConfigError(f"supernet: stem / head widths {arch.stem_channels} / {arch.head_channels} exceed the "
                              f"supernet's {self.layout.stem_channels} / {self.layout.head_channels}")
        return arch, positions

    def largest(self) -> tuple[int, ...]:
        """The encoding of the largest member (most MACs, then params), for the sandwich rule."""
        return self._extreme(True)

    def smallest(self) -> tuple[int, ...]:
        """The encoding of the smallest member (fewest MACs, then params)."""
        return self._extreme(False)

    def _extreme(self, largest: bool) -> tuple[int, ...]:
        found = self._extremes.get(largest)
        if found is None:
            found = self._extremes[largest] = extreme_encoding(self.space, largest)
        return found

    # --- forward ----------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, candidate: Candidate) -> torch.Tensor:
        """Logits of the candidate (an encoding or an architecture of the space) on ``x``."""
        arch, positions = self.subnet(candidate)
        return self.run(x, arch, positions)

    def run(self, x: torch.Tensor, arch: Architecture, positions: Sequence[int]) -> torch.Tensor:
        """Forward of an already-resolved subnet (:meth:`subnet`), for a training loop that reuses it."""
        out = F.conv2d(x, self.stem_weight[: arch.stem_channels], stride=2, padding=1)
        out = F.relu(_bn(out, self.stem_bn, self.training))
        for spec, p in zip(arch.layers(), positions):
            out = self.layers[p](out, spec)
        out = F.conv2d(out, self.head_weight[: arch.head_channels, : arch.final_channels])
        out = F.relu(_bn(out, self.head_bn, self.training))
        out = F.dropout(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1), arch.global_params.dropout_rate,
                        self.training)
        return F.linear(out, self.classifier.weight[:, : arch.head_channels], self.classifier.bias)

    # --- extraction -------------------------------------------------------------------------------------------
    def subnet_state(self, arch: Architecture, positions: Sequence[int]) -> Tensors:
        """The state dict of ``build(arch)`` holding the subnet's slice of the weights (copies, contiguous)."""
        state: Tensors = {"stem.0.weight": self.stem_weight[: arch.stem_channels]}
        state.update(bn_state(self.stem_bn, arch.stem_channels, "stem.1."))
        for i, (spec, p) in enumerate(zip(arch.layers(), positions)):
            state.update({f"blocks.{i}.{k}": v for k, v in self.layers[p].state_of(spec).items()})
        state["head.0.weight"] = self.head_weight[: arch.head_channels, : arch.final_channels]
        state.update(bn_state(self.head_bn, arch.head_channels, "head.1."))
        state["classifier.weight"] = self.classifier.weight[:, : arch.head_channels]
        state["classifier.bias"] = self.classifier.bias
        return {k: v.detach().clone().contiguous() for k, v in state.items()}

    def extract(self, candidate: Candidate) -> MixNet:
        """The stand-alone ``mixnas.models.build(arch)`` network of a candidate with its slice of the weights, in
        eval mode, on the CPU (its batch-norm statistics are the supernet's; recalibrate them before evaluating)."""
        arch, positions = self.subnet(candidate)
        model = build(arch, generator=torch.Generator())  # its own generator: the caller's RNG stays untouched
        model.load_state_dict({k: v.cpu() for k, v in self.subnet_state(arch, positions).items()})
        return model.eval()

    def shared_parameters(self) -> int:
        """Weights any member uses (depthwise entries outside every channel's largest kernel are not counted)."""
        total = sum(p.numel() for p in self.parameters())
        for layer in self.layers:
            k = layer.pos.kernel
            total -= sum(k * k - c * c for c in layer.pos.channel_kernels)
        return total


__all__ = ["SuperLayer", "Supernet", "bn_state", "grouped_weights"]

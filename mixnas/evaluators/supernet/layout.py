"""What a stage space's supernet must hold: per layer position the largest widths and kernels, and the map from a
candidate's layers to those positions.

A *position* is (stage, layer within the stage) for every layer the deepest member of the space has. A candidate
with fewer layers in a stage uses that stage's first positions and skips the rest (every repeat after the first is
a stride-1 layer with in == out, so skipping it is the identity). The largest widths and kernels of a position are
exact: the maximum over every choice the space offers there (a stage's first layer takes its input width from the
previous stage's choices, or the stem's).

The layout reads the space's skeleton (:class:`~mixnas.search_space.spaces.stage.StagePlan` and the choices of each
slot) because an :class:`~mixnas.search_space.arch.Architecture` alone does not say where its stages begin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from mixnas.errors import ConfigError
from mixnas.search_space.arch import Architecture, GlobalParams, LayerSpec, split_channels
from mixnas.search_space.spaces.stage import StageSpace

_FIELD = {"kernel": 0, "partition": 1, "expand_ratio": 2, "se_ratio": 3, "dilated": 8}
_ASCENT_PASSES = 2


@dataclass(frozen=True)
class PositionMax:
    """The largest layer any member of the space puts at one position.

    Attributes:
        stage, index: where the position is (stage, layer within the stage).
        stride: the stride of the position (the stage's stride on its first layer, else 1).
        in_channels, mid_channels, out_channels: the largest input, expanded and output widths.
        kernel: the largest depthwise kernel.
        channel_kernels: per expanded channel, the largest kernel any choice gives that channel (MixConv's split
            of the expanded width decides which channel gets which kernel).
        se_channels: the largest squeeze-and-excite width (0 when no choice has SE).
        has_expand: some choice has an expansion 1x1 (expand ratio > 1).
    """

    stage: int
    index: int
    stride: int
    in_channels: int
    mid_channels: int
    out_channels: int
    kernel: int
    channel_kernels: tuple[int, ...]
    se_channels: int
    has_expand: bool


@dataclass(frozen=True)
class SupernetLayout:
    """The supernet's shape: stem and head widths, one :class:`PositionMax` per position, stage offsets."""

    stem_channels: int
    head_channels: int
    final_channels: int
    num_classes: int
    bn_momentum: float
    bn_epsilon: float
    dropout_rate: float
    positions: tuple[PositionMax, ...]
    stage_offsets: tuple[int, ...]


def _choices(space: StageSpace, slot: int) -> tuple:
    return space.slot_choices(slot)


def _check_supported(space: Any) -> None:
    if not isinstance(space, StageSpace):
        raise ConfigError(f"supernet: needs a stage space (kind: stages), got a {type(space).__name__}")
    for name in ("width_multiplier", "depth_multiplier"):
        values = _choices(space, space.global_slot(name))
        if name == "depth_multiplier" and values != (None,) or len(values) > 1:
            raise ConfigError(f"supernet: space {space.name!r}: globals.{name}: {list(values)} is not supported by "
                              f"the supernet (allowed: {'a constant' if name == 'width_multiplier' else 'null'})")
    for stage in space.stages:
        for group in stage.groups:
            if True in _choices(space, group.slots[_FIELD["dilated"]]):
                raise ConfigError(f"supernet: space {space.name!r}: {group.path}.dilated: dilated kernels are not "
                                  "centre crops of one kernel; the supernet allows dilated: false only")


def _scaler(space: StageSpace) -> GlobalParams:
    const = space.global_constants
    (multiplier,) = _choices(space, space.global_slot("width_multiplier"))
    return GlobalParams(width_multiplier=multiplier, depth_divisor=const["depth_divisor"], min_depth=const["min_depth"])


def _group_of(stage: Any, j: int) -> Any:
    if stage.granularity == "stage":
        return stage.groups[0]
    if stage.granularity == "split":
        return stage.groups[0] if j == 0 else stage.groups[1]
    return stage.groups[j]


def _channel_kernels(ins: Sequence[int], group_values: dict[str, tuple], mid: int) -> tuple[int, ...]:
    """Per expanded channel, the largest kernel over every (input width, expansion, kernels, partition) choice."""
    best = [0] * mid
    for c_in in ins:
        for expand in group_values["expand_ratio"]:
            width = c_in * expand
            for kernels in group_values["kernel"]:
                for partition in group_values["partition"]:
                    lo = 0
                    for size, k in zip(split_channels(width, len(kernels), partition), kernels):
                        for c in range(lo, lo + size):
                            best[c] = max(best[c], k)
                        lo += size
    return tuple(best)


def _position(space: StageSpace, stage: Any, j: int, ins: Sequence[int], out_max: int) -> PositionMax:
    group = _group_of(stage, j)
    values = {name: _choices(space, group.slots[i]) for name, i in _FIELD.items()}
    in_max, expand_max = max(ins), max(values["expand_ratio"])
    se_max = max(r or 0 for r in values["se_ratio"])
    mid = in_max * expand_max
    return PositionMax(
        stage=stage.index, index=j, stride=stage.stride if j == 0 else 1, in_channels=in_max, mid_channels=mid,
        out_channels=out_max, kernel=max(max(k) for k in values["kernel"]),
        channel_kernels=_channel_kernels(ins, values, mid),
        se_channels=max(1, int(in_max * se_max)) if se_max else 0, has_expand=expand_max > 1,
    )


def supernet_layout(space: Any, num_classes: int | None = None) -> SupernetLayout:
    """The supernet shape of a stage space (see the module docstring); raises ConfigError for what it cannot hold."""
    _check_supported(space)
    scale = _scaler(space).scale_width
    const = space.global_constants
    ins = tuple(sorted({scale(w) for w in _choices(space, space.global_slot("stem_width"))}))
    positions: list[PositionMax] = []
    offsets = []
    for stage in space.stages:
        widths = tuple(sorted({scale(w) for w in _choices(space, stage.width_slot)}))
        offsets.append(len(positions))
        for j in range(stage.repeats + max(_choices(space, stage.delta_slot))):
            positions.append(_position(space, stage, j, ins if j == 0 else widths, max(widths)))
        ins = widths
    return SupernetLayout(
        stem_channels=scale(max(_choices(space, space.global_slot("stem_width")))),
        head_channels=max(_choices(space, space.global_slot("head_width"))), final_channels=max(ins),
        num_classes=num_classes or const["num_classes"], bn_momentum=1.0 - const["bn_momentum"],
        bn_epsilon=const["bn_epsilon"], dropout_rate=const["dropout_rate"], positions=tuple(positions),
        stage_offsets=tuple(offsets),
    )


# --- a candidate's layers -> positions --------------------------------------------------------------------------
def stage_depths(space: StageSpace, encoding: Sequence[int]) -> tuple[int, ...]:
    """Layers of each stage for an encoding (repeats + the chosen delta)."""
    values = space.slot_values(encoding)
    return tuple(stage.repeats + values[stage.delta_slot] for stage in space.stages)


def in_space_form(space: StageSpace, arch: Architecture) -> Architecture:
    """``arch`` with the space's classes (and, when its resolution is not a choice, the space's first resolution),
    so that a candidate re-targeted to a data set (classes, image size) still encodes."""
    resolutions = _choices(space, space.global_slot("resolution"))
    changes: dict[str, Any] = {"num_classes": space.global_constants["num_classes"]}
    if arch.resolution not in resolutions:
        changes["resolution"] = resolutions[0]
    return arch.replace(**changes)


def layer_positions(layout: SupernetLayout, depths: Sequence[int], layers: Sequence[LayerSpec]) -> tuple[int, ...]:
    """The position of each of a candidate's layers, from its stage depths."""
    found = tuple(layout.stage_offsets[s] + j for s, depth in enumerate(depths) for j in range(depth))
    if len(found) != len(layers):
        raise ConfigError(f"supernet: the candidate has {len(layers)} layers, its stage depths {list(depths)} say "
                          f"{len(found)}")
    return found


# --- the largest and the smallest member (the sandwich rule) ------------------------------------------------------
def extreme_encoding(space: StageSpace, largest: bool) -> tuple[int, ...]:
    """The member with the most (or fewest) MACs then params, by coordinate ascent over the dimensions.

    Widths, depths, expansion, kernels and SE each only add MACs, so each dimension's best choice does not depend
    on the others; two passes make sure of it.
    """
    sign = 1 if largest else -1
    best = [0] * len(space.dimensions)
    for _ in range(_ASCENT_PASSES):
        for d, dim in enumerate(space.dimensions):
            def key(i: int) -> tuple[int, int]:
                c = space.count(best[:d] + [i] + best[d + 1 :])
                return (sign * c.macs, sign * c.params)

            best[d] = max(range(dim.size), key=key)
    return tuple(best)


__all__ = ["PositionMax", "SupernetLayout", "extreme_encoding", "in_space_form", "layer_positions", "stage_depths",
           "supernet_layout"]

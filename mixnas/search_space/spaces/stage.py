"""Stage spaces: MnasNet's factorized hierarchical space with MixNet's per-layer choices, and their codec.

MnasNet (Tan et al., CVPR 2019, §4.1) searches a skeleton of MBConv stages with per-stage choices; MixNet (Tan &
Le, BMVC 2019, §4.1) adds MixConv kernel groups, swish and grouped 1x1 convolutions. A :class:`StageSpace` decodes
an encoding to an :class:`~mixnas.search_space.arch.Architecture`, encodes one back, and counts its params / MACs
with :mod:`mixnas.search_space.counting` from per-layer caches. It is built from YAML by
:func:`~mixnas.search_space.spaces.yaml_reader.load_space`, which proves at load time that every encoding decodes
to a valid architecture.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

from mixnas.confignode import show_value, show_values
from mixnas.errors import ConfigError, MixnasError
from mixnas.search_space.arch import (
    Architecture,
    BlockArgs,
    GlobalParams,
    conv_output_size,
    round_repeats,
)
from mixnas.search_space.counting import Count, classifier_count, count_layer, head_count, stem_count
from mixnas.search_space.spaces.base import DEFAULT_MAX_REJECTIONS, Dimension, Encoding, SearchSpace, same_value

# The per-layer decisions, in the order their slots appear within a layer group (``kernel`` is the MixConv kernel
# tuple, written in YAML as ``kernel_groups`` or ``kernels``).
FIELDS = ("kernel", "partition", "expand_ratio", "se_ratio", "swish", "expand_groups", "project_groups", "skip",
          "dilated")
# Global decisions a space may search, by their YAML names.
GLOBAL_SEARCHABLE = ("resolution", "stem_width", "head_width", "width_multiplier", "depth_multiplier")
GRANULARITIES = ("stage", "split", "layer")
_BLOCK_CACHE_LIMIT = 200_000
_MAX_ENCODE_ALTERNATIVES = 64


def kernels_of_groups(groups: int) -> tuple[int, ...]:
    """MixConv kernels of a g-group layer: 3, 5, ..., 2g+1 (MixConv §4.1)."""
    return tuple(range(3, 2 * groups + 2, 2))


@dataclass(frozen=True)
class LayerGroup:
    """Slots (indices into the space's slot list) of one layer group, in :data:`FIELDS` order."""

    path: str
    slots: tuple[int, ...]


@dataclass(frozen=True)
class StagePlan:
    index: int
    stride: int
    filters: int
    repeats: int
    granularity: str
    width_slot: int
    delta_slot: int
    groups: tuple[LayerGroup, ...]


@dataclass(frozen=True)
class Constraints:
    """Hard constraints checked at sampling and mutation time (counts from :mod:`mixnas.search_space.counting`)."""

    max_params: int | None = None
    max_macs: int | None = None
    max_rejections: int = DEFAULT_MAX_REJECTIONS

    def describe(self) -> str:
        parts = []
        if self.max_params is not None:
            parts.append(f"params <= {self.max_params:,}")
        if self.max_macs is not None:
            parts.append(f"MACs <= {self.max_macs:,}")
        return " and ".join(parts) or "no constraint"


class StageSpace(SearchSpace):
    """MnasNet's factorized hierarchical space of MBConv stages with MixNet's per-layer choices.

    Built by :func:`load_space` from YAML (see ``docs/search_spaces.md``). Every *slot* is one decision with its
    YAML path as name; slots with one value are constants, the others are the :attr:`dimensions`. A stage decodes
    to block strings: one ``rN`` block (``granularity: stage``), a first layer plus ``rN-1`` rest layers
    (``split``, the shape of the official MixNet strings), or one group of choices per layer (``layer``).

    Decoding and counting cache the blocks of each (stage choices, widths) combination, so the rate is dominated
    by building the :class:`Architecture` record itself.
    """

    def __init__(
        self,
        *,
        name: str,
        slots: Sequence[Dimension],
        internal: Sequence[tuple],
        globals_: Mapping[str, int],
        global_constants: Mapping[str, Any],
        stages: Sequence[StagePlan],
        constraints: Constraints,
        config: Mapping[str, Any],
    ) -> None:
        self._slots = tuple(slots)
        self._internal = tuple(tuple(v) for v in internal)
        self._globals = dict(globals_)
        self._global_constants = dict(global_constants)
        self._stages = tuple(stages)
        self.constraints = constraints
        self.max_rejections = constraints.max_rejections
        self._config = dict(config)
        self._dim_slots = tuple(i for i, s in enumerate(self._slots) if s.size > 1)
        self._init_dimensions(name, (self._slots[i] for i in self._dim_slots))
        self._group_getters = {
            id(g): operator.itemgetter(*g.slots) for stage in self._stages for g in stage.groups
        }
        # caches: blocks by (choices, repeats, stride, widths) -> (block id, BlockArgs); layer counts by block id
        self._block_cache: dict[tuple, tuple[int, BlockArgs]] = {}
        self._count_cache: dict[tuple, tuple[Count, int]] = {}
        self._params_cache: dict[tuple, GlobalParams] = {}
        self._last_plan: tuple[Encoding, tuple[tuple[tuple[int, BlockArgs], ...], GlobalParams]] | None = None

    # --- decoding -------------------------------------------------------------------------------------------
    def _values(self, encoding: Encoding) -> list[Any]:
        """The internal value of every slot (constants included) for a valid encoding."""
        idx = [0] * len(self._slots)
        for slot, index in zip(self._dim_slots, encoding):
            idx[slot] = index
        return [values[i] for values, i in zip(self._internal, idx)]

    def _block(self, values: tuple, repeats: int, stride: int, in_f: int, out_f: int) -> tuple[int, BlockArgs]:
        key = (values, repeats, stride, in_f, out_f)
        hit = self._block_cache.get(key)
        if hit is None:
            kernel, partition, expand, se, swish, eg, pg, skip, dilated = values
            block = BlockArgs(
                num_repeat=repeats,
                kernel_sizes=kernel,
                expand_kernels=(1,) * eg,
                project_kernels=(1,) * pg,
                strides=(stride, stride),
                expand_ratio=expand,
                input_filters=in_f,
                output_filters=out_f,
                se_ratio=se,
                swish=swish,
                id_skip=skip,
                dilated=dilated,
                partition=partition,
            )
            if len(self._block_cache) >= _BLOCK_CACHE_LIMIT:
                self._block_cache.clear()
                self._count_cache.clear()  # count keys hold block ids, which restart
            hit = (len(self._block_cache), block)
            self._block_cache[key] = hit
        return hit

    def _stage_blocks(self, vals: list[Any], stage: StagePlan, in_f: int) -> tuple[list[tuple[int, BlockArgs]], int]:
        width = vals[stage.width_slot]
        layers = stage.repeats + vals[stage.delta_slot]
        groups = stage.groups
        get = self._group_getters
        if stage.granularity == "stage":
            return [self._block(get[id(groups[0])](vals), layers, stage.stride, in_f, width)], width
        blocks = [self._block(get[id(groups[0])](vals), 1, stage.stride, in_f, width)]
        if stage.granularity == "split":
            blocks.append(self._block(get[id(groups[1])](vals), layers - 1, 1, width, width))
            return blocks, width
        run: tuple | None = None
        count = 0
        for group in groups[1:]:  # granularity "layer": merge consecutive identical layers into one rN block
            values = get[id(group)](vals)
            if values == run:
                count += 1
                continue
            if run is not None:
                blocks.append(self._block(run, count, 1, width, width))
            run, count = values, 1
        if run is not None:
            blocks.append(self._block(run, count, 1, width, width))
        return blocks, width

    def _global_params(self, vals: list[Any]) -> GlobalParams:
        key = tuple(vals[s] for s in self._globals.values())
        params = self._params_cache.get(key)
        if params is None:
            chosen = dict(zip(self._globals, key))
            const = self._global_constants
            params = GlobalParams(
                stem_size=chosen["stem_width"],
                feature_size=chosen["head_width"],
                width_multiplier=chosen["width_multiplier"],
                depth_multiplier=chosen["depth_multiplier"],
                depth_divisor=const["depth_divisor"],
                min_depth=const["min_depth"],
                dropout_rate=const["dropout_rate"],
                bn_momentum=const["bn_momentum"],
                bn_epsilon=const["bn_epsilon"],
                resolution=chosen["resolution"],
                num_classes=const["num_classes"],
            )
            self._params_cache[key] = params
        return params

    def _plan(self, encoding: Sequence[int]) -> tuple[tuple[tuple[int, BlockArgs], ...], GlobalParams]:
        """(block id, block) pairs and global params of an encoding; the last plan is kept for decode + count."""
        last = self._last_plan
        if last is not None and type(encoding) is tuple and last[0] == encoding:
            return last[1]
        enc = self.validate_encoding(encoding)
        vals = self._values(enc)
        params = self._global_params(vals)
        blocks: list[tuple[int, BlockArgs]] = []
        in_f = params.stem_size
        for stage in self._stages:
            stage_blocks, in_f = self._stage_blocks(vals, stage, in_f)
            blocks.extend(stage_blocks)
        plan = (tuple(blocks), params)
        self._last_plan = (enc, plan)
        return plan

    def decode(self, encoding: Sequence[int]) -> Architecture:
        """The architecture of an encoding (every encoding of a validated space decodes)."""
        blocks, params = self._plan(encoding)
        # Architecture._trusted skips re-validation: a StageSpace chains widths by construction (each stage starts
        # from the previous width, the first from the stem), its blocks are validated BlockArgs, and the reader
        # proved at load time that every layer of every encoding splits its channels (check_splits). So the record
        # equals Architecture(blocks, params, name); tests/test_space.py checks this on thousands of samples.
        return Architecture._trusted(tuple(b for _, b in blocks), params, self._name)

    # --- counting and constraints ---------------------------------------------------------------------------
    def _layer_count(
        self, block_id: int, block: BlockArgs, first: bool, size: int, params: GlobalParams
    ) -> tuple[Count, int]:
        """Count of one layer of a block (its first, or any later repeat) at this input size, cached.

        The count comes from :func:`count_layer` on the layer of a one-layer architecture whose stem output is
        ``size`` (resolution ``2 * size``), so it is exactly what :func:`counting.count` adds for that layer.
        """
        key = (block_id, first, size, params.width_multiplier)  # divisor and min depth are space constants
        hit = self._count_cache.get(key)
        if hit is None:
            layer_block = block.replace(num_repeat=1)
            if not first:
                layer_block = layer_block.replace(strides=(1, 1), input_filters=block.output_filters)
            (layer,) = self._mini(layer_block, size, params).layers()
            hit = (count_layer(layer), layer.output_size)
            self._count_cache[key] = hit
        return hit

    @staticmethod
    def _mini(block: BlockArgs, size: int, params: GlobalParams) -> Architecture:
        # resolution 2 * size puts the block's input at `size` after the stride-2 stem; repeats are counted by
        # the caller, so the mini architecture has no depth multiplier
        return Architecture(
            blocks=(block,),
            global_params=GlobalParams(
                stem_size=block.input_filters,  # so the one-block width chain holds
                feature_size=params.feature_size,
                width_multiplier=params.width_multiplier,
                depth_divisor=params.depth_divisor,
                min_depth=params.min_depth,
                resolution=2 * size,
            ),
        )

    def count(self, encoding: Sequence[int]) -> Count:
        """Params and MACs of the decoded architecture; equals ``counting.count(space.decode(encoding))``.

        The same :mod:`~mixnas.search_space.counting` functions as ``counting.count``, summed without building the
        record: each block's first layer and one later repeat are counted once per input size (cached), then
        multiplied by the repeats.
        """
        blocks, params = self._plan(encoding)
        total = stem_count(params.scale_width(params.stem_size), params.resolution)
        total += classifier_count(params.feature_size, params.num_classes)
        n_params, n_macs = total.params, total.macs
        size = conv_output_size(params.resolution, 2)
        depth = params.depth_multiplier
        for block_id, block in blocks:
            layer_count, size = self._layer_count(block_id, block, True, size, params)
            n_params += layer_count.params
            n_macs += layer_count.macs
            extra = (round_repeats(block.num_repeat, depth) if depth else block.num_repeat) - 1
            if extra:
                layer_count, size = self._layer_count(block_id, block, False, size, params)
                n_params += layer_count.params * extra
                n_macs += layer_count.macs * extra
        head = head_count(params.scale_width(blocks[-1][1].output_filters), params.feature_size, size)
        return Count(n_params + head.params, n_macs + head.macs)

    def _satisfies(self, encoding: Encoding) -> bool:
        c = self.constraints
        if c.max_params is None and c.max_macs is None:
            return True
        counted = self.count(encoding)
        return (c.max_params is None or counted.params <= c.max_params) and (
            c.max_macs is None or counted.macs <= c.max_macs
        )

    def is_feasible(self, encoding: Sequence[int]) -> bool:
        """Whether the encoding is valid and its architecture meets ``max_params`` / ``max_macs``."""
        return self._satisfies(self.validate_encoding(encoding))

    def _infeasible_error(self, tries: int) -> MixnasError:
        return ConfigError(
            f"space {self._name!r}: constraints: no architecture with {self.constraints.describe()} in {tries} "
            f"tries (the smallest member has {self._smallest_description()}); raise max_params / max_macs "
            "or narrow the space"
        )

    def _smallest_description(self) -> str:
        smallest = tuple(0 for _ in self._dimensions)
        # index 0 is not necessarily the smallest choice: take each dimension's cheapest choice greedily
        best = list(smallest)
        for d, dim in enumerate(self._dimensions):
            costs = []
            for i in range(dim.size):
                trial = best[:d] + [i] + best[d + 1 :]
                costs.append((self.count(trial).macs, i))
            best[d] = min(costs)[1]
        c = self.count(best)
        return f"{c.params:,} params and {c.macs:,} MACs"

    # --- encoding -------------------------------------------------------------------------------------------
    def encode(self, arch: Architecture) -> Encoding:
        """The encoding of an architecture of this space; raises :class:`ConfigError` saying why it is not one.

        Stages are matched layer by layer (``r3`` equals three ``r1`` blocks), so the merge of repeats into
        blocks does not matter. Dropout and batch-norm settings are training settings and are not compared.
        """
        if not isinstance(arch, Architecture):
            raise ConfigError(f"space {self._name!r}: expected an Architecture, got {type(arch).__name__}")
        idx = [0] * len(self._slots)
        why: list[str] = []
        params = arch.global_params
        chosen = {
            "resolution": params.resolution,
            "stem_width": params.stem_size,
            "head_width": params.feature_size,
            "width_multiplier": params.width_multiplier,
            "depth_multiplier": params.depth_multiplier,
        }
        for key, slot in self._globals.items():
            if not self._assign(idx, slot, chosen[key], why):
                raise self._not_in_space(arch, why)
        for key in ("num_classes", "depth_divisor", "min_depth"):
            if not same_value(getattr(params, key), self._global_constants[key]):
                raise self._not_in_space(
                    arch, [f"globals.{key}: {show_value(getattr(params, key))}, the space has "
                           f"{show_value(self._global_constants[key])}"]
                )
        layers = _expand_layers(arch)
        first_match: Encoding | None = None
        for tries, candidate in enumerate(self._matches(layers, 0, 0, params.stem_size, idx, why)):
            encoding = tuple(candidate[s] for s in self._dim_slots)
            # a stride-1 stage can start with a layer equal to the previous stage's repeats, so one network can
            # split into stages in several ways; the encoding whose blocks are the given ones is the inverse
            if self.decode(encoding).blocks == arch.blocks:
                return encoding
            first_match = first_match or encoding
            if tries >= _MAX_ENCODE_ALTERNATIVES:
                break
        if first_match is None:
            raise self._not_in_space(arch, why)
        return first_match

    def _not_in_space(self, arch: Architecture, why: list[str]) -> ConfigError:
        label = arch.name or arch.id
        return ConfigError(
            f"space {self._name!r}: architecture {label} is not in the space: {why[-1] if why else 'no match'}"
        )

    def _assign(self, idx: list[int], slot: int, value: Any, why: list[str]) -> bool:
        for i, choice in enumerate(self._internal[slot]):
            if same_value(choice, value):
                idx[slot] = i
                return True
        why.append(f"{self._slots[slot].name}: {show_value(value)} is not one of {show_values(self._internal[slot])}")
        return False

    def _matches(
        self, layers: list[tuple], s: int, pos: int, in_f: int, idx: list[int], why: list[str]
    ) -> Iterator[list[int]]:
        """Every assignment of the layers to stages (by repeats delta) that the space can express."""
        if s == len(self._stages):
            if pos == len(layers):
                yield list(idx)
            else:
                why.append(f"{len(layers) - pos} layer(s) beyond the last stage")
            return
        stage = self._stages[s]
        for d, delta in enumerate(self._internal[stage.delta_slot]):
            n = stage.repeats + delta
            if pos + n > len(layers):
                why.append(f"stages[{s}]: needs {n} layers, only {len(layers) - pos} left")
                continue
            idx[stage.delta_slot] = d
            if self._match_stage(layers[pos : pos + n], stage, in_f, idx, why):
                width = self._internal[stage.width_slot][idx[stage.width_slot]]
                yield from self._matches(layers, s + 1, pos + n, width, idx, why)

    def _match_stage(self, seg: list[tuple], stage: StagePlan, in_f: int, idx: list[int], why: list[str]) -> bool:
        where = f"stages[{stage.index}]"
        out_f = seg[0][-1]
        for j, layer in enumerate(seg):
            stride, layer_in, layer_out = layer[-3:]
            want = (stage.stride if j == 0 else 1, in_f if j == 0 else out_f, out_f)
            if (stride, layer_in, layer_out) != want:
                why.append(
                    f"{where} layer {j}: stride {stride}, {layer_in} -> {layer_out} filters; the space has stride "
                    f"{want[0]}, {want[1]} -> {want[2]}"
                )
                return False
        if not self._assign(idx, stage.width_slot, out_f, why):
            return False
        if stage.granularity == "stage":
            parts = [(stage.groups[0], seg)]
        elif stage.granularity == "split":
            parts = [(stage.groups[0], seg[:1]), (stage.groups[1], seg[1:])]
        else:
            parts = [(group, [layer]) for group, layer in zip(stage.groups, seg)]
        for group, members in parts:
            values = members[0][: len(FIELDS)]
            if any(m[: len(FIELDS)] != values for m in members[1:]):
                why.append(f"{group.path}: its layers differ, the space gives them one set of choices")
                return False
            for slot, value in zip(group.slots, values):
                if not self._assign(idx, slot, value, why):
                    return False
        return True

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration (``extends`` applied), loadable again with :func:`load_space`."""
        return dict(self._config)

    # --- the skeleton: what a weight-sharing supernet needs to lay out every member --------------------------
    @property
    def stages(self) -> tuple[StagePlan, ...]:
        """The stage plans in order (their slot indices refer to :meth:`slot_choices`)."""
        return self._stages

    def slot_choices(self, slot: int) -> tuple:
        """The internal value of every choice of one slot (a constant has one)."""
        return self._internal[slot]

    def global_slot(self, name: str) -> int:
        """The slot of a searchable-or-constant global (``resolution``, ``stem_width``, ``width_multiplier``, ...)."""
        return self._globals[name]

    @property
    def global_constants(self) -> Mapping[str, Any]:
        """The globals that are never searched (``num_classes``, ``bn_momentum``, ``depth_divisor``, ...)."""
        return dict(self._global_constants)

    def slot_values(self, encoding: Sequence[int]) -> list[Any]:
        """The internal value of every slot (constants included) for ``encoding`` (validated)."""
        return self._values(self.validate_encoding(encoding))


def _expand_layers(arch: Architecture) -> list[tuple]:
    """One tuple per block repeat: the :data:`FIELDS` values, then stride, input and output filters (unscaled)."""
    layers = []
    for b in arch.blocks:
        values = (b.kernel_sizes, b.partition, b.expand_ratio, b.se_ratio, b.swish, b.expand_groups,
                  b.project_groups, b.id_skip, b.dilated)
        # a non-square stride matches no stage (the space only makes square ones)
        first_stride = b.strides[0] if b.strides[0] == b.strides[1] else -1
        for r in range(b.num_repeat):
            if r == 0:
                layers.append(values + (first_stride, b.input_filters, b.output_filters))
            else:
                layers.append(values + (1, b.output_filters, b.output_filters))
    return layers


__all__ = [
    "FIELDS",
    "GLOBAL_SEARCHABLE",
    "GRANULARITIES",
    "Constraints",
    "LayerGroup",
    "StagePlan",
    "StageSpace",
    "kernels_of_groups",
]

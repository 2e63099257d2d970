"""The architecture record: what a MixNet / MnasNet network *is*, as plain frozen data.

An :class:`Architecture` is global parameters plus a tuple of :class:`BlockArgs` (one per block string). It is
frozen, hashable, JSON round-trippable and identified by a content hash (:attr:`Architecture.id`), so searches
deduplicate candidates without building a model.

:meth:`Architecture.layers` resolves the record into one :class:`LayerSpec` per block *repeat*, with the exact
channel widths, strides, resolutions and squeeze-and-excite widths of the official TF builder
(``tensorflow/tpu`` ``mixnet_model.py``): the builder (:mod:`mixnas.models`), the analytic counter
(:mod:`mixnas.search_space.counting`) and the latency lookup table all consume these, so they cannot disagree.

Conventions (TF MixNet builder):

* ``width_multiplier`` is TF's ``depth_multiplier``: it scales every block's input / output filters and the
  stem through :func:`round_filters`; the head (``feature_size``) is never rounded.
* ``depth_multiplier`` scales repeats with ``ceil`` (EfficientNet's ``round_repeats``); MixNet leaves it unset.
* the expanded width is exactly ``in * expand_ratio``; the SE width is ``max(1, int(in * se_ratio))`` from the
  block *input*; the skip is used when ``id_skip`` and stride 1 and in == out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from mixnas.confignode import dataclass_fields
from mixnas.errors import ArchitectureError
from mixnas.textio import parse_json

ARCH_FORMAT_VERSION = 1
PARTITIONS = ("equal", "exponential")
MAX_KERNEL = 31
# Sanity bounds (docs/block_strings.md "Limits"): far above every preset and published MixNet / MnasNet /
# EfficientNet, low enough that a typo like r99999999 fails at once instead of building without end.
MAX_REPEATS = 64
MAX_LAYERS = 512
MAX_WIDTH = 16384
MAX_EXPAND = 64
MAX_GROUPS = 32
MAX_RESOLUTION = 4096
MAX_CLASSES = 100_000
MAX_MULTIPLIER = 8.0


def round_filters(
    filters: int, multiplier: float | None, divisor: int = 8, min_depth: int | None = None
) -> int:
    """Scale ``filters`` by ``multiplier`` and round to a multiple of ``divisor`` (TF ``round_filters``).

    With no multiplier the width is returned unchanged. Otherwise the scaled width is rounded to the nearest
    multiple of ``divisor`` (at least ``min_depth or divisor``) and bumped by one divisor if rounding lost more
    than 10% (the "0.9 rule").
    """
    if not multiplier:
        return int(filters)
    scaled = filters * multiplier
    floor = min_depth or divisor
    new = max(floor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def round_repeats(repeats: int, multiplier: float | None) -> int:
    """Scale a block's repeats by the depth multiplier, rounding up (EfficientNet ``round_repeats``)."""
    if not multiplier:
        return int(repeats)
    return int(math.ceil(multiplier * repeats))


def split_channels(total: int, groups: int, partition: str = "equal") -> tuple[int, ...]:
    """Split ``total`` channels into ``groups`` parts.

    ``equal`` is the official rule (``custom_layers._split_channels``): equal parts with the whole remainder on
    the first group, so (100, 3) -> (34, 33, 33). ``exponential`` is the MixConv paper's alternative (§3): the
    i-th group gets about 2^-(i+1) of the channels, the last group takes what is left, so (64, 3) -> (32, 16, 16).
    """
    if groups < 1:
        raise ArchitectureError(f"cannot split {total} channels into {groups} groups: need at least 1 group")
    if partition == "equal":
        parts = [total // groups] * groups
        parts[0] += total - sum(parts)
    elif partition == "exponential":
        parts = [total // 2 ** (i + 1) for i in range(groups - 1)]
        parts.append(total - sum(parts))
    else:
        raise ArchitectureError(f"unknown channel partition {partition!r}: expected one of {list(PARTITIONS)}")
    if min(parts) < 1:
        raise ArchitectureError(
            f"cannot split {total} channels into {groups} {partition} groups: a group would be empty ({parts})"
        )
    return tuple(parts)


def conv_output_size(size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded convolution with this stride (ceil division, as TF and PyTorch here)."""
    return -(-size // stride)


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise ArchitectureError(f"{what}: expected an integer or a list of integers, got {value!r}") from None
    if not items or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise ArchitectureError(f"{what}: expected a non-empty list of integers, got {_short(value)}")
    return items


def _short(value: Any, limit: int = 80) -> str:
    """``repr`` for an error message, shortened; never fails (Python refuses ``repr`` of a 5,000-digit int)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    try:
        text = repr(value)
    except ValueError:
        return f"a {type(value).__name__} that cannot be shown"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_int(name: str, value: Any, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ArchitectureError(f"{name}: expected a positive integer, at most {maximum}, got {_short(value)}")


@dataclass(frozen=True)
class BlockArgs:
    """One block string: an MBConv block with MixConv kernels, stacked ``num_repeat`` times.

    Attributes:
        num_repeat: how many times the block is stacked (repeats 2.. use stride 1 and in = out).
        kernel_sizes: depthwise kernel per MixConv group, e.g. (3, 5, 7).
        expand_kernels: expansion 1x1 kernels; the number of entries is the number of groups (``a1.1``).
        project_kernels: projection 1x1 kernels, same convention (``p1.1``).
        strides: (h, w) stride of the first repeat.
        expand_ratio: expansion ratio; 1 means no expansion conv.
        input_filters: input width before width scaling.
        output_filters: output width before width scaling.
        se_ratio: squeeze-and-excite ratio relative to the block input, or None for no SE.
        swish: swish (SiLU) instead of ReLU for the whole block.
        id_skip: allow the identity shortcut (``noskip`` clears it).
        dilated: TF ``dilated`` flag: stride-1 MixConv groups use 3x3 kernels with dilation (k-1)//2.
        partition: MixConv channel partition, ``equal`` (official) or ``exponential``.
    """

    num_repeat: int
    kernel_sizes: tuple[int, ...]
    expand_kernels: tuple[int, ...] = (1,)
    project_kernels: tuple[int, ...] = (1,)
    strides: tuple[int, int] = (1, 1)
    expand_ratio: int = 1
    input_filters: int = 16
    output_filters: int = 16
    se_ratio: float | None = None
    swish: bool = False
    id_skip: bool = True
    dilated: bool = False
    partition: str = "equal"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "kernel_sizes", _int_tuple(self.kernel_sizes, "kernel_sizes"))
        set_(self, "expand_kernels", _int_tuple(self.expand_kernels, "expand_kernels"))
        set_(self, "project_kernels", _int_tuple(self.project_kernels, "project_kernels"))
        strides = _int_tuple(self.strides, "strides")
        if len(strides) == 1:
            strides = strides * 2
        set_(self, "strides", strides)
        if self.se_ratio is not None:
            if isinstance(self.se_ratio, bool) or not isinstance(self.se_ratio, (int, float)):
                raise ArchitectureError(f"se_ratio: expected a number in (0, 1] or null, got {_short(self.se_ratio)}")
            if isinstance(self.se_ratio, int) and not 0 <= self.se_ratio <= 1:  # float() of a huge int overflows
                raise ArchitectureError(f"se_ratio: expected a number in (0, 1] or null, got {_short(self.se_ratio)}")
            set_(self, "se_ratio", None if self.se_ratio == 0 else float(self.se_ratio))
        self._validate()

    def _validate(self) -> None:
        _check_int("num_repeat", self.num_repeat, MAX_REPEATS)
        _check_int("expand_ratio", self.expand_ratio, MAX_EXPAND)
        _check_int("input_filters", self.input_filters, MAX_WIDTH)
        _check_int("output_filters", self.output_filters, MAX_WIDTH)
        for name in ("kernel_sizes", "expand_kernels", "project_kernels"):
            if len(getattr(self, name)) > MAX_GROUPS:
                raise ArchitectureError(
                    f"{name}: expected at most {MAX_GROUPS} groups, got {len(getattr(self, name))}"
                )
        for k in self.kernel_sizes:
            if k < 1 or k % 2 == 0 or k > MAX_KERNEL:
                raise ArchitectureError(
                    f"kernel_sizes: expected odd kernels in 1..{MAX_KERNEL}, got {_short(list(self.kernel_sizes))}"
                )
        for name in ("expand_kernels", "project_kernels"):
            kernels = getattr(self, name)
            if any(k != 1 for k in kernels):
                raise ArchitectureError(
                    f"{name}: only grouped 1x1 convolutions are supported (every entry 1), got {_short(list(kernels))}"
                )
        if len(self.strides) != 2 or any(s not in (1, 2) for s in self.strides) or self.strides[0] != self.strides[1]:
            raise ArchitectureError(f"strides: expected (1, 1) or (2, 2), got {_short(list(self.strides))}")
        if self.se_ratio is not None and not 0 < self.se_ratio <= 1:
            raise ArchitectureError(f"se_ratio: expected a number in (0, 1] or null, got {_short(self.se_ratio)}")
        for name in ("swish", "id_skip", "dilated"):
            if not isinstance(getattr(self, name), bool):
                raise ArchitectureError(f"{name}: expected true or false, got {_short(getattr(self, name))}")
        if self.partition not in PARTITIONS:
            raise ArchitectureError(f"partition: expected one of {list(PARTITIONS)}, got {_short(self.partition)}")

    @property
    def expand_groups(self) -> int:
        return len(self.expand_kernels)

    @property
    def project_groups(self) -> int:
        return len(self.project_kernels)

    @property
    def stride(self) -> int:
        return self.strides[0]

    def replace(self, **changes: Any) -> BlockArgs:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_repeat": self.num_repeat,
            "kernel_sizes": list(self.kernel_sizes),
            "expand_kernels": list(self.expand_kernels),
            "project_kernels": list(self.project_kernels),
            "strides": list(self.strides),
            "expand_ratio": self.expand_ratio,
            "input_filters": self.input_filters,
            "output_filters": self.output_filters,
            "se_ratio": self.se_ratio,
            "swish": self.swish,
            "id_skip": self.id_skip,
            "dilated": self.dilated,
            "partition": self.partition,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BlockArgs:
        data = dataclass_fields(cls, data, "block", ArchitectureError, what="an object of block fields")
        missing = sorted({"num_repeat", "kernel_sizes"} - set(data))
        if missing:
            raise ArchitectureError(f"block: missing keys {missing}")
        return cls(**dict(data))


@dataclass(frozen=True)
class GlobalParams:
    """Network-wide parameters (TF ``GlobalParams``).

    Attributes:
        stem_size: stem width before width scaling (3x3 stride-2 conv, ReLU).
        feature_size: head 1x1 conv width; never scaled (1536 for MixNet, 1280 for MnasNet).
        width_multiplier: TF's ``depth_multiplier``: scales widths via :func:`round_filters`; None = 1.0 unrounded.
        depth_multiplier: scales repeats (ceil); None for the MixNet / MnasNet models.
        depth_divisor: widths are rounded to multiples of this when a width multiplier is set.
        min_depth: smallest rounded width (None = the divisor).
        dropout_rate: dropout before the classifier.
        bn_momentum: TF batch-norm momentum (0.99; PyTorch's momentum is ``1 - this``).
        bn_epsilon: batch-norm epsilon.
        resolution: input image size (square).
        num_classes: classifier outputs.
    """

    stem_size: int = 16
    feature_size: int = 1536
    width_multiplier: float | None = None
    depth_multiplier: float | None = None
    depth_divisor: int = 8
    min_depth: int | None = None
    dropout_rate: float = 0.2
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    resolution: int = 224
    num_classes: int = 1000

    def __post_init__(self) -> None:
        maxima = {"stem_size": MAX_WIDTH, "feature_size": MAX_WIDTH, "depth_divisor": MAX_WIDTH,
                  "resolution": MAX_RESOLUTION, "num_classes": MAX_CLASSES}
        for name, maximum in maxima.items():
            _check_int(name, getattr(self, name), maximum)
        if self.min_depth is not None:
            _check_int("min_depth", self.min_depth, MAX_WIDTH)
        for name in ("width_multiplier", "depth_multiplier"):
            value = getattr(self, name)
            if value is not None:
                if (isinstance(value, bool) or not isinstance(value, (int, float))
                        or not 0 < value <= MAX_MULTIPLIER):
                    raise ArchitectureError(
                        f"{name}: expected a number in (0, {MAX_MULTIPLIER:g}] or null, got {_short(value)}"
                    )
                object.__setattr__(self, name, None if value == 1 and name == "depth_multiplier" else float(value))
        for name, what, ok in (
            ("dropout_rate", "a number in [0, 1)", lambda v: 0 <= v < 1),
            ("bn_momentum", "a number in (0, 1)", lambda v: 0 < v < 1),
            ("bn_epsilon", "a positive finite number", lambda v: 0 < v < math.inf),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
                raise ArchitectureError(f"{name}: expected {what}, got {_short(value)}")

    def scale_width(self, filters: int) -> int:
        """A width after the width multiplier (:func:`round_filters` with this record's divisor and minimum)."""
        return round_filters(filters, self.width_multiplier, self.depth_divisor, self.min_depth)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GlobalParams:
        return cls(**dataclass_fields(cls, data, "global params", ArchitectureError))


@dataclass(frozen=True)
class LayerSpec:
    """One resolved block repeat, with the exact widths the builder creates.

    ``index`` counts layers from 0; ``block_index`` / ``repeat_index`` locate it in the block strings.
    ``kernel_sizes`` are the *effective* kernels (3 for dilated groups) and ``dilations`` their dilation;
    ``dw_splits`` / ``expand_splits`` / ``project_splits`` are the per-group channel counts.
    """

    index: int
    block_index: int
    repeat_index: int
    in_channels: int
    mid_channels: int
    out_channels: int
    stride: int
    input_size: int
    output_size: int
    kernel_sizes: tuple[int, ...]
    dilations: tuple[int, ...]
    dw_splits: tuple[int, ...]
    expand_groups: int
    project_groups: int
    se_channels: int
    swish: bool
    has_expand: bool
    has_skip: bool

    @property
    def expand_splits(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(input splits, output splits) of the grouped expansion conv."""
        return (
            split_channels(self.in_channels, self.expand_groups),
            split_channels(self.mid_channels, self.expand_groups),
        )

    @property
    def project_splits(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(input splits, output splits) of the grouped projection conv."""
        return (
            split_channels(self.mid_channels, self.project_groups),
            split_channels(self.out_channels, self.project_groups),
        )


@dataclass(frozen=True)
class Architecture:
    """A whole network: global parameters and block strings, as data.

    ``name`` is a label (e.g. ``mixnet_s``) and is not part of the identity: two records with the same blocks and
    global parameters have the same :attr:`id` whatever their names.
    """

    blocks: tuple[BlockArgs, ...]
    global_params: GlobalParams = field(default_factory=GlobalParams)
    name: str = ""

    def __post_init__(self) -> None:
        blocks = tuple(self.blocks)
        if not blocks:
            raise ArchitectureError("an architecture needs at least one block")
        for i, block in enumerate(blocks):
            if not isinstance(block, BlockArgs):
                raise ArchitectureError(f"blocks[{i}]: expected BlockArgs, got {type(block).__name__}")
        object.__setattr__(self, "blocks", blocks)
        if not isinstance(self.global_params, GlobalParams):
            raise ArchitectureError(f"global_params: expected GlobalParams, got {type(self.global_params).__name__}")
        depth = self.global_params.depth_multiplier
        layers = sum(round_repeats(b.num_repeat, depth) for b in blocks)
        if layers > MAX_LAYERS:
            raise ArchitectureError(
                f"{len(blocks)} blocks with {layers} layers (repeats after the depth multiplier): expected at most "
                f"{MAX_LAYERS} layers"
            )
        self._check_widths_chain()
        # Resolving the layers validates channel splits once, at construction; the result is cached (the record
        # is frozen) because the builder, the counter and the latency table all ask for it.
        object.__setattr__(self, "_layers", self._resolve_layers())

    @classmethod
    def _trusted(cls, blocks: tuple[BlockArgs, ...], global_params: GlobalParams, name: str = "") -> Architecture:
        """The record of already-proven parts, built without :meth:`__post_init__`'s checks.

        Only for a caller that has proven what ``__post_init__`` checks: a non-empty tuple of validated
        :class:`BlockArgs` whose widths chain from the stem, at most :data:`MAX_LAYERS` layers, and channel splits
        that hold in every layer. A :class:`~mixnas.search_space.spaces.stage.StageSpace` proves all of it once,
        when its YAML is loaded, for every encoding; re-checking on each decode (the layers are resolved to check
        the splits) would cost more than the rest of sample + decode + count together. The result equals
        ``Architecture(blocks, global_params, name)``; its layers are resolved when first asked for.
        """
        arch = cls.__new__(cls)
        object.__setattr__(arch, "blocks", blocks)
        object.__setattr__(arch, "global_params", global_params)
        object.__setattr__(arch, "name", name)
        return arch

    def _check_widths_chain(self) -> None:
        # The TF builder would build a broken network (a conv fed the wrong number of channels) otherwise.
        previous, what = self.stem_channels, "the stem width"
        if previous > MAX_WIDTH:
            raise ArchitectureError(
                f"stem width {self.global_params.stem_size} becomes {previous} after width scaling: expected at "
                f"most {MAX_WIDTH}"
            )
        for i, block in enumerate(self.blocks):
            if self.round(block.input_filters) != previous:
                raise ArchitectureError(
                    f"blocks[{i}]: input filters {block.input_filters} do not match {what} "
                    f"({previous} after width scaling)"
                )
            previous, what = self.round(block.output_filters), f"the output filters of blocks[{i}]"
            if previous > MAX_WIDTH:
                raise ArchitectureError(
                    f"blocks[{i}]: output filters {block.output_filters} become {previous} after width scaling: "
                    f"expected at most {MAX_WIDTH}"
                )

    # --- identity -------------------------------------------------------------------------------------------
    def identity_dict(self) -> dict[str, Any]:
        """The content that defines the network (everything but the name)."""
        return {"global_params": self.global_params.to_dict(), "blocks": [b.to_dict() for b in self.blocks]}

    @property
    def id(self) -> str:
        """Content hash: 16 hex digits of SHA-256 over the canonical JSON of :meth:`identity_dict`."""
        canonical = json.dumps(self.identity_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    # --- convenience ----------------------------------------------------------------------------------------
    @property
    def resolution(self) -> int:
        return self.global_params.resolution

    @property
    def num_classes(self) -> int:
        return self.global_params.num_classes

    def replace(self, **changes: Any) -> Architecture:
        """A copy with fields changed; global-parameter names (``resolution=64``) are accepted too."""
        global_names = {f.name for f in dataclasses.fields(GlobalParams)}
        global_changes = {k: changes.pop(k) for k in list(changes) if k in global_names}
        if global_changes:
            changes["global_params"] = dataclasses.replace(
                changes.get("global_params", self.global_params), **global_changes
            )
        return dataclasses.replace(self, **changes)

    @property
    def stem_channels(self) -> int:
        return self.global_params.scale_width(self.global_params.stem_size)

    @property
    def head_channels(self) -> int:
        return self.global_params.feature_size

    def round(self, filters: int) -> int:
        return self.global_params.scale_width(filters)

    def layers(self) -> tuple[LayerSpec, ...]:
        """Every block repeat as a :class:`LayerSpec` (TF ``MixnetModel._build`` semantics)."""
        cached = self.__dict__.get("_layers")
        if cached is None:
            cached = self._resolve_layers()
            object.__setattr__(self, "_layers", cached)
        return cached

    def _resolve_layers(self) -> tuple[LayerSpec, ...]:
        g = self.global_params
        size = conv_output_size(g.resolution, 2)  # after the stride-2 stem
        layers: list[LayerSpec] = []
        for b_idx, block in enumerate(self.blocks):
            in_ch = self.round(block.input_filters)
            out_ch = self.round(block.output_filters)
            for r in range(round_repeats(block.num_repeat, g.depth_multiplier)):
                stride = block.stride if r == 0 else 1
                if r > 0:
                    in_ch = out_ch
                mid = in_ch * block.expand_ratio
                use_dilation = block.dilated and stride == 1
                kernels = tuple(3 if use_dilation else k for k in block.kernel_sizes)
                dilations = tuple((k - 1) // 2 if use_dilation and k > 1 else 1 for k in block.kernel_sizes)
                where = f"block {b_idx} repeat {r}"
                try:
                    dw_splits = split_channels(mid, len(kernels), block.partition)
                    split_channels(in_ch, block.expand_groups)
                    split_channels(mid, block.expand_groups)
                    split_channels(mid, block.project_groups)
                    split_channels(out_ch, block.project_groups)
                except ArchitectureError as exc:
                    raise ArchitectureError(f"{where}: {exc}") from None
                out_size = conv_output_size(size, stride)
                se = max(1, int(in_ch * block.se_ratio)) if block.se_ratio else 0
                layers.append(
                    LayerSpec(
                        index=len(layers),
                        block_index=b_idx,
                        repeat_index=r,
                        in_channels=in_ch,
                        mid_channels=mid,
                        out_channels=out_ch,
                        stride=stride,
                        input_size=size,
                        output_size=out_size,
                        kernel_sizes=kernels,
                        dilations=dilations,
                        dw_splits=dw_splits,
                        expand_groups=block.expand_groups,
                        project_groups=block.project_groups,
                        se_channels=se,
                        swish=block.swish,
                        has_expand=block.expand_ratio != 1,
                        has_skip=block.id_skip and stride == 1 and in_ch == out_ch,
                    )
                )
                size = out_size
        return tuple(layers)

    @property
    def final_channels(self) -> int:
        """Width entering the head (the last block's rounded output filters)."""
        return self.round(self.blocks[-1].output_filters)

    @property
    def final_size(self) -> int:
        return self.layers()[-1].output_size

    # --- JSON -----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format_version": ARCH_FORMAT_VERSION, "name": self.name, **self.identity_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Architecture:
        if not isinstance(data, Mapping):
            raise ArchitectureError(f"architecture JSON: expected an object, got {type(data).__name__}")
        version = data.get("format_version", ARCH_FORMAT_VERSION)
        if version != ARCH_FORMAT_VERSION:
            raise ArchitectureError(
                f"architecture JSON: unknown format_version {_short(version)}; this mixnas reads {ARCH_FORMAT_VERSION}"
            )
        unknown = sorted(str(k) for k in set(data) - {"format_version", "name", "global_params", "blocks"})
        if unknown:
            raise ArchitectureError(f"architecture JSON: unknown keys {unknown}")
        if "blocks" not in data or not isinstance(data["blocks"], list):
            raise ArchitectureError("architecture JSON: 'blocks' must be a list of block objects")
        if len(data["blocks"]) > MAX_LAYERS:
            raise ArchitectureError(f"architecture JSON: {len(data['blocks'])} blocks; at most {MAX_LAYERS}")
        name = data.get("name", "")
        if not isinstance(name, str):
            raise ArchitectureError(f"architecture JSON: name: expected a string, got {_short(name)}")
        return cls(
            blocks=tuple(BlockArgs.from_dict(b) for b in data["blocks"]),
            global_params=GlobalParams.from_dict(data.get("global_params", {})),
            name=name,
        )

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Architecture:
        return cls.from_dict(parse_json(text, "architecture JSON", ArchitectureError))

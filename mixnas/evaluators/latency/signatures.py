"""Decomposition of an architecture into latency-table *signatures*.

A signature is a canonical string that names one part of a network together with everything that changes its
latency at a given batch size: the stem, every block repeat (one :class:`~mixnas.search_space.arch.LayerSpec`),
the head (1x1 convolution, batch norm, activation and global average pooling) and the classifier. Two parts with
the same signature run the same operators on tensors of the same shapes, so the lookup table (LUT) measures each
signature once, as FBNet (Wu et al., CVPR 2019) and ProxylessNAS (Cai et al., ICLR 2019) do for their layer
tables.

Formats (underscore-separated like block strings; ``r`` is the *input* resolution)::

    stem_r224_i3_o16_s2
    mb_r112_i16_m96_o24_s2_k3.5.7_d1.1.1_c32.32.32_a2_p2_se0_relu_skip0
    head_r7_i200_o1536
    fc_i1536_o1000

``mb`` fields: input / mid (expanded) / output channels, stride, effective kernels, their dilations, the MixConv
channel split, expansion and projection groups, SE width (0 = none), activation and whether the identity
shortcut is used. The expanded width equals the input width exactly when there is no expansion convolution.
:data:`SIGNATURE_VERSION` is stored in every LUT; it changes whenever the strings or what the builder puts
behind them change, so an old table is refused instead of silently mispredicting.

This module needs no torch. :func:`part_module` (torch) builds the module a signature stands for, for profiling.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Union

from mixnas.errors import LatencyTableError
from mixnas.search_space.arch import Architecture, LayerSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch

SIGNATURE_VERSION = 1
IMAGE_CHANNELS = 3


@dataclass(frozen=True)
class StemPart:
    """The 3x3 stride-2 stem convolution with batch norm and activation."""

    resolution: int
    out_channels: int

    @property
    def signature(self) -> str:
        return f"stem_r{self.resolution}_i{IMAGE_CHANNELS}_o{self.out_channels}_s2"

    def input_shape(self, batch_size: int) -> tuple[int, ...]:
        return (batch_size, IMAGE_CHANNELS, self.resolution, self.resolution)


@dataclass(frozen=True)
class BlockPart:
    """One MBConv block repeat."""

    layer: LayerSpec

    @property
    def signature(self) -> str:
        return layer_signature(self.layer)

    def input_shape(self, batch_size: int) -> tuple[int, ...]:
        layer = self.layer
        return (batch_size, layer.in_channels, layer.input_size, layer.input_size)


@dataclass(frozen=True)
class HeadPart:
    """The 1x1 head convolution, batch norm, activation and global average pooling."""

    resolution: int
    in_channels: int
    out_channels: int

    @property
    def signature(self) -> str:
        return f"head_r{self.resolution}_i{self.in_channels}_o{self.out_channels}"

    def input_shape(self, batch_size: int) -> tuple[int, ...]:
        return (batch_size, self.in_channels, self.resolution, self.resolution)


@dataclass(frozen=True)
class ClassifierPart:
    """The fully connected classifier on pooled features."""

    in_channels: int
    num_classes: int

    @property
    def signature(self) -> str:
        return f"fc_i{self.in_channels}_o{self.num_classes}"

    def input_shape(self, batch_size: int) -> tuple[int, ...]:
        return (batch_size, self.in_channels)


Part = Union[StemPart, BlockPart, HeadPart, ClassifierPart]


# What a signature looks like (one pattern per part kind above): a table's keys are checked against it on load.
_INT, _INTS = r"\d+", r"\d+(?:\.\d+)*"
SIGNATURE_PATTERN = re.compile(
    rf"^(?:stem_r{_INT}_i{_INT}_o{_INT}_s2"
    rf"|mb_r{_INT}_i{_INT}_m{_INT}_o{_INT}_s{_INT}_k{_INTS}_d{_INTS}_c{_INTS}_a{_INT}_p{_INT}_se{_INT}_(?:swish|relu)"
    rf"_skip[01]"
    rf"|head_r{_INT}_i{_INT}_o{_INT}"
    rf"|fc_i{_INT}_o{_INT})$"
)


_STEM = re.compile(rf"^stem_r({_INT})_")


def stem_resolution(signature: str) -> int | None:
    """The input resolution of a stem part's ``signature`` (:attr:`StemPart.signature`); None for other parts."""
    m = _STEM.match(signature)
    return int(m.group(1)) if m else None


def _dots(values: tuple[int, ...]) -> str:
    return ".".join(str(v) for v in values)


def layer_signature(layer: LayerSpec) -> str:
    """Canonical signature of one block repeat (position in the network is deliberately left out)."""
    return (
        f"mb_r{layer.input_size}_i{layer.in_channels}_m{layer.mid_channels}_o{layer.out_channels}"
        f"_s{layer.stride}_k{_dots(layer.kernel_sizes)}_d{_dots(layer.dilations)}_c{_dots(layer.dw_splits)}"
        f"_a{layer.expand_groups}_p{layer.project_groups}_se{layer.se_channels}"
        f"_{'swish' if layer.swish else 'relu'}_skip{int(layer.has_skip)}"
    )


def arch_parts(arch: Architecture) -> tuple[Part, ...]:
    """The parts of ``arch`` in forward order: stem, every block repeat, head, classifier."""
    layers = arch.layers()
    return (
        StemPart(arch.resolution, arch.stem_channels),
        *(BlockPart(layer) for layer in layers),
        HeadPart(layers[-1].output_size, arch.final_channels, arch.head_channels),
        ClassifierPart(arch.head_channels, arch.num_classes),
    )


def arch_signatures(arch: Architecture) -> tuple[str, ...]:
    """Signatures of ``arch``'s parts in forward order (a signature repeats when a part does)."""
    return tuple(part.signature for part in arch_parts(arch))


def part_module(part: Part, arch: Architecture) -> torch.nn.Module:
    """The torch module ``part`` stands for, in eval mode, built as :func:`mixnas.models.build` builds it.

    ``arch`` supplies the batch-norm settings; it must be the architecture the part came from (or one with the
    same global parameters). The head part includes the global average pooling (and flattening) of the network;
    the classifier part is the dense layer alone (dropout is a no-op in eval mode).
    """
    import torch

    from mixnas.models import init_tf_weights, make_block, make_classifier, make_head, make_stem

    module: torch.nn.Module
    if isinstance(part, StemPart):
        module = make_stem(arch)
    elif isinstance(part, BlockPart):
        module = make_block(arch, part.layer)
    elif isinstance(part, HeadPart):
        module = torch.nn.Sequential(make_head(arch), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(1))
    else:
        module = make_classifier(arch, part.num_classes)
    init_tf_weights(module)
    return module.eval()


# --------------------------------------------------------------------------------------------------------------
# every signature a stage space can produce
# --------------------------------------------------------------------------------------------------------------
ENUMERATION_LIMIT = 100_000  # networks decoded to list a space's signatures (about 0.3 ms each)
_STAGE_DIMENSION = re.compile(r"^stages\[(\d+)\]\.(.+)$")
_WIDTH_KEYS = ("widths", "width_multiplier")


@dataclass(frozen=True)
class SpaceSignatures:
    """Every layer signature a search space can produce, and networks of the space that hold them all.

    Attributes:
        space: the space's name.
        signatures: the distinct signatures, in first-seen order.
        contexts: architectures of the space that together contain every signature (few: each holds the
            signatures of several choices at once), for profiling them in context.
        combinations: the number of networks decoded to find them.
    """

    space: str
    signatures: tuple[str, ...]
    contexts: tuple[Architecture, ...]
    combinations: int

    def __len__(self) -> int:
        return len(self.signatures)

    def held_by(self, table: Any) -> int:
        """How many of the signatures ``table`` (anything supporting ``in``) holds."""
        return sum(1 for s in self.signatures if s in table)

    def describe(self, table: Any, name: str) -> str:
        """``"L holds 812 of 812 signatures the space 'tiny' can produce"``."""
        return f"{name} holds {self.held_by(table)} of {len(self)} signatures the space {self.space!r} can produce"


def _roles(space: Any) -> tuple[list[int], dict[int, list[int]], dict[int, list[int]], dict[tuple[int, str], list[int]]]:
    """Dimension indices by role: globals, stage widths, stage repeat deltas, and per-layer-group choices.

    Relies on the dimension names being YAML paths (``globals.resolution``, ``stages[2].widths``,
    ``stages[2].rest.kernel_groups``, ``stages[3].layers[1].swish``), as :class:`StageSpace` names them.
    """
    globals_: list[int] = []
    widths: dict[int, list[int]] = {}
    deltas: dict[int, list[int]] = {}
    groups: dict[tuple[int, str], list[int]] = {}
    for i, dim in enumerate(space.dimensions):
        if dim.name.startswith("globals."):
            globals_.append(i)
            continue
        match = _STAGE_DIMENSION.match(dim.name)
        if match is None:
            raise LatencyTableError(f"space {space.name!r}: cannot list its signatures: dimension {dim.name!r} "
                                    "is neither a global nor a stage choice")
        stage, rest = int(match.group(1)), match.group(2)
        if rest in _WIDTH_KEYS:
            widths.setdefault(stage, []).append(i)
        elif rest == "repeats_delta":
            deltas.setdefault(stage, []).append(i)
        else:
            groups.setdefault((stage, rest.rpartition(".")[0]), []).append(i)
    return globals_, widths, deltas, groups


def _jobs(space: Any) -> tuple[list[list[int]], list[int]]:
    """The dimension sets to enumerate (each with the others fixed) and the base encoding.

    A layer's signature depends on the global choices, the widths of its stage and of the stage before (its
    input) and the choices of its own layer group; the number of repeats only decides whether a layer exists,
    so every delta is set to its largest value (all layers present) instead of being enumerated.
    """
    globals_, widths, deltas, groups = _roles(space)
    base = [0] * len(space.dimensions)
    for dims in deltas.values():
        for d in dims:
            choices = space.dimensions[d].choices
            base[d] = max(range(len(choices)), key=lambda k: choices[k])
    stages = sorted({s for s in widths} | {s + 1 for s in widths} | {s for s, _ in groups})
    jobs: list[list[int]] = [list(globals_)]
    for s in stages:
        shared = globals_ + widths.get(s - 1, []) + widths.get(s, [])
        own = [dims for (stage, _), dims in groups.items() if stage == s]
        jobs.extend(shared + dims for dims in own) if own else jobs.append(shared)
    return jobs, base


def space_signatures(space: Any, *, transform: Callable[[Architecture], Architecture] | None = None,
                     limit: int = ENUMERATION_LIMIT) -> SpaceSignatures:
    """Every layer signature ``space`` (a stage space) can produce, with context networks that hold them.

    The hard ``max_params`` / ``max_macs`` constraints of the space are not applied: a signature only
    over-budget networks have is listed too.

    Args:
        space: a :class:`~mixnas.search_space.spaces.StageSpace`.
        transform: applied to every decoded architecture (e.g. a resolution override).
        limit: refuse (with the count) when more networks than this would have to be decoded.

    Raises:
        LatencyTableError: the space does not decode to architectures, or enumerating it costs more than ``limit``.
    """
    transform = transform or (lambda a: a)
    jobs, base = _jobs(space)
    sizes = [d.size for d in space.dimensions]
    total = sum(math.prod(sizes[d] for d in job) for job in jobs)
    if total > limit:
        raise LatencyTableError(
            f"space {space.name!r}: listing every layer signature means decoding {total:,} networks, above the "
            f"limit of {limit:,}; sample architectures instead (-n N)"
        )
    seen: dict[str, None] = {}
    witnesses: list[tuple[dict[int, int], Architecture, tuple[str, ...]]] = []
    for j, job in enumerate(jobs):
        for values in itertools.product(*(range(sizes[d]) for d in job)):
            assignment = dict(zip(job, values))
            encoding = list(base)
            for d, v in assignment.items():
                encoding[d] = v
            arch = space.decode(tuple(encoding))
            if not isinstance(arch, Architecture):
                raise LatencyTableError(f"space {space.name!r} does not decode to architectures")
            sigs = arch_signatures(transform(arch))
            new = tuple(s for s in dict.fromkeys(sigs) if s not in seen)
            if new:
                seen.update(dict.fromkeys(new))
                witnesses.append((j, assignment, arch, new))
    contexts = _merge_witnesses(space, base, witnesses, transform)
    return SpaceSignatures(space.name, tuple(seen), tuple(contexts), total)


def _merge_witnesses(space: Any, base: list[int], witnesses: list, transform: Callable) -> list[Architecture]:
    """Few networks holding every signature: witnesses whose choices do not conflict share one network.

    A witness is the choice assignment (of one enumeration job) that first produced some signatures; witnesses
    of different jobs that agree on the choices they share (globals, widths) fit in one network. Any signature
    the merged networks miss after all (a dependency the grouping did not foresee) keeps its witness network.
    """
    merged: list[tuple[dict[int, int], set[int]]] = []
    open_for: dict[int, list[int]] = {}  # job -> contexts that hold no witness of that job yet
    for job, assignment, _, _ in witnesses:
        candidates = open_for.setdefault(job, [i for i in range(len(merged))])
        for k, i in enumerate(candidates):
            context, jobs = merged[i]
            if all(context.get(d, v) == v for d, v in assignment.items()):
                context.update(assignment)
                jobs.add(job)
                del candidates[k]
                break
        else:
            merged.append((dict(assignment), {job}))
            for other, pending in open_for.items():
                if other != job:
                    pending.append(len(merged) - 1)
    archs = []
    for context, _ in merged:
        encoding = list(base)
        for d, v in context.items():
            encoding[d] = v
        archs.append(transform(space.decode(tuple(encoding))))
    covered = {s for a in archs for s in arch_signatures(a)}
    archs.extend(transform(arch) for _, _, arch, new in witnesses if not set(new) <= covered)
    return archs

"""Declarative search spaces: named dimensions with finite choices, and the encodings controllers work on.

An *encoding* is a tuple of ints, one index into each dimension's choices. Controllers only ever see a space's
:attr:`~SearchSpace.dimensions` and encodings; :meth:`~SearchSpace.decode` turns an encoding into what is evaluated.

Two kinds of space share one API (:class:`SearchSpace`):

* :class:`ChoiceSpace`: generic named dimensions (numbers, strings, bools) decoding to a ``dict``; tabular
  benchmarks (NAS-Bench-Macro, Su et al., CVPR 2021) and hyper-parameter spaces.
* :class:`StageSpace`: MnasNet's factorized hierarchical space (Tan et al., CVPR 2019, §4.1) extended with MixConv
  kernel groups, swish and grouped 1x1 convolutions as in MixNet (Tan & Le, BMVC 2019, §4.1); decodes to an
  :class:`~mixnas.search_space.arch.Architecture`.

A choice list with a single value is a constant, not a dimension. :func:`load_space` reads a preset name, a YAML
file or a mapping (with ``extends:`` and deep-merge overrides) and validates it once, with errors that name the
file, the YAML path, the value and what is allowed (see ``docs/search_spaces.md``).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from mixnas.errors import ConfigError, MixnasError
from mixnas.search_space.arch import (
    MAX_CLASSES,
    MAX_EXPAND,
    MAX_LAYERS,
    MAX_REPEATS,
    MAX_RESOLUTION,
    MAX_WIDTH,
    PARTITIONS,
    Architecture,
    BlockArgs,
    GlobalParams,
    conv_output_size,
    round_filters,
    round_repeats,
    split_channels,
)
from mixnas.search_space.counting import Count, count_classifier, count_head, count_layer, count_stem
from mixnas.textio import parse_yaml, path_kind, read_text

Encoding = tuple[int, ...]

DEFAULT_MAX_REJECTIONS = 1000
_MAX_EXTENDS_DEPTH = 8
_BLOCK_CACHE_LIMIT = 200_000
_MAX_ENCODE_ALTERNATIVES = 64


def _same_value(a: Any, b: Any) -> bool:
    """Equality that keeps bools apart from numbers (``True == 1`` in Python, not in a search space)."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _show(value: Any) -> str:
    """A value as a user wrote it in YAML (tuples as lists)."""
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int) and value.bit_length() > 200:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


@dataclass(frozen=True)
class Dimension:
    """One searchable decision: a name and a finite tuple of distinct choices.

    Attributes:
        name: the YAML path of the decision, e.g. ``stages[2].first.kernel_groups`` or ``layer3``.
        choices: the values, in the order encodings index them.
    """

    name: str
    choices: tuple

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", tuple(self.choices))
        if not self.choices:
            raise ConfigError(f"dimension {self.name!r}: expected at least one choice, got none")
        for i, value in enumerate(self.choices):
            if any(_same_value(value, earlier) for earlier in self.choices[:i]):
                raise ConfigError(
                    f"dimension {self.name!r}: choice {_show(value)} appears twice; choices must be distinct"
                )

    @property
    def size(self) -> int:
        return len(self.choices)

    def index(self, value: Any) -> int:
        """Index of ``value`` among the choices; raises :class:`ConfigError` if it is not one of them."""
        for i, choice in enumerate(self.choices):
            if _same_value(choice, value):
                return i
        raise ConfigError(f"{self.name}: {_show(value)} is not one of the choices {_show_list(self.choices)}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "choices": [_jsonable(c) for c in self.choices]}


def _show_list(values: Iterable[Any]) -> str:
    return "[" + ", ".join(_show(v) for v in values) + "]"


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, tuple) else value


class SearchSpace:
    """What every search space offers; subclasses supply :meth:`decode`, :meth:`encode` and :meth:`to_dict`.

    Subclasses set ``self._name`` and ``self._dimensions`` in their constructor (via :meth:`_init_dimensions`).
    Sampling, mutation and neighbourhoods work on encodings alone, so they are shared here.
    """

    _name: str
    _dimensions: tuple[Dimension, ...]
    _sizes: np.ndarray
    max_rejections: int = DEFAULT_MAX_REJECTIONS

    def _init_dimensions(self, name: str, dimensions: Iterable[Dimension]) -> None:
        dims = tuple(dimensions)
        names = [d.name for d in dims]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"space {name!r}: dimension names must be unique, repeated: {duplicates}")
        self._name = name
        self._dimensions = dims
        self._sizes = np.array([d.size for d in dims], dtype=np.int64)
        self._size_list = tuple(d.size for d in dims)

    # --- shape ----------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def dimensions(self) -> tuple[Dimension, ...]:
        return self._dimensions

    @property
    def cardinality(self) -> int:
        """Exact number of encodings (the product of the choice counts; constraints are not applied)."""
        return math.prod(d.size for d in self._dimensions)

    @property
    def log10_cardinality(self) -> float:
        return float(sum(math.log10(d.size) for d in self._dimensions))

    def __len__(self) -> int:
        return len(self._dimensions)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self._name!r}, dimensions={len(self._dimensions)}, "
            f"cardinality={self.cardinality})"
        )

    # --- encodings ------------------------------------------------------------------------------------------
    def validate_encoding(self, encoding: Sequence[int]) -> Encoding:
        """Return ``encoding`` as a tuple of ints, or raise :class:`ConfigError` naming what is wrong."""
        if (
            type(encoding) is tuple
            and len(encoding) == len(self._size_list)
            and (
                not encoding
                or (set(map(type, encoding)) == {int} and min(encoding) >= 0
                    and all(map(operator.lt, encoding, self._size_list)))
            )
        ):
            return encoding  # the common case, checked at C speed
        try:
            values = tuple(encoding)
        except TypeError:
            raise ConfigError(
                f"space {self._name!r}: encoding {encoding!r}: expected a sequence of "
                f"{len(self._dimensions)} integers"
            ) from None
        if len(values) != len(self._dimensions):
            raise ConfigError(
                f"space {self._name!r}: encoding {list(values)}: expected {len(self._dimensions)} integers "
                f"(one per dimension), got {len(values)}"
            )
        for i, (value, dim) in enumerate(zip(values, self._dimensions)):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise ConfigError(
                    f"space {self._name!r}: encoding[{i}] ({dim.name}): expected an integer index, got {value!r}"
                )
            if not 0 <= value < dim.size:
                raise ConfigError(
                    f"space {self._name!r}: encoding[{i}] ({dim.name}): index {value} out of range, "
                    f"expected 0..{dim.size - 1}"
                )
        return tuple(int(v) for v in values)

    def is_feasible(self, encoding: Sequence[int]) -> bool:
        """Whether the encoding satisfies the space's hard constraints (none for a plain space)."""
        self.validate_encoding(encoding)
        return True

    def _infeasible_error(self, tries: int) -> MixnasError:
        return ConfigError(f"space {self._name!r}: no feasible encoding found in {tries} tries")

    def sample(self, rng: np.random.Generator) -> Encoding:
        """A uniformly random encoding that satisfies the hard constraints.

        Rejection sampling with at most :attr:`max_rejections` rejections; raises :class:`ConfigError` when
        nothing feasible turned up.
        """
        for _ in range(self.max_rejections + 1):
            encoding = tuple(rng.integers(0, self._sizes).tolist())
            if self._satisfies(encoding):
                return encoding
        raise self._infeasible_error(self.max_rejections + 1)

    def _satisfies(self, encoding: Encoding) -> bool:
        """Constraint check on an encoding already known to be valid (subclasses with constraints override)."""
        return True

    def mutate(self, encoding: Sequence[int], rng: np.random.Generator, n: int = 1) -> Encoding:
        """Change exactly ``n`` distinct dimensions to a different choice, keeping the hard constraints.

        Tries at most :attr:`max_rejections` + 1 mutants; raises :class:`ConfigError` if none is feasible.
        """
        parent = self.validate_encoding(encoding)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= len(self._dimensions):
            raise ConfigError(
                f"space {self._name!r}: mutate: n must be an integer in 1..{len(self._dimensions)}, got {n!r}"
            )
        for _ in range(self.max_rejections + 1):
            child = list(parent)
            for d in rng.choice(len(self._dimensions), size=int(n), replace=False):
                # draw among the other choices only, so the dimension always changes
                shift = int(rng.integers(1, self._dimensions[d].size))
                child[d] = (child[d] + shift) % self._dimensions[d].size
            mutant = tuple(child)
            if self._satisfies(mutant):
                return mutant
        raise self._infeasible_error(self.max_rejections + 1)

    def neighbours(self, encoding: Sequence[int]) -> list[Encoding]:
        """Every encoding at Hamming distance 1, by dimension then choice (constraints are not applied)."""
        base = self.validate_encoding(encoding)
        result = []
        for d, dim in enumerate(self._dimensions):
            for i in range(dim.size):
                if i != base[d]:
                    result.append(base[:d] + (i,) + base[d + 1 :])
        return result

    def contains(self, x: Any) -> bool:
        """Whether ``x`` (what :meth:`decode` returns) is a point of this space."""
        try:
            self.encode(x)
        except ValueError:
            return False
        return True

    # --- to be supplied by subclasses -----------------------------------------------------------------------
    def decode(self, encoding: Sequence[int]) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, x: Any) -> Encoding:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError


# ================================================================================================================
# Generic choice spaces
# ================================================================================================================


class ChoiceSpace(SearchSpace):
    """Named dimensions with finite lists of numbers, strings or bools; decodes to ``{name: value}``.

    Dimensions with a single choice are constants: they appear in decoded dicts but not in encodings.

    Args:
        dimensions: the decisions, in encoding order (single-choice ones become constants).
        name: a label for messages and reports.
    """

    def __init__(self, dimensions: Iterable[Dimension], *, name: str = "choices") -> None:
        all_dims = tuple(dimensions)
        for dim in all_dims:
            if not isinstance(dim, Dimension):
                raise ConfigError(f"space {name!r}: expected Dimension objects, got {type(dim).__name__}")
            for value in dim.choices:
                if not isinstance(value, (bool, int, float, str)):
                    raise ConfigError(
                        f"space {name!r}: {dim.name}: choice {value!r} is a {type(value).__name__}; "
                        "expected a number, a string or a bool"
                    )
        self._all = all_dims
        self._init_dimensions(name, (d for d in all_dims if d.size > 1))

    @property
    def constants(self) -> dict[str, Any]:
        return {d.name: d.choices[0] for d in self._all if d.size == 1}

    def decode(self, encoding: Sequence[int]) -> dict[str, Any]:
        """The ``{name: value}`` mapping of an encoding, constants included, in declaration order."""
        enc = iter(self.validate_encoding(encoding))
        return {d.name: d.choices[next(enc) if d.size > 1 else 0] for d in self._all}

    def encode(self, x: Mapping[str, Any]) -> Encoding:
        """Inverse of :meth:`decode`; raises :class:`ConfigError` naming the first key or value not in the space."""
        if not isinstance(x, Mapping):
            raise ConfigError(f"space {self._name!r}: expected a mapping of dimension values, got {type(x).__name__}")
        names = [d.name for d in self._all]
        unknown = sorted(set(x) - set(names), key=str)
        if unknown:
            raise ConfigError(f"space {self._name!r}: unknown dimensions {unknown}; expected {names}")
        missing = [n for n in names if n not in x]
        if missing:
            raise ConfigError(f"space {self._name!r}: missing dimensions {missing}")
        indices = [d.index(x[d.name]) for d in self._all]
        return tuple(i for i, d in zip(indices, self._all) if d.size > 1)

    def table_key(self, encoding: Sequence[int], sep: str = "") -> str:
        """The decoded values joined as text, e.g. ``'22212220'`` for NAS-Bench-Macro (keys of tabular benchmarks)."""
        values = self.decode(encoding)
        return sep.join(_show(v) if isinstance(v, bool) else str(v) for v in values.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self._name,
            "kind": "choices",
            "dimensions": {d.name: [_jsonable(c) for c in d.choices] for d in self._all},
        }


def nas_bench_macro_key(encoding: Sequence[int]) -> str:
    """NAS-Bench-Macro table key of an encoding of the ``nas_bench_macro`` preset (one digit per layer)."""
    digits = tuple(encoding)
    if len(digits) != 8 or any(isinstance(d, bool) or d not in (0, 1, 2) for d in digits):
        raise ConfigError(f"NAS-Bench-Macro encoding {list(digits)}: expected 8 indices, each 0, 1 or 2")
    return "".join(str(int(d)) for d in digits)


def nas_bench_macro_encoding(key: str) -> Encoding:
    """Inverse of :func:`nas_bench_macro_key`: ``'22212220'`` -> ``(2, 2, 2, 1, 2, 2, 2, 0)``."""
    if not isinstance(key, str) or len(key) != 8 or any(c not in "012" for c in key):
        raise ConfigError(f"NAS-Bench-Macro key {key!r}: expected 8 characters, each 0, 1 or 2")
    return tuple(int(c) for c in key)


# ================================================================================================================
# Stage spaces (MnasNet's factorized hierarchical space with MixNet's choices)
# ================================================================================================================

# Per-layer decisions, in the order their dimensions appear within a layer group. ``kernel`` is written in YAML
# either as ``kernel_groups`` (g -> kernels 3, 5, ..., 2g+1; MixConv §4.1) or as explicit ``kernels``.
LAYER_KEYS = (
    "kernel_groups",
    "kernels",
    "partition",
    "expand_ratio",
    "se_ratio",
    "swish",
    "expand_groups",
    "project_groups",
    "skip",
    "dilated",
)
_FIELDS = ("kernel", "partition", "expand_ratio", "se_ratio", "swish", "expand_groups", "project_groups", "skip",
           "dilated")
LAYER_DEFAULTS: dict[str, Any] = {
    "kernel_groups": 1,
    "partition": "equal",
    "expand_ratio": 1,
    "se_ratio": 0,
    "swish": False,
    "expand_groups": 1,
    "project_groups": 1,
    "skip": "identity",
    "dilated": False,
}
SKIP_CHOICES = ("identity", "none")
GRANULARITIES = ("stage", "split", "layer")
MAX_KERNEL_GROUPS = 5
STAGE_KEYS = ("stride", "filters", "repeats", "repeats_delta", "widths", "width_multiplier", "granularity",
              "first", "rest") + LAYER_KEYS
GLOBAL_DEFAULTS: dict[str, Any] = {
    "resolution": 224,
    "stem_width": 16,
    "head_width": 1536,
    "width_multiplier": None,
    "depth_multiplier": None,
    "num_classes": 1000,
    "dropout_rate": 0.2,
    "bn_momentum": 0.99,
    "bn_epsilon": 1e-3,
    "depth_divisor": 8,
    "min_depth": None,
}
GLOBAL_SEARCHABLE = ("resolution", "stem_width", "head_width", "width_multiplier", "depth_multiplier")
CONSTRAINT_KEYS = ("max_params", "max_macs", "max_rejections")
STAGE_SPACE_KEYS = ("name", "kind", "description", "globals", "layer", "stages", "constraints")
CHOICE_SPACE_KEYS = ("name", "kind", "description", "dimensions")
KINDS = ("stages", "choices")


def kernels_of_groups(groups: int) -> tuple[int, ...]:
    """MixConv kernels of a g-group layer: 3, 5, ..., 2g+1 (MixConv §4.1)."""
    return tuple(range(3, 2 * groups + 2, 2))


@dataclass(frozen=True)
class _Group:
    """Slots (indices into the space's slot list) of one layer group, in :data:`_FIELDS` order."""

    path: str
    slots: tuple[int, ...]


@dataclass(frozen=True)
class _Stage:
    index: int
    stride: int
    filters: int
    repeats: int
    granularity: str
    width_slot: int
    delta_slot: int
    groups: tuple[_Group, ...]


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
        stages: Sequence[_Stage],
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

    def _stage_blocks(self, vals: list[Any], stage: _Stage, in_f: int) -> tuple[list[tuple[int, BlockArgs]], int]:
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
        return _validated_architecture(tuple(b for _, b in blocks), params, self._name)

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
        """Params and MACs of the decoded architecture; equals ``counting.count(space.decode(encoding))``."""
        blocks, params = self._plan(encoding)
        view = _CountView(params)
        fixed = count_stem(view) + count_classifier(view)  # type: ignore[arg-type]
        n_params, n_macs = fixed.params, fixed.macs
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
        last = blocks[-1][1]
        final_channels = round_filters(
            last.output_filters, params.width_multiplier, params.depth_divisor, params.min_depth
        )
        head = count_head(_CountView(params, final_channels=final_channels, final_size=size))  # type: ignore
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
            if not _same_value(getattr(params, key), self._global_constants[key]):
                raise self._not_in_space(
                    arch, [f"globals.{key}: {_show(getattr(params, key))}, the space has "
                           f"{_show(self._global_constants[key])}"]
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
            if _same_value(choice, value):
                idx[slot] = i
                return True
        why.append(f"{self._slots[slot].name}: {_show(value)} is not one of {_show_list(self._internal[slot])}")
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

    def _match_stage(self, seg: list[tuple], stage: _Stage, in_f: int, idx: list[int], why: list[str]) -> bool:
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
            values = members[0][: len(_FIELDS)]
            if any(m[: len(_FIELDS)] != values for m in members[1:]):
                why.append(f"{group.path}: its layers differ, the space gives them one set of choices")
                return False
            for slot, value in zip(group.slots, values):
                if not self._assign(idx, slot, value, why):
                    return False
        return True

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration (``extends`` applied), loadable again with :func:`load_space`."""
        return dict(self._config)


@dataclass(frozen=True)
class _CountView:
    """The facts :func:`count_stem`, :func:`count_head` and :func:`count_classifier` read from an architecture,
    without building one (the builder's rules: stem and block widths rounded, head width never rounded)."""

    global_params: GlobalParams
    final_channels: int = 0
    final_size: int = 0

    @property
    def stem_channels(self) -> int:
        g = self.global_params
        return round_filters(g.stem_size, g.width_multiplier, g.depth_divisor, g.min_depth)

    @property
    def resolution(self) -> int:
        return self.global_params.resolution

    @property
    def num_classes(self) -> int:
        return self.global_params.num_classes

    @property
    def head_channels(self) -> int:
        return self.global_params.feature_size


def _validated_architecture(blocks: tuple[BlockArgs, ...], params: GlobalParams, name: str) -> Architecture:
    """An :class:`Architecture` whose validity the space has already proven, built without re-validating.

    ``Architecture.__post_init__`` checks the width chain and resolves every layer to check its channel splits,
    which costs more than the rest of sample + decode + count together. A :class:`StageSpace` chains widths by
    construction (each stage starts from the previous width, the first from the stem) and proves at load time
    that every encoding's layers split (:func:`_check_splits`: feasibility is monotone in the width, so the narrowest layer of each
    group decides), and its blocks are validated :class:`BlockArgs`; so the result equals
    ``Architecture(blocks, params, name)`` (``tests/test_space.py`` checks this on thousands of samples).
    """
    arch = object.__new__(Architecture)
    object.__setattr__(arch, "blocks", blocks)
    object.__setattr__(arch, "global_params", params)
    object.__setattr__(arch, "name", name)
    return arch


def _expand_layers(arch: Architecture) -> list[tuple]:
    """One tuple per block repeat: the :data:`_FIELDS` values, then stride, input and output filters (unscaled)."""
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


# ================================================================================================================
# Loading and validating YAML
# ================================================================================================================


class _Reader:
    """Validation helpers whose errors name the file, the YAML path, the value and what is allowed."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, path: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {path}: {message}" if path else f"{self.source}: {message}")

    def expect(self, path: str, allowed: str, value: Any) -> ConfigError:
        return self.error(path, f"expected {allowed}, got {_show(value)}")

    def mapping(self, value: Any, path: str, allowed: Sequence[str]) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise self.expect(path or "top level", "a mapping", value)
        for key in value:
            if key not in allowed:
                raise self.error(
                    f"{path}.{key}" if path else str(key), f"unknown key; allowed keys: {', '.join(allowed)}"
                )
        return dict(value)

    def choices(self, value: Any, path: str, check: Callable[[Any, str], Any]) -> tuple:
        """A scalar (a constant) or a non-empty list of distinct values, each passed through ``check``."""
        if isinstance(value, (list, tuple)):
            if not value:
                raise self.error(path, "expected at least one choice, got an empty list")
            items = [check(v, f"{path}[{i}]") for i, v in enumerate(value)]
            for i, item in enumerate(items):
                for j in range(i):
                    if _same_value(items[j], item):
                        raise self.error(
                            f"{path}[{i}]", f"duplicate choice {_show(value[i])} (same as {path}[{j}]); "
                            "choices must be distinct"
                        )
            return tuple(items)
        return (check(value, path),)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    if _is_int(value):
        return True  # math.isfinite would overflow on a huge int
    return isinstance(value, float) and math.isfinite(value)


def _int_check(r: _Reader, lo: int, hi: int | None = None, allowed: tuple[int, ...] | None = None):
    def check(value: Any, path: str) -> int:
        if allowed is not None:
            if not _is_int(value) or value not in allowed:
                raise r.expect(path, " or ".join(str(a) for a in allowed), value)
            return value
        if not _is_int(value) or value < lo or (hi is not None and value > hi):
            text = f"an integer in {lo}..{hi}" if hi is not None else f"an integer >= {lo}"
            raise r.expect(path, text, value)
        return value

    return check


def _number_check(r: _Reader, lo: float, hi: float | None, *, open_low: bool, nullable: bool = False):
    def check(value: Any, path: str) -> float | None:
        if value is None and nullable:
            return None
        bad = not _is_number(value) or value < lo or (open_low and value == lo) or (hi is not None and value > hi)
        if bad:
            low = f"({lo}" if open_low else f"[{lo}"
            text = f"a number in {low}, {hi}]" if hi is not None else f"a number > {lo}"
            raise r.expect(path, text + (" or null" if nullable else ""), value)
        return float(value) if isinstance(value, float) else value

    return check


def _bool_check(r: _Reader):
    def check(value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise r.expect(path, "true or false", value)
        return value

    return check


def _word_check(r: _Reader, words: tuple[str, ...]):
    def check(value: Any, path: str) -> str:
        if not isinstance(value, str) or value not in words:
            raise r.expect(path, "one of " + ", ".join(words), value)
        return value

    return check


def _kernels_check(r: _Reader):
    def check(value: Any, path: str) -> tuple[int, ...]:
        items = value if isinstance(value, (list, tuple)) else [value]
        good = items and all(_is_int(k) and k % 2 == 1 and 1 <= k <= 31 for k in items)
        if not good:
            raise r.expect(path, "an odd kernel size in 1..31 or a list of them (e.g. [3, 5, 7])", value)
        return tuple(items)

    return check


def _layer_checks(r: _Reader) -> dict[str, Callable[[Any, str], Any]]:
    return {
        "kernel_groups": _int_check(r, 1, MAX_KERNEL_GROUPS),
        "kernels": _kernels_check(r),
        "partition": _word_check(r, PARTITIONS),
        "expand_ratio": _int_check(r, 1, MAX_EXPAND),
        "se_ratio": _number_check(r, 0, 1, open_low=False),
        "swish": _bool_check(r),
        "expand_groups": _int_check(r, 1, allowed=(1, 2)),
        "project_groups": _int_check(r, 1, allowed=(1, 2)),
        "skip": _word_check(r, SKIP_CHOICES),
        "dilated": _bool_check(r),
    }


def _internal(key: str, value: Any) -> Any:
    """The BlockArgs-level value of a layer choice."""
    if key == "kernel_groups":
        return kernels_of_groups(value)
    if key == "se_ratio":
        return None if value == 0 else float(value)
    if key == "skip":
        return value == "identity"
    return value


class _StageBuilder:
    """Turns a validated mapping into the slot list and stage plans of a :class:`StageSpace`."""

    def __init__(self, r: _Reader) -> None:
        self.r = r
        self.slots: list[Dimension] = []
        self.internal: list[tuple] = []
        self.checks = _layer_checks(r)

    def slot(self, name: str, shown: tuple, internal: tuple) -> int:
        self.slots.append(Dimension(name, shown))
        self.internal.append(tuple(internal))
        return len(self.slots) - 1

    def layer_choices(self, layers: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, tuple[str, tuple]]:
        """Merge layer keys from general to specific levels; returns key -> (YAML path, checked choices)."""
        merged: dict[str, tuple[str, Any]] = {k: ("", v) for k, v in LAYER_DEFAULTS.items()}
        for path, level in layers:
            if "kernel_groups" in level and "kernels" in level:
                raise self.r.error(f"{path}.kernels" if path else "kernels",
                                   "use either kernel_groups or kernels, not both")
            for key in LAYER_KEYS:
                if key in level:
                    if key in ("kernel_groups", "kernels"):
                        merged.pop("kernel_groups", None)
                        merged.pop("kernels", None)
                    merged[key] = (f"{path}.{key}" if path else key, level[key])
        result = {}
        for key, (path, value) in merged.items():
            choices = self.r.choices(value, path or f"(default) {key}", self.checks[key])
            result[key] = (path, choices)
        return result

    def group(self, path: str, choices: dict[str, tuple[str, tuple]]) -> _Group:
        slots = []
        for field_name in _FIELDS:
            key = field_name if field_name != "kernel" else ("kernels" if "kernels" in choices else "kernel_groups")
            _, values = choices[key]
            slots.append(self.slot(f"{path}.{key}", values, tuple(_internal(key, v) for v in values)))
        return _Group(path, tuple(slots))


def _stage_widths(r: _Reader, stage: Mapping[str, Any], path: str, filters: int) -> tuple[str, tuple, tuple]:
    if "widths" in stage and "width_multiplier" in stage:
        raise r.error(f"{path}.width_multiplier", "use either widths or width_multiplier, not both")
    if "widths" in stage:
        widths = r.choices(stage["widths"], f"{path}.widths", _int_check(r, 1, MAX_WIDTH))
        return "widths", widths, widths
    if "width_multiplier" in stage:
        key = f"{path}.width_multiplier"
        multipliers = r.choices(stage["width_multiplier"], key, _number_check(r, 0, 8, open_low=True))
        widths = tuple(max(1, int(math.floor(filters * m + 0.5))) for m in multipliers)
        for i, w in enumerate(widths):
            if w in widths[:i]:
                j = widths.index(w)
                raise r.error(
                    f"{key}[{i}]", f"{_show(multipliers[i])} and {_show(multipliers[j])} both give {w} filters "
                    f"from {filters}; choices must give distinct widths"
                )
        return "width_multiplier", multipliers, widths
    return "widths", (filters,), (filters,)


def _check_splits(r: _Reader, path: str, choices: dict[str, tuple[str, tuple]], in_widths: Iterable[int],
                  out_widths: Iterable[int]) -> None:
    """Reject a stage whose narrowest layer cannot be split into its largest number of groups."""
    kernels = choices["kernels"][1] if "kernels" in choices else choices["kernel_groups"][1]
    groups = max(len(k) if isinstance(k, tuple) else k for k in kernels)
    in_min, out_min = min(in_widths), min(out_widths)
    mid_min = in_min * min(choices["expand_ratio"][1])
    checks = [(mid_min, groups, p, "MixConv") for p in choices["partition"][1]]
    eg, pg = max(choices["expand_groups"][1]), max(choices["project_groups"][1])
    checks += [(in_min, eg, "equal", "expansion"), (mid_min, eg, "equal", "expansion"),
               (mid_min, pg, "equal", "projection"), (out_min, pg, "equal", "projection")]
    for channels, n, partition, what in checks:
        try:
            split_channels(channels, n, partition)
        except MixnasError:
            raise r.error(
                path, f"inconsistent skeleton: the narrowest layer has {channels} channels, too few for a "
                f"{n}-group {partition} {what} split; widen the stage or drop the choice"
            ) from None


def _global_choices(r: _Reader, data: Mapping[str, Any]) -> dict[str, tuple]:
    checks = {
        "resolution": _int_check(r, 8, MAX_RESOLUTION),
        "stem_width": _int_check(r, 1, MAX_WIDTH),
        "head_width": _int_check(r, 1, MAX_WIDTH),
        "width_multiplier": _number_check(r, 0, 8, open_low=True, nullable=True),
        "depth_multiplier": _number_check(r, 0, 8, open_low=True, nullable=True),
        "num_classes": _int_check(r, 1, MAX_CLASSES),
        "dropout_rate": _number_check(r, 0, 0.99, open_low=False),
        "bn_momentum": _number_check(r, 0, 0.9999, open_low=True),
        "bn_epsilon": _number_check(r, 0, 1, open_low=True),
        "depth_divisor": _int_check(r, 1, 256),
        "min_depth": _int_check(r, 1, MAX_WIDTH),
    }
    values = r.mapping(data.get("globals") or {}, "globals", tuple(GLOBAL_DEFAULTS))
    result = {}
    for key, default in GLOBAL_DEFAULTS.items():
        value = values.get(key, default)
        path = f"globals.{key}"
        if key not in GLOBAL_SEARCHABLE and isinstance(value, (list, tuple)):
            raise r.expect(path, "a single value (it cannot be searched)", value)
        if value is None and key in ("min_depth",):
            result[key] = (None,)
            continue
        chosen = r.choices(value, path, checks[key])
        if key in ("width_multiplier", "depth_multiplier"):
            # 1.0 and null scale repeats identically; GlobalParams stores depth 1.0 as null
            chosen = tuple(None if (key == "depth_multiplier" and v == 1) else (None if v is None else float(v))
                           for v in chosen)
            if len(set(chosen)) != len(chosen):
                raise r.error(path, f"choices {list(values.get(key))} repeat the same multiplier")
        result[key] = chosen
    return result


def _constraints(r: _Reader, data: Mapping[str, Any]) -> Constraints:
    values = r.mapping(data.get("constraints") or {}, "constraints", CONSTRAINT_KEYS)
    out = {}
    for key in ("max_params", "max_macs"):
        value = values.get(key)
        if value is not None and (not _is_number(value) or value <= 0):
            raise r.expect(f"constraints.{key}", "a positive number or null", value)
        out[key] = None if value is None else int(value)
    rejections = values.get("max_rejections", DEFAULT_MAX_REJECTIONS)
    _int_check(r, 0, 10_000_000)(rejections, "constraints.max_rejections")
    return Constraints(max_rejections=rejections, **out)


def _build_stage_space(data: Mapping[str, Any], r: _Reader, name: str) -> StageSpace:
    data = r.mapping(data, "", STAGE_SPACE_KEYS)
    b = _StageBuilder(r)
    global_choices = _global_choices(r, data)
    globals_ = {
        key: b.slot(f"globals.{key}", global_choices[key], global_choices[key]) for key in GLOBAL_SEARCHABLE
    }
    constants = {k: v[0] for k, v in global_choices.items() if k not in GLOBAL_SEARCHABLE}
    layer_defaults = r.mapping(data.get("layer") or {}, "layer", LAYER_KEYS)
    stages_data = data.get("stages")
    if not isinstance(stages_data, list) or not stages_data:
        raise r.expect("stages", "a non-empty list of stage mappings", stages_data)

    stages = []
    most_layers = 0
    prev_widths = [w for w in global_choices["stem_width"]]
    for s, raw in enumerate(stages_data):
        path = f"stages[{s}]"
        stage = r.mapping(raw, path, STAGE_KEYS)
        for key in ("stride", "filters", "repeats"):
            if key not in stage:
                raise r.error(f"{path}.{key}", "missing; every stage needs stride, filters and repeats")
        stride = _int_check(r, 1, allowed=(1, 2))(stage["stride"], f"{path}.stride")
        filters = _int_check(r, 1, MAX_WIDTH)(stage["filters"], f"{path}.filters")
        repeats = _int_check(r, 1, MAX_REPEATS)(stage["repeats"], f"{path}.repeats")
        granularity = _word_check(r, GRANULARITIES)(stage.get("granularity", "stage"), f"{path}.granularity")
        deltas = r.choices(
            stage.get("repeats_delta", 0), f"{path}.repeats_delta", _int_check(r, -MAX_REPEATS, MAX_REPEATS)
        )
        minimum = 2 if granularity == "split" else 1
        for i, d in enumerate(deltas):
            where = f"{path}.repeats_delta" + (f"[{i}]" if isinstance(stage.get("repeats_delta"), list) else "")
            if repeats + d < minimum:
                raise r.error(
                    where, f"inconsistent skeleton: repeats {repeats} {d:+d} gives {repeats + d} layer(s); "
                    f"granularity {granularity} needs at least {minimum}"
                )
            if repeats + d > MAX_REPEATS:
                raise r.error(where, f"repeats {repeats} {d:+d} gives {repeats + d} layers; at most {MAX_REPEATS}")
        most_layers += repeats + max(deltas)
        if most_layers > MAX_LAYERS:
            raise r.error(path, f"the stages so far have up to {most_layers} layers; at most {MAX_LAYERS} in all")
        if granularity == "layer" and len(deltas) > 1:
            raise r.expect(f"{path}.repeats_delta", "a single value with granularity layer", stage["repeats_delta"])
        for key in ("first", "rest"):
            if key in stage and granularity == "stage":
                raise r.error(f"{path}.{key}", "needs granularity split or layer (granularity is stage)")
        width_key, shown, widths = _stage_widths(r, stage, path, filters)
        width_slot = b.slot(f"{path}.{width_key}", shown, widths)
        delta_slot = b.slot(f"{path}.repeats_delta", deltas, deltas)
        levels = [("layer", layer_defaults), (path, {k: v for k, v in stage.items() if k in LAYER_KEYS})]
        first = r.mapping(stage.get("first") or {}, f"{path}.first", LAYER_KEYS)
        rest = r.mapping(stage.get("rest") or {}, f"{path}.rest", LAYER_KEYS)
        first_choices = b.layer_choices(levels + [(f"{path}.first", first)])
        rest_choices = b.layer_choices(levels + [(f"{path}.rest", rest)])
        wms = [w for w in global_choices["width_multiplier"]]
        divisor, min_depth = constants["depth_divisor"], constants["min_depth"]

        def rounded(ws: Iterable[int]) -> list[int]:
            return [round_filters(w, m, divisor, min_depth) for w in ws for m in wms]

        if max(rounded(widths)) > MAX_WIDTH:
            raise r.error(path, f"widths {_show(tuple(widths))} become {max(rounded(widths))} channels after the width "
                          f"multiplier; at most {MAX_WIDTH}")
        _check_splits(r, path, first_choices, rounded(prev_widths), rounded(widths))
        if granularity != "stage" or repeats + max(deltas) > 1:
            _check_splits(r, path, rest_choices, rounded(widths), rounded(widths))
        if granularity == "stage":
            groups = (b.group(path, first_choices),)
        elif granularity == "split":
            groups = (b.group(f"{path}.first", first_choices), b.group(f"{path}.rest", rest_choices))
        else:
            count = repeats + deltas[0]
            groups = tuple(
                b.group(f"{path}.layers[{j}]", first_choices if j == 0 else rest_choices) for j in range(count)
            )
        stages.append(_Stage(s, stride, filters, repeats, granularity, width_slot, delta_slot, groups))
        prev_widths = list(widths)

    return StageSpace(
        name=name,
        slots=b.slots,
        internal=b.internal,
        globals_=globals_,
        global_constants=constants,
        stages=stages,
        constraints=_constraints(r, data),
        config={"name": name, "kind": "stages", **{k: v for k, v in data.items() if k not in ("name", "kind")}},
    )


def _choice_value_check(r: _Reader):
    def check(value: Any, path: str) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            raise r.expect(path, "a finite number, a string or a bool", value)
        if not isinstance(value, (bool, int, float, str)):
            raise r.expect(path, "a number, a string or a bool", value)
        return value

    return check


def _build_choice_space(data: Mapping[str, Any], r: _Reader, name: str) -> ChoiceSpace:
    data = r.mapping(data, "", CHOICE_SPACE_KEYS)
    dims = data.get("dimensions")
    if not isinstance(dims, Mapping) or not dims:
        raise r.expect("dimensions", "a non-empty mapping of name -> list of choices", dims)
    built = []
    for key, value in dims.items():
        if not isinstance(key, str) or not key:
            raise r.expect("dimensions", "dimension names that are non-empty strings", key)
        built.append(Dimension(key, r.choices(value, f"dimensions.{key}", _choice_value_check(r))))
    return ChoiceSpace(built, name=name)


def space_from_dict(data: Mapping[str, Any], *, source: str = "<mapping>", name: str | None = None) -> SearchSpace:
    """Validate a resolved mapping (no ``extends``) and build its space."""
    r = _Reader(source)
    if not isinstance(data, Mapping):
        raise r.expect("top level", "a mapping", data)
    if "extends" in data:
        raise r.error("extends", "resolve extends with load_space()")
    label = data.get("name", name or "space")
    if not isinstance(label, str) or not label:
        raise r.expect("name", "a non-empty string", label)
    if "description" in data and not isinstance(data["description"], str):
        raise r.expect("description", "a string", data["description"])
    kind = data.get("kind", "choices" if "dimensions" in data else "stages")
    if kind not in KINDS:
        raise r.expect("kind", "one of " + ", ".join(KINDS), kind)
    if kind == "choices":
        return _build_choice_space(data, r, label)
    return _build_stage_space(data, r, label)


def deep_merge(base: Any, override: Any) -> Any:
    """``override`` merged into ``base``: mappings recursively, a list by ``{index: patch}``; anything else replaces."""
    if isinstance(base, Mapping) and isinstance(override, Mapping):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = deep_merge(base[key], value) if key in base else value
        return merged
    if isinstance(base, list) and isinstance(override, Mapping) and all(_is_int(k) for k in override):
        merged_list = list(base)
        for index, patch in override.items():
            if not -len(base) <= index < len(base):
                raise ConfigError(f"list override index {index} out of range: the list has {len(base)} items")
            merged_list[index] = deep_merge(base[index], patch)
        return merged_list
    return override


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    data = parse_yaml(text, source, ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {_show(data)}")
    return data


def _read_spec(spec: str | Path, base_dir: Path | None) -> tuple[dict[str, Any], str, Path | None, str]:
    """(mapping, source label, folder for relative extends, default name) of a preset name or a YAML path."""
    from mixnas.search_space.presets import space_preset_names, space_preset_text

    text = str(spec)
    if isinstance(spec, str) and text in space_preset_names():
        return _read_yaml(space_preset_text(text), f"preset {text}"), f"preset {text}", None, text
    path = Path(text)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    if path_kind(path) != "file":
        shown = text if len(text) <= 120 else f"{text[:120]}... ({len(text)} characters)"
        raise ConfigError(
            f"unknown search space {shown!r}: expected a preset name ({', '.join(space_preset_names())}) "
            "or a YAML file"
        )
    return _read_yaml(read_text(path, ConfigError), str(path)), str(path), path.parent, path.stem


def _resolve_extends(data: dict[str, Any], source: str, base_dir: Path | None, chain: tuple[str, ...]) -> dict:
    if "extends" not in data:
        return data
    parent_spec = data["extends"]
    if not isinstance(parent_spec, str) or not parent_spec:
        raise ConfigError(f"{source}: extends: expected a preset name or a YAML path, got {_show(parent_spec)}")
    if len(chain) > _MAX_EXTENDS_DEPTH:
        raise ConfigError(f"{source}: extends: more than {_MAX_EXTENDS_DEPTH} levels ({' -> '.join(chain)})")
    parent, parent_source, parent_dir, _ = _read_spec(parent_spec, base_dir)
    if parent_source in chain:
        raise ConfigError(f"{source}: extends: cycle {' -> '.join(chain + (parent_source,))}")
    parent = _resolve_extends(parent, parent_source, parent_dir, chain + (parent_source,))
    override = {k: v for k, v in data.items() if k != "extends"}
    try:
        return deep_merge(parent, override)
    except ConfigError as exc:
        raise ConfigError(f"{source}: extends {parent_spec}: {exc}") from None


def load_space(spec: str | Path | Mapping[str, Any], *, overrides: Mapping[str, Any] | None = None) -> SearchSpace:
    """Load and validate a search space.

    Args:
        spec: a preset name (``mixnet``, ``mnasnet``, ``tiny``, ``nas_bench_macro``), a YAML path, or an
            already-parsed mapping. YAML may ``extends:`` a preset or another file (relative to itself) and
            override parts of it (deep merge; ``stages: {2: {...}}`` patches one stage).
        overrides: a mapping deep-merged last, e.g. ``{"constraints": {"max_macs": 3e8}}``.

    Raises:
        ConfigError: one line naming the file, the YAML path, the value and what is allowed.
    """
    if isinstance(spec, Mapping):
        data, source, base_dir, default_name = dict(spec), "<mapping>", Path.cwd(), "space"
    elif isinstance(spec, (str, Path)):
        data, source, base_dir, default_name = _read_spec(spec, None)
    else:
        raise ConfigError(f"search space: expected a preset name, a YAML path or a mapping, got {type(spec).__name__}")
    data = _resolve_extends(data, source, base_dir, (source,))
    if overrides:
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"{source}: overrides: expected a mapping, got {type(overrides).__name__}")
        data = deep_merge(data, overrides)
    return space_from_dict(data, source=source, name=default_name)


__all__ = [
    "ChoiceSpace",
    "Constraints",
    "Dimension",
    "Encoding",
    "SearchSpace",
    "StageSpace",
    "deep_merge",
    "kernels_of_groups",
    "load_space",
    "nas_bench_macro_encoding",
    "nas_bench_macro_key",
    "space_from_dict",
]

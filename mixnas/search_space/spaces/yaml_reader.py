"""Search spaces from YAML: a preset name, a YAML path or a mapping (with ``extends`` / overrides) -> a space.

The mapping is validated once, here, with :class:`~mixnas.confignode.ConfigNode` (the experiment config's
validator), so every error names the file, the YAML path, the value seen and what is allowed
(``my_space.yaml: stages[2].kernel_groups[1]: expected an integer in 1..5, got 7``); unknown keys are errors.
A stage space is also proven consistent: every encoding's widths chain and every layer's channels split, which
lets :class:`~mixnas.search_space.spaces.stage.StageSpace` decode without re-validating. The format is described
in ``docs/search_spaces.md``.

Why one file of ~630 lines: it is one schema. Each key's check (the value checks at the top), the stage builder
that proves a stage's widths chain and its channels split, and the ``extends`` reader that merges files are read
together whenever the format changes; split apart, a key's rule would live in one module and its consistency
proof in another.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from mixnas import bounds
from mixnas.confignode import ConfigNode, show_value
from mixnas.errors import ConfigError, MixnasError
from mixnas.search_space.arch import (
    MAX_CLASSES,
    MAX_EXPAND,
    MAX_LAYERS,
    MAX_REPEATS,
    MAX_RESOLUTION,
    MAX_WIDTH,
    PARTITIONS,
    round_filters,
    split_channels,
)
from mixnas.search_space.spaces.base import DEFAULT_MAX_REJECTIONS, Dimension, SearchSpace, same_value
from mixnas.search_space.spaces.choice import ChoiceSpace
from mixnas.search_space.spaces.stage import (
    FIELDS,
    GLOBAL_SEARCHABLE,
    GRANULARITIES,
    Constraints,
    LayerGroup,
    StagePlan,
    StageSpace,
    kernels_of_groups,
)
from mixnas.textio import parse_yaml, path_kind, read_text

_MAX_EXTENDS_DEPTH = 8

# Per-layer YAML keys, in the order their dimensions appear within a layer group. ``kernel`` is written either as
# ``kernel_groups`` (g -> kernels 3, 5, ..., 2g+1; MixConv §4.1) or as explicit ``kernels``.
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
CONSTRAINT_KEYS = ("max_params", "max_macs", "max_rejections")
STAGE_SPACE_KEYS = ("name", "kind", "description", "globals", "layer", "stages", "constraints")
CHOICE_SPACE_KEYS = ("name", "kind", "description", "dimensions")
KINDS = ("stages", "choices")

Check = Callable[[Any, str], Any]

# The range of every numeric key of a stage space (mixnas.bounds: one stated range per key, checked here and listed
# in docs/search_spaces.md, which tests/test_space.py compares with this table). ``layer.*`` keys are also the
# per-stage layer keys (``stages[i].KEY`` and ``first`` / ``rest``); a list of choices is checked value by value.
SPACE_RANGES: dict[str, bounds.Range] = {
    "globals.resolution": bounds.integer(8, MAX_RESOLUTION),
    "globals.stem_width": bounds.integer(1, MAX_WIDTH),
    "globals.head_width": bounds.integer(1, MAX_WIDTH),
    "globals.width_multiplier": bounds.number(0, 8, low_open=True, optional=True),
    "globals.depth_multiplier": bounds.number(0, 8, low_open=True, optional=True),
    "globals.num_classes": bounds.integer(1, MAX_CLASSES),
    "globals.dropout_rate": bounds.number(0, 0.99),
    "globals.bn_momentum": bounds.number(0, 0.9999, low_open=True),
    "globals.bn_epsilon": bounds.number(0, 1, low_open=True),
    "globals.depth_divisor": bounds.integer(1, 256),
    "globals.min_depth": bounds.integer(1, MAX_WIDTH),
    "layer.kernel_groups": bounds.integer(1, MAX_KERNEL_GROUPS),
    "layer.expand_ratio": bounds.integer(1, MAX_EXPAND),
    "layer.se_ratio": bounds.number(0, 1),
    "stages[].filters": bounds.integer(1, MAX_WIDTH),
    "stages[].repeats": bounds.integer(1, MAX_REPEATS),
    "stages[].repeats_delta": bounds.integer(-MAX_REPEATS, MAX_REPEATS),
    "stages[].widths": bounds.integer(1, MAX_WIDTH),
    "stages[].width_multiplier": bounds.number(0, 8, low_open=True),
    "constraints.max_params": bounds.number(0, 1e15, low_open=True, optional=True),
    "constraints.max_macs": bounds.number(0, 1e18, low_open=True, optional=True),
    "constraints.max_rejections": bounds.integer(0, 10_000_000),
}


# ================================================================================================================
# Value checks: each takes (value, YAML path) and returns the value or raises through the node
# ================================================================================================================


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _choices(n: ConfigNode, value: Any, path: str, check: Check) -> tuple:
    """A scalar (a constant) or a non-empty list of distinct values, each passed through ``check``."""
    if not isinstance(value, (list, tuple)):
        return (check(value, path),)
    if not value:
        raise n.fail(path, "expected at least one choice, got an empty list")
    items = [check(v, f"{path}[{i}]") for i, v in enumerate(value)]
    for i, item in enumerate(items):
        for j in range(i):
            if same_value(items[j], item):
                raise n.fail(f"{path}[{i}]", f"duplicate choice {show_value(value[i])} (same as {path}[{j}]); "
                             "choices must be distinct")
    return tuple(items)


def _allowed_check(n: ConfigNode, allowed: tuple[int, ...]) -> Check:
    def check(value: Any, path: str) -> int:
        if not _is_int(value) or value not in allowed:
            raise n.error(path, value, " or ".join(str(a) for a in allowed))
        return value

    return check


def _range_check(n: ConfigNode, key: str) -> Check:
    """The check of the key ``key`` of :data:`SPACE_RANGES`: the value, a float for a number range."""
    rng = SPACE_RANGES[key]

    def check(value: Any, path: str) -> Any:
        if value is None and rng.optional:
            return None
        if not rng.contains(value):
            raise n.error(path, value, rng.describe())
        return float(value) if isinstance(value, float) else value

    return check


def _bool_check(n: ConfigNode) -> Check:
    def check(value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise n.error(path, value, "true or false")
        return value

    return check


def _word_check(n: ConfigNode, words: tuple[str, ...]) -> Check:
    def check(value: Any, path: str) -> str:
        if not isinstance(value, str) or value not in words:
            raise n.error(path, value, "one of " + ", ".join(words))
        return value

    return check


def _kernels_check(n: ConfigNode) -> Check:
    def check(value: Any, path: str) -> tuple[int, ...]:
        items = value if isinstance(value, (list, tuple)) else [value]
        if not (items and all(_is_int(k) and k % 2 == 1 and 1 <= k <= 31 for k in items)):
            raise n.error(path, value, "an odd kernel size in 1..31 or a list of them (e.g. [3, 5, 7])")
        return tuple(items)

    return check


def _choice_value_check(n: ConfigNode) -> Check:
    def check(value: Any, path: str) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            raise n.error(path, value, "a finite number, a string or a bool")
        if not isinstance(value, (bool, int, float, str)):
            raise n.error(path, value, "a number, a string or a bool")
        return value

    return check


def _layer_checks(n: ConfigNode) -> dict[str, Check]:
    return {
        "kernel_groups": _range_check(n, "layer.kernel_groups"),
        "kernels": _kernels_check(n),
        "partition": _word_check(n, PARTITIONS),
        "expand_ratio": _range_check(n, "layer.expand_ratio"),
        "se_ratio": _range_check(n, "layer.se_ratio"),
        "swish": _bool_check(n),
        "expand_groups": _allowed_check(n, (1, 2)),
        "project_groups": _allowed_check(n, (1, 2)),
        "skip": _word_check(n, SKIP_CHOICES),
        "dilated": _bool_check(n),
    }


def _global_checks(n: ConfigNode) -> dict[str, Check]:
    return {key: _range_check(n, f"globals.{key}") for key in GLOBAL_DEFAULTS}


# ================================================================================================================
# Stage spaces
# ================================================================================================================


def _internal(key: str, value: Any) -> Any:
    """The BlockArgs-level value of a layer choice."""
    if key == "kernel_groups":
        return kernels_of_groups(value)
    if key == "se_ratio":
        return None if value == 0 else float(value)
    if key == "skip":
        return value == "identity"
    return value


@dataclass(frozen=True)
class _Skeleton:
    """The fixed part of one stage: stride, base filters and repeats, granularity and the repeat deltas."""

    stride: int
    filters: int
    repeats: int
    granularity: str
    deltas: tuple[int, ...]

    @property
    def most_layers(self) -> int:
        return self.repeats + max(self.deltas)


def _global_choices(top: ConfigNode) -> dict[str, tuple]:
    """The checked choices of every global, defaults filled in (only :data:`GLOBAL_SEARCHABLE` may be lists)."""
    checks = _global_checks(top)
    values = top.child("globals", keys=tuple(GLOBAL_DEFAULTS)).data
    result = {}
    for key, default in GLOBAL_DEFAULTS.items():
        value = values.get(key, default)
        path = f"globals.{key}"
        if key not in GLOBAL_SEARCHABLE and isinstance(value, (list, tuple)):
            raise top.error(path, value, "a single value (it cannot be searched)")
        if value is None and key == "min_depth":
            result[key] = (None,)
            continue
        chosen = _choices(top, value, path, checks[key])
        if key in ("width_multiplier", "depth_multiplier"):
            # 1.0 and null scale repeats identically; GlobalParams stores depth 1.0 as null
            chosen = tuple(None if (key == "depth_multiplier" and v == 1) else (None if v is None else float(v))
                           for v in chosen)
            if len(set(chosen)) != len(chosen):
                raise top.fail(path, f"choices {list(values.get(key))} repeat the same multiplier")
        result[key] = chosen
    return result


def _constraints(top: ConfigNode) -> Constraints:
    node = top.child("constraints", keys=CONSTRAINT_KEYS)
    out = {}
    for key in ("max_params", "max_macs"):
        value = _range_check(node, f"constraints.{key}")(node.get(key), node.where(key))
        out[key] = None if value is None else int(value)
    rejections = node.get("max_rejections", DEFAULT_MAX_REJECTIONS)
    _range_check(node, "constraints.max_rejections")(rejections, node.where("max_rejections"))
    return Constraints(max_rejections=rejections, **out)


def _stage_widths(stage: ConfigNode, filters: int) -> tuple[str, tuple, tuple]:
    """(YAML key, choices as written, widths) of a stage's output width: ``widths`` or ``width_multiplier``."""
    if "widths" in stage.data and "width_multiplier" in stage.data:
        raise stage.fail(stage.where("width_multiplier"), "use either widths or width_multiplier, not both")
    if "widths" in stage.data:
        widths = _choices(stage, stage.get("widths"), stage.where("widths"), _range_check(stage, "stages[].widths"))
        return "widths", widths, widths
    if "width_multiplier" not in stage.data:
        return "widths", (filters,), (filters,)
    key = stage.where("width_multiplier")
    multipliers = _choices(stage, stage.get("width_multiplier"), key, _range_check(stage, "stages[].width_multiplier"))
    widths = tuple(max(1, int(math.floor(filters * m + 0.5))) for m in multipliers)
    for i, w in enumerate(widths):
        if w in widths[:i]:
            j = widths.index(w)
            raise stage.fail(
                f"{key}[{i}]", f"{show_value(multipliers[i])} and {show_value(multipliers[j])} both give {w} "
                f"filters from {filters}; choices must give distinct widths"
            )
    return "width_multiplier", multipliers, widths


def _check_splits(n: ConfigNode, path: str, choices: dict[str, tuple[str, tuple]], in_widths: Iterable[int],
                  out_widths: Iterable[int]) -> None:
    """Reject a stage whose narrowest layer cannot be split into its largest number of groups.

    Feasibility is monotone in the width, so the narrowest layer of each group decides for every encoding.
    """
    kernels = choices["kernels"][1] if "kernels" in choices else choices["kernel_groups"][1]
    groups = max(len(k) if isinstance(k, tuple) else k for k in kernels)
    in_min, out_min = min(in_widths), min(out_widths)
    mid_min = in_min * min(choices["expand_ratio"][1])
    checks = [(mid_min, groups, p, "MixConv") for p in choices["partition"][1]]
    eg, pg = max(choices["expand_groups"][1]), max(choices["project_groups"][1])
    checks += [(in_min, eg, "equal", "expansion"), (mid_min, eg, "equal", "expansion"),
               (mid_min, pg, "equal", "projection"), (out_min, pg, "equal", "projection")]
    for channels, groups_, partition, what in checks:
        try:
            split_channels(channels, groups_, partition)
        except MixnasError:
            raise n.fail(
                path, f"inconsistent skeleton: the narrowest layer has {channels} channels, too few for a "
                f"{groups_}-group {partition} {what} split; widen the stage or drop the choice"
            ) from None


class _StageBuilder:
    """Reads the stages of a validated top level into the slot list and stage plans of a :class:`StageSpace`.

    Every *slot* is one decision named by its YAML path; the space turns the slots with more than one choice into
    its dimensions. Stages are read in order because each one's input widths are the previous one's outputs.
    """

    def __init__(self, top: ConfigNode, global_choices: Mapping[str, tuple]) -> None:
        self.top = top
        self.slots: list[Dimension] = []
        self.internal: list[tuple] = []
        self.checks = _layer_checks(top)
        self.layer_defaults = top.child("layer", keys=LAYER_KEYS).data
        self.multipliers = global_choices["width_multiplier"]
        self.divisor = global_choices["depth_divisor"][0]
        self.min_depth = global_choices["min_depth"][0]
        self.prev_widths: tuple[int, ...] = tuple(global_choices["stem_width"])
        self.most_layers = 0

    def slot(self, name: str, shown: tuple, internal: tuple) -> int:
        self.slots.append(Dimension(name, shown))
        self.internal.append(tuple(internal))
        return len(self.slots) - 1

    def stage(self, s: int, raw: Any) -> StagePlan:
        """Read ``stages[s]``: its skeleton, width and layer choices, checked against the previous stage."""
        path = f"stages[{s}]"
        if raw is None:
            raise self.top.error(path, raw, "a stage mapping")
        stage = ConfigNode(raw, path, self.top.source, keys=STAGE_KEYS)
        skeleton = self._skeleton(stage)
        width_key, shown, widths = _stage_widths(stage, skeleton.filters)
        width_slot = self.slot(f"{path}.{width_key}", shown, widths)
        delta_slot = self.slot(f"{path}.repeats_delta", skeleton.deltas, skeleton.deltas)
        levels = [("layer", self.layer_defaults), (path, {k: v for k, v in stage.data.items() if k in LAYER_KEYS})]
        first = self.layer_choices(levels + [(f"{path}.first", stage.child("first", keys=LAYER_KEYS).data)])
        rest = self.layer_choices(levels + [(f"{path}.rest", stage.child("rest", keys=LAYER_KEYS).data)])
        self._check_widths(path, skeleton, widths, first, rest)
        groups = self._groups(path, skeleton, first, rest)
        self.prev_widths = widths
        return StagePlan(s, skeleton.stride, skeleton.filters, skeleton.repeats, skeleton.granularity, width_slot,
                         delta_slot, groups)

    def _skeleton(self, stage: ConfigNode) -> _Skeleton:
        n, where = stage, stage.where
        for key in ("stride", "filters", "repeats"):
            if key not in n.data:
                raise n.fail(where(key), "missing; every stage needs stride, filters and repeats")
        granularity = _word_check(n, GRANULARITIES)(n.get("granularity", "stage"), where("granularity"))
        raw_deltas = n.get("repeats_delta", 0)
        skeleton = _Skeleton(
            stride=_allowed_check(n, (1, 2))(n.get("stride"), where("stride")),
            filters=_range_check(n, "stages[].filters")(n.get("filters"), where("filters")),
            repeats=_range_check(n, "stages[].repeats")(n.get("repeats"), where("repeats")),
            granularity=granularity,
            deltas=_choices(n, raw_deltas, where("repeats_delta"), _range_check(n, "stages[].repeats_delta")),
        )
        self._check_depths(n, skeleton, isinstance(raw_deltas, list))
        if granularity == "layer" and len(skeleton.deltas) > 1:
            raise n.error(where("repeats_delta"), raw_deltas, "a single value with granularity layer")
        for key in ("first", "rest"):
            if key in n.data and granularity == "stage":
                raise n.fail(where(key), "needs granularity split or layer (granularity is stage)")
        return skeleton

    def _check_depths(self, n: ConfigNode, skeleton: _Skeleton, listed: bool) -> None:
        """Every repeats delta gives a layer count the granularity allows; the network stays within MAX_LAYERS."""
        repeats, granularity = skeleton.repeats, skeleton.granularity
        minimum = 2 if granularity == "split" else 1
        for i, d in enumerate(skeleton.deltas):
            where = n.where("repeats_delta") + (f"[{i}]" if listed else "")
            if repeats + d < minimum:
                raise n.fail(where, f"inconsistent skeleton: repeats {repeats} {d:+d} gives {repeats + d} layer(s); "
                             f"granularity {granularity} needs at least {minimum}")
            if repeats + d > MAX_REPEATS:
                raise n.fail(where, f"repeats {repeats} {d:+d} gives {repeats + d} layers; at most {MAX_REPEATS}")
        self.most_layers += skeleton.most_layers
        if self.most_layers > MAX_LAYERS:
            raise n.fail(n.path, f"the stages so far have up to {self.most_layers} layers; at most {MAX_LAYERS} in all")

    def _rounded(self, widths: Iterable[int]) -> list[int]:
        """Every width after every width multiplier of the space."""
        return [round_filters(w, m, self.divisor, self.min_depth) for w in widths for m in self.multipliers]

    def _check_widths(self, path: str, skeleton: _Skeleton, widths: tuple[int, ...],
                      first: dict[str, tuple[str, tuple]], rest: dict[str, tuple[str, tuple]]) -> None:
        """Prove that every layer of every encoding is buildable: width bounds and channel splits."""
        widest = max(self._rounded(widths))
        if widest > MAX_WIDTH:
            raise self.top.fail(path, f"widths {show_value(tuple(widths))} become {widest} channels after the width "
                                f"multiplier; at most {MAX_WIDTH}")
        _check_splits(self.top, path, first, self._rounded(self.prev_widths), self._rounded(widths))
        if skeleton.granularity != "stage" or skeleton.most_layers > 1:
            _check_splits(self.top, path, rest, self._rounded(widths), self._rounded(widths))

    def _groups(self, path: str, skeleton: _Skeleton, first: dict[str, tuple[str, tuple]],
                rest: dict[str, tuple[str, tuple]]) -> tuple[LayerGroup, ...]:
        if skeleton.granularity == "stage":
            return (self.group(path, first),)
        if skeleton.granularity == "split":
            return (self.group(f"{path}.first", first), self.group(f"{path}.rest", rest))
        count = skeleton.repeats + skeleton.deltas[0]
        return tuple(self.group(f"{path}.layers[{j}]", first if j == 0 else rest) for j in range(count))

    def layer_choices(self, levels: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, tuple[str, tuple]]:
        """Merge layer keys from general to specific levels; returns key -> (YAML path, checked choices)."""
        merged: dict[str, tuple[str, Any]] = {k: ("", v) for k, v in LAYER_DEFAULTS.items()}
        for path, level in levels:
            if "kernel_groups" in level and "kernels" in level:
                raise self.top.fail(f"{path}.kernels" if path else "kernels",
                                    "use either kernel_groups or kernels, not both")
            for key in LAYER_KEYS:
                if key in level:
                    if key in ("kernel_groups", "kernels"):
                        merged.pop("kernel_groups", None)
                        merged.pop("kernels", None)
                    merged[key] = (f"{path}.{key}" if path else key, level[key])
        result = {}
        for key, (path, value) in merged.items():
            result[key] = (path, _choices(self.top, value, path or f"(default) {key}", self.checks[key]))
        return result

    def group(self, path: str, choices: dict[str, tuple[str, tuple]]) -> LayerGroup:
        slots = []
        for field_name in FIELDS:
            key = field_name if field_name != "kernel" else ("kernels" if "kernels" in choices else "kernel_groups")
            _, values = choices[key]
            slots.append(self.slot(f"{path}.{key}", values, tuple(_internal(key, v) for v in values)))
        return LayerGroup(path, tuple(slots))


def _build_stage_space(data: Mapping[str, Any], source: str, name: str) -> StageSpace:
    top = ConfigNode(data, "", source, keys=STAGE_SPACE_KEYS)
    global_choices = _global_choices(top)
    builder = _StageBuilder(top, global_choices)
    globals_ = {
        key: builder.slot(f"globals.{key}", global_choices[key], global_choices[key]) for key in GLOBAL_SEARCHABLE
    }
    stages_data = top.get("stages")
    if not isinstance(stages_data, list) or not stages_data:
        raise top.error("stages", stages_data, "a non-empty list of stage mappings")
    stages = [builder.stage(s, raw) for s, raw in enumerate(stages_data)]
    return StageSpace(
        name=name,
        slots=builder.slots,
        internal=builder.internal,
        globals_=globals_,
        global_constants={k: v[0] for k, v in global_choices.items() if k not in GLOBAL_SEARCHABLE},
        stages=stages,
        constraints=_constraints(top),
        config={"name": name, "kind": "stages", **{k: v for k, v in top.data.items() if k not in ("name", "kind")}},
    )


# ================================================================================================================
# Choice spaces and the top level
# ================================================================================================================


def _build_choice_space(data: Mapping[str, Any], source: str, name: str) -> ChoiceSpace:
    top = ConfigNode(data, "", source, keys=CHOICE_SPACE_KEYS)
    dims = top.get("dimensions")
    if not isinstance(dims, Mapping) or not dims:
        raise top.error("dimensions", dims, "a non-empty mapping of name -> list of choices")
    built = []
    for key, value in dims.items():
        if not isinstance(key, str) or not key:
            raise top.error("dimensions", key, "dimension names that are non-empty strings")
        built.append(Dimension(key, _choices(top, value, f"dimensions.{key}", _choice_value_check(top))))
    return ChoiceSpace(built, name=name)


def space_from_dict(data: Mapping[str, Any], *, source: str = "<mapping>", name: str | None = None) -> SearchSpace:
    """Validate a resolved mapping (no ``extends``) and build its space."""
    top = ConfigNode(data, "", source)
    if "extends" in top.data:
        raise top.fail("extends", "resolve extends with load_space()")
    label = top.get("name", name or "space")
    if not isinstance(label, str) or not label:
        raise top.error("name", label, "a non-empty string")
    if "description" in top.data and not isinstance(top.data["description"], str):
        raise top.error("description", top.data["description"], "a string")
    kind = top.get("kind", "choices" if "dimensions" in top.data else "stages")
    if kind not in KINDS:
        raise top.error("kind", kind, "one of " + ", ".join(KINDS))
    if kind == "choices":
        return _build_choice_space(top.data, source, label)
    return _build_stage_space(top.data, source, label)


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
        raise ConfigError(f"{source}: expected a mapping at the top level, got {show_value(data)}")
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
        raise ConfigError(f"{source}: extends: expected a preset name or a YAML path, got {show_value(parent_spec)}")
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
    "CHOICE_SPACE_KEYS",
    "GLOBAL_DEFAULTS",
    "LAYER_DEFAULTS",
    "LAYER_KEYS",
    "STAGE_KEYS",
    "STAGE_SPACE_KEYS",
    "deep_merge",
    "load_space",
    "space_from_dict",
]

"""timm's block-string grammar (``ir_r1_k3.5.7_a1.1_p1.1_s2_e6_c40_se0.5_nsw``) and what keeps a network identical
between timm and the TF builders: :func:`timm_problems` says why a conversion would change the network (timm
rounds widths to multiples of 8 and computes SE widths differently), :func:`tf_to_timm` / :func:`timm_to_tf`
convert or refuse, and :func:`group_timm_stages` / :func:`encode_timm_stages` give timm's nested stage lists.
"""


from typing import Iterable, Sequence

from mixnas.errors import BlockStringError
from mixnas.search_space.block_string import DECIMAL, EXPECTED, TOKEN, build_block, clip, token_error, int_list, positive_int, se_ratio, stride_digits, tokenize_tokens, encode_tf, format_float
from mixnas.search_space.arch import (
    MAX_EXPAND,
    MAX_WIDTH,
    Architecture,
    BlockArgs,
    GlobalParams,
    LayerSpec,
    round_filters,
)

# --- timm grammar ------------------------------------------------------------------------------------------
#
# timm (huggingface/pytorch-image-models, ``_efficientnet_builder.py``) writes
# ``ir_r1_k3.5.7_a1.1_p1.1_s2_e6_c40_se0.5_nsw``: a block type first, a one-digit stride, output channels ``c``
# (the input is the previous block's output), optional ``a`` / ``p`` (default 1) and an activation token. Its
# builder also computes widths differently from TF, so a conversion is only allowed when both builders produce
# the same network; see :func:`timm_problems`.

TIMM_BLOCK_TYPES = ("ds", "ir")
TIMM_KEYS = ("r", "k", "a", "p", "s", "e", "c", "se")
TIMM_FLAGS = ("noskip", "nsw", "nre")
TIMM_REQUIRED = ("r", "k", "s", "c")
TIMM_DIVISOR = 8
DEFAULT_TIMM_FEATURE_SIZE = 1536

_TIMM_EXPECTED = {
    **EXPECTED,
    "s": "a one-digit stride, 1 or 2 (s1 or s2)",
    "e": f"an integer expansion ratio >= 1, at most {MAX_EXPAND} (e.g. e6)",
    "c": f"a positive integer number of output channels, at most {MAX_WIDTH} (e.g. c40)",
}
_TIMM_OTHER_TYPES = {
    "dsa": "DepthwiseSeparable with a pointwise activation",
    "er": "EdgeResidual",
    "cn": "ConvBnAct",
    "tu": "TuckerConv",
    "uir": "UniversalInvertedResidual",
    "mha": "multi-head attention",
    "mqa": "multi-query attention",
}
_TIMM_OTHER_ACTIVATIONS = {"nr6": "relu6", "nhs": "hard_swish", "nmi": "mish"}
_TIMM_OTHER_KEYS = {
    "d": "space-to-depth (timm's d is not dilation, and TF MixNet has no space-to-depth)",
    "cc": "CondConv experts",
    "gs": "a depthwise group size",
    "fc": "forced input channels",
}


def _timm_special_token(string: str, token: str) -> None:
    """Reject timm tokens that are valid for timm but have no TF MixNet meaning, saying what they are."""
    if token in _TIMM_OTHER_ACTIVATIONS:
        raise token_error(
            string,
            token,
            f"nsw or nre: the {_TIMM_OTHER_ACTIVATIONS[token]} activation has no TF MixNet equivalent "
            "(TF blocks are ReLU or swish)",
        )
    if token == "skip":
        raise token_error(string, token, "noskip or nothing: 'skip' only applies to timm's cn blocks")
    match = TOKEN.match(token)
    if match and match.group(1) in _TIMM_OTHER_KEYS:
        meaning = _TIMM_OTHER_KEYS[match.group(1)]
        raise token_error(string, token, f"a token with a TF MixNet equivalent; timm's '{match.group(1)}' means {meaning}")


def _timm_expand_ratio(string: str, block_type: str, options: dict) -> int:
    if "e" not in options:
        if block_type == "ir":
            raise BlockStringError(
                f"bad block string {clip(string)!r}: missing mandatory timm token 'e' ({_TIMM_EXPECTED['e']})"
            )
        return 1
    token, value = options["e"]
    if len(value) > 20 or not DECIMAL.fullmatch(value) or float(value) > MAX_EXPAND:
        raise token_error(string, token, _TIMM_EXPECTED["e"])
    ratio = float(value)
    if not ratio.is_integer() or ratio < 1:
        raise token_error(
            string,
            token,
            _TIMM_EXPECTED["e"] + "; timm accepts a fractional ratio, but mixnas blocks (and TF) need an integer",
        )
    if block_type == "ir" and ratio == 1:
        raise token_error(
            string,
            token,
            "e > 1 for an ir block: timm's InvertedResidual always builds the 1x1 expansion conv, which a TF e1 "
            "block omits; write the block as ds_ (depthwise, [SE], pointwise) instead",
        )
    if block_type == "ds" and ratio != 1:
        raise token_error(string, token, "e1 or no e token: a ds block has no expansion conv (use ir_ to expand)")
    return int(ratio)


def _check_timm_block_type(string: str, block_type: str) -> None:
    """Refuse a first token other than ``ir`` / ``ds``, saying why timm's other block types are not supported."""
    if block_type in _TIMM_OTHER_TYPES:
        raise token_error(
            string,
            block_type,
            f"the block type ir or ds: timm's {block_type} ({_TIMM_OTHER_TYPES[block_type]}) has no TF MixNet "
            "equivalent",
        )
    if block_type not in TIMM_BLOCK_TYPES:
        raise token_error(string, block_type, "the timm block type ir or ds as the first token (e.g. ir_r1_k3_s2_e6_c24)")


def _timm_one_by_one(string: str, options: dict, key: str) -> tuple[int, ...]:
    """The 1x1 group kernels of an ``a`` / ``p`` token (``(1,)`` when absent); only 1x1 kernels are built."""
    if key not in options:
        return (1,)
    value = int_list(string, options[key][0], key, options[key][1])
    if any(v != 1 for v in value):
        raise token_error(string, options[key][0], EXPECTED[key] + "; only 1x1 kernels are supported")
    return value


def decode_timm(string: str, input_filters: int) -> BlockArgs:
    """Decode one timm block string (``ds_`` or ``ir_``) into :class:`BlockArgs`.

    timm strings carry no input width, so the caller passes it (the stem width for the first block, the previous
    block's output for the others). ``ds`` becomes an unexpanded (``e1``) block, ``ir`` an expanded one; ``nsw`` is
    swish and ``nre`` or no activation token is ReLU (the default of timm's MixNet and MnasNet models). Anything
    timm accepts but mixnas cannot build identically (other block types, activations, ``d``, ``ir`` with ``e1``,
    fractional ``e``) raises :class:`BlockStringError` naming the token and why.

    Args:
        string: the timm block string, e.g. ``ir_r1_k3.5.7_s2_e6_c40_se0.5_nsw``.
        input_filters: width entering the block (before any width multiplier).

    Returns:
        The decoded block; widths are *not* checked against timm's rounding here (see :func:`timm_problems`).
    """
    if not isinstance(string, str) or not string.strip():
        raise BlockStringError(f"bad block string {clip(repr(string))}: expected a non-empty timm block string")
    block_type, _, rest = string.strip().partition("_")
    _check_timm_block_type(string, block_type)
    tokens = rest.split("_") if rest else []
    for token in tokens:
        _timm_special_token(string, token)
    options, flags = tokenize_tokens(string, tokens, TIMM_KEYS, TIMM_FLAGS, "timm")
    missing = [k for k in TIMM_REQUIRED if k not in options]
    if missing:
        raise BlockStringError(
            f"bad block string {clip(string)!r}: missing mandatory timm token(s) "
            + ", ".join(f"'{k}' ({_TIMM_EXPECTED[k]})" for k in missing)
        )
    if {"nsw", "nre"} <= flags:
        raise token_error(string, "nre", "at most one activation token (nsw or nre)")
    kernels = int_list(string, options["k"][0], "k", options["k"][1])
    if any(k % 2 == 0 for k in kernels):
        raise token_error(string, options["k"][0], EXPECTED["k"])
    one_by_one = {key: _timm_one_by_one(string, options, key) for key in ("a", "p")}
    return build_block(
        string,
        num_repeat=positive_int(string, options["r"][0], "r", options["r"][1]),
        kernel_sizes=kernels,
        expand_kernels=one_by_one["a"],
        project_kernels=one_by_one["p"],
        strides=stride_digits(string, options, 1),
        expand_ratio=_timm_expand_ratio(string, block_type, options),
        input_filters=input_filters,
        output_filters=positive_int(string, options["c"][0], "c", options["c"][1], _TIMM_EXPECTED["c"]),
        se_ratio=se_ratio(string, options),
        swish="nsw" in flags,
        id_skip="noskip" not in flags,
    )


def _timm_block_problems(block: BlockArgs) -> list[str]:
    """Reasons a block's *structure* cannot be written in timm's grammar (widths are checked elsewhere)."""
    problems = []
    if block.dilated:
        problems.append(
            "the dilated flag (timm has no dilated MixConv; its d token means space-to-depth, and its dilation "
            "only comes from output_stride)"
        )
    if block.partition != "equal":
        problems.append("the xp flag (timm's MixedConv2d always splits channels equally)")
    return problems


def encode_timm(block: BlockArgs, output_filters: int | None = None) -> str:
    """Encode one block in timm's grammar (``ds_`` for ``e1``, ``ir_`` otherwise), canonical token order.

    The order is ``type r k [a] [p] s e c [se] [nsw] [noskip]``, as in timm's own model definitions; ``a`` / ``p``
    are written only for grouped 1x1 convolutions. A ``ds`` block keeps ``e1`` (as timm's MixNet / MnasNet-A1
    definitions do) and keeps a grouped ``a`` if the TF block had one: timm ignores both for ``ds``, and keeping
    them makes the conversion round-trip exactly.

    Args:
        block: the block to encode.
        output_filters: the ``c`` value to write (default: ``block.output_filters``), e.g. a width with the
            multiplier already folded in.

    Raises:
        BlockStringError: the block uses something timm cannot express (non-square stride, ``dilated``, ``xp``).
    """
    problems = _timm_block_problems(block)
    if problems:
        raise BlockStringError(
            f"cannot encode block {encode_tf(block)!r} in the timm grammar: it uses " + "; ".join(problems)
        )
    tokens = [
        "ds" if block.expand_ratio == 1 else "ir",
        f"r{block.num_repeat}",
        "k" + ".".join(str(k) for k in block.kernel_sizes),
    ]
    if block.expand_groups > 1:
        tokens.append("a" + ".".join(str(k) for k in block.expand_kernels))
    if block.project_groups > 1:
        tokens.append("p" + ".".join(str(k) for k in block.project_kernels))
    tokens += [
        f"s{block.stride}",
        f"e{block.expand_ratio}",
        f"c{block.output_filters if output_filters is None else output_filters}",
    ]
    if block.se_ratio:
        tokens.append(f"se{format_float(block.se_ratio)}")
    if block.swish:
        tokens.append("nsw")
    if not block.id_skip:
        tokens.append("noskip")
    return "_".join(tokens)


def make_divisible(value: float, divisor: int = TIMM_DIVISOR) -> int:
    """timm's ``make_divisible`` (nearest multiple of ``divisor``, at least ``divisor``, +1 divisor if < 90%).

    It is the same function as TF's ``round_filters`` with a multiplier, so it is expressed through it.
    """
    return round_filters(value, 1.0, divisor)


def _timm_se_width(in_ch: int, mid: int, block: BlockArgs) -> int:
    """SE width timm builds: ``round(mid * se / e)`` (``se_from_exp=False``), banker's rounding, no ``max(1, .)``."""
    if not block.se_ratio:
        return 0
    if block.expand_ratio == 1:  # DepthwiseSeparableConv: SE on the block input, ratio not divided
        return round(in_ch * block.se_ratio)
    return round(mid * (block.se_ratio / float(block.expand_ratio)))


def _c_values(arch: Architecture, fold: bool) -> list[int]:
    if fold:
        return [arch.round(b.output_filters) for b in arch.blocks]
    return [b.output_filters for b in arch.blocks]


def _multiplier_problems(arch: Architecture, channel_multiplier: float | None) -> list[tuple[int | None, str]]:
    g = arch.global_params
    problems: list[tuple[int | None, str]] = []
    if g.depth_multiplier is not None:
        problems.append(
            (
                None,
                f"depth_multiplier {g.depth_multiplier}: timm scales repeats per stage, TF per block; "
                "fold it into the r values first",
            )
        )
    if channel_multiplier is None:
        return problems
    if g.width_multiplier is None or float(channel_multiplier) != g.width_multiplier:
        problems.append(
            (
                None,
                f"channel_multiplier {channel_multiplier} differs from the architecture's width multiplier "
                f"{g.width_multiplier}; leave channel_multiplier unset to fold the widths into c",
            )
        )
    elif g.depth_divisor != TIMM_DIVISOR or g.min_depth not in (None, TIMM_DIVISOR):
        problems.append(
            (
                None,
                f"width multiplier {g.width_multiplier} with depth_divisor {g.depth_divisor} and min_depth "
                f"{g.min_depth}: timm's channel_multiplier rounds to multiples of {TIMM_DIVISOR} (min "
                f"{TIMM_DIVISOR}); fold the multiplier into the widths instead (leave channel_multiplier unset)",
            )
        )
    return problems


def timm_problems(arch: Architecture, channel_multiplier: float | None = None) -> list[tuple[int | None, str]]:
    """Why timm would not build exactly this network, as ``(block index or None, reason)`` pairs; empty if it would.

    timm's builder (``_efficientnet_builder.py`` / ``_efficientnet_blocks.py``) differs from TF's in:

    * output channels: ``round_channels(c, multiplier)`` = ``make_divisible(c * multiplier, 8)`` even at multiplier
      1.0, where TF leaves widths alone without a multiplier; the stem is rounded the same way;
    * expanded width: ``make_divisible(in * e, 8)`` where TF uses exactly ``in * e``;
    * SE width: ``round(mid * se / e)`` (banker's rounding, no ``max(1, .)``) where TF uses ``max(1, int(in * se))``;
    * input width: always the previous block's output (or the stem), where TF reads ``i``;
    * repeats: a depth multiplier scales whole stages; strides, dilation and channel partition: see
      :func:`encode_timm`.

    Args:
        arch: the architecture to check.
        channel_multiplier: ``None`` checks the widths with the multiplier folded in (timm at multiplier 1.0, ``c``
            = the final widths, stem = the final stem width); a value checks timm with that ``channel_multiplier``
            and the unscaled ``c`` values, which requires the architecture's own width multiplier to be the same.
    """
    problems = _multiplier_problems(arch, channel_multiplier)
    for index, block in enumerate(arch.blocks):
        problems.extend((index, p) for p in _timm_block_problems(block))
    fold = channel_multiplier is None
    multiplier = 1.0 if fold else float(channel_multiplier)
    stem_size = arch.stem_channels if fold else arch.global_params.stem_size
    timm_stem = round_filters(stem_size, multiplier, TIMM_DIVISOR)
    if timm_stem != arch.stem_channels:
        problems.append((None, f"stem width {arch.stem_channels}: timm rounds stem_size {stem_size} to {timm_stem}"))
    c_values = _c_values(arch, fold)
    seen: set[tuple[int, str]] = set()
    previous_out = arch.stem_channels
    for layer in arch.layers():
        block = arch.blocks[layer.block_index]
        found = _timm_layer_problems(layer, block, c_values[layer.block_index], multiplier, previous_out)
        for kind, text in found:
            if (layer.block_index, kind) not in seen:  # report a block once, not once per repeat
                seen.add((layer.block_index, kind))
                problems.append((layer.block_index, text))
        previous_out = layer.out_channels
    return problems


def _timm_layer_problems(
    layer: LayerSpec, block: BlockArgs, c: int, multiplier: float, previous_out: int
) -> list[tuple[str, str]]:
    """(kind, reason) for each width of one block repeat that timm's builder would make differently."""
    found = []
    if layer.in_channels != previous_out:
        source = "the stem width" if layer.index == 0 else "the previous block's output"
        found.append(
            ("in", f"input width {layer.in_channels} differs from {source} {previous_out} (timm has no input "
             "width: it feeds each block the stem or the previous block's output)")
        )
    timm_out = round_filters(c, multiplier, TIMM_DIVISOR)
    if timm_out != layer.out_channels:
        scaled = f"c{c}" if multiplier == 1.0 else f"c{c} x {multiplier:g}"
        found.append(
            ("out", f"output width {layer.out_channels}: timm rounds {scaled} to {timm_out} (make_divisible, "
             f"multiples of {TIMM_DIVISOR})")
        )
    mid = layer.in_channels
    if layer.has_expand:
        mid = make_divisible(layer.in_channels * block.expand_ratio)
        if mid != layer.mid_channels:
            found.append(
                ("mid", f"expanded width {layer.in_channels}*{block.expand_ratio} = {layer.mid_channels}: timm "
                 f"builds make_divisible({layer.mid_channels}) = {mid}")
            )
    timm_se = _timm_se_width(layer.in_channels, mid, block)
    if timm_se != layer.se_channels:
        ratio = format_float(block.se_ratio or 0)
        found.append(
            ("se", f"SE width: TF max(1, int({layer.in_channels}*{ratio})) = {layer.se_channels}, timm "
             f"round({mid}*{ratio}/{block.expand_ratio}) = {timm_se}")
        )
    return found


def _format_problems(problems: list[tuple[int | None, str]], names: list[str]) -> str:
    """One clause per block (in order), its reasons joined by ', and '; global reasons first."""
    by_block: dict[int | None, list[str]] = {}
    for index, text in problems:
        by_block.setdefault(index, []).append(text)
    parts = list(by_block.pop(None, []))
    parts += [f"block {i} {names[i]!r}: " + ", and ".join(texts) for i, texts in by_block.items()]
    return "; ".join(parts)


def encode_timm_arch(arch: Architecture, channel_multiplier: float | None = None) -> list[str]:
    """Encode an architecture as a flat list of timm block strings that build exactly the same network.

    By default a width multiplier is folded into the widths: ``c`` is each block's final width, and timm must use
    ``channel_multiplier=1.0`` and ``stem_size=arch.stem_channels``. With ``channel_multiplier`` equal to the
    architecture's width multiplier, ``c`` is the unscaled width instead (as in timm's ``mixnet_l`` definition),
    which is exact only with depth divisor 8. Group the result into timm stages with :func:`group_timm_stages`.

    Raises:
        BlockStringError: naming every reason timm would build a different network (see :func:`timm_problems`).
    """
    names = [encode_tf(b) for b in arch.blocks]
    problems = timm_problems(arch, channel_multiplier)
    if problems:
        raise BlockStringError(
            "cannot express the architecture in the timm grammar: " + _format_problems(problems, names)
        )
    c_values = _c_values(arch, channel_multiplier is None)
    return [encode_timm(b, c) for b, c in zip(arch.blocks, c_values)]


def group_timm_stages(strings: Iterable[str]) -> list[list[str]]:
    """Group flat timm block strings into stages the way timm's MixNet / MnasNet definitions do.

    A new stage starts at the first block, at every stride-2 block and at every block whose output width differs
    from the previous block's (e.g. MixNet-S's stride-1 ``c80 -> c120`` stage). timm forces stride 1 on every
    block but the first of a stage, so a stride-2 block must start one.
    """
    stages: list[list[str]] = []
    previous_c = None
    for string in strings:
        block = decode_timm(string, 1)
        if previous_c is None or block.stride > 1 or block.output_filters != previous_c:
            stages.append([])
        stages[-1].append(string)
        previous_c = block.output_filters
    return stages


def encode_timm_stages(arch: Architecture, channel_multiplier: float | None = None) -> list[list[str]]:
    """:func:`encode_timm_arch` grouped into timm stages (the nested list timm's ``decode_arch_def`` takes)."""
    return group_timm_stages(encode_timm_arch(arch, channel_multiplier))


def _flatten_timm(strings: Sequence[str] | Sequence[Sequence[str]]) -> list[str]:
    """Flatten timm's nested stage lists, refusing a stride-2 block that timm would silently make stride 1."""
    items = list(strings)
    if all(isinstance(s, str) for s in items):
        return items
    if not all(isinstance(s, (list, tuple)) and all(isinstance(x, str) for x in s) for s in items):
        raise BlockStringError(
            f"timm block strings {clip(repr(items))}: expected a list of strings or a list of stages (lists of strings)"
        )
    flat = []
    for stage_index, stage in enumerate(items):
        if not stage:
            raise BlockStringError(f"timm stage {stage_index} is empty: expected at least one block string")
        for position, string in enumerate(stage):
            if position > 0 and decode_timm(string, 1).stride > 1:
                raise BlockStringError(
                    f"bad block string {clip(string)!r} in timm stage {stage_index}: stride 2 on block {position} of the "
                    "stage; timm's builder forces stride 1 on all but a stage's first block, so start a new stage"
                )
            flat.append(string)
    return flat


def decode_timm_arch(
    strings: Sequence[str] | Sequence[Sequence[str]],
    global_params: GlobalParams | None = None,
    name: str = "",
) -> Architecture:
    """Decode timm block strings (flat, or timm's list of stages) into an :class:`Architecture`.

    The first block's input is the stem width, later ones the previous block's output. Without ``global_params``
    the stem width is the first block's ``c`` (true of timm's MixNets; pass ``GlobalParams(stem_size=32, ...)``
    for MnasNet) and the head is 1536. A ``global_params.width_multiplier`` is read as timm's
    ``channel_multiplier`` (``c`` and the stem unscaled).

    Raises:
        BlockStringError: a malformed string, or strings for which timm builds a network TF cannot express (e.g.
            ``c30``, which timm rounds to 32 channels), with the reason.
    """
    flat = _flatten_timm(strings)
    if not flat:
        raise BlockStringError("no block strings given: expected at least one block")
    blocks = []
    previous = global_params.stem_size if global_params is not None else None
    for string in flat:
        block = decode_timm(string, previous or 1)
        if previous is None:
            block = block.replace(input_filters=block.output_filters)
        blocks.append(block)
        previous = block.output_filters
    if global_params is None:
        global_params = GlobalParams(stem_size=blocks[0].input_filters, feature_size=DEFAULT_TIMM_FEATURE_SIZE)
    try:
        arch = Architecture(blocks=tuple(blocks), global_params=global_params, name=name)
    except ValueError as exc:
        raise BlockStringError(f"timm block strings {clip(str(flat))}: {exc}") from None
    problems = timm_problems(arch, global_params.width_multiplier)
    if problems:
        raise BlockStringError(
            "timm would build a network the TF grammar cannot express: " + _format_problems(problems, flat)
        )
    return arch

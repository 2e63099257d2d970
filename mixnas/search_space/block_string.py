"""Block-string codecs: pure functions between block strings and :class:`BlockArgs`.

Three grammars:

* ``tf``: the official TF MixNet grammar (``tensorflow/tpu`` ``mixnet_builder.py``), the canonical form of
  mixnas: ``r1_k3.5.7_a1.1_p1.1_s22_e6_i24_o40_se0.5_sw``. Tokens ``r k a p s e i o`` are mandatory, the stride
  has exactly two digits, ``se`` is relative to the block input, flags are ``noskip``, ``sw``, ``dilated``.
  mixnas adds one flag, ``xp`` (exponential MixConv channel partition); the official decoder ignores it.
* ``mnasnet``: the official MnasNet grammar (``mnasnet_models.py``): ``r k s e i o [se] [noskip]`` with a single
  integer kernel and no ``a`` / ``p`` / ``sw`` / ``dilated``.
* ``timm``: timm's grammar (``ir_r1_k3.5.7_a1.1_p1.1_s2_e6_c40_se0.5_nsw``): a ``ds`` / ``ir`` block type, a
  one-digit stride, output channels ``c`` only, optional ``a`` / ``p``, ``nsw`` / ``nre`` activations. Conversion
  to and from ``tf`` (:func:`tf_to_timm`, :func:`timm_to_tf`) keeps the built network identical or refuses, saying
  why (:func:`timm_problems`): timm rounds widths to multiples of 8 and computes SE widths differently.

Decoding is strict where the official code is lax: an unknown, repeated or malformed token raises
:class:`~mixnas.errors.BlockStringError` naming the string, the token and what was expected.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

from mixnas.errors import BlockStringError
from mixnas.search_space.arch import (
    MAX_EXPAND,
    MAX_GROUPS,
    MAX_KERNEL,
    MAX_LAYERS,
    MAX_REPEATS,
    MAX_WIDTH,
    Architecture,
    BlockArgs,
    GlobalParams,
    LayerSpec,
    round_filters,
)

_TOKEN = re.compile(r"^([a-z]+)([0-9].*)$", re.ASCII | re.DOTALL)
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_DECIMAL = re.compile(r"[0-9]*\.?[0-9]+", re.ASCII)
TF_FLAGS = ("noskip", "sw", "dilated", "xp")
TF_KEYS = ("r", "k", "a", "p", "s", "e", "i", "o", "se")
TF_REQUIRED = ("r", "k", "a", "p", "s", "e", "i", "o")
MNASNET_FLAGS = ("noskip",)
MNASNET_KEYS = ("r", "k", "s", "e", "i", "o", "se")
MNASNET_REQUIRED = ("r", "k", "s", "e", "i", "o")

_EXPECTED = {
    "r": f"a positive integer number of repeats, at most {MAX_REPEATS} (e.g. r2)",
    "k": f"odd kernel sizes in 1..{MAX_KERNEL} joined by '.', at most {MAX_GROUPS} (e.g. k3.5.7)",
    "a": f"expansion 1x1 kernels joined by '.', one per group, at most {MAX_GROUPS} (a1 or a1.1)",
    "p": f"projection 1x1 kernels joined by '.', one per group, at most {MAX_GROUPS} (p1 or p1.1)",
    "s": "a two-digit stride, each digit 1 or 2 (s11 or s22)",
    "e": f"a positive integer expansion ratio, at most {MAX_EXPAND} (e.g. e6)",
    "i": f"a positive integer number of input filters, at most {MAX_WIDTH} (e.g. i24)",
    "o": f"a positive integer number of output filters, at most {MAX_WIDTH} (e.g. o40)",
    "se": "a squeeze-and-excite ratio in (0, 1] (e.g. se0.25)",
}


def format_float(value: float) -> str:
    """Shortest decimal text of a float, without a trailing ``.0`` (0.25 -> '0.25', 1.0 -> '1')."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


_SHOWN = 120  # longest string or token an error message quotes in full


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}... ({len(text)} characters)"


def _fail(string: str, token: str, expected: str) -> BlockStringError:
    return BlockStringError(f"bad block string {_clip(string)!r}: token {_clip(token)!r}: expected {expected}")


def _small_int(text: str, maximum: int) -> int | None:
    """The value of ASCII digits if it is at most ``maximum``, else None (never converts a huge digit string)."""
    if not _DIGITS.fullmatch(text):
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(maximum)) or int(digits) > maximum:
        return None
    return int(digits)


_MAXIMA = {"r": MAX_REPEATS, "e": MAX_EXPAND, "i": MAX_WIDTH, "o": MAX_WIDTH, "c": MAX_WIDTH}


def _positive_int(string: str, token: str, key: str, value: str, expected: str | None = None) -> int:
    number = _small_int(value, _MAXIMA[key])
    if number is None or number < 1:
        raise _fail(string, token, expected or _EXPECTED[key])
    return number


def _int_list(string: str, token: str, key: str, value: str) -> tuple[int, ...]:
    parts = value.split(".", MAX_GROUPS)
    numbers = [_small_int(p, MAX_KERNEL) for p in parts]
    if len(parts) > MAX_GROUPS or any(n is None for n in numbers):
        raise _fail(string, token, _EXPECTED[key])
    return tuple(numbers)


def tokenize(string: str, keys: Iterable[str], flags: Iterable[str], grammar: str) -> tuple[dict, set]:
    """Split a block string into ``{key: (token, value)}`` and a set of flags, rejecting anything unexpected."""
    if not isinstance(string, str) or not string.strip():
        raise BlockStringError(f"bad block string {_clip(repr(string))}: expected a non-empty {grammar} block string")
    return _tokenize_tokens(string, string.strip().split("_"), keys, flags, grammar)


def _tokenize_tokens(
    string: str, tokens: Iterable[str], keys: Iterable[str], flags: Iterable[str], grammar: str
) -> tuple[dict, set]:
    keys, flags = tuple(keys), tuple(flags)
    options: dict[str, tuple[str, str]] = {}
    seen_flags: set[str] = set()
    for token in tokens:
        if token in flags:
            if token in seen_flags:
                raise _fail(string, token, "each flag at most once")
            seen_flags.add(token)
            continue
        match = _TOKEN.match(token)
        if not match or match.group(1) not in keys:
            allowed = ", ".join([k + "N" for k in keys] + list(flags))
            raise _fail(string, token, f"one of the {grammar} tokens {allowed}")
        key, value = match.groups()
        if key in options:
            raise _fail(string, token, f"the '{key}' token only once")
        options[key] = (token, value)
    return options, seen_flags


def _check_required(string: str, options: dict, required: Iterable[str], grammar: str) -> None:
    missing = [k for k in required if k not in options]
    if missing:
        raise BlockStringError(
            f"bad block string {_clip(string)!r}: missing mandatory {grammar} token(s) "
            + ", ".join(f"'{k}' ({_EXPECTED[k]})" for k in missing)
        )


def _se_ratio(string: str, options: dict) -> float | None:
    if "se" not in options:
        return None
    token, value = options["se"]
    if len(value) > 20 or not _DECIMAL.fullmatch(value):
        raise _fail(string, token, _EXPECTED["se"])
    ratio = float(value)
    if not 0 < ratio <= 1:
        raise _fail(string, token, _EXPECTED["se"])
    return ratio


def _stride(string: str, options: dict, digits: int) -> tuple[int, int]:
    token, value = options["s"]
    expected = _EXPECTED["s"] if digits == 2 else "a one-digit stride, 1 or 2 (s1 or s2)"
    if len(value) != digits or any(c not in "12" for c in value):
        raise _fail(string, token, expected)
    return (int(value[0]), int(value[-1]))


def _build(string: str, **kwargs: Any) -> BlockArgs:
    try:
        return BlockArgs(**kwargs)
    except ValueError as exc:
        raise BlockStringError(f"bad block string {_clip(string)!r}: {exc}") from None


def decode_tf(string: str) -> BlockArgs:
    """Decode one official TF MixNet block string."""
    options, flags = tokenize(string, TF_KEYS, TF_FLAGS, "TF MixNet")
    _check_required(string, options, TF_REQUIRED, "TF MixNet")
    kernels = _int_list(string, options["k"][0], "k", options["k"][1])
    for k in kernels:
        if k % 2 == 0 or k < 1:
            raise _fail(string, options["k"][0], _EXPECTED["k"])
    expand = _int_list(string, options["a"][0], "a", options["a"][1])
    project = _int_list(string, options["p"][0], "p", options["p"][1])
    for key, value in (("a", expand), ("p", project)):
        if any(v != 1 for v in value):
            raise _fail(string, options[key][0], _EXPECTED[key] + "; only 1x1 kernels are supported")
    return _build(
        string,
        num_repeat=_positive_int(string, options["r"][0], "r", options["r"][1]),
        kernel_sizes=kernels,
        expand_kernels=expand,
        project_kernels=project,
        strides=_stride(string, options, 2),
        expand_ratio=_positive_int(string, options["e"][0], "e", options["e"][1]),
        input_filters=_positive_int(string, options["i"][0], "i", options["i"][1]),
        output_filters=_positive_int(string, options["o"][0], "o", options["o"][1]),
        se_ratio=_se_ratio(string, options),
        swish="sw" in flags,
        id_skip="noskip" not in flags,
        dilated="dilated" in flags,
        partition="exponential" if "xp" in flags else "equal",
    )


def _shared_tokens(block: BlockArgs, kernels: list[str]) -> list[str]:
    """The tokens the TF and MnasNet grammars write alike, around their kernel tokens: ``r K s e i o [se] [noskip]``."""
    tokens = [f"r{block.num_repeat}", *kernels, f"s{block.strides[0]}{block.strides[1]}", f"e{block.expand_ratio}",
              f"i{block.input_filters}", f"o{block.output_filters}"]
    if block.se_ratio:
        tokens.append(f"se{format_float(block.se_ratio)}")
    if not block.id_skip:
        tokens.append("noskip")
    return tokens


def encode_tf(block: BlockArgs) -> str:
    """Encode a block in the canonical TF MixNet token order ``r k a p s e i o [se] [noskip] [sw] [dilated]``."""
    kernels = ["k" + ".".join(str(k) for k in block.kernel_sizes),
               "a" + ".".join(str(k) for k in block.expand_kernels),
               "p" + ".".join(str(k) for k in block.project_kernels)]
    tokens = _shared_tokens(block, kernels)
    if block.swish:
        tokens.append("sw")
    if block.dilated:
        tokens.append("dilated")
    if block.partition == "exponential":
        tokens.append("xp")
    return "_".join(tokens)


def decode_mnasnet(string: str) -> BlockArgs:
    """Decode one official MnasNet block string (single kernel, ungrouped 1x1, ReLU)."""
    options, flags = tokenize(string, MNASNET_KEYS, MNASNET_FLAGS, "MnasNet")
    _check_required(string, options, MNASNET_REQUIRED, "MnasNet")
    token, value = options["k"]
    kernel = _small_int(value, MAX_KERNEL)
    if kernel is None or kernel % 2 == 0:
        raise _fail(string, token, f"a single odd kernel size in 1..{MAX_KERNEL} (e.g. k3 or k5)")
    return _build(
        string,
        num_repeat=_positive_int(string, options["r"][0], "r", options["r"][1]),
        kernel_sizes=(kernel,),
        strides=_stride(string, options, 2),
        expand_ratio=_positive_int(string, options["e"][0], "e", options["e"][1]),
        input_filters=_positive_int(string, options["i"][0], "i", options["i"][1]),
        output_filters=_positive_int(string, options["o"][0], "o", options["o"][1]),
        se_ratio=_se_ratio(string, options),
        id_skip="noskip" not in flags,
    )


def encode_mnasnet(block: BlockArgs) -> str:
    """Encode a block in the MnasNet grammar; refuse what it cannot express."""
    reasons = []
    if len(block.kernel_sizes) != 1:
        reasons.append(f"MixConv kernels {list(block.kernel_sizes)} (MnasNet has one kernel per block)")
    if block.expand_groups != 1 or block.project_groups != 1:
        reasons.append("grouped 1x1 convolutions (MnasNet has no a/p tokens)")
    if block.swish:
        reasons.append("swish (MnasNet blocks are ReLU)")
    if block.dilated:
        reasons.append("the dilated flag")
    if block.partition != "equal":
        reasons.append("an exponential channel partition")
    if reasons:
        raise BlockStringError(
            f"cannot encode block {encode_tf(block)!r} in the MnasNet grammar: it uses " + "; ".join(reasons)
        )
    return "_".join(_shared_tokens(block, [f"k{block.kernel_sizes[0]}"]))


def split_block_strings(text: str) -> list[str]:
    """Split a user's text (space-, comma- or newline-separated; ``#`` comments) into block strings."""
    strings = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        strings.extend(s for s in re.split(r"[\s,]+", line) if s)
    return strings


DEFAULT_FEATURE_SIZE = {"tf": 1536, "mnasnet": 1280}
_BLOCK_DECODERS = {"tf": decode_tf, "mnasnet": decode_mnasnet}
_BLOCK_ENCODERS = {"tf": encode_tf, "mnasnet": encode_mnasnet}
GRAMMARS = ("tf", "mnasnet", "timm")


def _check_grammar(grammar: str) -> None:
    if grammar not in GRAMMARS:
        raise BlockStringError(f"unknown block-string grammar {grammar!r}: expected one of {list(GRAMMARS)}")


def decode_arch(
    strings: Iterable[str],
    grammar: str = "tf",
    global_params: GlobalParams | None = None,
    name: str = "",
) -> Architecture:
    """Decode a list of block strings into an :class:`Architecture`.

    Without ``global_params`` the stem width is the first block's input filters and the head is 1536 (TF MixNet)
    or 1280 (MnasNet), as in the official builders.
    """
    _check_grammar(grammar)
    strings = list(strings)
    if not strings:
        raise BlockStringError("no block strings given: expected at least one block")
    if len(strings) > MAX_LAYERS:  # each block is at least one layer
        raise BlockStringError(f"{len(strings)} block strings: expected at most {MAX_LAYERS} (the layer limit)")
    if grammar == "timm":
        return decode_timm_arch(strings, global_params=global_params, name=name)
    blocks = tuple(_BLOCK_DECODERS[grammar](s) for s in strings)
    if global_params is None:
        global_params = GlobalParams(
            stem_size=blocks[0].input_filters, feature_size=DEFAULT_FEATURE_SIZE[grammar]
        )
    try:
        return Architecture(blocks=blocks, global_params=global_params, name=name)
    except ValueError as exc:
        raise BlockStringError(f"block strings {_clip(str(strings))}: {exc}") from None


def encode_arch(arch: Architecture, grammar: str = "tf") -> list[str]:
    """Encode an architecture's blocks in a grammar (``tf`` is canonical and always succeeds)."""
    _check_grammar(grammar)
    if grammar == "timm":
        return encode_timm_arch(arch)
    return [_BLOCK_ENCODERS[grammar](b) for b in arch.blocks]


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
    **_EXPECTED,
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
        raise _fail(
            string,
            token,
            f"nsw or nre: the {_TIMM_OTHER_ACTIVATIONS[token]} activation has no TF MixNet equivalent "
            "(TF blocks are ReLU or swish)",
        )
    if token == "skip":
        raise _fail(string, token, "noskip or nothing: 'skip' only applies to timm's cn blocks")
    match = _TOKEN.match(token)
    if match and match.group(1) in _TIMM_OTHER_KEYS:
        meaning = _TIMM_OTHER_KEYS[match.group(1)]
        raise _fail(string, token, f"a token with a TF MixNet equivalent; timm's '{match.group(1)}' means {meaning}")


def _timm_expand_ratio(string: str, block_type: str, options: dict) -> int:
    if "e" not in options:
        if block_type == "ir":
            raise BlockStringError(
                f"bad block string {_clip(string)!r}: missing mandatory timm token 'e' ({_TIMM_EXPECTED['e']})"
            )
        return 1
    token, value = options["e"]
    if len(value) > 20 or not _DECIMAL.fullmatch(value) or float(value) > MAX_EXPAND:
        raise _fail(string, token, _TIMM_EXPECTED["e"])
    ratio = float(value)
    if not ratio.is_integer() or ratio < 1:
        raise _fail(
            string,
            token,
            _TIMM_EXPECTED["e"] + "; timm accepts a fractional ratio, but mixnas blocks (and TF) need an integer",
        )
    if block_type == "ir" and ratio == 1:
        raise _fail(
            string,
            token,
            "e > 1 for an ir block: timm's InvertedResidual always builds the 1x1 expansion conv, which a TF e1 "
            "block omits; write the block as ds_ (depthwise, [SE], pointwise) instead",
        )
    if block_type == "ds" and ratio != 1:
        raise _fail(string, token, "e1 or no e token: a ds block has no expansion conv (use ir_ to expand)")
    return int(ratio)


def _check_timm_block_type(string: str, block_type: str) -> None:
    """Refuse a first token other than ``ir`` / ``ds``, saying why timm's other block types are not supported."""
    if block_type in _TIMM_OTHER_TYPES:
        raise _fail(
            string,
            block_type,
            f"the block type ir or ds: timm's {block_type} ({_TIMM_OTHER_TYPES[block_type]}) has no TF MixNet "
            "equivalent",
        )
    if block_type not in TIMM_BLOCK_TYPES:
        raise _fail(string, block_type, "the timm block type ir or ds as the first token (e.g. ir_r1_k3_s2_e6_c24)")


def _timm_one_by_one(string: str, options: dict, key: str) -> tuple[int, ...]:
    """The 1x1 group kernels of an ``a`` / ``p`` token (``(1,)`` when absent); only 1x1 kernels are built."""
    if key not in options:
        return (1,)
    value = _int_list(string, options[key][0], key, options[key][1])
    if any(v != 1 for v in value):
        raise _fail(string, options[key][0], _EXPECTED[key] + "; only 1x1 kernels are supported")
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
        raise BlockStringError(f"bad block string {_clip(repr(string))}: expected a non-empty timm block string")
    block_type, _, rest = string.strip().partition("_")
    _check_timm_block_type(string, block_type)
    tokens = rest.split("_") if rest else []
    for token in tokens:
        _timm_special_token(string, token)
    options, flags = _tokenize_tokens(string, tokens, TIMM_KEYS, TIMM_FLAGS, "timm")
    missing = [k for k in TIMM_REQUIRED if k not in options]
    if missing:
        raise BlockStringError(
            f"bad block string {_clip(string)!r}: missing mandatory timm token(s) "
            + ", ".join(f"'{k}' ({_TIMM_EXPECTED[k]})" for k in missing)
        )
    if {"nsw", "nre"} <= flags:
        raise _fail(string, "nre", "at most one activation token (nsw or nre)")
    kernels = _int_list(string, options["k"][0], "k", options["k"][1])
    if any(k % 2 == 0 for k in kernels):
        raise _fail(string, options["k"][0], _EXPECTED["k"])
    one_by_one = {key: _timm_one_by_one(string, options, key) for key in ("a", "p")}
    return _build(
        string,
        num_repeat=_positive_int(string, options["r"][0], "r", options["r"][1]),
        kernel_sizes=kernels,
        expand_kernels=one_by_one["a"],
        project_kernels=one_by_one["p"],
        strides=_stride(string, options, 1),
        expand_ratio=_timm_expand_ratio(string, block_type, options),
        input_filters=input_filters,
        output_filters=_positive_int(string, options["c"][0], "c", options["c"][1], _TIMM_EXPECTED["c"]),
        se_ratio=_se_ratio(string, options),
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
            f"timm block strings {_clip(repr(items))}: expected a list of strings or a list of stages (lists of strings)"
        )
    flat = []
    for stage_index, stage in enumerate(items):
        if not stage:
            raise BlockStringError(f"timm stage {stage_index} is empty: expected at least one block string")
        for position, string in enumerate(stage):
            if position > 0 and decode_timm(string, 1).stride > 1:
                raise BlockStringError(
                    f"bad block string {_clip(string)!r} in timm stage {stage_index}: stride 2 on block {position} of the "
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
        raise BlockStringError(f"timm block strings {_clip(str(flat))}: {exc}") from None
    problems = timm_problems(arch, global_params.width_multiplier)
    if problems:
        raise BlockStringError(
            "timm would build a network the TF grammar cannot express: " + _format_problems(problems, flat)
        )
    return arch


def tf_to_timm(
    strings: Iterable[str],
    stem_size: int,
    *,
    width_multiplier: float | None = None,
    channel_multiplier: float | None = None,
) -> list[str]:
    """Convert TF MixNet block strings to timm's grammar, keeping the built network identical.

    Args:
        strings: TF block strings.
        stem_size: the stem width (timm strings have no input width, so it must be consistent with the first ``i``).
        width_multiplier: TF's width ("depth") multiplier, if any; folded into ``c`` unless ``channel_multiplier``.
        channel_multiplier: keep ``c`` unscaled for timm's ``channel_multiplier`` (must equal ``width_multiplier``).

    Raises:
        BlockStringError: a malformed string, or the reason timm cannot build the same network.
    """
    params = GlobalParams(stem_size=stem_size, width_multiplier=width_multiplier)
    return encode_timm_arch(decode_arch(strings, "tf", params), channel_multiplier)


def timm_to_tf(
    strings: Sequence[str] | Sequence[Sequence[str]],
    stem_size: int,
    *,
    channel_multiplier: float | None = None,
) -> list[str]:
    """Convert timm block strings (flat or staged) to canonical TF MixNet strings for the same network.

    With ``channel_multiplier`` the TF strings keep the unscaled widths and need the same TF width multiplier.

    Raises:
        BlockStringError: a malformed string, or the reason TF cannot build the network timm would.
    """
    params = GlobalParams(stem_size=stem_size, width_multiplier=channel_multiplier)
    return [encode_tf(b) for b in decode_timm_arch(strings, params).blocks]


# --- the global-settings header ----------------------------------------------------------------------------
#
# Block strings carry no global settings, so mixnas writes them on a header line before the strings:
# ``# mixnas: resolution=32 num_classes=10 stem=16 head=256 width=none depth=1 dropout=0.2``. It is a comment to
# every other reader (the official decoders never see it, timm users copy the strings). See docs/block_strings.md.

HEADER_MARK = re.compile(r"^\s*#\s*mixnas:", re.ASCII)
# header key -> (GlobalParams field, may be "none")
HEADER_KEYS = {
    "resolution": ("resolution", False),
    "num_classes": ("num_classes", False),
    "stem": ("stem_size", False),
    "head": ("feature_size", False),
    "width": ("width_multiplier", True),
    "depth": ("depth_multiplier", True),
    "dropout": ("dropout_rate", False),
    "divisor": ("depth_divisor", False),
    "min_depth": ("min_depth", True),
    "bn_momentum": ("bn_momentum", False),
    "bn_epsilon": ("bn_epsilon", False),
}
_ALWAYS_WRITTEN = ("resolution", "num_classes", "stem", "head", "width", "depth", "dropout")
_INT_FIELDS = ("resolution", "num_classes", "stem_size", "feature_size", "depth_divisor", "min_depth")


def _header_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return format_float(value)
    return str(value)


def encode_header(params: GlobalParams, grammar: str = "tf") -> str:
    """The ``# mixnas: key=value ...`` line that carries ``params`` (and, unless ``tf``, the grammar).

    The seven main settings are always written, the others only where they differ from the default;
    ``width=none`` means no width multiplier (widths as written), which is not the same as ``width=1``.
    """
    _check_grammar(grammar)
    default = GlobalParams()
    parts = []
    for key, (name, _) in HEADER_KEYS.items():
        value = getattr(params, name)
        if name == "depth_multiplier" and value is None:
            value = 1
        if key in _ALWAYS_WRITTEN or value != getattr(default, name):
            parts.append(f"{key}={_header_value(value)}")
    if grammar != "tf":
        parts.append(f"grammar={grammar}")
    return "# mixnas: " + " ".join(parts)


def _parse_header_value(key: str, text: str) -> Any:
    name, nullable = HEADER_KEYS[key]
    if text == "none":
        if not nullable:
            raise BlockStringError(f"header {key}={text}: 'none' is allowed only for width, depth and min_depth")
        return None
    try:
        return int(text) if name in _INT_FIELDS else float(text)
    except ValueError:
        what = "an integer" if name in _INT_FIELDS else "a number"
        raise BlockStringError(f"header {key}={_clip(text)}: expected {what}") from None


def parse_header(line: str) -> dict[str, Any]:
    """Parse one ``# mixnas: key=value ...`` line into ``GlobalParams`` field values (plus ``grammar`` if given).

    Raises:
        BlockStringError: not a header, an unknown or repeated key, or a malformed value.
    """
    match = HEADER_MARK.match(line)
    if not match:
        raise BlockStringError(f"not a mixnas header line: {_clip(line)!r}: expected '# mixnas: key=value ...'")
    out: dict[str, Any] = {}
    allowed = [*HEADER_KEYS, "grammar"]
    for token in re.split(r"[\s,]+", line[match.end():].strip()):
        if not token:
            continue
        key, sep, value = token.partition("=")
        if not sep or key not in allowed:
            raise BlockStringError(f"header token {_clip(token)!r}: expected key=value with a key in {allowed}")
        field = "grammar" if key == "grammar" else HEADER_KEYS[key][0]
        if field in out:
            raise BlockStringError(f"header token {_clip(token)!r}: {key} is given twice")
        if key == "grammar":
            _check_grammar(value)
            out[field] = value
        else:
            out[field] = _parse_header_value(key, value)
    return out


def split_header(text: str) -> tuple[dict[str, Any] | None, str]:
    """Take the ``# mixnas:`` header line out of a text of block strings: (parsed header or None, the rest).

    Raises:
        BlockStringError: a malformed header, or more than one.
    """
    header = None
    rest = []
    for line in text.splitlines():
        if HEADER_MARK.match(line):
            if header is not None:
                raise BlockStringError("two '# mixnas:' header lines: expected at most one")
            header = parse_header(line)
        else:
            rest.append(line)
    return header, "\n".join(rest)


def apply_header(arch: Architecture, header: dict[str, Any]) -> dict[str, Any]:
    """The global params of ``arch`` (decoded without a header) with the header's values put in, as a dict."""
    params = arch.global_params.to_dict()
    params.update({k: v for k, v in header.items() if k != "grammar"})
    return params


def encode_arch_text(arch: Architecture, grammar: str = "tf") -> str:
    """A self-contained text of ``arch``: the header line, then the block strings.

    ``tf`` / ``mnasnet``: one block string per line. ``timm``: one timm *stage* per line (its strings joined by
    spaces, :func:`encode_timm_stages`), with the width multiplier folded into ``c`` and the stem; the header then
    gives the stem and head timm must be built with. Reading the text back (``resolve_arch``) rebuilds the same
    network: for ``tf`` the same record (same :attr:`Architecture.id`), for ``timm`` the same layers.

    Raises:
        BlockStringError: the grammar cannot express the architecture (the reason).
    """
    if grammar == "timm":
        stages = encode_timm_stages(arch)
        params = _replace_params(arch.global_params, stem_size=arch.stem_channels, width_multiplier=None)
        lines = [" ".join(stage) for stage in stages]
        return "\n".join([encode_header(params, "timm"), *lines]) + "\n"
    return "\n".join([encode_header(arch.global_params, grammar), *encode_arch(arch, grammar)]) + "\n"


def _replace_params(params: GlobalParams, **changes: Any) -> GlobalParams:
    return GlobalParams.from_dict({**params.to_dict(), **changes})

"""Block-string codecs: pure functions between block strings and :class:`BlockArgs`.

The official grammars, ``tf`` and ``mnasnet`` (:mod:`~mixnas.search_space.timm_string` holds timm's, and
:mod:`~mixnas.search_space.arch_strings` a whole architecture in any of the three):

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
from typing import Any, Iterable

from mixnas.errors import BlockStringError
from mixnas.search_space.arch import MAX_EXPAND, MAX_GROUPS, MAX_KERNEL, MAX_REPEATS, MAX_WIDTH, BlockArgs

TOKEN = re.compile(r"^([a-z]+)([0-9].*)$", re.ASCII | re.DOTALL)
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
DECIMAL = re.compile(r"[0-9]*\.?[0-9]+", re.ASCII)
TF_FLAGS = ("noskip", "sw", "dilated", "xp")
TF_KEYS = ("r", "k", "a", "p", "s", "e", "i", "o", "se")
TF_REQUIRED = ("r", "k", "a", "p", "s", "e", "i", "o")
MNASNET_FLAGS = ("noskip",)
MNASNET_KEYS = ("r", "k", "s", "e", "i", "o", "se")
MNASNET_REQUIRED = ("r", "k", "s", "e", "i", "o")

EXPECTED = {
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


def clip(text: str) -> str:
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}... ({len(text)} characters)"


def token_error(string: str, token: str, expected: str) -> BlockStringError:
    return BlockStringError(f"bad block string {clip(string)!r}: token {clip(token)!r}: expected {expected}")


def _small_int(text: str, maximum: int) -> int | None:
    """The value of ASCII digits if it is at most ``maximum``, else None (never converts a huge digit string)."""
    if not _DIGITS.fullmatch(text):
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(maximum)) or int(digits) > maximum:
        return None
    return int(digits)


_MAXIMA = {"r": MAX_REPEATS, "e": MAX_EXPAND, "i": MAX_WIDTH, "o": MAX_WIDTH, "c": MAX_WIDTH}


def positive_int(string: str, token: str, key: str, value: str, expected: str | None = None) -> int:
    number = _small_int(value, _MAXIMA[key])
    if number is None or number < 1:
        raise token_error(string, token, expected or EXPECTED[key])
    return number


def int_list(string: str, token: str, key: str, value: str) -> tuple[int, ...]:
    parts = value.split(".", MAX_GROUPS)
    numbers = [_small_int(p, MAX_KERNEL) for p in parts]
    if len(parts) > MAX_GROUPS or any(n is None for n in numbers):
        raise token_error(string, token, EXPECTED[key])
    return tuple(numbers)


def tokenize(string: str, keys: Iterable[str], flags: Iterable[str], grammar: str) -> tuple[dict, set]:
    """Split a block string into ``{key: (token, value)}`` and a set of flags, rejecting anything unexpected."""
    if not isinstance(string, str) or not string.strip():
        raise BlockStringError(f"bad block string {clip(repr(string))}: expected a non-empty {grammar} block string")
    return tokenize_tokens(string, string.strip().split("_"), keys, flags, grammar)


def tokenize_tokens(
    string: str, tokens: Iterable[str], keys: Iterable[str], flags: Iterable[str], grammar: str
) -> tuple[dict, set]:
    keys, flags = tuple(keys), tuple(flags)
    options: dict[str, tuple[str, str]] = {}
    seen_flags: set[str] = set()
    for token in tokens:
        if token in flags:
            if token in seen_flags:
                raise token_error(string, token, "each flag at most once")
            seen_flags.add(token)
            continue
        match = TOKEN.match(token)
        if not match or match.group(1) not in keys:
            allowed = ", ".join([k + "N" for k in keys] + list(flags))
            raise token_error(string, token, f"one of the {grammar} tokens {allowed}")
        key, value = match.groups()
        if key in options:
            raise token_error(string, token, f"the '{key}' token only once")
        options[key] = (token, value)
    return options, seen_flags


def _check_required(string: str, options: dict, required: Iterable[str], grammar: str) -> None:
    missing = [k for k in required if k not in options]
    if missing:
        raise BlockStringError(
            f"bad block string {clip(string)!r}: missing mandatory {grammar} token(s) "
            + ", ".join(f"'{k}' ({EXPECTED[k]})" for k in missing)
        )


def se_ratio(string: str, options: dict) -> float | None:
    if "se" not in options:
        return None
    token, value = options["se"]
    if len(value) > 20 or not DECIMAL.fullmatch(value):
        raise token_error(string, token, EXPECTED["se"])
    ratio = float(value)
    if not 0 < ratio <= 1:
        raise token_error(string, token, EXPECTED["se"])
    return ratio


def stride_digits(string: str, options: dict, digits: int) -> tuple[int, int]:
    token, value = options["s"]
    expected = EXPECTED["s"] if digits == 2 else "a one-digit stride, 1 or 2 (s1 or s2)"
    if len(value) != digits or any(c not in "12" for c in value):
        raise token_error(string, token, expected)
    return (int(value[0]), int(value[-1]))


def build_block(string: str, **kwargs: Any) -> BlockArgs:
    try:
        return BlockArgs(**kwargs)
    except ValueError as exc:
        raise BlockStringError(f"bad block string {clip(string)!r}: {exc}") from None


def decode_tf(string: str) -> BlockArgs:
    """Decode one official TF MixNet block string."""
    options, flags = tokenize(string, TF_KEYS, TF_FLAGS, "TF MixNet")
    _check_required(string, options, TF_REQUIRED, "TF MixNet")
    kernels = int_list(string, options["k"][0], "k", options["k"][1])
    for k in kernels:
        if k % 2 == 0 or k < 1:
            raise token_error(string, options["k"][0], EXPECTED["k"])
    expand = int_list(string, options["a"][0], "a", options["a"][1])
    project = int_list(string, options["p"][0], "p", options["p"][1])
    for key, value in (("a", expand), ("p", project)):
        if any(v != 1 for v in value):
            raise token_error(string, options[key][0], EXPECTED[key] + "; only 1x1 kernels are supported")
    return build_block(
        string,
        num_repeat=positive_int(string, options["r"][0], "r", options["r"][1]),
        kernel_sizes=kernels,
        expand_kernels=expand,
        project_kernels=project,
        strides=stride_digits(string, options, 2),
        expand_ratio=positive_int(string, options["e"][0], "e", options["e"][1]),
        input_filters=positive_int(string, options["i"][0], "i", options["i"][1]),
        output_filters=positive_int(string, options["o"][0], "o", options["o"][1]),
        se_ratio=se_ratio(string, options),
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
        raise token_error(string, token, f"a single odd kernel size in 1..{MAX_KERNEL} (e.g. k3 or k5)")
    return build_block(
        string,
        num_repeat=positive_int(string, options["r"][0], "r", options["r"][1]),
        kernel_sizes=(kernel,),
        strides=stride_digits(string, options, 2),
        expand_ratio=positive_int(string, options["e"][0], "e", options["e"][1]),
        input_filters=positive_int(string, options["i"][0], "i", options["i"][1]),
        output_filters=positive_int(string, options["o"][0], "o", options["o"][1]),
        se_ratio=se_ratio(string, options),
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

"""Block-string codecs: pure functions between block strings and :class:`BlockArgs`.

Three grammars:

* ``tf``: the official TF MixNet grammar (``tensorflow/tpu`` ``mixnet_builder.py``), the canonical form of
  mixnas: ``r1_k3.5.7_a1.1_p1.1_s22_e6_i24_o40_se0.5_sw``. Tokens ``r k a p s e i o`` are mandatory, the stride
  has exactly two digits, ``se`` is relative to the block input, flags are ``noskip``, ``sw``, ``dilated``.
  mixnas adds one flag, ``xp`` (exponential MixConv channel partition); the official decoder ignores it.
* ``mnasnet``: the official MnasNet grammar (``mnasnet_models.py``): ``r k s e i o [se] [noskip]`` with a single
  integer kernel and no ``a`` / ``p`` / ``sw`` / ``dilated``.
* ``timm``: timm's grammar (``ir_r1_k3.5.7_a1.1_p1.1_s2_e6_c40_se0.5_nsw``), with conversion to and from ``tf``.

Decoding is strict where the official code is lax: an unknown, repeated or malformed token raises
:class:`~mixnas.errors.BlockStringError` naming the string, the token and what was expected.
"""

from __future__ import annotations

import re
from typing import Iterable

from mixnas.errors import BlockStringError
from mixnas.search_space.arch import Architecture, BlockArgs, GlobalParams

_TOKEN = re.compile(r"^([a-z]+)(\d.*)$")
TF_FLAGS = ("noskip", "sw", "dilated", "xp")
TF_KEYS = ("r", "k", "a", "p", "s", "e", "i", "o", "se")
TF_REQUIRED = ("r", "k", "a", "p", "s", "e", "i", "o")
MNASNET_FLAGS = ("noskip",)
MNASNET_KEYS = ("r", "k", "s", "e", "i", "o", "se")
MNASNET_REQUIRED = ("r", "k", "s", "e", "i", "o")

_EXPECTED = {
    "r": "a positive integer number of repeats (e.g. r2)",
    "k": "odd kernel sizes joined by '.' (e.g. k3.5.7)",
    "a": "expansion 1x1 kernels joined by '.', one per group (a1 or a1.1)",
    "p": "projection 1x1 kernels joined by '.', one per group (p1 or p1.1)",
    "s": "a two-digit stride, each digit 1 or 2 (s11 or s22)",
    "e": "a positive integer expansion ratio (e.g. e6)",
    "i": "a positive integer number of input filters (e.g. i24)",
    "o": "a positive integer number of output filters (e.g. o40)",
    "se": "a squeeze-and-excite ratio in (0, 1] (e.g. se0.25)",
}


def format_float(value: float) -> str:
    """Shortest decimal text of a float, without a trailing ``.0`` (0.25 -> '0.25', 1.0 -> '1')."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _fail(string: str, token: str, expected: str) -> BlockStringError:
    return BlockStringError(f"bad block string {string!r}: token {token!r}: expected {expected}")


def _positive_int(string: str, token: str, key: str, value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise _fail(string, token, _EXPECTED[key])
    return int(value)


def _int_list(string: str, token: str, key: str, value: str) -> tuple[int, ...]:
    parts = value.split(".")
    if not all(p.isdigit() for p in parts):
        raise _fail(string, token, _EXPECTED[key])
    return tuple(int(p) for p in parts)


def tokenize(string: str, keys: Iterable[str], flags: Iterable[str], grammar: str) -> tuple[dict, set]:
    """Split a block string into ``{key: (token, value)}`` and a set of flags, rejecting anything unexpected."""
    keys, flags = tuple(keys), tuple(flags)
    if not isinstance(string, str) or not string.strip():
        raise BlockStringError(f"bad block string {string!r}: expected a non-empty {grammar} block string")
    options: dict[str, tuple[str, str]] = {}
    seen_flags: set[str] = set()
    for token in string.strip().split("_"):
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
            f"bad block string {string!r}: missing mandatory {grammar} token(s) "
            + ", ".join(f"'{k}' ({_EXPECTED[k]})" for k in missing)
        )


def _se_ratio(string: str, options: dict) -> float | None:
    if "se" not in options:
        return None
    token, value = options["se"]
    try:
        ratio = float(value)
    except ValueError:
        raise _fail(string, token, _EXPECTED["se"]) from None
    if not 0 < ratio <= 1:
        raise _fail(string, token, _EXPECTED["se"])
    return ratio


def _stride(string: str, options: dict, digits: int) -> tuple[int, int]:
    token, value = options["s"]
    expected = _EXPECTED["s"] if digits == 2 else "a one-digit stride, 1 or 2 (s1 or s2)"
    if len(value) != digits or any(c not in "12" for c in value):
        raise _fail(string, token, expected)
    return (int(value[0]), int(value[-1]))


def _build(string: str, token: str, **kwargs) -> BlockArgs:
    try:
        return BlockArgs(**kwargs)
    except ValueError as exc:
        raise BlockStringError(f"bad block string {string!r}: {exc}") from None


def decode_tf(string: str) -> BlockArgs:
    """Decode one official TF MixNet block string."""
    options, flags = tokenize(string, TF_KEYS, TF_FLAGS, "TF MixNet")
    _check_required(string, options, TF_REQUIRED, "TF MixNet")
    kernels = _int_list(string, *options["k"][:1], "k", options["k"][1])
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


def encode_tf(block: BlockArgs) -> str:
    """Encode a block in the canonical TF MixNet token order ``r k a p s e i o [se] [noskip] [sw] [dilated]``."""
    tokens = [
        f"r{block.num_repeat}",
        "k" + ".".join(str(k) for k in block.kernel_sizes),
        "a" + ".".join(str(k) for k in block.expand_kernels),
        "p" + ".".join(str(k) for k in block.project_kernels),
        f"s{block.strides[0]}{block.strides[1]}",
        f"e{block.expand_ratio}",
        f"i{block.input_filters}",
        f"o{block.output_filters}",
    ]
    if block.se_ratio:
        tokens.append(f"se{format_float(block.se_ratio)}")
    if not block.id_skip:
        tokens.append("noskip")
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
    if not value.isdigit() or int(value) % 2 == 0:
        raise _fail(string, token, "a single odd kernel size (e.g. k3 or k5)")
    return _build(
        string,
        string,
        num_repeat=_positive_int(string, options["r"][0], "r", options["r"][1]),
        kernel_sizes=(int(value),),
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
    tokens = [
        f"r{block.num_repeat}",
        f"k{block.kernel_sizes[0]}",
        f"s{block.strides[0]}{block.strides[1]}",
        f"e{block.expand_ratio}",
        f"i{block.input_filters}",
        f"o{block.output_filters}",
    ]
    if block.se_ratio:
        tokens.append(f"se{format_float(block.se_ratio)}")
    if not block.id_skip:
        tokens.append("noskip")
    return "_".join(tokens)


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
        raise BlockStringError(f"block strings {strings}: {exc}") from None


def encode_arch(arch: Architecture, grammar: str = "tf") -> list[str]:
    """Encode an architecture's blocks in a grammar (``tf`` is canonical and always succeeds)."""
    _check_grammar(grammar)
    if grammar == "timm":
        return encode_timm_arch(arch)
    return [_BLOCK_ENCODERS[grammar](b) for b in arch.blocks]


def decode_timm_arch(strings: list[str], global_params: GlobalParams | None = None, name: str = "") -> Architecture:
    raise BlockStringError("the timm grammar is not implemented yet")  # replaced by the timm codec


def encode_timm_arch(arch: Architecture) -> list[str]:
    raise BlockStringError("the timm grammar is not implemented yet")  # replaced by the timm codec

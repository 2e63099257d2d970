"""A whole architecture as block strings, in any grammar (``tf``, ``mnasnet``, ``timm``): :func:`decode_arch` and
:func:`encode_arch`, which dispatch to the block codecs of :mod:`~mixnas.search_space.block_string` and
:mod:`~mixnas.search_space.timm_string`.
"""


from typing import Iterable, Sequence

from mixnas.errors import BlockStringError
from mixnas.search_space.block_string import clip, decode_mnasnet, decode_tf, encode_mnasnet, encode_tf
from mixnas.search_space.timm_string import decode_timm_arch, encode_timm_arch
from mixnas.search_space.arch import MAX_LAYERS, Architecture, GlobalParams

DEFAULT_FEATURE_SIZE = {"tf": 1536, "mnasnet": 1280}
_BLOCK_DECODERS = {"tf": decode_tf, "mnasnet": decode_mnasnet}
_BLOCK_ENCODERS = {"tf": encode_tf, "mnasnet": encode_mnasnet}
GRAMMARS = ("tf", "mnasnet", "timm")


def check_grammar(grammar: str) -> None:
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
    check_grammar(grammar)
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
        raise BlockStringError(f"block strings {clip(str(strings))}: {exc}") from None


def encode_arch(arch: Architecture, grammar: str = "tf") -> list[str]:
    """Encode an architecture's blocks in a grammar (``tf`` is canonical and always succeeds)."""
    check_grammar(grammar)
    if grammar == "timm":
        return encode_timm_arch(arch)
    return [_BLOCK_ENCODERS[grammar](b) for b in arch.blocks]


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

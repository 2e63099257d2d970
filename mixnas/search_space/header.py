"""The ``# mixnas:`` header: the global settings (resolution, classes, stem, head, width, depth, dropout) that
block strings do not carry, written on one line before them (:func:`encode_header`, :func:`encode_arch_text`)
and read back (:func:`parse_header`, :func:`split_header`, :func:`apply_header`).
"""


import re
from typing import Any

from mixnas.errors import BlockStringError
from mixnas.search_space.block_string import clip, format_float
from mixnas.search_space.timm_string import encode_timm_stages
from mixnas.search_space.arch_strings import check_grammar, encode_arch
from mixnas.search_space.arch import Architecture, GlobalParams

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
    check_grammar(grammar)
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
        raise BlockStringError(f"header {key}={clip(text)}: expected {what}") from None


def parse_header(line: str) -> dict[str, Any]:
    """Parse one ``# mixnas: key=value ...`` line into ``GlobalParams`` field values (plus ``grammar`` if given).

    Raises:
        BlockStringError: not a header, an unknown or repeated key, or a malformed value.
    """
    match = HEADER_MARK.match(line)
    if not match:
        raise BlockStringError(f"not a mixnas header line: {clip(line)!r}: expected '# mixnas: key=value ...'")
    out: dict[str, Any] = {}
    allowed = [*HEADER_KEYS, "grammar"]
    for token in re.split(r"[\s,]+", line[match.end():].strip()):
        if not token:
            continue
        key, sep, value = token.partition("=")
        if not sep or key not in allowed:
            raise BlockStringError(f"header token {clip(token)!r}: expected key=value with a key in {allowed}")
        field = "grammar" if key == "grammar" else HEADER_KEYS[key][0]
        if field in out:
            raise BlockStringError(f"header token {clip(token)!r}: {key} is given twice")
        if key == "grammar":
            check_grammar(value)
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

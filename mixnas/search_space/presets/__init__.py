"""Built-in presets: reference architectures (``archs/*.yaml``) and search spaces (``spaces/*.yaml``).

:func:`resolve_arch` is how every command turns what a user typed (a preset name, block strings, or a file of
them) into an :class:`~mixnas.search_space.arch.Architecture`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from mixnas.errors import ArchitectureError, BlockStringError
from mixnas.search_space.arch import Architecture, GlobalParams
from mixnas.search_space.block_string import split_block_strings
from mixnas.search_space.arch_strings import GRAMMARS, decode_arch
from mixnas.search_space.header import apply_header, split_header
from mixnas.textio import parse_json, parse_yaml, path_kind, read_text

_ARCH_DIR = "archs"
_SPACE_DIR = "spaces"


def _names(folder: str) -> list[str]:
    root = resources.files(__name__) / folder
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def arch_preset_names() -> list[str]:
    return _names(_ARCH_DIR)


def space_preset_names() -> list[str]:
    return _names(_SPACE_DIR)


def space_preset_text(name: str) -> str:
    """YAML text of a built-in search space."""
    if name not in space_preset_names():
        raise ArchitectureError(f"unknown search-space preset {name!r}: expected one of {space_preset_names()}")
    return (resources.files(__name__) / _SPACE_DIR / f"{name}.yaml").read_text(encoding="utf-8")


def arch_from_preset_dict(data: Any, source: str) -> Architecture:
    """Build an architecture from the preset format ``{name, grammar, global_params, blocks}``."""
    if not isinstance(data, dict):
        raise ArchitectureError(f"{source}: expected a mapping with 'blocks', got {type(data).__name__}")
    unknown = sorted(set(data) - {"name", "grammar", "global_params", "blocks"})
    if unknown:
        raise ArchitectureError(f"{source}: unknown keys {unknown}; allowed: blocks, global_params, grammar, name")
    grammar = data.get("grammar", "tf")
    if grammar not in GRAMMARS:
        raise ArchitectureError(f"{source}: grammar: expected one of {list(GRAMMARS)}, got {grammar!r}")
    blocks = data.get("blocks")
    if not isinstance(blocks, list) or not all(isinstance(b, str) for b in blocks):
        raise ArchitectureError(f"{source}: blocks: expected a list of block strings")
    try:
        params = GlobalParams.from_dict(data.get("global_params") or {})
    except (TypeError, ValueError) as exc:
        raise ArchitectureError(f"{source}: global_params: {exc}") from None
    name = data.get("name", "")
    if not isinstance(name, str):
        raise ArchitectureError(f"{source}: name: expected a string")
    return decode_arch(blocks, grammar=grammar, global_params=params, name=name)


def load_arch_preset(name: str) -> Architecture:
    if name not in arch_preset_names():
        raise ArchitectureError(f"unknown architecture preset {name!r}: expected one of {arch_preset_names()}")
    text = (resources.files(__name__) / _ARCH_DIR / f"{name}.yaml").read_text(encoding="utf-8")
    return arch_from_preset_dict(parse_yaml(text, f"preset {name}", ArchitectureError), f"preset {name}")


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _guess_grammar(strings: list[str]) -> str:
    first = strings[0]
    if first.split("_", 1)[0] in ("ir", "ds", "dsa", "er", "cn"):
        return "timm"
    if any(tok.startswith("a") and tok[1:2].isdigit() for tok in first.split("_")):
        return "tf"
    return "mnasnet" if "_i" in first else "tf"


def arch_from_text(text: str, grammar: str | None = None, name: str = "") -> Architecture:
    """Decode block strings, with the global settings of a ``# mixnas:`` header line if the text has one.

    Without a header the stem is the first block's input and the head the grammar's default (as the official
    builders do). With one, every setting it names overrides that, and in the timm grammar each line is one timm
    stage (as ``timm.txt`` is written), so a stride-2 block inside a line is refused rather than built with stride 1.
    """
    header, body = split_header(text)
    strings = split_block_strings(body)
    if not strings:
        raise BlockStringError("no block strings given: expected at least one block")
    if header is not None and grammar is not None and header.get("grammar", grammar) != grammar:
        raise BlockStringError(f"the header says grammar={header['grammar']} but grammar {grammar} was asked for")
    grammar = grammar or (header or {}).get("grammar") or _guess_grammar(strings)
    if header is None:
        return decode_arch(strings, grammar=grammar, name=name)
    items: list = strings
    if grammar == "timm":
        items = [split_block_strings(line) for line in body.splitlines()]
        items = [stage for stage in items if stage]
    inferred = decode_arch(items, grammar=grammar)
    try:
        params = GlobalParams.from_dict(apply_header(inferred, header))
    except (TypeError, ValueError) as exc:
        raise BlockStringError(f"'# mixnas:' header: {exc}") from None
    return decode_arch(items, grammar=grammar, global_params=params, name=name)


def load_arch_file(path: Path, grammar: str | None = None) -> Architecture:
    """Read an architecture from JSON (:meth:`Architecture.to_json`), preset YAML, or a text of block strings."""
    text = read_text(path, ArchitectureError)
    if path.suffix == ".json":
        data = parse_json(text, str(path), ArchitectureError)
        if isinstance(data, list):
            if not data or not all(isinstance(s, str) for s in data):
                raise ArchitectureError(f"{path}: expected a list of block strings or an architecture object")
            return decode_arch(data, grammar=grammar or _guess_grammar(data), name=path.stem)
        if isinstance(data, dict) and "architecture" in data:
            data = data["architecture"]
        return Architecture.from_dict(data)
    if path.suffix in (".yaml", ".yml"):
        return arch_from_preset_dict(parse_yaml(text, str(path), ArchitectureError), str(path))
    return arch_from_text(text, grammar=grammar, name=path.stem)


def resolve_arch(spec: str, grammar: str | None = None) -> Architecture:
    """Turn a preset name, a path to a file, or block strings (space- or comma-separated) into an Architecture."""
    spec = spec.strip()
    if spec in arch_preset_names():
        return load_arch_preset(spec)
    path = Path(spec)
    if path.suffix in (".json", ".yaml", ".yml", ".txt") or "/" in spec:
        if path_kind(path) != "file":
            raise ArchitectureError(
                f"no such architecture file {_clip(spec)!r} (an ARCH is a preset name {arch_preset_names()}, "
                "block strings, or a .json/.yaml/.txt file)"
            )
        return load_arch_file(path, grammar)
    if "_" not in spec:
        raise ArchitectureError(
            f"unknown architecture {_clip(spec)!r}: expected a preset name {arch_preset_names()}, block strings, or a file"
        )
    return arch_from_text(spec, grammar=grammar)

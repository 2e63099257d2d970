"""Imports flow one way (docs/architecture.md): a module may import only its own component and those below it.

Every ``import mixnas...`` is checked, function-level ones included, by reading the source with ``ast``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mixnas"

LEAVES = {"errors", "pareto", "torch_runtime", "textio"}
# What each component may import besides itself and the leaves.
ALLOWED = {
    "search_space": set(),
    "models": {"search_space"},
    "controllers": {"search_space"},
    "evaluators": {"search_space", "models"},
    "launch": {"search_space", "models", "controllers", "evaluators"},
}


def _component(module: str) -> str:
    """``mixnas.evaluators.latency.measure`` -> ``evaluators``; ``mixnas`` itself -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return [m for m in found if m == "mixnas" or m.startswith("mixnas.")]


def test_imports_flow_one_way() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        own = _component(module)
        for imported in _imports(path):
            target = _component(imported)
            if target in ("", own) or target in LEAVES:
                continue
            if own in LEAVES or target not in ALLOWED.get(own, set()):
                wrong.append(f"{module} imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_every_component_is_known() -> None:
    names = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.name != "__pycache__"}
    names -= {"__init__", "py.typed"}
    assert names <= LEAVES | set(ALLOWED), names - LEAVES - set(ALLOWED)

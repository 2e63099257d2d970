"""Imports flow one way (docs/architecture.md): a module may import only its own component and those below it.

Every ``import mixnas...`` is checked, function-level ones included, by reading the source with ``ast``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mixnas"

LEAVES = {"errors", "pareto", "torch_runtime", "textio", "confignode", "outcome", "tensorfiles", "bounds"}
# What each component may import besides itself and the leaves.
ALLOWED = {
    "search_space": set(),
    "data": {"search_space"},
    "models": {"search_space"},
    "controllers": {"search_space"},
    "training": {"search_space", "models", "data"},
    "evaluators": {"search_space", "models", "data", "training"},
    "launch": {"search_space", "models", "data", "controllers", "evaluators", "training"},
    "__init__": {"training", "launch"},  # the package root: mixnas.load_model and the Python API, imported lazily
    "__main__": {"launch"},  # python -m mixnas: the command line
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


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    """Whether ``mixnas.a.b`` names a module or package of the source tree."""
    base = PACKAGE.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _import_edges(path: Path, module: str) -> set[str]:
    """The mixnas modules that ``path`` imports, anywhere in the file.

    ``from mixnas.a import b`` imports the submodule ``mixnas.a.b`` when there is one, else ``mixnas.a``.
    Parent packages that Python runs on the way (``mixnas/a/__init__.py``) are not edges: a package's
    ``__init__`` re-exporting its submodules would otherwise close a loop with each of them.
    """
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y, from .. import z
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}") else base)
    return {m for m in found if (m == "mixnas" or m.startswith("mixnas.")) and m != module}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle ``[a, b, ..., a]`` of ``graph``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for root in sorted(graph):
        if root in state:
            continue
        path = [root]
        todo = [iter(sorted(graph[root]))]
        state[root] = 1
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                todo.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif nxt not in state and nxt in graph:
                state[nxt] = 1
                path.append(nxt)
                todo.append(iter(sorted(graph[nxt])))
    return None


def test_no_import_cycle() -> None:
    graph = {_module_name(p): set() for p in PACKAGE.rglob("*.py")}
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        graph[module] = {m for m in _import_edges(path, module) if m in graph}
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle (function-level imports included): " + " -> ".join(cycle or [])

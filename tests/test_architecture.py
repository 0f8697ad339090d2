"""The shape of the code, checked from its imports (read with `ast`, nothing is imported).

Packages sit in layers, and a module imports only from its own package or from packages of
lower layers: entry points on top, then the processes (API, workers, scheduler — which never
import each other), the publishing core, the building blocks (broker, handlers, models), the
formats, and the core (`mq`: settings, errors, logging, metrics) at the bottom. Imports inside
functions count as much as those at the top of a module: a function-level import is how a
cycle hides. `__main__` modules are entry points and may import anything.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Bottom to top. A package imports only from its own package and from lower layers.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"mq"}),
    frozenset({"formats"}),
    frozenset({"models", "broker", "handlers"}),
    frozenset({"publishing"}),
    frozenset({"api", "workers", "scheduler"}),
    frozenset({"cli"}),
)
LAYER_OF = {package: level for level, packages in enumerate(LAYERS) for package in packages}
MAX_MODULE_LINES = 400


def project_modules() -> Iterator[tuple[str, Path]]:
    for package in LAYER_OF:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def imported_names(module: str, path: Path) -> Iterator[str]:
    """Every module name `module` imports, absolute, including `from x import name` as
    `x.name` (which may be a module or a name inside `x`)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    modules = dict(project_modules())
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        for name in imported_names(module, path):
            if name in modules and name != module:
                graph[module].add(name)
    return graph


def is_entry_point(module: str) -> bool:
    return module.endswith("__main__")


def test_no_module_imports_from_a_higher_layer_or_a_sibling_package() -> None:
    wrong = []
    for module, targets in import_graph().items():
        if is_entry_point(module):
            continue
        own = module.split(".")[0]
        for target in targets:
            other = target.split(".")[0]
            if other != own and LAYER_OF[other] >= LAYER_OF[own]:
                wrong.append(f"{module} imports {target}")
    assert sorted(wrong) == []


def test_modules_import_each_other_without_cycles() -> None:
    graph = import_graph()
    # A package's __init__ importing its own modules is how packages re-export; a module
    # importing its package's __init__ then reads as a cycle that is not one.
    edges = {
        module: {t for t in targets if not module.startswith(t + ".")}
        for module, targets in graph.items()
    }
    cycles = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_no_module_is_longer_than_the_limit() -> None:
    long = {
        str(path.relative_to(ROOT)): lines
        for _, path in project_modules()
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}

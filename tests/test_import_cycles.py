"""No import cycle in `unlearn_cli`: its modules form a layered graph.

Every `import` of a package module counts, at module level or inside a function: a lazy import
that only dodges a cycle hides the cycle, it does not remove it. Imports under
`if TYPE_CHECKING:` are left out (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import unlearn_cli

PACKAGE = Path(unlearn_cli.__file__).parent
ROOT = "unlearn_cli"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    """Every module of the package by dotted name (configs/ holds no Python besides its init)."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "configs" not in p.parts}


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_names(tree: ast.AST, module: str, is_package: bool):
    """(module, names) of every import statement that runs, at any depth."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, [a.name for a in node.names]
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (`from pkg import sub` counts `pkg.sub`)."""
    modules = package_modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        for base, names in imported_names(tree, name, path.name == "__init__.py"):
            if not base.startswith(ROOT):
                continue
            targets = {f"{base}.{n}" for n in names if f"{base}.{n}" in modules}
            if not targets or len(targets) < len(names):  # names that are not submodules
                targets.add(base)
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_detector_sees_a_cycle_through_a_lazy_import():
    """The checker itself: a function-level import closing a loop is a cycle."""
    graph = {"a": {"b"}, "b": set(), "c": set()}
    assert find_cycle(graph) is None
    source = "import unlearn_cli.b\n"
    lazy = "def f():\n    from unlearn_cli import a\n"
    seen = [
        list(imported_names(ast.parse(s), m, False))
        for s, m in ((source, "unlearn_cli.a"), (lazy, "unlearn_cli.b"))
    ]
    assert seen == [[("unlearn_cli.b", [])], [("unlearn_cli", ["a"])]]
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]


def test_the_graph_sees_the_package_imports():
    graph = import_graph()
    assert "unlearn_cli.run" in graph["unlearn_cli.audit"]
    assert "unlearn_cli.methods.base" in graph["unlearn_cli.methods"]

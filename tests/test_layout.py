"""The suite's imports go one way: no module of ``experiments/`` imports, directly or through
others, a module that imports it back, and the project's own imports sit at the top of each module
(an import inside a function is how a circle hides). The library never imports the suite."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

SUITE = ROOT / "experiments"
LIBRARY = ROOT / "flatness"


def imports(path: Path, package: str) -> tuple[set[str], list[int]]:
    """Modules of ``package`` that ``path`` imports, and the lines of those imports not at the top."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found, nested = set(), []
    for node in ast.walk(tree):
        names = []
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] == package
        ):
            parts = node.module.split(".")
            names = [parts[1]] if len(parts) > 1 else [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith(package + ".")]
        found.update(names)
        if names and id(node) not in top and not _under_main(tree, node):
            nested.append(node.lineno)
    return found, nested


def _under_main(tree: ast.Module, node: ast.AST) -> bool:
    """Inside ``if __name__ == "__main__":`` (a command's entry, imported by no one)."""
    return any(
        isinstance(stmt, ast.If)
        and "__main__" in ast.unparse(stmt.test)
        and any(child is node for child in ast.walk(stmt))
        for stmt in tree.body
    )


def graph() -> dict[str, set[str]]:
    modules = {p.stem for p in SUITE.glob("*.py")}
    return {p.stem: imports(p, "experiments")[0] & modules for p in SUITE.glob("*.py")}


def cycle_through(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, or None (depth-first search with colours)."""
    colour, stack = {}, []

    def visit(v: str) -> list[str] | None:
        colour[v] = "grey"
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if colour.get(w) == "grey":
                return stack[stack.index(w) :] + [w]
            if w not in colour and (found := visit(w)):
                return found
        stack.pop()
        colour[v] = "black"
        return None

    for v in sorted(edges):
        if v not in colour and (found := visit(v)):
            return found
    return None


def test_the_suite_has_no_import_cycle():
    assert cycle_through(graph()) is None, " -> ".join(cycle_through(graph()) or [])


def test_the_detector_finds_a_cycle():
    assert cycle_through({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle_through({"a": {"b"}, "b": set()}) is None


def test_the_project_imports_sit_at_the_top():
    nested = {p.name: imports(p, "experiments")[1] for p in SUITE.glob("*.py")}
    assert {name: lines for name, lines in nested.items() if lines} == {}


def test_the_library_never_imports_the_suite():
    for path in LIBRARY.glob("*.py"):
        assert not imports(path, "experiments")[0], path.name

"""The suite's imports go one way: no module of ``experiments/`` imports, directly or through
others, a module that imports it back, and the project's own imports sit at the top of each module
(an import inside a function is how a circle hides). The library never imports the suite."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

SUITE = ROOT / "experiments"
LIBRARY = ROOT / "flatness"


def module_name(path: Path) -> str:
    """``analyse/tune.py`` -> ``analyse.tune``: a module's name inside the suite."""
    return ".".join(path.relative_to(SUITE).with_suffix("").parts).removesuffix(".__init__")


MODULES = {module_name(p) for p in SUITE.rglob("*.py")}


def _resolve(dotted: str) -> str:
    """The suite module that ``experiments.<dotted>`` names (a package's ``__init__`` for a package)."""
    return dotted if dotted in MODULES else dotted.rsplit(".", 1)[0]


def imports(path: Path, package: str) -> tuple[set[str], list[int]]:
    """Modules of ``package`` that ``path`` imports (dotted names inside it), and the lines of those
    imports not at the top."""
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
            inner = node.module.split(".", 1)[1] if "." in node.module else ""
            candidates = [f"{inner}.{a.name}".lstrip(".") for a in node.names]
            names = (
                [c if c in MODULES else inner for c in candidates]
                if package == "experiments"
                else [inner or a.name for a in node.names]
            )
        elif isinstance(node, ast.Import):
            names = [
                a.name.split(".", 1)[1] for a in node.names if a.name.startswith(package + ".")
            ]
        found.update(n for n in names if n)
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
    return {
        module_name(p): {_resolve(m) for m in imports(p, "experiments")[0]} & MODULES
        for p in SUITE.rglob("*.py")
    }


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
    nested = {module_name(p): imports(p, "experiments")[1] for p in SUITE.rglob("*.py")}
    assert {name: lines for name, lines in nested.items() if lines} == {}


def test_the_library_never_imports_the_suite():
    for path in LIBRARY.glob("*.py"):
        assert not imports(path, "experiments")[0], path.name


# The pipeline's stages (DESIGN.md): building blocks under run.py, then plan -> execute -> runs ->
# analyse/ -> report/. A stage imports only stages before it; the commands sit on top.
PIPELINE = {"plan", "execute", "pairs", "runs", "robust", "conditions"}
COMMANDS = {"protocol", "study", "measure"}
REPORT_MAY_READ = {"analyse.schemas", "analyse.verdicts", "criterion", "errors"}


def stage(module: str) -> str:
    if module.startswith(("analyse", "report")):
        return module.split(".")[0]
    return "pipeline" if module in PIPELINE else "command" if module in COMMANDS else "block"


def test_building_blocks_never_import_the_pipeline_above_them():
    bad = {
        (m, d)
        for m, deps in graph().items()
        if stage(m) == "block"
        for d in deps
        if stage(d) != "block"
    }
    assert bad == set()


def test_the_pipeline_never_imports_analysis_or_report_and_analysis_never_the_report():
    edges = graph()
    bad = {
        (m, d)
        for m, deps in edges.items()
        if stage(m) == "pipeline"
        for d in deps
        if stage(d) in ("analyse", "report", "command")
    }
    bad |= {
        (m, d)
        for m, deps in edges.items()
        if stage(m) == "analyse"
        for d in deps
        if stage(d) in ("report", "command")
    }
    assert bad == set()


def test_the_report_reads_tables_and_the_one_rule_only():
    """The report draws and writes; it imports no training, planning or statistics, only the tables'
    schemas, the rule that decides a verdict, and whether a run reached its criterion."""
    bad = {
        (m, d)
        for m, deps in graph().items()
        if stage(m) == "report"
        for d in deps
        if stage(d) != "report" and d not in REPORT_MAY_READ
    }
    assert bad == set()

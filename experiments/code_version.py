"""Which code made a run: a hash of the modules that determine its weights, and of those that
determine its measurements, recorded in every ``result.json``.

A stage longer than a session (the robustness runs of issue 26) is trained across machines and
sessions; its tables are built only from records whose hashes equal the frozen ones, so a run made
by other code is never mixed in unnoticed. The hash is over each module's syntax tree with comments
and docstrings removed (``ast.unparse``), so rewording or reformatting leaves it unchanged and any
change to what the code does moves it. The run id, by contrast, hashes the configuration: the two
together say what was run and by what.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What determines a run's weights: data, model, optimizer, schedule and budget, the training loop
# and its stopping rule, and the run's assembly (seeding, device, threads).
TRAINING = (
    "experiments/data.py",
    "experiments/models.py",
    "experiments/optim.py",
    "experiments/budget.py",
    "experiments/train.py",
    "experiments/train_settings.py",
    "experiments/criterion.py",
    "experiments/run.py",
)
# What determines its measurements beyond the weights: the suite's measuring step and the library.
MEASURING = ("experiments/measurements.py", "experiments/transform.py", "flatness")


def _files(entries: tuple[str, ...]) -> list[Path]:
    paths = []
    for entry in entries:
        path = ROOT / entry
        paths += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return paths


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


def source_hash(paths: list[Path]) -> str:
    """sha256 (12 hex digits) over each file's path and its code without comments or docstrings."""
    h = hashlib.sha256()
    for path in paths:
        tree = _without_docstrings(ast.parse(path.read_text()))
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + ast.unparse(tree).encode() + b"\0")
    return h.hexdigest()[:12]


@functools.cache
def code_hashes() -> dict[str, str]:
    """``{"training": ..., "measuring": ...}`` for the code this process runs."""
    return {"training": source_hash(_files(TRAINING)), "measuring": source_hash(_files(MEASURING))}

"""The core knows no component by name: protocols, metrics and reporters are plugins.

(The layering itself, who may import whom, is import-linter's contract in pyproject.toml,
checked in CI.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from xleval.plugin.manager import get_plugin_manager

CORE = Path(__file__).resolve().parent.parent / "xleval"
#: kinds whose bundled names must not appear in the core's code
KINDS = ("protocols", "metrics", "reporters")
#: (file, string) pairs that are the same word but no component name, and why
NOT_NAMES = {
    ("analysis/analyse.py", "accuracy"): "a reliability-curve field of the report (schema)",
    ("analysis/analyse.py", "ece"): "a reliability-curve field of the report (schema)",
}


def bundled_names() -> dict[str, str]:
    registry = get_plugin_manager(strict=False).registry
    return {
        c.name: kind
        for kind in KINDS
        for c in registry.components(kind)
        if c.plugin.startswith("xleval.")
    }


def string_constants(path: Path) -> list[tuple[int, str]]:
    """(line, value) of every string literal in ``path`` that is not a docstring."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        scope = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        body = node.body if isinstance(node, scope) else None
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            docstrings.add(id(body[0].value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_the_bundled_names_are_known():
    names = bundled_names()
    assert {"target-only", "zero-shot", "transfer", "fusion", "joint"} <= set(names)
    assert {"accuracy", "macro_f1", "table", "html"} <= set(names)


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(CORE)))
def test_no_protocol_metric_or_reporter_name_in_the_core(path):
    names = bundled_names()
    where = str(path.relative_to(CORE))
    found = [
        f"{where}:{line}: {value!r} ({names[value]})"
        for line, value in string_constants(path)
        if value in names and (where, value) not in NOT_NAMES
    ]
    assert not found, "the core names bundled components:\n" + "\n".join(found)


def test_the_check_finds_a_name(tmp_path):
    """The scan itself: a string naming a protocol is found, its docstring is not."""
    module = tmp_path / "m.py"
    module.write_text('"""zero-shot"""\nBASELINE = "target-only"\n')
    assert string_constants(module) == [(2, "target-only")]

"""Every hook in hookspecs.py has a test and a section in the docs (datasette's meta-test)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from xleval import hookspecs

TESTS = Path(__file__).parent
DOCS = TESTS.parent / "docs" / "hooks.md"


def hook_names() -> list[str]:
    return sorted(
        name
        for name, value in vars(hookspecs).items()
        if callable(value) and hasattr(value, f"{hookspecs.PROJECT_NAME}_spec")
    )


def test_hookspecs_found():
    assert len(hook_names()) == 7
    assert sorted(hookspecs.KIND_HOOKS.values()) == hook_names()


@pytest.mark.parametrize("hook", hook_names())
def test_hook_is_documented(hook):
    assert re.search(rf"^## `{hook}`", DOCS.read_text(encoding="utf-8"), re.M), (
        f"docs/hooks.md needs a '## `{hook}`' section"
    )


@pytest.mark.parametrize("hook", hook_names())
def test_hook_is_tested(hook):
    tested = [
        path.name
        for path in TESTS.glob("test_*.py")
        if path.name != Path(__file__).name
        and re.search(rf"def {hook}\(", path.read_text(encoding="utf-8"))
    ]
    assert tested, f"no test implements {hook}"

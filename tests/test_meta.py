"""Every hook in hookspecs.py has a section in the docs, and (tests/conftest.py) a test that
builds a component registered through it: datasette's meta-test, measured."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from xleval.api import hookspecs

TESTS = Path(__file__).parent
DOCS = TESTS.parent / "docs" / "hooks.md"


def hook_names() -> list[str]:
    return sorted(
        name
        for name, value in vars(hookspecs).items()
        if callable(value) and hasattr(value, f"{hookspecs.PROJECT_NAME}_spec")
    )


def test_hookspecs_found():
    assert len(hook_names()) == 8
    assert sorted(hookspecs.KIND_HOOKS.values()) == hook_names()


@pytest.mark.parametrize("hook", hook_names())
def test_hook_is_documented(hook):
    assert re.search(rf"^## `{hook}`", DOCS.read_text(encoding="utf-8"), re.M), (
        f"docs/hooks.md needs a '## `{hook}`' section"
    )


@pytest.mark.parametrize("kind", list(hookspecs.KIND_HOOKS))
def test_building_a_test_registered_component_is_recorded(kind):
    """The meta-test's instrument (tests/conftest.py): building a component that a hook
    function defined here registered marks its kind as tested; at the end of a whole-suite
    run every kind must be marked, or the session fails."""
    from conftest import BUILT_BY_TESTS

    from xleval.plugin.manager import get_plugin_manager

    class OneComponent:
        __name__ = "one-component"

    def register_one(register):
        register("one", dict)

    setattr(
        OneComponent, hookspecs.KIND_HOOKS[kind], staticmethod(hookspecs.hookimpl(register_one))
    )
    before = set(BUILT_BY_TESTS)  # this test must not count as exercising the hooks
    BUILT_BY_TESTS.discard(kind)
    try:
        pm = get_plugin_manager(use_entry_points=False, plugins=[OneComponent()], strict=True)
        assert kind not in BUILT_BY_TESTS  # registering is not exercising
        pm.registry.build(kind, "one")
        assert kind in BUILT_BY_TESTS
    finally:
        BUILT_BY_TESTS.clear()
        BUILT_BY_TESTS.update(before)

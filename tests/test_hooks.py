"""Each hook, implemented by a small plugin, reaches the registry under the right kind."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from xleval.api.hookspecs import KIND_HOOKS, hookimpl
from xleval.plugin.manager import get_plugin_manager

SCHEMA = {"type": "object", "properties": {"size": {"type": "integer", "default": 3}}}


def built(options):
    return SimpleNamespace(options=options)


class EveryHook:
    """One component per hook, named after the hook's kind."""

    __name__ = "every-hook"

    @hookimpl
    def xleval_register_models(self, register):
        register("m", built, schema=SCHEMA, description="model")

    @hookimpl
    def xleval_register_transfer_strategies(self, register):
        register("t", built, schema=SCHEMA, description="transfer")

    @hookimpl
    def xleval_register_fusion_strategies(self, register):
        register("f", built, schema=SCHEMA, description="fusion")

    @hookimpl
    def xleval_register_metrics(self, register):
        register("x", built, schema=SCHEMA, description="metric")

    @hookimpl
    def xleval_register_datasets(self, register):
        register("d", built, schema=SCHEMA, description="dataset")

    @hookimpl
    def xleval_register_executors(self, register):
        register("e", built, schema=SCHEMA, description="executor")

    @hookimpl
    def xleval_register_reporters(self, register):
        register("r", built, schema=SCHEMA, description="reporter")

    @hookimpl
    def xleval_register_protocols(self, register):
        register("p", built, schema=SCHEMA, description="protocol")


EXPECTED = {
    "models": "m",
    "transfer_strategies": "t",
    "fusion_strategies": "f",
    "metrics": "x",
    "datasets": "d",
    "executors": "e",
    "reporters": "r",
    "protocols": "p",
}


@pytest.mark.parametrize("kind", list(KIND_HOOKS))
def test_each_hook_fills_its_kind(kind):
    pm = get_plugin_manager(use_entry_points=False, plugins=[EveryHook()], strict=False)
    assert pm.registry.names(kind) == [EXPECTED[kind]]
    component = pm.registry.get(kind, EXPECTED[kind])
    assert component.plugin == "every-hook"
    assert component.kind == kind
    assert pm.registry.build(kind, EXPECTED[kind], {}).options == {"size": 3}
    assert pm.records["every-hook"].components[kind] == [EXPECTED[kind]]

"""Plugin loading rules: clashes, isolation of failures, strict mode, disabling, hook names."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from types import SimpleNamespace

import pluggy
import pytest
from helpers import MetricPlugin, echo_factory

import xleval
from xleval.api.hookspecs import KIND_HOOKS, hookimpl
from xleval.errors import DuplicateComponentError, PluginLoadError
from xleval.plugin.manager import get_plugin_manager

pytestmark = pytest.mark.usefixtures("clean_plugin_env")


def plugin(name: str, **hooks):
    """A plugin object named ``name`` implementing the given hook functions."""
    return SimpleNamespace(__name__=name, **{k: hookimpl(v) for k, v in hooks.items()})


def manager(*plugins, **kwargs):
    kwargs.setdefault("strict", False)
    return get_plugin_manager(use_entry_points=False, plugins=plugins, **kwargs)


def test_duplicate_name_is_an_error_naming_both_providers():
    pm = manager(MetricPlugin(plugin_name="first"), MetricPlugin(plugin_name="second"))
    with pytest.raises(DuplicateComponentError) as info:
        pm.registry.get("metrics", "echo")
    assert "metric 'echo' is registered by two plugins: 'first' and 'second'" in str(info.value)
    assert pm.records["first"].status == "conflict"
    assert pm.records["second"].status == "conflict"
    assert "echo" not in pm.registry.names("metrics")


def test_duplicate_name_in_strict_mode_stops_loading():
    with pytest.raises(PluginLoadError, match="registered by two plugins"):
        manager(MetricPlugin(plugin_name="first"), MetricPlugin(plugin_name="second"), strict=True)


def test_same_name_in_different_kinds_is_fine():
    def fusion(register):
        register("echo", echo_factory)

    pm = manager(MetricPlugin(), plugin("f", xleval_register_fusion_strategies=fusion))
    assert pm.registry.names("metrics") == ["echo"]
    assert pm.registry.names("fusion_strategies") == ["echo"]


def test_plugin_failing_while_registering_is_isolated_and_its_error_reused():
    def metrics(register):
        register("half", echo_factory)
        raise RuntimeError("database not reachable")

    def fusion(register):
        register("also-broken", echo_factory)

    pm = manager(
        MetricPlugin(plugin_name="good"),
        plugin("bad", xleval_register_metrics=metrics, xleval_register_fusion_strategies=fusion),
    )
    assert pm.records["good"].status == "ok"
    assert pm.registry.build("metrics", "echo").options == {"rate": 0.5, "mode": "fast"}
    record = pm.records["bad"]
    assert record.status == "failed"
    assert record.error == "in hook xleval_register_metrics: RuntimeError: database not reachable"
    assert "database not reachable" in record.traceback
    for kind, name in (("metrics", "half"), ("fusion_strategies", "also-broken")):
        with pytest.raises(PluginLoadError) as info:
            pm.registry.get(kind, name)
        assert (
            "plugin 'bad' failed to register: in hook xleval_register_metrics: "
            "RuntimeError: database not reachable" in str(info.value)
        )


def test_unknown_name_mentions_failed_plugins():
    def metrics(register):
        raise ImportError("needs scipy")

    pm = manager(plugin("scipy-metrics", xleval_register_metrics=metrics))
    with pytest.raises(
        PluginLoadError,
        match="'scipy-metrics': in hook xleval_register_metrics: ImportError: needs scipy",
    ):
        pm.registry.get("metrics", "spearman")


def test_strict_mode_from_environment(monkeypatch):
    def metrics(register):
        raise RuntimeError("boom")

    monkeypatch.setenv("XLEVAL_STRICT_PLUGINS", "1")
    with pytest.raises(
        PluginLoadError, match="'bad': in hook xleval_register_metrics: RuntimeError: boom"
    ):
        get_plugin_manager(
            use_entry_points=False, plugins=[plugin("bad", xleval_register_metrics=metrics)]
        )
    monkeypatch.setenv("XLEVAL_STRICT_PLUGINS", "0")
    pm = get_plugin_manager(
        use_entry_points=False, plugins=[plugin("bad", xleval_register_metrics=metrics)]
    )
    assert pm.records["bad"].status == "failed"


def test_disabled_plugins_by_argument_and_environment(monkeypatch):
    pm = manager(
        MetricPlugin(plugin_name="first"), MetricPlugin(plugin_name="second"), disabled=["second"]
    )
    assert pm.records["second"].status == "disabled"
    assert pm.registry.get("metrics", "echo").plugin == "first"

    monkeypatch.setenv("XLEVAL_DISABLE_PLUGINS", " first , other")
    pm = manager(MetricPlugin(plugin_name="first"), MetricPlugin(plugin_name="second"))
    assert pm.records["first"].status == "disabled"
    assert pm.registry.get("metrics", "echo").plugin == "second"


def test_misspelled_hook_fails_that_plugin_with_a_suggestion():
    def xleval_register_metric(register):
        register("never", echo_factory)

    pm = manager(MetricPlugin(), plugin("typo", xleval_register_metric=xleval_register_metric))
    record = pm.records["typo"]
    assert record.status == "failed"
    assert (
        "unknown hook 'xleval_register_metric'; did you mean 'xleval_register_metrics'?"
        in record.error
    )
    assert pm.get_plugin("typo") is None  # unregistered, so check_pending passes
    assert pm.records["a"].status == "ok"


def test_check_pending_is_the_final_guard(monkeypatch):
    called = []
    original = pluggy.PluginManager.check_pending
    monkeypatch.setattr(
        pluggy.PluginManager, "check_pending", lambda self: called.append(1) or original(self)
    )
    manager(MetricPlugin())
    assert called == [1]


def test_hookimpl_with_wrong_arguments_fails_that_plugin():
    def xleval_register_metrics(register, extra):
        register("x", echo_factory)

    pm = manager(plugin("wrong-args", xleval_register_metrics=xleval_register_metrics))
    assert pm.records["wrong-args"].status == "failed"
    assert "extra" in pm.records["wrong-args"].error


def test_bundled_plugins_come_through_entry_points():
    pm = get_plugin_manager(strict=False)
    bundled = {name: r for name, r in pm.records.items() if r.distribution == "xleval"}
    assert set(bundled) >= {
        "xleval.models",
        "xleval.transfer",
        "xleval.fusion",
        "xleval.metrics",
        "xleval.datasets",
        "xleval.executors",
        "xleval.reporters",
    }
    assert all(r.status == "ok" for r in bundled.values())
    assert all(r.module.startswith("xleval_plugins.") for r in bundled.values())


def test_every_kind_has_a_hook_the_manager_knows():
    pm = manager()
    for hook_name in KIND_HOOKS.values():
        assert getattr(pm.hook, hook_name).has_spec()


def test_core_creates_no_manager_at_import():
    """No global plugin manager (that the core never imports the bundled plugins is an
    import-linter contract in pyproject.toml)."""
    for info in pkgutil.walk_packages(xleval.__path__, "xleval."):
        if info.name == "xleval.__main__":
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            assert not isinstance(value, pluggy.PluginManager), info.name


def test_fresh_managers_do_not_share_state():
    first = manager(MetricPlugin())
    second = manager()
    assert first.registry.names("metrics") == ["echo"]
    assert second.registry.names("metrics") == []


QUICKSTART = Path(__file__).parent.parent / "specs" / "examples" / "quickstart.toml"


def test_loading_the_plugins_and_resolving_a_spec_do_not_import_torch():
    """torch's import (~1 s) waits until a model, metric, fusion or transfer is built:
    validate/report/compare never pay it, and a run builds its executor (a dask cluster
    starts its workers) before it. Checked in a fresh interpreter."""
    import subprocess
    import sys

    code = (
        "import sys; from xleval.plugin.manager import get_plugin_manager; "
        "pm = get_plugin_manager(); "
        "assert not pm.registry.failed_plugins, pm.registry.failed_plugins; "
        "names = {kind: sorted(pm.registry.names(kind)) for kind in "
        "('models', 'metrics', 'fusion_strategies', 'transfer_strategies')}; "
        "from xleval.experiment.spec import read_spec_file, resolve_spec; "
        f"resolve_spec(read_spec_file({str(QUICKSTART)!r}), pm.registry); "
        "print('torch' in sys.modules, names)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded, names = out.stdout.split(" ", 1)
    assert loaded == "False"
    assert "bag-of-embeddings" in names and "accuracy" in names and "exp-sum" in names

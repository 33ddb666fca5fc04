"""The registry: option schemas checked before building, defaults, lookups, bad registrations."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from helpers import RATE_SCHEMA, MetricPlugin, echo_factory

from xleval.api.hookspecs import hookimpl
from xleval.errors import OptionsError, PluginLoadError, UnknownComponentError
from xleval.plugin.manager import get_plugin_manager
from xleval.plugin.registry import Component, fill_defaults, format_path


def registry_with(*plugins):
    return get_plugin_manager(use_entry_points=False, plugins=plugins, strict=False).registry


def test_options_are_validated_and_defaults_filled():
    registry = registry_with(MetricPlugin())
    built = registry.build("metrics", "echo", {"rate": 0.25})
    assert built.options == {"rate": 0.25, "mode": "fast"}


def test_option_error_names_component_path_and_expectation():
    registry = registry_with(MetricPlugin())
    with pytest.raises(OptionsError) as info:
        registry.build("metrics", "echo", {"rate": 3, "ngram_range": [3, 0], "colour": "red"})
    message = str(info.value)
    assert "metric 'echo'" in message
    assert "at 'rate': 3 is greater than the maximum of 1" in message
    assert "at 'ngram_range[1]': 0 is less than the minimum of 1" in message
    assert "'colour' was unexpected" in message
    # every error at once, one per line
    assert message.count("\n  - ") == 3


def test_option_type_error_shows_value_and_expected_type():
    registry = registry_with(MetricPlugin())
    with pytest.raises(OptionsError, match=r"at 'mode': 'slow' is not one of \['fast', 'exact'\]"):
        registry.build("metrics", "echo", {"mode": "slow"})


def test_component_without_schema_takes_no_options():
    registry = registry_with(MetricPlugin(schema=None))
    assert registry.build("metrics", "echo").options == {}
    with pytest.raises(OptionsError, match="metric 'echo' takes no options, got: rate"):
        registry.build("metrics", "echo", {"rate": 1})


def test_unknown_name_suggests_close_matches():
    registry = registry_with(MetricPlugin(name="accuracy"))
    with pytest.raises(UnknownComponentError) as info:
        registry.get("metrics", "acuracy")
    assert "unknown metric 'acuracy'; did you mean 'accuracy'?" in str(info.value)
    assert "(available: accuracy)" in str(info.value)


def test_unknown_kind_is_an_error():
    with pytest.raises(UnknownComponentError, match="unknown component kind 'metric'"):
        registry_with().get("metric", "x")


@pytest.mark.parametrize(
    ("name", "factory", "schema", "expected"),
    [
        ("Bad Name", echo_factory, None, "name 'Bad Name' must be lower-case"),
        ("ok", "not callable", None, "factory is not callable"),
        ("ok", echo_factory, {"type": "nonsense"}, "schema is not a valid JSON Schema"),
    ],
)
def test_invalid_registration_fails_that_plugin_with_a_reason(name, factory, schema, expected):
    @hookimpl
    def xleval_register_metrics(register):
        register(name, factory, schema=schema)

    plugin = SimpleNamespace(__name__="sloppy", xleval_register_metrics=xleval_register_metrics)
    pm = get_plugin_manager(use_entry_points=False, plugins=[plugin], strict=False)
    record = pm.records["sloppy"]
    assert record.status == "failed"
    assert "metric registered by plugin 'sloppy'" in record.error
    assert expected in record.error
    with pytest.raises(PluginLoadError, match="'sloppy'"):
        pm.registry.get("metrics", "ok")


def test_format_path_and_fill_defaults_nested():
    assert format_path([]) == "(options)"
    assert format_path(["a", 0, "b"]) == "a[0].b"
    schema = {
        "properties": {
            "outer": {"type": "object", "default": {}, "properties": {"x": {"default": 1}}},
        }
    }
    assert fill_defaults(schema, {}) == {"outer": {"x": 1}}
    assert fill_defaults(schema, {"outer": {"x": 5}}) == {"outer": {"x": 5}}


def test_defaults_are_copied_not_shared():
    component = Component(
        kind="metrics",
        name="m",
        factory=echo_factory,
        schema={"properties": {"bins": {"type": "array", "default": [1, 2]}}},
        description="",
        plugin="p",
    )
    first = component.resolve_options()
    first["bins"].append(3)
    assert component.resolve_options() == {"bins": [1, 2]}
    assert RATE_SCHEMA["properties"]["rate"]["default"] == 0.5


def test_a_factory_taking_no_arguments_is_called_with_none():
    class Plain:
        higher_is_better = True

        def compute(self, y_true, probs):
            return 1.0

    def counted(**_unused):
        return "called without options"

    class Options:
        def __init__(self, options):
            self.options = options

    for factory, schema, check in [
        (Plain, None, lambda built: isinstance(built, Plain)),
        (counted, None, lambda built: built == "called without options"),
        (Options, RATE_SCHEMA, lambda built: built.options["rate"] == 0.5),
    ]:
        component = Component("metrics", "m", factory, schema, "", "p")
        assert check(component.build({} if schema else None))


def test_a_schema_is_checked_once_per_process_and_an_invalid_one_every_time(monkeypatch):
    import jsonschema

    from xleval.plugin import registry

    monkeypatch.setattr(registry, "_VALID_SCHEMAS", set())
    calls = []
    real = registry.validator_for
    monkeypatch.setattr(registry, "validator_for", lambda s: calls.append(s) or real(s))
    valid = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}
    registry.check_schema(valid)
    registry.check_schema(json.loads(json.dumps(valid)))  # equal content, another object
    assert len(calls) == 1
    invalid = {"type": "object", "properties": {"n": {"type": "no-such-type"}}}
    for _ in range(2):
        with pytest.raises(jsonschema.SchemaError):
            registry.check_schema(invalid)
    assert len(calls) == 3

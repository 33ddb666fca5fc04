"""Experiment specs: every error listed with its path; defaults resolved; formats read."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from xleval_plugins.protocols import PROTOCOLS

from xleval.api.hookspecs import hookimpl
from xleval.errors import SpecError
from xleval.experiment.spec import load_spec, read_spec_file, resolve_spec
from xleval.plugin.manager import get_plugin_manager

SIZE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"dim": {"type": "integer", "minimum": 1, "default": 16}},
}


class SpecPlugin:
    """Just enough components for specs to resolve."""

    __name__ = "spec-plugin"

    @hookimpl
    def xleval_register_models(self, register):
        register("bag-of-embeddings", SimpleNamespace, schema=SIZE)

    @hookimpl
    def xleval_register_metrics(self, register):
        register("accuracy", SimpleNamespace)
        register("macro_f1", SimpleNamespace)

    @hookimpl
    def xleval_register_datasets(self, register):
        register("toy", SimpleNamespace)

    @hookimpl
    def xleval_register_executors(self, register):
        register("local", SimpleNamespace)

    @hookimpl
    def xleval_register_transfer_strategies(self, register):
        register("weight-copy", SimpleNamespace)

    @hookimpl
    def xleval_register_protocols(self, register):
        for name, (factory, _) in PROTOCOLS.items():
            register(name, factory)

    @hookimpl
    def xleval_register_fusion_strategies(self, register):
        register(
            "exp-sum",
            SimpleNamespace,
            schema={
                "type": "object",
                "properties": {"on": {"enum": ["scores", "log_probs"], "default": "scores"}},
            },
        )


@pytest.fixture
def registry():
    return get_plugin_manager(use_entry_points=False, plugins=[SpecPlugin()], strict=False).registry


def minimal(**extra):
    spec = {
        "dataset": "toy",
        "source": "en",
        "targets": ["de"],
        "methods": [{"protocol": "target-only"}, {"protocol": "transfer"}],
    }
    spec.update(extra)
    return spec


def test_defaults_are_filled(registry):
    spec = resolve_spec(minimal(), registry)
    assert spec.sources == ("en",)
    assert spec.shots == (0, 8, 32, 128)
    assert spec.seeds == (1, 2, 3)
    assert [m.name for m in spec.metrics] == ["accuracy", "macro_f1"]
    assert spec.main_metric == "accuracy"
    assert spec.executor.name == "local"
    assert spec.statistics == {"confidence": 0.95, "baseline": None, "compare": []}
    assert spec.warnings == ()


def test_retired_statistics_options_are_accepted_with_a_warning(registry):
    """Specs written for xleval 0.1 still run: their bootstrap options are dropped, said."""
    raw = minimal() | {"statistics": {"bootstrap": 5000, "seed": 7}}
    spec = resolve_spec(raw, registry)
    assert "bootstrap" not in spec.statistics and "seed" not in spec.statistics
    (warning,) = spec.warnings
    assert "statistics.bootstrap and statistics.seed: no longer used" in warning


def test_one_seed_warns_that_nothing_will_be_tested(registry):
    spec = resolve_spec(minimal() | {"seeds": [4]}, registry)
    assert any("one seed" in w and "3 or more seeds" in w for w in spec.warnings)
    target_only, transfer = spec.methods
    assert target_only.label == "target-only"
    assert target_only.model.options == {"dim": 16}
    assert target_only.components == {}
    assert transfer.components["transfer"].name == "weight-copy"
    assert target_only.training["epochs"] >= 1


def test_method_training_overrides_defaults(registry):
    spec = resolve_spec(
        minimal(
            training={"epochs": 3, "lr": 0.1},
            methods=[{"protocol": "joint", "training": {"epochs": 7}}],
        ),
        registry,
    )
    assert spec.methods[0].training["epochs"] == 7
    assert spec.methods[0].training["lr"] == 0.1


def test_schema_errors_are_all_listed_with_paths(registry):
    bad = minimal(shots=[8, -1, "some"], seeds=[], methods=[{"protocol": "transfr"}])
    bad["sorce"] = "en"
    with pytest.raises(SpecError) as info:
        resolve_spec(bad, registry, source="exp.toml")
    message = str(info.value)
    assert message.startswith("exp.toml: 5 errors:")
    assert "at '(spec)': Additional properties are not allowed ('sorce' was unexpected)" in message
    assert "at 'shots[1]': -1 is less than the minimum of 0" in message
    assert (
        "at 'shots[2]': expected one of: 'some' is not of type 'integer' or 'all' was expected"
        in message
    )
    assert "at 'seeds': [] should be non-empty" in message
    assert (
        "at 'methods[0].protocol': unknown protocol 'transfr'; did you mean 'transfer'?" in message
    )


def test_plugin_option_and_cross_field_errors_are_all_listed(registry):
    bad = minimal(
        targets=["de", "en"],
        main_metric="f1",
        metrics=["accuracy", "bleu"],
        model={"name": "bag-of-embeddings", "options": {"dim": 0}},
        methods=[
            {"protocol": "fusion", "fusion": {"name": "exp-sum", "options": {"on": "probs"}}},
            {"protocol": "target-only", "label": "fusion", "transfer": "weight-copy"},
            {"protocol": "joint", "training": {"epochs": 0}},
        ],
        statistics={"baseline": "zero-shot"},
    )
    with pytest.raises(SpecError) as info:
        resolve_spec(bad, registry)
    message = str(info.value)
    for expected in (
        "at 'targets[1]': 'en' is also a source language",
        "at 'metrics[1]': unknown metric 'bleu'",
        "at 'main_metric': 'f1' is not one of the metrics (accuracy, bleu)",
        "\n  at 'model': invalid options for model 'bag-of-embeddings':\n"
        "    - at 'model.options.dim': 0 is less than the minimum of 1",
        "\n  at 'methods[0].fusion': invalid options for fusion strategy 'exp-sum':\n"
        "    - at 'methods[0].fusion.options.on': 'probs' is not one of ['scores', 'log_probs']",
        "at 'methods[1].label': 'fusion' is used by two methods",
        "at 'methods[1].transfer': protocol 'target-only' takes no 'transfer'; 'transfer' "
        "takes one",
        "at 'methods[2].training'",
        "at 'statistics.baseline': 'zero-shot' is not a method label",
    ):
        assert expected in message, expected
    # the inherited model is reported once, where it is written; the count is the bullets
    assert "methods[1].model" not in message and "methods[0].model" not in message
    bullets = [line for line in message.splitlines() if line.lstrip().startswith("- ")]
    assert message.startswith(f"spec: {len(bullets)} errors:\n")


def test_component_object_with_unknown_key_is_pinpointed(registry):
    with pytest.raises(SpecError, match=r"at 'dataset': Additional properties .*'option' was"):
        resolve_spec(minimal(dataset={"name": "toy", "option": {}}), registry)


def test_toml_json_and_errors_in_files(tmp_path, registry):
    toml = tmp_path / "exp.toml"
    toml.write_text(
        'dataset = "toy"\nsource = "en"\ntargets = ["de"]\n[[methods]]\nprotocol = "joint"\n'
    )
    as_json = tmp_path / "exp.json"
    as_json.write_text(json.dumps(read_spec_file(toml)))
    assert load_spec(toml, registry).to_json() == load_spec(as_json, registry).to_json() | {
        "name": "exp"
    }
    broken = tmp_path / "broken.toml"
    broken.write_text('dataset = "toy"\nsource = \n')
    with pytest.raises(SpecError, match=r"broken.toml: invalid TOML: .*line 2"):
        read_spec_file(broken)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"dataset": "toy",\n "source": }')
    with pytest.raises(SpecError, match=r"bad.json:2:12: invalid JSON"):
        read_spec_file(bad_json)
    with pytest.raises(SpecError, match=r"missing\.toml: no such file"):
        read_spec_file(tmp_path / "missing.toml")
    with pytest.raises(SpecError, match=r"unknown spec format '\.txt'"):
        (tmp_path / "x.txt").write_text("")
        read_spec_file(tmp_path / "x.txt")


def test_resolved_spec_validates_against_the_schema(registry):
    import jsonschema

    from xleval.experiment.resources import load_schema

    spec = resolve_spec(minimal(), registry)
    jsonschema.validate(spec.to_json(), load_schema("experiment"))
    assert resolve_spec(spec.to_json(), registry) == spec

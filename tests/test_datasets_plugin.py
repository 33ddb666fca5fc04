"""The bundled dataset plugins: ddtp-sections and the jsonl / csv / tsv file loaders."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from xleval_plugins.datafiles import (
    DEFAULT_SPLIT_RATIOS,
    check_examples,
    clear_cache,
    dataset_warnings,
    split_for_group,
)

from xleval.api.data import Example, MultilingualDataset
from xleval.api.hookspecs import Register, hookimpl
from xleval.errors import DataError, OptionsError
from xleval.experiment.sampling import sample_shots
from xleval.plugin.manager import get_plugin_manager

DATA = Path(__file__).parent / "fixtures" / "data"
MAPPED = {
    "text_field": "body",
    "label_field": "category",
    "lang_field": "language",
    "id_field": "uid",
    "group_field": "pair",
    "split_field": "part",
}


@pytest.fixture(scope="module")
def registry():
    return get_plugin_manager(disabled=()).registry


@pytest.fixture(scope="module")
def ddtp(registry) -> MultilingualDataset:
    return registry.build("datasets", "ddtp-sections").load()


def test_bundled_datasets_are_registered_by_the_datasets_plugin(registry):
    names = registry.names("datasets")
    assert {"ddtp-sections", "jsonl", "csv", "tsv"} <= set(names)
    for name in ("ddtp-sections", "jsonl", "csv", "tsv"):
        component = registry.get("datasets", name)
        assert component.plugin == "xleval.datasets"
        assert component.description


def test_ddtp_sections_has_the_promised_languages_and_labels(ddtp):
    assert ddtp.name == "ddtp-sections"
    assert len(ddtp.languages) >= 14
    assert {"en", "de", "fr", "ja", "ko", "ru", "zh_CN", "pt_BR"} <= set(ddtp.languages)
    assert ddtp.labels == ("admin", "devel", "games", "graphics", "net", "science", "sound", "text")
    assert ddtp.metadata["split_origin"] == "file"
    for lang, counts in ddtp.split_counts().items():
        assert min(counts.values()) > 0, lang


def test_ddtp_splits_are_by_group(ddtp):
    split_of: dict[str, str] = {}
    for e in ddtp.examples:
        assert split_of.setdefault(e.group, e.split) == e.split
    check_examples(ddtp.examples)  # the same checks a user file gets, on the loaded snapshot
    assert list(ddtp.warnings) == dataset_warnings(ddtp.examples)


def test_ddtp_splits_follow_the_rule_user_files_get(ddtp):
    # DATASET.md: sha256 of the group against 0.7 / 0.1 / 0.2, the loader's default split.
    assert all(split_for_group(e.group, DEFAULT_SPLIT_RATIOS) == e.split for e in ddtp.examples)


def test_ddtp_loads_quickly_and_is_cached(registry):
    clear_cache()
    start = time.perf_counter()
    first = registry.build("datasets", "ddtp-sections").load()
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, f"loading the snapshot took {elapsed:.2f}s"
    assert registry.build("datasets", "ddtp-sections").load() is first


def test_ddtp_options_select_languages_and_cap(registry, ddtp):
    ds = registry.build(
        "datasets", "ddtp-sections", {"languages": ["ja", "en"], "max_per_lang": 100}
    ).load()
    assert ds.languages == ("en", "ja")
    assert all(n == 100 for n in (sum(c.values()) for c in ds.split_counts().values()))
    assert ds.fingerprint != ddtp.fingerprint
    with pytest.raises(OptionsError, match="'path' was unexpected"):
        registry.build("datasets", "ddtp-sections", {"path": "x.jsonl"})


def test_ddtp_shots_are_nested(ddtp):
    small = sample_shots(ddtp, "ja", 8, seed=0)
    large = sample_shots(ddtp, "ja", 32, seed=0)
    assert len(small.examples) == 8 * len(ddtp.labels) - sum(small.shortfall.values())
    assert set(small.examples) <= set(large.examples)


def test_jsonl_loader(registry):
    ds = registry.build("datasets", "jsonl", {"path": str(DATA / "parallel.jsonl")}).load()
    assert ds.name == "parallel.jsonl"
    assert len(ds.examples) == 45


@pytest.mark.parametrize("name", ["csv", "tsv"])
def test_table_loaders_with_mapped_columns(registry, name):
    reference = registry.build("datasets", "jsonl", {"path": str(DATA / "parallel.jsonl")}).load()
    options = {"path": str(DATA / f"parallel_mapped.{name}"), "name": "mine", **MAPPED}
    ds = registry.build("datasets", name, options).load()
    assert ds.name == "mine"
    assert ds.fingerprint == reference.fingerprint


def test_csv_delimiter_option(registry, tmp_path):
    path = tmp_path / "semi.csv"
    path.write_text(
        "text;label;lang;split\nhello, world;a;en;train\nbye;a;en;test\n", encoding="utf-8"
    )
    ds = registry.build("datasets", "csv", {"path": str(path), "delimiter": ";"}).load()
    assert sorted(e.text for e in ds.examples) == ["bye", "hello, world"]


def test_tsv_quoting_can_be_turned_off(registry, tmp_path):
    path = tmp_path / "q.tsv"
    path.write_text('text\tlabel\tlang\tsplit\n"oops\ta\ten\ttrain\n', encoding="utf-8")
    with pytest.raises(DataError, match="malformed TSV"):
        registry.build("datasets", "tsv", {"path": str(path)}).load()
    ds = registry.build("datasets", "tsv", {"path": str(path), "quotechar": None}).load()
    assert ds.examples[0].text == '"oops'


def test_optional_fields_can_be_switched_off(registry):
    # parallel.jsonl has ids, groups and splits; ignoring them derives all three.
    options = {
        "path": str(DATA / "parallel.jsonl"),
        "id_field": None,
        "group_field": None,
        "split_field": None,
        "split_ratios": {"train": 1.0},
    }
    ds = registry.build("datasets", "jsonl", options).load()
    assert ds.metadata["split_origin"] == "group hash"
    assert {e.split for e in ds.examples} == {"train"}
    assert not any(e.id.endswith("-g01") for e in ds.examples)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "'path' is a required property"),
        ({"path": "x.jsonl", "text": "body"}, "'text' was unexpected"),
        ({"path": "x.jsonl", "split_ratios": {"train": "0.7"}}, "is not of type 'number'"),
        ({"path": "x.jsonl", "max_per_lang": 0}, "less than the minimum of 1"),
        ({"path": "x.jsonl", "delimiter": ";"}, "'delimiter' was unexpected"),
    ],
)
def test_option_errors(registry, options, message):
    with pytest.raises(OptionsError, match=message):
        registry.build("datasets", "jsonl", options)


def test_split_ratios_must_sum_to_one(registry):
    options = {"path": str(DATA / "unsplit.jsonl"), "split_ratios": {"train": 0.5, "test": 0.2}}
    with pytest.raises(OptionsError, match=r"split_ratios must sum to 1, got 0.7"):
        registry.build("datasets", "jsonl", options)


def test_missing_user_file_names_the_path(registry, tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(DataError, match=f"{missing}: no such file"):
        registry.build("datasets", "csv", {"path": str(missing)}).load()


class ThirdPartyDataset:
    """A third-party plugin that builds examples in code and reuses the core checks."""

    @hookimpl
    def xleval_register_datasets(self, register: Register) -> None:
        register("toy-leaky", lambda options: self, description="Leaks a group.")

    def load(self) -> MultilingualDataset:
        examples = [
            Example(id="1", group="g", lang="en", label="a", text="hi", split="train"),
            Example(id="2", group="g", lang="de", label="a", text="hallo", split="test"),
        ]
        check_examples(examples, what="toy-leaky")
        return MultilingualDataset(name="toy-leaky", examples=tuple(examples))


def test_third_party_plugin_reuses_the_checks():
    pm = get_plugin_manager(use_entry_points=False, plugins=[ThirdPartyDataset()])
    component = pm.registry.build("datasets", "toy-leaky")
    with pytest.raises(DataError, match="example '2': group 'g' is in split 'test' here"):
        component.load()

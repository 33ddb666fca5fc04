"""Data rules hold for every loader, checked after load(); plugin code errors are one line."""

from __future__ import annotations

import html
import json

import pytest
from helpers import xleval_subprocess

from xleval.api.data import Example, MultilingualDataset
from xleval.errors import DataError, PluginCodeError
from xleval.experiment.dataset_rules import check_dataset, load_dataset
from xleval.plugin.manager import get_plugin_manager

pytestmark = pytest.mark.usefixtures("clean_plugin_env")


def load(variant: str) -> MultilingualDataset:
    registry = get_plugin_manager(strict=False).registry
    return load_dataset(registry, "rule-breaking", {"variant": variant})


def test_a_dataset_that_keeps_the_rules_loads_without_warnings(with_plugin_site):
    dataset = load("fine")
    assert dataset.warnings == ()
    assert len(dataset.examples) == 48


def test_undocumented_split_names_are_an_error(with_plugin_site):
    with pytest.raises(DataError) as caught:
        load("validation")
    message = str(caught.value)
    assert message.startswith("dataset 'rule-breaking' of plugin 'misbehaving'")
    assert "split name(s) 'validation' (8 examples) are not xleval splits" in message
    assert "'validation' is 'dev'" in message


def test_a_group_in_two_splits_across_languages_is_an_error_naming_both_places(
    with_plugin_site,
):
    with pytest.raises(DataError) as caught:
        load("leaky")
    message = str(caught.value)
    assert "group 'games-9' is in 'dev' (en 'en-games-9') and in 'train' (de 'de-games-9')" in (
        message
    )
    assert "group 'net-9' is in 'dev'" in message
    many = tuple(
        Example(f"{lang}{g}", f"g{g}", lang, "a", f"t{g}", split)
        for g in range(5)
        for lang, split in (("en", "train"), ("de", "test"))
    )
    with pytest.raises(
        DataError,
        match=r"group 'g2' is in 'test' \(de 'de2'\) and in 'train' "
        r"\(en 'en2'\) and 2 more$",
    ):
        check_dataset(MultilingualDataset("d", many), "here")


def test_labels_that_differ_in_case_are_a_warning(with_plugin_site):
    warnings = load("label-case").warnings
    assert (
        "labels 'Games', 'games' differ only in case or surrounding spaces and are different "
        "classes ('Games' in de; 'games' in de, en)" in warnings
    )


def test_texts_in_train_and_test_of_one_language_are_counted(with_plugin_site):
    warnings = load("memorised").warnings
    assert any(
        w.startswith(
            "language 'de': 4 test text(s) also appear in its train split (under other groups), "
            "1 of them with a different label"
        )
        for w in warnings
    ), warnings


def test_a_label_missing_from_a_language_is_a_warning(with_plugin_site):
    assert any(
        w.startswith("language 'de' has no example of label(s) 'net'")
        for w in load("no-net-in-de").warnings
    )


def test_a_loader_that_returns_something_else_or_raises_is_named(with_plugin_site):
    with pytest.raises(DataError, match="load\\(\\) returned list, not a"):
        load("not-a-dataset")
    with pytest.raises(PluginCodeError) as caught:
        load("missing-file")
    assert str(caught.value).startswith(
        "dataset 'rule-breaking' of plugin 'misbehaving' (xleval-misbehaving-plugin): "
        "load() failed: FileNotFoundError: [Errno 2] No such file or directory"
    )
    assert isinstance(caught.value.__cause__, FileNotFoundError)


def test_ids_must_not_repeat_within_a_language():
    e = Example("x", "g", "en", "a", "text", "train")
    with pytest.raises(
        DataError, match="example ids repeat within a language: 'x' in 'en' \\(2x\\)"
    ):
        check_dataset(MultilingualDataset("d", (e, e)), "here")
    with pytest.raises(DataError, match="here: example 'x' \\('en'\\): field\\(s\\) label must"):
        check_dataset(MultilingualDataset("d", (Example("x", "g", "en", 3, "t", "train"),)), "here")


@pytest.mark.slow
def test_cli_shows_warnings_and_errors_without_tracebacks(plugin_site):
    shown = xleval_subprocess(
        ["datasets", "show", "rule-breaking", "-o", "variant=memorised"], pythonpath=plugin_site
    )
    assert shown.returncode == 0, shown.stderr
    assert "warning: language 'de': 4 test text(s) also appear in its train split" in shown.stderr
    for variant, words in [
        ("validation", "are not xleval splits"),
        ("missing-file", "load() failed: FileNotFoundError"),
    ]:
        failed = xleval_subprocess(
            ["datasets", "show", "rule-breaking", "-o", f"variant={variant}"],
            pythonpath=plugin_site,
        )
        assert failed.returncode == 1
        lines = [line for line in failed.stderr.splitlines() if not line.startswith("warning:")]
        assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0]
    debug = xleval_subprocess(
        ["--debug", "datasets", "show", "rule-breaking", "-o", "variant=missing-file"],
        pythonpath=plugin_site,
    )
    assert "Traceback" in debug.stderr and "FileNotFoundError" in debug.stderr


@pytest.mark.slow
def test_a_run_prints_keeps_and_shows_the_data_warnings(tmp_path, plugin_site):
    spec = tmp_path / "spec.toml"
    spec.write_text(
        """name = "rules"
dataset = { name = "rule-breaking", options = { variant = "memorised" } }
source = "en"
targets = ["de"]
shots = [4]
seeds = [1]
model = { name = "bag-of-embeddings", options = { dim = 8, buckets = 1000 } }
training = { epochs = 2, min_steps = 100 }
[[methods]]
protocol = "target-only"
"""
    )
    done = xleval_subprocess(
        ["run", str(spec), "--out", str(tmp_path / "run"), "-q"], pythonpath=plugin_site
    )
    assert done.returncode == 0, done.stderr
    words = "language 'de': 4 test text(s) also appear in its train split"
    assert f"warning: {words}" in done.stderr
    assert "data warnings:" in done.stdout and words in done.stdout
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert any(w.startswith(words) for w in report["dataset"]["warnings"])
    assert words in html.unescape((tmp_path / "run" / "report.html").read_text())
    shown = xleval_subprocess(["report", str(tmp_path / "run")], pythonpath=plugin_site)
    assert "data warnings:" in shown.stdout and words in shown.stdout
    broken = xleval_subprocess(
        ["report", str(tmp_path / "run"), "--format", "raising"], pythonpath=plugin_site
    )
    assert broken.returncode == 1
    assert broken.stderr.splitlines() == [
        "error: reporter 'raising' of plugin 'misbehaving' (xleval-misbehaving-plugin): write() "
        "failed: RuntimeError: the printer is on fire"
    ]


def test_plugin_import_exits_and_hook_errors_are_isolated(with_plugin_site):
    pm = get_plugin_manager(strict=False)
    record = pm.records["exits"]
    assert record.status == "failed"
    assert record.error == "SystemExit: xleval_misbehaving.exits: this module is a script"
    assert pm.records["misbehaving"].status == "ok"


def test_a_hook_that_raises_is_named_in_the_plugin_list():
    class Raises:
        __name__ = "raiser"

        from xleval.api.hookspecs import hookimpl

        @hookimpl
        def xleval_register_metrics(self, register):
            raise ValueError("no metrics today")

    pm = get_plugin_manager(strict=False, use_entry_points=False, plugins=[Raises()])
    assert pm.records["raiser"].error == (
        "in hook xleval_register_metrics: ValueError: no metrics today"
    )


def test_unknown_disabled_names_warn_with_a_suggestion(plugin_site):
    done = xleval_subprocess(["--disable-plugin", "exmaple", "plugins"], pythonpath=plugin_site)
    assert done.returncode == 0
    assert (
        "warning: --disable-plugin/XLEVAL_DISABLE_PLUGINS: no plugin or distribution is named "
        "'exmaple'; did you mean 'example'?" in done.stderr
    )
    quiet = xleval_subprocess(["--disable-plugin", "example", "plugins"], pythonpath=plugin_site)
    assert "warning" not in quiet.stderr


def test_validate_and_run_build_every_component_first(tmp_path, plugin_site):
    spec = tmp_path / "spec.toml"
    spec.write_text(
        """name = "checked"
dataset = { name = "rule-breaking" }
source = "en"
targets = ["de"]
model = { name = "checked", options = { scale = 0 } }
[[methods]]
protocol = "target-only"
[[methods]]
protocol = "joint"
"""
    )
    for command in (["validate", str(spec)], ["run", str(spec), "--out", str(tmp_path / "r")]):
        done = xleval_subprocess(command, pythonpath=plugin_site)
        assert done.returncode == 1, done.stderr
        assert done.stderr.splitlines() == [
            f"error: {spec}: 1 error:",
            "  - at 'model': model 'checked' of plugin 'misbehaving' (xleval-misbehaving-plugin): "
            "building it failed: ValueError: scale 0 would make every weight zero",
        ]
    assert not (tmp_path / "r" / "cells").exists()  # nothing trained
    spec.write_text(spec.read_text().replace("scale = 0", "scale = 2"))
    done = xleval_subprocess(["validate", str(spec)], pythonpath=plugin_site)
    assert done.returncode == 0 and "every component built with its options" in done.stdout

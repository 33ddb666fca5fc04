"""Language metadata (name, script, family from langcodes and language-data) and the
by-script view of transfer gaps."""

from __future__ import annotations

import copy
import json

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from xleval_plugins.views import by_script_inputs, by_script_view

from xleval.api import languages as lang_module
from xleval.api.languages import language_info, languages_info
from xleval.cli.main import build_cli


@pytest.mark.parametrize(
    "code, name, script, family",
    [
        ("en", "English", "Latn", "West Germanic"),
        ("ru", "Russian", "Cyrl", "East Slavic"),
        ("ja", "Japanese", "Jpan", "Japonic"),
        ("zh-Hant", "Chinese (Traditional)", "Hant", "Sino-Tibetan"),
        ("pt_BR", "Portuguese (Brazil)", "Latn", "Romance"),
        ("sr-Latn", "Serbian (Latin)", "Latn", "South Slavic"),  # filed under Serbo-Croatian
    ],
)
def test_known_codes_get_name_script_and_family(code, name, script, family):
    info = language_info(code)
    assert (info["name"], info["script"], info["family"]) == (name, script, family)
    assert info["code"] == code and info["script_name"]


@pytest.mark.parametrize("code", ["xx1", "qaa", "und", "", "123", "not a code", "x-private"])
def test_unknown_codes_are_kept_as_unknown(code):
    info = language_info(code)
    assert info == {"code": code, "name": None, "script": None, "script_name": None, "family": None}


@given(st.text(max_size=12))
def test_no_code_raises(code):
    info = language_info(code)
    assert info["code"] == code and set(info) == {"code", "name", "script", "script_name", "family"}


def test_without_the_family_table_families_are_unknown(monkeypatch):
    monkeypatch.setattr(lang_module, "FAMILY_TABLE", ("language_data", "no/such/table.csv"))
    lang_module._families.cache_clear()
    lang_module.language_info.cache_clear()
    try:
        info = language_info("de")
        assert info["name"] == "German" and info["family"] is None
    finally:
        lang_module._families.cache_clear()
        lang_module.language_info.cache_clear()


def test_a_report_names_its_languages(tiny_run):
    report = json.loads((tiny_run / "report.json").read_text())
    assert report["languages"] == languages_info(["en", "de", "fr"])
    assert report["languages"]["fr"]["script"] == "Latn"


def gap_report(targets: dict[str, float], source: str = "en") -> dict:
    """A report of one transfer method from ``source`` with these transfer gaps at k = 4."""
    return {
        "spec": {"main_metric": "accuracy", "methods": [{"label": "transfer"}], "shots": [4]},
        "cells": [
            {"method": "transfer", "sources": [source], "target": t, "status": "ok"}
            for t in targets
        ],
        "summary": {
            "transfer": {
                "transfer_gap_note": None,
                "by_shots": {"4": {"transfer_gap_per_target": dict(targets)}},
            }
        },
    }


def test_by_script_groups_the_gaps_by_source_and_target_script():
    report = gap_report({"de": 0.02, "fr": 0.04, "ru": 0.10, "uk": 0.14, "ja": 0.30, "xx1": 0.5})
    rows = {g["target"]: g for g in by_script_inputs(report)}
    assert rows["de"]["scripts"] == "Latin → Latin" and rows["de"]["same"] is True
    assert rows["ru"]["scripts"] == "Latin → Cyrillic" and rows["ru"]["same"] is False
    assert rows["ja"]["same"] is False
    assert rows["xx1"]["scripts"] == "Latin → unknown" and rows["xx1"]["same"] is None
    text = by_script_view(report, 3, "simple")
    summary = next(line for line in text.splitlines() if line.startswith("transfer  4    +0.030"))
    # same script: de, fr (mean 0.03); different: ru, uk, ja (mean 0.18); unknown: xx1
    assert "+0.030 (2)" in summary and "+0.180 (3)" in summary and "+0.150" in summary
    assert "+0.500 (1)" in summary
    cyrillic = next(line for line in text.splitlines() if "Latin → Cyrillic" in line)
    assert "+0.120 (2)" in cyrillic and "en→ru" in cyrillic and "en→uk" in cyrillic
    assert "East Slavic" in text and "unknown" in text


def test_the_by_script_view_of_a_run(tiny_run):
    report = json.loads((tiny_run / "report.json").read_text())
    changed = copy.deepcopy(report)
    changed["languages"]["fr"] |= {"script": "Cyrl", "script_name": "Cyrillic"}
    text = by_script_view(changed, 3, "simple")
    assert "Latin → Cyrillic" in text and "Latin → Latin" in text
    result = CliRunner().invoke(build_cli(), ["report", str(tiny_run), "--view", "by-script"])
    assert result.exit_code == 0, result.output
    assert "same script" in result.output and "West Germanic" in result.output

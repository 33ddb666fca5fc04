"""``xleval datasets`` and ``xleval datasets show``."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from xleval.cli.datasets import datasets_group, parse_option
from xleval.cli.main import build_cli

DATA = Path(__file__).parent / "fixtures" / "data"


@pytest.fixture
def run(clean_plugin_env):
    cli = build_cli()
    cli.add_command(datasets_group())

    def invoke(*args: str):
        return CliRunner().invoke(cli, list(args))

    return invoke


def test_plain_invocation_lists_datasets(run):
    result = run("datasets")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["dataset", "provider", "description"]
    listed = {line.split()[0] for line in lines[2:] if line and not line.startswith(" ")}
    assert {"ddtp-sections", "jsonl", "csv", "tsv"} <= listed
    assert "'xleval.datasets' (xleval)" in result.output


def test_list_as_json(run):
    result = run("datasets", "--json")
    assert result.exit_code == 0, result.output
    by_name = {d["name"]: d for d in json.loads(result.output)}
    assert by_name["csv"]["plugin"] == "xleval.datasets"
    assert "path" in by_name["csv"]["options"]["required"]


def test_show_ddtp_sections(run):
    result = run("datasets", "show", "ddtp-sections")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("dataset ddtp-sections: ")
    assert lines[1].startswith("fingerprint sha256:")
    assert lines[2].startswith("source ") and lines[2].endswith("; splits from the file")
    assert lines[4].split() == ["lang", "train", "dev", "test", "total"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[6:]}
    for lang in ("en", "ja", "ko", "ru", "zh_CN"):
        assert lang in rows
    assert len(rows) - 1 >= 14  # languages, plus the "all" row
    train, dev, test, total = map(int, rows["all"])
    assert train + dev + test == total and min(train, dev, test) > 0


def test_show_json_matches_the_dataset(run):
    result = run("datasets", "show", "ddtp-sections", "--json", "-o", 'languages=["ja","ko"]')
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["languages"] == ["ja", "ko"]
    assert set(doc["split_counts"]) == {"ja", "ko"}
    assert doc["n_examples"] == sum(sum(c.values()) for c in doc["split_counts"].values())
    assert doc["counts"]["ja"]["train"]["games"] > 0
    assert doc["fingerprint"].startswith("sha256:")


def test_show_user_csv_with_mapped_columns_and_labels(run):
    result = run(
        "datasets",
        "show",
        "csv",
        "-o",
        f"path={DATA / 'parallel_mapped.csv'}",
        "-o",
        "text_field=body",
        "-o",
        "label_field=category",
        "-o",
        "lang_field=language",
        "-o",
        "id_field=uid",
        "-o",
        "group_field=pair",
        "-o",
        "split_field=part",
        "--labels",
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "dataset parallel_mapped.csv: 45 examples, 3 languages, 3 labels" in out
    assert ["en", "9", "3", "3", "15"] in [line.split() for line in out.splitlines()]
    header = next(line for line in out.splitlines() if line.startswith("lang") and "split" in line)
    assert header.split() == ["lang", "split", "sport", "tech", "weather", "total"]
    assert ["pt_BR", "test", "1", "1", "1", "3"] in [line.split() for line in out.splitlines()]


def test_show_jsonl_with_options_parsed_as_json(run):
    result = run(
        "datasets",
        "show",
        "jsonl",
        "-o",
        f"path={DATA / 'unsplit.jsonl'}",
        "-o",
        'split_ratios={"train": 0.5, "test": 0.5}',
        "-o",
        "max_per_lang=4",
        "--json",
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["metadata"]["split_ratios"] == {"train": 0.5, "dev": 0.0, "test": 0.5}
    assert all(sum(c.values()) == 4 for c in doc["split_counts"].values())


def test_warnings_go_to_stderr(run, tmp_path):
    path = tmp_path / "nodev.jsonl"
    path.write_text(
        '{"text": "a", "label": "x", "lang": "en", "split": "train"}\n'
        '{"text": "b", "label": "x", "lang": "en", "split": "test"}\n',
        encoding="utf-8",
    )
    result = run("datasets", "show", "jsonl", "-o", f"path={path}")
    assert result.exit_code == 0, result.output
    assert result.stderr == "warning: language 'en' has no dev examples\n"
    assert "warning:" not in result.stdout


def test_data_error_is_one_line_without_traceback(run, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": "x", "lang": "English"}\n', encoding="utf-8")
    result = run("datasets", "show", "jsonl", "-o", f"path={path}")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {path}:1: field 'lang' has 'English'")
    assert "Traceback" not in result.output


def test_missing_file_and_unknown_dataset(run):
    result = run("datasets", "show", "jsonl", "-o", "path=missing.jsonl")
    assert result.exit_code == 1
    assert result.stderr == "error: missing.jsonl: no such file\n"
    result = run("datasets", "show", "ddtp-section")
    assert result.exit_code == 1
    assert "unknown dataset 'ddtp-section'; did you mean 'ddtp-sections'?" in result.stderr


def test_bad_options_on_the_command_line(run):
    result = run("datasets", "show", "jsonl", "-o", "path")
    assert result.exit_code == 2
    assert "expected KEY=VALUE, got 'path'" in result.output
    result = run("datasets", "show", "jsonl", "-o", "path=a", "-o", "path=b")
    assert result.exit_code == 2
    assert "option 'path' given twice" in result.output
    result = run("datasets", "show", "jsonl", "-o", "pth=a.jsonl")
    assert result.exit_code == 1
    assert "'path' is a required property" in result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("path=my.jsonl", ("path", "my.jsonl")),
        ("max_per_lang=5", ("max_per_lang", 5)),
        ("id_field=null", ("id_field", None)),
        ('languages=["en", "de"]', ("languages", ["en", "de"])),
        ("text_field=a=b", ("text_field", "a=b")),
        ("name=", ("name", "")),
    ],
)
def test_parse_option(text, expected):
    assert parse_option(text) == expected


def test_parse_option_rejects_missing_key():
    with pytest.raises(click.BadParameter):
        parse_option("=value")


def test_show_says_how_a_file_without_splits_was_split(run):
    path = DATA / "unsplit.jsonl"
    result = run("datasets", "show", "jsonl", "-o", f"path={path}")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[2] == (
        f"source {path}; splits by group hash (train 0.7, dev 0.1, test 0.2)"
    )

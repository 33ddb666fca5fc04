"""Reading, validating and splitting data files (xleval_plugins.datafiles)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import pytest
from xleval_plugins.datafiles import (
    DEFAULT_SPLIT_RATIOS,
    FieldMap,
    check_examples,
    check_split_ratios,
    clear_cache,
    dataset_warnings,
    is_language_tag,
    load_dataset_file,
    select_examples,
    split_for_group,
)

from xleval.api.data import Example, content_fingerprint
from xleval.errors import DataError, OptionsError

DATA = Path(__file__).parent / "fixtures" / "data"
PARALLEL = DATA / "parallel.jsonl"
MAPPED = FieldMap(
    text="body", label="category", lang="language", id="uid", group="pair", split="part"
)


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_cache()
    yield
    clear_cache()


def write_jsonl(path: Path, rows: list[dict | str]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def row(i: int, **overrides) -> dict:
    """A valid row; groups g0.. are train, so tests change only what they test."""
    base = {
        "id": f"r{i}",
        "group": f"g{i}",
        "lang": "en",
        "label": "a",
        "split": "train",
        "text": f"text {i}",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def load_error(path: Path, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load_dataset_file(path, **kwargs)
    return str(info.value)


# ---------------------------------------------------------------------------- loading


def test_jsonl_fixture_loads_with_splits_from_the_file():
    ds = load_dataset_file(PARALLEL)
    assert ds.name == "parallel.jsonl"
    assert ds.languages == ("de", "en", "pt_BR")
    assert ds.labels == ("sport", "tech", "weather")
    assert ds.split_counts()["en"] == {"train": 9, "dev": 3, "test": 3}
    assert ds.metadata["split_origin"] == "file"
    assert ds.warnings == ()
    assert ds.select("de", "test")[0].id == "de-g05"


@pytest.mark.parametrize(
    ("name", "fmt"), [("parallel_mapped.csv", "csv"), ("parallel_mapped.tsv", "tsv")]
)
def test_mapped_csv_and_tsv_give_the_same_dataset_as_jsonl(name, fmt):
    reference = load_dataset_file(PARALLEL)
    ds = load_dataset_file(DATA / name, fields=MAPPED)
    assert ds.metadata["format"] == fmt
    assert ds.examples == reference.examples  # rows were shuffled: order is canonical
    assert ds.fingerprint == reference.fingerprint
    quoted = next(e for e in ds.examples if e.id == "en-g15")
    assert quoted.text == 'Back up your files, "just in case".'


def test_fingerprint_ignores_row_order_and_compression_but_not_a_label(tmp_path):
    lines = PARALLEL.read_text(encoding="utf-8").splitlines()
    reversed_file = tmp_path / "reversed.jsonl"
    reversed_file.write_text("\n".join(reversed(lines)) + "\n", encoding="utf-8")
    gz = tmp_path / "data.jsonl.gz"
    gz.write_bytes(gzip.compress(PARALLEL.read_bytes()))
    reference = load_dataset_file(PARALLEL).fingerprint
    assert reference.startswith("sha256:") and len(reference) == 7 + 64
    assert load_dataset_file(reversed_file).fingerprint == reference
    assert load_dataset_file(gz).fingerprint == reference

    changed = tmp_path / "changed.jsonl"
    rows = [json.loads(line) for line in lines]
    rows[-1]["label"] = "sport" if rows[-1]["label"] != "sport" else "tech"
    write_jsonl(changed, rows)
    assert load_dataset_file(changed).fingerprint != reference


def test_fingerprint_is_unambiguous_about_field_boundaries():
    a = Example(id="1", group="g", lang="en", label="ab", text="c", split="train")
    b = Example(id="1", group="g", lang="en", label="a", text="bc", split="train")
    assert content_fingerprint([a]) != content_fingerprint([b])


def test_utf8_bom_and_crlf_line_ends_are_accepted(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label,lang\r\nhello,a,en\r\n")
    ds = load_dataset_file(path, split_ratios={"train": 1.0})
    assert [(e.text, e.label, e.lang) for e in ds.examples] == [("hello", "a", "en")]


def test_tsv_without_quoting_keeps_stray_quotes(tmp_path):
    path = tmp_path / "quotes.tsv"
    path.write_text('text\tlabel\tlang\n"quoted start only\ta\ten\n', encoding="utf-8")
    ds = load_dataset_file(path, quotechar=None, split_ratios={"train": 1.0})
    assert ds.examples[0].text == '"quoted start only'


def test_integer_labels_and_ids_become_strings(tmp_path):
    path = write_jsonl(tmp_path / "ints.jsonl", [row(1, label=0, id=7), row(2, label=1)])
    ds = load_dataset_file(path)
    assert {e.label for e in ds.examples} == {"0", "1"}
    assert "7" in {e.id for e in ds.examples}


# ---------------------------------------------------------------------------- split by group


def test_file_without_split_is_split_by_group_hash():
    ds = load_dataset_file(DATA / "unsplit.jsonl")
    assert ds.metadata["split_origin"] == "group hash"
    assert ds.metadata["split_ratios"] == DEFAULT_SPLIT_RATIOS
    for e in ds.examples:
        assert e.split == split_for_group(e.group, DEFAULT_SPLIT_RATIOS)
        assert e.id == e.group and e.id.startswith(f"{e.lang}:")


def test_generated_ids_and_splits_do_not_depend_on_row_order(tmp_path):
    lines = (DATA / "unsplit.jsonl").read_text(encoding="utf-8").splitlines()
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text("\n".join(lines[::2] + lines[1::2]) + "\n", encoding="utf-8")
    a = load_dataset_file(DATA / "unsplit.jsonl")
    b = load_dataset_file(shuffled)
    assert a.examples == b.examples
    assert a.fingerprint == b.fingerprint


def test_translations_sharing_a_group_share_a_split_and_ratios_hold(tmp_path):
    rows = []
    for g in range(600):
        for lang in ("en", "de"):
            rows.append(
                {"group": f"doc{g}", "lang": lang, "label": "ab"[g % 2], "text": f"{lang} text {g}"}
            )
    path = write_jsonl(tmp_path / "many.jsonl", rows)
    ds = load_dataset_file(path)
    by_group: dict[str, set[str]] = {}
    for e in ds.examples:
        by_group.setdefault(e.group, set()).add(e.split)
    assert all(len(splits) == 1 for splits in by_group.values())
    share = Counter(next(iter(s)) for s in by_group.values())
    assert 0.64 < share["train"] / 600 < 0.76
    assert 0.06 < share["dev"] / 600 < 0.14
    assert 0.15 < share["test"] / 600 < 0.25

    custom = load_dataset_file(path, split_ratios={"train": 0.5, "dev": 0.0, "test": 0.5})
    counts = Counter(e.split for e in custom.examples)
    assert counts["dev"] == 0 and 0.4 < counts["train"] / len(custom.examples) < 0.6
    assert "language 'de' has no dev examples" in custom.warnings


def test_group_defaults_to_id_and_identical_rows_share_a_group(tmp_path):
    path = write_jsonl(
        tmp_path / "dups.jsonl",
        [
            {"id": "x1", "lang": "en", "label": "a", "text": "one"},
            {"lang": "en", "label": "a", "text": "same"},
            {"lang": "en", "label": "a", "text": "same"},
        ],
    )
    ds = load_dataset_file(path, split_ratios={"train": 1.0})
    x1 = next(e for e in ds.examples if e.id == "x1")
    assert x1.group == "x1"
    same = [e for e in ds.examples if e.text == "same"]
    assert len({e.id for e in same}) == 2
    assert len({e.group for e in same}) == 1 and len({e.split for e in same}) == 1


def test_split_for_group_is_sha256_against_cumulative_ratios():
    # Spelled out independently: a change would silently move users' examples between splits.
    for group in [f"group-{i}" for i in range(200)]:
        u = int.from_bytes(hashlib.sha256(group.encode()).digest()[:8], "big") / 2**64
        expected = "train" if u < 0.7 else "dev" if u < 0.8 else "test"
        assert split_for_group(group, DEFAULT_SPLIT_RATIOS) == expected, group
    assert split_for_group("anything", {"train": 1.0}) == "train"
    assert split_for_group("anything", {"train": 0.0, "dev": 0.0, "test": 1.0}) == "test"


@pytest.mark.parametrize(
    ("ratios", "message"),
    [
        ({"train": 0.5, "dev": 0.1, "test": 0.1}, "must sum to 1"),
        ({"train": 0.7, "valid": 0.3}, "unknown split(s) 'valid'"),
        ({"train": 1.5, "test": -0.5}, "between 0 and 1"),
        ({"train": 0.0, "test": 1.0}, "train must be above 0"),
    ],
)
def test_bad_split_ratios(ratios, message):
    with pytest.raises(OptionsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_split_ratios(ratios)


# ---------------------------------------------------------------------------- errors


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.jsonl"
    assert load_error(missing) == f"{missing}: no such file"


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    assert "empty.jsonl: no rows" in load_error(path)
    csv_path = tmp_path / "empty.csv"
    csv_path.write_text("", encoding="utf-8")
    assert "empty.csv: empty file (expected a header line" in load_error(csv_path)


def test_unknown_file_suffix_asks_for_a_format(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("x\n", encoding="utf-8")
    assert "data.txt: cannot tell the format" in load_error(path)


def test_malformed_json_line(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [row(1), '{"text": "a", "label": ', row(3)])
    message = load_error(path)
    assert message.startswith(f"{path}:2: malformed JSON (Expecting value at column 24)")
    assert '\'{"text": "a", "label": \'' in message


def test_json_line_that_is_not_an_object(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [row(1), '["en", "a", "text"]'])
    assert f"{path}:2: expected a JSON object, got list" in load_error(path)


def test_malformed_csv_quoting(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('text,label,lang\nok,a,en\n"broken"quote,a,en\n', encoding="utf-8")
    assert load_error(path).startswith(f"{path}:3: malformed CSV: ',' expected after '\"'")


def test_csv_row_with_wrong_number_of_columns(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("text,label,lang\nok,a,en\nextra,a,en,oops\n", encoding="utf-8")
    message = load_error(path)
    assert f"{path}:3: expected 3 columns as in the header (line 1), got 4" in message
    assert "'extra,a,en,oops'" in message


def test_csv_line_numbers_count_quoted_newlines(tmp_path):
    path = tmp_path / "multi.csv"
    path.write_text('text,label,lang\n"two\nlines",a,en\nbad,a,\n', encoding="utf-8")
    assert load_error(path).startswith(f"{path}:4: field 'lang' is empty: ''")


def test_csv_missing_column_says_which_option_maps_it(tmp_path):
    path = tmp_path / "cols.csv"
    path.write_text("body,label,lang\nhello,a,en\n", encoding="utf-8")
    message = load_error(path)
    assert message == (
        f"{path}:1: no column 'text' for the text field (columns: body, label, "
        "lang); set the option text_field to the column's name"
    )


def test_csv_duplicate_header_column(tmp_path):
    path = tmp_path / "cols.csv"
    path.write_text("text,label,lang,label\nhello,a,en,b\n", encoding="utf-8")
    assert f"{path}:1: column(s) 'label' appear more than once" in load_error(path)


def test_missing_field(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [row(1), row(2, label=...)])
    assert load_error(path) == (
        f"{path}:2: field 'label' is missing (the row has: id, group, lang, split, text)"
    )


@pytest.mark.parametrize(("field", "value"), [("text", "   "), ("label", ""), ("lang", "")])
def test_empty_field(tmp_path, field, value):
    path = write_jsonl(tmp_path / "bad.jsonl", [row(1), row(2), row(3, **{field: value})])
    assert load_error(path) == f"{path}:3: field '{field}' is empty: {value!r}"


def test_mapped_field_names_both_column_and_field(tmp_path):
    path = tmp_path / "mapped.csv"
    path.write_text("body,category,language\nhello,a,en\n  ,a,en\n", encoding="utf-8")
    fields = FieldMap(text="body", label="category", lang="language")
    assert load_error(path, fields=fields) == f"{path}:3: field 'body' (text) is empty: '  '"


def test_wrong_json_type(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [row(1, label=["a", "b"])])
    assert load_error(path) == (
        f"{path}:1: field 'label' must be a string or an integer, got list: ['a', 'b']"
    )
    path = write_jsonl(tmp_path / "bad2.jsonl", [row(1, text=5)])
    assert load_error(path) == f"{path}:1: field 'text' must be a string, got int: 5"


def test_non_utf8_bytes_name_line_field_and_bytes(tmp_path):
    path = tmp_path / "latin1.jsonl"
    good = json.dumps(row(1)).encode()
    bad = json.dumps(row(2, text="caf\u00e9 au lait")).encode().replace(b"\\u00e9", b"\xe9")
    path.write_bytes(good + b"\n" + bad + b"\n")
    message = load_error(path)
    assert message == (
        f"{path}:2: field 'text' is not valid UTF-8 (byte 0xe9): b'caf\\xe9 au lait'; "
        "save the file as UTF-8"
    )


def test_non_utf8_bytes_in_csv(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"text,label,lang\nok,a,en\nni\xf1o,a,es\n")
    assert load_error(path).startswith(f"{path}:3: field 'text' is not valid UTF-8 (byte 0xf1)")


def test_unknown_split_name_with_hint(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [row(1), row(2, split="validation")])
    assert load_error(path) == (
        f"{path}:2: field 'split' has unknown split 'validation' "
        "(expected train, dev, test; did you mean 'dev'?)"
    )
    path = write_jsonl(tmp_path / "bad2.jsonl", [row(1, split="holdout")])
    assert "has unknown split 'holdout' (expected train, dev, test)" in load_error(path)


def test_split_names_are_case_insensitive(tmp_path):
    path = write_jsonl(tmp_path / "case.jsonl", [row(1, split="Train")])
    assert load_dataset_file(path).examples[0].split == "train"


def test_rows_must_all_have_a_split_or_none(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [row(1), row(2, split=...)])
    assert load_error(path) == (
        f"{path}:2: field 'split' is missing, but line 1 has one: give every row a split, "
        "or none (then rows are split by group)"
    )


@pytest.mark.parametrize(
    "code",
    [
        "en",
        "pt_BR",
        "pt-BR",
        "zh_CN",
        "zh-Hans",
        "sr-Latn",
        "zh-Hant-TW",
        "es-419",
        "fil",
        "de-CH-1996",
        "EN",
    ],
)
def test_plausible_language_tags(code):
    assert is_language_tag(code)


@pytest.mark.parametrize(
    "code",
    ["English", "e", "en-", "en US", "12", "en__US", "sr@latin", "portuguese", "", "zh-Hans-"],
)
def test_implausible_language_tags(code):
    assert not is_language_tag(code)


def test_bad_language_code(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [row(1), row(2, lang="English")])
    message = load_error(path)
    assert message.startswith(
        f"{path}:2: field 'lang' has 'English', which is not a plausible "
        "language tag (BCP-47 like 'en', 'pt-BR'"
    )


def test_test_label_absent_from_all_train_data(tmp_path):
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            row(1),
            row(2, lang="de", label="b"),
            row(3, split="test", label="c"),
            row(4, split="test", label="c"),
        ],
    )
    assert load_error(path) == (
        f"{path}:3: label 'c' (test split) appears in no train example, so no model can "
        "learn it (train labels: a, b)"
    )


def test_label_in_another_languages_train_is_not_an_error_but_a_warning(tmp_path):
    path = write_jsonl(
        tmp_path / "ok.jsonl",
        [
            row(1),
            row(2, lang="de", label="b"),
            row(3, split="test", label="b"),
            row(4, split="dev"),
            row(5, lang="de", split="dev", label="b"),
            row(6, lang="de", split="test", label="b"),
        ],
    )
    ds = load_dataset_file(path)
    assert ds.warnings == (
        "language 'en' has test examples of label(s) b but no train examples of them: "
        "their target-language shots will be empty",
    )


def test_group_in_two_splits_is_leakage(tmp_path):
    path = write_jsonl(
        tmp_path / "leak.jsonl",
        [
            row(1, group="g1"),
            row(2, group="g2"),
            row(3, lang="de", group="g1", split="test"),
        ],
    )
    assert load_error(path) == (
        f"{path}:3: group 'g1' is in split 'test' here but in 'train' at {path}:1: all "
        "examples of a group (translations of one text) must share a split, or the "
        "evaluation sees its training data"
    )


def test_duplicate_ids(tmp_path):
    path = write_jsonl(tmp_path / "dup.jsonl", [row(1), row(2), row(3, id="r1", lang="de")])
    assert load_error(path) == (
        f"{path}:3: duplicate id 'r1' (first at line 1); ids must be unique across the "
        "dataset (translations of one text share a group, not an id)"
    )


def test_several_problems_are_listed_together(tmp_path):
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            row(1, text=""),
            row(2, lang="??"),
            "{oops",
            row(4),
        ],
    )
    # Syntax errors stop the load before field checks, so only line 3 is reported first.
    assert load_error(path).startswith(f"{path}:3: malformed JSON")
    path = write_jsonl(tmp_path / "bad2.jsonl", [row(1, text=""), row(2, lang="??"), row(3)])
    message = load_error(path)
    assert message.splitlines()[0] == f"2 problems in {path}:"
    assert f"{path}:1: field 'text' is empty" in message
    assert f"{path}:2: field 'lang' has '??'" in message


def test_many_problems_are_capped(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [row(i, label="") for i in range(30)])
    message = load_error(path)
    assert message.splitlines()[0] == f"30 problems in {path}:"
    assert message.endswith("... and 10 more")


# ---------------------------------------------------------------------------- checks for plugins


def test_check_examples_without_locations_names_the_example():
    examples = [
        Example(id="a", group="g", lang="en", label="x", text="t", split="train"),
        Example(id="b", group="g", lang="en", label="x", text="t", split="dev"),
    ]
    with pytest.raises(
        DataError,
        match="example 'b': group 'g' is in split 'dev' here but in 'train' at example 'a'",
    ):
        check_examples(examples)


def test_dataset_warnings_list_missing_splits_and_spelling_variants():
    ex = [
        Example(id="1", group="1", lang="pt_BR", label="x", text="t", split="train"),
        Example(id="2", group="2", lang="pt-BR", label="x", text="t", split="train"),
        Example(id="3", group="3", lang="pt-BR", label="x", text="t", split="test"),
    ]
    assert dataset_warnings(ex) == [
        "language 'pt-BR' has no dev examples",
        "language 'pt_BR' has no dev or test examples",
        "languages 'pt-BR', 'pt_BR' differ only in case or separator and are treated as "
        "different languages",
    ]


# ---------------------------------------------------------------------------- selection, cache


def test_languages_option_selects_and_rejects_unknown_languages():
    ds = load_dataset_file(PARALLEL, languages=["en", "de"])
    assert ds.languages == ("de", "en")
    assert ds.metadata["languages"] == ["en", "de"]
    assert ds.fingerprint != load_dataset_file(PARALLEL).fingerprint
    assert "no examples in language(s) 'fr' (languages: de, en, pt_BR)" in load_error(
        PARALLEL, languages=["fr"]
    )


def test_max_per_lang_keeps_the_same_groups_in_every_language():
    ds = load_dataset_file(PARALLEL, max_per_lang=6)
    groups = {lang: {e.group for e in ds.examples if e.lang == lang} for lang in ds.languages}
    assert all(len(g) == 6 for g in groups.values())
    assert groups["en"] == groups["de"] == groups["pt_BR"]
    again = select_examples(list(load_dataset_file(PARALLEL).examples), max_per_lang=6)
    assert sorted(e.id for e in again) == sorted(e.id for e in ds.examples)


def test_loads_are_cached_until_the_file_changes(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [row(1), row(2)])
    first = load_dataset_file(path)
    assert load_dataset_file(path) is first
    assert load_dataset_file(path, max_per_lang=1) is not first
    write_jsonl(path, [row(1), row(2), row(3)])
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    reloaded = load_dataset_file(path)
    assert reloaded is not first and len(reloaded.examples) == 3

"""Tests of scripts/build_ddtp_dataset.py (on a tiny fixture) and of the shipped snapshot."""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import json
import lzma
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "build_ddtp_dataset.py"
FIXTURE = ROOT / "tests" / "fixtures" / "debian"
SNAPSHOT = ROOT / "plugins" / "data" / "ddtp-sections.jsonl.gz"
LABELS = {"admin", "devel", "games", "graphics", "net", "science", "sound", "text"}
REQUIRED = (
    "en",
    "de",
    "fr",
    "it",
    "es",
    "pt_BR",
    "pl",
    "cs",
    "ru",
    "uk",
    "ja",
    "ko",
    "zh_CN",
    "da",
)


def _load_builder():
    spec = importlib.util.spec_from_file_location("build_ddtp_dataset", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bd = _load_builder()


def _read_jsonl_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _fixture_build(lists_dir: Path = FIXTURE, **kw):
    kw.setdefault("required", ("en",))
    kw.setdefault("min_test", 0)
    return bd.build(lists_dir, log=lambda *a: None, **kw)


@pytest.fixture(scope="module")
def fixture_examples() -> list[dict]:
    return _fixture_build().examples


def _assert_split_integrity(rows: list[dict]) -> None:
    splits, labels = defaultdict(set), defaultdict(set)
    for row in rows:
        splits[row["group"]].add(row["split"])
        labels[row["group"]].add(row["label"])
    crossing = {g: s for g, s in splits.items() if len(s) > 1}
    assert not crossing, f"groups in several splits: {list(crossing.items())[:5]}"
    assert all(len(s) == 1 for s in labels.values())


# --------------------------------------------------------------------------- fixture


def test_cli_twice_is_byte_identical(tmp_path):
    out, card = tmp_path / "data" / "d.jsonl.gz", tmp_path / "CARD.md"
    argv = [
        "--lists-dir",
        str(FIXTURE),
        "--out",
        str(out),
        "--card",
        str(card),
        "--min-test",
        "0",
        "--require",
        "en",
        "--quiet",
    ]
    assert bd.main(argv) == 0
    first = out.read_bytes(), card.read_bytes()
    assert bd.main(argv) == 0
    assert (out.read_bytes(), card.read_bytes()) == first
    assert first[0][:2] == b"\x1f\x8b" and first[0][4:8] == b"\0\0\0\0"  # gzip, mtime 0
    text = card.read_text(encoding="utf-8")
    assert "Sat, 01 Jun 2024 10:00:00 UTC" in text
    assert "| `en` | 7 | 0 | 3 | 10 |" in text


def test_rows_format_and_order(fixture_examples):
    rows = fixture_examples
    assert all(set(r) == {"id", "group", "lang", "label", "split", "text"} for r in rows)
    assert rows == sorted(rows, key=lambda r: (r["lang"], r["id"]))
    assert len({r["id"] for r in rows}) == len(rows)
    assert {r["lang"] for r in rows} == {"de", "en", "ja", "pt_BR"}  # pt%5fBR unquoted


def test_labels_stripped_and_filtered(fixture_examples):
    en = {r["id"]: r["label"] for r in fixture_examples if r["lang"] == "en"}
    assert en == {
        "en:0ad": "games",
        "en:frozen-bubble": "games",
        "en:gimp": "graphics",
        "en:curl": "net",
        "en:audacity": "sound",
        "en:snd-firmware-tool": "sound",
        "en:pandoc": "text",
        "en:gcc-12": "devel",
        "en:htop": "admin",
        "en:gnuplot-qt": "science",
    }
    ids = {r["id"] for r in fixture_examples}
    # out of the 8 sections, and a group whose packages disagree (admin vs net)
    assert not ids & {
        "en:vim",
        "de:vim",
        "en:python3-numpy",
        "en:netmon-cli",
        "de:netmon-cli",
        "en:netmon-gui",
    }
    assert bd.strip_area("non-free-firmware/sound") == "sound"
    assert bd.strip_area("contrib/games") == "games"


def test_text_assembly(fixture_examples):
    text = {r["id"]: r["text"] for r in fixture_examples}
    assert text["en:0ad"] == (
        "Real-time strategy game of ancient warfare\n\n"
        '0 A.D. (pronounced "zero ey-dee") is a free, open-source, cross-platform '
        "real-time strategy (RTS) game of ancient warfare.\n\n"
        "This package contains the game engine."
    )
    assert text["en:audacity"].endswith(
        "digital audio.\n\nFeatures:\n* Record from microphone, line input, or other sources"
        "\n* Dub over existing tracks\n* Unlimited undo"
    )
    assert "Windows. It is designed" in text["en:audacity"]  # whitespace collapsed
    assert text["ja:0ad"].split("\n\n")[1] == (
        "0 A.D. は自由でオープンソースの、クロスプラットフォームな、古代戦争の"
        "リアルタイム戦略ゲームです。"
    )
    # two German stanzas share the gnuplot md5: the smallest package name wins
    assert text["de:gnuplot-qt"].startswith("Befehlszeilengesteuertes")
    # untranslated copy of the English text is dropped
    assert "de:gcc-12" not in text and "en:gcc-12" in text


def test_splits_follow_group_hash(fixture_examples):
    _assert_split_integrity(fixture_examples)
    for row in fixture_examples:
        assert row["split"] == bd.split_of(row["group"])
    assert bd.split_of("x") == bd.split_of("x")
    counts = defaultdict(int)
    for i in range(2000):
        counts[bd.split_of(f"{i:032x}")] += 1
    assert 1250 < counts["train"] < 1550 and 120 < counts["dev"] < 280


def test_provenance_verified(fixture_examples):
    b = _fixture_build()
    prov = b.provenance
    assert prov["fields"]["Date"] == "Sat, 01 Jun 2024 10:00:00 UTC"
    assert prov["release_kind"] == "InRelease"
    assert [f["index"] for f in prov["files"]] == [
        "main/binary-amd64/Packages",
        "main/i18n/Translation-de",
        "main/i18n/Translation-en",
        "main/i18n/Translation-ja",
        "main/i18n/Translation-pt_BR",
    ]
    assert all(f["verified"] is True for f in prov["files"])


def test_compressed_inputs_give_same_dataset(tmp_path):
    plain = _fixture_build()
    writers = [(".gz", gzip.compress), (".xz", lzma.compress), (".bz2", bz2.compress)]
    for path in sorted(FIXTURE.iterdir()):
        if path.name.endswith("Release") or "_dists_" not in path.name:
            shutil.copy(path, tmp_path / path.name)
            continue
        ext, compress = writers[len(list(tmp_path.iterdir())) % len(writers)]
        (tmp_path / (path.name + ext)).write_bytes(compress(path.read_bytes()))
    other = _fixture_build(tmp_path)
    assert other.payload == plain.payload
    assert [f["sha256"] for f in other.provenance["files"]] == [
        f["sha256"] for f in plain.provenance["files"]
    ]


@pytest.mark.skipif(shutil.which("lz4") is None, reason="no lz4 command-line tool")
def test_lz4_inputs(tmp_path):
    for path in sorted(FIXTURE.iterdir()):
        if "_i18n_Translation-en" in path.name:
            subprocess.run(
                ["lz4", "-q", str(path), str(tmp_path / (path.name + ".lz4"))], check=True
            )
        else:
            shutil.copy(path, tmp_path / path.name)
    assert _fixture_build(tmp_path).payload == _fixture_build().payload


def test_cap_keeps_split_integrity():
    full = _fixture_build()
    capped = _fixture_build(max_bytes=len(full.payload) - 200, cap_step=1)
    assert capped.cap_n is not None and len(capped.payload) <= len(full.payload) - 200
    assert len(capped.examples) < len(full.examples)
    full_by_id = {r["id"]: r for r in full.examples}
    assert all(full_by_id[r["id"]] == r for r in capped.examples)
    _assert_split_integrity(capped.examples)
    # explicit caps: a subset, same splits, and the same groups kept in every language
    rows = bd.apply_caps(full.examples, {"train": 1, "dev": 0, "test": 1})
    assert {r["id"] for r in rows} < set(full_by_id)
    _assert_split_integrity(rows)
    kept = defaultdict(set)
    for r in rows:
        kept[(r["lang"], r["label"], r["split"])].add(r["group"])
    assert (
        kept[("en", "games", "train")]
        == kept[("de", "games", "train")]
        == kept[("ja", "games", "train")]
    )


# --------------------------------------------------------------------------- snapshot


@pytest.fixture(scope="module")
def snapshot_rows() -> list[dict]:
    if not SNAPSHOT.exists():
        pytest.fail(f"shipped snapshot missing: {SNAPSHOT}")
    return _read_jsonl_gz(SNAPSHOT)


def test_snapshot_size():
    assert SNAPSHOT.stat().st_size <= 5_000_000


def test_snapshot_groups_never_cross_splits(snapshot_rows):
    _assert_split_integrity(snapshot_rows)


def test_snapshot_languages_and_test_sizes(snapshot_rows):
    langs = {r["lang"] for r in snapshot_rows}
    assert len(langs) >= 14
    assert {"ja", "ko", "ru", "zh_CN"} <= langs
    test_counts = defaultdict(int)
    for r in snapshot_rows:
        if r["split"] == "test":
            test_counts[r["lang"]] += 1
    for lang in REQUIRED:
        assert test_counts[lang] >= 40, (lang, test_counts[lang])


def test_snapshot_labels_ids_keys(snapshot_rows):
    assert {r["label"] for r in snapshot_rows} == LABELS
    assert {r["split"] for r in snapshot_rows} == {"train", "dev", "test"}
    ids = [r["id"] for r in snapshot_rows]
    assert len(ids) == len(set(ids))
    assert all(
        set(r) == {"id", "group", "lang", "label", "split", "text"} and r["text"]
        for r in snapshot_rows
    )
    assert all(r["id"].startswith(r["lang"] + ":") for r in snapshot_rows)

"""Read and validate multilingual data files (JSONL, CSV, TSV; optionally gzip'd).

This lives in the core, not in a plugin, so every dataset plugin (bundled or third-party)
gets the same checks and the same ``file:line: field 'x' ...`` messages. User mistakes raise
:class:`~xleval.errors.DataError`; problems that do not stop a load become warnings.
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import io
import json
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xleval.api import (
    DEFAULT_SPLIT_RATIOS,
    SPLITS,
    Example,
    MultilingualDataset,
    check_split_ratios,
    split_for_group,
    unit_hash,
)
from xleval.errors import DataError, OptionsError

FORMATS: tuple[str, ...] = ("jsonl", "csv", "tsv")
#: Errors listed in one DataError; a broken file should not print a million lines.
MAX_REPORTED_ERRORS = 20

_SUFFIX_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
}
_SPLIT_HINTS = {
    "training": "train",
    "valid": "dev",
    "val": "dev",
    "validation": "dev",
    "development": "dev",
    "eval": "test",
    "testing": "test",
}
# language[-script][-region][-variant...]; '_' is accepted as well as '-' because POSIX
# locale names (pt_BR, zh_CN) are what many corpora, DDTP included, use.
_LANGUAGE_TAG = re.compile(
    r"[A-Za-z]{2,3}"
    r"(?:[-_][A-Za-z]{4})?"
    r"(?:[-_](?:[A-Za-z]{2}|[0-9]{3}))?"
    r"(?:[-_](?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*"
)
# Undecodable bytes survive decoding as lone surrogates (surrogateescape) so the row and
# field holding them can be named.
_BAD_BYTES = re.compile("[\udc80-\udcff]")
#: A UTF-16 surrogate that is not a decoding stand-in: JSON's "\ud800" escapes make these.
_SURROGATE = re.compile("[\ud800-\udfff]")
#: csv's default field limit (128 KiB) would refuse a long text that JSONL accepts.
csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))


@dataclass(frozen=True)
class FieldMap:
    """Which column (or JSON key) holds each example field; ``None`` means the file has none.

    ``id``, ``group`` and ``split`` are optional: rows without an id get one derived from
    their content, rows without a group form their own group, and a file without splits is
    split by group hash.
    """

    text: str = "text"
    label: str = "label"
    lang: str = "lang"
    id: str | None = "id"
    group: str | None = "group"
    split: str | None = "split"

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> FieldMap:
        """Build from plugin options named ``<field>_field`` (missing ones keep the default)."""
        defaults = cls()
        return cls(
            **{
                name: options.get(f"{name}_field", getattr(defaults, name))
                for name in ("text", "label", "lang", "id", "group", "split")
            }
        )

    def describe(self, name: str) -> str:
        """How messages name a field: the file's column, plus the field when they differ."""
        column = getattr(self, name)
        return f"'{column}'" if column == name else f"'{column}' ({name})"


@dataclass(frozen=True)
class Record:
    """One row as read from a file, before its fields are checked."""

    line: int
    values: dict[str, Any]


@dataclass(frozen=True)
class ReadResult:
    """Rows of one file; for tables also the header's columns and line."""

    path: str
    records: list[Record]
    bad_bytes: bool = False
    columns: tuple[str, ...] | None = None
    header_line: int = 1


class _Errors:
    """Collects row errors so one load reports many problems at once, then stops."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.messages: list[str] = []

    def add(self, message: str) -> None:
        self.messages.append(message)

    def raise_if_any(self) -> None:
        if not self.messages:
            return
        if len(self.messages) == 1:
            raise DataError(self.messages[0])
        shown = self.messages[:MAX_REPORTED_ERRORS]
        more = len(self.messages) - len(shown)
        text = f"{len(self.messages)} problems in {self.what}:\n" + "\n".join(
            f"  {m}" for m in shown
        )
        if more:
            text += f"\n  ... and {more} more"
        raise DataError(text)


def clip(value: Any, limit: int = 60) -> str:
    """``repr`` of a value, shortened so a long text does not flood the message."""
    if isinstance(value, str) and _BAD_BYTES.search(value):
        value = value.encode("utf-8", "surrogateescape")
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def is_language_tag(code: str) -> bool:
    """Whether ``code`` is a plausible BCP-47 tag (en, pt-BR, zh-Hans, sr-Latn, es-419).

    POSIX-style ``pt_BR`` and ``zh_CN`` are accepted too. The check is about shape, not a
    registry lookup: it catches 'English', 'en-', 'EN US' and '1', not unassigned codes.
    """
    return isinstance(code, str) and _LANGUAGE_TAG.fullmatch(code) is not None


def detect_format(path: str | Path) -> str:
    """``jsonl``, ``csv`` or ``tsv`` from the file name (a ``.gz`` suffix is looked through)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    fmt = _SUFFIX_FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise DataError(
            f"{path}: cannot tell the format from the file name; expected one of "
            f"{', '.join(sorted(_SUFFIX_FORMATS))} (optionally .gz), or name the format"
        )
    return fmt


def read_text(path: str | Path) -> tuple[str, bool]:
    """The file's text (gunzipped when it is gzip, BOM dropped) and whether it had bad bytes.

    Bytes that are not UTF-8 are kept as surrogates so the row checks can say which line
    and field hold them instead of failing on the whole file.
    """
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a data file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: not a valid gzip file: {exc}") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", "surrogateescape"), True


def read_records(
    path: str | Path,
    *,
    format: str | None = None,
    delimiter: str | None = None,
    quotechar: str | None = '"',
) -> ReadResult:
    """Parse a JSONL, CSV or TSV file into records, reporting every malformed row.

    ``delimiter`` defaults to ``,`` for csv and a tab for tsv; ``quotechar=None`` turns
    quoting off (for TSV files whose texts contain stray quotes).
    """
    fmt = format or detect_format(path)
    if fmt not in FORMATS:
        raise OptionsError(f"unknown data format {fmt!r} (expected {', '.join(FORMATS)})")
    text, bad_bytes = read_text(path)
    if fmt == "jsonl":
        return ReadResult(str(path), _parse_jsonl(str(path), text), bad_bytes)
    sep = delimiter if delimiter is not None else ("\t" if fmt == "tsv" else ",")
    return _parse_delimited(str(path), text, bad_bytes, sep, quotechar)


def _parse_jsonl(path: str, text: str) -> list[Record]:
    errors = _Errors(path)
    records: list[Record] = []
    # split on "\n" only: str.splitlines would also break at U+2028 etc., which JSON allows
    # unescaped inside strings.
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.add(
                f"{path}:{number}: malformed JSON ({exc.msg} at column {exc.colno}): {clip(line)}"
            )
            continue
        except (ValueError, RecursionError) as exc:  # a 4300-digit integer; deep nesting
            errors.add(f"{path}:{number}: cannot read this JSON ({exc}): {clip(line)}")
            continue
        if not isinstance(value, dict):
            errors.add(
                f"{path}:{number}: expected a JSON object, got {type(value).__name__}: "
                f"{clip(line)} (JSON Lines: one object per line)"
            )
            continue
        records.append(Record(number, value))
    errors.raise_if_any()
    return records


def _parse_delimited(
    path: str, text: str, bad_bytes: bool, delimiter: str, quotechar: str | None
) -> ReadResult:
    if len(delimiter) != 1:
        raise OptionsError(f"delimiter must be one character, got {delimiter!r}")
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=delimiter,
        quotechar=quotechar or None,
        quoting=csv.QUOTE_MINIMAL if quotechar else csv.QUOTE_NONE,
        strict=True,
    )
    errors = _Errors(path)
    records: list[Record] = []
    header: tuple[str, ...] | None = None
    header_line = last = 0
    try:
        for row in reader:
            # a quoted cell may span lines: the record starts after the previous one ended
            start, last = last + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header, header_line = tuple(cell.strip() for cell in row), start
                twice = sorted({c for c in header if c and header.count(c) > 1})
                if twice:
                    raise DataError(
                        f"{path}:{start}: column(s) {', '.join(map(repr, twice))} "
                        "appear more than once in the header"
                    )
                continue
            if len(row) != len(header):
                errors.add(
                    f"{path}:{start}: expected {len(header)} columns as in the header "
                    f"(line {header_line}), got {len(row)}: {clip(delimiter.join(row))}"
                )
                continue
            records.append(Record(start, dict(zip(header, row, strict=True))))
    except csv.Error as exc:  # the record that broke starts right after the last good one
        kind = "TSV" if delimiter == "\t" else "CSV"
        errors.add(f"{path}:{last + 1}: malformed {kind}: {exc}")
    errors.raise_if_any()
    if header is None:
        raise DataError(f"{path}: empty file (expected a header line naming the columns)")
    return ReadResult(path, records, bad_bytes, header, header_line)


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _content_key(*parts: str | None) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


class _RowChecker:
    """Checks one field of one row at a time, adding each problem to ``errors``."""

    def __init__(self, fields: FieldMap, errors: _Errors, bad_bytes: bool) -> None:
        self.fields = fields
        self.errors = errors
        self.bad_bytes = bad_bytes
        self.tag_ok: dict[str, bool] = {}

    def get(self, values: dict[str, Any], loc: str, name: str, required: bool) -> str | None:
        """The field's value (stripped, except text), or None when absent or invalid."""
        column = getattr(self.fields, name)
        value = values.get(column) if column is not None else None
        what = self.fields.describe(name)
        if not _present(value):
            if required and column in values:
                self.errors.add(f"{loc}: field {what} is empty: {clip(value)}")
            elif required:
                have = ", ".join(map(str, values)) or "nothing"
                self.errors.add(f"{loc}: field {what} is missing (the row has: {have})")
            return None
        textual = name in ("text", "lang", "split")
        if isinstance(value, bool) or not isinstance(value, str if textual else str | int):
            kind = "a string" if textual else "a string or an integer"
            self.errors.add(
                f"{loc}: field {what} must be {kind}, got {type(value).__name__}: {clip(value)}"
            )
            return None
        value = str(value)
        if self.bad_bytes:
            bad = _BAD_BYTES.search(value)
            if bad is not None:
                byte = ord(bad.group()) - 0xDC00
                self.errors.add(
                    f"{loc}: field {what} is not valid UTF-8 (byte {byte:#04x}): "
                    f"{clip(value)}; save the file as UTF-8"
                )
                return None
        lone = _SURROGATE.search(value)
        if lone is not None:
            self.errors.add(
                f"{loc}: field {what} holds a lone surrogate (\\u{ord(lone.group()):04x}), "
                f"which is not text: {clip(value)}"
            )
            return None
        return value if name == "text" else value.strip()

    def lang(self, values: dict[str, Any], loc: str) -> str | None:
        lang = self.get(values, loc, "lang", True)
        if lang is None:
            return None
        ok = self.tag_ok.get(lang)
        if ok is None:
            ok = self.tag_ok[lang] = is_language_tag(lang)
        if not ok:
            self.errors.add(
                f"{loc}: field {self.fields.describe('lang')} has {clip(lang)}, which is not "
                "a plausible language tag (BCP-47 like 'en', 'pt-BR', 'zh-Hans', 'sr-Latn'; "
                "'pt_BR' is accepted too)"
            )
            return None
        return lang

    def split(self, values: dict[str, Any], loc: str) -> str | None:
        split = self.get(values, loc, "split", False)
        if split is None or split in SPLITS:
            return split
        if split.lower() in SPLITS:
            return split.lower()
        hint = _SPLIT_HINTS.get(split.lower())
        self.errors.add(
            f"{loc}: field {self.fields.describe('split')} has unknown split {clip(split)} "
            f"(expected {', '.join(SPLITS)}" + (f"; did you mean '{hint}'?)" if hint else ")")
        )
        return None


def records_to_examples(
    read: ReadResult,
    *,
    fields: FieldMap | None = None,
    split_ratios: Mapping[str, float] | None = None,
) -> tuple[list[Example], list[str], str]:
    """Check every row's fields and build examples, their locations and the split's origin.

    Returns ``(examples, locations, split_origin)``: ``locations[i]`` is ``path:line`` of
    ``examples[i]``; ``split_origin`` is ``"file"`` or ``"group hash"``. A row without an id
    gets ``<lang>:<content hash>`` (repeats numbered) and, without a group, the group
    ``<lang>:<content hash>``, so ids, groups and hash splits never depend on row order and
    a duplicated row cannot sit in both train and test.
    """
    fields = fields or FieldMap()
    ratios = check_split_ratios(split_ratios or DEFAULT_SPLIT_RATIOS)
    path = read.path
    if read.columns is not None:  # a table without a required column: say so once
        for name in ("text", "label", "lang"):
            column = getattr(fields, name)
            if column not in read.columns:
                raise DataError(
                    f"{path}:{read.header_line}: no column {column!r} for the {name} field "
                    f"(columns: {', '.join(read.columns)}); set the option {name}_field to "
                    "the column's name"
                )
    errors = _Errors(path)
    check = _RowChecker(fields, errors, read.bad_bytes)
    rows: list[tuple[int, str, str, str, str | None, str | None, str | None]] = []
    with_split = without_split = 0
    fast = not read.bad_bytes
    f_text, f_label, f_lang, f_id, f_group, f_split = (
        fields.text,
        fields.label,
        fields.lang,
        fields.id,
        fields.group,
        fields.split,
    )
    for record in read.records:
        values = record.values
        if fast:  # the usual row: every field a clean string; checked without method calls
            text, label, lang = values.get(f_text), values.get(f_label), values.get(f_lang)
            ex_id = values.get(f_id) if f_id is not None else None
            group = values.get(f_group) if f_group is not None else None
            split = values.get(f_split) if f_split is not None else None
            if (
                type(text) is str
                and text.strip()
                and type(label) is str
                and label == label.strip()
                and label
                and type(lang) is str
                and check.tag_ok.get(lang)
                and (ex_id is None or (type(ex_id) is str and ex_id == ex_id.strip() and ex_id))
                and (group is None or (type(group) is str and group == group.strip() and group))
                and (split is None or split in SPLITS)
            ):
                if split is None:
                    without_split = without_split or record.line
                else:
                    with_split = with_split or record.line
                rows.append((record.line, text, label, lang, ex_id, group, split))
                continue
        loc = f"{path}:{record.line}"
        before = len(errors.messages)
        text = check.get(values, loc, "text", True)
        label = check.get(values, loc, "label", True)
        lang = check.lang(values, loc)
        ex_id = check.get(values, loc, "id", False)
        group = check.get(values, loc, "group", False)
        split = check.split(values, loc)
        if fields.split is not None and _present(values.get(fields.split)):
            with_split = with_split or record.line
        else:
            without_split = without_split or record.line
        if len(errors.messages) == before:
            assert text is not None and label is not None and lang is not None
            rows.append((record.line, text, label, lang, ex_id, group, split))
    if with_split and without_split:
        errors.add(
            f"{path}:{without_split}: field {fields.describe('split')} is missing, but "
            f"line {with_split} has one: give every row a split, or none (then rows "
            "are split by group)"
        )
    errors.raise_if_any()

    examples: list[Example] = []
    locations: list[str] = []
    first_line: dict[str, int] = {}
    repeats: dict[str, int] = {}
    for line, text, label, lang, ex_id, group, split in rows:
        if ex_id is None:
            key = _content_key(lang, label, text, group, split)
            n = repeats[key] = repeats.get(key, 0) + 1
            ex_id = f"{lang}:{key}" if n == 1 else f"{lang}:{key}-{n}"
            group = group or f"{lang}:{key}"
        group = group or ex_id
        if ex_id in first_line:
            errors.add(
                f"{path}:{line}: duplicate id {clip(ex_id)} (first at line "
                f"{first_line[ex_id]}); ids must be unique across the dataset "
                "(translations of one text share a group, not an id)"
            )
            continue
        first_line[ex_id] = line
        examples.append(
            Example(
                id=ex_id,
                group=group,
                lang=lang,
                label=label,
                text=text,
                split=split or split_for_group(group, ratios),
            )
        )
        locations.append(f"{path}:{line}")
    errors.raise_if_any()
    return examples, locations, "file" if with_split else "group hash"


def check_examples(
    examples: Sequence[Example], locations: Sequence[str] | None = None, *, what: str = "dataset"
) -> None:
    """Raise DataError when splits leak a group or evaluate a label that no train data has.

    ``locations[i]`` (e.g. ``file:line``) says where ``examples[i]`` came from; without it
    messages name the example id. Also checks ids are unique and splits and languages valid,
    so a plugin that builds examples itself gets the same guarantees as a file.
    """
    errors = _Errors(what)

    def where(i: int) -> str:
        return locations[i] if locations is not None else f"example {examples[i].id!r}"

    tag_ok = {lang: is_language_tag(lang) for lang in {e.lang for e in examples}}
    seen_ids: dict[str, int] = {}
    group_split: dict[str, tuple[str, int]] = {}
    leaked: set[str] = set()
    train_labels = {e.label for e in examples if e.split == "train"}
    unseen: dict[str, int] = {}
    for i, e in enumerate(examples):
        if e.split not in SPLITS:
            errors.add(f"{where(i)}: unknown split {e.split!r} (expected {', '.join(SPLITS)})")
        if not tag_ok[e.lang]:
            errors.add(f"{where(i)}: {e.lang!r} is not a plausible language tag")
        if e.id in seen_ids:
            errors.add(f"{where(i)}: duplicate id {clip(e.id)} (first at {where(seen_ids[e.id])})")
        else:
            seen_ids[e.id] = i
        first = group_split.setdefault(e.group, (e.split, i))
        if first[0] != e.split and e.group not in leaked:
            leaked.add(e.group)
            errors.add(
                f"{where(i)}: group {clip(e.group)} is in split '{e.split}' here but in "
                f"'{first[0]}' at {where(first[1])}: all examples of a group (translations "
                "of one text) must share a split, or the evaluation sees its training data"
            )
        if e.split != "train" and e.label not in train_labels and e.label not in unseen:
            unseen[e.label] = i
    for label, i in unseen.items():
        errors.add(
            f"{where(i)}: label {clip(label)} ({examples[i].split} split) appears in no train "
            f"example, so no model can learn it (train labels: "
            f"{', '.join(sorted(train_labels)) or 'none'})"
        )
    errors.raise_if_any()


def dataset_warnings(examples: Iterable[Example]) -> list[str]:
    """Problems that do not stop a load but weaken some experiments (listed, in a stable order)."""
    splits: dict[str, set[str]] = {}
    labels: dict[tuple[str, str], set[str]] = {}
    for e in examples:
        splits.setdefault(e.lang, set()).add(e.split)
        labels.setdefault((e.lang, e.split), set()).add(e.label)
    out: list[str] = []
    for lang in sorted(splits):
        missing = [s for s in SPLITS if s not in splits[lang]]
        if missing:
            out.append(f"language '{lang}' has no {' or '.join(missing)} examples")
        absent = labels.get((lang, "test"), set()) - labels.get((lang, "train"), set())
        if absent and "train" in splits[lang]:
            out.append(
                f"language '{lang}' has test examples of label(s) "
                f"{', '.join(sorted(absent))} but no train examples of them: "
                "their target-language shots will be empty"
            )
    spelled: dict[str, list[str]] = {}
    for lang in splits:
        spelled.setdefault(lang.replace("_", "-").lower(), []).append(lang)
    for variants in sorted(v for v in spelled.values() if len(v) > 1):
        out.append(
            f"languages {', '.join(map(repr, sorted(variants)))} differ only in "
            "case or separator and are treated as different languages"
        )
    return out


def select_examples(
    examples: Sequence[Example],
    *,
    languages: Sequence[str] | None = None,
    max_per_lang: int | None = None,
    what: str = "dataset",
) -> list[Example]:
    """Keep only ``languages`` and at most ``max_per_lang`` examples of each.

    The cap keeps the examples whose group hashes lowest, so the same groups (translations
    of the same texts) tend to survive in every language and splits keep their proportions.
    """
    if languages is not None:
        present = {e.lang for e in examples}
        unknown = [lang for lang in languages if lang not in present]
        if unknown:
            raise DataError(
                f"{what}: no examples in language(s) {', '.join(map(repr, unknown))} "
                f"(languages: {', '.join(sorted(present))})"
            )
        wanted = set(languages)
        examples = [e for e in examples if e.lang in wanted]
    if max_per_lang is None:
        return list(examples)
    if max_per_lang < 1:
        raise OptionsError(f"max_per_lang must be at least 1, got {max_per_lang}")
    by_lang: dict[str, list[Example]] = {}
    for e in examples:
        by_lang.setdefault(e.lang, []).append(e)
    kept: list[Example] = []
    for items in by_lang.values():
        items.sort(key=lambda e: (unit_hash("cap:" + e.group), e.id))
        kept.extend(items[:max_per_lang])
    return kept


def load_dataset_file(
    path: str | Path,
    *,
    name: str | None = None,
    format: str | None = None,
    fields: FieldMap | None = None,
    split_ratios: Mapping[str, float] | None = None,
    languages: Sequence[str] | None = None,
    max_per_lang: int | None = None,
    delimiter: str | None = None,
    quotechar: str | None = '"',
) -> MultilingualDataset:
    """Read, check and select a data file into a MultilingualDataset (cached per file state).

    Every row is checked before ``languages``/``max_per_lang`` select from them, so a bad
    file fails the same way whatever is selected. The result is cached in-process by path,
    modification time, size and arguments: loading it again is free, editing it reloads.
    """
    p = Path(path)
    try:
        stat = p.stat()
        state: tuple[Any, ...] = (str(p.resolve()), stat.st_mtime_ns, stat.st_size)
    except OSError:
        state = (str(p), None, None)  # read_text reports the problem
    ratios = tuple(sorted((split_ratios or DEFAULT_SPLIT_RATIOS).items()))
    return _load_cached(
        str(path),
        state,
        name,
        format,
        fields or FieldMap(),
        ratios,
        tuple(languages) if languages is not None else None,
        max_per_lang,
        delimiter,
        quotechar,
    )


@functools.lru_cache(maxsize=16)
def _load_cached(
    path: str,
    state: tuple[Any, ...],
    name: str | None,
    format: str | None,
    fields: FieldMap,
    ratios: tuple[tuple[str, float], ...],
    languages: tuple[str, ...] | None,
    max_per_lang: int | None,
    delimiter: str | None,
    quotechar: str | None,
) -> MultilingualDataset:
    fmt = format or detect_format(path)
    read = read_records(path, format=fmt, delimiter=delimiter, quotechar=quotechar)
    if not read.records:
        raise DataError(f"{path}: no rows (the file has no examples)")
    examples, locations, split_origin = records_to_examples(
        read, fields=fields, split_ratios=dict(ratios)
    )
    check_examples(examples, locations, what=path)
    selected = select_examples(examples, languages=languages, max_per_lang=max_per_lang, what=path)
    selected.sort(key=lambda e: (e.lang, e.id))
    metadata: dict[str, Any] = {
        "source": path,
        "format": fmt,
        "rows": len(examples),
        "split_origin": split_origin,
    }
    if split_origin == "group hash":
        metadata["split_ratios"] = {s: dict(ratios).get(s, 0.0) for s in SPLITS}
    if languages is not None:
        metadata["languages"] = list(languages)
    if max_per_lang is not None:
        metadata["max_per_lang"] = max_per_lang
    return MultilingualDataset(
        name=name or Path(path).name,
        examples=tuple(selected),
        warnings=tuple(dataset_warnings(selected)),
        metadata=metadata,
    )


def clear_cache() -> None:
    """Forget every dataset loaded by :func:`load_dataset_file` (tests, long-lived processes)."""
    _load_cached.cache_clear()

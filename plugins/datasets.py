"""Bundled datasets: the ddtp-sections snapshot, and loaders for the user's own files.

All of them read through :func:`xleval_plugins.datafiles.load_dataset_file`, so the shipped
snapshot passes exactly the checks a user's file does.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from xleval_plugins.datafiles import (
    DEFAULT_SPLIT_RATIOS,
    FieldMap,
    check_split_ratios,
    load_dataset_file,
)

from xleval.api import MultilingualDataset, Register, hookimpl
from xleval.errors import DataError

DDTP_NAME = "ddtp-sections"
DDTP_FILE = "ddtp-sections.jsonl.gz"

SELECTION_OPTIONS: dict[str, Any] = {
    "languages": {
        "type": "array",
        "items": {"type": "string", "minLength": 1},
        "minItems": 1,
        "uniqueItems": True,
        "description": "Load only these languages (default: all).",
    },
    "max_per_lang": {
        "type": "integer",
        "minimum": 1,
        "description": "Keep at most this many examples per language (the same groups in "
        "every language, chosen by group hash).",
    },
}


def split_ratios_option(description: str) -> dict[str, Any]:
    """The ``split_ratios`` option of a loader that may split by group hash."""
    return {
        "type": "object",
        "properties": {
            s: {"type": "number", "minimum": 0, "maximum": 1} for s in DEFAULT_SPLIT_RATIOS
        },
        "additionalProperties": False,
        "default": dict(DEFAULT_SPLIT_RATIOS),
        "description": description,
    }


def _field_option(name: str, optional: bool) -> dict[str, Any]:
    what = f"Column (CSV/TSV) or key (JSONL) holding the example's {name}"
    if optional:
        return {
            "type": ["string", "null"],
            "minLength": 1,
            "default": name,
            "description": f"{what}; null if the file has none.",
        }
    return {"type": "string", "minLength": 1, "default": name, "description": f"{what}."}


def file_schema(*, delimiter: str | None = None) -> dict[str, Any]:
    """Options of a loader for the user's files; ``delimiter`` adds the table options."""
    properties: dict[str, Any] = {
        "path": {"type": "string", "minLength": 1, "description": "The data file (may be .gz)."},
        "name": {
            "type": "string",
            "minLength": 1,
            "description": "Dataset name in reports (default: the file's name).",
        },
        **{f"{n}_field": _field_option(n, False) for n in ("text", "label", "lang")},
        **{f"{n}_field": _field_option(n, True) for n in ("id", "group", "split")},
        "split_ratios": split_ratios_option(
            "Used only when the file has no split column: fractions of groups per split (by "
            "sha256 of the group), summing to 1."
        ),
        **copy.deepcopy(SELECTION_OPTIONS),
    }
    if delimiter is not None:
        properties["delimiter"] = {
            "type": "string",
            "minLength": 1,
            "maxLength": 1,
            "default": delimiter,
            "description": "Field separator.",
        }
        properties["quotechar"] = {
            "type": ["string", "null"],
            "minLength": 1,
            "maxLength": 1,
            "default": '"',
            "description": "Quote character; null turns quoting off.",
        }
    return {
        "type": "object",
        "properties": properties,
        "required": ["path"],
        "additionalProperties": False,
    }


DDTP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": copy.deepcopy(SELECTION_OPTIONS),
    "additionalProperties": False,
}


@dataclass(frozen=True)
class FileDataset:
    """A dataset read from one file with validated plugin options."""

    path: Path
    format: str
    options: dict[str, Any] = field(default_factory=dict)
    name: str | None = None

    def load(self) -> MultilingualDataset:
        o = self.options
        return load_dataset_file(
            self.path,
            name=self.name or o.get("name"),
            format=self.format,
            fields=FieldMap.from_options(o),
            split_ratios=o.get("split_ratios"),
            languages=o.get("languages"),
            max_per_lang=o.get("max_per_lang"),
            delimiter=o.get("delimiter"),
            quotechar=o.get("quotechar", '"'),
        )


def ddtp_path() -> Path:
    """Where the packaged snapshot is (a real file for regular and editable installs)."""
    return Path(str(resources.files("xleval_plugins") / "data" / DDTP_FILE))


def build_ddtp(options: dict[str, Any]) -> FileDataset:
    path = ddtp_path()
    if not path.is_file():
        raise DataError(
            f"the {DDTP_NAME} snapshot is missing ({path}); reinstall xleval, or rebuild it "
            "with scripts/build_ddtp_dataset.py"
        )
    return FileDataset(path, "jsonl", options, name=DDTP_NAME)


def file_loader(fmt: str):
    """A factory for user files of one format."""

    def build(options: dict[str, Any]) -> FileDataset:
        check_split_ratios(options["split_ratios"])  # a bad option fails before any loading
        return FileDataset(Path(options["path"]), fmt, options)

    return build


@hookimpl
def xleval_register_datasets(register: Register) -> None:
    """Register ddtp-sections and the jsonl, csv and tsv file loaders."""
    register(
        DDTP_NAME,
        build_ddtp,
        schema=DDTP_SCHEMA,
        description="Debian package descriptions (DDTP translations) labelled by archive "
        "section: 8 labels, 14+ languages, bundled offline; see DATASET.md.",
    )
    register(
        "jsonl",
        file_loader("jsonl"),
        schema=file_schema(),
        description="Your JSON Lines file: text, label, lang; optional id, group, split.",
    )
    register(
        "csv",
        file_loader("csv"),
        schema=file_schema(delimiter=","),
        description="Your CSV file with a header: text, label, lang; optional id, group, split.",
    )
    register(
        "tsv",
        file_loader("tsv"),
        schema=file_schema(delimiter="\t"),
        description="Your tab-separated file: the csv loader with a tab delimiter.",
    )

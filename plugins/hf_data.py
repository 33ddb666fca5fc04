"""``hf``: a Hugging Face dataset as a :class:`~xleval.api.MultilingualDataset`.

Sources: a Hub id (with a pinned ``revision``; network only where the user has it, the
datasets cache otherwise), a directory saved with ``save_to_disk``, or local
parquet/arrow/json/csv files. Rows become the same records a JSONL file's lines become and
go through the same checks (:mod:`xleval_plugins.datafiles`): fields present and clean,
unique ids, groups never split across train and test, evaluated labels learnable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xleval_plugins.datafiles import (
    FieldMap,
    ReadResult,
    Record,
    check_examples,
    dataset_warnings,
    records_to_examples,
    select_examples,
)

from xleval.api import SPLITS, MultilingualDataset
from xleval.errors import DataError, OptionsError

#: A column name the loader fills itself (split from the dataset's split names, language
#: from the config's key): no dataset column is ever read under it.
_SPLIT, _LANG = "\x00split", "\x00lang"


def _quiet_datasets() -> Any:
    import datasets

    datasets.utils.logging.set_verbosity_error()
    datasets.utils.logging.disable_progress_bar()
    return datasets


@dataclass
class HFDataset:
    """The ``hf`` loader with validated options (see ``HF_DATASET_SCHEMA``)."""

    options: dict[str, Any]

    def __post_init__(self) -> None:
        o = self.options
        if ("hub" in o) == ("path" in o):
            raise OptionsError("hf: give exactly one of 'hub' (a Hub dataset id) and 'path'")
        if "hub" in o and o["revision"] is None:
            raise OptionsError(
                f"hf: the Hub dataset '{o['hub']}' needs a pinned revision (a commit hash from "
                "the dataset page's history), or its data could change under you"
            )
        if "hub" in o and o["format"] is not None:
            raise OptionsError("hf: 'format' reads local files: use it with 'path', not 'hub'")
        if "path" in o and o["revision"] is not None:
            raise OptionsError("hf: 'revision' applies to 'hub' datasets, not to a local path")
        if o["configs"] is None and o["lang_field"] is None:
            raise OptionsError("hf: say where each row's language is: lang_field or configs")

    @property
    def source(self) -> str:
        return self.options.get("hub") or self.options["path"]

    @property
    def name(self) -> str:
        return self.options.get("name") or self.source

    def load(self) -> MultilingualDataset:
        o = self.options
        parts = self._parts()  # (language or None, split name, datasets.Dataset)
        by_column = o["split_field"] is not None
        wanted = None if by_column else o["splits"]
        records: list[Record] = []
        ignored: set[str] = set()
        columns: set[str] = set()
        for lang, split_name, table in parts:
            if wanted is not None and split_name not in wanted:
                ignored.add(split_name)
                continue
            columns.update(table.column_names)
            records.extend(
                self._records(
                    table, lang, None if wanted is None else wanted[split_name], len(records)
                )
            )
        fields = FieldMap(
            text=o["text_field"],
            label=o["label_field"],
            lang=_LANG if o["configs"] is not None else o["lang_field"],
            id=o["id_field"],
            group=o["group_field"],
            split=_SPLIT if wanted is not None or by_column else None,
        )
        if not records:
            kept = ", ".join(sorted(wanted or {})) or "-"
            raise DataError(
                f"{self.name}: no rows in the splits loaded ({kept}; the dataset has "
                f"{', '.join(sorted({p[1] for p in parts}))}): map its split names with "
                "the option 'splits'"
            )
        if by_column and o["split_field"] not in columns:
            raise DataError(
                f"{self.name}: no column {o['split_field']!r} for the split field (columns: "
                f"{', '.join(sorted(columns))}); set the option split_field to the column's name"
            )
        read = ReadResult(self.name, records, columns=(*sorted(columns), _LANG, _SPLIT))
        examples, locations, split_origin = records_to_examples(
            read, fields=fields, split_ratios=o["split_ratios"]
        )
        check_examples(examples, locations, what=self.name)
        selected = select_examples(
            examples, languages=o.get("languages"), max_per_lang=o.get("max_per_lang"),
            what=self.name,
        )  # fmt: skip
        selected.sort(key=lambda e: (e.lang, e.id))
        metadata: dict[str, Any] = {
            "source": self.source,
            "format": o["format"] or "datasets",
            "revision": o["revision"],
            "rows": len(examples),
            "split_origin": split_origin,
        }
        if ignored:
            metadata["ignored_splits"] = sorted(ignored)
        return MultilingualDataset(
            name=self.name,
            examples=tuple(selected),
            warnings=tuple(dataset_warnings(selected)),
            metadata=metadata,
        )

    def _parts(self) -> list[tuple[str | None, str, Any]]:
        o = self.options
        datasets = _quiet_datasets()
        configs: dict[str, str | None] = o["configs"] or {"": None}
        parts = []
        for lang, config in configs.items():
            loaded = self._load_one(datasets, config)
            if isinstance(loaded, datasets.Dataset):  # one split: it is the train split
                loaded = datasets.DatasetDict({"train": loaded})
            for split_name, table in loaded.items():
                parts.append((lang if o["configs"] is not None else None, split_name, table))
        return parts

    def _load_one(self, datasets: Any, config: str | None) -> Any:
        o = self.options
        what = self.source + (f" (config {config!r})" if config else "")
        try:
            if "hub" in o:
                return datasets.load_dataset(
                    o["hub"], config, revision=o["revision"], cache_dir=o["cache_dir"]
                )
            path = Path(o["path"]).expanduser()
            if o["format"] is not None:
                files = _data_files(path, o["format"])
                return datasets.load_dataset(
                    o["format"], data_files=files, cache_dir=o["cache_dir"]
                )
            if not path.is_dir():
                raise DataError(
                    f"hf: {path} is not a directory (set 'format' to read data files, or "
                    "'hub' for a Hub dataset id)"
                )
            if _saved_to_disk(path):
                if config is not None:
                    raise OptionsError(f"hf: {path} was saved with save_to_disk: it has no configs")
                return datasets.load_from_disk(str(path))
            return datasets.load_dataset(str(path), config, cache_dir=o["cache_dir"])
        except (OptionsError, DataError):
            raise
        except Exception as exc:  # missing files, no network, unknown config: its reason
            raise DataError(f"hf: cannot load {what}: {type(exc).__name__}: {exc}") from None

    def _records(self, table: Any, lang: str | None, split: str | None, first: int) -> list[Record]:
        """The rows of one split (of one config) as records numbered from ``first`` + 1:
        messages name a row as ``<dataset>:<number>`` in loading order."""
        o = self.options
        names = {}
        feature = table.features.get(o["label_field"])
        if feature is not None and hasattr(feature, "int2str") and hasattr(feature, "names"):
            names = dict(enumerate(feature.names))  # ClassLabel: its names, not its ints
        fields = ("text_field", "label_field", "lang_field", "id_field", "group_field")
        wanted = [o[f] for f in fields if o[f] is not None and o[f] in table.column_names]
        columns = table.select_columns(list(dict.fromkeys(wanted))).to_dict()
        n = table.num_rows
        label_column = columns.get(o["label_field"])
        if label_column is not None:
            columns[o["label_field"]] = [_label(v, names) for v in label_column]
        for name in (o["id_field"], o["group_field"]):  # integer ids and groups as strings
            if name is not None and name in columns:
                columns[name] = [v if not isinstance(v, int) else str(v) for v in columns[name]]
        if lang is not None:
            columns[_LANG] = [lang] * n
        if split is not None:
            columns[_SPLIT] = [split] * n
        elif o["split_field"] in table.column_names:  # the split column, names mapped
            mapping = o["splits"] or {}
            column = table[o["split_field"]]
            columns[_SPLIT] = [mapping.get(v, v) if isinstance(v, str) else v for v in column]
        keys = list(columns)
        values = [columns[k] for k in keys]
        return [
            Record(line=first + i + 1, values=dict(zip(keys, row, strict=True)))
            for i, row in enumerate(zip(*values, strict=True))
        ]


def _label(value: Any, names: dict[int, str]) -> Any:
    """A row's label as a string: a ClassLabel's name (its -1, "no label", becomes a missing
    label, which the row checks refuse), another integer as written."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if names:
            return names.get(value)
        return str(value)
    return value


def _saved_to_disk(directory: Path) -> bool:
    return (directory / "dataset_dict.json").is_file() or (directory / "state.json").is_file()


def _data_files(local: Path, fmt: str) -> Any:
    """``local`` as datasets' data_files: a file, a glob, or a directory's files of ``fmt``
    (one split per file whose name is a split, e.g. train.parquet; else all in train)."""
    if not local.is_dir():
        return str(local)
    suffixes = {"parquet": (".parquet",), "arrow": (".arrow",), "json": (".json", ".jsonl"),
                "csv": (".csv",)}[fmt]  # fmt: skip
    files = sorted(p for p in local.iterdir() if p.suffix in suffixes)
    if not files:
        raise DataError(f"hf: {local} has no {'/'.join(suffixes)} files")
    by_split: dict[str, list[str]] = {}
    for p in files:
        split = p.stem.split("-")[0]
        by_split.setdefault(split, []).append(str(p))
    if all(s in (*SPLITS, "validation") for s in by_split):
        return by_split
    return {"train": [str(p) for p in files]}

"""The data model every dataset plugin loads into: examples, splits, a content fingerprint."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from xleval.api.errors import OptionsError

SPLITS: tuple[str, ...] = ("train", "dev", "test")


@dataclass(frozen=True)
class Example:
    """One labelled text; ``group`` ties translations of the same text together."""

    id: str
    group: str
    lang: str
    label: str
    text: str
    #: "train", "dev" or "test"; :func:`assign_splits` fills it from the group
    split: str = ""

    def to_json(self) -> dict[str, str]:
        return {
            "id": self.id,
            "group": self.group,
            "lang": self.lang,
            "label": self.label,
            "split": self.split,
            "text": self.text,
        }


@dataclass(frozen=True)
class MultilingualDataset:
    """Examples of several languages with train/dev/test splits assigned by group.

    ``labels`` fixes the class order (sorted label names) so class index ``i`` means
    the same thing for every language and model. ``warnings`` lists problems that
    did not stop the load (e.g. a language with no dev split).
    """

    name: str
    examples: tuple[Example, ...]
    warnings: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @cached_property
    def labels(self) -> tuple[str, ...]:
        return tuple(sorted({e.label for e in self.examples}))

    @cached_property
    def label_index(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    @cached_property
    def languages(self) -> tuple[str, ...]:
        return tuple(sorted({e.lang for e in self.examples}))

    @cached_property
    def _by_lang_split(self) -> dict[tuple[str, str], tuple[Example, ...]]:
        out: dict[tuple[str, str], list[Example]] = {}
        for e in self.examples:
            out.setdefault((e.lang, e.split), []).append(e)
        return {key: tuple(sorted(v, key=lambda e: e.id)) for key, v in out.items()}

    def select(self, lang: str, split: str) -> tuple[Example, ...]:
        """Examples of one language and split, in a stable order (by id)."""
        return self._by_lang_split.get((lang, split), ())

    def label_ids(self, examples: Iterable[Example]) -> list[int]:
        return [self.label_index[e.label] for e in examples]

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the content, whatever the row order or file format: same data, same hash."""
        return content_fingerprint(self.examples)

    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """lang -> split -> label -> number of examples."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        counter = Counter((e.lang, e.split, e.label) for e in self.examples)
        for (lang, split, label), n in sorted(counter.items()):
            out.setdefault(lang, {}).setdefault(split, {})[label] = n
        return out

    def split_counts(self) -> dict[str, dict[str, int]]:
        """lang -> split -> number of examples (every split listed, 0 when empty)."""
        counter = Counter((e.lang, e.split) for e in self.examples)
        return {lang: {s: counter[(lang, s)] for s in SPLITS} for lang in self.languages}

    def summary(self) -> dict[str, Any]:
        """What a report records about the dataset: name, fingerprint, counts, warnings."""
        return {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "n_examples": len(self.examples),
            "languages": list(self.languages),
            "labels": list(self.labels),
            "counts": self.counts(),
            "warnings": list(self.warnings),
        }


def content_fingerprint(examples: Sequence[Example] | Iterable[Example]) -> str:
    """sha256 of the examples' fields, independent of their order and source format.

    Rows are sorted by every field, so the hash is defined even if ids repeat. Each row is
    its field lengths, then the fields: unambiguous whatever the text holds, and several
    times faster than JSON-encoding every example.
    """
    parts: list[str] = []
    for row in sorted((e.lang, e.id, e.group, e.label, e.split, e.text) for e in examples):
        parts.append(",".join([str(len(f)) for f in row]) + ":")
        parts.extend(row)
    payload = "".join(parts).encode("utf-8", "surrogatepass")
    return "sha256:" + hashlib.sha256(payload).hexdigest()


#: train / dev / test fractions of the groups when a data file has no split column.
DEFAULT_SPLIT_RATIOS: dict[str, float] = {"train": 0.7, "dev": 0.1, "test": 0.2}


def unit_hash(text: str) -> float:
    """Map a string to [0, 1) with sha256, stable across runs (unlike Python's ``hash``)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2**64


def check_split_ratios(ratios: Mapping[str, float]) -> dict[str, float]:
    """Return ``ratios`` in split order, or raise if they are not fractions summing to 1."""
    unknown = sorted(set(ratios) - set(SPLITS))
    if unknown:
        raise OptionsError(
            f"split_ratios: unknown split(s) {', '.join(map(repr, unknown))} "
            f"(expected {', '.join(SPLITS)})"
        )
    out = {split: float(ratios.get(split, 0.0)) for split in SPLITS}
    bad = {s: r for s, r in out.items() if not (0.0 <= r <= 1.0) or math.isnan(r)}
    if bad:
        raise OptionsError(f"split_ratios: each ratio must be between 0 and 1, got {bad}")
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        raise OptionsError(f"split_ratios must sum to 1, got {total:g} from {out}")
    if out["train"] == 0.0:
        raise OptionsError(f"split_ratios: train must be above 0, got {out}")
    return out


def split_for_group(group: str, ratios: Mapping[str, float]) -> str:
    """The split of a group: sha256 of the group against cumulative ratios (train, dev, test).

    Hashing the group (not the row position) keeps every translation of a text in one split
    and keeps each group's split unchanged when rows are added, removed or reordered. With
    the default ratios this is the rule ``scripts/build_ddtp_dataset.py`` used.
    """
    u = unit_hash(group)
    bound = 0.0
    for split in SPLITS:
        bound += ratios.get(split, 0.0)
        if u < bound:
            return split
    return next(s for s in reversed(SPLITS) if ratios.get(s, 0.0) > 0)


def assign_splits(
    examples: Iterable[Example], ratios: Mapping[str, float] | None = None
) -> tuple[Example, ...]:
    """The examples with each one's split chosen by its group (:func:`split_for_group`):
    translations of one text land in one split, so no test text is seen in training."""
    checked = check_split_ratios(DEFAULT_SPLIT_RATIOS if ratios is None else ratios)
    splits: dict[str, str] = {}
    out = []
    for e in examples:
        if e.group not in splits:
            splits[e.group] = split_for_group(e.group, checked)
        out.append(dataclasses.replace(e, split=splits[e.group]))
    return tuple(out)


def spec_targets(spec: Mapping[str, Any]) -> list[str]:
    """The target languages of a report's ``spec``: its ``targets``, or in a spec with
    ``pairs`` (a transfer matrix) its languages, in the order its tables list them."""
    return list(spec["targets"]) if "targets" in spec else _paired(spec, 1)


def spec_sources(spec: Mapping[str, Any]) -> list[str]:
    """The source languages of a report's ``spec``, in the order its tables list them."""
    if "source" in spec:
        return [spec["source"]] if isinstance(spec["source"], str) else list(spec["source"])
    return _paired(spec, 0)


def _paired(spec: Mapping[str, Any], side: int) -> list[str]:
    """The sources (side 0) or targets (side 1) of a spec with pairs: its ``languages`` for
    pairs = "all", else each pair's in order of first appearance."""
    if spec.get("pairs") == "all":
        return list(spec["languages"])
    return list(dict.fromkeys(pair[side] for pair in spec.get("pairs", ())))


def report_methods(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The methods a report's tables list, in the spec's order: each method entry of its
    spec; in a spec with ``pairs``, each row an entry ran as (``label@source`` for each
    source with sources = "each"), with the entry's fields."""
    spec = report["spec"]
    if "pairs" not in spec:
        return list(spec["methods"])
    ran = {cell["method"] for cell in report.get("cells", ())}
    rows: list[dict[str, Any]] = []
    for entry in spec["methods"]:
        label = entry["label"]
        own = [r for r in (label, *(f"{label}@{s}" for s in spec_sources(spec))) if r in ran]
        rows.extend({**entry, "label": r, "group": label} for r in own or [label])
    return rows

"""The data rules every dataset obeys, checked in one place after any loader's ``load()``.

Bundled loaders check their files row by row; a third-party loader may check nothing. What
the evaluation relies on is checked here for all of them: documented split names, no group
(translations of one text) in two splits in any language (else the evaluation sees its own
training data), one example per id and language. What weakens an experiment without
invalidating it becomes a warning, shown by ``datasets show`` and ``run`` and kept in
report.json: labels that differ only in case or spacing (two classes where one was meant),
the same text in train and test of one language, a label a language lacks entirely.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from typing import Any

from xleval.api.data import SPLITS, Example, MultilingualDataset
from xleval.errors import DataError

#: How many offenders an error or warning names before "and N more".
SHOWN = 3


def _clip(value: Any, limit: int = 50) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _more(items: list[str], total: int) -> str:
    return ", ".join(items) + (f" and {total - len(items)} more" if total > len(items) else "")


def check_dataset(dataset: Any, where: str) -> MultilingualDataset:
    """``dataset`` with the rule warnings added; DataError (naming ``where``) if it breaks
    a rule the evaluation relies on."""
    if not isinstance(dataset, MultilingualDataset):
        raise DataError(
            f"{where}: load() returned {type(dataset).__name__}, not a "
            "xleval.api.data.MultilingualDataset"
        )
    examples = dataset.examples
    if not examples:
        raise DataError(f"{where}: the dataset has no examples")
    problems: list[str] = []
    fields = ("id", "group", "lang", "label", "text", "split")
    for i, e in enumerate(examples):
        if not isinstance(e, Example):
            raise DataError(f"{where}: example {i} is a {type(e).__name__}, not an Example")
        bad = [f for f in fields if not isinstance(getattr(e, f), str)]
        if bad:
            raise DataError(
                f"{where}: example {_clip(e.id)} ({e.lang!r}): field(s) {', '.join(bad)} "
                "must be strings"
            )

    splits = Counter(e.split for e in examples)
    unknown = sorted(s for s in splits if s not in SPLITS)
    if unknown:
        problems.append(
            "split name(s) "
            + ", ".join(f"{s!r} ({splits[s]} examples)" for s in unknown)
            + f" are not xleval splits; use {', '.join(SPLITS)} (e.g. 'validation' is 'dev')"
        )

    ids = Counter((e.lang, e.id) for e in examples)
    repeated = sorted(key for key, n in ids.items() if n > 1)
    if repeated:
        shown = [f"{i!r} in '{lang}' ({ids[(lang, i)]}x)" for lang, i in repeated[:SHOWN]]
        problems.append(f"example ids repeat within a language: {_more(shown, len(repeated))}")

    places: dict[str, dict[str, Example]] = {}
    for e in examples:
        places.setdefault(e.group, {}).setdefault(e.split, e)
    leaked = [group for group, by_split in places.items() if len(by_split) > 1]
    if leaked:
        shown = []
        for group in sorted(leaked)[:SHOWN]:
            (s1, a), (s2, b) = sorted(places[group].items())[:2]
            shown.append(
                f"group {_clip(group)} is in '{s1}' ({a.lang} {_clip(a.id)}) and in "
                f"'{s2}' ({b.lang} {_clip(b.id)})"
            )
        problems.append(
            "groups (translations of one text) must lie in one split in every language, or "
            f"the evaluation sees its training data: {_more(shown, len(leaked))}"
        )
    if problems:
        raise DataError(f"{where}: " + "; ".join(problems))

    warnings = [*dataset.warnings]
    warnings += label_variant_warnings(examples)
    warnings += train_test_text_warnings(examples)
    warnings += missing_label_warnings(examples)
    return dataclasses.replace(dataset, warnings=tuple(dict.fromkeys(warnings)))


def warnings_for(warnings: tuple[str, ...] | list[str], languages: set[str]) -> list[str]:
    """The warnings that concern a run over ``languages``: those about one language
    ("language 'xx' ...") only when it is one of them, all others always."""
    out = []
    for warning in warnings:
        about = re.match(r"language '([^']+)'", warning)
        if about is None or about.group(1) in languages:
            out.append(warning)
    return out


def label_variant_warnings(examples: tuple[Example, ...]) -> list[str]:
    spelled: dict[str, set[str]] = {}
    for label in {e.label for e in examples}:
        spelled.setdefault(label.strip().casefold(), set()).add(label)
    out = []
    for variants in sorted(sorted(v) for v in spelled.values() if len(v) > 1):
        langs: dict[str, set[str]] = {v: set() for v in variants}
        for e in examples:
            if e.label in langs:
                langs[e.label].add(e.lang)
        where = "; ".join(f"{v!r} in {', '.join(sorted(langs[v]))}" for v in variants)
        out.append(
            f"labels {', '.join(map(repr, variants))} differ only in case or surrounding "
            f"spaces and are different classes ({where})"
        )
    return out


def train_test_text_warnings(examples: tuple[Example, ...]) -> list[str]:
    train: dict[tuple[str, str], set[str]] = {}
    for e in examples:
        if e.split == "train":
            train.setdefault((e.lang, e.text.strip()), set()).add(e.label)
    counts: dict[str, list[int]] = {}
    for e in examples:
        if e.split != "test":
            continue
        labels = train.get((e.lang, e.text.strip()))
        if labels is None:
            continue
        both = counts.setdefault(e.lang, [0, 0])
        both[0] += 1
        both[1] += any(label != e.label for label in labels)
    return [
        f"language '{lang}': {n} test text(s) also appear in its train split "
        f"(under other groups), {differ} of them with a different label: a model can score "
        "them by memory"
        for lang, (n, differ) in sorted(counts.items())
    ]


def missing_label_warnings(examples: tuple[Example, ...]) -> list[str]:
    labels = {e.label for e in examples}
    by_lang: dict[str, set[str]] = {}
    for e in examples:
        by_lang.setdefault(e.lang, set()).add(e.label)
    return [
        f"language '{lang}' has no example of label(s) {', '.join(map(repr, sorted(missing)))}: "
        "as a target, those classes are never tested or trained there"
        for lang, present in sorted(by_lang.items())
        if (missing := labels - present)
    ]


def load_dataset(
    registry: Any, name: str, options: dict[str, Any] | None = None
) -> MultilingualDataset:
    """Build dataset ``name``, load it and check it: the one way every command loads data.

    An exception from the plugin's ``load()`` that is not an xleval error becomes a
    PluginCodeError naming the dataset and its plugin (the traceback stays under --debug).
    """
    from xleval.plugin.registry import plugin_code

    component = registry.get("datasets", name)
    loader = component.build(options)
    with plugin_code(component, "load()"):
        dataset = loader.load()
    return check_dataset(dataset, f"{component.label} of plugin {component.provider}")

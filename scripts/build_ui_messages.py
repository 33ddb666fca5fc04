#!/usr/bin/env python3
"""Build a dataset of a different kind from ddtp-sections: programs' UI messages.

Each row is one message of a program (its gettext catalogue) in one language, labelled by
the program: usage lines, errors and menu strings, full of format strings (``%s``,
``%lu``), options (``--help``), quotes and punctuation — evidence a word tokenizer drops.
The English text is the message id, the others its translations, so the languages are
parallel (a message and its translations share a group, hence a split).

The catalogues are Debian's: the ``.mo`` files its packages install under
``/usr/share/locale`` (make, libc-l10n, wget, bash, passwd, libgtk-3-common,
libglib2.0-data, system-config-printer-common; ``apt-get install`` them where missing).
Nothing is downloaded. Messages that two programs share are dropped (their label would be
ambiguous), as are plural forms and messages over 300 characters; each program keeps at
most ``--per-program`` messages present in every language, chosen by a hash of the
message (not by file order).

    python scripts/build_ui_messages.py --out benchmarks/data/ui-messages.jsonl

The output is a JSONL file for the ``jsonl`` dataset (fields id, group, lang, label, text);
benchmarks/README.md uses it next to ddtp-sections.
"""

from __future__ import annotations

import argparse
import gettext
import hashlib
import json
import sys
from pathlib import Path

PROGRAMS = ("make", "libc", "wget", "bash", "shadow", "gtk30", "glib20", "system-config-printer")
LANGUAGES = ("de", "fr", "ja", "ru", "es", "zh_CN")


def catalogue(locale: Path, lang: str, program: str) -> dict[str, str]:
    path = locale / lang / "LC_MESSAGES" / f"{program}.mo"
    with path.open("rb") as handle:
        raw = gettext.GNUTranslations(handle)._catalog  # type: ignore[attr-defined]
    return {
        k: v
        for k, v in raw.items()
        if isinstance(k, str) and k and isinstance(v, str) and v.strip() and len(k) <= 300
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--locale", type=Path, default=Path("/usr/share/locale"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-program", type=int, default=400)
    args = parser.parse_args(argv)
    messages: dict[str, dict[str, dict[str, str]]] = {}
    for program in PROGRAMS:
        try:
            messages[program] = {lang: catalogue(args.locale, lang, program) for lang in LANGUAGES}
        except FileNotFoundError as exc:
            print(
                f"missing catalogue: {exc.filename} (apt-get install its package)", file=sys.stderr
            )
            return 1
    owners: dict[str, set[str]] = {}
    for program, by_lang in messages.items():
        for msgid in set.intersection(*(set(c) for c in by_lang.values())):
            owners.setdefault(msgid.strip().lower(), set()).add(program)
    rows = []
    for program, by_lang in messages.items():
        common = [
            m
            for m in set.intersection(*(set(c) for c in by_lang.values()))
            if len(owners[m.strip().lower()]) == 1
        ]
        common.sort(key=lambda m: hashlib.sha256(f"{program}\0{m}".encode()).digest())
        for msgid in common[: args.per_program]:
            group = hashlib.sha256(f"{program}\0{msgid}".encode()).hexdigest()[:16]
            texts = {"en": msgid, **{lang: by_lang[lang][msgid] for lang in LANGUAGES}}
            for lang, text in texts.items():
                rows.append(
                    {
                        "id": f"{lang}-{group}",
                        "group": group,
                        "lang": lang,
                        "label": program,
                        "text": text.strip(),
                    }
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    counts = {p: sum(r["label"] == p and r["lang"] == "en" for r in rows) for p in PROGRAMS}
    print(f"{len(rows)} rows, {len(LANGUAGES) + 1} languages; messages per program: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What is known about a language code: its name, script and family.

From maintained packages, not a table of ours: ``langcodes`` (BCP 47 tags, CLDR's likely
scripts and names) and ``language-data`` (which ships, besides CLDR's data, Wiktionary's
table of languages with the family each belongs to: West Germanic, East Slavic, Japonic).
A dataset's codes may be anything (``pt_BR``, ``zh-Hant``, a private code): a code the
packages do not know is kept and reported as unknown, never an error.
"""

from __future__ import annotations

import csv
import functools
from typing import Any

#: Wiktionary's language table inside language-data: code, name, family, scripts, ...
FAMILY_TABLE = ("language_data", "data/wiktionary/codes-en.csv")


@functools.cache
def _families() -> tuple[dict[str, str], dict[str, str]]:
    """(language subtag -> family, English name -> family) from language-data's copy of
    Wiktionary's table; empty if the package or its table is missing (families are then
    unknown). The names, with the table's other names, find a language the table files
    under another code (Serbian, ``sr``, under Serbo-Croatian)."""
    from importlib import resources

    try:
        text = resources.files(FAMILY_TABLE[0]).joinpath(FAMILY_TABLE[1]).read_text("utf-8")
    except (ModuleNotFoundError, FileNotFoundError, OSError):
        return {}, {}
    by_code: dict[str, str] = {}
    by_name: dict[str, str] = {}
    for row in csv.reader(text.splitlines(), delimiter="\t"):
        if len(row) < 3 or not row[0] or not row[2] or row[2] == "constructed":
            continue
        by_code[row[0]] = row[2]
        for name in [row[1], *(row[4].split(", ") if len(row) > 4 and row[4] else [])]:
            by_name.setdefault(name, row[2])
    return by_code, by_name


def _family(language: str, name: str) -> str | None:
    by_code, by_name = _families()
    return by_code.get(language) or by_name.get(name)


def _unknown(code: str) -> dict[str, Any]:
    return {"code": code, "name": None, "script": None, "script_name": None, "family": None}


@functools.cache
def language_info(code: str) -> dict[str, Any]:
    """``{"code", "name", "script", "script_name", "family"}`` of a language code (an
    underscore counts as a hyphen: ``pt_BR``); None where it is unknown. The script is the
    tag's own (``sr-Latn``) or the one the language is most likely written in (CLDR's
    likely subtags: ``ja`` -> ``Jpan``, ``sr`` -> ``Cyrl``); only for a known language."""
    try:
        import langcodes
    except ImportError:  # pragma: no cover - a dependency; kept as unknown all the same
        return _unknown(code)
    try:
        tag = langcodes.Language.get(code.replace("_", "-"))
    except (ValueError, LookupError):  # langcodes' LanguageTagError is a ValueError
        return _unknown(code)
    language = tag.language
    known = bool(language) and tag.is_valid() and language not in ("und", "mul", "zxx")
    name = tag.display_name() if known else None
    if name is not None and name.startswith("Unknown language"):
        known, name = False, None
    script = tag.script or (tag.maximize().script if known else None)
    script_name = None
    if script:
        described = langcodes.Language.get(f"und-{script}").script_name()
        script_name = None if described.startswith("Unknown") else described
    return {
        "code": code,
        "name": name,
        "script": script,
        "script_name": script_name,
        "family": _family(language, tag.language_name()) if known and language else None,
    }


def languages_info(codes: list[str] | tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """:func:`language_info` of each code, in order."""
    return {code: dict(language_info(code)) for code in codes}

#!/usr/bin/env python3
"""Build xleval's embedded dataset "ddtp-sections" from Debian's translated descriptions.

Inputs are the apt index files that ``apt-get update`` stores in ``/var/lib/apt/lists``:
the ``Packages`` index of one suite/component/architecture (for each package's
``Section`` and ``Description-md5``), the ``Translation-<lang>`` files of the Debian
Description Translation Project (DDTP; ``Translation-en`` carries the English long
descriptions) and the suite's ``InRelease`` (or ``Release``) file for provenance.

Every rule (labels, text cleaning, splits, caps, language selection) is documented in the
card this script writes (``DATASET.md``); the card and the gzip'd JSONL snapshot are
byte-identical when the script is rerun on the same inputs.

Fetching the inputs (as root; it only adds the Translation files to apt's lists)::

    python scripts/build_ddtp_dataset.py --apt-update --out ... --card ...

which first runs ``apt-get update -o Acquire::Languages=<all DDTP languages>``.

Standard library only. ``.lz4`` index files (apt's default on-disk compression on some
images) are read with python-lz4 if installed, else with the ``lz4`` command-line tool.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

DATASET_NAME = "ddtp-sections"
LABELS = ("admin", "devel", "games", "graphics", "net", "science", "sound", "text")
AREA_PREFIXES = ("contrib/", "non-free/", "non-free-firmware/")
REQUIRED_LANGS = (
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
# Every language DDTP publishes for bookworm main (the --apt-update default).
DDTP_LANGS = (
    "ca",
    "cs",
    "da",
    "de",
    "de_DE",
    "el",
    "en",
    "eo",
    "es",
    "eu",
    "fi",
    "fr",
    "gl",
    "hr",
    "hu",
    "id",
    "it",
    "ja",
    "km",
    "ko",
    "ml",
    "nb",
    "nl",
    "pl",
    "pt",
    "pt_AO",
    "pt_BR",
    "ro",
    "ru",
    "sk",
    "sr",
    "sv",
    "tr",
    "uk",
    "vi",
    "zh",
    "zh_CN",
    "zh_TW",
)
SPLIT_BOUNDS = (("train", 0.7), ("dev", 0.8), ("test", 1.0))
SPLITS = tuple(name for name, _ in SPLIT_BOUNDS)
MIN_TEST = 40
MAX_BYTES = 5_000_000
# When the uncapped snapshot is larger than MAX_BYTES, each (lang, label) keeps at most N
# examples, split like the split rule: N*7//10 train, N//10 dev, N*2//10 test (see caps_for).
CAP_STEP = 10
COMPRESSORS = {
    ".gz": "gzip",
    ".xz": "xz",
    ".lzma": "xz",
    ".bz2": "bzip2",
    ".lz4": "lz4",
    ".zst": "zstd",
}
BULLET = re.compile(r"^([*+\-\u2022]|\d{1,2}[.)])\s")
# Han, kana, CJK punctuation and full-width forms: text that is written without spaces.
CJK = re.compile(
    r"[\u2e80-\u2fdf\u3000-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    r"\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0003ffff]"
)


# --------------------------------------------------------------------------- reading files


def read_bytes(path: Path) -> bytes:
    """Return the decompressed content of an apt index file (plain/.gz/.xz/.bz2/.lz4/.zst)."""
    suffix = path.suffix
    raw = path.read_bytes()
    if suffix not in COMPRESSORS:
        return raw
    if suffix == ".gz":
        return gzip.decompress(raw)
    if suffix in (".xz", ".lzma"):
        return lzma.decompress(raw)
    if suffix == ".bz2":
        return bz2.decompress(raw)
    if suffix == ".lz4":
        try:
            import lz4.frame  # type: ignore[import-not-found]
        except ImportError:
            pass
        else:
            return lz4.frame.decompress(raw)
    tool = COMPRESSORS[suffix]
    if shutil.which(tool) is None:
        raise SystemExit(f"cannot read {path}: no decompressor for {suffix} (install {tool})")
    return subprocess.run([tool, "-dc"], input=raw, stdout=subprocess.PIPE, check=True).stdout


def iter_stanzas(text: str, wanted):
    """Yield dicts of the wanted fields of each deb822 stanza.

    ``wanted(name)`` says whether a field is kept. A kept field's value is its first line
    (stripped) followed by its continuation lines, verbatim, each after a ``\\n``.
    """
    stanza: dict[str, str] = {}
    current: str | None = None
    for line in text.split("\n"):
        if not line.strip():
            if stanza:
                yield stanza
            stanza, current = {}, None
            continue
        if line[0] in " \t":
            if current is not None:
                stanza[current] += "\n" + line
            continue
        name, sep, value = line.partition(":")
        if not sep:
            current = None
            continue
        if wanted(name):
            current = name
            stanza[name] = value.strip()
        else:
            current = None
    if stanza:
        yield stanza


def clean_description(raw: str) -> str:
    """Turn a Debian description (short line + long lines) into plain text.

    * the short description becomes the first paragraph;
    * each long-description line loses its leading space and has its whitespace collapsed;
    * ``" ."`` lines separate paragraphs (paragraphs are joined with a blank line);
    * inside a paragraph, lines are joined with a single space, except that a verbatim
      line (two or more leading spaces in the file) or a bullet (``*``, ``+``, ``-``, ``•``,
      ``1.``/``1)``) starts a new line, and two lines are joined without a space when
      the last character of one and the first of the next are both Chinese/Japanese
      (Han, kana, CJK punctuation, full-width forms).
    """
    lines = raw.split("\n")
    paragraphs: list[str] = []
    short = " ".join(lines[0].split())
    if short:
        paragraphs.append(short)
    out_lines: list[str] = []

    def flush() -> None:
        if out_lines:
            paragraphs.append("\n".join(out_lines))
            out_lines.clear()

    for line in lines[1:]:
        body = line[1:] if line[:1] in (" ", "\t") else line
        if body.strip() == "." and body.startswith("."):
            flush()
            continue
        text = " ".join(body.split())
        if not text:
            continue
        if out_lines and not body[:1].isspace() and not BULLET.match(text):
            prev = out_lines[-1]
            glue = "" if CJK.match(prev[-1]) and CJK.match(text[0]) else " "
            out_lines[-1] = prev + glue + text
        else:
            out_lines.append(text)
    flush()
    return "\n\n".join(paragraphs)


def strip_area(section: str) -> str:
    for prefix in AREA_PREFIXES:
        if section.startswith(prefix):
            return section[len(prefix) :]
    return section


def unit_hash(text: str) -> float:
    """Map a string to [0, 1): the first 8 bytes of its SHA-256, big-endian, over 2**64."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2**64


def split_of(group: str) -> str:
    u = unit_hash(group)
    for name, bound in SPLIT_BOUNDS:
        if u < bound:
            return name
    raise AssertionError(u)  # pragma: no cover


def caps_for(n: int | None) -> dict[str, int | None]:
    """Per-(lang, label, split) caps for a per-(lang, label) budget n (None: uncapped)."""
    if n is None:
        return {split: None for split in SPLITS}
    return {"train": n * 7 // 10, "dev": n // 10, "test": n * 2 // 10}


def cap_rank(group: str) -> float:
    return unit_hash("cap:" + group)


# --------------------------------------------------------------------------- locating inputs


@dataclass
class InputFile:
    role: str  # "Packages", "Translation-<lang>" or "InRelease"/"Release"
    path: Path
    index_name: str  # its name in the Release file, e.g. main/i18n/Translation-de
    content: bytes = field(repr=False, default=b"")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


def find_inputs(lists_dir: Path, suite: str, component: str, arch: str):
    """Return (release InputFile, Packages InputFile, {lang: Translation InputFile})."""
    names = sorted(p.name for p in lists_dir.iterdir() if p.is_file())
    ext = r"(?:\.(?:gz|xz|lzma|bz2|lz4|zst))?"
    pre = rf"(?P<site>.+)_dists_{re.escape(suite)}_"
    rx_rel = re.compile(pre + r"(?P<kind>InRelease|Release)$")
    rx_pkg = re.compile(pre + rf"{re.escape(component)}_binary-{re.escape(arch)}_Packages{ext}$")
    rx_tr = re.compile(pre + rf"{re.escape(component)}_i18n_Translation-(?P<lang>[^._]+){ext}$")
    releases = [n for n in names if rx_rel.match(n)]
    packages = [n for n in names if rx_pkg.match(n)]
    sites = {rx_pkg.match(n)["site"] for n in packages}
    if len(packages) != 1:
        raise SystemExit(
            f"expected one {suite}/{component}/binary-{arch} Packages file in "
            f"{lists_dir}, found {packages or 'none'}"
        )
    (site,) = sites
    releases = [n for n in releases if rx_rel.match(n)["site"] == site]
    if not releases:
        raise SystemExit(f"no InRelease/Release for {site} {suite} in {lists_dir}")
    rel_name = min(releases, key=lambda n: (rx_rel.match(n)["kind"] != "InRelease", n))
    release = InputFile(rx_rel.match(rel_name)["kind"], lists_dir / rel_name, "")
    pkg = InputFile("Packages", lists_dir / packages[0], f"{component}/binary-{arch}/Packages")
    translations: dict[str, InputFile] = {}
    for n in names:
        m = rx_tr.match(n)
        if not m or m["site"] != site:
            continue
        lang = unquote(m["lang"])
        if lang in translations:
            raise SystemExit(f"two Translation-{lang} files in {lists_dir}: {n}")
        translations[lang] = InputFile(
            f"Translation-{lang}", lists_dir / n, f"{component}/i18n/Translation-{lang}"
        )
    return release, pkg, translations


def parse_release(content: bytes) -> tuple[dict[str, str], dict[str, tuple[str, int]]]:
    """Fields of a Release/InRelease file and its SHA256 table {name: (sha256, size)}."""
    text = content.decode("utf-8")
    if text.startswith("-----BEGIN PGP SIGNED MESSAGE-----"):
        rest = text.partition("\n\n")[2]
        text = rest.split("\n-----BEGIN PGP SIGNATURE-----", 1)[0]
    fields: dict[str, str] = {}
    sums: dict[str, tuple[str, int]] = {}
    for stanza in iter_stanzas(text, lambda name: True):
        for key, value in stanza.items():
            if key == "SHA256":
                for line in value.split("\n")[1:]:
                    parts = line.split()
                    if len(parts) == 3:
                        sums[parts[2]] = (parts[0], int(parts[1]))
            elif "\n" not in value:
                fields[key] = value
        break
    return fields, sums


# --------------------------------------------------------------------------- building


@dataclass
class Build:
    examples: list[dict]
    stats: dict
    provenance: dict
    cap_n: int | None
    cap_step: int
    max_bytes: int
    min_test: int
    required: tuple[str, ...]
    caps: dict
    payload: bytes


def load_sections(pkg: InputFile) -> tuple[dict[str, list[tuple[str, str]]], Counter]:
    """{Description-md5: [(package, stripped section), ...]} plus counters."""
    counts: Counter = Counter()
    by_md5: dict[str, list[tuple[str, str]]] = defaultdict(list)
    text = pkg.content.decode("utf-8")
    for st in iter_stanzas(text, lambda n: n in ("Package", "Section", "Description-md5")):
        counts["packages"] += 1
        if "Description-md5" not in st or "Section" not in st or "Package" not in st:
            counts["packages without Section or Description-md5"] += 1
            continue
        by_md5[st["Description-md5"]].append((st["Package"], strip_area(st["Section"])))
    return by_md5, counts


def load_translation(tr: InputFile, lang: str) -> dict[str, str]:
    """{Description-md5: raw description}; if several stanzas share an md5, the one of the
    lexicographically smallest Package is kept."""
    text = tr.content.decode("utf-8")
    key = f"Description-{lang}"
    best: dict[str, tuple[str, str]] = {}
    for st in iter_stanzas(text, lambda n: n in ("Package", "Description-md5", key)):
        md5, desc = st.get("Description-md5"), st.get(key)
        if not md5 or desc is None:
            continue
        pkg = st.get("Package", "")
        if md5 not in best or pkg < best[md5][0]:
            best[md5] = (pkg, desc)
    return {md5: desc for md5, (_, desc) in best.items()}


def serialize(examples: list[dict]) -> bytes:
    lines = [json.dumps(ex, sort_keys=True, ensure_ascii=False) + "\n" for ex in examples]
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write("".join(lines).encode("utf-8"))
    return buf.getvalue()


def apply_caps(examples: list[dict], caps: dict[str, int | None]) -> list[dict]:
    """Keep, per (lang, label, split), the ``caps[split]`` examples whose group has the
    smallest cap rank (sha256 of "cap:"+group). A group's split never changes, so capping
    only removes examples; the same rank order in every language keeps the kept subsets
    as parallel as possible."""
    buckets: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for ex in examples:
        buckets[(ex["lang"], ex["label"], ex["split"])].append(ex)
    kept: list[dict] = []
    for (_, _, split), items in buckets.items():
        cap = caps.get(split)
        if cap is not None and len(items) > cap:
            items = sorted(items, key=lambda e: (cap_rank(e["group"]), e["group"]))[:cap]
        kept.extend(items)
    return kept


def select_languages(examples: list[dict], required, min_test: int) -> list[str]:
    test = Counter(ex["lang"] for ex in examples if ex["split"] == "test")
    missing = [lang for lang in required if test[lang] < min_test]
    if missing:
        raise SystemExit(
            f"required languages with fewer than {min_test} test examples: "
            + ", ".join(f"{lang} ({test[lang]})" for lang in missing)
        )
    return sorted({ex["lang"] for ex in examples if test[ex["lang"]] >= min_test})


def build(
    lists_dir: Path,
    suite: str = "bookworm",
    component: str = "main",
    arch: str = "amd64",
    required=REQUIRED_LANGS,
    min_test: int = MIN_TEST,
    max_bytes: int = MAX_BYTES,
    cap_step: int = CAP_STEP,
    log=print,
) -> Build:
    release, pkg, translations = find_inputs(lists_dir, suite, component, arch)
    if "en" not in translations:
        raise SystemExit("Translation-en is required (English long descriptions)")
    for f in (release, pkg, *translations.values()):
        f.content = read_bytes(f.path)
    rel_fields, rel_sums = parse_release(release.content)

    by_md5, counts = load_sections(pkg)
    group_label: dict[str, str] = {}
    group_id_pkg: dict[str, str] = {}
    for md5, members in by_md5.items():
        sections = {section for _, section in members}
        if len(sections) > 1:
            if sections & set(LABELS):
                counts[
                    "groups dropped: packages sharing the description disagree on the section"
                ] += 1
            continue
        (section,) = sections
        if section not in LABELS:
            counts["groups outside the 8 sections"] += 1
            continue
        group_label[md5] = section
        group_id_pkg[md5] = min(p for p, _ in members)
    counts["groups kept"] = len(group_label)

    english: dict[str, str] = {}
    examples: list[dict] = []
    for lang in ["en", *sorted(set(translations) - {"en"})]:
        descs = load_translation(translations[lang], lang)
        for md5, label in group_label.items():
            raw = descs.get(md5)
            if raw is None:
                continue
            text = clean_description(raw)
            if not text:
                counts[f"{lang}: empty description dropped"] += 1
                continue
            if lang == "en":
                english[md5] = text
            elif text == english.get(md5):
                counts["translations identical to the English text dropped"] += 1
                continue
            examples.append(
                {
                    "id": f"{lang}:{group_id_pkg[md5]}",
                    "group": md5,
                    "lang": lang,
                    "label": label,
                    "split": split_of(md5),
                    "text": text,
                }
            )
    missing_en = len(set(group_label) - set(english))
    counts["groups without an English description in Translation-en"] = missing_en

    def attempt(n: int | None):
        caps = caps_for(n)
        capped = apply_caps(examples, caps)
        langs = set(select_languages(capped, required, min_test))
        capped = [ex for ex in capped if ex["lang"] in langs]
        capped.sort(key=lambda ex: (ex["lang"], ex["id"]))
        payload = serialize(capped)
        log(f"cap N={n}: {len(capped)} examples, {len(langs)} languages, {len(payload)} bytes")
        return n, caps, capped, payload

    chosen = attempt(None)
    if len(chosen[3]) > max_bytes:
        # Largest multiple of CAP_STEP that fits, by bisection (size grows with N).
        biggest = max(Counter((ex["lang"], ex["label"]) for ex in examples).values())
        lo, hi, chosen = 0, -(-biggest // cap_step), None
        while lo < hi:
            mid = (lo + hi + 1) // 2
            result = attempt(mid * cap_step)
            if len(result[3]) <= max_bytes:
                lo, chosen = mid, result
            else:
                hi = mid - 1
        if chosen is None:
            raise SystemExit(f"even N={cap_step} does not fit in {max_bytes} bytes")
    cap_n, caps, capped, payload = chosen
    ids = [ex["id"] for ex in capped]
    assert len(ids) == len(set(ids)), "duplicate ids"

    files = []
    for f in (pkg, *(translations[lang] for lang in sorted(translations))):
        listed = rel_sums.get(f.index_name)
        files.append(
            {
                "role": f.role,
                "file": f.path.name,
                "index": f.index_name,
                "size": len(f.content),
                "sha256": f.sha256,
                "verified": listed == (f.sha256, len(f.content)) if listed else None,
                "used": f.role == "Packages"
                or f.role[len("Translation-") :] in {ex["lang"] for ex in capped},
            }
        )
    provenance = {
        "release_file": release.path.name,
        "release_kind": release.role,
        "release_sha256": release.sha256,
        "fields": {
            k: rel_fields.get(k, "") for k in ("Origin", "Suite", "Codename", "Version", "Date")
        },
        "suite": suite,
        "component": component,
        "arch": arch,
        "files": files,
    }
    stats = {"counts": dict(counts), "all_langs": sorted(translations)}
    return Build(
        capped,
        stats,
        provenance,
        cap_n,
        cap_step,
        max_bytes,
        min_test,
        tuple(required),
        caps,
        payload,
    )


# --------------------------------------------------------------------------- the card


def _table(header: list[str], rows: list[list], align: str = "") -> list[str]:
    """Markdown table; align has one letter per column, l or r (default: l then r...)."""
    align = align or "l" + "r" * (len(header) - 1)
    out = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|",
    ]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def render_card(b: Build, command: str, out_name: str) -> str:
    ex = b.examples
    langs = sorted({e["lang"] for e in ex})
    by_split = Counter((e["lang"], e["split"]) for e in ex)
    by_label = Counter((e["lang"], e["label"]) for e in ex)
    groups = {e["group"] for e in ex}
    p = b.provenance
    fld = p["fields"]
    caps_txt = " / ".join(f"{b.caps[s]} {s}" for s in SPLITS)
    sha = hashlib.sha256(b.payload).hexdigest()
    L: list[str] = []
    add = L.append
    add(f"# Dataset card: `{DATASET_NAME}`")
    add("")
    add("<!-- Generated by scripts/build_ddtp_dataset.py; do not edit by hand. -->")
    add("")
    add(
        "Multilingual text classification: predict the Debian archive **section** of a "
        "package from its description, in the languages of the Debian Description "
        "Translation Project (DDTP). Translations of one English description share a "
        "`group`, so the same text exists in several languages."
    )
    add("")
    add(f"* file: `{out_name}` ({len(b.payload)} bytes, sha256 `{sha}`)")
    add(
        f"* {len(ex)} examples, {len(groups)} groups (English descriptions), "
        f"{len(langs)} languages, {len(LABELS)} labels"
    )
    add(
        "* format: gzip'd JSON Lines, one object per line with exactly the keys "
        "`group`, `id`, `label`, `lang`, `split`, `text` (serialised with sorted keys, "
        "UTF-8, not ASCII-escaped), lines sorted by (`lang`, `id`); gzip written with "
        "mtime 0 and no file name, so a rebuild from the same inputs is byte-identical."
    )
    add("")
    add("## Source and licence")
    add("")
    add(
        "* Package descriptions are written by Debian package maintainers (usually "
        "adapted from upstream) and ship inside the packages they describe; each is "
        "covered by the licence of its package (see the package's "
        "`/usr/share/doc/<package>/copyright`), all of which in Debian's `main` area meet "
        "the Debian Free Software Guidelines."
    )
    add(
        "* Translations are contributed by volunteers through DDTP/DDTSS "
        "(<https://www.debian.org/international/l10n/ddtp>) and distributed by Debian in "
        "the `Translation-<lang>` index files of the archive. Debian does not publish a "
        "single separate licence statement for these index files; treat each translation "
        "as a derivative of the description it translates, i.e. under that package's "
        "free licence. This dataset redistributes a deterministic, reformatted subset "
        "for research and testing; cite Debian and the DDTP translators when using it."
    )
    add("* Labels are Debian's own `Section` field from the `Packages` index.")
    add("")
    add("## How it was built")
    add("")
    add("```sh")
    add("# fetch the Translation-<lang> files into /var/lib/apt/lists (as root):")
    add("apt-get update -o Acquire::Languages=" + ",".join(DDTP_LANGS))
    add(command)
    add("```")
    add("")
    add("(`--apt-update` makes the script run the `apt-get update` line itself.)")
    add("")
    add("### Provenance")
    add("")
    add(
        f"* archive: {fld['Origin'] or '?'} suite `{fld['Suite'] or p['suite']}` "
        f"(codename `{fld['Codename'] or p['suite']}`, version {fld['Version'] or '?'}), "
        f"component `{p['component']}`, architecture `{p['arch']}`"
    )
    add(f"* {p['release_kind']} `Date`: {fld['Date'] or '?'}")
    add(
        f"* {p['release_kind']} file `{p['release_file']}`, sha256 `{p['release_sha256']}`"
        " (its signature was checked by apt when it was downloaded; the script does not "
        "re-check it)"
    )
    add(
        "* index files (sha256 and size of the **decompressed** content, which is what "
        "the Release file lists; `verified` = equal to the Release file's SHA256 entry; "
        "`used` = contributes examples):"
    )
    add("")
    rows = [
        [
            f"`{f['index']}`",
            f["size"],
            f"`{f['sha256']}`",
            {True: "yes", False: "**NO**", None: "not listed"}[f["verified"]],
            "yes" if f["used"] else "no",
        ]
        for f in p["files"]
    ]
    L += _table(["index", "bytes", "sha256", "verified", "used"], rows, "lrlll")
    add("")
    add("## Rules")
    add("")
    add(
        f"* **label**: the package's `Section`, with any `contrib/`, `non-free/` or "
        f"`non-free-firmware/` prefix removed, kept only if it is one of "
        f"{', '.join(f'`{x}`' for x in LABELS)}. One example per Description-md5 "
        "(the **group**): when the packages sharing a Description-md5 do not all have "
        "the same (prefix-stripped) section, the group is dropped."
    )
    add(
        "* **text**: the DDTP description (`Description-<lang>`, English from "
        "`Translation-en`) cleaned as follows: the short description is the first "
        "paragraph; long-description lines lose their leading space and have runs of "
        'whitespace collapsed; `" ."` lines separate paragraphs; paragraphs are joined '
        "with a blank line (`\\n\\n`); inside a paragraph lines are joined with a space, "
        "except that verbatim lines (two or more leading spaces) and bullets "
        "(`*`, `+`, `-`, `•`, `1.`, `1)`) start a new line (`\\n`); when the last "
        "character of a line and the first of the next are both Han, kana, CJK "
        "punctuation or full-width forms, the lines are joined without a space "
        "(Chinese/Japanese). Korean translations are often hard-wrapped inside words; "
        "such joins keep the space. If several "
        "stanzas of one Translation file share a Description-md5, the one of the "
        "lexicographically smallest `Package` is used. A translation whose cleaned text "
        "equals the English text (an untranslated copy) is dropped."
    )
    add(
        "* **group** = Description-md5 (the md5 of the English description); "
        "**id** = `<lang>:<package>` with the lexicographically smallest package name of "
        "the group."
    )
    add(
        "* **split**, per group: u = first 8 bytes of sha256(group as UTF-8), big-endian, "
        "divided by 2^64; train if u < 0.7, dev if u < 0.8, else test. Every translation "
        "of a description therefore has the same split: no test text (in any language) "
        "has a translation in train or dev."
    )
    if b.cap_n is None:
        cap_used = "none was needed (the uncapped snapshot fits)"
    else:
        cap_used = f"N = {b.cap_n}, i.e. at most {caps_txt} examples per (language, label)"
    add(
        f"* **cap**: the snapshot must be at most {b.max_bytes} bytes. If the uncapped "
        "snapshot is larger, each (language, label) keeps at most N examples, divided "
        "like the split rule: N*7//10 train, N//10 dev, N*2//10 test; N is the largest "
        f"multiple of {b.cap_step} for which the snapshot fits, found by bisection. Within a "
        "(language, label, split) the examples kept are those whose group has the "
        'smallest cap rank (first 8 bytes of sha256("cap:" + group), as for the split), '
        "the same order in every language, so capped languages keep parallel subsets "
        "and small languages are untouched. Capping only removes examples; it never "
        "moves a group between splits, so split integrity holds. The cap is applied "
        f"before languages are selected. Cap used: {cap_used}."
    )
    add(
        f"* **languages**: every DDTP language with at least {b.min_test} test examples "
        f"after capping; the script fails if one of {', '.join(b.required) or '(none)'} "
        "has fewer. "
        "Codes are those of the Translation file names (`pt_BR`, `zh_CN`, ...). "
        "Languages available but not included: "
        + (", ".join(f"`{x}`" for x in b.stats["all_langs"] if x not in langs) or "none")
        + ". Natural imbalance between languages is kept."
    )
    add("")
    add("Build counters:")
    add("")
    for key in sorted(b.stats["counts"]):
        add(f"* {key}: {b.stats['counts'][key]}")
    add("")
    add("## Counts per language × split")
    add("")
    rows = [
        [
            f"`{lang}`",
            *(by_split[(lang, s)] for s in SPLITS),
            sum(by_split[(lang, s)] for s in SPLITS),
        ]
        for lang in langs
    ]
    rows.append(["**all**", *(sum(by_split[(lang, s)] for lang in langs) for s in SPLITS), len(ex)])
    L += _table(["lang", *SPLITS, "total"], rows)
    add("")
    add("## Counts per language × label")
    add("")
    rows = [[f"`{lang}`", *(by_label[(lang, lab)] for lab in LABELS)] for lang in langs]
    rows.append(["**all**", *(sum(by_label[(lang, lab)] for lang in langs) for lab in LABELS)])
    L += _table(["lang", *LABELS], rows)
    add("")
    return "\n".join(L)


# --------------------------------------------------------------------------- CLI


def apt_update(langs) -> None:
    cmd = ["apt-get", "update", "-o", "Acquire::Languages=" + ",".join(langs)]
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lists-dir", type=Path, default=Path("/var/lib/apt/lists"))
    ap.add_argument("--out", type=Path, required=True, help="snapshot (.jsonl.gz)")
    ap.add_argument("--card", type=Path, required=True, help="dataset card (Markdown)")
    ap.add_argument("--suite", default="bookworm")
    ap.add_argument("--component", default="main")
    ap.add_argument("--arch", default="amd64")
    ap.add_argument(
        "--apt-update",
        action="store_true",
        help="first run apt-get update with every DDTP language (needs root)",
    )
    ap.add_argument(
        "--min-test",
        type=int,
        default=MIN_TEST,
        help="keep languages with at least this many test examples",
    )
    ap.add_argument(
        "--require",
        default=",".join(REQUIRED_LANGS),
        help="comma-separated languages that must reach --min-test",
    )
    ap.add_argument(
        "--max-bytes",
        type=int,
        default=MAX_BYTES,
        help="largest allowed snapshot; caps are applied to fit",
    )
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.apt_update:
        apt_update(DDTP_LANGS)
    log = (lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    required = tuple(x for x in args.require.split(",") if x)
    b = build(
        args.lists_dir,
        args.suite,
        args.component,
        args.arch,
        required=required,
        min_test=args.min_test,
        max_bytes=args.max_bytes,
        log=log,
    )
    command = "python scripts/build_ddtp_dataset.py"
    if args.lists_dir != Path("/var/lib/apt/lists"):
        command += f" --lists-dir {shlex.quote(args.lists_dir.as_posix())}"
    for opt in ("suite", "component", "arch", "min_test", "require", "max_bytes"):
        if getattr(args, opt) != ap.get_default(opt):
            command += f" --{opt.replace('_', '-')} {shlex.quote(str(getattr(args, opt)))}"
    command += (
        f" --out {shlex.quote(args.out.as_posix())} --card {shlex.quote(args.card.as_posix())}"
    )
    card = render_card(b, command, args.out.name)
    write_atomic(args.out, b.payload)
    write_atomic(args.card, card.encode("utf-8"))
    log(f"wrote {args.out} ({len(b.payload)} bytes, {len(b.examples)} examples) and {args.card}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

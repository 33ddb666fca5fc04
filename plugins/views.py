"""Two views of a report for the table and markdown reporters: ``variance`` (where the
spread of a score comes from) and ``by-script`` (transfer gaps grouped by the scripts of
the source and target languages)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from tabulate import tabulate

from xleval.api import report_methods
from xleval.api.languages import languages_info


def _fmt(value: float | None, digits: int, sign: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _component(part: dict[str, Any] | None, share: float | None, digits: int) -> str:
    if part is None:
        return "n/a"
    text = _fmt(part["sd"], digits)
    if part.get("ci"):
        text += f" [{part['ci'][0]:.{digits}f}, {part['ci'][1]:.{digits}f}]"
    if share is not None:
        text += f" ({share:.0%})"
    return text


def variance_view(report: dict[str, Any], digits: int, tablefmt: str) -> str:
    """Per method, target and k: the standard deviation of one run's score from the
    training seed, the shot draw and the test examples, each with its interval and share."""
    entries = report.get("variance")
    if entries is None:
        return (
            "this report has no variance components (made by an xleval before 0.9): "
            "`xleval rescore RUN` rebuilds it with them"
        )
    statistics = report.get("statistics", {})
    confidence = statistics.get("confidence", 0.95)
    metric = statistics.get("metric", report["spec"]["main_metric"])
    order = {m["label"]: i for i, m in enumerate(report_methods(report))}
    rows, notes = [], {}
    for e in sorted(entries, key=lambda e: (order.get(e["method"], len(order)), e["target"])):
        parts, shares = e["components"], e["shares"]
        mark = ""
        if e.get("note"):
            mark = notes.setdefault(e["note"], "¹²³⁴⁵⁶⁷⁸⁹"[len(notes) % 9])
        rows.append(
            [
                e["method"],
                e["target"],
                e["shots"],
                f"{e['seeds']}" + (f" × {e['draws']}" if e.get("draws") else ""),
                _component(parts["seed"], shares.get("seed"), digits) + mark,
                _component(parts["draw"], shares.get("draw"), digits),
                _component(parts["examples"], shares.get("examples"), digits),
                _fmt(e.get("total_sd"), digits),
            ]
        )
    title = (
        f"where the spread of {metric} comes from: the standard deviation of one run's score "
        "(metric units) from the training seed (the shot draw held fixed), the shot draw (the "
        "seed held fixed) and the test examples (another test set of this size); "
        f"[{confidence:.0%} interval] (share of the variance)"
    )
    header = [
        "method",
        "target",
        "k",
        "seeds × draws",
        "seed",
        "shot draw",
        "test examples",
        "total",
    ]
    text = title + "\n\n" + tabulate(rows, headers=header, tablefmt=tablefmt, disable_numparse=True)
    if notes:
        text += "\n\n" + "\n".join(f"{mark} {note}" for note, mark in notes.items())
    return text


def script_of(codes: list[str], languages: dict[str, dict[str, Any]]) -> tuple[str | None, str]:
    """(ISO 15924 code or None, how to show it) of one language or of several sources
    ("mixed" when they differ, "unknown" when a code's script is not known)."""
    scripts = {languages.get(c, {}).get("script") for c in codes}
    if None in scripts or not scripts:
        return None, "unknown"
    if len(scripts) > 1:
        return None, "mixed"
    script = scripts.pop()
    names = {languages[c].get("script_name") for c in codes}
    name = names.pop() if len(names) == 1 else None
    return script, name or script


def by_script_inputs(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every (method, k, sources, target) transfer gap of the report with the scripts of
    its sources and target, in the report's order."""
    codes = sorted({lang for c in report.get("cells", ()) for lang in (*c["sources"], c["target"])})
    languages = {**languages_info(codes), **(report.get("languages") or {})}
    sources_of = {}
    for c in report.get("cells", ()):
        sources_of.setdefault((c["method"], c["target"]), list(c["sources"]))
    out = []
    for m in report_methods(report):
        label = m["label"]
        summary = report.get("summary", {}).get(label)
        if not summary or summary.get("transfer_gap_note"):
            continue
        for shots, row in summary["by_shots"].items():
            for target, gap in (row.get("transfer_gap_per_target") or {}).items():
                sources = sources_of.get((label, target), [])
                if gap is None or not sources:
                    continue
                source_script, source_name = script_of(sources, languages)
                target_script, target_name = script_of([target], languages)
                known = source_script is not None and target_script is not None
                out.append(
                    {
                        "method": label,
                        "shots": shots,
                        "sources": sources,
                        "target": target,
                        "gap": gap,
                        "scripts": f"{source_name} → {target_name}",
                        "same": (source_script == target_script) if known else None,
                    }
                )
    return out


def by_script_view(report: dict[str, Any], digits: int, tablefmt: str) -> str:
    """Transfer gaps grouped by same-script and different-script source–target pairs, and by
    script pair; then the languages' names, scripts and families."""
    gaps = by_script_inputs(report)
    metric = report["spec"]["main_metric"]
    codes = sorted({lang for g in gaps for lang in (*g["sources"], g["target"])})
    languages = {**languages_info(codes), **(report.get("languages") or {})}
    if not gaps:
        return "no transfer gaps in this report (no method here learns from a source language)"
    kinds: dict[tuple[str, Any], dict[Any, list[float]]] = defaultdict(lambda: defaultdict(list))
    pairs: dict[tuple[str, Any, str], list[dict[str, Any]]] = defaultdict(list)
    for g in gaps:
        kinds[(g["method"], g["shots"])][g["same"]].append(g["gap"])
        pairs[(g["method"], g["shots"], g["scripts"])].append(g)

    def mean(values: list[float]) -> str:
        return (
            f"{_fmt(sum(values) / len(values), digits, sign=True)} ({len(values)})"
            if values
            else "–"
        )

    summary_rows = []
    for (method, shots), by_kind in kinds.items():
        same, other = by_kind.get(True, []), by_kind.get(False, [])
        difference = (
            _fmt(sum(other) / len(other) - sum(same) / len(same), digits, sign=True)
            if same and other
            else "–"
        )
        row = [method, shots, mean(same), mean(other), difference]
        if by_kind.get(None):
            row.append(mean(by_kind[None]))
        summary_rows.append(row)
    header = ["method", "k", "same script", "different script", "different − same"]
    if any(len(r) > 5 for r in summary_rows):
        header.append("script unknown or mixed")
        summary_rows = [r + [""] * (6 - len(r)) for r in summary_rows]
    detail_rows = [
        [
            method,
            shots,
            scripts,
            mean([g["gap"] for g in group]),
            ", ".join(f"{'+'.join(g['sources'])}→{g['target']}" for g in group),
        ]
        for (method, shots, scripts), group in pairs.items()
    ]
    language_rows = [
        [
            code,
            languages[code].get("name") or "unknown",
            languages[code].get("script") or "unknown",
            languages[code].get("family") or "unknown",
        ]
        for code in codes
    ]
    title = (
        f"transfer gap of {metric} (how much worse the target scores than the source; lower "
        "is better) "
        "by the scripts of the source and target languages: mean over the pairs (their "
        "count), each pair's gap the mean over seeds (its interval: --view gaps)"
    )
    return "\n\n".join(
        [
            title,
            tabulate(summary_rows, headers=header, tablefmt=tablefmt, disable_numparse=True),
            tabulate(
                detail_rows,
                headers=["method", "k", "scripts", "mean gap (pairs)", "pairs"],
                tablefmt=tablefmt,
                disable_numparse=True,
            ),
            "languages (names and scripts: langcodes/CLDR; families: language-data's "
            "Wiktionary table)",
            tabulate(
                language_rows,
                headers=["code", "name", "script", "family"],
                tablefmt=tablefmt,
                disable_numparse=True,
            ),
        ]
    )

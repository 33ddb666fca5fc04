"""Bundled reporters: ``json`` (the report itself), ``table`` (terminal) and ``markdown``.

The tables show the main metric: rows are methods, columns target language x shots, cells
mean ± std over seeds. A best result is marked only as far as the report's paired tests
support it: ``*`` when it is significantly better than the runner-up, ``=`` on every cell
tied for best (not significantly different from the best) otherwise. Other views of the
same report: ``comparisons``, ``gaps`` (transfer gap), ``ranks`` and ``curves``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tabulate import tabulate

from xleval.cache import atomic_write_text
from xleval.hookspecs import Register, hookimpl

VIEWS = ("main", "comparisons", "gaps", "ranks", "curves")
BEST, TIED = "*", "="


def write_text(text: str, path: str | None) -> None:
    """Write to ``path`` atomically (mode 0644 under umask 022), or to standard output."""
    if path is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    atomic_write_text(Path(path), text)


def shots_label(shots: Any) -> str:
    return str(shots)


def fmt(value: float | None, digits: int, sign: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def fmt_interval(interval: list[float] | None, digits: int) -> str:
    if interval is None:
        return "–"
    return f"[{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "–"
    return "<1e-4" if p < 1e-4 else f"{p:.4f}"


def pairwise_index(report: dict[str, Any]) -> dict[tuple[frozenset[str], str, Any], dict]:
    """(pair, target, shots) -> the tested pairwise comparison on the main metric."""
    metric = report["spec"]["main_metric"]
    return {
        (frozenset((e["a"], e["b"])), e["target"], e["shots"]): e
        for e in report.get("comparisons", [])
        if e.get("family") == "pairwise" and e.get("status") == "ok" and e["metric"] == metric
    }


def has_tests(report: dict[str, Any]) -> bool:
    return any(e.get("family") == "pairwise" for e in report.get("comparisons", []))


def column_marks(report: dict[str, Any]) -> dict[tuple[str, str, Any], str]:
    """(method, target, shots) -> '*' or '=' from the pairwise tests of each column.

    The best mean is starred only when the test against the runner-up is significant
    after Holm's correction; otherwise the best and every method not significantly
    different from it are marked '=' (tied for best). A column without tests (a report
    made before comparisons existed) stars its best mean, as older tables did.
    """
    spec = report["spec"]
    metric = spec["main_metric"]
    higher = report["metrics"][metric]["higher_is_better"]
    tests = pairwise_index(report)
    tested = has_tests(report)
    by_column: dict[tuple[str, Any], list[tuple[str, float]]] = {}
    for a in report["aggregates"]:
        if a["metric"] == metric:
            by_column.setdefault((a["target"], a["shots"]), []).append((a["method"], a["mean"]))
    marks: dict[tuple[str, str, Any], str] = {}
    for (target, shots), entries in by_column.items():
        entries.sort(key=lambda e: -e[1] if higher else e[1])
        best = entries[0][0]
        if not tested:
            for method, mean in entries:
                if mean == entries[0][1]:
                    marks[(method, target, shots)] = BEST
            continue
        if len(entries) < 2:
            continue
        runner_up = entries[1][0]
        test = tests.get((frozenset((best, runner_up)), target, shots))
        if test is not None and test["significant"] and test["better"] == best:
            marks[(best, target, shots)] = BEST
            continue
        marks[(best, target, shots)] = TIED
        for method, _ in entries[1:]:
            test = tests.get((frozenset((best, method)), target, shots))
            if test is not None and not test["significant"]:
                marks[(method, target, shots)] = TIED
    return marks


def main_metric_rows(report: dict[str, Any], digits: int) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the main-metric table, best results marked (see column_marks)."""
    spec = report["spec"]
    metric = spec["main_metric"]
    methods = [m["label"] for m in spec["methods"]]
    columns = [(t, s) for t in spec["targets"] for s in spec["shots"]]
    cells: dict[tuple[str, str, Any], dict[str, Any]] = {
        (a["method"], a["target"], a["shots"]): a
        for a in report["aggregates"]
        if a["metric"] == metric
    }
    marks = column_marks(report)
    header = ["method"] + [f"{t} k={shots_label(s)}" for t, s in columns]
    rows = []
    for method in methods:
        row = [method]
        for target, shots in columns:
            agg = cells.get((method, target, shots))
            if agg is None:
                row.append("")
                continue
            text = f"{agg['mean']:.{digits}f}"
            if agg["n"] > 1:
                text += f" ± {agg['std']:.{digits}f}"
            mark = marks.get((method, target, shots))
            if mark:
                text += f" {mark}"
            row.append(text)
        rows.append(row)
    return header, rows


def alpha_of(report: dict[str, Any]) -> float:
    return round(1.0 - report["spec"]["statistics"]["confidence"], 12)


def marks_legend(report: dict[str, Any]) -> str:
    if not has_tests(report):
        return "* best in column (by mean; this report has no significance tests)"
    families = report.get("statistics", {}).get("families", {})
    size = families.get("pairwise")
    over = f" over the report's {size} pairwise tests" if size is not None else ""
    return (
        f"* best in column, significantly better than the runner-up; = tied for best "
        f"(not significantly different from the best); paired tests on the same seeds and "
        f"test examples, Holm-corrected{over}, alpha = {alpha_of(report):g}"
    )


def main_view(report: dict[str, Any], digits: int, tablefmt: str) -> str:
    header, rows = main_metric_rows(report, digits)
    spec = report["spec"]
    title = (
        f"{spec['main_metric']} on the target test split, mean ± std over "
        f"{len(spec['seeds'])} seed(s)"
    )
    text = title + "\n" + marks_legend(report) + "\n\n"
    return text + tabulate(rows, headers=header, tablefmt=tablefmt)


def comparisons_view(report: dict[str, Any], digits: int, tablefmt: str, family: str) -> str:
    """One row per comparison: difference a − b with its interval, raw and Holm p-values."""
    families = ("planned", "pairwise") if family == "all" else (family,)
    chosen = [e for e in report.get("comparisons", []) if e["family"] in families]
    if not chosen:
        return "no comparisons in this report (it predates them, or has one method)"
    confidence = report["spec"]["statistics"]["confidence"]
    rows, skipped = [], []
    for e in chosen:
        if e["status"] != "ok":
            skipped.append(f"  {e['a']} vs {e['b']} {e['target']} k={e['shots']}: {e['reason']}")
            continue
        row = [e["target"], shots_label(e["shots"]), e["a"], e["b"]]
        row += [fmt(e["difference"], digits, sign=True), fmt_interval(e["ci"], digits)]
        row += [e["test"], fmt_p(e["p_value"]), fmt_p(e["p_holm"])]
        row += ["*" if e["significant"] else "", e["better"] or ""]
        if family == "all":
            row.insert(0, e["family"])
        rows.append(row)
    header = ["target", "k", "A", "B", "A − B", f"{confidence:.0%} CI", "test", "p", "p Holm"]
    header += ["sig", "better"]
    if family == "all":
        header.insert(0, "family")
    sizes = report.get("statistics", {}).get("families", {})
    metric = report["spec"]["main_metric"]
    title = (
        f"{metric}: paired comparisons on the same seeds and test examples ({', '.join(families)}"
        f"; Holm over {' / '.join(str(sizes.get(f, '?')) for f in families)} tests); "
        f"* significant at alpha = {alpha_of(report):g}"
    )
    text = title + "\n\n" + tabulate(rows, headers=header, tablefmt=tablefmt, disable_numparse=True)
    if skipped:
        text += f"\n\n{len(skipped)} skipped:\n" + "\n".join(skipped)
    return text


def summaries(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    summary = report.get("summary", {})
    return [
        (m["label"], summary[m["label"]])
        for m in report["spec"]["methods"]
        if m["label"] in summary
    ]


def gaps_view(report: dict[str, Any], digits: int, tablefmt: str) -> str:
    """Transfer gap (source − target score) per method, shots and target, and its mean."""
    spec = report["spec"]
    targets = spec["targets"]
    rows = []
    for label, s in summaries(report):
        for shots, row in s["by_shots"].items():
            gaps = row.get("transfer_gap_per_target", {})
            cis = row.get("transfer_gap_per_target_ci", {})
            cells = [
                fmt(gaps.get(t), digits, sign=True)
                + (f" {fmt_interval(cis[t], digits)}" if cis.get(t) else "")
                for t in targets
            ]
            mean = fmt(row.get("transfer_gap"), digits, sign=True)
            if row.get("transfer_gap_ci"):
                mean += f" {fmt_interval(row['transfer_gap_ci'], digits)}"
            rows.append([label, shots, *cells, mean])
    title = (
        f"transfer gap: {spec['main_metric']} on the source test split minus on the target's "
        f"(lower is better), mean over seeds [{spec['statistics']['confidence']:.0%} t-interval]"
    )
    header = ["method", "k", *targets, "mean over targets"]
    return title + "\n\n" + tabulate(rows, headers=header, tablefmt=tablefmt, disable_numparse=True)


def ranks_view(report: dict[str, Any], digits: int, tablefmt: str) -> str:
    """Mean rank, win/tie/loss and the score over targets per method; then W-T-L by pair."""
    spec = report["spec"]
    confidence = spec["statistics"]["confidence"]
    items = summaries(report)
    rows = []
    for label, s in items:
        wtl = (s.get("wins_ties_losses") or {}).get("total")
        scores = []
        for shots in spec["shots"]:
            row = s["by_shots"].get(str(shots))
            scores.append(
                ""
                if row is None
                else fmt(row["score"], digits)
                + (" " + fmt_interval(row["score_ci"], digits) if row.get("score_ci") else "")
            )
        rows.append(
            [
                label,
                fmt(s.get("mean_rank"), 2),
                s.get("columns_ranked", "–"),
                *([wtl["wins"], wtl["ties"], wtl["losses"]] if wtl else ["–"] * 3),
                *scores,
            ]
        )
    header = ["method", "mean rank", "columns", "wins", "ties", "losses"]
    header += [f"score k={shots_label(k)}" for k in spec["shots"]]
    title = (
        f"{spec['main_metric']}: rank per (target, k) column (1 best; mean over columns where "
        f"every method ran); wins/ties/losses = significantly better / not different / worse "
        f"in a pairwise test (Holm, alpha = {alpha_of(report):g}); score = mean over targets "
        f"[{confidence:.0%} t-interval over seeds]"
    )
    text = title + "\n\n" + tabulate(rows, headers=header, tablefmt=tablefmt, disable_numparse=True)
    labels = [label for label, _ in items]
    matrix = []
    for label, s in items:
        vs = (s.get("wins_ties_losses") or {}).get("vs", {})
        matrix.append(
            [label]
            + [
                ""
                if other == label or other not in vs
                else f"{vs[other]['wins']}-{vs[other]['ties']}-{vs[other]['losses']}"
                for other in labels
            ]
        )
    if any(s.get("wins_ties_losses") for _, s in items):
        text += "\n\nwins-ties-losses of the row method against the column method\n\n"
        text += tabulate(matrix, headers=["", *labels], tablefmt=tablefmt, disable_numparse=True)
    return text


def curves_view(report: dict[str, Any], digits: int, tablefmt: str) -> str:
    """Per target: the main metric at each shot count per method, and the break-even k."""
    spec = report["spec"]
    shots = sorted(spec["shots"], key=lambda k: (1, 0) if k == "all" else (0, int(k)))
    items = summaries(report)
    against = report.get("statistics", {}).get("target_only")
    parts = [
        f"learning curves: {spec['main_metric']} by target shots per class, mean over seeds "
        f"[{spec['statistics']['confidence']:.0%} bootstrap interval, test examples and seeds "
        "resampled]"
        + (
            f"; break-even = smallest k from which a method is no longer significantly "
            f"better than {against}"
            if against
            else ""
        )
    ]
    for target in spec["targets"]:
        rows = []
        for label, s in items:
            points = {p["shots"]: p for p in s.get("curves", {}).get(target, [])}
            row = [label]
            for k in shots:
                p = points.get(k)
                row.append(
                    ""
                    if p is None
                    else fmt(p["mean"], digits)
                    + (
                        " " + fmt_interval(p["ci_bootstrap"], digits)
                        if p.get("ci_bootstrap")
                        else ""
                    )
                )
            even = (s.get("break_even") or {}).get(target)
            row.append(
                ""
                if even is None
                else (shots_label(even["shots"]) if even["shots"] is not None else "> max k")
                + f" ({even['status']})"
            )
            rows.append(row)
        header = ["method", *[f"k={shots_label(k)}" for k in shots], "break-even k"]
        parts.append(
            f"{target}\n" + tabulate(rows, headers=header, tablefmt=tablefmt, disable_numparse=True)
        )
    return "\n\n".join(parts)


class JsonReporter:
    """The report as indented JSON."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.indent = options["indent"]

    def write(self, report: dict[str, Any], path: str | None) -> None:
        write_text(json.dumps(report, indent=self.indent, ensure_ascii=False) + "\n", path)


class TableReporter:
    """A plain-text table for terminals; ``view`` picks which part of the report."""

    tablefmt = "simple"

    def __init__(self, options: dict[str, Any]) -> None:
        self.digits = options["digits"]
        self.view = options.get("view", "main")
        self.family = options.get("family", "planned")

    def render(self, report: dict[str, Any]) -> str:
        if self.view == "comparisons":
            text = comparisons_view(report, self.digits, self.tablefmt, self.family)
        elif self.view == "gaps":
            text = gaps_view(report, self.digits, self.tablefmt)
        elif self.view == "ranks":
            text = ranks_view(report, self.digits, self.tablefmt)
        elif self.view == "curves":
            text = curves_view(report, self.digits, self.tablefmt)
        else:
            text = main_view(report, self.digits, self.tablefmt)
        failed = [c for c in report["cells"] if c["status"] == "failed"]
        if failed:
            text += f"\n\n{len(failed)} cell(s) failed; see the report's cells[].error"
        notes = report.get("statistics", {}).get("notes", [])
        if notes and self.view != "main":
            text += "\n\nnotes:\n" + "\n".join(f"  - {n}" for n in notes)
        return text + "\n"

    def write(self, report: dict[str, Any], path: str | None) -> None:
        write_text(self.render(report), path)


class MarkdownReporter(TableReporter):
    """The same table as GitHub-flavoured Markdown, for READMEs and papers' appendices."""

    tablefmt = "github"


TABLE_OPTIONS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "digits": {"type": "integer", "minimum": 0, "maximum": 8, "default": 3},
        "view": {
            "enum": list(VIEWS),
            "default": "main",
            "description": "main: the main-metric table; comparisons: paired tests; gaps: "
            "transfer gap; ranks: ranks and win/tie/loss; curves: learning curves.",
        },
        "family": {
            "enum": ["planned", "pairwise", "all"],
            "default": "planned",
            "description": "Which comparisons the comparisons view lists.",
        },
    },
}


@hookimpl
def xleval_register_reporters(register: Register) -> None:
    """Register ``json``, ``table`` and ``markdown``."""
    register(
        "json",
        JsonReporter,
        schema={
            "type": "object",
            "additionalProperties": False,
            "properties": {"indent": {"type": "integer", "minimum": 0, "default": 2}},
        },
        description="The full report as JSON.",
    )
    register(
        "table", TableReporter, schema=TABLE_OPTIONS, description="Main-metric table for terminals."
    )
    register(
        "markdown",
        MarkdownReporter,
        schema=TABLE_OPTIONS,
        description="Main-metric table, Markdown.",
    )

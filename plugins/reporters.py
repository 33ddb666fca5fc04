"""Bundled reporters: ``json`` (the report itself), ``table`` (terminal) and ``markdown``.

The tables show the main metric: rows are methods, columns target language x shots, cells
mean ± std over seeds. A best result is marked only as far as the report's paired tests
support it: ``*`` when it is significantly better than the runner-up, ``=`` on every cell
not shown to differ from the best otherwise; with one seed nothing is tested and nothing
is marked. ``†`` marks cells that trained on fewer than k examples of some class. Other
views of the same report: ``comparisons``, ``gaps`` (transfer gap), ``ranks`` and
``curves``, ``matrix``, and from :mod:`xleval_plugins.views` ``variance`` and ``by-script``.
"Best" follows the metric's direction (lower is better for a loss).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tabulate import tabulate
from xleval_plugins.views import by_script_view, variance_view

from xleval.api import Register, hookimpl, report_methods, spec_sources, spec_targets
from xleval.api.files import atomic_write_text

VIEWS = ("main", "comparisons", "gaps", "ranks", "curves", "matrix", "variance", "by-script")
BEST, TIED, UNTESTED, SHORT = "*", "=", "?", "†"


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


def pairwise_index(
    report: dict[str, Any], statuses: tuple[str, ...] = ("ok",)
) -> dict[tuple[frozenset[str], str, Any], dict]:
    """(pair, target, shots) -> the pairwise comparison on the main metric with one of
    ``statuses``."""
    metric = report["spec"]["main_metric"]
    return {
        (frozenset((e["a"], e["b"])), e["target"], e["shots"]): e
        for e in report.get("comparisons", [])
        if e.get("family") == "pairwise" and e.get("status") in statuses and e["metric"] == metric
    }


def has_tests(report: dict[str, Any]) -> bool:
    return any(
        e.get("family") == "pairwise" and e.get("status") == "ok"
        for e in report.get("comparisons", [])
    )


def higher_is_better(report: dict[str, Any]) -> bool:
    return bool(report["metrics"][report["spec"]["main_metric"]]["higher_is_better"])


def column_marks(report: dict[str, Any]) -> dict[tuple[str, str, Any], str]:
    """(method, target, shots) -> a mark from the pairwise tests of each column.

    The best mean (by the metric's direction) is starred when its test against the
    runner-up is significant after Holm's correction, else marked '='. Every other method
    is marked '=' when not shown to differ from the best (a method with predictions
    identical to the best's is the same model: '=' too), '?' when its comparison with the
    best could not be made (skipped or not testable), and left unmarked only when it is
    significantly worse. Nothing is marked in a report without tests (one seed: no
    significance claims).
    """
    if not has_tests(report):
        return {}
    spec = report["spec"]
    metric = spec["main_metric"]
    higher = higher_is_better(report)
    tests = pairwise_index(report)
    same = pairwise_index(report, ("identical",))
    by_column: dict[tuple[str, Any], list[tuple[str, float]]] = {}
    for a in report["aggregates"]:
        if a["metric"] == metric and a["mean"] is not None:
            by_column.setdefault((a["target"], a["shots"]), []).append((a["method"], a["mean"]))
    marks: dict[tuple[str, str, Any], str] = {}
    for (target, shots), entries in by_column.items():
        if len(entries) < 2:
            continue
        entries.sort(key=lambda e: -e[1] if higher else e[1])
        best = entries[0][0]
        others = [m for m, _ in entries[1:] if (frozenset((best, m)), target, shots) not in same]
        runner_up = tests.get((frozenset((best, others[0])), target, shots)) if others else None
        starred = runner_up is not None and runner_up["significant"]
        marks[(best, target, shots)] = BEST if starred else TIED
        for method, _ in entries[1:]:
            pair = (frozenset((best, method)), target, shots)
            if pair in same:
                marks[(method, target, shots)] = marks[(best, target, shots)]
            elif pair not in tests:
                marks[(method, target, shots)] = UNTESTED
            elif not tests[pair]["significant"]:
                marks[(method, target, shots)] = TIED
    return marks


def short_cells(report: dict[str, Any]) -> set[tuple[str, str, Any]]:
    """(method, target, shots) whose cells had fewer than k training rows of some class."""
    metric = report["spec"]["main_metric"]
    return {
        (a["method"], a["target"], a["shots"])
        for a in report["aggregates"]
        if a["metric"] == metric and a.get("shortfall")
    }


def main_metric_rows(report: dict[str, Any], digits: int) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the main-metric table, best results marked (see column_marks)."""
    spec = report["spec"]
    metric = spec["main_metric"]
    methods = [m["label"] for m in report_methods(report)]
    columns = [(t, s) for t in spec_targets(spec) for s in spec["shots"]]
    cells: dict[tuple[str, str, Any], dict[str, Any]] = {
        (a["method"], a["target"], a["shots"]): a
        for a in report["aggregates"]
        if a["metric"] == metric
    }
    marks = column_marks(report)
    short = short_cells(report)
    header = ["method"] + [f"{t} k={shots_label(s)}" for t, s in columns]
    rows = []
    for method in methods:
        row = [method]
        for target, shots in columns:
            agg = cells.get((method, target, shots))
            if agg is None:
                row.append("")
                continue
            if agg["mean"] is None:
                row.append("n/a")
                continue
            text = f"{agg['mean']:.{digits}f}"
            if agg["n"] > 1:
                text += f" ± {agg['std']:.{digits}f}"
            if (method, target, shots) in short:
                text += SHORT
            mark = marks.get((method, target, shots))
            if mark:
                text += f" {mark}"
            row.append(text)
        rows.append(row)
    return header, rows


def alpha_of(report: dict[str, Any]) -> float:
    return round(1.0 - report["spec"]["statistics"]["confidence"], 12)


def direction(report: dict[str, Any]) -> str:
    return "higher is better" if higher_is_better(report) else "lower is better"


def marks_legend(report: dict[str, Any]) -> str:
    if len(report["spec"]["seeds"]) < 2:
        return (
            "no marks: with one seed nothing is tested (a single training run says nothing "
            "about the next); run 3 or more seeds"
        )
    if not has_tests(report):
        return "no marks: no comparison in this report could be tested (see its notes)"
    families = report.get("statistics", {}).get("families", {})
    size = families.get("pairwise")
    over = f" over the report's {size} pairwise tests" if size is not None else ""
    return (
        f"* best in column ({direction(report)}), significantly better than the runner-up; "
        f"= not shown to differ from the best (not 'equivalent'); no mark: significantly "
        f"worse than the best; ? not compared with the best; paired tests over seeds and "
        f"test examples, Holm-corrected{over}, alpha = {alpha_of(report):g}"
    )


def main_view(report: dict[str, Any], digits: int, tablefmt: str) -> str:
    header, rows = main_metric_rows(report, digits)
    spec = report["spec"]
    title = (
        f"{spec['main_metric']} on the target test split ({direction(report)}), mean ± std "
        f"over {len(spec['seeds'])} seed(s)"
        + (
            f", each the mean of its {len(spec['shot_draws'])} shot draws where k > 0"
            if len(spec.get("shot_draws") or ()) >= 2
            else ""
        )
    )
    text = title + "\n" + marks_legend(report) + "\n\n"
    text += tabulate(rows, headers=header, tablefmt=tablefmt)
    if short_cells(report):
        text += (
            f"\n\n{SHORT} a class had fewer than k training rows: these cells trained on fewer "
            "examples per class than their column says (see --view curves)"
        )
    return text


def interval_words(report: dict[str, Any]) -> str:
    confidence = report["spec"]["statistics"]["confidence"]
    return report.get("statistics", {}).get(
        "interval", f"{confidence:.0%} interval over seeds and test examples"
    )


def comparisons_view(report: dict[str, Any], digits: int, tablefmt: str, family: str) -> str:
    """One row per tested comparison: difference a − b with its interval, raw and Holm
    p-values; then the comparisons that are no tests, with why."""
    families = ("planned", "pairwise") if family == "all" else (family,)
    chosen = [e for e in report.get("comparisons", []) if e["family"] in families]
    if not chosen:
        return "no comparisons in this report (it predates them, or has one method)"
    rows, untested = [], []
    for e in chosen:
        if e["status"] != "ok":
            untested.append(
                f"  {e['a']} vs {e['b']} {e['target']} k={e['shots']}: {e['status']}: {e['reason']}"
            )
            continue
        row = [e["target"], shots_label(e["shots"]), e["a"], e["b"]]
        row += [fmt(e["difference"], digits, sign=True), fmt_interval(e["ci"], digits)]
        row += [fmt_p(e["p_value"]), fmt_p(e["p_holm"])]
        row += [fmt_p(e.get("p_seeds")), fmt_p(e.get("p_examples"))]
        row += ["*" if e["significant"] else "", e["better"] or ""]
        if family == "all":
            row.insert(0, e["family"])
        rows.append(row)
    header = ["target", "k", "A", "B", "A − B", "interval", "p", "p Holm"]
    header += ["p seeds", "p examples", "sig", "better"]
    if family == "all":
        header.insert(0, "family")
    sizes = report.get("statistics", {}).get("families", {})
    metric = report["spec"]["main_metric"]
    title = (
        f"{metric} ({direction(report)}): paired comparisons on the same seeds and test "
        f"examples ({', '.join(families)}; Holm over "
        f"{' / '.join(str(sizes.get(f, '?')) for f in families)} tests); * significant at "
        f"alpha = {alpha_of(report):g}. p, interval and sig generalise to new seeds and new "
        "test examples; 'p seeds' to new seeds on this test set, 'p examples' to new test "
        f"examples for these trained models (reported, not used). Interval: "
        f"{interval_words(report)}; no mark means not shown to differ, not 'equivalent'."
    )
    text = title + "\n\n"
    text += tabulate(rows, headers=header, tablefmt=tablefmt, disable_numparse=True)
    if not rows:
        text += "(no comparison could be tested)"
    if untested:
        text += f"\n\n{len(untested)} not tested:\n" + "\n".join(untested)
    return text


def summaries(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    summary = report.get("summary", {})
    return [
        (m["label"], summary[m["label"]]) for m in report_methods(report) if m["label"] in summary
    ]


def gaps_view(report: dict[str, Any], digits: int, tablefmt: str) -> str:
    """Transfer gap per method, shots and target, and its mean; n/a for methods that do not
    learn from the source."""
    spec = report["spec"]
    targets = spec_targets(spec)
    rows = []
    for label, s in summaries(report):
        if s.get("transfer_gap_note"):
            rows.append([label, "", *(["n/a"] * len(targets)), s["transfer_gap_note"]])
            continue
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
    higher = higher_is_better(report)
    how = "source − target" if higher else "target − source"
    title = (
        f"transfer gap: how much worse {spec['main_metric']} is on the target's test split "
        f"than on the source's ({how}; lower is better), mean over seeds "
        f"[{interval_words(report)}]"
    )
    header = ["method", "k", *targets, "mean over targets"]
    text = tabulate(rows, headers=header, tablefmt=tablefmt, disable_numparse=True)
    return title + "\n\n" + text


def matrix_inputs(report: dict[str, Any]) -> dict[str, Any]:
    """What the transfer matrices (the matrix view, the HTML page) are drawn from: the main
    metric's means by (method, target, k) and its tested comparisons by (pair, target, k)."""
    metric = report["spec"]["main_metric"]
    return {
        "mean": {
            (a["method"], a["target"], a["shots"]): a["mean"]
            for a in report["aggregates"]
            if a["metric"] == metric
        },
        "tests": {
            (frozenset((e["a"], e["b"])), e["target"], e["shots"]): e
            for e in report.get("comparisons", [])
            if e["metric"] == metric and e["status"] == "ok"
        },
        "higher": higher_is_better(report),
    }


def best_source(
    inputs: dict[str, Any], group: str, sources: list[str], target: str, k: Any
) -> tuple[str, float, str] | None:
    """The best source of ``group`` (a method run per source) for ``target`` at ``k``: (its
    language, its mean, "*" if the paired tests find it better than every other source,
    "tie" if another source has the same mean, else ""); None without any."""
    mean, tests = inputs["mean"], inputs["tests"]
    scored = {
        s: mean[(f"{group}@{s}", target, k)] for s in sources if (f"{group}@{s}", target, k) in mean
    }
    if not scored:
        return None
    top = (max if inputs["higher"] else min)(scored, key=lambda s: scored[s])
    if sum(v == scored[top] for v in scored.values()) > 1:
        return top, scored[top], "tie"
    winner = f"{group}@{top}"
    sure = len(scored) > 1
    for other in (s for s in scored if s != top):
        test = tests.get((frozenset((winner, f"{group}@{other}")), target, k))
        sure = sure and test is not None and test["significant"] and test["better"] == winner
    return top, scored[top], "*" if sure else ""


def matrix_view(report: dict[str, Any], digits: int, tablefmt: str) -> str:
    """Transfer matrices of a spec with pairs: per method run per source and per k, the
    main metric of each source (row) on each target (column) with its gap to the baseline
    (target-only) in brackets; then per target the best source, * where the report's
    paired tests find it better than every other source; then each method that learned
    from every source of the target together, against that best single source."""
    spec = report["spec"]
    if "pairs" not in spec:
        return "no transfer matrix: this spec has source and targets, not pairs"
    inputs = matrix_inputs(report)
    mean = inputs["mean"]
    baseline = report.get("statistics", {}).get("baseline")
    rows = report_methods(report)
    groups = list(dict.fromkeys(m["group"] for m in rows if m["label"] != m["group"]))
    summary = report.get("summary", {})
    combined = [  # the methods trained on every source of a target (not target-only's kind)
        m["label"]
        for m in rows
        if m["label"] == m.get("group")
        and m["label"] != baseline
        and not summary.get(m["label"], {}).get("transfer_gap_note")
    ]
    targets, sources = spec_targets(spec), spec_sources(spec)
    parts = [
        f"{spec['main_metric']} ({direction(report)}) of each source language (rows) on each "
        f"target (columns), mean over seeds; in brackets the difference to "
        f"{baseline or 'no baseline'} at the same k. best: the best source per target, * where "
        f"the paired tests (Holm-corrected, alpha = {alpha_of(report):g}) find it better than "
        "every other source."
    ]
    for group in groups:
        for k in spec["shots"]:
            table = []
            for source in sources:
                row = [source]
                for target in targets:
                    value = mean.get((f"{group}@{source}", target, k))
                    base = mean.get((baseline, target, k)) if baseline else None
                    gap = "" if value is None or base is None else f" ({value - base:+.{digits}f})"
                    row.append("·" if value is None else f"{value:.{digits}f}{gap}")
                table.append(row)
            if all(cell == "·" for row in table for cell in row[1:]):
                continue
            best = {t: best_source(inputs, group, sources, t, k) for t in targets}
            table.append(
                ["best"]
                + [
                    "" if b is None else "(tie)" if b[2] == "tie" else f"{b[0]} {b[2]}".strip()
                    for b in best.values()
                ]
            )
            for label in combined:
                row = [f"{label} (all sources)"]
                for target in targets:
                    value, top = mean.get((label, target, k)), best[target]
                    vs = "" if value is None or top is None else f" ({value - top[1]:+.{digits}f})"
                    row.append("·" if value is None else f"{value:.{digits}f}{vs}")
                if any(cell != "·" for cell in row[1:]):
                    table.append(row)
            header = [f"{group} k={shots_label(k)}: source \\ target", *targets]
            parts.append(tabulate(table, headers=header, tablefmt=tablefmt, disable_numparse=True))
    if combined:
        parts.append(
            "(all sources): the method trained on every source of the target at once; in "
            "brackets its difference to the best single source of that column."
        )
    if len(parts) == 1:
        return 'no transfer matrix: no method runs per source (sources = "each")'
    return "\n\n".join(parts)


def ranks_view(report: dict[str, Any], digits: int, tablefmt: str) -> str:
    """Mean rank, win/tie/loss and the score over targets per method; then W-T-L by pair."""
    spec = report["spec"]
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
        f"{spec['main_metric']} ({direction(report)}): rank per (target, k) column (1 best; "
        f"mean over columns where every method ran); wins/ties/losses = significantly better "
        f"/ not shown to differ / worse in a pairwise test (Holm, alpha = "
        f"{alpha_of(report):g}); score = mean over targets [{interval_words(report)}]"
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


def break_even_text(even: dict[str, Any] | None) -> str:
    """How the curves view shows a break-even entry."""
    if even is None:
        return ""
    status = even["status"]
    if even["shots"] is not None:
        return f"{shots_label(even['shots'])} ({status})"
    if status.startswith("better at"):
        return f"> max k ({status})"
    if status == "undetermined":
        missing = ", ".join(shots_label(k) for k in even.get("not_compared", []))
        return f"undetermined (k={missing} not compared)"
    return status


def curves_view(report: dict[str, Any], digits: int, tablefmt: str) -> str:
    """Per target: the main metric at each shot count per method, and the break-even k."""
    spec = report["spec"]
    shots = sorted(spec["shots"], key=lambda k: (1, 0) if k == "all" else (0, int(k)))
    items = summaries(report)
    against = report.get("statistics", {}).get("target_only")
    parts = [
        f"learning curves: {spec['main_metric']} ({direction(report)}) by target shots per "
        f"class, mean over seeds [{interval_words(report)}]; {SHORT} fewer than k examples "
        "of some class (trained on the mean per class in parentheses)"
        + (
            f"; break-even = smallest k from which a method is no longer significantly "
            f"better than {against}"
            if against
            else ""
        )
    ]
    for target in spec_targets(spec):
        rows = []
        for label, s in items:
            points = {p["shots"]: p for p in s.get("curves", {}).get(target, [])}
            row = [label]
            for k in shots:
                p = points.get(k)
                if p is None:
                    row.append("")
                    continue
                text = fmt(p["mean"], digits)
                if p.get("ci"):
                    text += " " + fmt_interval(p["ci"], digits)
                if p.get("shortfall"):
                    text += f" {SHORT}({fmt(p.get('mean_shots_per_class'), 1)})"
                row.append(text)
            row.append(break_even_text((s.get("break_even") or {}).get(target)))
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
        write_text(
            json.dumps(report, indent=self.indent, ensure_ascii=False, allow_nan=False) + "\n",
            path,
        )


class TableReporter:
    """A plain-text table for terminals; ``view`` picks which part of the report."""

    tablefmt = "simple"
    #: xleval prints a run's summary with it (and ``xleval report`` defaults to it)
    summary = True

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
        elif self.view == "matrix":
            text = matrix_view(report, self.digits, self.tablefmt)
        elif self.view == "variance":
            text = variance_view(report, self.digits, self.tablefmt)
        elif self.view == "by-script":
            text = by_script_view(report, self.digits, self.tablefmt)
        else:
            text = main_view(report, self.digits, self.tablefmt)
        failed = [c for c in report["cells"] if c["status"] == "failed"]
        if failed:
            text += f"\n\n{len(failed)} cell(s) failed; see the report's cells[].error"
        not_run = [c for c in report["cells"] if c["status"] == "not-run"]
        if not_run:
            text += (
                f"\n\nincomplete: {len(not_run)} cell(s) not run (the run stopped early); "
                "no comparison over their columns; rerun to finish"
            )
        notes = report.get("statistics", {}).get("notes", [])
        if notes and self.view != "main":
            text += "\n\nnotes:\n" + "\n".join(f"  - {n}" for n in notes)
        data_warnings = report.get("dataset", {}).get("warnings", [])
        if data_warnings:
            text += "\n\ndata warnings:\n" + "\n".join(f"  - {w}" for w in data_warnings)
        return text + "\n"

    def write(self, report: dict[str, Any], path: str | None) -> None:
        write_text(self.render(report), path)


class MarkdownReporter(TableReporter):
    """The same table as GitHub-flavoured Markdown, for READMEs and papers' appendices."""

    tablefmt = "github"
    summary = False


TABLE_OPTIONS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "digits": {"type": "integer", "minimum": 0, "maximum": 8, "default": 3},
        "view": {
            "enum": list(VIEWS),
            "default": "main",
            "description": "main: the main-metric table; comparisons: paired tests; gaps: "
            "transfer gap; ranks: ranks and win/tie/loss; curves: learning curves; matrix: "
            "source x target tables of a spec with pairs; variance: the spread of a score "
            "split into training seed, shot draw and test examples; by-script: transfer gaps "
            "by the scripts of source and target.",
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

"""Bundled reporters: ``json`` (the report itself), ``table`` (terminal) and ``markdown``.

The tables show the main metric: rows are methods, columns target language x shots,
cells mean ± std over seeds, the best per column marked with ``*``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from tabulate import tabulate

from xleval.hookspecs import Register, hookimpl


def write_text(text: str, path: str | None) -> None:
    """Write to ``path`` atomically (temp file + rename), or to standard output."""
    if path is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def shots_label(shots: Any) -> str:
    return str(shots)


def main_metric_rows(report: dict[str, Any], digits: int) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the main-metric table, best mean per column marked with '*'."""
    spec = report["spec"]
    metric = spec["main_metric"]
    higher = report["metrics"][metric]["higher_is_better"]
    methods = [m["label"] for m in spec["methods"]]
    columns = [(t, s) for t in spec["targets"] for s in spec["shots"]]
    cells: dict[tuple[str, str, Any], dict[str, Any]] = {
        (a["method"], a["target"], a["shots"]): a
        for a in report["aggregates"]
        if a["metric"] == metric
    }
    best: dict[tuple[str, Any], float] = {}
    for (_method, target, shots), agg in cells.items():
        column = (target, shots)
        if column not in best or (agg["mean"] > best[column]) == higher:
            best[column] = agg["mean"]
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
            if agg["mean"] == best[(target, shots)]:
                text += " *"
            row.append(text)
        rows.append(row)
    return header, rows


class JsonReporter:
    """The report as indented JSON."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.indent = options["indent"]

    def write(self, report: dict[str, Any], path: str | None) -> None:
        write_text(json.dumps(report, indent=self.indent, ensure_ascii=False) + "\n", path)


class TableReporter:
    """A plain-text table for terminals."""

    tablefmt = "simple"

    def __init__(self, options: dict[str, Any]) -> None:
        self.digits = options["digits"]

    def render(self, report: dict[str, Any]) -> str:
        header, rows = main_metric_rows(report, self.digits)
        spec = report["spec"]
        title = (
            f"{spec['main_metric']} on the target test split, mean ± std over "
            f"{len(spec['seeds'])} seed(s); * best in column"
        )
        failed = [c for c in report["cells"] if c["status"] == "failed"]
        text = title + "\n\n" + tabulate(rows, headers=header, tablefmt=self.tablefmt)
        if failed:
            text += f"\n\n{len(failed)} cell(s) failed; see the report's cells[].error"
        return text + "\n"

    def write(self, report: dict[str, Any], path: str | None) -> None:
        write_text(self.render(report), path)


class MarkdownReporter(TableReporter):
    """The same table as GitHub-flavoured Markdown, for READMEs and papers' appendices."""

    tablefmt = "github"


DIGITS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"digits": {"type": "integer", "minimum": 0, "maximum": 8, "default": 3}},
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
    register("table", TableReporter, schema=DIGITS, description="Main-metric table for terminals.")
    register(
        "markdown", MarkdownReporter, schema=DIGITS, description="Main-metric table, Markdown."
    )

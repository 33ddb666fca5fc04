"""Recompute a run's metrics from its stored predictions, without training anything.

Everything derived from the metrics is rebuilt the way the run built it (aggregates with
both intervals, comparisons, summary): the same predictions and statistics seed give the
same numbers as the run's own report.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from xleval.errors import XlevalError
from xleval.plugins import XlevalPluginManager
from xleval.report import analyse, metric_components, read_report, validate_report
from xleval.runner import decode_predictions
from xleval.spec import resolve_spec


def read_predictions(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(cell key, lang) -> stored predictions, from ``predictions.jsonl``."""
    out = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise XlevalError(f"{path}: no such file (was the run finished?)") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out[(row["key"], row["lang"])] = row
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise XlevalError(f"{path}:{number}: not a prediction row ({exc})") from None
    return out


def rescore(
    run_dir: Path, pm: XlevalPluginManager, metric_names: list[str] | None = None
) -> dict[str, Any]:
    """The run's report with every cell's metrics recomputed from predictions.jsonl."""
    report = copy.deepcopy(read_report(run_dir))
    raw_spec = report["spec"]
    if metric_names is not None:
        raw_spec["metrics"] = metric_names
        if raw_spec["main_metric"] not in metric_names:
            raw_spec["main_metric"] = metric_names[0]
    spec = resolve_spec(raw_spec, pm.registry, source=str(run_dir / "report.json"))
    metrics = metric_components(pm, spec)
    predictions = read_predictions(run_dir / "predictions.jsonl")

    def score(key: str, lang: str) -> dict[str, float]:
        stored = predictions.get((key, lang))
        if stored is None:
            raise XlevalError(f"predictions.jsonl has no predictions for cell {key} in {lang}")
        y_true, probs = decode_predictions(stored)
        return {name: metric.compute(y_true, probs) for name, metric in metrics.items()}

    for cell in report["cells"]:
        if cell["status"] != "ok":
            continue
        cell["metrics"] = score(cell["key"], cell["target"])
        cell["source_metrics"] = {lang: score(cell["key"], lang) for lang in cell["sources"]}
    report["spec"] = spec.to_json()
    report["metrics"] = {
        name: {"higher_is_better": bool(m.higher_is_better), "options": spec_m.options}
        for (name, m), spec_m in zip(metrics.items(), spec.metrics, strict=True)
    }

    def stored_predictions(key: str, lang: str) -> dict[str, Any] | None:
        return predictions.get((key, lang))

    stats = analyse(report["cells"], spec, metrics, stored_predictions)
    for section in ("aggregates", "comparisons", "summary", "statistics", "calibration"):
        report[section] = stats[section]
    validate_report(report, f"rescored {run_dir}")
    return report

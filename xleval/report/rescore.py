"""Recompute a run's metrics from its stored predictions, without training anything.

Everything derived from the metrics is rebuilt the way a run builds it (aggregates with
their intervals, comparisons, summary): the same predictions give the same numbers as the
run's own report. A report made by an older xleval is rebuilt with this version's
statistics (its cells are kept as they were computed).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from xleval import __version__
from xleval.analysis.analyse import analyse
from xleval.api.languages import languages_info
from xleval.api.predictions import decode_predictions, read_predictions
from xleval.errors import XlevalError
from xleval.experiment.spec import resolve_spec
from xleval.plugin.manager import XlevalPluginManager
from xleval.report.build import (
    SCHEMA_VERSION,
    ReportError,
    load_report_json,
    metric_components,
    validate_report,
)
from xleval.train.checks import metric_values
from xleval.train.tensors import metric_inputs


def rescore(
    run_dir: Path, pm: XlevalPluginManager, metric_names: list[str] | None = None
) -> dict[str, Any]:
    """The run's report with every cell's metrics recomputed from predictions.jsonl."""
    path, report = load_report_json(run_dir)
    if not isinstance(report, dict) or not all(
        isinstance(report.get(k), t)
        for k, t in (("spec", dict), ("cells", list), ("dataset", dict))
    ):
        raise ReportError(f"{path}: not an xleval report (no spec, cells and dataset)")
    report = copy.deepcopy(report)
    made_by = report.get("xleval_version")
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
        try:
            y_true, probs = metric_inputs(*decode_predictions(stored))
        except (ValueError, TypeError, KeyError) as exc:  # bad base64, shape or fields
            raise XlevalError(
                f"predictions.jsonl: the predictions of cell {key} in {lang} are damaged "
                f"({type(exc).__name__}: {exc}); run the spec again to rewrite them"
            ) from None
        return metric_values(
            {name: metric.compute(y_true, probs) for name, metric in metrics.items()}
        )

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

    labels = report["dataset"].get("labels")
    stats = analyse(report["cells"], spec, metrics, stored_predictions, labels=labels)
    sections = ("aggregates", "comparisons", "summary", "statistics", "calibration", "variance")
    for section in sections:
        report[section] = stats[section]
    if made_by != __version__:
        report["statistics"]["notes"].append(
            f"rescored by xleval {__version__} from a run made by xleval {made_by}"
        )
    report["languages"] = languages_info(list(dict.fromkeys((*spec.sources, *spec.targets))))
    report["schema_version"] = SCHEMA_VERSION
    report["xleval_version"] = __version__
    validate_report(report, f"rescored {run_dir}")
    return report

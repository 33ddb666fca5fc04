"""Builds the JSON report of a run (specs/report.schema.json), validates it and writes it.

The report carries what is needed to trust and reproduce the numbers: the resolved spec,
versions of everything that ran, the dataset fingerprint and counts, every cell with its
status and timings; and the statistics of :mod:`xleval.analysis.analyse` (aggregates with intervals
over seeds and test examples, paired comparisons with Holm-corrected p-values, and per
method the score over targets, transfer gap, ranks, win/tie/loss, learning curves and
break-even shots), worked out from the cells' stored predictions: no retraining, and the
same numbers each time.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import platform
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

from xleval import __version__
from xleval.analysis.analyse import analyse
from xleval.api.data import MultilingualDataset
from xleval.api.files import atomic_write_text
from xleval.api.languages import languages_info
from xleval.errors import XlevalError
from xleval.experiment.dataset_rules import warnings_for
from xleval.experiment.grid import Cell
from xleval.experiment.resources import load_schema
from xleval.experiment.spec import ExperimentSpec
from xleval.plugin.manager import XlevalPluginManager
from xleval.plugin.registry import schema_errors
from xleval.report.memo import analysis_key, memoised
from xleval.run.runner import RunOutcome
from xleval.train.checks import first_non_finite

#: 2: intervals and tests over seeds and test examples (xleval 0.2); 1: bootstrap-based.
SCHEMA_VERSION = 2


class ReportError(XlevalError):
    """A report that does not match specs/report.schema.json."""


def git_commit(cwd: Path | None = None) -> str | None:
    """The current git commit of ``cwd``, if it is inside a work tree (None otherwise)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def environment(pm: XlevalPluginManager, spec: ExperimentSpec | None = None) -> dict[str, Any]:
    from importlib import metadata

    from xleval.run.provenance import model_identity
    from xleval.train.rowkernel import row_kernel_available

    models: dict[str, Any] = {}
    for m in spec.methods if spec is not None else ():
        identity = model_identity(pm, m.model.name, m.model.options)
        if identity is not None:
            models[m.label] = identity
    return {
        **({"models": models} if models else {}),
        "python": sys.version.split()[0],
        "torch": metadata.version("torch"),
        "row_kernel": row_kernel_available(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "plugins": [
            {
                "name": r.name,
                "distribution": r.distribution,
                "version": r.version,
                "status": r.status,
            }
            for r in sorted(pm.records.values(), key=lambda r: r.name)
        ],
    }


def cell_entry(cell: Cell, key: str, result: dict[str, Any] | None) -> dict[str, Any]:
    """A cell as the report shows it (predictions live in predictions.jsonl, not here)."""
    entry: dict[str, Any] = {"key": key, **cell.to_json()}
    if result is None or result["status"] != "ok":
        # no result: not run, the run was interrupted or stopped early
        error = (
            "not run (the run was interrupted or stopped early)"
            if result is None
            else result["error"]
        )
        return entry | {
            "status": "not-run" if result is None else "failed",
            "metrics": {},
            "source_metrics": {},
            "train_seconds": None,
            "eval_seconds": None,
            "n_test": None,
            "error": error,
        }
    return entry | {
        "status": "ok",
        "metrics": result["metrics"],
        "source_metrics": result["source_metrics"],
        "train_seconds": result["train_seconds"],
        "eval_seconds": result["eval_seconds"],
        "n_test": result["n_test"],
        "error": None,
        "info": result.get("info", {}),
        **({"provenance": result["provenance"]} if result.get("provenance") else {}),
    }


def metric_components(pm: XlevalPluginManager, spec: ExperimentSpec) -> dict[str, Any]:
    """The spec's metrics, built (name -> component with ``compute`` and ``higher_is_better``)."""
    return {m.name: pm.registry.build("metrics", m.name, m.options) for m in spec.metrics}


def build_report(
    spec: ExperimentSpec,
    pm: XlevalPluginManager,
    dataset: MultilingualDataset,
    outcome: RunOutcome,
    run_dir: Path | None = None,
) -> dict[str, Any]:
    """The report of ``outcome``. With ``run_dir``, its statistics are reused from there
    while nothing they are computed from changed (:mod:`xleval.report.memo`), and kept
    there for the next time."""
    cells = [cell_entry(cell, key, outcome.results.get(key)) for cell, key in outcome.keys.items()]
    metrics = metric_components(pm, spec)

    def predictions(key: str, lang: str) -> Mapping[str, Any] | None:
        return (outcome.results.get(key) or {}).get("predictions", {}).get(lang)

    def compute() -> dict[str, Any]:
        return analyse(cells, spec, metrics, predictions, labels=dataset.labels)

    if run_dir is None:
        stats = compute()
    else:
        stats = memoised(run_dir, analysis_key(pm, spec, cells, dataset.labels), compute)
    report = {
        "schema_version": SCHEMA_VERSION,
        "xleval_version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "spec": spec.to_json(),
        "environment": environment(pm, spec),
        "dataset": {
            "name": dataset.name,
            "options": spec.dataset.options,
            "fingerprint": dataset.fingerprint,
            "labels": list(dataset.labels),
            "counts": dataset.counts(),
            "warnings": warnings_for(dataset.warnings, {*spec.sources, *spec.targets}),
        },
        "metrics": {
            m.name: {
                "higher_is_better": bool(metrics[m.name].higher_is_better),
                "options": m.options,
            }
            for m in spec.metrics
        },
        "languages": languages_info(list(dict.fromkeys((*spec.sources, *spec.targets)))),
        "cells": cells,
        "aggregates": stats["aggregates"],
        "comparisons": stats["comparisons"],
        "summary": stats["summary"],
        "statistics": stats["statistics"],
        "calibration": stats["calibration"],
        "variance": stats["variance"],
        "run": {
            "cells_total": len(outcome.keys),
            "cells_computed": outcome.computed,
            "cells_cached": outcome.cached,
            "cells_failed": sum(c["status"] == "failed" for c in cells),
            "cells_not_run": sum(c["status"] == "not-run" for c in cells),
            "wall_seconds": round(outcome.wall_seconds, 3),
            "interrupted": outcome.interrupted,
            "stopped": outcome.stopped,
            "corrupt_cache_entries": outcome.corrupt,
        },
    }
    validate_report(report)
    return report


@functools.cache
def _report_validator() -> Callable[[Any], Any]:
    import copy

    import fastjsonschema

    # a copy: compiling rewrites the schema's references in place, and load_schema's dict
    # is shared (jsonschema, given the rewritten ones, would try to fetch them)
    schema = copy.deepcopy(load_schema("report"))
    return cast(Callable[[Any], Any], fastjsonschema.compile(schema))


def validate_report(report: Any, source: str = "report") -> None:
    """Raise ReportError listing every way ``report`` breaks the report schema.

    A report is first checked by the schema compiled to Python (fastjsonschema: 0.1 s for
    the quickstart, where jsonschema takes 0.45 s and ~11 s for 5,000 cells); only one it
    rejects, or one with a non-finite number (which JSON cannot hold), goes through
    jsonschema, which lists every error with its path. Both read the same schema; a test
    holds them to the same verdict on reports damaged in every field.
    """
    import fastjsonschema

    try:
        _report_validator()(report)
    except fastjsonschema.JsonSchemaException:
        pass
    else:
        if first_non_finite(report) is None:
            return
    errors = schema_errors(load_schema("report"), report, root="(report)")
    if errors:
        raise ReportError(
            f"{source}: not a valid xleval report:\n" + "\n".join(f"  - {e}" for e in errors)
        )


def write_report(report: dict[str, Any], path: Path) -> None:
    """Write ``report`` as strict JSON (no NaN or Infinity tokens); ``build_report`` and
    ``rescore`` have validated it against the schema (once: it takes a while for big runs)."""
    where = first_non_finite(report)
    if where is not None:
        raise ReportError(f"report value at {where} is not a finite number; {path} not written")
    atomic_write_text(
        path, json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    )


def load_report_json(path: str | Path) -> tuple[Path, Any]:
    """The parsed JSON of a report file (a run directory means its report.json), unchecked."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"

    def refuse(token: str) -> Any:
        raise ValueError(f"{token} is not JSON (a number must be finite)")

    try:
        return path, json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ReportError(f"{path}: not a JSON report ({exc})") from None


def read_report(path: str | Path) -> dict[str, Any]:
    """Load and validate a report file (a run directory means its report.json).

    A report of another schema version is refused with the way to rebuild it: its numbers
    were made by other statistics, and mixing them with this version's would mislead.
    """
    path, report = load_report_json(path)
    version = report.get("schema_version") if isinstance(report, dict) else None
    if isinstance(version, int) and version != SCHEMA_VERSION and "xleval_version" in report:
        made_by = report["xleval_version"]
        raise ReportError(
            f"{path}: made by xleval {made_by} (report schema {version}); this is xleval "
            f"{__version__} (schema {SCHEMA_VERSION}). Rebuild it with 'xleval rescore "
            f"{path.parent}' (from its stored predictions, no retraining) or rerun the spec"
        )
    validate_report(report, str(path))
    return report

"""Builds the JSON report of a run (specs/report.schema.json), validates it and writes it.

The report carries what is needed to trust and reproduce the numbers: the resolved spec,
versions of everything that ran, the dataset fingerprint and counts, every cell with its
status and timings, and aggregates over seeds with confidence intervals.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import jsonschema

from xleval import __version__
from xleval.cache import atomic_write_text
from xleval.data import MultilingualDataset
from xleval.errors import XlevalError
from xleval.plugins import XlevalPluginManager
from xleval.registry import schema_errors
from xleval.resources import load_schema
from xleval.runner import Cell, RunOutcome
from xleval.spec import ExperimentSpec
from xleval.stats import mean_ci

SCHEMA_VERSION = 1


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


def environment(pm: XlevalPluginManager) -> dict[str, Any]:
    import torch

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
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
    if result is None:  # not run: the run was interrupted or stopped by --fail-fast
        return entry | {
            "status": "failed",
            "metrics": {},
            "source_metrics": {},
            "train_seconds": None,
            "eval_seconds": None,
            "n_test": None,
            "error": "not run (the run was interrupted or stopped early)",
        }
    if result["status"] != "ok":
        return entry | {
            "status": "failed",
            "metrics": {},
            "source_metrics": {},
            "train_seconds": None,
            "eval_seconds": None,
            "n_test": None,
            "error": result["error"],
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
    }


def aggregate(
    cells: list[dict[str, Any]], spec: ExperimentSpec, confidence: float
) -> list[dict[str, Any]]:
    """Mean, std and t-interval over seeds per (method, target, shots, metric).

    Zero-shot does not depend on k: its one value per seed is reported in every shots
    column, marked ``shots_independent``, so tables and comparisons line up.
    """
    values: dict[tuple[str, str, Any, str], list[float]] = defaultdict(list)
    independent = set()
    for c in cells:
        if c["status"] != "ok":
            continue
        columns = spec.shots if c["protocol"] == "zero-shot" else (c["shots"],)
        for shots in columns:
            for metric, value in c["metrics"].items():
                if value is not None:
                    values[(c["method"], c["target"], shots, metric)].append(value)
            if c["protocol"] == "zero-shot":
                independent.add((c["method"], c["target"], shots))
    order = {m.label: i for i, m in enumerate(spec.methods)}
    shots_order = {s: i for i, s in enumerate(spec.shots)}
    out = []
    for (method, target, shots, metric), vals in sorted(
        values.items(),
        key=lambda kv: (order[kv[0][0]], kv[0][1], shots_order.get(kv[0][2], 0), kv[0][3]),
    ):
        entry = {"method": method, "target": target, "shots": shots, "metric": metric}
        entry |= mean_ci(vals, confidence)
        if (method, target, shots) in independent:
            entry["shots_independent"] = True
        out.append(entry)
    return out


def summarize(cells: list[dict[str, Any]], spec: ExperimentSpec) -> dict[str, Any]:
    """Per method and shots: the main metric averaged over targets (XTREME-style, each
    target weighs the same) and the transfer gap (source score minus target score)."""
    metric = spec.main_metric
    per: dict[str, dict[Any, dict[str, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for c in cells:
        if c["status"] != "ok" or metric not in c["metrics"]:
            continue
        columns = spec.shots if c["protocol"] == "zero-shot" else (c["shots"],)
        source_scores = [m[metric] for m in c["source_metrics"].values() if metric in m]
        for shots in columns:
            per[c["method"]][shots][c["target"]].append(c["metrics"][metric])
            if source_scores:
                gap = sum(source_scores) / len(source_scores) - c["metrics"][metric]
                per[c["method"]][shots]["__gap__" + c["target"]].append(gap)
    summary: dict[str, Any] = {}
    for method in spec.methods:
        rows = {}
        for shots in spec.shots:
            by_target = per[method.label].get(shots)
            if not by_target:
                continue
            targets = [t for t in spec.targets if by_target.get(t)]
            means = {t: sum(by_target[t]) / len(by_target[t]) for t in targets}
            gaps = {
                t: sum(by_target["__gap__" + t]) / len(by_target["__gap__" + t])
                for t in targets
                if by_target.get("__gap__" + t)
            }
            rows[str(shots)] = {
                "score": sum(means.values()) / len(means),
                "per_target": means,
                "transfer_gap": sum(gaps.values()) / len(gaps) if gaps else None,
                "transfer_gap_per_target": gaps,
                "complete": len(targets) == len(spec.targets),
            }
        summary[method.label] = {"metric": metric, "by_shots": rows}
    return summary


def build_report(
    spec: ExperimentSpec,
    pm: XlevalPluginManager,
    dataset: MultilingualDataset,
    outcome: RunOutcome,
) -> dict[str, Any]:
    cells = [cell_entry(cell, key, outcome.results.get(key)) for cell, key in outcome.keys.items()]
    report = {
        "schema_version": SCHEMA_VERSION,
        "xleval_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "spec": spec.to_json(),
        "environment": environment(pm),
        "dataset": {
            "name": dataset.name,
            "options": spec.dataset.options,
            "fingerprint": dataset.fingerprint,
            "labels": list(dataset.labels),
            "counts": dataset.counts(),
            "warnings": list(dataset.warnings),
        },
        "metrics": {
            m.name: {
                "higher_is_better": bool(
                    pm.registry.build("metrics", m.name, m.options).higher_is_better
                ),
                "options": m.options,
            }
            for m in spec.metrics
        },
        "cells": cells,
        "aggregates": aggregate(cells, spec, spec.statistics["confidence"]),
        "comparisons": [],
        "summary": summarize(cells, spec),
        "run": {
            "cells_total": len(outcome.keys),
            "cells_computed": outcome.computed,
            "cells_cached": outcome.cached,
            "cells_failed": sum(c["status"] != "ok" for c in cells),
            "wall_seconds": round(outcome.wall_seconds, 3),
            "interrupted": outcome.interrupted,
            "corrupt_cache_entries": outcome.corrupt,
        },
    }
    validate_report(report)
    return report


def validate_report(report: Any, source: str = "report") -> None:
    """Raise ReportError listing every way ``report`` breaks the report schema."""
    errors = schema_errors(load_schema("report"), report, root="(report)")
    if errors:
        raise ReportError(
            f"{source}: not a valid xleval report:\n" + "\n".join(f"  - {e}" for e in errors)
        )


def write_report(report: dict[str, Any], path: Path) -> None:
    jsonschema.validate(report, load_schema("report"))
    atomic_write_text(path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")


def read_report(path: str | Path) -> dict[str, Any]:
    """Load and validate a report file (a run directory means its report.json)."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: not a JSON report ({exc})") from None
    validate_report(report, str(path))
    return report

"""The statistics of a run, kept next to it and reused while nothing they depend on changed.

Working out the statistics decodes every stored prediction and computes every metric per
example: seconds for the quickstart, minutes for thousands of cells. A rerun whose cells are
all cached, or a report rebuilt from an unchanged run, would compute the same numbers again.
So the run directory keeps the last statistics (``analysis.json``) under a key of everything
they are computed from:

* the code that computes them: the modules reached from :mod:`xleval.analysis.analyse` and
  the code of each metric plugin the spec uses (with xleval's version);
* the spec without its executor (where cells ran changes no number);
* the dataset's labels;
* each cell's key, status and metric values (a key fixes its stored predictions: it hashes
  the spec, the data and the code that computed the cell).

A memo under another key is ignored and replaced; an unreadable one is computed again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from xleval import __version__
from xleval.api.files import content_key, read_keyed, write_keyed
from xleval.experiment.spec import ExperimentSpec

MEMO_FILE = "analysis.json"
ANALYSIS_ROOTS = ("xleval.analysis.analyse",)


def analysis_code(pm: Any, spec: ExperimentSpec) -> dict[str, Any]:
    """Fingerprints of the code that computes a spec's statistics."""
    from xleval.run.provenance import component_code, fingerprint, module_closure

    metrics = {}
    for m in spec.metrics:
        identity, reached = component_code(pm, "metrics", m.name)
        metrics[m.name] = {"identity": identity, "core": fingerprint(reached)}
    return {
        "xleval": __version__,
        "analysis": fingerprint(module_closure(ANALYSIS_ROOTS, ["xleval"])),
        "metrics": metrics,
    }


def analysis_key(
    pm: Any, spec: ExperimentSpec, cells: Sequence[dict[str, Any]], labels: Sequence[str]
) -> str:
    """The key of the statistics of ``cells`` (report cell entries) under ``spec``."""
    spec_json = {k: v for k, v in spec.to_json().items() if k != "executor"}
    return content_key(
        {
            "code": analysis_code(pm, spec),
            "spec": spec_json,
            "labels": list(labels),
            "cells": [[c["key"], c["status"], c["metrics"], c["source_metrics"]] for c in cells],
        }
    )


def memoised(run_dir: Path, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``compute()``, or the statistics stored under ``key`` in ``run_dir``; stores what it
    computes."""
    path = Path(run_dir) / MEMO_FILE
    stats = read_keyed(path, key)
    if isinstance(stats, dict):
        return stats
    stats = compute()
    if path.parent.is_dir():
        write_keyed(path, key, stats)  # not kept if not JSON (a non-finite number)
    return stats

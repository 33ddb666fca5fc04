#!/usr/bin/env python3
"""The statistics and the reporters on synthetic runs of growing size: does the time grow no
faster than cells × test examples?

A synthetic run has the quickstart's five methods, shot counts and metrics, over more target
languages and seeds (14 cells per target and seed, as the quickstart). Every cell has
predictions of the real shape (``--examples`` test examples per language, 8 classes), drawn
so that methods, seeds and examples differ as on real data (each method its own accuracy, a
random effect per seed and per example); its metric values are computed from them by the
metric plugins, as a cell computes them. Each size runs in a fresh child process and prints
the time of the statistics (``build_report``: ``analyse`` and the report's assembly and
schema check), of writing report.json and of each reporter that writes a run file or the
summary. Run from the repository root::

    .venv/bin/python benchmarks/report_scaling.py                 # 168, 1,000, 5,000 cells
    .venv/bin/python benchmarks/report_scaling.py --cells 168 --examples 460
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, table

SCRIPT = Path(__file__).resolve()
CELLS_PER_TARGET_AND_SEED = 14  # the quickstart's: 280 cells = 4 targets x 5 seeds x 14
LABELS = [f"class-{i}" for i in range(8)]
#: logit shift of each method's correct class: they differ, as on real data
SKILL = {"target-only": 1.0, "zero-shot": 0.6, "transfer": 1.2, "fusion": 1.3, "joint": 1.25}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="168,1000,5000", help="approximate sizes")
    parser.add_argument("--examples", type=int, default=460, help="test examples a language")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def shape_for(cells: int) -> tuple[int, int]:
    """(targets, seeds) giving about ``cells`` cells: seeds up to 10, then more targets."""
    per = max(1, round(cells / CELLS_PER_TARGET_AND_SEED))
    seeds = 3 if per <= 12 else min(10, max(3, round(per**0.5)))
    return max(1, round(per / seeds)), seeds


def synthetic_run(targets: int, seeds: int, examples: int) -> tuple[Any, Any, Any, Any]:
    """(spec, plugin manager, dataset, outcome) of a finished synthetic run."""
    import numpy as np

    from xleval.api.data import Example, MultilingualDataset
    from xleval.api.predictions import encode_predictions
    from xleval.experiment.grid import expand_grid
    from xleval.experiment.spec import read_spec_file, resolve_spec
    from xleval.plugin.manager import get_plugin_manager
    from xleval.run.runner import RunOutcome, cell_key, key_payload
    from xleval.train.tensors import metric_inputs

    letters = "abcdefghijklmnopqrstuvwxyz"
    codes = (f"x{a}{b}" for a in letters for b in letters)  # language codes nobody uses
    languages = ["en", *itertools.islice(codes, targets)]
    pm = get_plugin_manager()
    # the quickstart's methods, shots and metrics; more targets and seeds, synthetic data
    raw = read_spec_file(ROOT / "specs" / "examples" / "quickstart.toml")
    raw.update(
        dataset={"name": "jsonl", "options": {"path": "synthetic.jsonl"}},
        targets=languages[1:],
        seeds=list(range(1, seeds + 1)),
    )
    spec = resolve_spec(raw, pm.registry)
    rows = [
        Example(f"{lang}-{i}", f"{lang}-{i}", lang, LABELS[i % len(LABELS)], "text", "test")
        for lang in languages
        for i in range(examples)
    ]
    dataset = MultilingualDataset("synthetic", tuple(rows))
    truth = np.array([i % len(LABELS) for i in range(examples)])
    rng = np.random.default_rng(0)
    hardness = {lang: rng.normal(0, 1.0, examples) for lang in languages}
    metrics = {m.name: pm.registry.build("metrics", m.name, m.options) for m in spec.metrics}
    ids = [f"x{i}" for i in range(examples)]

    def predictions(method: str, lang: str, seed: int, shots: Any) -> tuple[Any, Any]:
        local = np.random.default_rng(zlib.crc32(f"{method} {lang} {seed} {shots}".encode()))
        logits = local.normal(0, 1.0, (examples, len(LABELS)))
        boost = SKILL[method] + 0.1 * local.normal() + (0.2 if shots == 128 else 0.0)
        logits[np.arange(examples), truth] += boost + hardness[lang]
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        stored = encode_predictions(ids, truth, probs.astype(np.float32))
        y, p = metric_inputs(truth, probs.astype(np.float32))
        return stored, {name: float(metric.compute(y, p)) for name, metric in metrics.items()}

    outcome = RunOutcome(results={}, keys={})
    for cell in expand_grid(spec):
        key = cell_key(key_payload(spec, cell, "synthetic"), {})
        outcome.keys[cell] = key
        stored, values = predictions(cell.method, cell.target, cell.seed, cell.shots)
        result = {
            "cell": cell.to_json(),
            "status": "ok",
            "metrics": values,
            "source_metrics": {},
            "predictions": {cell.target: stored},
            "train_seconds": 0.1,
            "eval_seconds": 0.01,
            "n_test": examples,
            "info": {},
        }
        if spec.method(cell.method).learns_from_source and cell.sources:
            source = cell.sources[0]
            stored, values = predictions(cell.method, source, cell.seed, "all")
            result["source_metrics"] = {source: values}
            result["predictions"][source] = stored
        outcome.results[key] = result
        outcome.computed += 1
    return spec, pm, dataset, outcome


def child(request: dict[str, Any]) -> dict[str, Any]:
    from xleval.cli.run import summary_reporter
    from xleval.cli.state import CliState
    from xleval.report.build import build_report, write_report

    spec, pm, dataset, outcome = synthetic_run(
        request["targets"], request["seeds"], request["examples"]
    )
    times: dict[str, float] = {}
    mark = time.perf_counter()
    report = build_report(spec, pm, dataset, outcome)
    times["statistics (build_report)"] = time.perf_counter() - mark
    with tempfile.TemporaryDirectory() as tmp:
        mark = time.perf_counter()
        write_report(report, Path(tmp) / "report.json")
        times["report.json"] = time.perf_counter() - mark
        state = CliState(factory=lambda **_: pm, _pm=pm)
        names = [summary_reporter(state)] + [
            c.name
            for c in pm.registry.components("reporters")
            if isinstance(getattr(c.factory, "run_file", None), str)
        ]
        for name in names:
            reporter = pm.registry.build("reporters", name, {})
            run_file = getattr(reporter, "run_file", None)
            mark = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                reporter.write(report, str(Path(tmp) / run_file) if run_file else None)
            times[f"reporter {name}"] = time.perf_counter() - mark
    return {"cells": len(outcome.keys), "times": times}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        request = json.loads(Path(args.child).read_text())
        Path(request["out"]).write_text(json.dumps(child(request)))
        return
    print(f"{args.examples} test examples a language; {machine()}", flush=True)
    rows, results = [], []
    for size in [int(c) for c in args.cells.split(",")]:
        targets, seeds = shape_for(size)
        with tempfile.TemporaryDirectory() as tmp:
            request = {
                "targets": targets,
                "seeds": seeds,
                "examples": args.examples,
                "out": str(Path(tmp) / "out.json"),
            }
            Path(tmp, "request.json").write_text(json.dumps(request))
            subprocess.run(
                [sys.executable, str(SCRIPT), "--child", str(Path(tmp) / "request.json")],
                cwd=ROOT,
                check=True,
            )
            result = json.loads(Path(request["out"]).read_text())
        results.append(result)
        print(f"  {result['cells']} cells ({targets} targets x {seeds} seeds): done", flush=True)
    names = list(results[0]["times"])
    base = results[0]
    for result in results:
        units = result["cells"] * args.examples
        total = sum(result["times"].values())
        rows.append(
            [
                result["cells"],
                *(f"{result['times'][n]:.2f}" for n in names),
                f"{total:.2f}",
                f"{1e6 * total / units:.2f}",
                f"{(total / sum(base['times'].values())) / (result['cells'] / base['cells']):.2f}",
            ]
        )
    print()
    print(
        table(
            rows,
            [
                "cells",
                *(f"{n} s" for n in names),
                "total s",
                "µs per cell x example",
                "growth / cells growth",
            ],
        )
    )
    largest = results[-1]
    print(
        f"\nbar: {largest['cells']} cells in {sum(largest['times'].values()):.1f} s "
        "(<= 30 s for 5,000); growth / cells growth <= ~1 means linear or better"
    )


if __name__ == "__main__":
    main()

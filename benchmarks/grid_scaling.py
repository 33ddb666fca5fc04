#!/usr/bin/env python3
"""The quickstart grid with the ``processes`` executor at 1 and 2 workers: wall time,
speed-up, where the time goes, and peak memory.

Each run is a fresh child process doing what ``xleval run`` does (plugins, dataset, every
cell through the executor, statistics and report, predictions file), each phase timed; the
cells report their own phases (featurize, table init, training, transfer, evaluation,
artifact I/O, waiting for another worker's lock) in their ``info.timings``. Peak memory is
measured in separate, untimed runs (``--memory-rounds``; reading smaps costs CPU that a
timed 2-worker run would lose), sampled every 0.1 s over the child and all its workers:
the summed RSS (shared pages counted once per process) and the summed PSS (shared pages
split between the processes: what the run really holds). Rounds interleave the worker
counts; figures are medians. Run from the repository root::

    .venv/bin/python benchmarks/grid_scaling.py                 # quickstart, 3 rounds
    .venv/bin/python benchmarks/grid_scaling.py --rounds 1 --workers 1,2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, TreeMemorySampler, interleaved, machine, median, table

SCRIPT = Path(__file__).resolve()
CELL_PHASES = ("featurize", "init", "train", "transfer", "eval", "artifact_io", "lock_wait")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default=str(ROOT / "specs" / "examples" / "quickstart.toml"))
    parser.add_argument("--workers", default="1,2")
    parser.add_argument(
        "--executor",
        default="processes",
        help="processes, dask (a LocalCluster with one single-threaded worker process per "
        "worker) or both, comma-separated: interleaved in the same rounds, so their figures "
        "are compared under the same load",
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds")
    parser.add_argument(
        "--memory-rounds",
        type=int,
        default=1,
        help="extra runs per worker count that sample peak memory (not timed)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def child(request: dict[str, Any]) -> dict[str, Any]:
    """One ``xleval run``, phase by phase (what xleval.cli.run does)."""
    started = time.perf_counter()
    from xleval.experiment.dataset_rules import load_dataset
    from xleval.experiment.spec import read_spec_file, resolve_spec
    from xleval.plugin.manager import get_plugin_manager
    from xleval.report.build import build_report, write_report
    from xleval.run.runner import run_cells, write_predictions

    pm = get_plugin_manager()
    raw = read_spec_file(request["spec"])
    if request.get("executor", "processes") == "dask":
        options = {"n_workers": request["workers"], "threads_per_worker": 1}
        raw["executor"] = {"name": "dask", "options": options}
    else:
        raw["executor"] = {"name": "processes", "options": {"workers": request["workers"]}}
    spec = resolve_spec(raw, pm.registry, source=request["spec"])
    executor = pm.registry.build("executors", spec.executor.name, spec.executor.options)
    dataset = load_dataset(pm.registry, spec.dataset.name, spec.dataset.options)
    run_dir = Path(request["run_dir"])
    phases = {"startup": time.perf_counter() - started}

    mark = time.perf_counter()
    arrivals: list[tuple[float, float, str]] = []  # (arrived, task seconds, worker)

    def arrived(cell: Any, result: dict[str, Any]) -> None:
        seconds = result.get("info", {}).get("task_seconds")
        worker = result.get("provenance", {}).get("worker")
        if seconds is not None and worker is not None:
            arrivals.append((time.perf_counter() - mark, seconds, worker))

    outcome = run_cells(spec, pm, dataset, run_dir, executor=executor, on_result=arrived)
    phases["cells"] = time.perf_counter() - mark

    mark = time.perf_counter()
    report = build_report(spec, pm, dataset, outcome)
    phases["statistics"] = time.perf_counter() - mark

    mark = time.perf_counter()
    write_report(report, run_dir / "report.json")
    write_predictions(run_dir, outcome)
    with contextlib.redirect_stdout(io.StringIO()):
        pm.registry.build("reporters", "table", {}).write(report, None)
    phases["report_io"] = time.perf_counter() - mark
    phases["total"] = time.perf_counter() - started

    cell_phases = dict.fromkeys(CELL_PHASES, 0.0)
    metrics = {}
    busy = 0.0
    trained, reused = set(), {}
    for result in outcome.results.values():
        if result["status"] != "ok":
            continue
        busy += result["train_seconds"] + result["eval_seconds"]
        for name, seconds in result["info"].get("timings", {}).items():
            cell_phases[name] = cell_phases.get(name, 0.0) + seconds
        cell = result["cell"]
        label = f"{cell['method']} {cell['target']} k={cell['shots']} seed={cell['seed']}"
        metrics[label] = [result["metrics"], result["source_metrics"]]
        for entry in result["info"]["training"]:
            model = (result["cell"]["seed"], json.dumps(entry["train_set"]), entry["seconds"])
            if entry["cached"]:
                reused[model] = entry["seconds"]
            else:
                trained.add(model)
    return {
        "phases": phases,
        "idle": idle_times(arrivals, phases["cells"]),
        "cell_phases": cell_phases,
        "cell_busy": busy,
        # models no cell trained: the dask executor trains shared source models as tasks
        # of their own (the processes executor inside the first cell that needs one)
        "artifact_seconds": sum(s for m, s in reused.items() if m not in trained),
        "cells": len(outcome.results),
        "failed": len(outcome.failed),
        "metrics": metrics,
    }


def idle_times(arrivals: list[tuple[float, float, str]], cells_wall: float) -> dict[str, float]:
    """Where the workers idled during the cells phase, summed over workers: before their
    first task ("start": starting workers, checks, imports), between tasks ("between":
    scheduling, sending tasks and results) and after their last one ("end": waiting for
    the others to finish). A task's start is its result's arrival less its own duration
    (``info.task_seconds``), so the time a result takes to reach the driver counts as idle."""
    by_worker: dict[str, list[tuple[float, float]]] = {}
    for arrived, seconds, worker in arrivals:
        by_worker.setdefault(worker, []).append((arrived - seconds, arrived))
    idle = {"start": 0.0, "between": 0.0, "end": 0.0}
    for spans in by_worker.values():
        spans.sort()
        idle["start"] += max(0.0, spans[0][0])
        idle["between"] += sum(max(0.0, b[0] - a[1]) for a, b in itertools.pairwise(spans))
        idle["end"] += max(0.0, cells_wall - spans[-1][1])
    return idle


def run_once(
    spec: str, workers: int, executor: str = "processes", sample_memory: bool = False
) -> dict[str, Any]:
    """One child run. ``sample_memory``: read the process tree's smaps every 0.1 s (a few
    ms of kernel time per process each: it would steal CPU from the workers of a timed run,
    more so with 2 workers on 2 cores than with 1, so timed runs do not sample)."""
    with tempfile.TemporaryDirectory() as tmp:
        request = {
            "spec": spec,
            "workers": workers,
            "executor": executor,
            "run_dir": str(Path(tmp) / "run"),
            "out": str(Path(tmp) / "result.json"),
        }
        Path(tmp, "request.json").write_text(json.dumps(request))
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--child", str(Path(tmp) / "request.json")],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        if sample_memory:
            with TreeMemorySampler(process.pid) as memory:
                code = process.wait()
        else:
            code = process.wait()
        wall = time.perf_counter() - started
        if code != 0:
            raise RuntimeError(f"child run failed with exit code {code}")
        result = json.loads(Path(request["out"]).read_text())
    result["wall"] = wall
    if sample_memory:
        result.update(
            peak_rss_mb=memory.peak_rss_mb,
            peak_pss_mb=memory.peak_pss_mb,
            processes=memory.peak_processes,
        )
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        request = json.loads(Path(args.child).read_text())
        Path(request["out"]).write_text(json.dumps(child(request)))
        from xleval.cli.main import skip_final_collections

        skip_final_collections()  # as `xleval run` ends
        return
    workers = [int(w) for w in args.workers.split(",")]
    executors = args.executor.split(",")
    unknown = sorted(set(executors) - {"processes", "dask"})
    if unknown:
        raise SystemExit(f"--executor: unknown {', '.join(unknown)} (processes, dask)")
    print(
        f"{Path(args.spec).name}, {' and '.join(executors)} executor, workers {workers}; "
        f"{args.rounds} interleaved rounds, medians; {machine()}",
        flush=True,
    )
    configs = [(e, w) for w in workers for e in executors]
    runs = interleaved(
        args.rounds,
        configs,
        lambda c: run_once(args.spec, c[1], c[0]),
        lambda c: f"{c[0]} workers={c[1]}",
    )
    memory = interleaved(
        args.memory_rounds,
        configs,
        lambda c: run_once(args.spec, c[1], c[0], sample_memory=True),
        lambda c: f"{c[0]} workers={c[1]} (memory sampled, not timed)",
    )
    speedups = {}
    for executor in executors:
        if len(executors) > 1:
            print(f"\n=== {executor} executor ===")
        speedups[executor] = report(
            executor,
            workers,
            {w: runs[(executor, w)] for w in workers},
            {w: memory[(executor, w)] for w in workers},
        )
    if len(executors) > 1 and len(workers) > 1:
        w = workers[-1]
        walls = {e: median(r["wall"] for r in runs[(e, w)]) for e in executors}
        print(
            f"\nside by side at {w} workers: "
            + ", ".join(f"{e} {walls[e]:.1f} s ({speedups[e]:.2f}x)" for e in executors)
        )


def report(
    executor: str,
    workers: list[int],
    runs: dict[int, list[dict[str, Any]]],
    memory: dict[int, list[dict[str, Any]]],
) -> float:
    """Print one executor's tables; return its speed-up from the first to the last count."""
    base = median(r["wall"] for r in runs[workers[0]])
    rows = []
    for w in workers:
        rs = runs[w]
        wall = median(r["wall"] for r in rs)
        row = [f"{w} worker{'s' if w > 1 else ''}", f"{wall:.1f}", f"{base / wall:.2f}"]
        for name in ("startup", "cells", "statistics", "report_io"):
            row.append(f"{median(r['phases'][name] for r in rs):.1f}")
        ms = memory[w]
        row += [
            f"{median(r['peak_rss_mb'] for r in ms):.0f}" if ms else "-",
            f"{median(r['peak_pss_mb'] for r in ms):.0f}" if ms else "-",
            f"{max(r['peak_pss_mb'] for r in ms):.0f}" if ms else "-",
        ]
        rows.append(row)
    print()
    print(
        table(
            rows,
            [
                "run",
                "wall s",
                "speed-up",
                "startup s",
                "cells s",
                "statistics s",
                "report+I/O s",
                "peak RSS MB",
                "peak PSS MB",
                "max PSS MB",
            ],
        )
    )

    print("\nwhere the cells' time goes (summed over cells; per worker process it overlaps):")
    rows = []
    for w in workers:
        rs = runs[w]
        busy = median(r["cell_busy"] for r in rs)
        row = [f"{w} worker{'s' if w > 1 else ''}", f"{busy:.1f}"]
        for name in CELL_PHASES:
            seconds = median(r["cell_phases"].get(name, 0.0) for r in rs)
            row.append(f"{seconds:.1f} ({100 * seconds / busy:.0f}%)" if busy else "-")
        rows.append(row)
    print(table(rows, ["run", "cell s", *(f"{p} s" for p in CELL_PHASES)]))

    print("\nshare of the wall time (driver phases; cells = everything the workers did):")
    rows = []
    for w in workers:
        rs = runs[w]
        wall = median(r["wall"] for r in rs)
        busy = median(r["cell_busy"] for r in rs)
        cells = median(r["phases"]["cells"] for r in rs)
        phases = {
            name: median(r["cell_phases"].get(name, 0.0) for r in rs)
            for name in ("featurize", "init", "train", "transfer", "eval", "artifact_io")
        }
        # Cell phases scaled to the cells' share of the wall (they ran in parallel).
        scale = cells / busy if busy else 0.0
        share = {
            "featurization": phases["featurize"] * scale,
            "training (init+train+transfer)": (
                phases["init"] + phases["train"] + phases["transfer"]
            )
            * scale,
            "evaluation": phases["eval"] * scale,
            "statistics": median(r["phases"]["statistics"] for r in rs),
            "I/O (artifacts, report, predictions)": phases["artifact_io"] * scale
            + median(r["phases"]["report_io"] for r in rs),
        }
        share["other (startup, scheduling, waits)"] = wall - sum(share.values())
        rows.append(
            [f"{w} worker{'s' if w > 1 else ''}"]
            + [f"{v:.1f} s ({100 * v / wall:.0f}%)" for v in share.values()]
        )
    print(table(rows, ["run", *share]))

    print(
        "\noverhead of the executor: workers' idle time in the cells phase, summed over "
        "workers\n(start: before their first task; between: between tasks; end: after their "
        "last one, while another finishes)"
    )
    rows = []
    for w in workers:
        rs = runs[w]
        cells_wall = median(r["phases"]["cells"] for r in rs)
        work = median(r["cell_busy"] + r["artifact_seconds"] for r in rs)
        n = median(r["cells"] for r in rs)
        overhead = max(0.0, cells_wall * w - work) / n if n else 0.0
        idle = {k: median(r["idle"][k] for r in rs) for k in ("start", "between", "end")}
        per_cell = (idle["between"] + idle["end"]) / n if n else 0.0
        rows.append(
            [
                f"{w} worker{'s' if w > 1 else ''}",
                f"{n:.0f}",
                f"{median(r['artifact_seconds'] for r in rs):.1f}",
                f"{idle['start']:.2f}",
                f"{idle['between']:.2f}",
                f"{idle['end']:.2f}",
                f"{1000 * per_cell:.1f}",
                f"{1000 * overhead:.0f}",
            ]
        )
    print(
        table(
            rows,
            [
                "run",
                "cells",
                "artifact task s",
                "idle start s",
                "between s",
                "end s",
                "per cell ms ((between + end) / cells)",
                "all ms/cell ((cells s x workers - cell s - artifact task s) / cells)",
            ],
        )
    )

    every = [r for rs in (*runs.values(), *memory.values()) for r in rs]
    same = all(r["metrics"] == every[0]["metrics"] for r in every)
    print(f"\nmetrics bit-identical across worker counts and rounds: {'yes' if same else 'NO'}")
    for r in every:
        differing = [c for c, m in r["metrics"].items() if every[0]["metrics"].get(c) != m]
        for cell in differing[:5]:
            print(f"  differs: {cell}: {every[0]['metrics'].get(cell)} vs {r['metrics'][cell]}")
    speedup = 1.0
    if len(workers) > 1:
        w = workers[-1]
        speedup = base / median(r["wall"] for r in runs[w])
        sampled = [r for rs in memory.values() for r in rs]
        peak = max((r["peak_pss_mb"] for r in sampled), default=float("nan"))
        peak_rss = max((r["peak_rss_mb"] for r in sampled), default=float("nan"))
        # issue 7's memory bar is the processes executor's; a LocalCluster adds a
        # scheduler, nannies and a forkserver, and keeps shared models in dask's store
        memory_bar = " (<= 2048)" if executor == "processes" else ""
        # each round's own ratio: how far apart rounds of the same code land on this host
        pairs = zip(runs[workers[0]], runs[w], strict=True)  # interleaved: one pair a round
        ratios = [one["wall"] / more["wall"] for one, more in pairs]
        print("speed-up per round: " + ", ".join(f"{ratio:.2f}x" for ratio in ratios))
        print(
            f"bar: speed-up from {workers[0]} to {w} workers {speedup:.2f}x (>= 1.85); "
            f"peak memory {peak:.0f} MB PSS, {peak_rss:.0f} MB RSS summed{memory_bar}"
        )
    return speedup


if __name__ == "__main__":
    main()

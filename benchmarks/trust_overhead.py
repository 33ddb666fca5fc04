#!/usr/bin/env python3
"""What the trust checks of issue 16 cost a quickstart run, against the run's own time.

Each check is timed here, in one process, on the quickstart's real data and model size:
per run (the code fingerprints and key environments, the data rules, building every
component) and per cell (the source model's parameter fingerprint before and after a
transfer, the fused-probability check, converting metric values), multiplied by how many
cells of the grid do each. The total is compared with the time of a quickstart run read from
its report (``xleval run specs/examples/quickstart.toml`` first): the summed time of its
cells and its wall time. Run from the repository root::

    .venv/bin/python benchmarks/trust_overhead.py [--report runs/quickstart/report.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, median


def timed(fn, rounds: int = 5) -> float:
    """Median seconds of ``fn()`` over ``rounds`` calls."""
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)
    return median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default=str(ROOT / "specs" / "examples" / "quickstart.toml"))
    parser.add_argument("--report", default=str(ROOT / "runs" / "quickstart" / "report.json"))
    args = parser.parse_args()

    import torch

    from xleval.experiment.dataset_rules import check_dataset
    from xleval.experiment.grid import expand_grid
    from xleval.experiment.spec import check_components, load_spec
    from xleval.plugin.manager import get_plugin_manager
    from xleval.run import provenance
    from xleval.train import checks
    from xleval.train.artifacts import ArtifactCache
    from xleval.train.cell import RunningCell, run_cell
    from xleval.train.timer import PhaseTimer

    pm = get_plugin_manager()
    spec = load_spec(args.spec, pm.registry)
    dataset = pm.registry.build("datasets", spec.dataset.name, spec.dataset.options).load()
    cells = expand_grid(spec)

    def environments() -> None:
        provenance._core_modules.cache_clear()  # a fresh process computes them once
        provenance._file_facts.cache_clear()
        provenance.module_origin.cache_clear()
        provenance.method_environments(pm, spec)
        provenance.spec_environment(pm, spec)

    per_run = {
        "code fingerprints and key environments": timed(environments),
        "data rules": timed(lambda: check_dataset(dataset, "quickstart")),
        "building every component": timed(lambda: check_components(spec, pm.registry)),
    }

    # one trained source model of the quickstart's size, as transfer cells share it
    zero_shot = next(m for m in spec.methods if m.protocol == "zero-shot")
    method = zero_shot
    shared = ArtifactCache()
    started = time.perf_counter()
    result = run_cell(
        method,
        dataset,
        spec.sources,
        spec.targets[0],
        0,
        1,
        registry=pm.registry,
        artifacts=shared,
    )
    source_seconds = time.perf_counter() - started
    context = RunningCell(
        method,
        dataset,
        spec.sources,
        spec.targets[0],
        0,
        1,
        pm.registry,
        shared,
        PhaseTimer(),
    )
    model = context.trained([["split", lang] for lang in spec.sources], "source").model
    n_params = sum(p.numel() for p in model.parameters())
    n_test = max(result.n_test.values())
    probs = torch.softmax(torch.randn(n_test, len(dataset.labels)), dim=1)
    per_cell = {
        "source fingerprint, twice (transfer cells)": (
            timed(
                lambda: (checks.parameter_fingerprint(model), checks.parameter_fingerprint(model))
            ),
            sum(c.protocol == "transfer" for c in cells),
        ),
        "fused probabilities, target + source (fusion cells)": (
            2 * timed(lambda: checks.fused_probabilities("f", probs, n_test, probs.shape[1])),
            sum(c.protocol == "fusion" for c in cells),
        ),
        "metric values and model scores, target + source (every cell)": (
            2
            * timed(
                lambda: (
                    checks.metric_values({m.name: torch.tensor(0.5) for m in spec.metrics}),
                    checks.scores_shape("m", probs, n_test, probs.shape[1]),
                )
            ),
            len(cells),
        ),
    }
    rows = [[what, "per run", f"{s * 1000:.1f} ms", f"{s:.3f}"] for what, s in per_run.items()]
    rows += [
        [what, f"{n} cells", f"{s * 1000:.2f} ms", f"{s * n:.3f}"]
        for what, (s, n) in per_cell.items()
    ]
    total_driver = sum(per_run.values())
    total_cells = sum(s * n for s, n in per_cell.values())
    print(
        f"quickstart: {len(cells)} cells; source model {n_params / 1e6:.1f} M parameters, "
        f"trained and evaluated in {source_seconds:.1f} s here"
    )
    print("| check | how often | each | total s |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    report_path = Path(args.report)
    if not report_path.exists():
        print(f"\n(no {report_path}: run the quickstart first for the ratios)")
        return
    report = json.loads(report_path.read_text())
    cell_seconds = sum(
        c.get("info", {}).get("task_seconds") or 0.0 for c in report["cells"] if c["status"] == "ok"
    )
    wall = report["run"]["wall_seconds"]
    workers = max(1, round(cell_seconds / wall)) if wall else 1
    print(
        f"\nchecks inside cells: {total_cells:.2f} s against the cells' own {cell_seconds:.1f} s "
        f"= {total_cells / cell_seconds:.2%}\n"
        f"driver checks: {total_driver:.2f} s; with the cells' share spread over ~{workers} "
        f"workers, {total_driver + total_cells / workers:.2f} s against the run's "
        f"{wall:.1f} s wall = {(total_driver + total_cells / workers) / wall:.2%}"
    )


if __name__ == "__main__":
    main()

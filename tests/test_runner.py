"""End to end on a tiny spec: grid, cache and resume, failure isolation, rescore, determinism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from helpers import write_synthetic_dataset
from xleval_plugins.protocols import PROTOCOLS

from xleval.api.hookspecs import hookimpl
from xleval.cli.main import build_cli
from xleval.experiment.grid import Cell, expand_grid, order_for_sharing
from xleval.experiment.spec import resolve_spec
from xleval.plugin.manager import get_plugin_manager
from xleval.report.build import read_report

pytestmark = pytest.mark.usefixtures("clean_plugin_env")

METHODS = """
[[methods]]
protocol = "target-only"
[[methods]]
protocol = "zero-shot"
[[methods]]
protocol = "transfer"
[[methods]]
protocol = "fusion"
[[methods]]
protocol = "joint"
"""


def write_spec(tmp_path: Path, *, executor="local", epochs=5, extra_methods="", seeds=(1, 2)):
    data = write_synthetic_dataset(tmp_path / "syn.jsonl")
    spec = tmp_path / "tiny.toml"
    spec.write_text(
        f"""name = "tiny"
dataset = {{ name = "jsonl", options = {{ path = "{data}" }} }}
source = "en"
targets = ["de", "fr"]
shots = [0, 4]
seeds = {list(seeds)}
metrics = ["accuracy", "nll"]
executor = "{executor}"
model = {{ name = "bag-of-embeddings", options = {{ dim = 16, buckets = 20000 }} }}
training = {{ epochs = {epochs}, min_steps = 100 }}
{METHODS}{extra_methods}"""
    )
    return spec


def metrics_of(report: dict) -> dict:
    return {
        (c["method"], c["target"], c["shots"], c["seed"]): (c["metrics"], c["source_metrics"])
        for c in report["cells"]
    }


def run(args, *, cli=None):
    result = CliRunner().invoke(cli or build_cli(), args)
    return result


def test_grid_skips_what_does_not_apply(tmp_path):
    spec = resolve_spec(
        {
            "dataset": "jsonl" if False else {"name": "jsonl", "options": {"path": "x.jsonl"}},
            "source": "en",
            "targets": ["de", "fr"],
            "shots": [0, 8, 32],
            "seeds": [1, 2, 3],
            "methods": [
                {"protocol": p} for p in ("target-only", "zero-shot", "transfer", "fusion", "joint")
            ],
        },
        get_plugin_manager(strict=False).registry,
    )
    cells = expand_grid(spec)
    count = {}
    for c in cells:
        count[c.protocol] = count.get(c.protocol, 0) + 1
    # per target and seed: target-only/fusion/joint 2 (k>0), zero-shot 1, transfer 3
    assert count == {"target-only": 12, "zero-shot": 6, "transfer": 18, "fusion": 12, "joint": 12}
    assert {c.shots for c in cells if c.protocol == "zero-shot"} == {0}
    assert len(set(cells)) == len(cells)


def test_cells_run_source_models_first_then_longest_first():
    """Zero-shot cells (which train the source models) first, seeds fastest; then joint
    cells (a whole source split each); then by shots, most first, "all" before numbers."""
    cells = [
        Cell(f"{p}-{k}-{s}", p, ("en",), "de", k, s)
        for p, k in [("target-only", 8), ("transfer", 0), ("fusion", 128), ("joint", 8),
                     ("zero-shot", 0), ("transfer", "all"), ("joint", 32), ("target-only", 32)]
        for s in (2, 1)
    ]  # fmt: skip
    protocol_order = {c.method: PROTOCOLS[c.protocol][0].order for c in cells}
    order = [(c.protocol, c.shots, c.seed) for c in order_for_sharing(cells, protocol_order)]
    assert order == [
        ("zero-shot", 0, 1), ("zero-shot", 0, 2),
        ("joint", 32, 1), ("joint", 32, 2), ("joint", 8, 1), ("joint", 8, 2),
        ("transfer", "all", 1), ("transfer", "all", 2),
        ("fusion", 128, 1), ("fusion", 128, 2),
        ("target-only", 32, 1), ("target-only", 32, 2),
        ("target-only", 8, 1), ("target-only", 8, 2),
        ("transfer", 0, 1), ("transfer", 0, 2),
    ]  # fmt: skip


def test_run_writes_a_valid_report_and_rerun_recomputes_nothing(tmp_path):
    spec = write_spec(tmp_path)
    out = tmp_path / "run"
    first = run(["run", str(spec), "--out", str(out), "--quiet"])
    assert first.exit_code == 0, first.output
    report = read_report(out)
    assert report["run"]["cells_total"] == 24
    assert report["run"]["cells_computed"] == 24
    assert all(c["status"] == "ok" for c in report["cells"])
    assert "target-only" in first.output and "de k=4" in first.output
    # one source model per seed is trained and shared; shot-trained models are not kept
    assert len(list((out / "artifacts").glob("*.pt"))) == 2
    sources = [t for c in report["cells"] for t in c["info"]["training"] if t["role"] == "source"]
    assert sum(not t["cached"] for t in sources) == 2
    valid = run(["validate", str(out / "report.json")])
    assert valid.exit_code == 0 and "valid report (24 cells)" in valid.output

    second = run(["run", str(spec), "--out", str(out), "--quiet"])
    assert second.exit_code == 0, second.output
    again = read_report(out)
    assert again["run"]["cells_computed"] == 0
    assert again["run"]["cells_cached"] == 24
    assert metrics_of(again) == metrics_of(report)


def test_changing_one_method_recomputes_only_its_cells(tmp_path):
    spec = write_spec(tmp_path)
    out = tmp_path / "run"
    assert run(["run", str(spec), "--out", str(out), "-q"]).exit_code == 0
    text = spec.read_text().replace(
        'protocol = "joint"', 'protocol = "joint"\ntraining = { epochs = 6 }'
    )
    spec.write_text(text)
    assert run(["run", str(spec), "--out", str(out), "-q"]).exit_code == 0
    report = read_report(out)
    joint_cells = sum(c["method"] == "joint" for c in report["cells"])
    assert report["run"]["cells_computed"] == joint_cells == 4
    assert report["run"]["cells_cached"] == 20


def test_corrupt_cache_entry_is_recomputed_not_trusted(tmp_path):
    spec = write_spec(tmp_path)
    out = tmp_path / "run"
    assert run(["run", str(spec), "--out", str(out), "-q"]).exit_code == 0
    before = read_report(out)
    victims = sorted((out / "cells").glob("*.json"))[:2]
    victims[0].write_text(victims[0].read_text()[:100])  # truncated
    envelope = json.loads(victims[1].read_text())
    envelope["result"]["metrics"]["accuracy"] = 0.123  # edited: checksum no longer matches
    victims[1].write_text(json.dumps(envelope))
    result = run(["run", str(spec), "--out", str(out), "-q"])
    assert result.exit_code == 0
    assert "corrupt cache entry recomputed" in result.output
    after = read_report(out)
    assert after["run"]["cells_computed"] == 2
    assert metrics_of(after) == metrics_of(before)


class ExplodingFusion:
    """A third-party fusion strategy that always fails."""

    __name__ = "exploding"

    @hookimpl
    def xleval_register_fusion_strategies(self, register):
        def build(options):
            def fuse(scores):
                raise RuntimeError("fusion exploded")

            return SimpleNamespace(fuse=fuse)

        register("explode", build)


def test_failing_plugin_component_fails_only_its_cells(tmp_path):
    spec = write_spec(
        tmp_path,
        extra_methods='[[methods]]\nlabel = "broken"\nprotocol = "fusion"\nfusion = "explode"\n',
    )

    def factory(**kwargs):
        return get_plugin_manager(plugins=[ExplodingFusion()], **kwargs)

    out = tmp_path / "run"
    result = run(["run", str(spec), "--out", str(out), "-q"], cli=build_cli(factory))
    assert result.exit_code == 3
    report = read_report(out)
    failed = [c for c in report["cells"] if c["status"] == "failed"]
    assert {c["method"] for c in failed} == {"broken"}
    assert len(failed) == 4
    assert all(c["error"] == "RuntimeError: fusion exploded" for c in failed)
    assert sum(c["status"] == "ok" for c in report["cells"]) == 24
    assert "failed: broken en->de k=4 seed=1: RuntimeError: fusion exploded" in result.output


def test_fail_fast_stops_at_the_first_failure(tmp_path):
    spec = write_spec(
        tmp_path,
        extra_methods='[[methods]]\nlabel = "broken"\nprotocol = "fusion"\nfusion = "explode"\n',
    )

    def factory(**kwargs):
        return get_plugin_manager(plugins=[ExplodingFusion()], **kwargs)

    out = tmp_path / "run"
    result = run(["run", str(spec), "--out", str(out), "-q", "--fail-fast"], cli=build_cli(factory))
    assert result.exit_code == 3
    report = read_report(out)
    not_run = [c for c in report["cells"] if c["error"] and c["error"].startswith("not run")]
    assert not_run, "fail-fast should leave later cells unrun"


def test_rescore_reproduces_stored_metrics_exactly(tmp_path):
    spec = write_spec(tmp_path)
    out = tmp_path / "run"
    assert run(["run", str(spec), "--out", str(out), "-q"]).exit_code == 0
    result = run(["rescore", str(out)])
    assert result.exit_code == 0, result.output
    original = read_report(out)
    rescored = read_report(out / "report.rescored.json")
    assert metrics_of(rescored) == metrics_of(original)
    only_acc = run(
        ["rescore", str(out), "--metrics", "accuracy,brier", "-o", str(tmp_path / "b.json")]
    )
    assert only_acc.exit_code == 0, only_acc.output
    brier = read_report(tmp_path / "b.json")
    assert all(set(c["metrics"]) == {"accuracy", "brier"} for c in brier["cells"])


def test_same_spec_twice_gives_identical_metrics(tmp_path):
    spec = write_spec(tmp_path)
    assert run(["run", str(spec), "--out", str(tmp_path / "a"), "-q"]).exit_code == 0
    assert run(["run", str(spec), "--out", str(tmp_path / "b"), "-q"]).exit_code == 0
    assert metrics_of(read_report(tmp_path / "a")) == metrics_of(read_report(tmp_path / "b"))


def test_local_and_processes_executors_give_identical_metrics(tmp_path):
    spec = write_spec(tmp_path)
    assert run(["run", str(spec), "--out", str(tmp_path / "local"), "-q"]).exit_code == 0
    result = run(["run", str(spec), "--out", str(tmp_path / "procs"), "-q", "--jobs", "2"])
    assert result.exit_code == 0, result.output
    procs = read_report(tmp_path / "procs")
    assert procs["spec"]["executor"] == {
        "name": "processes",
        "options": {"workers": 2, "threads_per_worker": None, "start_method": None},
    }
    assert metrics_of(procs) == metrics_of(read_report(tmp_path / "local"))


def test_dry_run_prints_the_grid(tmp_path):
    result = run(["run", str(write_spec(tmp_path)), "--dry-run"])
    assert result.exit_code == 0
    assert "24 cells" in result.output
    assert not (tmp_path / "runs").exists()


def test_unknown_language_is_a_clear_error(tmp_path):
    spec = write_spec(tmp_path)
    spec.write_text(spec.read_text().replace('targets = ["de", "fr"]', 'targets = ["de", "ja"]'))
    result = run(["run", str(spec), "--out", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 1
    assert "error: dataset 'syn.jsonl' has no language(s) ja (it has: de, en, fr)" in result.output


@pytest.mark.slow
def test_resume_after_sigkill_finishes_only_missing_cells(tmp_path):
    spec = write_spec(tmp_path, epochs=60, seeds=(1, 2, 3))
    out = tmp_path / "run"
    command = [
        str(Path(sys.executable).parent / "xleval"),
        "run",
        str(spec),
        "--out",
        str(out),
        "--quiet",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("XLEVAL_")}
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if out.joinpath("cells").exists() and len(list(out.joinpath("cells").glob("*.json"))) >= 5:
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    done = len(list(out.joinpath("cells").glob("*.json")))
    assert 5 <= done < 36, f"the kill should land mid-run ({done} of 36 done)"
    assert not (out / "report.json").exists()

    result = run(["run", str(spec), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    resumed = read_report(out)
    assert resumed["run"]["cells_cached"] == done
    assert resumed["run"]["cells_computed"] == 36 - done

    assert run(["run", str(spec), "--out", str(tmp_path / "clean"), "-q"]).exit_code == 0
    assert metrics_of(resumed) == metrics_of(read_report(tmp_path / "clean"))


PLAN_ONLY = """
import sys
from pathlib import Path
from xleval.plugin.manager import get_plugin_manager
from xleval.run.runner import run_cells
from xleval.experiment.spec import read_spec_file, resolve_spec

class PlanOnly:
    '''Does in the driver what the dask executor does there: plan, never run, a cell.'''
    def map(self, fn, cells):
        cells = list(cells)
        fn = fn.for_cluster()
        jobs = [job.key for cell in cells for job in fn.artifact_jobs(cell)]
        shipped = fn.portable_dataset()
        print(len(cells), len(jobs) > 0, shipped is not None, "torch" in sys.modules)
        return iter(())

pm = get_plugin_manager()
spec = resolve_spec(read_spec_file(sys.argv[1]), pm.registry)
dataset = pm.registry.build("datasets", spec.dataset.name, spec.dataset.options).load()
run_cells(spec, pm, dataset, Path(sys.argv[2]), executor=PlanOnly())
print("torch" in sys.modules)
"""


def test_a_driver_that_only_plans_cells_never_imports_torch(tmp_path):
    """Keying cells, the source-model jobs and the dataset to ship need no torch: a dask
    run's driver starts its cluster at once instead of after torch's 1.3 s import (it
    imports torch for the statistics while the cluster starts). Fresh interpreter."""
    spec = write_spec(tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", PLAN_ONLY, str(spec), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        check=True,
    )
    planned, after = out.stdout.split("\n")[:2]
    cells, has_jobs, shipped, torch_loaded = planned.split()
    assert int(cells) > 0 and has_jobs == "True" and shipped == "True"
    assert (torch_loaded, after) == ("False", "False")

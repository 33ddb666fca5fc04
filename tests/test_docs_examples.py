"""The code in docs/hooks.md runs and does what the text says."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest
from helpers import write_synthetic_dataset

from xleval.experiment.spec import read_spec_file, resolve_spec
from xleval.plugin.manager import get_plugin_manager
from xleval.run.runner import run_cells

DOCS = Path(__file__).resolve().parent.parent / "docs" / "hooks.md"


def docs_block(containing: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    (block,) = [b for b in blocks if containing in b]
    return block


def docs_module(containing: str) -> types.ModuleType:
    module = types.ModuleType("docs_example")
    module.__name__ = "docs_example"
    exec("from xleval.api import hookimpl\n" + docs_block(containing), module.__dict__)
    return module


@pytest.mark.slow
def test_the_executor_example_gives_the_local_executors_results(tmp_path):
    """The documented executor runs cells in spawned processes (cells are not thread-safe):
    every cell's metrics equal an in-process run's, bit for bit."""
    data = write_synthetic_dataset(tmp_path / "syn.jsonl", groups_per_label=8)
    spec_file = tmp_path / "s.toml"
    spec_file.write_text(
        f"""dataset = {{ name = "jsonl", options = {{ path = "{data}" }} }}
source = "en"
targets = ["de"]
shots = [2, 4]
seeds = [1, 2]
executor = {{ name = "spawn-pool", options = {{ workers = 2 }} }}
model = {{ name = "bag-of-embeddings", options = {{ dim = 8, buckets = 2000 }} }}
training = {{ epochs = 2, min_steps = 0 }}
[[methods]]
protocol = "zero-shot"
[[methods]]
protocol = "transfer"
[[methods]]
protocol = "fusion"
"""
    )
    example = docs_module("class SpawnPool")
    pm = get_plugin_manager(plugins=[example])
    spec = resolve_spec(read_spec_file(spec_file), pm.registry)
    dataset = pm.registry.build("datasets", spec.dataset.name, spec.dataset.options).load()
    pool = pm.registry.build("executors", "spawn-pool", spec.executor.options)
    pooled = run_cells(spec, pm, dataset, tmp_path / "pool", executor=pool)
    local = pm.registry.build("executors", "local", {})
    alone = run_cells(spec, pm, dataset, tmp_path / "local", executor=local)
    assert not pooled.failed and pooled.computed == len(alone.results) == 10
    assert {k: r["metrics"] for k, r in pooled.results.items()} == {
        k: r["metrics"] for k, r in alone.results.items()
    }
    assert {r["provenance"]["worker"] for r in pooled.results.values()} != {
        r["provenance"]["worker"] for r in alone.results.values()
    }  # really other processes

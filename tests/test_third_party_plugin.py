"""A real third-party package (tests/fixtures), installed with pip, found through entry points."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import write_synthetic_dataset, xleval_subprocess

from xleval.errors import PluginLoadError
from xleval.plugin.manager import get_plugin_manager

pytestmark = pytest.mark.usefixtures("clean_plugin_env")


def test_fixture_package_is_discovered_with_its_distribution(with_plugin_site):
    pm = get_plugin_manager(strict=False)
    record = pm.records["example"]
    assert record.status == "ok"
    assert (record.distribution, record.version) == ("xleval-example-plugin", "1.2.0")
    assert record.to_json()["components"] == {
        "metrics": ["top_k_accuracy"],
        "fusion_strategies": ["majority-vote"],
        "protocols": ["prior-shift"],
    }


def test_fixture_components_work_through_the_registry(with_plugin_site):
    registry = get_plugin_manager(strict=False).registry
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.6, 0.1, 0.3]])
    y_true = torch.tensor([1, 0, 2])
    top2 = registry.build("metrics", "top_k_accuracy")
    assert top2.higher_is_better is True
    assert top2.compute(y_true, probs) == pytest.approx(2 / 3)
    assert registry.build("metrics", "top_k_accuracy", {"k": 1}).compute(y_true, probs) == 0.0

    scores = torch.tensor([[[2.0, 0.0]], [[0.0, 1.0]], [[3.0, 1.0]]])  # 3 models, 1 example
    fused = registry.build("fusion_strategies", "majority-vote").fuse(scores)
    assert torch.allclose(fused, torch.tensor([[2 / 3, 1 / 3]]))


def test_broken_package_is_isolated_and_reported(with_plugin_site):
    pm = get_plugin_manager(strict=False)
    record = pm.records["broken"]
    assert record.status == "failed"
    assert record.distribution == "xleval-broken-plugin"
    assert record.error == (
        "ImportError: xleval_broken_plugin needs the package 'not-installed-anywhere'"
    )
    assert pm.records["example"].status == "ok"
    with pytest.raises(PluginLoadError, match="not-installed-anywhere"):
        pm.registry.get("metrics", "needs_broken")


def test_broken_package_is_fatal_in_strict_mode(with_plugin_site):
    with pytest.raises(PluginLoadError, match="'broken': ImportError"):
        get_plugin_manager(strict=True)


def test_cli_lists_fixture_and_broken_plugin(plugin_site):
    result = xleval_subprocess(["plugins"], pythonpath=plugin_site)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    example = next(line for line in lines if line.startswith("example "))
    assert "xleval-example-plugin" in example and "1.2.0" in example and " ok" in example
    assert "fusion strategy: majority-vote" in example
    assert "metric: top_k_accuracy" in result.stdout
    broken = next(line for line in lines if line.startswith("broken "))
    assert "failed: ImportError: xleval_broken_plugin" in broken


def test_cli_json_lists_them_for_machines(plugin_site):
    result = xleval_subprocess(["plugins", "--json"], pythonpath=plugin_site)
    records = {r["name"]: r for r in json.loads(result.stdout)}
    assert records["example"]["components"] == {
        "fusion_strategies": ["majority-vote"],
        "metrics": ["top_k_accuracy"],
        "protocols": ["prior-shift"],
    }
    assert records["broken"]["status"] == "failed"


def test_cli_strict_mode_is_one_line_error_without_traceback(plugin_site):
    result = xleval_subprocess(["plugins"], pythonpath=plugin_site, XLEVAL_STRICT_PLUGINS="1")
    assert result.returncode == 1
    assert result.stderr.startswith("error: plugin problems (XLEVAL_STRICT_PLUGINS is set):")
    assert "'broken': ImportError" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_can_disable_the_broken_plugin(plugin_site):
    result = xleval_subprocess(
        [
            "--strict-plugins",
            "--disable-plugin",
            "broken",
            "--disable-plugin",
            "exits",
            "plugins",
            "--json",
        ],
        pythonpath=plugin_site,
    )
    assert result.returncode == 0, result.stderr
    records = {r["name"]: r for r in json.loads(result.stdout)}
    assert records["broken"]["status"] == "disabled"
    assert records["example"]["status"] == "ok"


@pytest.mark.slow
def test_a_third_party_protocol_runs_next_to_the_bundled_ones(plugin_site, tmp_path):
    """The fixture's 'prior-shift' protocol, with an option, in a spec beside the five
    bundled methods: its cells run, are cached, compared with target-only in the report,
    and a rerun recomputes nothing."""
    data = write_synthetic_dataset(tmp_path / "syn.jsonl", groups_per_label=10)
    spec = tmp_path / "mixed.toml"
    spec.write_text(
        f"""name = "mixed"
dataset = {{ name = "jsonl", options = {{ path = "{data}" }} }}
source = "en"
targets = ["de"]
shots = [0, 4]
seeds = [1, 2]
executor = "local"
model = {{ name = "bag-of-embeddings", options = {{ dim = 8, buckets = 2000 }} }}
training = {{ epochs = 2, min_steps = 0 }}
[[methods]]
protocol = "target-only"
[[methods]]
protocol = "zero-shot"
[[methods]]
protocol = "transfer"
[[methods]]
protocol = "prior-shift"
options = {{ smoothing = 0.5 }}
"""
    )
    out = tmp_path / "run"
    first = xleval_subprocess(["run", str(spec), "--out", str(out)], pythonpath=plugin_site)
    assert first.returncode == 0, first.stderr
    report = json.loads((out / "report.json").read_text())
    shifted = [c for c in report["cells"] if c["method"] == "prior-shift"]
    assert [(c["shots"], c["status"]) for c in shifted] == [(4, "ok"), (4, "ok")]
    assert all(
        len(c["info"]["log_prior_shift"]) == len(report["dataset"]["labels"]) for c in shifted
    )
    components = shifted[0]["provenance"]["environment"]["components"]
    assert components["protocols/prior-shift"]["distribution"] == "xleval-example-plugin"
    planned = {(c["a"], c["b"]) for c in report["comparisons"] if c["family"] == "planned"}
    assert ("prior-shift", "target-only") in planned
    again = xleval_subprocess(["run", str(spec), "--out", str(out)], pythonpath=plugin_site)
    assert again.returncode == 0, again.stderr
    assert "0 computed" in again.stderr + again.stdout

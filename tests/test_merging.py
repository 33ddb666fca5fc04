"""The ``merge`` protocol: weight-space merging next to score fusion and joint training."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from helpers import write_synthetic_dataset
from xleval_plugins.merging import merge_state_dicts

from xleval.cli.main import build_cli
from xleval.errors import MethodError
from xleval.report.build import read_report

pytestmark = pytest.mark.usefixtures("clean_plugin_env")


def test_average_weighted_average_and_task_arithmetic_on_hand_made_weights():
    base = {"w": torch.tensor([1.0, 1.0]), "steps": torch.tensor([7])}
    a = {"w": torch.tensor([3.0, 1.0]), "steps": torch.tensor([9])}
    b = {"w": torch.tensor([1.0, 5.0]), "steps": torch.tensor([8])}
    merged = merge_state_dicts(base, [a, b], how="average")
    assert torch.equal(merged["w"], torch.tensor([2.0, 3.0]))
    assert torch.equal(merged["steps"], torch.tensor([7]))  # integers: the base's
    weighted = merge_state_dicts(base, [a, b], how="average", weights=[3.0, 1.0])
    assert torch.allclose(weighted["w"], torch.tensor([2.5, 2.0]))
    arithmetic = merge_state_dicts(base, [a, b], how="task-arithmetic", scale=0.5)
    # base + 0.5 * ((a - base) + (b - base)) = [1, 1] + 0.5 * ([2, 0] + [0, 4])
    assert torch.equal(arithmetic["w"], torch.tensor([2.0, 3.0]))
    full = merge_state_dicts(base, [a, b], how="task-arithmetic", scale=1.0)
    assert torch.equal(full["w"], torch.tensor([3.0, 5.0]))


def test_members_of_other_shapes_or_names_are_refused():
    base = {"w": torch.zeros(2)}
    with pytest.raises(MethodError, match=r"'w' is \(3,\) in member 0"):
        merge_state_dicts(base, [{"w": torch.zeros(3)}], how="average")
    with pytest.raises(MethodError, match="other parameters"):
        merge_state_dicts(base, [{"v": torch.zeros(2)}], how="average")
    with pytest.raises(MethodError, match="one weight per member"):
        merge_state_dicts(base, [{"w": torch.zeros(2)}], how="average", weights=[0.0])


def spec_text(data, model: str, sources: str = '["en"]', methods: str = "") -> str:
    return f"""name = "merge"
dataset = {{ name = "jsonl", options = {{ path = "{data}" }} }}
source = {sources}
targets = ["de"]
shots = [0, 4]
seeds = [1, 2]
metrics = ["accuracy"]
executor = "local"
model = {model}
training = {{ epochs = 3, min_steps = 30 }}
[[methods]]
protocol = "merge"
{methods}"""


BAG = '{ name = "bag-of-embeddings", options = { dim = 16, buckets = 20000 } }'


def test_a_model_whose_shapes_depend_on_its_texts_is_refused_at_validate_time(tmp_path):
    data = write_synthetic_dataset(tmp_path / "syn.jsonl", groups_per_label=6)
    spec = tmp_path / "s.toml"
    spec.write_text(spec_text(data, '"embedding-linear"'))
    result = CliRunner().invoke(build_cli(), ["validate", str(spec), "--no-data"])
    assert result.exit_code != 0
    assert "method 'merge'" in result.output and "cannot be merged" in result.output
    assert "Traceback" not in result.output
    spec.write_text(spec_text(data, BAG))
    assert CliRunner().invoke(build_cli(), ["validate", str(spec)]).exit_code == 0


def test_merge_runs_next_to_fusion_and_joint_with_one_and_two_sources(tmp_path):
    data = write_synthetic_dataset(tmp_path / "syn.jsonl", groups_per_label=10)
    others = """[[methods]]
protocol = "fusion"
[[methods]]
protocol = "joint"
[[methods]]
label = "task-arithmetic"
protocol = "merge"
options = { how = "task-arithmetic", scale = 0.5, base = "joint" }
"""
    for sources in ('["en"]', '["en", "fr"]'):
        spec = tmp_path / "s.toml"
        spec.write_text(spec_text(data, BAG, sources, others))
        out = tmp_path / f"run-{len(sources)}"
        result = CliRunner().invoke(build_cli(), ["run", str(spec), "--out", str(out), "-q"])
        assert result.exit_code == 0, result.output
        report = read_report(out / "report.json")
        cells = {(c["method"], c["shots"], c["seed"]): c for c in report["cells"]}
        assert all(c["status"] == "ok" for c in cells.values())
        two = sources != '["en"]'
        # one source at k = 0: the only member would be the source model (no cell)
        assert (("merge", 0, 1) in cells) == two
        merged = cells[("merge", 4, 1)]["info"]["merged_models"]
        assert merged == (["en", "fr", "de"] if two else ["en", "de"])
        assert cells[("task-arithmetic", 4, 1)]["info"]["merged_models"] == merged
        for c in cells.values():  # every method learned the synthetic labels
            assert c["metrics"]["accuracy"] > 0.5, (c["method"], c["metrics"])
        methods = {c["method"] for c in report["cells"]}
        assert methods == {"merge", "fusion", "joint", "task-arithmetic"}
        assert json.dumps(report["comparisons"])  # compared with the others in one report

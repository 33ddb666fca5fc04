"""Plugin outputs are checked where xleval takes them: each mistake fails its own cell, named."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import write_synthetic_dataset, xleval_subprocess

from xleval.report.build import ReportError, read_report, write_report
from xleval.train import checks
from xleval.train.checks import PluginOutputError

pytestmark = pytest.mark.usefixtures("clean_plugin_env")


@pytest.mark.parametrize(
    "value, expected",
    [
        (torch.tensor(0.25), 0.25),
        (torch.tensor([0.5]), 0.5),
        (np.float64(0.75), 0.75),
        (np.float32(0.5), 0.5),
        (1, 1.0),
        (0.125, 0.125),
    ],
)
def test_metric_numbers_become_python_floats(value, expected):
    converted = checks.metric_value("m", value)
    assert type(converted) is float and converted == expected


@pytest.mark.parametrize(
    "value, words",
    [
        (float("nan"), "metric 'm' returned nan: metrics must be finite"),
        (float("inf"), "metric 'm' returned inf"),
        (torch.tensor(float("nan")), "returned nan"),
        (torch.tensor([0.1, 0.2]), "Tensor with 2 values, not one number"),
        ([0.1, 0.2], "returned list [0.1, 0.2], not a number"),
        ("0.5", "returned str '0.5', not a number"),
        (True, "returned bool True, not a number"),
        (None, "returned NoneType None"),
    ],
)
def test_metric_values_that_are_not_one_finite_number_are_refused(value, words):
    with pytest.raises(PluginOutputError) as caught:
        checks.metric_value("m", value)
    assert words in str(caught.value)


def test_fused_probabilities_must_be_rows_summing_to_one():
    probs = torch.softmax(torch.randn(5, 3), dim=1)
    checks.fused_probabilities("f", probs, 5, 3)  # passes
    with pytest.raises(PluginOutputError, match=r"negative values .*not log-probabilities"):
        checks.fused_probabilities("f", probs.log(), 5, 3)
    with pytest.raises(PluginOutputError, match=r"row \d sums to 2\): fusion must return probab"):
        checks.fused_probabilities("f", probs * 2, 5, 3)
    with pytest.raises(PluginOutputError, match=r"shape \[5, 2\] .* expected \[5, 3\]"):
        checks.fused_probabilities("f", probs[:, :2], 5, 3)
    with pytest.raises(PluginOutputError, match="NaN"):
        checks.fused_probabilities("f", probs.masked_fill(probs > 0.5, float("nan")), 5, 3)
    with pytest.raises(PluginOutputError, match="infinite"):
        checks.fused_probabilities("f", probs.masked_fill(probs > 0.5, float("inf")), 5, 3)
    within = probs.clone()
    within[:, 0] += 5e-5  # float rounding of a softmax is far smaller; still accepted
    checks.fused_probabilities("f", within, 5, 3)


def test_the_source_fingerprint_sees_every_kind_of_in_place_change():
    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Embedding(50, 4), torch.nn.Linear(4, 3))

    def changed(edit) -> bool:
        m = model()
        before = checks.parameter_fingerprint(m)
        edit(m)
        return checks.parameter_fingerprint(m) != before

    assert not changed(lambda m: m(torch.tensor([1, 2])))  # using it changes nothing
    assert changed(lambda m: m[1].weight.data.mul_(0.5))  # .data: no version bump, sum moves
    with torch.no_grad():
        assert changed(lambda m: m[0].weight.add_(1.0))
        assert changed(lambda m: m[1].weight.numpy().__setitem__((0, 0), 7.0))
    assert changed(lambda m: setattr(m[1], "bias", torch.nn.Parameter(m[1].bias.clone())))
    with pytest.raises(PluginOutputError, match=r"transfer strategy 't' changed the source"):
        checks.source_unchanged("t", (("w", 1),), (("w", 2),))


def test_json_values_are_converted_or_refused_with_their_place():
    assert checks.json_value("x", {"a": torch.tensor(3), "b": np.arange(2), "c": (1.5,)}) == {
        "a": 3,
        "b": [0, 1],
        "c": [1.5],
    }
    with pytest.raises(PluginOutputError, match=r"x returned nan at a\.b\[1\]"):
        checks.json_value("x", {"a": {"b": [0.0, math.nan]}})
    with pytest.raises(PluginOutputError, match=r"x returned object at z: not JSON data"):
        checks.json_value("x", {"z": object()})


def test_a_report_with_nan_is_not_written_and_not_valid(tmp_path, finished_report):
    report = json.loads(json.dumps(finished_report))
    report["cells"][0]["metrics"]["accuracy"] = float("nan")
    with pytest.raises(ReportError, match=r"report value at cells\[0\]\.metrics\.accuracy"):
        write_report(report, tmp_path / "report.json")
    assert not (tmp_path / "report.json").exists()
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(report), encoding="utf-8")  # Python writes NaN by default
    with pytest.raises(ReportError, match="NaN is not JSON"):
        read_report(path)
    result = xleval_subprocess(["validate", str(path)])
    assert result.returncode == 1 and "NaN is not JSON" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def finished_report(tmp_path_factory):
    from test_runner import write_spec

    tmp = tmp_path_factory.mktemp("finished")
    spec = write_spec(tmp, seeds=(1,))
    done = xleval_subprocess(["run", str(spec), "--out", str(tmp / "run"), "-q"])
    assert done.returncode == 0, done.stderr
    return json.loads((tmp / "run" / "report.json").read_text(encoding="utf-8"))


MISBEHAVING_SPEC = """
name = "misbehaving"
dataset = {{ name = "jsonl", options = {{ path = "{data}" }} }}
source = "en"
targets = ["de"]
shots = [4]
seeds = [1]
metrics = {metrics}
model = {{ name = "bag-of-embeddings", options = {{ dim = 8, buckets = 2000 }} }}
training = {{ epochs = 3, min_steps = 100 }}

[[methods]]
protocol = "target-only"
[[methods]]
label = "fusion-logprob"
protocol = "fusion"
fusion = "log-prob-mean"
[[methods]]
label = "transfer-in-place"
protocol = "transfer"
transfer = "in-place"
[[methods]]
label = "transfer-tensor-report"
protocol = "transfer"
transfer = "tensor-report"
[[methods]]
label = "wrong-shape"
protocol = "target-only"
model = "wrong-shape"
"""


def run_misbehaving(tmp_path, plugin_site, metrics):
    data = write_synthetic_dataset(tmp_path / "syn.jsonl", groups_per_label=12)
    spec = tmp_path / "spec.toml"
    spec.write_text(MISBEHAVING_SPEC.format(data=data, metrics=json.dumps(metrics)))
    result = xleval_subprocess(
        ["run", str(spec), "--out", str(tmp_path / "run"), "-q"], pythonpath=plugin_site
    )
    text = (tmp_path / "run" / "report.json").read_text(encoding="utf-8")
    report = json.loads(text, parse_constant=lambda token: pytest.fail(f"{token} in report"))
    return result, {c["method"]: c for c in report["cells"]}


def test_each_misbehaving_component_fails_only_its_cells(tmp_path, plugin_site):
    result, cells = run_misbehaving(tmp_path, plugin_site, ["accuracy", "tensor_accuracy"])
    assert result.returncode == 3, result.stderr  # cells failed; the run and report went on
    assert "Traceback" not in result.stderr
    ok = cells["target-only"]
    assert ok["status"] == "ok"
    assert isinstance(ok["metrics"]["tensor_accuracy"], float)
    assert ok["metrics"]["tensor_accuracy"] == ok["metrics"]["accuracy"]
    reported = cells["transfer-tensor-report"]
    assert reported["status"] == "ok" and reported["info"]["transfer"] == {"copied": 0}
    assert (
        "fusion strategy 'log-prob-mean' returned negative values"
        in (cells["fusion-logprob"]["error"])
    )
    assert (
        "transfer strategy 'in-place' changed the source model in place"
        in (cells["transfer-in-place"]["error"])
    )
    assert "model 'wrong-shape' returned scores of shape" in cells["wrong-shape"]["error"]
    for method in ("fusion-logprob", "transfer-in-place", "wrong-shape"):
        assert f"failed: {method}" in result.stderr


def test_a_nan_metric_fails_its_cells_and_the_report_stays_json(tmp_path, plugin_site):
    result, cells = run_misbehaving(tmp_path, plugin_site, ["accuracy", "nan_metric"])
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert "metric 'nan_metric' returned nan" in cells["target-only"]["error"]
    assert not list((tmp_path / "run" / "cells").glob("*.json"))  # nothing wrong was cached
    again = xleval_subprocess(["validate", str(tmp_path / "run" / "report.json")])
    assert again.returncode == 0, again.stderr
    page = (tmp_path / "run" / "report.html").read_text()  # every cell failed: it still renders
    assert "metric &#39;nan_metric&#39; returned nan" in page

"""The run-side commands: validate, init, report, compare, and examples that stay valid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import copy_run
from test_runner import metrics_of, write_spec

from xleval.cli.main import build_cli
from xleval.experiment.resources import specs_dir
from xleval.experiment.spec import read_spec_file
from xleval.report.build import read_report

pytestmark = pytest.mark.usefixtures("clean_plugin_env")
EXAMPLES = sorted(p.name for p in (specs_dir() / "examples").iterdir() if p.name.endswith(".toml"))


def invoke(*args):
    return CliRunner().invoke(build_cli(), list(args))


#: Examples whose data come from the Hugging Face Hub: no network here, so their data are
#: not loaded (their loader's local paths are tested in tests/test_hf.py).
HUB_EXAMPLES = {"xlmr-sib200.toml"}


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_spec_is_valid(name):
    offline = ("--no-data",) if name in HUB_EXAMPLES else ()
    result = invoke("validate", str(specs_dir() / "examples" / name), *offline)
    assert result.exit_code == 0, result.output
    assert "is a valid experiment spec" in result.output


def test_validate_without_data_builds_the_components_but_loads_nothing(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(
        'dataset = { name = "jsonl", options = { path = "missing.jsonl" } }\n'
        'source = "en"\ntargets = ["de"]\nshots = [4]\nseeds = [1]\n'
        '[[methods]]\nprotocol = "transfer"\n'
    )
    assert invoke("validate", str(spec)).exit_code != 0  # the data file is missing
    result = invoke("validate", str(spec), "--no-data")
    assert result.exit_code == 0, result.output
    assert "the data not loaded" in result.output
    spec.write_text(spec.read_text().replace('"transfer"', '"transfer"\ntransfer = "nope"'))
    assert invoke("validate", str(spec), "--no-data").exit_code != 0  # components still built


def test_examples_include_the_quickstart_and_focused_ones():
    assert {
        "quickstart.toml",
        "fusion-strategies.toml",
        "transfer-strategies.toml",
        "user-jsonl.toml",
    } <= set(EXAMPLES)
    quickstart = read_spec_file(specs_dir() / "examples" / "quickstart.toml")
    assert quickstart["targets"] == ["de", "fr", "ja", "ru"]
    assert quickstart["shots"] == [0, 8, 32, 128]
    assert len(quickstart["seeds"]) == 5  # enough for the paired tests to show something
    assert {m["protocol"] for m in quickstart["methods"]} == {
        "target-only",
        "zero-shot",
        "transfer",
        "fusion",
        "joint",
    }
    result = invoke("run", str(specs_dir() / "examples" / "quickstart.toml"), "--dry-run")
    assert "280 cells" in result.output


def test_relative_dataset_path_is_read_from_the_spec_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = read_spec_file(specs_dir() / "examples" / "user-jsonl.toml")
    path = Path(raw["dataset"]["options"]["path"])
    assert path.is_absolute() and path.exists()
    assert path.name == "debian-descriptions.jsonl"


def test_invalid_spec_lists_every_error_and_exits_non_zero(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'dataset = "ddtp-sections"\nsource = "en"\ntargets = []\nshots = [-1]\n'
        '[[methods]]\nprotocol = "zero-shoot"\n'
    )
    result = invoke("validate", str(bad))
    assert result.exit_code == 1
    assert f"error: {bad}: 3 errors:" in result.output
    assert "at 'targets': [] should be non-empty" in result.output
    assert "at 'shots[0]': -1 is less than the minimum of 0" in result.output
    assert (
        "at 'methods[0].protocol': unknown protocol 'zero-shoot'; did you mean 'zero-shot'?"
        in result.output
    )
    assert "Traceback" not in result.output


def test_init_writes_a_valid_starter_and_refuses_to_overwrite(tmp_path):
    target = tmp_path / "exp.toml"
    assert invoke("init", str(target)).exit_code == 0
    assert invoke("validate", str(target)).exit_code == 0
    again = invoke("init", str(target))
    assert again.exit_code == 1 and "exists; use --force" in again.output


@pytest.fixture(scope="module")
def finished_run(tiny_run, tmp_path_factory):
    return copy_run(tiny_run, tmp_path_factory.mktemp("run"))


def test_report_formats(finished_run, tmp_path):
    table = invoke("report", str(finished_run))
    assert table.exit_code == 0 and "* best in column" in table.output
    markdown = invoke("report", str(finished_run / "report.json"), "--format", "markdown")
    assert "| method" in markdown.output and "|---" in markdown.output.replace(":", "-")
    out = tmp_path / "copy.json"
    assert invoke("report", str(finished_run), "--format", "json", "-o", str(out)).exit_code == 0
    assert json.loads(out.read_text()) == read_report(finished_run)
    bad = invoke("report", str(finished_run), "--format", "pdf")
    assert bad.exit_code == 1 and "unknown reporter 'pdf'" in bad.output


def test_report_rejects_a_file_that_is_not_a_report(tmp_path):
    fake = tmp_path / "report.json"
    fake.write_text(json.dumps({"schema_version": 1}))
    result = invoke("validate", str(fake))
    assert result.exit_code == 1
    assert "not a valid xleval report" in result.output
    assert "'cells' is a required property" in result.output


def test_compare_puts_two_reports_side_by_side(finished_run, tmp_path):
    changed = read_report(finished_run)
    entry = next(
        a
        for a in changed["aggregates"]
        if (a["method"], a["target"], a["shots"], a["metric"]) == ("joint", "fr", 4, "accuracy")
    )
    entry["mean"] -= 0.25
    (tmp_path / "b.json").write_text(json.dumps(changed))
    result = invoke("compare", str(finished_run), str(tmp_path / "b.json"))
    assert result.exit_code == 0, result.output
    rows = {tuple(line.split()[:3]): line.split()[-1] for line in result.output.splitlines()[3:]}
    assert rows[("joint", "fr", "4")] == "-0.2500"
    assert rows[("transfer", "de", "0")] == "+0.0000"
    assert len(rows) == len([a for a in changed["aggregates"] if a["metric"] == "accuracy"])


@pytest.mark.slow
def test_sigint_keeps_finished_cells_and_resume_completes(tmp_path):
    spec = write_spec(tmp_path, epochs=60, seeds=(1, 2, 3))
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("XLEVAL_")}
    child = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "xleval"),
            "run",
            str(spec),
            "--out",
            str(out),
            "-q",
            "--jobs",
            "2",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if out.joinpath("cells").exists() and len(list(out.joinpath("cells").glob("*.json"))) >= 4:
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 130, stderr
    assert "interrupted: finished cells are kept" in stderr
    partial = read_report(out)
    assert partial["run"]["interrupted"] is True
    done = partial["run"]["cells_computed"]
    assert 4 <= done < 36
    result = CliRunner().invoke(build_cli(), ["run", str(spec), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    final = read_report(out)
    assert final["run"]["cells_cached"] >= done
    assert final["run"]["cells_cached"] + final["run"]["cells_computed"] == 36
    assert all(c["status"] == "ok" for c in final["cells"])
    assert metrics_of(final)


def test_one_seed_runs_warns_once_and_marks_nothing(tmp_path):
    spec = write_spec(tmp_path, seeds=(1,))
    result = CliRunner().invoke(build_cli(), ["run", str(spec), "--out", str(tmp_path / "r"), "-q"])
    assert result.exit_code == 0, result.output
    assert result.output.count("warning: one seed") == 1
    assert "3 or more seeds" in result.output
    assert "no marks: with one seed nothing is tested" in result.output
    table = [line for line in result.output.splitlines() if line.startswith(("target", "zero"))]
    assert table and not any(line.rstrip().endswith(("*", "=")) for line in table)
    report = read_report(tmp_path / "r")
    assert {c["status"] for c in report["comparisons"]} <= {"not-testable", "identical"}
    assert all(c["significant"] is None for c in report["comparisons"])
    validate = invoke("validate", str(spec))
    assert validate.exit_code == 0 and "warning: one seed" in validate.output


def test_a_class_with_fewer_than_k_rows_is_printed_marked_and_reported(tmp_path):
    rows = []
    for lang, train in (("en", {"a": 20, "b": 20}), ("de", {"a": 10, "b": 2})):
        for label, count in train.items():
            for split, n in (("train", count), ("test", 10)):
                for i in range(n):
                    word = f"{label}{i % 3}" if lang == "en" else f"{label}x{i % 3}"
                    row_id = f"{lang}-{label}-{split}-{i}"
                    rows.append({"id": row_id, "lang": lang, "label": label, "split": split,
                                 "text": f"{word} common"})  # fmt: skip
    data = tmp_path / "short.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = tmp_path / "short.toml"
    spec.write_text(
        f'dataset = {{ name = "jsonl", options = {{ path = "{data}" }} }}\nsource = "en"\n'
        'targets = ["de"]\nshots = [4]\nseeds = [1, 2, 3]\nmetrics = ["accuracy"]\n'
        'model = { name = "bag-of-embeddings", options = { dim = 8, buckets = 1000 } }\n'
        '[[methods]]\nprotocol = "target-only"\n[[methods]]\nprotocol = "joint"\n'
    )
    result = CliRunner().invoke(build_cli(), ["run", str(spec), "--out", str(tmp_path / "r"), "-q"])
    assert result.exit_code == 0, result.output
    assert "warning: de k=4: fewer than k training rows ('b' 2 short)" in result.output
    assert "trained on 3.0 examples per class" in result.output
    rows = [
        line for line in result.output.splitlines() if line.startswith(("target-only", "joint"))
    ]
    assert len(rows) == 2 and all("†" in row for row in rows)
    assert "† a class had fewer than k training rows" in result.output
    report = read_report(tmp_path / "r")
    (entry,) = [a for a in report["aggregates"] if a["method"] == "target-only"]
    assert entry["shortfall"] == {"b": 2} and entry["mean_shots_per_class"] == 3.0
    html = (tmp_path / "r" / "report.html").read_text()
    assert "Fewer training examples than k" in html and "b: 2 short" in html

"""The statistics kept next to a run (analysis.json): reused while nothing they are computed
from changed, computed again as soon as anything did, and the report the same bytes."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from test_runner import write_spec

from xleval.cli.main import build_cli
from xleval.report import build, memo

pytestmark = pytest.mark.usefixtures("clean_plugin_env")


def run(*args):
    result = CliRunner().invoke(build_cli(), ["run", *map(str, args), "-q"])
    assert result.exit_code == 0, result.output
    return result


def without_run(text):
    """A report without what differs between a run and its cached rerun: when it was made
    and the run section (wall time, how many cells were computed rather than cached)."""
    report = json.loads(text)
    report.pop("created")
    report.pop("run")
    return report


@pytest.fixture
def counted(monkeypatch):
    calls = []
    real = build.analyse
    monkeypatch.setattr(build, "analyse", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_a_cached_rerun_reuses_the_statistics_and_writes_the_same_report(tmp_path, counted):
    spec = write_spec(tmp_path)
    out = tmp_path / "run"
    run(spec, "--out", out)
    assert counted == [1] and (out / memo.MEMO_FILE).is_file()
    first = (out / "report.json").read_text(encoding="utf-8")
    run(spec, "--out", out)
    assert counted == [1]  # not computed again
    second = (out / "report.json").read_text(encoding="utf-8")
    assert without_run(second) == without_run(first)
    assert json.loads(second)["run"]["cells_cached"] == json.loads(first)["run"]["cells_computed"]


def test_the_same_statistics_computed_or_reused_are_the_same_bytes(tmp_path):
    """The report built from the memo is byte for byte the one built by computing."""
    from xleval_plugins.executors import LocalExecutor

    from xleval.experiment.spec import read_spec_file, resolve_spec
    from xleval.plugin.manager import get_plugin_manager
    from xleval.run.runner import run_cells

    pm = get_plugin_manager()
    spec = resolve_spec(read_spec_file(write_spec(tmp_path, seeds=(1, 2, 3))), pm.registry)
    dataset = pm.registry.build("datasets", spec.dataset.name, spec.dataset.options).load()
    outcome = run_cells(spec, pm, dataset, tmp_path / "run", executor=LocalExecutor({}))
    reports = [
        build.build_report(spec, pm, dataset, outcome, run_dir)
        for run_dir in (None, tmp_path / "run", tmp_path / "run")
    ]
    texts = []
    for report in reports:
        report["created"] = "fixed"
        build.write_report(report, tmp_path / "report.json")
        texts.append((tmp_path / "report.json").read_bytes())
    assert texts[0] == texts[1] == texts[2]
    assert json.loads((tmp_path / "run" / memo.MEMO_FILE).read_text())["value"]["comparisons"]


@pytest.mark.parametrize(
    "change",
    ["spec", "code", "damaged memo", "other memo"],
)
def test_the_statistics_are_computed_again_when_anything_they_depend_on_changed(
    tmp_path, counted, monkeypatch, change
):
    spec = write_spec(tmp_path)
    out = tmp_path / "run"
    run(spec, "--out", out)
    assert counted == [1]
    if change == "spec":  # another confidence level: other intervals, same cells
        spec.write_text(spec.read_text() + "\n[statistics]\nconfidence = 0.9\n")
    elif change == "code":
        real = memo.analysis_code
        monkeypatch.setattr(memo, "analysis_code", lambda pm, s: {**real(pm, s), "edited": 1})
    elif change == "damaged memo":
        (out / memo.MEMO_FILE).write_text('{"key": "', encoding="utf-8")
    else:
        (out / memo.MEMO_FILE).write_text('{"key": "x", "value": {}}', encoding="utf-8")
    run(spec, "--out", out)
    assert counted == [1, 1]
    stored = json.loads((out / memo.MEMO_FILE).read_text())
    report = json.loads((out / "report.json").read_text())
    assert stored["value"]["comparisons"] == report["comparisons"]


def test_the_key_covers_each_cells_values_and_not_where_it_ran():
    from xleval.experiment.spec import resolve_spec
    from xleval.plugin.manager import get_plugin_manager

    pm = get_plugin_manager()
    raw = {
        "dataset": {"name": "jsonl", "options": {"path": "d.jsonl"}},
        "source": "en",
        "targets": ["de"],
        "methods": [{"protocol": "target-only"}],
    }
    spec = resolve_spec(raw, pm.registry)
    elsewhere = resolve_spec({**raw, "executor": "processes"}, pm.registry)
    cells = [{"key": "a", "status": "ok", "metrics": {"accuracy": 0.5}, "source_metrics": {}}]
    key = memo.analysis_key(pm, spec, cells, ["x", "y"])
    assert memo.analysis_key(pm, elsewhere, cells, ["x", "y"]) == key
    changed = [{**cells[0], "metrics": {"accuracy": 0.25}}]
    assert memo.analysis_key(pm, spec, changed, ["x", "y"]) != key
    assert memo.analysis_key(pm, spec, cells, ["y", "x"]) != key


def test_a_cached_rerun_does_not_import_torch(tmp_path):
    """Nothing to train, nothing to decode: a rerun whose cells are all cached reads them,
    reuses the statistics and writes the report without importing torch (1.2 s)."""
    import subprocess
    import sys

    spec = write_spec(tmp_path)
    out = tmp_path / "run"
    run(spec, "--out", out)
    script = (
        "import sys\n"
        "from xleval.cli.main import main\n"
        f"sys.argv = ['xleval', 'run', {str(spec)!r}, '--out', {str(out)!r}, '-q']\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert "0 computed" in done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False", done.stdout

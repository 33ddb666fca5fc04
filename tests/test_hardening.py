"""Runs, specs and data that used to end wrong or in a traceback (issue 17)."""

from __future__ import annotations

import json

import pytest
from helpers import write_synthetic_dataset, xleval_subprocess
from test_runner import write_spec

from xleval.errors import SpecError
from xleval.experiment.spec import resolve_spec
from xleval.plugin.manager import get_plugin_manager

pytestmark = pytest.mark.usefixtures("clean_plugin_env")


def minimal(**extra):
    return {
        "dataset": {"name": "jsonl", "options": {"path": "x.jsonl"}},
        "source": "en",
        "targets": ["de"],
        "methods": [{"protocol": "target-only"}],
        **extra,
    }


@pytest.mark.parametrize(
    "extra, where",
    [
        ({"training": {"lr": float("nan")}}, "at 'training.lr': nan is not a finite number"),
        ({"statistics": {"confidence": float("nan")}}, "at 'statistics.confidence': nan"),
        (
            {
                "methods": [
                    {
                        "protocol": "fusion",
                        "fusion": {"name": "exp-sum", "options": {"weights": [1.0, float("inf")]}},
                    }
                ]
            },
            "at 'methods[0].fusion.options.weights[1]': inf is not a finite number",
        ),
        ({"training": {"weight_decay": float("-inf")}}, "at 'training.weight_decay': -inf"),
    ],
)
def test_non_finite_numbers_in_a_spec_are_refused_at_their_path(extra, where):
    registry = get_plugin_manager(strict=False).registry
    with pytest.raises(SpecError) as caught:
        resolve_spec(minimal(**extra), registry)
    assert where in str(caught.value)


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/abs", "a/b", "nul\x00byte", ".hidden", ""])
def test_the_spec_name_is_a_safe_directory_name(name):
    registry = get_plugin_manager(strict=False).registry
    with pytest.raises(SpecError, match="at 'name'"):
        resolve_spec(minimal(name=name), registry)


def test_a_spec_file_without_a_name_gets_a_safe_one(tmp_path):
    registry = get_plugin_manager(strict=False).registry
    spec = resolve_spec(minimal(), registry, source=str(tmp_path / "my spec (v2).toml"))
    assert spec.name == "my-spec-v2"


def test_a_diverging_training_fails_its_cells_naming_epoch_and_step(tmp_path):
    spec = write_spec(tmp_path, seeds=(1,))
    text = spec.read_text().replace(
        "training = { epochs = 5, min_steps = 100 }",
        'training = { epochs = 5, min_steps = 100, lr = 1e30, optimizer = "sgd" }',
    )
    spec.write_text(text)
    done = xleval_subprocess(["run", str(spec), "--out", str(tmp_path / "run"), "-q"])
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    errors = {c["error"] for c in report["cells"] if c["status"] == "failed"}
    assert len(errors) >= 2, report["cells"]  # most cells diverge (one may fit before it can)
    for error in errors:
        assert error.startswith("diverged: the training loss was nan at epoch "), error
        assert "(optimizer sgd, lr 1e+30, " in error and "lower the learning rate" in error
    for cell in report["cells"]:
        assert all(v == v for v in cell["metrics"].values())  # no NaN reached the report


def test_a_language_without_test_examples_is_refused_before_training(tmp_path):
    rows = []
    for line in write_synthetic_dataset(tmp_path / "syn.jsonl").read_text().splitlines():
        row = json.loads(line)
        row["split"] = "test" if int(row["group"].rsplit("-", 1)[1]) % 3 == 0 else "train"
        if row["lang"] != "de" or row["split"] == "train":  # German: no test rows at all
            rows.append(row)
    data = tmp_path / "no-de-test.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = write_spec(tmp_path, seeds=(1,))
    spec.write_text(spec.read_text().replace(str(tmp_path / "syn.jsonl"), str(data)))
    for command in (["validate", str(spec)], ["run", str(spec), "--out", str(tmp_path / "r")]):
        done = xleval_subprocess(command)
        assert done.returncode == 1, done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert errors == [
            "error: dataset 'no-de-test.jsonl': too few test examples to evaluate on (at least 2 "
            "needed): de (target): 0"
        ], done.stderr
    assert not (tmp_path / "r" / "cells").exists()


@pytest.mark.slow
def test_predictions_are_byte_identical_computed_or_resumed(tmp_path):
    spec = write_spec(tmp_path, seeds=(1,))
    fresh = xleval_subprocess(["run", str(spec), "--out", str(tmp_path / "a"), "-q"])
    assert fresh.returncode == 0, fresh.stderr
    again = xleval_subprocess(["run", str(spec), "--out", str(tmp_path / "a"), "-q"])
    assert again.returncode == 0, again.stderr
    first = (tmp_path / "a" / "predictions.jsonl").read_bytes()
    resumed_dir = tmp_path / "b"
    (resumed_dir / "cells").mkdir(parents=True)
    cells = sorted((tmp_path / "a" / "cells").glob("*.json"))
    for path in cells[: len(cells) // 2]:  # half cached, half computed
        (resumed_dir / "cells" / path.name).write_bytes(path.read_bytes())
    half = xleval_subprocess(["run", str(spec), "--out", str(resumed_dir), "-q"])
    assert half.returncode == 0, half.stderr
    assert (tmp_path / "a" / "predictions.jsonl").read_bytes() == first
    assert (resumed_dir / "predictions.jsonl").read_bytes() == first


KILLS_SPEC = """
name = "kills"
dataset = {{ name = "jsonl", options = {{ path = "{data}" }} }}
source = "en"
targets = ["de", "fr"]
shots = [4, 8]
seeds = [1, 2]
model = "counts"
training = {{ epochs = 2, min_steps = 10 }}

[[methods]]
protocol = "target-only"
[[methods]]
label = "dies"
protocol = "target-only"
model = {{ name = "kills-worker", options = {{ marker = {marker} }} }}
"""


@pytest.mark.slow
@pytest.mark.parametrize("once", [True, False])
def test_a_dead_worker_costs_only_its_cell(tmp_path, plugin_site, once):
    data = write_synthetic_dataset(tmp_path / "syn.jsonl", groups_per_label=10)
    marker = json.dumps(str(tmp_path / "died")) if once else '"' + str(tmp_path / "d") + '"'
    spec = tmp_path / "spec.toml"
    text = KILLS_SPEC.format(data=data, marker=marker)
    if not once:  # every build of the 'dies' model kills its worker
        text = text.replace(f"options = {{ marker = {marker} }}", "options = {}")
    spec.write_text(text)
    done = xleval_subprocess(
        ["run", str(spec), "--out", str(tmp_path / "run"), "-q", "--jobs", "2"],
        pythonpath=plugin_site,
    )
    assert "Traceback" not in done.stderr and "BrokenProcessPool" not in done.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    by_method = {}
    for cell in report["cells"]:
        by_method.setdefault(cell["method"], []).append(cell)
    assert all(c["status"] == "ok" for c in by_method["target-only"])  # never lost
    if once:
        assert done.returncode == 0, done.stderr
        assert all(c["status"] == "ok" for c in by_method["dies"])
    else:
        assert done.returncode == 3, done.stderr
        for cell in by_method["dies"]:
            assert cell["status"] == "failed"
            assert cell["error"].startswith("its worker process died 3 times while computing it")


# -- run directories -----------------------------------------------------------------------


def run_cli(spec, out, *extra):
    return xleval_subprocess(["run", str(spec), "--out", str(out), "-q", *extra])


def one_error(done) -> str:
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    return errors[0]


@pytest.mark.slow
def test_a_run_directory_in_use_is_refused_naming_the_holder(tmp_path):
    import os

    from xleval.run.rundir import RunDirectory

    spec = write_spec(tmp_path, seeds=(1,))
    with RunDirectory.open(tmp_path / "run"):
        error = one_error(run_cli(spec, tmp_path / "run"))
    assert error == (
        f"error: {tmp_path / 'run'} is in use by another xleval run (pid {os.getpid()}); wait "
        "for it to finish or choose another --out"
    )
    assert run_cli(spec, tmp_path / "run").returncode == 0  # released with the holder


@pytest.mark.slow
def test_foreign_folders_and_files_are_never_written_over(tmp_path):
    spec = write_spec(tmp_path, seeds=(1,))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own notes")
    error = one_error(run_cli(spec, mine))
    assert "is not empty and is not an xleval run directory" in error and "--force" in error
    (mine / "report.json").write_text("{}")
    error = one_error(run_cli(spec, mine, "--force"))
    assert "report.json exist(s) and were not written by xleval" in error
    (mine / "report.json").unlink()
    done = run_cli(spec, mine, "--force")
    assert done.returncode == 0, done.stderr
    assert (mine / "notes.txt").read_text() == "my own notes"
    assert (mine / ".xleval-run").is_file()
    assert run_cli(spec, mine).returncode == 0  # now it is a run directory


def test_leftover_temporary_files_are_removed_and_damaged_files_recomputed(tmp_path):
    spec = write_spec(tmp_path, seeds=(1,))
    out = tmp_path / "run"
    assert run_cli(spec, out).returncode == 0
    leftovers = [
        out / "artifacts" / ".abc.pt.x1y2.tmp",
        out / "cells" / ".abc.json.q9.tmp",
        out / "plots" / ".learning_curves.svg.zz.tmp",
        out / ".report.json.aa.tmp",
    ]
    for path in leftovers:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"partial")
    cell = sorted((out / "cells").glob("*.json"))[0]
    envelope = json.loads(cell.read_text())
    del envelope["result"]["status"]  # a consistent checksum over a result missing a field
    import hashlib

    from xleval.api.files import canonical_json

    body = canonical_json(envelope["result"])
    envelope["sha256"] = hashlib.sha256(body.encode()).hexdigest()
    cell.write_text(json.dumps(envelope))
    done = run_cli(spec, out)
    assert done.returncode == 0, done.stderr
    assert not any(path.exists() for path in leftovers)
    assert f"warning: corrupt cache entry recomputed: {cell}" in done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["run"]["cells_computed"] == 1


@pytest.mark.parametrize("damage", ["out-below-a-file", "cells-is-a-file", "report-is-a-dir"])
def test_filesystem_faults_are_one_line(tmp_path, damage):
    spec = write_spec(tmp_path, seeds=(1,))
    out = tmp_path / "run"
    if damage == "out-below-a-file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "run"
    elif damage == "cells-is-a-file":
        out.mkdir()
        (out / ".xleval-run").write_text("{}")
        (out / "cells").write_text("x")
    else:
        assert run_cli(spec, out).returncode == 0
        (out / "report.json").unlink()
        (out / "report.json").mkdir()
    error = one_error(run_cli(spec, out))
    assert str(tmp_path) in error


def test_an_unwritable_out_is_found_before_any_cell(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root may write anywhere")
    spec = write_spec(tmp_path, seeds=(1,))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        error = one_error(run_cli(spec, locked / "run"))
    finally:
        locked.chmod(0o700)
    assert "Permission denied" in error


def test_validate_a_missing_file_and_rescore_damaged_predictions(tmp_path):
    error = one_error(xleval_subprocess(["validate", str(tmp_path / "missing.json")]))
    assert error == f"error: {tmp_path / 'missing.json'}: No such file or directory"
    spec = write_spec(tmp_path, seeds=(1,))
    out = tmp_path / "run"
    assert run_cli(spec, out).returncode == 0
    lines = (out / "predictions.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["probs_f32"] = "!!not base64!!"
    (out / "predictions.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    error = one_error(xleval_subprocess(["rescore", str(out)]))
    assert "predictions.jsonl: the predictions of cell" in error and "are damaged" in error


def test_an_unwritable_out_or_a_full_disk_reads_as_one_line(tmp_path, monkeypatch):
    import errno

    from xleval.cli.main import filesystem_message
    from xleval.run import rundir

    def refuse(path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path / ".xleval-lock"))

    monkeypatch.setattr(rundir, "_take_lock", refuse)
    with pytest.raises(rundir.RunDirectoryError) as caught:
        rundir.RunDirectory.open(tmp_path / "run")
    assert str(caught.value) == (
        f"{tmp_path / 'run'}: cannot write here (Permission denied); choose a writable --out"
    )
    full = OSError(errno.ENOSPC, "No space left on device", "runs/x/cells/abc.json")
    assert filesystem_message(full) == (
        "runs/x/cells/abc.json: No space left on device (free some space and run again: "
        "finished cells are kept)"
    )


@pytest.mark.slow
def test_removing_a_method_recomputes_nothing_else(tmp_path):
    spec = write_spec(tmp_path, seeds=(1,))
    out = tmp_path / "run"
    first = run_cli(spec, out)
    assert first.returncode == 0, first.stderr
    text = spec.read_text()
    spec.write_text(text.replace('[[methods]]\nprotocol = "fusion"\n', ""))
    assert 'protocol = "fusion"' not in spec.read_text()
    again = run_cli(spec, out)
    assert again.returncode == 0, again.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["run"]["cells_computed"] == 0
    assert report["run"]["cells_cached"] == report["run"]["cells_total"] > 0


def test_a_full_disk_mid_run_is_one_line_and_keeps_the_cells_saved(tmp_path, monkeypatch):
    import errno

    from click.testing import CliRunner

    from xleval.cli.main import build_cli
    from xleval.run.store import CellStore

    spec = write_spec(tmp_path, seeds=(1,))
    saved = []
    original = CellStore.save

    def save(self, key, result):
        if len(saved) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path(key)))
        original(self, key, result)
        saved.append(key)

    monkeypatch.setattr(CellStore, "save", save)
    result = CliRunner().invoke(build_cli(), ["run", str(spec), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "No space left on device (free some space" in lines[0]
    assert len(list((tmp_path / "r" / "cells").glob("*.json"))) == 3

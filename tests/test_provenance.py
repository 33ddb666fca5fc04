"""Cache keys follow the code: fingerprints, recompute reasons, provenance, refused workers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import dask_scheduler, dask_worker, stop, write_synthetic_dataset, xleval_subprocess

from xleval.api import workers
from xleval.experiment.spec import resolve_spec
from xleval.plugin.manager import get_plugin_manager
from xleval.report.build import read_report
from xleval.run import provenance
from xleval.run.runner import CellTask, WorkerMismatchError

pytestmark = pytest.mark.usefixtures("clean_plugin_env")

FIXTURES = Path(__file__).parent / "fixtures"
BIN = Path(sys.executable).parent


def write_package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_closure_follows_imports_without_running_them(tmp_path, monkeypatch):
    write_package(
        tmp_path,
        {
            "pkg/__init__.py": "from . import registered, unrelated\nraise SystemExit('ran')\n",
            "pkg/registered.py": "def factory():\n    from .lazy import thing\n    return thing\n",
            "pkg/lazy.py": "from pkg.helpers import helper\nthing = 1\n",
            "pkg/helpers.py": "import importlib\nimportlib.import_module('pkg.dynamic')\n"
            "def helper():\n    pass\n",
            "pkg/dynamic.py": "raise SystemExit('ran')\n",
            "pkg/unrelated.py": "import json\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/deep.py": "from ..helpers import helper\n",
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    provenance.module_origin.cache_clear()
    found = provenance.module_closure(["pkg.registered"], ["pkg"])
    assert sorted(found) == ["pkg", "pkg.dynamic", "pkg.helpers", "pkg.lazy", "pkg.registered"]
    assert "pkg" not in sys.modules  # nothing was imported, so nothing ran
    deep = provenance.module_closure(["pkg.sub.deep"], ["pkg"])
    assert sorted(deep) == ["pkg", "pkg.dynamic", "pkg.helpers", "pkg.sub", "pkg.sub.deep"]

    before = provenance.fingerprint(found)
    (tmp_path / "pkg" / "unrelated.py").write_text("import os\n")
    assert provenance.fingerprint(provenance.module_closure(["pkg.registered"], ["pkg"])) == before
    time.sleep(0.01)
    (tmp_path / "pkg" / "helpers.py").write_text("def helper():\n    return 2\n")
    after = provenance.module_closure(["pkg.registered"], ["pkg"])
    assert provenance.fingerprint(after) != before
    assert "pkg.dynamic" not in after  # the edit removed that import


def test_the_core_fingerprint_covers_what_computes_cells_and_not_the_statistics():
    core = dict(provenance._core_modules())
    for module in (
        "xleval.run.runner",
        "xleval.train.cell",
        "xleval.train.trainer",
        "xleval.experiment.sampling",
    ):
        assert module in core
    assert "xleval.train._rowkernels" in core or not provenance.module_origin(
        "xleval.train._rowkernels"
    )
    for module in (
        "xleval.analysis.stats",
        "xleval.analysis.analyse",
        "xleval.report.build",
        "xleval.cli.main",
    ):
        assert module not in core


def test_every_xleval_module_a_cell_imports_is_in_its_fingerprint(tmp_path):
    """Guards CORE_ROOTS and the closure: run a cell in a fresh process, then compare the
    xleval modules it imported with those its key covers."""
    data = write_synthetic_dataset(tmp_path / "syn.jsonl", groups_per_label=6)
    script = f"""
import json, sys
from xleval.plugin.manager import get_plugin_manager
from xleval.experiment.spec import resolve_method
from xleval.train.cell import run_cell
from xleval.run.provenance import method_environments, key_environment, component_refs
from xleval.run import provenance
pm = get_plugin_manager()
dataset = pm.registry.build("datasets", "jsonl", {{"path": {str(data)!r}}}).load()
for protocol in ("transfer", "fusion"):
    method = resolve_method({{"protocol": protocol, "training": {{"epochs": 1}},
                             "model": {{"name": "bag-of-embeddings",
                                       "options": {{"dim": 8, "buckets": 500}}}}}}, pm.registry)
    run_cell(method, dataset, ["en"], "de", 4, 1, registry=pm.registry,
             metrics=["accuracy", "nll", "macro_f1"])
refs = [("datasets", "jsonl"), ("metrics", "accuracy"), ("metrics", "nll"),
        ("protocols", "transfer"), ("protocols", "fusion"),
        ("metrics", "macro_f1"), ("models", "bag-of-embeddings"),
        ("transfer_strategies", "weight-copy"), ("fusion_strategies", "exp-sum")]
covered = set(dict(provenance._core_modules()))
for kind, name in refs:
    covered |= set(provenance.component_code(pm, kind, name)[1])
    component = pm.registry.get(kind, name)
    roots = provenance._defining_modules(component, None)
    covered |= set(provenance.module_closure(roots, {{r.split('.')[0] for r in roots}}))
used = sorted(m for m in sys.modules if m.split('.')[0] in ("xleval", "xleval_plugins"))
print(json.dumps({{"used": used, "covered": sorted(covered)}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    # loaded to find and build components, never computing a result: plugin loading, the
    # CLI-free registry, the entry points of other kinds, and this fingerprinting itself
    not_computing = {
        "xleval.plugin.manager",
        "xleval.api.hookspecs",
        "xleval.run.provenance",
        "xleval_plugins.dask_executor",
        "xleval_plugins.executors",
        "xleval_plugins.hf",  # the hf entry point: registers hf-encoder and hf, unused here
        "xleval_plugins.html_report",
        "xleval_plugins.merging",  # the merge protocol's entry point, unused here
        "xleval_plugins.reporters",
        "xleval_plugins.views",  # the reporters' variance and by-script views
        "xleval.api.languages",  # language metadata, for the by-script view and reports
        "xleval.specs",  # the spec schema, read to resolve the method (before any cell)
    }
    missing = set(result["used"]) - set(result["covered"]) - not_computing
    assert not missing, f"modules a cell ran but its key does not cover: {sorted(missing)}"


RAW_SPEC = {
    "dataset": {"name": "jsonl", "options": {"path": "data.jsonl"}},
    "source": "en",
    "targets": ["de"],
    "metrics": ["accuracy"],
    "executor": "local",
    "methods": [{"label": "t", "protocol": "zero-shot"}],
}


def tiny_spec(pm):
    return resolve_spec(RAW_SPEC, pm.registry)


def environment_with(**changes):
    pm = get_plugin_manager(strict=False)
    env = provenance.spec_environment(pm, tiny_spec(pm))
    changed = json.loads(json.dumps(env))
    for path, value in changes.items():
        *parents, last = path.split("|")
        node = changed
        for part in parents:
            node = node[part]
        node[last] = value
    return env, changed


def test_differences_are_said_in_words():
    env, worker = environment_with(torch="2.12.0", row_kernel=not provenance._platform_facts())
    worker["row_kernel"] = not env["row_kernel"]
    worker["components"]["models/bag-of-embeddings"] = None
    worker["xleval"]["code"] = "0" * 16
    words = provenance.describe_mismatch(env, worker)
    assert f"torch 2.12.0 ≠ {env['torch']} on the driver" in words
    kernel = {True: "on", False: "off"}
    assert f"row kernel {kernel[worker['row_kernel']]} ≠ {kernel[env['row_kernel']]}" in (
        " ".join(words)
    )
    assert "code of xleval differs from the driver's" in words
    assert "model 'bag-of-embeddings' of plugin 'xleval.models' (xleval) missing" in words

    _, edited = environment_with(**{"components|metrics/accuracy|code": "f" * 16})
    assert provenance.describe_changes(env, edited) == ["code of plugin 'xleval.metrics' changed"]
    _, bumped = environment_with(**{"xleval|version": "0.0.1"})
    assert provenance.describe_changes(bumped, env) == [
        f"xleval 0.0.1 -> {env['xleval']['version']}"
    ]


def test_a_worker_that_differs_is_refused_naming_it_and_the_differences(tmp_path):
    env, driver = environment_with(numpy="0.0.0")
    task = CellTask(tiny_spec(get_plugin_manager(strict=False)), str(tmp_path), environment=driver)
    workers.set_worker_label("tcp://10.0.0.5:40123")
    try:
        with pytest.raises(WorkerMismatchError) as caught:
            task.check_worker()
    finally:
        workers._worker_label = None
    assert str(caught.value) == (
        f"worker tcp://10.0.0.5:40123: numpy {env['numpy']} ≠ 0.0.0 on the driver"
    )


PRELOAD_CHECK = """
import json, sys
from test_provenance import RAW_SPEC
from xleval.experiment.spec import resolve_spec
from xleval.plugin import registry
from xleval.run import provenance
if sys.argv[1] == "warm":
    import xleval.run.preload  # what the dask executor's forkserver imports
    assert registry._VALID_SCHEMAS and provenance._file_facts.cache_info().currsize > 0
else:
    assert not registry._VALID_SCHEMAS and provenance._file_facts.cache_info().currsize == 0
from xleval.plugin.manager import get_plugin_manager
pm = get_plugin_manager(strict=False)
print(json.dumps(provenance.spec_environment(pm, resolve_spec(RAW_SPEC, pm.registry))))
"""


def test_a_preloaded_process_computes_the_same_environment_as_a_cold_one():
    """Workers forked from a process that imported ``xleval.run.preload`` skip re-reading
    the code, and still find exactly what a fresh process finds."""
    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": str(here)}
    found = [
        subprocess.run(
            [sys.executable, "-c", PRELOAD_CHECK, mode],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=here,
        ).stdout
        for mode in ("warm", "cold")
    ]
    assert found[0] == found[1] and json.loads(found[0])["xleval"]["code"]


def test_remembered_file_facts_follow_an_edit(tmp_path):
    """What a preload remembers is keyed by each file's version: an edit after it is seen."""
    module = tmp_path / "edited.py"
    module.write_text("import os\n")
    before = provenance._file_facts_of(str(module))
    module.write_text("import json, sys\n")
    os.utime(module, ns=(time.time_ns() + 10**9,) * 2)
    after = provenance._file_facts_of(str(module))
    assert before != after and ("json", 0, "") in after[1]


def test_the_forkserver_preloads_modules_that_exist():
    """multiprocessing's forkserver skips a preload module it cannot import, silently: a
    misspelt one would only make every worker start cold."""
    import importlib

    from xleval_plugins.dask_executor import WORKER_PRELOAD

    for name in WORKER_PRELOAD:
        importlib.import_module(name)
    assert "xleval.run.preload" in WORKER_PRELOAD


# -- end to end: an editable plugin whose code is edited between runs --------------------


def editable_install(tmp_path: Path) -> tuple[Path, Path]:
    """What ``pip install -e`` amounts to: the distribution's metadata in one folder on the
    path, its code imported from where it is edited. Returns (site, source package)."""
    source = tmp_path / "src"
    shutil.copytree(FIXTURES / "xleval-editable-plugin", source)
    site = tmp_path / "site"
    info = site / "xleval_editable_plugin-0.1.0.dist-info"
    info.mkdir(parents=True)
    info.joinpath("METADATA").write_text(
        "Metadata-Version: 2.1\nName: xleval-editable-plugin\nVersion: 0.1.0\n"
    )
    info.joinpath("entry_points.txt").write_text("[xleval]\neditable = xleval_editable\n")
    return site, source


EDITABLE_SPEC = """
name = "editable"
dataset = {{ name = "jsonl", options = {{ path = "{data}" }} }}
source = "en"
targets = ["de"]
shots = [4, 8]
seeds = [1, 2]
metrics = ["accuracy"]
training = {{ epochs = 2, min_steps = 0 }}

[[methods]]
label = "a"
protocol = "target-only"
model = "tiny-a"
[[methods]]
label = "b"
protocol = "target-only"
model = "tiny-b"
"""


@pytest.mark.slow
def test_editing_a_plugin_recomputes_its_cells_only_and_says_why(tmp_path):
    site, source = editable_install(tmp_path)
    data = write_synthetic_dataset(tmp_path / "syn.jsonl", groups_per_label=8)
    spec = tmp_path / "spec.toml"
    spec.write_text(EDITABLE_SPEC.format(data=data))
    path = f"{site}{os.pathsep}{source}"

    def run(*extra):
        done = xleval_subprocess(
            ["run", str(spec), "--out", str(tmp_path / "run"), "-q", *extra], pythonpath=path
        )
        assert done.returncode == 0, done.stderr
        return done.stderr, read_report(tmp_path / "run")

    _, first = run()
    assert first["run"]["cells_computed"] == 8
    cell = first["cells"][0]
    made = cell["provenance"]
    assert made["executor"] == "local" and made["worker"]
    assert made["environment"]["components"]["models/tiny-" + cell["method"]]["plugin"] == (
        "editable"
    )
    assert made["environment"]["row_kernel"] in (True, False)

    _, unchanged = run()
    assert unchanged["run"]["cells_cached"] == 8

    model_a = source / "xleval_editable" / "model_a.py"
    model_a.write_text(model_a.read_text().replace("SCALE = 1.0", "SCALE = 3.0"))
    stderr, edited = run()
    assert edited["run"]["cells_computed"] == 4 and edited["run"]["cells_cached"] == 4
    assert "4 cells recomputed: code of plugin 'editable' changed" in stderr
    before = {(c["method"], c["shots"], c["seed"]): c for c in first["cells"]}
    for c in edited["cells"]:
        same = before[(c["method"], c["shots"], c["seed"])]["key"] == c["key"]
        assert same == (c["method"] == "b")

    stderr, forced = run("--recompute-matching", "b")
    assert forced["run"]["cells_computed"] == 4
    assert "4 cells recomputed: --recompute" in stderr
    stderr, everything = run("--recompute")
    assert everything["run"]["cells_computed"] == 8 and "8 cells recomputed" in stderr
    assert "cells " in stderr and "total " in stderr


# -- a real cluster whose workers differ from the driver ----------------------------------


@pytest.mark.slow
def test_a_cluster_excludes_workers_that_differ_names_them_and_finishes_on_the_others(tmp_path):
    """Four workers, three of them unlike the driver (no plugin, row kernel off, no xleval at
    all): each is named with what differs, gets no cell, and the run completes on the good
    worker with the local executor's results; with on_mismatch = "stop" the run stops."""
    distributed = pytest.importorskip("distributed")
    site, source = editable_install(tmp_path)
    data = write_synthetic_dataset(tmp_path / "syn.jsonl", groups_per_label=8)
    spec = tmp_path / "spec.toml"
    spec.write_text(EDITABLE_SPEC.format(data=data))
    base = {k: v for k, v in os.environ.items() if not k.startswith("XLEVAL_")}
    base.pop("PYTHONPATH", None)
    scheduler, scheduler_file = dask_scheduler(tmp_path, env=base)
    processes = [scheduler]
    with_plugin = {**base, "PYTHONPATH": f"{site}{os.pathsep}{source}"}

    def xleval(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "xleval"), *args], env=with_plugin, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip

    try:
        workers = {
            "good": with_plugin,
            "no-kernel": {**with_plugin, "XLEVAL_ROW_KERNEL": "0"},
            "no-plugin": base,
        }
        for name, env in workers.items():
            processes.append(dask_worker(scheduler_file, name, tmp_path, env=env))
        # python -S skips site-packages' .pth files, so the editable install of xleval is
        # not importable, while PYTHONPATH still offers dask and torch: a worker without it
        site_packages = next(p for p in sys.path if p.endswith("site-packages"))
        processes.append(
            dask_worker(
                scheduler_file,
                "no-xleval",
                tmp_path,
                env={**base, "PYTHONPATH": site_packages},
                launcher=[sys.executable, "-S", "-m", "distributed.cli.dask_worker"],
                cwd=tmp_path,
            )
        )
        with distributed.Client(scheduler_file=str(scheduler_file), timeout="30s") as client:
            client.wait_for_workers(4, timeout=90)
            address = client.scheduler.address
            names = {w: info["name"] for w, info in client.scheduler_info()["workers"].items()}
        cluster = ["--executor", "dask", "--executor-option", f"address={address}"]
        done = xleval("run", str(spec), "--out", str(tmp_path / "run"), "-q", *cluster)
        stopped = xleval(
            "run", str(spec), "--out", str(tmp_path / "stopped"), "-q", *cluster,
            "--executor-option", "on_mismatch=stop",
        )  # fmt: skip
        local = xleval("run", str(spec), "--out", str(tmp_path / "local"), "-q")
    finally:
        for process in processes:
            stop(process)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    by_name = {name: address for address, name in names.items()}
    excluded = [line for line in done.stderr.splitlines() if "excluded from this run" in line]
    kernel = read_kernel_state()
    assert len(excluded) == (3 if kernel else 2), done.stderr
    if kernel:  # the compiled kernel is built here: switching it off is a difference
        assert f"worker {by_name['no-kernel']}: row kernel off ≠ on on the driver" in done.stderr
    plugin_line = next(line for line in excluded if by_name["no-plugin"] in line)
    assert "model 'tiny-a' of plugin 'editable' (xleval-editable-plugin) missing" in plugin_line
    without = next(line for line in excluded if by_name["no-xleval"] in line)
    assert "No module named 'xleval" in without and len(without) < 300
    assert f"worker {by_name['good']}" not in done.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert {c["provenance"]["worker"] for c in report["cells"]} == {by_name["good"]}
    assert local.returncode == 0, local.stderr
    reference = json.loads((tmp_path / "local" / "report.json").read_text())
    assert {c["key"]: c["metrics"] for c in report["cells"]} == {
        c["key"]: c["metrics"] for c in reference["cells"]
    }
    assert stopped.returncode == 1 and "Traceback" not in stopped.stderr
    assert "dask workers cannot compute these cells" in stopped.stderr
    assert not list((tmp_path / "stopped" / "cells").glob("*.json"))  # nothing computed


def read_kernel_state() -> bool:
    from xleval.train.rowkernel import _rowkernels

    return _rowkernels is not None

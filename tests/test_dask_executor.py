"""The dask executor: identical results to local runs, a real scheduler with a worker killed
mid-run, and clear errors for an unreachable scheduler or a missing dask."""

from __future__ import annotations

import builtins
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import dask_scheduler, dask_worker, start, stop
from test_runner import metrics_of, write_spec

from xleval.cli.main import build_cli
from xleval.report.build import read_report

pytestmark = pytest.mark.usefixtures("clean_plugin_env")
distributed = pytest.importorskip("distributed")
BIN = Path(sys.executable).parent


def run(*args):
    return CliRunner().invoke(build_cli(), list(args))


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory):
    """The same tiny spec run by the local executor: the results every dask run must match."""
    tmp = tmp_path_factory.mktemp("reference")
    spec = write_spec(tmp)
    result = run("run", str(spec), "--out", str(tmp / "local"), "-q")
    assert result.exit_code == 0, result.output
    return spec, read_report(tmp / "local")


def test_local_cluster_gives_identical_metrics(local_reference, tmp_path):
    spec, reference = local_reference
    out = tmp_path / "dask"
    result = run(
        "run",
        str(spec),
        "--out",
        str(out),
        "-q",
        "--executor",
        "dask",
        "--executor-option",
        "n_workers=2",
    )
    assert result.exit_code == 0, result.output
    report = read_report(out)
    assert report["spec"]["executor"]["name"] == "dask"
    assert metrics_of(report) == metrics_of(reference)
    # one source model per seed, trained once (by the first cell that needs it, through the
    # run directory as the processes executor does): no artifact tasks on this machine
    sources = [t for c in report["cells"] for t in c["info"]["training"] if t["role"] == "source"]
    assert sum(not t["cached"] for t in sources) == len(report["spec"]["seeds"])


def test_unreachable_scheduler_is_a_clear_error(tmp_path):
    spec = write_spec(tmp_path)
    result = run(
        "run",
        str(spec),
        "--out",
        str(tmp_path / "run"),
        "-q",
        "--executor",
        "dask",
        "--executor-option",
        "address=tcp://127.0.0.1:9",
        "--executor-option",
        "timeout=2s",
    )
    assert result.exit_code == 1
    assert result.output.startswith("error: cannot reach the dask scheduler at tcp://127.0.0.1:9")
    assert "Traceback" not in result.output


def test_missing_dask_is_a_clear_error(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_distributed(name, *args, **kwargs):
        if name == "distributed" or name.startswith("distributed."):
            raise ImportError("No module named 'distributed'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_distributed)
    spec = write_spec(tmp_path)
    result = run("run", str(spec), "--out", str(tmp_path / "run"), "-q", "--executor", "dask")
    assert result.exit_code == 1
    assert "the 'dask' executor needs dask.distributed: pip install 'xleval[dask]'" in result.output


@pytest.mark.slow
def test_real_scheduler_survives_a_killed_worker(local_reference, tmp_path):
    spec, _ = local_reference
    spec_text = spec.read_text().replace("epochs = 5", "epochs = 40")
    slow_spec = tmp_path / "slow.toml"
    slow_spec.write_text(spec_text)
    scheduler, scheduler_file = dask_scheduler(tmp_path)
    workers = []
    try:
        for name in ("w1", "w2"):
            workers.append(dask_worker(scheduler_file, name, tmp_path))
        with distributed.Client(scheduler_file=str(scheduler_file), timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
            address = client.scheduler.address
        out = tmp_path / "run"
        env = {k: v for k, v in os.environ.items() if not k.startswith("XLEVAL_")}
        driver = subprocess.Popen(
            [
                str(BIN / "xleval"),
                "run",
                str(slow_spec),
                "--out",
                str(out),
                "-q",
                "--executor",
                "dask",
                "--executor-option",
                f"address={address}",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if (
                out.joinpath("cells").exists()
                and len(list(out.joinpath("cells").glob("*.json"))) >= 3
            ):
                break
            time.sleep(0.05)
        stop(workers[0])  # SIGKILL the whole worker (nanny and process) mid-run
        done_at_kill = len(list(out.joinpath("cells").glob("*.json")))
        _, stderr = driver.communicate(timeout=600)
        assert driver.returncode == 0, stderr
        assert done_at_kill < 24, "the worker should die while cells are still running"
        report = read_report(out)
        assert all(c["status"] == "ok" for c in report["cells"])
        assert report["run"]["cells_computed"] == 24

        reference = tmp_path / "reference"
        assert run("run", str(slow_spec), "--out", str(reference), "-q").exit_code == 0
        assert metrics_of(report) == metrics_of(read_report(reference))
    finally:
        for process in [*workers, scheduler]:
            stop(process)


def test_local_cluster_is_quiet_and_its_workers_start_warm(monkeypatch):
    """The LocalCluster's scheduler, nannies and workers run with WORKER_CONFIG (no stack
    sampler, a tick a second instead of 50: wake-ups take the GIL or a core from the
    cells) while the driver's own dask config is left as it was; and its workers are
    forked from a server that already imported torch and xleval, with the driver's
    environment as it is when the cluster starts."""
    import dask
    from xleval_plugins.dask_executor import SCHEMA, WORKER_CONFIG, DaskExecutor

    from xleval.plugin.registry import fill_defaults

    before = {key: dask.config.get(key) for key in WORKER_CONFIG}
    assert before != WORKER_CONFIG  # dask's defaults differ, so the test can fail
    options = fill_defaults(SCHEMA, {"n_workers": 1, "retries": 0})
    executor = DaskExecutor(options)  # starts the forkserver, with this environment
    monkeypatch.setenv("XLEVAL_TEST_SET_LATER", "seen")
    client, cluster = executor._connect()
    try:
        later = client.run(lambda: os.environ.get("XLEVAL_TEST_SET_LATER"))
        settings = client.run(lambda: {key: dask.config.get(key) for key in WORKER_CONFIG})
        ticks = client.run_on_scheduler(
            lambda dask_scheduler: dask_scheduler.periodic_callbacks["tick"].callback_time
        )
        warm = client.run(lambda: "xleval.train.cell" in sys.modules and "torch" in sys.modules)
        http = client.run_on_scheduler(
            lambda dask_scheduler: [
                s.getsockname() for s in dask_scheduler.http_server._sockets.values()
            ]
        )
        pages = {
            path: http_status(http[0], path) for path in ("/health", "/info/main/workers.html")
        }
    finally:
        client.close()
        cluster.close()
    assert list(settings.values()) == [WORKER_CONFIG]
    assert ticks == 1000  # ms: the scheduler, in the driver's process, got the setting too
    assert list(warm.values()) == [True]  # nothing imported yet but what the server preloaded
    assert list(later.values()) == ["seen"]  # the driver's environment when the cluster starts
    # no dashboard: dask's HTTP server on a free local port, serving health checks only
    assert [host for host, _ in http] == ["127.0.0.1"] and http[0][1] != 8787
    assert pages == {"/health": 200, "/info/main/workers.html": 404}
    assert {key: dask.config.get(key) for key in WORKER_CONFIG} == before


def http_status(address: tuple[str, int], path: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{address[0]}:{address[1]}{path}", timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_cluster_workers_bound_their_in_memory_artifacts(tmp_path):
    """Without a shared disk, a worker keeps artifacts in memory under the same byte budget
    as the disk cache (unbounded, 64 models of 51 MB made a worker thrash)."""
    from xleval.experiment.spec import read_spec_file, resolve_spec
    from xleval.plugin.manager import get_plugin_manager
    from xleval.run.runner import CellTask
    from xleval.train.artifacts import DEFAULT_MAX_BYTES

    pm = get_plugin_manager()
    spec = resolve_spec(read_spec_file(write_spec(tmp_path)), pm.registry)
    dataset = pm.registry.build("datasets", spec.dataset.name, spec.dataset.options).load()
    task = CellTask(spec, str(tmp_path / "run")).for_cluster()
    state = task.install(pm, dataset)
    assert state.artifacts.max_bytes == DEFAULT_MAX_BYTES
    assert not (tmp_path / "run" / "artifacts").exists()  # nothing written to a disk


def test_the_driver_preloads_while_the_cluster_starts(monkeypatch):
    """The task's preload (torch, for the statistics after the cells) runs in the calling
    thread while the cluster starts in another; an interrupt closes what was started."""
    import threading
    from types import SimpleNamespace

    from xleval_plugins.dask_executor import SCHEMA, DaskExecutor

    from xleval.plugin.registry import fill_defaults

    executor = DaskExecutor(fill_defaults(SCHEMA, {"address": "tcp://127.0.0.1:1"}))
    preloading = threading.Event()
    closed = []

    def connect():
        # sequential (preload after the connect) would wait here in vain
        assert preloading.wait(10), "the preload did not run while connecting"
        return (
            SimpleNamespace(close=lambda: closed.append("client")),
            SimpleNamespace(close=lambda: closed.append("cluster")),
        )

    monkeypatch.setattr(executor, "_connect", connect)
    client, cluster = executor._connect_while(preloading.set)
    assert closed == []
    client.close()
    cluster.close()

    closed.clear()
    preloading.clear()

    def interrupted():
        preloading.set()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        executor._connect_while(interrupted)
    assert closed == ["client", "cluster"]


BUNDLED_SPEC = """
dataset = { name = "ddtp-sections", options = { languages = ["en", "de"], max_per_lang = 160 } }
source = "en"
targets = ["de"]
shots = [0, 4]
seeds = [1]
metrics = ["accuracy"]
model = { name = "bag-of-embeddings", options = { dim = 16, buckets = 20000 } }
training = { epochs = 3, min_steps = 100 }

[[methods]]
protocol = "target-only"

[[methods]]
protocol = "transfer"
transfer = "weight-copy"
"""


def test_local_cluster_workers_take_the_drivers_bundled_dataset_from_a_file(tmp_path, monkeypatch):
    """On this machine the workers read the driver's loaded copy (a pickle: 0.06 s) instead
    of parsing the bundled file (0.5 s each) before their first task; same metrics as
    local, and the file is gone after the run."""
    import xleval_plugins.dask_executor as dask_executor
    from xleval_plugins.executors import LocalExecutor

    from xleval.experiment.spec import read_spec_file, resolve_spec
    from xleval.plugin.manager import get_plugin_manager
    from xleval.plugin.registry import fill_defaults
    from xleval.run.runner import run_cells

    path = tmp_path / "bundled.toml"
    path.write_text(BUNDLED_SPEC)
    pm = get_plugin_manager()
    spec = resolve_spec(read_spec_file(path), pm.registry)
    dataset = pm.registry.build("datasets", spec.dataset.name, spec.dataset.options).load()
    local = run_cells(spec, pm, dataset, tmp_path / "local", executor=LocalExecutor({}))

    written = []
    write = dask_executor._write_dataset
    monkeypatch.setattr(
        dask_executor, "_write_dataset", lambda d: written.append(write(d)) or written[-1]
    )
    executor = dask_executor.DaskExecutor(fill_defaults(dask_executor.SCHEMA, {"n_workers": 2}))
    clustered = run_cells(spec, pm, dataset, tmp_path / "dask", executor=executor)

    assert executor.stats["dataset"] == "file"
    assert len(written) == 1 and not Path(written[0]).exists()
    assert not clustered.failed and len(clustered.results) == len(local.results) > 0
    assert {k: r["metrics"] for k, r in clustered.results.items()} == {
        k: r["metrics"] for k, r in local.results.items()
    }


def test_a_worker_installs_the_dataset_file_without_loading_by_name(tmp_path, monkeypatch):
    import xleval_plugins.datasets
    from test_runner import write_spec
    from xleval_plugins.dask_executor import _prepare_worker, _write_dataset

    from xleval.experiment.spec import read_spec_file, resolve_spec
    from xleval.plugin.manager import get_plugin_manager
    from xleval.run import runner
    from xleval.train import trainer as training

    pm = get_plugin_manager()
    spec = resolve_spec(read_spec_file(write_spec(tmp_path)), pm.registry)
    dataset = pm.registry.build("datasets", spec.dataset.name, spec.dataset.options).load()
    task = runner.CellTask(spec, str(tmp_path / "run")).for_cluster()
    path = _write_dataset(dataset)
    try:

        def no_loading(*args, **kwargs):
            raise AssertionError("the worker loaded the dataset by name")

        monkeypatch.setattr(xleval_plugins.datasets, "load_dataset_file", no_loading)
        monkeypatch.setattr(training, "_THREAD_BUDGET", None)
        monkeypatch.setattr(training.torch, "set_num_threads", lambda n: None)  # keep ours
        _prepare_worker(1, task, path)
        installed = task.state().dataset
        assert installed is not dataset  # the file's copy ...
        assert installed.fingerprint == dataset.fingerprint  # ... of the same data
        assert training._THREAD_BUDGET == 1
    finally:
        runner._STATES.pop(task.token, None)
        Path(path).unlink()


def cluster_run(
    spec: Path, out: Path, address: str, *extra: str, env: dict | None = None
) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("XLEVAL_")}, **(env or {})}
    return subprocess.run(
        [str(BIN / "xleval"), "run", str(spec), "--out", str(out), "-q", "--executor", "dask",
         "--executor-option", f"address={address}", *extra],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.slow
def test_a_long_lived_workers_memory_returns_to_its_baseline_after_each_run(tmp_path):
    """Three runs into new directories on one worker: the worker frees each run's state
    (dataset, models of 2·10^5 x 16 floats, features) when it ends; its memory after runs 2
    and 3 is within 50 MB of what it was after run 1."""
    import psutil

    spec = write_spec(tmp_path).read_text().replace("buckets = 20000", "buckets = 200000")
    big = tmp_path / "big.toml"
    big.write_text(spec)
    scheduler, scheduler_file = dask_scheduler(tmp_path)
    worker = dask_worker(scheduler_file, "long-lived", tmp_path)
    try:
        with distributed.Client(scheduler_file=str(scheduler_file), timeout="30s") as client:
            client.wait_for_workers(1, timeout=60)
            address = client.scheduler.address
            after = []
            for i in range(3):
                done = cluster_run(big, tmp_path / f"run{i}", address)
                assert done.returncode == 0, done.stderr
                (rss,) = client.run(lambda: psutil.Process().memory_info().rss).values()
                after.append(rss / 2**20)
    finally:
        stop(worker)
        stop(scheduler)
    assert all(abs(mb - after[0]) <= 50 for mb in after[1:]), after


@pytest.mark.slow
def test_a_worker_that_joins_mid_run_unlike_the_driver_gets_no_cell(tmp_path):
    """A worker joining while the run goes on is checked as it joins: with the row kernel
    off (or anything else that enters the keys) it is named on stderr and excluded; every
    cell runs on the worker that was there, with the local executor's results."""
    from xleval.train.rowkernel import row_kernel_available

    if not row_kernel_available():
        pytest.skip("the row kernel is not built here: switching it off changes nothing")
    spec = write_spec(tmp_path, epochs=400, seeds=tuple(range(1, 9)))  # long enough to join
    scheduler, scheduler_file = dask_scheduler(tmp_path)
    processes = [scheduler, dask_worker(scheduler_file, "first", tmp_path)]
    try:
        with distributed.Client(scheduler_file=str(scheduler_file), timeout="30s") as client:
            client.wait_for_workers(1, timeout=60)
            address = client.scheduler.address
        env = {k: v for k, v in os.environ.items() if not k.startswith("XLEVAL_")}
        driver = subprocess.Popen(
            [str(BIN / "xleval"), "run", str(spec), "--out", str(tmp_path / "run"), "-q",
             "--executor", "dask", "--executor-option", f"address={address}"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        cells = tmp_path / "run" / "cells"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(cells.glob("*.json")):
            time.sleep(0.05)
        late = {**env, "XLEVAL_ROW_KERNEL": "0"}
        processes.append(dask_worker(scheduler_file, "late", tmp_path, env=late))
        with distributed.Client(scheduler_file=str(scheduler_file), timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        time.sleep(5)  # the guard's check on the late worker
        assert driver.poll() is None, "the run ended before the late worker joined: lengthen it"
        _, stderr = driver.communicate(timeout=600)
    finally:
        for process in processes:
            stop(process)
    assert driver.returncode == 0, stderr
    (line,) = [line for line in stderr.splitlines() if "excluded from this run" in line]
    assert "row kernel off ≠ on on the driver" in line
    report = read_report(tmp_path / "run")
    assert len({c["provenance"]["worker"] for c in report["cells"]}) == 1
    local = tmp_path / "local"
    assert run("run", str(spec), "--out", str(local), "-q").exit_code == 0
    assert metrics_of(report) == metrics_of(read_report(local))


@pytest.mark.slow
def test_a_local_cluster_starts_from_a_folder_holding_an_xleval_folder(tmp_path):
    """Run from the folder above a clone (it holds `xleval/`): the workers must still import
    the installed xleval, not that folder as a namespace package."""
    spec = write_spec(tmp_path)
    common = tmp_path / "common"
    (common / "xleval" / "xleval").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("XLEVAL_")}
    done = subprocess.run(
        [str(BIN / "xleval"), "run", str(spec), "--out", str(tmp_path / "run"), "-q",
         "--executor", "dask", "--executor-option", "n_workers=2"],
        env=env, capture_output=True, text=True, timeout=600, cwd=common,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert read_report(tmp_path / "run")["run"]["cells_failed"] == 0


def make_certificates(folder: Path) -> dict[str, str]:
    """A private CA and one certificate for 127.0.0.1 signed by it (openssl)."""
    commands = [
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 "
        "-subj /CN=xleval-test-ca",
        "openssl req -newkey rsa:2048 -nodes -keyout node.key -out node.csr -subj /CN=127.0.0.1",
        "openssl x509 -req -in node.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out node.pem "
        "-days 2 -extfile ext.cnf",
    ]
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    for command in commands:
        subprocess.run(command.split(), cwd=folder, check=True, capture_output=True)
    return {name: str(folder / name) for name in ("ca.pem", "node.pem", "node.key")}


@pytest.mark.slow
def test_a_tls_cluster_runs_a_spec_and_a_driver_without_tls_settings_gets_one_line(tmp_path):
    """docs/cluster.md's Security section, followed: scheduler and worker on 127.0.0.1 with
    certificates from a private CA; the driver with the client variables runs the spec with
    the local executor's results; without them, one clear error line."""
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    tls = make_certificates(tmp_path)
    flags = [
        "--tls-ca-file",
        tls["ca.pem"],
        "--tls-cert",
        tls["node.pem"],
        "--tls-key",
        tls["node.key"],
    ]
    scheduler_file = tmp_path / "scheduler.json"
    scheduler = start(
        [str(BIN / "dask"), "scheduler", "--protocol", "tls", "--host", "127.0.0.1", "--port",
         "0", "--no-dashboard", "--scheduler-file", str(scheduler_file), *flags],
        tmp_path / "scheduler.log",
    )  # fmt: skip
    processes = [scheduler]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tls://127.0.0.1:")
        processes.append(
            start(
                [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-dashboard",
                 *flags],
                tmp_path / "worker.log",
            )
        )  # fmt: skip
        spec = write_spec(tmp_path)
        client_env = {
            "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": tls["ca.pem"],
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": tls["node.pem"],
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": tls["node.key"],
        }
        secure = cluster_run(spec, tmp_path / "tls", address, env=client_env)
        plain = cluster_run(spec, tmp_path / "plain", address)
    finally:
        for process in processes:
            stop(process)
    assert secure.returncode == 0, secure.stderr
    local = tmp_path / "local"
    assert run("run", str(spec), "--out", str(local), "-q").exit_code == 0
    assert metrics_of(read_report(tmp_path / "tls")) == metrics_of(read_report(local))
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    (line,) = [line for line in plain.stderr.splitlines() if line.startswith("error:")]
    assert "speaks TLS, and this machine has no TLS client settings" in line


@pytest.mark.slow
def test_losing_the_scheduler_stops_cleanly_and_a_rerun_continues(tmp_path):
    """The scheduler killed mid-run: one clear line, no traceback; the report says the run
    stopped, marks the missing cells not run and tests no comparison over their columns;
    the same command against a new scheduler computes only the cells that were missing."""
    spec = write_spec(tmp_path, epochs=150, seeds=(1, 2, 3, 4))
    out = tmp_path / "run"
    scheduler, scheduler_file = dask_scheduler(tmp_path)
    worker = dask_worker(scheduler_file, "w", tmp_path)
    try:
        with distributed.Client(scheduler_file=str(scheduler_file), timeout="30s") as client:
            client.wait_for_workers(1, timeout=60)
            address = client.scheduler.address
        env = {k: v for k, v in os.environ.items() if not k.startswith("XLEVAL_")}
        driver = subprocess.Popen(
            [str(BIN / "xleval"), "run", str(spec), "--out", str(out), "-q", "--executor",
             "dask", "--executor-option", f"address={address}"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(out.glob("cells/*.json"))) < 3:
            time.sleep(0.05)
        stop(scheduler)
        _, stderr = driver.communicate(timeout=300)
    finally:
        stop(worker)
        stop(scheduler)
    assert driver.returncode == 130, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: lost the dask scheduler at {address}"), stderr
    assert last.endswith("run the same command again to continue")
    report = read_report(out)
    assert report["run"]["stopped"] and report["run"]["interrupted"] is True
    statuses = [c["status"] for c in report["cells"]]
    finished = statuses.count("ok")
    assert 0 < finished < len(statuses) and set(statuses) == {"ok", "not-run"}
    incomplete = {(c["target"], c["shots"]) for c in report["cells"] if c["status"] == "not-run"}
    for comparison in report["comparisons"]:
        if (comparison["target"], comparison["shots"]) in incomplete:
            assert comparison["status"] != "ok", comparison

    (tmp_path / "again").mkdir()
    scheduler, scheduler_file = dask_scheduler(tmp_path / "again")
    worker = dask_worker(scheduler_file, "w2", tmp_path)
    try:
        with distributed.Client(scheduler_file=str(scheduler_file), timeout="30s") as client:
            client.wait_for_workers(1, timeout=60)
            address = client.scheduler.address
        rerun = cluster_run(spec, out, address)
    finally:
        stop(worker)
        stop(scheduler)
    assert rerun.returncode == 0, rerun.stderr
    run = read_report(out)["run"]
    assert (run["cells_cached"], run["cells_computed"]) == (finished, len(statuses) - finished)


def run_until_the_good_worker_dies(spec, tmp_path):
    """Run ``spec`` on a cluster of a good worker and one with the row kernel off (refused);
    kill the good one once two cells are stored. Returns (exit code, stderr, run dir)."""
    out = tmp_path / "run"
    scheduler, scheduler_file = dask_scheduler(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("XLEVAL_")}
    good = dask_worker(scheduler_file, "good", tmp_path)
    other = dask_worker(scheduler_file, "other", tmp_path, env={**env, "XLEVAL_ROW_KERNEL": "0"})
    try:
        with distributed.Client(scheduler_file=str(scheduler_file), timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
            address = client.scheduler.address
        driver = subprocess.Popen(
            [str(BIN / "xleval"), "run", str(spec), "--out", str(out), "-q", "--executor",
             "dask", "--executor-option", f"address={address}",
             "--executor-option", "no_worker_timeout=3s"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(out.glob("cells/*.json"))) < 2:
            time.sleep(0.05)
        stop(good)
        _, stderr = driver.communicate(timeout=300)
    finally:
        for process in (good, other, scheduler):
            stop(process)
    return driver.returncode, stderr, out


@pytest.mark.slow
def test_a_run_whose_admitted_workers_are_gone_stops_instead_of_waiting(tmp_path):
    """The only admitted worker dies (with the scattered dataset); the one left differs from
    the driver: instead of failing every remaining cell or waiting forever for a worker that
    may compute them, the run stops with one line, keeping what finished."""
    from xleval.train.rowkernel import row_kernel_available

    if not row_kernel_available():
        pytest.skip("the row kernel is not built here: switching it off changes nothing")
    spec = write_spec(tmp_path, epochs=150, seeds=(1, 2, 3, 4))
    code, stderr, out = run_until_the_good_worker_dies(spec, tmp_path)
    assert code == 130, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and last.endswith("run the same command again to continue")
    assert "failed:" not in stderr  # no cell blamed for the cluster's state
    report = read_report(out)
    assert report["run"]["cells_not_run"] > 0 and report["run"]["stopped"]


@pytest.mark.slow
def test_the_watchdog_stops_a_run_left_without_an_admitted_worker(tmp_path):
    """A bundled dataset (loaded by name on each worker, nothing scattered to lose): when
    the only admitted worker dies, the tasks would wait forever for a worker holding the
    run's resource; after no_worker_timeout the run stops with one line saying so."""
    from xleval.train.rowkernel import row_kernel_available

    if not row_kernel_available():
        pytest.skip("the row kernel is not built here: switching it off changes nothing")
    spec = tmp_path / "bundled.toml"
    spec.write_text(
        """dataset = { name = "ddtp-sections", options = { languages = ["en", "de"] } }
source = "en"
targets = ["de"]
shots = [4, 8]
seeds = [1, 2, 3, 4, 5, 6]
model = { name = "bag-of-embeddings", options = { dim = 8, buckets = 2000 } }
training = { epochs = 3, min_steps = 0 }
[[methods]]
protocol = "zero-shot"
[[methods]]
protocol = "transfer"
"""
    )
    code, stderr, out = run_until_the_good_worker_dies(spec, tmp_path)
    assert code == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: no admitted dask worker for 3 s"), stderr
    assert read_report(out)["run"]["cells_not_run"] > 0


def test_a_result_lost_with_the_scheduler_is_not_blamed_on_its_cell(monkeypatch):
    """A finished cell whose result cannot be fetched because the scheduler just went (a
    comm error before the client notices) stops the run like the cancellations do; a comm
    error while the client stays connected is the cell's failure, as before."""
    import threading
    from types import SimpleNamespace

    import xleval_plugins.dask_executor as dask_executor
    from distributed.comm.core import CommClosedError

    client = SimpleNamespace(status="running")
    threading.Timer(0.2, lambda: setattr(client, "status", "connecting")).start()
    assert dask_executor.scheduler_lost(client, CommClosedError("in: TCP closed"))
    monkeypatch.setattr(dask_executor, "NOTICE_WAIT", 0.2)
    assert not dask_executor.scheduler_lost(SimpleNamespace(status="running"), CommClosedError("x"))
    assert not dask_executor.scheduler_lost(SimpleNamespace(status="running"), KeyError("x"))


def test_the_clients_own_cancellation_logs_no_traceback_and_other_errors_still_do(capsys):
    """A client whose scheduler was lost logs its reconnect loop's cancellation as an ERROR
    with a traceback when the driver closes it (seen in CI: 'distributed.client - ERROR -
    Traceback ... CancelledError'); xleval's filter drops exactly those records."""
    import asyncio
    import logging

    from xleval_plugins.dask_executor import CANCELLED_TEARDOWN, quiet_client_teardown

    pytest.importorskip("distributed")
    logger = logging.getLogger("distributed.client")
    stream = logging.StreamHandler(sys.stderr)
    logger.addHandler(stream)
    try:
        quiet_client_teardown()
        quiet_client_teardown()  # idempotent: one filter
        assert logger.filters.count(CANCELLED_TEARDOWN) == 1
        for exc in (asyncio.CancelledError(), RuntimeError("real trouble")):
            try:
                raise exc
            except BaseException:
                logger.exception("")
    finally:
        logger.removeHandler(stream)
    err = capsys.readouterr().err
    assert "CancelledError" not in err
    assert "RuntimeError: real trouble" in err and "Traceback" in err

"""The bundled executors: order, isolation of worker state, and the thread budget that keeps
workers x threads within the cores."""

from __future__ import annotations

import os

import pytest
import torch
from xleval_plugins.executors import LocalExecutor, ProcessExecutor, available_cores


def threads_seen(cell: int) -> tuple[int, int, int | None]:
    from xleval.train import trainer as training

    with training.torch_threads(8):  # a training asking for more than its share
        inside = torch.get_num_threads()
    return cell, inside, training._THREAD_BUDGET


def test_local_executor_runs_cells_in_order():
    assert list(LocalExecutor({}).map(lambda c: c * 2, [3, 1, 2])) == [6, 2, 4]


@pytest.mark.parametrize(
    "options, workers, threads",
    [
        ({"workers": 1}, 1, None),
        ({"workers": 2, "threads_per_worker": 64}, 2, None),
        ({}, None, None),
    ],
)
def test_workers_times_threads_never_exceeds_the_cores(options, workers, threads):
    executor = ProcessExecutor(options)
    cores = available_cores()
    assert executor.workers == (workers or cores)
    assert executor.threads >= 1
    assert executor.workers * executor.threads <= max(cores, executor.workers)


def test_each_worker_caps_torch_threads_at_its_share():
    executor = ProcessExecutor({"workers": 2})
    results = sorted(executor.map(threads_seen, [1, 2, 3]))
    assert [cell for cell, _, _ in results] == [1, 2, 3]
    share = max(1, available_cores() // 2)
    assert all(inside == share and budget == share for _, inside, budget in results)


PRELOADED_IN: int | None = None


class PreloadingTask:
    """A task with ``preload``, as the runner's CellTask: the pool must call it in the
    parent, before forking, so that every worker inherits what it imported."""

    def preload(self) -> None:
        global PRELOADED_IN
        PRELOADED_IN = os.getpid()

    def __call__(self, cell: int) -> tuple[int, int | None, int]:
        return cell, PRELOADED_IN, os.getpid()


def test_workers_inherit_what_the_task_preloaded():
    global PRELOADED_IN
    PRELOADED_IN = None
    try:
        results = sorted(ProcessExecutor({"workers": 2}).map(PreloadingTask(), [1, 2, 3]))
        assert [cell for cell, _, _ in results] == [1, 2, 3]
        assert all(preloaded == os.getpid() != worker for _, preloaded, worker in results)
    finally:
        PRELOADED_IN = None


def run_with(tmp_path, executor):
    from test_runner import write_spec

    from xleval.experiment.spec import read_spec_file, resolve_spec
    from xleval.plugin.manager import get_plugin_manager
    from xleval.run.runner import run_cells

    tmp_path.mkdir(parents=True, exist_ok=True)
    pm = get_plugin_manager()
    spec = resolve_spec(read_spec_file(write_spec(tmp_path, epochs=2, seeds=(1,))), pm.registry)
    dataset = pm.registry.build("datasets", spec.dataset.name, spec.dataset.options).load()
    outcome = run_cells(spec, pm, dataset, tmp_path / "run", executor=executor)
    return {k: r["metrics"] for k, r in outcome.results.items()}, outcome


def test_the_default_start_method_is_fork_where_the_platform_has_it():
    import multiprocessing

    assert "fork" in multiprocessing.get_all_start_methods()  # Linux, where CI runs
    assert ProcessExecutor({}).start_method == "fork"
    assert ProcessExecutor({"start_method": "spawn"}).start_method == "spawn"


def test_spawned_workers_compute_what_forked_ones_do(tmp_path):
    """A spawned worker builds its own state (plugins, dataset, code check) from the task."""
    forked, _ = run_with(tmp_path / "fork", ProcessExecutor({"workers": 2}))
    spawned, outcome = run_with(
        tmp_path / "spawn", ProcessExecutor({"workers": 2, "start_method": "spawn"})
    )
    assert not outcome.failed and outcome.stopped is None
    assert spawned == forked and len(forked) > 0


class ChangingEnvironment(ProcessExecutor):
    """The environment changes after the driver keyed the cells (as if a user switched the
    row kernel off in the shell the run's workers start from): spawned workers differ."""

    def map(self, fn, cells):
        os.environ["XLEVAL_ROW_KERNEL"] = "0"
        yield from super().map(fn, cells)


def test_a_spawned_worker_unlike_the_driver_stops_the_run_before_any_cell(tmp_path, monkeypatch):
    monkeypatch.delenv("XLEVAL_ROW_KERNEL", raising=False)
    try:
        metrics, outcome = run_with(
            tmp_path, ChangingEnvironment({"workers": 2, "start_method": "spawn"})
        )
    finally:
        os.environ.pop("XLEVAL_ROW_KERNEL", None)
    assert metrics == {} and outcome.computed == 0
    assert outcome.stopped is not None and "differs from this process" in outcome.stopped
    assert "row kernel" in outcome.stopped and "worker" in outcome.stopped
    assert not list((tmp_path / "run").glob("cells/**/*.json"))  # nothing stored


def test_an_unavailable_start_method_is_a_clear_error(monkeypatch):
    import multiprocessing

    from xleval.errors import XlevalError

    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    with pytest.raises(XlevalError, match="start_method 'fork' is not available"):
        ProcessExecutor({"start_method": "fork"})

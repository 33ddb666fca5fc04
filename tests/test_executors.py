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

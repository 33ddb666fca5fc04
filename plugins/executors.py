"""Bundled executors: ``local`` (this process) and ``processes`` (a pool using the cores).

An executor only decides where ``fn(cell)`` runs; the runner caches each result as it
arrives, so an executor yields results as they complete, in any order.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from xleval.api import Register, hookimpl
from xleval.errors import ExecutorStopped, XlevalError


class LocalExecutor:
    """Runs cells one after another in this process: simplest to debug, no pickling."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def map(self, fn: Callable[[Any], Any], cells: Iterable[Any]) -> Iterator[Any]:
        for cell in cells:
            yield fn(cell)


def _init_worker(threads: int) -> None:
    from xleval.train.trainer import set_thread_budget

    set_thread_budget(threads)  # torch's threads, and a cap on every training's `threads`


def _check_worker(fn: Any) -> None:
    """Runs in a worker that did not fork from the driver: raises if it would compute the
    cells differently (``CellTask.check_worker``: versions, code, plugins, row kernel)."""
    getattr(fn, "check_worker", lambda: None)()


def start_method(requested: str | None) -> str:
    """``requested``, else ``fork`` where the platform has it (Python 3.14 makes
    ``forkserver`` the default on Linux), else the platform's default."""
    if requested is not None:
        return requested
    if "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return multiprocessing.get_start_method()


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), else the machine's."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class ProcessExecutor:
    """Runs cells in a pool of worker processes; workers x threads never exceeds the cores.

    Each worker's torch threads (and the ``threads`` training option, a cap) are
    ``threads_per_worker``, at most ``cores // workers``: two workers on two cores train
    with one thread each instead of fighting over both.
    """

    def __init__(self, options: dict[str, Any]) -> None:
        cores = available_cores()
        self.workers = options.get("workers") or cores
        fair_share = max(1, cores // self.workers)
        self.threads = min(options.get("threads_per_worker") or fair_share, fair_share)
        self.start_method = start_method(options.get("start_method"))
        if self.start_method not in multiprocessing.get_all_start_methods():
            raise XlevalError(
                f"executor 'processes': start_method '{self.start_method}' is not available "
                f"here (available: {', '.join(multiprocessing.get_all_start_methods())})"
            )

    def map(self, fn: Callable[[Any], Any], cells: Iterable[Any]) -> Iterator[Any]:
        """Results as they complete. A worker that dies (the OOM killer, a segfault) breaks
        the pool: the cells it had in flight are rerun one at a time in a fresh worker,
        which finds the one that kills its worker; that cell fails after MAX_DEATHS deaths,
        the others finish, and the rest of the grid goes on in a fresh pool."""
        cells = list(cells)
        if not cells:
            return
        if self.start_method == "fork":
            # Workers fork from this process: import torch here once, not in each of them.
            # A forked worker is a copy of the driver (its code, plugins and environment),
            # which has checked itself; a spawned one checks itself before any cell.
            getattr(fn, "preload", lambda: None)()
        else:
            self._check_a_worker(fn)
        queue = deque(range(len(cells)))
        suspects: deque[int] = deque()
        deaths: dict[int, int] = {}
        while queue or suspects:
            if suspects:
                index = suspects.popleft()
                lost = yield from self._run(fn, cells, deque([index]), workers=1)
            else:
                lost = yield from self._run(fn, cells, queue, workers=self.workers)
            for index in lost:
                deaths[index] = deaths.get(index, 0) + 1
                if deaths[index] >= MAX_DEATHS:
                    yield _failure(
                        fn,
                        cells[index],
                        f"its worker process died {deaths[index]} times while computing it "
                        "(killed by a signal, e.g. out of memory?); the other cells went on",
                    )
                else:
                    suspects.append(index)

    def _check_a_worker(self, fn: Callable[[Any], Any]) -> None:
        """Stop the run, with one line, when a worker started as this executor starts them
        would not compute the cells as the driver does (e.g. the code changed on disk since
        the run began): every worker would refuse every cell. (Each worker checks itself
        again before its first cell, so none computes a cell under a key it does not
        match.)"""
        pool = ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context(self.start_method)
        )
        try:
            pool.submit(_check_worker, fn).result()
        except XlevalError as exc:
            raise ExecutorStopped(
                f"a worker process started by '{self.start_method}' differs from this "
                f"process: {exc}; no cell was computed there: rerun when the code and "
                "environment are as they were when the run began"
            ) from None
        finally:
            pool.shutdown()

    def _run(
        self, fn: Callable[[Any], Any], cells: list[Any], queue: deque[int], workers: int
    ) -> Generator[Any, None, list[int]]:
        """Run cells from ``queue`` (consumed) in one pool, yielding results; return the
        indices of the cells lost when a worker died (the pool is then broken)."""
        # Keep at most 2 tasks per worker in flight, so an interrupted run wastes little and
        # results stream back in roughly submission order (shared artifacts first).
        pool = ProcessPoolExecutor(
            max_workers=min(workers, len(queue)),
            mp_context=multiprocessing.get_context(self.start_method),
            initializer=_init_worker,
            initargs=(self.threads,),
        )
        pending: dict[Any, int] = {}
        broken = False
        try:
            while queue or pending:
                while queue and len(pending) < 2 * workers:
                    index = queue.popleft()
                    try:
                        pending[pool.submit(fn, cells[index])] = index
                    except BrokenProcessPool:
                        queue.appendleft(index)
                        broken = True
                        break
                if broken:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    index = pending.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        pending[future] = index  # lost with the others in flight
                        broken = True
                        continue
                    yield result
                if broken:
                    break
            return list(pending.values()) if broken else []
        finally:
            pool.shutdown(wait=not broken, cancel_futures=True)


MAX_DEATHS = 3


def _failure(fn: Any, cell: Any, message: str) -> Any:
    failure = getattr(fn, "failure", None)
    if failure is None:
        raise XlevalError(f"{cell}: {message}")
    return failure(cell, XlevalError(message))


WORKERS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "workers": {
            "type": ["integer", "null"],
            "minimum": 1,
            "default": None,
            "description": "Worker processes; null: one per core.",
        },
        "threads_per_worker": {
            "type": ["integer", "null"],
            "minimum": 1,
            "default": None,
            "description": "torch threads in each worker (also the most a training may "
            "use); null or more than cores // workers: cores // workers.",
        },
        "start_method": {
            "enum": [None, "fork", "spawn", "forkserver"],
            "default": None,
            "description": "How workers start; null: fork where the platform has it (a "
            "worker is then a copy of this process), else the platform's default. A worker "
            "that is not forked checks that its code and environment match this process's "
            "before it computes a cell.",
        },
    },
}


@hookimpl
def xleval_register_executors(register: Register) -> None:
    """Register ``local`` and ``processes``."""
    register(
        "local",
        LocalExecutor,
        schema={"type": "object", "additionalProperties": False, "properties": {}},
        description="Run cells one after another in this process.",
    )
    register(
        "processes",
        ProcessExecutor,
        schema=WORKERS_SCHEMA,
        description="Run cells in parallel worker processes on this machine.",
    )

"""Bundled executors: ``local`` (this process) and ``processes`` (a pool using the cores).

An executor only decides where ``fn(cell)`` runs; the runner caches each result as it
arrives, so an executor yields results as they complete, in any order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

from xleval.hookspecs import Register, hookimpl


class LocalExecutor:
    """Runs cells one after another in this process: simplest to debug, no pickling."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def map(self, fn: Callable[[Any], Any], cells: Iterable[Any]) -> Iterator[Any]:
        for cell in cells:
            yield fn(cell)


def _init_worker(threads: int) -> None:
    from xleval.training import set_thread_budget

    set_thread_budget(threads)  # torch's threads, and a cap on every training's `threads`


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

    def map(self, fn: Callable[[Any], Any], cells: Iterable[Any]) -> Iterator[Any]:
        cells = list(cells)
        if not cells:
            return
        # Workers fork from this process: import torch here once, not in each of them.
        getattr(fn, "preload", lambda: None)()
        # Keep at most 2 tasks per worker in flight, so an interrupted run wastes little and
        # results stream back in roughly submission order (shared artifacts first).
        with ProcessPoolExecutor(
            max_workers=min(self.workers, len(cells)),
            initializer=_init_worker,
            initargs=(self.threads,),
        ) as pool:
            pending = set()
            queue = iter(cells)
            try:
                for cell in queue:
                    pending.add(pool.submit(fn, cell))
                    if len(pending) >= 2 * self.workers:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for future in done:
                            yield future.result()
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield future.result()
            finally:
                for future in pending:
                    future.cancel()


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

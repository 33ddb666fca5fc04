"""Bundled ``dask`` executor: run the grid on a Dask cluster (``pip install 'xleval[dask]'``).

The grid becomes a task graph: every shared artifact (a source model per seed and options)
is one task, and the cells that need it wait for it and receive it as an argument, so it is
trained once on the cluster and no shared filesystem is needed. A user's data file is read
once by the driver and scattered to the workers; bundled datasets load on each worker by
name. Results come back as they complete and the driver stores each one, so progress,
resume and the cache behave exactly as with the local executors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from xleval.errors import XlevalError
from xleval.hookspecs import Register, hookimpl


class DaskExecutorError(XlevalError):
    """dask is missing, or the scheduler cannot be reached."""


def import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise DaskExecutorError(
            f"the 'dask' executor needs dask.distributed: pip install 'xleval[dask]' ({exc})"
        ) from None
    return distributed


def task_key(prefix: str, *parts: str) -> str:
    """A readable, unique dask key (dask shows keys in its dashboard)."""
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
    return f"xleval-{prefix}-{digest}"


#: dask settings for the workers of a LocalCluster (docs/cluster.md: the same for yours).
WORKER_CONFIG = {"distributed.worker.profile.enabled": False}


def _set_thread_budget(threads: int) -> None:
    from xleval.training import set_thread_budget

    set_thread_budget(threads)


class DaskExecutor:
    """Submits artifact tasks and cell tasks to a Dask scheduler and yields cell results."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.address = options["address"]
        self.n_workers = options["n_workers"]
        self.threads_per_worker = options["threads_per_worker"]
        self.retries = options["retries"]
        self.timeout = options["timeout"]
        self.stats: dict[str, Any] = {}

    def _connect(self) -> tuple[Any, Any]:
        distributed = import_distributed()
        if self.address:
            try:
                client = distributed.Client(self.address, timeout=self.timeout)
            except (OSError, TimeoutError) as exc:
                raise DaskExecutorError(
                    f"cannot reach the dask scheduler at {self.address}: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            return client, None
        import os

        import dask

        # The workers' statistical profiler samples every thread's stack 100 times a second,
        # taking the GIL from the cell it is timing (training is Python between torch
        # calls). Nannies keep the config they were created with, restarts included.
        with dask.config.set(WORKER_CONFIG):
            cluster = distributed.LocalCluster(
                n_workers=self.n_workers or (os.cpu_count() or 1),
                threads_per_worker=self.threads_per_worker,
                processes=True,
                dashboard_address=None,
            )
        return distributed.Client(cluster), cluster

    def map(self, fn: Callable[..., Any], cells: Iterable[Any]) -> Iterator[Any]:
        distributed = import_distributed()
        cells = list(cells)
        if not cells:
            return
        client, cluster = self._connect()
        # Each worker thread trains with this many torch threads: more would oversubscribe
        # the cores that the worker processes share (training time doubled in
        # benchmarks/grid_scaling.py without this).
        client.run(_set_thread_budget, self.threads_per_worker)
        fn = getattr(fn, "for_cluster", lambda: fn)()
        futures: dict[Any, Any] = {}
        try:
            portable = getattr(fn, "portable_dataset", lambda: None)()
            dataset = None
            if portable is not None:
                dataset = client.scatter(portable, broadcast=True, hash=True)
            artifacts: dict[str, Any] = {}
            for cell in cells:
                needs = []
                for job in getattr(fn, "artifact_jobs", lambda c: [])(cell):
                    if job.key not in artifacts:
                        artifacts[job.key] = client.submit(
                            job,
                            dataset=dataset,
                            key=task_key("artifact", job.key),
                            pure=False,
                            retries=self.retries,
                        )
                    needs.append(artifacts[job.key])
                future = client.submit(
                    fn,
                    cell,
                    *needs,
                    dataset=dataset,
                    key=task_key("cell", repr(cell)),
                    pure=False,
                    retries=self.retries,
                )
                futures[future] = cell
            self.stats = {"artifact_tasks": len(artifacts), "cell_tasks": len(futures)}
            for future in distributed.as_completed(list(futures)):
                cell = futures.pop(future)
                try:
                    yield future.result()
                except Exception as exc:  # e.g. KilledWorker after repeated worker deaths
                    yield fn.failure(cell, exc)
        finally:
            for future in futures:
                future.cancel()
            client.close()
            if cluster is not None:
                cluster.close()


SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "address": {
            "type": ["string", "null"],
            "default": None,
            "description": "An existing scheduler, e.g. tcp://host:8786; null: start a "
            "LocalCluster on this machine.",
        },
        "n_workers": {
            "type": ["integer", "null"],
            "minimum": 1,
            "default": None,
            "description": "LocalCluster worker processes (null: one per core).",
        },
        "threads_per_worker": {"type": "integer", "minimum": 1, "default": 1},
        "retries": {
            "type": "integer",
            "minimum": 0,
            "default": 2,
            "description": "Resubmissions of a task whose worker failed.",
        },
        "timeout": {
            "type": "string",
            "default": "10s",
            "description": "How long to wait for the scheduler (dask time string).",
        },
    },
}


@hookimpl
def xleval_register_executors(register: Register) -> None:
    """Register ``dask``."""
    register(
        "dask",
        DaskExecutor,
        schema=SCHEMA,
        description="Run cells on a Dask cluster (address=...) or a LocalCluster.",
    )

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
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from xleval.api import Register, hookimpl
from xleval.errors import XlevalError


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


#: dask settings for the scheduler and workers of a LocalCluster (docs/cluster.md: the
#: same for yours). A cell is seconds of CPU-bound Python in the worker's task thread; every
#: wake-up of an event loop (dask's defaults: a tick every 20 ms in each scheduler, nanny
#: and worker, system and memory monitors every 0.1-0.5 s, the statistical profiler 100
#: times a second) takes the GIL or a core from a cell. These settings cut a 2-worker
#: cluster's wake-ups from ~210 to ~24 a second; none of them changes what runs where.
WORKER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",  # only measures event-loop blockage
    "distributed.admin.system-monitor.interval": "5s",  # dashboard's CPU/memory plots
    "distributed.worker.memory.monitor-interval": "1s",  # memory limits: checked each second
}

#: Modules every cell imports, preloaded by the forkserver LocalCluster workers are forked
#: from (see ``warm_forkserver``); the bundled plugins are added from the entry points.
WORKER_PRELOAD = (
    "distributed",
    "torch",
    "xleval.run.runner",
    "xleval.train.cell",
    "xleval.train.trainer",
    "xleval_plugins.torch_models",  # imported by the models plugin on first build
)


def bundled_plugin_modules() -> list[str]:
    """The bundled plugins' modules (third-party plugins load in the worker as usual)."""
    from importlib.metadata import entry_points

    return sorted(
        ep.value for ep in entry_points(group="xleval") if ep.value.startswith("xleval_plugins.")
    )


def warm_forkserver() -> str:
    """Start the forkserver that LocalCluster workers are forked from; return the method.

    A spawned worker starts a fresh interpreter and imports dask, torch and xleval (~1.5 s
    of CPU each), and finalises that interpreter when the cluster closes (~0.5 s). Forked
    from a server that imported them once, a worker starts in milliseconds and exits with
    ``os._exit``. The server is single-threaded and runs no torch operation, so forking it
    is safe (unlike forking the driver, whose event loop runs in another thread). Starting
    it when the executor is built lets its imports overlap the driver's own start-up. Where
    there is no forkserver (Windows), workers are spawned.
    """
    import multiprocessing
    import multiprocessing.forkserver

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return "spawn"
    import dask
    from distributed.utils import get_mp_context

    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        context = get_mp_context()  # dask sets its preload list (once per process) ...
    context.set_forkserver_preload([*WORKER_PRELOAD, *bundled_plugin_modules()])  # ... ours
    multiprocessing.forkserver.ensure_running()  # returns at once; the server imports
    return "forkserver"


def _prepare_worker(
    threads: int, task: Any, dataset_file: str | None, dask_worker: Any = None
) -> None:
    """Runs on every worker before the first task: names the worker in its cells'
    provenance, refuses it if its code or environment differs from the driver's in what
    enters the cache keys (``CellTask.check_worker``), sets its torch threads, and on this
    machine installs the driver's dataset from ``dataset_file`` (0.06 s, where loading the
    bundled dataset by name parses it for 0.5 s before the worker's first task)."""
    from xleval.api.workers import set_worker_label
    from xleval.train.trainer import set_thread_budget

    if dask_worker is not None:  # client.run passes the worker it runs on
        set_worker_label(dask_worker.address)
    getattr(task, "check_worker", lambda: None)()
    set_thread_budget(threads)
    if dataset_file is not None:
        import pickle

        with open(dataset_file, "rb") as file:
            task.state(pickle.load(file))  # our own file, written by _write_dataset


def refused_workers(outcomes: dict[str, Any]) -> list[str]:
    """One line per worker whose preparation failed: a mismatch names what differs; any
    other failure (xleval or a plugin not importable there, say) names the exception."""
    lines = []
    for address, outcome in sorted(outcomes.items()):
        if not isinstance(outcome, BaseException):
            continue
        text = str(outcome)
        if not text.startswith("worker "):
            kind = type(outcome).__name__
            # dask may hand a worker's exception back as a plain Exception of its repr
            text = f"worker {address}: {text if kind == 'Exception' else f'{kind}: {text}'}"
            if "No module named" in text:
                text += " (install xleval and the spec's plugins on every worker)"
        lines.append(text)
    return lines


def _write_dataset(dataset: Any) -> str:
    """The dataset pickled into a private temporary file, for same-machine workers."""
    import pickle
    import tempfile

    handle, path = tempfile.mkstemp(prefix="xleval-dataset-", suffix=".pickle")
    try:
        with os.fdopen(handle, "wb") as file:
            pickle.dump(dataset, file, protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException:
        os.unlink(path)
        raise
    return path


class DaskExecutor:
    """Submits artifact tasks and cell tasks to a Dask scheduler and yields cell results."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.address = options["address"]
        self.n_workers = options["n_workers"]
        self.threads_per_worker = options["threads_per_worker"]
        self.retries = options["retries"]
        self.timeout = options["timeout"]
        self.stats: dict[str, Any] = {}
        self.start_method = "spawn"
        if not self.address:  # a LocalCluster: its workers' forkserver starts importing now
            import_distributed()  # the clear error when dask is missing, before warm_forkserver
            self.start_method = warm_forkserver()

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
        import dask

        # Nannies keep the config they were created with, restarts included.
        with dask.config.set(
            {**WORKER_CONFIG, "distributed.worker.multiprocessing-method": self.start_method}
        ):
            cluster = distributed.LocalCluster(
                n_workers=self.n_workers or (os.cpu_count() or 1),
                threads_per_worker=self.threads_per_worker,
                processes=True,
                dashboard_address=None,
                # a forked worker starts with the forkserver's environment (the driver's
                # when the executor was built): give it the driver's as it is now, as a
                # spawned one gets (e.g. XLEVAL_ROW_KERNEL set since)
                env=dict(os.environ),
            )
        return distributed.Client(cluster), cluster

    def _connect_while(self, work: Callable[[], None]) -> tuple[Any, Any]:
        """Connect (start the LocalCluster) in a thread while this thread does ``work``.

        ``work`` is the driver's preparation (the task's ``preload``, the dataset file): the
        driver needs torch after the cells (the statistics), and importing it here overlaps
        the wait for the workers, which fork only once the forkserver has imported the same
        modules on the other core.
        """
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, thread_name_prefix="xleval-dask-connect") as pool:
            connecting = pool.submit(self._connect)
            try:
                work()
                return connecting.result()
            except BaseException:  # e.g. Ctrl-C: close what the thread started, then go
                if connecting.exception() is None:
                    client, cluster = connecting.result()
                    client.close()
                    if cluster is not None:
                        cluster.close()
                raise

    def map(self, fn: Callable[..., Any], cells: Iterable[Any]) -> Iterator[Any]:
        distributed = import_distributed()
        cells = list(cells)
        if not cells:
            return
        fn = getattr(fn, "for_cluster", lambda: fn)()
        portable = getattr(fn, "portable_dataset", lambda: None)()
        # a LocalCluster's workers read the driver's copy of a bundled dataset from a file
        # instead of parsing it (a worker the nanny restarts loads it by name); a user's
        # file is scattered, so a restarted worker gets that copy too
        share_file = not self.address and portable is None and hasattr(fn, "loaded_dataset")
        dataset_file: list[str] = []

        def prepare_driver() -> None:
            getattr(fn, "preload", lambda: None)()
            if share_file:
                dataset_file.append(_write_dataset(fn.loaded_dataset()))

        try:
            yield from self._run(distributed, fn, cells, prepare_driver, portable, dataset_file)
        finally:
            for path in dataset_file:
                os.unlink(path)

    def _run(
        self,
        distributed: Any,
        fn: Any,
        cells: list[Any],
        prepare_driver: Callable[[], None],
        portable: Any,
        dataset_file: list[str],
    ) -> Iterator[Any]:
        client, cluster = self._connect_while(prepare_driver)
        futures: dict[Any, Any] = {}
        try:
            # Each worker thread trains with this many torch threads: more would
            # oversubscribe the cores that the worker processes share (training time
            # doubled in benchmarks/grid_scaling.py without this).
            outcomes = client.run(
                _prepare_worker,
                self.threads_per_worker,
                fn,
                next(iter(dataset_file), None),
                on_error="return",
            )
            refused = refused_workers(outcomes)
            if refused:
                raise DaskExecutorError(
                    f"{len(refused)} of {len(outcomes)} dask workers cannot compute these cells "
                    "as this machine would (their results would differ or be cached under "
                    "keys they do not match); fix or remove them:\n"
                    + "\n".join(f"  {line}" for line in refused)
                )
            dataset = None
            if portable is not None:
                # keyed by the dataset's fingerprint: dask's own content hash (hash=True)
                # took 1 s to tokenize ddtp-sections, the fingerprint is already computed
                key = task_key("dataset", portable.fingerprint)
                dataset = client.scatter({key: portable}, broadcast=True)[key]
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
            self.stats = {
                "artifact_tasks": len(artifacts),
                "cell_tasks": len(futures),
                "dataset": "file" if dataset_file else "scattered" if portable else "by name",
            }
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

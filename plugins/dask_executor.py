"""Bundled ``dask`` executor: run the grid on a Dask cluster (``pip install 'xleval[dask]'``).

On a cluster elsewhere (``address``) the grid becomes a task graph: every shared artifact (a
source model per seed and options) is one task, and the cells that need it wait for it and
receive it as an argument, so it is trained once on the cluster and no shared filesystem is
needed. A user's data file is read once by the driver and scattered to the workers; bundled
datasets load on each worker by name. A LocalCluster's workers share this machine's disk and
work as the ``processes`` executor's do (source models through the run directory, the
driver's dataset from a file). Results come back as they complete and the driver stores
each one, so progress, resume and the cache behave exactly as with the local executors.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from xleval.api import Register, hookimpl
from xleval.errors import ExecutorStopped, XlevalError


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

#: The HTTP endpoints of a LocalCluster's scheduler and workers: health checks only (dask
#: serves its info pages, logs and metrics there by default, to anyone on the machine).
LOCAL_HTTP = {
    "distributed.scheduler.http.routes": ["distributed.http.health"],
    "distributed.worker.http.routes": ["distributed.http.health"],
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
    "xleval.run.preload",  # plugins loaded, their schemas checked, code fingerprinted once
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
    # The server is started as `python -c ...`, so the current folder comes first on its
    # sys.path: from a folder holding a clone of xleval (an `xleval/` directory) it would
    # import that as a namespace package instead of the installed xleval, and every worker
    # would fail to start. Started from the interpreter's own folder, it cannot.
    here = os.getcwd()
    os.chdir(os.path.dirname(os.path.abspath(sys.executable)))
    try:
        multiprocessing.forkserver.ensure_running()  # returns at once; the server imports
    finally:
        os.chdir(here)
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


def cancelled(exc: BaseException) -> bool:
    """Whether a task's error is dask cancelling it (the scheduler was lost, data it needs
    is gone, the watchdog gave up), not the cell failing: the run cannot go on."""
    return type(exc).__name__ in ("FutureCancelledError", "CancelledError")


class CancelledTeardownFilter(logging.Filter):
    """Drops the client's "ERROR ... Traceback ... CancelledError" records: its reconnect
    loop, cancelled when the driver closes a client whose scheduler was lost, logs its own
    cancellation (distributed.utils.log_errors). That is teardown, not an error, and the
    user gets one line from xleval instead of a traceback. Other records pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, asyncio.CancelledError)


CANCELLED_TEARDOWN = CancelledTeardownFilter()


def quiet_client_teardown() -> None:
    """Install :class:`CancelledTeardownFilter` on dask's client logger (``addFilter`` adds
    the one instance once a process, however many runs connect)."""
    logging.getLogger("distributed.client").addFilter(CANCELLED_TEARDOWN)


#: seconds a comm error waits for the client to notice that its scheduler is gone
NOTICE_WAIT = 5.0


def scheduler_lost(client: Any, exc: BaseException) -> bool:
    """Whether a task's error means the driver lost its scheduler: dask cancels every
    future ("scheduler-connection-lost"), or a finished task's result could no longer be
    fetched (a comm error) because the client is no longer connected."""
    if cancelled(exc) and "connection-lost" in str(exc):
        return True
    if isinstance(exc, OSError):  # dask's CommClosedError is one: the client may not have
        deadline = time.monotonic() + NOTICE_WAIT  # noticed the lost connection yet
        while client.status == "running" and time.monotonic() < deadline:
            time.sleep(0.05)
    return client.status != "running"


class Watchdog(threading.Thread):
    """Watches, every few seconds, whether the cluster still has a worker admitted to the
    run (holding its resource); after ``timeout`` seconds with none, cancels the run's
    futures (their tasks would wait for such a worker forever) and sets ``fired``."""

    def __init__(self, client: Any, resource: str, timeout: float, futures: list[Any]) -> None:
        super().__init__(name="xleval-dask-watchdog", daemon=True)
        self.client, self.resource, self.timeout = client, resource, timeout
        self.futures = futures
        self.fired = False
        self.done = threading.Event()

    def admitted(self) -> bool:
        workers = self.client.scheduler_info().get("workers", {})
        return any(w.get("resources", {}).get(self.resource) for w in workers.values())

    def run(self) -> None:
        since = time.monotonic()
        while not self.done.wait(min(5.0, self.timeout / 4)):
            try:
                if self.admitted():
                    since = time.monotonic()
                    continue
            except Exception:  # the scheduler is gone: the results loop says so
                return
            if time.monotonic() - since >= self.timeout:
                self.fired = True
                for future in self.futures:
                    future.cancel()
                return


def _release_worker(task: Any) -> None:
    """Runs on every worker when the run ends: frees the run's state there."""
    getattr(task, "release", lambda: None)()


#: seconds to wait for the guard's report from the workers present when a run starts
ADMISSION_WAIT = 30.0


class Admissions:
    """The guard's events for one run, as they arrive (dask calls ``__call__`` from its
    event loop): which workers were admitted, which refused and why."""

    def __init__(self, run: str, topic: str) -> None:
        self.run = run
        self.topic = topic
        self.admitted: set[str] = set()
        self.refused: dict[str, str] = {}
        self._unreported: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        _, message = event
        if not isinstance(message, dict) or message.get("run") != self.run:
            return
        with self._lock:
            if message["refused"] is None:
                self.admitted.add(message["worker"])
                self.refused.pop(message["worker"], None)
            elif self.refused.get(message["worker"]) != message["refused"]:
                self.admitted.discard(message["worker"])
                self.refused[message["worker"]] = message["refused"]
                self._unreported.append(f"worker {message['worker']}: {message['refused']}")

    def new_refusals(self) -> list[str]:
        """Refusals not yet reported, once each."""
        with self._lock:
            lines, self._unreported = self._unreported, []
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
        self.on_mismatch = options["on_mismatch"]
        import_distributed()  # the clear error when dask is missing, before dask.utils
        from dask.utils import parse_timedelta

        self.no_worker_timeout = float(parse_timedelta(options["no_worker_timeout"]))
        self.stats: dict[str, Any] = {}
        self.start_method = "spawn"
        if not self.address:  # a LocalCluster: its workers' forkserver starts importing now
            import_distributed()  # the clear error when dask is missing, before warm_forkserver
            self.start_method = warm_forkserver()

    def _connect(self) -> tuple[Any, Any]:
        distributed = import_distributed()
        quiet_client_teardown()
        if self.address:
            try:
                client = distributed.Client(self.address, timeout=self.timeout)
            except TypeError as exc:
                if "TLS" not in str(exc):
                    raise
                raise DaskExecutorError(
                    f"the dask scheduler at {self.address} speaks TLS, and this machine has no "
                    "TLS client settings: set DASK_DISTRIBUTED__COMM__TLS__CA_FILE, "
                    "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT and "
                    "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY (docs/cluster.md, Security)"
                ) from None
            except (OSError, TimeoutError) as exc:
                raise DaskExecutorError(
                    f"cannot reach the dask scheduler at {self.address}: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            return client, None
        import dask

        # Nannies keep the config they were created with, restarts included.
        with dask.config.set(
            {
                **WORKER_CONFIG,
                **LOCAL_HTTP,
                "distributed.worker.multiprocessing-method": self.start_method,
            }
        ):
            cluster = distributed.LocalCluster(
                n_workers=self.n_workers or (os.cpu_count() or 1),
                threads_per_worker=self.threads_per_worker,
                processes=True,
                dashboard_address=None,
                # dask's HTTP server starts even without a dashboard: on a free local port
                # (not 8787), serving only /health (LOCAL_HTTP), not worker logs and state
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
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
        portable = None
        if self.address:  # workers elsewhere: no shared disk
            fn = getattr(fn, "for_cluster", lambda: fn)()
            portable = getattr(fn, "portable_dataset", lambda: None)()
        # A LocalCluster's workers share this machine's disk, as the `processes` executor's
        # do: source models go through the run directory (no artifact tasks, no 51 MB
        # transfers between workers, no copies in dask's store), and each worker reads the
        # driver's loaded dataset from a file (0.06 s; parsing the bundled one takes 0.5 s)
        # when the guard prepares it, a worker the nanny restarts included.
        share_file = not self.address and hasattr(fn, "loaded_dataset")
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
        run = task_key("run", str(os.getpid()), str(time.time_ns()))
        from xleval_plugins.dask_guard import TOPIC  # imports distributed: not at load time

        admissions = Admissions(run, TOPIC)
        guard_name = None
        watchdog: Watchdog | None = None
        try:
            # Each worker thread trains with this many torch threads: more would
            # oversubscribe the cores that the worker processes share (training time
            # doubled in benchmarks/grid_scaling.py without this).
            guard_name, resource = self._admit(client, fn, dataset_file, run, admissions)
            dataset = None
            if portable is not None:
                # keyed by the dataset's fingerprint: dask's own content hash (hash=True)
                # took 1 s to tokenize ddtp-sections, the fingerprint is already computed
                key = task_key("dataset", portable.fingerprint)
                # to admitted workers only: another may not even be able to unpickle it
                admitted = sorted(admissions.admitted)
                dataset = client.scatter({key: portable}, workers=admitted, broadcast=True)[key]
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
                            resources={resource: 1},
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
                    resources={resource: 1},
                )
                futures[future] = cell
            self.stats = {
                "artifact_tasks": len(artifacts),
                "cell_tasks": len(futures),
                "dataset": "file" if dataset_file else "scattered" if portable else "by name",
            }
            where = f"at {self.address}" if self.address else "of the local cluster"
            watchdog = Watchdog(client, resource, self.no_worker_timeout, list(futures))
            watchdog.start()
            for future in distributed.as_completed(list(futures)):
                self._report_refusals(admissions)
                cell = futures.pop(future)
                try:
                    yield future.result()
                except Exception as exc:  # e.g. KilledWorker after repeated worker deaths
                    if cancelled(exc) or scheduler_lost(client, exc):
                        # nothing more can run: stop, keep what finished (a cell whose
                        # result was lost with the scheduler is not blamed: it is not run)
                        raise ExecutorStopped(
                            self._why_cancelled(client, exc, watchdog, where)
                            + "; the cells finished so far are kept: run the same command "
                            "again to continue"
                        ) from None
                    yield fn.failure(cell, exc)
            for event in client.get_events(admissions.topic):  # any not delivered yet
                admissions(event)
            self._report_refusals(admissions)
        finally:
            if watchdog is not None:
                watchdog.done.set()
            for future in futures:
                future.cancel()
            if guard_name is not None:
                with contextlib.suppress(Exception):  # teardown frees the run's state
                    client.unregister_worker_plugin(guard_name)
            with contextlib.suppress(Exception):
                client.unsubscribe_topic(admissions.topic)
            client.close()
            if cluster is not None:
                cluster.close()

    def _why_cancelled(self, client: Any, exc: BaseException, watchdog: Any, where: str) -> str:
        if scheduler_lost(client, exc):
            return f"lost the dask scheduler {where}"
        if watchdog.fired:
            return (
                f"no admitted dask worker for {self.no_worker_timeout:g} s (they left or "
                "died, and any there differ from this machine)"
            )
        reason = str(exc).split("\n", 1)[0]
        return (
            f"dask cancelled the run's tasks ({reason}): e.g. every worker holding the "
            "dataset scattered to the cluster left"
        )

    def _admit(
        self, client: Any, fn: Any, dataset_file: list[str], run: str, admissions: Admissions
    ) -> tuple[str, str]:
        """Register the run's guard on every worker (and those joining later); returns its
        name and the resource admitted workers hold. Refused workers are named on stderr,
        or stop the run (``on_mismatch = "stop"``); none admitted stops it."""
        import xleval_plugins.dask_guard as guard_module
        from distributed.protocol import pickle as dask_pickle

        cloudpickle = __import__("cloudpickle")
        cloudpickle.register_pickle_by_value(guard_module)
        environment = json.dumps(getattr(fn, "environment", None), sort_keys=True, default=str)
        resource = task_key("env", environment)
        prepare = dask_pickle.dumps(
            (_prepare_worker, (self.threads_per_worker, fn, next(iter(dataset_file), None)))
        )
        release = dask_pickle.dumps((_release_worker, (fn,)))
        client.subscribe_topic(admissions.topic, admissions)
        name = f"xleval-{run}"
        present = client.register_plugin(
            guard_module.RunGuard(run, resource, prepare, release), name=name
        )
        # every present worker has run the guard; its event may still be on its way
        deadline = time.monotonic() + ADMISSION_WAIT
        while not set(present) <= admissions.admitted | set(admissions.refused):
            for event in client.get_events(admissions.topic):
                admissions(event)
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        refused = admissions.new_refusals()
        workers = len(admissions.admitted) + len(admissions.refused)
        if refused and (self.on_mismatch == "stop" or not admissions.admitted):
            raise DaskExecutorError(
                f"{len(refused)} of {workers} dask workers cannot compute these cells "
                "as this machine would (their results would differ or be cached under "
                "keys they do not match); fix or remove them:\n"
                + "\n".join(f"  {line}" for line in refused)
            )
        if not admissions.admitted:
            raise DaskExecutorError("the dask cluster has no workers")
        self._print_refusals(refused)
        return name, resource

    def _report_refusals(self, admissions: Admissions) -> None:
        """Workers that joined since and were refused: named, or the run stops."""
        refused = admissions.new_refusals()
        if refused and self.on_mismatch == "stop":
            raise DaskExecutorError(
                "a dask worker that joined cannot compute these cells as this machine "
                "would:\n" + "\n".join(f"  {line}" for line in refused)
            )
        self._print_refusals(refused)

    def _print_refusals(self, lines: list[str]) -> None:
        for line in lines:
            print(
                f"warning: {line}; excluded from this run (no cell runs there)",
                file=sys.stderr,
            )


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
        "no_worker_timeout": {
            "type": "string",
            "default": "60s",
            "description": "Stop the run when no admitted worker has been in the cluster for "
            "this long (dask time string): the cells would wait for one forever.",
        },
        "on_mismatch": {
            "enum": ["exclude", "stop"],
            "default": "exclude",
            "description": "A worker whose xleval, torch, numpy, plugins, code or row kernel "
            "differ from the driver's (or that cannot import them): 'exclude' it from the "
            "run, named on stderr (the run goes on on the others), or 'stop' the run.",
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

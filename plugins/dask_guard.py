"""The worker plugin that admits a dask worker to a run (imports nothing of xleval).

Registered for each run, dask sets it up on every worker of the cluster, now and whenever a
worker joins later (or a nanny restarts one). ``setup`` runs the executor's checks there
(xleval importable, the same code and environment as the driver's: ``CellTask.check_worker``)
and only then gives the worker the run's resource, which every task of the run requires:
a refused worker never computes a cell. Each admission or refusal is logged as an event the
driver subscribes to. ``teardown`` (when the run ends and the plugin is removed) releases
the run's state in the worker, so a long-lived worker's memory returns to its baseline.

The module is pickled by value, so a worker without xleval can still unpickle the plugin
and report that, instead of failing in dask's own code with a traceback naming no worker.
"""

from __future__ import annotations

import pickle
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

TOPIC = "xleval-workers"


def describe(exc: BaseException) -> str:
    """One line for a refused worker's cause."""
    text = str(exc)
    if text.startswith("worker "):  # WorkerMismatchError: "worker ADDRESS: differences"
        return text.split(": ", 1)[1] if ": " in text else text
    if isinstance(exc, ModuleNotFoundError):
        return f"{exc} (install xleval and the spec's plugins on every worker)"
    return f"{type(exc).__name__}: {text}"


class RunGuard(WorkerPlugin):
    """Admits a worker to one run: ``prepare`` and ``release`` are pickled (function, args)
    calls, made with ``dask_worker=`` the worker."""

    def __init__(self, run: str, resource: str, prepare: bytes, release: bytes) -> None:
        self.run = run
        self.resource = resource
        self.prepare = prepare
        self.release = release

    async def setup(self, worker: Any) -> None:
        try:
            function, args = pickle.loads(self.prepare)
            function(*args, dask_worker=worker)
        except Exception as exc:
            worker.log_event(
                TOPIC, {"run": self.run, "worker": worker.address, "refused": describe(exc)}
            )
            return
        await worker.set_resources(**{self.resource: 1})
        worker.log_event(TOPIC, {"run": self.run, "worker": worker.address, "refused": None})

    def teardown(self, worker: Any) -> None:
        try:
            function, args = pickle.loads(self.release)
            function(*args)
        except Exception:  # nothing to release where nothing was set up
            pass

"""The name of this worker process, recorded in the provenance of the cells it computes."""

from __future__ import annotations

import os
import socket

_worker_label: str | None = None


def set_worker_label(label: str) -> None:
    """Name this process in the provenance of the cells it computes (an executor calls it
    in each worker it starts, e.g. with the worker's dask address)."""
    global _worker_label
    _worker_label = label


def worker_label() -> str:
    """This process's name: the executor's label, else host and pid."""
    return _worker_label or f"{socket.gethostname()} pid {os.getpid()}"

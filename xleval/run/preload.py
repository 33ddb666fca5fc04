"""Import to do once, in a process that workers are forked from, what each worker's check
would otherwise do first: load the plugins and fingerprint the installed code.

The dask executor's forkserver imports it (``WORKER_PRELOAD``): a worker forked from there
starts with the plugins imported, their option schemas checked and every file's hash and
imports read (0.26 s per worker otherwise, before its first cell). The check itself still
runs in each worker (``CellTask.check_worker``): it stats every file again, and only facts
keyed by a file's version (path, mtime, size) or by the code already in memory are reused.
"""

import contextlib

from xleval.plugin.manager import get_plugin_manager
from xleval.run.provenance import warm_fingerprints

# A failure here must not stop the forkserver: each worker loads the plugins again anyway
# and reports what fails there.
with contextlib.suppress(Exception):
    warm_fingerprints(get_plugin_manager(strict=False))

"""A run directory: claimed with a marker, locked while a run writes to it, tidied on entry.

Two runs writing one directory mix their outputs (report.json from one spec, report.html
from the other) and both recompute every cell; a directory of someone else's files must not
be written over. So a run takes an OS lock on ``RUN_DIR/.xleval-lock`` (released by the OS
on any exit, so a killed run leaves no stale lock) and refuses when another holds it, naming
its pid; a directory is written to only if it is empty, already an xleval run directory
(``RUN_DIR/.xleval-run``, or a ``cells/`` folder from before the marker existed), or the
user says ``--force`` and none of xleval's output names is taken by a file xleval did not
write. On entry, temporary files left by interrupted writes are removed.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import IO, Any

from xleval import __version__
from xleval.errors import XlevalError

MARKER = ".xleval-run"
LOCK = ".xleval-lock"
#: What xleval writes in a run directory (anything else there is never touched).
OUTPUTS = (
    "cells",
    "artifacts",
    "report.json",
    "report.html",
    "predictions.jsonl",
    "plots",
    "analysis.json",
)


class RunDirectoryError(XlevalError):
    """The run directory is in use, not ours, or cannot be written."""


class RunDirectory:
    """An open, locked run directory (a context manager; the lock goes with ``close``)."""

    def __init__(self, path: Path, lock: IO[str] | None) -> None:
        self.path = path
        self._lock = lock

    @classmethod
    def open(cls, path: str | Path, force: bool = False) -> RunDirectory:
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RunDirectoryError(f"{path} is a file, not a directory; choose another --out")
        fresh = not path.exists() or not any(path.iterdir())
        ours = (path / MARKER).is_file() or (path / "cells").is_dir()
        if not fresh and not ours:
            taken = [name for name in OUTPUTS if (path / name).exists()]
            if not force:
                raise RunDirectoryError(
                    f"{path} is not empty and is not an xleval run directory; choose another "
                    "--out, or pass --force to write xleval's outputs next to its files"
                )
            if taken:
                raise RunDirectoryError(
                    f"{path}: {', '.join(taken)} exist(s) and were not written by xleval; "
                    "move them away or choose another --out (xleval never overwrites them)"
                )
        try:
            path.mkdir(parents=True, exist_ok=True)
            lock = _take_lock(path)
            if not (path / MARKER).is_file():
                (path / MARKER).write_text(
                    json.dumps({"xleval": __version__, "what": "an xleval run directory"}) + "\n"
                )
            _remove_temporaries(path)
        except OSError as exc:
            raise RunDirectoryError(
                f"{path}: cannot write here ({exc.strerror or exc}); choose a writable --out"
            ) from None
        return cls(path, lock)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None

    def __enter__(self) -> RunDirectory:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _take_lock(path: Path) -> IO[str] | None:
    """An exclusive, non-blocking lock on ``path/.xleval-lock`` holding our pid."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no fcntl (Windows): no lock
        return None
    handle = open(path / LOCK, "a+", encoding="utf-8")  # noqa: SIM115 - held until close
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise RunDirectoryError(
            f"{path} is in use by another xleval run (pid {holder}); wait for it to finish "
            "or choose another --out"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _remove_temporaries(path: Path) -> None:
    """Delete ``.NAME.*.tmp`` files that interrupted atomic writes left behind."""
    for folder in (path, path / "cells", path / "artifacts", path / "plots"):
        if not folder.is_dir():
            continue
        for leftover in folder.glob(".*.tmp"):
            with contextlib.suppress(OSError):  # gone already, or not ours to remove
                leftover.unlink()

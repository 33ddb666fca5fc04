"""Trained models shared between cells and processes through the run directory.

The first cell that needs a source model trains it under a file lock and saves it; every
other cell, in any worker process or a later resumed run, loads it instead of training again.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from xleval.cache import atomic_write_bytes
from xleval.methods import ArtifactCache

PERSISTED_PREFIX = "model:"


class DiskArtifactCache(ArtifactCache):
    """An :class:`ArtifactCache` that also keeps trained models in ``directory``."""

    def __init__(self, directory: Path, max_items: int | None = 64) -> None:
        super().__init__(max_items=max_items)
        self.directory = Path(directory)
        self.loaded = 0
        self.unsaved: dict[str, str] = {}

    def path(self, key: str) -> Path:
        return self.directory / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.pt"

    def _load(self, key: str) -> Any | None:
        path = self.path(key)
        if not path.exists():
            return None
        try:
            # Our own files, written by save(): full objects (models are plugin classes).
            value = torch.load(path, map_location="cpu", weights_only=False)
        except Exception:  # truncated or unreadable: train again rather than trust it
            return None
        if getattr(value, "key", None) != key:
            return None
        self.loaded += 1
        return value

    def _save(self, key: str, value: Any) -> None:
        """Persist ``value`` if other cells will want it.

        Only models trained on whole splits (source models) are shared across shots and
        methods; a model trained on k shots is cheap to retrain and a table of 2^18 x 64
        floats is 50 MB, so those stay in memory. A model that cannot be pickled stays in
        memory too (slower across processes, never wrong).
        """
        train_set = getattr(value, "train_set", None)
        if not train_set or any(part[0] != "split" for part in train_set):
            return
        buffer = io.BytesIO()
        try:
            torch.save(value, buffer)
        except Exception as exc:
            self.unsaved[key] = f"{type(exc).__name__}: {exc}"
            return
        atomic_write_bytes(self.path(key), buffer.getvalue())

    def get(self, key: str) -> Any | None:
        value = super().get(key)
        if value is None and key.startswith(PERSISTED_PREFIX):
            value = self._load(key)
            if value is not None:
                super().put(key, value)
        return value

    def get_or_create(self, key: str, create: Callable[[], Any]) -> tuple[Any, bool]:
        if not key.startswith(PERSISTED_PREFIX):
            return super().get_or_create(key, create)
        value = self.get(key)
        if value is not None:
            self.hits += 1
            return value, True
        self.directory.mkdir(parents=True, exist_ok=True)
        lock_path = self.path(key).with_suffix(".lock")
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be training it right now
            try:
                value = self._load(key)
                if value is not None:
                    super().put(key, value)
                    self.hits += 1
                    return value, True
                self.misses += 1
                value = create()
                self._save(key, value)
                super().put(key, value)
                return value, False
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

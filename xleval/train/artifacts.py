"""Trained models and featurized splits shared between cells and processes through the run
directory.

The first cell that needs a source model trains it under a file lock and saves it; every
other cell, in any worker process or a later resumed run, loads it instead of training again.
Featurized splits (``features:`` artifacts: one per dataset fingerprint, language, split and
featurizer options) are kept the same way, as plain ``.npz`` arrays.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import io
import json
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xleval.api.contracts import TrainSet
from xleval.api.files import atomic_write_bytes

if TYPE_CHECKING:
    from torch import nn

    from xleval.train.trainer import TrainReport


def artifact_key(kind: str, parts: Mapping[str, Any]) -> str:
    """A stable key for an artifact: ``kind:`` + sha256 of the canonical JSON of ``parts``."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{kind}:{hashlib.sha256(text.encode()).hexdigest()}"


def artifact_nbytes(value: Any) -> int:
    """Memory held by an artifact's tensors (models, featurized splits, scores)."""
    import torch
    from torch import nn

    if isinstance(value, torch.Tensor):
        return value.element_size() * value.numel()
    model = getattr(value, "model", None)
    if isinstance(model, nn.Module):
        return sum(t.element_size() * t.numel() for t in model.state_dict().values())
    nbytes = getattr(value, "nbytes", None)
    if callable(nbytes):
        return int(nbytes())
    return 0


class ArtifactCache:
    """Trained models, featurized splits and test scores, shared between cells of a process.

    Values are shared, not copied: never train a cached model in place (transfer copies
    weights *out of* the source model). ``max_items`` and ``max_bytes`` (tensor memory, see
    :func:`artifact_nbytes`) bound memory, least recently used out first: a model of
    2*10^5 x 64 floats is 51 MB. A runner can subclass this to persist artifacts (keys are
    strings).
    """

    def __init__(self, max_items: int | None = None, max_bytes: int | None = None) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def get(self, key: str) -> Any | None:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        return None

    def put(self, key: str, value: Any) -> None:
        self.nbytes -= self._sizes.pop(key, 0)
        self._items[key] = value
        self._items.move_to_end(key)
        self._sizes[key] = artifact_nbytes(value)
        self.nbytes += self._sizes[key]
        while len(self._items) > 1 and (
            (self.max_items is not None and len(self._items) > self.max_items)
            or (self.max_bytes is not None and self.nbytes > self.max_bytes)
        ):
            old, _ = self._items.popitem(last=False)
            self.nbytes -= self._sizes.pop(old)

    def get_or_create(self, key: str, create: Callable[[], Any]) -> tuple[Any, bool]:
        """(value, True) if cached, else (create(), False) after storing it."""
        value = self.get(key)
        if value is not None:
            self.hits += 1
            return value, True
        self.misses += 1
        value = create()
        self.put(key, value)
        return value, False


@dataclass
class TrainedModel:
    """A trained model artifact and how it was made."""

    key: str
    model: nn.Module
    report: TrainReport
    train_set: TrainSet


MODEL_PREFIX = "model:"
FEATURES_PREFIX = "features:"
PERSISTED_PREFIXES = (MODEL_PREFIX, FEATURES_PREFIX)

#: Default memory budget of one process's in-memory artifacts: a few models of 2*10^5 x 64
#: floats (51 MB each) plus featurized splits and scores; everything persisted can be
#: loaded again from disk, and a k-shot model is cheap to retrain.
DEFAULT_MAX_BYTES = 256 * 2**20


class DiskArtifactCache(ArtifactCache):
    """An :class:`ArtifactCache` that also keeps trained models and featurized splits in
    ``directory``.

    ``io_seconds`` and ``wait_seconds`` count the time spent reading/writing files and
    waiting for another process's lock (also reported to ``timer``, if a cell set one).
    """

    def __init__(
        self,
        directory: Path,
        max_items: int | None = 256,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
    ) -> None:
        super().__init__(max_items=max_items, max_bytes=max_bytes)
        self.directory = Path(directory)
        self.loaded = 0
        self.unsaved: dict[str, str] = {}
        self.timer: Callable[[str], Any] | None = None

    def _phase(self, name: str) -> Any:
        return self.timer(name) if self.timer is not None else nullcontext()

    def path(self, key: str) -> Path:
        suffix = ".npz" if key.startswith(FEATURES_PREFIX) else ".pt"
        return self.directory / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}{suffix}"

    def _load(self, key: str) -> Any | None:
        path = self.path(key)
        if not path.exists():
            return None
        with self._phase("artifact_io"):
            try:
                if key.startswith(FEATURES_PREFIX):
                    return self._load_features(path, key)
                import torch  # here, not at the top: a driver that only plans never loads it

                # Our own files, written by save(): full objects (models are plugin classes).
                value = torch.load(path, map_location="cpu", weights_only=False)
            except Exception:  # truncated or unreadable: compute again rather than trust it
                return None
        if getattr(value, "key", None) != key:
            return None
        self.loaded += 1
        return value

    def _load_features(self, path: Path, key: str) -> Any | None:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        if str(arrays.pop("key")) != key:
            return None
        value = features_from_arrays(arrays)
        self.loaded += 1
        return value

    def _save(self, key: str, value: Any) -> None:
        """Persist ``value`` if other cells will want it.

        Only models trained on whole splits (source models) are shared across shots and
        methods; a model trained on k shots is cheap to retrain and a table of 2*10^5 x 64
        floats is 50 MB, so those stay in memory. A model that cannot be pickled stays in
        memory too (slower across processes, never wrong). Featurized splits are saved as
        arrays when they are ``TokenBags`` or tensors.
        """
        if key.startswith(FEATURES_PREFIX):
            arrays = features_to_arrays(value)
            if arrays is None:
                return
            buffer = io.BytesIO()
            np.savez(buffer, key=np.array(key), **arrays)  # type: ignore[arg-type]
            with self._phase("artifact_io"):
                atomic_write_bytes(self.path(key), buffer.getvalue())
            return
        train_set = getattr(value, "train_set", None)
        if not train_set or any(part[0] != "split" for part in train_set):
            return
        import torch

        with self._phase("artifact_io"):
            buffer = io.BytesIO()
            try:
                torch.save(value, buffer)
            except Exception as exc:
                self.unsaved[key] = f"{type(exc).__name__}: {exc}"
                return
            atomic_write_bytes(self.path(key), buffer.getvalue())

    def get(self, key: str) -> Any | None:
        value = super().get(key)
        if value is None and key.startswith(PERSISTED_PREFIXES):
            value = self._load(key)
            if value is not None:
                super().put(key, value)
        return value

    @contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        lock_path = self.path(key).with_suffix(".lock")
        with open(lock_path, "w") as lock:
            with self._phase("lock_wait"):
                fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be computing it now
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def get_or_create(self, key: str, create: Callable[[], Any]) -> tuple[Any, bool]:
        if not key.startswith(PERSISTED_PREFIXES):
            return super().get_or_create(key, create)
        value = self.get(key)
        if value is not None:
            self.hits += 1
            return value, True
        with self._locked(key):
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


def features_to_arrays(value: Any) -> dict[str, np.ndarray] | None:
    """Plain arrays for a featurized split: a Tensor, or a batch with ``to_arrays()`` (and a
    ``from_arrays`` classmethod, e.g. ``TokenBags``); None: not storable."""
    import torch

    if isinstance(value, torch.Tensor):
        return {"tensor": value.numpy()}
    to_arrays = getattr(value, "to_arrays", None)
    if not callable(to_arrays) or not hasattr(type(value), "from_arrays"):
        return None
    kind = f"{type(value).__module__}:{type(value).__qualname__}"
    return {"type": np.array(kind), **to_arrays()}


def features_from_arrays(arrays: dict[str, np.ndarray]) -> Any:
    """The inverse of :func:`features_to_arrays` (the batch class is imported by the name
    it was saved under, as unpickling a model imports its plugin class)."""
    if "tensor" in arrays:
        import torch

        return torch.from_numpy(arrays["tensor"])
    module, _, name = str(arrays.pop("type")).partition(":")
    cls: Any = importlib.import_module(module)
    for part in name.split("."):
        cls = getattr(cls, part)
    return cls.from_arrays(arrays)

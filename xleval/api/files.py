"""Files written so a crash never leaves half of one, and the hash that names stored results."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def canonical_json(value: Any, strict: bool = False) -> str:
    """Sorted keys, no spaces; ``strict`` refuses NaN and infinities (ValueError)."""
    return json.dumps(
        value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=not strict
    )


def content_key(value: Any) -> str:
    """A short, stable hash of a JSON-able value (sorted keys, so dict order never matters)."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()[:32]


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` so ``path`` is either absent, the old file, or complete: never partial."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp's 0600 would hide reports from others
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def read_keyed(path: Path, key: str) -> Any | None:
    """The value stored by :func:`write_keyed` in ``path`` under ``key``; None when the file
    is missing, unreadable or holds another key (a cache entry that no longer applies)."""
    try:
        stored = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if isinstance(stored, dict) and stored.get("key") == key:
        return stored.get("value")
    return None


def write_keyed(path: Path, key: str, value: Any) -> bool:
    """Store JSON ``value`` under ``key`` in ``path`` (atomically, replacing what was there);
    False, and nothing written, if ``value`` is not strict JSON."""
    try:
        text = json.dumps({"key": key, "value": value}, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return False
    atomic_write_text(Path(path), text + "\n")
    return True

"""The run directory's store: one file per finished cell, written atomically, verified on read.

A cell's file name is the hash of everything that determines its result, so re-running a
spec finds what is already done, a changed method recomputes only its own cells, and a
file that is truncated or edited fails its checksum and is recomputed, never trusted.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from xleval.api.files import atomic_write_text, canonical_json

#: Fields every stored cell result has; a file without one is corrupt, however its checksum.
RESULT_FIELDS = ("cell", "status", "metrics", "source_metrics", "predictions")


class CellStore:
    """Finished cells of one run directory, keyed by content hash."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir) / "cells"
        self.corrupt: list[str] = []

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def load(self, key: str, note_corrupt: bool = True) -> dict[str, Any] | None:
        """The stored result for ``key``, or None if absent or not intact (then it is noted)."""
        path = self.path(key)
        try:
            envelope = json.loads(path.read_text(encoding="utf-8"))
            result = envelope["result"]
            intact = (
                envelope["key"] == key
                and envelope["sha256"]
                == hashlib.sha256(canonical_json(result).encode()).hexdigest()
                and isinstance(result, dict)
                and all(field in result for field in RESULT_FIELDS)
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            intact = False
        if not intact:
            if note_corrupt:
                self.corrupt.append(str(path))
            return None
        return result

    def save(self, key: str, result: dict[str, Any]) -> None:
        """Store ``result``; the file is ``canonical_json`` of {key, result, sha256}.

        Raises TypeError or ValueError (before writing anything) if ``result`` is not
        strict JSON data."""
        body = canonical_json(result, strict=True)
        digest = hashlib.sha256(body.encode()).hexdigest()
        # the envelope's canonical form spelled out (its keys in sorted order), so the
        # result, most of the file, is serialised once, not twice: the driver does this
        # for every cell while the workers compute the next ones
        text = f'{{"key":{canonical_json(key)},"result":{body},"sha256":"{digest}"}}'
        atomic_write_text(self.path(key), text)

    def keys(self) -> set[str]:
        if not self.dir.exists():
            return set()
        return {p.stem for p in self.dir.glob("*.json")}

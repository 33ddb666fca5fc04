"""The stored form of predictions: one module encodes, decodes, writes and reads them.

A cell's predictions on one language are its test examples' ids, their true class indices
and the model's probabilities as little-endian float32 in base64: exact (rescoring gives
the same metrics bit for bit) and compact. ``predictions.jsonl`` holds one such row per
(cell, evaluated language), with the cell's key and fields. NumPy only: reading a run's
predictions never imports torch.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from xleval.api.errors import XlevalError
from xleval.api.files import atomic_write_bytes


def as_array(values: Any, dtype: Any) -> np.ndarray:
    """A NumPy array of ``values`` (an array, a list, or a CPU/GPU torch tensor)."""
    if hasattr(values, "detach"):
        values = values.detach().to("cpu").numpy()
    return np.ascontiguousarray(np.asarray(values), dtype=dtype)


def encode_predictions(ids: Iterable[str], y_true: Any, probs: Any) -> dict[str, Any]:
    """``{"ids", "true", "shape", "probs_f32"}``: probabilities as base64 float32."""
    array = as_array(probs, "<f4")
    return {
        "ids": list(ids),
        "true": [int(v) for v in as_array(y_true, np.int64).tolist()],
        "shape": list(array.shape),
        "probs_f32": base64.b64encode(array.tobytes()).decode("ascii"),
    }


def decode_predictions(stored: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(true class indices int64 [n], probabilities float32 [n, classes]) from
    :func:`encode_predictions`' output; ValueError, TypeError or KeyError if damaged."""
    raw = base64.b64decode(stored["probs_f32"], validate=True)
    probs = np.frombuffer(raw, dtype="<f4").reshape(stored["shape"]).astype(np.float32)
    return np.asarray(stored["true"], dtype=np.int64), probs


def write_predictions(path: Path, rows: Iterable[tuple[str, dict[str, Any], str, Any]]) -> Path:
    """``predictions.jsonl`` from (cell key, cell JSON, language, stored predictions) rows,
    in the order given, written atomically."""
    lines = [
        json.dumps({"key": key, **cell, "lang": lang, **stored}, sort_keys=True)
        for key, cell, lang, stored in rows
    ]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))
    return path


def read_predictions(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(cell key, lang) -> stored predictions, from ``predictions.jsonl``."""
    out = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise XlevalError(f"{path}: no such file (was the run finished?)") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out[(row["key"], row["lang"])] = row
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise XlevalError(f"{path}:{number}: not a prediction row ({exc})") from None
    return out

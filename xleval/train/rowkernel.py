"""Whether the compiled row kernel (``xleval/train/_rowkernels.c``) is installed and switched on.

Torch-free, because every cell's cache key records it: the driver of a run keys its cells
(and a ``dask`` run starts its cluster) without importing torch, which costs 1.3 s.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

try:  # the fused step in C; optional: built where a compiler is
    _rowkernels: Any = importlib.import_module("xleval.train._rowkernels")
except ImportError:  # pragma: no cover - exercised by installs without the extension
    _rowkernels = None


def row_kernel_available() -> bool:
    """Whether the compiled row kernel is installed and not switched off
    (``XLEVAL_ROW_KERNEL=0`` forces the pure-torch path, e.g. to compare them)."""
    return _rowkernels is not None and os.environ.get("XLEVAL_ROW_KERNEL", "1") != "0"

"""The bundled models' compiled loops (``plugins/_kernels.c``), where they are built and on.

Optional like the row kernel: an install without a C compiler takes the numpy paths, which
compute identical features and batch plans (tests/test_featurize.py,
tests/test_training.py). ``XLEVAL_PLUGIN_KERNELS=0`` switches them off, e.g. to compare.
"""

from __future__ import annotations

import os
from typing import Any

try:
    from . import _kernels as _compiled
except ImportError:  # pragma: no cover - exercised by installs without the extension
    _compiled = None


def compiled_kernels() -> Any:
    """The compiled module, or None where it is not built or is switched off."""
    if _compiled is None or os.environ.get("XLEVAL_PLUGIN_KERNELS", "1") == "0":
        return None
    return _compiled

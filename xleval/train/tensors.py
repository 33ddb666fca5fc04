"""NumPy arrays as the tensors a metric's ``compute`` takes (its contract is torch's)."""

from __future__ import annotations

from typing import Any

import numpy as np


def metric_inputs(y_true: np.ndarray, probs: np.ndarray) -> tuple[Any, Any]:
    """(LongTensor [n], FloatTensor [n, classes]) sharing nothing with the arrays."""
    import torch

    return (
        torch.from_numpy(np.array(y_true, dtype=np.int64)),
        torch.from_numpy(np.array(probs, dtype=np.float32)),
    )

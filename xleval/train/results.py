"""What one cell produced: metrics per language, predictions, and how it trained."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xleval.api.predictions import encode_predictions
from xleval.experiment.grid import Cell


@dataclass
class Predictions:
    """Per-example predictions on one test split: ids, true class indices [n] and
    probabilities [n, classes] (float32, exactly as the metrics saw them)."""

    ids: tuple[str, ...]
    y_true: np.ndarray
    probs: np.ndarray


@dataclass
class CellResult:
    """One cell's outcome: metrics on the target test split and on each source's."""

    #: which cell: method, protocol, sources, target, shots, seed
    cell: Cell
    labels: tuple[str, ...]
    metrics: dict[str, float]
    source_metrics: dict[str, dict[str, float]]
    n_test: dict[str, int]
    n_shots: int
    shortfall: dict[str, int]
    train_seconds: float
    eval_seconds: float
    training: list[dict[str, Any]] = field(default_factory=list)
    #: what the protocol recorded (JSON): e.g. "transfer" (the strategy's report)
    info: dict[str, Any] = field(default_factory=dict)
    predictions: dict[str, Predictions] = field(default_factory=dict)
    #: Seconds per phase (featurize, init, train, transfer, eval, artifact_io); their sum
    #: is about train_seconds + eval_seconds.
    timings: dict[str, float] = field(default_factory=dict)

    def stored(self) -> dict[str, Any]:
        """The result as the cell store keeps it."""
        return {
            "cell": self.cell.to_json(),
            "status": "ok",
            "error": None,
            "metrics": self.metrics,
            "source_metrics": self.source_metrics,
            "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds,
            "n_test": self.n_test[self.cell.target],
            "info": {
                "n_test": self.n_test,
                "n_shots": self.n_shots,
                "shortfall": self.shortfall,
                "training": self.training,
                **self.info,
                "timings": self.timings,  # seconds per phase (benchmarks/grid_scaling.py)
            },
            "predictions": {
                lang: encode_predictions(p.ids, p.y_true, p.probs)
                for lang, p in self.predictions.items()
            },
        }

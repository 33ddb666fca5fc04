"""Bundled metrics: accuracy, macro-F1, log-loss, calibration (ECE) and the Brier score.

Each takes ``y_true: LongTensor[n]`` (class indices) and ``probs: Tensor[n, classes]``
(rows summing to 1) and returns a float; an empty evaluation set gives NaN rather than a
made-up number. Computations run in float64.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from xleval.errors import XlevalError
from xleval.hookspecs import Register, hookimpl

if TYPE_CHECKING:  # torch is imported where used: loading the plugins stays fast
    import torch

NO_OPTIONS: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": {}}


class MetricError(XlevalError):
    """Labels and probabilities that do not fit together."""


def _check(y_true: torch.Tensor, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    y = torch.as_tensor(y_true, dtype=torch.int64)
    p = torch.as_tensor(probs, dtype=torch.float64)
    if p.dim() != 2 or y.dim() != 1 or len(y) != len(p):
        raise MetricError(
            f"metrics need y_true [n] and probs [n, classes]; got "
            f"{tuple(y.shape)} and {tuple(p.shape)}"
        )
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= p.shape[1]):
        raise MetricError(
            f"labels must be in [0, {p.shape[1]}), got {int(y.min())}..{int(y.max())}"
        )
    return y, p


class Metric(ABC):
    name = "metric"
    higher_is_better = True

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def compute(self, y_true: torch.Tensor, probs: torch.Tensor) -> float:
        y, p = _check(y_true, probs)
        return float("nan") if len(y) == 0 else float(self._compute(y, p))

    @abstractmethod
    def _compute(self, y: torch.Tensor, p: torch.Tensor) -> float:
        """The metric on a validated, non-empty (labels, probabilities) pair."""


class Accuracy(Metric):
    """Share of examples whose most probable class is the true one (ties: lowest index)."""

    name = "accuracy"

    def _compute(self, y: torch.Tensor, p: torch.Tensor) -> float:
        return float((p.argmax(1) == y).double().mean())


class MacroF1(Metric):
    """Unweighted mean of per-class F1 over the classes that occur in y_true or in the
    predictions (scikit-learn's default); a class with no true positives scores 0."""

    name = "macro_f1"

    def _compute(self, y: torch.Tensor, p: torch.Tensor) -> float:
        import torch

        pred = p.argmax(1)
        classes = p.shape[1]
        true_pos = torch.bincount(y[pred == y], minlength=classes).double()
        predicted = torch.bincount(pred, minlength=classes).double()
        actual = torch.bincount(y, minlength=classes).double()
        present = (predicted + actual) > 0
        # F1 = 2TP / (predicted + actual): equal to 2PR/(P+R), and 0 when TP = 0.
        f1 = 2 * true_pos[present] / (predicted[present] + actual[present])
        return float(f1.mean())


class NegativeLogLikelihood(Metric):
    """Mean -log p(true class) (log-loss); probabilities are clipped at ``eps``."""

    name = "nll"
    higher_is_better = False

    def _compute(self, y: torch.Tensor, p: torch.Tensor) -> float:
        picked = p.gather(1, y.unsqueeze(1)).squeeze(1).clamp_min(self.options["eps"])
        return float(-picked.log().mean())


class ExpectedCalibrationError(Metric):
    """Σ_b |B_b|/n · |accuracy(B_b) − mean confidence(B_b)| over ``bins`` equal-width bins of
    the top-class probability (bin b holds confidences in (b/bins, (b+1)/bins])."""

    name = "ece"
    higher_is_better = False

    def _compute(self, y: torch.Tensor, p: torch.Tensor) -> float:
        import torch

        bins = self.options["bins"]
        confidence, pred = p.max(1)
        which = (torch.ceil(confidence * bins).long() - 1).clamp(0, bins - 1)
        correct = (pred == y).double()
        count = torch.bincount(which, minlength=bins).double()
        gap = (
            torch.bincount(which, weights=correct, minlength=bins)
            - torch.bincount(which, weights=confidence, minlength=bins)
        ).abs()
        return float(gap.sum() / count.sum())


class Brier(Metric):
    """Multi-class Brier score: mean over examples of Σ_y (p_y − 1[y = true])², in [0, 2]."""

    name = "brier"
    higher_is_better = False

    def _compute(self, y: torch.Tensor, p: torch.Tensor) -> float:
        import torch

        onehot = torch.zeros_like(p)
        onehot[torch.arange(len(y)), y] = 1.0
        return float(((p - onehot) ** 2).sum(1).mean())


@hookimpl
def xleval_register_metrics(register: Register) -> None:
    """Register the bundled metrics."""
    register("accuracy", Accuracy, schema=NO_OPTIONS, description="top-1 accuracy")
    register(
        "macro_f1",
        MacroF1,
        schema=NO_OPTIONS,
        description="mean per-class F1 (classes seen in labels or predictions)",
    )
    register(
        "nll",
        NegativeLogLikelihood,
        schema={
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "eps": {"type": "number", "exclusiveMinimum": 0, "maximum": 0.5, "default": 1e-15}
            },
        },
        description="log-loss: mean negative log-probability of the true class (lower is better)",
    )
    register(
        "ece",
        ExpectedCalibrationError,
        schema={
            "type": "object",
            "additionalProperties": False,
            "properties": {"bins": {"type": "integer", "minimum": 1, "default": 15}},
        },
        description="expected calibration error over equal-width confidence bins (lower is better)",
    )
    register(
        "brier", Brier, schema=NO_OPTIONS, description="multi-class Brier score (lower is better)"
    )

"""Bundled metrics: accuracy, macro-F1, log-loss, calibration (ECE) and the Brier score.

Each takes ``y_true: LongTensor[n]`` (class indices) and ``probs: Tensor[n, classes]``
(rows summing to 1) and returns a float; an empty evaluation set gives NaN rather than a
made-up number. Computations run in float64.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np

from xleval.api import MetricForm, Register, hookimpl, mean_of
from xleval.errors import XlevalError

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

    def form(self, y_true: np.ndarray, probs: np.ndarray) -> MetricForm:
        """The metric as per-example feature sums (:class:`xleval.api.MetricForm`), for the
        report's statistics: leaving examples out is then one vectorised call."""
        return FORMS[type(self)](
            np.asarray(y_true, dtype=np.int64), np.asarray(probs, dtype=np.float64), self.options
        )


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


# -- vectorised forms (numpy, float64) ------------------------------------------------


def _onehot(index: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((len(index), size))
    out[np.arange(len(index)), index] = 1.0
    return out


def accuracy_form(y: np.ndarray, p: np.ndarray, options: dict[str, Any]) -> MetricForm:
    return mean_of((p.argmax(axis=1) == y).astype(np.float64))


def nll_form(y: np.ndarray, p: np.ndarray, options: dict[str, Any]) -> MetricForm:
    picked = np.maximum(p[np.arange(len(y)), y], options.get("eps", 1e-15))
    return mean_of(-np.log(picked))


def brier_form(y: np.ndarray, p: np.ndarray, options: dict[str, Any]) -> MetricForm:
    return mean_of(((p - _onehot(y, p.shape[1])) ** 2).sum(axis=1))


def macro_f1_form(y: np.ndarray, p: np.ndarray, options: dict[str, Any]) -> MetricForm:
    classes = p.shape[1]
    pred = p.argmax(axis=1)
    actual = _onehot(y, classes)
    predicted = _onehot(pred, classes)
    true_pos = actual * (pred == y)[:, None]

    def finish(sums: np.ndarray, n: int) -> np.ndarray:
        tp, pr, ac = sums[:, :classes], sums[:, classes : 2 * classes], sums[:, 2 * classes :]
        denominator = pr + ac
        present = denominator > 0
        f1 = np.where(present, 2.0 * tp / np.where(present, denominator, 1.0), 0.0)
        return f1.sum(axis=1) / present.sum(axis=1)

    return MetricForm(np.hstack([true_pos, predicted, actual]), finish)


def ece_form(y: np.ndarray, p: np.ndarray, options: dict[str, Any]) -> MetricForm:
    bins = int(options.get("bins", 15))
    confidence = p.max(axis=1)
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    member = _onehot(which, bins)

    def finish(sums: np.ndarray, n: int) -> np.ndarray:
        count, hits, conf = sums[:, :bins], sums[:, bins : 2 * bins], sums[:, 2 * bins :]
        return np.abs(hits - conf).sum(axis=1) / count.sum(axis=1)

    return MetricForm(
        np.hstack([member, member * correct[:, None], member * confidence[:, None]]), finish
    )


FORMS = {
    Accuracy: accuracy_form,
    MacroF1: macro_f1_form,
    NegativeLogLikelihood: nll_form,
    ExpectedCalibrationError: ece_form,
    Brier: brier_form,
}


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

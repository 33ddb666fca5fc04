"""Bundled fusion strategies: exp-sum and friends over per-language models' scores.

Every strategy takes ``scores: Tensor[models, n, classes]`` (unnormalised model outputs)
and returns probabilities ``[n, classes]`` whose rows sum to 1, computed in log space in
float64 so large scores neither overflow nor underflow. ``weights`` (one non-negative
number per model, in the order the scores are stacked) defaults to equal weights.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from xleval.api import Register, hookimpl
from xleval.errors import XlevalError

if TYPE_CHECKING:  # torch is imported where used: loading the plugins stays fast
    import torch

WEIGHTS_OPTION: dict[str, Any] = {
    "type": ["array", "null"],
    "items": {"type": "number", "minimum": 0},
    "minItems": 1,
    "default": None,
    "description": "One weight per model, in the order the models' scores are stacked "
    "(null: equal weights).",
}


def _schema(**extra: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {"weights": WEIGHTS_OPTION, **extra},
    }


class FusionError(XlevalError):
    """Scores or weights that cannot be fused (wrong shape, weights that do not match)."""


class Fusion(ABC):
    """Base: checks the scores and weights; subclasses implement ``_log_probs``."""

    name = "fusion"

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def weights(self, models: int, normalise: bool = True) -> torch.Tensor:
        import torch

        given: Sequence[float] | None = self.options.get("weights")
        if given is None:
            w = torch.ones(models, dtype=torch.float64)
        else:
            if len(given) != models:
                raise FusionError(f"fusion '{self.name}': {len(given)} weights for {models} models")
            w = torch.tensor(given, dtype=torch.float64)
            if not float(w.sum()) > 0:
                raise FusionError(f"fusion '{self.name}': weights must not all be zero")
        return w / w.sum() if normalise else w

    def fuse(self, scores: torch.Tensor) -> torch.Tensor:
        import torch

        if scores.dim() != 3 or scores.shape[0] == 0 or scores.shape[2] == 0:
            raise FusionError(
                f"fusion '{self.name}' needs scores [models, n, classes], got "
                f"shape {tuple(scores.shape)}"
            )
        log_probs = self._log_probs(scores.to(torch.float64))
        return log_probs.exp().to(scores.dtype if scores.is_floating_point() else torch.float32)

    @abstractmethod
    def _log_probs(self, scores: torch.Tensor) -> torch.Tensor:
        """Fused log-probabilities [n, classes] from float64 scores [models, n, classes]."""


class ExpSum(Fusion):
    """``F(y|x) = Σ_i w_i exp(t_i(x,y)) / Σ_y' Σ_i w_i exp(t_i(x,y'))``.

    The source's formula divides by ``Σ_y' Π_i exp(s_i(x,y'))``: a product over models
    does not normalise a sum over models (two models with scores 0 give 2/C per class),
    but the denominator does not depend on y, so its argmax is that of
    ``Σ_i exp(s_i(x,y))``; normalising by the same sum over y gives that argmax with
    probabilities that sum to 1. ``on="scores"`` (the source's reading, default) uses the
    raw scores ``t_i = s_i``, so a model with large, confident scores dominates;
    ``on="log_probs"`` uses ``t_i = log_softmax(s_i)``, which makes exp-sum the (weighted)
    mean of the models' probabilities.
    """

    name = "exp-sum"

    def _log_probs(self, scores: torch.Tensor) -> torch.Tensor:
        import torch

        terms = scores if self.options["on"] == "scores" else torch.log_softmax(scores, -1)
        log_w = self.weights(scores.shape[0]).log().view(-1, 1, 1)
        numerator = torch.logsumexp(terms + log_w, dim=0)  # [n, classes]
        return numerator - torch.logsumexp(numerator, dim=-1, keepdim=True)


class LogitSum(Fusion):
    """``softmax(Σ_i w_i s_i)``: the source's code example, which adds the models' outputs.

    Weights are used as given (default 1 each, the plain sum), since scaling all of them
    changes the sharpness of the result.
    """

    name = "logit-sum"

    def _log_probs(self, scores: torch.Tensor) -> torch.Tensor:
        import torch

        w = self.weights(scores.shape[0], normalise=False).view(-1, 1, 1)
        return torch.log_softmax((w * scores).sum(0), dim=-1)


class ProbMean(Fusion):
    """``Σ_i w_i softmax(s_i)`` with weights normalised to sum to 1."""

    name = "prob-mean"

    def _log_probs(self, scores: torch.Tensor) -> torch.Tensor:
        import torch

        log_w = self.weights(scores.shape[0]).log().view(-1, 1, 1)
        return torch.logsumexp(torch.log_softmax(scores, -1) + log_w, dim=0)


class MaxProb(Fusion):
    """``p(y) ∝ max_i w_i softmax(s_i)(y)``: each class as likely as the model most sure of
    it, renormalised."""

    name = "max-prob"

    def _log_probs(self, scores: torch.Tensor) -> torch.Tensor:
        import torch

        log_w = self.weights(scores.shape[0]).log().view(-1, 1, 1)
        best = (torch.log_softmax(scores, -1) + log_w).amax(dim=0)
        return best - torch.logsumexp(best, dim=-1, keepdim=True)


def seed_formula(scores: torch.Tensor) -> torch.Tensor:
    """The source's literal ``Σ_i exp(s_i) / Σ_y' Π_i exp(s_i(y'))`` (not normalised; kept
    for tests and docs, overflows for large scores)."""
    numerator = scores.exp().sum(0)
    denominator = scores.sum(0).exp().sum(-1, keepdim=True)
    return numerator / denominator


@hookimpl
def xleval_register_fusion_strategies(register: Register) -> None:
    """Register the bundled fusion strategies."""
    register(
        "exp-sum",
        ExpSum,
        schema=_schema(
            on={
                "enum": ["scores", "log_probs"],
                "default": "scores",
                "description": "scores: the raw outputs (the source's s_i); "
                "log_probs: log-softmax first, i.e. the mean of probabilities.",
            }
        ),
        description="the source's Σ_i exp(s_i), normalised over classes",
    )
    register(
        "logit-sum",
        LogitSum,
        schema=_schema(),
        description="softmax of the summed scores (the source's code example)",
    )
    register("prob-mean", ProbMean, schema=_schema(), description="mean of the probabilities")
    register(
        "max-prob",
        MaxProb,
        schema=_schema(),
        description="per class, the highest probability any model gives; renormalised",
    )

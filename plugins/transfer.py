"""Bundled transfer strategies: weight copying between source and target models.

They rely on the bundled models' conventions: an ``embedding`` module (``nn.Embedding`` or
``nn.EmbeddingBag``), a ``classifier`` module (the output layer) and, for models whose rows
depend on the training set, a ``vocabulary`` (row i embeds ``vocabulary[i]``). Models of
identical shape and vocabulary (bag-of-embeddings always: its hashed rows are the same
for every language) are copied whole, exactly as the seed's
``target.load_state_dict(source.state_dict())``.

After ``transfer`` each strategy's ``last_report`` says what was copied; the methods put
it in the cell result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xleval.api import Register, hookimpl
from xleval.errors import XlevalError

if TYPE_CHECKING:  # torch is imported where used: loading the plugins stays fast
    import torch
    from torch import nn

NO_OPTIONS: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": {}}


class TransferError(XlevalError):
    """The two models cannot exchange weights (different shapes, missing modules)."""


def _module(model: nn.Module, name: str, strategy: str) -> nn.Module:
    from torch import nn

    module = getattr(model, name, None)
    if not isinstance(module, nn.Module):
        raise TransferError(
            f"transfer strategy '{strategy}' needs models with an '{name}' module; "
            f"{type(model).__name__} has none"
        )
    return module


def _copy_module(source: nn.Module, target: nn.Module, what: str) -> None:
    src, dst = source.state_dict(), target.state_dict()
    mismatched = [k for k in dst if k not in src or src[k].shape != dst[k].shape]
    if mismatched or set(src) != set(dst):
        shapes = {
            k: (tuple(src[k].shape) if k in src else None, tuple(v.shape)) for k, v in dst.items()
        }
        raise TransferError(
            f"cannot copy the {what}: source and target shapes differ "
            f"(parameter: (source, target)) {shapes}"
        )
    target.load_state_dict(src)


def _embedding_weight(model: nn.Module, strategy: str) -> torch.Tensor:
    import torch

    weight = getattr(_module(model, "embedding", strategy), "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise TransferError(f"transfer strategy '{strategy}': the embedding has no weight")
    return weight


class WeightCopy:
    """Copy the source's weights into the target, then optionally freeze the embeddings.

    Same shapes and vocabularies: ``load_state_dict`` (the seed's transfer). Different
    vocabularies: the embedding rows of the tokens both vocabularies contain (``<unk>``
    included) and the classifier; the other target rows keep their initial values.
    """

    def __init__(self, name: str, freeze_embeddings: bool = False) -> None:
        self.name = name
        self.freeze_embeddings = freeze_embeddings
        self.last_report: dict[str, Any] = {}

    def transfer(self, source_model: nn.Module, target_model: nn.Module) -> nn.Module:
        import torch

        source_vocab = getattr(source_model, "vocabulary", None)
        target_vocab = getattr(target_model, "vocabulary", None)
        if source_vocab is None or target_vocab is None or source_vocab == target_vocab:
            _copy_module(source_model, target_model, "model")
            weight = getattr(getattr(target_model, "embedding", None), "weight", None)
            rows = int(weight.shape[0]) if isinstance(weight, torch.Tensor) else None
            report: dict[str, Any] = {"mode": "state_dict", "embedding_rows_copied": rows}
        else:
            source_weight = _embedding_weight(source_model, self.name)
            target_weight = _embedding_weight(target_model, self.name)
            if source_weight.shape[1] != target_weight.shape[1]:
                raise TransferError(
                    f"cannot copy embeddings of width {source_weight.shape[1]} into width "
                    f"{target_weight.shape[1]}"
                )
            source_index = {token: i for i, token in enumerate(source_vocab)}
            pairs = [(source_index[t], i) for i, t in enumerate(target_vocab) if t in source_index]
            with torch.no_grad():
                if pairs:
                    src_rows, dst_rows = (
                        torch.tensor(p, dtype=torch.int64) for p in zip(*pairs, strict=True)
                    )
                    target_weight[dst_rows] = source_weight[src_rows]
            _copy_module(
                _module(source_model, "classifier", self.name),
                _module(target_model, "classifier", self.name),
                "classifier",
            )
            report = {
                "mode": "shared_vocabulary",
                "embedding_rows_copied": len(pairs),
                "source_vocabulary": len(source_vocab),
                "target_vocabulary": len(target_vocab),
            }
        if self.freeze_embeddings:
            for parameter in _module(target_model, "embedding", self.name).parameters():
                parameter.requires_grad_(False)
        report["frozen"] = ["embedding"] if self.freeze_embeddings else []
        report["strategy"] = self.name
        self.last_report = report
        return target_model


class ClassifierOnly:
    """Copy only the output layer: the target keeps its own (initial) embeddings."""

    name = "classifier-only"

    def __init__(self) -> None:
        self.last_report: dict[str, Any] = {}

    def transfer(self, source_model: nn.Module, target_model: nn.Module) -> nn.Module:
        _copy_module(
            _module(source_model, "classifier", self.name),
            _module(target_model, "classifier", self.name),
            "classifier",
        )
        self.last_report = {
            "strategy": self.name,
            "mode": "classifier",
            "embedding_rows_copied": 0,
            "frozen": [],
        }
        return target_model


@hookimpl
def xleval_register_transfer_strategies(register: Register) -> None:
    """Register the bundled transfer strategies."""
    register(
        "weight-copy",
        lambda options: WeightCopy("weight-copy"),
        schema=NO_OPTIONS,
        description="the seed's load_state_dict; shared-vocabulary rows + classifier "
        "when vocabularies differ",
    )
    register(
        "weight-copy-frozen",
        lambda options: WeightCopy("weight-copy-frozen", freeze_embeddings=True),
        schema=NO_OPTIONS,
        description="weight-copy, then the embeddings stay frozen during fine-tuning",
    )
    register(
        "classifier-only",
        lambda options: ClassifierOnly(),
        schema=NO_OPTIONS,
        description="copy only the output layer",
    )

"""``hf-encoder``: a pretrained Hugging Face encoder, pooled, with a linear head.

It meets the same model contract as the bundled bag-of-embeddings models
(``xleval_register_models``), so every protocol works with it: weight-copy transfer copies
encoder and head (the same architecture on both sides), fusion fuses its scores, joint
training trains it on both languages. It trains through xleval's trainer on the autograd
path, with the optimizer, learning rate and batch size of its own options
(``training_overrides``): a pretrained encoder needs Adam and a small rate, not the bag
models' Adagrad at 0.2.

Texts are tokenised once per split (``featurize``, cached by the feature store under
``feature_key``) into a ragged :class:`TokenIds`; each mini-batch is padded to its own
longest text. Prediction sorts texts by length and runs batches of similar lengths under
``torch.inference_mode``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from xleval_plugins.executors import available_cores

from xleval.errors import OptionsError
from xleval.train.trainer import torch_threads


@dataclass(frozen=True)
class TokenIds:
    """Token ids of several texts, ragged: text ``i`` is ``ids[offsets[i]:offsets[i + 1]]``."""

    ids: torch.Tensor  # int64, all texts' ids back to back
    offsets: torch.Tensor  # int64, len(texts) + 1

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def to_arrays(self) -> dict[str, Any]:
        """Plain arrays, how the feature store keeps a tokenised split on disk."""
        return {"ids": self.ids.numpy(), "offsets": self.offsets.numpy()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any]) -> TokenIds:
        return cls(torch.from_numpy(arrays["ids"]), torch.from_numpy(arrays["offsets"]))

    @classmethod
    def concat(cls, parts: Sequence[TokenIds]) -> TokenIds:
        """The texts of ``parts`` one after another (joint training's cached features)."""
        offsets = [parts[0].offsets]
        for part in parts[1:]:
            offsets.append(part.offsets[1:] + offsets[-1][-1])
        return cls(torch.cat([p.ids for p in parts]), torch.cat(offsets))

    @property
    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def select(self, index: torch.Tensor | Sequence[int]) -> TokenIds:
        index = torch.as_tensor(index, dtype=torch.int64)
        lengths = self.lengths[index]
        offsets = torch.zeros(len(index) + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=offsets[1:])
        starts = self.offsets[index]
        positions = torch.repeat_interleave(starts - offsets[:-1], lengths) + torch.arange(
            int(offsets[-1])
        )
        return TokenIds(self.ids[positions], offsets)

    def padded(self, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) [texts, longest] padded on the right."""
        lengths = self.lengths
        width = max(1, int(lengths.max())) if len(self) else 1
        mask = torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)
        input_ids = torch.full((len(self), width), pad_id, dtype=torch.int64)
        input_ids[mask] = self.ids
        return input_ids, mask.long()


def _quiet_transformers() -> Any:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def load_encoder(directory: str) -> tuple[nn.Module, Any]:
    """(encoder, tokenizer) saved in ``directory`` (weights read once per builder)."""
    transformers = _quiet_transformers()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
        encoder = transformers.AutoModel.from_pretrained(directory)
    except (OSError, ValueError, KeyError) as exc:
        raise OptionsError(f"hf-encoder: cannot load {directory}: {exc}") from None
    encoder.eval()
    return encoder, tokenizer


def build_classifier(
    loaded: tuple[nn.Module, Any], n_classes: int, options: dict[str, Any]
) -> HFEncoderClassifier:
    """A model with a copy of the loaded encoder and a fresh head (torch's RNG: the seed)."""
    encoder, tokenizer = loaded
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no warnings in forked workers
    return HFEncoderClassifier(copy.deepcopy(encoder), tokenizer, n_classes, options)


class HFEncoderClassifier(nn.Module):
    """``encoder`` (a transformers AutoModel) pooled, then ``classifier`` (nn.Linear).

    ``embedding`` is the encoder's input embeddings (what ``weight-copy-frozen`` freezes).
    """

    def __init__(
        self, encoder: nn.Module, tokenizer: Any, n_classes: int, options: dict[str, Any]
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.options = options
        hidden = int(encoder.config.hidden_size)
        self.classifier = nn.Linear(hidden, n_classes)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        self.device_name = _device(options["device"])
        self.dtype = getattr(torch, options["dtype"])
        self.encoder.to(device=self.device_name, dtype=self.dtype)
        self.classifier.to(device=self.device_name)
        _freeze(encoder, options["freeze"])
        self.threads = int(options["threads"] or available_cores())
        self.training_overrides = {
            "optimizer": options["optimizer"],
            "lr": options["lr"],
            "batch_size": options["batch_size"],
            "threads": self.threads,  # capped by the executor's budget (torch_threads)
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Back on its device after unpickling: the artifact store loads models onto the CPU
        (``map_location="cpu"``), and a shared source model is reloaded whenever it was
        evicted from memory."""
        super().__setstate__(state)
        if self.device_name != "cpu":
            self.encoder.to(self.device_name)
            self.classifier.to(self.device_name)

    @property
    def embedding(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    @property
    def feature_key(self) -> tuple[Any, ...]:
        return ("hf-encoder", self.options["identity"], self.options["max_length"])

    def featurize(self, texts: Sequence[str]) -> TokenIds:
        encoded = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.options["max_length"],
            add_special_tokens=True,
        )["input_ids"]
        lengths = torch.tensor([len(row) for row in encoded], dtype=torch.int64)
        offsets = torch.zeros(len(encoded) + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=offsets[1:])
        flat = [i for row in encoded for i in row]
        return TokenIds(torch.tensor(flat, dtype=torch.int64), offsets)

    def _scores(self, batch: TokenIds) -> torch.Tensor:
        input_ids, mask = batch.padded(self.pad_id)
        input_ids, mask = input_ids.to(self.device_name), mask.to(self.device_name)
        hidden = self.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        if self.options["pooling"] == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        return self.classifier(pooled.float()).float().cpu()

    def forward(self, batch: TokenIds) -> torch.Tensor:
        if self.training or torch.is_grad_enabled():
            return self._scores(batch)
        # Prediction: texts sorted by length, batches of similar lengths, then unsorted.
        order = torch.argsort(batch.lengths, stable=True)
        out = torch.empty((len(batch), self.classifier.out_features))
        with torch.inference_mode(), torch_threads(self.threads):
            for chunk in order.split(self.options["eval_batch_size"]):
                out[chunk] = self._scores(batch.select(chunk))
        return out


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise OptionsError("hf-encoder: device = 'cuda' but torch sees no CUDA device here")
    return name


def _layers(encoder: nn.Module) -> nn.ModuleList | None:
    """The encoder's list of transformer layers: the module list as long as the
    configuration's number of hidden layers (BERT, XLM-R, DistilBERT, MiniLM, E5 ...)."""
    n = getattr(encoder.config, "num_hidden_layers", None)
    for module in encoder.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    return None


def _freeze(encoder: nn.Module, freeze: str | int) -> None:
    if freeze == "none":
        return
    if freeze == "encoder":
        encoder.requires_grad_(False)
        return
    encoder.get_input_embeddings().requires_grad_(False)
    embeddings = getattr(encoder, "embeddings", None)
    if isinstance(embeddings, nn.Module):  # position and type embeddings, their norm
        embeddings.requires_grad_(False)
    if freeze == "embeddings":
        return
    layers = _layers(encoder)
    if layers is None:
        raise OptionsError(
            f"hf-encoder: freeze = {freeze}: cannot find the layers of {type(encoder).__name__}"
        )
    if int(freeze) > len(layers):
        raise OptionsError(
            f"hf-encoder: freeze = {freeze}, but the encoder has {len(layers)} layers"
        )
    for layer in layers[: int(freeze)]:
        layer.requires_grad_(False)

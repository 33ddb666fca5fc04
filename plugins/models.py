"""Bundled model builders: bag-of-embeddings and the seed's embedding-linear classifier.

Both models expose ``embedding`` and ``classifier`` submodules (the bundled transfer
strategies copy them), and embedding-linear also a ``vocabulary`` (row i embeds
``vocabulary[i]``), so weight copying can match rows between two vocabularies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from xleval_plugins.featurize import HashedFeaturizer, TokenBags, VocabularyFeaturizer

from xleval.errors import OptionsError
from xleval.hookspecs import Register, hookimpl

BAG_OF_EMBEDDINGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "dim": {
            "type": "integer",
            "minimum": 1,
            "default": 64,
            "description": "Embedding size (fastText supervised: 100; 64 costs less).",
        },
        "buckets": {
            "type": "integer",
            "minimum": 1,
            "maximum": 2**31 - 1,
            "default": 200_000,
            "description": "Rows of the hashed table shared by all languages.",
        },
        "ngram_range": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0},
            "minItems": 2,
            "maxItems": 2,
            "default": [3, 5],
            "description": "Character n-gram lengths [min, max] of '<word>'; [0, 0]: none.",
        },
        "word_ngrams": {
            "type": "integer",
            "minimum": 1,
            "default": 1,
            "description": "Longest word n-gram hashed as a feature (1: words only).",
        },
        "max_tokens": {
            "type": ["integer", "null"],
            "minimum": 1,
            "default": 1024,
            "description": "Tokens kept per text (null: all).",
        },
    },
}

EMBEDDING_LINEAR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "dim": {"type": "integer", "minimum": 1, "default": 64},
        "min_count": {
            "type": "integer",
            "minimum": 1,
            "default": 1,
            "description": "Words seen fewer times in the training set map to <unk>.",
        },
        "max_vocab": {
            "type": ["integer", "null"],
            "minimum": 1,
            "default": None,
            "description": "Vocabulary size cap, <unk> included (null: no cap).",
        },
        "max_tokens": {"type": ["integer", "null"], "minimum": 1, "default": 1024},
        "sparse": {
            "type": "boolean",
            "default": False,
            "description": "Sparse embedding gradients (needed only for huge vocabularies).",
        },
    },
}


def _init_fasttext_style(embedding_weight: torch.Tensor, classifier: nn.Linear) -> None:
    """fastText's initialisation: input rows U(-1/dim, 1/dim), output layer zero."""
    dim = embedding_weight.shape[1]
    with torch.no_grad():
        embedding_weight.uniform_(-1.0 / dim, 1.0 / dim)
        classifier.weight.zero_()
        classifier.bias.zero_()


class SparseMeanBag(torch.autograd.Function):
    """Mean bags as ``A @ table[unique]`` whose gradient is a coalesced sparse tensor with one
    row per distinct id: what ``EmbeddingBag(sparse=True)`` computes, without its per-occurrence
    gradient rows (3-4x faster a step here)."""

    @staticmethod
    def forward(
        ctx: Any,
        weight: torch.Tensor,
        unique: torch.Tensor,
        matrix: torch.Tensor,
        matrix_t: torch.Tensor,
    ) -> torch.Tensor:
        ctx.save_for_backward(unique)
        ctx.matrix_t = matrix_t
        ctx.table_shape = weight.shape
        return matrix @ weight.index_select(0, unique)

    @staticmethod
    def backward(ctx: Any, grad_hidden: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (unique,) = ctx.saved_tensors
        values = ctx.matrix_t @ grad_hidden
        grad = torch.sparse_coo_tensor(
            unique.unsqueeze(0), values, ctx.table_shape, is_coalesced=True, check_invariants=False
        )
        return grad, None, None, None


class BagOfEmbeddingsClassifier(nn.Module):
    """Mean of hashed word/char-n-gram embeddings, then a linear layer (fastText supervised)."""

    def __init__(self, n_classes: int, featurizer: HashedFeaturizer, dim: int) -> None:
        super().__init__()
        self.featurizer = featurizer
        self.embedding = nn.EmbeddingBag(
            featurizer.buckets, dim, mode="mean", sparse=True, include_last_offset=True
        )
        self.classifier = nn.Linear(dim, n_classes)
        _init_fasttext_style(self.embedding.weight, self.classifier)

    def featurize(self, texts: Sequence[str]) -> TokenBags:
        return self.featurizer(texts)

    def forward(self, batch: TokenBags) -> torch.Tensor:
        weight = self.embedding.weight
        if self.training and weight.requires_grad and torch.is_grad_enabled():
            hidden = SparseMeanBag.apply(weight, *batch.mean_operator())
        else:
            hidden = self.embedding(batch.ids, batch.offsets)
        return self.classifier(hidden)


class BagOfEmbeddingsBuilder:
    """Builds :class:`BagOfEmbeddingsClassifier` models that share one hashing scheme."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        minn, maxn = options["ngram_range"]
        if minn > maxn or (minn == 0) != (maxn == 0):
            raise OptionsError(
                "bag-of-embeddings: ngram_range must be [min, max] with 1 <= min <= max, "
                f"or [0, 0]; got {options['ngram_range']}"
            )
        self.featurizer = HashedFeaturizer(
            buckets=options["buckets"],
            ngram_range=(minn, maxn),
            word_ngrams=options["word_ngrams"],
            max_tokens=options["max_tokens"],
        )

    def build(self, n_classes: int) -> BagOfEmbeddingsClassifier:
        return BagOfEmbeddingsClassifier(n_classes, self.featurizer, self.options["dim"])


class EmbeddingLinearClassifier(nn.Module):
    """The seed's model: ``nn.Embedding`` over a per-training-set vocabulary, mean-pooled
    (the seed forgot to pool), then ``nn.Linear``.

    ``prepare(train_texts)`` builds the vocabulary and (re)allocates the embedding; until
    then the vocabulary holds only ``<unk>``.
    """

    def __init__(self, n_classes: int, options: dict[str, Any]) -> None:
        super().__init__()
        self.options = options
        self.classifier = nn.Linear(options["dim"], n_classes)
        self._set_vocabulary((VocabularyFeaturizer.UNK,))

    def _set_vocabulary(self, vocabulary: Sequence[str]) -> None:
        self.featurizer = VocabularyFeaturizer(vocabulary, max_tokens=self.options["max_tokens"])
        self.embedding = nn.Embedding(
            len(vocabulary), self.options["dim"], sparse=self.options["sparse"]
        )
        _init_fasttext_style(self.embedding.weight, self.classifier)

    @property
    def vocabulary(self) -> tuple[str, ...]:
        return self.featurizer.vocabulary

    def prepare(self, train_texts: Sequence[str]) -> None:
        """Build the vocabulary of the texts this model will be trained on."""
        self._set_vocabulary(
            VocabularyFeaturizer.build_vocabulary(
                train_texts,
                min_count=self.options["min_count"],
                max_size=self.options["max_vocab"],
                max_tokens=self.options["max_tokens"],
            )
        )

    def featurize(self, texts: Sequence[str]) -> TokenBags:
        return self.featurizer(texts)

    def forward(self, batch: TokenBags) -> torch.Tensor:
        vectors = self.embedding(batch.ids)
        lengths = batch.lengths()
        doc = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
        pooled = torch.zeros(len(lengths), vectors.shape[1], dtype=vectors.dtype)
        pooled.index_add_(0, doc, vectors)
        pooled = pooled / lengths.clamp_min(1).unsqueeze(1).to(vectors.dtype)
        return self.classifier(pooled)


class EmbeddingLinearBuilder:
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def build(self, n_classes: int) -> EmbeddingLinearClassifier:
        return EmbeddingLinearClassifier(n_classes, self.options)


@hookimpl
def xleval_register_models(register: Register) -> None:
    """Register the bundled model builders."""
    register(
        "bag-of-embeddings",
        BagOfEmbeddingsBuilder,
        schema=BAG_OF_EMBEDDINGS_SCHEMA,
        description="fastText-style: words + hashed char n-grams in buckets shared by all "
        "languages, EmbeddingBag(mean) + Linear",
    )
    register(
        "embedding-linear",
        EmbeddingLinearBuilder,
        schema=EMBEDDING_LINEAR_SCHEMA,
        description="the seed's model: per-training-set word vocabulary, Embedding + mean "
        "pooling + Linear",
    )

"""Bundled model builders: ``bag-of-embeddings`` and ``embedding-linear`` (registration).

Their torch implementation (:mod:`xleval_plugins.torch_models`) is imported when the first
model builder is built, not when the plugins load: commands that train nothing (validate,
report, compare) and the start of a run do not pay torch's import (~1 s; a dask executor
starts its workers meanwhile).
"""

from __future__ import annotations

from typing import Any

from xleval.api import Register, hookimpl
from xleval.errors import OptionsError


def tokenizer_options(default: str, lowercase: bool) -> dict[str, Any]:
    """The tokenizer options of a bundled model (featurize.TOKENIZERS; docs/models.md says
    what each keeps and why bag-of-embeddings defaults to words+punct, cased)."""
    return {
        "tokenizer": {
            "enum": ["words", "whitespace", "words+punct"],
            "default": default,
            "description": "words: runs of word characters, the rest dropped; whitespace: "
            "split on whitespace, punctuation kept inside tokens (fastText's); words+punct: "
            "word runs and punctuation/symbol runs as separate tokens.",
        },
        "lowercase": {
            "type": "boolean",
            "default": lowercase,
            "description": "Lower-case texts before tokenizing.",
        },
    }


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
            "default": [2, 4],
            "description": "Character n-gram lengths [min, max] of '<word>'; [0, 0]: none.",
        },
        "word_ngrams": {
            "type": "integer",
            "minimum": 1,
            "default": 2,
            "description": "Longest word n-gram hashed as a feature (1: words only).",
        },
        "max_tokens": {
            "type": ["integer", "null"],
            "minimum": 1,
            "default": 1024,
            "description": "Tokens kept per text (null: all).",
        },
        # words+punct, cased, char 2-4-grams, word bigrams: within a point of fastText or
        # better in every cell of prose (ddtp-sections) and of UI messages full of format
        # strings (docs/models.md; benchmarks/README.md: tokenizer_choice.py, against_fasttext.py)
        **tokenizer_options("words+punct", lowercase=False),
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
        **tokenizer_options("words", lowercase=True),  # the seed's model, as it tokenized
    },
}


class BagOfEmbeddingsBuilder:
    """Builds :class:`xleval_plugins.torch_models.BagOfEmbeddingsClassifier` models that
    share one hashing scheme.

    torch and the featurizer are imported on first use, not when the builder is made: a run
    whose cells are all cached checks its components without importing torch (1.2 s).
    """

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        minn, maxn = options["ngram_range"]
        if minn > maxn or (minn == 0) != (maxn == 0):
            raise OptionsError(
                "bag-of-embeddings: ngram_range must be [min, max] with 1 <= min <= max, "
                f"or [0, 0]; got {options['ngram_range']}"
            )
        self._featurizer: Any = None

    @property
    def featurizer(self) -> Any:
        if self._featurizer is None:
            from xleval_plugins.featurize import HashedFeaturizer

            self._featurizer = HashedFeaturizer(
                buckets=self.options["buckets"],
                ngram_range=tuple(self.options["ngram_range"]),
                word_ngrams=self.options["word_ngrams"],
                max_tokens=self.options["max_tokens"],
                tokenizer=self.options["tokenizer"],
                lowercase=self.options["lowercase"],
            )
        return self._featurizer

    def build(self, n_classes: int) -> Any:
        from xleval_plugins.torch_models import BagOfEmbeddingsClassifier

        return BagOfEmbeddingsClassifier(n_classes, self.featurizer, self.options["dim"])


class EmbeddingLinearBuilder:
    """Builds the seed's :class:`xleval_plugins.torch_models.EmbeddingLinearClassifier`."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def build(self, n_classes: int) -> Any:
        from xleval_plugins.torch_models import EmbeddingLinearClassifier

        return EmbeddingLinearClassifier(n_classes, self.options)


def _bag_of_embeddings(options: dict[str, Any]) -> Any:
    return BagOfEmbeddingsBuilder(options)


def _embedding_linear(options: dict[str, Any]) -> Any:
    return EmbeddingLinearBuilder(options)


@hookimpl
def xleval_register_models(register: Register) -> None:
    """Register the bundled model builders."""
    register(
        "bag-of-embeddings",
        _bag_of_embeddings,
        schema=BAG_OF_EMBEDDINGS_SCHEMA,
        description="fastText-style: words + hashed char n-grams in buckets shared by all "
        "languages, EmbeddingBag(mean) + Linear",
    )
    register(
        "embedding-linear",
        _embedding_linear,
        schema=EMBEDDING_LINEAR_SCHEMA,
        description="the seed's model: per-training-set word vocabulary, Embedding + mean "
        "pooling + Linear",
    )

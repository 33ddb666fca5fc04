"""Bundled Hugging Face plugins (``pip install 'xleval[hf]'``): the ``hf-encoder`` model and
the ``hf`` dataset loader.

Registration only: transformers, datasets and torch are imported when a component is first
used (:mod:`xleval_plugins.hf_encoder`, :mod:`xleval_plugins.hf_data`), so listing plugins
or checking a spec stays fast. Without the extra both components stay listed as unavailable
with the install command, and nothing else changes.
"""

from __future__ import annotations

import copy
import hashlib
from functools import cache
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from xleval_plugins.datasets import SELECTION_OPTIONS, split_ratios_option

from xleval.api import PluginUnavailable, Register, hookimpl
from xleval.api.files import content_key
from xleval.errors import OptionsError

#: The distributions of the ``hf`` extra (pyproject.toml) these plugins import.
REQUIRED = ("transformers", "datasets", "tokenizers", "safetensors")
INSTALL = "pip install 'xleval[hf]'"

HF_ENCODER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["model"],
    "properties": {
        "model": {
            "type": "string",
            "minLength": 1,
            "description": "A local directory saved with save_pretrained (model and tokenizer), "
            "or a Hugging Face Hub id such as 'FacebookAI/xlm-roberta-base' (downloaded once "
            "where there is network, then read from the Hub cache).",
        },
        "revision": {
            "type": ["string", "null"],
            "minLength": 1,
            "default": None,
            "description": "The Hub revision to use: a commit hash pins the weights. Required "
            "for a Hub id; must be null for a local directory.",
        },
        "pooling": {
            "enum": ["mean", "cls"],
            "default": "mean",
            "description": "How a text's token vectors become one: the mean over its tokens, "
            "or the first token's vector.",
        },
        "max_length": {
            "type": "integer",
            "minimum": 2,
            "default": 128,
            "description": "Tokens kept per text (special tokens included); longer texts are "
            "truncated.",
        },
        "freeze": {
            "oneOf": [
                {"enum": ["none", "embeddings", "encoder"]},
                {"type": "integer", "minimum": 0},
            ],
            "default": "none",
            "description": "What is not trained: none; the embeddings; the whole encoder "
            "(only the classification head learns); or an integer n: the embeddings and the "
            "first n layers.",
        },
        "optimizer": {
            "enum": ["adam", "sgd", "adagrad"],
            "default": "adam",
            "description": "The optimizer where the training section leaves it at the trainer's "
            "default: fine-tuning a pretrained encoder needs Adam and a small learning rate.",
        },
        "lr": {
            "type": "number",
            "exclusiveMinimum": 0,
            "default": 3e-5,
            "description": "The learning rate where the training section leaves it unset.",
        },
        "batch_size": {
            "type": "integer",
            "minimum": 2,
            "default": 16,
            "description": "The batch size where the training section leaves it unset.",
        },
        "threads": {
            "type": ["integer", "null"],
            "minimum": 1,
            "default": None,
            "description": "CPU threads for training and prediction (null: every core this "
            "process may use; the processes executor gives each worker its share), where the "
            "training section leaves its threads at 1 (right for the small bag models, not for "
            "an encoder).",
        },
        "eval_batch_size": {
            "type": "integer",
            "minimum": 1,
            "default": 64,
            "description": "Texts per forward pass when predicting (texts of similar length "
            "are batched together).",
        },
        "device": {
            "enum": ["cpu", "cuda", "auto"],
            "default": "cpu",
            "description": "Where the model runs; auto: cuda when available. Results are "
            "bit-identical between reruns on CPU; on GPUs only as far as their kernels are.",
        },
        "dtype": {
            "enum": ["float32", "bfloat16", "float16"],
            "default": "float32",
            "description": "The encoder's weights and activations (the head stays float32).",
        },
    },
}

_FIELD = {"type": ["string", "null"], "minLength": 1}

HF_DATASET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "hub": {
            "type": "string",
            "minLength": 1,
            "description": "A Hugging Face Hub dataset id, e.g. 'mteb/sib200' (with 'revision'). "
            "Give this or 'path'.",
        },
        "path": {
            "type": "string",
            "minLength": 1,
            "description": "A directory saved with save_to_disk; or, with 'format', a data file, "
            "a directory of them or a glob; or a local directory laid out like a Hub dataset "
            "(a README.md that declares its configs). Relative to the spec file's folder.",
        },
        "format": {
            "enum": ["parquet", "arrow", "json", "csv", None],
            "default": None,
            "description": "Read 'path' as files of this format (null: a save_to_disk or "
            "Hub-style directory).",
        },
        "revision": {
            "type": ["string", "null"],
            "minLength": 1,
            "default": None,
            "description": "The Hub revision (a commit hash pins the data); required for a Hub id.",
        },
        "name": {
            "type": "string",
            "minLength": 1,
            "description": "Dataset name in reports (default: the Hub id or the path).",
        },
        "configs": {
            "type": ["object", "null"],
            "minProperties": 1,
            "additionalProperties": {"type": "string", "minLength": 1},
            "default": None,
            "description": "One Hub config per language, language -> config name (e.g. "
            "{ de = 'de-DE', fr = 'fr-FR' }): the language of each row is its config's key.",
        },
        "text_field": {"type": "string", "minLength": 1, "default": "text"},
        "label_field": {
            "type": "string",
            "minLength": 1,
            "default": "label",
            "description": "Labels of a ClassLabel column are its names; other values are "
            "used as strings.",
        },
        "lang_field": {
            **_FIELD,
            "default": "lang",
            "description": "The column holding each row's language; ignored with 'configs'.",
        },
        "id_field": {**_FIELD, "default": None, "description": "null: ids from the content."},
        "group_field": {
            **_FIELD,
            "default": None,
            "description": "The column tying translations together (e.g. SIB-200's "
            "index_id); null: each row is its own group.",
        },
        "split_field": {
            **_FIELD,
            "default": None,
            "description": "A column holding each row's split (train, dev, test, or names "
            "that 'splits' maps to them); then every split of the dataset is loaded and the "
            "column decides.",
        },
        "splits": {
            "type": ["object", "null"],
            "additionalProperties": {"enum": ["train", "dev", "test"]},
            "default": {"train": "train", "validation": "dev", "dev": "dev", "test": "test"},
            "description": "The dataset's split names -> xleval's (train, dev, test); splits "
            "not named are not loaded. null: pool every split and split by group hash "
            "('split_ratios').",
        },
        "split_ratios": split_ratios_option(
            "With splits = null: fractions of groups per split (by sha256 of the group), "
            "summing to 1."
        ),
        **copy.deepcopy(SELECTION_OPTIONS),
        "cache_dir": {
            "type": ["string", "null"],
            "default": None,
            "description": "Where datasets keeps its cache (null: its default).",
        },
    },
}


#: Files of a model directory that decide what it computes (weights, configuration,
#: tokenizer); their sha256 hashes enter the cell keys and the report.
_IDENTITY_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model", ".py")


@cache
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def directory_hashes(directory: Path) -> dict[str, str]:
    """sha256 of each file of a model directory that decides its results (cached in-process
    by path, size and modification time: hashing 1 GB of weights takes seconds)."""
    out = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.suffix in _IDENTITY_SUFFIXES and ".cache" not in path.parts:
            stat = path.stat()
            key = path.relative_to(directory).as_posix()
            out[key] = "sha256:" + _file_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    return out


def resolve_model_directory(model: str, revision: str | None) -> Path:
    """The local directory of ``model``: itself, or the Hub snapshot of ``revision``
    (downloaded where there is network, else taken from the Hub cache). ``model`` and
    ``revision`` are the builder's, checked when it was made (:func:`_check_source`)."""
    local = Path(model).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise OptionsError(
                f"hf-encoder: {local} has no config.json: save the model there with "
                "save_pretrained (and its tokenizer with the tokenizer's save_pretrained)"
            )
        return local
    from huggingface_hub import list_repo_files, snapshot_download

    patterns = ["*.json", "*.txt", "*.model", "*.safetensors", "*.bin"]
    try:  # safetensors weights where the revision has them, not also its pickles
        if any(name.endswith(".safetensors") for name in list_repo_files(model, revision=revision)):
            patterns.remove("*.bin")
    except Exception:  # offline: what the Hub cache holds decides
        pass
    try:
        return Path(snapshot_download(model, revision=revision, allow_patterns=patterns))
    except Exception as exc:  # no network, unknown id or revision: the library's reason
        raise OptionsError(
            f"hf-encoder: cannot get '{model}' at revision {revision}: "
            f"{type(exc).__name__}: {exc} (no network? download it once where there is, or "
            "save it with save_pretrained to a local directory and name that)"
        ) from None


class HFEncoderBuilder:
    """Builds :class:`xleval_plugins.hf_encoder.HFEncoderClassifier` models: the encoder is
    loaded once per process and copied for each model; the head is initialised by the
    build's seed. Light until a model is built (no torch, no transformers): a spec is
    checked and its cells keyed without them."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        _check_source(options["model"], options["revision"])
        self._directory: Path | None = None
        self._loaded: tuple[Any, Any] | None = None
        self._identity: dict[str, Any] | None = None

    @property
    def directory(self) -> Path:
        if self._directory is None:
            self._directory = resolve_model_directory(
                self.options["model"], self.options["revision"]
            )
        return self._directory

    def identity(self) -> dict[str, Any]:
        """What outside the spec decides this model's results: the model, its revision, the
        hash of each file, and the versions of the code that reads them."""
        if self._identity is None:
            self._identity = {
                "model": self.options["model"],
                "revision": self.options["revision"],
                "files": directory_hashes(self.directory),
                **{name: metadata.version(name) for name in ("transformers", "tokenizers")},
            }
        return self._identity

    def build(self, n_classes: int) -> Any:
        from xleval_plugins.hf_encoder import build_classifier, load_encoder

        if self._loaded is None:
            self._loaded = load_encoder(str(self.directory))
        options = {**self.options, "identity": content_key(self.identity())}
        return build_classifier(self._loaded, n_classes, options)


def _check_source(model: str, revision: str | None) -> None:
    local = Path(model).expanduser()
    if local.is_dir() and revision is not None:
        raise OptionsError(
            f"hf-encoder: model '{model}' is a local directory; revision applies to Hub "
            "ids only (remove it)"
        )
    if not local.is_dir() and revision is None:
        raise OptionsError(
            f"hf-encoder: '{model}' is not a local directory, so it is a Hub id, and a Hub "
            "model needs a pinned revision (a commit hash from the model page's history), "
            "or results could change under you"
        )


def missing_requirements() -> list[str]:
    """The extra's distributions that cannot be imported here."""
    return [name for name in REQUIRED if find_spec(name) is None]


def _hf_encoder(options: dict[str, Any]) -> Any:
    return HFEncoderBuilder(copy.deepcopy(options))


def _hf_dataset(options: dict[str, Any]) -> Any:
    from xleval_plugins.hf_data import HFDataset

    return HFDataset(copy.deepcopy(options))


@hookimpl
def xleval_register_models(register: Register) -> None:
    """Register ``hf-encoder`` (unavailable without the ``hf`` extra)."""
    register(
        "hf-encoder",
        _hf_encoder,
        schema=HF_ENCODER_SCHEMA,
        description="a pretrained Hugging Face encoder (XLM-R, mBERT, ...) from a local "
        f"directory or the Hub, pooled, with a linear head ({INSTALL})",
    )
    _require_extra()


@hookimpl
def xleval_register_datasets(register: Register) -> None:
    """Register ``hf`` (unavailable without the ``hf`` extra)."""
    register(
        "hf",
        _hf_dataset,
        schema=HF_DATASET_SCHEMA,
        description="a Hugging Face dataset: Hub id (pinned revision), save_to_disk "
        f"directory, or parquet/arrow/json/csv files; column and split mapping ({INSTALL})",
    )
    _require_extra()


def _require_extra() -> None:
    missing = missing_requirements()
    if missing:
        raise PluginUnavailable(f"needs {', '.join(missing)} (not installed): {INSTALL}")

"""The trainer's options: their JSON Schema, defaults and validation.

Apart from :mod:`xleval.train.trainer` so that resolving a spec (``xleval validate``, the start
of ``xleval run``) does not import torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xleval.errors import OptionsError
from xleval.plugin.registry import fill_defaults, schema_errors

OPTIMIZERS: tuple[str, ...] = ("rowwise-adagrad", "adagrad", "sgd", "adam")

#: Learning rate per optimiser when ``lr`` is null. The loss is *summed* over a batch, so
#: an SGD learning rate means what it means in fastText (a step per example): 0.5 is
#: fastText's usual supervised value.
DEFAULT_LR: dict[str, float] = {"sgd": 0.5, "adagrad": 0.2, "rowwise-adagrad": 0.2, "adam": 0.01}

#: JSON Schema of the trainer's options; ``resolve_training_options`` fills the defaults.
#: Defaults (row-wise adagrad, lr 0.2, 5 epochs, batch 32 up to 256): on ddtp-sections' small
#: per-language training sets (at most ~1,600 texts) SGD with fastText's 5-10 epochs is far
#: from converged (en test accuracy 0.41 for fastText, 0.51 here at lr 0.5 / 10 epochs), and
#: needs fastText-style 25-50 epochs to reach ~0.82; adagrad reaches ~0.86 in 5 epochs and
#: also learns from 8 shots; row-wise adagrad matches it (quickstart mean accuracy 0.758
#: both) at half the step time (benchmarks/README.md has the figures).
TRAINING_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "xleval training options",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "epochs": {
            "type": "integer",
            "minimum": 1,
            "default": 5,
            "description": "Passes over the training set (fastText: 5-25).",
        },
        "min_steps": {
            "type": "integer",
            "minimum": 0,
            "default": 100,
            "description": "Train at least this many optimiser steps, adding epochs when the "
            "training set is small: 8 shots x 8 classes is 2 batches an epoch, and 20 steps "
            "barely move a zero-initialised classifier. So `epochs` is a minimum; a spec that "
            "sets `epochs` but not `min_steps` gets a warning, and 0 trains exactly `epochs`. "
            "Each cell records the epochs and steps it trained (`info.training`).",
        },
        "lr": {
            "type": ["number", "null"],
            "exclusiveMinimum": 0,
            "default": None,
            "description": "Learning rate; null: the optimiser's default (sgd 0.5, "
            "adagrad 0.2, adam 0.01).",
        },
        "lr_schedule": {
            "enum": ["linear", "constant"],
            "default": "linear",
            "description": "linear: decay to 0 over training, as fastText does.",
        },
        "batch_size": {
            "type": ["integer", "null"],
            "minimum": 2,
            "default": None,
            "description": "Examples per step; never 1 (per-step overhead "
            "dominates). The last batch is merged, never a single example. null "
            "(default): 32; with adagrad or rowwise-adagrad, the smallest power of two "
            "from 32 to 256 that gives at most ~64 batches an epoch, so large training "
            "sets take fewer, better-deduplicated row updates (2.4x fewer at 256 than at "
            "32; same accuracy measured) while small ones keep their steps.",
        },
        "optimizer": {
            "enum": list(OPTIMIZERS),
            "default": "rowwise-adagrad",
            "description": "rowwise-adagrad (default: Adagrad with one accumulator per "
            "row of a sparse embedding table, the mean of its squared gradients, as "
            "FBGEMM's row-wise Adagrad; dense parameters as adagrad; same accuracy as "
            "adagrad here, ~2x faster a step, 1/dim of its state), adagrad (torch's, "
            "one accumulator per weight), sgd (fastText's optimiser; fastest a step, "
            "needs more epochs), adam (SparseAdam for sparse embeddings).",
        },
        "weight_decay": {
            "type": "number",
            "minimum": 0,
            "default": 0.0,
            "description": "L2 penalty on dense parameters (sparse embedding "
            "updates carry none, as in fastText).",
        },
        "shuffle": {
            "enum": ["examples", "batches"],
            "default": "batches",
            "description": "batches (default): fix the batches once and reshuffle "
            "only their order each epoch, so each batch's id dedup is computed once "
            "(2-3x faster a step; no accuracy cost measured); examples: reshuffle "
            "the examples every epoch (plain SGD).",
        },
        "early_stopping": {
            "type": "boolean",
            "default": False,
            "description": "Keep the epoch with the best dev accuracy (ties: "
            "lower dev loss); stop after `patience` epochs without one. "
            "Ignored when the method has no dev data for this training set.",
        },
        "patience": {"type": "integer", "minimum": 1, "default": 2},
        "threads": {
            "type": ["integer", "null"],
            "minimum": 1,
            "default": 1,
            "description": "torch CPU threads while training and predicting (a "
            "process-wide torch setting, restored after; null: leave it). 1 by default: a "
            "step's ops are tiny, a second thread buys ~10%, and on a busy machine OpenMP "
            "spin-waiting made steps up to 10x slower; a fixed count also keeps results "
            "independent of the machine's cores.",
        },
    },
}


def resolve_training_options(options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate ``options`` against :data:`TRAINING_SCHEMA` and fill in its defaults."""
    options = dict(options or {})
    errors = schema_errors(TRAINING_SCHEMA, options)
    if errors:
        raise OptionsError(
            "invalid training options:\n" + "\n".join(f"  - {e}" for e in errors),
            problems=errors,
        )
    resolved = fill_defaults(TRAINING_SCHEMA, options)
    if resolved["lr"] is None:
        resolved["lr"] = DEFAULT_LR[resolved["optimizer"]]
    return resolved


def options_table() -> str:
    """Every trainer option with its default and description, as a Markdown table
    (docs/training.md holds it; a test keeps the two the same)."""
    import json

    rows = ["| option | default | what it does |", "|---|---|---|"]
    for name, prop in TRAINING_SCHEMA["properties"].items():
        if "enum" in prop:
            kind = " or ".join(f"`{v}`" for v in prop["enum"])
        else:
            types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
            kind = " or ".join(types)
        default = json.dumps(prop.get("default"))
        text = " ".join(prop.get("description", "").split())
        rows.append(f"| `{name}` ({kind}) | `{default}` | {text} |")
    return "\n".join(rows) + "\n"

"""Hook specifications: the only way plugins extend xleval.

Every hook receives a ``register`` callback::

    register(name, factory, *, schema=None, description="")

``factory(options) -> component`` is called with options that were checked
against ``schema`` (a JSON Schema, defaults filled in) just before the component
is built. A component registered without a schema takes no options. Names are
unique per kind across all plugins. Each hook documents the component contract;
docs/hooks.md has the same text with examples.
"""

from __future__ import annotations

from typing import Any, Protocol

import pluggy

PROJECT_NAME = "xleval"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class Register(Protocol):
    """The callback every registry hook receives."""

    def __call__(
        self,
        name: str,
        factory: Any,
        *,
        schema: dict[str, Any] | None = None,
        description: str = "",
    ) -> None: ...


@hookspec
def xleval_register_models(register: Register) -> None:
    """Register text-classifier builders.

    Contract: ``factory(options)`` returns an object with
    ``build(n_classes: int) -> TextClassifier``, where a TextClassifier is a
    ``torch.nn.Module`` with ``featurize(texts) -> batch`` and
    ``forward(batch) -> Tensor[n, n_classes]`` (unnormalised scores).
    The trainer cuts ``batch`` into mini-batches, so it is a Tensor whose first dimension
    indexes the texts, or an object with ``len()`` and ``select(indices) -> batch``.
    Optional: ``prepare(train_texts)``, called once after ``build`` and before any
    transfer or training, with the texts the model will be trained on (for parameters
    that depend on them, e.g. a per-training-set vocabulary). Embedding modules with
    ``sparse=True`` get sparse-capable optimisers; parameters with
    ``requires_grad=False`` are not trained. Optional on the model:
    ``training_overrides``, a mapping of trainer options (optimizer, lr, batch_size, ...)
    that stand in for the trainer's defaults where the spec's training options leave them
    unset (an encoder's own options; a value the spec sets is kept). Optional
    on the builder: ``identity() -> JSON data`` naming what outside the spec decides its
    models' results (e.g. weight file hashes): it enters the cell keys, so changed files
    are recomputed, and the report.
    """


@hookspec
def xleval_register_transfer_strategies(register: Register) -> None:
    """Register transfer strategies (how a source model's knowledge reaches a target model).

    Contract: ``factory(options)`` returns an object with
    ``transfer(source_model, target_model) -> target_model``. It must not modify
    ``source_model`` (trained models are shared between cells). An optional ``last_report``
    dict (e.g. how many rows were copied) is put in the cell result.
    """


@hookspec
def xleval_register_fusion_strategies(register: Register) -> None:
    """Register fusion strategies (how per-language models' scores become one prediction).

    Contract: ``factory(options)`` returns an object with
    ``fuse(scores: Tensor[models, n, classes]) -> Tensor[n, classes]`` of probabilities
    (each row sums to 1).
    """


@hookspec
def xleval_register_metrics(register: Register) -> None:
    """Register evaluation metrics.

    Contract: ``factory(options)`` returns an object with
    ``compute(y_true: Tensor[n], probs: Tensor[n, classes]) -> float`` and a boolean
    attribute ``higher_is_better``.
    """


@hookspec
def xleval_register_datasets(register: Register) -> None:
    """Register multilingual dataset loaders.

    Contract: ``factory(options)`` returns an object with
    ``load() -> MultilingualDataset``.
    """


@hookspec
def xleval_register_executors(register: Register) -> None:
    """Register executors (where and how the cells of an experiment run).

    Contract: ``factory(options)`` returns an object with
    ``map(fn, cells) -> Iterator[result]`` that yields one result per cell
    (in any order; each result names its cell).
    """


@hookspec
def xleval_register_reporters(register: Register) -> None:
    """Register report writers (json, table, markdown, html, ...).

    Contract: ``factory(options)`` returns an object with
    ``write(report: dict, path: str | None) -> None`` (``None`` means standard output).
    """


@hookspec
def xleval_register_protocols(register: Register) -> None:
    """Register protocols: the methods themselves (target-only, transfer, fusion, ...).

    Contract: ``factory(options)`` returns an :class:`xleval.api.EvaluationProtocol` (or an
    object with the same attributes): ``run(cell) -> scorer`` trains what one cell needs
    through ``cell`` (an :class:`xleval.api.CellContext`) and returns a function from a
    language to probabilities on its test split. Class attributes say which component
    slots the spec may fill (``components``), which trainer options it takes
    (``trainings``), at which shot counts it runs (``runs_at``), which source models it
    shares (``source_models``), and how the report treats it (``learns_from_source``,
    ``baseline``, ``ignores_shots``). ``options`` are the spec method's ``options`` table.
    """


#: Registry kind -> the hook that fills it. The registry, the CLI and the docs
#: all derive their list of kinds from this mapping.
KIND_HOOKS: dict[str, str] = {
    "models": "xleval_register_models",
    "transfer_strategies": "xleval_register_transfer_strategies",
    "fusion_strategies": "xleval_register_fusion_strategies",
    "metrics": "xleval_register_metrics",
    "datasets": "xleval_register_datasets",
    "executors": "xleval_register_executors",
    "reporters": "xleval_register_reporters",
    "protocols": "xleval_register_protocols",
}

"""What a component must be: the contracts of every kind, as typed Protocols and base classes.

A plugin needs none of these at run time (xleval duck-types every component), but a type
checker holds a component to its contract when it is annotated with one, and
:class:`EvaluationProtocol` gives a protocol its defaults. Nothing here imports torch.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import nn

    from xleval.api.data import Example, MultilingualDataset

#: A training set: ``["split", lang]`` (that language's whole train split) or
#: ``["shots", lang, k, seed]`` (a cell's k-shot sample), in a list (joint training has
#: several). It is JSON, so it names a trained model in artifact keys.
TrainSet = list[list[Any]]

#: Evaluates one language's test split to probabilities [n, classes] (rows sum to 1).
Scorer = Callable[[str], "torch.Tensor"]


# -- components ------------------------------------------------------------------------


@runtime_checkable
class TextClassifier(Protocol):
    """What a model builder's ``build`` returns: a ``torch.nn.Module`` with these methods.

    Optional capabilities, used when present:

    * ``prepare(train_texts)``: called once after ``build`` and before any transfer or
      training, with the texts the model will learn from (a per-training-set vocabulary).
    * ``feature_key``: a JSON-able value naming the featurizer; models with equal keys
      featurize a text identically, so a split is featurized once for all of them.
    * ``per_example(batch) -> Tensor[n]``: the loss of each example (for a fused trainer).
    """

    def featurize(self, texts: Sequence[str]) -> Any: ...

    def forward(self, batch: Any) -> torch.Tensor: ...


class FeatureBatch(Protocol):
    """A featurized batch that is not a Tensor: the trainer cuts it into mini-batches.

    Optional: ``concat(batches)`` (a classmethod joining batches, for training sets made of
    several splits), ``nbytes()`` (memory, for the artifact cache's budget) and
    ``to_arrays()`` (its arrays, to ship to a worker).
    """

    def __len__(self) -> int: ...

    def select(self, indices: torch.Tensor) -> FeatureBatch: ...


class ModelBuilder(Protocol):
    """A component of kind ``models``."""

    def build(self, n_classes: int) -> nn.Module: ...


class TransferStrategy(Protocol):
    """A component of kind ``transfer_strategies``: must not modify ``source``. Optional:
    ``last_report``, a JSON dict put in the cell result (e.g. how many rows were copied)."""

    def transfer(self, source: nn.Module, target: nn.Module) -> nn.Module: ...


class FusionStrategy(Protocol):
    """A component of kind ``fusion_strategies``: scores [models, n, classes] ->
    probabilities [n, classes]."""

    def fuse(self, scores: torch.Tensor) -> torch.Tensor: ...


class Metric(Protocol):
    """A component of kind ``metrics``.

    Optional: ``per_example(y_true, probs) -> array[n]`` whose mean is the metric (paired
    statistics over test examples use it), and ``vectorised(y_true, probs) -> array[...]``
    computing the metric for many evaluations at once (numpy arrays ``[..., n]`` and
    ``[..., n, classes]``), which the report's statistics use instead of calling
    ``compute`` per cell.
    """

    higher_is_better: bool

    def compute(self, y_true: torch.Tensor, probs: torch.Tensor) -> float: ...


class DatasetLoader(Protocol):
    """A component of kind ``datasets``."""

    def load(self) -> MultilingualDataset: ...


class Reporter(Protocol):
    """A component of kind ``reporters``: ``path`` None means standard output.

    Optional class attributes: ``run_file`` (a file name, e.g. ``"report.html"``): ``xleval
    run`` writes every run's report with it into the run directory; ``summary = True``:
    ``xleval run`` prints a run's summary with it, and ``xleval report`` defaults to it (the
    first by name if several do).
    """

    def write(self, report: dict[str, Any], path: str | None) -> None: ...


# -- executors -------------------------------------------------------------------------


class CellTaskContract(Protocol):
    """What an executor's ``map`` receives as ``fn``: a picklable callable running one cell.

    ``fn(cell)`` never raises for a failing cell: it returns a result dict whose
    ``status`` is ``"failed"``. Cells of one run share models through the run directory
    and a per-process cache, so run them in processes, not threads. Optional helpers an
    executor may use: ``preload()`` (import torch before forking), ``check_worker()`` (raise
    if this process would compute cells differently from the driver), ``failure(cell,
    exc)`` (a failed result for a cell whose task could not run), and for clusters without
    a shared filesystem ``for_cluster()``, ``portable_dataset()``, ``loaded_dataset()`` and
    ``artifact_jobs(cell)`` (source models to train as separate tasks).
    """

    def __call__(self, cell: Any, *artifacts: Any) -> dict[str, Any]: ...


class Executor(Protocol):
    """A component of kind ``executors``: one result per cell, in any order."""

    def map(self, fn: CellTaskContract, cells: Iterable[Any]) -> Iterator[dict[str, Any]]: ...


# -- protocols -------------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentSlot:
    """A component a protocol's methods name in the spec (``transfer = "weight-copy"``):
    its registry kind and the name used when the spec names none."""

    kind: str
    default: str
    description: str = ""


class CellContext(Protocol):
    """What a protocol's ``run`` gets: one cell, and the machinery to train and score."""

    dataset: MultilingualDataset
    sources: tuple[str, ...]
    target: str
    shots: int | str
    seed: int
    #: which sample of the k shots (a spec's ``shot_draws``); None: the seed drew them
    draw: int | None
    #: JSON results of the protocol, put in the cell's ``info`` (e.g. ``"transfer"``)
    info: dict[str, Any]

    @property
    def shot_examples(self) -> list[Example]: ...

    def shot_set(self) -> TrainSet: ...

    def source_set(self) -> TrainSet: ...

    def trained(self, train_set: TrainSet, role: str) -> Any: ...

    def build(self, train_texts: Sequence[str], seed: int) -> nn.Module: ...

    def fit(
        self, model: nn.Module, train_set: TrainSet, options: dict[str, Any], role: str
    ) -> Any: ...

    def training_options(self, slot: str | None = None) -> dict[str, Any]: ...

    def component(self, slot: str) -> Any: ...

    def component_name(self, slot: str) -> str: ...

    def derive_seed(self, *parts: Any) -> int: ...

    def timer(self, phase: str) -> AbstractContextManager[None]: ...

    def scores(self, model: nn.Module, lang: str, key: str | None) -> torch.Tensor: ...

    def probabilities(self, model: nn.Module, key: str | None) -> Scorer: ...

    def transfer(self, slot: str, source: nn.Module, target: nn.Module) -> nn.Module: ...

    def fuse(self, slot: str, scores: torch.Tensor) -> torch.Tensor: ...


class EvaluationProtocol(abc.ABC):
    """Base class of a protocol (kind ``protocols``): how one cell of a method trains and
    scores. The registered factory gets the method's ``options`` (checked against the
    registered schema) and returns an instance; a subclass must define ``run`` (one
    without it cannot be built: the error names the plugin when the spec is checked).

    Class attributes say what the core must know before any cell runs; every one has a
    default, so a protocol sets only what differs.
    """

    #: spec key -> the component it names (resolved and checked with the spec)
    components: ClassVar[Mapping[str, ComponentSlot]] = {}
    #: spec key -> description: trainer options merged over the method's ``training``
    #: (e.g. fine-tuning options); the resolved options reach ``cell.training_options(key)``
    trainings: ClassVar[Mapping[str, str]] = {}
    #: whether its models learn from the source languages (only then a transfer gap is
    #: reported)
    learns_from_source: ClassVar[bool] = True
    #: whether it trains on the target data alone: the default reference of comparisons
    baseline: ClassVar[bool] = False
    #: whether its result does not depend on k: it runs once per (target, seed), at k = 0,
    #: and fills every shots column of the report
    ignores_shots: ClassVar[bool] = False
    #: scheduling hint: cells of smaller ``order`` run first (0: cells that train source
    #: models every other method shares)
    order: ClassVar[int] = 2

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = dict(options or {})

    def runs_at(self, shots: int | str, sources: tuple[str, ...]) -> bool:
        """Whether the method has a cell at k = ``shots`` (False where it would repeat
        another method's cell, or cannot run)."""
        return True

    def source_models(self, sources: tuple[str, ...]) -> list[TrainSet]:
        """The training sets of the source models its cells train from scratch with the
        method's model and training options (shared by every cell and method that asks for
        the same one; a cluster executor trains them as tasks of their own)."""
        return []

    @abc.abstractmethod
    def run(self, cell: CellContext) -> Scorer:
        """Train what the cell needs; return a scorer of each language's test split."""

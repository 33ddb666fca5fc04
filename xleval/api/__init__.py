"""xleval's public API: everything a plugin needs, and nothing else of xleval.

* hooks: :data:`hookimpl` marks a plugin's hook functions; each receives a
  :class:`Register` callback (:mod:`xleval.api.hookspecs` documents every kind);
* the data model: :class:`Example`, :class:`MultilingualDataset`, :func:`assign_splits`;
* the contracts of every component kind (:mod:`xleval.api.contracts`), among them
  :class:`EvaluationProtocol` and the :class:`CellContext` a protocol trains through;
* :class:`MetricForm` and :func:`mean_of`, a metric's optional vectorised form;
* the exception types (:mod:`xleval.errors`).

This package imports nothing else of xleval (import-linter checks it), so importing it is
cheap and its names do not move when the core is rearranged.
"""

from xleval.api.contracts import (
    CellContext,
    CellTaskContract,
    ComponentSlot,
    DatasetLoader,
    EvaluationProtocol,
    Executor,
    FeatureBatch,
    FusionStrategy,
    Metric,
    ModelBuilder,
    Reporter,
    Scorer,
    TextClassifier,
    TrainSet,
    TransferStrategy,
)
from xleval.api.data import (
    DEFAULT_SPLIT_RATIOS,
    SPLITS,
    Example,
    MultilingualDataset,
    assign_splits,
    check_split_ratios,
    report_methods,
    spec_sources,
    spec_targets,
    split_for_group,
    unit_hash,
)
from xleval.api.errors import (
    DataError,
    ExecutorStopped,
    MethodError,
    OptionsError,
    PluginOutputError,
    PluginUnavailable,
    XlevalError,
)
from xleval.api.hookspecs import Register, hookimpl
from xleval.api.metric_form import MetricForm, mean_of

__all__ = [
    "DEFAULT_SPLIT_RATIOS",
    "SPLITS",
    "CellContext",
    "CellTaskContract",
    "ComponentSlot",
    "DataError",
    "DatasetLoader",
    "EvaluationProtocol",
    "Example",
    "Executor",
    "ExecutorStopped",
    "FeatureBatch",
    "FusionStrategy",
    "MethodError",
    "Metric",
    "MetricForm",
    "ModelBuilder",
    "MultilingualDataset",
    "OptionsError",
    "PluginOutputError",
    "PluginUnavailable",
    "Register",
    "Reporter",
    "Scorer",
    "TextClassifier",
    "TrainSet",
    "TransferStrategy",
    "XlevalError",
    "assign_splits",
    "check_split_ratios",
    "hookimpl",
    "mean_of",
    "report_methods",
    "spec_sources",
    "spec_targets",
    "split_for_group",
    "unit_hash",
]

"""The five cross-lingual methods as protocols, and ``run_cell`` for one cell.

A method is a protocol (target-only, zero-shot, transfer, fusion, joint) plus options
naming its components: a model builder, training options, and for ``transfer`` a transfer
strategy (and fine-tuning options), for ``fusion`` a fusion strategy. Components come from
the plugin registry by name, never by import. Trained models are *artifacts* keyed by
everything that determines them, so an :class:`ArtifactCache` passed to many cells trains
each source model once per (sources, model options, training options, seed).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from xleval import checks
from xleval.data import Example, MultilingualDataset
from xleval.errors import OptionsError, XlevalError
from xleval.registry import Registry, fill_defaults, schema_errors
from xleval.sampling import Shots, sample_shots
from xleval.training_options import resolve_training_options

if TYPE_CHECKING:  # torch loads with the first cell run in a process, not with this module:
    # a driver that only plans and keys cells (a dask run's) never pays its 1.3 s import
    import torch
    from torch import nn

    from xleval.training import TrainReport

PROTOCOLS: tuple[str, ...] = ("target-only", "zero-shot", "transfer", "fusion", "joint")


class MethodError(XlevalError):
    """A method that cannot run on this cell (e.g. target-only with no target shots)."""


_COMMON: dict[str, Any] = {
    "model": {
        "type": "string",
        "default": "bag-of-embeddings",
        "description": "Model builder name (registry kind 'models').",
    },
    "model_options": {"type": "object", "default": {}},
    "training": {
        "type": "object",
        "default": {},
        "description": "Trainer options (xleval.training_options.TRAINING_SCHEMA).",
    },
}
_TRANSFER: dict[str, Any] = {
    "transfer": {
        "type": "string",
        "default": "weight-copy",
        "description": "Transfer strategy name (registry kind 'transfer_strategies').",
    },
    "transfer_options": {"type": "object", "default": {}},
    "finetune": {
        "type": ["object", "null"],
        "default": None,
        "description": "Trainer options for fine-tuning on the target shots "
        "(null: the same as 'training').",
    },
}
_FUSION: dict[str, Any] = {
    "fusion": {
        "type": "string",
        "default": "exp-sum",
        "description": "Fusion strategy name (registry kind 'fusion_strategies').",
    },
    "fusion_options": {"type": "object", "default": {}},
}


def _method_schema(extra: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": {**_COMMON, **extra}}


#: protocol -> JSON Schema of its options.
METHOD_SCHEMAS: dict[str, dict[str, Any]] = {
    "target-only": _method_schema({}),
    "zero-shot": _method_schema({}),
    "transfer": _method_schema(_TRANSFER),
    "fusion": _method_schema(_FUSION),
    "joint": _method_schema({}),
}


@dataclass(frozen=True)
class Method:
    """A protocol with fully resolved options (every component's defaults filled in)."""

    protocol: str
    options: dict[str, Any]
    name: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "protocol": self.protocol, "options": self.options}


def make_method(
    protocol: str,
    options: Mapping[str, Any] | None = None,
    *,
    registry: Registry,
    name: str | None = None,
) -> Method:
    """Check a method's options and its components' options now, before any cell runs."""
    if protocol not in METHOD_SCHEMAS:
        raise OptionsError(f"unknown method '{protocol}' (methods: {', '.join(PROTOCOLS)})")
    options = dict(options or {})
    errors = schema_errors(METHOD_SCHEMAS[protocol], options)
    if errors:
        raise OptionsError(
            f"invalid options for method '{protocol}':\n" + "\n".join(f"  - {e}" for e in errors)
        )
    resolved = fill_defaults(METHOD_SCHEMAS[protocol], options)
    resolved["model_options"] = registry.get("models", resolved["model"]).resolve_options(
        resolved["model_options"]
    )
    resolved["training"] = resolve_training_options(resolved["training"])
    if protocol == "transfer":
        resolved["transfer_options"] = registry.get(
            "transfer_strategies", resolved["transfer"]
        ).resolve_options(resolved["transfer_options"])
        resolved["finetune"] = resolve_training_options(
            resolved["training"] if resolved["finetune"] is None else resolved["finetune"]
        )
    if protocol == "fusion":
        resolved["fusion_options"] = registry.get(
            "fusion_strategies", resolved["fusion"]
        ).resolve_options(resolved["fusion_options"])
    return Method(protocol=protocol, options=resolved, name=name or protocol)


# -- artifacts -------------------------------------------------------------------------


def artifact_key(kind: str, parts: Mapping[str, Any]) -> str:
    """A stable key for an artifact: ``kind:`` + sha256 of the canonical JSON of ``parts``."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{kind}:{hashlib.sha256(text.encode()).hexdigest()}"


def artifact_nbytes(value: Any) -> int:
    """Memory held by an artifact's tensors (models, featurized splits, scores)."""
    import torch
    from torch import nn

    if isinstance(value, torch.Tensor):
        return value.element_size() * value.numel()
    model = getattr(value, "model", None)
    if isinstance(model, nn.Module):
        return sum(t.element_size() * t.numel() for t in model.state_dict().values())
    nbytes = getattr(value, "nbytes", None)
    if callable(nbytes):
        return int(nbytes())
    return 0


class ArtifactCache:
    """Trained models, featurized splits and test scores, shared between cells of a process.

    Values are shared, not copied: never train a cached model in place (transfer copies
    weights *out of* the source model). ``max_items`` and ``max_bytes`` (tensor memory, see
    :func:`artifact_nbytes`) bound memory, least recently used out first: a model of
    2*10^5 x 64 floats is 51 MB. A runner can subclass this to persist artifacts (keys are
    strings).
    """

    def __init__(self, max_items: int | None = None, max_bytes: int | None = None) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def get(self, key: str) -> Any | None:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        return None

    def put(self, key: str, value: Any) -> None:
        self.nbytes -= self._sizes.pop(key, 0)
        self._items[key] = value
        self._items.move_to_end(key)
        self._sizes[key] = artifact_nbytes(value)
        self.nbytes += self._sizes[key]
        while len(self._items) > 1 and (
            (self.max_items is not None and len(self._items) > self.max_items)
            or (self.max_bytes is not None and self.nbytes > self.max_bytes)
        ):
            old, _ = self._items.popitem(last=False)
            self.nbytes -= self._sizes.pop(old)

    def get_or_create(self, key: str, create: Callable[[], Any]) -> tuple[Any, bool]:
        """(value, True) if cached, else (create(), False) after storing it."""
        value = self.get(key)
        if value is not None:
            self.hits += 1
            return value, True
        self.misses += 1
        value = create()
        self.put(key, value)
        return value, False


@dataclass
class TrainedModel:
    """A trained model artifact and how it was made."""

    key: str
    model: nn.Module
    report: TrainReport
    train_set: list[list[Any]]


# -- results ---------------------------------------------------------------------------


@dataclass
class Predictions:
    """Per-example predictions on one test split."""

    ids: tuple[str, ...]
    y_true: torch.Tensor
    probs: torch.Tensor

    @property
    def predicted(self) -> torch.Tensor:
        return self.probs.argmax(1)

    def to_json(self, labels: Sequence[str], probs: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ids": list(self.ids),
            "true": [labels[i] for i in self.y_true.tolist()],
            "predicted": [labels[i] for i in self.predicted.tolist()],
        }
        if probs:
            out["probs"] = [[round(p, 6) for p in row] for row in self.probs.tolist()]
        return out


@dataclass
class CellResult:
    """One cell's outcome: metrics on the target test split and on each source's."""

    method: str
    protocol: str
    sources: tuple[str, ...]
    target: str
    shots: Shots
    seed: int
    labels: tuple[str, ...]
    metrics: dict[str, float]
    source_metrics: dict[str, dict[str, float]]
    n_test: dict[str, int]
    n_shots: int
    shortfall: dict[str, int]
    train_seconds: float
    eval_seconds: float
    training: list[dict[str, Any]] = field(default_factory=list)
    transfer: dict[str, Any] | None = None
    fused_models: list[str] | None = None
    predictions: dict[str, Predictions] = field(default_factory=dict)
    #: Seconds per phase (featurize, init, train, transfer, eval, artifact_io); their sum
    #: is about train_seconds + eval_seconds.
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self, predictions: bool = True, probs: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": self.method,
            "protocol": self.protocol,
            "sources": list(self.sources),
            "target": self.target,
            "shots": self.shots,
            "seed": self.seed,
            "metrics": self.metrics,
            "source_metrics": self.source_metrics,
            "n_test": self.n_test,
            "n_shots": self.n_shots,
            "shortfall": self.shortfall,
            "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds,
            "training": self.training,
            "transfer": self.transfer,
            "fused_models": self.fused_models,
            "timings": self.timings,
        }
        if predictions:
            out["predictions"] = {
                lang: p.to_json(self.labels, probs) for lang, p in self.predictions.items()
            }
        return out


# -- running one cell ------------------------------------------------------------------

#: A training set: ["split", lang] (that language's train split) or
#: ["shots", lang, k, seed] (a shot sample), in a list (joint training has several).
TrainSet = list[list[Any]]


class PhaseTimer:
    """Exclusive seconds per named phase: ``with timer("train"):`` blocks may nest, and an
    inner block's time counts for the inner phase only."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._children: list[float] = []

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        self._children.append(0.0)
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            inner = self._children.pop()
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - inner
            if self._children:
                self._children[-1] += elapsed


class _Cell:
    """Shared machinery of one cell: training sets, artifact caching, scoring."""

    def __init__(
        self,
        method: Method,
        dataset: MultilingualDataset,
        sources: tuple[str, ...],
        target: str,
        shots: Shots,
        seed: int,
        registry: Registry,
        artifacts: ArtifactCache,
        timer: PhaseTimer,
    ) -> None:
        self.method, self.dataset, self.sources, self.target = method, dataset, sources, target
        self.shots, self.seed, self.registry, self.artifacts = shots, seed, registry, artifacts
        self.timer = timer
        self.options = method.options
        self.builder = registry.build(
            "models", self.options["model"], self.options["model_options"]
        )
        self.n_classes = len(dataset.labels)
        self.sample = sample_shots(dataset, target, shots, seed)
        self.training: list[dict[str, Any]] = []

    def shot_set(self) -> TrainSet:
        return [["shots", self.target, self.shots, self.seed]] if len(self.sample) else []

    def examples(self, train_set: TrainSet) -> list[Example]:
        out: list[Example] = []
        for part in train_set:
            out.extend(
                self.dataset.select(part[1], "train")
                if part[0] == "split"
                else self.sample.examples
            )
        return out

    def dev_examples(self, train_set: TrainSet) -> list[Example]:
        """Dev data for early stopping: the dev split of each language trained on in full.
        A k-shot sample gets none: using the whole target dev split would see more target
        labels than the k shots allow."""
        out: list[Example] = []
        for part in train_set:
            if part[0] == "split" or part[2] == "all":
                out.extend(self.dataset.select(part[1], "dev"))
        return out

    # -- features: each split featurized once per process (and run directory) -------------

    def split_features(self, model: nn.Module, lang: str, split: str) -> Any | None:
        """``model.featurize`` of one split, shared by every cell, seed and model with the
        same ``feature_key`` (None: the model has none, so it featurizes its own texts)."""
        feature_key = getattr(model, "feature_key", None)
        if feature_key is None:
            return None
        key = artifact_key(
            "features",
            {
                "dataset": self.dataset.fingerprint,
                "lang": lang,
                "split": split,
                "featurizer": feature_key,
            },
        )
        texts = [e.text for e in self.dataset.select(lang, split)]
        with self.timer("featurize"):
            features, _ = self.artifacts.get_or_create(key, lambda: model.featurize(texts))
        return features

    def train_features(self, model: nn.Module, train_set: TrainSet) -> Any | None:
        """Features of ``train_set``: its splits' cached features, shots selected from
        their split's (identical to featurizing the texts; None: featurize them)."""
        parts = []
        for part in train_set:
            split = self.split_features(model, part[1], "train")
            if split is None:
                return None
            if part[0] == "split":
                parts.append(split)
                continue
            examples = self.dataset.select(part[1], "train")
            position = {e.id: i for i, e in enumerate(examples)}
            index = [position.get(e.id, -1) for e in self.sample.examples]
            if any(
                i < 0 or examples[i] is not e
                for i, e in zip(index, self.sample.examples, strict=True)
            ):
                return None  # not the split's own examples: featurize the texts instead
            import torch

            from xleval.training import take

            with self.timer("featurize"):
                parts.append(take(split, torch.tensor(index, dtype=torch.int64)))
        with self.timer("featurize"):
            return concat_batches(parts)

    def fit(
        self, model: nn.Module, train_set: TrainSet, options: dict[str, Any], role: str
    ) -> TrainReport:
        from xleval.training import derive_seed, train

        examples = self.examples(train_set)
        dev = self.dev_examples(train_set)
        features = self.train_features(model, train_set)
        with self.timer("train"):
            report = train(
                model,
                [e.text for e in examples],
                self.dataset.label_ids(examples),
                options,
                seed=derive_seed(self.seed, "train", json.dumps(train_set)),
                dev=([e.text for e in dev], self.dataset.label_ids(dev)) if dev else None,
                features=features,
            )
        self.training.append(
            {"role": role, "train_set": train_set, "cached": False, **report.to_json()}
        )
        return report

    def build(self, train_texts: Sequence[str], seed: int) -> nn.Module:
        from xleval.training import build_model

        with self.timer("init"):
            return build_model(self.builder, self.n_classes, train_texts=train_texts, seed=seed)

    def trained(self, train_set: TrainSet, role: str) -> TrainedModel:
        """The model trained from scratch on ``train_set``: from the cache when another
        cell (of any method) already trained it."""
        key = artifact_key(
            "model",
            {
                "dataset": self.dataset.fingerprint,
                "model": self.options["model"],
                "model_options": self.options["model_options"],
                "training": self.options["training"],
                "train_set": train_set,
                "seed": self.seed,
            },
        )

        def create() -> TrainedModel:
            from xleval.training import derive_seed

            texts = [e.text for e in self.examples(train_set)]
            model = self.build(texts, derive_seed(self.seed, "init", json.dumps(train_set)))
            report = self.fit(model, train_set, self.options["training"], role)
            return TrainedModel(key=key, model=model, report=report, train_set=train_set)

        artifact, hit = self.artifacts.get_or_create(key, create)
        if hit:
            self.training.append(
                {"role": role, "train_set": train_set, "cached": True, **artifact.report.to_json()}
            )
        return artifact

    def scores(self, model: nn.Module, lang: str, key: str | None) -> torch.Tensor:
        from xleval.training import predict_scores

        texts = [e.text for e in self.dataset.select(lang, "test")]

        def predict() -> torch.Tensor:
            features = self.split_features(model, lang, "test")
            with self.timer("eval"):
                scores = predict_scores(model, texts, features=features)
            checks.scores_shape(
                f"model '{self.options['model']}'", scores, len(texts), len(self.dataset.labels)
            )
            return scores

        if key is None:
            return predict()
        cached, _ = self.artifacts.get_or_create(
            artifact_key("scores", {"model": key, "lang": lang, "split": "test"}), predict
        )
        return cached


def concat_batches(parts: Sequence[Any]) -> Any:
    """Featurized batches one after another: ``type(parts[0]).concat(parts)`` or Tensors'
    ``torch.cat``."""
    import torch

    if len(parts) == 1:
        return parts[0]
    if all(isinstance(p, torch.Tensor) for p in parts):
        return torch.cat(list(parts))
    concat = getattr(type(parts[0]), "concat", None)
    if concat is None:
        raise TypeError(f"cannot concatenate batches of type {type(parts[0]).__name__}")
    return concat(parts)


#: Evaluates one language's test split to probabilities [n, classes].
Scorer = Callable[[str], "torch.Tensor"]


def _probabilities(cell: _Cell, model: nn.Module, key: str | None) -> Scorer:
    """The scorer of one model: softmax of its scores (cached under ``key``)."""
    import torch

    return lambda lang: torch.softmax(cell.scores(model, lang, key), 1)


def _target_only(cell: _Cell) -> Scorer:
    """A model trained on the k target shots only (the baseline every method must beat)."""
    if not len(cell.sample):
        raise MethodError(
            f"target-only needs target training examples; with shots="
            f"{cell.shots!r} there are none in '{cell.target}'"
        )
    trained = cell.trained(cell.shot_set(), "target")
    return _probabilities(cell, trained.model, trained.key)


def _source_set(cell: _Cell) -> TrainSet:
    return [["split", lang] for lang in sorted(cell.sources)]


def _zero_shot(cell: _Cell) -> Scorer:
    """The source model, unchanged: independent of k, so one artifact serves every k."""
    trained = cell.trained(_source_set(cell), "source")
    return _probabilities(cell, trained.model, trained.key)


def _joint(cell: _Cell) -> Scorer:
    """One model trained on the sources' train splits plus the target shots."""
    trained = cell.trained(_source_set(cell) + cell.shot_set(), "joint")
    return _probabilities(cell, trained.model, trained.key)


def _transfer(cell: _Cell, result: dict[str, Any]) -> Scorer:
    """Source model -> transfer strategy -> fine-tune a fresh target model on the shots.

    The target model is built (and ``prepare``d) on the target shots, as the seed's target
    model is; with k = 0 a per-training-set vocabulary (embedding-linear) is then just
    ``<unk>``, so only bag-of-embeddings' shared hashed rows can transfer without shots.
    """
    from xleval.training import derive_seed

    source = cell.trained(_source_set(cell), "source")
    shot_texts = [e.text for e in cell.sample.examples]
    target = cell.build(shot_texts, derive_seed(cell.seed, "init", "transfer-target"))
    strategy = cell.registry.build(
        "transfer_strategies", cell.options["transfer"], cell.options["transfer_options"]
    )
    name = cell.options["transfer"]
    with cell.timer("transfer"):
        before = checks.parameter_fingerprint(source.model)
        target = strategy.transfer(source.model, target)
        checks.source_unchanged(name, before, checks.parameter_fingerprint(source.model))
    from torch import nn

    if not isinstance(target, nn.Module):
        raise checks.PluginOutputError(
            f"transfer strategy '{name}' returned {type(target).__name__}, not the target model"
        )
    result["transfer"] = checks.json_value(
        f"transfer strategy '{name}' (last_report)",
        dict(getattr(strategy, "last_report", None) or {}),
    )
    if len(cell.sample):  # k = 0: the transferred model is evaluated as it is
        cell.fit(target, cell.shot_set(), cell.options["finetune"], "finetune")
    target.eval()
    return _probabilities(cell, target, None)


def _fusion(cell: _Cell, result: dict[str, Any]) -> Scorer:
    """One model per source language plus the target-shots model, their scores fused (in
    that order: sorted sources, then the target, which is the order of ``weights``)."""
    members = [(lang, cell.trained([["split", lang]], "source")) for lang in sorted(cell.sources)]
    if len(cell.sample):  # k = 0: fuse the source models only
        members.append((cell.target, cell.trained(cell.shot_set(), "target")))
    result["fused_models"] = [lang for lang, _ in members]
    fusion = cell.registry.build(
        "fusion_strategies", cell.options["fusion"], cell.options["fusion_options"]
    )

    import torch

    def score(lang: str) -> torch.Tensor:
        stacked = torch.stack([cell.scores(t.model, lang, t.key) for _, t in members])
        fused = fusion.fuse(stacked)
        checks.fused_probabilities(cell.options["fusion"], fused, *stacked.shape[1:])
        return fused

    return score


def run_cell(
    method: Method,
    dataset: MultilingualDataset,
    sources: Sequence[str],
    target: str,
    shots: Shots,
    seed: int,
    *,
    registry: Registry,
    metrics: Sequence[str] | Mapping[str, Mapping[str, Any]] = ("accuracy",),
    artifacts: ArtifactCache | None = None,
) -> CellResult:
    """Run one cell: train what ``method`` needs, evaluate on the target's and each
    source's test split.

    ``metrics`` are metric names (or name -> options). Pass one ``artifacts`` cache to
    many cells to train shared models once; without one, nothing is shared.
    """
    import torch

    sources = tuple(dict.fromkeys(sources))
    if not sources:
        raise MethodError("a cell needs at least one source language")
    if target in sources:
        raise MethodError(f"target language '{target}' is also a source")
    missing = [lang for lang in (*sources, target) if lang not in dataset.languages]
    if missing:
        raise MethodError(
            f"dataset '{dataset.name}' has no language(s) {', '.join(missing)} "
            f"(languages: {', '.join(dataset.languages)})"
        )
    metric_specs = dict(metrics) if isinstance(metrics, Mapping) else {m: {} for m in metrics}
    scorers = {
        name: registry.build("metrics", name, dict(opts)) for name, opts in metric_specs.items()
    }
    artifacts = ArtifactCache() if artifacts is None else artifacts

    timer = PhaseTimer()
    previous_timer = getattr(artifacts, "timer", None)
    artifacts.timer = timer  # type: ignore[attr-defined]  # disk caches time their I/O
    try:
        started = time.perf_counter()
        cell = _Cell(method, dataset, sources, target, shots, seed, registry, artifacts, timer)
        extra: dict[str, Any] = {}
        protocol = method.protocol
        if protocol == "target-only":
            scorer = _target_only(cell)
        elif protocol == "zero-shot":
            scorer = _zero_shot(cell)
        elif protocol == "joint":
            scorer = _joint(cell)
        elif protocol == "transfer":
            scorer = _transfer(cell, extra)
        elif protocol == "fusion":
            scorer = _fusion(cell, extra)
        else:  # make_method rejects unknown protocols; a hand-built Method might not
            raise MethodError(f"unknown method protocol '{protocol}'")
        train_seconds = time.perf_counter() - started

        started = time.perf_counter()
        per_lang: dict[str, dict[str, float]] = {}
        predictions: dict[str, Predictions] = {}
        with timer("eval"):
            for lang in (target, *sources):
                examples = dataset.select(lang, "test")
                y = torch.tensor(dataset.label_ids(examples), dtype=torch.int64)
                probs = scorer(lang) if examples else torch.zeros(0, len(dataset.labels))
                per_lang[lang] = checks.metric_values(
                    {name: m.compute(y, probs) for name, m in scorers.items()}
                )
                predictions[lang] = Predictions(tuple(e.id for e in examples), y, probs)
        eval_seconds = time.perf_counter() - started
    finally:
        artifacts.timer = previous_timer  # type: ignore[attr-defined]

    return CellResult(
        method=method.name,
        protocol=protocol,
        sources=sources,
        target=target,
        shots=shots,
        seed=seed,
        labels=dataset.labels,
        metrics=per_lang[target],
        source_metrics={lang: per_lang[lang] for lang in sources},
        n_test={lang: len(p.ids) for lang, p in predictions.items()},
        n_shots=len(cell.sample),
        shortfall=dict(cell.sample.shortfall),
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        training=cell.training,
        transfer=extra.get("transfer"),
        fused_models=extra.get("fused_models"),
        predictions=predictions,
        timings={k: round(v, 6) for k, v in sorted(timer.seconds.items())},
    )

"""One cell of a method, run: the context a protocol trains and scores through, and
:func:`run_cell`.

A method is a protocol (a plugin: target-only, transfer, ...) plus the components and
trainer options the spec gives it (:class:`xleval.experiment.spec.MethodSpec`, resolved
once). The protocol trains what it needs through :class:`RunningCell`; trained models are
*artifacts* keyed by everything that determines them, so an
:class:`xleval.train.artifacts.ArtifactCache` passed to many cells trains each source
model once per (sources, model options, training options, seed), whichever method asks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from xleval.api.contracts import Scorer, TrainSet
from xleval.api.data import Example, MultilingualDataset
from xleval.errors import MethodError, PluginOutputError
from xleval.experiment.grid import Cell
from xleval.experiment.sampling import Shots, sample_shots
from xleval.experiment.spec import MethodSpec
from xleval.plugin.registry import Registry
from xleval.train import checks
from xleval.train.artifacts import ArtifactCache, TrainedModel, artifact_key
from xleval.train.results import CellResult, Predictions
from xleval.train.timer import PhaseTimer

if TYPE_CHECKING:  # torch loads with the first cell run in a process, not with this module:
    # a driver that only plans and keys cells (a dask run's) never pays its 1.3 s import
    import torch
    from torch import nn

    from xleval.train.trainer import TrainReport


class RunningCell:
    """One cell being computed: its shots, trained models (shared through the artifact
    cache), scores and what the protocol records. Implements
    :class:`xleval.api.CellContext`."""

    def __init__(
        self,
        method: MethodSpec,
        dataset: MultilingualDataset,
        sources: tuple[str, ...],
        target: str,
        shots: Shots,
        seed: int,
        registry: Registry,
        artifacts: ArtifactCache,
        timer: PhaseTimer,
        draw: int | None = None,
    ) -> None:
        self.method, self.dataset, self.sources, self.target = method, dataset, sources, target
        self.shots, self.seed, self.registry, self.artifacts = shots, seed, registry, artifacts
        self.draw = draw
        self.timer = timer
        self.builder = registry.build("models", method.model.name, method.model.options)
        self.n_classes = len(dataset.labels)
        self.sample = sample_shots(dataset, target, shots, seed, draw)
        self.training: list[dict[str, Any]] = []
        self.info: dict[str, Any] = {}

    @property
    def shot_examples(self) -> list[Example]:
        """The k target training examples this cell drew (its seed's sample)."""
        return list(self.sample.examples)

    def shot_set(self) -> TrainSet:
        """The training set of the target shots (empty at k = 0); with a shot draw, the
        draw is its fifth element."""
        if not len(self.sample):
            return []
        part: list[Any] = ["shots", self.target, self.shots, self.seed]
        return [part + ([] if self.draw is None else [self.draw])]

    def source_set(self) -> TrainSet:
        """The sources' train splits together, sorted (one model learns them all)."""
        return [["split", lang] for lang in sorted(self.sources)]

    def training_options(self, slot: str | None = None) -> dict[str, Any]:
        """The method's resolved trainer options, or those of one of its protocol's
        trainer-option slots (``finetune``: the method's when the spec sets none)."""
        return self.method.training_options(slot)

    def component(self, slot: str) -> Any:
        """The component the method names in one of its protocol's slots, built."""
        ref = self.method.components[slot]
        return self.registry.build(ref.kind, ref.name, ref.options)

    def component_name(self, slot: str) -> str:
        return self.method.components[slot].name

    def derive_seed(self, *parts: Any) -> int:
        """A seed for one purpose of this cell (``"init", "transfer-target"``), derived
        from the cell's seed: every purpose gets its own stream."""
        from xleval.train.trainer import derive_seed

        return derive_seed(self.seed, *parts)

    def probabilities(self, model: nn.Module, key: str | None) -> Scorer:
        """The scorer of one model: softmax of its scores (cached under ``key``, the
        trained model's artifact key; None for a model no other cell can share)."""
        import torch

        return lambda lang: torch.softmax(self.scores(model, lang, key), 1)

    def transfer(self, slot: str, source: nn.Module, target: nn.Module) -> nn.Module:
        """Move ``source``'s knowledge into ``target`` with the transfer strategy of
        ``slot``, checking that it returns a model and leaves the shared source model
        unchanged; its ``last_report`` goes into the cell's info under ``slot``."""
        from torch import nn

        strategy = self.component(slot)
        name = self.component_name(slot)
        with self.timer(slot):  # the phase is named after the protocol's slot
            before = checks.parameter_fingerprint(source)
            out = strategy.transfer(source, target)
            checks.source_unchanged(name, before, checks.parameter_fingerprint(source))
        if not isinstance(out, nn.Module):
            raise checks.PluginOutputError(
                f"transfer strategy '{name}' returned {type(out).__name__}, not the target model"
            )
        self.info[slot] = checks.json_value(
            f"transfer strategy '{name}' (last_report)",
            dict(getattr(strategy, "last_report", None) or {}),
        )
        return out

    def fuse(self, slot: str, scores: torch.Tensor) -> torch.Tensor:
        """The fusion strategy of ``slot`` over stacked scores [models, n, classes]:
        probabilities [n, classes], checked."""
        fused = self.component(slot).fuse(scores)
        checks.fused_probabilities(self.component_name(slot), fused, *scores.shape[1:])
        return fused

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
            features, _ = self.artifacts.get_or_create(
                key, lambda: cast(Any, model).featurize(texts)
            )
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

            from xleval.train.trainer import take

            with self.timer("featurize"):
                parts.append(take(split, torch.tensor(index, dtype=torch.int64)))
        with self.timer("featurize"):
            return concat_batches(parts)

    def fit(
        self, model: nn.Module, train_set: TrainSet, options: dict[str, Any], role: str
    ) -> TrainReport:
        from xleval.train.trainer import derive_seed, train

        examples = self.examples(train_set)
        dev = self.dev_examples(train_set)
        features = self.train_features(model, train_set)
        with self.timer("train"):
            report = train(
                model,
                [e.text for e in examples],
                self.dataset.label_ids(examples),
                options,
                seed=derive_seed(self.seed, "train", seed_view(train_set)),
                dev=([e.text for e in dev], self.dataset.label_ids(dev)) if dev else None,
                features=features,
            )
        self.training.append(
            {"role": role, "train_set": train_set, "cached": False, **report.to_json()}
        )
        return report

    def build(self, train_texts: Sequence[str], seed: int) -> nn.Module:
        from xleval.train.trainer import build_model

        with self.timer("init"):
            return build_model(self.builder, self.n_classes, train_texts=train_texts, seed=seed)

    def trained(self, train_set: TrainSet, role: str) -> TrainedModel:
        """The model trained from scratch on ``train_set``: from the cache when another
        cell (of any method) already trained it."""
        key = artifact_key(
            "model",
            {
                "dataset": self.dataset.fingerprint,
                "model": self.method.model.name,
                "model_options": self.method.model.options,
                "training": self.method.training,
                "train_set": train_set,
                "seed": self.seed,
            },
        )

        def create() -> TrainedModel:
            from xleval.train.trainer import derive_seed

            texts = [e.text for e in self.examples(train_set)]
            model = self.build(texts, derive_seed(self.seed, "init", seed_view(train_set)))
            report = self.fit(model, train_set, self.method.training, role)
            return TrainedModel(key=key, model=model, report=report, train_set=train_set)

        artifact, hit = self.artifacts.get_or_create(key, create)
        if hit:
            self.training.append(
                {"role": role, "train_set": train_set, "cached": True, **artifact.report.to_json()}
            )
        return artifact

    def scores(self, model: nn.Module, lang: str, key: str | None) -> torch.Tensor:
        from xleval.train.trainer import predict_scores

        texts = [e.text for e in self.dataset.select(lang, "test")]

        def predict() -> torch.Tensor:
            features = self.split_features(model, lang, "test")
            with self.timer("eval"):
                scores = predict_scores(model, texts, features=features)
            checks.scores_shape(
                f"model '{self.method.model.name}'", scores, len(texts), len(self.dataset.labels)
            )
            return scores

        if key is None:
            return predict()
        cached, _ = self.artifacts.get_or_create(
            artifact_key("scores", {"model": key, "lang": lang, "split": "test"}), predict
        )
        return cached


def seed_view(train_set: TrainSet) -> str:
    """What a training set's random streams (init, data order) derive from: the training
    set without its shot draws, so the draws of one seed differ only in their examples and
    the spread between them is the draw's alone."""
    return json.dumps([part[:4] if part[0] == "shots" else part for part in train_set])


def concat_batches(parts: Sequence[Any]) -> Any | None:
    """Featurized batches one after another: ``type(parts[0]).concat(parts)`` or Tensors'
    ``torch.cat``; None when the batch type has no ``concat`` (the caller featurizes the
    texts instead)."""
    import torch

    if len(parts) == 1:
        return parts[0]
    if all(isinstance(p, torch.Tensor) for p in parts):
        return torch.cat(list(parts))
    concat = getattr(type(parts[0]), "concat", None)
    return None if concat is None else concat(parts)


def run_cell(
    method: MethodSpec,
    dataset: MultilingualDataset,
    sources: Sequence[str],
    target: str,
    shots: Shots,
    seed: int,
    *,
    registry: Registry,
    metrics: Sequence[str] | Mapping[str, Mapping[str, Any]] = (),
    artifacts: ArtifactCache | None = None,
    protocol: Any = None,
    draw: int | None = None,
) -> CellResult:
    """Run one cell: the method's protocol trains what it needs; evaluate on the target's
    and each source's test split.

    ``metrics`` are metric names (or name -> options; none: predictions only). Pass one
    ``artifacts`` cache to many cells to train shared models once; without one, nothing is
    shared. ``protocol``: the method's protocol, built (else it is built from the registry).
    ``draw``: which sample of the k shots (a spec's ``shot_draws``; None: the seed's).
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
    component = registry.get("protocols", method.protocol)
    if protocol is None:
        protocol = component.build(method.options)

    n_classes = len(dataset.labels)
    timer = PhaseTimer()
    previous_timer = getattr(artifacts, "timer", None)
    artifacts.timer = timer  # type: ignore[attr-defined]  # disk caches time their I/O
    try:
        started = time.perf_counter()
        cell = RunningCell(
            method, dataset, sources, target, shots, seed, registry, artifacts, timer, draw
        )
        scorer = protocol.run(cell)
        if not callable(scorer):
            raise PluginOutputError(
                f"{component.label} returned {type(scorer).__name__} from run(), not a scorer "
                "(a function from a language to probabilities)"
            )
        train_seconds = time.perf_counter() - started

        started = time.perf_counter()
        per_lang: dict[str, dict[str, float]] = {}
        predictions: dict[str, Predictions] = {}
        with timer("eval"):
            for lang in (target, *sources):
                examples = dataset.select(lang, "test")
                y = torch.tensor(dataset.label_ids(examples), dtype=torch.int64)
                if examples:
                    probs = scorer(lang)
                    checks.probabilities(
                        f"the scorer of {component.label}", probs, len(examples), n_classes
                    )
                else:
                    probs = torch.zeros(0, len(dataset.labels))
                per_lang[lang] = checks.metric_values(
                    {name: m.compute(y, probs) for name, m in scorers.items()}
                )
                predictions[lang] = Predictions(
                    tuple(e.id for e in examples),
                    y.numpy(),
                    probs.detach().to("cpu").float().numpy(),
                )
        eval_seconds = time.perf_counter() - started
        info = checks.json_value(f"{component.label} (cell info)", cell.info)
    finally:
        artifacts.timer = previous_timer  # type: ignore[attr-defined]

    return CellResult(
        cell=Cell(method.label, method.protocol, sources, target, shots, seed, draw),
        labels=dataset.labels,
        metrics=per_lang[target],
        source_metrics={lang: per_lang[lang] for lang in sources},
        n_test={lang: len(p.ids) for lang, p in predictions.items()},
        n_shots=len(cell.sample),
        shortfall=dict(cell.sample.shortfall),
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        training=cell.training,
        info=info,
        predictions=predictions,
        timings={k: round(v, 6) for k, v in sorted(timer.seconds.items())},
    )

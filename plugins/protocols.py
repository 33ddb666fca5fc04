"""The five methods of cross-lingual evaluation, as protocols.

* ``target-only``: a model trained on the k target shots alone (the baseline).
* ``zero-shot``: the source model, applied to the target as it is (independent of k).
* ``transfer``: the source model's weights moved into a target model by a transfer
  strategy, then fine-tuned on the k shots.
* ``fusion``: one model per source language plus the target-shots model, their scores
  fused by a fusion strategy.
* ``joint``: one model trained on the sources' train splits plus the target shots.

Each trains through the cell it is given (``xleval.api.CellContext``), so trained models
are shared between cells and methods by what they were trained on.
"""

from __future__ import annotations

from typing import Any, ClassVar

from xleval import api
from xleval.api import CellContext, ComponentSlot, EvaluationProtocol, Scorer, TrainSet
from xleval.errors import MethodError

NO_OPTIONS: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": {}}


def each_source(sources: tuple[str, ...]) -> list[TrainSet]:
    """One training set per source language, in sorted order."""
    return [[["split", lang]] for lang in sorted(sources)]


def all_sources(sources: tuple[str, ...]) -> TrainSet:
    """The sources' train splits together (sorted, so the order never changes a model)."""
    return [["split", lang] for lang in sorted(sources)]


class TargetOnly(EvaluationProtocol):
    """A model trained on the k target shots only (the baseline every method must beat)."""

    learns_from_source = False
    baseline = True

    def runs_at(self, shots: int | str, sources: tuple[str, ...]) -> bool:
        return shots != 0

    def run(self, cell: CellContext) -> Scorer:
        if not cell.shot_examples:
            raise MethodError(
                f"target-only needs target training examples; with shots="
                f"{cell.shots!r} there are none in '{cell.target}'"
            )
        trained = cell.trained(cell.shot_set(), "target")
        return cell.probabilities(trained.model, trained.key)


class ZeroShot(EvaluationProtocol):
    """The source model, unchanged: independent of k, so one cell serves every k."""

    ignores_shots = True
    order = 0

    def source_models(self, sources: tuple[str, ...]) -> list[TrainSet]:
        return [all_sources(sources)]

    def run(self, cell: CellContext) -> Scorer:
        trained = cell.trained(cell.source_set(), "source")
        return cell.probabilities(trained.model, trained.key)


class Joint(EvaluationProtocol):
    """One model trained on the sources' train splits plus the target shots (at k = 0 it
    would be the zero-shot model, so it has no cell there)."""

    order = 1

    def runs_at(self, shots: int | str, sources: tuple[str, ...]) -> bool:
        return shots != 0

    def run(self, cell: CellContext) -> Scorer:
        trained = cell.trained(cell.source_set() + cell.shot_set(), "joint")
        return cell.probabilities(trained.model, trained.key)


class Transfer(EvaluationProtocol):
    """Source model -> transfer strategy -> fine-tune a fresh target model on the shots.

    The target model is built (and ``prepare``d) on the target shots; with k = 0 a
    per-training-set vocabulary (embedding-linear) is then just ``<unk>``, so only
    bag-of-embeddings' shared hashed rows can transfer without shots.
    """

    components: ClassVar[dict[str, ComponentSlot]] = {
        "transfer": ComponentSlot(
            "transfer_strategies",
            "weight-copy",
            "How the source model's weights reach the target model.",
        )
    }
    trainings: ClassVar[dict[str, str]] = {
        "finetune": "Trainer options for fine-tuning on the target shots, merged over the "
        "method's training options (default: the same)."
    }

    def source_models(self, sources: tuple[str, ...]) -> list[TrainSet]:
        return [all_sources(sources)]

    def run(self, cell: CellContext) -> Scorer:
        source = cell.trained(cell.source_set(), "source")
        shot_texts = [e.text for e in cell.shot_examples]
        target = cell.build(shot_texts, cell.derive_seed("init", "transfer-target"))
        target = cell.transfer("transfer", source.model, target)
        if cell.shot_examples:  # k = 0: the transferred model is evaluated as it is
            cell.fit(target, cell.shot_set(), cell.training_options("finetune"), "finetune")
        target.eval()
        return cell.probabilities(target, None)


class Fusion(EvaluationProtocol):
    """One model per source language plus the target-shots model, their scores fused (in
    that order: sorted sources, then the target, which is the order of ``weights``)."""

    components: ClassVar[dict[str, ComponentSlot]] = {
        "fusion": ComponentSlot(
            "fusion_strategies", "exp-sum", "How the models' scores become one prediction."
        )
    }

    def runs_at(self, shots: int | str, sources: tuple[str, ...]) -> bool:
        # with one source and no shots it would be the zero-shot model
        return not (shots == 0 and len(sources) == 1)

    def source_models(self, sources: tuple[str, ...]) -> list[TrainSet]:
        return each_source(sources)

    def run(self, cell: CellContext) -> Scorer:
        import torch

        members = [
            (train_set[0][1], cell.trained(train_set, "source"))
            for train_set in each_source(cell.sources)
        ]
        if cell.shot_examples:  # k = 0: fuse the source models only
            members.append((cell.target, cell.trained(cell.shot_set(), "target")))
        cell.info["fused_models"] = [lang for lang, _ in members]

        def score(lang: str) -> torch.Tensor:
            stacked = torch.stack([cell.scores(t.model, lang, t.key) for _, t in members])
            return cell.fuse("fusion", stacked)

        return score


PROTOCOLS: dict[str, tuple[type[EvaluationProtocol], str]] = {
    "target-only": (TargetOnly, "A model trained on the k target examples alone (baseline)."),
    "zero-shot": (ZeroShot, "The source-language model applied to the target as it is."),
    "transfer": (Transfer, "Source model's weights transferred, then fine-tuned on k shots."),
    "fusion": (Fusion, "Per-language models (sources and target shots), scores fused."),
    "joint": (Joint, "One model trained on the sources' data plus the k target shots."),
}


@api.hookimpl
def xleval_register_protocols(register: api.Register) -> None:
    for name, (factory, description) in PROTOCOLS.items():
        register(name, factory, schema=NO_OPTIONS, description=description)

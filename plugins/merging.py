"""``merge``: per-language models from one shared start, merged in weight space.

Next to score fusion (``fusion``: one model per language, their scores combined) and joint
training (``joint``: one model on every language's data), a third way to combine languages:
fine-tune a copy of one shared model per language and average the copies' weights (Wortsman
et al.'s model soups, Ilharco et al.'s task arithmetic; mergekit merges, but evaluates
nothing). In a grid with ``fusion`` and ``joint`` the report compares "fuse scores", "merge
weights" and "train jointly" on identical splits and seeds.

A cell's members: the shared start ``base`` (``source``: the model trained on the sources'
train splits, the one zero-shot and transfer use; ``joint``: the model trained on them plus
the target shots); one copy of it fine-tuned on each source language's train split (with
one source and ``base = "source"`` that copy would be the base trained again on the same
data, so the base itself is the member); and, with k > 0 shots, one copy fine-tuned on the
target shots. Then

* ``average``: θ = Σ w_i θ_i / Σ w_i (``source_weight`` for each source member,
  ``target_weight`` for the target's; equal weights by default: a uniform soup);
* ``task-arithmetic``: θ = θ_base + λ Σ_i (θ_i − θ_base), λ = ``scale``.

Only floating-point tensors are merged (integer buffers come from the base). Members must
have the same parameter names and shapes: a model whose shapes depend on its training texts
(``embedding-linear``'s per-training-set vocabulary) is refused when the spec is checked.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from xleval import api
from xleval.api import CellContext, EvaluationProtocol, Scorer
from xleval.errors import MethodError, OptionsError

if TYPE_CHECKING:
    import torch
    from torch import nn

MERGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "how": {
            "enum": ["average", "task-arithmetic"],
            "default": "average",
            "description": "average: a weighted mean of the members' weights; "
            "task-arithmetic: the base plus scale x the sum of the members' changes to it.",
        },
        "base": {
            "enum": ["source", "joint"],
            "default": "source",
            "description": "The shared start the members are fine-tuned from: the sources' "
            "model, or the joint model (sources plus target shots).",
        },
        "source_weight": {
            "type": "number",
            "minimum": 0,
            "default": 1.0,
            "description": "average: the weight of each source language's member.",
        },
        "target_weight": {
            "type": "number",
            "minimum": 0,
            "default": 1.0,
            "description": "average: the weight of the target shots' member.",
        },
        "scale": {
            "type": "number",
            "default": 1.0,
            "description": "task-arithmetic: lambda, how much of the summed changes is added.",
        },
    },
}


def merge_state_dicts(
    base: Mapping[str, torch.Tensor],
    members: Sequence[Mapping[str, torch.Tensor]],
    *,
    how: str,
    weights: Sequence[float] | None = None,
    scale: float = 1.0,
) -> dict[str, torch.Tensor]:
    """The merged weights (see the module docstring). Raises MethodError naming the first
    parameter whose name or shape differs between the members."""
    if not members:
        raise MethodError("merge: no models to merge")
    for i, member in enumerate(members):
        if member.keys() != base.keys():
            different = sorted(set(member) ^ set(base))[:3]
            raise MethodError(f"merge: member {i} has other parameters than the base: {different}")
        for name, tensor in member.items():
            if tensor.shape != base[name].shape:
                raise MethodError(
                    f"merge: '{name}' is {tuple(tensor.shape)} in member {i} but "
                    f"{tuple(base[name].shape)} in the base: the models cannot be merged"
                )
    if how == "average":
        weights = list(weights) if weights is not None else [1.0] * len(members)
        if len(weights) != len(members) or sum(weights) <= 0:
            raise MethodError("merge: average needs one weight per member, summing above 0")
    merged = {}
    for name, start in base.items():
        if not start.is_floating_point():
            merged[name] = start.clone()
            continue
        base_value = start.double()  # half-precision weights are summed in full precision
        if how == "average":
            total = sum(w * m[name].double() for w, m in zip(weights or (), members, strict=True))
            merged[name] = (total / sum(weights or ())).to(start.dtype)
        else:
            change = sum(m[name].double() - base_value for m in members)
            merged[name] = (base_value + scale * change).to(start.dtype)
    return merged


class Merge(EvaluationProtocol):
    """Per-language copies of one shared model, fine-tuned, then merged in weight space."""

    trainings: ClassVar[dict[str, str]] = {
        "finetune": "Trainer options for fine-tuning each member from the base, merged over "
        "the method's training options (default: the same)."
    }

    def runs_at(self, shots: int | str, sources: tuple[str, ...]) -> bool:
        # one source, no shots, base = source: the only member would be the base itself
        return not (shots == 0 and len(sources) == 1)

    def source_models(self, sources: tuple[str, ...]) -> list[api.TrainSet]:
        if self.options.get("base", "source") != "source":
            return []  # the joint base depends on the cell's shots: trained in the cell
        return [[["split", lang] for lang in sorted(sources)]]

    def check_model(self, builder: Any) -> None:
        """Refuse, when the spec is checked, a model whose parameter shapes depend on its
        training texts: its per-language models could not be merged."""
        from xleval.train.trainer import build_model

        shapes = []
        for texts in (["a b"], ["c d e", "f g h i"]):
            model = build_model(builder, 2, seed=0, train_texts=texts)
            shapes.append({k: tuple(v.shape) for k, v in model.state_dict().items()})
        if shapes[0] != shapes[1]:
            differ = sorted(k for k in shapes[0] if shapes[0][k] != shapes[1].get(k))[:3]
            raise OptionsError(
                "merge: this model's parameter shapes depend on its training texts "
                f"({', '.join(differ)} differ, e.g. a per-training-set vocabulary), so models "
                "trained on different languages cannot be merged in weight space; use a model "
                "whose shapes are fixed by its options (bag-of-embeddings, hf-encoder)"
            )

    def run(self, cell: CellContext) -> Scorer:
        o = self.options
        shots = cell.shot_set() if cell.shot_examples else []
        if o["base"] == "source":
            base = cell.trained(cell.source_set(), "source")
        else:
            base = cell.trained(cell.source_set() + shots, "joint")
        members: list[nn.Module] = []
        weights: list[float] = []
        languages: list[str] = []
        if o["base"] == "source" and len(cell.sources) == 1:
            members.append(base.model)  # the base is the one source's model
            weights.append(o["source_weight"])
            languages.append(cell.sources[0])
        else:
            for lang in sorted(cell.sources):
                members.append(self._finetuned(cell, base.model, [["split", lang]], lang))
                weights.append(o["source_weight"])
                languages.append(lang)
        if shots:
            members.append(self._finetuned(cell, base.model, shots, cell.target))
            weights.append(o["target_weight"])
            languages.append(cell.target)
        merged = copy.deepcopy(base.model)
        merged.load_state_dict(
            merge_state_dicts(
                base.model.state_dict(),
                [m.state_dict() for m in members],
                how=o["how"],
                weights=weights,
                scale=o["scale"],
            )
        )
        merged.eval()
        cell.info["merged_models"] = languages
        return cell.probabilities(merged, None)

    @staticmethod
    def _finetuned(cell: CellContext, base: nn.Module, train_set: Any, lang: str) -> nn.Module:
        model = copy.deepcopy(base)  # the base is shared between cells: never train it
        cell.fit(model, train_set, cell.training_options("finetune"), f"member:{lang}")
        return model


@api.hookimpl
def xleval_register_protocols(register: api.Register) -> None:
    register(
        "merge",
        Merge,
        schema=MERGE_SCHEMA,
        description="Per-language copies of a shared model, fine-tuned, merged in weight "
        "space (average or task arithmetic).",
    )

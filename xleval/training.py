"""The training loop every method uses: seeded mini-batch cross-entropy, fastText-like defaults.

Models come from model plugins (see ``xleval_register_models``); this module only relies
on that contract: ``featurize(texts)`` returning a batch that is a Tensor (first dimension
= examples) or has ``len()`` and ``select(indices)``, ``forward(batch) -> scores``, and the
optional ``prepare(train_texts)``. Embedding modules built with ``sparse=True`` get
optimisers that accept sparse gradients; parameters with ``requires_grad=False`` (e.g.
frozen by a transfer strategy) are left alone.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xleval.errors import OptionsError
from xleval.registry import fill_defaults, schema_errors

OPTIMIZERS: tuple[str, ...] = ("sgd", "adagrad", "adam")

#: Learning rate per optimiser when ``lr`` is null. The loss is *summed* over a batch, so
#: an SGD learning rate means what it means in fastText (a step per example): 0.5 is
#: fastText's usual supervised value.
DEFAULT_LR: dict[str, float] = {"sgd": 0.5, "adagrad": 0.2, "adam": 0.01}

#: JSON Schema of the trainer's options; ``resolve_training_options`` fills the defaults.
#: Defaults (adagrad, lr 0.2, 5 epochs, batch 32): on ddtp-sections' small per-language
#: training sets (at most ~1,600 texts) SGD with fastText's 5-10 epochs is far from
#: converged (en test accuracy 0.41 for fastText, 0.51 here at lr 0.5 / 10 epochs), and
#: needs fastText-style 25-50 epochs to reach ~0.82; adagrad reaches ~0.86 in 5 epochs and
#: also learns from 8 shots (benchmarks/README.md has the figures).
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
            "barely move a zero-initialised classifier.",
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
            "type": "integer",
            "minimum": 2,
            "default": 32,
            "description": "Examples per step; never 1 (per-step overhead "
            "dominates). The last batch is merged, never a single example.",
        },
        "optimizer": {
            "enum": list(OPTIMIZERS),
            "default": "adagrad",
            "description": "adagrad (sparse rows for hashed tables; converges in few "
            "epochs), sgd (fastText's optimiser; fastest a step, needs more "
            "epochs), adam (SparseAdam for sparse embeddings).",
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
        raise OptionsError("invalid training options:\n" + "\n".join(f"  - {e}" for e in errors))
    resolved = fill_defaults(TRAINING_SCHEMA, options)
    if resolved["lr"] is None:
        resolved["lr"] = DEFAULT_LR[resolved["optimizer"]]
    return resolved


@dataclass
class TrainReport:
    """What happened in one training run (goes into the cell result)."""

    examples: int
    epochs: int
    steps: int
    batch_size: int
    seconds: float
    final_loss: float | None
    optimizer: str
    lr: float
    best_epoch: int | None = None
    dev_accuracy: list[float] = field(default_factory=list)
    dev_loss: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def derive_seed(seed: int, *parts: Any) -> int:
    """A 63-bit seed determined by ``seed`` and ``parts`` (so each artifact gets its own,
    reproducible stream regardless of the order in which cells run)."""
    text = "\x1f".join(map(str, (seed, *parts)))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run a block with ``threads`` torch CPU threads (None: unchanged), then restore."""
    previous = torch.get_num_threads()
    if threads is not None and threads != previous:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global CPU RNG seeded, restoring the caller's state after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_model(
    builder: Any, n_classes: int, *, seed: int, train_texts: Sequence[str] | None = None
) -> nn.Module:
    """``builder.build(n_classes)`` then the optional ``prepare(train_texts)``, seeded, so the
    initial weights depend on ``seed`` only."""
    with seeded(seed):
        model = builder.build(n_classes)
        prepare = getattr(model, "prepare", None)
        if callable(prepare):
            prepare(list(train_texts or ()))
    return model


def take(batch: Any, index: torch.Tensor) -> Any:
    """Rows ``index`` of a featurized batch (a Tensor, or anything with ``select``)."""
    if isinstance(batch, torch.Tensor):
        return batch[index]
    select = getattr(batch, "select", None)
    if select is None:
        raise TypeError(
            f"featurize() returned {type(batch).__name__}: the trainer needs a "
            "Tensor or an object with select(indices)"
        )
    return select(index)


def _sparse_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [
        m.weight
        for m in model.modules()
        if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.sparse and m.weight.requires_grad
    ]


class RowAdagrad(torch.optim.Optimizer):
    """torch's Adagrad rule (no lr decay, zero initial accumulator),
    ``s += g^2; w -= lr * g / (sqrt(s) + eps)``, whose sparse step touches only the
    gradient's rows.

    ``torch.optim.Adagrad`` applies a sparse gradient through ``coalesce``, ``sparse_mask``
    and ``add_(..., alpha=...)`` (which takes a slow path); scaled rows added with a plain
    ``index_add_`` make the default optimiser's step ~1.5x faster here.
    """

    def __init__(
        self, params: Any, lr: float, weight_decay: float = 0.0, eps: float = 1e-10
    ) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            lr, eps, decay = group["lr"], group["eps"], group["weight_decay"]
            for param in group["params"]:
                grad = param.grad
                if grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["sum"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                total = state["sum"]
                if grad.is_sparse:
                    if decay:
                        raise OptionsError("weight_decay does not apply to sparse gradients")
                    grad = grad.coalesce()  # a no-op for the bundled models' gradients
                    rows, values = grad.indices()[0], grad.values()
                    total.index_add_(0, rows, values * values)
                    std = total.index_select(0, rows).sqrt_().add_(eps)
                    param.index_add_(0, rows, values.div(std).mul_(-lr))
                else:
                    if decay:
                        grad = grad.add(param, alpha=decay)
                    total.addcmul_(grad, grad)
                    param.addcdiv_(grad, total.sqrt().add_(eps), value=-lr)


def make_optimizers(
    model: nn.Module, name: str, lr: float, weight_decay: float
) -> list[torch.optim.Optimizer]:
    """Optimisers over the trainable parameters; sparse embeddings get sparse-capable ones."""
    sparse = _sparse_parameters(model)
    sparse_ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if p.requires_grad and id(p) not in sparse_ids]
    groups = [{"params": dense, "weight_decay": weight_decay}] if dense else []
    if sparse:
        groups.append({"params": sparse, "weight_decay": 0.0})
    if not groups:
        return []
    if name == "sgd":
        return [torch.optim.SGD(groups, lr=lr)]
    if name == "adagrad":
        return [RowAdagrad(groups, lr=lr)]
    if name == "adam":
        out: list[torch.optim.Optimizer] = []
        if dense:
            out.append(torch.optim.Adam(dense, lr=lr, weight_decay=weight_decay))
        if sparse:
            out.append(torch.optim.SparseAdam(sparse, lr=lr))
        return out
    raise OptionsError(f"unknown optimizer '{name}' (choose from {', '.join(OPTIMIZERS)})")


def _batch_count(n: int, batch_size: int) -> int:
    """Batches per epoch: ceil(n / batch_size), one fewer if the last would hold one example."""
    count = max(1, math.ceil(n / batch_size))
    if count > 1 and n - (count - 1) * batch_size < 2:
        count -= 1
    return count


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A shuffled split of range(n) into near-equal batches, none of a single example
    unless n == 1."""
    order = torch.randperm(n, generator=generator)
    return list(torch.tensor_split(order, _batch_count(n, batch_size)))


def train(
    model: nn.Module,
    texts: Sequence[str],
    labels: Sequence[int] | torch.Tensor,
    options: Mapping[str, Any] | None = None,
    *,
    seed: int,
    dev: tuple[Sequence[str], Sequence[int]] | None = None,
) -> TrainReport:
    """Train ``model`` in place on (texts, labels) with cross-entropy.

    The loss is summed over each batch, so a learning rate is a step per example, as in
    fastText. Same model state, data, options and seed give bit-identical weights.
    ``dev`` (texts, labels) is used only when ``early_stopping`` is on.
    """
    opts = resolve_training_options(options)
    started = time.perf_counter()
    y = torch.as_tensor(labels, dtype=torch.int64)
    n = len(y)
    if n != len(texts):
        raise ValueError(f"{len(texts)} texts but {n} labels")
    report = TrainReport(
        examples=n,
        epochs=0,
        steps=0,
        batch_size=min(opts["batch_size"], n),
        seconds=0.0,
        final_loss=None,
        optimizer=opts["optimizer"],
        lr=opts["lr"],
    )
    optimizers = make_optimizers(model, opts["optimizer"], opts["lr"], opts["weight_decay"])
    if n == 0 or not optimizers:
        report.seconds = time.perf_counter() - started
        return report

    features = model.featurize(list(texts))
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = _batch_count(n, opts["batch_size"])
    epochs = max(opts["epochs"], math.ceil(opts["min_steps"] / steps_per_epoch))
    total_steps = epochs * steps_per_epoch
    use_dev = opts["early_stopping"] and dev is not None and len(dev[0]) > 0
    best: tuple[float, float] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    stale = 0

    fixed: list[tuple[Any, torch.Tensor]] | None = None
    with seeded(derive_seed(seed, "dropout")), torch_threads(opts["threads"]):
        model.train()
        for epoch in range(epochs):
            if opts["shuffle"] == "batches":
                if fixed is None:
                    fixed = [
                        (take(features, idx), y[idx])
                        for idx in _batches(n, opts["batch_size"], generator)
                    ]
                order = torch.randperm(len(fixed), generator=generator).tolist()
                epoch_batches = [fixed[i] for i in order]
            else:
                epoch_batches = [
                    (take(features, idx), y[idx])
                    for idx in _batches(n, opts["batch_size"], generator)
                ]
            loss_sum = 0.0
            for xb, yb in epoch_batches:
                lr = opts["lr"]
                if opts["lr_schedule"] == "linear":
                    lr *= 1.0 - report.steps / total_steps
                for optimizer in optimizers:
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    optimizer.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(xb), yb, reduction="sum")
                loss.backward()
                with torch.sparse.check_sparse_tensor_invariants(enable=False):
                    for optimizer in optimizers:
                        optimizer.step()
                loss_sum += float(loss.detach())
                report.steps += 1
            report.epochs = epoch + 1
            report.final_loss = loss_sum / n

            if use_dev:
                assert dev is not None
                scores = predict_scores(model, dev[0], threads=None)
                dev_y = torch.as_tensor(dev[1], dtype=torch.int64)
                accuracy = float((scores.argmax(1) == dev_y).float().mean())
                dev_loss = float(F.cross_entropy(scores, dev_y))
                report.dev_accuracy.append(accuracy)
                report.dev_loss.append(dev_loss)
                model.train()
                if best is None or (accuracy, -dev_loss) > best:
                    best, stale, report.best_epoch = (accuracy, -dev_loss), 0, epoch + 1
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    stale += 1
                    if stale >= opts["patience"]:
                        break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    report.seconds = time.perf_counter() - started
    return report


@torch.no_grad()
def predict_scores(
    model: nn.Module, texts: Sequence[str], batch_size: int = 4096, threads: int | None = 1
) -> torch.Tensor:
    """Unnormalised scores [n, classes] in eval mode (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        with torch_threads(threads):
            features = model.featurize(list(texts))
            n = len(texts)
            if n <= batch_size:
                return model(features).float()
            chunks = torch.arange(n).split(batch_size)
            return torch.cat([model(take(features, idx)).float() for idx in chunks])
    finally:
        model.train(was_training)


def predict_proba(model: nn.Module, texts: Sequence[str]) -> torch.Tensor:
    """Class probabilities [n, classes]: the softmax of the model's scores."""
    return torch.softmax(predict_scores(model, texts), dim=1)

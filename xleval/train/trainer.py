"""The training loop every method uses: seeded mini-batch cross-entropy, fastText-like defaults.

Models come from model plugins (see ``xleval_register_models``); this module only relies
on that contract: ``featurize(texts)`` returning a batch that is a Tensor (first dimension
= examples) or has ``len()`` and ``select(indices)``, ``forward(batch) -> scores``, and the
optional ``prepare(train_texts)``. Embedding modules built with ``sparse=True`` get
optimisers that accept sparse gradients; parameters with ``requires_grad=False`` (e.g.
frozen by a transfer strategy) are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import nn

from xleval.errors import OptionsError, TrainingDivergedError
from xleval.experiment.training_options import DEFAULT_LR, OPTIMIZERS, resolve_training_options
from xleval.train.rowkernel import _rowkernels, row_kernel_available


def tune_allocator() -> bool:
    """Keep freed memory for reuse instead of returning it to the OS at once (glibc only).

    Training and batch planning allocate many short-lived arrays of megabytes; by default
    glibc serves each above its mmap threshold with fresh pages (a page fault per 4 KB, the
    allocator trap): planning an epoch's batches took 0.73 s instead of 0.43
    s in a fresh process. The peak resident memory is unchanged (it is what the arrays
    need); only its return to the OS is delayed. ``XLEVAL_MALLOC_TUNING=0`` turns it off.
    """
    if os.environ.get("XLEVAL_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    ok = mallopt(m_mmap_threshold, 256 * 2**20)  # below this, reuse the heap
    ok &= mallopt(m_trim_threshold, 1024 * 2**20)  # keep up to 1 GB of freed heap
    ok &= mallopt(m_top_pad, 64 * 2**20)  # grow the heap 64 MB at a time
    return bool(ok)


ALLOCATOR_TUNED = tune_allocator()


def return_memory_to_the_system() -> bool:
    """Give freed heap back to the OS now (glibc's ``malloc_trim``): the tuning above keeps
    up to 1 GB of it for the next cell, which a worker that has finished a run should not
    hold. False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False


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
    #: Parts of ``seconds``: featurizing the texts (0 when the caller passed features) and
    #: planning batches (the fused path's one-off sort); the rest is the loop.
    featurize_seconds: float = 0.0
    plan_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def derive_seed(seed: int, *parts: Any) -> int:
    """A 63-bit seed determined by ``seed`` and ``parts`` (so each artifact gets its own,
    reproducible stream regardless of the order in which cells run)."""
    text = "\x1f".join(map(str, (seed, *parts)))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


#: Most torch threads a block may use in this process; an executor sets it in each worker
#: (``set_thread_budget``) so that workers x threads never exceeds the cores.
_THREAD_BUDGET: int | None = None


def set_thread_budget(threads: int | None) -> None:
    """Cap every later :func:`torch_threads` block at ``threads`` (None: no cap), and set
    torch's own thread count to it."""
    global _THREAD_BUDGET
    _THREAD_BUDGET = threads
    if threads is not None:
        torch.set_num_threads(threads)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run a block with ``threads`` torch CPU threads (None: unchanged), then restore.

    Never more than the executor's budget (:func:`set_thread_budget`)."""
    previous = torch.get_num_threads()
    if threads is not None and _THREAD_BUDGET is not None:
        threads = min(threads, _THREAD_BUDGET)
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


def _sparse_parameters(model: nn.Module) -> list[torch.Tensor]:
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
    ``index_add_`` make the step ~1.5x faster here. ``rowwise=True``: a sparse gradient's
    table keeps one accumulator per row, ``s_r += mean(g_r^2)`` (``rowwise-adagrad``).
    """

    def __init__(
        self,
        params: Any,
        lr: float,
        weight_decay: float = 0.0,
        eps: float = 1e-10,
        rowwise: bool = False,
    ) -> None:
        defaults = {"lr": lr, "weight_decay": weight_decay, "eps": eps, "rowwise": rowwise}
        super().__init__(params, defaults)

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
                    rowwise = group["rowwise"] and grad.is_sparse
                    state["sum"] = torch.zeros(len(param)) if rowwise else torch.zeros_like(param)
                total = state["sum"]
                if grad.is_sparse:
                    if decay:
                        raise OptionsError("weight_decay does not apply to sparse gradients")
                    grad = grad.coalesce()  # a no-op for the bundled models' gradients
                    rows, values = grad.indices()[0], grad.values().clone()
                    adagrad_rows(param, total, rows, values, lr, eps)
                else:
                    if decay:
                        grad = grad.add(param, alpha=decay)
                    total.addcmul_(grad, grad)
                    param.addcdiv_(grad, total.sqrt().add_(eps), value=-lr)


def adagrad_rows(
    param: torch.Tensor,
    total: torch.Tensor,
    rows: torch.Tensor,
    values: torch.Tensor,
    lr: float,
    eps: float,
) -> None:
    """Adagrad on the distinct ``rows`` of ``param`` (``values`` is consumed). ``total`` is
    per weight (``adagrad``) or, one-dimensional, per row (``rowwise-adagrad``)."""
    dim = values.shape[1] if values.dim() > 1 else 1
    if total.dim() == 1:
        # mean(g_r^2) as a squared norm: one pass, no [rows, dim] temporary.
        total.index_add_(0, rows, torch.linalg.vector_norm(values, dim=1).square_().div_(dim))
        scale = total.index_select(0, rows).sqrt_().add_(eps).reciprocal_().mul_(-lr)
        values.mul_(scale.unsqueeze(1))
    else:
        total.index_add_(0, rows, values * values)
        values.div_(total.index_select(0, rows).sqrt_().add_(eps)).mul_(-lr)
    # index_add_ without alpha: its alpha path is ~4x slower.
    param.index_add_(0, rows, values)


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
    if name in ("adagrad", "rowwise-adagrad"):
        return [RowAdagrad(groups, lr=lr, rowwise=name == "rowwise-adagrad")]
    if name == "adam":
        out: list[torch.optim.Optimizer] = []
        if dense:
            out.append(torch.optim.Adam(dense, lr=lr, weight_decay=weight_decay))
        if sparse:
            out.append(torch.optim.SparseAdam(sparse, lr=lr))
        return out
    raise OptionsError(f"unknown optimizer '{name}' (choose from {', '.join(OPTIMIZERS)})")


class RowGradient(NamedTuple):
    """A table gradient in factored form, as a bag model computes it: distinct row
    ``rows[i]`` gets ``sum(pair_weights[p] * grad_hidden[pair_docs[p]])`` over its pairs
    ``p`` in ``row_offsets[i]`` .. ``row_offsets[i + 1]`` (the last to the end).

    Handing the optimiser this instead of the [rows, dim] values lets the compiled kernel
    sum each row's gradient in registers and update the row in one pass.
    """

    rows: torch.Tensor  # int64, distinct
    row_offsets: torch.Tensor  # int32
    pair_docs: torch.Tensor  # int32
    pair_weights: torch.Tensor  # float32
    grad_hidden: torch.Tensor  # float32 [documents, dim]

    def values(self) -> torch.Tensor:
        """The [rows, dim] gradient (what the pure-torch path applies)."""
        return F.embedding_bag(
            self.pair_docs,
            self.grad_hidden,
            self.row_offsets,
            mode="sum",
            per_sample_weights=self.pair_weights,
        )


class RowSparseOptimizer:
    """SGD or (row-wise) Adagrad for the fused training path: updates given as
    (rows, values) touch only those rows (each once: values are already summed per id).

    The same rules as ``torch.optim.SGD`` (no momentum) and :class:`RowAdagrad` (torch's
    Adagrad) on the same gradients: sparse rows carry no weight decay, dense tensors do.
    ``tests/test_training.py`` checks them against torch.
    """

    NAMES = ("sgd", "adagrad", "rowwise-adagrad")

    def __init__(
        self,
        name: str,
        parameters: Sequence[tuple[torch.Tensor, bool]],
        weight_decay: float = 0.0,
        eps: float = 1e-10,
    ) -> None:
        if name not in self.NAMES:
            raise OptionsError(f"the fused training path has no optimizer '{name}'")
        self.weight_decay, self.eps = weight_decay, eps
        self.sgd = name == "sgd"
        self.kernel_mode = {"sgd": 0, "rowwise-adagrad": 1, "adagrad": 2}[name]
        self.kernel = _rowkernels if row_kernel_available() else None
        self._no_state = torch.empty(0)
        self.parameters = [p for p, _ in parameters]
        self.sums: list[torch.Tensor | None] = []
        for param, by_rows in parameters:
            if name == "sgd":
                self.sums.append(None)
            elif name == "rowwise-adagrad" and by_rows:
                self.sums.append(torch.zeros(len(param)))
            else:
                self.sums.append(torch.zeros_like(param))

    def table_scale(self, lr: float) -> float:
        """What row gradients should come pre-multiplied by: SGD's ``-lr`` (the model folds
        it into a small product), 1 for Adagrad (it needs the raw gradient)."""
        return -lr if self.sgd else 1.0

    @torch.no_grad()
    def step(
        self,
        grads: Sequence[tuple[torch.Tensor | None, torch.Tensor | RowGradient]],
        lr: float,
    ) -> None:
        """Apply one gradient per parameter (rows None: dense; row gradients, values or a
        :class:`RowGradient`, pre-multiplied by :meth:`table_scale`). Consumes the values."""
        for param, total, (rows, grad) in zip(self.parameters, self.sums, grads, strict=True):
            if isinstance(grad, RowGradient):
                if self.kernel is not None:
                    self._apply_kernel(param, total, grad, lr)
                    continue
                grad = grad.values()
            if rows is not None:
                if total is None:
                    param.index_add_(0, rows, grad)
                else:
                    adagrad_rows(param, total, rows, grad, lr, self.eps)
                continue
            if self.weight_decay:
                grad = grad.add(param, alpha=self.weight_decay)
            if total is None:
                param.add_(grad, alpha=-lr)
            else:
                total.addcmul_(grad, grad)
                param.addcdiv_(grad, total.sqrt().add_(self.eps), value=-lr)

    def _apply_kernel(
        self, param: torch.Tensor, total: torch.Tensor | None, grad: RowGradient, lr: float
    ) -> None:
        state = self._no_state if total is None else total
        assert self.kernel is not None  # _apply_kernel is called only with the kernel
        self.kernel.apply_rows(
            self.kernel_mode,
            param.shape[1],
            param.numpy(),
            state.numpy(),
            grad.rows.numpy(),
            grad.row_offsets.numpy(),
            grad.pair_docs.numpy(),
            grad.pair_weights.numpy(),
            grad.grad_hidden.numpy(),
            lr,
            self.eps,
        )


def sparse_session(model: nn.Module, features: Any, optimizer: str) -> Any | None:
    """The model's fused training session for ``features``, if it has one and the optimizer
    is one the fused path implements (see ``BagOfEmbeddingsClassifier.sparse_session``)."""
    make = getattr(model, "sparse_session", None)
    if optimizer not in RowSparseOptimizer.NAMES or not callable(make):
        return None
    return make(features)


def auto_batch_size(n: int, optimizer: str) -> int:
    """The default batch size (``batch_size`` null) for ``n`` examples: 32, or for the
    Adagrad optimisers the smallest power of two in [32, 256] with n <= 64 batches of it.
    SGD keeps 32: its summed-loss steps grow with the batch (at 256 it lost 4 points)."""
    size = 32
    if optimizer in ("adagrad", "rowwise-adagrad"):
        while size < 256 and size * 64 < n:
            size *= 2
    return size


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


def with_model_defaults(
    opts: dict[str, Any], overrides: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``opts`` with a model's ``training_overrides`` in place of the trainer's defaults:
    an encoder's Adam at 3e-5 where the spec says nothing, the spec's value where it sets
    another (a transfer method's ``finetune = { lr = 1e-5 }`` is kept). ``lr`` counts as
    unset when it is the spec's optimizer's default rate."""
    if not overrides:
        return opts
    defaults = resolve_training_options({})
    merged = dict(opts)
    for key, value in overrides.items():
        unset = (
            opts["lr"] == DEFAULT_LR[opts["optimizer"]]
            if key == "lr"
            else opts.get(key) == defaults.get(key)
        )
        if unset:
            merged[key] = value
    return resolve_training_options(merged)


def train(
    model: nn.Module,
    texts: Sequence[str],
    labels: Sequence[int] | torch.Tensor,
    options: Mapping[str, Any] | None = None,
    *,
    seed: int,
    dev: tuple[Sequence[str], Sequence[int]] | None = None,
    features: Any = None,
    fused: bool = True,
) -> TrainReport:
    """Train ``model`` in place on (texts, labels) with cross-entropy.

    The loss is summed over each batch, so a learning rate is a step per example, as in
    fastText. Same model state, data, options and seed give bit-identical weights.
    ``dev`` (texts, labels) is used only when ``early_stopping`` is on. ``features``:
    ``model.featurize(texts)`` when the caller already has it (a feature cache).

    Models with a ``sparse_session(features)`` (bag-of-embeddings) train with SGD and
    Adagrad on a fused path: gradients by hand, one update per distinct row, batches
    planned once (``fused=False`` forces the autograd path, e.g. to compare them).
    """
    opts = with_model_defaults(
        resolve_training_options(options), getattr(model, "training_overrides", None)
    )
    started = time.perf_counter()
    y = torch.as_tensor(labels, dtype=torch.int64)
    n = len(y)
    if n != len(texts):
        raise ValueError(f"{len(texts)} texts but {n} labels")
    batch_size = opts["batch_size"] or auto_batch_size(n, opts["optimizer"])
    report = TrainReport(
        examples=n,
        epochs=0,
        steps=0,
        batch_size=min(batch_size, n),
        seconds=0.0,
        final_loss=None,
        optimizer=opts["optimizer"],
        lr=opts["lr"],
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    if n == 0 or not trainable:
        report.seconds = time.perf_counter() - started
        return report

    if features is None:
        features = cast(Any, model).featurize(list(texts))
    report.featurize_seconds = time.perf_counter() - started
    session = sparse_session(model, features, opts["optimizer"]) if fused else None
    if session is not None:
        sparse_optimizer: list[RowSparseOptimizer] = []  # made once the first plan exists

        def prepare(batches: list[torch.Tensor]) -> list[Any]:
            plans = session.plan(batches, y)
            if not sparse_optimizer:
                sparse_optimizer.append(
                    RowSparseOptimizer(
                        opts["optimizer"], session.parameters, weight_decay=opts["weight_decay"]
                    )
                )
            return plans

        @torch.no_grad()
        def step(batch: Any, lr: float) -> float:
            optimizer = sparse_optimizer[0]
            loss, grads = session.gradients(batch, table_scale=optimizer.table_scale(lr))
            optimizer.step(grads, lr)
            return loss

    else:
        optimizers = make_optimizers(model, opts["optimizer"], opts["lr"], opts["weight_decay"])

        def prepare(batches: list[torch.Tensor]) -> list[Any]:
            return [(take(features, idx), y[idx]) for idx in batches]

        def step(batch: Any, lr: float) -> float:
            xb, yb = batch
            for opt in optimizers:
                for group in opt.param_groups:
                    group["lr"] = lr
                opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb, reduction="sum")
            loss.backward()
            with torch.sparse.check_sparse_tensor_invariants(enable=False):
                for opt in optimizers:
                    opt.step()
            return float(loss.detach())

    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = _batch_count(n, batch_size)
    epochs = max(opts["epochs"], math.ceil(opts["min_steps"] / steps_per_epoch))
    total_steps = epochs * steps_per_epoch
    use_dev = opts["early_stopping"] and dev is not None and len(dev[0]) > 0
    best: tuple[float, float] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    stale = 0

    fixed: list[Any] | None = None
    with seeded(derive_seed(seed, "dropout")), torch_threads(opts["threads"]):
        model.train()
        for epoch in range(epochs):
            if opts["shuffle"] == "batches":
                if fixed is None:
                    planned = time.perf_counter()
                    fixed = prepare(_batches(n, batch_size, generator))
                    report.plan_seconds += time.perf_counter() - planned
                order = torch.randperm(len(fixed), generator=generator).tolist()
                epoch_batches = [fixed[i] for i in order]
            else:
                planned = time.perf_counter()
                epoch_batches = prepare(_batches(n, batch_size, generator))
                report.plan_seconds += time.perf_counter() - planned
            loss_sum = 0.0
            for batch in epoch_batches:
                lr = opts["lr"]
                if opts["lr_schedule"] == "linear":
                    lr *= 1.0 - report.steps / total_steps
                loss = step(batch, lr)
                if not math.isfinite(loss):
                    raise TrainingDivergedError(
                        f"diverged: the training loss was {loss} at epoch {epoch + 1}, step "
                        f"{report.steps + 1} (optimizer {opts['optimizer']}, lr {opts['lr']:g}, "
                        f"{n} examples); lower the learning rate"
                    )
                loss_sum += loss
                report.steps += 1
            report.epochs = epoch + 1
            report.final_loss = loss_sum / n

            if use_dev:
                assert dev is not None
                if session is not None:
                    session.sync()
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
    if session is not None:
        session.sync()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    report.seconds = time.perf_counter() - started
    return report


@torch.no_grad()
def predict_scores(
    model: nn.Module,
    texts: Sequence[str],
    batch_size: int = 4096,
    threads: int | None = 1,
    *,
    features: Any = None,
) -> torch.Tensor:
    """Unnormalised scores [n, classes] in eval mode (the model's mode is restored).

    ``features``: ``model.featurize(texts)`` when the caller already has it."""
    was_training = model.training
    model.eval()
    try:
        with torch_threads(threads):
            if features is None:
                features = cast(Any, model).featurize(list(texts))
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

"""The bundled models' torch implementation: bag-of-embeddings and the seed's embedding-linear
classifier (registered in :mod:`xleval_plugins.models`).

Both models expose ``embedding`` and ``classifier`` submodules (the bundled transfer
strategies copy them), and embedding-linear also a ``vocabulary`` (row i embeds
``vocabulary[i]``), so weight copying can match rows between two vocabularies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from xleval_plugins.featurize import (
    HashedFeaturizer,
    TokenBags,
    VocabularyFeaturizer,
    np_offsets,
)
from xleval_plugins.kernels import compiled_kernels

from xleval.train.trainer import RowGradient


def _init_fasttext_style(embedding_weight: torch.Tensor, classifier: nn.Linear) -> None:
    """fastText's initialisation: input rows U(-1/dim, 1/dim), output layer zero."""
    dim = embedding_weight.shape[1]
    with torch.no_grad():
        embedding_weight.uniform_(-1.0 / dim, 1.0 / dim)
        classifier.weight.zero_()
        classifier.bias.zero_()


def uniform_table(rows: int, dim: int) -> torch.Tensor:
    """A [rows, dim] table of U(-1/dim, 1/dim) floats, fastText's input initialisation.

    Drawn by numpy's SFC64 generator, seeded from torch's global generator (so
    ``build_model``'s seed decides it). Table init is a one-off cost of every cell: numpy
    draws 12.8 M floats then shifts and scales them in ~55 ms (three passes over 51 MB);
    ``_kernels.fill_uniform`` writes the same bits in one pass.
    """
    seed = int(torch.randint(0, 2**62, (1,), dtype=torch.int64))
    generator = np.random.SFC64(seed)
    scale = np.float32(2.0 / dim)
    kernels = compiled_kernels()
    if kernels is not None:
        table = torch.empty((rows, dim), dtype=torch.float32)
        a, b, c, counter = (int(word) for word in generator.state["state"]["state"])
        kernels.fill_uniform(table.numpy(), a, b, c, counter, float(scale))
        return table
    values = np.random.Generator(generator).random((rows, dim), dtype=np.float32)
    np.subtract(values, np.float32(0.5), out=values)
    np.multiply(values, scale, out=values)
    return torch.from_numpy(values)


class SparseMeanBag(torch.autograd.Function):
    """Mean bags as ``A @ table[unique]`` whose gradient is a coalesced sparse tensor with one
    row per distinct id: what ``EmbeddingBag(sparse=True)`` computes, without its per-occurrence
    gradient rows (3-4x faster a step here)."""

    @staticmethod
    def forward(
        ctx: Any,
        weight: torch.Tensor,
        unique: torch.Tensor,
        matrix: torch.Tensor,
        matrix_t: torch.Tensor,
    ) -> torch.Tensor:
        ctx.save_for_backward(unique)
        ctx.matrix_t = matrix_t
        ctx.table_shape = weight.shape
        return matrix @ weight.index_select(0, unique)

    @staticmethod
    def backward(ctx: Any, grad_hidden: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (unique,) = ctx.saved_tensors
        values = ctx.matrix_t @ grad_hidden
        grad = torch.sparse_coo_tensor(
            unique.unsqueeze(0), values, ctx.table_shape, is_coalesced=True, check_invariants=False
        )
        return grad, None, None, None


def word_mean_bags(weight: torch.Tensor, batch: TokenBags) -> torch.Tensor:
    """Mean bags computed word by word: each distinct word's rows summed once, then the
    words of each document (prediction reads ~13x fewer rows than id by id)."""
    words = batch.words
    assert words is not None
    per_word = F.embedding_bag(
        words.slot_ids, weight, words.slot_offsets, mode="sum", include_last_offset=True
    )
    sums = F.embedding_bag(
        words.token_words, per_word, words.token_offsets, mode="sum", include_last_offset=True
    )
    return sums.div_(batch.lengths().clamp_min(1).unsqueeze(1).to(sums.dtype))


def compact_rows(
    ids: torch.Tensor, n_rows: int
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """(rows, renumber): the distinct ``ids`` in order of first appearance, and a function
    mapping ids (of these rows) to their index in ``rows``.

    Training reads and writes only these rows, so it works on a compact copy of them
    (optimiser state for them only) and writes them back at the end. Numbering rows by first
    appearance in the epoch's batch order makes each batch's new rows one contiguous block:
    ~20% faster steps than in id order.
    """
    positions = torch.from_numpy(np.arange(len(ids), dtype=np.int64))
    if len(ids) * 4 >= n_rows:  # an array over the table beats a sort
        first = torch.full((n_rows,), len(ids), dtype=torch.int64)
        first.scatter_reduce_(0, ids, positions, "amin")  # deterministic, unlike a[ids] = ...
        first_at = first.numpy()
        present = np.flatnonzero(first_at < len(ids))
        rows = present[np.argsort(first_at[present], kind="stable")]
        rank = np.empty(n_rows, dtype=np.int64)
        rank[rows] = np.arange(len(rows), dtype=np.int64)
        ranks = {np.dtype(np.int64): rank, np.dtype(np.int32): rank.astype(np.int32)}

        def renumber(values: torch.Tensor) -> torch.Tensor:  # keeps the dtype
            at = values.numpy()
            return torch.from_numpy(ranks[at.dtype][at])

        return torch.from_numpy(rows), renumber
    distinct, inverse = torch.unique(ids, sorted=True, return_inverse=True)
    first = torch.full((len(distinct),), len(ids), dtype=torch.int64)
    first.scatter_reduce_(0, inverse, positions, "amin")
    order = torch.argsort(first)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), dtype=torch.int64)
    return distinct[order], lambda values: rank[torch.searchsorted(distinct, values.long())].to(
        values.dtype
    )


class BatchPlan(NamedTuple):
    """One training batch, precomputed once (fixed batches reuse it every epoch).

    The batch's distinct (row, document) pairs, each with its weight (occurrences /
    document length), twice: by document for the forward pass (``ids``: compact rows,
    document i's from ``offsets[i]``, ``weights``; a frozen table has the plain ids and no
    weights), and by row for the backward pass (the batch's distinct ``rows``; row r's
    ``pair_docs``/``pair_weights`` from ``row_offsets[r]``). So the forward pass reads each
    row once per document, and the gradient has one row per distinct id, summed once
    (the biggest single win measured, benchmarks/README.md).
    """

    ids: torch.Tensor
    offsets: torch.Tensor
    weights: torch.Tensor | None
    labels: torch.Tensor
    targets: torch.Tensor
    rows: torch.Tensor | None
    row_offsets: torch.Tensor | None
    pair_docs: torch.Tensor | None
    pair_weights: torch.Tensor | None


def plan_batches(
    ids_of: Callable[[torch.Tensor], torch.Tensor],
    offsets: torch.Tensor,
    batches: Sequence[torch.Tensor],
    labels: torch.Tensor,
    n_rows: int,
    n_classes: int,
    *,
    with_rows: bool = True,
) -> list[BatchPlan]:
    """:class:`BatchPlan` of every batch (example indices), vectorised over cache-sized
    chunks of whole batches: each chunk's (batch, row, document) triples are sorted at once
    (~3x faster than one sort of the epoch, same order: batches are the key's most
    significant part), and only one chunk's temporaries exist at a time (fresh memory costs
    a page fault per 4 KB). ``ids_of(documents)``: their ids, concatenated. Index
    arithmetic runs in numpy (faster than torch's on one thread)."""
    order = torch.cat(list(batches))
    sizes = np.fromiter(map(len, batches), dtype=np.int64, count=len(batches))
    bag_offsets = offsets.numpy()
    lengths = bag_offsets[order.numpy() + 1] - bag_offsets[order.numpy()]
    doc_bounds = np_offsets(sizes)
    id_bounds = np_offsets(lengths)[doc_bounds].tolist()
    doc_bounds = doc_bounds.tolist()
    targets = F.one_hot(labels[order], n_classes).to(torch.float32)
    parts: list[tuple[torch.Tensor | None, ...]] = []
    b0 = 0
    while b0 < len(batches):
        b1 = b0 + 1  # whole batches, up to PLAN_CHUNK ids (at least one batch)
        while b1 < len(batches) and id_bounds[b1 + 1] - id_bounds[b0] <= PLAN_CHUNK:
            b1 += 1
        d0, d1 = doc_bounds[b0], doc_bounds[b1]
        ids = ids_of(order[d0:d1]).numpy()
        if with_rows:
            parts += _chunk_pairs(ids, lengths[d0:d1], sizes[b0:b1], n_rows)
        else:
            doc_offsets = np_offsets(lengths[d0:d1])
            for x0, x1 in pairwise(doc_bounds[b0 : b1 + 1]):
                i0, i1 = int(doc_offsets[x0 - d0]), int(doc_offsets[x1 - d0])
                forward = torch.from_numpy(ids[i0:i1])
                starts = torch.from_numpy(doc_offsets[x0 - d0 : x1 - d0] - i0)
                parts.append((forward, starts, None, None, None, None, None))
        b0 = b1
    return [
        BatchPlan(ids, offs, weights, labels[order[d0:d1]], targets[d0:d1], *backward)
        for (d0, d1), (ids, offs, weights, *backward) in zip(
            pairwise(doc_bounds), parts, strict=True
        )
    ]


#: Ids planned at a time (see :func:`plan_batches`).
PLAN_CHUNK = 2**18


def _chunk_pairs(
    ids: np.ndarray, lengths: np.ndarray, sizes: np.ndarray, n_rows: int
) -> list[tuple[torch.Tensor, ...]]:
    """:func:`_grouped_pairs` of a few whole batches."""
    kernels = compiled_kernels()
    if kernels is not None:
        return _compiled_chunk(kernels.plan_pairs(
            np.ascontiguousarray(ids, dtype=np.int64),
            np.ascontiguousarray(lengths, dtype=np.int64),
            np.ascontiguousarray(sizes, dtype=np.int64),
            n_rows,
        ), sizes)  # fmt: skip
    n_docs, n_batches = len(lengths), len(sizes)
    # Packed key, bit fields (batch, row, document within the batch); int32 when it fits
    # (sorting int32 is ~40% faster).
    doc_bits = max(1, (int(sizes.max()) - 1).bit_length())
    row_bits = max(1, (n_rows - 1).bit_length())
    batch_bits = max(1, (n_batches - 1).bit_length())
    if batch_bits + row_bits + doc_bits > 62:
        raise ValueError(f"cannot plan batches of {int(sizes.max())} documents over {n_rows} rows")
    dtype = np.int32 if batch_bits + row_bits + doc_bits <= 31 else np.int64
    first_doc = np_offsets(sizes)[:-1]
    batch_of_doc = np.repeat(np.arange(n_batches, dtype=np.int64), sizes)
    local_doc = np.arange(n_docs, dtype=np.int64) - first_doc[batch_of_doc]
    key_of_doc = ((batch_of_doc << (row_bits + doc_bits)) | local_doc).astype(dtype)
    key = np.repeat(key_of_doc, lengths)
    key |= ids.astype(dtype) << doc_bits
    unique, counts = torch.unique(torch.from_numpy(key), return_counts=True)
    pair_key, counts = unique.numpy(), counts.numpy()
    docs = pair_key & ((1 << doc_bits) - 1)
    batch_row = pair_key >> doc_bits
    batch = batch_row >> row_bits
    pair_rows = (batch_row & ((1 << row_bits) - 1)).astype(np.int64)
    doc = first_doc[batch] + docs  # document within the chunk
    weights = counts.astype(np.float32) / lengths[doc].astype(np.float32)
    # Backward: row groups (the sort's order).
    new_row = np.empty(len(batch_row), dtype=np.bool_)
    new_row[:1] = True
    np.not_equal(batch_row[1:], batch_row[:-1], out=new_row[1:])
    row_starts = np.flatnonzero(new_row)
    edges = np.arange(n_batches + 1)
    pair_edges = np.searchsorted(batch, edges).tolist()
    row_edges = np.searchsorted(batch[row_starts], edges).tolist()
    # Forward: the same pairs by document (rows ascending within one), a stable sort on
    # small keys (numpy's radix sort when they fit 16 bits).
    by_doc = np.argsort(doc.astype(np.uint16) if n_docs < 2**16 else doc, kind="stable")
    # int32 indices and offsets (embedding_bag takes them in pairs of one dtype): half the
    # memory; rows stay int64 (index_add_ with int32 indices takes a ~6x slower path).
    forward_rows = torch.from_numpy(pair_rows[by_doc].astype(np.int32))
    forward_weights = torch.from_numpy(weights[by_doc])
    doc_offsets = torch.from_numpy(np_offsets(np.bincount(doc, minlength=n_docs)).astype(np.int32))
    rows = torch.from_numpy(pair_rows[row_starts])
    row_starts_t = torch.from_numpy(row_starts.astype(np.int32))
    docs_t = torch.from_numpy(docs.astype(np.int32))
    weights_t = torch.from_numpy(weights)
    return _batch_slices(
        sizes, pair_edges, row_edges, (forward_rows, doc_offsets, forward_weights),
        (rows, row_starts_t, docs_t, weights_t),
    )  # fmt: skip


def _compiled_chunk(planned: tuple[Any, ...], sizes: np.ndarray) -> list[tuple[torch.Tensor, ...]]:
    """The compiled planner's chunk (``_kernels.plan_pairs``) as :func:`_batch_slices`."""

    def tensor(buffer: Any, dtype: Any) -> torch.Tensor:
        return torch.from_numpy(np.frombuffer(buffer, dtype=dtype))

    pair_rows = np.frombuffer(planned[0], dtype=np.int64)
    row_starts = np.frombuffer(planned[3], dtype=np.int32)
    return _batch_slices(
        sizes,
        np.frombuffer(planned[4], dtype=np.int64).tolist(),
        np.frombuffer(planned[5], dtype=np.int64).tolist(),
        (
            tensor(planned[6], np.int32),
            tensor(planned[8], np.int32),
            tensor(planned[7], np.float32),
        ),
        (
            torch.from_numpy(pair_rows[row_starts]),
            torch.from_numpy(row_starts),
            tensor(planned[1], np.int32),
            tensor(planned[2], np.float32),
        ),
    )


def _batch_slices(
    sizes: np.ndarray,
    pair_edges: list[int],
    row_edges: list[int],
    forward: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    backward: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
) -> list[tuple[torch.Tensor, ...]]:
    """Each batch's part of a planned chunk: forward (rows by document, document offsets,
    weights; chunk-wide) and backward (distinct rows, their first pair, pairs' documents and
    weights; chunk-wide) sliced and rebased per batch."""
    forward_rows, doc_offsets, forward_weights = forward
    rows, row_starts_t, docs_t, weights_t = backward
    n_batches = len(sizes)
    doc_bounds = np_offsets(sizes).tolist()
    out = []
    for b in range(n_batches):
        p0, p1 = pair_edges[b], pair_edges[b + 1]
        r0, r1 = row_edges[b], row_edges[b + 1]
        d0, d1 = doc_bounds[b], doc_bounds[b + 1]
        f0, f1 = int(doc_offsets[d0]), int(doc_offsets[d1])
        out.append(
            (
                forward_rows[f0:f1],
                doc_offsets[d0:d1] - f0,
                forward_weights[f0:f1],
                rows[r0:r1],
                row_starts_t[r0:r1] - p0,
                docs_t[p0:p1],
                weights_t[p0:p1],
            )
        )
    return out


class SparseBagSession:
    """Training state of one :class:`BagOfEmbeddingsClassifier` for the trainer's fused
    path (``xleval.train.trainer``): summed cross-entropy gradients computed by hand (no
    autograd), the table's as (distinct rows, values) on a compact copy of the rows the
    training set uses, made by the first :meth:`plan` (so ``parameters`` exist from then
    on). ``sync()`` writes the trained rows back into the model.
    """

    def __init__(self, model: BagOfEmbeddingsClassifier, features: TokenBags) -> None:
        self.model = model
        self.features = features
        weight = model.embedding.weight
        self.train_table = bool(weight.requires_grad)
        self.rows: torch.Tensor | None = None
        self._renumber: Callable[[torch.Tensor], torch.Tensor] = lambda ids: ids
        self.table = None if self.train_table else weight.detach()
        linear = model.classifier
        self.dense = [p.detach() if p.requires_grad else None for p in (linear.weight, linear.bias)]

    @property
    def parameters(self) -> list[tuple[torch.Tensor, bool]]:
        """(tensor, updated by rows) for every trained tensor; the compact table first."""
        if self.train_table and self.table is None:
            raise RuntimeError("plan() the first batches before asking for the parameters")
        table = [(self.table, True)] if self.train_table else []
        return table + [(p, False) for p in self.dense if p is not None]

    def plan(self, batches: Sequence[torch.Tensor], labels: torch.Tensor) -> list[BatchPlan]:
        features = self.features
        n_classes = self.model.classifier.out_features
        if not self.train_table:
            assert self.table is not None
            return plan_batches(features.ids_of, features.offsets, batches, labels,
                                len(self.table), n_classes, with_rows=False)  # fmt: skip
        if self.rows is not None:  # a later epoch (shuffle = "examples"): same numbering
            renumber = self._renumber
            return plan_batches(lambda docs: renumber(features.ids_of(docs)), features.offsets,
                                batches, labels, len(self.rows), n_classes)  # fmt: skip
        # First plan: group by raw id, then number the rows the epoch touches by first
        # appearance and train a compact copy of them.
        weight = self.model.embedding.weight
        plans = plan_batches(features.ids_of, features.offsets, batches, labels,
                             weight.shape[0], n_classes)  # fmt: skip
        row_lists = [p.rows for p in plans if p.rows is not None]
        self.rows, self._renumber = compact_rows(torch.cat(row_lists), weight.shape[0])
        self.table = weight.detach().index_select(0, self.rows)
        renumber = self._renumber
        return [p._replace(ids=renumber(p.ids), rows=renumber(p.rows)) for p in plans]

    def gradients(
        self, plan: BatchPlan, table_scale: float = 1.0
    ) -> tuple[float, list[tuple[torch.Tensor | None, torch.Tensor | RowGradient]]]:
        """(summed cross-entropy, one (rows or None, gradient) per ``parameters`` entry; the
        table's as a :class:`~xleval.train.trainer.RowGradient`, whose rows the optimiser's
        compiled kernel sums and applies in one pass).

        ``table_scale`` multiplies the table's gradient (folded into the small [batch, dim]
        product: SGD's ``-lr`` costs no pass over the rows)."""
        linear = self.model.classifier
        weight, bias = linear.weight.detach(), linear.bias.detach()
        if plan.weights is None:
            hidden = F.embedding_bag(plan.ids, self.table, plan.offsets, mode="mean")
        else:
            hidden = F.embedding_bag(
                plan.ids, self.table, plan.offsets, mode="sum", per_sample_weights=plan.weights
            )
        log_probs = torch.log_softmax(torch.addmm(bias, hidden, weight.t()), 1)
        loss = -float(torch.vdot(log_probs.view(-1), plan.targets.view(-1)))
        grad_logits = log_probs.exp_().sub_(plan.targets)
        grads: list[tuple[torch.Tensor | None, torch.Tensor]] = []
        if self.train_table:
            grad_hidden = grad_logits @ weight
            if table_scale != 1.0:
                grad_hidden.mul_(table_scale)
            grads.append(
                (
                    plan.rows,
                    RowGradient(
                        plan.rows, plan.row_offsets, plan.pair_docs, plan.pair_weights, grad_hidden
                    ),
                )
            )
        if self.dense[0] is not None:
            grads.append((None, grad_logits.t() @ hidden))
        if self.dense[1] is not None:
            grads.append((None, grad_logits.sum(0)))
        return loss, grads

    def sync(self) -> None:
        """Write the compact table's rows back into the model's table."""
        if self.train_table and self.table is not None:
            with torch.no_grad():
                self.model.embedding.weight.index_copy_(0, self.rows, self.table)


class BagOfEmbeddingsClassifier(nn.Module):
    """Mean of hashed word/char-n-gram embeddings, then a linear layer (fastText supervised)."""

    def __init__(self, n_classes: int, featurizer: HashedFeaturizer, dim: int) -> None:
        super().__init__()
        self.featurizer = featurizer
        # _weight: the fastText init directly, without EmbeddingBag's own normal_ init
        # (0.1 s a model at 2*10^5 x 64: the table-init cost).
        self.embedding = nn.EmbeddingBag(
            featurizer.buckets,
            dim,
            mode="mean",
            sparse=True,
            include_last_offset=True,
            _weight=uniform_table(featurizer.buckets, dim),
        )
        self.classifier = nn.Linear(dim, n_classes)
        with torch.no_grad():
            self.classifier.weight.zero_()  # fastText: the output layer starts at zero
            self.classifier.bias.zero_()

    def featurize(self, texts: Sequence[str]) -> TokenBags:
        return self.featurizer(texts)

    @property
    def feature_key(self) -> tuple[Any, ...]:
        """What determines ``featurize``'s output: texts featurized under an equal key give
        equal batches, so they can be cached and shared (see ``xleval.train.cell``)."""
        return self.featurizer.key

    def forward(self, batch: TokenBags) -> torch.Tensor:
        weight = self.embedding.weight
        if self.training and weight.requires_grad and torch.is_grad_enabled():
            hidden = SparseMeanBag.apply(weight, *batch.mean_operator())
        elif batch.words is not None:
            hidden = word_mean_bags(weight, batch)
        else:
            hidden = self.embedding(batch.ids, batch.offsets)
        return self.classifier(hidden)

    def sparse_session(self, features: TokenBags) -> SparseBagSession:
        """The trainer's fused path (SGD / Adagrad without autograd): see
        :class:`SparseBagSession`."""
        return SparseBagSession(self, features)


class EmbeddingLinearClassifier(nn.Module):
    """The seed's model: ``nn.Embedding`` over a per-training-set vocabulary, mean-pooled
    (the seed forgot to pool), then ``nn.Linear``.

    ``prepare(train_texts)`` builds the vocabulary and (re)allocates the embedding; until
    then the vocabulary holds only ``<unk>``.
    """

    def __init__(self, n_classes: int, options: dict[str, Any]) -> None:
        super().__init__()
        self.options = options
        self.classifier = nn.Linear(options["dim"], n_classes)
        self._set_vocabulary((VocabularyFeaturizer.UNK,))

    def _set_vocabulary(self, vocabulary: Sequence[str]) -> None:
        self.featurizer = VocabularyFeaturizer(
            vocabulary,
            max_tokens=self.options["max_tokens"],
            tokenizer=self.options.get("tokenizer", "words"),
            lowercase=self.options.get("lowercase", True),
        )
        self.embedding = nn.Embedding(
            len(vocabulary), self.options["dim"], sparse=self.options["sparse"]
        )
        _init_fasttext_style(self.embedding.weight, self.classifier)

    @property
    def vocabulary(self) -> tuple[str, ...]:
        return self.featurizer.vocabulary

    def prepare(self, train_texts: Sequence[str]) -> None:
        """Build the vocabulary of the texts this model will be trained on."""
        self._set_vocabulary(
            VocabularyFeaturizer.build_vocabulary(
                train_texts,
                min_count=self.options["min_count"],
                max_size=self.options["max_vocab"],
                max_tokens=self.options["max_tokens"],
                tokenizer=self.options.get("tokenizer", "words"),
                lowercase=self.options.get("lowercase", True),
            )
        )

    def featurize(self, texts: Sequence[str]) -> TokenBags:
        return self.featurizer(texts)

    def forward(self, batch: TokenBags) -> torch.Tensor:
        vectors = self.embedding(batch.ids)
        lengths = batch.lengths()
        doc = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
        pooled = torch.zeros(len(lengths), vectors.shape[1], dtype=vectors.dtype)
        pooled.index_add_(0, doc, vectors)
        pooled = pooled / lengths.clamp_min(1).unsqueeze(1).to(vectors.dtype)
        return self.classifier(pooled)

"""Each speed optimisation computes what the plain version does (issue 7's guards).

The fused training path (hand-written gradients, one update per distinct row, compact
renumbered rows, batches planned in chunks) against autograd + torch's optimisers;
word-by-word pooling against id-by-id pooling; the feature store against featurizing each
cell's texts; the disk artifacts' round trip; the memory budget; the thread budget.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from xleval_plugins import kernels
from xleval_plugins import torch_models as models_plugin
from xleval_plugins.featurize import TokenBags
from xleval_plugins.torch_models import BagOfEmbeddingsClassifier, SparseBagSession

from xleval.api.data import Example, MultilingualDataset
from xleval.experiment.spec import resolve_method
from xleval.plugin.manager import get_plugin_manager
from xleval.train import trainer as training
from xleval.train.artifacts import ArtifactCache, DiskArtifactCache
from xleval.train.cell import run_cell
from xleval.train.trainer import (
    RowAdagrad,
    _batches,
    build_model,
    predict_scores,
    set_thread_budget,
    torch_threads,
    train,
)

# word_ngrams 1: the per-word bag path (WordIndex) these guards cover; bigrams (the
# default since 0.11) take the id-by-id path
SMALL = {"buckets": 3000, "dim": 8, "word_ngrams": 1}
WORDS = {
    0: ["kernel", "driver", "module"],
    1: ["game", "puzzle", "arcade"],
    2: ["audio", "sound", "music"],
}
FILLER = ["the", "a", "for", "tool", "with", "and", "of", "simple", "the", "the"]


def corpus(n_per_class: int, seed: int) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for label, words in WORDS.items():
        for _ in range(n_per_class):
            tokens = [*rng.sample(FILLER, 5), rng.choice(words), rng.choice(words)]
            rng.shuffle(tokens)
            texts.append(" ".join(tokens))
            labels.append(label)
    texts[1] = ""  # an empty text: a bag of nothing
    return texts, labels


@pytest.fixture(scope="module")
def registry():
    return get_plugin_manager().registry


@pytest.fixture(scope="module")
def builder(registry):
    return registry.build("models", "bag-of-embeddings", SMALL)


def test_fused_gradients_equal_autograd_on_a_dense_table(builder):
    """One update per distinct row, summed once: the dedup'd sparse gradient equals the
    gradient torch computes for a plain dense EmbeddingBag(mean) + Linear + summed CE."""
    texts, labels = corpus(4, seed=0)
    model = build_model(builder, 3, seed=1)
    with torch.no_grad():
        model.classifier.weight.normal_()
    features = model.featurize(texts)
    session = SparseBagSession(model, features)
    index = torch.tensor([0, 1, 5, 5, 7, 11])  # a repeated document too
    (plan,) = session.plan([index], torch.tensor(labels))
    loss, grads = session.gradients(plan)
    (rows, row_grad), (_, grad_weight), (_, grad_bias) = grads
    assert len(torch.unique(rows)) == len(rows)  # each distinct row once
    values = row_grad.values()

    table = nn.Parameter(model.embedding.weight.detach().clone())
    linear = nn.Linear(8, 3)
    linear.load_state_dict(model.classifier.state_dict())
    batch = features.select(index)
    hidden = F.embedding_bag(batch.ids, table, batch.offsets, mode="mean", include_last_offset=True)
    reference = F.cross_entropy(linear(hidden), torch.tensor(labels)[index], reduction="sum")
    reference.backward()
    dense = torch.zeros_like(table)
    dense[session.rows[rows]] = values
    assert loss == pytest.approx(float(reference.detach()), rel=1e-5)
    assert torch.allclose(dense, table.grad, atol=1e-6)
    assert torch.allclose(grad_weight, linear.weight.grad, atol=1e-5)
    assert torch.allclose(grad_bias, linear.bias.grad, atol=1e-5)


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "rowwise-adagrad"])
@pytest.mark.parametrize("shuffle", ["batches", "examples"])
def test_fused_training_equals_the_autograd_path(builder, optimizer, shuffle):
    """Same weights (to float rounding) and the same predictions as EmbeddingBag's sparse
    gradients through torch.optim.SGD / Adagrad (RowAdagrad, checked against torch's)."""
    texts, labels = corpus(12, seed=2)
    test_texts, _ = corpus(5, seed=3)
    options = {
        "optimizer": optimizer,
        "epochs": 4,
        "batch_size": 5,
        "shuffle": shuffle,
        "weight_decay": 0.01,
        "min_steps": 0,
    }
    runs = []
    for fused in (True, False):
        model = build_model(builder, 3, seed=4)
        report = train(model, texts, labels, options, seed=5, fused=fused)
        runs.append((model.state_dict(), predict_scores(model, test_texts), report))
    (fast, fast_scores, fast_report), (ref, ref_scores, ref_report) = runs
    for key in ref:
        assert torch.allclose(fast[key], ref[key], atol=2e-5), key
    assert torch.equal(fast_scores.argmax(1), ref_scores.argmax(1))
    assert fast_report.steps == ref_report.steps
    assert fast_report.final_loss == pytest.approx(ref_report.final_loss, rel=1e-4)


def test_fused_training_is_bit_identical_for_the_same_seed(builder):
    texts, labels = corpus(10, seed=6)
    states = []
    for _ in range(2):
        model = build_model(builder, 3, seed=7)
        train(model, texts, labels, {"epochs": 3, "batch_size": 4}, seed=8)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_rowwise_adagrad_matches_a_dense_reference():
    torch.manual_seed(0)
    table, dense = torch.randn(20, 3), torch.randn(4)
    ours = [nn.Parameter(table.clone()), nn.Parameter(dense.clone())]
    optimizer = RowAdagrad(ours, lr=0.3, rowwise=True)
    ref_table, ref_dense = table.clone(), dense.clone()
    row_sum, dense_sum = torch.zeros(20), torch.zeros(4)
    for step in range(3):
        rows = torch.tensor([1, 4, 7 + step])
        values = torch.randn(3, 3)
        dense_grad = torch.randn(4)
        ours[0].grad = torch.sparse_coo_tensor(rows.unsqueeze(0), values, (20, 3)).coalesce()
        ours[1].grad = dense_grad.clone()
        optimizer.step()
        row_sum[rows] += (values * values).mean(1)
        ref_table[rows] -= 0.3 * values / (row_sum[rows].sqrt() + 1e-10).unsqueeze(1)
        dense_sum += dense_grad * dense_grad  # dense parameters: plain Adagrad
        ref_dense -= 0.3 * dense_grad / (dense_sum.sqrt() + 1e-10)
    assert torch.allclose(ours[0], ref_table, atol=1e-6)
    assert torch.allclose(ours[1], ref_dense, atol=1e-6)
    assert len(optimizer.state[ours[0]]["sum"]) == 20  # one accumulator per row


def test_planning_in_chunks_gives_the_same_plans(builder, monkeypatch):
    texts, labels = corpus(10, seed=9)
    model = build_model(builder, 3, seed=0)
    features = model.featurize(texts)
    batches = _batches(len(texts), 4, torch.Generator().manual_seed(0))
    whole = SparseBagSession(model, features).plan(batches, torch.tensor(labels))
    monkeypatch.setattr(models_plugin, "PLAN_CHUNK", 16)  # a batch or two at a time
    chunked = SparseBagSession(model, features).plan(batches, torch.tensor(labels))
    for a, b in zip(whole, chunked, strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)


needs_kernels = pytest.mark.skipif(kernels._compiled is None, reason="_kernels.c not built")


@needs_kernels
@pytest.mark.parametrize("n_rows", [7, 3000, 5_000_000])  # a scan of the rows; radix passes
@pytest.mark.parametrize("seed", [0, 1])
def test_the_compiled_planner_plans_exactly_as_numpy(monkeypatch, n_rows, seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, 6, 9)  # batches of 0-5 documents
    lengths = rng.integers(0, 40, int(sizes.sum()))  # documents of 0-39 ids (repeats)
    ids = rng.integers(0, n_rows, int(lengths.sum())) // rng.integers(1, 4)  # skewed
    plans = []
    for switch in ("1", "0"):
        monkeypatch.setenv("XLEVAL_PLUGIN_KERNELS", switch)
        plans.append(models_plugin._chunk_pairs(ids, lengths, sizes, n_rows))
    assert len(plans[0]) == len(plans[1]) == len(sizes)
    for fast, slow in zip(*plans, strict=True):
        for x, y in zip(fast, slow, strict=True):
            assert x.dtype == y.dtype and torch.equal(x, y)


@needs_kernels
@pytest.mark.parametrize(("rows", "dim"), [(200_000, 64), (7, 3), (1, 1), (33, 5), (0, 4)])
def test_the_compiled_table_init_draws_numpys_bits(monkeypatch, rows, dim):
    """_kernels.fill_uniform continues numpy's SFC64 stream (odd sizes: a last 64-bit draw
    half used) and shifts and scales in float32 as numpy does."""
    tables = []
    for switch in ("1", "0"):
        monkeypatch.setenv("XLEVAL_PLUGIN_KERNELS", switch)
        torch.manual_seed(rows + dim)
        tables.append(models_plugin.uniform_table(rows, dim))
    fast, slow = tables
    assert fast.shape == slow.shape == (rows, dim) and fast.dtype == slow.dtype == torch.float32
    assert torch.equal(fast.view(torch.int32), slow.view(torch.int32))
    if rows * dim > 1:
        assert fast.abs().max() <= 1.0 / dim and fast.std() > 0.4 / dim  # U[-1/dim, 1/dim)


@needs_kernels
def test_training_with_and_without_the_compiled_loops_gives_identical_weights(builder, monkeypatch):
    texts, labels = corpus(12, seed=11)
    weights = []
    for switch in ("1", "0"):
        monkeypatch.setenv("XLEVAL_PLUGIN_KERNELS", switch)
        model = build_model(builder, 3, seed=0)
        model.featurizer.cache = None  # featurize on this path too
        train(model, texts, labels, {"epochs": 3, "batch_size": 8}, seed=0)
        weights.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*weights, strict=True):
        assert torch.equal(a, b)


def test_word_by_word_prediction_equals_id_by_id_pooling(builder):
    texts, labels = corpus(6, seed=10)
    model = build_model(builder, 3, seed=0)
    train(model, texts, labels, {"epochs": 2}, seed=0)
    bags = model.featurize(texts)
    assert bags.words is not None
    plain = TokenBags(bags.ids, bags.offsets)  # no word index: EmbeddingBag(mean) by id
    with torch.no_grad():
        assert torch.allclose(model(bags), model(plain), atol=1e-6)


def synthetic_dataset() -> MultilingualDataset:
    rng = random.Random(0)
    examples = []
    for label, words in WORDS.items():
        for i in range(10):
            split = "train" if i < 6 else "dev" if i < 7 else "test"
            for lang in ("en", "de"):
                text = " ".join([rng.choice(words), *rng.sample(FILLER, 3), lang])
                examples.append(
                    Example(f"{lang}{label}{i}", f"{label}{i}", lang, str(label), text, split)
                )
    return MultilingualDataset("synthetic", tuple(examples))


def test_feature_store_shares_splits_and_changes_no_result(registry, monkeypatch):
    """Cells reuse each split's features (shots selected from their split's) and get
    bit-identical results to cells that featurize their own texts."""
    dataset = synthetic_dataset()
    options = {"model": {"name": "bag-of-embeddings", "options": SMALL}, "training": {"epochs": 3}}

    def cells(artifacts):
        return [
            run_cell(
                resolve_method({"protocol": protocol, **options}, registry),
                dataset,
                ["en"],
                "de",
                2,
                0,
                registry=registry,
                metrics=("accuracy", "nll"),
                artifacts=artifacts,
            )
            for protocol in ("transfer", "joint", "fusion")
        ]

    shared = ArtifactCache()
    stored = cells(shared)
    assert sum(key.startswith("features:") for key in shared._items) == 4  # en/de x train/test
    monkeypatch.setattr(BagOfEmbeddingsClassifier, "feature_key", property(lambda self: None))
    plain = cells(ArtifactCache())
    for a, b in zip(stored, plain, strict=True):
        assert a.metrics == b.metrics
        assert np.array_equal(a.predictions["de"].probs, b.predictions["de"].probs)
    assert {"featurize", "train", "eval"} <= set(stored[0].timings)


def test_disk_cache_round_trips_features_exactly(tmp_path, builder):
    texts, _ = corpus(3, seed=11)
    model = build_model(builder, 3, seed=0)
    key = "features:test"
    cache = DiskArtifactCache(tmp_path)
    made, hit = cache.get_or_create(key, lambda: model.featurize(texts))
    assert not hit and list(tmp_path.glob("*.npz"))
    other = DiskArtifactCache(tmp_path)  # another process, another run of the same spec
    loaded, hit = other.get_or_create(key, lambda: pytest.fail("recomputed"))
    assert hit and other.loaded == 1
    assert torch.equal(loaded.ids, made.ids) and torch.equal(loaded.offsets, made.offsets)
    next(tmp_path.glob("*.npz")).write_bytes(b"truncated")
    again, hit = DiskArtifactCache(tmp_path).get_or_create(key, lambda: made)
    assert not hit and again is made  # unreadable: computed again, never trusted


def test_artifact_cache_keeps_within_its_memory_budget():
    cache = ArtifactCache(max_bytes=3000)
    for name in "abc":
        cache.put(name, torch.zeros(250))  # 1000 bytes each
    assert cache.nbytes == 3000 and len(cache) == 3
    cache.get("a")  # recently used: survives
    cache.put("d", torch.zeros(250))
    assert "a" in cache and "b" not in cache and cache.nbytes == 3000
    cache.put("huge", torch.zeros(10_000))  # over budget alone: kept, the rest dropped
    assert list(cache._items) == ["huge"]


def test_thread_budget_caps_torch_threads():
    before = torch.get_num_threads()
    try:
        set_thread_budget(1)
        with torch_threads(4):
            assert torch.get_num_threads() == 1
        assert training._THREAD_BUDGET == 1
    finally:
        set_thread_budget(None)
        torch.set_num_threads(before)

"""The trainer: options, batching, seeded determinism, learning, freezing, early stopping."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from xleval.errors import OptionsError
from xleval.experiment.training_options import DEFAULT_LR, TRAINING_SCHEMA, resolve_training_options
from xleval.plugin.manager import get_plugin_manager
from xleval.train.trainer import (
    RowAdagrad,
    _batches,
    build_model,
    predict_proba,
    train,
)

SMALL_BAG = {"buckets": 4000, "dim": 16}
WORDS = {0: ["kernel", "driver", "module"], 1: ["game", "puzzle", "arcade"],
         2: ["audio", "sound", "music"]}  # fmt: skip
FILLER = ["the", "a", "for", "tool", "with", "and", "of", "simple"]


def toy_corpus(n_per_class: int, seed: int) -> tuple[list[str], list[int]]:
    """Texts whose class shows through one of three class words among filler words."""
    rng = random.Random(seed)
    texts, labels = [], []
    for label, words in WORDS.items():
        for _ in range(n_per_class):
            tokens = [*rng.sample(FILLER, 4), rng.choice(words)]
            rng.shuffle(tokens)
            texts.append(" ".join(tokens))
            labels.append(label)
    return texts, labels


@pytest.fixture(scope="module")
def registry():
    return get_plugin_manager().registry


@pytest.fixture(scope="module")
def corpus():
    return toy_corpus(20, seed=1), toy_corpus(10, seed=2)


def accuracy(model, texts, labels) -> float:
    return float((predict_proba(model, texts).argmax(1) == torch.tensor(labels)).float().mean())


def test_defaults_are_filled_and_lr_follows_the_optimizer():
    resolved = resolve_training_options({})
    assert resolved["optimizer"] == "rowwise-adagrad"
    assert resolved["lr"] == DEFAULT_LR["rowwise-adagrad"]
    assert resolved["batch_size"] is None and resolved["epochs"] >= 1  # None: auto
    assert resolve_training_options({"optimizer": "sgd"})["lr"] == DEFAULT_LR["sgd"]
    assert resolve_training_options({"optimizer": "sgd", "lr": 0.3})["lr"] == 0.3
    assert set(resolved) == set(TRAINING_SCHEMA["properties"])


@pytest.mark.parametrize(
    "options, where",
    [({"batch_size": 1}, "batch_size"), ({"optimizer": "rmsprop"}, "optimizer"),
     ({"epochs": 0}, "epochs"), ({"learning_rate": 0.1}, "learning_rate")],
)  # fmt: skip
def test_invalid_options_name_the_option(options, where):
    with pytest.raises(OptionsError, match=where):
        resolve_training_options(options)


@pytest.mark.parametrize("n, batch_size", [(2, 32), (33, 32), (65, 32), (64, 32), (7, 3)])
def test_batches_cover_everything_and_never_hold_one_example(n, batch_size):
    batches = _batches(n, batch_size, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(batches).tolist()) == list(range(n))
    assert min(len(b) for b in batches) >= 2
    assert max(len(b) for b in batches) <= batch_size + 1


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "rowwise-adagrad", "adam"])
def test_bag_of_embeddings_learns_with_each_optimizer(registry, corpus, optimizer):
    (texts, labels), (test_texts, test_labels) = corpus
    builder = registry.build("models", "bag-of-embeddings", SMALL_BAG)
    model = build_model(builder, 3, seed=0)
    assert accuracy(model, test_texts, test_labels) == pytest.approx(1 / 3)  # all-zero output
    options = {"optimizer": optimizer, "epochs": 30, "batch_size": 8, "min_steps": 0}
    if optimizer == "sgd":
        options["lr"] = 1.0
    report = train(model, texts, labels, options, seed=0)
    assert report.steps == 30 * 8 and report.epochs == 30
    assert accuracy(model, test_texts, test_labels) == 1.0
    assert not model.training


def test_embedding_linear_learns(registry, corpus):
    (texts, labels), (test_texts, test_labels) = corpus
    builder = registry.build("models", "embedding-linear", {"dim": 16})
    model = build_model(builder, 3, seed=0, train_texts=texts)
    train(model, texts, labels, {"optimizer": "adam", "epochs": 20, "batch_size": 8}, seed=0)
    assert accuracy(model, test_texts, test_labels) == 1.0


@pytest.mark.parametrize(
    "model_name, options", [("bag-of-embeddings", SMALL_BAG), ("embedding-linear", {"dim": 8})]
)
def test_same_seed_gives_bit_identical_weights_and_predictions(
    registry, corpus, model_name, options
):
    (texts, labels), (test_texts, _) = corpus
    builder = registry.build("models", model_name, options)
    runs = []
    for seed in (7, 7, 8):
        model = build_model(builder, 3, seed=seed, train_texts=texts)
        train(
            model, texts, labels, {"epochs": 3, "batch_size": 8, "shuffle": "examples"}, seed=seed
        )
        runs.append((model.state_dict(), predict_proba(model, test_texts)))
    (a, pa), (b, pb), (c, _) = runs
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(pa, pb)
    assert not torch.equal(a["embedding.weight"], c["embedding.weight"])


def test_build_model_is_seeded_and_leaves_the_callers_rng_alone(registry):
    builder = registry.build("models", "bag-of-embeddings", SMALL_BAG)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = build_model(builder, 2, seed=5)
    assert torch.equal(torch.rand(3), expected_next)
    second = build_model(builder, 2, seed=5)
    assert torch.equal(first.embedding.weight, second.embedding.weight)


def test_min_steps_adds_epochs_for_tiny_training_sets(registry, corpus):
    (texts, labels), _ = corpus
    model = build_model(registry.build("models", "bag-of-embeddings", SMALL_BAG), 3, seed=0)
    report = train(
        model, texts[:8], labels[:8], {"epochs": 1, "batch_size": 4, "min_steps": 10}, seed=0
    )
    assert (report.steps, report.epochs) == (10, 5)


def test_frozen_parameters_are_not_trained(registry, corpus):
    (texts, labels), _ = corpus
    model = build_model(registry.build("models", "bag-of-embeddings", SMALL_BAG), 3, seed=0)
    model.embedding.weight.requires_grad_(False)
    before = model.embedding.weight.clone()
    train(model, texts, labels, {"epochs": 2}, seed=0)
    assert torch.equal(model.embedding.weight, before)
    assert float(model.classifier.weight.detach().abs().sum()) > 0


def test_early_stopping_keeps_the_best_dev_epoch(registry, corpus):
    """Dev labels are the train labels rotated, so dev accuracy falls as training goes on:
    the first epoch is the best, training stops after `patience` more, and its weights
    are the ones kept."""
    (texts, labels), _ = corpus
    dev_labels = [(y + 1) % 3 for y in labels]
    model = build_model(registry.build("models", "bag-of-embeddings", SMALL_BAG), 3, seed=0)
    options = {"epochs": 20, "batch_size": 8, "early_stopping": True, "patience": 2, "min_steps": 0}
    report = train(model, texts, labels, options, seed=0, dev=(texts, dev_labels))
    assert report.epochs < 20
    assert report.best_epoch is not None and report.best_epoch < report.epochs
    assert len(report.dev_accuracy) == report.epochs
    best = max(report.dev_accuracy)
    assert report.dev_accuracy[report.best_epoch - 1] == best
    assert accuracy(model, texts, dev_labels) == pytest.approx(best)


class TensorModel(nn.Module):
    """A third-party-style model whose featurize returns a plain Tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)

    def featurize(self, texts):
        return torch.tensor([[float("x" in t), float("y" in t)] for t in texts])

    def forward(self, batch):
        return self.linear(batch)


def test_tensor_batches_are_supported():
    texts, labels = ["x", "y", "xx", "yy", "x x", "y y"], [0, 1, 0, 1, 0, 1]
    torch.manual_seed(0)
    model = TensorModel()
    train(
        model,
        texts,
        labels,
        {"optimizer": "adam", "lr": 0.1, "epochs": 50, "batch_size": 2},
        seed=0,
    )
    probs = predict_proba(model, ["x", "y"])
    assert torch.allclose(probs.sum(1), torch.ones(2))
    assert probs.argmax(1).tolist() == [0, 1]


def test_empty_training_set_trains_nothing(registry):
    model = build_model(registry.build("models", "bag-of-embeddings", SMALL_BAG), 3, seed=0)
    report = train(model, [], [], {}, seed=0)
    assert report.steps == 0 and report.examples == 0


def test_row_adagrad_matches_torch_adagrad_on_sparse_and_dense_gradients():
    torch.manual_seed(0)
    table, dense = torch.randn(20, 3), torch.randn(4)
    ours = [nn.Parameter(table.clone()), nn.Parameter(dense.clone())]
    ref = [nn.Parameter(table.clone()), nn.Parameter(dense.clone())]
    row_adagrad = RowAdagrad(ours, lr=0.3)
    torch_adagrad = torch.optim.Adagrad(ref, lr=0.3)
    for step in range(3):
        rows = torch.tensor([1, 4, 7 + step])
        values = torch.randn(3, 3)
        dense_grad = torch.randn(4)
        sparse = torch.sparse_coo_tensor(rows.unsqueeze(0), values, (20, 3)).coalesce()
        ours[0].grad, ours[1].grad = sparse, dense_grad.clone()
        ref[0].grad, ref[1].grad = sparse.to_dense(), dense_grad.clone()
        row_adagrad.step()
        torch_adagrad.step()
    assert torch.allclose(ours[0], ref[0], atol=1e-6)
    assert torch.allclose(ours[1], ref[1], atol=1e-6)
    assert torch.equal(ours[0][0], table[0])  # rows never in a gradient are untouched


def test_default_batch_size_grows_with_large_training_sets_for_adagrad_only():
    from xleval.train.trainer import auto_batch_size

    assert [auto_batch_size(n, "rowwise-adagrad") for n in (10, 1624, 2648, 9450, 10**6)] == [
        32,
        32,
        64,
        256,
        256,
    ]
    assert auto_batch_size(10**6, "sgd") == 32 and auto_batch_size(10**6, "adam") == 32


def test_docs_training_lists_every_option_with_its_default():
    from pathlib import Path

    from xleval.experiment.training_options import TRAINING_SCHEMA, options_table

    page = (Path(__file__).parent.parent / "docs" / "training.md").read_text(encoding="utf-8")
    assert page.endswith(options_table())
    for name in TRAINING_SCHEMA["properties"]:
        assert f"| `{name}` (" in page


def test_explicit_epochs_without_min_steps_warns_once():
    from xleval.experiment.spec import resolve_spec
    from xleval.plugin.manager import get_plugin_manager

    registry = get_plugin_manager(strict=False).registry
    base = {
        "dataset": "ddtp-sections",
        "source": "en",
        "targets": ["de"],
        "methods": [{"protocol": "target-only"}, {"protocol": "joint"}],
    }
    warned = resolve_spec({**base, "training": {"epochs": 10}}, registry).warnings
    assert sum("training.epochs = 10 is a minimum" in w for w in warned) == 1
    for quiet in ({"epochs": 10, "min_steps": 0}, {"min_steps": 100}, {}):
        spec = resolve_spec({**base, "training": quiet}, registry)
        assert not any("is a minimum" in w for w in spec.warnings)

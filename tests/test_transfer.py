"""Transfer strategies: whole-model copies, shared-vocabulary row copies, freezing."""

from __future__ import annotations

import pytest
import torch
from xleval_plugins.transfer import TransferError

from xleval.plugin.manager import get_plugin_manager
from xleval.train.trainer import build_model, train

BAG = {"buckets": 300, "dim": 8}


@pytest.fixture(scope="module")
def registry():
    return get_plugin_manager().registry


def trained_bag(registry, seed=0):
    model = build_model(registry.build("models", "bag-of-embeddings", BAG), 3, seed=seed)
    train(
        model, ["a b", "c d", "e f", "a c"], [0, 1, 2, 0], {"epochs": 3, "batch_size": 2}, seed=seed
    )
    return model


def test_transfer_strategies_are_registered(registry):
    assert {"weight-copy", "weight-copy-frozen", "classifier-only"} <= set(
        registry.names("transfer_strategies")
    )


def test_weight_copy_is_load_state_dict_for_same_shaped_models(registry):
    source = trained_bag(registry)
    target = build_model(registry.build("models", "bag-of-embeddings", BAG), 3, seed=1)
    strategy = registry.build("transfer_strategies", "weight-copy")
    result = strategy.transfer(source, target)
    assert result is target
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)
    assert strategy.last_report["mode"] == "state_dict"
    assert strategy.last_report["embedding_rows_copied"] == 300
    # A copy, not shared storage: training the target leaves the (cached) source alone.
    before = source.embedding.weight.clone()
    with torch.no_grad():
        target.embedding.weight.add_(1.0)
    assert torch.equal(source.embedding.weight, before)


def embedding_linear(registry, texts, seed):
    builder = registry.build("models", "embedding-linear", {"dim": 4})
    return build_model(builder, 2, seed=seed, train_texts=texts)


def test_weight_copy_copies_shared_vocabulary_rows_and_the_classifier(registry):
    source = embedding_linear(registry, ["a b c"], seed=0)
    target = embedding_linear(registry, ["b c d"], seed=1)
    with torch.no_grad():
        source.classifier.weight.normal_()
    initial_d = target.embedding.weight[target.vocabulary.index("d")].clone()
    strategy = registry.build("transfer_strategies", "weight-copy")
    strategy.transfer(source, target)

    report = strategy.last_report
    assert report["mode"] == "shared_vocabulary"
    assert report["embedding_rows_copied"] == 3  # <unk>, b, c
    assert (report["source_vocabulary"], report["target_vocabulary"]) == (4, 4)
    for token in ("<unk>", "b", "c"):
        assert torch.equal(
            target.embedding.weight[target.vocabulary.index(token)],
            source.embedding.weight[source.vocabulary.index(token)],
        )
    assert torch.equal(target.embedding.weight[target.vocabulary.index("d")], initial_d)
    assert torch.equal(target.classifier.weight, source.classifier.weight)


def test_weight_copy_frozen_keeps_the_embeddings_during_fine_tuning(registry):
    source = trained_bag(registry)
    target = build_model(registry.build("models", "bag-of-embeddings", BAG), 3, seed=1)
    strategy = registry.build("transfer_strategies", "weight-copy-frozen")
    strategy.transfer(source, target)
    assert strategy.last_report["frozen"] == ["embedding"]
    assert not target.embedding.weight.requires_grad
    train(target, ["b e", "f a"], [2, 0], {"epochs": 2}, seed=0)
    assert torch.equal(target.embedding.weight, source.embedding.weight)
    assert not torch.equal(target.classifier.weight, source.classifier.weight)


def test_classifier_only_copies_only_the_output_layer(registry):
    source = trained_bag(registry)
    target = build_model(registry.build("models", "bag-of-embeddings", BAG), 3, seed=1)
    initial_embedding = target.embedding.weight.clone()
    strategy = registry.build("transfer_strategies", "classifier-only")
    strategy.transfer(source, target)
    assert torch.equal(target.classifier.weight, source.classifier.weight)
    assert torch.equal(target.classifier.bias, source.classifier.bias)
    assert torch.equal(target.embedding.weight, initial_embedding)
    assert strategy.last_report["embedding_rows_copied"] == 0


def test_shape_mismatch_is_a_clear_error(registry):
    source = trained_bag(registry)
    target = build_model(registry.build("models", "bag-of-embeddings", BAG), 5, seed=1)
    for name in ("weight-copy", "classifier-only"):
        with pytest.raises(TransferError, match="shapes differ"):
            registry.build("transfer_strategies", name).transfer(source, target)

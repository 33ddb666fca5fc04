"""Model builders and their featurization: fastText-identical hashing, bags, shapes, pooling."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn
from xleval_plugins.featurize import (
    FeatureCache,
    HashedFeaturizer,
    TokenBags,
    VocabularyFeaturizer,
    char_ngrams,
    fnv1a,
    fnv1a_many,
    tokenize,
)

from xleval.errors import OptionsError
from xleval.plugin.manager import get_plugin_manager

#: Recorded from fastText 0.9.3's ``get_subwords`` (bucket=1000, minn=3, maxn=5), minus
#: its nwords offset: the ids our hashing must reproduce.
FASTTEXT_SUBWORD_IDS = {
    "hello": {"<he": 580, "<hel": 664, "<hell": 308, "hel": 742, "hell": 310, "hello": 723,
              "ell": 344, "ello": 165, "ello>": 881, "llo": 342, "llo>": 912, "lo>": 790},
    "über": {"<üb": 82, "<übe": 269, "<über": 781, "übe": 527, "über": 527, "über>": 331,
             "ber": 366, "ber>": 56, "er>": 840},
    "ключ": {"<кл": 752, "<клю": 487, "<ключ": 199, "клю": 749, "ключ": 617, "ключ>": 21,
             "люч": 67, "люч>": 447, "юч>": 824},
    "日本語": {"<日本": 587, "<日本語": 581, "<日本語>": 609, "日本語": 559, "日本語>": 923,
            "本語>": 355},
}  # fmt: skip


@pytest.fixture(scope="module")
def registry():
    return get_plugin_manager().registry


@pytest.mark.parametrize("word", sorted(FASTTEXT_SUBWORD_IDS))
def test_char_ngram_ids_equal_fasttext_get_subwords(word):
    ours = {g: fnv1a(g.encode()) % 1000 for g in char_ngrams(word, 3, 5)}
    assert ours == FASTTEXT_SUBWORD_IDS[word]


def test_fnv1a_sign_extends_bytes_like_fasttext():
    assert fnv1a(b"") == 2166136261
    assert fnv1a(b"a") == 0xE40C292C  # plain FNV-1a for ASCII
    unsigned = 2166136261
    for byte in "é".encode():
        unsigned = ((unsigned ^ byte) * 16777619) & 0xFFFFFFFF
    assert fnv1a("é".encode()) != unsigned


def test_fnv1a_many_matches_scalar():
    words = [b"", b"a", "über".encode(), "日本語テキスト".encode(), b"x" * 40, b"ab"]
    assert fnv1a_many(words).tolist() == [fnv1a(w) for w in words]
    assert fnv1a_many([]).tolist() == []


def test_char_ngrams_never_a_lone_boundary_marker():
    assert char_ngrams("a", 1, 2) == ["<a", "a", "a>"]
    assert char_ngrams("ab", 3, 5) == ["<ab", "<ab>", "ab>"]


def test_tokenize_lowercases_and_drops_punctuation():
    assert tokenize("Hello, World! GTK+-3 c_lib") == ["hello", "world", "gtk", "3", "c_lib"]
    assert tokenize("a b c d", max_tokens=2) == ["a", "b"]


def _ids(bags: TokenBags, i: int) -> list[int]:
    return bags.ids[bags.offsets[i] : bags.offsets[i + 1]].tolist()


def test_hashed_featurizer_bags_are_shared_across_texts_and_languages():
    featurize = HashedFeaturizer(buckets=2**31 - 1, ngram_range=(3, 5), cache=None)
    bags = featurize(["Linux kernel", "noyau Linux", ""])
    assert len(bags) == 3
    linux = set(featurize(["linux"]).ids.tolist())
    assert len(linux) == 1 + len(char_ngrams("linux", 3, 5))  # own id + its n-grams
    assert linux <= set(_ids(bags, 0)) and linux <= set(_ids(bags, 1))
    assert _ids(bags, 2) == []
    # The word's own id is not the id of the identical character n-gram.
    word_abc = featurize(["abc"]).ids.tolist()[0]
    assert word_abc != fnv1a(b"abc") % (2**31 - 1)


def test_word_ngrams_add_one_id_per_adjacent_pair_within_a_text():
    plain = HashedFeaturizer(buckets=1000, ngram_range=(0, 0), cache=None)
    bigrams = HashedFeaturizer(buckets=1000, ngram_range=(0, 0), word_ngrams=2, cache=None)
    texts = ["a b c", "d", "e f"]
    assert plain(texts).lengths().tolist() == [3, 1, 2]
    assert bigrams(texts).lengths().tolist() == [5, 1, 3]  # pairs never cross texts
    assert int(bigrams(texts).ids.max()) < 1000


def test_featurizer_cache_returns_the_same_bags_for_the_same_texts():
    cache = FeatureCache()
    featurize = HashedFeaturizer(buckets=1000, cache=cache)
    first = featurize(["some text", "more"])
    assert featurize(["some text", "more"]) is first
    assert featurize(["more", "some text"]) is not first
    assert (cache.hits, cache.misses) == (1, 2)
    other = HashedFeaturizer(buckets=999, cache=cache)(["some text", "more"])
    assert other is not first


def test_feature_cache_evicts_least_recently_used_beyond_its_id_budget():
    cache = FeatureCache(max_ids=10)
    bag = TokenBags(torch.arange(6), torch.tensor([0, 6]))
    cache.get_or_build("a", lambda: bag)
    cache.get_or_build("b", lambda: TokenBags(torch.arange(6), torch.tensor([0, 6])))
    rebuilt = cache.get_or_build("a", lambda: TokenBags(torch.arange(1), torch.tensor([0, 1])))
    assert rebuilt is not bag  # "a" was evicted when "b" pushed the total to 12 ids


def test_token_bags_select_and_mean_operator():
    bags = TokenBags(torch.tensor([5, 1, 5, 2, 7, 1]), torch.tensor([0, 3, 3, 6]))
    picked = bags.select(torch.tensor([2, 0]))
    assert picked.ids.tolist() == [2, 7, 1, 5, 1, 5]
    assert picked.offsets.tolist() == [0, 3, 6]
    unique, matrix, matrix_t = bags.mean_operator()
    assert unique.tolist() == [1, 2, 5, 7]
    table = torch.randn(8, 4)
    expected = nn.functional.embedding_bag(
        bags.ids, table, bags.offsets, mode="mean", include_last_offset=True
    )
    assert torch.allclose(matrix @ table[unique], expected)
    assert torch.allclose(matrix_t.to_dense(), matrix.to_dense().t())


def test_bag_of_embeddings_shapes_and_init(registry):
    builder = registry.build("models", "bag-of-embeddings", {"buckets": 500, "dim": 8})
    model = builder.build(3)
    other = builder.build(3)
    assert isinstance(model, nn.Module)
    assert model.embedding.weight.shape == (500, 8)
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in other.state_dict().items()
    }
    assert float(model.embedding.weight.detach().abs().max()) <= 1 / 8
    assert (
        float(model.classifier.weight.detach().abs().sum()) == 0.0
    )  # fastText: output starts at 0
    scores = model(model.featurize(["one text", "two texts here"]))
    assert scores.shape == (2, 3)


def test_bag_of_embeddings_training_path_matches_embedding_bag(registry):
    """The deduplicated sparse path must compute the same outputs and gradients as a plain
    dense EmbeddingBag."""
    model = registry.build("models", "bag-of-embeddings", {"buckets": 300, "dim": 6}).build(4)
    with torch.no_grad():
        model.classifier.weight.normal_()
    batch = model.featurize(["the the the cat", "a cat and a dog", "dog"])
    reference = nn.EmbeddingBag(300, 6, mode="mean", include_last_offset=True)
    reference.weight.data.copy_(model.embedding.weight.data)
    target = torch.tensor([0, 3, 1])

    model.train()
    loss = nn.functional.cross_entropy(model(batch), target)
    loss.backward()
    hidden = reference(batch.ids, batch.offsets)
    ref_loss = nn.functional.cross_entropy(model.classifier(hidden), target)
    ref_grad = torch.autograd.grad(ref_loss, reference.weight)[0]

    assert torch.allclose(loss, ref_loss)
    grad = model.embedding.weight.grad
    assert grad.is_sparse and grad._nnz() == len(torch.unique(batch.ids))
    assert torch.allclose(grad.to_dense(), ref_grad, atol=1e-7)
    model.eval()
    assert torch.allclose(model(batch), model.classifier(hidden), atol=1e-6)


def test_bag_of_embeddings_rejects_bad_ngram_range(registry):
    with pytest.raises(OptionsError, match="ngram_range"):
        registry.build("models", "bag-of-embeddings", {"ngram_range": [5, 3]})
    with pytest.raises(OptionsError, match="dim"):
        registry.build("models", "bag-of-embeddings", {"dim": 0})


def test_embedding_linear_vocabulary_and_mean_pooling(registry):
    model = registry.build("models", "embedding-linear", {"dim": 4}).build(2)
    assert model.vocabulary == ("<unk>",)
    model.prepare(["b a b", "c b"])
    assert model.vocabulary == ("<unk>", "b", "a", "c")  # by frequency, then alphabetically
    batch = model.featurize(["a b zzz", ""])
    assert batch.ids.tolist() == [2, 1, 0] and batch.offsets.tolist() == [0, 3, 3]
    with torch.no_grad():
        model.classifier.weight.normal_()
    weight = model.embedding.weight
    expected = model.classifier(torch.stack([weight[[2, 1, 0]].mean(0), torch.zeros(4)]))
    assert torch.allclose(model(batch), expected)


def test_vocabulary_featurizer_caps_and_min_count():
    vocab = VocabularyFeaturizer.build_vocabulary(["a a a b b c"], min_count=2)
    assert vocab == ("<unk>", "a", "b")
    assert VocabularyFeaturizer.build_vocabulary(["a a b c"], max_size=2) == ("<unk>", "a")


@pytest.mark.parametrize(
    "name, options", [("bag-of-embeddings", {"buckets": 300, "dim": 4}), ("embedding-linear", {})]
)
def test_models_survive_torch_save_and_load(registry, name, options):
    """Trained models are saved by disk artifact caches and sent to worker processes."""
    model = registry.build("models", name, options).build(2)
    if hasattr(model, "prepare"):
        model.prepare(["alpha beta", "gamma"])
    with torch.no_grad():
        model.classifier.weight.normal_()
    texts = ["alpha gamma", "beta delta"]
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    model.eval()
    loaded.eval()
    assert torch.equal(loaded(loaded.featurize(texts)), model(model.featurize(texts)))


def test_the_tokenizer_options_reach_both_models(registry):
    text = "Usage: %s <unk> FILE"
    bag = registry.build(
        "models", "bag-of-embeddings", {"tokenizer": "whitespace", "lowercase": False}
    ).featurizer
    plain = registry.build(
        "models",
        "bag-of-embeddings",
        {"tokenizer": "words", "lowercase": True, "ngram_range": [3, 5], "word_ngrams": 1},
    ).featurizer
    assert plain.key == ("hashed", 200_000, 3, 5, 1, 1024)  # words' key as it always was
    default = registry.build("models", "bag-of-embeddings", {}).featurizer
    assert (default.tokenizer, default.lowercase) == ("words+punct", False)
    assert (default.minn, default.maxn, default.word_ngrams) == (2, 4, 2)
    assert bag.key != plain.key and bag(["x y"]).ids.numel() > 0
    assert bag.tokenizer == "whitespace" and bag.lowercase is False
    model = registry.build(
        "models", "embedding-linear", {"dim": 4, "tokenizer": "words+punct"}
    ).build(2)
    model.prepare([text, "%s %s"])
    assert model.vocabulary == ("<unk>", "%", "s", ":", "<", ">", "file", "unk", "usage")
    linear = registry.build("models", "embedding-linear", {"dim": 4, "tokenizer": "whitespace"})
    spaced = linear.build(2)
    spaced.prepare([text])  # a text's own "<unk>" is the unknown word, not a second entry
    assert spaced.vocabulary.count("<unk>") == 1 and "%s" in spaced.vocabulary
    with pytest.raises(OptionsError, match="tokenizer"):
        registry.build("models", "bag-of-embeddings", {"tokenizer": "bpe"})
    with pytest.raises(OptionsError, match="lowercase"):
        registry.build("models", "embedding-linear", {"lowercase": "yes"})


@pytest.mark.parametrize("tokenizer", ["whitespace", "words+punct"])
def test_models_with_a_tokenizer_survive_pickling(registry, tokenizer):
    model = registry.build(
        "models", "bag-of-embeddings", {"buckets": 300, "dim": 4, "tokenizer": tokenizer}
    ).build(2)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert loaded.featurizer.tokenizer == tokenizer
    texts = ["a%s, b", "<c>"]
    assert loaded.featurize(texts).ids.tolist() == model.featurize(texts).ids.tolist()


def test_every_tokenizer_choice_variant_is_a_valid_spec(registry, tmp_path):
    """benchmarks/tokenizer_choice.py writes its specs as TOML text: each variant's must
    validate and resolve to its options (a JSON object there would not be TOML)."""
    import sys
    from pathlib import Path

    from xleval.experiment.spec import load_spec

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    try:
        import tokenizer_choice
    finally:
        sys.path.pop(0)
    assert {"default", "words lower"} <= set(tokenizer_choice.VARIANTS)
    for name, options in tokenizer_choice.VARIANTS.items():
        path = tmp_path / f"{name.replace(' ', '-')}.toml"
        path.write_text(tokenizer_choice.spec_text('"ddtp-sections"', ["de"], [0, 8], 1, options))
        spec = load_spec(path, registry)
        model = spec.methods[0].model
        assert model.name == "bag-of-embeddings" and model.options["dim"] == 64
        assert {key: model.options[key] for key in options} == options, name

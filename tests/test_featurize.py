"""The vectorised featurizer gives exactly the ids of the straightforward one: bulk n-gram
hashing, word-factorised bags, their select/concat, and the on-disk round trip. Every test
runs on both paths (the compiled ``plugins/_kernels.c`` and numpy), and the two are held
equal array for array."""

from __future__ import annotations

import random
import re
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xleval_plugins import featurize as featurize_module
from xleval_plugins import kernels
from xleval_plugins.featurize import (
    TOKENIZERS,
    HashedFeaturizer,
    SubwordTable,
    TokenBags,
    char_classes,
    char_ngrams,
    fnv1a,
    tokenize,
    tokenize_many,
    unique_inverse,
    word_chars,
)

COMPILED = kernels._compiled
needs_compiled = pytest.mark.skipif(COMPILED is None, reason="plugins/_kernels.c not built")


@pytest.fixture(autouse=True, params=["compiled", "numpy"])
def featurizer_path(request, monkeypatch):
    """Run each test on the compiled path and on the numpy path."""
    if request.param == "compiled" and COMPILED is None:
        pytest.skip("plugins/_kernels.c not built")
    monkeypatch.setenv("XLEVAL_PLUGIN_KERNELS", "1" if request.param == "compiled" else "0")
    assert (featurize_module.compiled_featurizer() is not None) == (request.param == "compiled")
    return request.param


ALPHABET = "abcdeéüß日本語ключ𝔘_19"
TEXTS = [
    "The Linux kernel, the the kernel!",
    "noyau Linux — über-schnell 日本語のテキスト",
    "",
    "ключ к ключу, ключ",
    "a b c d e f g",
    "GTK+-3 c_lib 2024 𝔘nicode",
]


def reference_ids(
    text: str, buckets: int, minn: int, maxn: int, max_tokens=None, tokenizer="words", lower=True
) -> list[int]:
    """fastText-style ids, one token and one n-gram at a time (the definition)."""
    ids = []
    for word in tokenize(text, max_tokens, tokenizer, lower):
        ids.append(fnv1a(word.encode() + b"\xff") % buckets)
        if maxn >= minn > 0:
            ids += [fnv1a(g.encode()) % buckets for g in char_ngrams(word, minn, maxn)]
    return ids


def bag(bags: TokenBags, i: int) -> list[int]:
    return bags.ids[bags.offsets[i] : bags.offsets[i + 1]].tolist()


@pytest.mark.parametrize("minn, maxn", [(3, 5), (1, 2), (1, 1), (2, 6), (4, 4), (0, 0)])
def test_bulk_hashing_equals_one_ngram_at_a_time(minn, maxn):
    rng = random.Random(minn * 10 + maxn)
    words = list(
        dict.fromkeys(
            "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 9))) for _ in range(300)
        )
    )
    table = SubwordTable(1_000_003, minn, maxn)
    ids, lengths = table.gather(table.lookup(words))
    expected = [i for w in words for i in reference_ids(w, 1_000_003, minn, maxn)]
    assert ids.tolist() == expected
    assert lengths.tolist() == [len(reference_ids(w, 1_000_003, minn, maxn)) for w in words]


def test_featurizer_ids_equal_the_reference_and_word_bags_expand_to_them():
    featurize = HashedFeaturizer(buckets=5000, ngram_range=(3, 5), cache=None, max_tokens=5)
    bags = featurize(TEXTS)
    assert bags.words is not None  # factorised through distinct words
    for i, text in enumerate(TEXTS):
        assert bag(bags, i) == reference_ids(text, 5000, 3, 5, max_tokens=5)
    assert bags.lengths().tolist() == [len(reference_ids(t, 5000, 3, 5, 5)) for t in TEXTS]


def test_lookup_gives_the_same_indices_cold_and_warm():
    table = SubwordTable(1000, 3, 5)
    tokens = [t for text in TEXTS for t in tokenize(text)] * 3
    cold = table.lookup(tokens)  # most words new: the bulk path
    warm = table.lookup(tokens)  # every word known
    few_new = table.lookup([*tokens, "zzz-new"][-5:])  # a few new: the picked path
    assert cold.tolist() == warm.tolist()
    assert few_new[:-1].tolist() == warm[-4:].tolist()
    assert [table.index[t] for t in tokens] == warm.tolist()


def test_select_and_concat_of_word_bags_equal_featurizing_those_texts():
    featurize = HashedFeaturizer(buckets=5000, cache=None)
    bags = featurize(TEXTS)
    index = [5, 0, 3, 0, 2]
    picked = bags.select(torch.tensor(index))
    direct = featurize([TEXTS[i] for i in index])
    assert picked.words is not None
    assert torch.equal(picked.ids, direct.ids) and torch.equal(picked.offsets, direct.offsets)
    joined = TokenBags.concat([bags, picked])
    direct = featurize(TEXTS + [TEXTS[i] for i in index])
    assert torch.equal(joined.ids, direct.ids) and torch.equal(joined.offsets, direct.offsets)
    plain = TokenBags(bags.ids.clone(), bags.offsets.clone())  # no word index
    assert torch.equal(plain.select(torch.tensor(index)).ids, picked.ids)
    assert torch.equal(TokenBags.concat([plain, picked]).ids, joined.ids)


@pytest.mark.parametrize("word_ngrams", [1, 2])
def test_bags_round_trip_through_plain_arrays_exactly(word_ngrams):
    bags = HashedFeaturizer(buckets=777, word_ngrams=word_ngrams, cache=None)(TEXTS)
    arrays = bags.to_arrays()
    assert all(isinstance(a, np.ndarray) for a in arrays.values())
    back = TokenBags.from_arrays({k: np.array(v) for k, v in arrays.items()})
    assert torch.equal(back.ids, bags.ids) and torch.equal(back.offsets, bags.offsets)
    assert (back.words is None) == (bags.words is None)


def test_unique_inverse_by_mask_and_by_sort_agree():
    values = np.array([7, 3, 3, 9, 0, 7, 7], dtype=np.int64)
    by_mask = unique_inverse(values, 10)  # dense range: the mask
    by_sort = unique_inverse(values, 10**9)  # sparse range: a sort
    for distinct, inverse in (by_mask, by_sort):
        assert distinct.tolist() == [0, 3, 7, 9]
        assert distinct[inverse].tolist() == values.tolist()


TRICKY = [
    *TEXTS,
    "ΟΔΟΣ Σ σ ΣΑΣ",  # final sigma depends on the context of lower()
    "İstanbul ǅemal ﬃ",  # lower() that changes the length
    "a\x00b c\x00",  # the joiner inside a text
    "x_y 3.14 ½ ٣ 𝔘𝔫𝔦 🙂 é",  # underscore, numbers, astral letters, combining mark
    "",
    "  ",
    "Usage: %s [OPTION]... FILE\n  -h, --help  '%c' <file> 100%",  # format strings, code
    "ファイル「%s」を開けません。東京都",  # CJK without spaces, CJK punctuation
    "Привет,мир!…Mixed ℝ𝔼𝔸𝕃 عربي",  # scripts mixed, no space after punctuation
    "👍🏽👨‍👩‍👧 e\u0301 n\u0303o\u00a0nbsp\u3000wide",  # emoji with modifiers/ZWJ, combining
]


@pytest.mark.parametrize("tokenizer", list(TOKENIZERS))
@pytest.mark.parametrize("lower", [True, False])
@pytest.mark.parametrize("max_tokens", [None, 3])
def test_bulk_tokenizer_equals_the_regex_tokenizer(max_tokens, tokenizer, lower):
    texts = TRICKY
    tokens = tokenize_many(texts, max_tokens, tokenizer, lower)
    expected = [t for text in texts for t in tokenize(text, max_tokens, tokenizer, lower)]
    assert tokens.strings(np.arange(len(tokens.starts))) == expected
    assert tokens.per_doc.tolist() == [
        len(tokenize(t, max_tokens, tokenizer, lower)) for t in texts
    ]
    same = tokenize_many(expected, None, tokenizer, False)  # equal strings, equal hashes
    by_string = dict(zip(expected, zip(tokens.h1.tolist(), tokens.h2.tolist(), strict=True),
                         strict=True))  # fmt: skip
    assert by_string == dict(
        zip(expected, zip(same.h1.tolist(), same.h2.tolist(), strict=True), strict=True)
    )
    assert len(set(by_string.values())) == len(by_string)


def test_word_table_by_hash_and_by_string_agree():
    table = SubwordTable(1000, 3, 5)
    tokens = tokenize_many(TEXTS * 2)
    by_hash = table.lookup_tokens(tokens)  # adds the words
    words = tokens.strings(np.arange(len(tokens.starts)))
    assert by_hash.tolist() == table.lookup(words).tolist()
    grown = SubwordTable(1000, 3, 5)  # the hash table grows many times over
    many = [f"w{i}" for i in range(5000)]
    grown.lookup(many)
    assert grown.lookup_tokens(tokenize_many([" ".join(many)])).tolist() == list(range(5000))


def _tokens_on(path: str, monkeypatch, texts, max_tokens=None, tokenizer="words", lower=True):
    monkeypatch.setenv("XLEVAL_PLUGIN_KERNELS", "1" if path == "compiled" else "0")
    return tokenize_many(texts, max_tokens, tokenizer, lower)


def _assert_same_tokens(monkeypatch, texts, max_tokens=None, tokenizer="words", lower=True):
    fast = _tokens_on("compiled", monkeypatch, texts, max_tokens, tokenizer, lower)
    slow = _tokens_on("numpy", monkeypatch, texts, max_tokens, tokenizer, lower)
    assert fast.text == slow.text
    for field in ("starts", "ends", "per_doc", "h1", "h2"):
        a, b = getattr(fast, field), getattr(slow, field)
        assert a.dtype == b.dtype and a.tolist() == b.tolist(), field


def _table_on(path: str, monkeypatch, minn: int, maxn: int, words):
    monkeypatch.setenv("XLEVAL_PLUGIN_KERNELS", "1" if path == "compiled" else "0")
    table = SubwordTable(1_000_003, minn, maxn)
    index = table.lookup(words)
    ids, lengths = table.gather(index)
    return index.tolist(), ids.tolist(), lengths.tolist(), table.word_hashes(index).tolist()


@needs_compiled
def test_the_compiled_word_characters_are_re_word_characters_for_every_code_point():
    codes = np.arange(sys.maxunicode + 1, dtype=np.uint32)
    by_regex = word_chars(codes)  # filled from re's \w itself
    # Every code point as a one-character document: a token exactly where it is \w.
    text = "\x00".join(chr(c) for c in range(sys.maxunicode + 1))
    lengths = np.ones(sys.maxunicode + 1, dtype=np.int64)
    per_doc = np.frombuffer(COMPILED.scan(text, lengths, -1)[2], dtype=np.int64)
    assert np.array_equal(per_doc.astype(bool), by_regex)
    sample = range(0, sys.maxunicode + 1, 251)  # and the table is re's own, on a sample
    assert [bool(by_regex[c]) for c in sample] == [bool(re.match(r"\w", chr(c))) for c in sample]


def test_the_tokenizers_keep_what_they_say():
    text = "Usage: %s [OPTION]... '%c' <file>"
    assert tokenize(text) == ["usage", "s", "option", "c", "file"]
    assert tokenize(text, tokenizer="whitespace", lowercase=False) == [
        "Usage:", "%s", "[OPTION]...", "'%c'", "<file>"
    ]  # fmt: skip
    assert tokenize(text, tokenizer="words+punct") == [
        "usage", ":", "%", "s", "[", "option", "]...", "'%", "c", "'", "<", "file", ">"
    ]  # fmt: skip
    assert tokenize("a\x00b", tokenizer="whitespace") == ["a", "b"]  # NUL is whitespace


@needs_compiled
def test_the_compiled_character_classes_are_the_regexes_for_every_code_point():
    codes = np.arange(sys.maxunicode + 1, dtype=np.uint32)
    classes = char_classes(codes)  # filled from re's \w and \s themselves
    text = "\x00".join(chr(c) for c in range(sys.maxunicode + 1))
    lengths = np.ones(sys.maxunicode + 1, dtype=np.int64)
    for mode, (tokenizer, kept) in enumerate(
        (("words", {1}), ("whitespace", {1, 2}), ("words+punct", {1, 2}))
    ):
        per_doc = np.frombuffer(COMPILED.scan(text, lengths, -1, mode)[2], dtype=np.int64)
        assert np.array_equal(per_doc.astype(bool), np.isin(classes, list(kept))), tokenizer
    sample = range(0, sys.maxunicode + 1, 251)
    assert [int(classes[c]) for c in sample] == [
        1 if re.match(r"\w", chr(c)) else 0 if re.match(r"[\s\x00]", chr(c)) else 2 for c in sample
    ]
    with pytest.raises(ValueError, match="mode"):
        COMPILED.scan("a", np.ones(1, dtype=np.int64), -1, 3)


@needs_compiled
@pytest.mark.parametrize("tokenizer", list(TOKENIZERS))
@pytest.mark.parametrize("max_tokens", [None, 0, 1, 3])
def test_compiled_tokens_equal_the_numpy_tokens_for_each_tokenizer(
    monkeypatch, max_tokens, tokenizer
):
    for lower in (True, False):
        fast = _tokens_on("compiled", monkeypatch, TRICKY, max_tokens, tokenizer, lower)
        slow = _tokens_on("numpy", monkeypatch, TRICKY, max_tokens, tokenizer, lower)
        for field in ("starts", "ends", "per_doc", "h1", "h2"):
            assert getattr(fast, field).tolist() == getattr(slow, field).tolist(), field


@needs_compiled
@pytest.mark.parametrize("max_tokens", [None, 0, 1, 3])
def test_compiled_tokens_equal_the_numpy_tokens(monkeypatch, max_tokens):
    texts = [*TEXTS, "ΟΔΟΣ Σ", "İstanbul ǅemal ﬃ", "a\x00b c\x00", "x_y ½ ٣ 🙂 é", "\ud800x y"]
    _assert_same_tokens(monkeypatch, texts, max_tokens)
    _assert_same_tokens(monkeypatch, [], max_tokens)


@needs_compiled
@pytest.mark.parametrize("minn, maxn", [(3, 5), (1, 2), (1, 1), (2, 6), (4, 4), (0, 0), (5, 3)])
def test_compiled_subwords_equal_the_numpy_subwords(monkeypatch, minn, maxn):
    words = [t for text in TEXTS for t in tokenize(text)] + ["\ud800", "x\udfffy", "𝔘"]
    words = list(dict.fromkeys(words))
    fast = _table_on("compiled", monkeypatch, minn, maxn, words)
    slow = _table_on("numpy", monkeypatch, minn, maxn, words)
    assert fast == slow


@needs_compiled
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    texts=st.lists(st.text(max_size=40), max_size=8),
    max_tokens=st.one_of(st.none(), st.integers(0, 5)),
    grams=st.sampled_from([(3, 5), (1, 3), (2, 2), (0, 0)]),
    tokenizer=st.sampled_from(list(TOKENIZERS)),
    lower=st.booleans(),
)
def test_compiled_and_numpy_featurizers_agree_on_any_text(
    texts, max_tokens, grams, tokenizer, lower
):
    with pytest.MonkeyPatch.context() as monkeypatch:
        _assert_same_tokens(monkeypatch, texts, max_tokens, tokenizer, lower)
        words = list(
            dict.fromkeys(t for text in texts for t in tokenize(text, None, tokenizer, lower))
        )
        fast = _table_on("compiled", monkeypatch, *grams, words)
        slow = _table_on("numpy", monkeypatch, *grams, words)
        assert fast == slow
        for path in ("compiled", "numpy"):
            monkeypatch.setenv("XLEVAL_PLUGIN_KERNELS", "1" if path == "compiled" else "0")
            bags = HashedFeaturizer(buckets=9973, ngram_range=grams, cache=None,
                                    max_tokens=max_tokens, tokenizer=tokenizer,
                                    lowercase=lower)(texts)  # fmt: skip
            for i, text in enumerate(texts):
                expected = reference_ids(text, 9973, *grams, max_tokens, tokenizer, lower)
                assert bag(bags, i) == expected, path

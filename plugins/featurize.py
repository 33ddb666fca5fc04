"""Text -> token-id bags for the bundled models: tokenising, fastText-style hashing, caches.

Featurization is on every cell's path, so it is vectorised (each distinct word is hashed
once per process, documents are assembled with numpy gathers) and whole splits are cached
in a small in-process LRU keyed by (texts fingerprint, featurizer key).
"""

from __future__ import annotations

import hashlib
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from itertools import chain
from typing import Any

import numpy as np
import torch

#: Lower-cased Unicode word characters: punctuation separates tokens and is dropped.
TOKEN_PATTERN = re.compile(r"\w+")

FNV_OFFSET = np.uint32(2166136261)
FNV_PRIME = np.uint32(16777619)
#: fastText's multiplier when it combines word hashes into word n-gram hashes.
WORD_NGRAM_PRIME = np.uint64(116049371)
#: Appended to a word before hashing its own id. 0xFF never occurs in UTF-8, so a word's id
#: can never be the id of the identical character n-gram (fastText keeps them apart by
#: giving words dictionary ids; a shared fixed-size table needs a separate hash domain).
WORD_SUFFIX = b"\xff"


def tokenize(text: str, max_tokens: int | None = None) -> list[str]:
    """Lower-cased word tokens of ``text``, the first ``max_tokens`` of them."""
    tokens = TOKEN_PATTERN.findall(text.lower())
    return tokens if max_tokens is None else tokens[:max_tokens]


def fnv1a(data: bytes) -> int:
    """fastText's 32-bit FNV-1a (bytes sign-extended as ``int8``, as its C++ does)."""
    h = 2166136261
    for byte in data:
        h = ((h ^ ((byte - 256) & 0xFFFFFFFF if byte >= 128 else byte)) * 16777619) & 0xFFFFFFFF
    return h


def fnv1a_many(strings: Sequence[bytes]) -> np.ndarray:
    """:func:`fnv1a` of many byte strings at once (uint32), one numpy pass per byte position."""
    n = len(strings)
    if n == 0:
        return np.zeros(0, dtype=np.uint32)
    lengths = np.fromiter(map(len, strings), dtype=np.int64, count=n)
    order = np.argsort(-lengths, kind="stable")  # longest first: active rows are a prefix
    lengths_sorted = lengths[order]
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    starts_sorted = starts[order]
    # Sign-extend each byte to 32 bits exactly like fastText's uint32_t(int8_t(c)).
    flat = np.frombuffer(b"".join(strings), dtype=np.int8).astype(np.int32).view(np.uint32)
    h = np.full(n, FNV_OFFSET, dtype=np.uint32)
    longest = int(lengths_sorted[0])
    # active[j]: how many strings are longer than j (a prefix, lengths sorted descending).
    active = np.searchsorted(-lengths_sorted, -np.arange(longest), side="left")
    for j in range(longest):
        head = h[: int(active[j])]
        np.bitwise_xor(head, flat[starts_sorted[: len(head)] + j], out=head)
        np.multiply(head, FNV_PRIME, out=head)
    out = np.empty(n, dtype=np.uint32)
    out[order] = h
    return out


def char_ngrams(word: str, minn: int, maxn: int) -> list[str]:
    """The character n-grams of ``<word>`` that fastText's ``computeSubwords`` hashes.

    Lengths count Unicode characters; a lone boundary marker is never an n-gram.
    """
    marked = f"<{word}>"
    size = len(marked)
    out = []
    for i in range(size):
        for n in range(minn, maxn + 1):
            end = i + n
            if end > size:
                break
            if n == 1 and (i == 0 or end == size):
                continue
            out.append(marked[i:end])
    return out


class SubwordTable:
    """Word -> feature ids (own id + hashed char n-grams), each distinct word hashed once.

    Ids live in one growing flat array; ``start``/``length`` per word index make a
    document's ids a single numpy gather. Shared by every model with the same hashing
    options, so languages and cells reuse each other's work.
    """

    def __init__(self, buckets: int, minn: int, maxn: int) -> None:
        self.buckets, self.minn, self.maxn = buckets, minn, maxn
        self.index: dict[str, int] = {}
        self._flat = np.zeros(1024, dtype=np.int32)
        self._size = 0
        self._start = np.zeros(256, dtype=np.int64)
        self._length = np.zeros(256, dtype=np.int64)
        self._hash = np.zeros(256, dtype=np.uint32)  # fastText's hash(word), for word n-grams
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.index)

    def lookup(self, tokens: Sequence[str]) -> np.ndarray:
        """Word indices of ``tokens`` (int64), hashing words never seen before."""
        index = self.index
        new = [w for w in dict.fromkeys(tokens) if w not in index]
        if new:
            with self._lock:
                new = [w for w in new if w not in index]
                if new:
                    self._add(new)
        return np.fromiter(map(index.__getitem__, tokens), dtype=np.int64, count=len(tokens))

    def _add(self, words: list[str]) -> None:
        encoded = [w.encode("utf-8") for w in words]
        ngram_lists = (
            [char_ngrams(w, self.minn, self.maxn) for w in words]
            if self.maxn >= self.minn > 0
            else [[] for _ in words]
        )
        counts = np.fromiter(map(len, ngram_lists), dtype=np.int64, count=len(words))
        ngram_ids = fnv1a_many([g.encode("utf-8") for g in chain.from_iterable(ngram_lists)])
        word_ids = fnv1a_many([e + WORD_SUFFIX for e in encoded])
        buckets = np.uint32(self.buckets)
        # Each word's slot: its own id, then its n-gram ids.
        lengths = counts + 1
        total = int(lengths.sum())
        firsts = np.zeros(len(words), dtype=np.int64)
        np.cumsum(lengths[:-1], out=firsts[1:])
        ids = np.empty(total, dtype=np.int32)
        ids[firsts] = word_ids % buckets
        ngram_pos = np.repeat(firsts + 1 - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
        ids[ngram_pos + np.arange(len(ngram_ids))] = ngram_ids % buckets
        word_hashes = fnv1a_many(encoded)

        n_old = len(self.index)
        self._flat = _ensure(self._flat, self._size + total)
        self._flat[self._size : self._size + total] = ids
        for name in ("_start", "_length", "_hash"):
            setattr(self, name, _ensure(getattr(self, name), n_old + len(words)))
        self._start[n_old : n_old + len(words)] = firsts + self._size
        self._length[n_old : n_old + len(words)] = lengths
        self._hash[n_old : n_old + len(words)] = word_hashes
        self._size += total
        for offset, word in enumerate(words):
            self.index[word] = n_old + offset

    def gather(self, word_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Concatenated feature ids of ``word_idx`` (int64) and the number of ids per word."""
        lengths = self._length[word_idx]
        total = int(lengths.sum())
        shift = self._start[word_idx] - (np.cumsum(lengths) - lengths)
        positions = np.repeat(shift, lengths) + np.arange(total)
        return self._flat[positions].astype(np.int64), lengths

    def word_hashes(self, word_idx: np.ndarray) -> np.ndarray:
        return self._hash[word_idx]


def _ensure(array: np.ndarray, size: int) -> np.ndarray:
    if size <= len(array):
        return array
    grown = np.zeros(max(size, 2 * len(array)), dtype=array.dtype)
    grown[: len(array)] = array
    return grown


def word_ngram_ids(
    hashes: np.ndarray, doc_of_token: np.ndarray, n: int, buckets: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hashed ids of word 2..n-grams inside each document, as fastText's ``addWordNgrams``.

    Returns (ids, doc index of each id). fastText stores word hashes as ``int32`` and widens
    them to ``uint64`` with sign extension; so does this.
    """
    wide = hashes.view(np.int32).astype(np.int64).view(np.uint64)
    ids, docs = [], []
    h = wide.copy()
    for span in range(2, n + 1):
        m = len(wide) - span + 1
        if m <= 0:
            break
        h = h[:m] * WORD_NGRAM_PRIME + wide[span - 1 : span - 1 + m]
        same_doc = doc_of_token[:m] == doc_of_token[span - 1 : span - 1 + m]
        ids.append((h[same_doc] % np.uint64(buckets)).astype(np.int64))
        docs.append(doc_of_token[:m][same_doc])
    if not ids:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(ids), np.concatenate(docs)


class TokenBags:
    """A batch of variable-length id bags: ``ids`` concatenated, ``offsets`` of length n+1.

    This is what the bundled models' ``featurize`` returns; the trainer only relies on
    ``len(batch)`` and ``batch.select(indices)``. Treat the tensors as read-only: cached
    bags are shared between models and cells.
    """

    __slots__ = ("_operator", "ids", "offsets")

    def __init__(self, ids: torch.Tensor, offsets: torch.Tensor) -> None:
        self.ids = ids
        self.offsets = offsets
        self._operator: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __repr__(self) -> str:
        return f"TokenBags(n={len(self)}, ids={len(self.ids)})"

    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def select(self, index: torch.Tensor | Sequence[int]) -> TokenBags:
        """The bags at ``index`` (in that order), as a new compact batch."""
        index = torch.as_tensor(index, dtype=torch.int64)
        starts = self.offsets[index]
        lengths = self.offsets[index + 1] - starts
        offsets = torch.zeros(len(index) + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=offsets[1:])
        shift = torch.repeat_interleave(starts - offsets[:-1], lengths)
        positions = shift + torch.arange(int(offsets[-1]), dtype=torch.int64)
        return TokenBags(self.ids[positions], offsets)

    def mean_operator(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(unique ids U, A [n, U], A^T [U, n]) with A @ table[unique] = the mean bags.

        A and A^T are CSR matrices built from one sort of the ids and cached on the batch:
        training gathers each distinct row once and gets a gradient with one row per
        distinct id (PERF_NOTES: summing repeated ids first is the biggest win), and fixed
        training batches reuse the structure every epoch.
        """
        if self._operator is None:
            ids, offsets = self.ids, self.offsets
            total, n = len(ids), len(self)
            sorted_ids, order = torch.sort(ids, stable=True)  # same sums on any thread count
            first = torch.ones(total, dtype=torch.bool)
            first[1:] = sorted_ids[1:] != sorted_ids[:-1]
            unique = sorted_ids[first]
            inverse = torch.empty_like(ids)
            inverse[order] = torch.cumsum(first, 0) - 1
            lengths = self.lengths()
            doc = torch.repeat_interleave(torch.arange(n), lengths)
            weights = (1.0 / lengths.clamp_min(1).to(torch.float32))[doc]
            starts = torch.cat((torch.nonzero(first).squeeze(1), torch.tensor([total])))
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
                forward = torch.sparse_csr_tensor(
                    offsets, inverse, weights, (n, len(unique)), check_invariants=False
                )
                backward = torch.sparse_csr_tensor(
                    starts, doc[order], weights[order], (len(unique), n), check_invariants=False
                )
            self._operator = (unique, forward, backward)
        return self._operator


def texts_fingerprint(texts: Sequence[str]) -> str:
    """A content hash of a list of texts (order matters), the feature cache's key."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(len(texts).to_bytes(8, "little"))
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()


class FeatureCache:
    """A small thread-safe LRU of featurized splits, bounded by the number of ids it holds.

    Every cell featurizes the same test splits and most featurize the same train splits;
    keeping them saves most of the one-off cost PERF_NOTES measured.
    """

    def __init__(self, max_ids: int = 50_000_000) -> None:
        self.max_ids = max_ids
        self._items: OrderedDict[Hashable, TokenBags] = OrderedDict()
        self._ids = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_build(self, key: Hashable, build: Callable[[], TokenBags]) -> TokenBags:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
        bags = build()
        with self._lock:
            self.misses += 1
            if key not in self._items:
                self._items[key] = bags
                self._ids += len(bags.ids)
            while self._ids > self.max_ids and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._ids -= len(old.ids)
        return bags

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._ids = 0


#: The process-wide feature cache (featurized splits are pure functions of their key).
FEATURE_CACHE = FeatureCache()
_SUBWORD_TABLES: dict[tuple[int, int, int], SubwordTable] = {}
_TABLES_LOCK = threading.Lock()


def subword_table(buckets: int, minn: int, maxn: int) -> SubwordTable:
    """The process-wide :class:`SubwordTable` for these hashing options."""
    key = (buckets, minn, maxn)
    with _TABLES_LOCK:
        if key not in _SUBWORD_TABLES:
            _SUBWORD_TABLES[key] = SubwordTable(buckets, minn, maxn)
        return _SUBWORD_TABLES[key]


def bags_from_counts(ids: np.ndarray, per_doc: np.ndarray) -> TokenBags:
    offsets = np.zeros(len(per_doc) + 1, dtype=np.int64)
    np.cumsum(per_doc, out=offsets[1:])
    return TokenBags(
        torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)), torch.from_numpy(offsets)
    )


class HashedFeaturizer:
    """fastText-style features: each word's own hashed id, its char n-grams, word n-grams.

    All ids fall in ``[0, buckets)`` whatever the language, so models of different
    languages have identical shapes and the same surface form gets the same row.
    """

    def __init__(
        self,
        buckets: int,
        ngram_range: tuple[int, int] = (3, 5),
        word_ngrams: int = 1,
        max_tokens: int | None = None,
        cache: FeatureCache | None = FEATURE_CACHE,
    ) -> None:
        self.buckets = buckets
        self.minn, self.maxn = ngram_range
        self.word_ngrams = word_ngrams
        self.max_tokens = max_tokens
        self.cache = cache
        self.table = subword_table(buckets, self.minn, self.maxn)
        self.key = ("hashed", buckets, self.minn, self.maxn, word_ngrams, max_tokens)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the options only: the process-wide table and cache are re-attached on
        load (so trained models can be saved and sent to worker processes)."""
        state = dict(self.__dict__)
        del state["table"]
        state["cache"] = state["cache"] is not None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.cache = FEATURE_CACHE if state["cache"] else None
        self.table = subword_table(self.buckets, self.minn, self.maxn)

    def __call__(self, texts: Sequence[str]) -> TokenBags:
        texts = list(texts)
        if self.cache is None:
            return self._featurize(texts)
        return self.cache.get_or_build(
            (texts_fingerprint(texts), self.key), lambda: self._featurize(texts)
        )

    def _featurize(self, texts: list[str]) -> TokenBags:
        token_lists = [tokenize(t, self.max_tokens) for t in texts]
        tokens_per_doc = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(texts))
        word_idx = self.table.lookup(list(chain.from_iterable(token_lists)))
        ids, per_token = self.table.gather(word_idx)
        doc_of_token = np.repeat(np.arange(len(texts)), tokens_per_doc)
        per_doc = np.bincount(doc_of_token, weights=per_token, minlength=len(texts))
        per_doc = per_doc.astype(np.int64)
        if self.word_ngrams > 1 and len(word_idx):
            extra, extra_doc = word_ngram_ids(
                self.table.word_hashes(word_idx), doc_of_token, self.word_ngrams, self.buckets
            )
            # Order inside a bag is irrelevant to mean pooling; a stable sort by document
            # just puts each document's word n-grams after its own token features.
            doc_of_id = np.repeat(doc_of_token, per_token)
            order = np.argsort(np.concatenate((doc_of_id, extra_doc)), kind="stable")
            ids = np.concatenate((ids, extra))[order]
            per_doc += np.bincount(extra_doc, minlength=len(texts))
        return bags_from_counts(ids, per_doc)


class VocabularyFeaturizer:
    """Word ids from a vocabulary built on one training set; unknown words map to id 0."""

    UNK = "<unk>"  # never produced by the tokenizer ('<' is not a word character)

    def __init__(
        self,
        vocabulary: Sequence[str],
        max_tokens: int | None = None,
        cache: FeatureCache | None = FEATURE_CACHE,
    ) -> None:
        if not vocabulary or vocabulary[0] != self.UNK:
            raise ValueError(f"a vocabulary starts with {self.UNK!r}")
        self.vocabulary = tuple(vocabulary)
        self.index = {w: i for i, w in enumerate(self.vocabulary)}
        self.max_tokens = max_tokens
        self.cache = cache
        self.key = ("vocab", texts_fingerprint(self.vocabulary), max_tokens)

    @classmethod
    def build_vocabulary(
        cls,
        texts: Iterable[str],
        min_count: int = 1,
        max_size: int | None = None,
        max_tokens: int | None = None,
    ) -> tuple[str, ...]:
        """``<unk>`` then words seen ``min_count`` times, most frequent first (ties by word)."""
        counts: dict[str, int] = {}
        for text in texts:
            for token in tokenize(text, max_tokens):
                counts[token] = counts.get(token, 0) + 1
        words = sorted(
            (w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w)
        )
        if max_size is not None:
            words = words[: max(0, max_size - 1)]
        return (cls.UNK, *words)

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k != "index"}
        state["cache"] = state["cache"] is not None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.cache = FEATURE_CACHE if state["cache"] else None
        self.index = {w: i for i, w in enumerate(self.vocabulary)}

    def __call__(self, texts: Sequence[str]) -> TokenBags:
        texts = list(texts)
        if self.cache is None:
            return self._featurize(texts)
        return self.cache.get_or_build(
            (texts_fingerprint(texts), self.key), lambda: self._featurize(texts)
        )

    def _featurize(self, texts: list[str]) -> TokenBags:
        get = self.index.get
        token_lists = [tokenize(t, self.max_tokens) for t in texts]
        per_doc = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(texts))
        flat = chain.from_iterable(token_lists)
        ids = np.fromiter((get(t, 0) for t in flat), dtype=np.int64, count=int(per_doc.sum()))
        return bags_from_counts(ids, per_doc)

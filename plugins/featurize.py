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
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from itertools import chain, repeat
from typing import Any, NamedTuple

import numpy as np
import torch
from xleval_plugins.kernels import compiled_kernels as compiled_featurizer


def _u64(buffer: Any) -> np.ndarray:
    return np.frombuffer(buffer, dtype=np.uint64)


def _i64(buffer: Any) -> np.ndarray:
    return np.frombuffer(buffer, dtype=np.int64)


#: Lower-cased Unicode word characters: punctuation separates tokens and is dropped.
TOKEN_PATTERN = re.compile(r"\w+")

#: The tokenizers of the bundled models, each a reference regex (NUL counts as whitespace,
#: as in fastText): ``words`` keeps runs of word characters (``\w``) and drops the rest;
#: ``whitespace`` splits on whitespace and keeps everything else, as fastText does;
#: ``words+punct`` keeps runs of word characters and runs of other non-space characters
#: (punctuation, symbols, emoji) as separate tokens: ``%s`` -> ``%``, ``s``.
TOKENIZERS = {
    "words": TOKEN_PATTERN,
    "whitespace": re.compile(r"[^\s\x00]+"),
    "words+punct": re.compile(r"\w+|[^\w\s\x00]+"),
}
#: Each tokenizer as a map from a character's class (0 separator: whitespace or NUL; 1 word;
#: 2 other) to its token class: a token is a maximal run of one non-zero token class.
TOKEN_CLASSES = {"words": (0, 1, 0), "whitespace": (0, 1, 1), "words+punct": (0, 1, 2)}
TOKENIZER_MODES = {name: i for i, name in enumerate(TOKEN_CLASSES)}

FNV_OFFSET = np.uint32(2166136261)
FNV_PRIME = np.uint32(16777619)
#: fastText's multiplier when it combines word hashes into word n-gram hashes.
WORD_NGRAM_PRIME = np.uint64(116049371)
#: Appended to a word before hashing its own id. 0xFF never occurs in UTF-8, so a word's id
#: can never be the id of the identical character n-gram (fastText keeps them apart by
#: giving words dictionary ids; a shared fixed-size table needs a separate hash domain).
WORD_SUFFIX = b"\xff"


def tokenize(
    text: str,
    max_tokens: int | None = None,
    tokenizer: str = "words",
    lowercase: bool = True,
) -> list[str]:
    """The tokens of ``text`` (:data:`TOKENIZERS`; lower-cased first unless ``lowercase``
    is false), the first ``max_tokens`` of them: the reference the vectorised and
    compiled paths (:func:`tokenize_many`) reproduce token for token."""
    tokens = TOKENIZERS[tokenizer].findall(text.lower() if lowercase else text)
    return tokens if max_tokens is None else tokens[:max_tokens]


_WORD_CHARS = np.zeros(0x110000, dtype=np.bool_)  # TOKEN_PATTERN's \w, per code point
_CHAR_CLASS = np.zeros(0x110000, dtype=np.uint8)  # 0 separator, 1 word, 2 other
_WORD_BLOCKS = np.zeros(0x110000 >> 8, dtype=np.bool_)  # 256-code-point blocks filled in
_WORD_LOCK = threading.Lock()
_CHAR = re.compile(r"\w")
_SPACE = re.compile(r"[\s\x00]")


def word_chars(codes: np.ndarray) -> np.ndarray:
    """Whether each code point is a word character of :data:`TOKEN_PATTERN` (``\\w``).

    The table is filled from the regex itself, 256 code points at a time as blocks are
    first met, so it agrees with ``re`` by construction.
    """
    _fill_blocks(codes)
    return _WORD_CHARS[codes]


def char_classes(codes: np.ndarray) -> np.ndarray:
    r"""Each code point's class: 0 a separator (``re``'s ``\s``, or NUL), 1 a word
    character (``\w``), 2 anything else; from the regexes themselves, as
    :func:`word_chars`."""
    _fill_blocks(codes)
    return _CHAR_CLASS[codes]


def _fill_blocks(codes: np.ndarray) -> None:
    seen = np.zeros(len(_WORD_BLOCKS), dtype=np.bool_)
    seen[codes >> 8] = True
    new = np.flatnonzero(seen & ~_WORD_BLOCKS)
    if len(new):
        with _WORD_LOCK:
            for block in new.tolist():
                base = block << 8
                chars = [chr(c) for c in range(base, base + 256)]
                words = [_CHAR.match(ch) is not None for ch in chars]
                _WORD_CHARS[base : base + 256] = words
                _CHAR_CLASS[base : base + 256] = [
                    1 if w else 0 if _SPACE.match(ch) else 2
                    for ch, w in zip(chars, words, strict=True)
                ]
                _WORD_BLOCKS[block] = True


#: Two independent 64-bit hashes of a token's code points identify it in the word table
#: (a collision between two words needs both to collide: ~2^-128).
_H1_OFFSET, _H1_PRIME = np.uint64(14695981039346656037), np.uint64(1099511628211)
_H2_OFFSET, _H2_PRIME = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xFF51AFD7ED558CCD)


def code_hashes(
    codes: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(h1, h2) of the code point ranges ``codes[starts[i] : starts[i] + lengths[i]]``:
    FNV-1a-64 and a multiply-add hash, vectorised across ranges like :func:`fnv1a_ranges`."""
    n = len(starts)
    h1 = np.full(n, _H1_OFFSET, dtype=np.uint64)
    h2 = np.full(n, _H2_OFFSET, dtype=np.uint64)
    if n == 0:
        return h1, h2
    longest = int(lengths.max())
    if longest < 2**16:
        order = np.argsort((longest - lengths).astype(np.uint16), kind="stable")
    else:
        order = np.argsort(-lengths, kind="stable")
    lengths_sorted, starts_sorted = lengths[order], starts[order]
    active = np.searchsorted(-lengths_sorted, -np.arange(longest), side="left")
    for j in range(longest):
        count = int(active[j])
        c = codes[starts_sorted[:count] + j].astype(np.uint64)
        a, b = h1[:count], h2[:count]
        np.bitwise_xor(a, c, out=a)
        np.multiply(a, _H1_PRIME, out=a)
        np.add(b, c, out=b)
        np.multiply(b, _H2_PRIME, out=b)
    out1, out2 = np.empty(n, dtype=np.uint64), np.empty(n, dtype=np.uint64)
    out1[order], out2[order] = h1, h2
    return out1, out2


class Tokens(NamedTuple):
    """The tokens of many texts, as positions in their lower-cased, joined text."""

    text: str  # the lower-cased texts joined by "\x00" (never a word character)
    starts: np.ndarray  # each token's first character in ``text``
    ends: np.ndarray
    per_doc: np.ndarray  # tokens of each text
    h1: np.ndarray  # see code_hashes
    h2: np.ndarray

    def strings(self, positions: np.ndarray) -> list[str]:
        text = self.text
        return [text[a:b] for a, b in zip(self.starts[positions].tolist(),
                                          self.ends[positions].tolist(), strict=True)]  # fmt: skip


def tokenize_many(
    texts: Sequence[str],
    max_tokens: int | None = None,
    tokenizer: str = "words",
    lowercase: bool = True,
) -> Tokens:
    """:func:`tokenize` of many texts at once, without a Python object per token: the texts'
    code points in one array, character classes by table lookup, token boundaries and
    hashes with numpy (or the compiled kernel). ``Tokens.strings`` gives the token strings
    equal to ``tokenize(text, max_tokens, tokenizer, lowercase)``'s
    (tests/test_featurize.py)."""
    lowered = [t.lower() for t in texts] if lowercase else list(texts)
    lengths = np.fromiter(map(len, lowered), dtype=np.int64, count=len(lowered))
    text = "\x00".join(lowered)
    mode = TOKENIZER_MODES[tokenizer]
    compiled = compiled_featurizer()
    if compiled is not None:
        starts, ends, per_doc, h1, h2 = compiled.scan(
            text, lengths, -1 if max_tokens is None else max_tokens, mode
        )
        return Tokens(text, _i64(starts), _i64(ends), _i64(per_doc), _u64(h1), _u64(h2))
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    if tokenizer == "words":
        edges = np.diff(word_chars(codes).view(np.int8), prepend=np.int8(0), append=np.int8(0))
        starts = np.flatnonzero(edges == 1)
        ends = np.flatnonzero(edges == -1)
    else:  # runs of one non-zero token class
        token_class = np.asarray(TOKEN_CLASSES[tokenizer], dtype=np.int8)[char_classes(codes)]
        padded = np.concatenate(([0], token_class, [0])).astype(np.int8)
        inside = padded[1:-1] != 0
        starts = np.flatnonzero(inside & (padded[1:-1] != padded[:-2]))
        ends = np.flatnonzero(inside & (padded[1:-1] != padded[2:])) + 1
    doc_start = np.zeros(len(lowered), dtype=np.int64)
    np.cumsum(lengths[:-1] + 1, out=doc_start[1:])
    doc = np.searchsorted(doc_start, starts, side="right") - 1
    per_doc = np.bincount(doc, minlength=len(lowered)).astype(np.int64)
    if max_tokens is not None and len(starts) and int(per_doc.max()) > max_tokens:
        first = np.zeros(len(lowered), dtype=np.int64)
        np.cumsum(per_doc[:-1], out=first[1:])
        keep = np.arange(len(starts)) - first[doc] < max_tokens
        starts, ends, doc = starts[keep], ends[keep], doc[keep]
        per_doc = np.minimum(per_doc, max_tokens)
    h1, h2 = code_hashes(codes, starts, ends - starts)
    return Tokens(text, starts, ends, per_doc, h1, h2)


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
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return fnv1a_ranges(b"".join(strings), starts, lengths)


def fnv1a_ranges(buffer: bytes, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """:func:`fnv1a` of the byte ranges ``buffer[starts[i] : starts[i] + lengths[i]]`` (uint32).

    Vectorised across ranges: one numpy pass per byte position, longest ranges first so the
    ranges still being hashed are always a prefix.
    """
    n = len(starts)
    if n == 0:
        return np.zeros(0, dtype=np.uint32)
    longest = int(lengths.max())
    if longest < 2**16:  # numpy's stable sort of 16-bit keys is a radix sort
        order = np.argsort((longest - lengths).astype(np.uint16), kind="stable")
    else:
        order = np.argsort(-lengths, kind="stable")
    lengths_sorted = lengths[order]
    starts_sorted = starts[order]
    # Sign-extend each byte to 32 bits exactly like fastText's uint32_t(int8_t(c)).
    flat = np.frombuffer(buffer, dtype=np.int8).astype(np.int32).view(np.uint32)
    h = np.full(n, FNV_OFFSET, dtype=np.uint32)
    # active[j]: how many ranges are longer than j (a prefix, lengths sorted descending).
    active = np.searchsorted(-lengths_sorted, -np.arange(longest), side="left")
    for j in range(longest):
        count = int(active[j])
        head = h[:count]
        np.bitwise_xor(head, flat[starts_sorted[:count] + j], out=head)
        np.multiply(head, FNV_PRIME, out=head)
    out = np.empty(n, dtype=np.uint32)
    out[order] = h
    return out


class MarkedWords(NamedTuple):
    """Many words as ``<word>`` in one UTF-8 buffer, with every character's byte offset."""

    buffer: bytes
    byte_at: np.ndarray  # byte offset of each character of the buffer, and of its end
    chars: np.ndarray  # characters of each marked word (its length + 2)
    word_end: np.ndarray  # character index where each marked word ends (exclusive)

    @classmethod
    def of(cls, words: Sequence[str]) -> MarkedWords:
        marked = "".join(f"<{w}>" for w in words)
        codes = np.frombuffer(marked.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        # UTF-8 length of each character, so character positions map to byte offsets.
        utf8 = 1 + (codes >= 0x80).astype(np.int64) + (codes >= 0x800) + (codes >= 0x10000)
        byte_at = np.zeros(len(codes) + 1, dtype=np.int64)
        np.cumsum(utf8, out=byte_at[1:])
        chars = np.fromiter(map(len, words), dtype=np.int64, count=len(words)) + 2
        buffer = marked.encode("utf-8", "surrogatepass")
        return cls(buffer, byte_at, chars, np.cumsum(chars))

    def word_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """(starts, lengths) of each word's own bytes (without the markers)."""
        starts = self.byte_at[self.word_end - self.chars + 1]
        return starts, self.byte_at[self.word_end - 1] - starts


def char_ngram_ranges(
    words: Sequence[str] | MarkedWords, minn: int, maxn: int
) -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray]:
    """The char n-grams of many words at once, without a Python loop per n-gram.

    Returns (buffer, starts, lengths, counts): the UTF-8 bytes of every ``<word>`` in one
    buffer, each n-gram as a byte range of it (words in order, each word's n-grams in
    :func:`char_ngrams`' order), and the number of n-grams of each word.
    """
    marked = words if isinstance(words, MarkedWords) else MarkedWords.of(words)
    byte_at, chars, word_end = marked.byte_at, marked.chars, marked.word_end
    n_words, n_chars = len(chars), len(byte_at) - 1
    end_of = np.repeat(word_end, chars)  # end (exclusive) of each character's word
    position = np.arange(n_chars, dtype=np.int64)
    per_position = np.clip(end_of - position - minn + 1, 0, maxn - minn + 1)
    total = int(per_position.sum())
    first = np.zeros(n_chars, dtype=np.int64)
    np.cumsum(per_position[:-1], out=first[1:])
    p = np.repeat(position, per_position)
    size = minn + np.arange(total, dtype=np.int64) - np.repeat(first, per_position)
    word_of = np.repeat(np.arange(n_words, dtype=np.int64), chars)[p]
    if minn == 1:  # a lone boundary marker is never an n-gram
        lone = (size == 1) & ((p == (word_end - chars)[word_of]) | (p + 1 == word_end[word_of]))
        p, size, word_of = p[~lone], size[~lone], word_of[~lone]
    starts = byte_at[p]
    lengths = byte_at[p + size] - starts
    counts = np.bincount(word_of, minlength=n_words).astype(np.int64)
    return marked.buffer, starts, lengths, counts


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
    document's ids a single numpy gather. New words are hashed in bulk
    (:func:`char_ngram_ranges` + :func:`fnv1a_ranges`: no Python loop per n-gram). Shared by
    every model with the same hashing options, so languages and cells reuse each other's
    work.
    """

    def __init__(self, buckets: int, minn: int, maxn: int) -> None:
        self.buckets, self.minn, self.maxn = buckets, minn, maxn
        self.index: dict[str, int] = {}
        self._flat = np.zeros(1024, dtype=np.int64)
        self._size = 0
        self._start = np.zeros(256, dtype=np.int64)
        self._length = np.zeros(256, dtype=np.int64)
        self._hash = np.zeros(256, dtype=np.uint32)  # fastText's hash(word), for word n-grams
        self._lock = threading.Lock()
        # An open-addressing table (h1, h2) -> word index over code_hashes of each word, so
        # tokenize_many's tokens find their words without a Python object per token.
        self._bits = 16
        self._key1 = np.zeros(1 << self._bits, dtype=np.uint64)
        self._key2 = np.zeros(1 << self._bits, dtype=np.uint64)
        self._value = np.full(1 << self._bits, -1, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def lookup(self, tokens: Sequence[str]) -> np.ndarray:
        """Word indices of ``tokens`` (int64), hashing words never seen before."""
        n = len(tokens)
        index = self.index
        probe = tokens[:2048]
        if sum(w not in index for w in probe) * 2 > len(probe):
            # Mostly new words (a cold table): add them all, then one pass over the tokens.
            many, unknown = True, tokens
        else:
            found = np.fromiter(map(index.get, tokens, repeat(-1)), dtype=np.int64, count=n)
            missing = np.flatnonzero(found < 0)
            if not len(missing):
                return found
            many = len(missing) * 4 > n  # then walk all tokens again in C, not pick them
            unknown = tokens if many else [tokens[i] for i in missing.tolist()]
        new = list(dict.fromkeys(unknown))
        with self._lock:
            new = [w for w in new if w not in index]
            if new:
                self._add(new)
        if many:
            return np.fromiter(map(index.__getitem__, tokens), dtype=np.int64, count=n)
        found[missing] = np.fromiter(
            map(index.__getitem__, unknown), dtype=np.int64, count=len(unknown)
        )
        return found

    def find(self, h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
        """Word index of each (h1, h2) key (see :func:`code_hashes`), -1 if unknown."""
        key1, key2, value, bits = self._key1, self._key2, self._value, self._bits
        compiled = compiled_featurizer()
        if compiled is not None:
            h1, h2 = np.ascontiguousarray(h1), np.ascontiguousarray(h2)
            return _i64(compiled.find(key1, key2, value, bits, h1, h2))
        out = np.full(len(h1), -1, dtype=np.int64)
        pending = np.arange(len(h1))
        slot = _home_slot(h1, bits)
        mask = (1 << bits) - 1
        while len(pending):
            found = value[slot]
            hit = (found >= 0) & (key1[slot] == h1[pending]) & (key2[slot] == h2[pending])
            out[pending[hit]] = found[hit]
            probe = (found >= 0) & ~hit  # another key sits there: look one slot further
            pending, slot = pending[probe], (slot[probe] + 1) & mask
        return out

    def _insert(self, h1: np.ndarray, h2: np.ndarray, values: np.ndarray) -> None:
        """Add keys (new and distinct) to the hash table; the caller holds the lock."""
        filled = int((self._value >= 0).sum()) if len(h1) else 0
        if 2 * (filled + len(h1)) > len(self._value):  # keep the load under 1/2
            bits = self._bits
            while 2 * (filled + len(h1)) > (1 << bits):
                bits += 1
            old = self._value >= 0
            key1, key2, value = (np.zeros(1 << bits, dtype=np.uint64),
                                 np.zeros(1 << bits, dtype=np.uint64),
                                 np.full(1 << bits, -1, dtype=np.int64))  # fmt: skip
            _place(key1, key2, value, bits, self._key1[old], self._key2[old], self._value[old])
            # Swap whole arrays: a concurrent find() sees the old table or the new one.
            self._key1, self._key2, self._value, self._bits = key1, key2, value, bits
        _place(self._key1, self._key2, self._value, self._bits, h1, h2, values)

    def lookup_tokens(self, tokens: Tokens) -> np.ndarray:
        """Word indices of :func:`tokenize_many`'s tokens, hashing words never seen before."""
        found = self.find(tokens.h1, tokens.h2)
        missing = np.flatnonzero(found < 0)
        while len(missing):
            # One token per distinct h1 (two tokens sharing only h1 take another round).
            _, first = np.unique(tokens.h1[missing], return_index=True)
            new = tokens.strings(missing[np.sort(first)])
            with self._lock:
                self._add(new)
            found[missing] = self.find(tokens.h1[missing], tokens.h2[missing])
            missing = missing[found[missing] < 0]
        return found

    def _add(self, words: list[str]) -> None:
        words = [w for w in words if w not in self.index]  # by string: the dict decides
        if not words:
            return
        compiled = compiled_featurizer()
        if compiled is not None:
            out = compiled.subwords(words, self.minn, self.maxn, self.buckets)
            ids, lengths = _i64(out[0]), _i64(out[1])
            word_hashes = np.frombuffer(out[2], dtype=np.uint32)
            keys = (_u64(out[3]), _u64(out[4]))
        else:
            ids, lengths, word_hashes = self._subwords(words)
            keys = code_hashes_of(words)
        total = int(lengths.sum())
        firsts = np_offsets(lengths)[:-1]
        n_old = len(self.index)
        self._flat = _ensure(self._flat, self._size + total)
        self._flat[self._size : self._size + total] = ids
        for name in ("_start", "_length", "_hash"):
            setattr(self, name, _ensure(getattr(self, name), n_old + len(words)))
        self._start[n_old : n_old + len(words)] = firsts + self._size
        self._length[n_old : n_old + len(words)] = lengths
        self._hash[n_old : n_old + len(words)] = word_hashes
        self._size += total
        # Publish the words last: a reader that finds a word finds its ids too.
        new_index = np.arange(n_old, n_old + len(words), dtype=np.int64)
        self._insert(*keys, new_index)
        self.index.update(zip(words, new_index.tolist(), strict=True))

    def _subwords(self, words: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, ids per word, fastText's word hashes) of new words, in numpy: each word's
        own id then its char n-gram ids (the reference for ``_kernels.subwords``)."""
        marked = MarkedWords.of(words)
        if self.maxn >= self.minn > 0:
            buffer, starts, lengths, counts = char_ngram_ranges(marked, self.minn, self.maxn)
            ngram_ids = fnv1a_ranges(buffer, starts, lengths)
        else:
            counts = np.zeros(len(words), dtype=np.int64)
            ngram_ids = np.zeros(0, dtype=np.uint32)
        word_hashes = fnv1a_ranges(marked.buffer, *marked.word_ranges())
        # The word's own id hashes its bytes then WORD_SUFFIX (0xFF, sign-extended).
        word_ids = (word_hashes ^ np.uint32(0xFFFFFFFF)) * FNV_PRIME
        buckets = np.uint32(self.buckets)
        # Each word's slot: its own id, then its n-gram ids.
        lengths = counts + 1
        firsts = np_offsets(lengths)[:-1]
        ids = np.empty(int(lengths.sum()), dtype=np.int64)
        ids[firsts] = word_ids % buckets
        ngram_pos = np.repeat(firsts + 1 - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
        ids[ngram_pos + np.arange(len(ngram_ids))] = ngram_ids % buckets
        return ids, lengths, word_hashes

    def gather(self, word_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Concatenated feature ids of ``word_idx`` (int64) and the number of ids per word."""
        lengths = self._length[word_idx]
        total = int(lengths.sum())
        ends = np.cumsum(lengths)
        shift = self._start[word_idx] - (ends - lengths)
        positions = np.repeat(shift, lengths)
        positions += np.arange(total, dtype=np.int64)
        return self._flat[positions], lengths

    def word_hashes(self, word_idx: np.ndarray) -> np.ndarray:
        return self._hash[word_idx]


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _home_slot(h1: np.ndarray, bits: int) -> np.ndarray:
    return ((h1 * _GOLDEN) >> np.uint64(64 - bits)).astype(np.int64)


def _place(
    key1: np.ndarray,
    key2: np.ndarray,
    value: np.ndarray,
    bits: int,
    h1: np.ndarray,
    h2: np.ndarray,
    values: np.ndarray,
) -> None:
    """Insert distinct new keys by linear probing, vectorised: each round, every key whose
    slot is free and which comes first among the keys aiming at it takes it."""
    compiled = compiled_featurizer()
    if compiled is not None:
        as_array = np.ascontiguousarray
        compiled.place(key1, key2, value, bits, as_array(h1), as_array(h2), as_array(values))
        return
    mask = (1 << bits) - 1
    pending = np.arange(len(h1))
    slot = _home_slot(h1, bits)
    while len(pending):
        free = value[slot] < 0
        targets, first = np.unique(slot[free], return_index=True)
        winners = pending[free][first]
        key1[targets], key2[targets] = h1[winners], h2[winners]
        value[targets] = values[winners]  # last: a reader that sees it sees the keys too
        left = np.ones(len(pending), dtype=np.bool_)
        left[np.flatnonzero(free)[first]] = False
        pending, slot = pending[left], slot[left]
        slot = np.where(value[slot] >= 0, (slot + 1) & mask, slot)


def code_hashes_of(words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`code_hashes` of whole strings."""
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    codes = np.frombuffer("".join(words).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    return code_hashes(codes, np_offsets(lengths)[:-1], lengths)


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


class WordIndex(NamedTuple):
    """Bags factorised through their distinct words (each token's ids are its word's slot).

    Document i's tokens are ``token_words[token_offsets[i] : token_offsets[i + 1]]``
    (indices of distinct words); word w's feature ids are
    ``slot_ids[slot_offsets[w] : slot_offsets[w + 1]]``. A mean bag is then a sum over
    each distinct word's rows once, then over tokens: ~13x fewer rows read than id by id.
    """

    token_words: torch.Tensor
    token_offsets: torch.Tensor
    slot_ids: torch.Tensor
    slot_offsets: torch.Tensor


def np_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(starts[i], starts[i] + lengths[i])`` for every i (int64)."""
    total = int(lengths.sum())
    ends = np.cumsum(lengths)
    positions = np.repeat(starts - (ends - lengths), lengths)
    positions += np.arange(total, dtype=np.int64)
    return positions


def offsets_from_lengths(lengths: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np_offsets(lengths.numpy()))


def gather(values: torch.Tensor, index: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``values[index]`` through numpy (a faster gather on one thread)."""
    index = index.numpy() if isinstance(index, torch.Tensor) else index
    return torch.from_numpy(values.numpy()[index])


class TokenBags:
    """A batch of variable-length id bags: ``ids`` concatenated, ``offsets`` of length n+1.

    This is what the bundled models' ``featurize`` returns; the trainer only relies on
    ``len(batch)`` and ``batch.select(indices)``. The hashed featurizer also attaches a
    :class:`WordIndex` (``words``): ``ids`` are then expanded from it on first use, and
    prediction pools word by word. Treat the tensors as read-only: cached bags are shared
    between models and cells.
    """

    __slots__ = ("_ids", "_operator", "offsets", "words")

    def __init__(
        self, ids: torch.Tensor | None, offsets: torch.Tensor, words: WordIndex | None = None
    ) -> None:
        if ids is None and words is None:
            raise ValueError("TokenBags needs ids or a WordIndex")
        self._ids = ids
        self.offsets = offsets
        self.words = words
        self._operator: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @property
    def ids(self) -> torch.Tensor:
        if self._ids is None:
            assert self.words is not None
            words = self.words
            slot_offsets = words.slot_offsets.numpy()
            tokens = words.token_words.numpy()
            starts = slot_offsets[tokens]
            positions = np_ranges(starts, slot_offsets[tokens + 1] - starts)
            self._ids = torch.from_numpy(words.slot_ids.numpy()[positions])
        return self._ids

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __repr__(self) -> str:
        return f"TokenBags(n={len(self)}, ids={int(self.offsets[-1])})"

    def __getstate__(self) -> dict[str, Any]:
        # Expanded ids are recomputed from the word index after unpickling.
        return {
            "ids": None if self.words is not None else self._ids,
            "offsets": self.offsets,
            "words": None if self.words is None else tuple(self.words),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        words = state["words"]
        self.__init__(state["ids"], state["offsets"], None if words is None else WordIndex(*words))

    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays (for the run directory's feature store); :meth:`from_arrays` undoes
        it exactly."""
        if self.words is not None:
            return {
                "offsets": self.offsets.numpy(),
                **{f"words_{k}": v.numpy() for k, v in self.words._asdict().items()},
            }
        return {"offsets": self.offsets.numpy(), "ids": self.ids.numpy()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> TokenBags:
        offsets = torch.from_numpy(np.asarray(arrays["offsets"], dtype=np.int64))
        if "ids" in arrays:
            return cls(torch.from_numpy(np.asarray(arrays["ids"], dtype=np.int64)), offsets)
        words = WordIndex(
            *(
                torch.from_numpy(np.asarray(arrays[f"words_{f}"], dtype=np.int64))
                for f in WordIndex._fields
            )
        )
        return cls(None, offsets, words)

    def nbytes(self) -> int:
        """Bytes held by the tensors (for cache budgets)."""
        tensors = [self.offsets, *(self.words or ())]
        if self._ids is not None:
            tensors.append(self._ids)
        return sum(t.element_size() * t.numel() for t in tensors)

    def ids_of(self, index: torch.Tensor) -> torch.Tensor:
        """The ids of the bags at ``index``, concatenated in that order (``select(index).ids``
        without building the selection; from the word index when there is one, so the
        whole batch's ids need not be expanded first)."""
        at = index.numpy()
        if self.words is None or self._ids is not None:
            offsets = self.offsets.numpy()
            starts = offsets[at]
            return gather(self.ids, np_ranges(starts, offsets[at + 1] - starts))
        words = self.words
        token_offsets, slot_offsets = words.token_offsets.numpy(), words.slot_offsets.numpy()
        starts = token_offsets[at]
        tokens = words.token_words.numpy()[np_ranges(starts, token_offsets[at + 1] - starts)]
        slot_starts = slot_offsets[tokens]
        slot_ends = slot_offsets[tokens + 1]
        return gather(words.slot_ids, np_ranges(slot_starts, slot_ends - slot_starts))

    def select(self, index: torch.Tensor | Sequence[int]) -> TokenBags:
        """The bags at ``index`` (in that order), as a new compact batch."""
        at = torch.as_tensor(index, dtype=torch.int64).numpy()
        bag_offsets = self.offsets.numpy()
        starts = bag_offsets[at]
        lengths = bag_offsets[at + 1] - starts
        offsets = torch.from_numpy(np_offsets(lengths))
        if self.words is None:
            return TokenBags(gather(self.ids, np_ranges(starts, lengths)), offsets)
        words = self.words
        token_offsets = words.token_offsets.numpy()
        token_starts = token_offsets[at]
        token_counts = token_offsets[at + 1] - token_starts
        picked = words.token_words.numpy()[np_ranges(token_starts, token_counts)]
        used = np.zeros(len(words.slot_offsets) - 1, dtype=np.bool_)
        used[picked] = True
        keep = np.flatnonzero(used)
        renumber = np.cumsum(used, dtype=np.int64) - 1
        slot_offsets = words.slot_offsets.numpy()
        slot_starts = slot_offsets[keep]
        slot_lengths = slot_offsets[keep + 1] - slot_starts
        slot_ids = gather(words.slot_ids, np_ranges(slot_starts, slot_lengths))
        index = WordIndex(
            torch.from_numpy(renumber[picked]),
            torch.from_numpy(np_offsets(token_counts)),
            slot_ids,
            torch.from_numpy(np_offsets(slot_lengths)),
        )
        return TokenBags(None, offsets, index)

    @classmethod
    def concat(cls, parts: Sequence[TokenBags]) -> TokenBags:
        """The documents of ``parts``, in order, as one batch (same ids as each part's)."""
        if len(parts) == 1:
            return parts[0]
        offsets = offsets_from_lengths(torch.cat([p.lengths() for p in parts]))
        if any(p.words is None for p in parts):
            return TokenBags(torch.cat([p.ids for p in parts]), offsets)
        words = [p.words for p in parts]
        assert all(w is not None for w in words)
        word_shift = 0
        token_words = []
        for w in words:
            token_words.append(w.token_words + word_shift)
            word_shift += len(w.slot_offsets) - 1
        index = WordIndex(
            torch.cat(token_words),
            offsets_from_lengths(
                torch.cat([w.token_offsets[1:] - w.token_offsets[:-1] for w in words])
            ),
            torch.cat([w.slot_ids for w in words]),
            offsets_from_lengths(
                torch.cat([w.slot_offsets[1:] - w.slot_offsets[:-1] for w in words])
            ),
        )
        return TokenBags(None, offsets, index)

    def mean_operator(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(unique ids U, A [n, U], A^T [U, n]) with A @ table[unique] = the mean bags.

        A and A^T are CSR matrices built from one sort of the ids and cached on the batch;
        the autograd training path (``optimizer = "adam"``) uses them, so its gradient has
        one row per distinct id (summing repeated ids first is the biggest win).
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


def _id_count(bags: Any) -> int:
    offsets = getattr(bags, "offsets", None)
    return int(offsets[-1]) if offsets is not None and len(offsets) else len(bags)


class FeatureCache:
    """A small thread-safe LRU of featurized splits, bounded by the number of ids it holds.

    Every cell featurizes the same test splits and most featurize the same train splits;
    keeping them saves most of that one-off cost.
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
                self._ids += _id_count(bags)
            while self._ids > self.max_ids and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._ids -= _id_count(old)
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


class CachedFeaturizer(ABC):
    """Featurizes through ``self.cache`` (a :class:`FeatureCache`, or None: no caching),
    keyed by the texts' fingerprint and ``self.key``; subclasses provide ``_featurize``."""

    cache: FeatureCache | None
    key: tuple[Any, ...]

    def __call__(self, texts: Sequence[str]) -> TokenBags:
        texts = list(texts)
        if self.cache is None:
            return self._featurize(texts)
        return self.cache.get_or_build(
            (texts_fingerprint(texts), self.key), lambda: self._featurize(texts)
        )

    @abstractmethod
    def _featurize(self, texts: list[str]) -> TokenBags:
        """The bags of ``texts``, uncached."""


class HashedFeaturizer(CachedFeaturizer):
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
        tokenizer: str = "words",
        lowercase: bool = True,
    ) -> None:
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"unknown tokenizer {tokenizer!r} (one of {', '.join(TOKENIZERS)})")
        self.buckets = buckets
        self.minn, self.maxn = ngram_range
        self.word_ngrams = word_ngrams
        self.max_tokens = max_tokens
        self.tokenizer, self.lowercase = tokenizer, lowercase
        self.cache = cache
        self.table = subword_table(buckets, self.minn, self.maxn)
        self.key = ("hashed", buckets, self.minn, self.maxn, word_ngrams, max_tokens)
        if (tokenizer, lowercase) != ("words", True):  # the default's key as it always was
            self.key += (tokenizer, lowercase)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the options only: the process-wide table and cache are re-attached on
        load (so trained models can be saved and sent to worker processes)."""
        state = dict(self.__dict__)
        del state["table"]
        state["cache"] = state["cache"] is not None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"tokenizer": "words", "lowercase": True, **state})
        self.cache = FEATURE_CACHE if state["cache"] else None
        self.table = subword_table(self.buckets, self.minn, self.maxn)

    def _featurize(self, texts: list[str]) -> TokenBags:
        tokens = tokenize_many(texts, self.max_tokens, self.tokenizer, self.lowercase)
        tokens_per_doc = tokens.per_doc
        word_idx = self.table.lookup_tokens(tokens)
        if self.word_ngrams == 1:
            return self._word_bags(word_idx, tokens_per_doc)
        ids, per_token = self.table.gather(word_idx)
        doc_of_token = np.repeat(np.arange(len(texts)), tokens_per_doc)
        per_doc = np.bincount(doc_of_token, weights=per_token, minlength=len(texts))
        per_doc = per_doc.astype(np.int64)
        if len(word_idx):
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

    def _word_bags(self, word_idx: np.ndarray, tokens_per_doc: np.ndarray) -> TokenBags:
        """Bags factorised through their distinct words (:class:`WordIndex`): only each
        distinct word's ids are gathered; ``ids`` expand from it when training needs them."""
        distinct, token_words = unique_inverse(word_idx, len(self.table))
        slot_ids, slot_lengths = self.table.gather(distinct)
        n = len(tokens_per_doc)
        doc_of_token = np.repeat(np.arange(n), tokens_per_doc)
        per_doc = np.bincount(doc_of_token, weights=slot_lengths[token_words], minlength=n)
        as_tensor = torch.from_numpy
        return TokenBags(
            None,
            as_tensor(np_offsets(per_doc.astype(np.int64))),
            WordIndex(
                as_tensor(token_words),
                as_tensor(np_offsets(tokens_per_doc)),
                as_tensor(slot_ids),
                as_tensor(np_offsets(slot_lengths)),
            ),
        )


def np_offsets(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def unique_inverse(values: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct values, index of each value in them) for ints in ``[0, bound)``:
    a mask over ``[0, bound)`` when that is cheaper than sorting."""
    if len(values) * 32 < bound:
        distinct, inverse = np.unique(values, return_inverse=True)
        return distinct.astype(np.int64), inverse.astype(np.int64).reshape(-1)
    present = np.zeros(bound, dtype=np.bool_)
    present[values] = True
    distinct = np.flatnonzero(present)
    renumber = np.cumsum(present, dtype=np.int64)
    renumber -= 1
    return distinct.astype(np.int64), renumber[values]


class VocabularyFeaturizer(CachedFeaturizer):
    """Word ids from a vocabulary built on one training set; unknown words map to id 0."""

    #: id 0; a text's own "<unk>" token (the whitespace tokenizer keeps one) maps there too
    UNK = "<unk>"

    def __init__(
        self,
        vocabulary: Sequence[str],
        max_tokens: int | None = None,
        cache: FeatureCache | None = FEATURE_CACHE,
        tokenizer: str = "words",
        lowercase: bool = True,
    ) -> None:
        if not vocabulary or vocabulary[0] != self.UNK:
            raise ValueError(f"a vocabulary starts with {self.UNK!r}")
        self.vocabulary = tuple(vocabulary)
        self.index = {w: i for i, w in enumerate(self.vocabulary)}
        self.max_tokens = max_tokens
        self.tokenizer, self.lowercase = tokenizer, lowercase
        self.cache = cache
        self.key = ("vocab", texts_fingerprint(self.vocabulary), max_tokens)
        if (tokenizer, lowercase) != ("words", True):
            self.key += (tokenizer, lowercase)

    @classmethod
    def build_vocabulary(
        cls,
        texts: Iterable[str],
        min_count: int = 1,
        max_size: int | None = None,
        max_tokens: int | None = None,
        tokenizer: str = "words",
        lowercase: bool = True,
    ) -> tuple[str, ...]:
        """``<unk>`` then words seen ``min_count`` times, most frequent first (ties by word)."""
        counts: dict[str, int] = {}
        for text in texts:
            for token in tokenize(text, max_tokens, tokenizer, lowercase):
                if token != cls.UNK:
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
        self.__dict__.update({"tokenizer": "words", "lowercase": True, **state})
        self.cache = FEATURE_CACHE if state["cache"] else None
        self.index = {w: i for i, w in enumerate(self.vocabulary)}

    def _featurize(self, texts: list[str]) -> TokenBags:
        get = self.index.get
        token_lists = [tokenize(t, self.max_tokens, self.tokenizer, self.lowercase) for t in texts]
        per_doc = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(texts))
        flat = chain.from_iterable(token_lists)
        ids = np.fromiter((get(t, 0) for t in flat), dtype=np.int64, count=int(per_doc.sum()))
        return bags_from_counts(ids, per_doc)

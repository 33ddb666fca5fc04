/* The bundled models' hot loops in C; plugins/featurize.py and plugins/torch_models.py hold
 * the reference paths (plugins/kernels.py says which runs).
 *
 * Prediction from raw text spends its time tokenising and hashing: finding word runs,
 * hashing each token's code points to find its word, and hashing the char n-grams of words
 * never seen before. Training plans its batches once: each batch's distinct (row, document)
 * pairs, by row and by document. Each function here computes exactly what its numpy
 * counterpart computes (tests/test_featurize.py and tests/test_training.py hold them equal),
 * one pass over the data instead of one numpy pass per character position or a sort.
 *
 * Arrays come and go as bytearrays (numpy views them with frombuffer), so the build needs
 * no numpy headers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define FNV32_OFFSET 2166136261u
#define FNV32_PRIME 16777619u
#define H1_OFFSET 14695981039346656037ull
#define H1_PRIME 1099511628211ull
#define H2_OFFSET 0x9E3779B97F4A7C15ull
#define H2_PRIME 0xFF51AFD7ED558CCDull
#define GOLDEN 0x9E3779B97F4A7C15ull

/* Each code point's class (featurize.char_classes): 1 for ``re``'s \w in str patterns
 * (_sre's SRE_UNI_IS_WORD is exactly c == '_' || Py_UNICODE_ISALNUM(c)), 0 for \s
 * (SRE_UNI_IS_SPACE: Py_UNICODE_ISSPACE) or NUL, 2 for anything else. Looked up in a table
 * filled 256 code points at a time as blocks are first met (the tests cost Unicode database
 * lookups). Blocks are filled with the GIL held; readers without it only read blocks filled
 * before. */
static uint8_t class_table[0x110000];
static uint8_t block_filled[0x110000 >> 8];

static void fill_block(Py_UCS4 block) {
    for (Py_UCS4 c = block << 8; c < ((block + 1) << 8); c++)
        class_table[c] = (c == '_' || Py_UNICODE_ISALNUM(c)) ? 1
                         : (c == 0 || Py_UNICODE_ISSPACE(c)) ? 0
                                                             : 2;
    block_filled[block] = 1;
}

/* A tokenizer maps a character class to its token class (featurize.TOKEN_CLASSES): a token
 * is a maximal run of one non-zero token class. Modes: 0 words, 1 whitespace, 2 words+punct. */
static const uint8_t TOKEN_CLASSES[3][3] = {{0, 1, 0}, {0, 1, 1}, {0, 1, 2}};

static inline int token_class_filling(Py_UCS4 c, const uint8_t *map) {
    if (!block_filled[c >> 8]) fill_block(c >> 8);
    return map[class_table[c]];
}

static inline int token_class(Py_UCS4 c, const uint8_t *map) { return map[class_table[c]]; }

static PyObject *new_array(Py_ssize_t n, Py_ssize_t itemsize, void **data) {
    PyObject *out = PyByteArray_FromStringAndSize(NULL, n * itemsize);
    if (out != NULL) *data = PyByteArray_AS_STRING(out);
    return out;
}

static int get_buffer(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t itemsize,
                      const char *name) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    if (view->len % itemsize != 0) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes is not a whole number of %zd-byte items",
                     name, view->len, itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

#define XL_INLINE static inline __attribute__((always_inline))

/* Tokens kept per document (and the class table filled for every block met). */
XL_INLINE Py_ssize_t count_tokens(const int kind, const void *data, const int64_t *lengths,
                                  Py_ssize_t n_docs, Py_ssize_t max_tokens,
                                  const uint8_t *map) {
    Py_ssize_t pos = 0, count = 0;
    for (Py_ssize_t d = 0; d < n_docs; d++) {
        const Py_ssize_t end = pos + lengths[d];
        Py_ssize_t in_doc = 0;
        int inside = 0;
        for (; pos < end; pos++) {
            const int t = token_class_filling(PyUnicode_READ(kind, data, pos), map);
            in_doc += t && t != inside;
            inside = t;
        }
        count += max_tokens >= 0 && in_doc > max_tokens ? max_tokens : in_doc;
        pos++; /* the separator */
    }
    return count;
}

XL_INLINE void find_tokens(const int kind, const void *data, const int64_t *lengths,
                           Py_ssize_t n_docs, Py_ssize_t max_tokens, int64_t *starts,
                           int64_t *ends, int64_t *per_doc, uint64_t *h1, uint64_t *h2,
                           const uint8_t *map) {
    Py_ssize_t pos = 0, t = 0;
    for (Py_ssize_t d = 0; d < n_docs; d++) {
        const Py_ssize_t end = pos + lengths[d];
        Py_ssize_t in_doc = 0;
        while (pos < end && (max_tokens < 0 || in_doc < max_tokens)) {
            const int run = token_class(PyUnicode_READ(kind, data, pos), map);
            if (!run) {
                pos++;
                continue;
            }
            const Py_ssize_t first = pos;
            uint64_t a = H1_OFFSET, b = H2_OFFSET;
            while (pos < end) {
                const Py_UCS4 c = PyUnicode_READ(kind, data, pos);
                if (token_class(c, map) != run) break;
                a = (a ^ (uint64_t)c) * H1_PRIME;
                b = (b + (uint64_t)c) * H2_PRIME;
                pos++;
            }
            starts[t] = first;
            ends[t] = pos;
            h1[t] = a;
            h2[t] = b;
            t++;
            in_doc++;
        }
        per_doc[d] = in_doc;
        pos = end + 1; /* past the separator (and any tokens over max_tokens) */
    }
}

/* scan(text, lengths, max_tokens, mode=0) -> (starts, ends, per_doc, h1, h2)
 *
 * ``text``: documents joined by one separator character (NUL: never part of a token);
 * ``lengths``: int64 length of each document. Tokens are maximal runs of one token class of
 * the tokenizer ``mode`` (0 words, 1 whitespace, 2 words+punct); only the first
 * ``max_tokens`` of each document are kept (-1: all). h1 is FNV-1a-64 and h2 a multiply-add
 * hash over each token's code points (featurize.code_hashes). */
static PyObject *py_scan(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *text, *lengths_obj;
    Py_ssize_t max_tokens;
    int mode = 0;
    if (!PyArg_ParseTuple(args, "UOn|i", &text, &lengths_obj, &max_tokens, &mode)) return NULL;
    if (mode < 0 || mode > 2) {
        PyErr_Format(PyExc_ValueError, "scan: mode must be 0, 1 or 2, not %d", mode);
        return NULL;
    }
    const uint8_t *map = TOKEN_CLASSES[mode];
    Py_buffer lv;
    if (get_buffer(lengths_obj, &lv, 0, 8, "lengths") < 0) return NULL;
    const int64_t *lengths = lv.buf;
    const Py_ssize_t n_docs = lv.len / 8;
    const int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    const Py_ssize_t size = PyUnicode_GET_LENGTH(text);
    PyObject *result = NULL, *arrays[5] = {NULL};
    int64_t *starts, *ends, *per_doc;
    uint64_t *h1, *h2;
    Py_ssize_t total = 0, count = 0;
    for (Py_ssize_t d = 0; d < n_docs; d++) {
        if (lengths[d] < 0) {
            PyErr_SetString(PyExc_ValueError, "scan: negative document length");
            goto done;
        }
        total += lengths[d] + (d > 0);
    }
    if (total != size) {
        PyErr_Format(PyExc_ValueError, "scan: lengths cover %zd characters of %zd", total, size);
        goto done;
    }
    /* Each loop specialised for the string's character width. */
    switch (kind) {
    case PyUnicode_1BYTE_KIND:
        count = count_tokens(1, data, lengths, n_docs, max_tokens, map);
        break;
    case PyUnicode_2BYTE_KIND:
        count = count_tokens(2, data, lengths, n_docs, max_tokens, map);
        break;
    default: count = count_tokens(4, data, lengths, n_docs, max_tokens, map);
    }
    if (!(arrays[0] = new_array(count, 8, (void **)&starts)) ||
        !(arrays[1] = new_array(count, 8, (void **)&ends)) ||
        !(arrays[2] = new_array(n_docs, 8, (void **)&per_doc)) ||
        !(arrays[3] = new_array(count, 8, (void **)&h1)) ||
        !(arrays[4] = new_array(count, 8, (void **)&h2)))
        goto done;
    Py_BEGIN_ALLOW_THREADS
    switch (kind) {
    case PyUnicode_1BYTE_KIND:
        find_tokens(1, data, lengths, n_docs, max_tokens, starts, ends, per_doc, h1, h2, map);
        break;
    case PyUnicode_2BYTE_KIND:
        find_tokens(2, data, lengths, n_docs, max_tokens, starts, ends, per_doc, h1, h2, map);
        break;
    default:
        find_tokens(4, data, lengths, n_docs, max_tokens, starts, ends, per_doc, h1, h2, map);
    }
    Py_END_ALLOW_THREADS
    result = PyTuple_Pack(5, arrays[0], arrays[1], arrays[2], arrays[3], arrays[4]);
done:
    for (int i = 0; i < 5; i++) Py_XDECREF(arrays[i]);
    PyBuffer_Release(&lv);
    return result;
}

/* Append the UTF-8 bytes of ``c`` (lone surrogates as 3 bytes, like "surrogatepass"). */
static inline int utf8(Py_UCS4 c, unsigned char *out) {
    if (c < 0x80) {
        out[0] = (unsigned char)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (unsigned char)(0xC0 | (c >> 6));
        out[1] = (unsigned char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (c >> 12));
        out[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (c & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (c >> 18));
    out[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (c & 0x3F));
    return 4;
}

/* fastText's FNV-1a step: the byte sign-extended as int8, as its C++ does. */
static inline uint32_t fnv_byte(uint32_t h, unsigned char byte) {
    return (h ^ (uint32_t)(int32_t)(int8_t)byte) * FNV32_PRIME;
}

/* subwords(words, minn, maxn, buckets) -> (ids, lengths, word_hashes, h1, h2)
 *
 * For each word: its own id (FNV-1a of its UTF-8 bytes then byte 0xFF, mod buckets)
 * followed by the ids of the char n-grams of "<word>" (featurize.char_ngrams' order, mod
 * buckets); ``lengths`` the ids per word (int64); ``word_hashes`` FNV-1a of the word's
 * bytes (uint32, for word n-grams); h1/h2 as scan's. No n-grams unless maxn >= minn > 0. */
static PyObject *py_subwords(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *words;
    Py_ssize_t minn, maxn;
    unsigned long long buckets;
    if (!PyArg_ParseTuple(args, "O!nnK", &PyList_Type, &words, &minn, &maxn, &buckets))
        return NULL;
    if (buckets == 0) {
        PyErr_SetString(PyExc_ValueError, "subwords: buckets must be positive");
        return NULL;
    }
    const int ngrams = maxn >= minn && minn > 0;
    const Py_ssize_t n = PyList_GET_SIZE(words);
    PyObject *result = NULL, *arrays[5] = {NULL};
    int64_t *ids, *lengths;
    uint32_t *hashes;
    uint64_t *h1, *h2;
    unsigned char *bytes = NULL;
    Py_ssize_t *byte_at = NULL, capacity = 0, total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *word = PyList_GET_ITEM(words, i);
        if (!PyUnicode_Check(word)) {
            PyErr_Format(PyExc_TypeError, "subwords: word %zd is not a str", i);
            return NULL;
        }
        const Py_ssize_t chars = PyUnicode_GET_LENGTH(word) + 2;
        Py_ssize_t grams = 0;
        if (ngrams)
            for (Py_ssize_t at = 0; at < chars; at++) {
                Py_ssize_t most = chars - at < maxn ? chars - at : maxn;
                if (most >= minn) grams += most - minn + 1;
                if (minn == 1 && (at == 0 || at == chars - 1)) grams--; /* a lone marker */
            }
        total += 1 + grams;
        if (chars > capacity) capacity = chars;
    }
    if (!(arrays[0] = new_array(total, 8, (void **)&ids)) ||
        !(arrays[1] = new_array(n, 8, (void **)&lengths)) ||
        !(arrays[2] = new_array(n, 4, (void **)&hashes)) ||
        !(arrays[3] = new_array(n, 8, (void **)&h1)) ||
        !(arrays[4] = new_array(n, 8, (void **)&h2)))
        goto done;
    bytes = PyMem_Malloc(4 * capacity + 1);
    byte_at = PyMem_Malloc(sizeof(Py_ssize_t) * (capacity + 1));
    if (bytes == NULL || byte_at == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t out = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *word = PyList_GET_ITEM(words, i);
        const int kind = PyUnicode_KIND(word);
        const void *data = PyUnicode_DATA(word);
        const Py_ssize_t len = PyUnicode_GET_LENGTH(word), chars = len + 2;
        /* "<word>" as UTF-8, with each character's byte offset. */
        Py_ssize_t b = 0;
        uint64_t a1 = H1_OFFSET, a2 = H2_OFFSET;
        byte_at[0] = 0;
        bytes[b++] = '<';
        for (Py_ssize_t k = 0; k < len; k++) {
            const Py_UCS4 c = PyUnicode_READ(kind, data, k);
            a1 = (a1 ^ (uint64_t)c) * H1_PRIME;
            a2 = (a2 + (uint64_t)c) * H2_PRIME;
            byte_at[k + 1] = b;
            b += utf8(c, bytes + b);
        }
        byte_at[len + 1] = b;
        bytes[b++] = '>';
        byte_at[len + 2] = b;
        h1[i] = a1;
        h2[i] = a2;
        uint32_t h = FNV32_OFFSET;
        for (Py_ssize_t k = byte_at[1]; k < byte_at[len + 1]; k++) h = fnv_byte(h, bytes[k]);
        hashes[i] = h;
        const Py_ssize_t first = out;
        ids[out++] = (int64_t)(fnv_byte(h, 0xFF) % buckets);
        if (ngrams)
            for (Py_ssize_t at = 0; at < chars; at++) {
                uint32_t g = FNV32_OFFSET;
                for (Py_ssize_t size = 1; size <= maxn && at + size <= chars; size++) {
                    for (Py_ssize_t k = byte_at[at + size - 1]; k < byte_at[at + size]; k++)
                        g = fnv_byte(g, bytes[k]);
                    if (size < minn) continue;
                    if (size == 1 && (at == 0 || at + 1 == chars)) continue;
                    ids[out++] = (int64_t)(g % buckets);
                }
            }
        lengths[i] = out - first;
    }
    result = PyTuple_Pack(5, arrays[0], arrays[1], arrays[2], arrays[3], arrays[4]);
done:
    PyMem_Free(bytes);
    PyMem_Free(byte_at);
    for (int i = 0; i < 5; i++) Py_XDECREF(arrays[i]);
    return result;
}

static inline Py_ssize_t home_slot(uint64_t h1, int bits) {
    return (Py_ssize_t)((h1 * GOLDEN) >> (64 - bits));
}

/* The hash table and keys that find and place take: key1, key2, value (2^bits slots each;
 * writable for place), h1, h2 and, for place, values (one per key). */
static int table_views(const char *fn, PyObject *const *objs, Py_buffer *v, int n_views,
                       int writable, int bits, int *got) {
    static const char *names[6] = {"key1", "key2", "value", "h1", "h2", "values"};
    for (*got = 0; *got < n_views; (*got)++)
        if (get_buffer(objs[*got], &v[*got], writable && *got < 3, 8, names[*got]) < 0)
            return -1;
    const Py_ssize_t slots = v[2].len / 8;
    int ok = bits >= 1 && bits <= 62 && slots == ((Py_ssize_t)1 << bits) &&
             v[0].len == v[2].len && v[1].len == v[2].len;
    for (int i = 4; i < n_views; i++) ok &= v[i].len == v[3].len;
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "%s: table or key sizes do not match", fn);
        return -1;
    }
    return 0;
}

/* find(key1, key2, value, bits, h1, h2) -> int64 word index of each key, -1 if absent
 * (linear probing from featurize._home_slot, as SubwordTable.find). */
static PyObject *py_find(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *objs[5];
    int bits;
    if (!PyArg_ParseTuple(args, "OOOiOO", &objs[0], &objs[1], &objs[2], &bits, &objs[3],
                          &objs[4]))
        return NULL;
    Py_buffer v[5];
    int got = 0;
    PyObject *result = NULL;
    if (table_views("find", objs, v, 5, 0, bits, &got) < 0) goto done;
    const Py_ssize_t slots = v[2].len / 8, n = v[3].len / 8;
    int64_t *out;
    if (!(result = new_array(n, 8, (void **)&out))) goto done;
    const uint64_t *key1 = v[0].buf, *key2 = v[1].buf, *a = v[3].buf, *b = v[4].buf;
    const int64_t *value = v[2].buf;
    const Py_ssize_t mask = slots - 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t slot = home_slot(a[i], bits);
        int64_t found = -1;
        for (Py_ssize_t probes = 0; probes < slots && value[slot] >= 0; probes++) {
            if (key1[slot] == a[i] && key2[slot] == b[i]) {
                found = value[slot];
                break;
            }
            slot = (slot + 1) & mask;
        }
        out[i] = found;
    }
done:
    for (int i = 0; i < got; i++) PyBuffer_Release(&v[i]);
    return result;
}

/* place(key1, key2, value, bits, h1, h2, values): insert new, distinct keys in place
 * (the table must have room: SubwordTable keeps its load under 1/2). */
static PyObject *py_place(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *objs[6];
    int bits;
    if (!PyArg_ParseTuple(args, "OOOiOOO", &objs[0], &objs[1], &objs[2], &bits, &objs[3],
                          &objs[4], &objs[5]))
        return NULL;
    Py_buffer v[6];
    int got = 0;
    PyObject *result = NULL;
    if (table_views("place", objs, v, 6, 1, bits, &got) < 0) goto done;
    const Py_ssize_t slots = v[2].len / 8, n = v[3].len / 8;
    uint64_t *key1 = v[0].buf, *key2 = v[1].buf;
    int64_t *value = v[2].buf;
    const uint64_t *a = v[3].buf, *b = v[4].buf;
    const int64_t *values = v[5].buf;
    Py_ssize_t free_slots = 0;
    for (Py_ssize_t s = 0; s < slots; s++) free_slots += value[s] < 0;
    if (free_slots <= n) {
        PyErr_SetString(PyExc_ValueError, "place: the table has no room for these keys");
        goto done;
    }
    const Py_ssize_t mask = slots - 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t slot = home_slot(a[i], bits);
        while (value[slot] >= 0) slot = (slot + 1) & mask;
        key1[slot] = a[i];
        key2[slot] = b[i];
        value[slot] = values[i];
    }
    result = Py_NewRef(Py_None);
done:
    for (int i = 0; i < got; i++) PyBuffer_Release(&v[i]);
    return result;
}

/* plan_pairs(ids, lengths, sizes, n_rows) -> (rows, docs, weights, row_starts, pair_edges,
 *                                             row_edges, fwd_rows, fwd_weights, doc_offsets)
 *
 * A chunk of whole batches: document d's ids (int64, each in [0, n_rows)) follow each other
 * in ``ids`` (``lengths[d]`` of them); batch b holds the next ``sizes[b]`` documents. Out,
 * the batches' distinct (row, document) pairs sorted by (batch, row, document), as
 * torch_models._chunk_pairs' numpy path sorts them: their rows (int64), documents within
 * the batch (int32) and weights (occurrences / document length, float32); the first pair
 * of each distinct row of a batch (int32, chunk-wide), and per batch the first pair and
 * first distinct row (int64, n_batches + 1 each). Then the same pairs by document (rows
 * ascending within one): rows (int32), weights, and each document's first (int32,
 * n_docs + 1). A counting sort by row, then one by document: no comparison sort. */
static PyObject *py_plan_pairs(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *objs[3];
    Py_ssize_t n_rows;
    if (!PyArg_ParseTuple(args, "OOOn", &objs[0], &objs[1], &objs[2], &n_rows)) return NULL;
    static const char *names[3] = {"ids", "lengths", "sizes"};
    Py_buffer v[3];
    int got = 0;
    PyObject *result = NULL, *out[9] = {NULL};
    int64_t *count = NULL, *entries = NULL, *touched = NULL;
    int32_t *doc_fill = NULL;
    for (; got < 3; got++)
        if (get_buffer(objs[got], &v[got], 0, 8, names[got]) < 0) goto done;
    const int64_t *ids = v[0].buf, *lengths = v[1].buf, *sizes = v[2].buf;
    const Py_ssize_t n_ids = v[0].len / 8, n_docs = v[1].len / 8, n_batches = v[2].len / 8;
    if (n_rows < 1 || n_rows > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "plan_pairs: n_rows out of range");
        goto done;
    }
    Py_ssize_t total = 0, docs_total = 0;
    int valid = 1;
    for (Py_ssize_t d = 0; d < n_docs; d++) {
        valid &= lengths[d] >= 0;
        total += lengths[d];
    }
    for (Py_ssize_t b = 0; b < n_batches; b++) {
        valid &= sizes[b] >= 0;
        docs_total += sizes[b];
    }
    if (!valid || total != n_ids || docs_total != n_docs) {
        PyErr_SetString(PyExc_ValueError, "plan_pairs: lengths, sizes and ids do not match");
        goto done;
    }
    for (Py_ssize_t i = 0; i < n_ids; i++)
        if (ids[i] < 0 || ids[i] >= n_rows) {
            PyErr_Format(PyExc_ValueError, "plan_pairs: id %lld outside [0, %zd)",
                         (long long)ids[i], n_rows);
            goto done;
        }
    /* Distinct pairs are at most the ids. */
    int64_t *rows, *pair_edges, *row_edges;
    int32_t *docs, *row_starts, *fwd_rows, *doc_offsets;
    float *weights, *fwd_weights;
    if (!(out[0] = new_array(n_ids, 8, (void **)&rows)) ||
        !(out[1] = new_array(n_ids, 4, (void **)&docs)) ||
        !(out[2] = new_array(n_ids, 4, (void **)&weights)) ||
        !(out[3] = new_array(n_ids, 4, (void **)&row_starts)) ||
        !(out[4] = new_array(n_batches + 1, 8, (void **)&pair_edges)) ||
        !(out[5] = new_array(n_batches + 1, 8, (void **)&row_edges)) ||
        !(out[6] = new_array(n_ids, 4, (void **)&fwd_rows)) ||
        !(out[7] = new_array(n_ids, 4, (void **)&fwd_weights)) ||
        !(out[8] = new_array(n_docs + 1, 4, (void **)&doc_offsets)))
        goto done;
    count = PyMem_Calloc(n_rows + 1, sizeof(int64_t));
    entries = PyMem_Malloc((n_ids + 1) * sizeof(int64_t));
    touched = PyMem_Malloc((n_ids + 1) * sizeof(int64_t));
    doc_fill = PyMem_Malloc((n_docs + 1) * sizeof(int32_t));
    if (!count || !entries || !touched || !doc_fill) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t id_at = 0, doc_at = 0, n_pairs = 0, n_distinct = 0;
    for (Py_ssize_t b = 0; b < n_batches; b++) {
        pair_edges[b] = n_pairs;
        row_edges[b] = n_distinct;
        const Py_ssize_t d0 = doc_at, d1 = doc_at + sizes[b], i0 = id_at;
        /* 1. Occurrences per row, and the rows touched. */
        Py_ssize_t n_touched = 0;
        for (Py_ssize_t d = d0; d < d1; d++)
            for (Py_ssize_t k = 0; k < lengths[d]; k++, id_at++) {
                const int64_t r = ids[id_at];
                if (count[r]++ == 0) touched[n_touched++] = r;
            }
        /* 2. Rows in ascending order: a scan of the table when that is cheaper than a sort. */
        if (n_touched * 16 >= n_rows) {
            Py_ssize_t t = 0;
            for (Py_ssize_t r = 0; r < n_rows; r++)
                if (count[r]) touched[t++] = r;
        } else {
            /* LSD radix sort of the touched rows, 11 bits a pass, via entries as scratch. */
            int64_t *a = touched, *tmp = entries;
            for (int shift = 0; shift < 32; shift += 11) {
                if (shift > 0 && (n_rows - 1) >> shift == 0) break;
                Py_ssize_t bucket[2049] = {0};
                for (Py_ssize_t t = 0; t < n_touched; t++) bucket[((a[t] >> shift) & 2047) + 1]++;
                for (int k = 0; k < 2048; k++) bucket[k + 1] += bucket[k];
                for (Py_ssize_t t = 0; t < n_touched; t++) tmp[bucket[(a[t] >> shift) & 2047]++] = a[t];
                int64_t *swap = a;
                a = tmp;
                tmp = swap;
            }
            if (a != touched) memcpy(touched, a, n_touched * sizeof(int64_t));
        }
        /* 3. Each row's slot among the batch's occurrences (count becomes its start). */
        int64_t start = 0;
        for (Py_ssize_t t = 0; t < n_touched; t++) {
            const int64_t r = touched[t], c = count[r];
            count[r] = start;
            start += c;
        }
        /* 4. Occurrences placed by row, documents ascending within a row (stable). */
        id_at = i0;
        for (Py_ssize_t d = d0; d < d1; d++)
            for (Py_ssize_t k = 0; k < lengths[d]; k++, id_at++)
                entries[count[ids[id_at]]++] = d - d0;
        /* 5. Runs of equal (row, document): the distinct pairs with their counts. */
        Py_ssize_t e = 0;
        for (Py_ssize_t t = 0; t < n_touched; t++) {
            const int64_t r = touched[t], end = count[r];
            row_starts[n_distinct++] = (int32_t)n_pairs;
            while (e < end) {
                const int64_t doc = entries[e];
                Py_ssize_t run = 0;
                while (e < end && entries[e] == doc) e++, run++;
                rows[n_pairs] = r;
                docs[n_pairs] = (int32_t)doc;
                weights[n_pairs] = (float)run / (float)lengths[d0 + doc];
                n_pairs++;
            }
            count[r] = 0;
        }
        doc_at = d1;
    }
    pair_edges[n_batches] = n_pairs;
    row_edges[n_batches] = n_distinct;
    /* 6. The same pairs by document (chunk-wide), rows ascending within one: a counting
     * sort on each pair's document in the chunk (its batch's first document + its own,
     * kept in entries). */
    for (Py_ssize_t d = 0; d <= n_docs; d++) doc_fill[d] = 0;
    for (Py_ssize_t b = 0, d0 = 0; b < n_batches; d0 += sizes[b], b++)
        for (Py_ssize_t pair = pair_edges[b]; pair < pair_edges[b + 1]; pair++) {
            entries[pair] = d0 + docs[pair];
            doc_fill[entries[pair] + 1]++;
        }
    for (Py_ssize_t d = 0; d < n_docs; d++) doc_fill[d + 1] += doc_fill[d];
    for (Py_ssize_t d = 0; d <= n_docs; d++) doc_offsets[d] = doc_fill[d];
    for (Py_ssize_t pair = 0; pair < n_pairs; pair++) {
        const int32_t at = doc_fill[entries[pair]]++;
        fwd_rows[at] = (int32_t)rows[pair];
        fwd_weights[at] = weights[pair];
    }
    Py_END_ALLOW_THREADS
    {
        const Py_ssize_t n_pairs_all = pair_edges[n_batches], n_rows_all = row_edges[n_batches];
        if (PyByteArray_Resize(out[0], n_pairs_all * 8) < 0 ||
            PyByteArray_Resize(out[1], n_pairs_all * 4) < 0 ||
            PyByteArray_Resize(out[2], n_pairs_all * 4) < 0 ||
            PyByteArray_Resize(out[3], n_rows_all * 4) < 0 ||
            PyByteArray_Resize(out[6], n_pairs_all * 4) < 0 ||
            PyByteArray_Resize(out[7], n_pairs_all * 4) < 0)
            goto done;
    }
    result = PyTuple_New(9);
    if (result != NULL)
        for (int i = 0; i < 9; i++) PyTuple_SET_ITEM(result, i, Py_NewRef(out[i]));
done:
    PyMem_Free(count);
    PyMem_Free(entries);
    PyMem_Free(touched);
    PyMem_Free(doc_fill);
    for (int i = 0; i < 9; i++) Py_XDECREF(out[i]);
    for (int i = 0; i < got; i++) PyBuffer_Release(&v[i]);
    return result;
}

/* fill_uniform(out, a, b, c, counter, scale): ``out`` (float32, writable) filled with
 * ((u >> 8) * 2^-24 - 0.5) * scale for successive 32-bit outputs u of numpy's SFC64 generator
 * from state (a, b, c, counter), exactly what ``Generator(SFC64).random(dtype=float32)``
 * followed by numpy's float32 subtract and multiply gives (torch_models.uniform_table): one
 * pass over the table instead of three. Each 64-bit output gives two floats, its low half
 * first (numpy's sfc64_next32); a fresh generator holds no buffered half. */
static PyObject *py_fill_uniform(PyObject *self, PyObject *args) {
    PyObject *obj;
    unsigned long long a, b, c, counter;
    float scale;
    if (!PyArg_ParseTuple(args, "OKKKKf", &obj, &a, &b, &c, &counter, &scale)) return NULL;
    Py_buffer view;
    if (get_buffer(obj, &view, 1, sizeof(float), "out") < 0) return NULL;
    float *out = (float *)view.buf;
    const Py_ssize_t n = view.len / (Py_ssize_t)sizeof(float);
    uint64_t s0 = a, s1 = b, s2 = c, s3 = counter;
    const float unit = 1.0f / 16777216.0f;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i += 2) {
        const uint64_t tmp = s0 + s1 + s3++;
        s0 = s1 ^ (s1 >> 11);
        s1 = s2 + (s2 << 3);
        s2 = ((s2 << 24) | (s2 >> 40)) + tmp;
        out[i] = ((float)((uint32_t)tmp >> 8) * unit - 0.5f) * scale;
        if (i + 1 < n) out[i + 1] = ((float)((uint32_t)(tmp >> 32) >> 8) * unit - 0.5f) * scale;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"fill_uniform", py_fill_uniform, METH_VARARGS,
     "fill_uniform(out, a, b, c, counter, scale): a float32 buffer filled as numpy's SFC64 "
     "random(dtype=float32) from that state, minus 0.5, times scale."},

    {"scan", py_scan, METH_VARARGS,
     "scan(text, lengths, max_tokens, mode=0) -> (starts, ends, per_doc, h1, h2): the tokens of "
     "documents joined by one non-word character, as bytearrays (int64 / uint64)."},
    {"subwords", py_subwords, METH_VARARGS,
     "subwords(words, minn, maxn, buckets) -> (ids, lengths, word_hashes, h1, h2): each "
     "word's own id then its char n-gram ids, fastText's hashing."},
    {"find", py_find, METH_VARARGS,
     "find(key1, key2, value, bits, h1, h2) -> int64 value of each key, -1 if absent."},
    {"plan_pairs", py_plan_pairs, METH_VARARGS,
     "plan_pairs(ids, lengths, sizes, n_rows): a chunk of batches' distinct (row, document) "
     "pairs, by row and by document (see torch_models._chunk_pairs)."},
    {"place", py_place, METH_VARARGS,
     "place(key1, key2, value, bits, h1, h2, values): insert new distinct keys in place."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernels", "The bundled models' hot loops (C).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }

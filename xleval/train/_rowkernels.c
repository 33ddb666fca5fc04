/* Fused row-sparse optimiser step for xleval's training path (see xleval/training.py).
 *
 * A bag-of-embeddings table gradient arrives factored: distinct row rows[i] gets
 *     g_i = sum over its pairs p of pair_weights[p] * grad_hidden[pair_docs[p]]
 * (pairs of row i: row_offsets[i] .. row_offsets[i+1]). In torch that is four passes over
 * a [rows, dim] temporary (embedding_bag, norm, scale, index_add_); here each row's
 * gradient is summed in registers and applied at once, so the table row is read and
 * written once and no temporary exists: ~1.8x faster steps, and less cache pressure when
 * several workers train side by side (benchmarks/README.md).
 *
 * Arithmetic is written with GCC/Clang vector extensions in a fixed order and without
 * FMA contraction, so every instruction-set clone gives bit-identical results.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(__clang__) && \
    defined(__linux__)
#define XL_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define XL_CLONES
#endif

#define MODE_SGD 0
#define MODE_ROWWISE_ADAGRAD 1
#define MODE_ADAGRAD 2
#define PREFETCH_ROWS 8

typedef float v8 __attribute__((vector_size(32)));

/* Unaligned 8-float load / store (rows are 4-byte aligned only). Eight floats are one AVX
 * register: wider vectors made GCC move halves through the stack on AVX2 machines, where
 * the store-to-load forwarding stalled the sums (3-5x slower steps on an AMD EPYC). */
#define LOAD8(dst, src) memcpy(&(dst), (src), sizeof(v8))
#define STORE8(dst, src) memcpy((dst), &(src), sizeof(v8))

/* One row's gradient, g[e] = sum over its pairs p of weight[p] * grad_hidden[doc[p], e],
 * each element summed in pair order (the same bits at any vector width). */
static inline __attribute__((always_inline)) void row_gradient(
    float *restrict g, const int64_t dim, int64_t p0, int64_t p1,
    const int32_t *restrict pair_docs, const float *restrict pair_weights,
    const float *restrict grad_hidden) {
    const int64_t n8 = dim / 8;
    v8 x;
    if (dim == 64) {  /* the default width: the sums stay in eight registers */
        v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
        for (int64_t p = p0; p < p1; p++) {
            const float w = pair_weights[p];
            const float *h = grad_hidden + (int64_t)pair_docs[p] * 64;
            LOAD8(x, h + 0);  a0 += w * x;
            LOAD8(x, h + 8);  a1 += w * x;
            LOAD8(x, h + 16); a2 += w * x;
            LOAD8(x, h + 24); a3 += w * x;
            LOAD8(x, h + 32); a4 += w * x;
            LOAD8(x, h + 40); a5 += w * x;
            LOAD8(x, h + 48); a6 += w * x;
            LOAD8(x, h + 56); a7 += w * x;
        }
        STORE8(g + 0, a0);  STORE8(g + 8, a1);  STORE8(g + 16, a2); STORE8(g + 24, a3);
        STORE8(g + 32, a4); STORE8(g + 40, a5); STORE8(g + 48, a6); STORE8(g + 56, a7);
        return;
    }
    v8 y;
    for (int64_t e = 0; e < dim; e++) g[e] = 0.0f;
    for (int64_t p = p0; p < p1; p++) {
        const float w = pair_weights[p];
        const float *h = grad_hidden + (int64_t)pair_docs[p] * dim;
        for (int64_t j = 0; j < n8; j++) {
            LOAD8(x, h + 8 * j);
            LOAD8(y, g + 8 * j);
            y += w * x;
            STORE8(g + 8 * j, y);
        }
        for (int64_t e = 8 * n8; e < dim; e++) g[e] += w * h[e];
    }
}

/* The step on each distinct row: its gradient summed from its pairs, then
 *   SGD (mode 0, grad_hidden pre-multiplied by -lr):  w += g
 *   row-wise Adagrad (mode 1):  s_r += mean(g^2);  w -= lr g / (sqrt(s_r) + eps)
 *   Adagrad (mode 2):           s   += g^2;        w -= lr g / (sqrt(s) + eps)
 * mean(g^2) sums the squares in 16 lanes (lane k: elements k, k + 16, ... of the whole
 * 16-element groups, in order), then the lanes 0..15, then the elements after the last
 * whole group one by one: the order every build of this file keeps. */
static inline __attribute__((always_inline)) void apply_rows_body(
    int mode, float *table, const int64_t dim, float *total, const int64_t *rows,
    int64_t n_rows, const int32_t *row_offsets, int64_t n_pairs, const int32_t *pair_docs,
    const float *pair_weights, const float *grad_hidden, float lr, float eps, float *g) {
    const int64_t n8 = dim / 8, n16 = dim / 16;
    v8 x;
    for (int64_t r = 0; r < n_rows; r++) {
        if (r + PREFETCH_ROWS < n_rows) {
            const char *next = (const char *)(table + rows[r + PREFETCH_ROWS] * dim);
            for (int64_t b = 0; b < dim * (int64_t)sizeof(float); b += 64)
                __builtin_prefetch(next + b, 1, 3);
        }
        const int64_t p0 = row_offsets[r];
        const int64_t p1 = r + 1 < n_rows ? row_offsets[r + 1] : n_pairs;
        row_gradient(g, dim, p0, p1, pair_docs, pair_weights, grad_hidden);
        const int64_t row = rows[r];
        float *t = table + row * dim;
        if (mode == MODE_SGD) {
            for (int64_t j = 0; j < n8; j++) {
                v8 v;
                LOAD8(x, t + 8 * j);
                LOAD8(v, g + 8 * j);
                x += v;
                STORE8(t + 8 * j, x);
            }
            for (int64_t e = 8 * n8; e < dim; e++) t[e] += g[e];
        } else if (mode == MODE_ROWWISE_ADAGRAD) {
            v8 lo = {0}, hi = {0}, v;
            for (int64_t j = 0; j < n16; j++) {
                LOAD8(v, g + 16 * j);
                lo += v * v;
                LOAD8(v, g + 16 * j + 8);
                hi += v * v;
            }
            float sum = 0.0f;
            for (int k = 0; k < 8; k++) sum += lo[k];
            for (int k = 0; k < 8; k++) sum += hi[k];
            for (int64_t e = 16 * n16; e < dim; e++) sum += g[e] * g[e];
            total[row] += sum / (float)dim;
            const float scale = (1.0f / (sqrtf(total[row]) + eps)) * (-lr);
            for (int64_t j = 0; j < n8; j++) {
                LOAD8(x, t + 8 * j);
                LOAD8(v, g + 8 * j);
                x += v * scale;
                STORE8(t + 8 * j, x);
            }
            for (int64_t e = 8 * n8; e < dim; e++) t[e] += g[e] * scale;
        } else {  /* MODE_ADAGRAD: one accumulator per weight */
            float *s = total + row * dim;
            for (int64_t e = 0; e < dim; e++) {
                s[e] += g[e] * g[e];
                t[e] += (g[e] / (sqrtf(s[e]) + eps)) * (-lr);
            }
        }
    }
}

XL_CLONES
static void apply_rows(int mode, float *table, int64_t dim, float *total, const int64_t *rows,
                       int64_t n_rows, const int32_t *row_offsets, int64_t n_pairs,
                       const int32_t *pair_docs, const float *pair_weights,
                       const float *grad_hidden, float lr, float eps, float *g) {
    if (dim == 64)  /* the default width, its loops unrolled */
        apply_rows_body(mode, table, 64, total, rows, n_rows, row_offsets, n_pairs, pair_docs,
                        pair_weights, grad_hidden, lr, eps, g);
    else
        apply_rows_body(mode, table, dim, total, rows, n_rows, row_offsets, n_pairs, pair_docs,
                        pair_weights, grad_hidden, lr, eps, g);
}

/* A C-contiguous buffer of items of `format` (one of "f", "i", "q"); TypeError otherwise. */
static int get_buffer(PyObject *obj, Py_buffer *view, int writable, char format,
                      const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) return -1;
    const char *f = view->format ? view->format : "B";
    if (*f == '<' || *f == '=' || *f == '@') f++;
    char got = f[0];
    if (got == 'l' && view->itemsize == 8) got = 'q';
    int size = format == 'f' ? 4 : format == 'i' ? 4 : 8;
    if (got != format || f[1] != '\0' || view->itemsize != size) {
        PyErr_Format(PyExc_TypeError, "%s: expected a buffer of format '%c' (%d bytes), got '%s'",
                     name, format, size, view->format ? view->format : "B");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *py_apply_rows(PyObject *self, PyObject *args) {
    (void)self;
    int mode;
    Py_ssize_t dim;
    float lr, eps;
    PyObject *objs[7];
    if (!PyArg_ParseTuple(args, "inOOOOOOOff", &mode, &dim, &objs[0], &objs[1], &objs[2],
                          &objs[3], &objs[4], &objs[5], &objs[6], &lr, &eps))
        return NULL;
    static const char *names[7] = {"table", "total", "rows", "row_offsets",
                                   "pair_docs", "pair_weights", "grad_hidden"};
    static const char formats[7] = {'f', 'f', 'q', 'i', 'i', 'f', 'f'};
    Py_buffer views[7];
    int got = 0;
    PyObject *result = NULL;
    for (; got < 7; got++)
        if (get_buffer(objs[got], &views[got], got < 2, formats[got], names[got]) < 0) goto done;
    if (mode < MODE_SGD || mode > MODE_ADAGRAD || dim < 1) {
        PyErr_Format(PyExc_ValueError, "mode must be 0-2 and dim >= 1 (got %d, %zd)", mode, dim);
        goto done;
    }
    const int64_t table_rows = views[0].len / 4 / dim;
    const int64_t n_rows = views[2].len / 8, n_pairs = views[4].len / 4;
    const int64_t n_docs = views[6].len / 4 / dim;
    const int64_t *rows = views[2].buf;
    const int32_t *row_offsets = views[3].buf, *pair_docs = views[4].buf;
    const int64_t need_total = mode == MODE_SGD ? 0 : mode == MODE_ADAGRAD ? table_rows * dim
                                                                           : table_rows;
    if (views[0].len != table_rows * dim * 4 || views[6].len != n_docs * dim * 4 ||
        views[3].len / 4 != n_rows || views[5].len / 4 != n_pairs ||
        views[1].len / 4 < need_total) {
        PyErr_SetString(PyExc_ValueError, "apply_rows: buffer sizes do not match");
        goto done;
    }
    /* Every index checked before anything is written. */
    for (int64_t r = 0; r < n_rows; r++) {
        const int64_t end = r + 1 < n_rows ? row_offsets[r + 1] : n_pairs;
        if (rows[r] < 0 || rows[r] >= table_rows || row_offsets[r] < 0 ||
            row_offsets[r] > end || end > n_pairs) {
            PyErr_Format(PyExc_ValueError, "apply_rows: row %lld or its pairs out of range",
                         (long long)r);
            goto done;
        }
    }
    if (n_rows > 0 && row_offsets[0] != 0) {
        PyErr_SetString(PyExc_ValueError, "apply_rows: row_offsets must start at 0");
        goto done;
    }
    for (int64_t p = 0; p < n_pairs; p++) {
        if (pair_docs[p] < 0 || pair_docs[p] >= n_docs) {
            PyErr_Format(PyExc_ValueError, "apply_rows: pair %lld names document %d of %lld",
                         (long long)p, pair_docs[p], (long long)n_docs);
            goto done;
        }
    }
    if (dim > 65536) {
        PyErr_Format(PyExc_ValueError, "apply_rows: dim %zd above 65536", dim);
        goto done;
    }
    float *g = PyMem_Malloc(dim * sizeof(float));  /* one row's gradient, in L1 */
    if (g == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    apply_rows(mode, views[0].buf, dim, views[1].buf, rows, n_rows, row_offsets, n_pairs,
               pair_docs, views[5].buf, views[6].buf, lr, eps, g);
    Py_END_ALLOW_THREADS
    PyMem_Free(g);
    result = Py_NewRef(Py_None);
done:
    for (int i = 0; i < got; i++) PyBuffer_Release(&views[i]);
    return result;
}

static PyMethodDef methods[] = {
    {"apply_rows", py_apply_rows, METH_VARARGS,
     "apply_rows(mode, dim, table, total, rows, row_offsets, pair_docs, pair_weights, "
     "grad_hidden, lr, eps): one fused optimiser step on the distinct rows (mode 0 sgd, "
     "1 rowwise-adagrad, 2 adagrad); buffers C-contiguous float32 / int64 rows / int32."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rowkernels", "Fused row-sparse optimiser steps (C).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__rowkernels(void) { return PyModule_Create(&module); }

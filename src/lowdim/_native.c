/* Fastfood's CPU kernels for float32: the fast Walsh-Hadamard transform in two passes over
 * memory, and the scaled permutation G Pi (and its transpose) in one.
 *
 * The transform.
 * H_n for n = R * C (both powers of two) is H_R (x) H_C, so with x read as a row-major R x C
 * array, H_n x applies H_C along every row and then H_R along every column. A row of C <= 2^15
 * floats (128 kB) stays in the L2 cache while all of its log2(C) butterfly stages run; the
 * columns are then transformed 16 at a time (one 64-byte line of each row), so their log2(R)
 * stages also run in cache. Each element is read and written about twice from memory, against
 * once per stage for plain butterflies and once per factor for lowdim's blocked matrix products
 * (which also do 32 multiply-adds per element per factor where butterflies do one addition).
 *
 * The butterflies are unnormalised: transforming twice gives n x. Work is split over `threads`
 * POSIX threads (rows, then column blocks); the GIL is released meanwhile. Called from
 * lowdim.bases.hadamard, which checks the arguments; this file holds no Python logic.
 *
 * The permutation. y = G Pi x reads x at random places: one pass with every lookup a likely
 * cache miss, which several threads overlap; torch needs a gather and then a multiply (and for
 * the transpose a scatter, with int64 indices where lowdim stores int32). Called from
 * lowdim.bases.fastfood.
 *
 * The signed scatter. Random bases descent's structured directions (lowdim.bases.
 * redrawn_hadamard) place n signed entries at given positions of a longer vector and read them
 * back: one pass each, the random signs read as bits of 32-bit words (one word per 32
 * entries), where torch would unpack the bits, multiply, and index in separate passes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ROW_BITS 15
#define COLUMNS_AT_ONCE 16
#define L1_FLOATS 2048 /* 8 kB */
#define MAX_THREADS 64
#define PREFETCH_AHEAD 32

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VECTOR_CLONES
#endif

/* Stages h and 2h of H on x, as one radix-4 butterfly per four elements: x holds `blocks`
 * groups of 4h values spaced `step` floats apart, each group's four quarters h values long.
 * One pass over memory for two stages. */
VECTOR_CLONES static void radix4(float *x, int64_t n, int64_t h) {
    for (int64_t i = 0; i < n; i += 4 * h) {
        float *p = x + i, *q = p + h, *r = q + h, *s = r + h;
        for (int64_t j = 0; j < h; j++) {
            float a = p[j], b = q[j], c = r[j], d = s[j];
            float ab = a + b, amb = a - b, cd = c + d, cmd = c - d;
            p[j] = ab + cd, q[j] = amb + cmd, r[j] = ab - cd, s[j] = amb - cmd;
        }
    }
}

/* Stage h alone. */
VECTOR_CLONES static void radix2(float *x, int64_t n, int64_t h) {
    for (int64_t i = 0; i < n; i += 2 * h) {
        float *p = x + i, *q = p + h;
        for (int64_t j = 0; j < h; j++) {
            float a = p[j], b = q[j];
            p[j] = a + b, q[j] = a - b;
        }
    }
}

/* Stages h = from, 2 from, ... < to of H on x (length n), two at a time. */
static void stages(float *x, int64_t n, int64_t from, int64_t to) {
    int64_t h = from;
    for (; 4 * h <= to; h *= 4) radix4(x, n, h);
    if (h < to) radix2(x, n, h);
}

/* Stages h = 1, 2, 4 (H_8 on each group of 8). Butterflies this short do not fill a vector
 * register, so each group is one register v and stage h is v * sign + v[i ^ h]: the sign is -1
 * where bit h of the index is set (x_i' = x_{i^h} - x_i there, x_i + x_{i^h} elsewhere). */
#if defined(__GNUC__) && !defined(__clang__)
typedef float v8 __attribute__((vector_size(32)));
typedef int i8 __attribute__((vector_size(32)));

VECTOR_CLONES static void first_stages(float *x, int64_t n) {
    const v8 s1 = {1, -1, 1, -1, 1, -1, 1, -1}, s2 = {1, 1, -1, -1, 1, 1, -1, -1},
             s4 = {1, 1, 1, 1, -1, -1, -1, -1};
    const i8 p1 = {1, 0, 3, 2, 5, 4, 7, 6}, p2 = {2, 3, 0, 1, 6, 7, 4, 5},
             p4 = {4, 5, 6, 7, 0, 1, 2, 3};
    for (int64_t i = 0; i < n; i += 8) {
        v8 v;
        memcpy(&v, x + i, sizeof v);
        v = v * s1 + __builtin_shuffle(v, p1);
        v = v * s2 + __builtin_shuffle(v, p2);
        v = v * s4 + __builtin_shuffle(v, p4);
        memcpy(x + i, &v, sizeof v);
    }
}
#else
static void first_stages(float *x, int64_t n) { stages(x, n, 1, 8); }
#endif

/* All stages of H_n on a contiguous vector of n <= 2^MAX_ROW_BITS floats: the stages inside
 * each L1-sized block first, then the rest over the whole vector (in L2). */
static void transform_row(float *x, int64_t n) {
    if (n < 8) {
        stages(x, n, 1, n);
        return;
    }
    int64_t block = n < L1_FLOATS ? n : L1_FLOATS;
    for (int64_t i = 0; i < n; i += block) {
        first_stages(x + i, block);
        stages(x + i, block, 8, block);
    }
    stages(x, n, block, n);
}

/* All stages of H_rows down the columns [0, COLUMNS_AT_ONCE) of x read as rows x stride,
 * through a contiguous copy (rows lines of 64 bytes): read in place, power-of-two strides
 * would map every line to the same cache sets. Stage h of the columns is stage 16 h of the
 * copy read as one vector. */
static void transform_columns(float *x, int64_t rows, int64_t stride, float *scratch) {
    for (int64_t j = 0; j < rows; j++)
        memcpy(scratch + j * COLUMNS_AT_ONCE, x + j * stride, COLUMNS_AT_ONCE * sizeof(float));
    stages(scratch, rows * COLUMNS_AT_ONCE, COLUMNS_AT_ONCE, rows * COLUMNS_AT_ONCE);
    for (int64_t j = 0; j < rows; j++)
        memcpy(x + j * stride, scratch + j * COLUMNS_AT_ONCE, COLUMNS_AT_ONCE * sizeof(float));
}

typedef struct {
    const float *src, *scale;
    const int32_t *perm;
    float *dst;
    int64_t first, last;
    int inverse;
} Permute;

/* inverse = 0: dst[i] = scale[i] * src[perm[i]]; 1: dst[perm[i]] = scale[i] * src[i]. */
static void *permute_range(void *arg) {
    Permute *w = (Permute *)arg;
    const float *src = w->src, *scale = w->scale;
    const int32_t *perm = w->perm;
    float *dst = w->dst;
    /* Each lookup is a cache (and TLB) miss: asking for the one PREFETCH_AHEAD places on
     * keeps that many in flight instead of waiting for each in turn. */
    int64_t last = w->last, ahead = last - PREFETCH_AHEAD;
    if (w->inverse) {
        for (int64_t i = w->first; i < last; i++) {
            if (i < ahead) __builtin_prefetch(dst + perm[i + PREFETCH_AHEAD], 1, 0);
            dst[perm[i]] = scale[i] * src[i];
        }
    } else {
        for (int64_t i = w->first; i < last; i++) {
            if (i < ahead) __builtin_prefetch(src + perm[i + PREFETCH_AHEAD], 0, 0);
            dst[i] = scale[i] * src[perm[i]];
        }
    }
    return NULL;
}

typedef struct {
    const float *src;
    float *dst;
    const int32_t *index; /* NULL: entry i itself */
    const uint32_t *bits; /* NULL: no signs */
    int64_t first, last;
    int inverse;
} Scatter;

/* x with its sign bit flipped where `flip` holds it: no branch, since random signs would
 * mispredict half of them (a branch here took 9x as long). */
static inline float flip_sign(float x, uint32_t flip) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u ^= flip;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* inverse = 0: dst[i] = s_i src[index[i]]; 1: dst[index[i]] = s_i src[i]; s_i = -1 where bit
 * i of the words is set, else 1. */
static void *scatter_range(void *arg) {
    Scatter *w = (Scatter *)arg;
    const float *src = w->src;
    float *dst = w->dst;
    const int32_t *index = w->index;
    const uint32_t *bits = w->bits;
    int64_t first = w->first, last = w->last;
    /* One loop per case, so that none tests the case per entry. */
    if (index && bits && w->inverse) {
        for (int64_t i = first; i < last; i++)
            dst[index[i]] = flip_sign(src[i], ((bits[i >> 5] >> (i & 31)) & 1u) << 31);
    } else if (index && bits) {
        for (int64_t i = first; i < last; i++)
            dst[i] = flip_sign(src[index[i]], ((bits[i >> 5] >> (i & 31)) & 1u) << 31);
    } else if (bits) {
        for (int64_t i = first; i < last; i++)
            dst[i] = flip_sign(src[i], ((bits[i >> 5] >> (i & 31)) & 1u) << 31);
    } else if (index && w->inverse) {
        for (int64_t i = first; i < last; i++) dst[index[i]] = src[i];
    } else if (index) {
        for (int64_t i = first; i < last; i++) dst[i] = src[index[i]];
    } else {
        memcpy(dst + first, src + first, (size_t)(last - first) * sizeof(float));
    }
    return NULL;
}

typedef struct {
    const float *src;
    float *dst;
    int64_t vectors, length, row, rows; /* each vector: rows x row */
    int64_t first, last;                /* this thread's tasks */
    int pass;                           /* 0: rows (copying src in), 1: column blocks */
    int failed;                         /* set by a thread that found no memory */
} Work;

static void *run_tasks(void *arg) {
    Work *w = (Work *)arg;
    int64_t blocks = w->row / COLUMNS_AT_ONCE;
    float *scratch = NULL;
    if (w->pass == 1 && !(scratch = malloc((size_t)w->rows * COLUMNS_AT_ONCE * sizeof(float)))) {
        w->failed = 1;
        return NULL;
    }
    for (int64_t t = w->first; t < w->last; t++) {
        if (w->pass == 0) { /* task t: row t of the whole batch */
            if (w->src != w->dst)
                memcpy(w->dst + t * w->row, w->src + t * w->row, (size_t)w->row * sizeof(float));
            transform_row(w->dst + t * w->row, w->row);
        } else { /* task t: block t % blocks of vector t / blocks */
            float *base = w->dst + (t / blocks) * w->length + (t % blocks) * COLUMNS_AT_ONCE;
            transform_columns(base, w->rows, w->row, scratch);
        }
    }
    free(scratch);
    return NULL;
}

/* fn on each of `threads` shares (parts[k], `size` bytes apart): all but the last on threads
 * of their own, the last (and any a thread could not take) here; returns when all are done. */
static void run_shares(void *(*fn)(void *), char *parts, size_t size, int threads) {
    pthread_t ids[MAX_THREADS];
    int created[MAX_THREADS] = {0};
    for (int k = 0; k < threads; k++) {
        void *part = parts + (size_t)k * size;
        created[k] = k < threads - 1 && pthread_create(&ids[k], NULL, fn, part) == 0;
        if (!created[k]) fn(part);
    }
    for (int k = 0; k < threads; k++)
        if (created[k]) pthread_join(ids[k], NULL);
}

static void parallel(Work *shared, int64_t tasks, int threads) {
    Work parts[MAX_THREADS];
    if (threads > tasks) threads = (int)tasks;
    if (threads < 1) threads = 1;
    for (int k = 0; k < threads; k++) {
        parts[k] = *shared;
        parts[k].first = tasks * k / threads;
        parts[k].last = tasks * (k + 1) / threads;
    }
    run_shares(run_tasks, (char *)parts, sizeof(Work), threads);
    for (int k = 0; k < threads; k++) shared->failed |= parts[k].failed;
}

static PyObject *fwht_float32(PyObject *self, PyObject *args) {
    unsigned long long src, dst;
    Py_ssize_t vectors, length;
    int threads;
    if (!PyArg_ParseTuple(args, "KKnni", &src, &dst, &vectors, &length, &threads)) return NULL;
    if (length < 1 || (length & (length - 1)) || vectors < 0 || threads > MAX_THREADS) {
        PyErr_SetString(PyExc_ValueError, "length must be a power of two, threads at most 64");
        return NULL;
    }
    int bits = 0;
    while (((int64_t)1 << bits) < length) bits++;
    int row_bits = bits < MAX_ROW_BITS ? bits : MAX_ROW_BITS;
    Work w = {(const float *)(uintptr_t)src, (float *)(uintptr_t)dst, vectors, length,
              (int64_t)1 << row_bits, (int64_t)1 << (bits - row_bits), 0, 0, 0, 0};
    if ((int64_t)vectors * length < ((int64_t)1 << 17)) threads = 1; /* not worth a thread */
    Py_BEGIN_ALLOW_THREADS
    parallel(&w, vectors * w.rows, threads);
    if (w.rows > 1) {
        w.pass = 1;
        parallel(&w, vectors * (w.row / COLUMNS_AT_ONCE), threads);
    }
    Py_END_ALLOW_THREADS
    if (w.failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *permute_scale_float32(PyObject *self, PyObject *args) {
    unsigned long long src, dst, perm, scale;
    Py_ssize_t n;
    int inverse, threads;
    if (!PyArg_ParseTuple(args, "KKKKnpi", &src, &dst, &perm, &scale, &n, &inverse, &threads))
        return NULL;
    if (n < 0 || threads > MAX_THREADS) {
        PyErr_SetString(PyExc_ValueError, "n must be >= 0, threads at most 64");
        return NULL;
    }
    if (threads < 1 || n < ((int64_t)1 << 17)) threads = 1;
    Permute parts[MAX_THREADS];
    for (int k = 0; k < threads; k++)
        parts[k] = (Permute){(const float *)(uintptr_t)src, (const float *)(uintptr_t)scale,
                             (const int32_t *)(uintptr_t)perm, (float *)(uintptr_t)dst,
                             n * k / threads, n * (k + 1) / threads, inverse};
    Py_BEGIN_ALLOW_THREADS
    run_shares(permute_range, (char *)parts, sizeof(Permute), threads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *scatter_signed_float32(PyObject *self, PyObject *args) {
    unsigned long long src, dst, index, bits;
    Py_ssize_t n;
    int inverse, threads;
    if (!PyArg_ParseTuple(args, "KKKKnpi", &src, &dst, &index, &bits, &n, &inverse, &threads))
        return NULL;
    if (n < 0 || threads > MAX_THREADS) {
        PyErr_SetString(PyExc_ValueError, "n must be >= 0, threads at most 64");
        return NULL;
    }
    if (threads < 1 || n < ((int64_t)1 << 17)) threads = 1;
    Scatter parts[MAX_THREADS];
    for (int k = 0; k < threads; k++)
        parts[k] = (Scatter){(const float *)(uintptr_t)src, (float *)(uintptr_t)dst,
                             (const int32_t *)(uintptr_t)index, (const uint32_t *)(uintptr_t)bits,
                             n * k / threads, n * (k + 1) / threads, inverse};
    Py_BEGIN_ALLOW_THREADS
    run_shares(scatter_range, (char *)parts, sizeof(Scatter), threads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"fwht_float32", fwht_float32, METH_VARARGS,
     "fwht_float32(src, dst, vectors, length, threads): H x of each of `vectors` contiguous "
     "float32 vectors of `length` (a power of two) at address src, written to dst."},
    {"permute_scale_float32", permute_scale_float32, METH_VARARGS,
     "permute_scale_float32(src, dst, perm, scale, n, inverse, threads): dst[i] = scale[i] * "
     "src[perm[i]], or with inverse dst[perm[i]] = scale[i] * src[i], for i < n (perm int32, a "
     "permutation of 0..n-1; dst distinct from src)."},
    {"scatter_signed_float32", scatter_signed_float32, METH_VARARGS,
     "scatter_signed_float32(src, dst, index, bits, n, inverse, threads): dst[i] = s_i * "
     "src[index[i]], or with inverse dst[index[i]] = s_i * src[i], for i < n (index int32 or 0 "
     "for i itself; s_i = -1 where bit i of the uint32 words at `bits` is set, else 1; bits 0 "
     "for no signs; dst distinct from src)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }

/*
 * cblas_sgemm, cblas_dgemm and cblas_cgemm under their plain names, forwarding to
 * an optimised BLAS whose entry points are handed over at run time.
 *
 * libmlx on Linux imports these three symbols by name. Loaded with RTLD_GLOBAL
 * before libmlx, this library's definitions win over the reference BLAS that
 * the mlx wheel bundles. The targets are function pointers set by
 * mlxk2_blas_shim_set(), so the shim needs no BLAS headers or libraries to
 * build, and can be pointed back at the bundled BLAS if a check fails after
 * libmlx has bound to it.
 *
 * A product with one row (M == 1: decode computes x @ W.T for one token) goes
 * to sgemv, which OpenBLAS runs about three times faster than its one-row
 * sgemm on the same data.
 */

#include <stddef.h>

typedef int blas_int;

enum { ROW_MAJOR = 101, COL_MAJOR = 102 };
enum { NO_TRANS = 111, TRANS = 112, CONJ_TRANS = 113 };

typedef void (*sgemm_fn)(int, int, int, blas_int, blas_int, blas_int, float, const float *,
                         blas_int, const float *, blas_int, float, float *, blas_int);
typedef void (*sgemv_fn)(int, int, blas_int, blas_int, float, const float *, blas_int,
                         const float *, blas_int, float, float *, blas_int);
typedef void (*dgemm_fn)(int, int, int, blas_int, blas_int, blas_int, double, const double *,
                         blas_int, const double *, blas_int, double, double *, blas_int);
typedef void (*cgemm_fn)(int, int, int, blas_int, blas_int, blas_int, const void *,
                         const void *, blas_int, const void *, blas_int, const void *, void *,
                         blas_int);

static sgemm_fn target_sgemm = NULL;
static sgemv_fn target_sgemv = NULL;
static dgemm_fn target_dgemm = NULL;
static cgemm_fn target_cgemm = NULL;
static unsigned long sgemm_calls = 0;
static unsigned long sgemv_routed = 0;

/* Point the shim at a BLAS; sgemv may be NULL, which turns the one-row route off. */
void mlxk2_blas_shim_set(sgemm_fn sgemm, sgemv_fn sgemv, dgemm_fn dgemm, cgemm_fn cgemm) {
    target_sgemm = sgemm;
    target_sgemv = sgemv;
    target_dgemm = dgemm;
    target_cgemm = cgemm;
}

/* Calls that reached cblas_sgemm, and how many of them went to sgemv: proof of routing. */
unsigned long mlxk2_blas_shim_sgemm_calls(void) { return __atomic_load_n(&sgemm_calls, __ATOMIC_RELAXED); }
unsigned long mlxk2_blas_shim_sgemv_routed(void) { return __atomic_load_n(&sgemv_routed, __ATOMIC_RELAXED); }

static int transposed(int trans) { return trans == TRANS || trans == CONJ_TRANS; }

void cblas_sgemm(int order, int trans_a, int trans_b, blas_int m, blas_int n, blas_int k,
                 float alpha, const float *a, blas_int lda, const float *b, blas_int ldb,
                 float beta, float *c, blas_int ldc) {
    __atomic_add_fetch(&sgemm_calls, 1, __ATOMIC_RELAXED);
    if (m != 1 || n < 1 || k < 1 || target_sgemv == NULL
        || (order != ROW_MAJOR && order != COL_MAJOR)) {
        target_sgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    /*
     * C (1 x N) = alpha * x (1 x K) @ op(B) (K x N) + beta * C, as y = alpha * op'(B) x + beta * y.
     * x is row 0 of op(A): contiguous unless A is stored transposed in row-major (or
     * plain in column-major), where its elements sit lda apart. Row 0 of C is
     * contiguous in row-major and ldc apart in column-major.
     */
    int row_major = order == ROW_MAJOR;
    blas_int inc_x = (row_major != transposed(trans_a)) ? 1 : lda;
    blas_int inc_y = row_major ? 1 : ldc;
    /* op(B) stored K x N (no transpose): y = B^T x over a K x N matrix;
       stored N x K (transposed): y = B x over an N x K matrix. */
    int gemv_trans = transposed(trans_b) ? NO_TRANS : TRANS;
    blas_int rows = transposed(trans_b) ? n : k;
    blas_int cols = transposed(trans_b) ? k : n;
    if (beta == 0.0f) {
        /* BLAS reads no C when beta is 0; C may hold garbage (NaN) that a scale by 0 keeps. */
        for (blas_int j = 0; j < n; ++j) c[(size_t)j * (size_t)inc_y] = 0.0f;
    }
    __atomic_add_fetch(&sgemv_routed, 1, __ATOMIC_RELAXED);
    target_sgemv(order, gemv_trans, rows, cols, alpha, b, ldb, a, inc_x, beta, c, inc_y);
}

void cblas_dgemm(int order, int trans_a, int trans_b, blas_int m, blas_int n, blas_int k,
                 double alpha, const double *a, blas_int lda, const double *b, blas_int ldb,
                 double beta, double *c, blas_int ldc) {
    target_dgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void cblas_cgemm(int order, int trans_a, int trans_b, blas_int m, blas_int n, blas_int k,
                 const void *alpha, const void *a, blas_int lda, const void *b, blas_int ldb,
                 const void *beta, void *c, blas_int ldc) {
    target_cgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

/* GEMV forwarding for MLX's CPU matmul on Linux.
 *
 * MLX's CPU backend calls cblas_sgemm for every float32 matmul, including matrix-vector
 * products (batch-1 decode steps, LSTM recurrences). OpenBLAS releases before 0.3.27 run
 * sgemm with M == 1 or N == 1 through the full GEMM path, packing the whole matrix each call:
 * about 4x slower than sgemv on a 1024 x 4096 weight. This library is linked ahead of
 * OpenBLAS in every binary, so the dynamic loader binds libmlx's cblas_sgemm here. Products
 * with a vector operand go to cblas_sgemv; everything else to the next cblas_sgemm in load
 * order (OpenBLAS). Products with up to SMALL_M rows run as one sgemv per row. Results are
 * the same products, summed in a different order.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>

enum { RowMajor = 101, ColMajor = 102, NoTrans = 111, Trans = 112 };

/* Products with at most this many rows in a go to sgemv row by row. */
#define SMALL_M 4

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *, int);
typedef void (*sgemv_fn)(int, int, int, int, float, const float *, int, const float *, int, float, float *, int);

static sgemm_fn next_sgemm;
static sgemv_fn next_sgemv;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void resolve(void) {
    next_sgemm = (sgemm_fn)dlsym(RTLD_NEXT, "cblas_sgemm");
    next_sgemv = (sgemv_fn)dlsym(RTLD_NEXT, "cblas_sgemv");
}

/* The library the calls are forwarded to, for reports ("" when unresolved). */
const char *mlx_gemv_shim_target(void) {
    pthread_once(&once, resolve);
    Dl_info info;
    if (next_sgemm && dladdr((void *)next_sgemm, &info) && info.dli_fname) return info.dli_fname;
    return "";
}

void cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc) {
    pthread_once(&once, resolve);
    /* sgemv returns early when the inner size is 0 and would leave C unscaled: only forward
     * products with a real inner dimension. */
    if (next_sgemv && order == RowMajor && k > 0 && m > 0 && n > 0) {
        if (m <= SMALL_M) {
            /* c[i, n] = a[i, k] op(b)[k, n], one sgemv over b per row of a. A few rows (a
             * batch of 2 for classifier-free guidance, a handful of beams) stay far cheaper as
             * GEMVs than as a GEMM that packs all of b: measured on a 1024 x 4096 weight with
             * OpenBLAS 0.3.21, 2 rows 0.32 against 1.73 ms, 4 rows 0.60 against 1.89 ms (2
             * threads); at 8 rows the GEMM wins on one thread. */
            int incx = (ta == NoTrans) ? 1 : lda;
            for (int i = 0; i < m; i++) {
                const float *row = (ta == NoTrans) ? a + (size_t)i * lda : a + i;
                if (tb == NoTrans)
                    next_sgemv(RowMajor, Trans, k, n, alpha, b, ldb, row, incx, beta, c + (size_t)i * ldc, 1);
                else
                    next_sgemv(RowMajor, NoTrans, n, k, alpha, b, ldb, row, incx, beta, c + (size_t)i * ldc, 1);
            }
            return;
        }
        if (n == 1) {
            /* c[m, 1] = op(a)[m, k] b[k, 1]: sgemv over a with x = the column of b. */
            int incx = (tb == NoTrans) ? ldb : 1;
            if (ta == NoTrans)
                next_sgemv(RowMajor, NoTrans, m, k, alpha, a, lda, b, incx, beta, c, ldc);
            else
                next_sgemv(RowMajor, Trans, k, m, alpha, a, lda, b, incx, beta, c, ldc);
            return;
        }
    }
    next_sgemm(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

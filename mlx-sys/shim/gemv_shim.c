/* GEMV forwarding for MLX's CPU matmul on Linux.
 *
 * MLX's CPU backend calls cblas_sgemm for every float32 matmul, including matrix-vector
 * products (batch-1 decode steps, LSTM recurrences). OpenBLAS releases before 0.3.27 run
 * sgemm with M == 1 or N == 1 through the full GEMM path, packing the whole matrix each call:
 * about 4x slower than sgemv on a 1024 x 4096 weight. This library is linked ahead of
 * OpenBLAS in every binary, so the dynamic loader binds libmlx's cblas_sgemm here. Products
 * with a vector operand go to cblas_sgemv; everything else to the next cblas_sgemm in load
 * order (OpenBLAS). Products of 2 to SMALL_M rows against a transposed weight (a decode step's
 * `x @ w.T` under classifier-free guidance or a small batch) run on this file's own kernel,
 * which reads each weight row once for all rows; other products with up to SMALL_M rows run as
 * one sgemv per row. Results are the same products, summed in a different order. The kernel's
 * thread pool is also exported (mlx_shim_parallel_columns) for the project's own host kernels.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <linux/futex.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

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

#if defined(__x86_64__)
/* ---- Products with 2 to SMALL_M rows against a [n, k] row-major weight (tb == Trans) ----
 *
 * One sgemv per row reads the whole weight once per row: a guided decode step (2 rows) reads
 * every weight twice from memory. These kernels read each weight row once and take its dot
 * products with every row of a at once (each row's k floats stay in L1), so the step reads
 * the weights once. AVX-512 or AVX2+FMA, chosen at run time; without either, the sgemv path.
 * The output columns are split over a small pool of threads: the BLAS' own thread count
 * (openblas_get_num_threads, so OPENBLAS_NUM_THREADS=1 and the host kernels' single-threaded
 * sections hold it at one), at most the CPUs this process may run on. */

#define MAX_POOL 16

/* c[i, j] = alpha * a_i . b_j + beta * c[i, j] for i < M, j in [j0, j1). beta == 0 never
 * reads c (BLAS semantics: c may hold NaN). */
#define STORE(acc_sum, i, j)                                                                   \
    do {                                                                                       \
        float *out_ = c + (size_t)(i) * ldc + (j);                                             \
        float v_ = alpha * (acc_sum);                                                          \
        *out_ = beta == 0.0f ? v_ : v_ + beta * *out_;                                         \
    } while (0)

__attribute__((target("avx512f"), always_inline)) static inline void rows_avx512_m(
    const int M, int j0, int j1, int k, float alpha, const float *a, int lda, const float *b, int ldb, float beta,
    float *c, int ldc) {
    int j = j0;
    /* One loop over k in 16-float chunks; the last chunk's loads are masked (zeros beyond k). */
    const __mmask16 last = (__mmask16)((1u << (k & 15)) - 1);
#define CHUNK_MASK(p) ((p) + 16 <= k ? (__mmask16)0xFFFF : last)
    for (; j + 4 <= j1; j += 4) {
        __m512 acc[SMALL_M][4];
        for (int i = 0; i < M; i++)
            for (int r = 0; r < 4; r++) acc[i][r] = _mm512_setzero_ps();
        const float *w = b + (size_t)j * ldb;
        for (int p = 0; p < k; p += 16) {
            const __mmask16 mk = CHUNK_MASK(p);
            __m512 v0 = _mm512_maskz_loadu_ps(mk, w + p), v1 = _mm512_maskz_loadu_ps(mk, w + ldb + p);
            __m512 v2 = _mm512_maskz_loadu_ps(mk, w + 2 * (size_t)ldb + p), v3 = _mm512_maskz_loadu_ps(mk, w + 3 * (size_t)ldb + p);
            for (int i = 0; i < M; i++) {
                __m512 x = _mm512_maskz_loadu_ps(mk, a + (size_t)i * lda + p);
                acc[i][0] = _mm512_fmadd_ps(x, v0, acc[i][0]);
                acc[i][1] = _mm512_fmadd_ps(x, v1, acc[i][1]);
                acc[i][2] = _mm512_fmadd_ps(x, v2, acc[i][2]);
                acc[i][3] = _mm512_fmadd_ps(x, v3, acc[i][3]);
            }
        }
        for (int i = 0; i < M; i++)
            for (int r = 0; r < 4; r++) STORE(_mm512_reduce_add_ps(acc[i][r]), i, j + r);
    }
    /* The last n % 4 columns, one weight row at a time. */
    for (; j < j1; j++) {
        __m512 acc[SMALL_M];
        for (int i = 0; i < M; i++) acc[i] = _mm512_setzero_ps();
        const float *w = b + (size_t)j * ldb;
        for (int p = 0; p < k; p += 16) {
            const __mmask16 mk = CHUNK_MASK(p);
            __m512 v = _mm512_maskz_loadu_ps(mk, w + p);
            for (int i = 0; i < M; i++) acc[i] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, a + (size_t)i * lda + p), v, acc[i]);
        }
        for (int i = 0; i < M; i++) STORE(_mm512_reduce_add_ps(acc[i]), i, j);
    }
#undef CHUNK_MASK
}

__attribute__((target("avx2,fma"))) static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* AVX2: two weight rows at a time (16 registers: M * 2 accumulators, two weights, one x). */
__attribute__((target("avx2,fma"), always_inline)) static inline void rows_avx2_m(
    const int M, int j0, int j1, int k, float alpha, const float *a, int lda, const float *b, int ldb, float beta,
    float *c, int ldc) {
    int j = j0;
    const int body = k & ~7;
    for (; j < j1; j += 2) {
        const int two = j + 1 < j1;
        const float *w0 = b + (size_t)j * ldb, *w1 = two ? w0 + ldb : w0;
        __m256 acc[SMALL_M][2];
        for (int i = 0; i < M; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
        for (int p = 0; p < body; p += 8) {
            __m256 v0 = _mm256_loadu_ps(w0 + p), v1 = _mm256_loadu_ps(w1 + p);
            for (int i = 0; i < M; i++) {
                __m256 x = _mm256_loadu_ps(a + (size_t)i * lda + p);
                acc[i][0] = _mm256_fmadd_ps(x, v0, acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(x, v1, acc[i][1]);
            }
        }
        for (int i = 0; i < M; i++) {
            const float *x = a + (size_t)i * lda;
            float s0 = hsum256(acc[i][0]), s1 = hsum256(acc[i][1]);
            for (int p = body; p < k; p++) {
                s0 += x[p] * w0[p];
                s1 += x[p] * w1[p];
            }
            STORE(s0, i, j);
            if (two) STORE(s1, i, j + 1);
        }
    }
}

#define ROWS_FOR(isa, attr, M)                                                                                    \
    attr static void rows_##isa##_##M(int j0, int j1, int k, float alpha, const float *a, int lda, const float *b, \
                                      int ldb, float beta, float *c, int ldc) {                                   \
        rows_##isa##_m(M, j0, j1, k, alpha, a, lda, b, ldb, beta, c, ldc);                                        \
    }
ROWS_FOR(avx512, __attribute__((target("avx512f"))), 2)
ROWS_FOR(avx512, __attribute__((target("avx512f"))), 3)
ROWS_FOR(avx512, __attribute__((target("avx512f"))), 4)
ROWS_FOR(avx2, __attribute__((target("avx2,fma"))), 2)
ROWS_FOR(avx2, __attribute__((target("avx2,fma"))), 3)
ROWS_FOR(avx2, __attribute__((target("avx2,fma"))), 4)

typedef void (*rows_m_fn)(int, int, int, float, const float *, int, const float *, int, float, float *, int);
static rows_m_fn rows_table[SMALL_M + 1];
static pthread_once_t isa_once = PTHREAD_ONCE_INIT;

static void pick_isa(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
        rows_table[2] = rows_avx512_2, rows_table[3] = rows_avx512_3, rows_table[4] = rows_avx512_4;
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        rows_table[2] = rows_avx2_2, rows_table[3] = rows_avx2_3, rows_table[4] = rows_avx2_4;
    }
}

/* The pool. The caller and the helpers take runs of output columns from one counter until
 * none are left, so a helper that wakes late costs nothing: the caller does the rest. Between
 * jobs the helpers spin for SPIN_NS (a decode step's products come a few tens of microseconds
 * apart), then sleep on a futex. `state` counts the helpers inside the current job; the
 * caller closes it (CLOSED) once the columns are handed out and waits only for those inside.
 * A second caller while the pool is busy (our host kernels' own threads) runs its product
 * alone. */
#define SPIN_NS 300000L
#define CLOSED (1 << 30)
typedef void (*body_fn)(void *ctx, int j0, int j1);
static struct {
    body_fn f;
    void *ctx;
    int n, run;
} job;
static atomic_int next_col;
static atomic_uint job_gen;
static atomic_int state = CLOSED, sleepers, pool_busy;
static int helpers;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
typedef int (*threads_fn)(void);
static threads_fn blas_threads;

static void take_columns(void) {
    for (;;) {
        int j0 = atomic_fetch_add_explicit(&next_col, job.run, memory_order_relaxed);
        if (j0 >= job.n) return;
        int j1 = j0 + job.run < job.n ? j0 + job.run : job.n;
        job.f(job.ctx, j0, j1);
    }
}

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void *helper_main(void *arg) {
    (void)arg;
    unsigned seen = 0; /* the pool starts before the first job */
    for (;;) {
        unsigned g;
        long since = now_ns();
        for (int spins = 0; (g = atomic_load_explicit(&job_gen, memory_order_acquire)) == seen; spins++) {
            _mm_pause();
            if ((spins & 63) == 63 && now_ns() - since > SPIN_NS) {
                atomic_fetch_add(&sleepers, 1);
                syscall(SYS_futex, &job_gen, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
                atomic_fetch_sub(&sleepers, 1);
                since = now_ns();
            }
        }
        seen = g;
        /* Join the job unless it is closed (then its columns are all done or taken). */
        int s = atomic_load_explicit(&state, memory_order_acquire);
        while (!(s & CLOSED) && !atomic_compare_exchange_weak_explicit(&state, &s, s + 1, memory_order_acquire, memory_order_relaxed)) {
        }
        if (s & CLOSED) continue;
        take_columns();
        atomic_fetch_sub_explicit(&state, 1, memory_order_release);
    }
    return NULL;
}

static void start_pool(void) {
    cpu_set_t set;
    int cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    if (cpus > MAX_POOL) cpus = MAX_POOL;
    blas_threads = (threads_fn)dlsym(RTLD_DEFAULT, "openblas_get_num_threads");
    for (int id = 1; id < cpus; id++) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int ok = pthread_create(&t, &attr, helper_main, NULL) == 0;
        pthread_attr_destroy(&attr);
        if (!ok) break;
        helpers++;
    }
}

/* Runs f(ctx, j0, j1) over the columns [0, n) in runs of `run`, on the caller and, where
 * `threads` > 1 and the pool is free, up to threads - 1 helpers (no more than OpenBLAS' own
 * thread count and the CPUs this process may use). Returns when every column is done. */
static void parallel_columns(body_fn f, void *ctx, int n, int run, int threads) {
    if (threads > 1) {
        pthread_once(&pool_once, start_pool);
        if (threads > helpers + 1) threads = helpers + 1;
        if (blas_threads) {
            int t = blas_threads();
            if (t < threads) threads = t < 1 ? 1 : t;
        }
    }
    if (threads > 1 && atomic_exchange_explicit(&pool_busy, 1, memory_order_acquire) == 0) {
        job.f = f, job.ctx = ctx, job.n = n, job.run = run < 1 ? 1 : run;
        atomic_store_explicit(&next_col, 0, memory_order_relaxed);
        atomic_store_explicit(&state, 0, memory_order_release);
        atomic_fetch_add(&job_gen, 1);
        if (atomic_load(&sleepers) > 0) syscall(SYS_futex, &job_gen, FUTEX_WAKE_PRIVATE, threads - 1, NULL, NULL, 0);
        take_columns();
        atomic_fetch_or_explicit(&state, CLOSED, memory_order_acq_rel);
        while ((atomic_load_explicit(&state, memory_order_acquire) & ~CLOSED) > 0) _mm_pause();
        atomic_store_explicit(&pool_busy, 0, memory_order_release);
        return;
    }
    f(ctx, 0, n);
}

/* The pool for other host code (the project's quantized products): as parallel_columns, with
 * every thread the pool has. Returns 1 (0 only from the build without the pool). */
int mlx_shim_parallel_columns(body_fn f, void *ctx, int n, int run) {
    parallel_columns(f, ctx, n, run, MAX_POOL);
    return 1;
}

struct rows_job {
    rows_m_fn f;
    int k, lda, ldb, ldc;
    float alpha, beta;
    const float *a, *b;
    float *c;
};

static void rows_body(void *ctx, int j0, int j1) {
    const struct rows_job *r = ctx;
    r->f(j0, j1, r->k, r->alpha, r->a, r->lda, r->b, r->ldb, r->beta, r->c, r->ldc);
}

/* c = alpha a b^T + beta c with a [m, k] (rows lda apart) and b [n, k] (rows ldb apart),
 * 2 <= m <= SMALL_M. Returns 0 where no kernel fits this CPU (the caller falls back). */
static int small_m_product(int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
                           float beta, float *c, int ldc) {
    pthread_once(&isa_once, pick_isa);
    rows_m_fn f = rows_table[m];
    if (!f) return 0;
    struct rows_job r = {f, k, lda, ldb, ldc, alpha, beta, a, b, c};
    /* Below about a quarter million multiply-adds (a 256 x 512 weight for 2 rows) waking a
     * helper costs more than it gives. */
    if ((long)m * n * k < (1L << 18)) {
        rows_body(&r, 0, n);
        return 1;
    }
    /* About 8 runs a thread, in whole blocks of 4 columns. */
    pthread_once(&pool_once, start_pool);
    int threads = helpers + 1;
    int run = (n + 8 * threads - 1) / (8 * threads);
    run = (run + 3) & ~3;
    parallel_columns(rows_body, &r, n, run < 4 ? 4 : run, threads);
    return 1;
}
#else
int mlx_shim_parallel_columns(void (*f)(void *, int, int), void *ctx, int n, int run) {
    (void)f, (void)ctx, (void)n, (void)run;
    return 0;
}

static int small_m_product(int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
                           float beta, float *c, int ldc) {
    (void)m, (void)n, (void)k, (void)alpha, (void)a, (void)lda, (void)b, (void)ldb, (void)beta, (void)c, (void)ldc;
    return 0;
}
#endif

void cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc) {
    pthread_once(&once, resolve);
    /* sgemv returns early when the inner size is 0 and would leave C unscaled: only forward
     * products with a real inner dimension. */
    if (next_sgemv && order == RowMajor && k > 0 && m > 0 && n > 0) {
        if (m >= 2 && m <= SMALL_M && ta == NoTrans && tb == Trans &&
            small_m_product(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc))
            return;
        if (m <= SMALL_M) {
            /* c[i, n] = a[i, k] op(b)[k, n], one sgemv over b per row of a, where the kernel
             * above does not apply (another layout, or no AVX2). A few rows (a
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

/*
 * matmul.c — run-time ISA dispatch, threads, and the st_matmul driver.
 *
 * st_matmul picks one of three shapes of work:
 *   decode (T < ST_GEMM_MIN_T): stream each weight row once, convert in
 *       registers, dot with the few tokens (ops->gemv); threads split rows.
 *   prefill (T >= ST_GEMM_MIN_T): BLIS-style GEMM. Per K block: pack the
 *       tokens' activations k-major (Ã[tb][k][mr]), then per nr-row panel
 *       convert + transpose the weights once (B̃[k][nr]) and run the mr x nr
 *       micro-kernel over every token block while B̃ sits in L1. Threads split
 *       row panels (or tokens when there are too few panels).
 *   portable (ISA scalar, or other dtypes: integers; NVFP4 with column spans
 *       that are not 16-aligned): convert a row to fp32, dot it with every token.
 * NVFP4 with 16-aligned column spans uses its own kernel tables: the decode
 * gets x permuted once per call into the order the nibbles decode in
 * (kernels.h), the GEMM packs decoded rows into the usual fp32 panels.
 * This file has no ISA flags: the SIMD files are only entered after cpuid
 * (and the OS, via XCR0) confirmed their instructions.
 */
#include "kernels/kernels.h"
#include "starling.h"
#include "util/util.h"

#include <float.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define ST_X86 1
#endif

/* Below this many weight elements a parallel region costs more than it
 * saves: 256K BF16 elements stream in ~25 us on one core, a fork/join costs a
 * few us when the machine is quiet and far more when another job holds a
 * core (the spinning team then waits for a descheduled thread). */
#define ST_PAR_MIN_ELEMS 262144
/* From this many tokens on, packing weights for the GEMM pays off. Below it
 * the gemv (4x4 register blocks, weights converted on the fly, each row
 * block re-read from L1 per 4 tokens) is as fast or faster: measured on Zen 5
 * (1 thread, 2048x2048 .. 4096x1024 BF16) the two cross at T = 40..48. */
#define ST_GEMM_MIN_T 48

/* ------------------------------------------------------------ ISA detection */

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static st_isa g_detected = ST_ISA_SCALAR;
static int g_has_bf16;          /* AVX512_BF16 usable (CPU and OS)   */
static int g_prefetch;           /* decode prefetch: st_prefetch_mode */
static atomic_int g_bf16_on = 1; /* ST_BF16DP=0 / st_isa_bf16_set(0) */
static int g_has_vnni;           /* AVX512_VNNI + AVX512_VBMI usable  */
static atomic_int g_vnni_on = 1; /* ST_VNNI=0 / st_isa_vnni_set(0)    */
static atomic_int g_isa = ST_ISA_SCALAR;
static char g_features[160];

#ifdef ST_X86
static uint64_t xgetbv0(void) {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}
#endif

static void detect_once(void) {
    int avx2 = 0, fma = 0, f16c = 0, avx512f = 0, avx512bw = 0, avx512vl = 0, avx512dq = 0,
        avx512bf16 = 0, avx512vnni = 0, avx512vbmi = 0, os_avx = 0, os_avx512 = 0;
#ifdef ST_X86
    unsigned a, b, c, d;
    if (__get_cpuid(1, &a, &b, &c, &d)) {
        fma = (c >> 12) & 1;
        f16c = (c >> 29) & 1;
        int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
        if (osxsave && avx) {
            /* the OS must save the YMM (bits 1-2) and for AVX-512 also the
             * opmask/ZMM state (bits 5-7), or the registers get clobbered */
            uint64_t xcr0 = xgetbv0();
            os_avx = (xcr0 & 0x6) == 0x6;
            os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;
        }
    }
    if (__get_cpuid_max(0, NULL) >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        avx2 = (b >> 5) & 1;
        avx512f = (b >> 16) & 1;
        avx512dq = (b >> 17) & 1;
        avx512bw = (b >> 30) & 1;
        avx512vl = (b >> 31) & 1;
        avx512vnni = (c >> 11) & 1;
        avx512vbmi = (c >> 1) & 1;
        unsigned max7 = a;
        if (max7 >= 1) {
            __cpuid_count(7, 1, a, b, c, d);
            avx512bf16 = (a >> 5) & 1;
        }
    }
#endif
    int amd = 0;
#ifdef ST_X86
    if (__get_cpuid(0, &a, &b, &c, &d)) amd = b == 0x68747541u && d == 0x69746e65u && c == 0x444d4163u; /* "AuthenticAMD" */
#endif
    g_prefetch = amd ? ST_PF_NTA : ST_PF_AHEAD;
    const char *pf = getenv("ST_PREFETCH");
    if (pf && !strcmp(pf, "nta")) g_prefetch = ST_PF_NTA;
    if (pf && !strcmp(pf, "ahead")) g_prefetch = ST_PF_AHEAD;
    if (pf && !strcmp(pf, "none")) g_prefetch = ST_PF_NONE;
    st_isa best = ST_ISA_SCALAR;
    if (os_avx && avx2 && fma && f16c) best = ST_ISA_AVX2;
    /* the AVX-512 kernels use F/BW/VL/DQ (+F16C); they never use the BF16
     * dot-product instructions, so AVX512_BF16 is reported but not required */
    if (best == ST_ISA_AVX2 && os_avx512 && avx512f && avx512bw && avx512vl && avx512dq)
        best = ST_ISA_AVX512;
    g_detected = best;
    g_has_bf16 = best == ST_ISA_AVX512 && avx512bf16;
    const char *bf = getenv("ST_BF16DP");
    if (bf && !strcmp(bf, "0")) atomic_store(&g_bf16_on, 0);
    g_has_vnni = best == ST_ISA_AVX512 && avx512vnni && avx512vbmi;
    const char *vn = getenv("ST_VNNI");
    if (vn && !strcmp(vn, "0")) atomic_store(&g_vnni_on, 0);

    st_isa cur = best;
    const char *env = getenv("ST_ISA");
    if (env) { /* force a lower level; higher than the machine has is ignored */
        st_isa want = cur;
        if (!strcmp(env, "scalar")) want = ST_ISA_SCALAR;
        else if (!strcmp(env, "avx2")) want = ST_ISA_AVX2;
        else if (!strcmp(env, "avx512")) want = ST_ISA_AVX512;
        if (want < cur) cur = want;
    }
    atomic_store(&g_isa, (int)cur);

    /* what the CPU and OS offer (usable state only); the level in use is
     * st_isa_name(st_isa_get()) */
    snprintf(g_features, sizeof g_features, "%s%s%s%s%s%s%s%s%s%s",
             avx512bf16 && os_avx512 ? "avx512bf16 " : "", avx512vnni && os_avx512 ? "avx512vnni " : "",
             avx512vbmi && os_avx512 ? "avx512vbmi " : "",
             avx512f && os_avx512 ? "avx512f " : "", avx512bw && os_avx512 ? "avx512bw " : "",
             avx512vl && os_avx512 ? "avx512vl " : "", avx512dq && os_avx512 ? "avx512dq " : "",
             avx2 && os_avx ? "avx2 " : "", fma && os_avx ? "fma " : "", f16c && os_avx ? "f16c" : "");
    size_t len = strlen(g_features);
    while (len && g_features[len - 1] == ' ') g_features[--len] = 0;
    if (!len) snprintf(g_features, sizeof g_features, "none");
}

st_isa st_isa_detect(void) {
    pthread_once(&g_once, detect_once);
    return g_detected;
}

st_isa st_isa_get(void) {
    pthread_once(&g_once, detect_once);
    return (st_isa)atomic_load(&g_isa);
}

st_isa st_isa_set(st_isa isa) {
    st_isa det = st_isa_detect();
    if ((int)isa < ST_ISA_SCALAR) isa = ST_ISA_SCALAR;
    if (isa > det) isa = det;
    return (st_isa)atomic_exchange(&g_isa, (int)isa);
}

int st_prefetch_mode(void) {
    pthread_once(&g_once, detect_once);
    return g_prefetch;
}

int st_prefetch_mode_set(int mode) {
    pthread_once(&g_once, detect_once);
    const int prev = g_prefetch;
    g_prefetch = mode == ST_PF_NTA || mode == ST_PF_AHEAD ? mode : ST_PF_NONE;
    return prev;
}

int st_isa_bf16(void) {
    pthread_once(&g_once, detect_once);
    return g_has_bf16 && atomic_load(&g_isa) == ST_ISA_AVX512 && atomic_load(&g_bf16_on);
}

int st_isa_bf16_set(int on) {
    pthread_once(&g_once, detect_once);
    return atomic_exchange(&g_bf16_on, on ? 1 : 0);
}

int st_isa_vnni(void) {
    pthread_once(&g_once, detect_once);
    return g_has_vnni && atomic_load(&g_isa) == ST_ISA_AVX512 && atomic_load(&g_vnni_on);
}

int st_isa_vnni_set(int on) {
    pthread_once(&g_once, detect_once);
    return atomic_exchange(&g_vnni_on, on ? 1 : 0);
}

const char *st_isa_name(st_isa isa) {
    switch (isa) {
    case ST_ISA_AVX512: return "avx512";
    case ST_ISA_AVX2: return "avx2";
    default: return "scalar";
    }
}

const char *st_cpu_features(void) {
    pthread_once(&g_once, detect_once);
    return g_features;
}

/* ------------------------------------------------------------ threads */

static atomic_int g_threads;      /* the process default; 0: not set yet */
static _Thread_local int t_threads; /* this thread's own count; 0: the default */

void st_set_threads(int n) {
    atomic_store(&g_threads, n > 0 ? n : omp_get_num_procs());
}

int st_set_local_threads(int n) {
    int prev = t_threads;
    t_threads = n > 0 ? n : 0;
    return prev;
}

/* This thread's count, else the process default; that one, never set:
 * OMP_NUM_THREADS when the user set it, else every core. */
int st_get_threads(void) {
    if (t_threads > 0) return t_threads;
    int n = atomic_load(&g_threads);
    if (n > 0) return n;
    n = getenv("OMP_NUM_THREADS") ? omp_get_max_threads() : omp_get_num_procs();
    if (n < 1) n = 1;
    int expect = 0;
    atomic_compare_exchange_strong(&g_threads, &expect, n);
    return atomic_load(&g_threads);
}

/* ------------------------------------------------------------ profile */

static _Thread_local st_prof *t_prof;
void st_prof_attach(st_prof *p) { t_prof = p; }
st_prof *st_prof_attached(void) { return t_prof; }

const char *st_prof_name(st_prof_class c) {
    static const char *const n[ST_PROF_N] = {"matmul", "sync", "mamba", "attention", "moe_route",
                                             "norm", "sampling", "other"};
    return (unsigned)c < ST_PROF_N ? n[c] : "?";
}

/* Busy seconds of the threads of one profiled matmul (summed over threads). */
typedef struct { _Atomic double busy; atomic_int n; } prof_busy;

static double busy_start(const prof_busy *b) { return b ? st_time() : 0; }
static void busy_add(prof_busy *b, double t0) {
    if (!b) return;
    double add = st_time() - t0, cur = atomic_load_explicit(&b->busy, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&b->busy, &cur, cur + add, memory_order_relaxed,
                                                  memory_order_relaxed)) {}
    atomic_fetch_add_explicit(&b->n, 1, memory_order_relaxed);
}

/* ------------------------------------------------------------ scratch */

/* Per-calling-thread scratch, kept between calls: freeing and re-allocating
 * a few hundred KiB per matmul makes glibc return it to the OS and fault it
 * back in every time (it made 2-thread GEMMs 4x slower). Workers of a
 * parallel region use slices of their caller's buffer. */
typedef struct {
    void *p;
    size_t cap;
} scratch_buf;

static pthread_key_t g_scratch_key;
static pthread_once_t g_scratch_once = PTHREAD_ONCE_INIT;
static int g_scratch_ok;

static void scratch_free(void *v) {
    scratch_buf *s = v;
    free(s->p);
    free(s);
}

static void scratch_init(void) { g_scratch_ok = pthread_key_create(&g_scratch_key, scratch_free) == 0; }

/* 64-byte aligned, at least n bytes, valid until this thread's next call. */
static void *scratch_get(size_t n) {
    pthread_once(&g_scratch_once, scratch_init);
    if (!g_scratch_ok) return NULL;
    scratch_buf *s = pthread_getspecific(g_scratch_key);
    if (!s) {
        if (!(s = st_calloc(1, sizeof *s))) return NULL;
        if (pthread_setspecific(g_scratch_key, s)) {
            free(s);
            return NULL;
        }
    }
    if (s->cap < n) {
        size_t cap = (n + 63) & ~(size_t)63;
        if (cap < s->cap + s->cap / 2) cap = (s->cap + s->cap / 2 + 63) & ~(size_t)63;
        free(s->p);
        s->p = st_aligned_malloc(cap);
        s->cap = s->p ? cap : 0;
    }
    return s->p;
}

/* ------------------------------------------------------------ helpers */

static float eff_scale(const st_mat *W) { return W->scale == 0.0f ? 1.0f : W->scale; }

/* E2M1 (NVFP4) code -> value; codes 8..15 are the negatives (8 = -0). */
static const float g_e2m1[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                 -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

/* ModelOpt NVFP4 (docs/architecture.md §5.3): byte j of a row holds element 2j in
 * its low nibble and 2j+1 in the high one; element c is scaled by the E4M3
 * block scale bscale[row][c/16] (non-negative: the sign bit is ignored, as
 * llama.cpp does) and by the per-tensor scale. */
static void nvfp4_row_f32(const st_mat *W, int64_t row, int64_t col0, int64_t n, float *out) {
    const unsigned char *codes = (const unsigned char *)W->data + (size_t)row * (size_t)(W->cols / 2);
    const unsigned char *bs = W->bscale + (size_t)row * (size_t)(W->cols / 16);
    const float scale = eff_scale(W);
    for (int64_t i = 0; i < n; i++) {
        const int64_t c = col0 + i;
        const unsigned q = (codes[c >> 1] >> ((c & 1) * 4)) & 0xfu;
        out[i] = g_e2m1[q] * st_e4m3_lut[bs[c >> 4] & 0x7f] * scale;
    }
}

void st_mat_row_f32(const st_mat *W, int64_t row, int64_t col0, int64_t n, float *out) {
    if (W->dt == ST_DT_NVFP4) {
        nvfp4_row_f32(W, row, col0, n, out);
        return;
    }
    const size_t esz = st_dtype_size(W->dt);
    const unsigned char *p = (const unsigned char *)W->data + ((size_t)row * (size_t)W->cols + (size_t)col0) * esz;
    st_convert_to_f32(W->dt, p, out, n, eff_scale(W));
}

static int64_t span_total(const st_span *s, int n) {
    int64_t t = 0;
    for (int i = 0; i < n; i++) t += s[i].len > 0 ? s[i].len : 0;
    return t;
}

/* The absolute row of each packed output j. */
/* 0, 1, 2, ...: the rows of a single span [off, off+N) are ident + off, so
 * the common case needs no per-call table (writing one was ~1.5 MB per
 * decoded nano8 token). Built once; spans past it are filled per call. */
#define ST_IDENT_ROWS (1 << 18)
static int64_t *g_ident;
static pthread_once_t g_ident_once = PTHREAD_ONCE_INIT;
static void ident_init(void) {
    int64_t *p = st_malloc(sizeof(int64_t) * ST_IDENT_ROWS);
    if (p)
        for (int64_t i = 0; i < ST_IDENT_ROWS; i++) p[i] = i;
    g_ident = p;
}

static void fill_rows(const st_span *rs, int n_rs, int64_t *rows) {
    int64_t j = 0;
    for (int s = 0; s < n_rs; s++)
        for (int32_t i = 0; i < rs[s].len; i++) rows[j++] = (int64_t)rs[s].off + i;
}

/* The part [k0, k0+kc) of the packed column axis as absolute column spans. */
static int segs_for(const st_span *cs, int n_cs, int64_t k0, int64_t kc, st_span *out) {
    int n = 0;
    int64_t pos = 0, end = k0 + kc;
    for (int s = 0; s < n_cs && pos < end; s++) {
        int64_t len = cs[s].len > 0 ? cs[s].len : 0, a = pos, b = pos + len;
        if (a < k0) a = k0;
        if (b > end) b = end;
        if (a < b) out[n++] = (st_span){(int32_t)(cs[s].off + (a - pos)), (int32_t)(b - a)};
        pos += len;
    }
    return n;
}

/* ------------------------------------------------------------ reference */

/* Plain and obviously right: one element at a time through the scalar
 * converter, double accumulation, spans walked literally. */
void st_matmul_ref(const st_mat *W, const st_span *rs, int n_rs, const st_span *cs, int n_cs,
                   const float *x, int ldx, float *y, int ldy, int T, int accumulate) {
    for (int t = 0; t < T; t++) {
        int64_t j = 0;
        for (int a = 0; a < n_rs; a++)
            for (int32_t ri = 0; ri < rs[a].len; ri++, j++) {
                const int64_t r = (int64_t)rs[a].off + ri;
                double sum = 0.0;
                int64_t i = 0;
                for (int b = 0; b < n_cs; b++)
                    for (int32_t ci = 0; ci < cs[b].len; ci++, i++) {
                        const int64_t c = (int64_t)cs[b].off + ci;
                        float w;
                        st_mat_row_f32(W, r, c, 1, &w);
                        sum += (double)w * (double)x[(size_t)t * ldx + i];
                    }
                float *yp = &y[(size_t)t * ldy + j];
                *yp = accumulate ? *yp + (float)sum : (float)sum;
            }
    }
}

/* ------------------------------------------------------------ int8 digits */

float st_q8_block(const float *x, int n, int8_t *h, int8_t *l) {
    if (n <= 0) return 0.0f;
    double m = 0.0;
    int bad = 0;
    for (int i = 0; i < n; i++) {
        const double a = fabs((double)x[i]);
        if (!(a <= (double)FLT_MAX)) bad = 1;
        else if (a > m) m = a;
    }
    if (bad || m == 0.0) {
        memset(h, 0, (size_t)n);
        memset(l, 0, (size_t)n);
        return bad ? NAN : 0.0f;
    }
    /* in double: x/s never leaves [-127, 127] by a rounding, and a tiny m
     * (127/m past FLT_MAX) needs no special case */
    const double inv = 127.0 / m;
    for (int i = 0; i < n; i++) {
        const double q = (double)x[i] * inv, hi = nearbyint(q);
        const double lo = nearbyint((q - hi) * 256.0);
        /* q - hi = +0.5 rounds to 128: one more h, l = -128 (|q| <= 127, so h stays in range) */
        h[i] = (int8_t)(lo > 127.0 ? hi + 1.0 : hi);
        l[i] = (int8_t)(lo > 127.0 ? lo - 256.0 : lo);
    }
    return (float)(m / 127.0);
}

void st_matmul_nvfp4_q8_ref(const st_mat *W, const st_span *rs, int n_rs, const st_span *cs, int n_cs,
                            const float *x, float *y, int accumulate) {
    const unsigned char *codes = (const unsigned char *)W->data;
    const double mul = W->scale == 0.0f ? 1.0 : (double)W->scale;
    int64_t j = 0;
    for (int a = 0; a < n_rs; a++)
        for (int32_t ri = 0; ri < rs[a].len; ri++, j++) {
            const int64_t r = (int64_t)rs[a].off + ri;
            double sum = 0.0;
            int64_t i = 0;
            for (int b = 0; b < n_cs; b++)
                for (int32_t c0 = 0; c0 < cs[b].len; c0 += 16, i += 16) {
                    const int n = cs[b].len - c0 < 16 ? cs[b].len - c0 : 16;
                    int8_t h[16], lo[16];
                    const double s = st_q8_block(x + i, n, h, lo);
                    const int64_t c = (int64_t)cs[b].off + c0;
                    double blk = 0.0;
                    for (int e = 0; e < n; e++) {
                        const int64_t ce = c + e;
                        const unsigned char byte = codes[(size_t)r * (size_t)(W->cols / 2) + (size_t)(ce / 2)];
                        const int q = ce & 1 ? byte >> 4 : byte & 0xf;
                        blk += (double)g_e2m1[q] * ((double)h[e] + (double)lo[e] / 256.0);
                    }
                    sum += blk * s * (double)st_e4m3_lut[W->bscale[(size_t)r * (size_t)(W->cols / 16) + (size_t)(c / 16)] & 0x7f];
                }
            const float v = (float)(sum * mul);
            y[j] = accumulate ? y[j] + v : v;
        }
}

/* ------------------------------------------------------------ portable path */

static float dot_f32(const float *a, const float *b, int64_t n) {
    float s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) s[l] += a[i + l] * b[i + l];
    for (; i < n; i++) s[0] += a[i] * b[i];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

static void matmul_portable(const st_mat *W, const int64_t *rows, int64_t N, const st_span *cs,
                            int n_cs, int64_t K, const float *x, int ldx, float *y, int ldy, int T,
                            int accumulate, int nth, float *rowbuf /* [nth][ldr] */, size_t ldr,
                            prof_busy *pb) {
#pragma omp parallel num_threads(nth) if (nth > 1)
    {
        const double tb = busy_start(pb);
        float *row = rowbuf + (size_t)omp_get_thread_num() * ldr;
#pragma omp for schedule(static)
        for (int64_t j = 0; j < N; j++) {
            int64_t i = 0;
            for (int s = 0; s < n_cs; s++) {
                if (cs[s].len <= 0) continue;
                st_mat_row_f32(W, rows[j], cs[s].off, cs[s].len, row + i);
                i += cs[s].len;
            }
            for (int t = 0; t < T; t++) {
                float v = dot_f32(row, x + (size_t)t * ldx, K);
                float *yp = &y[(size_t)t * ldy + j];
                *yp = accumulate ? *yp + v : v;
            }
        }
        busy_add(pb, tb);
    }
}

/* ------------------------------------------------------------ decode path */

/* Rows are handed out in chunks from a shared counter rather than split in
 * equal halves: on a shared machine one core is often slowed by other work,
 * and a static split makes every matmul wait for the slower one. Chunks
 * shrink with the work left (a quarter of a thread's share of it, at least
 * 32 rows, in 16-row multiples so threads never share a cache line of y):
 * long streams first, and at the end no thread waits long for another.
 * (st_matmul_group below runs the decode path of one or several products.) */
static int64_t next_chunk(atomic_llong *next, int64_t N, int nth, int64_t *n) {
    int64_t j0 = atomic_load_explicit(next, memory_order_relaxed), c;
    do {
        if (j0 >= N) return -1;
        c = ((N - j0) / (4 * (int64_t)nth) + 15) & ~(int64_t)15;
        if (c < 32) c = 32;
        if (c > N - j0) c = N - j0;
    } while (!atomic_compare_exchange_weak_explicit(next, &j0, j0 + c, memory_order_relaxed, memory_order_relaxed));
    *n = c;
    return j0;
}

/* ------------------------------------------------------------ prefill path */

static size_t up64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Bytes of per-thread scratch the GEMM needs. */
static size_t gemm_scratch(const st_mm_ops *o, int T, int n_cs) {
    const size_t kcp = (size_t)((o->kc + 15) & ~15), ntb = (size_t)((T + o->mr - 1) / o->mr);
    return up64(ntb * o->mr * o->kc * sizeof(float))   /* Ã  [ntb][kc][mr] */
           + up64(kcp * o->nr * sizeof(float))         /* B̃  [kcp][nr]     */
           + up64(kcp * o->nr * sizeof(float))         /* conversion rows  */
           + up64((size_t)o->mr * o->nr * sizeof(float)) /* edge tile      */
           + up64((size_t)(n_cs + 1) * sizeof(st_span));
}

/* Tokens the kernel for a block with `left` tokens to go covers: mr, or the
 * smallest of mr/3, 2mr/3 that holds the remainder (less padding work). */
static int blk_mr(int mr, int left) {
    const int q = mr / 3;
    if (left >= mr) return mr;
    return left <= q ? q : left <= 2 * q ? 2 * q : mr;
}

/* Ask for the next weight panel (into L2) while this one is multiplied: the
 * panel is nr short runs of kc elements, which the hardware prefetchers do not
 * pick up on their own (packing was latency-bound without this). */
static void prefetch_panel(const st_mat *W, const int64_t *rows, int n, const st_span *seg,
                           int nseg) {
    /* NVFP4: half a byte per element (the block scales are 1/8 of that and
     * share few lines; left to the demand loads) */
    const int nv = W->dt == ST_DT_NVFP4;
    const size_t esz = nv ? 1 : st_dtype_size(W->dt), ld = nv ? (size_t)W->cols / 2 : (size_t)W->cols * esz;
    for (int r = 0; r < n; r++) {
        const uintptr_t base = (uintptr_t)W->data + (size_t)rows[r] * ld;
        for (int s = 0; s < nseg; s++) {
            const size_t off = nv ? (size_t)seg[s].off / 2 : (size_t)seg[s].off * esz;
            const size_t len = nv ? (size_t)seg[s].len / 2 : (size_t)seg[s].len * esz;
            const uintptr_t a = base + off, b = a + len;
            for (uintptr_t q = a & ~(uintptr_t)63; q < b; q += 64) __builtin_prefetch((const void *)q, 0, 2);
        }
    }
}

static void matmul_gemm(const st_mm_ops *o, const st_mat *W, const int64_t *rows, int64_t N,
                        const st_span *cs, int n_cs, int64_t K, const float *x, int ldx, float *y,
                        int ldy, int T, int accumulate, int nth, unsigned char *scratch,
                        size_t per_thread, prof_busy *pb) {
    const int MR = o->mr, NR = o->nr, KC = o->kc;
    const int64_t np = (N + NR - 1) / NR;
    /* split rows unless there are too few panels to go round */
    const int split_rows = np >= 2 * nth || T < 2 * MR * nth;
#pragma omp parallel num_threads(nth) if (nth > 1)
    {
        const double tbusy = busy_start(pb);
        const int nt = omp_get_num_threads(), tid = omp_get_thread_num();
        int64_t p0 = 0, p1 = np;
        int t0 = 0, t1 = T;
        if (split_rows) {
            p0 = np * tid / nt;
            p1 = np * (tid + 1) / nt;
        } else {
            const int ntb = (T + MR - 1) / MR;
            t0 = ntb * tid / nt * MR;
            t1 = ntb * (tid + 1) / nt * MR;
            if (t1 > T) t1 = T;
        }
        unsigned char *sp = scratch + (size_t)tid * per_thread;
        float *a = (float *)sp;
        sp += up64((size_t)((T + MR - 1) / MR) * MR * KC * sizeof(float));
        float *b = (float *)sp;
        sp += up64((size_t)((KC + 15) & ~15) * NR * sizeof(float));
        float *tmp = (float *)sp;
        sp += up64((size_t)((KC + 15) & ~15) * NR * sizeof(float));
        float *ctile = (float *)sp;
        sp += up64((size_t)MR * NR * sizeof(float));
        st_span *seg = (st_span *)sp;

        for (int64_t k0 = 0; p0 < p1 && t0 < t1 && k0 < K; k0 += KC) {
            const int kc = (int)(K - k0 < KC ? K - k0 : KC);
            const int nseg = segs_for(cs, n_cs, k0, kc, seg);
            const int load_c = accumulate || k0 > 0;
            const int nb = (t1 - t0 + MR - 1) / MR;
            /* Ã: this thread's tokens, k-major within each token block,
             * zero-padded; the last block is only as wide as its kernel */
            for (int tb = 0; tb < nb; tb++) {
                const int mk = blk_mr(MR, t1 - (t0 + tb * MR));
                float *ab = a + (size_t)tb * kc * MR;
                for (int m = 0; m < mk; m++) {
                    const int t = t0 + tb * MR + m;
                    if (t < t1) {
                        const float *xt = x + (size_t)t * ldx + k0;
                        for (int k = 0; k < kc; k++) ab[(size_t)k * mk + m] = xt[k];
                    } else {
                        for (int k = 0; k < kc; k++) ab[(size_t)k * mk + m] = 0.0f;
                    }
                }
            }
            for (int64_t p = p0; p < p1; p++) {
                const int64_t j0 = p * NR;
                const int n = (int)(N - j0 < NR ? N - j0 : NR);
                o->pack_b(W, rows + j0, n, seg, nseg, kc, tmp, b);
                if (p + 1 < p1)
                    prefetch_panel(W, rows + j0 + NR, (int)(N - j0 - NR < NR ? N - j0 - NR : NR), seg, nseg);
                for (int tb = 0; tb < nb; tb++) {
                    const int t = t0 + tb * MR, mr = t1 - t < MR ? t1 - t : MR;
                    const int mk = blk_mr(MR, t1 - t);
                    void (*kern)(int, const float *, const float *, float *, int, int) =
                        o->kernel[mk * 3 / MR - 1];
                    float *c = y + (size_t)t * ldy + j0;
                    const float *ab = a + (size_t)tb * kc * MR;
                    if (mr == mk && n == NR) {
                        kern(kc, ab, b, c, ldy, load_c);
                        continue;
                    }
                    /* edge tile: run the full kernel on a zeroed scratch tile */
                    memset(ctile, 0, (size_t)MR * NR * sizeof(float));
                    if (load_c)
                        for (int m = 0; m < mr; m++)
                            memcpy(ctile + (size_t)m * NR, c + (size_t)m * ldy, (size_t)n * sizeof(float));
                    kern(kc, ab, b, ctile, NR, load_c);
                    for (int m = 0; m < mr; m++)
                        memcpy(c + (size_t)m * ldy, ctile + (size_t)m * NR, (size_t)n * sizeof(float));
                }
            }
        }
        busy_add(pb, tbusy);
    }
}

/* ------------------------------------------------------------ NVFP4 */

/* Every column span 16-aligned (the NVFP4 kernels' precondition). */
static int nvfp4_spans_ok(const st_mat *W, const st_span *cs, int n_cs) {
    if (W->cols % 16 || !W->bscale) return 0;
    for (int i = 0; i < n_cs; i++)
        if (cs[i].len > 0 && ((cs[i].off | cs[i].len) & 15)) return 0;
    return 1;
}

/* x (T tokens, packed over the merged spans) -> xp[T][K] in the order the
 * NVFP4 decode consumes it (kernels.h): per span, each 32-chunk as
 * [evens | odds], a last 16-chunk likewise. */
static void nvfp4_permute_x(const st_span *cs, int n_cs, int64_t K, const float *x, int ldx,
                            int T, float *xp) {
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * ldx;
        float *pt = xp + (size_t)t * K;
        int64_t i = 0;
        for (int s = 0; s < n_cs; s++) {
            const int64_t end = i + cs[s].len;
            for (; i + 32 <= end; i += 32)
                for (int e = 0; e < 16; e++) {
                    pt[i + e] = xt[i + 2 * e];
                    pt[i + 16 + e] = xt[i + 2 * e + 1];
                }
            for (; i + 16 <= end; i += 16)
                for (int e = 0; e < 8; e++) {
                    pt[i + e] = xt[i + 2 * e];
                    pt[i + 8 + e] = xt[i + 2 * e + 1];
                }
        }
    }
}

/* ------------------------------------------------------------ st_matmul_group */

/* One job's decode path, prepared: what matmul_gemv takes. */
typedef struct {
    const st_mm_ops *o;
    int job, nvfp4, dp1;
    const st_mat *W;
    const int64_t *rows;
    int64_t N, K;
    const st_span *cs;
    int n_cs;
    const void *xp;
    size_t xstride; /* dp1: bytes from one token's prepared x to the next */
    const float *x;
    int ldx;
    float *y;
    int ldy, T, accumulate;
    atomic_llong next;
} gv_plan;

/* The kernel table st_matmul's decode path would use for W over cs (NULL:
 * no SIMD kernel); *nvfp4 whether it is the NVFP4 one. */
static const st_mm_ops *gv_ops(const st_mat *W, const st_span *cs, int n_cs, int *nvfp4) {
    const st_isa isa = st_isa_get();
    *nvfp4 = W->dt == ST_DT_NVFP4 && nvfp4_spans_ok(W, cs, n_cs);
    if (*nvfp4)
        return isa == ST_ISA_AVX512 ? (st_isa_vnni() ? &st_mm_ops_avx512_nvfp4_q8 : &st_mm_ops_avx512_nvfp4)
               : isa == ST_ISA_AVX2 ? &st_mm_ops_avx2_nvfp4
                                    : NULL;
    if (!st_dtype_is_float(W->dt)) return NULL;
    return isa == ST_ISA_AVX512 ? &st_mm_ops_avx512 : isa == ST_ISA_AVX2 ? &st_mm_ops_avx2 : NULL;
}

/* Whether a decode on o takes its one-token kernel (AVX512_BF16 or VNNI). */
static int gv_dp1(const st_mm_ops *o, int nvfp4, int T) {
    return nvfp4 && o->dp1_gemv && (o->dp1_vnni ? st_isa_vnni() : T == 1 && st_isa_bf16());
}

/* Scratch bytes job j needs on the grouped decode path: its row list, its
 * merged spans, its prepared x (as st_matmul lays them out). */
static size_t gv_bytes(const st_mm_job *j, const st_mm_ops *o, int nvfp4, int64_t N, int64_t K) {
    const int dp1 = gv_dp1(o, nvfp4, j->T);
    const size_t xp = dp1 ? (size_t)j->T * up64(o->dp1_bytes(j->cs, j->n_cs))
                      : nvfp4 ? up64((size_t)j->T * (size_t)K * sizeof(float)) : 0;
    return up64((size_t)N * sizeof(int64_t)) + up64((size_t)j->n_cs * sizeof(st_span)) + xp;
}

/* ------------------------------------------------------------ st_matmul */

static atomic_int g_gemm_min_t = ST_GEMM_MIN_T;

int st_matmul_gemm_min_t(int t) {
    return t > 0 ? atomic_exchange(&g_gemm_min_t, t) : atomic_load(&g_gemm_min_t);
}

void st_matmul(const st_mat *W, const st_span *rs, int n_rs, const st_span *cs, int n_cs,
               const float *x, int ldx, float *y, int ldy, int T, int accumulate) {
    const int64_t N = span_total(rs, n_rs), K = span_total(cs, n_cs);
    if (T <= 0 || N <= 0) return;
    if (K <= 0) { /* empty sum */
        if (!accumulate)
            for (int t = 0; t < T; t++) memset(y + (size_t)t * ldy, 0, (size_t)N * sizeof(float));
        return;
    }

    int nvfp4;
    const st_mm_ops *o = gv_ops(W, cs, n_cs, &nvfp4);
    const int gemm = o && T >= atomic_load(&g_gemm_min_t);
    if (o && !gemm) { /* the decode path: a group of one */
        const st_mm_job j = {W, rs, cs, n_rs, n_cs, x, ldx, y, ldy, T, accumulate};
        st_matmul_group(&j, 1);
        return;
    }
    int nth = st_get_threads();
    if ((double)N * (double)K < ST_PAR_MIN_ELEMS) nth = 1;
    /* scratch: [rows: N int64][merged column spans][per thread: GEMM panels
     * or a converted row] */
    const size_t rows_bytes = up64((size_t)N * sizeof(int64_t)) + up64((size_t)n_cs * sizeof(st_span));
    const size_t per = gemm ? gemm_scratch(o, T, n_cs) : up64((size_t)K * sizeof(float));
    unsigned char *scratch = scratch_get(rows_bytes + per * (size_t)nth);
    if (!scratch) { /* out of memory: the reference needs none */
        st_matmul_ref(W, rs, n_rs, cs, n_cs, x, ldx, y, ldy, T, accumulate);
        return;
    }
    const int64_t *rows = (const int64_t *)scratch;
    pthread_once(&g_ident_once, ident_init);
    if (n_rs == 1 && g_ident && (int64_t)rs[0].off + N <= ST_IDENT_ROWS) rows = g_ident + rs[0].off;
    else fill_rows(rs, n_rs, (int64_t *)scratch);
    /* Adjacent column spans (a full-width budget given as one span per head)
     * merge into one: fewer, longer runs for the kernels. x is packed the
     * same either way. */
    st_span *csm = (st_span *)(scratch + up64((size_t)N * sizeof(int64_t)));
    int ncm = 0;
    for (int i = 0; i < n_cs; i++) {
        if (cs[i].len <= 0) continue;
        if (ncm && csm[ncm - 1].off + csm[ncm - 1].len == cs[i].off)
            csm[ncm - 1].len += cs[i].len;
        else
            csm[ncm++] = cs[i];
    }
    cs = csm;
    n_cs = ncm;
    st_prof *prof = t_prof;
    prof_busy busy = {0}, *pb = prof ? &busy : NULL;
    const double t0 = prof ? st_time() : 0;
    if (gemm)
        matmul_gemm(o, W, rows, N, cs, n_cs, K, x, ldx, y, ldy, T, accumulate, nth,
                    scratch + rows_bytes, per, pb);
    else
        matmul_portable(W, rows, N, cs, n_cs, K, x, ldx, y, ldy, T, accumulate, nth,
                        (float *)(scratch + rows_bytes), per / sizeof(float), pb);
    if (prof) { /* the average thread's work is matmul, the rest of the wall time sync */
        const double wall = st_time() - t0, n = atomic_load(&busy.n);
        const double work = n > 0 ? atomic_load(&busy.busy) / n : wall;
        prof->s[ST_PROF_MATMUL] += work < wall ? work : wall;
        prof->s[ST_PROF_SYNC] += work < wall ? wall - work : 0;
        prof->flops += 2.0 * (double)N * (double)K * T;
        prof->bytes += (double)N * (double)K *
                       (W->dt == ST_DT_NVFP4 ? 0.5 + 1.0 / 16 : (double)st_dtype_size(W->dt));
    }
}

void st_matmul_group(const st_mm_job *jobs, int n) {
    enum { MAXJ = 64 };
    if (n <= 0) return;
    if (n > MAXJ) { /* more than the plan table holds: in pieces */
        for (int i = 0; i < n; i += MAXJ) st_matmul_group(jobs + i, n - i < MAXJ ? n - i : MAXJ);
        return;
    }
    gv_plan pl[MAXJ];
    int np = 0;
    size_t bytes = 0;
    double elems = 0;
    /* which jobs take the decode path; the others run on their own */
    for (int i = 0; i < n; i++) {
        const st_mm_job *j = &jobs[i];
        const int64_t N = span_total(j->rs, j->n_rs), K = span_total(j->cs, j->n_cs);
        int nvfp4;
        const st_mm_ops *o = N > 0 && K > 0 && j->T > 0 ? gv_ops(j->W, j->cs, j->n_cs, &nvfp4) : NULL;
        if (!o || j->T >= atomic_load(&g_gemm_min_t)) {
            st_matmul(j->W, j->rs, j->n_rs, j->cs, j->n_cs, j->x, j->ldx, j->y, j->ldy, j->T, j->accumulate);
            continue;
        }
        gv_plan *p = &pl[np++];
        p->o = o;
        p->job = i;
        p->nvfp4 = nvfp4;
        p->dp1 = gv_dp1(o, nvfp4, j->T);
        p->W = j->W;
        p->N = N;
        p->K = K;
        p->x = j->x;
        p->ldx = j->ldx;
        p->y = j->y;
        p->ldy = j->ldy;
        p->T = j->T;
        p->accumulate = j->accumulate;
        p->xp = NULL;
        atomic_init(&p->next, 0);
        bytes += gv_bytes(j, o, nvfp4, N, K);
        elems += (double)N * (double)K;
    }
    if (!np) return;
    unsigned char *scratch = scratch_get(bytes);
    if (!scratch) { /* out of memory: the reference needs none */
        for (int k = 0; k < np; k++) {
            const st_mm_job *j = &jobs[pl[k].job];
            st_matmul_ref(j->W, j->rs, j->n_rs, j->cs, j->n_cs, j->x, j->ldx, j->y, j->ldy, j->T, j->accumulate);
        }
        return;
    }
    pthread_once(&g_ident_once, ident_init);
    size_t at = 0;
    for (int k = 0; k < np; k++) { /* as st_matmul: row list, merged spans, prepared x */
        gv_plan *p = &pl[k];
        const st_mm_job *j = &jobs[p->job];
        unsigned char *base = scratch + at;
        at += gv_bytes(j, p->o, p->nvfp4, p->N, p->K);
        int64_t *rows = (int64_t *)base;
        if (j->n_rs == 1 && g_ident && (int64_t)j->rs[0].off + p->N <= ST_IDENT_ROWS) p->rows = g_ident + j->rs[0].off;
        else { fill_rows(j->rs, j->n_rs, rows); p->rows = rows; }
        st_span *csm = (st_span *)(base + up64((size_t)p->N * sizeof(int64_t)));
        int ncm = 0;
        for (int c = 0; c < j->n_cs; c++) {
            if (j->cs[c].len <= 0) continue;
            if (ncm && csm[ncm - 1].off + csm[ncm - 1].len == j->cs[c].off) csm[ncm - 1].len += j->cs[c].len;
            else csm[ncm++] = j->cs[c];
        }
        void *xp = base + up64((size_t)p->N * sizeof(int64_t)) + up64((size_t)j->n_cs * sizeof(st_span));
        if (p->dp1) { /* sized on the unmerged spans (merging only shrinks its padding), laid out on the merged */
            /* jobs that read the same x over the same spans (a MoE layer's
             * up projections) share one prepared copy */
            p->xstride = up64(p->o->dp1_bytes(j->cs, j->n_cs));
            for (int m = 0; m < k && !p->xp; m++)
                if (pl[m].dp1 && pl[m].o == p->o && pl[m].x == j->x && pl[m].ldx == j->ldx && pl[m].T == j->T &&
                    pl[m].n_cs == ncm && !memcmp(pl[m].cs, csm, (size_t)ncm * sizeof(st_span))) {
                    p->xp = pl[m].xp;
                    p->xstride = pl[m].xstride;
                }
            if (!p->xp) {
                for (int t = 0; t < j->T; t++)
                    p->o->dp1_prep(csm, ncm, j->x + (size_t)t * j->ldx, (unsigned char *)xp + (size_t)t * p->xstride);
                p->xp = xp;
            }
        } else if (p->nvfp4) {
            nvfp4_permute_x(csm, ncm, p->K, j->x, j->ldx, j->T, (float *)xp);
            p->x = (const float *)xp;
            p->ldx = (int)p->K;
        }
        p->cs = csm;
        p->n_cs = ncm;
    }
    int nth = st_get_threads();
    if (elems < ST_PAR_MIN_ELEMS) nth = 1;
    st_prof *prof = t_prof;
    prof_busy busy = {0}, *pb = prof ? &busy : NULL;
    const double t0 = prof ? st_time() : 0;
#pragma omp parallel num_threads(nth) if (nth > 1)
    {
        const double tb = busy_start(pb);
        for (int i = 0; i < np; i++) { /* done with a job: straight on to the next */
            gv_plan *p = &pl[i];
            for (;;) {
                int64_t nn;
                const int64_t j0 = next_chunk(&p->next, p->N, nth, &nn);
                if (j0 < 0) break;
                if (p->dp1)
                    p->o->dp1_gemv(p->W, p->rows + j0, (int)nn, p->cs, p->n_cs, p->xp, p->xstride, p->T, p->y + j0,
                                   p->ldy, p->accumulate);
                else p->o->gemv(p->W, p->rows + j0, (int)nn, p->cs, p->n_cs, p->x, p->ldx, p->y + j0, p->ldy, p->T,
                                p->accumulate);
            }
        }
        busy_add(pb, tb);
    }
    if (prof) {
        const double wall = st_time() - t0, nb = atomic_load(&busy.n);
        const double work = nb > 0 ? atomic_load(&busy.busy) / nb : wall;
        prof->s[ST_PROF_MATMUL] += work < wall ? work : wall;
        prof->s[ST_PROF_SYNC] += work < wall ? wall - work : 0;
        for (int i = 0; i < np; i++) {
            prof->flops += 2.0 * (double)pl[i].N * (double)pl[i].K * pl[i].T;
            prof->bytes += (double)pl[i].N * (double)pl[i].K *
                           (pl[i].W->dt == ST_DT_NVFP4 ? 0.5 + 1.0 / 16 : (double)st_dtype_size(pl[i].W->dt));
        }
    }
}

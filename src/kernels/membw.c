/*
 * membw.c — the machine's measured limits that speed is judged against: read
 * bandwidth (decode streams every active weight once per token) and the fp32
 * FMA peak (prefill is matrix work).
 */
#include "kernels/kernels.h"
#include "util/util.h"
#include "starling.h"
#include "util/util.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__SSE2__)
#include <emmintrin.h>
#endif

/* The buffer is read the way a mat-vec reads weights: blocks of ST_BW_ROWS
 * rows of ST_BW_ROW bytes, all rows of a block in flight at once (one DRAM
 * stream each). On this kind of machine that is ~1.6x faster per core than a
 * single sequential stream, and it is the pattern decode is judged by.
 * Returns a sum so the compiler cannot drop the reads. */
#define ST_BW_ROWS 8
#define ST_BW_ROW 8192
#define ST_BW_BLOCK (ST_BW_ROWS * ST_BW_ROW)

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static uint64_t read_avx512(const unsigned char *p, size_t n) {
    __m512i a[ST_BW_ROWS];
    for (int r = 0; r < ST_BW_ROWS; r++) a[r] = _mm512_setzero_si512();
    for (size_t b = 0; b < n; b += ST_BW_BLOCK)
        for (size_t k = 0; k < ST_BW_ROW; k += 64)
#pragma GCC unroll 8
            for (int r = 0; r < ST_BW_ROWS; r++)
                a[r] = _mm512_add_epi64(a[r], _mm512_load_si512(p + b + (size_t)r * ST_BW_ROW + k));
    for (int r = 1; r < ST_BW_ROWS; r++) a[0] = _mm512_add_epi64(a[0], a[r]);
    uint64_t o[8], t = 0; /* unsigned: _mm512_reduce_add_epi64 adds signed (UB on overflow) */
    _mm512_storeu_si512(o, a[0]);
    for (int i = 0; i < 8; i++) t += o[i];
    return t;
}

__attribute__((target("avx2"))) static uint64_t read_avx2(const unsigned char *p, size_t n) {
    __m256i a[ST_BW_ROWS];
    for (int r = 0; r < ST_BW_ROWS; r++) a[r] = _mm256_setzero_si256();
    for (size_t b = 0; b < n; b += ST_BW_BLOCK)
        for (size_t k = 0; k < ST_BW_ROW; k += 64)
#pragma GCC unroll 8
            for (int r = 0; r < ST_BW_ROWS; r++) {
                const __m256i *q = (const __m256i *)(p + b + (size_t)r * ST_BW_ROW + k);
                a[r] = _mm256_add_epi64(a[r], _mm256_or_si256(_mm256_load_si256(q), _mm256_load_si256(q + 1)));
            }
    for (int r = 1; r < ST_BW_ROWS; r++) a[0] = _mm256_add_epi64(a[0], a[r]);
    uint64_t o[4];
    _mm256_storeu_si256((__m256i *)o, a[0]);
    return o[0] + o[1] + o[2] + o[3];
}
#endif

static uint64_t read_portable(const unsigned char *p, size_t n) {
    uint64_t s[ST_BW_ROWS] = {0};
    for (size_t b = 0; b < n; b += ST_BW_BLOCK)
        for (size_t k = 0; k < ST_BW_ROW; k += 64)
            for (int r = 0; r < ST_BW_ROWS; r++) {
                const unsigned char *q = p + b + (size_t)r * ST_BW_ROW + k;
#if defined(__SSE2__)
                __m128i v = _mm_or_si128(_mm_or_si128(_mm_load_si128((const __m128i *)q),
                                                      _mm_load_si128((const __m128i *)(q + 16))),
                                         _mm_or_si128(_mm_load_si128((const __m128i *)(q + 32)),
                                                      _mm_load_si128((const __m128i *)(q + 48))));
                s[r] += (uint64_t)_mm_cvtsi128_si64(v);
#else
                uint64_t v;
                memcpy(&v, q, 8);
                s[r] += v;
#endif
            }
    uint64_t t = 0;
    for (int r = 0; r < ST_BW_ROWS; r++) t += s[r];
    return t;
}

static uint64_t read_sum(st_isa isa, const unsigned char *p, size_t n) {
#if defined(__x86_64__)
    if (isa == ST_ISA_AVX512) return read_avx512(p, n);
    if (isa == ST_ISA_AVX2) return read_avx2(p, n);
#endif
    (void)isa;
    return read_portable(p, n);
}

double st_measure_read_bandwidth(size_t bytes, int threads) {
    if (threads <= 0) threads = st_get_threads();
    /* each thread reads a whole number of row blocks */
    const st_isa isa = st_isa_get();
    const size_t unit = (size_t)ST_BW_BLOCK * (size_t)threads;
    bytes = (bytes / unit) * unit;
    if (bytes == 0) bytes = unit;
    unsigned char *buf = st_aligned_malloc(bytes);
    if (!buf) return -1.0;
    const size_t slice = bytes / (size_t)threads;

    /* first touch from the reading threads (page placement), non-zero data */
#pragma omp parallel num_threads(threads)
    {
        const int tid = omp_get_thread_num();
        if (tid < threads) memset(buf + (size_t)tid * slice, 1 + tid, slice);
    }

    volatile uint64_t sink = 0;
    double best = 0.0, total = 0.0;
    for (int rep = 0; rep < 50 && (rep < 3 || total < 0.4); rep++) {
        uint64_t sum = 0;
        double t0 = st_time();
#pragma omp parallel num_threads(threads) reduction(+ : sum)
        {
            const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
            /* if fewer threads came than asked, the present ones share the work */
            for (int s = tid; s < threads; s += nt) sum += read_sum(isa, buf + (size_t)s * slice, slice);
        }
        double dt = st_time() - t0;
        sink += sum;
        total += dt;
        if (dt > 0 && (double)bytes / dt > best) best = (double)bytes / dt;
    }
    (void)sink;
    free(buf);
    return best * 1e-9;
}

/* ------------------------------------------------------------ FMA peak */

/* Independent FMA chains in registers, no memory: what one core can compute. */
#if defined(__x86_64__)
__attribute__((target("avx512f"))) static double fma_loop_avx512(double seconds, double *flops) {
    __m512 a[16], b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 16; i++) a[i] = _mm512_set1_ps((float)i);
    long iters = 0;
    double t0 = st_time(), dt;
    do {
        for (int k = 0; k < 4096; k++)
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++) a[i] = _mm512_fmadd_ps(a[i], b, c);
        iters += 4096;
        dt = st_time() - t0;
    } while (dt < seconds);
    float sink = 0;
    for (int i = 0; i < 16; i++) sink += _mm512_reduce_add_ps(a[i]);
    *flops = (double)iters * 16 * 16 * 2 + (sink == 12345.0f);
    return dt;
}

__attribute__((target("avx2,fma"))) static double fma_loop_avx2(double seconds, double *flops) {
    __m256 a[12], b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps((float)i);
    long iters = 0;
    double t0 = st_time(), dt;
    do {
        for (int k = 0; k < 4096; k++)
#pragma GCC unroll 12
            for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(a[i], b, c);
        iters += 4096;
        dt = st_time() - t0;
    } while (dt < seconds);
    float s[8], sink = 0;
    for (int i = 0; i < 12; i++) {
        _mm256_storeu_ps(s, a[i]);
        sink += s[0];
    }
    *flops = (double)iters * 12 * 8 * 2 + (sink == 12345.0f);
    return dt;
}
#endif

double st_measure_fma_gflops(int threads) {
    if (threads <= 0) threads = st_get_threads();
    const st_isa isa = st_isa_get();
    double tot = 0;
#pragma omp parallel num_threads(threads) reduction(+ : tot)
    {
        /* best of 6 short rounds per thread: on a shared machine a round in
         * which this thread lost its core says nothing about the core */
        double best = 0;
        for (int r = 0; r < 6; r++) {
            double flops = 0, dt = 1;
#if defined(__x86_64__)
            if (isa == ST_ISA_AVX512) dt = fma_loop_avx512(0.04, &flops);
            else if (isa == ST_ISA_AVX2) dt = fma_loop_avx2(0.04, &flops);
#endif
            if (flops / dt * 1e-9 > best) best = flops / dt * 1e-9;
        }
        tot += best;
    }
    (void)isa;
    return tot;
}

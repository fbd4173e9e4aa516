/*
 * matmul_avx512.c — AVX-512 (F/BW/VL/DQ) kernels for st_matmul: the decode
 * mat-vec, the GEMM weight-panel packer and 12/8/4 x 32 fp32 micro-kernels.
 * Compiled with AVX-512 flags; reached only through st_mm_ops_avx512 after
 * cpuid said yes. Weights are widened to fp32 in registers (no bf16 dot
 * products: activations stay fp32 so logits match fp32 references).
 */
#include "kernels/kernels.h"

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))

/* Multiplier applied to converted values / finished dot products. The e4m3
 * decode yields value·2^-8 (see e4m3_to_f16bits), folded back in here. (The
 * f16 route is vcvtph2ps-bound, ~22 G weights/s per Zen 5 core in cache; a
 * direct-to-fp32 bit trick measured slower.) */
static float dt_mul(const st_mat *W) {
    float s = W->scale == 0.0f ? 1.0f : W->scale;
    return W->dt == ST_DT_F8_E4M3 ? s * 256.0f : s;
}

/* e4m3fn -> f16 bits with the same code fields: sign<<15 | (e,m)<<7. Read as
 * f16 (bias 15) that is exactly the e4m3 value (bias 7) times 2^-8, subnormals
 * included. Input: the bytes sign-extended to 16 bits, so one shift puts the
 * sign in bit 15 (and a copy in bit 14, masked off). S.1111.111 (NaN in
 * e4m3fn) becomes an f16 NaN. */
AI __m512i e4m3_to_f16bits(__m512i sx) {
    const __m512i h = _mm512_and_si512(_mm512_slli_epi16(sx, 7), _mm512_set1_epi16((short)0xbf80));
    const __m512i m = _mm512_set1_epi16(0x3f80);
    return _mm512_mask_mov_epi16(h, _mm512_cmpeq_epi16_mask(_mm512_and_si512(h, m), m),
                                 _mm512_set1_epi16(0x7e00));
}

/* 32 weights of type DT at p -> fp32 lanes 0..15 (lo) and 16..31 (hi).
 * MASKED: only the lanes in m are read (tails; never faults past them). */
AI void ld32(st_dtype DT, const unsigned char *p, __mmask32 m, int MASKED, __m512 *lo, __m512 *hi) {
    switch (DT) {
    case ST_DT_F32:
        if (MASKED) {
            *lo = _mm512_maskz_loadu_ps((__mmask16)m, p);
            *hi = _mm512_maskz_loadu_ps((__mmask16)(m >> 16), p + 64);
        } else {
            *lo = _mm512_loadu_ps(p);
            *hi = _mm512_loadu_ps(p + 64);
        }
        break;
    case ST_DT_BF16: {
        /* bf16 is the top half of an fp32: zero-extend and shift */
        __m256i a, b;
        if (MASKED) {
            a = _mm256_maskz_loadu_epi16((__mmask16)m, p);
            b = _mm256_maskz_loadu_epi16((__mmask16)(m >> 16), p + 32);
        } else {
            a = _mm256_loadu_si256((const __m256i *)p);
            b = _mm256_loadu_si256((const __m256i *)(p + 32));
        }
        *lo = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(a), 16));
        *hi = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16));
        break;
    }
    case ST_DT_F16: {
        __m256i a, b;
        if (MASKED) {
            a = _mm256_maskz_loadu_epi16((__mmask16)m, p);
            b = _mm256_maskz_loadu_epi16((__mmask16)(m >> 16), p + 32);
        } else {
            a = _mm256_loadu_si256((const __m256i *)p);
            b = _mm256_loadu_si256((const __m256i *)(p + 32));
        }
        *lo = _mm512_cvtph_ps(a);
        *hi = _mm512_cvtph_ps(b);
        break;
    }
    case ST_DT_F8_E4M3:
    case ST_DT_F8_E5M2: {
        __m256i b8 = MASKED ? _mm256_maskz_loadu_epi8(m, p) : _mm256_loadu_si256((const __m256i *)p);
        /* e5m2 is the top byte of an f16 */
        __m512i h = DT == ST_DT_F8_E4M3 ? e4m3_to_f16bits(_mm512_cvtepi8_epi16(b8))
                                        : _mm512_slli_epi16(_mm512_cvtepu8_epi16(b8), 8);
        *lo = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
        *hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
        break;
    }
    default:
        *lo = *hi = _mm512_setzero_ps();
        break;
    }
}

static inline __mmask32 tail_mask32(int n) { return n >= 32 ? 0xffffffffu : (__mmask32)((1u << n) - 1u); }

/* The lanes in m (a tail of <= 16) of 16 weights at p -> fp32. */
AI __m512 ld16_masked(st_dtype DT, const unsigned char *p, __mmask16 m) {
    switch (DT) {
    case ST_DT_F32: return _mm512_maskz_loadu_ps(m, p);
    case ST_DT_BF16:
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
    case ST_DT_F16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
    case ST_DT_F8_E4M3: { /* as e4m3_to_f16bits, 16 lanes */
        const __m256i h = _mm256_and_si256(_mm256_slli_epi16(_mm256_cvtepi8_epi16(_mm_maskz_loadu_epi8(m, p)), 7),
                                           _mm256_set1_epi16((short)0xbf80));
        const __m256i c = _mm256_set1_epi16(0x3f80);
        return _mm512_cvtph_ps(_mm256_mask_mov_epi16(h, _mm256_cmpeq_epi16_mask(_mm256_and_si256(h, c), c),
                                                     _mm256_set1_epi16(0x7e00)));
    }
    case ST_DT_F8_E5M2: return _mm512_cvtph_ps(_mm256_slli_epi16(_mm256_cvtepu8_epi16(_mm_maskz_loadu_epi8(m, p)), 8));
    default: return _mm512_setzero_ps();
    }
}

/* ------------------------------------------------------------ decode (gemv) */

/* NR rows x NT tokens over every column span; out[r][t] = dot products
 * (without the dtype multiplier). Accumulators stay in registers across spans;
 * with few (row, token) pairs each gets two chains to hide FMA latency.
 * 8 rows in flight stream much faster than 4 (more concurrent DRAM streams:
 * on Zen 5, 1 thread, T=3: 31 vs 18 GB/s), so 8 rows for every T <= 3. */
/* acc += W[rows, k..k+n) · x[t, k..k+n) for 0 < n <= 32 columns, through
 * masked loads (never touching memory past them): alignment heads and tails. */
AI void gemv_part(st_dtype DT, const int NR, const int NT, const int A2, const unsigned char *const *p,
                  size_t esz, const float *xs, int ldx, int k, int n, __m512 acc[8][4][2]) {
    if (n <= 16) { /* one vector (e.g. the tail of a 48-wide head cut) */
        const __mmask16 m = (__mmask16)tail_mask32(n);
        __m512 xl[4];
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) xl[t] = _mm512_maskz_loadu_ps(m, xs + (size_t)t * ldx + k);
#pragma GCC unroll 8
        for (int r = 0; r < NR; r++) {
            const __m512 lo = ld16_masked(DT, p[r] + (size_t)k * esz, m);
#pragma GCC unroll 4
            for (int t = 0; t < NT; t++) acc[r][t][0] = _mm512_fmadd_ps(lo, xl[t], acc[r][t][0]);
        }
        return;
    }
    const __mmask32 m = tail_mask32(n);
    __m512 xl[4], xh[4];
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++) {
        xl[t] = _mm512_maskz_loadu_ps((__mmask16)m, xs + (size_t)t * ldx + k);
        xh[t] = _mm512_maskz_loadu_ps((__mmask16)(m >> 16), xs + (size_t)t * ldx + k + 16);
    }
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++) {
        __m512 lo, hi;
        ld32(DT, p[r] + (size_t)k * esz, m, 1, &lo, &hi);
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            acc[r][t][0] = _mm512_fmadd_ps(lo, xl[t], acc[r][t][0]);
            acc[r][t][A2 - 1] = _mm512_fmadd_ps(hi, xh[t], acc[r][t][A2 - 1]);
        }
    }
}

/* Columns to peel off before p's 32-column loads stop straddling cache lines
 * (safetensors data is only 8-byte aligned, so a BF16 row typically starts
 * 16 bytes into a line and every full-width load would touch two lines).
 * Only when every row of the block shares p[0]'s alignment. */
AI int gemv_head(const int NR, const unsigned char *const *p, size_t esz, int len) {
    const uintptr_t a = esz >= 2 ? 64 : 32, mis = (uintptr_t)p[0] & (a - 1);
    if (!mis || mis % esz) return 0;
#pragma GCC unroll 8
    for (int r = 1; r < NR; r++)
        if (((uintptr_t)p[r] & (a - 1)) != mis) return 0;
    const int h = (int)((a - mis) / esz);
    return h < len ? h : len;
}

#define PF_AHEAD 512 /* ST_PF_AHEAD's distance in bytes (kernels.h) */
AI void gemv_blk(st_dtype DT, const int NR, const int NT, const int PF, const unsigned char *const *wr,
                 const unsigned char *const *pf, size_t esz, const st_span *cs, int n_cs, const float *x,
                 int ldx, float out[8][4]) {
    /* one accumulator per row and token, whatever the block shape: a row's
     * sum then runs in the same order for every token count, so a sequence
     * decoded in a batch gets bit for bit the logits it gets alone (greedy
     * output identical at any concurrency) */
    const int A2 = 1;
    /* with 8 rows x 3 tokens the accumulators need 24 of the 32 registers */
    const int XMEM = NR * NT > 16;
    __m512 acc[8][4][2];
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) acc[r][t][0] = acc[r][t][1] = _mm512_setzero_ps();

    int xi = 0;
    for (int s = 0; s < n_cs; s++) {
        const unsigned char *p[8], *q[8];
#pragma GCC unroll 8
        for (int r = 0; r < NR; r++) {
            p[r] = wr[r] + (size_t)cs[s].off * esz;
            q[r] = pf[r] + (size_t)cs[s].off * esz;
        }
        const float *xs = x + xi;
        const int len = cs[s].len > 0 ? cs[s].len : 0; /* negative = empty */
        const size_t span_b = (size_t)len * esz;
        int k = gemv_head(NR, p, esz, len);
        if (k) gemv_part(DT, NR, NT, A2, p, esz, xs, ldx, 0, k, acc);
        for (; k + 32 <= len; k += 32) {
            __m512 xl[4], xh[4];
            if (!XMEM)
#pragma GCC unroll 4
                for (int t = 0; t < NT; t++) {
                    xl[t] = _mm512_loadu_ps(xs + (size_t)t * ldx + k);
                    xh[t] = _mm512_loadu_ps(xs + (size_t)t * ldx + k + 16);
                }
#pragma GCC unroll 8
            for (int r = 0; r < NR; r++) {
                __m512 lo, hi;
                /* the same 32 columns of the next row block: a whole block
                 * ahead, so each row's first lines are in flight before the
                 * hardware prefetcher would have found the new streams.
                 * Non-temporal: a weight is used once per token, and should
                 * not push the SSM states, KV cache and activations out of
                 * the caches (measured on nano8: ~10% faster decode than
                 * into L2, ~15% than none; noisy machine, 3 rounds) */
                if (PF == ST_PF_NTA) {
                    _mm_prefetch((const char *)(q[r] + (size_t)k * esz), _MM_HINT_NTA);
                    if (esz == 4) _mm_prefetch((const char *)(q[r] + (size_t)k * esz + 64), _MM_HINT_NTA);
                }
                /* ahead in the row, then on into the next block's row */
                if (PF == ST_PF_AHEAD && (esz > 1 || !(k & 63)))
                    for (size_t o = (size_t)k * esz + PF_AHEAD, e = o + 32 * esz; o < e; o += 64)
                        _mm_prefetch((const char *)(o < span_b ? p[r] + o : q[r] + (o - span_b)), _MM_HINT_T0);
                ld32(DT, p[r] + (size_t)k * esz, 0, 0, &lo, &hi);
#pragma GCC unroll 4
                for (int t = 0; t < NT; t++) {
                    /* XMEM: x straight from L1 as an FMA memory operand */
                    const __m512 a = XMEM ? _mm512_loadu_ps(xs + (size_t)t * ldx + k) : xl[t];
                    const __m512 b = XMEM ? _mm512_loadu_ps(xs + (size_t)t * ldx + k + 16) : xh[t];
                    acc[r][t][0] = _mm512_fmadd_ps(lo, a, acc[r][t][0]);
                    acc[r][t][A2 - 1] = _mm512_fmadd_ps(hi, b, acc[r][t][A2 - 1]);
                }
            }
        }
        if (k < len) gemv_part(DT, NR, NT, A2, p, esz, xs, ldx, k, len - k, acc);
        xi += len;
    }
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++)
            out[r][t] = _mm512_reduce_add_ps(A2 == 2 ? _mm512_add_ps(acc[r][t][0], acc[r][t][1])
                                                     : acc[r][t][0]);
}

/* One instantiation per (dtype, rows, tokens) so the accumulators are
 * registers: 8 rows x <= 3 tokens, 4 or 1 rows x <= 4 tokens. */
typedef void (*gemv_fn)(const unsigned char *const *, const unsigned char *const *, size_t,
                        const st_span *, int, const float *, int, float[8][4]);
#define GEMV_FN(DT, NR, NT, NTA)                                                              \
    static void gemv_##DT##_##NR##_##NT##_##NTA(const unsigned char *const *wr,               \
                                                const unsigned char *const *pf, size_t esz,   \
                                                const st_span *cs, int n_cs, const float *x,  \
                                                int ldx, float out[8][4]) {                   \
        gemv_blk(ST_DT_##DT, NR, NT, NTA, wr, pf, esz, cs, n_cs, x, ldx, out);                \
    }
#define GEMV_FNS_PF(DT, NTA)                                                                  \
    GEMV_FN(DT, 8, 1, NTA) GEMV_FN(DT, 8, 2, NTA) GEMV_FN(DT, 8, 3, NTA)                      \
    GEMV_FN(DT, 4, 1, NTA) GEMV_FN(DT, 4, 2, NTA) GEMV_FN(DT, 4, 3, NTA) GEMV_FN(DT, 4, 4, NTA) \
    GEMV_FN(DT, 1, 1, NTA) GEMV_FN(DT, 1, 2, NTA) GEMV_FN(DT, 1, 3, NTA) GEMV_FN(DT, 1, 4, NTA)
#define GEMV_ROW(DT, NTA)                                                                     \
    {{gemv_##DT##_1_1_##NTA, gemv_##DT##_1_2_##NTA, gemv_##DT##_1_3_##NTA, gemv_##DT##_1_4_##NTA}, \
     {gemv_##DT##_4_1_##NTA, gemv_##DT##_4_2_##NTA, gemv_##DT##_4_3_##NTA, gemv_##DT##_4_4_##NTA}, \
     {gemv_##DT##_8_1_##NTA, gemv_##DT##_8_2_##NTA, gemv_##DT##_8_3_##NTA, NULL}}
/* [prefetch mode (ST_PF_*)][rows 1/4/8][tokens - 1] */
#define GEMV_FNS(DT)                                                                          \
    GEMV_FNS_PF(DT, 0) GEMV_FNS_PF(DT, 1) GEMV_FNS_PF(DT, 2)                                  \
    static const gemv_fn gemv_tab_##DT[3][3][4] = {GEMV_ROW(DT, 0), GEMV_ROW(DT, 1), GEMV_ROW(DT, 2)};
GEMV_FNS(F32)
GEMV_FNS(BF16)
GEMV_FNS(F16)
GEMV_FNS(F8_E4M3)
GEMV_FNS(F8_E5M2)

static void gemv(const st_mat *W, const int64_t *rows, int n, const st_span *cs, int n_cs,
                 const float *x, int ldx, float *y, int ldy, int T, int accumulate) {
    const gemv_fn(*tab)[4];
    const int pfm = st_prefetch_mode();
    switch (W->dt) {
    case ST_DT_F32: tab = gemv_tab_F32[pfm]; break;
    case ST_DT_BF16: tab = gemv_tab_BF16[pfm]; break;
    case ST_DT_F16: tab = gemv_tab_F16[pfm]; break;
    case ST_DT_F8_E4M3: tab = gemv_tab_F8_E4M3[pfm]; break;
    case ST_DT_F8_E5M2: tab = gemv_tab_F8_E5M2[pfm]; break;
    default: return;
    }
    const size_t esz = st_dtype_size(W->dt), ld = (size_t)W->cols * esz;
    const unsigned char *base = (const unsigned char *)W->data;
    const float mul = dt_mul(W);
    /* tokens per pass over a row block: all of them up to 3 (8 rows), else 4
     * at a time over 4 rows (the block stays in L1/L2 between passes) */
    const int nr_big = T <= 3 ? 8 : 4;
    for (int j = 0; j < n;) {
        const int nr = n - j >= nr_big ? nr_big : n - j >= 4 ? 4 : 1;
        const int ti = nr == 8 ? 2 : nr == 4 ? 1 : 0, tstep = nr == 8 ? 3 : 4;
        const unsigned char *wr[8], *pf[8];
        for (int r = 0; r < nr; r++) {
            wr[r] = base + (size_t)rows[j + r] * ld;
            /* next block's rows to prefetch (this block's own at the end) */
            pf[r] = j + nr + r < n ? base + (size_t)rows[j + nr + r] * ld : wr[r];
        }
        /* token blocks reuse the rows while they are hot in L1/L2 */
        for (int t0 = 0; t0 < T; t0 += tstep) {
            const int nt = T - t0 < tstep ? T - t0 : tstep;
            float out[8][4];
            tab[ti][nt - 1](wr, t0 ? wr : pf, esz, cs, n_cs, x + (size_t)t0 * ldx, ldx, out);
            for (int t = 0; t < nt; t++) {
                float *yt = y + (size_t)(t0 + t) * ldy + j;
                for (int r = 0; r < nr; r++)
                    yt[r] = accumulate ? yt[r] + out[r][t] * mul : out[r][t] * mul;
            }
        }
        j += nr;
    }
}

/* ------------------------------------------------------------ GEMM packing */

/* dst[0..n) = fp32(src[0..n)) · mul (n >= 0, any alignment). */
static void cvt_row(st_dtype dt, const unsigned char *src, float *dst, int n, float mul) {
    const size_t esz = st_dtype_size(dt);
    const __m512 vm = _mm512_set1_ps(mul);
    int k = 0;
#define CVT_LOOP(DT)                                                                          \
    for (; k + 32 <= n; k += 32) {                                                            \
        __m512 lo, hi;                                                                        \
        ld32(DT, src + (size_t)k * esz, 0, 0, &lo, &hi);                                      \
        _mm512_storeu_ps(dst + k, _mm512_mul_ps(lo, vm));                                     \
        _mm512_storeu_ps(dst + k + 16, _mm512_mul_ps(hi, vm));                                \
    }                                                                                         \
    if (k < n) {                                                                              \
        const __mmask32 m = tail_mask32(n - k);                                               \
        __m512 lo, hi;                                                                        \
        ld32(DT, src + (size_t)k * esz, m, 1, &lo, &hi);                                      \
        _mm512_mask_storeu_ps(dst + k, (__mmask16)m, _mm512_mul_ps(lo, vm));                  \
        _mm512_mask_storeu_ps(dst + k + 16, (__mmask16)(m >> 16), _mm512_mul_ps(hi, vm));     \
    }
    switch (dt) {
    case ST_DT_F32: CVT_LOOP(ST_DT_F32) break;
    case ST_DT_BF16: CVT_LOOP(ST_DT_BF16) break;
    case ST_DT_F16: CVT_LOOP(ST_DT_F16) break;
    case ST_DT_F8_E4M3: CVT_LOOP(ST_DT_F8_E4M3) break;
    case ST_DT_F8_E5M2: CVT_LOOP(ST_DT_F8_E5M2) break;
    default: memset(dst, 0, (size_t)n * sizeof(float)); break;
    }
#undef CVT_LOOP
}

/* One transpose stage: swap the off-diagonal d x d blocks of every 2d x 2d
 * block (rows i and i+d exchange the lanes whose bit d differs). */
#define TR_STAGE(v, d, il, ih)                                                                \
    do {                                                                                      \
        _Pragma("GCC unroll 16") for (int i_ = 0; i_ < 16; i_++) {                            \
            if (i_ & (d)) continue;                                                           \
            const __m512 a_ = v[i_], b_ = v[i_ + (d)];                                        \
            v[i_] = _mm512_permutex2var_ps(a_, il, b_);                                       \
            v[i_ + (d)] = _mm512_permutex2var_ps(a_, ih, b_);                                 \
        }                                                                                     \
    } while (0)

/* In-register 16x16 transpose, stages d = 8, 4, 2, 1. For lane k of the
 * stage-d result: low row takes a[k] if bit d of k is clear, else b[k-d];
 * high row takes a[k+d] if clear, else b[k] (b lanes are indices 16..31). */
AI void transpose16(__m512 v[16]) {
    const __m512i l8 = _mm512_set_epi32(23, 22, 21, 20, 19, 18, 17, 16, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i h8 = _mm512_set_epi32(31, 30, 29, 28, 27, 26, 25, 24, 15, 14, 13, 12, 11, 10, 9, 8);
    const __m512i l4 = _mm512_set_epi32(27, 26, 25, 24, 11, 10, 9, 8, 19, 18, 17, 16, 3, 2, 1, 0);
    const __m512i h4 = _mm512_set_epi32(31, 30, 29, 28, 15, 14, 13, 12, 23, 22, 21, 20, 7, 6, 5, 4);
    const __m512i l2 = _mm512_set_epi32(29, 28, 13, 12, 25, 24, 9, 8, 21, 20, 5, 4, 17, 16, 1, 0);
    const __m512i h2 = _mm512_set_epi32(31, 30, 15, 14, 27, 26, 11, 10, 23, 22, 7, 6, 19, 18, 3, 2);
    const __m512i l1 = _mm512_set_epi32(30, 14, 28, 12, 26, 10, 24, 8, 22, 6, 20, 4, 18, 2, 16, 0);
    const __m512i h1 = _mm512_set_epi32(31, 15, 29, 13, 27, 11, 25, 9, 23, 7, 21, 5, 19, 3, 17, 1);
    TR_STAGE(v, 8, l8, h8);
    TR_STAGE(v, 4, l4, h4);
    TR_STAGE(v, 2, l2, h2);
    TR_STAGE(v, 1, l1, h1);
}

#define NR512 32
#define MR512 12

/* tmp[NR512][kcp] (row-major converted rows) -> dst[kcp][NR512]. */
static void transpose_panel(const float *tmp, int kcp, float *dst) {
    for (int rb = 0; rb < NR512; rb += 16)
        for (int kb = 0; kb < kcp; kb += 16) {
            __m512 v[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++) v[i] = _mm512_load_ps(tmp + (size_t)(rb + i) * kcp + kb);
            transpose16(v);
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++) _mm512_store_ps(dst + (size_t)(kb + i) * NR512 + rb, v[i]);
        }
}

static void pack_b(const st_mat *W, const int64_t *rows, int n, const st_span *seg, int nseg,
                   int kc, float *tmp /* [NR][kcp] */, float *dst /* [kcp][NR] */) {
    const int kcp = (kc + 15) & ~15;
    const size_t esz = st_dtype_size(W->dt), ld = (size_t)W->cols * esz;
    const float mul = dt_mul(W);
    for (int r = 0; r < NR512; r++) {
        float *t = tmp + (size_t)r * kcp;
        int k = 0;
        if (r < n) {
            const unsigned char *row = (const unsigned char *)W->data + (size_t)rows[r] * ld;
            for (int s = 0; s < nseg; s++) {
                cvt_row(W->dt, row + (size_t)seg[s].off * esz, t + k, seg[s].len, mul);
                k += seg[s].len;
            }
        }
        memset(t + k, 0, (size_t)(kcp - k) * sizeof(float));
    }
    transpose_panel(tmp, kcp, dst);
}

/* ------------------------------------------------------------ NVFP4 */

/* ModelOpt NVFP4 (docs/architecture.md §5.3): codes [rows][cols/2] (element 2j in
 * the low nibble of byte j), E4M3 block scales [rows][cols/16] (sign
 * ignored), per-tensor scale. Column spans are 16-aligned (st_matmul checks).
 *
 * A 32-element chunk is 16 code bytes: vpmovzxbd puts byte j in lane j, so the
 * low nibbles are elements 0,2,..,30 and (after >> 4) the high ones 1,3,..,31;
 * vpermps looks both up in the 16-entry E2M1 table (it only reads index bits
 * 3:0, so no masking). The decode path therefore wants x in [evens | odds]
 * order per chunk (st_matmul permutes it once per call; see kernels.h); lanes
 * 0..7 of either half belong to block 2c and lanes 8..15 to block 2c+1, so one
 * scale vector [s_a x8 | s_b x8] serves both halves. */

AI __m512 nv_tab(void) {
    return _mm512_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f, -0.0f, -0.5f, -1.0f, -1.5f,
                          -2.0f, -3.0f, -4.0f, -6.0f);
}

AI float nv_bs(unsigned char b) { return st_e4m3_lut[b & 0x7f]; }

/* [a x8 | b x8] */
AI __m512 nv_scale2(float a, float b) {
    return _mm512_insertf32x8(_mm512_set1_ps(a), _mm256_set1_ps(b), 1);
}

/* 32 elements from 16 code bytes at p: evens and odds, unscaled. */
AI void nv_ld32(const unsigned char *p, __m512 tab, __m512 *ev, __m512 *od) {
    const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
    *ev = _mm512_permutexvar_ps(v, tab);
    *od = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), tab);
}

/* 16 elements from 8 code bytes at p: [evens x8 | odds x8], unscaled. */
AI __m512 nv_ld16(const unsigned char *p, __m512 tab) {
    const __m128i b = _mm_loadl_epi64((const __m128i *)p);
    __m512i v = _mm512_cvtepu8_epi32(_mm_unpacklo_epi64(b, b));
    v = _mm512_mask_srli_epi32(v, 0xff00, v, 4);
    return _mm512_permutexvar_ps(v, tab);
}

/* 16 block scales at q (E4M3, sign ignored) -> fp32, as st_e4m3_lut does:
 * normal codes by placing exponent and mantissa in an fp32 (bias 7 -> 127),
 * subnormals as m·2^-9, 0x7f as NaN. */
AI __m512 nv_scales16(const unsigned char *q) {
    const __m512i b = _mm512_and_si512(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)q)),
                                       _mm512_set1_epi32(0x7f));
    __m512 v = _mm512_castsi512_ps(_mm512_add_epi32(_mm512_slli_epi32(b, 20), _mm512_set1_epi32(120 << 23)));
    v = _mm512_mask_mov_ps(v, _mm512_cmplt_epu32_mask(b, _mm512_set1_epi32(8)),
                           _mm512_mul_ps(_mm512_cvtepi32_ps(b), _mm512_set1_ps(1.0f / 512.0f)));
    return _mm512_mask_mov_ps(v, _mm512_cmpeq_epi32_mask(b, _mm512_set1_epi32(0x7f)),
                              _mm512_castsi512_ps(_mm512_set1_epi32(0x7fc00000)));
}

/* One token, one row, 256 columns (16 blocks) from k: the block scales are
 * decoded once as a vector and spread to each 32-chunk's [s_a x8 | s_b x8]
 * by a permute (instead of two table loads and an insert per chunk). */
AI __m512 nv_row256(const unsigned char *p, const unsigned char *q, const float *xs, __m512 tab, __m512 acc) {
    const __m512 S = nv_scales16(q);
    const __m512i half = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
#pragma GCC unroll 8
    for (int c = 0; c < 8; c++) {
        __m512 ev, od;
        nv_ld32(p + 16 * c, tab, &ev, &od);
        const __m512 d = _mm512_fmadd_ps(od, _mm512_loadu_ps(xs + 32 * c + 16),
                                         _mm512_mul_ps(ev, _mm512_loadu_ps(xs + 32 * c)));
        const __m512 sv = _mm512_permutexvar_ps(_mm512_add_epi32(half, _mm512_set1_epi32(2 * c)), S);
        acc = _mm512_fmadd_ps(d, sv, acc);
    }
    return acc;
}

/* NR rows x NT tokens over every (16-aligned) column span, x permuted. */
AI void nv_gemv_blk(const int NR, const int NT, const unsigned char *const *cr,
                    const unsigned char *const *sr, const st_span *cs, int n_cs, const float *x,
                    int ldx, float out[8][4]) {
    const int A2 = NR * NT <= 8 ? 2 : 1;
    const int XMEM = NR * NT > 16;
    const __m512 tab = nv_tab();
    __m512 acc[8][4][2];
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) acc[r][t][0] = acc[r][t][1] = _mm512_setzero_ps();

    int xi = 0;
    for (int s = 0; s < n_cs; s++) {
        const int len = cs[s].len > 0 ? cs[s].len : 0;
        const unsigned char *p[8], *q[8];
#pragma GCC unroll 8
        for (int r = 0; r < NR; r++) {
            p[r] = cr[r] + (size_t)cs[s].off / 2;
            q[r] = sr[r] + (size_t)cs[s].off / 16;
        }
        const float *xs = x + xi;
        int k = 0;
        if (NT == 1)
            for (; k + 256 <= len; k += 256) {
#pragma GCC unroll 8
                for (int r = 0; r < NR; r++) acc[r][0][0] = nv_row256(p[r] + k / 2, q[r] + k / 16, xs + k, tab, acc[r][0][0]);
            }
        for (; k + 32 <= len; k += 32) {
            __m512 xe[4], xo[4];
            if (!XMEM)
#pragma GCC unroll 4
                for (int t = 0; t < NT; t++) {
                    xe[t] = _mm512_loadu_ps(xs + (size_t)t * ldx + k);
                    xo[t] = _mm512_loadu_ps(xs + (size_t)t * ldx + k + 16);
                }
#pragma GCC unroll 8
            for (int r = 0; r < NR; r++) {
                __m512 ev, od;
                nv_ld32(p[r] + k / 2, tab, &ev, &od);
                const __m512 sv = nv_scale2(nv_bs(q[r][k / 16]), nv_bs(q[r][k / 16 + 1]));
                if (NT == 1) {
                    /* one token: scale the chunk's partial dot product */
                    const __m512 a = XMEM ? _mm512_loadu_ps(xs + k) : xe[0];
                    const __m512 b = XMEM ? _mm512_loadu_ps(xs + k + 16) : xo[0];
                    const __m512 d = _mm512_fmadd_ps(od, b, _mm512_mul_ps(ev, a));
                    acc[r][0][0] = _mm512_fmadd_ps(d, sv, acc[r][0][0]);
                    continue;
                }
                ev = _mm512_mul_ps(ev, sv);
                od = _mm512_mul_ps(od, sv);
#pragma GCC unroll 4
                for (int t = 0; t < NT; t++) {
                    const __m512 a = XMEM ? _mm512_loadu_ps(xs + (size_t)t * ldx + k) : xe[t];
                    const __m512 b = XMEM ? _mm512_loadu_ps(xs + (size_t)t * ldx + k + 16) : xo[t];
                    acc[r][t][0] = _mm512_fmadd_ps(ev, a, acc[r][t][0]);
                    acc[r][t][A2 - 1] = _mm512_fmadd_ps(od, b, acc[r][t][A2 - 1]);
                }
            }
        }
        if (k < len) { /* 16 left */
            __m512 xl[4];
#pragma GCC unroll 4
            for (int t = 0; t < NT; t++) xl[t] = _mm512_loadu_ps(xs + (size_t)t * ldx + k);
#pragma GCC unroll 8
            for (int r = 0; r < NR; r++) {
                const __m512 w = _mm512_mul_ps(nv_ld16(p[r] + k / 2, tab), _mm512_set1_ps(nv_bs(q[r][k / 16])));
#pragma GCC unroll 4
                for (int t = 0; t < NT; t++) acc[r][t][0] = _mm512_fmadd_ps(w, xl[t], acc[r][t][0]);
            }
        }
        xi += len;
    }
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++)
            out[r][t] = _mm512_reduce_add_ps(A2 == 2 ? _mm512_add_ps(acc[r][t][0], acc[r][t][1])
                                                     : acc[r][t][0]);
}

typedef void (*nv_gemv_fn)(const unsigned char *const *, const unsigned char *const *,
                           const st_span *, int, const float *, int, float[8][4]);
#define NV_GEMV_FN(NR, NT)                                                                    \
    static void nv_gemv_##NR##_##NT(const unsigned char *const *cr, const unsigned char *const *sr, \
                                    const st_span *cs, int n_cs, const float *x, int ldx,     \
                                    float out[8][4]) {                                        \
        nv_gemv_blk(NR, NT, cr, sr, cs, n_cs, x, ldx, out);                                   \
    }
NV_GEMV_FN(8, 1) NV_GEMV_FN(8, 2) NV_GEMV_FN(8, 3)
NV_GEMV_FN(4, 1) NV_GEMV_FN(4, 2) NV_GEMV_FN(4, 3) NV_GEMV_FN(4, 4)
NV_GEMV_FN(1, 1) NV_GEMV_FN(1, 2) NV_GEMV_FN(1, 3) NV_GEMV_FN(1, 4)
static const nv_gemv_fn nv_gemv_tab[3][4] = {
    {nv_gemv_1_1, nv_gemv_1_2, nv_gemv_1_3, nv_gemv_1_4},
    {nv_gemv_4_1, nv_gemv_4_2, nv_gemv_4_3, nv_gemv_4_4},
    {nv_gemv_8_1, nv_gemv_8_2, nv_gemv_8_3, NULL}};

static void nv_gemv(const st_mat *W, const int64_t *rows, int n, const st_span *cs, int n_cs,
                    const float *x, int ldx, float *y, int ldy, int T, int accumulate) {
    const size_t ldc = (size_t)(W->cols / 2), lds = (size_t)(W->cols / 16);
    const unsigned char *cbase = (const unsigned char *)W->data, *sbase = W->bscale;
    const float mul = W->scale == 0.0f ? 1.0f : W->scale;
    const int nr_big = T <= 3 ? 8 : 4;
    for (int j = 0; j < n;) {
        const int nr = n - j >= nr_big ? nr_big : n - j >= 4 ? 4 : 1;
        const int ti = nr == 8 ? 2 : nr == 4 ? 1 : 0, tstep = nr == 8 ? 3 : 4;
        const unsigned char *cr[8], *sr[8];
        for (int r = 0; r < nr; r++) {
            cr[r] = cbase + (size_t)rows[j + r] * ldc;
            sr[r] = sbase + (size_t)rows[j + r] * lds;
        }
        for (int t0 = 0; t0 < T; t0 += tstep) {
            const int nt = T - t0 < tstep ? T - t0 : tstep;
            float out[8][4];
            nv_gemv_tab[ti][nt - 1](cr, sr, cs, n_cs, x + (size_t)t0 * ldx, ldx, out);
            for (int t = 0; t < nt; t++) {
                float *yt = y + (size_t)(t0 + t) * ldy + j;
                for (int r = 0; r < nr; r++)
                    yt[r] = accumulate ? yt[r] + out[r][t] * mul : out[r][t] * mul;
            }
        }
        j += nr;
    }
}

/* One row's columns [off, off+len) (16-aligned) -> fp32 in natural order. */
static void nv_cvt_row(const unsigned char *codes, const unsigned char *bs, int off, int len,
                       float *dst, float mul) {
    const __m512 tab = nv_tab();
    const __m512i il = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i ih = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    codes += off / 2;
    bs += off / 16;
    int k = 0;
    for (; k + 32 <= len; k += 32) {
        __m512 ev, od;
        nv_ld32(codes + k / 2, tab, &ev, &od);
        const __m512 sv = nv_scale2(nv_bs(bs[k / 16]) * mul, nv_bs(bs[k / 16 + 1]) * mul);
        ev = _mm512_mul_ps(ev, sv);
        od = _mm512_mul_ps(od, sv);
        _mm512_storeu_ps(dst + k, _mm512_permutex2var_ps(ev, il, od));
        _mm512_storeu_ps(dst + k + 16, _mm512_permutex2var_ps(ev, ih, od));
    }
    if (k < len) {
        const __m512i v = _mm512_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + k / 2)));
        const __m512 sv = _mm512_set1_ps(nv_bs(bs[k / 16]) * mul);
        const __m512 ev = _mm512_mul_ps(_mm512_permutexvar_ps(v, tab), sv);
        const __m512 od = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), tab), sv);
        _mm512_storeu_ps(dst + k, _mm512_permutex2var_ps(ev, il, od));
    }
}

static void nv_pack_b(const st_mat *W, const int64_t *rows, int n, const st_span *seg, int nseg,
                      int kc, float *tmp /* [NR][kcp] */, float *dst /* [kcp][NR] */) {
    const int kcp = (kc + 15) & ~15;
    const size_t ldc = (size_t)(W->cols / 2), lds = (size_t)(W->cols / 16);
    const float mul = W->scale == 0.0f ? 1.0f : W->scale;
    for (int r = 0; r < NR512; r++) {
        float *t = tmp + (size_t)r * kcp;
        int k = 0;
        if (r < n) {
            const unsigned char *codes = (const unsigned char *)W->data + (size_t)rows[r] * ldc;
            const unsigned char *bs = W->bscale + (size_t)rows[r] * lds;
            for (int s = 0; s < nseg; s++) {
                nv_cvt_row(codes, bs, seg[s].off, seg[s].len, t + k, mul);
                k += seg[s].len;
            }
        }
        memset(t + k, 0, (size_t)(kcp - k) * sizeof(float));
    }
    transpose_panel(tmp, kcp, dst);
}

/* ------------------------------------------------------------ micro-kernel */

/* MR tokens x 32 rows (MR = 12: 24 accumulators, 2 weight vectors and a
 * broadcast per step = 24 FMAs per 14 loads, b from L1, a from L2). */
AI void kernel_mr(const int MR, int kc, const float *a, const float *b, float *c, int ldc, int load_c) {
    __m512 acc[MR512][2];
    if (load_c) {
#pragma GCC unroll 12
        for (int m = 0; m < MR; m++) {
            acc[m][0] = _mm512_loadu_ps(c + (size_t)m * ldc);
            acc[m][1] = _mm512_loadu_ps(c + (size_t)m * ldc + 16);
        }
    } else {
#pragma GCC unroll 12
        for (int m = 0; m < MR; m++) acc[m][0] = acc[m][1] = _mm512_setzero_ps();
    }
    for (int k = 0; k < kc; k++) {
        const __m512 b0 = _mm512_load_ps(b + (size_t)k * NR512);
        const __m512 b1 = _mm512_load_ps(b + (size_t)k * NR512 + 16);
        const float *ak = a + (size_t)k * MR;
#pragma GCC unroll 12
        for (int m = 0; m < MR; m++) {
            const __m512 av = _mm512_set1_ps(ak[m]);
            acc[m][0] = _mm512_fmadd_ps(av, b0, acc[m][0]);
            acc[m][1] = _mm512_fmadd_ps(av, b1, acc[m][1]);
        }
    }
#pragma GCC unroll 12
    for (int m = 0; m < MR; m++) {
        _mm512_storeu_ps(c + (size_t)m * ldc, acc[m][0]);
        _mm512_storeu_ps(c + (size_t)m * ldc + 16, acc[m][1]);
    }
}

static void kernel4(int kc, const float *a, const float *b, float *c, int ldc, int load_c) {
    kernel_mr(4, kc, a, b, c, ldc, load_c);
}
static void kernel8(int kc, const float *a, const float *b, float *c, int ldc, int load_c) {
    kernel_mr(8, kc, a, b, c, ldc, load_c);
}
static void kernel12(int kc, const float *a, const float *b, float *c, int ldc, int load_c) {
    kernel_mr(12, kc, a, b, c, ldc, load_c);
}

const st_mm_ops st_mm_ops_avx512 = {
    .mr = MR512, .nr = NR512, .kc = 256,
    .gemv = gemv, .pack_b = pack_b, .kernel = {kernel4, kernel8, kernel12},
};

/* ---- one token through AVX512_BF16 dot products (st_mm_ops.dp1_*).
 *
 * The fp32 decode above is shuffle-bound: three 16-lane permutes per 32
 * weights. Here vpermw looks 32 codes up at once, straight into bf16 (every
 * E2M1 value is exact in bf16), and vdpbf16ps multiplies pairs of them with
 * x. x is split once per call into x_hi = bf16(x) and x_lo = bf16(x - x_hi),
 * so x_hi + x_lo carries 16 significant bits: the products are exact in fp32
 * and the result differs from fp32 activations by at most ~2^-17 of
 * Σ|w·x| (a hundred times below NVFP4's own rounding).
 *
 * Layout per 64 columns (32 code bytes; byte j = elements 2j | 2j+1 << 4):
 * vpmovzxbw puts byte j in word j; its low nibbles give WE (elements 0,2,..,62),
 * its high ones WO (1,3,..,63). Lane i of vdpbf16ps(WE, XE) adds
 * e(4i)·XE[2i] + e(4i+2)·XE[2i+1], of (WO, XO) e(4i+1)·XO[2i] + e(4i+3)·XO[2i+1]:
 * so XE = [x0 x2 x4 x6 ...], XO = [x1 x3 x5 x7 ...], and lane i covers
 * x[4i..4i+3], block i/4: one scale vector [s0 x4 | s1 x4 | s2 x4 | s3 x4]. */

static const uint16_t g_e2m1_bf16[32] = {0x0000, 0x3f00, 0x3f80, 0x3fc0, 0x4000, 0x4040, 0x4080, 0x40c0,
                                         0x8000, 0xbf00, 0xbf80, 0xbfc0, 0xc000, 0xc040, 0xc080, 0xc0c0};

/* Per span, per 64 columns (zero-padded): XE_hi, XO_hi, XE_lo, XO_lo (32 bf16 each). */
static size_t nv_dp1_bytes(const st_span *cs, int n_cs) {
    size_t n = 0;
    for (int s = 0; s < n_cs; s++) n += (size_t)((cs[s].len + 63) / 64) * 256;
    return n;
}

__attribute__((target("avx512bf16"))) static void nv_dp1_prep(const st_span *cs, int n_cs, const float *x,
                                                               void *xp) {
    uint16_t *o = xp;
    int xi = 0;
    for (int s = 0; s < n_cs; s++) {
        for (int k = 0; k < cs[s].len; k += 64, o += 128) {
            float e[32], d[32];
            for (int j = 0; j < 32; j++) {
                const int a = k + 2 * j, b = a + 1;
                e[j] = a < cs[s].len ? x[xi + a] : 0.0f;
                d[j] = b < cs[s].len ? x[xi + b] : 0.0f;
            }
            for (int h = 0; h < 2; h++) {
                const float *v = h ? d : e;
                const __m512 lo = _mm512_loadu_ps(v), hi = _mm512_loadu_ps(v + 16);
                /* RNE to bf16, then the remainder (exact in fp32) rounded again */
                const __m512bh bh = _mm512_cvtne2ps_pbh(hi, lo);
                const __m512i bi = (__m512i)bh;
                const __m512 back_lo = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(bi)), 16));
                const __m512 back_hi = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(bi, 1)), 16));
                const __m512bh rl = _mm512_cvtne2ps_pbh(_mm512_sub_ps(hi, back_hi), _mm512_sub_ps(lo, back_lo));
                _mm512_storeu_si512(o + 32 * h, bi);
                _mm512_storeu_si512(o + 64 + 32 * h, (__m512i)rl);
            }
        }
        xi += cs[s].len;
    }
}

/* acc += the 64 columns at p (codes) / q (4 scale bytes, sv) · xp, n <= 64 columns valid. */
__attribute__((target("avx512bf16"))) static inline __m512 nv_dp1_chunk(const unsigned char *p, __m512 sv,
                                                                          const uint16_t *xp, __m512i tab,
                                                                          __mmask32 cm, __m512 acc) {
    const __m512i w = _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(cm, p));
    const __m512i we = _mm512_permutexvar_epi16(_mm512_and_si512(w, _mm512_set1_epi16(0xf)), tab);
    const __m512i wo = _mm512_permutexvar_epi16(_mm512_srli_epi16(w, 4), tab);
    __m512 d = _mm512_dpbf16_ps(_mm512_setzero_ps(), (__m512bh)we, (__m512bh)_mm512_loadu_si512(xp));
    d = _mm512_dpbf16_ps(d, (__m512bh)wo, (__m512bh)_mm512_loadu_si512(xp + 32));
    d = _mm512_dpbf16_ps(d, (__m512bh)we, (__m512bh)_mm512_loadu_si512(xp + 64));
    d = _mm512_dpbf16_ps(d, (__m512bh)wo, (__m512bh)_mm512_loadu_si512(xp + 96));
    return _mm512_fmadd_ps(d, sv, acc);
}

/* [s0 x4 | s1 x4 | s2 x4 | s3 x4] for n16 (1..4) blocks at q; missing blocks 0. */
AI __m512 nv_scale4(const unsigned char *q, int n16) {
    const __m128i b = _mm_maskz_loadu_epi8((__mmask16)((1u << n16) - 1u), q);
    const __m128i r = _mm_shuffle_epi8(b, _mm_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3));
    const __m512i v = _mm512_and_si512(_mm512_cvtepu8_epi32(r), _mm512_set1_epi32(0x7f));
    __m512 f = _mm512_castsi512_ps(_mm512_add_epi32(_mm512_slli_epi32(v, 20), _mm512_set1_epi32(120 << 23)));
    f = _mm512_mask_mov_ps(f, _mm512_cmplt_epu32_mask(v, _mm512_set1_epi32(8)),
                           _mm512_mul_ps(_mm512_cvtepi32_ps(v), _mm512_set1_ps(1.0f / 512.0f)));
    f = _mm512_mask_mov_ps(f, _mm512_cmpeq_epi32_mask(v, _mm512_set1_epi32(0x7f)),
                           _mm512_castsi512_ps(_mm512_set1_epi32(0x7fc00000)));
    /* blocks past the span read as scale 0 (their codes are masked to 0 too) */
    return _mm512_maskz_mov_ps((__mmask16)((1u << (4 * n16)) - 1u), f);
}

/* NR (8 or 1, a constant: the accumulators stay in registers) rows. */
__attribute__((target("avx512bf16"))) static inline __attribute__((always_inline)) void
nv_dp1_rows(const int NR, const unsigned char *const *cr, const unsigned char *const *sr,
            const unsigned char *const *pf, const st_span *cs, int n_cs, const uint16_t *xp, float *out) {
    const __m512i tab = _mm512_loadu_si512(g_e2m1_bf16);
    const __m512i half = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    __m512 acc[8];
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++) acc[r] = _mm512_setzero_ps();
    for (int s = 0; s < n_cs; s++) {
        const int len = cs[s].len, off = cs[s].off;
        int k = 0;
        for (; k + 256 <= len; k += 256, xp += 4 * 128) {
            __m512 S[8];
#pragma GCC unroll 8
            for (int r = 0; r < NR; r++) {
                _mm_prefetch((const char *)(pf[r] + (off + k) / 2), _MM_HINT_T1);
                _mm_prefetch((const char *)(pf[r] + (off + k) / 2 + 64), _MM_HINT_T1);
                S[r] = nv_scales16(sr[r] + (off + k) / 16);
            }
            /* chunk-major, rows inner: neighbouring instructions belong to
             * different rows, so the dot-product chains overlap */
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++) {
                const __m512i ix = _mm512_add_epi32(half, _mm512_set1_epi32(4 * c));
#pragma GCC unroll 8
                for (int r = 0; r < NR; r++)
                    acc[r] = nv_dp1_chunk(cr[r] + (off + k) / 2 + 32 * c, _mm512_permutexvar_ps(ix, S[r]),
                                          xp + 128 * c, tab, 0xffffffffu, acc[r]);
            }
        }
        for (; k < len; k += 64, xp += 128) {
            const int m = len - k < 64 ? len - k : 64; /* a multiple of 16 */
            const __mmask32 cm = m >= 64 ? 0xffffffffu : (__mmask32)((1u << (m / 2)) - 1u);
#pragma GCC unroll 8
            for (int r = 0; r < NR; r++)
                acc[r] = nv_dp1_chunk(cr[r] + (off + k) / 2, nv_scale4(sr[r] + (off + k) / 16, m / 16), xp, tab, cm,
                                      acc[r]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++) out[r] = _mm512_reduce_add_ps(acc[r]);
}

__attribute__((target("avx512bf16"))) static void nv_dp1_rows8(const unsigned char *const *cr,
                                                                const unsigned char *const *sr,
                                                                const unsigned char *const *pf, const st_span *cs,
                                                                int n_cs, const void *xp, float *out) {
    nv_dp1_rows(8, cr, sr, pf, cs, n_cs, xp, out);
}

__attribute__((target("avx512bf16"))) static void nv_dp1_rows1(const unsigned char *const *cr,
                                                                const unsigned char *const *sr,
                                                                const unsigned char *const *pf, const st_span *cs,
                                                                int n_cs, const void *xp, float *out) {
    nv_dp1_rows(1, cr, sr, pf, cs, n_cs, xp, out);
}

/* The one-token kernels' row loop: rows in blocks of 8 (1 at the end),
 * each block's successors prefetched. */
typedef void (*dp1_rows_fn)(const unsigned char *const *cr, const unsigned char *const *sr,
                            const unsigned char *const *pf, const st_span *cs, int n_cs, const void *xp, float *out);

static void dp1_drive(dp1_rows_fn rows8, dp1_rows_fn rows1, const st_mat *W, const int64_t *rows, int n,
                      const st_span *cs, int n_cs, const void *xp, float *y, int accumulate) {
    const size_t ldc = (size_t)(W->cols / 2), lds = (size_t)(W->cols / 16);
    const unsigned char *cbase = (const unsigned char *)W->data, *sbase = W->bscale;
    const float mul = W->scale == 0.0f ? 1.0f : W->scale;
    for (int j = 0; j < n;) {
        const int nr = n - j >= 8 ? 8 : 1;
        const unsigned char *cr[8], *sr[8], *pf[8];
        float out[8];
        for (int r = 0; r < nr; r++) {
            cr[r] = cbase + (size_t)rows[j + r] * ldc;
            sr[r] = sbase + (size_t)rows[j + r] * lds;
            pf[r] = j + nr + r < n ? cbase + (size_t)rows[j + nr + r] * ldc : cr[r];
        }
        (nr == 8 ? rows8 : rows1)(cr, sr, pf, cs, n_cs, xp, out);
        for (int r = 0; r < nr; r++) y[j + r] = accumulate ? y[j + r] + out[r] * mul : out[r] * mul;
        j += nr;
    }
}

static void nv_dp1_gemv(const st_mat *W, const int64_t *rows, int n, const st_span *cs, int n_cs, const void *xp,
                        size_t xstride, int T, float *y, int ldy, int accumulate) {
    (void)xstride, (void)T, (void)ldy; /* one token only (gv_dp1) */
    dp1_drive(nv_dp1_rows8, nv_dp1_rows1, W, rows, n, cs, n_cs, xp, y, accumulate);
}

/* ---- one token through AVX512_VNNI int8 dot products (st_mm_ops_avx512_nvfp4_q8).
 *
 * The BF16 kernel above is bound by its four vdpbf16ps per 64 weights (two
 * cycles each here): 11 cycles per 64 weights in L2 on the Emerald Rapids
 * host, against 3.5 for this one (microbenchmark, one core), which makes the
 * decode memory-bound again.
 *
 * vpdpbusd multiplies unsigned bytes by signed ones. The codes become
 * u = 2·e2m1 + 12, in [0, 24], by vpermb from a 64-byte table that repeats
 * every 16 entries (vpermb reads index bits 0-5, so the neighbouring nibble
 * in bits 4-7 needs no mask); x is two int8 digits per element (st_q8_block:
 * x = s·(h + l/256)). Per 64 columns and lane,
 *   D = (Σ u·h << 8) + Σ u·l - 12·Σ(256h + l) = 2·Σ e2m1·(256h + l)
 * is exact in int32 (|D| < 2^22, so exact in fp32 too), the offset's share
 * taken off in integers (x's Q below): no float cancellation, and
 *   Σ e2m1·x = (s/512)·D.
 *
 * Layout per 64 columns (32 code bytes): a broadcast puts them in both
 * halves and the upper half is shifted right by 4, so bytes 0..31 hold
 * elements 0,2,..,62 and bytes 32..63 elements 1,3,..,63; the digits of x
 * are stored in that order. Lane i of vpdpbusd covers bytes 4i..4i+3, all
 * in block (i & 7) / 2 of the chunk.
 *
 * x per span, per 256 columns (zero-padded): float A[16] = s/512 per block
 * times 2^8 (nq_scales gives the block scales times 2^-8),
 * then per 64 columns int8 h[64], int8 l[64], int32 Q[16] = 12·Σ(256h + l)
 * over each lane's 4 elements. */

#define NQ_GROUP (64 + 4 * 192)

static const uint8_t g_e2m1_u8[64] = {
    12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0, 12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0,
    12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0, 12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0};

static size_t nq_bytes(const st_span *cs, int n_cs) {
    size_t n = 0;
    for (int s = 0; s < n_cs; s++) n += (size_t)((cs[s].len + 255) / 256) * NQ_GROUP;
    return n;
}

/* st_q8_block on one block of n <= 16 values at x, vectorised with the same
 * double-precision steps (so the same digits), the digits stored at their
 * chunk positions (block bb of its chunk: evens at d[8bb..], odds at
 * d[32+8bb..], l 64 bytes on). Returns s. */
AI float nq_block(const float *x, int n, unsigned char *d, int bb) {
    const __mmask16 nm = (__mmask16)((1u << n) - 1u);
    const __m512 v = _mm512_maskz_loadu_ps(nm, x);
    if (_mm512_mask_fpclass_ps_mask(nm, v, 0x99)) return NAN; /* NaN or infinity: digits 0, s NaN */
    const float m = _mm512_reduce_max_ps(_mm512_abs_ps(v));
    if (m == 0.0f) return 0.0f;
    const __m512d inv = _mm512_set1_pd(127.0 / (double)m);
    __m256i hh[2], ll[2];
    for (int k = 0; k < 2; k++) {
        const __m512d qd = _mm512_mul_pd(_mm512_cvtps_pd(k ? _mm512_extractf32x8_ps(v, 1) : _mm512_castps512_ps256(v)), inv);
        __m512d hi = _mm512_roundscale_pd(qd, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512d lo = _mm512_roundscale_pd(_mm512_mul_pd(_mm512_sub_pd(qd, hi), _mm512_set1_pd(256.0)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __mmask8 up = _mm512_cmp_pd_mask(lo, _mm512_set1_pd(127.0), _CMP_GT_OQ);
        hi = _mm512_mask_add_pd(hi, up, hi, _mm512_set1_pd(1.0));
        lo = _mm512_mask_sub_pd(lo, up, lo, _mm512_set1_pd(256.0));
        hh[k] = _mm512_cvtpd_epi32(hi);
        ll[k] = _mm512_cvtpd_epi32(lo);
    }
    const __m512i h32 = _mm512_inserti64x4(_mm512_castsi256_si512(hh[0]), hh[1], 1);
    const __m512i l32 = _mm512_inserti64x4(_mm512_castsi256_si512(ll[0]), ll[1], 1);
    /* bytes -> [evens | odds] */
    const __m128i eo = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    const __m128i hb = _mm_shuffle_epi8(_mm512_cvtepi32_epi8(h32), eo), lb = _mm_shuffle_epi8(_mm512_cvtepi32_epi8(l32), eo);
    _mm_storel_epi64((__m128i *)(d + 8 * bb), hb);
    _mm_storel_epi64((__m128i *)(d + 32 + 8 * bb), _mm_unpackhi_epi64(hb, hb));
    _mm_storel_epi64((__m128i *)(d + 64 + 8 * bb), lb);
    _mm_storel_epi64((__m128i *)(d + 96 + 8 * bb), _mm_unpackhi_epi64(lb, lb));
    return (float)((double)m / 127.0);
}

__attribute__((target("avx512vnni"))) static void nq_prep(const st_span *cs, int n_cs, const float *x, void *xp) {
    unsigned char *g = xp;
    int xi = 0;
    for (int s = 0; s < n_cs; s++) {
        for (int k = 0; k < cs[s].len; k += 256, g += NQ_GROUP) {
            memset(g, 0, NQ_GROUP);
            float *A = (float *)g;
            int b = 0;
            for (; b < 16 && k + 16 * b < cs[s].len; b++) {
                const int n = cs[s].len - k - 16 * b < 16 ? cs[s].len - k - 16 * b : 16;
                A[b] = nq_block(x + xi + k + 16 * b, n, g + 64 + 192 * (b / 4), b % 4) * 0.5f; /* s/512 · 2^8 */
            }
            /* Q per lane: Σh and Σl of its 4 bytes by vpdpbusd against ones */
            for (int c = 0; 4 * c < b; c++) {
                unsigned char *d = g + 64 + 192 * c;
                const __m512i one = _mm512_set1_epi8(1);
                const __m512i sh = _mm512_dpbusd_epi32(_mm512_setzero_si512(), one, _mm512_loadu_si512(d));
                const __m512i sl = _mm512_dpbusd_epi32(_mm512_setzero_si512(), one, _mm512_loadu_si512(d + 64));
                const __m512i q = _mm512_add_epi32(_mm512_slli_epi32(sh, 8), sl);
                _mm512_storeu_si512(d + 128, _mm512_mullo_epi32(q, _mm512_set1_epi32(12)));
            }
        }
        xi += cs[s].len;
    }
}

/* The first n16 block scales at q (E4M3, sign ignored) -> fp32 times 2^-8
 * (x's A carries the 2^8 back), the rest 0: through f16 as the FP8 weights
 * (e4m3_to_f16bits: exact, subnormals included), 0x7f as NaN. */
AI __m512 nq_scales(const unsigned char *q, int n16) {
    const __m256i w = _mm256_cvtepu8_epi16(_mm_maskz_loadu_epi8((__mmask16)((1u << n16) - 1u), q));
    const __m256i h = _mm256_and_si256(_mm256_slli_epi16(w, 7), _mm256_set1_epi16(0x3f80));
    const __m256i f = _mm256_mask_mov_epi16(h, _mm256_cmpeq_epi16_mask(h, _mm256_set1_epi16(0x3f80)),
                                            _mm256_set1_epi16(0x7e00));
    return _mm512_cvtph_ps(f);
}

/* acc[r][t] += chunk c (64 columns from column k0 of each row; nb code
 * bytes, 32 unless FULL is 0) against token t's digits. */
__attribute__((target("avx512vnni,avx512vbmi"))) static inline __attribute__((always_inline)) void
nq_chunk(const int NR, const int NT, const int FULL, int nb, int c, const unsigned char *const *cr, int k0,
         const unsigned char *xp, size_t xs, __m512i tab, __m512 SA[8][4], __m512 acc[8][4]) {
    const __m512i ix = _mm512_add_epi32(_mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 0, 0, 1, 1, 2, 2, 3, 3),
                                        _mm512_set1_epi32(4 * c));
    __m512i xh[4], xl[4], xq[4];
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++) {
        const unsigned char *xd = xp + (size_t)t * xs + 64 + 192 * c;
        xh[t] = _mm512_loadu_si512(xd);
        xl[t] = _mm512_loadu_si512(xd + 64);
        xq[t] = _mm512_loadu_si512(xd + 128);
    }
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++) {
        const unsigned char *p = cr[r] + k0 / 2 + 32 * c;
        __m512i v = FULL ? _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)p))
                         : _mm512_broadcast_i64x4(_mm256_maskz_loadu_epi8(
                               nb == 32 ? 0xffffffffu : (__mmask32)((1u << nb) - 1u), p));
        v = _mm512_mask_srli_epi16(v, 0xffff0000u, v, 4);
        const __m512i w = _mm512_permutexvar_epi8(v, tab);
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, xh[t]);
            d = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_slli_epi32(d, 8), w, xl[t]), xq[t]);
            acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_permutexvar_ps(ix, SA[r][t]), acc[r][t]);
        }
    }
}

/* NR rows x NT tokens (token t's prepared x at xp + t*xs). Every (row,
 * token) accumulator goes through the same operations in the same order
 * whatever NR and NT are, so a token's result has the same bits at every
 * token count (batched decoding gives each sequence what it gets alone). */
__attribute__((target("avx512vnni,avx512vbmi"))) static inline __attribute__((always_inline)) void
nq_rows(const int NR, const int NT, const unsigned char *const *cr, const unsigned char *const *sr,
        const unsigned char *const *pf, const st_span *cs, int n_cs, const unsigned char *xp, size_t xs,
        float out[8][4]) {
    const __m512i tab = _mm512_loadu_si512(g_e2m1_u8);
    __m512 acc[8][4];
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) acc[r][t] = _mm512_setzero_ps();
    for (int s = 0; s < n_cs; s++) {
        const int len = cs[s].len, off = cs[s].off;
        for (int k = 0; k < len; k += 256, xp += NQ_GROUP) {
            const int n16 = len - k >= 256 ? 16 : (len - k) / 16;
            __m512 SA[8][4];
#pragma GCC unroll 8
            for (int r = 0; r < NR; r++) {
                _mm_prefetch((const char *)(pf[r] + (off + k) / 2), _MM_HINT_T1);
                _mm_prefetch((const char *)(pf[r] + (off + k) / 2 + 64), _MM_HINT_T1);
                const __m512 S = nq_scales(sr[r] + (off + k) / 16, n16);
#pragma GCC unroll 4
                for (int t = 0; t < NT; t++) SA[r][t] = _mm512_mul_ps(S, _mm512_loadu_ps((const float *)(xp + (size_t)t * xs)));
            }
            /* chunk-major, rows inner: neighbouring chains belong to different rows */
            if (n16 == 16)
#pragma GCC unroll 4
                for (int c = 0; c < 4; c++) nq_chunk(NR, NT, 1, 32, c, cr, off + k, xp, xs, tab, SA, acc);
            else
                for (int c = 0; 4 * c < n16; c++)
                    nq_chunk(NR, NT, 0, n16 - 4 * c >= 4 ? 32 : 8 * (n16 - 4 * c), c, cr, off + k, xp, xs, tab, SA, acc);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) out[r][t] = _mm512_reduce_add_ps(acc[r][t]);
}

typedef void (*nq_fn)(const unsigned char *const *, const unsigned char *const *, const unsigned char *const *,
                      const st_span *, int, const unsigned char *, size_t, float[8][4]);
#define NQ_FN(NR, NT)                                                                                          \
    __attribute__((target("avx512vnni,avx512vbmi"))) static void nq_##NR##_##NT(                              \
        const unsigned char *const *cr, const unsigned char *const *sr, const unsigned char *const *pf,        \
        const st_span *cs, int n_cs, const unsigned char *xp, size_t xs, float out[8][4]) {                    \
        nq_rows(NR, NT, cr, sr, pf, cs, n_cs, xp, xs, out);                                                     \
    }
NQ_FN(8, 1) NQ_FN(4, 2) NQ_FN(2, 3) NQ_FN(2, 4) NQ_FN(1, 1) NQ_FN(1, 2) NQ_FN(1, 3) NQ_FN(1, 4)
/* [tokens - 1][row block of 1 or the shape's own] */
static const nq_fn nq_tab[4][2] = {{nq_1_1, nq_8_1}, {nq_1_2, nq_4_2}, {nq_1_3, nq_2_3}, {nq_1_4, nq_2_4}};

static void nq_gemv(const st_mat *W, const int64_t *rows, int n, const st_span *cs, int n_cs, const void *xp,
                    size_t xstride, int T, float *y, int ldy, int accumulate) {
    const size_t ldc = (size_t)(W->cols / 2), lds = (size_t)(W->cols / 16);
    const unsigned char *cbase = (const unsigned char *)W->data, *sbase = W->bscale;
    const float mul = W->scale == 0.0f ? 1.0f : W->scale;
    for (int t0 = 0; t0 < T; t0 += 4) {
        const int nt = T - t0 < 4 ? T - t0 : 4, nrb = nt == 1 ? 8 : nt == 2 ? 4 : 2;
        const unsigned char *xt = (const unsigned char *)xp + (size_t)t0 * xstride;
        for (int j = 0; j < n;) {
            const int nr = n - j >= nrb ? nrb : 1;
            const unsigned char *cr[8], *sr[8], *pf[8];
            float out[8][4];
            for (int r = 0; r < nr; r++) {
                cr[r] = cbase + (size_t)rows[j + r] * ldc;
                sr[r] = sbase + (size_t)rows[j + r] * lds;
                pf[r] = j + nr + r < n ? cbase + (size_t)rows[j + nr + r] * ldc : cr[r];
            }
            nq_tab[nt - 1][nr > 1](cr, sr, pf, cs, n_cs, xt, xstride, out);
            for (int t = 0; t < nt; t++) {
                float *yt = y + (size_t)(t0 + t) * ldy + j;
                for (int r = 0; r < nr; r++) yt[r] = accumulate ? yt[r] + out[r][t] * mul : out[r][t] * mul;
            }
            j += nr;
        }
    }
}

const st_mm_ops st_mm_ops_avx512_nvfp4_q8 = {
    .mr = MR512, .nr = NR512, .kc = 256,
    .gemv = nv_gemv, .pack_b = nv_pack_b, .kernel = {kernel4, kernel8, kernel12},
    .dp1_vnni = 1, .dp1_bytes = nq_bytes, .dp1_prep = nq_prep, .dp1_gemv = nq_gemv,
};

const st_mm_ops st_mm_ops_avx512_nvfp4 = {
    .mr = MR512, .nr = NR512, .kc = 256,
    .gemv = nv_gemv, .pack_b = nv_pack_b, .kernel = {kernel4, kernel8, kernel12},
    .dp1_bytes = nv_dp1_bytes, .dp1_prep = nv_dp1_prep, .dp1_gemv = nv_dp1_gemv,
};

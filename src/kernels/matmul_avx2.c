/*
 * matmul_avx2.c — AVX2+FMA+F16C kernels for st_matmul (same roles as
 * matmul_avx512.c with 8-wide vectors and 16 registers): decode mat-vec,
 * GEMM weight-panel packer, 6/4/2 x 16 fp32 micro-kernels. Reached only through
 * st_mm_ops_avx2 after cpuid said yes.
 */
#include "kernels/kernels.h"

#include <immintrin.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))

static float dt_mul(const st_mat *W) {
    float s = W->scale == 0.0f ? 1.0f : W->scale;
    return W->dt == ST_DT_F8_E4M3 ? s * 256.0f : s; /* e4m3 decodes to value·2^-8 */
}

/* e4m3fn -> f16 bits (value·2^-8, exact incl. subnormals; NaN patched) from
 * the sign-extended bytes; see matmul_avx512.c. */
AI __m256i e4m3_to_f16bits(__m256i sx) {
    const __m256i h = _mm256_and_si256(_mm256_slli_epi16(sx, 7), _mm256_set1_epi16((short)0xbf80));
    const __m256i m = _mm256_set1_epi16(0x3f80);
    const __m256i nan = _mm256_cmpeq_epi16(_mm256_and_si256(h, m), m);
    return _mm256_or_si256(h, _mm256_and_si256(nan, _mm256_set1_epi16(0x7e00)));
}

/* 16 weights of type DT at p -> fp32 lanes 0..7 (lo) and 8..15 (hi). The
 * caller guarantees 16 readable elements (tails go through a stack copy). */
AI void ld16(st_dtype DT, const unsigned char *p, __m256 *lo, __m256 *hi) {
    switch (DT) {
    case ST_DT_F32:
        *lo = _mm256_loadu_ps((const float *)p);
        *hi = _mm256_loadu_ps((const float *)(p + 32));
        break;
    case ST_DT_BF16:
        *lo = _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
        *hi = _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p + 16))), 16));
        break;
    case ST_DT_F16:
        *lo = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
        *hi = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16)));
        break;
    case ST_DT_F8_E4M3:
    case ST_DT_F8_E5M2: {
        const __m128i b = _mm_loadu_si128((const __m128i *)p);
        __m256i h = DT == ST_DT_F8_E4M3 ? e4m3_to_f16bits(_mm256_cvtepi8_epi16(b))
                                        : _mm256_slli_epi16(_mm256_cvtepu8_epi16(b), 8);
        *lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
        *hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
        break;
    }
    default:
        *lo = *hi = _mm256_setzero_ps();
        break;
    }
}

/* ------------------------------------------------------------ decode (gemv) */

/* One 16-column step: NR weight pointers, NT activation pointers. */
AI void gemv_step(st_dtype DT, const int NR, const int NT, const int A2,
                  const unsigned char *const *pk, const float *const *xp, __m256 acc[8][2][2]) {
    __m256 xl[2], xh[2];
#pragma GCC unroll 2
    for (int t = 0; t < NT; t++) {
        xl[t] = _mm256_loadu_ps(xp[t]);
        xh[t] = _mm256_loadu_ps(xp[t] + 8);
    }
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++) {
        __m256 lo, hi;
        ld16(DT, pk[r], &lo, &hi);
#pragma GCC unroll 2
        for (int t = 0; t < NT; t++) {
            acc[r][t][0] = _mm256_fmadd_ps(lo, xl[t], acc[r][t][0]);
            acc[r][t][A2 - 1] = _mm256_fmadd_ps(hi, xh[t], acc[r][t][A2 - 1]);
        }
    }
}

/* NR rows x NT tokens over every column span (NR*NT <= 8: 16 ymm registers).
 * 8 rows in flight stream faster than 4 (more concurrent DRAM streams). */
AI void gemv_blk(st_dtype DT, const int NR, const int NT, const unsigned char *const *wr, size_t esz,
                 const st_span *cs, int n_cs, const float *x, int ldx, float out[8][2]) {
    const int A2 = 1; /* the same summation order for every token count (see matmul_avx512.c) */
    __m256 acc[8][2][2];
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 2
        for (int t = 0; t < NT; t++) acc[r][t][0] = acc[r][t][1] = _mm256_setzero_ps();

    int xi = 0;
    for (int s = 0; s < n_cs; s++) {
        const unsigned char *pk[8];
        const float *xp[2];
        const int len = cs[s].len > 0 ? cs[s].len : 0; /* negative = empty */
        int k = 0;
        for (; k + 16 <= len; k += 16) {
#pragma GCC unroll 8
            for (int r = 0; r < NR; r++) pk[r] = wr[r] + ((size_t)cs[s].off + k) * esz;
#pragma GCC unroll 2
            for (int t = 0; t < NT; t++) xp[t] = x + (size_t)t * ldx + xi + k;
            gemv_step(DT, NR, NT, A2, pk, xp, acc);
        }
        if (k < len) {
            /* tail: zero-padded stack copies (AVX2 has no 16-bit masked loads) */
            unsigned char wt[8][64];
            float xt[2][16];
            const size_t rem = (size_t)(len - k);
            for (int r = 0; r < NR; r++) {
                memset(wt[r], 0, sizeof wt[r]);
                memcpy(wt[r], wr[r] + ((size_t)cs[s].off + k) * esz, rem * esz);
                pk[r] = wt[r];
            }
            for (int t = 0; t < NT; t++) {
                memset(xt[t], 0, sizeof xt[t]);
                memcpy(xt[t], x + (size_t)t * ldx + xi + k, rem * sizeof(float));
                xp[t] = xt[t];
            }
            gemv_step(DT, NR, NT, A2, pk, xp, acc);
        }
        xi += len;
    }
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 2
        for (int t = 0; t < NT; t++) {
            __m256 v = A2 == 2 ? _mm256_add_ps(acc[r][t][0], acc[r][t][1]) : acc[r][t][0];
            __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            q = _mm_add_ps(q, _mm_movehl_ps(q, q));
            q = _mm_add_ss(q, _mm_movehdup_ps(q));
            out[r][t] = _mm_cvtss_f32(q);
        }
}

typedef void (*gemv_fn)(const unsigned char *const *, size_t, const st_span *, int, const float *,
                        int, float[8][2]);
#define GEMV_FN(DT, NR, NT)                                                                   \
    static void gemv_##DT##_##NR##_##NT(const unsigned char *const *wr, size_t esz,           \
                                        const st_span *cs, int n_cs, const float *x, int ldx, \
                                        float out[8][2]) {                                    \
        gemv_blk(ST_DT_##DT, NR, NT, wr, esz, cs, n_cs, x, ldx, out);                         \
    }
#define GEMV_FNS(DT)                                                                          \
    GEMV_FN(DT, 8, 1) GEMV_FN(DT, 4, 1) GEMV_FN(DT, 4, 2) GEMV_FN(DT, 1, 1) GEMV_FN(DT, 1, 2) \
    static const gemv_fn gemv_tab_##DT[3][2] = {{gemv_##DT##_1_1, gemv_##DT##_1_2},           \
                                                {gemv_##DT##_4_1, gemv_##DT##_4_2},           \
                                                {gemv_##DT##_8_1, NULL}};
GEMV_FNS(F32)
GEMV_FNS(BF16)
GEMV_FNS(F16)
GEMV_FNS(F8_E4M3)
GEMV_FNS(F8_E5M2)

static void gemv(const st_mat *W, const int64_t *rows, int n, const st_span *cs, int n_cs,
                 const float *x, int ldx, float *y, int ldy, int T, int accumulate) {
    const gemv_fn(*tab)[2];
    switch (W->dt) {
    case ST_DT_F32: tab = gemv_tab_F32; break;
    case ST_DT_BF16: tab = gemv_tab_BF16; break;
    case ST_DT_F16: tab = gemv_tab_F16; break;
    case ST_DT_F8_E4M3: tab = gemv_tab_F8_E4M3; break;
    case ST_DT_F8_E5M2: tab = gemv_tab_F8_E5M2; break;
    default: return;
    }
    const size_t esz = st_dtype_size(W->dt), ld = (size_t)W->cols * esz;
    const unsigned char *base = (const unsigned char *)W->data;
    const float mul = dt_mul(W);
    const int nr_big = T == 1 ? 8 : 4; /* 8 rows fit the registers for one token */
    for (int j = 0; j < n;) {
        const int nr = n - j >= nr_big ? nr_big : n - j >= 4 ? 4 : 1;
        const int ti = nr == 8 ? 2 : nr == 4 ? 1 : 0, tstep = nr == 8 ? 1 : 2;
        const unsigned char *wr[8];
        for (int r = 0; r < nr; r++) wr[r] = base + (size_t)rows[j + r] * ld;
        for (int t0 = 0; t0 < T; t0 += tstep) {
            const int nt = T - t0 < tstep ? T - t0 : tstep;
            float out[8][2];
            tab[ti][nt - 1](wr, esz, cs, n_cs, x + (size_t)t0 * ldx, ldx, out);
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

static void cvt_row(st_dtype dt, const unsigned char *src, float *dst, int n, float mul) {
    const size_t esz = st_dtype_size(dt);
    const __m256 vm = _mm256_set1_ps(mul);
    int k = 0;
#define CVT_LOOP(DT)                                                                          \
    for (; k + 16 <= n; k += 16) {                                                            \
        __m256 lo, hi;                                                                        \
        ld16(DT, src + (size_t)k * esz, &lo, &hi);                                            \
        _mm256_storeu_ps(dst + k, _mm256_mul_ps(lo, vm));                                     \
        _mm256_storeu_ps(dst + k + 8, _mm256_mul_ps(hi, vm));                                 \
    }                                                                                         \
    if (k < n) {                                                                              \
        unsigned char wt[64] __attribute__((aligned(32))) = {0};                              \
        float ft[16] __attribute__((aligned(32)));                                            \
        __m256 lo, hi;                                                                        \
        memcpy(wt, src + (size_t)k * esz, (size_t)(n - k) * esz);                             \
        ld16(DT, wt, &lo, &hi);                                                               \
        _mm256_store_ps(ft, _mm256_mul_ps(lo, vm));                                           \
        _mm256_store_ps(ft + 8, _mm256_mul_ps(hi, vm));                                       \
        memcpy(dst + k, ft, (size_t)(n - k) * sizeof(float));                                 \
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

/* The usual 8x8 transpose: unpack pairs, shuffle quads, swap 128-bit halves. */
AI void transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}

#define NR2 16
#define MR2 6

/* tmp[NR2][kcp] (row-major converted rows) -> dst[kcp][NR2]. */
static void transpose_panel(const float *tmp, int kcp, float *dst) {
    for (int rb = 0; rb < NR2; rb += 8)
        for (int kb = 0; kb < kcp; kb += 8) {
            __m256 v[8];
            for (int i = 0; i < 8; i++) v[i] = _mm256_load_ps(tmp + (size_t)(rb + i) * kcp + kb);
            transpose8(v);
            for (int i = 0; i < 8; i++) _mm256_store_ps(dst + (size_t)(kb + i) * NR2 + rb, v[i]);
        }
}

static void pack_b(const st_mat *W, const int64_t *rows, int n, const st_span *seg, int nseg,
                   int kc, float *tmp /* [NR][kcp] */, float *dst /* [kcp][NR] */) {
    const int kcp = (kc + 15) & ~15;
    const size_t esz = st_dtype_size(W->dt), ld = (size_t)W->cols * esz;
    const float mul = dt_mul(W);
    for (int r = 0; r < NR2; r++) {
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

/* As in matmul_avx512.c (st_matmul guarantees 16-aligned column spans; the
 * decode gets x permuted per 32-chunk as [evens | odds], a last 16-chunk
 * likewise). 8 code bytes are one block: vpmovzxbd puts byte j in lane j;
 * vpermps (8 entries) looks up the magnitude from bits 2:0 and the sign (bit
 * 3) is xor-ed in. */
AI void nv_ld16(const unsigned char *p, __m256 mag, __m256 *ev, __m256 *od) {
    const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
    const __m256i sm = _mm256_set1_epi32((int)0x80000000u);
    const __m256i u = _mm256_srli_epi32(v, 4);
    *ev = _mm256_xor_ps(_mm256_permutevar8x32_ps(mag, v),
                        _mm256_castsi256_ps(_mm256_and_si256(_mm256_slli_epi32(v, 28), sm)));
    *od = _mm256_xor_ps(_mm256_permutevar8x32_ps(mag, u),
                        _mm256_castsi256_ps(_mm256_and_si256(_mm256_slli_epi32(u, 28), sm)));
}

AI __m256 nv_mag(void) { return _mm256_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f); }
AI float nv_bs(unsigned char b) { return st_e4m3_lut[b & 0x7f]; }

/* NR rows x NT tokens (NR*NT <= 4: 8 accumulators x 2 chains) over every
 * column span, x permuted. */
AI void nv_gemv_blk(const int NR, const int NT, const unsigned char *const *cr,
                    const unsigned char *const *sr, const st_span *cs, int n_cs, const float *x,
                    int ldx, float out[8][2]) {
    const __m256 mag = nv_mag();
    __m256 acc[8][2][2];
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 2
        for (int t = 0; t < NT; t++) acc[r][t][0] = acc[r][t][1] = _mm256_setzero_ps();
    int xi = 0;
    for (int s = 0; s < n_cs; s++) {
        const int len = cs[s].len > 0 ? cs[s].len : 0;
        const size_t off = (size_t)cs[s].off;
        const float *xs = x + xi;
        int k = 0;
        /* 32-chunks: bytes 0..7 (block a) pair with x lanes 0..7 / 16..23,
         * bytes 8..15 (block b) with lanes 8..15 / 24..31 */
        for (; k + 32 <= len; k += 32)
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
#pragma GCC unroll 8
                for (int r = 0; r < NR; r++) {
                    __m256 ev, od;
                    nv_ld16(cr[r] + (off + k) / 2 + 8 * h, mag, &ev, &od);
                    const __m256 sv = _mm256_set1_ps(nv_bs(sr[r][(off + k) / 16 + h]));
                    ev = _mm256_mul_ps(ev, sv);
                    od = _mm256_mul_ps(od, sv);
#pragma GCC unroll 2
                    for (int t = 0; t < NT; t++) {
                        const float *xt = xs + (size_t)t * ldx + k + 8 * h;
                        acc[r][t][0] = _mm256_fmadd_ps(ev, _mm256_loadu_ps(xt), acc[r][t][0]);
                        acc[r][t][1] = _mm256_fmadd_ps(od, _mm256_loadu_ps(xt + 16), acc[r][t][1]);
                    }
                }
            }
        if (k < len) { /* 16 left: [evens | odds] */
#pragma GCC unroll 8
            for (int r = 0; r < NR; r++) {
                __m256 ev, od;
                nv_ld16(cr[r] + (off + k) / 2, mag, &ev, &od);
                const __m256 sv = _mm256_set1_ps(nv_bs(sr[r][(off + k) / 16]));
                ev = _mm256_mul_ps(ev, sv);
                od = _mm256_mul_ps(od, sv);
#pragma GCC unroll 2
                for (int t = 0; t < NT; t++) {
                    const float *xt = xs + (size_t)t * ldx + k;
                    acc[r][t][0] = _mm256_fmadd_ps(ev, _mm256_loadu_ps(xt), acc[r][t][0]);
                    acc[r][t][1] = _mm256_fmadd_ps(od, _mm256_loadu_ps(xt + 8), acc[r][t][1]);
                }
            }
        }
        xi += len;
    }
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 2
        for (int t = 0; t < NT; t++) {
            __m256 v = _mm256_add_ps(acc[r][t][0], acc[r][t][1]);
            __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            q = _mm_add_ps(q, _mm_movehl_ps(q, q));
            q = _mm_add_ss(q, _mm_movehdup_ps(q));
            out[r][t] = _mm_cvtss_f32(q);
        }
}

typedef void (*nv_gemv_fn)(const unsigned char *const *, const unsigned char *const *,
                           const st_span *, int, const float *, int, float[8][2]);
#define NV_GEMV_FN(NR, NT)                                                                    \
    static void nv_gemv_##NR##_##NT(const unsigned char *const *cr, const unsigned char *const *sr, \
                                    const st_span *cs, int n_cs, const float *x, int ldx,     \
                                    float out[8][2]) {                                        \
        nv_gemv_blk(NR, NT, cr, sr, cs, n_cs, x, ldx, out);                                   \
    }
NV_GEMV_FN(4, 1) NV_GEMV_FN(2, 2) NV_GEMV_FN(1, 1) NV_GEMV_FN(1, 2)

static void nv_gemv(const st_mat *W, const int64_t *rows, int n, const st_span *cs, int n_cs,
                    const float *x, int ldx, float *y, int ldy, int T, int accumulate) {
    const size_t ldc = (size_t)(W->cols / 2), lds = (size_t)(W->cols / 16);
    const unsigned char *cbase = (const unsigned char *)W->data, *sbase = W->bscale;
    const float mul = W->scale == 0.0f ? 1.0f : W->scale;
    /* one token: 4 rows at a time; more: 2 rows x 2 tokens */
    const int nr_big = T == 1 ? 4 : 2;
    for (int j = 0; j < n;) {
        const int nr = n - j >= nr_big ? nr_big : 1;
        const int tstep = nr == 4 ? 1 : 2;
        const nv_gemv_fn f1 = nr == 4 ? nv_gemv_4_1 : nr == 2 ? NULL : nv_gemv_1_1;
        const nv_gemv_fn f2 = nr == 2 ? nv_gemv_2_2 : nv_gemv_1_2;
        const unsigned char *crp[8], *srp[8];
        for (int r = 0; r < nr; r++) {
            crp[r] = cbase + (size_t)rows[j + r] * ldc;
            srp[r] = sbase + (size_t)rows[j + r] * lds;
        }
        for (int t0 = 0; t0 < T; t0 += tstep) {
            const int nt = T - t0 < tstep ? T - t0 : tstep;
            float out[8][2];
            if (nt == 2) f2(crp, srp, cs, n_cs, x + (size_t)t0 * ldx, ldx, out);
            else if (f1) f1(crp, srp, cs, n_cs, x + (size_t)t0 * ldx, ldx, out);
            else { /* 2 rows, 1 token left */
                float o2[8][2];
                nv_gemv_1_1(crp, srp, cs, n_cs, x + (size_t)t0 * ldx, ldx, out);
                nv_gemv_1_1(crp + 1, srp + 1, cs, n_cs, x + (size_t)t0 * ldx, ldx, o2);
                out[1][0] = o2[0][0];
            }
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
    const __m256 mag = nv_mag();
    codes += off / 2;
    bs += off / 16;
    for (int k = 0; k < len; k += 16) {
        __m256 ev, od;
        nv_ld16(codes + k / 2, mag, &ev, &od);
        const __m256 sv = _mm256_set1_ps(nv_bs(bs[k / 16]) * mul);
        ev = _mm256_mul_ps(ev, sv);
        od = _mm256_mul_ps(od, sv);
        const __m256 lo = _mm256_unpacklo_ps(ev, od), hi = _mm256_unpackhi_ps(ev, od);
        _mm256_storeu_ps(dst + k, _mm256_permute2f128_ps(lo, hi, 0x20));
        _mm256_storeu_ps(dst + k + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
    }
}

static void nv_pack_b(const st_mat *W, const int64_t *rows, int n, const st_span *seg, int nseg,
                      int kc, float *tmp /* [NR][kcp] */, float *dst /* [kcp][NR] */) {
    const int kcp = (kc + 15) & ~15;
    const size_t ldc = (size_t)(W->cols / 2), lds = (size_t)(W->cols / 16);
    const float mul = W->scale == 0.0f ? 1.0f : W->scale;
    for (int r = 0; r < NR2; r++) {
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

/* MR tokens x 16 rows (MR = 6: 12 accumulators + 2 weight vectors + 1 broadcast). */
AI void kernel_mr(const int MR, int kc, const float *a, const float *b, float *c, int ldc, int load_c) {
    __m256 acc[MR2][2];
    if (load_c) {
#pragma GCC unroll 6
        for (int m = 0; m < MR; m++) {
            acc[m][0] = _mm256_loadu_ps(c + (size_t)m * ldc);
            acc[m][1] = _mm256_loadu_ps(c + (size_t)m * ldc + 8);
        }
    } else {
#pragma GCC unroll 6
        for (int m = 0; m < MR; m++) acc[m][0] = acc[m][1] = _mm256_setzero_ps();
    }
    for (int k = 0; k < kc; k++) {
        const __m256 b0 = _mm256_load_ps(b + (size_t)k * NR2);
        const __m256 b1 = _mm256_load_ps(b + (size_t)k * NR2 + 8);
        const float *ak = a + (size_t)k * MR;
#pragma GCC unroll 6
        for (int m = 0; m < MR; m++) {
            const __m256 av = _mm256_broadcast_ss(ak + m);
            acc[m][0] = _mm256_fmadd_ps(av, b0, acc[m][0]);
            acc[m][1] = _mm256_fmadd_ps(av, b1, acc[m][1]);
        }
    }
#pragma GCC unroll 6
    for (int m = 0; m < MR; m++) {
        _mm256_storeu_ps(c + (size_t)m * ldc, acc[m][0]);
        _mm256_storeu_ps(c + (size_t)m * ldc + 8, acc[m][1]);
    }
}

static void kernel2(int kc, const float *a, const float *b, float *c, int ldc, int load_c) {
    kernel_mr(2, kc, a, b, c, ldc, load_c);
}
static void kernel4(int kc, const float *a, const float *b, float *c, int ldc, int load_c) {
    kernel_mr(4, kc, a, b, c, ldc, load_c);
}
static void kernel6(int kc, const float *a, const float *b, float *c, int ldc, int load_c) {
    kernel_mr(6, kc, a, b, c, ldc, load_c);
}

const st_mm_ops st_mm_ops_avx2 = {
    .mr = MR2, .nr = NR2, .kc = 256,
    .gemv = gemv, .pack_b = pack_b, .kernel = {kernel2, kernel4, kernel6},
};

const st_mm_ops st_mm_ops_avx2_nvfp4 = {
    .mr = MR2, .nr = NR2, .kc = 256,
    .gemv = nv_gemv, .pack_b = nv_pack_b, .kernel = {kernel2, kernel4, kernel6},
};

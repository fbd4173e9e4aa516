/*
 * ops_avx512.c — AVX-512 versions of the ops in ops.c (the selective scan of
 * one Mamba-2 head, attention of one query head) and of the element-wise
 * parts of norm.c / act.c. Reached only through the dispatchers there after
 * cpuid confirmed AVX-512. Same arithmetic as the references, in fp32 with
 * the sums over the state / head dimension split across vector lanes (so
 * they differ from the references by rounding only); the element-wise parts
 * give the scalar loops' bits.
 */
#include "kernels/kernels.h"

#include <immintrin.h>
#include <math.h>

static inline __mmask16 mask16(int n) {
    return n <= 0 ? (__mmask16)0 : n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1u);
}

void st_ssm_scan_avx512(float *S, int P, int N, const float *x, const float *B, const float *C, int ld_in,
                        const float *dt, int ld_dt, float A, float D, float *y, int ld_y, int T) {
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * ld_in, *Bt = B + (size_t)t * ld_in, *Ct = C + (size_t)t * ld_in;
        const float d = dt[(size_t)t * ld_dt];
        const __m512 dA = _mm512_set1_ps(expf(d * A));
        float *yt = y + (size_t)t * ld_y;
        for (int p = 0; p < P; p++) {
            float *Sp = S + (size_t)p * N;
            const __m512 dx = _mm512_set1_ps(d * xt[p]);
            __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
            int n = 0;
            for (; n + 32 <= N; n += 32) {
                __m512 s0 = _mm512_loadu_ps(Sp + n), s1 = _mm512_loadu_ps(Sp + n + 16);
                s0 = _mm512_fmadd_ps(dx, _mm512_loadu_ps(Bt + n), _mm512_mul_ps(s0, dA));
                s1 = _mm512_fmadd_ps(dx, _mm512_loadu_ps(Bt + n + 16), _mm512_mul_ps(s1, dA));
                _mm512_storeu_ps(Sp + n, s0);
                _mm512_storeu_ps(Sp + n + 16, s1);
                acc0 = _mm512_fmadd_ps(s0, _mm512_loadu_ps(Ct + n), acc0);
                acc1 = _mm512_fmadd_ps(s1, _mm512_loadu_ps(Ct + n + 16), acc1);
            }
            for (; n < N; n += 16) {
                const __mmask16 m = mask16(N - n);
                __m512 s0 = _mm512_maskz_loadu_ps(m, Sp + n);
                s0 = _mm512_fmadd_ps(dx, _mm512_maskz_loadu_ps(m, Bt + n), _mm512_mul_ps(s0, dA));
                _mm512_mask_storeu_ps(Sp + n, m, s0);
                acc0 = _mm512_fmadd_ps(s0, _mm512_maskz_loadu_ps(m, Ct + n), acc0);
            }
            yt[p] = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) + D * xt[p];
        }
    }
}

/* e^x for 16 lanes, within ~2 ulp of expf: x = n·ln2 + r with n = round(x·log2 e)
 * and ln2 in two parts (the first exact in a few bits, so n·ln2_hi is exact),
 * e^r on |r| <= ln2/2 by the classic degree-6 minimax polynomial of expf, and
 * 2^n applied by scalef (underflow to 0 below ~-104; a NaN stays NaN: VMAXPS
 * returns its second operand when either is NaN). */
static inline __m512 exp512(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/* q·k_j as 16 lane partial sums (hd in 16-lane steps, masked tail) */
static inline __m512 qk_lanes(const float *q, const float *kj, int hd) {
    __m512 acc = _mm512_setzero_ps();
    for (int e = 0; e < hd; e += 16) {
        const __mmask16 m = mask16(hd - e);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + e), _mm512_maskz_loadu_ps(m, kj + e), acc);
    }
    return acc;
}

/* The lane sums of v[0..16) as one vector: element i = Σ lanes of v[i].
 * Pairs by 32-bit, then 64-bit interleaves inside each 128-bit lane, then
 * across the four 128-bit lanes: 45 operations for 16 sums, where 16 full
 * horizontal reductions take ~160 (the score loop's cost at short hd). */
static inline __m512 sum16(const __m512 *v) {
    __m512 s4[4];
    for (int g = 0; g < 4; g++) {
        const __m512 *w = v + 4 * g;
        const __m512 a = _mm512_add_ps(_mm512_unpacklo_ps(w[0], w[1]), _mm512_unpackhi_ps(w[0], w[1]));
        const __m512 b = _mm512_add_ps(_mm512_unpacklo_ps(w[2], w[3]), _mm512_unpackhi_ps(w[2], w[3]));
        /* per 128-bit lane: [Σv0, Σv1, Σv2, Σv3] over that lane */
        s4[g] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b))),
                              _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b))));
    }
    const __m512 t0 = _mm512_add_ps(_mm512_shuffle_f32x4(s4[0], s4[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                    _mm512_shuffle_f32x4(s4[0], s4[1], _MM_SHUFFLE(3, 1, 3, 1)));
    const __m512 t1 = _mm512_add_ps(_mm512_shuffle_f32x4(s4[2], s4[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                    _mm512_shuffle_f32x4(s4[2], s4[3], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_ps(_mm512_shuffle_f32x4(t0, t1, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(t0, t1, _MM_SHUFFLE(3, 1, 3, 1)));
}

void st_attn_head_avx512(const float *q, const float *K, const float *V, int ldkv, int n, int hd, float scale,
                         float *sc, float *o) {
    /* scores 16 positions at a time, the rest one by one; which sum order a
     * position gets depends only on n and its index, never on how many
     * queries a pass holds (a verify pass scores as plain decoding does) */
    const __m512 vs = _mm512_set1_ps(scale);
    __m512 vmx = _mm512_set1_ps(-INFINITY);
    int jb = 0;
    for (; jb + 16 <= n; jb += 16) {
        __m512 part[16];
        for (int i = 0; i < 16; i++) part[i] = qk_lanes(q, K + (size_t)(jb + i) * ldkv, hd);
        const __m512 s16 = _mm512_mul_ps(sum16(part), vs);
        _mm512_storeu_ps(sc + jb, s16);
        vmx = _mm512_max_ps(vmx, s16);
    }
    float mx = _mm512_reduce_max_ps(vmx);
    for (; jb < n; jb++) {
        sc[jb] = _mm512_reduce_add_ps(qk_lanes(q, K + (size_t)jb * ldkv, hd)) * scale;
        if (sc[jb] > mx) mx = sc[jb];
    }
    /* softmax weights 16 at a time (profiled at a 2000-position context:
     * libm's expf, one position at a time, was most of the head's time) */
    const __m512 vm = _mm512_set1_ps(mx);
    __m512 vsum = _mm512_setzero_ps();
    for (int j = 0; j < n; j += 16) {
        const __mmask16 m = mask16(n - j);
        const __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, sc + j), vm));
        _mm512_mask_storeu_ps(sc + j, m, e);
        vsum = _mm512_add_ps(vsum, _mm512_maskz_mov_ps(m, e));
    }
    const float inv = 1.0f / _mm512_reduce_add_ps(vsum);
    /* o in 16-lane blocks, each accumulated over every position */
    for (int e = 0; e < hd; e += 64) {
        const int w = hd - e < 64 ? hd - e : 64;
        const __mmask16 m0 = mask16(w), m1 = mask16(w - 16), m2 = mask16(w - 32), m3 = mask16(w - 48);
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int j = 0; j < n; j++) {
            const float *vj = V + (size_t)j * ldkv + e;
            const __m512 p = _mm512_set1_ps(sc[j]);
            a0 = _mm512_fmadd_ps(p, _mm512_maskz_loadu_ps(m0, vj), a0);
            if (w > 16) a1 = _mm512_fmadd_ps(p, _mm512_maskz_loadu_ps(m1, vj + 16), a1);
            if (w > 32) a2 = _mm512_fmadd_ps(p, _mm512_maskz_loadu_ps(m2, vj + 32), a2);
            if (w > 48) a3 = _mm512_fmadd_ps(p, _mm512_maskz_loadu_ps(m3, vj + 48), a3);
        }
        const __m512 vi = _mm512_set1_ps(inv);
        _mm512_mask_storeu_ps(o + e, m0, _mm512_mul_ps(a0, vi));
        if (w > 16) _mm512_mask_storeu_ps(o + e + 16, m1, _mm512_mul_ps(a1, vi));
        if (w > 32) _mm512_mask_storeu_ps(o + e + 32, m2, _mm512_mul_ps(a2, vi));
        if (w > 48) _mm512_mask_storeu_ps(o + e + 48, m3, _mm512_mul_ps(a3, vi));
    }
}

/* ------------------------------------------------------------ row ops (norm.c, act.c) */

void st_rowscale_avx512(float *y, const float *x, const float *w, float r, int n) {
    const __m512 vr = _mm512_set1_ps(r);
    for (int i = 0; i < n; i += 16) {
        const __mmask16 m = mask16(n - i);
        _mm512_mask_storeu_ps(y + i, m,
                              _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vr),
                                            _mm512_maskz_loadu_ps(m, w + i)));
    }
}

/* max(x, 0): VMAXPS returns its second operand (0) for a NaN x, as x > 0 ? x : 0 */
void st_relu2_avx512(float *y, const float *x, size_t n) {
    const __m512 z = _mm512_setzero_ps();
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 m = mask16(n - i > 16 ? 16 : (int)(n - i));
        const __m512 v = _mm512_max_ps(_mm512_maskz_loadu_ps(m, x + i), z);
        _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(v, v));
    }
}

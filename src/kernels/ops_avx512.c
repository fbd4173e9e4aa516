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

void st_attn_head_avx512(const float *q, const float *K, const float *V, int ldkv, int n, int hd, float scale,
                         float *sc, float *o) {
    float mx = -INFINITY;
    for (int j = 0; j < n; j++) {
        const float *kj = K + (size_t)j * ldkv;
        __m512 acc = _mm512_setzero_ps();
        for (int e = 0; e < hd; e += 16) {
            const __mmask16 m = mask16(hd - e);
            acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + e), _mm512_maskz_loadu_ps(m, kj + e), acc);
        }
        sc[j] = _mm512_reduce_add_ps(acc) * scale;
        if (sc[j] > mx) mx = sc[j];
    }
    float sum = 0;
    for (int j = 0; j < n; j++) {
        sc[j] = expf(sc[j] - mx);
        sum += sc[j];
    }
    const float inv = 1.0f / sum;
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

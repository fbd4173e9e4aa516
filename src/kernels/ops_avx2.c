/*
 * ops_avx2.c — AVX2+FMA versions of the ops in ops.c, and of the
 * element-wise parts of norm.c / act.c, for CPUs without AVX-512. Reached
 * only through the dispatchers there. Tails that do not fill an 8-lane
 * vector run in scalar code.
 */
#include "kernels/kernels.h"

#include <immintrin.h>
#include <math.h>

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

void st_ssm_scan_avx2(float *S, int P, int N, const float *x, const float *B, const float *C, int ld_in,
                      const float *dt, int ld_dt, float A, float D, float *y, int ld_y, int T) {
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * ld_in, *Bt = B + (size_t)t * ld_in, *Ct = C + (size_t)t * ld_in;
        const float d = dt[(size_t)t * ld_dt], dAs = expf(d * A);
        const __m256 dA = _mm256_set1_ps(dAs);
        float *yt = y + (size_t)t * ld_y;
        for (int p = 0; p < P; p++) {
            float *Sp = S + (size_t)p * N;
            const float dxs = d * xt[p];
            const __m256 dx = _mm256_set1_ps(dxs);
            __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
            int n = 0;
            for (; n + 16 <= N; n += 16) {
                __m256 s0 = _mm256_loadu_ps(Sp + n), s1 = _mm256_loadu_ps(Sp + n + 8);
                s0 = _mm256_fmadd_ps(dx, _mm256_loadu_ps(Bt + n), _mm256_mul_ps(s0, dA));
                s1 = _mm256_fmadd_ps(dx, _mm256_loadu_ps(Bt + n + 8), _mm256_mul_ps(s1, dA));
                _mm256_storeu_ps(Sp + n, s0);
                _mm256_storeu_ps(Sp + n + 8, s1);
                acc0 = _mm256_fmadd_ps(s0, _mm256_loadu_ps(Ct + n), acc0);
                acc1 = _mm256_fmadd_ps(s1, _mm256_loadu_ps(Ct + n + 8), acc1);
            }
            float acc = hsum8(_mm256_add_ps(acc0, acc1));
            for (; n < N; n++) {
                Sp[n] = fmaf(dxs, Bt[n], Sp[n] * dAs);
                acc = fmaf(Sp[n], Ct[n], acc);
            }
            yt[p] = acc + D * xt[p];
        }
    }
}

void st_attn_head_avx2(const float *q, const float *K, const float *V, int ldkv, int n, int hd, float scale,
                       float *sc, float *o) {
    float mx = -INFINITY;
    for (int j = 0; j < n; j++) {
        const float *kj = K + (size_t)j * ldkv;
        __m256 acc = _mm256_setzero_ps();
        int e = 0;
        for (; e + 8 <= hd; e += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + e), _mm256_loadu_ps(kj + e), acc);
        float d = hsum8(acc);
        for (; e < hd; e++) d = fmaf(q[e], kj[e], d);
        sc[j] = d * scale;
        if (sc[j] > mx) mx = sc[j];
    }
    float sum = 0;
    for (int j = 0; j < n; j++) {
        sc[j] = expf(sc[j] - mx);
        sum += sc[j];
    }
    const float inv = 1.0f / sum;
    int e = 0;
    for (; e + 32 <= hd; e += 32) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int j = 0; j < n; j++) {
            const float *vj = V + (size_t)j * ldkv + e;
            const __m256 p = _mm256_set1_ps(sc[j]);
            a0 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vj), a0);
            a1 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vj + 8), a1);
            a2 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vj + 16), a2);
            a3 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vj + 24), a3);
        }
        const __m256 vi = _mm256_set1_ps(inv);
        _mm256_storeu_ps(o + e, _mm256_mul_ps(a0, vi));
        _mm256_storeu_ps(o + e + 8, _mm256_mul_ps(a1, vi));
        _mm256_storeu_ps(o + e + 16, _mm256_mul_ps(a2, vi));
        _mm256_storeu_ps(o + e + 24, _mm256_mul_ps(a3, vi));
    }
    for (; e < hd; e++) {
        float acc = 0;
        for (int j = 0; j < n; j++) acc = fmaf(sc[j], V[(size_t)j * ldkv + e], acc);
        o[e] = acc * inv;
    }
}

/* ------------------------------------------------------------ row ops (norm.c, act.c) */

void st_rowscale_avx2(float *y, const float *x, const float *w, float r, int n) {
    const __m256 vr = _mm256_set1_ps(r);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vr), _mm256_loadu_ps(w + i)));
    for (; i < n; i++) y[i] = w[i] * (x[i] * r);
}

/* max(x, 0): MAXPS returns its second operand (0) for a NaN x, as x > 0 ? x : 0 */
void st_relu2_avx2(float *y, const float *x, size_t n) {
    const __m256 z = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_max_ps(_mm256_loadu_ps(x + i), z);
        _mm256_storeu_ps(y + i, _mm256_mul_ps(v, v));
    }
    for (; i < n; i++) { float v = x[i] > 0 ? x[i] : 0; y[i] = v * v; }
}

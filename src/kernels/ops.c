/*
 * ops.c — the recurrent ops of the forward pass that are not matrix products:
 * the Mamba-2 selective scan of one head and causal attention of one query
 * head over its KV cache (docs/architecture.md §2.3, §2.4). Each has a scalar
 * reference (st_*_ref: the formula written out, double accumulation) and
 * AVX-512 / AVX2 versions, dispatched on st_isa_get() like st_matmul.
 *
 * They are small per call but run once per head per token: in decode they
 * were a tenth of a token's time as plain loops compiled for the baseline
 * ISA (SSE2, no FMA), which the SIMD versions cut to a fraction.
 */
#include "kernels/kernels.h"

#include <math.h>

/* ------------------------------------------------------------ selective scan */

void st_ssm_scan_ref(float *S, int P, int N, const float *x, const float *B, const float *C, int ld_in,
                     const float *dt, int ld_dt, float A, float D, float *y, int ld_y, int T) {
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * ld_in, *Bt = B + (size_t)t * ld_in, *Ct = C + (size_t)t * ld_in;
        const float d = dt[(size_t)t * ld_dt], dA = expf(d * A);
        float *yt = y + (size_t)t * ld_y;
        for (int p = 0; p < P; p++) {
            float *Sp = S + (size_t)p * N;
            const float dx = d * xt[p];
            double acc = 0;
            for (int n = 0; n < N; n++) {
                Sp[n] = Sp[n] * dA + dx * Bt[n];
                acc += (double)Sp[n] * Ct[n];
            }
            yt[p] = (float)acc + D * xt[p];
        }
    }
}

void st_ssm_scan(float *S, int P, int N, const float *x, const float *B, const float *C, int ld_in,
                 const float *dt, int ld_dt, float A, float D, float *y, int ld_y, int T) {
    switch (st_isa_get()) {
    case ST_ISA_AVX512: st_ssm_scan_avx512(S, P, N, x, B, C, ld_in, dt, ld_dt, A, D, y, ld_y, T); return;
    case ST_ISA_AVX2: st_ssm_scan_avx2(S, P, N, x, B, C, ld_in, dt, ld_dt, A, D, y, ld_y, T); return;
    default: st_ssm_scan_ref(S, P, N, x, B, C, ld_in, dt, ld_dt, A, D, y, ld_y, T); return;
    }
}

/* ------------------------------------------------------------ attention */

void st_attn_head_ref(const float *q, const float *K, const float *V, int ldkv, int n, int hd, float scale,
                      float *sc, float *o) {
    float mx = -INFINITY;
    for (int j = 0; j < n; j++) {
        double d = 0;
        for (int e = 0; e < hd; e++) d += (double)q[e] * K[(size_t)j * ldkv + e];
        sc[j] = (float)d * scale;
        if (sc[j] > mx) mx = sc[j];
    }
    double sum = 0;
    for (int j = 0; j < n; j++) {
        sc[j] = expf(sc[j] - mx);
        sum += sc[j];
    }
    for (int e = 0; e < hd; e++) {
        double acc = 0;
        for (int j = 0; j < n; j++) acc += (double)sc[j] * V[(size_t)j * ldkv + e];
        o[e] = (float)(acc / sum);
    }
}

void st_attn_head(const float *q, const float *K, const float *V, int ldkv, int n, int hd, float scale, float *sc,
                  float *o) {
    switch (st_isa_get()) {
    case ST_ISA_AVX512: st_attn_head_avx512(q, K, V, ldkv, n, hd, scale, sc, o); return;
    case ST_ISA_AVX2: st_attn_head_avx2(q, K, V, ldkv, n, hd, scale, sc, o); return;
    default: st_attn_head_ref(q, K, V, ldkv, n, hd, scale, sc, o); return;
    }
}

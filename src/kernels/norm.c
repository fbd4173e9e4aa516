/*
 * norm.c — RMSNorm of a row and the grouped (gated) RMSNorm of the Mamba-2
 * mixer (docs/architecture.md §2.1, §2.3), for the inference pass and the
 * training forward alike, each with a double-precision reference.
 *
 * The fast paths are the inference pass's arithmetic, kept exactly: the sum
 * of squares in double in index order (a reordered sum could round the fp32
 * rstd differently and change the shipped models' outputs), then the scaling
 * (x·r)·w, which is element-wise and so vectorised per ISA without changing
 * a bit. A budget normalises over its kept channels only: n (or n_mean) is
 * the active count, never the parent's width.
 */
#include "kernels/kernels.h"

#include <math.h>

/* y[i] = (x[i]·r)·w[i], i < n, on the ISA in use (the same bits on each) */
static void rowscale(float *y, const float *x, const float *w, float r, int n) {
    switch (st_isa_get()) {
    case ST_ISA_AVX512: st_rowscale_avx512(y, x, w, r, n); return;
    case ST_ISA_AVX2: st_rowscale_avx2(y, x, w, r, n); return;
    default:
        for (int i = 0; i < n; i++) y[i] = w[i] * (x[i] * r);
        return;
    }
}

/* 1/sqrt(Σ x²/n_mean + eps) over x[0..n), summed in order in double */
static float rstd_of(const float *x, int n, int n_mean, float eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    return 1.0f / sqrtf((float)(ss / n_mean) + eps);
}

float st_rmsnorm(float *y, const float *x, const float *w, int n, float eps) {
    const float r = rstd_of(x, n, n, eps);
    rowscale(y, x, w, r, n);
    return r;
}

float st_rmsnorm_ref(float *y, const float *x, const float *w, int n, float eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    const double r = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) y[i] = (float)((double)w[i] * x[i] * r);
    return (float)r;
}

void st_rmsnorm_groups(float *v, int G, int gsz, int n_mean, const float *w, float eps, float *rstd) {
    for (int g = 0; g < G; g++) {
        float *vg = v + (size_t)g * gsz;
        const float r = rstd_of(vg, gsz, n_mean, eps);
        if (rstd) rstd[g] = r;
        rowscale(vg, vg, w + (size_t)g * gsz, r, gsz);
    }
}

void st_rmsnorm_groups_ref(float *v, int G, int gsz, int n_mean, const float *w, float eps, float *rstd) {
    for (int g = 0; g < G; g++) {
        float *vg = v + (size_t)g * gsz;
        double ss = 0;
        for (int j = 0; j < gsz; j++) ss += (double)vg[j] * vg[j];
        const double r = 1.0 / sqrt(ss / n_mean + eps);
        if (rstd) rstd[g] = (float)r;
        for (int j = 0; j < gsz; j++) vg[j] = (float)((double)vg[j] * r * w[(size_t)g * gsz + j]);
    }
}

void st_gated_rmsnorm(float *v, const float *y, const float *z, int G, int gsz, int n_mean, const float *w, float eps,
                      float *rstd) {
    st_silu_mul(v, y, z, (size_t)G * gsz);
    st_rmsnorm_groups(v, G, gsz, n_mean, w, eps, rstd);
}

void st_gated_rmsnorm_ref(float *v, const float *y, const float *z, int G, int gsz, int n_mean, const float *w,
                          float eps, float *rstd) {
    st_silu_mul_ref(v, y, z, (size_t)G * gsz);
    st_rmsnorm_groups_ref(v, G, gsz, n_mean, w, eps, rstd);
}

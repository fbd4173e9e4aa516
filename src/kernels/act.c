/*
 * act.c — the element-wise activations of the forward pass: relu² (MLP and
 * expert neurons), the SiLU gate of the Mamba-2 mixer, and softplus of the
 * Mamba step size dt (docs/architecture.md §2.3, §2.5), each with a
 * double-precision reference.
 *
 * relu² is a compare and a product, vectorised per ISA (the same bits on
 * each). SiLU and softplus stay scalar with libm's expf / log1pf: a vector
 * exp would change the inference pass's numbers, and these run over
 * thousands of values per token against the millions of a matrix product.
 */
#include "kernels/kernels.h"

#include <math.h>

void st_relu2(float *y, const float *x, size_t n) {
    switch (st_isa_get()) {
    case ST_ISA_AVX512: st_relu2_avx512(y, x, n); return;
    case ST_ISA_AVX2: st_relu2_avx2(y, x, n); return;
    default:
        for (size_t i = 0; i < n; i++) { float v = x[i] > 0 ? x[i] : 0; y[i] = v * v; }
        return;
    }
}

void st_relu2_ref(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double v = x[i] > 0 ? x[i] : 0.0;
        y[i] = (float)(v * v);
    }
}

void st_silu_mul(float *y, const float *a, const float *z, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = a[i] * st_siluf(z[i]);
}

void st_silu_mul_ref(float *y, const float *a, const float *z, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = (float)((double)a[i] * z[i] / (1.0 + exp(-(double)z[i])));
}

void st_softplus_clamp(float *y, const float *x, const float *bias, int n, float lo, float hi) {
    for (int i = 0; i < n; i++) {
        float v = st_softplusf(x[i] + bias[i]);
        if (v < lo) v = lo;
        if (v > hi) v = hi;
        y[i] = v;
    }
}

void st_softplus_clamp_ref(float *y, const float *x, const float *bias, int n, float lo, float hi) {
    for (int i = 0; i < n; i++) {
        const double u = (double)x[i] + bias[i];
        double v = u > 0 ? u + log1p(exp(-u)) : log1p(exp(u)); /* softplus without overflow */
        if (v < lo) v = lo;
        if (v > hi) v = hi;
        y[i] = (float)v;
    }
}

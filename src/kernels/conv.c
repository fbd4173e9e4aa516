/*
 * conv.c — the causal depthwise convolution of the Mamba-2 mixer over one
 * channel of x|B|C, then SiLU (docs/architecture.md §2.3): the one-token
 * step of decoding and the loop over a prompt chunk, both on the channel's
 * K−1 previous inputs (the conv state of st_state, zeros for a fresh
 * sequence and in training), with a double-precision reference.
 *
 * The sum is the inference pass's, in its order: bias, the newest tap, then
 * the history oldest first. Decode and prefill run the same step, so a
 * prompt split into chunks (or decoded token by token) gives the same bits.
 * Scalar: K is 4 in every Nemotron-H, and the channels of a budget map to
 * scattered parent channels (no contiguous vectors to load).
 */
#include "kernels/kernels.h"

#include <math.h>

float st_conv_step(float *h, int K, const float *w, float b, float x) {
    float acc = b + w[K - 1] * x;
    for (int k = 0; k < K - 1; k++) acc += w[k] * h[k];
    for (int k = 0; k + 1 < K - 1; k++) h[k] = h[k + 1];
    if (K > 1) h[K - 2] = x;
    return acc;
}

void st_conv_chunk(float *h, int K, const float *w, float b, const float *x, int ldx, int T, float *y, float *pre,
                   int ldy) {
    for (int t = 0; t < T; t++) {
        const float a = st_conv_step(h, K, w, b, x[(size_t)t * ldx]);
        if (pre) pre[(size_t)t * ldy] = a;
        y[(size_t)t * ldy] = st_siluf(a);
    }
}

void st_conv_chunk_ref(float *h, int K, const float *w, float b, const float *x, int ldx, int T, float *y, float *pre,
                       int ldy) {
    for (int t = 0; t < T; t++) {
        const float xt = x[(size_t)t * ldx];
        double a = b;
        for (int k = 0; k < K - 1; k++) a += (double)w[k] * h[k];
        a += (double)w[K - 1] * xt;
        for (int k = 0; k + 1 < K - 1; k++) h[k] = h[k + 1];
        if (K > 1) h[K - 2] = xt;
        if (pre) pre[(size_t)t * ldy] = (float)a;
        y[(size_t)t * ldy] = (float)(a / (1.0 + exp(-a)));
    }
}

/*
 * quant.c — see quant.h. The encoders search the decoded value tables, which
 * keeps them exactly consistent with the decoders the kernels use: every code
 * an encoder emits decodes to the representable value nearest its input.
 */
#include "elastic/quant.h"
#include "kernels/kernels.h"

#include <math.h>

static const float g_e2m1[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

float st_e2m1_value(uint8_t code) {
    float v = g_e2m1[code & 7];
    return code & 8 ? -v : v;
}

uint8_t st_e4m3_encode(float x) {
    if (isnan(x)) return 0x7f;
    uint8_t sign = signbit(x) ? 0x80 : 0;
    float a = fabsf(x);
    if (a >= ST_E4M3_MAX) return sign | 0x7e; /* saturate: 0x7e = 448 */
    /* codes 0..126 decode to increasing non-negative values: binary search */
    int lo = 0, hi = 126;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (st_e4m3_lut[mid] <= a) lo = mid; else hi = mid;
    }
    float dl = a - st_e4m3_lut[lo], dh = st_e4m3_lut[hi] - a;
    int c = dl < dh ? lo : dh < dl ? hi : ((lo & 1) ? hi : lo); /* ties: even mantissa */
    return (uint8_t)(sign | c);
}

uint8_t st_e2m1_encode(float x) {
    uint8_t sign = signbit(x) ? 8 : 0;
    float a = fabsf(x);
    if (!(a == a)) return 0;
    if (a >= 6.0f) return sign | 7;
    int lo = 0;
    while (lo < 7 && g_e2m1[lo + 1] <= a) lo++;
    if (lo == 7) return sign | 7;
    float dl = a - g_e2m1[lo], dh = g_e2m1[lo + 1] - a;
    int c = dl < dh ? lo : dh < dl ? lo + 1 : ((lo & 1) ? lo + 1 : lo);
    return (uint8_t)(sign | c);
}

float st_fp8_scale(float amax) { return amax > 0 ? amax / ST_E4M3_MAX : 1.0f; }

void st_fp8_quantize(const float *w, size_t n, float scale, uint8_t *out) {
    float inv = 1.0f / scale;
    for (size_t i = 0; i < n; i++) out[i] = st_e4m3_encode(w[i] * inv);
}

float st_nvfp4_global_scale(float amax) { return amax > 0 ? amax / (6.0f * ST_E4M3_MAX) : 1.0f; }

void st_nvfp4_quantize_row(const float *w, size_t n, float gscale, uint8_t *codes, uint8_t *bscales) {
    for (size_t b = 0; b < n / ST_NVFP4_BLOCK; b++) {
        const float *x = w + b * ST_NVFP4_BLOCK;
        float amax = 0;
        for (int i = 0; i < ST_NVFP4_BLOCK; i++) amax = fmaxf(amax, fabsf(x[i]));
        /* block scale so the block's amax maps to 6, stored as e4m3 in [2^-9, 448] */
        float s = amax > 0 ? amax / (6.0f * gscale) : 1.0f;
        if (s < 0x1p-9f) s = 0x1p-9f;
        uint8_t sc = st_e4m3_encode(s);
        float ds = st_e4m3_lut[sc] * gscale, inv = ds > 0 ? 1.0f / ds : 0;
        bscales[b] = sc;
        for (int i = 0; i < ST_NVFP4_BLOCK; i += 2) {
            uint8_t lo = st_e2m1_encode(x[i] * inv), hi = st_e2m1_encode(x[i + 1] * inv);
            codes[(b * ST_NVFP4_BLOCK + (size_t)i) / 2] = (uint8_t)(lo | (hi << 4));
        }
    }
}

/*
 * quant.h — encoders for NVIDIA ModelOpt weight formats
 * (docs/architecture.md §5): FP8 E4M3 with a per-tensor scale, and NVFP4
 * (E2M1 codes, one E4M3 scale per 16 inputs, an fp32 global scale).
 * Decoding lives in the kernels (st_e4m3_lut, st_e2m1_value).
 */
#ifndef ST_QUANT_H
#define ST_QUANT_H
#include <stddef.h>
#include <stdint.h>

#define ST_E4M3_MAX 448.0f
#define ST_NVFP4_BLOCK 16

/* Nearest e4m3fn code to x (round to nearest, ties to even; saturates at ±448). */
uint8_t st_e4m3_encode(float x);
/* Nearest E2M1 code (sign<<3 | index into {0,.5,1,1.5,2,3,4,6}), ties to even index. */
uint8_t st_e2m1_encode(float x);
float st_e2m1_value(uint8_t code);

/* FP8: out[i] = e4m3(w[i] / scale); the scale ModelOpt uses is amax / 448. */
float st_fp8_scale(float amax);
void st_fp8_quantize(const float *w, size_t n, float scale, uint8_t *out);

/* NVFP4 global scale: amax(W) / (6 · 448). */
float st_nvfp4_global_scale(float amax);
/* One row of n inputs (n % 16 == 0): packed codes [n/2] (element 2j in the low
 * nibble of byte j) and block scales [n/16] as e4m3, given the global scale. */
void st_nvfp4_quantize_row(const float *w, size_t n, float gscale, uint8_t *codes, uint8_t *bscales);
#endif

/*
 * quantize.h — write a ModelOpt-format FP8 or NVFP4 copy of a checkpoint
 * (docs/architecture.md §5) that keeps the nesting: every budget in the
 * checkpoint's elastic block (and any later slice at those widths) stays a
 * whole number of NVFP4 blocks, so slicing copies bytes and scales and never
 * requantizes. A weight whose input dimension some budget would cut inside a
 * 16-wide block is stored as FP8 instead (recorded as MIXED_PRECISION).
 */
#ifndef ST_QUANTIZE_H
#define ST_QUANTIZE_H
#include "starling.h"
#include <stdint.h>

typedef struct {
    const char *precision;     /* "fp8" or "nvfp4"                               */
    int quantize_attention;    /* also q/k/v/o (NVIDIA keeps them high precision) */
    int quantize_lm_head;      /* also lm_head (NVIDIA keeps it BF16; it is the largest
                                  single read of a decoded token)                 */
    const int32_t *calib;      /* calibration tokens for input scales (may be NULL) */
    int n_calib;
    uint64_t shard_bytes;
    int force, progress;
    volatile int *cancel;
} st_quant_opts;

typedef struct {
    int n_nvfp4, n_fp8, n_kept;      /* weights per format                      */
    double bytes_in, bytes_out;
} st_quant_report;

st_status st_quantize(const st_model *m, const char *dst, const st_quant_opts *o, st_quant_report *rep);
#endif

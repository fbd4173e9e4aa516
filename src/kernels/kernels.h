/*
 * kernels.h — the numeric kernels. Each fast kernel has a scalar reference
 * (st_*_ref) that the tests compare it with on random inputs of odd sizes; the
 * public entry points dispatch at run time on what cpuid reports
 * (AVX-512 [F/BW/VL/BF16] > AVX2+FMA+F16C > scalar).
 *
 * Weights are used in their stored type and converted inside the kernel;
 * activations and accumulation are fp32.
 */
#ifndef ST_KERNELS_H
#define ST_KERNELS_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    ST_DT_F32 = 0, ST_DT_F16, ST_DT_BF16, ST_DT_F8_E4M3, ST_DT_F8_E5M2,
    ST_DT_U8, ST_DT_I8, ST_DT_I16, ST_DT_U16, ST_DT_I32, ST_DT_U32,
    ST_DT_I64, ST_DT_U64, ST_DT_F64, ST_DT_BOOL,
    ST_DT_COUNT
} st_dtype;

/* A 2-D weight matrix as stored: row-major [rows][cols], element type dt.
 * data may be unaligned (safetensors mmap). */
typedef struct {
    st_dtype dt;
    const void *data;
    int64_t rows, cols;
    float scale;          /* per-tensor dequant multiplier (FP8); 1 otherwise */
} st_mat;

/* A run of consecutive indices [off, off+len). Budget views select rows and
 * columns of full-width weights as lists of spans (one span for a plain
 * prefix; one per kept head for per-group head cuts). */
typedef struct { int32_t off, len; } st_span;

/*
 * y = x · W[rows, cols]ᵀ over the selected rows/columns of W, for T tokens:
 *
 *   y[t*ldy + j] (= or +=) Σ_i W[r(j)][c(i)] · x[t*ldx + i]     t < T
 *
 * where r(j) enumerates the row spans rs[0..n_rs) in order (j < Σ rs.len) and
 * c(i) the column spans cs[0..n_cs) (i < Σ cs.len). x is packed over the
 * selected columns, y over the selected rows. accumulate: add into y.
 * Threads: OpenMP over rows (and tokens for large T), st_get_threads() of them.
 */
void st_matmul(const st_mat *W, const st_span *rs, int n_rs, const st_span *cs, int n_cs,
               const float *x, int ldx, float *y, int ldy, int T, int accumulate);
void st_matmul_ref(const st_mat *W, const st_span *rs, int n_rs, const st_span *cs, int n_cs,
                   const float *x, int ldx, float *y, int ldy, int T, int accumulate);

/* out[i] = W[row][col0 + i] as fp32, i < n (embedding lookup, small vectors). */
void st_mat_row_f32(const st_mat *W, int64_t row, int64_t col0, int64_t n, float *out);
/* Convert n elements of type dt at src (unaligned ok) to fp32. */
void st_convert_to_f32(st_dtype dt, const void *src, float *dst, int64_t n, float scale);

size_t st_dtype_size(st_dtype dt);
const char *st_dtype_name(st_dtype dt);           /* safetensors spelling */
int st_dtype_from_name(const char *name, st_dtype *dt); /* 0 ok, -1 unknown */

/* Run-time CPU dispatch level. */
typedef enum { ST_ISA_SCALAR = 0, ST_ISA_AVX2 = 1, ST_ISA_AVX512 = 2 } st_isa;
st_isa st_isa_detect(void);
/* Force a lower level (tests, benchmarks); returns the previous one. */
st_isa st_isa_set(st_isa isa);
st_isa st_isa_get(void);

#endif

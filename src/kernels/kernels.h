/*
 * kernels.h — the numeric kernels. Each fast kernel has a scalar reference
 * (st_*_ref) that the tests compare it with on random inputs of odd sizes; the
 * public entry points dispatch at run time on what cpuid reports
 * (AVX-512 [F/BW/VL/DQ] > AVX2+FMA+F16C > scalar; ST_ISA=scalar|avx2|avx512
 * in the environment forces a lower level).
 *
 * Weights are used in their stored type and converted inside the kernel;
 * activations and accumulation are fp32.
 */
#ifndef ST_KERNELS_H
#define ST_KERNELS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    ST_DT_F32 = 0, ST_DT_F16, ST_DT_BF16, ST_DT_F8_E4M3, ST_DT_F8_E5M2,
    ST_DT_U8, ST_DT_I8, ST_DT_I16, ST_DT_U16, ST_DT_I32, ST_DT_U32,
    ST_DT_I64, ST_DT_U64, ST_DT_F64, ST_DT_BOOL,
    ST_DT_COUNT,
    /* not a safetensors dtype: ModelOpt NVFP4 (packed E2M1 pairs, element 2j in
       the low nibble, 16-wide E4M3 block scales in st_mat.bscale) */
    ST_DT_NVFP4 = 64
} st_dtype;

/* A 2-D weight matrix as stored: row-major [rows][cols], element type dt.
 * data may be unaligned (safetensors mmap). The value of an element is
 * stored·scale for every dtype; scale 0 counts as 1 (an unset field). */
typedef struct {
    st_dtype dt;
    const void *data;
    int64_t rows, cols;   /* logical shape; an NVFP4 row holds cols/2 bytes  */
    float scale;          /* per-tensor dequant multiplier (FP8 weight_scale,
                             NVFP4 weight_scale_2); 0 counts as 1          */
    const uint8_t *bscale;/* NVFP4 only: E4M3 block scales [rows][cols/16] */
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
/* Several independent products (the experts of a MoE layer): each job is
 * one st_matmul call's arguments. The jobs that take the decode path run in
 * ONE parallel region: threads take row chunks of job 0, then of job 1, ...,
 * and move on without waiting, so a group costs one fork/join instead of
 * one per product, and no thread idles at each product's end. Every row's
 * sum is computed as st_matmul computes it (the same bits). The others
 * (GEMM, no SIMD kernel) run one after another through st_matmul. No job
 * may read another job's output, and outputs must not overlap. */
typedef struct {
    const st_mat *W;
    const st_span *rs, *cs;
    int n_rs, n_cs;
    const float *x;
    int ldx;
    float *y;
    int ldy, T, accumulate;
} st_mm_job;
void st_matmul_group(const st_mm_job *jobs, int n);
/* Token count from which st_matmul packs weights for a GEMM instead of
 * streaming them per token block (default 48). t > 0 sets it (tests,
 * benchmarks) and returns the previous value; t <= 0 only returns it. */
int st_matmul_gemm_min_t(int t);
void st_matmul_ref(const st_mat *W, const st_span *rs, int n_rs, const st_span *cs, int n_cs,
                   const float *x, int ldx, float *y, int ldy, int T, int accumulate);

/* x as two int8 digits, for int8 dot products against NVFP4 codes. One
 * block of n <= 16 values: s = max|x|/127, h = round(x/s), l = round((x/s -
 * h)·256) clamped to int8, so x = s·(h + l/256) within s/512. Returns s: 0
 * for an all-zero block, NaN (digits 0) when the block holds a NaN or an
 * infinity, so that the product is NaN as on the float paths. */
float st_q8_block(const float *x, int n, int8_t *h, int8_t *l);
/* The int8 NVFP4 decode's scalar twin (one token, W NVFP4, 16-aligned
 * column spans): x rounded by st_q8_block per 16 packed columns, then the
 * products and sums in double. */
void st_matmul_nvfp4_q8_ref(const st_mat *W, const st_span *rs, int n_rs, const st_span *cs, int n_cs,
                            const float *x, float *y, int accumulate);

/* out[i] = W[row][col0 + i] as fp32, i < n (embedding lookup, small vectors). */
void st_mat_row_f32(const st_mat *W, int64_t row, int64_t col0, int64_t n, float *out);
/* Convert n elements of type dt at src (unaligned ok) to fp32. */
void st_convert_to_f32(st_dtype dt, const void *src, float *dst, int64_t n, float scale);

/* F32 F16 BF16 F8_E4M3 F8_E5M2: the dtypes st_matmul runs on the SIMD paths
 * (the others go through the portable path). */
int st_dtype_is_float(st_dtype dt);
/* e4m3fn code -> value (docs/architecture.md §5.2; 0x7f/0xff are NaN). */
extern const float st_e4m3_lut[256];

size_t st_dtype_size(st_dtype dt);
const char *st_dtype_name(st_dtype dt);           /* safetensors spelling */
int st_dtype_from_name(const char *name, st_dtype *dt); /* 0 ok, -1 unknown */

/* Run-time CPU dispatch level. */
typedef enum { ST_ISA_SCALAR = 0, ST_ISA_AVX2 = 1, ST_ISA_AVX512 = 2 } st_isa;
st_isa st_isa_detect(void);
/* Force a lower level (tests, benchmarks); returns the previous one. */
st_isa st_isa_set(st_isa isa);
st_isa st_isa_get(void);
const char *st_isa_name(st_isa isa);  /* "scalar", "avx2", "avx512" */
/* Whether the AVX512_BF16 decode kernels are in use: the CPU has them, the
 * level in use is AVX-512, and they are not switched off (ST_BF16DP=0 in the
 * environment, or st_isa_bf16_set(0) in tests and benchmarks). */
int st_isa_bf16(void);
/* Whether the NVFP4 one-token kernel on int8 dot products is in use: the CPU
 * has AVX512_VNNI and AVX512_VBMI, the level in use is AVX-512, and it is not
 * switched off (ST_VNNI=0 in the environment, st_isa_vnni_set(0)). Where it
 * is on it replaces the AVX512_BF16 one. It reads x as two int8 digits per
 * element (st_q8_block), so its products differ from fp32 activations by at
 * most 2^-16 of each 16-column block's largest |x| per element. */
int st_isa_vnni(void);
int st_isa_vnni_set(int on); /* returns the previous setting */
/* The decode kernels' software prefetch (AVX-512):
 *  ST_PF_NTA    the next row block, a block ahead, non-temporal. Measured on
 *               AMD Zen 5: ~10% faster than none. On Intel Xeon (Emerald
 *               Rapids) it halves decode (the lines bypass L2 and the
 *               hardware streamer stops).
 *  ST_PF_AHEAD  each row 512 bytes ahead of its loads, into L1 (T0), running
 *               on into the next block's row at a span's end. Measured on the
 *               Emerald Rapids host: +13-18% read rate for the BF16 decode
 *               loop (microbenchmark, interleaved rounds), where the hardware
 *               prefetchers alone left the kernel ~20% under a loads-only
 *               loop: the convert+FMA uops per line shrink how far ahead the
 *               out-of-order window issues misses.
 *  ST_PF_NONE   hardware prefetch only.
 * Default: NTA on AMD, AHEAD elsewhere; ST_PREFETCH=nta|ahead|none forces. */
enum { ST_PF_NONE = 0, ST_PF_NTA = 1, ST_PF_AHEAD = 2 };
int st_prefetch_mode(void);
int st_prefetch_mode_set(int mode); /* tests: every variant; returns the previous mode */
int st_isa_bf16_set(int on); /* returns the previous setting */

/* Best-of-several read bandwidth (GB/s, 1e9 bytes/s) of a bytes-sized buffer
 * streamed by `threads` threads (<= 0: st_get_threads()). Use a buffer well
 * beyond the last-level cache (>= 256 MiB). Returns a negative value if the
 * buffer cannot be allocated. Takes about 0.5 s. */
double st_measure_read_bandwidth(size_t bytes, int threads);
/* fp32 FMA peak (GFLOP/s) of `threads` threads (<= 0: st_get_threads()) at the
 * ISA level in use: register-only FMA chains, best of 6 rounds, about 0.25 s. 0 on the scalar
 * level (no vector FMA to measure). */
double st_measure_fma_gflops(int threads);

/* ---- recurrent ops (ops.c): per-head kernels of the forward pass, each
 * with a scalar reference (double accumulation) the tests compare it with.
 *
 * Selective scan of one Mamba-2 head over T tokens, in order:
 *   S ← S·exp(dt_t·A) + dt_t·x_t ⊗ B_t ;   y_t = S·C_t + D·x_t
 * S: [P][N] (updated in place); x_t[P], B_t[N], C_t[N] at x/B/C + t·ld_in;
 * dt_t at dt[t·ld_dt]; y_t[P] at y + t·ld_y. */
void st_ssm_scan(float *S, int P, int N, const float *x, const float *B, const float *C, int ld_in,
                 const float *dt, int ld_dt, float A, float D, float *y, int ld_y, int T);
void st_ssm_scan_ref(float *S, int P, int N, const float *x, const float *B, const float *C, int ld_in,
                     const float *dt, int ld_dt, float A, float D, float *y, int ld_y, int T);
/* Causal attention of one query head q[hd] over n cached positions (K/V rows
 * of hd floats at stride ldkv): o = softmax(scale · q·K_jᵀ) · V. sc: n floats
 * of scratch (left holding the unnormalised weights). */
void st_attn_head(const float *q, const float *K, const float *V, int ldkv, int n, int hd, float scale, float *sc,
                  float *o);
void st_attn_head_ref(const float *q, const float *K, const float *V, int ldkv, int n, int hd, float scale,
                      float *sc, float *o);
/* per-ISA versions (ops_avx512.c, ops_avx2.c); call the dispatchers above */
void st_ssm_scan_avx512(float *S, int P, int N, const float *x, const float *B, const float *C, int ld_in,
                        const float *dt, int ld_dt, float A, float D, float *y, int ld_y, int T);
void st_ssm_scan_avx2(float *S, int P, int N, const float *x, const float *B, const float *C, int ld_in,
                      const float *dt, int ld_dt, float A, float D, float *y, int ld_y, int T);
void st_attn_head_avx512(const float *q, const float *K, const float *V, int ldkv, int n, int hd, float scale,
                         float *sc, float *o);
void st_attn_head_avx2(const float *q, const float *K, const float *V, int ldkv, int n, int hd, float scale,
                       float *sc, float *o);

/* ---- row ops (norm.c, act.c, route.c, conv.c): the element-wise and
 * per-row ops of the forward pass, used by the inference pass (forward.c)
 * and by the training forward (backward.c) alike. Each has a reference twin
 * (st_*_ref: the formula in double) that tests/test_kernels.c compares it
 * with on odd sizes and every ISA level. The fast paths keep the evaluation
 * order the inference pass has always had, so they give the same bits on
 * every ISA level and the shipped models keep the outputs they were measured
 * with: only element-wise products are vectorised, sums of squares stay
 * sequential in double, exp/log1p are libm's.
 *
 * The scalar activations, shared with the gradient code of backward.c. */
static inline float st_sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }
static inline float st_siluf(float x) { return x / (1.0f + expf(-x)); }
static inline float st_softplusf(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

/* RMSNorm of one row over its n active channels (a budget keeps a prefix):
 *   r = 1/sqrt(Σ x²/n + eps);  y[i] = w[i]·x[i]·r   (i < n)
 * x, y, w: [n] (y == x allowed). Returns r (the training pass keeps it). */
float st_rmsnorm(float *y, const float *x, const float *w, int n, float eps);
float st_rmsnorm_ref(float *y, const float *x, const float *w, int n, float eps);
/* Grouped RMSNorm of the Mamba-2 mixer over one row, in place: v: [G][gsz];
 * per group g, r_g = 1/sqrt(Σ v²/n_mean + eps) (n_mean: the count of entries
 * that exist, gsz unless masked entries are zeros) and v[j] ← v[j]·r_g·w[j];
 * w: [G·gsz]; rstd: [G] r_g out, or NULL. */
void st_rmsnorm_groups(float *v, int G, int gsz, int n_mean, const float *w, float eps, float *rstd);
void st_rmsnorm_groups_ref(float *v, int G, int gsz, int n_mean, const float *w, float eps, float *rstd);
/* The mixer's gate, then the grouped norm: v[j] = y[j]·silu(z[j]) for
 * j < G·gsz (v == y allowed), then st_rmsnorm_groups(v, ...). */
void st_gated_rmsnorm(float *v, const float *y, const float *z, int G, int gsz, int n_mean, const float *w, float eps,
                      float *rstd);
void st_gated_rmsnorm_ref(float *v, const float *y, const float *z, int G, int gsz, int n_mean, const float *w,
                          float eps, float *rstd);

/* Element-wise, n elements, y == x allowed:
 *   st_relu2        y = max(x, 0)²                 (the MLP / expert activation)
 *   st_silu_mul     y = a·silu(z)                  (the Mamba gate)
 *   st_softplus_clamp y = clamp(softplus(x + bias), lo, hi)  (Mamba dt; bias [n]) */
void st_relu2(float *y, const float *x, size_t n);
void st_relu2_ref(float *y, const float *x, size_t n);
void st_silu_mul(float *y, const float *a, const float *z, size_t n);
void st_silu_mul_ref(float *y, const float *a, const float *z, size_t n);
void st_softplus_clamp(float *y, const float *x, const float *bias, int n, float lo, float hi);
void st_softplus_clamp_ref(float *y, const float *x, const float *bias, int n, float lo, float hi);

/* per-ISA versions of the vectorised parts (ops_avx512.c, ops_avx2.c):
 * y[i] = (x[i]·r)·w[i] and y = max(x, 0)², bit-identical to the scalar loops */
void st_rowscale_avx512(float *y, const float *x, const float *w, float r, int n);
void st_rowscale_avx2(float *y, const float *x, const float *w, float r, int n);
void st_relu2_avx512(float *y, const float *x, size_t n);
void st_relu2_avx2(float *y, const float *x, size_t n);

/* MoE router of one token (docs/architecture.md §2.6) over E experts:
 * scores s = sigmoid(logits); choose k experts by s + bias (the correction
 * bias only chooses), with n_group > 1 only within the topk_group groups of
 * E/n_group experts whose two best s + bias sum highest; weights
 * wt_j = s_j (/ Σ_j s_j + 1e-20 if norm_topk) · scale. Ties go to the lowest
 * expert (and group) index. idx, wt: [k], k <= E. */
typedef struct {
    int n_group, topk_group; /* n_group <= 1: no groups                         */
    int norm_topk;           /* renormalise the chosen scores (norm_topk_prob)  */
    float scale;             /* routed_scaling_factor                           */
} st_route_cfg;
void st_moe_route(const float *logits, const float *bias, int E, int k, const st_route_cfg *rc, int32_t *idx,
                  float *wt);
void st_moe_route_ref(const float *logits, const float *bias, int E, int k, const st_route_cfg *rc, int32_t *idx,
                      float *wt);

/* Causal depthwise conv of one channel with K taps w[K], bias b, over T
 * tokens, then SiLU (the Mamba-2 conv over x|B|C):
 *   a_t = b + w[K−1]·x_t + Σ_{k<K−1} w[k]·h[k] ;  h ← (h[1..K−2], x_t) ;  y_t = silu(a_t)
 * h: [K−1] the channel's previous K−1 inputs, oldest first (zeros at the
 * start of a sequence), updated; x_t at x[t·ldx], y_t at y[t·ldy], and a_t
 * at pre[t·ldy] unless pre is NULL. st_conv_step is the one-token (decode)
 * form: it updates h and returns a_t. A chunk split anywhere gives the same
 * numbers as the whole. K <= 64. */
float st_conv_step(float *h, int K, const float *w, float b, float x);
void st_conv_chunk(float *h, int K, const float *w, float b, const float *x, int ldx, int T, float *y, float *pre,
                   int ldy);
void st_conv_chunk_ref(float *h, int K, const float *w, float b, const float *x, int ldx, int T, float *y, float *pre,
                       int ldy);

/* ---- time per op class (the benchmark's breakdown of one decoded token).
 * A thread that attaches a profile has its forward passes add the wall time
 * of each op class to it; st_matmul splits its own time into the work of the
 * average thread (ST_PROF_MATMUL) and the rest (ST_PROF_SYNC: fork/join,
 * threads waiting for the slowest). Off (one thread-local load per op) unless
 * attached. */
typedef enum {
    ST_PROF_MATMUL, ST_PROF_SYNC, ST_PROF_MAMBA, ST_PROF_ATTN, ST_PROF_ROUTE, ST_PROF_NORM,
    ST_PROF_SAMPLE, ST_PROF_OTHER, ST_PROF_N
} st_prof_class;
typedef struct {
    double s[ST_PROF_N]; /* seconds per class                                */
    double flops;        /* 2·rows·cols·tokens of every st_matmul while attached */
    double bytes;        /* weight bytes those products read (rows·cols·size)    */
} st_prof;
void st_prof_attach(st_prof *p);         /* NULL detaches */
st_prof *st_prof_attached(void);
const char *st_prof_name(st_prof_class c); /* "matmul", "sync", ... */

/* ---- internal to src/kernels: the per-ISA kernel tables that matmul.c
 * drives (threading, spans and blocking live in matmul.c). Only touched after
 * st_isa_detect() has confirmed the ISA. */
typedef struct {
    int mr, nr, kc;  /* GEMM micro-tile: mr tokens x nr rows; K block length */
    /* Decode path: y[t*ldy + j] (=|+=) Σ_i W[rows[j]][c(i)]·x[t*ldx + i] for
     * j < n, t < T (any T; done in blocks of a few tokens). Float dtypes. */
    void (*gemv)(const st_mat *W, const int64_t *rows, int n, const st_span *cs, int n_cs,
                 const float *x, int ldx, float *y, int ldy, int T, int accumulate);
    /* GEMM weight panel: rows rows[0..n) (n <= nr; the rest are zero) at the
     * columns seg[0..nseg) (absolute column spans, kc columns in all) ->
     * dst[kcp][nr] fp32 with the scale applied, kcp = kc rounded up to 16.
     * tmp: nr*kcp floats of scratch. dst and tmp 64-byte aligned. */
    void (*pack_b)(const st_mat *W, const int64_t *rows, int n, const st_span *seg, int nseg,
                   int kc, float *tmp, float *dst);
    /* Micro-kernels kernel[q] for mr_q = (q+1)·mr/3 tokens (the last token
     * block uses the smallest that covers it): C[m*ldc + r] (=|+=)
     * Σ_k a[k*mr_q + m]·b[k*nr + r], m < mr_q, r < nr (load_c: start from C). */
    void (*kernel[3])(int kc, const float *a, const float *b, float *c, int ldc, int load_c);
    /* Optional decode kernel with its own x layout (NVFP4 on AVX512_BF16 for
     * one token, on AVX512_VNNI for any decode token count): dp1_prep writes
     * one token's x (packed over the spans) into dp1_bytes(cs) bytes at xp,
     * once per token and call; dp1_gemv then computes rows[0..n) of T tokens
     * into y[t*ldy + j], token t's prepared x at xp + t*xstride. Used only
     * where st_isa_bf16() and T = 1 (st_isa_vnni() if dp1_vnni) say so. With
     * dp1_vnni a token's row is the same bits at every T (batch-invariant). */
    int dp1_vnni;
    size_t (*dp1_bytes)(const st_span *cs, int n_cs);
    void (*dp1_prep)(const st_span *cs, int n_cs, const float *x, void *xp);
    void (*dp1_gemv)(const st_mat *W, const int64_t *rows, int n, const st_span *cs, int n_cs, const void *xp,
                     size_t xstride, int T, float *y, int ldy, int accumulate);
} st_mm_ops;
extern const st_mm_ops st_mm_ops_avx2, st_mm_ops_avx512;
/* NVFP4 tables, used when every column span is 16-aligned (offset and length
 * multiples of 16). Their gemv takes x permuted per span (st_matmul does it once per call):
 * each 32-element chunk as [x0 x2 .. x30 | x1 x3 .. x31], a final 16-element
 * chunk as [x0 x2 .. x14 | x1 x3 .. x15]. pack_b and the kernels work as for
 * the float tables (x in natural order). */
extern const st_mm_ops st_mm_ops_avx2_nvfp4, st_mm_ops_avx512_nvfp4;
/* st_mm_ops_avx512_nvfp4 with the int8 (AVX512_VNNI) one-token kernel */
extern const st_mm_ops st_mm_ops_avx512_nvfp4_q8;

#endif

/*
 * test_kernels.c — every st_matmul path (each ISA level this machine has,
 * decode and GEMM shapes, one and two threads) against st_matmul_ref on
 * random inputs of odd sizes and spans; dtype conversions bit-exactly; the
 * ops of the forward pass that are not products (SSM scan, attention,
 * RMSNorm and the grouped gated norm, activations, conv, MoE routing)
 * against their references on odd sizes and every ISA level.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "starling.h"
#include "util/util.h"

static int quick(void) { return getenv("ST_TEST_QUICK") != NULL; }

/* ------------------------------------------------------------ rng */

static uint64_t g_rng = 0x1234abcd5678ef01ull;
static uint64_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}
static float rndf(void) { return (float)((double)(rnd() >> 11) * 0x1.0p-53 * 2.0 - 1.0); }
static int rndi(int n) { return (int)(rnd() % (uint64_t)n); }

/* ------------------------------------------------------------ dtypes */

static void test_dtype_names(void **state) {
    (void)state;
    static const char *names[] = {"BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16",
                                  "BF16", "I32", "U32", "F32", "F64", "I64", "U64"};
    static const size_t sizes[] = {1, 1, 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 8, 8, 8};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        st_dtype dt;
        assert_int_equal(st_dtype_from_name(names[i], &dt), 0);
        assert_string_equal(st_dtype_name(dt), names[i]);
        assert_int_equal(st_dtype_size(dt), sizes[i]);
    }
    st_dtype dt;
    assert_int_equal(st_dtype_from_name("F4", &dt), -1);
    assert_int_equal(st_dtype_from_name("bf16", &dt), -1);
    assert_int_equal(st_dtype_from_name(NULL, &dt), -1);
    assert_int_equal(st_dtype_size(ST_DT_COUNT), 0);
}

static float f16_formula(uint16_t h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 31) return m ? NAN : (s ? -INFINITY : INFINITY);
    v = e ? ldexp(1.0 + m / 1024.0, e - 15) : ldexp(m / 1024.0, -14);
    return (float)(s ? -v : v);
}

static void test_f16_all_codes(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = st_f16_to_f32((uint16_t)h), g = f16_formula((uint16_t)h);
        if (isnan(g)) {
            assert_true(isnan(f));
            assert_true((st_f32_to_f16(f) & 0x7fff) > 0x7c00); /* NaN stays NaN */
            continue;
        }
        assert_memory_equal(&f, &g, 4); /* also the sign of zero */
        assert_int_equal(st_f32_to_f16(f), h);
    }
    /* subnormals */
    assert_true(st_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    assert_true(st_f16_to_f32(0x03ff) == 1023.0f * ldexpf(1.0f, -24));
    assert_true(st_f16_to_f32(0x0400) == ldexpf(1.0f, -14));
    assert_true(st_f16_to_f32(0x8001) == -ldexpf(1.0f, -24));
    assert_int_equal(st_f32_to_f16(ldexpf(1.0f, -25)), 0);           /* tie -> even (0) */
    assert_int_equal(st_f32_to_f16(ldexpf(1.5f, -25)), 1);
    assert_int_equal(st_f32_to_f16(ldexpf(3.0f, -25)), 2);           /* 1.5 ulp: tie -> 2 */
    assert_int_equal(st_f32_to_f16(ldexpf(1.0f, -26)), 0);
    assert_int_equal(st_f32_to_f16(-ldexpf(1.0f, -30)), 0x8000);
    assert_int_equal(st_f32_to_f16(ldexpf(1023.5f, -24)), 0x0400);   /* rounds up to normal */
    assert_int_equal(st_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(st_f32_to_f16(65519.99f), 0x7bff);
    assert_int_equal(st_f32_to_f16(65520.0f), 0x7c00);
    assert_int_equal(st_f32_to_f16(-INFINITY), 0xfc00);
    assert_int_equal(st_f32_to_f16(1.0f + ldexpf(1.0f, -11)), 0x3c00); /* tie -> even */
    assert_int_equal(st_f32_to_f16(1.0f + 3 * ldexpf(1.0f, -11)), 0x3c02);
}

/* Nearest-even property on random floats of every magnitude. */
static void test_f16_rounding(void **state) {
    (void)state;
    int n = quick() ? 20000 : 400000;
    for (int i = 0; i < n; i++) {
        uint32_t u = (uint32_t)rnd() & 0x47ffffffu; /* |v| < 2^16·2, both signs via bit 31 */
        if (rnd() & 1) u |= 0x80000000u;
        float v;
        memcpy(&v, &u, 4);
        if (fabsf(v) >= 65520.0f) continue;
        uint16_t h = st_f32_to_f16(v);
        double d = fabs((double)st_f16_to_f32(h) - v);
        for (int dlt = -1; dlt <= 1; dlt += 2) {
            uint16_t g = (uint16_t)(h + dlt);
            if (((g ^ h) & 0x8000) || (g & 0x7c00) == 0x7c00) continue;
            double dg = fabs((double)st_f16_to_f32(g) - v);
            assert_true(d <= dg);
            if (d == dg) assert_true((h & 1) == 0);
        }
    }
}

static void test_bf16_roundtrip(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = st_bf16_to_f32((uint16_t)h);
        if (isnan(f)) continue;
        assert_int_equal(st_f32_to_bf16(f), h);
    }
    for (int i = 0; i < 100000; i++) {
        float v = rndf() * ldexpf(1.0f, rndi(60) - 30);
        float r = st_bf16_to_f32(st_f32_to_bf16(v));
        assert_true(fabsf(r - v) <= fabsf(v) * ldexpf(1.0f, -8));
    }
}

static void test_e4m3_all_codes(void **state) {
    (void)state;
    for (int b = 0; b < 256; b++) {
        int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
        unsigned char code = (unsigned char)b;
        float f, g;
        st_convert_to_f32(ST_DT_F8_E4M3, &code, &f, 1, 1.0f);
        st_convert_to_f32(ST_DT_F8_E4M3, &code, &g, 1, 0.375f);
        if (e == 15 && m == 7) {
            assert_true(isnan(f));
            assert_true(isnan(g));
            continue;
        }
        double v = e == 0 ? (m / 8.0) * ldexp(1.0, -6) : (1.0 + m / 8.0) * ldexp(1.0, e - 7);
        if (s) v = -v;
        assert_true(f == (float)v);
        assert_true(!!signbit(f) == !!signbit(v));
        assert_true(g == (float)(v * 0.375));
    }
    unsigned char mx = 0x7e;
    float f;
    st_convert_to_f32(ST_DT_F8_E4M3, &mx, &f, 1, 1.0f);
    assert_true(f == 448.0f);
}

static void test_e5m2_and_ints(void **state) {
    (void)state;
    unsigned char e5[4] = {0x3c, 0x01, 0x7c, 0xc0}; /* 1, 2^-16, inf, -2 */
    float f[4];
    st_convert_to_f32(ST_DT_F8_E5M2, e5, f, 4, 1.0f);
    assert_true(f[0] == 1.0f && f[1] == ldexpf(1.0f, -16) && isinf(f[2]) && f[3] == -2.0f);

    int16_t i16[3] = {-7, 0, 32767};
    st_convert_to_f32(ST_DT_I16, i16, f, 3, 1.0f);
    assert_true(f[0] == -7.0f && f[1] == 0.0f && f[2] == 32767.0f);
    uint8_t u8[2] = {255, 3};
    st_convert_to_f32(ST_DT_U8, u8, f, 2, 2.0f);
    assert_true(f[0] == 510.0f && f[1] == 6.0f);
    double d[2] = {1.5, -2.25};
    st_convert_to_f32(ST_DT_F64, d, f, 2, 1.0f);
    assert_true(f[0] == 1.5f && f[1] == -2.25f);
    unsigned char bo[2] = {0, 1};
    st_convert_to_f32(ST_DT_BOOL, bo, f, 2, 1.0f);
    assert_true(f[0] == 0.0f && f[1] == 1.0f);
}

/* 16-bit data at an odd address, and st_mat_row_f32 on it. */
static void test_convert_unaligned(void **state) {
    (void)state;
    unsigned char buf[1 + 2 * 37];
    float ref[37], out[37];
    for (int i = 0; i < 37; i++) {
        ref[i] = st_bf16_to_f32(st_f32_to_bf16(rndf()));
        uint16_t h = st_f32_to_bf16(ref[i]);
        memcpy(buf + 1 + 2 * i, &h, 2);
    }
    st_convert_to_f32(ST_DT_BF16, buf + 1, out, 37, 1.0f);
    assert_memory_equal(out, ref, sizeof ref);
    st_mat W = {.dt = ST_DT_BF16, .data = buf + 1, .rows = 1, .cols = 37, .scale = 1.0f};
    st_mat_row_f32(&W, 0, 5, 30, out);
    assert_memory_equal(out, ref + 5, 30 * sizeof(float));
}

/* ------------------------------------------------------------ matmul */

typedef struct {
    st_mat W;
    unsigned char *alloc;
} wmat;

/* Random full matrix of dt, placed at a random byte offset (mmap'd tensors can
 * sit anywhere; element-aligned offsets exercise the decode's alignment peel,
 * odd ones the path without it). */
static wmat make_w(st_dtype dt, int rows, int cols) {
    const size_t esz = st_dtype_size(dt), n = (size_t)rows * cols;
    wmat m;
    m.alloc = malloc(n * esz + 64);
    unsigned char *p = m.alloc + (rnd() & 63);
    for (size_t i = 0; i < n; i++) {
        float v = rndf();
        switch (dt) {
        case ST_DT_F32: memcpy(p + 4 * i, &v, 4); break;
        case ST_DT_F16: { uint16_t h = st_f32_to_f16(v); memcpy(p + 2 * i, &h, 2); break; }
        case ST_DT_BF16: { uint16_t h = st_f32_to_bf16(v); memcpy(p + 2 * i, &h, 2); break; }
        case ST_DT_F8_E4M3:
        case ST_DT_F8_E5M2: {
            unsigned char c;
            do c = (unsigned char)rnd();
            while (dt == ST_DT_F8_E4M3 ? (c & 0x7f) == 0x7f : (c & 0x7c) == 0x7c); /* finite */
            p[i] = c;
            break;
        }
        default: assert_true(0);
        }
    }
    m.W = (st_mat){.dt = dt, .data = p, .rows = rows, .cols = cols,
                   .scale = (dt == ST_DT_F8_E4M3 || dt == ST_DT_F8_E5M2) ? 0.0371f : 1.0f};
    return m;
}

/* n random spans inside [0, full) with total length <= maxlen */
static int make_spans(st_span *s, int nmax, int full, int maxlen) {
    int n = 1 + rndi(nmax), tot = 0;
    for (int i = 0; i < n; i++) {
        int len = 1 + rndi(full < 80 ? full : 80);
        if (tot + len > maxlen) len = maxlen - tot;
        if (len <= 0) return i;
        s[i].len = len;
        s[i].off = rndi(full - len + 1);
        tot += len;
    }
    return n;
}

static int64_t tot(const st_span *s, int n) {
    int64_t t = 0;
    for (int i = 0; i < n; i++) t += s[i].len;
    return t;
}

static int g_checked;

/* st_matmul vs st_matmul_ref: |Δ| <= 1e-5·(Σ|w·x| + |y0|) per output. */
/* Σ|w_i|·|x_i - x̂_i|: what rounding x to two int8 digits per 16 packed
 * columns (st_q8_block) can move a dot product by. */
static double q8_err(const float *w, const float *x, const st_span *cs, int n_cs) {
    double e = 0;
    int i = 0;
    for (int b = 0; b < n_cs; b++)
        for (int c = 0; c < cs[b].len; c += 16, i += 16) {
            const int n = cs[b].len - c < 16 ? cs[b].len - c : 16;
            int8_t h[16], l[16];
            const double sc = st_q8_block(x + i, n, h, l);
            for (int k = 0; k < n; k++) e += fabs((double)w[i + k]) * fabs((double)x[i + k] - sc * (h[k] + l[k] / 256.0));
        }
    return e;
}

static void check_case(const st_mat *W, const st_span *rs, int n_rs, const st_span *cs, int n_cs,
                       int T, int accumulate, int padx, int pady) {
    const int N = (int)tot(rs, n_rs), K = (int)tot(cs, n_cs), ldx = K + padx, ldy = N + pady;
    float *x = malloc(sizeof(float) * ((size_t)T * ldx + 1));
    float *y = malloc(sizeof(float) * ((size_t)T * ldy + 1));
    float *yr = malloc(sizeof(float) * ((size_t)T * ldy + 1));
    float *bound = malloc(sizeof(float) * ((size_t)T * ldy + 1));
    float *wrow = malloc(sizeof(float) * ((size_t)K + 1));
    for (int i = 0; i < T * ldx; i++) x[i] = rndf();
    for (int i = 0; i < T * ldy; i++) y[i] = yr[i] = rndf();

    st_matmul_ref(W, rs, n_rs, cs, n_cs, x, ldx, yr, ldy, T, accumulate);
    st_matmul(W, rs, n_rs, cs, n_cs, x, ldx, y, ldy, T, accumulate);

    /* Σ|w·x| per output */
    int j = 0;
    for (int a = 0; a < n_rs; a++)
        for (int r = rs[a].off; r < rs[a].off + rs[a].len; r++, j++) {
            int i = 0;
            for (int b = 0; b < n_cs; b++) {
                st_mat_row_f32(W, r, cs[b].off, cs[b].len, wrow + i);
                i += cs[b].len;
            }
            for (int t = 0; t < T; t++) {
                double s = 0, q = 0;
                for (i = 0; i < K; i++) s += fabs((double)wrow[i] * x[t * ldx + i]);
                if (W->dt == ST_DT_NVFP4 && T < st_matmul_gemm_min_t(0) && st_isa_vnni())
                    q = q8_err(wrow, x + t * ldx, cs, n_cs); /* x's rounding to int8 digits */
                bound[t * ldy + j] = (float)(1e-5 * (s + 1.0) + q); /* +|y0| <= 1 when accumulating */
            }
        }
    for (int t = 0; t < T; t++) {
        for (j = 0; j < N; j++) {
            float d = fabsf(y[t * ldy + j] - yr[t * ldy + j]);
            if (!(d <= bound[t * ldy + j])) {
                print_error("%s isa=%s N=%d K=%d T=%d acc=%d t=%d j=%d: %g vs ref %g (bound %g)\n",
                            st_dtype_name(W->dt), st_isa_name(st_isa_get()), N, K, T, accumulate,
                            t, j, y[t * ldy + j], yr[t * ldy + j], (double)bound[t * ldy + j]);
                fail();
            }
        }
        /* the padding between packed rows is never written */
        for (j = N; j < ldy; j++) assert_true(y[t * ldy + j] == yr[t * ldy + j]);
    }
    g_checked++;
    free(x); free(y); free(yr); free(bound); free(wrow);
}

static const int g_sizes[] = {1, 3, 17, 31, 33, 64, 67, 257};
static const int g_tokens[] = {1, 2, 3, 4, 5, 7, 8, 13, 17, 31, 33, 48, 51, 64, 67};
#define NSIZES (int)(sizeof g_sizes / sizeof *g_sizes)
#define NTOK (int)(sizeof g_tokens / sizeof *g_tokens)

static void run_dtype(st_dtype dt) {
    const st_isa top = st_isa_detect();
    for (int isa = ST_ISA_SCALAR; isa <= (int)top; isa++) {
        st_isa_set((st_isa)isa);
        assert_int_equal(st_isa_get(), isa);
        /* passes: 1 thread, 2 threads, 2 threads with the GEMM for every T,
         * 2 threads again; the decode passes run every prefetch variant */
        for (int pass = 0; pass < 4; pass++) {
            st_set_threads(pass ? 2 : 1);
            const int pfm = st_prefetch_mode_set(pass == 0 ? ST_PF_AHEAD : pass == 1 ? ST_PF_NTA : ST_PF_NONE);
            const int gmin = st_matmul_gemm_min_t(pass == 2 ? 1 : 0);
            /* prefix spans, sizes from the list */
            for (int a = 0; a < NSIZES; a++)
                for (int b = 0; b < NSIZES; b++) {
                    if ((quick() && (a + b) % 3) || (a + b + pass) % 3 == 0) continue;
                    const int R = g_sizes[a], C = g_sizes[b];
                    const int T = g_tokens[rndi(NTOK)];
                    if ((double)R * C * T > 3e5 && rnd() % 4) continue; /* keep the ref cheap */
                    wmat m = make_w(dt, R + 5, C + 7);
                    st_span rs = {0, R}, cs = {0, C};
                    check_case(&m.W, &rs, 1, &cs, 1, T, (int)(rnd() & 1), rndi(3) * 5, rndi(3) * 3);
                    free(m.alloc);
                }
            /* many row and column spans (budget head cuts), across K blocks */
            const int ncase = quick() ? 6 : 24;
            for (int c = 0; c < ncase; c++) {
                const int RF = 8 + rndi(300), CF = 8 + rndi(700);
                wmat m = make_w(dt, RF, CF);
                st_span rs[8], cs[70];
                int nr = make_spans(rs, 8, RF, 300), nc;
                if (c % 3 == 0) { /* per-group head cut: a kept prefix of each 64-wide group */
                    int keep = 1 + rndi(64); /* 64: adjacent spans, merged */
                    nc = 0;
                    for (int g = 0; g + 64 <= CF && nc < 70; g += 64) cs[nc++] = (st_span){g, keep};
                    if (!nc) cs[nc++] = (st_span){0, CF};
                } else {
                    nc = make_spans(cs, 12, CF, 900);
                }
                const int T = g_tokens[rndi(NTOK)];
                check_case(&m.W, rs, nr, cs, nc, T, c & 1, rndi(4), rndi(4) * 7);
                free(m.alloc);
            }
            st_matmul_gemm_min_t(gmin);
            st_prefetch_mode_set(pfm);
        }
    }
    st_isa_set(top);
    st_set_threads(0);
}

static void test_matmul_f32(void **state) { (void)state; run_dtype(ST_DT_F32); }
static void test_matmul_f16(void **state) { (void)state; run_dtype(ST_DT_F16); }
static void test_matmul_bf16(void **state) { (void)state; run_dtype(ST_DT_BF16); }
static void test_matmul_e4m3(void **state) { (void)state; run_dtype(ST_DT_F8_E4M3); }
static void test_matmul_e5m2(void **state) { (void)state; run_dtype(ST_DT_F8_E5M2); }

/* Shapes that exercise the GEMM's full tiles, several K blocks, the token
 * split (few row panels) and the parallel decode, on every ISA. */
static void test_matmul_big(void **state) {
    (void)state;
    const st_isa top = st_isa_detect();
    struct { int R, C, T, nspan; } cases[] = {
        {64, 512, 48, 1}, {96, 777, 60, 1}, {17, 600, 67, 1}, {33, 300, 130, 3},
        {512, 384, 1, 1}, {300, 256, 3, 4}, {129, 1024, 12, 6}, {40, 2048, 2, 32},
        {200, 530, 52, 2}, {64, 256, 96, 1},
        /* past the size from which st_matmul splits rows across threads
         * (odd cases run with 2): decode, small-T and GEMM shapes */
        {700, 520, 1, 3}, {700, 520, 1, 3}, {610, 450, 5, 1}, {610, 450, 60, 2}, {530, 540, 7, 5}, {530, 540, 7, 5},
    };
    for (int isa = ST_ISA_SCALAR; isa <= (int)top; isa++) {
        st_isa_set((st_isa)isa);
        for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
            if (quick() && c % 2) continue;
            st_set_threads(1 + (int)(c & 1));
            st_dtype dt = c % 3 == 0 ? ST_DT_BF16 : c % 3 == 1 ? ST_DT_F16 : ST_DT_F8_E4M3;
            wmat m = make_w(dt, cases[c].R + 3, cases[c].C + 70);
            st_span rs[2] = {{3, cases[c].R - 5}, {0, 5}}, cs[32];
            const int ns = cases[c].nspan, w = cases[c].C / ns;
            for (int s = 0; s < ns; s++) cs[s] = (st_span){s * (w + 2), w};
            check_case(&m.W, rs, 2, cs, ns, cases[c].T, (int)(c & 1), 3, 1);
            free(m.alloc);
        }
    }
    st_isa_set(top);
    st_set_threads(0);
}

static void test_matmul_degenerate(void **state) {
    (void)state;
    wmat m = make_w(ST_DT_BF16, 4, 8);
    st_span rs = {0, 4}, cs0 = {3, 0};
    float x[8] = {0}, y[8];
    for (int i = 0; i < 8; i++) y[i] = 5.0f;
    st_matmul(&m.W, &rs, 1, &cs0, 1, x, 8, y, 4, 2, 1); /* empty sum, accumulate: unchanged */
    for (int i = 0; i < 8; i++) assert_true(y[i] == 5.0f);
    st_matmul(&m.W, &rs, 1, &cs0, 1, x, 8, y, 4, 2, 0); /* empty sum: zeros */
    for (int i = 0; i < 8; i++) assert_true(y[i] == 0.0f);
    st_matmul(&m.W, &rs, 0, &cs0, 1, x, 8, y, 4, 2, 0); /* no rows, no tokens: nothing */
    st_matmul(&m.W, &rs, 1, &cs0, 1, x, 8, y, 4, 0, 0);
    /* an unset scale (0) means 1 */
    st_mat W0 = m.W;
    W0.scale = 0.0f;
    st_span cs = {0, 8};
    float y1[4], y2[4];
    for (int i = 0; i < 8; i++) x[i] = rndf();
    st_matmul(&m.W, &rs, 1, &cs, 1, x, 8, y1, 4, 1, 0);
    st_matmul(&W0, &rs, 1, &cs, 1, x, 8, y2, 4, 1, 0);
    assert_memory_equal(y1, y2, sizeof y1);
    free(m.alloc);

    /* non-float weights take the portable path */
    int8_t w8[6] = {1, -2, 3, 4, 5, -6};
    st_mat Wi = {.dt = ST_DT_I8, .data = w8, .rows = 2, .cols = 3, .scale = 0.5f};
    st_span r2 = {0, 2}, c3 = {0, 3};
    float xi[3] = {1, 2, 3}, yi[2];
    st_matmul(&Wi, &r2, 1, &c3, 1, xi, 3, yi, 2, 1, 0);
    assert_true(yi[0] == 3.0f && yi[1] == -2.0f);
}

/* NVFP4 (ModelOpt): decode against §5.3 written out independently, and
 * st_matmul on it (portable path for now) against a double-precision sum. */
static double e2m1_formula(unsigned q) {
    static const double mag[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
    return (q & 8) ? -mag[q & 7] : mag[q & 7];
}
static double e4m3_formula(unsigned b) {
    int e = (b >> 3) & 15, m = b & 7;
    return e == 0 ? (m / 8.0) * ldexp(1.0, -6) : (1.0 + m / 8.0) * ldexp(1.0, e - 7);
}

static void test_nvfp4(void **state) {
    (void)state;
    enum { R = 37, C = 96 };
    uint8_t codes[R * C / 2], bs[R * C / 16];
    for (size_t i = 0; i < sizeof codes; i++) codes[i] = (uint8_t)rnd();
    for (size_t i = 0; i < sizeof bs; i++) bs[i] = (uint8_t)(0x20 + rndi(0x50)); /* positive, finite */
    st_mat W = {.dt = ST_DT_NVFP4, .data = codes, .rows = R, .cols = C, .scale = 0.0123f, .bscale = bs};
    assert_string_equal(st_dtype_name(ST_DT_NVFP4), "NVFP4");
    double *w = malloc(sizeof(double) * R * C);
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            unsigned byte = codes[r * C / 2 + c / 2], q = c % 2 ? byte >> 4 : byte & 15;
            w[r * C + c] = e2m1_formula(q) * e4m3_formula(bs[r * C / 16 + c / 16]) * (double)0.0123f;
        }
    float row[C];
    st_mat_row_f32(&W, 5, 3, C - 3, row);
    for (int c = 3; c < C; c++) assert_true(fabs(row[c - 3] - w[5 * C + c]) <= 1e-7 * fabs(w[5 * C + c]));

    const st_isa top = st_isa_detect();
    for (int isa = ST_ISA_SCALAR; isa <= (int)top; isa++) {
        st_isa_set((st_isa)isa);
        const int Ts[] = {1, 5, 60};
        for (int ti = 0; ti < 3; ti++) {
            const int T = Ts[ti];
            st_span rs[2] = {{4, 20}, {0, 3}}, cs[2] = {{16, 33}, {64, 17}};
            float *x = malloc(sizeof(float) * T * 50), *y = malloc(sizeof(float) * T * 23);
            for (int i = 0; i < T * 50; i++) x[i] = rndf();
            st_set_threads(1 + (ti & 1));
            st_matmul(&W, rs, 2, cs, 2, x, 50, y, 23, T, 0);
            for (int t = 0; t < T; t++) {
                int j = 0;
                for (int a = 0; a < 2; a++)
                    for (int r = rs[a].off; r < rs[a].off + rs[a].len; r++, j++) {
                        double sum = 0, mag = 0;
                        int i = 0;
                        for (int b = 0; b < 2; b++)
                            for (int c = cs[b].off; c < cs[b].off + cs[b].len; c++, i++) {
                                sum += w[r * C + c] * x[t * 50 + i];
                                mag += fabs(w[r * C + c] * x[t * 50 + i]);
                            }
                        assert_true(fabs(y[t * 23 + j] - sum) <= 1e-5 * mag + 1e-30);
                    }
            }
            free(x);
            free(y);
        }
    }
    st_isa_set(top);
    st_set_threads(0);
    free(w);
}

/* Random NVFP4 matrix (cols a multiple of 16): random codes, random E4M3
 * block scales over the whole finite range (zero, subnormal, 448; sign bit
 * set at random: ignored), at odd byte offsets. */
typedef struct {
    st_mat W;
    unsigned char *alloc;
} nvmat;
static nvmat make_nv(int rows, int cols) {
    const size_t nc = (size_t)rows * cols / 2, ns = (size_t)rows * cols / 16;
    nvmat m;
    m.alloc = malloc(nc + ns + 64);
    unsigned char *p = m.alloc + 1 + (rnd() & 7), *bs = p + nc + 1 + (rnd() & 7);
    for (size_t i = 0; i < nc; i++) p[i] = (unsigned char)rnd();
    for (size_t i = 0; i < ns; i++) {
        unsigned char b;
        switch (rndi(8)) {
        case 0: b = 0; break;                          /* zero block */
        case 1: b = (unsigned char)(1 + rndi(7)); break; /* subnormal */
        case 2: b = 0x7e; break;                       /* 448 */
        default: b = (unsigned char)rndi(0x7f); break;
        }
        bs[i] = (unsigned char)(b | (rnd() & 1 ? 0x80 : 0));
    }
    m.W = (st_mat){.dt = ST_DT_NVFP4, .data = p, .rows = rows, .cols = cols,
                   .scale = rnd() & 1 ? 0.0f : 0.00731f, .bscale = bs};
    return m;
}

/* n random 16-aligned spans inside [0, full) (full % 16 == 0) */
static int make_spans16(st_span *s, int nmax, int full) {
    int n = 1 + rndi(nmax);
    for (int i = 0; i < n; i++) {
        int len = 16 * (1 + rndi(full / 16 < 12 ? full / 16 : 12));
        s[i].len = len;
        s[i].off = 16 * rndi((full - len) / 16 + 1);
    }
    return n;
}

/* The NVFP4 kernels (16-aligned column spans) on every ISA, decode and GEMM,
 * one and two threads, against the reference. */
static void test_matmul_nvfp4(void **state) {
    (void)state;
    static const int Ts[] = {1, 2, 3, 4, 5, 7, 17, 48, 64, 130};
    static const int Rs[] = {1, 3, 7, 9, 17, 33, 67, 101};
    const st_isa top = st_isa_detect();
    /* every level, and AVX-512 up to three times: the fp32 decode kernel,
     * the one-token BF16 dot-product kernel and the int8 (VNNI) one, where
     * the CPU has them */
    const int prev_bf16 = st_isa_bf16_set(1), prev_vnni = st_isa_vnni_set(1);
    const int has_bf16 = top == ST_ISA_AVX512 && st_isa_bf16(), has_vnni = top == ST_ISA_AVX512 && st_isa_vnni();
    for (int lv = 0; lv < (int)top + 3; lv++) {
        const int isa = lv <= (int)top ? lv : (int)top, bf = lv == (int)top + 1, vn = lv == (int)top + 2;
        if ((bf && !has_bf16) || (vn && !has_vnni)) continue;
        st_isa_set((st_isa)isa);
        st_isa_bf16_set(bf);
        st_isa_vnni_set(vn);
        assert_int_equal(st_isa_bf16(), bf);
        assert_int_equal(st_isa_vnni(), vn);
        for (int pass = 0; pass < 3; pass++) {
            st_set_threads(pass ? 2 : 1);
            const int gmin = st_matmul_gemm_min_t(pass == 2 ? 1 : 0);
            const int ncase = quick() ? 12 : 40;
            for (int c = 0; c < ncase; c++) {
                const int R = Rs[rndi(8)], CF = 16 * (1 + rndi(c % 4 == 0 ? 64 : 24));
                const int T = Ts[c % 10];
                if ((double)R * CF * T > 2e6 && rnd() % 4) continue; /* keep the ref cheap */
                nvmat m = make_nv(R + 3, CF);
                st_span rs[3] = {{2, R}, {0, 1}, {R + 2, 1}}, cs[12];
                int nc;
                if (c % 3 == 0) { /* one full-width span */
                    cs[0] = (st_span){0, CF};
                    nc = 1;
                } else if (c % 3 == 1 && CF >= 64) { /* per-group head cut */
                    const int keep = 16 * (1 + rndi(4));
                    nc = 0;
                    for (int g = 0; g + 64 <= CF && nc < 12; g += 64) cs[nc++] = (st_span){g, keep};
                } else {
                    nc = make_spans16(cs, 12, CF);
                }
                check_case(&m.W, rs, 1 + rndi(3), cs, nc, T, (int)(rnd() & 1), rndi(3) * 5, rndi(3));
                free(m.alloc);
            }
            st_matmul_gemm_min_t(gmin);
        }
        /* a bigger one: every path of the 8-row decode and full GEMM tiles */
        {
            st_set_threads(2);
            nvmat m = make_nv(303, 1024); /* past the threading threshold */
            st_span rs = {1, 300}, cs[2] = {{0, 512}, {528, 496}};
            for (int ti = 0; ti < 10; ti++) check_case(&m.W, &rs, 1, cs, 2, Ts[ti], ti & 1, 0, 0);
            free(m.alloc);
        }
    }
    st_isa_set(top);
    st_isa_bf16_set(prev_bf16);
    st_isa_vnni_set(prev_vnni);
    st_set_threads(0);
}

/* st_q8_block's digits: within s/512 of x, NaN/Inf and zero blocks. */
static void test_q8_block(void **state) {
    (void)state;
    int8_t h[16], l[16];
    for (int c = 0; c < 2000; c++) {
        float x[16];
        const int n = 1 + rndi(16);
        const double mag = ldexp(1.0, rndi(200) - 100);
        for (int i = 0; i < n; i++) x[i] = (float)(rndf() * mag * (rndi(4) ? 1.0 : 1e-3));
        if (c % 7 == 0) x[rndi(n)] = (float)mag; /* the largest exactly at a digit bound */
        const float s = st_q8_block(x, n, h, l);
        double m = 0;
        for (int i = 0; i < n; i++) m = fmax(m, fabs((double)x[i]));
        assert_true(fabs(s - m / 127.0) <= 1e-6 * m);
        for (int i = 0; i < n; i++) {
            assert_true(h[i] >= -127 && h[i] <= 127);
            const double xh = (double)s * (h[i] + l[i] / 256.0);
            if (!(fabs(xh - x[i]) <= s / 512.0 * 1.0001 + 1e-6 * m)) {
                print_error("x=%g s=%g h=%d l=%d -> %g\n", x[i], s, h[i], l[i], xh);
                fail();
            }
        }
    }
    float z[5] = {0}, bad[3] = {1.0f, NAN, 2.0f}, inf[2] = {-INFINITY, 1.0f};
    assert_true(st_q8_block(z, 5, h, l) == 0.0f && h[4] == 0 && l[4] == 0);
    assert_true(isnan(st_q8_block(bad, 3, h, l)) && h[0] == 0 && h[2] == 0);
    assert_true(isnan(st_q8_block(inf, 2, h, l)));
}

/* The int8 NVFP4 decode (1..9 tokens) against its scalar twin (same rounded
 * x: only fp32 sums differ) and the twin against the fp32 reference (apart by
 * at most Σ|w|·|x - x̂|); a NaN in x comes out NaN. */
static void test_matmul_nvfp4_q8(void **state) {
    (void)state;
    if (!st_isa_vnni()) skip();
    for (int c = 0; c < (quick() ? 40 : 160); c++) {
        const int R = 1 + rndi(40), CF = 16 * (1 + rndi(96)), T = c % 3 ? 1 : 2 + rndi(8);
        st_set_threads(1 + (c & 1));
        nvmat m = make_nv(R, CF);
        st_span rs = {0, R}, cs[12];
        int nc = 1;
        cs[0] = (st_span){0, CF};
        if (c % 2) nc = make_spans16(cs, 12, CF);
        int K = 0;
        for (int b = 0; b < nc; b++) K += cs[b].len;
        float *x = malloc(sizeof(float) * (size_t)K * T), *y = malloc(sizeof(float) * R * T),
              *yt = malloc(sizeof(float) * R * T), *yr = malloc(sizeof(float) * R * T), *w = malloc(sizeof(float) * (size_t)K);
        const double xs = c % 5 == 0 ? 1e-20 : c % 5 == 1 ? 1e6 : 1.0;
        for (int i = 0; i < K * T; i++) x[i] = (float)(rndf() * xs * (rndi(8) ? 1.0 : 50.0)); /* some outliers */
        if (c % 9 == 4) x[rndi(K * T)] = NAN;
        /* a NaN block scale (E4M3 S.1111.111) in row 0 of a full-width case */
        const int nan_scale = nc == 1 && c % 4 == 2;
        if (nan_scale) ((unsigned char *)m.W.bscale)[rndi(CF / 16)] = rnd() & 1 ? 0x7f : 0xff;
        const int acc = (c >> 1) & 1;
        for (int i = 0; i < R * T; i++) y[i] = yt[i] = yr[i] = rndf();
        st_matmul(&m.W, &rs, 1, cs, nc, x, K, y, R, T, acc);
        for (int t = 0; t < T; t++) st_matmul_nvfp4_q8_ref(&m.W, &rs, 1, cs, nc, x + (size_t)t * K, yt + t * R, acc);
        st_matmul_ref(&m.W, &rs, 1, cs, nc, x, K, yr, R, T, acc);
        for (int t = 0; t < T; t++) {
            const float *xt = x + (size_t)t * K;
            int has_nan = 0;
            for (int i = 0; i < K; i++) has_nan |= isnan(xt[i]);
            for (int r = 0; r < R; r++) {
                const int o = t * R + r;
                int i = 0;
                for (int b = 0; b < nc; b++) {
                    st_mat_row_f32(&m.W, r, cs[b].off, cs[b].len, w + i);
                    i += cs[b].len;
                }
                if (has_nan || (nan_scale && r == 0)) {
                    assert_true(isnan(y[o]) && isnan(yt[o]) && isnan(yr[o]));
                    continue;
                }
                double sa = 0;
                for (i = 0; i < K; i++) sa += fabs((double)w[i] * xt[i]);
                const double q = q8_err(w, xt, cs, nc), y0 = acc ? 1.0 : 0.0;
                if (!(fabs(y[o] - yt[o]) <= 1e-5 * (sa + q + y0) && fabs(yt[o] - yr[o]) <= q + 1e-6 * (sa + y0))) {
                    print_error("R=%d K=%d T=%d t=%d r=%d: kernel %g twin %g ref %g (sum|wx| %g, q8 bound %g)\n", R, K, T,
                                t, r, y[o], yt[o], yr[o], sa, q);
                    fail();
                }
                g_checked++;
            }
        }
        free(x); free(y); free(yt); free(yr); free(w); free(m.alloc);
    }
    st_set_threads(0);
}

/* st_matmul_group (the experts of a MoE layer in one parallel region) gives
 * each job bit for bit what st_matmul gives it alone: on every ISA, one and
 * two threads, with jobs that take the GEMM path mixed in, NVFP4 and float
 * dtypes, several spans, and more jobs than one region takes. */
static void test_matmul_group(void **state) {
    (void)state;
    static const st_dtype dts[] = {ST_DT_BF16, ST_DT_F32, ST_DT_F8_E4M3, ST_DT_NVFP4};
    const st_isa top = st_isa_detect();
    for (int isa = ST_ISA_SCALAR; isa <= (int)top; isa++) {
        st_isa_set((st_isa)isa);
        for (int pass = 0; pass < 2; pass++) {
            st_set_threads(pass + 1);
            const int nj = pass ? 70 : 9; /* 70: past the 64 jobs of one region */
            wmat *wm = calloc((size_t)nj, sizeof *wm);
            nvmat *nm = calloc((size_t)nj, sizeof *nm);
            st_mm_job *jobs = calloc((size_t)nj, sizeof *jobs);
            st_span *rs = calloc((size_t)nj, sizeof *rs), *cs = calloc((size_t)nj * 2, sizeof *cs);
            float **x = calloc((size_t)nj, sizeof *x), **y = calloc((size_t)nj, sizeof *y), **yr = calloc((size_t)nj, sizeof *yr);
            int *shared = calloc((size_t)nj, sizeof *shared);
            for (int i = 0; i < nj; i++) {
                /* a third of the jobs read the same x over the same spans as
                 * the job before, as a MoE layer's up projections do (the
                 * one-token kernels prepare that x once) */
                const int share = i > 0 && rndi(3) == 0;
                const st_dtype dt = share ? jobs[i - 1].W->dt : dts[rndi(4)];
                const int R = 1 + rndi(pass ? 40 : 300), C = share ? (int)jobs[i - 1].W->cols : 16 * (2 + rndi(40));
                const int T = share ? jobs[i - 1].T : i % 7 == 6 ? 50 : 1 + rndi(4); /* 50: the GEMM path */
                const st_mat *W;
                if (dt == ST_DT_NVFP4) { nm[i] = make_nv(R + 2, C); W = &nm[i].W; }
                else { wm[i] = make_w(dt, R + 2, C); W = &wm[i].W; }
                rs[i] = (st_span){rndi(3), R};
                int ncs = 1;
                if (rnd() & 1) cs[2 * i] = (st_span){0, C};
                else { cs[2 * i] = (st_span){0, 16 * (1 + rndi(C / 32))}; cs[2 * i + 1] = (st_span){C - 16, 16}; ncs = 2; }
                int K = 0;
                for (int c = 0; c < ncs; c++) K += cs[2 * i + c].len;
                x[i] = malloc(sizeof(float) * (size_t)T * K);
                for (int e = 0; e < T * K; e++) x[i][e] = rndf();
                if (share) {
                    ncs = jobs[i - 1].n_cs;
                    for (int c = 0; c < ncs; c++) cs[2 * i + c] = jobs[i - 1].cs[c];
                    K = jobs[i - 1].ldx;
                    shared[i] = 1;
                }
                const int acc = (int)(rnd() & 1);
                y[i] = malloc(sizeof(float) * (size_t)T * R);
                yr[i] = malloc(sizeof(float) * (size_t)T * R * 2); /* st_matmul's, then the reference's */
                for (int e = 0; e < T * R; e++) y[i][e] = yr[i][e] = yr[i][T * R + e] = rndf();
                jobs[i] = (st_mm_job){W, &rs[i], &cs[2 * i], 1, ncs, shared[i] ? jobs[i - 1].x : x[i], K, y[i], R, T, acc};
            }
            st_matmul_group(jobs, nj);
            for (int i = 0; i < nj; i++) {
                const st_mm_job *j = &jobs[i];
                st_matmul(j->W, j->rs, 1, j->cs, j->n_cs, j->x, j->ldx, yr[i], j->ldy, j->T, j->accumulate);
                if (memcmp(y[i], yr[i], sizeof(float) * (size_t)j->T * (size_t)j->ldy))
                    fail_msg("group job %d (%s, %d rows, T=%d) differs from st_matmul on %s", i,
                             st_dtype_name(j->W->dt), j->ldy, j->T, st_isa_name((st_isa)isa));
                /* and is right: against the scalar reference, within 1e-5 of Σ|w·x| + |y0| */
                float *yref = yr[i] + (size_t)j->T * j->ldy, wrow[16 * 42];
                st_matmul_ref(j->W, j->rs, 1, j->cs, j->n_cs, j->x, j->ldx, yref, j->ldy, j->T, j->accumulate);
                for (int r = 0; r < j->ldy; r++) {
                    int kk = 0;
                    for (int c = 0; c < j->n_cs; c++) {
                        st_mat_row_f32(j->W, j->rs->off + r, j->cs[c].off, j->cs[c].len, wrow + kk);
                        kk += j->cs[c].len;
                    }
                    for (int t = 0; t < j->T; t++) {
                        double b = 1.0;
                        for (int e = 0; e < kk; e++) b += fabs((double)wrow[e] * j->x[(size_t)t * j->ldx + e]);
                        const double q = j->W->dt == ST_DT_NVFP4 && j->T < st_matmul_gemm_min_t(0) && st_isa_vnni()
                                             ? q8_err(wrow, j->x + (size_t)t * j->ldx, j->cs, j->n_cs) : 0.0;
                        const float d = fabsf(y[i][(size_t)t * j->ldy + r] - yref[(size_t)t * j->ldy + r]);
                        if (!(d <= 1e-5 * b + q)) fail_msg("group job %d (%s) row %d token %d: off by %g", i, st_dtype_name(j->W->dt), r, t, d);
                    }
                }
                free(y[i]); free(yr[i]); free(wm[i].alloc); free(nm[i].alloc);
            }
            for (int i = 0; i < nj; i++) free(x[i]);
            free(wm); free(nm); free(jobs); free(rs); free(cs); free(x); free(y); free(yr); free(shared);
        }
    }
    st_isa_set(top);
    st_set_threads(0);
}

/* NaN codes propagate on every path (e4m3fn S.1111.111 has no finite value). */
static void test_matmul_nan_codes(void **state) {
    (void)state;
    const st_isa top = st_isa_detect();
    for (int isa = ST_ISA_SCALAR; isa <= (int)top; isa++) {
        st_isa_set((st_isa)isa);
        for (int gemm = 0; gemm <= 1; gemm++) {
            const int gmin = st_matmul_gemm_min_t(gemm ? 1 : 0);
            wmat m = make_w(ST_DT_F8_E4M3, 9, 70);
            unsigned char *p = (unsigned char *)m.W.data;
            p[2 * 70 + 40] = 0x7f;
            p[4 * 70 + 3] = 0xff;
            p[6 * 70 + 69] = 0xff; /* in a vector tail */
            st_span rs = {0, 9}, cs = {0, 70};
            float x[3 * 70], y[3 * 9];
            for (int i = 0; i < 3 * 70; i++) x[i] = rndf();
            st_matmul(&m.W, &rs, 1, &cs, 1, x, 70, y, 9, 3, 0);
            for (int t = 0; t < 3; t++)
                for (int j = 0; j < 9; j++)
                    assert_true((j == 2 || j == 4 || j == 6) ? isnan(y[t * 9 + j]) : isfinite(y[t * 9 + j]));
            free(m.alloc);
            st_matmul_gemm_min_t(gmin);
        }
    }
    st_isa_set(top);
}

static void *threads_of_new_thread(void *out) {
    *(int *)out = st_get_threads();
    return NULL;
}

static void test_isa_and_threads(void **state) {
    (void)state;
    const st_isa top = st_isa_detect();
    assert_true(st_isa_get() <= top);
    st_isa prev = st_isa_set(ST_ISA_SCALAR);
    assert_int_equal(st_isa_get(), ST_ISA_SCALAR);
    st_isa_set(ST_ISA_AVX512); /* never above what the machine has */
    assert_int_equal(st_isa_get(), top);
    st_isa_set(prev);
    const char *feat = st_cpu_features();
    assert_true(strlen(feat) > 0);
    if (top == ST_ISA_AVX512) assert_non_null(strstr(feat, "avx512f"));
    if (top >= ST_ISA_AVX2) assert_non_null(strstr(feat, "avx2"));
    assert_string_equal(st_isa_name(ST_ISA_AVX2), "avx2");

    st_set_threads(3);
    assert_int_equal(st_get_threads(), 3);
    /* a thread's own count shadows the default, for that thread only */
    assert_int_equal(st_set_local_threads(5), 0);
    assert_int_equal(st_get_threads(), 5);
    int other = 0;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, threads_of_new_thread, &other), 0);
    pthread_join(th, NULL);
    assert_int_equal(other, 3);
    assert_int_equal(st_set_local_threads(0), 5);
    assert_int_equal(st_get_threads(), 3);
    st_set_threads(0);
    assert_true(st_get_threads() >= 1);
}

static void test_membw(void **state) {
    (void)state;
    double bw = st_measure_read_bandwidth(1 << 20, 1);
    assert_true(bw > 0.0);
    /* the FMA peak exists wherever a vector FMA does, and is a plausible
     * figure: more than one lane at 0.1 GHz, less than 64 lanes x 2 units x
     * 2 flops at 10 GHz per core */
    double fma = st_measure_fma_gflops(1);
    if (st_isa_get() >= ST_ISA_AVX2) assert_true(fma > 0.2 && fma < 2560.0);
    else assert_true(fma == 0.0);
}

/* The decode path gives a token's row bit for bit the same value whatever
 * other tokens share the call (batched decoding must not change greedy
 * output): T = 1 against the same x as row 2 of T = 2..7, float dtypes,
 * every ISA, 1 and 2 threads; and NVFP4 on the int8 (VNNI) kernel. */
static void test_matmul_batch_invariant(void **state) {
    (void)state;
    const st_isa top = st_isa_detect();
    const st_dtype dts[4] = {ST_DT_BF16, ST_DT_F16, ST_DT_F32, ST_DT_F8_E4M3};
    for (int isa = ST_ISA_SCALAR; isa <= (int)top; isa++) {
        st_isa_set((st_isa)isa);
        for (int d = 0; d < 4; d++)
            for (int th = 1; th <= 2; th++) {
                st_set_threads(th);
                const int R = 611, C = 530; /* past the threading threshold */
                wmat m = make_w(dts[d], R, C);
                st_span rs = {0, R}, cs[2] = {{0, 250}, {262, 268}};
                float *x = malloc(sizeof(float) * 8 * C), *y1 = malloc(sizeof(float) * R), *yb = malloc(sizeof(float) * 8 * R);
                for (int i = 0; i < 8 * C; i++) x[i] = rndf();
                st_matmul(&m.W, &rs, 1, cs, 2, x + 2 * C, C, y1, R, 1, 0);
                for (int T = 3; T <= 7; T++) {
                    st_matmul(&m.W, &rs, 1, cs, 2, x, C, yb, R, T, 0);
                    if (memcmp(y1, yb + 2 * R, sizeof(float) * R))
                        fail_msg("%s isa=%s threads=%d: row of T=%d differs from T=1", st_dtype_name(dts[d]),
                                 st_isa_name((st_isa)isa), th, T);
                }
                g_checked++;
                free(x); free(y1); free(yb); free(m.alloc);
            }
    }
    st_isa_set(top);
    /* NVFP4 on the int8 kernel, the one NVFP4 decode that promises it */
    if (st_isa_vnni())
        for (int th = 1; th <= 2; th++) {
            st_set_threads(th);
            const int R = 611, C = 544;
            nvmat m = make_nv(R, C);
            st_span rs = {0, R}, cs[2] = {{0, 256}, {272, 272}};
            const int K = 528;
            float *x = malloc(sizeof(float) * 8 * K), *y1 = malloc(sizeof(float) * R), *yb = malloc(sizeof(float) * 8 * R);
            for (int i = 0; i < 8 * K; i++) x[i] = rndf();
            st_matmul(&m.W, &rs, 1, cs, 2, x + 2 * K, K, y1, R, 1, 0);
            for (int T = 3; T <= 8; T++) {
                st_matmul(&m.W, &rs, 1, cs, 2, x, K, yb, R, T, 0);
                if (memcmp(y1, yb + 2 * R, sizeof(float) * R))
                    fail_msg("NVFP4 (int8) threads=%d: row of T=%d differs from T=1", th, T);
            }
            g_checked++;
            free(x); free(y1); free(yb); free(m.alloc);
        }
    st_set_threads(0);
}

static double max_rel(const float *a, const float *ref, size_t n) {
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - ref[i]);
        if (isnan(e)) return INFINITY; /* NaN counts as a failure */
        if (e > d) d = e;
        if (fabs(ref[i]) > m) m = fabs(ref[i]);
    }
    return m > 0 ? d / m : d;
}

/* st_ssm_scan on every ISA against the reference: odd state / channel
 * counts (vector tails), several tokens (the state carries over), x/B/C
 * interleaved in one row per token as the forward pass lays them out. */
static void test_ssm_scan(void **state) {
    (void)state;
    const st_isa top = st_isa_detect();
    for (int isa = ST_ISA_SCALAR; isa <= (int)top; isa++) {
        st_isa_set((st_isa)isa);
        for (int c = 0; c < 40; c++) {
            const int P = 1 + rndi(70), N = c < 4 ? (int[]){16, 128, 64, 32}[c] : 1 + rndi(140), T = 1 + rndi(9);
            const int ld = P + 2 * N + rndi(5), ldy = P + rndi(3);
            float *in = malloc(sizeof(float) * (size_t)T * ld), *dt = malloc(sizeof(float) * (size_t)T * 2);
            float *S0 = malloc(sizeof(float) * (size_t)P * N), *S1 = malloc(sizeof(float) * (size_t)P * N);
            float *y0 = calloc((size_t)T * ldy, sizeof(float)), *y1 = calloc((size_t)T * ldy, sizeof(float));
            for (int i = 0; i < T * ld; i++) in[i] = rndf();
            for (int i = 0; i < 2 * T; i++) dt[i] = 0.05f + 0.5f * fabsf(rndf());
            for (int i = 0; i < P * N; i++) S0[i] = S1[i] = rndf();
            const float A = -0.1f - 2.0f * fabsf(rndf()), D = rndf();
            st_ssm_scan_ref(S0, P, N, in, in + P, in + P + N, ld, dt, 2, A, D, y0, ldy, T);
            st_ssm_scan(S1, P, N, in, in + P, in + P + N, ld, dt, 2, A, D, y1, ldy, T);
            const double ey = max_rel(y1, y0, (size_t)T * ldy), es = max_rel(S1, S0, (size_t)P * N);
            if (!(ey <= 1e-5 && es <= 1e-5))
                fail_msg("ssm scan %s P=%d N=%d T=%d: y err %.2e, state err %.2e", st_isa_name((st_isa)isa), P, N, T,
                         ey, es);
            g_checked++;
            free(in); free(dt); free(S0); free(S1); free(y0); free(y1);
        }
    }
    st_isa_set(top);
}

/* st_attn_head on every ISA against the reference: head dims around the
 * vector widths (and the real 64 / 128), 1..300 positions, padded rows. */
static void test_attn_head(void **state) {
    (void)state;
    const st_isa top = st_isa_detect();
    for (int isa = ST_ISA_SCALAR; isa <= (int)top; isa++) {
        st_isa_set((st_isa)isa);
        for (int c = 0; c < 40; c++) {
            const int hd = c < 3 ? (int[]){64, 128, 96}[c] : 1 + rndi(200), n = 1 + rndi(300);
            const int ld = hd + rndi(9);
            float *q = malloc(sizeof(float) * hd), *K = malloc(sizeof(float) * (size_t)n * ld);
            float *V = malloc(sizeof(float) * (size_t)n * ld), *sc = malloc(sizeof(float) * n);
            float *o0 = malloc(sizeof(float) * hd), *o1 = malloc(sizeof(float) * hd);
            for (int i = 0; i < hd; i++) q[i] = 2 * rndf();
            for (int i = 0; i < n * ld; i++) { K[i] = rndf(); V[i] = rndf(); }
            const float scale = 1.0f / sqrtf((float)hd);
            st_attn_head_ref(q, K, V, ld, n, hd, scale, sc, o0);
            st_attn_head(q, K, V, ld, n, hd, scale, sc, o1);
            /* o is a weighted mean of V rows: its error scales with |V| (the
             * terms summed in fp32), not with |o| (which can cancel to ~0) */
            double e = 0;
            for (int i = 0; i < hd; i++) e = fmax(e, fabs((double)o1[i] - o0[i]));
            if (!(e <= 1e-5)) fail_msg("attention %s hd=%d n=%d: err %.2e (|V| <= 1)", st_isa_name((st_isa)isa), hd, n, e);
            g_checked++;
            free(q); free(K); free(V); free(sc); free(o0); free(o1);
        }
    }
    st_isa_set(top);
}

/* ------------------------------------------------------------ row ops */

/* The row ops keep the inference pass's evaluation order on every ISA: the
 * fast path is compared with the double reference (within rounding) and,
 * bit for bit, with its own scalar level (what the shipped models' outputs
 * were computed with). */
static double max_abs(const float *a, const float *b, size_t n) {
    double d = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (isnan(e)) return INFINITY;
        if (e > d) d = e;
    }
    return d;
}

/* st_rmsnorm: widths around the vector sizes, the real 2688, in place too */
static void test_rmsnorm(void **state) {
    (void)state;
    const st_isa top = st_isa_detect();
    for (int c = 0; c < 60; c++) {
        const int n = c < 4 ? (int[]){2688, 256, 16, 1}[c] : 1 + rndi(300);
        float *x = malloc(sizeof(float) * n), *w = malloc(sizeof(float) * n);
        float *y0 = malloc(sizeof(float) * n), *y1 = malloc(sizeof(float) * n), *ys = malloc(sizeof(float) * n);
        const float amp = c % 3 == 0 ? 30.0f : 1.0f;
        for (int i = 0; i < n; i++) { x[i] = amp * rndf(); w[i] = 1.0f + 0.5f * rndf(); }
        const float r0 = st_rmsnorm_ref(y0, x, w, n, 1e-5f);
        float rs = 0;
        for (int isa = ST_ISA_SCALAR; isa <= (int)top; isa++) {
            st_isa_set((st_isa)isa);
            const float r1 = st_rmsnorm(y1, x, w, n, 1e-5f);
            if (isa == ST_ISA_SCALAR) { memcpy(ys, y1, sizeof(float) * n); rs = r1; }
            const double e = max_rel(y1, y0, (size_t)n);
            if (!(e <= 2e-6 && fabs(r1 - r0) <= 2e-6 * r0))
                fail_msg("rmsnorm %s n=%d: err %.2e, rstd %g vs %g", st_isa_name((st_isa)isa), n, e, r1, r0);
            if (memcmp(y1, ys, sizeof(float) * n) || r1 != rs)
                fail_msg("rmsnorm %s n=%d: not the scalar level's bits", st_isa_name((st_isa)isa), n);
            memcpy(y1, x, sizeof(float) * n); /* in place */
            st_rmsnorm(y1, y1, w, n, 1e-5f);
            if (memcmp(y1, ys, sizeof(float) * n)) fail_msg("rmsnorm %s n=%d: in place differs", st_isa_name((st_isa)isa), n);
            g_checked++;
        }
        free(x); free(w); free(y0); free(y1); free(ys);
    }
    st_isa_set(top);
}

/* st_gated_rmsnorm / st_rmsnorm_groups: 1..5 groups of odd sizes, the
 * masked form (a zero tail per group, the mean over the entries kept) */
static void test_gated_rmsnorm(void **state) {
    (void)state;
    const st_isa top = st_isa_detect();
    for (int c = 0; c < 60; c++) {
        const int G = 1 + rndi(5), gsz = c < 2 ? (int[]){512, 64}[c] : 1 + rndi(150), n = G * gsz;
        const int keep = c % 2 ? 1 + rndi(gsz) : gsz; /* entries that exist per group */
        float *y = malloc(sizeof(float) * n), *z = malloc(sizeof(float) * n), *w = malloc(sizeof(float) * n);
        float *v0 = malloc(sizeof(float) * n), *v1 = malloc(sizeof(float) * n), *vs = malloc(sizeof(float) * n);
        float r0[5], r1[5], rs[5];
        for (int i = 0; i < n; i++) {
            y[i] = i % gsz < keep ? 3 * rndf() : 0.0f;
            z[i] = 6 * rndf();
            w[i] = 1.0f + 0.5f * rndf();
        }
        st_gated_rmsnorm_ref(v0, y, z, G, gsz, keep, w, 1e-5f, r0);
        for (int isa = ST_ISA_SCALAR; isa <= (int)top; isa++) {
            st_isa_set((st_isa)isa);
            memcpy(v1, y, sizeof(float) * n); /* in place, as forward.c calls it */
            st_gated_rmsnorm(v1, v1, z, G, gsz, keep, w, 1e-5f, r1);
            if (isa == ST_ISA_SCALAR) { memcpy(vs, v1, sizeof(float) * n); memcpy(rs, r1, sizeof rs); }
            double er = 0;
            for (int g = 0; g < G; g++) er = fmax(er, fabs((double)r1[g] - r0[g]) / r0[g]);
            const double e = max_abs(v1, v0, (size_t)n);
            if (!(e <= 1e-5 && er <= 2e-6))
                fail_msg("gated rmsnorm %s G=%d gsz=%d keep=%d: err %.2e, rstd err %.2e", st_isa_name((st_isa)isa), G,
                         gsz, keep, e, er);
            if (memcmp(v1, vs, sizeof(float) * n) || memcmp(r1, rs, sizeof(float) * G))
                fail_msg("gated rmsnorm %s G=%d gsz=%d: not the scalar level's bits", st_isa_name((st_isa)isa), G, gsz);
            /* the norm alone against its reference */
            memcpy(v0, y, sizeof(float) * n);
            memcpy(v1, y, sizeof(float) * n);
            st_rmsnorm_groups_ref(v0, G, gsz, keep, w, 1e-5f, r0);
            st_rmsnorm_groups(v1, G, gsz, keep, w, 1e-5f, NULL);
            if (!(max_abs(v1, v0, (size_t)n) <= 1e-5))
                fail_msg("rmsnorm groups %s G=%d gsz=%d: err %.2e", st_isa_name((st_isa)isa), G, gsz,
                         max_abs(v1, v0, (size_t)n));
            st_gated_rmsnorm_ref(v0, y, z, G, gsz, keep, w, 1e-5f, r0);
            g_checked++;
        }
        free(y); free(z); free(w); free(v0); free(v1); free(vs);
    }
    st_isa_set(top);
}

/* relu² exactly (a product of floats rounds once either way), NaN and -0
 * included; silu·a and the clamped softplus within rounding */
static void test_activations(void **state) {
    (void)state;
    const st_isa top = st_isa_detect();
    for (int c = 0; c < 40; c++) {
        const int n = c < 2 ? (int[]){4096, 1}[c] : 1 + rndi(200);
        float *x = malloc(sizeof(float) * n), *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);
        float *y0 = malloc(sizeof(float) * n), *y1 = malloc(sizeof(float) * n);
        for (int i = 0; i < n; i++) { x[i] = 30 * rndf(); a[i] = 2 * rndf(); b[i] = rndf(); }
        if (n > 3) { x[0] = NAN; x[1] = -0.0f; x[2] = INFINITY; x[3] = -INFINITY; }
        for (int isa = ST_ISA_SCALAR; isa <= (int)top; isa++) {
            st_isa_set((st_isa)isa);
            st_relu2_ref(y0, x, (size_t)n);
            memcpy(y1, x, sizeof(float) * n);
            st_relu2(y1, y1, (size_t)n);
            if (memcmp(y0, y1, sizeof(float) * n)) fail_msg("relu2 %s n=%d: not the reference's bits", st_isa_name((st_isa)isa), n);
            if (n > 3) { x[0] = 1; x[2] = 2; x[3] = -2; }
            st_silu_mul_ref(y0, a, x, (size_t)n);
            st_silu_mul(y1, a, x, (size_t)n);
            if (!(max_rel(y1, y0, (size_t)n) <= 1e-6))
                fail_msg("silu %s n=%d: err %.2e", st_isa_name((st_isa)isa), n, max_rel(y1, y0, (size_t)n));
            const float lo = c % 2 ? 0.0f : 1e-3f, hi = c % 2 ? INFINITY : 5.0f;
            st_softplus_clamp_ref(y0, x, b, n, lo, hi);
            st_softplus_clamp(y1, x, b, n, lo, hi);
            double e = 0;
            for (int i = 0; i < n; i++) e = fmax(e, fabs((double)y1[i] - y0[i]) / fmax(1.0, fabs(y0[i])));
            if (!(e <= 1e-6)) fail_msg("softplus %s n=%d: err %.2e", st_isa_name((st_isa)isa), n, e);
            if (n > 3) { x[0] = NAN; x[2] = INFINITY; x[3] = -INFINITY; }
            g_checked++;
        }
        free(x); free(a); free(b); free(y0); free(y1);
    }
    st_isa_set(top);
}

/* st_conv_chunk against the reference for K = 1..7 taps, strided rows;
 * a chunk split anywhere, and token-by-token st_conv_step, give the whole
 * chunk's bits (prefill = chunked prefill = decode) */
static void test_conv(void **state) {
    (void)state;
    const st_isa top = st_isa_detect();
    for (int isa = ST_ISA_SCALAR; isa <= (int)top; isa++) {
        st_isa_set((st_isa)isa);
        for (int c = 0; c < 40; c++) {
            const int K = 1 + c % 7, T = 1 + rndi(40), ld = 1 + rndi(5);
            float w[8], h0[8], h1[8], h2[8], b = rndf();
            float *x = malloc(sizeof(float) * (size_t)T * ld), *y0 = calloc((size_t)T * ld, sizeof(float));
            float *y1 = calloc((size_t)T * ld, sizeof(float)), *p0 = calloc((size_t)T * ld, sizeof(float));
            float *p1 = calloc((size_t)T * ld, sizeof(float)), *y2 = calloc((size_t)T, sizeof(float));
            for (int k = 0; k < K; k++) w[k] = rndf();
            for (int k = 0; k < K - 1; k++) h0[k] = h1[k] = h2[k] = c % 3 ? 2 * rndf() : 0.0f;
            for (int i = 0; i < T * ld; i++) x[i] = 2 * rndf();
            st_conv_chunk_ref(h0, K, w, b, x, ld, T, y0, p0, ld);
            st_conv_chunk(h1, K, w, b, x, ld, T, y1, p1, ld);
            const double e = fmax(max_abs(y1, y0, (size_t)T * ld), max_abs(p1, p0, (size_t)T * ld));
            if (!(e <= 1e-5)) fail_msg("conv %s K=%d T=%d: err %.2e", st_isa_name((st_isa)isa), K, T, e);
            if (K > 1 && memcmp(h0, h1, sizeof(float) * (K - 1))) fail_msg("conv K=%d T=%d: history differs", K, T);
            for (int t0 = 0; t0 < T;) { /* random chunks, no pre */
                const int len = 1 + rndi(T - t0);
                st_conv_chunk(h2, K, w, b, x + (size_t)t0 * ld, ld, len, y2 + t0, NULL, 1);
                t0 += len;
            }
            for (int t = 0; t < T; t++)
                if (y2[t] != y1[(size_t)t * ld]) fail_msg("conv K=%d T=%d: chunked differs at %d", K, T, t);
            for (int k = 0; k < K - 1; k++) h2[k] = h0[k]; /* continue token by token from the same state */
            memcpy(h1, h0, sizeof h1);
            for (int t = 0; t < T; t++) {
                const float a = st_conv_step(h2, K, w, b, x[(size_t)t * ld]);
                st_conv_chunk(h1, K, w, b, x + (size_t)t * ld, ld, 1, y1, p1, 1);
                if (a != p1[0] || st_siluf(a) != y1[0]) fail_msg("conv K=%d: step differs from a 1-token chunk", K);
            }
            g_checked++;
            free(x); free(y0); free(y1); free(p0); free(p1); free(y2);
        }
    }
    st_isa_set(top);
}

/* st_moe_route against the sorting reference: the same experts in the same
 * order (ties to the lowest index: logits on a coarse grid make many), the
 * weights within rounding; with and without groups (keeping 1..n_group of
 * them) and renormalisation */
static void test_moe_route(void **state) {
    (void)state;
    const st_isa top = st_isa_detect();
    for (int isa = ST_ISA_SCALAR; isa <= (int)top; isa++) {
        st_isa_set((st_isa)isa);
        for (int c = 0; c < 300; c++) {
            const int ng = c % 4 == 3 ? 2 + rndi(3) : 1, per = 1 + rndi(20), E = ng * per, k = 1 + rndi(E < 8 ? E : 8);
            const st_route_cfg rc = {ng, 1 + rndi(ng), c % 2, 0.5f + 2 * fabsf(rndf())};
            float lg[100], bias[100], wt0[8], wt1[8];
            int32_t id0[8], id1[8];
            const int grid = c % 3 == 0; /* ties */
            for (int e = 0; e < E; e++) {
                lg[e] = grid ? (float)(rndi(4) - 2) * 0.5f : 4 * rndf();
                bias[e] = grid && c % 2 ? 0.0f : 0.1f * rndf();
            }
            if (c == 0) for (int e = 0; e < E; e++) { lg[e] = 0.25f; bias[e] = 0; }
            st_moe_route_ref(lg, bias, E, k, &rc, id0, wt0);
            st_moe_route(lg, bias, E, k, &rc, id1, wt1);
            for (int j = 0; j < k; j++) {
                if (id1[j] != id0[j])
                    fail_msg("route %s E=%d k=%d groups=%d: choice %d is expert %d, reference %d", st_isa_name((st_isa)isa),
                             E, k, ng, j, id1[j], id0[j]);
                if (!(fabsf(wt1[j] - wt0[j]) <= 2e-6f * fabsf(wt0[j])))
                    fail_msg("route E=%d k=%d: weight %d %g vs %g", E, k, j, wt1[j], wt0[j]);
                if (c == 0 && id1[j] != j) fail_msg("route: all tied, choice %d is expert %d", j, id1[j]);
            }
            g_checked++;
        }
    }
    st_isa_set(top);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtype_names),
        cmocka_unit_test(test_f16_all_codes),
        cmocka_unit_test(test_f16_rounding),
        cmocka_unit_test(test_bf16_roundtrip),
        cmocka_unit_test(test_e4m3_all_codes),
        cmocka_unit_test(test_e5m2_and_ints),
        cmocka_unit_test(test_convert_unaligned),
        cmocka_unit_test(test_matmul_f32),
        cmocka_unit_test(test_matmul_f16),
        cmocka_unit_test(test_matmul_bf16),
        cmocka_unit_test(test_matmul_e4m3),
        cmocka_unit_test(test_matmul_e5m2),
        cmocka_unit_test(test_matmul_big),
        cmocka_unit_test(test_matmul_degenerate),
        cmocka_unit_test(test_matmul_nan_codes),
        cmocka_unit_test(test_matmul_nvfp4),
        cmocka_unit_test(test_q8_block),
        cmocka_unit_test(test_matmul_nvfp4_q8),
        cmocka_unit_test(test_matmul_group),
        cmocka_unit_test(test_nvfp4),
        cmocka_unit_test(test_isa_and_threads),
        cmocka_unit_test(test_membw),
        cmocka_unit_test(test_matmul_batch_invariant),
        cmocka_unit_test(test_ssm_scan),
        cmocka_unit_test(test_attn_head),
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_gated_rmsnorm),
        cmocka_unit_test(test_activations),
        cmocka_unit_test(test_conv),
        cmocka_unit_test(test_moe_route),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    fprintf(stderr, "test_kernels: %d kernel cases checked (isa levels up to %s)\n", g_checked,
            st_isa_name(st_isa_detect()));
    return rc;
}

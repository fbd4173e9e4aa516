/*
 * test_quant.c — FP8 / NVFP4: encoder correctness against the decode tables,
 * quantize→dequantize error bounds, quantized checkpoints that load and run
 * close to BF16 at every budget, and nested quantization: slicing a quantized
 * elastic checkpoint copies the parent's codes and scales byte for byte and
 * computes exactly what the parent computes at that budget.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "elastic/quant.h"
#include "elastic/quantize.h"
#include "elastic/slice.h"
#include "io/safetensors.h"
#include "kernels/kernels.h"
#include "model/synth.h"
#include "starling.h"
#include "util_test.h"

static char *g_dir, g_bf16[600], g_fp8[600], g_nv[600], g_other[600];

static const int32_t g_tok[] = {10, 137, 150, 47, 258, 157, 189, 236, 187, 12, 270, 133, 17, 138, 184, 108,
                                34, 138, 141, 67, 182, 43, 77, 35, 41, 254, 88, 195, 170, 162, 83, 174};
#define NTOK ((int)(sizeof g_tok / sizeof g_tok[0]))

static int setup(void **st) {
    g_dir = test_tmpdir("quant");
    snprintf(g_bf16, sizeof g_bf16, "%s/bf16", g_dir);
    snprintf(g_fp8, sizeof g_fp8, "%s/fp8", g_dir);
    snprintf(g_nv, sizeof g_nv, "%s/nvfp4", g_dir);
    snprintf(g_other, sizeof g_other, "%s/other", g_dir);
    st_synth_opts o;
    st_synth_preset("default", &o);
    o.mamba_head_dim = 32; /* budgets keep 24 / 16 channels: one of them cuts an NVFP4 block */
    if (st_synth_write(g_bf16, &o)) return -1;
    o.seed += 1; /* the same architecture, unrelated weights: the scale of "far" */
    if (st_synth_write(g_other, &o)) return -1;
    o.seed -= 1;
    st_model *m;
    if (st_model_load(g_bf16, &m)) return -1;
    st_quant_opts q = {.precision = "fp8", .calib = g_tok, .n_calib = NTOK};
    st_quant_report r;
    if (st_quantize(m, g_fp8, &q, &r)) { fprintf(stderr, "%s\n", st_last_error()); return -1; }
    q.precision = "nvfp4";
    if (st_quantize(m, g_nv, &q, &r)) { fprintf(stderr, "%s\n", st_last_error()); return -1; }
    st_model_free(m);
    return 0;
}
static int teardown(void **st) { rm_rf(g_dir); free(g_dir); return 0; }

static void test_e4m3_encode(void **st) {
    for (int c = 0; c < 256; c++) {
        float v = st_e4m3_lut[c];
        if (isnan(v)) continue;
        uint8_t e = st_e4m3_encode(v);
        if (c == 0x80) assert_int_equal(e, 0x80); /* -0 keeps its sign */
        else assert_int_equal(e, c);
    }
    assert_int_equal(st_e4m3_encode(1000.0f), 0x7e);   /* saturates at 448 */
    assert_int_equal(st_e4m3_encode(-1000.0f), 0xfe);
    /* halfway between 1.0 (0x38) and 1.125 (0x39) rounds to the even code */
    assert_int_equal(st_e4m3_encode(1.0625f), 0x38);
    assert_int_equal(st_e4m3_encode(1.1875f), 0x3a);
    /* random values: the encoded value is the nearest representable one */
    uint64_t s = 7;
    for (int i = 0; i < 20000; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        float x = ((float)(s >> 40) / 16777216.0f - 0.5f) * 900.0f * powf(2.0f, -(float)((s >> 8) % 14));
        float d = st_e4m3_lut[st_e4m3_encode(x)], err = fabsf(d - x);
        for (int c = 0; c < 256; c++)
            if (!isnan(st_e4m3_lut[c]) && fabsf(x) <= 448) assert_true(err <= fabsf(st_e4m3_lut[c] - x) + 1e-9f);
    }
}

static void test_e2m1_encode(void **st) {
    const float ties[][2] = {{0.25f, 0}, {0.75f, 1}, {1.25f, 1}, {1.75f, 2}, {2.5f, 2}, {3.5f, 4}, {5.0f, 4}};
    for (int i = 0; i < 7; i++) assert_true(st_e2m1_value(st_e2m1_encode(ties[i][0])) == ties[i][1]);
    for (int c = 0; c < 16; c++) assert_true(st_e2m1_value(st_e2m1_encode(st_e2m1_value((uint8_t)c))) == st_e2m1_value((uint8_t)c));
    assert_true(st_e2m1_value(st_e2m1_encode(100.0f)) == 6.0f);
    assert_true(st_e2m1_value(st_e2m1_encode(-2.9f)) == -3.0f);
}

/* quantize → dequantize error bounds per format */
static void test_error_bounds(void **st) {
    enum { R = 7, C = 96 };
    float w[R * C], amax = 0;
    uint64_t s = 11;
    for (int i = 0; i < R * C; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        w[i] = ((float)(s >> 40) / 16777216.0f - 0.5f) * (i % 5 == 0 ? 3.0f : 0.2f);
        amax = fmaxf(amax, fabsf(w[i]));
    }
    /* FP8: relative error ≤ 2^-4 for normal values, absolute ≤ 2^-10·scale below */
    uint8_t q[R * C];
    float sc = st_fp8_scale(amax);
    st_fp8_quantize(w, R * C, sc, q);
    for (int i = 0; i < R * C; i++) {
        float d = st_e4m3_lut[q[i]] * sc;
        assert_true(fabsf(d - w[i]) <= fmaxf(fabsf(w[i]) / 16.0f, sc * 0x1p-10f) + 1e-7f);
    }
    /* NVFP4: within a block the step between E2M1 values is at most 2 of 6, so
       |error| ≤ amax_block/6 · (1 + e4m3 scale rounding) */
    uint8_t codes[C / 2], bs[C / 16];
    float g = st_nvfp4_global_scale(amax);
    st_mat W = {.dt = ST_DT_NVFP4, .data = codes, .rows = 1, .cols = C, .scale = g, .bscale = bs};
    for (int r = 0; r < R; r++) {
        st_nvfp4_quantize_row(w + r * C, C, g, codes, bs);
        float d[C];
        st_mat_row_f32(&W, 0, 0, C, d);
        for (int b = 0; b < C / 16; b++) {
            float ba = 0;
            for (int i = 0; i < 16; i++) ba = fmaxf(ba, fabsf(w[r * C + b * 16 + i]));
            for (int i = 0; i < 16; i++) assert_true(fabsf(d[b * 16 + i] - w[r * C + b * 16 + i]) <= ba / 6.0f * 1.07f + 1e-6f);
        }
    }
}

static float *logits_at(const char *dir, const char *budget) {
    st_model *m;
    st_budget *b;
    if (st_model_load(dir, &m)) fail_msg("%s: %s", dir, st_last_error());
    if (st_budget_resolve(m, budget, &b)) fail_msg("%s: %s", budget, st_last_error());
    const int V = st_model_config(m)->vocab_size;
    float *out = malloc(sizeof(float) * (size_t)NTOK * V);
    st_state *s;
    assert_int_equal(st_state_new(m, 0, &s), ST_OK);
    if (st_forward(b, s, g_tok, NTOK, out, 1)) fail_msg("forward: %s", st_last_error());
    st_state_free(s);
    st_budget_free(b);
    st_model_free(m);
    return out;
}

/* mean KL(p_ref || p_q) over positions and top-1 agreement */
static void compare(const float *ref, const float *q, int V, double *kl, double *top1) {
    double k = 0;
    int agree = 0;
    for (int t = 0; t < NTOK; t++) {
        const float *a = ref + (size_t)t * V, *b = q + (size_t)t * V;
        double ma = a[0], mb = b[0], sa = 0, sb = 0;
        int ia = 0, ib = 0;
        for (int i = 1; i < V; i++) { if (a[i] > ma) { ma = a[i]; ia = i; } if (b[i] > mb) { mb = b[i]; ib = i; } }
        for (int i = 0; i < V; i++) { sa += exp(a[i] - ma); sb += exp(b[i] - mb); }
        for (int i = 0; i < V; i++) {
            double pa = exp(a[i] - ma) / sa, lpa = a[i] - ma - log(sa), lpb = b[i] - mb - log(sb);
            k += pa * (lpa - lpb);
        }
        agree += ia == ib;
    }
    *kl = k / NTOK;
    *top1 = (double)agree / NTOK;
}

static void test_quantized_runs_close(void **st) {
    const char *budgets[] = {"full", "M", "S"};
    for (int i = 0; i < 3; i++) {
        float *ref = logits_at(g_bf16, budgets[i]), *a = logits_at(g_fp8, budgets[i]), *b = logits_at(g_nv, budgets[i]);
        double kl8, t8, kl4, t4;
        compare(ref, a, 272, &kl8, &t8);
        compare(ref, b, 272, &kl4, &t4);
        printf("  budget %-4s fp8: KL %.2e top-1 %.2f   nvfp4: KL %.2e top-1 %.2f\n", budgets[i], kl8, t8, kl4, t4);
        /* A random-weight model has flat logits, so small weight errors move the
           argmax easily: the bounds are loose, but the quantized models must
           stay far closer than a model with unrelated weights, FP8 < NVFP4. */
        float *u = logits_at(g_other, budgets[i]);
        double klu, tu;
        compare(ref, u, 272, &klu, &tu);
        printf("  budget %-4s unrelated weights: KL %.2e top-1 %.2f\n", budgets[i], klu, tu);
        assert_true(kl8 > 0 && kl8 < 0.05 && t8 >= 0.6);
        assert_true(kl4 > kl8 && kl4 < 0.5 && t4 >= 0.2);
        assert_true(kl4 * 5 < klu && t4 > tu);
        free(ref); free(a); free(b); free(u);
    }
}

/* Bytes of tensor `name` in checkpoint dir, row r, columns [c0, c0+n) of a
 * [rows][cols] byte matrix. */
static void tensor_bytes(const char *dir, const char *name, const uint8_t **data, int64_t *cols) {
    char p[700];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    static st_sf_file *f[2];
    static int k;
    st_sf_file *sf;
    assert_int_equal(st_sf_open(p, &sf), ST_OK);
    if (f[k]) st_sf_close(f[k]);
    f[k] = sf;
    k ^= 1;
    for (int i = 0; i < sf->n_tensors; i++)
        if (!strcmp(sf->tensors[i].name, name)) { *data = sf->tensors[i].data; *cols = sf->tensors[i].shape[1]; return; }
    fail_msg("%s: no %s", dir, name);
}

/* A view and its slice compute the same logits: same weights, only the
 * summation order may differ (≤ 1e-6 of the largest logit), on the exact
 * kernels. Where the CPU has the int8 NVFP4 decode kernel, it runs again on
 * that kernel: x rounded to two int8 digits per element is a step function of
 * x, so the last digit of an activation can flip on a rounding-level
 * difference upstream (one step is 2^-15 of its 16-block's largest |x|);
 * allowed: 1e-4, about three such steps carried to the logits (measured:
 * 3.4e-5 and 4.2e-5 on the Emerald Rapids host). */
static void same_logits(const char *dir_a, const char *budget_a, const char *dir_b, const char *budget_b) {
    const int prev = st_isa_vnni_set(0);
    float *a = logits_at(dir_a, budget_a), *b = logits_at(dir_b, budget_b);
    const double exact = rel_err(b, a, (size_t)NTOK * 272);
    free(a); free(b);
    st_isa_vnni_set(prev);
    if (!(exact <= 1e-6)) fail_msg("%s at %s vs %s at %s: rel err %g (exact kernels)", dir_a, budget_a, dir_b, budget_b, exact);
    if (st_isa_vnni()) {
        a = logits_at(dir_a, budget_a);
        b = logits_at(dir_b, budget_b);
        const double q8 = rel_err(b, a, (size_t)NTOK * 272);
        free(a); free(b);
        if (!(q8 <= 1e-4)) fail_msg("%s at %s vs %s at %s: rel err %g (int8 NVFP4 decode)", dir_a, budget_a, dir_b, budget_b, q8);
    }
}

/* Nested quantization: slice(nvfp4 parent, S) copies codes and block scales
 * and computes exactly what the parent computes at S. */
static void test_nested_slice(void **st) {
    st_model *m;
    st_budget *b;
    assert_int_equal(st_model_load(g_nv, &m), ST_OK);
    assert_int_equal(st_budget_resolve(m, "S", &b), ST_OK);
    char dst[700];
    snprintf(dst, sizeof dst, "%s/nv-S", g_dir);
    st_slice_opts o = {0};
    if (st_slice(m, b, dst, &o)) fail_msg("slice: %s", st_last_error());
    /* layer 4 is the dense MLP: up_proj rows [0, ffn_S), columns [0, hidden_S) */
    const st_widths *w = st_budget_widths(b);
    const uint8_t *pc, *sc, *ps, *ss;
    int64_t pcols, scols, pscols, sscols;
    tensor_bytes(g_nv, "backbone.layers.4.mixer.up_proj.weight", &pc, &pcols);
    tensor_bytes(dst, "backbone.layers.4.mixer.up_proj.weight", &sc, &scols);
    assert_int_equal(scols, w->hidden_size / 2);
    for (int r = 0; r < w->intermediate_size; r++) assert_memory_equal(pc + r * pcols, sc + r * scols, (size_t)scols);
    tensor_bytes(g_nv, "backbone.layers.4.mixer.up_proj.weight_scale", &ps, &pscols);
    tensor_bytes(dst, "backbone.layers.4.mixer.up_proj.weight_scale", &ss, &sscols);
    assert_int_equal(sscols, w->hidden_size / 16);
    for (int r = 0; r < w->intermediate_size; r++) assert_memory_equal(ps + r * pscols, ss + r * sscols, (size_t)sscols);
    /* same logits */
    same_logits(g_nv, "S", dst, "full");
    /* a budget that cuts inside a block is refused with the rule */
    st_budget *bad;
    assert_int_equal(st_budget_resolve(m, "hidden_size=120", &bad), ST_OK);
    snprintf(dst, sizeof dst, "%s/nv-bad", g_dir);
    assert_int_equal(st_slice(m, bad, dst, &o), ST_ERR_BUDGET);
    assert_non_null(strstr(st_last_error(), "16-wide block"));
    st_budget_free(bad);
    st_budget_free(b);
    st_model_free(m);
}

/* --quantize-lm-head: lm_head is stored NVFP4 too (codes + block scales),
 * runs close to BF16, reads fewer bytes, and still slices byte for byte. */
static void test_lm_head(void **st) {
    char dst[700], sl[700];
    snprintf(dst, sizeof dst, "%s/nv-lm", g_dir);
    st_model *m;
    assert_int_equal(st_model_load(g_bf16, &m), ST_OK);
    st_quant_opts q = {.precision = "nvfp4", .quantize_lm_head = 1, .calib = g_tok, .n_calib = NTOK};
    st_quant_report r;
    if (st_quantize(m, dst, &q, &r)) fail_msg("quantize: %s", st_last_error());
    st_model_free(m);
    const uint8_t *c, *sc;
    int64_t cols, scols;
    tensor_bytes(dst, "lm_head.weight", &c, &cols);
    assert_int_equal(cols, 128 / 2); /* hidden 128: packed nibbles */
    tensor_bytes(dst, "lm_head.weight_scale", &sc, &scols);
    assert_int_equal(scols, 128 / 16);
    float *ref = logits_at(g_bf16, "full"), *a = logits_at(dst, "full");
    double kl, top;
    compare(ref, a, 272, &kl, &top);
    printf("  nvfp4 with lm_head: KL %.2e top-1 %.2f\n", kl, top);
    assert_true(kl > 0 && kl < 0.5 && top >= 0.2);
    st_model *mq, *mp;
    st_budget *bq, *bp;
    st_budget_stats sq, sp;
    assert_int_equal(st_model_load(dst, &mq), ST_OK);
    assert_int_equal(st_model_load(g_nv, &mp), ST_OK);
    assert_int_equal(st_budget_resolve(mq, "full", &bq), ST_OK);
    assert_int_equal(st_budget_resolve(mp, "full", &bp), ST_OK);
    st_budget_stats_get(bq, &sq);
    st_budget_stats_get(bp, &sp);
    assert_true(sq.active_bytes < sp.active_bytes);
    st_budget_free(bq);
    st_budget_free(bp);
    st_model_free(mp);
    /* slicing copies the lm_head's codes of the kept columns */
    assert_int_equal(st_budget_resolve(mq, "S", &bq), ST_OK);
    snprintf(sl, sizeof sl, "%s/nv-lm-S", g_dir);
    st_slice_opts o = {0};
    if (st_slice(mq, bq, sl, &o)) fail_msg("slice: %s", st_last_error());
    const int hs = st_budget_widths(bq)->hidden_size;
    tensor_bytes(dst, "lm_head.weight", &c, &cols);
    const uint8_t *d;
    int64_t dcols;
    tensor_bytes(sl, "lm_head.weight", &d, &dcols);
    assert_int_equal(dcols, hs / 2);
    for (int row = 0; row < 272; row++) assert_memory_equal(c + row * cols, d + row * dcols, (size_t)dcols);
    same_logits(dst, "S", sl, "full");
    free(ref); free(a);
    st_budget_free(bq);
    st_model_free(mq);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_e4m3_encode), cmocka_unit_test(test_e2m1_encode), cmocka_unit_test(test_error_bounds),
        cmocka_unit_test(test_quantized_runs_close), cmocka_unit_test(test_nested_slice), cmocka_unit_test(test_lm_head),
    };
    return cmocka_run_group_tests_name("quant", tests, setup, teardown);
}

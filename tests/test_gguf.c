/*
 * test_gguf.c — GGUF export (`starling slice --format gguf`).
 *
 *  - the container: written keys, arrays, tensors of every type read back;
 *    q8_0 blocks against a direct computation of llama.cpp's block format
 *  - the Nemotron-H mapping on the default model (dense '-' layer inside an
 *    MoE model) and a golden model: per-layer arrays, A = -exp(A_log), the
 *    squeezed conv, the dense layer as zero experts + the MLP as the shared
 *    expert, zero-padded shared experts
 *  - llama.cpp itself (prebuilt, through node-llama-cpp in build/llamacpp-node,
 *    installed by `make llamacpp-node`): each F32 export loads, its greedy
 *    continuation equals starling's greedy continuation at that budget of the
 *    parent, and its tokenization of a mixed text equals ours. Skipped with a
 *    message only when node-llama-cpp is not installed (npm unreachable).
 */
#include "util_test.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "starling.h"
#include "util/util.h"

#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#define LLAMACPP_DIR "build/llamacpp-node"
static const char MIXED[] = "Hello, World! It's 2026: naïve café, ÉCOLE and straße cost $47.38 (x2)...\n\n"
                            "\tdef f(x):\n        return x**2  # 東京 😀\r\nWhat is 47 + 38?";

static void test_container(void **st) {
    (void)st;
    char *dir = test_tmpdir("gguf_container"), path[512];
    snprintf(path, sizeof path, "%s/t.gguf", dir);
    st_gguf_w *w;
    assert_int_equal(st_gguf_w_new(&w), ST_OK);
    const int32_t arr[3] = {4, 0, -2};
    const char *strs[2] = {"a b", "ĠHello"};
    assert_int_equal(st_gguf_kv_str(w, "general.architecture", "nemotron_h"), ST_OK);
    assert_int_equal(st_gguf_kv_u32(w, "x.u", 7), ST_OK);
    assert_int_equal(st_gguf_kv_f32(w, "x.f", 1e-5f), ST_OK);
    assert_int_equal(st_gguf_kv_bool(w, "x.b", 1), ST_OK);
    assert_int_equal(st_gguf_kv_i32s(w, "x.arr", arr, 3), ST_OK);
    assert_int_equal(st_gguf_kv_strs(w, "x.strs", strs, 2), ST_OK);
    float v[64 * 3];
    for (int i = 0; i < 64 * 3; i++) v[i] = sinf(0.37f * (float)i) * (i % 7 == 0 ? 40.0f : 1.0f);
    const int types[4] = {ST_GGML_F32, ST_GGML_F16, ST_GGML_BF16, ST_GGML_Q8_0};
    const char *names[4] = {"a.f32", "b.f16", "c.bf16", "d.q8"};
    for (int k = 0; k < 4; k++) assert_int_equal(st_gguf_tensor(w, names[k], types[k], 2, (int64_t[]){64, 3}), ST_OK);
    assert_int_equal(st_gguf_tensor(w, "bad", ST_GGML_Q8_0, 1, (int64_t[]){24}), ST_ERR_ARG); /* rows of 32 */
    assert_int_equal(st_gguf_w_begin(w, path), ST_OK);
    uint8_t buf[64 * 3 * 4];
    /* f32 */
    assert_int_equal(st_gguf_w_write(w, v, sizeof v), ST_OK);
    for (int k = 1; k < 3; k++) {
        for (int i = 0; i < 64 * 3; i++) {
            uint16_t h = k == 1 ? st_f32_to_f16(v[i]) : st_f32_to_bf16(v[i]);
            memcpy(buf + 2 * i, &h, 2);
        }
        assert_int_equal(st_gguf_w_write(w, buf, 64 * 3 * 2), ST_OK);
    }
    /* q8_0 written by hand (the format, not the exporter's encoder) */
    for (int b = 0; b < 6; b++) {
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(v[32 * b + i]));
        uint16_t d = st_f32_to_f16(amax / 127);
        memcpy(buf + 34 * b, &d, 2);
        for (int i = 0; i < 32; i++) buf[34 * b + 2 + i] = (uint8_t)(int8_t)lrintf(v[32 * b + i] * 127 / amax);
    }
    assert_int_equal(st_gguf_w_write(w, buf, 6 * 34), ST_OK);
    assert_int_equal(st_gguf_w_finish(w), ST_OK);
    st_gguf_w_free(w);
    assert_int_not_equal(access(path, F_OK), -1);

    st_gguf *g;
    assert_int_equal(st_gguf_open(path, &g), ST_OK);
    char *s = st_gguf_str(g, "general.architecture");
    assert_string_equal(s, "nemotron_h");
    free(s);
    assert_int_equal(st_gguf_int(g, "x.u", -1), 7);
    assert_int_equal(st_gguf_int(g, "x.b", -1), 1);
    const st_gguf_kv *a = st_gguf_find(g, "x.arr");
    assert_non_null(a);
    assert_int_equal(a->n, 3);
    assert_int_equal(st_gguf_arr_int(a, 2), -2);
    s = st_gguf_arr_str(st_gguf_find(g, "x.strs"), 1);
    assert_string_equal(s, "ĠHello");
    free(s);
    float f;
    memcpy(&f, st_gguf_find(g, "x.f")->val, 4);
    assert_true(f == 1e-5f);
    assert_int_equal(g->n_t, 4);
    for (int k = 0; k < 4; k++) {
        const st_gguf_tensor_info *t = st_gguf_find_tensor(g, names[k]);
        assert_non_null(t);
        assert_int_equal(t->offset % ST_GGUF_ALIGN, 0);
        assert_int_equal((uintptr_t)(t->data - (const uint8_t *)g->map) % ST_GGUF_ALIGN, 0);
        float *x;
        assert_int_equal(st_gguf_tensor_f32(t, &x), ST_OK);
        const float tol[3] = {0, 1e-3f, 8e-3f}; /* relative: exact, f16, bf16 rounding */
        for (int i = 0; i < 64 * 3; i++) {
            if (k < 3) { assert_true(fabsf(x[i] - v[i]) <= tol[k] * fabsf(v[i])); continue; }
            float amax = 0; /* q8_0: half a step of the block + the f16 scale's rounding */
            for (int j = i / 32 * 32; j < i / 32 * 32 + 32; j++) amax = fmaxf(amax, fabsf(v[j]));
            assert_true(fabsf(x[i] - v[i]) <= amax / 127 * 0.5f + amax / 2048);
        }
        free(x);
    }
    st_gguf_close(g);
    /* damaged files are refused with one error line, never read past their end:
       cut short, empty, a tensor count larger than the file could hold */
    char cmd[1200], bad[600];
    int status;
    const char *damage[] = {"head -c 200 %s > %s", ": < %s > %s",
                            "{ printf 'GGUF\\003\\000\\000\\000\\377\\377\\377\\377\\377\\377\\377\\017'; "
                            "tail -c +17 %s; } > %s"};
    for (int k = 0; k < 3; k++) {
        snprintf(bad, sizeof bad, "%s/bad%d.gguf", dir, k);
        snprintf(cmd, sizeof cmd, damage[k], path, bad);
        free(run_capture(cmd, &status));
        assert_int_equal(status, 0);
        assert_int_not_equal(st_gguf_open(bad, &g), ST_OK);
        snprintf(cmd, sizeof cmd, "%s info -m %s 2>&1", starling_bin(), bad);
        char *o = run_capture(cmd, &status);
        assert_int_equal(status, 1);
        assert_non_null(strstr(o, "starling info:"));
        assert_int_equal(strchr(o, '\n') - o + 1, (long)strlen(o)); /* one line */
        free(o);
    }
    rm_rf(dir);
    free(dir);
}

/* Export SRC at SPEC to OUT (CLI), returning the exit status. */
static int export(const char *src, const char *spec, const char *prec, const char *out) {
    char cmd[3000];
    snprintf(cmd, sizeof cmd, "%s slice -s %s -t %s --budget '%s' --format gguf --precision %s --force -q 2>&1",
             starling_bin(), src, out, spec, prec);
    int status;
    char *o = run_capture(cmd, &status);
    if (status) fprintf(stderr, "%s\n%s\n", cmd, o ? o : "");
    free(o);
    return status;
}

static float *tensor(const st_gguf *g, const char *name, int64_t numel) {
    const st_gguf_tensor_info *t = st_gguf_find_tensor(g, name);
    if (!t) fprintf(stderr, "missing %s\n", name);
    assert_non_null(t);
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->ne[d];
    assert_int_equal(n, numel);
    float *x;
    assert_int_equal(st_gguf_tensor_f32(t, &x), ST_OK);
    return x;
}

static float *sf_tensor(const st_model *m, const char *name, int64_t *numel);

/* The default model: M*EM*E-E, 8 experts, shared 512 (384 at 4M), dense MLP 1024 (768). */
static void test_layout_default(void **st) {
    (void)st;
    char *dir = test_tmpdir("gguf_layout"), out[512], hf[512], cmd[2000];
    snprintf(out, sizeof out, "%s/4M.gguf", dir);
    snprintf(hf, sizeof hf, "%s/4M", dir);
    assert_int_equal(export("models/elastic", "4M", "f32", out), 0);
    snprintf(cmd, sizeof cmd, "%s slice -s models/elastic -t %s --size 4M -q 2>&1", starling_bin(), hf);
    int status;
    free(run_capture(cmd, &status));
    assert_int_equal(status, 0);
    st_model *m;
    assert_int_equal(st_model_load(hf, &m), ST_OK);
    const st_config *c = st_model_config(m);
    st_gguf *g;
    assert_int_equal(st_gguf_open(out, &g), ST_OK);
    char *arch = st_gguf_str(g, "general.architecture");
    assert_string_equal(arch, "nemotron_h_moe");
    free(arch);
    const int H = c->hidden_size, L = c->n_layers, I = c->intermediate_size, SH = c->moe_shared_expert_intermediate_size;
    assert_int_equal(st_gguf_int(g, "nemotron_h_moe.embedding_length", 0), H);
    assert_int_equal(st_gguf_int(g, "nemotron_h_moe.expert_count", 0), c->n_routed_experts);
    assert_int_equal(st_gguf_int(g, "nemotron_h_moe.expert_used_count", 0), c->num_experts_per_tok);
    assert_non_null(st_gguf_find(g, "nemotron_h_moe.attention.layer_norm_epsilon"));
    assert_non_null(st_gguf_find(g, "nemotron_h_moe.attention.layer_norm_rms_epsilon"));
    int shw = I > SH ? I : SH;
    assert_int_equal(st_gguf_int(g, "nemotron_h_moe.expert_shared_feed_forward_length", 0), shw);
    const st_gguf_kv *kv = st_gguf_find(g, "nemotron_h_moe.attention.head_count_kv"),
                     *ff = st_gguf_find(g, "nemotron_h_moe.feed_forward_length");
    assert_non_null(kv); assert_non_null(ff);
    assert_int_equal(kv->n, L); assert_int_equal(ff->n, L);
    int dense_l = -1;
    for (int l = 0; l < L; l++) {
        char t = c->pattern[l];
        assert_int_equal(st_gguf_arr_int(kv, l), t == '*' ? c->num_key_value_heads : 0);
        assert_true((st_gguf_arr_int(ff, l) != 0) == (t == 'E' || t == '-')); /* llama.cpp's layer-kind rule */
        if (t == '-') dense_l = l;
        char n[128], s[128];
        if (t == 'M') { /* A = -exp(A_log); conv squeezed to {K, conv_dim} */
            int64_t na, nc;
            snprintf(s, sizeof s, "backbone.layers.%d.mixer.A_log", l);
            float *alog = sf_tensor(m, s, &na);
            snprintf(n, sizeof n, "blk.%d.ssm_a", l);
            float *A = tensor(g, n, na);
            for (int i = 0; i < na; i++) assert_true(fabsf(A[i] + expf(alog[i])) <= 1e-6f * expf(alog[i]));
            snprintf(s, sizeof s, "backbone.layers.%d.mixer.conv1d.weight", l);
            float *cw = sf_tensor(m, s, &nc);
            snprintf(n, sizeof n, "blk.%d.ssm_conv1d.weight", l);
            assert_int_equal(st_gguf_find_tensor(g, n)->ne[0], c->conv_kernel);
            assert_int_equal(st_gguf_find_tensor(g, n)->ndim, 2);
            float *gc = tensor(g, n, nc);
            assert_memory_equal(gc, cw, sizeof *cw * (size_t)nc);
            snprintf(n, sizeof n, "blk.%d.ssm_norm.weight", l);
            assert_int_equal(st_gguf_find_tensor(g, n)->ne[1], c->n_groups);
            free(alog); free(A); free(cw); free(gc);
        }
    }
    assert_true(dense_l >= 0);
    /* the dense layer: routed experts and router all zero, the MLP as the shared expert, padded */
    char n[128], s[128];
    const int E = c->n_routed_experts, FE = c->moe_intermediate_size;
    snprintf(n, sizeof n, "blk.%d.ffn_up_exps.weight", dense_l);
    float *ue = tensor(g, n, (int64_t)H * FE * E);
    for (int64_t i = 0; i < (int64_t)H * FE * E; i++) assert_true(ue[i] == 0);
    free(ue);
    int64_t nu, nd;
    snprintf(s, sizeof s, "backbone.layers.%d.mixer.up_proj.weight", dense_l);
    float *up = sf_tensor(m, s, &nu);
    snprintf(s, sizeof s, "backbone.layers.%d.mixer.down_proj.weight", dense_l);
    float *down = sf_tensor(m, s, &nd);
    snprintf(n, sizeof n, "blk.%d.ffn_up_shexp.weight", dense_l);
    float *gu = tensor(g, n, (int64_t)H * shw);
    snprintf(n, sizeof n, "blk.%d.ffn_down_shexp.weight", dense_l);
    float *gd = tensor(g, n, (int64_t)H * shw);
    for (int r = 0; r < shw; r++)
        for (int k = 0; k < H; k++) assert_true(gu[r * H + k] == (r < I ? up[r * H + k] : 0.0f));
    for (int r = 0; r < H; r++)
        for (int k = 0; k < shw; k++) assert_true(gd[r * shw + k] == (k < I ? down[r * I + k] : 0.0f));
    free(up); free(down); free(gu); free(gd);
    /* an MoE layer's shared expert, zero-padded to the common width; experts stacked in order */
    int moe_l = (int)(strchr(c->pattern, 'E') - c->pattern);
    snprintf(s, sizeof s, "backbone.layers.%d.mixer.shared_experts.down_proj.weight", moe_l);
    down = sf_tensor(m, s, &nd);
    snprintf(n, sizeof n, "blk.%d.ffn_down_shexp.weight", moe_l);
    gd = tensor(g, n, (int64_t)H * shw);
    for (int r = 0; r < H; r++)
        for (int k = 0; k < shw; k++) assert_true(gd[r * shw + k] == (k < SH ? down[r * SH + k] : 0.0f));
    free(down); free(gd);
    snprintf(s, sizeof s, "backbone.layers.%d.mixer.experts.%d.down_proj.weight", moe_l, E - 1);
    down = sf_tensor(m, s, &nd);
    snprintf(n, sizeof n, "blk.%d.ffn_down_exps.weight", moe_l);
    gd = tensor(g, n, (int64_t)H * FE * E);
    assert_memory_equal(gd + (int64_t)(E - 1) * H * FE, down, sizeof *down * (size_t)nd);
    free(down); free(gd);
    /* tokenizer: the vocabulary padded to the embedding rows, our pre-tokenizer, BOS/EOS */
    const st_gguf_kv *toks = st_gguf_find(g, "tokenizer.ggml.tokens");
    assert_non_null(toks);
    assert_int_equal(toks->n, c->vocab_size);
    char *pre = st_gguf_str(g, "tokenizer.ggml.pre");
    assert_string_equal(pre, "tekken");
    free(pre);
    assert_int_equal(st_gguf_int(g, "tokenizer.ggml.bos_token_id", -1), c->bos_token_id);
    assert_int_equal(st_gguf_int(g, "tokenizer.ggml.eos_token_id", -1), c->eos_token_ids[0]);
    assert_int_equal(st_gguf_int(g, "tokenizer.ggml.add_bos_token", -1), 0); /* tokenizer_config.json */
    st_gguf_close(g);
    /* q8_0 of the same budget: matrices in blocks, norms and router in f32; close to the f32 file */
    snprintf(out, sizeof out, "%s/4M-q8.gguf", dir);
    assert_int_equal(export("models/elastic", "4M", "q8_0", out), 0);
    assert_int_equal(st_gguf_open(out, &g), ST_OK);
    /* ssm_out: its rows are the Mamba channels (256, whole blocks of 32 at every budget;
       a matrix whose rows are not whole blocks, like ssm_in at hidden 144, stays f16) */
    assert_int_equal(st_gguf_find_tensor(g, "blk.0.ssm_out.weight")->type, ST_GGML_Q8_0);
    assert_int_equal(st_gguf_find_tensor(g, "blk.0.attn_norm.weight")->type, ST_GGML_F32);
    snprintf(n, sizeof n, "blk.%d.ffn_gate_inp.weight", moe_l);
    assert_int_equal(st_gguf_find_tensor(g, n)->type, ST_GGML_F32);
    int64_t ne;
    float *ref = sf_tensor(m, "backbone.layers.0.mixer.out_proj.weight", &ne), *q = tensor(g, "blk.0.ssm_out.weight", ne);
    for (int64_t b = 0; b < ne / 32; b++) {
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(ref[32 * b + i]));
        /* half a step, plus the scale's own f16 rounding (2^-11 relative) over up to 127 steps */
        for (int i = 0; i < 32; i++) assert_true(fabsf(q[32 * b + i] - ref[32 * b + i]) <= amax / 127 * 0.5f + amax / 2048 + 1e-7f);
    }
    free(ref); free(q);
    st_gguf_close(g);
    st_model_free(m);
    /* refusals: a bad precision, an existing target without --force */
    snprintf(cmd, sizeof cmd, "%s slice -s models/elastic -t %s --size 4M --format gguf --precision fp8 2>&1", starling_bin(), out);
    char *o = run_capture(cmd, &status);
    assert_int_not_equal(status, 0);
    assert_non_null(strstr(o, "precision"));
    free(o);
    snprintf(cmd, sizeof cmd, "%s slice -s models/elastic -t %s --size 4M --format gguf 2>&1", starling_bin(), out);
    o = run_capture(cmd, &status);
    assert_int_not_equal(status, 0);
    assert_non_null(strstr(o, "exists"));
    free(o);
    rm_rf(dir);
    free(dir);
}

static float *sf_tensor(const st_model *m, const char *name, int64_t *numel) {
    /* through the public loader's mmap: the sliced checkpoint, as floats */
    extern const st_sf_tensor *st_model_tensor(const st_model *, const char *);
    const st_sf_tensor *t = st_model_tensor(m, name);
    if (!t) fprintf(stderr, "missing %s\n", name);
    assert_non_null(t);
    *numel = st_sf_numel(t);
    float *x = malloc(sizeof *x * (size_t)*numel);
    assert_non_null(x);
    st_convert_to_f32(t->dt, t->data, x, *numel, 1);
    return x;
}

/* ------------------------------------------------------------- llama.cpp */

typedef struct { const char *model, *spec; } mcase;

/* starling at spec (on the parent, no slicing): the logits after the last
 * LAST prompt tokens (*plog, [LAST × V], malloc'd) and the greedy continuation. */
#define LAST 4
static void greedy(const char *dir, const char *spec, const int32_t *prompt, int np, int n, int32_t *out, float **plog,
                   int *pV) {
    st_model *m;
    st_budget *b;
    st_state *s;
    assert_int_equal(st_model_load(dir, &m), ST_OK);
    assert_int_equal(st_budget_resolve(m, spec, &b), ST_OK);
    assert_int_equal(st_state_new(m, 256, &s), ST_OK);
    const int V = st_model_config(m)->vocab_size;
    float *all = malloc(sizeof *all * (size_t)V * (size_t)np), *lg = malloc(sizeof *lg * (size_t)V);
    assert_non_null(all); assert_non_null(lg);
    assert_int_equal(st_forward(b, s, prompt, np, all, 1), ST_OK);
    memcpy(lg, all + (size_t)(np - 1) * V, sizeof *lg * (size_t)V);
    *plog = malloc(sizeof **plog * (size_t)V * LAST);
    memcpy(*plog, all + (size_t)(np - LAST) * V, sizeof **plog * (size_t)V * LAST);
    *pV = V;
    free(all);
    for (int i = 0; i < n; i++) {
        int best = 0;
        for (int v = 1; v < V; v++) if (lg[v] > lg[best]) best = v;
        out[i] = best;
        if (i + 1 < n) assert_int_equal(st_forward(b, s, &out[i], 1, lg, 0), ST_OK);
    }
    free(lg);
    st_state_free(s);
    st_budget_free(b);
    st_model_free(m);
}

static int have_llamacpp(void) {
    return access(LLAMACPP_DIR "/node_modules/node-llama-cpp/package.json", R_OK) == 0 &&
           access(LLAMACPP_DIR "/node_modules/@node-llama-cpp/linux-x64/package.json", R_OK) == 0;
}

static void test_llamacpp(void **st) {
    (void)st;
    if (!have_llamacpp()) {
        fprintf(stderr, "SKIP test_llamacpp: node-llama-cpp is not installed in " LLAMACPP_DIR
                        " (make llamacpp-node; npm was unreachable?)\n");
        skip();
    }
    char g0[400], g1[400], g2[400], b[6][600];
    snprintf(g0, sizeof g0, "%s/dense_h/model", golden_dir());
    snprintf(g1, sizeof g1, "%s/moe_small/model", golden_dir());
    snprintf(g2, sizeof g2, "%s/moe_groups3/model", golden_dir());
    snprintf(b[0], sizeof b[0], "@%s/dense_h/budgets/S.json", golden_dir());
    snprintf(b[1], sizeof b[1], "@%s/moe_small/budgets/S.json", golden_dir());
    snprintf(b[2], sizeof b[2], "@%s/moe_small/budgets/depth.json", golden_dir());
    snprintf(b[3], sizeof b[3], "@%s/moe_groups3/budgets/M.json", golden_dir());
    snprintf(b[4], sizeof b[4], "@%s/dense_h/budgets/M.json", golden_dir());
    const mcase all[] = {
        {"models/elastic", "9.5M"}, {"models/elastic", "6M"}, {"models/elastic", "4M"},
        {g0, "full"}, {g0, b[4]}, {g0, b[0]}, {g1, "full"}, {g1, b[1]}, {g1, b[2]}, {g2, "full"}, {g2, b[3]},
    };
    const int nc = test_quick() ? 2 : (int)(sizeof all / sizeof *all), N = 16;
    char *rel = test_tmpdir("gguf_llamacpp"), *dir = realpath(rel, NULL), path[600], cmd[3000];
    free(rel); /* node runs in its own folder: absolute paths */
    int32_t *want = calloc((size_t)nc * N, sizeof *want);
    float *ref_logits[16] = {0};
    int ref_V[16] = {0};
    int32_t prompt[64];
    int np = 0;
    { /* the question of make run, as the default model's chat template renders it */
        st_tokenizer *tk;
        assert_int_equal(st_tokenizer_load("models/elastic/tokenizer.json", &tk), ST_OK);
        int32_t *ids;
        int n;
        assert_int_equal(st_tokenize(tk, "<s>What is 47 + 38?", strlen("<s>What is 47 + 38?"), 1, &ids, &n), ST_OK);
        for (np = 0; np < n && np < 64; np++) prompt[np] = ids[np];
        free(ids);
        st_tokenizer_free(tk);
    }
    json_t *jobs = json_array();
    for (int k = 0; k < nc; k++) {
        snprintf(path, sizeof path, "%s/m%d.gguf", dir, k);
        assert_int_equal(export(all[k].model, all[k].spec, "f32", path), 0);
        int32_t gp[16];
        int ng = 16;
        const int32_t *p = prompt;
        int npk = np;
        if (strcmp(all[k].model, "models/elastic")) { /* golden models: their tokens.txt */
            char tp[600];
            snprintf(tp, sizeof tp, "%s/../tokens.txt", all[k].model);
            int nt;
            int32_t *t = read_tokens(tp, &nt);
            assert_non_null(t);
            memcpy(gp, t, sizeof gp);
            free(t);
            p = gp; npk = ng;
        }
        greedy(all[k].model, all[k].spec, p, npk, N, want + k * N, &ref_logits[k], &ref_V[k]);
        json_t *pj = json_array();
        for (int i = 0; i < npk; i++) json_array_append_new(pj, json_integer(p[i]));
        json_array_append_new(jobs, json_pack("{s:s, s:s, s:o, s:i, s:i}", "model", path, "text", MIXED, "prompt", pj,
                                              "n", N, "logits_last", LAST));
    }
    /* the other precisions load and generate; how far their greedy run follows
       starling's F32 run is printed (rounding may move an argmax, so it is not asserted) */
    static const char *precs[] = {"f16", "bf16", "q8_0"};
    const int np_ = test_quick() ? 0 : 3;
    for (int k = 0; k < np_; k++) {
        snprintf(path, sizeof path, "%s/p%d.gguf", dir, k);
        assert_int_equal(export("models/elastic", "9.5M", precs[k], path), 0);
        json_t *pj = json_array();
        for (int i = 0; i < np; i++) json_array_append_new(pj, json_integer(prompt[i]));
        json_array_append_new(jobs, json_pack("{s:s, s:o, s:i, s:i}", "model", path, "prompt", pj, "n", N, "logits_last", 1));
    }
    char jp[700];
    snprintf(jp, sizeof jp, "%s/jobs.json", dir);
    assert_int_equal(json_dump_file(jobs, jp, 0), 0);
    json_decref(jobs);
    char *abs = realpath(jp, NULL);
    snprintf(cmd, sizeof cmd, "cd " LLAMACPP_DIR " && node check.mjs '%s'", abs);
    free(abs);
    int status;
    char *o = run_capture(cmd, &status);
    assert_int_equal(status, 0);
    json_t *res = json_loads(o, 0, NULL);
    if (!res) fprintf(stderr, "node said: %s\n", o);
    assert_non_null(res);
    free(o);
    assert_int_equal(json_array_size(res), nc + np_);
    for (int k = 0; k < np_; k++) {
        json_t *r = json_array_get(res, nc + k), *cont = json_object_get(r, "continuation");
        assert_null(json_object_get(r, "error"));
        assert_int_equal(json_array_size(cont), N);
        int agree = 0;
        while (agree < N && json_integer_value(json_array_get(cont, agree)) == want[agree]) agree++;
        json_t *row = json_array_get(json_object_get(r, "logits"), 0);
        double dmax = 0, rmax = 0;
        for (int v = 0; v < ref_V[0]; v++) { /* against starling's F32 logits after the last prompt token */
            double ref = ref_logits[0][(size_t)(LAST - 1) * ref_V[0] + v];
            dmax = fmax(dmax, fabs(json_number_value(json_array_get(row, v)) - ref));
            rmax = fmax(rmax, fabs(ref));
        }
        assert_int_equal(json_array_size(row), ref_V[0]);
        fprintf(stderr, "llama.cpp %-5s default model 9.5M: greedy follows starling's F32 run for %d/%d tokens, "
                "logits max|d|/max|ref| = %.1e\n", precs[k], agree, N, dmax / rmax);
    }
    for (int k = 0; k < nc; k++) {
        json_t *r = json_array_get(res, k), *cont = json_object_get(r, "continuation");
        if (json_object_get(r, "error")) fprintf(stderr, "%s %s: %s\n", all[k].model, all[k].spec,
                                                 json_string_value(json_object_get(r, "error")));
        assert_null(json_object_get(r, "error"));
        if (json_array_size(cont) != (size_t)N) fprintf(stderr, "llama.cpp answered: %s\n", json_dumps(r, 0));
        assert_int_equal(json_array_size(cont), N);
        int same = 1;
        for (int i = 0; i < N; i++) same &= json_integer_value(json_array_get(cont, i)) == want[k * N + i];
        fprintf(stderr, "llama.cpp %-14s %-40s greedy x%d: %s\n", json_string_value(json_object_get(r, "arch")),
                all[k].spec, N, same ? "equal" : "DIFFERENT");
        assert_true(same);
        /* the raw logits after the last prompt tokens: max|d|/max|ref| (measured <= 5e-7 with an F32 KV
           cache; halving one layer's A, for instance, moves them by 3e-3 while every greedy token stays) */
        json_t *lj = json_object_get(r, "logits");
        assert_int_equal(json_array_size(lj), LAST);
        double dmax = 0, rmax = 0;
        for (int t = 0; t < LAST; t++) {
            json_t *row = json_array_get(lj, t);
            assert_int_equal(json_array_size(row), ref_V[k]);
            for (int v = 0; v < ref_V[k]; v++) {
                double a = json_number_value(json_array_get(row, v)), ref = ref_logits[k][(size_t)t * ref_V[k] + v];
                dmax = fmax(dmax, fabs(a - ref));
                rmax = fmax(rmax, fabs(ref));
            }
        }
        fprintf(stderr, "llama.cpp %-14s %-40s logits x%d: max|d|/max|ref| = %.1e\n",
                json_string_value(json_object_get(r, "arch")), all[k].spec, LAST, dmax / rmax);
        assert_true(dmax / rmax <= 1e-5);
        free(ref_logits[k]);
        /* tokenization of the mixed text */
        st_tokenizer *tk;
        char tp[600];
        snprintf(tp, sizeof tp, "%s/tokenizer.json", all[k].model);
        assert_int_equal(st_tokenizer_load(tp, &tk), ST_OK);
        int32_t *ids;
        int n;
        assert_int_equal(st_tokenize(tk, MIXED, strlen(MIXED), 1, &ids, &n), ST_OK);
        json_t *lt = json_object_get(r, "tokens");
        int teq = (int)json_array_size(lt) == n;
        for (int i = 0; teq && i < n; i++) teq = json_integer_value(json_array_get(lt, i)) == ids[i];
        if (!teq) fprintf(stderr, "tokenization differs (%d ids here, %zu in llama.cpp)\n", n, json_array_size(lt));
        assert_true(teq);
        free(ids);
        st_tokenizer_free(tk);
    }
    json_decref(res);
    free(want);
    rm_rf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_container),
        cmocka_unit_test(test_layout_default),
        cmocka_unit_test(test_llamacpp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_rank.c — importance ranking and permutation (src/elastic/rank.c):
 *   - permutation invariance: a checkpoint permuted by random (non-identity)
 *     permutations on every axis, and one permuted by its own scores, gives
 *     the parent's logits through st_forward (every layer type: Mamba with 2
 *     groups, GQA attention, dense MLP, MoE with a shared expert);
 *   - re-scoring the permuted model gives descending scores on every axis;
 *   - known importance: a zeroed hidden channel, FFN neuron, Mamba head and
 *     head channel rank last; an expert never routed has REAP 0; a layer
 *     whose output is zero has layer importance 0;
 *   - the CLI: text and .bin calibration, importance.json, bad input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "elastic/rank.h"
#include "model/model.h"
#include "model/synth.h"
#include "train/train.h"
#include "util_test.h"

static char *g_dir;          /* temp dir of this run               */
static char g_parent[700];   /* the random parent checkpoint        */

static uint64_t g_rng = 12345;
static double urand(void) {
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return ((g_rng >> 11) + 0.5) / 9007199254740992.0;
}
static float nrand(void) { return (float)(sqrt(-2 * log(urand())) * cos(6.283185307 * urand())); }

enum { T = 16 };

/* The parent: a synth checkpoint (every layer type) with its 1-D tensors
 * (norms, gated norm, D, router bias) made random too, so that a wrong
 * permutation of any of them shows in the logits. */
static int setup(void **s) {
    (void)s;
    g_dir = test_tmpdir("rank");
    char syn[700];
    snprintf(syn, sizeof syn, "%s/synth", g_dir);
    st_synth_opts o;
    st_synth_preset("default", &o);
    snprintf(o.pattern, sizeof o.pattern, "ME*M-E");
    o.hidden = 32; o.vocab = 272;
    o.mamba_heads = 8; o.mamba_head_dim = 4; o.state = 8; o.groups = 2;
    o.attn_heads = 4; o.kv_heads = 2; o.head_dim = 8;
    o.experts = 6; o.top_k = 2; o.moe_ffn = 12; o.shared_ffn = 16; o.ffn = 24;
    o.dtype = ST_DT_F32;
    o.seed = 77;
    if (st_synth_write(syn, &o)) fail_msg("synth: %s", st_last_error());
    st_model *sm;
    if (st_model_load(syn, &sm)) fail_msg("load synth: %s", st_last_error());
    st_tmodel *m;
    assert_int_equal(st_tmodel_new(st_model_config(sm), &m), ST_OK);
    if (st_tmodel_from_model(m, sm)) fail_msg("from_model: %s", st_last_error());
    for (int i = 0; i < m->n_p; i++) {
        const char *n = m->p[i].name;
        float *w = st_tw(m, i);
        if (strstr(n, "norm")) for (size_t j = 0; j < m->p[i].numel; j++) w[j] = 1.0f + 0.3f * nrand();
        if (strstr(n, "mixer.D")) for (size_t j = 0; j < m->p[i].numel; j++) w[j] = 1.0f + 0.5f * nrand();
        if (strstr(n, "e_score_correction_bias")) for (size_t j = 0; j < m->p[i].numel; j++) w[j] = 0.05f * nrand();
    }
    snprintf(g_parent, sizeof g_parent, "%s/parent", g_dir);
    if (st_tmodel_save(m, g_parent, syn, 0)) fail_msg("save parent: %s", st_last_error());
    st_tmodel_free(m);
    st_model_free(sm);
    return 0;
}

static int teardown(void **s) {
    (void)s;
    rm_rf(g_dir);
    free(g_dir);
    return 0;
}

/* ------------------------------------------------------------ helpers */

static void rand_tokens(int32_t *x, int n, int V) { for (int i = 0; i < n; i++) x[i] = (int32_t)(urand() * V) % V; }

/* st_forward logits [nseq][T][V] of checkpoint dir, every sequence fresh. */
static float *logits_of(const char *dir, const int32_t *tok, int nseq) {
    st_model *m;
    if (st_model_load(dir, &m)) fail_msg("load %s: %s", dir, st_last_error());
    const int V = st_model_config(m)->vocab_size;
    float *out = malloc(sizeof(float) * (size_t)nseq * T * V);
    st_budget *b;
    assert_int_equal(st_budget_by_name(m, "full", &b), ST_OK);
    st_state *st;
    assert_int_equal(st_state_new(m, 0, &st), ST_OK);
    for (int s = 0; s < nseq; s++) {
        st_state_reset(st);
        if (st_forward(b, st, tok + s * T, T, out + (size_t)s * T * V, 1)) fail_msg("forward: %s", st_last_error());
    }
    st_state_free(st);
    st_budget_free(b);
    st_model_free(m);
    return out;
}

static st_tmodel *load_tmodel(const char *dir, st_model **keep) {
    st_model *sm;
    if (st_model_load(dir, &sm)) fail_msg("load %s: %s", dir, st_last_error());
    st_tmodel *m;
    assert_int_equal(st_tmodel_new(st_model_config(sm), &m), ST_OK);
    if (st_tmodel_from_model(m, sm)) fail_msg("from_model: %s", st_last_error());
    if (keep) *keep = sm;
    else st_model_free(sm);
    return m;
}

static int is_identity(const int32_t *p, int n) {
    for (int i = 0; i < n; i++) if (p[i] != i) return 0;
    return 1;
}

/* A random permutation inside every block, none of them the identity. */
static void rand_axis(st_rank_axis *a) {
    int bs = a->n / a->groups;
    for (int g = 0; g < a->groups; g++) {
        int32_t *p = a->perm + g * bs;
        for (int i = 0; i < bs; i++) p[i] = g * bs + i;
        for (int i = bs - 1; i > 0; i--) {
            int j = (int)(urand() * (i + 1)) % (i + 1);
            int32_t t = p[i]; p[i] = p[j]; p[j] = t;
        }
        int ident = 1;
        for (int i = 0; i < bs; i++) ident &= p[i] == g * bs + i;
        if (ident && bs > 1) { int32_t t = p[0]; p[0] = p[1]; p[1] = t; } /* force a change */
    }
    assert_false(is_identity(a->perm, a->n));
}

/* Call f on every axis of r. */
static void each_axis(st_rank *r, void (*f)(st_rank_axis *, void *), void *u) {
    f(&r->hidden, u);
    for (int l = 0; l < r->cfg.n_layers; l++) {
        st_rank_layer *L = &r->L[l];
        st_rank_axis *ax[] = {&L->mamba_heads, &L->mamba_dim, &L->attn_heads, &L->ffn, &L->experts};
        for (int k = 0; k < 5; k++) if (ax[k]->score) f(ax[k], u);
        if (L->expert_ffn) for (int e = 0; e < r->cfg.n_routed_experts; e++) f(&L->expert_ffn[e], u);
    }
}

static void cb_rand(st_rank_axis *a, void *u) { (void)u; rand_axis(a); }
static void cb_count_nonid(st_rank_axis *a, void *u) { *(int *)u += !is_identity(a->perm, a->n); }
static void cb_count(st_rank_axis *a, void *u) { (void)a; (*(int *)u)++; }

/* Calibration tokens [nseq][T] of the test. */
static int32_t *calib(int nseq) {
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)nseq * T);
    rand_tokens(tok, nseq * T, 272);
    return tok;
}

/* Apply r to a fresh copy of the parent, save to dir/tag, compare logits. */
static void check_invariant(st_rank *r, const char *tag, const float *ref, const int32_t *tok, int nseq) {
    st_tmodel *m = load_tmodel(g_parent, NULL);
    if (st_rank_apply(m, r)) fail_msg("apply: %s", st_last_error());
    char out[800];
    snprintf(out, sizeof out, "%s/%s", g_dir, tag);
    if (st_rank_save(m, r, out, g_parent, 0)) fail_msg("save: %s", st_last_error());
    float *lg = logits_of(out, tok, nseq);
    double e = rel_err(lg, ref, (size_t)nseq * T * 272);
    printf("  %s: permuted checkpoint vs parent logits, rel err %.2e\n", tag, e);
    assert_true(e < 1e-4);
    /* the permutation really changed the weights */
    st_tmodel *p = load_tmodel(g_parent, NULL);
    assert_true(memcmp(p->w, m->w, p->n_w * sizeof(float)) != 0);
    st_tmodel_free(p);
    free(lg);
    st_tmodel_free(m);
}

/* ------------------------------------------------------------ tests */

static void test_invariance_random(void **s) {
    (void)s;
    int32_t *tok = calib(2);
    float *ref = logits_of(g_parent, tok, 2);
    st_model *pm;
    if (st_model_load(g_parent, &pm)) fail_msg("load: %s", st_last_error());
    st_rank *r;
    assert_int_equal(st_rank_new(st_model_config(pm), &r), ST_OK);
    int n_axes = 0, n_nonid = 0;
    each_axis(r, cb_rand, NULL);
    each_axis(r, cb_count, &n_axes);
    each_axis(r, cb_count_nonid, &n_nonid);
    printf("  %d axes, %d permuted (random, non-identity)\n", n_axes, n_nonid);
    assert_int_equal(n_axes, n_nonid);
    /* hidden + 2 Mamba layers × 2 + attention + MLP + 2 MoE layers × (experts + 6 experts' neurons + shared) */
    assert_int_equal(n_axes, 1 + 4 + 1 + 1 + 2 * 8);
    check_invariant(r, "rand", ref, tok, 2);
    /* perms that leave their group are refused */
    st_rank_layer *Lm = &r->L[0];
    int32_t keep = Lm->mamba_heads.perm[0];
    Lm->mamba_heads.perm[0] = Lm->mamba_heads.perm[4]; /* a group-1 head in group 0 */
    Lm->mamba_heads.perm[4] = keep;
    st_tmodel *m = load_tmodel(g_parent, NULL);
    assert_int_equal(st_rank_apply(m, r), ST_ERR_ARG);
    printf("  refused: %s\n", st_last_error());
    st_tmodel_free(m);
    st_rank_free(r);
    st_model_free(pm);
    free(ref);
    free(tok);
}

static void test_invariance_scores(void **s) {
    (void)s;
    const int nseq = 7; /* batch 3: a short last batch */
    int32_t *tok = calib(nseq);
    float *ref = logits_of(g_parent, tok, 2);
    st_model *pm;
    st_tmodel *m = load_tmodel(g_parent, &pm);
    st_rank *r;
    assert_int_equal(st_rank_new(&m->cfg, &r), ST_OK);
    if (st_rank_score(r, m, tok, nseq, T, 3, 0)) fail_msg("score: %s", st_last_error());
    assert_int_equal(r->n_tokens, nseq * T);
    if (st_rank_layers(r, pm, tok, 2, T, 0)) fail_msg("layers: %s", st_last_error());
    int n_axes = 0, n_nonid = 0;
    each_axis(r, cb_count, &n_axes);
    each_axis(r, cb_count_nonid, &n_nonid);
    printf("  score-derived: %d of %d axes permuted\n", n_nonid, n_axes);
    assert_false(is_identity(r->hidden.perm, r->hidden.n));
    assert_true(n_nonid >= n_axes - 3);
    for (int l = 0; l < r->cfg.n_layers; l++) {
        printf("  layer %d (%c) importance %.4g\n", l, r->L[l].type, r->L[l].importance);
        assert_true(r->L[l].importance > 0 && isfinite(r->L[l].importance));
    }
    check_invariant(r, "scored", ref, tok, 2);

    /* importance.json: scores in the new order, perms, layer importance */
    char p[900];
    snprintf(p, sizeof p, "%s/scored/importance.json", g_dir);
    json_error_t je;
    json_t *j = json_load_file(p, 0, &je);
    if (!j) fail_msg("importance.json: %s (line %d)", je.text, je.line);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "calibration"), "tokens")), nseq * T);
    json_t *hid = json_object_get(j, "hidden_size");
    json_t *sc = json_object_get(hid, "scores"), *pe = json_object_get(hid, "perm");
    assert_int_equal(json_array_size(sc), 32);
    for (int i = 0; i < 32; i++) {
        assert_int_equal(json_integer_value(json_array_get(pe, i)), r->hidden.perm[i]);
        double v = json_number_value(json_array_get(sc, i));
        assert_true(fabs(v - r->hidden.score[r->hidden.perm[i]]) <= 1e-6 * fabs(v) + 1e-12);
        if (i) assert_true(v <= json_number_value(json_array_get(sc, i - 1)));
    }
    assert_int_equal(json_array_size(json_object_get(j, "layer_importance")), 6);
    json_t *L5 = json_array_get(json_object_get(j, "layers"), 5);
    assert_int_equal(json_array_size(json_object_get(L5, "moe_intermediate_size")), 6);
    assert_non_null(json_object_get(L5, "n_routed_experts"));
    assert_non_null(json_object_get(json_array_get(json_object_get(j, "layers"), 0), "mamba_num_heads"));
    json_decref(j);
    st_tmodel_free(m);
    st_model_free(pm);
    st_rank_free(r);
    free(ref);
    free(tok);
}

/* descending inside every block, up to float rounding */
static void cb_sorted(st_rank_axis *a, void *u) {
    (void)u;
    int bs = a->n / a->groups;
    double mx = 0;
    for (int i = 0; i < a->n; i++) if (a->score[i] > mx) mx = a->score[i];
    for (int i = 0; i < a->n; i++)
        if (i % bs && a->score[i] > a->score[i - 1] + 1e-5 * mx)
            fail_msg("axis of %d: score[%d] = %.8g > score[%d] = %.8g", a->n, i, a->score[i], i - 1, a->score[i - 1]);
}

static void test_sorted_after_permutation(void **s) {
    (void)s;
    const int nseq = 4;
    int32_t *tok = calib(nseq);
    st_tmodel *m = load_tmodel(g_parent, NULL);
    st_rank *r, *r2;
    assert_int_equal(st_rank_new(&m->cfg, &r), ST_OK);
    assert_int_equal(st_rank_new(&m->cfg, &r2), ST_OK);
    if (st_rank_score(r, m, tok, nseq, T, 4, 0)) fail_msg("score: %s", st_last_error());
    if (st_rank_apply(m, r)) fail_msg("apply: %s", st_last_error());
    if (st_rank_score(r2, m, tok, nseq, T, 2, 0)) fail_msg("rescore: %s", st_last_error());
    each_axis(r2, cb_sorted, NULL);
    /* and they are the parent's scores in the new order */
    for (int i = 0; i < r->hidden.n; i++)
        assert_true(fabs(r2->hidden.score[i] - r->hidden.score[r->hidden.perm[i]]) <= 1e-4 * r->hidden.score[r->hidden.perm[0]]);
    const st_rank_layer *a = &r->L[5], *b = &r2->L[5];
    for (int e = 0; e < a->experts.n; e++) {
        assert_true(fabs(b->experts.score[e] - a->experts.score[a->experts.perm[e]]) <= 1e-4 * a->experts.score[a->experts.perm[0]]);
        const st_rank_axis *fa = &a->expert_ffn[a->experts.perm[e]], *fb = &b->expert_ffn[e];
        for (int j = 0; j < fa->n; j++)
            assert_true(fabs(fb->score[j] - fa->score[fa->perm[j]]) <= 1e-4 * (fa->score[fa->perm[0]] + 1e-30));
    }
    st_rank_free(r);
    st_rank_free(r2);
    st_tmodel_free(m);
    free(tok);
}

static void test_known_importance(void **s) {
    (void)s;
    const int nseq = 4, ch = 5, neuron = 7, dead = 3, head = 1, hch = 2, sneuron = 9;
    int32_t *tok = calib(nseq);
    st_tmodel *m = load_tmodel(g_parent, NULL);
    const st_config *c = &m->cfg;
    const int H = c->hidden_size, P = c->mamba_head_dim, din = c->mamba_num_heads * P;
    /* hidden channel ch: embedding column and every norm weight 0 */
    for (int v = 0; v < c->vocab_size; v++) st_tw(m, m->embed)[(size_t)v * H + ch] = 0;
    st_tw(m, m->norm_f)[ch] = 0;
    for (int l = 0; l < c->n_layers; l++) st_tw(m, m->L[l].norm)[ch] = 0;
    /* dense FFN neuron: up row 0 */
    memset(st_tw(m, m->L[4].up) + (size_t)neuron * H, 0, sizeof(float) * H);
    /* shared expert neuron: up row 0 */
    memset(st_tw(m, m->L[1].sh_up) + (size_t)sneuron * H, 0, sizeof(float) * H);
    /* Mamba layer 3: head `head` (group 0) x rows 0, channel hch x rows 0 in every head */
    float *Win = st_tw(m, m->L[3].in_proj);
    for (int p = 0; p < P; p++) memset(Win + (size_t)(din + head * P + p) * H, 0, sizeof(float) * H);
    for (int h = 0; h < c->mamba_num_heads; h++) memset(Win + (size_t)(din + h * P + hch) * H, 0, sizeof(float) * H);
    /* expert `dead` of layer 5 is never selected */
    st_tw(m, m->L[5].e_bias)[dead] = -1e3f;

    st_rank *r;
    assert_int_equal(st_rank_new(c, &r), ST_OK);
    if (st_rank_score(r, m, tok, nseq, T, 4, 0)) fail_msg("score: %s", st_last_error());
    assert_true(r->hidden.score[ch] == 0);
    assert_int_equal(r->hidden.perm[H - 1], ch);
    for (int i = 0; i < H; i++) if (i != ch) assert_true(r->hidden.score[i] > 0);
    const st_rank_axis *f = &r->L[4].ffn;
    assert_true(f->score[neuron] == 0);
    assert_int_equal(f->perm[f->n - 1], neuron);
    const st_rank_axis *sh = &r->L[1].ffn;
    assert_true(sh->score[sneuron] == 0);
    assert_int_equal(sh->perm[sh->n - 1], sneuron);
    const st_rank_axis *mh = &r->L[3].mamba_heads, *md = &r->L[3].mamba_dim;
    int R = mh->n / mh->groups;
    assert_true(mh->score[head] < mh->score[0] && mh->score[head] < mh->score[R - 1]);
    assert_int_equal(mh->perm[R - 1], head); /* last of its group */
    assert_true(md->score[hch] == 0);
    assert_int_equal(md->perm[P - 1], hch);
    const st_rank_layer *E = &r->L[5];
    printf("  REAP layer 5:");
    for (int e = 0; e < E->experts.n; e++) printf(" %.4g", E->experts.score[e]);
    printf("\n");
    assert_true(E->experts.score[dead] == 0);
    assert_int_equal(E->experts.perm[E->experts.n - 1], dead);
    for (int e = 0; e < E->experts.n; e++) if (e != dead) assert_true(E->experts.score[e] > 0);
    for (int j = 0; j < c->moe_intermediate_size; j++) assert_true(E->expert_ffn[dead].score[j] == 0);
    st_rank_free(r);
    st_tmodel_free(m);
    free(tok);
}

static void test_layer_importance_zero(void **s) {
    (void)s;
    /* the dense layer's output is zero: skipping it changes nothing */
    st_tmodel *m = load_tmodel(g_parent, NULL);
    float *Wd = st_tw(m, m->L[4].down);
    memset(Wd, 0, sizeof(float) * m->p[m->L[4].down].numel);
    char dir[800];
    snprintf(dir, sizeof dir, "%s/deadlayer", g_dir);
    if (st_tmodel_save(m, dir, NULL, 0)) fail_msg("save: %s", st_last_error());
    st_model *pm;
    if (st_model_load(dir, &pm)) fail_msg("load: %s", st_last_error());
    st_rank *r;
    assert_int_equal(st_rank_new(&m->cfg, &r), ST_OK);
    int32_t *tok = calib(2);
    if (st_rank_layers(r, pm, tok, 2, T, 0)) fail_msg("layers: %s", st_last_error());
    for (int l = 0; l < 6; l++) printf("  layer %d importance %.4g\n", l, r->L[l].importance);
    assert_true(r->L[4].importance == 0);
    for (int l = 0; l < 6; l++) if (l != 4) assert_true(r->L[l].importance > 0);
    assert_int_equal(r->n_layer_tokens, 2 * T);
    /* a model of another shape is refused */
    st_rank *r2;
    st_config c2 = m->cfg;
    c2.hidden_size = 16;
    assert_int_equal(st_rank_new(&c2, &r2), ST_OK);
    assert_int_equal(st_rank_layers(r2, pm, tok, 2, T, 0), ST_ERR_ARG);
    assert_int_equal(st_rank_apply(m, r2), ST_ERR_ARG);
    st_rank_free(r2);
    st_rank_free(r);
    st_model_free(pm);
    st_tmodel_free(m);
    free(tok);
}

/* ------------------------------------------------------------ CLI */

static char *sh(int *status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *sh(int *status, const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return run_capture(cmd, status);
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* Expect failure with one line on stderr containing `want` (usage errors
 * add "try 'starling rank --help'"). */
static void expect_fail(const char *args, const char *want) {
    int st;
    char *o = sh(&st, "%s rank %s 2>&1 >/dev/null", starling_bin(), args);
    printf("  rank %s -> %d: %s", args, st, o);
    assert_true(st != 0);
    assert_int_equal(count_lines(o), st == 2 ? 2 : 1);
    if (!strstr(o, want)) fail_msg("expected '%s' in: %s", want, o);
    free(o);
}

static void test_cli(void **s) {
    (void)s;
    int st;
    char *o = sh(&st, "%s rank --help 2>&1", starling_bin());
    int have = st == 0 && o && strstr(o, "--calib");
    free(o);
    if (!have) { print_message("SKIP: %s has no 'rank' command\n", starling_bin()); skip(); }
    char txt[800], bin[800], out[800], bad[800], few[800], empty[800];
    snprintf(txt, sizeof txt, "%s/calib.txt", g_dir);
    snprintf(bin, sizeof bin, "%s/calib.bin", g_dir);
    snprintf(bad, sizeof bad, "%s/bad.bin", g_dir);
    snprintf(few, sizeof few, "%s/few.bin", g_dir);
    snprintf(empty, sizeof empty, "%s/empty.txt", g_dir);
    snprintf(out, sizeof out, "%s/cli_out", g_dir);
    FILE *f = fopen(txt, "w");
    for (int i = 0; i < 20; i++) fprintf(f, "The quick brown fox %d jumps over the lazy dog. ", i);
    fclose(f);
    fclose(fopen(empty, "w"));
    uint32_t ids[200];
    for (int i = 0; i < 200; i++) ids[i] = (uint32_t)(i * 37 % 272);
    f = fopen(bin, "wb"); fwrite(ids, 4, 200, f); fclose(f);
    f = fopen(few, "wb"); fwrite(ids, 4, 5, f); fclose(f);
    ids[150] = 5000;
    f = fopen(bad, "wb"); fwrite(ids, 4, 200, f); fclose(f);

    o = sh(&st, "%s rank -m %s --calib %s -o %s --tokens 128 --seq 16 --batch 3 --layer-tokens 32 -q 2>&1",
           starling_bin(), g_parent, txt, out);
    printf("%s", o);
    assert_int_equal(st, 0);
    assert_non_null(strstr(o, "layer importance"));
    free(o);
    char p[900];
    snprintf(p, sizeof p, "%s/importance.json", out);
    assert_int_equal(access(p, R_OK), 0);
    snprintf(p, sizeof p, "%s/tokenizer.json", out);
    assert_int_equal(access(p, R_OK), 0);
    st_model *pm;
    if (st_model_load(out, &pm)) fail_msg("load ranked: %s", st_last_error());
    st_model_free(pm);

    expect_fail("-m x", "required");
    char args[3000];
    snprintf(args, sizeof args, "-m %s --calib %s -o %s -q", g_parent, bin, out);
    expect_fail(args, "already exists");
    snprintf(args, sizeof args, "-m %s --calib %s/missing.txt -o %s/o2 -q", g_parent, g_dir, g_dir);
    expect_fail(args, "missing.txt");
    snprintf(args, sizeof args, "-m %s --calib %s -o %s/o2 -q", g_parent, empty, g_dir);
    expect_fail(args, "empty");
    snprintf(args, sizeof args, "-m %s --calib %s -o %s/o2 -q --seq 16", g_parent, few, g_dir);
    expect_fail(args, "fewer than one sequence");
    snprintf(args, sizeof args, "-m %s --calib %s -o %s/o2 -q --seq 16", g_parent, bad, g_dir);
    expect_fail(args, "outside the model's vocabulary");
    snprintf(args, sizeof args, "-m %s --calib %s -o %s/o2 --seq 0", g_parent, bin, g_dir);
    expect_fail(args, "--seq");
    /* text whose tokens the model does not have: a 200-token model with the 272-token tokenizer */
    char small[800];
    snprintf(small, sizeof small, "%s/small", g_dir);
    st_synth_opts so;
    st_synth_preset("default", &so);
    snprintf(so.pattern, sizeof so.pattern, "M-");
    so.hidden = 16; so.vocab = 200; so.mamba_heads = 4; so.mamba_head_dim = 4; so.state = 4; so.ffn = 8;
    so.dtype = ST_DT_F32;
    if (st_synth_write(small, &so)) fail_msg("synth: %s", st_last_error());
    o = sh(&st, "cp %s/tokenizer.json %s/ && printf 'un caf\xc3\xa9 noir ' > %s/cafe.txt", g_parent, small, g_dir);
    assert_int_equal(st, 0);
    free(o);
    snprintf(args, sizeof args, "-m %s --calib %s/cafe.txt -o %s/o2 -q --seq 4", small, g_dir, g_dir);
    expect_fail(args, "outside the model's vocabulary");
    snprintf(p, sizeof p, "%s/o2", g_dir);
    assert_int_equal(access(p, F_OK), -1); /* nothing written on failure */

    o = sh(&st, "%s rank -m %s --calib %s -o %s --seq 16 --batch 4 --layer-tokens 0 -f -q 2>&1", starling_bin(), g_parent,
           bin, out);
    assert_int_equal(st, 0);
    free(o);
    snprintf(p, sizeof p, "%s/importance.json", out);
    json_t *j = json_load_file(p, 0, NULL);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "calibration"), "tokens")), 192);
    assert_true(json_is_null(json_array_get(json_object_get(j, "layer_importance"), 0)));
    json_decref(j);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invariance_random),        cmocka_unit_test(test_invariance_scores),
        cmocka_unit_test(test_sorted_after_permutation), cmocka_unit_test(test_known_importance),
        cmocka_unit_test(test_layer_importance_zero),    cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests_name("rank", tests, setup, teardown);
}

/*
 * test_elastic_train.c — the masked (elastic) training forward/backward and
 * distillation loss of src/train (st_tmodel_set_masks, st_tmodel_set_teacher):
 *   - the masked forward at pi = 1 computes what the sliced model computes:
 *     st_forward at the st_budget of the same widths, per axis and combined,
 *     samples at different budgets in one batch;
 *   - weight gradients and dL/dpi under masks (pi != 1, skipped layers,
 *     clipped top-k) against central finite differences, with cross-entropy
 *     and with KL to a teacher;
 *   - masks off restores the unmasked numbers bit for bit; bad widths are
 *     refused with ST_ERR_BUDGET; row losses and dL/dpi accumulation.
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

#include "model/model.h"
#include "model/synth.h"
#include "train/train.h"
#include "util_test.h"
#include "util_train.h"

/* ------------------------------------------------------------ helpers */

static void set_w(st_tmask *t, int hid, int mh, int md, int ah, int ex, int ef, int sf, int ff) {
    const int v[ST_N_AX] = {hid, mh, md, ah, ex, ef, sf, ff};
    for (int k = 0; k < ST_N_AX; k++) t->w[k] = v[k];
}

/* ------------------------------------------------------------ masked forward == sliced inference */

static void test_masked_matches_budget(void **s) {
    (void)s;
    char *dir = test_tmpdir("etrain_fwd");
    char ck[600];
    snprintf(ck, sizeof ck, "%s/synth", dir);
    st_synth_opts o;
    st_synth_preset("default", &o); /* ME*M-EME, H 128, 8 Mamba heads / 2 groups, 4 q / 2 kv, 8 experts top-2 */
    o.dtype = ST_DT_F32;
    if (st_synth_write(ck, &o)) fail_msg("synth: %s", st_last_error());
    st_model *sm;
    if (st_model_load(ck, &sm)) fail_msg("load: %s", st_last_error());
    const st_config *c = st_model_config(sm);
    st_tmodel *m;
    assert_int_equal(st_tmodel_new(c, &m), ST_OK);
    if (st_tmodel_from_model(m, sm)) fail_msg("from_model: %s", st_last_error());
    /* each axis alone, clipped top-k, skipped layers, a combined budget, the parent */
    static const char *specs[] = {
        "hidden_size=96",
        "mamba_num_heads=4",
        "mamba_head_dim=10",
        "num_attention_heads=2",
        "n_routed_experts=5",
        "n_routed_experts=1",
        "moe_intermediate_size=40",
        "moe_shared_expert_intermediate_size=72",
        "intermediate_size=100",
        "skip_layers=2:5",
        "hidden_size=80,mamba_num_heads=6,mamba_head_dim=12,num_attention_heads=2,n_routed_experts=6,"
        "moe_intermediate_size=48,moe_shared_expert_intermediate_size=96,intermediate_size=160,skip_layers=3",
        "",
    };
    enum { NS = sizeof specs / sizeof specs[0], B = 4, T = 13 };
    const int V = c->vocab_size;
    assert_int_equal(st_tmodel_reserve(m, B, T), ST_OK);
    int32_t tok[B * T];
    float *ref = malloc(sizeof(float) * T * V);
    double worst = 0;
    for (int b0 = 0; b0 < NS; b0 += B) { /* B different budgets per batch */
        st_tmask ms[B];
        st_budget *bud[B];
        for (int b = 0; b < B; b++) {
            const char *spec = specs[(b0 + b) % NS];
            st_widths w;
            memset(&w, 0, sizeof w);
            if (*spec && st_widths_parse(&w, spec)) fail_msg("parse %s: %s", spec, st_last_error());
            if (st_budget_new(sm, &w, &bud[b])) fail_msg("budget %s: %s", spec, st_last_error());
            st_tmask_from_widths(&ms[b], c, &w);
        }
        tt_rand_tokens(tok, B * T, V);
        if (st_tmodel_set_masks(m, ms)) fail_msg("set_masks: %s", st_last_error());
        st_tmodel_forward(m, tok, NULL);
        for (int b = 0; b < B; b++) {
            st_state *st;
            assert_int_equal(st_state_new(sm, 0, &st), ST_OK);
            if (st_forward(bud[b], st, tok + b * T, T, ref, 1)) fail_msg("st_forward: %s", st_last_error());
            double e = rel_err(st_tmodel_logits(m) + (size_t)b * T * V, ref, (size_t)T * V);
            const char *spec = specs[(b0 + b) % NS];
            printf("  %-40.40s%s rel err %.2e\n", *spec ? spec : "(parent)", strlen(spec) > 40 ? "…" : " ", e);
            if (!(e < 1e-4)) fail_msg("budget %s: masked training forward vs st_forward rel err %.3e", spec, e);
            if (e > worst) worst = e;
            st_state_free(st);
            st_budget_free(bud[b]);
        }
    }
    printf("  worst rel err %.2e\n", worst);
    free(ref);
    st_tmodel_free(m);
    st_model_free(sm);
    rm_rf(dir);
    free(dir);
}

/* ------------------------------------------------------------ finite differences */

static float loss_at(st_tmodel *m, const st_tmask *ms, const int32_t *tok, const int32_t *tgt) {
    if (st_tmodel_set_masks(m, ms)) fail_msg("set_masks: %s", st_last_error());
    return st_tmodel_forward(m, tok, tgt);
}

/* Analytic weight gradients and dL/dpi against central differences, under
 * the masks ms[B] (bounds as test_train.c: |g − fd| ≤ 1e-3·max|g| +
 * 3e-2·|fd| per coordinate, aggregate relative error ≤ 1e-2). */
static void gradcheck_masked(const char *pattern, int B, int T, st_tmask *ms, int kd) {
    st_config c;
    tt_make_cfg(&c, pattern);
    st_tmodel *m;
    assert_int_equal(st_tmodel_new(&c, &m), ST_OK);
    tt_randomize(m);
    assert_int_equal(st_tmodel_reserve(m, B, T), ST_OK);
    const int BT = B * T, V = c.vocab_size;
    int32_t *tok = malloc(sizeof(int32_t) * BT), *tgt = malloc(sizeof(int32_t) * BT);
    float *teacher = malloc(sizeof(float) * (size_t)BT * V);
    tt_rand_tokens(tok, BT, V);
    tt_rand_tokens(tgt, BT, V);
    tgt[1] = -1; /* an ignored position */
    for (int i = 0; i < BT * V; i++) teacher[i] = 2.0f * tt_nrand();
    st_tmodel_set_teacher(m, kd ? teacher : NULL);
    st_tmodel_zero_grad(m);
    float L0 = loss_at(m, ms, tok, tgt);
    st_tmodel_backward(m, 1.0f);
    int32_t *route = malloc(sizeof(int32_t) * (tt_route_len(m) + 1));
    tt_routes_save(m, route);
    double gmax = 0;
    for (size_t i = 0; i < m->n_w; i++) if (fabs(m->g[i]) > gmax) gmax = fabs(m->g[i]);
    double *dpi = malloc(sizeof(double) * B * ST_N_AX);
    memcpy(dpi, st_tmodel_mask_grads(m), sizeof(double) * B * ST_N_AX);
    for (int i = 0; i < B * ST_N_AX; i++) if (fabs(dpi[i]) > gmax) gmax = fabs(dpi[i]);
    printf("  %-6s %s loss %.4f  max|g| %.3e\n", pattern, kd ? "KL" : "CE", L0, gmax);
    const int quick = test_quick();
    const float eps0 = 3e-3f; /* 1e-2 is too coarse for the KL Mamba conv weights */
    double num = 0, den = 0;
    int checked = 0, skipped = 0;
    for (int i = 0; i < m->n_p; i++) {
        const st_tparam *t = &m->p[i];
        if (!t->train) continue;
        double tmax = 0;
        for (size_t j = 0; j < t->numel; j++) if (fabs(st_tg(m, i)[j]) > tmax) tmax = fabs(st_tg(m, i)[j]);
        int probes = t->numel < 5 ? (int)t->numel : quick ? 2 : 5;
        for (int q = 0; q < probes; q++) {
            size_t j = q == 0 ? 0 : (size_t)(tt_urand() * t->numel) % t->numel;
            if (q == 0) for (size_t jj = 0; jj < t->numel; jj++) if (fabs(st_tg(m, i)[jj]) >= 0.5 * tmax) { j = jj; break; }
            float *w = st_tw(m, i) + j, w0 = *w;
            float eps = eps0 * (fabsf(w0) > 1 ? fabsf(w0) : 1.0f);
            *w = w0 + eps;
            float lp = st_tmodel_forward(m, tok, tgt);
            int ok = tt_routes_equal(m, route);
            *w = w0 - eps;
            float lm = st_tmodel_forward(m, tok, tgt);
            ok = ok && tt_routes_equal(m, route);
            *w = w0;
            if (!ok) { skipped++; continue; } /* a routing flip: not differentiable there */
            double fd = ((double)lp - lm) / (2.0 * eps), g = st_tg(m, i)[j];
            num += (g - fd) * (g - fd);
            den += fd * fd + g * g;
            checked++;
            if (!(fabs(g - fd) <= 1e-3 * gmax + 3e-2 * fabs(fd)))
                fail_msg("%s: %s[%zu]: analytic %.6e vs finite difference %.6e", pattern, t->name, j, g, fd);
        }
    }
    /* dL/dpi: every axis of every sample */
    int pchecked = 0;
    for (int b = 0; b < B; b++)
        for (int k = 0; k < ST_N_AX; k++) {
            st_tmask save = ms[b];
            float p0 = ms[b].pi[k] == 0 ? 1.0f : ms[b].pi[k], eps = eps0 * p0;
            ms[b].pi[k] = p0 + eps;
            float lp = loss_at(m, ms, tok, tgt);
            int ok = tt_routes_equal(m, route);
            ms[b].pi[k] = p0 - eps;
            float lm = loss_at(m, ms, tok, tgt);
            ok = ok && tt_routes_equal(m, route);
            ms[b] = save;
            if (!ok) { skipped++; continue; }
            double fd = ((double)lp - lm) / (2.0 * eps), g = dpi[b * ST_N_AX + k];
            num += (g - fd) * (g - fd);
            den += fd * fd + g * g;
            pchecked++;
            if (!(fabs(g - fd) <= 1e-3 * gmax + 3e-2 * fabs(fd)))
                fail_msg("%s: dL/dpi[%d][%d]: analytic %.6e vs finite difference %.6e", pattern, b, k, g, fd);
        }
    loss_at(m, ms, tok, tgt);
    double rel = sqrt(num / (den > 0 ? den : 1));
    printf("         %d weights + %d pi checked (%d skipped for routing flips), aggregate rel err %.2e\n", checked,
           pchecked, skipped, rel);
    assert_true(rel < 1e-2);
    assert_true(checked > 10);
    assert_true(pchecked >= B * ST_N_AX / 2);
    free(dpi); free(route); free(teacher); free(tok); free(tgt);
    st_tmodel_free(m);
}

/* Three samples at three budgets: narrow everything with pi != 1; the parent
 * widths with pi != 1 and the attention layer skipped; a narrow hidden width
 * with a single expert (top-k clipped to 1) and layer 3 skipped. */
static void three_masks(st_tmask *ms) {
    memset(ms, 0, 3 * sizeof *ms);
    set_w(&ms[0], 12, 2, 3, 2, 3, 6, 5, 9);
    const float p0[ST_N_AX] = {0.7f, 0.8f, 0.9f, 0.75f, 0.85f, 0.65f, 1.2f, 0.6f};
    memcpy(ms[0].pi, p0, sizeof p0);
    const float p1[ST_N_AX] = {0.9f, 0.6f, 0.7f, 0.8f, 1.1f, 0.7f, 0.8f, 0.9f};
    memcpy(ms[1].pi, p1, sizeof p1);
    ms[1].skip = 1u << 1;
    set_w(&ms[2], 10, 4, 2, 4, 1, 0, 3, 5);
    const float p2[ST_N_AX] = {0.8f, 0, 0.7f, 0.9f, 0.75f, 0.95f, 0.7f, 0.85f};
    memcpy(ms[2].pi, p2, sizeof p2);
    ms[2].skip = 1u << 4;
}

static void test_grad_masked_ce(void **s) {
    (void)s;
    st_tmask ms[3];
    three_masks(ms);
    gradcheck_masked("M*-EM", 3, test_quick() ? 9 : 17, ms, 0);
}

static void test_grad_masked_kl(void **s) {
    (void)s;
    st_tmask ms[3];
    three_masks(ms);
    ms[1].skip = 1u << 3; /* this time the MoE layer */
    gradcheck_masked("M*-EM", 3, test_quick() ? 9 : 17, ms, 1);
}

/* Per layer type on its own (narrow, pi != 1 for both samples). */
static void test_grad_masked_types(void **s) {
    (void)s;
    static const char *pats[] = {"M", "*", "-", "E"};
    for (size_t i = 0; i < sizeof pats / sizeof *pats; i++) {
        st_tmask ms[2];
        memset(ms, 0, sizeof ms);
        set_w(&ms[0], 13, 2, 3, 2, 2, 5, 6, 7);
        set_w(&ms[1], 0, 0, 2, 0, 3, 0, 4, 10);
        for (int k = 0; k < ST_N_AX; k++) { ms[0].pi[k] = 0.6f + 0.05f * k; ms[1].pi[k] = 1.3f - 0.07f * k; }
        gradcheck_masked(pats[i], 2, 7, ms, i % 2);
    }
}

/* ------------------------------------------------------------ masks off, bad widths, row loss */

typedef struct { float loss; float *logits, *g; } snap;
static void take_snap(st_tmodel *m, const int32_t *tok, const int32_t *tgt, snap *sn) {
    size_t nl = (size_t)m->B * m->T * m->cfg.vocab_size;
    st_tmodel_zero_grad(m);
    sn->loss = st_tmodel_forward(m, tok, tgt);
    sn->logits = malloc(sizeof(float) * nl);
    memcpy(sn->logits, st_tmodel_logits(m), sizeof(float) * nl);
    st_tmodel_backward(m, 1.0f);
    sn->g = malloc(sizeof(float) * m->n_w);
    memcpy(sn->g, m->g, sizeof(float) * m->n_w);
}

static void test_masks_off_restores(void **s) {
    (void)s;
    st_config c;
    tt_make_cfg(&c, "M*-EM");
    st_tmodel *m;
    assert_int_equal(st_tmodel_new(&c, &m), ST_OK);
    tt_randomize(m);
    enum { B = 3, T = 11 };
    assert_int_equal(st_tmodel_reserve(m, B, T), ST_OK);
    int32_t tok[B * T], tgt[B * T];
    tt_rand_tokens(tok, B * T, c.vocab_size);
    tt_rand_tokens(tgt, B * T, c.vocab_size);
    const size_t nl = (size_t)B * T * c.vocab_size;
    snap a, b, f;
    take_snap(m, tok, tgt, &a);
    /* dL/dpi is untouched without masks */
    for (int i = 0; i < B * ST_N_AX; i++) assert_true(st_tmodel_mask_grads(m)[i] == 0);
    st_tmask ms[B];
    three_masks(ms);
    assert_int_equal(st_tmodel_set_masks(m, ms), ST_OK);
    st_tmodel_zero_grad(m);
    float lm = st_tmodel_forward(m, tok, tgt);
    st_tmodel_backward(m, 1.0f);
    assert_true(lm != a.loss);
    double dsum = 0;
    for (int i = 0; i < B * ST_N_AX; i++) dsum += fabs(st_tmodel_mask_grads(m)[i]);
    assert_true(dsum > 0);
    /* masks off: bit for bit the unmasked result */
    assert_int_equal(st_tmodel_set_masks(m, NULL), ST_OK);
    take_snap(m, tok, tgt, &b);
    assert_true(a.loss == b.loss);
    assert_memory_equal(a.logits, b.logits, sizeof(float) * nl);
    assert_memory_equal(a.g, b.g, sizeof(float) * m->n_w);
    for (int i = 0; i < B * ST_N_AX; i++) assert_true(st_tmodel_mask_grads(m)[i] == 0); /* zeroed by zero_grad */
    /* parent-width masks with pi = 1 (all fields 0): the unmasked numbers up to rounding */
    memset(ms, 0, sizeof ms);
    assert_int_equal(st_tmodel_set_masks(m, ms), ST_OK);
    take_snap(m, tok, tgt, &f);
    double el = rel_err(f.logits, a.logits, nl), eg = rel_err(f.g, a.g, m->n_w);
    printf("  parent-width masks vs no masks: logits %.2e, grads %.2e\n", el, eg);
    assert_true(el < 1e-5 && eg < 1e-4);
    /* dL/dpi accumulates like the weight gradients: two halves = one whole */
    const double *dp = st_tmodel_mask_grads(m);
    double whole[B * ST_N_AX];
    memcpy(whole, dp, sizeof whole);
    st_tmodel_zero_grad(m);
    for (int r = 0; r < 2; r++) {
        st_tmodel_forward(m, tok, tgt);
        st_tmodel_backward(m, 0.5f);
    }
    for (int i = 0; i < B * ST_N_AX; i++) assert_true(fabs(dp[i] - whole[i]) <= 1e-6 * (fabs(whole[i]) + 1e-6));
    free(a.logits); free(a.g); free(b.logits); free(b.g); free(f.logits); free(f.g);
    st_tmodel_free(m);
}

static void test_bad_masks(void **s) {
    (void)s;
    st_config c;
    tt_make_cfg(&c, "M*-EM");
    st_tmodel *m;
    assert_int_equal(st_tmodel_new(&c, &m), ST_OK);
    st_tmodel_init(m, 3);
    st_tmask ms[2];
    memset(ms, 0, sizeof ms);
    assert_int_equal(st_tmodel_set_masks(m, ms), ST_ERR_ARG); /* before reserve */
    assert_int_equal(st_tmodel_reserve(m, 2, 5), ST_OK);
    struct { int ax, w; const char *key; } bad[] = {
        {ST_AX_HIDDEN, 17, "hidden_size"},            /* wider than the parent */
        {ST_AX_MAMBA_HEADS, 3, "mamba_num_heads"},    /* not a multiple of n_groups = 2 */
        {ST_AX_MAMBA_HEADS, 1, "mamba_num_heads"},    /* fewer than one head per group */
        {ST_AX_MAMBA_DIM, 5, "mamba_head_dim"},
        {ST_AX_ATTN_HEADS, 3, "num_attention_heads"}, /* not a multiple of n_kv = 2 */
        {ST_AX_EXPERTS, 5, "n_routed_experts"},
        {ST_AX_EXPERT_FFN, -1, "moe_intermediate_size"},
        {ST_AX_SHARED_FFN, 9, "moe_shared_expert_intermediate_size"},
        {ST_AX_FFN, 13, "intermediate_size"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(ms, 0, sizeof ms);
        ms[1].w[bad[i].ax] = bad[i].w;
        assert_int_equal(st_tmodel_set_masks(m, ms), ST_ERR_BUDGET);
        if (!strstr(st_last_error(), bad[i].key)) fail_msg("message \"%s\" does not name %s", st_last_error(), bad[i].key);
    }
    memset(ms, 0, sizeof ms);
    ms[0].skip = 1u << 5; /* the model has 5 layers */
    assert_int_equal(st_tmodel_set_masks(m, ms), ST_ERR_BUDGET);
    assert_non_null(strstr(st_last_error(), "skip"));
    memset(ms, 0, sizeof ms);
    ms[0].pi[ST_AX_FFN] = -0.5f;
    assert_int_equal(st_tmodel_set_masks(m, ms), ST_ERR_ARG);
    /* valid edge widths are taken; a refused mask leaves them in force */
    int32_t tok[10] = {1, 5, 7, 2, 9, 11, 3, 4, 20, 0};
    memset(ms, 0, sizeof ms);
    ms[1].w[ST_AX_HIDDEN] = 1;
    ms[1].w[ST_AX_MAMBA_HEADS] = 2;
    ms[1].w[ST_AX_MAMBA_DIM] = 1;
    ms[1].w[ST_AX_ATTN_HEADS] = 2;
    ms[1].w[ST_AX_EXPERTS] = 1;
    ms[1].skip = 1u << 4;
    assert_int_equal(st_tmodel_set_masks(m, ms), ST_OK);
    st_tmodel_forward(m, tok, NULL);
    const size_t nl = 10 * 23;
    float *ref = malloc(sizeof(float) * nl);
    memcpy(ref, st_tmodel_logits(m), sizeof(float) * nl);
    ms[0].w[ST_AX_ATTN_HEADS] = 1;
    assert_int_equal(st_tmodel_set_masks(m, ms), ST_ERR_BUDGET);
    st_tmodel_forward(m, tok, NULL);
    assert_memory_equal(ref, st_tmodel_logits(m), sizeof(float) * nl);
    free(ref);
    st_tmodel_free(m);
}

static void test_row_loss_kl(void **s) {
    (void)s;
    st_config c;
    tt_make_cfg(&c, "M*E");
    st_tmodel *m;
    assert_int_equal(st_tmodel_new(&c, &m), ST_OK);
    tt_randomize(m);
    enum { B = 2, T = 6 };
    const int V = c.vocab_size, BT = B * T;
    assert_int_equal(st_tmodel_reserve(m, B, T), ST_OK);
    int32_t tok[BT], tgt[BT];
    tt_rand_tokens(tok, BT, V);
    tt_rand_tokens(tgt, BT, V);
    tgt[2] = -1;
    tgt[7] = -1;
    /* cross-entropy rows by hand */
    float L = st_tmodel_forward(m, tok, tgt);
    const float *rl = st_tmodel_row_loss(m), *lg = st_tmodel_logits(m);
    double sum = 0;
    for (int t = 0; t < BT; t++) {
        if (tgt[t] < 0) { assert_true(rl[t] == 0); continue; }
        double z = 0;
        for (int i = 0; i < V; i++) z += exp((double)lg[(size_t)t * V + i]);
        double ce = log(z) - lg[(size_t)t * V + tgt[t]];
        assert_true(fabs(rl[t] - ce) < 1e-4 * (1 + ce));
        sum += rl[t];
    }
    assert_true(fabs(L - sum / (BT - 2)) < 1e-5 * (1 + L));
    /* KL to itself is 0 with (almost) no gradient; KL to a teacher by hand */
    float *self = malloc(sizeof(float) * BT * V), *teach = malloc(sizeof(float) * BT * V);
    memcpy(self, lg, sizeof(float) * BT * V);
    for (int i = 0; i < BT * V; i++) teach[i] = self[i] + tt_nrand();
    st_tmodel_set_teacher(m, self);
    float L0 = st_tmodel_forward(m, tok, tgt);
    assert_true(fabsf(L0) < 1e-6f);
    st_tmodel_zero_grad(m);
    st_tmodel_backward(m, 1.0f);
    for (size_t i = 0; i < m->n_w; i++) assert_true(fabsf(m->g[i]) < 1e-5f);
    st_tmodel_set_teacher(m, teach);
    float L1 = st_tmodel_forward(m, tok, tgt);
    rl = st_tmodel_row_loss(m);
    sum = 0;
    for (int t = 0; t < BT; t++) {
        if (tgt[t] < 0) { assert_true(rl[t] == 0); continue; }
        double zs = 0, zt = 0, kl = 0;
        for (int i = 0; i < V; i++) { zs += exp((double)self[t * V + i]); zt += exp((double)teach[t * V + i]); }
        for (int i = 0; i < V; i++) {
            double pt = exp((double)teach[t * V + i]) / zt, ps = exp((double)self[t * V + i]) / zs;
            kl += pt * log(pt / ps);
        }
        assert_true(fabs(rl[t] - kl) < 1e-5 * (1 + kl));
        sum += kl;
    }
    printf("  KL to a perturbed teacher %.4f (by hand %.4f)\n", L1, sum / (BT - 2));
    assert_true(L1 > 0 && fabs(L1 - sum / (BT - 2)) < 1e-5 * (1 + L1));
    /* back to cross-entropy */
    st_tmodel_set_teacher(m, NULL);
    assert_true(st_tmodel_forward(m, tok, tgt) == L);
    free(self); free(teach);
    st_tmodel_free(m);
}

int main(void) {
    tt_seed(4242);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_masked_matches_budget), cmocka_unit_test(test_grad_masked_ce),
        cmocka_unit_test(test_grad_masked_kl),        cmocka_unit_test(test_grad_masked_types),
        cmocka_unit_test(test_masks_off_restores),    cmocka_unit_test(test_bad_masks),
        cmocka_unit_test(test_row_loss_kl),
    };
    return cmocka_run_group_tests_name("elastic_train", tests, NULL, NULL);
}

/*
 * test_batch.c — st_forward_batch: every row of a batched step equals the
 * same sequence run alone through st_forward with the same chunks (max
 * relative logit error <= 1e-5, same argmax; bit for bit while batch and
 * sequence alone take the same kernels, below 48 rows), on the golden dense and MoE
 * models and the synthetic model with every layer type, at full width and at
 * a nested budget: prompt chunks of mixed lengths next to decode steps,
 * sequences joining and leaving the batch, a batch big enough for the GEMM
 * path, logits for every position or only the last. Misuse (a state twice,
 * a state at another budget, a bad token) is refused with nothing changed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/synth.h"
#include "starling.h"
#include "util/util.h"
#include "util_test.h"

#define NSEQ 5
#define NSTEP 6

/* The schedule: chunk length of sequence q at step k (0: not in the batch).
 * q0 starts with a 20-token prompt, q1 is one token at a time and leaves
 * after step 3, q2 joins at step 1 with a 50-token prompt (the step then has
 * > 48 rows: the GEMM path), q3 comes and goes, q4 prefills in two chunks. */
static const int g_len[NSEQ][NSTEP] = {
    {20, 1, 1, 1, 1, 1},
    {1, 1, 1, 1, 0, 0},
    {0, 50, 1, 1, 1, 1},
    {3, 0, 2, 0, 1, 0},
    {7, 9, 1, 0, 1, 1},
};

static int argmax(const float *v, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b]) b = i;
    return b;
}

/* Run the schedule batched and alone; compare every logits row produced. */
static void check_model(const char *dir, const char *budget) {
    st_model *m;
    if (st_model_load(dir, &m)) fail_msg("load %s: %s", dir, st_last_error());
    st_budget *b;
    if (st_budget_resolve(m, budget, &b)) fail_msg("budget %s: %s", budget, st_last_error());
    const int V = st_model_config(m)->vocab_size;
    uint64_t seed = 0x1234 + (uint64_t)V;
    int32_t toks[NSEQ][128];
    int total[NSEQ] = {0};
    for (int q = 0; q < NSEQ; q++) {
        for (int k = 0; k < NSTEP; k++) total[q] += g_len[q][k];
        for (int i = 0; i < total[q]; i++) toks[q][i] = (int32_t)(st_splitmix64(&seed) % (uint64_t)V);
    }
    st_state *sb[NSEQ], *sa[NSEQ];
    for (int q = 0; q < NSEQ; q++) {
        assert_int_equal(st_state_new(m, 256, &sb[q]), ST_OK);
        assert_int_equal(st_state_new(m, 256, &sa[q]), ST_OK);
    }
    float *lb[NSEQ], *la = malloc(sizeof(float) * 64 * (size_t)V);
    for (int q = 0; q < NSEQ; q++) lb[q] = malloc(sizeof(float) * 64 * (size_t)V);
    int pos[NSEQ] = {0}, tainted[NSEQ] = {0}, n_exact = 0;
    double worst = 0;
    for (int k = 0; k < NSTEP; k++) {
        st_batch_item it[NSEQ];
        int n = 0, who[NSEQ];
        for (int q = 0; q < NSEQ; q++) {
            if (!g_len[q][k]) continue;
            /* every position's logits for some chunks, the last for others */
            it[n] = (st_batch_item){sb[q], toks[q] + pos[q], g_len[q][k], lb[q], (q + k) % 2};
            who[n++] = q;
        }
        if (st_forward_batch(b, it, n)) fail_msg("batch step %d: %s", k, st_last_error());
        int rows_step = 0;
        for (int j = 0; j < n; j++) rows_step += it[j].n_tokens;
        /* below the GEMM threshold a row's arithmetic does not depend on the
         * other rows: bit for bit what the sequence gets alone, as long as no
         * step of it had 48 rows or more (then some product, an expert's with
         * the rows routed to it, may take the GEMM on one side only) */
        for (int j = 0; j < n; j++)
            if (rows_step >= 48) tainted[who[j]] = 1;
        int bitwise = 1;
        for (int j = 0; j < n; j++) {
            const int q = who[j], len = g_len[q][k], all = it[j].all_logits, rows = all ? len : 1;
            if (st_forward(b, sa[q], toks[q] + pos[q], len, la, all)) fail_msg("alone: %s", st_last_error());
            assert_int_equal(st_state_pos(sb[q]), st_state_pos(sa[q]));
            for (int r = 0; r < rows; r++) {
                const float *x = lb[q] + (size_t)r * V, *y = la + (size_t)r * V;
                const double e = rel_err(x, y, (size_t)V);
                if (e > worst) worst = e;
                if (!(e <= 1e-5) || argmax(x, V) != argmax(y, V))
                    fail_msg("%s %s step %d seq %d row %d: rel err %.2e, argmax %d vs %d alone", dir, budget, k, q,
                             r, e, argmax(x, V), argmax(y, V));
                if (!tainted[q] && memcmp(x, y, sizeof(float) * (size_t)V)) bitwise = 0;
            }
            pos[q] += len;
        }
        if (!bitwise) fail_msg("%s %s step %d (%d rows): batched logits differ from alone in the last bits", dir, budget, k, rows_step);
        for (int j = 0; j < n; j++) n_exact += !tainted[who[j]];
    }
    printf("  %-40s %-6s batched vs alone: max rel err %.2e, %d chunks bit for bit\n", dir, budget, worst, n_exact);
    assert_true(n_exact >= 5); /* step 0 for four of them, q3 later */
    for (int q = 0; q < NSEQ; q++) { st_state_free(sb[q]); st_state_free(sa[q]); free(lb[q]); }
    free(la);
    st_budget_free(b);
    st_model_free(m);
}

static char *g_tmp, g_synth[600];

static int setup(void **st) {
    g_tmp = test_tmpdir("batch");
    snprintf(g_synth, sizeof g_synth, "%s/default", g_tmp);
    st_synth_opts o;
    st_synth_preset("default", &o);
    return st_synth_write(g_synth, &o) ? -1 : 0;
}
static int teardown(void **st) { rm_rf(g_tmp); free(g_tmp); return 0; }

static void test_golden_models(void **st) {
    const char *names[] = {"dense_h", "moe_small", "moe_groups3"};
    for (int i = 0; i < 3; i++) {
        char dir[600];
        snprintf(dir, sizeof dir, "%s/%s/model", golden_dir(), names[i]);
        check_model(dir, "full");
    }
}

static void test_synth_budgets(void **st) {
    check_model(g_synth, "full");
    check_model(g_synth, "S");
    check_model(g_synth, "M:skip_layers=3");
}

static void test_refused(void **st) {
    st_model *m;
    assert_int_equal(st_model_load(g_synth, &m), ST_OK);
    st_budget *L, *S;
    assert_int_equal(st_budget_resolve(m, "full", &L), ST_OK);
    assert_int_equal(st_budget_resolve(m, "S", &S), ST_OK);
    st_state *a, *c;
    assert_int_equal(st_state_new(m, 64, &a), ST_OK);
    assert_int_equal(st_state_new(m, 64, &c), ST_OK);
    const int32_t t[3] = {20, 30, 40}, bad[1] = {1 << 20};
    assert_int_equal(st_forward(S, c, t, 3, NULL, 0), ST_OK); /* c now holds budget S */
    st_batch_item twice[2] = {{a, t, 3, NULL, 0}, {a, t, 3, NULL, 0}};
    assert_int_equal(st_forward_batch(L, twice, 2), ST_ERR_ARG);
    st_batch_item other[2] = {{a, t, 3, NULL, 0}, {c, t, 1, NULL, 0}};
    assert_int_equal(st_forward_batch(L, other, 2), ST_ERR_ARG);
    st_batch_item badtok[2] = {{a, t, 3, NULL, 0}, {c, bad, 1, NULL, 0}};
    assert_int_equal(st_forward_batch(S, badtok, 2), ST_ERR_RANGE);
    assert_int_equal(st_forward_batch(L, twice, 0), ST_ERR_ARG);
    /* nothing ran: positions unchanged */
    assert_int_equal(st_state_pos(a), 0);
    assert_int_equal(st_state_pos(c), 3);
    st_state_free(a);
    st_state_free(c);
    st_budget_free(L);
    st_budget_free(S);
    st_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_models),
        cmocka_unit_test(test_synth_budgets),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests_name("batch", tests, setup, teardown);
}

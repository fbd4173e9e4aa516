/*
 * test_gen.c — the generation engine (src/gen/generate.c) and the prompt
 * cache (src/gen/cache.c) on the synthetic default model:
 *   think budget caps the sampled thinking tokens exactly, grace waits for a
 *   line break, the message is inserted before </think>;
 *   exact switch == the answer budget run from scratch over prompt + thinking;
 *   transplant refused L -> M with a clear error, allowed between budgets with
 *   equal Mamba widths and equal to transplanting by hand;
 *   stop strings, UTF-8-valid pieces, streaming == accumulated text;
 *   prompt cache hits give the cold run's tokens and logits, snapshots every
 *   N tokens and at each chat message's end serve shared prefixes, LRU
 *   eviction under the byte cap.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "gen/cache.h"
#include "gen/generate.h"
#include "model/model.h"
#include "model/synth.h"
#include "util_test.h"

static char *g_tmp;
static st_model *g_m;
static st_tokenizer *g_tok;
static st_budget *g_L, *g_M, *g_S, *g_Mx; /* Mx: M's Mamba widths, smaller elsewhere */
static int32_t *g_prompt;
static int g_np;
static int g_V;
static int32_t g_nl;

static int32_t *chat_prompt(const char *user, int *n) {
    st_chat_msg msg = {"user", user, NULL};
    char *text = NULL;
    int32_t *ids = NULL;
    assert_int_equal(st_chat_render(&msg, 1, 1, 1, &text), ST_OK);
    assert_int_equal(st_tokenize(g_tok, text, strlen(text), 1, &ids, n), ST_OK);
    free(text);
    return ids;
}

/* Tokens of the first k messages rendered without a generation prompt: the
 * prefix every later turn repeats. */
static int rendered_len(const st_chat_msg *msgs, int k) {
    char *text;
    int32_t *ids;
    int n;
    assert_int_equal(st_chat_render(msgs, k, 0, 1, &text), ST_OK);
    assert_int_equal(st_tokenize(g_tok, text, strlen(text), 1, &ids, &n), ST_OK);
    free(text);
    free(ids);
    return n;
}

static int setup(void **st) {
    g_tmp = test_tmpdir("gen");
    st_synth_opts o;
    st_synth_preset("default", &o);
    if (st_synth_write(g_tmp, &o)) return 1;
    if (st_model_load(g_tmp, &g_m)) return 1;
    char p[600];
    snprintf(p, sizeof p, "%s/tokenizer.json", g_tmp);
    if (st_tokenizer_load(p, &g_tok)) return 1;
    if (st_budget_by_name(g_m, "L", &g_L) || st_budget_by_name(g_m, "M", &g_M) || st_budget_by_name(g_m, "S", &g_S))
        return 1;
    if (st_budget_resolve(g_m, "M:hidden_size=64,moe_intermediate_size=16", &g_Mx)) return 1;
    g_V = st_model_config(g_m)->vocab_size;
    g_nl = st_token_id(g_tok, "\n");
    if (g_nl < 0) { int32_t *ids; int n; st_tokenize(g_tok, "\n", 1, 0, &ids, &n); g_nl = ids[0]; free(ids); }
    g_prompt = chat_prompt("What is 2+3?", &g_np);
    st_set_threads(2);
    return 0;
}

static int teardown(void **st) {
    free(g_prompt);
    st_budget_free(g_L); st_budget_free(g_M); st_budget_free(g_S); st_budget_free(g_Mx);
    st_tokenizer_free(g_tok);
    st_model_free(g_m);
    rm_rf(g_tmp);
    free(g_tmp);
    return 0;
}

static st_gen_params greedy(const st_budget *answer) {
    st_gen_params p = st_gen_default_params();
    p.sampling.temperature = 0;
    p.answer_with = answer;
    p.thinking = 1;
    p.max_tokens = 64;
    return p;
}

static st_gen *gen(const st_gen_params *p, const int32_t *prompt, int n, st_pcache *c) {
    st_gen *g = NULL;
    st_status rc = st_gen_new(g_m, g_tok, p, prompt, n, 0, c, NULL, NULL, &g);
    if (rc) fail_msg("st_gen_new: %s", st_last_error());
    if (st_gen_run(g)) fail_msg("st_gen_run: %s", st_last_error());
    return g;
}

static int has_nl(int32_t t) {
    char b[64];
    int n = st_token_bytes(g_tok, t, b, sizeof b);
    return n > 0 && memchr(b, '\n', (size_t)n) != NULL;
}

/* ---------------------------------------------------------------- speculative decoding */

/* p with drafter d (a budget, or NULL with ngram) gives exactly the tokens,
 * texts and finish of p without one. Returns the drafter's stats. */
static st_gen_stats spec_same_on(const st_model *m, const st_tokenizer *tok, st_gen_params p, const st_budget *d,
                                 int ngram, int k, const int32_t *prompt, int n, int max_ctx) {
    st_gen *a = NULL, *b = NULL;
    if (st_gen_new(m, tok, &p, prompt, n, max_ctx, NULL, NULL, NULL, &a) || st_gen_run(a))
        fail_msg("plain: %s", st_last_error());
    p.draft = d;
    p.draft_ngram = ngram;
    p.draft_n = k;
    p.draft_fixed = 1;
    if (st_gen_new(m, tok, &p, prompt, n, max_ctx, NULL, NULL, NULL, &b) || st_gen_run(b))
        fail_msg("speculative: %s", st_last_error());
    int na, nb;
    const int32_t *ta = st_gen_tokens(a, &na), *tb = st_gen_tokens(b, &nb);
    if (na != nb || memcmp(ta, tb, sizeof(int32_t) * (size_t)na))
        fail_msg("drafter %s k=%d: %d tokens vs %d without drafting", d ? d->name : "ngram", k, nb, na);
    for (int t = 0; t < 3; t++) assert_string_equal(st_gen_text(a, (st_text_kind)t, NULL), st_gen_text(b, (st_text_kind)t, NULL));
    const st_gen_stats *sa = st_gen_get_stats(a), *sb = st_gen_get_stats(b);
    assert_int_equal(sa->finish, sb->finish);
    assert_int_equal(sa->think_tokens, sb->think_tokens);
    assert_int_equal(sa->completion_tokens, sb->completion_tokens);
    st_gen_stats out = *sb;
    st_gen_free(a);
    st_gen_free(b);
    return out;
}

static st_gen_stats spec_same(st_gen_params p, const st_budget *d, int ngram, int k, const int32_t *prompt, int n,
                              int max_ctx) {
    return spec_same_on(g_m, g_tok, p, d, ngram, k, prompt, n, max_ctx);
}

/* The shipped elastic model (a real text model: its small budget agrees with
 * the full one often but not always, so drafts are accepted in part): the
 * nested self-drafter and prompt lookup, with and without thinking. */
static void test_speculative_shipped(void **st) {
    st_model *m;
    st_tokenizer *tok;
    if (st_model_load("models/elastic", &m)) { print_message("models/elastic not present: skipped\n"); return; }
    assert_int_equal(st_tokenizer_load("models/elastic/tokenizer.json", &tok), ST_OK);
    st_budget *full, *small;
    assert_int_equal(st_budget_by_name(m, "9.5M", &full), ST_OK);
    assert_int_equal(st_budget_by_name(m, "4M", &small), ST_OK);
    const char *qs[3] = {"What is 47 + 38?", "Sort 9 3 7 1.", "Tell me about the sea."};
    int acc = 0, prop = 0, partial = 0;
    for (int q = 0; q < (test_quick() ? 1 : 3); q++) {
        st_chat_msg msg = {"user", qs[q], NULL};
        for (int think = 0; think < 2; think++) {
            char *text;
            int32_t *ids;
            int n;
            assert_int_equal(st_chat_render(&msg, 1, 1, think, &text), ST_OK);
            assert_int_equal(st_tokenize(tok, text, strlen(text), 1, &ids, &n), ST_OK);
            free(text);
            st_gen_params p = st_gen_default_params();
            p.sampling.temperature = 0;
            p.answer_with = full;
            p.thinking = think;
            p.max_tokens = 96;
            for (int k = 2; k <= 6; k += 4) {
                st_gen_stats s = spec_same_on(m, tok, p, small, 0, k, ids, n, 0);
                acc += s.draft_accepted;
                prop += s.draft_proposed;
                partial += s.draft_accepted > 0 && s.draft_accepted < s.draft_proposed;
                s = spec_same_on(m, tok, p, NULL, 1, k, ids, n, 0);
                acc += s.draft_accepted;
                prop += s.draft_proposed;
            }
            free(ids);
        }
    }
    print_message("shipped model: %d of %d drafted tokens accepted, output identical\n", acc, prop);
    assert_true(acc > 0 && acc < prop && partial > 0);
    st_budget_free(full);
    st_budget_free(small);
    st_tokenizer_free(tok);
    st_model_free(m);
}

static void test_speculative_greedy_identical(void **st) {
    int n2;
    int32_t *p2 = chat_prompt("Tell me about rivers and rivers and rivers.", &n2);
    int tot_acc = 0, tot_rej = 0;
    for (int k = 1; k <= 8; k += (k < 4 ? 1 : 4)) {
        /* drafting with the target itself: everything accepted */
        st_gen_params p = greedy(g_L);
        p.thinking = 0;
        p.max_tokens = 40;
        st_gen_stats s = spec_same(p, g_L, 0, k, g_prompt, g_np, 0);
        assert_true(s.draft_proposed > 0 && s.draft_accepted == s.draft_proposed);
        /* a smaller budget and prompt lookup: some rejected */
        s = spec_same(p, g_S, 0, k, p2, n2, 0);
        tot_acc += s.draft_accepted;
        tot_rej += s.draft_proposed - s.draft_accepted;
        s = spec_same(p, NULL, 1, k, p2, n2, 0);
        tot_acc += s.draft_accepted;
        tot_rej += s.draft_proposed - s.draft_accepted;
        /* thinking with a budget close, a think -> answer switch, a stop string */
        p = greedy(g_L);
        p.think_budget = 5;
        p.think_grace = 2;
        p.think_message = "Answer now.";
        p.think_with = g_S;
        spec_same(p, g_S, 0, k, g_prompt, g_np, 0);
        p.mode = ST_SWITCH_TRANSPLANT;
        p.think_with = g_Mx;
        p.answer_with = g_M;
        spec_same(p, g_S, 0, k, g_prompt, g_np, 0);
        p = greedy(g_M);
        p.thinking = 0;
        p.stop[0] = "e";
        p.n_stop = 1;
        spec_same(p, NULL, 1, k, p2, n2, 0);
        /* limits inside a drafted run: max_tokens and the context */
        p = greedy(g_L);
        p.thinking = 0;
        p.max_tokens = 7;
        spec_same(p, g_L, 0, k, g_prompt, g_np, 0);
        p.max_tokens = 64;
        spec_same(p, g_L, 0, k, g_prompt, g_np, g_np + 9);
    }
    print_message("speculative: %d drafted tokens accepted, %d rejected, output identical\n", tot_acc, tot_rej);
    assert_true(tot_rej > 0);
    free(p2);
}

/* Two-sample chi-square statistic of token counts a[], b[] (n draws each),
 * bins with fewer than 10 expected merged into one; *df its degrees. */
static double chi2(const int *a, const int *b, int V, int *df) {
    double x = 0, ra = 0, rb = 0;
    int bins = 0;
    for (int t = 0; t < V; t++) {
        if (a[t] + b[t] < 20) { ra += a[t]; rb += b[t]; continue; }
        x += (double)(a[t] - b[t]) * (a[t] - b[t]) / (a[t] + b[t]);
        bins++;
    }
    if (ra + rb > 0) { x += (ra - rb) * (ra - rb) / (ra + rb); bins++; }
    *df = bins - 1;
    return x;
}

/* The chi-square value a statistic exceeds with probability 1e-4 (Wilson-Hilferty). */
static double chi2_crit(int df) {
    const double z = 3.719, h = 2.0 / (9.0 * df);
    return df * pow(1 - h + z * sqrt(h), 3);
}

/* Speculative sampling keeps the target's distribution: the 2nd, 3rd and 4th
 * sampled tokens (all after drafted ones) over many seeds, with the S budget
 * drafting for L (and prompt lookup, which rarely finds anything to draft on
 * this random model), against L sampling alone; and the test can tell
 * distributions apart (L against S alone differs; not asserted in the short
 * sanitizer run, whose sample is too small for it). */
static void test_speculative_sampling_distribution(void **st) {
    const int N = test_quick() ? 600 : 3000, V = g_V;
    int *cnt[4][3];
    for (int c = 0; c < 4; c++)
        for (int k = 0; k < 3; k++) cnt[c][k] = calloc((size_t)V, sizeof(int));
    int acc = 0, prop = 0;
    for (int c = 0; c < 4; c++) { /* 0: L alone, 1: L drafted by S, 2: L drafted by lookup, 3: S alone */
        for (int i = 0; i < N; i++) {
            st_gen_params p = st_gen_default_params();
            p.answer_with = c == 3 ? g_S : g_L;
            p.max_tokens = 4;
            p.ignore_eos = 1;
            p.sampling.temperature = 1.0f;
            p.sampling.top_k = 0;
            p.sampling.top_p = 1.0f;
            p.sampling.min_p = 0.0f;
            p.sampling.seed = 1000 + (uint64_t)i * 7919;
            if (c == 1) p.draft = g_S;
            if (c == 2) p.draft_ngram = 1;
            p.draft_n = 3;
            p.draft_fixed = 1;
            st_gen *g = gen(&p, g_prompt, 8, NULL);
            int n;
            const int32_t *t = st_gen_tokens(g, &n);
            assert_int_equal(n, 4);
            for (int k = 0; k < 3; k++) cnt[c][k][t[k + 1]]++;
            if (c == 1) { acc += st_gen_get_stats(g)->draft_accepted; prop += st_gen_get_stats(g)->draft_proposed; }
            st_gen_free(g);
        }
    }
    if (test_quick()) /* too few draws per token: test the law on 16 classes of ids instead */
        for (int c = 0; c < 4; c++)
            for (int k = 0; k < 3; k++)
                for (int t = 16; t < V; t++) { cnt[c][k][t % 16] += cnt[c][k][t]; cnt[c][k][t] = 0; }
    for (int k = 0; k < 3; k++) {
        int df1, df2, df3;
        const double x1 = chi2(cnt[0][k], cnt[1][k], V, &df1), x2 = chi2(cnt[0][k], cnt[2][k], V, &df2),
                     x3 = chi2(cnt[0][k], cnt[3][k], V, &df3);
        print_message("token %d: chi2 L vs L+draft S %.0f (df %d, crit %.0f), vs L+lookup %.0f (df %d), "
                      "L vs S alone %.0f (df %d)\n", k + 2, x1, df1, chi2_crit(df1), x2, df2, x3, df3);
        assert_true(df1 >= 8 && x1 < chi2_crit(df1));
        assert_true(df2 < 1 || x2 < chi2_crit(df2));
        if (!test_quick()) assert_true(x3 > chi2_crit(df3)); /* the test has the power to see a different law */
    }
    print_message("S drafting for L: %d of %d drafted tokens accepted\n", acc, prop);
    assert_true(acc > 0 && acc < prop);
    for (int c = 0; c < 4; c++)
        for (int k = 0; k < 3; k++) free(cnt[c][k]);
}

static void test_speculative_refused(void **st) {
    st_gen_params p = greedy(g_L);
    p.draft = g_S;
    p.draft_n = 9;
    assert_int_equal(st_gen_check(g_m, &p), ST_ERR_RANGE);
    p.draft_n = 4;
    p.draft_ngram = 1;
    assert_int_equal(st_gen_check(g_m, &p), ST_ERR_ARG);
    p.draft_ngram = 0;
    assert_int_equal(st_gen_check(g_m, &p), ST_OK);
}

/* ---------------------------------------------------------------- think budget */

static void test_think_budget_exact(void **st) {
    /* the uncapped thought, as reference (no natural close before 12 tokens) */
    st_gen_params p = greedy(g_L);
    p.max_tokens = 24;
    st_gen *ref = gen(&p, g_prompt, g_np, NULL);
    int nref;
    const int32_t *r = st_gen_tokens(ref, &nref);
    assert_true(st_gen_get_stats(ref)->think_sampled >= 12);
    for (int N = 0; N <= 12; N++) {
        p.think_budget = N;
        p.think_grace = 0;
        st_gen *g = gen(&p, g_prompt, g_np, NULL);
        const st_gen_stats *s = st_gen_get_stats(g);
        int n;
        const int32_t *t = st_gen_tokens(g, &n);
        assert_int_equal(s->think_sampled, N);
        assert_int_equal(s->forced_close, 1);
        assert_memory_equal(t, r, sizeof(int32_t) * (size_t)N);
        int k = N;
        if (N > 0 && !has_nl(r[N - 1])) assert_int_equal(t[k++], g_nl); /* the line break before the tag */
        assert_int_equal(t[k++], st_token_id(g_tok, "</think>"));
        assert_int_equal(t[k++], g_nl);
        assert_int_equal(s->think_tokens, k - 2);
        assert_string_equal(st_gen_text(g, ST_TEXT_CONTROL, NULL), "</think>\n");
        st_gen_free(g);
    }
    st_gen_free(ref);
}

static void test_think_message(void **st) {
    st_gen_params p = greedy(g_L);
    p.think_budget = 4;
    p.think_grace = 0;
    p.think_message = "Time's up.";
    st_gen *g = gen(&p, g_prompt, g_np, NULL);
    const char *r = st_gen_text(g, ST_TEXT_REASONING, NULL);
    size_t n = strlen(r);
    assert_true(n >= 12);
    assert_string_equal(r + n - 12, "\nTime's up.\n");
    assert_int_equal(st_gen_get_stats(g)->think_sampled, 4);
    int nt;
    const int32_t *t = st_gen_tokens(g, &nt);
    int32_t *msg;
    int nm;
    assert_int_equal(st_tokenize(g_tok, "Time's up.\n", 11, 0, &msg, &nm), ST_OK);
    assert_memory_equal(t + 5, msg, sizeof(int32_t) * (size_t)nm);
    assert_int_equal(t[5 + nm], st_token_id(g_tok, "</think>"));
    free(msg);
    st_gen_free(g);
}

/* Grace: with a line-break-loving bias, the close lands right after the first
 * line break at or past the cap, or at cap + grace. */
static void test_think_grace(void **st) {
    int32_t bid = g_nl;
    float bv = 3.0f;
    st_gen_params p = greedy(g_L);
    p.bias_ids = &bid;
    p.bias = &bv;
    p.n_bias = 1;
    p.max_tokens = 80;
    p.sampling.temperature = 1.0f; /* seeded, deterministic */
    p.sampling.top_k = 0; p.sampling.top_p = 1; p.sampling.min_p = 0;
    p.sampling.seed = 5;
    int checked_nl = 0, checked_cap = 0;
    for (uint64_t seed = 1; seed <= 12; seed++) {
        p.sampling.seed = seed;
        p.think_budget = -1;
        st_gen *ref = gen(&p, g_prompt, g_np, NULL);
        int nr;
        const int32_t *r = st_gen_tokens(ref, &nr);
        int ns = st_gen_get_stats(ref)->think_sampled;
        for (int N = 2; N <= 10; N += 4) {
            for (int G = 0; G <= 6; G += 3) {
                /* expected: first k >= N with a line break ending token k-1, else N + G */
                int k = N;
                while (k < N + G && !has_nl(r[k - 1])) k++;
                if (k >= ns) continue; /* the model closed by itself first */
                p.think_budget = N;
                p.think_grace = G;
                st_gen *g = gen(&p, g_prompt, g_np, NULL);
                const st_gen_stats *s = st_gen_get_stats(g);
                int n;
                const int32_t *t = st_gen_tokens(g, &n);
                assert_int_equal(s->think_sampled, k);
                assert_memory_equal(t, r, sizeof(int32_t) * (size_t)k);
                if (has_nl(r[k - 1])) { checked_nl++; assert_int_equal(t[k], st_token_id(g_tok, "</think>")); }
                else { checked_cap++; assert_int_equal(k, N + G); assert_int_equal(t[k], g_nl); }
                st_gen_free(g);
                p.think_budget = -1;
            }
        }
        st_gen_free(ref);
    }
    assert_true(checked_nl > 0 && checked_cap > 0);
}

/* ---------------------------------------------------------------- budget switch */

static float *scratch_logits(const st_budget *b, const int32_t *a, int na, const int32_t *t, int nt) {
    st_state *s;
    float *l = malloc(sizeof(float) * (size_t)g_V);
    assert_int_equal(st_state_new(g_m, 0, &s), ST_OK);
    assert_int_equal(st_forward(b, s, a, na, l, 0), ST_OK);
    if (nt) assert_int_equal(st_forward(b, s, t, nt, l, 0), ST_OK);
    st_state_free(s);
    return l;
}

static void test_switch_exact(void **st) {
    const st_budget *pairs[][2] = {{g_S, g_L}, {g_M, g_L}, {g_L, g_M}, {g_L, g_S}};
    for (int i = 0; i < 4; i++) {
        st_gen_params p = greedy(pairs[i][1]);
        p.think_with = pairs[i][0];
        p.think_budget = 6;
        p.think_grace = 0;
        p.max_tokens = 6 + 3; /* stop right after the switch: logits untouched */
        st_gen *g = gen(&p, g_prompt, g_np, NULL);
        const st_gen_stats *s = st_gen_get_stats(g);
        int n;
        const int32_t *t = st_gen_tokens(g, &n);
        assert_int_equal(s->switched, 1);
        assert_int_equal(s->switch_tokens, g_np + n);
        assert_string_equal(st_gen_budget_name(g), st_budget_name(pairs[i][1]));
        float *ref = scratch_logits(pairs[i][1], g_prompt, g_np, t, n);
        const float *l = st_gen_logits(g);
        assert_non_null(l);
        double d = max_abs_diff(l, ref, (size_t)g_V);
        if (!(d <= 1e-5)) fail_msg("exact switch %d: max |dlogit| %g", i, d);
        /* and the answer continues as a greedy decode of the answer budget */
        p.max_tokens = 6 + 3 + 5;
        st_gen *g2 = gen(&p, g_prompt, g_np, NULL);
        int n2;
        const int32_t *t2 = st_gen_tokens(g2, &n2);
        assert_memory_equal(t2, t, sizeof(int32_t) * (size_t)n);
        float *l2 = scratch_logits(pairs[i][1], g_prompt, g_np, t2, n2 - 1);
        int32_t best = 0;
        for (int v = 1; v < g_V; v++) if (l2[v] > l2[best]) best = v;
        if (st_gen_get_stats(g2)->finish == ST_FINISH_LENGTH) assert_int_equal(t2[n2 - 1], best);
        free(ref); free(l2);
        st_gen_free(g); st_gen_free(g2);
    }
}

/* A generation that stops right after the think -> answer switch (the
 * logits then are the switch's): run once to learn how many tokens the close
 * takes, then again with max_tokens just past it. */
static st_gen *gen_to_switch(st_gen_params *p) {
    p->max_tokens = 60;
    st_gen *g = gen(p, g_prompt, g_np, NULL);
    p->max_tokens = st_gen_get_stats(g)->think_tokens + 2;
    st_gen_free(g);
    g = gen(p, g_prompt, g_np, NULL);
    assert_int_equal(st_gen_get_stats(g)->switched, 1);
    return g;
}

/* reread: transplant at the start of the thought's last line, then the
 * answer budget reads from there itself. Checked against a hand-made state:
 * the thinking budget over the prompt and the thought up to that line start,
 * transplanted, then the answer budget over the rest and the close. */
static void test_switch_reread(void **st) {
    st_gen_params p = greedy(g_M);
    p.think_with = g_L;
    p.mode = ST_SWITCH_REREAD;
    st_gen *g = NULL;
    assert_int_equal(st_gen_new(g_m, g_tok, &p, g_prompt, g_np, 0, NULL, NULL, NULL, &g), ST_ERR_BUDGET);
    assert_null(g);
    assert_int_equal(st_switch_mode_parse("reread"), ST_SWITCH_REREAD);
    assert_string_equal(st_switch_mode_name(ST_SWITCH_TRANSPLANT), "transplant");
    assert_int_equal(st_switch_mode_parse("Reread"), -1);
    p.think_with = g_M;
    p.answer_with = g_Mx;
    p.think_grace = 0;
    p.think_message = "ok";
    /* a random model rarely writes a line break: bias it toward one */
    int32_t *nl;
    int n_nl;
    assert_int_equal(st_tokenize(g_tok, "\n", 1, 0, &nl, &n_nl), ST_OK);
    assert_int_equal(n_nl, 1);
    float nl_bias = 3.0f;
    p.bias_ids = nl;
    p.bias = &nl_bias;
    p.n_bias = 1;
    int lines_seen = 0;
    for (int budget = 0; budget <= 24; budget += 3) {
        p.think_budget = budget;
        g = gen_to_switch(&p);
        const st_gen_stats *s = st_gen_get_stats(g);
        int n;
        const int32_t *t = st_gen_tokens(g, &n);
        /* the sampled thought t[0..nS) was fed at M; its line starts are 0 and
         * every position after a token holding a line break */
        const int nS = s->think_sampled;
        int at = 0;
        for (int i = 0; i < nS; i++) {
            char b[64];
            int nb = st_token_bytes(g_tok, t[i], b, sizeof b);
            if (nb > 0 && memchr(b, '\n', (size_t)nb) && i + 1 < nS) at = i + 1;
        }
        lines_seen += at > 0;
        assert_int_equal(s->switch_tokens, n - at);
        st_state *hs;
        float *l = malloc(sizeof(float) * (size_t)g_V);
        assert_int_equal(st_state_new(g_m, 0, &hs), ST_OK);
        assert_int_equal(st_forward(g_M, hs, g_prompt, g_np, NULL, 0), ST_OK);
        if (at) assert_int_equal(st_forward(g_M, hs, t, at, NULL, 0), ST_OK);
        assert_int_equal(st_state_transplant(hs, g_Mx), ST_OK);
        assert_int_equal(st_forward(g_Mx, hs, t + at, n - at, l, 0), ST_OK);
        double d = max_abs_diff(l, st_gen_logits(g), (size_t)g_V);
        if (!(d <= 1e-5)) fail_msg("reread, think budget %d (line start %d of %d): max |dlogit| %g", budget, at, n, d);
        st_state_free(hs);
        free(l);
        st_gen_free(g);
    }
    print_message("reread: %d of 9 thoughts re-read from a line start inside them\n", lines_seen);
    assert_true(lines_seen > 2);
    free(nl);
}

static void test_switch_transplant(void **st) {
    st_gen_params p = greedy(g_M);
    p.think_with = g_L;
    p.mode = ST_SWITCH_TRANSPLANT;
    st_gen *g = NULL;
    assert_int_equal(st_gen_new(g_m, g_tok, &p, g_prompt, g_np, 0, NULL, NULL, NULL, &g), ST_ERR_BUDGET);
    assert_null(g);
    assert_non_null(strstr(st_last_error(), "Mamba heads"));
    assert_non_null(strstr(st_last_error(), "exact"));
    /* M -> Mx keeps the Mamba widths: allowed, and equal to a hand transplant */
    p.think_with = g_M;
    p.answer_with = g_Mx;
    p.think_budget = 5;
    p.think_grace = 0;
    p.think_message = "ok";
    g = gen_to_switch(&p);
    int n;
    const int32_t *t = st_gen_tokens(g, &n);
    int nC = 2; /* </think> \n */
    st_state *hs;
    float *l = malloc(sizeof(float) * (size_t)g_V);
    assert_int_equal(st_state_new(g_m, 0, &hs), ST_OK);
    assert_int_equal(st_forward(g_M, hs, g_prompt, g_np, NULL, 0), ST_OK);
    assert_int_equal(st_forward(g_M, hs, t, n - nC, NULL, 0), ST_OK);
    assert_int_equal(st_state_transplant(hs, g_Mx), ST_OK);
    assert_int_equal(st_forward(g_Mx, hs, t + n - nC, nC, l, 0), ST_OK);
    double d = max_abs_diff(l, st_gen_logits(g), (size_t)g_V);
    if (!(d <= 1e-5)) fail_msg("transplant: max |dlogit| %g", d);
    /* the exact mode gives other logits (the answer budget re-reads the thought) */
    p.mode = ST_SWITCH_EXACT;
    st_gen *ge = gen(&p, g_prompt, g_np, NULL);
    assert_true(max_abs_diff(st_gen_logits(ge), st_gen_logits(g), (size_t)g_V) > 1e-4);
    st_state_free(hs);
    free(l);
    st_gen_free(g); st_gen_free(ge);
}

/* ---------------------------------------------------------------- text */

typedef struct { char buf[3][8192]; size_t n[3]; int pieces; int bad_utf8; } sink;

static int valid_utf8(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned b = s[i];
        size_t k = b < 0x80 ? 1 : b >= 0xC2 && b <= 0xDF ? 2 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xF0 && b <= 0xF4 ? 4 : 0;
        if (!k || i + k > n) return 0;
        for (size_t j = 1; j < k; j++) if ((s[i + j] & 0xC0) != 0x80) return 0;
        i += k;
    }
    return 1;
}

static int sink_fn(void *ud, st_text_kind k, const char *t, size_t n) {
    sink *s = ud;
    if (!valid_utf8((const unsigned char *)t, n)) s->bad_utf8++;
    memcpy(s->buf[k] + s->n[k], t, n);
    s->n[k] += n;
    s->pieces++;
    return 0;
}

static void test_stop_and_stream(void **st) {
    st_chat_msg msg = {"user", "tell me", NULL};
    char *text;
    int32_t *ids;
    int n;
    assert_int_equal(st_chat_render(&msg, 1, 1, 0, &text), ST_OK); /* thinking off */
    assert_int_equal(st_tokenize(g_tok, text, strlen(text), 1, &ids, &n), ST_OK);
    free(text);
    st_gen_params p = greedy(g_S);
    p.thinking = 0;
    p.max_tokens = 60;
    p.ignore_eos = 1;
    sink *sk = calloc(1, sizeof *sk);
    st_gen *g;
    assert_int_equal(st_gen_new(g_m, g_tok, &p, ids, n, 0, NULL, sink_fn, sk, &g), ST_OK);
    assert_int_equal(st_gen_run(g), ST_OK);
    size_t clen;
    const char *c = st_gen_text(g, ST_TEXT_CONTENT, &clen);
    assert_int_equal(sk->bad_utf8, 0);
    assert_int_equal(sk->n[ST_TEXT_CONTENT], clen);
    assert_memory_equal(sk->buf[ST_TEXT_CONTENT], c, clen);
    assert_int_equal(st_gen_get_stats(g)->finish, ST_FINISH_LENGTH);
    /* a stop string: two ASCII characters from the middle of the text */
    size_t at = 6;
    while (at + 1 < clen && !((unsigned char)c[at] - 1u < 0x7fu && (unsigned char)c[at + 1] - 1u < 0x7fu)) at++;
    assert_true(at + 1 < clen);
    char stop[3] = {c[at], c[at + 1], 0};
    size_t first = 0; /* first occurrence, NUL bytes and all */
    while (memcmp(c + first, stop, 2)) first++;
    p.stop[0] = "never-appears-here";
    p.stop[1] = stop;
    p.n_stop = 2;
    memset(sk, 0, sizeof *sk);
    st_gen *g2;
    assert_int_equal(st_gen_new(g_m, g_tok, &p, ids, n, 0, NULL, sink_fn, sk, &g2), ST_OK);
    assert_int_equal(st_gen_run(g2), ST_OK);
    assert_int_equal(st_gen_get_stats(g2)->finish, ST_FINISH_STOP);
    size_t c2len;
    const char *c2 = st_gen_text(g2, ST_TEXT_CONTENT, &c2len);
    assert_int_equal(c2len, first);
    assert_memory_equal(c2, c, first);
    assert_int_equal(sk->n[ST_TEXT_CONTENT], first);
    assert_int_equal(sk->bad_utf8, 0);
    st_gen_free(g); st_gen_free(g2);
    free(sk);
    free(ids);
}

/* ---------------------------------------------------------------- prompt cache */

static void test_cache_hits(void **st) {
    st_pcache *c;
    assert_int_equal(st_pcache_new((size_t)64 << 20, 8, &c), ST_OK);
    st_gen_params p = greedy(g_M);
    p.max_tokens = 12;
    st_gen *cold = gen(&p, g_prompt, g_np, NULL);
    st_gen *a = gen(&p, g_prompt, g_np, c); /* fills the cache */
    st_gen *b = gen(&p, g_prompt, g_np, c); /* hits it */
    assert_int_equal(st_gen_get_stats(a)->cached_tokens, 0);
    assert_int_equal(st_gen_get_stats(b)->cached_tokens, g_np);
    int n0, n1, n2;
    const int32_t *t0 = st_gen_tokens(cold, &n0), *t1 = st_gen_tokens(a, &n1), *t2 = st_gen_tokens(b, &n2);
    assert_int_equal(n0, n1);
    assert_int_equal(n0, n2);
    assert_memory_equal(t0, t1, sizeof(int32_t) * (size_t)n0);
    assert_memory_equal(t0, t2, sizeof(int32_t) * (size_t)n0);
    st_pcache_stats s;
    st_pcache_stats_get(c, &s);
    /* every 8 tokens, the end of each message (the empty system one and the
     * user's: the rendered messages alone, without the generation prompt), and
     * the prompt's end; positions that coincide are one snapshot */
    st_chat_msg user = {"user", "What is 2+3?", NULL};
    int ends[2] = {rendered_len(&user, 0), rendered_len(&user, 1)};
    int want = g_np / 8 + (g_np % 8 != 0);
    for (int i = 0; i < 2; i++) want += ends[i] % 8 != 0 && ends[i] < g_np;
    assert_true(ends[0] > 0 && ends[1] > ends[0] && ends[1] < g_np);
    assert_int_equal(s.entries, want);
    /* the next turn: the previous prompt is a prefix */
    st_chat_msg msgs[3] = {{"user", "What is 2+3?", NULL}, {"assistant", "5", NULL}, {"user", "And 4+4?", NULL}};
    char *text;
    int32_t *ids;
    int n;
    assert_int_equal(st_chat_render(msgs, 3, 1, 1, &text), ST_OK);
    assert_int_equal(st_tokenize(g_tok, text, strlen(text), 1, &ids, &n), ST_OK);
    free(text);
    /* the longest stored prefix: the end of the first user message or a later
     * interval snapshot (the rendered history differs after the shared part) */
    int shared = 0;
    while (shared < g_np && shared < n && ids[shared] == g_prompt[shared]) shared++;
    assert_true(shared >= ends[1]);
    st_gen *c2 = gen(&p, ids, n, NULL);
    st_gen *w2 = gen(&p, ids, n, c);
    assert_int_equal(st_gen_get_stats(w2)->cached_tokens, shared / 8 * 8 > ends[1] ? shared / 8 * 8 : ends[1]);
    int m1, m2;
    const int32_t *u1 = st_gen_tokens(c2, &m1), *u2 = st_gen_tokens(w2, &m2);
    assert_int_equal(m1, m2);
    assert_memory_equal(u1, u2, sizeof(int32_t) * (size_t)m1);
    /* a turn end that closes a prefill chunk is kept too: chunks of exactly
     * the first message's length, no interval snapshots */
    {
        st_pcache *c1;
        assert_int_equal(st_pcache_new((size_t)64 << 20, 0, &c1), ST_OK);
        st_gen_params pc = p;
        pc.prefill_chunk = ends[1];
        st_gen_free(gen(&pc, g_prompt, g_np, c1));
        st_pcache_stats_get(c1, &s);
        assert_int_equal(s.entries, 3); /* system end (inside the pass), user end (the chunk's end), prompt end */
        st_gen *h = gen(&p, ids, n, c1);
        assert_int_equal(st_gen_get_stats(h)->cached_tokens, ends[1]);
        st_gen_free(h);
        st_pcache_free(c1);
    }
    /* another budget never sees M's snapshots */
    p.answer_with = g_S;
    st_gen *sb = gen(&p, g_prompt, g_np, c);
    assert_int_equal(st_gen_get_stats(sb)->cached_tokens, 0);
    /* exact switch: the answer budget's prompt state is stored once and reused */
    p.answer_with = g_L;
    p.think_with = g_S;
    p.think_budget = 2;
    p.think_grace = 0;
    st_gen *x1 = gen(&p, g_prompt, g_np, c);
    st_pcache_stats_get(c, &s);
    uint64_t hits = s.hits;
    st_gen *x2 = gen(&p, g_prompt, g_np, c);
    st_pcache_stats_get(c, &s);
    assert_int_equal(s.hits, hits + 2); /* S prompt + L prompt */
    int k1, k2;
    const int32_t *v1 = st_gen_tokens(x1, &k1), *v2 = st_gen_tokens(x2, &k2);
    assert_int_equal(k1, k2);
    assert_memory_equal(v1, v2, sizeof(int32_t) * (size_t)k1);
    st_gen_free(x1); st_gen_free(x2); st_gen_free(sb);
    st_gen_free(cold); st_gen_free(a); st_gen_free(b); st_gen_free(c2); st_gen_free(w2);
    free(ids);
    st_pcache_free(c);
}

/* max |a-b| / max |b| over n floats must be below tol */
static void close_to(const float *a, const float *b, size_t n, double tol, const char *what) {
    double e = rel_err(a, b, n);
    if (!(e < tol)) fail_msg("%s: relative error %.3g (tolerance %.1g)", what, e, tol);
}

/* Two states hold the same thing: position, budget, every conv/SSM value
 * and the KV rows in use. Not bit for bit: a pass over T tokens rounds its
 * matrix products differently for different T (the kernels block by rows),
 * so stopping at a position and passing over it differ in the last bits. */
static void same_state(const st_state *a, const st_state *b) {
    const st_config *c = st_model_config(g_m);
    size_t din = (size_t)c->mamba_num_heads * (size_t)c->mamba_head_dim;
    size_t conv = (size_t)(c->conv_kernel - 1) * (din + 2 * (size_t)c->n_groups * (size_t)c->ssm_state_size);
    size_t ssm = din * (size_t)c->ssm_state_size, row = (size_t)c->num_key_value_heads * (size_t)c->head_dim;
    assert_int_equal(a->pos, b->pos);
    assert_string_equal(a->budget_key, b->budget_key);
    for (int i = 0; i < g_m->n_mamba; i++) {
        close_to(a->conv[i], b->conv[i], conv, 1e-5, "conv state");
        close_to(a->ssm[i], b->ssm[i], ssm, 1e-5, "SSM state");
    }
    for (int i = 0; i < g_m->n_attn && a->pos; i++) {
        close_to(a->k_cache[i], b->k_cache[i], row * (size_t)a->pos, 1e-5, "K cache");
        close_to(a->v_cache[i], b->v_cache[i], row * (size_t)a->pos, 1e-5, "V cache");
    }
}

/* A snapshot taken inside a pass equals stopping the pass there, at a budget
 * that cuts Mamba heads and channels (the uncut parts must stay as they
 * were) and from a state that already holds tokens. */
static void test_forward_snap(void **st) {
    const st_budget *bs[2] = {g_L, g_S};
    for (int bi = 0; bi < 2; bi++) {
        const st_budget *b = bs[bi];
        st_state *whole, *split, *snap[2];
        assert_int_equal(st_state_new(g_m, 0, &whole), ST_OK);
        assert_int_equal(st_state_new(g_m, 0, &split), ST_OK);
        assert_int_equal(st_state_new(g_m, 0, &snap[0]), ST_OK);
        assert_int_equal(st_state_new(g_m, 0, &snap[1]), ST_OK);
        const int pre = 5, n = g_np - pre, at[2] = {3, n / 2};
        assert_true(n / 2 > 3);
        assert_int_equal(st_forward(b, whole, g_prompt, pre, NULL, 0), ST_OK);
        assert_int_equal(st_forward(b, split, g_prompt, pre, NULL, 0), ST_OK);
        float *la = malloc(sizeof(float) * (size_t)g_V), *lb = malloc(sizeof(float) * (size_t)g_V);
        assert_int_equal(st_forward_snap(b, whole, g_prompt + pre, n, la, 0, at, 2, snap, 0), ST_OK);
        assert_int_equal(st_forward(b, split, g_prompt + pre, at[0], NULL, 0), ST_OK);
        same_state(snap[0], split);
        assert_int_equal(st_forward(b, split, g_prompt + pre + at[0], at[1] - at[0], NULL, 0), ST_OK);
        same_state(snap[1], split);
        assert_int_equal(st_forward(b, split, g_prompt + pre + at[1], n - at[1], lb, 0), ST_OK);
        same_state(whole, split);
        close_to(la, lb, (size_t)g_V, 1e-5, "logits");
        /* marks out of order or at the end are refused */
        const int bad[2] = {4, 4};
        assert_int_equal(st_forward_snap(b, whole, g_prompt, 8, NULL, 0, bad, 2, snap, 0), ST_ERR_ARG);
        const int end[1] = {8};
        assert_int_equal(st_forward_snap(b, whole, g_prompt, 8, NULL, 0, end, 1, snap, 0), ST_ERR_ARG);
        /* recurrent snapshots (speculative decoding's rollback points: no KV
         * rows) restored into the state that took them give the state at
         * the mark, and decoding on from there gives the same logits */
        st_state *w2, *ref;
        assert_int_equal(st_state_new(g_m, 0, &w2), ST_OK);
        assert_int_equal(st_state_new(g_m, 0, &ref), ST_OK);
        assert_int_equal(st_forward(b, w2, g_prompt, pre, NULL, 0), ST_OK);
        assert_int_equal(st_forward(b, ref, g_prompt, pre, NULL, 0), ST_OK);
        for (int k = 1; k >= 0; k--) { /* later mark first: each restore goes back further */
            assert_int_equal(st_forward_snap(b, w2, g_prompt + pre, n, NULL, 0, at, 2, snap, 1), ST_OK);
            same_state(w2, whole);
            assert_int_equal(st_state_copy_recurrent(w2, snap[k]), ST_OK);
            assert_int_equal(st_state_pos(w2), pre + at[k]);
            assert_int_equal(st_state_copy(split, ref), ST_OK);
            assert_int_equal(st_forward(b, split, g_prompt + pre, at[k], NULL, 0), ST_OK);
            same_state(w2, split);
            memset(lb, 0, sizeof(float) * (size_t)g_V);
            assert_int_equal(st_forward(b, w2, g_prompt + pre + at[k], n - at[k], lb, 0), ST_OK);
            close_to(la, lb, (size_t)g_V, 1e-5, "logits after a rollback");
            assert_int_equal(st_state_copy(w2, ref), ST_OK);
        }
        st_state_free(w2); st_state_free(ref);
        free(la); free(lb);
        st_state_free(whole); st_state_free(split); st_state_free(snap[0]); st_state_free(snap[1]);
    }
}

static void test_cache_evicts(void **st) {
    /* size one snapshot, then allow about 2.5 of them */
    st_state *s;
    assert_int_equal(st_state_new(g_m, 0, &s), ST_OK);
    int32_t toks[40];
    for (int i = 0; i < 40; i++) toks[i] = 20 + i;
    assert_int_equal(st_forward(g_S, s, toks, 40, NULL, 0), ST_OK);
    st_pcache *c;
    assert_int_equal(st_pcache_new((size_t)1 << 30, 0, &c), ST_OK);
    assert_int_equal(st_pcache_store(c, g_S, toks, 40, s, NULL), ST_OK);
    st_pcache_stats cs;
    st_pcache_stats_get(c, &cs);
    size_t one = cs.bytes;
    st_pcache_free(c);
    assert_int_equal(st_pcache_new(one * 5 / 2, 0, &c), ST_OK);
    st_state *w;
    assert_int_equal(st_state_new(g_m, 0, &w), ST_OK);
    int32_t q[41];
    memcpy(q, toks, sizeof toks);
    q[40] = 99;
    /* A, B stored; A used; C stored -> B (least recently used) goes */
    int32_t a[40], b[40], cc[40];
    memcpy(a, toks, sizeof a); memcpy(b, toks, sizeof b); memcpy(cc, toks, sizeof cc);
    b[0] = 21; cc[0] = 22;
    assert_int_equal(st_pcache_store(c, g_S, a, 40, s, NULL), ST_OK);
    assert_int_equal(st_pcache_store(c, g_S, b, 40, s, NULL), ST_OK);
    assert_int_equal(st_pcache_lookup(c, g_S, q, 41, w, NULL), 40);
    assert_int_equal(st_pcache_store(c, g_S, cc, 40, s, NULL), ST_OK);
    st_pcache_stats_get(c, &cs);
    assert_int_equal(cs.entries, 2);
    assert_true(cs.bytes <= cs.max_bytes);
    assert_int_equal(cs.evictions, 1);
    memcpy(q, b, sizeof b);
    assert_int_equal(st_pcache_lookup(c, g_S, q, 41, w, NULL), 0);
    memcpy(q, a, sizeof a);
    assert_int_equal(st_pcache_lookup(c, g_S, q, 41, w, NULL), 40);
    /* an exact-length entry without logits is not a full hit */
    assert_int_equal(st_pcache_lookup(c, g_S, a, 40, w, NULL), 0);
    /* the restored state continues like the original */
    float *l1 = malloc(sizeof(float) * (size_t)g_V), *l2 = malloc(sizeof(float) * (size_t)g_V);
    assert_int_equal(st_forward(g_S, w, q + 40, 1, l1, 0), ST_OK);
    assert_int_equal(st_forward(g_S, s, q + 40, 1, l2, 0), ST_OK);
    assert_memory_equal(l1, l2, sizeof(float) * (size_t)g_V);
    free(l1); free(l2);
    st_state_free(w);
    st_state_free(s);
    st_pcache_free(c);
}

static void test_bad_params(void **st) {
    st_gen_params p = greedy(NULL);
    st_gen *g = NULL;
    assert_int_equal(st_gen_new(g_m, g_tok, &p, g_prompt, g_np, 0, NULL, NULL, NULL, &g), ST_ERR_ARG);
    p.answer_with = g_L;
    p.n_stop = 1;
    p.stop[0] = "";
    assert_int_equal(st_gen_new(g_m, g_tok, &p, g_prompt, g_np, 0, NULL, NULL, NULL, &g), ST_ERR_ARG);
    p.n_stop = 0;
    assert_int_equal(st_gen_new(g_m, g_tok, &p, g_prompt, g_np, 8, NULL, NULL, NULL, &g), ST_ERR_RANGE);
    assert_non_null(strstr(st_last_error(), "context"));
    assert_int_equal(st_gen_new(g_m, g_tok, &p, g_prompt, 0, 0, NULL, NULL, NULL, &g), ST_ERR_ARG);
    assert_null(g);
    /* max_tokens 0: prefill only */
    p.max_tokens = 0;
    g = gen(&p, g_prompt, g_np, NULL);
    assert_int_equal(st_gen_get_stats(g)->completion_tokens, 0);
    assert_int_equal(st_gen_get_stats(g)->finish, ST_FINISH_LENGTH);
    st_gen_free(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_speculative_greedy_identical),
        cmocka_unit_test(test_speculative_refused),
        cmocka_unit_test(test_speculative_sampling_distribution),
        cmocka_unit_test(test_speculative_shipped),
        cmocka_unit_test(test_think_budget_exact), cmocka_unit_test(test_think_message),
        cmocka_unit_test(test_think_grace),        cmocka_unit_test(test_switch_exact),
        cmocka_unit_test(test_switch_transplant),
        cmocka_unit_test(test_switch_reread),  cmocka_unit_test(test_stop_and_stream),
        cmocka_unit_test(test_cache_hits),         cmocka_unit_test(test_cache_evicts),
        cmocka_unit_test(test_forward_snap),
        cmocka_unit_test(test_bad_params),
    };
    return cmocka_run_group_tests_name("gen", tests, setup, teardown);
}

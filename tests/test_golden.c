/*
 * test_golden.c — the engine against logits from two independent
 * implementations (a float64 numpy reference and llama.cpp), ../shared/golden.
 * Tolerance (golden/README.md): max|Δ| / max|ref| ≤ 1e-4 through batched
 * prefill, chunked prefill and one-token decode, for the full model and for
 * every budget (whose reference is the standalone sliced model).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "starling.h"
#include "util_test.h"

#define TOL 1e-4

typedef struct {
    const char *name;
    st_model *m;
    int32_t *tok;
    int n;
} fixture;

static int setup(void **state, const char *name) {
    fixture *f = calloc(1, sizeof *f);
    f->name = name;
    char p[512];
    snprintf(p, sizeof p, "%s/%s/model", golden_dir(), name);
    if (st_model_load(p, &f->m) != ST_OK) { fprintf(stderr, "load %s: %s\n", p, st_last_error()); free(f); return -1; }
    snprintf(p, sizeof p, "%s/%s/tokens.txt", golden_dir(), name);
    f->tok = read_tokens(p, &f->n);
    if (!f->tok || f->n != 64) { st_model_free(f->m); free(f); return -1; }
    *state = f;
    return 0;
}
static int setup_dense(void **s) { return setup(s, "dense_h"); }
static int setup_moe(void **s) { return setup(s, "moe_small"); }
static int setup_g3(void **s) { return setup(s, "moe_groups3"); }
static int teardown(void **state) {
    fixture *f = *state;
    st_model_free(f->m);
    free(f->tok);
    free(f);
    return 0;
}

/* Logits for all positions: chunk = 0 one batched prefill; chunk = 1 the
 * decode path token by token; else prefill in chunks of `chunk` tokens. */
static float *run_budget(fixture *f, st_budget *b, int chunk) {
    const int V = st_model_config(f->m)->vocab_size;
    float *out = malloc(sizeof(float) * (size_t)f->n * V);
    st_state *s;
    assert_int_equal(st_state_new(f->m, 0, &s), ST_OK);
    int step = chunk ? chunk : f->n;
    for (int i = 0; i < f->n; i += step) {
        int k = f->n - i < step ? f->n - i : step;
        st_status rc = st_forward(b, s, f->tok + i, k, out + (size_t)i * V, 1);
        if (rc) fail_msg("forward: %s", st_last_error());
    }
    assert_int_equal(st_state_pos(s), f->n);
    st_state_free(s);
    return out;
}

static void check_against(fixture *f, st_budget *b, const char *ref_rel, const char *what) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s/%s", golden_dir(), f->name, ref_rel);
    size_t nref;
    float *ref = read_f32(p, &nref);
    assert_non_null(ref);
    const int V = st_model_config(f->m)->vocab_size;
    assert_int_equal(nref, (size_t)f->n * V);
    int chunks[] = {0, 1, 5, 16};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        float *got = run_budget(f, b, chunks[c]);
        double e = rel_err(got, ref, nref);
        printf("  %-12s %-22s %-8s chunk=%-2d rel err %.2e\n", f->name, ref_rel, what, chunks[c], e);
        if (!(e <= TOL)) fail_msg("%s %s chunk %d: rel err %.3e > %.0e", f->name, ref_rel, chunks[c], e, TOL);
        free(got);
    }
    free(ref);
}

static void test_full(void **state) {
    fixture *f = *state;
    st_budget *b;
    assert_int_equal(st_budget_by_name(f->m, "full", &b), ST_OK);
    check_against(f, b, "logits.f32", "full");
    check_against(f, b, "logits_llamacpp.f32", "full");
    st_budget_free(b);
}

/* Every budgets/NAME.json against the sliced model's reference logits, with
 * the widths read from the file and (where the checkpoint names it) by name. */
static void test_budgets(void **state) {
    fixture *f = *state;
    static const char *names[] = {"M", "S", "depth"};
    int found = 0;
    for (int i = 0; i < 3; i++) {
        char p[512], rel[64];
        snprintf(p, sizeof p, "%s/%s/budgets/%s.json", golden_dir(), f->name, names[i]);
        FILE *fp = fopen(p, "r");
        if (!fp) continue;
        fclose(fp);
        found++;
        st_widths w;
        memset(&w, 0, sizeof w);
        assert_int_equal(st_widths_from_file(&w, p), ST_OK);
        st_budget *b;
        if (st_budget_new(f->m, &w, &b)) fail_msg("budget %s: %s", p, st_last_error());
        snprintf(rel, sizeof rel, "budgets/%s.logits.f32", names[i]);
        check_against(f, b, rel, names[i]);
        st_budget_free(b);
        /* the same widths by name from the elastic block, where present */
        for (int j = 0; j < st_model_n_budgets(f->m); j++) {
            if (strcmp(st_model_budget_name(f->m, j), names[i])) continue;
            assert_int_equal(st_budget_by_name(f->m, names[i], &b), ST_OK);
            float *a = run_budget(f, b, 0);
            size_t nref;
            float *ref = read_f32((snprintf(p, sizeof p, "%s/%s/%s", golden_dir(), f->name, rel), p), &nref);
            assert_true(rel_err(a, ref, nref) <= TOL);
            free(a); free(ref);
            st_budget_free(b);
        }
    }
    assert_true(found >= 1);
}

/* Two sequences at different budgets on one model, interleaved token by token,
 * each equal (bit for bit) to running it alone. */
static void test_interleaved(void **state) {
    fixture *f = *state;
    if (st_model_n_budgets(f->m) < 2) skip();
    const int V = st_model_config(f->m)->vocab_size;
    st_budget *b0, *b1;
    assert_int_equal(st_budget_by_name(f->m, "full", &b0), ST_OK);
    assert_int_equal(st_budget_by_name(f->m, st_model_budget_name(f->m, 1), &b1), ST_OK);
    float *alone0 = run_budget(f, b0, 1), *alone1 = run_budget(f, b1, 1);
    float *mix0 = malloc(sizeof(float) * (size_t)f->n * V), *mix1 = malloc(sizeof(float) * (size_t)f->n * V);
    st_state *s0, *s1;
    assert_int_equal(st_state_new(f->m, 0, &s0), ST_OK);
    assert_int_equal(st_state_new(f->m, 0, &s1), ST_OK);
    for (int i = 0; i < f->n; i++) {
        assert_int_equal(st_forward(b1, s1, f->tok + i, 1, mix1 + (size_t)i * V, 1), ST_OK);
        assert_int_equal(st_forward(b0, s0, f->tok + i, 1, mix0 + (size_t)i * V, 1), ST_OK);
    }
    assert_true(max_abs_diff(mix0, alone0, (size_t)f->n * V) == 0.0);
    assert_true(max_abs_diff(mix1, alone1, (size_t)f->n * V) == 0.0);
    /* and the budgets really differ */
    assert_true(max_abs_diff(alone0, alone1, (size_t)f->n * V) > 1e-3);
    /* a state computed at one budget is refused at another */
    assert_int_equal(st_forward(b0, s1, f->tok, 1, NULL, 0), ST_ERR_ARG);
    st_state_free(s0); st_state_free(s1);
    free(alone0); free(alone1); free(mix0); free(mix1);
    st_budget_free(b0); st_budget_free(b1);
}

/* Transplant: the state computed at M continues at S (same Mamba widths) and
 * matches running the transplanted budget over a state whose history was
 * computed at M; L -> M is refused (different Mamba heads). */
static void test_transplant(void **state) {
    fixture *f = *state;
    const int V = st_model_config(f->m)->vocab_size;
    st_budget *bl, *bm, *bs;
    assert_int_equal(st_budget_by_name(f->m, "L", &bl), ST_OK);
    assert_int_equal(st_budget_by_name(f->m, "M", &bm), ST_OK);
    assert_int_equal(st_budget_by_name(f->m, "S", &bs), ST_OK);
    st_state *s, *s2;
    assert_int_equal(st_state_new(f->m, 0, &s), ST_OK);
    assert_int_equal(st_state_new(f->m, 0, &s2), ST_OK);
    float *a = malloc(sizeof(float) * (size_t)V), *b = malloc(sizeof(float) * (size_t)V);
    assert_int_equal(st_forward(bm, s, f->tok, 32, NULL, 0), ST_OK);
    assert_string_equal(st_state_budget(s), "M");
    assert_int_equal(st_state_copy(s2, s), ST_OK);
    assert_int_equal(st_state_transplant(s, bs), ST_OK);
    assert_string_equal(st_state_budget(s), "S");
    assert_int_equal(st_forward(bs, s, f->tok + 32, 8, a, 0), ST_OK);
    /* without the transplant the budget switch is refused */
    assert_int_equal(st_forward(bs, s2, f->tok + 32, 8, b, 0), ST_ERR_ARG);
    /* transplanting to the same widths changes nothing */
    assert_int_equal(st_state_transplant(s2, bm), ST_OK);
    assert_int_equal(st_forward(bm, s2, f->tok + 32, 8, b, 0), ST_OK);
    assert_true(max_abs_diff(a, b, (size_t)V) > 0); /* S and M answer differently */
    /* L keeps 8 Mamba heads, M keeps 4: refused, state untouched */
    st_state_reset(s2);
    assert_int_equal(st_forward(bl, s2, f->tok, 4, NULL, 0), ST_OK);
    assert_int_equal(st_state_transplant(s2, bm), ST_ERR_BUDGET);
    assert_non_null(strstr(st_last_error(), "Mamba heads"));
    assert_string_equal(st_state_budget(s2), "L");
    free(a); free(b);
    st_state_free(s); st_state_free(s2);
    st_budget_free(bl); st_budget_free(bm); st_budget_free(bs);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_full, setup_dense, teardown),
        cmocka_unit_test_setup_teardown(test_budgets, setup_dense, teardown),
        cmocka_unit_test_setup_teardown(test_interleaved, setup_dense, teardown),
        cmocka_unit_test_setup_teardown(test_full, setup_moe, teardown),
        cmocka_unit_test_setup_teardown(test_budgets, setup_moe, teardown),
        cmocka_unit_test_setup_teardown(test_interleaved, setup_moe, teardown),
        cmocka_unit_test_setup_teardown(test_transplant, setup_moe, teardown),
        cmocka_unit_test_setup_teardown(test_full, setup_g3, teardown),
        cmocka_unit_test_setup_teardown(test_budgets, setup_g3, teardown),
    };
    return cmocka_run_group_tests_name("golden", tests, NULL, NULL);
}

/*
 * test_cli.c — the starling command end to end: `logits` (prefill and
 * --decode) against the golden reference files, `info` budgets, `run`
 * determinism (same seed → same text, greedy at two budgets), `tokenize`
 * round trip, and usage errors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util_test.h"

#include <jansson.h>
#include "util/util.h"
#include <math.h>

static char *g_tmp;
static char g_model[600];

static int setup(void **st) {
    g_tmp = test_tmpdir("cli");
    snprintf(g_model, sizeof g_model, "%s/default", g_tmp);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "%s synth --preset default -o %s 2>&1", starling_bin(), g_model);
    int status;
    char *out = run_capture(cmd, &status);
    if (status) fprintf(stderr, "%s\n", out);
    free(out);
    return status;
}
static int teardown(void **st) { rm_rf(g_tmp); free(g_tmp); return 0; }

static char *sh(int *status, const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return run_capture(cmd, status);
}

static void test_logits_golden(void **st) {
    const char *names[] = {"dense_h", "moe_small", "moe_groups3"};
    for (int i = 0; i < 3; i++) {
        for (int dec = 0; dec < 2; dec++) {
            int status;
            char out[700];
            snprintf(out, sizeof out, "%s/%s%d.f32", g_tmp, names[i], dec);
            char *o = sh(&status, "%s logits -m %s/%s/model --tokens-file %s/%s/tokens.txt --out %s %s 2>&1",
                         starling_bin(), golden_dir(), names[i], golden_dir(), names[i], out, dec ? "--decode" : "");
            if (status) fail_msg("logits %s: %s", names[i], o);
            free(o);
            size_t n1, n2;
            char ref[600];
            snprintf(ref, sizeof ref, "%s/%s/logits.f32", golden_dir(), names[i]);
            float *a = read_f32(out, &n1), *b = read_f32(ref, &n2);
            assert_non_null(a);
            assert_int_equal(n1, n2);
            double e = rel_err(a, b, n1);
            if (!(e <= 1e-4)) fail_msg("%s%s: rel err %.3e", names[i], dec ? " --decode" : "", e);
            free(a); free(b);
        }
    }
    /* a budget by file through the CLI */
    int status;
    char out[700];
    snprintf(out, sizeof out, "%s/S.f32", g_tmp);
    char *o = sh(&status, "%s logits -m %s/moe_small/model --budget-file %s/moe_small/budgets/S.json "
                 "--tokens-file %s/moe_small/tokens.txt --out %s 2>&1",
                 starling_bin(), golden_dir(), golden_dir(), golden_dir(), out);
    if (status) fail_msg("logits S: %s", o);
    free(o);
    char ref[600];
    snprintf(ref, sizeof ref, "%s/moe_small/budgets/S.logits.f32", golden_dir());
    size_t n1, n2;
    float *a = read_f32(out, &n1), *b = read_f32(ref, &n2);
    assert_int_equal(n1, n2);
    assert_true(rel_err(a, b, n1) <= 1e-4);
    free(a); free(b);
}

static void test_info(void **st) {
    int status;
    char *o = sh(&status, "%s info -m %s 2>&1", starling_bin(), g_model);
    assert_int_equal(status, 0);
    assert_non_null(strstr(o, "pattern    ME*M-EME"));
    assert_non_null(strstr(o, "\n  L "));
    assert_non_null(strstr(o, "\n  M "));
    assert_non_null(strstr(o, "\n  S "));
    assert_non_null(strstr(o, "default budget: L"));
    free(o);
}

static void test_run_deterministic(void **st) {
    int s1, s2, s3, s4;
    char *a = sh(&s1, "%s run -m %s -p 'Hello there' -n 24 --seed 7 --temp 0.9 2>/dev/null", starling_bin(), g_model);
    char *b = sh(&s2, "%s run -m %s -p 'Hello there' -n 24 --seed 7 --temp 0.9 2>/dev/null", starling_bin(), g_model);
    char *g = sh(&s3, "%s run -m %s --budget full --chat -p 'Hi' -n 16 --temp 0 --ignore-eos 2>/dev/null",
                 starling_bin(), g_model);
    char *gs = sh(&s4, "%s run -m %s --budget S --chat -p 'Hi' -n 16 --temp 0 --ignore-eos 2>/dev/null",
                  starling_bin(), g_model);
    assert_int_equal(s1 | s2 | s3 | s4, 0);
    assert_string_equal(a, b);
    assert_true(strlen(a) > 1);
    assert_true(strcmp(g, gs) != 0); /* two budgets, two models */
    free(a); free(b); free(g); free(gs);
    /* speeds are reported on stderr */
    char *e = sh(&s1, "%s run -m %s -p 'x' -n 4 --seed 1 2>&1 >/dev/null", starling_bin(), g_model);
    assert_non_null(strstr(e, "tok/s"));
    free(e);
}

static void test_usage_errors(void **st) {
    int status;
    char *o = sh(&status, "%s run -m %s -p hi --bogus 2>&1", starling_bin(), g_model);
    assert_int_equal(status, 2);
    free(o);
    o = sh(&status, "%s frobnicate 2>&1", starling_bin());
    assert_int_equal(status, 2);
    free(o);
    o = sh(&status, "%s run -m %s -p hi --budget num_attention_heads=3 2>&1", starling_bin(), g_model);
    assert_int_equal(status, 1);
    assert_non_null(strstr(o, "starling run: budget: num_attention_heads = 3 is not a multiple"));
    assert_null(strchr(strchr(o, '\n') + 1, '\n')); /* exactly one line */
    free(o);
    for (const char *const *c = (const char *const[]){"run", "info", "tokenize", "logits", "perplexity", "bench", "synth", "slice", "quantize", "serve", "eval", NULL};
         *c; c++) {
        o = sh(&status, "%s %s --help", starling_bin(), *c);
        assert_int_equal(status, 0);
        assert_non_null(strstr(o, "usage: starling"));
        free(o);
    }
}

static void test_perplexity(void **st) {
    int status;
    char txt[700];
    snprintf(txt, sizeof txt, "%s/t.txt", g_tmp);
    FILE *f = fopen(txt, "w");
    for (int i = 0; i < 20; i++) fprintf(f, "The quick brown fox jumps over the lazy dog %d times.\n", i);
    fclose(f);
    char *o = sh(&status, "%s perplexity -m %s -f %s --ctx 64 --budget S 2>/dev/null", starling_bin(), g_model, txt);
    assert_int_equal(status, 0);
    double ppl = 0;
    char *p = strstr(o, "perplexity ");
    assert_non_null(p);
    assert_int_equal(sscanf(p, "perplexity %lf", &ppl), 1);
    /* random weights over a 272-token vocabulary: finite, > 1, around the vocab size */
    assert_true(ppl > 1 && ppl < 5000);
    free(o);
}

/* `bench` on two copies of the default model (two "formats"), two budgets:
 * the JSON report's figures must be consistent with each other and with the
 * budgets (not timed: nothing here depends on how fast the machine is). */
static void test_bench_report(void **st) {
    int status;
    char js[700], svg[700];
    snprintf(js, sizeof js, "%s/bench.json", g_tmp);
    snprintf(svg, sizeof svg, "%s/bench.svg", g_tmp);
    char *o = sh(&status, "%s bench -m %s -m %s -b full,S --reps 1 --gen 3 --prompt 5 --bw-mib 64 --json %s --svg %s 2>&1",
                 starling_bin(), g_model, g_model, js, svg);
    if (status) fail_msg("bench: %s", o);
    assert_non_null(strstr(o, "one decoded token, ms by op class"));
    free(o);
    json_error_t err;
    json_t *r = json_load_file(js, 0, &err);
    assert_non_null(r);
    const double bw = json_real_value(json_object_get(r, "read_bandwidth_gb_s"));
    assert_true(bw > 0 && json_real_value(json_object_get(r, "read_bandwidth_worst_gb_s")) <= bw);
    json_t *bl = json_object_get(r, "budgets");
    assert_int_equal(json_array_size(bl), 4); /* 2 models x 2 budgets */
    for (size_t i = 0; i < 4; i++) {
        json_t *b = json_array_get(bl, i);
        const double tps = json_real_value(json_object_get(b, "decode_tok_s"));
        const double bytes = json_real_value(json_object_get(b, "active_bytes_per_token"));
        const double gbs = json_real_value(json_object_get(b, "decode_weight_gb_s"));
        assert_true(tps > 0 && bytes > 0);
        assert_true(fabs(gbs - bytes * tps / 1e9) <= 1e-9 * (gbs + 1));
        assert_true(fabs(json_real_value(json_object_get(b, "decode_fraction_of_bandwidth")) - gbs / bw) < 1e-9);
        /* the op classes split the profiled token's time: none negative, and
         * together no more than it (a class counted twice would exceed it) */
        const double total = json_real_value(json_object_get(b, "decode_ms_per_token"));
        json_t *bd = json_object_get(b, "decode_breakdown_ms");
        assert_int_equal(json_object_size(bd), 8);
        double sum = 0;
        const char *k;
        json_t *v;
        json_object_foreach(bd, k, v) {
            assert_true(json_real_value(v) >= 0);
            sum += json_real_value(v);
        }
        assert_true(total > 0 && fabs(sum - total) <= 1e-6 * total + 1e-9);
        assert_true(json_real_value(json_object_get(json_object_get(b, "decode_breakdown_ms"), "matmul")) > 0);
        assert_true(json_real_value(json_object_get(b, "prefill_matmul_gflop_s")) > 0);
    }
    /* S reads fewer bytes than full, in both copies */
    for (size_t m = 0; m < 2; m++)
        assert_true(json_real_value(json_object_get(json_array_get(bl, 2 * m + 1), "active_bytes_per_token")) <
                    json_real_value(json_object_get(json_array_get(bl, 2 * m), "active_bytes_per_token")));
    json_decref(r);
    size_t n = 0;
    char *text = NULL;
    assert_int_equal(st_read_file(svg, &text, &n), ST_OK);
    assert_true(n > 100 && !strncmp(text, "<svg", 4) && strstr(text, "roofline") && strstr(text, "</svg>"));
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logits_golden), cmocka_unit_test(test_info), cmocka_unit_test(test_run_deterministic),
        cmocka_unit_test(test_usage_errors), cmocka_unit_test(test_perplexity), cmocka_unit_test(test_bench_report),
    };
    return cmocka_run_group_tests_name("cli", tests, setup, teardown);
}

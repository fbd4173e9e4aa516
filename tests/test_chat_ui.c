/*
 * test_chat_ui.c — the chat page at `starling serve`'s / in a real browser:
 * Debian's headless chromium driven by puppeteer-core (installed by
 * `make browser-node`) through scripts/browser/chat_test.mjs, against a live
 * server on the default model with an API key. Asserts on the DOM it reports:
 * the key asked once, the budget pickers and chart, a streamed answer with
 * its thinking apart, per-message budgets / tokens / tok/s / bytes per token,
 * a budget switch, the stop button cancelling server-side (EOS banned and
 * 3000 tokens asked, so only the cancel can end the request early), the
 * theme toggle. Saves build/chat.png (docs/img/chat.png is a copy).
 * Skipped with a message only when chromium or puppeteer-core are missing.
 */
#include "util_test.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#define BROWSER_DIR "build/browser-node"

static const char *str(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)) ?: ""; }

static void test_chat_page(void **st) {
    (void)st;
    if (access(BROWSER_DIR "/node_modules/puppeteer-core/package.json", R_OK) || access("/usr/bin/chromium", X_OK)) {
        fprintf(stderr, "SKIP test_chat_page: chromium or puppeteer-core missing (make browser-node; "
                        "apt/npm unreachable?)\n");
        skip();
    }
    char *bin = realpath(starling_bin(), NULL), *model = realpath("models/elastic", NULL), cmd[4096];
    assert_non_null(bin); assert_non_null(model);
    unlink("build/chat.png");
    snprintf(cmd, sizeof cmd, "cd " BROWSER_DIR " && node chat_test.mjs '%s' '%s' ../chat.png test-key-15", bin, model);
    free(bin); free(model);
    int status;
    char *out = run_capture(cmd, &status);
    assert_int_equal(status, 0);
    json_t *r = json_loads(out, 0, NULL);
    if (!r || json_object_get(r, "error")) fprintf(stderr, "chat_test.mjs: %s\n", out);
    free(out);
    assert_non_null(r);
    assert_null(json_object_get(r, "error"));
    assert_string_equal(str(r, "title"), "starling chat");
    assert_int_equal(json_integer_value(json_object_get(r, "dialogs")), 1); /* the key, asked once */
    size_t nb = json_array_size(json_object_get(r, "budgets"));
    assert_int_equal(nb, 4); /* 9.5M, 6M, 4M and full */
    assert_int_equal(json_integer_value(json_object_get(r, "chartBars")), (json_int_t)nb);
    json_t *steps = json_object_get(r, "steps");
    assert_int_equal(json_array_size(steps), 2);
    const char *want_budget[2] = {"@9.5M", "@4M"};
    for (size_t i = 0; i < 2; i++) {
        json_t *s = json_array_get(steps, i);
        assert_string_equal(str(s, "done"), "1");
        assert_true(strlen(str(s, "answer")) > 0);
        /* the default model thinks first: shown apart, folded once the answer came */
        assert_true(strlen(str(s, "thinking")) > 0);
        assert_true(json_is_true(json_object_get(s, "thinkingShown")));
        assert_true(json_is_false(json_object_get(s, "thinkingOpen")));
        assert_null(strstr(str(s, "answer"), str(s, "thinking")));
        const char *meta = str(s, "meta");
        assert_non_null(strstr(meta, want_budget[i]));
        assert_non_null(strstr(meta, "tok/s"));
        assert_non_null(strstr(meta, "MiB/token"));
        assert_non_null(strstr(meta, "thinking"));
        assert_true(json_integer_value(json_object_get(s, "tokens")) > 0);
    }
    assert_string_equal(str(json_array_get(steps, 1), "budget"), "starling:4M"); /* switched to the smallest */
    assert_string_equal(str(r, "sendLabelWhileBusy"), "Stop");
    assert_string_equal(str(r, "stopped"), "stopped");
    json_int_t after = json_integer_value(json_object_get(r, "tokensAfterStop"));
    fprintf(stderr, "stop: the cancelled request generated %lld of the 3000 tokens asked\n", (long long)after);
    assert_true(after >= 0 && after < 2000);
    assert_true(json_is_true(json_object_get(r, "stopLog")));
    json_t *th = json_object_get(r, "themes");
    assert_string_not_equal(json_string_value(json_array_get(th, 0)), json_string_value(json_array_get(th, 1)));
    json_decref(r);
    /* the screenshot is a PNG */
    FILE *f = fopen("build/chat.png", "rb");
    assert_non_null(f);
    unsigned char sig[8] = {0};
    assert_int_equal(fread(sig, 1, 8, f), 8);
    fclose(f);
    assert_memory_equal(sig, "\x89PNG\r\n\x1a\n", 8);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_chat_page)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

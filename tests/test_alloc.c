/*
 * test_alloc.c — allocation-failure injection (docs/RELIABILITY.md): for
 * N = 0, 1, 2, ... the Nth st_ allocation of an operation fails
 * (st_alloc_fail_after), until the operation runs without reaching N. Each
 * failed run must end with a clean status (ST_ERR_NOMEM, or a tolerated
 * failure: ST_OK), crash nothing and leak nothing (make test-asan runs this
 * under ASan + LSan), and the operation must succeed again once the hook is
 * off. Operations: model and tokenizer load (models/elastic), chat render +
 * tokenize, a short generation, a slice, a GGUF export, server start, and
 * chat requests to an in-process server (plain and streamed: a 5xx with an
 * error object, or a complete answer).
 *
 * Run time: N steps through every allocation up to 200, then about 150 more
 * spread over the rest; under the sanitizers (ST_TEST_QUICK) 100 and 40, and
 * the shared-state recheck after every third failure only.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "elastic/gguf_export.h"
#include "elastic/slice.h"
#include "gen/cache.h"
#include "gen/generate.h"
#include "model/model.h"
#include "server/server.h"
#include "util/util.h"
#include "util_test.h"

#define MODEL "models/elastic"

static char *g_tmp;
static st_model *g_m;        /* models/elastic */
static st_tokenizer *g_tok;
static st_model *g_small;    /* the 4M budget sliced (for the GGUF export) */
static long g_n = -1;        /* the allocation failing now (for messages) */

/* the next N after n: every one up to `dense`, then a step that keeps the
 * number of runs near dense + tail whatever the total count */
static long next_n(long n, long total) {
    const long dense = test_quick() ? 100 : 200, tail = test_quick() ? 40 : 150;
    if (n < dense) return n + 1;
    long step = (total - dense) / tail;
    if (step < 7) step = 7;
    return n + step;
}

typedef st_status (*op_fn)(void *ctx);

/* Run op with the hook off and check it succeeds. */
static void ok_run(const char *name, op_fn op, void *ctx) {
    st_alloc_fail_after(-1);
    st_status rc = op(ctx);
    if (rc) fail_msg("%s with the hook off: %s (%s)", name, st_status_name(rc), st_last_error());
}

/* The injection loop. recheck: run op with the hook off after every failed
 * run (for operations on shared state: it must not be left corrupted). */
static void inject(const char *name, op_fn op, void *ctx, int recheck) {
    st_alloc_fail_after(LONG_MAX);
    st_status rc = op(ctx);
    const long total = st_alloc_count();
    st_alloc_fail_after(-1);
    if (rc) fail_msg("%s: %s (%s)", name, st_status_name(rc), st_last_error());
    long runs = 0, tolerated = 0;
    for (long n = 0;; n = next_n(n, total)) {
        st_err_clear();
        g_n = n;
        st_alloc_fail_after(n);
        rc = op(ctx);
        const int hit = st_alloc_failed();
        st_alloc_fail_after(-1);
        if (!hit) {
            if (rc) fail_msg("%s: %s without an injected failure (%s)", name, st_status_name(rc), st_last_error());
            break;
        }
        runs++;
        if (rc == ST_OK) {
            tolerated++;
            if (getenv("ST_ALLOC_BACKTRACE")) fprintf(stderr, "st_alloc: %s: failure %ld tolerated\n", name, n);
        }
        else if (rc != ST_ERR_NOMEM)
            fail_msg("%s: allocation %ld failed with %s, not out of memory (%s)", name, n, st_status_name(rc),
                     st_last_error());
        else if (!st_last_error()[0])
            fail_msg("%s: allocation %ld: out of memory without a message", name, n);
        if (recheck && (!test_quick() || runs % 3 == 0)) ok_run(name, op, ctx);
    }
    g_n = -1;
    ok_run(name, op, ctx);
    printf("  %-22s %6ld allocations, %4ld injected runs (%ld tolerated)\n", name, total, runs, tolerated);
}

/* ---------------------------------------------------------------- operations */

static st_status op_model_load(void *ctx) {
    st_model *m = NULL;
    st_status rc = st_model_load(MODEL, &m);
    if (!rc) assert_non_null(m);
    else assert_null(m);
    st_model_free(m);
    return rc;
}

static st_status op_tokenizer_load(void *ctx) {
    st_tokenizer *t = NULL;
    st_status rc = st_tokenizer_load(MODEL "/tokenizer.json", &t);
    if (rc) assert_null(t);
    st_tokenizer_free(t);
    return rc;
}

static st_status op_chat_tokenize(void *ctx) {
    const st_chat_msg msgs[] = {
        {"system", "You are starling.", NULL},
        {"user", "What is 12 + 34?", NULL},
        {"assistant", "46", "Aligned: 12 + 34"},
        {"user", "And 5 + 6? <think> é ☃", NULL},
    };
    char *text = NULL;
    st_status rc = st_chat_render(msgs, 4, 1, 1, &text);
    if (rc) return rc;
    int32_t *ids = NULL;
    int n = 0;
    rc = st_tokenize(g_tok, text, strlen(text), 1, &ids, &n);
    char *back = NULL;
    if (!rc) rc = st_detokenize(g_tok, ids, n, &back);
    if (!rc) assert_string_equal(back, text);
    free(back);
    free(ids);
    free(text);
    return rc;
}

/* a budget, a prompt cache, a short chat generation with thinking; a run
 * that tolerated a failure (a prompt cache entry not kept, ...) must still
 * give the tokens of the first run */
static int32_t g_gen_ref[16];
static int g_gen_nref = -1;

static st_status op_generate(void *ctx) {
    st_budget *b = NULL;
    st_status rc = st_budget_by_name(g_m, "4M", &b);
    if (rc) return rc;
    st_pcache *pc = NULL;
    rc = st_pcache_new(1 << 20, 8, &pc);
    int32_t *ids = NULL;
    int n = 0;
    static const char prompt[] = "<|im_start|>user\nWhat is 12 + 34?<|im_end|>\n<|im_start|>assistant\n<think>\n";
    if (!rc) rc = st_tokenize(g_tok, prompt, sizeof prompt - 1, 1, &ids, &n);
    st_gen *g = NULL;
    if (!rc) {
        st_gen_params p = st_gen_default_params();
        p.max_tokens = 4;
        p.thinking = 1;
        p.answer_with = b;
        p.sampling.temperature = 0;
        rc = st_gen_new(g_m, g_tok, &p, ids, n, 64, pc, NULL, NULL, &g);
    }
    if (!rc) rc = st_gen_run(g);
    if (!rc) {
        int nt = 0;
        const int32_t *t = st_gen_tokens(g, &nt);
        assert_true(nt <= 16);
        if (g_gen_nref < 0) {
            memcpy(g_gen_ref, t, sizeof(int32_t) * (size_t)nt);
            g_gen_nref = nt;
        } else if (nt != g_gen_nref || memcmp(t, g_gen_ref, sizeof(int32_t) * (size_t)nt))
            fail_msg("generation: allocation %ld: a tolerated failure changed the tokens", g_n);
    }
    st_gen_free(g);
    free(ids);
    st_pcache_free(pc);
    st_budget_free(b);
    return rc;
}

/* The bytes of every file under dir, as one checksum line; a run that
 * tolerated a failure must write what the first run wrote. */
static void same_output(const char *dir, char **ref) {
    char cmd[900];
    snprintf(cmd, sizeof cmd, "cd '%s' && find . -type f | LC_ALL=C sort | xargs cat | cksum", dir);
    int status;
    char *sum = run_capture(cmd, &status);
    assert_int_equal(status, 0);
    if (!*ref) *ref = sum;
    else {
        if (strcmp(sum, *ref)) fail_msg("%s: allocation %ld: a tolerated failure changed the output", dir, g_n);
        free(sum);
    }
}
static char *g_slice_sum, *g_gguf_sum;

/* nothing but `keep` in dir (a failed slice or export leaves no .tmp) */
static void only_in(const char *dir, const char *keep) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && (!keep || strcmp(e->d_name, keep)))
            fail_msg("%s: left behind %s", dir, e->d_name);
    closedir(d);
}

static st_status op_slice(void *ctx) {
    st_budget *b = NULL;
    st_status rc = st_budget_by_name(g_m, "4M", &b);
    if (rc) return rc;
    char dir[700], dst[800];
    snprintf(dir, sizeof dir, "%s/slice", g_tmp);
    snprintf(dst, sizeof dst, "%s/out", dir);
    rm_rf(dir);
    mkdir(dir, 0755);
    st_slice_opts o = {.shard_bytes = 2000000}; /* a few shards and an index */
    rc = st_slice(g_m, b, dst, &o);
    st_budget_free(b);
    only_in(dir, rc ? NULL : "out");
    if (!rc) same_output(dir, &g_slice_sum);
    return rc;
}

static st_status op_gguf(void *ctx) {
    char dir[700], dst[800];
    snprintf(dir, sizeof dir, "%s/gguf", g_tmp);
    snprintf(dst, sizeof dst, "%s/out.gguf", dir);
    rm_rf(dir);
    mkdir(dir, 0755);
    st_gguf_export_opts o = {.precision = "q8_0"};
    st_status rc = st_gguf_export(g_small, dst, &o);
    only_in(dir, rc ? NULL : "out.gguf");
    if (!rc) same_output(dir, &g_gguf_sum);
    return rc;
}

/* ---------------------------------------------------------------- server */

static st_server_opts srv_opts(void) {
    st_server_opts o = st_server_default_params();
    o.host = "127.0.0.1";
    o.port = 0;
    o.parallel = 2;
    o.queue = 4;
    o.cache_interval = 8;
    o.timeout_s = 60;
    return o;
}

static st_status op_server_start(void *ctx) {
    st_server_opts o = srv_opts();
    st_server *s = NULL;
    st_status rc = st_server_start(g_m, g_tok, &o, &s);
    if (!rc) st_server_stop(s);
    return rc;
}

typedef struct {
    st_server *srv;
    int port;
    const char *body;
} srv_ctx;

/* One HTTP/1.0 request over a socket; returns the status code, *out the
 * malloc'd response (headers and body). */
static int http_post(int port, const char *path, const char *body, char **out) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) fail_msg("connect: port %d", port);
    char hdr[512];
    int nh = snprintf(hdr, sizeof hdr,
                      "POST %s HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      path, strlen(body));
    assert_true(write(fd, hdr, (size_t)nh) == nh);
    assert_true(write(fd, body, strlen(body)) == (ssize_t)strlen(body));
    size_t n = 0, cap = 4096;
    char *r = malloc(cap);
    for (;;) {
        if (cap - n < 2048) r = realloc(r, cap *= 2);
        ssize_t k = read(fd, r + n, cap - n - 1);
        if (k <= 0) break;
        n += (size_t)k;
    }
    close(fd);
    r[n] = 0;
    *out = r;
    int code = 0;
    if (sscanf(r, "HTTP/1.%*d %d", &code) != 1) fail_msg("allocation %ld: no HTTP status line: %.200s", g_n, r);
    return code;
}

/* A request while the hook may be armed: 200 with the answer, or a 5xx
 * (out of memory: 500 or 503) with an error object. */
static st_status op_request(void *ctx) {
    srv_ctx *c = ctx;
    char *r = NULL;
    const int code = http_post(c->port, "/v1/chat/completions", c->body, &r);
    st_status rc = ST_OK;
    if (code == 200) {
        if (!strstr(r, "\"content\"") && !strstr(r, "data: ")) fail_msg("200 without content: %.300s", r);
        /* a stream that began before the failure ends with an error event */
        if (strstr(r, "data: ") && strstr(r, "\"error\"")) rc = st_err(ST_ERR_NOMEM, "stream ended with an error");
        else if (strstr(r, "data: ") && !strstr(r, "data: [DONE]")) fail_msg("stream without [DONE]: %.300s", r);
    } else if (code == 500 || code == 503) {
        if (!strstr(r, "\"error\"")) fail_msg("HTTP %d without an error object: %.300s", code, r);
        rc = st_err(ST_ERR_NOMEM, "HTTP %d", code);
    } else
        fail_msg("allocation %ld: HTTP %d: %.300s", g_n, code, r);
    free(r);
    return rc;
}

/* ---------------------------------------------------------------- tests */

static int setup(void **st) {
    g_tmp = test_tmpdir("alloc");
    signal(SIGPIPE, SIG_IGN);
    st_set_threads(1); /* the sanitizer run shares the cores with other tests */
    if (st_model_load(MODEL, &g_m)) return 1;
    if (st_tokenizer_load(MODEL "/tokenizer.json", &g_tok)) return 1;
    st_budget *b;
    if (st_budget_by_name(g_m, "4M", &b)) return 1;
    char dst[700];
    snprintf(dst, sizeof dst, "%s/small", g_tmp);
    st_slice_opts o = {0};
    st_status rc = st_slice(g_m, b, dst, &o);
    st_budget_free(b);
    if (rc || st_model_load(dst, &g_small)) return 1;
    return 0;
}

static int teardown(void **st) {
    st_alloc_fail_after(-1);
    st_model_free(g_small);
    st_tokenizer_free(g_tok);
    st_model_free(g_m);
    rm_rf(g_tmp);
    free(g_tmp);
    free(g_slice_sum);
    free(g_gguf_sum);
    return 0;
}

static void test_load(void **st) {
    inject("model load", op_model_load, NULL, 0);
    inject("tokenizer load", op_tokenizer_load, NULL, 0);
}

static void test_chat_tokenize(void **st) { inject("chat render+tokenize", op_chat_tokenize, NULL, 0); }

static void test_generate(void **st) { inject("generation", op_generate, NULL, 0); }

static void test_slice(void **st) { inject("slice", op_slice, NULL, 0); }

static void test_gguf(void **st) { inject("gguf export", op_gguf, NULL, 0); }

static void test_server(void **st) {
    inject("server start", op_server_start, NULL, 0);
    st_server_opts o = srv_opts();
    srv_ctx c = {0};
    if (st_server_start(g_m, g_tok, &o, &c.srv)) fail_msg("server: %s", st_last_error());
    c.port = st_server_port(c.srv);
    c.body = "{\"model\":\"starling:4M\",\"messages\":[{\"role\":\"user\",\"content\":\"What is 12 + 34?\"}],"
             "\"max_tokens\":4,\"temperature\":0}";
    inject("server chat", op_request, &c, 1);
    c.body = "{\"model\":\"starling:4M\",\"messages\":[{\"role\":\"user\",\"content\":\"What is 1 + 2?\"}],"
             "\"max_tokens\":4,\"temperature\":0,\"stream\":true}";
    inject("server chat stream", op_request, &c, 1);
    st_server_stop(c.srv);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load),
        cmocka_unit_test(test_chat_tokenize),
        cmocka_unit_test(test_generate),
        cmocka_unit_test(test_slice),
        cmocka_unit_test(test_gguf),
        cmocka_unit_test(test_server),
    };
    if (getenv("ST_TEST_FILTER")) cmocka_set_test_filter(getenv("ST_TEST_FILTER")); /* e.g. test_gguf */
    return cmocka_run_group_tests(tests, setup, teardown);
}

/*
 * test_server.c — the OpenAI-compatible server against real clients: curl
 * (non-streaming, SSE), the official openai npm package (tests/server/
 * openai.mjs, installed into build/npmcache at test time; skipped when npm
 * cannot fetch it), error objects (malformed JSON, unknown field, too large,
 * unknown model, impossible transplant, wrong method, queue full, API key,
 * time limit), /health, /metrics, /v1/models, a load test of 16 concurrent
 * streams that must each equal the single-request greedy result, and the
 * same greedy request through the server and through `starling run`, and
 * 5-turn conversations (thinking on/off, two budgets, think_with/answer_with,
 * the synthetic and the shipped model) whose later turns must restore their
 * history from the prompt cache and answer as a cache-less server does.
 *
 * Servers run in this process on 127.0.0.1 with an OS-chosen port; the
 * `starling serve` command itself is checked for a clean SIGTERM exit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <signal.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "server/server.h"
#include "util_test.h"

static char *g_tmp;
static char g_model[600];
static st_model *g_m;
static st_tokenizer *g_tok;
static st_server *g_srv;
static int g_port;
static int g_seq;

static st_server *start_with(const st_model *m, const st_tokenizer *tok, st_server_opts o) {
    st_server *s = NULL;
    o.host = "127.0.0.1";
    o.port = 0;
    if (st_server_start(m, tok, &o, &s)) fail_msg("server: %s", st_last_error());
    return s;
}
static st_server *start(st_server_opts o) { return start_with(g_m, g_tok, o); }

static int setup(void **st) {
    g_tmp = test_tmpdir("server");
    snprintf(g_model, sizeof g_model, "%s/default", g_tmp);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "%s synth --preset default -o %s 2>&1", starling_bin(), g_model);
    int status;
    char *out = run_capture(cmd, &status);
    if (status) fprintf(stderr, "%s\n", out);
    free(out);
    if (status) return 1;
    if (st_model_load(g_model, &g_m)) return 1;
    snprintf(cmd, sizeof cmd, "%s/tokenizer.json", g_model);
    if (st_tokenizer_load(cmd, &g_tok)) return 1;
    st_set_threads(2);
    signal(SIGPIPE, SIG_IGN);
    st_server_opts o = st_server_default_params();
    o.max_body = 8192;
    o.parallel = 8;
    o.queue = 32;
    o.cache_interval = 16;
    g_srv = start(o);
    g_port = st_server_port(g_srv);
    return 0;
}

static int teardown(void **st) {
    st_server_stop(g_srv);
    st_tokenizer_free(g_tok);
    st_model_free(g_m);
    rm_rf(g_tmp);
    free(g_tmp);
    return 0;
}

/* ---------------------------------------------------------------- HTTP via curl */

typedef struct { int code; char *body; } resp;

/* curl with a body from a file (no shell quoting of JSON); extra: more curl args */
static resp http(int port, const char *method, const char *path, const char *body, const char *extra) {
    char bf[700] = "", cmd[2400];
    if (body) {
        snprintf(bf, sizeof bf, "%s/body.%d.json", g_tmp, g_seq++);
        FILE *f = fopen(bf, "wb");
        fwrite(body, 1, strlen(body), f);
        fclose(f);
    }
    snprintf(cmd, sizeof cmd, "curl -sS -N --max-time 60 -X %s %s%s%s %s -w '\\n%%{http_code}' http://127.0.0.1:%d%s",
             method, body ? "-H 'Content-Type: application/json' --data-binary @" : "", body ? bf : "", "",
             extra ? extra : "", port, path);
    int status;
    resp r = {0, run_capture(cmd, &status)};
    char *nl = strrchr(r.body, '\n');
    if (status || !nl) fail_msg("curl failed (%d): %s", status, r.body);
    r.code = atoi(nl + 1);
    *nl = 0;
    if (body) unlink(bf);
    return r;
}

static json_t *parse(const char *s) {
    json_error_t e;
    json_t *j = json_loads(s, 0, &e);
    if (!j) fail_msg("not JSON (%s): %.300s", e.text, s);
    return j;
}

/* An OpenAI error object with all four fields; returns the parsed body
 * (r.body is freed). */
static json_t *expect_error(resp r, int code, const char *errcode) {
    if (r.code != code) fail_msg("expected HTTP %d, got %d: %s", code, r.code, r.body);
    json_t *j = parse(r.body);
    free(r.body);
    json_t *e = json_object_get(j, "error");
    assert_true(json_is_object(e));
    assert_true(json_is_string(json_object_get(e, "message")));
    assert_true(json_is_string(json_object_get(e, "type")));
    assert_non_null(json_object_get(e, "param"));
    assert_non_null(json_object_get(e, "code"));
    if (errcode && (!json_is_string(json_object_get(e, "code")) || strcmp(json_string_value(json_object_get(e, "code")), errcode)))
        fail_msg("expected code %s: %s", errcode, r.body);
    return j;
}

typedef struct { char *reasoning, *content; const char *finish; int completion_tokens, n_chunks, done; } result;

static void result_free(result *r) { free(r->reasoning); free(r->content); }

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) n = 0;
    b[n] = 0;
    fclose(f);
    return b;
}

static char *dupstr(const char *s, size_t n) { char *p = malloc(n + 1); memcpy(p, s, n); p[n] = 0; return p; }

/* The reasoning/content of a non-streaming chat or completion response. */
static result nonstream(const char *body) {
    result r = {0};
    json_t *j = parse(body);
    json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
    json_t *msg = json_object_get(ch, "message");
    json_t *c = msg ? json_object_get(msg, "content") : json_object_get(ch, "text");
    json_t *rc = msg ? json_object_get(msg, "reasoning_content") : NULL;
    r.content = dupstr(json_string_value(c) ? json_string_value(c) : "", json_string_length(c));
    r.reasoning = dupstr(json_is_string(rc) ? json_string_value(rc) : "", json_is_string(rc) ? json_string_length(rc) : 0);
    static char fin[16][16];
    static int fi;
    snprintf(fin[fi & 15], 16, "%s", json_string_value(json_object_get(ch, "finish_reason")));
    r.finish = fin[fi++ & 15];
    r.completion_tokens = (int)json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens"));
    json_decref(j);
    return r;
}

/* Reassemble an SSE stream: every event "data: ...\n\n", ending "data: [DONE]". */
static result sse(const char *body) {
    result r = {0};
    size_t cap = strlen(body) + 1, nr = 0, nc = 0;
    r.reasoning = calloc(1, cap);
    r.content = calloc(1, cap);
    const char *p = body;
    static char fin[16][16];
    static int fi;
    while (*p) {
        if (strncmp(p, "data: ", 6)) fail_msg("SSE line without 'data: ': %.100s", p);
        const char *end = strstr(p, "\n\n");
        if (!end) fail_msg("SSE event not terminated: %.100s", p);
        char *ev = dupstr(p + 6, (size_t)(end - p - 6));
        p = end + 2;
        if (!strcmp(ev, "[DONE]")) { r.done = 1; free(ev); assert_int_equal(*p, 0); break; }
        json_t *j = parse(ev);
        free(ev);
        r.n_chunks++;
        if (json_object_get(j, "error")) fail_msg("error event in stream");
        json_t *u = json_object_get(j, "usage");
        if (u) r.completion_tokens = (int)json_integer_value(json_object_get(u, "completion_tokens"));
        json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
        if (ch) {
            json_t *d = json_object_get(ch, "delta");
            json_t *c = d ? json_object_get(d, "content") : json_object_get(ch, "text");
            json_t *rc = d ? json_object_get(d, "reasoning_content") : NULL;
            if (json_is_string(c)) { memcpy(r.content + nc, json_string_value(c), json_string_length(c)); nc += json_string_length(c); }
            if (json_is_string(rc)) { memcpy(r.reasoning + nr, json_string_value(rc), json_string_length(rc)); nr += json_string_length(rc); }
            json_t *f = json_object_get(ch, "finish_reason");
            if (json_is_string(f)) { snprintf(fin[fi & 15], 16, "%s", json_string_value(f)); r.finish = fin[fi++ & 15]; }
        }
        json_decref(j);
    }
    assert_true(r.done);
    r.content[nc] = 0;
    r.reasoning[nr] = 0;
    return r;
}

static void same_result(const result *a, const result *b) {
    assert_string_equal(a->content, b->content);
    assert_string_equal(a->reasoning, b->reasoning);
    assert_non_null(a->finish);
    assert_non_null(b->finish);
    assert_string_equal(a->finish, b->finish);
}

/* ---------------------------------------------------------------- tests */

static void test_health_models_metrics(void **st) {
    resp r = http(g_port, "GET", "/health", NULL, NULL);
    assert_int_equal(r.code, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
    free(r.body);
    r = http(g_port, "GET", "/v1/models", NULL, NULL);
    assert_int_equal(r.code, 200);
    json_t *j = parse(r.body);
    json_t *d = json_object_get(j, "data");
    const char *want[] = {"starling", "starling:L", "starling:M", "starling:S", "starling:full"};
    assert_int_equal(json_array_size(d), 5);
    for (int i = 0; i < 5; i++) {
        assert_string_equal(json_string_value(json_object_get(json_array_get(d, (size_t)i), "id")), want[i]);
        assert_string_equal(json_string_value(json_object_get(json_array_get(d, (size_t)i), "object")), "model");
    }
    assert_string_equal(json_string_value(json_object_get(json_array_get(d, 0), "budget")), "L");
    json_decref(j);
    free(r.body);
    free(http(g_port, "POST", "/v1/completions", "{\"prompt\":\"hi\",\"max_tokens\":3}", NULL).body);
    r = http(g_port, "GET", "/metrics", NULL, NULL);
    assert_int_equal(r.code, 200);
    /* Prometheus text format: HELP/TYPE lines, then name value */
    assert_non_null(strstr(r.body, "# TYPE starling_http_responses_total counter\n"));
    assert_non_null(strstr(r.body, "starling_http_responses_total{code=\"200\"} "));
    assert_non_null(strstr(r.body, "# TYPE starling_queue_depth gauge\nstarling_queue_depth 0\n"));
    assert_non_null(strstr(r.body, "starling_completion_tokens_total "));
    for (char *line = strtok(r.body, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#') { assert_true(!strncmp(line, "# HELP starling_", 16) || !strncmp(line, "# TYPE starling_", 16)); continue; }
        char name[200];
        double v;
        if (sscanf(line, "%199s %lf", name, &v) != 2) fail_msg("bad metrics line: %s", line);
    }
    free(r.body);
}

static const char *CHAT_S =
    "{\"model\":\"starling:S\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
    "{\"role\":\"user\",\"content\":\"What is 2+3?\"}],\"max_tokens\":32,\"temperature\":0,"
    "\"thinking_budget\":8,\"think_grace\":0%s}";

static void test_chat_curl(void **st) {
    char body[1024];
    snprintf(body, sizeof body, CHAT_S, "");
    resp a = http(g_port, "POST", "/v1/chat/completions", body, NULL);
    assert_int_equal(a.code, 200);
    json_t *j = parse(a.body);
    assert_string_equal(json_string_value(json_object_get(j, "object")), "chat.completion");
    assert_string_equal(json_string_value(json_object_get(j, "model")), "starling:S");
    json_t *u = json_object_get(j, "usage");
    assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")),
                     json_integer_value(json_object_get(u, "prompt_tokens")) + json_integer_value(json_object_get(u, "completion_tokens")));
    json_t *rt = json_object_get(json_object_get(u, "completion_tokens_details"), "reasoning_tokens");
    assert_true(json_integer_value(rt) >= 8);
    assert_true(json_is_true(json_object_get(json_object_get(j, "starling"), "forced_close")));
    json_decref(j);
    result ra = nonstream(a.body);
    assert_true(ra.completion_tokens <= 32);
    /* streaming: the same text, in order, then [DONE] */
    snprintf(body, sizeof body, CHAT_S, ",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    resp b = http(g_port, "POST", "/v1/chat/completions", body, NULL);
    assert_int_equal(b.code, 200);
    result rb = sse(b.body);
    same_result(&ra, &rb);
    assert_int_equal(ra.completion_tokens, rb.completion_tokens);
    assert_true(rb.n_chunks >= 3);
    /* thinking off: no reasoning, content only */
    snprintf(body, sizeof body, CHAT_S, ",\"chat_template_kwargs\":{\"enable_thinking\":false}");
    resp c = http(g_port, "POST", "/v1/chat/completions", body, NULL);
    assert_int_equal(c.code, 200);
    j = parse(c.body);
    assert_true(json_is_null(json_object_get(json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message"), "reasoning_content")));
    json_decref(j);
    /* think at S, answer at L, both switch modes where allowed */
    snprintf(body, sizeof body, CHAT_S, ",\"model\":\"starling\",\"think_with\":\"S\",\"switch_mode\":\"exact\"");
    resp d = http(g_port, "POST", "/v1/chat/completions", body, NULL);
    if (d.code != 200) fail_msg("%s", d.body);
    j = parse(d.body);
    json_t *sj = json_object_get(j, "starling");
    assert_string_equal(json_string_value(json_object_get(sj, "think_budget")), "S");
    assert_string_equal(json_string_value(json_object_get(sj, "answer_budget")), "L");
    assert_true(json_is_true(json_object_get(sj, "switched")));
    json_decref(j);
    /* stop: cut at the first occurrence of a piece of the greedy text */
    resp g = http(g_port, "POST", "/v1/completions", "{\"prompt\":\"Tell me\",\"max_tokens\":40,\"temperature\":0,"
                  "\"logit_bias\":{\"2\":-100,\"11\":-100}}", NULL);
    result rg = nonstream(g.body);
    size_t at = 5;
    while (rg.content[at] && !(rg.content[at] > ' ' && rg.content[at] < 127 && rg.content[at] != '"' &&
                                rg.content[at] != '\\' && rg.content[at + 1] > ' ' && rg.content[at + 1] < 127 &&
                                rg.content[at + 1] != '"' && rg.content[at + 1] != '\\'))
        at++;
    assert_true(rg.content[at] != 0); /* found two plain characters to stop at */
    {
        char stop[3] = {rg.content[at], rg.content[at + 1], 0};
        size_t first = (size_t)(strstr(rg.content, stop) - rg.content);
        snprintf(body, sizeof body, "{\"prompt\":\"Tell me\",\"max_tokens\":40,\"temperature\":0,\"stop\":[\"%s\"],"
                 "\"logit_bias\":{\"2\":-100,\"11\":-100}}", stop);
        resp h = http(g_port, "POST", "/v1/completions", body, NULL);
        result rh = nonstream(h.body);
        assert_string_equal(rh.finish, "stop");
        assert_int_equal(strlen(rh.content), first);
        assert_memory_equal(rh.content, rg.content, first);
        result_free(&rh);
        free(h.body);
    }
    result_free(&rg);
    free(g.body);
    result_free(&ra); result_free(&rb);
    free(a.body); free(b.body); free(c.body); free(d.body);
}

static void test_errors(void **st) {
    json_t *j;
    j = expect_error(http(g_port, "POST", "/v1/chat/completions", "{\"messages\": [", NULL), 400, "invalid_json");
    json_decref(j);
    j = expect_error(http(g_port, "POST", "/v1/chat/completions", "[1,2]", NULL), 400, "invalid_json");
    json_decref(j);
    j = expect_error(http(g_port, "POST", "/v1/chat/completions",
                          "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"frobnicate\":true}", NULL), 400, "unknown_parameter");
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "param")), "frobnicate");
    json_decref(j);
    j = expect_error(http(g_port, "POST", "/v1/chat/completions",
                          "{\"model\":\"gpt-4\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", NULL), 404, "model_not_found");
    json_decref(j);
    j = expect_error(http(g_port, "POST", "/v1/chat/completions", "{\"messages\":[]}", NULL), 400, "invalid_value");
    json_decref(j);
    j = expect_error(http(g_port, "POST", "/v1/chat/completions",
                          "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":\"hot\"}", NULL), 400, NULL);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "param")), "temperature");
    json_decref(j);
    /* transplant L -> M is impossible on this model: a clear error */
    j = expect_error(http(g_port, "POST", "/v1/chat/completions",
                          "{\"model\":\"starling:M\",\"think_with\":\"L\",\"switch_mode\":\"transplant\","
                          "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", NULL), 400, NULL);
    assert_non_null(strstr(json_string_value(json_object_get(json_object_get(j, "error"), "message")), "Mamba heads"));
    json_decref(j);
    /* reread needs a transplant too; an unknown mode names the three */
    j = expect_error(http(g_port, "POST", "/v1/chat/completions",
                          "{\"model\":\"starling:M\",\"think_with\":\"L\",\"switch_mode\":\"reread\","
                          "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", NULL), 400, NULL);
    assert_non_null(strstr(json_string_value(json_object_get(json_object_get(j, "error"), "message")), "Mamba heads"));
    json_decref(j);
    j = expect_error(http(g_port, "POST", "/v1/chat/completions",
                          "{\"switch_mode\":\"fast\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", NULL), 400, NULL);
    assert_non_null(strstr(json_string_value(json_object_get(json_object_get(j, "error"), "message")), "\"reread\""));
    json_decref(j);
    /* too large (limit 8192 bytes) */
    char *big = malloc(20000);
    snprintf(big, 20000, "{\"prompt\":\"");
    memset(big + 11, 'a', 15000);
    strcpy(big + 15011, "\"}");
    j = expect_error(http(g_port, "POST", "/v1/completions", big, NULL), 413, "request_too_large");
    json_decref(j);
    free(big);
    j = expect_error(http(g_port, "GET", "/v1/chat/completions", NULL, NULL), 405, NULL);
    json_decref(j);
    j = expect_error(http(g_port, "GET", "/v2/nothing", NULL, NULL), 404, NULL);
    json_decref(j);
}

static void test_api_key(void **st) {
    st_server_opts o = st_server_default_params();
    o.api_key = "sekrit";
    o.cache_bytes = 0;
    o.max_prompt = 8;
    st_server *s = start(o);
    int port = st_server_port(s);
    json_t *j = expect_error(http(port, "GET", "/v1/models", NULL, NULL), 401, "invalid_api_key");
    json_decref(j);
    j = expect_error(http(port, "GET", "/v1/models", NULL, "-H 'Authorization: Bearer wrong'"), 401, "invalid_api_key");
    json_decref(j);
    j = expect_error(http(port, "POST", "/v1/completions", "{\"prompt\":\"x\"}", NULL), 401, "invalid_api_key");
    json_decref(j);
    resp r = http(port, "GET", "/v1/models", NULL, "-H 'Authorization: Bearer sekrit'");
    assert_int_equal(r.code, 200);
    free(r.body);
    j = expect_error(http(port, "POST", "/v1/completions", "{\"prompt\":\"a prompt longer than eight tokens\"}",
                          "-H 'Authorization: Bearer sekrit'"), 400, "context_length_exceeded");
    json_decref(j);
    r = http(port, "GET", "/health", NULL, NULL); /* health needs no key */
    assert_int_equal(r.code, 200);
    free(r.body);
    st_server_stop(s);
}

static long long metric(int port, const char *name) {
    resp r = http(port, "GET", "/metrics", NULL, NULL);
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    char *p = strstr(r.body, key);
    long long v = p ? atoll(p + strlen(key)) : -1;
    free(r.body);
    return v;
}

/* Long requests: EOS banned so they run until stopped. */
static const char *LONG = "{\"prompt\":\"go\",\"max_tokens\":8000,\"logit_bias\":{\"2\":-100,\"11\":-100}%s}";

static void test_queue_full_and_shutdown(void **st) {
    st_server_opts o = st_server_default_params();
    o.parallel = 1;
    o.queue = 1;
    st_server *s = start(o);
    int port = st_server_port(s);
    char fa[700], fb[700], cmd[2000], body[300];
    snprintf(fa, sizeof fa, "%s/long_a.json", g_tmp);
    snprintf(body, sizeof body, LONG, ",\"stream\":true");
    FILE *f = fopen(fa, "w"); fputs(body, f); fclose(f);
    snprintf(fb, sizeof fb, "%s/long_b.json", g_tmp);
    snprintf(body, sizeof body, LONG, "");
    f = fopen(fb, "w"); fputs(body, f); fclose(f);
    snprintf(cmd, sizeof cmd, "curl -sN --max-time 60 --data-binary @%s -o %s.out -w '%%{http_code}' http://127.0.0.1:%d/v1/completions",
             fa, fa, port);
    FILE *pa = popen(cmd, "r");
    for (int i = 0; i < 500 && metric(port, "starling_active_sequences") != 1; i++) usleep(10000);
    assert_int_equal(metric(port, "starling_active_sequences"), 1);
    snprintf(cmd, sizeof cmd, "curl -s --max-time 60 --data-binary @%s -o %s.out -w '%%{http_code}' http://127.0.0.1:%d/v1/completions",
             fb, fb, port);
    FILE *pb = popen(cmd, "r");
    for (int i = 0; i < 500 && metric(port, "starling_queue_depth") != 1; i++) usleep(10000);
    assert_int_equal(metric(port, "starling_queue_depth"), 1);
    json_t *j = expect_error(http(port, "POST", "/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":2}", NULL), 429,
                             "rate_limit_exceeded");
    json_decref(j);
    assert_int_equal(metric(port, "starling_requests_rejected_total"), 1);
    /* shut down with one running and one queued: both end, nothing hangs */
    double t0 = st_time_now();
    st_server_stop(s);
    assert_true(st_time_now() - t0 < 10);
    char code[16] = "";
    assert_non_null(fgets(code, sizeof code, pa));
    assert_string_equal(code, "200");
    pclose(pa);
    assert_non_null(fgets(code, sizeof code, pb));
    assert_string_equal(code, "503");
    pclose(pb);
    char p2[800];
    snprintf(p2, sizeof p2, "%s.out", fa);
    char *out = slurp(p2);
    assert_non_null(out);
    assert_non_null(strstr(out, "shutting_down"));
    assert_non_null(strstr(out, "data: [DONE]\n\n"));
    free(out);
}

static void test_timeout(void **st) {
    st_server_opts o = st_server_default_params();
    o.timeout_s = 0.3;
    st_server *s = start(o);
    char body[300];
    snprintf(body, sizeof body, LONG, "");
    json_t *j = expect_error(http(st_server_port(s), "POST", "/v1/completions", body, NULL), 504, "timeout");
    json_decref(j);
    st_server_stop(s);
}

/* 16 concurrent streams (4 prompts x 2 budgets x 2): every one complete and
 * equal to the same greedy request made alone. */
static void test_load(void **st) {
    const char *users[4] = {"What is 2+3?", "Name a color.", "Count to five.", "Say hello."};
    const char *models[2] = {"starling:S", "starling"};
    char *bodies[8];
    result alone[8];
    for (int i = 0; i < 8; i++) {
        bodies[i] = malloc(1024);
        snprintf(bodies[i], 1024,
                 "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}],\"max_tokens\":40,"
                 "\"temperature\":0,\"thinking_budget\":%d,\"think_grace\":4,\"think_message\":\"Answer now.\"%%s}",
                 models[i & 1], users[i >> 1], 4 + 3 * (i >> 1));
        char b[1200];
        snprintf(b, sizeof b, bodies[i], "");
        resp r = http(g_port, "POST", "/v1/chat/completions", b, NULL);
        assert_int_equal(r.code, 200);
        alone[i] = nonstream(r.body);
        free(r.body);
    }
    char script[16384] = "";
    size_t off = 0;
    for (int k = 0; k < 16; k++) {
        char b[1200], fn[700];
        snprintf(b, sizeof b, bodies[k & 7], ",\"stream\":true");
        snprintf(fn, sizeof fn, "%s/load%d.json", g_tmp, k);
        FILE *f = fopen(fn, "w"); fputs(b, f); fclose(f);
        off += (size_t)snprintf(script + off, sizeof script - off,
                                "curl -sN --max-time 120 --data-binary @%s -o %s.out http://127.0.0.1:%d/v1/chat/completions & ",
                                fn, fn, g_port);
    }
    snprintf(script + off, sizeof script - off, "wait");
    double t0 = st_time_now();
    assert_int_equal(system(script), 0);
    double dt = st_time_now() - t0;
    for (int k = 0; k < 16; k++) {
        char fn[700];
        snprintf(fn, sizeof fn, "%s/load%d.json.out", g_tmp, k);
        char *out = slurp(fn);
        assert_non_null(out);
        result r = sse(out);
        same_result(&r, &alone[k & 7]);
        result_free(&r);
        free(out);
    }
    for (int i = 0; i < 8; i++) { result_free(&alone[i]); free(bodies[i]); }
    print_message("16 concurrent streams in %.2f s\n", dt);
}

/* The same greedy request through `starling run` and through the server. */
static void test_same_as_run(void **st) {
    int status;
    char cmd[2000];
    /* plain completion */
    snprintf(cmd, sizeof cmd, "%s run -m %s -b M -p 'Once upon a time' -n 24 --temp 0 -t 2 2>/dev/null", starling_bin(), g_model);
    char *out = run_capture(cmd, &status);
    assert_int_equal(status, 0);
    resp r = http(g_port, "POST", "/v1/completions",
                  "{\"model\":\"starling:M\",\"prompt\":\"Once upon a time\",\"max_tokens\":24,\"temperature\":0}", NULL);
    assert_int_equal(r.code, 200);
    result c = nonstream(r.body);
    size_t n = strlen(out);
    assert_true(n >= 1 && out[n - 1] == '\n');
    out[n - 1] = 0;
    assert_string_equal(out, c.content);
    free(out); free(r.body); result_free(&c);
    /* chat with a think budget and a budget switch: run prints reasoning, "</think>", the answer */
    snprintf(cmd, sizeof cmd, "%s run -m %s --chat -p 'What is 2+3?' -n 40 --temp 0 -t 2 --think-budget 6 "
             "--think-grace 2 --think-message 'Answer now.' --think-with S --answer-with L 2>/dev/null",
             starling_bin(), g_model);
    out = run_capture(cmd, &status);
    assert_int_equal(status, 0);
    r = http(g_port, "POST", "/v1/chat/completions",
             "{\"model\":\"starling:L\",\"think_with\":\"S\",\"messages\":[{\"role\":\"user\",\"content\":\"What is 2+3?\"}],"
             "\"max_tokens\":40,\"temperature\":0,\"thinking_budget\":6,\"think_grace\":2,\"think_message\":\"Answer now.\"}", NULL);
    assert_int_equal(r.code, 200);
    c = nonstream(r.body);
    char *want1 = malloc(strlen(c.reasoning) + strlen(c.content) + 32), *want2 = malloc(strlen(c.reasoning) + strlen(c.content) + 32);
    sprintf(want1, "%s</think>\n%s\n", c.reasoning, c.content);
    sprintf(want2, "%s</think>%s\n", c.reasoning, c.content);
    if (strcmp(out, want1) && strcmp(out, want2)) fail_msg("run: [%s]\nserver: [%s]", out, want1);
    free(want1); free(want2);
    free(out); free(r.body); result_free(&c);
}

/* Continuous batching: 8 concurrent greedy completions at 3 budgets are each
 * the text `starling run` gives for that budget alone, and /metrics shows
 * that decode steps really ran fused (some pass decoded more than one). */
static void test_batched_same_as_run(void **st) {
    const char *budgets[3] = {"S", "M", "L"};
    char *want[3];
    for (int k = 0; k < 3; k++) {
        int status;
        char cmd[2000];
        snprintf(cmd, sizeof cmd, "%s run -m %s -b %s -p 'The river' -n 20 --temp 0 -t 2 2>/dev/null", starling_bin(),
                 g_model, budgets[k]);
        want[k] = run_capture(cmd, &status);
        assert_int_equal(status, 0);
        size_t n = strlen(want[k]);
        assert_true(n >= 1 && want[k][n - 1] == '\n');
        want[k][n - 1] = 0;
    }
    const long long steps0 = metric(g_port, "starling_batch_size_count");
    const long long one0 = metric(g_port, "starling_batch_size_bucket{le=\"1\"}");
    char script[8192] = "";
    size_t off = 0;
    for (int i = 0; i < 8; i++) {
        char b[600], fn[700];
        snprintf(b, sizeof b, "{\"model\":\"starling:%s\",\"prompt\":\"The river\",\"max_tokens\":20,\"temperature\":0}",
                 budgets[i % 3]);
        snprintf(fn, sizeof fn, "%s/batch%d.json", g_tmp, i);
        FILE *f = fopen(fn, "w");
        fputs(b, f);
        fclose(f);
        off += (size_t)snprintf(script + off, sizeof script - off,
                                "curl -s --max-time 120 --data-binary @%s -o %s.out http://127.0.0.1:%d/v1/completions & ",
                                fn, fn, g_port);
    }
    snprintf(script + off, sizeof script - off, "wait");
    assert_int_equal(system(script), 0);
    for (int i = 0; i < 8; i++) {
        char fn[700];
        snprintf(fn, sizeof fn, "%s/batch%d.json.out", g_tmp, i);
        char *out = slurp(fn);
        assert_non_null(out);
        result r = nonstream(out);
        if (strcmp(r.content, want[i % 3]))
            fail_msg("request %d at %s: [%s], starling run: [%s]", i, budgets[i % 3], r.content, want[i % 3]);
        result_free(&r);
        free(out);
    }
    const long long steps = metric(g_port, "starling_batch_size_count") - steps0;
    const long long one = metric(g_port, "starling_batch_size_bucket{le=\"1\"}") - one0;
    print_message("8 concurrent completions: %lld decode passes, %lld of them with one sequence\n", steps, one);
    assert_true(steps > 0 && one < steps);
    for (int k = 0; k < 3; k++) free(want[k]);
}

/* "speculative" per request: greedy output identical to no drafting, the
 * drafter's work reported, sampling accepted, misuse answered 400. */
static void test_speculative_field(void **st) {
    const char *base = "{\"model\":\"starling:L\",\"prompt\":\"The river\",\"max_tokens\":24,\"temperature\":0%s}";
    char b[800];
    snprintf(b, sizeof b, base, "");
    resp r0 = http(g_port, "POST", "/v1/completions", b, NULL);
    assert_int_equal(r0.code, 200);
    result want = nonstream(r0.body);
    const char *drafts[3] = {",\"speculative\":{\"draft\":\"S\",\"n\":3}", ",\"speculative\":{\"draft\":\"ngram\"}",
                             ",\"speculative\":{\"draft\":\"starling:L\",\"n\":8}"};
    for (int i = 0; i < 3; i++) {
        snprintf(b, sizeof b, base, drafts[i]);
        resp r = http(g_port, "POST", "/v1/completions", b, NULL);
        assert_int_equal(r.code, 200);
        result got = nonstream(r.body);
        assert_string_equal(got.content, want.content);
        assert_non_null(strstr(r.body, "\"speculative\""));
        result_free(&got);
        free(r.body);
    }
    const char *bad[3] = {",\"speculative\":{\"draft\":\"nope\"}", ",\"speculative\":{\"draft\":\"S\",\"n\":9}",
                          ",\"speculative\":7"};
    for (int i = 0; i < 3; i++) {
        snprintf(b, sizeof b, base, bad[i]);
        json_t *e = expect_error(http(g_port, "POST", "/v1/completions", b, NULL), 400, "invalid_value");
        json_decref(e);
    }
    /* sampling speculates too (speculative sampling; its law is tested in test_gen) */
    snprintf(b, sizeof b, "{\"model\":\"starling\",\"prompt\":\"x\",\"temperature\":0.8,\"seed\":3,"
                          "\"speculative\":{\"draft\":\"S\"}}");
    resp rs = http(g_port, "POST", "/v1/completions", b, NULL);
    assert_int_equal(rs.code, 200);
    assert_non_null(strstr(rs.body, "\"speculative\""));
    free(rs.body);
    result_free(&want);
    free(r0.body);
}

/* ---------------------------------------------------------------- multi-turn cache */

/* Tokens of msgs[0..k) rendered as the template does, with or without the
 * generation prompt: the test's own count of what the server must reuse. */
static int chat_tokens(const st_tokenizer *tok, json_t *msgs, size_t k, int gen_prompt, int thinking) {
    st_chat_msg m[16];
    assert_true(k <= 16);
    for (size_t i = 0; i < k; i++) {
        json_t *x = json_array_get(msgs, i);
        json_t *rc = json_object_get(x, "reasoning_content");
        m[i] = (st_chat_msg){json_string_value(json_object_get(x, "role")), json_string_value(json_object_get(x, "content")),
                             json_is_string(rc) ? json_string_value(rc) : NULL};
    }
    char *text;
    int32_t *ids;
    int n;
    assert_int_equal(st_chat_render(m, (int)k, gen_prompt, thinking, &text), ST_OK);
    assert_int_equal(st_tokenize(tok, text, strlen(text), 1, &ids, &n), ST_OK);
    free(text);
    free(ids);
    return n;
}

/* One chat request; returns the parsed response (the caller frees it). */
static json_t *chat_turn(int port, const char *model, const char *extra, int thinking, json_t *msgs) {
    char *mj = json_dumps(msgs, JSON_COMPACT);
    size_t cap = strlen(mj) + 512;
    char *body = malloc(cap);
    snprintf(body, cap, "{\"model\":\"%s\",\"messages\":%s,\"max_tokens\":20,\"temperature\":0,"
             "\"thinking_budget\":6,\"think_grace\":0,\"chat_template_kwargs\":{\"enable_thinking\":%s}%s}",
             model, mj, thinking ? "true" : "false", extra);
    resp r = http(port, "POST", "/v1/chat/completions", body, NULL);
    if (r.code != 200) fail_msg("turn: HTTP %d: %s", r.code, r.body);
    json_t *j = parse(r.body);
    free(r.body);
    free(body);
    free(mj);
    return j;
}

/* Five turns, each sent to a server with the prompt cache and to one without:
 * every turn after the first must restore at least everything up to the end
 * of the previous user message, and answer exactly as the cold server does. */
static long g_conv_cached, g_conv_hits; /* what the responses reported, for /metrics */

static int conversation(const st_tokenizer *tok, int warm, int cold, const char *model, const char *extra, int thinking,
                        int *stopped) {
    static const char *users[5] = {"Compute 4821 + 3977.", "And 12 + 30?", "Now subtract 5.", "Say it in words.",
                                   "Thanks. One more: 7 + 8?"};
    json_t *msgs = json_pack("[{s:s,s:s}]", "role", "system", "content", "Be brief.");
    int prev_user_end = 0, prev_turn_end = 0, beyond = 0, turn_end_hits = 0, prev_stopped = 0, n_stopped = 0;
    int turns = test_quick() ? 3 : 5;
    for (int t = 0; t < turns; t++) {
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "user", "content", users[t]));
        json_t *a = chat_turn(warm, model, extra, thinking, msgs), *b = chat_turn(cold, model, extra, thinking, msgs);
        json_t *ua = json_object_get(a, "usage"), *ub = json_object_get(b, "usage");
        int np = (int)json_integer_value(json_object_get(ua, "prompt_tokens"));
        int cached = (int)json_integer_value(json_object_get(json_object_get(ua, "prompt_tokens_details"), "cached_tokens"));
        assert_int_equal(np, chat_tokens(tok, msgs, json_array_size(msgs), 1, thinking)); /* the same rendering as ours */
        assert_int_equal(json_integer_value(json_object_get(json_object_get(ub, "prompt_tokens_details"), "cached_tokens")), 0);
        if (t > 0 && cached < prev_user_end)
            fail_msg("%s%s thinking=%d turn %d: cached %d of %d tokens, the previous user message ends at %d", model,
                     extra, thinking, t + 1, cached, np, prev_user_end);
        g_conv_cached += cached;
        g_conv_hits += cached > 0;
        beyond += t > 0 && cached > prev_user_end;
        /* an exact switch prefills the prompt again at the answer budget: that
         * budget's own snapshots must spare the history there too (what it
         * prefilled is the prompt past its hit plus the thought so far) */
        json_t *sj = json_object_get(a, "starling");
        if (t > 0 && json_is_true(json_object_get(sj, "switched"))) {
            long sw = (long)json_integer_value(json_object_get(sj, "switch_tokens"));
            long comp = (long)json_integer_value(json_object_get(ua, "completion_tokens"));
            if (sw > np - prev_user_end + comp)
                fail_msg("%s%s turn %d: the answer budget prefilled %ld tokens, more than the %d after the previous "
                         "user message and the %ld generated", model, extra, t + 1, sw, np - prev_user_end, comp);
        }
        turn_end_hits += t > 0 && cached >= prev_turn_end;
        n_stopped += t > 0 && prev_stopped;
        char *sa = json_dumps(json_object_get(a, "choices"), JSON_COMPACT | JSON_SORT_KEYS);
        char *sb = json_dumps(json_object_get(b, "choices"), JSON_COMPACT | JSON_SORT_KEYS);
        if (strcmp(sa, sb)) fail_msg("%s%s thinking=%d turn %d: cached run %s != cold run %s", model, extra, thinking, t + 1, sa, sb);
        assert_int_equal(json_integer_value(json_object_get(ua, "completion_tokens")),
                         json_integer_value(json_object_get(ub, "completion_tokens")));
        free(sa);
        free(sb);
        prev_user_end = chat_tokens(tok, msgs, json_array_size(msgs), 0, thinking);
        /* the client sends the answer back as it got it, reasoning included */
        json_t *ch0 = json_array_get(json_object_get(a, "choices"), 0), *m = json_object_get(ch0, "message");
        /* an answer cut at max_tokens never processed its end token, so only
         * a stopped one can be restored whole */
        prev_stopped = !strcmp(json_string_value(json_object_get(ch0, "finish_reason")), "stop");
        json_t *am = json_pack("{s:s,s:O}", "role", "assistant", "content", json_object_get(m, "content"));
        if (json_is_string(json_object_get(m, "reasoning_content")))
            json_object_set(am, "reasoning_content", json_object_get(m, "reasoning_content"));
        json_array_append_new(msgs, am);
        prev_turn_end = chat_tokens(tok, msgs, json_array_size(msgs), 0, thinking);
        json_decref(a);
        json_decref(b);
    }
    print_message("%s%s thinking=%d: of %d later turns, %d restored past the previous user message, %d the whole "
                  "previous answer (%d after an answer that stopped)\n", model, extra, thinking, turns - 1, beyond,
                  turn_end_hits, n_stopped);
    if (stopped) *stopped = n_stopped;
    json_decref(msgs);
    return turn_end_hits;
}

static void test_multiturn_cache(void **st) {
    /* snapshots at prompt ends and turn boundaries only (no interval ones), so
     * the reuse measured is the boundaries' */
    st_server_opts o = st_server_default_params();
    o.cache_interval = 0;
    g_conv_cached = g_conv_hits = 0;
    st_server *warm = start(o);
    o.cache_bytes = 0;
    st_server *cold = start(o);
    int pw = st_server_port(warm), pc = st_server_port(cold);
    for (int thinking = 1; thinking >= 0; thinking--) {
        conversation(g_tok, pw, pc, "starling:L", "", thinking, NULL);
        conversation(g_tok, pw, pc, "starling:S", "", thinking, NULL);
    }
    conversation(g_tok, pw, pc, "starling:L", ",\"think_with\":\"S\",\"answer_with\":\"L\"", 1, NULL);
    /* /metrics counts at least what the responses reported (exact switches
     * also look up the answer budget's prompt), and the bytes stay capped */
    assert_true(g_conv_cached > 0);
    assert_true(metric(pw, "starling_prompt_cache_hits_total") >= g_conv_hits);
    assert_true(metric(pw, "starling_prompt_cache_hit_tokens_total") >= g_conv_cached);
    long long bytes = metric(pw, "starling_prompt_cache_bytes");
    assert_true(bytes > 0 && bytes <= metric(pw, "starling_prompt_cache_max_bytes"));
    assert_true(metric(pw, "starling_prompt_cache_stores_total") >= metric(pw, "starling_prompt_cache_entries"));
    assert_int_equal(metric(pc, "starling_prompt_cache_hits_total"), 0);
    /* the help states the cache's size and policy */
    char cmd[700];
    snprintf(cmd, sizeof cmd, "%s serve --help", starling_bin());
    int status;
    char *help = run_capture(cmd, &status);
    assert_int_equal(status, 0);
    assert_non_null(strstr(help, "--cache-mb N"));
    assert_non_null(strstr(help, "least recently used"));
    assert_non_null(strstr(help, "end of every\nchat message"));
    free(help);
    st_server_stop(warm);
    st_server_stop(cold);
}

/* The trained default model writes text that tokenizes back to what it
 * sampled, so with thinking off the state after a whole answer is reused
 * too: the next turn prefills only its own message. */
static void test_multiturn_shipped(void **st) {
    st_model *m;
    st_tokenizer *tok;
    if (st_model_load("models/elastic", &m)) { print_message("models/elastic not present: skipped\n"); skip(); }
    if (st_tokenizer_load("models/elastic/tokenizer.json", &tok)) fail_msg("%s", st_last_error());
    st_server_opts o = st_server_default_params();
    o.cache_interval = 0;
    st_server *warm = start_with(m, tok, o);
    o.cache_bytes = 0;
    st_server *cold = start_with(m, tok, o);
    int pw = st_server_port(warm), pc = st_server_port(cold);
    int stopped[2];
    int whole = conversation(tok, pw, pc, "starling:9.5M", "", 0, &stopped[0]);
    whole += conversation(tok, pw, pc, "starling:4M", "", 0, &stopped[1]);
    conversation(tok, pw, pc, "starling:9.5M", "", 1, NULL);
    conversation(tok, pw, pc, "starling:9.5M", ",\"think_with\":\"4M\",\"answer_with\":\"9.5M\"", 1, NULL);
    conversation(tok, pw, pc, "starling:9.5M", ",\"think_with\":\"4M\",\"switch_mode\":\"reread\"", 1, NULL);
    /* greedy, so fixed for a given checkpoint. Only turns after an answer that
     * stopped can be restored whole (one cut at max_tokens never processed its
     * end token), and only if its text tokenizes back to what was sampled,
     * which greedy output need not do (" 8" "8" is not the tokenizer's "88"):
     * so half of them, not all. A cache that never restores an answer fails;
     * so does a model whose answers never stop, which would test nothing. */
    int eligible = stopped[0] + stopped[1];
    if (eligible < 2) fail_msg("only %d of the later turns followed an answer that stopped", eligible);
    if (whole < (eligible + 1) / 2)
        fail_msg("the whole previous answer was restored in %d of %d turns after one that stopped", whole, eligible);
    st_server_stop(warm);
    st_server_stop(cold);
    st_tokenizer_free(tok);
    st_model_free(m);
}

static void test_openai_npm(void **st) {
    /* the pinned openai package, fetched once into build/npmcache */
    int status;
    char *o = run_capture("command -v node >/dev/null && command -v npm >/dev/null && echo yes", &status);
    int have = !strncmp(o, "yes", 3);
    free(o);
    if (!have) { print_message("node/npm not installed: openai client test skipped\n"); skip(); }
    if (access("build/npmcache/node_modules/openai/package.json", F_OK)) {
        o = run_capture("mkdir -p build/npmcache && cp tests/server/package.json tests/server/package-lock.json build/npmcache/ && "
                        "cd build/npmcache && timeout 300 npm ci --no-audit --no-fund --silent 2>&1", &status);
        if (status) { print_message("npm ci failed, openai client test skipped: %s\n", o); free(o); skip(); }
        free(o);
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "STARLING_NPM=build/npmcache timeout 120 node tests/server/openai.mjs %d 2>&1", g_port);
    o = run_capture(cmd, &status);
    if (status) fail_msg("openai.mjs failed:\n%s", o);
    assert_non_null(strstr(o, "all ok"));
    free(o);
}

/* `starling serve` itself: port file, then a clean exit on SIGTERM. */
static void test_cli_sigterm(void **st) {
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "%s serve --help >/dev/null 2>&1", starling_bin());
    if (system(cmd)) { print_message("this starling binary has no serve command: skipped\n"); skip(); }
    char pf[700];
    snprintf(pf, sizeof pf, "%s/port", g_tmp);
    pid_t pid = fork();
    if (pid == 0) {
        char mdir[700];
        snprintf(mdir, sizeof mdir, "%s", g_model);
        freopen("/dev/null", "w", stderr);
        execl(starling_bin(), starling_bin(), "serve", "-m", mdir, "--port", "0", "--port-file", pf, "-t", "2", (char *)NULL);
        _exit(127);
    }
    int port = 0;
    for (int i = 0; i < 1000 && !port; i++) {
        FILE *f = fopen(pf, "r");
        if (f) { if (fscanf(f, "%d", &port) != 1) port = 0; fclose(f); }
        if (!port) usleep(10000);
    }
    assert_true(port > 0);
    resp r = http(port, "POST", "/v1/completions", "{\"prompt\":\"hi\",\"max_tokens\":4,\"temperature\":0}", NULL);
    assert_int_equal(r.code, 200);
    free(r.body);
    kill(pid, SIGTERM);
    int wst = 0;
    for (int i = 0; i < 1000; i++) {
        if (waitpid(pid, &wst, WNOHANG) == pid) break;
        usleep(10000);
        if (i == 999) { kill(pid, SIGKILL); waitpid(pid, &wst, 0); fail_msg("serve did not exit on SIGTERM"); }
    }
    assert_true(WIFEXITED(wst));
    assert_int_equal(WEXITSTATUS(wst), 0);
}

/* `starling eval`: every single budget x cap and every pair x switch mode gets
 * a row; impossible transplants are n/a with the reason; the plot is SVG. */
static void test_eval_cli(void **st) {
    char cmd[1600];
    snprintf(cmd, sizeof cmd, "%s eval --help >/dev/null 2>&1", starling_bin());
    if (system(cmd)) { print_message("this starling binary has no eval command: skipped\n"); skip(); }
    int status;
    snprintf(cmd, sizeof cmd, "%s eval -m %s --arith 3 -n 20 --caps 0,6 -o %s/eval -q -t 2 --write-task %s/task.jsonl",
             starling_bin(), g_model, g_tmp, g_tmp);
    char *o = run_capture(cmd, &status);
    if (status) fail_msg("eval: %s", o);
    assert_non_null(strstr(o, "| S, cap 6 | S | S | - | 6 |"));
    free(o);
    char p[700];
    snprintf(p, sizeof p, "%s/eval/eval.tsv", g_tmp);
    char *tsv = slurp(p);
    assert_non_null(tsv);
    int lines = 0, na = 0;
    for (char *l = strtok(tsv, "\n"); l; l = strtok(NULL, "\n")) {
        lines++;
        if (strstr(l, "n/a: transplant")) { na++; assert_true(strstr(l, "\ttransplant\t") || strstr(l, "\treread\t")); }
    }
    assert_int_equal(lines, 1 + 3 * 2 + 4 * 3); /* header, L/M/S x 2 caps, 4 pairs x 3 modes */
    assert_int_equal(na, 8); /* no pair of this model shares Mamba widths: transplant and reread n/a */
    free(tsv);
    snprintf(p, sizeof p, "%s/eval/eval.svg", g_tmp);
    char *svg = slurp(p);
    assert_non_null(svg);
    assert_true(!strncmp(svg, "<svg ", 5) && strstr(svg, "</svg>\n"));
    free(svg);
    /* the same task from the file it wrote: same table */
    snprintf(cmd, sizeof cmd, "%s eval -m %s --task %s/task.jsonl -n 20 --caps 0 --pairs S:L -o %s/eval2 -q -t 2",
             starling_bin(), g_model, g_tmp, g_tmp);
    o = run_capture(cmd, &status);
    assert_int_equal(status, 0);
    assert_non_null(strstr(o, "3 items from"));
    free(o);
    /* items with a "kind": accuracy per kind in both outputs, one column per kind
       in order of first appearance; items without a kind count in the total only */
    snprintf(p, sizeof p, "%s/kinds.jsonl", g_tmp);
    FILE *kf = fopen(p, "w");
    assert_non_null(kf);
    fputs("{\"kind\": \"add\", \"prompt\": \"1 + 2 = ?\", \"answer\": \"3\"}\n"
          "{\"kind\": \"sort\", \"prompt\": \"Sort 2, 1.\", \"answer\": \"1, 2\"}\n"
          "{\"prompt\": \"2 + 2 = ?\", \"answer\": 4}\n"
          "{\"kind\": \"add\", \"prompt\": \"3 + 4 = ?\", \"answer\": \"7\"}\n", kf);
    fclose(kf);
    snprintf(cmd, sizeof cmd, "%s eval -m %s --task %s/kinds.jsonl -n 4 --caps 0 --budgets L --pairs '' -o %s/eval3 -q -t 2",
             starling_bin(), g_model, g_tmp, g_tmp);
    o = run_capture(cmd, &status);
    assert_int_equal(status, 0);
    assert_non_null(strstr(o, "Accuracy by kind of problem:\n\n| config | add | sort |\n|---|---|---|\n| L, cap 0 | "));
    free(o);
    snprintf(p, sizeof p, "%s/eval3/eval.tsv", g_tmp);
    tsv = slurp(p);
    assert_non_null(tsv);
    assert_non_null(strstr(tsv, "\tnote\taccuracy_add\taccuracy_sort\tfrontier\n"));
    int tabs = 0;
    const char *c = strchr(tsv, '\n') + 1;
    for (; *c && *c != '\n'; c++) tabs += *c == '\t';
    assert_int_equal(tabs, 14); /* 12 columns + 2 kinds + frontier - 1 */
    assert_true(c[-1] == '1'); /* the only configuration is on the frontier */
    double acc = atof(strstr(tsv, "\nL, cap 0\tL\tL\t-\t0\t") + 17);
    free(tsv);
    /* items.tsv: one line per item of the configuration, in task order, with
       its kind; its correct column adds up to the table's accuracy */
    snprintf(p, sizeof p, "%s/eval3/items.tsv", g_tmp);
    tsv = slurp(p);
    assert_non_null(tsv);
    static const char ihead[] = "config\titem\tkind\tcorrect\tlatency_s\ttokens\n";
    assert_true(!strncmp(tsv, ihead, sizeof ihead - 1));
    const char *kinds[4] = {"add", "sort", "-", "add"};
    int n_items = 0, right = 0;
    for (char *l = strtok(tsv + sizeof ihead - 1, "\n"); l; l = strtok(NULL, "\n"), n_items++) {
        char cfg[64], kind[16];
        int item, ok, ntok;
        double lat;
        assert_int_equal(sscanf(l, "%63[^\t]\t%d\t%15[^\t]\t%d\t%lf\t%d", cfg, &item, kind, &ok, &lat, &ntok), 6);
        assert_string_equal(cfg, "L, cap 0");
        assert_true(n_items < 4);
        assert_int_equal(item, n_items);
        assert_string_equal(kind, kinds[n_items]);
        assert_true((ok == 0 || ok == 1) && lat > 0 && ntok >= 1);
        right += ok;
    }
    assert_int_equal(n_items, 4);
    assert_true(fabs(acc - right / 4.0) < 1e-3);
    free(tsv);
    /* best of 3 runs per item: the same answers (greedy), no slower a latency
       than its own first run could have been; --repeat 0 is refused */
    snprintf(cmd, sizeof cmd, "%s eval -m %s --task %s/kinds.jsonl -n 4 --caps 0 --budgets L --pairs '' -o %s/eval4 -q -t 2 --repeat 3",
             starling_bin(), g_model, g_tmp, g_tmp);
    free(run_capture(cmd, &status));
    assert_int_equal(status, 0);
    snprintf(p, sizeof p, "%s/eval4/eval.tsv", g_tmp);
    tsv = slurp(p);
    assert_non_null(tsv);
    assert_true(fabs(atof(strstr(tsv, "\nL, cap 0\tL\tL\t-\t0\t") + 17) - acc) < 1e-9);
    free(tsv);
    snprintf(cmd, sizeof cmd, "%s eval -m %s --arith 2 --repeat 0 2>/dev/null", starling_bin(), g_model);
    free(run_capture(cmd, &status));
    assert_int_equal(status, 2);
    snprintf(cmd, sizeof cmd, "%s eval -m %s --task /nonexistent.jsonl 2>&1", starling_bin(), g_model);
    o = run_capture(cmd, &status);
    assert_int_equal(status, 1);
    free(o);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_models_metrics),
        cmocka_unit_test(test_chat_curl),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_api_key),
        cmocka_unit_test(test_queue_full_and_shutdown),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_load),
        cmocka_unit_test(test_same_as_run),
        cmocka_unit_test(test_batched_same_as_run),
        cmocka_unit_test(test_speculative_field),
        cmocka_unit_test(test_multiturn_cache),
        cmocka_unit_test(test_multiturn_shipped),
        cmocka_unit_test(test_openai_npm),
        cmocka_unit_test(test_cli_sigterm),
        cmocka_unit_test(test_eval_cli),
    };
    return cmocka_run_group_tests_name("server", tests, setup, teardown);
}

/*
 * test_soak.c — a bounded soak of `starling serve` on loopback. The server is
 * the real command in a child process (so its RSS, open descriptors and
 * threads can be read from /proc, and SIGTERM is a real signal). 16 client
 * threads mix, until the time is up:
 *   plain and streaming chat/completion requests at four model ids and a
 *   think-with-S / answer-with-full pair (budget switches), whose greedy text
 *   must equal a reference taken one request at a time before the soak;
 *   streams cancelled mid-way (the socket closed after the first bytes);
 *   malformed bodies (400 with an error object), oversized bodies (413),
 *   /health; any request may instead get 429, which must carry Retry-After.
 * Then RSS, descriptors and threads must be flat (a second half of the soak
 * against the first), and SIGTERM during four long streams must end each with
 * a final event and [DONE], refuse new connections, and exit 0.
 *
 * Length: ST_SOAK_SECONDS (default 20; `make soak` runs 120; ST_TEST_QUICK,
 * the sanitizer pass, 6). Figures of the 120 s run: docs/RELIABILITY.md.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "server/sched.h" /* st_buf */
#include "util/util.h"
#include "util_test.h"

#define N_CLIENTS 16
#define N_KINDS 6
#define MAX_BODY 65536

static int g_port;
static pid_t g_pid;
static char *g_ref[N_KINDS];

/* ------------------------------------------------------------ HTTP client */

typedef struct {
    int status;          /* -1: connection failed; -2: cancelled by us */
    char *head;          /* status line + headers */
    char *body;          /* de-chunked */
    size_t n;
} resp;

static void resp_free(resp *r) { free(r->head); free(r->body); memset(r, 0, sizeof *r); }

static int dial(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    struct timeval tv = {60, 0}; /* a wedged server fails the test instead of hanging it */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { close(fd); return -1; }
    return fd;
}

static void send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) { if (w < 0 && errno == EINTR) continue; return; } /* the server may close early (413) */
        p += w; n -= (size_t)w;
    }
}

static void dechunk(resp *r) {
    if (!strcasestr(r->head, "transfer-encoding: chunked")) return;
    char *out = malloc(r->n + 1), *p = r->body, *end = r->body + r->n;
    size_t o = 0;
    while (p < end) {
        char *e;
        unsigned long k = strtoul(p, &e, 16);
        char *nl = strstr(p, "\r\n");
        if (!nl || e == p) break;
        p = nl + 2;
        if (!k || p + k > end) break;
        memcpy(out + o, p, k);
        o += k;
        p += k + 2;
    }
    out[o] = 0;
    free(r->body);
    r->body = out;
    r->n = o;
}

/* One request on a fresh connection ("Connection: close"); cancel_after > 0
 * closes the socket once that many body bytes arrived. */
static void http(const char *method, const char *path, const char *body, size_t blen, long cancel_after, resp *r) {
    memset(r, 0, sizeof *r);
    r->status = -1;
    int fd = dial();
    if (fd < 0) return;
    char hdr[512];
    int hn = snprintf(hdr, sizeof hdr, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n", method, path, blen);
    send_all(fd, hdr, (size_t)hn);
    if (blen) send_all(fd, body, blen);
    size_t cap = 8192, n = 0;
    char *buf = malloc(cap);
    ssize_t k;
    char *sep = NULL;
    for (;;) {
        if (n + 4096 > cap) buf = realloc(buf, cap *= 2);
        k = recv(fd, buf + n, cap - n - 1, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        n += (size_t)k;
        buf[n] = 0;
        if (!sep) sep = strstr(buf, "\r\n\r\n");
        if (sep && cancel_after > 0 && (long)(n - (size_t)(sep + 4 - buf)) >= cancel_after) {
            close(fd);
            fd = -1;
            r->status = -2;
            break;
        }
    }
    if (fd >= 0) close(fd);
    buf[n] = 0;
    sep = strstr(buf, "\r\n\r\n");
    if (!sep) { free(buf); if (r->status != -2) r->status = -1; return; }
    if (r->status != -2) r->status = atoi(buf + 9);
    size_t hl = (size_t)(sep - buf);
    r->head = strndup(buf, hl);
    r->n = n - hl - 4;
    r->body = malloc(r->n + 1);
    memcpy(r->body, sep + 4, r->n);
    r->body[r->n] = 0;
    free(buf);
    if (r->status > 0) dechunk(r);
}

/* ------------------------------------------------------------ requests */

static char *request_body(int kind, int stream, int max_tokens) {
    static const char *const ids[] = {"starling", "starling:S", "starling:M", "starling:full", "starling:full"};
    char b[800];
    if (kind == 5)
        snprintf(b, sizeof b, "{\"model\": \"starling:S\", \"prompt\": \"Once upon a time\", \"max_tokens\": %d,"
                 " \"temperature\": 0, \"stream\": %s}", max_tokens, stream ? "true" : "false");
    else
        snprintf(b, sizeof b, "{\"model\": \"%s\", \"messages\": [{\"role\": \"user\", \"content\": \"Tell me about %d.\"}],"
                 " \"max_tokens\": %d, \"temperature\": 0, \"stream\": %s%s}", ids[kind], kind, max_tokens,
                 stream ? "true" : "false",
                 kind == 4 ? ", \"think_with\": \"S\", \"answer_with\": \"full\", \"thinking_budget\": 6" : "");
    return strdup(b);
}

static const char *path_of(int kind) { return kind == 5 ? "/v1/completions" : "/v1/chat/completions"; }

/* the model is random: its text may hold NULs (\u0000), kept with lengths */
static void put_json_str(st_buf *b, json_t *v) {
    if (json_is_string(v)) st_buf_put(b, json_string_value(v), json_string_length(v));
}

/* reasoning + "|" + content as a NUL-terminated copy where NULs become 0x01 */
static char *joined(const st_buf *rs, const st_buf *ct) {
    char *out = malloc(rs->n + ct->n + 2);
    memcpy(out, rs->p ? rs->p : "", rs->n);
    out[rs->n] = '|';
    memcpy(out + rs->n + 1, ct->p ? ct->p : "", ct->n);
    out[rs->n + 1 + ct->n] = 0;
    for (size_t i = 0; i < rs->n + 1 + ct->n; i++) if (!out[i]) out[i] = 1;
    return out;
}

/* reasoning + "|" + content of a whole response, or NULL when malformed */
static char *text_of_json(int kind, const char *body) {
    json_t *j = json_loads(body, JSON_ALLOW_NUL, NULL);
    json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
    st_buf rs = {0}, ct = {0};
    json_t *m = kind == 5 ? c0 : json_object_get(c0, "message");
    json_t *c = json_object_get(m, kind == 5 ? "text" : "content");
    char *out = NULL;
    if (json_is_string(c)) {
        put_json_str(&ct, c);
        put_json_str(&rs, json_object_get(m, "reasoning_content"));
        out = joined(&rs, &ct);
    }
    st_buf_free(&rs);
    st_buf_free(&ct);
    json_decref(j);
    return out;
}

/* The same from an SSE stream; NULL unless it ends with a finish_reason chunk
 * and [DONE]. *final_error: the last event was an error object instead. */
static char *text_of_sse(int kind, const char *body, int *final_error) {
    st_buf rs = {0}, ct = {0};
    int finished = 0, done = 0, bad = 0;
    *final_error = 0;
    const char *p = body;
    while ((p = strstr(p, "data: "))) {
        p += 6;
        const char *e = strstr(p, "\n\n");
        if (!e) { bad = 1; break; }
        if (!strncmp(p, "[DONE]", 6)) { done = 1; p = e; continue; }
        if (done) bad = 1;
        json_t *j = json_loadb(p, (size_t)(e - p), JSON_ALLOW_NUL, NULL);
        if (!j) { bad = 1; break; }
        if (json_object_get(j, "error")) *final_error = 1;
        json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
        if (c0) {
            json_t *fr = json_object_get(c0, "finish_reason");
            if (fr && !json_is_null(fr)) finished = 1;
            if (kind == 5) put_json_str(&ct, json_object_get(c0, "text"));
            else {
                json_t *d = json_object_get(c0, "delta");
                put_json_str(&ct, json_object_get(d, "content"));
                put_json_str(&rs, json_object_get(d, "reasoning_content"));
            }
        }
        json_decref(j);
        p = e;
    }
    char *out = !bad && done && (finished || *final_error) ? joined(&rs, &ct) : NULL;
    st_buf_free(&rs);
    st_buf_free(&ct);
    return out;
}

/* ------------------------------------------------------------ clients */

enum { C_OK, C_STREAM_OK, C_429, C_CANCEL, C_400, C_413, C_HEALTH, C_FAIL, C_N };
static const char *const c_names[C_N] = {"plain ok", "stream ok", "429", "cancelled", "malformed 400", "oversized 413",
                                         "health", "FAILED"};
static atomic_long g_count[C_N];
static pthread_mutex_t g_fail_mu = PTHREAD_MUTEX_INITIALIZER;
static char g_fail_msg[1024];
static double g_until;

static void failed(const char *fmt, ...) {
    atomic_fetch_add(&g_count[C_FAIL], 1);
    pthread_mutex_lock(&g_fail_mu);
    if (!g_fail_msg[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(g_fail_msg, sizeof g_fail_msg, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&g_fail_mu);
}

static int is_429(const resp *r) {
    if (r->status != 429) return 0;
    if (!strcasestr(r->head, "\r\nRetry-After:")) failed("429 without Retry-After: %s", r->head);
    else atomic_fetch_add(&g_count[C_429], 1);
    usleep(20000); /* back off a little (Retry-After says 1 s: too slow for a soak) */
    return 1;
}

static void one_action(uint64_t *rng) {
    int a = (int)(st_splitmix64(rng) % 100), kind = (int)(st_splitmix64(rng) % N_KINDS);
    resp r;
    if (a < 35 || a >= 95) { /* plain */
        char *b = request_body(kind, 0, 24);
        http("POST", path_of(kind), b, strlen(b), 0, &r);
        free(b);
        if (!is_429(&r)) {
            char *t = r.status == 200 ? text_of_json(kind, r.body) : NULL;
            if (!t || strcmp(t, g_ref[kind])) failed("plain kind %d: status %d, %s", kind, r.status, r.body ? r.body : "");
            else atomic_fetch_add(&g_count[C_OK], 1);
            free(t);
        }
    } else if (a < 65) { /* streaming */
        char *b = request_body(kind, 1, 24);
        http("POST", path_of(kind), b, strlen(b), 0, &r);
        free(b);
        if (!is_429(&r)) {
            int ferr;
            char *t = r.status == 200 ? text_of_sse(kind, r.body, &ferr) : NULL;
            if (!t || ferr || strcmp(t, g_ref[kind])) failed("stream kind %d: status %d, %s", kind, r.status, r.body ? r.body : "");
            else atomic_fetch_add(&g_count[C_STREAM_OK], 1);
            free(t);
        }
    } else if (a < 77) { /* cancelled mid-stream */
        char *b = request_body(kind, 1, 200);
        http("POST", path_of(kind), b, strlen(b), 1 + (long)(st_splitmix64(rng) % 300), &r);
        free(b);
        if (!is_429(&r)) {
            if (r.status == -1) failed("cancel: no response");
            else atomic_fetch_add(&g_count[C_CANCEL], 1);
        }
    } else if (a < 87) { /* malformed */
        static const char *const bad[] = {"{", "[1,2,3]", "{\"messages\": 3}", "{\"model\": \"starling:nope\", \"messages\": []}",
                                          "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"max_tokens\": -5}",
                                          "{\"bogus_field\": 1}", "\xff\xfe\x00garbage"};
        int i = (int)(st_splitmix64(rng) % (sizeof bad / sizeof *bad));
        http("POST", "/v1/chat/completions", bad[i], strlen(bad[i]) + (i == 6), 0, &r);
        if (!is_429(&r)) {
            json_t *j = r.body ? json_loads(r.body, 0, NULL) : NULL;
            if (r.status < 400 || r.status >= 500 || !json_object_get(j, "error"))
                failed("malformed body %d: status %d, %s", i, r.status, r.body ? r.body : "");
            else atomic_fetch_add(&g_count[C_400], 1);
            json_decref(j);
        }
    } else if (a < 92) { /* oversized */
        size_t n = MAX_BODY + 1 + st_splitmix64(rng) % 4096;
        char *b = malloc(n);
        memset(b, ' ', n);
        b[0] = '{'; b[n - 1] = '}';
        http("POST", "/v1/chat/completions", b, n, 0, &r);
        free(b);
        if (!is_429(&r)) {
            if (r.status != 413) failed("oversized: status %d", r.status);
            else atomic_fetch_add(&g_count[C_413], 1);
        }
    } else {
        http("GET", "/health", "", 0, 0, &r);
        if (r.status != 200) failed("health: status %d", r.status);
        else atomic_fetch_add(&g_count[C_HEALTH], 1);
    }
    resp_free(&r);
}

static void *client(void *arg) {
    uint64_t rng = 1000 + (uint64_t)(uintptr_t)arg;
    while (st_time() < g_until && !atomic_load(&g_count[C_FAIL])) one_action(&rng);
    return NULL;
}

static void soak_for(double secs) {
    g_until = st_time() + secs;
    pthread_t th[N_CLIENTS];
    for (int i = 0; i < N_CLIENTS; i++) pthread_create(&th[i], NULL, client, (void *)(uintptr_t)i);
    for (int i = 0; i < N_CLIENTS; i++) pthread_join(th[i], NULL);
}

/* ------------------------------------------------------------ the server process */

typedef struct { long rss_kb, threads, fds; } usage;

static usage server_usage(void) {
    usage u = {0};
    char p[64], line[256];
    snprintf(p, sizeof p, "/proc/%d/status", (int)g_pid);
    FILE *f = fopen(p, "r");
    while (f && fgets(line, sizeof line, f)) {
        if (!strncmp(line, "VmRSS:", 6)) u.rss_kb = atol(line + 6);
        if (!strncmp(line, "Threads:", 8)) u.threads = atol(line + 8);
    }
    if (f) fclose(f);
    snprintf(p, sizeof p, "/proc/%d/fd", (int)g_pid);
    DIR *d = opendir(p);
    struct dirent *e;
    while (d && (e = readdir(d))) if (e->d_name[0] != '.') u.fds++;
    if (d) closedir(d);
    return u;
}

/* Idle usage once the connection threads of finished requests have exited
 * (libmicrohttpd joins them lazily): poll until threads and fds stop falling. */
static usage idle_usage(long want_threads, long want_fds) {
    usage u = server_usage();
    for (int i = 0; i < 100 && (u.threads > want_threads || u.fds > want_fds); i++) {
        usleep(50000);
        u = server_usage();
    }
    return u;
}

/* A free port, chosen here. The server gets it as an explicit --port: a
 * socket bound to a port it asked for keeps that port when the drain shuts it
 * down, while one bound to port 0 releases it at once, and a server of another
 * test on this machine could get it and answer the "refused" check. */
static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &len)) return 0;
    close(fd);
    return ntohs(a.sin_port);
}

static int try_start_server(const char *model, const char *dir) {
    char port_file[700], port[16];
    snprintf(port_file, sizeof port_file, "%s/port", dir);
    snprintf(port, sizeof port, "%d", free_port());
    unlink(port_file);
    fflush(stdout);
    g_pid = fork();
    assert_true(g_pid >= 0);
    if (g_pid == 0) {
        FILE *dn = freopen("/dev/null", "w", stdout);
        if (!getenv("ST_TEST_VERBOSE")) dn = freopen("/dev/null", "w", stderr);
        (void)dn;
#ifdef __SANITIZE_ADDRESS__
        /* ASan keeps freed blocks in a quarantine (256 MiB by default), so an
           ASan server's RSS grows until that is full, which the flat-RSS check
           below would read as a leak (it did once: +34 MB over the second half) */
        char opts[512];
        const char *o = getenv("ASAN_OPTIONS");
        snprintf(opts, sizeof opts, "%s%squarantine_size_mb=8", o ? o : "", o && *o ? ":" : "");
        setenv("ASAN_OPTIONS", opts, 1);
#endif
        execl(starling_bin(), starling_bin(), "serve", "-m", model, "--port", port, "--port-file", port_file, "-q",
              "--parallel", "4", "--queue", "8", "--max-body", "65536", "--cache-mb", "16", "--threads", "1",
              "--ctx", "32768", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 600 && !g_port; i++) { /* the port file appears once listening */
        char *s;
        if (st_read_file(port_file, &s, NULL) == ST_OK) { g_port = atoi(s); free(s); }
        else usleep(50000);
        int st;
        if (waitpid(g_pid, &st, WNOHANG) == g_pid) { g_pid = 0; return 0; } /* e.g. the port was taken meanwhile */
    }
    return g_port > 0;
}

static void start_server(const char *model, const char *dir) {
    for (int i = 0; i < 5; i++)
        if (try_start_server(model, dir)) return;
    fail_msg("starling serve did not start (5 tries)");
}

/* ------------------------------------------------------------ SIGTERM drain */

typedef struct { int i; atomic_int started; resp r; } drain_arg;

static void *long_stream(void *arg) {
    drain_arg *d = arg;
    /* end-of-text ids (the synthetic model's generation_config: 2, 11) banned,
       so that the stream is still running when SIGTERM comes, and ends by the
       drain rather than by itself */
    char b[300];
    snprintf(b, sizeof b, "{\"model\": \"starling:S\", \"prompt\": \"Once upon a time\", \"max_tokens\": 30000,"
             " \"temperature\": 0, \"stream\": true, \"logit_bias\": {\"2\": -100, \"11\": -100}}");
    int fd = dial();
    if (fd < 0) { d->r.status = -1; atomic_store(&d->started, -1); return NULL; }
    char hdr[512];
    int hn = snprintf(hdr, sizeof hdr, "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n", strlen(b));
    send_all(fd, hdr, (size_t)hn);
    send_all(fd, b, strlen(b));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n + 4096 > cap) buf = realloc(buf, cap *= 2);
        ssize_t k = recv(fd, buf + n, cap - n - 1, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        n += (size_t)k;
        buf[n] = 0;
        if (!atomic_load(&d->started) && strstr(buf, "\"text\":\"") && strstr(strstr(buf, "\"text\":\"") + 8, "\"text\":\""))
            atomic_store(&d->started, 1); /* tokens are flowing */
    }
    close(fd);
    buf[n] = 0;
    char *sep = strstr(buf, "\r\n\r\n");
    d->r.status = sep ? atoi(buf + 9) : -1;
    if (sep) {
        d->r.head = strndup(buf, (size_t)(sep - buf));
        d->r.body = strdup(sep + 4);
        d->r.n = strlen(d->r.body);
        dechunk(&d->r);
    }
    free(buf);
    if (!atomic_load(&d->started)) atomic_store(&d->started, -1);
    return NULL;
}

static void test_soak(void **state) {
    (void)state;
    const char *env = getenv("ST_SOAK_SECONDS");
    double secs = env ? atof(env) : test_quick() ? 6 : 20;
    char *dir = test_tmpdir("soak");
    char model[700], cmd[1500];
    snprintf(model, sizeof model, "%s/model", dir);
    snprintf(cmd, sizeof cmd, "%s synth --preset default -o '%s' >/dev/null 2>&1", starling_bin(), model);
    int st;
    free(run_capture(cmd, &st));
    assert_int_equal(st, 0);
    start_server(model, dir);
    usage u0 = server_usage();
    /* references: each kind alone, plain (the stream must say the same) */
    for (int k = 0; k < N_KINDS; k++) {
        char *b = request_body(k, 0, 24);
        resp r;
        http("POST", path_of(k), b, strlen(b), 0, &r);
        free(b);
        if (r.status != 200) fail_msg("reference kind %d: status %d %s", k, r.status, r.body ? r.body : "");
        g_ref[k] = text_of_json(k, r.body);
        if (!g_ref[k]) fail_msg("reference kind %d: %s", k, r.body);
        resp_free(&r);
    }
    /* warm-up (allocator arenas, prompt cache up to its cap), then two halves */
    soak_for(secs * 0.1);
    usage u1 = idle_usage(u0.threads, u0.fds);
    double t0 = st_time();
    soak_for(secs * 0.45);
    usage u2 = idle_usage(u0.threads, u0.fds);
    soak_for(secs * 0.45);
    usage u3 = idle_usage(u0.threads, u0.fds);
    double dt = st_time() - t0;
    long total = 0;
    for (int i = 0; i < C_N; i++) total += atomic_load(&g_count[i]);
    printf("  soak %.0f s, %d clients, %ld requests:", dt, N_CLIENTS, total);
    for (int i = 0; i < C_N; i++) printf(" %s %ld%s", c_names[i], atomic_load(&g_count[i]), i + 1 < C_N ? "," : "\n");
    printf("  server RSS / threads / fds: start %ld kB / %ld / %ld, after warm-up %ld / %ld / %ld, "
           "half %ld / %ld / %ld, end %ld / %ld / %ld\n", u0.rss_kb, u0.threads, u0.fds, u1.rss_kb, u1.threads, u1.fds,
           u2.rss_kb, u2.threads, u2.fds, u3.rss_kb, u3.threads, u3.fds);
    if (atomic_load(&g_count[C_FAIL])) fail_msg("soak: %s", g_fail_msg);
    assert_true(atomic_load(&g_count[C_OK]) > 0 && atomic_load(&g_count[C_STREAM_OK]) > 0);
    assert_true(atomic_load(&g_count[C_CANCEL]) > 0 && atomic_load(&g_count[C_400]) > 0);
    assert_true(atomic_load(&g_count[C_413]) > 0);
    /* flat: every connection thread and socket gone; RSS of the second half
       within 4 MiB + 5% of the first half's (a leak of one small buffer per
       request would grow it by thousands of requests × its size) */
    assert_int_equal(u3.threads, u0.threads);
    assert_int_equal(u3.fds, u0.fds);
    assert_true(u3.rss_kb <= u2.rss_kb + 4096 + u2.rss_kb / 20);
    /* SIGTERM while four long streams run */
    drain_arg d[4];
    pthread_t th[4];
    memset(d, 0, sizeof d);
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, long_stream, &d[i]);
    for (int i = 0; i < 4; i++)
        for (int w = 0; w < 1200 && !atomic_load(&d[i].started); w++) usleep(10000);
    for (int i = 0; i < 4; i++) assert_int_equal(atomic_load(&d[i].started), 1);
    kill(g_pid, SIGTERM);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++) {
        int ferr;
        char *t = d[i].r.status == 200 ? text_of_sse(5, d[i].r.body, &ferr) : NULL;
        /* the final event is the drain's error object ("shutting_down"): the
           stream was cut by SIGTERM, not finished on its own */
        if (!t || !ferr || !strstr(d[i].r.body, "shutting_down")) fail_msg("drain: stream %d did not end with a final event and [DONE] (status %d): ...%s", i,
                         d[i].r.status, d[i].r.body && d[i].r.n > 300 ? d[i].r.body + d[i].r.n - 300 : "");
        free(t);
        resp_free(&d[i].r);
    }
    /* the listening socket was shut down before the running requests were
       ended: a new connection is refused */
    resp r;
    http("GET", "/health", "", 0, 0, &r);
    int refused = r.status == -1;
    if (!refused) fail_msg("after SIGTERM, a new connection got status %d: %s", r.status, r.body ? r.body : "");
    resp_free(&r);
    int ws = 0;
    for (int i = 0; i < 3000 && waitpid(g_pid, &ws, WNOHANG) == 0; i++) usleep(10000);
    if (!(WIFEXITED(ws) && WEXITSTATUS(ws) == 0)) {
        kill(g_pid, SIGKILL);
        waitpid(g_pid, &ws, 0);
        fail_msg("starling serve did not exit 0 after SIGTERM (status %#x)", ws);
    }
    printf("  SIGTERM: 4 running streams ended with a final event + [DONE], new connection refused, exit 0\n");
    for (int k = 0; k < N_KINDS; k++) free(g_ref[k]);
    rm_rf(dir);
    free(dir);
}

/* a failed assertion must not leave the server running */
static void kill_server(void) {
    if (g_pid > 0 && waitpid(g_pid, NULL, WNOHANG) == 0) { kill(g_pid, SIGKILL); waitpid(g_pid, NULL, 0); }
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    atexit(kill_server);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_soak)};
    return cmocka_run_group_tests_name("soak", tests, NULL, NULL);
}

/*
 * util.c — error messages, allocation, file helpers, timing, progress bar.
 *
 * Errors: the library reports failures as an st_status plus a message kept in
 * a thread-local buffer (like errno + strerror, but with the file and rule at
 * fault spelled out). Callers up the stack may prefix context.
 */
#include "util/util.h"
#include "util/killsafe.h"

#include <errno.h>
#include <execinfo.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char g_err[1024];

const char *st_last_error(void) { return g_err; }
void st_err_clear(void) { g_err[0] = 0; }

st_status st_err(st_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    return s;
}

st_status st_err_prefix(st_status s, const char *fmt, ...) {
    char pre[512], old[sizeof g_err];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, g_err, sizeof old);
    size_t np = strlen(pre);
    if (np > sizeof g_err - 3) np = sizeof g_err - 3;
    memcpy(g_err, pre, np);
    memcpy(g_err + np, ": ", 2);
    size_t no = strlen(old), room = sizeof g_err - np - 3;
    if (no > room) no = room;
    memcpy(g_err + np + 2, old, no);
    g_err[np + 2 + no] = 0;
    return s;
}

const char *st_status_name(st_status s) {
    switch (s) {
    case ST_OK: return "ok";
    case ST_ERR_IO: return "i/o error";
    case ST_ERR_FORMAT: return "format error";
    case ST_ERR_SHAPE: return "shape mismatch";
    case ST_ERR_MISSING: return "missing";
    case ST_ERR_BUDGET: return "invalid budget";
    case ST_ERR_ARG: return "invalid argument";
    case ST_ERR_NOMEM: return "out of memory";
    case ST_ERR_UNSUPPORTED: return "unsupported";
    case ST_ERR_RANGE: return "out of range";
    }
    return "unknown error";
}

/* Allocation-failure injection (st_alloc_fail_after): while armed, every st_
 * allocation takes a number from g_alloc_n and the one numbered g_alloc_fail
 * fails. Disarmed (the normal state) it costs one relaxed load. Atomic because
 * the server's and OpenMP's threads allocate too. */
static _Atomic long g_alloc_fail = -1, g_alloc_n, g_alloc_hit;

void st_alloc_fail_after(long n) {
    atomic_store(&g_alloc_fail, -1);
    atomic_store(&g_alloc_n, 0);
    atomic_store(&g_alloc_hit, 0);
    atomic_store(&g_alloc_fail, n);
}
long st_alloc_count(void) { return atomic_load(&g_alloc_n); }
int st_alloc_failed(void) { return (int)atomic_load(&g_alloc_hit); }

/* 1: this allocation is the injected failure */
static int alloc_inject(void) {
    const long f = atomic_load_explicit(&g_alloc_fail, memory_order_relaxed);
    if (f < 0) return 0;
    if (atomic_fetch_add(&g_alloc_n, 1) != f) return 0;
    atomic_store(&g_alloc_hit, 1);
    if (getenv("ST_ALLOC_BACKTRACE")) { /* where the failure was injected (debugging a test_alloc run) */
        void *bt[16];
        fprintf(stderr, "st_alloc: injected failure %ld\n", f);
        backtrace_symbols_fd(bt, backtrace(bt, 16), 2);
    }
    return 1;
}

static void *nomem(size_t n) {
    st_err(ST_ERR_NOMEM, "out of memory allocating %zu bytes", n);
    return NULL;
}

void *st_malloc(size_t n) {
    void *p = alloc_inject() ? NULL : malloc(n ? n : 1);
    return p ? p : nomem(n);
}

void *st_calloc(size_t n, size_t sz) {
    void *p = alloc_inject() ? NULL : calloc(n ? n : 1, sz ? sz : 1);
    if (!p) st_err(ST_ERR_NOMEM, "out of memory allocating %zu x %zu bytes", n, sz);
    return p;
}

void *st_realloc(void *p, size_t n) {
    void *q = alloc_inject() ? NULL : realloc(p, n ? n : 1);
    return q ? q : nomem(n);
}

void *st_aligned_malloc(size_t n) {
    size_t sz = (n + 63) & ~(size_t)63;
    void *p = alloc_inject() ? NULL : aligned_alloc(64, sz ? sz : 64);
    return p ? p : nomem(n);
}

void *st_aligned_alloc(size_t n) {
    size_t sz = (n + 63) & ~(size_t)63;
    void *p = st_aligned_malloc(n);
    if (p) memset(p, 0, sz ? sz : 64);
    return p;
}

char *st_strndup(const char *s, size_t n) {
    n = strnlen(s, n);
    char *d = st_malloc(n + 1);
    if (d) { memcpy(d, s, n); d[n] = 0; }
    return d;
}

char *st_strdup(const char *s) { return st_strndup(s, strlen(s)); }

st_status st_read_file(const char *path, char **out, size_t *len) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return st_err(errno == ENOENT ? ST_ERR_MISSING : ST_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return st_err(ST_ERR_IO, "%s: not a regular file", path);
    }
    size_t n = (size_t)sb.st_size;
    char *buf = st_malloc(n + 1);
    if (!buf) { fclose(f); return ST_ERR_NOMEM; }
    if (n && fread(buf, 1, n, f) != n) {
        free(buf); fclose(f);
        return st_err(ST_ERR_IO, "%s: short read", path);
    }
    fclose(f);
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return ST_OK;
}

st_status st_write_file_atomic(const char *path, const void *data, size_t len) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    char *slash = strrchr(tmp, '/');
    if (slash && slash != tmp) { *slash = 0; st_clean_stale(tmp, slash + 1); }
    else if (!slash) st_clean_stale(".", path);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return st_err(ST_ERR_IO, "%s: %s", tmp, strerror(errno));
    const char *p = data;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            int e = errno; close(fd); unlink(tmp);
            return st_err(ST_ERR_IO, "%s: %s", tmp, strerror(e));
        }
        p += w; left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = errno; unlink(tmp);
        return st_err(ST_ERR_IO, "%s: %s", tmp, strerror(e));
    }
    st_killpoint();
    if (rename(tmp, path) != 0) {
        int e = errno; unlink(tmp);
        return st_err(ST_ERR_IO, "rename %s -> %s: %s", tmp, path, strerror(e));
    }
    return ST_OK;
}

double st_time(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ----------------------------------------------------------- progress bar */

static void fmt_qty(char *buf, size_t n, double v, const char *units) {
    if (units && !strcmp(units, "B")) {
        const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
        int i = 0;
        while (v >= 1024 && i < 4) { v /= 1024; i++; }
        snprintf(buf, n, "%.1f %s", v, u[i]);
    } else {
        snprintf(buf, n, "%.0f%s%s", v, units && *units ? " " : "", units ? units : "");
    }
}

static void progress_draw(st_progress *p, int final) {
    double now = st_time(), el = now - p->t0;
    double frac = p->total > 0 ? p->done / p->total : 0;
    if (frac > 1) frac = 1;
    char done[32], tot[32], rate[40];
    fmt_qty(done, sizeof done, p->done, p->units);
    fmt_qty(tot, sizeof tot, p->total, p->units);
    fmt_qty(rate, sizeof rate, el > 0 ? p->done / el : 0, p->units);
    int width = 30, fill = (int)(frac * width + 0.5);
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    double eta = frac > 0 && frac < 1 ? el * (1 - frac) / frac : 0;
    fprintf(stderr, "\r%s [%s] %3.0f%% %s/%s %s/s %s %.0fs%s", p->label, bar, frac * 100, done, tot,
            rate, final ? "in" : "eta", final ? el : eta, final ? "\n" : "  ");
    fflush(stderr);
    p->last_draw = now;
}

void st_progress_begin(st_progress *p, const char *label, double total, const char *units) {
    memset(p, 0, sizeof *p);
    p->label = label; p->units = units; p->total = total;
    p->t0 = st_time();
    p->tty = isatty(2);
}

void st_progress_update(st_progress *p, double done) {
    p->done = done;
    if (p->tty && st_time() - p->last_draw > 0.1) progress_draw(p, 0);
}

void st_progress_end(st_progress *p) {
    if (p->tty) progress_draw(p, 1);
}

double st_time_now(void) { return st_time(); }

int st_pathf(char *buf, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    return k < 0 || (size_t)k >= n ? -1 : 0;
}

st_status st_mkdir_p(const char *path) {
    char buf[4096];
    if (st_pathf(buf, sizeof buf, "%s", path)) return st_err(ST_ERR_ARG, "path too long: %s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return st_err(ST_ERR_IO, "%s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return st_err(ST_ERR_IO, "%s: %s", buf, strerror(errno));
    return ST_OK;
}

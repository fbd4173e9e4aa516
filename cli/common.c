/* common.c — shared CLI helpers: error lines, strict number parsing, model loading. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int cli_fail(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "starling %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int cli_fail_st(const char *cmd, st_status rc) {
    const char *msg = st_last_error();
    return cli_fail(cmd, "%s", msg && *msg ? msg : st_status_name(rc));
}

int cli_usage(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "starling %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\ntry 'starling %s --help'\n", cmd);
    va_end(ap);
    return 2;
}

int cli_int(const char *s, long lo, long hi, long *out) {
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int cli_float(const char *s, double lo, double hi, double *out) {
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int cli_load(const char *cmd, const char *dir, const char *budget_spec, st_model **m, st_budget **b) {
    *m = NULL;
    if (b) *b = NULL;
    st_status rc = st_model_load(dir, m);
    if (rc) return cli_fail_st(cmd, rc);
    if (!b) return 0;
    rc = st_budget_resolve(*m, budget_spec, b);
    if (rc) {
        cli_fail_st(cmd, rc);
        st_model_free(*m);
        *m = NULL;
        return 1;
    }
    return 0;
}

char *cli_read_text(const char *cmd, const char *path, size_t *len) {
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) { cli_fail(cmd, "%s: %s", path, strerror(errno)); return NULL; }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) { cli_fail(cmd, "out of memory reading %s", path); break; }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
        if (cap - n < 2) { cap *= 2; char *nb = realloc(buf, cap); if (!nb) { free(buf); buf = NULL; } else buf = nb; }
    }
    int err = ferror(f);
    if (f != stdin) fclose(f);
    if (!buf) return NULL;
    if (err) { free(buf); cli_fail(cmd, "%s: read error", path); return NULL; }
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

const char *cli_budget_file(const char *path) {
    static char spec[4096];
    snprintf(spec, sizeof spec, "@%s", path);
    return spec;
}

static const char g_calib_sample[] =
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want "
    "of a wife. However little known the feelings or views of such a man may be on his first entering a "
    "neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is considered "
    "the rightful property of some one or other of their daughters. Call me Ishmael. Some years ago, never mind "
    "how long precisely, having little or no money in my purse, I thought I would sail about a little and see the "
    "watery part of the world. 12 + 35 = 47. The quick brown fox jumps over the lazy dog.\n";


int cli_calib_tokens(const char *cmd, const st_model *m, const char *dir, const char *file, int max, int32_t **ids,
                     int *n) {
    *ids = NULL;
    *n = 0;
    char tp[4096];
    snprintf(tp, sizeof tp, "%s/tokenizer.json", dir);
    st_tokenizer *tok;
    st_status rc = st_tokenizer_load(tp, &tok);
    if (rc) return cli_fail_st(cmd, rc);
    char *text = file ? cli_read_text(cmd, file, NULL) : strdup(g_calib_sample);
    if (!text) { st_tokenizer_free(tok); return 1; }
    rc = st_tokenize(tok, text, strlen(text), 0, ids, n);
    free(text);
    st_tokenizer_free(tok);
    if (rc) return cli_fail_st(cmd, rc);
    if (*n > max) *n = max;
    for (int i = 0; i < *n; i++) /* a tokenizer larger than the model: clip */
        if ((*ids)[i] >= st_model_config(m)->vocab_size) (*ids)[i] = 0;
    return 0;
}

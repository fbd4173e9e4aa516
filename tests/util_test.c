/* util_test.c — see util_test.h. */
#include "util_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

const char *golden_dir(void) {
    const char *e = getenv("ST_GOLDEN");
    return e && *e ? e : "../shared/golden";
}

float *read_f32(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "cannot open %s\n", path); return NULL; }
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    float *d = malloc((size_t)sz + 4);
    if (!d || fread(d, 1, (size_t)sz, f) != (size_t)sz) { fclose(f); free(d); return NULL; }
    fclose(f);
    *n = (size_t)sz / 4;
    return d;
}

int32_t *read_tokens(const char *path, int *n) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    int cap = 64, k = 0;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    int v;
    while (fscanf(f, "%d", &v) == 1) {
        if (k == cap) { cap *= 2; ids = realloc(ids, sizeof(int32_t) * (size_t)cap); }
        ids[k++] = v;
    }
    fclose(f);
    *n = k;
    return ids;
}

double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d; /* NaN propagates */
    }
    return m;
}

double rel_err(const float *a, const float *ref, size_t n) {
    double mr = 0;
    for (size_t i = 0; i < n; i++) if (fabs(ref[i]) > mr) mr = fabs(ref[i]);
    return max_abs_diff(a, ref, n) / (mr > 0 ? mr : 1);
}

char *test_tmpdir(const char *tag) {
    char *p = malloc(512);
    mkdir("build", 0755);
    mkdir("build/testtmp", 0755);
    snprintf(p, 512, "build/testtmp/%s.%ld", tag, (long)getpid());
    rm_rf(p);
    mkdir(p, 0755);
    return p;
}

void rm_rf(const char *path) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "warning: %s failed\n", cmd);
}

char *run_capture(const char *cmd, int *status) {
    FILE *p = popen(cmd, "r");
    if (!p) { *status = -1; return NULL; }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += r;
        if (cap - n < 2) { cap *= 2; buf = realloc(buf, cap); }
    }
    buf[n] = 0;
    int st = pclose(p);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return buf;
}

const char *starling_bin(void) {
    const char *e = getenv("STARLING_BIN");
    return e && *e ? e : "build/starling";
}

int test_quick(void) { const char *e = getenv("ST_TEST_QUICK"); return e && *e && *e != '0'; }

int tsv_column(const char *tsv, const char *name) {
    size_t n = strlen(name);
    int c = 0;
    for (const char *l = tsv; *l && *l != '\n'; c++) {
        if (!strncmp(l, name, n) && (l[n] == '\t' || l[n] == '\n' || !l[n])) return c;
        l += strcspn(l, "\t\n");
        if (*l == '\t') l++;
    }
    return -1;
}

double tsv_number(const char *tsv, int row, int col) {
    const char *l = tsv;
    for (int r = 0; r <= row && l; r++) { l = strchr(l, '\n'); if (l) l++; }
    if (!l || !*l) return -1;
    for (int c = 0; c < col && l; c++) { l = strchr(l, '\t'); if (l) l++; }
    return l && *l != '\t' && *l != '\n' ? atof(l) : -1;
}

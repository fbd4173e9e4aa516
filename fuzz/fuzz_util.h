/*
 * fuzz_util.h — shared support for the libFuzzer harnesses in fuzz/ (built by
 * `make fuzz` with clang -fsanitize=fuzzer,address,undefined; see
 * docs/RELIABILITY.md). Parsers that read files get the fuzz input written to
 * a file in a private temp dir; fixtures (a small synthetic checkpoint) are
 * made once per process and removed at exit.
 */
#ifndef ST_FUZZ_UTIL_H
#define ST_FUZZ_UTIL_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/synth.h"
#include "starling.h"

static char fz_dir_[256];

static inline void fz_cleanup_(void) {
    char cmd[300];
    if (!fz_dir_[0]) return;
    snprintf(cmd, sizeof cmd, "rm -rf -- '%s'", fz_dir_);
    if (system(cmd) != 0) { /* best effort */ }
}

/* The process's temp dir (made on first use). */
static inline const char *fz_dir(void) {
    if (!fz_dir_[0]) {
        /* tmpfs when there is one: most targets write every input to a file */
        snprintf(fz_dir_, sizeof fz_dir_, "%s/starling-fuzz-XXXXXX", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
        if (!mkdtemp(fz_dir_)) { perror("mkdtemp"); abort(); }
        atexit(fz_cleanup_);
    }
    return fz_dir_;
}

/* fz_dir()/name in a static buffer (one per call site is enough here). */
static inline const char *fz_path(const char *name, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/%s", fz_dir(), name);
    return buf;
}

static inline void fz_write(const char *path, const void *d, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); abort(); }
    if (n && fwrite(d, 1, n, f) != n) { perror(path); abort(); }
    fclose(f);
}

/* The default synthetic checkpoint (every layer type, budgets M and S, its
 * tokenizer) in fz_dir()/name, written once. */
static inline const char *fz_synth_model(const char *name, char *buf, size_t cap) {
    fz_path(name, buf, cap);
    st_synth_opts o;
    st_synth_preset("default", &o);
    if (access(buf, F_OK) != 0 && st_synth_write(buf, &o)) {
        fprintf(stderr, "fuzz fixture: %s\n", st_last_error());
        abort();
    }
    return buf;
}

/* Input as a NUL-terminated malloc'd string. */
static inline char *fz_str(const uint8_t *d, size_t n) {
    char *s = malloc(n + 1);
    if (!s) abort();
    memcpy(s, d, n);
    s[n] = 0;
    return s;
}
#endif

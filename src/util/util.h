/*
 * util.h — small shared helpers: error reporting, half-float conversion,
 * timing, progress bars. Internal to libstarling (not installed).
 */
#ifndef ST_UTIL_H
#define ST_UTIL_H

#include "starling.h"
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Record a message for st_last_error() and return s, so callers can write
 *   return st_err(ST_ERR_FORMAT, "%s: header length %llu exceeds file", path, n); */
st_status st_err(st_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefix the current message with "ctx: " (for adding file names on the way up). */
st_status st_err_prefix(st_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void st_err_clear(void);

/* Allocation that records ST_ERR_NOMEM on failure (returns NULL). Every
 * allocation in src/ goes through these (so st_alloc_fail_after reaches it);
 * free with free(). A size of 0 allocates 1 byte (never NULL on success). */
void *st_malloc(size_t n);
void *st_calloc(size_t n, size_t sz);
/* realloc: on failure p is left as it was (the caller still owns it). */
void *st_realloc(void *p, size_t n);
/* 64-byte aligned, zeroed. */
void *st_aligned_alloc(size_t n);
/* 64-byte aligned, not initialised (scratch the caller overwrites). */
void *st_aligned_malloc(size_t n);
char *st_strdup(const char *s);
/* The first n bytes of s at most, NUL-terminated. */
char *st_strndup(const char *s, size_t n);

/* Test hook (tests/test_alloc.c): from now on the st_ allocation numbered n
 * (0 = the next) fails, once; n < 0 disarms. st_alloc_count() is how many
 * st_ allocations were made since the call (counted only while armed: arm
 * with LONG_MAX to count without failing), st_alloc_failed() whether the
 * injected failure happened. Process-wide, all threads. */
void st_alloc_fail_after(long n);
long st_alloc_count(void);
int st_alloc_failed(void);
/* Read a whole file into a malloc'd NUL-terminated buffer. */
st_status st_read_file(const char *path, char **out, size_t *len);
/* Write data to path atomically (path.tmp.PID, fsync, rename). */
st_status st_write_file_atomic(const char *path, const void *data, size_t len);

/* splitmix64: st_mix64 hashes a counter (stateless, for draws that depend
 * only on (seed, step, ...)); st_splitmix64 advances a state. Same stream. */
static inline uint64_t st_mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static inline uint64_t st_splitmix64(uint64_t *s) {
    uint64_t z = *s;
    *s += 0x9e3779b97f4a7c15ull;
    return st_mix64(z);
}
/* FNV-1a, 64 bit: hash h continued over n bytes; start from ST_FNV1A64_BASIS
 * (st_fnv1a64(ST_FNV1A64_BASIS, s, strlen(s)) is the usual FNV-1a of s). For
 * hash tables and identity keys; its low bits are weak, so pass it through
 * st_mix64 where they index a table that small keys crowd. */
#define ST_FNV1A64_BASIS 0xcbf29ce484222325ull
static inline uint64_t st_fnv1a64(uint64_t h, const void *p, size_t n) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) { h ^= s[i]; h *= 0x100000001b3ull; }
    return h;
}
/* uniform in (0, 1) from the top 53 bits of a hash */
static inline double st_u01(uint64_t h) { return ((h >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

/* bf16 / f16 <-> f32 (bit-level; gcc 12 has no __bf16). */
static inline float st_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f;
}
static inline uint16_t st_f32_to_bf16(float f) {
    uint32_t u; memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                          /* RNE */
    return (uint16_t)(u >> 16);
}
float st_f16_to_f32(uint16_t h);
uint16_t st_f32_to_f16(float f);

double st_time(void); /* monotonic seconds */

/* mkdir -p (0755). */
st_status st_mkdir_p(const char *path);

/* snprintf for paths: -1 if the result did not fit (the caller reports it). */
int st_pathf(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A one-line progress bar on stderr, redrawn at most ~10x/s; silent when
 * stderr is not a terminal unless force. units: "B" formats as bytes. */
typedef struct {
    const char *label, *units;
    double total, done, t0, last_draw;
    int tty;
} st_progress;
void st_progress_begin(st_progress *p, const char *label, double total, const char *units);
void st_progress_update(st_progress *p, double done);
void st_progress_end(st_progress *p);

#endif

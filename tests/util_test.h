/* util_test.h — shared test support: golden data paths, float files, compare. */
#ifndef ST_UTIL_TEST_H
#define ST_UTIL_TEST_H
#include <stddef.h>
#include <stdint.h>

/* ../shared/golden relative to the repo root, or $ST_GOLDEN. */
const char *golden_dir(void);
/* Read a whole little-endian float32 file; returns malloc'd data, *n floats. */
float *read_f32(const char *path, size_t *n);
/* Parse the space-separated ids of a tokens.txt. */
int32_t *read_tokens(const char *path, int *n);
/* max|a-b| / max|ref| */
double rel_err(const float *a, const float *ref, size_t n);
double max_abs_diff(const float *a, const float *b, size_t n);
/* A fresh empty temp dir under build/; returns a malloc'd path. */
char *test_tmpdir(const char *tag);
/* rm -rf path */
void rm_rf(const char *path);
/* Run a shell command, capture stdout (malloc'd) and exit status. */
char *run_capture(const char *cmd, int *status);
/* Path to the starling binary under test ($STARLING_BIN or build/starling). */
const char *starling_bin(void);
/* Column col (0-based) of data row row (0-based, after the header) of a TSV
 * text as a number; -1 when missing. */
double tsv_number(const char *tsv, int row, int col);
/* The index of the header column called name, or -1. */
int tsv_column(const char *tsv, const char *name);
/* 1 when ST_TEST_QUICK is set (sanitizer runs trim long loops). */
int test_quick(void);
#endif

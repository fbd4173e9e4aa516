/*
 * test_badinput.c — bad input gets one clear error, never a crash.
 *
 * Builds small broken checkpoints in a temp dir (from a freshly generated
 * "default" synth model: every layer type, GQA, two Mamba groups, MoE with a
 * shared expert) and checks, for each kind of damage, the exact st_status and
 * that st_last_error() names the file / tensor / key / rule at fault:
 *
 *   safetensors   short file, lying header length, oversized header, non-JSON
 *                 and non-object headers, unknown dtype, span ≠ shape × dtype,
 *                 overlap, gap, trailing bytes, truncation, bad shapes and
 *                 offsets, duplicate keys, numel overflow, a directory
 *   checkpoint    config.json missing / malformed / incomplete / lying, missing
 *                 tensor, wrong shape, wrong dtype, non-finite vector, shard
 *                 index errors, no weights file
 *   budgets       every nesting rule, unknown keys and names, bad values, bad
 *                 budget files
 *   forward       token id and context range
 *   fuzz          random header / config damage: succeed or fail cleanly
 *   CLI           one "starling CMD: ..." line on stderr, exit 1; usage exit 2
 *
 * Memory errors in any of these paths are caught by the ASan+UBSan run of the
 * suite (make test-asan), which trims the fuzz loops (ST_TEST_QUICK).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "model/synth.h"
#include "io/gguf.h"
#include "starling.h"
#include "util/util.h"
#include "util_test.h"

static char *g_root;      /* build/testtmp/badinput.PID                  */
static char g_good[600];  /* a valid synth "default" model               */
static st_model *g_model; /* g_good, loaded                              */
static int g_case;        /* counter for unique sub-directory names      */

/* ------------------------------------------------------------ helpers */

/* rc must be `want` and st_last_error() must contain every substring (NULL-terminated list). */
static void check_err_(const char *file, int line, st_status rc, st_status want, ...) {
    const char *msg = st_last_error();
    if (rc != want)
        fail_msg("%s:%d: status %s (%d), expected %s (%d); message: %s", file, line, st_status_name(rc), (int)rc,
                 st_status_name(want), (int)want, msg);
    va_list ap;
    va_start(ap, want);
    for (const char *s = va_arg(ap, const char *); s; s = va_arg(ap, const char *))
        if (!strstr(msg, s)) {
            va_end(ap);
            fail_msg("%s:%d: message lacks \"%s\": %s", file, line, s, msg);
        }
    va_end(ap);
    if (strchr(msg, '\n')) fail_msg("%s:%d: message spans several lines: %s", file, line, msg);
    printf("    %-14s %s\n", st_status_name(rc), msg);
}
#define EXPECT_ERR(rc, want, ...) check_err_(__FILE__, __LINE__, (rc), (want), __VA_ARGS__, (const char *)NULL)

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("cannot write %s", path);
    if (n && fwrite(data, 1, n, f) != n) fail_msg("short write %s", path);
    fclose(f);
}

static void write_text(const char *path, const char *s) { write_file(path, s, strlen(s)); }

static uint8_t *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot read %s", path);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *d = malloc((size_t)sz + 1);
    if (!d || fread(d, 1, (size_t)sz, f) != (size_t)sz) fail_msg("cannot read %s", path);
    fclose(f);
    *n = (size_t)sz;
    return d;
}

/* A raw safetensors file: u64 header length `hlen` (may lie), `hdr_bytes` of
 * header text, `data` bytes of zeros. */
static void write_sf_raw(const char *path, uint64_t hlen, const char *hdr, size_t hdr_bytes, size_t data) {
    size_t n = 8 + hdr_bytes + data;
    uint8_t *b = calloc(1, n ? n : 1);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(hlen >> (8 * i));
    memcpy(b + 8, hdr, hdr_bytes);
    write_file(path, b, n);
    free(b);
}

/* Header text with a truthful length and `data` bytes of zeros after it. */
static const char *sf_file(const char *hdr, size_t data) {
    static char path[700];
    snprintf(path, sizeof path, "%s/case%d.safetensors", g_root, ++g_case);
    write_sf_raw(path, strlen(hdr), hdr, strlen(hdr), data);
    return path;
}

/* st_sf_open on a file that must be rejected: returns the status. */
static st_status sf_open_bad(const char *path) {
    st_sf_file *f = (st_sf_file *)0x1;
    st_status rc = st_sf_open(path, &f);
    assert_null(f);
    if (rc == ST_OK) st_sf_close(f);
    return rc;
}

/* A fresh writable copy of the good model; returns a static path. */
static const char *copy_good(const char *tag) {
    static char dir[700];
    char cmd[2200];
    snprintf(dir, sizeof dir, "%s/%s.%d", g_root, tag, ++g_case);
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s' && chmod -R u+w '%s'", g_good, dir, dir);
    if (system(cmd) != 0) fail_msg("%s failed", cmd);
    return dir;
}

static json_t *load_config(const char *dir) {
    char p[800];
    snprintf(p, sizeof p, "%s/config.json", dir);
    json_error_t je;
    json_t *j = json_load_file(p, 0, &je);
    if (!j) fail_msg("%s: %s", p, je.text);
    return j;
}

static void save_config(const char *dir, json_t *j) {
    char p[800];
    snprintf(p, sizeof p, "%s/config.json", dir);
    if (json_dump_file(j, p, JSON_INDENT(2) | JSON_PRESERVE_ORDER)) fail_msg("cannot write %s", p);
    json_decref(j);
}

static st_status load(const char *dir) {
    st_model *m = (st_model *)0x1;
    st_status rc = st_model_load(dir, &m);
    if (rc == ST_OK) st_model_free(m);
    else assert_null(m);
    return rc;
}

/* ---- rewriting model.safetensors with one change */

typedef struct {
    const char *drop;                 /* leave this tensor out                   */
    const char *reshape;              /* give it shape[0..ndim) (zero data)      */
    int ndim;
    int64_t shape[ST_SF_MAX_DIMS];
    const char *retype;               /* give it dtype dt (zero data)            */
    st_dtype dt;
    const char *nan;                  /* set its first element to NaN            */
    const char *dup_as;               /* also write `nan`-less copy of tensor 0 under this name */
    int shard, n_shards;              /* keep only tensors i with i % n_shards == shard */
} mutation;

static void rewrite_sf(const char *src, const char *dst, const mutation *mu) {
    st_sf_file *f;
    if (st_sf_open(src, &f)) fail_msg("open %s: %s", src, st_last_error());
    st_sf_writer *w;
    assert_int_equal(st_sf_writer_new(&w), ST_OK);
    int nsh = mu->n_shards ? mu->n_shards : 1;
#define KEEP(i) ((i) % nsh == mu->shard && !(mu->drop && !strcmp(f->tensors[i].name, mu->drop)))
    for (int i = 0; i < f->n_tensors; i++) {
        const st_sf_tensor *t = &f->tensors[i];
        if (!KEEP(i)) continue;
        int is_re = mu->reshape && !strcmp(t->name, mu->reshape), is_ty = mu->retype && !strcmp(t->name, mu->retype);
        assert_int_equal(st_sf_writer_add(w, t->name, is_ty ? mu->dt : t->dt, is_re ? mu->ndim : t->ndim,
                                          is_re ? mu->shape : t->shape),
                         ST_OK);
    }
    if (mu->dup_as) assert_int_equal(st_sf_writer_add(w, mu->dup_as, f->tensors[0].dt, f->tensors[0].ndim,
                                                      f->tensors[0].shape), ST_OK);
    assert_int_equal(st_sf_writer_meta(w, "format", "pt"), ST_OK);
    if (st_sf_writer_begin(w, dst)) fail_msg("begin %s: %s", dst, st_last_error());
    for (int i = 0; i < f->n_tensors; i++) {
        const st_sf_tensor *t = &f->tensors[i];
        if (!KEEP(i)) continue;
        int is_re = mu->reshape && !strcmp(t->name, mu->reshape), is_ty = mu->retype && !strcmp(t->name, mu->retype);
        size_t n = t->end - t->begin;
        if (is_re || is_ty) {
            int64_t numel = 1;
            for (int d = 0; d < (is_re ? mu->ndim : t->ndim); d++) numel *= is_re ? mu->shape[d] : t->shape[d];
            n = (size_t)numel * st_dtype_size(is_ty ? mu->dt : t->dt);
            void *z = calloc(1, n ? n : 1);
            assert_int_equal(st_sf_writer_write(w, z, n), ST_OK);
            free(z);
        } else if (mu->nan && !strcmp(t->name, mu->nan)) {
            uint8_t *c = malloc(n);
            memcpy(c, t->data, n);
            if (t->dt == ST_DT_F32) { uint32_t q = 0x7fc00000u; memcpy(c, &q, 4); }
            else { uint16_t q = t->dt == ST_DT_BF16 ? 0x7fc0 : 0x7e00; memcpy(c, &q, 2); }
            assert_int_equal(st_sf_writer_write(w, c, n), ST_OK);
            free(c);
        } else {
            assert_int_equal(st_sf_writer_write(w, t->data, n), ST_OK);
        }
    }
    if (mu->dup_as) assert_int_equal(st_sf_writer_write(w, f->tensors[0].data, f->tensors[0].end - f->tensors[0].begin), ST_OK);
#undef KEEP
    if (st_sf_writer_finish(w)) fail_msg("finish %s: %s", dst, st_last_error());
    st_sf_writer_free(w);
    st_sf_close(f);
}

/* Copy of the good model with model.safetensors rewritten by mu. */
static const char *mutated_model(const char *tag, const mutation *mu) {
    const char *dir = copy_good(tag);
    char src[800], dst[800];
    snprintf(src, sizeof src, "%s/model.safetensors", g_good);
    snprintf(dst, sizeof dst, "%s/model.safetensors", dir);
    rewrite_sf(src, dst, mu);
    return dir;
}

/* ------------------------------------------------------------ fixtures */

static int group_setup(void **state) {
    (void)state;
    g_root = test_tmpdir("badinput");
    snprintf(g_good, sizeof g_good, "%s/good", g_root);
    st_synth_opts o;
    if (st_synth_preset("default", &o)) return -1;
    if (st_synth_write(g_good, &o)) { fprintf(stderr, "synth: %s\n", st_last_error()); return -1; }
    if (st_model_load(g_good, &g_model)) { fprintf(stderr, "load: %s\n", st_last_error()); return -1; }
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    st_model_free(g_model);
    if (!getenv("ST_KEEP_TMP")) rm_rf(g_root);
    free(g_root);
    return 0;
}

/* ------------------------------------------------------------ safetensors */

static void test_sf_short_and_lying_length(void **state) {
    (void)state;
    char p[700];
    /* shorter than the 8-byte length prefix (and empty) */
    snprintf(p, sizeof p, "%s/short.safetensors", g_root);
    write_file(p, "\x10\0\0\0\0", 5);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "truncated", "8-byte");
    write_file(p, "", 0);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "truncated");
    /* header length beyond the file */
    const char *h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    snprintf(p, sizeof p, "%s/long.safetensors", g_root);
    write_sf_raw(p, 1000, h, strlen(h), 8);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "header length 1000", "past the end");
    /* header length over the 100 MB limit (and the largest u64) */
    write_sf_raw(p, 200000000ull, h, strlen(h), 8);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "200000000", "limit");
    write_sf_raw(p, UINT64_MAX, h, strlen(h), 8);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "limit");
    /* header length 0 */
    write_sf_raw(p, 0, h, strlen(h), 8);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "JSON");
    /* header length shorter than the JSON text: cuts the JSON */
    write_sf_raw(p, strlen(h) - 5, h, strlen(h), 8);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "not valid JSON");
}

static void test_sf_header_json(void **state) {
    (void)state;
    const char *p = sf_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], ", 0);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "not valid JSON");
    p = sf_file("[1, 2, 3]", 0);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "not a JSON object");
    p = sf_file("\"hello\"", 0);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "JSON");
    /* duplicate tensor names */
    p = sf_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "duplicate");
    /* invalid UTF-8 in a name */
    p = sf_file("{\"a\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "JSON");
    /* entry not an object; missing fields; __metadata__ not an object */
    p = sf_file("{\"w\": 5}", 0);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "'w'", "not an object");
    p = sf_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "'w'", "data_offsets");
    p = sf_file("{\"w\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "'w'", "dtype");
    p = sf_file("{\"__metadata__\": [1], \"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "__metadata__");
    /* valid edge cases are accepted: scalar, zero-size, empty header, padding, metadata */
    p = sf_file("{\"__metadata__\":{\"format\":\"pt\"},\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                "\"z\":{\"dtype\":\"BF16\",\"shape\":[0,5],\"data_offsets\":[4,4]}}      ", 4);
    st_sf_file *f;
    if (st_sf_open(p, &f)) fail_msg("valid file rejected: %s", st_last_error());
    assert_int_equal(f->n_tensors, 2);
    assert_int_equal(st_sf_numel(&f->tensors[0]), 1);
    assert_int_equal(st_sf_numel(&f->tensors[1]), 0);
    st_sf_close(f);
    p = sf_file("{}", 0);
    if (st_sf_open(p, &f)) fail_msg("empty header rejected: %s", st_last_error());
    assert_int_equal(f->n_tensors, 0);
    st_sf_close(f);
}

static void test_sf_dtype_and_shape(void **state) {
    (void)state;
    const char *p = sf_file("{\"w\":{\"dtype\":\"F7\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_UNSUPPORTED, p, "'w'", "unknown dtype 'F7'");
    /* span disagrees with shape × dtype size */
    p = sf_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 20);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "'w'", "span 20 bytes", "needs 24");
    p = sf_file("{\"w\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "'w'", "span 16 bytes", "needs 8");
    /* negative, fractional, string, null dims */
    p = sf_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1,4],\"data_offsets\":[0,16]}}", 16);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "'w'", "shape[0]", "non-negative integer");
    p = sf_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[4,2.5],\"data_offsets\":[0,40]}}", 40);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "'w'", "shape[1]", "non-negative integer");
    p = sf_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[\"4\"],\"data_offsets\":[0,16]}}", 16);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "'w'", "shape[0]");
    p = sf_file("{\"w\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,16]}}", 16);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "'w'", "shape");
    /* more dimensions than supported */
    p = sf_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "'w'", "9 dimensions");
    /* huge shapes: numel would overflow 64 bits; must not crash, must be rejected */
    p = sf_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4611686018427387904],"
                "\"data_offsets\":[0,16]}}", 16);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "'w'", "overflows");
    p = sf_file("{\"w\":{\"dtype\":\"F64\",\"shape\":[9223372036854775807],\"data_offsets\":[0,8]}}", 8);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "'w'", "overflows");
    p = sf_file("{\"w\":{\"dtype\":\"U8\",\"shape\":[9223372036854775807],\"data_offsets\":[0,8]}}", 8);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "'w'", "span 8 bytes", "needs 9223372036854775807");
    /* … even when a zero dimension makes the byte count 0 (the product of the others overflows) */
    p = sf_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4611686018427387904,0],"
                "\"data_offsets\":[0,0]}}", 0);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "'w'", "overflow");
}

static void test_sf_offsets(void **state) {
    (void)state;
    /* overlapping */
    const char *p = sf_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                            "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 24);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "'b'", "overlapping offsets");
    /* the same span twice */
    p = sf_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "overlapping offsets");
    /* gap between tensors, and a first tensor not at 0 */
    p = sf_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[20,36]}}", 36);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "'b'", "gap");
    p = sf_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[4,20]}}", 20);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "'a'", "gap");
    /* trailing bytes after the last tensor */
    p = sf_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 20);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "trailing bytes");
    /* data cut short */
    p = sf_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 10);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "truncated file");
    /* end < begin, negative, fractional, wrong count, not numbers */
    p = sf_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[16,8]}}", 16);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "'a'", "data_offsets");
    p = sf_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[-16,0]}}", 16);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "'a'", "data_offsets");
    p = sf_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0.5,16]}}", 16);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "'a'", "data_offsets");
    p = sf_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16,32]}}", 16);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "'a'", "data_offsets");
    p = sf_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[\"0\",\"16\"]}}", 16);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "'a'", "data_offsets");
    /* offsets near 2^63 must not wrap */
    p = sf_file("{\"a\":{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[0,16]},"
                "\"b\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[9223372036854775807,9223372036854775807]}}", 16);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "'b'", "gap");
}

static void test_sf_real_file_damage(void **state) {
    (void)state;
    char src[700], p[700];
    snprintf(src, sizeof src, "%s/model.safetensors", g_good);
    size_t n;
    uint8_t *b = read_all(src, &n);
    snprintf(p, sizeof p, "%s/cut.safetensors", g_root);
    /* cut by one byte, by half, down to the header, into the header */
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | b[i];
    size_t cuts[] = {n - 1, n / 2, 8 + (size_t)hl, 8 + (size_t)hl / 2, 7};
    const char *why[] = {"truncated file", "truncated file", "truncated file", "past the end", "truncated"};
    for (int i = 0; i < 5; i++) {
        write_file(p, b, cuts[i]);
        EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, why[i]);
    }
    /* one extra byte */
    uint8_t *b2 = malloc(n + 1);
    memcpy(b2, b, n);
    b2[n] = 0;
    write_file(p, b2, n + 1);
    EXPECT_ERR(sf_open_bad(p), ST_ERR_FORMAT, p, "trailing bytes");
    free(b2);
    free(b);
    /* a directory and a missing file */
    char d[700];
    snprintf(d, sizeof d, "%s/adir.safetensors", g_root);
    mkdir(d, 0755);
    EXPECT_ERR(sf_open_bad(d), ST_ERR_IO, d, "not a regular file");
    snprintf(d, sizeof d, "%s/nonexistent.safetensors", g_root);
    EXPECT_ERR(sf_open_bad(d), ST_ERR_MISSING, d);
}

/* ------------------------------------------------------------ checkpoint */

static void test_ckpt_config(void **state) {
    (void)state;
    char p[800];
    /* no directory at all, no config.json */
    snprintf(p, sizeof p, "%s/no-such-model", g_root);
    EXPECT_ERR(load(p), ST_ERR_MISSING, "no-such-model/config.json");
    const char *d = copy_good("noconfig");
    snprintf(p, sizeof p, "%s/config.json", d);
    unlink(p);
    EXPECT_ERR(load(d), ST_ERR_MISSING, p);
    /* malformed JSON: the message gives line and column */
    d = copy_good("badjson");
    snprintf(p, sizeof p, "%s/config.json", d);
    write_text(p, "{\n  \"hidden_size\": 128,\n  \"vocab_size\": ,\n}\n");
    EXPECT_ERR(load(d), ST_ERR_FORMAT, p, "invalid JSON", "line 3", "column");
    write_text(p, "");
    EXPECT_ERR(load(d), ST_ERR_FORMAT, p, "invalid JSON");
    write_text(p, "[1, 2]");
    EXPECT_ERR(load(d), ST_ERR_FORMAT, p, "not a JSON object");
    write_text(p, "{\"hidden_size\": 1, \"hidden_size\": 2}");
    EXPECT_ERR(load(d), ST_ERR_FORMAT, p, "duplicate");
    /* missing and mistyped keys */
    d = copy_good("nohidden");
    json_t *j = load_config(d);
    json_object_del(j, "hidden_size");
    save_config(d, j);
    EXPECT_ERR(load(d), ST_ERR_MISSING, "config.json", "\"hidden_size\"");
    j = load_config(d);
    json_object_set_new(j, "hidden_size", json_string("128"));
    save_config(d, j);
    EXPECT_ERR(load(d), ST_ERR_FORMAT, "config.json", "\"hidden_size\"", "integer");
    j = load_config(d);
    json_object_set_new(j, "hidden_size", json_integer(-7));
    save_config(d, j);
    EXPECT_ERR(load(d), ST_ERR_FORMAT, "config.json", "\"hidden_size\"");
    j = load_config(d);
    json_object_set_new(j, "hidden_size", json_integer(0));
    save_config(d, j);
    EXPECT_ERR(load(d), ST_ERR_FORMAT, "config.json", "\"hidden_size\"", "positive");
    /* layer pattern */
    d = copy_good("pattern");
    j = load_config(d);
    json_object_set_new(j, "hybrid_override_pattern", json_string("ME*X-EME"));
    save_config(d, j);
    EXPECT_ERR(load(d), ST_ERR_FORMAT, "config.json", "hybrid_override_pattern", "'X'", "at 3");
    j = load_config(d);
    json_object_set_new(j, "hybrid_override_pattern", json_string("ME*M-EMEM"));
    save_config(d, j);
    EXPECT_ERR(load(d), ST_ERR_FORMAT, "config.json", "num_hidden_layers = 8", "9 layers");
    j = load_config(d);
    json_object_del(j, "hybrid_override_pattern");
    save_config(d, j);
    EXPECT_ERR(load(d), ST_ERR_MISSING, "config.json", "hybrid_override_pattern");
    j = load_config(d);
    json_object_set_new(j, "layers_block_type", json_pack("[s,s,s,s,s,s,s,s]", "mamba", "moe", "attention", "mamba",
                                                          "mlp", "moe", "mamba", "transformer"));
    save_config(d, j);
    EXPECT_ERR(load(d), ST_ERR_FORMAT, "config.json", "layers_block_type[7]", "\"transformer\"");
    /* an impossible architecture: query heads not a multiple of KV heads */
    d = copy_good("gqa");
    j = load_config(d);
    json_object_set_new(j, "num_key_value_heads", json_integer(3));
    save_config(d, j);
    EXPECT_ERR(load(d), ST_ERR_FORMAT, "config.json", "num_attention_heads 4", "num_key_value_heads 3");
    /* a lying config: widths that disagree with the tensors */
    d = copy_good("lying");
    j = load_config(d);
    json_object_set_new(j, "hidden_size", json_integer(256));
    save_config(d, j);
    EXPECT_ERR(load(d), ST_ERR_SHAPE, "backbone.embeddings.weight", "[272, 128]", "[272, 256]");
    j = load_config(d);
    json_object_set_new(j, "hidden_size", json_integer(1 << 30)); /* must not size buffers by it first */
    save_config(d, j);
    EXPECT_ERR(load(d), ST_ERR_SHAPE, "backbone.embeddings.weight", "[272, 128]", "[272, 1073741824]");
    j = load_config(d);
    json_object_set_new(j, "hidden_size", json_integer(128));
    json_object_set_new(j, "mamba_head_dim", json_integer(4096));
    save_config(d, j);
    EXPECT_ERR(load(d), ST_ERR_SHAPE, "backbone.layers.0.mixer.in_proj.weight", "[328, 128]", "[65608, 128]");
    j = load_config(d);
    json_object_set_new(j, "mamba_head_dim", json_integer(16));
    json_object_set_new(j, "n_routed_experts", json_integer(64));
    save_config(d, j);
    EXPECT_ERR(load(d), ST_ERR_SHAPE, "backbone.layers.1.mixer.gate.weight", "[8, 128]", "[64, 128]");
    /* a malformed elastic block */
    d = copy_good("elastic");
    j = load_config(d);
    json_t *bl = json_object_get(json_object_get(j, "elastic"), "budgets");
    json_object_set_new(json_array_get(bl, 1), "hiden_size", json_integer(64));
    save_config(d, j);
    EXPECT_ERR(load(d), ST_ERR_BUDGET, "config.json", "elastic budget \"M\"", "unknown key \"hiden_size\"");
    j = load_config(d);
    bl = json_object_get(json_object_get(j, "elastic"), "budgets");
    json_object_del(json_array_get(bl, 1), "hiden_size");
    json_object_set_new(json_object_get(j, "elastic"), "default_budget", json_string("XL"));
    save_config(d, j);
    EXPECT_ERR(load(d), ST_ERR_FORMAT, "config.json", "default_budget \"XL\"");
}

static void test_ckpt_tensors(void **state) {
    (void)state;
    /* a missing tensor is named */
    mutation mu = {.drop = "backbone.layers.2.mixer.k_proj.weight"};
    const char *d = mutated_model("missing", &mu);
    EXPECT_ERR(load(d), ST_ERR_MISSING, "missing tensor 'backbone.layers.2.mixer.k_proj.weight'");
    mu = (mutation){.drop = "backbone.layers.5.mixer.experts.7.down_proj.weight"};
    d = mutated_model("missing", &mu);
    EXPECT_ERR(load(d), ST_ERR_MISSING, "'backbone.layers.5.mixer.experts.7.down_proj.weight'");
    mu = (mutation){.drop = "lm_head.weight"};
    d = mutated_model("missing", &mu);
    EXPECT_ERR(load(d), ST_ERR_MISSING, "'lm_head.weight'");
    /* a wrong shape names the tensor and both shapes */
    mu = (mutation){.reshape = "backbone.layers.4.mixer.up_proj.weight", .ndim = 2, .shape = {128, 256}};
    d = mutated_model("shape", &mu);
    EXPECT_ERR(load(d), ST_ERR_SHAPE, "'backbone.layers.4.mixer.up_proj.weight'", "[128, 256]", "[256, 128]");
    mu = (mutation){.reshape = "backbone.layers.0.mixer.in_proj.weight", .ndim = 2, .shape = {327, 128}};
    d = mutated_model("shape", &mu);
    EXPECT_ERR(load(d), ST_ERR_SHAPE, "'backbone.layers.0.mixer.in_proj.weight'", "[327, 128]", "[328, 128]");
    mu = (mutation){.reshape = "backbone.norm_f.weight", .ndim = 1, .shape = {127}};
    d = mutated_model("shape", &mu);
    EXPECT_ERR(load(d), ST_ERR_SHAPE, "'backbone.norm_f.weight'", "[127]", "[128]");
    mu = (mutation){.reshape = "backbone.layers.2.mixer.o_proj.weight", .ndim = 3, .shape = {128, 64, 2}};
    d = mutated_model("shape", &mu);
    EXPECT_ERR(load(d), ST_ERR_SHAPE, "'backbone.layers.2.mixer.o_proj.weight'", "[128, 64, 2]");
    /* a weight of a dtype the engine cannot compute with */
    mu = (mutation){.retype = "backbone.layers.0.mixer.out_proj.weight", .dt = ST_DT_I32};
    d = mutated_model("dtype", &mu);
    EXPECT_ERR(load(d), ST_ERR_UNSUPPORTED, "'backbone.layers.0.mixer.out_proj.weight'", "I32");
    mu = (mutation){.retype = "backbone.norm_f.weight", .dt = ST_DT_U8};
    d = mutated_model("dtype", &mu);
    EXPECT_ERR(load(d), ST_ERR_UNSUPPORTED, "'backbone.norm_f.weight'", "U8");
    /* a non-finite value in a small vector */
    mu = (mutation){.nan = "backbone.layers.0.mixer.A_log"};
    d = mutated_model("nan", &mu);
    EXPECT_ERR(load(d), ST_ERR_FORMAT, "'backbone.layers.0.mixer.A_log'", "non-finite");
    /* weights file missing, a directory, cut short */
    char p[800];
    d = copy_good("noweights");
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    unlink(p);
    EXPECT_ERR(load(d), ST_ERR_MISSING, d, "model.safetensors");
    mkdir(p, 0755);
    EXPECT_ERR(load(d), ST_ERR_IO, p, "not a regular file");
    d = copy_good("cut");
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    assert_int_equal(truncate(p, 100000), 0);
    EXPECT_ERR(load(d), ST_ERR_FORMAT, p, "truncated file");
}

/* Write a two-shard copy of the good model and its index; returns the dir. */
static const char *sharded_model(void) {
    const char *d = copy_good("shards");
    static char dir[700];
    snprintf(dir, sizeof dir, "%s", d);
    char src[800], p[800];
    snprintf(src, sizeof src, "%s/model.safetensors", g_good);
    for (int s = 0; s < 2; s++) {
        mutation mu = {.shard = s, .n_shards = 2};
        snprintf(p, sizeof p, "%s/model-%05d-of-00002.safetensors", dir, s + 1);
        rewrite_sf(src, p, &mu);
    }
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unlink(p);
    st_sf_file *f;
    assert_int_equal(st_sf_open(src, &f), ST_OK);
    json_t *wm = json_object();
    for (int i = 0; i < f->n_tensors; i++)
        json_object_set_new(wm, f->tensors[i].name, json_string(i % 2 ? "model-00002-of-00002.safetensors"
                                                                      : "model-00001-of-00002.safetensors"));
    st_sf_close(f);
    json_t *idx = json_pack("{s:{s:i}, s:o}", "metadata", "total_size", 0, "weight_map", wm);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    assert_int_equal(json_dump_file(idx, p, JSON_INDENT(2)), 0);
    json_decref(idx);
    return dir;
}

static void index_edit(const char *dir, const char *tensor, const char *shard) {
    char p[800];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    json_error_t je;
    json_t *idx = json_load_file(p, 0, &je);
    assert_non_null(idx);
    json_object_set_new(json_object_get(idx, "weight_map"), tensor, json_string(shard));
    assert_int_equal(json_dump_file(idx, p, JSON_INDENT(2)), 0);
    json_decref(idx);
}

static void test_ckpt_shards(void **state) {
    (void)state;
    const char *d = sharded_model();
    /* the sharded copy loads (and the index is really used) */
    st_model *m;
    if (st_model_load(d, &m)) fail_msg("sharded model: %s", st_last_error());
    st_model_free(m);
    char p[800], q[800];
    /* an index naming a shard that is not there */
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", d);
    snprintf(q, sizeof q, "%s/moved.safetensors", d);
    assert_int_equal(rename(p, q), 0);
    EXPECT_ERR(load(d), ST_ERR_MISSING, "model-00002-of-00002.safetensors");
    assert_int_equal(rename(q, p), 0);
    /* an index naming a tensor that is not in the shard it names (the first tensor is in shard 1) */
    char first[256];
    {
        char src[800];
        snprintf(src, sizeof src, "%s/model.safetensors", g_good);
        st_sf_file *f;
        assert_int_equal(st_sf_open(src, &f), ST_OK);
        snprintf(first, sizeof first, "%s", f->tensors[0].name);
        st_sf_close(f);
    }
    index_edit(d, first, "model-00002-of-00002.safetensors");
    EXPECT_ERR(load(d), ST_ERR_MISSING, "model.safetensors.index.json", first,
               "is not in model-00002-of-00002.safetensors as the index says");
    /* an index naming a tensor no shard has */
    d = sharded_model();
    index_edit(d, "backbone.layers.99.mixer.D", "model-00001-of-00002.safetensors");
    EXPECT_ERR(load(d), ST_ERR_MISSING, "'backbone.layers.99.mixer.D'");
    /* shard names that are paths; a weight_map that is not an object; malformed index */
    d = sharded_model();
    index_edit(d, "lm_head.weight", "../good/model.safetensors");
    EXPECT_ERR(load(d), ST_ERR_FORMAT, "model.safetensors.index.json", "weight_map[\"lm_head.weight\"]",
               "plain file name");
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", d);
    write_text(p, "{\"weight_map\": [\"model-00001-of-00002.safetensors\"]}");
    EXPECT_ERR(load(d), ST_ERR_FORMAT, p, "weight_map");
    write_text(p, "{\"weight_map\": {\n\"lm_head.weight\": \"model-00001-of-00002.safetensors\"\n");
    EXPECT_ERR(load(d), ST_ERR_FORMAT, p, "invalid JSON", "line");
    /* the same tensor in two shards */
    d = sharded_model();
    {
        char src[800];
        snprintf(src, sizeof src, "%s/model.safetensors", g_good);
        snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", d);
        mutation mu = {.shard = 1, .n_shards = 2, .dup_as = first};
        rewrite_sf(src, p, &mu);
        EXPECT_ERR(load(d), ST_ERR_FORMAT, first, "appears in both");
    }
}

/* ------------------------------------------------------------ budgets */

static st_status resolve(const char *spec) {
    st_budget *b = (st_budget *)0x1;
    st_status rc = st_budget_resolve(g_model, spec, &b);
    if (rc == ST_OK) st_budget_free(b);
    else assert_null(b);
    return rc;
}

static void test_budget_rules(void **state) {
    (void)state;
    /* positive controls */
    const char *ok[] = {"", "full", "L", "M", "S", "S:mamba_head_dim=8", "hidden_size=64,skip_layers=2:5",
                        "n_routed_experts=2,num_experts_per_tok=2", "n_routed_experts=1"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (resolve(ok[i])) fail_msg("budget \"%s\" rejected: %s", ok[i], st_last_error());
    EXPECT_ERR(resolve("hidden_size=99999"), ST_ERR_BUDGET, "hidden_size = 99999", "wider than the parent's 128");
    EXPECT_ERR(resolve("moe_intermediate_size=65"), ST_ERR_BUDGET, "moe_intermediate_size = 65", "parent's 64");
    EXPECT_ERR(resolve("n_routed_experts=9"), ST_ERR_BUDGET, "n_routed_experts = 9", "wider");
    EXPECT_ERR(resolve("num_attention_heads=3"), ST_ERR_BUDGET, "num_attention_heads = 3",
               "not a multiple of num_key_value_heads = 2");
    EXPECT_ERR(resolve("mamba_num_heads=3"), ST_ERR_BUDGET, "mamba_num_heads = 3", "not a multiple of n_groups = 2");
    EXPECT_ERR(resolve("n_routed_experts=1,num_experts_per_tok=2"), ST_ERR_BUDGET, "num_experts_per_tok = 2",
               "1 experts kept");
    EXPECT_ERR(resolve("num_experts_per_tok=3"), ST_ERR_BUDGET, "num_experts_per_tok = 3", "parent's 2");
    EXPECT_ERR(resolve("skip_layers=8"), ST_ERR_BUDGET, "skip_layers", "layer 8 does not exist", "8 layers");
    EXPECT_ERR(resolve("skip_layers=2:5:2"), ST_ERR_BUDGET, "layer 2", "twice");
    EXPECT_ERR(resolve("skip_layers=-1"), ST_ERR_BUDGET, "skip_layers", "-1", "out of range");
    EXPECT_ERR(resolve("skip_layers=x"), ST_ERR_BUDGET, "skip_layers", "\"x\"", "not a layer index");
    EXPECT_ERR(resolve("foo=3"), ST_ERR_BUDGET, "unknown key \"foo\"", "hidden_size");
    EXPECT_ERR(resolve("hidden_size=64,foo=3"), ST_ERR_BUDGET, "unknown key \"foo\"");
    EXPECT_ERR(resolve("hidden_size=12x"), ST_ERR_BUDGET, "hidden_size", "\"12x\"", "not an integer");
    EXPECT_ERR(resolve("hidden_size=1.5"), ST_ERR_BUDGET, "hidden_size", "not an integer");
    EXPECT_ERR(resolve("hidden_size="), ST_ERR_BUDGET, "hidden_size", "not an integer");
    EXPECT_ERR(resolve("hidden_size=0"), ST_ERR_BUDGET, "hidden_size = 0", "positive");
    EXPECT_ERR(resolve("hidden_size=-5"), ST_ERR_BUDGET, "hidden_size = -5", "positive");
    EXPECT_ERR(resolve("hidden_size=99999999999999999999"), ST_ERR_BUDGET, "hidden_size");
    EXPECT_ERR(resolve("XXL"), ST_ERR_BUDGET, "no budget named \"XXL\"", "config.json", "full, L, M, S");
    EXPECT_ERR(resolve("XXL:hidden_size=64"), ST_ERR_BUDGET, "no budget named \"XXL\"");
    /* direct widths */
    st_widths w;
    memset(&w, 0, sizeof w);
    EXPECT_ERR(st_widths_set(&w, "hiden", 3), ST_ERR_BUDGET, "unknown key \"hiden\"");
    EXPECT_ERR(st_widths_parse(&w, "hidden_size"), ST_ERR_BUDGET, "\"hidden_size\"", "key=value");
    memset(&w, 0, sizeof w);
    w.hidden_size = -3;
    st_budget *b = (st_budget *)0x1;
    EXPECT_ERR(st_budget_new(g_model, &w, &b), ST_ERR_BUDGET, "hidden_size = -3", "at least 1");
    assert_null(b);
    memset(&w, 0, sizeof w);
    w.n_skip = 2; w.skip_layers[0] = 3; w.skip_layers[1] = 3;
    EXPECT_ERR(st_budget_new(g_model, &w, &b), ST_ERR_BUDGET, "skip_layers", "distinct");
    /* a named budget in the checkpoint that breaks a rule is refused by name */
    const char *d = copy_good("badnamed");
    json_t *j = load_config(d);
    json_t *bl = json_object_get(json_object_get(j, "elastic"), "budgets");
    json_object_set_new(json_array_get(bl, 2), "mamba_num_heads", json_integer(3));
    save_config(d, j);
    st_model *m;
    if (st_model_load(d, &m)) fail_msg("load: %s", st_last_error());
    EXPECT_ERR(st_budget_by_name(m, "S", &b), ST_ERR_BUDGET, "elastic budget \"S\"", "mamba_num_heads = 3",
               "n_groups");
    st_model_free(m);
}

static void test_budget_files(void **state) {
    (void)state;
    char p[700], spec[720];
    snprintf(p, sizeof p, "%s/budget.json", g_root);
    snprintf(spec, sizeof spec, "@%s", p);
    write_text(p, "{\"hidden_size\": 64, \"skip_layers\": [2, 5]}");
    if (resolve(spec)) fail_msg("good budget file rejected: %s", st_last_error());
    write_text(p, "{\n  \"hidden_size\": 64,\n  \"mamba_num_heads\": \n}");
    EXPECT_ERR(resolve(spec), ST_ERR_FORMAT, p, "line 4", "column");
    write_text(p, "");
    EXPECT_ERR(resolve(spec), ST_ERR_FORMAT, p);
    write_text(p, "{\"hidden_size\": 64, \"hidden_size\": 32}");
    EXPECT_ERR(resolve(spec), ST_ERR_FORMAT, p, "duplicate");
    write_text(p, "[64, 32]");
    EXPECT_ERR(resolve(spec), ST_ERR_BUDGET, p, "JSON object");
    write_text(p, "{\"hidden_size\": \"64\"}");
    EXPECT_ERR(resolve(spec), ST_ERR_BUDGET, p, "\"hidden_size\"", "integer");
    write_text(p, "{\"hidden_size\": 64.5}");
    EXPECT_ERR(resolve(spec), ST_ERR_BUDGET, p, "\"hidden_size\"", "integer");
    write_text(p, "{\"hidden_size\": 0}");
    EXPECT_ERR(resolve(spec), ST_ERR_BUDGET, p, "hidden_size", "positive");
    write_text(p, "{\"hidden_size\": -64}");
    EXPECT_ERR(resolve(spec), ST_ERR_BUDGET, p, "hidden_size = -64", "positive");
    write_text(p, "{\"hidden_size\": 99999999999}");
    EXPECT_ERR(resolve(spec), ST_ERR_BUDGET, p, "hidden_size", "at most");
    write_text(p, "{\"hidden_size\": 99999}");
    EXPECT_ERR(resolve(spec), ST_ERR_BUDGET, "hidden_size = 99999", "wider");
    write_text(p, "{\"hiden_size\": 64}");
    EXPECT_ERR(resolve(spec), ST_ERR_BUDGET, p, "unknown key \"hiden_size\"");
    write_text(p, "{\"skip_layers\": \"2:5\"}");
    EXPECT_ERR(resolve(spec), ST_ERR_BUDGET, p, "skip_layers", "list");
    write_text(p, "{\"skip_layers\": [1, 1]}");
    EXPECT_ERR(resolve(spec), ST_ERR_BUDGET, p, "layer 1", "twice");
    write_text(p, "{\"skip_layers\": [1, \"x\"]}");
    EXPECT_ERR(resolve(spec), ST_ERR_BUDGET, p, "skip_layers[1]", "integer");
    write_text(p, "{\"skip_layers\": [99]}");
    EXPECT_ERR(resolve(spec), ST_ERR_BUDGET, "layer 99 does not exist");
    /* a missing budget file names the file */
    snprintf(spec, sizeof spec, "@%s/no-such-budget.json", g_root);
    EXPECT_ERR(resolve(spec), ST_ERR_MISSING, "no-such-budget.json", "No such file");
}

/* ------------------------------------------------------------ forward */

static void test_forward_range(void **state) {
    (void)state;
    const st_config *c = st_model_config(g_model);
    st_budget *b;
    assert_int_equal(st_budget_by_name(g_model, "full", &b), ST_OK);
    st_state *s;
    assert_int_equal(st_state_new(g_model, 4, &s), ST_OK);
    int32_t bad[3] = {5, c->vocab_size, 7};
    EXPECT_ERR(st_forward(b, s, bad, 3, NULL, 0), ST_ERR_RANGE, "token id 272", "position 1", "[0, 272)");
    bad[1] = -1;
    EXPECT_ERR(st_forward(b, s, bad, 3, NULL, 0), ST_ERR_RANGE, "token id -1");
    assert_int_equal(st_state_pos(s), 0); /* nothing consumed by a refused call */
    int32_t ok[3] = {5, 6, 7};
    float *logits = malloc(sizeof(float) * (size_t)c->vocab_size);
    if (st_forward(b, s, ok, 3, logits, 0)) fail_msg("forward: %s", st_last_error());
    EXPECT_ERR(st_forward(b, s, ok, 2, logits, 0), ST_ERR_RANGE, "context full", "4-token");
    assert_int_equal(st_state_pos(s), 3);
    assert_int_equal(st_forward(b, s, ok, 1, logits, 0), ST_OK); /* the last slot still works */
    EXPECT_ERR(st_forward(b, s, ok, 1, logits, 0), ST_ERR_RANGE, "context full");
    EXPECT_ERR(st_forward(b, s, ok, 0, logits, 0), ST_ERR_ARG, "no tokens");
    /* a state computed at one budget is refused at another */
    st_budget *bs;
    assert_int_equal(st_budget_by_name(g_model, "S", &bs), ST_OK);
    EXPECT_ERR(st_forward(bs, s, ok, 1, logits, 0), ST_ERR_ARG, "another budget");
    st_state_reset(s);
    assert_int_equal(st_forward(bs, s, ok, 1, logits, 0), ST_OK);
    st_budget_free(bs);
    free(logits);
    st_state_free(s);
    st_budget_free(b);
}

/* ------------------------------------------------------------ fuzz */

/* Damage buf[0..*n) in place (header region: [0, hend)). */
static void mutate(uint8_t *buf, size_t *n, size_t hend, uint64_t *s) {
    static const char interesting[] = "{}[]\":,-0123456789eE. \\\x00\xff\x7f";
    if (hend > *n) hend = *n;
    switch (st_splitmix64(s) % 6) {
    case 0: /* flip a few bits */
        for (int k = 1 + (int)(st_splitmix64(s) % 4); k > 0; k--) buf[st_splitmix64(s) % hend] ^= (uint8_t)(1u << (st_splitmix64(s) % 8));
        break;
    case 1: /* JSON-significant characters */
        for (int k = 1 + (int)(st_splitmix64(s) % 3); k > 0; k--)
            buf[8 + st_splitmix64(s) % (hend - 8)] = (uint8_t)interesting[st_splitmix64(s) % (sizeof interesting - 1)];
        break;
    case 2: /* a digit becomes 9 (bigger shapes / offsets) or 0 */
        for (int tries = 0; tries < 64; tries++) {
            size_t i = 8 + st_splitmix64(s) % (hend - 8);
            if (buf[i] >= '0' && buf[i] <= '9') { buf[i] = st_splitmix64(s) % 2 ? '9' : '0'; break; }
        }
        break;
    case 3: /* truncate anywhere */
        *n = (size_t)(st_splitmix64(s) % *n);
        break;
    case 4: /* lie in the length prefix */
        if (st_splitmix64(s) % 2) {
            uint64_t v = 0;
            for (int i = 7; i >= 0; i--) v = (v << 8) | buf[i];
            v += (uint64_t)(int64_t)((int)(st_splitmix64(s) % 129) - 64);
            for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(v >> (8 * i));
        } else {
            buf[st_splitmix64(s) % 8] = (uint8_t)st_splitmix64(s);
        }
        break;
    default: /* a random byte */
        buf[st_splitmix64(s) % hend] = (uint8_t)st_splitmix64(s);
        break;
    }
}

static void test_fuzz_safetensors(void **state) {
    (void)state;
    char src[700], p[700];
    snprintf(src, sizeof src, "%s/model.safetensors", g_good);
    snprintf(p, sizeof p, "%s/fuzz.safetensors", g_root);
    size_t n0;
    uint8_t *orig = read_all(src, &n0);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | orig[i];
    size_t hend = 8 + (size_t)hl;
    uint8_t *buf = malloc(n0);
    uint64_t seed = 0x5eedf00dull;
    int iters = test_quick() ? 60 : 300, accepted = 0;
    for (int it = 0; it < iters; it++) {
        memcpy(buf, orig, n0);
        size_t n = n0;
        mutate(buf, &n, hend, &seed);
        if (st_splitmix64(&seed) % 3 == 0) mutate(buf, &n, hend, &seed);
        write_file(p, buf, n);
        st_sf_file *f = NULL;
        st_status rc = st_sf_open(p, &f);
        if (rc == ST_OK) {
            /* whatever was accepted must be self-consistent */
            accepted++;
            uint64_t at = 0;
            for (int i = 0; i < f->n_tensors; i++) {
                const st_sf_tensor *t = &f->tensors[i];
                assert_true(t->begin == at);
                assert_true((uint64_t)st_sf_numel(t) * st_dtype_size(t->dt) == t->end - t->begin);
                at = t->end;
            }
            assert_true(8 + f->header_len + at == f->size);
            st_sf_close(f);
        } else {
            assert_null(f);
            assert_true(st_last_error()[0] != 0);
        }
    }
    printf("    %d mutated files: %d accepted, %d rejected\n", iters, accepted, iters - accepted);
    free(buf);
    free(orig);
}

/* Load a model that passed loading and run a few tokens at every budget. */
static void exercise(st_model *m) {
    const st_config *c = st_model_config(m);
    int32_t tok[3] = {1, c->vocab_size / 2, c->vocab_size - 1};
    float *lg = malloc(sizeof(float) * (size_t)c->vocab_size);
    for (int i = -1; i < st_model_n_budgets(m); i++) {
        st_budget *b;
        if (st_budget_by_name(m, i < 0 ? "full" : st_model_budget_name(m, i), &b)) continue;
        st_state *s;
        assert_int_equal(st_state_new(m, 16, &s), ST_OK);
        assert_int_equal(st_forward(b, s, tok, 3, lg, 0), ST_OK);
        assert_int_equal(st_forward(b, s, tok, 1, lg, 0), ST_OK);
        st_state_free(s);
        st_budget_free(b);
    }
    free(lg);
}

static void test_fuzz_model(void **state) {
    (void)state;
    const char *d = copy_good("fuzz");
    char src[700], p[800], cp[800];
    snprintf(src, sizeof src, "%s/model.safetensors", g_good);
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    snprintf(cp, sizeof cp, "%s/config.json", d);
    size_t n0, nc0;
    uint8_t *orig = read_all(src, &n0);
    char gcfg[700];
    snprintf(gcfg, sizeof gcfg, "%s/config.json", g_good);
    uint8_t *corig = read_all(gcfg, &nc0);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | orig[i];
    uint8_t *buf = malloc(n0), *cbuf = malloc(nc0 + 1);
    uint64_t seed = 0xc0ffee11ull;
    int iters = test_quick() ? 40 : 200, ok_w = 0, ok_c = 0;
    /* damaged weights header, intact config */
    for (int it = 0; it < iters; it++) {
        memcpy(buf, orig, n0);
        size_t n = n0;
        mutate(buf, &n, 8 + (size_t)hl, &seed);
        write_file(p, buf, n);
        st_model *m = NULL;
        if (st_model_load(d, &m) == ST_OK) { ok_w++; exercise(m); st_model_free(m); }
        else { assert_null(m); assert_true(st_last_error()[0] != 0); }
    }
    write_file(p, orig, n0);
    /* damaged config.json (a digit changed, a JSON character, cut short), intact weights */
    for (int it = 0; it < iters; it++) {
        memcpy(cbuf, corig, nc0);
        size_t n = nc0;
        switch (st_splitmix64(&seed) % 3) {
        case 0:
            for (int tries = 0; tries < 200; tries++) {
                size_t i = st_splitmix64(&seed) % nc0;
                if (cbuf[i] >= '0' && cbuf[i] <= '9') { cbuf[i] = (uint8_t)('0' + st_splitmix64(&seed) % 10); break; }
            }
            break;
        case 1: cbuf[st_splitmix64(&seed) % nc0] = (uint8_t)"{}[]\":,-019 x\x00"[st_splitmix64(&seed) % 14]; break;
        default: n = (size_t)(st_splitmix64(&seed) % nc0); break;
        }
        write_file(cp, cbuf, n);
        st_model *m = NULL;
        if (st_model_load(d, &m) == ST_OK) { ok_c++; exercise(m); st_model_free(m); }
        else { assert_null(m); assert_true(st_last_error()[0] != 0); }
    }
    printf("    %d damaged weight headers: %d loaded; %d damaged configs: %d loaded (all loaded ones ran)\n",
           iters, ok_w, iters, ok_c);
    free(buf); free(cbuf); free(orig); free(corig);
}

/* ------------------------------------------------------------ CLI */

/* Run the starling binary with args; capture stderr; return the exit status. */
static int cli(const char *args, char **err) {
    char cmd[4000];
    snprintf(cmd, sizeof cmd, "%s %s 2>&1 >/dev/null", starling_bin(), args);
    int st;
    *err = run_capture(cmd, &st);
    return st;
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* exit 1, exactly one line on stderr: "starling CMD: ..." containing each substring */
static void expect_cli_fail_(const char *file, int line, const char *cmd, const char *args, ...) {
    char *err;
    int st = cli(args, &err);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "starling %s: ", cmd);
    if (st != 1) fail_msg("%s:%d: `starling %s` exited %d, expected 1; stderr: %s", file, line, args, st, err);
    if (count_lines(err) != 1 || strncmp(err, prefix, strlen(prefix)))
        fail_msg("%s:%d: `starling %s`: expected one line starting \"%s\", got: %s", file, line, args, prefix, err);
    va_list ap;
    va_start(ap, args);
    for (const char *s = va_arg(ap, const char *); s; s = va_arg(ap, const char *))
        if (!strstr(err, s)) fail_msg("%s:%d: `starling %s`: stderr lacks \"%s\": %s", file, line, args, s, err);
    va_end(ap);
    printf("    exit 1: %s", err);
    free(err);
}
#define EXPECT_CLI_FAIL(cmd, args, ...) \
    expect_cli_fail_(__FILE__, __LINE__, (cmd), (args), __VA_ARGS__, (const char *)NULL)

static void test_cli(void **state) {
    (void)state;
    if (access(starling_bin(), X_OK) != 0) fail_msg("%s is not built (make builds it with the tests)", starling_bin());
    char a[2000];
    mutation mu = {.drop = "backbone.layers.3.mixer.in_proj.weight"};
    const char *d = mutated_model("cli-missing", &mu);
    snprintf(a, sizeof a, "info -m '%s'", d);
    EXPECT_CLI_FAIL("info", a, "backbone.layers.3.mixer.in_proj.weight");
    d = copy_good("cli-json");
    char p[800];
    snprintf(p, sizeof p, "%s/config.json", d);
    write_text(p, "{\"hidden_size\": 128,,}");
    snprintf(a, sizeof a, "info -m '%s'", d);
    EXPECT_CLI_FAIL("info", a, "config.json", "line 1");
    snprintf(a, sizeof a, "info -m '%s/no-such-dir'", g_root);
    EXPECT_CLI_FAIL("info", a, "no-such-dir");
    snprintf(a, sizeof a, "run -m '%s' --budget hidden_size=99999 -p hi", g_good);
    EXPECT_CLI_FAIL("run", a, "hidden_size = 99999", "wider");
    snprintf(a, sizeof a, "run -m '%s' --budget bogus=3 -p hi", g_good);
    EXPECT_CLI_FAIL("run", a, "unknown key \"bogus\"");
    snprintf(a, sizeof a, "run -m '%s' --budget XXL -p hi", g_good);
    EXPECT_CLI_FAIL("run", a, "no budget named \"XXL\"");
    /* usage errors exit 2 */
    const char *usage[] = {"info --no-such-option", "run --no-such-option", "bench --no-such-option",
                           "no-such-command", ""};
    for (size_t i = 0; i < sizeof usage / sizeof usage[0]; i++) {
        char *err;
        int st = cli(usage[i], &err);
        if (st != 2) fail_msg("`starling %s` exited %d, expected 2; stderr: %s", usage[i], st, err);
        if (!*err) fail_msg("`starling %s`: no message on stderr", usage[i]);
        free(err);
    }
}

/* Findings of the libFuzzer harnesses (fuzz/, docs/RELIABILITY.md), each
 * replayed through the same calls as its harness. The sanitizer run of the
 * suite (test-asan) is what catches a regression of the memory/UB kind. */
static void test_fuzz_findings(void **state) {
    (void)state;
    /* fuzz_tokenize, input 02 00 01 3c: decoding zero ids through the
       ByteLevel decoder added an offset to a NULL buffer (UB); it decodes to "" */
    const char *paths[2] = {"models/elastic/tokenizer.json", NULL};
    char synth_tok[700];
    snprintf(synth_tok, sizeof synth_tok, "%s/tokenizer.json", g_good);
    paths[1] = synth_tok;
    for (int i = 0; i < 2; i++) {
        if (access(paths[i], R_OK) != 0) continue;
        st_tokenizer *t;
        if (st_tokenizer_load(paths[i], &t)) fail_msg("%s: %s", paths[i], st_last_error());
        int32_t one = 0;
        char *out = NULL;
        assert_int_equal(st_detokenize(t, &one, 0, &out), ST_OK);
        assert_string_equal(out, "");
        free(out);
        st_tokenizer_free(t);
    }
    /* fuzz_gguf, tests/data/gguf_offset_wrap.gguf: a tensor offset near 2^64
       wrapped the bounds check (data_start + offset) and pointed the tensor
       before the map (UB); refused now with one message */
    st_gguf *g = NULL;
    assert_int_equal(st_gguf_open("tests/data/gguf_offset_wrap.gguf", &g), ST_ERR_FORMAT);
    assert_null(g);
    assert_non_null(strstr(st_last_error(), "outside the file"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sf_short_and_lying_length),
        cmocka_unit_test(test_sf_header_json),
        cmocka_unit_test(test_sf_dtype_and_shape),
        cmocka_unit_test(test_sf_offsets),
        cmocka_unit_test(test_sf_real_file_damage),
        cmocka_unit_test(test_ckpt_config),
        cmocka_unit_test(test_ckpt_tensors),
        cmocka_unit_test(test_ckpt_shards),
        cmocka_unit_test(test_budget_rules),
        cmocka_unit_test(test_budget_files),
        cmocka_unit_test(test_forward_range),
        cmocka_unit_test(test_fuzz_safetensors),
        cmocka_unit_test(test_fuzz_model),
        cmocka_unit_test(test_cli),
        cmocka_unit_test(test_fuzz_findings),
    };
    return cmocka_run_group_tests_name("badinput", tests, group_setup, group_teardown);
}

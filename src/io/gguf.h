/*
 * gguf.h — the GGUF container (version 3), as llama.cpp reads it:
 *
 *   "GGUF" u32 version, u64 n_tensors, u64 n_kv
 *   n_kv × (string key, u32 type, value)          strings: u64 length + bytes
 *   n_tensors × (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset)
 *   padding to general.alignment (32), then the tensor data, each tensor at
 *   its offset (a multiple of the alignment) from the data start.
 *
 * ne[0] is the innermost (contiguous) dimension: a row-major [rows][cols]
 * matrix is ne = {cols, rows}. The writer streams: declare keys and tensors,
 * begin (writes the header to PATH.tmp.PID), write the tensor bytes in
 * declaration order, finish (fsync, rename to PATH). The reader maps a file
 * and checks every length and offset before anything uses them.
 */
#ifndef ST_GGUF_H
#define ST_GGUF_H
#include "starling.h"
#include <stddef.h>
#include <stdint.h>

enum { /* value types */
    ST_GGUF_U8 = 0, ST_GGUF_I8, ST_GGUF_U16, ST_GGUF_I16, ST_GGUF_U32, ST_GGUF_I32, ST_GGUF_F32,
    ST_GGUF_BOOL, ST_GGUF_STR, ST_GGUF_ARR, ST_GGUF_U64, ST_GGUF_I64, ST_GGUF_F64
};
enum { /* the ggml tensor types starling writes */
    ST_GGML_F32 = 0, ST_GGML_F16 = 1, ST_GGML_Q8_0 = 8, ST_GGML_BF16 = 30
};
#define ST_GGUF_ALIGN 32
#define ST_GGUF_MAX_DIMS 4

/* Bytes of a tensor of type `type` with ne[0] = row, numel elements (0 when
 * the type is unknown or q8_0 rows are not a multiple of 32). */
uint64_t st_ggml_nbytes(int type, int64_t row, int64_t numel);
const char *st_ggml_type_name(int type);

/* ------------------------------------------------------------------ writer */
typedef struct st_gguf_w st_gguf_w;
st_status st_gguf_w_new(st_gguf_w **out);
void st_gguf_w_free(st_gguf_w *w); /* removes an unfinished temp file */
st_status st_gguf_kv_u32(st_gguf_w *w, const char *key, uint32_t v);
st_status st_gguf_kv_f32(st_gguf_w *w, const char *key, float v);
st_status st_gguf_kv_bool(st_gguf_w *w, const char *key, int v);
st_status st_gguf_kv_str(st_gguf_w *w, const char *key, const char *v);
st_status st_gguf_kv_i32s(st_gguf_w *w, const char *key, const int32_t *v, size_t n);
st_status st_gguf_kv_strs(st_gguf_w *w, const char *key, const char *const *v, size_t n);
st_status st_gguf_tensor(st_gguf_w *w, const char *name, int type, int ndim, const int64_t *ne);
uint64_t st_gguf_w_data_bytes(const st_gguf_w *w);
st_status st_gguf_w_begin(st_gguf_w *w, const char *path);
/* Tensor bytes, in declaration order, any chunking; padding is added. */
st_status st_gguf_w_write(st_gguf_w *w, const void *data, size_t n);
st_status st_gguf_w_finish(st_gguf_w *w);

/* ------------------------------------------------------------------ reader */
typedef struct {
    char *key;
    uint32_t type;        /* ST_GGUF_* */
    uint32_t arr_type;    /* element type when type == ST_GGUF_ARR */
    uint64_t n;           /* array length (1 for scalars) */
    const uint8_t *val;   /* scalar / array payload in the map */
} st_gguf_kv;

typedef struct {
    char *name;
    int ndim;
    int64_t ne[ST_GGUF_MAX_DIMS];
    int type;
    uint64_t offset, bytes;
    const uint8_t *data;
} st_gguf_tensor_info;

typedef struct {
    void *map;
    size_t size;
    uint32_t version;
    st_gguf_kv *kv;
    size_t n_kv;
    st_gguf_tensor_info *t;
    size_t n_t;
} st_gguf;

st_status st_gguf_open(const char *path, st_gguf **out);
void st_gguf_close(st_gguf *g);
const st_gguf_kv *st_gguf_find(const st_gguf *g, const char *key);
const st_gguf_tensor_info *st_gguf_find_tensor(const st_gguf *g, const char *name);
/* Scalar integer/bool value (any int type); def when missing or not an int. */
int64_t st_gguf_int(const st_gguf *g, const char *key, int64_t def);
/* String value (malloc'd copy) or NULL. */
char *st_gguf_str(const st_gguf *g, const char *key);
/* Element i of a string array (malloc'd copy) or NULL. */
char *st_gguf_arr_str(const st_gguf_kv *kv, uint64_t i);
/* Element i of an integer array as int64 (0 when out of range / not ints). */
int64_t st_gguf_arr_int(const st_gguf_kv *kv, uint64_t i);
/* Tensor data as floats (f32/f16/bf16/q8_0), malloc'd, numel elements. */
st_status st_gguf_tensor_f32(const st_gguf_tensor_info *t, float **out);
#endif

/*
 * safetensors.h — validating mmap reader and streaming writer for the
 * safetensors format (docs/architecture.md §4):
 *
 *   [0,8)      u64 LE  N = header length
 *   [8,8+N)    JSON    {"name": {"dtype","shape","data_offsets":[b,e]}, "__metadata__": {...}}
 *   [8+N,EOF)  bytes   tensor data, tiled contiguously from 0 with no gaps
 *
 * The reader checks everything before any tensor is used, so later code can
 * trust shapes and spans. Data pointers may be unaligned.
 */
#ifndef ST_SAFETENSORS_H
#define ST_SAFETENSORS_H

#include "kernels/kernels.h"
#include "starling.h"
#include <stdint.h>

#define ST_SF_MAX_DIMS 8
#define ST_SF_MAX_HEADER 100000000ull

typedef struct {
    char *name;
    st_dtype dt;
    int ndim;
    int64_t shape[ST_SF_MAX_DIMS];
    uint64_t begin, end;      /* byte span within the data buffer */
    const uint8_t *data;      /* = map + 8 + N + begin            */
    int file_index;           /* which shard (set by the checkpoint loader) */
} st_sf_tensor;

typedef struct {
    char *path;
    void *map;
    size_t size;              /* file size */
    uint64_t header_len;
    st_sf_tensor *tensors;    /* sorted by begin offset */
    int n_tensors;
} st_sf_file;

st_status st_sf_open(const char *path, st_sf_file **out);
void st_sf_close(st_sf_file *f);
int64_t st_sf_numel(const st_sf_tensor *t);

/* Streaming writer: declare every tensor, begin (writes the header), then
 * write the data bytes in declaration order, then finish. The file appears at
 * `path` only on a successful finish (written as path.tmp, fsync'd, renamed). */
typedef struct st_sf_writer st_sf_writer;
st_status st_sf_writer_new(st_sf_writer **out);
st_status st_sf_writer_add(st_sf_writer *w, const char *name, st_dtype dt, int ndim,
                           const int64_t *shape);
st_status st_sf_writer_meta(st_sf_writer *w, const char *key, const char *value);
st_status st_sf_writer_begin(st_sf_writer *w, const char *path);
st_status st_sf_writer_write(st_sf_writer *w, const void *data, size_t n);
/* Append n bytes read from file descriptor fd at offset off (copy_file_range
 * where the file system allows, else read/write). */
st_status st_sf_writer_copy(st_sf_writer *w, int fd, uint64_t off, size_t n);
st_status st_sf_writer_finish(st_sf_writer *w);
uint64_t st_sf_writer_data_bytes(const st_sf_writer *w);
void st_sf_writer_free(st_sf_writer *w); /* aborts an unfinished file (removes the .tmp) */

#endif

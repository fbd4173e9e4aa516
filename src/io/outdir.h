/*
 * outdir.h — writing a checkpoint directory safely: everything goes into
 * DST.tmp.PID beside the target, which is renamed into place only when
 * complete (an error or interrupt leaves no target and no temp dir), and a
 * sharded tensor writer that splits the data into ~N-byte safetensors shards
 * with model.safetensors.index.json, streaming (declare all, then write bytes).
 */
#ifndef ST_OUTDIR_H
#define ST_OUTDIR_H
#include "io/safetensors.h"
#include "starling.h"

typedef struct {
    char dst[3200];
    char tmp[3300];
    int made;
} st_outdir;

/* Refuse an existing dst unless force; create the temp dir. */
st_status st_outdir_begin(st_outdir *o, const char *dst, int force);
/* Fail early when the file system cannot hold `bytes` more. */
st_status st_outdir_check_space(const st_outdir *o, uint64_t bytes);
/* Copy tokenizer and generation files that exist in src_dir. */
st_status st_outdir_copy_side_files(const st_outdir *o, const char *src_dir);
/* Write a file inside the temp dir atomically. */
st_status st_outdir_write(const st_outdir *o, const char *name, const void *data, size_t len);
/* Move the finished temp dir to dst (replacing an old dst when forced). */
st_status st_outdir_commit(st_outdir *o);
/* Remove the temp dir (after a failure). */
void st_outdir_abort(st_outdir *o);

typedef struct st_shards st_shards;
st_status st_shards_new(st_shards **out, const char *dir, uint64_t shard_bytes);
st_status st_shards_add(st_shards *s, const char *name, st_dtype dt, int ndim, const int64_t *shape);
uint64_t st_shards_total(const st_shards *s);
/* After all adds: assign shards, open the first. */
st_status st_shards_begin(st_shards *s);
/* Data in declaration order; shard boundaries fall between tensors. */
st_status st_shards_write(st_shards *s, const void *data, size_t n);
/* The same, from n bytes of file descriptor fd at offset off (in-kernel copy). */
st_status st_shards_copy(st_shards *s, int fd, uint64_t off, size_t n);
/* Finish the last shard and write the index (when more than one shard). */
st_status st_shards_finish(st_shards *s);
void st_shards_free(st_shards *s);
#endif

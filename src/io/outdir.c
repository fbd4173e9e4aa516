/* outdir.c — see outdir.h. */
#include "io/outdir.h"
#include "util/killsafe.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

static void rm_tree(const char *dir) {
    char cmd[8300];
    /* only ever called on DST.tmp.PID / DST.old.PID, which we created */
    if (st_pathf(cmd, sizeof cmd, "rm -rf -- '%s'", dir)) return;
    if (system(cmd) != 0) { /* best effort */ }
}

st_status st_outdir_begin(st_outdir *o, const char *dst, int force) {
    memset(o, 0, sizeof *o);
    if (strchr(dst, '\'')) return st_err(ST_ERR_ARG, "%s: the target path may not contain a quote", dst);
    if (st_pathf(o->dst, sizeof o->dst, "%s", dst) || st_pathf(o->tmp, sizeof o->tmp, "%s.tmp.%ld", dst, (long)getpid()))
        return st_err(ST_ERR_ARG, "target path too long");
    size_t n = strlen(o->dst);
    while (n > 1 && o->dst[n - 1] == '/') o->dst[--n] = 0;
    /* a run killed with -9 left DST.tmp.PID / DST.old.PID: remove them */
    {
        char dir[3200];
        snprintf(dir, sizeof dir, "%s", o->dst);
        char *slash = strrchr(dir, '/');
        const char *base = slash ? slash + 1 : dir;
        if (slash == dir) { st_clean_stale("/", base); }
        else if (slash) { *slash = 0; st_clean_stale(dir, base); }
        else st_clean_stale(".", base);
    }
    struct stat sb;
    if (stat(o->dst, &sb) == 0 && !force)
        return st_err(ST_ERR_ARG, "%s already exists (use --force to replace it)", o->dst);
    if (mkdir(o->tmp, 0755) != 0) return st_err(ST_ERR_IO, "%s: %s", o->tmp, strerror(errno));
    o->made = 1;
    return ST_OK;
}

st_status st_outdir_check_space(const st_outdir *o, uint64_t bytes) {
    struct statvfs vs;
    if (statvfs(o->tmp, &vs) != 0) return ST_OK; /* cannot tell: let the writes decide */
    double avail = (double)vs.f_bavail * (double)vs.f_frsize, need = (double)bytes * 1.01 + (1 << 20);
    if (avail < need)
        return st_err(ST_ERR_IO, "%s: %.2f GB free, the checkpoint needs %.2f GB", o->tmp, avail / 1e9, need / 1e9);
    return ST_OK;
}

st_status st_outdir_write(const st_outdir *o, const char *name, const void *data, size_t len) {
    char p[4096];
    if (st_pathf(p, sizeof p, "%s/%s", o->tmp, name)) return st_err(ST_ERR_ARG, "path too long");
    return st_write_file_atomic(p, data, len);
}

st_status st_outdir_copy_side_files(const st_outdir *o, const char *src) {
    static const char *names[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                  "generation_config.json", "chat_template.jinja", NULL};
    for (int i = 0; names[i]; i++) {
        char sp[4096];
        if (st_pathf(sp, sizeof sp, "%s/%s", src, names[i])) return st_err(ST_ERR_ARG, "path too long");
        char *data;
        size_t len;
        st_status rc = st_read_file(sp, &data, &len);
        if (rc == ST_ERR_MISSING) continue;
        if (rc) return rc;
        rc = st_outdir_write(o, names[i], data, len);
        free(data);
        if (rc) return rc;
    }
    return ST_OK;
}

st_status st_outdir_commit(st_outdir *o) {
    struct stat sb;
    st_killpoint();
    /* Replacing: swap the finished dir and the old one in one step, so that a
       kill at any moment leaves either the old or the new target under the
       final name; the old one, now DST.tmp.PID, is removed (or, after a kill,
       by the next run). */
    if (stat(o->dst, &sb) == 0 && renameat2(AT_FDCWD, o->tmp, AT_FDCWD, o->dst, RENAME_EXCHANGE) == 0) {
        st_killpoint();
        rm_tree(o->tmp);
    } else if (stat(o->dst, &sb) == 0) { /* a file system without RENAME_EXCHANGE */
        char old[3400];
        snprintf(old, sizeof old, "%s.old.%ld", o->dst, (long)getpid());
        if (rename(o->dst, old) != 0) return st_err(ST_ERR_IO, "rename %s: %s", o->dst, strerror(errno));
        st_killpoint(); /* the window this path cannot close: no target until the next rename */
        if (rename(o->tmp, o->dst) != 0) {
            int e = errno;
            if (rename(old, o->dst) != 0) { /* keep both; report the first error */ }
            return st_err(ST_ERR_IO, "rename %s: %s", o->tmp, strerror(e));
        }
        rm_tree(old);
    } else if (rename(o->tmp, o->dst) != 0) {
        return st_err(ST_ERR_IO, "rename %s -> %s: %s", o->tmp, o->dst, strerror(errno));
    }
    o->made = 0;
    st_killpoint();
    return ST_OK;
}

void st_outdir_abort(st_outdir *o) {
    if (o->made) rm_tree(o->tmp);
    o->made = 0;
}

/* ------------------------------------------------------------ shards */

typedef struct {
    char *name;
    st_dtype dt;
    int ndim;
    int64_t shape[ST_SF_MAX_DIMS];
    uint64_t bytes;
    int shard;
} sh_entry;

struct st_shards {
    char dir[3400];
    uint64_t shard_bytes, total, left_in_tensor;
    sh_entry *e;
    int n, cap, n_shards, cur_shard, cur_tensor;
    st_sf_writer *w;
};

st_status st_shards_new(st_shards **out, const char *dir, uint64_t shard_bytes) {
    st_shards *s = st_calloc(1, sizeof *s);
    if (!s) return ST_ERR_NOMEM;
    snprintf(s->dir, sizeof s->dir, "%s", dir);
    s->shard_bytes = shard_bytes ? shard_bytes : 5000000000ull;
    s->cur_shard = -1;
    *out = s;
    return ST_OK;
}

st_status st_shards_add(st_shards *s, const char *name, st_dtype dt, int ndim, const int64_t *shape) {
    if (s->n == s->cap) {
        int nc = s->cap ? 2 * s->cap : 256;
        sh_entry *ne = st_realloc(s->e, sizeof *ne * (size_t)nc);
        if (!ne) return st_err(ST_ERR_NOMEM, "out of memory");
        s->e = ne; s->cap = nc;
    }
    sh_entry *e = &s->e[s->n];
    memset(e, 0, sizeof *e);
    e->name = st_strdup(name);
    if (!e->name) return ST_ERR_NOMEM;
    e->dt = dt; e->ndim = ndim;
    e->bytes = st_dtype_size(dt);
    for (int i = 0; i < ndim; i++) { e->shape[i] = shape[i]; e->bytes *= (uint64_t)shape[i]; }
    s->total += e->bytes;
    s->n++;
    return ST_OK;
}

uint64_t st_shards_total(const st_shards *s) { return s->total; }

static void shard_name(const st_shards *s, int k, char *buf, size_t n) {
    if (s->n_shards == 1) snprintf(buf, n, "model.safetensors");
    else snprintf(buf, n, "model-%05d-of-%05d.safetensors", k + 1, s->n_shards);
}

static st_status open_shard(st_shards *s, int k) {
    st_status rc = st_sf_writer_new(&s->w);
    for (int i = 0; !rc && i < s->n; i++)
        if (s->e[i].shard == k) rc = st_sf_writer_add(s->w, s->e[i].name, s->e[i].dt, s->e[i].ndim, s->e[i].shape);
    if (!rc) rc = st_sf_writer_meta(s->w, "format", "pt");
    char nm[64], path[3500];
    shard_name(s, k, nm, sizeof nm);
    if (!rc && st_pathf(path, sizeof path, "%s/%s", s->dir, nm)) rc = st_err(ST_ERR_ARG, "path too long");
    if (!rc) rc = st_sf_writer_begin(s->w, path);
    s->cur_shard = k;
    return rc;
}

st_status st_shards_begin(st_shards *s) {
    uint64_t acc = 0;
    for (int i = 0; i < s->n; i++) {
        if (i == 0 || (acc > 0 && acc + s->e[i].bytes > s->shard_bytes)) { s->n_shards++; acc = 0; }
        acc += s->e[i].bytes;
        s->e[i].shard = s->n_shards - 1;
    }
    if (!s->n_shards) s->n_shards = 1;
    s->cur_tensor = 0;
    s->left_in_tensor = s->n ? s->e[0].bytes : 0;
    return open_shard(s, 0);
}

/* data != NULL: append bytes; else copy n bytes of fd from off. */
static st_status shards_put(st_shards *s, const void *data, int fd, uint64_t off, size_t n) {
    const uint8_t *p = data;
    while (n) {
        while (s->cur_tensor < s->n && s->left_in_tensor == 0) { /* zero-size tensors / tensor boundary */
            s->cur_tensor++;
            if (s->cur_tensor < s->n) s->left_in_tensor = s->e[s->cur_tensor].bytes;
        }
        if (s->cur_tensor >= s->n) return st_err(ST_ERR_ARG, "sharded writer: more data than declared");
        int k = s->e[s->cur_tensor].shard;
        if (k != s->cur_shard) {
            st_status rc = st_sf_writer_finish(s->w);
            st_sf_writer_free(s->w);
            s->w = NULL;
            if (rc) return rc;
            if ((rc = open_shard(s, k))) return rc;
        }
        size_t take = n < s->left_in_tensor ? n : (size_t)s->left_in_tensor;
        st_status rc = p ? st_sf_writer_write(s->w, p, take) : st_sf_writer_copy(s->w, fd, off, take);
        if (rc) return rc;
        if (p) p += take;
        off += take; n -= take; s->left_in_tensor -= take;
    }
    return ST_OK;
}

st_status st_shards_write(st_shards *s, const void *data, size_t n) { return shards_put(s, data, -1, 0, n); }
st_status st_shards_copy(st_shards *s, int fd, uint64_t off, size_t n) { return shards_put(s, NULL, fd, off, n); }

st_status st_shards_finish(st_shards *s) {
    st_status rc = st_sf_writer_finish(s->w);
    st_sf_writer_free(s->w);
    s->w = NULL;
    if (rc || s->n_shards == 1) return rc;
    json_t *wm = json_object();
    for (int i = 0; i < s->n; i++) {
        char nm[64];
        shard_name(s, s->e[i].shard, nm, sizeof nm);
        json_object_set_new(wm, s->e[i].name, json_string(nm));
    }
    json_t *idx = json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)s->total, "weight_map", wm);
    char *js = idx ? json_dumps(idx, JSON_INDENT(2)) : NULL;
    json_decref(idx);
    char path[3500];
    if (!js) return st_err(ST_ERR_NOMEM, "cannot serialise the shard index");
    if (st_pathf(path, sizeof path, "%s/model.safetensors.index.json", s->dir)) rc = st_err(ST_ERR_ARG, "path too long");
    else rc = st_write_file_atomic(path, js, strlen(js));
    free(js);
    return rc;
}

void st_shards_free(st_shards *s) {
    if (!s) return;
    st_sf_writer_free(s->w);
    for (int i = 0; i < s->n; i++) free(s->e[i].name);
    free(s->e);
    free(s);
}

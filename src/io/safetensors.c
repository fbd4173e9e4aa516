/*
 * safetensors.c — see safetensors.h. The reader follows the reference
 * implementation's checks (huggingface/safetensors tensor.rs): header size
 * bound, JSON object, known dtypes, shape × element size == span, spans tiling
 * the buffer contiguously from 0, and the last span ending at EOF.
 */
#include "io/safetensors.h"
#include "util/killsafe.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int64_t st_sf_numel(const st_sf_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

static int cmp_begin(const void *a, const void *b) {
    const st_sf_tensor *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

void st_sf_close(st_sf_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    if (f->map && f->map != MAP_FAILED) munmap(f->map, f->size);
    free(f->path);
    free(f);
}

/* Parse one tensor entry; returns 0 or sets the error. */
static st_status parse_entry(const char *path, const char *name, json_t *v, st_sf_tensor *t) {
    if (!json_is_object(v)) return st_err(ST_ERR_FORMAT, "%s: tensor '%s': entry is not an object", path, name);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
           *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd) || !json_is_array(js) || !json_is_array(jo) || json_array_size(jo) != 2)
        return st_err(ST_ERR_FORMAT, "%s: tensor '%s': needs string dtype, array shape and 2 data_offsets",
                      path, name);
    if (st_dtype_from_name(json_string_value(jd), &t->dt) != 0)
        return st_err(ST_ERR_UNSUPPORTED, "%s: tensor '%s': unknown dtype '%s'", path, name,
                      json_string_value(jd));
    size_t nd = json_array_size(js);
    if (nd > ST_SF_MAX_DIMS)
        return st_err(ST_ERR_FORMAT, "%s: tensor '%s': %zu dimensions (max %d)", path, name, nd, ST_SF_MAX_DIMS);
    t->ndim = (int)nd;
    /* numel and numel × size must fit in int64 at every step (like the reference
       reader's checked_mul), so st_sf_numel can never overflow */
    unsigned __int128 numel = 1;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(js, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return st_err(ST_ERR_FORMAT, "%s: tensor '%s': shape[%zu] is not a non-negative integer", path, name, i);
        t->shape[i] = json_integer_value(d);
        numel *= (unsigned __int128)t->shape[i];
        if (numel > INT64_MAX)
            return st_err(ST_ERR_FORMAT, "%s: tensor '%s': shape overflows 64 bits (element count at shape[%zu])",
                          path, name, i);
    }
    unsigned __int128 bytes = numel * st_dtype_size(t->dt);
    if (bytes > INT64_MAX)
        return st_err(ST_ERR_FORMAT, "%s: tensor '%s': shape x dtype size overflows 64 bits", path, name);
    json_t *b = json_array_get(jo, 0), *e = json_array_get(jo, 1);
    if (!json_is_integer(b) || !json_is_integer(e) || json_integer_value(b) < 0 ||
        json_integer_value(e) < json_integer_value(b))
        return st_err(ST_ERR_FORMAT, "%s: tensor '%s': bad data_offsets", path, name);
    t->begin = (uint64_t)json_integer_value(b);
    t->end = (uint64_t)json_integer_value(e);
    if ((unsigned __int128)(t->end - t->begin) != bytes)
        return st_err(ST_ERR_FORMAT,
                      "%s: tensor '%s': data_offsets span %llu bytes but shape x dtype needs %llu",
                      path, name, (unsigned long long)(t->end - t->begin), (unsigned long long)bytes);
    t->name = st_strdup(name);
    return t->name ? ST_OK : ST_ERR_NOMEM;
}

st_status st_sf_open(const char *path, st_sf_file **out) {
    *out = NULL;
    st_sf_file *f = st_calloc(1, sizeof *f);
    if (!f) return ST_ERR_NOMEM;
    f->path = st_strdup(path);
    st_status rc = ST_OK;
    json_t *root = NULL;
    if (!f->path) { rc = ST_ERR_NOMEM; goto fail; }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = st_err(errno == ENOENT ? ST_ERR_MISSING : ST_ERR_IO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        rc = st_err(ST_ERR_IO, "%s: not a regular file", path);
        goto fail;
    }
    f->size = (size_t)sb.st_size;
    if (f->size < 8) {
        close(fd);
        rc = st_err(ST_ERR_FORMAT, "%s: truncated: %zu bytes, less than the 8-byte header length", path, f->size);
        goto fail;
    }
    f->map = mmap(NULL, f->size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        rc = st_err(ST_ERR_IO, "%s: mmap: %s", path, strerror(errno));
        goto fail;
    }
    /* Ask for 2 MiB mappings of the weights: decode streams ~all of them per
     * token, and with 4 KiB pages that is a TLB miss every 4 KiB and a
     * hardware prefetcher that stops at every page edge. Kernels with large
     * page-cache folios then read the file in (and map) 2 MiB pieces; where
     * that is not supported the advice is ignored. */
#ifdef MADV_HUGEPAGE
    (void)madvise(f->map, f->size, MADV_HUGEPAGE);
#endif
    const uint8_t *base = f->map;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | base[i];
    f->header_len = n;
    if (n > ST_SF_MAX_HEADER) {
        rc = st_err(ST_ERR_FORMAT, "%s: header length %llu exceeds the %llu-byte limit", path,
                    (unsigned long long)n, ST_SF_MAX_HEADER);
        goto fail;
    }
    if (8 + n > f->size) {
        rc = st_err(ST_ERR_FORMAT, "%s: header length %llu runs past the end of the %zu-byte file", path,
                    (unsigned long long)n, f->size);
        goto fail;
    }
    json_error_t je;
    root = json_loadb((const char *)base + 8, n, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!root) {
        rc = st_err(ST_ERR_FORMAT, "%s: header is not valid JSON: %s (at byte %d)", path, je.text, je.position);
        goto fail;
    }
    if (!json_is_object(root)) {
        rc = st_err(ST_ERR_FORMAT, "%s: header is not a JSON object", path);
        goto fail;
    }
    size_t cap = json_object_size(root);
    f->tensors = st_calloc(cap ? cap : 1, sizeof *f->tensors);
    if (!f->tensors) { rc = ST_ERR_NOMEM; goto fail; }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(val)) { rc = st_err(ST_ERR_FORMAT, "%s: __metadata__ is not an object", path); goto fail; }
            continue;
        }
        rc = parse_entry(path, key, val, &f->tensors[f->n_tensors]);
        if (rc) goto fail;
        f->n_tensors++;
    }
    qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, cmp_begin);
    uint64_t at = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        st_sf_tensor *t = &f->tensors[i];
        if (t->begin != at) {
            rc = st_err(ST_ERR_FORMAT, "%s: tensor '%s' starts at %llu but the previous tensor ends at %llu (%s)",
                        path, t->name, (unsigned long long)t->begin, (unsigned long long)at,
                        t->begin < at ? "overlapping offsets" : "gap in the data buffer");
            goto fail;
        }
        at = t->end;
        t->data = base + 8 + n + t->begin;
    }
    if (8 + n + at != f->size) {
        rc = st_err(ST_ERR_FORMAT, "%s: tensors end at byte %llu but the file has %zu bytes (%s)", path,
                    (unsigned long long)(8 + n + at), f->size,
                    8 + n + at > f->size ? "truncated file" : "trailing bytes");
        goto fail;
    }
    json_decref(root);
    *out = f;
    return ST_OK;
fail:
    json_decref(root);
    st_sf_close(f);
    return rc;
}

/* ------------------------------------------------------------------ writer */

typedef struct {
    char *name;
    st_dtype dt;
    int ndim;
    int64_t shape[ST_SF_MAX_DIMS];
    uint64_t bytes;
} wt_entry;

struct st_sf_writer {
    wt_entry *e;
    int n, cap;
    json_t *meta;
    char *path, *tmp;
    FILE *fp;
    uint64_t total, written;
    int failed;
};

st_status st_sf_writer_new(st_sf_writer **out) {
    *out = st_calloc(1, sizeof **out);
    return *out ? ST_OK : ST_ERR_NOMEM;
}

st_status st_sf_writer_add(st_sf_writer *w, const char *name, st_dtype dt, int ndim, const int64_t *shape) {
    if (w->fp) return st_err(ST_ERR_ARG, "safetensors writer: add after begin");
    if (ndim < 0 || ndim > ST_SF_MAX_DIMS) return st_err(ST_ERR_ARG, "safetensors writer: '%s': bad ndim %d", name, ndim);
    if (w->n == w->cap) {
        int nc = w->cap ? 2 * w->cap : 64;
        wt_entry *ne = st_realloc(w->e, (size_t)nc * sizeof *ne);
        if (!ne) return st_err(ST_ERR_NOMEM, "out of memory");
        w->e = ne; w->cap = nc;
    }
    wt_entry *e = &w->e[w->n];
    memset(e, 0, sizeof *e);
    e->name = st_strdup(name);
    if (!e->name) return ST_ERR_NOMEM;
    e->dt = dt; e->ndim = ndim;
    uint64_t b = st_dtype_size(dt);
    for (int i = 0; i < ndim; i++) { e->shape[i] = shape[i]; b *= (uint64_t)shape[i]; }
    e->bytes = b;
    w->total += b;
    w->n++;
    return ST_OK;
}

st_status st_sf_writer_meta(st_sf_writer *w, const char *key, const char *value) {
    if (!w->meta) w->meta = json_object();
    json_object_set_new(w->meta, key, json_string(value));
    return ST_OK;
}

uint64_t st_sf_writer_data_bytes(const st_sf_writer *w) { return w->total; }

st_status st_sf_writer_begin(st_sf_writer *w, const char *path) {
    json_t *h = json_object();
    if (w->meta) json_object_set(h, "__metadata__", w->meta);
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        wt_entry *e = &w->e[i];
        json_t *shape = json_array();
        for (int d = 0; d < e->ndim; d++) json_array_append_new(shape, json_integer(e->shape[d]));
        json_t *t = json_pack("{s:s, s:o, s:[I,I]}", "dtype", st_dtype_name(e->dt), "shape", shape,
                              "data_offsets", (json_int_t)off, (json_int_t)(off + e->bytes));
        if (json_object_get(h, e->name)) {
            json_decref(t); json_decref(h);
            return st_err(ST_ERR_ARG, "safetensors writer: duplicate tensor name '%s'", e->name);
        }
        json_object_set_new(h, e->name, t);
        off += e->bytes;
    }
    char *js = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(h);
    if (!js) return st_err(ST_ERR_NOMEM, "safetensors writer: cannot serialise header");
    size_t jl = strlen(js), padded = (jl + 7) & ~(size_t)7;
    size_t plen = strlen(path);
    w->path = st_strdup(path);
    w->tmp = st_malloc(plen + 8);
    if (!w->path || !w->tmp) { free(js); return ST_ERR_NOMEM; }
    snprintf(w->tmp, plen + 8, "%s.tmp", path);
    w->fp = fopen(w->tmp, "wb");
    if (!w->fp) { free(js); return st_err(ST_ERR_IO, "%s: %s", w->tmp, strerror(errno)); }
    setvbuf(w->fp, NULL, _IOFBF, 1 << 22); /* few large write(2)s: rows are small */
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    int ok = fwrite(len8, 1, 8, w->fp) == 8 && fwrite(js, 1, jl, w->fp) == jl;
    for (size_t i = jl; ok && i < padded; i++) ok = fputc(' ', w->fp) != EOF;
    free(js);
    if (!ok) { w->failed = 1; return st_err(ST_ERR_IO, "%s: write failed: %s", w->tmp, strerror(errno)); }
    return ST_OK;
}

st_status st_sf_writer_write(st_sf_writer *w, const void *data, size_t n) {
    if (!w->fp || w->failed) return st_err(ST_ERR_ARG, "safetensors writer: write without begin");
    if (w->written + n > w->total) {
        w->failed = 1;
        return st_err(ST_ERR_ARG, "safetensors writer: %llu bytes written exceeds the declared %llu",
                      (unsigned long long)(w->written + n), (unsigned long long)w->total);
    }
    st_killpoint();
    if (n && fwrite(data, 1, n, w->fp) != n) {
        w->failed = 1;
        return st_err(ST_ERR_IO, "%s: write failed: %s", w->tmp, strerror(errno));
    }
    w->written += n;
    return ST_OK;
}

st_status st_sf_writer_copy(st_sf_writer *w, int fd, uint64_t off, size_t n) {
    if (!w->fp || w->failed) return st_err(ST_ERR_ARG, "safetensors writer: write without begin");
    if (w->written + n > w->total) {
        w->failed = 1;
        return st_err(ST_ERR_ARG, "safetensors writer: %llu bytes written exceeds the declared %llu",
                      (unsigned long long)(w->written + n), (unsigned long long)w->total);
    }
    st_killpoint();
    if (fflush(w->fp) != 0) { w->failed = 1; return st_err(ST_ERR_IO, "%s: %s", w->tmp, strerror(errno)); }
    int out = fileno(w->fp);
    off_t o = (off_t)off;
    size_t left = n;
    char buf[1 << 16];
    while (left) {
        /* in-kernel copy (what cp does); plain read/write where unsupported */
        ssize_t k = copy_file_range(fd, &o, out, NULL, left, 0);
        if (k < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP)) {
            ssize_t r = pread(fd, buf, left < sizeof buf ? left : sizeof buf, o);
            if (r > 0) {
                ssize_t wr = write(out, buf, (size_t)r);
                k = wr == r ? r : -1;
                if (k > 0) o += k;
            } else k = r == 0 ? -1 : r;
        }
        if (k <= 0) {
            if (k < 0 && errno == EINTR) continue;
            w->failed = 1;
            return st_err(ST_ERR_IO, "%s: copy failed: %s", w->tmp, k == 0 ? "unexpected end of source" : strerror(errno));
        }
        left -= (size_t)k;
    }
    w->written += n;
    return ST_OK;
}

st_status st_sf_writer_finish(st_sf_writer *w) {
    if (!w->fp || w->failed) return st_err(ST_ERR_ARG, "safetensors writer: finish without a good begin");
    if (w->written != w->total)
        return st_err(ST_ERR_ARG, "safetensors writer: %llu of %llu declared bytes written",
                      (unsigned long long)w->written, (unsigned long long)w->total);
    int ok = fflush(w->fp) == 0 && fsync(fileno(w->fp)) == 0;
    ok = (fclose(w->fp) == 0) && ok;
    w->fp = NULL;
    if (!ok) { unlink(w->tmp); return st_err(ST_ERR_IO, "%s: %s", w->tmp, strerror(errno)); }
    if (rename(w->tmp, w->path) != 0) {
        int e = errno; unlink(w->tmp);
        return st_err(ST_ERR_IO, "rename %s: %s", w->path, strerror(e));
    }
    free(w->tmp); w->tmp = NULL;
    return ST_OK;
}

void st_sf_writer_free(st_sf_writer *w) {
    if (!w) return;
    if (w->fp) { fclose(w->fp); if (w->tmp) unlink(w->tmp); }
    for (int i = 0; i < w->n; i++) free(w->e[i].name);
    free(w->e);
    json_decref(w->meta);
    free(w->path); free(w->tmp);
    free(w);
}

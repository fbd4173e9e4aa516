/* gguf.c — see gguf.h. */
#include "io/gguf.h"
#include "kernels/kernels.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

uint64_t st_ggml_nbytes(int type, int64_t row, int64_t numel) {
    if (numel < 0 || row <= 0) return 0;
    switch (type) {
    case ST_GGML_F32: return (uint64_t)numel * 4;
    case ST_GGML_F16: case ST_GGML_BF16: return (uint64_t)numel * 2;
    case ST_GGML_Q8_0: return row % 32 ? 0 : (uint64_t)numel / 32 * 34; /* f16 scale + 32 int8 */
    default: return 0;
    }
}

const char *st_ggml_type_name(int type) {
    switch (type) {
    case ST_GGML_F32: return "F32";
    case ST_GGML_F16: return "F16";
    case ST_GGML_Q8_0: return "Q8_0";
    case ST_GGML_BF16: return "BF16";
    default: return "?";
    }
}

/* ------------------------------------------------------------------ writer */

typedef struct { char *name; int type, ndim; int64_t ne[ST_GGUF_MAX_DIMS]; uint64_t off, bytes; } wtensor;

struct st_gguf_w {
    uint8_t *kv;          /* serialized key/value pairs */
    size_t kv_len, kv_cap;
    uint64_t n_kv;
    wtensor *t;
    size_t n_t, cap_t;
    uint64_t data_bytes;  /* with padding */
    FILE *fp;
    char *path, *tmp;
    size_t cur;           /* tensor being written */
    uint64_t cur_done;    /* its bytes written so far */
    int failed;
};

static st_status put(st_gguf_w *w, const void *p, size_t n) {
    if (w->kv_len + n > w->kv_cap) {
        size_t nc = w->kv_cap ? w->kv_cap : 4096;
        while (nc < w->kv_len + n) nc *= 2;
        uint8_t *q = st_realloc(w->kv, nc);
        if (!q) return st_err(ST_ERR_NOMEM, "out of memory");
        w->kv = q; w->kv_cap = nc;
    }
    memcpy(w->kv + w->kv_len, p, n);
    w->kv_len += n;
    return ST_OK;
}
static st_status put_u32(st_gguf_w *w, uint32_t v) { return put(w, &v, 4); } /* x86-64 / LE hosts */
static st_status put_u64(st_gguf_w *w, uint64_t v) { return put(w, &v, 8); }
static st_status put_str(st_gguf_w *w, const char *s) {
    uint64_t n = strlen(s);
    st_status rc = put_u64(w, n);
    return rc ? rc : put(w, s, n);
}
static st_status put_key(st_gguf_w *w, const char *key, uint32_t type) {
    st_status rc = put_str(w, key);
    if (!rc) rc = put_u32(w, type);
    if (!rc) w->n_kv++;
    return rc;
}

st_status st_gguf_w_new(st_gguf_w **out) {
    *out = st_calloc(1, sizeof **out);
    return *out ? ST_OK : ST_ERR_NOMEM;
}

void st_gguf_w_free(st_gguf_w *w) {
    if (!w) return;
    if (w->fp) { fclose(w->fp); unlink(w->tmp); }
    for (size_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->t); free(w->kv); free(w->path); free(w->tmp); free(w);
}

st_status st_gguf_kv_u32(st_gguf_w *w, const char *key, uint32_t v) {
    st_status rc = put_key(w, key, ST_GGUF_U32);
    return rc ? rc : put_u32(w, v);
}
st_status st_gguf_kv_f32(st_gguf_w *w, const char *key, float v) {
    st_status rc = put_key(w, key, ST_GGUF_F32);
    return rc ? rc : put(w, &v, 4);
}
st_status st_gguf_kv_bool(st_gguf_w *w, const char *key, int v) {
    uint8_t b = v != 0;
    st_status rc = put_key(w, key, ST_GGUF_BOOL);
    return rc ? rc : put(w, &b, 1);
}
st_status st_gguf_kv_str(st_gguf_w *w, const char *key, const char *v) {
    st_status rc = put_key(w, key, ST_GGUF_STR);
    return rc ? rc : put_str(w, v);
}
st_status st_gguf_kv_i32s(st_gguf_w *w, const char *key, const int32_t *v, size_t n) {
    st_status rc = put_key(w, key, ST_GGUF_ARR);
    if (!rc) rc = put_u32(w, ST_GGUF_I32);
    if (!rc) rc = put_u64(w, n);
    return rc ? rc : put(w, v, 4 * n);
}
st_status st_gguf_kv_strs(st_gguf_w *w, const char *key, const char *const *v, size_t n) {
    st_status rc = put_key(w, key, ST_GGUF_ARR);
    if (!rc) rc = put_u32(w, ST_GGUF_STR);
    if (!rc) rc = put_u64(w, n);
    for (size_t i = 0; !rc && i < n; i++) rc = put_str(w, v[i]);
    return rc;
}

static uint64_t align_up(uint64_t x) { return (x + ST_GGUF_ALIGN - 1) / ST_GGUF_ALIGN * ST_GGUF_ALIGN; }

st_status st_gguf_tensor(st_gguf_w *w, const char *name, int type, int ndim, const int64_t *ne) {
    if (ndim < 1 || ndim > ST_GGUF_MAX_DIMS) return st_err(ST_ERR_ARG, "gguf: %s: %d dimensions", name, ndim);
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) numel *= ne[i];
    uint64_t bytes = st_ggml_nbytes(type, ne[0], numel);
    if (!bytes) return st_err(ST_ERR_ARG, "gguf: %s: %s cannot hold rows of %lld", name, st_ggml_type_name(type),
                              (long long)ne[0]);
    if (w->n_t == w->cap_t) {
        size_t nc = w->cap_t ? 2 * w->cap_t : 128;
        wtensor *q = st_realloc(w->t, sizeof *q * nc);
        if (!q) return st_err(ST_ERR_NOMEM, "out of memory");
        w->t = q; w->cap_t = nc;
    }
    wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    if (!(t->name = st_strdup(name))) return ST_ERR_NOMEM;
    t->type = type; t->ndim = ndim;
    memcpy(t->ne, ne, sizeof *ne * (size_t)ndim);
    t->off = w->data_bytes;
    t->bytes = bytes;
    w->data_bytes = align_up(w->data_bytes + bytes);
    w->n_t++;
    return ST_OK;
}

uint64_t st_gguf_w_data_bytes(const st_gguf_w *w) { return w->data_bytes; }

static st_status wr(st_gguf_w *w, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, w->fp) != n) {
        w->failed = 1;
        return st_err(ST_ERR_IO, "write %s: %s", w->tmp, strerror(errno));
    }
    return ST_OK;
}
static st_status wr_u64(st_gguf_w *w, uint64_t v) { return wr(w, &v, 8); }
static st_status wr_str(st_gguf_w *w, const char *s) {
    st_status rc = wr_u64(w, strlen(s));
    return rc ? rc : wr(w, s, strlen(s));
}
static st_status wr_pad(st_gguf_w *w) {
    static const uint8_t z[ST_GGUF_ALIGN];
    long pos = ftell(w->fp);
    if (pos < 0) return st_err(ST_ERR_IO, "ftell %s: %s", w->tmp, strerror(errno));
    return wr(w, z, align_up((uint64_t)pos) - (uint64_t)pos);
}

st_status st_gguf_w_begin(st_gguf_w *w, const char *path) {
    size_t n = strlen(path) + 32;
    w->path = st_strdup(path);
    w->tmp = st_malloc(n);
    if (!w->path || !w->tmp) return ST_ERR_NOMEM;
    snprintf(w->tmp, n, "%s.tmp.%ld", path, (long)getpid());
    w->fp = fopen(w->tmp, "wb");
    if (!w->fp) return st_err(ST_ERR_IO, "create %s: %s", w->tmp, strerror(errno));
    uint32_t hdr[2] = {0x46554747u /* "GGUF" */, 3};
    st_status rc = wr(w, hdr, 8);
    if (!rc) rc = wr_u64(w, w->n_t);
    if (!rc) rc = wr_u64(w, w->n_kv);
    if (!rc) rc = wr(w, w->kv, w->kv_len);
    for (size_t i = 0; !rc && i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        uint32_t nd = (uint32_t)t->ndim, ty = (uint32_t)t->type;
        rc = wr_str(w, t->name);
        if (!rc) rc = wr(w, &nd, 4);
        for (int d = 0; !rc && d < t->ndim; d++) rc = wr_u64(w, (uint64_t)t->ne[d]);
        if (!rc) rc = wr(w, &ty, 4);
        if (!rc) rc = wr_u64(w, t->off);
    }
    if (!rc) rc = wr_pad(w);
    return rc;
}

st_status st_gguf_w_write(st_gguf_w *w, const void *data, size_t n) {
    const uint8_t *p = data;
    while (n) {
        if (w->cur >= w->n_t) return st_err(ST_ERR_ARG, "gguf: more tensor data than declared");
        const wtensor *t = &w->t[w->cur];
        uint64_t k = t->bytes - w->cur_done;
        if (k > n) k = n;
        st_status rc = wr(w, p, k);
        if (rc) return rc;
        p += k; n -= k; w->cur_done += k;
        if (w->cur_done == t->bytes) {
            if ((rc = wr_pad(w))) return rc;
            w->cur++; w->cur_done = 0;
        }
    }
    return ST_OK;
}

st_status st_gguf_w_finish(st_gguf_w *w) {
    if (!w->fp || w->failed) return st_err(ST_ERR_IO, "gguf: writer not open");
    if (w->cur != w->n_t) return st_err(ST_ERR_ARG, "gguf: %zu of %zu tensors written", w->cur, w->n_t);
    int ok = fflush(w->fp) == 0 && fsync(fileno(w->fp)) == 0;
    ok &= fclose(w->fp) == 0;
    w->fp = NULL;
    if (!ok || rename(w->tmp, w->path) != 0) {
        int e = errno;
        unlink(w->tmp);
        return st_err(ST_ERR_IO, "write %s: %s", w->path, strerror(e));
    }
    return ST_OK;
}

/* ------------------------------------------------------------------ reader */

typedef struct { const uint8_t *p, *end; } cur_t;

static int rd(cur_t *c, void *out, size_t n) {
    if ((size_t)(c->end - c->p) < n) return -1;
    memcpy(out, c->p, n);
    c->p += n;
    return 0;
}
static int rd_str(cur_t *c, const uint8_t **s, uint64_t *n) {
    if (rd(c, n, 8) || *n > (uint64_t)(c->end - c->p)) return -1;
    *s = c->p;
    c->p += *n;
    return 0;
}
static size_t scalar_size(uint32_t t) {
    static const size_t sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < sizeof sz / sizeof *sz ? sz[t] : 0;
}
/* Skip one value of type t (no nested arrays: llama.cpp writes none). */
static int skip_val(cur_t *c, uint32_t t) {
    if (t == ST_GGUF_STR) { const uint8_t *s; uint64_t n; return rd_str(c, &s, &n); }
    size_t k = scalar_size(t);
    if (!k || (size_t)(c->end - c->p) < k) return -1;
    c->p += k;
    return 0;
}

void st_gguf_close(st_gguf *g) {
    if (!g) return;
    for (size_t i = 0; i < g->n_kv; i++) free(g->kv[i].key);
    for (size_t i = 0; i < g->n_t; i++) free(g->t[i].name);
    free(g->kv); free(g->t);
    if (g->map) munmap(g->map, g->size);
    free(g);
}

static char *dup_n(const uint8_t *s, uint64_t n) {
    char *d = st_malloc(n + 1);
    if (d) { memcpy(d, s, n); d[n] = 0; }
    return d;
}

st_status st_gguf_open(const char *path, st_gguf **out) {
    *out = NULL;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return st_err(ST_ERR_IO, "open %s: %s", path, strerror(errno));
    struct stat stt;
    if (fstat(fd, &stt) != 0 || stt.st_size < 24) {
        close(fd);
        return st_err(ST_ERR_FORMAT, "%s: not a GGUF file (too short)", path);
    }
    st_gguf *g = st_calloc(1, sizeof *g);
    if (!g) { close(fd); return ST_ERR_NOMEM; }
    g->size = (size_t)stt.st_size;
    g->map = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (g->map == MAP_FAILED) { g->map = NULL; st_gguf_close(g); return st_err(ST_ERR_IO, "mmap %s", path); }
    cur_t c = {g->map, (const uint8_t *)g->map + g->size};
    uint32_t magic;
    uint64_t nt, nkv;
    st_status rc = ST_OK;
#define BAD(...) do { rc = st_err(ST_ERR_FORMAT, __VA_ARGS__); goto fail; } while (0)
    if (rd(&c, &magic, 4) || magic != 0x46554747u) BAD("%s: not a GGUF file (bad magic)", path);
    if (rd(&c, &g->version, 4) || g->version < 2 || g->version > 3) BAD("%s: GGUF version %u not supported", path, g->version);
    if (rd(&c, &nt, 8) || rd(&c, &nkv, 8)) BAD("%s: truncated header", path);
    /* each entry takes at least 13 bytes: a bound that stops absurd counts before allocating */
    if (nt > g->size / 13 || nkv > g->size / 13) BAD("%s: %llu tensors / %llu keys do not fit the file", path,
                                                     (unsigned long long)nt, (unsigned long long)nkv);
    g->kv = st_calloc(nkv ? nkv : 1, sizeof *g->kv);
    g->t = st_calloc(nt ? nt : 1, sizeof *g->t);
    if (!g->kv || !g->t) { rc = ST_ERR_NOMEM; goto fail; }
    uint64_t align = ST_GGUF_ALIGN;
    for (uint64_t i = 0; i < nkv; i++) {
        st_gguf_kv *kv = &g->kv[i];
        const uint8_t *s;
        uint64_t n;
        if (rd_str(&c, &s, &n) || rd(&c, &kv->type, 4)) BAD("%s: truncated key %llu", path, (unsigned long long)i);
        if (!(kv->key = dup_n(s, n))) { rc = ST_ERR_NOMEM; goto fail; }
        g->n_kv = i + 1;
        kv->n = 1;
        if (kv->type == ST_GGUF_ARR) {
            if (rd(&c, &kv->arr_type, 4) || rd(&c, &kv->n, 8)) BAD("%s: %s: truncated array", path, kv->key);
            if (kv->arr_type == ST_GGUF_ARR) BAD("%s: %s: nested arrays are not supported", path, kv->key);
            kv->val = c.p;
            for (uint64_t k = 0; k < kv->n; k++)
                if (skip_val(&c, kv->arr_type)) BAD("%s: %s: bad array element %llu", path, kv->key, (unsigned long long)k);
        } else {
            kv->val = c.p;
            if (skip_val(&c, kv->type)) BAD("%s: %s: bad value (type %u)", path, kv->key, kv->type);
        }
        if (!strcmp(kv->key, "general.alignment") && kv->type == ST_GGUF_U32) {
            uint32_t a;
            memcpy(&a, kv->val, 4);
            if (!a || (a & (a - 1))) BAD("%s: general.alignment %u is not a power of two", path, a);
            align = a;
        }
    }
    for (uint64_t i = 0; i < nt; i++) {
        st_gguf_tensor_info *t = &g->t[i];
        const uint8_t *s;
        uint64_t n;
        uint32_t nd, ty;
        if (rd_str(&c, &s, &n) || rd(&c, &nd, 4)) BAD("%s: truncated tensor info %llu", path, (unsigned long long)i);
        if (!(t->name = dup_n(s, n))) { rc = ST_ERR_NOMEM; goto fail; }
        g->n_t = i + 1;
        if (nd < 1 || nd > ST_GGUF_MAX_DIMS) BAD("%s: %s: %u dimensions", path, t->name, nd);
        t->ndim = (int)nd;
        int64_t numel = 1;
        for (uint32_t d = 0; d < nd; d++) {
            uint64_t e;
            if (rd(&c, &e, 8) || e > (1ull << 40) || (e && (uint64_t)numel > (1ull << 50) / e))
                BAD("%s: %s: bad shape", path, t->name);
            t->ne[d] = (int64_t)e;
            numel *= (int64_t)e;
        }
        if (rd(&c, &ty, 4) || rd(&c, &t->offset, 8)) BAD("%s: %s: truncated tensor info", path, t->name);
        t->type = (int)ty;
        t->bytes = st_ggml_nbytes(t->type, t->ne[0], numel);
        if (numel && !t->bytes) BAD("%s: %s: tensor type %u not supported", path, t->name, ty);
    }
    uint64_t data_start = ((uint64_t)(c.p - (const uint8_t *)g->map) + align - 1) / align * align;
    for (size_t i = 0; i < g->n_t; i++) {
        st_gguf_tensor_info *t = &g->t[i];
        /* each comparison without a sum that could wrap (a lying offset near
         * 2^64 made data_start + offset small again; found by fuzz_gguf) */
        if (t->offset % align || data_start > g->size || t->offset > g->size - data_start ||
            t->bytes > g->size - data_start - t->offset)
            BAD("%s: %s: data outside the file", path, t->name);
        t->data = (const uint8_t *)g->map + data_start + t->offset;
    }
#undef BAD
    *out = g;
    return ST_OK;
fail:
    st_gguf_close(g);
    return rc;
}

const st_gguf_kv *st_gguf_find(const st_gguf *g, const char *key) {
    for (size_t i = 0; i < g->n_kv; i++)
        if (!strcmp(g->kv[i].key, key)) return &g->kv[i];
    return NULL;
}

const st_gguf_tensor_info *st_gguf_find_tensor(const st_gguf *g, const char *name) {
    for (size_t i = 0; i < g->n_t; i++)
        if (!strcmp(g->t[i].name, name)) return &g->t[i];
    return NULL;
}

static int64_t int_at(uint32_t type, const uint8_t *p) {
    switch (type) {
    case ST_GGUF_U8: case ST_GGUF_BOOL: return p[0];
    case ST_GGUF_I8: return (int8_t)p[0];
    case ST_GGUF_U16: { uint16_t v; memcpy(&v, p, 2); return v; }
    case ST_GGUF_I16: { int16_t v; memcpy(&v, p, 2); return v; }
    case ST_GGUF_U32: { uint32_t v; memcpy(&v, p, 4); return v; }
    case ST_GGUF_I32: { int32_t v; memcpy(&v, p, 4); return v; }
    case ST_GGUF_U64: case ST_GGUF_I64: { int64_t v; memcpy(&v, p, 8); return v; }
    default: return 0;
    }
}
static int is_int(uint32_t t) { return t <= ST_GGUF_I32 || t == ST_GGUF_BOOL || t == ST_GGUF_U64 || t == ST_GGUF_I64; }

int64_t st_gguf_int(const st_gguf *g, const char *key, int64_t def) {
    const st_gguf_kv *kv = st_gguf_find(g, key);
    return kv && is_int(kv->type) ? int_at(kv->type, kv->val) : def;
}

char *st_gguf_str(const st_gguf *g, const char *key) {
    const st_gguf_kv *kv = st_gguf_find(g, key);
    if (!kv || kv->type != ST_GGUF_STR) return NULL;
    uint64_t n;
    memcpy(&n, kv->val, 8);
    return dup_n(kv->val + 8, n);
}

char *st_gguf_arr_str(const st_gguf_kv *kv, uint64_t i) {
    if (kv->type != ST_GGUF_ARR || kv->arr_type != ST_GGUF_STR || i >= kv->n) return NULL;
    const uint8_t *p = kv->val; /* validated at open */
    uint64_t n;
    for (uint64_t k = 0;; k++) {
        memcpy(&n, p, 8);
        if (k == i) return dup_n(p + 8, n);
        p += 8 + n;
    }
}

int64_t st_gguf_arr_int(const st_gguf_kv *kv, uint64_t i) {
    if (kv->type != ST_GGUF_ARR || !is_int(kv->arr_type) || i >= kv->n) return 0;
    return int_at(kv->arr_type, kv->val + i * scalar_size(kv->arr_type));
}

st_status st_gguf_tensor_f32(const st_gguf_tensor_info *t, float **out) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->ne[d];
    float *f = st_malloc(sizeof *f * (size_t)(n ? n : 1));
    if (!f) return ST_ERR_NOMEM;
    switch (t->type) {
    case ST_GGML_F32: memcpy(f, t->data, 4 * (size_t)n); break;
    case ST_GGML_F16: st_convert_to_f32(ST_DT_F16, t->data, f, n, 1); break;
    case ST_GGML_BF16: st_convert_to_f32(ST_DT_BF16, t->data, f, n, 1); break;
    case ST_GGML_Q8_0:
        for (int64_t b = 0; b < n / 32; b++) {
            const uint8_t *blk = t->data + b * 34;
            uint16_t h;
            memcpy(&h, blk, 2);
            float d = st_f16_to_f32(h);
            for (int k = 0; k < 32; k++) f[b * 32 + k] = d * (int8_t)blk[2 + k];
        }
        break;
    default: free(f); return st_err(ST_ERR_UNSUPPORTED, "gguf: %s: type %d", t->name, t->type);
    }
    *out = f;
    return ST_OK;
}

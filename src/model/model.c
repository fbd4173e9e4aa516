/*
 * model.c — load a Hugging Face Nemotron-H checkpoint directory and bind its
 * tensors to layers. Large matrices stay in the mmap'd files (st_mat points
 * into them); only small vectors (norms, conv, A, D, biases) are converted to
 * fp32 copies. Every tensor the config implies is looked up by name and its
 * shape checked; a missing or mis-shaped tensor is reported by name.
 */
#include "model/model.h"
#include "util/util.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* ------------------------------------------------------- tensor name index */

static uint64_t hash_str(const char *s) { return st_fnv1a64(ST_FNV1A64_BASIS, s, strlen(s)); }

static st_status index_build(name_index *ix, st_sf_file **files, int n_files) {
    size_t n = 0;
    for (int i = 0; i < n_files; i++) n += (size_t)files[i]->n_tensors;
    ix->cap = 16;
    while (ix->cap < 2 * n + 16) ix->cap *= 2;
    ix->slot = st_calloc(ix->cap, sizeof *ix->slot);
    if (!ix->slot) return ST_ERR_NOMEM;
    for (int i = 0; i < n_files; i++) {
        for (int j = 0; j < files[i]->n_tensors; j++) {
            st_sf_tensor *t = &files[i]->tensors[j];
            t->file_index = i;
            size_t h = hash_str(t->name) & (ix->cap - 1);
            while (ix->slot[h]) {
                if (!strcmp(ix->slot[h]->name, t->name))
                    return st_err(ST_ERR_FORMAT, "tensor '%s' appears in both %s and %s", t->name,
                                  files[ix->slot[h]->file_index]->path, files[i]->path);
                h = (h + 1) & (ix->cap - 1);
            }
            ix->slot[h] = t;
        }
    }
    return ST_OK;
}

static const st_sf_tensor *index_get(const name_index *ix, const char *name) {
    size_t h = hash_str(name) & (ix->cap - 1);
    while (ix->slot[h]) {
        if (!strcmp(ix->slot[h]->name, name)) return ix->slot[h];
        h = (h + 1) & (ix->cap - 1);
    }
    return NULL;
}

/* --------------------------------------------------------------- binding */

typedef struct {
    st_model *m;
    name_index ix;
    const char *dir;
} binder;

const st_sf_tensor *st_model_tensor(const st_model *m, const char *name) { return index_get(&m->ix, name); }

static const char *shape_str(char *buf, size_t n, int nd, const int64_t *s) {
    size_t at = 0;
    at += (size_t)snprintf(buf + at, n - at, "[");
    for (int i = 0; i < nd && at < n; i++) at += (size_t)snprintf(buf + at, n - at, "%s%lld", i ? ", " : "", (long long)s[i]);
    if (at < n) snprintf(buf + at, n - at, "]");
    return buf;
}

static int is_float_dt(st_dtype dt) { return dt == ST_DT_F32 || dt == ST_DT_F16 || dt == ST_DT_BF16; }

/* Find `name` and check its shape equals want[0..nd). Accepts trailing or
 * interior singleton dims beyond nd when `loose` (e.g. conv [C,1,K]). */
static st_status need(binder *b, const char *name, int nd, const int64_t *want, const st_sf_tensor **out) {
    const st_sf_tensor *t = index_get(&b->ix, name);
    if (!t) return st_err(ST_ERR_MISSING, "%s: missing tensor '%s'", b->dir, name);
    /* compare ignoring size-1 dimensions, so [C,1,K] matches [C,K] and [n] matches [n,1] */
    int64_t a[ST_SF_MAX_DIMS], w[ST_SF_MAX_DIMS];
    int na = 0, nw = 0;
    for (int i = 0; i < t->ndim; i++) if (t->shape[i] != 1) a[na++] = t->shape[i];
    for (int i = 0; i < nd; i++) if (want[i] != 1) w[nw++] = want[i];
    int ok = na == nw;
    for (int i = 0; ok && i < na; i++) ok = a[i] == w[i];
    if (!ok) {
        char s1[128], s2[128];
        return st_err(ST_ERR_SHAPE, "%s: tensor '%s' has shape %s, the config implies %s", b->dir, name,
                      shape_str(s1, sizeof s1, t->ndim, t->shape), shape_str(s2, sizeof s2, nd, want));
    }
    if (!is_float_dt(t->dt))
        return st_err(ST_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s (F32, F16 and BF16 are supported)", b->dir,
                      name, st_dtype_name(t->dt));
    *out = t;
    return ST_OK;
}

/* A scalar F32 tensor ([] or [1]) such as weight_scale / weight_scale_2. */
static st_status scalar_f32(binder *b, const char *name, float *out) {
    const st_sf_tensor *t = index_get(&b->ix, name);
    if (!t) return st_err(ST_ERR_MISSING, "%s: missing tensor '%s'", b->dir, name);
    if (st_sf_numel(t) != 1 || !is_float_dt(t->dt))
        return st_err(ST_ERR_UNSUPPORTED, "%s: tensor '%s' must be one float (per-channel scales are not supported)",
                      b->dir, name);
    st_convert_to_f32(t->dt, t->data, out, 1, 1.0f);
    if (!(*out > 0) || !isfinite(*out)) return st_err(ST_ERR_FORMAT, "%s: tensor '%s' = %g is not a positive scale", b->dir, name, (double)*out);
    return ST_OK;
}

/*
 * Bind weight `name` ("X.weight") of logical shape [rows][cols]. Stored as
 * BF16/F16/F32, or as ModelOpt FP8 (F8_E4M3 + scalar X.weight_scale) or NVFP4
 * (U8 [rows][cols/2] + F8_E4M3 X.weight_scale [rows][cols/16] + X.weight_scale_2),
 * recognised the way llama.cpp's converter does: a 2-D weight_scale means NVFP4.
 */
static st_status bind_mat(binder *b, st_mat *mat, const char *name, int64_t rows, int64_t cols) {
    const st_sf_tensor *t = index_get(&b->ix, name);
    if (!t) return st_err(ST_ERR_MISSING, "%s: missing tensor '%s'", b->dir, name);
    char base[256], sn[300];
    size_t nl = strlen(name);
    snprintf(base, sizeof base, "%.*s", (int)(nl > 7 && !strcmp(name + nl - 7, ".weight") ? nl - 7 : nl), name);
    snprintf(sn, sizeof sn, "%s.weight_scale", base);
    const st_sf_tensor *ws = index_get(&b->ix, sn);
    memset(mat, 0, sizeof *mat);
    mat->rows = rows; mat->cols = cols; mat->scale = 1.0f;
    char s1[128];
    if (t->dt == ST_DT_F8_E4M3) {
        if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols)
            return st_err(ST_ERR_SHAPE, "%s: FP8 tensor '%s' has shape %s, the config implies [%lld, %lld]", b->dir, name,
                          shape_str(s1, sizeof s1, t->ndim, t->shape), (long long)rows, (long long)cols);
        if (!ws) return st_err(ST_ERR_MISSING, "%s: FP8 weight '%s' has no '%s'", b->dir, name, sn);
        st_status rc = scalar_f32(b, sn, &mat->scale);
        if (rc) return rc;
        mat->dt = ST_DT_F8_E4M3; mat->data = t->data;
        return ST_OK;
    }
    if (t->dt == ST_DT_U8 && ws && ws->ndim == 2) {
        if (cols % 16 || t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols / 2)
            return st_err(ST_ERR_SHAPE, "%s: NVFP4 tensor '%s' has shape %s, the config implies [%lld, %lld/2] with %lld %% 16 == 0",
                          b->dir, name, shape_str(s1, sizeof s1, t->ndim, t->shape), (long long)rows, (long long)cols,
                          (long long)cols);
        if (ws->dt != ST_DT_F8_E4M3 || ws->shape[0] != rows || ws->shape[1] != cols / 16)
            return st_err(ST_ERR_SHAPE, "%s: NVFP4 block scales '%s' must be F8_E4M3 [%lld, %lld]", b->dir, sn,
                          (long long)rows, (long long)(cols / 16));
        snprintf(sn, sizeof sn, "%s.weight_scale_2", base);
        st_status rc = scalar_f32(b, sn, &mat->scale);
        if (rc) return rc;
        mat->dt = ST_DT_NVFP4; mat->data = t->data; mat->bscale = ws->data;
        return ST_OK;
    }
    int64_t s[2] = {rows, cols};
    st_status rc = need(b, name, 2, s, &t);
    if (rc) return rc;
    if (t->ndim != 2)
        return st_err(ST_ERR_SHAPE, "%s: tensor '%s' has shape %s, expected a matrix [%lld, %lld]", b->dir, name,
                      shape_str(s1, sizeof s1, t->ndim, t->shape), (long long)rows, (long long)cols);
    mat->dt = t->dt; mat->data = t->data;
    return ST_OK;
}

static float *arena_take(st_model *m, size_t n) {
    if (m->arena_used + n > m->arena_cap) return NULL;
    float *p = m->arena + m->arena_used;
    m->arena_used += (n + 15) & ~(size_t)15;
    return p;
}

/* Copy a small float tensor as fp32 into the arena. */
static st_status bind_vec(binder *b, float **out, const char *name, int nd, const int64_t *shape) {
    const st_sf_tensor *t;
    st_status rc = need(b, name, nd, shape, &t);
    if (rc) return rc;
    int64_t n = st_sf_numel(t);
    float *p = arena_take(b->m, (size_t)n);
    if (!p) return st_err(ST_ERR_NOMEM, "model arena exhausted binding '%s'", name);
    st_convert_to_f32(t->dt, t->data, p, n, 1.0f);
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(p[i])) return st_err(ST_ERR_FORMAT, "%s: tensor '%s' holds a non-finite value at %lld", b->dir, name, (long long)i);
    *out = p;
    return ST_OK;
}

static st_status bind_vec1(binder *b, float **out, const char *name, int64_t n) {
    return bind_vec(b, out, name, 1, &n);
}

/* Bytes of fp32 arena the small vectors need. */
static size_t arena_need(const st_config *c) {
    size_t H = (size_t)c->hidden_size, din = (size_t)c->mamba_num_heads * (size_t)c->mamba_head_dim;
    size_t conv = din + 2 * (size_t)c->n_groups * (size_t)c->ssm_state_size, total = H + 16;
    for (int l = 0; l < c->n_layers; l++) {
        total += H + 16;
        if (c->pattern[l] == 'M') total += conv * ((size_t)c->conv_kernel + 1) + 3 * (size_t)c->mamba_num_heads + din + 6 * 16;
        if (c->pattern[l] == 'E') total += (size_t)c->n_routed_experts + 16;
    }
    return total;
}

static st_status bind_layer(binder *b, int l) {
    st_model *m = b->m;
    const st_config *c = &m->cfg;
    st_layer *L = &m->layers[l];
    char nm[256];
    const int64_t H = c->hidden_size;
#define NAME(...) (snprintf(nm, sizeof nm, __VA_ARGS__), nm)
#define T(x) do { st_status rc_ = (x); if (rc_) return rc_; } while (0)
    L->type = c->pattern[l];
    T(bind_vec1(b, &L->norm, NAME("backbone.layers.%d.norm.weight", l), H));
    switch (L->type) {
    case 'M': {
        int64_t nh = c->mamba_num_heads, P = c->mamba_head_dim, G = c->n_groups, N = c->ssm_state_size;
        int64_t din = nh * P, conv = din + 2 * G * N, K = c->conv_kernel;
        T(bind_mat(b, &L->in_proj, NAME("backbone.layers.%d.mixer.in_proj.weight", l), 2 * din + 2 * G * N + nh, H));
        T(bind_mat(b, &L->out_proj, NAME("backbone.layers.%d.mixer.out_proj.weight", l), H, din));
        int64_t cs[3] = {conv, 1, K};
        T(bind_vec(b, &L->conv_w, NAME("backbone.layers.%d.mixer.conv1d.weight", l), 3, cs));
        if (c->use_conv_bias) {
            T(bind_vec1(b, &L->conv_b, NAME("backbone.layers.%d.mixer.conv1d.bias", l), conv));
        } else {
            L->conv_b = arena_take(m, (size_t)conv);
            if (!L->conv_b) return st_err(ST_ERR_NOMEM, "model arena exhausted");
            memset(L->conv_b, 0, (size_t)conv * sizeof(float));
        }
        T(bind_vec1(b, &L->dt_bias, NAME("backbone.layers.%d.mixer.dt_bias", l), nh));
        T(bind_vec1(b, &L->A, NAME("backbone.layers.%d.mixer.A_log", l), nh));
        for (int64_t h = 0; h < nh; h++) L->A[h] = -expf(L->A[h]);
        T(bind_vec1(b, &L->D, NAME("backbone.layers.%d.mixer.D", l), nh));
        T(bind_vec1(b, &L->gnorm, NAME("backbone.layers.%d.mixer.norm.weight", l), din));
        L->state_idx = m->n_mamba++;
        break;
    }
    case '*': {
        int64_t q = (int64_t)c->num_attention_heads * c->head_dim, kv = (int64_t)c->num_key_value_heads * c->head_dim;
        T(bind_mat(b, &L->wq, NAME("backbone.layers.%d.mixer.q_proj.weight", l), q, H));
        T(bind_mat(b, &L->wk, NAME("backbone.layers.%d.mixer.k_proj.weight", l), kv, H));
        T(bind_mat(b, &L->wv, NAME("backbone.layers.%d.mixer.v_proj.weight", l), kv, H));
        T(bind_mat(b, &L->wo, NAME("backbone.layers.%d.mixer.o_proj.weight", l), H, q));
        if (index_get(&b->ix, NAME("backbone.layers.%d.mixer.q_proj.bias", l)))
            return st_err(ST_ERR_UNSUPPORTED, "%s: attention biases (%s) are not supported", b->dir, nm);
        L->state_idx = m->n_attn++;
        break;
    }
    case '-': {
        int64_t I = c->intermediate_size;
        T(bind_mat(b, &L->up, NAME("backbone.layers.%d.mixer.up_proj.weight", l), I, H));
        T(bind_mat(b, &L->down, NAME("backbone.layers.%d.mixer.down_proj.weight", l), H, I));
        break;
    }
    case 'E': {
        int64_t E = c->n_routed_experts, F = c->moe_intermediate_size;
        T(bind_mat(b, &L->gate, NAME("backbone.layers.%d.mixer.gate.weight", l), E, H));
        T(bind_vec1(b, &L->e_bias, NAME("backbone.layers.%d.mixer.gate.e_score_correction_bias", l), E));
        L->exp_up = st_calloc((size_t)E, sizeof(st_mat));
        L->exp_down = st_calloc((size_t)E, sizeof(st_mat));
        if (!L->exp_up || !L->exp_down) return ST_ERR_NOMEM;
        /* per-expert 2-D tensors (published files) or fused 3-D [E, out, in] */
        const st_sf_tensor *fu = index_get(&b->ix, NAME("backbone.layers.%d.mixer.experts.up_proj", l));
        if (!fu) fu = index_get(&b->ix, NAME("backbone.layers.%d.mixer.experts.up_proj.weight", l));
        if (fu) {
            const st_sf_tensor *fd = index_get(&b->ix, NAME("backbone.layers.%d.mixer.experts.down_proj", l));
            if (!fd) fd = index_get(&b->ix, NAME("backbone.layers.%d.mixer.experts.down_proj.weight", l));
            if (!fd) return st_err(ST_ERR_MISSING, "%s: fused experts.up_proj in layer %d without experts.down_proj", b->dir, l);
            int64_t su[3] = {E, F, H}, sd[3] = {E, H, F};
            if (fu->ndim != 3 || fd->ndim != 3 || memcmp(fu->shape, su, sizeof su) || memcmp(fd->shape, sd, sizeof sd) ||
                !is_float_dt(fu->dt) || !is_float_dt(fd->dt))
                return st_err(ST_ERR_SHAPE, "%s: fused experts of layer %d must be float [%lld,%lld,%lld] and [%lld,%lld,%lld]",
                              b->dir, l, (long long)E, (long long)F, (long long)H, (long long)E, (long long)H, (long long)F);
            size_t es = st_dtype_size(fu->dt);
            for (int64_t e = 0; e < E; e++) {
                L->exp_up[e] = (st_mat){.dt = fu->dt, .data = fu->data + (size_t)(e * F * H) * es, .rows = F, .cols = H, .scale = 1.0f};
                L->exp_down[e] = (st_mat){.dt = fd->dt, .data = fd->data + (size_t)(e * H * F) * st_dtype_size(fd->dt), .rows = H, .cols = F, .scale = 1.0f};
            }
        } else {
            for (int64_t e = 0; e < E; e++) {
                T(bind_mat(b, &L->exp_up[e], NAME("backbone.layers.%d.mixer.experts.%lld.up_proj.weight", l, (long long)e), F, H));
                T(bind_mat(b, &L->exp_down[e], NAME("backbone.layers.%d.mixer.experts.%lld.down_proj.weight", l, (long long)e), H, F));
            }
        }
        if (c->n_shared_experts > 0) {
            int64_t Fs = c->moe_shared_expert_intermediate_size;
            T(bind_mat(b, &L->sh_up, NAME("backbone.layers.%d.mixer.shared_experts.up_proj.weight", l), Fs, H));
            T(bind_mat(b, &L->sh_down, NAME("backbone.layers.%d.mixer.shared_experts.down_proj.weight", l), H, Fs));
        }
        break;
    }
    }
#undef NAME
#undef T
    return ST_OK;
}

/* ------------------------------------------------------------- file loading */

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = st_malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* path NULL: its path_join ran out of memory */
static json_t *load_json(const char *path, st_status *rc, int required) {
    json_error_t je;
    if (!path) { *rc = ST_ERR_NOMEM; return NULL; }
    FILE *f = fopen(path, "rb");
    if (!f) {
        *rc = required ? st_err(ST_ERR_MISSING, "%s: %s", path, strerror(errno)) : ST_OK;
        return NULL;
    }
    json_t *j = json_loadf(f, JSON_REJECT_DUPLICATES, &je);
    fclose(f);
    if (!j && json_error_code(&je) == json_error_out_of_memory) *rc = st_err(ST_ERR_NOMEM, "%s: out of memory", path);
    else if (!j) *rc = st_err(ST_ERR_FORMAT, "%s: invalid JSON: %s (line %d, column %d)", path, je.text, je.line, je.column);
    else *rc = ST_OK;
    return j;
}

/* Open the shards listed by model.safetensors.index.json, or model.safetensors. */
static st_status open_shards(st_model *m) {
    st_status rc = ST_OK;
    char *ip = path_join(m->dir, "model.safetensors.index.json");
    json_t *idx = load_json(ip, &rc, 0);
    if (rc) { free(ip); return rc; }
    if (!idx) {
        free(ip);
        char *sp = path_join(m->dir, "model.safetensors");
        m->files = st_calloc(1, sizeof *m->files);
        if (!sp || !m->files) { free(sp); return ST_ERR_NOMEM; }
        rc = st_sf_open(sp, &m->files[0]);
        if (rc == ST_ERR_MISSING)
            rc = st_err(ST_ERR_MISSING, "%s: neither model.safetensors nor model.safetensors.index.json exists", m->dir);
        free(sp);
        if (!rc) m->n_files = 1;
        return rc;
    }
    json_t *wm = json_object_get(idx, "weight_map");
    if (!json_is_object(wm)) {
        rc = st_err(ST_ERR_FORMAT, "%s: no weight_map object", ip);
        json_decref(idx); free(ip);
        return rc;
    }
    /* distinct shard names, in first-seen order */
    size_t nt = json_object_size(wm);
    const char **names = st_calloc(nt ? nt : 1, sizeof *names);
    if (!names) { json_decref(idx); free(ip); return ST_ERR_NOMEM; }
    int nn = 0;
    const char *k; json_t *v;
    json_object_foreach(wm, k, v) {
        const char *f = json_string_value(v);
        if (!f || strchr(f, '/') || !strcmp(f, "..") || !*f) {
            rc = st_err(ST_ERR_FORMAT, "%s: weight_map[\"%s\"] is not a plain file name", ip, k);
            break;
        }
        int seen = 0;
        for (int i = 0; i < nn && !seen; i++) seen = !strcmp(names[i], f);
        if (!seen) names[nn++] = f;
    }
    if (!rc) {
        m->files = st_calloc((size_t)(nn ? nn : 1), sizeof *m->files);
        if (!m->files) rc = ST_ERR_NOMEM;
    }
    for (int i = 0; !rc && i < nn; i++) {
        char *sp = path_join(m->dir, names[i]);
        rc = sp ? st_sf_open(sp, &m->files[i]) : ST_ERR_NOMEM;
        free(sp);
        if (!rc) m->n_files++;
    }
    /* every tensor the index names must be in the shard it names */
    if (!rc) {
        json_object_foreach(wm, k, v) {
            const char *f = json_string_value(v);
            int found = 0;
            for (int i = 0; i < m->n_files && !found; i++) {
                const char *base = strrchr(m->files[i]->path, '/');
                if (strcmp(base ? base + 1 : m->files[i]->path, f)) continue;
                for (int j = 0; j < m->files[i]->n_tensors && !found; j++) found = !strcmp(m->files[i]->tensors[j].name, k);
            }
            if (!found) { rc = st_err(ST_ERR_MISSING, "%s: tensor '%s' is not in %s as the index says", ip, k, f); break; }
        }
    }
    free(names);
    json_decref(idx);
    free(ip);
    return rc;
}

st_status st_model_load(const char *dir, st_model **out) {
    *out = NULL;
    st_err_clear();
    st_model *m = st_calloc(1, sizeof *m);
    if (!m) return ST_ERR_NOMEM;
    m->dir = st_strdup(dir);
    st_status rc = m->dir ? ST_OK : ST_ERR_NOMEM;
    binder b = {0};
    char *cp = path_join(dir, "config.json");
    json_t *cj = rc ? NULL : load_json(cp, &rc, 1);
    if (rc) goto fail;
    rc = st_config_parse(cj, cp, &m->cfg);
    if (rc) goto fail;
    rc = st_elastic_parse(m, cj, cp);
    if (rc) goto fail;
    /* generation_config.json adds stop ids (e.g. <|im_end|>) */
    {
        char *gp = path_join(dir, "generation_config.json");
        json_t *gj = load_json(gp, &rc, 0);
        free(gp);
        if (rc) goto fail;
        if (gj) {
            st_config_add_eos(&m->cfg, json_object_get(gj, "eos_token_id"));
            json_decref(gj);
        }
    }
    rc = open_shards(m);
    if (rc) goto fail;
    b.m = m; b.dir = dir;
    rc = index_build(&b.ix, m->files, m->n_files);
    if (rc) goto fail;
    const st_config *c = &m->cfg;
    /* check vocab × hidden against the embedding before sizing anything by them */
    rc = bind_mat(&b, &m->embed, "backbone.embeddings.weight", c->vocab_size, c->hidden_size);
    if (rc) goto fail;
    if (c->tie_word_embeddings) {
        m->lm_head = m->embed;
    } else {
        rc = bind_mat(&b, &m->lm_head, "lm_head.weight", c->vocab_size, c->hidden_size);
        if (rc) goto fail;
    }
    m->arena_cap = arena_need(&m->cfg);
    m->arena = st_aligned_alloc(m->arena_cap * sizeof(float));
    m->layers = st_calloc((size_t)m->cfg.n_layers, sizeof *m->layers);
    if (!m->arena || !m->layers) { rc = ST_ERR_NOMEM; goto fail; }
    rc = bind_vec1(&b, &m->norm_f, "backbone.norm_f.weight", c->hidden_size);
    if (rc) goto fail;
    for (int l = 0; l < c->n_layers; l++) {
        rc = bind_layer(&b, l);
        if (rc) goto fail;
    }
    m->ix = b.ix;
    json_decref(cj);
    free(cp);
    *out = m;
    return ST_OK;
fail:
    free(b.ix.slot);
    json_decref(cj);
    free(cp);
    st_model_free(m);
    return rc;
}

void st_model_free(st_model *m) {
    if (!m) return;
    if (m->layers) {
        for (int l = 0; l < m->cfg.n_layers; l++) { free(m->layers[l].exp_up); free(m->layers[l].exp_down); }
        free(m->layers);
    }
    for (int i = 0; i < m->n_files; i++) st_sf_close(m->files[i]);
    free(m->files);
    for (int i = 0; i < m->n_budgets; i++) free(m->budgets[i].name);
    free(m->budgets);
    free(m->default_budget);
    free(m->arena);
    free(m->ix.slot);
    free(m->dir);
    free(m);
}

const st_config *st_model_config(const st_model *m) { return &m->cfg; }
const char *st_model_dir(const st_model *m) { return m->dir; }
int st_model_n_budgets(const st_model *m) { return m->n_budgets; }
const char *st_model_budget_name(const st_model *m, int i) {
    return i >= 0 && i < m->n_budgets ? m->budgets[i].name : NULL;
}
const char *st_model_default_budget(const st_model *m) { return m->default_budget; }

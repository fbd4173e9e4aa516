/*
 * model.c — load a Hugging Face Nemotron-H checkpoint directory and bind its
 * tensors to layers. Large matrices stay in the mmap'd files (st_mat points
 * into them); only small vectors (norms, conv, A, D, biases) are converted to
 * fp32 copies. Every tensor the config implies is looked up by name and its
 * shape checked; a missing or mis-shaped tensor is reported by name.
 */
#include "model/model.h"
#include "model/schema.h"
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

/* Where spec id binds in the model (layer L, expert e): a matrix, or NULL. */
static st_mat *mat_slot(st_model *m, st_layer *L, st_tid id, int e) {
    switch (id) {
    case ST_T_EMBED: return &m->embed;
    case ST_T_LM_HEAD: return &m->lm_head;
    case ST_T_IN_PROJ: return &L->in_proj;
    case ST_T_OUT_PROJ: return &L->out_proj;
    case ST_T_Q: return &L->wq;
    case ST_T_K: return &L->wk;
    case ST_T_V: return &L->wv;
    case ST_T_O: return &L->wo;
    case ST_T_UP: return &L->up;
    case ST_T_DOWN: return &L->down;
    case ST_T_GATE: return &L->gate;
    case ST_T_EXP_UP: return L->exp_up ? &L->exp_up[e] : NULL;
    case ST_T_EXP_DOWN: return L->exp_down ? &L->exp_down[e] : NULL;
    case ST_T_SH_UP: return &L->sh_up;
    case ST_T_SH_DOWN: return &L->sh_down;
    default: return NULL;
    }
}

/* ... or an fp32 vector copied into the arena (NULL: not a vector). */
static float **vec_slot(st_model *m, st_layer *L, st_tid id) {
    switch (id) {
    case ST_T_NORM_F: return &m->norm_f;
    case ST_T_NORM: return &L->norm;
    case ST_T_CONV_W: return &L->conv_w;
    case ST_T_CONV_B: return &L->conv_b;
    case ST_T_DT_BIAS: return &L->dt_bias;
    case ST_T_A_LOG: return &L->A;
    case ST_T_D: return &L->D;
    case ST_T_GNORM: return &L->gnorm;
    case ST_T_E_BIAS: return &L->e_bias;
    default: return NULL;
    }
}

const st_mat *st_model_mat(const st_model *m, const st_tspec *s, int layer, int expert) {
    if (!(s->flags & ST_TS_MAT) || layer >= m->cfg.n_layers) return NULL;
    if ((s->flags & ST_TS_EXPERTS) && (expert < 0 || expert >= m->cfg.n_routed_experts)) return NULL;
    st_layer *L = layer >= 0 ? &m->layers[layer] : NULL;
    if (!L && s->id != ST_T_EMBED && s->id != ST_T_LM_HEAD) return NULL;
    const st_mat *w = mat_slot((st_model *)m, L, s->id, expert);
    return w && w->data ? w : NULL;
}

static const st_sf_tensor *fused_in(const name_index *ix, const st_tspec *s, int l, char *name, size_t n) {
    const st_sf_tensor *t = NULL;
    if (!(s->flags & ST_TS_EXPERTS)) return NULL;
    for (int w = 0; w < 2 && !t; w++) t = index_get(ix, st_tspec_fused_name(s, l, w, name, n));
    return t;
}

const st_sf_tensor *st_model_fused(const st_model *m, const st_tspec *s, int layer, char *name, size_t n) {
    return fused_in(&m->ix, s, layer, name, n);
}

typedef struct {
    const st_config *c;
    size_t total;
} arena_count;

static st_status count_vec(void *ctx, const st_tspec *s, int l, int e) {
    arena_count *a = ctx;
    if (!(s->flags & ST_TS_MAT)) a->total += ((size_t)st_tspec_numel(s, a->c, NULL, 1) + 15) & ~(size_t)15;
    return ST_OK;
}

/* Floats of arena the small vectors need (binding rounds each to 16). */
static size_t arena_need(const st_config *c) {
    arena_count a = {c, 0};
    st_schema_foreach(c, ST_SCHEMA_STACKED, count_vec, &a);
    if (!c->use_conv_bias) /* zeros stand in for the conv bias */
        for (int l = 0; l < c->n_layers; l++)
            if (c->pattern[l] == 'M') a.total += ((size_t)st_dim_size(c, NULL, ST_DIM_MAMBA_CONV) + 15) & ~(size_t)15;
    return a.total;
}

/* The routed experts of spec s in layer l: one 2-D tensor per expert (the
 * published files), or one fused float [E][out][in] tensor viewed expert by
 * expert. The layer's first expert spec decides which form the layer has. */
static st_status bind_experts(binder *b, const st_tspec *s, int l) {
    st_model *m = b->m;
    st_layer *L = &m->layers[l];
    int64_t sh[3];
    st_tspec_shape(s, &m->cfg, NULL, 0, sh); /* [E][out][in] */
    int n;
    const st_tspec *first = st_schema_layer(L->type, &n);
    while (!(first->flags & ST_TS_EXPERTS)) first++;
    char nm[256], fn[256];
    const st_sf_tensor *f = fused_in(&b->ix, s, l, nm, sizeof nm);
    if (!f && s != first && fused_in(&b->ix, first, l, fn, sizeof fn))
        return st_err(ST_ERR_MISSING, "%s: fused '%s' without '%s'", b->dir, fn,
                      st_tspec_fused_name(s, l, 0, nm, sizeof nm));
    if (f) {
        if (f->ndim != 3 || memcmp(f->shape, sh, sizeof sh) || !is_float_dt(f->dt))
            return st_err(ST_ERR_SHAPE, "%s: fused experts '%s' must be float [%lld, %lld, %lld]", b->dir, nm,
                          (long long)sh[0], (long long)sh[1], (long long)sh[2]);
        size_t per = (size_t)(sh[1] * sh[2]) * st_dtype_size(f->dt);
        for (int64_t e = 0; e < sh[0]; e++)
            *mat_slot(m, L, s->id, (int)e) =
                (st_mat){.dt = f->dt, .data = f->data + (size_t)e * per, .rows = sh[1], .cols = sh[2], .scale = 1.0f};
        return ST_OK;
    }
    for (int64_t e = 0; e < sh[0]; e++) {
        st_status rc = bind_mat(b, mat_slot(m, L, s->id, (int)e), st_tspec_name(s, l, (int)e, nm, sizeof nm), sh[1], sh[2]);
        if (rc) return rc;
    }
    return ST_OK;
}

/* Bind one spec (stacked walk): by name, shape from the config. */
static st_status bind_one(void *ctx, const st_tspec *s, int l, int e) {
    binder *b = ctx;
    st_model *m = b->m;
    if (s->flags & ST_TS_EXPERTS) return bind_experts(b, s, l);
    st_layer *L = l >= 0 ? &m->layers[l] : NULL;
    char nm[256];
    int64_t sh[3];
    int nd = st_tspec_shape(s, &m->cfg, NULL, 1, sh);
    st_tspec_name(s, l, e, nm, sizeof nm);
    if (s->flags & ST_TS_MAT) return bind_mat(b, mat_slot(m, L, s->id, e), nm, sh[0], sh[1]);
    return bind_vec(b, vec_slot(m, L, s->id), nm, nd, sh);
}

static st_status bind_layer(binder *b, int l) {
    st_model *m = b->m;
    const st_config *c = &m->cfg;
    st_layer *L = &m->layers[l];
    char nm[256];
    L->type = c->pattern[l];
    if (L->type == 'E') {
        L->exp_up = st_calloc((size_t)c->n_routed_experts, sizeof(st_mat));
        L->exp_down = st_calloc((size_t)c->n_routed_experts, sizeof(st_mat));
        if (!L->exp_up || !L->exp_down) return ST_ERR_NOMEM;
    }
    st_status rc = st_schema_foreach_layer(c, l, ST_SCHEMA_STACKED, bind_one, b);
    if (rc) return rc;
    switch (L->type) {
    case 'M': {
        int64_t conv = st_dim_size(c, NULL, ST_DIM_MAMBA_CONV);
        if (!c->use_conv_bias) {
            L->conv_b = arena_take(m, (size_t)conv);
            if (!L->conv_b) return st_err(ST_ERR_NOMEM, "model arena exhausted");
            memset(L->conv_b, 0, (size_t)conv * sizeof(float));
        }
        for (int64_t h = 0; h < c->mamba_num_heads; h++) L->A[h] = -expf(L->A[h]);
        L->state_idx = m->n_mamba++;
        break;
    }
    case '*':
        snprintf(nm, sizeof nm, "backbone.layers.%d.mixer.q_proj.bias", l);
        if (index_get(&b->ix, nm)) return st_err(ST_ERR_UNSUPPORTED, "%s: attention biases (%s) are not supported", b->dir, nm);
        L->state_idx = m->n_attn++;
        break;
    }
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
    rc = bind_one(&b, st_schema_global(ST_T_EMBED), -1, -1);
    if (rc) goto fail;
    if (c->tie_word_embeddings) {
        m->lm_head = m->embed;
    } else {
        rc = bind_one(&b, st_schema_global(ST_T_LM_HEAD), -1, -1);
        if (rc) goto fail;
    }
    m->arena_cap = arena_need(&m->cfg);
    m->arena = st_aligned_alloc(m->arena_cap * sizeof(float));
    m->layers = st_calloc((size_t)m->cfg.n_layers, sizeof *m->layers);
    if (!m->arena || !m->layers) { rc = ST_ERR_NOMEM; goto fail; }
    rc = bind_one(&b, st_schema_global(ST_T_NORM_F), -1, -1);
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

/*
 * slice.c — see slice.h. Each output tensor is a 2-D view [rows][cols] of a
 * source tensor with row spans and column spans (the same spans the budget
 * view uses at run time), so running the sliced checkpoint at full width
 * computes what the parent computes at the budget.
 */
#include "elastic/slice.h"
#include "io/outdir.h"
#include "model/model.h"
#include "model/schema.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char name[200];
    const st_sf_tensor *src;
    int64_t cols_full;           /* row length of the source 2-D view (elements) */
    st_span *rs, *cs;            /* owned */
    int nrs, ncs;
    int ndim;
    int64_t shape[3];
    st_dtype out_dt;
    uint64_t bytes;
} job;

typedef struct {
    job *j;
    int n, cap;
    const st_model *m;
    const char *err_dir;
    int out_dt;
    int keep_f32;       /* the tensor being added keeps F32 when converting:
                           its schema dtype rule is not ST_DTR_WEIGHT (router
                           weight and bias, dt_bias, A_log, D, norm weights) */
} plan;

static int span_total(const st_span *s, int n) {
    int t = 0;
    for (int i = 0; i < n; i++) t += s[i].len;
    return t;
}

static st_span *dup_spans(const st_span *s, int n) {
    st_span *d = st_malloc(sizeof *d * (size_t)(n ? n : 1));
    if (d) memcpy(d, s, sizeof *d * (size_t)n);
    return d;
}

/* Add a job: source `src_name` viewed as [rows][cols_full], keeping rs × cs,
 * output shape given by ndim/shape (its element count must equal |rs|·|cs|). */
static st_status add(plan *p, const char *out_name, const char *src_name, int64_t cols_full, const st_span *rs,
                     int nrs, const st_span *cs, int ncs, int ndim, const int64_t *shape) {
    const st_sf_tensor *t = st_model_tensor(p->m, src_name);
    if (!t) return st_err(ST_ERR_MISSING, "slice: %s: missing tensor '%s'", p->err_dir, src_name);
    if (p->n == p->cap) {
        int nc = p->cap ? 2 * p->cap : 256;
        job *nj = st_realloc(p->j, sizeof *nj * (size_t)nc);
        if (!nj) return st_err(ST_ERR_NOMEM, "out of memory");
        p->j = nj; p->cap = nc;
    }
    job *j = &p->j[p->n];
    memset(j, 0, sizeof *j);
    snprintf(j->name, sizeof j->name, "%s", out_name);
    j->src = t;
    j->cols_full = cols_full;
    j->rs = dup_spans(rs, nrs); j->nrs = nrs;
    j->cs = dup_spans(cs, ncs); j->ncs = ncs;
    if (!j->rs || !j->cs) { /* the job is not counted: nothing else frees them */
        free(j->rs); free(j->cs);
        return ST_ERR_NOMEM;
    }
    j->ndim = ndim;
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) { j->shape[i] = shape[i]; numel *= shape[i]; }
    if (numel != (int64_t)span_total(rs, nrs) * span_total(cs, ncs)) {
        free(j->rs); free(j->cs);
        return st_err(ST_ERR_ARG, "slice: internal shape error for %s", out_name);
    }
    j->out_dt = t->dt;
    /* converting precision applies to float weights, not to integer or packed data */
    if (p->out_dt >= 0 && (t->dt == ST_DT_F32 || t->dt == ST_DT_F16 || t->dt == ST_DT_BF16)) j->out_dt = p->out_dt;
    if (t->dt == ST_DT_F32 && j->out_dt != ST_DT_F32 && p->keep_f32) j->out_dt = ST_DT_F32;
    j->bytes = (uint64_t)numel * st_dtype_size(j->out_dt);
    p->n++;
    return ST_OK;
}

/* Whole vector / prefix of a vector, keeping the source's dimensionality. */
static st_status add_vec(plan *p, const char *out, const char *src, const st_span *cs, int ncs) {
    const st_sf_tensor *t = st_model_tensor(p->m, src);
    if (!t) return st_err(ST_ERR_MISSING, "slice: missing tensor '%s'", src);
    int64_t n = span_total(cs, ncs), shape[3] = {n, 1, 1};
    int nd = t->ndim < 1 ? 1 : t->ndim > 3 ? 3 : t->ndim; /* [n] or [n,1] */
    st_span r = {0, 1};
    return add(p, out, src, st_sf_numel(t), &r, 1, cs, ncs, nd, shape);
}

/* Copy a whole tensor (scales, input scales) unchanged, if present. */
static st_status add_copy(plan *p, const char *out, const char *src) {
    const st_sf_tensor *t = st_model_tensor(p->m, src);
    if (!t) return ST_OK;
    int64_t n = st_sf_numel(t), shape[3] = {0};
    if (t->ndim > 3) return st_err(ST_ERR_UNSUPPORTED, "slice: '%s' has %d dimensions", src, t->ndim);
    for (int i = 0; i < t->ndim; i++) shape[i] = t->shape[i];
    st_span r = {0, 1}, c = {0, (int32_t)n};
    return add(p, out, src, n, &r, 1, &c, 1, t->ndim, shape);
}

/* Spans over elements → spans over blocks of `per` elements; -1 if a span
 * does not start and end on a block boundary. */
static int to_blocks(const st_span *cs, int ncs, int per, st_span *out) {
    for (int i = 0; i < ncs; i++) {
        if (cs[i].off % per || cs[i].len % per) return -1;
        out[i] = (st_span){cs[i].off / per, cs[i].len / per};
    }
    return 0;
}

/*
 * A weight matrix: rows rs × columns cs of src [.][cols_full]. Quantized
 * sources are sliced without requantizing: FP8 keeps its per-tensor scales;
 * NVFP4 copies the packed codes and the 16-wide block scales, which requires
 * every column cut to fall on a block boundary.
 */
static st_status add_mat(plan *p, const char *out, const char *src, int64_t cols_full, const st_span *rs, int nrs,
                         const st_span *cs, int ncs, int nd, const int64_t *oshape) {
    const st_sf_tensor *t = st_model_tensor(p->m, src);
    char sb[256], ob[256], sn[300], on[300];
    size_t ls = strlen(src), lo = strlen(out);
    snprintf(sb, sizeof sb, "%.*s", (int)(ls > 7 ? ls - 7 : ls), src);
    snprintf(ob, sizeof ob, "%.*s", (int)(lo > 7 ? lo - 7 : lo), out);
    snprintf(sn, sizeof sn, "%s.weight_scale", sb);
    const st_sf_tensor *ws = st_model_tensor(p->m, sn);
    int64_t shape[3];
    for (int i = 0; i < nd; i++) shape[i] = oshape[i];
    st_status rc;
    if (t && t->dt == ST_DT_U8 && ws && ws->ndim == 2) { /* NVFP4 */
        st_span *bc = st_malloc(sizeof *bc * (size_t)ncs);
        if (!bc) return ST_ERR_NOMEM;
        if (to_blocks(cs, ncs, 16, bc)) {
            free(bc);
            return st_err(ST_ERR_BUDGET, "slice: the budget cuts NVFP4 weight '%s' inside a 16-wide block (columns must "
                          "be kept in multiples of 16); slice the BF16 checkpoint and quantize instead", src);
        }
        st_span *hc = st_malloc(sizeof *hc * (size_t)ncs);
        if (!hc) { free(bc); return ST_ERR_NOMEM; }
        to_blocks(cs, ncs, 2, hc);
        int64_t cshape[3], sshape[3]; /* packed codes and block scales: the input dim /2, /16 */
        for (int i = 0; i < nd; i++) cshape[i] = sshape[i] = shape[i];
        cshape[nd - 1] /= 2;
        sshape[nd - 1] /= 16;
        rc = add(p, out, src, cols_full / 2, rs, nrs, hc, ncs, nd, cshape);
        snprintf(on, sizeof on, "%s.weight_scale", ob);
        if (!rc) rc = add(p, on, sn, cols_full / 16, rs, nrs, bc, ncs, nd, sshape);
        free(bc); free(hc);
        snprintf(sn, sizeof sn, "%s.weight_scale_2", sb);
        snprintf(on, sizeof on, "%s.weight_scale_2", ob);
        if (!rc) rc = add_copy(p, on, sn);
    } else {
        rc = add(p, out, src, cols_full, rs, nrs, cs, ncs, nd, shape);
        if (!rc && t && t->dt == ST_DT_F8_E4M3) {
            snprintf(on, sizeof on, "%s.weight_scale", ob);
            rc = add_copy(p, on, sn);
        }
    }
    snprintf(sn, sizeof sn, "%s.input_scale", sb);
    snprintf(on, sizeof on, "%s.input_scale", ob);
    if (!rc) rc = add_copy(p, on, sn);
    return rc;
}

/* Consecutive runs of an index list as spans. */
static int runs(const int *idx, int n, st_span *out) {
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (k && out[k - 1].off + out[k - 1].len == idx[i]) out[k - 1].len++;
        else out[k++] = (st_span){idx[i], 1};
    }
    return k;
}

/* The kept indices of dim d at budget b, as spans over the parent's dim
 * (malloc'd into *out; the count returned, -1 out of memory). The same spans
 * the budget view reads at run time (budget.c build_spans). */
static int dim_spans(const st_budget *b, st_dim d, st_span **out) {
    const st_config *c = &b->m->cfg;
    const st_span *src = NULL;
    int n = 1, G = c->n_groups > 0 ? c->n_groups : 1;
    st_span one = {0, (int32_t)st_dim_size(c, &b->w, d)};
    switch (d) {
    case ST_DIM_MAMBA_INPROJ: src = b->m_inproj_rows; n = b->m_n_inproj_rows; break;
    case ST_DIM_MAMBA_CHANNEL: src = b->m_cols; n = b->m_n_cols; break;
    case ST_DIM_Q_HEAD: src = b->a_q_rows; n = b->a_n_q; break;
    case ST_DIM_MAMBA_HEAD: n = G; break;
    case ST_DIM_MAMBA_CONV: n = b->m_din + 2 * G * c->ssm_state_size; break;
    default: src = &one; break; /* a kept prefix (or the whole dim) */
    }
    st_span *s = st_malloc(sizeof *s * (size_t)(n > 0 ? n : 1));
    if (!s) return -1;
    if (d == ST_DIM_MAMBA_HEAD) /* the first r heads of each group */
        for (int g = 0; g < G; g++) s[g] = (st_span){g * (c->mamba_num_heads / G), b->m_r};
    else if (d == ST_DIM_MAMBA_CONV)
        n = runs(b->m_conv_ch, n, s);
    else
        memcpy(s, src, sizeof *s * (size_t)n);
    *out = s;
    return n;
}

/* Row spans of the [outer][inner] view of two dims: kept spans a over the
 * outer dim, kept spans bs over an inner dim of parent size N. */
static int nest_spans(const st_span *a, int na, const st_span *bs, int nb, int64_t N, st_span **out) {
    int whole = nb == 1 && bs[0].off == 0 && bs[0].len == N, n = 0;
    if (whole) n = na;
    else for (int i = 0; i < na; i++) n += a[i].len * nb;
    st_span *s = st_malloc(sizeof *s * (size_t)(n > 0 ? n : 1));
    if (!s) return -1;
    n = 0;
    for (int i = 0; i < na; i++) {
        if (whole) { s[n++] = (st_span){(int32_t)(a[i].off * N), (int32_t)(a[i].len * N)}; continue; }
        for (int r = a[i].off; r < a[i].off + a[i].len; r++)
            for (int j = 0; j < nb; j++) s[n++] = (st_span){(int32_t)(r * N + bs[j].off), bs[j].len};
    }
    *out = s;
    return n;
}

typedef struct {
    plan *p;
    const st_budget *b;
    int out_l[ST_MAX_LAYERS]; /* layer index in the slice (-1: skipped) */
} slicer;

/* One output tensor: dims from `first` on of spec s (1 for one expert's
 * tensor), the kept spans of each, as a [rows][last dim] view. */
static st_status slice_one(slicer *S, const st_tspec *s, int first, const char *out, const char *src) {
    plan *p = S->p;
    const st_config *c = &p->m->cfg;
    const int last = s->rank - 1;
    st_span *rs = NULL, *cs = NULL;
    int nrs = 1, ncs = dim_spans(S->b, s->dim[last], &cs);
    int64_t shape[3];
    int nd = 0;
    for (int k = first; k < s->rank; k++) shape[nd++] = st_dim_size(c, &S->b->w, s->dim[k]);
    const int64_t cols_full = st_dim_size(c, NULL, s->dim[last]);
    st_status rc = ncs < 0 ? ST_ERR_NOMEM : ST_OK;
    p->keep_f32 = s->dtype != ST_DTR_WEIGHT;
    /* rows: the dims before the last, outermost first */
    for (int k = first; !rc && k < last; k++) {
        st_span *ds = NULL, *nr = NULL;
        int nds = dim_spans(S->b, s->dim[k], &ds);
        if (nds < 0) { rc = ST_ERR_NOMEM; break; }
        if (k == first) { rs = ds; nrs = nds; continue; }
        int nn = nest_spans(rs, nrs, ds, nds, st_dim_size(c, NULL, s->dim[k]), &nr);
        free(ds);
        free(rs);
        rs = nr; nrs = nn;
        if (nn < 0) { rs = NULL; rc = ST_ERR_NOMEM; }
    }
    if (!rc) {
        if (s->flags & ST_TS_MAT) {
            rc = add_mat(p, out, src, cols_full, rs ? rs : &(st_span){0, 1}, nrs, cs, ncs, nd, shape);
        } else if (nd == 1) {
            rc = add_vec(p, out, src, cs, ncs);
        } else {
            /* a source stored without its size-1 dims (conv [C, K]) keeps that shape */
            const st_sf_tensor *t = st_model_tensor(p->m, src);
            if (t && t->ndim < nd) {
                int k = 0;
                for (int i = first; i < s->rank; i++)
                    if (s->dim[i] != ST_DIM_ONE) shape[k++] = st_dim_size(c, &S->b->w, s->dim[i]);
                nd = k;
            }
            rc = add(p, out, src, cols_full, rs, nrs, cs, ncs, nd, shape);
        }
    }
    p->keep_f32 = 0;
    free(rs);
    free(cs);
    return rc == ST_ERR_NOMEM ? st_err(rc, "out of memory") : rc;
}

static st_status slice_cb(void *ctx, const st_tspec *s, int l, int e) {
    slicer *S = ctx;
    if (l >= 0 && S->out_l[l] < 0) return ST_OK; /* a skipped layer */
    int ol = l >= 0 ? S->out_l[l] : -1;
    char on[200], sn[200];
    if (s->flags & ST_TS_EXPERTS) {
        if (e >= S->b->w.n_routed_experts) return ST_OK; /* experts past the kept prefix */
        if (st_model_fused(S->p->m, s, l, sn, sizeof sn)) { /* fused [E][out][in]: sliced along the expert dim too */
            if (e > 0) return ST_OK;
            size_t n = strlen(sn);
            st_tspec_fused_name(s, ol, n > 7 && !strcmp(sn + n - 7, ".weight"), on, sizeof on);
            return slice_one(S, s, 0, on, sn);
        }
    }
    return slice_one(S, s, (s->flags & ST_TS_EXPERTS) ? 1 : 0, st_tspec_name(s, ol, e, on, sizeof on),
                     st_tspec_name(s, l, e, sn, sizeof sn));
}

static st_status build_plan(plan *p, const st_budget *b) {
    const st_config *c = &p->m->cfg;
    slicer *S = st_malloc(sizeof *S);
    if (!S) return st_err(ST_ERR_NOMEM, "out of memory");
    S->p = p;
    S->b = b;
    for (int l = 0, k = 0; l < c->n_layers; l++) S->out_l[l] = b->skip[l] ? -1 : k++;
    st_status rc = st_schema_foreach(c, ST_SCHEMA_BY_EXPERT, slice_cb, S);
    free(S);
    return rc;
}

/* ----------------------------------------------------------- config.json */

static int nested_in(const st_widths *inner, const st_widths *outer) {
    for (int k = 0; k < ST_N_AX; k++)
        if (inner->axis[k] > outer->axis[k]) return 0;
    for (int i = 0; i < outer->n_skip; i++) { /* inner must skip at least what outer skips */
        int found = 0;
        for (int j = 0; j < inner->n_skip; j++) found |= inner->skip_layers[j] == outer->skip_layers[i];
        if (!found) return 0;
    }
    return 1;
}

/* A module path after slicing: layers renumbered past skipped ones; NULL when
 * the module is gone (skipped layer, expert beyond the kept ones). */
static const char *remap_module(const st_budget *b, const char *name, char *buf, size_t n) {
    int l, e, k = 0;
    if (sscanf(name, "backbone.layers.%d.%n", &l, &k) != 1 || k == 0) return name;
    if (l < 0 || l >= b->m->cfg.n_layers) return name;
    if (b->skip[l]) return NULL;
    const char *rest = name + k;
    int k2 = 0;
    if (sscanf(rest, "mixer.experts.%d%n", &e, &k2) == 1 && k2 > 0 && e >= b->w.n_routed_experts) return NULL;
    int nl = 0;
    for (int i = 0; i < l; i++) nl += !b->skip[i];
    snprintf(buf, n, "backbone.layers.%d.%s", nl, rest);
    return buf;
}

/* Apply remap_module to a list of names or the keys of an object (in place). */
static json_t *remap_json(const st_budget *b, json_t *v) {
    char buf[300];
    if (json_is_array(v)) {
        json_t *o = json_array();
        size_t i; json_t *x;
        json_array_foreach(v, i, x) {
            const char *s = json_string_value(x), *r = s ? remap_module(b, s, buf, sizeof buf) : NULL;
            if (!s) json_array_append(o, x);
            else if (r) json_array_append_new(o, json_string(r));
        }
        return o;
    }
    if (json_is_object(v)) {
        json_t *o = json_object();
        const char *k; json_t *x;
        json_object_foreach(v, k, x) {
            const char *r = remap_module(b, k, buf, sizeof buf);
            if (r) json_object_set(o, r, x);
        }
        return o;
    }
    return json_incref(v);
}

/* hf_quant_config.json / quantization_config: the module lists follow the slice */
static void remap_quant(const st_budget *b, json_t *q) {
    static const char *keys[] = {"exclude_modules", "quantized_layers", "ignore", NULL};
    if (!json_is_object(q)) return;
    for (int i = 0; keys[i]; i++) {
        json_t *v = json_object_get(q, keys[i]);
        if (v) json_object_set_new(q, keys[i], remap_json(b, v));
    }
}

static st_status copy_quant_config(const st_model *m, const st_budget *b, const char *tmpdir) {
    char p[4096];
    if (st_pathf(p, sizeof p, "%s/hf_quant_config.json", m->dir)) return st_err(ST_ERR_ARG, "path too long");
    json_error_t je;
    json_t *hf = json_load_file(p, 0, &je);
    if (!hf) return json_error_code(&je) == json_error_cannot_open_file ? ST_OK : st_err(ST_ERR_FORMAT, "%s: %s", p, je.text);
    remap_quant(b, json_object_get(hf, "quantization"));
    char *s = json_dumps(hf, JSON_INDENT(2));
    json_decref(hf);
    if (!s) return ST_ERR_NOMEM;
    st_status rc = st_pathf(p, sizeof p, "%s/hf_quant_config.json", tmpdir) ? st_err(ST_ERR_ARG, "path too long")
                                                                             : st_write_file_atomic(p, s, strlen(s));
    free(s);
    return rc;
}

static st_status write_config(const st_model *m, const st_budget *b, const char *tmpdir) {
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", m->dir);
    json_error_t je;
    json_t *cfg = json_load_file(p, JSON_REJECT_DUPLICATES, &je);
    if (!cfg) return st_err(ST_ERR_FORMAT, "%s: %s", p, je.text);
    const st_config *c = &m->cfg;
    const st_widths *w = &b->w;
    char pat[ST_MAX_LAYERS + 1];
    int L = 0;
    for (int l = 0; l < c->n_layers; l++) if (!b->skip[l]) pat[L++] = c->pattern[l];
    pat[L] = 0;
    json_object_set_new(cfg, "hidden_size", json_integer(w->hidden_size));
    json_object_set_new(cfg, "num_hidden_layers", json_integer(L));
    if (json_object_get(cfg, "layers_block_type")) {
        json_t *lt = json_array(), *old = json_object_get(cfg, "layers_block_type");
        for (int l = 0; l < c->n_layers; l++)
            if (!b->skip[l]) json_array_append(lt, json_array_get(old, (size_t)l));
        json_object_set_new(cfg, "layers_block_type", lt);
    }
    if (json_object_get(cfg, "hybrid_override_pattern") || !json_object_get(cfg, "layers_block_type"))
        json_object_set_new(cfg, "hybrid_override_pattern", json_string(pat));
    struct { const char *k; int v; int has; } kv[] = {
        {"num_attention_heads", w->num_attention_heads, strchr(c->pattern, '*') != NULL},
        {"mamba_num_heads", w->mamba_num_heads, strchr(c->pattern, 'M') != NULL},
        {"mamba_head_dim", w->mamba_head_dim, strchr(c->pattern, 'M') != NULL},
        {"n_routed_experts", w->n_routed_experts, strchr(c->pattern, 'E') != NULL},
        {"num_experts_per_tok", b->top_k, strchr(c->pattern, 'E') != NULL},
        {"moe_intermediate_size", w->moe_intermediate_size, strchr(c->pattern, 'E') != NULL},
        {"moe_shared_expert_intermediate_size", w->moe_shared_expert_intermediate_size, strchr(c->pattern, 'E') != NULL},
        {"intermediate_size", w->intermediate_size, strchr(c->pattern, '-') != NULL},
    };
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
        if (kv[i].has || json_object_get(cfg, kv[i].k)) json_object_set_new(cfg, kv[i].k, json_integer(kv[i].v));
    remap_quant(b, json_object_get(cfg, "quantization_config"));
    /* keep only the budgets nested inside the target, renumbering skipped layers */
    json_object_del(cfg, "elastic");
    json_t *bl = json_array();
    char def[128] = "";
    for (int i = 0; i < m->n_budgets; i++) {
        st_widths bw = m->budgets[i].w;
        st_widths_fill_parent(c, &bw);
        if (!nested_in(&bw, w)) continue;
        json_t *o = json_pack("{s:s}", "name", m->budgets[i].name);
        const st_widths *r = &m->budgets[i].w;
        for (int k = 0; k < ST_N_AX; k++)
            if (r->axis[k]) json_object_set_new(o, st_axis_key(k), json_integer(r->axis[k]));
        if (r->num_experts_per_tok) json_object_set_new(o, "num_experts_per_tok", json_integer(r->num_experts_per_tok));
        json_t *sk = json_array();
        for (int j = 0; j < r->n_skip; j++) {
            if (b->skip[r->skip_layers[j]]) continue;
            int nl = 0;
            for (int l = 0; l < r->skip_layers[j]; l++) nl += !b->skip[l];
            json_array_append_new(sk, json_integer(nl));
        }
        if (json_array_size(sk)) json_object_set_new(o, "skip_layers", sk);
        else json_decref(sk);
        json_array_append_new(bl, o);
        if (m->default_budget && !strcmp(m->default_budget, m->budgets[i].name)) snprintf(def, sizeof def, "%s", m->default_budget);
    }
    if (json_array_size(bl)) {
        if (!*def) snprintf(def, sizeof def, "%s", json_string_value(json_object_get(json_array_get(bl, 0), "name")));
        json_object_set_new(cfg, "elastic", json_pack("{s:i, s:s, s:o}", "format_version", 1, "default_budget", def,
                                                      "budgets", bl));
    } else {
        json_decref(bl);
    }
    char *s = json_dumps(cfg, JSON_INDENT(2));
    json_decref(cfg);
    if (!s) return st_err(ST_ERR_NOMEM, "slice: cannot serialise config.json");
    st_pathf(p, sizeof p, "%s/config.json", tmpdir);
    st_status rc = st_write_file_atomic(p, s, strlen(s));
    free(s);
    return rc;
}

st_status st_slice(const st_model *m, const st_budget *b, const char *dst, const st_slice_opts *opt) {
    st_slice_opts o = opt ? *opt : (st_slice_opts){0};
    if (b->m != m) return st_err(ST_ERR_ARG, "slice: budget belongs to another model");
    int out_dt = -1;
    if (o.precision) {
        if (!strcmp(o.precision, "bf16")) out_dt = ST_DT_BF16;
        else if (!strcmp(o.precision, "f16")) out_dt = ST_DT_F16;
        else if (!strcmp(o.precision, "f32")) out_dt = ST_DT_F32;
        else return st_err(ST_ERR_ARG, "slice: unknown precision \"%s\" (bf16, f16, f32)", o.precision);
    }
    plan p = {.m = m, .err_dir = m->dir, .out_dt = out_dt};
    st_outdir od;
    st_shards *sh = NULL;
    st_status rc = build_plan(&p, b);
    if (!rc) rc = st_outdir_begin(&od, dst, o.force);
    else memset(&od, 0, sizeof od);
    if (!rc) rc = st_shards_new(&sh, od.tmp, o.shard_bytes);
    for (int i = 0; !rc && i < p.n; i++) rc = st_shards_add(sh, p.j[i].name, p.j[i].out_dt, p.j[i].ndim, p.j[i].shape);
    if (!rc) rc = st_outdir_check_space(&od, st_shards_total(sh));
    if (!rc) rc = st_shards_begin(sh);
    st_progress pr;
    if (o.progress) st_progress_begin(&pr, "slice", (double)(sh ? st_shards_total(sh) : 0), "B");
    double done = 0;
    uint8_t *row = NULL;
    float *fbuf = NULL;
    size_t row_cap = 0, f_cap = 0;
    int fd = -1, fd_file = -1;
    for (int i = 0; !rc && i < p.n; i++) {
        job *j = &p.j[i];
        size_t es = st_dtype_size(j->src->dt), ncol = (size_t)span_total(j->cs, j->ncs), rb = ncol * es;
        size_t ob = ncol * st_dtype_size(j->out_dt), need = rb + ob;
        if (need > row_cap) { free(row); row_cap = need; row = st_malloc(need); if (!row) { rc = ST_ERR_NOMEM; break; } }
        if (j->out_dt != j->src->dt && ncol > f_cap) {
            free(fbuf); f_cap = ncol; fbuf = st_malloc(ncol * sizeof(float));
            if (!fbuf) { rc = ST_ERR_NOMEM; break; }
        }
        /* whole rows kept in the same type: each row span is one contiguous run
           of the mmap'd source, written without a copy through a row buffer */
        if (j->out_dt == j->src->dt && j->ncs == 1 && j->cs[0].off == 0 && j->cs[0].len == j->cols_full) {
            for (int a = 0; !rc && a < j->nrs; a++) {
                if (o.cancel && *o.cancel) { rc = st_err(ST_ERR_IO, "slice: interrupted"); break; }
                size_t n = (size_t)j->rs[a].len * rb;
                const st_sf_file *sf = m->files[j->src->file_index];
                if (fd_file != j->src->file_index) { /* the shard's file, for in-kernel copies */
                    if (fd >= 0) close(fd);
                    fd = open(sf->path, O_RDONLY | O_CLOEXEC);
                    fd_file = fd >= 0 ? j->src->file_index : -1;
                }
                if (fd >= 0)
                    rc = st_shards_copy(sh, fd, 8 + sf->header_len + j->src->begin + (uint64_t)j->rs[a].off * rb, n);
                else
                    rc = st_shards_write(sh, j->src->data + (size_t)j->rs[a].off * rb, n);
                done += (double)n;
                if (o.progress) st_progress_update(&pr, done);
            }
            continue;
        }
        for (int a = 0; !rc && a < j->nrs; a++)
            for (int r = j->rs[a].off; !rc && r < j->rs[a].off + j->rs[a].len; r++) {
                if (o.cancel && *o.cancel) { rc = st_err(ST_ERR_IO, "slice: interrupted"); break; }
                const uint8_t *src = j->src->data + (size_t)r * (size_t)j->cols_full * es;
                size_t at = 0;
                for (int q = 0; q < j->ncs; q++) {
                    memcpy(row + at, src + (size_t)j->cs[q].off * es, (size_t)j->cs[q].len * es);
                    at += (size_t)j->cs[q].len * es;
                }
                if (j->out_dt == j->src->dt) {
                    rc = st_shards_write(sh, row, rb);
                } else {
                    uint8_t *ot = row + rb;
                    st_convert_to_f32(j->src->dt, row, fbuf, (int64_t)ncol, 1.0f);
                    for (size_t q = 0; q < ncol; q++) {
                        if (j->out_dt == ST_DT_F32) memcpy(ot + 4 * q, &fbuf[q], 4);
                        else {
                            uint16_t h = j->out_dt == ST_DT_BF16 ? st_f32_to_bf16(fbuf[q]) : st_f32_to_f16(fbuf[q]);
                            memcpy(ot + 2 * q, &h, 2);
                        }
                    }
                    rc = st_shards_write(sh, ot, ob);
                }
                done += (double)ob;
                if (o.progress) st_progress_update(&pr, done);
            }
    }
    if (o.progress) st_progress_end(&pr);
    if (fd >= 0) close(fd);
    free(row);
    free(fbuf);
    if (!rc) rc = st_shards_finish(sh);
    if (!rc) rc = write_config(m, b, od.tmp);
    if (!rc) rc = copy_quant_config(m, b, od.tmp);
    if (!rc) rc = st_outdir_copy_side_files(&od, m->dir);
    if (!rc) rc = st_outdir_commit(&od);
    if (rc) st_outdir_abort(&od);
    st_shards_free(sh);
    for (int i = 0; i < p.n; i++) { free(p.j[i].rs); free(p.j[i].cs); }
    free(p.j);
    return rc;
}

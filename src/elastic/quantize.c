/*
 * quantize.c — see quantize.h. Two passes per weight over the mmap'd source:
 * max|W| for the global scale, then row by row into codes and block scales.
 * Input scales come from a calibration run of the full model (the forward
 * pass's amax recorder); the CPU kernels run W8A16 / W4A16 and ignore them,
 * but engines serving W8A8 / W4A4 need them.
 */
#include "elastic/quantize.h"
#include "elastic/quant.h"
#include "io/outdir.h"
#include "model/model.h"
#include "model/schema.h"
#include "util/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

enum { F_KEEP, F_FP8, F_NVFP4 };

typedef struct {
    const st_sf_tensor *t;
    const st_tspec *s;     /* its schema spec (NULL: not a model tensor)  */
    const st_mat *w;       /* the bound weight, for quantized entries   */
    int layer, fmt;
    float in_amax;         /* calibrated max|input|, -1 unknown          */
    char base[200];        /* module path (name without ".weight")       */
} entry;

/* Would every budget's column cut of this weight (its input dim, the last
 * dim of its spec) fall on a 16-block boundary? */
static int nvfp4_nests(const st_model *m, const st_tspec *s, const st_mat *w) {
    const st_config *c = &m->cfg;
    if (w->cols % ST_NVFP4_BLOCK) return 0;
    for (int i = -1; i < m->n_budgets; i++) {
        st_widths bw;
        memset(&bw, 0, sizeof bw);
        if (i >= 0) bw = m->budgets[i].w;
        st_widths_fill_parent(c, &bw);
        if (!st_dim_cuts_on(c, &bw, s->dim[s->rank - 1], ST_NVFP4_BLOCK)) return 0;
    }
    return 1;
}

static st_status calibrate(const st_model *m, const st_quant_opts *o, st_amax_rec *rec) {
    size_t mats = 16;
    for (int l = 0; l < m->cfg.n_layers; l++) mats += 8 + 2 * (size_t)(m->layers[l].type == 'E' ? m->cfg.n_routed_experts : 0);
    rec->cap = 2 * mats;
    rec->key = st_calloc(rec->cap, sizeof *rec->key);
    rec->amax = st_calloc(rec->cap, sizeof *rec->amax);
    if (!rec->key || !rec->amax) return ST_ERR_NOMEM;
    if (!o->calib || o->n_calib <= 0) return ST_OK;
    st_budget *b = NULL;
    st_state *s = NULL;
    /* the lm_head runs only when logits are asked for: every position's, so
     * its input scale sees all the calibration tokens */
    float *logits = o->quantize_lm_head ? st_malloc(sizeof(float) * 512 * (size_t)m->cfg.vocab_size) : NULL;
    st_status rc = o->quantize_lm_head && !logits ? ST_ERR_NOMEM : st_budget_by_name(m, "full", &b);
    if (!rc) rc = st_state_new(m, 512, &s);
    st_amax_record(rec);
    for (int at = 0; !rc && at < o->n_calib; at += 512) {
        int n = o->n_calib - at < 512 ? o->n_calib - at : 512;
        st_state_reset(s);
        rc = st_forward(b, s, o->calib + at, n, logits, logits != NULL);
    }
    st_amax_record(NULL);
    free(logits);
    st_state_free(s);
    st_budget_free(b);
    return rc;
}

static json_t *quant_json(const entry *e, int n, const char *algo, json_t **ignore) {
    json_t *excl = json_array(), *layers = json_object();
    for (int i = 0; i < n; i++) {
        if (e[i].fmt == F_KEEP && e[i].t->ndim == 2 && strstr(e[i].t->name, ".weight") &&
            !strstr(e[i].t->name, "conv1d") && !strstr(e[i].t->name, "norm"))
            json_array_append_new(excl, json_string(e[i].base));
        else if (e[i].fmt != F_KEEP)
            json_object_set_new(layers, e[i].base,
                                e[i].fmt == F_NVFP4 ? json_pack("{s:s,s:i}", "quant_algo", "NVFP4", "group_size", 16)
                                                    : json_pack("{s:s}", "quant_algo", "FP8"));
    }
    json_array_append_new(excl, json_string("*.conv1d"));
    json_t *q = json_pack("{s:s, s:n, s:O}", "quant_algo", algo, "kv_cache_quant_algo", "exclude_modules", excl);
    if (!strcmp(algo, "NVFP4") || !strcmp(algo, "MIXED_PRECISION")) json_object_set_new(q, "group_size", json_integer(16));
    if (!strcmp(algo, "MIXED_PRECISION")) json_object_set(q, "quantized_layers", layers);
    json_decref(layers);
    *ignore = excl;
    return q;
}

st_status st_quantize(const st_model *m, const char *dst, const st_quant_opts *o, st_quant_report *rep) {
    int want = !o->precision ? -1 : !strcmp(o->precision, "fp8") ? F_FP8 : !strcmp(o->precision, "nvfp4") ? F_NVFP4 : -1;
    if (want < 0) return st_err(ST_ERR_ARG, "quantize: precision must be fp8 or nvfp4");
    st_quant_report r = {0};
    int n = 0;
    for (int f = 0; f < m->n_files; f++) n += m->files[f]->n_tensors;
    entry *e = st_calloc((size_t)n, sizeof *e);
    if (!e) return ST_ERR_NOMEM;
    st_amax_rec rec = {0};
    st_status rc = calibrate(m, o, &rec);
    int k = 0;
    for (int f = 0; !rc && f < m->n_files; f++)
        for (int i = 0; i < m->files[f]->n_tensors; i++) {
            entry *x = &e[k++];
            x->t = &m->files[f]->tensors[i];
            r.bytes_in += (double)(x->t->end - x->t->begin);
            snprintf(x->base, sizeof x->base, "%.*s", (int)(strlen(x->t->name) > 7 ? strlen(x->t->name) - 7 : 0),
                     x->t->name);
            int ex;
            x->s = st_schema_find(&m->cfg, x->t->name, &x->layer, &ex);
            /* quantized: the spec's rule, on a weight bound one expert at a time (a fused
               expert stack is kept as it is) */
            x->w = x->s && x->s->quant != ST_QR_NO ? st_model_mat(m, x->s, x->layer, ex) : NULL;
            if (!x->w || (x->s->quant == ST_QR_ATTN && !o->quantize_attention) ||
                (x->s->quant == ST_QR_LM && !o->quantize_lm_head)) {
                x->fmt = F_KEEP;
                continue;
            }
            if (x->w->dt != ST_DT_F32 && x->w->dt != ST_DT_F16 && x->w->dt != ST_DT_BF16) {
                rc = st_err(ST_ERR_UNSUPPORTED, "quantize: %s is already %s", x->t->name, st_dtype_name(x->w->dt));
                break;
            }
            x->fmt = want == F_NVFP4 && nvfp4_nests(m, x->s, x->w) ? F_NVFP4 : F_FP8;
            x->in_amax = st_amax_get(&rec, x->w);
            if (x->in_amax < 0 && (x->s->id == ST_T_EXP_UP || x->s->id == ST_T_SH_UP)) /* same input as the router */
                x->in_amax = st_amax_get(&rec, &m->layers[x->layer].gate);
        }
    /* experts never routed during calibration: the layer's largest expert input */
    for (int i = 0; !rc && i < n; i++) {
        if (!e[i].w || e[i].s->id != ST_T_EXP_DOWN || e[i].in_amax >= 0) continue;
        const st_layer *L = &m->layers[e[i].layer];
        for (int q = 0; q < m->cfg.n_routed_experts; q++) e[i].in_amax = fmaxf(e[i].in_amax, st_amax_get(&rec, &L->exp_down[q]));
    }
    st_outdir od;
    memset(&od, 0, sizeof od);
    st_shards *sh = NULL;
    if (!rc) rc = st_outdir_begin(&od, dst, o->force);
    if (!rc) rc = st_shards_new(&sh, od.tmp, o->shard_bytes);
    char nm[240];
    for (int i = 0; !rc && i < n; i++) {
        const entry *x = &e[i];
        int64_t R = x->t->ndim == 2 ? x->t->shape[0] : 0, C = x->t->ndim == 2 ? x->t->shape[1] : 0;
        if (x->fmt == F_KEEP) { rc = st_shards_add(sh, x->t->name, x->t->dt, x->t->ndim, x->t->shape); r.n_kept += !!x->w; continue; }
        int64_t scalar[1];
        if (x->fmt == F_FP8) {
            rc = st_shards_add(sh, x->t->name, ST_DT_F8_E4M3, 2, (int64_t[]){R, C});
            snprintf(nm, sizeof nm, "%s.weight_scale", x->base);
            if (!rc) rc = st_shards_add(sh, nm, ST_DT_F32, 0, scalar);
            r.n_fp8++;
        } else {
            rc = st_shards_add(sh, x->t->name, ST_DT_U8, 2, (int64_t[]){R, C / 2});
            snprintf(nm, sizeof nm, "%s.weight_scale", x->base);
            if (!rc) rc = st_shards_add(sh, nm, ST_DT_F8_E4M3, 2, (int64_t[]){R, C / ST_NVFP4_BLOCK});
            snprintf(nm, sizeof nm, "%s.weight_scale_2", x->base);
            if (!rc) rc = st_shards_add(sh, nm, ST_DT_F32, 0, scalar);
            r.n_nvfp4++;
        }
        snprintf(nm, sizeof nm, "%s.input_scale", x->base);
        if (!rc) rc = st_shards_add(sh, nm, ST_DT_F32, 0, scalar);
    }
    if (!rc) rc = st_outdir_check_space(&od, st_shards_total(sh));
    if (!rc) rc = st_shards_begin(sh);
    st_progress pr;
    if (o->progress) st_progress_begin(&pr, "quantize", r.bytes_in, "B");
    double done = 0;
    float *row = NULL;
    uint8_t *codes = NULL, *bsc = NULL;
    size_t row_cap = 0, bsc_cap = 0;
    for (int i = 0; !rc && i < n; i++) {
        const entry *x = &e[i];
        if (o->cancel && *o->cancel) { rc = st_err(ST_ERR_IO, "quantize: interrupted"); break; }
        if (x->fmt == F_KEEP) {
            rc = st_shards_write(sh, x->t->data, (size_t)(x->t->end - x->t->begin));
            done += (double)(x->t->end - x->t->begin);
            if (o->progress) st_progress_update(&pr, done);
            continue;
        }
        const st_mat *w = x->w;
        size_t C = (size_t)w->cols;
        if (C > row_cap) {
            free(row); free(codes);
            row_cap = C;
            row = st_malloc(C * sizeof(float));
            codes = st_malloc(C);
            if (!row || !codes) { rc = ST_ERR_NOMEM; break; }
        }
        float amax = 0;
        for (int64_t q = 0; q < w->rows; q++) {
            st_mat_row_f32(w, q, 0, (int64_t)C, row);
            for (size_t j = 0; j < C; j++) amax = fmaxf(amax, fabsf(row[j]));
        }
        float in_amax = x->in_amax > 0 ? x->in_amax : 0;
        if (x->fmt == F_FP8) {
            float sc = st_fp8_scale(amax), isc = in_amax > 0 ? in_amax / ST_E4M3_MAX : 1.0f;
            for (int64_t q = 0; !rc && q < w->rows; q++) {
                st_mat_row_f32(w, q, 0, (int64_t)C, row);
                st_fp8_quantize(row, C, sc, codes);
                rc = st_shards_write(sh, codes, C);
            }
            if (!rc) rc = st_shards_write(sh, &sc, 4);
            if (!rc) rc = st_shards_write(sh, &isc, 4);
        } else {
            size_t nb = (size_t)w->rows * (C / ST_NVFP4_BLOCK);
            if (nb > bsc_cap) { free(bsc); bsc_cap = nb; bsc = st_malloc(nb); if (!bsc) { rc = ST_ERR_NOMEM; break; } }
            float g = st_nvfp4_global_scale(amax), isc = in_amax > 0 ? in_amax / (6.0f * ST_E4M3_MAX) : 1.0f;
            for (int64_t q = 0; !rc && q < w->rows; q++) {
                st_mat_row_f32(w, q, 0, (int64_t)C, row);
                st_nvfp4_quantize_row(row, C, g, codes, bsc + (size_t)q * (C / ST_NVFP4_BLOCK));
                rc = st_shards_write(sh, codes, C / 2);
            }
            if (!rc) rc = st_shards_write(sh, bsc, nb);
            if (!rc) rc = st_shards_write(sh, &g, 4);
            if (!rc) rc = st_shards_write(sh, &isc, 4);
        }
        done += (double)(x->t->end - x->t->begin);
        if (o->progress) st_progress_update(&pr, done);
    }
    if (o->progress) st_progress_end(&pr);
    free(row); free(codes); free(bsc);
    if (!rc) { r.bytes_out = (double)st_shards_total(sh); rc = st_shards_finish(sh); }
    /* config.json with quantization_config, and the legacy hf_quant_config.json */
    if (!rc) {
        const char *algo = r.n_nvfp4 && r.n_fp8 ? "MIXED_PRECISION" : r.n_nvfp4 ? "NVFP4" : "FP8";
        json_t *ignore = NULL;
        json_t *q = quant_json(e, n, algo, &ignore);
        json_t *producer = json_pack("{s:s, s:s}", "name", "modelopt", "version", "starling-" ST_VERSION);
        json_t *hf = json_pack("{s:O, s:O}", "producer", producer, "quantization", q);
        char *s = json_dumps(hf, JSON_INDENT(2));
        rc = s ? st_outdir_write(&od, "hf_quant_config.json", s, strlen(s)) : ST_ERR_NOMEM;
        free(s);
        char cp[4096];
        json_error_t je;
        json_t *cfg = NULL;
        if (!rc && st_pathf(cp, sizeof cp, "%s/config.json", m->dir) == 0) {
            cfg = json_load_file(cp, 0, &je);
            if (!cfg) rc = st_err(ST_ERR_FORMAT, "%s: %s", cp, je.text);
        }
        if (!rc) {
            json_t *qc = json_pack("{s:s, s:s, s:O, s:O, s:n}", "quant_method", "modelopt", "quant_algo", algo,
                                   "ignore", ignore, "producer", producer, "kv_cache_scheme");
            if (strcmp(algo, "FP8")) json_object_set_new(qc, "group_size", json_integer(16));
            json_object_set_new(cfg, "quantization_config", qc);
            s = json_dumps(cfg, JSON_INDENT(2));
            rc = s ? st_outdir_write(&od, "config.json", s, strlen(s)) : ST_ERR_NOMEM;
            free(s);
        }
        json_decref(cfg); json_decref(hf); json_decref(q); json_decref(producer); json_decref(ignore);
    }
    if (!rc) rc = st_outdir_copy_side_files(&od, m->dir);
    if (!rc) rc = st_outdir_commit(&od);
    if (rc) st_outdir_abort(&od);
    st_shards_free(sh);
    free(rec.key); free(rec.amax);
    free(e);
    if (rep) *rep = r;
    return rc;
}

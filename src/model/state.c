/*
 * state.c — per-sequence state: for each Mamba layer the last K−1 raw xBC
 * vectors and the SSM state [nh][P][N]; for each attention layer a growing
 * K/V cache. Shapes are the parent's, indexed by parent channel/head, so the
 * state of any budget is a subset of the same arrays.
 */
#include "model/model.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>

static size_t conv_len(const st_config *c) {
    size_t din = (size_t)c->mamba_num_heads * (size_t)c->mamba_head_dim;
    return (size_t)(c->conv_kernel - 1) * (din + 2 * (size_t)c->n_groups * (size_t)c->ssm_state_size);
}
static size_t ssm_len(const st_config *c) {
    return (size_t)c->mamba_num_heads * (size_t)c->mamba_head_dim * (size_t)c->ssm_state_size;
}

void st_state_free(st_state *s) {
    if (!s) return;
    for (int i = 0; s->conv && i < s->m->n_mamba; i++) free(s->conv[i]);
    for (int i = 0; s->ssm && i < s->m->n_mamba; i++) free(s->ssm[i]);
    for (int i = 0; s->k_cache && i < s->m->n_attn; i++) free(s->k_cache[i]);
    for (int i = 0; s->v_cache && i < s->m->n_attn; i++) free(s->v_cache[i]);
    free(s->conv); free(s->ssm); free(s->k_cache); free(s->v_cache); free(s->ws);
    free(s);
}

st_status st_state_new(const st_model *m, int max_ctx, st_state **out) {
    *out = NULL;
    st_state *s = st_calloc(1, sizeof *s);
    if (!s) return ST_ERR_NOMEM;
    s->m = m;
    s->max_ctx = max_ctx > 0 ? max_ctx : m->cfg.max_position_embeddings;
    if (s->max_ctx <= 0) s->max_ctx = 1 << 20;
    s->conv = st_calloc((size_t)m->n_mamba + 1, sizeof(float *));
    s->ssm = st_calloc((size_t)m->n_mamba + 1, sizeof(float *));
    s->k_cache = st_calloc((size_t)m->n_attn + 1, sizeof(float *));
    s->v_cache = st_calloc((size_t)m->n_attn + 1, sizeof(float *));
    if (!s->conv || !s->ssm || !s->k_cache || !s->v_cache) { st_state_free(s); return ST_ERR_NOMEM; }
    for (int i = 0; i < m->n_mamba; i++) {
        s->conv[i] = st_aligned_alloc(conv_len(&m->cfg) * sizeof(float));
        s->ssm[i] = st_aligned_alloc(ssm_len(&m->cfg) * sizeof(float));
        if (!s->conv[i] || !s->ssm[i]) { st_state_free(s); return ST_ERR_NOMEM; }
    }
    *out = s;
    return ST_OK;
}

void st_state_reset(st_state *s) {
    for (int i = 0; i < s->m->n_mamba; i++) {
        memset(s->conv[i], 0, conv_len(&s->m->cfg) * sizeof(float));
        memset(s->ssm[i], 0, ssm_len(&s->m->cfg) * sizeof(float));
    }
    s->pos = 0;
    s->has_budget = 0;
}

int st_state_pos(const st_state *s) { return s->pos; }

size_t st_state_bytes(const st_state *s) {
    const st_config *c = &s->m->cfg;
    size_t kv = 2 * (size_t)s->kv_cap * (size_t)c->num_key_value_heads * (size_t)c->head_dim;
    return sizeof(float) * ((size_t)s->m->n_mamba * (conv_len(c) + ssm_len(c)) + (size_t)s->m->n_attn * kv) +
           sizeof *s + sizeof(float) * s->ws_cap;
}

/* Grow every KV cache to hold at least n positions. */
st_status st_state_reserve(st_state *s, int n) {
    if (n <= s->kv_cap) return ST_OK;
    const st_config *c = &s->m->cfg;
    int cap = s->kv_cap ? s->kv_cap : 64;
    while (cap < n) cap = cap > (1 << 29) ? n : 2 * cap;
    if (cap > s->max_ctx) cap = s->max_ctx;
    size_t row = (size_t)c->num_key_value_heads * (size_t)c->head_dim;
    for (int i = 0; i < s->m->n_attn; i++) {
        float *k = st_realloc(s->k_cache[i], (size_t)cap * row * sizeof(float));
        if (!k) return st_err(ST_ERR_NOMEM, "out of memory growing the KV cache to %d positions", cap);
        s->k_cache[i] = k;
        float *v = st_realloc(s->v_cache[i], (size_t)cap * row * sizeof(float));
        if (!v) return st_err(ST_ERR_NOMEM, "out of memory growing the KV cache to %d positions", cap);
        s->v_cache[i] = v;
    }
    s->kv_cap = cap;
    return ST_OK;
}

st_status st_state_copy(st_state *dst, const st_state *src) {
    if (dst->m != src->m) return st_err(ST_ERR_ARG, "st_state_copy: states belong to different models");
    if (src->pos > dst->max_ctx)
        return st_err(ST_ERR_RANGE, "st_state_copy: %d positions do not fit a state limited to %d", src->pos, dst->max_ctx);
    st_status rc = st_state_reserve(dst, src->pos);
    if (rc) return rc;
    const st_config *c = &src->m->cfg;
    size_t row = (size_t)c->num_key_value_heads * (size_t)c->head_dim;
    for (int i = 0; i < src->m->n_attn; i++) {
        if (!src->pos) break;
        memcpy(dst->k_cache[i], src->k_cache[i], (size_t)src->pos * row * sizeof(float));
        memcpy(dst->v_cache[i], src->v_cache[i], (size_t)src->pos * row * sizeof(float));
    }
    return st_state_copy_recurrent(dst, src);
}

/* The recurrent part only (conv and SSM states, position, budget): a
 * rollback point for speculative decoding. Restoring it into the state it
 * was taken from is exact because the KV rows before its position are the
 * same in both (a pass only writes rows at or after the position it starts
 * from), so the KV cache, which grows with the context, is never copied. */
st_status st_state_copy_recurrent(st_state *dst, const st_state *src) {
    if (dst->m != src->m) return st_err(ST_ERR_ARG, "st_state_copy: states belong to different models");
    if (src->pos > dst->max_ctx)
        return st_err(ST_ERR_RANGE, "st_state_copy: %d positions do not fit a state limited to %d", src->pos, dst->max_ctx);
    const st_config *c = &src->m->cfg;
    for (int i = 0; i < src->m->n_mamba; i++) {
        memcpy(dst->conv[i], src->conv[i], conv_len(c) * sizeof(float));
        memcpy(dst->ssm[i], src->ssm[i], ssm_len(c) * sizeof(float));
    }
    dst->pos = src->pos;
    dst->has_budget = src->has_budget;
    memcpy(dst->budget_key, src->budget_key, sizeof dst->budget_key);
    memcpy(dst->budget_name, src->budget_name, sizeof dst->budget_name);
    dst->budget_w = src->budget_w;
    return ST_OK;
}

const char *st_state_budget(const st_state *s) { return s->has_budget ? s->budget_name : NULL; }

st_status st_state_transplant(st_state *s, const st_budget *to) {
    if (to->m != s->m) return st_err(ST_ERR_ARG, "transplant: state and budget belong to different models");
    if (!s->has_budget) return ST_OK; /* nothing computed yet: any budget may start */
    char why[400];
    if (!st_widths_can_transplant(&s->m->cfg, s->budget_name, &s->budget_w, to->name, &to->w, why, sizeof why))
        return st_err(ST_ERR_BUDGET, "%s", why);
    snprintf(s->budget_key, sizeof s->budget_key, "%s", st_budget_key(to));
    snprintf(s->budget_name, sizeof s->budget_name, "%s", to->name);
    s->budget_w = to->w;
    return ST_OK;
}

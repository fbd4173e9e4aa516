/*
 * budget.c — budgets as views. A budget is a set of widths (docs/architecture.md §6.1);
 * st_budget_new checks every nesting rule and precomputes the row/column spans
 * each layer type reads from the full-width weights, so the forward pass never
 * copies a weight. Kept units are always prefixes in rank order: of the hidden
 * channels, of each KV group's query heads, of each Mamba group's heads, of
 * each head's channels, of the expert list and of each FFN.
 */
#include "model/model.h"
#include "util/util.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

const st_axis_info st_axes[ST_N_AX] = {
#define P(f) offsetof(st_config, f)
    [ST_AX_HIDDEN] = {"hidden_size", {"hidden", "emb"}, P(hidden_size), 0, NULL, 0, NULL},
    [ST_AX_MAMBA_HEADS] = {"mamba_num_heads", {"mamba_heads", NULL}, P(mamba_num_heads), 'M', "n_groups", P(n_groups),
                           "Mamba heads are cut per group"},
    [ST_AX_MAMBA_DIM] = {"mamba_head_dim", {"mamba_dim", NULL}, P(mamba_head_dim), 'M', NULL, 0, NULL},
    [ST_AX_ATTN_HEADS] = {"num_attention_heads", {"attn_heads", "q_heads"}, P(num_attention_heads), '*',
                          "num_key_value_heads", P(num_key_value_heads),
                          "query heads are cut per KV group, K/V heads are never cut"},
    [ST_AX_EXPERTS] = {"n_routed_experts", {"experts", NULL}, P(n_routed_experts), 'E', NULL, 0, NULL},
    [ST_AX_EXPERT_FFN] = {"moe_intermediate_size", {"moe_ffn", "expert_ffn"}, P(moe_intermediate_size), 'E', NULL, 0,
                          NULL},
    [ST_AX_SHARED_FFN] = {"moe_shared_expert_intermediate_size", {"shared_ffn", NULL},
                          P(moe_shared_expert_intermediate_size), 'E', NULL, 0, NULL},
    [ST_AX_FFN] = {"intermediate_size", {"ffn", "mlp_ffn"}, P(intermediate_size), '-', NULL, 0, NULL},
#undef P
};

static int cfg_int(const st_config *c, size_t off) { return *(const int *)((const char *)c + off); }

const char *st_axis_key(int k) { return k >= 0 && k < ST_N_AX ? st_axes[k].key : "?"; }

int st_axis_parent_width(const st_config *c, int k) { return cfg_int(c, st_axes[k].parent); }

int st_axis_present(const st_config *c, int k) {
    if (!st_axes[k].layer) return 1;
    if (!strchr(c->pattern, st_axes[k].layer)) return 0;
    return k != ST_AX_SHARED_FFN || c->n_shared_experts; /* MoE layers without the shared expert */
}

void st_widths_fill_parent(const st_config *c, st_widths *w) {
    for (int k = 0; k < ST_N_AX; k++)
        if (!w->axis[k]) w->axis[k] = st_axis_parent_width(c, k);
}

static int has_type(const st_config *c, char t) { return strchr(c->pattern, t) != NULL; }

#define RULE(...) return st_err(ST_ERR_BUDGET, "budget: " __VA_ARGS__)

st_status st_axis_check_width(const st_config *c, int k, int v, const char *who) {
    int mx = st_axis_parent_width(c, k);
    if (v > mx) RULE("%s%s = %d is wider than the parent's %d (a budget can only keep a prefix)", who, st_axes[k].key, v, mx);
    if (v < 0 || (mx > 0 && v < 1)) RULE("%s%s = %d must be at least 1", who, st_axes[k].key, v);
    return ST_OK;
}

st_status st_axes_check_groups(const st_config *c, const int *w, const char *who) {
    for (int k = 0; k < ST_N_AX; k++) {
        const st_axis_info *a = &st_axes[k];
        if (!a->group || !has_type(c, a->layer)) continue;
        int g = cfg_int(c, a->group_off);
        if (w[k] % g) RULE("%s%s = %d is not a multiple of %s = %d (%s)", who, a->key, w[k], a->group, g, a->group_why);
    }
    if (has_type(c, 'E') && c->n_group > 1 && w[ST_AX_EXPERTS] != c->n_routed_experts)
        RULE("%sn_routed_experts cannot be cut when the router uses n_group = %d expert groups", who, c->n_group);
    return ST_OK;
}

void st_budget_free(st_budget *b) {
    if (!b) return;
    free(b->m_inproj_rows); free(b->m_cols); free(b->m_heads); free(b->m_conv_ch); free(b->a_q_rows);
    free(b);
}

static st_status check_rules(const st_config *c, const st_widths *w) {
    st_status rc;
    for (int k = 0; k < ST_N_AX; k++)
        if ((rc = st_axis_check_width(c, k, w->axis[k], ""))) return rc;
    if ((rc = st_axes_check_groups(c, w->axis, ""))) return rc;
    if (has_type(c, 'E')) {
        if (w->num_experts_per_tok > w->n_routed_experts)
            RULE("num_experts_per_tok = %d is larger than the %d experts kept (n_routed_experts)", w->num_experts_per_tok,
                 w->n_routed_experts);
        if (w->num_experts_per_tok > c->num_experts_per_tok)
            RULE("num_experts_per_tok = %d is larger than the parent's %d", w->num_experts_per_tok, c->num_experts_per_tok);
    }
    for (int i = 0; i < w->n_skip; i++) {
        if (w->skip_layers[i] >= c->n_layers)
            RULE("skip_layers: layer %d does not exist (the model has %d layers)", w->skip_layers[i], c->n_layers);
        if (i && w->skip_layers[i] <= w->skip_layers[i - 1]) RULE("skip_layers must be distinct");
    }
    return ST_OK;
}

static st_status build_spans(st_budget *b) {
    const st_config *c = &b->m->cfg;
    const st_widths *w = &b->w;
    if (has_type(c, 'M')) {
        int G = c->n_groups, R = c->mamba_num_heads / G, r = w->mamba_num_heads / G, P = c->mamba_head_dim;
        int Pk = w->mamba_head_dim, N = c->ssm_state_size, Din = c->mamba_num_heads * P, nk = r * G;
        b->m_r = r; b->m_P = Pk; b->m_din = nk * Pk;
        b->m_inproj_n = 2 * b->m_din + 2 * G * N + nk;
        b->m_heads = st_malloc(sizeof(int) * (size_t)nk);
        b->m_cols = st_malloc(sizeof(st_span) * (size_t)nk);
        b->m_inproj_rows = st_malloc(sizeof(st_span) * (size_t)(2 * nk + 1 + G));
        b->m_conv_ch = st_malloc(sizeof(int) * (size_t)(b->m_din + 2 * G * N));
        if (!b->m_heads || !b->m_cols || !b->m_inproj_rows || !b->m_conv_ch) return ST_ERR_NOMEM;
        int k = 0;
        for (int g = 0; g < G; g++)
            for (int j = 0; j < r; j++) b->m_heads[k++] = g * R + j;
        int ns = 0;
        for (int i = 0; i < nk; i++) b->m_inproj_rows[ns++] = (st_span){b->m_heads[i] * P, Pk};         /* z */
        for (int i = 0; i < nk; i++) b->m_inproj_rows[ns++] = (st_span){Din + b->m_heads[i] * P, Pk};   /* x */
        b->m_inproj_rows[ns++] = (st_span){2 * Din, 2 * G * N};                                         /* B, C */
        for (int g = 0; g < G; g++) b->m_inproj_rows[ns++] = (st_span){2 * Din + 2 * G * N + g * R, r}; /* dt */
        b->m_n_inproj_rows = ns;
        for (int i = 0; i < nk; i++) b->m_cols[i] = (st_span){b->m_heads[i] * P, Pk};
        b->m_n_cols = nk;
        int ch = 0;
        for (int i = 0; i < nk; i++)
            for (int p = 0; p < Pk; p++) b->m_conv_ch[ch++] = b->m_heads[i] * P + p;
        for (int i = 0; i < 2 * G * N; i++) b->m_conv_ch[ch++] = Din + i;
    }
    if (has_type(c, '*')) {
        int nkv = c->num_key_value_heads, Q = c->num_attention_heads / nkv, qk = w->num_attention_heads / nkv;
        int hd = c->head_dim;
        b->a_qk = qk;
        b->a_q_rows = st_malloc(sizeof(st_span) * (size_t)nkv);
        if (!b->a_q_rows) return ST_ERR_NOMEM;
        for (int j = 0; j < nkv; j++) b->a_q_rows[j] = (st_span){j * Q * hd, qk * hd};
        b->a_n_q = nkv;
    }
    return ST_OK;
}

/* Every width that shapes the computation, and a hash of the skipped layers. */
static void make_key(st_budget *b) {
    const st_widths *w = &b->w;
    uint64_t h = st_fnv1a64(ST_FNV1A64_BASIS, w->skip_layers, sizeof(int) * (size_t)w->n_skip);
    size_t at = 0;
    for (int k = 0; k < ST_N_AX; k++) at += (size_t)snprintf(b->key + at, sizeof b->key - at, "%d/", w->axis[k]);
    snprintf(b->key + at, sizeof b->key - at, "%d/%d:%llx", b->top_k, w->n_skip, (unsigned long long)h);
}

const char *st_budget_key(const st_budget *b) { return b->key; }

int st_widths_can_transplant(const st_config *c, const char *from_name, const st_widths *from, const char *to_name,
                             const st_widths *to, char *why, size_t n) {
    if (has_type(c, 'M') && (from->mamba_num_heads != to->mamba_num_heads || from->mamba_head_dim != to->mamba_head_dim)) {
        snprintf(why, n,
                 "transplant %s -> %s is impossible: %s keeps %d Mamba heads x %d channels, %s keeps %d x %d, so the "
                 "SSM state cannot carry over (use the exact switch mode)",
                 from_name, to_name, from_name, from->mamba_num_heads, from->mamba_head_dim, to_name,
                 to->mamba_num_heads, to->mamba_head_dim);
        return 0;
    }
    if (from->n_skip != to->n_skip || memcmp(from->skip_layers, to->skip_layers, sizeof(int) * (size_t)from->n_skip)) {
        snprintf(why, n,
                 "transplant %s -> %s is impossible: they skip different layers, whose states were never computed "
                 "(use the exact switch mode)",
                 from_name, to_name);
        return 0;
    }
    return 1;
}

st_status st_budget_new(const st_model *m, const st_widths *win, st_budget **out) {
    *out = NULL;
    const st_config *c = &m->cfg;
    st_budget *b = st_calloc(1, sizeof *b);
    if (!b) return ST_ERR_NOMEM;
    b->m = m;
    b->w = *win;
    st_widths_fill_parent(c, &b->w);
    st_status rc = check_rules(c, &b->w);
    if (rc) { st_budget_free(b); return rc; }
    b->top_k = b->w.num_experts_per_tok ? b->w.num_experts_per_tok : c->num_experts_per_tok;
    if (b->top_k > b->w.n_routed_experts) b->top_k = b->w.n_routed_experts;
    b->w.num_experts_per_tok = b->top_k;
    for (int i = 0; i < b->w.n_skip; i++) b->skip[b->w.skip_layers[i]] = true;
    snprintf(b->name, sizeof b->name, "custom");
    make_key(b);
    rc = build_spans(b);
    if (rc) { st_budget_free(b); return rc; }
    *out = b;
    return ST_OK;
}

st_status st_budget_by_name(const st_model *m, const char *name, st_budget **out) {
    st_widths w;
    memset(&w, 0, sizeof w);
    if (!name || !strcmp(name, "full") || !strcmp(name, "parent")) {
        st_status rc = st_budget_new(m, &w, out);
        if (!rc) snprintf((*out)->name, sizeof (*out)->name, "full");
        return rc;
    }
    for (int i = 0; i < m->n_budgets; i++) {
        if (strcmp(m->budgets[i].name, name)) continue;
        st_status rc = st_budget_new(m, &m->budgets[i].w, out);
        if (rc) return st_err_prefix(rc, "elastic budget \"%s\"", name);
        snprintf((*out)->name, sizeof (*out)->name, "%s", name);
        return ST_OK;
    }
    char names[512] = "";
    size_t at = 0;
    for (int i = 0; i < m->n_budgets && at < sizeof names; i++)
        at += (size_t)snprintf(names + at, sizeof names - at, "%s%s", i ? ", " : "", m->budgets[i].name);
    return st_err(ST_ERR_BUDGET, "budget: no budget named \"%s\" in %s/config.json (%s%s)", name, m->dir,
                  m->n_budgets ? "known: full, " : "it has no elastic block; use full or explicit widths",
                  names);
}

st_status st_budget_resolve(const st_model *m, const char *spec, st_budget **out) {
    *out = NULL;
    if (!spec || !*spec) {
        const char *def = m->default_budget;
        return st_budget_by_name(m, def, out);
    }
    st_widths w;
    memset(&w, 0, sizeof w);
    st_status rc;
    if (spec[0] == '@') {
        rc = st_widths_from_file(&w, spec + 1);
    } else if (strchr(spec, '=')) {
        /* "NAME:key=v,..." refines a named budget; plain "key=v,..." refines the parent */
        const char *colon = strchr(spec, ':');
        const char *eq = strchr(spec, '=');
        if (colon && colon < eq) {
            char nm[128];
            snprintf(nm, sizeof nm, "%.*s", (int)(colon - spec), spec);
            int found = 0;
            for (int i = 0; i < m->n_budgets; i++)
                if (!strcmp(m->budgets[i].name, nm)) { w = m->budgets[i].w; found = 1; }
            if (!found) return st_budget_by_name(m, nm, out);
            spec = colon + 1;
        }
        rc = st_widths_parse(&w, spec);
    } else {
        return st_budget_by_name(m, spec, out);
    }
    if (rc) return rc;
    return st_budget_new(m, &w, out);
}

const st_widths *st_budget_widths(const st_budget *b) { return &b->w; }
int st_budget_top_k(const st_budget *b) { return b->top_k; }
const char *st_budget_name(const st_budget *b) { return b->name; }

/* Bytes per weight as stored: NVFP4 packs two per byte plus one E4M3 scale per 16. */
static double elem_bytes(st_dtype dt) {
    return dt == ST_DT_NVFP4 ? 0.5 + 1.0 / 16.0 : (double)st_dtype_size(dt);
}

/* Parameter and byte counts of the model this budget would slice out
 * (docs/architecture.md §6.4, every width taken from the budget). */
void st_budget_stats_get(const st_budget *b, st_budget_stats *s) {
    const st_model *m = b->m;
    const st_config *c = &m->cfg;
    const st_widths *w = &b->w;
    double H = w->hidden_size, V = c->vocab_size;
    double tot = 0, act = 0, bytes = 0, abytes = 0;
#define ADD(n, mat, active) do { double n_ = (n), sz_ = elem_bytes((mat).dt); \
        tot += n_; bytes += n_ * sz_; if (active) { act += n_; abytes += n_ * sz_; } } while (0)
    st_mat f32 = {.dt = ST_DT_F32};
    ADD(V * H, m->embed, 0); /* a lookup reads one row, not the table */
    abytes += H * elem_bytes(m->embed.dt);
    if (!c->tie_word_embeddings) ADD(V * H, m->lm_head, 1);
    else { act += V * H; abytes += V * H * elem_bytes(m->lm_head.dt); }
    ADD(H, f32, 1);
    for (int l = 0; l < c->n_layers; l++) {
        if (b->skip[l]) continue;
        const st_layer *L = &m->layers[l];
        ADD(H, f32, 1);
        if (L->type == 'M') {
            double din = b->m_din, GN = (double)c->n_groups * c->ssm_state_size, nh = (double)w->mamba_num_heads;
            ADD(H * b->m_inproj_n, L->in_proj, 1);
            ADD(H * din, L->out_proj, 1);
            ADD((din + 2 * GN) * (c->conv_kernel + (c->use_conv_bias ? 1 : 0)) + 3 * nh + din, f32, 1);
        } else if (L->type == '*') {
            double q = (double)w->num_attention_heads * c->head_dim, kv = (double)c->num_key_value_heads * c->head_dim;
            ADD(H * q, L->wq, 1); ADD(H * kv, L->wk, 1); ADD(H * kv, L->wv, 1); ADD(H * q, L->wo, 1);
        } else if (L->type == '-') {
            ADD(2 * H * w->intermediate_size, L->up, 1);
        } else if (L->type == 'E') {
            double E = w->n_routed_experts, F = w->moe_intermediate_size, k = b->top_k;
            ADD(E * H, L->gate, 1);
            ADD(E, f32, 1);
            double per = 2 * H * F, sz = elem_bytes(L->exp_up[0].dt);
            tot += E * per; bytes += E * per * sz; act += k * per; abytes += k * per * sz;
            if (c->n_shared_experts) ADD(2 * H * w->moe_shared_expert_intermediate_size, L->sh_up, 1);
        }
    }
#undef ADD
    s->total_params = tot; s->active_params = act; s->weight_bytes = bytes; s->active_bytes = abytes;
}

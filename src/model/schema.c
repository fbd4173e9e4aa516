/*
 * schema.c — see schema.h. The tables below are the one place the
 * Nemotron-H tensor set is written out (docs/architecture.md §2).
 */
#include "model/schema.h"
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define D1(a) 1, {a, 0, 0}
#define D2(a, b) 2, {a, b, 0}
#define D3(a, b, c) 3, {a, b, c}

static const st_tspec g_global[] = {
    {ST_T_EMBED, "backbone.embeddings.weight", NULL, "token_embd.weight", D2(ST_DIM_VOCAB, ST_DIM_HIDDEN), ST_TS_MAT,
     ST_DTR_WEIGHT, ST_QR_NO},
    {ST_T_NORM_F, "backbone.norm_f.weight", NULL, "output_norm.weight", D1(ST_DIM_HIDDEN), 0, ST_DTR_NORM, ST_QR_NO},
    {ST_T_LM_HEAD, "lm_head.weight", NULL, "output.weight", D2(ST_DIM_VOCAB, ST_DIM_HIDDEN),
     ST_TS_MAT | ST_TS_IF_UNTIED, ST_DTR_WEIGHT, ST_QR_LM},
};

static const st_tspec g_norm = {ST_T_NORM, "norm.weight", NULL, "attn_norm.weight", D1(ST_DIM_HIDDEN), 0, ST_DTR_NORM,
                                ST_QR_NO};

/* Mamba-2: in_proj [z | x | B | C | dt][H], depthwise conv over x | B | C,
 * per-head dt_bias / A_log / D, gated grouped norm over din, out_proj. */
static const st_tspec g_mamba[] = {
    {ST_T_IN_PROJ, "mixer.in_proj.weight", NULL, "ssm_in.weight", D2(ST_DIM_MAMBA_INPROJ, ST_DIM_HIDDEN), ST_TS_MAT,
     ST_DTR_WEIGHT, ST_QR_YES},
    {ST_T_CONV_W, "mixer.conv1d.weight", NULL, "ssm_conv1d.weight", D3(ST_DIM_MAMBA_CONV, ST_DIM_ONE, ST_DIM_CONV_K), 0,
     ST_DTR_WEIGHT, ST_QR_NO},
    {ST_T_CONV_B, "mixer.conv1d.bias", NULL, "ssm_conv1d.bias", D1(ST_DIM_MAMBA_CONV), ST_TS_IF_CONV_BIAS,
     ST_DTR_WEIGHT, ST_QR_NO},
    {ST_T_DT_BIAS, "mixer.dt_bias", NULL, "ssm_dt.bias", D1(ST_DIM_MAMBA_HEAD), 0, ST_DTR_F32, ST_QR_NO},
    {ST_T_A_LOG, "mixer.A_log", NULL, "ssm_a", D1(ST_DIM_MAMBA_HEAD), 0, ST_DTR_F32, ST_QR_NO},
    {ST_T_D, "mixer.D", NULL, "ssm_d", D1(ST_DIM_MAMBA_HEAD), 0, ST_DTR_F32, ST_QR_NO},
    {ST_T_GNORM, "mixer.norm.weight", NULL, "ssm_norm.weight", D1(ST_DIM_MAMBA_CHANNEL), 0, ST_DTR_NORM, ST_QR_NO},
    {ST_T_OUT_PROJ, "mixer.out_proj.weight", NULL, "ssm_out.weight", D2(ST_DIM_HIDDEN, ST_DIM_MAMBA_CHANNEL),
     ST_TS_MAT, ST_DTR_WEIGHT, ST_QR_YES},
};

static const st_tspec g_attn[] = {
    {ST_T_Q, "mixer.q_proj.weight", NULL, "attn_q.weight", D2(ST_DIM_Q_HEAD, ST_DIM_HIDDEN), ST_TS_MAT, ST_DTR_WEIGHT,
     ST_QR_ATTN},
    {ST_T_K, "mixer.k_proj.weight", NULL, "attn_k.weight", D2(ST_DIM_KV_HEAD, ST_DIM_HIDDEN), ST_TS_MAT, ST_DTR_WEIGHT,
     ST_QR_ATTN},
    {ST_T_V, "mixer.v_proj.weight", NULL, "attn_v.weight", D2(ST_DIM_KV_HEAD, ST_DIM_HIDDEN), ST_TS_MAT, ST_DTR_WEIGHT,
     ST_QR_ATTN},
    {ST_T_O, "mixer.o_proj.weight", NULL, "attn_output.weight", D2(ST_DIM_HIDDEN, ST_DIM_Q_HEAD), ST_TS_MAT,
     ST_DTR_WEIGHT, ST_QR_ATTN},
};

static const st_tspec g_mlp[] = {
    {ST_T_UP, "mixer.up_proj.weight", NULL, "ffn_up.weight", D2(ST_DIM_FFN, ST_DIM_HIDDEN), ST_TS_MAT, ST_DTR_WEIGHT,
     ST_QR_YES},
    {ST_T_DOWN, "mixer.down_proj.weight", NULL, "ffn_down.weight", D2(ST_DIM_HIDDEN, ST_DIM_FFN), ST_TS_MAT,
     ST_DTR_WEIGHT, ST_QR_YES},
};

/* MoE: router + selection bias, routed experts, one shared expert. */
static const st_tspec g_moe[] = {
    {ST_T_GATE, "mixer.gate.weight", NULL, "ffn_gate_inp.weight", D2(ST_DIM_EXPERT, ST_DIM_HIDDEN), ST_TS_MAT,
     ST_DTR_F32, ST_QR_NO},
    {ST_T_E_BIAS, "mixer.gate.e_score_correction_bias", NULL, "exp_probs_b.bias", D1(ST_DIM_EXPERT), ST_TS_NO_GRAD,
     ST_DTR_F32, ST_QR_NO},
    {ST_T_EXP_UP, "mixer.experts.%d.up_proj.weight", "mixer.experts.up_proj", "ffn_up_exps.weight",
     D3(ST_DIM_EXPERT, ST_DIM_EXPERT_FFN, ST_DIM_HIDDEN), ST_TS_MAT | ST_TS_EXPERTS, ST_DTR_WEIGHT, ST_QR_YES},
    {ST_T_EXP_DOWN, "mixer.experts.%d.down_proj.weight", "mixer.experts.down_proj", "ffn_down_exps.weight",
     D3(ST_DIM_EXPERT, ST_DIM_HIDDEN, ST_DIM_EXPERT_FFN), ST_TS_MAT | ST_TS_EXPERTS, ST_DTR_WEIGHT, ST_QR_YES},
    {ST_T_SH_UP, "mixer.shared_experts.up_proj.weight", NULL, "ffn_up_shexp.weight",
     D2(ST_DIM_SHARED_FFN, ST_DIM_HIDDEN), ST_TS_MAT | ST_TS_IF_SHARED, ST_DTR_WEIGHT, ST_QR_YES},
    {ST_T_SH_DOWN, "mixer.shared_experts.down_proj.weight", NULL, "ffn_down_shexp.weight",
     D2(ST_DIM_HIDDEN, ST_DIM_SHARED_FFN), ST_TS_MAT | ST_TS_IF_SHARED, ST_DTR_WEIGHT, ST_QR_YES},
};

#define COUNT(a) (int)(sizeof a / sizeof a[0])

const st_tspec *st_schema_layer(char kind, int *n) {
    switch (kind) {
    case 'M': *n = COUNT(g_mamba); return g_mamba;
    case '*': *n = COUNT(g_attn); return g_attn;
    case '-': *n = COUNT(g_mlp); return g_mlp;
    case 'E': *n = COUNT(g_moe); return g_moe;
    default: *n = 0; return NULL;
    }
}

const st_tspec *st_schema_norm(void) { return &g_norm; }

const st_tspec *st_schema_global(st_tid id) {
    for (int i = 0; i < COUNT(g_global); i++)
        if (g_global[i].id == id) return &g_global[i];
    return NULL;
}

int st_tspec_present(const st_tspec *s, const st_config *c) {
    if ((s->flags & ST_TS_IF_CONV_BIAS) && !c->use_conv_bias) return 0;
    if ((s->flags & ST_TS_IF_SHARED) && c->n_shared_experts <= 0) return 0;
    if ((s->flags & ST_TS_IF_UNTIED) && c->tie_word_embeddings) return 0;
    return 1;
}

/* ------------------------------------------------------------ iteration */

#define CB(s, l, e) do { st_status rc_ = cb(ctx, s, l, e); if (rc_) return rc_; } while (0)

st_status st_schema_foreach_layer(const st_config *c, int l, int how, st_schema_cb cb, void *ctx) {
    int n;
    const st_tspec *t = st_schema_layer(c->pattern[l], &n);
    CB(&g_norm, l, -1);
    for (int i = 0; i < n; i++) {
        if (!st_tspec_present(&t[i], c)) continue;
        if (!(t[i].flags & ST_TS_EXPERTS) || how == ST_SCHEMA_STACKED) { CB(&t[i], l, -1); continue; }
        if (how == ST_SCHEMA_BY_TENSOR) {
            for (int e = 0; e < c->n_routed_experts; e++) CB(&t[i], l, e);
            continue;
        }
        /* by expert: the run of consecutive per-expert specs, expert by expert */
        int j = i;
        while (j < n && (t[j].flags & ST_TS_EXPERTS)) j++;
        for (int e = 0; e < c->n_routed_experts; e++)
            for (int k = i; k < j; k++)
                if (st_tspec_present(&t[k], c)) CB(&t[k], l, e);
        i = j - 1;
    }
    return ST_OK;
}

st_status st_schema_foreach(const st_config *c, int how, st_schema_cb cb, void *ctx) {
    CB(st_schema_global(ST_T_EMBED), -1, -1);
    for (int l = 0; l < c->n_layers; l++) {
        st_status rc = st_schema_foreach_layer(c, l, how, cb, ctx);
        if (rc) return rc;
    }
    CB(st_schema_global(ST_T_NORM_F), -1, -1);
    const st_tspec *lm = st_schema_global(ST_T_LM_HEAD);
    if (st_tspec_present(lm, c)) CB(lm, -1, -1);
    return ST_OK;
}
#undef CB

/* ------------------------------------------------------------ names */

const char *st_tspec_name(const st_tspec *s, int layer, int expert, char *buf, size_t n) {
    if (layer < 0) {
        snprintf(buf, n, "%s", s->name);
        return buf;
    }
    int k = snprintf(buf, n, "backbone.layers.%d.", layer);
    if (k < 0 || (size_t)k >= n) return buf;
    if (s->flags & ST_TS_EXPERTS) snprintf(buf + k, n - (size_t)k, s->name, expert);
    else snprintf(buf + k, n - (size_t)k, "%s", s->name);
    return buf;
}

const char *st_tspec_fused_name(const st_tspec *s, int layer, int with_weight, char *buf, size_t n) {
    snprintf(buf, n, "backbone.layers.%d.%s%s", layer, s->fused ? s->fused : s->name, with_weight ? ".weight" : "");
    return buf;
}

/* rest = "<prefix><digits><suffix>" for pattern "<prefix>%d<suffix>"; the digits into *e */
static int match_expert(const char *pat, const char *rest, int *e) {
    const char *pc = strstr(pat, "%d");
    size_t pre = (size_t)(pc - pat);
    if (strncmp(rest, pat, pre)) return 0;
    const char *d = rest + pre;
    if (*d < '0' || *d > '9') return 0;
    char *end;
    long v = strtol(d, &end, 10);
    if (strcmp(end, pc + 2) || v > 1 << 30) return 0;
    *e = (int)v;
    return 1;
}

const st_tspec *st_schema_find(const st_config *c, const char *name, int *layer, int *expert) {
    *layer = -1;
    *expert = -1;
    for (int i = 0; i < COUNT(g_global); i++)
        if (!strcmp(name, g_global[i].name)) return st_tspec_present(&g_global[i], c) ? &g_global[i] : NULL;
    static const char pre[] = "backbone.layers.";
    if (strncmp(name, pre, sizeof pre - 1)) return NULL;
    const char *d = name + sizeof pre - 1;
    if (*d < '0' || *d > '9') return NULL;
    char *end;
    long l = strtol(d, &end, 10);
    if (*end != '.' || l >= c->n_layers) return NULL;
    const char *rest = end + 1;
    *layer = (int)l;
    if (!strcmp(rest, g_norm.name)) return &g_norm;
    int n;
    const st_tspec *t = st_schema_layer(c->pattern[l], &n);
    for (int i = 0; i < n; i++) {
        if (!st_tspec_present(&t[i], c)) continue;
        if (!(t[i].flags & ST_TS_EXPERTS)) {
            if (!strcmp(rest, t[i].name)) return &t[i];
            continue;
        }
        size_t fl = strlen(t[i].fused);
        if (!strncmp(rest, t[i].fused, fl) && (!rest[fl] || !strcmp(rest + fl, ".weight"))) return &t[i];
        int e;
        if (match_expert(t[i].name, rest, &e) && e < c->n_routed_experts) {
            *expert = e;
            return &t[i];
        }
    }
    *layer = -1;
    return NULL;
}

/* ------------------------------------------------------------ sizes */

/* Width of axis k: the budget's (every width filled in), or with w NULL the parent's. */
static int64_t axis_w(const st_config *c, const st_widths *w, int k) {
    return w ? w->axis[k] : st_axis_parent_width(c, k);
}

int64_t st_dim_size(const st_config *c, const st_widths *w, st_dim d) {
    const int64_t nh = axis_w(c, w, ST_AX_MAMBA_HEADS), P = axis_w(c, w, ST_AX_MAMBA_DIM);
    const int64_t GN = (int64_t)c->n_groups * c->ssm_state_size;
    switch (d) {
    case ST_DIM_ONE: return 1;
    case ST_DIM_VOCAB: return c->vocab_size;
    case ST_DIM_HIDDEN: return axis_w(c, w, ST_AX_HIDDEN);
    case ST_DIM_MAMBA_HEAD: return nh;
    case ST_DIM_MAMBA_CHANNEL: return nh * P;
    case ST_DIM_MAMBA_GROUP: return GN;
    case ST_DIM_MAMBA_INPROJ: return 2 * nh * P + 2 * GN + nh;
    case ST_DIM_MAMBA_CONV: return nh * P + 2 * GN;
    case ST_DIM_CONV_K: return c->conv_kernel;
    case ST_DIM_Q_HEAD: return axis_w(c, w, ST_AX_ATTN_HEADS) * c->head_dim;
    case ST_DIM_KV_HEAD: return (int64_t)c->num_key_value_heads * c->head_dim;
    case ST_DIM_FFN: return axis_w(c, w, ST_AX_FFN);
    case ST_DIM_EXPERT: return axis_w(c, w, ST_AX_EXPERTS);
    case ST_DIM_EXPERT_FFN: return axis_w(c, w, ST_AX_EXPERT_FFN);
    case ST_DIM_SHARED_FFN: return axis_w(c, w, ST_AX_SHARED_FFN);
    }
    return 0;
}

int st_dim_parts(st_dim d, st_dim part[5]) {
    if (d == ST_DIM_MAMBA_INPROJ) {
        part[0] = part[1] = ST_DIM_MAMBA_CHANNEL; /* z, x */
        part[2] = part[3] = ST_DIM_MAMBA_GROUP;   /* B, C */
        part[4] = ST_DIM_MAMBA_HEAD;              /* dt   */
        return 5;
    }
    if (d == ST_DIM_MAMBA_CONV) {
        part[0] = ST_DIM_MAMBA_CHANNEL;
        part[1] = part[2] = ST_DIM_MAMBA_GROUP;
        return 3;
    }
    part[0] = d;
    return 1;
}

int st_tspec_shape(const st_tspec *s, const st_config *c, const st_widths *w, int split, int64_t shape[3]) {
    int skip = split && (s->flags & ST_TS_EXPERTS), nd = 0;
    for (int i = skip; i < s->rank; i++) shape[nd++] = st_dim_size(c, w, s->dim[i]);
    for (int i = nd; i < 3; i++) shape[i] = 0;
    return nd;
}

int64_t st_tspec_numel(const st_tspec *s, const st_config *c, const st_widths *w, int split) {
    int64_t sh[3], n = 1;
    int nd = st_tspec_shape(s, c, w, split, sh);
    for (int i = 0; i < nd; i++) n *= sh[i];
    return n;
}

int st_dim_cuts_on(const st_config *c, const st_widths *w, st_dim d, int block) {
    switch (d) {
    case ST_DIM_MAMBA_CHANNEL: return w->mamba_head_dim % block == 0 && c->mamba_head_dim % block == 0;
    case ST_DIM_Q_HEAD: return c->head_dim % block == 0;
    case ST_DIM_HIDDEN: case ST_DIM_FFN: case ST_DIM_EXPERT_FFN: case ST_DIM_SHARED_FFN: case ST_DIM_EXPERT:
        return st_dim_size(c, w, d) % block == 0;
    case ST_DIM_ONE: case ST_DIM_VOCAB: case ST_DIM_MAMBA_GROUP: case ST_DIM_CONV_K: case ST_DIM_KV_HEAD:
        return 1; /* never cut */
    default: return 0; /* cut per group (Mamba heads): no rule needed yet */
    }
}

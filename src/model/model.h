/*
 * model.h — internal model structures: config, bound weights, budget views,
 * per-sequence state. The public face is include/starling.h.
 */
#ifndef ST_MODEL_H
#define ST_MODEL_H

#include "io/safetensors.h"
#include "kernels/kernels.h"
#include "starling.h"
#include <jansson.h>
#include <stdbool.h>
#include <string.h>

/* One layer: a pre-norm and exactly one mixer (docs/architecture.md §2.1). */
typedef struct {
    char type;                 /* 'M' mamba2, '*' attention, '-' mlp, 'E' moe */
    float *norm;               /* [H] pre-norm weight                         */
    /* Mamba-2 */
    st_mat in_proj;            /* [2·D_in + 2·G·N + nh][H]   z | x | B | C | dt */
    st_mat out_proj;           /* [H][D_in]                                     */
    float *conv_w;             /* [conv_dim][K]  conv_dim = D_in + 2·G·N        */
    float *conv_b;             /* [conv_dim] (zeros without use_conv_bias)      */
    float *dt_bias, *A, *D;    /* [nh]  A = -exp(A_log)                         */
    float *gnorm;              /* [D_in] gated grouped RMSNorm weight           */
    /* attention */
    st_mat wq, wk, wv, wo;     /* [nq·hd][H], [nkv·hd][H] ×2, [H][nq·hd]        */
    /* dense MLP */
    st_mat up, down;           /* [I][H], [H][I]                                */
    /* MoE */
    st_mat gate;               /* [E][H] router                                 */
    float *e_bias;             /* [E] selection-only correction bias            */
    st_mat *exp_up, *exp_down; /* [E] × ([F][H], [H][F])                        */
    st_mat sh_up, sh_down;     /* [Fsh][H], [H][Fsh]                            */
    int state_idx;             /* index among this type's layers (M, *)         */
} st_layer;

typedef struct {
    char *name;
    st_widths w;
} st_named_budget;

/* tensor name → safetensors entry (open addressing) */
typedef struct {
    const st_sf_tensor **slot;
    size_t cap;
} name_index;

struct st_model {
    char *dir;
    st_config cfg;
    st_sf_file **files;
    int n_files;
    st_mat embed;              /* [V][H] */
    st_mat lm_head;            /* [V][H] */
    float *norm_f;             /* [H]    */
    st_layer *layers;          /* [L]    */
    int n_mamba, n_attn;
    st_named_budget *budgets;
    int n_budgets;
    char *default_budget;
    name_index ix;             /* every tensor of every shard, by name */
    /* small fp32 copies of vectors (norms, conv, A, D, ...) live here */
    float *arena;
    size_t arena_used, arena_cap;
};

/* A validated budget with precomputed spans over the parent's weights. */
struct st_budget {
    const st_model *m;
    st_widths w;               /* every width filled in                      */
    char name[64];
    int top_k;
    bool skip[ST_MAX_LAYERS];
    /* Mamba: kept heads are the first r of each group of R = nh/G */
    int m_r, m_P, m_din;       /* heads per group, head dim, r·G·P           */
    int m_inproj_n;            /* packed in_proj rows: 2·din + 2GN + r·G      */
    st_span *m_inproj_rows;    /* z spans | x spans | B,C span | dt spans     */
    int m_n_inproj_rows;
    st_span *m_cols;           /* out_proj columns: one per kept head         */
    int m_n_cols;
    int *m_heads;              /* [r·G] parent head index of each kept head  */
    int *m_conv_ch;            /* [din + 2GN] parent conv channel per packed  */
    /* attention: kept q heads are the first qk of each KV group of Q = nq/nkv */
    int a_qk;
    st_span *a_q_rows;         /* per KV group: rows of kept heads (×hd)      */
    int a_n_q;
    char key[160];             /* identity: equal keys compute the same model  */
};

/* Per-sequence state, shaped like the parent so any budget's subset fits. */
struct st_state {
    const st_model *m;
    int pos, max_ctx;
    char budget_key[160];      /* identity of the budget the state holds       */
    char budget_name[64];
    st_widths budget_w;        /* widths of that budget                        */
    int has_budget;
    float **conv;              /* [n_mamba] → [(K−1)][conv_dim]  raw xBC history */
    float **ssm;               /* [n_mamba] → [nh][P][N]                        */
    float **k_cache, **v_cache;/* [n_attn] → [cap][nkv·hd]                      */
    int kv_cap;
    float *ws;                 /* scratch workspace                             */
    size_t ws_cap;             /* in floats                                     */
};

/* model.c: the raw safetensors entry of any tensor (NULL if absent) */
const st_sf_tensor *st_model_tensor(const st_model *m, const char *name);
/* model.c: the bound matrix of a schema spec (src/model/schema.h) in a layer
 * (-1: global) for one expert (ST_TS_EXPERTS); NULL if not bound. */
struct st_tspec_s;
const st_mat *st_model_mat(const st_model *m, const struct st_tspec_s *s, int layer, int expert);
/* model.c: the fused [E][out][in] tensor of an expert spec in layer l, if the
 * checkpoint stores that layer's experts fused (its name into name[n]). */
const st_sf_tensor *st_model_fused(const st_model *m, const struct st_tspec_s *s, int layer, char *name, size_t n);

/* config.c */
st_status st_config_parse(json_t *root, const char *path, st_config *c);
/* Merge eos_token_id (int or list) into c->eos_token_ids. */
void st_config_add_eos(st_config *c, json_t *v);
st_status st_widths_from_json(st_widths *w, json_t *obj, const char *ctx);
st_status st_elastic_parse(st_model *m, json_t *root, const char *path);

/* budget.c: the elastic axes, in one table indexed by st_axis. */
typedef struct {
    const char *key;          /* config.json and budget key ("hidden_size")       */
    const char *alias[2];     /* short spellings st_widths_set accepts (or NULL)  */
    size_t parent;            /* offsetof(st_config, ...): the parent's width     */
    char layer;               /* layer type the axis cuts; 0: every layer         */
    const char *group;        /* the st_config width it must be a multiple of     */
    size_t group_off;         /* (NULL: none) and its offsetof(st_config, ...)    */
    const char *group_why;    /* why, for the error message                       */
} st_axis_info;
extern const st_axis_info st_axes[ST_N_AX];
int st_axis_parent_width(const st_config *c, int k);
/* Whether the parent has any layer the axis cuts into. */
int st_axis_present(const st_config *c, int k);
/* The rules of one axis width v (after the 0 → parent fill): a prefix of
 * the parent's, at least 1. who: "" or "sample 3: ", for the message. */
st_status st_axis_check_width(const st_config *c, int k, int v, const char *who);
/* The rules across the filled widths w[ST_N_AX]: heads cut per group, experts
 * not cut under grouped routing. */
st_status st_axes_check_groups(const st_config *c, const int *w, const char *who);
void st_widths_fill_parent(const st_config *c, st_widths *w);

/* forward.c: calibration recorder — max|input| seen by each weight while set
 * on the calling thread (open addressing on the st_mat pointer; cap slots). */
typedef struct {
    const st_mat **key;
    float *amax;
    size_t cap, n;
} st_amax_rec;
void st_amax_record(st_amax_rec *r); /* NULL stops recording */
float st_amax_get(const st_amax_rec *r, const st_mat *W); /* -1 if never seen */

/* budget.c: the string that identifies a budget's widths (made once, when
 * the budget is built): two budgets with equal keys compute the same model,
 * so states, cached snapshots and batches may be shared between them. */
const char *st_budget_key(const st_budget *b);
static inline int st_budget_same(const st_budget *a, const st_budget *b) {
    return a == b || !strcmp(st_budget_key(a), st_budget_key(b));
}

/* budget.c: the transplant rule, in one place. A state computed at widths
 * `from` may continue at widths `to` (keeping its KV cache and SSM states)
 * only if both keep the same Mamba heads and head channels (the SSM state
 * [nh][P][N] of the kept heads is all a budget reads and writes) and skip the
 * same layers (a skipped layer's state was never computed). Returns 1 if it
 * may; else 0 with the whole error line, naming both budgets, in why[n]. */
int st_widths_can_transplant(const st_config *c, const char *from_name, const st_widths *from, const char *to_name,
                             const st_widths *to, char *why, size_t n);
static inline int st_budget_can_transplant(const st_budget *a, const st_budget *b, char *why, size_t n) {
    return st_widths_can_transplant(&a->m->cfg, a->name, &a->w, b->name, &b->w, why, n);
}

/* forward.c: st_forward that also leaves in snap[k] a copy of the whole
 * state as it stands after tokens[0..at[k]) (0 < at[0] < ... < at[n_at-1] <
 * n, at most ST_FWD_MAX_SNAP): what stopping the pass there would leave,
 * bit for bit, without splitting the pass (every pass reads all weights, so
 * a split costs a weight read; the prompt cache snapshots chat turn ends
 * this way). snap[k] is any state of the same model. recurrent: the
 * snapshots hold only the recurrent part (st_state_copy_recurrent: no KV
 * rows), rollback points to restore into s itself (speculative decoding). */
#define ST_FWD_MAX_SNAP 8
st_status st_forward_snap(const st_budget *b, st_state *s, const int32_t *tokens, int n, float *logits, int all_logits,
                          const int *at, int n_at, st_state **snap, int recurrent);

/* state.c */
st_status st_state_reserve(st_state *s, int n);
/* dst = src's conv and SSM states, position and budget, not its KV rows: a
 * rollback point, valid only to restore into src itself (or into a state
 * whose KV rows before src's position equal src's). */
st_status st_state_copy_recurrent(st_state *dst, const st_state *src);
/* Bytes the state holds: conv + SSM states, the KV cache as reserved
 * (kv_cap positions), the scratch workspace and the struct itself. */
size_t st_state_bytes(const st_state *s);

#endif

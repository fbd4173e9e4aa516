/*
 * tacts.h — the training activations (internal to src/train and the elastic
 * tools that read them: importance ranking reads norm outputs, MLP
 * activations, attention head outputs and routed expert outputs after a
 * forward). Layout is owned by backward.c (acts_plan).
 */
#ifndef ST_TACTS_H
#define ST_TACTS_H

#include "train/train.h"

typedef struct {
    float *res;    /* [BT][H]  layer input (residual stream)            */
    float *u;      /* [BT][H]  RMSNorm(res)                             */
    float *rstd;   /* [BT]     1/rms of res                             */
    /* Mamba-2 */
    float *zx;     /* [BT][M]  in_proj output: z | xBC | dt_raw         */
    float *pre;    /* [BT][CV] conv pre-activation                      */
    float *xbc;    /* [BT][CV] silu(pre): x | B | C                     */
    float *dt;     /* [BT][nh] softplus(dt_raw + dt_bias)               */
    float *y;      /* [BT][din] scan output incl. D·x                   */
    float *gr;     /* [BT][G]  grouped-norm 1/rms                       */
    float *vo;     /* [BT][din] out_proj input                          */
    /* attention */
    float *q, *k, *v; /* [BT][nq·hd], [BT][nkv·hd] ×2                    */
    float *att;    /* [B][nq][T][T] softmax probabilities (causal)     */
    float *o;      /* [BT][nq·hd] heads, concatenated                   */
    /* MLP (and MoE shared expert) */
    float *h, *ha; /* [BT][I] pre-activation, relu²                     */
    /* MoE */
    float *lg;     /* [BT][E]  router logits                            */
    int32_t *idx;  /* [BT][k]  selected experts                         */
    float *wt;     /* [BT][k]  combine weights                          */
    int32_t *slot; /* [BT·k]   t·k+j of each routed row, grouped by expert */
    int32_t *eoff; /* [E+1]    expert e's rows: [eoff[e], eoff[e+1])    */
    float *eh, *ea;/* [BT·k][F] expert pre-activation, relu²            */
    float *eo;     /* [BT·k][H] expert output before weighting          */
} lacts;

struct st_tacts {
    float *arena;
    size_t n;
    lacts *l;       /* [n_layers] */
    float *xf;      /* [BT][H]  final residual                          */
    float *rstdf;   /* [BT]                                             */
    float *hf;      /* [BT][H]  RMSNorm_f(xf)                           */
    float *logits;  /* [BT][V]  (dlogits after backward)                */
    float *rowloss; /* [BT]                                             */
    int32_t *tok, *tgt; /* [BT]                                          */
    float *dres;    /* [BT][H]  residual gradient                       */
    float *du;      /* [BT][H]                                          */
    float *scr;     /* scratch (transposes + per-layer temporaries)     */
    size_t scr_n;
    int has_tgt;
    long n_count;   /* counted target positions of the last forward     */
    /* elastic masks (st_tmodel_set_masks); a new shape in st_tmodel_reserve
       drops them. Under masks: y (Mamba) is 0 for heads/channels not kept, o
       and vo hold the masked o_proj / out_proj inputs (att rows of cut heads
       are not written), ha / ea the masked
       down_proj inputs, idx = -1 and wt = 0 in unused top-k slots (eoff[E]
       = slots in use), wt without pi[EXPERTS]. */
    st_tmask *mask; /* [B] effective masks (widths filled, pi 0 → 1); NULL: off */
    st_tmask *mbuf; /* [B] storage behind mask                          */
    double *dpi;    /* [B][ST_N_AX] dL/dpi, accumulated like m->g        */
    double *racc;   /* [BT·max(k,1) + B·n_kv] per-row partial sums        */
    float *dmix;    /* [BT][H] mixer output gradient under masks         */
};

#endif

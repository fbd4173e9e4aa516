/*
 * schema.h — the Nemotron-H tensor set in one table. For the model's global
 * tensors and for each layer kind ('M' Mamba-2, '*' attention, '-' dense MLP,
 * 'E' MoE): every tensor's Hugging Face name, its dims and the axis each dim
 * follows (what a budget cuts, what ranking permutes), and its dtype rules.
 * Binding (model.c), the training table (train_model.c), slicing, ranking's
 * permutation, quantizing, synthesising and GGUF export walk this table
 * instead of listing the tensors themselves (docs/design.md §7).
 */
#ifndef ST_SCHEMA_H
#define ST_SCHEMA_H

#include "starling.h"
#include <stddef.h>
#include <stdint.h>

/* The axis a dimension follows. Dims are listed outermost first (row-major,
 * as safetensors stores them). */
typedef enum {
    ST_DIM_ONE,            /* size 1 (the middle dim of conv1d [C, 1, K])                */
    ST_DIM_VOCAB,          /* vocab_size: never cut, never permuted                      */
    ST_DIM_HIDDEN,         /* hidden_size: kept prefix, one global ranking               */
    ST_DIM_MAMBA_HEAD,     /* mamba_num_heads: kept prefix of each group (dt, A, D)      */
    ST_DIM_MAMBA_CHANNEL,  /* mamba_num_heads·mamba_head_dim, (head, head channel): the
                              kept channels of every kept head                           */
    ST_DIM_MAMBA_GROUP,    /* n_groups·ssm_state_size (B or C): never cut or permuted    */
    ST_DIM_MAMBA_INPROJ,   /* in_proj rows, a concatenation z | x | B | C | dt of
                              CHANNEL, CHANNEL, GROUP, GROUP, HEAD (st_dim_parts)        */
    ST_DIM_MAMBA_CONV,     /* conv channels x | B | C: CHANNEL, GROUP, GROUP             */
    ST_DIM_CONV_K,         /* conv_kernel                                                */
    ST_DIM_Q_HEAD,         /* num_attention_heads·head_dim: whole heads, the kept prefix
                              of each KV group                                           */
    ST_DIM_KV_HEAD,        /* num_key_value_heads·head_dim: never cut                    */
    ST_DIM_FFN,            /* intermediate_size (dense MLP neurons)                      */
    ST_DIM_EXPERT,         /* n_routed_experts                                           */
    ST_DIM_EXPERT_FFN,     /* moe_intermediate_size, ranked per expert                   */
    ST_DIM_SHARED_FFN,     /* moe_shared_expert_intermediate_size                        */
} st_dim;

/* Which tensor a spec is (callers switch on it for what is theirs alone:
 * the st_layer field it binds to, its initialisation, ...). */
typedef enum {
    ST_T_EMBED, ST_T_NORM_F, ST_T_LM_HEAD,
    ST_T_NORM,                                                  /* every layer's pre-norm */
    ST_T_IN_PROJ, ST_T_CONV_W, ST_T_CONV_B, ST_T_DT_BIAS, ST_T_A_LOG, ST_T_D, ST_T_GNORM, ST_T_OUT_PROJ,
    ST_T_Q, ST_T_K, ST_T_V, ST_T_O,
    ST_T_UP, ST_T_DOWN,
    ST_T_GATE, ST_T_E_BIAS, ST_T_EXP_UP, ST_T_EXP_DOWN, ST_T_SH_UP, ST_T_SH_DOWN,
} st_tid;

/* dtype rule */
typedef enum {
    ST_DTR_WEIGHT,  /* the checkpoint's dtype; a precision conversion applies      */
    ST_DTR_NORM,    /* the checkpoint's dtype, but a conversion keeps F32 as F32    */
    ST_DTR_F32,     /* written as F32 (router, e-bias, dt_bias, A_log, D); a
                       conversion keeps F32 as F32: rounding them moves top-k
                       choices and whole-sequence accumulations                    */
} st_dtrule;

/* quantization rule (FP8 / NVFP4, src/elastic/quantize.c) */
typedef enum {
    ST_QR_NO,       /* never (embeddings, router, norms, conv, vectors)          */
    ST_QR_YES,      /* Mamba projections, MLPs, routed and shared experts        */
    ST_QR_ATTN,     /* q/k/v/o: only when asked (NVIDIA keeps them high precision) */
    ST_QR_LM,       /* lm_head: only when asked                                  */
} st_qrule;

enum {
    ST_TS_MAT = 1,          /* a matrix the forward multiplies (bound as st_mat)          */
    ST_TS_EXPERTS = 2,      /* one per routed expert: dim 0 is ST_DIM_EXPERT; stored split
                               ("...experts.%d.up_proj.weight", 2-D each) or fused
                               ([E][out][in] under `fused`, with or without ".weight")  */
    ST_TS_IF_CONV_BIAS = 4, /* present only with use_conv_bias                           */
    ST_TS_IF_SHARED = 8,    /* present only with n_shared_experts > 0                    */
    ST_TS_IF_UNTIED = 16,   /* present only without tie_word_embeddings                  */
    ST_TS_NO_GRAD = 32,     /* not trained by gradients (the selection bias)             */
};

typedef struct st_tspec_s {
    st_tid id;
    const char *name;   /* HF name; layer tensors after "backbone.layers.N.", %d = expert */
    const char *fused;  /* ST_TS_EXPERTS: the stacked name after "backbone.layers.N."    */
    const char *gguf;   /* llama.cpp's name (layer tensors after "blk.N.")               */
    int rank;           /* number of dims (ST_TS_EXPERTS: with the expert dim)           */
    st_dim dim[3];
    unsigned flags;     /* ST_TS_*                                                       */
    st_dtrule dtype;
    st_qrule quant;
} st_tspec;

/* The specs of one layer kind (without the pre-norm every layer has), in
 * checkpoint order; NULL with *n = 0 for an unknown kind. */
const st_tspec *st_schema_layer(char kind, int *n);
/* The pre-norm of every layer (first in each layer). */
const st_tspec *st_schema_norm(void);
/* The global tensors: embeddings, final norm, lm_head (checkpoint order:
 * embeddings first, the other two after the last layer). */
const st_tspec *st_schema_global(st_tid id);

/* Whether the spec is part of a model of config c (the ST_TS_IF_* rules). */
int st_tspec_present(const st_tspec *s, const st_config *c);

/* Iteration over every tensor of a model, in checkpoint order (embeddings,
 * each layer's pre-norm and mixer tensors, final norm, lm_head). How the
 * per-expert tensors come: */
enum {
    ST_SCHEMA_STACKED,     /* once per spec, expert = -1 (the [E][out][in] view)      */
    ST_SCHEMA_BY_TENSOR,   /* per expert, spec-major: every up_proj, then every down   */
    ST_SCHEMA_BY_EXPERT,   /* per expert, expert-major: up, down of expert 0, then 1 … */
};
/* layer = -1 for global tensors. A non-zero return stops the walk and is returned. */
typedef st_status (*st_schema_cb)(void *ctx, const st_tspec *s, int layer, int expert);
st_status st_schema_foreach(const st_config *c, int how, st_schema_cb cb, void *ctx);
/* The same over one layer l of kind c->pattern[l] (pre-norm first). */
st_status st_schema_foreach_layer(const st_config *c, int l, int how, st_schema_cb cb, void *ctx);

/* HF name of (s, layer, expert) into buf (expert ignored unless split). */
const char *st_tspec_name(const st_tspec *s, int layer, int expert, char *buf, size_t n);
/* Stacked name of an ST_TS_EXPERTS spec, with or without ".weight". */
const char *st_tspec_fused_name(const st_tspec *s, int layer, int with_weight, char *buf, size_t n);
/* The spec a tensor name is in a model of config c (NULL: none), its layer
 * (-1 global) and expert (-1: not per expert, or the fused stack). */
const st_tspec *st_schema_find(const st_config *c, const char *name, int *layer, int *expert);

/* Size of dim d at widths w (NULL: the parent's; otherwise every width filled,
 * see st_widths_fill_parent). */
int64_t st_dim_size(const st_config *c, const st_widths *w, st_dim d);
/* The pieces a concatenated dim is made of (MAMBA_INPROJ, MAMBA_CONV), in
 * order; a plain dim is one piece, itself. Returns the count (≤ 5). */
int st_dim_parts(st_dim d, st_dim part[5]);
/* Shape of (s) at widths w into shape[3]; split: one expert's tensor (the
 * expert dim dropped). Returns the number of dims. */
int st_tspec_shape(const st_tspec *s, const st_config *c, const st_widths *w, int split, int64_t shape[3]);
int64_t st_tspec_numel(const st_tspec *s, const st_config *c, const st_widths *w, int split);
/* Does every cut a budget of widths w makes along dim d fall on a multiple of
 * `block` elements (NVFP4 blocks along a weight's input dim)? Sufficient
 * rules: a prefix needs its width to be a multiple; Mamba channels need the
 * parent's and the kept head_dim to be; query heads are cut whole, so head_dim. */
int st_dim_cuts_on(const st_config *c, const st_widths *w, st_dim d, int block);

#endif

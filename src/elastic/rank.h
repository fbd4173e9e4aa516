/*
 * rank.h — importance ranking and weight permutation (docs/elastic.md §1,
 * docs/architecture.md §6.1): forward-only activation scores over
 * calibration tokens for every elastic axis, a stable descending sort per
 * axis (per group for Mamba heads, per KV group for attention query heads),
 * and the permutation of every tied tensor dimension so that storage order
 * = rank order. The permuted model computes the same function as the parent;
 * every budget then keeps a prefix.
 *
 * Scores (training forward at full width, masks off; per hook the mean of
 * |activation| over the positions of a sequence, then the root-mean-square
 * over sequences — Model-Optimizer's root-sum-square / sqrt(n_seq), the same
 * order — then summed over hooks):
 *   hidden_size            RMSNorm outputs u of every layer norm + the final
 *                          norm, one global score per channel
 *   mamba_head_dim         x-part of in_proj output (pre-conv), A[h][p] per
 *                          (head, channel); channel p: sqrt(Σ_h A[h][p]²)
 *   mamba_num_heads        head h: sqrt(Σ_p A[h][p]²) over all P channels
 *                          (the method scores a head over its top-ranked
 *                          channels only; here over all of them, as the
 *                          kept head_dim is not known at ranking time)
 *   num_attention_heads    head outputs o (o_proj input): sqrt(Σ_e A[i][e]²)
 *   intermediate_size,     relu² activations (what down_proj multiplies; a
 *   moe_shared_expert_...  negative pre-activation contributes nothing)
 *   moe_intermediate_size  per expert: mean relu² activation over all the
 *                          tokens routed to it (0 for an expert never routed)
 *   n_routed_experts       REAP: mean over routed tokens of g·||f(x)||₂, g the
 *                          renormalised gate weight (combine weight /
 *                          routed_scaling_factor), f the expert output
 * Layer importance (reported, depth is not permuted): normalised logit MSE
 * Σ(M_full − M_−j)² / Σ M_full² with layer j skipped, through st_forward.
 */
#ifndef ST_RANK_H
#define ST_RANK_H

#include "starling.h"
#include "train/train.h"
#include <stdint.h>

/* One ranked axis: n units in `groups` equal consecutive blocks; a unit only
 * moves inside its block (groups = 1: one ranking over all units). */
typedef struct {
    int n, groups;
    double *score;   /* [n] importance per unit, in the PARENT's order       */
    int32_t *perm;   /* [n] perm[new position] = parent index (same block)    */
} st_rank_axis;

typedef struct {
    char type;                      /* M * - E                                   */
    st_rank_axis mamba_heads;       /* 'M': nh units, n_groups blocks            */
    st_rank_axis mamba_dim;         /* 'M': P channels, shared by every head     */
    st_rank_axis attn_heads;        /* '*': nq units, nkv blocks                 */
    st_rank_axis ffn;               /* '-': intermediate_size; 'E': shared expert */
    st_rank_axis experts;           /* 'E': REAP over E experts                   */
    st_rank_axis *expert_ffn;       /* 'E': [E] neurons of parent expert e        */
    double importance;              /* normalised logit MSE with the layer skipped
                                       (-1: not computed)                          */
} st_rank_layer;

typedef struct {
    st_config cfg;
    st_rank_axis hidden;
    st_rank_layer *L;               /* [n_layers] */
    long n_tokens;                  /* calibration tokens scored                  */
    int n_seq, seq_len;
    long n_layer_tokens;            /* tokens behind the layer importance (0: none) */
} st_rank;

/* Empty ranking for cfg: every perm the identity, every score 0. */
st_status st_rank_new(const st_config *cfg, st_rank **out);
void st_rank_free(st_rank *r);

/* Score n_seq sequences tokens[n_seq][T] with m's training forward at full
 * width (m without elastic masks, e.g. fresh from st_tmodel_from_model;
 * batches of B, m is reserved for min(B, n_seq)×T) and sort every axis
 * (st_rank_sort). Token ids must be in [0, vocab). progress: a bar on stderr
 * (when it is a terminal). */
st_status st_rank_score(st_rank *r, st_tmodel *m, const int32_t *tokens, int n_seq, int T, int B, int progress);
/* Stable descending sort of every axis's scores into its perm (within blocks). */
st_status st_rank_sort(st_rank *r);
/* Layer importance of every layer over n_seq sequences tokens[n_seq][T]
 * through the inference API (m must have r's config). */
st_status st_rank_layers(st_rank *r, const st_model *m, const int32_t *tokens, int n_seq, int T, int progress);

/* Permute m's weights by r's perms (every tied dimension; docs/architecture.md §6.1).
 * The function m computes does not change. */
st_status st_rank_apply(st_tmodel *m, const st_rank *r);

/* importance.json text (malloc'd): per axis and layer the scores in the NEW
 * order and perm (parent index of each new position), the layer importance
 * and the calibration token count. */
char *st_rank_json(const st_rank *r);
/* Write m (already permuted) as an HF checkpoint + importance.json into dir,
 * atomically; tokenizer / generation files copied from src_dir when given. */
st_status st_rank_save(const st_tmodel *m, const st_rank *r, const char *dir, const char *src_dir, int force);

#endif

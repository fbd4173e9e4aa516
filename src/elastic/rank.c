/*
 * rank.c — see rank.h. Scores come from the activations the training forward
 * leaves in m->a (src/train/tacts.h); the permutation rewrites m's fp32
 * weights in place, block by block (cycle-following, one block of scratch),
 * so the permuted model needs no second copy of the weights.
 */
#include "elastic/rank.h"
#include "io/outdir.h"
#include "model/schema.h"
#include "train/tacts.h"
#include "util/buf.h"
#include "util/util.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ rank object */

static st_status axis_init(st_rank_axis *a, int n, int groups) {
    a->n = n;
    a->groups = groups > 0 ? groups : 1;
    a->score = st_calloc((size_t)(n > 0 ? n : 1), sizeof(double));
    a->perm = st_malloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
    if (!a->score || !a->perm) return ST_ERR_NOMEM;
    for (int i = 0; i < n; i++) a->perm[i] = i;
    return ST_OK;
}

static void axis_free(st_rank_axis *a) {
    free(a->score);
    free(a->perm);
    a->score = NULL;
    a->perm = NULL;
}

void st_rank_free(st_rank *r) {
    if (!r) return;
    axis_free(&r->hidden);
    if (r->L)
        for (int l = 0; l < r->cfg.n_layers; l++) {
            st_rank_layer *L = &r->L[l];
            axis_free(&L->mamba_heads);
            axis_free(&L->mamba_dim);
            axis_free(&L->attn_heads);
            axis_free(&L->ffn);
            axis_free(&L->experts);
            if (L->expert_ffn)
                for (int e = 0; e < r->cfg.n_routed_experts; e++) axis_free(&L->expert_ffn[e]);
            free(L->expert_ffn);
        }
    free(r->L);
    free(r);
}

st_status st_rank_new(const st_config *c, st_rank **out) {
    *out = NULL;
    if (c->n_layers <= 0 || c->hidden_size <= 0) return st_err(ST_ERR_ARG, "rank: empty model");
    if (strchr(c->pattern, 'M') && (c->n_groups <= 0 || c->mamba_num_heads % c->n_groups))
        return st_err(ST_ERR_ARG, "rank: mamba_num_heads %d is not a multiple of n_groups %d", c->mamba_num_heads, c->n_groups);
    if (strchr(c->pattern, '*') && (c->num_key_value_heads <= 0 || c->num_attention_heads % c->num_key_value_heads))
        return st_err(ST_ERR_ARG, "rank: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                      c->num_attention_heads, c->num_key_value_heads);
    st_rank *r = st_calloc(1, sizeof *r);
    if (!r) return ST_ERR_NOMEM;
    r->cfg = *c;
    r->L = st_calloc((size_t)c->n_layers, sizeof *r->L);
    st_status rc = r->L ? axis_init(&r->hidden, c->hidden_size, 1) : ST_ERR_NOMEM;
    for (int l = 0; !rc && l < c->n_layers; l++) {
        st_rank_layer *L = &r->L[l];
        L->type = c->pattern[l];
        L->importance = -1;
        switch (L->type) {
        case 'M':
            rc = axis_init(&L->mamba_heads, c->mamba_num_heads, c->n_groups);
            if (!rc) rc = axis_init(&L->mamba_dim, c->mamba_head_dim, 1);
            break;
        case '*': rc = axis_init(&L->attn_heads, c->num_attention_heads, c->num_key_value_heads); break;
        case '-': rc = axis_init(&L->ffn, c->intermediate_size, 1); break;
        case 'E':
            rc = axis_init(&L->experts, c->n_routed_experts, 1);
            if (!rc && !(L->expert_ffn = st_calloc((size_t)c->n_routed_experts, sizeof *L->expert_ffn))) rc = ST_ERR_NOMEM;
            for (int e = 0; !rc && e < c->n_routed_experts; e++) rc = axis_init(&L->expert_ffn[e], c->moe_intermediate_size, 1);
            if (!rc && c->n_shared_experts) rc = axis_init(&L->ffn, c->moe_shared_expert_intermediate_size, 1);
            break;
        default: rc = st_err(ST_ERR_UNSUPPORTED, "rank: layer %d has unknown type '%c'", l, L->type);
        }
    }
    if (rc) {
        st_rank_free(r);
        return rc == ST_ERR_NOMEM ? st_err(rc, "rank: out of memory") : rc;
    }
    *out = r;
    return ST_OK;
}

/* The ranking and the model must describe the same shapes. */
static st_status cfg_match(const st_config *a, const st_config *b, const char *what) {
    if (a->n_layers != b->n_layers || strcmp(a->pattern, b->pattern) || a->hidden_size != b->hidden_size ||
        a->vocab_size != b->vocab_size || a->mamba_num_heads != b->mamba_num_heads ||
        a->mamba_head_dim != b->mamba_head_dim || a->n_groups != b->n_groups ||
        a->num_attention_heads != b->num_attention_heads || a->num_key_value_heads != b->num_key_value_heads ||
        a->head_dim != b->head_dim || a->intermediate_size != b->intermediate_size ||
        a->n_routed_experts != b->n_routed_experts || a->moe_intermediate_size != b->moe_intermediate_size ||
        a->n_shared_experts != b->n_shared_experts ||
        a->moe_shared_expert_intermediate_size != b->moe_shared_expert_intermediate_size)
        return st_err(ST_ERR_ARG, "rank: %s has another shape than the ranking", what);
    return ST_OK;
}

/* ------------------------------------------------------------ sorting */

typedef struct { double s; int32_t i; } scored;

/* descending score, then ascending index: a stable sort through qsort */
static int cmp_scored(const void *pa, const void *pb) {
    const scored *a = pa, *b = pb;
    if (a->s > b->s) return -1;
    if (a->s < b->s) return 1;
    return (a->i > b->i) - (a->i < b->i);
}

static void axis_sort(st_rank_axis *a, scored *buf) {
    if (!a->score || a->n <= 0) return;
    int bs = a->n / a->groups;
    for (int g = 0; g < a->groups; g++) {
        for (int j = 0; j < bs; j++) buf[j] = (scored){a->score[g * bs + j], g * bs + j};
        qsort(buf, (size_t)bs, sizeof *buf, cmp_scored);
        for (int j = 0; j < bs; j++) a->perm[g * bs + j] = buf[j].i;
    }
}

static int axis_max_n(const st_rank *r) {
    const st_config *c = &r->cfg;
    int n = c->hidden_size;
#define MX(x) do { if ((x) > n) n = (x); } while (0)
    MX(c->mamba_num_heads); MX(c->mamba_head_dim); MX(c->num_attention_heads); MX(c->intermediate_size);
    MX(c->n_routed_experts); MX(c->moe_intermediate_size); MX(c->moe_shared_expert_intermediate_size);
#undef MX
    return n;
}

st_status st_rank_sort(st_rank *r) {
    scored *buf = st_malloc(sizeof *buf * (size_t)axis_max_n(r));
    if (!buf) return st_err(ST_ERR_NOMEM, "rank: out of memory");
    axis_sort(&r->hidden, buf);
    for (int l = 0; l < r->cfg.n_layers; l++) {
        st_rank_layer *L = &r->L[l];
        axis_sort(&L->mamba_heads, buf);
        axis_sort(&L->mamba_dim, buf);
        axis_sort(&L->attn_heads, buf);
        axis_sort(&L->ffn, buf);
        axis_sort(&L->experts, buf);
        if (L->expert_ffn)
            for (int e = 0; e < r->cfg.n_routed_experts; e++) axis_sort(&L->expert_ffn[e], buf);
    }
    free(buf);
    return ST_OK;
}

/* ------------------------------------------------------------ scoring */

/* Accumulators of one st_rank_score call. "sq" arrays hold, per unit, the sum
 * over sequences of (mean over the sequence's positions of |activation|)². */
typedef struct {
    double *hid;    /* [L+1][H] per norm hook (layer norms, then the final norm) */
    double **sq;    /* [L] → M [nh·P] x-part, * [nq·hd] head outputs, - [I], E [Fs] shared relu² */
    double **esum;  /* [L] → E [E][F] Σ relu² over routed tokens                  */
    double **ereap; /* [L] → E [E] Σ g·||f(x)||₂ over routed tokens                */
    double **ecnt;  /* [L] → E [E] routed tokens                                   */
    double *tmp;    /* [widest hook] per-sequence sums                            */
} accs;

static void accs_free(accs *a, int L) {
    for (int l = 0; l < L; l++) {
        if (a->sq) free(a->sq[l]);
        if (a->esum) free(a->esum[l]);
        if (a->ereap) free(a->ereap[l]);
        if (a->ecnt) free(a->ecnt[l]);
    }
    free(a->hid); free(a->sq); free(a->esum); free(a->ereap); free(a->ecnt); free(a->tmp);
}

static st_status accs_new(accs *a, const st_config *c) {
    const int L = c->n_layers, H = c->hidden_size;
    memset(a, 0, sizeof *a);
    size_t wmax = (size_t)H;
    a->hid = st_calloc((size_t)(L + 1) * H, sizeof(double));
    a->sq = st_calloc((size_t)L, sizeof(double *));
    a->esum = st_calloc((size_t)L, sizeof(double *));
    a->ereap = st_calloc((size_t)L, sizeof(double *));
    a->ecnt = st_calloc((size_t)L, sizeof(double *));
    if (!a->hid || !a->sq || !a->esum || !a->ereap || !a->ecnt) return ST_ERR_NOMEM;
    for (int l = 0; l < L; l++) {
        size_t n = 0;
        switch (c->pattern[l]) {
        case 'M': n = (size_t)c->mamba_num_heads * c->mamba_head_dim; break;
        case '*': n = (size_t)c->num_attention_heads * c->head_dim; break;
        case '-': n = (size_t)c->intermediate_size; break;
        case 'E': {
            size_t E = (size_t)c->n_routed_experts;
            n = c->n_shared_experts ? (size_t)c->moe_shared_expert_intermediate_size : 0;
            a->esum[l] = st_calloc(E * (size_t)c->moe_intermediate_size, sizeof(double));
            a->ereap[l] = st_calloc(E, sizeof(double));
            a->ecnt[l] = st_calloc(E, sizeof(double));
            if (!a->esum[l] || !a->ereap[l] || !a->ecnt[l]) return ST_ERR_NOMEM;
            break;
        }
        }
        if (n) {
            if (!(a->sq[l] = st_calloc(n, sizeof(double)))) return ST_ERR_NOMEM;
            if (n > wmax) wmax = n;
        }
    }
    a->tmp = st_malloc(sizeof(double) * wmax);
    return a->tmp ? ST_OK : ST_ERR_NOMEM;
}

/* acc[i] += (mean over t of |x[b·T+t][off+i]|)² for each sequence b < nb;
 * x rows of ld floats; tmp [W]. */
static void acc_seq(double *acc, const float *x, size_t ld, size_t off, int W, int nb, int T, double *tmp) {
    for (int b = 0; b < nb; b++) {
        memset(tmp, 0, sizeof(double) * (size_t)W);
        for (int t = 0; t < T; t++) {
            const float *row = x + ((size_t)b * T + t) * ld + off;
            for (int i = 0; i < W; i++) tmp[i] += fabsf(row[i]);
        }
        for (int i = 0; i < W; i++) {
            double mean = tmp[i] / T;
            acc[i] += mean * mean;
        }
    }
}

/* Add the activations of the last forward (rows of sequences b < nb). */
static void accumulate(accs *ac, const st_tmodel *m, int nb) {
    const st_config *c = &m->cfg;
    const st_tacts *A = m->a;
    const int L = c->n_layers, H = c->hidden_size, T = m->T;
    for (int l = 0; l < L; l++) {
        const lacts *a = &A->l[l];
        acc_seq(ac->hid + (size_t)l * H, a->u, (size_t)H, 0, H, nb, T, ac->tmp);
        switch (c->pattern[l]) {
        case 'M': {
            const int din = c->mamba_num_heads * c->mamba_head_dim, GN = c->n_groups * c->ssm_state_size;
            const size_t M = 2 * (size_t)din + 2 * (size_t)GN + (size_t)c->mamba_num_heads;
            acc_seq(ac->sq[l], a->zx, M, (size_t)din, din, nb, T, ac->tmp); /* x-part of in_proj, pre-conv */
            break;
        }
        case '*': {
            const int qd = c->num_attention_heads * c->head_dim;
            acc_seq(ac->sq[l], a->o, (size_t)qd, 0, qd, nb, T, ac->tmp);
            break;
        }
        case '-': acc_seq(ac->sq[l], a->ha, (size_t)c->intermediate_size, 0, c->intermediate_size, nb, T, ac->tmp); break;
        case 'E': {
            const int E = c->n_routed_experts, k = c->num_experts_per_tok, F = c->moe_intermediate_size;
            const double rsf = c->routed_scaling_factor > 0 ? c->routed_scaling_factor : 1.0;
            if (c->n_shared_experts) {
                const int Fs = c->moe_shared_expert_intermediate_size;
                acc_seq(ac->sq[l], a->ha, (size_t)Fs, 0, Fs, nb, T, ac->tmp);
            }
            for (int e = 0; e < E; e++) {
                double *es = ac->esum[l] + (size_t)e * F;
                for (int r = a->eoff[e]; r < a->eoff[e + 1]; r++) {
                    const int s = a->slot[r]; /* t·k + choice */
                    if (s / k / T >= nb) continue; /* a padding row of a short last batch */
                    const float *ea = a->ea + (size_t)r * F, *eo = a->eo + (size_t)r * H;
                    for (int j = 0; j < F; j++) es[j] += ea[j];
                    double n2 = 0;
                    for (int j = 0; j < H; j++) n2 += (double)eo[j] * eo[j];
                    ac->ereap[l][e] += (double)a->wt[s] / rsf * sqrt(n2);
                    ac->ecnt[l][e] += 1;
                }
            }
            break;
        }
        }
    }
    acc_seq(ac->hid + (size_t)L * H, A->hf, (size_t)H, 0, H, nb, T, ac->tmp);
}

static int all_finite(const st_rank_axis *a) {
    for (int i = 0; i < a->n; i++) if (!isfinite(a->score[i])) return 0;
    return 1;
}

/* Scores from the accumulators over n_seq sequences. */
static st_status finish(st_rank *r, const accs *ac, int n_seq) {
    const st_config *c = &r->cfg;
    const int L = c->n_layers, H = c->hidden_size;
    const double inv = 1.0 / n_seq;
    for (int i = 0; i < H; i++) {
        double s = 0;
        for (int k = 0; k <= L; k++) s += sqrt(ac->hid[(size_t)k * H + i] * inv);
        r->hidden.score[i] = s;
    }
    if (!all_finite(&r->hidden))
        return st_err(ST_ERR_FORMAT, "rank: non-finite norm outputs: the model produces NaN/Inf on the calibration tokens");
    for (int l = 0; l < L; l++) {
        st_rank_layer *Lr = &r->L[l];
        const double *sq = ac->sq[l];
        switch (Lr->type) {
        case 'M': {
            const int nh = c->mamba_num_heads, P = c->mamba_head_dim;
            for (int p = 0; p < P; p++) {
                double s = 0;
                for (int h = 0; h < nh; h++) s += sq[(size_t)h * P + p] * inv;
                Lr->mamba_dim.score[p] = sqrt(s);
            }
            for (int h = 0; h < nh; h++) {
                double s = 0;
                for (int p = 0; p < P; p++) s += sq[(size_t)h * P + p] * inv;
                Lr->mamba_heads.score[h] = sqrt(s);
            }
            break;
        }
        case '*': {
            const int nq = c->num_attention_heads, hd = c->head_dim;
            for (int i = 0; i < nq; i++) {
                double s = 0;
                for (int e = 0; e < hd; e++) s += sq[(size_t)i * hd + e] * inv;
                Lr->attn_heads.score[i] = sqrt(s);
            }
            break;
        }
        case '-':
            for (int j = 0; j < Lr->ffn.n; j++) Lr->ffn.score[j] = sqrt(sq[j] * inv);
            break;
        case 'E': {
            const int E = c->n_routed_experts, F = c->moe_intermediate_size;
            for (int j = 0; j < Lr->ffn.n; j++) Lr->ffn.score[j] = sqrt(sq[j] * inv);
            for (int e = 0; e < E; e++) {
                double n = ac->ecnt[l][e];
                Lr->experts.score[e] = n > 0 ? ac->ereap[l][e] / n : 0.0; /* never routed: 0 */
                for (int j = 0; j < F; j++) Lr->expert_ffn[e].score[j] = n > 0 ? ac->esum[l][(size_t)e * F + j] / n : 0.0;
            }
            break;
        }
        }
        int ok = all_finite(&Lr->mamba_heads) && all_finite(&Lr->mamba_dim) && all_finite(&Lr->attn_heads) &&
                 all_finite(&Lr->ffn) && all_finite(&Lr->experts);
        for (int e = 0; ok && Lr->expert_ffn && e < c->n_routed_experts; e++) ok = all_finite(&Lr->expert_ffn[e]);
        if (!ok)
            return st_err(ST_ERR_FORMAT, "rank: layer %d produces NaN/Inf activations on the calibration tokens", l);
    }
    return ST_OK;
}

st_status st_rank_score(st_rank *r, st_tmodel *m, const int32_t *tokens, int n_seq, int T, int B, int progress) {
    const st_config *c = &m->cfg;
    st_status rc = cfg_match(&r->cfg, c, "the training model");
    if (rc) return rc;
    if (n_seq <= 0 || T <= 0 || B <= 0) return st_err(ST_ERR_ARG, "rank: %d sequences of %d tokens, batch %d", n_seq, T, B);
    for (size_t i = 0; i < (size_t)n_seq * T; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return st_err(ST_ERR_RANGE, "rank: calibration token %zu is %d, outside the vocabulary [0, %d)", i, tokens[i],
                          c->vocab_size);
    if (B > n_seq) B = n_seq;
    if ((rc = st_tmodel_reserve(m, B, T))) return rc;
    accs ac;
    int32_t *tok = st_malloc(sizeof(int32_t) * (size_t)B * T); /* [B][T] one batch */
    rc = accs_new(&ac, c);
    if (!rc && !tok) rc = ST_ERR_NOMEM;
    if (rc) {
        accs_free(&ac, c->n_layers);
        free(tok);
        return st_err(ST_ERR_NOMEM, "rank: out of memory for the accumulators");
    }
    st_progress pb;
    if (progress) st_progress_begin(&pb, "rank: scoring", (double)n_seq * T, "tok");
    for (int s0 = 0; s0 < n_seq; s0 += B) {
        int nb = n_seq - s0 < B ? n_seq - s0 : B;
        memcpy(tok, tokens + (size_t)s0 * T, sizeof(int32_t) * (size_t)nb * T);
        for (int b = nb; b < B; b++) /* pad a short last batch; its rows are not counted */
            memcpy(tok + (size_t)b * T, tok, sizeof(int32_t) * (size_t)T);
        st_tmodel_forward(m, tok, NULL);
        accumulate(&ac, m, nb);
        if (progress) st_progress_update(&pb, (double)(s0 + nb) * T);
    }
    if (progress) st_progress_end(&pb);
    rc = finish(r, &ac, n_seq);
    accs_free(&ac, c->n_layers);
    free(tok);
    if (rc) return rc;
    r->n_tokens = (long)n_seq * T;
    r->n_seq = n_seq;
    r->seq_len = T;
    return st_rank_sort(r);
}

/* ------------------------------------------------------------ layer importance */

st_status st_rank_layers(st_rank *r, const st_model *m, const int32_t *tokens, int n_seq, int T, int progress) {
    const st_config *c = st_model_config(m);
    st_status rc = cfg_match(&r->cfg, c, st_model_dir(m));
    if (rc) return rc;
    if (n_seq <= 0 || T <= 0) return st_err(ST_ERR_ARG, "rank: %d sequences of %d tokens", n_seq, T);
    const int L = c->n_layers, V = c->vocab_size;
    st_widths *w = st_calloc(1, sizeof *w);
    st_budget **bs = st_calloc((size_t)L + 1, sizeof *bs); /* [0] full, [1 + j] layer j skipped */
    float *ref = st_malloc(sizeof(float) * (size_t)T * V), *out = st_malloc(sizeof(float) * (size_t)T * V); /* [T][V] */
    double *num = st_calloc((size_t)L, sizeof(double));
    st_state *st = NULL;
    if (!w || !bs || !ref || !out || !num) { rc = st_err(ST_ERR_NOMEM, "rank: out of memory"); goto done; }
    if ((rc = st_budget_new(m, w, &bs[0]))) goto done;
    for (int j = 0; j < L; j++) {
        w->n_skip = 1;
        w->skip_layers[0] = j;
        if ((rc = st_budget_new(m, w, &bs[1 + j]))) goto done;
    }
    if ((rc = st_state_new(m, T, &st))) goto done;
    st_progress pb;
    if (progress) st_progress_begin(&pb, "rank: layers", (double)n_seq * (L + 1), "fwd");
    double den = 0;
    for (int s = 0; s < n_seq; s++) {
        const int32_t *tk = tokens + (size_t)s * T;
        st_state_reset(st);
        if ((rc = st_forward(bs[0], st, tk, T, ref, 1))) goto done;
        for (size_t i = 0; i < (size_t)T * V; i++) den += (double)ref[i] * ref[i];
        for (int j = 0; j < L; j++) {
            st_state_reset(st);
            if ((rc = st_forward(bs[1 + j], st, tk, T, out, 1))) goto done;
            double e = 0;
            for (size_t i = 0; i < (size_t)T * V; i++) {
                double d = (double)ref[i] - out[i];
                e += d * d;
            }
            num[j] += e;
            if (progress) st_progress_update(&pb, (double)s * (L + 1) + j + 2);
        }
    }
    if (progress) st_progress_end(&pb);
    for (int j = 0; j < L; j++) r->L[j].importance = den > 0 ? num[j] / den : 0.0;
    r->n_layer_tokens = (long)n_seq * T;
done:
    st_state_free(st);
    if (bs)
        for (int j = 0; j <= L; j++) st_budget_free(bs[j]);
    free(bs); free(w); free(ref); free(out); free(num);
    return rc;
}

/* ------------------------------------------------------------ permutation */

typedef struct {
    float *tmp;       /* [bmax] one block   */
    uint8_t *seen;    /* [nmax]             */
} pscr;

/* Blocks i = 0..n-1 of blk floats at x + i·stride: block i ← old block
 * perm[i], in place by following the permutation's cycles. */
static void pblocks(const pscr *ps, float *x, int n, size_t blk, size_t stride, const int32_t *perm) {
    memset(ps->seen, 0, (size_t)n);
    for (int s = 0; s < n; s++) {
        if (ps->seen[s]) continue;
        ps->seen[s] = 1;
        if (perm[s] == s) continue;
        memcpy(ps->tmp, x + (size_t)s * stride, sizeof(float) * blk); /* old block s */
        int i = s;
        for (;;) {
            int j = perm[i];
            ps->seen[i] = 1;
            if (j == s) { memcpy(x + (size_t)i * stride, ps->tmp, sizeof(float) * blk); break; }
            memcpy(x + (size_t)i * stride, x + (size_t)j * stride, sizeof(float) * blk);
            i = j;
        }
    }
}

/* perm must be a permutation of [0, n) that keeps every index in its block
 * (l < 0: the global hidden axis). */
static st_status check_perm(const st_rank_axis *a, int n, const char *what, int l, uint8_t *seen) {
    char where[48] = "";
    if (l >= 0) snprintf(where, sizeof where, "layer %d ", l);
    if (a->n != n || !a->perm || a->groups <= 0 || n % a->groups)
        return st_err(ST_ERR_ARG, "rank: %s%s: axis of %d units in %d groups, the model has %d", where, what, a->n,
                      a->groups, n);
    memset(seen, 0, (size_t)n);
    int bs = n / a->groups;
    for (int i = 0; i < n; i++) {
        int p = a->perm[i];
        if (p < 0 || p >= n || seen[p] || p / bs != i / bs)
            return st_err(ST_ERR_ARG, "rank: %s%s: perm[%d] = %d is not a permutation within groups of %d", where, what, i,
                          p, bs);
        seen[p] = 1;
    }
    return ST_OK;
}

static st_status check_all(const st_tmodel *m, const st_rank *r, uint8_t *seen) {
    const st_config *c = &m->cfg;
    st_status rc = check_perm(&r->hidden, c->hidden_size, "hidden_size", -1, seen);
    for (int l = 0; !rc && l < c->n_layers; l++) {
        const st_rank_layer *L = &r->L[l];
        switch (c->pattern[l]) {
        case 'M':
            rc = check_perm(&L->mamba_heads, c->mamba_num_heads, "mamba_num_heads", l, seen);
            if (!rc && L->mamba_heads.groups != c->n_groups)
                rc = st_err(ST_ERR_ARG, "rank: layer %d: Mamba heads must be ranked within the %d groups", l, c->n_groups);
            if (!rc) rc = check_perm(&L->mamba_dim, c->mamba_head_dim, "mamba_head_dim", l, seen);
            break;
        case '*':
            rc = check_perm(&L->attn_heads, c->num_attention_heads, "num_attention_heads", l, seen);
            if (!rc && L->attn_heads.groups != c->num_key_value_heads)
                rc = st_err(ST_ERR_ARG, "rank: layer %d: query heads must be ranked within the %d KV groups", l,
                            c->num_key_value_heads);
            break;
        case '-': rc = check_perm(&L->ffn, c->intermediate_size, "intermediate_size", l, seen); break;
        case 'E':
            rc = check_perm(&L->experts, c->n_routed_experts, "n_routed_experts", l, seen);
            for (int e = 0; !rc && e < c->n_routed_experts; e++)
                rc = check_perm(&L->expert_ffn[e], c->moe_intermediate_size, "moe_intermediate_size", l, seen);
            if (!rc && c->n_shared_experts)
                rc = check_perm(&L->ffn, c->moe_shared_expert_intermediate_size, "moe_shared_expert_intermediate_size", l,
                                seen);
            break;
        }
    }
    return rc;
}

/* Permuting every tensor along every dim by the axis that dim follows
 * (src/model/schema.h): measure = 1 only sizes the scratch. */
typedef struct {
    st_tmodel *m;
    const st_rank *r;
    pscr ps;
    int32_t *map;        /* [din] Mamba (head, channel) → parent, of layer map_l */
    int map_l;
    int measure;
    size_t nmax, bmax;   /* widest block count, widest block (floats) */
} permuter;

/* The permutation dim d takes in layer l (e: the parent expert, for its
 * neurons) over blocks of *blk units; NULL: the dim stays. */
static const int32_t *dim_perm(permuter *P, st_dim d, int l, int e, int *blk) {
    const st_config *c = &P->m->cfg;
    const st_rank_layer *L = l >= 0 ? &P->r->L[l] : NULL;
    *blk = 1;
    switch (d) {
    case ST_DIM_HIDDEN: return P->r->hidden.perm;
    case ST_DIM_MAMBA_HEAD: return L->mamba_heads.perm;
    case ST_DIM_MAMBA_CHANNEL: {
        if (P->map_l != l && P->map) { /* heads move in whole, their channels by the shared head_dim ranking */
            const int32_t *pH = L->mamba_heads.perm, *pP = L->mamba_dim.perm;
            const int hP = c->mamba_head_dim;
            for (int h = 0; h < c->mamba_num_heads; h++)
                for (int q = 0; q < hP; q++) P->map[h * hP + q] = pH[h] * hP + pP[q];
            P->map_l = l;
        }
        return P->map;
    }
    case ST_DIM_Q_HEAD: *blk = c->head_dim; return L->attn_heads.perm;
    case ST_DIM_FFN: case ST_DIM_SHARED_FFN: return L->ffn.perm;
    case ST_DIM_EXPERT: return L->experts.perm;
    case ST_DIM_EXPERT_FFN: return e >= 0 ? L->expert_ffn[e].perm : NULL;
    default: return NULL; /* vocab, B/C groups, KV heads, conv taps */
    }
}

static st_status permute_one(void *ctx, const st_tspec *s, int l, int e_unused) {
    permuter *P = ctx;
    st_tmodel *m = P->m;
    const st_config *c = &m->cfg;
    int64_t sh[3];
    int nd = st_tspec_shape(s, c, NULL, 0, sh); /* per-expert specs: the [E][out][in] block */
    int idx = st_tmodel_index(m, s, l);
    if (idx < 0) return ST_OK;
    float *x = P->measure ? NULL : st_tw(m, idx);
    /* inner dims first: an expert's neurons move by that (parent) expert's
       ranking before the experts themselves move */
    for (int k = nd - 1; k >= 0; k--) {
        size_t outer = 1, inner = 1, per_e = 1;
        for (int i = 0; i < k; i++) outer *= (size_t)sh[i];
        for (int i = 1; i < k; i++) per_e *= (size_t)sh[i];
        for (int i = k + 1; i < nd; i++) inner *= (size_t)sh[i];
        st_dim part[5];
        int np = st_dim_parts(s->dim[k], part);
        int64_t off = 0;
        for (int q = 0; q < np; q++) {
            const int64_t len = st_dim_size(c, NULL, part[q]);
            for (size_t o = 0; o < outer; o++) {
                int e = s->dim[0] == ST_DIM_EXPERT && k > 0 ? (int)(o / per_e) : -1, blk;
                const int32_t *perm = dim_perm(P, part[q], l, e, &blk);
                if (!perm) break;
                if (P->measure) {
                    if ((size_t)(len / blk) > P->nmax) P->nmax = (size_t)(len / blk);
                    if ((size_t)blk * inner > P->bmax) P->bmax = (size_t)blk * inner;
                    break;
                }
                pblocks(&P->ps, x + (o * (size_t)sh[k] + (size_t)off) * inner, (int)(len / blk), (size_t)blk * inner,
                        (size_t)blk * inner, perm);
            }
            off += len;
        }
    }
    return ST_OK;
}

st_status st_rank_apply(st_tmodel *m, const st_rank *r) {
    const st_config *c = &m->cfg;
    st_status rc = cfg_match(&r->cfg, c, "the training model");
    if (rc) return rc;
    const int din = c->mamba_num_heads * c->mamba_head_dim;
    permuter P = {.m = m, .r = r, .map_l = -1, .measure = 1, .nmax = (size_t)axis_max_n(r), .bmax = 1};
    P.map = st_malloc(sizeof(int32_t) * (size_t)(din > 0 ? din : 1));
    if (!P.map) { rc = st_err(ST_ERR_NOMEM, "rank: out of memory"); goto done; }
    P.ps.seen = st_malloc(P.nmax);
    if (!P.ps.seen) { rc = st_err(ST_ERR_NOMEM, "rank: out of memory"); goto done; }
    if ((rc = check_all(m, r, P.ps.seen))) goto done; /* the perms must be valid before the map reads them */
    st_schema_foreach(c, ST_SCHEMA_STACKED, permute_one, &P);
    free(P.ps.seen);
    P.ps = (pscr){st_malloc(sizeof(float) * P.bmax), st_malloc(P.nmax)};
    if (!P.ps.tmp || !P.ps.seen) { rc = st_err(ST_ERR_NOMEM, "rank: out of memory"); goto done; }
    P.map_l = -1;
    P.measure = 0;
    rc = st_schema_foreach(c, ST_SCHEMA_STACKED, permute_one, &P);
done:
    free(P.ps.tmp); free(P.ps.seen); free(P.map);
    return rc;
}

/* ------------------------------------------------------------ importance.json */

/* layer importance: null when not computed */
static void sb_num(st_buf *b, double v) {
    if (v < 0 || !isfinite(v)) st_buf_printf(b, "null");
    else st_buf_printf(b, "%.7g", v);
}

/* {"groups": g, "scores": [new order], "perm": [parent index per new position]} */
static void sb_axis(st_buf *b, const st_rank_axis *a) {
    st_buf_printf(b, "{\"groups\": %d, \"scores\": [", a->groups);
    for (int i = 0; i < a->n; i++) st_buf_printf(b, "%s%.7g", i ? ", " : "", a->score[a->perm[i]]);
    st_buf_printf(b, "], \"perm\": [");
    for (int i = 0; i < a->n; i++) st_buf_printf(b, "%s%d", i ? ", " : "", a->perm[i]);
    st_buf_printf(b, "]}");
}

char *st_rank_json(const st_rank *r) {
    const st_config *c = &r->cfg;
    st_buf b = {0};
    st_buf_printf(&b, "{\n  \"format_version\": 1,\n");
    st_buf_printf(&b, "  \"calibration\": {\"tokens\": %ld, \"sequences\": %d, \"seq_len\": %d, \"layer_importance_tokens\": %ld},\n",
                  r->n_tokens, r->n_seq, r->seq_len, r->n_layer_tokens);
    st_buf_printf(&b, "  \"method\": \"per hook: mean |activation| over a sequence's positions, root-mean-square over sequences, "
               "summed over hooks; hidden_size: every RMSNorm output incl. the final norm; mamba_head_dim / "
               "mamba_num_heads: x-part of in_proj output, L2 over heads / over channels, heads ranked within groups; "
               "num_attention_heads: head outputs, L2 over head_dim, ranked within KV groups; intermediate_size, "
               "moe_shared_expert_intermediate_size: relu2 activations; moe_intermediate_size: mean relu2 activation "
               "over routed tokens, per expert; n_routed_experts: REAP; layer importance: normalised logit MSE with "
               "the layer skipped (depth not permuted)\",\n");
    st_buf_printf(&b, "  \"note\": \"scores are listed in the NEW (permuted) order; perm[i] is the parent index now at position i\",\n");
    st_buf_printf(&b, "  \"hidden_size\": ");
    sb_axis(&b, &r->hidden);
    st_buf_printf(&b, ",\n  \"layer_importance\": [");
    for (int l = 0; l < c->n_layers; l++) {
        st_buf_printf(&b, "%s", l ? ", " : "");
        sb_num(&b, r->L[l].importance);
    }
    st_buf_printf(&b, "],\n  \"layers\": [\n");
    for (int l = 0; l < c->n_layers; l++) {
        const st_rank_layer *L = &r->L[l];
        st_buf_printf(&b, "    {\"layer\": %d, \"type\": \"%c\", \"importance\": ", l, L->type);
        sb_num(&b, L->importance);
        switch (L->type) {
        case 'M':
            st_buf_printf(&b, ",\n     \"mamba_num_heads\": ");
            sb_axis(&b, &L->mamba_heads);
            st_buf_printf(&b, ",\n     \"mamba_head_dim\": ");
            sb_axis(&b, &L->mamba_dim);
            break;
        case '*':
            st_buf_printf(&b, ",\n     \"num_attention_heads\": ");
            sb_axis(&b, &L->attn_heads);
            break;
        case '-':
            st_buf_printf(&b, ",\n     \"intermediate_size\": ");
            sb_axis(&b, &L->ffn);
            break;
        case 'E':
            st_buf_printf(&b, ",\n     \"n_routed_experts\": ");
            sb_axis(&b, &L->experts);
            st_buf_printf(&b, ",\n     \"moe_intermediate_size\": [");
            for (int e = 0; e < c->n_routed_experts; e++) { /* in the new expert order */
                st_buf_printf(&b, "%s\n       ", e ? "," : "");
                sb_axis(&b, &L->expert_ffn[L->experts.perm[e]]);
            }
            st_buf_printf(&b, "]");
            if (c->n_shared_experts) {
                st_buf_printf(&b, ",\n     \"moe_shared_expert_intermediate_size\": ");
                sb_axis(&b, &L->ffn);
            }
            break;
        }
        st_buf_printf(&b, "}%s\n", l + 1 < c->n_layers ? "," : "");
    }
    st_buf_printf(&b, "  ]\n}\n");
    if (b.oom) { free(b.p); return NULL; }
    return b.p;
}

st_status st_rank_save(const st_tmodel *m, const st_rank *r, const char *dir, const char *src_dir, int force) {
    char *js = st_rank_json(r);
    if (!js) return st_err(ST_ERR_NOMEM, "rank: cannot build importance.json");
    st_outdir o;
    st_status rc = st_outdir_begin(&o, dir, force);
    if (rc) { free(js); return rc; }
    rc = st_tmodel_write_into(m, &o);
    if (!rc && src_dir) rc = st_outdir_copy_side_files(&o, src_dir);
    if (!rc) rc = st_outdir_write(&o, "importance.json", js, strlen(js));
    if (!rc) rc = st_outdir_commit(&o);
    if (rc) st_outdir_abort(&o);
    free(js);
    return rc;
}

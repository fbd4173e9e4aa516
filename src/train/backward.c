/*
 * backward.c — training forward and backward passes, one X_forward /
 * X_backward pair per layer type, batched over B sequences × T tokens
 * (BT = B·T rows). Same math as src/model/forward.c at full width with zero
 * initial conv / SSM state per sequence; docs/architecture.md §2.
 *
 * Gradients add into m->g (so micro-batches accumulate); the residual
 * stream's gradient dres is carried down the layers in place.
 *
 * Products go through st_matmul (F32 weights):
 *   forward  y  = x·Wᵀ                      st_matmul(W, x)
 *   input    dx = dy·W                      st_matmul(Wᵀ chunk, dy)   (Wᵀ built per OC rows)
 *   weight   dW += dyᵀ·x                    st_matmul(xᵀ, dyᵀ chunk)  (tokens = W's rows)
 * Transposes cost O(n·d) against the O(n·d·d') products.
 *
 * Elastic masks (st_tmodel_set_masks, docs/architecture.md §6.1): every product still runs
 * at full width; per sample, masks zero what the sliced model lacks (norms
 * over the active channels only), pi scales the masked points, and cut Mamba
 * heads / channels and attention heads are not run at all. Without masks
 * every line computes what it computed before (the masked branches are
 * separate, or multiply by an exact 1). dL/dpi sums go through per-row
 * partials (racc) added in a fixed order, like the weight gradients.
 */
#include "model/model.h"
#include "train/tacts.h"
#include "util/util.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OC 2048 /* output rows per transposed chunk (bounds the transpose scratch) */
#define SCAN_C 16 /* tokens per SSM checkpoint chunk in the scan backward */

static size_t rup(size_t n) { return (n + 15) & ~(size_t)15; }

/* ------------------------------------------------------------ activations */

void st_tacts_free(st_tacts *a) {
    if (!a) return;
    free(a->arena);
    free(a->l);
    free(a->mbuf); free(a->dpi); free(a->racc); free(a->dmix);
    free(a);
}

typedef struct { float *base; size_t used; } bump;
static float *take(bump *b, size_t n) {
    float *p = b->base ? b->base + b->used : NULL;
    b->used += rup(n);
    return p;
}

/* Widest product input and output (bounds the transpose buffers). */
static void tsizes(const st_config *c, size_t *in_max, size_t *oc) {
    size_t im = (size_t)c->hidden_size, om = (size_t)c->vocab_size;
#define MX(v, x) do { if ((size_t)(x) > v) v = (size_t)(x); } while (0)
    if (strchr(c->pattern, 'M')) {
        size_t din = (size_t)c->mamba_num_heads * c->mamba_head_dim, GN = (size_t)c->n_groups * c->ssm_state_size;
        MX(im, din);
        MX(om, 2 * din + 2 * GN + (size_t)c->mamba_num_heads);
    }
    if (strchr(c->pattern, '*')) {
        MX(im, (size_t)c->num_attention_heads * c->head_dim);
        MX(om, (size_t)c->num_attention_heads * c->head_dim);
    }
    if (strchr(c->pattern, '-')) { MX(im, c->intermediate_size); MX(om, c->intermediate_size); }
    if (strchr(c->pattern, 'E')) {
        MX(im, c->moe_intermediate_size); MX(im, c->moe_shared_expert_intermediate_size);
        MX(om, c->n_routed_experts); MX(om, c->moe_intermediate_size); MX(om, c->moe_shared_expert_intermediate_size);
    }
#undef MX
    *in_max = im;
    *oc = om < OC ? om : OC;
}

/* Scratch floats: transposes (tw, tx, tdy) + the biggest layer's
 * temporaries (mirrors the take() calls below). */
static size_t scratch_need(const st_tmodel *m, size_t BT, int T) {
    const st_config *c = &m->cfg;
    size_t H = (size_t)c->hidden_size, nth = (size_t)st_get_threads();
    size_t lay = 0;
    if (strchr(c->pattern, 'M')) {
        size_t nh = (size_t)c->mamba_num_heads, P = (size_t)c->mamba_head_dim, N = (size_t)c->ssm_state_size;
        size_t din = nh * P, GN = (size_t)c->n_groups * N, CV = din + 2 * GN, M = 2 * din + 2 * GN + nh;
        size_t nck = ((size_t)T + SCAN_C - 1) / SCAN_C;
        size_t s = rup(BT * M) + rup(BT * CV) + 2 * rup(BT * din) + rup(BT * nh) + 2 * rup(BT * nh * N) +
                   2 * rup((BT / (size_t)T) * nh) + nth * rup((nck + SCAN_C + 1) * P * N) + rup(din) + 64;
        if (s > lay) lay = s;
    }
    if (strchr(c->pattern, '*')) {
        size_t qd = (size_t)c->num_attention_heads * c->head_dim, kvd = (size_t)c->num_key_value_heads * c->head_dim;
        size_t s = 2 * rup(BT * qd) + 2 * rup(BT * kvd) + nth * rup((size_t)T) + 64;
        if (s > lay) lay = s;
    }
    if (strchr(c->pattern, '-') && rup(BT * (size_t)c->intermediate_size) > lay) lay = rup(BT * (size_t)c->intermediate_size);
    if (strchr(c->pattern, 'E')) {
        size_t E = (size_t)c->n_routed_experts, k = (size_t)c->num_experts_per_tok, F = (size_t)c->moe_intermediate_size;
        size_t Fs = (size_t)c->moe_shared_expert_intermediate_size;
        size_t s = rup(BT * E) + 3 * rup(BT * k * H) + rup(BT * k * F) + rup(BT * k) + rup(BT * (Fs + 1)) + 64;
        if (s > lay) lay = s;
    }
    size_t in_max, oc;
    tsizes(c, &in_max, &oc);
    return rup(in_max * oc) + rup(BT * in_max) + rup(BT * oc) + lay + 64;
}

/* Carve the activation arena (base NULL: count only). */
static size_t acts_plan(const st_tmodel *m, st_tacts *a, float *base, int B, int T) {
    const st_config *c = &m->cfg;
    const size_t BT = (size_t)B * T, H = (size_t)c->hidden_size;
    bump b = {base, 0};
    for (int l = 0; l < c->n_layers; l++) {
        lacts *L = &a->l[l];
        memset(L, 0, sizeof *L);
        L->res = take(&b, BT * H);
        L->u = take(&b, BT * H);
        L->rstd = take(&b, BT);
        switch (c->pattern[l]) {
        case 'M': {
            size_t nh = (size_t)c->mamba_num_heads, din = nh * c->mamba_head_dim, GN = (size_t)c->n_groups * c->ssm_state_size;
            L->zx = take(&b, BT * (2 * din + 2 * GN + nh));
            L->pre = take(&b, BT * (din + 2 * GN));
            L->xbc = take(&b, BT * (din + 2 * GN));
            L->dt = take(&b, BT * nh);
            L->y = take(&b, BT * din);
            L->gr = take(&b, BT * (size_t)c->n_groups);
            L->vo = take(&b, BT * din);
            break;
        }
        case '*': {
            size_t qd = (size_t)c->num_attention_heads * c->head_dim, kvd = (size_t)c->num_key_value_heads * c->head_dim;
            L->q = take(&b, BT * qd);
            L->k = take(&b, BT * kvd);
            L->v = take(&b, BT * kvd);
            L->att = take(&b, (size_t)B * c->num_attention_heads * T * T);
            L->o = take(&b, BT * qd);
            break;
        }
        case '-':
            L->h = take(&b, BT * (size_t)c->intermediate_size);
            L->ha = take(&b, BT * (size_t)c->intermediate_size);
            break;
        case 'E': {
            size_t E = (size_t)c->n_routed_experts, k = (size_t)c->num_experts_per_tok;
            size_t F = (size_t)c->moe_intermediate_size, Fs = (size_t)c->moe_shared_expert_intermediate_size;
            L->lg = take(&b, BT * E);
            L->idx = (int32_t *)take(&b, BT * k);
            L->wt = take(&b, BT * k);
            L->slot = (int32_t *)take(&b, BT * k);
            L->eoff = (int32_t *)take(&b, E + 1);
            L->eh = take(&b, BT * k * F);
            L->ea = take(&b, BT * k * F);
            L->eo = take(&b, BT * k * H);
            if (c->n_shared_experts) {
                L->h = take(&b, BT * Fs);
                L->ha = take(&b, BT * Fs);
            }
            break;
        }
        }
    }
    a->xf = take(&b, BT * H);
    a->rstdf = take(&b, BT);
    a->hf = take(&b, BT * H);
    a->logits = take(&b, BT * (size_t)c->vocab_size);
    a->rowloss = take(&b, BT);
    a->tok = (int32_t *)take(&b, BT);
    a->tgt = (int32_t *)take(&b, BT);
    a->dres = take(&b, BT * H);
    a->du = take(&b, BT * H);
    a->scr_n = scratch_need(m, BT, T);
    a->scr = take(&b, a->scr_n);
    return b.used;
}

st_status st_tmodel_reserve(st_tmodel *m, int B, int T) {
    if (B <= 0 || T <= 0) return st_err(ST_ERR_ARG, "train: batch %d × seq %d", B, T);
    if (m->a && m->B == B && m->T == T) return ST_OK;
    st_tacts_free(m->a);
    m->a = NULL;
    st_tacts *a = st_calloc(1, sizeof *a);
    if (!a) return ST_ERR_NOMEM;
    a->l = st_calloc((size_t)m->cfg.n_layers, sizeof *a->l);
    if (!a->l) { free(a); return ST_ERR_NOMEM; }
    size_t n = acts_plan(m, a, NULL, B, T);
    a->arena = st_aligned_alloc(n * sizeof(float));
    if (!a->arena) {
        st_tacts_free(a);
        return st_err(ST_ERR_NOMEM, "train: activations for %d × %d tokens need %.1f GiB", B, T,
                      (double)n * 4 / (1 << 30));
    }
    a->n = n;
    acts_plan(m, a, a->arena, B, T);
    a->dpi = st_calloc((size_t)B * ST_N_AX, sizeof(double));
    if (!a->dpi) { st_tacts_free(a); return ST_ERR_NOMEM; }
    m->a = a;
    m->B = B;
    m->T = T;
    return ST_OK;
}

const float *st_tmodel_logits(const st_tmodel *m) { return m->a ? m->a->logits : NULL; }
const int32_t *st_tmodel_route(const st_tmodel *m, int l) {
    return m->a && l >= 0 && l < m->cfg.n_layers ? m->a->l[l].idx : NULL;
}
void st_tmodel_zero_grad(st_tmodel *m) {
    memset(m->g, 0, m->n_w * sizeof(float));
    if (m->a) memset(m->a->dpi, 0, sizeof(double) * (size_t)m->B * ST_N_AX);
}
void st_tmodel_load_reset(st_tmodel *m) {
    memset(m->load, 0, sizeof(double) * (size_t)m->cfg.n_layers * (size_t)(m->cfg.n_routed_experts > 0 ? m->cfg.n_routed_experts : 1));
}

/* ------------------------------------------------------------ products */

/* y[n][out] (=|+=) x[n][in] · W[out][in]ᵀ  (x rows ldx apart, y rows ldy apart) */
static void mm(const float *W, int out, int in, const float *x, int ldx, float *y, int ldy, int n, int acc) {
    st_mat w = {.dt = ST_DT_F32, .data = W, .rows = out, .cols = in, .scale = 1.0f};
    st_span rs = {0, out}, cs = {0, in};
    st_matmul(&w, &rs, 1, &cs, 1, x, ldx, y, ldy, n, acc);
}

/* dst[c][r] = src[r][c] for r < R, c < C (src rows lds apart, dst rows ldd apart) */
static void transpose(const float *src, int lds, float *dst, int ldd, int R, int C) {
#pragma omp parallel for collapse(2) schedule(static) num_threads(st_get_threads()) if ((size_t)R * C > 65536)
    for (int r0 = 0; r0 < R; r0 += 32)
        for (int c0 = 0; c0 < C; c0 += 32) {
            int r1 = r0 + 32 < R ? r0 + 32 : R, c1 = c0 + 32 < C ? c0 + 32 : C;
            for (int c = c0; c < c1; c++)
                for (int r = r0; r < r1; r++) dst[(size_t)c * ldd + r] = src[(size_t)r * lds + c];
        }
}

typedef struct { float *tw, *tx, *tdy; } tbufs;

/* dx[n][in] (=|+=) dy[n][out] · W[out][in] */
static void mm_dx(const tbufs *tb, const float *W, int out, int in, const float *dy, int lddy, float *dx, int lddx, int n,
                  int acc) {
    if (n <= 0) return;
    for (int o0 = 0; o0 < out; o0 += OC) {
        int c = out - o0 < OC ? out - o0 : OC;
        transpose(W + (size_t)o0 * in, in, tb->tw, c, c, in); /* tw[in][c] = W[o0+j][i] */
        mm(tb->tw, in, c, dy + o0, lddy, dx, lddx, n, acc || o0 > 0);
    }
}

/* dW[out][in] += dy[n][out]ᵀ · x[n][in] */
static void mm_dw(const tbufs *tb, const float *dy, int lddy, const float *x, int ldx, float *dW, int out, int in, int n) {
    if (n <= 0) return;
    transpose(x, ldx, tb->tx, n, n, in); /* tx[in][n] */
    for (int o0 = 0; o0 < out; o0 += OC) {
        int c = out - o0 < OC ? out - o0 : OC;
        transpose(dy + o0, lddy, tb->tdy, n, n, c); /* tdy[c][n] */
        mm(tb->tx, in, n, tb->tdy, n, dW + (size_t)o0 * in, in, c, 1);
    }
}

/* ------------------------------------------------------------ small ops */

/* the forward ops are kernels (kernels.h: st_rmsnorm, st_gated_rmsnorm,
 * st_conv_chunk, st_moe_route, st_relu2, ...); their derivatives live here */
static inline float dsilu(float x) { float s = st_sigmoidf(x); return s * (1.0f + x * (1.0f - s)); }

/* RMSNorm rows: y = w ⊙ x · r, r = 1/sqrt(mean(x²) + eps); x, y: [n][H] */
static void rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, int n, int H, float eps) {
#pragma omp parallel for schedule(static) num_threads(st_get_threads()) if ((size_t)n * H > 32768)
    for (int t = 0; t < n; t++) rstd[t] = st_rmsnorm(y + (size_t)t * H, x + (size_t)t * H, w, H, eps);
}

/* dx += ∂/∂x, dw += ∂/∂w of the RMSNorm above given dy [n][H] */
static void rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *rstd, const float *w,
                             int n, int H) {
#pragma omp parallel for schedule(static) num_threads(st_get_threads()) if ((size_t)n * H > 32768)
    for (int t = 0; t < n; t++) {
        const float *xr = x + (size_t)t * H, *g = dy + (size_t)t * H;
        float r = rstd[t], *d = dx + (size_t)t * H;
        double dot = 0;
        for (int i = 0; i < H; i++) dot += (double)g[i] * w[i] * xr[i];
        float c = (float)(dot / H) * r * r;
        for (int i = 0; i < H; i++) d[i] += r * (g[i] * w[i] - xr[i] * c);
    }
    for (int t = 0; t < n; t++) { /* serial: a fixed summation order (determinism) */
        const float *xr = x + (size_t)t * H, *g = dy + (size_t)t * H;
        float r = rstd[t];
        for (int i = 0; i < H; i++) dw[i] += g[i] * xr[i] * r;
    }
}

/* ------------------------------------------------------------ elastic masks (row t is sample t / T) */

#define NO_LAYER 64 /* a layer index no skip bit names (mask_rows of the embedding) */
static inline int skips(const st_tmask *M, int l) { return l < 64 && (M->skip >> l & 1u); }

/* Masked RMSNorm: normalise over the sample's first h = w[HIDDEN] channels
 * (the sliced model's RMS), y = pi·w⊙x·r there and 0 beyond. */
static void rmsnorm_forward_m(float *y, float *rstd, const float *x, const float *w, int n, int H, float eps,
                              const st_tmask *ms, int T) {
#pragma omp parallel for schedule(static) num_threads(st_get_threads()) if ((size_t)n * H > 32768)
    for (int t = 0; t < n; t++) {
        const st_tmask *M = &ms[t / T];
        const int h = M->w[ST_AX_HIDDEN];
        const float pi = M->pi[ST_AX_HIDDEN];
        float *yr = y + (size_t)t * H;
        rstd[t] = st_rmsnorm(yr, x + (size_t)t * H, w, h, eps);
        for (int i = 0; i < h; i++) yr[i] *= pi;
        for (int i = h; i < H; i++) yr[i] = 0;
    }
}

/* Backward of rmsnorm_forward_m; dpi[b][HIDDEN] += Σ dy·(w⊙x·r) over the
 * active channels (racc [n]: per-row partials, summed in row order). */
static void rmsnorm_backward_m(float *dx, float *dw, const float *dy, const float *x, const float *rstd, const float *w,
                               int n, int H, const st_tmask *ms, int T, double *racc, double *dpi) {
#pragma omp parallel for schedule(static) num_threads(st_get_threads()) if ((size_t)n * H > 32768)
    for (int t = 0; t < n; t++) {
        const st_tmask *M = &ms[t / T];
        const int h = M->w[ST_AX_HIDDEN];
        const float pi = M->pi[ST_AX_HIDDEN];
        const float *xr = x + (size_t)t * H, *g = dy + (size_t)t * H;
        float r = rstd[t], *d = dx + (size_t)t * H;
        double dot = 0, dp = 0;
        for (int i = 0; i < h; i++) {
            dot += (double)(g[i] * pi) * w[i] * xr[i];
            dp += (double)g[i] * (w[i] * (xr[i] * r));
        }
        float c = (float)(dot / h) * r * r;
        for (int i = 0; i < h; i++) d[i] += r * (g[i] * pi * w[i] - xr[i] * c);
        racc[t] = dp;
    }
    for (int t = 0; t < n; t++) { /* serial: a fixed summation order (determinism) */
        const st_tmask *M = &ms[t / T];
        const int h = M->w[ST_AX_HIDDEN];
        const float pi = M->pi[ST_AX_HIDDEN];
        const float *xr = x + (size_t)t * H, *g = dy + (size_t)t * H;
        float r = rstd[t];
        for (int i = 0; i < h; i++) dw[i] += g[i] * pi * xr[i] * r;
        dpi[(size_t)(t / T) * ST_N_AX + ST_AX_HIDDEN] += racc[t];
    }
}

/* dst = src with the sample's inactive hidden channels and the rows of
 * samples that skip layer l at 0 (mixer output mask; in place if dst == src). */
static void mask_rows(float *dst, const float *src, int n, int H, const st_tmask *ms, int T, int l) {
#pragma omp parallel for schedule(static) num_threads(st_get_threads()) if ((size_t)n * H > 32768)
    for (int t = 0; t < n; t++) {
        const st_tmask *M = &ms[t / T];
        const int h = skips(M, l) ? 0 : M->w[ST_AX_HIDDEN];
        float *d = dst + (size_t)t * H;
        if (d != src + (size_t)t * H) memcpy(d, src + (size_t)t * H, sizeof(float) * (size_t)h);
        memset(d + h, 0, sizeof(float) * (size_t)(H - h));
    }
}

/* ------------------------------------------------------------ Mamba-2 */

typedef struct { int H, nh, P, N, G, K, R, din, GN, CV, M; } mdims;
static mdims mamba_dims(const st_config *c) {
    mdims d = {c->hidden_size, c->mamba_num_heads, c->mamba_head_dim, c->ssm_state_size, c->n_groups, c->conv_kernel, 0, 0, 0, 0, 0};
    d.R = d.nh / d.G;
    d.din = d.nh * d.P;
    d.GN = d.G * d.N;
    d.CV = d.din + 2 * d.GN;
    d.M = 2 * d.din + 2 * d.GN + d.nh;
    return d;
}

/* Under masks: does sample M keep Mamba head h (the first w/G of each
 * group's R heads) in layer l? */
static inline int mamba_kept(const st_tmask *M, int l, int h, const mdims *d) {
    return !skips(M, l) && h % d->R < M->w[ST_AX_MAMBA_HEADS] / d->G;
}

/* u [BT][H] → out [BT][H] */
static void mamba_forward(st_tmodel *m, int l, const st_tlayer *Lp, lacts *a, float *out, int B, int T) {
    const st_config *c = &m->cfg;
    const st_tmask *ms = m->a->mask;
    const mdims d = mamba_dims(c);
    const int BT = B * T;
    const float *Win = st_tw(m, Lp->in_proj), *cw = st_tw(m, Lp->conv_w);
    const float *cb = Lp->conv_b >= 0 ? st_tw(m, Lp->conv_b) : NULL;
    const float *dtb = st_tw(m, Lp->dt_bias), *Alog = st_tw(m, Lp->A_log), *Dp = st_tw(m, Lp->D), *gn = st_tw(m, Lp->gnorm);
    mm(Win, d.M, d.H, a->u, d.H, a->zx, d.M, BT, 0);

    /* causal depthwise conv over xBC (st_conv_chunk, the inference pass's
       conv), zero history per sequence, then SiLU; pre keeps the conv output */
#pragma omp parallel for collapse(2) schedule(static) num_threads(st_get_threads())
    for (int b = 0; b < B; b++)
        for (int ch = 0; ch < d.CV; ch++) {
            float hist[64] = {0};
            const size_t r0 = (size_t)b * T;
            st_conv_chunk(hist, d.K, cw + (size_t)ch * d.K, cb ? cb[ch] : 0.0f, a->zx + r0 * d.M + d.din + ch, d.M, T,
                          a->xbc + r0 * d.CV + ch, a->pre + r0 * d.CV + ch, d.CV);
        }
    for (int t = 0; t < BT; t++)
        st_softplus_clamp(a->dt + (size_t)t * d.nh, a->zx + (size_t)t * d.M + 2 * d.din + 2 * d.GN, dtb, d.nh,
                          c->time_step_limit_min, c->time_step_limit_max);
    /* selective scan per (sequence, head): S = S·exp(dt·A) + dt·x⊗B ; y = S·C + D·x */
    const int nth = st_get_threads();
    float *scr = m->a->scr;
#pragma omp parallel for schedule(static) num_threads(nth)
    for (int bh = 0; bh < B * d.nh; bh++) {
        int b = bh / d.nh, h = bh % d.nh, g = h / d.R;
        int Pb = d.P; /* channels kept: each channel's state is independent, so the rest are not run */
        if (ms) {
            if (!mamba_kept(&ms[b], l, h, &d)) {
                for (int t = 0; t < T; t++) memset(a->y + ((size_t)b * T + t) * d.din + (size_t)h * d.P, 0, sizeof(float) * d.P);
                continue;
            }
            Pb = ms[b].w[ST_AX_MAMBA_DIM];
        }
        float *S = scr + (size_t)omp_get_thread_num() * rup((size_t)d.P * d.N); /* [P][N] */
        memset(S, 0, sizeof(float) * (size_t)d.P * d.N);
        float A = -expf(Alog[h]), Dh = Dp[h];
        for (int t = 0; t < T; t++) {
            size_t r = (size_t)b * T + t;
            const float *xr = a->xbc + r * d.CV;
            const float *x = xr + (size_t)h * d.P, *Bv = xr + d.din + (size_t)g * d.N, *Cv = xr + d.din + d.GN + (size_t)g * d.N;
            float dtv = a->dt[r * d.nh + h], dA = expf(dtv * A);
            float *yo = a->y + r * d.din + (size_t)h * d.P;
            for (int p = 0; p < Pb; p++) {
                float *Sp = S + (size_t)p * d.N, dx = dtv * x[p], acc = 0;
                for (int n = 0; n < d.N; n++) {
                    Sp[n] = Sp[n] * dA + dx * Bv[n];
                    acc += Sp[n] * Cv[n];
                }
                yo[p] = acc + Dh * x[p];
            }
            for (int p = Pb; p < d.P; p++) yo[p] = 0;
        }
    }
    /* gate, then RMSNorm per group of din/G channels */
    const int gsz = d.din / d.G;
    if (ms) {
        /* entries not kept are 0 before the norm; each group normalises over
           its (w/G)·wd kept entries; the output is scaled by pi[HEADS]·pi[DIM] */
#pragma omp parallel for schedule(static) num_threads(nth) if ((size_t)BT * d.din > 32768)
        for (int t = 0; t < BT; t++) {
            const st_tmask *M = &ms[t / T];
            const int Pk = M->w[ST_AX_MAMBA_DIM], nact = M->w[ST_AX_MAMBA_HEADS] / d.G * Pk;
            const float s = M->pi[ST_AX_MAMBA_HEADS] * M->pi[ST_AX_MAMBA_DIM];
            const float *yr = a->y + (size_t)t * d.din, *z = a->zx + (size_t)t * d.M;
            float *v = a->vo + (size_t)t * d.din;
            for (int h = 0; h < d.nh; h++) {
                const size_t j = (size_t)h * d.P;
                const int pk = mamba_kept(M, l, h, &d) ? Pk : 0;
                st_silu_mul(v + j, yr + j, z + j, (size_t)pk);
                memset(v + j + pk, 0, sizeof(float) * (size_t)(d.P - pk));
            }
            st_rmsnorm_groups(v, d.G, gsz, nact, gn, c->norm_eps, a->gr + (size_t)t * d.G);
            for (int j = 0; j < d.din; j++) v[j] *= s;
        }
        mm(st_tw(m, Lp->out_proj), d.H, d.din, a->vo, d.din, out, d.H, BT, 0);
        return;
    }
#pragma omp parallel for schedule(static) num_threads(nth) if ((size_t)BT * d.din > 32768)
    for (int t = 0; t < BT; t++) {
        st_gated_rmsnorm(a->vo + (size_t)t * d.din, a->y + (size_t)t * d.din, a->zx + (size_t)t * d.M, d.G, gsz, gsz, gn,
                         c->norm_eps, a->gr + (size_t)t * d.G);
    }
    mm(st_tw(m, Lp->out_proj), d.H, d.din, a->vo, d.din, out, d.H, BT, 0);
}

/* dout [BT][H] → du [BT][H] (overwritten); weight grads added. */
static void mamba_backward(st_tmodel *m, int l, const st_tlayer *Lp, lacts *a, const float *dout, float *du, int B, int T,
                           const tbufs *tb, bump *sb) {
    const st_config *c = &m->cfg;
    const mdims d = mamba_dims(c);
    const st_tmask *ms = m->a->mask;
    const int BT = B * T, nth = st_get_threads();
    const float *Win = st_tw(m, Lp->in_proj), *cw = st_tw(m, Lp->conv_w), *Alog = st_tw(m, Lp->A_log);
    const float *dtb = st_tw(m, Lp->dt_bias), *Dp = st_tw(m, Lp->D), *gn = st_tw(m, Lp->gnorm);
    float *dzx = take(sb, (size_t)BT * d.M);    /* [BT][M]   */
    float *dxbc = take(sb, (size_t)BT * d.CV);  /* [BT][CV]  */
    float *dvo = take(sb, (size_t)BT * d.din);  /* [BT][din] */
    float *dy = take(sb, (size_t)BT * d.din);   /* [BT][din] */
    float *ddt = take(sb, (size_t)BT * d.nh);   /* [BT][nh]  */
    float *dBh = take(sb, (size_t)BT * d.nh * d.N), *dCh = take(sb, (size_t)BT * d.nh * d.N); /* [BT][nh][N] per head */
    float *dAp = take(sb, (size_t)B * d.nh), *dDp = take(sb, (size_t)B * d.nh); /* [B][nh] partials */
    const int nck = (T + SCAN_C - 1) / SCAN_C;
    const size_t PN = (size_t)d.P * d.N, per = rup(((size_t)nck + SCAN_C + 1) * PN);
    float *tbuf = take(sb, (size_t)nth * per);
    float *dgn = take(sb, (size_t)d.din);

    /* out_proj */
    mm_dw(tb, dout, d.H, a->vo, d.din, st_tg(m, Lp->out_proj), d.H, d.din, BT);
    mm_dx(tb, st_tw(m, Lp->out_proj), d.H, d.din, dout, d.H, dvo, d.din, BT, 0);

    /* gated grouped RMSNorm: v = y·silu(z); vn = v·r; out = vn·w */
    const int gsz = d.din / d.G;
    memset(dgn, 0, sizeof(float) * (size_t)d.din);
    memset(dzx, 0, sizeof(float) * (size_t)BT * d.M);
    if (ms) {
        /* masked: out = pi_h·pi_d·K·vn·w over the kept entries K, the group
           mean over their count; dpi_h = pi_d·Σ dout·vn·w (likewise dpi_d) */
        double *racc = m->a->racc, *dpi = m->a->dpi;
#pragma omp parallel for schedule(static) num_threads(nth) if ((size_t)BT * d.din > 32768)
        for (int t = 0; t < BT; t++) {
            const st_tmask *M = &ms[t / T];
            const int Pk = M->w[ST_AX_MAMBA_DIM], nact = M->w[ST_AX_MAMBA_HEADS] / d.G * Pk;
            const float s = M->pi[ST_AX_MAMBA_HEADS] * M->pi[ST_AX_MAMBA_DIM];
            const float *yr = a->y + (size_t)t * d.din, *z = a->zx + (size_t)t * d.M, *go = dvo + (size_t)t * d.din;
            float *dyr = dy + (size_t)t * d.din, *dz = dzx + (size_t)t * d.M;
            double dp = 0;
            for (int g = 0; g < d.G; g++) {
                float r = a->gr[(size_t)t * d.G + g];
                double dot = 0;
                for (int h = g * d.R; h < (g + 1) * d.R; h++) {
                    if (!mamba_kept(M, l, h, &d)) continue;
                    for (int j = h * d.P; j < h * d.P + Pk; j++)
                        dot += (double)(go[j] * s) * gn[j] * (yr[j] * st_siluf(z[j]) * r);
                }
                float cdot = (float)(dot / nact);
                for (int h = g * d.R; h < (g + 1) * d.R; h++) {
                    int pk = mamba_kept(M, l, h, &d) ? Pk : 0;
                    for (int p = 0; p < d.P; p++) {
                        int j = h * d.P + p;
                        if (p >= pk) { dyr[j] = 0; continue; }
                        float sz = st_siluf(z[j]), vn = yr[j] * sz * r;
                        float dv = r * (go[j] * s * gn[j] - vn * cdot);
                        dyr[j] = dv * sz;
                        dz[j] = dv * yr[j] * dsilu(z[j]);
                        dp += (double)go[j] * (vn * gn[j]);
                    }
                }
            }
            racc[t] = dp;
        }
        for (int t = 0; t < BT; t++) { /* serial: fixed order */
            const st_tmask *M = &ms[t / T];
            const int Pk = M->w[ST_AX_MAMBA_DIM];
            const float s = M->pi[ST_AX_MAMBA_HEADS] * M->pi[ST_AX_MAMBA_DIM];
            const float *yr = a->y + (size_t)t * d.din, *z = a->zx + (size_t)t * d.M, *go = dvo + (size_t)t * d.din;
            for (int h = 0; h < d.nh; h++) {
                if (!mamba_kept(M, l, h, &d)) continue;
                float r = a->gr[(size_t)t * d.G + h / d.R];
                for (int j = h * d.P; j < h * d.P + Pk; j++) dgn[j] += go[j] * s * yr[j] * st_siluf(z[j]) * r;
            }
            double *dq = dpi + (size_t)(t / T) * ST_N_AX;
            dq[ST_AX_MAMBA_HEADS] += racc[t] * M->pi[ST_AX_MAMBA_DIM];
            dq[ST_AX_MAMBA_DIM] += racc[t] * M->pi[ST_AX_MAMBA_HEADS];
        }
    } else {
#pragma omp parallel for schedule(static) num_threads(nth) if ((size_t)BT * d.din > 32768)
    for (int t = 0; t < BT; t++) {
        const float *yr = a->y + (size_t)t * d.din, *z = a->zx + (size_t)t * d.M, *go = dvo + (size_t)t * d.din;
        float *dyr = dy + (size_t)t * d.din, *dz = dzx + (size_t)t * d.M;
        for (int g = 0; g < d.G; g++) {
            float r = a->gr[(size_t)t * d.G + g];
            double dot = 0;
            for (int j = g * gsz; j < (g + 1) * gsz; j++) dot += (double)go[j] * gn[j] * (yr[j] * st_siluf(z[j]) * r);
            float cdot = (float)(dot / gsz);
            for (int j = g * gsz; j < (g + 1) * gsz; j++) {
                float sz = st_siluf(z[j]), vn = yr[j] * sz * r;
                float dv = r * (go[j] * gn[j] - vn * cdot);
                dyr[j] = dv * sz;
                dz[j] = dv * yr[j] * dsilu(z[j]);
            }
        }
    }
    for (int t = 0; t < BT; t++) { /* serial: fixed order */
        const float *yr = a->y + (size_t)t * d.din, *z = a->zx + (size_t)t * d.M, *go = dvo + (size_t)t * d.din;
        for (int g = 0; g < d.G; g++) {
            float r = a->gr[(size_t)t * d.G + g];
            for (int j = g * gsz; j < (g + 1) * gsz; j++) dgn[j] += go[j] * yr[j] * st_siluf(z[j]) * r;
        }
    }
    }
    float *gdgn = st_tg(m, Lp->gnorm);
    for (int j = 0; j < d.din; j++) gdgn[j] += dgn[j];

    /* selective scan backward per (sequence, head), states recomputed from
       checkpoints every SCAN_C tokens (no [T][P][N] activations kept) */
    memset(dxbc, 0, sizeof(float) * (size_t)BT * d.CV);
#pragma omp parallel for schedule(static) num_threads(nth)
    for (int bh = 0; bh < B * d.nh; bh++) {
        int b = bh / d.nh, h = bh % d.nh, g = h / d.R;
        float *ck = tbuf + (size_t)omp_get_thread_num() * per; /* [nck][P][N] state before each chunk */
        float *cs = ck + (size_t)nck * PN;                    /* [SCAN_C][P][N] states inside a chunk */
        float *dS = cs + (size_t)SCAN_C * PN;                 /* [P][N] */
        const float A = -expf(Alog[h]), Dh = Dp[h];
        int Pb = d.P; /* channels kept (the others have dy = 0 and independent states) */
        if (ms) {
            if (!mamba_kept(&ms[b], l, h, &d)) { /* dy = 0: no gradient through this head */
                for (int t = 0; t < T; t++) {
                    size_t r = (size_t)b * T + t;
                    ddt[r * d.nh + h] = 0;
                    memset(dBh + (r * d.nh + h) * d.N, 0, sizeof(float) * d.N);
                    memset(dCh + (r * d.nh + h) * d.N, 0, sizeof(float) * d.N);
                }
                dAp[(size_t)b * d.nh + h] = 0;
                dDp[(size_t)b * d.nh + h] = 0;
                continue;
            }
            Pb = ms[b].w[ST_AX_MAMBA_DIM];
        }
#define XR(t) (a->xbc + ((size_t)b * T + (t)) * d.CV)
        /* forward to the checkpoints */
        float *S = dS; /* dS doubles as the running state here */
        memset(S, 0, sizeof(float) * PN);
        for (int t = 0; t < T; t++) {
            if (t % SCAN_C == 0) memcpy(ck + (size_t)(t / SCAN_C) * PN, S, sizeof(float) * PN);
            const float *x = XR(t) + (size_t)h * d.P, *Bv = XR(t) + d.din + (size_t)g * d.N;
            float dtv = a->dt[((size_t)b * T + t) * d.nh + h], dA = expf(dtv * A);
            for (int p = 0; p < Pb; p++)
                for (int n = 0; n < d.N; n++) S[(size_t)p * d.N + n] = S[(size_t)p * d.N + n] * dA + dtv * x[p] * Bv[n];
        }
        memset(dS, 0, sizeof(float) * PN);
        double dAh = 0, dDh = 0;
        for (int c0 = (nck - 1) * SCAN_C; c0 >= 0; c0 -= SCAN_C) {
            int len = T - c0 < SCAN_C ? T - c0 : SCAN_C;
            for (int i = 0; i < len; i++) { /* recompute states S_{c0+i} */
                const float *Sp = i ? cs + (size_t)(i - 1) * PN : ck + (size_t)(c0 / SCAN_C) * PN;
                float *So = cs + (size_t)i * PN;
                int t = c0 + i;
                const float *x = XR(t) + (size_t)h * d.P, *Bv = XR(t) + d.din + (size_t)g * d.N;
                float dtv = a->dt[((size_t)b * T + t) * d.nh + h], dA = expf(dtv * A);
                for (int p = 0; p < Pb; p++)
                    for (int n = 0; n < d.N; n++) So[(size_t)p * d.N + n] = Sp[(size_t)p * d.N + n] * dA + dtv * x[p] * Bv[n];
            }
            for (int i = len - 1; i >= 0; i--) {
                int t = c0 + i;
                size_t r = (size_t)b * T + t;
                const float *St = cs + (size_t)i * PN;
                const float *Sp = i ? cs + (size_t)(i - 1) * PN : ck + (size_t)(c0 / SCAN_C) * PN;
                const float *x = XR(t) + (size_t)h * d.P, *Bv = XR(t) + d.din + (size_t)g * d.N;
                const float *Cv = XR(t) + d.din + d.GN + (size_t)g * d.N;
                const float *gy = dy + r * d.din + (size_t)h * d.P;
                float dtv = a->dt[r * d.nh + h], dA = expf(dtv * A);
                float *dx = dxbc + r * d.CV + (size_t)h * d.P;
                float *dB = dBh + (r * d.nh + h) * d.N, *dC = dCh + (r * d.nh + h) * d.N;
                for (int n = 0; n < d.N; n++) { dB[n] = 0; dC[n] = 0; }
                double dd = 0, da = 0;
                for (int p = 0; p < Pb; p++) {
                    float *dSp = dS + (size_t)p * d.N;
                    const float *Stp = St + (size_t)p * d.N, *Spp = Sp + (size_t)p * d.N;
                    float sb_ = 0, gp = gy[p];
                    for (int n = 0; n < d.N; n++) {
                        dC[n] += gp * Stp[n];
                        dSp[n] += gp * Cv[n];               /* y_t = S_t·C_t */
                        sb_ += dSp[n] * Bv[n];
                        dB[n] += dtv * dSp[n] * x[p];
                        da += (double)dSp[n] * Spp[n];
                    }
                    dx[p] += Dh * gp + dtv * sb_;
                    dd += (double)x[p] * sb_;
                    dDh += (double)gp * x[p];
                }
                dd += (double)A * dA * da;                   /* ∂a/∂dt = A·a */
                dAh += (double)dtv * dA * da;                /* ∂a/∂A = dt·a */
                ddt[r * d.nh + h] = (float)dd;
                for (size_t q = 0; q < PN; q++) dS[q] *= dA; /* to S_{t-1} */
            }
        }
#undef XR
        dAp[(size_t)b * d.nh + h] = (float)dAh;
        dDp[(size_t)b * d.nh + h] = (float)dDh;
    }
    /* per-head B/C grads → their group's channels (fixed order) */
#pragma omp parallel for schedule(static) num_threads(nth) if ((size_t)BT * d.nh * d.N > 32768)
    for (int t = 0; t < BT; t++)
        for (int h = 0; h < d.nh; h++) {
            int g = h / d.R;
            float *dBc = dxbc + (size_t)t * d.CV + d.din + (size_t)g * d.N, *dCc = dBc + d.GN;
            const float *sB = dBh + ((size_t)t * d.nh + h) * d.N, *sC = dCh + ((size_t)t * d.nh + h) * d.N;
            for (int n = 0; n < d.N; n++) { dBc[n] += sB[n]; dCc[n] += sC[n]; }
        }
    float *gA = st_tg(m, Lp->A_log), *gD = st_tg(m, Lp->D), *gdtb = st_tg(m, Lp->dt_bias);
    for (int h = 0; h < d.nh; h++) {
        double sa = 0, sd = 0;
        for (int b = 0; b < B; b++) { sa += dAp[(size_t)b * d.nh + h]; sd += dDp[(size_t)b * d.nh + h]; }
        gA[h] += (float)(sa * -expf(Alog[h])); /* A = -exp(A_log) */
        gD[h] += (float)sd;
    }
    /* dt = softplus(raw + bias) (clamped: no gradient outside the limits) */
    for (int t = 0; t < BT; t++)
        for (int h = 0; h < d.nh; h++) {
            float raw = a->zx[(size_t)t * d.M + 2 * d.din + 2 * d.GN + h] + dtb[h], v = a->dt[(size_t)t * d.nh + h];
            float sp = st_softplusf(raw);
            float gr = (v != sp) ? 0.0f : ddt[(size_t)t * d.nh + h] * st_sigmoidf(raw);
            dzx[(size_t)t * d.M + 2 * d.din + 2 * d.GN + h] = gr;
            gdtb[h] += gr;
        }
    /* conv + SiLU backward: dpre = dxbc·silu'(pre) (reuse dxbc in place) */
    float *gcw = st_tg(m, Lp->conv_w), *gcb = Lp->conv_b >= 0 ? st_tg(m, Lp->conv_b) : NULL;
#pragma omp parallel for schedule(static) num_threads(nth)
    for (int ch = 0; ch < d.CV; ch++) {
        const float *wk = cw + (size_t)ch * d.K;
        double gw[16] = {0}, gb = 0;
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                size_t r = (size_t)b * T + t;
                float dp = dxbc[r * d.CV + ch] * dsilu(a->pre[r * d.CV + ch]);
                gb += dp;
                for (int k = 0; k < d.K; k++) {
                    int ts = t - (d.K - 1) + k;
                    if (ts < 0) continue;
                    size_t rs = (size_t)b * T + ts;
                    gw[k] += (double)dp * a->zx[rs * d.M + d.din + ch];
                    dzx[rs * d.M + d.din + ch] += wk[k] * dp;
                }
            }
        for (int k = 0; k < d.K; k++) gcw[(size_t)ch * d.K + k] += (float)gw[k];
        if (gcb) gcb[ch] += (float)gb;
    }
    /* in_proj */
    mm_dw(tb, dzx, d.M, a->u, d.H, st_tg(m, Lp->in_proj), d.M, d.H, BT);
    mm_dx(tb, Win, d.M, d.H, dzx, d.M, du, d.H, BT, 0);
}

/* ------------------------------------------------------------ attention */

/* Under masks: does sample M keep query head i (the first w/n_kv of each KV
 * group's Q heads) in layer l? */
static inline int attn_kept(const st_tmask *M, int l, int i, int Q, int nkv) {
    return !skips(M, l) && i % Q < M->w[ST_AX_ATTN_HEADS] / nkv;
}

static void attn_forward(st_tmodel *m, int l, const st_tlayer *Lp, lacts *a, float *out, int B, int T) {
    const st_config *c = &m->cfg;
    const st_tmask *ms = m->a->mask;
    const int H = c->hidden_size, hd = c->head_dim, nq = c->num_attention_heads, nkv = c->num_key_value_heads;
    const int qd = nq * hd, kvd = nkv * hd, Q = nq / nkv, BT = B * T;
    mm(st_tw(m, Lp->wq), qd, H, a->u, H, a->q, qd, BT, 0);
    mm(st_tw(m, Lp->wk), kvd, H, a->u, H, a->k, kvd, BT, 0);
    mm(st_tw(m, Lp->wv), kvd, H, a->u, H, a->v, kvd, BT, 0);
    const float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for collapse(3) schedule(dynamic, 4) num_threads(st_get_threads())
    for (int b = 0; b < B; b++)
        for (int i = 0; i < nq; i++)
            for (int t = 0; t < T; t++) {
                int kvh = i / Q;
                float *p = a->att + (((size_t)b * nq + i) * T + t) * T;
                const float *qi = a->q + ((size_t)b * T + t) * qd + (size_t)i * hd;
                if (ms && !attn_kept(&ms[b], l, i, Q, nkv)) { /* head cut: o = 0 (att left unset) */
                    memset(a->o + ((size_t)b * T + t) * qd + (size_t)i * hd, 0, sizeof(float) * hd);
                    continue;
                }
                float mx = -INFINITY;
                for (int j = 0; j <= t; j++) {
                    const float *kj = a->k + ((size_t)b * T + j) * kvd + (size_t)kvh * hd;
                    float s = 0;
                    for (int e = 0; e < hd; e++) s += qi[e] * kj[e];
                    p[j] = s * scale;
                    if (p[j] > mx) mx = p[j];
                }
                float sum = 0;
                for (int j = 0; j <= t; j++) { p[j] = expf(p[j] - mx); sum += p[j]; }
                float inv = 1.0f / sum;
                for (int j = 0; j <= t; j++) p[j] *= inv;
                for (int j = t + 1; j < T; j++) p[j] = 0;
                float *oi = a->o + ((size_t)b * T + t) * qd + (size_t)i * hd;
                for (int e = 0; e < hd; e++) oi[e] = 0;
                for (int j = 0; j <= t; j++) {
                    const float *vj = a->v + ((size_t)b * T + j) * kvd + (size_t)kvh * hd;
                    for (int e = 0; e < hd; e++) oi[e] += p[j] * vj[e];
                }
                if (ms) for (int e = 0; e < hd; e++) oi[e] *= ms[b].pi[ST_AX_ATTN_HEADS];
            }
    mm(st_tw(m, Lp->wo), H, qd, a->o, qd, out, H, BT, 0);
}

static void attn_backward(st_tmodel *m, int l, const st_tlayer *Lp, lacts *a, const float *dout, float *du, int B, int T,
                          const tbufs *tb, bump *sb) {
    const st_config *c = &m->cfg;
    const st_tmask *ms = m->a->mask;
    double *racc = m->a->racc; /* [B][nkv] partials of dpi[ATTN_HEADS] */
    const int H = c->hidden_size, hd = c->head_dim, nq = c->num_attention_heads, nkv = c->num_key_value_heads;
    const int qd = nq * hd, kvd = nkv * hd, Q = nq / nkv, BT = B * T, nth = st_get_threads();
    float *dq = take(sb, (size_t)BT * qd), *dO = take(sb, (size_t)BT * qd);     /* [BT][qd]  */
    float *dk = take(sb, (size_t)BT * kvd), *dv = take(sb, (size_t)BT * kvd);   /* [BT][kvd] */
    float *dp = take(sb, (size_t)nth * rup((size_t)T));                          /* [nth][T]  */
    mm_dw(tb, dout, H, a->o, qd, st_tg(m, Lp->wo), H, qd, BT);
    mm_dx(tb, st_tw(m, Lp->wo), H, qd, dout, H, dO, qd, BT, 0);
    memset(dk, 0, sizeof(float) * (size_t)BT * kvd);
    memset(dv, 0, sizeof(float) * (size_t)BT * kvd);
    const float scale = 1.0f / sqrtf((float)hd);
    /* one (sequence, KV head) per task: its query heads write disjoint dq and
       share dk/dv, so no two threads touch the same dk/dv. Under masks o =
       pi·o_att for kept heads: go is dL/do, the head sees sc·go, and
       dpi = Σ go·o_att = Σ_j p_j·(go·v_j), the s below before scaling. */
#pragma omp parallel for collapse(2) schedule(static) num_threads(nth)
    for (int b = 0; b < B; b++)
        for (int kvh = 0; kvh < nkv; kvh++) {
            float *dP = dp + (size_t)omp_get_thread_num() * rup((size_t)T);
            double dpi_acc = 0;
            for (int i = kvh * Q; i < (kvh + 1) * Q; i++) {
                float sc = 1.0f; /* ×1 is exact: the unmasked numbers are unchanged */
                if (ms) {
                    if (!attn_kept(&ms[b], l, i, Q, nkv)) {
                        for (int t = 0; t < T; t++) memset(dq + ((size_t)b * T + t) * qd + (size_t)i * hd, 0, sizeof(float) * hd);
                        continue;
                    }
                    sc = ms[b].pi[ST_AX_ATTN_HEADS];
                }
                for (int t = 0; t < T; t++) {
                    const float *p = a->att + (((size_t)b * nq + i) * T + t) * T;
                    const float *go = dO + ((size_t)b * T + t) * qd + (size_t)i * hd;
                    const float *qi = a->q + ((size_t)b * T + t) * qd + (size_t)i * hd;
                    float *gq = dq + ((size_t)b * T + t) * qd + (size_t)i * hd;
                    double s = 0;
                    for (int j = 0; j <= t; j++) {
                        const float *vj = a->v + ((size_t)b * T + j) * kvd + (size_t)kvh * hd;
                        float *gv = dv + ((size_t)b * T + j) * kvd + (size_t)kvh * hd;
                        float x = 0, pj = p[j] * sc;
                        for (int e = 0; e < hd; e++) { x += go[e] * vj[e]; gv[e] += pj * go[e]; }
                        dP[j] = x * sc;
                        s += (double)p[j] * x;
                    }
                    dpi_acc += s;
                    s *= sc;
                    for (int e = 0; e < hd; e++) gq[e] = 0;
                    for (int j = 0; j <= t; j++) {
                        float ds = p[j] * (dP[j] - (float)s) * scale;
                        const float *kj = a->k + ((size_t)b * T + j) * kvd + (size_t)kvh * hd;
                        float *gk = dk + ((size_t)b * T + j) * kvd + (size_t)kvh * hd;
                        for (int e = 0; e < hd; e++) { gq[e] += ds * kj[e]; gk[e] += ds * qi[e]; }
                    }
                }
            }
            if (ms) racc[(size_t)b * nkv + kvh] = dpi_acc;
        }
    if (ms) /* serial: fixed order */
        for (int b = 0; b < B; b++)
            for (int kvh = 0; kvh < nkv; kvh++)
                m->a->dpi[(size_t)b * ST_N_AX + ST_AX_ATTN_HEADS] += racc[(size_t)b * nkv + kvh];
    mm_dw(tb, dq, qd, a->u, H, st_tg(m, Lp->wq), qd, H, BT);
    mm_dw(tb, dk, kvd, a->u, H, st_tg(m, Lp->wk), kvd, H, BT);
    mm_dw(tb, dv, kvd, a->u, H, st_tg(m, Lp->wv), kvd, H, BT);
    mm_dx(tb, st_tw(m, Lp->wq), qd, H, dq, qd, du, H, BT, 0);
    mm_dx(tb, st_tw(m, Lp->wk), kvd, H, dk, kvd, du, H, BT, 1);
    mm_dx(tb, st_tw(m, Lp->wv), kvd, H, dv, kvd, du, H, BT, 1);
}

/* ------------------------------------------------------------ relu² MLP */

/* in place: d ← d · 2·relu(h) */
static void relu2_bwd(float *d, const float *h, size_t n) {
    for (size_t i = 0; i < n; i++) d[i] = h[i] > 0 ? d[i] * 2.0f * h[i] : 0.0f;
}

/* The rows of an FFN product under masks: row i is token i (sample i/T) or,
 * for routed expert rows, slot slot[r0+i] = token·k + choice. */
typedef struct {
    const st_tmask *ms;
    int ax, T, k, r0;
    const int32_t *slot; /* NULL: token rows */
    double *racc, *dpi;  /* backward: [n] partials, [B][ST_N_AX] */
} mrows;
static inline int mr_sample(const mrows *r, int i) { return (r->slot ? r->slot[r->r0 + i] / r->k : i) / r->T; }

/* out (=|+=) down(relu(up·x)²); x [n][H], h/ha [n][I] saved (ha masked:
 * 0 beyond the sample's width of axis mr->ax, × its pi before it) */
static void ffn_forward(const float *Wu, const float *Wd, int H, int I, const float *x, float *h, float *ha, float *out,
                        int n, int acc, const mrows *mr) {
    mm(Wu, I, H, x, H, h, I, n, 0);
    st_relu2(ha, h, (size_t)n * I);
    if (mr) {
#pragma omp parallel for schedule(static) num_threads(st_get_threads()) if ((size_t)n * I > 32768)
        for (int i = 0; i < n; i++) {
            const st_tmask *M = &mr->ms[mr_sample(mr, i)];
            const int w = M->w[mr->ax];
            const float pi = M->pi[mr->ax];
            float *ar = ha + (size_t)i * I;
            for (int j = 0; j < w; j++) ar[j] *= pi;
            for (int j = w; j < I; j++) ar[j] = 0;
        }
    }
    mm(Wd, H, I, ha, I, out, H, n, acc);
}

/* dx (=|+=) from dout; weight grads added; dh [n][I] scratch; under masks
 * dpi[b][ax] += Σ dha·relu(h)² over the kept neurons */
static void ffn_backward(const tbufs *tb, const float *Wu, const float *Wd, float *gWu, float *gWd, int H, int I,
                         const float *x, const float *h, const float *ha, const float *dout, float *dx, float *dh, int n,
                         int acc, const mrows *mr) {
    mm_dw(tb, dout, H, ha, I, gWd, H, I, n);
    mm_dx(tb, Wd, H, I, dout, H, dh, I, n, 0);
    if (mr) {
#pragma omp parallel for schedule(static) num_threads(st_get_threads()) if ((size_t)n * I > 32768)
        for (int i = 0; i < n; i++) {
            const st_tmask *M = &mr->ms[mr_sample(mr, i)];
            const int w = M->w[mr->ax];
            const float pi = M->pi[mr->ax];
            const float *hr = h + (size_t)i * I;
            float *d = dh + (size_t)i * I;
            double dp = 0;
            for (int j = 0; j < w; j++) {
                float v = hr[j] > 0 ? hr[j] : 0;
                dp += (double)d[j] * (v * v);
                d[j] = hr[j] > 0 ? d[j] * pi * 2.0f * hr[j] : 0.0f;
            }
            for (int j = w; j < I; j++) d[j] = 0;
            mr->racc[i] = dp;
        }
        for (int i = 0; i < n; i++) mr->dpi[(size_t)mr_sample(mr, i) * ST_N_AX + mr->ax] += mr->racc[i]; /* fixed order */
    } else {
        relu2_bwd(dh, h, (size_t)n * I);
    }
    mm_dw(tb, dh, I, x, H, gWu, I, H, n);
    mm_dx(tb, Wu, I, H, dh, I, dx, H, n, acc);
}

/* ------------------------------------------------------------ MoE */

static void moe_forward(st_tmodel *m, int l, const st_tlayer *Lp, lacts *a, float *out, int BT, int T, bump *sb) {
    const st_config *c = &m->cfg;
    const int H = c->hidden_size, E = c->n_routed_experts, k = c->num_experts_per_tok, F = c->moe_intermediate_size;
    const st_tmask *ms = m->a->mask;
    const float *bias = st_tw(m, Lp->e_bias);
    float *xe = take(sb, (size_t)BT * k * H); /* [BT·k][H] gathered inputs */
    mm(st_tw(m, Lp->gate), E, H, a->u, H, a->lg, E, BT, 0);
    /* the router of forward.c (st_moe_route) without expert groups, as the
       training pass has always routed; slots kt..k-1 (a budget's clipped
       top-k, or a skipped layer's) get idx -1, wt 0 */
    const st_route_cfg rc = {1, 1, c->norm_topk_prob, c->routed_scaling_factor};
    for (int t = 0; t < BT; t++) {
        int Et = E, kt = k; /* a budget routes among its first w experts; a skipped layer routes nowhere */
        if (ms) {
            const st_tmask *M = &ms[t / T];
            Et = M->w[ST_AX_EXPERTS];
            kt = skips(M, l) ? 0 : k < Et ? k : Et;
        }
        int32_t *id = a->idx + (size_t)t * k;
        float *w = a->wt + (size_t)t * k;
        st_moe_route(a->lg + (size_t)t * E, bias, Et, kt, &rc, id, w);
        for (int j = kt; j < k; j++) { id[j] = -1; w[j] = 0; }
    }
    /* group the used (token, choice) slots by expert (counting sort: stable) */
    for (int e = 0; e <= E; e++) a->eoff[e] = 0;
    for (int s = 0; s < BT * k; s++) if (a->idx[s] >= 0) a->eoff[a->idx[s] + 1]++;
    for (int e = 0; e < E; e++) {
        a->eoff[e + 1] += a->eoff[e];
        m->load[(size_t)l * E + e] += a->eoff[e + 1] - a->eoff[e];
    }
    {
        int32_t fill[E];
        for (int e = 0; e < E; e++) fill[e] = a->eoff[e];
        for (int s = 0; s < BT * k; s++) if (a->idx[s] >= 0) a->slot[fill[a->idx[s]]++] = s;
    }
    const int nr = a->eoff[E]; /* rows in use (BT·k without masks) */
#pragma omp parallel for schedule(static) num_threads(st_get_threads()) if ((size_t)nr * H > 32768)
    for (int r = 0; r < nr; r++) memcpy(xe + (size_t)r * H, a->u + (size_t)(a->slot[r] / k) * H, sizeof(float) * H);
    const float *Wu = st_tw(m, Lp->exp_up), *Wd = st_tw(m, Lp->exp_down);
    for (int e = 0; e < E; e++) {
        int r0 = a->eoff[e], n = a->eoff[e + 1] - r0;
        if (!n) continue;
        mrows mr = {ms, ST_AX_EXPERT_FFN, T, k, r0, a->slot, NULL, NULL};
        ffn_forward(Wu + (size_t)e * F * H, Wd + (size_t)e * H * F, H, F, xe + (size_t)r0 * H, a->eh + (size_t)r0 * F,
                    a->ea + (size_t)r0 * F, a->eo + (size_t)r0 * H, n, 0, ms ? &mr : NULL);
    }
    memset(out, 0, sizeof(float) * (size_t)BT * H);
    for (int r = 0; r < nr; r++) { /* expert order, as forward.c */
        int s = a->slot[r];
        float w = a->wt[s], *o = out + (size_t)(s / k) * H;
        if (ms) w *= ms[s / k / T].pi[ST_AX_EXPERTS];
        const float *src = a->eo + (size_t)r * H;
        for (int j = 0; j < H; j++) o[j] += w * src[j];
    }
    if (c->n_shared_experts) {
        mrows mr = {ms, ST_AX_SHARED_FFN, T, 1, 0, NULL, NULL, NULL};
        ffn_forward(st_tw(m, Lp->sh_up), st_tw(m, Lp->sh_down), H, c->moe_shared_expert_intermediate_size, a->u, a->h,
                    a->ha, out, BT, 1, ms ? &mr : NULL);
    }
}

static void moe_backward(st_tmodel *m, const st_tlayer *Lp, lacts *a, const float *dout, float *du, int BT, int T,
                         const tbufs *tb, bump *sb) {
    const st_config *c = &m->cfg;
    const int H = c->hidden_size, E = c->n_routed_experts, k = c->num_experts_per_tok, F = c->moe_intermediate_size;
    const st_tmask *ms = m->a->mask;
    double *racc = m->a->racc, *dpi = m->a->dpi; /* racc [BT·k] */
    float *dlg = take(sb, (size_t)BT * E);         /* [BT][E]    */
    float *xe = take(sb, (size_t)BT * k * H);      /* [BT·k][H]  */
    float *deo = take(sb, (size_t)BT * k * H);     /* [BT·k][H]  */
    float *dxe = take(sb, (size_t)BT * k * H);     /* [BT·k][H]  */
    float *deh = take(sb, (size_t)BT * k * F);     /* [BT·k][F]  */
    float *dwt = take(sb, (size_t)BT * k);         /* [BT][k]    */
    const int Fs = c->moe_shared_expert_intermediate_size;
    float *dsh = take(sb, (size_t)BT * (Fs + 1));  /* [BT][Fs]   */
    const int nr = a->eoff[E];
    /* shared expert: du = its input gradient */
    if (c->n_shared_experts) {
        mrows mr = {ms, ST_AX_SHARED_FFN, T, 1, 0, NULL, racc, dpi};
        ffn_backward(tb, st_tw(m, Lp->sh_up), st_tw(m, Lp->sh_down), st_tg(m, Lp->sh_up), st_tg(m, Lp->sh_down), H, Fs,
                     a->u, a->h, a->ha, dout, du, dsh, BT, 0, ms ? &mr : NULL);
    } else {
        memset(du, 0, sizeof(float) * (size_t)BT * H);
    }
    /* combine: out[t] += w·pi·eo  →  dw = pi·dout·eo, deo = w·pi·dout, dpi = Σ w·dout·eo */
    if (ms) memset(dwt, 0, sizeof(float) * (size_t)BT * k); /* unused slots */
#pragma omp parallel for schedule(static) num_threads(st_get_threads()) if ((size_t)nr * H > 32768)
    for (int r = 0; r < nr; r++) {
        int s = a->slot[r];
        const float *g = dout + (size_t)(s / k) * H, *eo = a->eo + (size_t)r * H;
        float *d = deo + (size_t)r * H, w = a->wt[s], pi = 1.0f;
        if (ms) { pi = ms[s / k / T].pi[ST_AX_EXPERTS]; w *= pi; }
        double dot = 0;
        for (int j = 0; j < H; j++) { dot += (double)g[j] * eo[j]; d[j] = w * g[j]; }
        dwt[s] = ms ? (float)(dot * pi) : (float)dot;
        if (ms) racc[r] = dot * a->wt[s];
        memcpy(xe + (size_t)r * H, a->u + (size_t)(s / k) * H, sizeof(float) * H);
    }
    if (ms)
        for (int r = 0; r < nr; r++) dpi[(size_t)(a->slot[r] / k / T) * ST_N_AX + ST_AX_EXPERTS] += racc[r]; /* fixed order */
    const float *Wu = st_tw(m, Lp->exp_up), *Wd = st_tw(m, Lp->exp_down);
    float *gWu = st_tg(m, Lp->exp_up), *gWd = st_tg(m, Lp->exp_down);
    for (int e = 0; e < E; e++) {
        int r0 = a->eoff[e], n = a->eoff[e + 1] - r0;
        if (!n) continue;
        mrows mr = {ms, ST_AX_EXPERT_FFN, T, k, r0, a->slot, racc, dpi};
        ffn_backward(tb, Wu + (size_t)e * F * H, Wd + (size_t)e * H * F, gWu + (size_t)e * F * H, gWd + (size_t)e * H * F,
                     H, F, xe + (size_t)r0 * H, a->eh + (size_t)r0 * F, a->ea + (size_t)r0 * F, deo + (size_t)r0 * H,
                     dxe + (size_t)r0 * H, deh + (size_t)r0 * F, n, 0, ms ? &mr : NULL);
    }
    for (int r = 0; r < nr; r++) { /* scatter in a fixed order */
        float *d = du + (size_t)(a->slot[r] / k) * H;
        const float *s = dxe + (size_t)r * H;
        for (int j = 0; j < H; j++) d[j] += s[j];
    }
    /* router: w_j = c·s_j/Σs (renormalised) or c·s_j; s = sigmoid(logit);
       the selection itself (and the correction bias) has no gradient */
    memset(dlg, 0, sizeof(float) * (size_t)BT * E);
    const float cs = c->routed_scaling_factor;
    for (int t = 0; t < BT; t++) {
        const int32_t *id = a->idx + (size_t)t * k;
        const float *g = dwt + (size_t)t * k, *lg = a->lg + (size_t)t * E;
        double S = 0, gs = 0;
        for (int j = 0; j < k; j++) {
            if (id[j] < 0) continue;
            float s = st_sigmoidf(lg[id[j]]);
            S += s;
            gs += (double)g[j] * s;
        }
        S += 1e-20;
        for (int j = 0; j < k; j++) {
            if (id[j] < 0) continue;
            float s = st_sigmoidf(lg[id[j]]);
            double ds = c->norm_topk_prob ? cs * (g[j] / S - gs / (S * S)) : cs * g[j];
            dlg[(size_t)t * E + id[j]] = (float)(ds * s * (1.0f - s));
        }
    }
    mm_dw(tb, dlg, E, a->u, H, st_tg(m, Lp->gate), E, H, BT);
    mm_dx(tb, st_tw(m, Lp->gate), E, H, dlg, E, du, H, BT, 1);
}

/* ------------------------------------------------------------ driver */

/* KL(p_t || p_s) of one row (fp64, stable log-sum-exp); *lse_s, *lse_t out. */
static double kl_row(const float *ls, const float *lt, int V, double *lse_s, double *lse_t) {
    float ms = -INFINITY, mt = -INFINITY;
    for (int i = 0; i < V; i++) { if (ls[i] > ms) ms = ls[i]; if (lt[i] > mt) mt = lt[i]; }
    double ss = 0, st = 0;
    for (int i = 0; i < V; i++) { ss += exp((double)ls[i] - ms); st += exp((double)lt[i] - mt); }
    double as = ms + log(ss), at = mt + log(st), kl = 0;
    for (int i = 0; i < V; i++) {
        double lpt = (double)lt[i] - at;
        kl += exp(lpt) * (lpt - ((double)ls[i] - as));
    }
    *lse_s = as;
    *lse_t = at;
    return kl;
}

float st_tmodel_forward(st_tmodel *m, const int32_t *tokens, const int32_t *targets) {
    const st_config *c = &m->cfg;
    st_tacts *A = m->a;
    const int B = m->B, T = m->T, BT = B * T, H = c->hidden_size, V = c->vocab_size;
    const st_tmask *ms = A->mask;
    memcpy(A->tok, tokens, sizeof(int32_t) * (size_t)BT);
    A->has_tgt = targets != NULL;
    if (targets) memcpy(A->tgt, targets, sizeof(int32_t) * (size_t)BT);
    const float *E = st_tw(m, m->embed);
    float *x = A->l[0].res;
    for (int t = 0; t < BT; t++) memcpy(x + (size_t)t * H, E + (size_t)tokens[t] * H, sizeof(float) * H);
    if (ms) mask_rows(x, x, BT, H, ms, T, NO_LAYER); /* inactive hidden channels start (and stay) at 0 */
    for (int l = 0; l < c->n_layers; l++) {
        lacts *a = &A->l[l];
        const st_tlayer *Lp = &m->L[l];
        float *next = l + 1 < c->n_layers ? A->l[l + 1].res : A->xf; /* [BT][H] */
        if (ms) rmsnorm_forward_m(a->u, a->rstd, a->res, st_tw(m, Lp->norm), BT, H, c->norm_eps, ms, T);
        else rmsnorm_forward(a->u, a->rstd, a->res, st_tw(m, Lp->norm), BT, H, c->norm_eps);
        bump sb = {A->scr, 0};
        mrows mr = {ms, ST_AX_FFN, T, 1, 0, NULL, NULL, NULL};
        switch (Lp->type) {
        case 'M': mamba_forward(m, l, Lp, a, next, B, T); break;
        case '*': attn_forward(m, l, Lp, a, next, B, T); break;
        case '-': ffn_forward(st_tw(m, Lp->up), st_tw(m, Lp->down), H, c->intermediate_size, a->u, a->h, a->ha, next, BT, 0,
                              ms ? &mr : NULL); break;
        case 'E': moe_forward(m, l, Lp, a, next, BT, T, &sb); break;
        }
        if (ms) mask_rows(next, next, BT, H, ms, T, l);
        for (size_t i = 0; i < (size_t)BT * H; i++) next[i] += a->res[i]; /* residual */
    }
    if (ms) rmsnorm_forward_m(A->hf, A->rstdf, A->xf, st_tw(m, m->norm_f), BT, H, c->norm_eps, ms, T);
    else rmsnorm_forward(A->hf, A->rstdf, A->xf, st_tw(m, m->norm_f), BT, H, c->norm_eps);
    mm(st_tw(m, m->lm_head), V, H, A->hf, H, A->logits, V, BT, 0);
    if (!targets) return 0.0f;
    /* cross-entropy -log softmax(logits)[target], or KL(teacher || student);
       rows with target < 0 skipped */
    const float *tl = m->teacher;
#pragma omp parallel for schedule(static) num_threads(st_get_threads()) if ((size_t)BT * V > 32768)
    for (int t = 0; t < BT; t++) {
        const float *lg = A->logits + (size_t)t * V;
        int y = targets[t];
        if (y < 0 || y >= V) { A->rowloss[t] = 0; continue; }
        if (tl) {
            double as, at;
            A->rowloss[t] = (float)kl_row(lg, tl + (size_t)t * V, V, &as, &at);
            continue;
        }
        float mx = -INFINITY;
        for (int i = 0; i < V; i++) if (lg[i] > mx) mx = lg[i];
        double s = 0;
        for (int i = 0; i < V; i++) s += exp((double)(lg[i] - mx));
        A->rowloss[t] = (float)(log(s) + mx - lg[y]);
    }
    double sum = 0;
    long n = 0;
    for (int t = 0; t < BT; t++) if (targets[t] >= 0 && targets[t] < V) { sum += A->rowloss[t]; n++; }
    A->n_count = n;
    return n ? (float)(sum / n) : 0.0f;
}

void st_tmodel_backward(st_tmodel *m, float grad_scale) {
    const st_config *c = &m->cfg;
    st_tacts *A = m->a;
    const int B = m->B, T = m->T, BT = B * T, H = c->hidden_size, V = c->vocab_size;
    const st_tmask *ms = A->mask;
    if (!A->has_tgt || A->n_count == 0) return;
    /* transposes at the bottom of the scratch, per-layer temporaries above */
    bump sb0 = {A->scr, 0};
    size_t in_max, oc;
    tsizes(c, &in_max, &oc);
    tbufs tb;
    tb.tw = take(&sb0, in_max * oc);
    tb.tx = take(&sb0, (size_t)BT * in_max);
    tb.tdy = take(&sb0, (size_t)BT * oc);
    const size_t mark = sb0.used;

    /* softmax − onehot (or − p_teacher), / count, × grad_scale (in place over the logits) */
    const float inv = grad_scale / (float)A->n_count;
    const float *tl = m->teacher;
#pragma omp parallel for schedule(static) num_threads(st_get_threads()) if ((size_t)BT * V > 32768)
    for (int t = 0; t < BT; t++) {
        float *lg = A->logits + (size_t)t * V;
        int y = A->tgt[t];
        if (y < 0 || y >= V) { memset(lg, 0, sizeof(float) * V); continue; }
        if (tl) {
            const float *lt = tl + (size_t)t * V;
            double as, at;
            kl_row(lg, lt, V, &as, &at);
            for (int i = 0; i < V; i++) lg[i] = (float)((exp((double)lg[i] - as) - exp((double)lt[i] - at)) * inv);
            continue;
        }
        float mx = -INFINITY;
        for (int i = 0; i < V; i++) if (lg[i] > mx) mx = lg[i];
        double s = 0;
        for (int i = 0; i < V; i++) s += exp((double)(lg[i] - mx));
        float is = (float)(1.0 / s);
        for (int i = 0; i < V; i++) lg[i] = expf(lg[i] - mx) * is * inv;
        lg[y] -= inv;
    }
    float *dhf = A->du; /* [BT][H] */
    mm_dw(&tb, A->logits, V, A->hf, H, st_tg(m, m->lm_head), V, H, BT);
    mm_dx(&tb, st_tw(m, m->lm_head), V, H, A->logits, V, dhf, H, BT, 0);
    memset(A->dres, 0, sizeof(float) * (size_t)BT * H);
    if (ms) rmsnorm_backward_m(A->dres, st_tg(m, m->norm_f), dhf, A->xf, A->rstdf, st_tw(m, m->norm_f), BT, H, ms, T, A->racc, A->dpi);
    else rmsnorm_backward(A->dres, st_tg(m, m->norm_f), dhf, A->xf, A->rstdf, st_tw(m, m->norm_f), BT, H);
    for (int l = c->n_layers - 1; l >= 0; l--) {
        lacts *a = &A->l[l];
        const st_tlayer *Lp = &m->L[l];
        bump sb = {A->scr, mark};
        float *du = A->du;
        const float *dout = A->dres; /* the mixer output's gradient: the residual's, masked like the output */
        if (ms) {
            mask_rows(A->dmix, A->dres, BT, H, ms, T, l);
            dout = A->dmix;
        }
        switch (Lp->type) {
        case 'M': mamba_backward(m, l, Lp, a, dout, du, B, T, &tb, &sb); break;
        case '*': attn_backward(m, l, Lp, a, dout, du, B, T, &tb, &sb); break;
        case '-': {
            float *dh = take(&sb, (size_t)BT * c->intermediate_size);
            mrows mr = {ms, ST_AX_FFN, T, 1, 0, NULL, A->racc, A->dpi};
            ffn_backward(&tb, st_tw(m, Lp->up), st_tw(m, Lp->down), st_tg(m, Lp->up), st_tg(m, Lp->down), H,
                         c->intermediate_size, a->u, a->h, a->ha, dout, du, dh, BT, 0, ms ? &mr : NULL);
            break;
        }
        case 'E': moe_backward(m, Lp, a, dout, du, BT, T, &tb, &sb); break;
        }
        if (ms) rmsnorm_backward_m(A->dres, st_tg(m, Lp->norm), du, a->res, a->rstd, st_tw(m, Lp->norm), BT, H, ms, T, A->racc, A->dpi);
        else rmsnorm_backward(A->dres, st_tg(m, Lp->norm), du, a->res, a->rstd, st_tw(m, Lp->norm), BT, H);
    }
    float *gE = st_tg(m, m->embed);
    for (int t = 0; t < BT; t++) { /* serial: repeated tokens add in a fixed order */
        float *d = gE + (size_t)A->tok[t] * H;
        const float *s = A->dres + (size_t)t * H;
        for (int i = 0; i < H; i++) d[i] += s[i]; /* 0 beyond a sample's hidden width */
    }
}

/* ------------------------------------------------------------ masks and teacher */

#define RULE(...) return st_err(ST_ERR_BUDGET, "budget: sample " __VA_ARGS__)

/* Fill in sample b's widths (0 → parent) and pi (0 → 1) into o and check
 * the nesting rules of budget.c against the parent. */
static st_status mask_check(const st_config *c, int b, const st_tmask *in, st_tmask *o) {
    *o = *in;
    char who[32];
    snprintf(who, sizeof who, "sample %d: ", b);
    st_status rc;
    for (int k = 0; k < ST_N_AX; k++) {
        o->w[k] = in->w[k] ? in->w[k] : st_axis_parent_width(c, k);
        if ((rc = st_axis_check_width(c, k, o->w[k], who))) return rc;
        float p = in->pi[k];
        if (!(p >= 0 && p < INFINITY))
            return st_err(ST_ERR_ARG, "train: sample %d: pi of %s = %g must be finite and >= 0", b, st_axes[k].key, (double)p);
        o->pi[k] = p == 0 ? 1.0f : p;
    }
    if ((rc = st_axes_check_groups(c, o->w, who))) return rc;
    if (c->n_layers < 64 && (in->skip >> c->n_layers))
        RULE("%d: skip: layer %d does not exist (the model has %d layers)", b, 63 - __builtin_clzll(in->skip),
             c->n_layers);
    return ST_OK;
}
#undef RULE

st_status st_tmodel_set_masks(st_tmodel *m, const st_tmask *ms) {
    st_tacts *A = m->a;
    if (!ms) {
        if (A) A->mask = NULL;
        return ST_OK;
    }
    if (!A) return st_err(ST_ERR_ARG, "train: st_tmodel_set_masks before st_tmodel_reserve");
    const int B = m->B;
    const size_t BT = (size_t)B * m->T;
    if (!A->mbuf) {
        size_t k = (size_t)(m->cfg.num_experts_per_tok > 1 ? m->cfg.num_experts_per_tok : 1);
        size_t nkv = (size_t)(m->cfg.num_key_value_heads > 1 ? m->cfg.num_key_value_heads : 1);
        A->mbuf = st_calloc((size_t)B, sizeof *A->mbuf);
        A->racc = st_calloc(BT * k + (size_t)B * nkv, sizeof(double));
        A->dmix = st_aligned_alloc(BT * (size_t)m->cfg.hidden_size * sizeof(float));
        if (!A->mbuf || !A->racc || !A->dmix) {
            free(A->mbuf); free(A->racc); free(A->dmix);
            A->mbuf = NULL; A->racc = NULL; A->dmix = NULL;
            return ST_ERR_NOMEM;
        }
    }
    st_tmask *tmp = st_malloc(sizeof *tmp * (size_t)B); /* all samples checked before any is taken */
    if (!tmp) return ST_ERR_NOMEM;
    for (int b = 0; b < B; b++) {
        st_status rc = mask_check(&m->cfg, b, &ms[b], &tmp[b]);
        if (rc) { free(tmp); return rc; }
    }
    memcpy(A->mbuf, tmp, sizeof *tmp * (size_t)B);
    free(tmp);
    A->mask = A->mbuf;
    return ST_OK;
}

void st_tmask_from_widths(st_tmask *t, const st_config *parent, const st_widths *w) {
    memset(t, 0, sizeof *t);
    for (int k = 0; k < ST_N_AX; k++) {
        t->w[k] = w->axis[k] ? w->axis[k] : st_axis_parent_width(parent, k);
        t->pi[k] = 1.0f;
    }
    for (int i = 0; i < w->n_skip; i++)
        if (w->skip_layers[i] >= 0 && w->skip_layers[i] < 64) t->skip |= 1ull << w->skip_layers[i];
}

const double *st_tmodel_mask_grads(const st_tmodel *m) { return m->a ? m->a->dpi : NULL; }

void st_tmodel_set_teacher(st_tmodel *m, const float *teacher_logits) { m->teacher = teacher_logits; }

const float *st_tmodel_row_loss(const st_tmodel *m) { return m->a ? m->a->rowloss : NULL; }

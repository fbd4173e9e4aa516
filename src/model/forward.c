/*
 * forward.c — the Nemotron-H forward pass at a budget (docs/architecture.md §2).
 *
 *   h = E[tok][:H']
 *   for each layer not skipped:  h += Mixer(RMSNorm_H'(h))
 *   logits = lm_head[:, :H'] · RMSNorm_H'(h)
 *
 * One code path serves batched prefill (T tokens) and decode (T = 1): the
 * matrix products take all T rows at once; the recurrences (conv, SSM scan,
 * causal attention) walk the tokens in order over the per-sequence state.
 * Activations, accumulations and states are fp32. Budget views select rows
 * and columns of the full-width weights through spans (budget.c).
 */
#include "model/model.h"
#include "util/util.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

/* ------------------------------------------------------------ workspace */

typedef struct { float *base; size_t used, cap; } bump;

static float *take(bump *a, size_t n) {
    float *p = a->base + a->used;
    a->used += (n + 15) & ~(size_t)15;
    return p; /* capacity is ensured up front by ws_need */
}

static size_t rup(size_t n) { return (n + 15) & ~(size_t)15; }

/* Floats of workspace one forward call of T tokens needs at budget b. */
static size_t ws_need(const st_budget *b, int T, int ctx) {
    const st_config *c = &b->m->cfg;
    const st_widths *w = &b->w;
    size_t H = (size_t)w->hidden_size, t = (size_t)T, nth = (size_t)st_get_threads() + 1;
    size_t need = 3 * rup(t * H) + 64;
    size_t mam = 0, att = 0, mlp = 0, moe = 0;
    if (b->m_inproj_n) {
        size_t conv = (size_t)b->m_din + 2 * (size_t)c->n_groups * c->ssm_state_size;
        mam = rup(t * (size_t)b->m_inproj_n) + rup(t * conv) + rup(t * (size_t)b->m_din) + rup(t * b->m_r * c->n_groups);
    }
    if (b->a_n_q) {
        size_t q = (size_t)w->num_attention_heads * c->head_dim;
        att = 2 * rup(t * q) + rup(nth * (size_t)ctx);
    }
    if (strchr(c->pattern, '-')) mlp = rup(t * (size_t)w->intermediate_size);
    if (strchr(c->pattern, 'E')) {
        size_t E = (size_t)w->n_routed_experts, k = (size_t)b->top_k, F = (size_t)w->moe_intermediate_size;
        moe = rup(t * E) + 2 * rup(t * k) + 2 * rup(t * k) + rup(t * H) + rup(t * F) + rup(t * H) +
              rup(t * (size_t)(w->moe_shared_expert_intermediate_size + 1));
    }
    size_t mx = mam;
    if (att > mx) mx = att;
    if (mlp > mx) mx = mlp;
    if (moe > mx) mx = moe;
    return need + mx;
}

/* ------------------------------------------------------------ matmul + amax recording */

/* Calibration for quantization (st_amax_record): while a recorder is set on
 * this thread, every product records max|x| of its input per weight. */
static _Thread_local st_amax_rec *t_rec;
void st_amax_record(st_amax_rec *r) { t_rec = r; }

static void record(const st_mat *W, const float *x, int ldx, int ncols, int T) {
    float a = 0;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < ncols; i++) { float v = fabsf(x[(size_t)t * ldx + i]); if (v > a) a = v; }
    st_amax_rec *r = t_rec;
    size_t h = ((uintptr_t)W >> 4) * 0x9e3779b97f4a7c15ull >> 20;
    for (size_t k = 0; k < r->cap; k++) {
        size_t i = (h + k) % r->cap;
        if (r->key[i] == W) { if (a > r->amax[i]) r->amax[i] = a; return; }
        if (!r->key[i]) { r->key[i] = W; r->amax[i] = a; r->n++; return; }
    }
}

float st_amax_get(const st_amax_rec *r, const st_mat *W) {
    size_t h = ((uintptr_t)W >> 4) * 0x9e3779b97f4a7c15ull >> 20;
    for (size_t k = 0; k < r->cap; k++) {
        size_t i = (h + k) % r->cap;
        if (r->key[i] == W) return r->amax[i];
        if (!r->key[i]) return -1;
    }
    return -1;
}

static void mm(const st_mat *W, const st_span *rs, int n_rs, const st_span *cs, int n_cs, const float *x, int ldx,
               float *y, int ldy, int T, int acc) {
    if (t_rec) {
        int nc = 0;
        for (int i = 0; i < n_cs; i++) nc += cs[i].len;
        record(W, x, ldx, nc, T);
    }
    st_matmul(W, rs, n_rs, cs, n_cs, x, ldx, y, ldy, T, acc);
}

/* ------------------------------------------------------------ small ops */

static inline float silu(float x) { return x / (1.0f + expf(-x)); }
static inline float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

/* y[i] = w[i] · x[i] / sqrt(mean(x²) + eps) over the n active channels. */
static void rmsnorm(float *y, const float *x, const float *w, int n, float eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float r = 1.0f / sqrtf((float)(ss / n) + eps);
    for (int i = 0; i < n; i++) y[i] = w[i] * (x[i] * r);
}

static void relu2(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) { float v = x[i] > 0 ? x[i] : 0; x[i] = v * v; }
}

/* Snapshots to take inside a pass: after token at[k]-1 of the pass. */
typedef struct { const int *at; int n; st_state **snap; } marks;

/* ------------------------------------------------------------ Mamba-2 */

/*
 * u: [T][H'] normed input; out: [T][H'] mixer output.
 * Packed in_proj output row: z [din'] | x [din'] | B [G·N] | C [G·N] | dt [nk]
 * where din' = nk·P', nk = r·G kept heads (first r of each group).
 * Snapshots in mk get the conv history and SSM state after their token.
 */
static void mamba_forward(const st_budget *b, const st_layer *L, st_state *s, const float *u, float *out, int T,
                          bump *ws, const marks *mk) {
    const st_config *c = &b->m->cfg;
    const int H = b->w.hidden_size, G = c->n_groups, N = c->ssm_state_size, K = c->conv_kernel;
    const int P = c->mamba_head_dim, Pk = b->m_P, nk = b->m_r * G, din = b->m_din, R = c->mamba_num_heads / G;
    const int Din = c->mamba_num_heads * P, conv_full = Din + 2 * G * N, convk = din + 2 * G * N;
    const int M = b->m_inproj_n;
    const st_span hcols = {0, H};

    float *zx = take(ws, (size_t)T * M);          /* [T][M]      */
    float *xbc = take(ws, (size_t)T * convk);     /* [T][convk]  post conv+SiLU */
    float *y = take(ws, (size_t)T * din);         /* [T][din]    */
    float *dt = take(ws, (size_t)T * nk);         /* [T][nk]     */
    mm(&L->in_proj, b->m_inproj_rows, b->m_n_inproj_rows, &hcols, 1, u, H, zx, M, T, 0);

    /* causal depthwise conv over x, B, C (raw history in the state), then SiLU */
    float *cst = s->conv[L->state_idx]; /* [(K−1)][conv_full] */
#pragma omp parallel for schedule(static) num_threads(st_get_threads()) if (T * convk > 4096)
    for (int ch = 0; ch < convk; ch++) {
        int pc = b->m_conv_ch[ch];
        const float *wk = L->conv_w + (size_t)pc * K;
        float hist[64];
        for (int k = 0; k < K - 1; k++) hist[k] = cst[(size_t)k * conv_full + pc];
        for (int t = 0, mi = 0; t < T; t++) {
            float xin = zx[(size_t)t * M + din + ch];
            float acc = L->conv_b[pc] + wk[K - 1] * xin;
            for (int k = 0; k < K - 1; k++) acc += wk[k] * hist[k];
            for (int k = 0; k + 1 < K - 1; k++) hist[k] = hist[k + 1];
            if (K > 1) hist[K - 2] = xin;
            xbc[(size_t)t * convk + ch] = silu(acc);
            if (mi < mk->n && t + 1 == mk->at[mi]) {
                float *sc = mk->snap[mi++]->conv[L->state_idx];
                for (int k = 0; k < K - 1; k++) sc[(size_t)k * conv_full + pc] = hist[k];
            }
        }
        for (int k = 0; k < K - 1; k++) cst[(size_t)k * conv_full + pc] = hist[k];
    }

    /* dt = softplus(dt_raw + dt_bias), optionally clamped by time_step_limit */
    for (int t = 0; t < T; t++)
        for (int i = 0; i < nk; i++) {
            int h = b->m_heads[i];
            float v = softplus(zx[(size_t)t * M + 2 * din + 2 * G * N + i] + L->dt_bias[h]);
            if (v < c->time_step_limit_min) v = c->time_step_limit_min;
            if (v > c->time_step_limit_max) v = c->time_step_limit_max;
            dt[(size_t)t * nk + i] = v;
        }

    /* selective scan: S = S·exp(dt·A) + dt·x⊗B ; y = S·C + D·x (per head, in order) */
    float *ssm = s->ssm[L->state_idx]; /* [nh][P][N] */
#pragma omp parallel for schedule(static) num_threads(st_get_threads()) if (nk > 1 && (size_t)T * Pk * N > 2048)
    for (int i = 0; i < nk; i++) {
        int h = b->m_heads[i], g = h / R;
        float A = L->A[h], Dh = L->D[h];
        float *S = ssm + (size_t)h * P * N;
        for (int t = 0, mi = 0; t < T; t++) {
            const float *xr = xbc + (size_t)t * convk;
            const float *x = xr + (size_t)i * Pk, *B = xr + din + (size_t)g * N, *C = xr + din + (size_t)G * N + (size_t)g * N;
            float d = dt[(size_t)t * nk + i], dA = expf(d * A);
            float *yo = y + (size_t)t * din + (size_t)i * Pk;
            for (int p = 0; p < Pk; p++) {
                float *Sp = S + (size_t)p * N, dx = d * x[p], acc = 0;
                for (int n = 0; n < N; n++) {
                    Sp[n] = Sp[n] * dA + dx * B[n];
                    acc += Sp[n] * C[n];
                }
                yo[p] = acc + Dh * x[p];
            }
            if (mi < mk->n && t + 1 == mk->at[mi]) /* rows p >= Pk are untouched, as in the copy */
                memcpy(mk->snap[mi++]->ssm[L->state_idx] + (size_t)h * P * N, S, sizeof(float) * (size_t)P * N);
        }
    }

    /* gate then grouped RMSNorm: group g = the kept heads of B/C group g */
    const int gsz = b->m_r * Pk;
    for (int t = 0; t < T; t++) {
        float *yr = y + (size_t)t * din;
        const float *z = zx + (size_t)t * M;
        for (int j = 0; j < din; j++) yr[j] *= silu(z[j]);
        for (int g = 0; g < G; g++) {
            float *v = yr + (size_t)g * gsz;
            double ss = 0;
            for (int j = 0; j < gsz; j++) ss += (double)v[j] * v[j];
            float r = 1.0f / sqrtf((float)(ss / gsz) + c->norm_eps);
            for (int j = 0; j < gsz; j++) {
                int i = g * b->m_r + j / Pk, p = j % Pk;
                v[j] = v[j] * r * L->gnorm[b->m_heads[i] * P + p];
            }
        }
    }
    const st_span hrows = {0, H};
    mm(&L->out_proj, &hrows, 1, b->m_cols, b->m_n_cols, y, din, out, H, T, 0);
}

/* ------------------------------------------------------------ attention */

static void attn_forward(const st_budget *b, const st_layer *L, st_state *s, const float *u, float *out, int T,
                         bump *ws, const marks *mk) {
    const st_config *c = &b->m->cfg;
    const int H = b->w.hidden_size, hd = c->head_dim, nkv = c->num_key_value_heads, qk = b->a_qk;
    const int nq = qk * nkv, qd = nq * hd, kvd = nkv * hd, pos = s->pos, ctx = pos + T;
    const st_span hcols = {0, H}, kvrows = {0, kvd};
    float *q = take(ws, (size_t)T * qd);  /* [T][nq·hd] packed kept heads */
    float *o = take(ws, (size_t)T * qd);  /* [T][nq·hd] */
    int nth = st_get_threads();
    float *scores = take(ws, (size_t)(nth + 1) * ctx);
    float *K = s->k_cache[L->state_idx], *V = s->v_cache[L->state_idx]; /* [cap][nkv·hd] */
    mm(&L->wq, b->a_q_rows, b->a_n_q, &hcols, 1, u, H, q, qd, T, 0);
    mm(&L->wk, &kvrows, 1, &hcols, 1, u, H, K + (size_t)pos * kvd, kvd, T, 0);
    mm(&L->wv, &kvrows, 1, &hcols, 1, u, H, V + (size_t)pos * kvd, kvd, T, 0);
    for (int k = 0; k < mk->n; k++) { /* the new K/V rows before the mark */
        st_state *sn = mk->snap[k];
        memcpy(sn->k_cache[L->state_idx] + (size_t)pos * kvd, K + (size_t)pos * kvd, sizeof(float) * (size_t)mk->at[k] * kvd);
        memcpy(sn->v_cache[L->state_idx] + (size_t)pos * kvd, V + (size_t)pos * kvd, sizeof(float) * (size_t)mk->at[k] * kvd);
    }
    const float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for collapse(2) schedule(dynamic, 1) num_threads(nth) if ((size_t)T * nq * ctx > 4096)
    for (int t = 0; t < T; t++)
        for (int i = 0; i < nq; i++) {
            float *sc = scores + (size_t)omp_get_thread_num() * ctx;
            int kvh = i / qk, n = pos + t + 1; /* causal: positions 0..pos+t */
            const float *qi = q + (size_t)t * qd + (size_t)i * hd;
            float mx = -INFINITY;
            for (int j = 0; j < n; j++) {
                const float *kj = K + (size_t)j * kvd + (size_t)kvh * hd;
                float d = 0;
                for (int e = 0; e < hd; e++) d += qi[e] * kj[e];
                sc[j] = d * scale;
                if (sc[j] > mx) mx = sc[j];
            }
            float sum = 0;
            for (int j = 0; j < n; j++) { sc[j] = expf(sc[j] - mx); sum += sc[j]; }
            float inv = 1.0f / sum;
            float *oi = o + (size_t)t * qd + (size_t)i * hd;
            for (int e = 0; e < hd; e++) oi[e] = 0;
            for (int j = 0; j < n; j++) {
                const float *vj = V + (size_t)j * kvd + (size_t)kvh * hd;
                float p = sc[j] * inv;
                for (int e = 0; e < hd; e++) oi[e] += p * vj[e];
            }
        }
    const st_span hrows = {0, H};
    mm(&L->wo, &hrows, 1, b->a_q_rows, b->a_n_q, o, qd, out, H, T, 0);
}

/* ------------------------------------------------------------ MLP / MoE */

static void mlp_forward(const st_budget *b, const st_layer *L, const float *u, float *out, int T, bump *ws) {
    const int H = b->w.hidden_size, I = b->w.intermediate_size;
    const st_span hs = {0, H}, is = {0, I};
    float *h = take(ws, (size_t)T * I);
    mm(&L->up, &is, 1, &hs, 1, u, H, h, I, T, 0);
    relu2(h, (size_t)T * I);
    mm(&L->down, &hs, 1, &is, 1, h, I, out, H, T, 0);
}

/* Router (docs/architecture.md §2.6): sigmoid scores; choose top-k by score +
 * correction bias (optionally within the best topk_group groups); weight by the
 * unbiased scores, renormalised if norm_topk_prob, times the scaling factor. */
static void moe_route(const st_budget *b, const st_layer *L, const float *logits, int *idx, float *wt) {
    const st_config *c = &b->m->cfg;
    const int E = b->w.n_routed_experts, k = b->top_k;
    float s[E], sel[E];
    for (int e = 0; e < E; e++) {
        s[e] = 1.0f / (1.0f + expf(-logits[e]));
        sel[e] = s[e] + L->e_bias[e];
    }
    if (c->n_group > 1) {
        int per = E / c->n_group;
        float gs[c->n_group];
        for (int g = 0; g < c->n_group; g++) { /* group score: sum of its top-2 */
            float a = -INFINITY, bb = -INFINITY;
            for (int e = g * per; e < (g + 1) * per; e++) {
                if (sel[e] > a) { bb = a; a = sel[e]; } else if (sel[e] > bb) bb = sel[e];
            }
            gs[g] = a + (per > 1 ? bb : 0);
        }
        for (int kept = 0; kept < c->topk_group; kept++) {
            int best = -1;
            for (int g = 0; g < c->n_group; g++) if (gs[g] > -INFINITY && (best < 0 || gs[g] > gs[best])) best = g;
            if (best >= 0) gs[best] = INFINITY; /* mark kept */
        }
        for (int g = 0; g < c->n_group; g++)
            if (gs[g] != INFINITY) for (int e = g * per; e < (g + 1) * per; e++) sel[e] = -INFINITY;
    }
    float sum = 0;
    for (int j = 0; j < k; j++) { /* k is small: selection by repeated max, lowest index on ties */
        int best = -1;
        for (int e = 0; e < E; e++) {
            int taken = 0;
            for (int q = 0; q < j; q++) taken |= idx[q] == e;
            if (!taken && (best < 0 || sel[e] > sel[best])) best = e;
        }
        idx[j] = best;
        wt[j] = s[best];
        sum += s[best];
    }
    for (int j = 0; j < k; j++) {
        if (c->norm_topk_prob) wt[j] /= (sum + 1e-20f);
        wt[j] *= c->routed_scaling_factor;
    }
}

static void moe_forward(const st_budget *b, const st_layer *L, const float *u, float *out, int T, bump *ws) {
    const st_config *c = &b->m->cfg;
    const int H = b->w.hidden_size, E = b->w.n_routed_experts, k = b->top_k, F = b->w.moe_intermediate_size;
    const st_span hs = {0, H}, es = {0, E}, fs = {0, F};
    float *lg = take(ws, (size_t)T * E);
    int *idx = (int *)take(ws, (size_t)T * k);
    float *wt = take(ws, (size_t)T * k);
    int *tok = (int *)take(ws, (size_t)T * k);  /* tokens routed to the current expert */
    float *tw = take(ws, (size_t)T * k);
    float *xe = take(ws, (size_t)T * H), *he = take(ws, (size_t)T * F), *oe = take(ws, (size_t)T * H);
    mm(&L->gate, &es, 1, &hs, 1, u, H, lg, E, T, 0);
    for (int t = 0; t < T; t++) moe_route(b, L, lg + (size_t)t * E, idx + (size_t)t * k, wt + (size_t)t * k);
    memset(out, 0, sizeof(float) * (size_t)T * H);
    /* group tokens by expert so each expert's weights are read once per call */
    for (int e = 0; e < E; e++) {
        int n = 0;
        for (int t = 0; t < T; t++)
            for (int j = 0; j < k; j++)
                if (idx[t * k + j] == e) { tok[n] = t; tw[n] = wt[t * k + j]; n++; }
        if (!n) continue;
        for (int i = 0; i < n; i++) memcpy(xe + (size_t)i * H, u + (size_t)tok[i] * H, sizeof(float) * H);
        mm(&L->exp_up[e], &fs, 1, &hs, 1, xe, H, he, F, n, 0);
        relu2(he, (size_t)n * F);
        mm(&L->exp_down[e], &hs, 1, &fs, 1, he, F, oe, H, n, 0);
        for (int i = 0; i < n; i++) {
            float *o = out + (size_t)tok[i] * H, *src = oe + (size_t)i * H, w = tw[i];
            for (int j = 0; j < H; j++) o[j] += w * src[j];
        }
    }
    if (c->n_shared_experts) {
        const int Fs = b->w.moe_shared_expert_intermediate_size;
        const st_span ss = {0, Fs};
        float *hsx = take(ws, (size_t)T * Fs);
        mm(&L->sh_up, &ss, 1, &hs, 1, u, H, hsx, Fs, T, 0);
        relu2(hsx, (size_t)T * Fs);
        mm(&L->sh_down, &hs, 1, &ss, 1, hsx, Fs, out, H, T, 1);
    }
}

/* ------------------------------------------------------------ driver */

void st_budget_key(const st_budget *b, char *key, size_t n) {
    const st_widths *w = &b->w;
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < w->n_skip; i++) h = (h ^ (uint64_t)w->skip_layers[i]) * 1099511628211ull;
    snprintf(key, n, "%d/%d/%d/%d/%d/%d/%d/%d/%d/%d:%llx", w->hidden_size, w->num_attention_heads, w->mamba_num_heads,
             w->mamba_head_dim, w->n_routed_experts, w->moe_intermediate_size, w->moe_shared_expert_intermediate_size,
             w->intermediate_size, b->top_k, w->n_skip, (unsigned long long)h);
}

st_status st_forward(const st_budget *b, st_state *s, const int32_t *tokens, int n, float *logits, int all_logits) {
    return st_forward_snap(b, s, tokens, n, logits, all_logits, NULL, 0, NULL);
}

st_status st_forward_snap(const st_budget *b, st_state *s, const int32_t *tokens, int n, float *logits, int all_logits,
                          const int *at, int n_at, st_state **snap) {
    const st_model *m = b->m;
    const st_config *c = &m->cfg;
    if (s->m != m) return st_err(ST_ERR_ARG, "st_forward: state and budget belong to different models");
    if (n <= 0) return st_err(ST_ERR_ARG, "st_forward: no tokens");
    char key[sizeof s->budget_key];
    st_budget_key(b, key, sizeof key);
    if (s->has_budget && strcmp(key, s->budget_key))
        return st_err(ST_ERR_ARG, "st_forward: this state was computed at another budget (reset it first)");
    if (s->pos + n > s->max_ctx)
        return st_err(ST_ERR_RANGE, "context full: %d + %d tokens exceed the %d-token limit", s->pos, n, s->max_ctx);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return st_err(ST_ERR_RANGE, "token id %d at position %d is outside the vocabulary [0, %d)", tokens[i], i,
                          c->vocab_size);
    st_status rc = st_state_reserve(s, s->pos + n);
    if (rc) return rc;
    size_t need = ws_need(b, n, s->pos + n);
    if (need > s->ws_cap) {
        free(s->ws);
        s->ws = st_aligned_alloc(need * sizeof(float));
        s->ws_cap = s->ws ? need : 0;
        if (!s->ws) return ST_ERR_NOMEM;
    }
    if (n_at < 0 || n_at > ST_FWD_MAX_SNAP) return st_err(ST_ERR_ARG, "st_forward: %d snapshots (at most %d)", n_at, ST_FWD_MAX_SNAP);
    for (int k = 0; k < n_at; k++)
        if (at[k] <= (k ? at[k - 1] : 0) || at[k] >= n || snap[k]->m != m || snap[k] == s)
            return st_err(ST_ERR_ARG, "st_forward: bad snapshot %d at %d of %d tokens", k, at[k], n);
    /* each snapshot starts as the state before the pass (what the pass does
     * not touch stays so); the layers then write what they computed up to it */
    for (int k = 0; k < n_at; k++) {
        st_state *sn = snap[k];
        if (s->pos + at[k] > sn->max_ctx)
            return st_err(ST_ERR_RANGE, "st_forward: a snapshot of %d positions exceeds its %d-position limit",
                          s->pos + at[k], sn->max_ctx);
        if ((rc = st_state_reserve(sn, s->pos + at[k])) || (rc = st_state_copy(sn, s))) return rc;
        sn->pos = s->pos + at[k];
    }
    memcpy(s->budget_key, key, sizeof key);
    snprintf(s->budget_name, sizeof s->budget_name, "%s", b->name);
    s->budget_w = b->w;
    s->has_budget = 1;
    for (int k = 0; k < n_at; k++) {
        memcpy(snap[k]->budget_key, s->budget_key, sizeof s->budget_key);
        memcpy(snap[k]->budget_name, s->budget_name, sizeof s->budget_name);
        snap[k]->budget_w = s->budget_w;
        snap[k]->has_budget = 1;
    }
    const marks mk = {at, n_at, snap};

    const int H = b->w.hidden_size, T = n;
    bump ws = {s->ws, 0, s->ws_cap};
    float *x = take(&ws, (size_t)T * H);  /* residual stream [T][H'] */
    float *u = take(&ws, (size_t)T * H);  /* normed input    [T][H'] */
    float *o = take(&ws, (size_t)T * H);  /* mixer output    [T][H'] */
    size_t mark = ws.used;
    for (int t = 0; t < T; t++) st_mat_row_f32(&m->embed, tokens[t], 0, H, x + (size_t)t * H);
    for (int l = 0; l < c->n_layers; l++) {
        if (b->skip[l]) continue;
        const st_layer *L = &m->layers[l];
        for (int t = 0; t < T; t++) rmsnorm(u + (size_t)t * H, x + (size_t)t * H, L->norm, H, c->norm_eps);
        ws.used = mark;
        switch (L->type) {
        case 'M': mamba_forward(b, L, s, u, o, T, &ws, &mk); break;
        case '*': attn_forward(b, L, s, u, o, T, &ws, &mk); break;
        case '-': mlp_forward(b, L, u, o, T, &ws); break;
        case 'E': moe_forward(b, L, u, o, T, &ws); break;
        }
        for (size_t i = 0; i < (size_t)T * H; i++) x[i] += o[i];
    }
    s->pos += n;
    if (logits) {
        int t0 = all_logits ? 0 : T - 1, nt = T - t0;
        for (int t = t0; t < T; t++) rmsnorm(u + (size_t)(t - t0) * H, x + (size_t)t * H, m->norm_f, H, c->norm_eps);
        const st_span vs = {0, c->vocab_size}, hs = {0, H};
        mm(&m->lm_head, &vs, 1, &hs, 1, u, H, logits, c->vocab_size, nt, 0);
    }
    return ST_OK;
}

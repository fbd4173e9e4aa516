/*
 * forward.c — the Nemotron-H forward pass at a budget (docs/architecture.md §2).
 *
 *   h = E[tok][:H']
 *   for each layer not skipped:  h += Mixer(RMSNorm_H'(h))
 *   logits = lm_head[:, :H'] · RMSNorm_H'(h)
 *
 * One code path serves a batch of sequences, each with any number of new
 * tokens (decode steps and prompt chunks mixed), and the single sequence as
 * its one-item case: the R = Σ n_i rows of all items form one activation
 * matrix, so every matrix product streams its weights once for all of them
 * (the MoE layer groups the rows routed to each expert across sequences);
 * the recurrences (conv, SSM scan, causal attention) run per sequence over
 * its own state and rows, in parallel across sequences and heads.
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

/* Snapshots to take inside a pass: after token at[k]-1 of the item's rows;
 * recurrent: conv/SSM state and position only (no KV rows). */
typedef struct { const int *at; int n; st_state **snap; int recurrent; } marks;

/* The sequences of one pass: item i owns rows [off[i], off[i] + n[i]) of
 * every activation matrix; row r belongs to item seq_of[r]; mk[i] are its
 * in-pass snapshots. */
typedef struct {
    int B, R;
    st_state *const *s;
    const int *off, *n, *seq_of;
    const marks *mk;
} batch;

/* Routed rows the MoE layer handles at once (its workspace): every routed
 * row of a decode step (T·k), at most max(T, 512) rows of a prompt chunk. */
static size_t moe_rows(size_t T, size_t k) {
    const size_t all = T * k;
    return all <= 512 || all <= T ? all : (T > 512 ? T : 512);
}

/* floats that hold n st_mm_job (the MoE layer's product groups) */
static size_t jobs_floats(size_t n) { return (n * sizeof(st_mm_job) + sizeof(float) - 1) / sizeof(float); }

/* Floats of workspace one forward call of T rows needs at budget b (ctx:
 * the longest context of its sequences; lg: floats of gathered logits). */
static size_t ws_need(const st_budget *b, int T, int ctx, size_t lg) {
    const st_config *c = &b->m->cfg;
    const st_widths *w = &b->w;
    size_t H = (size_t)w->hidden_size, t = (size_t)T, nth = (size_t)st_get_threads() + 1;
    size_t need = 3 * rup(t * H) + 64;
    size_t mam = 0, att = 0, mlp = 0, moe = 0;
    if (b->m_inproj_n) {
        size_t conv = (size_t)b->m_din + 2 * (size_t)c->n_groups * c->ssm_state_size;
        mam = rup(t * (size_t)b->m_inproj_n) + rup(t * conv) + rup(t * (size_t)b->m_din) + rup(t * b->m_r * c->n_groups) +
              rup((size_t)b->m_din) + rup((size_t)b->m_r * c->n_groups);
    }
    if (b->a_n_q) {
        size_t q = (size_t)w->num_attention_heads * c->head_dim;
        att = 2 * rup(t * q) + rup(nth * (size_t)ctx) + 2 * rup(t * (size_t)c->num_key_value_heads * c->head_dim);
    }
    if (strchr(c->pattern, '-')) mlp = rup(t * (size_t)w->intermediate_size);
    if (strchr(c->pattern, 'E')) {
        size_t E = (size_t)w->n_routed_experts, k = (size_t)b->top_k, F = (size_t)w->moe_intermediate_size;
        size_t cap = moe_rows(t, k);
        moe = rup(t * E) + 2 * rup(t * k) + 2 * rup(t * k) + rup(cap * H) + rup(cap * F) + rup(cap * H) +
              rup(t * (size_t)w->moe_shared_expert_intermediate_size) + rup(t * H) + rup(E + 1) +
              2 * rup(jobs_floats(E + 1));
    }
    size_t mx = mam;
    if (att > mx) mx = att;
    if (mlp > mx) mx = mlp;
    if (moe > mx) mx = moe;
    return need + mx + rup(lg);
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

static void mm_group(const st_mm_job *jobs, int n) {
    if (t_rec)
        for (int i = 0; i < n; i++) {
            int nc = 0;
            for (int c = 0; c < jobs[i].n_cs; c++) nc += jobs[i].cs[c].len;
            record(jobs[i].W, jobs[i].x, jobs[i].ldx, nc, jobs[i].T);
        }
    st_matmul_group(jobs, n);
}

/* Op-class timing for st_prof (kernels.h): a clock read per section only
 * while a profile is attached to this thread. Sections never nest a matmul,
 * which accounts for itself. */
static inline double prof_t0(void) { return st_prof_attached() ? st_time() : 0; }
static inline void prof_add(st_prof_class c, double t0) {
    st_prof *p = st_prof_attached();
    if (p) p->s[c] += st_time() - t0;
}

/* ------------------------------------------------------------ Mamba-2 */

/*
 * u: [T][H'] normed input; out: [T][H'] mixer output.
 * Packed in_proj output row: z [din'] | x [din'] | B [G·N] | C [G·N] | dt [nk]
 * where din' = nk·P', nk = r·G kept heads (first r of each group).
 */
static void mamba_forward(const st_budget *b, const st_layer *L, const batch *bt, const float *u, float *out,
                          bump *ws) {
    const st_config *c = &b->m->cfg;
    const int H = b->w.hidden_size, G = c->n_groups, N = c->ssm_state_size, K = c->conv_kernel;
    const int P = c->mamba_head_dim, Pk = b->m_P, nk = b->m_r * G, din = b->m_din, R = c->mamba_num_heads / G;
    const int Din = c->mamba_num_heads * P, conv_full = Din + 2 * G * N, convk = din + 2 * G * N;
    const int M = b->m_inproj_n, T = bt->R, B = bt->B;
    const st_span hcols = {0, H};

    float *zx = take(ws, (size_t)T * M);          /* [T][M]      */
    float *xbc = take(ws, (size_t)T * convk);     /* [T][convk]  post conv+SiLU */
    float *y = take(ws, (size_t)T * din);         /* [T][din]    */
    float *dt = take(ws, (size_t)T * nk);         /* [T][nk]     */
    float *gw = take(ws, (size_t)din);            /* [din]  gnorm weights of the kept channels */
    float *dtb = take(ws, (size_t)nk);            /* [nk]   dt_bias of the kept heads */
    mm(&L->in_proj, b->m_inproj_rows, b->m_n_inproj_rows, &hcols, 1, u, H, zx, M, T, 0);

    /* causal depthwise conv over x, B, C (raw history in each sequence's
     * state), then SiLU; channels of all sequences in parallel, each in
     * segments between the item's snapshot marks */
    const double tp = prof_t0();
#pragma omp parallel for collapse(2) schedule(static) num_threads(st_get_threads()) if (T * convk > 32768)
    for (int q = 0; q < B; q++)
        for (int ch = 0; ch < convk; ch++) {
            float *cst = bt->s[q]->conv[L->state_idx]; /* [(K−1)][conv_full] */
            int pc = b->m_conv_ch[ch];
            float hist[64];
            for (int k = 0; k < K - 1; k++) hist[k] = cst[(size_t)k * conv_full + pc];
            const marks *mk = &bt->mk[q];
            for (int t0 = 0, mi = 0; t0 < bt->n[q]; mi++) {
                const int t1 = mi < mk->n ? mk->at[mi] : bt->n[q];
                const size_t r0 = (size_t)bt->off[q] + (size_t)t0;
                st_conv_chunk(hist, K, L->conv_w + (size_t)pc * K, L->conv_b[pc], zx + r0 * M + din + ch, M, t1 - t0,
                              xbc + r0 * convk + ch, NULL, convk);
                if (mi < mk->n) {
                    float *sc = mk->snap[mi]->conv[L->state_idx];
                    for (int k = 0; k < K - 1; k++) sc[(size_t)k * conv_full + pc] = hist[k];
                }
                t0 = t1;
            }
            for (int k = 0; k < K - 1; k++) cst[(size_t)k * conv_full + pc] = hist[k];
        }

    /* dt = softplus(dt_raw + dt_bias), optionally clamped by time_step_limit */
    for (int i = 0; i < nk; i++) dtb[i] = L->dt_bias[b->m_heads[i]];
    for (int t = 0; t < T; t++)
        st_softplus_clamp(dt + (size_t)t * nk, zx + (size_t)t * M + 2 * din + 2 * G * N, dtb, nk,
                          c->time_step_limit_min, c->time_step_limit_max);

    /* selective scan: S = S·exp(dt·A) + dt·x⊗B ; y = S·C + D·x (per head, in
     * order over each sequence's rows; heads of all sequences in parallel) */
#pragma omp parallel for collapse(2) schedule(static) num_threads(st_get_threads()) \
    if (B * nk > 1 && (size_t)T * Pk * N * nk > 65536)
    for (int q = 0; q < B; q++)
        for (int i = 0; i < nk; i++) {
            int h = b->m_heads[i], g = h / R;
            float A = L->A[h], Dh = L->D[h];
            float *S = bt->s[q]->ssm[L->state_idx] + (size_t)h * P * N;
            const marks *mk = &bt->mk[q];
            /* in segments between the item's snapshot marks */
            for (int t0 = 0, mi = 0; t0 < bt->n[q]; mi++) {
                const int t1 = mi < mk->n ? mk->at[mi] : bt->n[q];
                const size_t r0 = (size_t)bt->off[q] + (size_t)t0;
                const float *xr = xbc + r0 * convk;
                /* the kept channels are the first Pk rows of the head's [P][N] state */
                st_ssm_scan(S, Pk, N, xr + (size_t)i * Pk, xr + din + (size_t)g * N,
                            xr + din + (size_t)G * N + (size_t)g * N, convk, dt + r0 * nk + i, nk, A, Dh,
                            y + r0 * din + (size_t)i * Pk, din, t1 - t0);
                if (mi < mk->n) /* rows p >= Pk are untouched, as in the copy */
                    memcpy(mk->snap[mi]->ssm[L->state_idx] + (size_t)h * P * N, S, sizeof(float) * (size_t)P * N);
                t0 = t1;
            }
        }

    /* gate then grouped RMSNorm: group g = the kept heads of B/C group g
     * (norm weights of kept head i, channel p at gnorm[m_heads[i]·P + p]) */
    const int gsz = b->m_r * Pk;
    for (int i = 0; i < nk; i++) memcpy(gw + (size_t)i * Pk, L->gnorm + (size_t)b->m_heads[i] * P, sizeof(float) * Pk);
    for (int t = 0; t < T; t++)
        st_gated_rmsnorm(y + (size_t)t * din, y + (size_t)t * din, zx + (size_t)t * M, G, gsz, gsz, gw, c->norm_eps, NULL);
    prof_add(ST_PROF_MAMBA, tp);
    const st_span hrows = {0, H};
    mm(&L->out_proj, &hrows, 1, b->m_cols, b->m_n_cols, y, din, out, H, T, 0);
}

/* ------------------------------------------------------------ attention */

static void attn_forward(const st_budget *b, const st_layer *L, const batch *bt, const float *u, float *out,
                         bump *ws) {
    const st_config *c = &b->m->cfg;
    const int H = b->w.hidden_size, hd = c->head_dim, nkv = c->num_key_value_heads, qk = b->a_qk;
    const int nq = qk * nkv, qd = nq * hd, kvd = nkv * hd, T = bt->R, B = bt->B;
    const st_span hcols = {0, H}, kvrows = {0, kvd};
    int ctx = 0;
    for (int q = 0; q < B; q++)
        if (bt->s[q]->pos + bt->n[q] > ctx) ctx = bt->s[q]->pos + bt->n[q];
    float *q = take(ws, (size_t)T * qd);  /* [T][nq·hd] packed kept heads */
    float *o = take(ws, (size_t)T * qd);  /* [T][nq·hd] */
    int nth = st_get_threads();
    float *scores = take(ws, (size_t)(nth + 1) * ctx);
    mm(&L->wq, b->a_q_rows, b->a_n_q, &hcols, 1, u, H, q, qd, T, 0);
    if (B == 1) { /* straight into the sequence's cache [cap][nkv·hd] */
        st_state *s = bt->s[0];
        mm(&L->wk, &kvrows, 1, &hcols, 1, u, H, s->k_cache[L->state_idx] + (size_t)s->pos * kvd, kvd, T, 0);
        mm(&L->wv, &kvrows, 1, &hcols, 1, u, H, s->v_cache[L->state_idx] + (size_t)s->pos * kvd, kvd, T, 0);
    } else { /* all rows at once, then each sequence's rows to its cache */
        float *kt = take(ws, (size_t)T * kvd), *vt = take(ws, (size_t)T * kvd);
        mm(&L->wk, &kvrows, 1, &hcols, 1, u, H, kt, kvd, T, 0);
        mm(&L->wv, &kvrows, 1, &hcols, 1, u, H, vt, kvd, T, 0);
        for (int i = 0; i < B; i++) {
            st_state *s = bt->s[i];
            const size_t n = (size_t)bt->n[i] * kvd, r0 = (size_t)bt->off[i] * kvd;
            memcpy(s->k_cache[L->state_idx] + (size_t)s->pos * kvd, kt + r0, sizeof(float) * n);
            memcpy(s->v_cache[L->state_idx] + (size_t)s->pos * kvd, vt + r0, sizeof(float) * n);
        }
    }
    for (int i = 0; i < B; i++) { /* snapshots: the new K/V rows before each mark */
        const st_state *s = bt->s[i];
        const marks *mk = &bt->mk[i];
        if (mk->recurrent) continue;
        for (int k = 0; k < mk->n; k++) {
            st_state *sn = mk->snap[k];
            const size_t at = (size_t)s->pos * kvd, len = sizeof(float) * (size_t)mk->at[k] * kvd;
            memcpy(sn->k_cache[L->state_idx] + at, s->k_cache[L->state_idx] + at, len);
            memcpy(sn->v_cache[L->state_idx] + at, s->v_cache[L->state_idx] + at, len);
        }
    }
    const float scale = 1.0f / sqrtf((float)hd);
    const double tp = prof_t0();
    size_t work = 0;
    for (int i = 0; i < B; i++) work += (size_t)bt->n[i] * nq * (bt->s[i]->pos + bt->n[i]);
#pragma omp parallel for collapse(2) schedule(dynamic, 1) num_threads(nth) if (work * hd > 262144)
    for (int t = 0; t < T; t++)
        for (int i = 0; i < nq; i++) {
            const int sq = bt->seq_of[t], kvh = i / qk;
            const st_state *s = bt->s[sq];
            /* causal: positions 0 .. pos + (row within its sequence) */
            st_attn_head(q + (size_t)t * qd + (size_t)i * hd, s->k_cache[L->state_idx] + (size_t)kvh * hd,
                         s->v_cache[L->state_idx] + (size_t)kvh * hd, kvd, s->pos + (t - bt->off[sq]) + 1, hd, scale,
                         scores + (size_t)omp_get_thread_num() * ctx, o + (size_t)t * qd + (size_t)i * hd);
        }
    prof_add(ST_PROF_ATTN, tp);
    const st_span hrows = {0, H};
    mm(&L->wo, &hrows, 1, b->a_q_rows, b->a_n_q, o, qd, out, H, T, 0);
}

/* ------------------------------------------------------------ MLP / MoE */

static void mlp_forward(const st_budget *b, const st_layer *L, const float *u, float *out, int T, bump *ws) {
    const int H = b->w.hidden_size, I = b->w.intermediate_size;
    const st_span hs = {0, H}, is = {0, I};
    float *h = take(ws, (size_t)T * I);
    mm(&L->up, &is, 1, &hs, 1, u, H, h, I, T, 0);
    st_relu2(h, h, (size_t)T * I);
    mm(&L->down, &hs, 1, &is, 1, h, I, out, H, T, 0);
}

/* The routed experts in batches of at most moe_rows rows (one batch for a
 * decode step). A batch runs as two groups of products (st_matmul_group):
 * every expert's up projection (with the shared expert's), then every
 * down projection, each group one parallel region in which the threads move
 * from one expert's rows to the next without waiting: one fork/join for the
 * k experts instead of 2k, and the short expert products stream back to
 * back. The outputs are summed in expert order, then the shared expert's, as
 * one expert at a time would (the same bits on the decode path). */
static void moe_forward(const st_budget *b, const st_layer *L, const float *u, float *out, int T, bump *ws) {
    const st_config *c = &b->m->cfg;
    const int H = b->w.hidden_size, E = b->w.n_routed_experts, k = b->top_k, F = b->w.moe_intermediate_size;
    const int Fs = c->n_shared_experts ? b->w.moe_shared_expert_intermediate_size : 0;
    const st_span hs = {0, H}, es = {0, E}, fs = {0, F}, ss = {0, Fs};
    const int cap = (int)moe_rows((size_t)T, (size_t)k);
    float *lg = take(ws, (size_t)T * E);
    int32_t *idx = (int32_t *)take(ws, (size_t)T * k);
    float *wt = take(ws, (size_t)T * k);
    int *tok = (int *)take(ws, (size_t)T * k); /* routed rows, expert by expert */
    float *tw = take(ws, (size_t)T * k);
    float *xe = take(ws, (size_t)cap * H), *he = take(ws, (size_t)cap * F), *oe = take(ws, (size_t)cap * H);
    float *hsx = Fs ? take(ws, (size_t)T * Fs) : NULL, *sho = Fs ? take(ws, (size_t)T * H) : NULL;
    mm(&L->gate, &es, 1, &hs, 1, u, H, lg, E, T, 0);
    double tp = prof_t0();
    /* router (st_moe_route): sigmoid scores, top-k by score + correction bias */
    const st_route_cfg rc = {c->n_group, c->topk_group, c->norm_topk_prob, c->routed_scaling_factor};
    for (int t = 0; t < T; t++) st_moe_route(lg + (size_t)t * E, L->e_bias, E, k, &rc, idx + (size_t)t * k, wt + (size_t)t * k);
    memset(out, 0, sizeof(float) * (size_t)T * H);
    /* rows grouped by expert, each expert's weights read once per call */
    int *n_e = (int *)take(ws, (size_t)E + 1), nr = 0;
    for (int e = 0; e < E; e++) {
        n_e[e] = 0;
        for (int t = 0; t < T; t++)
            for (int j = 0; j < k; j++)
                if (idx[t * k + j] == e) { tok[nr] = t; tw[nr] = wt[t * k + j]; nr++; n_e[e]++; }
    }
    st_mm_job *up = (st_mm_job *)take(ws, jobs_floats((size_t)E + 1));
    st_mm_job *down = (st_mm_job *)take(ws, jobs_floats((size_t)E + 1));
    for (int e0 = 0, r0 = 0, first = 1; e0 < E || first;) {
        /* the batch: experts e0 .. e1-1, routed rows r0 .. r1-1 */
        int e1 = e0, r1 = r0, nj = 0;
        while (e1 < E && r1 + n_e[e1] - r0 <= cap) r1 += n_e[e1++];
        for (int r = r0; r < r1; r++) memcpy(xe + (size_t)(r - r0) * H, u + (size_t)tok[r] * H, sizeof(float) * H);
        prof_add(ST_PROF_ROUTE, tp);
        for (int e = e0, r = r0; e < e1; r += n_e[e++]) {
            if (!n_e[e]) continue;
            const size_t o = (size_t)(r - r0);
            up[nj] = (st_mm_job){&L->exp_up[e], &fs, &hs, 1, 1, xe + o * H, H, he + o * F, F, n_e[e], 0};
            down[nj] = (st_mm_job){&L->exp_down[e], &hs, &fs, 1, 1, he + o * F, F, oe + o * H, H, n_e[e], 0};
            nj++;
        }
        if (first && Fs) { /* the shared expert joins the first batch */
            up[nj] = (st_mm_job){&L->sh_up, &ss, &hs, 1, 1, u, H, hsx, Fs, T, 0};
            down[nj] = (st_mm_job){&L->sh_down, &hs, &ss, 1, 1, hsx, Fs, sho, H, T, 0};
            nj++;
        }
        mm_group(up, nj);
        st_relu2(he, he, (size_t)(r1 - r0) * F);
        if (first && Fs) st_relu2(hsx, hsx, (size_t)T * Fs);
        mm_group(down, nj);
        tp = prof_t0();
        for (int r = r0; r < r1; r++) {
            float *o = out + (size_t)tok[r] * H, *src = oe + (size_t)(r - r0) * H, w = tw[r];
            for (int j = 0; j < H; j++) o[j] += w * src[j];
        }
        e0 = e1;
        r0 = r1;
        first = 0;
    }
    prof_add(ST_PROF_ROUTE, tp);
    if (Fs)
        for (size_t i = 0; i < (size_t)T * H; i++) out[i] += sho[i];
}

/* ------------------------------------------------------------ driver */


/* At most ST_BATCH_MAX items per call (the index arrays live on the stack).
 * mk: NULL, or in-pass snapshots per item (st_forward_snap). */
static st_status forward_batch(const st_budget *b, const st_batch_item *items, int n_items, const marks *mk_in) {
    const st_model *m = b->m;
    const st_config *c = &m->cfg;
    if (n_items <= 0 || n_items > ST_BATCH_MAX)
        return st_err(ST_ERR_ARG, "st_forward_batch: %d sequences (1 to %d)", n_items, ST_BATCH_MAX);
    const char *key = st_budget_key(b);
    /* everything is checked before any state changes */
    int R = 0, ctx = 0, n_lg = 0;
    for (int q = 0; q < n_items; q++) {
        const st_batch_item *it = &items[q];
        const st_state *s = it->state;
        const int n = it->n_tokens;
        if (!s || s->m != m) return st_err(ST_ERR_ARG, "st_forward: state and budget belong to different models");
        if (n <= 0 || !it->tokens) return st_err(ST_ERR_ARG, "st_forward: no tokens");
        for (int k = 0; k < q; k++)
            if (items[k].state == s) return st_err(ST_ERR_ARG, "st_forward_batch: sequence %d appears twice", q);
        if (s->has_budget && strcmp(key, s->budget_key))
            return st_err(ST_ERR_ARG, "st_forward: this state was computed at another budget (reset it first)");
        if (s->pos + n > s->max_ctx)
            return st_err(ST_ERR_RANGE, "context full: %d + %d tokens exceed the %d-token limit", s->pos, n, s->max_ctx);
        for (int i = 0; i < n; i++)
            if (it->tokens[i] < 0 || it->tokens[i] >= c->vocab_size)
                return st_err(ST_ERR_RANGE, "token id %d at position %d is outside the vocabulary [0, %d)",
                              it->tokens[i], i, c->vocab_size);
        if (n > INT32_MAX / 2 - R) return st_err(ST_ERR_RANGE, "st_forward_batch: too many tokens");
        R += n;
        if (s->pos + n > ctx) ctx = s->pos + n;
        if (it->logits) n_lg += it->all_logits ? n : 1;
    }
    static const marks none = {NULL, 0, NULL, 0};
    marks mks[ST_BATCH_MAX];
    for (int q = 0; q < n_items; q++) {
        const marks *mk = mk_in ? &mk_in[q] : &none;
        const st_state *s = items[q].state;
        const int n = items[q].n_tokens;
        if (mk->n < 0 || mk->n > ST_FWD_MAX_SNAP)
            return st_err(ST_ERR_ARG, "st_forward: %d snapshots (at most %d)", mk->n, ST_FWD_MAX_SNAP);
        for (int k = 0; k < mk->n; k++)
            if (mk->at[k] <= (k ? mk->at[k - 1] : 0) || mk->at[k] >= n || mk->snap[k]->m != m || mk->snap[k] == s)
                return st_err(ST_ERR_ARG, "st_forward: bad snapshot %d at %d of %d tokens", k, mk->at[k], n);
        mks[q] = *mk;
    }
    for (int q = 0; q < n_items; q++) {
        st_status rc = st_state_reserve(items[q].state, items[q].state->pos + items[q].n_tokens);
        if (rc) return rc;
    }
    /* each snapshot starts as the state before the pass (what the pass does
     * not touch stays so); the layers then write what they computed up to it.
     * Prepared before the states take the budget: a failure leaves them as
     * they were. */
    for (int q = 0; q < n_items; q++)
        for (int k = 0; k < mks[q].n; k++) {
            st_state *sn = mks[q].snap[k], *s = items[q].state;
            if (s->pos + mks[q].at[k] > sn->max_ctx)
                return st_err(ST_ERR_RANGE, "st_forward: a snapshot of %d positions exceeds its %d-position limit",
                              s->pos + mks[q].at[k], sn->max_ctx);
            st_status rc = mks[q].recurrent ? st_state_copy_recurrent(sn, s) : st_state_reserve(sn, s->pos + mks[q].at[k]);
            if (!rc && !mks[q].recurrent) rc = st_state_copy(sn, s);
            if (rc) return rc;
            sn->pos = s->pos + mks[q].at[k];
        }
    /* the workspace lives in the first sequence's state; logits of several
     * sequences come out of one lm_head product, gathered in it first */
    st_state *ws_owner = items[0].state;
    const size_t lg = n_items > 1 ? (size_t)n_lg * (size_t)c->vocab_size : 0;
    size_t need = ws_need(b, R, ctx, lg) + 2 * rup((size_t)R + (size_t)n_items);
    if (need > ws_owner->ws_cap) {
        free(ws_owner->ws);
        ws_owner->ws = st_aligned_alloc(need * sizeof(float));
        ws_owner->ws_cap = ws_owner->ws ? need : 0;
        if (!ws_owner->ws) return ST_ERR_NOMEM;
    }
    st_state *states[ST_BATCH_MAX];
    int off[ST_BATCH_MAX], nn[ST_BATCH_MAX];
    for (int q = 0, r = 0; q < n_items; q++) {
        st_state *s = items[q].state;
        snprintf(s->budget_key, sizeof s->budget_key, "%s", key);
        snprintf(s->budget_name, sizeof s->budget_name, "%s", b->name);
        s->budget_w = b->w;
        s->has_budget = 1;
        for (int k = 0; k < mks[q].n; k++) {
            st_state *sn = mks[q].snap[k];
            memcpy(sn->budget_key, s->budget_key, sizeof s->budget_key);
            memcpy(sn->budget_name, s->budget_name, sizeof s->budget_name);
            sn->budget_w = s->budget_w;
            sn->has_budget = 1;
        }
        states[q] = s;
        off[q] = r;
        nn[q] = items[q].n_tokens;
        r += nn[q];
    }

    const int H = b->w.hidden_size, T = R;
    bump ws = {ws_owner->ws, 0, ws_owner->ws_cap};
    int *seq_of = (int *)take(&ws, (size_t)T);  /* row -> its sequence */
    float *x = take(&ws, (size_t)T * H);  /* residual stream [T][H'] */
    float *u = take(&ws, (size_t)T * H);  /* normed input    [T][H'] */
    float *o = take(&ws, (size_t)T * H);  /* mixer output    [T][H'] */
    float *lgt = lg ? take(&ws, lg) : NULL; /* gathered logits [n_lg][V] */
    size_t mark = ws.used;
    for (int q = 0; q < n_items; q++)
        for (int t = 0; t < nn[q]; t++) {
            seq_of[off[q] + t] = q;
            st_mat_row_f32(&m->embed, items[q].tokens[t], 0, H, x + (size_t)(off[q] + t) * H);
        }
    const batch bt = {n_items, R, states, off, nn, seq_of, mks};
    for (int l = 0; l < c->n_layers; l++) {
        if (b->skip[l]) continue;
        const st_layer *L = &m->layers[l];
        const double tp = prof_t0();
        for (int t = 0; t < T; t++) st_rmsnorm(u + (size_t)t * H, x + (size_t)t * H, L->norm, H, c->norm_eps);
        prof_add(ST_PROF_NORM, tp);
        ws.used = mark;
        switch (L->type) {
        case 'M': mamba_forward(b, L, &bt, u, o, &ws); break;
        case '*': attn_forward(b, L, &bt, u, o, &ws); break;
        case '-': mlp_forward(b, L, u, o, T, &ws); break;
        case 'E': moe_forward(b, L, u, o, T, &ws); break;
        }
        for (size_t i = 0; i < (size_t)T * H; i++) x[i] += o[i];
    }
    for (int q = 0; q < n_items; q++) states[q]->pos += nn[q];
    if (n_lg) { /* the rows that want logits, normed into u, through one lm_head product */
        const double tp = prof_t0();
        int nt = 0;
        for (int q = 0; q < n_items; q++) {
            if (!items[q].logits) continue;
            for (int t = items[q].all_logits ? 0 : nn[q] - 1; t < nn[q]; t++, nt++)
                st_rmsnorm(u + (size_t)nt * H, x + (size_t)(off[q] + t) * H, m->norm_f, H, c->norm_eps);
        }
        prof_add(ST_PROF_NORM, tp);
        const st_span vs = {0, c->vocab_size}, hs = {0, H};
        const size_t V = (size_t)c->vocab_size;
        if (!lgt) { /* one sequence: straight into its buffer */
            mm(&m->lm_head, &vs, 1, &hs, 1, u, H, items[0].logits, c->vocab_size, nt, 0);
        } else {
            mm(&m->lm_head, &vs, 1, &hs, 1, u, H, lgt, c->vocab_size, nt, 0);
            for (int q = 0, k = 0; q < n_items; q++) {
                if (!items[q].logits) continue;
                const int rows = items[q].all_logits ? nn[q] : 1;
                memcpy(items[q].logits, lgt + (size_t)k * V, sizeof(float) * rows * V);
                k += rows;
            }
        }
    }
    return ST_OK;
}

st_status st_forward_batch(const st_budget *b, const st_batch_item *items, int n_items) {
    return forward_batch(b, items, n_items, NULL);
}

st_status st_forward_snap(const st_budget *b, st_state *s, const int32_t *tokens, int n, float *logits, int all_logits,
                          const int *at, int n_at, st_state **snap, int recurrent) {
    const st_batch_item it = {s, tokens, n, logits, all_logits};
    const marks mk = {at, n_at, snap, recurrent};
    return forward_batch(b, &it, 1, &mk);
}

st_status st_forward(const st_budget *b, st_state *s, const int32_t *tokens, int n, float *logits, int all_logits) {
    const st_batch_item it = {s, tokens, n, logits, all_logits};
    return forward_batch(b, &it, 1, NULL);
}

/*
 * adamw.c — AdamW with decoupled weight decay (Loshchilov & Hutter), linear
 * warmup + cosine schedule, global grad-norm clipping; and the auxiliary-
 * loss-free MoE load balancing of DeepSeek-V3 / Nemotron 3 with load stats.
 */
#include "train/train.h"
#include "util/util.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

st_adamw_opts st_adamw_default_params(void) {
    return (st_adamw_opts){.lr = 3e-4f, .min_lr = 3e-5f, .warmup = 100, .steps = 1000, .beta1 = 0.9f, .beta2 = 0.95f,
                           .eps = 1e-8f, .weight_decay = 0.1f, .grad_clip = 1.0f};
}

st_status st_adamw_new(st_adamw *a, const st_tmodel *m, const st_adamw_opts *o) {
    memset(a, 0, sizeof *a);
    a->o = *o;
    a->n = m->n_w;
    a->m = st_aligned_alloc(a->n * sizeof(float));
    a->v = st_aligned_alloc(a->n * sizeof(float));
    if (!a->m || !a->v) { st_adamw_free(a); return ST_ERR_NOMEM; }
    return ST_OK;
}

void st_adamw_free(st_adamw *a) {
    free(a->m);
    free(a->v);
    a->m = a->v = NULL;
}

float st_lr_at(const st_adamw_opts *o, long s) {
    if (o->warmup > 0 && s < o->warmup) return o->lr * (float)(s + 1) / (float)o->warmup;
    long decay = o->steps - o->warmup;
    if (decay <= 0) return o->lr;
    double p = (double)(s - o->warmup) / (double)decay;
    if (p > 1) p = 1;
    return (float)(o->min_lr + 0.5 * (o->lr - o->min_lr) * (1.0 + cos(3.14159265358979323846 * p)));
}

double st_grad_norm(const st_tmodel *m) {
    double ss = 0;
    for (int i = 0; i < m->n_p; i++) {
        if (!m->p[i].train) continue;
        const float *g = st_tg(m, i);
        double s = 0;
        for (size_t j = 0; j < m->p[i].numel; j++) s += (double)g[j] * g[j];
        ss += s;
    }
    return sqrt(ss);
}

double st_adamw_step(st_adamw *a, st_tmodel *m, float lr) {
    const st_adamw_opts *o = &a->o;
    double norm = st_grad_norm(m);
    float gs = 1.0f;
    if (o->grad_clip > 0 && norm > o->grad_clip) gs = (float)(o->grad_clip / norm);
    a->t++;
    const float b1 = o->beta1, b2 = o->beta2;
    const float c1 = 1.0f / (1.0f - powf(b1, (float)a->t)), c2 = 1.0f / (1.0f - powf(b2, (float)a->t));
    for (int i = 0; i < m->n_p; i++) {
        const st_tparam *t = &m->p[i];
        if (!t->train) continue;
        float *w = m->w + t->off, *g = m->g + t->off, *mm = a->m + t->off, *vv = a->v + t->off;
        const float wd = t->decay ? o->weight_decay : 0.0f;
        const long n = (long)t->numel;
#pragma omp parallel for schedule(static) num_threads(st_get_threads()) if (n > 65536)
        for (long j = 0; j < n; j++) {
            float gj = g[j] * gs;
            mm[j] = b1 * mm[j] + (1.0f - b1) * gj;
            vv[j] = b2 * vv[j] + (1.0f - b2) * gj * gj;
            float mh = mm[j] * c1, vh = vv[j] * c2;
            w[j] -= lr * (mh / (sqrtf(vh) + o->eps) + wd * w[j]);
        }
    }
    return norm;
}

/* ------------------------------------------------------------ load balancing */

void st_moe_balance(st_tmodel *m, float rate) {
    const st_config *c = &m->cfg;
    const int E = c->n_routed_experts;
    for (int l = 0; l < c->n_layers; l++) {
        if (c->pattern[l] != 'E') continue;
        const double *ld = m->load + (size_t)l * E;
        double mean = 0;
        for (int e = 0; e < E; e++) mean += ld[e];
        mean /= E;
        float *bias = st_tw(m, m->L[l].e_bias);
        /* under-loaded experts gain selection score, over-loaded lose it */
        for (int e = 0; e < E; e++) bias[e] += rate * (float)((ld[e] < mean) - (ld[e] > mean));
    }
}

void st_moe_load_stats(const st_tmodel *m, double *max_over_mean, double *cv) {
    const st_config *c = &m->cfg;
    const int E = c->n_routed_experts;
    double worst = 0, cvs = 0;
    int n = 0;
    for (int l = 0; l < c->n_layers; l++) {
        if (c->pattern[l] != 'E') continue;
        const double *ld = m->load + (size_t)l * E;
        double mean = 0, var = 0, mx = 0;
        for (int e = 0; e < E; e++) { mean += ld[e]; if (ld[e] > mx) mx = ld[e]; }
        mean /= E;
        if (mean <= 0) continue;
        for (int e = 0; e < E; e++) var += (ld[e] - mean) * (ld[e] - mean);
        if (mx / mean > worst) worst = mx / mean;
        cvs += sqrt(var / E) / mean;
        n++;
    }
    *max_over_mean = worst;
    *cv = n ? cvs / n : 0;
}

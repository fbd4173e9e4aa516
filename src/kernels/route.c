/*
 * route.c — the MoE router of one token (docs/architecture.md §2.6): sigmoid
 * scores, top-k choice by score + correction bias (optionally within the
 * best expert groups), weights from the unbiased scores, renormalised and
 * scaled. Used by the inference pass and the training forward, so both
 * route every token to the same experts.
 *
 * The choice is by repeated maximum (k is small), the first index winning a
 * tie, in fp32: the rule the shipped models were measured with. The
 * reference sorts instead (stable, so the same tie rule) and weights in
 * double.
 */
#include "kernels/kernels.h"

#include <math.h>
#include <string.h>

void st_moe_route(const float *logits, const float *bias, int E, int k, const st_route_cfg *rc, int32_t *idx,
                  float *wt) {
    float s[E], sel[E];
    for (int e = 0; e < E; e++) {
        s[e] = st_sigmoidf(logits[e]);
        sel[e] = s[e] + bias[e];
    }
    if (rc->n_group > 1) {
        const int ng = rc->n_group, per = E / ng;
        float gs[ng];
        for (int g = 0; g < ng; g++) { /* group score: sum of its top-2 */
            float a = -INFINITY, bb = -INFINITY;
            for (int e = g * per; e < (g + 1) * per; e++) {
                if (sel[e] > a) { bb = a; a = sel[e]; } else if (sel[e] > bb) bb = sel[e];
            }
            gs[g] = a + (per > 1 ? bb : 0);
        }
        unsigned char kept[ng];
        memset(kept, 0, sizeof kept);
        for (int r = 0; r < rc->topk_group; r++) { /* the best groups not yet kept, lowest index on ties */
            int best = -1;
            for (int g = 0; g < ng; g++)
                if (!kept[g] && gs[g] > -INFINITY && (best < 0 || gs[g] > gs[best])) best = g;
            if (best >= 0) kept[best] = 1;
        }
        for (int g = 0; g < ng; g++)
            if (!kept[g]) for (int e = g * per; e < (g + 1) * per; e++) sel[e] = -INFINITY;
    }
    float sum = 0;
    for (int j = 0; j < k; j++) { /* selection by repeated max, lowest index on ties */
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
        if (rc->norm_topk) wt[j] /= (sum + 1e-20f);
        wt[j] *= rc->scale;
    }
}

/* order[0..n) sorted by key descending, ties by index ascending (insertion sort: stable) */
static void sort_desc(const float *key, int *order, int n) {
    for (int i = 0; i < n; i++) order[i] = i;
    for (int i = 1; i < n; i++) {
        const int o = order[i];
        int j = i;
        for (; j > 0 && key[order[j - 1]] < key[o]; j--) order[j] = order[j - 1];
        order[j] = o;
    }
}

void st_moe_route_ref(const float *logits, const float *bias, int E, int k, const st_route_cfg *rc, int32_t *idx,
                      float *wt) {
    float sel[E];
    int order[E];
    for (int e = 0; e < E; e++) sel[e] = st_sigmoidf(logits[e]) + bias[e]; /* the choice: fp32, as specified */
    if (rc->n_group > 1) {
        const int ng = rc->n_group, per = E / ng;
        float gs[ng];
        int gorder[ng];
        for (int g = 0; g < ng; g++) {
            sort_desc(sel + g * per, order, per);
            gs[g] = sel[g * per + order[0]] + (per > 1 ? sel[g * per + order[1]] : 0);
        }
        sort_desc(gs, gorder, ng);
        for (int r = rc->topk_group; r < ng; r++)
            for (int e = gorder[r] * per; e < (gorder[r] + 1) * per; e++) sel[e] = -INFINITY;
    }
    sort_desc(sel, order, E);
    double s[k], sum = 0;
    for (int j = 0; j < k; j++) {
        idx[j] = order[j];
        s[j] = 1.0 / (1.0 + exp(-(double)logits[order[j]]));
        sum += s[j];
    }
    for (int j = 0; j < k; j++) wt[j] = (float)((rc->norm_topk ? s[j] / (sum + 1e-20) : s[j]) * rc->scale);
}

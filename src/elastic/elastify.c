/*
 * elastify.c — elastic training with routers, Gumbel-Softmax and
 * distillation (docs/elastic.md §2; see elastify.h for the outline).
 *
 * Per micro-batch: the frozen parent (teacher) computes logits; each sample
 * draws a budget j from the stage's distribution; for every elastic axis k
 * the router gives logits z_k(j), and
 *     pi = softmax((s·z + g) / tau),  g ~ Gumbel(0, 1),  sel = argmax pi
 * picks width ch_k[sel]; the student's masked forward keeps that prefix
 * with the multiplier pi[sel]/stopgrad(pi[sel]) (the "hard mask × selected
 * probability" of docs/elastic.md §2 as a straight-through estimator): 1 in the
 * forward, so the student computes exactly the sliced model and no choice is
 * reinforced just because scaled-down activations hurt, while dL/dpi[sel]
 * still reaches the router.
 * Loss = KL(teacher || student) + lambda·|C(w̄)/Ĉ_j − 1|, where
 * w̄_k = Σ_i pi_i·ch_k[i] are the expected widths and C the parameter count
 * (docs/architecture.md §6.4; the expected-cost budget loss of docs/elastic.md §2).
 */
#include "elastic/elastify.h"
#include "io/outdir.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "util/killsafe.h"
#include "util/plot.h"
#include "util/util.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ------------------------------------------------------------ axes and cost */

/* Mirrors st_budget_stats_get (src/model/budget.c): the embedding table is
 * not active (a lookup), the lm_head is. */
double st_el_cost(const st_config *c, const double *w, int active) {
    const double H = w[ST_AX_HIDDEN], V = c->vocab_size;
    double tot = 0, act = 0;
#define ADD(n) do { double n_ = (n); tot += n_; act += n_; } while (0)
    tot += V * H;
    if (!c->tie_word_embeddings) ADD(V * H);
    else act += V * H;
    ADD(H);
    for (int l = 0; l < c->n_layers; l++) {
        ADD(H);
        switch (c->pattern[l]) {
        case 'M': {
            double nh = w[ST_AX_MAMBA_HEADS], din = nh * w[ST_AX_MAMBA_DIM];
            double GN = (double)c->n_groups * c->ssm_state_size;
            ADD(H * (2 * din + 2 * GN + nh) + H * din);
            ADD((din + 2 * GN) * (c->conv_kernel + (c->use_conv_bias ? 1 : 0)) + 3 * nh + din);
            break;
        }
        case '*': {
            double q = w[ST_AX_ATTN_HEADS] * c->head_dim, kv = (double)c->num_key_value_heads * c->head_dim;
            ADD(2 * H * q + 2 * H * kv);
            break;
        }
        case '-': ADD(2 * H * w[ST_AX_FFN]); break;
        case 'E': {
            double E = w[ST_AX_EXPERTS], k = c->num_experts_per_tok < E ? c->num_experts_per_tok : E;
            double per = 2 * H * w[ST_AX_EXPERT_FFN];
            ADD(E * H + E);
            tot += E * per;
            act += k * per;
            if (c->n_shared_experts) ADD(2 * H * w[ST_AX_SHARED_FFN]);
            break;
        }
        }
    }
#undef ADD
    return active ? act : tot;
}

/* ------------------------------------------------------------ config */

void st_el_cfg_free(st_el_cfg *c) {
    st_train_cfg_free(&c->t);
    free(c->teacher_dir);
    c->teacher_dir = NULL;
}

/* A data mix: one weight >= 0 per data.train file, not all 0. */
static st_status parse_data_w(const json_t *dw, int n, double *w, const char *path, const char *what) {
    if (!json_is_array(dw) || (int)json_array_size(dw) != n)
        return st_err(ST_ERR_FORMAT, "%s: %s must have one weight per data.train file (%d)", path, what, n);
    double sum = 0;
    for (int q = 0; q < n; q++) {
        json_t *v = json_array_get(dw, (size_t)q);
        w[q] = json_is_number(v) ? json_number_value(v) : -1;
        if (!(w[q] >= 0 && w[q] < 1e12)) return st_err(ST_ERR_FORMAT, "%s: %s[%d] must be >= 0", path, what, q);
        sum += w[q];
    }
    if (!(sum > 0)) return st_err(ST_ERR_FORMAT, "%s: %s sum to 0", path, what);
    return ST_OK;
}

st_status st_el_cfg_load(st_el_cfg *c, const char *path) {
    static const char *const extra[] = {"budgets", "cost", "choices", "stages", "router_lr", "lambda", "tau",
                                        "logit_scale", "router_hidden", "default_budget", "teacher", NULL};
    memset(c, 0, sizeof *c);
    st_status rc = st_train_cfg_load_ext(&c->t, path, extra);
    if (rc) return rc;
    if (!c->t.init_dir) { st_train_cfg_free(&c->t); return st_err(ST_ERR_FORMAT, "%s: \"init\" (the ranked parent) is required", path); }
    json_error_t je;
    json_t *r = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!r) { st_train_cfg_free(&c->t); return st_err(ST_ERR_FORMAT, "%s: %s", path, je.text); }
    c->router_lr = 1e-2f; c->lambda = 1.0f; c->tau0 = 1.0f; c->tau1 = 0.05f; c->scale0 = 1.0f; c->scale1 = 10.0f;
    c->router_hidden = 256;

    json_t *bs = json_object_get(r, "budgets");
    if (!json_is_array(bs) || json_array_size(bs) < 1 || json_array_size(bs) > ST_EL_MAX_BUDGETS) {
        rc = st_err(ST_ERR_FORMAT, "%s: \"budgets\" must be a list of 1..%d {\"name\", \"params\"}", path, ST_EL_MAX_BUDGETS);
        goto done;
    }
    size_t i; json_t *e;
    json_array_foreach(bs, i, e) {
        const char *nm = json_string_value(json_object_get(e, "name"));
        json_t *p = json_object_get(e, "params");
        int whole = json_is_string(p) && !strcmp(json_string_value(p), "parent"); /* the parent's own cost */
        json_t *wd = json_object_get(e, "widths");
        if (!nm || !nm[0] || strlen(nm) >= sizeof c->b[0].name || strchr(nm, ',') || strchr(nm, '=') ||
            !(wd ? !p && json_is_object(wd) : whole || (json_is_number(p) && json_number_value(p) > 0))) {
            rc = st_err(ST_ERR_FORMAT, "%s: budgets[%zu] must be {\"name\": short name without ',' or '=', then \"params\": positive number or \"parent\", or \"widths\": {axis: width}}", path, i);
            goto done;
        }
        if (wd) { /* pinned: widths given per axis, the rest the parent's */
            const char *ak; json_t *av;
            json_object_foreach(wd, ak, av) {
                int k = -1;
                for (int q = 0; q < ST_N_AX; q++) if (!strcmp(ak, st_axis_key(q))) k = q;
                if (k < 0 || !json_is_integer(av) || json_integer_value(av) < 1 || json_integer_value(av) > 1 << 24) {
                    rc = st_err(ST_ERR_FORMAT, "%s: budgets[%zu].widths.%s must be a known axis with a positive integer width", path, i, ak);
                    goto done;
                }
                c->b[i].w[k] = (int)json_integer_value(av);
            }
            c->b[i].pinned = 1;
        }
        for (int q = 0; q < (int)i; q++)
            if (!strcmp(c->b[q].name, nm)) { rc = st_err(ST_ERR_FORMAT, "%s: budget name \"%s\" appears twice", path, nm); goto done; }
        snprintf(c->b[i].name, sizeof c->b[i].name, "%s", nm);
        json_t *bd = json_object_get(e, "data");
        if (bd) { /* this budget's own data mix, in every stage */
            char what[40];
            snprintf(what, sizeof what, "budgets[%zu].data", i);
            if ((rc = parse_data_w(bd, c->t.n_train, c->b[i].data_w, path, what))) goto done;
            c->b[i].has_data = 1;
        }
        c->b[i].target = whole || wd ? 0 : json_number_value(p); /* 0: resolved once the parent is loaded */
        c->nb++;
    }
    int n_pin = 0, n_routed = 0;
    for (int q = 0; q < c->nb; q++) {
        n_pin += c->b[q].pinned;
        n_routed += !c->b[q].pinned && c->b[q].target > 0;
    }
    if (n_pin && n_routed) {
        rc = st_err(ST_ERR_FORMAT, "%s: budgets mix \"widths\" (pinned) and \"params\" (routed): pin every budget or none", path);
        goto done;
    }
    const char *tpath = json_string_value(json_object_get(r, "teacher"));
    if (json_object_get(r, "teacher") && (!tpath || !tpath[0])) { rc = st_err(ST_ERR_FORMAT, "%s: \"teacher\" must be a checkpoint directory", path); goto done; }
    if (tpath) { /* relative to the config file, like every path in it */
        const char *sl = strrchr(path, '/');
        size_t dl = tpath[0] == '/' || !sl ? 0 : (size_t)(sl - path) + 1, n = dl + strlen(tpath) + 1;
        if (!(c->teacher_dir = malloc(n))) { rc = ST_ERR_NOMEM; goto done; }
        memcpy(c->teacher_dir, path, dl);
        memcpy(c->teacher_dir + dl, tpath, n - dl);
    }
    const char *db = json_string_value(json_object_get(r, "default_budget"));
    c->default_budget = 0;
    if (db) {
        c->default_budget = -1;
        for (int q = 0; q < c->nb; q++) if (!strcmp(c->b[q].name, db)) c->default_budget = q;
        if (c->default_budget < 0) { rc = st_err(ST_ERR_FORMAT, "%s: default_budget \"%s\" is not a budget", path, db); goto done; }
    }
    const char *cost = json_string_value(json_object_get(r, "cost"));
    if (cost && strcmp(cost, "total") && strcmp(cost, "active")) { rc = st_err(ST_ERR_FORMAT, "%s: \"cost\" must be \"total\" or \"active\"", path); goto done; }
    c->active_cost = cost && !strcmp(cost, "active");

    json_t *chs = json_object_get(r, "choices");
    if (n_pin && chs) { rc = st_err(ST_ERR_FORMAT, "%s: \"choices\" are for routed budgets; pinned budgets give their \"widths\"", path); goto done; }
    if (!n_pin && !json_is_object(chs)) { rc = st_err(ST_ERR_FORMAT, "%s: \"choices\" must be an object {axis: [widths]}", path); goto done; }
    const char *key; json_t *arr;
    json_object_foreach(chs, key, arr) {
        int k = -1;
        for (int q = 0; q < ST_N_AX; q++) if (!strcmp(key, st_axis_key(q))) k = q;
        if (k < 0) { rc = st_err(ST_ERR_FORMAT, "%s: choices: unknown axis \"%s\"", path, key); goto done; }
        if (!json_is_array(arr) || json_array_size(arr) < 1 || json_array_size(arr) > ST_EL_MAX_CHOICES) {
            rc = st_err(ST_ERR_FORMAT, "%s: choices.%s must be a list of 1..%d widths", path, key, ST_EL_MAX_CHOICES);
            goto done;
        }
        json_array_foreach(arr, i, e) {
            if (!json_is_integer(e) || json_integer_value(e) < 1 || json_integer_value(e) > 1 << 24) {
                rc = st_err(ST_ERR_FORMAT, "%s: choices.%s[%zu] must be a positive integer", path, key, i);
                goto done;
            }
            c->ch[k][i] = (int)json_integer_value(e);
            if (i && c->ch[k][i] >= c->ch[k][i - 1]) {
                rc = st_err(ST_ERR_FORMAT, "%s: choices.%s must be strictly descending (widest first)", path, key);
                goto done;
            }
        }
        c->nch[k] = (int)json_array_size(arr);
    }

    json_t *sts = json_object_get(r, "stages");
    if (!json_is_array(sts) || json_array_size(sts) < 1 || json_array_size(sts) > ST_EL_MAX_STAGES) {
        rc = st_err(ST_ERR_FORMAT, "%s: \"stages\" must be a list of 1..%d {\"steps\", \"seq\", \"probs\"}", path, ST_EL_MAX_STAGES);
        goto done;
    }
    json_array_foreach(sts, i, e) {
        st_el_stage *s = &c->st[i];
        json_t *n = json_object_get(e, "steps"), *T = json_object_get(e, "seq"), *p = json_object_get(e, "probs");
        if (!json_is_integer(n) || json_integer_value(n) < 1 || json_integer_value(n) > 1e8 || !json_is_integer(T) ||
            json_integer_value(T) < 2 || json_integer_value(T) > 1 << 20) {
            rc = st_err(ST_ERR_FORMAT, "%s: stages[%zu] needs \"steps\" >= 1 and \"seq\" >= 2", path, i);
            goto done;
        }
        s->steps = (int)json_integer_value(n);
        s->seq = (int)json_integer_value(T);
        json_t *dw = json_object_get(e, "data");
        if (dw) { /* weights over "data.train", replacing theirs in this stage */
            char what[40];
            snprintf(what, sizeof what, "stages[%zu].data", i);
            if ((rc = parse_data_w(dw, c->t.n_train, s->data_w, path, what))) goto done;
            s->has_data = 1;
        }
        double sum = 0;
        if (p) {
            if (!json_is_array(p) || (int)json_array_size(p) != c->nb) {
                rc = st_err(ST_ERR_FORMAT, "%s: stages[%zu].probs must have one entry per budget (%d)", path, i, c->nb);
                goto done;
            }
            for (int q = 0; q < c->nb; q++) {
                json_t *v = json_array_get(p, (size_t)q);
                s->p[q] = json_is_number(v) ? json_number_value(v) : -1;
                if (!(s->p[q] >= 0)) { rc = st_err(ST_ERR_FORMAT, "%s: stages[%zu].probs[%d] must be >= 0", path, i, q); goto done; }
                sum += s->p[q];
            }
        } else {
            for (int q = 0; q < c->nb; q++) s->p[q] = 1;
            sum = c->nb;
        }
        if (!(sum > 0)) { rc = st_err(ST_ERR_FORMAT, "%s: stages[%zu].probs sum to 0", path, i); goto done; }
        for (int q = 0; q < c->nb; q++) s->p[q] /= sum;
        c->nst++;
    }
    c->t.opt.steps = 0;
    for (int q = 0; q < c->nst; q++) c->t.opt.steps += c->st[q].steps;

    json_t *v;
    if ((v = json_object_get(r, "router_lr")) && !(json_is_number(v) && json_number_value(v) > 0 && json_number_value(v) < 10)) {
        rc = st_err(ST_ERR_FORMAT, "%s: \"router_lr\" must be in (0, 10)", path); goto done;
    } else if (v) c->router_lr = (float)json_number_value(v);
    if ((v = json_object_get(r, "lambda")) && !(json_is_number(v) && json_number_value(v) >= 0 && json_number_value(v) < 1e6)) {
        rc = st_err(ST_ERR_FORMAT, "%s: \"lambda\" must be >= 0", path); goto done;
    } else if (v) c->lambda = (float)json_number_value(v);
    if ((v = json_object_get(r, "router_hidden")) &&
        !(json_is_integer(v) && json_integer_value(v) >= 1 && json_integer_value(v) <= 65536)) {
        rc = st_err(ST_ERR_FORMAT, "%s: \"router_hidden\" must be an integer in [1, 65536]", path); goto done;
    } else if (v) c->router_hidden = (int)json_integer_value(v);
    float *pairs[2][2] = {{&c->tau0, &c->tau1}, {&c->scale0, &c->scale1}};
    const char *pk[2] = {"tau", "logit_scale"};
    for (int q = 0; q < 2; q++) {
        json_t *a = json_object_get(r, pk[q]);
        if (!a) continue;
        json_t *a0 = json_array_get(a, 0), *a1 = json_array_get(a, 1);
        if (!json_is_array(a) || json_array_size(a) != 2 || !json_is_number(a0) || !json_is_number(a1) ||
            !(json_number_value(a0) > 0) || !(json_number_value(a1) > 0)) {
            rc = st_err(ST_ERR_FORMAT, "%s: \"%s\" must be [start, end], both positive", path, pk[q]);
            goto done;
        }
        *pairs[q][0] = (float)json_number_value(a0);
        *pairs[q][1] = (float)json_number_value(a1);
    }
done:
    json_decref(r);
    if (rc) st_el_cfg_free(c);
    return rc;
}

/* ------------------------------------------------------------ routers */

static float gauss(uint64_t *s) { /* Box-Muller */
    *s = st_mix64(*s);
    double u = st_u01(*s);
    *s = st_mix64(*s);
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * st_u01(*s)));
}

/* z = W2·LeakyReLU(W1·onehot(j) + b1) + b2; parameters in one flat array
 * [W1 (hid×nb) | b1 (hid) | W2 (nc×hid) | b2 (nc)] with Adam moments. */
typedef struct {
    int nb, hid, nc;
    float *p, *g, *m, *v; /* [n] */
    size_t n;
} router;

#define LEAK 0.01f

static st_status router_new(router *r, int nb, int hid, int nc, uint64_t *rng) {
    r->nb = nb; r->hid = hid; r->nc = nc;
    r->n = (size_t)hid * nb + hid + (size_t)nc * hid + nc;
    r->p = st_calloc(4 * r->n, sizeof(float));
    if (!r->p) return ST_ERR_NOMEM;
    r->g = r->p + r->n; r->m = r->g + r->n; r->v = r->m + r->n;
    /* W1 ~ N(0, 1) so the budgets start apart; W2 small so every choice starts
       near-equally likely (exploration) */
    for (size_t i = 0; i < (size_t)hid * nb; i++) r->p[i] = gauss(rng);
    float *W2 = r->p + (size_t)hid * nb + hid;
    for (size_t i = 0; i < (size_t)nc * hid; i++) W2[i] = 0.01f * gauss(rng);
    return ST_OK;
}
static void router_free(router *r) { free(r->p); memset(r, 0, sizeof *r); }

/* z[nc] for budget j; h_pre[hid] kept for the backward when hpre is given */
static void router_fwd(const router *r, int j, float *hpre, float *z) {
    const float *W1 = r->p, *b1 = W1 + (size_t)r->hid * r->nb, *W2 = b1 + r->hid, *b2 = W2 + (size_t)r->nc * r->hid;
    double acc[ST_EL_MAX_CHOICES];
    for (int o = 0; o < r->nc; o++) acc[o] = b2[o];
    for (int h = 0; h < r->hid; h++) {
        float p = W1[(size_t)h * r->nb + j] + b1[h], a = p > 0 ? p : LEAK * p;
        if (hpre) hpre[h] = p;
        for (int o = 0; o < r->nc; o++) acc[o] += (double)W2[(size_t)o * r->hid + h] * a;
    }
    for (int o = 0; o < r->nc; o++) z[o] = (float)acc[o];
}

static void router_bwd(router *r, int j, const float *hpre, const double *dz) {
    /* the input is one-hot (budget j), so W1's gradient is one column and W1 itself is not read */
    const float *W2 = r->p + (size_t)r->hid * r->nb + r->hid;
    float *gW1 = r->g, *gb1 = gW1 + (size_t)r->hid * r->nb, *gW2 = gb1 + r->hid, *gb2 = gW2 + (size_t)r->nc * r->hid;
    for (int h = 0; h < r->hid; h++) {
        float a = hpre[h] > 0 ? hpre[h] : LEAK * hpre[h];
        double dh = 0;
        for (int o = 0; o < r->nc; o++) {
            gW2[(size_t)o * r->hid + h] += (float)(dz[o] * a);
            dh += dz[o] * W2[(size_t)o * r->hid + h];
        }
        float dpre = (float)dh * (hpre[h] > 0 ? 1.0f : LEAK);
        gW1[(size_t)h * r->nb + j] += dpre;
        gb1[h] += dpre;
    }
    for (int o = 0; o < r->nc; o++) gb2[o] += (float)dz[o];
}

/* Adam without weight decay (the routers are tiny; router_lr, 1e-2 by default: docs/elastic.md). */
static void router_step(router *r, float lr, long t) {
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    float c1 = 1.0f - powf(b1, (float)t), c2 = 1.0f - powf(b2, (float)t);
    for (size_t i = 0; i < r->n; i++) {
        r->m[i] = b1 * r->m[i] + (1 - b1) * r->g[i];
        r->v[i] = b2 * r->v[i] + (1 - b2) * r->g[i] * r->g[i];
        r->p[i] -= lr * (r->m[i] / c1) / (sqrtf(r->v[i] / c2) + eps);
        r->g[i] = 0;
    }
}

/* ------------------------------------------------------------ budget loss */

/* lambda·|C(w̄)/target − 1| and its gradient with respect to the expected
 * widths (central differences: C is a polynomial of degree 2 in the widths,
 * so they are exact up to rounding). */
static double budget_loss(const st_config *cfg, const double *wbar, int active, double target, float lambda, double *dw) {
    double C = st_el_cost(cfg, wbar, active), r = C / target - 1.0;
    double sg = r > 0 ? 1.0 : r < 0 ? -1.0 : 0.0;
    for (int k = 0; k < ST_N_AX; k++) {
        double w2[ST_N_AX], h = 0.5;
        memcpy(w2, wbar, sizeof w2);
        w2[k] = wbar[k] + h;
        double cp = st_el_cost(cfg, w2, active);
        w2[k] = wbar[k] - h;
        double cm = st_el_cost(cfg, w2, active);
        dw[k] = lambda * sg * (cp - cm) / (2 * h) / target;
    }
    return lambda * fabs(r);
}

/* ------------------------------------------------------------ the loop */

typedef struct {
    const st_el_cfg *c;
    const st_config *pc;
    router R[ST_N_AX];
    int has[ST_N_AX];         /* axis k has a router (>1 choice)                  */
    int fixed[ST_N_AX];       /* width of axes without a router                   */
    int cap[ST_EL_MAX_BUDGETS][ST_N_AX]; /* widest choice budget j may sample: the next
                                            wider budget's current choice (nesting)   */
    int whole[ST_EL_MAX_BUDGETS]; /* budget j is not routed (no sampling, no router
                                     loss) but trained at pin[j]: it targets the
                                     parent's cost (the parent itself is the only
                                     architecture that meets it) or gives its widths */
    int pin[ST_EL_MAX_BUDGETS][ST_N_AX];
} elctx;


/* The router's choice for budget j without noise (what the checkpoint
 * records): widths w[ST_N_AX]. */
/* Noise-free choices of every budget, widest target first, each axis capped
 * at the next wider budget's choice so that the budgets stay nested (every
 * smaller budget a prefix of the larger ones on every axis): W[nb][ST_N_AX]. */
static void all_widths(elctx *X, int W[][ST_N_AX]) {
    const st_el_cfg *c = X->c;
    int order[ST_EL_MAX_BUDGETS];
    for (int j = 0; j < c->nb; j++) order[j] = j;
    for (int a = 1; a < c->nb; a++) /* insertion sort by target, descending */
        for (int q = a; q > 0 && c->b[order[q]].target > c->b[order[q - 1]].target; q--) {
            int t = order[q]; order[q] = order[q - 1]; order[q - 1] = t;
        }
    for (int o = 0; o < c->nb; o++) {
        int j = order[o];
        for (int k = 0; k < ST_N_AX; k++) {
            int cap = o ? W[order[o - 1]][k] : X->fixed[k];
            X->cap[j][k] = cap;
            if (X->whole[j]) { W[j][k] = X->pin[j][k]; continue; } /* nesting checked at the start */
            if (!X->has[k]) { W[j][k] = X->fixed[k] < cap ? X->fixed[k] : cap; continue; }
            float z[ST_EL_MAX_CHOICES];
            int best = -1;
            router_fwd(&X->R[k], j, NULL, z);
            for (int i = 0; i < X->R[k].nc; i++)
                if (c->ch[k][i] <= cap && (best < 0 || z[i] > z[best])) best = i;
            W[j][k] = c->ch[k][best]; /* the narrowest choice always fits the cap */
        }
    }
}

static void widths_str(const int *w, char *s, size_t n) {
    size_t at = 0;
    for (int k = 0; k < ST_N_AX && at < n; k++) at += (size_t)snprintf(s + at, n - at, "%s%d", k ? "/" : "", w[k]);
}

/* CE on the validation windows at widths w (pi = 1). */
static double val_at(st_tmodel *m, const st_train_cfg *tc, const st_tokfile *vf, const int *w, int32_t *x, int32_t *y,
                     st_tmask *ms, st_status *rc) {
    for (int b = 0; b < tc->batch; b++) {
        memset(&ms[b], 0, sizeof ms[b]);
        memcpy(ms[b].w, w, sizeof ms[b].w);
    }
    if ((*rc = st_tmodel_set_masks(m, ms))) return -1;
    st_tmodel_set_teacher(m, NULL);
    double v = st_train_val_loss(m, tc, vf, x, y);
    st_tmodel_set_masks(m, NULL);
    return v;
}

/* elastify.svg: the distillation loss (line) and each budget's validation
 * loss (dots + line) against the step. */
static st_status write_plot(const char *path, const st_el_cfg *c, const double *kd, long n, const double *val /*[n][nb]*/) {
    static const char *col[ST_EL_MAX_BUDGETS] = {"#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"};
    double *xs = st_malloc(2 * sizeof(double) * (size_t)(n > 0 ? n : 1)), *ys = xs + (n > 0 ? n : 1); /* [n] each */
    st_plot *p = st_plot_new(&(st_plot_axes){.title = "elastic training: distillation KL and validation loss per budget",
                                             .xlabel = "step", .ylabel = "loss"});
    if (!xs || !p) { free(xs); st_plot_free(p); return ST_ERR_NOMEM; }
    int k = 0;
    for (long i = 0; i < n; i++)
        if (isfinite(kd[i])) { xs[k] = (double)(i + 1); ys[k] = kd[i]; k++; }
    st_plot_line(p, xs, ys, k, "#1f77b4", "train KL", 0);
    for (int j = 0; j < c->nb; j++) {
        k = 0;
        for (long i = 0; i < n; i++)
            if (val[i * c->nb + j] >= 0) { xs[k] = (double)(i + 1); ys[k] = val[i * c->nb + j]; k++; }
        char label[80];
        snprintf(label, sizeof label, "val %s", c->b[j].name);
        st_plot_line(p, xs, ys, k, col[j], label, 0);
        st_plot_dots(p, xs, ys, k, col[j], NULL);
    }
    st_status rc = st_plot_write(p, path);
    st_plot_free(p);
    free(xs);
    return rc;
}

/* {"hidden_size": w, ...} over the axes the parent has (config key names). */
static json_t *widths_json(const st_config *cfg, const int *w) {
    json_t *o = json_object();
    for (int k = 0; k < ST_N_AX; k++)
        if (st_axis_present(cfg, k)) json_object_set_new(o, st_axis_key(k), json_integer(w[k]));
    return o;
}

/* config.json of the student with the elastic block (W: each budget's widths). */
static char *elastic_config(elctx *X, const st_config *cfg, int W[][ST_N_AX]) {
    char *cj = st_config_to_json(cfg);
    json_t *root = cj ? json_loads(cj, 0, NULL) : NULL;
    free(cj);
    if (!root) return NULL;
    json_t *el = json_object(), *arr = json_array();
    json_object_set_new(el, "format_version", json_integer(1));
    json_object_set_new(el, "default_budget", json_string(X->c->b[X->c->default_budget].name));
    json_object_set_new(el, "cost", json_string(X->c->active_cost ? "active" : "total"));
    for (int j = 0; j < X->c->nb; j++) {
        json_t *b = json_object(), *w = widths_json(cfg, W[j]);
        json_object_set_new(b, "name", json_string(X->c->b[j].name));
        json_object_update(b, w);
        json_decref(w);
        json_array_append_new(arr, b);
    }
    json_object_set_new(el, "budgets", arr);
    json_object_set_new(root, "elastic", el);
    char *out = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    return out;
}

static st_status write_routers(elctx *X, const char *dir) {
    st_sf_writer *w = NULL;
    st_status rc = st_sf_writer_new(&w);
    char name[128];
    for (int k = 0; !rc && k < ST_N_AX; k++) {
        if (!X->has[k]) continue;
        router *r = &X->R[k];
        int64_t s1[2] = {r->hid, r->nb}, s2[1] = {r->hid}, s3[2] = {r->nc, r->hid}, s4[1] = {r->nc};
        snprintf(name, sizeof name, "router.%s.fc1.weight", st_axis_key(k)); if (!rc) rc = st_sf_writer_add(w, name, ST_DT_F32, 2, s1);
        snprintf(name, sizeof name, "router.%s.fc1.bias", st_axis_key(k));   if (!rc) rc = st_sf_writer_add(w, name, ST_DT_F32, 1, s2);
        snprintf(name, sizeof name, "router.%s.fc2.weight", st_axis_key(k)); if (!rc) rc = st_sf_writer_add(w, name, ST_DT_F32, 2, s3);
        snprintf(name, sizeof name, "router.%s.fc2.bias", st_axis_key(k));   if (!rc) rc = st_sf_writer_add(w, name, ST_DT_F32, 1, s4);
        char ch[512];
        size_t at = 0;
        for (int i = 0; i < r->nc && at < sizeof ch; i++) at += (size_t)snprintf(ch + at, sizeof ch - at, "%s%d", i ? "," : "", X->c->ch[k][i]);
        snprintf(name, sizeof name, "choices.%s", st_axis_key(k));
        if (!rc) rc = st_sf_writer_meta(w, name, ch);
    }
    char bl[512];
    size_t at = 0;
    for (int j = 0; j < X->c->nb && at < sizeof bl; j++) at += (size_t)snprintf(bl + at, sizeof bl - at, "%s%s", j ? "," : "", X->c->b[j].name);
    if (!rc) rc = st_sf_writer_meta(w, "budgets", bl);
    char path[3400];
    if (!rc && st_pathf(path, sizeof path, "%s/routers.safetensors", dir)) rc = st_err(ST_ERR_ARG, "%s: path too long", dir);
    if (!rc) rc = st_sf_writer_begin(w, path);
    /* one flat array per router: the four tensors in declaration order */
    for (int k = 0; !rc && k < ST_N_AX; k++)
        if (X->has[k]) rc = st_sf_writer_write(w, X->R[k].p, X->R[k].n * sizeof(float));
    if (!rc) rc = st_sf_writer_finish(w);
    st_sf_writer_free(w);
    return rc;
}

/* The checkpoint into an open output directory: student weights, config.json
   with the elastic block, routers, budgets/NAME.json, tokenizer side files. */
static st_status write_checkpoint(elctx *X, st_tmodel *m, int W[][ST_N_AX], st_outdir *od) {
    const st_el_cfg *c = X->c;
    const st_train_cfg *tc = &c->t;
    const st_config *pc = X->pc;
    st_status rc;
    if ((rc = st_tmodel_write_into(m, od))) return rc;
    {
        char *cj = elastic_config(X, pc, W);
        if (!cj) { rc = st_err(ST_ERR_NOMEM, "elastify: cannot build config.json"); return rc; }
        rc = st_outdir_write(od, "config.json", cj, strlen(cj));
        free(cj);
        if (rc) return rc;
    }
    if ((rc = write_routers(X, od->tmp))) return rc;
    /* budgets/NAME.json: each budget's widths as a --budget-file */
    {
        char bd[3400];
        st_pathf(bd, sizeof bd, "%s/budgets", od->tmp);
        if (mkdir(bd, 0755) != 0 && errno != EEXIST) { rc = st_err(ST_ERR_IO, "%s: %s", bd, strerror(errno)); return rc; }
        for (int j = 0; j < c->nb; j++) {
            json_t *o = widths_json(pc, W[j]);
            char *txt = json_dumps(o, JSON_PRESERVE_ORDER);
            json_decref(o);
            char nm[64];
            snprintf(nm, sizeof nm, "budgets/%s.json", c->b[j].name);
            rc = txt ? st_outdir_write(od, nm, txt, strlen(txt)) : ST_ERR_NOMEM;
            free(txt);
            if (rc) return rc;
        }
    }
    if ((rc = st_outdir_copy_side_files(od, tc->tokenizer_dir ? tc->tokenizer_dir : tc->init_dir))) return rc;
    return ST_OK;
}

/* The teacher must be the student's architecture: the distillation compares
 * their logits position by position, and a pinned budget's widths are the
 * student's. */
static st_status same_shape(const st_config *a, const st_config *b, const char *an, const char *bn) {
    int same = a->vocab_size == b->vocab_size && a->n_layers == b->n_layers && !strcmp(a->pattern, b->pattern);
    for (int k = 0; k < ST_N_AX && same; k++) same = st_axis_parent_width(a, k) == st_axis_parent_width(b, k);
    same = same && a->num_key_value_heads == b->num_key_value_heads && a->head_dim == b->head_dim &&
           a->ssm_state_size == b->ssm_state_size && a->n_groups == b->n_groups && a->conv_kernel == b->conv_kernel &&
           a->num_experts_per_tok == b->num_experts_per_tok && a->n_shared_experts == b->n_shared_experts;
    return same ? ST_OK : st_err(ST_ERR_BUDGET, "elastify: the teacher %s and the student %s have different architectures", an, bn);
}

static st_status elastify_run(const st_el_cfg *cfg_in, int force, st_el_cb cb, void *user) {
    st_el_cfg cfg = *cfg_in; /* shallow: only the "parent" targets are filled in below */
    const st_el_cfg *c = &cfg;
    const st_train_cfg *tc = &c->t;
    st_status rc = ST_OK;
    st_model *src = NULL;
    st_tmodel *teacher = NULL, *m = NULL;
    st_adamw opt = {0};
    st_tokfile tf[16] = {{0}}, vf = {0};
    int32_t *x = NULL, *y = NULL;
    st_tmask *ms = NULL;
    float *hp = NULL;
    double *kdlog = NULL, *vallog = NULL;
    FILE *logf = NULL;
    st_outdir od = {0};
    int od_open = 0;
    elctx X;
    memset(&X, 0, sizeof X);
    X.c = c;
    const int B = tc->batch, nb = c->nb;

    if ((rc = st_model_load(tc->init_dir, &src))) goto done;
    const st_config *pc = st_model_config(src);
    X.pc = pc;
    if ((rc = st_tmodel_new(pc, &m)) || (rc = st_tmodel_from_model(m, src))) goto done;
    if (c->teacher_dir) { /* a separate teacher: the same architecture, other weights */
        st_model_free(src);
        src = NULL;
        if ((rc = st_model_load(c->teacher_dir, &src))) goto done;
        if ((rc = same_shape(st_model_config(src), &m->cfg, c->teacher_dir, tc->init_dir))) goto done;
    }
    if ((rc = st_tmodel_new(st_model_config(src), &teacher)) || (rc = st_tmodel_from_model(teacher, src))) goto done;
    pc = &m->cfg;
    X.pc = pc;

    /* axes: routers where there is a choice; the widest choice must be the
       parent's so that the full budget exists */
    uint64_t rng = st_mix64(tc->seed ^ 0x5eed);
    for (int k = 0; k < ST_N_AX; k++) {
        int pw = st_axis_parent_width(pc, k);
        X.fixed[k] = pw;
        if (!c->nch[k]) continue;
        if (!st_axis_present(pc, k)) { rc = st_err(ST_ERR_BUDGET, "elastify: choices.%s: the parent has no layer with this axis", st_axis_key(k)); goto done; }
        if (c->ch[k][0] != pw) {
            rc = st_err(ST_ERR_BUDGET, "elastify: choices.%s must start with the parent's width %d (got %d)", st_axis_key(k), pw, c->ch[k][0]);
            goto done;
        }
        if (c->nch[k] == 1) continue;
        if ((rc = router_new(&X.R[k], nb, c->router_hidden, c->nch[k], &rng))) goto done;
        X.has[k] = 1;
    }
    /* every single choice must be a valid mask (divisibility, ranges) */
    if (!(ms = st_calloc((size_t)B, sizeof *ms))) { rc = ST_ERR_NOMEM; goto done; }
    if ((rc = st_tmodel_reserve(m, B, c->st[0].seq))) goto done;
    for (int k = 0; k < ST_N_AX; k++)
        for (int i = 0; i < c->nch[k]; i++) {
            for (int b = 0; b < B; b++) { memset(&ms[b], 0, sizeof ms[b]); memcpy(ms[b].w, X.fixed, sizeof X.fixed); }
            ms[0].w[k] = c->ch[k][i];
            if ((rc = st_tmodel_set_masks(m, ms))) goto done;
        }
    st_tmodel_set_masks(m, NULL);
    double parent_cost;
    {
        double w[ST_N_AX];
        for (int k = 0; k < ST_N_AX; k++) w[k] = X.fixed[k];
        parent_cost = st_el_cost(pc, w, c->active_cost);
        double wmin[ST_N_AX];
        for (int k = 0; k < ST_N_AX; k++) wmin[k] = c->nch[k] ? c->ch[k][c->nch[k] - 1] : X.fixed[k];
        double least = st_el_cost(pc, wmin, c->active_cost);
        for (int j = 0; j < nb; j++) {
            for (int k = 0; k < ST_N_AX; k++) X.pin[j][k] = X.fixed[k];
            if (c->b[j].pinned) { /* its own widths, the parent's where none is given */
                double pw[ST_N_AX];
                for (int k = 0; k < ST_N_AX; k++) {
                    int v = c->b[j].w[k] ? c->b[j].w[k] : X.fixed[k];
                    if (v > X.fixed[k]) {
                        rc = st_err(ST_ERR_BUDGET, "elastify: budget %s: %s %d is wider than the parent's %d", c->b[j].name,
                                    st_axis_key(k), v, X.fixed[k]);
                        goto done;
                    }
                    X.pin[j][k] = v;
                    pw[k] = v;
                }
                for (int b = 0; b < B; b++) { memset(&ms[b], 0, sizeof ms[b]); memcpy(ms[b].w, X.pin[j], sizeof X.pin[j]); }
                if ((rc = st_tmodel_set_masks(m, ms))) goto done; /* divisibility, ranges */
                cfg.b[j].target = st_el_cost(pc, pw, c->active_cost);
                X.whole[j] = 1;
                continue;
            }
            if (cfg.b[j].target == 0) cfg.b[j].target = parent_cost;
            X.whole[j] = c->b[j].target >= parent_cost * (1 - 1e-6);
        }
        st_tmodel_set_masks(m, NULL);
        for (int j = 0; j < nb; j++) /* pinned budgets must nest: each within every wider one */
            for (int q = 0; q < nb; q++) {
                if (!c->b[j].pinned || !c->b[q].pinned || c->b[q].target <= c->b[j].target) continue;
                for (int k = 0; k < ST_N_AX; k++)
                    if (X.pin[j][k] > X.pin[q][k]) {
                        rc = st_err(ST_ERR_BUDGET, "elastify: budget %s (%s %d) does not nest in the larger budget %s (%d)",
                                    c->b[j].name, st_axis_key(k), X.pin[j][k], c->b[q].name, X.pin[q][k]);
                        goto done;
                    }
            }
        for (int j = 0; j < nb; j++)
            if (!c->b[j].pinned && (c->b[j].target > parent_cost * 1.0001 || c->b[j].target < least * 0.9999)) {
                rc = st_err(ST_ERR_BUDGET, "elastify: budget %s targets %.4g %s parameters, outside what the choices reach [%.4g, %.4g]",
                            c->b[j].name, c->b[j].target, c->active_cost ? "active" : "total", least, parent_cost);
                goto done;
            }
    }
    const int V = pc->vocab_size;
    double cum[16];
    double bcum[ST_EL_MAX_BUDGETS][16]; /* the budgets' own mixes */
    for (int i = 0; i < tc->n_train; i++) {
        if ((rc = st_tokfile_open(&tf[i], tc->train_bin[i], V))) goto done;
        cum[i] = (i ? cum[i - 1] : 0) + tc->train_w[i];
        for (int j = 0; j < nb; j++) bcum[j][i] = (i ? bcum[j][i - 1] : 0) + c->b[j].data_w[i];
    }
    int maxT = 0;
    for (int s = 0; s < c->nst; s++) if (c->st[s].seq > maxT) maxT = c->st[s].seq;
    for (int i = 0; i < tc->n_train; i++)
        if (tf[i].n <= (size_t)maxT + 1) { rc = st_err(ST_ERR_FORMAT, "%s: %zu tokens, fewer than seq + 2", tc->train_bin[i], tf[i].n); goto done; }
    if (tc->val_bin && tc->eval_every > 0) {
        if ((rc = st_tokfile_open(&vf, tc->val_bin, V))) goto done;
        if (vf.n <= (size_t)maxT + 1) { rc = st_err(ST_ERR_FORMAT, "%s: %zu tokens, fewer than seq + 2", tc->val_bin, vf.n); goto done; }
    }
    x = st_malloc(sizeof(int32_t) * (size_t)B * maxT);
    y = st_malloc(sizeof(int32_t) * (size_t)B * maxT);
    hp = st_malloc(sizeof(float) * (size_t)c->router_hidden * B * ST_N_AX);
    long total = tc->opt.steps;
    kdlog = st_calloc((size_t)total, sizeof(double));
    vallog = st_malloc(sizeof(double) * (size_t)total * nb);
    if (!x || !y || !hp || !kdlog || !vallog) { rc = ST_ERR_NOMEM; goto done; }
    for (long i = 0; i < total * nb; i++) vallog[i] = -1;
    if ((rc = st_adamw_new(&opt, m, &tc->opt))) goto done;

    if ((rc = st_outdir_begin(&od, tc->out_dir, force))) goto done;
    od_open = 1;
    char csv[3400], svg[3400];
    st_pathf(csv, sizeof csv, "%s/elastify.csv", od.tmp);
    st_pathf(svg, sizeof svg, "%s/elastify.svg", od.tmp);
    if (!(logf = fopen(csv, "w"))) { rc = st_err(ST_ERR_IO, "%s: %s", csv, strerror(errno)); goto done; }
    fprintf(logf, "step,stage,tokens,kd,budget_loss,tau,logit_scale,lr,tok_per_s");
    for (int j = 0; j < nb; j++) fprintf(logf, ",val_%s,cost_%s,widths_%s", c->b[j].name, c->b[j].name, c->b[j].name);
    fprintf(logf, "\n");

    /* per (sample, axis): pi over the choices, selection, budget */
    float pis[64][ST_N_AX][ST_EL_MAX_CHOICES];
    int sel[64][ST_N_AX], bud[64];
    if (B > 64) { rc = st_err(ST_ERR_ARG, "elastify: batch %d > 64", B); goto done; }
    int W[ST_EL_MAX_BUDGETS][ST_N_AX]; /* each budget's current choice (and the caps) */
    all_widths(&X, W);
    double tokens = 0, t_start = st_time(), avg_dt = 0;
    long step = 0;
    for (int s = 0; s < c->nst; s++) {
        const int T = c->st[s].seq;
        if (c->st[s].has_data) /* this stage's own data mix */
            for (int i = 0; i < tc->n_train; i++) cum[i] = (i ? cum[i - 1] : 0) + c->st[s].data_w[i];
        st_train_cfg sc = *tc;
        sc.seq = T;
        if ((rc = st_tmodel_reserve(m, B, T)) || (rc = st_tmodel_reserve(teacher, B, T))) goto done;
        for (int it = 0; it < c->st[s].steps; it++, step++) {
            double t0 = st_time();
            double frac = total > 1 ? (double)step / (double)(total - 1) : 1.0;
            /* linear anneals: a geometric tau hardens the choices within the
               first tenth of the run, before the budget loss has moved them */
            float tau = (float)(c->tau0 + (c->tau1 - c->tau0) * frac);
            float scale = (float)(c->scale0 + (c->scale1 - c->scale0) * frac);
            st_tmodel_zero_grad(m);
            st_tmodel_load_reset(m);
            double kd = 0, bl = 0;
            for (int mi = 0; mi < tc->accum; mi++) {
                st_train_sample(&sc, tf, cum, step, mi, x, y);
                for (int b = 0; b < B; b++) {
                    uint64_t h = st_mix64(tc->seed ^ st_mix64((uint64_t)step * 1000003ull + (uint64_t)mi * 7919ull + (uint64_t)b + 0xe1a5));
                    double u = st_u01(h), acc = 0;
                    int j = nb - 1;
                    for (int q = 0; q < nb; q++) { acc += c->st[s].p[q]; if (u < acc) { j = q; break; } }
                    bud[b] = j;
                    if (c->b[j].has_data) st_train_sample_row(&sc, tf, bcum[j], step, mi, b, x, y);
                    memset(&ms[b], 0, sizeof ms[b]);
                    for (int k = 0; k < ST_N_AX; k++) {
                        ms[b].w[k] = X.whole[j] ? X.pin[j][k] : X.fixed[k];
                        ms[b].pi[k] = 1.0f;
                        if (!X.has[k] || X.whole[j]) continue;
                        router *r = &X.R[k];
                        float z[ST_EL_MAX_CHOICES], *hk = hp + ((size_t)b * ST_N_AX + k) * c->router_hidden;
                        router_fwd(r, j, hk, z);
                        double mx = -INFINITY, a[ST_EL_MAX_CHOICES], sum = 0;
                        for (int i = 0; i < r->nc; i++) {
                            h = st_mix64(h);
                            double g = -log(-log(st_u01(h)));
                            /* choices wider than the next wider budget's are out:
                               the budgets stay nested (the widest always fits) */
                            a[i] = c->ch[k][i] > X.cap[j][k] ? -INFINITY : (scale * z[i] + g) / tau;
                            if (a[i] > mx) mx = a[i];
                        }
                        for (int i = 0; i < r->nc; i++) { a[i] = exp(a[i] - mx); sum += a[i]; }
                        int best = 0;
                        for (int i = 0; i < r->nc; i++) {
                            pis[b][k][i] = (float)(a[i] / sum);
                            if (pis[b][k][i] > pis[b][k][best]) best = i;
                        }
                        sel[b][k] = best;
                        ms[b].w[k] = c->ch[k][best];
                        ms[b].pi[k] = 1.0f; /* straight-through: see dpi below */
                    }
                }
                st_tmodel_forward(teacher, x, NULL); /* after the rows that budgets redrew */
                if ((rc = st_tmodel_set_masks(m, ms))) goto done;
                st_tmodel_set_teacher(m, st_tmodel_logits(teacher));
                kd += st_tmodel_forward(m, x, y) / tc->accum;
                st_tmodel_backward(m, 1.0f / (float)tc->accum);
                const double *dpi = st_tmodel_mask_grads(m);
                /* router gradients: task (through pi[sel]) + budget loss
                   (through the expected widths), averaged over samples */
                const double inv = 1.0 / ((double)B * tc->accum);
                for (int b = 0; b < B; b++) {
                    if (X.whole[bud[b]]) continue;
                    double wbar[ST_N_AX], dw[ST_N_AX];
                    for (int k = 0; k < ST_N_AX; k++) {
                        wbar[k] = X.fixed[k];
                        if (!X.has[k]) continue;
                        wbar[k] = 0;
                        for (int i = 0; i < X.R[k].nc; i++) wbar[k] += pis[b][k][i] * c->ch[k][i];
                    }
                    bl += budget_loss(pc, wbar, c->active_cost, c->b[bud[b]].target, c->lambda, dw) * inv;
                    for (int k = 0; k < ST_N_AX; k++) {
                        if (!X.has[k]) continue;
                        router *r = &X.R[k];
                        double dp[ST_EL_MAX_CHOICES], dot = 0, dz[ST_EL_MAX_CHOICES];
                        for (int i = 0; i < r->nc; i++) {
                            dp[i] = dw[k] * c->ch[k][i] * inv;
                            /* the mask's multiplier is pi[sel]/stopgrad(pi[sel]): 1 in
                               the forward (the student computes exactly the sliced
                               model), d/dpi[sel] = 1/pi[sel] in the backward */
                            if (i == sel[b][k]) dp[i] += dpi[(size_t)b * ST_N_AX + k] / pis[b][k][i];
                            dot += pis[b][k][i] * dp[i];
                        }
                        for (int i = 0; i < r->nc; i++) dz[i] = pis[b][k][i] * (dp[i] - dot) * scale / tau;
                        router_bwd(r, bud[b], hp + ((size_t)b * ST_N_AX + k) * c->router_hidden, dz);
                    }
                }
            }
            if (!isfinite(kd)) { rc = st_err(ST_ERR_RANGE, "elastify: loss is %g at step %ld (lower lr?)", kd, step + 1); goto done; }
            float lr = st_lr_at(&tc->opt, step);
            st_adamw_step(&opt, m, lr);
            if (tc->balance_rate > 0) st_moe_balance(m, tc->balance_rate);
            for (int k = 0; k < ST_N_AX; k++) if (X.has[k]) router_step(&X.R[k], c->router_lr, step + 1);
            all_widths(&X, W); /* the routers' choices now; caps for the next step */
            st_tmodel_set_masks(m, NULL);
            st_tmodel_set_teacher(m, NULL);

            double dt = st_time() - t0;
            avg_dt = it == 0 ? dt : 0.9 * avg_dt + 0.1 * dt;
            tokens += (double)B * T * tc->accum;
            kdlog[step] = kd;
            st_el_event ev = {.step = step + 1, .steps = total, .stage = s + 1, .kd = kd, .budget_loss = bl, .tau = tau,
                              .scale = scale, .tok_per_s = (double)B * T * tc->accum / avg_dt};
            for (int j = 0; j < nb; j++) ev.val[j] = -1;
            int last = step + 1 == total;
            if (vf.ids && ((step + 1) % tc->eval_every == 0 || last))
                for (int j = 0; j < nb; j++) {
                    ev.val[j] = val_at(m, &sc, &vf, W[j], x, y, ms, &rc);
                    if (rc) goto done;
                    vallog[step * nb + j] = ev.val[j];
                }
            ev.elapsed_s = st_time() - t_start;
            ev.eta_s = avg_dt * (double)(total - step - 1);
            if ((step + 1) % tc->log_every == 0 || last || ev.val[0] >= 0) {
                fprintf(logf, "%ld,%d,%.0f,%.6f,%.6f,%.5f,%.4f,%.6g,%.1f", step + 1, s + 1, tokens, kd, bl, tau, scale, (double)lr,
                        ev.tok_per_s);
                for (int j = 0; j < nb; j++) {
                    double wd[ST_N_AX];
                    char ws[256];
                    for (int k = 0; k < ST_N_AX; k++) wd[k] = W[j][k];
                    widths_str(W[j], ws, sizeof ws);
                    fprintf(logf, ",%.6f,%.0f,%s", ev.val[j], st_el_cost(pc, wd, c->active_cost), ws);
                }
                fprintf(logf, "\n");
                fflush(logf);
            }
            if (cb) cb(&ev, user);
            /* a snapshot in the final format (slice, eval and run read it), so a
               long run that is stopped still leaves its latest state behind */
            if (tc->ckpt_every > 0 && (step + 1) % tc->ckpt_every == 0 && !last) {
                char snap[3400], note[64];
                st_outdir sod = {0};
                if (st_pathf(snap, sizeof snap, "%s-snapshot", tc->out_dir)) { rc = st_err(ST_ERR_ARG, "%s: path too long", tc->out_dir); goto done; }
                int n = snprintf(note, sizeof note, "%ld\n", step + 1);
                if ((rc = st_outdir_begin(&sod, snap, 1))) goto done;
                if ((rc = write_checkpoint(&X, m, W, &sod)) || (rc = st_outdir_write(&sod, "step.txt", note, (size_t)n)) ||
                    (rc = st_outdir_commit(&sod))) {
                    st_outdir_abort(&sod);
                    goto done;
                }
            }
            st_killpoint();
        }
    }
    fclose(logf);
    logf = NULL;
    write_plot(svg, c, kdlog, total, vallog);

    if ((rc = write_checkpoint(&X, m, W, &od))) goto done;
    if ((rc = st_outdir_commit(&od))) goto done;
    od_open = 0;
done:
    if (logf) fclose(logf);
    if (od_open) st_outdir_abort(&od);
    free(x); free(y); free(ms); free(hp); free(kdlog); free(vallog);
    for (int i = 0; i < 16; i++) st_tokfile_close(&tf[i]);
    st_tokfile_close(&vf);
    st_adamw_free(&opt);
    for (int k = 0; k < ST_N_AX; k++) router_free(&X.R[k]);
    st_tmodel_free(teacher);
    st_tmodel_free(m);
    st_model_free(src);
    return rc;
}

/* The config's thread count holds for this call on this thread only. */
st_status st_elastify_run(const st_el_cfg *c, int force, st_el_cb cb, void *user) {
    int prev = c->t.threads > 0 ? st_set_local_threads(c->t.threads) : -1;
    st_status rc = elastify_run(c, force, cb, user);
    if (prev >= 0) st_set_local_threads(prev);
    return rc;
}

/*
 * elastify.h — elastic training (docs/elastic.md §2): turn a ranked parent
 * (starling rank) into one nested elastic checkpoint.
 *
 * One router per elastic axis (a 2-layer MLP on the one-hot budget) picks a
 * width per sample through Gumbel-Softmax (temperature annealed 1 → 0.05,
 * router logits scaled 1 → 10); the student runs the masked forward of
 * src/train (hard prefix mask × the selected probability, RMSNorm over the
 * active channels) and learns by forward-KL distillation from the frozen
 * parent, while a budget loss on the expected cost (total or active
 * parameters) pulls each budget's choice to its target. Two stages: short
 * sequences with uniform budgets, then longer ones weighted toward the full
 * model. The result is a checkpoint whose config.json carries the `elastic`
 * block with the widths the routers chose, the router weights and the log.
 */
#ifndef ST_ELASTIFY_H
#define ST_ELASTIFY_H

#include "train/train.h"

#define ST_EL_MAX_BUDGETS 8
#define ST_EL_MAX_CHOICES 16
#define ST_EL_MAX_STAGES 4

typedef struct {
    char name[32];
    double target;              /* cost target (parameters); 0 = "parent"        */
    int pinned;                 /* 1: the widths w are given, not routed         */
    int w[ST_N_AX];             /* pinned widths; 0 = the parent's on that axis  */
    int has_data;               /* 1: data_w is this budget's own data mix       */
    double data_w[16];          /* per data.train file, over every stage         */
} st_el_budget;

typedef struct {
    int steps, seq;             /* optimizer steps, tokens per sequence          */
    double p[ST_EL_MAX_BUDGETS];/* budget sampling probabilities                 */
    int has_data;               /* 1: data_w replaces the train files' weights   */
    double data_w[16];          /* per data.train file, this stage only          */
} st_el_stage;

typedef struct {
    st_train_cfg t;             /* init (ranked parent), data, batch, accum, lr, schedule, eval, seed, out */
    char *teacher_dir;          /* the distillation teacher; NULL = init itself  */
    st_el_budget b[ST_EL_MAX_BUDGETS];
    int nb, default_budget;
    int active_cost;            /* 1: cost = active parameters, 0: total         */
    int nch[ST_N_AX];           /* choices per axis (0: axis fixed at the parent) */
    int ch[ST_N_AX][ST_EL_MAX_CHOICES]; /* widths, descending                    */
    st_el_stage st[ST_EL_MAX_STAGES];
    int nst;
    float router_lr, lambda, tau0, tau1, scale0, scale1;
    int router_hidden;
} st_el_cfg;

/* Parse an elastify config (JSON; the train config keys plus "budgets",
 * "cost", "choices", "stages", "router_lr", "lambda", "tau", "logit_scale",
 * "router_hidden", "teacher"; docs/elastic.md). The parent shape is checked
 * later. A budget {"name", "widths": {axis: width}} is pinned: trained at
 * those widths, not routed (continuing an elastic checkpoint at its own
 * budgets); either every budget below the parent is pinned or none is.
 * A budget's "data" (one weight per data.train file) is the mix its samples
 * are drawn from, in place of the stage's: e.g. knowledge that only the full
 * budget is taught. */
st_status st_el_cfg_load(st_el_cfg *c, const char *path);
void st_el_cfg_free(st_el_cfg *c);

/* Cost (parameters) of the widths w[ST_N_AX] (fractional allowed: the
 * expected widths of the budget loss) on parent cfg; the same count as
 * st_budget_stats (total_params / active_params) at integer widths. */
double st_el_cost(const st_config *cfg, const double *w, int active);

typedef struct {
    long step, steps;
    int stage;
    double kd, budget_loss, tau, scale, tok_per_s, elapsed_s, eta_s;
    double val[ST_EL_MAX_BUDGETS]; /* validation CE per budget (< 0: not this step) */
} st_el_event;
typedef void (*st_el_cb)(const st_el_event *e, void *user);

/* Run elastic training as c says; writes c->t.out_dir (atomically): the
 * student checkpoint (F32) with the elastic block, routers.safetensors,
 * elastify.csv and elastify.svg. */
st_status st_elastify_run(const st_el_cfg *c, int force, st_el_cb cb, void *user);

#endif

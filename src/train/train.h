/*
 * train.h — the training side of starling (llm.c style): explicit
 * X_forward / X_backward pairs over B×T tokens, one fp32 arena for the
 * parameters, one for their gradients, one for the activations.
 *
 * The model math is the one of src/model/forward.c (docs/architecture.md §2),
 * with fresh (zero) conv / SSM states at the start of every sequence, so
 * training-forward logits equal st_forward logits of a checkpoint saved from
 * the training model (tests/test_train.c checks it).
 *
 * Parameters are named exactly like the HF tensors ("backbone.layers.3.mixer.
 * in_proj.weight", ...), so a training model loads from and saves to the
 * checkpoints st_model_load reads. Widths come from the shared st_config;
 * every per-layer function takes its widths from st_tdims so that budget
 * masks (a width per axis, docs/architecture.md §6.1) can be added by the elastic
 * training without touching the layer code's shape logic.
 */
#ifndef ST_TRAIN_H
#define ST_TRAIN_H

#include "io/outdir.h"
#include "starling.h"
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ------------------------------------------------------------ parameters */

typedef struct {
    char name[112];     /* HF tensor name                                     */
    int ndim;
    int64_t shape[3];
    size_t off, numel;  /* floats into st_tmodel.w / .g                       */
    uint8_t decay;      /* AdamW decoupled weight decay applies (matrices)    */
    uint8_t train;      /* has a gradient (0: e_score_correction_bias, set by
                           load balancing instead)                            */
} st_tparam;

/* Indices into st_tmodel.p for one layer (-1: absent). Experts are
 * consecutive: expert e's up_proj is p[exp_up + e], so all E up matrices
 * are one contiguous [E][F][H] block of the arena (likewise down). */
typedef struct {
    char type;
    int norm;
    int in_proj, conv_w, conv_b, dt_bias, A_log, D, gnorm, out_proj;
    int wq, wk, wv, wo;
    int up, down;
    int gate, e_bias, exp_up, exp_down, sh_up, sh_down;
} st_tlayer;

typedef struct st_tacts st_tacts;

typedef struct {
    st_config cfg;
    st_tparam *p;       /* [n_p] */
    int n_p;
    st_tlayer *L;       /* [n_layers] */
    int embed, norm_f, lm_head;
    float *w;           /* [n_w] fp32 master weights                          */
    float *g;           /* [n_w] gradients (accumulated over micro-batches)   */
    size_t n_w;
    size_t n_train;     /* floats that have a gradient                        */
    /* activations, sized for B×T by st_tmodel_reserve */
    int B, T;
    st_tacts *a;
    /* MoE expert load of the last forward passes: [n_layers][E] token counts,
       accumulated until st_tmodel_load_reset (load balancing, statistics) */
    double *load;
    /* distillation target [B·T][V] (st_tmodel_set_teacher), not owned; NULL:
       cross-entropy */
    const float *teacher;
} st_tmodel;

static inline float *st_tw(const st_tmodel *m, int i) { return m->w + m->p[i].off; }
static inline float *st_tg(const st_tmodel *m, int i) { return m->g + m->p[i].off; }

/* A model of shape cfg with every tensor allocated (no weights set). */
st_status st_tmodel_new(const st_config *cfg, st_tmodel **out);
void st_tmodel_free(st_tmodel *m);
/* Random initialisation, deterministic in seed: N(0, 0.02) matrices (output
 * projections / sqrt(2·L)), norms 1, Mamba dt_bias / A_log / D / conv as in
 * mamba_ssm, router bias 0. */
void st_tmodel_init(st_tmodel *m, uint64_t seed);
/* Copy every tensor of a loaded checkpoint (any float dtype) into m, which
 * must have the same config (st_tmodel_new(st_model_config(src))). */
st_status st_tmodel_from_model(st_tmodel *m, const st_model *src);
/* Find a parameter by HF name (-1 if none). */
int st_tmodel_find(const st_tmodel *m, const char *name);
/* Index into p of schema spec s (src/model/schema.h) in layer l (-1:
 * global); for per-expert specs the first expert's. -1 if absent. */
struct st_tspec_s;
int st_tmodel_index(const st_tmodel *m, const struct st_tspec_s *s, int layer);
/* Active parameters per token (top-k experts), for 6·N·tok/s FLOP counts. */
double st_tmodel_active_params(const st_tmodel *m);

/* Write an HF checkpoint directory (config.json + model.safetensors in F32,
 * plus tokenizer files copied from tokenizer_dir when given) atomically. */
st_status st_tmodel_save(const st_tmodel *m, const char *dir, const char *tokenizer_dir, int force);
/* config.json + model.safetensors into an open st_outdir (for callers that
 * add more files, e.g. the optimizer state, before committing). */
st_status st_tmodel_write_into(const st_tmodel *m, const st_outdir *o);
/* config.json text (malloc'd) for cfg. */
char *st_config_to_json(const st_config *cfg);

/* ------------------------------------------------------------ forward / backward */

/* Size the activation arena for B sequences of T tokens. */
st_status st_tmodel_reserve(st_tmodel *m, int B, int T);
/* Forward over tokens[B][T]; targets[B][T] (NULL: logits only; id < 0:
 * position ignored). Returns the mean cross-entropy over counted positions
 * (0 if targets is NULL). Logits [B·T][V] stay in the activations
 * (st_tmodel_logits) until the next backward. */
float st_tmodel_forward(st_tmodel *m, const int32_t *tokens, const int32_t *targets);
const float *st_tmodel_logits(const st_tmodel *m);
/* Backward of the last forward (which must have had targets); adds into m->g
 * scaled by grad_scale (1/n_micro for gradient accumulation). */
void st_tmodel_backward(st_tmodel *m, float grad_scale);
void st_tmodel_zero_grad(st_tmodel *m);
/* Routing of the last forward, layer l: [B·T][k] expert ids (NULL if not MoE;
 * under masks, -1 in the slots a sample's clipped top-k or skip leaves empty). */
const int32_t *st_tmodel_route(const st_tmodel *m, int l);
void st_tmodel_load_reset(st_tmodel *m);
void st_tacts_free(st_tacts *a);

/* ------------------------------------------------------------ elastic masks */

/* The masked (dynamic) model cuts the elastic axes of st_axis (starling.h;
 * their keys, parent widths and rules: st_axes in model/model.h), per sample. */

/* One sample's budget for the masked forward. The forward computes exactly
 * what the sliced model of these widths computes (RMSNorm and the grouped
 * Mamba norm over active channels, inactive residual channels held at 0)
 * when every pi is 1; pi[k] is the "hard mask × selected probability"
 * multiplier of axis k (docs/elastic.md §2), applied at:
 *   HIDDEN             every RMSNorm output (layer norms and the final norm)
 *   MAMBA_HEADS, _DIM  the grouped-norm output (out_proj input)
 *   ATTN_HEADS         the attention head outputs (o_proj input)
 *   EXPERTS            the weighted sum of routed expert outputs
 *   EXPERT_FFN, SHARED_FFN, FFN   the relu² activations
 * skip: bit l set = layer l is bypassed (its mixer output is 0). */
typedef struct {
    int w[ST_N_AX];    /* widths by st_axis, as st_widths.axis; 0 = the parent's */
    float pi[ST_N_AX]; /* multipliers; 0 is read as 1                   */
    uint64_t skip;
} st_tmask;

/* Per-sample masks for the following forward/backward passes: ms[B] (B of
 * st_tmodel_reserve), copied; NULL turns masking off (full width). Fails
 * with ST_ERR_BUDGET on a width the parent cannot take (wider than the
 * parent, heads not divisible by groups, zero experts...), ST_ERR_ARG on a
 * negative or non-finite pi or before st_tmodel_reserve; a refused call
 * keeps the masks in force. st_tmodel_reserve with a new shape turns masking
 * off. Skip bits reach layers 0..63 only. */
st_status st_tmodel_set_masks(st_tmodel *m, const st_tmask *ms);
/* The mask-widths of a parent-relative st_widths (0 fields = parent): every
 * width filled in, pi = 1, skip bits from skip_layers (< 64). An explicit
 * num_experts_per_tok has no place in a mask (the top-k is always the
 * parent's clipped to the kept experts). */
void st_tmask_from_widths(st_tmask *t, const st_config *parent, const st_widths *w);
/* dL/dpi[b][k] of the last backward ([B][ST_N_AX], scaled like the weight
 * gradients and accumulated like them, untouched by a backward without
 * masks), zeroed by st_tmodel_zero_grad. */
const double *st_tmodel_mask_grads(const st_tmodel *m);

/* Distillation target for the following forward/backward passes: teacher
 * logits [B·T][V] (NULL: back to cross-entropy), not copied: they must stay
 * valid through the backward. With a teacher the loss is
 * the forward KL(p_teacher || p_student) per counted position (targets[t]
 * >= 0 marks counted positions, as for cross-entropy). */
void st_tmodel_set_teacher(st_tmodel *m, const float *teacher_logits);
/* Per-position loss of the last forward [B·T] (0 at uncounted positions). */
const float *st_tmodel_row_loss(const st_tmodel *m);

/* ------------------------------------------------------------ optimizer */

typedef struct {
    float lr, min_lr;        /* peak and final learning rate                  */
    int warmup, steps;       /* linear warmup steps, total steps (cosine to min_lr) */
    float beta1, beta2, eps, weight_decay, grad_clip; /* clip <= 0: off     */
} st_adamw_opts;

typedef struct {
    st_adamw_opts o;
    float *m, *v;            /* [n_w] first / second moments                  */
    size_t n;
    long t;                  /* steps taken                                  */
} st_adamw;

st_adamw_opts st_adamw_default_params(void);
st_status st_adamw_new(st_adamw *a, const st_tmodel *m, const st_adamw_opts *o);
void st_adamw_free(st_adamw *a);
/* Learning rate at step s (0-based): linear warmup from lr/warmup to lr, then
 * cosine from lr to min_lr at step `steps`. */
float st_lr_at(const st_adamw_opts *o, long s);
/* Global L2 norm of the gradients (trainable tensors). */
double st_grad_norm(const st_tmodel *m);
/* One AdamW step at learning rate lr: clip the global grad norm to
 * o.grad_clip, then m, v, bias correction, p -= lr·(m̂/(√v̂+eps) + wd·p),
 * decay only on p[i].decay tensors. Returns the pre-clip grad norm. */
double st_adamw_step(st_adamw *a, st_tmodel *m, float lr);

/* DeepSeek-V3 / Nemotron 3 auxiliary-loss-free load balancing: for every MoE
 * layer, bias_e += rate · sign(mean load − load_e) from the loads counted since
 * the last reset (then resets them). */
void st_moe_balance(st_tmodel *m, float rate);
/* Expert load statistics over the counted loads: worst layer's max/mean load
 * and mean coefficient of variation over MoE layers (0 if no MoE). */
void st_moe_load_stats(const st_tmodel *m, double *max_over_mean, double *cv);

/* ------------------------------------------------------------ training loop */

typedef struct {
    /* model: a shape (cfg_json, a Nemotron-H config object as text) or a
       checkpoint to start from (init_dir) */
    char *model_json, *init_dir, *tokenizer_dir;
    char *train_bin[16];         /* flat little-endian uint32 token ids; a mix
                                    of up to 16 files sampled by weight       */
    double train_w[16];
    int n_train;
    char *val_bin;               /* NULL: no validation                       */
    char *out_dir;               /* checkpoints, log.csv, loss.svg            */
    int batch, seq, accum;       /* micro-batch sequences, tokens each, micro-batches per step */
    st_adamw_opts opt;
    int eval_every, eval_batches, ckpt_every, log_every;
    float balance_rate;          /* e_score_correction_bias update rate (1e-3) */
    uint64_t seed;
    int threads;                 /* > 0: kernel threads for st_train_run (and
                                    elastify) on the calling thread; 0: the
                                    process default (st_set_local_threads) */
} st_train_cfg;

void st_train_cfg_init(st_train_cfg *c);
/* Parse a train config JSON file (see cli/train.c / docs/training.md). */
st_status st_train_cfg_load(st_train_cfg *c, const char *path);
/* The same, allowing the extra top-level keys in extra[] (NULL-terminated)
 * that a caller parses itself (starling elastify). */
st_status st_train_cfg_load_ext(st_train_cfg *c, const char *path, const char *const *extra);
void st_train_cfg_free(st_train_cfg *c);

typedef struct {
    long step, steps;
    double loss, val_loss;       /* val_loss < 0: not evaluated this step     */
    double lr, grad_norm, tok_per_s, elapsed_s, eta_s;
    double load_max_over_mean, load_cv;
    int saved;                   /* a checkpoint was written at this step     */
} st_train_event;
typedef void (*st_train_cb)(const st_train_event *e, void *user);

/* Run (or, with resume_dir, continue) training as cfg says. Writes
 * out_dir/log.csv, out_dir/loss.svg, checkpoints out_dir/step_NNNNNN and
 * out_dir/final (each an HF checkpoint + optimizer.safetensors +
 * train_state.json). cb (may be NULL) sees every step. */
st_status st_train_run(const st_train_cfg *cfg, const char *resume_dir, st_train_cb cb, void *user);

/* Token files: [n] uint32 LE. mmap'd; *n in tokens. */
typedef struct { uint32_t *ids; size_t n; void *map; size_t bytes; } st_tokfile;
st_status st_tokfile_open(st_tokfile *f, const char *path, int vocab);
void st_tokfile_close(st_tokfile *f);

/* One micro-batch x, y [c->batch][c->seq] (inputs, next-token targets) for
 * (step, micro) from the weighted mix tf[c->n_train] (cum: cumulative
 * weights): depends only on (seed, step, micro), so runs are reproducible. */
void st_train_sample(const st_train_cfg *c, const st_tokfile *tf, const double *cum, long step, int micro,
                     int32_t *x, int32_t *y);
/* Row b of that micro-batch alone, drawn from the mix cum: the same row
 * st_train_sample writes when cum is the same (elastic training redraws a
 * sample from its budget's own mix). */
void st_train_sample_row(const st_train_cfg *c, const st_tokfile *tf, const double *cum, long step, int micro, int b,
                         int32_t *x, int32_t *y);
/* Mean cross-entropy over c->eval_batches fixed windows of vf (m reserved
 * for c->batch × c->seq). */
double st_train_val_loss(st_tmodel *m, const st_train_cfg *c, const st_tokfile *vf, int32_t *x, int32_t *y);

/* Measured fp32 GEMM peak (GFLOP/s) with st_matmul on an n×n×n problem. */
double st_measure_gemm_gflops(int n, int reps);

/* Training speed (starling train --bench): steps of forward, backward and
 * AdamW on random tokens, one untimed warm-up step first. */
typedef struct {
    int batch, seq, steps;       /* micro-batch B × T tokens, timed steps   */
} st_train_bench_params;
st_train_bench_params st_train_bench_default_params(void); /* 8 × 256, 5 steps */

typedef struct {
    int step;                    /* 0: model, optimizer and tokens are ready
                                    (no timings yet); 1..steps: a timed step */
    const st_config *cfg;
    double params;               /* every weight                             */
    double active_params;        /* active per token, without the embedding  */
    double step_s, fwd_s, bwd_s, opt_s;
    float loss;
} st_train_bench_event;

typedef struct {
    int n;                       /* timed steps                              */
    double sum_s, best_s;        /* their total and the fastest one          */
    double fwd_s, bwd_s, opt_s;  /* summed over them                         */
    double active_params;
} st_train_bench_result;

/* The model: c's "init" checkpoint's config, else c's "model", else (both
 * unset, as st_train_cfg_init leaves them) a Nemotron-H-shaped one of ~40M
 * parameters (~20M active). cb (may
 * be NULL) sees step 0 and every timed step. c's "threads" hold as in
 * st_train_run. */
st_status st_train_bench(const st_train_cfg *c, const st_train_bench_params *p,
                         void (*cb)(const st_train_bench_event *e, void *user), void *user, st_train_bench_result *r);

#endif

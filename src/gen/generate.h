/*
 * generate.h — the generation engine on top of the public API (internal to
 * libstarling and its tools: `starling run`, `serve`, `eval`).
 *
 * One st_gen is one request: a prompt, a state per budget it uses, a sampler,
 * stop conditions and the thinking state machine:
 *
 *   PREFILL ── prompt at the thinking budget (chunked, prompt cache aware;
 *              snapshots at the end of each chat message, for the next turn)
 *   THINK   ── tokens are reasoning until </think> is sampled or the think
 *              budget closes the thought (see below); runs at `think_with`
 *   ANSWER  ── tokens are content; runs at `answer_with`
 *
 * Think budget (counted per turn, over sampled thinking tokens): once
 * `think_budget` tokens were sampled the thought is closed as soon as the text
 * sits at a line break; up to `think_grace` more tokens are sampled waiting
 * for one, then the close is forced. Closing appends "\n" (unless at a line
 * break), the optional message (+ "\n"), then "</think>" "\n" — the shape the
 * chat template gives a finished thought.
 *
 * Budget switch at the close, when think_with and answer_with differ:
 *   exact       the answer budget computes its own state: the prompt at the
 *               answer budget (taken from the prompt cache, or computed once
 *               and stored there) + one batched prefill of all thinking tokens
 *               and the close; identical to running the answer budget over the
 *               whole text from scratch.
 *   transplant  the thinking state continues at the answer budget
 *               (st_state_transplant: KV always, conv/SSM when the Mamba widths
 *               match); refused up front, with the reason, when they do not.
 *
 * Text goes to an optional callback in UTF-8-valid pieces (invalid bytes
 * become U+FFFD), tagged reasoning / content / control ("</think>" and the one
 * line break that follows it). Stop strings match the content only; text that
 * could begin a stop string is held back until it is decided.
 *
 * Work is done in steps (st_gen_step: one prefill chunk or one decoded token)
 * so a scheduler can interleave many requests on one model.
 */
#ifndef ST_GEN_GENERATE_H
#define ST_GEN_GENERATE_H

#include "gen/cache.h"
#include "starling.h"

typedef enum { ST_TEXT_REASONING = 0, ST_TEXT_CONTENT = 1, ST_TEXT_CONTROL = 2 } st_text_kind;

/* Receives a piece of text; return non-zero to cancel the request. */
typedef int (*st_gen_emit_fn)(void *ud, st_text_kind kind, const char *text, size_t len);

/* How the answer budget takes over the thought (think_with != answer_with):
 *   exact       it prefills prompt + thought itself: the answer is what it
 *               would write after reading that thought (costs the prefill);
 *   transplant  it continues from the thinking budget's state (needs the
 *               same Mamba widths): no prefill, but it reads every thought
 *               token through the smaller budget's keys and states;
 *   reread      transplant at the start of the thought's last line, then the
 *               answer budget reads that line itself: the tokens an answer
 *               copies (the result a procedure ends with) get its own keys
 *               and states, for a prefill of one line. */
typedef enum { ST_SWITCH_EXACT = 0, ST_SWITCH_TRANSPLANT = 1, ST_SWITCH_REREAD = 2 } st_switch_mode;
#define ST_SWITCH_N_MODES 3
/* "exact", "transplant", "reread"; parse returns -1 for an unknown name. */
const char *st_switch_mode_name(st_switch_mode m);
int st_switch_mode_parse(const char *name);

typedef enum {
    ST_FINISH_NONE = 0,   /* still running                              */
    ST_FINISH_STOP,       /* EOS / <|im_end|> / a stop string            */
    ST_FINISH_LENGTH,     /* max_tokens or the context limit             */
    ST_FINISH_CANCEL,     /* the callback or st_gen_cancel asked to stop */
    ST_FINISH_ERROR,      /* a library error (st_last_error at the time) */
} st_finish;

#define ST_GEN_MAX_STOP 8

typedef struct {
    int max_tokens;              /* completion tokens, thinking included (256) */
    int thinking;                /* the prompt opened <think>: start thinking  */
    int think_budget;            /* cap on sampled thinking tokens, -1 = none  */
    int think_grace;             /* extra tokens to reach a line break (16)    */
    const char *think_message;   /* inserted before a budget close, or NULL    */
    const st_budget *think_with; /* prompt + thinking budget (NULL: answer's)  */
    const st_budget *answer_with;/* the answer budget (required)               */
    st_switch_mode mode;
    const char *stop[ST_GEN_MAX_STOP];
    int n_stop;
    int ignore_eos;
    int prefill_chunk;           /* max tokens per prefill step (512)         */
    const int32_t *bias_ids;     /* logit bias (OpenAI logit_bias): added to  */
    const float *bias;           /*   these tokens' logits before sampling    */
    int n_bias;
    st_sampler_params sampling;
    /* Speculative decoding: each decode step drafts up to draft_n tokens,
     * then the decoding budget checks them all in one forward pass. Greedy:
     * it keeps the longest prefix it agrees with, so the output is token for
     * token what decoding without a drafter gives. Sampling: speculative
     * sampling (accept with min(1, p/q), else draw from max(0, p - q)), so
     * the output has the distribution of sampling without one. Drafters: a
     * (smaller) nested budget of the same checkpoint (draft: its own state,
     * no extra weights), or prompt lookup (draft_ngram: the tokens that
     * followed the latest earlier occurrence of the last few). The number
     * drafted adapts to the acceptance rate (0 while drafting would not pay). */
    const st_budget *draft;
    int draft_ngram;
    int draft_n;                 /* at most this many per step (4; 1..8)       */
    int draft_fixed;             /* always draft_n, no adaptation (tests, benchmarks) */
} st_gen_params;

typedef struct {
    int prompt_tokens;
    int cached_tokens;           /* prompt tokens taken from the prompt cache  */
    int think_tokens;            /* reasoning tokens, forced message included  */
    int think_sampled;           /* of which sampled by the model              */
    int answer_tokens;           /* from </think> on (all tokens if no thinking) */
    int completion_tokens;       /* everything after the prompt                */
    int switched;                /* the budget changed at the close            */
    int switch_tokens;           /* tokens prefilled at the answer budget then */
    int forced_close;            /* the think budget closed the thought        */
    double t_prefill, t_think, t_switch, t_answer; /* seconds per phase        */
    int draft_steps;             /* decode steps that verified drafted tokens  */
    int draft_proposed, draft_accepted;
    double draft_cost, verify_cost; /* measured, per drafted token, in plain decode steps (0: not measured) */
    st_finish finish;
} st_gen_stats;

typedef struct st_gen st_gen;

st_gen_params st_gen_default_params(void);
const char *st_finish_name(st_finish f); /* "stop", "length", ... */

/* Check p against the model without running anything: budgets present and
 * of this model, transplant possible, numbers in range. ST_ERR_* + message. */
st_status st_gen_check(const st_model *m, const st_gen_params *p);

/* A request: prompt tokens (copied), params (copied; the budgets and the
 * cache must outlive it). max_ctx bounds the sequence (0: the model's). */
st_status st_gen_new(const st_model *m, const st_tokenizer *tok, const st_gen_params *p, const int32_t *prompt,
                     int n_prompt, int max_ctx, st_pcache *cache, st_gen_emit_fn emit, void *ud, st_gen **out);
void st_gen_free(st_gen *g);

/* One unit of work. Returns non-OK only for a library error (then the
 * request is finished with ST_FINISH_ERROR). *done = 1 once finished. */
st_status st_gen_step(st_gen *g, int *done);

/* st_gen_step in two halves, so that a scheduler can run the decode steps of
 * many requests as one st_forward_batch: begin does all of the step but the
 * one-token forward that ends a decode step, which it describes in *fwd
 * (returning 1) instead of running; the caller runs it (batched with others
 * at the same budget), then end takes its status. When begin returns 0 the
 * step is complete apart from end (call it with ST_OK). st_gen_step is
 * begin + the forward + end. */
typedef struct {
    const st_budget *budget;
    st_batch_item item;       /* one token into the request's state, logits out */
} st_gen_fwd;
int st_gen_step_begin(st_gen *g, st_gen_fwd *fwd);
st_status st_gen_step_end(st_gen *g, st_status fwd_rc, int *done);
/* Step until finished. */
st_status st_gen_run(st_gen *g);
/* Ask the request to finish (ST_FINISH_CANCEL) at its next step. */
void st_gen_cancel(st_gen *g);

/* sample.c, for speculative sampling: the distribution st_sample would draw
 * from (ids[0..n), probs summing to 1; one token with 1 when it would not
 * draw), with the penalty applied as st_sample does; and the next number of
 * the sampler's uniform stream. ids/probs hold the vocabulary size. */
int st_sampler_dist(st_sampler *s, float *logits, int32_t *ids, float *probs);
double st_sampler_uniform(st_sampler *s);

const st_gen_stats *st_gen_get_stats(const st_gen *g);
/* Everything emitted so far of one kind (NUL-terminated, owned by g; the
 * text itself may hold NUL bytes: *len, when non-NULL, is its length). */
const char *st_gen_text(const st_gen *g, st_text_kind kind, size_t *len);
/* Tokens appended after the prompt (thinking, close, answer). */
const int32_t *st_gen_tokens(const st_gen *g, int *n);
/* Logits the next token will be drawn from ([vocab]); NULL before prefill. */
const float *st_gen_logits(const st_gen *g);
/* Name of the budget now running. */
const char *st_gen_budget_name(const st_gen *g);

#endif

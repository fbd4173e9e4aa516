/*
 * sched.h — the server's scheduler: one thread owns all model compute. It
 * admits queued requests up to `parallel` active sequences and steps them
 * round-robin, one unit each per pass (a prefill chunk or one decoded token);
 * every step is one st_forward over that sequence's own state, using all the
 * kernel threads. There is no multi-sequence forward in libstarling yet, so
 * decode is interleaved, not fused into one batched matmul: the weights are
 * read once per sequence per token. The bounded queue refuses work when full
 * (the HTTP layer answers 429).
 *
 * A request (st_sreq) is shared by the HTTP connection that made it and the
 * scheduler; text pieces arrive under its mutex and wake the connection.
 */
#ifndef ST_SERVER_SCHED_H
#define ST_SERVER_SCHED_H

#include "gen/cache.h"
#include "gen/generate.h"
#include <pthread.h>
#include <stdatomic.h>

typedef struct { char *p; size_t n, cap; } st_sbuf;
void st_sbuf_put(st_sbuf *b, const char *s, size_t n);
void st_sbuf_free(st_sbuf *b);

typedef struct st_sreq st_sreq;
struct st_sreq {
    /* input, set before st_sched_submit */
    st_gen_params gp;
    char *stop_store[ST_GEN_MAX_STOP];
    char *msg_store;
    int32_t *bias_ids;
    float *bias;
    int32_t *prompt;
    int n_prompt;
    double deadline;          /* st_time_now() seconds; 0 = none */
    /* output, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    st_sbuf text[3];          /* everything, per st_text_kind */
    st_sbuf evq;              /* streaming: pieces not yet sent: kind byte, u32 length, bytes */
    int done;
    int timed_out, shut_down; /* why it ended early */
    st_status err;            /* non-OK: failed (message in errmsg) */
    char errmsg[512];
    st_gen_stats stats;
    atomic_int cancelled;     /* the client went away */
    atomic_int refs;
};

/* A fresh request with one reference (the caller's). */
st_sreq *st_sreq_new(void);
void st_sreq_release(st_sreq *r);

typedef struct st_sched st_sched;

typedef struct {
    uint64_t admitted, rejected, completed, failed, timeouts;
    uint64_t prompt_tokens, completion_tokens, reasoning_tokens, cached_tokens;
    int active, queued;
    double busy_s;            /* seconds spent stepping sequences */
} st_sched_stats;

st_status st_sched_start(const st_model *m, const st_tokenizer *tok, st_pcache *cache, int parallel, int queue_cap,
                         int max_ctx, st_sched **out);
/* Queue r (takes a reference). Returns 0, or -1 when the queue is full or the
 * scheduler is shutting down (no reference taken). */
int st_sched_submit(st_sched *s, st_sreq *r);
/* End everything: queued and active requests finish with shut_down set, the
 * thread is joined; later submits are refused. st_sched_free releases it. */
void st_sched_stop(st_sched *s);
void st_sched_free(st_sched *s);
void st_sched_stats_get(st_sched *s, st_sched_stats *o);

#endif

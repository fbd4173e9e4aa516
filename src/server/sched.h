/*
 * sched.h — the server's scheduler: one thread owns all model compute. It
 * admits queued requests up to `parallel` active sequences at every pass
 * (continuous batching: new requests join at a pass boundary, finished or
 * cancelled ones leave at once) and gives each one unit of work per pass: a
 * prefill chunk (gen params' prefill_chunk tokens, so running streams keep
 * flowing while a long prompt is read) or one decoded token. The decode
 * steps of a pass run as one st_forward_batch per budget, so the weights
 * are read once per pass for all the sequences decoding at that budget. The
 * bounded queue refuses work when full (the HTTP layer answers 429).
 *
 * A request (st_sreq) is shared by the HTTP connection that made it and the
 * scheduler; text pieces arrive under its mutex and wake the connection.
 */
#ifndef ST_SERVER_SCHED_H
#define ST_SERVER_SCHED_H

#include "gen/cache.h"
#include "gen/generate.h"
#include "util/buf.h"
#include <pthread.h>
#include <stdatomic.h>

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
    double deadline;          /* st_time() seconds; 0 = none */
    /* the scheduler's, for latency metrics */
    double t_submit, t_last;
    int n_seen;               /* completion tokens seen so far          */
    /* output, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    st_buf text[3];          /* everything, per st_text_kind */
    st_buf evq;              /* streaming: pieces not yet sent: kind byte, u32 length, bytes */
    int done;
    int timed_out, shut_down; /* why it ended early */
    st_status err;            /* non-OK: failed (message in errmsg) */
    int oom;                  /* text could not be buffered: the request fails */
    char errmsg[512];
    st_gen_stats stats;
    atomic_int cancelled;     /* the client went away */
    atomic_int refs;
};

/* A fresh request with one reference (the caller's). */
st_sreq *st_sreq_new(void);
void st_sreq_release(st_sreq *r);

typedef struct st_sched st_sched;

/* A latency histogram: counts per bucket (the last one past every bound),
 * with the sum and count of what went in (Prometheus histogram semantics). */
#define ST_HIST_N 11
typedef struct {
    uint64_t bucket[ST_HIST_N + 1];
    uint64_t n;
    double sum;
} st_hist;
/* Upper bounds (seconds) of the buckets of the TTFT and inter-token histograms. */
extern const double st_sched_ttft_bounds[ST_HIST_N], st_sched_itl_bounds[ST_HIST_N];

typedef struct {
    uint64_t admitted, rejected, completed, failed, timeouts;
    uint64_t prompt_tokens, completion_tokens, reasoning_tokens, cached_tokens;
    int active, queued;
    double busy_s;            /* seconds spent stepping sequences */
    uint64_t batch_steps;     /* passes that ran decode steps              */
    uint64_t batch_rows;      /* rows of the largest batch of each, summed */
#define ST_SCHED_BATCH_BUCKETS 8
    uint64_t batch_hist[ST_SCHED_BATCH_BUCKETS]; /* batch size <= 1,2,4,..,64, more */
    st_hist ttft;             /* submit -> first generated token           */
    st_hist itl;              /* between a request's generated tokens      */
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

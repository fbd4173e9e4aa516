/*
 * sched.c — one scheduler thread stepping every active request, the decode
 * steps of all of them fused into one batched forward pass per budget
 * (continuous batching; see sched.h).
 */
#include "server/sched.h"
#include "model/model.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>

st_sreq *st_sreq_new(void) {
    st_sreq *r = st_calloc(1, sizeof *r);
    if (!r) return NULL;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    atomic_init(&r->refs, 1);
    r->gp = st_gen_default_params();
    return r;
}

void st_sreq_release(st_sreq *r) {
    if (!r || atomic_fetch_sub(&r->refs, 1) != 1) return;
    for (int i = 0; i < ST_GEN_MAX_STOP; i++) free(r->stop_store[i]);
    free(r->msg_store);
    free(r->bias_ids);
    free(r->bias);
    free(r->prompt);
    for (int k = 0; k < 3; k++) st_buf_free(&r->text[k]);
    st_buf_free(&r->evq);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

typedef struct slot_ {
    st_sreq *r;
    st_gen *g;
} slot;

struct st_sched {
    const st_model *m;
    const st_tokenizer *tok;
    st_pcache *cache;
    int parallel, queue_cap, max_ctx;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    st_sreq **q;            /* FIFO ring */
    int qhead, qn;
    int stopping;
    int n_active;           /* read by stats under mu */
    st_sched_stats st;
    st_gen_fwd *fw;         /* per active slot: this pass's decode forward */
    int *has;
    st_status *rc;
    struct slot_ *act;      /* [parallel] active sequences (the thread's) */
};

static int emit(void *ud, st_text_kind k, const char *text, size_t len) {
    st_sreq *r = ud;
    pthread_mutex_lock(&r->mu);
    unsigned char hdr[5] = {(unsigned char)k, (unsigned char)(len & 0xff), (unsigned char)((len >> 8) & 0xff),
                            (unsigned char)((len >> 16) & 0xff), (unsigned char)((len >> 24) & 0xff)};
    /* out of memory: stop the generation (complete() fails the request);
     * reserving first keeps the event queue whole (no header without text) */
    if (st_buf_put(&r->text[k], text, len) || st_buf_reserve(&r->evq, 5 + len)) r->oom = 1;
    else {
        st_buf_put(&r->evq, (const char *)hdr, 5);
        st_buf_put(&r->evq, text, len);
    }
    const int stop = r->oom;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return stop || atomic_load(&r->cancelled);
}

static void complete(st_sched *s, st_sreq *r, st_gen *g, st_status err, const char *msg) {
    pthread_mutex_lock(&r->mu);
    if (g) r->stats = *st_gen_get_stats(g);
    if (!err && r->oom) {
        err = ST_ERR_NOMEM;
        msg = "out of memory buffering the generated text";
    }
    if (err) {
        r->err = err;
        snprintf(r->errmsg, sizeof r->errmsg, "%s", msg && *msg ? msg : st_status_name(err));
    }
    r->done = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_lock(&s->mu);
    if (err) s->st.failed++;
    else s->st.completed++;
    if (r->timed_out) s->st.timeouts++;
    if (g) {
        const st_gen_stats *gs = st_gen_get_stats(g);
        s->st.prompt_tokens += (uint64_t)gs->prompt_tokens;
        s->st.completion_tokens += (uint64_t)gs->completion_tokens;
        s->st.reasoning_tokens += (uint64_t)gs->think_tokens;
        s->st.cached_tokens += (uint64_t)gs->cached_tokens;
    }
    pthread_mutex_unlock(&s->mu);
    st_sreq_release(r);
}

const double st_sched_ttft_bounds[ST_HIST_N] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
const double st_sched_itl_bounds[ST_HIST_N] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};

static void hist_add(st_hist *h, const double *bounds, double v, uint64_t times) {
    int k = 0;
    while (k < ST_HIST_N && v > bounds[k]) k++;
    h->bucket[k] += times;
    h->n += times;
    h->sum += v * (double)times;
}

/* After a pass: the time to a request's first token, and between tokens. */
static void note_tokens(st_sched *s, st_sreq *r, const st_gen *g, double now) {
    const int n = st_gen_get_stats(g)->completion_tokens;
    if (n <= r->n_seen) return;
    pthread_mutex_lock(&s->mu);
    if (r->n_seen == 0) {
        hist_add(&s->st.ttft, st_sched_ttft_bounds, now - r->t_submit, 1);
        if (n > 1) hist_add(&s->st.itl, st_sched_itl_bounds, 0, (uint64_t)(n - 1)); /* forced text: at once */
    } else {
        hist_add(&s->st.itl, st_sched_itl_bounds, (now - r->t_last) / (n - r->n_seen), (uint64_t)(n - r->n_seen));
    }
    pthread_mutex_unlock(&s->mu);
    r->n_seen = n;
    r->t_last = now;
}

/* The pass's pending decode forwards (has[i]) as one st_forward_batch per
 * budget; each item's status in s->rc[i]. A failed batch is retried item by
 * item, so one sequence's error stays its own. Returns the rows batched. */
static int run_decodes(st_sched *s, const st_gen_fwd *fw, const int *has, int n) {
    int rows = 0;
    int left[ST_BATCH_MAX], nl = 0;
    for (int i = 0; i < n; i++)
        if (has[i]) left[nl++] = i;
    while (nl) {
        st_batch_item it[ST_BATCH_MAX];
        int who[ST_BATCH_MAX], nb = 0, rest = 0;
        const st_budget *b = fw[left[0]].budget;
        for (int k = 0; k < nl; k++) {
            const int i = left[k];
            if (st_budget_same(fw[i].budget, b)) { who[nb] = i; it[nb++] = fw[i].item; }
            else left[rest++] = i;
        }
        nl = rest;
        st_status rc = st_forward_batch(b, it, nb);
        if (rc && nb > 1) {
            st_err_clear();
            for (int k = 0; k < nb; k++) s->rc[who[k]] = st_forward_batch(fw[who[k]].budget, &it[k], 1);
        } else {
            for (int k = 0; k < nb; k++) s->rc[who[k]] = rc;
        }
        if (nb > rows) rows = nb;
    }
    return rows;
}

static void *sched_main(void *arg) {
    st_sched *s = arg;
    slot *act = s->act;
    int n = 0;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->stopping && n == 0 && s->qn == 0) pthread_cond_wait(&s->cv, &s->mu);
        int stopping = s->stopping;
        st_sreq *admit[64];
        int na = 0;
        while (!stopping && n + na < s->parallel && s->qn && na < 64) {
            admit[na++] = s->q[s->qhead];
            s->qhead = (s->qhead + 1) % s->queue_cap;
            s->qn--;
        }
        s->st.queued = s->qn;
        pthread_mutex_unlock(&s->mu);
        if (stopping) break;
        for (int i = 0; i < na; i++) {
            st_sreq *r = admit[i];
            st_gen *g = NULL;
            if (atomic_load(&r->cancelled)) { complete(s, r, NULL, ST_OK, NULL); continue; }
            if (r->deadline > 0 && st_time() > r->deadline) {
                r->timed_out = 1;
                complete(s, r, NULL, ST_OK, NULL);
                continue;
            }
            st_status rc = st_gen_new(s->m, s->tok, &r->gp, r->prompt, r->n_prompt, s->max_ctx, s->cache, emit, r, &g);
            if (rc) { complete(s, r, NULL, rc, st_last_error()); continue; }
            act[n++] = (slot){r, g};
        }
        pthread_mutex_lock(&s->mu);
        s->n_active = s->st.active = n;
        pthread_mutex_unlock(&s->mu);
        /* one pass: each active sequence does one unit of work. Prefill
         * chunks run as they come; the decode steps are collected and run as
         * one st_forward_batch per budget, so the weights are read once per
         * pass for all of them. */
        double t0 = st_time();
        st_gen_fwd *fw = s->fw;
        int *has = s->has;
        for (int i = 0; i < n; i++) {
            slot *a = &act[i];
            if (a->r->deadline > 0 && t0 > a->r->deadline && !a->r->timed_out) {
                a->r->timed_out = 1;
                st_gen_cancel(a->g);
            }
            has[i] = st_gen_step_begin(a->g, &fw[i]);
        }
        int batched = run_decodes(s, fw, has, n);
        int kept = 0;
        const double t1 = st_time();
        for (int k = 0; k < n; k++) { /* finished sequences leave at once */
            int done = 0;
            st_status rc = st_gen_step_end(act[k].g, has[k] ? s->rc[k] : ST_OK, &done);
            note_tokens(s, act[k].r, act[k].g, t1);
            if (done) {
                complete(s, act[k].r, act[k].g, rc, rc ? st_last_error() : NULL);
                st_gen_free(act[k].g);
            } else {
                act[kept++] = act[k];
            }
        }
        n = kept;
        pthread_mutex_lock(&s->mu);
        s->st.busy_s += st_time() - t0;
        if (batched) {
            s->st.batch_steps++;
            s->st.batch_rows += (uint64_t)batched;
            int bk = 0;
            while (bk < ST_SCHED_BATCH_BUCKETS - 1 && batched > (1 << bk)) bk++;
            s->st.batch_hist[bk]++;
        }
        s->n_active = s->st.active = n;
        pthread_mutex_unlock(&s->mu);
    }
    /* shutting down: end what is running, then what waits */
    for (int i = 0; i < n; i++) {
        act[i].r->shut_down = 1;
        complete(s, act[i].r, act[i].g, ST_OK, NULL);
        st_gen_free(act[i].g);
    }
    pthread_mutex_lock(&s->mu);
    while (s->qn) {
        st_sreq *r = s->q[s->qhead];
        s->qhead = (s->qhead + 1) % s->queue_cap;
        s->qn--;
        pthread_mutex_unlock(&s->mu);
        r->shut_down = 1;
        complete(s, r, NULL, ST_OK, NULL);
        pthread_mutex_lock(&s->mu);
    }
    s->n_active = s->st.active = 0;
    s->st.queued = 0;
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

st_status st_sched_start(const st_model *m, const st_tokenizer *tok, st_pcache *cache, int parallel, int queue_cap,
                         int max_ctx, st_sched **out) {
    *out = NULL;
    if (parallel < 1 || queue_cap < 1) return st_err(ST_ERR_ARG, "scheduler: parallel %d, queue %d", parallel, queue_cap);
    st_sched *s = st_calloc(1, sizeof *s);
    if (!s) return ST_ERR_NOMEM;
    s->m = m;
    s->tok = tok;
    s->cache = cache;
    s->parallel = parallel;
    s->queue_cap = queue_cap;
    s->max_ctx = max_ctx;
    if (parallel > ST_BATCH_MAX) parallel = s->parallel = ST_BATCH_MAX; /* one batch holds every active sequence */
    s->q = st_calloc((size_t)queue_cap, sizeof *s->q);
    s->fw = st_calloc((size_t)parallel, sizeof *s->fw);
    s->has = st_calloc((size_t)parallel, sizeof *s->has);
    s->rc = st_calloc((size_t)parallel, sizeof *s->rc);
    s->act = st_calloc((size_t)parallel, sizeof *s->act);
    if (!s->q || !s->fw || !s->has || !s->rc || !s->act) {
        free(s->q); free(s->fw); free(s->has); free(s->rc); free(s->act); free(s);
        return ST_ERR_NOMEM;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (pthread_create(&s->th, NULL, sched_main, s)) {
        free(s->q); free(s->fw); free(s->has); free(s->rc); free(s->act);
        free(s);
        return st_err(ST_ERR_NOMEM, "scheduler: cannot start a thread");
    }
    *out = s;
    return ST_OK;
}

int st_sched_submit(st_sched *s, st_sreq *r) {
    pthread_mutex_lock(&s->mu);
    if (s->stopping || s->qn >= s->queue_cap) {
        s->st.rejected++;
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    atomic_fetch_add(&r->refs, 1);
    r->t_submit = st_time();
    s->q[(s->qhead + s->qn) % s->queue_cap] = r;
    s->qn++;
    s->st.admitted++;
    s->st.queued = s->qn;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

void st_sched_stop(st_sched *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    int was = s->stopping;
    s->stopping = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (!was) pthread_join(s->th, NULL);
}

void st_sched_free(st_sched *s) {
    if (!s) return;
    st_sched_stop(s);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->q); free(s->fw); free(s->has); free(s->rc); free(s->act);
    free(s);
}

void st_sched_stats_get(st_sched *s, st_sched_stats *o) {
    pthread_mutex_lock(&s->mu);
    *o = s->st;
    pthread_mutex_unlock(&s->mu);
}

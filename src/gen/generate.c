/*
 * generate.c — the generation engine: prefill (prompt cache aware), the
 * thinking state machine with think budget, grace and message, the
 * think→answer budget switch (exact / transplant / reread), stop conditions, UTF-8
 * safe streaming. See generate.h for the behaviour; this file is the how.
 *
 * All forward work goes through "jobs": a run of known tokens to push through
 * one state at one budget, in chunks (so a scheduler can interleave requests),
 * optionally storing prompt-cache snapshots at interval boundaries and at the
 * prompt's end. Decoding is one token per step.
 */
#include "gen/generate.h"
#include "model/model.h"
#include "util/buf.h"
#include "util/util.h"

#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>

enum { PH_PREFILL, PH_THINK, PH_SWITCH, PH_ANSWER, PH_DONE };

/* One run of known tokens through a state: src 0 = prompt, 1 = generated. */
typedef struct {
    st_state *s;
    const st_budget *b;
    int src, off, n, done;
    int cacheable;        /* prompt tokens: store snapshots (prompt offset = off) */
    int logits;           /* want logits after the last chunk */
    int transplant;       /* transplant s to b before the first chunk */
} job;

typedef struct {
    unsigned char raw[4]; /* an incomplete UTF-8 sequence carried to the next piece */
    int nraw;
    st_buf pend;            /* content held back while it may begin a stop string */
} chan;

struct st_gen {
    const st_model *m;
    const st_tokenizer *tok;
    st_gen_params p;
    char *stop[ST_GEN_MAX_STOP];
    char *msg;
    int32_t *bias_ids;
    float *bias;
    int32_t *prompt;
    int n_prompt, max_ctx;
    int *bounds;          /* prompt offsets just after each "<|im_end|>\n" (ascending) */
    int n_bounds;
    st_pcache *cache;
    st_gen_emit_fn emit;
    void *ud;
    const st_budget *b_think, *b_ans, *b_cur;
    int switching;        /* thinking and answer budgets differ */
    st_state *s, *s_ans;  /* s_ans: exact mode's own answer state */
    st_state *line_snap[2]; /* reread: the thinking state at the starts of the last two lines (recurrent part) */
    st_sampler *smp;
    float *logits;
    int have_logits;
    int32_t *out;
    int n_out, cap_out;
    int phase;
    job jobs[3];
    int n_jobs, cur_job;
    int32_t id_think_end, id_im_end;
    int32_t *close_ids, *nl_ids;
    int n_close, n_nl;
    int last_nl;          /* the thought so far ends at a line break */
    int sep_pending;      /* a natural close: a lone "\n" next is the separator */
    chan ch[3];
    st_buf all[3];
    int text_oom;         /* text was lost to out of memory: the step fails */
    atomic_int cancel;
    st_gen_stats st;
    /* speculative decoding */
    st_state *s_draft;    /* the draft budget's state                          */
    int draft_fed;        /* tokens of prompt + out it has consumed             */
    float *spec_logits;   /* [draft_n + 1][vocab] of one verify pass            */
    st_state *spec_snap[ST_FWD_MAX_SNAP];
    double alpha;         /* running acceptance rate of drafted tokens          */
    st_sampler *smp_draft;/* sampling: draws the drafts (no penalty)            */
    int32_t *q_ids;       /* sampling: each draft's distribution q, [draft_n][vocab] */
    float *q_p, *q_dense; /* ... and one dense copy [vocab]                      */
    int32_t *p_ids;       /* sampling: the target's distribution at one position [vocab] */
    float *p_p;
    int q_n[ST_FWD_MAX_SNAP];
    int32_t pending;      /* sampling: the token a rejection drew, taken next step (-1: none) */
    int plain_left;       /* plain steps to run before drafting again           */
    int retry;            /* the pause is over: draft once whatever the model says */
    int pause;            /* length of the last pause (doubles while drafting does not pay) */
    double t_plain, t_spec; /* running seconds per emitted token, plain / drafted steps */
    int n_plain, n_spec;
    int step_kind;        /* this step: 0 other, 1 plain decode, 2 + k verified with k drafts kept */
    const st_budget *r_for; /* the budget r_cost was measured against            */
    double r_cost;        /* a draft step's cost relative to a target step (bytes) */
    /* measured in each verify step (EMA, seconds per drafted token): what the
     * step cost beyond a plain step, and of that the drafting */
    double c_tok, c_draft;
    int n_meas;
    int spec_nd;          /* tokens the step in progress drafted                */
    int caught_up;        /* tokens the last draft_model fed to catch up        */
    double catch_s;       /* ... and its seconds, when it was a long one (else 0) */
    double c_catch;       /* measured seconds per token of a long catch-up (0: none yet) */
    double t_d1;          /* seconds of the draft budget's first one-token step (0: not yet) */
    /* prompt lookup: per match length m (1..3), drafted tokens accepted and
     * tried (decayed counts), and plain steps it sat out; the step's m */
    double ng_acc[4], ng_try[4];
    int ng_skip[4], spec_m;
    /* a step in progress (st_gen_step_begin .. _end) */
    st_gen_fwd *defer;    /* where to describe the decode forward instead of running it */
    int32_t pend_tok;     /* its token (the item points here)                           */
    int step_ph;
    double step_t0;
    st_status step_rc;
};

st_gen_params st_gen_default_params(void) {
    st_gen_params p;
    memset(&p, 0, sizeof p);
    p.max_tokens = 256;
    p.think_budget = -1;
    p.think_grace = 16;
    p.mode = ST_SWITCH_EXACT;
    p.prefill_chunk = 512;
    p.draft_n = 4;
    p.sampling = st_sampler_default_params();
    return p;
}

static const char *const g_mode_names[ST_SWITCH_N_MODES] = {"exact", "transplant", "reread"};
const char *st_switch_mode_name(st_switch_mode m) { return (unsigned)m < ST_SWITCH_N_MODES ? g_mode_names[m] : "?"; }
int st_switch_mode_parse(const char *name) {
    for (int i = 0; name && i < ST_SWITCH_N_MODES; i++)
        if (!strcmp(name, g_mode_names[i])) return i;
    return -1;
}

const char *st_finish_name(st_finish f) {
    switch (f) {
    case ST_FINISH_NONE: return "none";
    case ST_FINISH_STOP: return "stop";
    case ST_FINISH_LENGTH: return "length";
    case ST_FINISH_CANCEL: return "cancelled";
    case ST_FINISH_ERROR: return "error";
    }
    return "?";
}

/* ------------------------------------------------------------ checks */


st_status st_gen_check(const st_model *m, const st_gen_params *p) {
    if (!p->answer_with) return st_err(ST_ERR_ARG, "generate: no answer budget");
    if (p->answer_with->m != m || (p->think_with && p->think_with->m != m))
        return st_err(ST_ERR_ARG, "generate: budget of another model");
    if (p->max_tokens < 0) return st_err(ST_ERR_ARG, "generate: max_tokens %d < 0", p->max_tokens);
    if (p->think_grace < 0) return st_err(ST_ERR_ARG, "generate: think grace %d < 0", p->think_grace);
    if (p->n_stop < 0 || p->n_stop > ST_GEN_MAX_STOP)
        return st_err(ST_ERR_ARG, "generate: %d stop strings (at most %d)", p->n_stop, ST_GEN_MAX_STOP);
    for (int i = 0; i < p->n_stop; i++)
        if (!p->stop[i] || !*p->stop[i]) return st_err(ST_ERR_ARG, "generate: empty stop string");
    if (p->n_bias < 0 || (p->n_bias && (!p->bias_ids || !p->bias)))
        return st_err(ST_ERR_ARG, "generate: bad logit bias list");
    for (int i = 0; i < p->n_bias; i++)
        if (p->bias_ids[i] < 0 || p->bias_ids[i] >= m->cfg.vocab_size)
            return st_err(ST_ERR_RANGE, "logit bias for token %d, outside the vocabulary of %d", p->bias_ids[i],
                          m->cfg.vocab_size);
    if ((unsigned)p->mode >= ST_SWITCH_N_MODES) return st_err(ST_ERR_ARG, "generate: unknown switch mode %d", (int)p->mode);
    if (p->draft || p->draft_ngram) {
        if (p->draft && p->draft_ngram) return st_err(ST_ERR_ARG, "speculative decoding: one drafter, not two");
        if (p->draft && p->draft->m != m) return st_err(ST_ERR_ARG, "generate: draft budget of another model");
        if (p->draft_n < 1 || p->draft_n > ST_FWD_MAX_SNAP)
            return st_err(ST_ERR_RANGE, "speculative decoding: draft_n %d (1 to %d)", p->draft_n, ST_FWD_MAX_SNAP);
    }
    const st_budget *a = p->think_with, *b = p->answer_with;
    if (p->thinking && a && p->mode != ST_SWITCH_EXACT && !st_budget_same(a, b)) {
        /* the rule st_state_transplant applies, checked before any work */
        char why[400];
        if (!st_budget_can_transplant(a, b, why, sizeof why)) return st_err(ST_ERR_BUDGET, "%s", why);
    }
    return ST_OK;
}

/* ------------------------------------------------------------ text out */

static void emit_raw(st_gen *g, st_text_kind k, const char *s, size_t n) {
    if (!n) return;
    if (st_buf_put(&g->all[k], s, n)) g->text_oom = 1;
    if (g->emit && g->emit(g->ud, k, s, n)) atomic_store(&g->cancel, 1);
}

/* Append the UTF-8-valid form of bytes to out; an incomplete sequence at the
 * end waits in c->raw for the next piece; invalid bytes become U+FFFD. */
static void utf8_clean(chan *c, const char *in, size_t n, st_buf *out) {
    size_t len = (size_t)c->nraw + n;
    unsigned char stackbuf[512], *s = len <= sizeof stackbuf ? stackbuf : st_malloc(len);
    if (!s) { out->oom = 1; return; }
    memcpy(s, c->raw, (size_t)c->nraw);
    memcpy(s + c->nraw, in, n);
    c->nraw = 0;
    size_t i = 0;
    static const char rep[] = "\xEF\xBF\xBD";
    while (i < len) {
        unsigned b = s[i];
        if (b < 0x80) { st_buf_put(out, (const char *)s + i, 1); i++; continue; }
        size_t need = b >= 0xC2 && b <= 0xDF ? 2 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xF0 && b <= 0xF4 ? 4 : 0;
        if (!need) { st_buf_put(out, rep, 3); i++; continue; }
        size_t k = 1;
        int ok = 1;
        for (; k < need && i + k < len; k++) {
            unsigned x = s[i + k], lo = 0x80, hi = 0xBF;
            if (k == 1) {
                if (b == 0xE0) lo = 0xA0;
                if (b == 0xED) hi = 0x9F;
                if (b == 0xF0) lo = 0x90;
                if (b == 0xF4) hi = 0x8F;
            }
            if (x < lo || x > hi) { ok = 0; break; }
        }
        if (!ok) { st_buf_put(out, rep, 3); i += k; continue; }
        if (i + need > len) { memcpy(c->raw, s + i, len - i); c->nraw = (int)(len - i); break; }
        st_buf_put(out, (const char *)s + i, need);
        i += need;
    }
    if (s != stackbuf) free(s);
}

static void finish(st_gen *g, st_finish f);

/* Content goes through the stop-string filter; the rest straight out. */
static void put_text(st_gen *g, st_text_kind k, const char *bytes, size_t n) {
    chan *c = &g->ch[k];
    st_buf clean = {0};
    utf8_clean(c, bytes, n, &clean);
    if (clean.oom) g->text_oom = 1;
    if (k != ST_TEXT_CONTENT || !g->p.n_stop) {
        emit_raw(g, k, clean.p, clean.n);
        free(clean.p);
        return;
    }
    if (st_buf_put(&c->pend, clean.p ? clean.p : "", clean.n)) g->text_oom = 1;
    free(clean.p);
    if (!c->pend.n) return;
    size_t cut = (size_t)-1;
    for (int i = 0; i < g->p.n_stop; i++) {
        const char *hit = strstr(c->pend.p, g->stop[i]);
        if (hit && (size_t)(hit - c->pend.p) < cut) cut = (size_t)(hit - c->pend.p);
    }
    if (cut != (size_t)-1) {
        emit_raw(g, k, c->pend.p, cut);
        c->pend.n = 0;
        c->nraw = 0;
        finish(g, ST_FINISH_STOP);
        return;
    }
    size_t hold = 0; /* longest suffix of pend that is a proper prefix of a stop string */
    for (int i = 0; i < g->p.n_stop; i++) {
        size_t L = strlen(g->stop[i]);
        for (size_t h = L - 1; h > hold; h--)
            if (h <= c->pend.n && !memcmp(c->pend.p + c->pend.n - h, g->stop[i], h)) { hold = h; break; }
    }
    emit_raw(g, k, c->pend.p, c->pend.n - hold);
    memmove(c->pend.p, c->pend.p + c->pend.n - hold, hold);
    c->pend.n = hold;
    c->pend.p[hold] = 0;
}

static void flush_text(st_gen *g) {
    for (int k = 0; k < 3; k++) {
        chan *c = &g->ch[k];
        if (c->nraw) { c->nraw = 0; if (st_buf_put(&c->pend, "\xEF\xBF\xBD", 3)) g->text_oom = 1; }
        if (c->pend.n) emit_raw(g, (st_text_kind)k, c->pend.p, c->pend.n);
        c->pend.n = 0;
    }
}

static void finish(st_gen *g, st_finish f) {
    if (g->phase == PH_DONE) return;
    g->phase = PH_DONE;
    g->st.finish = f;
    flush_text(g); /* a stop string already dropped what followed it */
}

static void put_token_text(st_gen *g, st_text_kind k, int32_t t, int *has_nl) {
    char buf[1024];
    int nb = st_token_bytes(g->tok, t, buf, sizeof buf);
    if (has_nl) *has_nl = 0;
    if (nb == -2) g->text_oom = 1;
    if (nb <= 0) return;
    if (nb > (int)sizeof buf) {
        char *big = st_malloc((size_t)nb);
        if (!big) { g->text_oom = 1; return; }
        if (st_token_bytes(g->tok, t, big, nb) == -2) { g->text_oom = 1; free(big); return; }
        if (has_nl) *has_nl = memchr(big, '\n', (size_t)nb) != NULL;
        put_text(g, k, big, (size_t)nb);
        free(big);
        return;
    }
    if (has_nl) *has_nl = memchr(buf, '\n', (size_t)nb) != NULL;
    put_text(g, k, buf, (size_t)nb);
}

/* ------------------------------------------------------------ lifecycle */

static st_status push_out(st_gen *g, int32_t t) {
    if (g->n_out == g->cap_out) {
        int nc = g->cap_out ? 2 * g->cap_out : 256;
        int32_t *o = st_realloc(g->out, sizeof(int32_t) * (size_t)nc);
        if (!o) return st_err(ST_ERR_NOMEM, "generate: out of memory");
        g->out = o;
        g->cap_out = nc;
    }
    g->out[g->n_out++] = t;
    return ST_OK;
}

void st_gen_free(st_gen *g) {
    if (!g) return;
    for (int i = 0; i < g->p.n_stop; i++) free(g->stop[i]);
    free(g->msg);
    free(g->bias_ids);
    free(g->bias);
    free(g->prompt);
    free(g->bounds);
    st_state_free(g->s);
    st_state_free(g->s_ans);
    st_state_free(g->line_snap[0]);
    st_state_free(g->line_snap[1]);
    st_state_free(g->s_draft);
    for (int k = 0; k < ST_FWD_MAX_SNAP; k++) st_state_free(g->spec_snap[k]);
    free(g->spec_logits);
    st_sampler_free(g->smp_draft);
    free(g->q_ids);
    free(g->q_p);
    free(g->q_dense);
    free(g->p_ids);
    free(g->p_p);
    st_sampler_free(g->smp);
    free(g->logits);
    free(g->out);
    free(g->close_ids);
    free(g->nl_ids);
    for (int k = 0; k < 3; k++) { free(g->ch[k].pend.p); free(g->all[k].p); }
    free(g);
}

static st_status find_turn_ends(st_gen *g);

st_status st_gen_new(const st_model *m, const st_tokenizer *tok, const st_gen_params *p, const int32_t *prompt,
                     int n_prompt, int max_ctx, st_pcache *cache, st_gen_emit_fn emit, void *ud, st_gen **out) {
    *out = NULL;
    st_status rc = st_gen_check(m, p);
    if (rc) return rc;
    const st_config *c = st_model_config(m);
    if (n_prompt <= 0) return st_err(ST_ERR_ARG, "generate: the prompt is empty");
    if (max_ctx <= 0) max_ctx = c->max_position_embeddings > 0 ? c->max_position_embeddings : 1 << 20;
    if (n_prompt > max_ctx)
        return st_err(ST_ERR_RANGE, "the prompt has %d tokens, more than the %d-token context", n_prompt, max_ctx);
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= c->vocab_size)
            return st_err(ST_ERR_RANGE, "prompt token %d (id %d) is outside the model's vocabulary of %d", i,
                          prompt[i], c->vocab_size);
    st_gen *g = st_calloc(1, sizeof *g);
    if (!g) return ST_ERR_NOMEM;
    g->m = m;
    g->tok = tok;
    g->p = *p;
    if (g->p.prefill_chunk <= 0) g->p.prefill_chunk = 512;
    g->max_ctx = max_ctx;
    g->cache = cache;
    g->emit = emit;
    g->ud = ud;
    for (int i = 0; i < p->n_stop; i++) {
        g->stop[i] = st_strdup(p->stop[i]);
        if (!g->stop[i]) { g->p.n_stop = i; goto nomem; }
    }
    if (p->think_message && *p->think_message && !(g->msg = st_strdup(p->think_message))) goto nomem;
    g->p.think_message = g->msg;
    if (p->n_bias > 0) {
        g->bias_ids = st_malloc(sizeof(int32_t) * (size_t)p->n_bias);
        g->bias = st_malloc(sizeof(float) * (size_t)p->n_bias);
        if (!g->bias_ids || !g->bias) goto nomem;
        memcpy(g->bias_ids, p->bias_ids, sizeof(int32_t) * (size_t)p->n_bias);
        memcpy(g->bias, p->bias, sizeof(float) * (size_t)p->n_bias);
    }
    g->p.bias_ids = g->bias_ids;
    g->p.bias = g->bias;
    g->prompt = st_malloc(sizeof(int32_t) * (size_t)n_prompt);
    g->logits = st_malloc(sizeof(float) * (size_t)c->vocab_size);
    if (!g->prompt || !g->logits) goto nomem;
    memcpy(g->prompt, prompt, sizeof(int32_t) * (size_t)n_prompt);
    g->n_prompt = n_prompt;
    g->b_ans = p->answer_with;
    g->b_think = p->thinking && p->think_with ? p->think_with : p->answer_with;
    g->switching = !st_budget_same(g->b_think, g->b_ans);
    g->b_cur = g->b_think;
    if ((rc = st_state_new(m, max_ctx, &g->s))) goto fail;
    if ((rc = st_sampler_new(&p->sampling, c->vocab_size, &g->smp))) goto fail;
    for (int i = 0; i < n_prompt; i++) st_sampler_accept(g->smp, prompt[i]);
    g->id_think_end = st_token_id(tok, "</think>");
    g->id_im_end = st_token_id(tok, "<|im_end|>");
    if ((rc = st_tokenize(tok, "</think>", 8, 1, &g->close_ids, &g->n_close))) goto fail;
    if ((rc = st_tokenize(tok, "\n", 1, 0, &g->nl_ids, &g->n_nl))) goto fail;
    if ((rc = find_turn_ends(g))) goto fail;
    g->last_nl = 1; /* the generation prompt ends "<think>\n" */
    g->st.prompt_tokens = n_prompt;
    g->phase = PH_PREFILL;
    /* the prompt: whatever the cache holds, the rest as one job */
    int hit = cache ? st_pcache_lookup(cache, g->b_cur, prompt, n_prompt, g->s, g->logits) : 0;
    g->st.cached_tokens = hit;
    g->jobs[0] = (job){.s = g->s, .b = g->b_cur, .src = 0, .off = hit, .n = n_prompt - hit, .cacheable = 1, .logits = 1};
    g->n_jobs = hit < n_prompt;
    g->cur_job = 0;
    g->have_logits = hit == n_prompt;
    g->alpha = 0.7; /* drafting starts on; the measured rate takes over */
    for (int j = 1; j <= 3; j++) { g->ng_acc[j] = 1.4; g->ng_try[j] = 2; } /* the same prior, 0.7 */
    g->plain_left = 4; /* a plain figure to compare with first */
    g->pending = -1;
    *out = g;
    return ST_OK;
nomem:
    rc = ST_ERR_NOMEM;
fail:
    st_gen_free(g);
    return rc;
}

void st_gen_cancel(st_gen *g) { atomic_store(&g->cancel, 1); }
const st_gen_stats *st_gen_get_stats(const st_gen *g) { return &g->st; }
const char *st_gen_text(const st_gen *g, st_text_kind k, size_t *len) {
    if (len) *len = g->all[k].n;
    return g->all[k].p ? g->all[k].p : "";
}
const int32_t *st_gen_tokens(const st_gen *g, int *n) { *n = g->n_out; return g->out; }
const float *st_gen_logits(const st_gen *g) { return g->have_logits ? g->logits : NULL; }
const char *st_gen_budget_name(const st_gen *g) { return st_budget_name(g->b_cur); }

/* ------------------------------------------------------------ steps */

/* Where the next turn of a chat will share this prompt's prefix. A Mamba
 * state cannot be cut back, so a snapshot only helps if it sits exactly
 * where the next request stops agreeing with this one. The chat template
 * renders every finished message as "...<|im_end|>\n" and the next turn
 * repeats all of them (earlier assistant turns in their reasoning-free form,
 * which is how this prompt already holds them), but not the generation
 * prompt after the last one. So the end of each message, the last user
 * message above all, is the point to keep. */
static st_status find_turn_ends(st_gen *g) {
    if (g->id_im_end < 0) return ST_OK;
    for (int i = 0; i < g->n_prompt; i++) {
        if (g->prompt[i] != g->id_im_end) continue;
        int at = i + 1;
        if (g->n_nl == 1 && at < g->n_prompt && g->prompt[at] == g->nl_ids[0]) at++;
        if (at >= g->n_prompt) break; /* the prompt's end is stored anyway */
        if (!g->bounds && !(g->bounds = st_malloc(sizeof(int) * (size_t)g->n_prompt)))
            return st_err(ST_ERR_NOMEM, "generate: out of memory");
        g->bounds[g->n_bounds++] = at;
    }
    return ST_OK;
}

/* The first turn end after prompt offset at, or INT_MAX. */
static int next_turn_end(const st_gen *g, int at) {
    for (int i = 0; i < g->n_bounds; i++)
        if (g->bounds[i] > at) return g->bounds[i];
    return INT_MAX;
}

/* One chunk of the current job; chunks end on cache-interval boundaries so
 * the snapshots land where later lookups expect them, and chat turn ends
 * inside a chunk are snapshotted within its pass. */
static st_status job_step(st_gen *g, int *job_done) {
    job *j = &g->jobs[g->cur_job];
    st_status rc;
    if (j->transplant && j->done == 0) {
        if ((rc = st_state_transplant(j->s, j->b))) return rc;
        j->transplant = 0;
    }
    int q = j->n - j->done;
    if (q > g->p.prefill_chunk) q = g->p.prefill_chunk;
    int iv = g->cache ? st_pcache_interval(g->cache) : 0;
    int at0 = j->off + j->done; /* prompt offset of this chunk */
    int marks[ST_FWD_MAX_SNAP], n_marks = 0; /* chat turn ends inside the chunk, as prompt offsets */
    if (j->cacheable && g->cache) {
        if (iv > 0 && (at0 / iv + 1) * iv - at0 < q) q = (at0 / iv + 1) * iv - at0;
        /* turn ends are taken inside the pass (no split, no extra weight
         * read); past ST_FWD_MAX_SNAP of them the chunk ends at the next */
        for (int e = next_turn_end(g, at0); e < at0 + q; e = next_turn_end(g, e)) {
            if (n_marks == ST_FWD_MAX_SNAP) { q = e - at0; break; }
            marks[n_marks++] = e;
        }
    }
    const int32_t *toks = (j->src ? g->out : g->prompt) + at0;
    int last = j->done + q == j->n;
    st_state *snap[ST_FWD_MAX_SNAP] = {0};
    int rel[ST_FWD_MAX_SNAP];
    for (int k = 0; k < n_marks; k++) {
        rel[k] = marks[k] - at0;
        if (!snap[k] && (rc = st_state_new(g->m, marks[k], &snap[k]))) {
            /* no memory for a snapshot: prefill without them */
            st_err_clear();
            n_marks = k;
            break;
        }
    }
    rc = ST_OK;
    if (q > 0) {
        rc = st_forward_snap(j->b, j->s, toks, q, last && j->logits ? g->logits : NULL, 0, rel, n_marks, snap, 0);
        if (!rc) j->done += q;
    }
    for (int k = 0; k < n_marks && !rc; k++) {
        st_status sr = st_pcache_store(g->cache, j->b, g->prompt, marks[k], snap[k], NULL);
        if (sr == ST_ERR_NOMEM) st_err_clear(); /* a full cache is not the request's failure */
        else rc = sr;
    }
    for (int k = 0; k < ST_FWD_MAX_SNAP; k++) st_state_free(snap[k]);
    if (rc) return rc;
    if (last && j->logits) g->have_logits = 1;
    if (j->cacheable && g->cache) {
        int at = j->off + j->done;
        /* a turn end can also close the chunk (the chunk size, or more turn
         * ends than one pass snapshots) */
        if (last || (iv > 0 && at % iv == 0) || next_turn_end(g, at - 1) == at) {
            rc = st_pcache_store(g->cache, j->b, g->prompt, at, j->s, last && j->logits ? g->logits : NULL);
            if (rc == ST_ERR_NOMEM) st_err_clear(); /* a full cache is not the request's failure */
            else if (rc) return rc;
        }
    }
    *job_done = last;
    return ST_OK;
}

static int is_eos(const st_gen *g, int32_t t) {
    const st_config *c = st_model_config(g->m);
    for (int i = 0; i < c->n_eos; i++)
        if (t == c->eos_token_ids[i]) return 1;
    return t == g->id_im_end && t >= 0;
}

/* reread: at each line start of the thought (and at its start), keep the
 * thinking state's recurrent part, the last two of them. A copy of the conv
 * and SSM states only: the KV rows before that position stay as they are. */
static st_status keep_line_start(st_gen *g) {
    const int pos = st_state_pos(g->s);
    if (g->line_snap[0] && st_state_pos(g->line_snap[0]) == pos) return ST_OK;
    st_state *x = g->line_snap[1];
    g->line_snap[1] = g->line_snap[0];
    g->line_snap[0] = x;
    st_status rc;
    if (!g->line_snap[0] && (rc = st_state_new(g->m, g->max_ctx, &g->line_snap[0]))) return rc;
    return st_state_copy_recurrent(g->line_snap[0], g->s);
}

/* reread: back to the start of the thought's last line (the one before a
 * closing line break), transplanted to the answer budget, which then reads
 * from there to the close tag itself. Every token it re-reads was fed by the
 * thinking budget already, so nothing but the state's budget changes
 * before it. */
static st_status reread_from(st_gen *g) {
    const int pos = st_state_pos(g->s);
    /* the latest line start before what was fed; a thought of one line
     * (or none) is re-read whole */
    const st_state *r = g->line_snap[0] && st_state_pos(g->line_snap[0]) < pos ? g->line_snap[0]
                        : g->line_snap[1] ? g->line_snap[1] : g->line_snap[0];
    st_status rc;
    if (!r) return st_err(ST_ERR_ARG, "generate: reread without a line start");
    if ((rc = st_state_copy_recurrent(g->s, r))) return rc;
    const int off = st_state_pos(g->s) - g->n_prompt;
    g->n_jobs = 0;
    g->jobs[g->n_jobs++] = (job){.s = g->s, .b = g->b_ans, .src = 1, .off = off, .n = g->n_out - off, .logits = 1, .transplant = 1};
    g->st.switch_tokens = g->n_out - off;
    return ST_OK;
}

/* Close the thought: the forced text (budget close), the close tag, then the
 * jobs that bring the answer budget's state up to date. forced = 0: the model
 * sampled </think> itself (not yet fed to any state). */
static st_status close_thought(st_gen *g, int forced) {
    int32_t *F = NULL;
    int nF = 0;
    st_status rc;
    if (forced) {
        st_buf t = {0};
        if (!g->last_nl) st_buf_put(&t, "\n", 1);
        if (g->msg) {
            st_buf_put(&t, g->msg, strlen(g->msg));
            if (g->msg[strlen(g->msg) - 1] != '\n') st_buf_put(&t, "\n", 1);
        }
        if (t.oom) { free(t.p); return st_err(ST_ERR_NOMEM, "generate: out of memory"); }
        if (t.n && (rc = st_tokenize(g->tok, t.p, t.n, 0, &F, &nF))) { free(t.p); return rc; }
        free(t.p);
    }
    int nC = forced ? g->n_close + g->n_nl : g->n_close;
    int total = nF + nC;
    if (g->st.completion_tokens + total > g->p.max_tokens || g->n_prompt + g->n_out + total > g->max_ctx) {
        free(F);
        finish(g, ST_FINISH_LENGTH);
        return ST_OK;
    }
    int think_start = 0; /* thinking tokens are out[0..) */
    for (int i = 0; i < nF; i++) {
        if ((rc = push_out(g, F[i]))) { free(F); return rc; }
        st_sampler_accept(g->smp, F[i]);
        put_token_text(g, ST_TEXT_REASONING, F[i], NULL);
    }
    free(F);
    g->st.think_tokens += nF;
    int f_off = g->n_out - nF;
    for (int i = 0; i < g->n_close; i++) {
        if ((rc = push_out(g, g->close_ids[i]))) return rc;
        if (forced) st_sampler_accept(g->smp, g->close_ids[i]);
    }
    put_text(g, ST_TEXT_CONTROL, "</think>", 8);
    if (forced) {
        for (int i = 0; i < g->n_nl; i++) {
            if ((rc = push_out(g, g->nl_ids[i]))) return rc;
            st_sampler_accept(g->smp, g->nl_ids[i]);
        }
        put_text(g, ST_TEXT_CONTROL, "\n", 1);
    }
    g->st.completion_tokens += total;
    g->st.answer_tokens += nC;
    g->st.forced_close = forced;
    g->sep_pending = !forced;
    int c_off = g->n_out - nC;
    g->phase = PH_SWITCH;
    g->cur_job = 0;
    g->have_logits = 0;
    if (!g->switching) {
        g->jobs[0] = (job){.s = g->s, .b = g->b_cur, .src = 1, .off = f_off, .n = g->n_out - f_off, .logits = 1};
        g->n_jobs = 1;
    } else if (g->p.mode == ST_SWITCH_EXACT) {
        g->st.switched = 1;
        if (!g->s_ans && (rc = st_state_new(g->m, g->max_ctx, &g->s_ans))) return rc;
        int hit = g->cache ? st_pcache_lookup(g->cache, g->b_ans, g->prompt, g->n_prompt, g->s_ans, g->logits) : 0;
        g->n_jobs = 0;
        if (hit < g->n_prompt)
            g->jobs[g->n_jobs++] = (job){.s = g->s_ans, .b = g->b_ans, .src = 0, .off = hit,
                                         .n = g->n_prompt - hit, .cacheable = 1, .logits = 1};
        g->jobs[g->n_jobs++] = (job){.s = g->s_ans, .b = g->b_ans, .src = 1, .off = think_start, .n = g->n_out, .logits = 1};
        g->st.switch_tokens = g->n_prompt - hit + g->n_out;
    } else {
        g->st.switched = 1;
        if (g->p.mode == ST_SWITCH_REREAD) return reread_from(g);
        g->n_jobs = 0;
        if (nF) g->jobs[g->n_jobs++] = (job){.s = g->s, .b = g->b_think, .src = 1, .off = f_off, .n = nF};
        g->jobs[g->n_jobs++] = (job){.s = g->s, .b = g->b_ans, .src = 1, .off = c_off, .n = nC, .logits = 1, .transplant = 1};
        g->st.switch_tokens = nC;
    }
    return ST_OK;
}

/* The answer is finished (stop or length): keep the state after the whole
 * turn as the next request will render it, "<|im_end|>\n" included, so the
 * next turn prefills only its new message. Only when that rendering holds
 * exactly these tokens: no reasoning in the state (the template drops it
 * from earlier turns), nothing the template trims or rewrites, and the text
 * tokenizes back to the sampled tokens. Costs one forward of 2-3 tokens. */
static st_status store_turn_end(st_gen *g) {
    size_t nc;
    const char *content = st_gen_text(g, ST_TEXT_CONTENT, &nc);
    int fed = st_state_pos(g->s) - g->n_prompt; /* a length stop leaves the last token unfed */
    if (!g->cache || g->p.thinking || g->n_nl != 1 || g->id_im_end < 0 || !g->n_out || !nc ||
        strlen(content) != nc || strstr(content, "<think>") || strstr(content, "</think>") ||
        strchr(" \t\n\r\v\f", content[nc - 1]) || fed < g->n_out - 1 || fed > g->n_out ||
        g->n_prompt + g->n_out + 2 > g->max_ctx)
        return ST_OK;
    int32_t *ids = NULL;
    int n = 0;
    if (st_tokenize(g->tok, content, nc, 1, &ids, &n)) { st_err_clear(); return ST_OK; }
    int same = n == g->n_out && !memcmp(ids, g->out, sizeof(int32_t) * (size_t)n);
    free(ids);
    if (!same) return ST_OK;
    int total = g->n_prompt + g->n_out + 2;
    int32_t *key = st_malloc(sizeof(int32_t) * (size_t)total);
    if (!key) { st_err_clear(); return ST_OK; }
    memcpy(key, g->prompt, sizeof(int32_t) * (size_t)g->n_prompt);
    memcpy(key + g->n_prompt, g->out, sizeof(int32_t) * (size_t)g->n_out);
    key[total - 2] = g->id_im_end;
    key[total - 1] = g->nl_ids[0];
    st_status rc = st_forward(g->b_cur, g->s, key + g->n_prompt + fed, total - g->n_prompt - fed, NULL, 0);
    if (!rc) rc = st_pcache_store(g->cache, g->b_cur, key, total, g->s, NULL);
    free(key);
    /* the answer is complete: an optional snapshot must not fail it (a wrong
     * guess above only costs memory, as lookups match tokens exactly) */
    if (rc) st_err_clear();
    return ST_OK;
}

/* The checks before a token is sampled: a think budget that closes the
 * thought now, or max_tokens. Returns 1 when one of them ended the step. */
static int pre_sample(st_gen *g, st_status *rc) {
    *rc = ST_OK;
    if (g->phase == PH_THINK && g->p.think_budget >= 0 && g->st.think_sampled >= g->p.think_budget &&
        (g->last_nl || g->st.think_sampled >= g->p.think_budget + g->p.think_grace)) {
        *rc = close_thought(g, 1);
        return 1;
    }
    if (g->st.completion_tokens >= g->p.max_tokens) { finish(g, ST_FINISH_LENGTH); return 1; }
    return 0;
}

/* Token t was sampled: emit it. Returns 1 when it is to be fed to the state
 * and decoding goes on, 0 when it ended the request or closed the thought
 * (then it is not fed: EOS, </think>, a stop string, a length limit). */
static int take_token(st_gen *g, int32_t t, st_status *rc) {
    *rc = ST_OK;
    int thinking = g->phase == PH_THINK;
    if (!g->p.ignore_eos && is_eos(g, t)) { finish(g, ST_FINISH_STOP); return 0; }
    st_sampler_accept(g->smp, t);
    if (thinking && g->n_close == 1 && t == g->close_ids[0]) {
        *rc = close_thought(g, 0);
        return 0;
    }
    if ((*rc = push_out(g, t))) return 0;
    g->st.completion_tokens++;
    if (thinking) {
        g->st.think_sampled++;
        g->st.think_tokens++;
        put_token_text(g, ST_TEXT_REASONING, t, &g->last_nl);
    } else {
        g->st.answer_tokens++;
        char b[8];
        const int nb = g->sep_pending ? st_token_bytes(g->tok, t, b, sizeof b) : 0;
        if (nb == -2) g->text_oom = 1;
        int sep = nb == 1 && b[0] == '\n';
        g->sep_pending = 0;
        if (sep) put_text(g, ST_TEXT_CONTROL, "\n", 1);
        else put_token_text(g, ST_TEXT_CONTENT, t, NULL);
    }
    if (g->phase == PH_DONE) return 0; /* a stop string */
    if (g->st.completion_tokens >= g->p.max_tokens) {
        finish(g, ST_FINISH_LENGTH);
        return 0;
    }
    if (st_state_pos(g->s) >= g->max_ctx) { finish(g, ST_FINISH_LENGTH); return 0; }
    return 1;
}

/* ---- speculative decoding (greedy): draft, verify in one pass, keep the
 * agreed prefix. The state after every prefix of the verify pass is a
 * snapshot taken inside it (st_forward_snap), so a rejection costs a copy,
 * not another pass over the weights. */

/* Sampling rather than greedy: drafts are then accepted with probability
 * min(1, p/q) and a rejection draws from max(0, p - q) (standard speculative
 * sampling: the output is distributed as sampling without drafts). */
static int spec_sampling(const st_gen *g) { return g->p.sampling.temperature > 0 && g->p.sampling.top_k != 1; }

static int32_t stream_at(const st_gen *g, int i) { return i < g->n_prompt ? g->prompt[i] : g->out[i - g->n_prompt]; }

/* Prompt lookup: the tokens after the latest earlier occurrence of the last
 * m tokens (m = 3, 2, 1, longest first) of the stream, up to k of them;
 * *mlen = the m that matched. */
static int draft_ngram(const st_gen *g, int k, int32_t *d, int *mlen) {
    const int n = g->n_prompt + g->n_out;
    for (int m = 3; m >= 1; m--) {
        if (n <= m) continue;
        for (int at = n - m - 1; at >= 0; at--) { /* match ends at at+m-1 < n-1 */
            int ok = 1;
            for (int i = 0; i < m && ok; i++) ok = stream_at(g, at + i) == stream_at(g, n - m + i);
            if (!ok) continue;
            int c = 0;
            while (c < k && at + m + c < n) { d[c] = stream_at(g, at + m + c); c++; }
            *mlen = m;
            return c;
        }
    }
    return 0;
}

/* The draft budget, greedy from its own state (brought up to the stream
 * first, in one pass). Leaves the state after the stream, not the drafts:
 * what the drafts fed is thrown away by restoring a copy, and the accepted
 * ones are fed with the next step's catch-up. */
static st_status draft_model(st_gen *g, int k, int32_t *d, int *nd) {
    const st_config *c = st_model_config(g->m);
    const int n = g->n_prompt + g->n_out;
    st_status rc;
    *nd = 0;
    if (!g->s_draft && (rc = st_state_new(g->m, g->max_ctx, &g->s_draft))) return rc;
    if (g->draft_fed > n) { st_state_reset(g->s_draft); g->draft_fed = 0; } /* out of step: start over */
    float *lg = g->spec_logits; /* its first row is free until the verify pass */
    int32_t *tk = st_malloc(sizeof(int32_t) * (size_t)(n - g->draft_fed));
    if (!tk) return ST_ERR_NOMEM;
    for (int i = g->draft_fed; i < n; i++) tk[i - g->draft_fed] = stream_at(g, i);
    g->caught_up = n - g->draft_fed;
    const double t0 = st_time();
    rc = st_forward(g->p.draft, g->s_draft, tk, n - g->draft_fed, lg, 0);
    free(tk);
    if (rc) return rc;
    g->catch_s = 0;
    if (g->caught_up > g->p.draft_n + 1) {
        g->catch_s = st_time() - t0;
        g->c_catch = g->catch_s / g->caught_up;
    }
    g->draft_fed = n;
    if (k > 1 && !g->spec_snap[ST_FWD_MAX_SNAP - 1] &&
        (rc = st_state_new(g->m, g->max_ctx, &g->spec_snap[ST_FWD_MAX_SNAP - 1])))
        return rc;
    if (k > 1 && (rc = st_state_copy_recurrent(g->spec_snap[ST_FWD_MAX_SNAP - 1], g->s_draft))) return rc;
    const int sampling = spec_sampling(g);
    for (int i = 0; i < k; i++) {
        int32_t best = 0;
        if (sampling) { /* d_i ~ q_i, and q_i kept for the acceptance test */
            const size_t V = (size_t)c->vocab_size;
            g->q_n[i] = st_sampler_dist(g->smp_draft, lg, g->q_ids + i * V, g->q_p + i * V);
            double u = st_sampler_uniform(g->smp_draft), cum = 0;
            best = g->q_ids[i * V + g->q_n[i] - 1];
            for (int j = 0; j < g->q_n[i]; j++)
                if (u < (cum += g->q_p[i * V + j])) { best = g->q_ids[i * V + j]; break; }
        } else {
            for (int v = 1; v < c->vocab_size; v++)
                if (lg[v] > lg[best]) best = v;
        }
        d[(*nd)++] = best;
        if (i + 1 < k && (rc = st_forward(g->p.draft, g->s_draft, &best, 1, lg, 0))) return rc;
        if (st_state_pos(g->s_draft) + 1 >= g->max_ctx) break;
    }
    if (k > 1) rc = st_state_copy_recurrent(g->s_draft, g->spec_snap[ST_FWD_MAX_SNAP - 1]);
    return rc;
}

/* How many to draft: the k that maximises expected tokens per unit of cost,
 * (1 - a^(k+1)) / (1 - a) over 1 + k·r, in units of a plain step: r what a
 * drafted token adds to the step (drafting it, verifying it, the snapshot
 * and the bookkeeping), measured on every drafted step as a whole (before
 * the first one: the bytes the draft budget reads against the target's, so
 * drafting gets tried); a small model is overhead-bound and its passes cost
 * far more than its bytes say. 0 when
 * no k pays 5%: then drafting pauses, for twice as long each time. After a
 * pause it drafts once to measure again, but only if the best case (every
 * draft accepted) would pay back, over a pause as long, four times what bringing
 * the draft state up to the stream costs: the catch-up is a prefill of the
 * whole gap, so retrying a drafter whose passes cost nearly a target step
 * would by itself make decoding several percent slower. */
static int draft_count(st_gen *g) {
    if (g->p.draft_fixed) return g->p.draft_n;
    if (g->plain_left > 0) {
        if (--g->plain_left == 0 && g->pause) g->retry = 1;
        return 0;
    }
    int best = 0;
    double best_case = 1.0; /* tokens per unit if every draft were accepted */
    /* the backstop: time per emitted token, drafted against plain */
    const int slower = g->n_spec >= 4 && g->n_plain >= 2 && g->t_spec > 0.97 * g->t_plain;
    int measured = 0;
    if (!slower) {
        if (g->p.draft && g->r_for != g->b_cur) { /* once per decoding budget */
            st_budget_stats sd, st;
            st_budget_stats_get(g->p.draft, &sd);
            st_budget_stats_get(g->b_cur, &st);
            g->r_cost = st.active_bytes > 0 ? sd.active_bytes / st.active_bytes : 1;
            g->r_for = g->b_cur;
            g->n_meas = 0; /* measured against another target */
        }
        measured = g->n_meas && g->n_plain && g->t_plain > 0;
        /* before any measure: the draft budget's one-token step against a
         * plain one (else the bytes each reads), plus what verifying,
         * snapshotting and bookkeeping add per drafted token (~0.2-0.35 of
         * a step on nano8 and on the default model) */
        double r0 = g->p.draft ? g->r_cost : 0;
        if (g->p.draft && g->t_d1 > 0 && g->t_plain > 0) r0 = g->t_d1 / g->t_plain;
        const double r = measured ? (g->c_tok > 0 ? g->c_tok / g->t_plain : 0) : r0 + 0.25;
        const double a = g->alpha;
        double best_v = 1.0; /* no drafting: one token per unit */
        for (int k = 1; k <= g->p.draft_n; k++) {
            double x = a >= 1 ? k + 1 : (1 - pow(a, k + 1)) / (1 - a), v = x / (1 + k * r);
            if (v > best_v * 1.05) { best_v = v; best = k; }
            if ((k + 1) / (1 + k * r) > best_case) best_case = (k + 1) / (1 + k * r);
        }
    }
    if (g->retry) {
        g->retry = 0;
        const int gap = g->n_prompt + g->n_out - g->draft_fed;
        /* in plain steps; not measured yet: the draft budget's share of the
         * target's prefill time per token */
        double per = g->c_catch;
        if (per <= 0 && g->st.prompt_tokens > g->st.cached_tokens)
            per = g->r_cost * g->st.t_prefill / (g->st.prompt_tokens - g->st.cached_tokens);
        const double catch_cost = g->p.draft && g->t_plain > 0 ? gap * per / g->t_plain : 0;
        if (best_case > 1.05 && (best_case - 1) * g->pause > 4 * catch_cost) return best ? best : 1;
        best = 0; /* not worth a look: pause again */
    }
    if (!best) {
        g->pause = g->pause ? 2 * g->pause : 32;
        g->plain_left = g->pause;
        g->n_spec = 0;
        return 0;
    }
    if (g->n_spec && g->n_spec % 64 == 0) g->plain_left = 4; /* keep the plain figure fresh */
    return best;
}

/* Prompt lookup decides step by step, from the draft at hand: how long a
 * match it came from says how far to trust it (on repetitive text a
 * 3-token match is right far more often than a 1-token one), so acceptance
 * is tracked per match length m, and each step drafts the k of the `avail`
 * looked-up tokens that pays best at that rate, with r what a drafted token
 * measurably adds to a step (as draft_count). A lookup costs nothing, so
 * unlike a budget drafter there is no catch-up to repay and no pause: a rate
 * that does not pay means a plain step, and every 16th step sat out at an m
 * drafts one token to measure that rate again (a cost of at most ~2% of a
 * step). The first k drafts are taken on the prior (0.7), as draft_count. */
static int ngram_count(st_gen *g, int m, int avail) {
    if (g->p.draft_fixed) return avail;
    if (g->plain_left > 0) { g->plain_left--; return 0; } /* a fresh plain figure */
    const double r = g->n_meas && g->t_plain > 0 ? fmax(g->c_tok, 0) / g->t_plain : 0.3;
    const double a = g->ng_acc[m] / g->ng_try[m];
    int best = 0;
    double best_v = 1.03; /* below this, drafting is within the noise of not drafting */
    for (int k = 1; k <= avail; k++) {
        const double x = a >= 1 ? k + 1 : (1 - pow(a, k + 1)) / (1 - a), v = x / (1 + k * r);
        if (v > best_v) { best_v = v; best = k; }
    }
    if (!best) return ++g->ng_skip[m] % 16 == 0;
    if (g->n_spec && g->n_spec % 64 == 0) g->plain_left = 2; /* keep the plain figure fresh */
    return best;
}

/* t was taken (fed next). Draft after it, verify t + drafts in one pass,
 * emit the agreed drafts; leave the state and logits after the last token
 * kept. Returns ST_OK with *ran = 0 when there was nothing to draft. */
static st_status speculate(st_gen *g, int32_t t, int *ran) {
    const st_config *c = st_model_config(g->m);
    const size_t V = (size_t)c->vocab_size;
    st_status rc;
    *ran = 0;
    if (g->p.draft && !g->p.draft_fixed && g->t_d1 <= 0 && g->plain_left == 0 && g->n_plain >= 2 &&
        g->draft_fed == 0) {
        /* the draft budget's cost, measured on the stream's first token (the
         * start of its catch-up anyway): a small model is overhead-bound and
         * its step costs far more than its bytes say */
        if (!g->s_draft && (rc = st_state_new(g->m, g->max_ctx, &g->s_draft))) return rc;
        if (!g->spec_logits && !(g->spec_logits = st_malloc(sizeof(float) * V * (ST_FWD_MAX_SNAP + 1))))
            return ST_ERR_NOMEM;
        const int32_t t0 = stream_at(g, 0);
        const double a = st_time();
        if ((rc = st_forward(g->p.draft, g->s_draft, &t0, 1, g->spec_logits, 0))) return rc;
        g->t_d1 = st_time() - a;
        g->draft_fed = 1;
    }
    int32_t d[ST_FWD_MAX_SNAP + 1];
    int nd = 0, k;
    if (g->p.draft_ngram) { /* look up first: the match decides how many to draft */
        int m = 0;
        nd = draft_ngram(g, g->p.draft_n, d + 1, &m);
        k = nd ? ngram_count(g, m, nd) : 0;
        g->spec_m = m;
    } else {
        k = draft_count(g);
    }
    /* the pass (t and the drafts) must leave the state short of the context
     * limit, or the limit would end the request earlier than plain decoding */
    const int room = g->max_ctx - st_state_pos(g->s) - 2, left = g->p.max_tokens - g->st.completion_tokens;
    if (k > room) k = room;
    if (k > left) k = left;
    if (k <= 0) return ST_OK;
    if (!g->spec_logits && !(g->spec_logits = st_malloc(sizeof(float) * V * (ST_FWD_MAX_SNAP + 1))))
        return ST_ERR_NOMEM;
    const int sampling = spec_sampling(g);
    if (sampling && !g->q_dense) {
        st_sampler_params dp = g->p.sampling;
        dp.repeat_penalty = 1.0f;
        dp.seed ^= 0x5bd1e995ull;
        g->q_ids = st_malloc(sizeof(int32_t) * V * ST_FWD_MAX_SNAP);
        g->q_p = st_malloc(sizeof(float) * V * ST_FWD_MAX_SNAP);
        g->q_dense = st_calloc(V, sizeof(float));
        g->p_ids = st_malloc(sizeof(int32_t) * V);
        g->p_p = st_malloc(sizeof(float) * V);
        if (!g->q_ids || !g->q_p || !g->q_dense || !g->p_ids || !g->p_p ||
            (rc = st_sampler_new(&dp, c->vocab_size, &g->smp_draft))) {
            free(g->q_dense);
            g->q_dense = NULL; /* the rest is freed with g */
            return ST_ERR_NOMEM;
        }
    }
    const double t0 = st_time();
    g->catch_s = 0;
    if (g->p.draft_ngram) {
        if (nd > k) nd = k;
        for (int i = 0; sampling && i < nd; i++) { /* a lookup proposes one token: q is a point mass */
            g->q_n[i] = 1;
            g->q_ids[i * V] = d[i + 1];
            g->q_p[i * V] = 1.0f;
        }
    } else if ((rc = draft_model(g, k, d + 1, &nd))) {
        return rc;
    }
    if (nd <= 0) return ST_OK;
    d[0] = t;
    int at[ST_FWD_MAX_SNAP];
    for (int i = 0; i < nd; i++) {
        at[i] = i + 1;
        if (!g->spec_snap[i] && (rc = st_state_new(g->m, g->max_ctx, &g->spec_snap[i]))) return rc;
    }
    /* the logits of every position: L[i] follows t, d1 .. di */
    const double t1 = st_time();
    if ((rc = st_forward_snap(g->b_cur, g->s, d, nd + 1, g->spec_logits, 1, at, nd, g->spec_snap, 1))) return rc;
    *ran = 1;
    /* drafting's own cost per drafted token, past a long catch-up (the
     * prompt, the stream since a pause: a one-off, not what a drafted token
     * costs from here on); the whole step is timed in st_gen_step_end */
    const double cd = (t1 - t0 - g->catch_s) / nd;
    g->c_draft = g->n_meas ? 0.7 * g->c_draft + 0.3 * cd : cd;
    g->spec_nd = nd;
    g->st.draft_steps++;
    g->st.draft_proposed += nd;
    int kept = nd + 1; /* tokens of the pass the state keeps */
    int i = 1, acc = 0;
    for (; i <= nd; i++) {
        float *L = g->spec_logits + (size_t)(i - 1) * V;
        memcpy(g->logits, L, sizeof(float) * V); /* what a plain step would sample from */
        if (pre_sample(g, &rc)) { kept = i; break; }
        for (int b = 0; b < g->p.n_bias; b++) L[g->bias_ids[b]] += g->bias[b];
        if (sampling) {
            /* p: the target's distribution here (penalty and all, as st_sample) */
            int32_t *pid = g->p_ids;
            const float *P = g->p_p;
            const int np = st_sampler_dist(g->smp, L, g->p_ids, g->p_p);
            const int qi = i - 1;
            double pd = 0, qd = 0;
            for (int j = 0; j < np; j++) if (pid[j] == d[i]) pd = P[j];
            for (int j = 0; j < g->q_n[qi]; j++) if (g->q_ids[qi * V + j] == d[i]) qd = g->q_p[qi * V + j];
            const double u = st_sampler_uniform(g->smp);
            if (qd > 0 && u * qd < pd) { /* accepted with probability min(1, p/q) */
                acc++;
                if (!take_token(g, d[i], &rc)) { kept = i; break; }
                continue;
            }
            /* rejected: draw from max(0, p - q), normalised; taken at the next step */
            for (int j = 0; j < g->q_n[qi]; j++) g->q_dense[g->q_ids[qi * V + j]] = g->q_p[qi * V + j];
            double tot = 0;
            for (int j = 0; j < np; j++) tot += fmax(0.0, (double)P[j] - g->q_dense[pid[j]]);
            int32_t pick = pid[np - 1];
            double cum = 0;
            if (tot > 0) {
                const double v = st_sampler_uniform(g->smp) * tot;
                for (int j = 0; j < np; j++) {
                    const double r = fmax(0.0, (double)P[j] - g->q_dense[pid[j]]);
                    if (r <= 0) continue;
                    pick = pid[j];
                    if (v < (cum += r)) break;
                }
            } else { /* p <= q everywhere only by rounding: then p itself */
                const double w = st_sampler_uniform(g->smp);
                for (int j = 0; j < np; j++) {
                    pick = pid[j];
                    if (w < (cum += P[j])) break;
                }
            }
            for (int j = 0; j < g->q_n[qi]; j++) g->q_dense[g->q_ids[qi * V + j]] = 0;
            g->pending = pick;
            kept = i;
            break;
        }
        const int32_t pick = st_sample(g->smp, L);
        if (pick != d[i]) { kept = i; break; } /* the next step samples it from g->logits */
        acc++;
        if (!take_token(g, pick, &rc)) { kept = i; break; }
    }
    g->st.draft_accepted += acc;
    g->step_kind = 2 + acc;
    g->alpha = 0.9 * g->alpha + 0.1 * ((double)acc / nd);
    if (g->p.draft_ngram) { /* a geometric rate: acc successes, then one failure unless all passed */
        const int m = g->spec_m;
        g->ng_acc[m] = 0.9 * g->ng_acc[m] + acc;
        g->ng_try[m] = 0.9 * g->ng_try[m] + acc + (acc < nd);
    }
    if (rc) return rc;
    if (kept <= nd) { /* back to the state after the first `kept` tokens */
        if ((rc = st_state_copy_recurrent(g->s, g->spec_snap[kept - 1]))) return rc;
    } else {
        memcpy(g->logits, g->spec_logits + (size_t)nd * V, sizeof(float) * V);
    }
    /* g->logits: set by the loop to the row after the kept tokens */
    return ST_OK;
}

static st_status decode_step(st_gen *g) {
    st_status rc;
    /* everything out holds is fed here: a line start when the thought is
     * empty or ends at a line break */
    if (g->phase == PH_THINK && g->switching && g->p.mode == ST_SWITCH_REREAD && (g->last_nl || !g->st.think_tokens) &&
        (rc = keep_line_start(g)))
        return rc;
    const int32_t pend = g->pending;
    g->pending = -1;
    if (pre_sample(g, &rc)) return rc;
    int32_t t = pend;
    if (t < 0) { /* (a speculative rejection already drew this step's token) */
        for (int i = 0; i < g->p.n_bias; i++) g->logits[g->bias_ids[i]] += g->bias[i];
        t = st_sample(g->smp, g->logits);
    }
    if (!take_token(g, t, &rc)) return rc;
    if (g->p.draft || g->p.draft_ngram) {
        int ran = 0;
        if ((rc = speculate(g, t, &ran)) || ran) return rc;
    }
    g->step_kind = 1;
    if (g->defer) { /* the caller runs it, maybe batched with other requests */
        g->pend_tok = t;
        *g->defer = (st_gen_fwd){g->b_cur, {g->s, &g->pend_tok, 1, g->logits, 0}};
        g->defer = NULL;
        return ST_OK;
    }
    return st_forward(g->b_cur, g->s, &t, 1, g->logits, 0);
}

int st_gen_step_begin(st_gen *g, st_gen_fwd *fwd) {
    st_status rc = ST_OK;
    g->step_rc = ST_OK;
    g->step_ph = -1;
    if (g->phase != PH_DONE && atomic_load(&g->cancel)) finish(g, ST_FINISH_CANCEL);
    if (g->phase == PH_DONE) return 0;
    g->step_t0 = st_time();
    g->step_kind = 0;
    int ph = g->step_ph = g->phase;
    if (ph == PH_PREFILL || ph == PH_SWITCH) {
        int jd = 1;
        if (g->cur_job < g->n_jobs) rc = job_step(g, &jd);
        if (!rc && jd && ++g->cur_job >= g->n_jobs) {
            if (ph == PH_PREFILL) {
                g->phase = g->p.thinking ? PH_THINK : PH_ANSWER;
                if (g->p.max_tokens == 0) finish(g, ST_FINISH_LENGTH);
            } else {
                if (g->switching && g->p.mode == ST_SWITCH_EXACT) {
                    st_state *x = g->s; g->s = g->s_ans; g->s_ans = x;
                }
                g->b_cur = g->b_ans;
                g->phase = PH_ANSWER;
                if (g->st.completion_tokens >= g->p.max_tokens) finish(g, ST_FINISH_LENGTH);
            }
        }
    } else {
        fwd->budget = NULL;
        g->defer = fwd;
        rc = decode_step(g);
        g->defer = NULL;
        if (fwd->budget) return 1; /* the forward is the caller's */
        if (!rc && g->phase == PH_DONE && (g->st.finish == ST_FINISH_STOP || g->st.finish == ST_FINISH_LENGTH))
            rc = store_turn_end(g);
    }
    g->step_rc = rc;
    return 0;
}

st_status st_gen_step_end(st_gen *g, st_status fwd_rc, int *done) {
    st_status rc = g->step_rc ? g->step_rc : fwd_rc;
    const int ph = g->step_ph;
    if (ph < 0) { *done = g->phase == PH_DONE; return ST_OK; } /* finished before the step began */
    if (!rc && g->text_oom) rc = st_err(ST_ERR_NOMEM, "generate: out of memory keeping the generated text");
    if (rc) {
        /* keep the message: finish() may not touch the library */
        finish(g, ST_FINISH_ERROR);
    }
    double dt = st_time() - g->step_t0;
    if (g->step_kind == 1 && (g->p.draft || g->p.draft_ngram)) { /* the figures speculation is judged by */
        /* a step the machine stalled (a busy neighbour, a page fault) counts
         * as at most twice the figure so far: one outlier must not flip the
         * decision to draft */
        g->t_plain = g->n_plain++ ? 0.8 * g->t_plain + 0.2 * fmin(dt, 2 * g->t_plain) : dt;
    } else if (g->step_kind >= 2) {
        const double per = dt / (g->step_kind - 1); /* t and the kept drafts */
        g->t_spec = g->n_spec++ ? 0.8 * g->t_spec + 0.2 * per : per;
        if (g->n_plain && g->spec_nd > 0) { /* everything the drafts added to the step */
            double c = (dt - g->catch_s - g->t_plain) / g->spec_nd;
            if (g->n_meas) c = fmin(c, fmax(2 * g->c_tok, 0.5 * g->t_plain)); /* outliers, as above */
            g->c_tok = g->n_meas++ ? 0.7 * g->c_tok + 0.3 * c : c;
            g->st.draft_cost = g->c_draft / g->t_plain;
            g->st.verify_cost = (g->c_tok - g->c_draft) / g->t_plain;
        }
    }
    if (ph == PH_PREFILL) g->st.t_prefill += dt;
    else if (ph == PH_THINK) g->st.t_think += dt;
    else if (ph == PH_SWITCH) *(g->switching ? &g->st.t_switch : &g->st.t_think) += dt;
    else g->st.t_answer += dt;
    if (g->phase != PH_DONE && atomic_load(&g->cancel)) finish(g, ST_FINISH_CANCEL);
    *done = g->phase == PH_DONE;
    g->step_ph = -1;
    g->step_rc = ST_OK;
    return rc;
}

st_status st_gen_step(st_gen *g, int *done) {
    st_gen_fwd f;
    st_status rc = ST_OK;
    if (st_gen_step_begin(g, &f)) rc = st_forward_batch(f.budget, &f.item, 1);
    return st_gen_step_end(g, rc, done);
}

st_status st_gen_run(st_gen *g) {
    int done = 0;
    while (!done) {
        st_status rc = st_gen_step(g, &done);
        if (rc) return rc;
    }
    return ST_OK;
}

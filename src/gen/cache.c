/*
 * cache.c — hybrid prompt cache: state snapshots keyed by (budget, token
 * prefix), longest-prefix lookup, LRU eviction under a byte budget. See cache.h.
 *
 * Entries are few (a snapshot per prompt end / interval, each a full Mamba
 * state), so a flat array with a linear scan is the right structure: a lookup
 * hashes every prefix of the query once (FNV-1a, incrementally) and compares
 * each entry's (budget key, length, hash) before confirming with memcmp.
 */
#include "gen/cache.h"
#include "model/model.h"
#include "util/util.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct {
    char key[160];        /* st_budget_key of the budget the state holds */
    int32_t *toks;        /* [n] */
    int n;
    uint64_t hash;        /* FNV-1a of toks */
    st_state *snap;       /* state after toks (its max_ctx is n: no spare KV) */
    float *logits;        /* [vocab] at position n-1, or NULL */
    size_t bytes;
    uint64_t used;        /* LRU tick */
} entry;

struct st_pcache {
    pthread_mutex_t mu;
    entry *e;
    int n, cap;
    size_t bytes, max_bytes;
    int interval;
    uint64_t tick;
    uint64_t lookups, hits, hit_tokens, stores, evictions;
};


st_status st_pcache_new(size_t max_bytes, int interval, st_pcache **out) {
    *out = NULL;
    st_pcache *c = st_calloc(1, sizeof *c);
    if (!c) return ST_ERR_NOMEM;
    pthread_mutex_init(&c->mu, NULL);
    c->max_bytes = max_bytes;
    c->interval = interval > 0 ? interval : 0;
    *out = c;
    return ST_OK;
}

static void entry_free(entry *e) {
    free(e->toks);
    free(e->logits);
    st_state_free(e->snap);
}

void st_pcache_free(st_pcache *c) {
    if (!c) return;
    for (int i = 0; i < c->n; i++) entry_free(&c->e[i]);
    free(c->e);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

int st_pcache_interval(const st_pcache *c) { return c->interval; }

int st_pcache_lookup(st_pcache *c, const st_budget *b, const int32_t *toks, int n, st_state *s, float *logits) {
    if (n <= 0) return 0;
    const char *key = st_budget_key(b);
    uint64_t *ph = st_malloc(sizeof(uint64_t) * ((size_t)n + 1)); /* ph[i]: hash of toks[0..i) */
    if (!ph) return 0;
    ph[0] = ST_FNV1A64_BASIS;
    for (int i = 0; i < n; i++) ph[i + 1] = st_fnv1a64(ph[i], &toks[i], sizeof toks[i]);
    int got = 0;
    pthread_mutex_lock(&c->mu);
    c->lookups++;
    int best = -1;
    for (int i = 0; i < c->n; i++) {
        entry *e = &c->e[i];
        int lim = logits && e->logits ? n : n - 1;
        if (e->n > lim || (best >= 0 && e->n <= c->e[best].n)) continue;
        if (e->hash != ph[e->n] || strcmp(e->key, key) || memcmp(e->toks, toks, sizeof(int32_t) * (size_t)e->n))
            continue;
        best = i;
    }
    if (best >= 0 && st_state_copy(s, c->e[best].snap) == ST_OK) {
        entry *e = &c->e[best];
        if (e->n == n) memcpy(logits, e->logits, sizeof(float) * (size_t)s->m->cfg.vocab_size);
        e->used = ++c->tick;
        c->hits++;
        c->hit_tokens += (uint64_t)e->n;
        got = e->n;
    }
    pthread_mutex_unlock(&c->mu);
    free(ph);
    return got;
}

/* Drop the least recently used entry; the caller holds the lock. */
static void evict_one(st_pcache *c) {
    int v = 0;
    for (int i = 1; i < c->n; i++)
        if (c->e[i].used < c->e[v].used) v = i;
    c->bytes -= c->e[v].bytes;
    entry_free(&c->e[v]);
    c->e[v] = c->e[--c->n];
    c->evictions++;
}

st_status st_pcache_store(st_pcache *c, const st_budget *b, const int32_t *toks, int n, const st_state *s,
                          const float *logits) {
    if (n <= 0 || st_state_pos(s) != n) return st_err(ST_ERR_ARG, "prompt cache: state is at %d, not %d", st_state_pos(s), n);
    entry e = {0};
    snprintf(e.key, sizeof e.key, "%s", st_budget_key(b));
    e.n = n;
    e.hash = st_fnv1a64(ST_FNV1A64_BASIS, toks, sizeof(int32_t) * (size_t)n);
    /* refresh an existing entry without copying anything */
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < c->n; i++) {
        entry *x = &c->e[i];
        if (x->n == n && x->hash == e.hash && !strcmp(x->key, e.key) &&
            !memcmp(x->toks, toks, sizeof(int32_t) * (size_t)n) && (x->logits || !logits)) {
            x->used = ++c->tick;
            pthread_mutex_unlock(&c->mu);
            return ST_OK;
        }
    }
    pthread_mutex_unlock(&c->mu);
    /* copy outside the lock: a snapshot can be tens of MiB */
    const int V = s->m->cfg.vocab_size;
    st_status rc = st_state_new(s->m, n, &e.snap);
    if (rc) return rc;
    rc = st_state_copy(e.snap, s);
    e.toks = st_malloc(sizeof(int32_t) * (size_t)n);
    if (logits) e.logits = st_malloc(sizeof(float) * (size_t)V);
    if (rc || !e.toks || (logits && !e.logits)) { entry_free(&e); return rc ? rc : ST_ERR_NOMEM; }
    memcpy(e.toks, toks, sizeof(int32_t) * (size_t)n);
    if (logits) memcpy(e.logits, logits, sizeof(float) * (size_t)V);
    e.bytes = st_state_bytes(e.snap) + sizeof(int32_t) * (size_t)n + (logits ? sizeof(float) * (size_t)V : 0) +
              sizeof e;
    if (e.bytes > c->max_bytes) { entry_free(&e); return ST_OK; }
    pthread_mutex_lock(&c->mu);
    /* another thread may have stored the same prefix meanwhile: replace it */
    for (int i = 0; i < c->n; i++) {
        entry *x = &c->e[i];
        if (x->n == n && x->hash == e.hash && !strcmp(x->key, e.key) && !memcmp(x->toks, toks, sizeof(int32_t) * (size_t)n)) {
            c->bytes -= x->bytes;
            entry_free(x);
            *x = c->e[--c->n];
            break;
        }
    }
    while (c->n && c->bytes + e.bytes > c->max_bytes) evict_one(c);
    if (c->n == c->cap) {
        int nc = c->cap ? 2 * c->cap : 16;
        entry *ne = st_realloc(c->e, sizeof(entry) * (size_t)nc);
        if (!ne) { pthread_mutex_unlock(&c->mu); entry_free(&e); return st_err(ST_ERR_NOMEM, "prompt cache: out of memory"); }
        c->e = ne;
        c->cap = nc;
    }
    e.used = ++c->tick;
    c->e[c->n++] = e;
    c->bytes += e.bytes;
    c->stores++;
    pthread_mutex_unlock(&c->mu);
    return ST_OK;
}

void st_pcache_stats_get(st_pcache *c, st_pcache_stats *o) {
    pthread_mutex_lock(&c->mu);
    o->bytes = c->bytes;
    o->max_bytes = c->max_bytes;
    o->entries = c->n;
    o->lookups = c->lookups;
    o->hits = c->hits;
    o->hit_tokens = c->hit_tokens;
    o->stores = c->stores;
    o->evictions = c->evictions;
    pthread_mutex_unlock(&c->mu);
}

/*
 * cache.h — hybrid prompt cache (internal to libstarling and its tools).
 *
 * A Mamba state cannot be truncated back to an earlier position the way a KV
 * cache can, so a prefix can only be reused if a snapshot of the whole state
 * was taken exactly at the end of that prefix. The cache keeps such snapshots
 * (st_state_copy) keyed by (budget widths, token prefix): the generation
 * engine stores one at the end of every prompt (with the logits there, so an
 * identical prompt needs no forward at all), one at the end of every chat
 * message in it and after a finished reasoning-free answer (where the next
 * turn of the conversation shares the prefix; see generate.c), and one every
 * `interval` tokens inside it. A lookup returns the longest stored prefix of a new prompt at
 * the same budget. Memory is bounded by a byte budget with LRU eviction.
 * All functions are thread-safe (one mutex; snapshots are copied in and out).
 */
#ifndef ST_GEN_CACHE_H
#define ST_GEN_CACHE_H

#include "starling.h"

typedef struct st_pcache st_pcache;

typedef struct {
    size_t bytes, max_bytes;   /* held now / allowed                        */
    int entries;
    uint64_t lookups, hits, hit_tokens, stores, evictions;
} st_pcache_stats;

/* max_bytes: memory bound for all snapshots; interval: tokens between
 * snapshots inside a prompt (0: prompt ends only). */
st_status st_pcache_new(size_t max_bytes, int interval, st_pcache **out);
void st_pcache_free(st_pcache *c);
int st_pcache_interval(const st_pcache *c);

/* Longest cached prefix of toks[0..n) computed at budget b. On a hit the
 * snapshot is copied into s and its length returned; on a miss s is untouched
 * and 0 is returned. An entry covering all n tokens is used only when it holds
 * logits and `logits` is non-NULL (they are copied there); otherwise the
 * match is limited to n-1 tokens so the caller still gets logits from a
 * forward. s must allow at least n positions. */
int st_pcache_lookup(st_pcache *c, const st_budget *b, const int32_t *toks, int n, st_state *s, float *logits);

/* Store a snapshot of s (whose position must be n, computed at budget b over
 * toks[0..n)), with the logits at its last position when non-NULL. An entry
 * already present is only refreshed. Entries larger than the whole budget are
 * skipped (ST_OK). Evicts least recently used entries to make room. */
st_status st_pcache_store(st_pcache *c, const st_budget *b, const int32_t *toks, int n, const st_state *s,
                          const float *logits);

void st_pcache_stats_get(st_pcache *c, st_pcache_stats *out);

#endif

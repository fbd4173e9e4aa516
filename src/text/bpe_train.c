/*
 * bpe_train.c — byte-level BPE training, written to a Hugging Face
 * tokenizer.json that st_tokenizer_load and the HF tokenizers read.
 *
 * 1. Counting. The special token strings are cut out of the text first (HF's
 *    trainer extracts added tokens the same way, so "<|im_start|>" in chat
 *    data is never learned as bytes). Each remaining segment is split with the
 *    Split regex (PCRE2, UTF+UCP, JIT, as src/text/tokenizer.c compiles it)
 *    into pieces, and the pieces are counted in a hash map. Large texts are
 *    cut into chunks at "\n" + ASCII letter, a place where no piece of this
 *    regex can straddle (a letter piece cannot start with a newline and every
 *    whitespace run ending in a newline is its own piece), so the counts equal
 *    a whole-text scan; the chunks are counted in parallel (OpenMP).
 * 2. Merging. Every distinct piece is a word: a sequence of symbol ids with a
 *    frequency. Pair counts live in a hash map; each pair keeps the list of
 *    words it (may) occur in, and a max-heap holds (count, pair) entries that
 *    are checked lazily: an entry whose count is stale is pushed again with
 *    the current count. Merging pair (a,b) visits only the words on its list;
 *    in each it removes the word's pair counts, merges left to right
 *    (non-overlapping, like HF), and adds the new pair counts back. Only pairs
 *    holding the new symbol can grow, and those are pushed afresh, so the heap
 *    top is always the true most frequent pair. Ties: the smaller (a, b) ids
 *    win (HF's rule), so the result is fully deterministic.
 * 3. A merge whose string already exists (e.g. "ab"+"c" after "a"+"bc")
 *    reuses that id, as HF does; training stops when vocab_size ids exist or
 *    no pair reaches min_frequency.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/bpe_train.h"
#include "text/tokenizer_internal.h"
#include "util/buf.h"
#include "util/util.h"

#include <jansson.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

const char st_bpe_split_regex[] =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|"
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const char *const st_bpe_specials[ST_BPE_N_SPECIAL] = {
    "<unk>",       "<s>",         "</s>",         "<SPECIAL_3>", "<SPECIAL_4>", "<SPECIAL_5>",
    "<SPECIAL_6>", "<SPECIAL_7>", "<SPECIAL_8>",  "<SPECIAL_9>", "<|im_start|>", "<|im_end|>",
    "<think>",     "</think>",    "<SPECIAL_14>", "<SPECIAL_15>"};

static st_status nomem(void) { return st_err(ST_ERR_NOMEM, "tokenizer-train: out of memory"); }

/* In-memory tables only: no output depends on where a key lands (words are
 * sorted by their bytes before training, pairs are numbered as first seen). */
static uint64_t hash_bytes(const void *p, size_t n) {
    uint64_t h = st_fnv1a64(ST_FNV1A64_BASIS, p, n);
    return h ^ (h >> 29);
}

/* ------------------------------------------------------------ piece counts */

/* bytes -> count; keys in a growing byte pool */
typedef struct { uint64_t h; uint64_t off; uint32_t len; int64_t cnt; } wentry;
typedef struct {
    wentry *e; size_t cap, n;
    char *pool; size_t pool_n, pool_cap;
} wmap;

static void wmap_free(wmap *m) { free(m->e); free(m->pool); memset(m, 0, sizeof *m); }

static int wmap_grow(wmap *m) {
    size_t nc = m->cap ? m->cap * 2 : 1 << 14;
    wentry *ne = st_calloc(nc, sizeof *ne);
    if (!ne) return -1;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->e[i].cnt) continue;
        size_t j = m->e[i].h & (nc - 1);
        while (ne[j].cnt) j = (j + 1) & (nc - 1);
        ne[j] = m->e[i];
    }
    free(m->e);
    m->e = ne; m->cap = nc;
    return 0;
}

static int wmap_add(wmap *m, const char *s, size_t n, int64_t cnt) {
    if ((m->n + 1) * 4 >= m->cap * 3 && wmap_grow(m)) return -1;
    uint64_t h = hash_bytes(s, n);
    size_t j = h & (m->cap - 1);
    for (;; j = (j + 1) & (m->cap - 1)) {
        wentry *e = &m->e[j];
        if (!e->cnt) break;
        if (e->h == h && e->len == n && !memcmp(m->pool + e->off, s, n)) { e->cnt += cnt; return 0; }
    }
    if (m->pool_n + n > m->pool_cap) {
        size_t c = m->pool_cap ? m->pool_cap : 1 << 16;
        while (c < m->pool_n + n) c *= 2;
        char *q = st_realloc(m->pool, c);
        if (!q) return -1;
        m->pool = q; m->pool_cap = c;
    }
    memcpy(m->pool + m->pool_n, s, n);
    m->e[j] = (wentry){h, m->pool_n, (uint32_t)n, cnt};
    m->pool_n += n;
    m->n++;
    return 0;
}

/* ------------------------------------------------------------ trainer */

typedef struct { int32_t a, b; int64_t cnt; st_ivec words; int stamp; } pair_t;
typedef struct { int64_t cnt; int32_t p; } hent; /* heap entry */

struct st_bpe_trainer {
    st_bpe_opts o;
    pcre2_code *re;
    wmap counts;
    int64_t pieces, bytes;
    int trained;
    /* words */
    int64_t n_words;
    int32_t *sym;      /* all words' symbols */
    int64_t *w_off;    /* start in sym */
    int32_t *w_len;
    int64_t *w_freq;
    int *w_stamp;
    /* tokens: id -> bytes */
    char *tb; size_t tb_n, tb_cap;
    uint64_t *t_off; int32_t *t_len; int n_tok, tok_cap;
    int32_t *tmap; size_t tmap_cap; /* bytes -> id, open addressing (-1 empty) */
    /* merges */
    int32_t (*merges)[2]; int n_merges;
    /* pairs */
    pair_t *pairs; int n_pairs, pairs_cap;
    int64_t *pmap_key; int32_t *pmap_val; size_t pmap_cap;
    hent *heap; size_t heap_n, heap_cap;
    int64_t bpe_tokens;
};

st_status st_bpe_new(const st_bpe_opts *o, st_bpe_trainer **out) {
    if (!o || !out) return st_err(ST_ERR_ARG, "st_bpe_new: NULL argument");
    *out = NULL;
    if (o->vocab_size < ST_BPE_BASE || o->vocab_size > (1 << 24))
        return st_err(ST_ERR_ARG, "tokenizer-train: vocab size %d outside %d..%d", o->vocab_size, ST_BPE_BASE, 1 << 24);
    if (o->min_frequency < 1) return st_err(ST_ERR_ARG, "tokenizer-train: min frequency %d < 1", o->min_frequency);
    st_bpe_trainer *t = st_calloc(1, sizeof *t);
    if (!t) return nomem();
    t->o = *o;
    int ec;
    PCRE2_SIZE eo;
    t->re = pcre2_compile((PCRE2_SPTR)st_bpe_split_regex, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    if (!t->re) { free(t); return st_err(ST_ERR_UNSUPPORTED, "tokenizer-train: PCRE2 cannot compile the Split regex (%d)", ec); }
    pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE); /* the interpreter is the fallback */
    *out = t;
    return ST_OK;
}

void st_bpe_free(st_bpe_trainer *t) {
    if (!t) return;
    pcre2_code_free(t->re);
    wmap_free(&t->counts);
    free(t->sym); free(t->w_off); free(t->w_len); free(t->w_freq); free(t->w_stamp);
    free(t->tb); free(t->t_off); free(t->t_len); free(t->tmap);
    free(t->merges);
    for (int i = 0; i < t->n_pairs; i++) free(t->pairs[i].words.p);
    free(t->pairs); free(t->pmap_key); free(t->pmap_val); free(t->heap);
    free(t);
}

/* Offset of the first invalid UTF-8 byte in s, or n. */
static size_t utf8_bad(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) { i++; continue; }
        int len; unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
        else return i;
        if (i + (size_t)len > n) return i;
        for (int k = 1; k < len; k++) {
            unsigned b = s[i + (size_t)k];
            if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return i;
        }
        i += (size_t)len;
    }
    return n;
}

/* Count the pieces of one segment (no special tokens inside) into m. */
static int count_segment(const pcre2_code *re, const char *s, size_t n, wmap *m, int64_t *pieces) {
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    pcre2_jit_stack *js = NULL;
    int rc = 0;
    if (!md || !mc) { rc = -1; goto out; }
    size_t pos = 0, prev = 0;
    while (pos <= n) {
        int r = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, mc);
        if (r == PCRE2_ERROR_JIT_STACKLIMIT && !js) { /* very long runs of one class */
            js = pcre2_jit_stack_create(64 * 1024, 64 * 1024 * 1024, NULL);
            if (!js) { rc = -1; goto out; }
            pcre2_jit_stack_assign(mc, NULL, js);
            continue;
        }
        if (r == PCRE2_ERROR_NOMATCH) break;
        if (r < 0) { rc = -2; goto out; }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (me <= ms) { /* empty match: no piece; step one character */
            if (ms >= n) break;
            pos = ms + 1;
            while (pos < n && ((unsigned char)s[pos] & 0xC0) == 0x80) pos++;
            continue;
        }
        /* Split "Isolated": the unmatched gap before a match is a piece too */
        if (ms > prev) { if (wmap_add(m, s + prev, ms - prev, 1)) { rc = -1; goto out; } (*pieces)++; }
        if (wmap_add(m, s + ms, me - ms, 1)) { rc = -1; goto out; }
        (*pieces)++;
        prev = pos = me;
    }
    if (prev < n) { if (wmap_add(m, s + prev, n - prev, 1)) { rc = -1; goto out; } (*pieces)++; }
out:
    pcre2_match_data_free(md);
    pcre2_match_context_free(mc);
    if (js) pcre2_jit_stack_free(js);
    return rc;
}

/* Length of the special token starting at s, 0 if none. */
static size_t special_at(const char *s, size_t n) {
    if (*s != '<') return 0;
    size_t best = 0;
    for (int i = 0; i < ST_BPE_N_SPECIAL; i++) {
        size_t l = strlen(st_bpe_specials[i]);
        if (l <= n && l > best && !memcmp(s, st_bpe_specials[i], l)) best = l;
    }
    return best;
}

/* Count a chunk: segments between special tokens. */
static int count_chunk(const pcre2_code *re, const char *s, size_t n, wmap *m, int64_t *pieces, int64_t *bytes) {
    size_t seg = 0;
    for (size_t i = 0; i < n;) {
        const char *lt = memchr(s + i, '<', n - i);
        if (!lt) break;
        i = (size_t)(lt - s);
        size_t l = special_at(s + i, n - i);
        if (!l) { i++; continue; }
        if (i > seg) {
            if (count_segment(re, s + seg, i - seg, m, pieces)) return -1;
            *bytes += (int64_t)(i - seg);
        }
        i += l;
        seg = i;
    }
    if (n > seg) {
        if (count_segment(re, s + seg, n - seg, m, pieces)) return -1;
        *bytes += (int64_t)(n - seg);
    }
    return 0;
}

st_status st_bpe_feed(st_bpe_trainer *t, const char *text, size_t len) {
    if (!t || (!text && len)) return st_err(ST_ERR_ARG, "st_bpe_feed: NULL argument");
    if (t->trained) return st_err(ST_ERR_ARG, "tokenizer-train: text fed after training");
    size_t bad = utf8_bad((const unsigned char *)text, len);
    if (bad < len) return st_err(ST_ERR_ARG, "text is not valid UTF-8 (byte %zu)", bad);
    /* chunk boundaries at "\n" followed by an ASCII letter (see the header comment) */
    enum { MAXC = 256 };
    size_t cut[MAXC + 1];
    int nc = 0;
    size_t want = len / MAXC + 1;
    if (want < (1u << 20)) want = 1u << 20;
    cut[nc++] = 0;
    size_t at = 0;
    while (nc < MAXC && at + want < len) {
        size_t i = at + want;
        while (i + 1 < len && !(text[i] == '\n' && ((text[i + 1] | 0x20) >= 'a' && (text[i + 1] | 0x20) <= 'z'))) i++;
        if (i + 1 >= len) break;
        cut[nc++] = at = i + 1;
    }
    cut[nc] = len;
    wmap *maps = st_calloc((size_t)nc, sizeof *maps);
    int64_t *pc = st_calloc((size_t)nc, sizeof *pc), *bc = st_calloc((size_t)nc, sizeof *bc);
    int *err = st_calloc((size_t)nc, sizeof *err);
    if (!maps || !pc || !bc || !err) { free(maps); free(pc); free(bc); free(err); return nomem(); }
#pragma omp parallel for schedule(dynamic, 1)
    for (int c = 0; c < nc; c++)
        err[c] = count_chunk(t->re, text + cut[c], cut[c + 1] - cut[c], &maps[c], &pc[c], &bc[c]);
    st_status st = ST_OK;
    for (int c = 0; c < nc && !st; c++) {
        if (err[c]) { st = err[c] == -2 ? st_err(ST_ERR_ARG, "tokenizer-train: regex match failed") : nomem(); break; }
        t->pieces += pc[c];
        t->bytes += bc[c];
        for (size_t i = 0; i < maps[c].cap && !st; i++)
            if (maps[c].e[i].cnt && wmap_add(&t->counts, maps[c].pool + maps[c].e[i].off, maps[c].e[i].len, maps[c].e[i].cnt))
                st = nomem();
    }
    for (int c = 0; c < nc; c++) wmap_free(&maps[c]);
    free(maps); free(pc); free(bc); free(err);
    return st;
}

/* ------------------------------------------------------------ tokens */

static int32_t tok_find(const st_bpe_trainer *t, const char *s, size_t n) {
    if (!t->tmap_cap) return -1;
    for (size_t j = hash_bytes(s, n) & (t->tmap_cap - 1);; j = (j + 1) & (t->tmap_cap - 1)) {
        int32_t id = t->tmap[j];
        if (id < 0) return -1;
        if ((size_t)t->t_len[id] == n && !memcmp(t->tb + t->t_off[id], s, n)) return id;
    }
}
static void tmap_insert(st_bpe_trainer *t, int32_t id) {
    size_t j = hash_bytes(t->tb + t->t_off[id], (size_t)t->t_len[id]) & (t->tmap_cap - 1);
    while (t->tmap[j] >= 0) j = (j + 1) & (t->tmap_cap - 1);
    t->tmap[j] = id;
}
/* Append a token (bytes) as id n_tok. */
static int tok_add(st_bpe_trainer *t, const char *s, size_t n) {
    if (t->n_tok == t->tok_cap) {
        int c = t->tok_cap ? t->tok_cap * 2 : 1024;
        uint64_t *o = st_realloc(t->t_off, (size_t)c * sizeof *o);
        if (!o) return -1;
        t->t_off = o;
        int32_t *l = st_realloc(t->t_len, (size_t)c * sizeof *l);
        if (!l) return -1;
        t->t_len = l; t->tok_cap = c;
    }
    if (t->tb_n + n > t->tb_cap) {
        size_t c = t->tb_cap ? t->tb_cap : 1 << 16;
        while (c < t->tb_n + n) c *= 2;
        char *q = st_realloc(t->tb, c);
        if (!q) return -1;
        t->tb = q; t->tb_cap = c;
    }
    memcpy(t->tb + t->tb_n, s, n);
    t->t_off[t->n_tok] = t->tb_n; t->t_len[t->n_tok] = (int32_t)n;
    t->tb_n += n;
    int32_t id = t->n_tok++;
    if ((size_t)t->n_tok * 2 > t->tmap_cap) { /* rehash */
        size_t c = t->tmap_cap ? t->tmap_cap * 2 : 4096;
        while ((size_t)t->n_tok * 2 > c) c *= 2;
        int32_t *m = st_malloc(c * sizeof *m);
        if (!m) return -1;
        for (size_t i = 0; i < c; i++) m[i] = -1;
        free(t->tmap);
        t->tmap = m; t->tmap_cap = c;
        for (int32_t i = 0; i < t->n_tok; i++) tmap_insert(t, i);
    } else {
        tmap_insert(t, id);
    }
    return 0;
}

/* ------------------------------------------------------------ pairs + heap */

static inline int64_t pkey(int32_t a, int32_t b) { return ((int64_t)a << 32) | (uint32_t)b; }

static int pmap_rehash(st_bpe_trainer *t, size_t cap) {
    int64_t *k = st_malloc(cap * sizeof *k);
    int32_t *v = st_malloc(cap * sizeof *v);
    if (!k || !v) { free(k); free(v); return -1; }
    for (size_t i = 0; i < cap; i++) k[i] = -1;
    for (int p = 0; p < t->n_pairs; p++) {
        int64_t key = pkey(t->pairs[p].a, t->pairs[p].b);
        size_t j = st_mix64((uint64_t)key) & (cap - 1);
        while (k[j] != -1) j = (j + 1) & (cap - 1);
        k[j] = key; v[j] = p;
    }
    free(t->pmap_key); free(t->pmap_val);
    t->pmap_key = k; t->pmap_val = v; t->pmap_cap = cap;
    return 0;
}

/* Index of pair (a,b), created with count 0 if absent; -1 out of memory. */
static int32_t pair_get(st_bpe_trainer *t, int32_t a, int32_t b) {
    int64_t key = pkey(a, b);
    size_t j = st_mix64((uint64_t)key) & (t->pmap_cap - 1);
    for (; t->pmap_key[j] != -1; j = (j + 1) & (t->pmap_cap - 1))
        if (t->pmap_key[j] == key) return t->pmap_val[j];
    if ((size_t)(t->n_pairs + 1) * 4 >= t->pmap_cap * 3) {
        if (pmap_rehash(t, t->pmap_cap * 2)) return -1;
        return pair_get(t, a, b);
    }
    if (t->n_pairs == t->pairs_cap) {
        int c = t->pairs_cap ? t->pairs_cap * 2 : 1 << 16;
        pair_t *q = st_realloc(t->pairs, (size_t)c * sizeof *q);
        if (!q) return -1;
        t->pairs = q; t->pairs_cap = c;
    }
    int32_t p = t->n_pairs++;
    t->pairs[p] = (pair_t){a, b, 0, {0}, -1};
    t->pmap_key[j] = key; t->pmap_val[j] = p;
    return p;
}

/* heap order: higher count first, then smaller (a, b) */
static inline int h_before(const st_bpe_trainer *t, hent x, hent y) {
    if (x.cnt != y.cnt) return x.cnt > y.cnt;
    const pair_t *a = &t->pairs[x.p], *b = &t->pairs[y.p];
    if (a->a != b->a) return a->a < b->a;
    return a->b < b->b;
}
static int heap_push(st_bpe_trainer *t, int64_t cnt, int32_t p) {
    if (t->heap_n == t->heap_cap) {
        size_t c = t->heap_cap ? t->heap_cap * 2 : 1 << 16;
        hent *q = st_realloc(t->heap, c * sizeof *q);
        if (!q) return -1;
        t->heap = q; t->heap_cap = c;
    }
    size_t i = t->heap_n++;
    hent e = {cnt, p};
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!h_before(t, e, t->heap[up])) break;
        t->heap[i] = t->heap[up];
        i = up;
    }
    t->heap[i] = e;
    return 0;
}
static hent heap_pop(st_bpe_trainer *t) {
    hent top = t->heap[0], e = t->heap[--t->heap_n];
    size_t i = 0, n = t->heap_n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        hent best = e;
        if (l < n && h_before(t, t->heap[l], best)) { m = l; best = t->heap[l]; }
        if (r < n && h_before(t, t->heap[r], best)) m = r;
        if (m == i) break;
        t->heap[i] = t->heap[m];
        i = m;
    }
    if (n) t->heap[i] = e;
    return top;
}

/* ------------------------------------------------------------ training */

static int cmp_wentry(const void *x, const void *y, void *arg) {
    const wmap *m = arg;
    const wentry *a = x, *b = y;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(m->pool + a->off, m->pool + b->off, n);
    return c ? c : (a->len > b->len) - (a->len < b->len);
}

/* Add (sign +1) or remove (-1) the pair counts of word w. With track, words
 * are recorded on the lists of pairs that hold symbol c, and those pairs are
 * queued in *changed once per merge (stamp). */
static int word_pairs(st_bpe_trainer *t, int64_t w, int sign, int32_t c, int stamp, st_ivec *changed) {
    const int32_t *s = t->sym + t->w_off[w];
    int n = t->w_len[w];
    int64_t f = t->w_freq[w] * sign;
    for (int i = 0; i + 1 < n; i++) {
        int32_t p = pair_get(t, s[i], s[i + 1]);
        if (p < 0) return -1;
        t->pairs[p].cnt += f;
        if (sign > 0 && (s[i] == c || s[i + 1] == c)) {
            st_ivec *wl = &t->pairs[p].words;
            if ((!wl->n || wl->p[wl->n - 1] != (int32_t)w) && st_ivec_push(wl, (int32_t)w)) return -1;
            if (t->pairs[p].stamp != stamp) {
                t->pairs[p].stamp = stamp;
                if (st_ivec_push(changed, p)) return -1;
            }
        }
    }
    return 0;
}

st_status st_bpe_train(st_bpe_trainer *t) {
    if (!t) return st_err(ST_ERR_ARG, "st_bpe_train: NULL argument");
    if (t->trained) return st_err(ST_ERR_ARG, "tokenizer-train: already trained");
    t->trained = 1;
    if (t->counts.n > (size_t)INT32_MAX) return st_err(ST_ERR_RANGE, "tokenizer-train: too many distinct pieces");

    /* words, in byte order (deterministic, independent of hashing) */
    wmap *m = &t->counts;
    size_t nw = 0;
    for (size_t i = 0; i < m->cap; i++) if (m->e[i].cnt) m->e[nw++] = m->e[i];
    qsort_r(m->e, nw, sizeof *m->e, cmp_wentry, m);
    t->n_words = (int64_t)nw;
    t->w_off = st_malloc((nw ? nw : 1) * sizeof *t->w_off);
    t->w_len = st_malloc((nw ? nw : 1) * sizeof *t->w_len);
    t->w_freq = st_malloc((nw ? nw : 1) * sizeof *t->w_freq);
    t->w_stamp = st_malloc((nw ? nw : 1) * sizeof *t->w_stamp);
    t->sym = st_malloc((m->pool_n ? m->pool_n : 1) * sizeof *t->sym);
    if (!t->w_off || !t->w_len || !t->w_freq || !t->w_stamp || !t->sym) return nomem();
    int64_t o = 0;
    for (size_t w = 0; w < nw; w++) {
        const wentry *e = &m->e[w];
        t->w_off[w] = o; t->w_len[w] = (int32_t)e->len; t->w_freq[w] = e->cnt; t->w_stamp[w] = -1;
        for (uint32_t k = 0; k < e->len; k++) t->sym[o++] = ST_BPE_N_SPECIAL + (unsigned char)m->pool[e->off + k];
    }

    /* tokens 0..271: specials, then bytes */
    for (int i = 0; i < ST_BPE_N_SPECIAL; i++)
        if (tok_add(t, st_bpe_specials[i], strlen(st_bpe_specials[i]))) return nomem();
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        if (tok_add(t, &c, 1)) return nomem();
    }
    /* a special string's bytes must not be found by tok_find as a merge result:
     * the specials never occur in words, and their strings are never built by merges
     * (training text has them cut out), so sharing the map is harmless. */

    if (pmap_rehash(t, 1 << 16)) return nomem();
    st_ivec changed = {0};
    st_status st = ST_OK;
    for (int64_t w = 0; w < t->n_words; w++)
        if (word_pairs(t, w, +1, -2, 0, &changed)) { st = nomem(); goto out; }
    /* initial lists: every word on every pair it has */
    for (int64_t w = 0; w < t->n_words; w++) {
        const int32_t *s = t->sym + t->w_off[w];
        for (int i = 0; i + 1 < t->w_len[w]; i++) {
            int32_t p = pair_get(t, s[i], s[i + 1]);
            st_ivec *wl = &t->pairs[p].words;
            if ((!wl->n || wl->p[wl->n - 1] != (int32_t)w) && st_ivec_push(wl, (int32_t)w)) { st = nomem(); goto out; }
        }
    }
    for (int32_t p = 0; p < t->n_pairs; p++)
        if (t->pairs[p].cnt > 0 && heap_push(t, t->pairs[p].cnt, p)) { st = nomem(); goto out; }

    int max_merges = t->o.vocab_size - ST_BPE_BASE;
    t->merges = st_malloc((size_t)(max_merges ? max_merges : 1) * 2 * sizeof(int32_t));
    if (!t->merges) { st = nomem(); goto out; }
    char *cat = NULL;
    size_t cat_cap = 0;
    int stamp = 0;
    while (t->n_tok < t->o.vocab_size && t->heap_n) {
        hent e = heap_pop(t);
        pair_t *P = &t->pairs[e.p];
        if (P->cnt != e.cnt) { /* stale entry */
            if (P->cnt > 0 && heap_push(t, P->cnt, e.p)) { st = nomem(); break; }
            continue;
        }
        if (e.cnt < t->o.min_frequency) break;
        int32_t a = P->a, b = P->b;
        /* the merged token: an existing string keeps its id */
        size_t la = (size_t)t->t_len[a], lb = (size_t)t->t_len[b];
        if (la + lb > cat_cap) {
            cat_cap = 2 * (la + lb);
            char *q = st_realloc(cat, cat_cap);
            if (!q) { st = nomem(); break; }
            cat = q;
        }
        memcpy(cat, t->tb + t->t_off[a], la);
        memcpy(cat + la, t->tb + t->t_off[b], lb);
        int32_t c = tok_find(t, cat, la + lb);
        if (c < 0) {
            if (tok_add(t, cat, la + lb)) { st = nomem(); break; }
            c = t->n_tok - 1;
        }
        t->merges[t->n_merges][0] = a;
        t->merges[t->n_merges][1] = b;
        t->n_merges++;
        stamp++;
        changed.n = 0;
        st_ivec wl = P->words; /* taken: the pair is consumed by this merge */
        P->words = (st_ivec){0};
        for (size_t k = 0; k < wl.n && !st; k++) {
            int32_t w = wl.p[k];
            if (t->w_stamp[w] == stamp) continue;
            t->w_stamp[w] = stamp;
            int32_t *s = t->sym + t->w_off[w];
            int n = t->w_len[w], has = 0;
            for (int i = 0; i + 1 < n; i++) if (s[i] == a && s[i + 1] == b) { has = 1; break; }
            if (!has) continue;
            if (word_pairs(t, w, -1, c, stamp, &changed)) { st = nomem(); break; }
            int j = 0;
            for (int i = 0; i < n;) {
                if (i + 1 < n && s[i] == a && s[i + 1] == b) { s[j++] = c; i += 2; }
                else s[j++] = s[i++];
            }
            t->w_len[w] = j;
            if (word_pairs(t, w, +1, c, stamp, &changed)) { st = nomem(); break; }
        }
        free(wl.p);
        P = &t->pairs[e.p]; /* pairs may have moved */
        for (size_t k = 0; k < changed.n && !st; k++) {
            int32_t p = changed.p[k];
            if (t->pairs[p].cnt > 0 && heap_push(t, t->pairs[p].cnt, p)) st = nomem();
        }
        if (st) break;
    }
    free(cat);
    t->bpe_tokens = 0;
    for (int64_t w = 0; w < t->n_words; w++) t->bpe_tokens += t->w_freq[w] * t->w_len[w];
out:
    free(changed.p);
    /* the pair tables are no longer needed */
    for (int i = 0; i < t->n_pairs; i++) { free(t->pairs[i].words.p); t->pairs[i].words = (st_ivec){0}; }
    free(t->heap); t->heap = NULL; t->heap_n = t->heap_cap = 0;
    return st;
}

void st_bpe_get_stats(const st_bpe_trainer *t, st_bpe_stats *s) {
    memset(s, 0, sizeof *s);
    if (!t) return;
    s->pieces = t->pieces;
    s->bytes = t->bytes;
    s->words = t->trained ? t->n_words : (int64_t)t->counts.n;
    s->merges = t->n_merges;
    s->vocab = t->n_tok;
    s->bpe_tokens = t->bpe_tokens;
}

/* ------------------------------------------------------------ output */

/* Token bytes -> byte-level string (malloc'd, NUL-terminated). */
static char *bl_string(const char *s, size_t n) {
    const uint16_t *byte_cp = st_byte_to_cp();
    char *o = st_malloc(2 * n + 1), *q = o;
    if (!o) return NULL;
    for (size_t i = 0; i < n; i++) {
        int cp = byte_cp[(unsigned char)s[i]];
        if (cp < 0x80) *q++ = (char)cp;
        else { *q++ = (char)(0xC0 | (cp >> 6)); *q++ = (char)(0x80 | (cp & 0x3F)); }
    }
    *q = 0;
    return o;
}

static json_t *added_obj(int i) {
    return json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id", i, "content", st_bpe_specials[i], "single_word", 0,
                     "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1);
}

static const char g_chat_template[] =
    "{%- if messages[0]['role'] == 'system' %}{%- set sys = messages[0]['content'] %}{%- set msgs = messages[1:] %}"
    "{%- else %}{%- set sys = '' %}{%- set msgs = messages %}{%- endif %}{{- '<|im_start|>system\\n' + sys + "
    "'<|im_end|>\\n' }}{%- for m in msgs %}{%- if m['role'] == 'assistant' and '<think>' not in m['content'] %}"
    "{{- '<|im_start|>assistant\\n<think></think>' + m['content'] + '<|im_end|>\\n' }}{%- else %}{{- "
    "'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}{%- if "
    "add_generation_prompt %}{%- if enable_thinking is defined and not enable_thinking %}{{- "
    "'<|im_start|>assistant\\n<think></think>' }}{%- else %}{{- '<|im_start|>assistant\\n<think>\\n' }}{%- endif "
    "%}{%- endif %}";

static st_status write_json(const char *path, json_t *j) {
    if (!j) return nomem();
    char *s = json_dumps(j, JSON_INDENT(1));
    json_decref(j);
    if (!s) return nomem();
    size_t n = strlen(s);
    char *s2 = st_realloc(s, n + 2);
    if (!s2) { free(s); return nomem(); }
    s2[n] = '\n'; s2[n + 1] = 0;
    st_status st = st_write_file_atomic(path, s2, n + 1);
    free(s2);
    return st;
}

st_status st_bpe_write(const st_bpe_trainer *t, const char *path) {
    if (!t || !path) return st_err(ST_ERR_ARG, "st_bpe_write: NULL argument");
    if (!t->trained) return st_err(ST_ERR_ARG, "tokenizer-train: write before training");
    json_t *added = json_array(), *vocab = json_object(), *merges = json_array();
    if (!added || !vocab || !merges) { json_decref(added); json_decref(vocab); json_decref(merges); return nomem(); }
    int oom = 0;
    for (int i = 0; i < ST_BPE_N_SPECIAL; i++) {
        oom |= json_array_append_new(added, added_obj(i));
        oom |= json_object_set_new(vocab, st_bpe_specials[i], json_integer(i));
    }
    char **str = st_calloc((size_t)t->n_tok, sizeof *str);
    if (!str) oom = 1;
    for (int i = ST_BPE_N_SPECIAL; i < t->n_tok && !oom; i++) {
        str[i] = bl_string(t->tb + t->t_off[i], (size_t)t->t_len[i]);
        if (!str[i]) { oom = 1; break; }
        oom |= json_object_set_new(vocab, str[i], json_integer(i));
    }
    for (int k = 0; k < t->n_merges && !oom; k++)
        oom |= json_array_append_new(merges, json_pack("[s,s]", str[t->merges[k][0]], str[t->merges[k][1]]));
    if (str) for (int i = 0; i < t->n_tok; i++) free(str[i]);
    free(str);
    if (oom) { json_decref(added); json_decref(vocab); json_decref(merges); return nomem(); }

    json_t *tok = json_pack(
        "{s:s, s:n, s:n, s:o, s:n, s:{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, {s:s, s:b, s:b, s:b}]}, s:n,"
        " s:{s:s, s:b, s:b, s:b}, s:{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:o}}",
        "version", "1.0", "truncation", "padding", "added_tokens", added, "normalizer", "pre_tokenizer", "type",
        "Sequence", "pretokenizers", "type", "Split", "pattern", "Regex", st_bpe_split_regex, "behavior", "Isolated",
        "invert", 0, "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1, "use_regex", 0, "post_processor",
        "decoder", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 1, "use_regex", 1, "model", "type",
        "BPE", "dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0,
        "byte_fallback", 0, "ignore_merges", 1, "vocab", vocab, "merges", merges);
    st_status st = write_json(path, tok);
    if (st) return st;

    /* beside it: tokenizer_config.json, special_tokens_map.json (as the Nemotron checkpoints ship) */
    const char *slash = strrchr(path, '/');
    size_t dl = slash ? (size_t)(slash - path) : 0;
    char p[4096];
    json_t *dec = json_object();
    if (!dec) return nomem();
    for (int i = 0; i < ST_BPE_N_SPECIAL; i++) {
        char k[16];
        snprintf(k, sizeof k, "%d", i);
        json_t *a = added_obj(i);
        if (a) json_object_del(a, "id");
        json_object_set_new(dec, k, a);
    }
    json_t *cfg = json_pack("{s:b, s:b, s:o, s:s, s:s, s:s, s:s, s:b, s:i, s:s, s:s}", "add_bos_token", 0,
                            "add_eos_token", 0, "added_tokens_decoder", dec, "bos_token", "<s>", "eos_token",
                            "<|im_end|>", "unk_token", "<unk>", "pad_token", "<unk>", "clean_up_tokenization_spaces", 0,
                            "model_max_length", 4096, "tokenizer_class", "PreTrainedTokenizerFast", "chat_template",
                            g_chat_template);
    if (st_pathf(p, sizeof p, "%.*s%stokenizer_config.json", (int)dl, path, slash ? "/" : "") < 0)
        { json_decref(cfg); return st_err(ST_ERR_ARG, "tokenizer-train: output path too long"); }
    if ((st = write_json(p, cfg))) return st;
    json_t *stm = json_pack("{s:s, s:s, s:s, s:s}", "bos_token", "<s>", "eos_token", "<|im_end|>", "unk_token", "<unk>",
                            "pad_token", "<unk>");
    if (st_pathf(p, sizeof p, "%.*s%sspecial_tokens_map.json", (int)dl, path, slash ? "/" : "") < 0)
        { json_decref(stm); return st_err(ST_ERR_ARG, "tokenizer-train: output path too long"); }
    return write_json(p, stm);
}

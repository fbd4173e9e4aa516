/*
 * tokenizer.c — Hugging Face tokenizer.json with a BPE model: byte-level BPE
 * (GPT-2, Llama 3, Qwen, Nemotron/Tekken) and SentencePiece-style BPE with byte
 * fallback (Llama 2 / Mistral).
 *
 * Encoding follows HF tokenizers step by step:
 *   1. added tokens (normalized=false) are split out of the raw text, leftmost
 *      longest match first; special ones only when parse_special is set
 *      (otherwise they are plain text, HF's split_special_tokens=True);
 *   2. each remaining segment is normalized (NFC/NFKC/... via utf8proc), then
 *      added tokens with normalized=true are split out of the result;
 *   3. the pre-tokenizer cuts each segment into pieces (PCRE2 regexes, JIT);
 *   4. each piece goes through BPE: ignore_merges shortcut, then merges by
 *      rank with a binary heap over a linked list of symbols (O(n log n)).
 * Decoding runs the decoder chain over token strings, then replaces invalid
 * UTF-8 with U+FFFD as HF does.
 *
 * Supported: normalizers NFC NFD NFKC NFKD Lowercase StripAccents Strip
 * Replace Prepend Sequence; pre-tokenizers Split (all five behaviors, invert)
 * ByteLevel Digits Metaspace Whitespace WhitespaceSplit Punctuation
 * BertPreTokenizer Sequence; BPE with ignore_merges, byte_fallback, unk_token,
 * fuse_unk, merges as "a b" or [a, b]; decoders ByteLevel Replace ByteFallback
 * Fuse Strip Metaspace Sequence; post-processor affixes (TemplateProcessing,
 * Bert/Roberta) for callers that want add_special_tokens. Anything else fails
 * the load with ST_ERR_UNSUPPORTED naming the type.
 *
 * Choices where HF leaves room:
 *   - text must be valid UTF-8 (HF takes Rust strings); else ST_ERR_ARG;
 *   - a decode of an id no token has fails with ST_ERR_RANGE (HF skips it);
 *   - vocab size is the largest id + 1 (what an embedding table needs);
 *   - Lowercase maps per character like Rust's char::to_lowercase;
 *   - added tokens keep their content verbatim through the ByteLevel decoder.
 *
 * The tokenizer is read-only after load: st_tokenize keeps all scratch state
 * on the call, so one tokenizer may serve many threads.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/tokenizer_internal.h"
#include "util/buf.h"
#include "util/util.h"

#include <errno.h>
#include <jansson.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#define MAX_TOKEN_ID (1 << 24) /* ids above this are treated as corrupt input */

/* ------------------------------------------------------------------ buffers */

/* A piece of text being pre-tokenized: a byte range of the work buffer.
 * first: the piece starts at offset 0 of the original input (Metaspace
 * prepend_scheme "first" needs it). */
typedef struct { size_t off, len; int first; } piece;
typedef struct { piece *p; size_t n, cap; } pvec;
static int pv_push(pvec *v, size_t off, size_t len, int first) {
    if (v->n == v->cap) {
        size_t c = v->cap ? v->cap * 2 : 64;
        piece *q = st_realloc(v->p, c * sizeof *q);
        if (!q) return -1;
        v->p = q; v->cap = c;
    }
    v->p[v->n].off = off; v->p[v->n].len = len; v->p[v->n].first = first;
    v->n++;
    return 0;
}

/* A span of a string found by a pattern: [s, e), m = it is a match. */
typedef struct { size_t s, e; int m; } span;
typedef struct { span *p; size_t n, cap; } svec;
static int sv_push(svec *v, size_t s, size_t e, int m) {
    if (v->n == v->cap) {
        size_t c = v->cap ? v->cap * 2 : 64;
        span *q = st_realloc(v->p, c * sizeof *q);
        if (!q) return -1;
        v->p = q; v->cap = c;
    }
    v->p[v->n].s = s; v->p[v->n].e = e; v->p[v->n].m = m;
    v->n++;
    return 0;
}

static st_status nomem(void) { return st_err(ST_ERR_NOMEM, "tokenizer: out of memory"); }

/* ------------------------------------------------------------------ UTF-8 */

static inline int u8len(unsigned char c) {
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}
/* Decode one code point of valid UTF-8. */
static inline uint32_t u8dec(const unsigned char *s, int *len) {
    unsigned c = s[0];
    if (c < 0x80) { *len = 1; return c; }
    if (c < 0xE0) { *len = 2; return ((c & 0x1F) << 6) | (s[1] & 0x3F); }
    if (c < 0xF0) { *len = 3; return ((c & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F); }
    *len = 4;
    return ((c & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
}
static int u8enc(uint32_t cp, char *o) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F)); return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid UTF-8 sequence starting at s[0] (1..4), or 0 if the
 * bytes there are not valid; *sub gets the length of the maximal valid prefix
 * (what one U+FFFD replaces, as Rust's from_utf8_lossy and WHATWG decoders do). */
static int u8check(const unsigned char *s, size_t n, int *sub) {
    unsigned c = s[0];
    *sub = 1;
    if (c < 0x80) return 1;
    int len; unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
    else return 0;
    for (int k = 1; k < len; k++) {
        if ((size_t)k >= n) { *sub = k; return 0; }
        unsigned b = s[k];
        if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) { *sub = k; return 0; }
    }
    return len;
}
/* Offset of the first invalid byte, or n if s is valid UTF-8. */
static size_t u8_invalid_at(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) { i++; continue; }
        int sub, l = u8check(u + i, n - i, &sub);
        if (!l) return i;
        i += (size_t)l;
    }
    return n;
}
/* Append s to o, replacing invalid sequences by U+FFFD. */
static int u8_lossy(st_buf *o, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    while (i < n) {
        if (u[i] < 0x80) { i++; continue; }
        int sub, l = u8check(u + i, n - i, &sub);
        if (l) { i += (size_t)l; continue; }
        if (st_buf_put(o, s + run, i - run) || st_buf_put(o, "\xEF\xBF\xBD", 3)) return -1;
        i += (size_t)sub; run = i;
    }
    return st_buf_put(o, s + run, n - run);
}

/* Rust char::is_whitespace (Unicode White_Space). */
static int is_ws(uint32_t c) {
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}
static int is_numeric(uint32_t c) {
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}
static int is_alnum(uint32_t c) {
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) || is_numeric(c);
}
static int is_punct(uint32_t c) {
    if (c < 0x80) return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
                         (c >= 123 && c <= 126);
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO;
}
static int is_mark(uint32_t c) {
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_MN || k == UTF8PROC_CATEGORY_MC || k == UTF8PROC_CATEGORY_ME;
}

/* GPT-2 byte <-> unicode alphabet (tokenizer_internal.h). st_tokenizer_load
 * builds it, so the encoder and decoder read the tables directly. */
static uint16_t g_byte2cp[256];
static int16_t g_cp2byte[ST_BYTE_CP_END];
static void byte_map_build(void) {
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        g_byte2cp[b] = (uint16_t)(keep ? b : 256 + n++);
    }
    for (int c = 0; c < ST_BYTE_CP_END; c++) g_cp2byte[c] = -1;
    for (int b = 0; b < 256; b++) g_cp2byte[g_byte2cp[b]] = (int16_t)b;
}
static pthread_once_t g_byte_once = PTHREAD_ONCE_INIT;
static void byte_map_init(void) { pthread_once(&g_byte_once, byte_map_build); }
const uint16_t *st_byte_to_cp(void) { byte_map_init(); return g_byte2cp; }
const int16_t *st_cp_to_byte(void) { byte_map_init(); return g_cp2byte; }

/* ------------------------------------------------------------------ hash maps */

static uint32_t hash_bytes(const char *s, size_t n) {
    uint64_t h = st_fnv1a64(ST_FNV1A64_BASIS, s, n);
    return (uint32_t)(h ^ (h >> 32));
}

/* String -> int map; keys live in an external pool addressed by offset. */
typedef struct { uint32_t hash, off, len; int32_t val; } sment;
typedef struct { sment *e; uint32_t mask; } smap;

static int smap_init(smap *m, size_t n) {
    size_t cap = 16;
    while (cap < n + n / 3 + 1) cap *= 2;
    m->e = st_malloc(cap * sizeof *m->e);
    if (!m->e) return -1;
    for (size_t i = 0; i < cap; i++) m->e[i].val = -1;
    m->mask = (uint32_t)(cap - 1);
    return 0;
}
static int32_t smap_get(const smap *m, const char *pool, const char *s, size_t n) {
    if (!m->e) return -1;
    uint32_t h = hash_bytes(s, n);
    for (uint32_t i = h & m->mask;; i = (i + 1) & m->mask) {
        const sment *e = &m->e[i];
        if (e->val < 0) return -1;
        if (e->hash == h && e->len == n && memcmp(pool + e->off, s, n) == 0) return e->val;
    }
}
/* Insert or overwrite (later entries win, as with a Rust/JS map). */
static void smap_put(smap *m, const char *pool, uint32_t off, uint32_t len, int32_t val) {
    uint32_t h = hash_bytes(pool + off, len);
    for (uint32_t i = h & m->mask;; i = (i + 1) & m->mask) {
        sment *e = &m->e[i];
        if (e->val < 0) { e->hash = h; e->off = off; e->len = len; e->val = val; return; }
        if (e->hash == h && e->len == len && memcmp(pool + e->off, pool + off, len) == 0) {
            e->val = val; return;
        }
    }
}

/* (left id, right id) -> (rank, merged id). */
typedef struct { uint64_t key; int32_t rank, id; } mment;
typedef struct { mment *e; uint64_t mask; } mmap_t;

static inline uint64_t mkey(int32_t a, int32_t b) {
    return ((uint64_t)(uint32_t)(a + 1) << 32) | (uint32_t)b; /* never 0 */
}
static const mment *mmap_get(const mmap_t *m, int32_t a, int32_t b) {
    if (!m->e) return NULL;
    uint64_t k = mkey(a, b);
    for (uint64_t i = st_mix64(k) & m->mask;; i = (i + 1) & m->mask) {
        if (m->e[i].key == k) return &m->e[i];
        if (!m->e[i].key) return NULL;
    }
}
static void mmap_put(mmap_t *m, int32_t a, int32_t b, int32_t rank, int32_t id) {
    uint64_t k = mkey(a, b);
    for (uint64_t i = st_mix64(k) & m->mask;; i = (i + 1) & m->mask) {
        if (!m->e[i].key || m->e[i].key == k) { m->e[i].key = k; m->e[i].rank = rank; m->e[i].id = id; return; }
    }
}

/* ------------------------------------------------------------------ components */

enum { N_SEQ, N_NFC, N_NFD, N_NFKC, N_NFKD, N_LOWER, N_STRIP, N_STRIP_ACCENTS, N_REPLACE, N_PREPEND };
typedef struct norm {
    int type;
    struct norm *kids; int n_kids;
    char *a; size_t a_len;   /* Replace: literal pattern; Prepend: text */
    char *b; size_t b_len;   /* Replace: content */
    pcre2_code *re;          /* Replace with a Regex pattern */
    int left, right;         /* Strip */
} norm;

enum { P_SEQ, P_SPLIT, P_BYTELEVEL, P_DIGITS, P_METASPACE, P_WHITESPACE, P_WSPLIT, P_PUNCT, P_BERT };
enum { B_REMOVED, B_ISOLATED, B_MERGED_PREV, B_MERGED_NEXT, B_CONTIGUOUS };
enum { PS_ALWAYS, PS_FIRST, PS_NEVER };
typedef struct pretok {
    int type;
    struct pretok *kids; int n_kids;
    pcre2_code *re;          /* Split, ByteLevel(use_regex), Whitespace */
    int behavior, invert;
    int add_prefix_space;    /* ByteLevel */
    int individual_digits;   /* Digits */
    uint32_t repl_cp;        /* Metaspace replacement char */
    int prepend_scheme, split;
} pretok;

enum { D_SEQ, D_BYTELEVEL, D_REPLACE, D_BYTEFALLBACK, D_FUSE, D_STRIP, D_METASPACE };
typedef struct dec {
    int type;
    struct dec *kids; int n_kids;
    char *a; size_t a_len;   /* Replace pattern */
    char *b; size_t b_len;   /* Replace content */
    pcre2_code *re;
    uint32_t cp;             /* Strip content / Metaspace replacement */
    int start, stop;         /* Strip */
    int prepend_scheme;      /* Metaspace */
} dec;

typedef struct {
    uint32_t off, len;       /* content in pool (normalized content if normalized) */
    int32_t id;
    uint8_t special, lstrip, rstrip, single_word, normalized;
} added_tok;

struct st_tokenizer {
    st_buf pool;               /* all strings: vocab, added contents */
    int n_ids;               /* max id + 1 */
    uint32_t *tok_off;       /* per id: string for decoding */
    int32_t *tok_len;        /* -1: no token has this id */
    uint8_t *tok_flags;      /* TF_* */
    smap vocab;              /* model vocab: string -> id */
    smap added_map;          /* added token content (as written) -> id */
    mmap_t merges;
    int32_t char_id[512];    /* vocab id of single code points < 512, -1 if absent */
    int32_t byte_fb[256];    /* <0xXX> ids for byte_fallback, -1 if absent */
    int32_t unk_id;
    int byte_fallback, fuse_unk, ignore_merges;
    added_tok *added; int n_added;
    int32_t *amatch[2];      /* added indexes matched on raw / normalized text, by first byte */
    int astart[2][257];
    norm *normalizer;
    pretok *pretok;
    const pretok **steps;    /* pretok with Sequences flattened */
    int n_steps;
    dec *decoder;
    int32_t *prefix, *suffix; int n_prefix, n_suffix; /* post_processor affixes */
    char *pp_unsupported;    /* post_processor type we do not handle, or NULL */
};
enum { TF_ADDED = 1, TF_SPECIAL = 2 };

/* ------------------------------------------------------------------ regex */

static st_status re_compile(const char *pat, size_t len, int literal, const char *what,
                            pcre2_code **out) {
    int ec; PCRE2_SIZE eo;
    uint32_t opt = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP); /* LITERAL refuses UCP */
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, len, opt, &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return st_err(ST_ERR_FORMAT, "%s: bad regex at offset %zu: %s", what, (size_t)eo, (char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if JIT is unavailable */
    *out = re;
    return ST_OK;
}

/* Per-call scratch: match data and a JIT stack big enough for long runs. */
typedef struct {
    const st_tokenizer *t;
    pcre2_match_data *md;
    pcre2_match_context *mc;
    pcre2_jit_stack *js;
    st_buf work;               /* pre-tokenizer text */
    svec spans;
    st_buf na;                 /* normalized segment */
    pvec ptmp;               /* pre-tokenizer scratch */
    svec *sv; pvec *pv;      /* per pre-tokenizer step: spans and pieces */
    /* BPE scratch */
    struct bsym { int32_t id, prev, next, len; } *sym; size_t sym_cap;
    struct hent { int32_t rank, pos, id; } *heap; size_t heap_n, heap_cap;
    st_ivec *out;
} tctx;

/* PCRE2 scratch is made on first use: decoding rarely needs it. */
static st_status ctx_init(tctx *c, const st_tokenizer *t, st_ivec *out) {
    memset(c, 0, sizeof *c);
    c->t = t; c->out = out;
    c->sv = st_calloc((size_t)t->n_steps + 1, sizeof *c->sv);
    c->pv = st_calloc((size_t)t->n_steps + 1, sizeof *c->pv);
    return c->sv && c->pv ? ST_OK : nomem();
}
static void ctx_free(tctx *c) {
    pcre2_match_data_free(c->md);
    pcre2_match_context_free(c->mc);
    pcre2_jit_stack_free(c->js);
    free(c->work.p); free(c->spans.p); free(c->na.p); free(c->ptmp.p);
    free(c->sym); free(c->heap);
    for (int k = 0; c->sv && c->pv && k < c->t->n_steps; k++) { free(c->sv[k].p); free(c->pv[k].p); }
    free(c->sv); free(c->pv);
}

/* Incremental regex search over s[0..n): spans covering s, as HF's
 * Pattern::find_matches gives them, produced a batch at a time so that a
 * multi-megabyte segment never needs a multi-megabyte span list. */
typedef struct { const pcre2_code *re; const char *s; size_t n, pos, prev; int done; } rxit;

static st_status rx_next(tctx *c, rxit *it, svec *out, size_t max) {
    out->n = 0;
    if (!c->md) {
        c->md = pcre2_match_data_create(16, NULL);
        c->mc = pcre2_match_context_create(NULL);
        if (!c->md || !c->mc) return nomem();
    }
    const char *s = it->s;
    size_t n = it->n;
    while (!it->done && out->n < max) {
        int rc = it->pos <= n ? pcre2_match(it->re, (PCRE2_SPTR)s, n, it->pos, PCRE2_NO_UTF_CHECK, c->md, c->mc)
                              : PCRE2_ERROR_NOMATCH;
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !c->js) { /* long runs: retry with a big stack */
            c->js = pcre2_jit_stack_create(64 * 1024, 64 * 1024 * 1024, NULL);
            if (!c->js) return nomem();
            pcre2_jit_stack_assign(c->mc, NULL, c->js);
            continue;
        }
        if (rc == PCRE2_ERROR_NOMATCH) {
            if (it->prev < n && sv_push(out, it->prev, n, 0)) return nomem();
            it->done = 1;
            break;
        }
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return st_err(ST_ERR_UNSUPPORTED, "tokenizer: regex match failed: %s", (char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t ms = ov[0], me = ov[1];
        if (me <= ms) { /* empty match: yields no piece; step one character */
            it->pos = ms < n ? ms + (size_t)u8len((unsigned char)s[ms]) : n + 1;
            continue;
        }
        if (ms > it->prev && sv_push(out, it->prev, ms, 0)) return nomem();
        if (sv_push(out, ms, me, 1)) return nomem();
        it->prev = it->pos = me;
    }
    return ST_OK;
}

/* All spans at once. */
static st_status regex_spans(tctx *c, const pcre2_code *re, const char *s, size_t n, svec *out) {
    rxit it = {re, s, n, 0, 0, 0};
    return rx_next(c, &it, out, SIZE_MAX);
}

/* One span per matching character; runs of other characters grouped. */
static st_status char_spans(const char *s, size_t n, int (*pred)(uint32_t, uint32_t), uint32_t arg,
                            svec *out) {
    out->n = 0;
    size_t i = 0, last = 0;
    while (i < n) {
        int l;
        uint32_t cp = u8dec((const unsigned char *)s + i, &l);
        if (pred(cp, arg)) {
            if (last < i && sv_push(out, last, i, 0)) return nomem();
            if (sv_push(out, i, i + (size_t)l, 1)) return nomem();
            last = i + (size_t)l;
        }
        i += (size_t)l;
    }
    if (last < n && sv_push(out, last, n, 0)) return nomem();
    return ST_OK;
}
static int pred_numeric(uint32_t c, uint32_t a) { (void)a; return is_numeric(c); }
static int pred_ws(uint32_t c, uint32_t a) { (void)a; return is_ws(c); }
static int pred_punct(uint32_t c, uint32_t a) { (void)a; return is_punct(c); }
static int pred_eq(uint32_t c, uint32_t a) { return c == a; }

/* HF SplitDelimiterBehavior over spans of the piece at work offset base. */
static st_status apply_behavior(svec *sv, int behavior, int invert, size_t base, int first, pvec *out) {
    span *sp = sv->p;
    size_t n = sv->n, k = 0; /* spans are rewritten in place into sp[0..k) */
    if (invert) for (size_t i = 0; i < n; i++) sp[i].m = !sp[i].m;
    int prevm = 0;
    switch (behavior) {
    case B_ISOLATED: k = n; for (size_t i = 0; i < n; i++) sp[i].m = 0; break;
    case B_REMOVED: k = n; break; /* matches dropped below */
    case B_CONTIGUOUS:
        for (size_t i = 0; i < n; i++) {
            int m = sp[i].m;
            if (m == prevm && k) sp[k - 1].e = sp[i].e;
            else { sp[k] = sp[i]; sp[k].m = 0; k++; }
            prevm = m;
        }
        break;
    case B_MERGED_PREV:
        for (size_t i = 0; i < n; i++) {
            int m = sp[i].m;
            if (m && !prevm && k) sp[k - 1].e = sp[i].e;
            else { sp[k] = sp[i]; sp[k].m = 0; k++; }
            prevm = m;
        }
        break;
    case B_MERGED_NEXT: { /* fold from the right, then the result is reversed */
        size_t w = n; /* write downwards from the top */
        for (size_t i = n; i-- > 0;) {
            int m = sp[i].m;
            if (m && !prevm && w < n) sp[w].s = sp[i].s;
            else { span x = sp[i]; x.m = 0; sp[--w] = x; }
            prevm = m;
        }
        memmove(sp, sp + w, (n - w) * sizeof *sp);
        k = n - w;
        break;
    }
    }
    for (size_t i = 0; i < k; i++) {
        if (sp[i].m || sp[i].e <= sp[i].s) continue;
        if (pv_push(out, base + sp[i].s, sp[i].e - sp[i].s, first && sp[i].s == 0)) return nomem();
    }
    return ST_OK;
}

/* ------------------------------------------------------------------ normalizers */

static st_status replace_all(tctx *c, const pcre2_code *re, const char *pat, size_t plen,
                             const char *rep, size_t rlen, const char *s, size_t n, st_buf *o) {
    if (!re) {
        if (!plen) return st_buf_put(o, s, n) ? nomem() : ST_OK;
        size_t i = 0;
        while (i < n) {
            const char *f = memmem(s + i, n - i, pat, plen);
            if (!f) break;
            size_t at = (size_t)(f - s);
            if (st_buf_put(o, s + i, at - i) || st_buf_put(o, rep, rlen)) return nomem();
            i = at + plen;
        }
        return st_buf_put(o, s + i, n - i) ? nomem() : ST_OK;
    }
    st_status st = regex_spans(c, re, s, n, &c->spans);
    if (st) return st;
    for (size_t i = 0; i < c->spans.n; i++) {
        span *sp = &c->spans.p[i];
        if (sp->m ? st_buf_put(o, rep, rlen) : st_buf_put(o, s + sp->s, sp->e - sp->s)) return nomem();
    }
    return ST_OK;
}

/* Apply one normalizer to s[0..n), writing into o (o->n reset first). */
static st_status norm_apply(tctx *c, const norm *z, const char *s, size_t n, st_buf *o) {
    o->n = 0;
    switch (z->type) {
    case N_SEQ: {
        st_buf a = {0}, b = {0};
        if (st_buf_put(&a, s, n)) return nomem();
        st_status st = ST_OK;
        for (int i = 0; i < z->n_kids && !st; i++) {
            st = norm_apply(c, &z->kids[i], a.p, a.n, &b);
            st_buf tmp = a; a = b; b = tmp;
        }
        if (!st && st_buf_put(o, a.p, a.n)) st = nomem();
        free(a.p); free(b.p);
        return st;
    }
    case N_NFC: case N_NFD: case N_NFKC: case N_NFKD: {
        size_t i = 0;
        while (i < n && (unsigned char)s[i] < 0x80) i++;
        if (i == n) return st_buf_put(o, s, n) ? nomem() : ST_OK; /* ASCII is invariant */
        int opt = UTF8PROC_STABLE;
        opt |= (z->type == N_NFC || z->type == N_NFKC) ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE;
        if (z->type == N_NFKC || z->type == N_NFKD) opt |= UTF8PROC_COMPAT;
        utf8proc_uint8_t *r = NULL;
        utf8proc_ssize_t rl = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &r,
                                           (utf8proc_option_t)opt);
        if (rl < 0) {
            free(r);
            return st_err(ST_ERR_ARG, "tokenizer: normalization failed: %s", utf8proc_errmsg(rl));
        }
        int bad = st_buf_put(o, r, (size_t)rl);
        free(r);
        return bad ? nomem() : ST_OK;
    }
    case N_LOWER: case N_STRIP_ACCENTS: {
        if (st_buf_reserve(o, n)) return nomem();
        for (size_t i = 0; i < n;) {
            int l; uint32_t cp = u8dec((const unsigned char *)s + i, &l);
            i += (size_t)l;
            char e[4];
            if (z->type == N_STRIP_ACCENTS) { if (is_mark(cp)) continue; }
            else if (cp == 0x130) { /* HF uses Rust's char::to_lowercase: the one
                                     * unconditional multi-char mapping */
                if (st_buf_put(o, "i\xCC\x87", 3)) return nomem();
                continue;
            } else cp = (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp);
            if (st_buf_put(o, e, (size_t)u8enc(cp, e))) return nomem();
        }
        return ST_OK;
    }
    case N_STRIP: {
        size_t b = 0, e = n;
        int l;
        if (z->left)
            while (b < e) { uint32_t cp = u8dec((const unsigned char *)s + b, &l); if (!is_ws(cp)) break; b += (size_t)l; }
        if (z->right)
            while (e > b) {
                size_t q = e - 1;
                while (q > b && ((unsigned char)s[q] & 0xC0) == 0x80) q--;
                uint32_t cp = u8dec((const unsigned char *)s + q, &l);
                if (!is_ws(cp)) break;
                e = q;
            }
        return st_buf_put(o, s + b, e - b) ? nomem() : ST_OK;
    }
    case N_REPLACE:
        return replace_all(c, z->re, z->a, z->a_len, z->b, z->b_len, s, n, o);
    case N_PREPEND:
        if (n && st_buf_put(o, z->a, z->a_len)) return nomem();
        return st_buf_put(o, s, n) ? nomem() : ST_OK;
    }
    return ST_OK;
}

/* ------------------------------------------------------------------ pre-tokenizers */

/* Append the GPT-2 byte-level form of work[off..off+len) to work. */
static int bytelevel_map(st_buf *w, size_t off, size_t len, int prefix_space) {
    if (st_buf_reserve(w, 2 * (len + 1))) return -1; /* no realloc inside the loop */
    const unsigned char *s = (const unsigned char *)w->p + off;
    char *o = w->p + w->n;
    if (prefix_space) { *o++ = (char)0xC4; *o++ = (char)0xA0; } /* 'Ġ' */
    for (size_t i = 0; i < len; i++) {
        unsigned c = g_byte2cp[s[i]];
        if (c < 0x80) *o++ = (char)c;
        else { *o++ = (char)(0xC0 | (c >> 6)); *o++ = (char)(0x80 | (c & 0x3F)); }
    }
    w->n = (size_t)(o - w->p);
    return 0;
}

static st_status bpe_word(tctx *c, const char *s, size_t n);
static st_status run_from(tctx *c, int k, const piece *pc);

/* Pass the pieces step k produced on to step k+1, then forget them (and the
 * text they added to the work buffer past keep). */
static st_status flush(tctx *c, int k, pvec *out, size_t keep) {
    st_status st = ST_OK;
    for (size_t i = 0; i < out->n && !st; i++) st = run_from(c, k + 1, &out->p[i]);
    out->n = 0;
    c->work.n = keep;
    return st;
}

#define BATCH 1024 /* regex spans per batch */

/* Pre-tokenizer step k (Sequences are flattened at load) on one piece. The
 * pipeline runs depth first: each piece goes all the way to BPE before the
 * next one is cut, so the scratch lists stay small. Spans (per depth) are
 * relative to the piece; pieces are offsets in the work buffer. */
static st_status step(tctx *c, int k, const piece *pc) {
    const pretok *p = c->t->steps[k];
    svec *sv = &c->sv[k];
    pvec *out = &c->pv[k];
    st_buf *w = &c->work;
    size_t keep = w->n;
    st_status st = ST_OK;
    out->n = 0;
    switch (p->type) {
    case P_SPLIT: case P_WHITESPACE: {
        /* Isolated and Removed treat spans one by one, so they can be batched */
        int batch = p->behavior == B_ISOLATED || p->behavior == B_REMOVED;
        rxit it = {p->re, w->p + pc->off, pc->len, 0, 0, 0};
        while (!st && !it.done) {
            it.s = w->p + pc->off; /* the buffer may have moved */
            st = rx_next(c, &it, sv, batch ? BATCH : SIZE_MAX);
            if (!st) st = apply_behavior(sv, p->behavior, p->invert, pc->off, pc->first, out);
            if (!st) st = flush(c, k, out, keep);
        }
        return st;
    }
    case P_DIGITS:
        st = char_spans(w->p + pc->off, pc->len, pred_numeric, 0, sv);
        if (!st) st = apply_behavior(sv, p->individual_digits ? B_ISOLATED : B_CONTIGUOUS, 0, pc->off, pc->first, out);
        break;
    case P_WSPLIT:
        st = char_spans(w->p + pc->off, pc->len, pred_ws, 0, sv);
        if (!st) st = apply_behavior(sv, B_REMOVED, 0, pc->off, pc->first, out);
        break;
    case P_PUNCT:
        st = char_spans(w->p + pc->off, pc->len, pred_punct, 0, sv);
        if (!st) st = apply_behavior(sv, B_ISOLATED, 0, pc->off, pc->first, out);
        break;
    case P_BERT: { /* whitespace split, then punctuation isolated */
        pvec *tmp = &c->ptmp;
        tmp->n = 0;
        st = char_spans(w->p + pc->off, pc->len, pred_ws, 0, sv);
        if (!st) st = apply_behavior(sv, B_REMOVED, 0, pc->off, pc->first, tmp);
        for (size_t i = 0; i < tmp->n && !st; i++) {
            st = char_spans(w->p + tmp->p[i].off, tmp->p[i].len, pred_punct, 0, sv);
            if (!st) st = apply_behavior(sv, B_ISOLATED, 0, tmp->p[i].off, tmp->p[i].first, out);
        }
        break;
    }
    case P_BYTELEVEL: {
        int pfx = p->add_prefix_space && !(pc->len && w->p[pc->off] == ' ');
        if (!p->re) {
            if (bytelevel_map(w, pc->off, pc->len, pfx) || pv_push(out, keep, w->n - keep, pc->first))
                return nomem();
            break;
        }
        size_t off = pc->off, len = pc->len;
        if (pfx) { /* the regex must see the added space */
            if (st_buf_reserve(w, len + 1)) return nomem();
            w->p[w->n++] = ' ';
            memcpy(w->p + w->n, w->p + off, len);
            w->n += len; off = keep; len++; keep = w->n;
        }
        rxit it = {p->re, w->p + off, len, 0, 0, 0};
        while (!st && !it.done) {
            it.s = w->p + off;
            st = rx_next(c, &it, sv, BATCH);
            for (size_t i = 0; i < sv->n && !st; i++) {
                size_t o = w->n;
                if (bytelevel_map(w, off + sv->p[i].s, sv->p[i].e - sv->p[i].s, 0) ||
                    pv_push(out, o, w->n - o, pc->first && sv->p[i].s == 0))
                    st = nomem();
            }
            if (!st) st = flush(c, k, out, keep);
        }
        return st;
    }
    case P_METASPACE: {
        char rep[4];
        int rl = u8enc(p->repl_cp, rep), pfx = 0;
        if (p->prepend_scheme == PS_ALWAYS || (p->prepend_scheme == PS_FIRST && pc->first)) {
            /* HF tests starts_with(replacement) after spaces became replacements */
            int l = 0;
            pfx = !(pc->len && (w->p[pc->off] == ' ' ||
                                u8dec((const unsigned char *)w->p + pc->off, &l) == p->repl_cp));
        }
        if (st_buf_reserve(w, (size_t)rl * (pc->len + 1))) return nomem();
        if (pfx) { memcpy(w->p + w->n, rep, (size_t)rl); w->n += (size_t)rl; }
        for (size_t i = 0; i < pc->len; i++) {
            char ch = w->p[pc->off + i];
            if (ch == ' ') { memcpy(w->p + w->n, rep, (size_t)rl); w->n += (size_t)rl; }
            else w->p[w->n++] = ch;
        }
        size_t len = w->n - keep;
        if (!p->split) { if (pv_push(out, keep, len, pc->first)) return nomem(); break; }
        st = char_spans(w->p + keep, len, pred_eq, p->repl_cp, sv);
        if (!st) st = apply_behavior(sv, B_MERGED_NEXT, 0, keep, pc->first, out);
        break;
    }
    }
    if (!st) st = flush(c, k, out, keep);
    return st;
}

static st_status run_from(tctx *c, int k, const piece *pc) {
    if (k == c->t->n_steps) return bpe_word(c, c->work.p + pc->off, pc->len);
    return step(c, k, pc);
}

/* ------------------------------------------------------------------ BPE */

static inline int hless(const struct hent *a, const struct hent *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}
static int heap_push(tctx *c, int32_t rank, int32_t pos, int32_t id) {
    if (c->heap_n == c->heap_cap) {
        size_t cap = c->heap_cap ? c->heap_cap * 2 : 256;
        struct hent *q = st_realloc(c->heap, cap * sizeof *q);
        if (!q) return -1;
        c->heap = q; c->heap_cap = cap;
    }
    struct hent x = {rank, pos, id};
    size_t i = c->heap_n++;
    while (i) {
        size_t p = (i - 1) / 2;
        if (!hless(&x, &c->heap[p])) break;
        c->heap[i] = c->heap[p]; i = p;
    }
    c->heap[i] = x;
    return 0;
}
static struct hent heap_pop(tctx *c) {
    struct hent top = c->heap[0], x = c->heap[--c->heap_n];
    size_t i = 0, n = c->heap_n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const struct hent *best = &x;
        if (l < n && hless(&c->heap[l], best)) { m = l; best = &c->heap[l]; }
        if (r < n && hless(&c->heap[r], best)) m = r;
        if (m == i) break;
        c->heap[i] = c->heap[m]; i = m;
    }
    if (n) c->heap[i] = x;
    return top;
}

static int32_t char_lookup(const st_tokenizer *t, const char *s, int l, uint32_t cp) {
    if (cp < 512) return t->char_id[cp];
    return smap_get(&t->vocab, t->pool.p, s, (size_t)l);
}

/* Encode one pre-token (already in the model's alphabet) and append ids. */
static st_status bpe_word(tctx *c, const char *s, size_t n) {
    const st_tokenizer *t = c->t;
    if (!n) return ST_OK;
    if (t->ignore_merges) {
        int32_t id = smap_get(&t->vocab, t->pool.p, s, n);
        if (id >= 0) return st_ivec_push(c->out, id) ? nomem() : ST_OK;
    }
    if (c->sym_cap < n) {
        struct bsym *q = st_realloc(c->sym, n * sizeof *q);
        if (!q) return nomem();
        c->sym = q; c->sym_cap = n;
    }
    struct bsym *sy = c->sym;
    int32_t ns = 0;
    int last_unk = 0;
    for (size_t i = 0; i < n;) {
        int l;
        uint32_t cp = u8dec((const unsigned char *)s + i, &l);
        int32_t id = char_lookup(t, s + i, l, cp);
        if (id >= 0) {
            sy[ns] = (struct bsym){id, ns - 1, ns + 1, l}; ns++;
            last_unk = 0;
        } else {
            int ok = t->byte_fallback;
            for (int k = 0; k < l && ok; k++) ok = t->byte_fb[(unsigned char)s[i + k]] >= 0;
            if (ok) {
                for (int k = 0; k < l; k++) {
                    sy[ns] = (struct bsym){t->byte_fb[(unsigned char)s[i + k]], ns - 1, ns + 1, 1}; ns++;
                }
                last_unk = 0;
            } else if (t->unk_id >= 0) {
                if (last_unk && t->fuse_unk) sy[ns - 1].len += l;
                else { sy[ns] = (struct bsym){t->unk_id, ns - 1, ns + 1, l}; ns++; }
                last_unk = 1;
            } /* no unk token: HF drops the character */
        }
        i += (size_t)l;
    }
    if (!ns) return ST_OK;
    sy[ns - 1].next = -1;
    c->heap_n = 0;
    for (int32_t i = 0; i + 1 < ns; i++) {
        const mment *m = mmap_get(&t->merges, sy[i].id, sy[i + 1].id);
        if (m && heap_push(c, m->rank, i, m->id)) return nomem();
    }
    while (c->heap_n) {
        struct hent h = heap_pop(c);
        struct bsym *a = &sy[h.pos];
        if (!a->len || a->next < 0) continue;
        int32_t bi = a->next;
        const mment *m = mmap_get(&t->merges, a->id, sy[bi].id);
        if (!m || m->id != h.id) continue; /* stale entry */
        a->id = h.id;
        a->len += sy[bi].len;
        sy[bi].len = 0;
        a->next = sy[bi].next;
        if (a->next >= 0) sy[a->next].prev = h.pos;
        if (a->prev >= 0) {
            const mment *q = mmap_get(&t->merges, sy[a->prev].id, a->id);
            if (q && heap_push(c, q->rank, a->prev, q->id)) return nomem();
        }
        if (a->next >= 0) {
            const mment *q = mmap_get(&t->merges, a->id, sy[a->next].id);
            if (q && heap_push(c, q->rank, h.pos, q->id)) return nomem();
        }
    }
    for (int32_t i = 0; i >= 0; i = sy[i].next)
        if (st_ivec_push(c->out, sy[i].id)) return nomem();
    return ST_OK;
}

/* ------------------------------------------------------------------ added tokens */

static int word_char(uint32_t cp) { return is_alnum(cp) || cp == '_'; }

/* Leftmost-longest added-token match in s[from..n) from set k (0 raw, 1
 * normalized). Returns the added index or -1; *ms and *me get the match span
 * after lstrip/rstrip widening. */
static int added_find(const st_tokenizer *t, int k, int parse_special, const char *s, size_t n,
                      size_t from, size_t *ms, size_t *me) {
    if (t->astart[k][256] == 0) return -1;
    for (size_t i = from; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        for (int j = t->astart[k][b]; j < t->astart[k][b + 1]; j++) {
            const added_tok *a = &t->added[t->amatch[k][j]];
            if (a->special && !parse_special) continue;
            if (a->len > n - i || memcmp(s + i, t->pool.p + a->off, a->len) != 0) continue;
            size_t st = i, en = i + a->len;
            if (a->single_word) {
                int l;
                if (st > 0) {
                    size_t q = st - 1;
                    while (q > 0 && ((unsigned char)s[q] & 0xC0) == 0x80) q--;
                    if (word_char(u8dec((const unsigned char *)s + q, &l))) continue;
                }
                if (en < n && word_char(u8dec((const unsigned char *)s + en, &l))) continue;
            }
            if (a->lstrip)
                while (st > from) {
                    size_t q = st - 1;
                    while (q > from && ((unsigned char)s[q] & 0xC0) == 0x80) q--;
                    int l;
                    if (!is_ws(u8dec((const unsigned char *)s + q, &l))) break;
                    st = q;
                }
            if (a->rstrip)
                while (en < n) {
                    int l;
                    if (!is_ws(u8dec((const unsigned char *)s + en, &l))) break;
                    en += (size_t)l;
                }
            *ms = st; *me = en;
            return t->amatch[k][j];
        }
    }
    return -1;
}

/* Normalized text -> added tokens (normalized=true) -> pre-tokenize -> BPE. */
static st_status encode_normalized(tctx *c, const char *s, size_t n, int first, int parse_special) {
    const st_tokenizer *t = c->t;
    size_t pos = 0;
    while (pos < n) {
        size_t ms = n, me = n;
        int a = added_find(t, 1, parse_special, s, n, pos, &ms, &me);
        size_t end = a >= 0 ? ms : n;
        if (end > pos) {
            st_buf *w = &c->work;
            w->n = 0;
            if (st_buf_put(w, s + pos, end - pos)) return nomem();
            piece pc = {0, end - pos, first && pos == 0};
            st_status st = run_from(c, 0, &pc);
            if (st) return st;
        }
        if (a < 0) break;
        if (st_ivec_push(c->out, t->added[a].id)) return nomem();
        pos = me;
    }
    return ST_OK;
}

st_status st_tokenize(const st_tokenizer *t, const char *text, size_t len, int parse_special,
                      int32_t **ids, int *n_ids) {
    if (!t || (!text && len) || !ids || !n_ids) return st_err(ST_ERR_ARG, "st_tokenize: NULL argument");
    *ids = NULL; *n_ids = 0;
    size_t bad = u8_invalid_at(text, len);
    if (bad < len) return st_err(ST_ERR_ARG, "tokenize: text is not valid UTF-8 at byte %zu", bad);
    st_ivec out = {0};
    tctx c;
    st_status st = ctx_init(&c, t, &out);
    size_t pos = 0;
    while (!st && pos < len) {
        size_t ms = len, me = len;
        int a = added_find(t, 0, parse_special, text, len, pos, &ms, &me);
        size_t end = a >= 0 ? ms : len;
        if (end > pos) {
            if (t->normalizer) {
                st = norm_apply(&c, t->normalizer, text + pos, end - pos, &c.na);
                if (!st) st = encode_normalized(&c, c.na.p ? c.na.p : "", c.na.n, pos == 0, parse_special);
            } else {
                st = encode_normalized(&c, text + pos, end - pos, pos == 0, parse_special);
            }
        }
        if (st || a < 0) break;
        if (st_ivec_push(&out, t->added[a].id)) st = nomem();
        pos = me;
    }
    ctx_free(&c);
    if (st) { free(out.p); return st; }
    if (out.n > (size_t)INT32_MAX) { free(out.p); return st_err(ST_ERR_RANGE, "st_tokenize: too many tokens"); }
    *ids = out.p ? out.p : st_malloc(sizeof(int32_t));
    if (!*ids) return nomem();
    *n_ids = (int)out.n;
    return ST_OK;
}

/* ------------------------------------------------------------------ decoding */

/* Token list for the decoder chain: ranges of one buffer. */
typedef struct { st_buf buf; pvec v; } tlist;

static int tl_add(tlist *l, const char *s, size_t n) {
    size_t o = l->buf.n;
    return st_buf_put(&l->buf, s, n) || pv_push(&l->v, o, n, 0);
}
static void tl_free(tlist *l) { free(l->buf.p); free(l->v.p); }

static int is_byte_token(const char *s, size_t n, unsigned *b) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return 0;
    unsigned v = 0;
    for (int i = 3; i < 5; i++) {
        char ch = s[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 :
                ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
        if (d < 0) return 0;
        v = v * 16 + (unsigned)d;
    }
    *b = v;
    return 1;
}

/* One decoder step: in -> out. stream: decoding a single token for streaming
 * output (raw bytes from ByteFallback; no Strip, no first-token space removal). */
static st_status dec_apply(tctx *c, const st_tokenizer *t, const dec *d, const tlist *in,
                           const uint8_t *is_added, tlist *out, int stream) {
    const char *B = in->buf.p;
    switch (d->type) {
    case D_SEQ: {
        tlist a = {0}, b = {0};
        st_status st = ST_OK;
        for (size_t i = 0; i < in->v.n && !st; i++)
            if (tl_add(&a, B + in->v.p[i].off, in->v.p[i].len)) st = nomem();
        /* added-token flags only survive while tokens stay one-to-one */
        const uint8_t *flags = is_added;
        for (int k = 0; k < d->n_kids && !st; k++) {
            b.buf.n = 0; b.v.n = 0;
            size_t before = a.v.n;
            st = dec_apply(c, t, &d->kids[k], &a, flags, &b, stream);
            if (b.v.n != before) flags = NULL;
            tlist tmp = a; a = b; b = tmp;
        }
        for (size_t i = 0; i < a.v.n && !st; i++)
            if (tl_add(out, a.buf.p + a.v.p[i].off, a.v.p[i].len)) st = nomem();
        tl_free(&a); tl_free(&b);
        return st;
    }
    case D_BYTELEVEL: { /* everything joined into one token, like HF */
        st_buf o = {0};
        for (size_t i = 0; i < in->v.n; i++) {
            const char *s = B + in->v.p[i].off;
            size_t n = in->v.p[i].len, start = o.n;
            int ok = !(is_added && is_added[i]); /* added tokens pass verbatim */
            for (size_t j = 0; j < n && ok;) {
                int l; uint32_t cp = u8dec((const unsigned char *)s + j, &l);
                if (cp >= ST_BYTE_CP_END || g_cp2byte[cp] < 0) { ok = 0; break; }
                if (st_buf_putc(&o, (char)g_cp2byte[cp])) { free(o.p); return nomem(); }
                j += (size_t)l;
            }
            if (!ok) { o.n = start; if (st_buf_put(&o, s, n)) { free(o.p); return nomem(); } }
        }
        int bad = tl_add(out, o.p ? o.p : "", o.n);
        free(o.p);
        return bad ? nomem() : ST_OK;
    }
    case D_REPLACE:
        for (size_t i = 0; i < in->v.n; i++) {
            st_buf o = {0};
            st_status st = replace_all(c, d->re, d->a, d->a_len, d->b, d->b_len, B + in->v.p[i].off,
                                       in->v.p[i].len, &o);
            if (!st && tl_add(out, o.p ? o.p : "", o.n)) st = nomem();
            free(o.p);
            if (st) return st;
        }
        return ST_OK;
    case D_BYTEFALLBACK: {
        st_buf bytes = {0};
        size_t nb = 0;
        st_status st = ST_OK;
        for (size_t i = 0; i <= in->v.n && !st; i++) {
            unsigned v;
            if (i < in->v.n && is_byte_token(B + in->v.p[i].off, in->v.p[i].len, &v)) {
                char ch = (char)v;
                if (st_buf_putc(&bytes, ch)) st = nomem();
                nb++;
                continue;
            }
            if (nb) {
                if (stream || u8_invalid_at(bytes.p, bytes.n) == bytes.n) {
                    if (tl_add(out, bytes.p, bytes.n)) st = nomem();
                } else {
                    for (size_t k = 0; k < nb && !st; k++)
                        if (tl_add(out, "\xEF\xBF\xBD", 3)) st = nomem();
                }
                bytes.n = 0; nb = 0;
            }
            if (i < in->v.n && !st && tl_add(out, B + in->v.p[i].off, in->v.p[i].len)) st = nomem();
        }
        free(bytes.p);
        return st;
    }
    case D_FUSE: {
        size_t o = out->buf.n;
        for (size_t i = 0; i < in->v.n; i++)
            if (st_buf_put(&out->buf, B + in->v.p[i].off, in->v.p[i].len)) return nomem();
        return pv_push(&out->v, o, out->buf.n - o, 0) ? nomem() : ST_OK;
    }
    case D_STRIP:
        for (size_t i = 0; i < in->v.n; i++) {
            const char *s = B + in->v.p[i].off;
            size_t n = in->v.p[i].len, b = 0, e = n;
            if (!stream) {
                int l;
                for (int k = 0; k < d->start && b < e; k++) {
                    if (u8dec((const unsigned char *)s + b, &l) != d->cp) break;
                    b += (size_t)l;
                }
                for (int k = 0; k < d->stop && e > b; k++) {
                    size_t q = e - 1;
                    while (q > b && ((unsigned char)s[q] & 0xC0) == 0x80) q--;
                    if (u8dec((const unsigned char *)s + q, &l) != d->cp) break;
                    e = q;
                }
            }
            if (tl_add(out, s + b, e - b)) return nomem();
        }
        return ST_OK;
    case D_METASPACE:
        for (size_t i = 0; i < in->v.n; i++) {
            const char *s = B + in->v.p[i].off;
            size_t n = in->v.p[i].len, o = out->buf.n;
            for (size_t j = 0; j < n;) {
                int l; uint32_t cp = u8dec((const unsigned char *)s + j, &l);
                if (cp == d->cp) {
                    if (!(i == 0 && !stream && d->prepend_scheme != PS_NEVER) && st_buf_putc(&out->buf, ' '))
                        return nomem();
                } else if (st_buf_put(&out->buf, s + j, (size_t)l)) return nomem();
                j += (size_t)l;
            }
            if (pv_push(&out->v, o, out->buf.n - o, 0)) return nomem();
        }
        return ST_OK;
    }
    (void)t;
    return ST_OK;
}

static st_status decode_to(const st_tokenizer *t, const int32_t *ids, int n, int skip_special,
                           int stream, st_buf *o) {
    tlist in = {0};
    uint8_t *added = st_malloc((size_t)(n > 0 ? n : 1));
    if (!added) return nomem();
    st_status st = ST_OK;
    int k = 0;
    for (int i = 0; i < n && !st; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || t->tok_len[id] < 0) {
            st = st_err(ST_ERR_RANGE, "detokenize: token id %d out of range (vocab %d)", id, t->n_ids);
            break;
        }
        if (skip_special && (t->tok_flags[id] & TF_SPECIAL)) continue;
        added[k++] = (t->tok_flags[id] & TF_ADDED) != 0;
        if (tl_add(&in, t->pool.p + t->tok_off[id], (size_t)t->tok_len[id])) st = nomem();
    }
    if (!st) {
        if (!t->decoder) { /* HF joins with spaces when there is no decoder */
            for (size_t i = 0; i < in.v.n && !st; i++)
                if ((i && st_buf_putc(o, ' ')) || (in.v.p[i].len && st_buf_put(o, in.buf.p + in.v.p[i].off, in.v.p[i].len)))
                    st = nomem();
        } else {
            tctx c;
            tlist out = {0};
            st = ctx_init(&c, t, NULL);
            if (!st) st = dec_apply(&c, t, t->decoder, &in, added, &out, stream);
            for (size_t i = 0; i < out.v.n && !st; i++)
                /* empty pieces (no ids, empty tokens) may come with no buffer at all */
                if (out.v.p[i].len && st_buf_put(o, out.buf.p + out.v.p[i].off, out.v.p[i].len)) st = nomem();
            ctx_free(&c);
            tl_free(&out);
        }
    }
    free(added);
    tl_free(&in);
    return st;
}

st_status st_tok_decode(const st_tokenizer *t, const int32_t *ids, int n, int skip_special, char **out) {
    if (!t || (!ids && n > 0) || n < 0 || !out) return st_err(ST_ERR_ARG, "st_detokenize: bad argument");
    *out = NULL;
    st_buf raw = {0}, o = {0};
    st_status st = decode_to(t, ids, n, skip_special, 0, &raw);
    if (!st && (u8_lossy(&o, raw.p ? raw.p : "", raw.n) || st_buf_putc(&o, 0))) st = nomem();
    free(raw.p);
    if (st) { free(o.p); return st; }
    *out = o.p;
    return ST_OK;
}

st_status st_detokenize(const st_tokenizer *t, const int32_t *ids, int n, char **out) {
    return st_tok_decode(t, ids, n, 0, out);
}

int st_token_bytes(const st_tokenizer *t, int32_t id, char *buf, int cap) {
    if (!t || id < 0 || id >= t->n_ids || t->tok_len[id] < 0) return -1;
    st_buf o = {0};
    st_status st = decode_to(t, &id, 1, 0, 1, &o);
    if (st) { free(o.p); return st == ST_ERR_NOMEM ? -2 : -1; }
    if (buf && cap > 0) memcpy(buf, o.p, o.n < (size_t)cap ? o.n : (size_t)cap);
    int n = (int)o.n;
    free(o.p);
    return n;
}

/* ------------------------------------------------------------------ queries */

int st_tokenizer_vocab_size(const st_tokenizer *t) { return t ? t->n_ids : 0; }

int32_t st_token_id(const st_tokenizer *t, const char *str) {
    if (!t || !str) return -1;
    size_t n = strlen(str);
    int32_t id = smap_get(&t->added_map, t->pool.p, str, n);
    return id >= 0 ? id : smap_get(&t->vocab, t->pool.p, str, n);
}

int st_token_is_special(const st_tokenizer *t, int32_t id) {
    return t && id >= 0 && id < t->n_ids && (t->tok_flags[id] & TF_SPECIAL);
}

st_status st_tok_affixes(const st_tokenizer *t, const int32_t **prefix, int *n_prefix,
                         const int32_t **suffix, int *n_suffix) {
    if (!t) return st_err(ST_ERR_ARG, "st_tok_affixes: NULL tokenizer");
    if (t->pp_unsupported)
        return st_err(ST_ERR_UNSUPPORTED, "tokenizer: post_processor type %s is not supported",
                      t->pp_unsupported);
    *prefix = t->prefix; *n_prefix = t->n_prefix;
    *suffix = t->suffix; *n_suffix = t->n_suffix;
    return ST_OK;
}

/* ------------------------------------------------------------------ loading */

static void norm_free(norm *z) {
    if (!z) return;
    for (int i = 0; i < z->n_kids; i++) norm_free(&z->kids[i]);
    free(z->kids); free(z->a); free(z->b);
    pcre2_code_free(z->re);
}
static void pretok_free(pretok *p) {
    if (!p) return;
    for (int i = 0; i < p->n_kids; i++) pretok_free(&p->kids[i]);
    free(p->kids);
    pcre2_code_free(p->re);
}
static void dec_free(dec *d) {
    if (!d) return;
    for (int i = 0; i < d->n_kids; i++) dec_free(&d->kids[i]);
    free(d->kids); free(d->a); free(d->b);
    pcre2_code_free(d->re);
}

void st_tokenizer_free(st_tokenizer *t) {
    if (!t) return;
    free(t->pool.p);
    free(t->tok_off); free(t->tok_len); free(t->tok_flags);
    free(t->vocab.e); free(t->added_map.e); free(t->merges.e);
    free(t->added);
    free(t->amatch[0]); free(t->amatch[1]);
    if (t->normalizer) { norm_free(t->normalizer); free(t->normalizer); }
    if (t->pretok) { pretok_free(t->pretok); free(t->pretok); }
    free(t->steps);
    if (t->decoder) { dec_free(t->decoder); free(t->decoder); }
    free(t->prefix); free(t->suffix); free(t->pp_unsupported);
    free(t);
}

/* Loader state: file path for messages. */
typedef struct { const char *path; } ld;

static const char *jtype(const json_t *o) {
    const char *s = json_string_value(json_object_get(o, "type"));
    return s ? s : "";
}
static int jbool(const json_t *o, const char *k, int dflt) {
    json_t *v = json_object_get(o, k);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}
static char *dup_n(const char *s, size_t n) {
    char *p = st_malloc(n + 1);
    if (p) { memcpy(p, s, n); p[n] = 0; }
    return p;
}
/* A single code point given as a JSON string (Metaspace replacement, Strip content). */
static st_status jchar(const ld *L, const json_t *o, const char *k, const char *what, uint32_t dflt,
                       uint32_t *out) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) { *out = dflt; return ST_OK; }
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    int l = 0;
    uint32_t cp = (s && n && u8_invalid_at(s, n) == n) ? u8dec((const unsigned char *)s, &l) : 0;
    if (!l || (size_t)l != n)
        return st_err(ST_ERR_FORMAT, "%s: %s.%s must be a single character", L->path, what, k);
    *out = cp;
    return ST_OK;
}

/* Pattern {"String": s} or {"Regex": r}. */
static st_status jpattern(const ld *L, const json_t *o, const char *what, char **lit, size_t *lit_len,
                          pcre2_code **re, int force_regex) {
    json_t *p = json_object_get(o, "pattern");
    json_t *s = json_object_get(p, "String"), *r = json_object_get(p, "Regex");
    char where[96];
    snprintf(where, sizeof where, "%s: %s.pattern", L->path, what);
    if (json_is_string(s)) {
        if (force_regex) return re_compile(json_string_value(s), json_string_length(s), 1, where, re);
        *lit = dup_n(json_string_value(s), json_string_length(s));
        *lit_len = json_string_length(s);
        return *lit ? ST_OK : nomem();
    }
    if (json_is_string(r)) return re_compile(json_string_value(r), json_string_length(r), 0, where, re);
    return st_err(ST_ERR_FORMAT, "%s: %s needs a pattern {\"String\": ...} or {\"Regex\": ...}", L->path, what);
}

static st_status jstr_copy(const ld *L, const json_t *o, const char *k, const char *what, char **out,
                           size_t *len) {
    json_t *v = json_object_get(o, k);
    if (!json_is_string(v)) return st_err(ST_ERR_FORMAT, "%s: %s.%s must be a string", L->path, what, k);
    *len = json_string_length(v);
    *out = dup_n(json_string_value(v), *len);
    return *out ? ST_OK : nomem();
}

static st_status parse_norm(const ld *L, const json_t *j, norm *z) {
    memset(z, 0, sizeof *z);
    if (!json_is_object(j)) return st_err(ST_ERR_FORMAT, "%s: normalizer must be an object", L->path);
    const char *ty = jtype(j);
    if (!strcmp(ty, "Sequence")) {
        json_t *a = json_object_get(j, "normalizers");
        if (!json_is_array(a)) return st_err(ST_ERR_FORMAT, "%s: Sequence normalizer without \"normalizers\"", L->path);
        z->type = N_SEQ;
        z->kids = st_calloc(json_array_size(a) + 1, sizeof *z->kids);
        if (!z->kids) return nomem();
        for (size_t i = 0; i < json_array_size(a); i++) {
            st_status st = parse_norm(L, json_array_get(a, i), &z->kids[z->n_kids++]);
            if (st) return st;
        }
        return ST_OK;
    }
    if (!strcmp(ty, "NFC")) { z->type = N_NFC; return ST_OK; }
    if (!strcmp(ty, "NFD")) { z->type = N_NFD; return ST_OK; }
    if (!strcmp(ty, "NFKC")) { z->type = N_NFKC; return ST_OK; }
    if (!strcmp(ty, "NFKD")) { z->type = N_NFKD; return ST_OK; }
    if (!strcmp(ty, "Lowercase")) { z->type = N_LOWER; return ST_OK; }
    if (!strcmp(ty, "StripAccents")) { z->type = N_STRIP_ACCENTS; return ST_OK; }
    if (!strcmp(ty, "Strip")) {
        z->type = N_STRIP;
        z->left = jbool(j, "strip_left", 1); z->right = jbool(j, "strip_right", 1);
        return ST_OK;
    }
    if (!strcmp(ty, "Replace")) {
        z->type = N_REPLACE;
        st_status st = jpattern(L, j, "Replace normalizer", &z->a, &z->a_len, &z->re, 0);
        return st ? st : jstr_copy(L, j, "content", "Replace normalizer", &z->b, &z->b_len);
    }
    if (!strcmp(ty, "Prepend")) {
        z->type = N_PREPEND;
        return jstr_copy(L, j, "prepend", "Prepend normalizer", &z->a, &z->a_len);
    }
    return st_err(ST_ERR_UNSUPPORTED, "%s: normalizer type \"%s\" is not supported", L->path, ty);
}

static const char GPT2_RE[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static st_status parse_pretok(const ld *L, const json_t *j, pretok *p) {
    memset(p, 0, sizeof *p);
    if (!json_is_object(j)) return st_err(ST_ERR_FORMAT, "%s: pre_tokenizer must be an object", L->path);
    const char *ty = jtype(j);
    char where[96];
    if (!strcmp(ty, "Sequence")) {
        json_t *a = json_object_get(j, "pretokenizers");
        if (!json_is_array(a)) return st_err(ST_ERR_FORMAT, "%s: Sequence pre_tokenizer without \"pretokenizers\"", L->path);
        p->type = P_SEQ;
        p->kids = st_calloc(json_array_size(a) + 1, sizeof *p->kids);
        if (!p->kids) return nomem();
        for (size_t i = 0; i < json_array_size(a); i++) {
            st_status st = parse_pretok(L, json_array_get(a, i), &p->kids[p->n_kids++]);
            if (st) return st;
        }
        return ST_OK;
    }
    if (!strcmp(ty, "Split")) {
        p->type = P_SPLIT;
        const char *b = json_string_value(json_object_get(j, "behavior"));
        if (!b) return st_err(ST_ERR_FORMAT, "%s: Split pre_tokenizer without \"behavior\"", L->path);
        if (!strcmp(b, "Removed")) p->behavior = B_REMOVED;
        else if (!strcmp(b, "Isolated")) p->behavior = B_ISOLATED;
        else if (!strcmp(b, "MergedWithPrevious")) p->behavior = B_MERGED_PREV;
        else if (!strcmp(b, "MergedWithNext")) p->behavior = B_MERGED_NEXT;
        else if (!strcmp(b, "Contiguous")) p->behavior = B_CONTIGUOUS;
        else return st_err(ST_ERR_UNSUPPORTED, "%s: Split behavior \"%s\" is not supported", L->path, b);
        p->invert = jbool(j, "invert", 0);
        return jpattern(L, j, "Split pre_tokenizer", NULL, NULL, &p->re, 1);
    }
    if (!strcmp(ty, "ByteLevel")) {
        p->type = P_BYTELEVEL;
        p->add_prefix_space = jbool(j, "add_prefix_space", 1);
        if (jbool(j, "use_regex", 1)) {
            snprintf(where, sizeof where, "%s: ByteLevel regex", L->path);
            return re_compile(GPT2_RE, sizeof GPT2_RE - 1, 0, where, &p->re);
        }
        return ST_OK;
    }
    if (!strcmp(ty, "Digits")) {
        p->type = P_DIGITS;
        p->individual_digits = jbool(j, "individual_digits", 0);
        return ST_OK;
    }
    if (!strcmp(ty, "Whitespace")) {
        static const char WS_RE[] = "\\w+|[^\\w\\s]+";
        p->type = P_WHITESPACE; p->behavior = B_REMOVED; p->invert = 1;
        snprintf(where, sizeof where, "%s: Whitespace regex", L->path);
        return re_compile(WS_RE, sizeof WS_RE - 1, 0, where, &p->re);
    }
    if (!strcmp(ty, "WhitespaceSplit")) { p->type = P_WSPLIT; return ST_OK; }
    if (!strcmp(ty, "Punctuation")) {
        const char *b = json_string_value(json_object_get(j, "behavior"));
        if (b && strcmp(b, "Isolated"))
            return st_err(ST_ERR_UNSUPPORTED, "%s: Punctuation behavior \"%s\" is not supported", L->path, b);
        p->type = P_PUNCT;
        return ST_OK;
    }
    if (!strcmp(ty, "BertPreTokenizer")) { p->type = P_BERT; return ST_OK; }
    if (!strcmp(ty, "Metaspace")) {
        p->type = P_METASPACE;
        st_status st = jchar(L, j, "replacement", "Metaspace", 0x2581, &p->repl_cp);
        if (st) return st;
        const char *ps = json_string_value(json_object_get(j, "prepend_scheme"));
        if (ps) {
            if (!strcmp(ps, "always")) p->prepend_scheme = PS_ALWAYS;
            else if (!strcmp(ps, "first")) p->prepend_scheme = PS_FIRST;
            else if (!strcmp(ps, "never")) p->prepend_scheme = PS_NEVER;
            else return st_err(ST_ERR_FORMAT, "%s: Metaspace prepend_scheme \"%s\" is unknown", L->path, ps);
        } else {
            p->prepend_scheme = jbool(j, "add_prefix_space", 1) ? PS_ALWAYS : PS_NEVER;
        }
        p->split = jbool(j, "split", 1);
        return ST_OK;
    }
    return st_err(ST_ERR_UNSUPPORTED, "%s: pre_tokenizer type \"%s\" is not supported", L->path, ty);
}

static int count_steps(const pretok *p) {
    if (p->type != P_SEQ) return 1;
    int n = 0;
    for (int i = 0; i < p->n_kids; i++) n += count_steps(&p->kids[i]);
    return n;
}
static void flatten_steps(const pretok *p, const pretok **out, int *n) {
    if (p->type != P_SEQ) { out[(*n)++] = p; return; }
    for (int i = 0; i < p->n_kids; i++) flatten_steps(&p->kids[i], out, n);
}

static st_status parse_dec(const ld *L, const json_t *j, dec *d) {
    memset(d, 0, sizeof *d);
    if (!json_is_object(j)) return st_err(ST_ERR_FORMAT, "%s: decoder must be an object", L->path);
    const char *ty = jtype(j);
    if (!strcmp(ty, "Sequence")) {
        json_t *a = json_object_get(j, "decoders");
        if (!json_is_array(a)) return st_err(ST_ERR_FORMAT, "%s: Sequence decoder without \"decoders\"", L->path);
        d->type = D_SEQ;
        d->kids = st_calloc(json_array_size(a) + 1, sizeof *d->kids);
        if (!d->kids) return nomem();
        for (size_t i = 0; i < json_array_size(a); i++) {
            st_status st = parse_dec(L, json_array_get(a, i), &d->kids[d->n_kids++]);
            if (st) return st;
        }
        return ST_OK;
    }
    if (!strcmp(ty, "ByteLevel")) { d->type = D_BYTELEVEL; return ST_OK; }
    if (!strcmp(ty, "ByteFallback")) { d->type = D_BYTEFALLBACK; return ST_OK; }
    if (!strcmp(ty, "Fuse")) { d->type = D_FUSE; return ST_OK; }
    if (!strcmp(ty, "Replace")) {
        d->type = D_REPLACE;
        st_status st = jpattern(L, j, "Replace decoder", &d->a, &d->a_len, &d->re, 0);
        return st ? st : jstr_copy(L, j, "content", "Replace decoder", &d->b, &d->b_len);
    }
    if (!strcmp(ty, "Strip")) {
        d->type = D_STRIP;
        d->start = (int)json_integer_value(json_object_get(j, "start"));
        d->stop = (int)json_integer_value(json_object_get(j, "stop"));
        if (d->start < 0 || d->stop < 0) return st_err(ST_ERR_FORMAT, "%s: Strip decoder with negative counts", L->path);
        return jchar(L, j, "content", "Strip decoder", ' ', &d->cp);
    }
    if (!strcmp(ty, "Metaspace")) {
        d->type = D_METASPACE;
        st_status st = jchar(L, j, "replacement", "Metaspace decoder", 0x2581, &d->cp);
        if (st) return st;
        const char *ps = json_string_value(json_object_get(j, "prepend_scheme"));
        if (ps) d->prepend_scheme = !strcmp(ps, "never") ? PS_NEVER : !strcmp(ps, "first") ? PS_FIRST : PS_ALWAYS;
        else d->prepend_scheme = jbool(j, "add_prefix_space", 1) ? PS_ALWAYS : PS_NEVER;
        return ST_OK;
    }
    return st_err(ST_ERR_UNSUPPORTED, "%s: decoder type \"%s\" is not supported", L->path, ty);
}

/* Affixes from the post_processor (only used for add_special_tokens). */
static st_status parse_post(const ld *L, st_tokenizer *t, const json_t *j, st_ivec *pre, st_ivec *suf) {
    if (!j || json_is_null(j)) return ST_OK;
    const char *ty = jtype(j);
    if (!strcmp(ty, "ByteLevel")) return ST_OK;
    if (!strcmp(ty, "Sequence")) {
        json_t *a = json_object_get(j, "processors");
        for (size_t i = 0; i < json_array_size(a); i++) {
            st_status st = parse_post(L, t, json_array_get(a, i), pre, suf);
            if (st) return st;
        }
        return ST_OK;
    }
    if (!strcmp(ty, "TemplateProcessing")) {
        json_t *single = json_object_get(j, "single"), *sp = json_object_get(j, "special_tokens");
        int seen_seq = 0;
        for (size_t i = 0; i < json_array_size(single); i++) {
            json_t *e = json_array_get(single, i);
            if (json_object_get(e, "Sequence")) { seen_seq = 1; continue; }
            const char *name = json_string_value(json_object_get(json_object_get(e, "SpecialToken"), "id"));
            json_t *ids = json_object_get(json_object_get(sp, name ? name : ""), "ids");
            if (!name || !json_is_array(ids))
                return st_err(ST_ERR_FORMAT, "%s: TemplateProcessing names special token \"%s\" without ids",
                              L->path, name ? name : "?");
            for (size_t k = 0; k < json_array_size(ids); k++)
                if (st_ivec_push(seen_seq ? suf : pre, (int32_t)json_integer_value(json_array_get(ids, k))))
                    return nomem();
        }
        return ST_OK;
    }
    if (!strcmp(ty, "BertProcessing") || !strcmp(ty, "RobertaProcessing")) {
        json_t *cls = json_object_get(j, "cls"), *sep = json_object_get(j, "sep");
        if (st_ivec_push(pre, (int32_t)json_integer_value(json_array_get(cls, 1))) ||
            st_ivec_push(suf, (int32_t)json_integer_value(json_array_get(sep, 1))))
            return nomem();
        return ST_OK;
    }
    free(t->pp_unsupported);
    t->pp_unsupported = dup_n(ty, strlen(ty));
    return t->pp_unsupported ? ST_OK : nomem();
}

static int pool_add(st_tokenizer *t, const char *s, size_t n, uint32_t *off) {
    if (t->pool.n + n >= UINT32_MAX) return -1;
    *off = (uint32_t)t->pool.n;
    return st_buf_put(&t->pool, s, n);
}

static st_status load_model(const ld *L, st_tokenizer *t, json_t *m, int max_added_id) {
    if (!json_is_object(m)) return st_err(ST_ERR_FORMAT, "%s: \"model\" must be an object", L->path);
    json_t *ty = json_object_get(m, "type");
    json_t *vocab = json_object_get(m, "vocab"), *merges = json_object_get(m, "merges");
    if (json_is_string(ty) && strcmp(json_string_value(ty), "BPE") != 0)
        return st_err(ST_ERR_UNSUPPORTED, "%s: model type \"%s\" is not supported (only BPE)",
                      L->path, json_string_value(ty));
    if (!ty && !merges) return st_err(ST_ERR_UNSUPPORTED, "%s: model has no type and no merges (only BPE is supported)", L->path);
    if (!json_is_object(vocab)) return st_err(ST_ERR_FORMAT, "%s: model.vocab must be an object", L->path);
    if (!json_is_array(merges)) return st_err(ST_ERR_FORMAT, "%s: model.merges must be an array", L->path);
    json_t *dr = json_object_get(m, "dropout");
    if (json_is_number(dr) && json_number_value(dr) > 0)
        return st_err(ST_ERR_UNSUPPORTED, "%s: BPE dropout is not supported", L->path);
    const char *cp = json_string_value(json_object_get(m, "continuing_subword_prefix"));
    const char *es = json_string_value(json_object_get(m, "end_of_word_suffix"));
    if ((cp && *cp) || (es && *es))
        return st_err(ST_ERR_UNSUPPORTED, "%s: BPE continuing_subword_prefix / end_of_word_suffix are not supported", L->path);
    t->byte_fallback = jbool(m, "byte_fallback", 0);
    t->fuse_unk = jbool(m, "fuse_unk", 0);
    t->ignore_merges = jbool(m, "ignore_merges", 0);

    /* ids: vocab first, so the id table can be sized */
    int max_id = max_added_id;
    const char *k; json_t *v;
    json_object_foreach(vocab, k, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= MAX_TOKEN_ID)
            return st_err(ST_ERR_FORMAT, "%s: model.vocab[\"%s\"] is not a valid id", L->path, k);
        if (json_integer_value(v) > max_id) max_id = (int)json_integer_value(v);
    }
    t->n_ids = max_id + 1;
    t->tok_off = st_calloc((size_t)t->n_ids, sizeof *t->tok_off);
    t->tok_len = st_malloc((size_t)t->n_ids * sizeof *t->tok_len);
    t->tok_flags = st_calloc((size_t)t->n_ids, 1);
    if (!t->tok_off || !t->tok_len || !t->tok_flags) return nomem();
    for (int i = 0; i < t->n_ids; i++) t->tok_len[i] = -1;
    if (smap_init(&t->vocab, json_object_size(vocab))) return nomem();
    /* Keys are copied into the pool first; the map is filled after, since the
     * pool may move while it grows. */
    json_object_foreach(vocab, k, v) {
        size_t n = strlen(k); /* jansson keys are NUL-terminated; tokens have no NUL */
        int32_t id = (int32_t)json_integer_value(v);
        uint32_t off;
        if (pool_add(t, k, n, &off)) return nomem();
        t->tok_off[id] = off; t->tok_len[id] = (int32_t)n;
    }
    for (int i = 0; i < t->n_ids; i++)
        if (t->tok_len[i] >= 0) smap_put(&t->vocab, t->pool.p, t->tok_off[i], (uint32_t)t->tok_len[i], i);

    const char *unk = json_string_value(json_object_get(m, "unk_token"));
    t->unk_id = unk ? smap_get(&t->vocab, t->pool.p, unk, strlen(unk)) : -1;
    for (int b = 0; b < 256; b++) {
        char nm[8];
        snprintf(nm, sizeof nm, "<0x%02X>", b);
        t->byte_fb[b] = smap_get(&t->vocab, t->pool.p, nm, 6);
    }
    for (uint32_t c = 0; c < 512; c++) {
        char e[4];
        int l = u8enc(c, e);
        t->char_id[c] = smap_get(&t->vocab, t->pool.p, e, (size_t)l);
    }

    /* merges: "a b" strings or [a, b] pairs; rank = position */
    size_t nm = json_array_size(merges), cap = 16;
    while (cap < nm + nm / 2 + 1) cap *= 2;
    t->merges.e = st_calloc(cap, sizeof *t->merges.e);
    if (!t->merges.e) return nomem();
    t->merges.mask = cap - 1;
    st_buf cat = {0};
    st_status st = ST_OK;
    for (size_t i = 0; i < nm && !st; i++) {
        json_t *e = json_array_get(merges, i);
        const char *a, *b; size_t al, bl;
        if (json_is_string(e)) {
            a = json_string_value(e);
            const char *sp = strchr(a, ' ');
            if (!sp) { st = st_err(ST_ERR_FORMAT, "%s: model.merges[%zu] \"%s\" is not \"a b\"", L->path, i, a); break; }
            al = (size_t)(sp - a); b = sp + 1; bl = strlen(b);
        } else if (json_is_array(e) && json_array_size(e) == 2 && json_is_string(json_array_get(e, 0)) &&
                   json_is_string(json_array_get(e, 1))) {
            a = json_string_value(json_array_get(e, 0)); al = json_string_length(json_array_get(e, 0));
            b = json_string_value(json_array_get(e, 1)); bl = json_string_length(json_array_get(e, 1));
        } else {
            st = st_err(ST_ERR_FORMAT, "%s: model.merges[%zu] is neither \"a b\" nor [a, b]", L->path, i);
            break;
        }
        int32_t ia = smap_get(&t->vocab, t->pool.p, a, al), ib = smap_get(&t->vocab, t->pool.p, b, bl);
        cat.n = 0;
        if (st_buf_put(&cat, a, al) || st_buf_put(&cat, b, bl)) { st = nomem(); break; }
        int32_t ic = smap_get(&t->vocab, t->pool.p, cat.p, cat.n);
        if (ia < 0 || ib < 0 || ic < 0) {
            st = st_err(ST_ERR_FORMAT, "%s: model.merges[%zu] (\"%.*s\" \"%.*s\") uses a token missing from the vocab",
                        L->path, i, (int)al, a, (int)bl, b);
            break;
        }
        mmap_put(&t->merges, ia, ib, (int32_t)i, ic);
    }
    free(cat.p);
    return st;
}

static int cmp_added(const void *x, const void *y, void *arg) {
    const st_tokenizer *t = arg;
    const added_tok *a = &t->added[*(const int32_t *)x], *b = &t->added[*(const int32_t *)y];
    unsigned char fa = (unsigned char)t->pool.p[a->off], fb = (unsigned char)t->pool.p[b->off];
    if (fa != fb) return fa < fb ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1; /* longest first */
    return *(const int32_t *)x - *(const int32_t *)y;
}

/* Build the first-byte index of the added tokens matched on raw (k=0) or
 * normalized (k=1) text. */
static st_status build_added_index(st_tokenizer *t, int k) {
    int n = 0;
    for (int i = 0; i < t->n_added; i++) if (t->added[i].normalized == k && t->added[i].len) n++;
    t->amatch[k] = st_malloc((size_t)(n ? n : 1) * sizeof(int32_t));
    if (!t->amatch[k]) return nomem();
    n = 0;
    for (int i = 0; i < t->n_added; i++) if (t->added[i].normalized == k && t->added[i].len) t->amatch[k][n++] = i;
    qsort_r(t->amatch[k], (size_t)n, sizeof(int32_t), cmp_added, t);
    int j = 0;
    for (int b = 0; b <= 256; b++) {
        while (j < n && (unsigned char)t->pool.p[t->added[t->amatch[k][j]].off] < b) j++;
        t->astart[k][b] = b == 256 ? n : j;
    }
    return ST_OK;
}

static st_status load_added(const ld *L, st_tokenizer *t, json_t *arr) {
    for (int i = 0; i < t->n_added; i++) {
        json_t *e = json_array_get(arr, (size_t)i);
        added_tok *a = &t->added[i];
        json_t *c = json_object_get(e, "content");
        int32_t id = (int32_t)json_integer_value(json_object_get(e, "id"));
        a->id = id;
        a->special = (uint8_t)jbool(e, "special", 0);
        a->lstrip = (uint8_t)jbool(e, "lstrip", 0);
        a->rstrip = (uint8_t)jbool(e, "rstrip", 0);
        a->single_word = (uint8_t)jbool(e, "single_word", 0);
        a->normalized = (uint8_t)(jbool(e, "normalized", !a->special) && t->normalizer);
        const char *s = json_string_value(c);
        size_t n = json_string_length(c);
        uint32_t off;
        if (pool_add(t, s, n, &off)) return nomem();
        /* decoding string and flags for the id */
        t->tok_off[id] = off; t->tok_len[id] = (int32_t)n;
        t->tok_flags[id] = (uint8_t)(TF_ADDED | (a->special ? TF_SPECIAL : 0));
        a->off = off; a->len = (uint32_t)n;
        if (a->normalized) { /* matched against normalized text: normalize the content too */
            tctx c2;
            st_status st = ctx_init(&c2, t, NULL);
            if (!st) st = norm_apply(&c2, t->normalizer, s, n, &c2.na);
            if (!st && pool_add(t, c2.na.p ? c2.na.p : "", c2.na.n, &a->off)) st = nomem();
            a->len = (uint32_t)c2.na.n;
            ctx_free(&c2);
            if (st) return st_err_prefix(st, "%s: added token \"%s\"", L->path, s);
        }
    }
    if (smap_init(&t->added_map, (size_t)t->n_added)) return nomem();
    for (int i = 0; i < t->n_added; i++)
        smap_put(&t->added_map, t->pool.p, t->tok_off[t->added[i].id], (uint32_t)t->tok_len[t->added[i].id],
                 t->added[i].id);
    st_status st = build_added_index(t, 0);
    return st ? st : build_added_index(t, 1);
}

st_status st_tokenizer_load(const char *path, st_tokenizer **out) {
    if (!path || !out) return st_err(ST_ERR_ARG, "st_tokenizer_load: NULL argument");
    *out = NULL;
    byte_map_init();
    char *txt = NULL;
    size_t txt_len = 0;
    st_status rs = st_read_file(path, &txt, &txt_len); /* one read: jansson's FILE path is getc-bound */
    if (rs) return rs;
    json_error_t je;
    json_t *root = json_loadb(txt, txt_len, JSON_ALLOW_NUL, &je);
    free(txt);
    if (!root) return st_err(ST_ERR_FORMAT, "%s: invalid JSON at line %d column %d: %s", path, je.line, je.column, je.text);
    ld L = {path};
    st_status st = ST_OK;
    st_tokenizer *t = st_calloc(1, sizeof *t);
    if (!t) { json_decref(root); return nomem(); }
    if (!json_is_object(root)) { st = st_err(ST_ERR_FORMAT, "%s: top level is not a JSON object", path); goto done; }

    /* added tokens first (validated), so the id range is known */
    json_t *added = json_object_get(root, "added_tokens");
    int max_added = -1;
    if (added && !json_is_null(added)) {
        if (!json_is_array(added)) { st = st_err(ST_ERR_FORMAT, "%s: added_tokens must be an array", path); goto done; }
        for (size_t i = 0; i < json_array_size(added); i++) {
            json_t *e = json_array_get(added, i), *id = json_object_get(e, "id"), *c = json_object_get(e, "content");
            if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= MAX_TOKEN_ID ||
                !json_is_string(c) || !json_string_length(c)) {
                st = st_err(ST_ERR_FORMAT, "%s: added_tokens[%zu] needs an \"id\" (0..%d) and a non-empty \"content\"",
                            path, i, MAX_TOKEN_ID - 1);
                goto done;
            }
            if (memchr(json_string_value(c), 0, json_string_length(c))) {
                st = st_err(ST_ERR_FORMAT, "%s: added_tokens[%zu] content contains NUL", path, i);
                goto done;
            }
            if (json_integer_value(id) > max_added) max_added = (int)json_integer_value(id);
        }
    }
    json_t *model = json_object_get(root, "model");
    if (!model) { st = st_err(ST_ERR_FORMAT, "%s: no \"model\" in tokenizer.json", path); goto done; }
    if ((st = load_model(&L, t, model, max_added))) goto done;

    json_t *j = json_object_get(root, "normalizer");
    if (j && !json_is_null(j)) {
        t->normalizer = st_calloc(1, sizeof *t->normalizer);
        if (!t->normalizer) { st = nomem(); goto done; }
        if ((st = parse_norm(&L, j, t->normalizer))) goto done;
    }
    j = json_object_get(root, "pre_tokenizer");
    if (j && !json_is_null(j)) {
        t->pretok = st_calloc(1, sizeof *t->pretok);
        if (!t->pretok) { st = nomem(); goto done; }
        if ((st = parse_pretok(&L, j, t->pretok))) goto done;
        int n = count_steps(t->pretok);
        t->steps = st_malloc((size_t)(n + 1) * sizeof *t->steps);
        if (!t->steps) { st = nomem(); goto done; }
        flatten_steps(t->pretok, t->steps, &t->n_steps);
    }
    j = json_object_get(root, "decoder");
    if (j && !json_is_null(j)) {
        t->decoder = st_calloc(1, sizeof *t->decoder);
        if (!t->decoder) { st = nomem(); goto done; }
        if ((st = parse_dec(&L, j, t->decoder))) goto done;
    }
    {
        st_ivec pre = {0}, suf = {0};
        st = parse_post(&L, t, json_object_get(root, "post_processor"), &pre, &suf);
        t->prefix = pre.p; t->n_prefix = (int)pre.n;
        t->suffix = suf.p; t->n_suffix = (int)suf.n;
        if (st) goto done;
    }
    t->n_added = (int)json_array_size(added);
    t->added = st_calloc((size_t)(t->n_added ? t->n_added : 1), sizeof *t->added);
    if (!t->added) { st = nomem(); goto done; }
    if ((st = load_added(&L, t, added))) goto done;

done:
    json_decref(root);
    if (st) { st_tokenizer_free(t); return st; }
    *out = t;
    return ST_OK;
}

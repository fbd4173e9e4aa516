/*
 * test_data.c — the data side of training: the byte-level BPE trainer
 * (src/text/bpe_train.c) and the synthetic reasoning tasks
 * (src/train/data_tasks.c).
 *
 * Trainer: a naive reference (full pair recount per merge) written here gives
 * the same merges; the output is byte-identical across runs and thread
 * counts; the file loads in st_tokenizer_load with the chat special tokens at
 * ids 0..15 and in the reference encoder @huggingface/tokenizers (node), which
 * must give the same ids as st_tokenize; encode/decode round-trips; the
 * vocabulary compresses. Tasks: deterministic, answers re-derived here from the
 * prompt text alone, every add column re-checked, eval problems never in
 * training streams, traces end with the answer.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <jansson.h>
#include <omp.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "starling.h"
#include "text/bpe_train.h"
#include "train/data_tasks.h"
#include "util_test.h"

/* ------------------------------------------------------------ fixtures */

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)sz + 1);
    size_t r = fread(b, 1, (size_t)sz, f);
    fclose(f);
    b[r] = 0;
    if (n) *n = r;
    return b;
}

typedef struct { char *p; size_t n, cap; } buf;
static void bput(buf *b, const char *s) {
    size_t l = strlen(s);
    if (b->n + l + 1 > b->cap) {
        b->cap = (b->n + l + 1) * 2;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, l + 1);
    b->n += l;
}

/* A fixed training text: pseudo-English from a small grammar (deterministic
 * LCG), some real sentences, Unicode, digits, whitespace runs, and rendered
 * task conversations with special tokens (which must not be learned). */
static char *training_text(void) {
    static const char *subj[] = {"The keeper", "A gull", "The old ship", "Elizabeth", "The captain", "Nobody",
                                 "The whale", "Mr. Darcy", "The lighthouse", "Every sailor"};
    static const char *verb[] = {"watched", "remembered", "followed", "wrote about", "could not forget", "praised",
                                 "questioned", "carried", "painted", "answered"};
    static const char *obj[] = {"the grey harbour", "a letter from London", "the long winter", "the silent sea",
                                "their first meeting", "the ship's lantern", "twelve barrels of oil",
                                "the northern lights", "an honest reply", "the price of paraffin"};
    static const char *tail[] = {".", ", and then slept.", "; it was late.", "!", "?", " -- twice.",
                                 " in 1851.", " at 02:40.", " (again).", ", café au lait in hand."};
    buf b = {0};
    uint64_t x = 12345;
    char line[512];
    for (int i = 0; i < 3000; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        unsigned r = (unsigned)(x >> 33);
        snprintf(line, sizeof line, "%s %s %s%s%s", subj[r % 10], verb[(r / 10) % 10], obj[(r / 100) % 10],
                 tail[(r / 1000) % 10], (r / 10000) % 7 == 0 ? "\n\n" : (r / 10000) % 3 == 0 ? "\n" : " ");
        bput(&b, line);
    }
    bput(&b, "Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my "
             "purse, I thought I would sail about a little and see the watery part of the world.\n"
             "日本語のテキスト、中文混合123数字。 Привет мир! 👍🏽 emoji🙂text\n    indented code();\n\t\ttabs\n");
    st_task_opts o = {.kind = ST_TASK_MIX, .seed = 7};
    for (int i = 0; i < 150; i++) {
        st_task t;
        assert_int_equal(st_task_gen(&o, (uint64_t)i, &t), ST_OK);
        char *a, *s;
        assert_int_equal(st_task_assistant(&t, 1, &a), ST_OK);
        st_chat_msg m[2] = {{.role = "user", .content = t.prompt}, {.role = "assistant", .content = a}};
        assert_int_equal(st_chat_render(m, 2, 0, 1, &s), ST_OK);
        bput(&b, s);
        free(s); free(a);
        st_task_free(&t);
    }
    return b.p;
}

#define TV 600 /* trained vocabulary of the fixture (the text supports ~650 ids at min frequency 2) */
static char *g_text;
static char *g_dir;
static char g_tok_path[600];

static st_status train_to(const char *text, int vocab, int minf, const char *path, st_bpe_stats *stats) {
    st_bpe_trainer *t;
    st_bpe_opts o = {vocab, minf};
    st_status st = st_bpe_new(&o, &t);
    if (st) return st;
    /* fed in two parts cut at "\n" + letter, where no piece straddles: the
     * counts must add up to the single feed's */
    size_t n = strlen(text), h = n / 2;
    while (h + 1 < n && !(text[h] == '\n' && isalpha((unsigned char)text[h + 1]))) h++;
    h++;
    if (!(st = st_bpe_feed(t, text, h)) && !(st = st_bpe_feed(t, text + h, n - h)) && !(st = st_bpe_train(t)))
        st = st_bpe_write(t, path);
    if (stats) st_bpe_get_stats(t, stats);
    st_bpe_free(t);
    return st;
}

static int setup(void **state) {
    (void)state;
    g_text = training_text();
    g_dir = test_tmpdir("data");
    snprintf(g_tok_path, sizeof g_tok_path, "%s/tokenizer.json", g_dir);
    /* the halves above are cut mid-text: count on whole text for the reference below */
    st_bpe_trainer *t;
    st_bpe_opts o = {TV, 2};
    if (st_bpe_new(&o, &t) || st_bpe_feed(t, g_text, strlen(g_text)) || st_bpe_train(t) || st_bpe_write(t, g_tok_path)) {
        fprintf(stderr, "setup: %s\n", st_last_error());
        return -1;
    }
    st_bpe_free(t);
    return 0;
}
static int teardown(void **state) {
    (void)state;
    rm_rf(g_dir);
    free(g_dir);
    free(g_text);
    return 0;
}

static st_tokenizer *load_tok(const char *path) {
    st_tokenizer *t = NULL;
    if (st_tokenizer_load(path, &t)) fail_msg("load %s: %s", path, st_last_error());
    return t;
}

/* ------------------------------------------------------------ trainer tests */

static void test_bpe_specials_and_layout(void **state) {
    (void)state;
    st_tokenizer *t = load_tok(g_tok_path);
    assert_int_equal(st_tokenizer_vocab_size(t), TV);
    for (int i = 0; i < ST_BPE_N_SPECIAL; i++) {
        assert_int_equal(st_token_id(t, st_bpe_specials[i]), i);
        assert_true(st_token_is_special(t, i));
    }
    assert_int_equal(st_token_id(t, "<|im_start|>"), 10);
    assert_int_equal(st_token_id(t, "<|im_end|>"), 11);
    assert_int_equal(st_token_id(t, "<think>"), 12);
    assert_int_equal(st_token_id(t, "</think>"), 13);
    for (int b = 0; b < 256; b++) { /* ids 16..271: one byte each, in byte order */
        char c[8];
        assert_int_equal(st_token_bytes(t, 16 + b, c, sizeof c), 1);
        assert_int_equal((unsigned char)c[0], b);
        assert_false(st_token_is_special(t, 16 + b));
    }
    /* the JSON: the model and pre-tokenizer blocks as in the Nemotron tokenizer */
    json_error_t je;
    json_t *j = json_load_file(g_tok_path, 0, &je);
    assert_non_null(j);
    json_t *m = json_object_get(j, "model");
    assert_string_equal(json_string_value(json_object_get(m, "type")), "BPE");
    assert_true(json_is_true(json_object_get(m, "ignore_merges")));
    assert_int_equal(json_array_size(json_object_get(m, "merges")), TV - ST_BPE_BASE);
    assert_int_equal(json_object_size(json_object_get(m, "vocab")), TV);
    assert_int_equal(json_array_size(json_object_get(j, "added_tokens")), 16);
    json_t *pt = json_array_get(json_object_get(json_object_get(j, "pre_tokenizer"), "pretokenizers"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(pt, "pattern"), "Regex")), st_bpe_split_regex);
    /* same Split regex as the golden Nemotron-style tokenizer */
    char gp[512];
    snprintf(gp, sizeof gp, "%s/dense_h/model/tokenizer.json", golden_dir());
    json_t *g = json_load_file(gp, 0, &je);
    if (g) {
        json_t *gpt = json_array_get(json_object_get(json_object_get(g, "pre_tokenizer"), "pretokenizers"), 0);
        assert_string_equal(json_string_value(json_object_get(json_object_get(gpt, "pattern"), "Regex")), st_bpe_split_regex);
        assert_true(json_equal(json_object_get(g, "added_tokens"), json_object_get(j, "added_tokens")));
        assert_true(json_equal(json_object_get(g, "decoder"), json_object_get(j, "decoder")));
        assert_true(json_equal(json_object_get(g, "pre_tokenizer"), json_object_get(j, "pre_tokenizer")));
        json_decref(g);
    }
    json_decref(j);
    /* the files beside it */
    char p[700];
    snprintf(p, sizeof p, "%s/tokenizer_config.json", g_dir);
    j = json_load_file(p, 0, &je);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "eos_token")), "<|im_end|>");
    json_decref(j);
    snprintf(p, sizeof p, "%s/special_tokens_map.json", g_dir);
    j = json_load_file(p, 0, &je);
    assert_non_null(j);
    json_decref(j);
    st_tokenizer_free(t);
}

static void test_bpe_deterministic(void **state) {
    (void)state;
    char p1[700], p2[700];
    snprintf(p1, sizeof p1, "%s/a/tokenizer.json", g_dir);
    snprintf(p2, sizeof p2, "%s/b/tokenizer.json", g_dir);
    char d[700];
    snprintf(d, sizeof d, "%s/a", g_dir); mkdir(d, 0755);
    snprintf(d, sizeof d, "%s/b", g_dir); mkdir(d, 0755);
    /* one thread vs two, and fed in halves: same bytes as the setup's single feed */
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    assert_int_equal(train_to(g_text, TV, 2, p1, NULL), ST_OK);
    omp_set_num_threads(nt > 1 ? nt : 2);
    assert_int_equal(train_to(g_text, TV, 2, p2, NULL), ST_OK);
    omp_set_num_threads(nt);
    size_t n0, n1, n2;
    char *a = slurp(g_tok_path, &n0), *b = slurp(p1, &n1), *c = slurp(p2, &n2);
    assert_non_null(a); assert_non_null(b); assert_non_null(c);
    assert_true(n1 == n2 && !memcmp(b, c, n1));
    assert_true(n0 == n1 && !memcmp(a, b, n0));
    free(a); free(b); free(c);
}

/* Naive reference trainer: recount every pair each round. */
typedef struct { int32_t *s; int n; int64_t f; } nword;
static void test_bpe_matches_naive(void **state) {
    (void)state;
    /* piece counts with PCRE2 directly, special tokens cut out */
    int ec; PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)st_bpe_split_regex, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    assert_non_null(re);
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    size_t cap = 1 << 16;
    nword *w = calloc(cap, sizeof *w);
    int nw = 0;
    const char *text = g_text;
    size_t tn = strlen(text);
    for (size_t i = 0;;) {
        size_t j = i, sl = 0;
        for (; j < tn && !sl; j += sl ? 0 : 1)
            if (text[j] == '<')
                for (int k = 0; k < ST_BPE_N_SPECIAL; k++) {
                    size_t l = strlen(st_bpe_specials[k]);
                    if (!strncmp(text + j, st_bpe_specials[k], l) && l > sl) sl = l;
                }
        /* segment [i, j) */
        size_t pos = i, prev = i;
        while (pos < j) {
            int r = pcre2_match(re, (PCRE2_SPTR)text, j, pos, 0, md, NULL);
            if (r < 0) break;
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            assert_true(ov[1] > ov[0]);
            assert_true(ov[0] == prev); /* this regex leaves no gaps on this text */
            size_t a = ov[0], b = ov[1];
            int found = -1;
            for (int k = 0; k < nw && found < 0; k++) {
                if (w[k].n != (int)(b - a)) continue;
                int same = 1;
                for (int q = 0; q < w[k].n && same; q++) same = w[k].s[q] == 16 + (unsigned char)text[a + (size_t)q];
                if (same) found = k;
            }
            if (found >= 0) w[found].f++;
            else {
                assert_true((size_t)nw < cap);
                w[nw].n = (int)(b - a);
                w[nw].s = malloc((b - a) * sizeof(int32_t));
                for (size_t q = a; q < b; q++) w[nw].s[q - a] = 16 + (unsigned char)text[q];
                w[nw].f = 1;
                nw++;
            }
            prev = pos = b;
        }
        assert_true(prev == j);
        if (j >= tn) break;
        i = j + sl;
    }
    pcre2_match_data_free(md);
    pcre2_code_free(re);

    /* token strings: bytes; then merges by full recount, ties to the smaller (a,b) */
    int nmerge = TV - ST_BPE_BASE;
    char **ts = calloc(1000 + 1, sizeof *ts);
    int *tl = calloc(1000 + 1, sizeof *tl), ntok = ST_BPE_BASE;
    for (int b = 0; b < 256; b++) { ts[16 + b] = malloc(1); ts[16 + b][0] = (char)b; tl[16 + b] = 1; }
    int32_t (*ref)[2] = malloc((size_t)nmerge * sizeof *ref);
    int nref = 0;
    int64_t *cnt = calloc(1000 * 1000, sizeof(int64_t));
    while (ntok < TV) {
        for (int k = 0; k < nw; k++)
            for (int q = 0; q + 1 < w[k].n; q++) cnt[(size_t)w[k].s[q] * 1000 + (size_t)w[k].s[q + 1]] += w[k].f;
        int64_t best = 0; int ba = -1, bb = -1;
        for (int k = 0; k < nw; k++)
            for (int q = 0; q + 1 < w[k].n; q++) {
                int a = w[k].s[q], b = w[k].s[q + 1];
                int64_t c = cnt[(size_t)a * 1000 + (size_t)b];
                if (c > best || (c == best && (a < ba || (a == ba && b < bb)))) { best = c; ba = a; bb = b; }
            }
        for (int k = 0; k < nw; k++)
            for (int q = 0; q + 1 < w[k].n; q++) cnt[(size_t)w[k].s[q] * 1000 + (size_t)w[k].s[q + 1]] = 0;
        if (best < 2) break;
        int l = tl[ba] + tl[bb], c = -1;
        char *cat = malloc((size_t)l);
        memcpy(cat, ts[ba], (size_t)tl[ba]); memcpy(cat + tl[ba], ts[bb], (size_t)tl[bb]);
        for (int i = 16; i < ntok && c < 0; i++) if (tl[i] == l && !memcmp(ts[i], cat, (size_t)l)) c = i;
        if (c < 0) { c = ntok++; ts[c] = cat; tl[c] = l; } else free(cat);
        ref[nref][0] = ba; ref[nref][1] = bb; nref++;
        for (int k = 0; k < nw; k++) {
            int j = 0;
            for (int q = 0; q < w[k].n;) {
                if (q + 1 < w[k].n && w[k].s[q] == ba && w[k].s[q + 1] == bb) { w[k].s[j++] = c; q += 2; }
                else w[k].s[j++] = w[k].s[q++];
            }
            w[k].n = j;
        }
    }
    /* compare with the file: merges as byte strings */
    st_tokenizer *t = load_tok(g_tok_path);
    json_error_t je;
    json_t *j = json_load_file(g_tok_path, 0, &je);
    json_t *merges = json_object_get(json_object_get(j, "model"), "merges");
    assert_int_equal((int)json_array_size(merges), nref);
    for (int k = 0; k < nref; k++) {
        json_t *e = json_array_get(merges, (size_t)k);
        for (int side = 0; side < 2; side++) {
            int32_t id = st_token_id(t, json_string_value(json_array_get(e, (size_t)side)));
            char bb2[256];
            int l = st_token_bytes(t, id, bb2, sizeof bb2);
            int r = ref[k][side];
            if (l != tl[r] || memcmp(bb2, ts[r], (size_t)l))
                fail_msg("merge %d side %d: trained \"%.*s\", reference \"%.*s\"", k, side, l, bb2, tl[r], ts[r]);
        }
    }
    json_decref(j);
    st_tokenizer_free(t);
    for (int k = 0; k < nw; k++) free(w[k].s);
    for (int i = 0; i < ntok; i++) free(ts[i]);
    free(w); free(ts); free(tl); free(ref); free(cnt);
}

static const char *g_cases[] = {
    "",
    "Hello, World!  How're you 12345?\n\n",
    "The keeper watched the grey harbour, and then slept.",
    "   leading and trailing   ",
    "a  b   c    d\t\te\n\n\nf \n g  \t  \n h",
    "\r\n windows\r\nline\r\n\r\n",
    "31415926535897932384626433832795028841971693993751",
    "café naïve résumé Zoë Ångström; cafe\u0301 (combining)",
    "日本語のテキスト、中文混合123数字。 Привет мир! Γειά σου",
    "👍🏽 👨‍👩‍👧‍👦 emoji🙂in😉text and 🤖🧠!",
    "I'm you're he's she'd we'll they've can't won't Y'ALL'RE",
    "https://example.com/path/to/page?q=1&r=two#frag foo_bar-baz.qux C++ && x*y/z",
    "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nWhat is 4827 + 395?<|im_end|>\n<|im_start|>assistant\n<think>\n"
    "c1: 7+5+0=12, write 2, carry 1\n</think>\n5222<|im_end|>\n",
    "<think></think>answer <s> </s> <unk> <SPECIAL_14>x<|im_start <|im_end|x",
    "Sort these numbers from smallest to largest: 3, 8, 9, 76, 45.",
    "zero\u200bwidth\u00a0nbsp\u3000ideographic tab\there\vvt",
};

static void test_bpe_roundtrip_and_compression(void **state) {
    (void)state;
    st_tokenizer *t = load_tok(g_tok_path);
    for (size_t i = 0; i < sizeof g_cases / sizeof *g_cases; i++) {
        for (int ps = 0; ps < 2; ps++) {
            int32_t *ids; int n;
            assert_int_equal(st_tokenize(t, g_cases[i], strlen(g_cases[i]), ps, &ids, &n), ST_OK);
            char *back;
            assert_int_equal(st_detokenize(t, ids, n, &back), ST_OK);
            if (strcmp(back, g_cases[i])) fail_msg("round trip of case %zu: \"%s\" -> \"%s\"", i, g_cases[i], back);
            for (int k = 0; k < n; k++) {
                assert_true(ids[k] >= 0 && ids[k] < TV);
                if (!ps) assert_false(st_token_is_special(t, ids[k])); /* as text, specials are bytes */
            }
            free(back); free(ids);
        }
    }
    /* chat markup: the special tokens come out as their ids */
    int32_t *ids; int n;
    const char *chat = g_cases[12];
    assert_int_equal(st_tokenize(t, chat, strlen(chat), 1, &ids, &n), ST_OK);
    assert_int_equal(ids[0], 10);
    int seen12 = 0, seen13 = 0, seen11 = 0;
    for (int k = 0; k < n; k++) { seen12 += ids[k] == 12; seen13 += ids[k] == 13; seen11 += ids[k] == 11; }
    assert_int_equal(seen12, 1); assert_int_equal(seen13, 1); assert_int_equal(seen11, 3);
    free(ids);
    /* compression on the training text: well below one token per byte */
    size_t len = strlen(g_text);
    assert_int_equal(st_tokenize(t, g_text, len, 1, &ids, &n), ST_OK);
    double ratio = (double)len / n;
    print_message("trained %d-id vocabulary: %zu bytes -> %d tokens (%.2f bytes/token)\n", TV, len, n, ratio);
    assert_true(ratio > 2.5);
    free(ids);
    st_tokenizer_free(t);
}

/* The same ids from the reference encoder @huggingface/tokenizers (node). */
static void test_bpe_hf_reference(void **state) {
    (void)state;
    int stc;
    char *o = run_capture("command -v node >/dev/null 2>&1 && echo yes", &stc);
    int have_node = o && !strncmp(o, "yes", 3);
    free(o);
    if (!have_node) {
        print_message("SKIP: node is not installed; the @huggingface/tokenizers cross-check did not run\n");
        skip();
    }
    if (access("scripts/tokgold/node_modules/@huggingface/tokenizers/package.json", R_OK) != 0) {
        int rc = system("cd scripts/tokgold && npm ci --silent >/dev/null 2>&1");
        if (rc) fail_msg("scripts/tokgold: npm ci failed (%d); the reference encoder is needed", rc);
    }
    char cases[700];
    snprintf(cases, sizeof cases, "%s/cases.jsonl", g_dir);
    FILE *f = fopen(cases, "w");
    assert_non_null(f);
    int nc = 0;
    for (size_t i = 0; i < sizeof g_cases / sizeof *g_cases; i++, nc++) {
        json_t *s = json_string(g_cases[i]);
        char *d = json_dumps(s, JSON_ENCODE_ANY);
        fprintf(f, "%s\n", d);
        free(d); json_decref(s);
    }
    /* plus the first 20 KB of the training text */
    json_t *s = json_stringn(g_text, 20000);
    char *d = json_dumps(s, JSON_ENCODE_ANY);
    fprintf(f, "%s\n", d);
    free(d); json_decref(s);
    nc++;
    fclose(f);
    char cmd[2000];
    snprintf(cmd, sizeof cmd, "node scripts/corpus/hf_encode.mjs '%s' '%s'", g_tok_path, cases);
    char *out = run_capture(cmd, &stc);
    if (stc) fail_msg("%s failed (%d): %s", cmd, stc, out ? out : "");
    st_tokenizer *t = load_tok(g_tok_path);
    char *save, *line = strtok_r(out, "\n", &save);
    for (int i = 0; i < nc; i++) {
        const char *txt = i < nc - 1 ? g_cases[i] : NULL;
        size_t tl = txt ? strlen(txt) : 20000;
        int32_t *ids; int n;
        assert_int_equal(st_tokenize(t, txt ? txt : g_text, tl, 1, &ids, &n), ST_OK);
        /* the ids line may be empty (empty text): strtok skips it, so check via the D line */
        if (n == 0) {
            assert_non_null(line);
            assert_true(!strncmp(line, "D ", 2));
        } else {
            assert_non_null(line);
            char *p = line, *end;
            for (int k = 0; k < n; k++) {
                long v = strtol(p, &end, 10);
                if (end == p || v != ids[k]) fail_msg("case %d: id %d differs from @huggingface/tokenizers (%ld vs %d)", i, k, v, ids[k]);
                p = end;
            }
            while (*p == ' ') p++;
            if (*p) fail_msg("case %d: the reference has more ids", i);
            line = strtok_r(NULL, "\n", &save);
            assert_non_null(line);
            assert_true(!strncmp(line, "D ", 2));
        }
        json_t *dj = json_loads(line + 2, JSON_DECODE_ANY, NULL);
        assert_true(json_is_string(dj));
        assert_true(json_string_length(dj) == tl && !memcmp(json_string_value(dj), txt ? txt : g_text, tl));
        json_decref(dj);
        line = strtok_r(NULL, "\n", &save);
        free(ids);
    }
    free(out);
    st_tokenizer_free(t);
}

static void test_bpe_bad_input(void **state) {
    (void)state;
    st_bpe_trainer *t;
    st_bpe_opts o = {100, 2};
    assert_int_equal(st_bpe_new(&o, &t), ST_ERR_ARG); /* below 272 */
    o.vocab_size = 300; o.min_frequency = 0;
    assert_int_equal(st_bpe_new(&o, &t), ST_ERR_ARG);
    o.min_frequency = 1;
    assert_int_equal(st_bpe_new(&o, &t), ST_OK);
    assert_int_equal(st_bpe_feed(t, "ok \xff\xfe bad", 9), ST_ERR_ARG);
    assert_int_equal(st_bpe_write(t, "/nonexistent/x.json"), ST_ERR_ARG); /* not trained */
    /* tiny text: training stops early, the file is still complete */
    assert_int_equal(st_bpe_feed(t, "ab ab", 5), ST_OK);
    assert_int_equal(st_bpe_train(t), ST_OK);
    st_bpe_stats s;
    st_bpe_get_stats(t, &s);
    assert_true(s.merges >= 1 && s.merges < 28);
    char p[700];
    snprintf(p, sizeof p, "%s/tiny.json", g_dir);
    assert_int_equal(st_bpe_write(t, p), ST_OK);
    assert_int_equal(st_bpe_train(t), ST_ERR_ARG); /* once */
    st_bpe_free(t);
    st_tokenizer *tk = load_tok(p);
    int32_t *ids; int n;
    assert_int_equal(st_tokenize(tk, "ab ab", 5, 0, &ids, &n), ST_OK);
    assert_int_equal(n, 2);
    free(ids);
    st_tokenizer_free(tk);
}

/* ------------------------------------------------------------ task tests */

/* Numbers in s, in order. */
static int numbers(const char *s, long long *v, int max) {
    int n = 0;
    for (const char *p = s; *p;) {
        if (isdigit((unsigned char)*p)) {
            char *e;
            long long x = strtoll(p, &e, 10);
            if (n < max) v[n] = x;
            n++;
            p = e;
        } else p++;
    }
    return n;
}
static int cmp_ll(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

/* Check one problem against an answer derived from the prompt alone. */
static void check_task(const st_task *t) {
    long long v[16];
    int n = numbers(t->prompt, v, 16);
    char want[256] = "";
    switch (t->kind) {
    case ST_TASK_ADD:
        assert_int_equal(n, 2);
        snprintf(want, sizeof want, "%lld", v[0] + v[1]);
        break;
    case ST_TASK_SORT: {
        assert_true(n >= 3 && n <= 6);
        int desc = strstr(t->prompt, "largest to smallest") != NULL;
        assert_true(desc || strstr(t->prompt, "smallest to largest"));
        qsort(v, (size_t)n, sizeof *v, cmp_ll);
        size_t o = 0;
        for (int i = 0; i < n; i++)
            o += (size_t)snprintf(want + o, sizeof want - o, "%s%lld", i ? ", " : "", desc ? v[n - 1 - i] : v[i]);
        break;
    }
    case ST_TASK_COMPARE: {
        assert_int_equal(n, 2);
        assert_true(v[0] != v[1]);
        int larger = strstr(t->prompt, "larger") != NULL;
        assert_true(larger || strstr(t->prompt, "smaller"));
        snprintf(want, sizeof want, "%lld", larger == (v[0] > v[1]) ? v[0] : v[1]);
        break;
    }
    case ST_TASK_CODE: { /* the answer states the sum's word; the trace ends with the sum */
        assert_int_equal(n, 2);
        assert_true(v[0] >= 10 && v[0] <= 999 && v[1] >= 10 && v[1] <= 999);
        long long sum = v[0] + v[1];
        assert_true(sum < ST_CODEBOOK_N);
        const char *w = st_codebook_word((int)sum);
        assert_non_null(w);
        snprintf(want, sizeof want, "The code word for %lld is %s.", sum, w);
        if (strcmp(t->answer, want)) fail_msg("%s: answer \"%s\", expected \"%s\"", t->id, t->answer, want);
        char tail[64];
        snprintf(tail, sizeof tail, "\nReversed: %lld", sum);
        size_t rl = strlen(t->reasoning), tl = strlen(tail);
        assert_true(rl >= tl && !strcmp(t->reasoning + rl - tl, tail));
        /* the thinking holds no hint of the word: only the answer step knows it */
        char sp[48];
        snprintf(sp, sizeof sp, " %s", w);
        assert_null(strstr(t->reasoning, sp));
        snprintf(want, sizeof want, "%lld", sum); /* what the trace must end with */
        break;
    }
    default: fail_msg("kind %d", t->kind);
    }
    const char *ans = t->kind == ST_TASK_CODE ? want : t->answer;
    if (t->kind != ST_TASK_CODE && strcmp(t->answer, want))
        fail_msg("%s: answer \"%s\", expected \"%s\" (%s)", t->id, t->answer, want, t->prompt);
    /* the trace ends with the answer (then at most a period); code: with the sum */
    size_t rl = strlen(t->reasoning), al = strlen(ans);
    size_t end = rl && t->reasoning[rl - 1] == '.' ? rl - 1 : rl;
    assert_true(end >= al && !memcmp(t->reasoning + end - al, ans, al));
    assert_null(strstr(t->reasoning, "<think>"));
    assert_null(strstr(t->reasoning, "</think>"));
    if (t->kind == ST_TASK_ADD || t->kind == ST_TASK_CODE) { /* every column line is right */
        int cols = 0, carry = 0;
        for (const char *p = t->reasoning; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
            int col, x, y, c, s, w, co;
            if (sscanf(p, "c%d: %d+%d+%d=%d, write %d, carry %d", &col, &x, &y, &c, &s, &w, &co) != 7) continue;
            assert_int_equal(col, cols + 1);
            assert_int_equal(c, carry);
            assert_int_equal(s, x + y + c);
            assert_int_equal(w, s % 10);
            assert_int_equal(co, s / 10);
            carry = co;
            cols++;
        }
        assert_true(cols >= 1);
    }
}

static void test_tasks_correct_and_deterministic(void **state) {
    (void)state;
    for (int k = 0; k <= ST_TASK_CODE; k++)
        for (int split = 0; split < 2; split++) {
            st_task_opts o = {.kind = (st_task_kind)k, .eval_split = split, .seed = 42};
            int n = test_quick() ? 200 : 1500;
            for (int i = 0; i < n; i++) {
                st_task a, b;
                assert_int_equal(st_task_gen(&o, (uint64_t)i, &a), ST_OK);
                assert_int_equal(st_task_gen(&o, (uint64_t)i, &b), ST_OK);
                assert_string_equal(a.prompt, b.prompt);
                assert_string_equal(a.reasoning, b.reasoning);
                assert_string_equal(a.answer, b.answer);
                assert_string_equal(a.id, b.id);
                assert_int_equal(st_task_key_is_eval(a.key), split);
                if (k != ST_TASK_MIX) assert_int_equal(a.kind, k);
                check_task(&a);
                char *as;
                assert_int_equal(st_task_assistant(&a, 1, &as), ST_OK);
                assert_true(!strncmp(as, "<think>\n", 8));
                assert_non_null(strstr(as, "\n</think>\n"));
                assert_string_equal(strstr(as, "\n</think>\n") + 10, a.answer);
                free(as);
                assert_int_equal(st_task_assistant(&a, 0, &as), ST_OK);
                char nt[300];
                snprintf(nt, sizeof nt, "<think>\n</think>\n%s", a.answer);
                assert_string_equal(as, nt);
                free(as);
                st_task_free(&a); st_task_free(&b);
            }
        }
    /* seeds matter; digit ranges are honoured */
    st_task a, b;
    st_task_opts o1 = {.kind = ST_TASK_ADD, .seed = 1}, o2 = {.kind = ST_TASK_ADD, .seed = 2};
    assert_int_equal(st_task_gen(&o1, 0, &a), ST_OK);
    assert_int_equal(st_task_gen(&o2, 0, &b), ST_OK);
    assert_true(strcmp(a.prompt, b.prompt) != 0);
    st_task_free(&a); st_task_free(&b);
    st_task_opts o3 = {.kind = ST_TASK_ADD, .seed = 3, .min_digits = 2, .max_digits = 2};
    for (int i = 0; i < 50; i++) {
        assert_int_equal(st_task_gen(&o3, (uint64_t)i, &a), ST_OK);
        long long v[4];
        assert_int_equal(numbers(a.prompt, v, 4), 2);
        assert_true(v[0] >= 10 && v[0] <= 99 && v[1] >= 10 && v[1] <= 99);
        check_task(&a);
        st_task_free(&a);
    }
    st_task_opts bad = {.kind = ST_TASK_ADD, .min_digits = 5, .max_digits = 3};
    assert_int_equal(st_task_gen(&bad, 0, &a), ST_ERR_ARG);
}

/* The eval grader: the last integer of the reply for numeric answers, the
 * trimmed reply (any case) otherwise; every generated task grades its own answer. */
static void test_tasks_grader(void **state) {
    (void)state;
#define OK(reply, want) assert_true(st_task_answer_correct(reply, strlen(reply), want))
#define NO(reply, want) assert_false(st_task_answer_correct(reply, strlen(reply), want))
    OK("85", "85");
    OK("47 + 38: c1 7+8=15, so the sum is 85", "85");
    OK("0085", "85");
    OK("-12", "-12");
    NO("12", "-12");
    NO("85 or 86", "85");
    NO("no number here", "85");
    OK("  Alpha \n", "alpha");
    NO("alpha beta", "alpha");
    OK("1, 2, 3", "1, 2, 3");
    NO("1, 2, 4", "1, 2, 3");
    assert_false(st_task_answer_correct("850", 2, "850")); /* only reply[0..n) counts */
#undef OK
#undef NO
    for (int k = 0; k <= ST_TASK_CODE; k++) {
        if (k == ST_TASK_MIX) continue;
        st_task_opts o = {.kind = (st_task_kind)k, .seed = 9};
        for (int i = 0; i < 50; i++) {
            st_task t;
            assert_int_equal(st_task_gen(&o, (uint64_t)i, &t), ST_OK);
            char *as;
            assert_int_equal(st_task_assistant(&t, 1, &as), ST_OK);
            const char *reply = strstr(as, "</think>\n") + 9;
            assert_true(st_task_answer_correct(reply, strlen(reply), t.answer));
            free(as);
            st_task_free(&t);
        }
    }
}

/* The codebook: fixed, arbitrary, spread over its words, each word one token
 * of the shipped tokenizer (an answer is one recall, not a spelling), and mix
 * never draws a code problem (mix's stream is what the parent learnt). */
static void test_codebook(void **state) {
    (void)state;
    assert_null(st_codebook_word(-1));
    assert_null(st_codebook_word(ST_CODEBOOK_N));
    char f[96];
    assert_int_equal(st_codebook_fact(ST_CODEBOOK_N, f, sizeof f), ST_ERR_RANGE);
    assert_int_equal(st_codebook_fact(7, f, 10), ST_ERR_ARG);
    const char *words[ST_CODEBOOK_N];
    int distinct = 0, same_as_prev = 0;
    for (int i = 0; i < ST_CODEBOOK_N; i++) {
        words[i] = st_codebook_word(i);
        assert_non_null(words[i]);
        assert_ptr_equal(words[i], st_codebook_word(i));
        int seen = 0;
        for (int j = 0; j < i && !seen; j++) seen = !strcmp(words[j], words[i]);
        distinct += !seen;
        same_as_prev += i && !strcmp(words[i - 1], words[i]);
        assert_int_equal(st_codebook_fact(i, f, sizeof f), ST_OK);
        char want[96];
        snprintf(want, sizeof want, "The code word for %d is %s.", i, words[i]);
        assert_string_equal(f, want);
    }
    printf("  codebook: %d numbers, %d distinct words, %d runs of the same word\n", ST_CODEBOOK_N, distinct, same_as_prev);
    assert_true(distinct >= 100);        /* spread over the list, not a few words */
    assert_true(same_as_prev < 20);      /* not a rule such as n / 5 */
    st_tokenizer *tk = NULL;
    if (st_tokenizer_load("models/parent/tokenizer.json", &tk) == ST_OK) {
        for (int i = 0; i < ST_CODEBOOK_N; i++) {
            char sp[48];
            snprintf(sp, sizeof sp, " %s", words[i]);
            int32_t *ids = NULL;
            int n = 0;
            assert_int_equal(st_tokenize(tk, sp, strlen(sp), 0, &ids, &n), ST_OK);
            if (n != 1) fail_msg("\"%s\" is %d tokens of the shipped tokenizer", sp, n);
            free(ids);
        }
        st_tokenizer_free(tk);
    } else {
        printf("  models/parent/tokenizer.json not present: token check skipped\n");
    }
    st_task_opts o = {.kind = ST_TASK_MIX, .seed = 3};
    for (int i = 0; i < 300; i++) {
        st_task t;
        assert_int_equal(st_task_gen(&o, (uint64_t)i, &t), ST_OK);
        assert_true(t.kind != ST_TASK_CODE);
        st_task_free(&t);
    }
}

/* Canonical problem from the prompt text alone (independent of the library's key). */
static void canon(const st_task *t, char *out, size_t cap) {
    long long v[16];
    int n = numbers(t->prompt, v, 16);
    size_t o = (size_t)snprintf(out, cap, "%d:%s:", (int)t->kind,
                                t->kind == ST_TASK_SORT ? (strstr(t->prompt, "largest to") ? "d" : "a")
                                : t->kind == ST_TASK_COMPARE ? (strstr(t->prompt, "larger") ? "L" : "S") : "");
    for (int i = 0; i < n && o < cap; i++) o += (size_t)snprintf(out + o, cap - o, "%lld,", v[i]);
}
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void test_tasks_heldout_disjoint(void **state) {
    (void)state;
    /* small digit ranges make collisions between streams likely, so a leak would show */
    int ntr = test_quick() ? 3000 : 20000, nev = 600;
    char **tr = malloc(sizeof(char *) * (size_t)ntr), **ev = malloc(sizeof(char *) * (size_t)nev);
    int n_ev_keys_in_train = 0;
    for (int i = 0; i < ntr; i++) {
        st_task_opts o = {.kind = ST_TASK_MIX, .seed = (uint64_t)(i % 7), .min_digits = 1, .max_digits = 2};
        st_task t;
        assert_int_equal(st_task_gen(&o, (uint64_t)i, &t), ST_OK);
        n_ev_keys_in_train += st_task_key_is_eval(t.key);
        tr[i] = malloc(128);
        canon(&t, tr[i], 128);
        st_task_free(&t);
    }
    assert_int_equal(n_ev_keys_in_train, 0);
    for (int i = 0; i < nev; i++) {
        st_task_opts o = {.kind = ST_TASK_MIX, .eval_split = 1, .seed = 99, .min_digits = 1, .max_digits = 2};
        st_task t;
        assert_int_equal(st_task_gen(&o, (uint64_t)i, &t), ST_OK);
        ev[i] = malloc(128);
        canon(&t, ev[i], 128);
        st_task_free(&t);
    }
    qsort(tr, (size_t)ntr, sizeof *tr, cmp_str);
    int overlap = 0;
    for (int i = 0; i < nev; i++)
        if (bsearch(&ev[i], tr, (size_t)ntr, sizeof *tr, cmp_str)) overlap++;
    assert_int_equal(overlap, 0);
    /* and the spaces are not trivially separate: train repeats itself here */
    int dup = 0;
    for (int i = 1; i < ntr; i++) dup += !strcmp(tr[i], tr[i - 1]);
    assert_true(dup > 0);
    for (int i = 0; i < ntr; i++) free(tr[i]);
    for (int i = 0; i < nev; i++) free(ev[i]);
    free(tr); free(ev);
}

/* Rendered through the chat template, a task tokenizes with the special ids
 * in place and the answer right before <|im_end|>. */
static void test_tasks_render(void **state) {
    (void)state;
    st_tokenizer *tk = load_tok(g_tok_path);
    st_task_opts o = {.kind = ST_TASK_ADD, .seed = 5};
    st_task t;
    assert_int_equal(st_task_gen(&o, 0, &t), ST_OK);
    char *a, *s;
    assert_int_equal(st_task_assistant(&t, 1, &a), ST_OK);
    st_chat_msg m[2] = {{.role = "user", .content = t.prompt}, {.role = "assistant", .content = a}};
    assert_int_equal(st_chat_render(m, 2, 0, 1, &s), ST_OK);
    char want[4096];
    snprintf(want, sizeof want, "<|im_start|>system\n<|im_end|>\n<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n%s<|im_end|>\n",
             t.prompt, a);
    assert_string_equal(s, want);
    int32_t *ids; int n;
    assert_int_equal(st_tokenize(tk, s, strlen(s), 1, &ids, &n), ST_OK);
    int th = -1, te = -1;
    for (int i = 0; i < n; i++) { if (ids[i] == 12) th = i; if (ids[i] == 13) te = i; }
    assert_true(th > 0 && te > th);
    assert_int_equal(ids[n - 2], 11);
    char *tail;
    assert_int_equal(st_detokenize(tk, ids + te + 1, n - te - 3, &tail), ST_OK);
    snprintf(want, sizeof want, "\n%s", t.answer);
    assert_string_equal(tail, want);
    free(tail); free(ids); free(s); free(a);
    st_task_free(&t);
    st_tokenizer_free(tk);
}

/* The CLI commands, when the binary has them (skip otherwise). */
static void test_cli(void **state) {
    (void)state;
    char cmd[2000];
    int st;
    snprintf(cmd, sizeof cmd, "%s tasks --help 2>&1", starling_bin());
    char *o = run_capture(cmd, &st);
    int have = st == 0;
    free(o);
    if (!have) { print_message("SKIP: %s has no 'tasks' command yet\n", starling_bin()); skip(); }
    /* eval file: loads as `starling eval --task` items; unique; deterministic */
    char f1[800], f2[800], f3[800], td[700];
    snprintf(f1, sizeof f1, "%s/e1.jsonl", g_dir);
    snprintf(f2, sizeof f2, "%s/e2.jsonl", g_dir);
    snprintf(f3, sizeof f3, "%s/r.txt", g_dir);
    snprintf(td, sizeof td, "%s/cli-tok", g_dir);
    for (int r = 0; r < 2; r++) {
        snprintf(cmd, sizeof cmd, "%s tasks --kind mix -n 300 --seed 4 --split eval -o %s", starling_bin(), r ? f2 : f1);
        free(run_capture(cmd, &st));
        assert_int_equal(st, 0);
    }
    size_t n1, n2;
    char *a = slurp(f1, &n1), *b = slurp(f2, &n2);
    assert_true(n1 == n2 && !memcmp(a, b, n1));
    int lines = 0;
    for (char *save, *l = strtok_r(a, "\n", &save); l; l = strtok_r(NULL, "\n", &save), lines++) {
        json_t *j = json_loads(l, 0, NULL);
        assert_non_null(j);
        assert_true(json_is_string(json_object_get(j, "prompt")) && json_is_string(json_object_get(j, "answer")));
        assert_string_equal(json_string_value(json_object_get(j, "split")), "eval");
        json_t *ms = json_object_get(j, "messages");
        assert_int_equal(json_array_size(ms), 2);
        json_decref(j);
    }
    assert_int_equal(lines, 300);
    free(a); free(b);
    snprintf(cmd, sizeof cmd, "%s tasks --kind sort -n 3 --render --no-think -o %s", starling_bin(), f3);
    free(run_capture(cmd, &st));
    assert_int_equal(st, 0);
    a = slurp(f3, NULL);
    assert_non_null(strstr(a, "<|im_start|>assistant\n<think>\n</think>\n"));
    free(a);
    /* --think-only: the same problems' thinking, the answer left out */
    snprintf(cmd, sizeof cmd, "%s tasks --kind code -n 3 --render --think-only -o %s", starling_bin(), f3);
    free(run_capture(cmd, &st));
    assert_int_equal(st, 0);
    a = slurp(f3, NULL);
    snprintf(cmd, sizeof cmd, "%s tasks --kind code -n 3 --render -o %s", starling_bin(), f3);
    free(run_capture(cmd, &st));
    assert_int_equal(st, 0);
    b = slurp(f3, NULL);
    assert_null(strstr(a, "The code word"));
    assert_non_null(strstr(b, "The code word"));
    int ends = 0;
    for (const char *q = a; (q = strstr(q, "</think><|im_end|>")); q++) ends++;
    assert_int_equal(ends, 3);
    char *r1 = strstr(a, "Reversed: "), *r2 = strstr(b, "Reversed: "); /* the same first trace */
    assert_true(r1 && r2 && !strncmp(r1, r2, strcspn(r2, "\n")));
    free(a); free(b);
    snprintf(cmd, sizeof cmd, "%s tasks --kind code -n 3 --think-only --no-think 2>/dev/null", starling_bin());
    free(run_capture(cmd, &st));
    assert_int_equal(st, 2);
    snprintf(cmd, sizeof cmd, "%s tasks --kind nope -n 3 2>/dev/null", starling_bin());
    free(run_capture(cmd, &st));
    assert_int_equal(st, 2);
    /* tokenizer-train through the CLI equals the library's output on the same text */
    char in[700];
    snprintf(in, sizeof in, "%s/text.txt", g_dir);
    FILE *f = fopen(in, "wb");
    fwrite(g_text, 1, strlen(g_text), f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s tokenizer-train -q -i %s --vocab-size %d -o %s/ 2>&1", starling_bin(), in, TV, td);
    o = run_capture(cmd, &st);
    if (st) fail_msg("%s: %s", cmd, o);
    free(o);
    snprintf(f1, sizeof f1, "%s/tokenizer.json", td);
    a = slurp(f1, &n1);
    b = slurp(g_tok_path, &n2);
    assert_non_null(a);
    assert_true(n1 == n2 && !memcmp(a, b, n1));
    free(a); free(b);
    snprintf(cmd, sizeof cmd, "%s tokenizer-train -i %s --vocab-size 10 -o %s/ 2>/dev/null", starling_bin(), in, td);
    free(run_capture(cmd, &st));
    assert_int_equal(st, 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bpe_specials_and_layout),
        cmocka_unit_test(test_bpe_deterministic),
        cmocka_unit_test(test_bpe_matches_naive),
        cmocka_unit_test(test_bpe_roundtrip_and_compression),
        cmocka_unit_test(test_bpe_hf_reference),
        cmocka_unit_test(test_bpe_bad_input),
        cmocka_unit_test(test_tasks_correct_and_deterministic),
        cmocka_unit_test(test_tasks_grader),
        cmocka_unit_test(test_codebook),
        cmocka_unit_test(test_tasks_heldout_disjoint),
        cmocka_unit_test(test_tasks_render),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

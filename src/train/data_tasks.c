/*
 * data_tasks.c — synthetic reasoning problems whose written procedure makes
 * them solvable token by token (docs/DATA.md).
 *
 * The traces are built so that every step needs only local information that
 * the trace itself has just written down:
 *   add      the operands are first written zero-padded to the same length
 *            ("Aligned: 038610 + 176900"), then one line per column, right to
 *            left: "c3: 6+9+0=15, write 5, carry 1" (the two digits, the carry
 *            in, the sum, the digit written, the carry out), then the written
 *            digits and their reversal, which is the answer. Without the trace
 *            the answer needs every carry at once (4..6 digits by default).
 *   sort     repeated selection: the remaining list and its smallest (or
 *            largest) element, one line per step, then the sorted list.
 *   compare  digit counts first, then digits left to right until the first
 *            difference; operands usually share a long prefix.
 *   code     "What is the code word for 347 + 85?": the thinking is the add
 *            trace (operands of 2-3 digits, sum below ST_CODEBOOK_N), the
 *            answer a fact from a fixed, arbitrary codebook ("The code word
 *            for 432 is rain."). The trace holds no hint of the word: the
 *            answer step needs memorised knowledge, which a larger budget
 *            holds more of, while the thinking is the same procedure at
 *            every budget. Not part of mix (mix keeps its old stream).
 * Item i of a stream comes from its own generator state (seed, kind, split, i,
 * attempt), so streams are reproducible and any item can be made alone.
 */
#include "train/data_tasks.h"
#include "util/buf.h"
#include "util/util.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* uniform in [lo, hi] */
static int64_t rint_(uint64_t *s, int64_t lo, int64_t hi) {
    return lo + (int64_t)(st_splitmix64(s) % (uint64_t)(hi - lo + 1));
}
/* A problem's key: FNV-1a of its canonical text, finalized so that key % 8
 * uses well-mixed bits. The key picks the train/eval split and names the task
 * in files, so it must never change; hence this basis, one digit short of
 * FNV's, kept as the first version wrote it. */
static uint64_t task_key(const char *s) { return st_mix64(st_fnv1a64(1469598103934665603ull, s, strlen(s))); }

static const char *g_names[] = {"add", "sort", "compare", "mix", "code"};
const char *st_task_kind_name(st_task_kind k) { return (unsigned)k < 5 ? g_names[k] : "?"; }
int st_task_kind_parse(const char *name) {
    for (int i = 0; i < 5; i++) if (name && !strcmp(name, g_names[i])) return i;
    return -1;
}
int st_task_key_is_eval(uint64_t key) { return key % ST_TASK_EVAL_MOD == 0; }

void st_task_free(st_task *t) {
    if (!t) return;
    free(t->prompt); free(t->reasoning); free(t->answer);
    memset(t, 0, sizeof *t);
}

/* A random number with exactly d digits (d = 1 allows 0). */
static void rand_digits(uint64_t *s, int d, char *out) {
    for (int i = 0; i < d; i++) out[i] = (char)('0' + rint_(s, i == 0 && d > 1 ? 1 : 0, 9));
    out[d] = 0;
}

/* ------------------------------------------------------------ add */

static const char *g_add_prompts[] = {
    "What is %s + %s?", "Compute %s + %s.", "Add %s and %s.", "%s + %s = ?", "What is the sum of %s and %s?",
};
/* The written column addition of a + b (decimal strings) into why; the sum,
 * as written, into ans. */
static void add_trace(const char *a, const char *b, st_buf *why, st_buf *ans) {
    int la = (int)strlen(a), lb = (int)strlen(b), n = la > lb ? la : lb;
    char pa[16], pb[16], digits[16];
    memset(pa, '0', (size_t)n); memset(pb, '0', (size_t)n);
    memcpy(pa + n - la, a, (size_t)la); memcpy(pb + n - lb, b, (size_t)lb);
    pa[n] = pb[n] = 0;
    /* compact on purpose: every written digit is a token, so a 6-digit sum
     * fits in ~170 tokens (within `starling eval`'s default 256) */
    st_buf_printf(why, "Aligned: %s + %s\n", pa, pb);
    int carry = 0, nd = 0;
    for (int k = 0; k < n; k++) { /* k = 0: ones */
        int x = pa[n - 1 - k] - '0', y = pb[n - 1 - k] - '0', sum = x + y + carry;
        st_buf_printf(why, "c%d: %d+%d+%d=%d, write %d, carry %d\n", k + 1, x, y, carry, sum, sum % 10, sum / 10);
        digits[nd++] = (char)('0' + sum % 10);
        carry = sum / 10;
    }
    if (carry) {
        st_buf_printf(why, "c%d: carry 1, write 1\n", n + 1);
        digits[nd++] = '1';
    }
    st_buf_printf(why, "Written c1 to c%d:", nd);
    for (int k = 0; k < nd; k++) st_buf_printf(why, " %c", digits[k]);
    for (int k = nd - 1; k >= 0; k--) st_buf_printf(ans, "%c", digits[k]);
    st_buf_printf(why, "\nReversed: %s", ans->oom ? "" : ans->p);
}

static int gen_add(uint64_t *s, const st_task_opts *o, st_buf *canon, st_buf *prompt, st_buf *why, st_buf *ans) {
    int lo = o->min_digits ? o->min_digits : 4, hi = o->max_digits ? o->max_digits : 6;
    char a[16], b[16];
    rand_digits(s, (int)rint_(s, lo, hi), a);
    rand_digits(s, (int)rint_(s, lo, hi), b);
    st_buf_printf(canon, "add %s %s", a, b);
    st_buf_printf(prompt, g_add_prompts[rint_(s, 0, 4)], a, b);
    add_trace(a, b, why, ans);
    return ans->oom ? -1 : 0;
}

/* ------------------------------------------------------------ code */

/* Single tokens of the shipped tokenizer (with a leading space), so that an
 * answer is one recall, not a spelling. Fixed forever: it is the codebook. */
static const char *const g_code_words[] = {
    "river", "stone", "horse", "garden", "silver", "window", "bread", "forest", "island", "mountain",
    "valley", "ocean", "summer", "winter", "morning", "evening", "letter", "money", "music", "paper",
    "table", "night", "water", "field", "fire", "gold", "iron", "king", "queen", "ship",
    "sword", "tree", "wall", "wind", "wood", "bird", "book", "church", "city", "cloud",
    "corn", "door", "dream", "earth", "face", "farm", "father", "fish", "flag", "friend",
    "fruit", "gift", "girl", "grass", "hill", "home", "honey", "house", "lamp", "land",
    "lion", "moon", "mother", "mouth", "oil", "pen", "plant", "rain", "ring", "road",
    "rock", "rose", "salt", "sand", "sea", "seed", "sheep", "sky", "snow", "song",
    "star", "storm", "street", "sun", "tail", "tea", "thunder", "tower", "train", "wine",
    "world", "army", "ball", "band", "bank", "bear", "bed", "bell", "boat", "boy",
    "camp", "cat", "coin", "crown", "cup", "dress", "gate", "goat", "hat", "heart",
    "horn", "key", "milk", "net", "path", "pot", "sail", "school", "shield", "skin",
};
#define N_CODE_WORDS ((int)(sizeof g_code_words / sizeof g_code_words[0]))

const char *st_codebook_word(int n) {
    if (n < 0 || n >= ST_CODEBOOK_N) return NULL;
    uint64_t s = 0xc0deb00c00000000ull ^ (uint64_t)n;
    return g_code_words[st_splitmix64(&s) % (uint64_t)N_CODE_WORDS];
}

st_status st_codebook_fact(int n, char *buf, size_t cap) {
    const char *w = st_codebook_word(n);
    if (!w) return st_err(ST_ERR_RANGE, "codebook: %d is outside 0..%d", n, ST_CODEBOOK_N - 1);
    int k = snprintf(buf, cap, "The code word for %d is %s.", n, w);
    return k < 0 || (size_t)k >= cap ? st_err(ST_ERR_ARG, "codebook: buffer too small") : ST_OK;
}

static const char *g_code_prompts[] = {
    "What is the code word for %s + %s?", "Give the code word of %s + %s.", "Find the code word for the sum of %s and %s.",
};
static int gen_code(uint64_t *s, st_buf *canon, st_buf *prompt, st_buf *why, st_buf *ans) {
    char a[16], b[16];
    rand_digits(s, (int)rint_(s, 2, 3), a);
    rand_digits(s, (int)rint_(s, 2, 3), b);
    int sum = atoi(a) + atoi(b);
    if (sum >= ST_CODEBOOK_N) return 1; /* outside the codebook: draw again */
    st_buf_printf(canon, "code %s %s", a, b);
    st_buf_printf(prompt, g_code_prompts[rint_(s, 0, 2)], a, b);
    st_buf digits = {0};
    add_trace(a, b, why, &digits);
    free(digits.p);
    char fact[96];
    if (st_codebook_fact(sum, fact, sizeof fact)) return -1;
    st_buf_printf(ans, "%s", fact);
    return digits.oom || ans->oom ? -1 : 0;
}

/* ------------------------------------------------------------ sort */

static int gen_sort(uint64_t *s, st_buf *canon, st_buf *prompt, st_buf *why, st_buf *ans) {
    int k = (int)rint_(s, 3, 6), desc = (int)rint_(s, 0, 3) == 0; /* a quarter descending */
    int v[8];
    for (int i = 0; i < k; i++) {
        int ok;
        do { /* distinct values, mixed sizes */
            int dig = (int)rint_(s, 1, 3);
            v[i] = (int)rint_(s, dig == 1 ? 0 : dig == 2 ? 10 : 100, dig == 1 ? 9 : dig == 2 ? 99 : 999);
            ok = 1;
            for (int j = 0; j < i; j++) if (v[j] == v[i]) ok = 0;
        } while (!ok);
    }
    st_buf list = {0};
    for (int i = 0; i < k; i++) st_buf_printf(&list, "%s%d", i ? ", " : "", v[i]);
    if (list.oom) return -1;
    st_buf_printf(canon, "sort %s %s", desc ? "desc" : "asc", list.p);
    const char *order = desc ? "from largest to smallest" : "from smallest to largest";
    switch (rint_(s, 0, 2)) {
    case 0: st_buf_printf(prompt, "Sort these numbers %s: %s.", order, list.p); break;
    case 1: st_buf_printf(prompt, "Put %s in order %s.", list.p, order); break;
    default: st_buf_printf(prompt, "Arrange the numbers %s %s.", list.p, order); break;
    }
    st_buf_printf(why, "Take the %s of what is left, each time.\n", desc ? "largest" : "smallest");
    free(list.p);
    int rem[8], nr = k, out[8];
    memcpy(rem, v, sizeof rem);
    for (int step = 0; step < k; step++) {
        int best = 0;
        for (int i = 1; i < nr; i++) if (desc ? rem[i] > rem[best] : rem[i] < rem[best]) best = i;
        st_buf_printf(why, "left:");
        for (int i = 0; i < nr; i++) st_buf_printf(why, "%s %d", i ? "," : "", rem[i]);
        st_buf_printf(why, "; %s %d\n", desc ? "largest" : "smallest", rem[best]);
        out[step] = rem[best];
        memmove(rem + best, rem + best + 1, (size_t)(nr - best - 1) * sizeof *rem);
        nr--;
    }
    for (int i = 0; i < k; i++) st_buf_printf(ans, "%s%d", i ? ", " : "", out[i]);
    if (ans->oom) return -1;
    st_buf_printf(why, "Sorted: %s", ans->p);
    return 0;
}

/* ------------------------------------------------------------ compare */

static int gen_compare(uint64_t *s, const st_task_opts *o, st_buf *canon, st_buf *prompt, st_buf *why, st_buf *ans) {
    int lo = o->min_digits ? o->min_digits : 3, hi = o->max_digits ? o->max_digits : 8;
    int larger = (int)rint_(s, 0, 1); /* ask for the larger (1) or the smaller (0) */
    char a[16], b[16];
    int d = (int)rint_(s, lo, hi);
    rand_digits(s, d, a);
    if (rint_(s, 0, 4) == 0 && (d > lo || d < hi)) { /* a fifth differ in length */
        int e;
        do e = (int)rint_(s, lo, hi); while (e == d);
        rand_digits(s, e, b);
    } else { /* same length, shared prefix, first difference at j */
        memcpy(b, a, (size_t)d + 1);
        int j = (int)rint_(s, 0, d - 1);
        do b[j] = (char)('0' + rint_(s, j == 0 && d > 1 ? 1 : 0, 9)); while (b[j] == a[j]);
        for (int i = j + 1; i < d; i++) b[i] = (char)('0' + rint_(s, 0, 9));
    }
    st_buf_printf(canon, "compare %s %s %s", larger ? "larger" : "smaller", a, b);
    const char *w = larger ? "larger" : "smaller";
    switch (rint_(s, 0, 2)) {
    case 0: st_buf_printf(prompt, "Which is %s: %s or %s?", w, a, b); break;
    case 1: st_buf_printf(prompt, "Which number is %s, %s or %s?", w, a, b); break;
    default: st_buf_printf(prompt, "Of %s and %s, which is %s?", a, b, w); break;
    }
    int la = (int)strlen(a), lb = (int)strlen(b), cmp = 0; /* sign of a - b */
    st_buf_printf(why, "Compare %s and %s.\n", a, b);
    if (la != lb) {
        cmp = la > lb ? 1 : -1;
        st_buf_printf(why, "%s has %d digits and %s has %d digits, so %s is larger.\n", a, la, b, lb, cmp > 0 ? a : b);
    } else {
        st_buf_printf(why, "Both have %d digits. Compare from the left.\n", la);
        for (int i = 0; i < la; i++) {
            if (a[i] == b[i]) { st_buf_printf(why, "digit %d: %c and %c, same\n", i + 1, a[i], b[i]); continue; }
            cmp = a[i] > b[i] ? 1 : -1;
            st_buf_printf(why, "digit %d: %c and %c, %c is larger, so %s is larger.\n", i + 1, a[i], b[i],
                          cmp > 0 ? a[i] : b[i], cmp > 0 ? a : b);
            break;
        }
    }
    if (cmp == 0) return 1; /* equal: cannot happen by construction, retried anyway */
    const char *res = (cmp > 0) == larger ? a : b;
    st_buf_printf(ans, "%s", res);
    st_buf_printf(why, "The %s is %s.", w, res);
    return 0;
}

/* ------------------------------------------------------------ driver */

st_status st_task_gen(const st_task_opts *o, uint64_t index, st_task *out) {
    if (!o || !out) return st_err(ST_ERR_ARG, "st_task_gen: NULL argument");
    memset(out, 0, sizeof *out);
    if ((unsigned)o->kind > ST_TASK_CODE) return st_err(ST_ERR_ARG, "tasks: unknown kind %d", (int)o->kind);
    if (o->min_digits < 0 || o->max_digits < 0 || o->max_digits > 9 ||
        (o->min_digits && o->max_digits && o->min_digits > o->max_digits) ||
        (!!o->min_digits != !!o->max_digits))
        return st_err(ST_ERR_ARG, "tasks: digits must be given as 1 <= min <= max <= 9");
    for (uint64_t attempt = 0; attempt < 100000; attempt++) {
        /* per-item state: the stream parameters, the index and the attempt */
        uint64_t s = o->seed ^ 0x5ca1ab1e00000000ull;
        uint64_t mixv[4] = {(uint64_t)o->kind, (uint64_t)o->eval_split, index, attempt};
        for (int i = 0; i < 4; i++) { s ^= mixv[i] + 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1); st_splitmix64(&s); }
        st_task_kind k = o->kind == ST_TASK_MIX ? (st_task_kind)rint_(&s, 0, 2) : o->kind;
        st_buf canon = {0}, prompt = {0}, why = {0}, ans = {0};
        int r = k == ST_TASK_ADD ? gen_add(&s, o, &canon, &prompt, &why, &ans)
              : k == ST_TASK_SORT ? gen_sort(&s, &canon, &prompt, &why, &ans)
              : k == ST_TASK_CODE ? gen_code(&s, &canon, &prompt, &why, &ans)
                                  : gen_compare(&s, o, &canon, &prompt, &why, &ans);
        if (r < 0 || canon.oom || prompt.oom || why.oom || ans.oom) {
            free(canon.p); free(prompt.p); free(why.p); free(ans.p);
            return st_err(ST_ERR_NOMEM, "tasks: out of memory");
        }
        uint64_t key = r == 0 ? task_key(canon.p) : 0;
        free(canon.p);
        if (r != 0 || st_task_key_is_eval(key) != !!o->eval_split) { /* the other split's problem: draw again */
            free(prompt.p); free(why.p); free(ans.p);
            continue;
        }
        out->kind = k;
        out->key = key;
        snprintf(out->id, sizeof out->id, "%s-%016llx", st_task_kind_name(k), (unsigned long long)key);
        out->prompt = prompt.p;
        out->reasoning = why.p;
        out->answer = ans.p;
        return ST_OK;
    }
    return st_err(ST_ERR_RANGE, "tasks: no problem found for this split (digit range too small?)");
}

st_status st_task_assistant(const st_task *t, int think, char **out) {
    if (!t || !out || !t->answer) return st_err(ST_ERR_ARG, "st_task_assistant: bad argument");
    st_buf b = {0};
    if (think) st_buf_printf(&b, "<think>\n%s\n</think>\n%s", t->reasoning ? t->reasoning : "", t->answer);
    else st_buf_printf(&b, "<think>\n</think>\n%s", t->answer);
    if (b.oom) { free(b.p); return st_err(ST_ERR_NOMEM, "tasks: out of memory"); }
    *out = b.p;
    return ST_OK;
}

/* ------------------------------------------------------------ grading */

/* The last integer in s (with sign), as a string in buf; 0 if none. */
static int last_number(const char *s, size_t n, char *buf, size_t cap) {
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i])) continue;
        size_t b = i, e = i;
        while (e < n && isdigit((unsigned char)s[e])) e++;
        if (b > 0 && s[b - 1] == '-') b--;
        size_t len = e - b < cap - 1 ? e - b : cap - 1;
        memcpy(buf, s + b, len);
        buf[len] = 0;
        found = 1;
        i = e;
    }
    return found;
}

static int is_number(const char *s) {
    if (*s == '-') s++;
    if (!*s) return 0;
    for (; *s; s++) if (!isdigit((unsigned char)*s)) return 0;
    return 1;
}

int st_task_answer_correct(const char *reply, size_t n, const char *want) {
    if (is_number(want)) {
        char got[64];
        if (!last_number(reply, n, got, sizeof got)) return 0;
        const char *a = got, *b = want;
        while (*a == '0' && a[1]) a++;
        while (*b == '0' && b[1]) b++;
        return !strcmp(a, b);
    }
    while (n && isspace((unsigned char)*reply)) { reply++; n--; }
    while (n && isspace((unsigned char)reply[n - 1])) n--;
    return n == strlen(want) && !strncasecmp(reply, want, n);
}

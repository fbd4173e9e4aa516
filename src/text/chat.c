/*
 * chat.c — the Nemotron 3 Nano chat template (ChatML with <think> blocks),
 * rendered in C to the same string the model's Jinja template produces with
 * its defaults (truncate_history_thinking = true, no tool definitions).
 *
 *   <|im_start|>system\n{system}<|im_end|>\n          always, even when empty
 *   <|im_start|>user\n{content}<|im_end|>\n
 *   <|im_start|>assistant\n{content}<|im_end|>\n      see below
 *   <|im_start|>user\n<tool_response>\n{content}\n</tool_response>\n...<|im_end|>\n
 *   <|im_start|>assistant\n<think>\n                  generation prompt, thinking on
 *   <|im_start|>assistant\n<think></think>            generation prompt, thinking off
 *
 * Assistant content: a non-blank reasoning_content becomes
 * "<think>\n{reasoning}\n</think>\n{content}"; content without think tags gets
 * "<think></think>" prepended. Turns before the last user turn keep only
 * "<think></think>" + the text after the last "</think>"; the result is
 * trimmed (Jinja's trim: Unicode whitespace at both ends).
 *
 * The special tokens are written as text; st_tokenize with parse_special maps
 * them to the tokenizer's own ids.
 */
#include "starling.h"
#include "util/buf.h"
#include "util/util.h"

#include <stdlib.h>
#include <string.h>

/* Python str.isspace() for the code point starting at s (what Jinja's trim
 * strips); returns its byte length, or 0 if it is not whitespace. */
static int space_at(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if ((c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20)) return 1;
    if (c == 0xC2 && n >= 2 && (s[1] == 0x85 || s[1] == 0xA0)) return 2;
    if (n < 3) return 0;
    unsigned cp = ((c & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu);
    if ((c & 0xF0) != 0xE0) return 0;
    if (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
        cp == 0x202F || cp == 0x205F || cp == 0x3000)
        return 3;
    return 0;
}
/* Bounds of s with leading and trailing whitespace removed. */
static void trim(const char *s, size_t *b, size_t *e) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, n = strlen(s), l;
    while (i < n && (l = (size_t)space_at(u + i, n - i))) i += l;
    size_t j = n;
    while (j > i) {
        size_t q = j - 1; /* start of the last code point */
        while (q > i && (u[q] & 0xC0) == 0x80) q--;
        if ((size_t)space_at(u + q, j - q) != j - q) break;
        j = q;
    }
    *b = i; *e = j;
}
static int blank(const char *s) {
    size_t b, e;
    trim(s, &b, &e);
    return b == e;
}
static const char *last_strstr(const char *s, const char *needle) {
    const char *r = NULL;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle)) r = p;
    return r;
}

static int role_is(const st_chat_msg *m, const char *r) { return strcmp(m->role, r) == 0; }

static void render_assistant(st_buf *o, const st_chat_msg *m, int truncate) {
    const char *content = m->content ? m->content : "";
    st_buf c = {0};
    if (m->reasoning_content && !blank(m->reasoning_content)) {
        st_buf_puts(&c, "<think>\n");
        st_buf_puts(&c, m->reasoning_content);
        st_buf_puts(&c, "\n</think>\n");
        st_buf_puts(&c, content);
    } else {
        if (!strstr(content, "<think>") && !strstr(content, "</think>")) st_buf_puts(&c, "<think></think>");
        st_buf_puts(&c, content);
    }
    if (c.oom) { o->oom = 1; free(c.p); return; }
    const char *body = c.p ? c.p : "";
    st_buf t = {0};
    if (truncate && strstr(body, "<think>") && strstr(body, "</think>")) {
        /* reasoning of earlier turns is dropped: keep what follows the last </think> */
        st_buf_puts(&t, "<think></think>");
        st_buf_puts(&t, last_strstr(body, "</think>") + strlen("</think>"));
        if (t.oom) { o->oom = 1; free(c.p); free(t.p); return; }
        body = t.p;
    }
    size_t b, e;
    trim(body, &b, &e);
    st_buf_puts(o, "<|im_start|>assistant\n");
    st_buf_put(o, body + b, e - b);
    st_buf_puts(o, "<|im_end|>\n");
    free(c.p);
    free(t.p);
}

st_status st_chat_render(const st_chat_msg *msgs, int n, int add_generation_prompt,
                         int enable_thinking, char **out) {
    if (!out || n < 0 || (n > 0 && !msgs)) return st_err(ST_ERR_ARG, "st_chat_render: bad argument");
    *out = NULL;
    for (int i = 0; i < n; i++)
        if (!msgs[i].role) return st_err(ST_ERR_ARG, "st_chat_render: message %d has no role", i);

    st_buf o = {0};
    int first = 0;
    const char *system = "";
    if (n > 0 && role_is(&msgs[0], "system")) {
        system = msgs[0].content ? msgs[0].content : "";
        first = 1;
    }
    int last_user = -1;
    for (int i = first; i < n; i++)
        if (role_is(&msgs[i], "user")) last_user = i;

    st_buf_puts(&o, "<|im_start|>system\n");
    st_buf_puts(&o, system);
    st_buf_puts(&o, "<|im_end|>\n");
    for (int i = first; i < n; i++) {
        const st_chat_msg *m = &msgs[i];
        const char *content = m->content ? m->content : "";
        if (role_is(m, "assistant")) {
            render_assistant(&o, m, i < last_user);
        } else if (role_is(m, "tool")) {
            /* consecutive tool results share one user turn */
            if (i == first || !role_is(&msgs[i - 1], "tool")) st_buf_puts(&o, "<|im_start|>user\n");
            st_buf_puts(&o, "<tool_response>\n");
            st_buf_puts(&o, content);
            st_buf_puts(&o, "\n</tool_response>\n");
            if (i == n - 1 || !role_is(&msgs[i + 1], "tool")) st_buf_puts(&o, "<|im_end|>\n");
        } else { /* user, a later system message, or any other role */
            st_buf_puts(&o, "<|im_start|>");
            st_buf_puts(&o, m->role);
            st_buf_puts(&o, "\n");
            st_buf_puts(&o, content);
            st_buf_puts(&o, "<|im_end|>\n");
        }
    }
    if (add_generation_prompt)
        st_buf_puts(&o, enable_thinking ? "<|im_start|>assistant\n<think>\n" : "<|im_start|>assistant\n<think></think>");
    if (o.oom) { free(o.p); return st_err(ST_ERR_NOMEM, "st_chat_render: out of memory"); }
    *out = o.p;
    return ST_OK;
}

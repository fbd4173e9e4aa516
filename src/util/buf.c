/*
 * buf.c — see buf.h. Capacity doubles from 256 bytes, so n appends cost
 * O(total bytes) amortised.
 */
#include "util/buf.h"
#include "util/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int st_buf_reserve(st_buf *b, size_t extra) {
    if (extra >= (size_t)-1 / 2 - b->n) {
        b->oom = 1;
        st_err(ST_ERR_NOMEM, "buffer of %zu + %zu bytes is too large", b->n, extra);
        return -1;
    }
    if (b->n + extra < b->cap) return 0;
    size_t c = b->cap ? b->cap : 256;
    while (c <= b->n + extra) c *= 2;
    char *q = st_realloc(b->p, c);
    if (!q) { b->oom = 1; return -1; }
    b->p = q;
    b->cap = c;
    return 0;
}

int st_buf_put(st_buf *b, const void *s, size_t n) {
    if (st_buf_reserve(b, n)) return -1;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

int st_buf_puts(st_buf *b, const char *s) { return st_buf_put(b, s, strlen(s)); }

int st_buf_putc(st_buf *b, char c) { return st_buf_put(b, &c, 1); }

int st_buf_printf(st_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
    va_end(ap);
    if (k < 0) { b->oom = 1; return -1; }
    if (b->p && b->n + (size_t)k < b->cap) { b->n += (size_t)k; return 0; }
    if (st_buf_reserve(b, (size_t)k)) return -1;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
    return 0;
}

void st_buf_free(st_buf *b) {
    free(b->p);
    *b = (st_buf){0};
}

int st_ivec_push(st_ivec *v, int32_t x) {
    if (v->n == v->cap) {
        size_t c = v->cap ? v->cap * 2 : 8;
        int32_t *q = st_realloc(v->p, c * sizeof *q);
        if (!q) return -1;
        v->p = q;
        v->cap = c;
    }
    v->p[v->n++] = x;
    return 0;
}

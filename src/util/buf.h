/*
 * buf.h — st_buf, the one growable byte buffer: JSON and chat text being
 * rendered, generated text and server event queues, tokenizer scratch.
 *
 *   st_buf b = {0};
 *   st_buf_puts(&b, "{\"n\": ");
 *   st_buf_printf(&b, "%d}", n);
 *   if (b.oom) ...;          // one check at the end is enough
 *   use(b.p, b.n);           // b.p is NUL-terminated after any append
 *   st_buf_free(&b);
 *
 * A failed growth drops that append and sets oom, which stays set: a writer
 * may append freely and check oom once at the end (the text is then
 * incomplete and must not be used), or check each call's -1. Later appends
 * still try, so a buffer reused after a failure (n = 0, the memory stays)
 * works again once memory is back.
 *
 * st_ivec is its int32 sibling (token ids, word lists): st_ivec v = {0};
 * st_ivec_push(&v, id) (0, or -1 with v unchanged); free(v.p).
 */
#ifndef ST_UTIL_BUF_H
#define ST_UTIL_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *p;        /* [cap] bytes, p[n] == 0 once anything was appended */
    size_t n, cap;
    int oom;        /* a growth failed: the content is incomplete */
} st_buf;

/* Room for `extra` more bytes and a NUL after them (cap > n + extra), so a
 * caller may write into p + n directly and then advance n. 0, or -1 with oom
 * set. */
int st_buf_reserve(st_buf *b, size_t extra);
/* Append n bytes (then NUL). 0, or -1 with oom set. */
int st_buf_put(st_buf *b, const void *s, size_t n);
int st_buf_puts(st_buf *b, const char *s);
int st_buf_putc(st_buf *b, char c);
/* Append printf-formatted text. 0, or -1 with oom set. */
int st_buf_printf(st_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Free the memory; b is empty (and usable) again. */
void st_buf_free(st_buf *b);

typedef struct {
    int32_t *p;     /* [cap] */
    size_t n, cap;
} st_ivec;
/* Append x (capacity doubles from 8). 0, or -1 (out of memory, v unchanged). */
int st_ivec_push(st_ivec *v, int32_t x);

#endif

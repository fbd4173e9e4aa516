/*
 * server.h — the OpenAI-compatible HTTP server (libmicrohttpd, one thread per
 * connection; model compute on the scheduler thread, see sched.h).
 *
 *   GET  /health                 {"status":"ok"}
 *   GET  /metrics                Prometheus text format
 *   GET  /v1/models              one id per budget + the default
 *   POST /v1/chat/completions    chat (thinking on unless disabled), SSE or not
 *   POST /v1/completions         plain text prompt, SSE or not
 *
 * Model ids: "starling" is the checkpoint's default budget; "starling:NAME"
 * is a named budget ("starling:full" always exists). Per-request elastic
 * fields: thinking_budget, think_grace, think_message, think_with,
 * answer_with (budget names), switch_mode ("exact" | "transplant"),
 * enable_thinking (also via chat_template_kwargs).
 */
#ifndef ST_SERVER_H
#define ST_SERVER_H

#include "starling.h"

typedef struct {
    const char *host;        /* IPv4 address to bind ("127.0.0.1")           */
    int port;                /* 0: the OS picks (st_server_port tells)       */
    int parallel;            /* sequences stepped at once (8)                */
    int queue;               /* waiting requests before 429 (32)             */
    size_t max_body;         /* bytes of a request body before 413 (1 MiB)   */
    int max_prompt;          /* prompt tokens (0: the context)               */
    int ctx;                 /* per-sequence context (0: the model's)        */
    int max_tokens;          /* default max_tokens for chat (1024)           */
    double timeout_s;        /* per request, queueing included (300)         */
    const char *api_key;     /* NULL: no authentication                      */
    size_t cache_bytes;      /* prompt cache (256 MiB; 0 = off)              */
    int cache_interval;      /* snapshot every N prompt tokens (256)         */
    int prefill_chunk;       /* prompt tokens per pass, so running streams keep
                                decoding while a long prompt is read (256)   */
    const char *draft;       /* default drafter of greedy requests: a budget
                                name or "ngram" (NULL: none)                  */
    int draft_n;             /* tokens drafted per step at most (4)          */
    void (*log)(const char *line); /* request log lines, or NULL            */
} st_server_opts;

typedef struct st_server st_server;

st_server_opts st_server_default_params(void);
/* Load nothing: m and tok stay the caller's (they must outlive the server). */
st_status st_server_start(const st_model *m, const st_tokenizer *tok, const st_server_opts *o, st_server **out);
int st_server_port(const st_server *s);
/* Stop accepting, end running and queued requests, join every thread. */
void st_server_stop(st_server *s);

#endif

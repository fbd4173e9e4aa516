/*
 * server.c — HTTP layer of `starling serve`: libmicrohttpd does the HTTP,
 * jansson the JSON; this file maps OpenAI-style requests onto generation
 * requests (sched.h) and their results back onto OpenAI-style responses,
 * streamed as server-sent events or whole. Errors are OpenAI error objects:
 *   {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}
 */
#include "server/server.h"
#include "server/sched.h"
#include "util/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <time.h>

#define N_STATUS 600

typedef struct {
    char *id;                 /* "starling" or "starling:NAME" */
    st_budget *b;
} model_id;

struct st_server {
    const st_model *m;
    const st_tokenizer *tok;
    st_server_opts o;
    char *host, *api_key;
    struct MHD_Daemon *d;
    int port;
    st_sched *sched;
    st_pcache *cache;
    const st_budget *draft_b; /* --draft: the default drafter (or draft_ngram) */
    int draft_ngram;
    model_id *ids;
    int n_ids;
    atomic_int stopping;
    atomic_int open_reqs;    /* requests between their first callback and completion */
    atomic_ulong next_id;
    atomic_ulong status_count[N_STATUS];
    double t_start;          /* st_time() at start (uptime)   */
    long created;            /* wall clock at start (model lists) */
    int ctx;
};

st_server_opts st_server_default_params(void) {
    st_server_opts o = {0};
    o.host = "127.0.0.1";
    o.parallel = 8;
    o.queue = 32;
    o.max_body = 1 << 20;
    o.max_tokens = 1024;
    o.timeout_s = 300;
    o.cache_bytes = (size_t)256 << 20;
    o.cache_interval = 256;
    o.prefill_chunk = 256;
    o.draft_n = 4;
    return o;
}

/* The chat page, embedded at build time (Makefile: build/gen/ui_chat.c). */
extern const char st_ui_chat_html[];
extern const unsigned st_ui_chat_html_len;

/* ------------------------------------------------------------ responses */

/* What a response that could not be built in memory says instead. */
static const char k_oom_json[] =
    "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";

static enum MHD_Result send_text(st_server *S, struct MHD_Connection *c, unsigned status, const char *type,
                                 char *body /* malloc'd, taken; NULL: out of memory, answer 500 */) {
    if (!body) status = 500, type = "application/json";
    struct MHD_Response *r = body ? MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE)
                                  : MHD_create_response_from_buffer(sizeof k_oom_json - 1, (void *)k_oom_json,
                                                                    MHD_RESPMEM_PERSISTENT);
    if (!r) { free(body); return MHD_NO; }
    MHD_add_response_header(r, "Content-Type", type);
    if (status == 429) MHD_add_response_header(r, "Retry-After", "1");
    if (status == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    if (status < N_STATUS) atomic_fetch_add(&S->status_count[status], 1);
    return ret;
}

static enum MHD_Result send_json(st_server *S, struct MHD_Connection *c, unsigned status, json_t *j) {
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return send_text(S, c, status, "application/json", s);
}

typedef struct {
    unsigned status;
    char msg[600];
    const char *type, *param, *code;
    char param_buf[128];     /* param when it names a request key */
} apierr;

static int fail(apierr *e, unsigned status, const char *type, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static int fail(apierr *e, unsigned status, const char *type, const char *param, const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->status = status;
    e->type = type;
    e->param = param;
    e->code = code;
    return -1;
}
#define BADREQ(e, param, code, ...) fail(e, 400, "invalid_request_error", param, code, __VA_ARGS__)

static json_t *err_obj(const apierr *e) {
    json_t *in = json_object();
    json_object_set_new(in, "message", json_string(e->msg));
    json_object_set_new(in, "type", json_string(e->type));
    json_object_set_new(in, "param", e->param ? json_string(e->param) : json_null());
    json_object_set_new(in, "code", e->code ? json_string(e->code) : json_null());
    json_t *o = json_object();
    json_object_set_new(o, "error", in);
    return o;
}

static enum MHD_Result send_err(st_server *S, struct MHD_Connection *c, const apierr *e) {
    return send_json(S, c, e->status, err_obj(e));
}

/* ------------------------------------------------------------ models */

static const model_id *find_model(const st_server *S, const char *id) {
    for (int i = 0; i < S->n_ids; i++)
        if (!strcmp(S->ids[i].id, id)) return &S->ids[i];
    return NULL;
}

/* A budget by its bare name ("S", "full") or model id ("starling:S"). */
static const st_budget *find_budget(const st_server *S, const char *name) {
    const model_id *mi = find_model(S, name);
    if (mi) return mi->b;
    char id[200];
    snprintf(id, sizeof id, "starling:%s", name);
    mi = find_model(S, id);
    return mi ? mi->b : NULL;
}

static json_t *models_json(const st_server *S, long created) {
    json_t *data = json_array();
    for (int i = 0; i < S->n_ids; i++) {
        st_budget_stats bs; /* sizes of each nested budget, for clients such as the chat page's chart */
        st_budget_stats_get(S->ids[i].b, &bs);
        json_array_append_new(data, json_pack("{s:s,s:s,s:I,s:s,s:s,s:{s:f,s:f,s:f}}", "id", S->ids[i].id, "object",
                                              "model", "created", (json_int_t)created, "owned_by", "starling", "budget",
                                              st_budget_name(S->ids[i].b), "starling", "total_params", bs.total_params,
                                              "active_params", bs.active_params, "active_bytes", bs.active_bytes));
    }
    return json_pack("{s:s,s:o}", "object", "list", "data", data);
}

/* ------------------------------------------------------------ request parsing */

static int is_int(json_t *v, long lo, long hi, long *out) {
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x < lo || x > hi) return 0;
        *out = (long)x;
        return 1;
    }
    if (json_is_real(v)) { /* 5.0 is accepted as 5, as JS clients send it */
        double x = json_real_value(v);
        if (x != floor(x) || x < (double)lo || x > (double)hi) return 0;
        *out = (long)x;
        return 1;
    }
    return 0;
}

static int is_num(json_t *v, double lo, double hi, double *out) {
    if (!json_is_number(v)) return 0;
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi)) return 0;
    *out = x;
    return 1;
}

static const char *k_chat[] = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
                               "top_k", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty", "n",
                               "stream", "stream_options", "stop", "seed", "user", "logit_bias", "thinking_budget",
                               "think_grace", "think_message", "think_with", "answer_with", "switch_mode",
                               "enable_thinking", "chat_template_kwargs", "speculative", NULL};
static const char *k_cmpl[] = {"model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "min_p",
                               "repetition_penalty", "presence_penalty", "frequency_penalty", "n", "stream",
                               "stream_options", "stop", "seed", "user", "logit_bias", "echo", "suffix", "logprobs",
                               "best_of", "thinking_budget", "think_grace", "think_message", "think_with",
                               "answer_with", "switch_mode", "speculative", NULL};

typedef struct {
    int chat, stream, include_usage, thinking;
    char model[160];
    const st_budget *think_b, *answer_b;
    int spec_explicit;        /* the request asked for speculative decoding */
} reqinfo;

static int set_str(char **dst, const char *s) {
    *dst = st_strdup(s);
    return *dst ? 0 : -1;
}

/* Message content: a string, null, or an array of {"type":"text","text":...}. */
/* out may come back with oom set (the caller answers 500). */
static int content_text(json_t *v, st_buf *out, apierr *e) {
    if (json_is_null(v) || !v) return 0;
    if (json_is_string(v)) { st_buf_put(out, json_string_value(v), json_string_length(v)); return 0; }
    if (!json_is_array(v)) return BADREQ(e, "messages", "invalid_type", "message content must be a string or an array of text parts");
    size_t i;
    json_t *p;
    json_array_foreach(v, i, p) {
        json_t *ty = json_object_get(p, "type"), *tx = json_object_get(p, "text");
        if (!json_is_string(ty) || strcmp(json_string_value(ty), "text") || !json_is_string(tx))
            return BADREQ(e, "messages", "invalid_type", "only text content parts are supported");
        st_buf_put(out, json_string_value(tx), json_string_length(tx));
    }
    return 0;
}

static int render_chat(json_t *msgs, int thinking, char **out, apierr *e) {
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return BADREQ(e, "messages", "invalid_value", "'messages' must be a non-empty array");
    size_t n = json_array_size(msgs);
    st_chat_msg *cm = st_calloc(n, sizeof *cm);
    st_buf *txt = st_calloc(2 * n, sizeof *txt);
    int rc = -1;
    if (!cm || !txt) { fail(e, 500, "server_error", NULL, NULL, "out of memory"); goto out; }
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(msgs, i);
        json_t *role = json_object_get(m, "role");
        if (!json_is_object(m) || !json_is_string(role)) {
            BADREQ(e, "messages", "invalid_value", "messages[%zu] needs a string 'role'", i);
            goto out;
        }
        const char *r = json_string_value(role);
        if (!strcmp(r, "developer")) r = "system";
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant") && strcmp(r, "tool")) {
            BADREQ(e, "messages", "invalid_value", "messages[%zu]: unknown role '%s'", i, r);
            goto out;
        }
        if (content_text(json_object_get(m, "content"), &txt[2 * i], e)) goto out;
        json_t *rc_ = json_object_get(m, "reasoning_content");
        if (json_is_string(rc_)) st_buf_put(&txt[2 * i + 1], json_string_value(rc_), json_string_length(rc_));
        if (txt[2 * i].oom || txt[2 * i + 1].oom) { fail(e, 500, "server_error", NULL, NULL, "out of memory"); goto out; }
        cm[i].role = r;
        cm[i].content = txt[2 * i].p ? txt[2 * i].p : "";
        cm[i].reasoning_content = txt[2 * i + 1].p;
    }
    st_status st = st_chat_render(cm, (int)n, 1, thinking, out);
    if (st == ST_ERR_NOMEM) {
        fail(e, 500, "server_error", NULL, NULL, "%s", st_last_error());
        goto out;
    }
    if (st) {
        BADREQ(e, "messages", "invalid_value", "%s", st_last_error());
        goto out;
    }
    rc = 0;
out:
    for (size_t i = 0; txt && i < 2 * n; i++) st_buf_free(&txt[i]);
    free(txt);
    free(cm);
    return rc;
}

/* Fill r (prompt, generation params) and info from a JSON body. */
static int parse_request(st_server *S, const char *body, size_t len, int chat, st_sreq *r, reqinfo *ri, apierr *e) {
    json_error_t je;
    json_t *j = json_loadb(body, len, 0, &je);
    if (!j && json_error_code(&je) == json_error_out_of_memory)
        return fail(e, 500, "server_error", NULL, NULL, "out of memory parsing the request");
    if (!j) return BADREQ(e, NULL, "invalid_json", "We could not parse the JSON body of your request: %s (line %d, column %d)", je.text, je.line, je.column);
    int rc = -1;
    char *text = NULL;
    if (!json_is_object(j)) { BADREQ(e, NULL, "invalid_json", "the request body must be a JSON object"); goto out; }
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v) {
        const char **k = chat ? k_chat : k_cmpl;
        while (*k && strcmp(*k, key)) k++;
        if (!*k) {
            fail(e, 400, "invalid_request_error", NULL, "unknown_parameter", "Unrecognized request argument supplied: %s", key);
            snprintf(e->param_buf, sizeof e->param_buf, "%s", key);
            e->param = e->param_buf;
            goto out;
        }
    }
    memset(ri, 0, sizeof *ri);
    ri->chat = chat;
    /* model -> answer budget */
    v = json_object_get(j, "model");
    const char *model = "starling";
    if (v && !json_is_null(v)) {
        if (!json_is_string(v)) { BADREQ(e, "model", "invalid_type", "'model' must be a string"); goto out; }
        model = json_string_value(v);
    }
    const model_id *mi = find_model(S, model);
    if (!mi) {
        fail(e, 404, "invalid_request_error", "model", "model_not_found",
             "The model '%s' does not exist (GET /v1/models lists them)", model);
        goto out;
    }
    snprintf(ri->model, sizeof ri->model, "%s", model);
    ri->answer_b = mi->b;
    st_gen_params *p = &r->gp;
    *p = st_gen_default_params();
    if (S->o.prefill_chunk > 0) p->prefill_chunk = S->o.prefill_chunk;
    p->sampling.temperature = 1.0f;
    p->sampling.top_p = 1.0f;
    p->sampling.top_k = 0;
    p->sampling.min_p = 0.0f;
    p->sampling.seed = ((uint64_t)time(NULL) << 20) ^ (uint64_t)atomic_fetch_add(&S->next_id, 0) * 0x9e3779b97f4a7c15ull ^
                       (uint64_t)(uintptr_t)r;
    long iv;
    double dv;
    int max_set = 0;
    long max_tokens = chat ? S->o.max_tokens : 16;
    if ((v = json_object_get(j, "max_tokens")) || (v = json_object_get(j, "max_completion_tokens"))) {
        if (!json_is_null(v)) {
            if (!is_int(v, 1, 1 << 24, &iv)) { BADREQ(e, "max_tokens", "invalid_value", "'max_tokens' must be an integer >= 1"); goto out; }
            max_tokens = iv;
            max_set = 1;
        }
    }
    if ((v = json_object_get(j, "temperature")) && !json_is_null(v)) {
        if (!is_num(v, 0, 2, &dv)) { BADREQ(e, "temperature", "invalid_value", "'temperature' must be a number in [0, 2]"); goto out; }
        p->sampling.temperature = (float)dv;
    }
    if ((v = json_object_get(j, "top_p")) && !json_is_null(v)) {
        if (!is_num(v, 0, 1, &dv) || dv <= 0) { BADREQ(e, "top_p", "invalid_value", "'top_p' must be a number in (0, 1]"); goto out; }
        p->sampling.top_p = (float)dv;
    }
    if ((v = json_object_get(j, "top_k")) && !json_is_null(v)) {
        if (!is_int(v, -1, 1 << 24, &iv)) { BADREQ(e, "top_k", "invalid_value", "'top_k' must be an integer >= 0 (-1 or 0: off)"); goto out; }
        p->sampling.top_k = iv < 0 ? 0 : (int)iv;
    }
    if ((v = json_object_get(j, "min_p")) && !json_is_null(v)) {
        if (!is_num(v, 0, 1, &dv)) { BADREQ(e, "min_p", "invalid_value", "'min_p' must be a number in [0, 1]"); goto out; }
        p->sampling.min_p = (float)dv;
    }
    if ((v = json_object_get(j, "repetition_penalty")) && !json_is_null(v)) {
        if (!is_num(v, 0.01, 100, &dv)) { BADREQ(e, "repetition_penalty", "invalid_value", "'repetition_penalty' must be a number in [0.01, 100]"); goto out; }
        p->sampling.repeat_penalty = (float)dv;
    }
    const char *pen[] = {"presence_penalty", "frequency_penalty"};
    for (int i = 0; i < 2; i++)
        if ((v = json_object_get(j, pen[i])) && !json_is_null(v)) {
            if (!is_num(v, -2, 2, &dv)) { BADREQ(e, pen[i], "invalid_value", "'%s' must be a number in [-2, 2]", pen[i]); goto out; }
            if (dv != 0) { BADREQ(e, pen[i], "unsupported_value", "'%s' is not supported (use repetition_penalty)", pen[i]); goto out; }
        }
    if ((v = json_object_get(j, "n")) && !json_is_null(v) && (!is_int(v, 1, 1, &iv))) {
        BADREQ(e, "n", "unsupported_value", "only n = 1 is supported");
        goto out;
    }
    if ((v = json_object_get(j, "best_of")) && !json_is_null(v) && (!is_int(v, 1, 1, &iv))) {
        BADREQ(e, "best_of", "unsupported_value", "only best_of = 1 is supported");
        goto out;
    }
    if ((v = json_object_get(j, "echo")) && !json_is_null(v) && !json_is_false(v)) {
        BADREQ(e, "echo", "unsupported_value", "echo is not supported");
        goto out;
    }
    if ((v = json_object_get(j, "suffix")) && !json_is_null(v)) { BADREQ(e, "suffix", "unsupported_value", "suffix is not supported"); goto out; }
    if ((v = json_object_get(j, "logprobs")) && !json_is_null(v) && !json_is_false(v)) {
        BADREQ(e, "logprobs", "unsupported_value", "logprobs are not supported");
        goto out;
    }
    if ((v = json_object_get(j, "user")) && !json_is_null(v) && !json_is_string(v)) { BADREQ(e, "user", "invalid_type", "'user' must be a string"); goto out; }
    if ((v = json_object_get(j, "seed")) && !json_is_null(v)) {
        if (!json_is_integer(v)) { BADREQ(e, "seed", "invalid_type", "'seed' must be an integer"); goto out; }
        p->sampling.seed = (uint64_t)json_integer_value(v);
    }
    if ((v = json_object_get(j, "stream")) && !json_is_null(v)) {
        if (!json_is_boolean(v)) { BADREQ(e, "stream", "invalid_type", "'stream' must be a boolean"); goto out; }
        ri->stream = json_is_true(v);
    }
    if ((v = json_object_get(j, "stream_options")) && !json_is_null(v)) {
        json_t *u = json_object_get(v, "include_usage");
        if (!json_is_object(v) || (u && !json_is_boolean(u))) {
            BADREQ(e, "stream_options", "invalid_type", "'stream_options' must be an object {\"include_usage\": bool}");
            goto out;
        }
        ri->include_usage = json_is_true(u);
    }
    if ((v = json_object_get(j, "stop")) && !json_is_null(v)) {
        if (json_is_string(v)) {
            if (json_string_length(v)) {
                if (set_str(&r->stop_store[0], json_string_value(v))) goto oom;
                p->n_stop = 1;
            }
        } else if (json_is_array(v) && json_array_size(v) <= 4) {
            size_t i;
            json_t *s;
            json_array_foreach(v, i, s) {
                if (!json_is_string(s)) { BADREQ(e, "stop", "invalid_type", "'stop' must be a string or up to 4 strings"); goto out; }
                if (!json_string_length(s)) continue;
                if (set_str(&r->stop_store[p->n_stop], json_string_value(s))) goto oom;
                p->n_stop++;
            }
        } else {
            BADREQ(e, "stop", "invalid_type", "'stop' must be a string or up to 4 strings");
            goto out;
        }
        for (int i = 0; i < p->n_stop; i++) p->stop[i] = r->stop_store[i];
    }
    if ((v = json_object_get(j, "logit_bias")) && !json_is_null(v)) {
        if (!json_is_object(v)) { BADREQ(e, "logit_bias", "invalid_type", "'logit_bias' must be an object of token id -> bias"); goto out; }
        size_t nb = json_object_size(v);
        r->bias_ids = st_calloc(nb + 1, sizeof(int32_t));
        r->bias = st_calloc(nb + 1, sizeof(float));
        if (!r->bias_ids || !r->bias) goto oom;
        json_t *bv;
        json_object_foreach(v, key, bv) {
            char *end;
            long id = strtol(key, &end, 10);
            if (!*key || *end || id < 0 || id >= st_model_config(S->m)->vocab_size || !is_num(bv, -100, 100, &dv)) {
                BADREQ(e, "logit_bias", "invalid_value", "logit_bias: '%s' must be a token id below %d with a bias in [-100, 100]",
                       key, st_model_config(S->m)->vocab_size);
                goto out;
            }
            r->bias_ids[p->n_bias] = (int32_t)id;
            r->bias[p->n_bias++] = (float)dv;
        }
        p->bias_ids = r->bias_ids;
        p->bias = r->bias;
    }
    /* elastic fields */
    ri->thinking = chat;
    if ((v = json_object_get(j, "enable_thinking")) && !json_is_null(v)) {
        if (!json_is_boolean(v)) { BADREQ(e, "enable_thinking", "invalid_type", "'enable_thinking' must be a boolean"); goto out; }
        ri->thinking = json_is_true(v);
    }
    if ((v = json_object_get(j, "chat_template_kwargs")) && !json_is_null(v)) {
        json_t *et = json_object_get(v, "enable_thinking");
        if (!json_is_object(v) || (et && !json_is_boolean(et))) {
            BADREQ(e, "chat_template_kwargs", "invalid_type", "'chat_template_kwargs' must be an object ({\"enable_thinking\": bool})");
            goto out;
        }
        if (et) ri->thinking = json_is_true(et);
    }
    if ((v = json_object_get(j, "thinking_budget")) && !json_is_null(v)) {
        if (!is_int(v, 0, 1 << 24, &iv)) { BADREQ(e, "thinking_budget", "invalid_value", "'thinking_budget' must be an integer >= 0"); goto out; }
        p->think_budget = (int)iv;
    }
    if ((v = json_object_get(j, "think_grace")) && !json_is_null(v)) {
        if (!is_int(v, 0, 1 << 24, &iv)) { BADREQ(e, "think_grace", "invalid_value", "'think_grace' must be an integer >= 0"); goto out; }
        p->think_grace = (int)iv;
    }
    if ((v = json_object_get(j, "think_message")) && !json_is_null(v)) {
        if (!json_is_string(v)) { BADREQ(e, "think_message", "invalid_type", "'think_message' must be a string"); goto out; }
        if (set_str(&r->msg_store, json_string_value(v))) goto oom;
        p->think_message = r->msg_store;
    }
    const char *bk[2] = {"think_with", "answer_with"};
    const st_budget **bp[2] = {&ri->think_b, &ri->answer_b};
    for (int i = 0; i < 2; i++)
        if ((v = json_object_get(j, bk[i])) && !json_is_null(v)) {
            const st_budget *b = json_is_string(v) ? find_budget(S, json_string_value(v)) : NULL;
            if (!b) { BADREQ(e, bk[i], "invalid_value", "'%s' must name a budget (see /v1/models: S, starling:S, full, ...)", bk[i]); goto out; }
            *bp[i] = b;
        }
    /* speculative decoding: {"draft": "4M" | "ngram", "n": 4}, or the
     * server's default drafter for greedy requests; null turns it off */
    v = json_object_get(j, "speculative");
    if (v && !json_is_null(v)) {
        json_t *dj = json_object_get(v, "draft"), *nv = json_object_get(v, "n");
        const char *ds = json_is_string(dj) ? json_string_value(dj) : NULL;
        if (!json_is_object(v) || !ds || (json_object_size(v) > 1 + (nv != NULL))) {
            BADREQ(e, "speculative", "invalid_value",
                   "'speculative' must be {\"draft\": BUDGET or \"ngram\", \"n\": 1..8}");
            goto out;
        }
        if (strcmp(ds, "ngram") && !(p->draft = find_budget(S, ds))) {
            BADREQ(e, "speculative", "invalid_value", "speculative.draft must name a budget or be \"ngram\"");
            goto out;
        }
        p->draft_ngram = !strcmp(ds, "ngram");
        p->draft_n = S->o.draft_n > 0 ? S->o.draft_n : 4;
        if (nv && !(json_is_integer(nv) && json_integer_value(nv) >= 1 && json_integer_value(nv) <= 8)) {
            BADREQ(e, "speculative", "invalid_value", "speculative.n must be an integer from 1 to 8");
            goto out;
        }
        if (nv) p->draft_n = (int)json_integer_value(nv);
        ri->spec_explicit = 1;
    } else if (!v && (S->draft_b || S->draft_ngram) && p->sampling.temperature <= 0) {
        p->draft = S->draft_b;
        p->draft_ngram = S->draft_ngram;
        p->draft_n = S->o.draft_n > 0 ? S->o.draft_n : 4;
    }
    if ((v = json_object_get(j, "switch_mode")) && !json_is_null(v)) {
        const char *sm = json_is_string(v) ? json_string_value(v) : "";
        int md = st_switch_mode_parse(sm);
        if (md < 0) { BADREQ(e, "switch_mode", "invalid_value", "'switch_mode' must be \"exact\", \"transplant\" or \"reread\""); goto out; }
        p->mode = (st_switch_mode)md;
    }
    /* the prompt */
    if (chat) {
        if (render_chat(json_object_get(j, "messages"), ri->thinking, &text, e)) goto out;
    } else {
        v = json_object_get(j, "prompt");
        if (json_is_array(v) && json_array_size(v) == 1) v = json_array_get(v, 0);
        if (!json_is_string(v) || !json_string_length(v)) {
            BADREQ(e, "prompt", "invalid_value", "'prompt' must be a non-empty string");
            goto out;
        }
        text = st_strdup(json_string_value(v));
        if (!text) goto oom;
        ri->thinking = 0;
    }
    int32_t *ids = NULL;
    int n = 0;
    st_status trc = st_tokenize(S->tok, text, strlen(text), 1, &ids, &n);
    if (trc == ST_ERR_NOMEM) { fail(e, 500, "server_error", NULL, NULL, "%s", st_last_error()); goto out; }
    if (trc) { BADREQ(e, chat ? "messages" : "prompt", "invalid_value", "%s", st_last_error()); goto out; }
    r->prompt = ids;
    r->n_prompt = n;
    int maxp = S->o.max_prompt > 0 && S->o.max_prompt < S->ctx ? S->o.max_prompt : S->ctx;
    if (n > maxp || n == 0) {
        BADREQ(e, chat ? "messages" : "prompt", n ? "context_length_exceeded" : "invalid_value",
               n ? "The prompt has %d tokens; this server accepts at most %d" : "the prompt is empty", n, maxp);
        goto out;
    }
    if (n + max_tokens > S->ctx) {
        if (max_set) {
            BADREQ(e, "max_tokens", "context_length_exceeded",
                   "This model's maximum context length is %d tokens; the prompt (%d) plus max_tokens (%ld) exceed it",
                   S->ctx, n, max_tokens);
            goto out;
        }
        max_tokens = S->ctx - n;
    }
    p->max_tokens = (int)max_tokens;
    p->thinking = ri->thinking;
    p->answer_with = ri->answer_b;
    p->think_with = ri->think_b;
    if (st_gen_check(S->m, p)) {
        BADREQ(e, ri->spec_explicit && (p->draft || p->draft_ngram) ? "speculative" : p->think_with ? "switch_mode" : NULL,
               "invalid_value", "%s", st_last_error());
        goto out;
    }
    if (!ri->think_b) ri->think_b = ri->answer_b;
    rc = 0;
    goto out;
oom:
    fail(e, 500, "server_error", NULL, NULL, "out of memory");
out:
    free(text);
    json_decref(j);
    return rc;
}

/* ------------------------------------------------------------ results */

static json_t *usage_json(const st_gen_stats *g) {
    return json_pack("{s:i,s:i,s:i,s:{s:i},s:{s:i}}", "prompt_tokens", g->prompt_tokens, "completion_tokens",
                     g->completion_tokens, "total_tokens", g->prompt_tokens + g->completion_tokens,
                     "prompt_tokens_details", "cached_tokens", g->cached_tokens, "completion_tokens_details",
                     "reasoning_tokens", g->think_tokens);
}

/* starling's own per-phase report, beside the OpenAI fields */
static json_t *phases_json(const reqinfo *ri, const st_sreq *r) {
    const st_gen_stats *g = &r->stats;
    json_t *o = json_pack("{s:s,s:s,s:s,s:b,s:b,s:i,s:i,s:i,s:f,s:f,s:f,s:f}", "think_budget", st_budget_name(ri->think_b),
                          "answer_budget", st_budget_name(ri->answer_b), "switch_mode",
                          st_switch_mode_name(r->gp.mode), "switched", g->switched,
                          "forced_close", g->forced_close, "think_sampled", g->think_sampled, "switch_tokens",
                          g->switch_tokens, "answer_tokens", g->answer_tokens, "prefill_s", g->t_prefill, "think_s",
                          g->t_think, "switch_s", g->t_switch, "answer_s", g->t_answer);
    if (o && (r->gp.draft || r->gp.draft_ngram))
        json_object_set_new(o, "speculative", json_pack("{s:s,s:i,s:i,s:i}", "draft",
                                                        r->gp.draft ? st_budget_name(r->gp.draft) : "ngram",
                                                        "steps", g->draft_steps, "proposed", g->draft_proposed,
                                                        "accepted", g->draft_accepted));
    return o;
}

static const char *finish_reason(const st_sreq *r) {
    return r->stats.finish == ST_FINISH_STOP ? "stop" : "length";
}

/* A request that ended without a normal result: the error to report. */
static int result_error(const st_sreq *r, apierr *e, double timeout) {
    if (r->err) return fail(e, 500, "server_error", NULL, "generation_failed", "%s", r->errmsg);
    if (r->timed_out) return fail(e, 504, "timeout_error", NULL, "timeout", "the request exceeded the server's %.0f s time limit", timeout);
    if (r->shut_down) return fail(e, 503, "server_error", NULL, "shutting_down", "the server is shutting down");
    return 0;
}

static json_t *final_json(st_server *S, const reqinfo *ri, st_sreq *r, const char *id, long created) {
    json_t *choice;
    size_t nc = r->text[ST_TEXT_CONTENT].n, nr = r->text[ST_TEXT_REASONING].n;
    const char *cs = r->text[ST_TEXT_CONTENT].p ? r->text[ST_TEXT_CONTENT].p : "";
    if (ri->chat) {
        json_t *msg = json_pack("{s:s,s:o}", "role", "assistant", "content", json_stringn(cs, nc));
        json_object_set_new(msg, "reasoning_content",
                            ri->thinking ? json_stringn(r->text[ST_TEXT_REASONING].p ? r->text[ST_TEXT_REASONING].p : "", nr)
                                         : json_null());
        choice = json_pack("{s:i,s:o,s:s,s:n}", "index", 0, "message", msg, "finish_reason", finish_reason(r), "logprobs");
    } else {
        choice = json_pack("{s:i,s:o,s:s,s:n}", "index", 0, "text", json_stringn(cs, nc), "finish_reason",
                           finish_reason(r), "logprobs");
    }
    json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:[o],s:o,s:o}", "id", id, "object",
                          ri->chat ? "chat.completion" : "text_completion", "created", (json_int_t)created, "model",
                          ri->model, "choices", choice, "usage", usage_json(&r->stats), "starling", phases_json(ri, r));
    return o;
}

/* ------------------------------------------------------------ streaming */

typedef struct {
    st_server *S;
    st_sreq *r;
    reqinfo ri;
    char id[64];
    long created;
    st_buf out;
    size_t off;
    int stage;               /* 0 first chunk, 1 streaming, 2 ended */
    int oom;                 /* an event was lost: end with an error */
} stream;

/* One event, whole or not at all (st->oom set). */
static void sse(stream *st, json_t *j) {
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    const size_t n0 = st->out.n;
    if (!s || st_buf_put(&st->out, "data: ", 6) || st_buf_put(&st->out, s, strlen(s)) ||
        st_buf_put(&st->out, "\n\n", 2)) {
        st->out.n = n0;
        if (st->out.p) st->out.p[n0] = 0;
        st->oom = 1;
    }
    free(s);
}

static json_t *chunk(stream *st, json_t *delta_or_text, const char *finish) {
    json_t *ch;
    if (st->ri.chat)
        ch = json_pack("{s:i,s:o,s:o,s:n}", "index", 0, "delta", delta_or_text, "finish_reason",
                       finish ? json_string(finish) : json_null(), "logprobs");
    else
        ch = json_pack("{s:i,s:o,s:o,s:n}", "index", 0, "text", delta_or_text, "finish_reason",
                       finish ? json_string(finish) : json_null(), "logprobs");
    return json_pack("{s:s,s:s,s:I,s:s,s:[o]}", "id", st->id, "object",
                     st->ri.chat ? "chat.completion.chunk" : "text_completion", "created", (json_int_t)st->created,
                     "model", st->ri.model, "choices", ch);
}

static void sse_text(stream *st, int kind, const char *p, size_t n) {
    if (!n || kind == ST_TEXT_CONTROL) return;
    json_t *t = json_stringn(p, n);
    if (!t) return;
    if (st->ri.chat)
        sse(st, chunk(st, json_pack("{s:o}", kind == ST_TEXT_REASONING ? "reasoning_content" : "content", t), NULL));
    else
        sse(st, chunk(st, t, NULL));
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    stream *st = cls;
    st_sreq *r = st->r;
    for (;;) {
        if (st->off < st->out.n) {
            size_t k = st->out.n - st->off < max ? st->out.n - st->off : max;
            memcpy(buf, st->out.p + st->off, k);
            st->off += k;
            if (st->off == st->out.n) st->off = st->out.n = 0;
            return (ssize_t)k;
        }
        if (st->stage == 2) return MHD_CONTENT_READER_END_OF_STREAM;
        if (st->oom) { /* an event could not be built: stop the request, end with an error event */
            static const char end[] = "data: {\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
                                      "\"param\":null,\"code\":null}}\n\ndata: [DONE]\n\n";
            atomic_store(&r->cancelled, 1);
            st->stage = 2;
            if (st_buf_put(&st->out, end, sizeof end - 1)) return MHD_CONTENT_READER_END_WITH_ERROR;
            continue;
        }
        if (st->stage == 0) {
            if (st->ri.chat) sse(st, chunk(st, json_pack("{s:s,s:s}", "role", "assistant", "content", ""), NULL));
            st->stage = 1;
            continue;
        }
        st_buf ev = {0};
        pthread_mutex_lock(&r->mu);
        while (!r->evq.n && !r->done) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&r->cv, &r->mu, &ts);
        }
        ev = r->evq;
        r->evq = (st_buf){0};
        int done = r->done;
        pthread_mutex_unlock(&r->mu);
        /* merge runs of the same kind into one chunk */
        size_t i = 0;
        st_buf run = {0};
        int run_kind = -1;
        while (i + 5 <= ev.n) {
            int kind = (unsigned char)ev.p[i];
            size_t len = (size_t)(unsigned char)ev.p[i + 1] | (size_t)(unsigned char)ev.p[i + 2] << 8 |
                         (size_t)(unsigned char)ev.p[i + 3] << 16 | (size_t)(unsigned char)ev.p[i + 4] << 24;
            i += 5;
            if (kind != run_kind && run.n) { sse_text(st, run_kind, run.p, run.n); run.n = 0; }
            run_kind = kind;
            if (st_buf_put(&run, ev.p + i, len)) st->oom = 1;
            i += len;
        }
        if (run.n && !st->oom) sse_text(st, run_kind, run.p, run.n);
        st_buf_free(&run);
        st_buf_free(&ev);
        if (done && !st->oom) {
            apierr e;
            if (result_error(r, &e, st->S->o.timeout_s)) {
                sse(st, err_obj(&e));
            } else {
                sse(st, chunk(st, st->ri.chat ? json_object() : json_string(""), finish_reason(r)));
                if (st->ri.include_usage) {
                    json_t *u = json_pack("{s:s,s:s,s:I,s:s,s:[],s:o}", "id", st->id, "object",
                                          st->ri.chat ? "chat.completion.chunk" : "text_completion", "created",
                                          (json_int_t)st->created, "model", st->ri.model, "choices", "usage",
                                          usage_json(&r->stats));
                    json_object_set_new(u, "starling", phases_json(&st->ri, r));
                    sse(st, u);
                }
            }
            st_buf_put(&st->out, "data: [DONE]\n\n", 14);
            st->stage = 2;
        }
    }
}

static void log_req(st_server *S, const reqinfo *ri, const st_sreq *r, int streamed, const char *how) {
    if (!S->o.log) return;
    char line[512];
    const st_gen_stats *g = &r->stats;
    snprintf(line, sizeof line, "%s %s%s model=%s prompt=%d (cached %d) completion=%d (reasoning %d) %.3f s: %s",
             ri->chat ? "chat" : "completion", streamed ? "stream " : "", st_finish_name(g->finish), ri->model,
             g->prompt_tokens, g->cached_tokens, g->completion_tokens, g->think_tokens,
             g->t_prefill + g->t_think + g->t_switch + g->t_answer, how);
    S->o.log(line);
}

static void stream_free(void *cls) {
    stream *st = cls;
    log_req(st->S, &st->ri, st->r, 1, st->stage == 2 ? "sent" : "client gone");
    atomic_store(&st->r->cancelled, 1); /* no-op when it already finished */
    st_sreq_release(st->r);
    st_buf_free(&st->out);
    free(st);
}

/* ------------------------------------------------------------ handlers */

typedef struct {
    st_buf body;
    int too_big;
} conn;
/* The connection of a request whose conn could not be allocated: answered
 * 500 at once, its body dropped. */
static conn g_noconn;

static void make_id(st_server *S, int chat, char *id, size_t n) {
    unsigned long k = atomic_fetch_add(&S->next_id, 1);
    snprintf(id, n, "%s-%lx%04lx", chat ? "chatcmpl" : "cmpl", (unsigned long)time(NULL), k & 0xffff);
}

static enum MHD_Result completion(st_server *S, struct MHD_Connection *c, conn *k, int chat) {
    apierr e;
    st_sreq *r = st_sreq_new();
    if (!r) { fail(&e, 500, "server_error", NULL, NULL, "out of memory"); return send_err(S, c, &e); }
    reqinfo ri;
    if (parse_request(S, k->body.p ? k->body.p : "", k->body.n, chat, r, &ri, &e)) {
        st_sreq_release(r);
        return send_err(S, c, &e);
    }
    r->deadline = S->o.timeout_s > 0 ? st_time() + S->o.timeout_s : 0;
    if (atomic_load(&S->stopping) || st_sched_submit(S->sched, r)) {
        st_sreq_release(r);
        if (atomic_load(&S->stopping)) fail(&e, 503, "server_error", NULL, "shutting_down", "the server is shutting down");
        else
            fail(&e, 429, "rate_limit_error", NULL, "rate_limit_exceeded",
                 "The server is busy (%d requests waiting); retry later", S->o.queue);
        return send_err(S, c, &e);
    }
    char id[64];
    make_id(S, chat, id, sizeof id);
    long created = (long)time(NULL);
    if (ri.stream) {
        stream *st = st_calloc(1, sizeof *st);
        if (!st) {
            atomic_store(&r->cancelled, 1);
            st_sreq_release(r);
            fail(&e, 500, "server_error", NULL, NULL, "out of memory");
            return send_err(S, c, &e);
        }
        st->S = S;
        st->r = r;
        st->ri = ri;
        snprintf(st->id, sizeof st->id, "%s", id);
        st->created = created;
        struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, st, stream_free);
        if (!resp) { stream_free(st); return MHD_NO; }
        MHD_add_response_header(resp, "Content-Type", "text/event-stream");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        enum MHD_Result ret = MHD_queue_response(c, 200, resp);
        MHD_destroy_response(resp);
        atomic_fetch_add(&S->status_count[200], 1);
        return ret;
    }
    pthread_mutex_lock(&r->mu);
    while (!r->done) pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
    enum MHD_Result ret;
    int bad = result_error(r, &e, S->o.timeout_s);
    if (bad) ret = send_err(S, c, &e);
    else ret = send_json(S, c, 200, final_json(S, &ri, r, id, created));
    log_req(S, &ri, r, 0, bad ? e.msg : "sent");
    st_sreq_release(r);
    return ret;
}

static char *metrics_text(st_server *S) {
    st_sched_stats ss;
    st_sched_stats_get(S->sched, &ss);
    st_pcache_stats cs = {0};
    if (S->cache) st_pcache_stats_get(S->cache, &cs);
    st_buf b = {0};
    char line[512];
#define M(name, type, help, fmt, ...)                                                                                  \
    do {                                                                                                               \
        snprintf(line, sizeof line, "# HELP starling_" name " " help "\n# TYPE starling_" name " " type "\n", "");      \
        st_buf_put(&b, line, strlen(line));                                                                           \
        snprintf(line, sizeof line, "starling_" name " " fmt "\n", __VA_ARGS__);                                       \
        st_buf_put(&b, line, strlen(line));                                                                           \
    } while (0)
    snprintf(line, sizeof line, "# HELP starling_http_responses_total HTTP responses by status code.\n"
                                "# TYPE starling_http_responses_total counter\n");
    st_buf_put(&b, line, strlen(line));
    for (int i = 100; i < N_STATUS; i++) {
        unsigned long v = atomic_load(&S->status_count[i]);
        if (!v) continue;
        snprintf(line, sizeof line, "starling_http_responses_total{code=\"%d\"} %lu\n", i, v);
        st_buf_put(&b, line, strlen(line));
    }
    M("requests_admitted_total", "counter", "Generation requests queued.%s", "%llu", (unsigned long long)ss.admitted);
    M("requests_rejected_total", "counter", "Requests refused with 429 (queue full).%s", "%llu", (unsigned long long)ss.rejected);
    M("requests_completed_total", "counter", "Generation requests finished.%s", "%llu", (unsigned long long)ss.completed);
    M("requests_failed_total", "counter", "Generation requests that failed.%s", "%llu", (unsigned long long)ss.failed);
    M("request_timeouts_total", "counter", "Requests ended by the time limit.%s", "%llu", (unsigned long long)ss.timeouts);
    M("active_sequences", "gauge", "Sequences being generated.%s", "%d", ss.active);
    M("queue_depth", "gauge", "Requests waiting for a slot.%s", "%d", ss.queued);
    M("prompt_tokens_total", "counter", "Prompt tokens processed or taken from the cache.%s", "%llu", (unsigned long long)ss.prompt_tokens);
    M("completion_tokens_total", "counter", "Tokens generated.%s", "%llu", (unsigned long long)ss.completion_tokens);
    M("reasoning_tokens_total", "counter", "Generated tokens inside <think>.%s", "%llu", (unsigned long long)ss.reasoning_tokens);
    M("scheduler_busy_seconds_total", "counter", "Seconds the scheduler spent computing.%s", "%.6f", ss.busy_s);
    M("prompt_cache_hit_tokens_total", "counter", "Prompt tokens restored from cached states.%s", "%llu", (unsigned long long)cs.hit_tokens);
    M("prompt_cache_lookups_total", "counter", "Prompt cache lookups.%s", "%llu", (unsigned long long)cs.lookups);
    M("prompt_cache_hits_total", "counter", "Prompt cache lookups that found a prefix.%s", "%llu", (unsigned long long)cs.hits);
    M("prompt_cache_stores_total", "counter", "Snapshots stored (prompt ends, chat turn ends, every N tokens).%s", "%llu", (unsigned long long)cs.stores);
    M("prompt_cache_evictions_total", "counter", "Snapshots evicted (LRU).%s", "%llu", (unsigned long long)cs.evictions);
    M("prompt_cache_entries", "gauge", "Snapshots held.%s", "%d", cs.entries);
    M("prompt_cache_bytes", "gauge", "Bytes held by snapshots.%s", "%zu", cs.bytes);
    M("prompt_cache_max_bytes", "gauge", "Byte budget of the prompt cache.%s", "%zu", cs.max_bytes);
    M("uptime_seconds", "gauge", "Seconds since the server started.%s", "%.3f", st_time() - S->t_start);
#undef M
    /* histograms: cumulative buckets, +Inf, sum, count */
    {
        snprintf(line, sizeof line, "# HELP starling_batch_size Sequences decoded together in one forward pass.\n"
                                    "# TYPE starling_batch_size histogram\n");
        st_buf_put(&b, line, strlen(line));
        uint64_t cum = 0;
        for (int k = 0; k < ST_SCHED_BATCH_BUCKETS; k++) {
            cum += ss.batch_hist[k];
            if (k < ST_SCHED_BATCH_BUCKETS - 1)
                snprintf(line, sizeof line, "starling_batch_size_bucket{le=\"%d\"} %llu\n", 1 << k, (unsigned long long)cum);
            else
                snprintf(line, sizeof line, "starling_batch_size_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
            st_buf_put(&b, line, strlen(line));
        }
        snprintf(line, sizeof line, "starling_batch_size_sum %llu\nstarling_batch_size_count %llu\n",
                 (unsigned long long)ss.batch_rows, (unsigned long long)ss.batch_steps);
        st_buf_put(&b, line, strlen(line));
    }
    const struct { const char *name, *help; const st_hist *h; const double *bounds; } hs[2] = {
        {"time_to_first_token_seconds", "Seconds from a request's arrival to its first generated token.", &ss.ttft,
         st_sched_ttft_bounds},
        {"inter_token_latency_seconds", "Seconds between a request's generated tokens.", &ss.itl, st_sched_itl_bounds},
    };
    for (int i = 0; i < 2; i++) {
        snprintf(line, sizeof line, "# HELP starling_%s %s\n# TYPE starling_%s histogram\n", hs[i].name, hs[i].help,
                 hs[i].name);
        st_buf_put(&b, line, strlen(line));
        uint64_t cum = 0;
        for (int k = 0; k <= ST_HIST_N; k++) {
            cum += hs[i].h->bucket[k];
            if (k < ST_HIST_N)
                snprintf(line, sizeof line, "starling_%s_bucket{le=\"%g\"} %llu\n", hs[i].name, hs[i].bounds[k],
                         (unsigned long long)cum);
            else
                snprintf(line, sizeof line, "starling_%s_bucket{le=\"+Inf\"} %llu\n", hs[i].name,
                         (unsigned long long)cum);
            st_buf_put(&b, line, strlen(line));
        }
        snprintf(line, sizeof line, "starling_%s_sum %.6f\nstarling_%s_count %llu\n", hs[i].name, hs[i].h->sum,
                 hs[i].name, (unsigned long long)hs[i].h->n);
        st_buf_put(&b, line, strlen(line));
    }
    if (b.oom) { st_buf_free(&b); return NULL; } /* send_text answers 500 */
    return b.p ? b.p : st_strdup("");
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *data, size_t *size, void **ctx) {
    st_server *S = cls;
    conn *k = *ctx;
    apierr e;
    if (!k) {
        k = st_calloc(1, sizeof *k);
        if (!k) {
            *ctx = &g_noconn;
            fail(&e, 500, "server_error", NULL, NULL, "out of memory");
            return send_err(S, c, &e);
        }
        atomic_fetch_add(&S->open_reqs, 1);
        *ctx = k;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > S->o.max_body) {
            k->too_big = 1;
            fail(&e, 413, "invalid_request_error", NULL, "request_too_large", "the request body exceeds %zu bytes", S->o.max_body);
            return send_err(S, c, &e);
        }
        return MHD_YES;
    }
    if (k == &g_noconn) { *size = 0; return MHD_YES; } /* answered already */
    if (*size) {
        if (!k->too_big) {
            if (k->body.n + *size > S->o.max_body) { k->too_big = 1; st_buf_free(&k->body); }
            else st_buf_put(&k->body, data, *size);
        }
        *size = 0;
        return MHD_YES;
    }
    if (k->too_big) {
        fail(&e, 413, "invalid_request_error", NULL, "request_too_large", "the request body exceeds %zu bytes", S->o.max_body);
        return send_err(S, c, &e);
    }
    if (k->body.oom) {
        fail(&e, 500, "server_error", NULL, NULL, "out of memory reading the request body");
        return send_err(S, c, &e);
    }
    int get = !strcmp(method, "GET"), post = !strcmp(method, "POST");
    if (!strcmp(url, "/health")) {
        if (!get) goto not_allowed;
        return send_json(S, c, 200, json_pack("{s:s}", "status", atomic_load(&S->stopping) ? "stopping" : "ok"));
    }
    if (!strcmp(url, "/metrics")) {
        if (!get) goto not_allowed;
        return send_text(S, c, 200, "text/plain; version=0.0.4; charset=utf-8", metrics_text(S));
    }
    if (!strcmp(url, "/")) { /* the chat page (src/server/ui/chat.html, compiled in); it asks for the key itself */
        if (!get) goto not_allowed;
        char *page = st_strndup(st_ui_chat_html, st_ui_chat_html_len);
        return send_text(S, c, 200, "text/html; charset=utf-8", page);
    }
    if (!strncmp(url, "/v1/", 4) && S->api_key) {
        const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
        if (!auth || strncmp(auth, "Bearer ", 7) || strcmp(auth + 7, S->api_key)) {
            fail(&e, 401, "invalid_request_error", NULL, "invalid_api_key",
                 auth ? "Incorrect API key provided" : "Missing API key: send 'Authorization: Bearer KEY'");
            return send_err(S, c, &e);
        }
    }
    if (!strcmp(url, "/v1/models")) {
        if (!get) goto not_allowed;
        return send_json(S, c, 200, models_json(S, S->created));
    }
    if (!strncmp(url, "/v1/models/", 11)) {
        const model_id *mi = find_model(S, url + 11);
        if (!mi) {
            fail(&e, 404, "invalid_request_error", "model", "model_not_found", "The model '%s' does not exist", url + 11);
            return send_err(S, c, &e);
        }
        return send_json(S, c, 200, json_pack("{s:s,s:s,s:I,s:s}", "id", mi->id, "object", "model", "created",
                                              (json_int_t)S->created, "owned_by", "starling"));
    }
    if (!strcmp(url, "/v1/chat/completions") || !strcmp(url, "/v1/completions")) {
        if (!post) goto not_allowed;
        return completion(S, c, k, !strcmp(url, "/v1/chat/completions"));
    }
    fail(&e, 404, "invalid_request_error", NULL, "not_found", "no such endpoint: %s %s", method, url);
    return send_err(S, c, &e);
not_allowed:
    fail(&e, 405, "invalid_request_error", NULL, "method_not_allowed", "%s is not allowed on %s", method, url);
    return send_err(S, c, &e);
}

static void completed(void *cls, struct MHD_Connection *c, void **ctx, enum MHD_RequestTerminationCode why) {
    conn *k = *ctx;
    if (!k || k == &g_noconn) { *ctx = NULL; return; }
    st_buf_free(&k->body);
    free(k);
    *ctx = NULL;
    atomic_fetch_sub(&((st_server *)cls)->open_reqs, 1);
}

/* ------------------------------------------------------------ lifecycle */

static void free_server(st_server *S) {
    for (int i = 0; i < S->n_ids; i++) { free(S->ids[i].id); st_budget_free(S->ids[i].b); }
    free(S->ids);
    st_pcache_free(S->cache);
    free(S->host);
    free(S->api_key);
    free(S);
}

static st_status add_id(st_server *S, const char *id, const char *budget) {
    st_budget *b = NULL;
    st_status rc = st_budget_by_name(S->m, budget, &b);
    if (rc) return rc;
    model_id *n = st_realloc(S->ids, sizeof *n * (size_t)(S->n_ids + 1));
    if (!n) { st_budget_free(b); return ST_ERR_NOMEM; }
    S->ids = n;
    if (!(S->ids[S->n_ids].id = st_strdup(id))) { st_budget_free(b); return ST_ERR_NOMEM; }
    S->ids[S->n_ids++].b = b;
    return ST_OK;
}

st_status st_server_start(const st_model *m, const st_tokenizer *tok, const st_server_opts *o, st_server **out) {
    *out = NULL;
    st_server *S = st_calloc(1, sizeof *S);
    if (!S) return ST_ERR_NOMEM;
    S->m = m;
    S->tok = tok;
    S->o = *o;
    S->host = st_strdup(o->host ? o->host : "127.0.0.1");
    S->api_key = o->api_key && *o->api_key ? st_strdup(o->api_key) : NULL;
    S->o.host = S->host;
    S->o.api_key = S->api_key;
    S->t_start = st_time();
    S->created = (long)time(NULL);
    const st_config *cfg = st_model_config(m);
    S->ctx = o->ctx > 0 ? o->ctx : cfg->max_position_embeddings > 0 ? cfg->max_position_embeddings : 1 << 20;
    st_status rc = ST_ERR_NOMEM;
    if (!S->host || (o->api_key && *o->api_key && !S->api_key)) goto fail;
    const char *def = st_model_default_budget(m);
    if ((rc = add_id(S, "starling", def ? def : "full"))) goto fail;
    for (int i = 0; i < st_model_n_budgets(m); i++) {
        char id[200];
        snprintf(id, sizeof id, "starling:%s", st_model_budget_name(m, i));
        if ((rc = add_id(S, id, st_model_budget_name(m, i)))) goto fail;
    }
    if (!find_model(S, "starling:full") && (rc = add_id(S, "starling:full", "full"))) goto fail;
    if (o->draft) {
        S->draft_ngram = !strcmp(o->draft, "ngram");
        if (!S->draft_ngram && !(S->draft_b = find_budget(S, o->draft))) {
            rc = st_err(ST_ERR_ARG, "serve: --draft '%s' is neither a budget of the model nor 'ngram'", o->draft);
            goto fail;
        }
    }
    if (o->cache_bytes && (rc = st_pcache_new(o->cache_bytes, o->cache_interval, &S->cache))) goto fail;
    if ((rc = st_sched_start(m, tok, S->cache, o->parallel, o->queue, S->ctx, &S->sched))) goto fail;
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)o->port);
    if (inet_pton(AF_INET, S->host, &sa.sin_addr) != 1) {
        rc = st_err(ST_ERR_ARG, "serve: '%s' is not an IPv4 address", S->host);
        goto fail;
    }
    unsigned limit = (unsigned)(o->parallel + o->queue + 32);
    /* MHD_USE_ITC: MHD_quiesce_daemon (the SIGTERM drain) needs it */
    S->d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC,
                            (uint16_t)o->port, NULL,
                            NULL, handler, S, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_NOTIFY_COMPLETED, completed, S, MHD_OPTION_CONNECTION_LIMIT, limit,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120, MHD_OPTION_END);
    if (!S->d) {
        rc = st_err(ST_ERR_IO, "serve: cannot listen on %s:%d (%s)", S->host, o->port, strerror(errno));
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(S->d, MHD_DAEMON_INFO_BIND_PORT);
    S->port = di ? di->port : o->port;
    *out = S;
    return ST_OK;
fail:
    if (S->sched) st_sched_free(S->sched);
    free_server(S);
    return rc;
}

int st_server_port(const st_server *s) { return s->port; }

void st_server_stop(st_server *S) {
    if (!S) return;
    atomic_store(&S->stopping, 1);
    /* No new connections: MHD stops accepting, and shutting the listening
       socket down makes the kernel refuse them instead of queueing them in
       the backlog, where they would wait for an accept that never comes. The
       socket is closed only after MHD_stop_daemon (libmicrohttpd's rule). */
    MHD_socket ls = MHD_quiesce_daemon(S->d);
    if (ls != MHD_INVALID_SOCKET) shutdown(ls, SHUT_RDWR);
    st_sched_stop(S->sched);    /* every request ends; waiting connections wake */
    /* let the woken connections send their final responses (503 for the queued,
       the closing chunk for streams) before the daemon closes the sockets */
    for (int i = 0; i < 300 && atomic_load(&S->open_reqs) > 0; i++) usleep(10000);
    MHD_stop_daemon(S->d);      /* joins the connection threads */
    if (ls != MHD_INVALID_SOCKET) close(ls);
    st_sched_free(S->sched);
    free_server(S);
}

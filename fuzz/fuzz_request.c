/*
 * fuzz_request.c — the OpenAI request bodies of /v1/chat/completions and
 * /v1/completions: JSON, every elastic and sampling field, the messages through
 * the chat template and the tokenizer. server.c is compiled into the harness
 * (its parser is file-static; the library's copy of server.o is then not
 * linked), with a server struct that has models but no HTTP daemon or
 * scheduler. An accepted request's sampler settings build a sampler that
 * samples a few tokens.
 */
#include "../src/server/server.c"
#include "fuzz_util.h"

static st_server *g_S;

static void setup(void) {
    char src[300], p[400];
    st_model *m;
    st_tokenizer *t;
    fz_synth_model("src", src, sizeof src);
    snprintf(p, sizeof p, "%s/tokenizer.json", src);
    if (st_model_load(src, &m) || st_tokenizer_load(p, &t)) { fprintf(stderr, "%s\n", st_last_error()); abort(); }
    st_server *S = st_calloc(1, sizeof *S);
    if (!S) abort();
    S->m = m;
    S->tok = t;
    S->o = st_server_default_params();
    S->ctx = 4096;
    const char *def = st_model_default_budget(m);
    if (add_id(S, "starling", def ? def : "full")) abort();
    for (int i = 0; i < st_model_n_budgets(m); i++) {
        char id[200];
        snprintf(id, sizeof id, "starling:%s", st_model_budget_name(m, i));
        if (add_id(S, id, st_model_budget_name(m, i))) abort();
    }
    if (!find_model(S, "starling:full") && add_id(S, "starling:full", "full")) abort();
    g_S = S;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    if (!g_S) setup();
    const int V = st_model_config(g_S->m)->vocab_size;
    for (int chat = 0; chat < 2; chat++) {
        st_sreq *r = st_sreq_new();
        if (!r) abort();
        reqinfo ri;
        apierr e;
        if (parse_request(g_S, (const char *)d, n, chat, r, &ri, &e) == 0) {
            st_sampler *s;
            if (st_sampler_new(&r->gp.sampling, V, &s) == ST_OK) {
                float *lg = malloc(sizeof(float) * (size_t)V);
                if (!lg) abort();
                for (int k = 0; k < 4; k++) {
                    for (int i = 0; i < V; i++) lg[i] = (float)((i * 37 + k * 11) % 101) * 0.05f;
                    int32_t id = st_sample(s, lg);
                    if (id < 0 || id >= V) abort();
                    st_sampler_accept(s, id);
                }
                free(lg);
                st_sampler_free(s);
            }
        }
        st_sreq_release(r);
    }
    return 0;
}
